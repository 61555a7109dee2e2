"""Request traces for the fleet simulator: the Mooncake production traces, as block ids.

Taught in ``notebooks/07_fleet.ipynb`` (part 3). The Mooncake paper (Qin et al., *Mooncake:
Trading More Storage for Less Computation*, USENIX FAST 2025) published anonymised request
traces of Kimi, Moonshot AI's chat service (Apache-2.0; shipped gzipped in
``course_lib/data/mooncake/`` with their licence and citation). Each request names its
prompt's blocks (512 tokens each) by id; equal ids mean an equal prefix up to that block,
as with vLLM's chained block hashes. ``course_lib.fleet`` replays them through N replicas.
"""

from __future__ import annotations

import gzip
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Sequence

from course_lib.engine import CourseError

#: Tokens per block id in the Mooncake traces.
MOONCAKE_BLOCK_TOKENS = 512
TRACES_DIR = Path(__file__).parent / "data" / "mooncake"
TRACES = {"conversation": "conversation_trace.jsonl.gz", "synthetic": "synthetic_trace.jsonl.gz"}
#: What the Mooncake paper reports (Qin et al., FAST 2025): Table 2's averages and "cache ratio"
#: per trace, and Figure 10's largest gain of a global (pooled) cache over local ones.
MOONCAKE_PAPER = {
    "table2": {
        "conversation": {"mean_input_tokens": 12035, "mean_output_tokens": 343, "cache_ratio": 0.40},
        "synthetic": {"mean_input_tokens": 15325, "mean_output_tokens": 149, "cache_ratio": 0.66},
    },
    "figure9_local_cache_tokens": 3_000_000,
    "figure10_max_pooled_gain": 1.36,
}


@dataclass(frozen=True)
class FleetRequest:
    """One request as the fleet sees it: block ids of its prompt and its length in tokens.

    ``hash_ids`` name the prompt's blocks in order (the last one may be partial and is
    never cached); equal ids mean equal prefixes. ``session`` is an optional affinity key
    (the ``x-session-id`` header a client sends to vllm-router).
    """

    hash_ids: tuple[int, ...]
    input_length: int
    output_length: int = 1
    timestamp: float = 0.0
    session: str | None = None


def load_trace(trace: str = "conversation", limit: int | None = None) -> list[FleetRequest]:
    """A Mooncake trace (``"conversation"``, ``"synthetic"``) or a JSONL file (``.gz`` ok).

    Each line needs ``input_length`` and ``hash_ids`` (``timestamp``, ``output_length``
    optional). Requests are returned in file order (the traces are sorted by time).
    """
    path = TRACES_DIR / TRACES[trace] if trace in TRACES else Path(trace).expanduser()
    if not path.exists():
        raise CourseError(f"no trace {trace!r}: give 'conversation', 'synthetic' or the path of a JSONL file")
    opener = gzip.open if path.suffix == ".gz" else open
    out: list[FleetRequest] = []
    with opener(path, "rt") as f:  # type: ignore[operator]
        for n, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                r = json.loads(line)
                req = FleetRequest(tuple(int(h) for h in r["hash_ids"]), int(r["input_length"]),
                                   int(r.get("output_length", 1)), float(r.get("timestamp", 0)))  # fmt: skip
            except (ValueError, KeyError, TypeError) as exc:
                raise CourseError(f"{path}:{n}: not a trace line ({exc}); each line needs input_length and hash_ids") from exc
            out.append(req)
            if limit is not None and len(out) >= limit:
                break
    return out


def prefix_blocks_seen(requests: Iterable[FleetRequest], block_size: int = MOONCAKE_BLOCK_TOKENS) -> float:
    """Token-weighted hit rate of an infinite shared cache, computed directly from the ids.

    For each request: the leading ids already seen in any earlier request, as full
    blocks, capped at ``input_length - 1`` tokens. The upper bound of every policy, and
    what ``pooled`` with enough capacity must reproduce (``tests/test_fleet.py``).
    """
    seen: set[int] = set()
    hits = queries = 0
    for req in requests:
        k = 0
        for h in req.hash_ids[: (req.input_length - 1) // block_size]:
            if h not in seen:
                break
            k += 1
        hits += k * block_size
        queries += req.input_length
        seen.update(req.hash_ids[: req.input_length // block_size])
    return hits / queries if queries else 0.0


def trace_summary(requests: Sequence[FleetRequest]) -> dict[str, float]:
    """Requests, mean input and output tokens, and the total prompt tokens of a trace."""
    n = len(requests)
    return {
        "requests": n,
        "mean_input_tokens": sum(r.input_length for r in requests) / n,
        "mean_output_tokens": sum(r.output_length for r in requests) / n,
        "total_input_tokens": sum(r.input_length for r in requests),
        "minutes": (requests[-1].timestamp - requests[0].timestamp) / 60000 if n else 0.0,
    }
