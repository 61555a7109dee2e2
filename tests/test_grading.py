"""Tests of course_lib.quiz.grading (``course grade``): a table of hostile submission files, each
rejected with its reason while the good files are graded; name normalisation and conflicts; CSV
formula injection; the exit status (0 all graded, 1 some rejected, 2 nothing graded); --out errors."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import pytest

from course_lib import quiz as Q
from course_lib.cli import main
from test_quiz import perfect_answers

QUIZ = "06_metrics"


def _good(student: str) -> str:
    quiz = Q.load_quiz(QUIZ)
    return json.dumps({"quiz": QUIZ, "quiz_version": quiz.version, "student": student, "answers": perfect_answers(quiz)})


def _first_numeric() -> str:
    return next(q.id for q in Q.load_quiz(QUIZ).questions if q.type == "numeric")


# name -> (file bytes, a phrase the rejection must contain)
HOSTILE: dict[str, tuple[bytes, str]] = {
    "huge float 1e400": (
        f'{{"quiz": "{QUIZ}", "student": "h1", "answers": {{"{_first_numeric()}": 1e400}}}}'.encode(), "out of range"),
    "5000-digit integer": (
        f'{{"quiz": "{QUIZ}", "student": "h2", "answers": {{"{_first_numeric()}": {"9" * 5000}}}}}'.encode(), "digits"),
    "NaN literal": (f'{{"quiz": "{QUIZ}", "student": "h3", "answers": {{"{_first_numeric()}": NaN}}}}'.encode(), "NaN"),
    "lone surrogate in a string": (f'{{"quiz": "{QUIZ}", "student": "h\\ud800", "answers": {{}}}}'.encode(), "surrogate"),
    "deeply nested JSON": (("[" * 100_000 + "]" * 100_000).encode(), "nested deeper"),
    "moderately nested answer": (
        f'{{"quiz": "{QUIZ}", "student": "h5", "answers": {{"x": {"[" * 20}{"]" * 20}}}}}'.encode(), "nested deeper"),
    "not UTF-8": (b'{"quiz": "\xff\xfe", "student": "h6", "answers": {}}', "not UTF-8"),
    "not JSON": (b"this is not json", "not valid JSON"),
    "empty file": (b"", "not valid JSON"),
    "JSON but not an object": (b"[1, 2, 3]", "not a JSON object"),
    "another quiz": (json.dumps({"quiz": "module2", "student": "h7", "answers": {}}).encode(), "not '06_metrics'"),
    "unknown question id": (json.dumps({"quiz": QUIZ, "student": "h8", "answers": {"bonus": 1}}).encode(), "unknown question"),
    "empty name": (json.dumps({"quiz": QUIZ, "student": "\u200b ", "answers": {}}).encode(), "non-empty"),
    "control character in name": (json.dumps({"quiz": QUIZ, "student": "a\x07b", "answers": {}}).encode(), "control"),
    "name too long": (json.dumps({"quiz": QUIZ, "student": "x" * 500, "answers": {}}).encode(), "longer than"),
    "boolean as a choice": (json.dumps({"quiz": QUIZ, "student": "h9", "answers": {
        next(q.id for q in Q.load_quiz(QUIZ).questions if q.type == "single"): True}}).encode(), "choice index"),
}  # fmt: skip


def _write_all(folder: Path) -> tuple[list[Path], dict[str, Path]]:
    good = []
    for name in ("ada", "bo"):
        path = folder / f"good_{name}.json"
        path.write_text(_good(name), encoding="utf-8")
        good.append(path)
    bom = folder / "good_bom.json"  # a UTF-8 byte order mark (Windows Notepad) is accepted
    bom.write_bytes(b"\xef\xbb\xbf" + _good("cy").encode())
    good.append(bom)
    hostile = {}
    for i, (name, (data, _)) in enumerate(HOSTILE.items()):
        path = folder / f"hostile_{i:02d}.json"
        path.write_bytes(data)
        hostile[name] = path
    return good, hostile


def test_every_hostile_file_is_named_with_its_reason_and_the_good_ones_are_graded(tmp_path):
    good, hostile = _write_all(tmp_path)
    book = Q.grade(QUIZ, [*good, *hostile.values()])
    assert sorted(r.student for r in book.rows) == ["ada", "bo", "cy"]
    quiz = Q.load_quiz(QUIZ)
    assert all(r.total == pytest.approx(quiz.max_points) for r in book.rows)
    assert len(book.problems) == len(HOSTILE)
    for name, path in hostile.items():
        lines = [p for p in book.problems if p.startswith(f"{path}:")]
        assert len(lines) == 1, (name, book.problems)
        assert HOSTILE[name][1] in lines[0], (name, lines[0])
    book.to_csv()  # nothing unwritable reached the gradebook


@pytest.mark.parametrize("case", ["all good", "some rejected", "none gradable", "no match", "bad key", "usage"])
def test_exit_status_says_which_case_it_was(case, tmp_path):
    (tmp_path / "in").mkdir()
    good, hostile = _write_all(tmp_path / "in")
    out = tmp_path / "grades.csv"
    args = {
        "all good": [*map(str, good)],
        "some rejected": [*map(str, good), str(hostile["huge float 1e400"])],
        "none gradable": [*map(str, hostile.values())],
        "no match": [str(tmp_path / "nothing" / "*.json")],
        "bad key": [*map(str, good)],
        "usage": [],
    }[case]
    quiz = str(tmp_path / "missing.yaml") if case == "bad key" else QUIZ
    cmd = [sys.executable, "-m", "course_lib.cli", "grade", "--quiz", quiz, "--out", str(out), *args]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    expected = {"all good": 0, "some rejected": 1}.get(case, 2)
    assert proc.returncode == expected, proc.stderr
    assert "Traceback" not in proc.stderr
    assert out.exists() == (expected < 2)  # nothing graded: no header-only gradebook
    if case == "no match":
        assert "no submissions matched" in proc.stderr
    if case == "some rejected":
        assert "out of range" in proc.stderr and str(hostile["huge float 1e400"]) in proc.stderr


def test_names_are_normalised_and_one_student_in_two_files_is_a_conflict(tmp_path):
    quiz = Q.load_quiz(QUIZ)
    spellings = {"a.json": "Zoë", "b.json": "zoe\u0308", "c.json": "z\u200boë", "d.json": "  ZOË ", "e.json": "Ada"}
    for name, student in spellings.items():
        (tmp_path / name).write_text(json.dumps({"quiz": QUIZ, "student": student, "answers": perfect_answers(quiz)}))
    book = Q.grade(QUIZ, sorted(tmp_path.glob("*.json")))
    assert [r.student for r in book.rows] == ["Ada"]  # four spellings of Zoë: a conflict, never four rows
    assert len(book.problems) == 1 and book.problems[0].startswith("conflict: 4 files")
    assert all(str(tmp_path / n) in book.problems[0] for n in ("a.json", "b.json", "c.json", "d.json"))
    assert Q.normalise_name("z\u200bo\u0308e ") == "zöe" and Q.name_key("ZÖE") == Q.name_key("zo\u0308e")


@pytest.mark.parametrize("name", ["=HYPERLINK(\"http://x\",\"y\")", "+1+1", "-2+3", "@SUM(A1)", "=1"])
def test_csv_cells_are_neutralised_against_formula_injection(name, tmp_path):
    (tmp_path / "s.json").write_text(_good(name))
    book = Q.grade(QUIZ, [tmp_path / "s.json"])
    assert not book.problems, book.problems
    rows = list(csv.reader(book.to_csv().splitlines()))
    cell = rows[1][0]
    assert cell.startswith("'") and cell[1:] == Q.normalise_name(name)
    assert Q.csv_safe("ada") == "ada" and Q.csv_safe(3) == 3
    # Names lose leading whitespace when normalised; other cells are still guarded against TAB and CR.
    assert Q.csv_safe("\tx") == "'\tx" and Q.csv_safe("\rx") == "'\rx"


def test_out_errors_are_clear(tmp_path, capsys):
    good, _ = _write_all(tmp_path)
    cases = {
        str(tmp_path / "missing" / "g.csv"): "does not exist",
        str(tmp_path): "is a folder",
        str(good[0] / "g.csv"): "is a file, not a folder",
    }
    for out, message in cases.items():
        assert main(["grade", "--quiz", QUIZ, "--out", out, *map(str, good)]) == 2
        assert message in capsys.readouterr().err
