"""course_lib.bench on the real engine: the zero-hit workload really has no hit (timings are never asserted)."""

from __future__ import annotations

import pytest

from course_lib import bench
from course_lib import scenario as sc
from course_lib.engine import measure


@pytest.fixture(scope="module")
def short(llm):
    """A 300-token version: enough blocks to hit, cheap enough for engines started per test."""
    return sc.build_scenario(llm.get_tokenizer(), target_tokens=300)


def test_distinct_prompts_never_hit(fresh_llm, short):
    prompts = bench.distinct_prompts(short.system_prompt, 3)
    stats = measure(fresh_llm, prompts)
    assert [s.num_cached_tokens for s in stats] == [0, 0, 0]
    # ...while the same prompts again hit all their full blocks: the zero is not an accident.
    bs = sc.engine_block_size(fresh_llm)
    again = measure(fresh_llm, prompts[:1])[0]
    assert again.num_cached_tokens == (again.prompt_tokens - 1) // bs * bs > 0


def test_course_bench_system_prompt_runs_the_benchmark_function(monkeypatch, capsys):
    """The CLI wiring only (the benchmark itself is timed in benchmarks/, never in tests)."""
    from course_lib.cli import main

    calls = []
    monkeypatch.setattr(bench, "bench_system_prompt", lambda repeats, tokens: calls.append((repeats, tokens)) or "REPORT")
    assert main(["bench", "system-prompt", "--repeats", "2", "--target-tokens", "300"]) == 0
    assert calls == [(2, 300)] and "REPORT" in capsys.readouterr().out
