"""Figures in course_lib.viz: they must draw what the engine and vLLM's hasher say."""

from __future__ import annotations

# --- block hashing (notebook 01) ---

BLOCK = 32


def _vllm_sha256_hashes(token_ids: list[int], block_size: int) -> list[bytes]:
    from course_lib.engine import prepare_environment

    prepare_environment()
    from vllm import SamplingParams
    from vllm.utils.hashing import sha256
    from vllm.v1.core.kv_cache_utils import get_request_block_hasher
    from vllm.v1.request import Request

    req = Request("r", token_ids, SamplingParams(max_tokens=1), None,
                  block_hasher=get_request_block_hasher(block_size, sha256))  # fmt: skip
    return list(req.block_hashes)


def test_blocks_figure_draws_the_blocks_the_engine_hits(fresh_llm):
    from course_lib.engine import measure
    from course_lib.simulator import PrefixCacheSimulator
    from course_lib.viz import blocks_figure

    first = list(range(200, 200 + 3 * BLOCK + 5))
    second = first[: 2 * BLOCK + 7] + [11] * 40  # shares 2 full blocks, then diverges; 111 tokens
    engine_cached = measure(fresh_llm, [first, second])[1].num_cached_tokens
    sim = PrefixCacheSimulator(1000, BLOCK)
    sim.process(first)
    fig = blocks_figure(second, BLOCK, sim, token_text=[f"t{t} " for t in second])
    blocks = fig.layout.meta
    assert [b["size"] for b in blocks] == [BLOCK, BLOCK, BLOCK, len(second) % BLOCK]  # the partial last block is drawn
    assert sum(b["status"] == "hit" for b in blocks) * BLOCK == engine_cached
    assert [b["block_hash"] for b in blocks[:3]] == [h.hex() for h in _vllm_sha256_hashes(second, BLOCK)]
    assert blocks[3]["block_hash"] is None and blocks[3]["status"].startswith("partial")
    assert len(fig.layout.shapes) == 4
    labels = fig.data[0].text
    assert all(b["block_hash"][:8] in label for b, label in zip(blocks[:3], labels))
    assert "t200" in labels[0] and "no hash" in labels[3]


def test_blocks_figure_marks_the_last_token_cap(fresh_llm):
    from course_lib.engine import measure
    from course_lib.simulator import PrefixCacheSimulator
    from course_lib.viz import blocks_figure

    prompt = list(range(300, 300 + 2 * BLOCK))  # block-aligned: an identical resubmission recomputes block 1
    engine_cached = measure(fresh_llm, [prompt, prompt])[1].num_cached_tokens
    sim = PrefixCacheSimulator(1000, BLOCK)
    sim.process(prompt)
    statuses = [b["status"] for b in blocks_figure(prompt, BLOCK, sim).layout.meta]
    assert statuses[0] == "hit" and statuses[1].startswith("recomputed")
    assert statuses.count("hit") * BLOCK == engine_cached


def test_free_queue_figure_shows_each_state():
    from course_lib.simulator import PrefixCacheSimulator
    from course_lib.viz import free_queue_figure

    sim = PrefixCacheSimulator(5, 4)
    steps = [("start", sim.free_queue_state())]
    sim.process(list(range(6)))
    steps.append(("after A", sim.free_queue_state()))
    fig = free_queue_figure(steps)
    assert [list(row) for row in fig.layout.meta] == [[b for b, _ in state] for _, state in steps]
    assert len(fig.layout.shapes) == sum(len(state) for _, state in steps)
    blue = sum(s.fillcolor == "#1f77b4" for s in fig.layout.shapes)
    assert blue == sum(h is not None for _, state in steps for _, h in state) == 1
