"""course_lib.kv_events against live vLLM servers: the published block hashes are course_lib.hashing's.

The two servers of the session's fleet (conftest.kv_fleet, ~2.5 GB each; test_router uses
it too): one with the default VLLM_KV_EVENTS_USE_INT_BLOCK_HASHES=1 (hashes on the wire are
the low 64 bits), one with 0 (the raw 32-byte hashes). Both publish on ipc:// endpoints in a
private directory; the loopback relay is checked to bind 127.0.0.1 only and to pass the same
messages on.
"""

from __future__ import annotations

import socket
import time

import httpx
import pytest

from course_lib.engine import CourseError
from course_lib.hashing import block_hashes
from course_lib.kv_events import (
    KVEventSubscriber,
    LoopbackRelay,
    index_from_events,
    published_hash,
    stored_hashes,
)
from course_lib.server import VLLMServer


@pytest.fixture(scope="module")
def servers(kv_fleet):
    """use_int -> (server, its event endpoint): the session's two-server fleet (conftest.kv_fleet)."""
    return {True: (kv_fleet.servers[0], kv_fleet.event_endpoint(0)),
            False: (kv_fleet.servers[1], kv_fleet.event_endpoint(1))}  # fmt: skip


def _complete(srv: VLLMServer, tokens: list[int]) -> int:
    r = httpx.post(srv.base_url + "/v1/completions", timeout=120,
                   json={"model": srv.model_name, "prompt": tokens, "max_tokens": 1, "temperature": 0.0})  # fmt: skip
    r.raise_for_status()
    return int(r.json()["usage"]["prompt_tokens"])


PROMPT = [(7919 * i + 13) % 40000 + 100 for i in range(3 * 32 + 7)]  # 3 full blocks + 7 tokens


@pytest.mark.parametrize("use_int", [True, False], ids=["int64", "raw-bytes"])
def test_published_hashes_are_course_hashes(servers, use_int):
    srv, endpoint = servers[use_int]
    bs = srv.engine_kwargs["block_size"]
    with KVEventSubscriber(endpoint) as sub:
        time.sleep(0.5)  # a SUB socket misses what is published before it is connected
        assert _complete(srv, PROMPT) == len(PROMPT)
        events = sub.wait_for(len(PROMPT) // bs)
    expected_bytes = block_hashes(PROMPT, bs)
    expected = [published_hash(h, use_int) for h in expected_bytes]
    assert stored_hashes(events) == expected
    stored = [e for e in events if e.type == "BlockStored"]
    assert stored[0].get("parent_block_hash") is None
    assert stored[0].get("block_size") == bs
    assert [t for e in stored for t in e.token_ids] == PROMPT[: len(expected) * bs]
    if use_int:
        assert all(h == int.from_bytes(b[-8:], "big") for h, b in zip(expected, expected_bytes))
    else:
        assert all(isinstance(h, bytes) and len(h) == 32 for h in stored_hashes(events))
    # a longer prompt with the same start: one more block, chained to the last one
    with KVEventSubscriber(endpoint) as sub:
        time.sleep(0.5)
        longer = PROMPT + [101] * bs
        _complete(srv, longer)
        new = sub.wait_for(1)
    new_stored = [e for e in new if e.type == "BlockStored"]
    assert stored_hashes(new) == [published_hash(h, use_int) for h in block_hashes(longer, bs)[len(expected):]]
    assert new_stored[0].get("parent_block_hash") == expected[-1]


def test_relay_binds_loopback_only_and_forwards_unchanged(servers):
    srv, endpoint = servers[True]
    relay = LoopbackRelay(endpoint).start()
    try:
        with socket.socket() as s:  # the relay's port is taken on 127.0.0.1 ...
            assert s.connect_ex(("127.0.0.1", relay.port)) == 0
        listening = [line.split() for line in open("/proc/net/tcp").read().splitlines()[1:]]
        local = {l[1] for l in listening if l[3] == "0A" and int(l[1].split(":")[1], 16) == relay.port}
        assert local == {f"0100007F:{relay.port:04X}"}  # ... and bound to 127.0.0.1 only, not 0.0.0.0
        with KVEventSubscriber(endpoint) as direct, KVEventSubscriber(relay.endpoint) as relayed:
            time.sleep(1.0)
            tokens = [t + 1 for t in PROMPT]
            _complete(srv, tokens)
            a = direct.wait_for(3)
            b = relayed.wait_for(3)
        assert [(e.seq, e.type, e.block_hashes) for e in a] == [(e.seq, e.type, e.block_hashes) for e in b]
        assert set(index_from_events({"s": b})) >= set(stored_hashes(b))
    finally:
        relay.stop()


def test_waiting_for_events_that_never_come_is_a_clear_error():
    with KVEventSubscriber("ipc:///nonexistent-dir-for-test/none.sock") as sub:
        with pytest.raises(CourseError, match="kv-events-config"):
            sub.wait_for(1, timeout=0.5)
