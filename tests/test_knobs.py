"""course_lib.knobs on the real engine: defaults, block size and pool size sweeps, scheduling order.

Expected cached-token counts come from vLLM and, independently, from block arithmetic or the simulator.
"""

from __future__ import annotations

import pytest

from course_lib import knobs
from course_lib import scenario as sc
from course_lib.engine import CourseError, make_llm


@pytest.fixture(scope="module")
def short(llm):
    """A 300-token version: enough blocks to hit, cheap enough for engines started per test."""
    return sc.build_scenario(llm.get_tokenizer(), target_tokens=300)


def test_prefix_caching_is_on_by_default():
    d = knobs.prefix_caching_defaults()
    assert d["CacheConfig.enable_prefix_caching"] is True
    assert d["EngineArgs.enable_prefix_caching"] is None
    assert d["None resolved to ModelConfig.is_prefix_caching_supported"] is True
    assert d["EngineArgs.scheduling_policy"] == "fcfs"


def test_block_size_sweep_matches_block_arithmetic(llm, short):
    bs = sc.engine_block_size(llm)
    rows = knobs.block_size_sweep(short, [bs, 2 * bs])
    assert [r.block_size for r in rows] == [bs, 2 * bs]
    for r in rows:
        assert r.cached_tokens == r.predicted_cached_tokens
        assert all(c % r.block_size == 0 for c in r.cached_tokens)
        assert r.cached_tokens[0] == 0 and r.cached_tokens[1] > 0
    # Larger blocks can only lose tokens to rounding.
    assert rows[0].total_prefilled <= rows[1].total_prefilled


def test_block_size_16_is_a_clear_error_on_cpu_only():
    if knobs.detect_device() == "cpu":
        with pytest.raises(CourseError, match="multiple of 32"):
            make_llm(block_size=16)
    else:  # a GPU attention backend that takes 16 (FlashAttention does)
        with sc.temporary_llm(block_size=16) as gpu:
            assert sc.engine_block_size(gpu) == 16


def test_cache_size_sweep_small_pool_loses_hits_and_simulator_agrees(llm, short):
    bs = sc.engine_block_size(llm)
    work = knobs.alternating_workload(short, llm.get_tokenizer(), rounds=2)
    sizes = knobs.default_pool_sizes(work, bs)
    rows = knobs.cache_size_sweep(work, [sizes[0], sizes[-1]])
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
        assert knobs.scheduling_order(llm, short.prompt_token_ids) == [0, full, full]
        # The request given the best (lowest) priority runs first and is the one that misses.
        assert knobs.scheduling_order(llm, short.prompt_token_ids, [2, 1, 0]) == [full, full, 0]
