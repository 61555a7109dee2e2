"""Synthetic chat and RAG traffic at scale, replayed through the prefix-cache simulator.

Taught in ``notebooks/04_chat.ipynb`` (chat traces) and ``notebooks/05_rag.ipynb``
(RAG traces).

Why synthetic token ids: the question "what hit rate will my service get?" depends
on the SHAPE of the traffic (how long the shared prefix is, how long the unique
part, how many turns, how popular each document or user is, how big the cache),
not on the words. A seeded ``numpy.random.Generator`` draws token ids for system
prompts, user turns, replies and documents, and picks users and documents with
Zipf-like popularity (item ``i`` has weight ``1 / i**a``): a few are very popular,
most are rare, as in real traffic. The same seed gives the same trace on every
machine (NumPy's PCG64 stream is platform independent), so hit rates are pinned.

The trace is replayed through ``course_lib.simulator.PrefixCacheSimulator``, which
mirrors vLLM's block pool for requests run one at a time. Each request is
prefill-only (one generated token, as ``max_tokens=1``), so a chat reply enters the
cache when the NEXT turn's prompt (which contains it) is prefilled; a server that
also keeps the reply's KV from decoding hits slightly more. ``replay_on_engine``
sends the same token ids to a real vLLM engine, and the tests require identical
``num_cached_tokens`` for every request.

The hit rate is vLLM's: cached prompt tokens / prompt tokens
(``vllm:prefix_cache_hits`` / ``vllm:prefix_cache_queries``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Iterable, Sequence

import numpy as np

from course_lib.simulator import PrefixCacheSimulator

if TYPE_CHECKING:
    from vllm import LLM

#: Token ids are drawn from [LOW_TOKEN_ID, HIGH_TOKEN_ID): inside the course model's
#: vocabulary (SmolLM2: 49,152 ids) and clear of its special tokens (ids 0-16), so a trace
#: can be sent to it. (The span, 780 ids, is the one the traces were first drawn with: the
#: same seed gives the same lengths and hit rates.)
LOW_TOKEN_ID = 17
HIGH_TOKEN_ID = 797


@dataclass(frozen=True)
class TraceRequest:
    """One request of a trace: its prompt token ids and who or what it is about."""

    prompt_token_ids: tuple[int, ...]
    kind: str  # e.g. "user 17, turn 3" or "docs 4,0,12"
    cache_salt: str | None = None

    def __len__(self) -> int:
        return len(self.prompt_token_ids)


def zipf_weights(n: int, a: float) -> np.ndarray:
    """Probabilities of ``n`` items with weight ``1 / rank**a`` (``a = 0``: uniform)."""
    if n <= 0:
        raise ValueError(f"need at least one item, not n={n}")
    if a < 0:
        raise ValueError(f"the Zipf exponent must be >= 0, not {a}")
    w = 1.0 / np.arange(1, n + 1, dtype=float) ** a
    return w / w.sum()


def _tokens(rng: np.random.Generator, n: int) -> tuple[int, ...]:
    return tuple(int(t) for t in rng.integers(LOW_TOKEN_ID, HIGH_TOKEN_ID, size=n))


def _length(rng: np.random.Generator, mean: int) -> int:
    """A length around ``mean`` (uniform in [mean/2, 3*mean/2]), at least 1."""
    lo, hi = max(1, mean // 2), max(1, (3 * mean) // 2)
    return int(rng.integers(lo, hi + 1))


@dataclass(frozen=True)
class ChatWorkload:
    """A multi-user chat service: its shape, not its words.

    ``num_users`` users, picked with Zipf popularity ``zipf_a``, each talking to
    one of ``num_system_prompts`` system prompts (apps or tenants) of
    ``system_tokens`` tokens. A user's conversation grows by a user turn
    (about ``user_tokens``) and a reply (about ``reply_tokens``) per request and
    starts over after ``max_turns`` turns.
    """

    name: str = "chat"
    num_users: int = 200
    num_requests: int = 600
    num_system_prompts: int = 1
    system_tokens: int = 512
    user_tokens: int = 32
    reply_tokens: int = 64
    max_turns: int = 6
    zipf_a: float = 1.0
    seed: int = 0


@dataclass(frozen=True)
class RAGWorkload:
    """A RAG service over ``num_docs`` documents of ``doc_tokens`` tokens.

    Each query puts a shared preamble, ``chunks_per_query`` distinct documents
    (picked with Zipf popularity ``zipf_a``, in the retriever's ranking order, or
    sorted by document id if ``canonical_order``: document 0 is the most popular, so
    that order also puts popular documents first) and a unique question in its prompt.
    """

    name: str = "rag"
    num_docs: int = 300
    num_requests: int = 500
    doc_tokens: int = 128
    chunks_per_query: int = 3
    preamble_tokens: int = 64
    question_tokens: int = 24
    zipf_a: float = 1.2
    canonical_order: bool = False
    seed: int = 0


def chat_trace(w: ChatWorkload) -> list[TraceRequest]:
    """The requests of workload ``w``, in arrival order (deterministic for a seed)."""
    rng = np.random.default_rng(w.seed)
    systems = [_tokens(rng, w.system_tokens) for _ in range(w.num_system_prompts)]
    popularity = zipf_weights(w.num_users, w.zipf_a)
    app_of_user = rng.integers(0, w.num_system_prompts, size=w.num_users)
    history: dict[int, list[int]] = {}
    turns: dict[int, int] = {}
    trace: list[TraceRequest] = []
    for _ in range(w.num_requests):
        u = int(rng.choice(w.num_users, p=popularity))
        if turns.get(u, 0) >= w.max_turns:
            history[u], turns[u] = [], 0
        user = _tokens(rng, _length(rng, w.user_tokens))
        prompt = systems[int(app_of_user[u])] + tuple(history.get(u, [])) + user
        turns[u] = turns.get(u, 0) + 1
        trace.append(TraceRequest(prompt, f"user {u}, turn {turns[u]}"))
        reply = _tokens(rng, _length(rng, w.reply_tokens))
        history.setdefault(u, []).extend(user + reply)
    return trace


def rag_trace(w: RAGWorkload) -> list[TraceRequest]:
    """The queries of workload ``w``, in arrival order (deterministic for a seed)."""
    if w.chunks_per_query > w.num_docs:
        raise ValueError(f"chunks_per_query={w.chunks_per_query} exceeds num_docs={w.num_docs}")
    rng = np.random.default_rng(w.seed)
    preamble = _tokens(rng, w.preamble_tokens)
    docs = [_tokens(rng, w.doc_tokens) for _ in range(w.num_docs)]
    popularity = zipf_weights(w.num_docs, w.zipf_a)
    trace: list[TraceRequest] = []
    for _ in range(w.num_requests):
        picked = [int(d) for d in rng.choice(w.num_docs, size=w.chunks_per_query, replace=False, p=popularity)]
        if w.canonical_order:
            picked.sort()
        question = _tokens(rng, _length(rng, w.question_tokens))
        prompt = preamble + tuple(t for d in picked for t in docs[d]) + question
        trace.append(TraceRequest(prompt, "docs " + ",".join(map(str, picked))))
    return trace


@dataclass
class SimResult:
    """A trace's replay: per-request ``num_cached_tokens`` and the totals."""

    cache_tokens: int
    block_size: int
    num_cached_tokens: list[int] = field(repr=False)
    prompt_tokens: int = 0
    cached_tokens: int = 0

    @property
    def hit_rate(self) -> float:
        return self.cached_tokens / self.prompt_tokens if self.prompt_tokens else 0.0


def pool_blocks(cache_tokens: int, block_size: int) -> int:
    """``num_gpu_blocks`` for a KV budget of ``cache_tokens`` tokens (+1: vLLM's null block)."""
    return cache_tokens // block_size + 1


def simulate(trace: Sequence[TraceRequest], *, cache_tokens: int, block_size: int) -> SimResult:
    """Replay ``trace`` one request at a time through a fresh simulated pool.

    ``cache_tokens`` is the KV budget in tokens, so that block sizes compare at
    equal memory. Every request must fit in the pool on its own.
    """
    longest = max((len(r) for r in trace), default=0)
    if math.ceil(longest / block_size) > cache_tokens // block_size:
        raise ValueError(
            f"a cache of {cache_tokens} tokens cannot hold the trace's longest prompt ({longest} tokens) "
            f"in blocks of {block_size}: vLLM could not schedule it. Use cache_tokens >= {longest + block_size}."
        )
    sim = PrefixCacheSimulator(pool_blocks(cache_tokens, block_size), block_size)
    cached = [sim.process(r.prompt_token_ids, cache_salt=r.cache_salt) for r in trace]
    return SimResult(cache_tokens, block_size, cached, sim.stats.queries, sim.stats.hits)


def ceiling(trace: Sequence[TraceRequest], block_size: int) -> float:
    """The hit rate with a cache that never evicts: the most any cache size can give."""
    total = sum(math.ceil(len(r) / block_size) for r in trace) * block_size
    return simulate(trace, cache_tokens=total + block_size, block_size=block_size).hit_rate


def sweep(
    trace: Sequence[TraceRequest], cache_tokens: Iterable[int], block_sizes: Iterable[int]
) -> list[dict[str, float | int]]:
    """Hit rate for every (block size, cache size): one row each, for tables and curves."""
    rows: list[dict[str, float | int]] = []
    for bs in block_sizes:
        for ct in cache_tokens:
            r = simulate(trace, cache_tokens=ct, block_size=bs)
            rows.append({"block_size": bs, "cache_tokens": ct, "hit_rate": round(r.hit_rate, 4)})
    return rows


def summary(trace: Sequence[TraceRequest]) -> dict[str, int | float]:
    """Size of a trace: requests, prompt tokens, mean and longest prompt."""
    lengths = [len(r) for r in trace]
    return {
        "requests": len(lengths),
        "prompt_tokens": sum(lengths),
        "mean_prompt": round(sum(lengths) / len(lengths), 1) if lengths else 0.0,
        "longest_prompt": max(lengths, default=0),
    }


def replay_on_engine(llm: "LLM", trace: Sequence[TraceRequest]) -> list[int]:
    """Send the trace's token ids to a real vLLM engine, one prefill-only request at a
    time, and return each request's ``num_cached_tokens`` (compare with ``simulate``).

    Start the engine with ``num_gpu_blocks_override = pool_blocks(cache_tokens, block_size)``
    and the same block size, and reset its prefix cache first.
    """
    from course_lib.engine import run_one

    return [run_one(llm, list(r.prompt_token_ids), cache_salt=r.cache_salt).num_cached_tokens for r in trace]


def run_cli(kind: str, cache_tokens: Sequence[int], block_sizes: Sequence[int], seed: int = 0) -> int:
    """``course workloads``: the hit-rate table of the course's standard chat or RAG workloads."""
    from course_lib.chat import print_table

    if kind == "chat":
        named: list[ChatWorkload | RAGWorkload] = [
            ChatWorkload(name="support bot", seed=seed),
            ChatWorkload(name="many apps", num_system_prompts=20, seed=seed),
            ChatWorkload(name="paste a document", system_tokens=32, user_tokens=600, max_turns=1, seed=seed),
        ]
    elif kind == "rag":
        named = [RAGWorkload(name="wide corpus", seed=seed),
                 RAGWorkload(name="wide corpus, canonical", canonical_order=True, seed=seed)]  # fmt: skip
    else:
        raise ValueError(f"kind must be 'chat' or 'rag', not {kind!r}")
    rows = []
    for w in named:
        trace = chat_trace(w) if isinstance(w, ChatWorkload) else rag_trace(w)
        for r in sweep(trace, cache_tokens, block_sizes):
            rows.append({"workload": w.name, **r})
    print_table(rows)
    return 0
