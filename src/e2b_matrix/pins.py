"""Hash-pinned requirements: every pip step installs a committed requirements file.

A layer's pip step (``model.pip(("nexus-ai-fs==0.5.6",))``) says what it asks for. As a bare
``pip install nexus-ai-fs==0.5.6`` its ~150 dependencies would float with the index while E2B
serves the step from its cache by its text. So when a spec is resolved, each pip step becomes two:

    COPY requirements/nexus-<id>.txt /opt/e2b-matrix/requirements/nexus-<id>.txt   (as root)
    RUN  pip install --require-hashes --no-deps -r /opt/e2b-matrix/requirements/nexus-<id>.txt

and ``e2b-matrix compile`` writes that file with ``uv pip compile --generate-hashes`` (uv, a
dependency, found with ``uv.find_uv_bin()``): every transitive package pinned and hashed. E2B's
cache key of a COPY step includes the file's hash, and so does the fingerprint (``spec.files``).

The question a file answers names it: what the step asks for, for the base's Python on
``PLATFORM``, constrained by what the base (layers/base.py: ``installed``) and the variant's
earlier pip steps install. Its sha256 is the file's identity, and the file is
``requirements/<layer>-<identity[:12]>.txt``. Variants whose leading steps are the same ask the
same questions, so they copy byte-identical files and E2B's layer cache stays shared; a later
step's question holds the earlier files' pins, so a chain is resolved in step order.

Whether a file still answers its question is decided without uv: it exists, its ``# identity:``
line is the question's, every requirement line is ``name==version`` with sha256 hashes and
nothing else (no option or URL reaches pip), it pins what the step asks for, and it agrees with
the constraints. Anything else is the requirement's ``problem``: ``plan`` and ``lock check`` name
it, ``build`` compiles it, ``build --locked`` and ``--offline`` refuse.

Two sources answer: ``Committed`` reads the files (plan, lock check, build); ``Compiler`` also
runs uv where a file is missing, has a problem or is to be upgraded (``compile``, and ``build``
before it starts). uv reads the existing output file as preferences, so pins are kept where still
valid (as pip-tools does); a new question (a changed step, or new pins before it) is seeded with
the file the same step had before, so a change moves no more packages than it must.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import subprocess
import sys
import tempfile
from collections.abc import Iterable, Mapping
from pathlib import Path, PurePosixPath

import attrs

from e2b_matrix import files, names
from e2b_matrix.errors import CompileError, ConfigError
from e2b_matrix.model import Base, BuildSpec, Requirements, Step, Variant

log = logging.getLogger(__name__)

SCHEMA = 1
DIR = "requirements"                     # in the project, committed
DEST = "/opt/e2b-matrix/requirements"    # in the template
# uv's --python-platform: x86_64 Linux with glibc 2.36, the manylinux of Debian bookworm. The
# python:3.x images are Debian (bookworm, or trixie with glibc 2.41, which runs the same wheels),
# and so is the Docker backend's debootstrap base: one platform for every backend.
PLATFORM = "x86_64-manylinux_2_36"
UV_TIMEOUT_S = 900.0
# What e2b-matrix passes uv itself: E2B_MATRIX_UV_ARGS may not set these.
OWN_FLAGS = frozenset({"-o", "--output-file", "-c", "--constraint", "--constraints", "-r", "--requirement",
                       "--requirements", "--generate-hashes", "--python-version", "--python-platform", "-p",
                       "--python", "-U", "--upgrade", "-P", "--upgrade-package", "--no-header", "--universal"})

_REQUIREMENT = re.compile(r"([A-Za-z0-9](?:[A-Za-z0-9._-]*[A-Za-z0-9])?)==([A-Za-z0-9][A-Za-z0-9._+!-]*)")
_HASH = re.compile(r"--hash=sha256:[0-9a-f]{64}")
_PACKAGE = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9._-]*[A-Za-z0-9])?")
_FILE = re.compile(rf"{DIR}/[a-z0-9][a-z0-9_.-]*-[0-9a-f]{{12}}\.txt")
WAITS = "waits for "


def canonical_name(name: str) -> str:
    from packaging.utils import canonicalize_name

    return str(canonicalize_name(name))


def _same_version(a: str, b: str) -> bool:
    from packaging.version import InvalidVersion, Version

    try:
        return Version(a) == Version(b)
    except InvalidVersion:
        return a == b


def check_uv_args(text: str) -> tuple[str, ...]:
    """E2B_MATRIX_UV_ARGS as words (shell quoting); ValueError when it cannot be split or sets our flags."""
    import shlex

    try:
        words = tuple(shlex.split(text))
    except ValueError as exc:
        raise ValueError(f"cannot split it into words: {exc}") from None
    for word in words:
        flag = word.split("=", 1)[0]
        if flag in OWN_FLAGS:
            raise ValueError(f"{flag} is set by e2b-matrix compile itself; give only index or resolver options")
    return words


def check_packages(upgrade: bool, packages: Iterable[str]) -> frozenset[str]:
    """--upgrade-package names, canonical; ConfigError for a bad name or with --upgrade."""
    packages = tuple(packages)
    if upgrade and packages:
        raise ConfigError("--upgrade re-resolves every package and --upgrade-package only the named ones; give one",
                          key="--upgrade-package")
    for p in packages:
        if not _PACKAGE.fullmatch(p):
            raise ConfigError(f"{names.shown(p)} is not a package name", key="--upgrade-package")
    return frozenset(canonical_name(p) for p in packages)


# -- the question ------------------------------------------------------------------

def _pair(pin: str) -> tuple[str, str]:
    name, _, version = pin.partition("==")
    return canonical_name(name), version


def question(layer: str, key: str, asks: Iterable[str], python: str, constraints: Mapping[str, str],
             platform: str = PLATFORM) -> Requirements:
    """The question a pip step asks, its identity and its file (no answer yet)."""
    asks = tuple(asks)
    pins = tuple(f"{n}=={v}" for n, v in sorted(constraints.items()))
    doc = {"schema": SCHEMA, "asks": sorted(asks), "python": python, "platform": platform, "constraints": pins}
    identity = hashlib.sha256(json.dumps(doc, sort_keys=True, separators=(",", ":")).encode()).hexdigest()
    return Requirements(layer=layer, key=key, asks=asks, python=python, platform=platform, constraints=pins,
                        identity=identity, path=f"{DIR}/{layer}-{identity[:12]}.txt")


def pin_steps(variant: Variant, layered: Iterable[tuple[str, Step]], base: Base, answers
              ) -> tuple[tuple[Step, ...], tuple[Requirements, ...]]:
    """Each pip step (``(layer, step)`` in order) as a copy of its requirements file and a hashed install.

    ``answers.answer(question, variant)`` gives each question's answer. After a step whose file has
    a problem, later questions cannot be asked (their constraints are unknown): they wait for it.
    """
    from e2b_matrix.layers.base import installed

    constraints = dict(_pair(p) for p in installed(base))
    steps: list[Step] = []
    out: list[Requirements] = []
    count: dict[str, int] = {}
    blocked = None
    for layer, step in layered:
        asks = () if step.call != "pip_install" else ((step.args[0],) if isinstance(step.args[0], str)
                                                      else tuple(step.args[0]))
        if not asks:  # not pip, or `pip install .`: nothing an index could pin
            steps.append(step)
            continue
        count[layer] = count.get(layer, 0) + 1
        key = f"requirements.{layer}" + (f".{count[layer]}" if count[layer] > 1 else "")
        q = question(layer, key, asks, base.python, constraints)
        if blocked is None:
            r = answers.answer(q, variant)
        else:
            r = attrs.evolve(q, identity="", path=f"{DIR}/{layer}-pending.txt", problem=WAITS + blocked)
        if r.ok:
            constraints.update(_pair(p) for p in r.pinned)
        elif blocked is None:
            blocked = r.path
        out.append(r)
        dest = f"{DEST}/{PurePosixPath(r.path).name}"
        steps += [Step("copy", (r.path, dest), {"user": "root"}),
                  Step("pip_install", (("--require-hashes", "--no-deps", "-r", dest),), step.kwargs)]
    return tuple(steps), tuple(out)


def files_of(requirements: Iterable[Requirements]) -> tuple[tuple[str, str], ...]:
    """(path, sha256) of the requirement files a spec copies: what its fingerprint covers."""
    return tuple((r.path, r.digest) for r in requirements if r.content is not None)


# -- the answer: a committed file, judged ----------------------------------------------

def parse(text: str) -> tuple[dict[str, str], str | None, str]:
    """(canonical name -> version, the identity line, the problem or "") of a requirements file."""
    identity = None
    logical: list[tuple[int, list[str]]] = []
    words: list[str] = []
    start = 0
    for n, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if line.startswith("#"):
            if identity is None and line.startswith("# identity:"):
                identity = line.split(":", 1)[1].strip()
            continue
        line = re.split(r"\s#", line, maxsplit=1)[0].rstrip()
        more = line.endswith("\\")
        if not words:
            start = n
        words += (line[:-1] if more else line).split()
        if not more:
            if words:
                logical.append((start, words))
            words = []
    if words:
        logical.append((start, words))
    pins: dict[str, str] = {}
    for n, (head, *hashes) in logical:
        m = _REQUIREMENT.fullmatch(head)
        if not m:
            return {}, identity, f"line {n}: {names.shown(head)} is not a pinned requirement (name==version)"
        bad = next((h for h in hashes if not _HASH.fullmatch(h)), None)
        if bad is not None:
            return {}, identity, f"line {n}: {names.shown(bad)} is not a sha256 hash (--hash=sha256:...)"
        name = canonical_name(m.group(1))
        if not hashes:
            return {}, identity, f"line {n}: {name} has no hash"
        if name in pins:
            return {}, identity, f"line {n}: {name} is pinned twice"
        pins[name] = m.group(2)
    return pins, identity, ""


def _agrees(q: Requirements, pins: Mapping[str, str]) -> str:
    for ask in q.asks:
        name, _, version = ask.partition("==")
        got = pins.get(canonical_name(name))
        if got is None:
            return f"does not pin {name}, which the step asks for"
        if version and not _same_version(got, version):
            return f"pins {name} {got}, but the step asks for {ask}"
    for pin in q.constraints:
        name, version = _pair(pin)
        got = pins.get(name)
        if got is not None and not _same_version(got, version):
            return f"pins {name} {got}, but the base or an earlier step installs {version}"
    return ""


def judge(q: Requirements, content: bytes | None) -> Requirements:
    """The question with its committed answer: the content, its digest, its pins, or its problem."""
    if content is None:
        return attrs.evolve(q, problem="is missing")
    digest = hashlib.sha256(content).hexdigest()
    try:
        pins, identity, problem = parse(content.decode("utf-8"))
    except UnicodeDecodeError:
        pins, identity, problem = {}, None, "is not UTF-8 text"
    if not problem and identity != q.identity:
        problem = "answers another question (its identity line is not this step's): compile it again"
    problem = problem or _agrees(q, pins)
    return attrs.evolve(q, content=content, digest=digest, problem=problem,
                        pinned=() if problem else tuple(f"{n}=={v}" for n, v in sorted(pins.items())))


class Committed:
    """The committed requirements files of the project at ``root``, each read once."""

    def __init__(self, root: str | Path):
        self.root = Path(root)
        self._read: dict[str, bytes | None] = {}

    def read(self, path: str) -> bytes | None:
        if path not in self._read:
            try:
                self._read[path] = files.read_bytes(self.root / path)  # a regular file, bounded
            except files.FileError as exc:
                raise ConfigError(str(exc), path=path) from None
        return self._read[path]

    def answer(self, q: Requirements, variant: Variant | None = None) -> Requirements:
        return judge(q, self.read(q.path))


def first_problem(spec: BuildSpec) -> Requirements | None:
    """The first pip step of ``spec`` whose file cannot be installed as is (later ones wait for it)."""
    return next((r for r in spec.requirements if r.problem), None)


def reasons(spec: BuildSpec) -> list[str]:
    """What plan says about the spec's requirements files: each problem, and what to run."""
    return [f"{r.path} {r.problem}: run `e2b-matrix compile {spec.name}`"
            for r in spec.requirements if r.problem and not r.problem.startswith(WAITS)]


def compile_command(specs: Iterable[BuildSpec], backend: str, default_backend: str) -> str:
    flag = f" --backend {backend}" if backend != default_backend else ""
    return f"e2b-matrix compile{flag} {' '.join(dict.fromkeys(s.name for s in specs))}"


def refusal(specs: list[BuildSpec], flag: str, backend: str, default_backend: str) -> ConfigError:
    """The one line --locked (or --offline) says instead of compiling: the variants and the command to run."""
    first = first_problem(specs[0])
    what = ("never resolves" if flag == "--offline" else "keeps the committed requirements files as they are")
    return ConfigError(f"{', '.join(s.name for s in specs)}: {first.path} {first.problem}, and {flag} {what}; "
                       f"run `{compile_command(specs, backend, default_backend)}` and commit the files", key=flag)


def require(spec: BuildSpec, backend: str, default_backend: str) -> None:
    """ConfigError (exit 2) unless every requirements file of ``spec`` can be installed as is."""
    r = first_problem(spec)
    if r is not None:
        raise ConfigError(f"{r.path} {r.problem}; run `{compile_command([spec], backend, default_backend)}`",
                          key=spec.name)


# -- compiling: uv ---------------------------------------------------------------------

@attrs.define
class Compiled:
    """What compile did with one requirements file (or, for ``compile --check``, what it would do)."""

    path: str
    layer: str
    status: str     # "written", "unchanged" (uv's answer is the file as it was), "up to date", or the problem
    packages: int = 0
    variants: list[str] = attrs.field(factory=list)
    size: int = 0

    @property
    def ok(self) -> bool:
        return self.status in ("written", "unchanged", "up to date")


def survey(specs: Iterable[BuildSpec]) -> list[Compiled]:
    """Each requirements file of ``specs`` as committed: up to date, or its problem (no uv)."""
    out: dict[str, Compiled] = {}
    for spec in specs:
        for r in spec.requirements:
            c = out.setdefault(r.path, Compiled(r.path, r.layer, r.problem or "up to date", len(r.pinned),
                                                size=len(r.content or b"")))
            c.variants.append(spec.name)
    return list(out.values())


def check_known(specs: Iterable[BuildSpec], packages: frozenset[str]) -> None:
    """ConfigError when an --upgrade-package names a package no requirements file of ``specs`` has
    (a typo), as far as the committed files can tell."""
    specs = list(specs)
    if not packages or any(r.content is None for s in specs for r in s.requirements):
        return
    known = {_pair(p)[0] for s in specs for r in s.requirements for p in r.pinned}
    known |= {canonical_name(a.partition("==")[0]) for s in specs for r in s.requirements for a in r.asks}
    unknown = sorted(packages - known)
    if unknown:
        raise ConfigError(f"{', '.join(unknown)}: no requirements file of the selected variants has it",
                          key="--upgrade-package")


def previous_files(before: Iterable[BuildSpec], entries: Mapping) -> dict[tuple[str, str], list[str]]:
    """(alias, requirements key) -> the files that step had: in the specs as committed, then in the lock."""
    out: dict[tuple[str, str], list[str]] = {}
    for spec in before:
        for r in spec.requirements:
            if r.identity:
                out.setdefault((spec.alias, r.key), []).append(r.path)
    for alias, entry in entries.items():
        for key, value in entry.inputs.items():
            path = value.rsplit("@", 1)[0]
            if key.startswith("requirements.") and _FILE.fullmatch(path):  # the lock is input: only our names
                out.setdefault((alias, key), []).append(path)
    return out


def header(q: Requirements) -> str:
    return (f"# Generated by e2b-matrix compile; do not edit. Regenerate: e2b-matrix compile "
            f"(--upgrade-package PKG moves one package)\n"
            f"# pip step of layer {q.layer}: {' '.join(q.asks)}\n"
            f"# for Python {q.python} on {q.platform}, constrained by {len(q.constraints)} packages "
            f"the base and earlier steps install\n"
            f"# identity: {q.identity}\n")


def find_uv() -> str:
    """The uv binary of the installed ``uv`` package (its public API)."""
    try:
        from uv import find_uv_bin

        return find_uv_bin()
    except (ImportError, FileNotFoundError) as exc:
        raise ConfigError(f"no uv binary ({exc}): install e2b-matrix's dependencies (pip install uv)",
                          key="uv") from None


def _uv_error(stderr: str) -> str:
    """uv's reason in one line: its first ``error:`` and the first cause after it."""
    lines = [line.strip() for line in stderr.splitlines() if line.strip()]
    start = next((i for i, line in enumerate(lines) if line.startswith("error:")), None)
    if start is None:
        return lines[-1][:300] if lines else "no output"
    text = lines[start].removeprefix("error:").strip()
    cause = next((line for line in lines[start + 1:] if line.startswith("cause:")), None)
    if cause:
        text += ": " + cause.removeprefix("cause:").strip()
    return text[:400]


def run_uv(q: Requirements, seed: bytes | None, uv_args: Iterable[str] = (), upgrade: bool = False,
           packages: Iterable[str] = ()) -> str:
    """uv's answer to ``q``: the pinned, hashed requirements (no header); CompileError when it has none.

    Runs in a temporary folder (uv's annotations name only its own files); ``seed``, when
    given, is the output file uv starts from: its pins are kept where still valid.
    """
    uv = find_uv()
    with tempfile.TemporaryDirectory(prefix="e2b-matrix-compile-") as tmp:
        work = Path(tmp)
        (work / "requirements.in").write_text("".join(f"{a}\n" for a in q.asks))
        cmd = [uv, "pip", "compile", "requirements.in", "--output-file", "requirements.txt", "--generate-hashes",
               "--no-header", "--python-version", q.python, "--python-platform", q.platform,
               "--python", sys.executable, "--no-python-downloads"]
        if q.constraints:
            (work / "constraints.txt").write_text("".join(f"{c}\n" for c in q.constraints))
            cmd += ["--constraint", "constraints.txt"]
        if seed is not None:
            (work / "requirements.txt").write_bytes(seed)
        if upgrade:
            cmd.append("--upgrade")
        for p in sorted(packages):
            cmd += ["--upgrade-package", p]
        log.info("%s: %s%s", q.path, " ".join(cmd[1:]), " + E2B_MATRIX_UV_ARGS" if uv_args else "")
        cmd += list(uv_args)  # not logged: an index URL may carry a password
        try:
            proc = subprocess.run(cmd, cwd=work, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                  stderr=subprocess.PIPE, text=True, errors="replace", timeout=UV_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            raise CompileError(f"{q.path}: uv pip compile ran past {UV_TIMEOUT_S:.0f}s and was stopped") from None
        except OSError as exc:
            raise ConfigError(f"cannot run uv: {exc.strerror or exc}", key="uv") from None
        if proc.stderr.strip():
            log.info("%s: uv said:\n%s", q.path, proc.stderr.rstrip())
        if proc.returncode != 0:
            raise CompileError(f"{q.path}: uv cannot resolve {' '.join(q.asks)} for Python {q.python} on "
                               f"{q.platform}: {_uv_error(proc.stderr)} (-v shows uv's output)")
        return (work / "requirements.txt").read_text(encoding="utf-8")


class Compiler(Committed):
    """Answers by compiling: where a file is missing, has a problem, or is to be upgraded, uv writes it.

    ``previous``: (alias, key) -> files the step had before (``previous_files``): a new question
    starts from the first of them that still reads as pins. Each file is compiled at most once
    per run; ``results`` says what happened to each, in order.
    """

    def __init__(self, root: str | Path, uv_args: Iterable[str] = (), upgrade: bool = False,
                 packages: Iterable[str] = (), previous: Mapping[tuple[str, str], list[str]] | None = None):
        super().__init__(root)
        self.uv_args = tuple(uv_args)
        self.upgrade = upgrade
        self.packages = frozenset(packages)
        self.previous = previous or {}
        self.results: dict[str, Compiled] = {}

    def answer(self, q: Requirements, variant: Variant | None = None) -> Requirements:
        current = super().answer(q)
        done = self.results.get(q.path)
        if done is None:
            if current.ok and not self._upgrading(current):
                done = Compiled(q.path, q.layer, "up to date", len(current.pinned), size=len(current.content))
            else:
                current, done = self._compile(q, current, variant.alias if variant else None)
            self.results[q.path] = done
        if variant is not None and variant.name not in done.variants:
            done.variants.append(variant.name)
        return current

    def _upgrading(self, r: Requirements) -> bool:
        if self.upgrade:
            return True
        mentioned = {_pair(p)[0] for p in r.pinned} | {canonical_name(a.partition("==")[0]) for a in r.asks}
        return bool(mentioned & self.packages)

    def _seed(self, current: Requirements, alias: str | None) -> bytes | None:
        if self.upgrade:
            return None
        candidates = [current.content] + [self.read(p) for p in self.previous.get((alias, current.key), ())
                                          if p != current.path]
        for content in candidates:
            if content is not None:
                try:
                    if not parse(content.decode("utf-8"))[2]:
                        return content
                except UnicodeDecodeError:
                    continue
        return None

    def _compile(self, q: Requirements, current: Requirements, alias: str | None) -> tuple[Requirements, Compiled]:
        body = run_uv(q, self._seed(current, alias), self.uv_args, self.upgrade, self.packages)
        content = (header(q) + body).encode()
        answer = judge(q, content)
        if answer.problem:
            raise CompileError(f"{q.path}: uv's answer {answer.problem}")
        status = "unchanged" if content == current.content else "written"
        if status == "written":
            try:
                files.ensure_dir((self.root / q.path).parent, inside=self.root)  # made with its first file
                files.atomic_write(self.root / q.path, content, mode=0o644)  # never through a link
            except (files.FileError, OSError) as exc:
                raise ConfigError(f"cannot write: {exc.strerror or exc}", path=q.path) from None
            self._read[q.path] = content
        log.info("%s: %s (%d packages)", q.path, status, len(answer.pinned))
        return answer, Compiled(q.path, q.layer, status, len(answer.pinned), size=len(content))
