"""course_lib.scenario on the real engine: the shared-system-prompt scenario and its block arithmetic.

Expected cached-token counts are never typed in: they come from vLLM (num_cached_tokens)
and, independently, from block arithmetic on the token ids or from the simulator.
"""

from __future__ import annotations

import pytest

from course_lib import scenario as sc


@pytest.fixture(scope="module")
def scenario(llm):
    """The shared-system-prompt scenario (about 1000-token system prompt) for the engine's tokenizer."""
    return sc.build_scenario(llm.get_tokenizer())


@pytest.fixture(scope="module")
def short(llm):
    """A 300-token version: enough blocks to hit, cheap enough for engines started per test."""
    return sc.build_scenario(llm.get_tokenizer(), target_tokens=300)


def test_system_prompt_is_the_base_prompt_extended_deterministically(llm, scenario):
    tok = llm.get_tokenizer()
    again = sc.build_system_prompt(tok)
    assert again == scenario.system_prompt
    assert scenario.system_prompt.startswith(sc.BASE_SYSTEM_PROMPT)
    n = len(tok.encode(scenario.system_prompt, add_special_tokens=False))
    assert n == scenario.system_tokens
    assert 980 <= n <= 1000
    assert [p.endswith(f"User: {q}\nAssistant:") for p, q in zip(scenario.prompts, sc.QUESTIONS)] == [True] * 3
    # The prompts differ only after the system prompt.
    assert scenario.shared_prefix_tokens >= n - 2
    with pytest.raises(ValueError, match="shorter than the base prompt"):
        sc.build_system_prompt(tok, target_tokens=10)


def test_scenario_cached_tokens_equal_block_arithmetic_and_vllm(fresh_llm, scenario):
    run = sc.run_scenario(fresh_llm, scenario)
    bs = sc.engine_block_size(fresh_llm)
    assert run.caching and run.block_size == bs
    vllm_cached = [r.cached_tokens for r in run.rows]
    rounding = sc.block_rounding(scenario, bs)
    assert vllm_cached == list(rounding.cached_tokens) == sc.predicted_cached_tokens(scenario.prompt_token_ids, bs)
    full = scenario.shared_prefix_tokens // bs * bs
    assert vllm_cached == [0, full, full]
    assert [r.prompt_tokens for r in run.rows] == scenario.prompt_tokens
    assert run.total_prefilled_tokens == sum(rounding.prefilled_tokens)
    assert rounding.unaligned_tail == scenario.shared_prefix_tokens - full
    assert all(t > 0 for t in (r.ttft_s for r in run.rows))
    lines = rounding.lines()
    assert f"= {run.total_prefilled_tokens} (claim:" in lines[-2]


def test_caching_off_caches_nothing_and_comparison_uses_token_bound(llm, scenario):
    with sc.temporary_llm(enable_prefix_caching=False) as off:
        assert not sc.caching_enabled(off)
        comp = sc.compare_scenario(off, llm, scenario, repeats=1)
        with pytest.raises(ValueError, match="caching off first"):
            sc.compare_scenario(llm, off, scenario, repeats=1)
    assert [r.cached_tokens for r in comp.off[0].rows] == [0, 0, 0]
    assert comp.off[0].total_prefilled_tokens == sum(scenario.prompt_tokens)
    on = comp.on[0]
    assert comp.ideal_speedup == pytest.approx(on.total_prompt_tokens / on.total_prefilled_tokens)
    assert comp.ideal_speedup > 2
    assert len(comp.speedups) == 1 and comp.speedups[0] > 0
    table = comp.table()
    assert "ideal TTFT speedup (token bound)" in table and f"{on.total_prefilled_tokens:>5}" in table


def test_helpers():
    assert sc.common_prefix_len([1, 2, 3], [1, 2, 4], [1, 2]) == 2
    assert sc.full_block_tokens(1005, 32) == 992
    with pytest.raises(ValueError):
        sc.full_block_tokens(10, 0)
    # The last token is never served from the cache: an identical 64-token prompt hits 32, not 64.
    assert sc.predicted_cached_tokens([list(range(64)), list(range(64))], 32) == [0, 32]
    assert "CPU:" in sc.hardware_summary()
    assert sc.format_rows([(1, 2)], ["a", "b"]).splitlines()[0].split() == ["a", "b"]

