"""check_env and `course check` on this machine (CPU, everything installed)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from course_lib.check import check_env, run_checks

COURSE = str(Path(sys.executable).with_name("course"))


def test_every_requirement_is_ok_here(capsys):
    status = check_env()
    assert status and status == True and bool(status) is True  # noqa: E712 (true like a bool)
    out = capsys.readouterr().out.splitlines()
    names = [line.split("]")[1].split(":")[0].strip() for line in out]
    assert names == ["Python", "vLLM", "torch", "transformers", "device", "model", "KV cache budget"]
    assert all(line.startswith("[OK] ") for line in out)


def test_course_check_prints_only_ok_lines_and_exits_zero():
    proc = subprocess.run([COURSE, "check"], capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    lines = proc.stdout.strip().splitlines()
    assert lines and all(line.startswith("[OK] ") for line in lines)
    assert any("vLLM: 0.32.0" in line for line in lines)


def test_a_failing_requirement_gives_a_fail_line_and_nonzero_exit():
    env = dict(os.environ, VLLM_CPU_KVCACHE_SPACE="100000")  # 100 TB: more than any machine has
    proc = subprocess.run([COURSE, "check"], capture_output=True, text=True, timeout=180, env=env)
    assert proc.returncode == 1
    fails = [line for line in proc.stdout.splitlines() if line.startswith("[FAIL]")]
    assert len(fails) == 1 and "KV cache budget" in fails[0] and "VLLM_CPU_KVCACHE_SPACE" in fails[0]


def test_checks_report_the_device_and_model():
    checks = {c.name: c for c in run_checks()}
    assert checks["device"].detail.startswith("cpu")
    assert checks["model"].detail.startswith("SmolLM2-135M-Instruct at ")


def test_model_line_says_how_to_build_a_missing_model(monkeypatch, tmp_path):
    monkeypatch.delenv("COURSE_MODEL", raising=False)
    monkeypatch.setenv("COURSE_MODEL_DIR", str(tmp_path / "not-built"))
    line = {c.name: c for c in run_checks()}["model"]
    assert line.ok and "not built yet" in line.detail and "course build-model" in line.detail
    assert not (tmp_path / "not-built").exists()  # the check never builds it


def test_model_line_names_a_course_model_override(monkeypatch):
    monkeypatch.setenv("COURSE_MODEL", "Qwen/Qwen2.5-0.5B-Instruct")
    assert {c.name: c for c in run_checks()}["model"].detail == "Qwen/Qwen2.5-0.5B-Instruct (from COURSE_MODEL)"


def test_check_env_adds_no_out_line_in_a_notebook(capsys):
    """The first cell of every notebook shows the check lines only: IPython's formatter gets no data
    from the result, so the kernel sends no execute_result (no stray ``Out: True``)."""
    from IPython.core.interactiveshell import InteractiveShell

    status = check_env()
    capsys.readouterr()
    shell = InteractiveShell.instance()
    try:
        assert shell.display_formatter.format(status) == ({}, {})
        assert shell.display_formatter.format(True)[0] == {"text/plain": "True"}  # what a bool would have shown
        quiet = check_env(verbose=False)
        assert capsys.readouterr().out == ""
        assert shell.display_formatter.format(quiet) == ({}, {})  # ... but then shows its lines when displayed
        assert capsys.readouterr().out.splitlines() == [c.line() for c in quiet.checks]
    finally:
        InteractiveShell.clear_instance()
