"""What two scrapes of a vLLM server's ``/metrics`` say about its prefix cache over the interval.

Taught in ``notebooks/08_troubleshooting.ipynb`` and run by ``course diagnose metrics
BEFORE AFTER``. Parsing and the counter names are ``course_lib.metrics``' (notebook 06);
this module reads every counter the prefix cache explains itself with, over one
interval, and adds warnings where they explain a low rate:

- no prompt token queried: no traffic, so no rate (not 0%);
- preemptions: the pool was too small for the running requests; a preempted request
  gives its blocks back and is recomputed later (``vllm/v1/core/sched/scheduler.py``),
  and its lookups on resumption are counted apart (``preempted_queries`` in
  ``vllm/v1/metrics/stats.py``, ``PrefixCacheStats``);
- a counter that went down: the server restarted between the scrapes, so the
  increase is taken from zero (what Prometheus' ``rate()`` does on a counter reset).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from course_lib import metrics as m
from course_lib.engine import CourseError

EXTERNAL_QUERIES = "vllm:external_prefix_cache_queries_total"
EXTERNAL_HITS = "vllm:external_prefix_cache_hits_total"
REQUEST_SUCCESS = "vllm:request_success_total"  # finished requests, one series per finished_reason


@dataclass
class MetricsDiagnosis:
    """The prefix cache over one interval (the ``--json`` object is ``to_dict()``)."""

    hit_rate: float | None  # hits / queries over the interval; None when nothing was queried
    queries: int
    hits: int
    external_queries: int | None  # None: the server exports no connector counters
    external_hits: int | None
    preemptions: int
    requests: int
    kv_cache_usage: float | None  # at the AFTER scrape, 0..1
    seconds: float | None  # between the scrapes, when both carry a time
    warnings: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def __str__(self) -> str:
        rate = "n/a (no prompt token queried)" if self.hit_rate is None else f"{self.hit_rate:.1%}"
        lines = [
            f"prefix-cache hit rate over the interval: {rate}",
            f"  queried tokens {self.queries}, cached tokens {self.hits}",
            "  external (connector) hits: "
            + ("not exported" if self.external_queries is None else f"{self.external_hits} of {self.external_queries}"),
            f"  preemptions {self.preemptions}, finished requests {self.requests}",
            "  KV cache usage at the second scrape: "
            + ("not exported" if self.kv_cache_usage is None else f"{self.kv_cache_usage:.1%}"),
        ]
        lines += [f"warning: {w}" for w in self.warnings]
        return "\n".join(lines)


def _increase(before: m.MetricsSnapshot, after: m.MetricsSnapshot, name: str, reset: list[str]) -> float | None:
    """Increase of counter ``name``; from zero (and noted in ``reset``) when it went down; None if absent."""
    now, then = after.get(name), before.get(name, 0.0)
    if now is None:
        return None
    if now < (then or 0.0):
        reset.append(name)
        return now
    return now - (then or 0.0)


def _counter_names(snap: m.MetricsSnapshot) -> tuple[str, str]:
    """vLLM 0.32's counter names, or the deprecated ``gpu_`` ones of older V1 servers."""
    for names in ((m.PREFIX_CACHE_QUERIES, m.PREFIX_CACHE_HITS),
                  (m.DEPRECATED_PREFIX_CACHE_QUERIES, m.DEPRECATED_PREFIX_CACHE_HITS)):  # fmt: skip
        if all(n in snap for n in names):
            return names
    raise CourseError(f"no {m.PREFIX_CACHE_QUERIES} / {m.PREFIX_CACHE_HITS} in the second scrape")


def diagnose_metrics(before: m.MetricsSnapshot, after: m.MetricsSnapshot) -> MetricsDiagnosis:
    """The interval between two scrapes: hit rate, queries, hits, external hits, preemptions, requests, usage."""
    queries_name, hits_name = _counter_names(after)
    reset: list[str] = []
    queries = _increase(before, after, queries_name, reset) or 0.0
    hits = _increase(before, after, hits_name, reset) or 0.0
    ext_q, ext_h = (_increase(before, after, n, reset) for n in (EXTERNAL_QUERIES, EXTERNAL_HITS))
    preempted = _increase(before, after, m.NUM_PREEMPTIONS, reset) or 0.0
    requests = _increase(before, after, REQUEST_SUCCESS, reset) or 0.0
    try:
        usage: float | None = m.kv_cache_usage(after)
    except KeyError:
        usage = None
    seconds = after.timestamp - before.timestamp if after.timestamp and before.timestamp else None
    result = MetricsDiagnosis(
        hits / queries if queries else None, int(queries), int(hits),
        None if ext_q is None else int(ext_q), None if ext_h is None else int(ext_h),
        int(preempted), int(requests), usage, seconds,
    )  # fmt: skip
    result.warnings = _warnings(result, reset)
    return result


def _warnings(d: MetricsDiagnosis, reset: list[str]) -> list[str]:
    out = []
    if reset:
        out.append(
            f"{', '.join(sorted(set(reset)))} went down between the scrapes: the server restarted, so these "
            "numbers count from the restart (its cache started empty); scrape BEFORE again after a restart"
        )
    if d.queries == 0:
        out.append("no prompt token was queried between the scrapes: no traffic, so there is no hit rate (not 0%)")
    if d.preemptions:
        out.append(
            f"{d.preemptions} preemption(s): running requests needed more KV blocks than were free, so some were "
            "preempted and recomputed, and cached blocks were evicted to make room: the pool is too small for "
            "this load (raise the KV cache size, or lower max_num_seqs)"
        )
    return out


def load_scrape(source: str, timeout: float = 10.0) -> m.MetricsSnapshot:
    """A scrape from a file, or from an ``http(s)://`` URL (``/metrics`` is appended if missing).

    Every problem is a ``CourseError`` naming the source: missing file, not UTF-8,
    malformed Prometheus text, unreachable server, no vLLM prefix-cache counters.
    """
    if source.startswith(("http://", "https://")):
        snap = _fetch(source, timeout)
    else:
        path = Path(source)
        if not path.is_file():
            raise CourseError(f"{source}: no such file (a saved /metrics scrape, or an http:// URL)")
        try:
            text = path.read_bytes().decode("utf-8")
        except UnicodeDecodeError as exc:
            raise CourseError(f"{source}: not UTF-8 text (byte {exc.start}); a /metrics scrape is UTF-8") from None
        try:
            snap = m.parse_metrics(text, timestamp=path.stat().st_mtime)
        except ValueError as exc:
            raise CourseError(f"{source}: {exc}") from None
    if not any(name.startswith(("vllm:prefix_cache_", "vllm:gpu_prefix_cache_")) for name in snap.names("vllm:")):
        raise CourseError(
            f"{source}: no vLLM prefix-cache counters ({m.PREFIX_CACHE_QUERIES}) in this scrape: is it a vLLM "
            "server's /metrics, started without --disable-log-stats?"
        )
    return snap


def _fetch(url: str, timeout: float) -> m.MetricsSnapshot:
    import httpx

    base = url.rstrip("/").removesuffix("/metrics")
    try:
        return m.scrape(base, timeout=timeout)
    except httpx.HTTPStatusError as exc:
        raise CourseError(f"{url}: the server answered HTTP {exc.response.status_code}") from None
    except httpx.HTTPError as exc:
        raise CourseError(f"{url}: unreachable ({type(exc).__name__}: {exc or 'no answer'})") from None
    except ValueError as exc:
        raise CourseError(f"{url}: {exc}") from None
