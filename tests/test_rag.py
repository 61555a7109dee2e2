"""RAGCache on the real CPU engine: reuse of the same chunks, canonical order, question placement."""

from __future__ import annotations

import itertools

import pytest

from course_lib.chat import block_size_of, expected_cached_tokens
from course_lib.engine import CourseError
from course_lib.rag import SAMPLE_CHUNKS, RAGCache, canonicalize, chunk_key


def _rag(llm, **kw):
    """A RAGCache that only prefills (one output token): the cache is what is tested."""
    from vllm import SamplingParams

    return RAGCache(llm, sampling=SamplingParams(max_tokens=1, temperature=0.0), **kw)

A, B, C = SAMPLE_CHUNKS["blocks"], SAMPLE_CHUNKS["hashes"], SAMPLE_CHUNKS["salts"]


def _two(llm, rag, first, second):
    assert llm.reset_prefix_cache()
    rag.query_with_context("What is a block?", first)
    rag.query_with_context("How are blocks hashed?", second)
    return rag.prompts[-2], rag.prompts[-1], rag.stats[-1]


def test_same_chunks_second_query_hits_the_context(fresh_llm):
    rag = _rag(fresh_llm)
    p1, p2, st = _two(fresh_llm, rag, [A, B], [A, B])
    bs = block_size_of(fresh_llm)
    assert rag.stats[0].num_cached_tokens == 0
    assert st.num_cached_tokens == expected_cached_tokens(p1, p2, bs)
    context_tokens = len(fresh_llm.get_tokenizer().encode(A + B))
    assert st.num_cached_tokens >= context_tokens  # the whole context (and preamble) hit


def test_question_first_loses_the_context(fresh_llm):
    p1, p2, late = _two(fresh_llm, _rag(fresh_llm), [A, B], [A, B])
    q1, q2, early = _two(fresh_llm, _rag(fresh_llm, question_first=True), [A, B], [A, B])
    bs = block_size_of(fresh_llm)
    assert early.num_cached_tokens == expected_cached_tokens(q1, q2, bs)
    assert early.num_cached_tokens < late.num_cached_tokens
    assert late.num_cached_tokens - early.num_cached_tokens >= 3 * bs


def test_canonical_order_shares_a_prefix_across_permutations(fresh_llm):
    _, _, plain = _two(fresh_llm, _rag(fresh_llm), [A, B], [B, A])
    p1, p2, canon = _two(fresh_llm, _rag(fresh_llm, canonical_order=True), [A, B], [B, A])
    bs = block_size_of(fresh_llm)
    assert canon.num_cached_tokens == expected_cached_tokens(p1, p2, bs)
    assert canon.num_cached_tokens > plain.num_cached_tokens + 2 * bs


def test_canonical_order_is_one_order_for_every_permutation():
    chunks = [A, B, C]
    orders = {tuple(canonicalize(list(p))) for p in itertools.permutations(chunks)}
    assert len(orders) == 1
    assert list(next(iter(orders))) == sorted(chunks, key=chunk_key)
    assert chunk_key(A) == chunk_key(str(A)) and len(chunk_key(A)) == 64


def test_a_chunk_at_another_position_is_not_reused(fresh_llm):
    p1, p2, st = _two(fresh_llm, _rag(fresh_llm), [A, B], [C, A])
    preamble_only = RAGCache(fresh_llm).build_prompt("q", [])
    bs = block_size_of(fresh_llm)
    assert st.num_cached_tokens == expected_cached_tokens(p1, p2, bs)
    assert st.num_cached_tokens <= (len(preamble_only) // bs) * bs  # only the shared preamble


def test_chunks_must_be_a_list(llm):
    with pytest.raises(CourseError, match="list of strings"):
        RAGCache(llm).build_prompt("q", "one string")  # type: ignore[arg-type]
