"""The knobs that tune prefix caching, turned on the real engine.

Taught in ``notebooks/03_live_engine.ipynb`` (sections on defaults, block size,
KV cache size, ``scheduling_policy`` and cache warming); the scenario they run is
``course_lib.scenario``'s. Sources mirrored: ``vllm/engine/arg_utils.py`` and
``vllm/config/cache.py`` (defaults), ``vllm/platforms/cpu.py`` and
``vllm/v1/attention/backends/cpu_attn.py`` (CPU block sizes),
``vllm/v1/core/block_pool.py`` (eviction), ``vllm/v1/core/sched/request_queue.py``
(priority order).
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Iterable, Sequence

from course_lib.engine import detect_device, measure
from course_lib.engine import block_size as engine_block_size
from course_lib.bench import distinct_prompts
from course_lib.scenario import (
    Scenario,
    build_system_prompt,
    caching_enabled,
    predicted_cached_tokens,
    run_scenario,
    plain_prompt,
    temporary_llm,
    warm_up,
)

if TYPE_CHECKING:
    from vllm import LLM

def prefix_caching_defaults() -> dict[str, Any]:
    """Where vLLM's "on by default" lives, read from the installed source (no engine started).

    ``EngineArgs.enable_prefix_caching`` defaults to ``None``, which
    ``EngineArgs._set_default_chunked_prefill_and_prefix_caching_args``
    (``vllm/engine/arg_utils.py``) resolves to ``ModelConfig.is_prefix_caching_supported``
    (True for decoder-only generative models; the same function switches it off on
    RISC-V CPUs); ``CacheConfig.enable_prefix_caching`` defaults to True.
    """
    import dataclasses
    import inspect

    from vllm.config import CacheConfig
    from vllm.engine.arg_utils import EngineArgs

    def default(cls: Any, name: str) -> Any:
        return next(f.default for f in dataclasses.fields(cls) if f.name == name)

    src = inspect.getsource(EngineArgs._set_default_chunked_prefill_and_prefix_caching_args)
    resolves = "self.enable_prefix_caching = default_prefix_caching" in src
    return {
        "EngineArgs.enable_prefix_caching": default(EngineArgs, "enable_prefix_caching"),
        "None resolved to ModelConfig.is_prefix_caching_supported": resolves,
        "CacheConfig.enable_prefix_caching": default(CacheConfig, "enable_prefix_caching"),
        "EngineArgs.scheduling_policy": default(EngineArgs, "scheduling_policy"),
    }


# --- Strategy 1: warming the cache with templates -----------------------------------------------

#: Openings of three task templates to warm (``warming_templates`` makes them long enough to cache).
TEMPLATE_OPENINGS: dict[str, str] = {
    "code_review": "You are a senior engineer reviewing code.",
    "translation": "You are a professional translator.",
    "summarization": "You are an expert at summarizing documents.",
}


def warming_templates(tokenizer: Any, target_tokens: int = 300) -> dict[str, str]:
    """``TEMPLATE_OPENINGS``, each extended with the course guidelines to about ``target_tokens``.

    A template shorter than one block could never be cached at all, so they are
    made long enough to fill several.
    """
    return {name: build_system_prompt(tokenizer, target_tokens, base) for name, base in TEMPLATE_OPENINGS.items()}


# --- scheduling_policy: what "priority" reorders -------------------------------------------------


def scheduling_order(llm: "LLM", prompts: Sequence[Sequence[int]], priority: Sequence[int] | None = None) -> list[int]:
    """Submit ``prompts`` in ONE ``generate`` call and return each request's ``num_cached_tokens``.

    Meant for an engine started with ``max_num_seqs=1`` (one request scheduled at a
    time), so the order the scheduler picks shows in the cache hits: the request
    that ran first has none. With ``scheduling_policy="priority"`` the queue is a
    heap ordered by ``(priority, arrival_time)`` (``vllm/v1/core/sched/request_queue.py``);
    nothing in the scheduler looks at the prefix cache to pick the next request.
    """
    from course_lib.engine import default_sampling

    if caching_enabled(llm):
        llm.reset_prefix_cache()
    kwargs: dict[str, Any] = {} if priority is None else {"priority": list(priority)}
    outs = llm.generate(
        [{"prompt_token_ids": list(p)} for p in prompts], default_sampling(), use_tqdm=False, **kwargs
    )
    return [int(o.num_cached_tokens or 0) for o in outs]


# --- knobs: block size and KV cache size ---------------------------------------------------------


def default_block_sizes(device: str | None = None) -> list[int]:
    """Block sizes worth sweeping here: CPU attention needs multiples of 32; GPUs also run 16."""
    device = device or detect_device()
    return [32, 64, 128] if device == "cpu" else [16, 32, 64, 128]


@dataclass
class BlockSizeRow:
    """The scenario at one block size: vLLM's cached tokens, the prediction, the TTFTs."""

    block_size: int
    cached_tokens: list[int]
    predicted_cached_tokens: list[int]
    ttft_s: list[float]

    prompt_tokens: list[int]

    @property
    def total_prefilled(self) -> int:
        return sum(self.prompt_tokens) - sum(self.cached_tokens)


def block_size_sweep(
    scenario: Scenario, block_sizes: Iterable[int] | None = None, repeats: int = 1, **engine_kwargs: Any
) -> list[BlockSizeRow]:
    """Start one engine per block size, run the scenario (caching on), and stop it.

    TTFTs are medians over ``repeats`` passes (each from an empty cache).
    """
    rows = []
    for b in block_sizes or default_block_sizes():
        with temporary_llm(block_size=b, **engine_kwargs) as llm:
            warm_up(llm)
            runs = [run_scenario(llm, scenario) for _ in range(repeats)]
        ttft = [statistics.median(r.rows[i].ttft_s for r in runs) for i in range(len(scenario.prompts))]
        rows.append(
            BlockSizeRow(
                b, [r.cached_tokens for r in runs[0].rows],
                predicted_cached_tokens(scenario.prompt_token_ids, b), ttft, scenario.prompt_tokens,
            )
        )
    return rows


def alternating_workload(scenario: Scenario, tokenizer: Any, rounds: int = 3) -> list[list[int]]:
    """Two long prompts that share no block, taken in turn (A, B, A, B, ...), as token ids.

    A is the scenario's first prompt; B is the same system prompt behind a
    different first line (``distinct_prompts``). With a pool that holds both,
    every request after the first two hits; with a pool that holds about one,
    LRU eviction removes each prefix just before it is needed again.
    """
    a = list(scenario.prompt_token_ids[0])
    b = list(tokenizer.encode(plain_prompt(distinct_prompts(scenario.system_prompt, 1)[0], scenario.questions[0])))
    return [x for _ in range(rounds) for x in (a, b)]


@dataclass
class CacheSizeRow:
    """One pool size: blocks, and the cached tokens of each request of the workload."""

    num_gpu_blocks: int
    block_size: int
    prompt_token_ids: list[list[int]]
    cached_tokens: list[int]
    output_token_ids: list[list[int]]

    @property
    def prompt_tokens(self) -> list[int]:
        return [len(p) for p in self.prompt_token_ids]

    @property
    def hit_rate(self) -> float:
        """Cached tokens / prompt tokens over the workload (what vLLM's two counters give)."""
        return sum(self.cached_tokens) / sum(self.prompt_tokens)

    def simulated(self) -> list[int]:
        """What ``course_lib.simulator.PrefixCacheSimulator`` predicts for the same requests."""
        from course_lib.simulator import PrefixCacheSimulator

        sim = PrefixCacheSimulator(self.num_gpu_blocks, self.block_size)
        return [sim.process(p, o) for p, o in zip(self.prompt_token_ids, self.output_token_ids)]

    def comparison(self, labels: Sequence[str] | None = None) -> list[tuple[Any, ...]]:
        """(request, label, prompt tokens, vLLM num_cached_tokens, simulator, equal) per request."""
        labels = labels or [""] * len(self.cached_tokens)
        return [
            (i + 1, lab, n, c, s, c == s)
            for i, (lab, n, c, s) in enumerate(zip(labels, self.prompt_tokens, self.cached_tokens, self.simulated()))
        ]


def run_on_pool(num_gpu_blocks: int, prompts: Sequence[Sequence[int]], **engine_kwargs: Any) -> CacheSizeRow:
    """Run ``prompts`` one at a time on an engine whose KV pool has ``num_gpu_blocks`` blocks."""
    prompts = [list(p) for p in prompts]
    with temporary_llm(num_gpu_blocks_override=num_gpu_blocks, **engine_kwargs) as llm:
        stats = measure(llm, prompts)
        block_size = engine_block_size(llm)
    return CacheSizeRow(
        num_gpu_blocks, block_size, prompts, [s.num_cached_tokens for s in stats], [s.output_token_ids for s in stats]
    )


def default_pool_sizes(prompts: Sequence[Sequence[int]], block_size: int) -> list[int]:
    """Pool sizes (``num_gpu_blocks``, null block included) for ``alternating_workload``.

    ``n`` = blocks the longest request needs. A pool of ``n + n//4`` holds one prompt
    and a bit; ``n + 3n//4`` most of two; ``2n + 4`` both, so nothing is evicted.
    """
    n = -(-max(len(p) for p in prompts) // block_size)
    return [n + n // 4, n + 3 * n // 4, 2 * n + 4]


def cache_size_sweep(
    prompts: Sequence[Sequence[int]], pool_sizes: Iterable[int], **engine_kwargs: Any
) -> list[CacheSizeRow]:
    """The same workload on pools of several sizes: how hits fall when the cache is too small."""
    return [run_on_pool(n, prompts, **engine_kwargs) for n in pool_sizes]


__all__: list[str] = [
    "prefix_caching_defaults", "TEMPLATE_OPENINGS", "warming_templates", "scheduling_order", "default_block_sizes",
    "BlockSizeRow", "block_size_sweep", "alternating_workload", "CacheSizeRow", "run_on_pool",
    "default_pool_sizes", "cache_size_sweep",
]
