"""course_lib.fleet: the fleet simulator, checked against independent computations.

- one replica replays exactly what ``course_lib.simulator.PrefixCacheSimulator`` (itself
  checked against the live engine in test_simulator.py) does on the same token prompts;
- a pooled cache large enough for the whole trace gives the "prefix blocks seen" rate
  computed here directly from the ids;
- round robin over N replicas equals N separate single-replica replays of every N-th request;
- the kv_aware index fed by store/remove events equals the caches' content;
- the policy objects and the shared tier (``tier2_capacity_tokens``) changed no replay: with
  no tier every policy reproduces, assignment by assignment, what the single-function
  simulator of commit 77914da (before the refactor) computed;
- the tier's hits equal an LRU computed here, request by request.
The traces themselves are checked in test_traces.py.
"""

from __future__ import annotations

import hashlib
import json
import random
import subprocess
from collections import OrderedDict
import sys

import pytest

from course_lib.engine import CourseError
from course_lib.fleet import POLICIES, BlockCache, SharedTier, simulate_fleet
from course_lib.hashing import block_hashes
from course_lib.simulator import PrefixCacheSimulator
from course_lib.traces import MOONCAKE_BLOCK_TOKENS, FleetRequest, load_trace, prefix_blocks_seen


@pytest.fixture(scope="module")
def conversation():
    return load_trace("conversation")


def _token_workload(seed: int, block_size: int) -> list[list[int]]:
    """Chat-like prompts: shared system prompts, growing conversations, random tails."""
    rng = random.Random(seed)
    systems = [[rng.randrange(1000) for _ in range(rng.randrange(3, 20))] for _ in range(3)]
    convs: list[list[int]] = []
    prompts = []
    for _ in range(120):
        if convs and rng.random() < 0.6:
            c = rng.choice(convs)
            c += [rng.randrange(1000) for _ in range(rng.randrange(1, 9))]
        else:
            c = list(rng.choice(systems)) + [rng.randrange(1000) for _ in range(rng.randrange(1, 9))]
            convs.append(c)
        prompts.append(list(c))
    return prompts


def _as_fleet_requests(prompts: list[list[int]], block_size: int) -> list[FleetRequest]:
    """Token prompts as block ids: one id per distinct chained block hash, a fresh id per partial block."""
    ids: dict[bytes, int] = {}
    out = []
    for p in prompts:
        hs = [ids.setdefault(h, len(ids)) for h in block_hashes(p, block_size)]
        if len(p) % block_size:
            hs.append(10**9 + len(out))  # the partial last block: never cached
        out.append(FleetRequest(tuple(hs), len(p)))
    return out


@pytest.mark.parametrize("seed,capacity_blocks", [(0, 6), (1, 12), (2, 40), (3, 1000)])
def test_one_replica_is_the_course_simulator(seed, capacity_blocks):
    bs = 4
    prompts = _token_workload(seed, bs)
    requests = _as_fleet_requests(prompts, bs)
    sim = PrefixCacheSimulator(num_gpu_blocks=capacity_blocks + 1, block_size=bs)
    expected = []
    for p in prompts:
        if -(-len(p) // bs) > capacity_blocks:
            expected.append(sim.lookup(p))  # the simulator refuses; the fleet counts the lookup
        else:
            expected.append(sim.process(p))
    for policy in ("round_robin", "pooled", "cache_aware", "kv_aware"):
        result = simulate_fleet(requests, 1, capacity_blocks * bs, policy, block_size=bs)
        assert result.cached_per_request == expected, policy
    assert sum(expected) > 0  # the workload does hit


def test_block_cache_free_queue_matches_the_simulator():
    bs = 4
    prompts = _token_workload(5, bs)
    requests = _as_fleet_requests(prompts, bs)
    sim = PrefixCacheSimulator(num_gpu_blocks=9, block_size=bs)
    cache = BlockCache(8, bs)
    for p, r in zip(prompts, requests):
        if -(-len(p) // bs) > 8:
            continue
        assert cache.process(r.hash_ids, r.input_length) == sim.process(p)
        assert cache.free_queue() == sim.free_queue()


def test_pooled_with_room_for_everything_is_prefix_blocks_seen(conversation):
    bs = MOONCAKE_BLOCK_TOKENS
    seen: set[int] = set()
    hits = queries = 0
    for req in conversation:  # computed here, independently of course_lib.fleet
        k = 0
        while k < (req.input_length - 1) // bs and req.hash_ids[k] in seen:
            k += 1
        hits += k * bs
        queries += req.input_length
        seen.update(req.hash_ids[: req.input_length // bs])
    total_blocks = sum(-(-r.input_length // bs) for r in conversation)
    result = simulate_fleet(conversation, 4, total_blocks * bs, "pooled")
    assert result.cached_tokens == hits and result.input_tokens == queries
    assert result.hit_rate == pytest.approx(hits / queries) == pytest.approx(prefix_blocks_seen(conversation))
    assert 0.3 < result.hit_rate < 0.4  # well below Table 2's 40%: the trace starts cold


def test_round_robin_is_independent_replicas(conversation):
    requests = conversation[:3000]
    n, cap = 3, 400 * MOONCAKE_BLOCK_TOKENS
    fleet = simulate_fleet(requests, n, cap, "round_robin")
    for r in range(n):
        alone = simulate_fleet(requests[r::n], 1, cap, "round_robin")
        assert fleet.per_replica[r] == alone.per_replica[0]
    assert fleet.assignments[:6] == [0, 1, 2, 0, 1, 2]


def test_policies_keep_their_promises(conversation):
    requests = conversation[:4000]
    cap = 2000 * MOONCAKE_BLOCK_TOKENS
    results = {p: simulate_fleet(requests, 4, cap, p) for p in POLICIES}
    for p, res in results.items():
        assert res.requests == len(requests) and res.input_tokens == sum(r.input_length for r in requests), p
        assert all(c <= r.input_length - 1 for c, r in zip(res.cached_per_request, requests)), p
    # consistent_hash: one conversation key, one replica
    by_key: dict[tuple[int, ...], set[int]] = {}
    for req, r in zip(requests, results["consistent_hash"].assignments):
        by_key.setdefault(req.hash_ids[:2], set()).add(r)
    assert all(len(s) == 1 for s in by_key.values())
    # random is seeded; prefix-aware policies beat blind ones on this trace
    assert simulate_fleet(requests, 4, cap, "random", seed=1).assignments == simulate_fleet(requests, 4, cap, "random", seed=1).assignments
    blind = max(results["round_robin"].hit_rate, results["random"].hit_rate)
    assert results["kv_aware"].hit_rate > blind
    # cache_aware with nothing in flight: every tie goes to replica 0, so it is one replica
    assert [r.requests for r in results["cache_aware"].per_replica] == [len(requests), 0, 0, 0]
    busy = simulate_fleet(requests, 4, cap, "cache_aware", concurrency=4)
    assert busy.hit_rate > blind and min(r.requests for r in busy.per_replica) > 0
    assert results["pooled"].hit_rate > results["round_robin"].hit_rate


def test_kv_aware_index_follows_store_and_remove_events(conversation):
    stored: dict[int, set[int]] = {}
    caches = []
    for r in range(2):
        caches.append(BlockCache(300, on_store=lambda h, r=r: stored.setdefault(r, set()).add(h),
                                 on_remove=lambda h, r=r: stored[r].remove(h)))  # fmt: skip
    for i, req in enumerate(conversation[:2000]):
        caches[i % 2].process(req.hash_ids, req.input_length)
    assert [stored[r] for r in range(2)] == [c.cached_ids() for c in caches]


def test_concurrency_lets_load_balance_trigger():
    # 200 requests of one prefix: with 100 in flight, abs threshold 64 is crossed
    reqs = [FleetRequest((1, 2, 3), 3 * 512 + 10) for _ in range(200)]
    seq = simulate_fleet(reqs, 2, 10_000, "cache_aware")
    conc = simulate_fleet(reqs, 2, 10_000, "cache_aware", concurrency=100)
    assert seq.per_replica[1].requests == 0  # everything follows the prefix
    assert conc.per_replica[1].requests > 0  # imbalance sends some to the idle replica


def test_errors_are_clear():
    with pytest.raises(CourseError, match="unknown policy"):
        simulate_fleet([], 2, 10_000, "fastest")
    with pytest.raises(CourseError, match="less than one block"):
        simulate_fleet([], 2, 100, "round_robin")


def test_cli_json_and_table(tmp_path):
    path = tmp_path / "t.jsonl"
    path.write_text("\n".join(json.dumps({"input_length": 1100, "hash_ids": [7, 8, i]}) for i in range(5)))
    out = subprocess.run([sys.executable, "-m", "course_lib.cli", "fleet", "--trace", str(path), "--replicas", "2",
                          "--capacity-tokens", "4096", "--policy", "round_robin", "--json"],
                         capture_output=True, text=True, check=True)  # fmt: skip
    data = json.loads(out.stdout)
    # 5 requests of 1100 tokens (2 full blocks); replica 0 gets requests 0, 2, 4 and hits
    # 2 blocks on the 2nd and 3rd of them; replica 1 gets 1 and 3 and hits on the 2nd.
    assert data["requests"] == 5 and data["cached_tokens"] == 3 * 2 * 512
    assert data["hit_rate"] == pytest.approx(3 * 1024 / 5500)
    assert data["per_replica"] == [
        {"requests": 3, "input_tokens": 3300, "cached_tokens": 2048},
        {"requests": 2, "input_tokens": 2200, "cached_tokens": 1024},
    ]
    table = subprocess.run([sys.executable, "-m", "course_lib.cli", "fleet", "--trace", "synthetic", "--replicas", "2",
                            "--policy", "kv_aware"], capture_output=True, text=True, check=True).stdout  # fmt: skip
    assert "3993 requests" in table and "fleet hit rate" in table
    conv = json.loads(subprocess.run([sys.executable, "-m", "course_lib.cli", "fleet", "--trace", "conversation",
                                      "--replicas", "3", "--policy", "consistent_hash", "--json"],
                                     capture_output=True, text=True, check=True).stdout)  # fmt: skip
    assert conv["requests"] == 12031 and len(conv["per_replica"]) == 3
    assert sum(r["requests"] for r in conv["per_replica"]) == 12031
    assert conv["hit_rate"] == pytest.approx(sum(r["cached_tokens"] for r in conv["per_replica"]) / conv["input_tokens"], abs=1e-6)


# sha256 of every replay's (assignments, cached tokens per request, oversize requests) over the
# grid of _grid_digest, per policy, as computed by course_lib/fleet.py at commit 77914da (the
# one-function simulator, before the policy objects and the tier): `git show
# 77914da:course_lib/fleet.py > /tmp/fleet_old.py` and the same loops over its simulate_fleet.
# cache_aware's rule changed after that on purpose (a miss goes to the least-loaded replica, as
# vllm-router 0.1.17 does, not to the smallest history; test_cache_aware_follows_vllm_router_0_1_17):
# its digest is the refactored code's (commit 19f8bbd reproduced 77914da's "898f432cef765aa9").
PINNED_BEFORE_REFACTOR = {
    "round_robin": "ee06bc39fbcbdb5e",
    "random": "e157517bf64b7877",
    "consistent_hash": "645b7414b050e044",
    "cache_aware": "110c18b602ecc418",
    "kv_aware": "9e295234b883f521",
    "pooled": "4f5c1b5b63c42859",
}


def _grid_digest(policy: str, **extra: object) -> str:
    conv, syn = load_trace("conversation")[:1500], load_trace("synthetic")[:800]
    h = hashlib.sha256()
    for trace in (conv, syn):
        for replicas in (1, 3, 8):
            for cap in (300 * 512, 3000 * 512):
                for conc in (1, 8, 100):
                    res = simulate_fleet(trace, replicas, cap, policy, concurrency=conc, **extra)  # type: ignore[arg-type]
                    h.update(json.dumps([res.assignments, res.cached_per_request, res.oversize_requests]).encode())
    return h.hexdigest()[:16]


@pytest.mark.parametrize("policy", POLICIES)
def test_no_tier_replays_exactly_as_before_the_refactor(policy):
    assert _grid_digest(policy, tier2_capacity_tokens=0) == PINNED_BEFORE_REFACTOR[policy]


def test_tier_zero_is_no_tier(conversation):
    requests = conversation[:2000]
    for policy in POLICIES:
        a = simulate_fleet(requests, 4, 400 * 512, policy, concurrency=8)
        b = simulate_fleet(requests, 4, 400 * 512, policy, concurrency=8, tier2_capacity_tokens=0)
        assert (a.assignments, a.cached_per_request, a.per_replica) == (b.assignments, b.cached_per_request, b.per_replica)
        assert b.tier2_hit_rate == 0.0 and b.tier2_capacity_tokens == 0 and b.to_dict()["tier2_hit_rate"] == 0.0


def _reference_tier_hits(requests, local_blocks_per_request, tier_blocks, bs):
    """An LRU of block ids fed as the tier is: read past the local hit, written for computed blocks."""
    lru: OrderedDict[int, None] = OrderedDict()
    hits = []
    for req, local, oversize in local_blocks_per_request:
        cap, full = (req.input_length - 1) // bs, req.input_length // bs
        k = local
        while k < cap and req.hash_ids[k] in lru:
            k += 1
        hits.append((k - local) * bs)
        if oversize:
            continue  # never scheduled: nothing read, nothing written
        for h in req.hash_ids[local:full]:  # read (k) and written (the rest): both become most recent
            lru[h] = None
            lru.move_to_end(h)
            if len(lru) > tier_blocks:
                lru.popitem(last=False)
    return hits


@pytest.mark.parametrize("policy,tier_blocks", [("round_robin", 2000), ("round_robin", 30_000), ("kv_aware", 5000),
                                                ("consistent_hash", 5000)])  # fmt: skip
def test_tier_hits_are_an_lru_behind_unchanged_local_caches(conversation, policy, tier_blocks):
    bs = MOONCAKE_BLOCK_TOKENS
    requests = conversation[:3000]
    cap = 300 * bs
    alone = simulate_fleet(requests, 4, cap, policy, concurrency=8)
    tiered = simulate_fleet(requests, 4, cap, policy, concurrency=8, tier2_capacity_tokens=tier_blocks * bs)
    # the tier changes no routing and no local cache: local hits are the no-tier replay's
    assert tiered.assignments == alone.assignments
    local = [c - t for c, t in zip(tiered.cached_per_request, tiered.tier2_per_request)]
    assert local == alone.cached_per_request
    oversize = [-(-r.input_length // bs) > 300 for r in requests]
    expected = _reference_tier_hits(requests, [(r, c // bs, o) for r, c, o in zip(requests, local, oversize)], tier_blocks, bs)
    assert tiered.tier2_per_request == expected
    assert sum(expected) > 0
    assert tiered.hit_rate == pytest.approx(alone.hit_rate + tiered.tier2_hit_rate)
    assert all(c <= r.input_length - 1 for c, r in zip(tiered.cached_per_request, requests))


def test_an_unbounded_tier_makes_round_robin_the_pooled_bound(conversation):
    # Every computed block stays in the tier, so every request finds its whole seen prefix:
    # the rate computed independently in test_pooled_with_room_for_everything_is_prefix_blocks_seen.
    bs = MOONCAKE_BLOCK_TOKENS
    requests = conversation[:3000]
    biggest = max(-(-r.input_length // bs) for r in requests)
    total = sum(-(-r.input_length // bs) for r in requests)
    res = simulate_fleet(requests, 8, biggest * bs, "round_robin", tier2_capacity_tokens=total * bs)
    assert res.oversize_requests == 0
    assert res.hit_rate == pytest.approx(prefix_blocks_seen(requests))
    assert res.tier2_hit_rate > 0.5 * res.hit_rate  # most of it came from the tier


def test_shared_tier_is_lru():
    tier = SharedTier(3)
    tier.write([1, 2, 3])
    assert tier.prefix_after([1, 2, 3, 4], 0, 4) == 3
    tier.touch([1])  # 1 becomes the most recent; 2 is the least recently used
    tier.write([4])
    assert 2 not in tier and all(h in tier for h in (1, 3, 4)) and tier.evictions == 1
    assert tier.prefix_after([1, 2, 3], 0, 3) == 1 and tier.prefix_after([9, 3, 4, 1], 1, 3) == 2
    with pytest.raises(CourseError, match="at least one block"):
        SharedTier(0)
    with pytest.raises(CourseError, match="less than one block"):
        simulate_fleet([], 2, 10_000, "round_robin", tier2_capacity_tokens=100)


def test_cli_tier2_capacity_tokens():
    def run(*extra: str) -> dict:
        out = subprocess.run([sys.executable, "-m", "course_lib.cli", "fleet", "--trace", "conversation", "--replicas", "8",
                              "--capacity-tokens", "1000000", "--policy", "round_robin", "--json", *extra],
                             capture_output=True, text=True, check=True)  # fmt: skip
        return json.loads(out.stdout)

    base, tiered = run(), run("--tier2-capacity-tokens", "8000000")
    reqs = load_trace("conversation")
    res = simulate_fleet(reqs, 8, 1_000_000, "round_robin", tier2_capacity_tokens=8_000_000)
    assert base["tier2_hit_rate"] == 0.0 and base["tier2_capacity_tokens"] == 0
    assert tiered["tier2_capacity_tokens"] == 8_000_000 // 512 * 512
    assert tiered["hit_rate"] == round(res.hit_rate, 6) and tiered["tier2_hit_rate"] == round(res.tier2_hit_rate, 6)
    # hit_rate stays the total: the local part is the replay without a tier
    assert tiered["hit_rate"] - tiered["tier2_hit_rate"] == pytest.approx(base["hit_rate"], abs=2e-6)
    assert sum(r["tier2_cached_tokens"] for r in tiered["per_replica"]) == res.tier2_cached_tokens


def test_cache_aware_follows_vllm_router_0_1_17():
    # src/policies/cache_aware.rs (select_prepared): below the threshold every replica is a
    # candidate, then min_by_key(load), whose ties go to the first replica.
    fresh = [FleetRequest((100 + i, 200 + i, 300 + i), 3 * 512 + 10) for i in range(12)]
    seq = simulate_fleet(fresh, 4, 100_000, "cache_aware")
    assert seq.assignments == [0] * 12  # nothing in flight: every new prefix goes to replica 0
    conc = simulate_fleet(fresh, 4, 100_000, "cache_aware", concurrency=3)
    assert conc.assignments == [0, 1, 2] * 4  # 2 others in flight: the first idle replica
    # a request whose prefix (2 of 3 full blocks > 0.3) was sent to replica 2 follows it, even when busy
    follow = [*fresh[:3], FleetRequest((102, 202, 999), 3 * 512 + 10)]
    assert simulate_fleet(follow, 4, 100_000, "cache_aware", concurrency=3).assignments == [0, 1, 2, 2]
