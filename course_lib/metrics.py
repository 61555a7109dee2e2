"""Reading vLLM's ``/metrics``: Prometheus text -> a snapshot you can query -> hit rates.

Taught in ``notebooks/06_metrics.ipynb``. Monitoring snippets often read ``vllm_cache_hit_rate``,
``vllm_prefix_cache_hit_rate`` and ``vllm_num_preemption_events``; vLLM never had these.
vLLM V1 (``vllm/v1/metrics/loggers.py``, ``PrometheusStatLogger``) exports two token
counters instead, ``vllm:prefix_cache_queries`` and ``vllm:prefix_cache_hits``, which the
Prometheus text format shows with a ``_total`` suffix. There is no hit-rate gauge in V1: the hit
rate over a period is the ratio of the two counters' *increases* (what a dashboard
computes with ``rate()``), so you always need two snapshots.

Parsing uses ``prometheus_client.parser`` (the reference parser), never regexes.
"""

from __future__ import annotations

import asyncio
import difflib
import math
import time
from dataclasses import dataclass, field
from typing import AsyncIterator, Iterable, Sequence

from prometheus_client.parser import text_string_to_metric_families

# The names on a vLLM 0.32 server's /metrics (sample names, with the text format's _total).
PREFIX_CACHE_QUERIES = "vllm:prefix_cache_queries_total"
PREFIX_CACHE_HITS = "vllm:prefix_cache_hits_total"
NUM_PREEMPTIONS = "vllm:num_preemptions_total"
KV_CACHE_USAGE = "vllm:kv_cache_usage_perc"
# Earlier V1 releases named the same counters (and the usage gauge) with gpu_; the removed
# V0 engine also had a gauge vllm:gpu_prefix_cache_hit_rate. Still read by older dashboards.
DEPRECATED_PREFIX_CACHE_QUERIES = "vllm:gpu_prefix_cache_queries_total"
DEPRECATED_PREFIX_CACHE_HITS = "vllm:gpu_prefix_cache_hits_total"
DEPRECATED_KV_CACHE_USAGE = "vllm:gpu_cache_usage_perc"

# Names that monitoring snippets quote but vLLM never exported, and what to read instead.
QUOTED_METRIC_NAMES: dict[str, str] = {
    "vllm_cache_hit_rate": f"no such gauge: increase({PREFIX_CACHE_HITS}) / increase({PREFIX_CACHE_QUERIES})",
    "vllm_prefix_cache_hit_rate": f"no such gauge: increase({PREFIX_CACHE_HITS}) / increase({PREFIX_CACHE_QUERIES})",
    "vllm_num_preemption_events": NUM_PREEMPTIONS,
}
REAL_CACHE_METRIC_NAMES = (PREFIX_CACHE_QUERIES, PREFIX_CACHE_HITS, NUM_PREEMPTIONS, KV_CACHE_USAGE)


@dataclass(frozen=True)
class Sample:
    """One line of the exposition: a sample name, its labels and value."""

    name: str
    labels: dict[str, str]
    value: float


@dataclass
class MetricsSnapshot:
    """All samples of one scrape, with the time it was taken.

    Query by the sample name shown on ``/metrics`` (``vllm:prefix_cache_hits_total``)
    and optionally labels: ``snap.value(PREFIX_CACHE_HITS, model_name="tiny-llama-v1")``.
    """

    samples: list[Sample]
    timestamp: float = field(default_factory=time.time)
    types: dict[str, str] = field(default_factory=dict)  # family name -> counter/gauge/...

    def names(self, prefix: str = "") -> list[str]:
        """Sorted distinct sample names (``prefix="vllm:"`` for vLLM's own)."""
        return sorted({s.name for s in self.samples if s.name.startswith(prefix)})

    def __contains__(self, name: object) -> bool:
        return any(s.name == name for s in self.samples)

    def series(self, name: str, **labels: str) -> list[Sample]:
        """The samples called ``name`` whose labels include ``labels``."""
        return [s for s in self.samples if s.name == name and all(s.labels.get(k) == v for k, v in labels.items())]

    def value(self, name: str, **labels: str) -> float:
        """The value of ``name`` summed over the matching series (e.g. over engines).

        Raises ``KeyError`` naming the closest existing names when ``name`` is absent.
        """
        found = self.series(name, **labels)
        if not found:
            if name in self:
                raise KeyError(f"{name!r} has no series with labels {labels}")
            close = difflib.get_close_matches(name, self.names(), n=3, cutoff=0.5)
            raise KeyError(f"no metric {name!r} in this scrape" + (f"; did you mean {close}?" if close else ""))
        return math.fsum(s.value for s in found)

    def get(self, name: str, default: float | None = None, **labels: str) -> float | None:
        """``value`` or ``default`` when the metric is absent."""
        try:
            return self.value(name, **labels)
        except KeyError:
            return default


def _families(text: str) -> tuple[list[Sample], dict[str, str]]:
    samples: list[Sample] = []
    types: dict[str, str] = {}
    for family in text_string_to_metric_families(text):
        types[family.name] = family.type
        samples += [Sample(s.name, dict(s.labels), float(s.value)) for s in family.samples]
    return samples, types


def _first_bad_line(lines: list[str]) -> int:
    """1-based number of the first line at which parsing ``lines[:n]`` fails (bisection).

    The parser streams, so a prefix that contains the bad line fails and one that
    stops before it parses: the smallest failing prefix ends at the bad line.
    """
    lo, hi = 0, len(lines)  # lines[:lo] parses, lines[:hi] fails
    while hi - lo > 1:
        mid = (lo + hi) // 2
        try:
            _families("\n".join(lines[:mid]) + "\n")
            lo = mid
        except Exception:
            hi = mid
    return hi


def parse_metrics(text: str, timestamp: float | None = None) -> MetricsSnapshot:
    """Parse Prometheus text (``/metrics``) into a ``MetricsSnapshot``.

    Malformed text raises ``ValueError`` that names the offending line and its number.
    """
    try:
        samples, types = _families(text)
    except Exception as exc:
        lines = text.splitlines()
        n = _first_bad_line(lines)
        line = lines[n - 1] if 0 < n <= len(lines) else ""
        raise ValueError(f"malformed Prometheus text at line {n}: {line[:120]!r} ({exc})") from exc
    return MetricsSnapshot(samples, time.time() if timestamp is None else timestamp, types)


def scrape(base_url: str, timeout: float = 10.0) -> MetricsSnapshot:
    """GET ``{base_url}/metrics`` and parse it (stamped with the time of the request)."""
    import httpx

    t = time.time()
    response = httpx.get(base_url.rstrip("/") + "/metrics", timeout=timeout)
    response.raise_for_status()
    return parse_metrics(response.text, timestamp=t)


async def monitor_cache_metrics(
    base_url: str, interval: float = 1.0, duration: float = 10.0
) -> AsyncIterator[MetricsSnapshot]:
    """Scrape every ``interval`` seconds for ``duration`` seconds, yielding each snapshot.

    Asynchronous (httpx), so it runs beside the traffic
    it watches; ``async for snap in monitor_cache_metrics(url): ...``. Stop early with ``break``.
    """
    import httpx

    url = base_url.rstrip("/") + "/metrics"
    loop = asyncio.get_running_loop()
    end = loop.time() + duration
    async with httpx.AsyncClient(timeout=10.0) as client:
        while True:
            t = time.time()
            response = await client.get(url)
            response.raise_for_status()
            yield parse_metrics(response.text, timestamp=t)
            if loop.time() + interval > end:
                return
            await asyncio.sleep(interval)


@dataclass(frozen=True)
class HitRate:
    """Prefix-cache hit rate between two snapshots, in tokens.

    ``rate`` is None when no token was queried in between: "no traffic" is not 0%.
    """

    queries: float
    hits: float
    rate: float | None
    counters: tuple[str, str]  # the (queries, hits) names used
    explanation: str

    def __str__(self) -> str:
        if self.rate is None:
            return f"hit rate: n/a ({self.explanation})"
        return f"hit rate {self.rate:.1%} ({self.hits:.0f} of {self.queries:.0f} queried tokens were cached)"


def _counter_names(snap: MetricsSnapshot) -> tuple[str, str]:
    if PREFIX_CACHE_QUERIES in snap and PREFIX_CACHE_HITS in snap:
        return PREFIX_CACHE_QUERIES, PREFIX_CACHE_HITS
    if DEPRECATED_PREFIX_CACHE_QUERIES in snap and DEPRECATED_PREFIX_CACHE_HITS in snap:
        return DEPRECATED_PREFIX_CACHE_QUERIES, DEPRECATED_PREFIX_CACHE_HITS
    raise KeyError(
        f"neither {PREFIX_CACHE_QUERIES}/{PREFIX_CACHE_HITS} nor the deprecated "
        f"{DEPRECATED_PREFIX_CACHE_QUERIES}/{DEPRECATED_PREFIX_CACHE_HITS} are in this scrape: "
        "is it a vLLM server with prefix caching (and without --disable-log-stats)?"
    )


def _increase(before: MetricsSnapshot | None, after: MetricsSnapshot, name: str, labels: dict[str, str]) -> float:
    now = after.value(name, **labels)
    then = before.value(name, **labels) if before is not None else 0.0
    if now < then:
        raise ValueError(
            f"{name} went down ({then:.0f} -> {now:.0f}): the server restarted between the snapshots; "
            "take a new 'before' snapshot"
        )
    return now - then


def prefix_cache_hit_rate(before: MetricsSnapshot | None, after: MetricsSnapshot, **labels: str) -> HitRate:
    """Hit rate from the increases of the hits and queries counters (``before=None``: since start).

    Both counters count tokens (``vllm/v1/core/kv_cache_manager.py`` records each new
    request's ``num_tokens`` as queries and its cached tokens as hits), so the result is
    cached prompt tokens / prompt tokens over the period. Uses the deprecated
    ``vllm:gpu_prefix_cache_*`` names if the server only has those.
    """
    names = _counter_names(after)
    queries = _increase(before, after, names[0], labels)
    hits = _increase(before, after, names[1], labels)
    if queries == 0:
        return HitRate(0.0, hits, None, names, "no prompt token was queried between the two snapshots")
    note = "deprecated gpu_ counters" if names[0] == DEPRECATED_PREFIX_CACHE_QUERIES else "vLLM's token counters"
    return HitRate(queries, hits, hits / queries, names, f"from the increase of {note}")


def preemptions(before: MetricsSnapshot | None, after: MetricsSnapshot, **labels: str) -> int:
    """Requests preempted (KV blocks taken back, to be recomputed) between the snapshots."""
    return int(_increase(before, after, NUM_PREEMPTIONS, labels))


def kv_cache_usage(snapshot: MetricsSnapshot, **labels: str) -> float:
    """Share (0..1, despite ``_perc``) of KV blocks held by running requests at scrape time.

    Cached blocks no running request uses count as free (they are evictable,
    ``vllm/v1/core/block_pool.py`` ``get_usage``): an idle server shows 0 even with a warm cache.
    """
    name = KV_CACHE_USAGE if KV_CACHE_USAGE in snapshot else DEPRECATED_KV_CACHE_USAGE
    found = snapshot.series(name, **labels)
    if not found:
        raise KeyError(f"no {KV_CACHE_USAGE} (nor {DEPRECATED_KV_CACHE_USAGE}) in this scrape")
    return max(s.value for s in found)


def hit_rate_timeline(snapshots: Sequence[MetricsSnapshot], **labels: str) -> list[dict[str, float | None]]:
    """Per interval and cumulative hit rates along a series of snapshots (for a live chart).

    Each row: ``t`` (seconds since the first snapshot), ``interval`` (hit rate since the
    previous snapshot, None if idle) and ``cumulative`` (since the first snapshot).
    """
    rows: list[dict[str, float | None]] = []
    for prev, snap in zip(snapshots, snapshots[1:]):
        rows.append(
            {
                "t": snap.timestamp - snapshots[0].timestamp,
                "interval": prefix_cache_hit_rate(prev, snap, **labels).rate,
                "cumulative": prefix_cache_hit_rate(snapshots[0], snap, **labels).rate,
            }
        )
    return rows


def promql_hit_rate(window: str = "5m", by: Iterable[str] = ("model_name",)) -> str:
    """The PromQL a dashboard uses for the hit rate: a ratio of two ``rate()``s.

    ``rate()`` divides each counter's increase by the same window, so the window
    cancels and the ratio equals ``increase(hits) / increase(queries)``.
    """
    group = f" by ({', '.join(by)})" if by else ""
    return (
        f"sum{group}(rate({PREFIX_CACHE_HITS}[{window}]))\n"
        f"  /\nsum{group}(rate({PREFIX_CACHE_QUERIES}[{window}]))"
    )


def quoted_names_report(snapshot: MetricsSnapshot) -> list[tuple[str, bool, str]]:
    """For each often-quoted metric name vLLM does not have: (name, present on this server?, what to use instead)."""
    return [(name, name in snapshot, instead) for name, instead in QUOTED_METRIC_NAMES.items()]
