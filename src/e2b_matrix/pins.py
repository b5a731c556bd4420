"""Hash-pinned requirements: every pip step installs a committed requirements file.

A layer's pip step (``model.pip(("nexus-ai-fs==0.5.6",))``) says what it asks for. As a bare
``pip install nexus-ai-fs==0.5.6`` its ~150 dependencies would float with the index while E2B
serves the step from its cache by its text. So when a spec is resolved, each pip step becomes two:

    COPY requirements/nexus-<id>.txt /opt/e2b-matrix/requirements/nexus-<id>.txt   (as root)
    RUN  pip install --require-hashes --no-deps -r /opt/e2b-matrix/requirements/nexus-<id>.txt && pip check

and ``e2b-matrix compile`` writes that file with ``uv pip compile --generate-hashes`` (index.Uv, the
one place uv runs): every transitive package pinned and hashed. E2B's cache key of a COPY step
includes the file's hash, and so does the fingerprint (``spec.files``). ``pip check`` fails the
step when what is installed does not hold together.

The question a file answers names it: what the step asks for, for the base's Python on
``PLATFORM``, constrained by what the base (layers/base.py: ``installed``) and the variant's
earlier pip steps install. Its sha256 is the file's identity, and the file is
``requirements/<layer>-<identity[:12]>.txt``. Variants whose leading steps are the same ask the
same questions, so they copy byte-identical files and E2B's layer cache stays shared; a later
step's question holds the earlier files' pins, so a chain is resolved in step order.

Whether a file still answers its question is decided without uv. The file is input: read below
the project without a symbolic link on the way (files.read_inside), a regular file of at most
``MAX_BYTES``. Its header's ``# body sha256:`` line is the digest of everything after it, so a
file cut short (even at a line boundary) or edited is found; its ``# identity:`` line is the
question's; every requirement line is ``name==version`` with sha256 hashes and nothing else (no
option or URL reaches pip); it pins what the step asks for, and it agrees with the constraints.
Anything else is the requirement's ``problem``: ``plan``, ``compile --check`` and ``lock check``
name it, ``build`` compiles it, ``build --locked`` and ``--offline`` refuse.

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
from collections.abc import Iterable, Mapping
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Protocol, TypedDict

import attrs

from e2b_matrix import files, names
from e2b_matrix.errors import CompileError, ConfigError
from e2b_matrix.index import Uv, UvFailed
from e2b_matrix.model import Base, BuildSpec, Requirements, Step, Variant
from e2b_matrix.reqfile import canonical_name, parse

if TYPE_CHECKING:  # the lock depends on the model; pins reads entries, never imports the lock
    from e2b_matrix.lock.model import LockEntry

log = logging.getLogger(__name__)

SCHEMA = 1
DIR = "requirements"  # in the project, committed
DEST = "/opt/e2b-matrix/requirements"  # in the template
# uv's --python-platform: x86_64 Linux with glibc 2.36, the manylinux of Debian bookworm. The
# python:3.x images are Debian (bookworm, or trixie with glibc 2.41, which runs the same wheels),
# and so is the Docker backend's debootstrap base: one platform for every backend.
PLATFORM = "x86_64-manylinux_2_36"
# The most a requirements file (header and uv's answer) may hold: ten times the largest real one
# (nexus-ai-fs 0.9.26's 207 packages with the hash of every wheel: 381 KB), a sixteenth of what
# files.py reads at most.
MAX_BYTES = 4 * 1024 * 1024
DIGEST = "# body sha256: "  # the header's last line: the digest of every byte after it

_FILE = re.compile(rf"{DIR}/[a-z0-9][a-z0-9_.-]*-[0-9a-f]{{12}}\.txt")
WAITS = "waits for "


def _same_version(a: str, b: str) -> bool:
    from packaging.version import InvalidVersion, Version  # ~3 ms at the start of `list`, which never compares

    try:
        return Version(a) == Version(b)
    except InvalidVersion:
        return a == b


def check_packages(upgrade: bool, packages: Iterable[str]) -> frozenset[str]:
    """--upgrade-package names, canonical; ConfigError for a bad name or with --upgrade."""
    packages = tuple(packages)
    if upgrade and packages:
        raise ConfigError(
            "--upgrade re-resolves every package and --upgrade-package only the named ones; give one",
            key="--upgrade-package",
        )
    for p in packages:
        if not names.PROJECT.fullmatch(p):
            raise ConfigError(f"{names.shown(p)} is not a package name", key="--upgrade-package")
    return frozenset(canonical_name(p) for p in packages)


# -- the question ------------------------------------------------------------------


def _pair(pin: str) -> tuple[str, str]:
    name, _, version = pin.partition("==")
    return canonical_name(name), version


def question(
    layer: str, key: str, asks: Iterable[str], python: str, constraints: Mapping[str, str], platform: str = PLATFORM
) -> Requirements:
    """The question a pip step asks, its identity and its file (no answer yet)."""
    asks = tuple(asks)
    pins = tuple(f"{n}=={v}" for n, v in sorted(constraints.items()))
    doc = {"schema": SCHEMA, "asks": sorted(asks), "python": python, "platform": platform, "constraints": pins}
    identity = hashlib.sha256(json.dumps(doc, sort_keys=True, separators=(",", ":")).encode()).hexdigest()
    return Requirements(
        layer=layer,
        key=key,
        asks=asks,
        python=python,
        platform=platform,
        constraints=pins,
        identity=identity,
        path=f"{DIR}/{layer}-{identity[:12]}.txt",
    )


class Answers(Protocol):
    """What answers a pip step's question: ``Committed`` (the files as committed), ``Compiler`` (uv)."""

    def answer(self, q: Requirements, variant: Variant | None = None) -> Requirements: ...


def pin_steps(
    variant: Variant, layered: Iterable[tuple[str, Step]], base: Base, answers: Answers, *, installed: Iterable[str]
) -> tuple[tuple[Step, ...], tuple[Requirements, ...]]:
    """Each pip step (``(layer, step)`` in order) as a copy of its requirements file and a hashed install.

    ``installed``: what the base has from pip (``name==version``: layers/base.py ``installed``), the
    first questions' constraints. ``answers.answer(question, variant)`` gives each question's answer.
    After a step whose file has a problem, later questions cannot be asked (their constraints are
    unknown): they wait for it.
    """
    constraints = dict(_pair(p) for p in installed)
    steps: list[Step] = []
    out: list[Requirements] = []
    count: dict[str, int] = {}
    blocked: str | None = None
    for layer, step in layered:
        asks = (
            ()
            if step.call != "pip_install"
            else ((step.args[0],) if isinstance(step.args[0], str) else tuple(step.args[0]))
        )
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
        steps += [Step("copy", (r.path, dest), {"user": "root"}), install(dest, step.kw.get("g", True))]
    return tuple(steps), tuple(out)


def install(dest: str, g: bool = True) -> Step:
    """The pip step of a requirements file: each pinned, hashed package alone (``--no-deps``: the file
    has them all), then ``pip check`` (a file cut short, or a base that does not hold together with
    it, fails the build). As the SDK's ``pip_install`` runs: as root, or ``--user`` when not ``g``.
    ``pip check`` sees the base's packages too: code-interpreter-v1 has them from pip's own resolver
    (e2b-dev/code-interpreter template/template.py: ``pip_install("-r requirements.txt")``)."""
    command = f"pip install{'' if g else ' --user'} --require-hashes --no-deps -r {dest}"
    return Step("run_cmd", ((command, "pip check"),), {"user": "root"} if g else {})


def files_of(requirements: Iterable[Requirements]) -> tuple[tuple[str, str], ...]:
    """(path, sha256) of the requirement files a spec copies: what its fingerprint covers."""
    return tuple((r.path, r.digest) for r in requirements if r.content is not None)


# -- the answer: a committed file, judged ----------------------------------------------


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


def unsealed(content: bytes) -> str:
    """Why ``content`` is not a whole file as compile wrote it ("" when it is): the digest in its
    header must be the sha256 of every byte after that line."""
    start = 0
    for line in content.splitlines(keepends=True):
        if not line.startswith(b"#"):
            break
        start += len(line)
        if line.startswith(DIGEST.encode()):
            if line.rstrip(b"\r\n")[len(DIGEST) :] != hashlib.sha256(content[start:]).hexdigest().encode():
                return "is cut short or edited: its body does not match its digest"
            return ""
    return "has no digest of its body in its header"


Parsed = tuple[dict[str, str], str | None, str]  # reqfile.parse's (pins, identity line, problem)


def parse_bytes(content: bytes) -> Parsed:
    """A file's bytes as reqfile.parse reads them; its problem is "" when they read as pins."""
    try:
        return parse(content.decode("utf-8"))
    except UnicodeDecodeError:
        return {}, None, "is not UTF-8 text"


def judge(q: Requirements, content: bytes | None, parsed: Parsed | None = None) -> Requirements:
    """The question with its committed answer: the content, its digest, its pins, or its problem.
    ``parsed``: ``parse_bytes(content)``, when the caller has it already."""
    if content is None:
        return attrs.evolve(q, problem="is missing")
    digest = hashlib.sha256(content).hexdigest()
    pins, identity, problem = parse_bytes(content) if parsed is None else parsed
    problem = unsealed(content) or problem  # cut short mid-line, a file is also unparsable: say why
    if not problem and identity != q.identity:
        problem = "answers another question (its identity line is not this step's): compile it again"
    problem = problem or _agrees(q, pins)
    return attrs.evolve(
        q,
        content=content,
        digest=digest,
        problem=problem,
        pinned=() if problem else tuple(f"{n}=={v}" for n, v in sorted(pins.items())),
    )


class Committed:
    """The committed requirements files of the project at ``root``, each read and parsed once (variants
    whose leading steps are the same ask the same questions of the same files)."""

    def __init__(self, root: str | Path):
        self.root = Path(root)
        self._read: dict[str, bytes | None] = {}
        self._parsed: dict[str, Parsed] = {}

    def read(self, path: str) -> bytes | None:
        """The file's bytes (None: missing); ConfigError when it is a link, below a linked folder, not
        a regular file, or larger than MAX_BYTES."""
        if path not in self._read:
            try:
                self._read[path] = files.read_inside(self.root, path, MAX_BYTES)
            except files.FileError as exc:
                raise ConfigError(str(exc), path=path) from None
        return self._read[path]

    def parsed(self, path: str) -> Parsed | None:
        """The file as ``parse_bytes`` reads it (None: missing)."""
        content = self.read(path)
        if content is None:
            return None
        if path not in self._parsed:
            self._parsed[path] = parse_bytes(content)
        return self._parsed[path]

    def answer(self, q: Requirements, variant: Variant | None = None) -> Requirements:
        return judge(q, self.read(q.path), self.parsed(q.path))


def first_problem(spec: BuildSpec) -> Requirements | None:
    """The first pip step of ``spec`` whose file cannot be installed as is (later ones wait for it)."""
    return next((r for r in spec.requirements if r.problem), None)


def reasons(spec: BuildSpec) -> list[str]:
    """What plan says about the spec's requirements files: each problem, and what to run."""
    return [
        f"{r.path} {r.problem}: run `e2b-matrix compile {spec.name}`"
        for r in spec.requirements
        if r.problem and not r.problem.startswith(WAITS)
    ]


def compile_command(specs: Iterable[BuildSpec], backend: str, default_backend: str) -> str:
    flag = f" --backend {backend}" if backend != default_backend else ""
    return f"e2b-matrix compile{flag} {' '.join(dict.fromkeys(s.name for s in specs))}"


def refusal(specs: list[BuildSpec], flag: str, backend: str, default_backend: str) -> ConfigError:
    """The one line --locked (or --offline) says instead of compiling: the variants and the command to run."""
    first = next(r for s in specs for r in s.requirements if r.problem)  # the caller's specs each have one
    what = "never resolves" if flag == "--offline" else "keeps the committed requirements files as they are"
    return ConfigError(
        f"{', '.join(s.name for s in specs)}: {first.path} {first.problem}, and {flag} {what}; "
        f"run `{compile_command(specs, backend, default_backend)}` and commit the files",
        key=flag,
    )


def require(spec: BuildSpec, backend: str, default_backend: str) -> None:
    """ConfigError (exit 2) unless every requirements file of ``spec`` can be installed as is."""
    r = first_problem(spec)
    if r is not None:
        raise ConfigError(
            f"{r.path} {r.problem}; run `{compile_command([spec], backend, default_backend)}`", key=spec.name
        )


# -- compiling: uv ---------------------------------------------------------------------


class CompiledJSON(TypedDict):
    """A requirements file as ``compile --json`` prints it (docs/schemas/compile.schema.json)."""

    path: str
    layer: str
    status: str
    ok: bool
    packages: int
    bytes: int
    variants: list[str]


@attrs.define
class Compiled:
    """What compile did with one requirements file (or, for ``compile --check``, what it would do)."""

    path: str
    layer: str
    status: str  # "written", "unchanged" (uv's answer is the file as it was), "up to date", or the problem
    packages: int = 0
    variants: list[str] = attrs.field(factory=list)
    size: int = 0

    @property
    def ok(self) -> bool:
        return self.status in ("written", "unchanged", "up to date")

    def to_json(self) -> CompiledJSON:
        return {
            "path": self.path,
            "layer": self.layer,
            "status": self.status,
            "ok": self.ok,
            "packages": self.packages,
            "bytes": self.size,
            "variants": list(self.variants),
        }


def survey(specs: Iterable[BuildSpec]) -> list[Compiled]:
    """Each requirements file of ``specs`` as committed: up to date, or its problem (no uv)."""
    out: dict[str, Compiled] = {}
    for spec in specs:
        for r in spec.requirements:
            c = out.setdefault(
                r.path, Compiled(r.path, r.layer, r.problem or "up to date", len(r.pinned), size=len(r.content or b""))
            )
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
        raise ConfigError(
            f"{', '.join(unknown)}: no requirements file of the selected variants has it", key="--upgrade-package"
        )


def previous_files(before: Iterable[BuildSpec], entries: Mapping[str, LockEntry]) -> dict[tuple[str, str], list[str]]:
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


def header(q: Requirements, body: str) -> str:
    """The header of the file that answers ``q`` with ``body``: what it answers, and (last) the digest
    of the body, which every reader checks (``unsealed``)."""
    return (
        f"# Generated by e2b-matrix compile; do not edit. Regenerate: e2b-matrix compile "
        f"(--upgrade-package PKG moves one package)\n"
        f"# pip step of layer {q.layer}: {' '.join(q.asks)}\n"
        f"# for Python {q.python} on {q.platform}, constrained by {len(q.constraints)} packages "
        f"the base and earlier steps install\n"
        f"# identity: {q.identity}\n"
        f"{DIGEST}{hashlib.sha256(body.encode()).hexdigest()}\n"
    )


class Compiler(Committed):
    """Answers by compiling: where a file is missing, has a problem, or is to be upgraded, uv writes it.

    ``committed``: the project's files as the run has read them so far (the session's), not read
    or parsed again. ``previous``: (alias, key) -> files the step had before (``previous_files``): a
    new question starts from the first of them that still reads as pins. Each file is compiled at
    most once per run; ``results`` says what happened to each, in order.
    """

    def __init__(
        self,
        committed: Committed,
        uv: Uv,
        upgrade: bool = False,
        packages: Iterable[str] = (),
        previous: Mapping[tuple[str, str], list[str]] | None = None,
    ):
        super().__init__(committed.root)
        self._read, self._parsed = dict(committed._read), dict(committed._parsed)  # what compile writes stays here
        self.uv = uv
        self.upgrade = upgrade
        self.packages = frozenset(packages)
        self.previous = previous or {}
        self.results: dict[str, Compiled] = {}

    def answer(self, q: Requirements, variant: Variant | None = None) -> Requirements:
        current = super().answer(q)
        done = self.results.get(q.path)
        if done is None:
            if current.ok and not self._upgrading(current):
                done = Compiled(q.path, q.layer, "up to date", len(current.pinned), size=len(current.content or b""))
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
        before = self.previous.get((alias, current.key), []) if alias is not None else []
        candidates = [(p, self.parsed(p)) for p in dict.fromkeys([current.path, *before])]
        return next((self.read(p) for p, parsed in candidates if parsed is not None and not parsed[2]), None)

    def _compile(self, q: Requirements, current: Requirements, alias: str | None) -> tuple[Requirements, Compiled]:
        """uv's answer to ``q``, judged as every reader will judge it, then written (when it changed)."""
        room = MAX_BYTES - len(header(q, "").encode())
        try:
            body = self.uv.compile(
                q.asks,
                q.python,
                q.platform,
                label=q.path,
                limit=room,
                constraints=q.constraints,
                seed=self._seed(current, alias),
                upgrade=self.upgrade,
                packages=self.packages,
            )
        except UvFailed as exc:
            if exc.resolving:
                raise CompileError(
                    f"{q.path}: uv cannot resolve {' '.join(q.asks)} for Python {q.python} on "
                    f"{q.platform}: {exc.reason} (-v shows uv's output)"
                ) from None
            raise CompileError(f"{q.path}: {exc.reason}") from None
        content = (header(q, body) + body).encode()
        parsed = parse_bytes(content)
        answer = judge(q, content, parsed)
        if answer.problem:
            raise CompileError(f"{q.path}: uv's answer {answer.problem}")
        status = "unchanged" if content == current.content else "written"
        if status == "written":
            try:
                files.ensure_dir((self.root / q.path).parent, inside=self.root)  # made with its first file
                files.atomic_write(self.root / q.path, content, mode=0o644)  # never through a link
            except (files.FileError, OSError) as exc:
                raise ConfigError(f"cannot write: {exc.strerror or exc}", path=q.path) from None
            self._read[q.path], self._parsed[q.path] = content, parsed
        self.uv.say(f"{q.path}: {status} ({len(answer.pinned)} packages)")
        return answer, Compiled(q.path, q.layer, status, len(answer.pinned), size=len(content))
