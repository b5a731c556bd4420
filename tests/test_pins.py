"""Hash-pinned requirements (pins.py): `e2b-matrix compile`, the files, and how builds, plan and lock
check use them, and the files as input (never through a link, bounded, whole). uv resolves from tiny
wheels (tests/wheelhouse.py): no test needs the network."""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import tarfile
from pathlib import Path

import pytest

import fake_uv
from conftest import ROOT, one_line_error, run, snapshot, uv_args, write
from e2b_matrix import pins, render, reqfile, workflow
from e2b_matrix.lock import TemplateLock
from e2b_matrix.plan import step_trie
from wheelhouse import SimpleIndex, shipped, wheel


def specs(project: Path, backend: str = "e2b", names=()) -> dict:
    session = workflow.Session.open(workflow.Options(root=project, backend=backend, names=names))
    return {s.name: s for s in workflow.resolve_specs(session, workflow.load(session), session.lock())}


def pins_of(path: Path) -> dict[str, str]:
    found, _, problem = pins.parse(path.read_text())
    assert problem == ""
    return found


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture
def bare(tmp_path) -> Path:
    """The shipped variants without any requirements file."""
    shutil.copytree(ROOT / "variants", tmp_path / "variants")
    return tmp_path


@pytest.fixture
def no_compile(tmp_path_factory, monkeypatch):
    """Fails the test if anything compiles (uv still answers "latest", through E2B_MATRIX_UV)."""
    exe, log = fake_uv.recording(tmp_path_factory.mktemp("fake-uv"), compile_ok=False)
    monkeypatch.setenv("E2B_MATRIX_UV", str(exe))
    yield log
    assert not [c for c in fake_uv.calls(log) if "--generate-hashes" in c], "uv compiled"


@pytest.fixture
def own_wheels(tmp_path, monkeypatch) -> Path:
    """uv resolves from a folder of this test's own (starting with fusepy 3.0.1, tinydep 1.0, nexus 0.9.x)."""
    folder = tmp_path / "own-wheels"
    wheel(folder, "fusepy", "3.0.1")
    wheel(folder, "tinydep", "1.0")
    for version in ("0.9.25", "0.9.26"):
        wheel(folder, "nexus-ai-fs", version, ["tinydep>=1.0"], ">=3.12")
    monkeypatch.setenv("E2B_MATRIX_UV_ARGS", uv_args(folder))
    return folder


# -- compile ------------------------------------------------------------------------------------


def test_compile_pins_and_hashes_every_package_of_every_pip_step(bare, wheels):
    r = run(bare, "compile", "--json")
    assert r.exit_code == 0, r.output
    results = json.loads(r.stdout)
    assert [c["status"] for c in results] == ["written"] * 4
    assert {tuple(c["variants"]) for c in results} == {
        ("full", "latest", "pinned"),
        ("full", "latest"),
        ("minimal",),
        ("pinned",),
    }
    (fuse,) = (bare / c["path"] for c in results if c["layer"] == "fuse")
    assert pins_of(fuse) == {"fusepy": "3.0.1"}
    assert f"--hash=sha256:{sha256(wheels / 'fusepy-3.0.1-py3-none-any.whl')}" in fuse.read_text()
    for c in results:
        if c["layer"] == "nexus":
            text = (bare / c["path"]).read_text()
            assert pins_of(bare / c["path"])["tinydep"] == "2.0"  # every transitive package, pinned ...
            assert f"--hash=sha256:{sha256(wheels / 'tinydep-2.0-py3-none-any.whl')}" in text  # ... and hashed
    # the question a file answers names it, and its header says it
    spec = specs(bare)["pinned"]
    nexus = spec.requirements[1]
    assert nexus.asks == ("nexus-ai-fs==0.5.6",) and nexus.python == "3.13" and nexus.platform == pins.PLATFORM
    assert "fusepy==3.0.1" in nexus.constraints and "numpy==2.3.5" in nexus.constraints  # earlier step, base
    assert nexus.path == f"requirements/nexus-{nexus.identity[:12]}.txt"
    assert f"# identity: {nexus.identity}\n" in (bare / nexus.path).read_text()
    assert pins_of(bare / nexus.path)["nexus-ai-fs"] == "0.5.6"
    # compiled once, the files stand: compile again changes nothing, plan names no file
    before = snapshot(bare)
    again = run(bare, "compile", "--json")
    assert [c["status"] for c in json.loads(again.stdout)] == ["up to date"] * 4
    assert snapshot(bare) == before
    plan = json.loads(run(bare, "plan", "--json").stdout)["variants"]
    assert {tuple(i["reasons"]) for i in plan} == {("not in the lock",)}


def test_variants_that_share_leading_steps_copy_the_same_file(bare):
    assert run(bare, "compile").exit_code == 0
    s = specs(bare)
    latest, full, pinned, minimal = s["latest"], s["full"], s["pinned"], s["minimal"]
    # latest is full's prefix, step for step, files and all; pinned shares its FUSE steps
    assert full.steps[: len(latest.steps)] == latest.steps
    assert [r.path for r in full.requirements] == [r.path for r in latest.requirements]
    assert pinned.requirements[0] == latest.requirements[0]
    assert pinned.requirements[1].path != latest.requirements[1].path
    # another question (no fusepy before it) is another file
    assert minimal.requirements[0].path != latest.requirements[1].path
    # what E2B keys its cache on: the same COPY args and files hash in both builds
    sent = {n: json.loads(render.to_json(s[n]))["steps"] for n in ("latest", "full", "pinned")}
    assert sent["full"][: len(sent["latest"])] == sent["latest"]
    copies = {n: [x for x in steps if x["type"] == "COPY"] for n, steps in sent.items()}
    assert copies["pinned"][0] == copies["latest"][0] and copies["pinned"][1] != copies["latest"][1]
    # the step tree the scheduler shares builds by: one node per shared COPY
    (root,) = step_trie([latest, pinned, full])
    node = root
    while len(node.children) == 1:
        node = node.children[0]
    assert sorted(node.variants) == ["full", "latest", "pinned"]
    assert any(f"COPY {latest.requirements[0].path}" in n.text for n in _path_to(root, node))


def _path_to(root, node):
    out, cur = [], root
    while cur is not node:
        cur = cur.children[0]
        out.append(cur)
    return out


def test_pins_are_kept_unless_upgraded(bare, own_wheels):
    assert run(bare, "compile", "minimal").exit_code == 0
    nexus = bare / specs(bare, names=("minimal",))["minimal"].requirements[0].path
    assert pins_of(nexus)["tinydep"] == "1.0"
    wheel(own_wheels, "tinydep", "2.0")  # the index moves on
    r = run(bare, "compile", "minimal", "--json")
    assert json.loads(r.stdout)[0]["status"] == "up to date" and pins_of(nexus)["tinydep"] == "1.0"
    r = run(bare, "compile", "minimal", "--upgrade-package", "tinydep", "--json")
    assert json.loads(r.stdout)[0]["status"] == "written" and pins_of(nexus)["tinydep"] == "2.0"
    wheel(own_wheels, "tinydep", "3.0")
    r = run(bare, "compile", "minimal", "--upgrade", "--json")
    assert json.loads(r.stdout)[0]["status"] == "written" and pins_of(nexus)["tinydep"] == "3.0"


def test_a_new_question_starts_from_the_file_the_step_had(bare, own_wheels):
    """Upgrading fusepy changes the question the nexus step after it asks (its constraints): the new
    nexus file keeps the old one's pins where still valid instead of resolving from scratch."""
    assert run(bare, "compile", "latest").exit_code == 0
    old = specs(bare, names=("latest",))["latest"].requirements
    assert pins_of(bare / old[1].path)["tinydep"] == "1.0"
    wheel(own_wheels, "fusepy", "3.0.2")
    wheel(own_wheels, "tinydep", "2.0")
    r = run(bare, "compile", "latest", "-P", "fusepy", "--json")
    assert r.exit_code == 0, r.output
    new = specs(bare, names=("latest",))["latest"].requirements
    assert pins_of(bare / new[0].path) == {"fusepy": "3.0.2"} and new[0].path == old[0].path
    assert new[1].path != old[1].path and "fusepy==3.0.2" in new[1].constraints
    assert pins_of(bare / new[1].path)["tinydep"] == "1.0"  # kept, though 2.0 is there


def test_exclude_newer_pins_an_older_version(bare, tmp_path, monkeypatch):
    folder = shipped(tmp_path / "index")
    uploaded = {
        "tinydep-1.0-py3-none-any.whl": "2020-01-01T00:00:00Z",
        "tinydep-2.0-py3-none-any.whl": "2024-01-01T00:00:00Z",
    }
    with SimpleIndex(folder, uploaded) as url:
        monkeypatch.setenv("E2B_MATRIX_UV_ARGS", f"--default-index {url} --exclude-newer 2023-01-01T00:00:00Z")
        assert run(bare, "compile", "minimal").exit_code == 0
        nexus = bare / specs(bare, names=("minimal",))["minimal"].requirements[0].path
        assert pins_of(nexus)["tinydep"] == "1.0"
        monkeypatch.setenv("E2B_MATRIX_UV_ARGS", f"--default-index {url}")
        assert run(bare, "compile", "minimal", "--upgrade").exit_code == 0
        assert pins_of(nexus)["tinydep"] == "2.0"


def test_uv_failing_is_one_line_and_writes_nothing(bare):
    write(
        bare / "layers/py-tools.toml",
        '[layer]\nname = "py-tools"\nversion = "1"\nrequires = ["base"]\n\n[[steps]]\npip = ["nosuchpkg"]\n',
    )
    write(
        bare / "variants/tools.toml",
        '[variant]\nname = "tools"\nalias = "nexus-tools"\nlayers = ["base", "py-tools"]\n',
    )
    before = snapshot(bare)
    r = run(bare, "compile", "tools")
    line = one_line_error(
        r, 1, "requirements/py-tools-", "uv cannot resolve nosuchpkg for Python 3.13", "-v shows uv's output"
    )
    assert "nosuchpkg" in line.split(": uv cannot resolve", 1)[1]
    assert not (bare / "requirements").exists() or not any((bare / "requirements").iterdir())
    assert {k: v for k, v in snapshot(bare).items() if k != "logs" and not k.startswith("logs/")} == before
    assert "nosuchpkg" in (bare / "logs/build.log").read_text()  # uv's whole output went to the run log
    verbose = run(bare, "-v", "compile", "tools")
    assert verbose.exit_code == 1 and "No solution found" in verbose.stderr  # and to the console with -v


@pytest.mark.parametrize(
    "args, env, expected",
    [
        (["compile", "--upgrade", "--upgrade-package", "tinydep"], {}, "--upgrade-package: --upgrade re-resolves"),
        (["compile", "--upgrade-package", "no such"], {}, "--upgrade-package: 'no such' is not a package name"),
        (["compile", "--upgrade-package", "nosuchpkg"], {}, "--upgrade-package: nosuchpkg: no requirements file"),
        (["compile", "--check", "--upgrade"], {}, "--check: --check writes nothing"),
        (["compile", "nosuch"], {}, "no variant named 'nosuch'"),
        (["compile"], {"E2B_MATRIX_UV_ARGS": "--find-links 'unterminated"}, "E2B_MATRIX_UV_ARGS: cannot split it"),
        (["compile"], {"E2B_MATRIX_UV_ARGS": "--python-version=3.9"}, "E2B_MATRIX_UV_ARGS: --python-version is set by"),
    ],
)
def test_bad_input_is_one_line_and_changes_nothing(project, no_compile, args, env, expected):
    before = snapshot(project)
    one_line_error(run(project, *args, env=env), 2, expected)
    assert snapshot(project) == before


def test_nothing_is_written_through_a_link(bare, tmp_path):
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (bare / "requirements").symlink_to(elsewhere)
    one_line_error(run(bare, "compile", "minimal"), 2, "requirements is a symbolic link")
    assert list(elsewhere.iterdir()) == []
    (bare / "requirements").unlink()  # a folder of its own, the file a link: replaced? never
    (bare / "requirements").mkdir()
    path = specs(bare, names=("minimal",))["minimal"].requirements[0].path
    (bare / path).symlink_to(elsewhere / "victim")
    one_line_error(run(bare, "compile", "minimal"), 2, f"{path}: is a symbolic link")
    assert list(elsewhere.iterdir()) == [] and (bare / path).is_symlink()


def test_check_says_what_compile_would_do_without_compiling(project, no_compile):
    r = run(project, "compile", "--check")
    assert r.exit_code == 0 and r.stdout.count("up to date") == 4
    path = specs(project)["minimal"].requirements[0].path
    (project / path).unlink()
    r = run(project, "compile", "--check", "--json")
    assert r.exit_code == 1
    assert [c["status"] for c in json.loads(r.stdout) if c["path"] == path] == ["is missing"]


# -- the files in builds, plan and lock check ---------------------------------------------------


def test_a_build_copies_the_file_and_installs_it_with_require_hashes(project, emu):
    r = run(project, "build", "pinned")
    assert r.exit_code == 0, r.output
    spec = specs(project)["pinned"]
    body = next(b.start_body for b in emu.builds if b.name == "nexus-sandbox-pinned")
    copies = [s for s in body["steps"] if s["type"] == "COPY"]
    installs = [s["args"][0] for s in body["steps"] if s["args"][0].startswith("pip install")]
    assert [c["args"][:3] for c in copies] == [
        [r.path, f"{pins.DEST}/{r.path[13:]}", "root"] for r in spec.requirements
    ]
    assert installs == [f"pip install --require-hashes --no-deps -r {c['args'][1]} && pip check" for c in copies]
    for c, req in zip(
        copies, spec.requirements, strict=True
    ):  # E2B got each file, as committed (a tar.gz per files hash)
        with tarfile.open(fileobj=io.BytesIO(emu.uploads[c["filesHash"]])) as tar:
            assert tar.extractfile(req.path).read() == (project / req.path).read_bytes()
    entry = TemplateLock.load(project / "templates.lock").entry("pinned")
    assert entry.inputs["requirements.nexus"] == f"{spec.requirements[1].path}@{spec.requirements[1].digest[:12]}"


def reseal(path: Path, text: str) -> None:
    """Write ``text`` with the digest line its body now has (as if compile had written it)."""
    head, sep, body = text.partition(pins.DIGEST)
    body = body.split("\n", 1)[1]
    path.write_text(f"{head}{sep}{hashlib.sha256(body.encode()).hexdigest()}\n{body}")


def reviewed(path: Path) -> None:
    """A file still whole and still the same answer, in other bytes: a comment above its digest."""
    path.write_text(path.read_text().replace("# identity:", "# reviewed\n# identity:", 1))


def test_the_fingerprint_covers_each_files_content(project):
    before = specs(project)["latest"]
    fuse = project / before.requirements[0].path
    assert (before.requirements[0].path, sha256(fuse)) in before.files
    reviewed(fuse)  # still a valid answer, but other bytes
    after = specs(project)["latest"]
    assert after.fingerprint != before.fingerprint and after.steps == before.steps
    assert json.loads(render.to_json(after))["steps"] != json.loads(render.to_json(before))["steps"]  # filesHash


def test_build_compiles_what_is_missing(bare, emu):
    r = run(bare, "build", "latest")
    assert r.exit_code == 0, r.output
    assert "[latest] compiling: requirements/fuse-" in r.stdout
    spec = specs(bare)["latest"]
    assert all(req.ok for req in spec.requirements)
    assert json.loads(run(bare, "plan", "--json", "latest").stdout)["variants"][0]["state"] == "fresh"


def test_plan_and_lock_check_name_a_changed_or_missing_file(project, emu, no_compile):
    assert run(project, "build-all").exit_code == 0
    s = specs(project)
    fuse = project / s["latest"].requirements[0].path
    reviewed(fuse)
    (project / s["minimal"].requirements[0].path).unlink()
    plan = {i["name"]: i for i in json.loads(run(project, "plan", "--json").stdout)["variants"]}
    for name in ("latest", "pinned", "full"):
        assert plan[name]["state"] == "stale" and plan[name]["reasons"] == [f"{fuse.relative_to(project)} changed"]
    minimal = s["minimal"].requirements[0].path
    assert plan["minimal"]["state"] == "stale"
    assert f"{minimal} is missing: run `e2b-matrix compile minimal`" in plan["minimal"]["reasons"]
    r = run(project, "lock", "check")
    assert r.exit_code == 1
    assert f"nexus-sandbox-minimal: stale: {minimal} is missing: run `e2b-matrix compile minimal`\n" in r.stdout


def test_lock_check_fails_on_an_out_of_date_file(project, emu, no_compile):
    assert run(project, "build", "pinned").exit_code == 0
    path = specs(project)["pinned"].requirements[1].path
    text = (project / path).read_text()
    reseal(project / path, text.replace("nexus-ai-fs==0.5.6", "nexus-ai-fs==0.5.5"))  # whole, but another answer
    r = run(project, "lock", "check")
    assert r.exit_code == 1
    assert f"{path} pins nexus-ai-fs 0.5.5, but the step asks for nexus-ai-fs==0.5.6" in r.stdout
    assert run(project, "compile", "--check", "pinned").exit_code == 1


def test_build_locked_refuses_instead_of_compiling(project, emu, no_compile):
    path = specs(project)["minimal"].requirements[0].path
    (project / path).unlink()
    before = snapshot(project)
    r = run(project, "build-all", "--locked")
    one_line_error(r, 2, "--locked: minimal: ", f"{path} is missing", "run `e2b-matrix compile minimal`")
    assert snapshot(project) == before and emu.request_count == 0
    assert run(project, "build", "latest", "--locked").exit_code == 0  # its files are all there


def test_offline_never_runs_uv(project, emu, no_compile):
    r = run(project, "build", "pinned", "--offline")  # the committed files: built, no index, no uv
    assert r.exit_code == 0, r.output
    path = specs(project)["pinned"].requirements[1].path
    (project / path).unlink()
    before = snapshot(project)
    r = run(project, "build", "pinned", "--offline")
    one_line_error(r, 2, "--offline: pinned: ", f"{path} is missing", "--offline never resolves")
    assert snapshot(project) == before


def test_render_refuses_an_unpinned_variant(bare, no_compile):
    one_line_error(
        run(bare, "render", "latest"), 2, "latest: requirements/fuse-", "is missing", "run `e2b-matrix compile latest`"
    )


def test_docker_builds_compile_for_their_own_base(project):
    """E2B's code-interpreter image is the same template: the same questions, the same files. Another
    image (a Debian base: its own Python, no packages known) asks others: its files come from
    `compile --backend docker` (or the build), and the Dockerfile copies them from the context."""
    same = specs(project, backend="docker")["latest"]
    assert [r.path for r in same.requirements] == [r.path for r in specs(project)["latest"].requirements]
    debian = ["--set", "base.image=debian-base:bookworm", "--set", "base.image_python=3.11"]
    one_line_error(
        run(project, "render", "latest", "--format", "dockerfile", *debian),
        2,
        "run `e2b-matrix compile --backend docker latest`",
    )
    assert run(project, "compile", "--backend", "docker", "latest", *debian).exit_code == 0
    session = workflow.Session.open(
        workflow.Options(root=project, backend="docker", names=("latest",), overrides=tuple(debian[1::2]))
    )
    (spec,) = workflow.resolve_specs(session, workflow.load(session), session.lock())
    assert spec.requirements[0].constraints == () and spec.requirements[0].python == "3.11"
    text = run(project, "render", "latest", "--format", "dockerfile", *debian).stdout
    for req in spec.requirements:
        dest = f"{pins.DEST}/{req.path[13:]}"
        assert f"COPY --chown=root {req.path} {dest}\n" in text
        assert f"RUN pip install --require-hashes --no-deps -r {dest} && pip check\n" in text


# -- the shipped project -------------------------------------------------------------------------


def test_the_shipped_variants_ship_their_requirements_files(no_compile):
    """Every pip step of the shipped variants (E2B) has its committed, current file: run
    `e2b-matrix compile` and commit requirements/ when this fails."""
    problems = [f"{s.name}: {r.path} {r.problem}" for s in specs(ROOT).values() for r in s.requirements if r.problem]
    assert problems == []
    referenced = {r.path for s in specs(ROOT).values() for r in s.requirements}
    assert {f"requirements/{p.name}" for p in (ROOT / "requirements").iterdir()} == referenced


def test_the_base_packages_are_pins():
    from e2b_matrix.layers.base import INSTALLED, installed
    from e2b_matrix.model import Base

    known = installed(Base("template", "code-interpreter-v1", "3.13"))
    assert len(known) == 37 and "jupyter-server==2.20.0" in known
    assert all(reqfile.REQUIREMENT.fullmatch(p) for p in known)
    assert installed(Base("image", "e2bdev/code-interpreter:latest", "3.13")) == known  # the same template
    assert installed(Base("image", "debian:bookworm", "3.11")) == ()
    assert set(INSTALLED.values()) == {"code-interpreter-v1.txt"}


def sealed(q, body: str) -> bytes:
    """The file compile writes for ``q`` with ``body``: the header, its digest of the body, the body."""
    return (pins.header(q, body) + body).encode()


def test_a_file_is_judged_without_uv():
    q = pins.question("x", "requirements.x", ["a==1.0"], "3.12", {"b": "2.0"})
    body = "a==1.0 \\\n    --hash=sha256:" + "0" * 64 + "\n    # via -r requirements.in\n"
    assert pins.judge(q, sealed(q, body)).ok
    for content, problem in [
        (sealed(q, body.replace("a==1.0", "a>=1.0")), "is not a pinned requirement"),
        (sealed(q, body + "b==2.0\n"), "line 9: b has no hash"),
        (
            sealed(q, body + "b==3.0 --hash=sha256:" + "1" * 64 + "\n"),
            "pins b 3.0, but the base or an earlier step installs 2.0",
        ),
        (sealed(q, body + "--index-url https://example.invalid/simple\n"), "is not a pinned requirement"),
        (sealed(q, body + "c==1 --hash=md5:00\n"), "is not a sha256 hash"),
        (sealed(q, body).replace(q.identity.encode(), b"0" * 64), "answers another question"),
        (sealed(q, body.replace("a==1.0", "z==1.0")), "does not pin a"),
        # whole: the digest in the header covers every byte after it
        (sealed(q, body) + b"b==2.0 --hash=sha256:" + b"1" * 64 + b"\n", "cut short or edited"),
        (sealed(q, body)[: -len("    # via -r requirements.in\n")], "its body does not match its digest"),
        (sealed(q, body).replace(b"# body sha256: ", b"# body: "), "has no digest of its body"),
    ]:
        assert problem in pins.judge(q, content).problem, content
    assert pins.judge(q, None).problem == "is missing"


# -- the files are input: read through no link, bounded, whole -----------------------------------

PINNED = "requirements/nexus-6d8c650bd2d9.txt"  # pinned's nexus step (test_the_shipped_variants_ship_...)
CANARY = "canary-in-a-file-outside-the-project"
READERS = [["plan", "--format", "markdown"], ["lock", "check"], ["compile", "--check"], ["build-all", "--locked"]]


def _outside_file(project: Path, tmp: Path) -> None:
    (tmp / "outside.txt").write_text(f"SECRET={CANARY}\n")
    (project / PINNED).unlink()
    (project / PINNED).symlink_to(tmp / "outside.txt")


def _environ(project: Path, tmp: Path) -> None:
    (project / PINNED).unlink()
    (project / PINNED).symlink_to("/proc/self/environ")


def _linked_folder(project: Path, tmp: Path) -> None:
    shutil.move(project / "requirements", tmp / "requirements")  # the same files, elsewhere
    (project / "requirements").symlink_to(tmp / "requirements")


def _fifo(project: Path, tmp: Path) -> None:
    (project / PINNED).unlink()
    os.mkfifo(project / PINNED)


def _folder(project: Path, tmp: Path) -> None:
    (project / PINNED).unlink()
    (project / PINNED).mkdir()


def _oversize(project: Path, tmp: Path) -> None:
    with open(project / PINNED, "r+b") as f:
        f.truncate(pins.MAX_BYTES + 1)


REFUSED = [
    (_outside_file, f"{PINNED}: is a symbolic link"),
    (_environ, f"{PINNED}: is a symbolic link"),
    (_linked_folder, ".txt: is in a linked folder: requirements is a symbolic link"),
    (_fifo, f"{PINNED}: is a FIFO, not a regular file"),
    (_folder, f"{PINNED}: is a folder, not a regular file"),
    (_oversize, f"{PINNED}: is larger than 4 MiB"),
]


@pytest.mark.parametrize("make,expected", REFUSED, ids=[m.__name__.strip("_") for m, _ in REFUSED])
def test_a_requirements_file_that_is_not_a_file_of_the_project_is_refused(
    project, emu, tmp_path_factory, monkeypatch, make, expected
):
    """Never read through a link (the file or its folder), never a FIFO, never past the bound: exit 2,
    one line naming the file, and nothing of what it points at is shown."""
    from test_reliability import assert_refused

    monkeypatch.setenv("E2B_MATRIX_TEST_CANARY", CANARY)  # what /proc/self/environ would show
    make(project, tmp_path_factory.mktemp("elsewhere"))
    for args in READERS:
        line = assert_refused(project, emu, args, expected)
        assert CANARY not in line


def _cut_at_a_line(project: Path) -> None:
    text = (project / PINNED).read_text()
    (project / PINNED).write_text(text[: text.index("\nnexus-ai-fs==") + 1])  # every line after: gone


def _edited_pin(project: Path) -> None:
    text = (project / PINNED).read_text()
    (project / PINNED).write_text(text.replace("aiofile==3.12.3", "aiofile==3.12.4"))  # still looks pinned


def _no_digest(project: Path) -> None:
    lines = (project / PINNED).read_text().splitlines(keepends=True)
    (project / PINNED).write_text("".join(line for line in lines if not line.startswith(pins.DIGEST)))


def _empty(project: Path) -> None:
    (project / PINNED).write_bytes(b"")


BROKEN = [
    (_cut_at_a_line, "is cut short or edited: its body does not match its digest"),
    (_edited_pin, "is cut short or edited: its body does not match its digest"),
    (_no_digest, "has no digest of its body in its header"),
    (_empty, "has no digest of its body in its header"),
]


@pytest.mark.parametrize("make,problem", BROKEN, ids=[m.__name__.strip("_") for m, _ in BROKEN])
def test_a_requirements_file_not_whole_is_named_and_never_installed(project, emu, no_compile, make, problem):
    """A file cut short at a line boundary still parses: its digest says it is not what compile wrote.
    plan and lock check name it, compile --check fails, build --locked refuses; nothing is built."""
    make(project)
    said = f"{PINNED} {problem}: run `e2b-matrix compile pinned`"
    plan = {i["name"]: i for i in json.loads(run(project, "plan", "--json").stdout)["variants"]}
    assert plan["pinned"]["reasons"] == ["not in the lock", said]
    assert said in run(project, "plan", "--format", "markdown").stdout
    r = run(project, "lock", "check")
    assert r.exit_code == 1 and f"nexus-sandbox-pinned: unbuilt: not in the lock; {said}\n" in r.stdout
    r = run(project, "compile", "--check", "--json")
    assert r.exit_code == 1 and [c["status"] for c in json.loads(r.stdout) if c["path"] == PINNED] == [problem]
    before = snapshot(project)
    one_line_error(run(project, "build", "pinned", "--locked"), 2, f"--locked: pinned: {PINNED} {problem}")
    assert snapshot(project) == before and emu.request_count == 0


def test_compile_makes_a_broken_file_whole_again(project):
    _cut_at_a_line(project)
    r = run(project, "compile", "pinned", "--json")
    assert r.exit_code == 0 and {c["path"]: c["status"] for c in json.loads(r.stdout)}[PINNED] == "written"
    content = (project / PINNED).read_bytes()
    assert pins.unsealed(content) == "" and b"\nnexus-ai-fs==0.5.6 \\\n" in content
    assert pins_of(project / PINNED)["tinydep"] == "2.0"  # uv's answer from the tests' index, whole
