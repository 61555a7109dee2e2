"""Tests of course_lib.kv_cache (and its figures in course_lib.viz): sizes checked against vLLM's own
KV cache config on the real engine, block tables and cached-token counts read from the engine."""

from __future__ import annotations

import pytest

from course_lib import kv_cache as K
from course_lib.engine import CourseError


def test_bytes_per_token_formula_on_known_configs():
    # Llama-2-7B: 32 layers, 32 KV heads (no GQA), head_dim 128, fp16 -> 512 KiB per token.
    llama2 = {"num_hidden_layers": 32, "num_attention_heads": 32, "hidden_size": 4096}
    assert K.kv_bytes_per_token(llama2, "float16") == 2 * 32 * 32 * 128 * 2 == 524288
    # GQA: only the KV heads count; head_dim defaults to hidden_size // attention heads.
    gqa = {"num_hidden_layers": 30, "num_attention_heads": 9, "num_key_value_heads": 3, "hidden_size": 576}
    shape = K.kv_shape(gqa, "bfloat16")
    assert (shape.num_kv_heads, shape.head_dim, shape.bytes_per_token) == (3, 64, 23040)
    assert "23,040 bytes per token" in shape.formula()
    with pytest.raises(CourseError, match="dtype"):
        K.kv_bytes_per_token(gqa, "complex128")
    with pytest.raises(CourseError, match="decoder-only"):
        K.kv_shape({"hidden_size": 8})


def test_bytes_per_token_matches_vllm_page_size(llm):
    """The config formula equals what vLLM allocates: its per-layer page size, summed over layers."""
    from vllm.v1.kv_cache_interface import FullAttentionSpec

    shape = K.engine_kv_shape(llm)
    geometry = K.cache_geometry(llm)
    assert geometry.spec == "FullAttentionSpec"
    assert geometry.num_layers == shape.num_layers
    assert geometry.bytes_per_token == shape.bytes_per_token
    # Independently: vLLM's own spec class for one layer, built from the config numbers.
    import torch

    spec = FullAttentionSpec(block_size=geometry.block_size, num_kv_heads=shape.num_kv_heads,
                             head_size=shape.head_dim, dtype=getattr(torch, shape.dtype))  # fmt: skip
    assert spec.page_size_bytes * shape.num_layers == geometry.bytes_per_block


def test_block_count_is_the_budget_divided_by_bytes_per_block(llm):
    geometry = K.cache_geometry(llm)
    shape = K.engine_kv_shape(llm)
    assert geometry.budget_bytes  # the course bounds the CPU cache explicitly
    assert geometry.num_blocks == K.expected_num_blocks(geometry.budget_bytes, shape.bytes_per_token, geometry.block_size)
    assert geometry.num_blocks == llm.llm_engine.vllm_config.cache_config.num_gpu_blocks
    assert geometry.allocated_bytes == geometry.num_blocks * geometry.bytes_per_block <= geometry.budget_bytes
    assert geometry.budget_bytes - geometry.allocated_bytes < geometry.bytes_per_block  # rounded down, by < 1 block


def test_blocks_needed_counts_partial_blocks():
    assert [K.blocks_needed(n, 32) for n in (1, 31, 32, 33, 64, 65)] == [1, 1, 1, 2, 2, 3]


def test_fixed_prompt_has_exact_lengths_and_no_shared_prefix_across_offsets(llm):
    a, b = K.fixed_prompt(llm, 100), K.fixed_prompt(llm, 100, offset=5)
    assert len(a) == len(b) == 100 and a[0] != b[0]
    assert K.fixed_prompt(llm, 40) == a[:40]


def test_n_minus_one_rule_and_full_blocks_on_the_engine(fresh_llm):
    block = K.cache_geometry(fresh_llm).block_size
    for n in (block - 1, block, block + 1, 3 * block, 3 * block + 1):
        prompt = K.fixed_prompt(fresh_llm, n, offset=n)
        K.timed_request(fresh_llm, prompt, 2)
        cached = K.timed_request(fresh_llm, prompt, 2).num_cached_tokens
        assert cached == (n - 1) // block * block, n


def test_block_tables_share_the_prefix_blocks_and_the_pool_shows_them():
    from course_lib.engine import close_llm, make_llm

    small = make_llm(num_gpu_blocks_override=8)
    try:
        block = K.cache_geometry(small).block_size
        assert [s for _, s in K.pool_snapshot(small)] == ["null"] + ["empty"] * 7
        a = K.fixed_prompt(small, 3 * block + 4)
        b = a[: 2 * block + 8] + K.fixed_prompt(small, block, offset=7)
        ta, tb = K.block_tables(small, {"A": a, "B": b})
        assert len(ta.block_ids) == len(tb.block_ids) == 4  # 3 full blocks + a partial one each
        assert ta.block_ids[:2] == tb.block_ids[:2]  # the two shared full blocks: the same pool blocks
        assert ta.block_ids[2] not in tb.block_ids  # A's third block differs from B's: not shared
        assert (ta.num_cached_tokens, tb.num_cached_tokens) == (0, 2 * block)
        # Hits are hits: B's first two blocks came from the cache, the rest B computed (its last one partial).
        assert tb.hit_blocks == ta.block_ids[:2] and tb.computed_blocks == tb.block_ids[2:]
        assert tb.roles() == {tb.block_ids[0]: "cache hit", tb.block_ids[1]: "cache hit",
                              tb.block_ids[2]: "computed", tb.block_ids[3]: "partial"}  # fmt: skip
        assert ta.hit_blocks == [] and list(ta.roles().values()) == ["computed"] * 3 + ["partial"]
        states = dict(K.pool_snapshot(small))
        assert states[0] == "null" and "in use" not in states.values()
        assert all(states[i] == "cached" for i in ta.block_ids[:3])  # A's full blocks keep their hashes
    finally:
        close_llm(small)


def test_timing_sweep_reads_engine_timestamps(fresh_llm):
    points = K.prefill_decode_sweep(fresh_llm, [32, 128], output_tokens=4, repeats=1, progress=False)
    assert [p.prompt_tokens for p in points] == [32, 128]
    assert all(p.output_tokens == 4 and p.num_cached_tokens == 0 for p in points)
    assert all(p.ttft_s > 0 and p.decode_s_per_token > 0 for p in points)
    cw = K.cold_vs_warm(fresh_llm, 100, output_tokens=3, repeats=1)
    block = K.cache_geometry(fresh_llm).block_size
    assert (cw["cold"].num_cached_tokens, cw["warm"].num_cached_tokens) == (0, 99 // block * block)
    with pytest.raises(CourseError, match="at least 2"):
        K.timed_request(fresh_llm, [1, 2, 3], 1)


def test_figures_label_every_axis_with_its_unit(fresh_llm):
    from course_lib import viz

    t = [K.Timing(32, 0, 4, 0.01, 0.005), K.Timing(64, 0, 4, 0.02, 0.005)]
    fig = viz.prefill_decode_figure(t)
    titles = [fig.layout[a].title.text for a in ("xaxis", "xaxis2", "yaxis", "yaxis2")]
    assert titles[0] == titles[1] == "prompt length (tokens)" and "(ms)" in titles[2] and "ms per" in titles[3]
    assert list(fig.data[0].y) == pytest.approx([10, 20])
    fig = viz.cold_warm_figure({"cold": t[0], "warm": K.Timing(64, 32, 4, 0.004, 0.005)})
    assert list(fig.data[0].y) == pytest.approx([10, 4]) and "ms" in fig.layout.yaxis.title.text
    assert list(fig.data[0].marker.color) == [viz.COLORS["computed"], viz.COLORS["cached"]]  # cold = miss, warm = hit
    snap = K.pool_snapshot(fresh_llm)[:8]  # a figure for small pools: the first 8 blocks
    fig = viz.block_pool_figure([("idle", snap, {})])
    assert len(fig.layout.shapes) == 8 and fig.layout.shapes[0].fillcolor == viz._POOL_COLORS["null"] == viz.COLORS["null"]
    assert fig.layout.xaxis.title.text.startswith("block id") and fig.layout.meta[0] == dict(snap)
    # A running request's blocks are drawn by role: its cache hits and the blocks it computed never share a colour.
    running = [(0, "null"), (1, "in use"), (2, "in use"), (3, "in use"), (4, "cached"), (5, "empty")]
    roles = {1: "cache hit", 2: "computed", 3: "partial"}
    fig = viz.block_pool_figure([("B running", running, {1: "B", 2: "B", 3: "B"}, roles)])
    fills = [shape.fillcolor for shape in fig.layout.shapes]
    assert fills[1:4] == [viz.COLORS["cached"], viz.COLORS["computed"], viz.COLORS["partial"]]
    assert len(set(fills)) == 6  # null, hit, computed, partial, free with a hash, free and empty: six colours
    assert {t.name for t in fig.data[1:]} >= {"cache hit: found in the pool, not computed", "computed now (prefilled)"}


def test_memory_held_is_whole_blocks_read_from_block_tables(fresh_llm):
    geometry = K.cache_geometry(fresh_llm)
    block = geometry.block_size
    rows = K.memory_held(fresh_llm, [block - 1, block, block + 1])
    assert [r["blocks"] for r in rows] == [K.blocks_needed(n, block) for n in (block - 1, block, block + 1)] == [1, 1, 2]
    assert all(r["bytes_held"] >= r["bytes_used"] for r in rows)
    assert rows[1]["bytes_held"] == rows[1]["bytes_used"] == geometry.bytes_per_block
