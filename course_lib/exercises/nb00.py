"""Checks for the exercises of ``notebooks/00_setup.ipynb``."""

from __future__ import annotations

from typing import TYPE_CHECKING

from course_lib.engine import prompt_token_ids, run_one
from course_lib.exercises import ExerciseResult, verdict

if TYPE_CHECKING:
    from vllm import LLM


def check_third_submission(answer: int, llm: "LLM", prompt: str) -> ExerciseResult:
    """Exercise 1: predict ``num_cached_tokens`` of a third identical submission, then run it."""
    block = llm.llm_engine.vllm_config.cache_config.block_size
    measured = run_one(llm, prompt).num_cached_tokens
    n = len(prompt_token_ids(llm, prompt))
    hint = (
        f"vLLM reported {measured} for this {n}-token prompt. The hit covers only full blocks "
        f"of {block} tokens, and never the last token (vLLM must compute it to sample)."
    )
    if answer == n:
        hint = "Not the whole prompt: the last token is always recomputed. " + hint
    return verdict("00-1", answer == measured, f"yes: {measured} tokens, as vLLM reports.", hint)


def check_prompt_with_hit(llm: "LLM", prompt: str, target: int) -> ExerciseResult:
    """Exercise 2: write a prompt whose second submission caches exactly ``target`` tokens."""
    llm.reset_prefix_cache()
    run_one(llm, prompt)
    got = run_one(llm, prompt).num_cached_tokens
    n = len(prompt_token_ids(llm, prompt))
    block = llm.llm_engine.vllm_config.cache_config.block_size
    return verdict(
        "00-2",
        got == target,
        f"yes: {n} tokens, {got} cached on the second run.",
        f"your prompt has {n} tokens and its second run cached {got}, not {target}. "
        f"You need between {target + 1} and {target + block} tokens.",
    )
