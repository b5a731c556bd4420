"""Property tests (hypothesis) for what parses and writes the lock, and for the resolver.

The strategies draw from the rules themselves (``names.py``'s patterns and checks), so a rule that
changes changes what is drawn: whatever the rules accept must survive the lock's writer and reader,
the CLI, and the resolver's lookups.
"""

from __future__ import annotations

import datetime as dt
import json
import re
import string
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, assume, event, given, settings
from hypothesis import strategies as st

from conftest import cli_runner
from e2b_matrix import names
from e2b_matrix.cli import cli
from e2b_matrix.errors import LockError
from e2b_matrix.lock import Build, LockEntry, TemplateLock, UnknownNameError, dumps, loads
from e2b_matrix.lock.model import HISTORY_LIMIT
from e2b_matrix.lock.resolver import TemplateResolver

# Many examples, each cheap; no deadline (a loaded CI machine is slow, not wrong). The suite runs
# the same examples every time (derandomize): a red run is reproducible, never a roll of the dice.
settings.register_profile(
    "e2b-matrix",
    max_examples=100,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
settings.load_profile("e2b-matrix")


def accepted(strategy: st.SearchStrategy[Any], check: Callable[[Any], Any]) -> st.SearchStrategy[Any]:
    """What ``strategy`` draws that ``check`` accepts (a pattern is only part of some rules)."""

    def ok(value: Any) -> bool:
        try:
            check(value)
        except ValueError:
            return False
        return True

    return strategy.filter(ok)


def pattern(regex: re.Pattern[str], longest: int = 40) -> st.SearchStrategy[str]:
    """Whole matches of one of names.py's patterns, cut to ``longest`` characters (``accepted`` checks
    what is left: a cut match is one too, for most patterns)."""
    return st.from_regex(regex, fullmatch=True).map(lambda s: s[:longest])


aliases = accepted(pattern(names.ALIAS), names.check_alias)
variants = accepted(pattern(names.NAME), names.check_name)
# An ID: drawn from the characters LOCK_ID allows (drawing from its 200-character pattern is slow).
lock_ids = accepted(
    st.text(string.ascii_letters + string.digits + "._:/@+-", min_size=1, max_size=60), names.check_lock_id
)
fingerprints = st.binary(min_size=32, max_size=32).map(lambda b: "sha256:" + b.hex())
layers = st.dictionaries(
    accepted(pattern(names.NAME, 20), names.check_layer_name),
    accepted(pattern(names.LAYER_VERSION, 20), names.check_layer_version),
    max_size=4,
)
times = st.datetimes(
    min_value=dt.datetime(1970, 1, 2),
    max_value=dt.datetime(9999, 12, 30),
    timezones=st.sampled_from(
        [dt.UTC, dt.timezone(dt.timedelta(hours=5, minutes=30)), dt.timezone(-dt.timedelta(hours=8))]
    ),
)
hosts = accepted(pattern(names.HOST, 60), names.check_host)
urls = st.builds(
    lambda scheme, host, path: f"{scheme}://{host}{path}",
    st.sampled_from(["http", "https"]),
    hosts,
    st.sampled_from(["", "/api", "/e2b/v1"]),
)
images = accepted(pattern(names.IMAGE_REF, 60), names.check_image)
# An input's value: one line of any printable text (names.check_text), non-ASCII included.
texts = accepted(st.text(st.characters(codec="utf-8", exclude_categories=["Cs", "Cc"]), max_size=30), names.check_text)
inputs = st.dictionaries(accepted(pattern(names.INPUT_KEY, 30), names.check_input_key), texts, max_size=4)
channels = st.dictionaries(accepted(pattern(names.TAG, 30), names.check_tag), lock_ids, max_size=3)
builds = st.builds(
    Build,
    build_id=lock_ids,
    fingerprint=fingerprints,
    built_at=times,
    layers=layers,
    image=st.just("") | images,
    template_id=st.just("") | lock_ids,
)


@st.composite
def entries(draw: st.DrawFn) -> LockEntry:
    return LockEntry(
        alias=draw(aliases),
        variant=draw(variants),
        template_id=draw(lock_ids),
        build_id=draw(lock_ids),
        fingerprint=draw(fingerprints),
        layers=draw(layers),
        built_at=draw(times),
        domain=draw(st.just("") | hosts),
        api_url=draw(st.just("") | urls),
        image=draw(st.just("") | images),
        inputs=draw(inputs),
        channels=draw(channels),
        history=draw(st.lists(builds, max_size=HISTORY_LIMIT)),
    )


locks = st.lists(entries(), max_size=4, unique_by=lambda e: e.alias)


def written(lock: list[LockEntry]) -> str:
    """The lock's text; a lock the writer refuses (a value that looks like a secret) is not drawn."""
    try:
        return dumps(lock)
    except LockError as exc:
        assert "looks like a secret" in str(exc), exc  # the one refusal a valid entry may meet
        assume(False)
        raise AssertionError("unreachable") from None


@settings(max_examples=60)
@given(locks)
def test_any_valid_lock_written_and_read_back_is_equal(lock):
    text = written(lock)
    read = loads(text, "templates.lock")
    assert read == {e.alias: e for e in lock}
    assert TemplateLock.loads(text) == TemplateLock(lock)
    assert dumps(read.values()) == text  # and writing it again changes nothing


@settings(max_examples=60)
@given(entries())
def test_an_entry_keeps_its_times_and_its_history_in_order(entry):
    (back,) = loads(written([entry])).values()
    assert back.built_at == entry.built_at and back.built_at.utcoffset() == dt.timedelta(0)
    assert [b.build_id for b in back.history] == [b.build_id for b in entry.history]
    assert back.reference == f"{entry.alias}:{entry.build_id}"


def cli_run(project: Path, *args: str) -> Any:
    return cli_runner().invoke(cli, ["-C", str(project), *args], env={"E2B_TEMPLATE_ID": "", "E2B_MATRIX_ENV": ""})


@pytest.fixture(scope="module")
def cli_project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("names")


@settings(max_examples=60)
@given(entries(), variants)
def test_names_the_rules_accept_round_trip_through_the_lock_and_the_cli(cli_project, entry, other_variant):
    # the alias and the variant name as the lock stores them, then as a shell asks for them
    other = LockEntry(
        alias=f"{entry.alias}-other",
        variant=other_variant,
        template_id="t",
        build_id="b-other",
        fingerprint="sha256:" + "0" * 64,
        layers={},
        built_at=entry.built_at,
    )
    assume(other_variant not in (entry.variant, entry.alias) and entry.variant != other.alias)
    (cli_project / "templates.lock").write_text(written([entry, other]))
    for name in (entry.alias, entry.variant):
        r = cli_run(cli_project, "resolve", "--", name)  # `--`: an E2B name may start with "-"
        assert (r.exit_code, r.stdout) == (0, f"{entry.reference}\n"), (name, r.stdout, r.stderr)
    r = cli_run(cli_project, "lock", "show", "--json")
    assert r.exit_code == 0, r.stderr
    shown = json.loads(r.stdout)
    assert sorted(shown) == sorted([entry.alias, other.alias])
    assert shown[entry.alias]["variant"] == entry.variant and shown[entry.alias]["reference"] == entry.reference
    assert shown[entry.alias]["inputs"] == dict(entry.inputs) if entry.inputs else "inputs" not in shown[entry.alias]


# Names a lookup may mix up: a few shared words (one entry's alias, another's variant; one variant
# under two aliases) drawn often, beside any name the rules accept.
common = st.sampled_from(["latest", "pinned", "nexus-sandbox-latest"])


@st.composite
def lookups(draw: st.DrawFn) -> LockEntry:
    return LockEntry(
        alias=draw(common | aliases),
        variant=draw(common | variants),
        template_id=draw(lock_ids),
        build_id=draw(lock_ids),
        fingerprint="sha256:" + "0" * 64,
        layers={},
        built_at=dt.datetime(2026, 1, 1, tzinfo=dt.UTC),
    )


@given(st.lists(lookups(), min_size=1, max_size=6, unique_by=lambda e: e.alias), st.data())
def test_the_resolver_never_returns_a_build_of_another_alias(tmp_path_factory, lock, data):
    path = tmp_path_factory.mktemp("resolver") / "templates.lock"
    path.write_text(written(lock))
    resolver = TemplateResolver(path, environ={"E2B_TEMPLATE_ID": "from-the-environment"})
    name = data.draw(st.sampled_from(sorted({e.alias for e in lock} | {e.variant for e in lock})) | common | aliases)
    # the entries the word names: as alias or as variant; one of them, or none, or it is ambiguous
    meant = {e.alias: e for e in lock if name in (e.alias, e.variant)}
    try:
        got = resolver.resolve(name)
    except UnknownNameError:
        assert not meant  # only a name no entry has is unknown
        event("unknown")
        return
    except LockError as exc:
        assert len(meant) > 1 and "could mean several templates" in str(exc)
        event("ambiguous")
        return
    # the build of the one entry the name means, with its own alias; never the environment's default
    (entry,) = meant.values()
    event("by alias" if entry.alias == name else "by variant")
    assert got == entry.reference == f"{entry.alias}:{entry.build_id}"
