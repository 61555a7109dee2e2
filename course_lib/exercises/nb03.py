"""Checks for the exercises of ``notebooks/03_live_engine.ipynb`` (the seed scenario, knobs, warming).

The expected answers are computed here from the scenario's token ids (block
arithmetic that ``tests/test_scenario.py`` checks against vLLM) or measured on
the learner's engine, never stored.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Sequence

from course_lib.engine import RequestStats, prompt_token_ids
from course_lib.exercises import ExerciseResult, verdict
from course_lib.scenario import Scenario, engine_block_size, predicted_cached_tokens

if TYPE_CHECKING:
    from vllm import LLM


def check_cached_at_block_size(answer: Sequence[int], scenario: Scenario, block_size: int) -> ExerciseResult:
    """Exercise 1: predict the three requests' ``num_cached_tokens`` at another ``block_size``."""
    expected = predicted_cached_tokens(scenario.prompt_token_ids, block_size)
    got = [int(a) for a in answer]
    shared = scenario.shared_prefix_tokens
    hint = f"a hit covers whole blocks of {block_size} only (and request 1 finds an empty cache). Your answer: {got}."
    if got and got[1:] == [shared] * (len(got) - 1):
        hint = "Not the whole shared prefix: its last, partial block has no hash. " + hint
    hints = (
        f"The prompts share their first {shared} tokens: how many FULL blocks of {block_size} fit in them?",
        "Request 1 runs on an empty cache; requests 2 and 3 reuse the full shared blocks request 1 left behind.",
    )
    return verdict("03.1", got == expected, f"yes: {expected}; the blocks decide, not the text.", hint, hints)


def check_token_bound(answer: float, scenario: Scenario, block_size: int) -> ExerciseResult:
    """Exercise 2: the ideal TTFT speedup (total prompt tokens / total prefilled) at ``block_size``."""
    cached = predicted_cached_tokens(scenario.prompt_token_ids, block_size)
    total = sum(scenario.prompt_tokens)
    bound = total / (total - sum(cached))
    ok = abs(float(answer) - bound) <= 0.01 * bound
    return verdict(
        "03.2",
        ok,
        f"yes: {total} / {total - sum(cached)} = {bound:.3f}x.",
        f"{float(answer):.3f} is not it: the bound is a ratio of token counts, not of times.",
        (
            "Divide the total prompt tokens by the tokens that still need prefill with caching on.",
            "Tokens that still need prefill = prompt tokens minus cached tokens, summed over the three requests "
            "(use your answer to the previous exercise at this block size).",
        ),
    )


def check_warm_hit(llm: "LLM", template: str, request: str, stats: RequestStats) -> ExerciseResult:
    """Exercise 3: warm ``template``, then send ``request``: its first run must hit every shared full block."""
    block = engine_block_size(llm)
    t_ids, r_ids = prompt_token_ids(llm, template), prompt_token_ids(llm, request)
    expected = predicted_cached_tokens([t_ids, r_ids], block)[1]
    if expected == 0:
        return verdict(
            "03.3", False, "",
            f"the request shares fewer than {block} leading tokens with the template ({len(t_ids)} tokens): nothing "
            "could ever hit. Start the request with the whole template and make the template longer than a block.",
        )  # fmt: skip
    ok = stats.num_cached_tokens == expected and stats.prompt_tokens == len(r_ids)
    return verdict(
        "03.3",
        ok,
        f"yes: {stats.num_cached_tokens} of {stats.prompt_tokens} tokens came from the warmed cache.",
        f"vLLM cached {stats.num_cached_tokens} tokens of this {len(r_ids)}-token request: not what a warmed "
        "template gives.",
        (
            "Did you call warm_cache before measure, on the same engine, and pass the stats of the request itself?",
            "A warmed template leaves its full blocks cached; the request hits every full block of the leading "
            "tokens it shares with the template.",
        ),
    )
