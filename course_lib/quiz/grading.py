"""Judging answers and grading submission files into a gradebook CSV (``course grade``).

Scoring (``judge``):

- ``single``, ``numeric``, ``text``: all or nothing. A numeric answer is right when
  ``|given - answer| <= tolerance`` (absolute, default 0); a text answer when it
  equals one of ``accept`` ignoring case and surrounding whitespace.
- ``multiple``: partial credit, "right picks minus wrong picks": with C correct
  choices, a learner who ticks R of them and W wrong ones earns
  ``points * max(0, R - W) / C``. Ticking everything therefore earns nothing
  unless every choice is correct, and an unanswered question earns 0.
- A question missing from a submission is unanswered: 0 points, not an error.

A submission is JSON: ``{"quiz": "module2", "quiz_version": "…", "student": "ada",
"answers": {"q1": 0, "q2": 1024, "q3": "sha256"}}``; ``single`` is answered by a
0-based choice index, ``multiple`` by a list of indices, ``numeric`` by a number,
``text`` by a string.

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
import json
import math
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

from course_lib.quiz.names import MAX_NAME_CHARS, mixed_scripts, name_changes, name_key, name_problem, normalise_name  # noqa: F401
from course_lib.quiz.safe_io import FileRefused, read_regular_file, same_file_key, shown, write_atomic
from course_lib.quiz.schema import Question, Quiz, QuizError, load_quiz, number

MAX_SUBMISSION_BYTES = 1_000_000
MAX_DEPTH = 8  # a submission is {answers: {qid: [index, ...]}}: depth 3; anything far deeper is hostile
MAX_INT_DIGITS = 30
#: A gradebook is a CSV file: an --out with one of these suffixes is a submission or a quiz given by mistake.
NOT_A_GRADEBOOK = (".json", ".yaml", ".yml", ".ipynb", ".py")
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


# ---------------------------------------------------------------------- judging


@dataclass(frozen=True)
class Judgement:
    """The verdict on one answer: points earned and the feedback to show."""

    question: str
    earned: float
    points: float
    answered: bool
    feedback: tuple[str, ...] = ()

    @property
    def correct(self) -> bool:
        return self.answered and math.isclose(self.earned, self.points)


def letter(index: int) -> str:
    """Choices are shown and discussed as A, B, C...; submissions use 0-based indices."""
    return chr(ord("A") + index)


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def answer_problem(question: Question, answer: Any) -> str | None:
    """Why ``answer`` is not a well-formed answer to ``question`` (``None`` if it is)."""
    if answer is None:
        return None
    n = len(question.choices)
    if question.type == "single":
        if not _is_int(answer) or not 0 <= answer < n:
            return f"answer to {question.id!r} must be a choice index 0..{n - 1}, not {_short(answer)}"
    elif question.type == "multiple":
        if not isinstance(answer, list) or not all(_is_int(a) and 0 <= a < n for a in answer):
            return f"answer to {question.id!r} must be a list of choice indices 0..{n - 1}, not {_short(answer)}"
        if len(set(answer)) != len(answer):
            return f"answer to {question.id!r} lists a choice twice: {_short(answer)}"
    elif question.type == "numeric":
        if not (isinstance(answer, (int, float)) and not isinstance(answer, bool)) or not math.isfinite(answer):
            return f"answer to {question.id!r} must be a finite number, not {_short(answer)}"
    elif question.type == "text":
        if not isinstance(answer, str):
            return f"answer to {question.id!r} must be a string, not {_short(answer)}"
    return None


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _normalise_text(text: str) -> str:
    return text.strip().casefold()


def judge(question: Question, answer: Any) -> Judgement:
    """Score one answer (see the module docstring for the rules) and collect its feedback."""
    if not question.has_key:
        raise QuizError(f"question {question.id!r} has no answer key (a student copy cannot be graded)")
    problem = answer_problem(question, answer)
    if problem:
        raise QuizError(problem)
    unanswered = answer is None or answer == [] or (isinstance(answer, str) and not answer.strip())
    if unanswered:
        return Judgement(question.id, 0.0, question.points, False, ())
    notes: list[str] = []
    if question.type == "single":
        choice = question.choices[answer]
        earned = question.points if choice.correct else 0.0
        notes.append(f"{letter(answer)}: {choice.feedback}")
    elif question.type == "multiple":
        picked = set(answer)
        correct = {i for i, c in enumerate(question.choices) if c.correct}
        right, wrong = len(picked & correct), len(picked - correct)
        earned = question.points * max(0, right - wrong) / len(correct)
        for i, c in enumerate(question.choices):
            if i in picked or i in correct:
                mark = "✓" if (i in picked) == bool(c.correct) else "✗"
                state = "ticked" if i in picked else "not ticked"
                notes.append(f"{mark} {letter(i)} ({state}): {c.feedback}")
    elif question.type == "numeric":
        ok = abs(float(answer) - float(question.answer)) <= question.tolerance + 1e-12
        earned = question.points if ok else 0.0
    else:
        ok = _normalise_text(answer) in {_normalise_text(a) for a in question.accept}
        earned = question.points if ok else 0.0
    if question.feedback:
        notes.append(question.feedback)
    return Judgement(question.id, float(earned), question.points, True, tuple(n for n in notes if n))


# ---------------------------------------------------------------------- reading submissions


class SubmissionError(ValueError):
    """A submission file that cannot be graded; the message is the reason."""


def _parse_int(text: str) -> int:
    digits = text.lstrip("-")
    if len(digits) > MAX_INT_DIGITS:
        raise SubmissionError(f"an integer with {len(digits)} digits (more than {MAX_INT_DIGITS})")
    return int(text)


def _parse_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise SubmissionError(f"the number {text[:40]} is out of range (it reads as infinity)")
    return value


def _parse_constant(name: str) -> Any:
    raise SubmissionError(f"{name} is not a number a submission may contain")


def _check_tree(value: Any, depth: int = 0) -> None:
    """Reject structures deeper than a submission has and strings that cannot be written out."""
    if depth > MAX_DEPTH:
        raise SubmissionError(f"nested deeper than {MAX_DEPTH} levels")
    if isinstance(value, str):
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            raise SubmissionError("a string contains a lone surrogate (\\ud800-\\udfff), not valid Unicode") from None
    elif isinstance(value, dict):
        for k, v in value.items():
            _check_tree(k, depth + 1)
            _check_tree(v, depth + 1)
    elif isinstance(value, list):
        for v in value:
            _check_tree(v, depth + 1)


def _json_depth_exceeds(text: str, limit: int) -> bool:
    """Bracket depth outside strings, without recursion (a 100,000-deep file must not reach json)."""
    depth = 0
    in_string = escaped = False
    for ch in text:
        if in_string:
            if escaped:
                escaped = False
            elif ch == "\\":
                escaped = True
            elif ch == '"':
                in_string = False
        elif ch == '"':
            in_string = True
        elif ch in "[{":
            depth += 1
            if depth > limit:
                return True
        elif ch in "]}":
            depth -= 1
    return False


def _reject_duplicate_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    seen: dict[str, Any] = {}
    for key, value in pairs:
        if key in seen:
            raise SubmissionError(f"the key {shown(key)!r} appears twice in one object (JSON would silently keep the last one)")
        seen[key] = value
    return seen


def read_submission(path: Path, *, folder: Path | None = None) -> Any:
    """The parsed JSON of a submission file, or ``SubmissionError`` saying why it cannot be graded.

    Only a regular file is read, never more than ``MAX_SUBMISSION_BYTES`` (``safe_io``); with
    ``folder``, a symlink out of that folder is refused. A key that appears twice in an object
    rejects the file: JSON parsers keep the last one, so a second ``"student"`` would grade the
    file under another name.
    """
    try:
        raw = read_regular_file(path, MAX_SUBMISSION_BYTES, folder=folder)
    except FileRefused as exc:
        raise SubmissionError(str(exc)) from None
    try:
        text = raw.decode("utf-8-sig")  # a UTF-8 byte order mark (Windows editors) is fine
    except UnicodeDecodeError as exc:
        raise SubmissionError(f"not UTF-8 text (byte {exc.start})") from None
    if _json_depth_exceeds(text, MAX_DEPTH):
        raise SubmissionError(f"nested deeper than {MAX_DEPTH} levels")
    try:
        data = json.loads(
            text,
            parse_int=_parse_int,
            parse_float=_parse_float,
            parse_constant=_parse_constant,
            object_pairs_hook=_reject_duplicate_keys,
        )
    except SubmissionError:
        raise
    except json.JSONDecodeError as exc:
        raise SubmissionError(f"not valid JSON (line {exc.lineno}, column {exc.colno}: {exc.msg})") from None
    except (ValueError, RecursionError) as exc:
        raise SubmissionError(f"not valid JSON ({type(exc).__name__}: {str(exc)[:80]})") from None
    _check_tree(data)
    return data


_JSON_NUMBER = re.compile(r"-?(?:0|[1-9][0-9]*)(?:\.[0-9]+)?(?:[eE][-+]?[0-9]+)?")


def number_from_string(text: str) -> int | float | None:
    """A numeric answer written as a JSON string (``"32"``, ``"0.75"``): its number, or ``None``.

    The rule: after trimming spaces, the string must be a number in JSON's own syntax (no decimal
    comma, no thousands separator, no unit, no ``NaN``); it is then read as that number, and the
    report says so. Anything else is a malformed answer.
    """
    body = text.strip()
    if not _JSON_NUMBER.fullmatch(body):
        return None
    try:
        return _parse_float(body) if any(c in body for c in ".eE") else _parse_int(body)
    except SubmissionError:
        return None


@dataclass
class CheckedSubmission:
    """A parsed submission checked against a quiz.

    ``problems`` make the whole file ungradable (wrong quiz, no usable student name, no answers
    object). Otherwise the file is graded on ``answers`` (the well-formed ones); ``skipped`` names
    each part that was not graded and why (an unknown key or question id, a malformed answer:
    that question scores 0), and ``notes`` each change made while reading (a number written as a string).
    """

    problems: list[str]
    answers: dict[str, Any] = field(default_factory=dict)
    skipped: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def check_submission(data: Any, quiz: Quiz) -> CheckedSubmission:
    """Split a parsed submission into what can be graded and what cannot (see ``CheckedSubmission``)."""
    if not isinstance(data, dict):
        return CheckedSubmission(["not a JSON object with keys quiz, student, answers"])
    problems = []
    missing = [k for k in ("quiz", "student", "answers") if k not in data]
    if missing:
        problems.append(f"missing key(s) {', '.join(missing)}")
    if "quiz" in data and data["quiz"] != quiz.id:
        problems.append(f"is a submission for quiz {_short(data['quiz'])}, not {quiz.id!r}")
    if "student" in data:
        problem = name_problem(data["student"])
        if problem:
            problems.append(problem)
    answers = data.get("answers")
    if "answers" in data and not isinstance(answers, dict):
        problems.append("answers must be an object mapping question ids to answers")
    if problems:
        return CheckedSubmission(problems)
    checked = CheckedSubmission([])
    extra = sorted(str(k) for k in set(data) - {"quiz", "quiz_version", "student", "answers"})
    if extra:
        checked.skipped.append(f"unexpected key(s) {', '.join(_short(k) for k in extra[:5])} ignored")
    known = {q.id for q in quiz.questions}
    unknown = sorted(str(k) for k in answers if k not in known)
    if unknown:
        checked.skipped.append(f"answers to unknown question id(s) {', '.join(_short(u) for u in unknown[:5])} ignored "
                               f"(quiz {quiz.id!r} has {', '.join(sorted(known))})")  # fmt: skip
    for q in quiz.questions:
        if q.id not in answers:
            continue
        answer = answers[q.id]
        if q.type == "numeric" and isinstance(answer, str):
            value = number_from_string(answer)
            if value is not None:
                checked.notes.append(f"answer to {q.id!r} written as the string {_short(answer)}, read as the number {value}")
                answer = value
        problem = answer_problem(q, answer)
        if problem:
            checked.skipped.append(f"{problem}: scored 0")
        else:
            checked.answers[q.id] = answer
    return checked


def submission_problems(data: Any, quiz: Quiz) -> list[str]:
    """Everything wrong with a parsed submission against ``quiz`` (empty if it is fully well-formed)."""
    checked = check_submission(data, quiz)
    return checked.problems + checked.skipped


def score_submission(data: dict[str, Any], quiz: Quiz) -> dict[str, float]:
    """Points per question id (in quiz order); a malformed answer scores 0, a whole-file problem raises."""
    checked = check_submission(data, quiz)
    if checked.problems:
        raise QuizError("; ".join(checked.problems))
    return {q.id: judge(q, checked.answers.get(q.id)).earned for q in quiz.questions}


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
                f"{where}: answered version {_short(version)} of {quiz.id!r}, but the quiz is now version "
                f"{quiz.version}: check that the questions and choices it answered have not changed"
            )
        raw = data["student"]
        name = normalise_name(raw)
        change = name_changes(raw)
        if change:
            warnings.append(f"{where}: student name {_short(raw)} recorded as {name!r} ({change})")
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
