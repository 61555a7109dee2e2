"""Checks for the exercises of ``notebooks/06_metrics.ipynb`` (a live server and its /metrics).

Each check computes the right answer itself, from the real server or from
``course_lib.metrics``, never from a stored constant.
"""

from __future__ import annotations

import math
import uuid
from typing import Callable, Sequence

from course_lib.exercises import ExerciseResult, exercise, verdict
from course_lib.metrics import MetricsSnapshot, prefix_cache_hit_rate


@exercise(
    "06.1",
    "one hit rate for several intervals",
    hints=(
        "A hit rate is a ratio of token counts, so two periods do not combine by averaging their rates: a period "
        "with more queried tokens weighs more.",
        "For each (before, after) pair take the increase of vllm:prefix_cache_hits_total and of "
        "vllm:prefix_cache_queries_total; add the increases up over the pairs, then divide once.",
        "No queried token at all means there is no rate: return None, not 0.",
    ),
)
def check_hit_rate(
    fn: Callable[[Sequence[tuple[MetricsSnapshot, MetricsSnapshot]]], float | None],
    before: MetricsSnapshot,
    middle: MetricsSnapshot,
    after: MetricsSnapshot,
) -> ExerciseResult:
    """Exercise 1: ``fn([(before, middle), (middle, after)])`` is the hit rate of both periods together.

    The right answer is computed by ``prefix_cache_hit_rate(before, after)`` (the two periods
    are contiguous, so one interval covers both); the learner's function is also tried on
    each period alone and on an idle period (``after`` twice), where the answer is None.
    """
    name = "06.1 one hit rate for several intervals"
    cases = [
        ("both periods", [(before, middle), (middle, after)], prefix_cache_hit_rate(before, after).rate),
        ("the first period alone", [(before, middle)], prefix_cache_hit_rate(before, middle).rate),
        ("the second period alone", [(middle, after)], prefix_cache_hit_rate(middle, after).rate),
        ("an idle period", [(after, after)], None),
    ]
    if any(expected is None for label, _, expected in cases[:3]):
        return verdict(name, False, "", "no tokens were queried in one of your periods: send traffic in each")
    first, second = cases[1][2], cases[2][2]
    for label, intervals, expected in cases:
        got = fn(intervals)
        if expected is None:
            if got is not None:
                return verdict(name, False, "", f"for {label} (no queried token) you returned {got!r}: "
                               "with zero queries there is no rate", ("Return None when nothing was queried.",))  # fmt: skip
            continue
        if got is None or not math.isclose(float(got), expected, rel_tol=1e-9):
            hints: tuple[str, ...] = ()
            if got is not None and math.isclose(float(got), (first + second) / 2, rel_tol=1e-9):
                hints = ("You averaged the two periods' rates. Weigh each by its queried tokens: add the counters' "
                         "increases first, divide once.",)  # fmt: skip
            return verdict(name, False, "", f"for {label} you returned {got!r}: not the share of queried prompt "
                           "tokens that were cached", hints)  # fmt: skip
    both = cases[0][2]
    return verdict(
        name, True,
        f"{both:.1%} for both periods together: not the mean of {first:.1%} and {second:.1%}, because the periods "
        "queried different numbers of tokens; and None for an idle period",
        "",
    )  # fmt: skip


@exercise(
    "06.2",
    "predict cached_tokens",
    hints=(
        "Tokenize both conversations with server.tokenize and count the leading tokens they share.",
        "Keep only whole blocks of block_size tokens of that shared part.",
    ),
)
def check_cached_tokens(
    prediction: int, server: "object", first: list[dict[str, str]], second: list[dict[str, str]]
) -> ExerciseResult:
    """Exercise 2: how many cached tokens does the server report for ``second`` sent right after ``first``?

    The check sends both under a fresh ``cache_salt`` (so earlier traffic cannot help)
    and compares ``prediction`` with ``usage.prompt_tokens_details.cached_tokens``.
    """
    name = "06.2 predict cached_tokens"
    salt = uuid.uuid4().hex
    client = server.openai_client()  # type: ignore[attr-defined]
    cached = []
    for messages in (first, second):
        r = client.chat.completions.create(
            model=server.model_name,  # type: ignore[attr-defined]
            messages=messages, max_tokens=1, temperature=0.0, extra_body={"cache_salt": salt},
        )  # fmt: skip
        cached.append(int(r.usage.prompt_tokens_details.cached_tokens))
    actual = cached[1]
    return verdict(
        name, int(prediction) == actual,
        f"{actual} tokens: the full blocks of the prefix both prompts share",
        f"you predicted {prediction}: not what the server reported.",
        (
            "Tokenize both conversations with server.tokenize and count the shared leading tokens.",
            "Keep only whole blocks of block_size tokens of that shared part.",
        ),
    )  # fmt: skip
