"""ChatSession on the real CPU engine: turn-by-turn reuse, salts, and the reuse predictions."""

from __future__ import annotations

import pytest

from course_lib.chat import (
    ChatSession,
    block_size_of,
    common_prefix_len,
    expected_cached_tokens,
    measure_reuse,
    render_chat,
)
from course_lib.engine import CourseError

SYSTEM = (
    "You are a careful Python tutor. Answer in short paragraphs, show code when it helps, "
    "name the standard library module you use, and say when you are unsure."
)
TURNS = [
    ("What are decorators?", "A decorator takes a function and returns a new function that wraps it."),
    ("Show me an example", "def shout(f):\n    return lambda *a: f(*a).upper()"),
    ("How about class decorators?", "They take a class and return a class, often the same one, modified."),
]


def test_prompt_is_rendered_by_the_chat_template(fresh_llm):
    s = ChatSession(fresh_llm, SYSTEM)
    ids = s.build_prompt("Hi")
    text = fresh_llm.get_tokenizer().decode(ids, skip_special_tokens=False)
    assert text.startswith("<|system|>") and text.endswith("<|assistant|>\n")
    assert "Hi" in text and SYSTEM in text


def test_each_turn_reuses_at_least_the_previous_prompts_full_blocks(fresh_llm):
    s = ChatSession(fresh_llm, SYSTEM)
    for user, reply in TURNS:
        s.chat(user, reply=reply)
    bs = block_size_of(fresh_llm)
    assert s.stats[0].num_cached_tokens == 0  # empty cache
    for k in range(1, len(TURNS)):
        prev, cur = s.prompts[k - 1], s.prompts[k]
        assert cur[: len(prev)] == prev  # the template only appends
        # computed from token counts alone: the previous prompt's full blocks
        guaranteed = (len(prev) // bs) * bs
        assert s.stats[k].num_cached_tokens >= guaranteed > 0
        assert s.stats[k].num_cached_tokens % bs == 0
        assert s.stats[k].num_cached_tokens > s.stats[k - 1].num_cached_tokens
        assert s.stats[k].prompt_tokens == len(cur)
    # with fixed replies (max_tokens=1: only prompt blocks get cached) the hit is exact
    for k in range(1, len(TURNS)):
        assert s.stats[k].num_cached_tokens == expected_cached_tokens(s.prompts[k - 1], s.prompts[k], bs)
    assert [m["role"] for m in s.history] == ["user", "assistant"] * len(TURNS)


def test_generated_replies_also_grow_the_cache(fresh_llm):
    from vllm import SamplingParams

    s = ChatSession(fresh_llm, SYSTEM, sampling=SamplingParams(max_tokens=6, temperature=0.0))
    for user, _ in TURNS:
        s.chat(user)
    bs = block_size_of(fresh_llm)
    for k in range(1, len(TURNS)):
        assert s.stats[k].num_cached_tokens >= (len(s.prompts[k - 1]) // bs) * bs
    assert s.history[1]["content"] == s.stats[0].text


def test_users_sharing_a_system_prompt_share_its_blocks(fresh_llm):
    a = ChatSession(fresh_llm, SYSTEM)
    b = ChatSession(fresh_llm, SYSTEM)
    a.chat("What is a list comprehension?", reply="x")
    b.chat("Why is my loop slow?", reply="y")
    bs = block_size_of(fresh_llm)
    assert b.stats[0].num_cached_tokens == expected_cached_tokens(a.prompts[0], b.prompts[0], bs) > 0


def test_different_salts_isolate_and_same_salts_share(fresh_llm):
    a = ChatSession(fresh_llm, SYSTEM, cache_salt="tenant-a")
    a.chat(TURNS[0][0], reply=TURNS[0][1])
    other = ChatSession(fresh_llm, SYSTEM, cache_salt="tenant-b")
    other.chat(TURNS[0][0], reply=TURNS[0][1])
    unsalted = ChatSession(fresh_llm, SYSTEM)
    unsalted.chat(TURNS[0][0], reply=TURNS[0][1])
    same = ChatSession(fresh_llm, SYSTEM, cache_salt="tenant-a")
    same.chat(TURNS[0][0], reply=TURNS[0][1])
    bs = block_size_of(fresh_llm)
    full = ((len(a.prompts[0]) - 1) // bs) * bs  # identical prompt: all but the last token can hit
    assert other.stats[0].num_cached_tokens == 0
    assert unsalted.stats[0].num_cached_tokens == 0
    assert same.stats[0].num_cached_tokens == full > 0


def test_measure_reuse_matches_the_prediction_from_tokens(fresh_llm):
    tok = fresh_llm.get_tokenizer()
    first = render_chat(tok, [{"role": "system", "content": SYSTEM}, {"role": "user", "content": "a"}])
    second = render_chat(tok, [{"role": "system", "content": SYSTEM}, {"role": "user", "content": "b"}])
    r = measure_reuse(fresh_llm, first, second)
    assert r.common_prefix_tokens == common_prefix_len(first, second)
    bs = block_size_of(fresh_llm)
    assert r.num_cached_tokens == r.expected_cached == (r.common_prefix_tokens // bs) * bs
    salted = measure_reuse(fresh_llm, first, second, first_salt="x", second_salt="y")
    assert salted.num_cached_tokens == salted.expected_cached == 0


def test_expected_cached_tokens_caps_at_prompt_minus_one():
    ids = list(range(64))
    assert expected_cached_tokens(ids, ids, 32) == 32  # identical 64-token prompt: last block recomputed
    assert expected_cached_tokens(ids, ids + [1], 32) == 64
    assert expected_cached_tokens(ids[:40], ids, 32) == 32
    assert expected_cached_tokens([], ids, 32) == 0


def test_errors_are_readable(llm):
    class NoTemplate:
        chat_template = None

    with pytest.raises(CourseError, match="chat template"):
        render_chat(NoTemplate(), [{"role": "user", "content": "x"}])
    with pytest.raises(TypeError):
        ChatSession(llm, SYSTEM).chat(["not", "a", "string"])  # type: ignore[arg-type]
