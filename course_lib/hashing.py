"""vLLM's prefix-cache block hashing, re-implemented without importing vLLM.

Taught in ``notebooks/02_block_hashing.ipynb``.

Why re-implement it: a learner can call these functions on any token list and
see the exact ``block_hash`` values vLLM 0.32.0 computes, without starting an
engine; ``tests/test_hashing.py`` checks them byte for byte against vLLM's own
block hasher on real ``vllm.v1.request.Request`` objects.

What vLLM does (``vllm/v1/core/kv_cache_utils.py``: ``hash_block_tokens``,
``init_none_hash``, ``generate_block_hash_extra_keys``,
``get_request_block_hasher``; ``vllm/utils/hashing.py``):

- only FULL blocks of ``block_size`` tokens get a hash; the partial last block has none;
- block ``i``'s hash is ``H((parent_hash, tuple(block_i_tokens), extra_keys))`` where
  ``parent_hash`` is block ``i-1``'s hash, or ``NONE_HASH`` for block 0: so a hash
  names the whole prefix up to the end of its block, not just the block;
- ``H`` serialises the triple with pickle (``sha256``, ``xxhash``) or canonical CBOR
  (``sha256_cbor``, ``xxhash_cbor``) and digests it with SHA-256 or xxh3-128;
- ``extra_keys`` is ``None`` or a tuple of tagged tuples, in this order:
  ``("lora", name, path)`` on every block of a LoRA request, then
  ``("mm", identifier, offset_in_block)`` for each multi-modal item (image, audio)
  whose placeholder tokens overlap the block, then ``("cache_salt", salt)`` on
  block 0 only (prompt-embeds keys are not covered here: the course sends token ids);
- ``NONE_HASH = H(seed)`` where ``seed`` is ``$PYTHONHASHSEED`` if set, else the fixed
  string ``"vllm-none-hash"`` for the SHA-256 algorithms, else (xxhash) 32 random
  bytes in hex, drawn once per engine process.
"""

from __future__ import annotations

import hashlib
import os
import pickle
from typing import Any, Callable, Iterable, Sequence

import cbor2

#: The values of vLLM's ``--prefix-caching-hash-algo`` (``vllm/config/cache.py``).
HASH_ALGOS: tuple[str, ...] = ("sha256", "sha256_cbor", "xxhash", "xxhash_cbor")

#: vLLM's ``DEFAULT_NONE_HASH_SEED``: the seed of the SHA-256 algorithms' ``NONE_HASH``
#: when ``PYTHONHASHSEED`` is unset.
DEFAULT_NONE_HASH_SEED = "vllm-none-hash"

#: Algorithms that are not collision resistant: vLLM keeps their seed secret (random).
NON_CRYPTO_HASH_ALGOS = frozenset({"xxhash", "xxhash_cbor"})

_PICKLE_PROTOCOL = pickle.HIGHEST_PROTOCOL
_RANDOM_SEEDS: dict[str, str] = {}  # this process's random seed per xxhash algorithm


def _xxh3_128() -> Callable[[bytes], bytes]:
    try:
        import xxhash
    except ImportError as exc:  # pragma: no cover - xxhash is a course dependency
        raise ValueError("the xxhash algorithms need the `xxhash` package: pip install xxhash") from exc
    return xxhash.xxh3_128_digest


def _check_algo(hash_algo: str) -> None:
    if hash_algo not in HASH_ALGOS:
        raise ValueError(f"unknown hash_algo {hash_algo!r}: vLLM 0.32.0 offers {', '.join(HASH_ALGOS)}")


def _serializer(hash_algo: str) -> Callable[[Any], bytes]:
    if hash_algo.endswith("_cbor"):
        return lambda obj: cbor2.dumps(obj, canonical=True)
    return lambda obj: pickle.dumps(obj, protocol=_PICKLE_PROTOCOL)


def _digest(hash_algo: str) -> Callable[[bytes], bytes]:
    if hash_algo.startswith("xxhash"):
        return _xxh3_128()
    return lambda data: hashlib.sha256(data).digest()


def hash_function(hash_algo: str = "sha256") -> Callable[[Any], bytes]:
    """The function vLLM applies to a Python object for ``hash_algo``.

    Mirrors ``vllm.utils.hashing.get_hash_fn_by_name``: serialise (pickle or
    canonical CBOR), then digest (SHA-256: 32 bytes; xxh3-128: 16 bytes).
    """
    _check_algo(hash_algo)
    serialize, digest = _serializer(hash_algo), _digest(hash_algo)
    return lambda obj: digest(serialize(obj))


def none_hash_seed(hash_algo: str = "sha256") -> str:
    """The seed vLLM derives ``NONE_HASH`` from, resolved in this process.

    Mirrors ``resolve_none_hash_seed``: ``$PYTHONHASHSEED`` wins; otherwise the fixed
    ``"vllm-none-hash"`` for the SHA-256 algorithms (so every vLLM process agrees),
    and for xxhash a random seed drawn once per process (vLLM draws its own in
    each engine process, so an engine's xxhash hashes cannot be predicted: pass
    its ``NONE_HASH`` to ``block_hashes(none_hash=...)`` to reproduce them).
    """
    _check_algo(hash_algo)
    env = os.environ.get("PYTHONHASHSEED")
    if env is not None:
        return env
    if hash_algo in NON_CRYPTO_HASH_ALGOS:
        if hash_algo not in _RANDOM_SEEDS:
            _RANDOM_SEEDS[hash_algo] = os.urandom(32).hex()
        return _RANDOM_SEEDS[hash_algo]
    return DEFAULT_NONE_HASH_SEED


def none_hash(hash_algo: str = "sha256", seed: str | None = None) -> bytes:
    """vLLM's ``NONE_HASH``: the stand-in parent hash of every prompt's block 0.

    ``seed=None`` resolves it as vLLM does (``none_hash_seed``); pass vLLM's own
    ``get_none_hash_seed()`` to reproduce a given engine's value.
    """
    return hash_function(hash_algo)(none_hash_seed(hash_algo) if seed is None else seed)


def _seeded_none_hash(hash_algo: str, override: bytes | None) -> bytes:
    return override if override is not None else none_hash(hash_algo)


def _check_lora(lora_name: str | None, lora_path: str | None) -> None:
    if lora_name and not lora_path:
        raise ValueError(
            f"lora_name={lora_name!r} needs its lora_path: vLLM's LoRARequest requires a path, "
            "and the path is part of the block hash's extra key ('lora', name, path)"
        )


#: A multi-modal item as the block hash sees it: (identifier, offset, length) of its
#: placeholder tokens in the prompt. vLLM's identifier is the item's content hash
#: (``MultiModalFeatureSpec.identifier``), so the same image gives the same key.
MMItem = tuple[str, int, int]


def _mm_keys(start: int, end: int, mm_items: Sequence[MMItem]) -> list[tuple[Any, ...]]:
    # Mirrors _gen_mm_extra_hash_keys: every item whose placeholder range overlaps
    # [start, end), with its offset relative to the block start (negative if it began earlier).
    return [("mm", ident, off - start) for ident, off, length in sorted(mm_items, key=lambda m: m[1])
            if end > off and start < off + length]


def block_extra_keys(
    start_token_idx: int,
    *,
    cache_salt: str | None = None,
    lora_name: str | None = None,
    lora_path: str | None = None,
    mm_items: Sequence[MMItem] = (),
    block_size: int | None = None,
) -> tuple[Any, ...] | None:
    """The ``extra_keys`` vLLM mixes into the hash of the block starting at ``start_token_idx``.

    Mirrors ``generate_block_hash_extra_keys`` (``vllm/v1/core/kv_cache_utils.py``):
    the LoRA key (every block), then one ``("mm", identifier, offset)`` key per
    multi-modal item overlapping the block (``mm_items`` needs ``block_size``),
    then the cache salt (block 0 only; an empty salt is no salt). ``None`` when
    there is nothing extra, exactly as vLLM returns it. Taught in notebook 02.
    """
    _check_lora(lora_name, lora_path)
    keys: list[tuple[Any, ...]] = []
    if lora_name:
        keys.append(("lora", lora_name, lora_path or ""))
    if mm_items:
        if not block_size:
            raise ValueError("mm_items need block_size: a multi-modal key depends on the block's token range")
        keys += _mm_keys(start_token_idx, start_token_idx + block_size, mm_items)
    if start_token_idx == 0 and cache_salt:
        keys.append(("cache_salt", cache_salt))
    return tuple(keys) if keys else None


def hash_block_tokens(
    parent_block_hash: bytes | None,
    block_token_ids: Sequence[int],
    extra_keys: tuple[Any, ...] | None = None,
    hash_algo: str = "sha256",
    *,
    none_hash: bytes | None = None,
) -> bytes:
    """The hash of one full block given its parent's hash (mirrors ``hash_block_tokens``).

    ``parent_block_hash=None`` means block 0: vLLM then uses ``NONE_HASH``.
    """
    if not parent_block_hash:
        parent_block_hash = _seeded_none_hash(hash_algo, none_hash)
    return hash_function(hash_algo)((parent_block_hash, tuple(int(t) for t in block_token_ids), extra_keys))


def _as_int_list(token_ids: Iterable[int]) -> list[int]:
    # vLLM hashes Python ints; a numpy integer would pickle differently.
    if isinstance(token_ids, list) and all(type(t) is int for t in token_ids):
        return token_ids
    return [int(t) for t in token_ids]


def block_hashes(
    token_ids: Iterable[int],
    block_size: int,
    hash_algo: str = "sha256",
    *,
    cache_salt: str | None = None,
    lora_name: str | None = None,
    lora_path: str | None = None,
    mm_items: Sequence[MMItem] = (),
    none_hash: bytes | None = None,
) -> list[bytes]:
    """One ``block_hash`` per FULL block of ``token_ids``, chained from the parent.

    Byte for byte what vLLM 0.32.0 stores in ``Request.block_hashes`` for the same
    tokens, salt and LoRA adapter (``get_request_block_hasher``). The partial last
    block gets no hash, so ``len(result) == len(token_ids) // block_size``.
    ``mm_items`` are the multi-modal items, as ``(identifier, offset, length)`` of
    their placeholder tokens. ``none_hash`` overrides the seeded ``NONE_HASH``
    (needed only to reproduce an xxhash engine's random seed).
    """
    if not isinstance(block_size, int) or block_size <= 0:
        raise ValueError(f"block_size must be a positive integer, not {block_size!r}")
    _check_algo(hash_algo)
    ids = _as_int_list(token_ids)
    serialize, digest = _serializer(hash_algo), _digest(hash_algo)
    parent = _seeded_none_hash(hash_algo, none_hash)
    lora_key = ("lora", lora_name, lora_path or "") if lora_name else None
    rest_keys = (lora_key,) if lora_key else None
    first_keys = block_extra_keys(0, cache_salt=cache_salt, lora_name=lora_name, lora_path=lora_path)
    out: list[bytes] = []
    append = out.append
    for start in range(0, len(ids) - block_size + 1, block_size):
        if mm_items:
            keys = block_extra_keys(
                start, cache_salt=cache_salt, lora_name=lora_name, lora_path=lora_path,
                mm_items=mm_items, block_size=block_size,
            )
        else:
            keys = first_keys if start == 0 else rest_keys
        parent = digest(serialize((parent, tuple(ids[start : start + block_size]), keys)))
        append(parent)
    return out


def short_hash(block_hash: bytes, n: int = 8) -> str:
    """The first ``n`` hex digits of a block hash: enough to tell blocks apart on screen."""
    return block_hash.hex()[:n]
