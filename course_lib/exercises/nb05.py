"""Checks for the exercises of ``notebooks/05_rag.ipynb`` (RAG prompts and the prefix cache).

Each check builds the prompts with ``course_lib.rag.RAGCache`` and measures them
on the real engine; nothing is compared with a stored constant.
"""

from __future__ import annotations

import itertools
from typing import TYPE_CHECKING, Callable, Sequence

from course_lib.chat import block_size_of, expected_cached_tokens, measure_reuse
from course_lib.exercises import ExerciseResult, verdict
from course_lib.rag import SAMPLE_CHUNKS, RAGCache, canonicalize

if TYPE_CHECKING:
    from vllm import LLM

_Q1, _Q2 = "What is a block?", "How are blocks hashed?"


def check_chunk_order(llm: "LLM", fn: Callable[[Sequence[str]], list[str]]) -> ExerciseResult:
    """Exercise 1: ``fn(chunks)`` puts any permutation of a set of chunks in one order,
    and two queries over permuted chunks then share the whole context (measured)."""
    name = "05.1 a canonical chunk order"
    chunks = [SAMPLE_CHUNKS[k] for k in ("blocks", "hashes", "salts")]
    try:
        outs = [list(fn(list(p))) for p in itertools.permutations(chunks)]
    except Exception as exc:
        return verdict(name, False, "", f"your function raised {type(exc).__name__}: {exc}")
    if any(sorted(o) != sorted(chunks) for o in outs):
        return verdict(name, False, "", "return the same chunks (each exactly once), only reordered")
    if any(o != outs[0] for o in outs):
        msg = "different input orders gave different outputs: sort by a key of the chunk itself"
        return verdict(name, False, "", msg)
    rag = RAGCache(llm)
    first = rag.build_prompt(_Q1, fn(chunks))
    second = rag.build_prompt(_Q2, fn(chunks[::-1]))
    r = measure_reuse(llm, first, second)
    reference = RAGCache(llm)
    ref_first = reference.build_prompt(_Q1, canonicalize(chunks))
    ref_second = reference.build_prompt(_Q2, canonicalize(chunks[::-1]))
    ref = expected_cached_tokens(ref_first, ref_second, block_size_of(llm))
    ok = r.num_cached_tokens >= ref - block_size_of(llm)
    return verdict(
        name, ok,
        f"the second query reused {r.num_cached_tokens} of {r.second_tokens} tokens: the whole context (vLLM measured)",
        f"the second query reused only {r.num_cached_tokens} tokens (vLLM measured): less than the whole shared "
        "context",
        (
            "The order must depend only on the chunks' content, never on the order they arrive in.",
            "Sort by a key computed from each chunk's text; a hash of the text is stable across processes.",
        ),
    )  # fmt: skip


def check_shared_chunk_prediction(llm: "LLM", predicted: int) -> ExerciseResult:
    """Exercise 2: ``predicted`` = ``num_cached_tokens`` of a query over chunks ``[blocks, salts]``
    right after one over ``[blocks, hashes]``, computed from token ids before running it."""
    name = "05.2 predict a partly shared context"
    rag = RAGCache(llm)
    first = rag.build_prompt(_Q1, [SAMPLE_CHUNKS["blocks"], SAMPLE_CHUNKS["hashes"]])
    second = rag.build_prompt(_Q2, [SAMPLE_CHUNKS["blocks"], SAMPLE_CHUNKS["salts"]])
    r = measure_reuse(llm, first, second)
    bs = block_size_of(llm)
    return verdict(
        name, predicted == r.num_cached_tokens,
        f"{predicted}: the common token prefix ({r.common_prefix_tokens} tokens: preamble and the first chunk) "
        f"rounded down to blocks of {bs}; vLLM measured the same",
        f"you predicted {predicted}: not what vLLM measured. Count the common leading tokens of both prompts "
        "and keep only whole blocks",
        (
            "Build both prompts with RAGCache(llm).build_prompt and count their common leading tokens "
            "(common_prefix_len).",
            f"Round that count DOWN to a multiple of {bs}: a partial block has no hash.",
        ),
    )  # fmt: skip
