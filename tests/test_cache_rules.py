"""course_lib.cache_rules on the real engine: the scope of the prefix-cache rules.

Expected counts come from block arithmetic on the token ids (course_lib.simulator), never typed in;
what is checked is vLLM's own num_cached_tokens, scheduler output and reset_prefix_cache result.
"""

from __future__ import annotations

import pytest

from course_lib import cache_rules as cr
from course_lib import scenario as sc
from course_lib.simulator import full_block_tokens


@pytest.fixture(scope="module")
def short(llm):
    return sc.build_scenario(llm.get_tokenizer(), target_tokens=300)


def test_prompt_logprobs_never_reads_the_cache_but_writes_it(fresh_llm, short):
    ids = list(short.prompt_token_ids[0])
    full = full_block_tokens(len(ids) - 1, sc.engine_block_size(fresh_llm))
    assert full > 0
    assert [c for _, c in cr.prompt_logprobs_hits(fresh_llm, ids)] == [0, 0, full, 0, full]


def test_skip_reading_prefix_cache_set_by_hand_overrides_the_default(fresh_llm, short):
    ids = list(short.prompt_token_ids[0])
    full = full_block_tokens(len(ids) - 1, sc.engine_block_size(fresh_llm))
    rows = dict(cr.skip_reading_overrides(fresh_llm, ids))
    # prompt_logprobs with the flag False reads the cache; a plain request with the flag True does not.
    assert rows == {
        "prompt_logprobs=0, skip_reading_prefix_cache=False": full,
        "plain, skip_reading_prefix_cache=True": 0,
    }


def test_prompts_in_one_generate_call_hit_each_other_in_the_same_step(fresh_llm, short):
    trace = cr.step_trace(fresh_llm, short.prompt_token_ids)
    shared = full_block_tokens(short.shared_prefix_tokens, sc.engine_block_size(fresh_llm))
    assert trace.cached_tokens == [0, shared, shared]
    first = trace.steps[0]
    # All three admitted in step 1: the hits are on blocks allocated in that very step.
    assert first.admitted == {0: 0, 1: shared, 2: shared}
    assert first.scheduled == {i: n - c for i, (n, c) in enumerate(zip(short.prompt_tokens, trace.cached_tokens))}
    assert trace.lines()[0].startswith(f"step 1: admitted request 1 (cached 0), request 2 (cached {shared})")


def test_chunked_prefill_shares_only_the_chunks_already_scheduled(llm, short):
    # A per-request chunk of 4 blocks within a step budget of 8: two prefills share each step.
    b = sc.engine_block_size(llm)
    with sc.temporary_llm(
        max_num_batched_tokens=8 * b, long_prefill_token_threshold=4 * b, kv_cache_memory_bytes=256 << 20
    ) as chunked:
        bs = sc.engine_block_size(chunked)
        chunk = chunked.llm_engine.vllm_config.scheduler_config.long_prefill_token_threshold
        trace = cr.step_trace(chunked, short.prompt_token_ids)
    shared = full_block_tokens(short.shared_prefix_tokens, bs)
    assert chunk < shared
    # Request 1 is admitted in step 1, next to request 0's first chunk, and hits only that chunk's full blocks.
    assert trace.steps[0].admitted == {0: 0, 1: full_block_tokens(chunk, bs)}
    assert trace.steps[0].scheduled == {0: chunk, 1: chunk}
    assert trace.cached_tokens[:2] == [0, full_block_tokens(chunk, bs)]
    # A request admitted once the shared prefix is scheduled in full hits all of it.
    assert trace.cached_tokens[2] == shared
    assert len(trace.steps) > 1


def test_reset_prefix_cache_refuses_while_a_request_runs(fresh_llm, short):
    rows = dict(cr.reset_while_running(fresh_llm, short.prompt_token_ids[0], max_tokens=4))
    assert rows["running requests after one step"] == 1
    assert rows["reset_prefix_cache()"] is False
    assert rows["reset_prefix_cache(reset_running_requests=True)"] is True
    assert rows["running requests after it (preempted to waiting)"] == 0
    assert rows["the request still finished, tokens generated"] == 4
    assert rows["reset_prefix_cache() with nothing running"] is True
    # And the cache really is empty afterwards.
    again = cr.run_one(fresh_llm, list(short.prompt_token_ids[0]))
    assert again.num_cached_tokens == 0


def test_full_attention_model_has_one_kv_cache_group(llm):
    lines = cr.kv_cache_groups(llm)
    layers = llm.llm_engine.vllm_config.model_config.hf_config.num_hidden_layers
    assert lines[0] == "coordinator: UnitaryKVCacheCoordinator"
    assert len(lines) == 2
    assert lines[1].startswith(f"group 0: FullAttentionSpec, {layers} layers, block_size {sc.engine_block_size(llm)}")
