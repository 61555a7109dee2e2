"""course_lib.hashing must equal vLLM's own block hasher byte for byte.

The expected values always come from vLLM itself: real ``vllm.v1.request.Request``
objects with the block hasher vLLM's engine core installs
(``get_request_block_hasher``), after ``init_none_hash`` as the engine runs it.
"""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
import textwrap

import pytest

from course_lib import hashing

ALGOS = hashing.HASH_ALGOS


@pytest.fixture()
def vllm_kv():
    """vLLM's kv_cache_utils, with its global NONE_HASH restored afterwards.

    The session engine runs in this process and reads that global, so a test
    that re-seeds it for another algorithm must put it back.
    """
    from course_lib.engine import prepare_environment

    prepare_environment()
    from vllm.v1.core import kv_cache_utils

    saved = (getattr(kv_cache_utils, "NONE_HASH", None), kv_cache_utils._NONE_HASH_SEED)
    yield kv_cache_utils
    if saved[0] is not None:
        kv_cache_utils.NONE_HASH = saved[0]
    kv_cache_utils._NONE_HASH_SEED = saved[1]


def _random_case(rng: random.Random) -> dict:
    block_size = rng.choice([1, 2, 16, 32])
    tokens = [rng.randrange(0, 200_000) for _ in range(rng.randrange(0, 5 * block_size + 3))]
    salt = rng.choice([None, "", "tenant-a", "ünïcödé salt"])
    lora = rng.choice([None, ("adapter-a", "/adapters/a"), ("adapter-b", "/adapters/b")])
    return {"block_size": block_size, "tokens": tokens, "salt": salt, "lora": lora}


def _vllm_hashes(kv, algo: str, case: dict) -> list[bytes]:
    from vllm import SamplingParams
    from vllm.lora.request import LoRARequest
    from vllm.utils.hashing import get_hash_fn_by_name
    from vllm.v1.request import Request

    fn = get_hash_fn_by_name(algo)
    lora = LoRARequest(case["lora"][0], 1, case["lora"][1]) if case["lora"] else None
    request = Request(
        "req", case["tokens"], SamplingParams(max_tokens=1), None,
        lora_request=lora, cache_salt=case["salt"],
        block_hasher=kv.get_request_block_hasher(case["block_size"], fn),
    )
    return list(request.block_hashes)


def _ours(algo: str, case: dict, **kw) -> list[bytes]:
    lora = case["lora"] or (None, None)
    return hashing.block_hashes(
        case["tokens"], case["block_size"], algo, cache_salt=case["salt"], lora_name=lora[0], lora_path=lora[1], **kw
    )


@pytest.mark.parametrize("algo", ALGOS)
def test_block_hashes_equal_vllm_request_hashes(vllm_kv, algo):
    from vllm.utils.hashing import get_hash_fn_by_name

    vllm_kv.init_none_hash(get_hash_fn_by_name(algo))
    rng = random.Random(f"hashing-{algo}")
    for _ in range(60):
        case = _random_case(rng)
        expected = _vllm_hashes(vllm_kv, algo, case)
        assert len(expected) == len(case["tokens"]) // case["block_size"]
        if algo.startswith("sha256"):
            # Deterministic default seed: equal without being told vLLM's NONE_HASH.
            assert _ours(algo, case) == expected
        else:
            # Random per-process seed: equal once given the engine's NONE_HASH or its seed.
            assert _ours(algo, case, none_hash=vllm_kv.NONE_HASH) == expected
    assert hashing.none_hash(algo, seed=vllm_kv.get_none_hash_seed()) == vllm_kv.NONE_HASH


def test_none_hash_seeding_matches_vllm_in_this_process(vllm_kv):
    from vllm.utils.hashing import get_hash_fn_by_name

    for algo in ALGOS:
        vllm_kv.init_none_hash(get_hash_fn_by_name(algo))
        same = hashing.none_hash(algo) == vllm_kv.NONE_HASH
        if os.environ.get("PYTHONHASHSEED") is not None or algo.startswith("sha256"):
            assert same, algo
        else:  # each process draws its own secret seed, as vLLM does
            assert not same, algo


def test_salt_and_lora_change_hashes_the_way_vllm_does(vllm_kv):
    from vllm.utils.hashing import get_hash_fn_by_name

    vllm_kv.init_none_hash(get_hash_fn_by_name("sha256"))
    tokens = list(range(100))
    base = {"block_size": 16, "tokens": tokens, "salt": None, "lora": None}
    salted = base | {"salt": "s"}
    lora = base | {"lora": ("a", "/a")}
    plain, with_salt, with_lora = (_ours("sha256", c) for c in (base, salted, lora))
    assert with_salt == _vllm_hashes(vllm_kv, "sha256", salted)
    assert with_lora == _vllm_hashes(vllm_kv, "sha256", lora)
    # A salt changes block 0, hence (through chaining) every block; a LoRA key changes every block directly.
    assert all(a != b for a, b in zip(plain, with_salt))
    assert all(a != b for a, b in zip(plain, with_lora))


def test_multimodal_items_enter_the_hash_the_way_vllm_does(vllm_kv):
    """An image's placeholder tokens are the same ids for every image: only the extra key tells them apart."""
    from vllm import SamplingParams
    from vllm.multimodal.inputs import MultiModalFeatureSpec, PlaceholderRange
    from vllm.utils.hashing import get_hash_fn_by_name
    from vllm.v1.request import Request

    fn = get_hash_fn_by_name("sha256")
    vllm_kv.init_none_hash(fn)
    tokens = [7] * 10 + [9] * 60 + list(range(30))  # 60 placeholder tokens of an image at offset 10

    def vllm_hashes(items):
        feats = [MultiModalFeatureSpec(None, "image", ident, PlaceholderRange(off, n)) for ident, off, n in items]
        req = Request("mm", tokens, SamplingParams(max_tokens=1), None, mm_features=feats,
                      block_hasher=vllm_kv.get_request_block_hasher(16, fn))
        return list(req.block_hashes)

    for items in ([("img-a", 10, 60)], [("img-b", 10, 60)], [("img-a", 10, 20), ("img-b", 40, 30)]):
        assert hashing.block_hashes(tokens, 16, mm_items=items) == vllm_hashes(items), items
    a, b = (hashing.block_hashes(tokens, 16, mm_items=[(i, 10, 60)]) for i in ("img-a", "img-b"))
    assert all(x != y for x, y in zip(a, b))  # block 0 already holds image tokens
    assert hashing.block_extra_keys(16, mm_items=[("img-a", 10, 60)], block_size=16) == (("mm", "img-a", -6),)
    with pytest.raises(ValueError, match="block_size"):
        hashing.block_extra_keys(0, mm_items=[("img-a", 0, 4)])


def test_hash_block_tokens_chains_like_block_hashes():
    tokens = list(range(64))
    h0, h1 = hashing.block_hashes(tokens, 32)
    assert hashing.hash_block_tokens(None, tokens[:32]) == h0
    assert hashing.hash_block_tokens(h0, tokens[32:]) == h1
    # numpy integers are converted first: vLLM hashes Python ints, and a pickled
    # numpy int64 is different bytes.
    import numpy as np

    assert hashing.block_hashes(np.array(tokens), 32) == [h0, h1]


_SUBPROCESS = textwrap.dedent(
    """
    import json, random, sys
    from course_lib.engine import prepare_environment
    prepare_environment()
    from vllm import SamplingParams
    from vllm.lora.request import LoRARequest
    from vllm.utils.hashing import get_hash_fn_by_name
    from vllm.v1.core import kv_cache_utils as kv
    from vllm.v1.request import Request
    cases = json.loads(sys.stdin.read())
    out = {}
    for algo in %r:
        fn = get_hash_fn_by_name(algo)
        kv.init_none_hash(fn)
        res = []
        for c in cases:
            lora = LoRARequest(c["lora"][0], 1, c["lora"][1]) if c["lora"] else None
            r = Request("r", c["tokens"], SamplingParams(max_tokens=1), None, lora_request=lora,
                        cache_salt=c["salt"], block_hasher=kv.get_request_block_hasher(c["block_size"], fn))
            res.append([h.hex() for h in r.block_hashes])
        out[algo] = {"none_hash": kv.NONE_HASH.hex(), "hashes": res}
    print("RESULT" + json.dumps(out))
    """
) % (ALGOS,)


def test_pythonhashseed_seeds_none_hash_like_vllm(monkeypatch):
    """vLLM in fresh processes started with PYTHONHASHSEED set: every algorithm becomes reproducible."""
    rng = random.Random("pythonhashseed")
    cases = [_random_case(rng) for _ in range(12)]
    seeds = ["4242"]  # one process: importing vLLM is the slow part
    procs = {}
    for seed in seeds:
        env = os.environ | {"PYTHONHASHSEED": seed, "VLLM_LOGGING_LEVEL": "ERROR"}
        procs[seed] = subprocess.Popen(
            [sys.executable, "-c", _SUBPROCESS], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
            stderr=subprocess.PIPE, text=True, env=env,
        )
    results = {}
    for seed, proc in procs.items():
        stdout, stderr = proc.communicate(json.dumps(cases), timeout=300)
        assert proc.returncode == 0, stderr[-2000:]
        line = next(ln for ln in stdout.splitlines() if ln.startswith("RESULT"))
        results[seed] = json.loads(line[len("RESULT"):])
    for seed in seeds:
        monkeypatch.setenv("PYTHONHASHSEED", seed)
        for algo in ALGOS:
            got = results[seed][algo]
            # No none_hash given: our own seeding must reproduce vLLM's, xxhash included.
            assert hashing.none_hash(algo).hex() == got["none_hash"], (seed, algo)
            for case, expected in zip(cases, got["hashes"]):
                assert [h.hex() for h in _ours(algo, case)] == expected, (seed, algo)
    # The seed really was used: without it, sha256's NONE_HASH comes from the fixed default seed.
    monkeypatch.delenv("PYTHONHASHSEED")
    assert results["4242"]["sha256"]["none_hash"] != hashing.none_hash("sha256").hex()


def test_bad_arguments_raise_clear_errors():
    with pytest.raises(ValueError, match="hash_algo"):
        hashing.block_hashes([1, 2], 1, "md5")
    with pytest.raises(ValueError, match="block_size"):
        hashing.block_hashes([1, 2], 0)
    with pytest.raises(ValueError, match="lora_path"):
        hashing.block_hashes([1, 2], 1, lora_name="a")
