"""The shared-system-prompt scenario on the real engine: one long system prompt, three questions.

Taught in ``notebooks/03_live_engine.ipynb`` and printed by ``course bench system-prompt``.

A claim that circulates about prefix caching: with a 1000-token system prompt
shared by three requests of about 50 question tokens each, caching cuts the
tokens prefilled from 3000 to "1000 + 50 + 50 = 1100" and makes the time to
first token (TTFT) about 3x faster. This module builds that scenario
deterministically for the course tokenizer (a short programming-assistant
prompt extended with fixed guidelines to about 1000 tokens), runs it through
vLLM with prefix caching off and on (``course_lib.engine.measure``), and
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

The knob sweeps (block size, KV cache size, scheduling policy, warming) live in
``course_lib.knobs``; the zero-hit overhead and the benchmark in
``course_lib.bench``; the rules' exceptions (``prompt_logprobs``, same-step hits,
chunked prefill, ``reset_prefix_cache``) in ``course_lib.cache_rules``.
"""

from __future__ import annotations

import os
import platform
import statistics
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Iterator, Sequence

from course_lib.engine import RequestStats, close_llm, detect_device, make_llm, measure
from course_lib.engine import block_size as engine_block_size
from course_lib.simulator import common_prefix_len, expected_cached_tokens, full_block_tokens

if TYPE_CHECKING:
    from vllm import LLM

#: The opening of the scenario's system prompt (``build_system_prompt`` extends it).
BASE_SYSTEM_PROMPT = (
    "You are a helpful AI assistant specialized in programming.\n"
    "Follow best practices. Provide clear explanations with code examples.\n"
    "Always consider edge cases and error handling."
)

#: The scenario's three questions, one per request.
QUESTIONS: tuple[str, ...] = (
    "How do I sort a list in Python?",
    "What's the difference between async and sync?",
    "Explain decorators in Python",
)

#: The system prompt's length in tokens, as the circulating claim has it.
SYSTEM_PROMPT_TOKENS = 1000
#: The claim's other numbers, printed next to the measured ones: ~50 tokens per
#: question, 3000 tokens prefilled without caching, 1100 with, TTFT ~3x faster.
CLAIMED_QUESTION_TOKENS = 50
CLAIMED_PREFILLED_OFF = 3000
CLAIMED_PREFILLED_ON = 1100
CLAIMED_TTFT_SPEEDUP = 3.0

#: Guidelines appended (in order, then again with a round number) to
#: ``BASE_SYSTEM_PROMPT`` until it is about ``target_tokens`` long. Written for the course.
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


def build_system_prompt(tokenizer: Any, target_tokens: int = SYSTEM_PROMPT_TOKENS, base: str = BASE_SYSTEM_PROMPT) -> str:
    """``base`` (by default ``BASE_SYSTEM_PROMPT``) extended with fixed guidelines to at most ``target_tokens``.

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


def plain_prompt(system_prompt: str, question: str) -> str:
    """A plain-text prompt without chat template: ``f"{system_prompt}\\n\\nUser: {question}\\nAssistant:"``.

    Plain text keeps the token ids easy to follow; notebook 04 uses the model's chat template.
    """
    return f"{system_prompt}\n\nUser: {question}\nAssistant:"


@dataclass(frozen=True)
class Scenario:
    """The shared-system-prompt workload, built for one tokenizer: the prompts and their token ids."""

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
    tokenizer: Any, target_tokens: int = SYSTEM_PROMPT_TOKENS, questions: Sequence[str] = QUESTIONS
) -> Scenario:
    """The shared-system-prompt scenario for ``tokenizer`` (pass ``llm.get_tokenizer()``)."""
    system = build_system_prompt(tokenizer, target_tokens)
    prompts = tuple(plain_prompt(system, q) for q in questions)
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
    """The claim's "1000 + 50 + 50 = 1100" redone with real token counts and whole blocks."""

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
            f"(claim: {SYSTEM_PROMPT_TOKENS} + {CLAIMED_QUESTION_TOKENS} + {CLAIMED_QUESTION_TOKENS} = {CLAIMED_PREFILLED_ON})"
        )
        out.append(
            f"prefilled without caching: {' + '.join(map(str, self.prompt_tokens))} = "
            f"{sum(self.prompt_tokens)} (claim: {CLAIMED_PREFILLED_OFF})"
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
        """The per-request table with medians, totals, and the circulating claim's numbers next to them."""
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
            f"prefilled tokens, caching off: {off.total_prefilled_tokens:>5}   (claim: {CLAIMED_PREFILLED_OFF})",
            f"prefilled tokens, caching on:  {on.total_prefilled_tokens:>5}   (claim: {CLAIMED_PREFILLED_ON})",
            f"ideal TTFT speedup (token bound): {self.ideal_speedup:.2f}x",
            f"measured TTFT speedup (median of {len(self.speedups)}): {self.measured_speedup:.2f}x   "
            f"(claim: ~{CLAIMED_TTFT_SPEEDUP:.0f}x)",
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



@contextmanager
def temporary_llm(**engine_kwargs: Any) -> Iterator["LLM"]:
    """``make_llm(**engine_kwargs)`` for the length of a ``with`` block, then ``close_llm``."""
    llm = make_llm(**engine_kwargs)
    try:
        yield llm
    finally:
        close_llm(llm)


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
    text = f"CPU: {cpu}, {cores} core{'' if cores == 1 else 's'} usable ({os.cpu_count()} online), {platform.system()} {platform.machine()}"
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
    "BASE_SYSTEM_PROMPT", "QUESTIONS", "SYSTEM_PROMPT_TOKENS", "CLAIMED_QUESTION_TOKENS", "CLAIMED_PREFILLED_OFF",
    "CLAIMED_PREFILLED_ON", "CLAIMED_TTFT_SPEEDUP", "Scenario", "build_system_prompt", "plain_prompt", "build_scenario",
    "common_prefix_len", "full_block_tokens", "predicted_cached_tokens", "BlockRounding", "block_rounding",
    "engine_block_size", "caching_enabled", "ScenarioRow", "ScenarioRun", "run_scenario", "ScenarioComparison",
    "compare_scenario", "warm_up", "temporary_llm", "hardware_summary", "stats_rows", "format_rows",
]
