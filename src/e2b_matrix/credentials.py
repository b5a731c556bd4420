"""E2B credentials and domain, as the SDK and `e2b auth login` know them.

Its own light module (json, os, pathlib): a no-op build checks for a key
without loading the backends (see stamp.py).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

DEFAULT_DOMAIN = "e2b.app"
HOW_TO_LOGIN = ("set E2B_API_KEY, or run `e2b auth login` (it writes ~/.e2b/config.json); "
                "to build locally instead, use --backend docker (make build-all BACKEND=docker)")


def api_key(environ=None, home: Path | None = None) -> str | None:
    """E2B_API_KEY, else ``teamApiKey`` in ~/.e2b/config.json (what `e2b auth login` writes)."""
    environ = os.environ if environ is None else environ
    key = environ.get("E2B_API_KEY")
    if key:
        return key
    path = (home or Path.home()) / ".e2b" / "config.json"
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    key = data.get("teamApiKey") if isinstance(data, dict) else None
    return key if isinstance(key, str) and key else None


def domain(environ=None) -> str:
    environ = os.environ if environ is None else environ
    return environ.get("E2B_DOMAIN") or DEFAULT_DOMAIN
