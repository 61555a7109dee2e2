"""Reading and checking one submission file (``course grade`` reads a folder every student can write to).

A submission is JSON: ``{"quiz": "module2", "quiz_version": "…", "student": "ada",
"answers": {"q1": 0, "q2": 1024, "q3": "sha256"}}``; ``single`` is answered by a
0-based choice index, ``multiple`` by a list of indices, ``numeric`` by a number,
``text`` by a string.

``read_submission`` rejects a file whole, with its reason, when it cannot be read as
JSON safely: not a regular file (``safe_io``), larger than ``MAX_SUBMISSION_BYTES``,
not UTF-8 or JSON, a key twice in one object, numbers out of range, a lone surrogate,
nesting deeper than a submission has. ``check_submission`` then splits a parsed
submission into what can be graded and what cannot (``CheckedSubmission``).
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from course_lib.quiz.judging import answer_problem, judge, short
from course_lib.quiz.names import name_problem
from course_lib.quiz.safe_io import FileRefused, read_regular_file, shown
from course_lib.quiz.schema import Quiz, QuizError

MAX_SUBMISSION_BYTES = 1_000_000
MAX_DEPTH = 8  # a submission is {answers: {qid: [index, ...]}}: depth 3; anything far deeper is hostile
MAX_INT_DIGITS = 30


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
        problems.append(f"is a submission for quiz {short(data['quiz'])}, not {quiz.id!r}")
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
        checked.skipped.append(f"unexpected key(s) {', '.join(short(k) for k in extra[:5])} ignored")
    known = {q.id for q in quiz.questions}
    unknown = sorted(str(k) for k in answers if k not in known)
    if unknown:
        checked.skipped.append(f"answers to unknown question id(s) {', '.join(short(u) for u in unknown[:5])} ignored "
                               f"(quiz {quiz.id!r} has {', '.join(sorted(known))})")  # fmt: skip
    for q in quiz.questions:
        if q.id not in answers:
            continue
        answer = answers[q.id]
        if q.type == "numeric" and isinstance(answer, str):
            value = number_from_string(answer)
            if value is not None:
                checked.notes.append(f"answer to {q.id!r} written as the string {short(answer)}, read as the number {value}")
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
