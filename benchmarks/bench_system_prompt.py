"""Benchmark: a 1000-token system prompt shared by 3 questions, prefix caching off vs on.

Run: ``.venv/bin/python benchmarks/bench_system_prompt.py [--repeats 5] [--target-tokens 1000]``
(or ``course bench system-prompt``).

Prints the per-request table (prompt, cached, prefilled tokens; median TTFT off
and on), the measured TTFT speedup (median over repetitions of sum-off / sum-on)
next to the ideal bound set by token counts (total prompt tokens / total
prefilled tokens with caching on) and the numbers of a claim that circulates
("3000 vs 1100 tokens prefilled", "about 3x faster TTFT"), then the cost of
caching at a 0% hit rate. The code lives in
``course_lib.bench.bench_system_prompt``; this script is its command line.
"""

from __future__ import annotations

import argparse
import sys


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5, help="repetitions; medians are reported (default 5)")
    parser.add_argument("--target-tokens", type=int, default=1000, help="system prompt length in tokens (default 1000)")
    args = parser.parse_args(argv)
    from course_lib.bench import bench_system_prompt

    print(bench_system_prompt(args.repeats, args.target_tokens))
    return 0


if __name__ == "__main__":
    sys.exit(main())
