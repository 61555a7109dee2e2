"""course_lib.offload: the course's KV connector, on the real vLLM CPU engine.

Expected cached-token counts come from the course's prefix-cache simulator
(``course_lib.simulator.PrefixCacheSimulator``, itself tested against vLLM) plus a
reference model of the tier written here (an ordered dict of block hashes), never from
the connector. Engines are reused: one small-pool engine for the module, one restart.
"""

from __future__ import annotations

import gc
import json
import logging
import os
import random
import subprocess
import sys
import time
from collections import OrderedDict
from pathlib import Path

import pytest

from course_lib import offload
from course_lib.engine import CourseError, close_llm, make_llm, run_one
from course_lib.hashing import block_hashes
from course_lib.simulator import PrefixCacheSimulator

BS = 32
POOL_BLOCKS = 24  # 23 usable blocks (one is vLLM's null block): 736 tokens, so requests evict each other


def _doc(seed: int, n: int) -> list[int]:
    rng = random.Random(seed)
    return [rng.randrange(1000, 40000) for _ in range(n)]


DOCS = [_doc(i, 320) for i in range(3)]  # 10 full blocks each
QUESTIONS = [_doc(100 + i, 40) for i in range(8)]
# D0 computed; D1; D0 again (local hit); D2 (evicts D0's blocks, pool is 23 blocks); D0 (from the tier);
# D1 (tier); a prompt sharing only D2's first 5 blocks (local or tier); D0 with a new question.
WORKLOAD = [DOCS[0] + QUESTIONS[0], DOCS[1] + QUESTIONS[1], DOCS[0] + QUESTIONS[2], DOCS[2] + QUESTIONS[3],
            DOCS[0] + QUESTIONS[4], DOCS[1] + QUESTIONS[5], DOCS[2][:160] + QUESTIONS[6], DOCS[0] + QUESTIONS[7]]


class TierModel:
    """The reference tier: an LRU of block hashes (capacity in blocks, None = unbounded).

    Written from the connector's contract, not its code: a request first takes its local hit
    (the simulator), then the tier's consecutive blocks after it (at most up to the last prompt
    token), which become most recently used; then every full prompt block past the hit that
    the tier lacks is stored, evicting the least recently used.
    """

    def __init__(self, capacity_blocks: int | None = None, initial: list[str] = ()) -> None:
        self.capacity = capacity_blocks
        self.blocks: OrderedDict[str, None] = OrderedDict((h, None) for h in initial)

    def request(self, hashes: list[str], num_prompt_tokens: int, local_hit_blocks: int) -> int:
        last = (num_prompt_tokens - 1) // BS
        n = local_hit_blocks
        while n < last and hashes[n] in self.blocks:
            self.blocks.move_to_end(hashes[n])
            n += 1
        for h in hashes[n: num_prompt_tokens // BS]:
            if h in self.blocks:
                continue
            if self.capacity is not None:
                while len(self.blocks) >= self.capacity:
                    self.blocks.popitem(last=False)
            self.blocks[h] = None
        return (n - local_hit_blocks) * BS


def _predict(prompts, tier: TierModel, sim: PrefixCacheSimulator) -> list[tuple[int, int]]:
    """(local hit, tier hit) in tokens for each prompt, from the simulator and the tier model.

    A tier hit is computed into fresh pool blocks, exactly as if prefilled, so the simulator
    sees the request with only its local hit, and caches the rest as computed.
    """
    out = []
    for p in prompts:
        hashes = block_hashes(p, BS)
        local = len(sim.find_cached_blocks(hashes, len(p)))
        tier_hit = tier.request([h.hex() for h in hashes], len(p), local)
        assert sim.process(p) == local * BS
        out.append((local * BS, tier_hit))
    return out


def _counters(llm) -> tuple[float, float]:
    """(local hits, external hits) so far, from vLLM's own counters."""
    values = {m.name: getattr(m, "value", 0) for m in llm.get_metrics()}
    return values["vllm:prefix_cache_hits"], values["vllm:external_prefix_cache_hits"]


def _run(llm, prompts, max_tokens: int = 1):
    """Run prompts one at a time; per prompt (local hit, tier hit) from the counters, and the stats."""
    from vllm import SamplingParams

    sampling = SamplingParams(max_tokens=max_tokens, temperature=0.0)
    rows, stats = [], []
    for p in prompts:
        local0, ext0 = _counters(llm)
        s = run_one(llm, p, sampling)
        local1, ext1 = _counters(llm)
        rows.append((int(local1 - local0), int(ext1 - ext0)))
        assert s.num_cached_tokens == rows[-1][0] + rows[-1][1]
        stats.append(s)
    return rows, stats


@pytest.fixture(scope="module")
def tier_dir():
    path = offload.new_tier_dir()
    yield Path(path)
    offload.remove_tier_dir(path)
    assert not Path(path).exists()


@pytest.fixture(scope="module")
def tier_llm(tier_dir):
    llm = make_llm(num_gpu_blocks_override=POOL_BLOCKS, kv_transfer_config=offload.tier_config(tier_dir))
    yield llm
    from course_lib.engine import _LIVE_ENGINES

    if llm in _LIVE_ENGINES:  # the restart test closes it itself
        close_llm(llm)
    del llm
    gc.collect()


def _files(tier_dir: Path) -> list[Path]:
    return sorted(tier_dir.glob("*" + offload.SUFFIX))


# --- live: the tier against the simulator ------------------------------------------------

def test_tier_hits_match_the_simulator_request_by_request(tier_llm, tier_dir):
    expected = _predict(WORKLOAD, TierModel(), PrefixCacheSimulator(POOL_BLOCKS, BS))
    measured, _ = _run(tier_llm, WORKLOAD)
    assert measured == expected
    assert any(t for _, t in measured) and any(loc for loc, _ in measured)  # both kinds happened
    stored = {p.name.removesuffix(offload.SUFFIX) for p in _files(tier_dir)}
    assert stored == {h.hex() for p in WORKLOAD for h in block_hashes(p, BS)[: len(p) // BS]}
    assert not [p for p in tier_dir.iterdir() if p.name.startswith(offload.TMP_PREFIX)]


def test_a_shared_prefix_hits_block_by_block(tier_llm):
    tier_llm.reset_prefix_cache()
    prompt = DOCS[1][:200] + _doc(7, 50)  # shares 6 full blocks (192 tokens) with D1
    ((local, tier),), _ = _run(tier_llm, [prompt])
    assert (local, tier) == (0, 192)


def test_greedy_output_from_a_tier_hit_equals_a_cold_run(tier_llm):
    prompt = _doc(11, 300)
    (cold_row,), (cold,) = _run(tier_llm, [prompt], max_tokens=12)
    tier_llm.reset_prefix_cache()
    (hit_row,), (hit,) = _run(tier_llm, [prompt], max_tokens=12)
    assert cold_row == (0, 0) and hit_row == (0, 288)
    assert hit.output_token_ids == cold.output_token_ids


def test_corrupt_and_truncated_files_are_misses_named_in_the_log(tier_llm, tier_dir, caplog):
    from vllm import SamplingParams

    prompt = _doc(21, 330)  # 10 full blocks, the last token never cached: 320 tokens can hit
    sampling = SamplingParams(max_tokens=12, temperature=0.0)
    cold = run_one(tier_llm, prompt, sampling)
    hashes = [h.hex() for h in block_hashes(prompt, BS)]
    truncated, corrupt, foreign = (tier_dir / (hashes[i] + offload.SUFFIX) for i in (7, 4, 2))
    truncated.write_bytes(truncated.read_bytes()[:-1000])
    data = bytearray(corrupt.read_bytes())
    data[-5] ^= 0xFF  # same size, one payload byte flipped
    corrupt.write_bytes(bytes(data))
    foreign.write_bytes(foreign.read_bytes().replace(b'"bfloat16"', b'"float16 "', 1))  # same length

    caplog.set_level(logging.WARNING, logger="course_lib.offload")
    tier_llm.reset_prefix_cache()
    (row,), (hit,) = _run(tier_llm, [prompt], max_tokens=12)
    # The header check at lookup stops the chain at the foreign block 2 (dtype differs).
    assert row == (0, 2 * BS)
    assert foreign.name in caplog.text and "dtype" in caplog.text
    assert hit.output_token_ids == cold.output_token_ids

    # Put block 2 back (the engine recomputed and re-stored nothing: the file existed), so the
    # lookup reaches the truncated block 7; block 4's corruption is found by the load's checksum.
    foreign.unlink()
    caplog.clear()
    tier_llm.reset_prefix_cache()
    run_one(tier_llm, prompt[:96] + _doc(22, 10))  # recomputes blocks 0-2, stores block 2 again
    assert foreign.exists()
    tier_llm.reset_prefix_cache()
    caplog.clear()
    (row,), (hit,) = _run(tier_llm, [prompt], max_tokens=12)
    assert truncated.name in caplog.text and "bytes" in caplog.text
    assert corrupt.name in caplog.text and "checksum" in caplog.text
    # vLLM recomputes from the corrupt block on (kv_load_failure_policy="recompute"): the KV is right.
    assert hit.output_token_ids == cold.output_token_ids
    assert row[1] <= 7 * BS
    for path in (truncated, corrupt):  # leave the tier as the engine wrote it
        path.unlink()


def test_exercise_checks_of_notebook_09(tier_llm, tier_dir):
    """09.1 against a block file's real payload; 09.2 on the live engine; wrong answers keep the value hidden."""
    from course_lib.exercises import nb09

    hf = tier_llm.llm_engine.model_config.hf_config
    payload = hf.num_hidden_layers * 2 * hf.num_key_value_heads * (hf.hidden_size // hf.num_attention_heads) * BS * 2
    assert nb09.check_block_bytes(payload, tier_dir).ok
    wrong = nb09.check_block_bytes(payload // 2, tier_dir)
    assert not wrong.ok and f"{payload:,}" not in str(wrong) and str(payload) not in str(wrong)
    assert "no answer yet" in str(nb09.check_block_bytes(..., tier_dir)).lower()

    a = _doc(51, 330)
    c = a[:100] + _doc(52, 60)
    right = (3 * BS, (329 // BS - 3) * BS)  # C leaves A's 3 shared blocks local; the tier has the rest
    assert nb09.check_local_then_tier(right, tier_llm, a, c).ok
    wrong = nb09.check_local_then_tier((0, 320), tier_llm, a, c)
    assert not wrong.ok and "96" not in str(wrong) and "224" not in str(wrong)


def test_restart_hits_and_the_lru_evicts_the_least_recently_used(tier_llm, tier_dir):
    """A new engine on the same directory hits; a capacity of K files keeps the K most recent."""
    files = _files(tier_dir)
    size = files[0].stat().st_size
    assert {p.stat().st_size for p in files} == {size}  # fixed-size block files
    close_llm(tier_llm)
    gc.collect()
    initial = [p.name.removesuffix(offload.SUFFIX) for p in sorted(files, key=lambda p: p.stat().st_mtime_ns)]
    capacity_blocks = 40
    assert len(initial) > capacity_blocks  # the first write evicts
    llm = make_llm(num_gpu_blocks_override=POOL_BLOCKS,
                   kv_transfer_config=offload.tier_config(tier_dir, capacity_bytes=capacity_blocks * size))
    try:
        prompts = [DOCS[0] + QUESTIONS[0], _doc(31, 400), _doc(32, 400), DOCS[1] + QUESTIONS[1],
                   _doc(31, 400), DOCS[0] + QUESTIONS[3], _doc(33, 500), DOCS[2] + QUESTIONS[2]]
        expected = _predict(prompts, TierModel(capacity_blocks, initial), PrefixCacheSimulator(POOL_BLOCKS, BS))
        measured, _ = _run(llm, prompts)
        assert measured[0][0] == 0 and measured[0][1] == 352  # after the restart: all 11 blocks from the tier
        assert measured == expected
        assert len(_files(tier_dir)) <= capacity_blocks
    finally:
        close_llm(llm)
        del llm
        gc.collect()


_CHILD = r"""
import json, sys, time
from pathlib import Path
from course_lib import offload
from course_lib.engine import make_llm, run_one
tier_dir, go, prompt_a, prompt_b = sys.argv[1], Path(sys.argv[2]), json.loads(sys.argv[3]), json.loads(sys.argv[4])
llm = make_llm(kv_transfer_config=offload.tier_config(tier_dir))
a = run_one(llm, prompt_a)
print(json.dumps({"a": a.num_cached_tokens}), flush=True)
deadline = time.monotonic() + 300
while not go.exists() and time.monotonic() < deadline:
    time.sleep(0.1)
b = run_one(llm, prompt_b)
print(json.dumps({"b": b.num_cached_tokens}), flush=True)
"""


def test_two_processes_share_one_tier(tmp_path):
    """Each engine stores one prompt while the other runs; each then hits the other's blocks."""
    tier_dir = offload.new_tier_dir()
    prompt_a, prompt_b = _doc(41, 400), _doc(42, 400)  # 12 full blocks each: 384 tokens can hit
    go = tmp_path / "go"
    child = subprocess.Popen([sys.executable, "-c", _CHILD, tier_dir, str(go), json.dumps(prompt_a), json.dumps(prompt_b)],
                             stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, start_new_session=True)
    llm = None
    try:
        llm = make_llm(kv_transfer_config=offload.tier_config(tier_dir))
        assert run_one(llm, prompt_b).num_cached_tokens == 0
        first = json.loads(child.stdout.readline())
        assert first == {"a": 0}
        go.touch()
        assert run_one(llm, prompt_a).num_cached_tokens == 384  # written by the child
        second = json.loads(child.stdout.readline())
        assert second == {"b": 384}  # written by this process
        assert child.wait(timeout=120) == 0
    finally:
        if child.poll() is None:
            os.killpg(child.pid, 9)
            child.wait(timeout=10)
        if llm is not None:
            close_llm(llm)
        offload.remove_tier_dir(tier_dir)
    assert child.poll() is not None
    assert not Path(tier_dir).exists()


# --- bad directories: a clear error at engine start ----------------------------------------

def test_a_missing_directory_is_a_clear_error_at_engine_start(tmp_path):
    missing = tmp_path / "no-such-dir"
    with pytest.raises(CourseError, match="does not exist"):
        make_llm(kv_transfer_config=offload.tier_config(missing))
    assert not missing.exists()


def test_an_unwritable_directory_is_a_clear_error():
    with pytest.raises(ValueError, match="not writable"):
        offload.TierDirectory("/proc", 1 << 20)  # read-only even for root


def test_a_block_larger_than_the_tier_is_skipped_and_named(tmp_path, caplog):
    tier = offload.TierDirectory(tmp_path, capacity_bytes=100)
    caplog.set_level(logging.WARNING, logger="course_lib.offload")
    assert tier.write("ab" * 16, b"x" * 101) is False
    assert "abababab" in caplog.text and "exceed" in caplog.text
    assert list(tmp_path.iterdir()) == []


def test_lru_eviction_and_atomic_names(tmp_path):
    tier = offload.TierDirectory(tmp_path, capacity_bytes=300)
    for h in ("a1", "b2", "c3"):
        assert tier.write(h, b"x" * 100)
    offload._stamp(tier.block_path("a1"))  # a hit: a1 becomes the most recently used
    assert tier.write("d4", b"y" * 100)
    assert tier.block_hashes() == {"a1", "c3", "d4"}  # b2, the least recently used, went
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(h + offload.SUFFIX for h in ("a1", "c3", "d4"))


def test_a_crashed_writer_leaves_nothing_trusted(tmp_path):
    """A temp file from a writer killed before its rename is never read, and is cleaned up later."""
    tier = offload.TierDirectory(tmp_path, capacity_bytes=10_000)
    stale = tmp_path / f"{offload.TMP_PREFIX}ab-1-x"
    stale.write_bytes(b"half a block")
    old = time.time() - offload.STALE_TMP_S - 1
    os.utime(stale, (old, old))
    assert tier.block_hashes() == set()
    assert not stale.exists()
