"""The seed lesson's scenario on the real engine: one long system prompt, three questions.

Taught in ``notebooks/02_live_engine.ipynb`` and printed by ``course bench seed-scenario``.

The seed claims that with a 1000-token system prompt and three questions, caching
turns "3000 tokens prefilled" into "1000 + 50 + 50 = 1100" and gives "~3x for
TTFT". This module rebuilds that scenario deterministically for the course
tokenizer (the seed's own system prompt, extended to about 1000 tokens), runs it
through vLLM with prefix caching off and on (``course_lib.engine.measure``), and
computes what the token counts allow:

- **cached tokens** come from vLLM (``RequestOutput.num_cached_tokens``), and the
  block arithmetic below predicts them: only *full* blocks are hashed and reused
  (``vllm/v1/core/kv_cache_utils.py``), and a request never takes its very last
  token from the cache (``max_cache_hit_length = num_tokens - 1`` in
  ``vllm/v1/core/kv_cache_manager.py``);
- **ideal speedup** = total prompt tokens / total prefilled tokens with caching on:
  what TTFT would gain if prefill time were proportional to prefilled tokens and
  everything else cost nothing;
- **measured speedup** = sum of TTFTs with caching off / sum with caching on.

It also holds the knob sweeps (block size, KV cache size) and the workloads of
the notebook's "zero overhead" and eviction sections, as functions the tests and
the benchmark share.
"""

from __future__ import annotations

import os
import platform
import statistics
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Iterable, Iterator, Sequence

from course_lib.engine import RequestStats, close_llm, detect_device, make_llm, measure
from course_lib.engine import block_size as engine_block_size
from course_lib.simulator import common_prefix_len, expected_cached_tokens, full_block_tokens

if TYPE_CHECKING:
    from vllm import LLM

#: The seed's system prompt, verbatim.
SEED_SYSTEM_PROMPT = (
    "You are a helpful AI assistant specialized in programming.\n"
    "Follow best practices. Provide clear explanations with code examples.\n"
    "Always consider edge cases and error handling."
)

#: The seed's three questions, verbatim.
SEED_QUESTIONS: tuple[str, ...] = (
    "How do I sort a list in Python?",
    "What's the difference between async and sync?",
    "Explain decorators in Python",
)

#: The seed's numbers, shown next to the measured ones.
SEED_SYSTEM_TOKENS = 1000
SEED_QUESTION_TOKENS = 50
SEED_PREFILLED_OFF = 3000
SEED_PREFILLED_ON = 1100
SEED_TTFT_SPEEDUP = 3.0

#: Guidelines appended (in order, then again with a round number) to the seed's
#: system prompt until it is about ``target_tokens`` long. Written for the course.
_GUIDELINES: tuple[str, ...] = (
    "Start every answer with a one-sentence summary, then give the details a reader needs to act on it.",
    "Prefer the standard library when it solves the problem; name any third-party package and say why it is worth the dependency.",
    "Show complete, runnable examples: include the imports, a small input and the output the example prints.",
    "Name variables and functions after what they mean in the problem, not after their type.",
    "When a question is ambiguous, state the assumption you make and answer for that case, then mention the other reading.",
    "Point out the time and memory cost of an approach when the input can grow large.",
    "Check inputs at the boundary of a program and fail early with an error message that says what to fix.",
    "Never swallow an exception silently; either handle it with a reason or let it reach a caller that can.",
    "Close files, sockets and other resources deterministically, for example with a context manager.",
    "Write a test for the example when behaviour is subtle, and show how to run it.",
    "Explain why a solution works, not only what to type, so the reader can adapt it to the next problem.",
    "Mention the language version a feature needs when it is recent.",
    "Keep functions short and give each one a single purpose that its name states.",
    "Prefer clear code to clever code; add a comment only where the code cannot say it itself.",
    "Treat empty inputs, duplicates, very large values, missing keys and unicode text as cases to handle.",
    "When concurrency is involved, say which data is shared and how access to it is made safe.",
    "Do not invent APIs: if you are not sure a function exists, say so and show how to check the documentation.",
    "Compare two approaches in a short table when the reader has to choose between them.",
    "Format code in fenced blocks with the language named, and keep lines under one hundred characters.",
    "Show the error message a common mistake produces, and how to read it.",
    "Never include secrets, tokens or passwords in examples; read them from the environment instead.",
    "Measure before optimising, and show how to measure with a profiler or a timer.",
    "End with the next step the reader could take, or a pointer to the relevant documentation section.",
)


# --- building the scenario ---------------------------------------------------------------


def _token_count(tokenizer: Any, text: str) -> int:
    return len(tokenizer.encode(text, add_special_tokens=False))


def build_system_prompt(tokenizer: Any, target_tokens: int = SEED_SYSTEM_TOKENS, base: str = SEED_SYSTEM_PROMPT) -> str:
    """``base`` (the seed's system prompt) extended with fixed guidelines to at most ``target_tokens``.

    Deterministic for a given tokenizer: guidelines are appended in a fixed order
    (cycling with a round number), then the text is cut at the last whole word
    that keeps it within ``target_tokens`` tokens of ``tokenizer``.
    """
    if target_tokens < _token_count(tokenizer, base):
        raise ValueError(
            f"target_tokens={target_tokens} is shorter than the base prompt itself "
            f"({_token_count(tokenizer, base)} tokens)"
        )
    lines = [base, "", "Guidelines:"]
    i = 0
    while _token_count(tokenizer, "\n".join(lines)) <= target_tokens:
        rnd, g = divmod(i, len(_GUIDELINES))
        prefix = f"{i + 1}." if rnd == 0 else f"{i + 1}. (again)"
        lines.append(f"{prefix} {_GUIDELINES[g]}")
        i += 1
    text = "\n".join(lines)
    words = text.split(" ")
    lo, hi = 1, len(words)  # largest word count whose text fits in target_tokens
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if _token_count(tokenizer, " ".join(words[:mid])) <= target_tokens:
            lo = mid
        else:
            hi = mid - 1
    return " ".join(words[:lo])


def seed_prompt(system_prompt: str, question: str) -> str:
    """The seed's prompt format: ``f"{system_prompt}\\n\\nUser: {question}\\nAssistant:"``."""
    return f"{system_prompt}\n\nUser: {question}\nAssistant:"


@dataclass(frozen=True)
class Scenario:
    """The seed's workload, built for one tokenizer: the prompts and their token ids."""

    system_prompt: str
    questions: tuple[str, ...]
    prompts: tuple[str, ...]
    prompt_token_ids: tuple[tuple[int, ...], ...]
    system_tokens: int

    @property
    def prompt_tokens(self) -> list[int]:
        return [len(ids) for ids in self.prompt_token_ids]

    @property
    def shared_prefix_tokens(self) -> int:
        """Tokens all prompts have in common at the start (the system prompt, as tokenized in context)."""
        return common_prefix_len(*self.prompt_token_ids)


def build_scenario(
    tokenizer: Any, target_tokens: int = SEED_SYSTEM_TOKENS, questions: Sequence[str] = SEED_QUESTIONS
) -> Scenario:
    """The seed's scenario for ``tokenizer`` (pass ``llm.get_tokenizer()``)."""
    system = build_system_prompt(tokenizer, target_tokens)
    prompts = tuple(seed_prompt(system, q) for q in questions)
    ids = tuple(tuple(tokenizer.encode(p, add_special_tokens=True)) for p in prompts)
    return Scenario(system, tuple(questions), prompts, ids, _token_count(tokenizer, system))


# --- block arithmetic ----------------------------------------------------------------------


def predicted_cached_tokens(prompts: Sequence[Sequence[int]], block_size: int) -> list[int]:
    """``num_cached_tokens`` block arithmetic predicts for prompts run one after another.

    Assumes the cache never evicts (a large pool): request ``i`` reuses the full
    blocks it shares with the longest matching earlier prompt, capped at
    ``len(prompt) - 1`` tokens (vLLM always computes the last token to get logits).
    """
    out = []
    for i, p in enumerate(prompts):
        out.append(max((expected_cached_tokens(q, p, block_size) for q in prompts[:i]), default=0))
    return out


@dataclass(frozen=True)
class BlockRounding:
    """The seed's "1000 + 50 + 50 = 1100" redone with real token counts and blocks."""

    block_size: int
    prompt_tokens: tuple[int, ...]
    shared_prefix_tokens: int
    cached_tokens: tuple[int, ...]

    @property
    def prefilled_tokens(self) -> tuple[int, ...]:
        return tuple(p - c for p, c in zip(self.prompt_tokens, self.cached_tokens))

    @property
    def unaligned_tail(self) -> int:
        """Shared tokens after the last full block: prefilled again by every request."""
        return self.shared_prefix_tokens % self.block_size

    def lines(self) -> list[str]:
        """The arithmetic as text, request by request (deterministic: pin it)."""
        b, s = self.block_size, self.shared_prefix_tokens
        out = [
            f"block_size = {b}; shared prefix = {s} tokens = {s // b} full blocks "
            f"({full_block_tokens(s, b)} tokens) + {s % b} tokens in a partial block",
        ]
        for i, (p, c) in enumerate(zip(self.prompt_tokens, self.cached_tokens), 1):
            out.append(f"request {i}: {p} prompt - {c} cached = {p - c} prefilled")
        pre = self.prefilled_tokens
        out.append(
            f"prefilled with caching: {' + '.join(map(str, pre))} = {sum(pre)} "
            f"(seed: {SEED_SYSTEM_TOKENS} + {SEED_QUESTION_TOKENS} + {SEED_QUESTION_TOKENS} = {SEED_PREFILLED_ON})"
        )
        out.append(
            f"prefilled without caching: {' + '.join(map(str, self.prompt_tokens))} = "
            f"{sum(self.prompt_tokens)} (seed: {SEED_PREFILLED_OFF})"
        )
        return out


def block_rounding(scenario: Scenario, block_size: int) -> BlockRounding:
    """Predict the scenario's cached tokens at ``block_size`` from token ids alone."""
    ids = scenario.prompt_token_ids
    return BlockRounding(
        block_size, tuple(scenario.prompt_tokens), scenario.shared_prefix_tokens,
        tuple(predicted_cached_tokens(ids, block_size)),
    )


# --- running it on the engine ----------------------------------------------------------------


def caching_enabled(llm: "LLM") -> bool:
    """Whether the running engine has prefix caching on (``CacheConfig.enable_prefix_caching``)."""
    return bool(llm.llm_engine.vllm_config.cache_config.enable_prefix_caching)


@dataclass
class ScenarioRow:
    """One request of the scenario as the table shows it."""

    request: int
    question: str
    prompt_tokens: int
    cached_tokens: int
    ttft_s: float

    @property
    def prefilled_tokens(self) -> int:
        return self.prompt_tokens - self.cached_tokens


@dataclass
class ScenarioRun:
    """One pass of the scenario on one engine."""

    caching: bool
    block_size: int
    rows: list[ScenarioRow]

    @property
    def total_prompt_tokens(self) -> int:
        return sum(r.prompt_tokens for r in self.rows)

    @property
    def total_cached_tokens(self) -> int:
        return sum(r.cached_tokens for r in self.rows)

    @property
    def total_prefilled_tokens(self) -> int:
        return sum(r.prefilled_tokens for r in self.rows)

    @property
    def total_ttft_s(self) -> float:
        return sum(r.ttft_s for r in self.rows)


def warm_up(llm: "LLM") -> None:
    """One unrelated request, then an empty cache: the first timed request pays no start-up cost."""
    measure(llm, ["Warm-up request unrelated to the scenario."])
    if caching_enabled(llm):
        llm.reset_prefix_cache()


def run_scenario(llm: "LLM", scenario: Scenario) -> ScenarioRun:
    """Run the scenario's prompts one at a time on ``llm``, starting from an empty cache."""
    if caching_enabled(llm) and not llm.reset_prefix_cache():
        raise RuntimeError("vLLM refused to reset the prefix cache (requests still running?)")
    stats = measure(llm, [list(ids) for ids in scenario.prompt_token_ids])
    rows = [
        ScenarioRow(i + 1, q, s.prompt_tokens, s.num_cached_tokens, s.ttft_s)
        for i, (q, s) in enumerate(zip(scenario.questions, stats))
    ]
    return ScenarioRun(caching_enabled(llm), engine_block_size(llm), rows)


@dataclass
class ScenarioComparison:
    """Caching off vs on over several repetitions: medians and the bound."""

    off: list[ScenarioRun]
    on: list[ScenarioRun]

    @property
    def ideal_speedup(self) -> float:
        """Total prompt tokens / total prefilled tokens with caching on (token counts only)."""
        return self.on[0].total_prompt_tokens / self.on[0].total_prefilled_tokens

    @property
    def speedups(self) -> list[float]:
        """Measured TTFT speedup of each repetition: sum of TTFTs off / sum on."""
        return [a.total_ttft_s / b.total_ttft_s for a, b in zip(self.off, self.on)]

    @property
    def measured_speedup(self) -> float:
        """Median over repetitions of the measured TTFT speedup."""
        return statistics.median(self.speedups)

    def median_ttft(self, caching: bool, request: int) -> float:
        runs = self.on if caching else self.off
        return statistics.median(r.rows[request - 1].ttft_s for r in runs)

    def table(self) -> str:
        """The per-request table with medians, totals, and the seed's claims next to them."""
        off, on = self.off[0], self.on[0]
        head = (
            f"{'request':<8}{'prompt':>8}{'cached':>8}{'prefilled':>11}{'TTFT off':>11}{'TTFT on':>10}"
            f"{'ratio':>8}{'token bound':>13}"
        )
        lines = [head, "-" * len(head)]
        for i, (a, b) in enumerate(zip(off.rows, on.rows), 1):
            t_off, t_on = self.median_ttft(False, i), self.median_ttft(True, i)
            lines.append(
                f"{i:<8}{b.prompt_tokens:>8}{b.cached_tokens:>8}{b.prefilled_tokens:>11}"
                f"{t_off * 1e3:>9.1f}ms{t_on * 1e3:>8.1f}ms{t_off / t_on:>7.2f}x"
                f"{b.prompt_tokens / b.prefilled_tokens:>12.2f}x"
            )
        t_off = sum(self.median_ttft(False, i) for i in range(1, len(on.rows) + 1))
        t_on = sum(self.median_ttft(True, i) for i in range(1, len(on.rows) + 1))
        lines.append("-" * len(head))
        lines.append(
            f"{'total':<8}{on.total_prompt_tokens:>8}{on.total_cached_tokens:>8}{on.total_prefilled_tokens:>11}"
            f"{t_off * 1e3:>9.1f}ms{t_on * 1e3:>8.1f}ms"
        )
        lines += [
            "",
            f"prefilled tokens, caching off: {off.total_prefilled_tokens:>5}   (seed claims {SEED_PREFILLED_OFF})",
            f"prefilled tokens, caching on:  {on.total_prefilled_tokens:>5}   (seed claims {SEED_PREFILLED_ON})",
            f"ideal TTFT speedup (token bound): {self.ideal_speedup:.2f}x",
            f"measured TTFT speedup (median of {len(self.speedups)}): {self.measured_speedup:.2f}x   "
            f"(seed claims ~{SEED_TTFT_SPEEDUP:.0f}x)",
            f"per-repetition speedups: {', '.join(f'{x:.2f}x' for x in self.speedups)}",
        ]
        return "\n".join(lines)


def compare_scenario(llm_off: "LLM", llm_on: "LLM", scenario: Scenario, repeats: int = 5) -> ScenarioComparison:
    """Run the scenario ``repeats`` times on each engine, request by request interleaved.

    Each repetition starts from an empty cache; request ``i`` runs on both engines
    back to back before request ``i + 1``, so both sides of each TTFT ratio are
    measured within a second of each other.
    """
    if repeats < 1:
        raise ValueError("repeats must be at least 1")
    if caching_enabled(llm_off) or not caching_enabled(llm_on):
        raise ValueError("pass the engine with caching off first, then the one with caching on")
    warm_up(llm_off)
    warm_up(llm_on)
    off, on = [], []
    ids = [list(p) for p in scenario.prompt_token_ids]
    for rep in range(repeats):
        llm_on.reset_prefix_cache()
        pairs: list[tuple[RequestStats, RequestStats]] = []
        for i, p in enumerate(ids):
            # Request by request, off and on back to back (the first alternating), so a change of
            # load on a shared machine hits both sides of each ratio alike. The on engine still
            # sees the cache its own earlier requests left: the engines share nothing.
            if (rep + i) % 2:
                s_on = measure(llm_on, [p])[0]
                s_off = measure(llm_off, [p])[0]
            else:
                s_off = measure(llm_off, [p])[0]
                s_on = measure(llm_on, [p])[0]
            pairs.append((s_off, s_on))
        for k, run in ((0, off), (1, on)):
            llm = (llm_off, llm_on)[k]
            rows = [
                ScenarioRow(i + 1, q, pr[k].prompt_tokens, pr[k].num_cached_tokens, pr[k].ttft_s)
                for i, (q, pr) in enumerate(zip(scenario.questions, pairs))
            ]
            run.append(ScenarioRun(caching_enabled(llm), engine_block_size(llm), rows))
    return ScenarioComparison(off, on)


# --- Strategy 1: warming the cache with templates -----------------------------------------------

#: The seed's three templates (its "..." filled in by ``seed_templates``).
SEED_TEMPLATES: dict[str, str] = {
    "code_review": "You are a senior engineer reviewing code.",
    "translation": "You are a professional translator.",
    "summarization": "You are an expert at summarizing documents.",
}


def seed_templates(tokenizer: Any, target_tokens: int = 300) -> dict[str, str]:
    """The seed's templates, each extended with the course guidelines to about ``target_tokens``.

    A template shorter than one block could never be cached at all, so they are
    made long enough to fill several.
    """
    return {name: build_system_prompt(tokenizer, target_tokens, base) for name, base in SEED_TEMPLATES.items()}


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


# --- "zero overhead": caching on at a 0% hit rate ----------------------------------------------


def distinct_prompts(system_prompt: str, n: int) -> list[str]:
    """``n`` long prompts that share no first block: a workload with a 0% hit rate.

    Each starts with its own ticket number, so block 0 differs and, since every
    block hash chains its parent's, no later block can match either.
    """
    return [f"Ticket {i:04d} from customer {7919 * (i + 1) % 10007}.\n{system_prompt}" for i in range(n)]


@dataclass
class OverheadResult:
    """Caching on vs off where nothing can hit: the price of hashing and bookkeeping."""

    ttft_off: list[float]
    ttft_on: list[float]
    cached_on: list[int]

    @property
    def median_off(self) -> float:
        return statistics.median(self.ttft_off)

    @property
    def median_on(self) -> float:
        return statistics.median(self.ttft_on)

    @property
    def ratio(self) -> float:
        """Median TTFT with caching on / off (1.00 = no overhead)."""
        return self.median_on / self.median_off


def zero_hit_overhead(llm_off: "LLM", llm_on: "LLM", prompts: Sequence[str], repeats: int = 1) -> OverheadResult:
    """Time all-distinct ``prompts`` on both engines, alternating, with the cache reset per pass.

    Each prompt runs on both engines back to back, the first engine alternating
    from prompt to prompt, so load changes and order effects hit both sides alike.
    """
    warm_up(llm_off)
    warm_up(llm_on)
    t_off: list[float] = []
    t_on: list[float] = []
    cached: list[int] = []
    for _ in range(repeats):
        llm_on.reset_prefix_cache()
        for i, p in enumerate(prompts):
            if i % 2:  # alternate which engine goes first
                t_off.append(measure(llm_off, [p])[0].ttft_s)
            s = measure(llm_on, [p])[0]
            t_on.append(s.ttft_s)
            cached.append(s.num_cached_tokens)
            if not i % 2:
                t_off.append(measure(llm_off, [p])[0].ttft_s)
    return OverheadResult(t_off, t_on, cached)


def prefix_caching_defaults() -> dict[str, Any]:
    """Where vLLM's "on by default" lives, read from the installed source (no engine started).

    ``EngineArgs.enable_prefix_caching`` defaults to ``None``, which
    ``EngineArgs._set_default_args`` resolves to ``ModelConfig.is_prefix_caching_supported``
    (True for decoder-only generative models); ``CacheConfig.enable_prefix_caching``
    defaults to True.
    """
    import dataclasses
    import inspect

    from vllm.config import CacheConfig
    from vllm.engine.arg_utils import EngineArgs

    def default(cls: Any, name: str) -> Any:
        return next(f.default for f in dataclasses.fields(cls) if f.name == name)

    src = inspect.getsource(EngineArgs)
    resolves = "self.enable_prefix_caching = default_prefix_caching" in src
    return {
        "EngineArgs.enable_prefix_caching": default(EngineArgs, "enable_prefix_caching"),
        "None resolved to ModelConfig.is_prefix_caching_supported": resolves,
        "CacheConfig.enable_prefix_caching": default(CacheConfig, "enable_prefix_caching"),
        "EngineArgs.scheduling_policy": default(EngineArgs, "scheduling_policy"),
    }


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


@contextmanager
def temporary_llm(**engine_kwargs: Any) -> Iterator["LLM"]:
    """``make_llm(**engine_kwargs)`` for the length of a ``with`` block, then ``close_llm``."""
    llm = make_llm(**engine_kwargs)
    try:
        yield llm
    finally:
        close_llm(llm)


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
    b = list(tokenizer.encode(seed_prompt(distinct_prompts(scenario.system_prompt, 1)[0], scenario.questions[0])))
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


# --- the machine ------------------------------------------------------------------------------------


def hardware_summary() -> str:
    """The machine that produced the timings: CPU model, cores, and the GPU if one is used."""
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.lower().startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    text = f"CPU: {cpu}, {cores} cores usable ({os.cpu_count()} online), {platform.system()} {platform.machine()}"
    if detect_device() == "cuda":
        import torch

        text += f"; GPU: {torch.cuda.get_device_name(0)}"
    return text


def stats_rows(stats: Sequence[RequestStats]) -> list[tuple[int, int, int]]:
    """(prompt tokens, cached tokens, prefilled tokens) per request: the deterministic part of a run."""
    return [(s.prompt_tokens, s.num_cached_tokens, s.prefilled_tokens) for s in stats]


def format_rows(rows: Sequence[Sequence[Any]], header: Sequence[str]) -> str:
    """A plain-text table (for ``# NBVAL_CHECK_OUTPUT`` cells and the CLI)."""
    cells = [[str(h) for h in header]] + [[str(c) for c in r] for r in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(header))]
    out = ["  ".join(c.rjust(w) for c, w in zip(r, widths)) for r in cells]
    out.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(out)


__all__: list[str] = [
    "SEED_SYSTEM_PROMPT", "SEED_QUESTIONS", "Scenario", "build_system_prompt", "seed_prompt", "build_scenario",
    "common_prefix_len", "full_block_tokens", "predicted_cached_tokens", "BlockRounding", "block_rounding",
    "engine_block_size", "caching_enabled", "ScenarioRow", "ScenarioRun", "run_scenario", "ScenarioComparison",
    "compare_scenario", "distinct_prompts", "OverheadResult", "zero_hit_overhead", "prefix_caching_defaults",
    "default_block_sizes", "BlockSizeRow", "block_size_sweep", "alternating_workload", "CacheSizeRow",
    "run_on_pool", "cache_size_sweep", "default_pool_sizes", "hardware_summary", "stats_rows", "format_rows", "warm_up",
    "SEED_TEMPLATES", "seed_templates", "scheduling_order", "temporary_llm", "bench_seed_scenario",
]


# --- the benchmark (``course bench seed-scenario``, benchmarks/bench_seed_scenario.py) -----------


def bench_seed_scenario(repeats: int = 5, target_tokens: int = SEED_SYSTEM_TOKENS, overhead_prompts: int = 4) -> str:
    """Run the seed's scenario ``repeats`` times with caching off and on; return the report.

    Reports the per-request table (median TTFTs), the measured TTFT speedup (median
    over repetitions) next to the token bound and the seed's claims, and the
    zero-hit overhead (median TTFT caching on / off on all-distinct prompts).

    Why two engine pairs: in one process, an engine started later runs long
    prefills faster than one started earlier (measured here: three identical
    engines, 255 / 181 / 159 ms for the same 1000-token prompt). The repetitions
    are therefore split between a pair started off-then-on and a pair started
    on-then-off, so the start order favours neither side.
    """
    first = (repeats + 1) // 2
    off_runs: list[ScenarioRun] = []
    on_runs: list[ScenarioRun] = []
    t_off: list[float] = []
    t_on: list[float] = []
    cached: list[int] = []
    per_order = []
    for order, n in ((("off", "on"), first), (("on", "off"), repeats - first)):
        if n == 0:
            continue
        with temporary_llm(enable_prefix_caching=order[0] == "on") as e1, temporary_llm(
            enable_prefix_caching=order[1] == "on"
        ) as e2:
            off, on = (e1, e2) if order[0] == "off" else (e2, e1)
            scenario = build_scenario(on.get_tokenizer(), target_tokens)
            comp = compare_scenario(off, on, scenario, n)
            ovh = zero_hit_overhead(off, on, distinct_prompts(scenario.system_prompt, overhead_prompts))
            block_size = engine_block_size(on)
        off_runs += comp.off
        on_runs += comp.on
        t_off += ovh.ttft_off
        t_on += ovh.ttft_on
        cached += ovh.cached_on
        per_order.append(
            f"  started {order[0]} then {order[1]}: speedup median {comp.measured_speedup:.2f}x over {n}, "
            f"zero-hit on/off {ovh.ratio:.2f}"
        )
    comp = ScenarioComparison(off_runs, on_runs)
    overhead = OverheadResult(t_off, t_on, cached)
    lines = [
        f"seed scenario: system prompt {scenario.system_tokens} tokens, {len(scenario.questions)} questions, "
        f"block_size {block_size}, {repeats} repetitions",
        hardware_summary(),
        "",
        comp.table(),
        "",
        f"zero-hit overhead ({len(overhead.ttft_on)} all-distinct prompts, cached tokens {sum(overhead.cached_on)}): "
        f"median TTFT on/off = {overhead.ratio:.2f} "
        f"({overhead.median_on * 1e3:.1f} ms vs {overhead.median_off * 1e3:.1f} ms)",
        "engine start order (a later-started engine prefills faster in one process):",
        *per_order,
    ]
    return "\n".join(lines)
