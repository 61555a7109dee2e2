"""A fleet of vLLM replicas behind a router, simulated on real production traces.

Taught in ``notebooks/07_fleet.ipynb`` (and its shared tier in ``notebooks/09_second_tier.ipynb``).
One replica keeps its own prefix cache; with N replicas, where each request goes decides
whether its prefix is found. ``simulate_fleet`` replays a trace of requests given as
**block ids** (the Mooncake FAST'25 traces shipped in ``course_lib/data/mooncake/``,
512-token blocks) through N replicas, each a ``cache.BlockCache`` with the exact bookkeeping
of ``course_lib.simulator.PrefixCacheSimulator`` (vLLM 0.32.0's ``BlockPool`` and
``KVCacheManager``, one request at a time), and a routing policy from ``policies``
(one object per policy, with one method, ``pick``, as vllm-router's ``src/policies/``):

- ``round_robin``, ``random`` (seeded): ignore the cache;
- ``consistent_hash``: a hash ring keyed by a conversation key;
- ``cache_aware``: vllm-router's approximate policy, a history of what it sent where;
- ``kv_aware``: exact knowledge of every replica's cache, from its KV-cache events;
- ``pooled``: one shared cache of the same total capacity (what Mooncake's store and
  LMCache aim at); requests are spread round robin only for the load columns.

Each policy's docstring gives its rule and the vllm-router source it follows.

``tier2_capacity_tokens=C`` adds a second tier (``cache.SharedTier``): one LRU pool of C
tokens behind every replica's local cache. A block is written to it when a replica computes
it; a request's prefix comes from local blocks first, then from tier blocks (loaded into
the replica, as a vLLM KV connector does). ``hit_rate`` counts both; ``tier2_hit_rate`` the
tier's part. The local caches evolve exactly as without a tier (a block loaded from the tier
takes a new local block, as a computed one would), so ``C = 0`` is the replay without it.

Load is the number of requests in flight on a replica. A trace replay is sequential, so
in-flight is modelled by a window: with ``concurrency=k`` the previous ``k - 1`` routed
requests are still running when a request arrives (``concurrency=1``: nothing is). The
window changes only what the load-aware policies see, never a cache: every request is
served before the next one looks up the cache.

What the trace cannot tell, and so is not modelled: generated tokens (the trace has no
ids for them: each request is replayed as if ``max_tokens=1``), and requests running at
the same time on one replica. That second approximation is mild: vLLM registers a block's
hash when the block is allocated for a step (``allocate_slots`` in
``vllm/v1/core/kv_cache_manager.py``), and a waiting request looks up the cache when it is
admitted (``vllm/v1/core/sched/scheduler.py``), so a request admitted after another with
the same prefix hits even while that one runs. A live server falls below the replay when
a prompt is prefilled in chunks (the CPU server's step budget is 2,048 tokens,
``vllm/engine/arg_utils.py``: blocks of a chunk not yet scheduled are not yet registered)
and when requests arrive in another order than they were sent. A request needing more
blocks than a replica holds could never be scheduled by vLLM: it is counted (its hits
from the lookup) but leaves the caches unchanged (``oversize_requests``).

Hit rate is token-weighted as vLLM counts it (``vllm:prefix_cache_hits / _queries``):
full blocks of the longest cached prefix, never more than ``input_length - 1`` tokens.
"""

from __future__ import annotations

import json
import sys
from dataclasses import asdict, dataclass, field
from typing import Callable, Sequence

from course_lib.engine import CourseError
from course_lib.fleet.cache import BlockCache, SharedTier
from course_lib.fleet.policies import (
    BALANCE_ABS_THRESHOLD,
    BALANCE_REL_THRESHOLD,
    CACHE_THRESHOLD,
    POLICIES,
    POLICY_CLASSES,
    VIRTUAL_NODES_PER_REPLICA,
    CacheAware,
    ConsistentHash,
    FleetState,
    KvAware,
    Policy,
    conversation_key,
    longest_prefix,
)
from course_lib.traces import MOONCAKE_BLOCK_TOKENS, FleetRequest, load_trace

__all__ = [
    "BALANCE_ABS_THRESHOLD", "BALANCE_REL_THRESHOLD", "CACHE_THRESHOLD", "POLICIES", "POLICY_CLASSES",
    "VIRTUAL_NODES_PER_REPLICA", "BlockCache", "FleetResult", "FleetState", "Policy", "ReplicaStats",
    "SharedTier", "conversation_key", "longest_prefix", "make_policy", "run_cli", "simulate_fleet", "sweep",
]  # fmt: skip


@dataclass
class ReplicaStats:
    """What one replica served: requests, prompt tokens (queries), cached tokens (hits), and hits from the tier."""

    requests: int = 0
    input_tokens: int = 0
    cached_tokens: int = 0
    tier2_cached_tokens: int = 0

    @property
    def hit_rate(self) -> float:
        return self.cached_tokens / self.input_tokens if self.input_tokens else 0.0


@dataclass
class FleetResult:
    """A replay's outcome: fleet hit rate, per-replica counters, where each request went."""

    policy: str
    replicas: int
    capacity_tokens: int
    per_replica: list[ReplicaStats]
    assignments: list[int] = field(repr=False)
    cached_per_request: list[int] = field(repr=False)
    oversize_requests: int = 0
    tier2_capacity_tokens: int = 0
    tier2_per_request: list[int] = field(default_factory=list, repr=False)

    @property
    def requests(self) -> int:
        return sum(r.requests for r in self.per_replica)

    @property
    def input_tokens(self) -> int:
        return sum(r.input_tokens for r in self.per_replica)

    @property
    def cached_tokens(self) -> int:
        return sum(r.cached_tokens for r in self.per_replica)

    @property
    def tier2_cached_tokens(self) -> int:
        return sum(r.tier2_cached_tokens for r in self.per_replica)

    @property
    def hit_rate(self) -> float:
        """Fleet hit rate, local and tier hits together: sum of cached tokens / sum of prompt tokens."""
        return self.cached_tokens / self.input_tokens if self.input_tokens else 0.0

    @property
    def tier2_hit_rate(self) -> float:
        """The part of ``hit_rate`` served by the shared tier (vLLM counts it in ``vllm:external_prefix_cache_hits``)."""
        return self.tier2_cached_tokens / self.input_tokens if self.input_tokens else 0.0

    def imbalance(self, by: str = "input_tokens") -> float:
        """Load imbalance max/mean over replicas (``by="requests"`` or ``"input_tokens"``); 1.0 is even."""
        values = [getattr(r, by) for r in self.per_replica]
        mean = sum(values) / len(values)
        return max(values) / mean if mean else 1.0

    def to_dict(self) -> dict[str, object]:
        """A JSON-ready summary (what ``course fleet --json`` prints)."""
        per_replica = [asdict(r) for r in self.per_replica]
        if not self.tier2_capacity_tokens:
            for d in per_replica:
                del d["tier2_cached_tokens"]
        return {
            "policy": self.policy, "replicas": self.replicas, "capacity_tokens": self.capacity_tokens,
            "tier2_capacity_tokens": self.tier2_capacity_tokens,
            "requests": self.requests, "input_tokens": self.input_tokens, "cached_tokens": self.cached_tokens,
            "hit_rate": round(self.hit_rate, 6), "tier2_hit_rate": round(self.tier2_hit_rate, 6),
            "imbalance_requests": round(self.imbalance("requests"), 6),
            "imbalance_input_tokens": round(self.imbalance("input_tokens"), 6),
            "oversize_requests": self.oversize_requests,
            "per_replica": per_replica,
        }  # fmt: skip


def make_policy(policy: str, replicas: int, *, block_size: int = MOONCAKE_BLOCK_TOKENS, seed: int = 0,
                key_blocks: int = 2, cache_threshold: float = CACHE_THRESHOLD,
                balance_abs_threshold: int = BALANCE_ABS_THRESHOLD,
                balance_rel_threshold: float = BALANCE_REL_THRESHOLD) -> Policy:  # fmt: skip
    """The policy object named ``policy`` (one of ``POLICIES``), with the options it uses."""
    if policy not in POLICY_CLASSES:
        raise CourseError(f"unknown policy {policy!r}: choose one of {', '.join(POLICIES)}")
    cls = POLICY_CLASSES[policy]
    if policy == "random":
        return cls(replicas, seed=seed)  # type: ignore[call-arg]
    if policy == "consistent_hash":
        return cls(replicas, key_blocks=key_blocks)  # type: ignore[call-arg]
    if issubclass(cls, (CacheAware, KvAware)):
        return cls(replicas, block_size=block_size, cache_threshold=cache_threshold,
                   balance_abs_threshold=balance_abs_threshold, balance_rel_threshold=balance_rel_threshold)  # fmt: skip
    return cls(replicas)


def simulate_fleet(
    requests: Sequence[FleetRequest],
    replicas: int,
    capacity_tokens: int,
    policy: str = "round_robin",
    *,
    block_size: int = MOONCAKE_BLOCK_TOKENS,
    seed: int = 0,
    concurrency: int = 1,
    key_blocks: int = 2,
    cache_threshold: float = CACHE_THRESHOLD,
    balance_abs_threshold: int = BALANCE_ABS_THRESHOLD,
    balance_rel_threshold: float = BALANCE_REL_THRESHOLD,
    tier2_capacity_tokens: int = 0,
    progress: Callable[[int, int], None] | None = None,
) -> FleetResult:
    """Replay ``requests`` through ``replicas`` caches of ``capacity_tokens`` each under ``policy``.

    ``capacity_tokens`` per replica is rounded down to whole blocks. ``concurrency`` is
    the in-flight window the load-aware policies see (module docstring).
    ``tier2_capacity_tokens`` > 0 puts one ``SharedTier`` of that size behind every replica
    (0: no tier, the same replay as without the argument). ``progress(i, n)`` is called
    every 1000 requests.
    """
    if replicas < 1:
        raise CourseError(f"replicas must be >= 1, not {replicas}")
    if concurrency < 1:
        raise CourseError(f"concurrency must be >= 1, not {concurrency}")
    if tier2_capacity_tokens < 0:
        raise CourseError(f"tier2_capacity_tokens must be >= 0, not {tier2_capacity_tokens}")
    router = make_policy(policy, replicas, block_size=block_size, seed=seed, key_blocks=key_blocks,
                         cache_threshold=cache_threshold, balance_abs_threshold=balance_abs_threshold,
                         balance_rel_threshold=balance_rel_threshold)  # fmt: skip
    cap_blocks = capacity_tokens // block_size
    if cap_blocks < 1:
        raise CourseError(f"capacity_tokens={capacity_tokens} is less than one block of {block_size} tokens")
    tier_blocks = tier2_capacity_tokens // block_size
    if tier2_capacity_tokens and tier_blocks < 1:
        raise CourseError(f"tier2_capacity_tokens={tier2_capacity_tokens} is less than one block of {block_size} tokens")
    tier = SharedTier(tier_blocks) if tier_blocks else None
    if policy == "pooled":
        caches = [BlockCache(cap_blocks * replicas, block_size)]
    elif isinstance(router, KvAware):  # its index is fed by the replicas' KV-cache events
        caches = [BlockCache(cap_blocks, block_size, on_store=lambda h, r=r: router.stored(r, h),
                             on_remove=lambda h, r=r: router.removed(r, h)) for r in range(replicas)]  # fmt: skip
    else:
        caches = [BlockCache(cap_blocks, block_size) for _ in range(replicas)]
    stats = [ReplicaStats() for _ in range(replicas)]
    state = FleetState([0] * replicas)
    assignments: list[int] = []
    cached_per_request: list[int] = []
    tier_per_request: list[int] = []
    window: list[tuple[FleetRequest, int]] = []  # requests still in flight, oldest first
    oversize = 0
    n = len(requests)
    for i, req in enumerate(requests):
        r = router.pick(req, state)
        cache = caches[0] if policy == "pooled" else caches[r]
        if -(-req.input_length // block_size) > cache.capacity_blocks:
            oversize += 1
        got, from_tier = cache.serve(req.hash_ids, req.input_length, tier)
        st = stats[r]
        st.requests += 1
        st.input_tokens += req.input_length
        st.cached_tokens += got
        st.tier2_cached_tokens += from_tier
        state.sent[r] += 1
        assignments.append(r)
        cached_per_request.append(got)
        tier_per_request.append(from_tier)
        window.append((req, r))  # in flight until `concurrency` newer requests have been sent
        state.loads[r] += 1
        if len(window) >= concurrency:
            done, dr = window.pop(0)
            state.loads[dr] -= 1
            router.finished(done, dr)
        if progress and (i + 1) % 1000 == 0:
            progress(i + 1, n)
    return FleetResult(policy, replicas, cap_blocks * block_size, stats, assignments, cached_per_request, oversize,
                       tier_blocks * block_size, tier_per_request)  # fmt: skip


def sweep(
    requests: Sequence[FleetRequest],
    points: Sequence[dict[str, object]],
    *,
    progress: bool = True,
    **common: object,
) -> list[FleetResult]:
    """Run ``simulate_fleet`` for each dict of arguments in ``points`` (plus ``common``), with a progress bar."""
    results = []
    bar = None
    if progress:
        try:
            from tqdm.auto import tqdm

            bar = tqdm(total=len(points), desc="fleet sweep", file=sys.stdout)
        except ImportError:  # pragma: no cover
            bar = None
    for p in points:
        results.append(simulate_fleet(requests, **(common | p)))  # type: ignore[arg-type]
        if bar is not None:
            bar.update(1)
    if bar is not None:
        bar.close()
    return results


def run_cli(trace: str, replicas: int, capacity_tokens: int, policy: str, as_json: bool,
            concurrency: int = 1, seed: int = 0, tier2_capacity_tokens: int = 0) -> int:  # fmt: skip
    """``course fleet``: one replay, printed as a table or as one JSON object."""
    requests = load_trace(trace)
    result = simulate_fleet(requests, replicas, capacity_tokens, policy, concurrency=concurrency, seed=seed,
                            tier2_capacity_tokens=tier2_capacity_tokens)  # fmt: skip
    if as_json:
        print(json.dumps(result.to_dict() | {"trace": trace}))
        return 0
    print(f"trace {trace}: {result.requests} requests, {replicas} replicas x {result.capacity_tokens:,} tokens, policy {policy}")
    print(f"fleet hit rate {result.hit_rate:.3f}  imbalance (max/mean input tokens) {result.imbalance():.2f}"
          + (f"  oversize requests {result.oversize_requests}" if result.oversize_requests else ""))  # fmt: skip
    if result.tier2_capacity_tokens:
        print(f"shared tier of {result.tier2_capacity_tokens:,} tokens: {result.tier2_hit_rate:.3f} of the prompt tokens "
              f"came from it (included in the fleet hit rate)")
    print(f"{'replica':>7} {'requests':>9} {'input tokens':>13} {'cached tokens':>14} {'hit rate':>9}")
    for r, s in enumerate(result.per_replica):
        print(f"{r:>7} {s.requests:>9} {s.input_tokens:>13,} {s.cached_tokens:>14,} {s.hit_rate:>9.3f}")
    return 0
