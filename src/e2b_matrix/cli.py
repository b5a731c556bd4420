"""The command line: parse, call the workflow, print, map errors to exit codes. Nothing else.

Exit codes: 0 ok; 1 a build or check failed (or a stale lock, or drift); 2 bad
input or configuration; 130 interrupted. e2b is imported only on paths that
talk to E2B.
"""

from __future__ import annotations

import contextlib
import sys

import click

from e2b_matrix import __version__
from e2b_matrix.errors import ConfigError, MatrixError


class Env:
    """What every command shares: the project directory, verbosity and the settings."""

    def __init__(self):
        from pathlib import Path  # a command's, not --version's

        self.root = Path(".")
        self.verbose = 0
        self.quiet = False
        self._settings = None
        self._redactor = None

    @property
    def settings(self):
        if self._settings is None:
            from e2b_matrix.settings import Settings

            self._settings = Settings.from_env()
        return self._settings

    @property
    def redactor(self):
        """One per command: the key is looked up once, not for every line printed."""
        if self._redactor is None:
            from e2b_matrix.secrets import Redactor

            try:
                secrets = self.settings.secrets()
            except MatrixError:  # bad settings: that error is printed, and it holds no key
                secrets = []
            self._redactor = Redactor(secrets)
        return self._redactor

    def session(self, **options):
        from e2b_matrix.workflow import Options, Session

        return Session.open(Options(root=self.root, **options), self.settings)


pass_env = click.make_pass_decorator(Env, ensure=True)


def _json():
    """The json module, imported by the commands that print JSON (not at every start)."""
    import json

    return json


# -- options every command takes, before or after its name ---------------------------

def _set_root(ctx, param, value):
    if value is not None:
        from pathlib import Path

        ctx.ensure_object(Env).root = Path(value)


def _add_verbose(ctx, param, value):
    if value:
        env = ctx.ensure_object(Env)
        env.verbose += value
        _console_logging(env)


def _set_quiet(ctx, param, value):
    if value:
        env = ctx.ensure_object(Env)
        env.quiet = True
        _console_logging(env)


def _check_verbosity(env: Env) -> None:
    if env.quiet and env.verbose:
        raise ConfigError("-q and -v ask for less and more output; give one", key="-q")


def common(f):
    for option in (
        click.option("-C", "directory", metavar="DIR", type=click.Path(file_okay=False), default=None,
                     expose_value=False, callback=_set_root,
                     help="Project directory (variants/, the lock, logs/). Default: here."),
        click.option("-v", "--verbose", count=True, expose_value=False, callback=_add_verbose,
                     help="More output (-vv for debug)."),
        click.option("-q", "--quiet", is_flag=True, expose_value=False, callback=_set_quiet,
                     help="Only errors and the result."),
    ):
        f = option(f)
    return f


class RegistryChoice(click.ParamType):
    """One of the values a registry has when the command runs (a backend added later is known)."""

    def __init__(self, name: str, values):
        self.name, self.values = name, values

    def get_metavar(self, *args, **kwargs) -> str:
        return "[" + "|".join(self.values()) + "]"

    def convert(self, value, param, ctx):
        if value in self.values():
            return value
        self.fail(f"{value!r} is not one of {', '.join(self.values())}", param, ctx)


def _backend_names():
    from e2b_matrix import backends

    return backends.names()


def _render_formats():
    from e2b_matrix import backends

    return backends.formats()


def _default_backend() -> str:
    from e2b_matrix import backends

    return backends.DEFAULT


def backend_option(f):
    return click.option("--backend", type=RegistryChoice("backend", _backend_names), default=_default_backend,
                        help="Where to build: on E2B (the default), or locally with Docker.")(f)


def backend_own_options(f):
    """Each backend's own options (data in backends/), as click options."""
    from e2b_matrix import backends

    for name, o in reversed(backends.all_options()):
        f = click.option(o.flag, o.dest, multiple=o.multiple, type=click.Path(dir_okay=False) if o.path else str,
                         help=f"{o.help} [--backend {name}]")(f)
    return f


offline_option = click.option("--offline", is_flag=True,
                              help='Resolve "latest" from the lock, else the index cache; never ask the index.')
set_option = click.option("--set", "overrides", multiple=True, metavar="LAYER.PARAM=VALUE",
                          help="Override a layer parameter for this run (repeatable).")
json_option = click.option("--json", "as_json", is_flag=True, help="Print JSON for machines.")


def _backend_values(kwargs: dict) -> dict:
    from e2b_matrix import backends

    return {o.dest: kwargs.pop(o.dest) for _, o in backends.all_options() if o.dest in kwargs}


class MatrixGroup(click.Group):
    """Maps the one error root to exit codes: bad input 2 without a traceback, Ctrl-C 130.

    Everything a command prints (plain lines, the live table, JSON, errors, log lines) passes
    one redactor: stdout and stderr are secrets.RedactedStream while it runs.
    """

    def make_context(self, info_name, args, parent=None, **extra):
        try:
            return super().make_context(info_name, args, parent, **extra)
        except MatrixError as exc:  # an option's own check, before any command ran (-v with -q)
            click.echo(f"e2b-matrix: error: {exc}", err=True)
            sys.exit(exc.exit_code)

    def invoke(self, ctx):
        env = ctx.ensure_object(Env)
        with _redacted_output(env.redactor):
            try:
                return super().invoke(ctx)
            except MatrixError as exc:
                click.echo(f"e2b-matrix: error: {exc}", err=True)
                ctx.exit(exc.exit_code)
            except KeyboardInterrupt:
                click.echo("e2b-matrix: interrupted", err=True)
                ctx.exit(130)


@contextlib.contextmanager
def _redacted_output(redactor):
    from e2b_matrix.secrets import RedactedStream

    saved = sys.stdout, sys.stderr
    sys.stdout, sys.stderr = RedactedStream(saved[0], redactor), RedactedStream(saved[1], redactor)
    try:
        yield
    finally:
        for stream in (sys.stdout, sys.stderr):
            stream.flush()
        sys.stdout, sys.stderr = saved


@click.group(cls=MatrixGroup, context_settings={"help_option_names": ["-h", "--help"]})
@common
@click.version_option(__version__, prog_name="e2b-matrix")
@pass_env
def cli(env):
    """Build E2B sandbox template variants from layers and lock their builds."""
    env.settings  # noqa: B018 - every variable is validated before any command runs
    _console_logging(env)


# -- reading the project -------------------------------------------------------------

@cli.command("list")
@common
@json_option
@pass_env
def list_cmd(env, as_json):
    """List the variants and their layers."""
    from e2b_matrix.config import load_project

    rows = [{"name": v.name, "alias": v.alias, "layers": list(v.layers), "cpu_count": v.cpu_count,
             "memory_mb": v.memory_mb, "tags": list(v.tags), "file": v.source, "description": v.description}
            for v in load_project(env.root, env.settings.secrets()).variants]
    if as_json:
        click.echo(_json().dumps(rows, indent=2))
        return
    _table(["NAME", "ALIAS", "LAYERS", "CPU", "MEMORY"],
           [[r["name"], r["alias"], ",".join(r["layers"]), str(r["cpu_count"]), f"{r['memory_mb']} MiB"]
            for r in rows])


def _plan(env, names, backend, offline, overrides, backend_values):
    from e2b_matrix import workflow

    session = env.session(names=names, backend=backend, offline=offline, overrides=overrides,
                          backend_options=backend_values)
    return session, workflow.planned(session)[2]


def _index_note(session) -> None:
    for url in session.index.asked:
        click.echo(f"note: asked the package index: {url}", err=True)


@cli.command()
@common
@click.argument("names", nargs=-1)
@backend_option
@offline_option
@set_option
@backend_own_options
@click.option("--format", "fmt", type=click.Choice(["table", "json", "markdown"]), default=None,
              help="A table and the shared steps (the default); JSON; or Markdown for a CI job summary.")
@json_option
@pass_env
def plan(env, names, backend, offline, overrides, fmt, as_json, **kwargs):
    """Show what would build and why (fresh, stale, unbuilt), without building."""
    from e2b_matrix.plan import markdown, step_trie, trie_json, trie_lines

    if as_json and fmt not in (None, "json"):
        raise ConfigError(f"--json and --format {fmt} ask for two outputs; give one", key="--json")
    session, items = _plan(env, names, backend, offline, overrides, _backend_values(kwargs))
    roots = step_trie(i.spec for i in items)
    if as_json or fmt == "json":
        click.echo(_json().dumps({"variants": [i.to_json() for i in items], "steps": [trie_json(r) for r in roots]},
                              indent=2))
    elif fmt == "markdown":
        click.echo(markdown(items, roots), nl=False)
    else:
        _table(["NAME", "ALIAS", "STATE", "PYTHON", "LAYERS", "WHY"],
               [[i.name, i.alias, i.state.value, i.python or "", ",".join(f"{k}@{v}" for k, v in i.layers.items()),
                 "; ".join(i.reasons)] for i in items])
        if not env.quiet:
            click.echo("\nsteps the variants share (a change rebuilds the variants below it):")
            for line in trie_lines(roots):
                click.echo(f"  {line}")
    _index_note(session)


@cli.command()
@common
@click.argument("name")
@click.option("--format", "fmt", type=RegistryChoice("format", _render_formats), default="json", show_default=True,
              help="E2B's build API body (json) or a Dockerfile.")
@offline_option
@set_option
@backend_own_options
@pass_env
def render(env, name, fmt, offline, overrides, **kwargs):
    """Print a variant as E2B's build API body (json) or as a Dockerfile."""
    from e2b_matrix import backends, workflow

    session = env.session(names=(name,), backend=backends.by_format(fmt), offline=offline, overrides=overrides,
                          backend_options=_backend_values(kwargs))
    text = workflow.render(session, name)
    click.echo(text, nl=not text.endswith("\n"))


@cli.command("compile")
@common
@click.argument("names", nargs=-1)
@backend_option
@click.option("-U", "--upgrade", is_flag=True, help="Re-resolve every package, ignoring the pins in the files.")
@click.option("-P", "--upgrade-package", "packages", multiple=True, metavar="PKG",
              help="Re-resolve only PKG, keeping every other pin (repeatable).")
@click.option("--check", is_flag=True,
              help="Write nothing and never run uv: exit 1 when a file is missing or out of date (CI).")
@set_option
@backend_own_options
@json_option
@pass_env
def compile_cmd(env, names, backend, upgrade, packages, check, overrides, as_json, **kwargs):
    """Pin and hash every pip step's packages (uv) into committed requirements files."""
    from e2b_matrix import workflow

    session = env.session(names=names, backend=backend, overrides=overrides, backend_options=_backend_values(kwargs))
    _, results = workflow.compile_requirements(session, upgrade=upgrade, packages=packages, check=check)
    if as_json:
        click.echo(_json().dumps([{"path": c.path, "layer": c.layer, "status": c.status, "ok": c.ok,
                                "packages": c.packages, "bytes": c.size, "variants": c.variants}
                               for c in results], indent=2))
    else:
        _table(["FILE", "STATUS", "PACKAGES", "VARIANTS"],
               [[c.path, c.status, str(c.packages) if c.ok else "", ",".join(c.variants)] for c in results])
        if not results:
            click.echo("no pip steps: nothing to compile", err=True)
    if not all(c.ok for c in results):
        sys.exit(1)


# -- building --------------------------------------------------------------------------

def build_options(f):
    """The options every build command takes."""
    for option in reversed([
        common, backend_option,
        click.option("-j", "--jobs", type=click.IntRange(1), default=None,
                     help="Builds at most at once (default and ceiling: the team's E2B_MATRIX_TEAM_BUILDS, 20)."),
        click.option("--force", is_flag=True, help="Rebuild fresh variants too, skipping the layer cache."),
        click.option("--fail-fast", is_flag=True, help="After a failure start nothing new and stop the rest."),
        click.option("--no-wait", is_flag=True,
                     help="Fail at once when another process is building the same alias."),
        click.option("--verify", is_flag=True,
                     help="Run the smoke checks before a build becomes the lock's truth."),
        click.option("--promote", metavar="CHANNEL", default=None,
                     help="Point CHANNEL at each variant that built (and passed --verify) or was fresh."),
        click.option("--no-share", is_flag=True,
                     help="Start every build at once, each running the steps it shares with others."),
        click.option("--locked", is_flag=True,
                     help="Refuse (exit 2) instead of compiling a missing or out-of-date requirements file (CI)."),
        offline_option, set_option, backend_own_options, json_option,
    ]):
        f = option(f)
    return f


@cli.command()
@click.argument("names", nargs=-1, required=True)
@build_options
@pass_env
def build(env, names, **options):
    """Build the named variants concurrently and record them in the lock."""
    _build(env, names, **options)


@cli.command("build-all")
@build_options
@pass_env
def build_all(env, **options):
    """Build every variant concurrently and record them in the lock."""
    _build(env, (), **options)


def _build(env, names, backend, jobs, force, fail_fast, no_wait, verify, promote, no_share, locked, offline,
           overrides, as_json, **kwargs):
    import signal

    from e2b_matrix import workflow
    from e2b_matrix.progress import make_reporter, summary

    options = workflow.Options(root=env.root, names=names, backend=backend, backend_options=_backend_values(kwargs),
                               overrides=overrides, offline=offline, force=force, jobs=jobs, fail_fast=fail_fast,
                               wait=not no_wait, verify=verify, promote=promote, share=not no_share, locked=locked)
    previous = signal.signal(signal.SIGTERM, _raise_interrupt)
    try:
        with make_reporter(env.verbose, env.quiet, as_json) as reporter:
            result = workflow.build(options, env.settings, reporter)
    finally:
        signal.signal(signal.SIGTERM, previous)
    if as_json:  # what the reporter heard finish, as the plain lines and the run log did
        click.echo(_json().dumps(reporter.json(), indent=2))
    else:
        summary(result.results)
    if result.error:
        click.echo(f"e2b-matrix: error: {result.error}", err=True)
    if result.exit_code == 130:
        click.echo("e2b-matrix: interrupted; finished builds are in the lock", err=True)
    sys.exit(result.exit_code)


def _raise_interrupt(signum, frame):
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
def verify(env, name, backend, offline, overrides, as_json, **kwargs):
    """Run the variant's smoke checks against its locked build and record what it holds; exit 1 on any failure."""
    from e2b_matrix import workflow
    from e2b_matrix.model import State

    session = env.session(names=(name,), backend=backend, offline=offline, overrides=overrides,
                          backend_options=_backend_values(kwargs))
    done = workflow.verify(session)
    item, report, results = done.item, done.report, done.report.results
    if item.state is not State.FRESH:
        click.echo(f"warning: {item.alias} is stale; the built template was checked against the current layers",
                   err=True)
    if as_json:
        click.echo(_json().dumps([{"check": r.name, "layer": r.layer, "ok": r.ok, "detail": r.detail,
                                "duration_s": r.duration_s, "found": {r.fact: r.found} if r.found else {}}
                               for r in results], indent=2))
    else:
        _table(["CHECK", "LAYER", "RESULT", "DETAIL"],
               [[r.name, r.layer, "ok" if r.ok else "FAILED", r.reason] for r in results])
        found = "".join(f"; {fact} {version}" for fact, version in report.found.items())
        click.echo(f"{item.name}: {sum(r.ok for r in results)}/{len(results)} checks passed{found}")
        inv = done.inventory
        if inv is not None:
            click.echo(f"inventory of build {inv.build_id}: {len(inv.pip)} Python packages, {len(inv.apt)} apt packages")
    if not report.ok:
        sys.exit(1)


@cli.command()
@common
@click.argument("name")
@click.argument("old", metavar="[FROM", required=False, default="previous")
@click.argument("new", metavar="[TO]]", required=False, default="current")
@backend_option
@json_option
@pass_env
def diff(env, name, old, new, backend, as_json):
    """Packages added, removed and changed between two builds (IDs, channels, previous, current)."""
    from e2b_matrix import workflow

    d = workflow.diff(env.session(backend=backend), name, old, new)
    if as_json:
        click.echo(_json().dumps(d.to_json(), indent=2))
        return
    _print_diff(d)


def _print_diff(d, indent: str = "") -> None:
    click.echo(f"{indent}{d.alias}: build {d.before} -> {d.after}: {d.counts()}")
    for c in d.changes:
        click.echo(f"{indent}  {c.line()}")


# -- releases --------------------------------------------------------------------------

@cli.command()
@common
@click.argument("name", required=False)
@backend_option
@click.option("--id", "bare", is_flag=True, help="The bare template ID (E2B: its default channel).")
@click.option("--channel", metavar="CHANNEL", default=None, help="<alias>:<CHANNEL>: what CHANNEL points at.")
@pass_env
def resolve(env, name, backend, bare, channel):
    """Print a variant's pinned build from the lock, for shells (no NAME: latest, or E2B_TEMPLATE_ID)."""
    from e2b_matrix import workflow

    click.echo(workflow.reference(env.session(backend=backend), name, bare=bare, channel=channel))
    if bare:
        click.echo("note: a bare template ID means its default channel, not the pinned build", err=True)


@cli.command()
@common
@click.argument("names", nargs=-1, required=True)
@click.option("--channel", default="default", show_default=True, help="The channel (an E2B tag) to move.")
@backend_option
@pass_env
def promote(env, names, channel, backend):
    """Point a channel at each variant's locked build, and record it in the lock."""
    from e2b_matrix import workflow
    from e2b_matrix.progress import promoted

    for e, moved in workflow.promote(env.session(backend=backend), names, channel):
        click.echo(promoted(e, channel))
        if moved is not None:
            _print_diff(moved, "  ")


@cli.command()
@common
@click.argument("name")
@backend_option
@pass_env
def rollback(env, name, backend):
    """Return a variant to its previous build; channels promoted to the current one follow."""
    from e2b_matrix import workflow
    from e2b_matrix.progress import rolled_back

    click.echo(rolled_back(*workflow.rollback(env.session(backend=backend), name)))


@cli.command()
@common
@click.argument("names", nargs=-1)
@backend_option
@json_option
@pass_env
def status(env, names, backend, as_json):
    """Compare the backend's channels with the lock (drift); exit 1 on any."""
    from e2b_matrix import workflow

    drift = workflow.status(env.session(backend=backend), names)
    _print_drift(drift, as_json)
    if not all(d.ok for d in drift):
        sys.exit(1)


def _print_drift(drift, as_json: bool) -> None:
    if as_json:
        click.echo(_json().dumps([{"alias": d.alias, "variant": d.variant, "state": d.state, "ok": d.ok,
                                "details": list(d.details), "channels": dict(d.channels)} for d in drift], indent=2))
        return
    _table(["ALIAS", "VARIANT", "STATE", "DETAILS"],
           [[d.alias, d.variant, d.state, "; ".join(d.details)] for d in drift])


# -- a local E2B -----------------------------------------------------------------------

def _emulator_modes():
    from e2b_matrix.emulator.serve import MODES  # when the option is parsed: emulate's, not list's

    return MODES


@cli.command()
@common
@click.option("--mode", type=RegistryChoice("mode", lambda: _emulator_modes()), default="auto", show_default=True,
              help="docker: run each build's steps and each sandbox in Docker; timing: model build times only; "
                   "auto: docker when a daemon answers.")
@click.option("--step-cost", type=click.FloatRange(min=0), default=0.05, show_default=True,
              help="Seconds a build step that misses the cache takes [timing mode].")
@click.option("--env-file", type=click.Path(dir_okay=False), default=None,
              help="Also write the export lines to this file once serving (for scripts).")
@pass_env
def emulate(env, mode, step_cost, env_file):
    """Run a local E2B on 127.0.0.1 until Ctrl-C; print the variables to export (docs/emulator.md)."""
    from pathlib import Path

    from e2b_matrix.emulator.serve import ModeUnavailable, serve

    settings = env.settings
    try:
        serve(mode, step_cost=step_cost, env_file=None if env_file is None else Path(env_file),
              say=lambda line: click.echo(line, err=True), out=click.echo,
              docker_cli=settings.docker_cli, buildkit=settings.docker_buildkit)
    except ModeUnavailable as exc:
        raise ConfigError(str(exc), key="--mode docker") from None


# -- the lock --------------------------------------------------------------------------

@cli.group("lock")
@common
def lock_group():
    """Read and check the lock file."""


@lock_group.command("show")
@common
@backend_option
@json_option
@pass_env
def lock_show(env, backend, as_json):
    """Show the lock's entries."""
    session = env.session(backend=backend)
    lock = session.lock()
    if as_json:
        click.echo(_json().dumps({e.alias: _entry_json(e) for e in lock}, indent=2))
        return
    if not lock.exists:
        click.echo(f"{lock.path}: no lock yet (build first: {session.backend.regenerate})", err=True)
        return
    _table(["ALIAS", "VARIANT", "TEMPLATE ID", "BUILD ID", "LAYERS", "CHANNELS", "BUILT AT"],
           [[e.alias, e.variant, e.template_id, e.build_id,
             ",".join(f"{k}@{v}" for k, v in e.layers.items()),
             ",".join(f"{k}={v[:8]}" for k, v in e.channels.items()),
             e.built_at.strftime("%Y-%m-%dT%H:%M:%SZ")] for e in lock])


@lock_group.command("check")
@common
@backend_option
@offline_option
@click.option("--remote", is_flag=True, help="Also ask the backend for drift (see status).")
@json_option
@pass_env
def lock_check(env, backend, offline, remote, as_json):
    """Exit 1 when any variant is stale, unbuilt, or locked but undefined (a CI gate)."""
    from e2b_matrix import workflow
    from e2b_matrix.model import State

    session = env.session(backend=backend, offline=offline)
    items = workflow.check_lock(session)
    bad = [i for i in items if i.state is not State.FRESH]
    drift = workflow.status(session) if remote else []
    drifted = [d for d in drift if not d.ok]
    if as_json:
        click.echo(_json().dumps({"ok": not bad and not drifted, "items": [i.to_json() for i in items],
                               "drift": [{"alias": d.alias, "state": d.state, "details": list(d.details)}
                                         for d in drift]}, indent=2))
    else:
        for i in bad:
            click.echo(f"{i.alias}: {i.state.value}: {'; '.join(i.reasons)}")
        for d in drifted:
            click.echo(f"{d.alias}: {d.state}: {'; '.join(d.details)}")
        if not bad and not drifted:
            click.echo(f"{session.lock_path}: {len(items)} variants, all fresh" + (", in sync" if remote else ""))
    if bad or drifted:
        sys.exit(1)


# -- helpers ---------------------------------------------------------------------------

def _entry_json(e) -> dict:
    d = e.to_dict()
    d["built_at"] = e.built_at.strftime("%Y-%m-%dT%H:%M:%SZ")
    d["reference"] = e.reference
    for b in d.get("history", []):
        b["built_at"] = b["built_at"].strftime("%Y-%m-%dT%H:%M:%SZ")
    return d


def _table(headers: list[str], rows: list[list[str]]) -> None:
    from e2b_matrix.progress import print_table

    print_table(headers, rows)


_console_handler = None  # logging.Handler, once -v or -q asked for one


def _console_logging(env: Env) -> None:
    """Our one stderr handler (replaced when -v/-q change), redacting secrets even at -vv.

    -v shows the tool's steps; -vv debug lines and each HTTP request (a build polls E2B every 0.2 s).
    """
    global _console_handler
    import logging

    from e2b_matrix.logs import RedactingFormatter

    _check_verbosity(env)

    root = logging.getLogger()
    if _console_handler is not None:
        root.removeHandler(_console_handler)
    _console_handler = logging.StreamHandler(sys.stderr)
    _console_handler.setFormatter(RedactingFormatter("%(levelname)s %(name)s: %(message)s", env.redactor,
                                                     datefmt=None))
    root.addHandler(_console_handler)
    root.setLevel(logging.WARNING if env.quiet else logging.DEBUG if env.verbose >= 2 else
                  logging.INFO if env.verbose else logging.WARNING)
    _console_handler.setLevel(root.level)  # a logger a run log turns up (uv's output) still needs -v here
    for name in ("httpx", "httpcore", "h2", "hpack", "pyqwest", "urllib3"):  # HTTP clients: a line a request
        logging.getLogger(name).setLevel(logging.NOTSET if env.verbose >= 2 else logging.WARNING)


def main(argv=None) -> None:
    cli.main(args=argv, prog_name="e2b-matrix")
