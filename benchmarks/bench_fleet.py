"""Fleet replay speed: the 12,031-request Mooncake conversation trace through each policy.

The issue's target: one replay under 5 s per policy on one core. Prints the time per
policy (median of --repeats) next to that target, and the replay rate in requests/s.

    .venv/bin/python benchmarks/bench_fleet.py [--replicas 8] [--capacity-tokens 3000000]
"""

from __future__ import annotations

import argparse
import statistics
import time

from course_lib.fleet import POLICIES, simulate_fleet
from course_lib.traces import load_trace

TARGET_S = 5.0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--replicas", type=int, default=8)
    ap.add_argument("--capacity-tokens", type=int, default=3_000_000)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    t0 = time.perf_counter()
    trace = load_trace("conversation")
    print(f"loaded {len(trace)} requests in {time.perf_counter() - t0:.2f} s")
    print(f"{'policy':<16} {'replay s':>9} {'target s':>9} {'ratio':>6} {'req/s':>9} {'hit rate':>9}")
    for policy in POLICIES:
        times = []
        for _ in range(args.repeats):
            t = time.perf_counter()
            result = simulate_fleet(trace, args.replicas, args.capacity_tokens, policy)
            times.append(time.perf_counter() - t)
        s = statistics.median(times)
        print(f"{policy:<16} {s:>9.2f} {TARGET_S:>9.1f} {s / TARGET_S:>6.2f} {len(trace) / s:>9,.0f} {result.hit_rate:>9.3f}")


if __name__ == "__main__":
    main()
