"""Benchmark: TTFT cold vs local prefix-cache hit vs second-tier hit, by prompt length, in one run.

Run: ``heavy .venv/bin/python benchmarks/bench_offload.py [--lengths 64 256 1024 3072] [--repeats 3]``

Two real vLLM CPU engines, one after the other in one process (vLLM keeps one KV connector
per process, so they cannot run side by side): first one without a connector runs every
prompt cold; then one with the course's KV connector (``course_lib.offload``, tier on
``/dev/shm``) runs each fresh prompt cold (and stores it), again (local hit) and after
``reset_prefix_cache()`` (tier hit), one right after the other
(``course_lib.offload.measure.ttft_by_tier``). It prints the median TTFTs, the ratios, and
the cost per 32-token block of computing vs loading, which is where the break-even lies.
"""

from __future__ import annotations

import argparse
import gc


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--lengths", type=int, nargs="+", default=[40, 64, 128, 256, 512, 1024, 2048, 3072])
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()

    from course_lib import offload
    from course_lib.engine import close_llm, make_llm
    from course_lib.offload.measure import cold_ttft, ttft_by_tier

    plain = make_llm()
    try:
        cold_ttft(plain, [256], 1, seed=99)  # warm-up: first-request costs
        cold_plain = cold_ttft(plain, args.lengths, args.repeats)
    finally:
        close_llm(plain)
        gc.collect()
    tier_dir = offload.new_tier_dir()
    tiered = make_llm(kv_transfer_config=offload.tier_config(tier_dir))
    try:
        ttft_by_tier(tiered, [256], 1, seed=99)
        rows = ttft_by_tier(tiered, args.lengths, args.repeats, cold_plain=cold_plain)
    finally:
        close_llm(tiered)
        gc.collect()
        offload.remove_tier_dir(tier_dir)

    print(f"median TTFT of {args.repeats} fresh prompts per length (ms); block_size 32")
    print(f"{'tokens':>7} {'cold, no tier':>14} {'cold + store':>13} {'local hit':>10} {'tier hit':>9} "
          f"{'cold/tier':>10} {'tier/local':>11} {'cached: local / tier':>21}")
    for r in rows:
        print(f"{r.prompt_tokens:>7} {r.cold_plain_s * 1e3:>14.1f} {r.cold_s * 1e3:>13.1f} {r.local_s * 1e3:>10.1f} "
              f"{r.tier_s * 1e3:>9.1f} {r.cold_plain_s / r.tier_s:>9.2f}x {r.tier_s / r.local_s:>10.2f}x "
              f"{r.cached['local']:>10} / {r.cached['tier']:<8}")
    big, small = rows[-1], rows[0]
    blocks = (big.cached["tier"] - small.cached["tier"]) / 32
    if blocks > 0:
        compute = (big.cold_plain_s - small.cold_plain_s) / blocks
        load = (big.tier_s - big.local_s - (small.tier_s - small.local_s)) / blocks
        print(f"per 32-token block ({small.prompt_tokens} -> {big.prompt_tokens} tokens): compute {compute * 1e3:.2f} ms, "
              f"load from the tier {load * 1e3:.2f} ms (ratio {compute / load:.1f}x)")
    worse = [r.prompt_tokens for r in rows if r.tier_s >= r.cold_plain_s]
    print("tier hit slower than computing at:", worse or "no length measured")


if __name__ == "__main__":
    main()
