"""Parameter checks shared by the layers: each returns the value or raises ValueError."""

from __future__ import annotations

import re

_PY = re.compile(r"^3\.\d{1,2}$")
_VERSION = re.compile(r"^\d+(\.\d+)*$")
_PACKAGE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+-]*(==[A-Za-z0-9._+-]+)?$")


def text(value):
    if not isinstance(value, str):
        raise ValueError(f"expected a string, got {type_name(value)}")
    return value


def nonempty_text(value):
    if not text(value).strip():
        raise ValueError("must not be empty")
    return value


_TEMPLATE_REF = re.compile(r"^([a-z0-9][a-z0-9-_]*/)?[a-z0-9][a-z0-9-_]*(:[a-z0-9-_.]+)?$")


def template_ref(value):
    """An E2B template ID or name, optionally team/name and :tag."""
    if not isinstance(value, str) or not _TEMPLATE_REF.match(value):
        raise ValueError(f"{value!r} is not an E2B template name or ID (like \"code-interpreter-v1\")")
    return value


def python_version(value):
    if not isinstance(value, str) or not _PY.match(value):
        raise ValueError(f"expected a Python version like \"3.12\", got {value!r}")
    return value


def version_or_latest(value):
    if value == "latest":
        return value
    if not isinstance(value, str) or not _VERSION.match(value):
        raise ValueError(f'expected "latest" or an exact version like "0.5.6", got {value!r}')
    return value


def package_list(value):
    if not isinstance(value, (list, tuple)):
        raise ValueError(f"expected a list of package names, got {type_name(value)}")
    for item in value:
        if not isinstance(item, str) or not _PACKAGE.match(item):
            raise ValueError(f"{item!r} is not a package name")
    return tuple(value)


def type_name(value) -> str:
    return {str: "a string", bool: "a boolean", int: "an integer", float: "a float",
            list: "a list", tuple: "a list", dict: "a table"}.get(type(value), type(value).__name__)
