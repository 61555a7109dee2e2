"""course_lib.server: a real vLLM OpenAI server on CPU that never outlives its owner.

Full server starts cost ~20-80 s on 2 busy cores: the session ``server`` fixture
is one, ``test_exception_inside_with_leaves_no_process`` the only other. The
failure tests stop the child while it is still importing vLLM.
"""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import httpx
import pytest

from course_lib.engine import CourseError, engine_defaults, prepare_environment
from course_lib.server import VLLMServer, engine_cli_args, free_port, port_in_use


def _group_members(pgid: int) -> list[int]:
    """Pids of live processes in process group ``pgid`` (from /proc; zombies excluded)."""
    members = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2 :].split()  # after "pid (comm) "
        state, pgrp = fields[0], int(fields[2])
        if pgrp == pgid and state != "Z":
            members.append(int(entry.name))
    return members


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def _wait_gone(pids: list[int], timeout: float = 20.0) -> list[int]:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        left = [p for p in pids if _alive(p)]
        if not left:
            return []
        time.sleep(0.2)
    return [p for p in pids if _alive(p)]


@pytest.mark.parametrize("overrides", [{}, {"enable_prefix_caching": False, "block_size": 64}])
def test_engine_cli_args_parse_back_to_the_same_engine_settings(overrides):
    """vLLM's own server parser reads the flags back as the engine kwargs make_llm would use."""
    prepare_environment()
    from vllm.entrypoints.launchers.cli_args import make_arg_parser
    from vllm.utils.argparse_utils import FlexibleArgumentParser

    kwargs = engine_defaults("cpu") | overrides
    args = make_arg_parser(FlexibleArgumentParser()).parse_args(["--model", "m", *engine_cli_args(kwargs)])
    for name, value in kwargs.items():
        assert getattr(args, name) == value, name


def test_session_server_answers_with_its_served_name(server):
    assert server.is_running
    assert server.base_url == f"http://127.0.0.1:{server.port}"
    models = httpx.get(server.base_url + "/v1/models", timeout=10).json()
    assert [m["id"] for m in models["data"]] == [server.model_name]
    from course_lib.model import MODEL_VERSION

    assert server.model_name == MODEL_VERSION  # the embedded model's version, wherever it is stored
    assert server.log_path.exists() and server.log_path.stat().st_size > 0


def test_port_taken_is_refused_before_starting():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        srv = VLLMServer(port=port, progress=False)
        with pytest.raises(CourseError, match=f"port {port} .* already taken"):
            srv.start()
        assert srv.process is None


def test_missing_vllm_is_a_clear_error():
    python = "/usr/bin/python3"  # the system interpreter: no vLLM in it
    probe = subprocess.run([python, "-c", "import vllm"], capture_output=True)
    assert probe.returncode != 0, "this test needs an interpreter without vLLM"
    with pytest.raises(CourseError, match="vLLM is not installed"):
        VLLMServer(python=python, progress=False).start()


def test_server_dying_at_start_shows_the_log_tail():
    srv = VLLMServer(extra_args=["--no-such-flag"], progress=False)
    with pytest.raises(CourseError, match="exited with code") as info:
        srv.start()
    assert "--no-such-flag" in str(info.value)  # argparse's complaint, from the log
    assert srv.process is None


def test_start_timeout_stops_the_child():
    messages: list[str] = []
    srv = VLLMServer(startup_timeout=1.0, progress=messages.append)
    with pytest.raises(CourseError, match="did not answer"):
        srv.start()
    assert messages and "starting vLLM server" in messages[0]
    assert srv.process is None and not srv.is_running


def test_exception_inside_with_leaves_no_process():
    pgid = None
    members: list[int] = []
    with pytest.raises(RuntimeError, match="boom"):
        with VLLMServer(progress=False) as srv:
            pgid = srv.pid
            assert httpx.get(srv.base_url + "/health", timeout=10).status_code == 200
            members = _group_members(pgid)
            raise RuntimeError("boom")
    assert pgid is not None and pgid in members
    assert len(members) >= 2, "the API server and its engine-core process share the group"
    assert _wait_gone(members, timeout=5.0) == []
    assert _group_members(pgid) == []


_PARENT = textwrap.dedent(
    """
    import os, sys, time
    from course_lib.server import VLLMServer
    srv = VLLMServer(progress=False).start(wait=False)
    print(srv.pid, flush=True)
    time.sleep(3)  # the child is importing vLLM
    if sys.argv[1] == "exit":
        sys.exit(0)  # no stop(): atexit must do it
    time.sleep(600)  # killed by the test
    """
)


@pytest.mark.parametrize("how", ["exit", "kill"])
def test_server_dies_with_its_parent(how):
    """Normal exit without stop() (atexit) and SIGKILL of the parent (parent-death signal)."""
    parent = subprocess.Popen([sys.executable, "-c", _PARENT, how], stdout=subprocess.PIPE, text=True)
    try:
        child = int(parent.stdout.readline())
        assert _alive(child)
        if how == "kill":
            time.sleep(3)
            parent.send_signal(signal.SIGKILL)
        parent.wait(timeout=60)
        assert _wait_gone([child], timeout=30.0) == []
        assert _group_members(child) == []
    finally:
        if parent.poll() is None:
            parent.kill()
            parent.wait()


def test_free_port_is_bindable():
    port = free_port()
    with socket.socket() as s:
        s.bind(("127.0.0.1", port))
        s.listen()
        assert port_in_use(port)
    assert not port_in_use(port)
