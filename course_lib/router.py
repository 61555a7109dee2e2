"""N live vLLM servers behind a real router (vllm-router), as one context manager.

Taught in ``notebooks/07_fleet.ipynb``. ``RouterFleet`` starts N course servers
(``course_lib.server.VLLMServer``, each on a free port of 127.0.0.1) and the
``vllm-router`` console script (the PyPI package ``vllm-router``, a Rust router) in front
of them; ``run_workload`` sends a concurrent multi-tenant workload through the router and
reads every server's ``/metrics`` before and after, so per-replica and fleet hit rates
come from vLLM's own counters (``course_lib.metrics``).

- ``cache_aware`` and ``kv_aware`` need the servers' ``--enable-scale-out``
  (``vllm/entrypoints/scale_out/factories.py``): the router fetches token ids from
  ``/v1/chat/completions/render``; without it that answers 403 and the router quietly
  falls back to routing without the cache.
- No response header names the backend, so requests are attributed from each server's
  ``vllm:request_success_total`` increase and from the router's own
  ``vllm_router_policy_decisions_total{policy,worker}`` on its Prometheus port. ``kv_aware``
  does not count there: it records ``vllm_router_prefix_routing_decisions_total{policy,
  stage,outcome}`` instead (``src/metrics.rs`` and ``src/policies/kv_aware.rs`` in
  vllm-router 0.1.17), with no worker label; ``outcome="prefix_cost"`` means it used the cache.
- ``kv_aware`` gives no cache credit to a request with a ``cache_salt`` and routes it by load
  alone (``credit_fallback`` in ``src/policies/kv_aware.rs``). The events do carry the salt
  (``BlockStored.extra_keys``, ``vllm/distributed/kv_events.py``, filled by
  ``to_event_extra_keys`` in ``vllm/v1/core/kv_cache_utils.py``); the gap is the router's:
  its index keys blocks by their token ids, without the salt, so it cannot tell salted blocks
  apart. Workloads here are made cold with a tag at the start of every prompt
  (``tenant_workload(tag=...)``) instead.
- Every process is stopped by its process-group id on exit, after an exception or a
  ``KeyboardInterrupt`` too, and on interpreter exit; servers and router also die with
  the Python process that started them (Linux parent-death signal).
"""

from __future__ import annotations

import atexit
import concurrent.futures as cf
import os
import random
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

from course_lib.engine import CourseError
from course_lib.metrics import MetricsSnapshot, parse_metrics, scrape
from course_lib.server import HOST, VLLMServer, _tail, free_port

ROUTER_STOP_TIMEOUT_S = 10.0
REQUEST_SUCCESS = "vllm:request_success_total"
ROUTER_DECISIONS = "vllm_router_policy_decisions_total"
ROUTER_PREFIX_DECISIONS = "vllm_router_prefix_routing_decisions_total"
ROUTER_POLICIES = ("round_robin", "random", "consistent_hash", "cache_aware", "kv_aware", "power_of_two")

# The router runs as `python -c` so that it too gets the parent-death signal.
_ROUTER_BOOTSTRAP = """\
import ctypes, signal, sys
try:
    ctypes.CDLL(None, use_errno=True).prctl(1, int(signal.SIGTERM))  # PR_SET_PDEATHSIG
except (OSError, AttributeError):
    pass
sys.argv[0] = "vllm-router"
from vllm_router.launch_router import main
sys.exit(main())
"""

_LIVE: set["RouterFleet"] = set()


def _stop_group(proc: subprocess.Popen[bytes] | None, grace: float) -> None:
    """SIGTERM the process group led by ``proc``, SIGKILL after ``grace`` seconds."""
    if proc is None:
        return
    for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, 5.0)):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            break
        try:
            proc.wait(timeout=wait)
            break
        except subprocess.TimeoutExpired:
            continue
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    if proc.poll() is None:
        proc.wait(timeout=5.0)


class RouterFleet:
    """``n`` course vLLM servers and a vllm-router in front of them.

    >>> with RouterFleet(2, policy="cache_aware") as fleet:      # doctest: +SKIP
    ...     result = run_workload(fleet, tenant_workload())

    ``set_policy`` restarts only the router (under a second); servers keep running.
    ``kv_events=True`` makes each server publish KV-cache events on a Unix socket
    (``ipc://``: reachable only on this machine, in a directory only this user can enter)
    and relays them to the router, which accepts only ``tcp://`` sources, through
    ``course_lib.kv_events.LoopbackRelay`` on ``127.0.0.1``; ``kv_aware`` needs them. ``server_kwargs`` go to every
    ``VLLMServer``; ``server_env[i]`` holds environment variables for server ``i`` only.
    """

    def __init__(
        self,
        n: int = 2,
        policy: str = "cache_aware",
        *,
        kv_events: bool = False,
        startup_timeout: float = 600.0,
        progress: bool | Callable[[str], None] = True,
        router_args: Sequence[str] = (),
        kv_event_model: str | None = None,
        server_env: Sequence[Mapping[str, str]] = (),
        **server_kwargs: Any,
    ) -> None:
        if not 1 <= n <= 4:
            raise CourseError(f"RouterFleet starts 1 to 4 servers (each needs ~2.5 GB of RAM), not {n}")
        self.n = n
        self.policy = policy
        self.kv_events = kv_events
        self.startup_timeout = startup_timeout
        self._progress = progress
        self.router_args = list(router_args)
        self.kv_event_model = kv_event_model
        self.server_kwargs = server_kwargs
        if len(server_env) > n:
            raise CourseError(f"server_env has {len(server_env)} entries for {n} servers")
        self.server_env = [dict(e) for e in server_env] + [{} for _ in range(n - len(server_env))]
        self.servers: list[VLLMServer] = []
        self.router: subprocess.Popen[bytes] | None = None
        self.router_port: int | None = None
        self.metrics_port: int | None = None
        self.router_log: Path | None = None
        self.router_startup_s: float | None = None
        self.servers_startup_s: float | None = None
        self._tmpdir: str | None = None
        self.relays: list[Any] = []

    # -- addresses ----------------------------------------------------------------------
    @property
    def base_url(self) -> str:
        """The router's address: send OpenAI requests here."""
        if self.router_port is None:
            raise CourseError("the fleet is not started: use `with RouterFleet(...) as fleet:` or fleet.start()")
        return f"http://{HOST}:{self.router_port}"

    @property
    def worker_urls(self) -> list[str]:
        return [s.base_url for s in self.servers]

    @property
    def model_name(self) -> str:
        return self.servers[0].model_name

    def event_endpoint(self, i: int) -> str:
        """Server ``i``'s KV-event publisher endpoint (with ``kv_events=True``)."""
        if not self._tmpdir:
            raise CourseError("no event endpoints: start the fleet with kv_events=True")
        return f"ipc://{self._tmpdir}/kv-events-{i}.sock"

    def pids(self) -> list[int]:
        """Process ids (= process-group ids) of every server and the router."""
        return [p for p in [*(s.pid for s in self.servers), self.router.pid if self.router else None] if p]

    def _say(self, message: str) -> None:
        if callable(self._progress):
            self._progress(message)
        elif self._progress:
            print(message, flush=True)

    # -- life cycle -----------------------------------------------------------------------
    def start(self) -> "RouterFleet":
        """Start the servers (all at once), wait for their ``/health``, then the router."""
        _LIVE.add(self)
        try:
            self._tmpdir = tempfile.mkdtemp(prefix="course-fleet-")
            os.chmod(self._tmpdir, 0o700)  # the event sockets: this user only
            t0 = time.monotonic()
            for i in range(self.n):
                extra = ["--enable-scale-out"]
                if self.kv_events:
                    import json

                    from course_lib.kv_events import kv_events_config

                    extra += ["--kv-events-config", json.dumps(kv_events_config(self.event_endpoint(i)))]
                kwargs = dict(self.server_kwargs)
                extra += list(kwargs.pop("extra_args", ()))
                srv = VLLMServer(startup_timeout=self.startup_timeout, progress=False, extra_args=extra,
                                 env=self.server_env[i], **kwargs)  # fmt: skip
                self.servers.append(srv)
                srv.start(wait=False)
            self._say(f"starting {self.n} vLLM servers (logs: {', '.join(str(s.log_path) for s in self.servers)}) ...")
            pending = list(self.servers)
            next_report = t0 + 15
            while pending:
                for srv in list(pending):
                    if poll_ready(srv, t0):
                        pending.remove(srv)
                if pending and time.monotonic() >= next_report:
                    self._say(f"  ... {self.n - len(pending)}/{self.n} ready after {time.monotonic() - t0:.0f} s")
                    next_report += 15
                time.sleep(0.25)
            self.servers_startup_s = time.monotonic() - t0
            self._say(f"{self.n} servers ready after {self.servers_startup_s:.1f} s "
                      f"(each: {', '.join(f'{s.startup_s:.1f} s' for s in self.servers)})")  # fmt: skip
            self._start_router()
        except BaseException:
            self.stop()
            raise
        return self

    def _router_command(self) -> list[str]:
        cmd = [sys.executable, "-c", _ROUTER_BOOTSTRAP, "--worker-urls", *self.worker_urls,
               "--policy", self.policy, "--host", HOST, "--port", str(self.router_port),
               "--prometheus-host", HOST, "--prometheus-port", str(self.metrics_port)]  # fmt: skip
        if self.policy == "kv_aware":  # vllm-router refuses event sources with other policies
            if not self.kv_events:
                raise CourseError("the kv_aware policy needs KV-cache events: RouterFleet(..., kv_events=True)")
            block = str(self.servers[0].engine_kwargs.get("block_size") or 16)
            for url, relay in zip(self.worker_urls, self.relays):
                cmd += ["--kv-event-source", f"{url}={relay.endpoint}"]
            cmd += ["--kv-event-block-size", block, "--kv-event-model", self.kv_event_model or self.model_name]
        return cmd + self.router_args

    def router_command_line(self) -> str:
        """The router's command line as you would type it: ``vllm-router --worker-urls ... --policy ...``.

        It runs as ``python -c`` with those arguments (so that it too gets the parent-death signal).
        """
        if self.router_port is None:
            raise CourseError("the fleet is not started: use `with RouterFleet(...) as fleet:` or fleet.start()")
        return shlex.join(["vllm-router", *self._router_command()[3:]])

    def _start_router(self) -> None:
        import httpx

        if self.kv_events and not self.relays:  # the router takes tcp:// sources only
            from course_lib.kv_events import LoopbackRelay

            self.relays = [LoopbackRelay(self.event_endpoint(i)).start() for i in range(self.n)]
        if shutil.which("vllm-router", path=str(Path(sys.executable).parent)) is None:
            raise CourseError("vllm-router is not installed in this environment: `pip install vllm-router==0.1.17`")
        self.router_port, self.metrics_port = free_port(), free_port()
        fd, name = tempfile.mkstemp(prefix=f"vllm-router-{self.router_port}-", suffix=".log")
        os.close(fd)
        self.router_log = Path(name)
        t0 = time.monotonic()
        with open(self.router_log, "wb") as log:
            self.router = subprocess.Popen(self._router_command(), stdin=subprocess.DEVNULL, stdout=log,
                                           stderr=subprocess.STDOUT, start_new_session=True)  # fmt: skip
        while True:
            elapsed = time.monotonic() - t0
            if self.router.poll() is not None:
                raise CourseError(f"vllm-router exited with code {self.router.returncode} after {elapsed:.1f} s.\n"
                                  f"Last lines of {self.router_log}:\n{_tail(self.router_log)}")  # fmt: skip
            try:
                if httpx.get(self.base_url + "/health", timeout=2.0).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if elapsed > 60:
                raise CourseError(f"vllm-router did not answer {self.base_url}/health within 60 s.\n"
                                  f"Last lines of {self.router_log}:\n{_tail(self.router_log)}")  # fmt: skip
            time.sleep(0.1)
        self.router_startup_s = time.monotonic() - t0
        self._say(f"vllm-router ({self.policy}) ready at {self.base_url} after {self.router_startup_s:.2f} s")

    def stop_router(self) -> None:
        proc, self.router = self.router, None
        _stop_group(proc, ROUTER_STOP_TIMEOUT_S)

    def set_policy(self, policy: str) -> None:
        """Restart the router with another policy (the servers keep running and their caches)."""
        if policy not in ROUTER_POLICIES:
            raise CourseError(f"unknown vllm-router policy {policy!r}: one of {', '.join(ROUTER_POLICIES)}")
        self.stop_router()
        self.policy = policy
        self._start_router()

    def stop(self) -> None:
        """Stop the router and every server (process groups, SIGTERM then SIGKILL)."""
        self.stop_router()
        for srv in self.servers:
            srv.stop()
        for relay in self.relays:
            relay.stop()
        self.relays = []
        if self._tmpdir:
            shutil.rmtree(self._tmpdir, ignore_errors=True)
        _LIVE.discard(self)

    def __enter__(self) -> "RouterFleet":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- measurements ----------------------------------------------------------------------
    def scrape_servers(self) -> list[MetricsSnapshot]:
        """Every server's ``/metrics``, parsed."""
        return [scrape(s.base_url) for s in self.servers]

    def scrape_router(self) -> MetricsSnapshot:
        """The router's own Prometheus metrics, parsed."""
        import httpx

        return parse_metrics(httpx.get(f"http://{HOST}:{self.metrics_port}/metrics", timeout=10).text)

    def router_decisions(self, snap: MetricsSnapshot | None = None) -> dict[str, float]:
        """The router's ``vllm_router_policy_decisions_total`` per worker URL (every policy but ``kv_aware``)."""
        snap = snap or self.scrape_router()
        out = {url: 0.0 for url in self.worker_urls}
        for s in snap.series(ROUTER_DECISIONS):
            out[s.labels.get("worker", "?")] = out.get(s.labels.get("worker", "?"), 0.0) + s.value
        return out

    def prefix_outcomes(self, snap: MetricsSnapshot | None = None) -> dict[str, float]:
        """``kv_aware``'s decisions by outcome (``vllm_router_prefix_routing_decisions_total``):
        ``prefix_cost`` used the cache index; ``cache_salt``, ``missing_tokens``,
        ``unverified_identity`` and the like fell back to load alone."""
        snap = snap or self.scrape_router()
        out: dict[str, float] = {}
        for s in snap.series(ROUTER_PREFIX_DECISIONS):
            if s.labels.get("policy") == "kv_aware":
                out[s.labels.get("outcome", "?")] = out.get(s.labels.get("outcome", "?"), 0.0) + s.value
        return out


def poll_ready(server: VLLMServer, t0: float) -> bool:
    """One non-blocking readiness check of a server started with ``wait=False`` at ``t0``
    (``time.monotonic()``): True once ``/health`` answers; a clear error with the log's last
    lines if it died or ``startup_timeout`` passed. Lets several servers start at once."""
    import httpx

    code = server.process.poll() if server.process else None
    elapsed = time.monotonic() - t0
    if code is not None:
        raise CourseError(f"a vLLM server exited with code {code} after {elapsed:.0f} s while starting.\n"
                          f"Last lines of {server.log_path}:\n{_tail(server.log_path)}")  # type: ignore[arg-type]  # fmt: skip
    try:
        if httpx.get(server.base_url + "/health", timeout=2.0).status_code == 200:
            server.startup_s = elapsed
            return True
    except httpx.HTTPError:
        pass
    if elapsed > server.startup_timeout:
        raise CourseError(f"the vLLM server at {server.base_url} did not answer /health within {server.startup_timeout:.0f} s.\n"
                          f"Last lines of {server.log_path}:\n{_tail(server.log_path)}")  # type: ignore[arg-type]  # fmt: skip
    return False


@atexit.register
def _stop_all() -> None:
    for fleet in list(_LIVE):
        fleet.stop()


# --- the workload -------------------------------------------------------------------------

_WORDS = ("account billing contract delivery invoice ledger margin order payment quota refund "
          "schedule service support ticket upgrade warranty region policy customer manager report "
          "shipment storage inventory pricing discount partner renewal license audit").split()  # fmt: skip
_QUESTIONS = ("What is the first rule?", "Summarise the policy.", "Who approves refunds?", "When do licences renew?",
              "How are invoices sent?", "What does support cover?")  # fmt: skip


@dataclass(frozen=True)
class TenantRequest:
    """One request of the multi-tenant workload: whose, which question, the chat messages."""

    tenant: str
    question: int
    messages: list[dict[str, str]] = field(hash=False)


def tenant_prompt(tenant: int, words: int = 420, tag: str = "") -> str:
    """Tenant ``tenant``'s private system prompt: ``words`` pseudo-English words, fixed by its number,
    after ``[tag]`` if a tag is given."""
    rng = random.Random(f"tenant-{tenant}")
    body = " ".join(rng.choice(_WORDS) for _ in range(words))
    head = f"[{tag}] " if tag else ""
    return f"{head}You are the assistant of company number {tenant}. Its handbook follows. {body}"


def tenant_workload(
    n_tenants: int = 7, questions: int = 4, *, words: int = 420, seed: int = 0, tag: str = ""
) -> list[TenantRequest]:
    """``n_tenants`` tenants, each with a private ~``words``-word system prompt, asking ``questions`` questions.

    The order is shuffled with ``seed``: strict interleaving of an even tenant count would
    make round robin look perfect (each tenant always lands on the same replica), which
    is why the default count is odd. A ``tag`` starts every system prompt, so the same
    workload with another tag shares no block with it: a cold run on warm servers. (Not
    ``cache_salt``: ``kv_aware`` ignores the cache for salted requests, see the module doc.)
    """
    reqs = []
    for t in range(n_tenants):
        system = tenant_prompt(t, words, tag)
        for q in range(questions):
            messages = [{"role": "system", "content": system},
                        {"role": "user", "content": _QUESTIONS[q % len(_QUESTIONS)]}]  # fmt: skip
            reqs.append(TenantRequest(f"tenant-{t}", q, messages))
    random.Random(seed).shuffle(reqs)
    return reqs


@dataclass
class ReplicaMeasure:
    """What one server's ``/metrics`` counters rose by during a workload."""

    url: str
    requests: int
    prompt_tokens: int
    cached_tokens: int
    router_decisions: int

    @property
    def hit_rate(self) -> float:
        return self.cached_tokens / self.prompt_tokens if self.prompt_tokens else 0.0


@dataclass
class WorkloadResult:
    """A workload's outcome through the router: per replica and for the fleet."""

    policy: str
    replicas: list[ReplicaMeasure]
    usage: list[tuple[str, int, int]]  # (tenant, prompt_tokens, cached_tokens) per request, in send order
    elapsed_s: float
    prefix_outcomes: dict[str, int] = field(default_factory=dict)  # kv_aware's decisions by outcome

    @property
    def hit_rate(self) -> float:
        q = sum(r.prompt_tokens for r in self.replicas)
        return sum(r.cached_tokens for r in self.replicas) / q if q else 0.0


def _delta(before: MetricsSnapshot, after: MetricsSnapshot, name: str) -> float:
    def total(s: MetricsSnapshot) -> float:
        return sum(x.value for x in s.series(name))

    return total(after) - total(before)


def run_workload(
    fleet: RouterFleet,
    requests: Sequence[TenantRequest],
    *,
    concurrency: int = 8,
    max_tokens: int = 1,
    session_header: bool = True,
    pause_s: float = 0.0,
) -> WorkloadResult:
    """Send ``requests`` through the router, ``concurrency`` at a time; measure from ``/metrics``.

    ``session_header`` sends ``x-session-id: TENANT`` (the key vllm-router's
    ``consistent_hash`` uses; other policies ignore it). For a cold run on warm servers,
    build the workload with its own ``tag`` (``tenant_workload``). ``pause_s`` waits after
    each answer before that sender's next request: with ``concurrency=1`` it gives the
    finished request's KV events time to reach ``kv_aware``'s index on a busy machine.
    """
    import httpx

    router_before = fleet.scrape_router()
    before, dec_before = fleet.scrape_servers(), fleet.router_decisions(router_before)
    out_before = fleet.prefix_outcomes(router_before)
    t0 = time.monotonic()

    def send(req: TenantRequest) -> tuple[str, int, int]:
        body: dict[str, Any] = {"model": fleet.model_name, "messages": req.messages, "max_tokens": max_tokens,
                                "temperature": 0.0}  # fmt: skip
        headers = {"x-session-id": req.tenant} if session_header else {}
        r = httpx.post(fleet.base_url + "/v1/chat/completions", json=body, headers=headers, timeout=300)
        if r.status_code != 200:
            raise CourseError(f"the router answered {r.status_code}: {r.text[:300]}")
        usage = r.json()["usage"]
        cached = (usage.get("prompt_tokens_details") or {}).get("cached_tokens") or 0
        if pause_s:
            time.sleep(pause_s)
        return req.tenant, int(usage["prompt_tokens"]), int(cached)

    with cf.ThreadPoolExecutor(max_workers=concurrency) as pool:
        usage = list(pool.map(send, requests))
    elapsed = time.monotonic() - t0
    router_after = fleet.scrape_router()
    after, dec_after = fleet.scrape_servers(), fleet.router_decisions(router_after)
    outcomes = {k: round(v - out_before.get(k, 0.0)) for k, v in fleet.prefix_outcomes(router_after).items()}
    replicas = []
    for url, b, a in zip(fleet.worker_urls, before, after):
        replicas.append(ReplicaMeasure(
            url, round(_delta(b, a, REQUEST_SUCCESS)), round(_delta(b, a, "vllm:prefix_cache_queries_total")),
            round(_delta(b, a, "vllm:prefix_cache_hits_total")), round(dec_after.get(url, 0) - dec_before.get(url, 0)),
        ))  # fmt: skip
    return WorkloadResult(fleet.policy, replicas, usage, elapsed, {k: v for k, v in outcomes.items() if v})


def workload_as_fleet_requests(server: VLLMServer, requests: Sequence[TenantRequest], block_size: int) -> list:
    """The workload as ``course_lib.fleet`` requests: the server's own prompt token ids, hashed
    by ``course_lib.hashing`` into block ids (one id per distinct chained hash), tenant as session."""
    from course_lib.traces import FleetRequest
    from course_lib.hashing import block_hashes

    ids: dict[bytes, int] = {}
    out = []
    for i, req in enumerate(requests):
        tokens = server.tokenize(req.messages)
        hs = [ids.setdefault(h, len(ids)) for h in block_hashes(tokens, block_size)]
        if len(tokens) % block_size:
            hs.append(-1 - i)  # the partial last block: its own id, never cached
        out.append(FleetRequest(tuple(hs), len(tokens), session=req.tenant))
    return out


def kv_capacity_tokens(server: VLLMServer) -> int:
    """Tokens of KV cache the server's prefix cache can hold: ``(num_gpu_blocks - 1) * block_size``.

    Read from the ``vllm:cache_config_info`` labels on ``/metrics`` (one block is vLLM's
    null block, ``vllm/v1/core/block_pool.py``), for simulating the same replica.
    """
    snap = scrape(server.base_url)
    info = snap.series("vllm:cache_config_info")
    if not info:
        raise CourseError(f"{server.base_url}/metrics has no vllm:cache_config_info: is it a vLLM server?")
    labels = info[0].labels
    return (int(labels["num_gpu_blocks"]) - 1) * int(labels["block_size"])
