"""Measuring a second tier: TTFT cold vs local hit vs tier hit, and a fleet's local and tier hits.

Part of ``course_lib.offload``; taught in ``notebooks/09_second_tier.ipynb`` and run by
``benchmarks/bench_offload.py``. Times are vLLM's own per-request ``first_token_latency``
(``course_lib.engine.run_one``); hit counts are vLLM's counters: ``prefix_cache_hits`` for the
local prefix cache, ``external_prefix_cache_hits`` for tokens a KV connector supplied
(``vllm/v1/metrics/loggers.py``). The local counter never includes the tier's tokens.
"""

from __future__ import annotations

import random
import statistics
from dataclasses import dataclass, field
from typing import Any, Sequence

#: The four counters on a server's ``/metrics`` (``_total`` added by Prometheus' text format).
FLEET_COUNTERS = {
    "queries": "vllm:prefix_cache_queries_total",
    "local_hits": "vllm:prefix_cache_hits_total",
    "tier_queries": "vllm:external_prefix_cache_queries_total",
    "tier_hits": "vllm:external_prefix_cache_hits_total",
}


def random_prompt(n_tokens: int, seed: int) -> list[int]:
    """``n_tokens`` token ids no other prompt shares (fixed by ``seed``): a guaranteed cold start."""
    rng = random.Random(f"offload-{seed}")
    return [rng.randrange(1000, 40000) for _ in range(n_tokens)]


@dataclass
class TierTiming:
    """Median TTFT (seconds) of one prompt length: cold, local hit, tier hit (and cold without a connector)."""

    prompt_tokens: int
    cold_s: float
    local_s: float
    tier_s: float
    cold_plain_s: float | None
    cached: dict[str, int] = field(default_factory=dict)  # num_cached_tokens of each kind of run

    @property
    def tier_speedup(self) -> float:
        """How many times faster a tier hit is than computing the prompt."""
        return self.cold_s / self.tier_s


def _prompts(lengths: Sequence[int], repeats: int, seed: int) -> dict[int, list[list[int]]]:
    return {n: [random_prompt(n, seed * 1000 + r * 100_000 + n) for r in range(repeats)] for n in lengths}


def cold_ttft(llm: Any, lengths: Sequence[int], repeats: int = 3, *, seed: int = 0) -> dict[int, float]:
    """Median TTFT of the prompts ``ttft_by_tier`` uses, on an engine WITHOUT a connector.

    Run it in its own phase: vLLM keeps one KV connector per process
    (``vllm/distributed/kv_transfer/kv_transfer_state.py``), so an engine without one cannot
    run beside an engine with one; close one before starting the other.
    """
    from course_lib.engine import run_one

    return {n: statistics.median(run_one(llm, p).ttft_s for p in ps)
            for n, ps in _prompts(lengths, repeats, seed).items()}  # fmt: skip


def ttft_by_tier(llm: Any, lengths: Sequence[int], repeats: int = 3, *, cold_plain: dict[int, float] | None = None,
                 seed: int = 0) -> list[TierTiming]:
    """For each length, ``repeats`` fresh prompts, each run three times on ``llm`` (which has the tier):

    1. cold: nothing cached anywhere; the prompt is computed (and its blocks written to the tier);
    2. local hit: the same prompt again, from the engine's own prefix cache;
    3. tier hit: after ``reset_prefix_cache()`` the local cache is empty, the tier is not.

    The three runs of one prompt follow each other, so they see the same machine load. The
    cold run includes writing the prompt's blocks to the tier; ``cold_plain`` (from
    ``cold_ttft`` on an engine without a connector, same prompts) is copied into the rows.
    """
    from course_lib.engine import run_one

    rows = []
    for n, prompts in _prompts(lengths, repeats, seed).items():
        times: dict[str, list[float]] = {"cold": [], "local": [], "tier": []}
        cached: dict[str, int] = {}
        for prompt in prompts:
            for kind in ("cold", "local", "tier"):
                if kind == "tier":
                    llm.reset_prefix_cache()
                stats = run_one(llm, prompt)
                times[kind].append(stats.ttft_s)
                cached[kind] = stats.num_cached_tokens
        med = {k: statistics.median(v) for k, v in times.items()}
        rows.append(TierTiming(n, med["cold"], med["local"], med["tier"], (cold_plain or {}).get(n), cached))
    return rows


def fleet_counters(base_urls: Sequence[str]) -> list[dict[str, float]]:
    """The four prefix-cache counters of each server now (local and tier queries and hits)."""
    from course_lib.metrics import scrape

    out = []
    for url in base_urls:
        snap = scrape(url)
        out.append({k: sum(s.value for s in snap.series(name)) for k, name in FLEET_COUNTERS.items()})
    return out


def counter_increase(before: Sequence[dict[str, float]], after: Sequence[dict[str, float]]) -> list[dict[str, int]]:
    """Per server, how much each counter rose between two ``fleet_counters`` readings."""
    return [{k: round(a[k] - b[k]) for k in a} for b, a in zip(before, after)]


def fleet_hit_rates(increase: Sequence[dict[str, int]]) -> dict[str, float]:
    """Fleet-wide shares of prompt tokens served locally, from the tier, and in total.

    ``queries`` counts every prompt token the local cache was asked about; the tier is asked
    only about the tokens the local cache missed, so the two hit counts add up.
    """
    q = sum(r["queries"] for r in increase)
    local = sum(r["local_hits"] for r in increase)
    tier = sum(r["tier_hits"] for r in increase)
    return {"local": local / q if q else 0.0, "tier": tier / q if q else 0.0,
            "total": (local + tier) / q if q else 0.0}  # fmt: skip
