"""Shared fixtures: one real vLLM engine on CPU for the whole test session.

Tests that need other engine settings (block size, a tiny pool, caching off)
start their own with ``make_llm(...)`` and drop it when done; engines start in
about 1-3 s once the first one has loaded vLLM.
"""

from __future__ import annotations

import gc
import os

import pytest

# Test files that must run on the same pytest-xdist worker, because they share a session
# fixture that starts live processes (started once per worker that uses it).
_SHARED_GROUPS = {
    "test_kv_events.py": "kv_fleet",  # two servers + vllm-router
    "test_router.py": "kv_fleet",
    "test_metrics.py": "server",  # one OpenAI server
    "test_server.py": "server",
    "test_diagnose.py": "server",
}


def _pin_xdist_worker_to_its_cores() -> None:
    """In pytest-xdist worker ``gwI`` of ``N``: run on every N-th allowed CPU only, from I.

    Children inherit the affinity, so each worker's engines, servers and notebook kernels
    compute on cores of their own; vLLM sizes its CPU threads from the affinity
    (``vllm/utils/cpu_resource_utils.py``, ``get_allowed_cpu_list``). Without this, two
    engines' OpenMP threads contend for the same two cores and the whole run is slower than
    one worker.
    """
    worker, count = os.environ.get("PYTEST_XDIST_WORKER"), int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
    if not worker or count < 2 or not hasattr(os, "sched_setaffinity"):
        return
    cpus = sorted(os.sched_getaffinity(0))
    if len(cpus) < count:
        return
    mine = set(cpus[int(worker.removeprefix("gw")) :: count])
    for tid in os.listdir("/proc/self/task"):  # every thread of this process, not just the caller
        try:
            os.sched_setaffinity(int(tid), mine)
        except OSError:
            pass


_pin_xdist_worker_to_its_cores()


@pytest.hookimpl(optionalhook=True)  # an xdist hook: pytest without xdist (-p no:xdist) ignores it
def pytest_xdist_make_scheduler(config, log):
    """Under ``pytest -n N`` (``make test``): each test file, and each notebook, whole on one worker.

    A notebook's cells share one kernel and must run in order on one worker; a module's
    fixtures (an engine, a fleet) would otherwise start once per worker; files in
    ``_SHARED_GROUPS`` go together. (pytest-xdist's own ``--dist loadgroup`` marks do not take
    effect with pytest 9.2, whose nodes no longer keep ``_nodeid``; this hook is xdist's
    documented way to choose the scheduler.)
    """
    from xdist.scheduler import LoadScopeScheduling

    class FileGroups(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            path = nodeid.split("::", 1)[0]
            return _SHARED_GROUPS.get(path.rsplit("/", 1)[-1], path)

    return FileGroups(config, log)


@pytest.fixture(scope="session")
def llm():
    """The course's default engine (SmolLM2-135M-Instruct, CPU defaults)."""
    from course_lib.engine import make_llm

    engine = make_llm()
    yield engine
    del engine
    gc.collect()


@pytest.fixture()
def fresh_llm(llm):
    """The session engine with an empty prefix cache."""
    assert llm.reset_prefix_cache()
    return llm


@pytest.fixture(scope="session")
def server():
    """A real vLLM OpenAI server (course defaults) for the session; started on first use only."""
    from course_lib.server import VLLMServer

    with VLLMServer(progress=False) as srv:
        yield srv


@pytest.fixture(scope="session")
def _kv_fleets():
    """The session's live fleet (at most one at a time), stopped at the end of the session."""
    registry: dict = {}
    yield registry
    if registry.get("fleet") is not None:
        registry["fleet"].stop()


@pytest.fixture(scope="module")
def kv_fleet(_kv_fleets):
    """Two live servers that publish KV-cache events, behind vllm-router (round_robin to start).

    Shared by test_kv_events and test_router: started on first use, and again if a module
    stopped it (test_router's last test stops it and checks every process is gone). Server 0
    publishes vLLM's default 64-bit integer hashes, server 1 the raw 32-byte hashes
    (``VLLM_KV_EVENTS_USE_INT_BLOCK_HASHES=0``).
    """
    from course_lib.router import RouterFleet

    fleet = _kv_fleets.get("fleet")
    if fleet is None or not fleet.router or any(not s.is_running for s in fleet.servers):
        if fleet is not None:
            fleet.stop()
        fleet = _kv_fleets["fleet"] = RouterFleet(
            2, policy="round_robin", kv_events=True, progress=False,
            server_env=[{"VLLM_KV_EVENTS_USE_INT_BLOCK_HASHES": "1"}, {"VLLM_KV_EVENTS_USE_INT_BLOCK_HASHES": "0"}],
        ).start()  # fmt: skip
    return fleet
