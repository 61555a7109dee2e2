"""Checks for the exercise of ``notebooks/07_fleet.ipynb`` (how vllm-router 0.1.17's kv_aware prices a replica).

The learner writes the router's cost and predicts the replica it picks; the check computes
both with its own copy of the rule (``MultiplicativeScorer`` and ``TemperaturePicker`` at
temperature 0 in ``src/policies/kv_aware.rs`` of vllm-router 0.1.17), never from the learner's code.
"""

from __future__ import annotations

import random
from typing import Callable, Sequence

from course_lib.exercises import ExerciseResult, exercise, verdict


def _cost(prompt_tokens: int, cached_tokens: int, queued_prefill_tokens: int, running: int) -> int:
    # (new prefill tokens + prefill tokens already queued there) x (requests running there + 1)
    return (prompt_tokens - cached_tokens + queued_prefill_tokens) * (running + 1)


def _cheapest(prompt_tokens: int, replicas: Sequence[tuple[int, int, int]]) -> int:
    costs = [_cost(prompt_tokens, *r) for r in replicas]
    return costs.index(min(costs))  # ties: the first, as Rust's min_by


def _cases(seed: int = 7, n: int = 40) -> list[tuple[int, int, int, int]]:
    rng = random.Random(seed)
    cases = [(464, 448, 0, 0), (464, 0, 0, 0), (464, 448, 1300, 3), (464, 0, 0, 1), (1000, 992, 0, 7)]
    for _ in range(n):
        prompt = rng.randrange(33, 5000)
        cases.append((prompt, rng.randrange(0, prompt) // 32 * 32, rng.choice([0, rng.randrange(0, 8000)]), rng.randrange(0, 9)))
    return cases


@exercise(
    "07.1",
    "price a replica as vllm-router's kv_aware does",
    hints=(
        "The cost has two factors: the prefill work the replica would face (what this request still has to "
        "compute, plus what is already waiting to be prefilled there) and how busy it is (running requests, plus "
        "the one being placed).",
        "Tokens still to compute are the prompt minus its cached tokens. Multiply the work by (running + 1).",
        "The router takes the replica with the smallest cost; compute both costs of the scenario with your "
        "function and compare them, or write choice = min(range(2), key=...).",
    ),
)
def check_router_cost(
    router_cost: Callable[[int, int, int, int], float], choice: int, prompt_tokens: int,
    replicas: Sequence[tuple[int, int, int]],
) -> ExerciseResult:  # fmt: skip
    """Exercise 1: ``router_cost`` on many cases, and ``choice``, the replica the router picks in the scenario.

    ``replicas`` lists ``(cached_tokens, queued_prefill_tokens, running)`` per replica.
    """
    name = "07.1 price a replica as vllm-router's kv_aware does"
    wrong = [c for c in _cases() if router_cost(*c) != _cost(*c)]
    if wrong:
        p, cached, queued, running = wrong[0]
        return verdict(
            name, False, "",
            f"router_cost({p}, {cached}, {queued}, {running}) is not the router's price ({len(wrong)} of {len(_cases())} "
            "cases differ). Check which tokens count as work, and what multiplies it.",
        )  # fmt: skip
    best = _cheapest(prompt_tokens, replicas)
    if choice != best:
        return verdict(
            name, False, "",
            f"Your cost function is right, but replica {choice!r} is not the one the router picks: compare the "
            "two costs of the scenario (the cheapest wins).",
        )  # fmt: skip
    cached = [r[0] for r in replicas]
    holder = cached.index(max(cached))
    if best == holder:
        why = "the cached prefix outweighs the queue"
    else:
        why = "the replica holding the prefix is busy enough that computing everything elsewhere is cheaper"
    return verdict(name, True, f"Your router_cost matches the router on {len(_cases())} cases, and it picks replica {best}: {why}.", "")
