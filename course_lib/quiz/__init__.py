"""Quizzes: the end of every notebook (``quiz.show("02_block_hashing")``) and ``quizzes/module2.yaml``.

One concept per module:

- ``schema``: quiz files, where quiz ids are found, their validation (every problem in one
  run, with line numbers), versions and student copies without keys; ``yaml_file`` reads
  their YAML with line numbers and refuses duplicate keys, aliases and YAML 1.1 numbers;
- ``widget``: the ipywidgets quiz (practice mode with a key, exam mode without);
- ``judging``: the scoring rule for one answer;
- ``submissions``: reading and checking one submission file;
- ``grading``: ``course grade``, a folder of submissions into a gradebook, safe on a
  folder every student can write to (``safe_io``: files; ``names``: student names).

The scoring rule is in ``grading``'s docstring and in ``quizzes/README.md``.
This module re-exports the public names, so ``from course_lib import quiz`` is all
a notebook or a script needs, and holds the ``course quiz`` / ``course grade``
command-line entry points.
"""

from __future__ import annotations

import argparse
import sys

from course_lib.quiz.grading import (
    CheckedSubmission,
    Gradebook,
    GradeRow,
    Judgement,
    SubmissionError,
    answer_problem,
    check_out_path,
    check_submission,
    csv_safe,
    expand_submissions,
    grade,
    judge,
    number_from_string,
    read_submission,
    score_submission,
    submission_problems,
    write_gradebook,
)
from course_lib.quiz.names import name_changes, name_key, name_problem, normalise_name
from course_lib.quiz.safe_io import shown
from course_lib.quiz.schema import (
    KEY_FIELDS,
    PACKAGED_QUIZ_DIR,
    QUESTION_TYPES,
    QUIZ_DIR_ENV,
    SCHEMA_PATH,
    Choice,
    Question,
    Quiz,
    QuizError,
    all_quiz_paths,
    check_quiz_file,
    checkout_quiz_dir,
    content_version,
    export_student,
    load_quiz,
    locate,
    parse_quiz_text,
    project_root,
    quiz_dir,
    quiz_dir_origin,
    quiz_from_data,
    read_quiz_data,
    resolve,
    schema,
    student_copy_data,
    student_copy_text,
    validate_quiz_data,
)
from course_lib.quiz.schema import number as _number
from course_lib.quiz.widget import QuizView, build, parse_number, show

__all__ = [
    "Choice", "Gradebook", "GradeRow", "Judgement", "KEY_FIELDS", "PACKAGED_QUIZ_DIR", "QUESTION_TYPES",
    "QUIZ_DIR_ENV", "Question", "Quiz", "QuizError", "QuizView", "SCHEMA_PATH", "SubmissionError",
    "all_quiz_paths", "answer_problem", "build", "check_out_path", "check_quiz_file", "check_submission",
    "CheckedSubmission", "checkout_quiz_dir", "content_version", "csv_safe", "expand_submissions", "export_student",
    "grade", "judge", "load_quiz", "locate", "name_changes", "name_key", "name_problem", "normalise_name",
    "number_from_string", "parse_number", "parse_quiz_text", "project_root", "quiz_dir", "quiz_dir_origin",
    "quiz_from_data", "read_quiz_data", "read_submission", "resolve", "schema", "score_submission", "show", "shown",
    "student_copy_data", "student_copy_text", "submission_problems", "sync_packaged_quizzes", "validate_quiz_data",
    "write_gradebook",
]  # fmt: skip


def sync_packaged_quizzes(source_dir: "str | None" = None) -> list[str]:
    """Rewrite ``course_lib/data/quizzes/`` (shipped in the wheel) as the keyless copies of ``quizzes/``.

    Returns the names written or removed. ``tests/test_quiz.py`` fails while the
    packaged copies differ from what this would write.
    """
    from pathlib import Path

    # The packaged copies belong to the checkout the package runs from: sync from its quizzes/,
    # whatever the current directory (another copy of the course has its own package data).
    src = Path(source_dir) if source_dir else (checkout_quiz_dir() or quiz_dir())
    if src.resolve() == PACKAGED_QUIZ_DIR.resolve():
        raise QuizError(f"{src} is the packaged copy itself; run this from a checkout with quizzes/")
    quizzes = [load_quiz(p) for p in all_quiz_paths(src)]
    if any(not q.has_key for q in quizzes):
        raise QuizError(f"{src} holds student copies; sync from the instructors' keyed quizzes")
    PACKAGED_QUIZ_DIR.mkdir(parents=True, exist_ok=True)
    changed = []
    wanted = {f"{q.id}.yaml": student_copy_text(q) for q in quizzes}
    for name, text in wanted.items():
        target = PACKAGED_QUIZ_DIR / name
        if not target.exists() or target.read_text(encoding="utf-8") != text:
            target.write_text(text, encoding="utf-8")
            changed.append(name)
    for stale in PACKAGED_QUIZ_DIR.glob("*.yaml"):
        if stale.name not in wanted:
            stale.unlink()
            changed.append(f"{stale.name} (removed)")
    return changed


# ---------------------------------------------------------------------- command line


def cli_quiz(args: argparse.Namespace) -> int:
    """``course quiz export-student QUIZ --out PATH``, ``course quiz validate [QUIZ...]``, ``course quiz sync-package``."""
    if args.quiz_command == "export-student":
        path, origin = locate(args.quiz)
        target = export_student(path, args.out, force=args.force)
        print(f"{target}: student copy of {load_quiz(path).id!r} from {path} ({origin}; no answer key, exam mode)")
        return 0
    if args.quiz_command == "sync-package":
        source = checkout_quiz_dir() or quiz_dir()
        changed = sync_packaged_quizzes(str(source))
        print(f"{PACKAGED_QUIZ_DIR} (from {source}): " + (", ".join(changed) + " updated" if changed else "already up to date"))
        return 0
    located = [locate(q) for q in args.quizzes]
    for (path, origin), given in zip(located, args.quizzes):
        if origin != "the file given":
            print(f"quiz {shown(given)}: {shown(path)} ({origin})")
    paths = [p for p, _ in located]
    if not paths:
        base, origin = quiz_dir_origin()
        print(f"quizzes from {base} ({origin})")
        paths = all_quiz_paths(base)
        if not paths:
            raise QuizError(f"no quiz files in {base}")
    status = 0
    for path in paths:
        problems = check_quiz_file(path)
        if problems:
            print(f"[FAIL] {shown(path)}: {len(problems)} problem(s)")
            for p in problems:
                print(f"  {shown(path)}:{p[5:] if p.startswith('line ') else ' ' + p}")
            status = 1
            continue
        quiz = load_quiz(path)
        kind = "student copy" if quiz.student_copy else "with key"
        print(f"[OK] {shown(path)}: {quiz.id!r}, {len(quiz.questions)} questions, {_number(quiz.max_points)} points "
              f"({kind}, version {quiz.version})")  # fmt: skip
    return status


def cli_grade(args: argparse.Namespace) -> int:
    """``course grade --quiz QUIZ --out grades.csv [--force] SUBMISSION...``.

    Exit status: 0 every submission graded in full; 1 graded, but some files were
    rejected or graded only in part (each named on stderr with its reason); 2 nothing
    graded (usage error, unreadable key, no submission matched or none gradable), and
    no gradebook is written. ``--out`` is checked against the submissions before
    anything is graded.
    """
    path, origin = locate(args.quiz)
    files, _, _ = expand_submissions(args.submissions)
    out = check_out_path(args.out, force=args.force, inputs=files)
    print(f"quiz {shown(args.quiz)}: {shown(path)} ({origin})", file=sys.stderr)
    book = grade(path, args.submissions)
    for line in book.warnings:
        print(f"warning: {line}", file=sys.stderr)
    for line in book.partial:
        print(f"partly graded: {line}", file=sys.stderr)
    for line in book.problems:
        print(f"rejected: {line}", file=sys.stderr)
    if not book.rows:
        print(f"error: nothing graded on {book.quiz.id!r} ({len(book.problems)} problem(s) above); "
              f"{shown(out)} not written", file=sys.stderr)  # fmt: skip
        return 2
    write_gradebook(book, out, force=args.force, inputs=files)
    print(f"{shown(out)}: {len(book.rows)} student(s) graded on {book.quiz.id!r} (version {book.quiz.version}), "
          f"{len(book.partial)} graded in part, {len(book.problems)} file(s) or conflict(s) rejected")  # fmt: skip
    return 1 if book.problems or book.partial else 0
