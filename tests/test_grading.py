"""Tests of course_lib.quiz.grading (``course grade``): a table of hostile submission files, each
rejected with its reason while the good files are graded; name normalisation and conflicts; CSV
formula injection; the exit status (0 all graded, 1 some rejected, 2 nothing graded); --out errors.

``test_the_grader_against_a_hostile_shared_folder`` is issue 22's table: one row per way a class
drop folder (writable by every student) or a hostile quiz file attacked the grader. Each row runs
the real ``course`` command in a subprocess under a time and a memory bound, and checks its exit
status, its messages, the gradebook it wrote, and that no file but ``--out`` changed."""

from __future__ import annotations

import csv
import hashlib
import json
import os
import re
import resource
import stat
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import nbformat
import pytest
import yaml

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
    "empty name": (json.dumps({"quiz": QUIZ, "student": "\u200b ", "answers": {}}).encode(), "non-empty"),
    "control character in name": (json.dumps({"quiz": QUIZ, "student": "a\x07b", "answers": {}}).encode(), "control"),
    "name too long": (json.dumps({"quiz": QUIZ, "student": "x" * 500, "answers": {}}).encode(), "longer than"),
    "duplicate key": (f'{{"quiz": "{QUIZ}", "student": "h8", "student": "ada", "answers": {{}}}}'.encode(), "twice"),
    "direction override in name": (json.dumps({"quiz": QUIZ, "student": "\u202eada", "answers": {}}).encode(), "direction"),
}  # fmt: skip
# Graded except for the part named (issue 22, item 12): name -> (file bytes, a phrase the report must contain)
PARTIAL: dict[str, tuple[bytes, str]] = {
    "unknown question id": (json.dumps({"quiz": QUIZ, "student": "p1", "answers": {"bonus": 1}}).encode(), "unknown question"),
    "boolean as a choice": (json.dumps({"quiz": QUIZ, "student": "p2", "answers": {
        next(q.id for q in Q.load_quiz(QUIZ).questions if q.type == "single"): True}}).encode(), "choice index"),
    "extra key": (json.dumps({"quiz": QUIZ, "student": "p3", "answers": {}, "comment": "hi"}).encode(), "unexpected key"),
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
    partial = {}
    for i, (name, (data, _)) in enumerate(PARTIAL.items()):
        partial[name] = tmp_path / f"partial_{i:02d}.json"
        partial[name].write_bytes(data)
    book = Q.grade(QUIZ, [*good, *hostile.values(), *partial.values()])
    assert sorted(r.student for r in book.rows) == ["ada", "bo", "cy", "p1", "p2", "p3"]
    quiz = Q.load_quiz(QUIZ)
    assert all(r.total == pytest.approx(quiz.max_points) for r in book.rows if r.student in ("ada", "bo", "cy"))
    assert len(book.problems) == len(HOSTILE)
    for name, path in hostile.items():
        lines = [p for p in book.problems if p.startswith(f"{path}:")]
        assert len(lines) == 1, (name, book.problems)
        assert HOSTILE[name][1] in lines[0], (name, lines[0])
    assert len(book.partial) == len(PARTIAL)
    for name, path in partial.items():
        lines = [p for p in book.partial if p.startswith(f"{path}:")]
        assert len(lines) == 1 and PARTIAL[name][1] in lines[0], (name, book.partial)
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


# ----------------------------------------------------------------- issue 22: a hostile shared folder

TIME_LIMIT_S = 30  # per command; each takes about 1 s on an idle machine (a shared 2-core machine is slower)
MEMORY_LIMIT = 512 << 20  # address space of the grader process (RLIMIT_AS): well under 1 GB
REPO = Path(__file__).resolve().parents[1]
TINY_QUIZ = """id: tiny
title: A tiny quiz
questions:
  - id: n
    type: numeric
    prompt: How many?
    answer: {answer}
    feedback: Because.
"""
ALIAS_BOMB = "a: &a [x, x, x, x, x, x, x, x, x]\n" + "".join(
    f"{b}: &{b} [{', '.join(['*' + a] * 9)}]\n" for a, b in zip("abcdefgh", "bcdefghi")
) + "id: bomb\ntitle: t\nquestions: *i\n"


@dataclass
class Scene:
    """A class drop folder ``subs/`` (two good submissions), files outside it, and the gradebook path."""

    root: Path
    subs: Path
    outside: Path
    out: Path
    cwd: Path

    def submission(self, name: str, student: str, answers: dict | None = None, **extra) -> Path:
        quiz = Q.load_quiz(QUIZ)
        data = {"quiz": QUIZ, "quiz_version": quiz.version, "student": student,
                "answers": perfect_answers(quiz) if answers is None else answers, **extra}  # fmt: skip
        path = self.subs / name
        path.write_text(json.dumps(data), encoding="utf-8")
        return path

    def grade(self, *extra: str, out: Path | str | None = None) -> list[str]:
        return ["grade", "--quiz", QUIZ, "--out", str(out or self.out), *extra]


@dataclass
class Row:
    """One case: ``plant`` prepares the scene and returns the ``course`` arguments; then the command must
    exit with ``status``, print every pattern of ``says`` (stdout + stderr), and leave a gradebook with
    exactly the students ``graded`` (``None``: no gradebook written). ``check`` adds what a case needs."""

    plant: Callable[[Scene], list[str]]
    status: int
    says: tuple[str, ...]
    graded: tuple[str, ...] | None = ("ada", "bo")
    check: Callable[[Scene, str], None] | None = None
    changes: tuple[str, ...] = ()  # paths (relative to the scene root) the command may create besides --out


def _mkfifo(s: Scene) -> list[str]:
    os.mkfifo(s.subs / "x.json")
    return s.grade(str(s.subs))


def _dev_zero(s: Scene) -> list[str]:
    (s.subs / "zero.json").symlink_to("/dev/zero")
    return s.grade(str(s.subs / "*.json"))


def _big_file(s: Scene) -> list[str]:
    (s.subs / "big.json").write_bytes(b" " * 3_000_000)
    return s.grade(str(s.subs))


def _planted_tmp(s: Scene) -> list[str]:
    (s.root / "grades.csv.tmp").symlink_to(s.outside / "precious.txt")
    return s.grade(str(s.subs))


def _out_is_a_symlink(s: Scene) -> list[str]:
    s.out.symlink_to(s.outside / "precious.txt")
    return s.grade("--force", str(s.subs))


def _gradebook_is_regular(s: Scene, _: str) -> None:
    assert s.out.is_file() and not s.out.is_symlink()
    assert (s.outside / "precious.txt").read_text() == "the instructor's own file\n"


def _lookalike(name: str) -> Callable[[Scene], list[str]]:
    def plant(s: Scene) -> list[str]:
        s.submission("twin.json", name)
        return s.grade(str(s.subs))

    return plant


def _tiny_quiz(answer: str, extra: str = "") -> Callable[[Scene], list[str]]:
    def plant(s: Scene) -> list[str]:
        (s.root / "tiny.yaml").write_text(TINY_QUIZ.format(answer=answer) + extra)
        return ["quiz", "validate", str(s.root / "tiny.yaml")]

    return plant


def _bomb_validate(s: Scene) -> list[str]:
    (s.root / "bomb.yaml").write_text(ALIAS_BOMB)
    return ["quiz", "validate", str(s.root / "bomb.yaml")]


def _bomb_grade(s: Scene) -> list[str]:
    (s.root / "bomb.yaml").write_text(ALIAS_BOMB)
    return ["grade", "--quiz", str(s.root / "bomb.yaml"), "--out", str(s.out), str(s.subs)]


def _newline_name(s: Scene) -> list[str]:
    (s.subs / "x\nrejected: forged.json: none graded\n.json").write_text("not json")
    return s.grade(str(s.subs))


def _ansi_name(s: Scene) -> list[str]:
    (s.subs / "\x1b[2K\x1b[1Ahidden.json").write_text("not json")
    return s.grade(str(s.subs))


def _no_raw_controls(s: Scene, output: str) -> None:
    """No escape character reaches the terminal, and no line of the report was forged by a file name."""
    assert "\x1b" not in output
    kinds = ("quiz ", "warning: ", "partly graded: ", "rejected: ", "error: ", str(s.out))
    assert all(line.startswith(kinds) for line in output.splitlines()), output
    assert not [line for line in output.splitlines() if line.startswith("rejected: forged")], output


def _same_file_twice(s: Scene) -> list[str]:
    return s.grade(str(s.subs / "*.json"), "subs/ada.json", str(s.subs))  # cwd is the scene's root


def _duplicate_key(key: str, first: str) -> Callable[[Scene], list[str]]:
    def plant(s: Scene) -> list[str]:
        body = json.dumps({"quiz": QUIZ, "student": "mallory", "answers": perfect_answers(Q.load_quiz(QUIZ))})
        (s.subs / "dup.json").write_text(body.replace("{", f'{{"{key}": "{first}", ', 1))
        return s.grade(str(s.subs))

    return plant


def _copy_project(s: Scene) -> Path:
    """A copy of the course elsewhere whose 06_metrics key differs: the first numeric answer is 1 higher."""
    copy_ = s.root / "copy"
    (copy_ / "quizzes").mkdir(parents=True)
    (copy_ / "notebooks").mkdir()
    (copy_ / "pyproject.toml").write_text('[project]\nname = "prefix-caching-course"\n')
    data = yaml.safe_load((REPO / "quizzes" / f"{QUIZ}.yaml").read_text())
    numeric = next(q for q in data["questions"] if q["type"] == "numeric")
    numeric["answer"] += 1
    (copy_ / "quizzes" / f"{QUIZ}.yaml").write_text(yaml.safe_dump(data))
    nbformat.write(nbformat.v4.new_notebook(cells=[nbformat.v4.new_markdown_cell("hi")]), copy_ / "notebooks" / "00_x.ipynb")
    s.cwd = copy_ / "notebooks"
    return copy_


def _graded_with_the_copys_key(s: Scene, _: str) -> None:
    quiz = Q.load_quiz(REPO / "quizzes" / f"{QUIZ}.yaml")
    numeric = next(q for q in quiz.questions if q.type == "numeric")
    totals = {r["student"]: float(r["total"]) for r in csv.DictReader(s.out.open())}
    assert totals == {"ada": quiz.max_points - numeric.points, "bo": quiz.max_points - numeric.points}


def _bundle_from_copy(s: Scene) -> list[str]:
    _copy_project(s)
    s.cwd = s.root / "copy"
    return ["export-student", "notebooks", "--bundle", str(s.root / "bundle")]


def _bundle_has_the_copys_quiz(s: Scene, _: str) -> None:
    assert sorted(p.name for p in (s.root / "bundle" / "quizzes").iterdir()) == [f"{QUIZ}.yaml"]


def _string_number(text: str) -> Callable[[Scene], list[str]]:
    def plant(s: Scene) -> list[str]:
        quiz = Q.load_quiz(QUIZ)
        answers = perfect_answers(quiz)
        qid = _first_numeric()
        answers[qid] = text.format(answer=json.dumps(quiz.question(qid).answer))
        s.submission("cy.json", "cy", answers)
        return s.grade(str(s.subs))

    return plant


def _cy_total(expected: Callable[[Q.Quiz], float]) -> Callable[[Scene, str], None]:
    def check(s: Scene, _: str) -> None:
        quiz = Q.load_quiz(QUIZ)
        totals = {r["student"]: float(r["total"]) for r in csv.DictReader(s.out.open())}
        assert totals["cy"] == pytest.approx(expected(quiz)), totals

    return check


def _extra_key(s: Scene) -> list[str]:
    s.submission("cy.json", "cy", comment="please be kind")
    return s.grade(str(s.subs))


def _symlink_out(s: Scene) -> list[str]:
    eve = s.outside / "eve.json"
    eve.write_text(json.dumps({"quiz": QUIZ, "student": "eve", "answers": perfect_answers(Q.load_quiz(QUIZ))}))
    (s.subs / "eve.json").symlink_to(eve)
    return s.grade(str(s.subs))


def _numeric(quiz: Q.Quiz) -> float:
    return next(q for q in quiz.questions if q.type == "numeric").points


ROWS: dict[str, Row] = {
    # 1. --out must never be an input; a .json --out needs more than --force
    "--out given a submission (shell-expanded glob)": Row(
        lambda s: ["grade", "--quiz", QUIZ, "--force", "--out", *sorted(map(str, s.subs.glob("*.json")))],
        2, ("looks like a submission", "--force does not change this"), None),
    "--out is an input by another path": Row(
        lambda s: s.grade("--force", str(s.subs / "ada.csv"), str(s.subs / "bo.json"), out=f"{s.subs}/../subs/ada.csv"),
        2, ("is also one of the submissions",), None),
    # 2. FIFOs and devices
    "a FIFO named x.json": Row(_mkfifo, 1, (r"x\.json: is a FIFO",)),
    "a symlink to /dev/zero": Row(_dev_zero, 1, (r"zero\.json: is a character device",)),
    "a file larger than a submission": Row(_big_file, 1, (r"big\.json: more than 1000000 bytes",)),
    # 3. the temporary file and --out itself as planted symlinks
    "a planted <out>.tmp symlink": Row(_planted_tmp, 0, (r"2 student\(s\) graded",), check=_gradebook_is_regular),
    "--out a planted symlink, with --force": Row(_out_is_a_symlink, 0, ("graded",), check=_gradebook_is_regular),
    # 4. alias bombs
    "alias bomb: quiz validate": Row(_bomb_validate, 1, ("YAML alias", "not allowed"), None),
    "alias bomb: grade": Row(_bomb_grade, 2, ("YAML alias",), None),
    # 5. names that look alike, read backwards or show nothing
    "invisible separator U+2063": Row(_lookalike("ad\u2063a"), 1, ("conflict: 2 files", r"removed U\+2063 INVISIBLE SEPARATOR"), ("bo",)),
    "combining grapheme joiner": Row(_lookalike("a\u034fda"), 1, ("conflict: 2 files",), ("bo",)),
    "fullwidth compatibility form": Row(_lookalike("\uff41\uff44\uff41"), 1, ("conflict", "compatibility forms"), ("bo",)),
    "variation selector": Row(_lookalike("ada\ufe0f"), 1, ("conflict",), ("bo",)),
    "direction override": Row(_lookalike("\u202eob"), 1, ("direction control", "RIGHT-TO-LEFT OVERRIDE")),
    "Hangul filler only": Row(_lookalike("\u3164\u3164"), 1, ("something visible",)),
    "Braille blank only": Row(_lookalike("\u2800"), 1, ("something visible",)),
    "mixed Latin and Cyrillic": Row(_lookalike("\u0430da"), 0, ("mixes Cyrillic and Latin",), ("ada", "bo", "\u0430da")),
    # 6. file names reach the terminal escaped
    "newline in a file name": Row(_newline_name, 1, (r"x\\nrejected: forged",), check=_no_raw_controls),
    "ANSI escape in a file name": Row(_ansi_name, 1, (r"\\x1b\[2K",), check=_no_raw_controls),
    # 7. the same file twice
    "one file by a glob, a path and a folder": Row(_same_file_twice, 0, ("graded once",)),
    # 8. duplicate JSON keys
    "duplicate student key": Row(_duplicate_key("student", "bo"), 1, ("'student' appears twice",)),
    "duplicate quiz key": Row(_duplicate_key("quiz", "module2"), 1, ("'quiz' appears twice",)),
    # 9. YAML 1.1 numbers in quiz files
    "YAML 1.1 octal 040": Row(_tiny_quiz("040"), 1, ("'040' is read by YAML 1.1 as 32",), None),
    "YAML 1.1 base 60 1:30": Row(_tiny_quiz("1:30"), 1, ("'1:30' is read by YAML 1.1 as 90",), None),
    "YAML 1.1 underscore 3_2": Row(_tiny_quiz("3_2"), 1, ("'3_2' is read by YAML 1.1 as 32",), None),
    "plain YAML 1.2 number": Row(_tiny_quiz("40"), 0, (r"\[OK\].*tiny",), None),
    # 10. a keyed quiz cannot freeze its version
    "a frozen version: field": Row(_tiny_quiz("40", "version: 0123456789ab\n"), 1, ("may not set `version`",), None),
    # 11. quiz ids resolve from the project being worked in, and say so
    "grade in a copy of the course": Row(
        lambda s: (_copy_project(s), s.grade(str(s.subs)))[1], 0, (r"copy/quizzes/06_metrics\.yaml \(quiz id looked up in the course project",),
        check=_graded_with_the_copys_key),
    "validate in a copy of the course": Row(
        lambda s: (_copy_project(s), ["quiz", "validate", QUIZ])[1], 0, (r"copy/quizzes/06_metrics\.yaml",), None),
    "bundle in a copy of the course": Row(
        _bundle_from_copy, 0, (r"quizzes from .*copy/quizzes \(the course project",), None,
        check=_bundle_has_the_copys_quiz, changes=("bundle",)),
    # 12. partial submissions; symlinks out of the folder
    "an extra key": Row(_extra_key, 1, ("partly graded", "unexpected key"), ("ada", "bo", "cy"),
                        check=_cy_total(lambda q: q.max_points)),
    "a number written as a string": Row(_string_number("{answer}"), 0, ("written as the string",), ("ada", "bo", "cy"),
                                        check=_cy_total(lambda q: q.max_points)),
    "a number with a unit": Row(_string_number("{answer} tokens"), 1, ("partly graded", "scored 0"), ("ada", "bo", "cy"),
                                check=_cy_total(lambda q: q.max_points - _numeric(q))),
    "a symlink out of the folder": Row(_symlink_out, 1, ("outside its folder",)),
}  # fmt: skip


def _snapshot(root: Path, skip: set[Path]) -> dict[str, tuple]:
    """Every entry under ``root`` (not following links, never opening FIFOs or devices): type, size, content."""
    state = {}
    for path in sorted(root.rglob("*")):
        if any(path == p or p in path.parents for p in skip):
            continue
        st = path.lstat()
        if path.is_symlink():
            state[str(path)] = ("link", os.readlink(path))
        elif stat.S_ISREG(st.st_mode):
            state[str(path)] = ("file", st.st_mode, hashlib.sha256(path.read_bytes()).hexdigest())
        else:
            state[str(path)] = (stat.S_IFMT(st.st_mode), st.st_mode)
    return state


def _bounded(argv: list[str], cwd: Path) -> subprocess.CompletedProcess:
    def limits() -> None:
        resource.setrlimit(resource.RLIMIT_AS, (MEMORY_LIMIT, MEMORY_LIMIT))

    env = {k: v for k, v in os.environ.items() if k != Q.QUIZ_DIR_ENV}
    cmd = [sys.executable, "-m", "course_lib.cli", *argv]
    try:
        return subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=TIME_LIMIT_S, preexec_fn=limits)
    except subprocess.TimeoutExpired:
        pytest.fail(f"`course {' '.join(map(repr, argv))}` ran past {TIME_LIMIT_S} s (killed)")


@pytest.mark.parametrize("case", list(ROWS))
def test_the_grader_against_a_hostile_shared_folder(case, tmp_path):
    row = ROWS[case]
    root = tmp_path / "class"
    scene = Scene(root, root / "subs", root / "outside", root / "grades.csv", root)
    scene.subs.mkdir(parents=True)
    scene.outside.mkdir()
    (scene.outside / "precious.txt").write_text("the instructor's own file\n")
    scene.submission("ada.json", "ada")
    scene.submission("bo.json", "bo")
    (scene.subs / "ada.csv").write_text((scene.subs / "ada.json").read_text())  # a submission under a .csv name
    argv = row.plant(scene)
    before = _snapshot(root, {scene.out, *(root / c for c in row.changes)})

    proc = _bounded(argv, scene.cwd)
    output = proc.stdout + proc.stderr

    assert proc.returncode == row.status, output
    assert "Traceback" not in output and "MemoryError" not in output, output
    for pattern in row.says:
        assert re.search(pattern, output), (pattern, output)
    assert _snapshot(root, {scene.out, *(root / c for c in row.changes)}) == before, "a file other than --out changed"
    if row.graded is None:
        assert not scene.out.exists() or scene.out.is_symlink()
    else:
        students = sorted(r["student"] for r in csv.DictReader(scene.out.open(encoding="utf-8")))
        assert students == sorted(row.graded), output
    if row.check:
        row.check(scene, output)
