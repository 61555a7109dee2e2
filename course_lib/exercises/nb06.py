"""Checks for the exercises of ``notebooks/06_metrics.ipynb`` (a live server and its /metrics).

Each check computes the right answer itself, from the real server or from
``course_lib.metrics``, never from a stored constant.
"""

from __future__ import annotations

import math
import uuid
from typing import Callable

from course_lib.exercises import ExerciseResult, verdict
from course_lib.metrics import MetricsSnapshot, prefix_cache_hit_rate


def check_hit_rate(
    fn: Callable[[MetricsSnapshot, MetricsSnapshot], float | None],
    before: MetricsSnapshot,
    after: MetricsSnapshot,
) -> ExerciseResult:
    """Exercise 1: ``fn(before, after)`` returns the hit rate from counter increases.

    Compared with ``prefix_cache_hit_rate`` on the learner's two snapshots, and on an
    idle period (``after`` twice), where the right answer is None, not 0.
    """
    name = "06.1 hit rate from counters"
    expected = prefix_cache_hit_rate(before, after).rate
    try:
        got = fn(before, after)
        idle = fn(after, after)
    except Exception as exc:  # the learner's code: say what broke, not a traceback
        return verdict(name, False, "", f"your function raised {type(exc).__name__}: {exc}")
    if expected is None:
        return verdict(name, False, "", "no tokens were queried between your snapshots: send traffic in between")
    if got is None or not math.isclose(float(got), expected, rel_tol=1e-9):
        return verdict(
            name, False, "",
            f"got {got!r}: not the hit rate of the traffic between your snapshots",
            (
                "A rate over a period uses the INCREASE of each counter between the snapshots, not its total since "
                "start-up.",
                "Divide the increase of vllm:prefix_cache_hits_total by the increase of "
                "vllm:prefix_cache_queries_total.",
            ),
        )  # fmt: skip
    return verdict(
        name, idle is None,
        f"{expected:.1%}, and None for an idle period: no queries means no hit rate, not 0%",
        f"right on traffic ({expected:.1%}), but for an idle period (same snapshot twice) you returned "
        f"{idle!r}: with zero queries there is no rate; return None",
    )  # fmt: skip


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
