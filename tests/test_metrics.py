"""course_lib.metrics against a live vLLM server's /metrics (the session ``server`` fixture).

The hit rate is checked against what the engine reports per request in the API's
usage (``prompt_tokens_details.cached_tokens`` is the request's ``num_cached_tokens``).
"""

from __future__ import annotations

import asyncio
import time
import uuid

import httpx
import pytest

from course_lib.metrics import (
    KV_CACHE_USAGE,
    NUM_PREEMPTIONS,
    PREFIX_CACHE_HITS,
    PREFIX_CACHE_QUERIES,
    REAL_CACHE_METRIC_NAMES,
    QUOTED_METRIC_NAMES,
    hit_rate_timeline,
    kv_cache_usage,
    monitor_cache_metrics,
    parse_metrics,
    preemptions,
    prefix_cache_hit_rate,
    scrape,
    quoted_names_report,
)
from course_lib.server import chat_requests, rag_requests, send_chat, send_chat_async


def _salted(requests, salt):
    """The same requests under a system prompt unique to this test: a cold cache for them."""
    out = []
    for label, messages in requests:
        first = dict(messages[0], content=f"[{salt}] " + messages[0]["content"])
        out.append((label, [first, *messages[1:]]))
    return out


def _scrape_when_counted(server, before, expected_queries, timeout=10.0):
    """Scrape until the queries counter has grown by ``expected_queries`` (stats land just after the reply)."""
    end = time.monotonic() + timeout
    while True:
        after = scrape(server.base_url)
        grown = after.value(PREFIX_CACHE_QUERIES) - before.value(PREFIX_CACHE_QUERIES)
        if grown >= expected_queries or time.monotonic() > end:
            return after
        time.sleep(0.2)


def test_scrape_has_the_real_names_and_not_the_quoted_ones(server):
    snap = scrape(server.base_url)
    for name in REAL_CACHE_METRIC_NAMES:
        assert name in snap, name
    for name, present, _ in quoted_names_report(snap):
        assert name in QUOTED_METRIC_NAMES and not present
    # Types as declared by vLLM's PrometheusStatLogger (family names drop _total).
    assert snap.types["vllm:prefix_cache_queries"] == "counter"
    assert snap.types[KV_CACHE_USAGE] == "gauge"
    # Queryable by labels: the served model name is a label of every vLLM series.
    assert snap.series(PREFIX_CACHE_QUERIES, model_name=server.model_name, engine="0")
    assert snap.series(PREFIX_CACHE_QUERIES, model_name="no-such-model") == []
    with pytest.raises(KeyError, match="did you mean"):
        snap.value("vllm:prefix_cache_hit")


def test_hit_rate_equals_the_cached_tokens_the_api_reports(server):
    requests = _salted(chat_requests()[:6] + rag_requests(1), uuid.uuid4().hex)
    before = scrape(server.base_url)
    results = send_chat(server, requests)
    prompt = sum(r.prompt_tokens for r in results)
    cached = sum(r.cached_tokens for r in results)
    after = _scrape_when_counted(server, before, prompt)

    rate = prefix_cache_hit_rate(before, after, model_name=server.model_name)
    assert rate.queries == prompt
    assert rate.hits == cached
    assert cached > 0 and results[0].cached_tokens == 0  # cold first request, later ones share
    assert rate.rate == pytest.approx(cached / prompt)
    assert preemptions(before, after) == after.value("vllm:request_num_preemptions_sum") - before.value(
        "vllm:request_num_preemptions_sum"
    )
    # Reversed snapshots look like a counter reset: a server restart, not a negative rate.
    with pytest.raises(ValueError, match="restarted"):
        prefix_cache_hit_rate(after, before)


def test_no_queries_means_no_rate(server):
    snap = scrape(server.base_url)
    idle = prefix_cache_hit_rate(snap, snap)
    assert idle.rate is None and idle.queries == 0
    assert "n/a" in str(idle)


def test_deprecated_gpu_names_give_the_same_hit_rate(server):
    before_text = httpx.get(server.base_url + "/metrics").text
    send_chat(server, _salted(rag_requests(1), uuid.uuid4().hex))
    after_text = httpx.get(server.base_url + "/metrics").text
    old = [parse_metrics(t.replace("vllm:prefix_cache_", "vllm:gpu_prefix_cache_")) for t in (before_text, after_text)]
    new = [parse_metrics(t) for t in (before_text, after_text)]
    assert PREFIX_CACHE_QUERIES not in old[1]
    old_rate, new_rate = prefix_cache_hit_rate(*old), prefix_cache_hit_rate(*new)
    assert old_rate.counters[0] == "vllm:gpu_prefix_cache_queries_total"
    assert (old_rate.queries, old_rate.hits) == (new_rate.queries, new_rate.hits)
    assert new_rate.queries > 0


def test_malformed_text_names_the_line(server):
    lines = httpx.get(server.base_url + "/metrics").text.splitlines()
    bad = next(i for i, line in enumerate(lines) if line.startswith(PREFIX_CACHE_HITS))
    lines[bad] = lines[bad].replace("}", "", 1)  # drop the closing brace of the labels
    with pytest.raises(ValueError, match=f"line {bad + 1}:"):
        parse_metrics("\n".join(lines) + "\n")
    with pytest.raises(ValueError, match="line 3:"):
        parse_metrics("# TYPE a counter\na_total 1\nb not-a-number\nc 2\n")


def test_monitor_yields_timestamped_snapshots_while_traffic_runs(server):
    requests = _salted(rag_requests(1), uuid.uuid4().hex)

    async def run():
        snaps = []

        async def watch():
            async for snap in monitor_cache_metrics(server.base_url, interval=0.3, duration=2.0):
                snaps.append(snap)

        results, _ = await asyncio.gather(send_chat_async(server, requests, max_tokens=4), watch())
        return results, snaps

    results, snaps = asyncio.run(run())
    assert len(snaps) >= 4
    assert all(a.timestamp < b.timestamp for a, b in zip(snaps, snaps[1:]))
    rows = hit_rate_timeline(snaps)
    assert len(rows) == len(snaps) - 1 and rows[-1]["t"] > rows[0]["t"]
    # Everything the traffic queried is between the first scrape and one taken after it.
    after = _scrape_when_counted(server, snaps[0], sum(r.prompt_tokens for r in results))
    total = prefix_cache_hit_rate(snaps[0], after)
    assert total.hits == sum(r.cached_tokens for r in results)


def test_kv_cache_usage_is_a_share_of_blocks_in_use(server):
    """Non-zero while a request runs, back to 0 when idle (cached blocks count as free)."""
    client = server.async_openai_client()

    async def run():
        seen = []

        async def watch():
            async for snap in monitor_cache_metrics(server.base_url, interval=0.1, duration=60.0):
                seen.append(kv_cache_usage(snap))
                if task.done():
                    break

        task = asyncio.ensure_future(
            client.chat.completions.create(
                model=server.model_name,
                messages=chat_requests()[-1][1],
                max_tokens=48,
                extra_body={"ignore_eos": True},
            )
        )
        await watch()
        await task
        await client.close()
        return seen

    seen = asyncio.run(run())
    assert 0.0 < max(seen) < 1.0
    time.sleep(1.0)
    assert kv_cache_usage(scrape(server.base_url)) == 0.0
    assert NUM_PREEMPTIONS in scrape(server.base_url)
