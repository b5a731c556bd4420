"""Every --json output has one shape per kind of result, documented as a JSON Schema in docs/schemas/.

Each command runs for real against the emulator (verify through a fake sandbox, the one the other
verify tests use), and what it prints is validated against its schema. The schemas are strict
(every property required unless optional in the model, no other property), so a field added to a
``to_json()`` without its schema fails here.
"""

from __future__ import annotations

import json

import pytest
from jsonschema import Draft202012Validator

from conftest import ROOT, cli_runner
from e2b_matrix.cli import cli

SCHEMAS = ROOT / "docs" / "schemas"


def schema(kind: str) -> Draft202012Validator:
    doc = json.loads((SCHEMAS / f"{kind}.schema.json").read_text())
    Draft202012Validator.check_schema(doc)
    return Draft202012Validator(doc)


def run_json(project, *args):
    r = cli_runner().invoke(cli, ["-C", str(project), *args])
    assert r.exit_code in (0, 1), r.output
    return json.loads(r.stdout)


def assert_valid(kind: str, data) -> None:
    errors = sorted(schema(kind).iter_errors(data), key=lambda e: list(e.path))
    assert not errors, f"{kind}: " + "; ".join(f"{list(e.path)}: {e.message}" for e in errors[:5])


@pytest.fixture
def built(project, emu, monkeypatch):
    """The shipped project, minimal and latest built (minimal twice, verified, promoted): every result kind."""
    import e2b_code_interpreter

    from test_verify import FakeSandbox

    monkeypatch.setattr(e2b_code_interpreter.Sandbox, "create", staticmethod(lambda t, **kw: FakeSandbox(t)))
    for args in (
        ["build", "minimal", "latest", "--verify"],
        ["build", "minimal", "--force", "--verify"],
        ["promote", "minimal", "--channel", "stable"],
    ):
        assert cli_runner().invoke(cli, ["-C", str(project), *args]).exit_code == 0
    return project


def test_every_json_output_matches_its_schema(built, emu):
    outputs = {
        "list": run_json(built, "list", "--json"),
        "plan": run_json(built, "plan", "--json"),
        "compile": run_json(built, "compile", "--check", "--json"),
        "build": run_json(built, "build", "minimal", "pinned", "--json"),
        "verify": run_json(built, "verify", "minimal", "--json"),
        "diff": run_json(built, "diff", "minimal", "--json"),
        "status": run_json(built, "status", "--json"),
        "lock-check": run_json(built, "lock", "check", "--remote", "--json"),
        "lock-show": run_json(built, "lock", "show", "--json"),
        "prune": run_json(built, "prune", "--json"),
    }
    assert {p.name.removesuffix(".schema.json") for p in SCHEMAS.glob("*.schema.json")} == set(outputs)
    for kind, data in outputs.items():
        assert data, kind  # something to check
        assert_valid(kind, data)
    assert any(e.get("history") for e in outputs["lock-show"].values())  # the optional parts were seen too
    assert outputs["diff"]["changes"] == [] and outputs["status"][0]["channels"]


def test_drift_has_one_shape_in_status_and_lock_check(built, emu):
    status = run_json(built, "status", "--json")
    check = run_json(built, "lock", "check", "--remote", "--json")
    assert check["drift"] == status


def test_a_field_the_schema_does_not_know_fails_it():
    """The check can fail: a result with one more field, or one missing, is not valid."""
    row = {
        "name": "a",
        "alias": "a",
        "layers": ["base"],
        "cpu_count": 2,
        "memory_mb": 2048,
        "tags": [],
        "file": "variants/a.toml",
        "description": "",
    }
    assert_valid("list", [row])
    assert list(schema("list").iter_errors([{**row, "new": 1}]))
    assert list(schema("list").iter_errors([{k: v for k, v in row.items() if k != "alias"}]))
