"""A fleet of vLLM replicas behind a router, simulated on real production traces.

Taught in ``notebooks/07_fleet.ipynb``. One replica keeps its own prefix cache; with N
replicas, where each request goes decides whether its prefix is found. This module
replays a trace of requests given as **block ids** (the Mooncake FAST'25 traces shipped
in ``course_lib/data/mooncake/``, 512-token blocks) through N replicas, each with the
exact bookkeeping of ``course_lib.simulator.PrefixCacheSimulator`` (vLLM 0.32.0's
``BlockPool`` and ``KVCacheManager``, one request at a time), and a routing policy:

- ``round_robin``, ``random`` (seeded): ignore the cache;
- ``consistent_hash``: a hash ring (160 virtual nodes per replica, as vllm-router's
  ``src/policies/consistent_hash.rs``) keyed by a conversation key (the request's
  ``session`` if it has one, else its first ``key_blocks`` block ids);
- ``cache_aware``: vllm-router's approximate policy (``src/policies/cache_aware.rs``):
  a per-replica history of what the router sent there (not the real cache: it never
  hears about evictions); if load is imbalanced (``max - min > balance_abs_threshold``
  and ``max > min * balance_rel_threshold``) the least-loaded replica, else the replica
  with the longest prefix match if ``match / blocks > cache_threshold``, else the
  replica with the smallest history ("most free cache");
- ``kv_aware``: exact knowledge of every replica's cache (what KV-cache events give
  vllm-router's ``src/policies/kv_aware.rs``, including its speculative entries for
  requests still in flight): the longest cached prefix wins (ties: the last such replica,
  as Rust's ``max_by_key``) if it covers more than ``cache_threshold`` of the request's
  blocks, else the least-loaded replica (ties: the one sent the fewest requests).
  vllm-router's own kv_aware has no threshold (any hit wins; no hit -> least loaded,
  ties -> the first replica): with a system prompt shared by every request, as in the
  Mooncake conversation trace, and sequential traffic, that sends everything to one
  replica. ``cache_threshold=0`` reproduces the any-hit rule;
- ``pooled``: one shared cache of the same total capacity (what Mooncake's store and
  LMCache aim at); requests are spread round robin only for the load columns.

Load is the number of requests in flight on a replica. A trace replay is sequential, so
in-flight is modelled by a window: with ``concurrency=k`` the previous ``k - 1`` routed
requests are still running when a request arrives (``concurrency=1``: nothing is).

What the trace cannot tell, and so is not modelled: generated tokens (the trace has no
ids for them: each request is replayed as if ``max_tokens=1``), and requests running at
the same time on one replica (a replay runs each to completion before the next; on a
live server two concurrent requests with a new prefix both miss). A request needing more
blocks than a replica holds could never be scheduled by vLLM: it is counted (its hits
from the lookup) but leaves the cache unchanged (``oversize_requests``).

Hit rate is token-weighted as vLLM counts it (``vllm:prefix_cache_hits / _queries``):
full blocks of the longest cached prefix, never more than ``input_length - 1`` tokens.
"""

from __future__ import annotations

import bisect
import hashlib
import json
import random
import sys
from collections import OrderedDict
from dataclasses import asdict, dataclass, field
from typing import Callable, Sequence

from course_lib.engine import CourseError
from course_lib.traces import MOONCAKE_BLOCK_TOKENS, FleetRequest, load_trace

POLICIES = ("round_robin", "random", "consistent_hash", "cache_aware", "kv_aware", "pooled")
#: vllm-router 0.1.17's defaults (``vllm-router --help``).
CACHE_THRESHOLD, BALANCE_ABS_THRESHOLD, BALANCE_REL_THRESHOLD = 0.3, 64, 1.5
VIRTUAL_NODES_PER_REPLICA = 160


class BlockCache:
    """One replica's prefix cache at block-id level: ``PrefixCacheSimulator``'s semantics.

    ``capacity_blocks`` blocks hold KV (vLLM's ``num_gpu_blocks - 1``: the null block is
    not counted). Free queue in eviction order; hit blocks leave it; new blocks are popped
    from the front (evicting their hash); a request's blocks return in reverse order,
    blocks without a hash (the partial last block) to the FRONT, cached ones to the BACK.
    ``on_store(h)`` / ``on_remove(h)`` fire when a hash becomes servable / stops being
    servable: exactly the ``BlockStored`` / ``BlockRemoved`` KV-cache events of vLLM.
    """

    def __init__(self, capacity_blocks: int, block_size: int = MOONCAKE_BLOCK_TOKENS,
                 on_store: Callable[[int], None] | None = None,
                 on_remove: Callable[[int], None] | None = None) -> None:  # fmt: skip
        if capacity_blocks < 1:
            raise CourseError(f"a replica needs at least one block of {block_size} tokens (capacity_blocks={capacity_blocks})")
        self.capacity_blocks = capacity_blocks
        self.block_size = block_size
        # The free queue is _front ++ [never-used blocks _fresh..capacity] ++ _back (so a huge
        # pool costs nothing until used): blocks freed to the front go before the never-used
        # ones, blocks freed to the back after them, as in vLLM's single queue.
        self._front: OrderedDict[int, None] = OrderedDict()
        self._back: OrderedDict[int, None] = OrderedDict()
        self._fresh = 1
        self._hash: dict[int, int] = {}  # block -> the id it holds (absent: no hash)
        self._cached: dict[int, list[int]] = {}
        self._on_store, self._on_remove = on_store, on_remove

    def __contains__(self, h: object) -> bool:
        return h in self._cached

    def cached_ids(self) -> set[int]:
        """Every block id this cache can serve now."""
        return set(self._cached)

    def prefix_blocks(self, hash_ids: Sequence[int]) -> int:
        """Leading blocks of ``hash_ids`` that are cached (no cap): what a KV-aware router scores."""
        n = 0
        cached = self._cached
        for h in hash_ids:
            if h not in cached:
                break
            n += 1
        return n

    def lookup(self, hash_ids: Sequence[int], input_length: int) -> int:
        """Cached tokens the request would get now (full blocks, at most ``input_length - 1``)."""
        cap = (input_length - 1) // self.block_size
        return self.prefix_blocks(hash_ids[:cap]) * self.block_size

    def process(self, hash_ids: Sequence[int], input_length: int) -> int:
        """Run one request (``max_tokens=1``) and return its cached tokens."""
        bs = self.block_size
        num_blocks = -(-input_length // bs)
        if len(hash_ids) < input_length // bs:
            raise CourseError(f"{len(hash_ids)} block ids cannot cover {input_length} tokens at {bs} tokens per block")
        cap = (input_length - 1) // bs
        cached = self._cached
        hit: list[int] = []
        for h in hash_ids[:cap]:
            ids = cached.get(h)
            if not ids:
                break
            hit.append(ids[0])
        if num_blocks > self.capacity_blocks:
            return len(hit) * bs  # vLLM could never schedule it: counted, cache unchanged
        front, back = self._front, self._back
        for b in hit:  # touch: hit blocks leave the free queue
            if b in front:
                del front[b]
            else:
                del back[b]
        blocks = list(hit)
        block_hash = self._hash
        for _ in range(num_blocks - len(hit)):  # get_new_blocks: pop the front, evict its hash
            if front:
                b = front.popitem(last=False)[0]
            elif self._fresh <= self.capacity_blocks:
                b = self._fresh
                self._fresh += 1
            else:
                b = back.popitem(last=False)[0]
            if b in block_hash:
                self._evict(b)
            blocks.append(b)
        full = input_length // bs
        for i in range(len(hit), full):  # cache_full_blocks (no de-duplication)
            b, h = blocks[i], hash_ids[i]
            block_hash[b] = h
            holders = cached.get(h)
            if holders is None:
                cached[h] = [b]
                if self._on_store:
                    self._on_store(h)
            else:
                holders.append(b)
        # free_blocks(reversed(blocks)): no hash -> front of the queue, cached -> back
        for b in reversed(blocks):
            if b not in block_hash:
                front[b] = None
                front.move_to_end(b, last=False)
        for b in reversed(blocks):
            if b in block_hash:
                back[b] = None
        return len(hit) * bs

    def free_queue(self) -> list[int]:
        """Free block ids in eviction order (block ids start at 1, as in vLLM: 0 is the null block)."""
        return [*self._front, *range(self._fresh, self.capacity_blocks + 1), *self._back]

    def _evict(self, b: int) -> None:
        h = self._hash.pop(b)
        ids = self._cached[h]
        ids.remove(b)
        if not ids:
            del self._cached[h]
            if self._on_remove:
                self._on_remove(h)


@dataclass
class ReplicaStats:
    """What one replica served: requests, prompt tokens (queries) and cached tokens (hits)."""

    requests: int = 0
    input_tokens: int = 0
    cached_tokens: int = 0

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
    def hit_rate(self) -> float:
        """Fleet hit rate: sum of cached tokens / sum of prompt tokens (vLLM's counters, summed)."""
        return self.cached_tokens / self.input_tokens if self.input_tokens else 0.0

    def imbalance(self, by: str = "input_tokens") -> float:
        """Load imbalance max/mean over replicas (``by="requests"`` or ``"input_tokens"``); 1.0 is even."""
        values = [getattr(r, by) for r in self.per_replica]
        mean = sum(values) / len(values)
        return max(values) / mean if mean else 1.0

    def to_dict(self) -> dict[str, object]:
        """A JSON-ready summary (what ``course fleet --json`` prints)."""
        return {
            "policy": self.policy, "replicas": self.replicas, "capacity_tokens": self.capacity_tokens,
            "requests": self.requests, "input_tokens": self.input_tokens, "cached_tokens": self.cached_tokens,
            "hit_rate": round(self.hit_rate, 6), "imbalance_requests": round(self.imbalance("requests"), 6),
            "imbalance_input_tokens": round(self.imbalance("input_tokens"), 6),
            "oversize_requests": self.oversize_requests,
            "per_replica": [asdict(r) for r in self.per_replica],
        }  # fmt: skip


def _ring_position(key: str) -> int:
    return int.from_bytes(hashlib.sha256(key.encode()).digest()[:8], "big")


class _Ring:
    """A consistent-hash ring: ``VIRTUAL_NODES_PER_REPLICA`` points per replica."""

    def __init__(self, replicas: int) -> None:
        points = sorted((_ring_position(f"replica-{r}:{v}"), r) for r in range(replicas)
                        for v in range(VIRTUAL_NODES_PER_REPLICA))  # fmt: skip
        self._keys = [p for p, _ in points]
        self._owner = [r for _, r in points]

    def lookup(self, key: str) -> int:
        i = bisect.bisect_left(self._keys, _ring_position(key))
        return self._owner[i % len(self._keys)]


def conversation_key(req: FleetRequest, key_blocks: int = 2) -> str:
    """The ``consistent_hash`` key: the request's session, else its first ``key_blocks`` ids.

    In the Mooncake conversation trace every request starts with the same block (a shared
    system prompt), so one block would send all traffic to one replica; two blocks name
    the conversation.
    """
    if req.session is not None:
        return req.session
    return ",".join(map(str, req.hash_ids[:key_blocks]))


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
    progress: Callable[[int, int], None] | None = None,
) -> FleetResult:
    """Replay ``requests`` through ``replicas`` caches of ``capacity_tokens`` each under ``policy``.

    ``capacity_tokens`` per replica is rounded down to whole blocks. ``concurrency`` is
    the in-flight window the load-aware policies see (module docstring). ``progress(i, n)``
    is called every 1000 requests.
    """
    if policy not in POLICIES:
        raise CourseError(f"unknown policy {policy!r}: choose one of {', '.join(POLICIES)}")
    if replicas < 1:
        raise CourseError(f"replicas must be >= 1, not {replicas}")
    if concurrency < 1:
        raise CourseError(f"concurrency must be >= 1, not {concurrency}")
    cap_blocks = capacity_tokens // block_size
    if cap_blocks < 1:
        raise CourseError(f"capacity_tokens={capacity_tokens} is less than one block of {block_size} tokens")
    stats = [ReplicaStats() for _ in range(replicas)]
    assignments: list[int] = []
    cached_per_request: list[int] = []
    oversize = 0
    n = len(requests)

    # kv_aware's index: block id -> replicas whose cache holds it (fed by store/remove events).
    owners: dict[int, set[int]] = {}

    def make_cache(r: int, blocks: int) -> BlockCache:
        if policy != "kv_aware":
            return BlockCache(blocks, block_size)

        def store(h: int) -> None:
            owners.setdefault(h, set()).add(r)

        def remove(h: int) -> None:
            s = owners[h]
            s.discard(r)
            if not s:
                del owners[h]

        return BlockCache(blocks, block_size, on_store=store, on_remove=remove)

    if policy == "pooled":
        caches = [BlockCache(cap_blocks * replicas, block_size)]
    else:
        caches = [make_cache(r, cap_blocks) for r in range(replicas)]
    rng = random.Random(seed)
    ring = _Ring(replicas) if policy == "consistent_hash" else None
    # cache_aware's approximate per-replica history: block id -> replicas it was sent to.
    history: dict[int, set[int]] = {}
    history_size = [0] * replicas
    loads = [0] * replicas
    window: list[int] = []  # replicas of the requests still in flight
    # kv_aware's speculative entries for in-flight requests: block id -> {replica: count}
    speculative: dict[int, dict[int, int]] = {}
    inflight_ids: list[tuple[int, Sequence[int]]] = []

    def longest(index: dict, ids: Sequence[int]) -> tuple[int, set[int]]:
        cands: set[int] | None = None
        depth = 0
        for h in ids:
            holders = index.get(h)
            if not holders:
                break
            nxt = set(holders) if cands is None else cands.intersection(holders)
            if not nxt:
                break
            cands, depth = nxt, depth + 1
        return depth, cands or set()

    for i, req in enumerate(requests):
        ids = req.hash_ids
        full = req.input_length // block_size
        if policy == "round_robin" or policy == "pooled":
            r = i % replicas
        elif policy == "random":
            r = rng.randrange(replicas)
        elif policy == "consistent_hash":
            r = ring.lookup(conversation_key(req, key_blocks))  # type: ignore[union-attr]
        else:
            lo, hi = min(loads), max(loads)
            if replicas > 1 and hi - lo > balance_abs_threshold and hi > lo * balance_rel_threshold:
                r = loads.index(lo)
            elif policy == "cache_aware":
                depth, cands = longest(history, ids[:full])
                if full and depth / full > cache_threshold:
                    r = min(cands)
                else:
                    r = history_size.index(min(history_size))
            else:  # kv_aware
                depth, cands = longest(owners, ids[:full])
                sdepth, scands = longest(speculative, ids[:full]) if speculative else (0, set())
                if sdepth > depth:
                    depth, cands = sdepth, scands
                if depth and depth / full > cache_threshold:
                    r = max(cands)
                else:  # least loaded; ties: the replica that was sent the fewest requests
                    r = min((l, stats[k].requests, k) for k, l in enumerate(loads))[2]
        # the routing decision is made; now the replica serves the request
        if policy == "cache_aware":
            for h in ids[:full]:
                s = history.setdefault(h, set())
                if r not in s:
                    s.add(r)
                    history_size[r] += 1
        cache = caches[0] if policy == "pooled" else caches[r]
        if -(-req.input_length // block_size) > cache.capacity_blocks:
            oversize += 1
        got = cache.process(ids, req.input_length)
        st = stats[r]
        st.requests += 1
        st.input_tokens += req.input_length
        st.cached_tokens += got
        assignments.append(r)
        cached_per_request.append(got)
        if concurrency > 1:
            window.append(r)
            loads[r] += 1
            if policy == "kv_aware":
                for h in ids[:full]:
                    speculative.setdefault(h, {}).setdefault(r, 0)
                    speculative[h][r] += 1
                inflight_ids.append((r, ids[:full]))
            if len(window) >= concurrency:
                done = window.pop(0)
                loads[done] -= 1
                if policy == "kv_aware":
                    rr, done_ids = inflight_ids.pop(0)
                    for h in done_ids:
                        d = speculative[h]
                        d[rr] -= 1
                        if not d[rr]:
                            del d[rr]
                        if not d:
                            del speculative[h]
        if progress and (i + 1) % 1000 == 0:
            progress(i + 1, n)
    return FleetResult(policy, replicas, cap_blocks * block_size, stats, assignments, cached_per_request, oversize)


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
            concurrency: int = 1, seed: int = 0) -> int:  # fmt: skip
    """``course fleet``: one replay, printed as a table or as one JSON object."""
    requests = load_trace(trace)
    result = simulate_fleet(requests, replicas, capacity_tokens, policy, concurrency=concurrency, seed=seed)
    if as_json:
        print(json.dumps(result.to_dict() | {"trace": trace}))
        return 0
    print(f"trace {trace}: {result.requests} requests, {replicas} replicas x {result.capacity_tokens:,} tokens, policy {policy}")
    print(f"fleet hit rate {result.hit_rate:.3f}  imbalance (max/mean input tokens) {result.imbalance():.2f}"
          + (f"  oversize requests {result.oversize_requests}" if result.oversize_requests else ""))  # fmt: skip
    print(f"{'replica':>7} {'requests':>9} {'input tokens':>13} {'cached tokens':>14} {'hit rate':>9}")
    for r, s in enumerate(result.per_replica):
        print(f"{r:>7} {s.requests:>9} {s.input_tokens:>13,} {s.cached_tokens:>14,} {s.hit_rate:>9.3f}")
    return 0
