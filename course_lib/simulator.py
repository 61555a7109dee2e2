"""An exact, engine-free model of vLLM's prefix cache for requests run one at a time.

Taught in ``notebooks/02_block_hashing.ipynb``; used by notebooks 03-05 to predict
``num_cached_tokens`` before (or instead of) running the engine.

Why: the engine answers "how many tokens were cached?" only after the fact, and
only in aggregate. The simulator replays vLLM 0.32.0's bookkeeping block by
block, so a learner can see which blocks hit, which get evicted and why, on a
million tokens in about a second. ``tests/test_simulator.py`` runs random
workloads through the real engine and the simulator and requires the same
``num_cached_tokens`` on every request.

What it mirrors (single KV-cache group, full attention, no speculative decoding):

- ``vllm/v1/core/kv_cache_manager.py`` ``get_computed_blocks``: the lookup walks the
  request's block hashes from block 0 and stops at the first miss; it may cover
  at most ``num_tokens - 1`` tokens (the last prompt token is always recomputed to
  get logits), so an identical prompt that ends on a block boundary recomputes a
  whole block.
- ``vllm/v1/core/block_pool.py`` ``BlockPool``: block 0 is the reserved null block;
  ``get_new_blocks`` pops the front of the free queue and evicts that block's hash;
  ``touch`` takes hit blocks out of the free queue; ``cache_full_blocks`` hashes
  every block that becomes full (prompt AND generated tokens) with no
  de-duplication (the same hash may name two blocks); ``free_blocks`` receives a
  request's blocks in reverse order and puts blocks WITHOUT a hash at the FRONT of
  the free queue (reused first), cached blocks at the BACK (evicted last, LRU).
- ``vllm/v1/core/kv_cache_utils.py`` ``FreeKVCacheBlockQueue``: the eviction order.
- ``vllm/v1/metrics/stats.py`` ``PrefixCacheStats``: queries and hits in tokens.

A request of ``P`` prompt tokens that generated ``G`` tokens has KV for
``P + G - 1`` tokens (the last sampled token is never fed back), so that many
tokens' full blocks end up cached.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Iterable, Sequence

from course_lib.hashing import block_hashes, none_hash as _none_hash

NULL_BLOCK_ID = 0

#: Block statuses ``describe_blocks`` reports.
HIT, MISS, CAPPED, PARTIAL = "hit", "miss", "recomputed (last-token cap)", "partial (no hash)"


def common_prefix_len(*seqs: Sequence[object]) -> int:
    """Length of the longest common prefix of sequences (token ids or characters)."""
    if not seqs:
        return 0
    n = 0
    for items in zip(*seqs):
        if any(x != items[0] for x in items[1:]):
            break
        n += 1
    return n


def full_block_tokens(num_tokens: int, block_size: int) -> int:
    """Tokens in the full blocks of ``num_tokens`` tokens: the most a cache hit can cover."""
    if block_size <= 0:
        raise ValueError(f"block_size must be positive, not {block_size}")
    return num_tokens // block_size * block_size


def expected_cached_tokens(cached_prefix: Sequence[int], prompt: Sequence[int], block_size: int) -> int:
    """``num_cached_tokens`` of ``prompt`` when ``cached_prefix`` is all the cache holds.

    The closed form of what ``PrefixCacheSimulator`` replays: whole blocks of the
    common token prefix, capped at ``len(prompt) - 1`` tokens as in
    ``KVCacheManager.get_computed_blocks``. Computed from token ids alone, never
    from the engine, so it can check the engine.
    """
    common = min(common_prefix_len(cached_prefix, prompt), len(cached_prefix), max(len(prompt) - 1, 0))
    return full_block_tokens(common, block_size)


@dataclass
class BlockInfo:
    """One block of a prompt as the prefix cache sees it (for tables and figures)."""

    index: int
    start: int  # first token position
    token_ids: list[int]
    block_hash: bytes | None  # None for the partial last block
    status: str  # HIT, MISS, CAPPED or PARTIAL


def engine_cached_hashes(llm: object) -> set[bytes]:
    """The block hashes a live in-process vLLM engine's prefix cache holds right now.

    Reads ``BlockPool.cached_block_hash_to_block`` (keys are the hash plus a 4-byte
    KV-cache group id, stripped here), so a notebook can check that
    ``course_lib.hashing`` computes the very keys vLLM stores. Needs the engine core
    in this process (``VLLM_ENABLE_V1_MULTIPROCESSING=0``, as ``make_llm`` sets).
    """
    try:
        pool = llm.llm_engine.engine_core.engine_core.scheduler.kv_cache_manager.block_pool  # type: ignore[attr-defined]
    except AttributeError as exc:
        raise ValueError(
            "engine_cached_hashes needs an LLM whose engine core runs in this process "
            "(course_lib.engine.make_llm sets VLLM_ENABLE_V1_MULTIPROCESSING=0)"
        ) from exc
    return {bytes(key[:-4]) for key in pool.cached_block_hash_to_block._cache}


def describe_blocks(
    token_ids: Sequence[int],
    block_size: int,
    cached_hashes: "Iterable[bytes] | PrefixCacheSimulator | None" = None,
    hash_algo: str = "sha256",
    *,
    cache_salt: str | None = None,
    none_hash: bytes | None = None,
) -> list[BlockInfo]:
    """Split a prompt into blocks and say what vLLM's lookup would do with each.

    A block is a HIT if it and every block before it are cached and it ends
    within the first ``num_tokens - 1`` tokens; CAPPED if it is cached and
    reachable but past that cap (vLLM recomputes it to get the last token's
    logits); MISS otherwise; the partial last block is PARTIAL (never hashed).
    ``cached_hashes`` may be a simulator (its current cache) or any hash collection.
    """
    ids = [int(t) for t in token_ids]
    if isinstance(cached_hashes, PrefixCacheSimulator):
        sim = cached_hashes
        none_hash = sim.none_hash if none_hash is None else none_hash
        hash_algo, cached = sim.hash_algo, sim.cached_hashes()
    else:
        cached = set(cached_hashes or ())
    hashes = block_hashes(ids, block_size, hash_algo, cache_salt=cache_salt, none_hash=none_hash)
    cap_blocks = max(len(ids) - 1, 0) // block_size
    rows: list[BlockInfo] = []
    chain_ok = True
    for i in range(-(-len(ids) // block_size)):
        start = i * block_size
        if i >= len(hashes):
            rows.append(BlockInfo(i, start, ids[start:], None, PARTIAL))
            continue
        chain_ok = chain_ok and hashes[i] in cached
        status = (HIT if i < cap_blocks else CAPPED) if chain_ok else MISS
        rows.append(BlockInfo(i, start, ids[start : start + block_size], hashes[i], status))
    return rows


@dataclass
class SimulatorStats:
    """Prefix-cache counters as vLLM counts them (``vllm:prefix_cache_queries`` / ``_hits``).

    ``queries`` adds each request's prompt length, ``hits`` its ``num_cached_tokens``.
    """

    requests: int = 0
    queries: int = 0
    hits: int = 0

    @property
    def hit_rate(self) -> float:
        """hits / queries: the ratio a dashboard computes from the two counters."""
        return self.hits / self.queries if self.queries else 0.0


@dataclass
class RequestTrace:
    """What one ``process`` call did to the pool (for tables and drawings)."""

    num_prompt_tokens: int
    num_cached_tokens: int
    block_ids: list[int]  # the request's blocks, in token order
    hit_block_ids: list[int]  # the prefix of block_ids served from the cache
    evicted_block_ids: list[int] = field(default_factory=list)  # cached blocks reused for this request
    block_hashes: list[bytes] = field(default_factory=list, repr=False)


class PrefixCacheSimulator:
    """vLLM's block pool and prefix cache, replayed in pure Python.

    ``num_gpu_blocks`` means what it means in vLLM (``num_gpu_blocks_override``),
    including the null block vLLM reserves: ``num_gpu_blocks - 1`` blocks hold KV.
    """

    def __init__(
        self,
        num_gpu_blocks: int,
        block_size: int,
        hash_algo: str = "sha256",
        *,
        none_hash: bytes | None = None,
    ) -> None:
        if not isinstance(num_gpu_blocks, int) or num_gpu_blocks < 2:
            raise ValueError(f"num_gpu_blocks must be an integer >= 2 (one is vLLM's null block), not {num_gpu_blocks!r}")
        if not isinstance(block_size, int) or block_size <= 0:
            raise ValueError(f"block_size must be a positive integer, not {block_size!r}")
        self.num_gpu_blocks = num_gpu_blocks
        self.block_size = block_size
        self.hash_algo = hash_algo
        self.none_hash = none_hash if none_hash is not None else _none_hash(hash_algo)
        self.stats = SimulatorStats()
        self.last: RequestTrace | None = None
        # Free queue in eviction order (front = next to be reused); block 0 is the null block.
        self._free: OrderedDict[int, None] = OrderedDict((b, None) for b in range(1, num_gpu_blocks))
        self._block_hash: list[bytes | None] = [None] * num_gpu_blocks
        # block_hash -> block ids holding it, oldest first (vLLM does not de-duplicate).
        self._cached: dict[bytes, list[int]] = {}

    # -- public API ---------------------------------------------------------------
    def process(
        self,
        prompt_token_ids: Sequence[int],
        output_token_ids: Sequence[int] = (),
        *,
        cache_salt: str | None = None,
    ) -> int:
        """Run one request to completion and return its ``num_cached_tokens``.

        ``output_token_ids`` are the tokens the request generated (e.g. the engine's
        ``RequestStats.output_token_ids``); ``()`` means one generated token whose
        identity does not matter (``max_tokens=1``).
        """
        prompt = [int(t) for t in prompt_token_ids]
        output = [int(t) for t in output_token_ids]
        if not prompt:
            raise ValueError("a request needs at least one prompt token")
        bs = self.block_size
        num_kv_tokens = len(prompt) + max(len(output) - 1, 0)
        num_blocks = -(-num_kv_tokens // bs)
        if num_blocks > self.num_gpu_blocks - 1:
            raise ValueError(
                f"this request needs {num_blocks} blocks of {bs} tokens ({num_kv_tokens} tokens with KV) but the pool "
                f"has {self.num_gpu_blocks - 1} usable blocks (num_gpu_blocks={self.num_gpu_blocks} includes the null "
                "block): vLLM could never schedule it. Use a larger pool or a shorter request."
            )
        hashes = block_hashes((prompt + output)[:num_kv_tokens], bs, self.hash_algo,
                              cache_salt=cache_salt, none_hash=self.none_hash)

        hit = self.find_cached_blocks(hashes, len(prompt))  # 1. look up
        num_cached_tokens = len(hit) * bs
        self.stats.requests += 1
        self.stats.queries += len(prompt)
        self.stats.hits += num_cached_tokens
        new_blocks, evicted = self.allocate(hit, num_blocks - len(hit))  # 2. take blocks, evicting
        blocks = hit + new_blocks
        self.cache_full_blocks(blocks, hashes, num_cached=len(hit))  # 3. name the full blocks
        self.free_blocks(blocks)  # 4. the request ends: its blocks go back to the free queue
        self.last = RequestTrace(len(prompt), num_cached_tokens, blocks, hit, evicted, hashes)
        return num_cached_tokens

    # -- the core: lookup, free queue, eviction (notebook 02 prints these lines) ------
    def find_cached_blocks(self, hashes: Sequence[bytes], num_prompt_tokens: int) -> list[int]:
        """The cached blocks a request reuses: the longest run of its block hashes in the cache.

        Stops at the first miss (hashes are chained, so no later block can hit) and
        covers at most ``num_prompt_tokens - 1`` tokens: the model must run on the last
        prompt token to sample the first output token. (vLLM: ``get_computed_blocks``.)
        """
        hit = []
        for h in hashes[: max(num_prompt_tokens - 1, 0) // self.block_size]:
            if h not in self._cached:
                break
            hit.append(self._cached[h][0])
        return hit

    def allocate(self, hit: list[int], num_new: int) -> tuple[list[int], list[int]]:
        """Take the hit blocks out of the free queue, then pop ``num_new`` blocks from its front.

        A popped block that still holds a hash loses it: that is eviction. Returns
        ``(new_blocks, evicted_blocks)``. (vLLM: ``BlockPool.touch`` and ``get_new_blocks``.)
        """
        for b in hit:
            del self._free[b]  # in use now: not evictable
        new, evicted = [], []
        for _ in range(num_new):
            b, _none = self._free.popitem(last=False)  # the front of the free queue
            if self._block_hash[b] is not None:
                self._evict(b)
                evicted.append(b)
            new.append(b)
        return new, evicted

    def cache_full_blocks(self, blocks: list[int], hashes: Sequence[bytes], num_cached: int) -> None:
        """Give each newly computed full block its hash, so later requests can hit it.

        No de-duplication: a block recomputed under the last-token cap is cached a
        second time under the same hash. (vLLM: ``BlockPool.cache_full_blocks``.)
        """
        for b, h in zip(blocks[num_cached:], hashes[num_cached:]):
            self._block_hash[b] = h
            self._cached.setdefault(h, []).append(b)

    def free_blocks(self, blocks: list[int]) -> None:
        """Return a finished request's blocks to the free queue, last block first.

        Blocks without a hash go to the FRONT (reused first: nothing worth keeping);
        cached blocks go to the BACK, so cached blocks are evicted least recently
        used first, a request's tail before its head. (vLLM: ``BlockPool.free_blocks``.)
        """
        tail_first = blocks[::-1]
        no_hash = [b for b in tail_first if self._block_hash[b] is None]
        for b in reversed(no_hash):  # prepended as a run: the tail block ends up at the very front
            self._free[b] = None
            self._free.move_to_end(b, last=False)
        for b in tail_first:
            if self._block_hash[b] is not None:
                self._free[b] = None  # appended: the back of the queue, evicted last

    def run(self, prompts: Iterable[Sequence[int]], *, cache_salt: str | None = None) -> list[int]:
        """``process`` each prompt (one generated token each); their ``num_cached_tokens``."""
        return [self.process(p, cache_salt=cache_salt) for p in prompts]

    def reset(self) -> None:
        """Drop every cached hash, like ``LLM.reset_prefix_cache()``.

        As in vLLM, the free queue keeps its order and ``stats`` keep counting
        (vLLM's counters are cumulative); use ``reset_stats`` to zero them.
        """
        self._cached.clear()
        self._block_hash = [None] * self.num_gpu_blocks
        self.last = None

    def reset_stats(self) -> None:
        """Zero ``stats`` (queries, hits, requests)."""
        self.stats = SimulatorStats()

    # -- inspection (for notebooks and drawings) ------------------------------------
    def free_queue(self) -> list[int]:
        """Free block ids in eviction order: the first is the next one reused."""
        return list(self._free)

    def free_queue_state(self) -> list[tuple[int, bytes | None]]:
        """``(block_id, block_hash or None)`` for each free block, in eviction order."""
        return [(b, self._block_hash[b]) for b in self._free]

    def cached_hashes(self) -> set[bytes]:
        """Every block hash the cache can serve right now."""
        return set(self._cached)

    def block_hash(self, block_id: int) -> bytes | None:
        """The hash a block currently holds in the cache, or None."""
        return self._block_hash[block_id]

    def cached_block_ids(self) -> list[int]:
        """Ids of blocks that hold a hash (servable as cache hits)."""
        return [b for b, h in enumerate(self._block_hash) if h is not None]

    def num_cached_blocks(self) -> int:
        """How many blocks currently hold a hash."""
        return sum(h is not None for h in self._block_hash)

    def lookup(self, prompt_token_ids: Sequence[int], *, cache_salt: str | None = None) -> int:
        """``num_cached_tokens`` the prompt would get now, without changing the pool."""
        prompt = [int(t) for t in prompt_token_ids]
        hashes = block_hashes(prompt, self.block_size, self.hash_algo, cache_salt=cache_salt, none_hash=self.none_hash)
        return len(self.find_cached_blocks(hashes, len(prompt))) * self.block_size

    # -- internals ----------------------------------------------------------------
    def _evict(self, b: int) -> None:
        """Drop block ``b``'s hash from the cache: no request can hit it any more."""
        h = self._block_hash[b]
        assert h is not None
        ids = self._cached[h]
        ids.remove(b)
        if not ids:
            del self._cached[h]
        self._block_hash[b] = None
