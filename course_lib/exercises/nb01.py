"""Checks for the exercises of ``notebooks/01_kv_cache.ipynb``.

Each check computes the expected answer itself, never from a stored constant: 01.1 by
counting what the notebook's from-scratch generation loops feed the model, 01.2 from the
running engine (``course_lib.kv_cache.cache_geometry``: vLLM's own block count). A wrong
answer gets the kind of mistake and the method, not the value.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from course_lib.exercises import ExerciseResult, exercise, verdict
from course_lib.kv_cache import blocks_needed, cache_geometry

if TYPE_CHECKING:
    from vllm import LLM


def positions_run(prompt_tokens: int, new_tokens: int, cached: bool) -> int:
    """Token positions that pass through the layers to generate ``new_tokens`` after a prompt.

    The loops of notebook 01: without a cache, step i runs the whole sequence so far (the prompt
    and the i tokens generated before it); with a cache, the first step runs the prompt (the
    prefill) and every later step one token (a decode step). The last generated token is never
    run: nothing comes after it.
    """
    if cached:
        return prompt_tokens + (new_tokens - 1)
    return sum(prompt_tokens + i for i in range(new_tokens))


@exercise(
    "01.1",
    "count the work with and without a KV cache",
    hints=(
        "Count what each call of forward (or forward_cached) receives. Without a cache every step receives the "
        "whole sequence so far; with one, the first step receives the prompt and each later step one token.",
        "Without a cache the steps receive p, p + 1, ..., p + n - 1 tokens: add them up. With a cache, the new "
        "token of the last step is never fed back in.",
    ),
)
def check_positions_computed(without_cache: int, with_cache: int, prompt_tokens: int, new_tokens: int) -> ExerciseResult:
    """Exercise 01.1: token positions run through the model to generate ``new_tokens`` tokens, both ways."""
    p, n = prompt_tokens, new_tokens
    right = (positions_run(p, n, cached=False), positions_run(p, n, cached=True))
    answer = (int(without_cache), int(with_cache))
    problems = []
    if answer[0] != right[0]:
        slips = {
            n * p: "without a cache the sequence grows: each step also runs every token generated before it.",
            n * (p + n): "the first step runs only the prompt, and the last generated token is never run.",
        }
        problems.append(slips.get(answer[0], "the count without a cache is not what the loop of generate runs."))
    if answer[1] != right[1]:
        slips = {
            p + n: "the last generated token is never fed back: nothing is generated after it.",
            n: "the first step (the prefill) runs every prompt token, not one.",
            n - 1: "the first step (the prefill) runs every prompt token.",
        }
        problems.append(slips.get(answer[1], "the count with a cache is not what the loop of generate_cached runs."))
    return verdict(
        "01.1",
        not problems,
        f"yes: {right[0]:,} positions without a cache and {right[1]:,} with one, {right[0] / right[1]:.0f}x fewer. "
        "Without a cache the work grows with the square of the length; with one it grows linearly.",
        " ".join(problems),
        (
            f"With a cache: {p} prompt tokens in the first step, then one token per step for the remaining steps. "
            "How many steps are there after the first?",
            "Without a cache: step i (counting from 0) runs p + i tokens. Sum that over the n steps, e.g. with "
            "sum(... for i in range(n)).",
        ),
    )


@exercise(
    "01.2",
    "how many requests fit in the block pool",
    hints=(
        "A request holds whole blocks: ceil(tokens / block_size) of them, counting its prompt and its output tokens.",
        "The pool has num_blocks blocks and one of them (block 0, the null block) is never handed out.",
    ),
)
def check_requests_that_fit(answer: int, llm: "LLM", prompt_tokens: int, output_tokens: int) -> ExerciseResult:
    """Exercise 01.2: how many requests of this size the engine's block pool holds side by side."""
    geometry = cache_geometry(llm)
    per_request = blocks_needed(prompt_tokens + output_tokens, geometry.block_size)
    right = (geometry.num_blocks - 1) // per_request
    answer = int(answer)
    slips = {
        geometry.num_blocks // per_request: "block 0 is vLLM's null block: no request can use it.",
        (geometry.num_blocks - 1) * geometry.block_size // (prompt_tokens + output_tokens): (
            "you divided tokens by tokens: a request occupies whole blocks, and its last, partial block still "
            "takes a whole block."
        ),
        (geometry.num_blocks - 1) // blocks_needed(prompt_tokens, geometry.block_size): (
            "the output tokens need KV cache too: each generated token is stored before the next is computed."
        ),
    }
    slips.pop(right, None)
    message = slips.get(answer, "not the number of such block tables the pool can hold.")
    return verdict(
        "01.2",
        answer == right,
        f"yes: each request needs {per_request} blocks, and {geometry.num_blocks - 1} blocks are usable, "
        f"so {right} requests fit.",
        message,
        (
            "A request's block table holds ceil(tokens / block_size) blocks, counting prompt and output tokens; "
            "the pool has num_blocks blocks, one of which is reserved.",
            "Use course_lib.kv_cache.cache_geometry(llm) for num_blocks and block_size.",
        ),
    )
