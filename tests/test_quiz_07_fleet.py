"""quizzes/07_fleet.yaml: every computed answer is what course_lib.fleet computes.

The quiz's scenarios are replayed through the fleet simulator (itself checked against the
course's vLLM-exact cache simulator in tests/test_fleet.py); the key must agree.
"""

from __future__ import annotations

import pytest

from course_lib import quiz as Q
from course_lib.fleet import BlockCache, FleetResult, ReplicaStats, simulate_fleet
from course_lib.traces import FleetRequest

QUIZ = Q.load_quiz("07_fleet")


def _correct_choice(qid: str) -> str:
    q = QUIZ.question(qid)
    return next(c.text for c in q.choices if c.correct)


def test_odd_tenant_count_under_round_robin_never_hits():
    # three tenants, 8 full 32-token blocks of system prompt each + a partial question block
    reqs = [FleetRequest(tuple(100 * t + b for b in range(8)) + (-1 - i,), 8 * 32 + 10, session=f"t{t}")
            for i, t in enumerate([0, 1, 2, 0, 1, 2])]  # fmt: skip
    rr = simulate_fleet(reqs, 2, 10_000, "round_robin", block_size=32)
    assert rr.hit_rate == 0.0
    assert _correct_choice("odd_round_robin").startswith("0:")
    # the distractor's world: tenant affinity makes every second request hit
    ch = simulate_fleet(reqs, 2, 10_000, "consistent_hash", block_size=32)
    assert ch.cached_per_request[3:] == [8 * 32] * 3


def test_capped_block_answer():
    cache = BlockCache(10, 512)
    cache.process((1, 2), 1024)
    assert Q.judge(QUIZ.question("capped_block"), cache.lookup((1, 2), 1024)).correct
    assert cache.process((1, 2), 1024) == 512


def test_fleet_rate_and_imbalance_answers():
    result = FleetResult("x", 2, 0, [ReplicaStats(1, 1000, 500), ReplicaStats(1, 3000, 300)], [], [])
    assert Q.judge(QUIZ.question("fleet_rate"), result.hit_rate).correct
    assert not Q.judge(QUIZ.question("fleet_rate"), (0.5 + 0.1) / 2).correct  # the mean of rates
    loads = FleetResult("x", 4, 0, [ReplicaStats(n, n, 0) for n in (6, 2, 2, 2)], [], [])
    assert Q.judge(QUIZ.question("imbalance"), loads.imbalance("requests")).correct


def test_local_caches_can_beat_the_pool_on_a_request_but_not_on_the_trace():
    # round robin: replica 0 gets block 1, then block 2 nine times, then block 1 again; replica 1
    # streams ten distinct blocks meanwhile. Replica 0's own 4 blocks keep block 1; the pooled
    # cache of 2 x 4 blocks sees 11 distinct blocks in between and evicts it.
    even = [1] + [2] * 9 + [1]
    odd = list(range(10, 20))
    order = [even[i // 2] if i % 2 == 0 else odd[i // 2] for i in range(21)]
    reqs = [FleetRequest((b, -1 - i), 40) for i, b in enumerate(order)]  # 1 full block + a partial one
    kw = dict(block_size=32)
    local = simulate_fleet(reqs, 2, 4 * 32, "round_robin", **kw)
    pooled = simulate_fleet(reqs, 2, 4 * 32, "pooled", **kw)
    assert local.cached_per_request[-1] == 32 and pooled.cached_per_request[-1] == 0
    assert "Neither" in _correct_choice("pooled_bound")
    from course_lib.traces import load_trace

    trace = load_trace("conversation", limit=4000)
    cap = 1500 * 512
    assert simulate_fleet(trace, 4, cap, "pooled").hit_rate > simulate_fleet(trace, 4, cap, "kv_aware").hit_rate


@pytest.mark.parametrize("qid", [q.id for q in QUIZ.questions if q.type == "single"])
def test_longest_choice_is_not_always_the_key(qid):
    q = QUIZ.question(qid)
    longest = max(range(len(q.choices)), key=lambda i: len(q.choices[i].text))
    singles = [x for x in QUIZ.questions if x.type == "single"]
    longest_correct = sum(
        x.choices[max(range(len(x.choices)), key=lambda i: len(x.choices[i].text))].correct for x in singles
    )
    assert longest_correct <= max(1, len(singles) // 3)
    assert q.choices[longest] is not None


def test_idle_cache_aware_sends_every_new_prefix_to_replica_0():
    fresh = [FleetRequest((1000 + i, 2000 + i, -1 - i), 2 * 512 + 7) for i in range(8)]
    idle = simulate_fleet(fresh, 4, 100_000, "cache_aware")  # one at a time: nothing in flight
    assert set(idle.assignments) == {0}
    assert _correct_choice("idle_cache_aware").startswith("All to one replica")
    busy = simulate_fleet(fresh, 4, 100_000, "cache_aware", concurrency=4)  # the distractor's spread needs load
    assert set(busy.assignments) == {0, 1, 2, 3}


def test_kv_cost_answer():
    # the router's price, from course_lib.exercises.nb07's copy of MultiplicativeScorer
    from course_lib.exercises.nb07 import _cost

    assert Q.judge(QUIZ.question("kv_cost"), _cost(500, 480, 600, 2)).correct
    assert not Q.judge(QUIZ.question("kv_cost"), (500 - 480) * (2 + 1)).correct  # the queue forgotten
    assert _cost(500, 0, 0, 0) < _cost(500, 480, 600, 2)  # the feedback's idle cold replica wins
