"""PrefixCacheSimulator must agree with the real vLLM engine, request by request.

The expected numbers come from vLLM on CPU: ``num_cached_tokens`` of every
request, its prefix-cache counters, and (the engine core runs in this process)
the block pool's free queue and block hashes after the workload.
"""

from __future__ import annotations

import gc
import random

import pytest

from course_lib.simulator import PrefixCacheSimulator, engine_cached_hashes

BLOCK = 32  # make_llm's CPU block size
NUM_GPU_BLOCKS = 10  # 9 usable blocks: small enough that the workload evicts


def _workload(seed: int, n: int, max_len: int):
    """Seeded requests: shared prefixes, resubmissions, block-aligned prompts, salts,
    chat-like continuations (previous prompt + its generated tokens)."""
    rng = random.Random(seed)
    bases = [[rng.randrange(5, 1000) for _ in range(200)] for _ in range(3)]
    kinds = ["shared", "resubmit", "aligned", "fill", "continue", "random", "salted"]
    for i in range(n):
        kind = kinds[i % len(kinds)] if i < len(kinds) else rng.choice(kinds)
        max_tokens = rng.choice([1, 3, 6, 9])
        salt = None
        if kind == "shared":
            base = rng.choice(bases)
            prompt = base[: rng.randrange(20, 200)] + [rng.randrange(5, 1000) for _ in range(rng.randrange(0, 40))]
        elif kind == "aligned":
            prompt = rng.choice(bases)[: BLOCK * rng.randrange(1, 7)]
        elif kind == "fill":  # 29 tokens into a block: 8 generated tokens with KV complete it
            prompt, max_tokens = rng.choice(bases)[: BLOCK * rng.randrange(1, 6) + 29], 9
        elif kind == "random":
            prompt = [rng.randrange(5, 1000) for _ in range(rng.randrange(1, 150))]
        elif kind == "salted":
            prompt = rng.choice(bases)[: rng.randrange(40, 200)]
            salt = rng.choice(["tenant-a", "tenant-b"])
        else:  # "resubmit" / "continue": filled in by the caller from the previous request
            prompt = None
        yield kind, prompt, max_tokens, salt, max_len


def _pool_state(block_pool):
    """vLLM's free queue in eviction order, each block with its hash (group id stripped)."""
    return [
        (b.block_id, None if b.block_hash is None else bytes(b.block_hash[:-4]))
        for b in block_pool.free_block_queue.get_all_free_blocks()
    ]


def _sim_state(sim: PrefixCacheSimulator):
    return [(b, sim.block_hash(b)) for b in sim.free_queue()]


def _counters(llm) -> dict[str, int]:
    return {m.name: int(m.value) for m in llm.get_metrics() if m.name.startswith("vllm:prefix_cache_")}


def test_simulator_matches_vllm_engine_on_random_workload():
    from vllm import SamplingParams

    from course_lib.engine import make_llm, run_one

    llm = make_llm(num_gpu_blocks_override=NUM_GPU_BLOCKS)
    try:
        engine_core = llm.llm_engine.engine_core.engine_core
        block_pool = engine_core.scheduler.kv_cache_manager.block_pool
        max_len = llm.llm_engine.model_config.max_model_len
        sim = PrefixCacheSimulator(NUM_GPU_BLOCKS, BLOCK)
        assert _sim_state(sim) == _pool_state(block_pool)  # both start with block 0 reserved as null

        prev_prompt, prev_out, prev_salt = None, None, None
        evictions = generated_hits = 0
        for i, (kind, prompt, max_tokens, salt, max_len) in enumerate(_workload(seed=7, n=20, max_len=max_len)):
            if kind == "resubmit":
                prompt, salt = prev_prompt, prev_salt
            elif kind == "continue":
                prompt, salt = prev_prompt + prev_out, prev_salt
            prompt = prompt[: max_len - max_tokens]
            sampling = SamplingParams(max_tokens=max_tokens, temperature=0.0, ignore_eos=True)
            stats = run_one(llm, prompt, sampling, cache_salt=salt)
            assert len(stats.output_token_ids) == max_tokens
            predicted = sim.process(prompt, stats.output_token_ids, cache_salt=salt)
            assert predicted == stats.num_cached_tokens, (i, kind, len(prompt), max_tokens, salt)
            assert _sim_state(sim) == _pool_state(block_pool), (i, kind)
            assert engine_cached_hashes(llm) == sim.cached_hashes()
            evictions += len(sim.last.evicted_block_ids)
            if kind == "continue" and predicted > len(prev_prompt) // BLOCK * BLOCK:
                generated_hits += 1  # a block filled by generated tokens served a hit
            prev_prompt, prev_out, prev_salt = prompt, stats.output_token_ids, salt
            if i == 10:  # reset both mid-way: vLLM keeps the free-queue order, drops every hash
                assert llm.reset_prefix_cache()
                sim.reset()
                assert _sim_state(sim) == _pool_state(block_pool)

        counters = _counters(llm)
        assert counters["vllm:prefix_cache_queries"] == sim.stats.queries
        assert counters["vllm:prefix_cache_hits"] == sim.stats.hits
        # The workload really exercised what it is meant to (else the comparison proves less).
        assert evictions > 0 and generated_hits > 0 and sim.stats.hits > 0
    finally:
        del llm
        gc.collect()


def test_identical_prompt_recomputes_one_block_at_a_boundary(fresh_llm):
    """The num_tokens - 1 cap: an exact resubmission of a block-aligned prompt hits all but its last block."""
    from course_lib.engine import measure

    prompt = list(range(100, 100 + 3 * BLOCK))
    engine = [s.num_cached_tokens for s in measure(fresh_llm, [prompt, prompt, prompt[:-1] + [7]])]
    sim = PrefixCacheSimulator(1000, BLOCK)
    assert [sim.process(prompt), sim.process(prompt), sim.process(prompt[:-1] + [7])] == engine


def test_lookup_does_not_change_the_pool():
    sim = PrefixCacheSimulator(8, 4)
    sim.process(list(range(10)))
    before = _sim_state(sim)
    assert sim.lookup(list(range(10))) == sim.process(list(range(10)))
    sim2 = PrefixCacheSimulator(8, 4)
    sim2.process(list(range(10)))
    sim2.lookup(list(range(12)))
    assert _sim_state(sim2) == before


def test_too_large_request_raises_a_clear_error():
    sim = PrefixCacheSimulator(3, 4)  # 2 usable blocks: 8 tokens
    with pytest.raises(ValueError, match="usable blocks"):
        sim.process(list(range(9)))
    with pytest.raises(ValueError, match="null block"):
        PrefixCacheSimulator(1, 4)
