"""Grading a folder of submission files into a gradebook CSV (``course grade``).

Scoring is ``judging``'s (``quizzes/README.md`` states it); reading one submission is
``submissions``'. This module grades a folder of them.

Grading never stops on a bad file, and a class drop folder that every student can
write to cannot hang it, exhaust its memory or make it write anywhere but ``--out``
(``safe_io``): only regular files are read (a FIFO or ``/dev/zero`` is refused
without being opened for long), at most ``MAX_SUBMISSION_BYTES`` of them; a symlink
out of the submissions' folder is refused; one file given twice (a glob and a path)
counts once; the gradebook goes through an exclusive, randomly named temporary file
renamed over ``--out``, and ``--out`` is never one of the submissions nor a ``.json``.

A file is rejected whole, with its reason, when it cannot be read as a submission:
not UTF-8 or JSON, a key twice in one object (JSON keeps the last one, so a second
``"student"`` would grade it under another name), numbers out of range such as
``1e400`` or a 5000-digit integer, a lone surrogate, nesting deeper than a submission
has, another quiz, or no usable student name. Otherwise it is graded, and what could
not be used is named (``partial``): an unexpected key or question id is ignored, a
malformed answer scores 0. A numeric answer written as a string counts when the
string is a number in JSON's own syntax (``"32"``, ``" 0.75 "``; not ``"0,75"`` or
``"32 tokens"``), and the report says so.

Student names (``names``) are normalised with NFKC, with Unicode's default-ignorable
and format characters removed and spaces collapsed, and compared case-folded, so
``Ada``, ``ａｄａ`` and ``a\\u200bda`` are one student: two files for one student are a
conflict, reported, never two rows. Names with direction controls or nothing visible
are refused; every change made to a name is reported. File and student names are
escaped in every message (``safe_io.shown``). Cells are neutralised against spreadsheet
formula injection (OWASP: a leading ``= + - @ TAB CR`` gets a ``'`` prefix).
"""

from __future__ import annotations

import csv
import glob
import io
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

from course_lib.quiz.judging import Judgement, answer_problem, judge, letter, short  # noqa: F401 (re-exported)
from course_lib.quiz.names import MAX_NAME_CHARS, mixed_scripts, name_changes, name_key, name_problem, normalise_name  # noqa: F401
from course_lib.quiz.safe_io import same_file_key, shown, write_atomic
from course_lib.quiz.schema import Quiz, QuizError, load_quiz, number
from course_lib.quiz.submissions import (  # noqa: F401 (re-exported)
    MAX_DEPTH,
    MAX_INT_DIGITS,
    MAX_SUBMISSION_BYTES,
    CheckedSubmission,
    SubmissionError,
    check_submission,
    number_from_string,
    read_submission,
    score_submission,
    submission_problems,
)

#: A gradebook is a CSV file: an --out with one of these suffixes is a submission or a quiz given by mistake.
NOT_A_GRADEBOOK = (".json", ".yaml", ".yml", ".ipynb", ".py")
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


# ---------------------------------------------------------------------- the gradebook


def csv_safe(cell: Any) -> Any:
    """OWASP's rule against CSV formula injection: a text cell starting with ``= + - @ TAB CR`` gets a ``'``."""
    if isinstance(cell, str) and cell.startswith(_FORMULA_START):
        return "'" + cell
    return cell


@dataclass
class GradeRow:
    student: str
    scores: dict[str, float]
    source: Path

    @property
    def total(self) -> float:
        return float(sum(self.scores.values()))


@dataclass
class Gradebook:
    """The result of grading: one row per student, and one report line per thing the instructor must know.

    ``problems``: files (or conflicts) not graded at all; ``partial``: files graded except for the
    parts named; ``warnings``: graded, with something worth a look (a changed quiz version, a name
    that was normalised, the same file given twice).
    """

    quiz: Quiz
    rows: list[GradeRow]
    problems: list[str]
    warnings: list[str] = field(default_factory=list)
    partial: list[str] = field(default_factory=list)

    def to_csv(self) -> str:
        buf = io.StringIO()
        writer = csv.writer(buf, lineterminator="\n")
        ids = [q.id for q in self.quiz.questions]
        writer.writerow([csv_safe(c) for c in ["student", *ids, "total", "max"]])
        for row in self.rows:
            cells = [row.student, *(number(row.scores[i]) for i in ids), number(row.total), number(self.quiz.max_points)]
            writer.writerow([csv_safe(c) for c in cells])
        return buf.getvalue()


def expand_submissions(patterns: Iterable[str | os.PathLike[str]]) -> tuple[list[Path], list[str], list[str]]:
    """Paths of the submission files: patterns a shell left unexpanded (``subs/*.json``) are expanded
    here, folders give their ``*.json``. One file reached by two paths (a glob and an absolute path,
    a hard link, a symlink beside it) counts once. Returns the files, one line per pattern that
    matched nothing, and one line per file given more than once."""
    found_all: list[Path] = []
    unmatched: list[str] = []
    for item in patterns:
        text = os.fspath(item)
        path = Path(text)
        if path.is_dir():
            found = sorted(path.glob("*.json"))
        elif os.path.lexists(path) or not glob.has_magic(text):
            found = [path]
        else:
            found = sorted(Path(p) for p in glob.glob(text))
        if not found:
            unmatched.append(text)
        found_all.extend(found)
    by_file: dict[Any, list[Path]] = {}
    for path in found_all:
        by_file.setdefault(same_file_key(path), []).append(path)
    files, duplicates = [], []
    for paths in by_file.values():
        unique = sorted(set(paths), key=lambda p: (p.is_symlink(), len(str(p)), str(p)))
        files.append(unique[0])
        if len(unique) > 1:
            others = ", ".join(shown(p) for p in unique[1:])
            duplicates.append(f"{shown(unique[0])}: the same file is also given as {others}; graded once")
    return sorted(files, key=str), unmatched, duplicates


def grade(quiz_path_or_id: str | os.PathLike[str] | Quiz, submissions: Iterable[str | os.PathLike[str]]) -> Gradebook:
    """Grade submission files against a quiz's key (see the module docstring for what is rejected).

    Rows are sorted by the students' comparison keys, so the gradebook does not
    depend on the order of the files. Every file and student name in the report is
    escaped (``safe_io.shown``).
    """
    quiz = load_quiz(quiz_path_or_id)
    if not quiz.has_key:
        raise QuizError(f"quiz {quiz.id!r} has no answer key (is it a student copy?); grade with the instructor's file")
    files, unmatched, duplicates = expand_submissions(submissions)
    problems = [f"{shown(pattern)}: no submissions matched" for pattern in unmatched]
    warnings: list[str] = list(duplicates)
    partial: list[str] = []
    by_student: dict[str, list[tuple[Path, str, dict[str, float]]]] = {}
    for path in files:
        where = shown(path)
        try:
            data = read_submission(path, folder=path.parent)
        except SubmissionError as exc:
            problems.append(f"{where}: {exc}")
            continue
        checked = check_submission(data, quiz)
        if checked.problems:
            problems.append(f"{where}: " + "; ".join(checked.problems))
            continue
        if checked.skipped:
            partial.append(f"{where}: graded, except: " + "; ".join(checked.skipped))
        warnings.extend(f"{where}: {note}" for note in checked.notes)
        version = data.get("quiz_version")
        if version is not None and version != quiz.version:  # files from before versions carry none
            warnings.append(
                f"{where}: answered version {short(version)} of {quiz.id!r}, but the quiz is now version "
                f"{quiz.version}: check that the questions and choices it answered have not changed"
            )
        raw = data["student"]
        name = normalise_name(raw)
        change = name_changes(raw)
        if change:
            warnings.append(f"{where}: student name {short(raw)} recorded as {name!r} ({change})")
        scripts = mixed_scripts(name)
        if scripts:
            warnings.append(f"{where}: student name {name!r} mixes {' and '.join(scripts)} letters, which look alike: "
                            "check it is not another student's name")  # fmt: skip
        scores = {q.id: judge(q, checked.answers.get(q.id)).earned for q in quiz.questions}
        by_student.setdefault(name_key(name), []).append((path, name, scores))
    rows: list[GradeRow] = []
    for key in sorted(by_student):
        entries = by_student[key]
        if len(entries) > 1:
            listed = ", ".join(f"{shown(p)} ({n!r})" for p, n, _ in entries)
            problems.append(f"conflict: {len(entries)} files are for one student {entries[0][1]!r}: {listed}; none graded")
            continue
        path, name, scores = entries[0]
        rows.append(GradeRow(name, scores, path))
    return Gradebook(quiz, rows, problems, warnings, partial)


def check_out_path(
    out: str | os.PathLike[str], *, force: bool = False, inputs: Iterable[str | os.PathLike[str]] = ()
) -> Path:
    """The gradebook path, or a ``QuizError`` saying what is wrong with it (before any grading).

    ``--out`` is never one of the ``inputs`` (compared as resolved files: a shell that expanded
    ``--out subs/*.json`` hands it the first submission), and never a name that looks like a
    submission or a quiz (``NOT_A_GRADEBOOK``): ``--force`` does not override either rule.
    """
    target = Path(out)
    if target.suffix.lower() in NOT_A_GRADEBOOK:
        raise QuizError(
            f"--out {shown(target)} looks like a submission or a quiz ({target.suffix}), not a gradebook; "
            "the gradebook is a CSV file: give a .csv name such as grades.csv (--force does not change this)"
        )
    if target.is_dir():
        raise QuizError(f"--out {shown(target)} is a folder; give a file name, e.g. {shown(target / 'grades.csv')}")
    parent = target.parent if str(target.parent) else Path(".")
    if not parent.is_dir():
        what = "is a file, not a folder" if parent.exists() else "does not exist"
        raise QuizError(f"--out {shown(target)}: the folder {shown(parent)} {what}; create it first or choose another path")
    if not os.access(parent, os.W_OK):
        raise QuizError(f"--out {shown(target)}: the folder {shown(parent)} is not writable")
    resolved = os.path.join(os.path.realpath(parent), target.name)
    mine = same_file_key(target) if os.path.lexists(target) else None
    for item in inputs:
        if os.path.realpath(item) == resolved or (mine is not None and same_file_key(Path(item)) == mine):
            raise QuizError(
                f"--out {shown(target)} is also one of the submissions to grade; writing the gradebook would destroy it "
                "(did the shell expand a pattern after --out?). Give the gradebook its own name, e.g. --out grades.csv"
            )
    if os.path.lexists(target) and not force:
        raise QuizError(f"{shown(target)} already exists; pass --force to overwrite the gradebook")
    return target


def write_gradebook(
    book: Gradebook, out: str | os.PathLike[str], *, force: bool = False, inputs: Iterable[str | os.PathLike[str]] = ()
) -> Path:
    """Write the gradebook CSV atomically (``safe_io.write_atomic``); an existing file is kept unless ``force``."""
    target = check_out_path(out, force=force, inputs=inputs)
    try:
        write_atomic(target, book.to_csv())
    except OSError as exc:
        raise QuizError(f"cannot write {shown(target)}: {exc.strerror or exc}") from None
    return target
