"""The ``course`` command: environment check, model build, benchmarks, quizzes and grading.

Each subcommand lives beside the module it uses; this file only wires them up.
Add a subcommand by writing ``def _add_NAME(sub)`` that registers a parser
with ``set_defaults(func=...)`` and listing it in ``_REGISTRARS``.
"""

from __future__ import annotations

import argparse
import sys
from typing import Callable, Sequence


def _cmd_check(args: argparse.Namespace) -> int:
    from course_lib.check import check_env

    return 0 if check_env() else 1


def _add_check(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("check", help="check that this machine can run the course ([OK]/[FAIL] lines)")
    p.set_defaults(func=_cmd_check)


def _cmd_build_model(args: argparse.Namespace) -> int:
    from course_lib.model import ensure_model

    info = ensure_model()
    print(f"{info.path}  ({info.num_parameters / 1e6:.1f}M parameters, weights sha256 {info.weights_sha256[:16]}...)")
    return 0


def _add_build_model(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "build-model", help="download and convert the course model, SmolLM2-135M-Instruct, now (otherwise on first use)"
    )
    p.set_defaults(func=_cmd_build_model)


_REGISTRARS: list[Callable[[argparse._SubParsersAction], None]] = [_add_check, _add_build_model]


def _add_quiz(sub: argparse._SubParsersAction) -> None:
    def run(args: argparse.Namespace) -> int:
        from course_lib import quiz

        return quiz.cli_quiz(args)

    p = sub.add_parser("quiz", help="quiz tools for instructors (export-student, validate)")
    qsub = p.add_subparsers(dest="quiz_command", required=True)
    e = qsub.add_parser("export-student", help="write a student copy of a quiz: no answers, no feedback (exam mode)")
    e.add_argument("quiz", help="quiz id (e.g. module2) or path to a quiz .yaml")
    e.add_argument("--out", required=True, help="where to write the student copy (.yaml)")
    e.add_argument("--force", action="store_true", help="overwrite --out if it exists")
    e.set_defaults(func=run)
    v = qsub.add_parser("validate", help="check quiz files against the schema (default: every quiz in quizzes/)")
    v.add_argument("quizzes", nargs="*", help="quiz ids (looked up as by course grade; the file used is printed) or paths")
    v.set_defaults(func=run)
    s = qsub.add_parser("sync-package", help="rewrite the keyless quiz copies shipped in the package from quizzes/")
    s.set_defaults(func=run)


def _add_grade(sub: argparse._SubParsersAction) -> None:
    def run(args: argparse.Namespace) -> int:
        from course_lib import quiz

        return quiz.cli_grade(args)

    p = sub.add_parser("grade", help="grade submission files into a gradebook CSV")
    p.add_argument(
        "--quiz", required=True,
        help="quiz id (e.g. module2: looked up in the current course project's quizzes/ first; the file used is printed) "
        "or path to the instructor's quiz .yaml",
    )  # fmt: skip
    p.add_argument(
        "--out", required=True,
        help="gradebook CSV to write: never one of the submissions nor a .json, never overwritten without --force",
    )  # fmt: skip
    p.add_argument("--force", action="store_true", help="overwrite an existing gradebook")
    p.add_argument("submissions", nargs="+", metavar="SUBMISSION", help="submission .json files")
    p.set_defaults(func=run)


def _add_export_student(sub: argparse._SubParsersAction) -> None:
    def run(args: argparse.Namespace) -> int:
        from course_lib import notebook_export

        return notebook_export.cli_export_student(args)

    p = sub.add_parser(
        "export-student", help="write learner notebooks (solutions replaced, exercise outputs cleared) or a student bundle"
    )
    p.add_argument("notebooks", nargs="?", default="notebooks", help="folder of instructor notebooks (default notebooks/)")
    p.add_argument("outdir", nargs="?", default="learner", help="folder for the learner notebooks (default learner/)")
    mode = p.add_mutually_exclusive_group()
    mode.add_argument("--force", action="store_true", help="overwrite notebooks already in OUTDIR")
    mode.add_argument(
        "--update", action="store_true", help="add only new notebooks; say which existing ones differ (never overwrites)"
    )
    p.add_argument("--bundle", metavar="DIR", help="write a student bundle to DIR: notebooks, keyless quizzes, README")
    p.add_argument(
        "--quizzes",
        metavar="QUIZDIR",
        help="also write student copies of the quizzes in QUIZDIR to OUTDIR/quizzes (exam mode via COURSE_QUIZ_DIR)",
    )
    p.set_defaults(func=run)


def _add_nbgrader_source(sub: argparse._SubParsersAction) -> None:
    def run(args: argparse.Namespace) -> int:
        from course_lib import nbgrader_source

        return nbgrader_source.cli_nbgrader_source(args)

    p = sub.add_parser("nbgrader-source", help="write an nbgrader assignment (source/NAME/) made from the solution markers")
    p.add_argument("course_dir", help="the nbgrader course directory (created if missing)")
    p.add_argument("--notebooks", default="notebooks", help="folder of instructor notebooks (default notebooks/)")
    p.add_argument("--assignment", default="prefix-caching", help="assignment name (default prefix-caching)")
    p.add_argument("--points", type=float, default=1, help="points per autograded exercise (default 1)")
    p.add_argument("--force", action="store_true", help="overwrite notebooks already in source/NAME/")
    p.set_defaults(func=run)


_REGISTRARS += [_add_quiz, _add_grade, _add_export_student, _add_nbgrader_source]


def _bench_group(sub: argparse._SubParsersAction) -> argparse._SubParsersAction:
    """The ``course bench`` group, created by the first benchmark registrar; later ones add to it."""
    group = getattr(sub, "_course_bench", None)
    if group is None:
        p = sub.add_parser("bench", help="run a benchmark: measured numbers and ratios, side by side")
        group = p.add_subparsers(dest="benchmark", required=True)
        sub._course_bench = group  # type: ignore[attr-defined]
    return group


def _add_bench_system_prompt(sub: argparse._SubParsersAction) -> None:
    def run(args: argparse.Namespace) -> int:
        from course_lib.bench import bench_system_prompt

        print(bench_system_prompt(args.repeats, args.target_tokens))
        return 0

    p = _bench_group(sub).add_parser(
        "system-prompt", help="a 1000-token system prompt shared by 3 questions, caching off vs on (TTFT speedup)"
    )
    p.add_argument("--repeats", type=int, default=5, help="repetitions; medians are reported (default 5)")
    p.add_argument("--target-tokens", type=int, default=1000, help="system prompt length in tokens (default 1000)")
    p.set_defaults(func=run)


_REGISTRARS += [_add_bench_system_prompt]


def _add_workloads(sub: argparse._SubParsersAction) -> None:
    def run(args: argparse.Namespace) -> int:
        from course_lib.workloads import run_cli

        return run_cli(args.kind, args.cache_tokens, args.block_sizes, args.seed)

    p = sub.add_parser("workloads", help="simulated hit rates of synthetic chat or RAG traffic (notebooks 04, 05)")
    p.add_argument("kind", choices=["chat", "rag"])
    p.add_argument("--cache-tokens", type=int, nargs="+", default=[4096, 16384, 65536], help="KV cache sizes in tokens")
    p.add_argument("--block-sizes", type=int, nargs="+", default=[32], help="block sizes in tokens")
    p.add_argument("--seed", type=int, default=0, help="random seed of the trace generator (default 0, as in the notebooks)")
    p.set_defaults(func=run)


_REGISTRARS += [_add_workloads]


def _add_fleet(sub: argparse._SubParsersAction) -> None:
    def run(args: argparse.Namespace) -> int:
        from course_lib.fleet import run_cli

        return run_cli(args.trace, args.replicas, args.capacity_tokens, args.policy, args.json, args.concurrency, args.seed,
                       args.tier2_capacity_tokens)

    from course_lib.fleet import POLICIES

    p = sub.add_parser("fleet", help="replay a Mooncake trace through N simulated replicas and a routing policy (notebook 07)")
    p.add_argument("--trace", default="conversation", help="conversation, synthetic, or the path of a JSONL trace")
    p.add_argument("--replicas", type=int, default=4, help="number of replicas (default 4)")
    p.add_argument("--capacity-tokens", type=int, default=3_000_000, help="prefix-cache capacity per replica in tokens")
    p.add_argument("--policy", choices=POLICIES, default="cache_aware")
    p.add_argument("--concurrency", type=int, default=1, help="requests in flight the load-aware policies see")
    p.add_argument("--seed", type=int, default=0, help="seed of the random policy")
    p.add_argument("--tier2-capacity-tokens", type=int, default=0,
                   help="a second tier shared by every replica, in tokens (LRU; default 0: none)")
    p.add_argument("--json", action="store_true", help="print one JSON object instead of a table")
    p.set_defaults(func=run)


_REGISTRARS += [_add_fleet]


def _add_diagnose(sub: argparse._SubParsersAction) -> None:
    from course_lib.diagnose import add_parser  # light: no vLLM, no tokenizer until a command runs

    add_parser(sub)


_REGISTRARS += [_add_diagnose]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="course", description="Prefix Caching with vLLM: course tools")
    sub = parser.add_subparsers(dest="command", required=True)
    for register in _REGISTRARS:
        register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from course_lib.engine import CourseError

    try:
        return int(args.func(args) or 0)
    except CourseError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
