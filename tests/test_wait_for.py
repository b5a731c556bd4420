"""conftest.wait_for, the one way a test waits for a state it is not told about."""

from __future__ import annotations

import itertools

import pytest

from conftest import wait_for


def test_it_returns_the_first_true_value_of_the_condition():
    looks = itertools.count(1)
    assert wait_for(lambda: [n] if (n := next(looks)) >= 3 else [], what="a third look") == [3]


def test_it_fails_the_test_naming_what_it_waited_for_once_the_time_is_out():
    looks: list[int] = []
    with pytest.raises(pytest.fail.Exception, match=r"^waited 0.05s for the moon \(\d+ looks\)$"):
        wait_for(lambda: looks.append(1), timeout=0.05, what=lambda: f"the moon ({len(looks)} looks)")
    assert len(looks) >= 2  # it looked again, and what was made when it failed


def test_an_exception_of_the_condition_ends_the_wait_at_once():
    def gone() -> bool:
        raise AssertionError("the child exited")

    with pytest.raises(AssertionError, match="the child exited"):
        wait_for(gone, timeout=60, what="never")
