"""course_lib.scenario on the real engine: the seed's scenario, its block arithmetic, the knob sweeps.

Expected cached-token counts are never typed in: they come from vLLM (num_cached_tokens)
and, independently, from block arithmetic on the token ids or from the simulator.
"""

from __future__ import annotations

import pytest

from course_lib import scenario as sc
from course_lib.engine import CourseError, make_llm


@pytest.fixture(scope="module")
def seed(llm):
    """The seed's scenario (about 1000-token system prompt) for the engine's tokenizer."""
    return sc.build_scenario(llm.get_tokenizer())


@pytest.fixture(scope="module")
def short(llm):
    """A 300-token version: enough blocks to hit, cheap enough for engines started per test."""
    return sc.build_scenario(llm.get_tokenizer(), target_tokens=300)


def test_system_prompt_is_the_seeds_extended_deterministically(llm, seed):
    tok = llm.get_tokenizer()
    again = sc.build_system_prompt(tok)
    assert again == seed.system_prompt
    assert seed.system_prompt.startswith(sc.SEED_SYSTEM_PROMPT)
    n = len(tok.encode(seed.system_prompt, add_special_tokens=False))
    assert n == seed.system_tokens
    assert 980 <= n <= 1000
    assert [p.endswith(f"User: {q}\nAssistant:") for p, q in zip(seed.prompts, sc.SEED_QUESTIONS)] == [True] * 3
    # The prompts differ only after the system prompt.
    assert seed.shared_prefix_tokens >= n - 2
    with pytest.raises(ValueError, match="shorter than the base prompt"):
        sc.build_system_prompt(tok, target_tokens=10)


def test_scenario_cached_tokens_equal_block_arithmetic_and_vllm(fresh_llm, seed):
    run = sc.run_scenario(fresh_llm, seed)
    bs = sc.engine_block_size(fresh_llm)
    assert run.caching and run.block_size == bs
    vllm_cached = [r.cached_tokens for r in run.rows]
    rounding = sc.block_rounding(seed, bs)
    assert vllm_cached == list(rounding.cached_tokens) == sc.predicted_cached_tokens(seed.prompt_token_ids, bs)
    full = seed.shared_prefix_tokens // bs * bs
    assert vllm_cached == [0, full, full]
    assert [r.prompt_tokens for r in run.rows] == seed.prompt_tokens
    assert run.total_prefilled_tokens == sum(rounding.prefilled_tokens)
    assert rounding.unaligned_tail == seed.shared_prefix_tokens - full
    assert all(t > 0 for t in (r.ttft_s for r in run.rows))
    lines = rounding.lines()
    assert f"= {run.total_prefilled_tokens} (seed:" in lines[-2]


def test_caching_off_caches_nothing_and_comparison_uses_token_bound(llm, seed):
    with sc.temporary_llm(enable_prefix_caching=False) as off:
        assert not sc.caching_enabled(off)
        comp = sc.compare_scenario(off, llm, seed, repeats=1)
        with pytest.raises(ValueError, match="caching off first"):
            sc.compare_scenario(llm, off, seed, repeats=1)
    assert [r.cached_tokens for r in comp.off[0].rows] == [0, 0, 0]
    assert comp.off[0].total_prefilled_tokens == sum(seed.prompt_tokens)
    on = comp.on[0]
    assert comp.ideal_speedup == pytest.approx(on.total_prompt_tokens / on.total_prefilled_tokens)
    assert comp.ideal_speedup > 2
    assert len(comp.speedups) == 1 and comp.speedups[0] > 0
    table = comp.table()
    assert "ideal TTFT speedup (token bound)" in table and f"{on.total_prefilled_tokens:>5}" in table


def test_distinct_prompts_never_hit(fresh_llm, short):
    prompts = sc.distinct_prompts(short.system_prompt, 3)
    stats = sc.measure(fresh_llm, prompts)
    assert [s.num_cached_tokens for s in stats] == [0, 0, 0]
    # ...while the same prompts again hit all their full blocks: the zero is not an accident.
    bs = sc.engine_block_size(fresh_llm)
    again = sc.measure(fresh_llm, prompts[:1])[0]
    assert again.num_cached_tokens == (again.prompt_tokens - 1) // bs * bs > 0


def test_prefix_caching_is_on_by_default():
    d = sc.prefix_caching_defaults()
    assert d["CacheConfig.enable_prefix_caching"] is True
    assert d["EngineArgs.enable_prefix_caching"] is None
    assert d["None resolved to ModelConfig.is_prefix_caching_supported"] is True
    assert d["EngineArgs.scheduling_policy"] == "fcfs"


def test_block_size_sweep_matches_block_arithmetic(llm, short):
    bs = sc.engine_block_size(llm)
    rows = sc.block_size_sweep(short, [bs, 2 * bs])
    assert [r.block_size for r in rows] == [bs, 2 * bs]
    for r in rows:
        assert r.cached_tokens == r.predicted_cached_tokens
        assert all(c % r.block_size == 0 for c in r.cached_tokens)
        assert r.cached_tokens[0] == 0 and r.cached_tokens[1] > 0
    # Larger blocks can only lose tokens to rounding.
    assert rows[0].total_prefilled <= rows[1].total_prefilled


def test_block_size_16_is_a_clear_error_on_cpu_only():
    if sc.detect_device() == "cpu":
        with pytest.raises(CourseError, match="multiple of 32"):
            make_llm(block_size=16)
    else:  # the GPU default
        with sc.temporary_llm(block_size=16) as gpu:
            assert sc.engine_block_size(gpu) == 16


def test_cache_size_sweep_small_pool_loses_hits_and_simulator_agrees(llm, short):
    bs = sc.engine_block_size(llm)
    work = sc.alternating_workload(short, llm.get_tokenizer(), rounds=2)
    sizes = sc.default_pool_sizes(work, bs)
    rows = sc.cache_size_sweep(work, [sizes[0], sizes[-1]])
    small, big = rows
    # A pool that holds both prefixes: every repeat hits all its full blocks.
    assert big.cached_tokens == sc.predicted_cached_tokens(work, bs)
    assert small.hit_rate < big.hit_rate
    for row in rows:
        table = row.comparison()
        assert all(eq for *_, eq in table), table


def test_priority_reorders_only_by_priority(short):
    with sc.temporary_llm(scheduling_policy="priority", max_num_seqs=1) as llm:
        bs = sc.engine_block_size(llm)
        full = short.shared_prefix_tokens // bs * bs
        assert sc.scheduling_order(llm, short.prompt_token_ids) == [0, full, full]
        # The request given the best (lowest) priority runs first and is the one that misses.
        assert sc.scheduling_order(llm, short.prompt_token_ids, [2, 1, 0]) == [full, full, 0]


def test_helpers():
    assert sc.common_prefix_len([1, 2, 3], [1, 2, 4], [1, 2]) == 2
    assert sc.full_block_tokens(1005, 32) == 992
    with pytest.raises(ValueError):
        sc.full_block_tokens(10, 0)
    # The last token is never served from the cache: an identical 64-token prompt hits 32, not 64.
    assert sc.predicted_cached_tokens([list(range(64)), list(range(64))], 32) == [0, 32]
    assert "CPU:" in sc.hardware_summary()
    assert sc.format_rows([(1, 2)], ["a", "b"]).splitlines()[0].split() == ["a", "b"]
