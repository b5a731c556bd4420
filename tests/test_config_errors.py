"""Bad input: one line naming the file and the key, exit 2, no traceback, nothing written."""

from __future__ import annotations

import pytest

from conftest import cli_runner, snapshot, write
from e2b_matrix.cli import cli

V = '[variant]\nname = "x"\nalias = "nexus-x"\nlayers = ["base", "nexus"]\n'


def variant(body: str = "", **fields) -> str:
    head = {"name": '"x"', "alias": '"nexus-x"', "layers": '["base", "nexus"]'}
    head.update(fields)
    lines = [f"{k} = {v}" for k, v in head.items() if v is not None]
    return "[variant]\n" + "\n".join(lines) + "\n" + body


CASES = [
    # (id, {path: text}, expected message fragment)
    (
        "toml-syntax",
        {"variants/x.toml": "[variant]\nname = \n"},
        "variants/x.toml: invalid TOML: Invalid value (at line 2",
    ),
    ("not-utf8", {"variants/x.toml": b"\xff\xfe".decode("latin-1")}, None),
    (
        "no-variant-table",
        {"variants/x.toml": '[params.nexus]\nversion = "latest"\n'},
        "variants/x.toml: variant: missing table",
    ),
    ("missing-name", {"variants/x.toml": variant(name=None)}, "variants/x.toml: variant.name: missing key"),
    ("missing-alias", {"variants/x.toml": variant(alias=None)}, "variants/x.toml: variant.alias: missing key"),
    ("missing-layers", {"variants/x.toml": variant(layers=None)}, "variants/x.toml: variant.layers: missing key"),
    (
        "unknown-variant-key",
        {"variants/x.toml": variant(nmae='"y"')},
        "variants/x.toml: variant.nmae: unknown key; did you mean 'name'?",
    ),
    ("unknown-top-key", {"variants/x.toml": V + "[build]\njobs = 2\n"}, "variants/x.toml: build: unknown key"),
    (
        "unknown-layer",
        {"variants/x.toml": variant(layers='["base", "fusee"]')},
        "variants/x.toml: variant.layers: unknown layer 'fusee'; did you mean 'fuse'?",
    ),
    (
        "unknown-param",
        {"variants/x.toml": V + '[params.nexus]\nvers = "1"\n'},
        "variants/x.toml: params.nexus.vers: unknown parameter (layer nexus takes: version)",
    ),
    (
        "param-layer-not-listed",
        {"variants/x.toml": V + "[params.fuse]\n"},
        "variants/x.toml: params.fuse: layer 'fuse' is not in this variant's layers",
    ),
    (
        "param-unknown-layer",
        {"variants/x.toml": V + "[params.foo]\nx = 1\n"},
        "variants/x.toml: params.foo: unknown layer 'foo'",
    ),
    (
        "params-not-table",
        {"variants/x.toml": V + "[params]\nnexus = 1\n"},
        "variants/x.toml: params.nexus: expected a table, got an integer",
    ),
    (
        "missing-required-layer",
        {"variants/x.toml": variant(layers='["fuse"]')},
        "variants/x.toml: variant.layers: layer 'fuse' requires 'base', which is not listed",
    ),
    (
        "layer-twice",
        {"variants/x.toml": variant(layers='["base", "nexus", "base"]')},
        "variants/x.toml: variant.layers: layer 'base' is listed twice",
    ),
    (
        "layers-not-list",
        {"variants/x.toml": variant(layers='"base"')},
        "variants/x.toml: variant.layers: expected a list of strings, got a string",
    ),
    (
        "layers-empty",
        {"variants/x.toml": variant(layers="[]")},
        "variants/x.toml: variant.layers: a variant needs at least one layer",
    ),
    (
        "cycle",
        {
            "layers/a.toml": '[layer]\nname = "a"\nversion = "1"\nrequires = ["b"]\n',
            "layers/b.toml": '[layer]\nname = "b"\nversion = "1"\nrequires = ["a"]\n',
        },
        "layer.requires: layers require each other in a loop: a -> b -> a",
    ),
    (
        "layer-unknown-require",
        {"layers/a.toml": '[layer]\nname = "a"\nversion = "1"\nrequires = ["zzz"]\n'},
        "layers/a.toml: layer.requires: requires unknown layer 'zzz'",
    ),
    ("layer-missing-version", {"layers/a.toml": '[layer]\nname = "a"\n'}, "layers/a.toml: layer.version: missing key"),
    (
        "layer-shadows-shipped",
        {"layers/fuse.toml": '[layer]\nname = "fuse"\nversion = "2"\n'},
        "layers/fuse.toml: layer.name: layer 'fuse' is already defined (a shipped layer)",
    ),
    (
        "layer-bad-step",
        {"layers/a.toml": '[layer]\nname = "a"\nversion = "1"\n[[steps]]\nrun = "x"\napt = ["y"]\n'},
        "layers/a.toml: steps[0]: a step has exactly one of apt, env, pip, run, user, workdir",
    ),
    ("duplicate-name", {"variants/x.toml": variant(name='"latest"')}, "variant.name: 'latest' is used by two variants"),
    (
        "duplicate-alias",
        {"variants/x.toml": variant(alias='"nexus-sandbox-latest"')},
        "variant.alias: 'nexus-sandbox-latest' is used by two variants",
    ),
    (
        "alias-uppercase",
        {"variants/x.toml": variant(alias='"Nexus-X"')},
        "variants/x.toml: variant.alias: 'Nexus-X' is not a valid E2B template name (must match ^[a-z0-9-_]+$)",
    ),
    ("alias-dot", {"variants/x.toml": variant(alias='"nexus.x"')}, "variant.alias: 'nexus.x' is not a valid E2B"),
    (
        "alias-not-string",
        {"variants/x.toml": variant(alias="7")},
        "variants/x.toml: variant.alias: expected a string, got an integer",
    ),
    ("name-invalid", {"variants/x.toml": variant(name='"-x"')}, "variant.name: '-x' is not a valid variant name"),
    (
        "tag-invalid",
        {"variants/x.toml": variant(tags='["Stable!"]')},
        "variants/x.toml: variant.tags: 'Stable!' is not a valid E2B tag (must match ^[a-z0-9-_.]+$)",
    ),
    (
        "cpu-odd",
        {"variants/x.toml": variant(cpu_count="3")},
        "variants/x.toml: variant.cpu_count: E2B takes 1 or an even number up to 32, got 3",
    ),
    ("cpu-too-big", {"variants/x.toml": variant(cpu_count="64")}, "variant.cpu_count: E2B takes 1 or an even number"),
    (
        "cpu-string",
        {"variants/x.toml": variant(cpu_count='"2"')},
        "variants/x.toml: variant.cpu_count: expected an integer, got a string",
    ),
    (
        "cpu-bool",
        {"variants/x.toml": variant(cpu_count="true")},
        "variant.cpu_count: expected an integer, got a boolean",
    ),
    (
        "memory-small",
        {"variants/x.toml": variant(memory_mb="100")},
        "variants/x.toml: variant.memory_mb: E2B takes an even number of MiB from 128 to 2147483646, got 100",
    ),
    ("memory-odd", {"variants/x.toml": variant(memory_mb="1025")}, "variant.memory_mb: E2B takes an even number"),
    (
        "nexus-version-bad",
        {"variants/x.toml": V + '[params.nexus]\nversion = "1.x"\n'},
        'variants/x.toml: params.nexus.version: expected "latest" or an exact version like "0.5.6", got \'1.x\'',
    ),
    (
        "nexus-python-too-old",
        {"variants/x.toml": V + '[params.nexus]\nversion = "0.10.1"\n'},
        "variants/x.toml: params.nexus.version: nexus-ai-fs 0.10.1 requires Python >=3.14, but the base's Python is 3.13",
    ),
    (
        "nexus-not-released",
        {"variants/x.toml": V + '[params.nexus]\nversion = "9.9.9"\n'},
        "params.nexus.version: nexus-ai-fs 9.9.9 is not a release in the package index",
    ),
    (
        "base-python-bad",
        {"variants/x.toml": V + '[params.base]\npython = "3"\n'},
        "variants/x.toml: params.base.python: expected a Python version like \"3.12\", got '3'",
    ),
    (
        "packages-bad",
        {
            "variants/x.toml": variant(layers='["base", "extra-tools"]')
            + '[params.extra-tools]\npackages = ["git; rm -rf /"]\n'
        },
        "variants/x.toml: params.extra-tools.packages: 'git; rm -rf /' is not a package name",
    ),
    (
        "matrix-collision",
        {"variants/x.toml": variant(name='"x-{v}"', alias='"nexus-x-{v}"') + '[matrix]\nv = ["0.5.6", "0-5-6"]\n'},
        "variants/x.toml: matrix: matrix cases {'v': '0.5.6'} and {'v': '0-5-6'} both expand to the name 'x-0-5-6'",
    ),
    (
        "matrix-unknown-axis",
        {"variants/x.toml": variant(name='"x-{ver}"') + '[matrix]\nv = ["1"]\n'},
        "variants/x.toml: variant.name: unknown matrix axis {ver} (axes: v)",
    ),
    (
        "placeholder-no-matrix",
        {"variants/x.toml": variant(alias='"nexus-{v}"')},
        "variant.alias: unknown matrix axis {v} (axes: none: this file has no [matrix])",
    ),
    (
        "matrix-empty-axis",
        {"variants/x.toml": V + "[matrix]\nv = []\n"},
        "variants/x.toml: matrix.v: expected a non-empty list of values, got an array",
    ),
    (
        "matrix-axis-table",
        {"variants/x.toml": V + "[matrix.v]\na = 1\n"},
        "variants/x.toml: matrix.v: expected a non-empty list of values, got a table",
    ),
]


@pytest.mark.parametrize("case_id,files,expected", CASES, ids=[c[0] for c in CASES])
def test_bad_input_exits_2_with_one_line(project, case_id, files, expected):
    for rel, text in files.items():
        write(project / rel, text)
    before = snapshot(project)
    result = cli_runner().invoke(cli, ["-C", str(project), "plan"])
    assert result.exit_code == 2, result.output
    err = result.stderr.strip()
    assert len(err.splitlines()) == 1, err
    assert "Traceback" not in result.output
    assert err.startswith("e2b-matrix: error: ")
    if case_id == "not-utf8":
        assert "variants/x.toml: not UTF-8 text" in err or "invalid TOML" in err
    else:
        assert expected in err
    assert snapshot(project) == before
    assert result.stdout == ""


def test_corpus_is_large_enough():
    assert len(CASES) >= 40


@pytest.mark.parametrize(
    "args,expected",
    [
        (["--set", "nexus"], "--set: 'nexus' is not LAYER.PARAM=VALUE"),
        (["--set", "nope.x=1"], "--set: unknown layer 'nope'"),
        (["--set", "nexus.v=1"], "--set: unknown parameter 'nexus.v' (layer nexus takes: version)"),
        (["--set", "nexus.version=abc"], '--set: nexus.version: expected "latest" or an exact version'),
        (
            ["--backend", "docker", "--ca-cert", "/nonexistent.crt"],
            "/nonexistent.crt: --ca-cert: cannot read CA certificate",
        ),
        (["--ca-cert", "/nonexistent.crt"], "--ca-cert: applies to --backend docker only"),
    ],
)
def test_bad_command_line(project, args, expected):
    result = cli_runner().invoke(cli, ["-C", str(project), "plan", *args])
    assert result.exit_code == 2
    assert expected in result.stderr


def test_unknown_variant_suggests(project):
    result = cli_runner().invoke(cli, ["-C", str(project), "plan", "lates"])
    assert result.exit_code == 2
    assert "no variant named 'lates'" in result.stderr and "did you mean 'latest'?" in result.stderr


def test_no_variants_folder(tmp_path):
    result = cli_runner().invoke(cli, ["-C", str(tmp_path), "list"])
    assert result.exit_code == 2
    assert "no variants/ folder here (use -C DIR to point at the project)" in result.stderr
