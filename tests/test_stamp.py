"""The no-op stamp: a fresh build-all answered without the model, and never wrongly.

Runs are real processes (`python -m e2b_matrix`, stdout and stderr pipes, as
in CI) against the emulator; each reports whether it loaded the model, which
is how a test tells a replayed stamp from the real path.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import DATA, KEY, write
from e2b_matrix import readlog, stamp

# Runs the CLI, then writes to the file named by argv[1] whether the model was
# loaded ("real") or not ("replayed").
RUNNER = """
import sys
marker = sys.argv.pop(1)
try:
    from e2b_matrix.cli import main
    main()
finally:
    with open(marker, "w") as f:
        f.write("real" if "e2b_matrix.model" in sys.modules else "replayed")
"""


class Run:
    def __init__(self, proc: subprocess.CompletedProcess, how: str):
        self.code, self.stdout, self.stderr, self.how = proc.returncode, proc.stdout, proc.stderr, how

    def statuses(self) -> dict[str, str]:
        return {r["name"]: r["status"] for r in json.loads(self.stdout)}


def spawn(project: Path, *args: str, env: dict | None = None, **streams) -> tuple[subprocess.CompletedProcess, str]:
    """Run the CLI in a process (``streams``: how stdout and stderr are connected); (process, "real"/"replayed")."""
    marker = project.parent / f"marker-{time.monotonic_ns()}"
    proc = subprocess.run([sys.executable, "-c", RUNNER, str(marker), "-C", str(project), *args],
                          env={**os.environ, **(env or {})}, timeout=120, **streams)
    how = marker.read_text()
    marker.unlink()
    return proc, how


def run(project: Path, *args: str, env: dict | None = None) -> Run:
    return Run(*spawn(project, *args, env=env, capture_output=True, text=True))


def stamps(project: Path) -> list[Path]:
    return sorted((project / stamp.FOLDER).glob("*.json"))


@pytest.fixture
def built(project, emu):
    """The shipped variants built once: every later build-all is a no-op."""
    first = run(project, "build-all", "--json")
    assert first.code == 0, first.stderr
    assert set(first.statuses().values()) == {"built"}
    assert stamps(project) == []  # a run that built leaves no stamp
    return project


@pytest.mark.parametrize("args", [["build-all", "--json"], ["build-all"], ["-q", "build-all"],
                                  ["build", "latest", "minimal"]])
def test_a_noop_is_replayed_with_exactly_the_real_output(built, emu, args):
    emu.reset_counters()
    real = run(built, *args)
    assert real.how == "real" and real.code == 0, real.stderr
    assert len(stamps(built)) == 1
    again = run(built, *args)
    assert again.how == "replayed"
    assert (again.code, again.stdout, again.stderr) == (real.code, real.stdout, real.stderr)
    assert emu.request_count == 0
    if "--json" in args:
        assert set(again.statuses().values()) == {"fresh"}


def test_with_stderr_on_stdout_the_replay_keeps_the_order(built):
    def merged():
        proc, how = spawn(built, "build-all", "--json", stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        return proc.stdout, how

    (real, how), (again, how_again) = merged(), merged()
    assert (how, how_again) == ("real", "replayed")
    assert again == real and real.index("] fresh") < real.index('"status"')


def test_replay_loads_neither_attrs_nor_e2b(built):
    run(built, "build-all")
    code = ("import sys, runpy\nsys.argv = ['e2b-matrix', '-C', sys.argv[1], 'build-all']\n"
            "try:\n    runpy.run_module('e2b_matrix', run_name='__main__')\nexcept SystemExit as e:\n"
            "    assert e.code == 0, e.code\n"
            "print(sorted(m for m in sys.modules if m.split('.')[0] in ('attr', 'attrs', 'e2b', 'tomllib')))")
    proc = subprocess.run([sys.executable, "-c", code, str(built)], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip().splitlines()[-1] == "[]"


def _edit_variant(project: Path) -> None:
    path = project / "variants/minimal.toml"
    path.write_text(path.read_text().replace("memory_mb = 2048", "memory_mb = 4096"))


def _add_variant(project: Path) -> None:
    write(project / "variants/extra.toml", '[variant]\nname = "extra"\nalias = "nexus-sandbox-extra"\n'
                                           'layers = ["base", "nexus"]\n')


def _add_layer(project: Path) -> None:
    write(project / "layers/jq.toml", '[layer]\nname = "jq"\nversion = "1"\nrequires = ["base"]\n'
                                      '[[steps]]\nrun = "apt-get install -y jq"\nuser = "root"\n')


def _drop_lock_entry(project: Path) -> None:
    from e2b_matrix.lock import TemplateLock, render_lock

    lock = TemplateLock.load(project / "templates.lock")
    kept = [e for e in lock if e.alias != "nexus-sandbox-minimal"]
    (project / "templates.lock").write_text(render_lock(kept))


@pytest.mark.parametrize("change, expect", [
    (_edit_variant, {"minimal": "built"}),
    (_add_variant, {"extra": "built"}),
    (_add_layer, {}),
    (_drop_lock_entry, {"minimal": "built"}),
], ids=["variant-edited", "variant-added", "layer-added", "lock-rewritten"])
def test_a_changed_input_runs_the_real_path(built, emu, change, expect):
    assert run(built, "build-all", "--json").how == "real"
    assert run(built, "build-all", "--json").how == "replayed"
    change(built)
    after = run(built, "build-all", "--json")
    assert after.how == "real" and after.code == 0, after.stderr
    statuses = after.statuses()
    assert {n: s for n, s in statuses.items() if s != "fresh"} == expect


def test_a_broken_variant_file_is_an_error_not_a_replay(built):
    assert run(built, "build-all").how == "real"
    before = {p: p.read_bytes() for p in stamps(built)}
    path = built / "variants/minimal.toml"
    path.write_text(path.read_text().replace("cpu_count = 2", "cpu_count = 3"))
    r = run(built, "build-all")
    assert (r.code, r.how) == (2, "real")
    assert r.stderr.count("\n") == 1 and "variants/minimal.toml" in r.stderr and "cpu_count" in r.stderr
    assert {p: p.read_bytes() for p in stamps(built)} == before


def test_a_new_release_in_the_index_makes_latest_stale(project, emu, tmp_path, monkeypatch):
    index = tmp_path / "index"
    shutil.copytree(DATA / "index", index)
    monkeypatch.setenv("E2B_MATRIX_PYPI_URL", index.as_uri())
    assert run(project, "build-all", "--json").code == 0
    assert run(project, "build-all", "--json").how == "real"
    assert run(project, "build-all", "--json").how == "replayed"
    doc_path = index / "nexus-ai-fs" / "json"
    doc = json.loads(doc_path.read_text())
    doc["releases"]["0.9.26.1"] = [{"filename": "nexus_ai_fs-0.9.26.1-py3-none-any.whl",
                                    "requires_python": ">=3.12", "yanked": False}]
    doc_path.write_text(json.dumps(doc))
    after = run(project, "build-all", "--json")
    assert after.how == "real"
    assert after.statuses()["latest"] == "built"
    from e2b_matrix.lock import TemplateLock

    assert TemplateLock.load(project / "templates.lock").entry("latest").layers["nexus"] == "0.9.26.1"


@pytest.fixture
def http_index(monkeypatch):
    """The tests' index over HTTP on 127.0.0.1 (as PyPI is): cached on disk for its TTL."""
    import functools
    import threading
    from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer

    hits = []

    class Handler(SimpleHTTPRequestHandler):
        def log_message(self, *args):
            hits.append(self.path)

    server = ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Handler, directory=str(DATA)))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    monkeypatch.setenv("E2B_MATRIX_PYPI_URL", f"http://127.0.0.1:{server.server_address[1]}/index")
    yield hits
    server.shutdown()
    server.server_close()


def test_an_expired_index_cache_runs_the_real_path(project, emu, http_index):
    assert run(project, "build-all", "--json").code == 0
    assert len(http_index) == 1  # fetched once, then cached
    assert run(project, "build-all", "--json").how == "real"
    assert run(project, "build-all", "--json").how == "replayed"
    assert len(http_index) == 1
    (cache,) = Path(os.environ["XDG_CACHE_HOME"]).glob("e2b-matrix/pypi-*.json")
    old = time.time() - 901  # the default TTL is 900 s
    os.utime(cache, (old, old))
    after = run(project, "build-all", "--json")
    assert after.how == "real" and set(after.statuses().values()) == {"fresh"}
    assert len(http_index) == 2  # the real path asked the index again
    assert run(project, "build-all", "--json").how == "replayed"


def test_options_and_environment_are_part_of_the_key(built):
    assert run(built, "build-all", "--json").how == "real"
    assert run(built, "build-all").how == "real"            # other options: their own stamp
    assert run(built, "build-all", "--json").how == "replayed"
    assert run(built, "build-all", "--json", env={"E2B_DOMAIN": "example.test"}).how == "real"
    assert run(built, "build-all", "--offline", "--json").how == "real"


def test_force_and_the_off_switch_never_replay(built, emu):
    assert run(built, "build-all").how == "real"
    assert run(built, "build-all").how == "replayed"
    forced = run(built, "build", "minimal", "--force", "--json")
    assert forced.how == "real" and forced.statuses() == {"minimal": "built"}
    off = {stamp.NO_STAMP_ENV: "1"}
    shutil.rmtree(built / stamp.FOLDER)
    assert run(built, "build-all", env=off).how == "real"
    assert run(built, "build-all", env=off).how == "real"
    assert not (built / stamp.FOLDER).exists()


def test_without_credentials_a_stamp_does_not_answer(built, monkeypatch):
    run(built, "build-all")
    assert run(built, "build-all").how == "replayed"
    monkeypatch.delenv("E2B_API_KEY")
    r = run(built, "build-all")
    assert r.code == 2 and r.how == "real"
    assert "no E2B API key" in r.stderr and "Traceback" not in r.stderr


def test_a_corrupt_stamp_is_ignored_and_rewritten(built):
    run(built, "build-all", "--json")
    (path,) = stamps(built)
    path.write_text("{not json")
    r = run(built, "build-all", "--json")
    assert r.how == "real" and r.code == 0
    assert json.loads(path.read_text())["schema"] == stamp.SCHEMA
    assert run(built, "build-all", "--json").how == "replayed"


def test_a_failed_run_leaves_no_stamp(project, emu):
    emu.configure("nexus-sandbox-pinned", fail_at_step=1)
    r = run(project, "build-all")
    assert r.code == 1
    assert stamps(project) == []


def test_a_stamp_holds_no_secret(built, monkeypatch):
    monkeypatch.setenv("E2B_ACCESS_TOKEN", "sk_" + "t0ken" * 6)
    assert run(built, "-q", "build-all").how == "real"
    text = "".join(p.read_text() for p in stamps(built))
    assert text and KEY not in text and "t0ken" not in text and "E2B_ACCESS_TOKEN" not in text


# -- the parts, in process ------------------------------------------------------

def test_finish_refuses_to_write_a_secret(tmp_path):
    stamp.start()
    assert stamp.finish(tmp_path, {"k": 1}, _printed(f"oops {KEY}\n"), 0, secrets=[KEY]) is None
    assert not (tmp_path / stamp.FOLDER).exists()


def test_an_index_cache_past_its_ttl_no_longer_answers(tmp_path):
    cache = write(tmp_path / "cache.json", '{"1.0": null}')
    stamp.start()
    readlog.note_file(cache, cache.read_text(), ttl=60)
    key = {"k": "ttl"}
    assert stamp.finish(tmp_path, key, _printed("out\n"), 0) is not None
    assert stamp.replay(tmp_path, key, out=_Sink(), err=_Sink()) == 0
    old = time.time() - 61
    os.utime(cache, (old, old))
    assert stamp.replay(tmp_path, key, out=_Sink(), err=_Sink()) is None


def test_a_file_read_twice_with_different_bytes_taints_the_run(tmp_path):
    stamp.start()
    readlog.note_file(tmp_path / "a", b"one")
    readlog.note_file(tmp_path / "a", b"two")
    assert stamp.finish(tmp_path, {"k": 1}, _printed(""), 0) is None


def test_a_missing_file_stays_an_input(tmp_path):
    stamp.start()
    readlog.note_file(tmp_path / "templates.lock", None)
    key = {"k": "missing"}
    assert stamp.finish(tmp_path, key, _printed(""), 0) is not None
    assert stamp.replay(tmp_path, key, out=_Sink(), err=_Sink()) == 0
    write(tmp_path / "templates.lock", "x")
    assert stamp.replay(tmp_path, key, out=_Sink(), err=_Sink()) is None


def test_notes_cost_nothing_when_not_recording(tmp_path):
    assert readlog.stop() is None
    readlog.note_file(tmp_path / "a", b"x")
    readlog.note_glob(tmp_path, "*.toml", [])
    assert readlog.stop() is None


def test_code_digest_follows_every_module(tmp_path):
    pkg = tmp_path / "pkg"
    write(pkg / "a.py", "A = 1\n")
    write(pkg / "layers" / "b.py", "B = 1\n")
    before = stamp.code_digest(str(pkg))
    write(pkg / "layers" / "b.py", "B = 2\n")
    assert stamp.code_digest(str(pkg)) != before


def test_when_stamps_apply():
    assert stamp.enabled("e2b", False, environ={})
    assert not stamp.enabled("docker", False, environ={})  # Docker asks its daemon whether images exist
    assert not stamp.enabled("e2b", True, environ={})
    assert not stamp.enabled("e2b", False, environ={stamp.NO_STAMP_ENV: "1"})


def test_on_a_terminal_the_replay_prints_what_the_terminal_got(built):
    import pty

    def on_tty():
        master, slave = pty.openpty()
        proc, how = spawn(built, "build-all", env={"COLUMNS": "120"}, stdout=slave, stderr=subprocess.PIPE)
        os.close(slave)
        chunks = []
        while True:
            try:
                chunk = os.read(master, 65536)
            except OSError:  # EIO: the other side is closed
                break
            if not chunk:
                break
            chunks.append(chunk)
        os.close(master)
        return proc.returncode, b"".join(chunks), how

    plain = run(built, "build-all")
    first, second = on_tty(), on_tty()
    assert (first[0], first[2]) == (0, "real")  # a terminal is another key than a pipe
    assert (second[0], second[2]) == (0, "replayed")
    assert second[1] == first[1] and b"VARIANT" in first[1]
    assert plain.how == "real" and run(built, "build-all").how == "replayed"


def test_without_a_working_directory_there_is_no_key(tmp_path, monkeypatch):
    gone = tmp_path / "gone"
    gone.mkdir()
    monkeypatch.chdir(gone)
    gone.rmdir()
    assert stamp.make_key("build-all", {}, tmp_path, 0, False) is None


def test_stamps_are_pruned(tmp_path):
    for i in range(stamp.KEEP + 3):
        stamp.start()
        assert stamp.finish(tmp_path, {"k": i}, _printed(""), 0) is not None
    assert len(list((tmp_path / stamp.FOLDER).glob("*.json"))) == stamp.KEEP


def test_a_killed_writers_temp_file_is_cleaned_up(tmp_path):
    left = write(tmp_path / stamp.FOLDER / ".abc.json.999.tmp", "{")
    fresh = write(tmp_path / stamp.FOLDER / ".def.json.998.tmp", "{")  # maybe still being written
    old = time.time() - 120
    os.utime(left, (old, old))
    stamp.start()
    assert stamp.finish(tmp_path, {"k": "tmp"}, _printed(""), 0) is not None
    assert not left.exists() and fresh.exists()


class _Sink:
    def __init__(self):
        self.parts = []

    def write(self, text):
        self.parts.append(text)

    def flush(self):
        pass

    def isatty(self):
        return False


def _printed(text: str) -> stamp.Capture:
    capture = stamp.Capture(_Sink(), _Sink())
    capture.out.write(text)
    return capture


def test_replay_keeps_the_order_of_stdout_and_stderr(tmp_path):
    capture = stamp.Capture(_Sink(), _Sink())
    for fd, text in [(2, "a\n"), (2, "b\n"), (1, "[json]\n"), (2, "c\n")]:
        (capture.out if fd == 1 else capture.err).write(text)
    assert capture.parts == [[2, "a\nb\n"], [1, "[json]\n"], [2, "c\n"]]
    stamp.start()
    assert stamp.finish(tmp_path, {"k": "order"}, capture, 0) is not None
    both = _Sink()
    assert stamp.replay(tmp_path, {"k": "order"}, out=both, err=both) == 0
    assert both.parts == ["a\nb\n", "[json]\n", "c\n"]


def test_a_run_that_logged_to_the_console_is_not_stamped(tmp_path, monkeypatch):
    import logging

    monkeypatch.setenv("E2B_API_KEY", KEY)

    def record(log: bool) -> list[Path]:
        rec = stamp.recording("e2b", False, "build-all", {"log": log}, tmp_path, 0, False)
        assert rec.replay() is None
        with rec:
            rec.out.write("1 fresh\n")
            if log:
                logging.getLogger("e2b_matrix.test").warning("the index answered slowly")
            rec.noop = True
        return stamps(tmp_path)

    assert record(log=True) == []
    assert len(record(log=False)) == 1
    assert stamp.recording("e2b", False, "build-all", {"log": False}, tmp_path, 0, False).replay() == 0


def test_without_a_key_or_on_docker_nothing_is_recorded(tmp_path, monkeypatch):
    monkeypatch.delenv("E2B_API_KEY", raising=False)
    assert stamp.recording("e2b", False, "build-all", {}, tmp_path, 0, False).key is None
    monkeypatch.setenv("E2B_API_KEY", KEY)
    assert stamp.recording("docker", False, "build-all", {}, tmp_path, 0, False).key is None
    assert stamp.recording("e2b", False, "build-all", {}, tmp_path, 0, False).key is not None
