"""course_lib.traces: the shipped Mooncake traces are the published files, read completely."""

from __future__ import annotations

import gzip
import hashlib
import json

import pytest

from course_lib.engine import CourseError
from course_lib.traces import MOONCAKE_BLOCK_TOKENS, TRACES, TRACES_DIR, load_trace, trace_summary

# sha256 of the uncompressed JSONL files as published (github.com/kvcache-ai/Mooncake, FAST25-release/traces)
SHA256 = {
    "conversation": "b8cbb061a85206d729d91cdc2981f43c9e0d99209dce588d3af5f7934408b9df",
    "synthetic": "bd070915a98fc0ed264d7cfef2ce746002eb3076a695ec31ba2674c0111ec131",
}


@pytest.mark.parametrize("name", sorted(TRACES))
def test_shipped_traces_are_the_published_files(name):
    data = gzip.decompress((TRACES_DIR / TRACES[name]).read_bytes())
    assert hashlib.sha256(data).hexdigest() == SHA256[name]
    lines = data.decode().splitlines()
    assert len(load_trace(name)) == len(lines) == {"conversation": 12031, "synthetic": 3993}[name]
    first = json.loads(lines[0])
    assert len(first["hash_ids"]) == -(-first["input_length"] // MOONCAKE_BLOCK_TOKENS)
    assert (TRACES_DIR / "LICENSE-APACHE").read_text().startswith("\n                                 Apache License")


def test_a_jsonl_file_of_its_own_and_its_summary(tmp_path):
    path = tmp_path / "t.jsonl.gz"
    rows = [{"timestamp": 60000 * i, "input_length": 600 + i, "output_length": 2 * i + 1, "hash_ids": [1, 2 + i]}
            for i in range(4)]  # fmt: skip
    path.write_bytes(gzip.compress("\n".join(json.dumps(r) for r in rows).encode() + b"\n\n"))
    reqs = load_trace(str(path))
    assert [(r.hash_ids, r.input_length, r.output_length) for r in reqs] == [((1, 2 + i), 600 + i, 2 * i + 1) for i in range(4)]
    assert len(load_trace(str(path), limit=2)) == 2
    s = trace_summary(reqs)
    assert (s["requests"], s["mean_input_tokens"], s["mean_output_tokens"], s["minutes"]) == (4, 601.5, 4.0, 3.0)


def test_errors_are_clear(tmp_path):
    with pytest.raises(CourseError, match="no trace"):
        load_trace("/no/such/trace.jsonl")
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"input_length": 10, "hash_ids": [1]}\n{"input_length": 10}\n')
    with pytest.raises(CourseError, match="bad.jsonl:2: not a trace line"):
        load_trace(str(bad))
