"""The command line: parse, call the library, map errors to exit codes. Nothing else.

Exit codes: 0 ok; 1 a build or check failed (or a stale lock); 2 bad input or
configuration; 130 interrupted. e2b is imported only on paths that build.
"""

from __future__ import annotations

import json
import logging
import os
import sys
from pathlib import Path

import click

from e2b_matrix import __version__
from e2b_matrix.errors import ConfigError, MatrixError, UnknownNameError

class Env:
    """What every command shares: the project directory and verbosity."""

    def __init__(self, directory: str, verbose: int, quiet: bool):
        self.root = Path(directory)
        self.verbose = verbose
        self.quiet = quiet
        self._index = None

    def project(self, overrides=()):
        from e2b_matrix.config import apply_overrides, load_project

        return apply_overrides(load_project(self.root), overrides)

    def lock(self, backend: str = "e2b"):
        from e2b_matrix.lock import LOCK_FILES, TemplateLock

        return TemplateLock.load(self.root / LOCK_FILES[backend])

    def options(self, backend="e2b", offline=False, ca_certs=()):
        from e2b_matrix.resolve import Options, read_ca_certs
        from e2b_matrix.versions import PyPIIndex

        if self._index is None:  # one index per run: its look-ups are memoised
            self._index = PyPIIndex()
        return Options(backend=backend, index=self._index, offline=offline, ca_certs=read_ca_certs(ca_certs))

    def specs(self, names, opts, overrides=()):
        """The project, its lock for ``opts.backend`` and the selected variants' specs."""
        from e2b_matrix.resolve import build_specs

        project = self.project(overrides)
        lock = self.lock(opts.backend)
        return project, lock, build_specs(project.select(names), project.layers, opts, lock)

    def respec(self, spec, project, opts):
        """A spec again, against the lock as it is now (its parent template was rebuilt)."""
        from e2b_matrix.resolve import build_spec

        return build_spec(spec.variant, project.layers, opts, self.lock(opts.backend))


pass_env = click.make_pass_decorator(Env)

backend_option = click.option("--backend", type=click.Choice(["e2b", "docker"]), default="e2b",
                              show_default=True, help="Build on E2B, or locally with Docker.")
offline_option = click.option("--offline", is_flag=True,
                              help='Resolve "latest" to the versions recorded in the lock; no index look-up.')
set_option = click.option("--set", "overrides", multiple=True, metavar="LAYER.PARAM=VALUE",
                          help="Override a layer parameter for this run (repeatable).")
ca_option = click.option("--ca-cert", "ca_certs", multiple=True, type=click.Path(dir_okay=False),
                         help="CA certificate (PEM) to install in Docker builds (repeatable).")
json_option = click.option("--json", "as_json", is_flag=True, help="Print JSON for machines.")


class MatrixGroup(click.Group):
    """Maps the one error root to exit codes: bad input 2 without a traceback, Ctrl-C 130."""

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except UnknownNameError as exc:
            click.echo(f"e2b-matrix: {exc}", err=True)
            ctx.exit(exc.exit_code)
        except MatrixError as exc:
            click.echo(f"e2b-matrix: error: {exc}", err=True)
            ctx.exit(exc.exit_code)
        except KeyboardInterrupt:
            click.echo("e2b-matrix: interrupted", err=True)
            ctx.exit(130)


@click.group(cls=MatrixGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.option("-C", "directory", default=".", metavar="DIR", type=click.Path(file_okay=False),
              help="Project directory (variants/, the lock, logs/). Default: here.")
@click.option("-v", "--verbose", count=True, help="More output (-vv for debug).")
@click.option("-q", "--quiet", is_flag=True, help="Only errors and the result.")
@click.version_option(__version__, prog_name="e2b-matrix")
@click.pass_context
def cli(ctx, directory, verbose, quiet):
    """Build E2B sandbox template variants from layers and lock their IDs."""
    ctx.obj = Env(directory, verbose, quiet)
    level = logging.WARNING if quiet else (logging.DEBUG if verbose >= 2 else logging.INFO if verbose else
                                           logging.WARNING)
    _console_logging(level)


@cli.command("list")
@json_option
@pass_env
def list_cmd(env, as_json):
    """List the variants and their layers."""
    project = env.project()
    rows = [{"name": v.name, "alias": v.alias, "layers": list(v.layers), "cpu_count": v.cpu_count,
             "memory_mb": v.memory_mb, "tags": list(v.tags), "file": v.source, "description": v.description}
            for v in project.variants]
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    _table(["NAME", "ALIAS", "LAYERS", "CPU", "MEMORY"],
           [[r["name"], r["alias"], ",".join(r["layers"]), str(r["cpu_count"]), f"{r['memory_mb']} MiB"]
            for r in rows])


@cli.command()
@click.argument("names", nargs=-1)
@backend_option
@offline_option
@set_option
@ca_option
@json_option
@pass_env
def plan(env, names, backend, offline, overrides, ca_certs, as_json):
    """Show what would build and why (fresh, stale, unbuilt), without building."""
    from e2b_matrix.plan import make_plan

    _, lock, specs = env.specs(names, env.options(backend, offline, ca_certs), overrides)
    items = make_plan(specs, lock)
    if as_json:
        click.echo(json.dumps([i.to_json() for i in items], indent=2))
        return
    _table(["NAME", "ALIAS", "STATE", "WHY"],
           [[i.name, i.alias, i.state.value, "; ".join(i.reasons)] for i in items])


@cli.command()
@click.argument("name")
@click.option("--format", "fmt", type=click.Choice(["json", "dockerfile"]), default="json", show_default=True)
@backend_option
@offline_option
@set_option
@ca_option
@pass_env
def render(env, name, fmt, backend, offline, overrides, ca_certs):
    """Print a variant as E2B's build API body (json) or as a Dockerfile."""
    from e2b_matrix import render as r

    if fmt == "dockerfile":
        backend = "docker"
    _, _, specs = env.specs([name], env.options(backend, offline, ca_certs), overrides)
    spec = specs[0]
    click.echo(r.dockerfile(spec) if fmt == "dockerfile" else r.to_json(spec), nl=fmt == "json")


def build_options(f):
    """The options every build command takes."""
    for option in reversed([
        backend_option,
        click.option("-j", "--jobs", type=click.IntRange(1, 20), default=None,
                     help="Builds at once (default: every selected variant, at most 8; at most 20)."),
        click.option("--force", is_flag=True, help="Rebuild fresh variants too, skipping E2B's layer cache."),
        click.option("--fail-fast", is_flag=True, help="After a failure start nothing new and stop the rest."),
        click.option("--no-wait", is_flag=True,
                     help="Fail at once when another process is building the same alias."),
        click.option("--verify", is_flag=True,
                     help="Run the smoke checks before a build becomes the lock's truth."),
        offline_option, set_option, ca_option, json_option,
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


def _build(env, names, backend, jobs, force, fail_fast, no_wait, verify, offline, overrides, ca_certs, as_json):
    from e2b_matrix import stamp

    rec = stamp.recording(backend, force, click.get_current_context().info_name, dict(
        names=names, backend=backend, jobs=jobs, fail_fast=fail_fast, no_wait=no_wait, verify=verify,
        offline=offline, overrides=overrides, ca_certs=ca_certs, as_json=as_json), env.root, env.verbose, env.quiet)
    code = rec.replay()  # a no-op like the last one answers from its stamp
    if code is None:
        with rec:
            code, results = _run_build(env, names, backend, jobs, force, fail_fast, no_wait, verify, offline,
                                       overrides, ca_certs, as_json, rec.out, rec.err)
            rec.noop = code == 0 and bool(results) and all(r.status.value == "fresh" for r in results)
    raise SystemExit(code)


def _run_build(env, names, backend, jobs, force, fail_fast, no_wait, verify, offline, overrides, ca_certs,
               as_json, out, err):
    """Resolve, build what is not fresh, report; (exit code, results)."""
    import signal

    from e2b_matrix import build as b
    from e2b_matrix.backends import get_backend
    from e2b_matrix.logs import RunLogs
    from e2b_matrix.progress import make_reporter, results_json, summary

    opts = env.options(backend, offline, ca_certs)
    project, lock, specs = env.specs(names, opts, overrides)
    engine = get_backend(backend, **({"ca_certs": opts.ca_certs} if backend == "docker" else {}))
    engine.check()
    logs = RunLogs(env.root / "logs", engine.secrets())
    redact = logs.redactor.redact
    runner = b.Runner(
        backend=engine, lock_path=project.lock_path(backend), state_dir=env.root / ".e2b-matrix", logs=logs,
        report=None, jobs=jobs or b.default_jobs(len(specs)), force=force, fail_fast=fail_fast,
        wait_for_alias=not no_wait, retry=b.RetryPolicy.from_env(),
        verify=_verifier(engine) if verify else None,
        respec=lambda spec: env.respec(spec, project, opts))
    previous = signal.signal(signal.SIGTERM, _raise_interrupt)
    try:
        with make_reporter([s.name for s in specs], redact, env.verbose, env.quiet, as_json, out, err) as reporter:
            runner.report = reporter
            results = runner.run(b.make_jobs(specs, lock))
    finally:
        signal.signal(signal.SIGTERM, previous)
        logs.close()
    if as_json:
        click.echo(json.dumps(results_json(results), indent=2), file=out)
    else:
        summary(results, redact, out, err)
    if runner.fatal is not None:
        click.echo(f"e2b-matrix: error: {redact(str(runner.fatal))}", file=err)
    code = b.exit_code(runner, results)
    if code == 130:
        click.echo("e2b-matrix: interrupted; finished builds are in the lock", file=err)
    return code, results


_console_handler: logging.Handler | None = None


def _console_logging(level: int) -> None:
    """Our one stderr handler (replaced per invocation), redacting the API key even at -vv."""
    global _console_handler
    from e2b_matrix.logs import RedactingFormatter, Redactor

    root = logging.getLogger()
    if _console_handler is not None:
        root.removeHandler(_console_handler)
    _console_handler = logging.StreamHandler(sys.stderr)
    _console_handler.setFormatter(RedactingFormatter("%(levelname)s %(name)s: %(message)s",
                                                     Redactor([os.environ.get("E2B_API_KEY", "")]), datefmt=None))
    root.addHandler(_console_handler)
    root.setLevel(level)


def _raise_interrupt(signum, frame):
    raise KeyboardInterrupt


def _verifier(engine):
    from e2b_matrix.verify import verifier

    return verifier(engine)


@cli.command()
@click.argument("name")
@backend_option
@offline_option
@set_option
@json_option
@pass_env
def verify(env, name, backend, offline, overrides, as_json):
    """Run the variant's smoke checks against its built template; exit 1 on any failure."""
    from e2b_matrix import verify as v
    from e2b_matrix.backends import get_backend

    _, lock, specs = env.specs([name], env.options(backend, offline), overrides)
    spec = specs[0]
    if spec.alias not in lock.entries:
        raise ConfigError(f"{spec.name} is not built yet (no entry for {spec.alias}); build it first",
                          path=lock.path)
    entry = lock.entries[spec.alias]
    engine = get_backend(backend)
    engine.check()
    if entry.fingerprint != spec.fingerprint:
        click.echo(f"warning: {spec.alias} is stale; checking the built template against the current layers",
                   err=True)
    results = v.check_built(engine, spec, entry)
    if as_json:
        click.echo(json.dumps([{"check": r.name, "layer": r.layer, "ok": r.ok, "detail": r.detail,
                                "duration_s": r.duration_s} for r in results], indent=2))
    else:
        _table(["CHECK", "LAYER", "RESULT", "DETAIL"],
               [[r.name, r.layer, "ok" if r.ok else "FAILED", r.detail] for r in results])
    failed = [r for r in results if not r.ok]
    if not as_json:
        click.echo(f"{spec.name}: {len(results) - len(failed)}/{len(results)} checks passed")
    if failed:
        raise SystemExit(1)


@cli.command()
@click.argument("name")
@backend_option
@pass_env
def resolve(env, name, backend):
    """Print the template ID of a variant or alias (E2B_TEMPLATE_ID wins)."""
    from_env = os.environ.get("E2B_TEMPLATE_ID")
    click.echo(from_env if from_env else env.lock(backend).template_id(name))


@cli.group("lock")
def lock_group():
    """Read and check the lock file."""


@lock_group.command("show")
@backend_option
@json_option
@pass_env
def lock_show(env, backend, as_json):
    """Show the lock's entries."""
    lock = env.lock(backend)
    if as_json:
        click.echo(json.dumps({e.alias: _entry_json(e) for e in lock}, indent=2))
        return
    _table(["ALIAS", "VARIANT", "TEMPLATE ID", "BUILD ID", "LAYERS", "BUILT AT"],
           [[e.alias, e.variant, e.template_id, e.build_id,
             ",".join(f"{k}@{v}" for k, v in sorted(e.layers.items())),
             e.built_at.strftime("%Y-%m-%dT%H:%M:%SZ")] for e in lock])


@lock_group.command("check")
@backend_option
@offline_option
@json_option
@pass_env
def lock_check(env, backend, offline, as_json):
    """Exit 1 when any variant is stale, unbuilt, or locked but undefined (a CI gate)."""
    from e2b_matrix.plan import State, make_plan, orphans

    project, lock, specs = env.specs((), env.options(backend, offline))
    items = make_plan(specs, lock) + orphans(lock, [v.alias for v in project.variants])
    bad = [i for i in items if i.state is not State.FRESH]
    if as_json:
        click.echo(json.dumps({"ok": not bad, "items": [i.to_json() for i in items]}, indent=2))
    else:
        for i in bad:
            click.echo(f"{i.alias}: {i.state.value}: {'; '.join(i.reasons)}")
        if not bad:
            click.echo(f"{lock.path}: {len(items)} variants, all fresh")
    if bad:
        raise SystemExit(1)


# -- helpers -------------------------------------------------------------------

def _entry_json(e) -> dict:
    d = e.to_dict()
    d["built_at"] = e.built_at.strftime("%Y-%m-%dT%H:%M:%SZ")
    return d


def _table(headers: list[str], rows: list[list[str]]) -> None:
    from e2b_matrix.progress import print_table

    print_table(headers, rows)


def main(argv=None) -> None:
    cli.main(args=argv, prog_name="e2b-matrix")
