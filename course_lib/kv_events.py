"""KV-cache events: what a vLLM engine tells the world about the blocks it caches and evicts.

Taught in ``notebooks/07_fleet.ipynb``. With ``--kv-events-config`` a vLLM server publishes
every change to its prefix cache on a ZMQ PUB socket (``vllm/distributed/kv_events.py``,
``ZmqEventPublisher``; fields in ``vllm/config/kv_events.py``). A KV-aware router
(vllm-router's ``kv_aware``, llm-d's scheduler, Dynamo) subscribes and keeps an index of
which replica holds which block.

Wire format (``ZmqEventPublisher._publisher_thread``): multipart messages
``[topic, sequence (8-byte big-endian), payload]``; the payload is a msgpack
``EventBatch`` encoded by msgspec as an array ``[ts, events, data_parallel_rank?]`` (read
here with msgspec's plain msgpack decoder, not vLLM's classes); each event is a map tagged ``"type"``: ``BlockStored`` (``block_hashes``, ``parent_block_hash``,
``token_ids``, ``block_size``, ``lora_id``, ``medium``, ``lora_name``, ``extra_keys``,
``group_idx``, ...), ``BlockRemoved`` (``block_hashes``, ``medium``, ...), or
``AllBlocksCleared``. Fields equal to their default are left out (``omit_defaults``).

Block hashes on the wire (``maybe_convert_block_hash`` in ``vllm/v1/core/kv_cache_utils.py``):
with ``VLLM_KV_EVENTS_USE_INT_BLOCK_HASHES=1`` (the default) the low 64 bits of vLLM's
32-byte SHA-256 block hash, read big-endian (its last 8 bytes); with ``0`` the raw bytes.
``published_hash`` turns a ``course_lib.hashing`` hash into the same value.

Where vLLM binds (``ZmqEventPublisher._is_bind_endpoint``): an endpoint containing ``*``
or ``::``, or an ``ipc://``/``inproc://`` one, is BOUND; any other ``tcp://host:port`` is
CONNECTED to. ``tcp://*:5557`` (the default) therefore listens on every network interface
for as long as the server runs. Two loopback-only ways: an ``ipc://`` endpoint (a Unix
socket file, reachable only on this machine, guarded by file permissions), which the course
uses, or ``tcp://127.0.0.1:PORT`` with the *subscriber* binding that address and vLLM
connecting to it (``KVEventSubscriber(bind=True)``). vllm-router accepts only
``tcp://HOST:PORT`` sources and connects to them, so for it ``LoopbackRelay`` forwards the
``ipc://`` stream, frames unchanged, to a PUB socket bound on ``127.0.0.1`` only.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from typing import Any, Iterable, Sequence

from course_lib.engine import CourseError

INT_HASH_MASK = (1 << 64) - 1


def published_hash(block_hash: bytes, use_int: bool = True) -> int | bytes:
    """The value vLLM puts on the wire for a 32-byte block hash (``maybe_convert_block_hash``)."""
    return int.from_bytes(block_hash, "big") & INT_HASH_MASK if use_int else bytes(block_hash)


def kv_events_config(endpoint: str, *, topic: str = "") -> dict[str, Any]:
    """The ``--kv-events-config`` JSON for a ZMQ publisher on ``endpoint``.

    Keep ``topic`` empty for vllm-router: a non-empty topic silently breaks its kv_aware index.
    """
    return {"enable_kv_cache_events": True, "publisher": "zmq", "endpoint": endpoint, "topic": topic}


@dataclass
class KVEvent:
    """One decoded event: its type, the batch's sequence number and time, and its fields."""

    type: str
    seq: int
    ts: float
    fields: dict[str, Any] = field(repr=False)

    @property
    def block_hashes(self) -> list[int | bytes]:
        return list(self.fields.get("block_hashes") or [])

    @property
    def token_ids(self) -> list[int]:
        return list(self.fields.get("token_ids") or [])

    def get(self, name: str, default: Any = None) -> Any:
        return self.fields.get(name, default)


def decode_message(frames: Sequence[bytes]) -> list[KVEvent]:
    """Decode one multipart message ``[topic, seq, payload]`` into its events."""
    import msgspec  # a vLLM dependency: the same msgpack codec the publisher uses

    if len(frames) != 3:
        raise CourseError(f"a vLLM KV-event message has 3 frames (topic, sequence, payload), not {len(frames)}")
    _topic, seq_bytes, payload = frames
    seq = int.from_bytes(seq_bytes, "big", signed=True)
    batch = msgspec.msgpack.decode(payload)
    ts, events = batch[0], batch[1]
    out = []
    for ev in events:
        if isinstance(ev, dict):
            out.append(KVEvent(str(ev.get("type")), seq, float(ts), dict(ev)))
        else:  # an array-encoded event: [tag, ...]
            out.append(KVEvent(str(ev[0]), seq, float(ts), {"raw": ev}))
    return out


class _ZmqWorker:
    """A ZMQ context pumped by one daemon thread: the shared start/stop of the subscriber and the relay.

    Subclasses build their sockets in ``start`` and hand them to ``_launch``; ``stop`` ends the
    thread (its loop polls ``self._stop``) and then terminates the context.
    """

    def __init__(self) -> None:
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._ctx: Any = None

    def start(self) -> Any:
        raise NotImplementedError

    def _launch(self, target: Any, *sockets: Any, name: str) -> None:
        self._thread = threading.Thread(target=target, args=sockets, daemon=True, name=name)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        if self._ctx is not None:
            self._ctx.term()
            self._ctx = None

    def __enter__(self) -> Any:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


class KVEventSubscriber(_ZmqWorker):
    """A ZMQ SUB socket that collects a vLLM server's KV-cache events in a background thread.

    ``endpoint`` is the server's publisher endpoint (``ipc:///path`` or ``tcp://host:port``);
    with ``bind=True`` the subscriber binds it instead (for ``tcp://127.0.0.1:PORT``, which
    vLLM connects to). Use as a context manager; ``events`` holds everything received.
    """

    def __init__(self, endpoint: str, *, bind: bool = False, topic: str = "") -> None:
        self.endpoint = endpoint
        self.bind = bind
        self.topic = topic
        self.events: list[KVEvent] = []
        self._lock = threading.Lock()
        super().__init__()

    def start(self) -> "KVEventSubscriber":
        import zmq

        self._ctx = zmq.Context()
        sock = self._ctx.socket(zmq.SUB)
        sock.setsockopt(zmq.SUBSCRIBE, self.topic.encode())
        sock.setsockopt(zmq.LINGER, 0)
        (sock.bind if self.bind else sock.connect)(self.endpoint)
        self._launch(self._run, sock, name="kv-events")
        return self

    def _run(self, sock: Any) -> None:
        import zmq

        poller = zmq.Poller()
        poller.register(sock, zmq.POLLIN)
        try:
            while not self._stop.is_set():
                if dict(poller.poll(100)).get(sock):
                    events = decode_message(sock.recv_multipart())
                    with self._lock:
                        self.events.extend(events)
        finally:
            sock.close(linger=0)

    def snapshot(self) -> list[KVEvent]:
        """A copy of the events received so far."""
        with self._lock:
            return list(self.events)

    def clear(self) -> None:
        with self._lock:
            self.events.clear()

    def wait_for(self, n_stored_blocks: int, timeout: float = 30.0) -> list[KVEvent]:
        """Wait until at least ``n_stored_blocks`` block hashes were announced stored; the events."""
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            evs = self.snapshot()
            if sum(len(e.block_hashes) for e in evs if e.type == "BlockStored") >= n_stored_blocks:
                return evs
            time.sleep(0.05)
        raise CourseError(
            f"fewer than {n_stored_blocks} stored blocks announced on {self.endpoint} within {timeout:.0f} s: "
            "is the server started with --kv-events-config (course_lib.kv_events.kv_events_config)?"
        )


def stored_hashes(events: Iterable[KVEvent]) -> list[int | bytes]:
    """Every block hash announced by ``BlockStored`` events, in order."""
    return [h for e in events if e.type == "BlockStored" for h in e.block_hashes]


def index_from_events(events_by_replica: dict[str, Iterable[KVEvent]]) -> dict[int | bytes, set[str]]:
    """What a KV-aware router knows: block hash -> replicas holding it, replayed from events."""
    index: dict[int | bytes, set[str]] = {}
    for replica, events in events_by_replica.items():
        for e in events:
            if e.type == "BlockStored":
                for h in e.block_hashes:
                    index.setdefault(h, set()).add(replica)
            elif e.type == "BlockRemoved":
                for h in e.block_hashes:
                    s = index.get(h)
                    if s is not None:
                        s.discard(replica)
                        if not s:
                            del index[h]
            elif e.type == "AllBlocksCleared":
                for h in list(index):
                    index[h].discard(replica)
                    if not index[h]:
                        del index[h]
    return index


class LoopbackRelay(_ZmqWorker):
    """Forward a publisher's messages, unchanged, from ``source`` to ``tcp://127.0.0.1:PORT``.

    A ZMQ XSUB socket connected to ``source`` (e.g. a server's ``ipc://`` endpoint) and an
    XPUB socket bound on loopback only, pumped by a background thread: subscriptions flow
    upstream, messages downstream. ``endpoint`` is what a subscriber (vllm-router) connects to.
    """

    def __init__(self, source: str, port: int | None = None) -> None:
        from course_lib.server import free_port

        self.source = source
        self.port = port or free_port()
        self.endpoint = f"tcp://127.0.0.1:{self.port}"
        super().__init__()

    def start(self) -> "LoopbackRelay":
        import zmq

        self._ctx = zmq.Context()
        xsub, xpub = self._ctx.socket(zmq.XSUB), self._ctx.socket(zmq.XPUB)
        for sock in (xsub, xpub):
            sock.setsockopt(zmq.LINGER, 0)
        xsub.connect(self.source)
        xpub.bind(self.endpoint)
        self._launch(self._run, xsub, xpub, name="kv-relay")
        return self

    def _run(self, xsub: Any, xpub: Any) -> None:
        import zmq

        poller = zmq.Poller()
        poller.register(xsub, zmq.POLLIN)
        poller.register(xpub, zmq.POLLIN)
        try:
            while not self._stop.is_set():
                ready = dict(poller.poll(100))
                if ready.get(xpub):
                    xsub.send_multipart(xpub.recv_multipart())  # subscriptions go upstream
                if ready.get(xsub):
                    xpub.send_multipart(xsub.recv_multipart())  # events go downstream
        finally:
            xsub.close(linger=0)
            xpub.close(linger=0)
