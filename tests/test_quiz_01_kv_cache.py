"""The answers of quizzes/01_kv_cache.yaml, computed by course_lib.kv_cache and checked on the real engine.

The quiz states the course model's numbers; each answer is computed here from those numbers
with course_lib, and the same numbers are read from the running engine, so a model change
that makes the quiz wrong fails this test.
"""

from __future__ import annotations

import pytest

from course_lib import kv_cache as K
from course_lib import quiz as Q

QUIZ = "01_kv_cache"
#: The model facts the quiz prompts state (SmolLM2-135M-Instruct, bfloat16 cache, block 32, 1 GiB).
STATED = {"num_hidden_layers": 30, "num_attention_heads": 9, "num_key_value_heads": 3, "head_dim": 64}
STATED_DTYPE, STATED_BLOCK, STATED_BUDGET = "bfloat16", 32, 1 << 30


def _correct_choice(qid: str) -> str:
    q = Q.load_quiz(QUIZ).question(qid)
    return next(c.text for c in q.choices if c.correct)


def test_the_stated_model_facts_are_the_engines(llm):
    shape = K.engine_kv_shape(llm)
    geometry = K.cache_geometry(llm)
    assert (shape.num_layers, shape.num_attention_heads, shape.num_kv_heads, shape.head_dim) == tuple(STATED.values())
    assert (shape.dtype, geometry.block_size, geometry.budget_bytes) == (STATED_DTYPE, STATED_BLOCK, STATED_BUDGET)


def test_bytes_per_token_answer(llm):
    computed = K.kv_bytes_per_token(STATED, STATED_DTYPE)
    assert Q.judge(Q.load_quiz(QUIZ).question("bytes_per_token"), computed).correct
    assert computed == K.cache_geometry(llm).bytes_per_token  # vLLM's page size agrees


def test_blocks_in_budget_answer(llm):
    computed = K.expected_num_blocks(STATED_BUDGET, K.kv_bytes_per_token(STATED, STATED_DTYPE), STATED_BLOCK)
    assert Q.judge(Q.load_quiz(QUIZ).question("blocks_in_budget"), computed).correct
    assert computed == K.cache_geometry(llm).num_blocks  # what the engine allocated


@pytest.mark.parametrize(
    ("qid", "first_len", "shared", "second_len"),
    [("exact_multiple", 96, 96, 96), ("shared_40", 70, 40, 70)],
)
def test_cached_token_answers_on_the_engine(fresh_llm, qid, first_len, shared, second_len):
    first = K.fixed_prompt(fresh_llm, first_len)
    second = first[:shared] + K.fixed_prompt(fresh_llm, second_len - shared, offset=13)
    assert first[shared] != second[shared] if shared < second_len else True
    K.timed_request(fresh_llm, first, 2)
    cached = K.timed_request(fresh_llm, second, 2).num_cached_tokens
    assert _correct_choice(qid).split(":")[0] == str(cached)


def test_one_token_differs_answer_on_the_engine(fresh_llm):
    """B is A with token 5 replaced: vLLM, the notebook's from-scratch rule (hashes chained from block 0) and the
    quiz's correct choice agree."""
    a = K.fixed_prompt(fresh_llm, 100)
    b = a[:5] + [a[5] + 1] + a[6:]
    K.timed_request(fresh_llm, a, 2)
    cached = K.timed_request(fresh_llm, b, 2).num_cached_tokens
    assert _correct_choice("one_token_differs").split(":")[0] == str(cached) == "0"
