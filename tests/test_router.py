"""course_lib.router: two live vLLM servers behind vllm-router, round_robin against cache_aware.

One module-scoped fleet (two servers, ~2.5 GB each) serves both policies: the router is
restarted between them (under a second) and each run gets its own ``cache_salt``, so it
starts cold on warm servers. The last test stops the fleet and checks by pid that every
process of every group is gone.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from course_lib.engine import CourseError
from course_lib.fleet import simulate_fleet
from course_lib.router import RouterFleet, run_workload, tenant_workload, workload_as_fleet_requests

WORKLOAD = tenant_workload(n_tenants=5, questions=3, words=200, seed=1)


def _group_members(pgid: int) -> list[int]:
    members = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            fields = stat[stat.rindex(")") + 2 :].split()
            if int(fields[2]) == pgid and fields[0] != "Z":
                members.append(int(entry.name))
    return members


@pytest.fixture(scope="module")
def fleet():
    f = RouterFleet(2, policy="round_robin", progress=False).start()
    try:
        yield f
    finally:
        f.stop()


@pytest.fixture(scope="module")
def runs(fleet):
    out = {}
    for policy in ("round_robin", "cache_aware"):
        if fleet.policy != policy:
            fleet.set_policy(policy)
        out[policy] = run_workload(fleet, WORKLOAD, concurrency=4, cache_salt=f"test-router-{policy}")
    return out


def test_every_request_is_counted_once_on_some_replica(runs):
    for policy, res in runs.items():
        assert sum(r.requests for r in res.replicas) == len(WORKLOAD), policy
        assert sum(r.router_decisions for r in res.replicas) == len(WORKLOAD), policy
        assert sum(r.prompt_tokens for r in res.replicas) == sum(u[1] for u in res.usage), policy
        assert sum(r.cached_tokens for r in res.replicas) == sum(u[2] for u in res.usage), policy


def test_round_robin_spreads_requests_evenly(runs):
    counts = sorted(r.requests for r in runs["round_robin"].replicas)
    assert counts == [len(WORKLOAD) // 2, len(WORKLOAD) - len(WORKLOAD) // 2]


def test_cache_aware_finds_clearly_more_prefixes(runs):
    rr, ca = runs["round_robin"].hit_rate, runs["cache_aware"].hit_rate
    assert ca > rr + 0.1, (rr, ca)


def test_simulator_predicts_round_robin(fleet, runs):
    """round_robin is deterministic given the arrival order; the simulator replays it on the
    server's own token ids. Concurrency can only lower the live rate (a request whose prefix
    is still being computed elsewhere misses), so live <= simulated."""
    bs = fleet.servers[0].engine_kwargs["block_size"]
    reqs = workload_as_fleet_requests(fleet.servers[0], WORKLOAD, bs)
    assert [r.input_length for r in reqs] == [u[1] for u in runs["round_robin"].usage]
    sim = simulate_fleet(reqs, 2, 10**6, "round_robin", block_size=bs, concurrency=4)
    assert runs["round_robin"].hit_rate <= sim.hit_rate + 1e-9


def test_server_failure_shows_the_log_and_leaves_nothing():
    f = RouterFleet(2, progress=False, extra_args=["--no-such-flag"])
    with pytest.raises(CourseError, match="exited with code") as info:
        f.start()
    assert "--no-such-flag" in str(info.value)
    assert f.pids() == [] and all(s.process is None for s in f.servers)


def test_stopping_leaves_no_process(fleet, runs):
    groups = fleet.pids()
    assert len(groups) == 3  # two servers and the router
    members = {g: _group_members(g) for g in groups}
    assert all(members.values())
    fleet.stop()
    end = time.monotonic() + 30
    while time.monotonic() < end and any(_group_members(g) for g in groups):
        time.sleep(0.2)
    assert {g: _group_members(g) for g in groups} == {g: [] for g in groups}
