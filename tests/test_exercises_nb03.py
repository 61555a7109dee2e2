"""course_lib.exercises.nb03 without an engine: right answers pass, wrong ones get the method, never the value.

The scenario here is built from token ids by hand (1004 shared tokens, then 13, 13 and 9 question
tokens, like notebook 03's); the expected values are computed in the test from block arithmetic.
"""

from __future__ import annotations

import re

from course_lib.exercises import nb03
from course_lib.scenario import Scenario


def _numbers(text: str) -> set[int]:
    return {int(x) for x in re.findall(r"\d+", text)}


def _scenario() -> Scenario:
    shared = list(range(1000, 2004))
    tails = [list(range(5000, 5013)), list(range(6000, 6013)), list(range(7000, 7009))]
    ids = tuple(tuple(shared + t) for t in tails)
    return Scenario("system", ("a", "b", "c"), ("p1", "p2", "p3"), ids, 1000)


def test_cached_at_block_size():
    sc = _scenario()
    full = 1004 // 128 * 128
    assert nb03.check_cached_at_block_size([0, full, full], sc, 128).ok
    wrong = nb03.check_cached_at_block_size([0, 1004, 1004], sc, 128)  # the partial block counted
    assert not wrong.ok and "partial block" in str(wrong)
    assert full not in _numbers(str(wrong) + wrong.hint(9))
    assert "no answer yet" in str(nb03.check_cached_at_block_size([0, ..., ...], sc, 128)).lower()


def test_requests_for_a_10x_bound():
    sc = _scenario()
    prompt, cached = 1017, 1004 // 32 * 32
    n = 1
    while n * prompt / (prompt + (n - 1) * (prompt - cached)) < 10:
        n += 1
    assert nb03.check_requests_for_bound(n, sc, 32).ok
    for guess in (n - 1, n + 1, 3):
        r = nb03.check_requests_for_bound(guess, sc, 32)
        assert not r.ok and n not in _numbers(str(r) + r.hint(9)), guess
    assert "no answer yet" in str(nb03.check_requests_for_bound(..., sc, 32)).lower()
