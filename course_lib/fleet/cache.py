"""One replica's prefix cache at block-id level, and a second tier shared by every replica.

Taught in ``notebooks/07_fleet.ipynb`` (the fleet simulator) and ``notebooks/09_second_tier.ipynb``
(the shared tier). ``BlockCache`` is ``course_lib.simulator.PrefixCacheSimulator`` on block ids
instead of token ids: vLLM 0.32.0's ``BlockPool`` and ``KVCacheManager``
(``vllm/v1/core/block_pool.py``, ``vllm/v1/core/kv_cache_manager.py``), one request at a time.
``SharedTier`` is an LRU pool of block ids behind every replica: what a KV connector's store
(the course's ``course_lib.offload``, LMCache, Mooncake's store) holds beyond the engines' pools.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Callable, Sequence

from course_lib.engine import CourseError
from course_lib.traces import MOONCAKE_BLOCK_TOKENS


class SharedTier:
    """A second tier: ``capacity_blocks`` block ids shared by every replica, least recently used out first.

    A block is written when a replica computes it (``write``), and read when a request's
    prefix continues past the replica's local hit (``prefix_after``, then ``touch``). Reads
    and writes both make a block the most recently used, as an LRU store does.
    """

    def __init__(self, capacity_blocks: int) -> None:
        if capacity_blocks < 1:
            raise CourseError(f"a second tier needs at least one block (capacity_blocks={capacity_blocks})")
        self.capacity_blocks = capacity_blocks
        self._lru: OrderedDict[int, None] = OrderedDict()
        self.evictions = 0

    def __contains__(self, h: object) -> bool:
        return h in self._lru

    def __len__(self) -> int:
        return len(self._lru)

    def prefix_after(self, hash_ids: Sequence[int], start: int, stop: int) -> int:
        """How many of ``hash_ids[start:stop]`` the tier holds, in order, up to the first missing one."""
        n = 0
        for h in hash_ids[start:stop]:
            if h not in self._lru:
                break
            n += 1
        return n

    def touch(self, hash_ids: Sequence[int]) -> None:
        """Blocks just read: they become the most recently used."""
        for h in hash_ids:
            self._lru.move_to_end(h)

    def write(self, hash_ids: Sequence[int]) -> None:
        """Blocks just computed: stored (or refreshed), evicting the least recently used past capacity."""
        lru = self._lru
        for h in hash_ids:
            if h in lru:
                lru.move_to_end(h)
                continue
            lru[h] = None
            if len(lru) > self.capacity_blocks:
                lru.popitem(last=False)
                self.evictions += 1


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
        return self.serve(hash_ids, input_length)[0]

    def serve(self, hash_ids: Sequence[int], input_length: int, tier: SharedTier | None = None) -> tuple[int, int]:
        """Run one request; return ``(cached tokens, of which from the tier)``.

        The prefix comes from local blocks first, then from ``tier`` blocks (loaded into new
        local blocks, as a KV connector's ``get_num_new_matched_tokens`` and load do in vLLM),
        together at most ``input_length - 1`` tokens. Blocks computed here are written to the tier.
        """
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
        from_tier = tier.prefix_after(hash_ids, len(hit), cap) if tier is not None else 0
        if num_blocks > self.capacity_blocks:
            # vLLM could never schedule it: counted, caches unchanged
            return (len(hit) + from_tier) * bs, from_tier * bs
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
        for i in range(len(hit), full):  # cache_full_blocks (no de-duplication); tier blocks too
            b, h = blocks[i], hash_ids[i]
            block_hash[b] = h
            holders = cached.get(h)
            if holders is None:
                cached[h] = [b]
                if self._on_store:
                    self._on_store(h)
            else:
                holders.append(b)
        if tier is not None:
            loaded = len(hit) + from_tier
            tier.touch(hash_ids[len(hit):loaded])
            tier.write(hash_ids[loaded:full])
        # free_blocks(reversed(blocks)): no hash -> front of the queue, cached -> back
        for b in reversed(blocks):
            if b not in block_hash:
                front[b] = None
                front.move_to_end(b, last=False)
        for b in reversed(blocks):
            if b in block_hash:
                back[b] = None
        return (len(hit) + from_tier) * bs, from_tier * bs

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
