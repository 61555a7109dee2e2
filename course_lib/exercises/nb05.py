"""Checks for the exercises of ``notebooks/05_rag.ipynb`` (RAG prompts and the prefix cache).

Each check builds the prompts with ``course_lib.rag.RAGCache`` and measures them on the
real engine; the answer it compares with is computed from token ids with
``course_lib.simulator`` (tested request for request against vLLM), never stored.
"""

from __future__ import annotations

import itertools
from typing import TYPE_CHECKING, Callable, Sequence

from course_lib.chat import block_size_of, measure_reuse
from course_lib.engine import run_one
from course_lib.exercises import ExerciseResult, exercise, verdict
from course_lib.rag import SAMPLE_CHUNKS, RAGCache, canonicalize
from course_lib.simulator import PrefixCacheSimulator

if TYPE_CHECKING:
    from vllm import LLM

#: Exercise 05.1: the documents six queries retrieved, most relevant first (keys of ``SAMPLE_CHUNKS``).
RETRIEVED: tuple[tuple[str, ...], ...] = (
    ("hashes", "blocks"),
    ("blocks", "salts"),
    ("eviction", "blocks"),
    ("blocks", "metrics", "hashes"),
    ("salts", "blocks"),
    ("blocks", "eviction"),
)
#: Their questions, one per query.
QUESTIONS: tuple[str, ...] = (
    "How are blocks hashed?",
    "What does a salt change?",
    "What is evicted first?",
    "How is the hit rate counted?",
    "Can two tenants share blocks?",
    "When is a block freed?",
)

_Q1, _Q2 = "What is a block?", "How are blocks hashed?"


def _stream_prompts(
    llm: "LLM", order: Callable[[Sequence[str]], Sequence[str]], memo: dict | None = None
) -> list[list[int]]:
    """The token ids of the six queries of ``RETRIEVED``, each with its chunks put in ``order``
    (``memo`` keeps prompts already rendered, keyed by question and chunk order)."""
    rag, memo = RAGCache(llm), {} if memo is None else memo
    prompts = []
    for q, keys in zip(QUESTIONS, RETRIEVED):
        chunks = tuple(order([SAMPLE_CHUNKS[k] for k in keys]))
        if (q, chunks) not in memo:
            memo[q, chunks] = rag.build_prompt(q, list(chunks))
        prompts.append(memo[q, chunks])
    return prompts


def _simulated_reuse(prompts: Sequence[Sequence[int]], block_size: int) -> int:
    """Cached tokens of the stream, one query after the other, in a cache that never evicts."""
    blocks = sum(len(p) // block_size + 1 for p in prompts) + 1
    sim = PrefixCacheSimulator(blocks, block_size)
    return sum(sim.process(list(p)) for p in prompts)


def best_fixed_order_reuse(llm: "LLM") -> tuple[int, tuple[str, ...]]:
    """The most tokens the stream can reuse when every query sorts its chunks by ONE fixed
    ranking of the documents (tried all of them), with the ranking that gets it."""
    bs = block_size_of(llm)
    keys = sorted({k for q in RETRIEVED for k in q})
    best: tuple[int, tuple[str, ...]] = (-1, ())
    memo: dict = {}
    for ranking in itertools.permutations(keys):
        texts = [SAMPLE_CHUNKS[k] for k in ranking]
        reuse = _simulated_reuse(_stream_prompts(llm, lambda cs, t=texts: sorted(cs, key=t.index), memo), bs)
        best = max(best, (reuse, ranking))
    return best


@exercise(
    "05.1",
    "an order for chunks that overlap",
    hints=(
        "A query reuses tokens only up to the first chunk that differs from an earlier query's prompt: which "
        "chunk should come first so that as many queries as possible start the same way?",
        "Count how often each document appears in RETRIEVED. The order must still depend only on the chunks "
        "(the same set always gives the same order): sort by a key computed from each chunk.",
    ),
)
def check_chunk_order(llm: "LLM", fn: Callable[[Sequence[str]], list[str]]) -> ExerciseResult:
    """Exercise 1: ``fn(chunks)`` gives every permutation of a set one order, and the six queries of
    ``RETRIEVED`` in that order reuse, on the engine, as many tokens as the best fixed ranking of
    the documents (computed here from token ids over every ranking)."""
    name = "05.1 an order for chunks that overlap"
    try:
        for keys in RETRIEVED:
            chunks = [SAMPLE_CHUNKS[k] for k in keys]
            outs = [list(fn(list(p))) for p in itertools.permutations(chunks)]
            if any(sorted(o) != sorted(chunks) for o in outs):
                return verdict(name, False, "", "return the same chunks (each exactly once), only reordered")
            if any(o != outs[0] for o in outs):
                msg = "different input orders of one set gave different outputs: the order must depend on the chunks only"
                return verdict(name, False, "", msg)
        prompts = _stream_prompts(llm, fn)
    except NotImplementedError:
        raise
    except Exception as exc:  # the learner's code: report, do not crash the notebook
        return verdict(name, False, "", f"your function raised {type(exc).__name__}: {exc}")
    bs = block_size_of(llm)
    if not llm.reset_prefix_cache():
        return verdict(name, False, "", "vLLM refused to reset the prefix cache: run the cell again")
    measured = sum(run_one(llm, p).num_cached_tokens for p in prompts)
    by_hash = _simulated_reuse(_stream_prompts(llm, canonicalize), bs)
    best, _ = best_fixed_order_reuse(llm)
    total = sum(len(p) for p in prompts)
    return verdict(
        name, measured >= best,
        f"the six queries reused {measured} of {total} prompt tokens (vLLM measured); sorted by hash they reuse "
        f"{by_hash}: the shared document now comes first",
        f"the six queries reused {measured} of {total} prompt tokens (vLLM measured); sorted by hash they reuse "
        f"{by_hash}, and some fixed ranking of the documents reuses more than yours",
    )  # fmt: skip


@exercise(
    "05.2",
    "predict a longer context",
    hints=(
        "Build both prompts with RAGCache(llm).build_prompt and count their common leading tokens "
        "(common_prefix_len): look at where the two prompts part, right after the second chunk.",
        "Round that count DOWN to a multiple of the block size: a partial block has no hash.",
    ),
)
def check_longer_context_prediction(llm: "LLM", predicted: int) -> ExerciseResult:
    """Exercise 2: ``predicted`` = ``num_cached_tokens`` of a query over chunks ``[blocks, hashes, salts]``
    right after one over ``[blocks, hashes]``, computed from token ids before running it."""
    name = "05.2 predict a longer context"
    rag = RAGCache(llm)
    first = rag.build_prompt(_Q1, [SAMPLE_CHUNKS["blocks"], SAMPLE_CHUNKS["hashes"]])
    second = rag.build_prompt(_Q2, [SAMPLE_CHUNKS["blocks"], SAMPLE_CHUNKS["hashes"], SAMPLE_CHUNKS["salts"]])
    r = measure_reuse(llm, first, second)
    bs = block_size_of(llm)
    return verdict(
        name, predicted == r.num_cached_tokens,
        f"{predicted}: the common token prefix ({r.common_prefix_tokens} tokens: the preamble and both chunks) "
        f"rounded down to blocks of {bs}; vLLM measured the same",
        f"you predicted {predicted}: not what vLLM measured. Count the common leading tokens of both prompts "
        "and keep only whole blocks",
    )  # fmt: skip
