"""The command line: parse, call the library, print ``to_json()`` or lines, map errors to exit codes.

Exit codes: 0 ok; 1 a build or check failed (or a stale lock, or drift); 2 bad
input or configuration; 130 interrupted.

Everything a command prints goes to the streams of its ``Env`` (its click context's object):
stdout and stderr behind one redactor (secrets.RedactedStream), with a console log handler
attached for the command's length only. Nothing here is kept in the module: two commands in one
process never share a stream or a handler.

Each command imports the library modules it calls when it runs: a measured choice, not a habit.
``--version`` loads this module, click and the backends' registry only: importing the workflow
here would cost it more CPU than importing click does, and the cheapest of the modules the
commands import (the settings, with attrs) over half as much; ``list`` would pay for the lock,
``resolve`` for the project's modules (bench/run.py's version_ratio and resolve_ratio compare
each command with its dependencies' own import; tests/test_startup.py says what each may load).
"""

from __future__ import annotations

import contextlib
import json
import logging
import signal
import sys
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Any, NoReturn, TextIO

import click

from e2b_matrix import __version__, backends
from e2b_matrix.errors import ConfigError, MatrixError
from e2b_matrix.names import printable
from e2b_matrix.secrets import RedactedStream, Redactor

if TYPE_CHECKING:  # each imported by the command that uses it (above)
    from e2b_matrix.plan import Plan
    from e2b_matrix.release import Diff, Drift
    from e2b_matrix.session import Options, Session
    from e2b_matrix.settings import Settings

F = Callable[..., Any]
HTTP_LOGGERS = ("httpx", "httpcore", "h2", "hpack", "pyqwest", "urllib3")  # a line a request: only at -vv


class Env:
    """One command's shared state: the project directory, verbosity, settings, and where it prints."""

    def __init__(self) -> None:
        self.root = Path(".")
        self.environment: str | None = None  # --env
        self.verbose = 0
        self.quiet = False
        self._settings: Settings | None = None
        self._redactor: Redactor | None = None
        self.out: TextIO = sys.stdout
        self.err: TextIO = sys.stderr
        self._handler: logging.Handler | None = None

    @property
    def settings(self) -> Settings:
        if self._settings is None:
            from e2b_matrix.settings import Settings  # attrs: --version never reads the settings

            self._settings = Settings.from_env()
        return self._settings

    @property
    def redactor(self) -> Redactor:
        """One per command: the key is looked up once, not for every line printed."""
        if self._redactor is None:
            try:
                secrets = self.settings.secrets()
            except MatrixError:  # bad settings: that error is printed, and it holds no key
                secrets = []
            self._redactor = Redactor(secrets)
        return self._redactor

    def session(self, **options: Any) -> Session:
        from e2b_matrix.session import Options, Session  # the settings, the lock, the backend: a command's

        return Session.open(Options(root=self.root, environment=self.environment, **options), self.settings)

    # -- output ----------------------------------------------------------------------------

    def echo(self, text: str = "", *, err: bool = False, nl: bool = True) -> None:
        """Text as lines: control characters in it escaped, line breaks kept."""
        click.echo(printable(text, lines=True), file=self.err if err else self.out, nl=nl)

    def line(self, text: str, *, err: bool = False) -> None:
        """One line, whatever it holds (a path with a newline, a value)."""
        click.echo(printable(text), file=self.err if err else self.out)

    def json(self, data: object) -> None:
        click.echo(json.dumps(data, indent=2), file=self.out)

    def table(self, headers: list[str], rows: Iterable[Sequence[str]]) -> None:
        from e2b_matrix.progress import print_table  # with the model: only a command that prints a table

        print_table(headers, [list(r) for r in rows], file=self.out)

    @contextlib.contextmanager
    def console(self) -> Iterator[None]:
        """For the command's length: stdout and stderr behind the redactor, and our log handler on stderr."""
        self.out, self.err = _redacted(sys.stdout, self.redactor), _redacted(sys.stderr, self.redactor)
        root = logging.getLogger()
        saved = root.level, {name: logging.getLogger(name).level for name in HTTP_LOGGERS}
        self._handler = logging.StreamHandler(self.err)
        root.addHandler(self._handler)
        self.log_level()
        try:
            yield
        finally:
            root.removeHandler(self._handler)
            root.setLevel(saved[0])
            for name, level in saved[1].items():
                logging.getLogger(name).setLevel(level)
            self._handler = None
            for stream in (self.out, self.err):
                stream.flush()
            self.out, self.err = sys.stdout, sys.stderr

    def log_level(self) -> None:
        """Our handler's level from -v and -q (an option after the command's name sets it again):
        -v shows the tool's steps; -vv debug lines and each HTTP request."""
        if self.quiet and self.verbose:
            raise ConfigError("-q and -v ask for less and more output; give one", key="-q")
        if self._handler is None:
            return
        from e2b_matrix.logs import RedactingFormatter  # the run log's module: a command's, never --version's

        level = (
            logging.WARNING
            if self.quiet
            else logging.DEBUG
            if self.verbose >= 2
            else logging.INFO
            if self.verbose
            else logging.WARNING
        )
        self._handler.setFormatter(
            RedactingFormatter("%(levelname)s %(name)s: %(message)s", self.redactor, datefmt=None)
        )
        self._handler.setLevel(level)
        logging.getLogger().setLevel(level)
        for name in HTTP_LOGGERS:
            logging.getLogger(name).setLevel(logging.NOTSET if self.verbose >= 2 else logging.WARNING)


def _redacted(stream: TextIO, redactor: Redactor) -> TextIO:
    """``stream`` behind ``redactor``: every line written to it redacted."""
    return RedactedStream(stream, redactor)  # type: ignore[return-value]  # a text stream (io.TextIOBase), which typeshed does not count as a typing.TextIO


pass_env = click.make_pass_decorator(Env, ensure=True)  # a command takes it first, positional only (``env, /``)


# -- options every command takes, before or after its name ---------------------------


def _set_root(ctx: click.Context, param: click.Parameter, value: str | None) -> None:
    if value is not None:
        ctx.ensure_object(Env).root = Path(value)


def _set_environment(ctx: click.Context, param: click.Parameter, value: str | None) -> None:
    if value is not None:
        ctx.ensure_object(Env).environment = value


def _add_verbose(ctx: click.Context, param: click.Parameter, value: int) -> None:
    if value:
        env = ctx.ensure_object(Env)
        env.verbose += value
        env.log_level()


def _set_quiet(ctx: click.Context, param: click.Parameter, value: bool) -> None:
    if value:
        env = ctx.ensure_object(Env)
        env.quiet = True
        env.log_level()


def common(f: F) -> F:
    for option in (
        click.option(
            "-C",
            "directory",
            metavar="DIR",
            type=click.Path(file_okay=False),
            default=None,
            expose_value=False,
            callback=_set_root,
            help="Project directory (variants/, the lock, logs/). Default: here.",
        ),
        click.option(
            "--env",
            "environment",
            metavar="NAME",
            default=None,
            expose_value=False,
            callback=_set_environment,
            help="The environment of e2b-matrix.toml (default: E2B_MATRIX_ENV, else its default).",
        ),
        click.option(
            "-v",
            "--verbose",
            count=True,
            expose_value=False,
            callback=_add_verbose,
            help="More output (-vv for debug).",
        ),
        click.option(
            "-q", "--quiet", is_flag=True, expose_value=False, callback=_set_quiet, help="Only errors and the result."
        ),
    ):
        f = option(f)
    return f


if TYPE_CHECKING:
    _StrType = click.ParamType[str, str]  # recent click's type parameters (pallets/click#3371): str, given as str
else:
    _StrType = click.ParamType  # older click (8.0, our floor) has none: a subscript would fail there


class RegistryChoice(_StrType):
    """One of the values a registry has when the command runs (a backend added later is known)."""

    def __init__(self, name: str, values: Callable[[], list[str]]):
        self.name, self.values = name, values

    def get_metavar(self, *args: Any, **kwargs: Any) -> str:  # newer click also passes ctx: either signature
        return "[" + "|".join(self.values()) + "]"

    def convert(self, value: str, param: click.Parameter | None, ctx: click.Context | None) -> str:
        if value in self.values():
            return value
        self.fail(f"{value!r} is not one of {', '.join(self.values())}", param, ctx)


def backend_option(f: F) -> F:
    return click.option(
        "--backend",
        type=RegistryChoice("backend", backends.names),
        default=backends.DEFAULT,
        help="Where to build: on E2B (the default), or locally with Docker.",
    )(f)


def backend_own_options(f: F) -> F:
    """Each backend's own options (data in backends/), as click options."""
    for name, o in reversed(backends.all_options()):
        f = click.option(
            o.flag,
            o.dest,
            multiple=o.multiple,
            type=click.Path(dir_okay=False) if o.path else str,
            help=f"{o.help} [--backend {name}]",
        )(f)
    return f


offline_option = click.option(
    "--offline", is_flag=True, help='Resolve "latest" from the lock, else uv\'s cache; never ask the index.'
)
set_option = click.option(
    "--set",
    "overrides",
    multiple=True,
    metavar="LAYER.PARAM=VALUE",
    help="Override a layer parameter for this run (repeatable).",
)
json_option = click.option("--json", "as_json", is_flag=True, help="Print JSON for machines.")


def _backend_values(kwargs: dict[str, Any]) -> dict[str, Any]:
    return {o.dest: kwargs.pop(o.dest) for _, o in backends.all_options() if o.dest in kwargs}


def _error(exc: Exception | str, env: Env | None = None) -> None:
    """The one line an error is."""
    click.echo(f"e2b-matrix: error: {printable(str(exc))}", file=env.err if env else sys.stderr)


class MatrixGroup(click.Group):
    """Maps the one error root to exit codes: bad input 2 without a traceback, Ctrl-C 130; a command
    runs inside its Env's console (the redactor in front of everything it prints)."""

    def make_context(
        self, info_name: str | None, args: list[str], parent: click.Context | None = None, **extra: Any
    ) -> click.Context:
        try:
            return super().make_context(info_name, args, parent, **extra)
        except MatrixError as exc:  # an option's own check, before any command ran (-v with -q)
            _error(exc)
            sys.exit(exc.exit_code)

    def invoke(self, ctx: click.Context) -> Any:
        env = ctx.ensure_object(Env)
        with env.console():
            try:
                return super().invoke(ctx)
            except MatrixError as exc:
                _error(exc, env)
                ctx.exit(exc.exit_code)
            except KeyboardInterrupt:
                env.line("e2b-matrix: interrupted", err=True)
                ctx.exit(130)


@click.group(cls=MatrixGroup, context_settings={"help_option_names": ["-h", "--help"]})
@common
@click.version_option(__version__, prog_name="e2b-matrix")
@pass_env
def cli(env: Env, /) -> None:
    """Build E2B sandbox template variants from layers and lock their builds."""
    env.settings  # noqa: B018 - every variable is validated before any command runs


def _exit(code: int) -> NoReturn:
    sys.exit(code)


# -- reading the project -------------------------------------------------------------


@cli.command("list")
@common
@json_option
@pass_env
def list_cmd(env: Env, /, as_json: bool) -> None:
    """List the variants and their layers."""
    from e2b_matrix import environments
    from e2b_matrix.config import load_project

    environments.load(env.root).choose(env.environment, env.settings.environment)  # a bad one is refused here too
    variants = load_project(env.root, env.settings.secrets()).variants
    if as_json:
        env.json([v.to_json() for v in variants])
        return
    env.table(
        ["NAME", "ALIAS", "LAYERS", "CPU", "MEMORY"],
        [[v.name, v.alias, ",".join(v.layers), str(v.cpu_count), f"{v.memory_mb} MiB"] for v in variants],
    )


@cli.command()
@common
@click.argument("names", nargs=-1)
@backend_option
@offline_option
@set_option
@backend_own_options
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["table", "json", "markdown"]),
    default=None,
    help="A table and the shared steps (the default); JSON; or Markdown for a CI job summary.",
)
@json_option
@pass_env
def plan(
    env: Env,
    /,
    names: tuple[str, ...],
    backend: str,
    offline: bool,
    overrides: tuple[str, ...],
    fmt: str | None,
    as_json: bool,
    **kwargs: Any,
) -> None:
    """Show what would build and why (fresh, stale, unbuilt), without building."""
    from e2b_matrix import workflow
    from e2b_matrix.inventory import size
    from e2b_matrix.plan import markdown

    if as_json and fmt not in (None, "json"):
        raise ConfigError(f"--json and --format {fmt} ask for two outputs; give one", key="--json")
    shown = workflow.show_plan(
        env.session(
            names=names, backend=backend, offline=offline, overrides=overrides, backend_options=_backend_values(kwargs)
        )
    )
    if as_json or fmt == "json":
        env.json(shown.to_json())
    elif fmt == "markdown":
        env.echo(
            markdown(shown.items, list(shown.roots), {a: size(k) for a, k in shown.disk_used_kib.items()}), nl=False
        )
    else:
        _plan_table(env, shown)


def _plan_table(env: Env, shown: Plan) -> None:
    """The plan as a table, then (unless -q) the step trie: what a change would rebuild."""
    from e2b_matrix.plan import trie_lines

    env.table(
        ["NAME", "ALIAS", "STATE", "PYTHON", "LAYERS", "WHY"],
        [
            [
                i.name,
                i.alias,
                i.state.value,
                i.python or "",
                ",".join(f"{k}@{v}" for k, v in i.layers.items()),
                "; ".join(i.reasons),
            ]
            for i in shown.items
        ],
    )
    if not env.quiet:
        env.echo("\nsteps the variants share (a change rebuilds the variants below it):")
        for line in trie_lines(list(shown.roots)):
            env.echo(f"  {line}")


@cli.command()
@common
@click.argument("name")
@click.option(
    "--format",
    "fmt",
    type=RegistryChoice("format", backends.formats),
    default="json",
    show_default=True,
    help="E2B's build API body (json) or a Dockerfile.",
)
@offline_option
@set_option
@backend_own_options
@pass_env
def render(env: Env, /, name: str, fmt: str, offline: bool, overrides: tuple[str, ...], **kwargs: Any) -> None:
    """Print a variant as E2B's build API body (json) or as a Dockerfile."""
    from e2b_matrix import workflow

    session = env.session(
        names=(name,),
        backend=backends.by_format(fmt),
        offline=offline,
        overrides=overrides,
        backend_options=_backend_values(kwargs),
    )
    text = workflow.render(session, name)
    click.echo(text, file=env.out, nl=not text.endswith("\n"))


@cli.command("compile")
@common
@click.argument("names", nargs=-1)
@backend_option
@click.option("-U", "--upgrade", is_flag=True, help="Re-resolve every package, ignoring the pins in the files.")
@click.option(
    "-P",
    "--upgrade-package",
    "packages",
    multiple=True,
    metavar="PKG",
    help="Re-resolve only PKG, keeping every other pin (repeatable).",
)
@click.option(
    "--check",
    is_flag=True,
    help="Write nothing and compile nothing: exit 1 when a file is missing or out of date (CI).",
)
@set_option
@backend_own_options
@json_option
@pass_env
def compile_cmd(
    env: Env,
    /,
    names: tuple[str, ...],
    backend: str,
    upgrade: bool,
    packages: tuple[str, ...],
    check: bool,
    overrides: tuple[str, ...],
    as_json: bool,
    **kwargs: Any,
) -> None:
    """Pin and hash every pip step's packages (uv) into committed requirements files."""
    from e2b_matrix import workflow

    session = env.session(names=names, backend=backend, overrides=overrides, backend_options=_backend_values(kwargs))
    _, results = workflow.compile_requirements(session, upgrade=upgrade, packages=packages, check=check)
    if as_json:
        env.json([c.to_json() for c in results])
    else:
        env.table(
            ["FILE", "STATUS", "PACKAGES", "VARIANTS"],
            [[c.path, c.status, str(c.packages) if c.ok else "", ",".join(c.variants)] for c in results],
        )
        if not results:
            env.line("no pip steps: nothing to compile", err=True)
    if not all(c.ok for c in results):
        _exit(1)


# -- building --------------------------------------------------------------------------


BUILD_OPTIONS: tuple[Callable[[F], F], ...] = (  # the options every build command takes, in --help's order
    common,
    backend_option,
    click.option(
        "-j",
        "--jobs",
        type=click.IntRange(1),
        default=None,
        help="Builds at most at once (default and ceiling: the team's E2B_MATRIX_TEAM_BUILDS, 20).",
    ),
    click.option("--force", is_flag=True, help="Rebuild fresh variants too, skipping the layer cache."),
    click.option("--fail-fast", is_flag=True, help="After a failure start nothing new and stop the rest."),
    click.option("--no-wait", is_flag=True, help="Fail at once when another process is building the same alias."),
    click.option("--verify", is_flag=True, help="Run the smoke checks before a build becomes the lock's truth."),
    click.option(
        "--promote",
        metavar="CHANNEL",
        default=None,
        help="Point CHANNEL at each variant that built (and passed --verify) or was fresh.",
    ),
    click.option(
        "--no-share",
        is_flag=True,
        help="Start every build at once, each running the steps it shares with others.",
    ),
    click.option(
        "--locked",
        is_flag=True,
        help="Refuse (exit 2) instead of compiling a missing or out-of-date requirements file (CI).",
    ),
    offline_option,
    set_option,
    backend_own_options,
    json_option,
)


def build_options(f: F) -> F:
    """The options every build command takes (BUILD_OPTIONS)."""
    for option in reversed(BUILD_OPTIONS):
        f = option(f)
    return f


@cli.command()
@click.argument("names", nargs=-1, required=True)
@build_options
@pass_env
def build(env: Env, /, names: tuple[str, ...], **options: Any) -> None:
    """Build the named variants concurrently and record them in the lock."""
    _build(env, names, **options)


@cli.command("build-all")
@build_options
@pass_env
def build_all(env: Env, /, **options: Any) -> None:
    """Build every variant concurrently and record them in the lock."""
    _build(env, (), **options)


def _build(env: Env, names: tuple[str, ...], *, as_json: bool, **options: Any) -> None:
    """Build, with a live table or plain lines (the results as JSON with ``as_json``); exit with the run's code."""
    from e2b_matrix import workflow
    from e2b_matrix.progress import make_reporter, summary

    wanted = _build_request(env, names, options)
    previous = signal.signal(signal.SIGTERM, _raise_interrupt)
    try:
        with make_reporter(env.verbose, env.quiet, as_json, out=env.out, err=env.err) as reporter:
            result = workflow.build(wanted, env.settings, reporter)
    finally:
        signal.signal(signal.SIGTERM, previous)
    if as_json:  # what the reporter heard finish, as the plain lines and the run log did
        env.json(reporter.json())
    else:
        summary(list(result.results), out=env.out, err=env.err)
    if result.error:
        _error(result.error, env)
    if result.exit_code == 130:
        env.line("e2b-matrix: interrupted; finished builds are in the lock", err=True)
    _exit(result.exit_code)


def _build_request(env: Env, names: tuple[str, ...], options: dict[str, Any]) -> Options:
    """The run's Options from a build command's: the flags that say "not" turned around, each backend's
    own options apart."""
    from e2b_matrix.session import Options

    no_wait, no_share = options.pop("no_wait"), options.pop("no_share")
    return Options(
        root=env.root,
        environment=env.environment,
        names=names,
        backend_options=_backend_values(options),
        wait=not no_wait,
        share=not no_share,
        **options,
    )


def _raise_interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt


@cli.command()
@common
@click.argument("name")
@backend_option
@offline_option
@set_option
@backend_own_options
@json_option
@pass_env
def verify(
    env: Env, /, name: str, backend: str, offline: bool, overrides: tuple[str, ...], as_json: bool, **kwargs: Any
) -> None:
    """Run the variant's smoke checks against its locked build and record what it holds; exit 1 on any failure."""
    from e2b_matrix import workflow
    from e2b_matrix.model import State

    session = env.session(
        names=(name,), backend=backend, offline=offline, overrides=overrides, backend_options=_backend_values(kwargs)
    )
    done = workflow.verify(session)
    item, report, results = done.item, done.report, done.report.results
    if item.state is not State.FRESH:
        env.line(f"warning: {item.alias} is stale; the built template was checked against the current layers", err=True)
    if as_json:
        env.json(report.to_json())
    else:
        env.table(
            ["CHECK", "LAYER", "RESULT", "DETAIL"],
            [[r.name, r.layer, "ok" if r.ok else "FAILED", r.reason] for r in results],
        )
        found = "".join(f"; {fact} {version}" for fact, version in report.found.items())
        env.line(f"{item.name}: {sum(r.ok for r in results)}/{len(results)} checks passed{found}")
        inv = done.inventory
        if inv is not None:
            env.line(f"inventory of build {inv.build_id}: {inv.summary()}")
    if not report.ok:
        _exit(1)


@cli.command()
@common
@click.argument("name")
@click.argument("old", metavar="[FROM", required=False, default="previous")
@click.argument("new", metavar="[TO]]", required=False, default="current")
@backend_option
@click.option(
    "--against",
    metavar="ENV",
    default=None,
    help="Compare the current build in environment ENV with this environment's current build.",
)
@json_option
@pass_env
def diff(env: Env, /, name: str, old: str, new: str, backend: str, against: str | None, as_json: bool) -> None:
    """Packages added, removed and changed between two builds (IDs, channels, previous, current)."""
    from e2b_matrix import release

    d = release.diff(env.session(backend=backend), name, old, new, against=against)
    if as_json:
        env.json(d.to_json())
        return
    _print_diff(env, d)


def _print_diff(env: Env, d: Diff, indent: str = "") -> None:
    if d.before_environment != d.after_environment:  # diff --against: say which build is whose
        moved = f"{d.before_environment} build {d.before} -> {d.after_environment} build {d.after}"
    else:
        moved = f"build {d.before} -> {d.after}"
    env.line(f"{indent}{d.alias}: {moved}: {d.counts()}")
    for c in d.changes:
        env.line(f"{indent}  {c.line()}")


# -- releases --------------------------------------------------------------------------


@cli.command()
@common
@click.argument("name", required=False)
@backend_option
@click.option("--id", "bare", is_flag=True, help="The bare template ID (E2B: its default channel).")
@click.option("--channel", metavar="CHANNEL", default=None, help="<alias>:<CHANNEL>: what CHANNEL points at.")
@pass_env
def resolve(env: Env, /, name: str | None, backend: str, bare: bool, channel: str | None) -> None:
    """Print a variant's pinned build from the lock, for shells (no NAME: latest, or E2B_TEMPLATE_ID)."""
    from e2b_matrix import workflow

    env.line(workflow.reference(env.session(backend=backend), name, bare=bare, channel=channel))
    if bare:
        env.line("note: a bare template ID means its default channel, not the pinned build", err=True)


@cli.command()
@common
@click.argument("names", nargs=-1, required=True)
@click.option("--channel", default="default", show_default=True, help="The channel (an E2B tag) to move.")
@backend_option
@pass_env
def promote(env: Env, /, names: tuple[str, ...], channel: str, backend: str) -> None:
    """Point a channel at each variant's locked build, and record it in the lock."""
    from e2b_matrix import release
    from e2b_matrix.progress import promoted

    for e, moved in release.promote(env.session(backend=backend), names, channel):
        env.line(promoted(e, channel))
        if moved is not None:
            _print_diff(env, moved, "  ")


@cli.command()
@common
@click.argument("name")
@backend_option
@pass_env
def rollback(env: Env, /, name: str, backend: str) -> None:
    """Return a variant to its previous build; channels promoted to the current one follow."""
    from e2b_matrix import release
    from e2b_matrix.progress import rolled_back

    env.line(rolled_back(*release.rollback(env.session(backend=backend), name)))


@cli.command()
@common
@click.argument("names", nargs=-1)
@backend_option
@json_option
@pass_env
def status(env: Env, /, names: tuple[str, ...], backend: str, as_json: bool) -> None:
    """Compare the backend's channels with the lock (drift); exit 1 on any."""
    from e2b_matrix import release

    drift = release.status(env.session(backend=backend), names)
    if as_json:
        env.json([d.to_json() for d in drift])
    else:
        _drift_table(env, drift)
    if not all(d.ok for d in drift):
        _exit(1)


def _drift_table(env: Env, drift: Iterable[Drift]) -> None:
    env.table(
        ["ALIAS", "VARIANT", "STATE", "DETAILS"], [[d.alias, d.variant, d.state, "; ".join(d.details)] for d in drift]
    )


@cli.command()
@common
@click.option("--yes", is_flag=True, help="Remove what is listed (default: only list it, and why).")
@offline_option
@json_option
@pass_env
def prune(env: Env, /, yes: bool, offline: bool, as_json: bool) -> None:
    """List what no one needs any more (requirements files, inventories, images, templates) and, with
    --yes, remove it; exit 0 when the project is clean."""
    from e2b_matrix import prune as pruning

    done = pruning.prune(env.session(offline=offline), yes)
    if as_json:
        env.json(done.to_json())
    else:
        for line in pruning.lines(done):
            env.line(line)
        for note in done.notes:
            env.line(f"note: {note}", err=True)
        if done.clean:
            env.line("nothing to prune")
        elif not done.applied:
            env.line(f"{len(done.removals)} to remove: run again with --yes", err=True)
    if not done.ok:
        _exit(1)


# -- a local E2B -----------------------------------------------------------------------


def _emulator_modes() -> list[str]:
    from e2b_matrix.emulator.serve import MODES  # when the option is parsed: emulate's, not list's

    return list(MODES)


@cli.command()
@common
@click.option(
    "--mode",
    type=RegistryChoice("mode", _emulator_modes),
    default="auto",
    show_default=True,
    help="docker: run each build's steps and each sandbox in Docker; timing: model build times only; "
    "auto: docker when a daemon answers.",
)
@click.option(
    "--step-cost",
    type=click.FloatRange(min=0),
    default=0.05,
    show_default=True,
    help="Seconds a build step that misses the cache takes [timing mode].",
)
@click.option(
    "--env-file",
    type=click.Path(dir_okay=False),
    default=None,
    help="Also write the export lines to this file once serving (for scripts).",
)
@pass_env
def emulate(env: Env, /, mode: str, step_cost: float, env_file: str | None) -> None:
    """Run a local E2B on 127.0.0.1 until Ctrl-C; print the variables to export (docs/emulator.md)."""
    from e2b_matrix.emulator.serve import ModeUnavailable, serve

    settings = env.settings
    try:
        serve(
            mode,
            step_cost=step_cost,
            env_file=None if env_file is None else Path(env_file),
            say=lambda line: click.echo(line, err=True),
            out=click.echo,
            docker_cli=settings.docker_cli,
            buildkit=settings.docker_buildkit,
        )
    except ModeUnavailable as exc:
        raise ConfigError(str(exc), key="--mode docker") from None


# -- the lock --------------------------------------------------------------------------


@cli.group("lock")
@common
def lock_group() -> None:
    """Read and check the lock file."""


@lock_group.command("show")
@common
@backend_option
@json_option
@pass_env
def lock_show(env: Env, /, backend: str, as_json: bool) -> None:
    """Show the lock's entries."""
    session = env.session(backend=backend)
    lock = session.lock()
    if as_json:
        env.json(lock.to_json())
        return
    if not lock.exists:
        env.line(f"{lock.path}: no lock yet (build first: {session.backend.regenerate})", err=True)
        return
    env.table(
        ["ALIAS", "VARIANT", "TEMPLATE ID", "BUILD ID", "LAYERS", "CHANNELS", "BUILT AT"],
        [
            [
                e.alias,
                e.variant,
                e.template_id,
                e.build_id,
                ",".join(f"{k}@{v}" for k, v in e.layers.items()),
                ",".join(f"{k}={v[:8]}" for k, v in e.channels.items()),
                e.built_at.strftime("%Y-%m-%dT%H:%M:%SZ"),
            ]
            for e in lock
        ],
    )


@lock_group.command("check")
@common
@backend_option
@offline_option
@click.option("--remote", is_flag=True, help="Also ask the backend for drift (see status).")
@click.option(
    "--same-as",
    "same_as",
    metavar="ENV",
    default=None,
    help="Also exit 1 when a variant was built from other inputs in environment ENV.",
)
@json_option
@pass_env
def lock_check(env: Env, /, backend: str, offline: bool, remote: bool, same_as: str | None, as_json: bool) -> None:
    """Exit 1 when any variant is stale, unbuilt, or locked but undefined (a CI gate)."""
    from e2b_matrix import workflow

    session = env.session(backend=backend, offline=offline)
    checked = workflow.check_lock(session, remote=remote, same_as=same_as)
    if as_json:
        env.json(checked.to_json())
    else:
        for i in checked.bad:
            env.line(f"{i.alias}: {i.state.value}: {'; '.join(i.reasons)}")
        for d in checked.drifted:
            env.line(f"{d.alias}: {d.state}: {'; '.join(d.details)}")
        for m in checked.unlike:
            env.line(m.line())
        if checked.ok:
            env.line(
                f"{session.lock_path}: {len(checked.items)} variants, all fresh"
                + (", in sync" if remote else "")
                + (f", built from the same inputs as in {same_as}" if same_as else "")
            )
    if not checked.ok:
        _exit(1)


def main(argv: Sequence[str] | None = None) -> None:
    cli.main(args=list(argv) if argv is not None else None, prog_name="e2b-matrix")
