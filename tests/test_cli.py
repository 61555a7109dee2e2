"""Tests of the ``course`` subcommands for quizzes and grading (course_lib/cli.py registrars):
``course grade``, ``course quiz export-student``, ``course quiz validate``, ``course export-student``."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import nbformat
import yaml

from course_lib import quiz as Q
from course_lib.cli import main
from test_quiz import perfect_answers, walk_keys, wrong_answers, write_submission

REPO = Path(__file__).resolve().parents[1]


def submissions(tmp_path: Path) -> tuple[list[Path], list[Path]]:
    quiz = Q.load_quiz("06_metrics")
    good = [
        write_submission(tmp_path / "zoe.json", "06_metrics", "zoe", perfect_answers(quiz)),
        write_submission(tmp_path / "al.json", "06_metrics", "al", wrong_answers(quiz)),
        write_submission(tmp_path / "mo.json", "06_metrics", "mo", {quiz.questions[0].id: perfect_answers(quiz)[quiz.questions[0].id]}),
    ]
    bad = [tmp_path / "garbage.json", tmp_path / "other.json", tmp_path / "extra.json"]
    bad[0].write_text("not json at all")
    write_submission(bad[1], "module2", "kim", {})
    write_submission(bad[2], "06_metrics", "lu", {"bonus": 1})
    return good, bad


def test_grade_writes_the_gradebook_and_reports_each_bad_file(tmp_path, capsys):
    good, bad = submissions(tmp_path)
    out = tmp_path / "grades.csv"
    status = main(["grade", "--quiz", "06_metrics", "--out", str(out), *map(str, good + bad)])
    assert status == 1
    err = capsys.readouterr().err.splitlines()
    assert err[0].startswith("quiz 06_metrics: ") and err[0].endswith(")")  # where the quiz id was found
    # garbage and other's answers are rejected; extra.json (an unknown question id) is graded except for it
    assert len(err) == 1 + len(bad)
    for path in bad:
        assert sum(str(path) in line for line in err) == 1
    assert [line.split(": ")[0] for line in err[1:]] == ["partly graded", "rejected", "rejected"]
    quiz = Q.load_quiz("06_metrics")
    rows = list(csv.DictReader(out.open()))
    assert [r["student"] for r in rows] == ["al", "lu", "mo", "zoe"]
    assert list(rows[0]) == ["student", *(q.id for q in quiz.questions), "total", "max"]
    totals = {r["student"]: float(r["total"]) for r in rows}
    assert totals == {"al": 0.0, "lu": 0.0, "mo": quiz.questions[0].points, "zoe": quiz.max_points}
    assert all(float(r["max"]) == quiz.max_points for r in rows)
    for r in rows:
        assert float(r["total"]) == sum(float(r[q.id]) for q in quiz.questions)


def test_grade_is_deterministic_and_never_overwrites_without_force(tmp_path, capsys):
    good, _ = submissions(tmp_path)
    out = tmp_path / "grades.csv"
    assert main(["grade", "--quiz", "06_metrics", "--out", str(out), *map(str, good)]) == 0
    first = out.read_bytes()

    out.write_text("the instructor's edited gradebook\n")
    assert main(["grade", "--quiz", "06_metrics", "--out", str(out), *map(str, reversed(good))]) == 2
    assert "--force" in capsys.readouterr().err
    assert out.read_text() == "the instructor's edited gradebook\n"

    assert main(["grade", "--quiz", "06_metrics", "--out", str(out), "--force", *map(str, reversed(good))]) == 0
    assert out.read_bytes() == first


def test_grade_refuses_a_student_copy_as_the_key(tmp_path, capsys):
    good, _ = submissions(tmp_path)
    copy_ = tmp_path / "copy.yaml"
    assert main(["quiz", "export-student", "06_metrics", "--out", str(copy_)]) == 0
    assert main(["grade", "--quiz", str(copy_), "--out", str(tmp_path / "g.csv"), *map(str, good)]) == 2
    assert "no answer key" in capsys.readouterr().err
    assert not (tmp_path / "g.csv").exists()


def test_quiz_export_student_writes_a_keyless_copy_once(tmp_path, capsys):
    out = tmp_path / "module2.student.yaml"
    assert main(["quiz", "export-student", "module2", "--out", str(out)]) == 0
    data = yaml.safe_load(out.read_text())
    assert not walk_keys(data) & set(Q.KEY_FIELDS)
    assert Q.validate_quiz_data(data) == []
    assert len(data["questions"]) == len(Q.load_quiz("module2").questions)
    before = out.read_bytes()
    assert main(["quiz", "export-student", "module2", "--out", str(out)]) == 2
    assert "already exists" in capsys.readouterr().err
    assert out.read_bytes() == before
    assert main(["quiz", "export-student", "module2", "--out", str(out), "--force"]) == 0


def test_quiz_validate_reports_each_file(tmp_path, capsys):
    assert main(["quiz", "validate"]) == 0
    assert capsys.readouterr().out.count("[OK]") == len(list((REPO / "quizzes").glob("*.yaml")))
    bad = tmp_path / "bad.yaml"
    bad.write_text("id: bad\ntitle: B\nquestions: []\n")
    assert main(["quiz", "validate", "module2", str(bad)]) == 1
    out = capsys.readouterr().out
    assert "[OK]" in out and "[FAIL]" in out and str(bad) in out


def test_export_student_notebooks_command(tmp_path, capsys):
    out = tmp_path / "student"
    assert main(["export-student", str(REPO / "notebooks"), str(out)]) == 0
    printed = capsys.readouterr().out
    for path in (REPO / "notebooks").glob("*.ipynb"):
        target = out / path.name
        assert str(target) in printed
        nb = nbformat.read(target, as_version=4)
        assert all("### BEGIN SOLUTION" not in c.source for c in nb.cells)
    assert main(["export-student", str(REPO / "notebooks"), str(out)]) == 2
    assert "--force" in capsys.readouterr().err


def test_console_script_runs_grade(tmp_path):
    good, bad = submissions(tmp_path)
    script = Path(sys.executable).with_name("course")
    proc = subprocess.run(
        [str(script), "grade", "--quiz", "06_metrics", "--out", str(tmp_path / "g.csv"), str(good[0]), str(bad[0])],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 1, proc.stderr
    assert str(bad[0]) in proc.stderr and "Traceback" not in proc.stderr
    assert json.loads(good[0].read_text())["student"] in (tmp_path / "g.csv").read_text()


def test_export_student_with_quizzes_gives_exam_mode_copies(tmp_path, capsys, monkeypatch):
    out = tmp_path / "class"
    assert main(["export-student", str(REPO / "notebooks"), str(out), "--quizzes", str(REPO / "quizzes")]) == 0
    copies = sorted(p.name for p in (out / "quizzes").glob("*.yaml"))
    assert copies == sorted(p.name for p in (REPO / "quizzes").glob("*.yaml"))
    for path in (out / "quizzes").glob("*.yaml"):
        assert not walk_keys(yaml.safe_load(path.read_text())) & set(Q.KEY_FIELDS)
    monkeypatch.setenv(Q.QUIZ_DIR_ENV, str(out / "quizzes"))
    assert Q.build("02_block_hashing").mode == "exam"
    assert main(["export-student", str(REPO / "notebooks"), str(out), "--quizzes", str(REPO / "quizzes")]) == 2
    assert "--force" in capsys.readouterr().err
