"""The pure core: layers, variants, matrix, order, "latest", fingerprints (no CLI)."""

from __future__ import annotations

import json
import shlex

import attrs
import pytest

from conftest import ROOT, uv_args, write
from e2b_matrix import backends, render
from e2b_matrix.config import load_project
from e2b_matrix.errors import ConfigError
from e2b_matrix.index import PackageIndex, Uv, UvFailed
from e2b_matrix.layers import SHIPPED
from e2b_matrix.pins import PLATFORM, Committed
from e2b_matrix.resolve import build_spec, canonical, fingerprint, layer_order, name_safe
from e2b_matrix.settings import Settings
from wheelhouse import shipped, simple, wheel


def index_of(offline: bool = False) -> PackageIndex:
    """The package index as a run asks it: uv with the environment's E2B_MATRIX_UV_ARGS (the tests' index)."""
    s = Settings.from_env()
    return PackageIndex(Uv(s.uv, s.uv_args, offline))


def specs(root=ROOT, backend="e2b", index=None, offline=False, lock=None):
    p = load_project(root)
    target = backends.make(backend, Settings())
    index = index or index_of(offline)
    return {
        v.name: build_spec(v, p.layers, target, index, offline, lock.entries if lock else None, pins=Committed(root))
        for v in p.variants
    }


# -- layers --------------------------------------------------------------------


def test_shipped_layers_declare_everything():
    assert list(SHIPPED) == ["base", "fuse", "nexus", "extra-tools"]
    for layer in SHIPPED.values():
        assert layer.version and layer.description
        assert layer.name == "base" or "base" in layer.requires
    # code-interpreter-v1 (and E2B's Docker image of it) is built from_image("python:3.13") since 2026-03
    assert (SHIPPED["base"].defaults()["python"], SHIPPED["base"].defaults()["image_python"]) == ("3.13", "3.13")


def test_base_differs_per_backend():
    s = specs()["latest"]
    assert (s.base.kind, s.base.ref, s.base.python) == ("template", "code-interpreter-v1", "3.13")
    d = specs(backend="docker")["latest"]
    assert (d.base.kind, d.base.ref) == ("image", "e2bdev/code-interpreter:latest")
    assert d.steps[0].call == "run_cmd" and "useradd" in d.steps[0].args[0]


def test_checks_follow_the_design_table():
    s = specs()["full"]
    names = [c.name for c in s.checks]
    assert names[:2] == ["stateful python", "python3 --version"]
    assert {"import fuse", "user_allow_other", "passwordless sudo", "mount points", "nexus --version"} <= set(names)
    assert {"git --version", "jq --version", "rg --version", "curl --version"} <= set(names)
    stateful = s.checks[0]
    assert stateful.cells == ("x = 42", "x + 8") and stateful.expect == "50"
    assert "stateful python" not in [c.name for c in specs(backend="docker")["full"].checks]
    installed = next(c for c in s.checks if c.name == "nexus-ai-fs version")
    assert (installed.version, installed.layer) == ("0.9.26", "nexus")
    cli_runs = next(c for c in s.checks if c.name == "nexus --version")
    assert (cli_runs.expect, cli_runs.version) == (None, None)  # 0.9.21-0.9.26 print 0.9.20: it only has to run


# -- "latest": uv's answer -----------------------------------------------------

# Requires-Python as uv reads it from the index (index.py): a release is one a Python runs when its
# lower bound admits it; upper bounds are ignored (uv's docs/pip/compatibility.md), where the
# hand-written filter this replaced refused (marked "upper"). Each case is a package whose 1.0 any
# Python runs and whose 2.0 has the Requires-Python of the case.
REQUIRES_PYTHON = [
    (">=3.12", "3.12", "2.0"),
    (">=3.12", "3.11", "1.0"),
    (">=3.14", "3.12", "1.0"),
    ("<3.13,>=3.11", "3.12", "2.0"),
    ("~=3.11", "3.12", "2.0"),
    ("==3.12.*", "3.12", "2.0"),
    (">=3.10.0", "3.11", "2.0"),
    ("~=3.11.0", "3.11", "2.0"),
    ("<3.12.0rc1", "3.11", "2.0"),
    ("!=3.12.*", "3.13", "2.0"),
    (">=3.12.0rc1", "3.12", "2.0"),
    (">=3.12.1", "3.12", "1.0"),
    ("not a specifier", "3.12", "1.0"),
    ("<3.13,>=3.11", "3.13", "2.0 upper"),
    ("~=3.11.0", "3.12", "2.0 upper"),
    ("<3.12.0rc1", "3.12", "2.0 upper"),
    ("!=3.12.*", "3.12", "2.0 upper"),
    ("==3.12.*", "3.13", "2.0 upper"),
    (">=3.12,<3.12.0", "3.12", "2.0 upper"),
]


@pytest.fixture(scope="module")
def cases_index(tmp_path_factory) -> PackageIndex:
    folder = tmp_path_factory.mktemp("requires-python")
    for i, (spec, _, _) in enumerate(REQUIRES_PYTHON):
        wheel(folder, f"case{i}", "1.0", requires_python=">=3.8")
        wheel(folder, f"case{i}", "2.0", requires_python=spec)
    simple(folder)
    return PackageIndex(Uv(args=tuple(shlex.split(uv_args(folder)))))


@pytest.mark.parametrize("i", range(len(REQUIRES_PYTHON)), ids=[f"{spec} on {py}" for spec, py, _ in REQUIRES_PYTHON])
def test_requires_python_as_uv_reads_it(cases_index, i):
    _spec, python, newest = REQUIRES_PYTHON[i]
    assert cases_index.newest(f"case{i}", python, PLATFORM) == newest.split()[0]


def test_post_releases_are_releases_and_pre_releases_and_yanked_are_not(tmp_path):
    for version in ("1.0", "1.0.post1", "1.1rc1", "1.1.dev3", "1.2"):
        wheel(tmp_path, "p", version)
    wheel(tmp_path, "q", "2.0rc1")
    simple(tmp_path, yanked=["p-1.2-py3-none-any.whl"])
    idx = PackageIndex(Uv(args=tuple(shlex.split(uv_args(tmp_path)))))
    assert idx.newest("p", "3.12", PLATFORM) == "1.0.post1"
    assert idx.newest("q", "3.12", PLATFORM) is None  # only a pre-release: none is "latest"
    assert idx.problem("p", "1.0.0", "3.12", PLATFORM) == ""  # equal versions are one release
    assert idx.problem("p", "1.2", "3.12", PLATFORM) == ""  # an exact pin may name a yanked file (PEP 592)
    assert idx.problem("p", "1.1rc1", "3.12", PLATFORM) == ""  # and a pre-release
    assert idx.problem("p", "1.3", "3.12", PLATFORM) == "p 1.3 is not a release in the package index"
    with pytest.raises(UvFailed, match="nosuch was not found"):
        idx.newest("nosuch", "3.12", PLATFORM)


def test_latest_respects_the_base_python():
    idx = index_of()
    assert idx.newest("nexus-ai-fs", "3.11", PLATFORM) == "0.5.6"  # not the rc, not 0.9
    assert idx.newest("nexus-ai-fs", "3.12", PLATFORM) == "0.9.26"  # not 0.9.27 (yanked), not 0.9.38 (3.14)
    assert idx.newest("nexus-ai-fs", "3.13", PLATFORM) == "0.9.26"
    assert idx.newest("nexus-ai-fs", "3.14", PLATFORM) == "0.10.1"
    assert idx.newest("nexus-ai-fs", "3.10", PLATFORM) is None


def test_each_question_is_asked_of_uv_once_per_run(tmp_path_factory, monkeypatch):
    import fake_uv

    exe, log = fake_uv.recording(tmp_path_factory.mktemp("fake-uv"))
    monkeypatch.setenv("E2B_MATRIX_UV", str(exe))
    specs()  # four variants: three ask for "latest", one for 0.5.6, all on 3.13
    asked = [c[c.index("--python-version") + 1] for c in fake_uv.calls(log)]
    assert asked == ["3.13", "3.13"] and all("--no-deps" in c and "--offline" not in c for c in fake_uv.calls(log))


def test_latest_is_pinned_in_the_spec():
    s = specs()["latest"]
    assert s.layer_versions() == {"base": "1", "fuse": "1", "nexus": "0.9.26"}
    copy, install = render.instructions(s.steps)[-2:]
    nexus = s.requirements[-1]
    assert nexus.asks == ("nexus-ai-fs==0.9.26",) and "nexus-ai-fs==0.9.26" in nexus.pinned
    assert copy == {"type": "COPY", "args": [nexus.path, f"/opt/e2b-matrix/requirements/{nexus.path[13:]}", "root", ""]}
    assert install["args"][0] == f"pip install --require-hashes --no-deps -r {copy['args'][1]} && pip check"
    docker = specs(backend="docker")
    assert docker["latest"].layer_versions()["nexus"] == "0.9.26"


def test_pinned_version_the_base_cannot_run_names_both(project):
    pinned = (ROOT / "variants/pinned.toml").read_text()
    write(project / "variants/pinned.toml", pinned.replace('"0.5.6"', '"0.6.4"'))  # >=3.13: runs on 3.13
    assert specs(project)["pinned"].layer_versions()["nexus"] == "0.6.4"
    write(project / "variants/pinned.toml", pinned.replace('"0.5.6"', '"0.10.1"'))
    with pytest.raises(ConfigError) as e:
        specs(project)
    assert str(e.value) == (
        "variants/pinned.toml: params.nexus.version: nexus-ai-fs 0.10.1 requires Python "
        ">=3.14, but the base's Python is 3.13"
    )


def test_offline_reuses_the_locked_version(tmp_path):
    from e2b_matrix.lock import TemplateLock

    lock = TemplateLock.loads(LOCK_WITH_LATEST)
    # an index uv cannot reach, and nothing of it in uv's cache
    offline = PackageIndex(Uv(args=("--index-url", "http://127.0.0.1:9/simple"), offline=True))
    p = load_project(ROOT)
    e2b = backends.make("e2b", Settings())

    def spec(name, lock):
        return build_spec(p.variant(name), p.layers, e2b, offline, True, lock.entries, pins=Committed(ROOT))

    assert spec("latest", lock).layer_versions()["nexus"] == "0.5.5"
    assert spec("pinned", lock).layer_versions()["nexus"] == "0.5.6"  # nothing cached to check it against
    with pytest.raises(ConfigError) as e:
        spec("full", lock)  # no lock entry, no cache
    assert str(e.value) == (
        "variants/full.toml: params.nexus.version: uv's cache cannot say the newest nexus-ai-fs "
        "for Python 3.13, and --offline forbids asking the package index"
    )


LOCK_WITH_LATEST = """schema = 1
[templates.nexus-sandbox-latest]
variant = "latest"
template_id = "tid"
build_id = "bid"
fingerprint = "sha256:0000000000000000000000000000000000000000000000000000000000000000"
layers = { base = "1", fuse = "1", nexus = "0.5.5" }
built_at = 2026-11-26T17:00:00Z
domain = "e2b.app"
"""


def test_offline_answers_from_uvs_cache(wheels, monkeypatch):
    """An index over HTTP, asked once: --offline then answers from uv's cache, the index gone."""
    from wheelhouse import SimpleIndex

    server = SimpleIndex(wheels)
    with server as url:
        monkeypatch.setenv("E2B_MATRIX_UV_ARGS", f"--index-url {url}")
        online = {n: s.layer_versions()["nexus"] for n, s in specs().items()}
        assert server.requests > 0
    asked = server.requests
    offline = {n: s.layer_versions()["nexus"] for n, s in specs(offline=True).items()}
    assert offline == online == {"full": "0.9.26", "latest": "0.9.26", "minimal": "0.9.26", "pinned": "0.5.6"}
    assert server.requests == asked


def test_an_index_uv_cannot_read_is_one_line_naming_the_variant(tmp_path_factory, monkeypatch):
    import fake_uv

    exe = fake_uv.script(
        tmp_path_factory.mktemp("fake-uv"),
        """
sys.stderr.write("error: Failed to fetch: `https://127.0.0.1:9/simple/nexus-ai-fs/`\\n"
                 "  Caused by: Connection refused (os error 111)\\n")
sys.exit(2)""",
    )
    monkeypatch.setenv("E2B_MATRIX_UV", str(exe))
    with pytest.raises(ConfigError) as e:
        specs()
    assert str(e.value) == (
        "variants/full.toml: params.nexus.version: uv cannot say the newest nexus-ai-fs for "
        "Python 3.13: Failed to fetch: `https://127.0.0.1:9/simple/nexus-ai-fs/` Connection "
        "refused (os error 111); --offline reuses the version in the lock"
    )


# -- order ---------------------------------------------------------------------


def test_layer_order_comes_from_requires_not_file_order(project):
    write(
        project / "variants/full.toml",
        (ROOT / "variants/full.toml")
        .read_text()
        .replace('["base", "fuse", "nexus", "extra-tools"]', '["extra-tools", "nexus", "fuse", "base"]'),
    )
    p = load_project(project)
    assert layer_order(p.variant("full").layers, p.layers) == ["base", "fuse", "nexus", "extra-tools"]
    assert specs(project)["full"].fingerprint == specs()["full"].fingerprint


def test_project_layers_extend_the_shipped_ones(project):
    write(
        project / "layers/node.toml",
        """
[layer]
name = "node-tools"
version = "2"
requires = ["extra-tools"]
[[steps]]
run = "npm install -g typescript"
user = "root"
[[checks]]
name = "tsc"
command = "tsc --version"
""",
    )
    write(
        project / "variants/node.toml",
        """
[variant]
name = "node"
alias = "nexus-sandbox-node"
layers = ["node-tools", "base", "extra-tools"]
""",
    )
    s = specs(project)["node"]
    assert [rl.name for rl in s.layers] == ["base", "extra-tools", "node-tools"]
    assert render.instructions(s.steps)[-1] == {"type": "RUN", "args": ["npm install -g typescript", "root"]}
    assert s.checks[-1].name == "tsc" and s.checks[-1].layer == "node-tools"


# -- matrix --------------------------------------------------------------------


def test_matrix_expands_sorted_with_safe_names(project):
    write(
        project / "variants/versions.toml",
        """
[variant]
name = "v-{nexus_version}-{cpu}"
alias = "nexus-sandbox-{nexus_version}-c{cpu}"
layers = ["base", "nexus"]
cpu_count = "{cpu}"

[params.nexus]
version = "{nexus_version}"

[matrix]
nexus_version = ["0.5.6", "0.5.5"]
cpu = [2, 4]
""",
    )
    p = load_project(project)
    m = [v for v in p.variants if v.name.startswith("v-")]
    assert [v.name for v in m] == ["v-0-5-5-2", "v-0-5-5-4", "v-0-5-6-2", "v-0-5-6-4"]
    v = p.variant("v-0-5-6-4")
    assert v.alias == "nexus-sandbox-0-5-6-c4" and v.cpu_count == 4
    assert v.params_for("nexus") == {"version": "0.5.6"}  # params keep the raw value
    assert name_safe("3.12/Beta") == "3-12-beta"


# -- fingerprints --------------------------------------------------------------


def test_fingerprint_is_stable_and_shaped():
    a, b = specs(), specs()
    assert {n: s.fingerprint for n, s in a.items()} == {n: s.fingerprint for n, s in b.items()}
    assert all(s.fingerprint.startswith("sha256:") and len(s.fingerprint) == 71 for s in a.values())
    assert len({s.fingerprint for s in a.values()}) == 4


def test_fingerprint_ignores_toml_key_order(project):
    text = (project / "variants/full.toml").read_text()
    reordered = text.replace("cpu_count = 2\nmemory_mb = 4096\n", "memory_mb = 4096\ncpu_count = 2\n")
    assert reordered != text
    write(project / "variants/full.toml", reordered)
    assert specs(project)["full"].fingerprint == specs()["full"].fingerprint


@pytest.mark.parametrize(
    "change,affected",
    [
        (lambda t: t.replace("cpu_count = 2", "cpu_count = 4"), "cpu"),
        (lambda t: t.replace("memory_mb = 4096", "memory_mb = 8192"), "memory"),
        (lambda t: t.replace('"curl"]', '"curl", "htop"]'), "packages"),
        (lambda t: t.replace("layers = [", 'tags = ["stable"]\nlayers = ['), "tags"),
        (lambda t: t + '\n[params.base]\ntemplate = "my-interpreter"\n', "base"),
        (lambda t: t + '\n[params.nexus]\nversion = "0.5.6"\n', "nexus version"),
    ],
)
def test_fingerprint_changes_only_for_the_changed_variant(project, change, affected):
    before = specs(project)
    write(project / "variants/full.toml", change((project / "variants/full.toml").read_text()))
    after = specs(project)
    assert after["full"].fingerprint != before["full"].fingerprint, affected
    for name in ("latest", "pinned", "minimal"):
        assert after[name].fingerprint == before[name].fingerprint


def test_fingerprint_covers_start_ready_and_files():
    s = specs()["minimal"]
    assert fingerprint(attrs.evolve(s, start_cmd="sudo /root/.jupyter/start-up.sh")) != s.fingerprint
    assert fingerprint(attrs.evolve(s, ready_cmd="sleep 5")) != s.fingerprint
    assert fingerprint(attrs.evolve(s, files=(("ca/x.crt", "ab"),))) != s.fingerprint
    assert fingerprint(attrs.evolve(s, parent_build="b1")) != fingerprint(attrs.evolve(s, parent_build="b2"))


def test_new_index_release_changes_only_latest_variants(tmp_path, monkeypatch):
    a = specs()
    folder = shipped(tmp_path / "newer")
    wheel(folder, "nexus-ai-fs", "0.9.30", ["tinydep>=1.0"], ">=3.12")
    simple(folder, yanked=["nexus_ai_fs-0.9.27-py3-none-any.whl"])
    monkeypatch.setenv("E2B_MATRIX_UV_ARGS", uv_args(folder))
    b = specs()
    assert b["latest"].layer_versions()["nexus"] == "0.9.30"
    assert b["latest"].fingerprint != a["latest"].fingerprint
    assert b["pinned"].fingerprint == a["pinned"].fingerprint


def test_canonical_spec_holds_no_secret_and_no_force():
    doc = json.dumps(canonical(specs()["full"]))
    assert "force" not in doc and "password" not in doc.lower()


# -- render ----------------------------------------------------------------------


def api_body(spec) -> dict:
    """The build body computed without e2b from render.instructions (the SDK's to_json, minus force flags)."""
    body: dict = {"steps": [{**i, "force": False} for i in render.instructions(spec.steps)], "force": False}
    body["fromTemplate" if spec.base.kind == "template" else "fromImage"] = (
        render.template_source(spec) if spec.base.kind == "template" else spec.base.ref
    )
    if spec.start_cmd:
        body["startCmd"] = spec.start_cmd
    if spec.ready_cmd or spec.start_cmd:
        body["readyCmd"] = spec.ready_cmd or "sleep 20"
    return body


@pytest.mark.parametrize("name", ["latest", "pinned", "minimal", "full"])
def test_pure_instructions_equal_the_sdk(name):
    """The fingerprint's step list is exactly what the SDK sends (checked against e2b itself); the SDK
    adds the files hash of each COPY (the fingerprint has the file's sha256 in ``files``)."""
    s = specs()[name]
    sent = json.loads(render.to_json(s))
    hashes = [step.pop("filesHash", None) for step in sent["steps"]]
    assert sent == api_body(s)
    assert [h is not None for h in hashes] == [step["type"] == "COPY" for step in sent["steps"]]
    assert sum(h is not None for h in hashes) == len(s.requirements) > 0


def test_every_step_kind_matches_the_sdk():
    from e2b_matrix.model import Step

    steps = (
        Step("run_cmd", ("echo hi",)),
        Step("run_cmd", ("id",), {"user": "root"}),
        Step("apt_install", (("vim", "git"),), {"no_install_recommends": True}),
        Step("pip_install", (("numpy",),)),
        Step("pip_install", (("x",),), {"g": False}),
        Step("set_envs", ({"A": "1", "B": "two words"},)),
        Step("set_user", ("root",)),
        Step("set_workdir", ("/tmp",)),
        Step("make_dir", (("/a", "/b c"),), {"mode": 0o755}),
    )
    s = attrs.evolve(specs()["minimal"], steps=steps)
    assert json.loads(render.to_json(s)) == api_body(s)
