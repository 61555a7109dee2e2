"""course_lib.engine.warm_cache on the real engine: the first real request after warming hits."""

from __future__ import annotations

from course_lib import knobs
from course_lib import scenario as sc
from course_lib.engine import measure, warm_cache


def _real_request(template: str) -> str:
    return sc.plain_prompt(template, "Review this function: def double(x): return x * 2")


def test_first_request_after_warming_hits(fresh_llm):
    tok = fresh_llm.get_tokenizer()
    templates = knobs.warming_templates(tok, target_tokens=200)
    bs = sc.engine_block_size(fresh_llm)
    # Control: on an empty cache the real request hits nothing.
    cold = measure(fresh_llm, [_real_request(templates["code_review"])])[0]
    assert cold.num_cached_tokens == 0
    fresh_llm.reset_prefix_cache()

    warmed = warm_cache(fresh_llm, templates)
    assert [w.prompt_tokens for w in warmed] == [len(tok.encode(t)) for t in templates.values()]
    assert [w.num_cached_tokens for w in warmed] == [0, 0, 0]

    for name, template in templates.items():
        real = _real_request(template)
        ids = tok.encode(real)
        expected = sc.predicted_cached_tokens([tok.encode(template), ids], bs)[1]
        got = measure(fresh_llm, [real])[0]
        assert got.num_cached_tokens == expected > 0, name
        assert got.num_cached_tokens % bs == 0


def test_warm_cache_accepts_a_list(fresh_llm):
    tok = fresh_llm.get_tokenizer()
    templates = list(knobs.warming_templates(tok, target_tokens=150).values())[:2]
    out = warm_cache(fresh_llm, templates)
    assert len(out) == 2
    again = measure(fresh_llm, [templates[0]])[0]
    bs = sc.engine_block_size(fresh_llm)
    assert again.num_cached_tokens == (again.prompt_tokens - 1) // bs * bs
