"""Routing policies of the fleet simulator: one small object per policy, one method that picks a replica.

Taught in ``notebooks/07_fleet.ipynb``. The shape is vllm-router's (``src/policies/`` in
vllm-router 0.1.17): each policy implements ``select_worker``; here it is ``pick(req, state)``,
which returns a replica index. ``state`` is what a router can see of the fleet (requests in
flight and requests sent per replica); a policy keeps whatever else it needs (a hash ring, a
history of what it sent where, an index fed by KV-cache events) in its own attributes.
``finished`` is called when a request leaves the in-flight window (most policies ignore it).
"""

from __future__ import annotations

import bisect
import hashlib
import random
from dataclasses import dataclass, field
from typing import Iterable, Sequence

from course_lib.traces import MOONCAKE_BLOCK_TOKENS, FleetRequest

#: vllm-router 0.1.17's defaults (``vllm-router --help``).
CACHE_THRESHOLD, BALANCE_ABS_THRESHOLD, BALANCE_REL_THRESHOLD = 0.3, 64, 1.5
VIRTUAL_NODES_PER_REPLICA = 160


@dataclass
class FleetState:
    """What a router knows of its replicas: requests in flight (``loads``) and requests sent so far."""

    loads: list[int]
    sent: list[int] = field(default_factory=list)

    def __post_init__(self) -> None:
        if not self.sent:
            self.sent = [0] * len(self.loads)


class Policy:
    """A routing policy: ``pick`` chooses the replica of one request."""

    name = ""

    def __init__(self, replicas: int) -> None:
        self.replicas = replicas

    def pick(self, req: FleetRequest, state: FleetState) -> int:
        raise NotImplementedError

    def finished(self, req: FleetRequest, replica: int) -> None:
        """``req`` (sent to ``replica``) is no longer in flight."""


class RoundRobin(Policy):
    """Replica 0, 1, ..., N-1, 0, ...: the prompt is never read (``src/policies/round_robin.rs``)."""

    name = "round_robin"

    def __init__(self, replicas: int) -> None:
        super().__init__(replicas)
        self._next = 0

    def pick(self, req: FleetRequest, state: FleetState) -> int:
        r = self._next
        self._next = (r + 1) % self.replicas
        return r


class Pooled(RoundRobin):
    """One cache shared by all replicas; requests are spread round robin only for the load columns."""

    name = "pooled"


class Random(Policy):
    """A uniformly random replica, from a seeded generator (``src/policies/random.rs``)."""

    name = "random"

    def __init__(self, replicas: int, seed: int = 0) -> None:
        super().__init__(replicas)
        self._rng = random.Random(seed)

    def pick(self, req: FleetRequest, state: FleetState) -> int:
        return self._rng.randrange(self.replicas)


def _ring_position(key: str) -> int:
    return int.from_bytes(hashlib.sha256(key.encode()).digest()[:8], "big")


def conversation_key(req: FleetRequest, key_blocks: int = 2) -> str:
    """The ``consistent_hash`` key: the request's session, else its first ``key_blocks`` ids.

    In the Mooncake conversation trace every request starts with the same block (a shared
    system prompt), so one block would send all traffic to one replica; two blocks name
    the conversation.
    """
    if req.session is not None:
        return req.session
    return ",".join(map(str, req.hash_ids[:key_blocks]))


class ConsistentHash(Policy):
    """A hash ring with ``VIRTUAL_NODES_PER_REPLICA`` points per replica (``src/policies/consistent_hash.rs``).

    A request goes to the first point clockwise of its key's position: one conversation key,
    one replica, whatever the caches hold. The points are placed with SHA-256 here, with
    FurcHash in the router, so a key may land on another replica than live. The live router
    takes its key from, in order, the headers ``x-session-id``, ``x-user-id``, ``x-tenant-id``,
    ``x-correlation-id``, ``x-request-id``, ``x-trace-id``, then the body fields
    ``session_params.session_id``, ``user``, ``session_id``, ``user_id``, and only then a hash
    of the request body (``extract_hash_key`` in ``src/policies/hash_key.rs``).
    """

    name = "consistent_hash"

    def __init__(self, replicas: int, key_blocks: int = 2) -> None:
        super().__init__(replicas)
        self.key_blocks = key_blocks
        points = sorted((_ring_position(f"replica-{r}:{v}"), r) for r in range(replicas)
                        for v in range(VIRTUAL_NODES_PER_REPLICA))  # fmt: skip
        self._keys = [p for p, _ in points]
        self._owner = [r for _, r in points]

    def lookup(self, key: str) -> int:
        i = bisect.bisect_left(self._keys, _ring_position(key))
        return self._owner[i % len(self._keys)]

    def pick(self, req: FleetRequest, state: FleetState) -> int:
        return self.lookup(conversation_key(req, self.key_blocks))


def longest_prefix(index: dict, ids: Sequence[int]) -> tuple[int, set[int]]:
    """Depth of the longest prefix of ``ids`` some replica holds in ``index`` (block id -> replicas), and those replicas."""
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


class _LoadGuarded(Policy):
    """The guard vllm-router's cache-aware policies share: an imbalanced fleet goes to the least-loaded replica.

    Imbalanced means ``max - min > balance_abs_threshold`` and ``max > min * balance_rel_threshold``
    (``is_imbalanced`` in ``src/policies/cache_aware.rs``).
    """

    def __init__(self, replicas: int, block_size: int = MOONCAKE_BLOCK_TOKENS, cache_threshold: float = CACHE_THRESHOLD,
                 balance_abs_threshold: int = BALANCE_ABS_THRESHOLD,
                 balance_rel_threshold: float = BALANCE_REL_THRESHOLD) -> None:  # fmt: skip
        super().__init__(replicas)
        self.block_size = block_size
        self.cache_threshold = cache_threshold
        self.balance_abs_threshold = balance_abs_threshold
        self.balance_rel_threshold = balance_rel_threshold

    def imbalanced(self, loads: list[int]) -> bool:
        lo, hi = min(loads), max(loads)
        return self.replicas > 1 and hi - lo > self.balance_abs_threshold and hi > lo * self.balance_rel_threshold


class CacheAware(_LoadGuarded):
    """vllm-router's approximate policy (``src/policies/cache_aware.rs`` in 0.1.17): a history of what it sent where.

    The history is a tree of the prompts the router sent to each replica, not the real
    cache (the router never hears about evictions). Unless the fleet is imbalanced, the
    replicas with the longest match win if it covers more than ``cache_threshold`` of the
    request (the trace gives whole blocks, so full blocks here; the router counts tokens of
    the whole prompt); otherwise every replica is a candidate. Among the candidates, the
    least-loaded replica; ties go to the first one (Rust's ``min_by_key`` in
    ``select_prepared``). So with nothing in flight a new prefix always goes to replica 0 here;
    live, to the first worker of the router's list, whose order is its registry's (a ``DashMap``
    in ``src/core/worker_registry.rs``), not necessarily the order of ``--worker-urls``.
    """

    name = "cache_aware"

    def __init__(self, replicas: int, **options: float) -> None:
        super().__init__(replicas, **options)  # type: ignore[arg-type]
        self.history: dict[int, set[int]] = {}  # block id -> replicas it was sent to

    def pick(self, req: FleetRequest, state: FleetState) -> int:
        full = req.input_length // self.block_size
        ids = req.hash_ids[:full]
        loads = state.loads
        candidates: Iterable[int] = range(self.replicas)
        if not self.imbalanced(loads):
            depth, holders = longest_prefix(self.history, ids)
            if full and depth / full > self.cache_threshold:
                candidates = holders
        r = min(candidates, key=lambda k: (loads[k], k))
        for h in ids:  # the router records where it sent the prompt
            self.history.setdefault(h, set()).add(r)
        return r


class KvAware(_LoadGuarded):
    """Exact knowledge of every replica's cache, from its KV-cache events (``BlockStored`` / ``BlockRemoved``).

    The index (block id -> replicas holding it) is fed by ``stored`` / ``removed``, which the
    simulator wires to each replica's cache events. The course's rule, in order:

    1. an imbalanced fleet (the guard above) goes to the least-loaded replica;
    2. else the longest prefix held by some replica, counting speculative entries for the
       blocks of requests still in flight, wins if it covers more than ``cache_threshold``
       (0.3) of the request's full blocks; ties go to the highest replica index;
    3. else the least-loaded replica; ties: the one sent the fewest requests, then the lowest index.

    vllm-router 0.1.17's ``kv_aware`` (``src/policies/kv_aware.rs``) decides differently: no
    threshold, no speculative entries; it prices every replica as *(prompt tokens it would
    still compute + prefill tokens already queued there) x (requests running there + 1)*
    (``MultiplicativeScorer``) and takes the cheapest, ties to the first
    (``TemperaturePicker`` at temperature 0). So load enters every decision there; here it
    only breaks a miss. With nothing in flight its cost is the tokens still to compute, and a
    new conversation that shares one system-prompt block goes to the first replica holding
    that block; the course's threshold keeps a sequential replay from piling every new
    conversation onto one replica, a job the load term does live.
    """

    name = "kv_aware"

    def __init__(self, replicas: int, **options: float) -> None:
        super().__init__(replicas, **options)  # type: ignore[arg-type]
        self.owners: dict[int, set[int]] = {}  # block id -> replicas whose cache holds it
        self.speculative: dict[int, dict[int, int]] = {}  # block id -> {replica: requests in flight}

    def stored(self, replica: int, h: int) -> None:
        self.owners.setdefault(h, set()).add(replica)

    def removed(self, replica: int, h: int) -> None:
        s = self.owners[h]
        s.discard(replica)
        if not s:
            del self.owners[h]

    def pick(self, req: FleetRequest, state: FleetState) -> int:
        full = req.input_length // self.block_size
        ids = req.hash_ids[:full]
        loads = state.loads
        if self.imbalanced(loads):
            r = loads.index(min(loads))
        else:
            depth, cands = longest_prefix(self.owners, ids)
            sdepth, scands = longest_prefix(self.speculative, ids) if self.speculative else (0, set())
            if sdepth > depth:
                depth, cands = sdepth, scands
            if depth and depth / full > self.cache_threshold:
                r = max(cands)
            else:
                r = min((load, state.sent[k], k) for k, load in enumerate(loads))[2]
        for h in ids:  # speculative: the blocks this request will have stored
            d = self.speculative.setdefault(h, {})
            d[r] = d.get(r, 0) + 1
        return r

    def finished(self, req: FleetRequest, replica: int) -> None:
        for h in req.hash_ids[: req.input_length // self.block_size]:
            d = self.speculative[h]
            d[replica] -= 1
            if not d[replica]:
                del d[replica]
            if not d:
                del self.speculative[h]


#: Every policy by name, in the order the course presents them.
POLICY_CLASSES: dict[str, type[Policy]] = {
    cls.name: cls for cls in (RoundRobin, Random, ConsistentHash, CacheAware, KvAware, Pooled)
}
POLICIES = tuple(POLICY_CLASSES)
