"""ChatSession on the real CPU engine: turn-by-turn reuse, salts, and the reuse predictions."""

from __future__ import annotations

import pytest

from course_lib.chat import (
    MAX_CACHE_SALT_LENGTH,
    ChatSession,
    block_size_of,
    cache_salt_problem,
    chatml_template,
    check_cache_salt,
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
    tok = fresh_llm.get_tokenizer()
    text = tok.decode(ids, skip_special_tokens=False)
    # SmolLM2's ChatML template, as vLLM's chat endpoint renders it
    assert text.startswith("<|im_start|>system\n" + SYSTEM) and text.endswith("<|im_start|>assistant\n")
    assert ids == tok.encode(tok.apply_chat_template(s.messages("Hi"), add_generation_prompt=True, tokenize=False),
                             add_special_tokens=False)


def test_no_system_message_gets_the_templates_default_system_prompt(fresh_llm):
    """SmolLM2's template inserts its own system prompt when the messages have none: a shared
    prefix the application did not write, cached like any other (whole blocks only)."""
    tok = fresh_llm.get_tokenizer()
    a, b = ChatSession(fresh_llm, ""), ChatSession(fresh_llm, "")
    assert a.messages("x") == [{"role": "user", "content": "x"}]
    text = tok.decode(a.build_prompt("What is a list?"))
    assert text.startswith("<|im_start|>system\nYou are a helpful AI assistant named SmolLM")
    a.chat("What is a list?", reply="ok")
    b.chat("Why is my loop slow?", reply="ok")
    bs = block_size_of(fresh_llm)
    common = common_prefix_len(a.prompts[0], b.prompts[0])
    assert common > 10  # the default system prompt and the user header
    assert b.stats[0].num_cached_tokens == (common // bs) * bs


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


def _salt_candidates() -> list[object]:
    import base64
    import hashlib
    import random

    rng = random.Random(0)
    alphabet = "abcXYZ019-_.:+= é\u4e2d@/\\\x00"
    fixed: list[object] = [None, "", 0, b"bytes", "a", "x" * MAX_CACHE_SALT_LENGTH, "x" * (MAX_CACHE_SALT_LENGTH + 1),
                           "é" * MAX_CACHE_SALT_LENGTH, "é" * (MAX_CACHE_SALT_LENGTH + 1), "a@b", "a/b", "a\\b", "a\x00b",
                           hashlib.sha256(b"t").hexdigest(), base64.b64encode(bytes(range(0, 256, 3))).decode()]
    safe = alphabet[:-4]  # without the four characters vLLM forbids
    fuzz = ["".join(rng.choice(safe if k % 2 else alphabet) for _ in range(rng.randint(1, 140))) for k in range(300)]
    return fixed + fuzz


def test_cache_salt_rule_is_vllms_own():
    """cache_salt_problem accepts exactly the salts vLLM's server validator accepts."""
    from vllm.entrypoints.generate.base.protocol import validate_cache_salt
    from vllm.exceptions import VLLMValidationError

    accepted = rejected = 0
    for salt in _salt_candidates():
        try:
            validate_cache_salt(salt)
            vllm_ok = True
        except VLLMValidationError:
            vllm_ok = False
        assert (cache_salt_problem(salt) is None) == vllm_ok, repr(salt)
        accepted += vllm_ok
        rejected += not vllm_ok
    assert accepted > 20 and rejected > 20  # both sides of the rule exercised
    with pytest.raises(CourseError, match="validate_cache_salt"):
        check_cache_salt("tenant/a")
    with pytest.raises(CourseError):
        ChatSession(object(), SYSTEM, cache_salt="a@b")  # type: ignore[arg-type]


def test_exercise_04_3_applies_the_servers_salt_rule(llm):
    import base64
    import hashlib
    import hmac

    from course_lib.exercises import nb04

    secret = b"test secret"

    def b64(t):  # standard base64 of a 256-bit HMAC: '/' appears for some tenants
        return base64.b64encode(hmac.new(secret, t.encode(), hashlib.sha256).digest()).decode()

    def hexd(t):
        return hmac.new(secret, t.encode(), hashlib.sha256).hexdigest()

    bad = nb04.check_tenant_salt(llm, b64)
    assert not bad.ok and "reject" in bad.message
    assert nb04.check_tenant_salt(llm, lambda t: hexd(t) * 3).ok is False  # 192 characters: too long
    good = nb04.check_tenant_salt(llm, hexd)
    assert good.ok, good.message


def test_a_template_that_strips_earlier_reasoning_loses_the_reply(fresh_llm):
    """Pitfall 3e of notebook 04: with the rewrite, turn 2 reuses turn 1's prompt only; without it,
    turn 1's prompt and the reply (what the server cached while generating it)."""
    tok = fresh_llm.get_tokenizer()
    bs = block_size_of(fresh_llm)
    reply = "<think>\n" + " ".join(f"step {i}: check the case." for i in range(30)) + "\n</think>\n\nUse a dict."
    convo = [{"role": "system", "content": SYSTEM}, {"role": "user", "content": "How do I count words?"},
             {"role": "assistant", "content": reply}, {"role": "user", "content": "And sort them?"}]
    measured = {}
    for strip in (False, True):
        tpl = chatml_template(strip_reasoning=strip)
        turn1 = render_chat(tok, convo[:2], chat_template=tpl)
        held = render_chat(tok, convo[:3], add_generation_prompt=False, chat_template=tpl)
        turn2 = render_chat(tok, convo, chat_template=tpl)
        assert held[: len(turn1)] == turn1
        text2 = tok.decode(turn2)
        assert ("step 3" in text2) is (not strip) and "Use a dict." in text2
        r = measure_reuse(fresh_llm, held, turn2)
        assert r.num_cached_tokens == r.expected_cached
        measured[strip] = (r.num_cached_tokens, len(turn1), len(held))
    (keep, t1, held_len), (stripped, t1s, _) = measured[False], measured[True]
    assert t1 == t1s
    assert keep == (held_len // bs) * bs  # the whole held conversation's full blocks
    assert stripped == (t1 // bs) * bs < keep - 4 * bs  # only turn 1's prompt
