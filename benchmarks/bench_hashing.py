"""Benchmark: course_lib's block hashing and simulator vs vLLM's own hashing, on 1M tokens.

Run: ``.venv/bin/python benchmarks/bench_hashing.py [--tokens 1000000] [--block-size 16]``

The workload is chat-like: 1,000-token requests that share a long system prompt
and one of a few documents, then a unique tail. It prints

- course_lib.hashing.block_hashes over every request's tokens;
- vLLM's hashing of the same tokens, two ways: its ``hash_block_tokens`` called
  block by block (the hashing alone) and real ``vllm.v1.request.Request`` objects
  with the engine's request block hasher (what the engine does per request);
- the whole PrefixCacheSimulator run (hashing + lookup + allocation + eviction);

and the ratios. Target from issue 3: the whole 1M-token simulation under 2 s on one core.
The hash values are checked equal on the way, so the timings compare the same work.
"""

from __future__ import annotations

import argparse
import random
import time


def workload(total_tokens: int, request_len: int = 1000, seed: int = 0) -> list[list[int]]:
    rng = random.Random(seed)
    system = [rng.randrange(32_000) for _ in range(300)]
    docs = [[rng.randrange(32_000) for _ in range(400)] for _ in range(8)]
    out = []
    while sum(map(len, out)) + request_len <= total_tokens:
        head = system + rng.choice(docs)
        out.append(head + [rng.randrange(32_000) for _ in range(request_len - len(head))])
    return out


def timed(fn):
    start = time.perf_counter()
    result = fn()
    return time.perf_counter() - start, result


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tokens", type=int, default=1_000_000)
    ap.add_argument("--block-size", type=int, default=16)
    ap.add_argument("--algo", default="sha256")
    args = ap.parse_args()
    bs, algo = args.block_size, args.algo
    reqs = workload(args.tokens)
    n_tokens = sum(map(len, reqs))
    print(f"workload: {len(reqs)} requests, {n_tokens:,} tokens, block_size={bs}, hash_algo={algo}")

    from course_lib.hashing import block_hashes
    from course_lib.simulator import PrefixCacheSimulator

    # vLLM's own hashing (imported after course_lib: its import alone takes seconds).
    from course_lib.engine import prepare_environment

    prepare_environment()
    from vllm import SamplingParams
    from vllm.utils.hashing import get_hash_fn_by_name
    from vllm.v1.core import kv_cache_utils as kv
    from vllm.v1.request import Request

    fn = get_hash_fn_by_name(algo)
    kv.init_none_hash(fn)
    none = kv.NONE_HASH

    t_ours, ours = timed(lambda: [block_hashes(r, bs, algo, none_hash=none) for r in reqs])

    def vllm_hash_block_tokens():
        res = []
        for r in reqs:
            parent, hs = None, []
            for s in range(0, len(r) - bs + 1, bs):
                parent = kv.hash_block_tokens(fn, parent, r[s : s + bs])
                hs.append(parent)
            res.append(hs)
        return res

    t_vllm_fn, theirs = timed(vllm_hash_block_tokens)
    assert theirs == ours, "hashes differ from vLLM's"
    hasher = kv.get_request_block_hasher(bs, fn)
    sp = SamplingParams(max_tokens=1)
    t_vllm_req, reqs_v = timed(lambda: [list(Request(str(i), r, sp, None, block_hasher=hasher).block_hashes) for i, r in enumerate(reqs)])
    assert reqs_v == ours, "hashes differ from vLLM's Request hasher"

    n_blocks = 1 + 2 * max(len(r) for r in reqs) // bs * 8  # room for a few requests' worth: evictions happen
    sim = PrefixCacheSimulator(n_blocks, bs, algo, none_hash=none)
    t_sim, _ = timed(lambda: [sim.process(r) for r in reqs])

    print(f"course_lib.hashing.block_hashes        : {t_ours:7.3f} s")
    print(f"vLLM hash_block_tokens, block by block : {t_vllm_fn:7.3f} s   ratio vLLM/course = {t_vllm_fn / t_ours:5.2f}")
    print(f"vLLM Request + request block hasher    : {t_vllm_req:7.3f} s   ratio vLLM/course = {t_vllm_req / t_ours:5.2f}")
    print(f"PrefixCacheSimulator, whole workload   : {t_sim:7.3f} s   ({n_tokens / t_sim / 1e6:.2f} M tokens/s; "
          f"num_gpu_blocks={n_blocks}, hit rate {sim.stats.hit_rate:.1%}) target < 2 s: "
          f"{'met' if t_sim < 2 else 'NOT met'}")


if __name__ == "__main__":
    main()
