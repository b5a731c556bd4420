"""The pure core: layers, variants, matrix, order, versions, fingerprints (no CLI)."""

from __future__ import annotations

import json

import attrs
import pytest

from conftest import ROOT, write
from e2b_matrix import backends, render, versions
from e2b_matrix.config import load_project
from e2b_matrix.errors import ConfigError
from e2b_matrix.layers import SHIPPED
from e2b_matrix.pins import Committed
from e2b_matrix.resolve import build_spec, canonical, fingerprint, layer_order, name_safe
from e2b_matrix.settings import Settings

INDEX = versions.StaticIndex({"nexus-ai-fs": {
    "0.5.5": ">=3.11", "0.5.6": ">=3.11", "0.6.4": ">=3.13", "0.9.26": ">=3.12", "0.9.38": ">=3.14",
    "0.10.1": ">=3.14", "0.11.0rc1": ">=3.11"}})


def specs(root=ROOT, backend="e2b", index=INDEX, offline=False, lock=None):
    p = load_project(root)
    target = backends.make(backend, Settings())
    return {v.name: build_spec(v, p.layers, target, index, offline, lock.entries if lock else None,
                               pins=Committed(root)) for v in p.variants}


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
    nexus_check = next(c for c in s.checks if c.name == "nexus --version")
    assert nexus_check.expect == "0.9.26" and nexus_check.layer == "nexus"


# -- versions ------------------------------------------------------------------

@pytest.mark.parametrize("spec,py,ok", [
    (">=3.12", "3.12", True), (">=3.12", "3.11", False), (">=3.14", "3.12", False), ("<3.13,>=3.11", "3.12", True),
    ("<3.13,>=3.11", "3.13", False), ("~=3.11", "3.12", True), ("==3.12.*", "3.12", True), ("!=3.12", "3.12", False),
    (None, "3.12", True), ("", "3.11", True), (">=3.10.0", "3.11", True),
    # what the hand-rolled parser got wrong: ~= bounds the last-but-one part; a clause it
    # cannot read admits nothing (a guess could pick a release that does not install)
    ("~=3.11.0", "3.12", False), ("~=3.11.0", "3.11", True), ("<3.12.0rc1", "3.12", False),
    ("<3.12.0rc1", "3.11", True), (">=3.12,<3.12.0", "3.12", False), ("not a specifier", "3.12", False),
])
def test_requires_python(spec, py, ok):
    assert versions.admits(spec, py) is ok


def test_post_releases_are_releases_and_pre_releases_and_yanked_are_not():
    idx = versions.StaticIndex({"p": {"1.0": None, "1.0.post1": None, "1.1rc1": None, "1.1.dev3": None,
                                      "not-a-version": None}})
    assert versions.newest_for(idx, "p", "3.12") == "1.0.post1"
    yanked = versions.parse_releases({"releases": {"1.0": [{"requires_python": ">=3.8"}],
                                                   "2.0": [{"yanked": True, "requires_python": ">=3.8"}],
                                                   "3.0": []}}, "u")
    assert [(r.version, r.yanked) for r in yanked] == [("1.0", False), ("2.0", True)]
    assert versions.find(idx, "p", "1.0.0").version == "1.0"  # equal versions are one release


def test_latest_respects_the_base_python():
    assert versions.newest_for(INDEX, "nexus-ai-fs", "3.11") == "0.5.6"   # not the rc, not 0.9
    assert versions.newest_for(INDEX, "nexus-ai-fs", "3.12") == "0.9.26"  # not 0.9.38 (3.14), not 0.6 (3.13)
    assert versions.newest_for(INDEX, "nexus-ai-fs", "3.13") == "0.9.26"
    assert versions.newest_for(INDEX, "nexus-ai-fs", "3.14") == "0.10.1"
    assert versions.newest_for(INDEX, "nexus-ai-fs", "3.10") is None


def test_latest_is_pinned_in_the_spec():
    s = specs()["latest"]
    assert s.layer_versions() == {"base": "1", "fuse": "1", "nexus": "0.9.26"}
    copy, install = render.instructions(s.steps)[-2:]
    nexus = s.requirements[-1]
    assert nexus.asks == ("nexus-ai-fs==0.9.26",) and "nexus-ai-fs==0.9.26" in nexus.pinned
    assert copy == {"type": "COPY", "args": [nexus.path, f"/opt/e2b-matrix/requirements/{nexus.path[13:]}", "root", ""]}
    assert install["args"][0] == f"pip install --require-hashes --no-deps -r {copy['args'][1]}"
    docker = specs(backend="docker")
    assert docker["latest"].layer_versions()["nexus"] == "0.9.26"


def test_pinned_version_the_base_cannot_run_names_both(project):
    pinned = (ROOT / "variants/pinned.toml").read_text()
    write(project / "variants/pinned.toml", pinned.replace('"0.5.6"', '"0.6.4"'))  # >=3.13: runs on 3.13
    assert specs(project)["pinned"].layer_versions()["nexus"] == "0.6.4"
    write(project / "variants/pinned.toml", pinned.replace('"0.5.6"', '"0.10.1"'))
    with pytest.raises(ConfigError) as e:
        specs(project)
    assert str(e.value) == ("variants/pinned.toml: params.nexus.version: nexus-ai-fs 0.10.1 requires Python "
                            ">=3.14, but the base's Python is 3.13")


def test_offline_reuses_the_locked_version(tmp_path):
    from e2b_matrix.lock import TemplateLock

    lock = TemplateLock.loads(LOCK_WITH_LATEST)
    offline = versions.PyPIIndex(url="http://127.0.0.1:9/pypi", cache_dir=tmp_path, offline=True)
    p = load_project(ROOT)
    e2b = backends.make("e2b", Settings())

    def spec(name, lock):
        return build_spec(p.variant(name), p.layers, e2b, offline, True, lock.entries, pins=Committed(ROOT))

    assert spec("latest", lock).layer_versions()["nexus"] == "0.5.5"
    assert spec("pinned", lock).layer_versions()["nexus"] == "0.5.6"  # nothing cached to check it against
    with pytest.raises(ConfigError, match="not in the index cache and --offline forbids asking"):
        spec("full", lock)  # no lock entry, no cache


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


def test_index_file_url_and_cache(tmp_path, monkeypatch):
    idx = versions.PyPIIndex(url=(ROOT / "tests/data/index").as_uri())
    rel = {r.version: r for r in idx.releases("nexus-ai-fs")}
    assert rel["0.9.26"].requires_python == ">=3.12" and rel["0.9.27"].yanked
    assert versions.newest_for(idx, "nexus-ai-fs", "3.12") == "0.9.26"
    # an http index is cached on disk for ttl seconds
    calls = []
    monkeypatch.setattr(versions.PyPIIndex, "_fetch",
                        lambda self, pkg: calls.append(pkg) or [versions.Release("1.0")])
    a = versions.PyPIIndex(url="http://127.0.0.1:9/pypi", cache_dir=tmp_path, ttl=60)
    assert a.releases("x") == [versions.Release("1.0")]
    b = versions.PyPIIndex(url="http://127.0.0.1:9/pypi", cache_dir=tmp_path, ttl=60)
    assert b.releases("x") == [versions.Release("1.0")] and calls == ["x"]
    c = versions.PyPIIndex(url="http://127.0.0.1:9/pypi", cache_dir=tmp_path, ttl=0)
    c.releases("x")
    assert calls == ["x", "x"]
    # a corrupt cache file is discarded and the index asked again, not an error until its TTL
    for cache in tmp_path.glob("pypi-*.json"):
        cache.write_text("[1]")
    assert versions.PyPIIndex(url="http://127.0.0.1:9/pypi", cache_dir=tmp_path, ttl=60).releases("x") == [
        versions.Release("1.0")]
    assert calls == ["x", "x", "x"]


@pytest.mark.parametrize("answer", [{"releases": ["0.5.6"]}, [1], {"releases": {"1.0": "x"}}, {"info": {}}])
def test_an_index_answer_of_the_wrong_shape_names_the_url(answer):
    with pytest.raises(ConfigError) as e:
        versions.parse_releases(answer, "http://127.0.0.1:9/pypi/nexus-ai-fs/json")
    assert str(e.value).startswith("http://127.0.0.1:9/pypi/nexus-ai-fs/json: ")


def test_unreachable_index_is_a_clear_error(tmp_path):
    idx = versions.PyPIIndex(url="http://127.0.0.1:9/pypi", cache_dir=tmp_path, timeout=2)
    with pytest.raises(ConfigError, match="cannot read the package index for nexus-ai-fs .*--offline"):
        idx.releases("nexus-ai-fs")


# -- order ---------------------------------------------------------------------

def test_layer_order_comes_from_requires_not_file_order(project):
    write(project / "variants/full.toml", (ROOT / "variants/full.toml").read_text().replace(
        '["base", "fuse", "nexus", "extra-tools"]', '["extra-tools", "nexus", "fuse", "base"]'))
    p = load_project(project)
    assert layer_order(p.variant("full").layers, p.layers) == ["base", "fuse", "nexus", "extra-tools"]
    assert specs(project)["full"].fingerprint == specs()["full"].fingerprint


def test_project_layers_extend_the_shipped_ones(project):
    write(project / "layers/node.toml", """
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
""")
    write(project / "variants/node.toml", """
[variant]
name = "node"
alias = "nexus-sandbox-node"
layers = ["node-tools", "base", "extra-tools"]
""")
    s = specs(project)["node"]
    assert [rl.name for rl in s.layers] == ["base", "extra-tools", "node-tools"]
    assert render.instructions(s.steps)[-1] == {"type": "RUN", "args": ["npm install -g typescript", "root"]}
    assert s.checks[-1].name == "tsc" and s.checks[-1].layer == "node-tools"


# -- matrix --------------------------------------------------------------------

def test_matrix_expands_sorted_with_safe_names(project):
    write(project / "variants/versions.toml", """
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
""")
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
    reordered = text.replace('cpu_count = 2\nmemory_mb = 4096\n', 'memory_mb = 4096\ncpu_count = 2\n')
    assert reordered != text
    write(project / "variants/full.toml", reordered)
    assert specs(project)["full"].fingerprint == specs()["full"].fingerprint


@pytest.mark.parametrize("change,affected", [
    (lambda t: t.replace("cpu_count = 2", "cpu_count = 4"), "cpu"),
    (lambda t: t.replace("memory_mb = 4096", "memory_mb = 8192"), "memory"),
    (lambda t: t.replace('"curl"]', '"curl", "htop"]'), "packages"),
    (lambda t: t.replace('layers = [', 'tags = ["stable"]\nlayers = ['), "tags"),
    (lambda t: t + '\n[params.base]\ntemplate = "my-interpreter"\n', "base"),
    (lambda t: t + '\n[params.nexus]\nversion = "0.5.6"\n', "nexus version"),
])
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


def test_new_index_release_changes_only_latest_variants():
    newer = versions.StaticIndex({"nexus-ai-fs": {**{r.version: r.requires_python for r in INDEX.releases(
        "nexus-ai-fs")}, "0.9.30": ">=3.12"}})
    a, b = specs(), specs(index=newer)
    assert b["latest"].fingerprint != a["latest"].fingerprint
    assert b["pinned"].fingerprint == a["pinned"].fingerprint


def test_canonical_spec_holds_no_secret_and_no_force():
    doc = json.dumps(canonical(specs()["full"]))
    assert "force" not in doc and "password" not in doc.lower()


# -- render ----------------------------------------------------------------------

@pytest.mark.parametrize("name", ["latest", "pinned", "minimal", "full"])
def test_pure_instructions_equal_the_sdk(name):
    """The fingerprint's step list is exactly what the SDK sends (checked against e2b itself); the SDK
    adds the files hash of each COPY (the fingerprint has the file's sha256 in ``files``)."""
    s = specs()[name]
    sent = json.loads(render.to_json(s))
    hashes = [step.pop("filesHash", None) for step in sent["steps"]]
    assert sent == render.api_body(s)
    assert [h is not None for h in hashes] == [step["type"] == "COPY" for step in sent["steps"]]
    assert sum(h is not None for h in hashes) == len(s.requirements) > 0


def test_every_step_kind_matches_the_sdk():
    from e2b_matrix.model import Step

    steps = (Step("run_cmd", ("echo hi",)), Step("run_cmd", ("id",), {"user": "root"}),
             Step("apt_install", (("vim", "git"),), {"no_install_recommends": True}),
             Step("pip_install", (("numpy",),)), Step("pip_install", (("x",),), {"g": False}),
             Step("set_envs", ({"A": "1", "B": "two words"},)), Step("set_user", ("root",)),
             Step("set_workdir", ("/tmp",)), Step("make_dir", (("/a", "/b c"),), {"mode": 0o755}))
    s = attrs.evolve(specs()["minimal"], steps=steps)
    assert json.loads(render.to_json(s)) == render.api_body(s)
