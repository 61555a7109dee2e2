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
    ex.block_size.value = 16
    n = len(tok.encode(a))
    assert [len(r.token_ids) for r in ex.rows[0]] == [16] * (n // 16) + ([n % 16] if n % 16 else [])
    ex.hash_algo.value = "xxhash"
    assert ex.results[1] == (n - 1) // 16 * 16  # identical prompt: all full blocks below the num_tokens - 1 cap


def test_block_explorer_figures_follow_the_prompts():
    from course_lib.widgets import block_explorer

    ex = block_explorer("one two three four five six seven eight nine ten", "one two three four five six",
                        block_size=4, show_figures=True)  # fmt: skip
    assert len(ex.figures) == 2
    assert [b["status"] for b in ex.figures[1].layout.meta] == [r.status for r in ex.rows[1]]
    ex.prompt_boxes[1].value = "completely different words here"
    assert all(b["status"] != "hit" for b in ex.figures[1].layout.meta)


def test_block_explorer_explains_itself_where_no_kernel_runs_it():
    """Saved outputs (GitHub, nbviewer, a notebook opened without its kernel) say to run the cell, not an object repr."""
    from course_lib.widgets import block_explorer

    ex = block_explorer("one two three four five", "one two three six", block_size=2)
    bundle = ex._repr_mimebundle_()
    assert bundle["application/vnd.jupyter.widget-view+json"]["model_id"] == ex.model_id  # live: the widget itself
    assert bundle["text/plain"] == "Block explorer: an interactive widget. Run the cell (with its kernel) to use it."
    assert "BlockExplorer(" not in bundle["text/html"] and "Run the cell" in bundle["text/html"]
    assert ex.summary.value in bundle["text/html"]  # a static preview of what the widget showed
