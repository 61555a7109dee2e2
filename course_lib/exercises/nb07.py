"""Checks for the exercise of ``notebooks/07_fleet.ipynb`` (routing policies on a trace).

The check runs ``course_lib.fleet.simulate_fleet`` itself for every candidate policy on
the learner's scenario, so the right answer is computed, never stored.
"""

from __future__ import annotations

from typing import Sequence

from course_lib.exercises import ExerciseResult, verdict
from course_lib.fleet import simulate_fleet
from course_lib.traces import FleetRequest

#: The policies the exercise asks about (pooled is not a router policy: it is the bound).
CANDIDATES = ("round_robin", "random", "consistent_hash", "cache_aware", "kv_aware")


def policy_ranking(
    requests: Sequence[FleetRequest], replicas: int, capacity_tokens: int, policies: Sequence[str] = CANDIDATES
) -> list[tuple[str, float]]:
    """``(policy, fleet hit rate)`` for each policy, best first (ties: the order given)."""
    rates = [(p, simulate_fleet(requests, replicas, capacity_tokens, p).hit_rate) for p in policies]
    return sorted(rates, key=lambda pr: -pr[1])


def check_policy_prediction(
    prediction: str, requests: Sequence[FleetRequest], replicas: int, capacity_tokens: int
) -> ExerciseResult:
    """Exercise 1: which router policy gives the highest fleet hit rate on this scenario?

    A prediction is right if its hit rate is within 0.005 of the best one (near-ties count).
    """
    name = "07.1 predict the winning policy"
    if prediction not in CANDIDATES:
        return verdict(name, False, "", f"{prediction!r} is not one of the candidates: {', '.join(CANDIDATES)}")
    ranking = policy_ranking(requests, replicas, capacity_tokens)
    best_rate = ranking[0][1]
    mine = dict(ranking)[prediction]
    ok = mine >= best_rate - 0.005
    return verdict(
        name, ok,
        f"{prediction} reaches {mine:.3f}, the best of the five on this scenario",
        f"{prediction} reaches {mine:.3f}: another policy finds more prefixes here.",
        (
            "Ask what the requests share: one prefix for everybody, or a prefix per conversation?",
            "A policy that ignores the prompt spreads each conversation over the replicas; count how many "
            "replicas a conversation's blocks then have to be stored on, and compare with the capacity.",
            "Run policy_ranking(requests, replicas, capacity_tokens) and read why the winner wins from its "
            "per-replica table (simulate_fleet(...).per_replica).",
        ),
    )  # fmt: skip
