"""course_lib.widgets: the explorers build, react to edits, and agree with the engine."""

from __future__ import annotations

# --- block explorer (notebook 02) ---


def test_block_explorer_reacts_and_matches_the_engine(fresh_llm):
    from vllm import SamplingParams

    from course_lib.engine import run_one
    from course_lib.widgets import block_explorer

    ex = block_explorer()
    tok = ex.tokenizer
    a, b = (p.value for p in ex.prompt_boxes)
    one = SamplingParams(max_tokens=1, temperature=0.0)
    assert run_one(fresh_llm, a, one).num_cached_tokens == 0
    assert ex.results == [0, run_one(fresh_llm, b, one).num_cached_tokens]
    assert ex.results[1] > 0 and "num_cached_tokens = " + str(ex.results[1]) in ex.summary.value

    # Edit prompt 1 to equal prompt 0: the widget recomputes on .value, like the engine on a resubmission.
    fresh_llm.reset_prefix_cache()
    run_one(fresh_llm, a, one)
    ex.prompt_boxes[1].value = a
    assert ex.results[1] == run_one(fresh_llm, a, one).num_cached_tokens
    # A salt on prompt 1 isolates it.
    ex.salt_boxes[1].value = "tenant-b"
    assert ex.results[1] == run_one(fresh_llm, a, one, cache_salt="tenant-b").num_cached_tokens == 0
    assert "cache_salt='tenant-b'" in ex.summary.value

    # Another block size: every row is re-split.
    ex.salt_boxes[1].value = ""
    ex.block_size.value = 64
    n = len(tok.encode(a))
    assert [len(r.token_ids) for r in ex.rows[0]] == [64] * (n // 64) + ([n % 64] if n % 64 else [])
    ex.hash_algo.value = "xxhash"
    assert ex.results[1] == (n - 1) // 64 * 64  # identical prompt: all full blocks below the num_tokens - 1 cap


def test_block_explorer_refuses_what_the_cpu_kernel_refuses():
    """33 is not a multiple of 32: vLLM's own CPU backend says no, and so does the explorer (issue 18)."""
    import pytest

    from course_lib.engine import prepare_environment
    from course_lib.widgets import block_explorer

    prepare_environment()
    from vllm.v1.attention.backends.cpu_attn import CPUAttentionBackend

    sizes = (16, 31, 32, 33, 64, 96, 100, 128)
    vllm_ok = {bs for bs in sizes if CPUAttentionBackend.supports_block_size(bs)}
    assert vllm_ok == {32, 64, 96, 128}  # independently: vLLM's kernel rule, not the course's
    ex = block_explorer(device="cpu")
    assert ex.block_size.step == 32 and ex.block_size.min == 32  # the slider only offers sizes that run
    for bs in sizes:
        ex.block_size.value = bs
        if ex.block_size.value != bs:  # below the slider's minimum: the slider itself clamps it to 32
            assert bs < 32 and ex.block_size.value == 32 and ex.results, bs
            continue
        if bs in vllm_ok:
            assert len(ex.results) == 2 and "refused" not in ex.summary.value, bs
        else:
            assert ex.results == [] and ex.rows == [] and "refused" in ex.summary.value, bs
            assert "multiples of 32" in ex.summary.value and "<table" not in ex.summary.value
    with pytest.raises(ValueError, match="multiples of 32"):
        block_explorer(block_size=33, device="cpu")
    assert block_explorer(block_size=16, device="cuda").results  # a GPU backend decides for itself


def test_block_explorer_figures_follow_the_prompts():
    from course_lib.widgets import block_explorer

    words = " ".join(f"word{i}" for i in range(60))
    ex = block_explorer(words, " ".join(f"word{i}" for i in range(40)), block_size=32, show_figures=True)
    assert any(r.status == "hit" for r in ex.rows[1])
    assert len(ex.figures) == 2
    assert [b["status"] for b in ex.figures[1].layout.meta] == [r.status for r in ex.rows[1]]
    ex.prompt_boxes[1].value = "completely different words here"
    assert all(b["status"] != "hit" for b in ex.figures[1].layout.meta)


def test_block_explorer_explains_itself_where_no_kernel_runs_it():
    """Saved outputs (GitHub, nbviewer, a notebook opened without its kernel) say to run the cell, not an object repr."""
    from course_lib.widgets import block_explorer

    ex = block_explorer("one two three four five", "one two three six", block_size=2, device="cuda")
    bundle = ex._repr_mimebundle_()
    assert bundle["application/vnd.jupyter.widget-view+json"]["model_id"] == ex.model_id  # live: the widget itself
    assert bundle["text/plain"] == "Block explorer: an interactive widget. Run the cell (with its kernel) to use it."
    assert "BlockExplorer(" not in bundle["text/html"] and "Run the cell" in bundle["text/html"]
    assert ex.summary.value in bundle["text/html"]  # a static preview of what the widget showed
