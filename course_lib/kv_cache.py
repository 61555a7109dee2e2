"""The KV cache itself: what it holds, how big it is, prefill vs decode, paged blocks.

Taught in ``notebooks/01_kv_cache.ipynb`` (the foundations chapter). Mirrors:

- ``vllm/v1/kv_cache_interface.py``: ``AttentionSpec.page_size_bytes`` = KV heads x
  block_size x (K head size + V head size) x dtype bytes, for ONE layer;
- ``vllm/v1/core/kv_cache_utils.py``: ``get_kv_cache_config_from_groups`` adds the pages
  of every layer of a group into ``bytes_per_block`` and sets
  ``num_blocks = available_memory // bytes_per_block``;
- ``vllm/v1/core/block_pool.py``: ``BlockPool``, the fixed pool of blocks (block 0 is the
  reserved null block) and ``KVCacheManager.get_block_ids`` (a request's block table);
- ``vllm/v1/metrics/stats.py``: ``RequestStateStats`` (the engine's per-request
  timestamps the timing sweep reads).

The engine-reading functions need the engine core in this process
(``VLLM_ENABLE_V1_MULTIPROCESSING=0``, as ``course_lib.engine.make_llm`` sets).
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Iterable, Mapping, Sequence

from course_lib.engine import CourseError

if TYPE_CHECKING:
    from vllm import LLM

#: Bytes per element of the dtypes a KV cache is stored in.
DTYPE_BYTES = {"float32": 4, "float": 4, "float16": 2, "half": 2, "bfloat16": 2, "fp8": 1, "float8_e4m3fn": 1,
               "float8_e5m2": 1, "fp8_e4m3": 1, "fp8_e5m2": 1, "int8": 1}  # fmt: skip


def dtype_bytes(dtype: Any) -> int:
    """Bytes of one element of ``dtype`` (a torch dtype, a name such as ``"bfloat16"``, or an int)."""
    if isinstance(dtype, int):
        return dtype
    name = str(dtype).removeprefix("torch.")
    if name not in DTYPE_BYTES:
        raise CourseError(f"unknown KV cache dtype {dtype!r}: give its size in bytes instead (e.g. 2 for bfloat16)")
    return DTYPE_BYTES[name]


@dataclass(frozen=True)
class KVShape:
    """What one token's KV cache consists of, read from a model config.

    For every layer and every KV head, one key vector and one value vector of
    ``head_dim`` numbers each, stored in ``dtype``.
    """

    num_layers: int
    num_kv_heads: int
    head_dim: int
    dtype: str
    dtype_bytes: int
    num_attention_heads: int

    @property
    def bytes_per_token(self) -> int:
        """2 (K and V) x layers x KV heads x head_dim x dtype bytes."""
        return 2 * self.num_layers * self.num_kv_heads * self.head_dim * self.dtype_bytes

    def bytes_per_block(self, block_size: int) -> int:
        """One block of ``block_size`` tokens, all layers (vLLM's ``bytes_per_block``)."""
        return self.bytes_per_token * block_size

    def formula(self) -> str:
        """The arithmetic, spelled out."""
        return (f"2 (K and V) x {self.num_layers} layers x {self.num_kv_heads} KV heads x {self.head_dim} (head_dim)"
                f" x {self.dtype_bytes} bytes ({self.dtype}) = {self.bytes_per_token:,} bytes per token")  # fmt: skip


def _get(config: Any, name: str, default: Any = None) -> Any:
    if isinstance(config, Mapping):
        return config.get(name, default)
    return getattr(config, name, default)


def kv_shape(config: Any, dtype: Any = None) -> KVShape:
    """The KV shape of a decoder-only transformer from its Hugging Face config (object or dict).

    ``num_key_value_heads`` defaults to ``num_attention_heads`` (no grouped-query
    attention) and ``head_dim`` to ``hidden_size // num_attention_heads``, as in
    transformers. ``dtype`` is the dtype the cache is stored in; by default the
    config's own (``dtype`` or ``torch_dtype``). Covers models whose every layer
    keeps full K and V (Llama, Qwen, Mistral...); MLA models (DeepSeek) store a
    compressed latent instead, and hybrid models (Mamba layers) a fixed-size state:
    their spec classes are in ``vllm/v1/kv_cache_interface.py``.
    """
    layers = _get(config, "num_hidden_layers")
    heads = _get(config, "num_attention_heads")
    if not layers or not heads:
        raise CourseError("the config has no num_hidden_layers/num_attention_heads: not a decoder-only transformer config")
    kv_heads = _get(config, "num_key_value_heads") or heads
    head_dim = _get(config, "head_dim") or _get(config, "hidden_size") // heads
    if dtype is None:
        dtype = _get(config, "dtype") or _get(config, "torch_dtype") or "float32"
    name = str(dtype).removeprefix("torch.") if not isinstance(dtype, int) else f"{dtype}-byte"
    return KVShape(int(layers), int(kv_heads), int(head_dim), name, dtype_bytes(dtype), int(heads))


def kv_bytes_per_token(config: Any, dtype: Any = None) -> int:
    """KV cache bytes one token occupies: 2 x layers x KV heads x head_dim x dtype bytes (see ``kv_shape``)."""
    return kv_shape(config, dtype).bytes_per_token


def _core(llm: "LLM") -> Any:
    try:
        return llm.llm_engine.engine_core.engine_core  # type: ignore[attr-defined]
    except AttributeError as exc:
        raise CourseError(
            "this needs an LLM whose engine core runs in this process: start it with "
            "course_lib.engine.make_llm (it sets VLLM_ENABLE_V1_MULTIPROCESSING=0)"
        ) from exc


def engine_kv_shape(llm: "LLM") -> KVShape:
    """``kv_shape`` of the model a running engine serves, in the dtype its KV cache uses.

    The dtype is the cache's (``cache_config.cache_dtype``), which is the model's
    (``model_config.dtype``) when set to ``"auto"``, as the course leaves it.
    """
    cfg = llm.llm_engine.vllm_config
    cache_dtype = cfg.cache_config.cache_dtype
    dtype = cfg.model_config.dtype if cache_dtype in (None, "auto") else cache_dtype
    return kv_shape(cfg.model_config.hf_config, dtype)


@dataclass(frozen=True)
class CacheGeometry:
    """The KV cache a running engine allocated, as vLLM computed it."""

    block_size: int
    num_blocks: int
    bytes_per_block: int  # the sum of every layer's page_size_bytes
    num_layers: int  # attention layers that have a KV cache
    budget_bytes: int | None  # cache_config.kv_cache_memory_bytes (None: vLLM sized it from free memory)
    allocated_bytes: int  # the KV cache tensors' sizes, added up
    spec: str  # the per-layer spec class (FullAttentionSpec for Llama-like models)

    @property
    def tokens(self) -> int:
        """Tokens the pool can hold: blocks x block size (block 0, the null block, included)."""
        return self.num_blocks * self.block_size

    @property
    def bytes_per_token(self) -> int:
        return self.bytes_per_block // self.block_size


def cache_geometry(llm: "LLM") -> CacheGeometry:
    """Read the running engine's KV cache layout from its scheduler's ``KVCacheConfig``.

    Raises ``CourseError`` for engines with several KV cache groups (hybrid or
    sliding-window models), whose blocks are not one uniform size per token.
    """
    kcc = _core(llm).scheduler.kv_cache_config
    if len(kcc.kv_cache_groups) != 1:
        raise CourseError(
            f"this engine has {len(kcc.kv_cache_groups)} KV cache groups (a hybrid or sliding-window model); "
            "cache_geometry covers one-group models like the course's"
        )
    group = kcc.kv_cache_groups[0]
    spec = group.kv_cache_spec
    cfg = llm.llm_engine.vllm_config
    return CacheGeometry(
        block_size=int(spec.block_size),
        num_blocks=int(kcc.num_blocks),
        bytes_per_block=int(spec.page_size_bytes) * len(group.layer_names),
        num_layers=len(group.layer_names),
        budget_bytes=cfg.cache_config.kv_cache_memory_bytes,
        allocated_bytes=sum(int(t.size) for t in kcc.kv_cache_tensors),
        spec=type(spec).__name__,
    )


def expected_num_blocks(budget_bytes: int, bytes_per_token: int, block_size: int) -> int:
    """vLLM's rule: ``num_blocks = budget // bytes_per_block`` (``get_kv_cache_config_from_groups``)."""
    return budget_bytes // (bytes_per_token * block_size)


def blocks_needed(num_tokens: int, block_size: int) -> int:
    """Blocks a request of ``num_tokens`` tokens occupies: a partial last block still takes a whole block."""
    return -(-num_tokens // block_size)


# ----------------------------------------------------------------- prompts fixed in advance

_TEXT = (
    "A key and a value vector are stored for every token, in every layer, for every key-value head. "
    "When a new token is generated, attention reads all of them again instead of recomputing them. "
)


def fixed_prompt(llm: "LLM", num_tokens: int, offset: int = 0) -> list[int]:
    """``num_tokens`` token ids cut from a fixed English text (the same ids on every machine).

    ``offset`` starts the cut further into the repeated text, giving another prompt of
    the same length with no common prefix (for ``offset`` not a multiple of the text's length).
    """
    base = list(llm.get_tokenizer().encode(_TEXT, add_special_tokens=False))
    reps = (num_tokens + offset) // len(base) + 1
    return (base * reps)[offset : offset + num_tokens]


# ----------------------------------------------------------------- block tables


@dataclass
class BlockTable:
    """One request's block table, read while it ran: which pool blocks hold its KV."""

    request: str
    prompt_tokens: int
    block_ids: list[int]
    num_cached_tokens: int
    pool: list[tuple[int, str]]  # ``pool_snapshot`` at the moment the table was read
    block_size: int = 32

    @property
    def hit_blocks(self) -> list[int]:
        """The blocks found in the prefix cache: the first ``num_cached_tokens // block_size`` entries."""
        return self.block_ids[: self.num_cached_tokens // self.block_size]

    @property
    def computed_blocks(self) -> list[int]:
        """The blocks this request computed (prefilled) itself: every entry after the hits."""
        return self.block_ids[len(self.hit_blocks) :]

    def roles(self) -> dict[int, str]:
        """Each block of the table: ``"cache hit"``, ``"computed"`` or ``"partial"``.

        The table is read right after the prefill step, so it holds the prompt's tokens; a
        prompt that does not end on a block boundary leaves its last block partial: computed,
        but never cached (it has no hash).
        """
        roles = {b: "cache hit" for b in self.hit_blocks} | {b: "computed" for b in self.computed_blocks}
        if self.prompt_tokens % self.block_size and self.computed_blocks:
            roles[self.block_ids[-1]] = "partial"
        return roles


def block_tables(llm: "LLM", prompts: Mapping[str, Sequence[int]], max_tokens: int = 2) -> list[BlockTable]:
    """Run each prompt alone (in order) and read its block table after its prefill step.

    The block table is ``KVCacheManager.get_block_ids`` (``vllm/v1/core/kv_cache_manager.py``)
    while the request is running: the ids of the pool blocks holding its tokens, in
    token order. After the request finishes its blocks go back to the pool (full ones
    keep their hash, so a later request can reuse them).
    """
    from vllm import SamplingParams

    engine, scheduler = llm.llm_engine, _core(llm).scheduler
    if engine.has_unfinished_requests():
        raise CourseError("block_tables needs an idle engine (another request is running)")
    params = SamplingParams(max_tokens=max_tokens, temperature=0.0, ignore_eos=True)
    block_size = int(engine.vllm_config.cache_config.block_size)
    tables = []
    for name, ids in prompts.items():
        engine.add_request(name, {"prompt_token_ids": list(ids)}, params)
        finished = [o for o in engine.step() if o.finished]  # one engine step: this request's prefill
        # The scheduler knows the request by its id plus a suffix; ask its KV cache manager for the table.
        running = [r for r in scheduler.requests if r.split("-")[0] == name]
        table = list(scheduler.kv_cache_manager.get_block_ids(running[0])[0]) if running else []
        pool = pool_snapshot(llm)  # every block's state at this moment
        while engine.has_unfinished_requests():  # let it finish: its blocks go back to the pool
            finished += [o for o in engine.step() if o.finished]
        out = next(o for o in finished if o.request_id == name)
        tables.append(BlockTable(name, len(ids), table, int(out.num_cached_tokens or 0), pool, block_size))
    return tables


def memory_held(llm: "LLM", lengths: Iterable[int]) -> list[dict[str, int]]:
    """KV cache a request holds right after its prefill, for prompts of each length, read from the engine.

    One row per length: ``tokens``, ``blocks`` (its block table's length), ``bytes_held``
    (blocks x vLLM's bytes per block) and ``bytes_used`` (tokens x bytes per token): the
    difference is the unused tail of the last block. The prefix cache is emptied first,
    so no prompt shares blocks with an earlier one.
    """
    geometry = cache_geometry(llm)
    rows = []
    for n in lengths:
        if not llm.reset_prefix_cache():
            raise CourseError("reset_prefix_cache failed: a request is still running")
        (table,) = block_tables(llm, {f"mem{n}": fixed_prompt(llm, n)}, max_tokens=2)
        blocks = len(table.block_ids)
        rows.append({"tokens": n, "blocks": blocks, "bytes_held": blocks * geometry.bytes_per_block,
                     "bytes_used": n * geometry.bytes_per_token})  # fmt: skip
    return rows


def pool_snapshot(llm: "LLM") -> list[tuple[int, str]]:
    """Every block of the pool and its state now: ``null``, ``in use``, ``cached`` or ``empty``.

    ``cached``: free but still holding a full block's hash (a later request can hit it
    until it is evicted); ``empty``: free with no hash. Read from ``BlockPool.blocks``.
    """
    pool = _core(llm).scheduler.kv_cache_manager.block_pool
    states = []
    for block in pool.blocks:
        if block.is_null:
            state = "null"
        elif block.ref_cnt > 0:
            state = "in use"
        elif block.block_hash is not None:
            state = "cached"
        else:
            state = "empty"
        states.append((int(block.block_id), state))
    return states


# ----------------------------------------------------------------- prefill vs decode timing


@dataclass
class Timing:
    """One request's phases, from the engine's own timestamps (``RequestStateStats``)."""

    prompt_tokens: int
    num_cached_tokens: int
    output_tokens: int
    ttft_s: float  # arrival to first token: queueing + prefill + the first sampling
    decode_s_per_token: float  # (last token - first token) / (output tokens - 1)


def timed_request(llm: "LLM", prompt_ids: Sequence[int], output_tokens: int = 32) -> Timing:
    """Run one request of exactly ``output_tokens`` greedy tokens and time its two phases."""
    from vllm import SamplingParams

    if output_tokens < 2:
        raise CourseError("output_tokens must be at least 2: decode time is measured between output tokens")
    max_len = llm.llm_engine.model_config.max_model_len
    if len(prompt_ids) + output_tokens > max_len:
        raise CourseError(f"{len(prompt_ids)} prompt + {output_tokens} output tokens exceed max_model_len={max_len}")
    params = SamplingParams(max_tokens=output_tokens, temperature=0.0, ignore_eos=True)
    out = llm.generate([{"prompt_token_ids": list(prompt_ids)}], params, use_tqdm=False)[0]
    m = out.metrics
    if m is None or not m.first_token_latency:
        raise CourseError("the engine keeps no per-request stats: start it with disable_log_stats=False (make_llm does)")
    n_out = len(out.outputs[0].token_ids)
    return Timing(
        prompt_tokens=len(out.prompt_token_ids or []),
        num_cached_tokens=int(out.num_cached_tokens or 0),
        output_tokens=n_out,
        ttft_s=float(m.first_token_latency),
        decode_s_per_token=float(m.last_token_ts - m.first_token_ts) / (n_out - 1),
    )


def _median_timing(runs: list[Timing]) -> Timing:
    return Timing(
        prompt_tokens=runs[0].prompt_tokens,
        num_cached_tokens=runs[0].num_cached_tokens,
        output_tokens=runs[0].output_tokens,
        ttft_s=statistics.median(r.ttft_s for r in runs),
        decode_s_per_token=statistics.median(r.decode_s_per_token for r in runs),
    )


def prefill_decode_sweep(
    llm: "LLM", lengths: Iterable[int], output_tokens: int = 32, repeats: int = 3, progress: bool = True
) -> list[Timing]:
    """TTFT and decode time per token for prompts of each length, cache emptied before each run.

    Each point is the median of ``repeats`` runs; one warm-up request runs first (the
    engine's first request pays one-off costs). Prompts come from ``fixed_prompt``.
    """
    lengths = list(lengths)
    timed_request(llm, fixed_prompt(llm, min(lengths)), 2)  # warm-up
    points = []
    for n in lengths:
        runs = []
        for _ in range(repeats):
            if not llm.reset_prefix_cache():
                raise CourseError("reset_prefix_cache failed: a request is still running")
            runs.append(timed_request(llm, fixed_prompt(llm, n), output_tokens))
        point = _median_timing(runs)
        points.append(point)
        if progress:
            print(f"  {n:>5} prompt tokens: TTFT {point.ttft_s * 1e3:7.1f} ms, "
                  f"decode {point.decode_s_per_token * 1e3:6.1f} ms/token")  # fmt: skip
    return points


def cold_vs_warm(llm: "LLM", num_tokens: int, output_tokens: int = 32, repeats: int = 3) -> dict[str, Timing]:
    """The same prompt with an empty cache (``cold``) and right after itself (``warm``), medians of ``repeats``.

    Shows what prefix caching saves: the warm run skips the cached blocks' prefill,
    but still computes its uncached tail (at least the last prompt token), samples,
    and decodes every output token exactly as the cold run does.
    """
    prompt = fixed_prompt(llm, num_tokens)
    cold, warm = [], []
    for _ in range(repeats):
        if not llm.reset_prefix_cache():
            raise CourseError("reset_prefix_cache failed: a request is still running")
        cold.append(timed_request(llm, prompt, output_tokens))
        warm.append(timed_request(llm, prompt, output_tokens))
    return {"cold": _median_timing(cold), "warm": _median_timing(warm)}


def growth(points: Sequence[Timing], attr: str) -> float:
    """How many times larger ``attr`` is at the longest prompt than at the shortest."""
    first, last = getattr(points[0], attr), getattr(points[-1], attr)
    return last / first if first else float("nan")


__all__ = [
    "BlockTable", "CacheGeometry", "KVShape", "Timing", "blocks_needed", "block_tables", "cache_geometry",
    "cold_vs_warm", "dtype_bytes", "engine_kv_shape", "expected_num_blocks", "fixed_prompt", "growth",
    "kv_bytes_per_token", "kv_shape", "memory_held", "pool_snapshot", "prefill_decode_sweep", "timed_request",
]  # fmt: skip
