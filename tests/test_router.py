"""course_lib.router: two live vLLM servers behind vllm-router; round_robin against the
prefix-aware policies cache_aware and kv_aware (the latter fed by the servers' KV-cache events).

The session's fleet (conftest.kv_fleet: two servers, ~2.5 GB each, shared with
test_kv_events) serves every policy: the router is restarted between them (under a second)
and each run's prompts carry their own tag, so each starts cold on warm servers. The last
test stops the fleet and checks by pid that every process of every group is gone.
"""

from __future__ import annotations

import shlex
import time
from pathlib import Path

import pytest

from course_lib.engine import CourseError
from course_lib.fleet import simulate_fleet
from course_lib.traces import prefix_blocks_seen
from course_lib.router import RouterFleet, run_workload, tenant_workload, workload_as_fleet_requests

# run name -> (policy, requests in flight). kv_aware and the round_robin replayed by the simulator
# run one request at a time: see their tests.
RUNS = {"round_robin": ("round_robin", 4), "cache_aware": ("cache_aware", 4), "kv_aware": ("kv_aware", 1),
        "round_robin, one at a time": ("round_robin", 1)}  # fmt: skip
WORKLOADS = {name: tenant_workload(n_tenants=5, questions=3, words=200, seed=1, tag=f"test-{name}") for name in RUNS}
N = len(WORKLOADS["round_robin"])


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
def fleet(kv_fleet):
    return kv_fleet


@pytest.fixture(scope="module")
def runs(fleet):
    out = {}
    for name, (policy, concurrency) in RUNS.items():
        if fleet.policy != policy or name == "round_robin, one at a time":  # a restart resets its counter
            fleet.set_policy(policy)
        # one at a time: a short pause lets each answer's KV events reach the router, also under load
        out[name] = run_workload(fleet, WORKLOADS[name], concurrency=concurrency,
                                 pause_s=0.2 if concurrency == 1 else 0.0)  # fmt: skip
    return out


def test_every_request_is_counted_once_on_some_replica(runs):
    for policy, res in runs.items():
        assert sum(r.requests for r in res.replicas) == N, policy
        assert sum(r.prompt_tokens for r in res.replicas) == sum(u[1] for u in res.usage), policy
        assert sum(r.cached_tokens for r in res.replicas) == sum(u[2] for u in res.usage), policy
        if policy == "kv_aware":  # counted by outcome, not by worker (vllm-router's src/metrics.rs)
            assert sum(r.router_decisions for r in res.replicas) == 0
            assert sum(res.prefix_outcomes.values()) == N, res.prefix_outcomes
        else:
            assert sum(r.router_decisions for r in res.replicas) == N, policy
            assert res.prefix_outcomes == {}, policy


def test_round_robin_spreads_requests_evenly(runs):
    counts = sorted(r.requests for r in runs["round_robin"].replicas)
    assert counts == [N // 2, N - N // 2]


def test_cache_aware_finds_clearly_more_prefixes(runs):
    rr, ca = runs["round_robin"].hit_rate, runs["cache_aware"].hit_rate
    assert ca > rr + 0.1, (rr, ca)


def test_kv_aware_finds_every_prefix_from_the_event_index(fleet, runs):
    """Every kv_aware decision priced the cache ("prefix_cost"): the router had the token ids
    and an index built from both servers' events (one publishing int hashes, one raw bytes).

    One request at a time, nothing is in flight, so its cost (tokens still to compute x
    requests running + 1, vllm-router's src/policies/kv_aware.rs) is lowest where the prefix
    is cached: every request must find all of its prefix that any earlier request computed,
    the rate of one infinite shared cache, computed here from the server's own token ids.
    (With several requests in flight the same cost prefers an idle replica: notebook 07.)"""
    res = runs["kv_aware"]
    assert res.prefix_outcomes == {"prefix_cost": N}
    bs = fleet.servers[0].engine_kwargs["block_size"]
    bound = prefix_blocks_seen(workload_as_fleet_requests(fleet.servers[0], WORKLOADS["kv_aware"], bs), bs)
    assert res.hit_rate == pytest.approx(bound, abs=1e-9), (res.hit_rate, bound, res.usage)


def test_router_command_line_is_what_runs(fleet, runs):
    line = fleet.router_command_line()
    assert line.startswith("vllm-router --worker-urls ") and f"--policy {fleet.policy}" in line
    assert all(u in line for u in fleet.worker_urls)
    # the arguments the router process was started with (after `python -c BOOTSTRAP`)
    assert shlex.split(line)[1:] == list(fleet.router.args[3:])


def test_simulator_predicts_round_robin_exactly(fleet, runs):
    """Sent one at a time, requests reach the router in send order, so its round robin puts
    the same requests together as the simulator's (which replica starts does not change the
    fleet rate), and the simulator, on the server's own token ids, must give vLLM's count.
    (With several in flight, arrival order is not send order: notebook 07 compares those.)"""
    live = runs["round_robin, one at a time"]
    bs = fleet.servers[0].engine_kwargs["block_size"]
    reqs = workload_as_fleet_requests(fleet.servers[0], WORKLOADS["round_robin, one at a time"], bs)
    assert [r.input_length for r in reqs] == [u[1] for u in live.usage]
    sim = simulate_fleet(reqs, 2, 10**6, "round_robin", block_size=bs)
    assert sorted(r.requests for r in live.replicas) == sorted(s.requests for s in sim.per_replica)
    assert sum(r.cached_tokens for r in live.replicas) == sim.cached_tokens, (live.usage, sim)


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
