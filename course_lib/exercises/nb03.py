"""Checks for the exercises of ``notebooks/03_live_engine.ipynb`` (a shared system prompt, its bound, warming).

The expected answers are computed here from the scenario's token ids (block
arithmetic that ``tests/test_scenario.py`` checks against vLLM) or measured on
the learner's engine, never stored, and never printed on a wrong answer.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Callable, Sequence

from course_lib.engine import RequestStats, prompt_token_ids
from course_lib.exercises import ExerciseResult, exercise, verdict
from course_lib.scenario import Scenario, engine_block_size, predicted_cached_tokens

if TYPE_CHECKING:
    from vllm import LLM


@exercise("03.1", "cached tokens at block size 128", hints=(
    "The prompts share their first scenario.shared_prefix_tokens tokens: how many FULL blocks of the new size fit in them?",
    "Request 1 runs on an empty cache; requests 2 and 3 reuse the full shared blocks request 1 left behind.",
))  # fmt: skip
def check_cached_at_block_size(answer: Sequence[int], scenario: Scenario, block_size: int) -> ExerciseResult:
    """Exercise 1: predict the three requests' ``num_cached_tokens`` at another ``block_size``."""
    expected = predicted_cached_tokens(scenario.prompt_token_ids, block_size)
    got = [int(a) for a in answer]
    shared = scenario.shared_prefix_tokens
    if len(got) != len(expected):
        return verdict("03.1", False, "", f"Give one number per request: {len(expected)} numbers, not {len(got)}.")
    if got[0] != expected[0]:
        why = "Request 1 finds an empty cache: what can it hit?"
    elif got[1:] == [shared] * (len(got) - 1):
        why = "Not the whole shared prefix: its last, partial block has no hash, so it cannot hit."
    elif any(g % block_size for g in got):
        why = f"A hit covers whole blocks of {block_size} tokens only: every cached count is a multiple of {block_size}."
    else:
        why = f"A hit covers the shared prefix's full blocks of {block_size} tokens, no more and no fewer."
    return verdict("03.1", got == expected, f"Yes: {expected}; the blocks decide, not the text.", why)


def _requests_for(target: float, prompt: int, cached: int) -> int:
    """Smallest n with n * prompt / (prompt + (n - 1) * (prompt - cached)) >= target (0 if never)."""
    for n in range(1, 100_000):
        if n * prompt / (prompt + (n - 1) * (prompt - cached)) >= target:
            return n
    return 0


@exercise("03.2", "requests needed for a 10x token bound", hints=(
    "With n requests the engine prefills the first prompt in full and only (prompt - cached) tokens of each later one.",
    "The token bound for n requests is n * prompt / (prompt + (n - 1) * (prompt - cached)); find the smallest n "
    "that makes it at least 10.",
))  # fmt: skip
def check_requests_for_bound(answer: int, scenario: Scenario, block_size: int, target: float = 10.0) -> ExerciseResult:
    """Exercise 2: how many requests sharing the system prompt before the token bound reaches ``target``?

    Every request is the system prompt plus a question of request 2's length, so each
    later request has request 2's prompt and cached tokens (block arithmetic).
    """
    prompt = scenario.prompt_tokens[1]
    cached = predicted_cached_tokens(scenario.prompt_token_ids, block_size)[1]
    expected = _requests_for(target, prompt, cached)
    n = int(answer)
    bound = n * prompt / (prompt + (n - 1) * (prompt - cached)) if n > 0 else 0.0
    if n == expected:
        return verdict("03.2", True, f"Yes: {n} requests give a token bound of {bound:.2f}x; "
                       f"it never passes {prompt / (prompt - cached):.1f}x, however many follow.", "")  # fmt: skip
    if bound >= target:
        why = f"{n} requests reach {target:g}x, but fewer already do: the question asks for the smallest number."
    else:
        why = f"With {n} requests the token bound is {bound:.2f}x, still below {target:g}x."
    return verdict("03.2", False, "", why)


@exercise("03.3", "warm your own template", hints=(
    "Your function should empty the cache, warm the template (warm_cache), then measure the request and return "
    "its RequestStats.",
    "A template shorter than one block can never be cached, and the request must START with the whole template.",
))  # fmt: skip
def check_warm_hit(
    llm: "LLM", template: str, request: str, warm_and_ask: Callable[["LLM", str, str], RequestStats]
) -> ExerciseResult:
    """Exercise 3: ``warm_and_ask`` warms ``template`` on an empty cache, then sends ``request``.

    Its first run must hit every full block the request shares with the template,
    which the check computes from the token ids.
    """
    block = engine_block_size(llm)
    t_ids, r_ids = prompt_token_ids(llm, template), prompt_token_ids(llm, request)
    expected = predicted_cached_tokens([t_ids, r_ids], block)[1]
    if expected == 0:
        return verdict(
            "03.3", False, "",
            f"The request shares fewer than {block} leading tokens with the template ({len(t_ids)} tokens): nothing "
            "could ever hit. Start the request with the whole template and make the template longer than a block.",
        )  # fmt: skip
    stats = warm_and_ask(llm, template, request)
    if not isinstance(stats, RequestStats):
        return verdict("03.3", False, "", "Return the RequestStats of the request (what measure(...)[0] gives).")
    ok = stats.num_cached_tokens == expected and stats.prompt_tokens == len(r_ids)
    return verdict(
        "03.3",
        ok,
        f"Yes: {stats.num_cached_tokens} of {stats.prompt_tokens} tokens came from the warmed cache.",
        f"vLLM cached {stats.num_cached_tokens} tokens of this {len(r_ids)}-token request: not what a warmed "
        "template gives. Did your function empty the cache first, warm the template, and return the request's stats?",
    )
