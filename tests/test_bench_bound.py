"""bench/bound.py: the release-time bound bench/scale.py divides the wall time by, on tries worked out by hand."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parent.parent / "bench"


def load(name: str):
    """bench/<name>.py as the module ``name`` (bench/ is no package: bench/run.py puts it on sys.path)."""
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, BENCH / f"{name}.py")
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module  # dataclasses look their module up; scale.py imports "bound"
        spec.loader.exec_module(module)
    return sys.modules[name]


bound = load("bound")
Step = bound.Step


def fan(first: float, leaves: int, leaf: float) -> tuple:
    """A base (cost 0), one shared step of ``first`` s, then ``leaves`` variants' own steps of ``leaf`` s."""
    return (Step(0.0, 0, (Step(first, 0, tuple(Step(leaf, 1) for _ in range(leaves))),)),)


def test_a_fan_out_waits_for_the_release_and_counts_uploads_and_polls():
    # Base 0 -> A (1 s) -> three leaves of 2 s; upload 0.5 s, poll 0.25 s, 2 slots.
    # A runs 0-1; one leaf goes on at 1 (A's build), two wait for A's release at 1.5.
    # t = 1: all three leaves, 3 x (2 + 0.5 upload) + the polls of 3 builds less the 2 that may
    #        end last = 7.5 + 0.25 -> 1 + 7.75 / 2 = 4.875
    # t = 1.5: the two that waited: 5.0, no poll (2 builds <= 2 slots) -> 1.5 + 2.5 = 4.0
    # t = 0: 1 + 7.5 + 0.25 -> 4.375
    # critical path: 1 + 0.5 (release) + 2 + 0.5 (upload) = 4.0
    got = bound.release_bound(fan(1.0, 3, 2.0), limit=2, upload_s=0.5, poll_s=0.25)
    assert got.critical_s == pytest.approx(4.0)
    assert got.release_s == pytest.approx(4.875)
    assert got.at_s == pytest.approx(1.0)
    assert got.work_s == pytest.approx(7.75)
    assert got.bound_s == pytest.approx(4.875)
    # what scale.py divided by before: max(1 + 2 + 0.5, (1 + 6) / 2)
    assert bound.naive_bound(fan(1.0, 3, 2.0), 2, 0.5) == pytest.approx(3.5)


def test_the_runner_choosing_which_child_goes_on_is_taken_at_its_best():
    # Base -> A (1 s) -> B (4 s, leaf) and C (1 s, leaf); upload 1 s, no poll, 10 slots.
    # One of B and C starts at 1 (A's build goes on), the other at 2 (A's release).
    # t = 2: only the one that waited: C (1 + 1 upload) if B goes on, B (4 + 1) if C does;
    #        the bound takes the runner's best, C: 2 + 2 / 10 = 2.2 (not 2 + 5 / 10 = 2.5)
    # t = 1: B and C: 1 + (5 + 2) / 10 = 1.7;  t = 0: (1 + 5 + 2) / 10 = 0.8
    # critical path: B goes on: 1 + max(4 + 1, 1 + 1 + 1) = 6
    roots = (Step(0.0, 0, (Step(1.0, 0, (Step(4.0, 1), Step(1.0, 1))),)),)
    got = bound.release_bound(roots, limit=10, upload_s=1.0, poll_s=0.0)
    assert got.release_s == pytest.approx(2.2)
    assert got.at_s == pytest.approx(2.0)
    assert got.critical_s == pytest.approx(6.0)
    assert got.bound_s == pytest.approx(6.0)


def test_the_children_of_the_base_need_no_release():
    # Three variants of one step each on the base: every build has the base at once, so all three
    # start at 0: (3 x (2 + 0.5) + one poll past the 2 slots) / 2; the critical path 2 + 0.5.
    roots = (Step(0.0, 0, tuple(Step(2.0, 1) for _ in range(3))),)
    got = bound.release_bound(roots, limit=2, upload_s=0.5, poll_s=0.25)
    assert got.release_s == pytest.approx(7.75 / 2)
    assert got.at_s == 0.0
    assert got.critical_s == pytest.approx(2.5)


def test_a_variant_that_ends_inside_another_is_ready_only_after_the_release():
    # Base -> A (1 s) -> B (1 s): "short" ends at A, "long" at B; upload 0.5.
    # long's build goes on from A to B: ready at 1 + 1 + 0.5 = 2.5; short meets A published at 1.5 (its
    # own build ending at A would be ready then too). A is no leaf: no upload is slot time there.
    roots = (Step(0.0, 0, (Step(1.0, 1, (Step(1.0, 1),)),)),)
    got = bound.release_bound(roots, limit=1, upload_s=0.5, poll_s=0.0)
    assert got.critical_s == pytest.approx(2.5)
    assert got.release_s == pytest.approx(2.5)  # t = 0: A + B + B's upload on one slot
    longest = bound.release_bound((Step(0.0, 0, (Step(3.0, 1, (Step(1.0, 1),)),)),), 1, 0.5, 0.0)
    assert longest.critical_s == pytest.approx(4.5)


def test_the_bound_is_never_below_what_scale_py_divided_by_before():
    for roots in (fan(1.0, 3, 2.0), fan(0.6, 150, 2.0), fan(4.8, 10, 1.8)):
        for limit in (1, 2, 20):
            assert bound.release_bound(roots, limit, 0.2, 0.2).bound_s >= bound.naive_bound(roots, limit, 0.2) - 1e-9


def prefix(versions: int, flavours: int) -> tuple:
    """bench/scale.py's prefix shape with run.py's step costs: base USER/WORKDIR (0.3 s each), the fuse layer
    (apt 2.0, COPY 0.3, pip 1.0, 3 RUNs of 0.3), per version COPY 0.3 + pip 1.5, per flavour apt 2.0."""
    nexus = tuple(Step(0.3, 0, (Step(1.5, 0, tuple(Step(2.0, 1) for _ in range(flavours))),)) for _ in range(versions))
    step = Step(0.3, 0, nexus)
    for cost in (0.3, 0.3, 1.0, 0.3, 2.0, 0.3, 0.3):
        step = Step(cost, 0, (step,))
    return (Step(0.0, 0, (step,)),)


def test_the_60_variant_prefix_shape():
    # The fuse layer ends at 4.8; one version goes on at 4.8, nine wait for its release at 5.0; a version
    # ends at 6.6 or 6.8, one flavour each goes on, the others wait to 6.8 or 7.0. At t = 6.8: 5 + 9 x 6 = 59
    # flavours of 2.0 + 0.2 upload, and the polls of 59 - 20 builds: 6.8 + (129.8 + 7.8) / 20 = 13.68.
    # What scale.py divided by before: the longest chain 8.6 + 0.2 = 8.8.
    got = bound.release_bound(prefix(10, 6), limit=20, upload_s=0.2, poll_s=0.2)
    assert got.at_s == pytest.approx(6.8)
    assert got.work_s == pytest.approx(137.6)
    assert got.bound_s == pytest.approx(13.68)
    assert got.critical_s == pytest.approx(9.2)  # 4.8 + 0.2 + 1.8 + 0.2 + 2.0 + 0.2
    assert bound.naive_bound(prefix(10, 6), 20, 0.2) == pytest.approx(8.8)


def test_from_plan_expands_segments_and_counts_the_variants_ending_at_each_step():
    plan = [
        {
            "steps": ["FROM code-interpreter-v1", "USER user"],
            "variants": ["a", "b", "c"],
            "children": [
                {
                    "steps": ["RUN apt-get install x", "RUN echo"],
                    "variants": ["a", "b"],
                    "children": [{"steps": ["RUN apt-get install y"], "variants": ["a"], "children": []}],
                }
            ],
        }
    ]
    seen: list[tuple[str, bool]] = []

    def cost(text: str, base: bool) -> float:
        seen.append((text, base))
        return 0.0 if base else 2.0 if "apt-get" in text else 0.3

    (root,) = bound.from_plan(plan, cost)
    assert ("FROM code-interpreter-v1", True) in seen and ("USER user", False) in seen
    assert (root.cost, root.ends) == (0.0, 0)
    (user,) = root.children
    assert (user.cost, user.ends) == (0.3, 1)  # c ends after the base layer
    (apt,) = user.children
    (echo,) = apt.children
    assert (apt.cost, apt.ends, echo.cost, echo.ends) == (2.0, 0, 0.3, 1)  # b ends at the echo
    (last,) = echo.children
    assert (last.cost, last.ends, last.children) == (2.0, 1, ())


def test_a_limit_below_one_is_refused():
    with pytest.raises(ValueError, match="limit"):
        bound.release_bound(fan(1.0, 1, 1.0), limit=0, upload_s=0.0, poll_s=0.0)


def test_refills_measure_each_request_from_the_end_that_made_room_for_it():
    scale = load("scale")  # it imports the emulator from tests/, on sys.path here as when bench/run.py runs
    # 2 slots: requests at 0, 0, then 3.5 and 4.0; ends at 3.0, 3.25, 6, 7. The third request came 0.5 s after
    # the first end, the fourth 0.75 s after the second.
    assert scale.refills([0.0, 4.0, 0.0, 3.5], [3.25, 3.0, 6.0, 7.0], 2) == [0.5, 0.75]
    assert scale.refills([0.0, 0.1], [1.0, 1.1], 2) == []
