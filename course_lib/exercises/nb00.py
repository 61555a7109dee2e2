"""Checks for the exercises of ``notebooks/00_setup.ipynb``."""

from __future__ import annotations

from typing import TYPE_CHECKING

from course_lib.engine import prompt_token_ids, run_one
from course_lib.exercises import ExerciseResult, exercise, verdict

if TYPE_CHECKING:
    from vllm import LLM


@exercise(
    "00.1",
    "predict the cached tokens of a third submission",
    hints=(
        "Only full blocks of the prompt can come from the cache, and never the last prompt token: vLLM must "
        "compute it to sample the first output token.",
        "Take the prompt's length minus one, keep the whole blocks it contains, and count their tokens.",
    ),
)
def check_third_submission(answer: int, llm: "LLM", prompt: str) -> ExerciseResult:
    """Exercise 1: predict ``num_cached_tokens`` of a third identical submission, then run it."""
    block = llm.llm_engine.vllm_config.cache_config.block_size
    measured = run_one(llm, prompt).num_cached_tokens
    n = len(prompt_token_ids(llm, prompt))
    hint = "count in whole blocks: only FULL blocks of the prompt can be served from the cache."
    if answer == n:
        hint = "Not the whole prompt: the last token is always recomputed; " + hint
    hints = (
        f"The hit covers only full blocks of {block} tokens, and never the last token (vLLM must compute it "
        "to sample), so a prompt whose length is a multiple of the block size loses a whole block.",
        f"Your prompt has {n} tokens: how many full blocks fit in {n} - 1 tokens? Multiply by {block}.",
    )
    return verdict("00.1", answer == measured, f"yes: {measured} tokens, as vLLM reports.", hint, hints)


@exercise(
    "00.2",
    "write a prompt whose second run caches exactly 64 tokens",
    hints=(
        "The cached tokens of a repeated prompt are the full blocks of its length minus one: which lengths give "
        "exactly two blocks of 32?",
        "Build a text, count its tokens with len(tokenizer.encode(text)), and adjust it until the count is in range.",
    ),
)
def check_prompt_with_hit(llm: "LLM", prompt: str, target: int) -> ExerciseResult:
    """Exercise 2: write a prompt whose second submission caches exactly ``target`` tokens."""
    llm.reset_prefix_cache()
    run_one(llm, prompt)
    got = run_one(llm, prompt).num_cached_tokens
    n = len(prompt_token_ids(llm, prompt))
    block = llm.llm_engine.vllm_config.cache_config.block_size
    return verdict(
        "00.2",
        got == target,
        f"yes: {n} tokens, {got} cached on the second run.",
        f"your prompt has {n} tokens and its second run did not cache {target}: the prompt length decides "
        "how many full blocks are reused.",
        (
            f"Only full blocks of {block} tokens are reused, and the last token never is: "
            f"which prompt lengths give exactly {target} cached tokens?",
            "Lengthen or shorten the prompt and count its tokens with prompt_token_ids(llm, prompt).",
        ),
    )
