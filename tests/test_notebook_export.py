"""Tests of course_lib.notebook_export: student notebooks without solutions or outputs."""

from __future__ import annotations

import ast
import json
import re
from pathlib import Path

import nbformat
import pytest

from course_lib.engine import CourseError
from course_lib.notebook_export import (
    BEGIN,
    END,
    exercise_cells,
    export_student_notebooks,
    solution_lines,
    strip_solutions,
    student_notebook,
)

REPO = Path(__file__).resolve().parents[1]

SOLVED_FUNCTION = f"""def cached_tokens(n, block):
    {BEGIN}
    full = (n - 1) // block
    return full * block
    {END}

print(cached_tokens(100, 32))
"""


def _without_magics(source: str) -> str:
    return "\n".join("" if line.lstrip().startswith(("%", "!")) else line for line in source.splitlines())


def make_instructor_notebook(path: Path) -> nbformat.NotebookNode:
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nb.metadata["widgets"] = {"application/vnd.jupyter.widget-state+json": {"state": {"secret": "SOLUTION-STATE"}}}
    intro = nbformat.v4.new_markdown_cell(f"Why?\n{BEGIN}\nBecause the last token is never cached.\n{END}\n")
    top = nbformat.v4.new_code_cell(f"x = 1\n{BEGIN}\nanswer = 96  # SOLUTION-TOP\n{END}\nprint(x)")
    top.outputs = [nbformat.v4.new_output("stream", name="stdout", text="96 SOLUTION-OUTPUT\n")]
    top.execution_count = 3
    func = nbformat.v4.new_code_cell(SOLVED_FUNCTION)
    func.execution_count = 4
    func.outputs = [nbformat.v4.new_output("execute_result", data={"text/plain": "96"}, execution_count=4)]
    plain = nbformat.v4.new_code_cell("from course_lib import quiz\nquiz.show('t')")
    lesson = nbformat.v4.new_code_cell("print(2 + 2)")  # an ordinary cell: its output stays
    lesson.outputs = [nbformat.v4.new_output("stream", name="stdout", text="4 KEPT-OUTPUT\n")]
    lesson.execution_count = 2
    uses = nbformat.v4.new_code_cell("print(answer)")  # uses a name the solution defines: cleared
    uses.outputs = [nbformat.v4.new_output("stream", name="stdout", text="96 SOLUTION-USE\n")]
    nb.cells = [intro, lesson, top, func, uses, plain]
    nbformat.write(nb, path)
    return nb


def test_export_replaces_solutions_and_clears_outputs(tmp_path):
    src, out = tmp_path / "notebooks", tmp_path / "student"
    (src / "sub").mkdir(parents=True)
    make_instructor_notebook(src / "01_t.ipynb")
    make_instructor_notebook(src / "sub" / "02_t.ipynb")
    (src / ".ipynb_checkpoints").mkdir()
    make_instructor_notebook(src / ".ipynb_checkpoints" / "01_t-checkpoint.ipynb")
    before = {p: p.read_bytes() for p in src.rglob("*.ipynb")}

    results = export_student_notebooks(src, out)

    assert sorted(r.target.relative_to(out).as_posix() for r in results) == ["01_t.ipynb", "sub/02_t.ipynb"]
    assert all(r.solutions_removed == 3 for r in results)
    assert {p: p.read_bytes() for p in src.rglob("*.ipynb")} == before, "instructor notebooks must stay untouched"
    for r in results:
        text = r.target.read_text()
        for secret in ("SOLUTION", "answer = 96", "full * block", "last token is never cached"):
            assert secret not in text, secret
        nb = nbformat.read(r.target, as_version=4)
        nbformat.validate(nb)
        assert "widgets" not in nb.metadata
        assert "KEPT-OUTPUT" in text and nb.cells[1].execution_count == 2
        code = [c for c in nb.cells if c.cell_type == "code" and c.source != "print(2 + 2)"]
        assert all(c.outputs == [] and c.execution_count is None for c in code)
        # The placeholder keeps the function valid Python and fails loudly when run.
        ast.parse(code[1].source)
        namespace: dict = {}
        with pytest.raises(NotImplementedError):
            exec(code[1].source, namespace)
        assert code[0].source.startswith("x = 1\n") and code[0].source.endswith("print(x)")
        assert code[3].source == "from course_lib import quiz\nquiz.show('t')"
        assert "Why?" in nb.cells[0].source


def test_existing_output_is_kept_unless_forced(tmp_path):
    src, out = tmp_path / "nb", tmp_path / "out"
    src.mkdir()
    make_instructor_notebook(src / "a.ipynb")
    out.mkdir()
    (out / "a.ipynb").write_text("learner's work")
    with pytest.raises(CourseError, match="--force"):
        export_student_notebooks(src, out)
    assert (out / "a.ipynb").read_text() == "learner's work"
    (results,) = export_student_notebooks(src, out, update=True)
    assert results.status == "edited by you" and (out / "a.ipynb").read_text() == "learner's work"
    export_student_notebooks(src, out, force=True)
    assert "learner's work" not in (out / "a.ipynb").read_text()


def test_output_inside_the_source_folder_is_refused(tmp_path):
    src = tmp_path / "nb"
    src.mkdir()
    make_instructor_notebook(src / "a.ipynb")
    with pytest.raises(CourseError, match="outside"):
        export_student_notebooks(src, src / "student")


@pytest.mark.parametrize(
    "source, message",
    [
        (f"{BEGIN}\nx = 1\n", "never closed"),
        (f"x = 1\n{END}\n", "without a"),
        (f"{BEGIN}\n{BEGIN}\n{END}\n", "inside another"),
    ],
)
def test_unbalanced_markers_are_errors_naming_the_place(source, message, tmp_path):
    with pytest.raises(CourseError, match=message):
        strip_solutions(source, where="nb.ipynb, cell 2")
    src = tmp_path / "nb"
    src.mkdir()
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell("ok = 1"), nbformat.v4.new_code_cell(source)]
    nbformat.write(nb, src / "bad.ipynb")
    with pytest.raises(CourseError, match=r"bad\.ipynb, cell 1"):
        export_student_notebooks(src, tmp_path / "out")
    assert not (tmp_path / "out").exists(), "nothing is written when a notebook is broken"


def test_text_without_markers_is_unchanged():
    for source in ("", "x = 1", "x = 1\n", "# ### BEGIN SOLUTION in a comment mid-line\n"):
        assert strip_solutions(source) == (source, 0)


def test_export_of_the_real_notebooks_leaves_no_solution(tmp_path):
    src = REPO / "notebooks"
    notebooks = sorted(src.glob("*.ipynb"))
    assert notebooks, "the course's notebooks are missing"
    solved = [p for p in notebooks if BEGIN in p.read_text()]
    assert solved, "the instructor notebooks should contain exercises with solutions"
    before = {p: p.read_bytes() for p in notebooks}
    results = export_student_notebooks(src, tmp_path / "student")
    assert len(results) == len(notebooks)
    assert {p: p.read_bytes() for p in notebooks} == before
    for r in results:
        nb = nbformat.read(r.target, as_version=4)
        for cell in nb.cells:
            assert BEGIN not in cell.source and END not in cell.source, r.target.name
            if cell.cell_type == "code":
                ast.parse(_without_magics(cell.source))  # still valid Python
        assert_no_solution_text(r.source, r.target)
        instructor = nbformat.read(r.source, as_version=4)
        for index in exercise_cells(instructor):
            assert nb.cells[index].outputs == [] and nb.cells[index].execution_count is None
        if r.source in solved:
            assert r.solutions_removed == r.source.read_text().count(BEGIN), r.source.name


def assert_no_solution_text(instructor: Path, learner_text_file: Path) -> None:
    """No line of a solution region reaches the learner's file (sources or outputs), except lines the
    instructor notebook also shows outside its exercises (``import hashlib``, or ``return [`` in a
    printed function's source)."""
    nb = nbformat.read(instructor, as_version=4)
    inside = {line for c in nb.cells for line in solution_lines(c.source)}
    outside = {
        line.strip()
        for c in nb.cells
        for line in strip_solutions(c.source, cell_type=c.cell_type)[0].splitlines()
    }
    lesson = [c for i, c in enumerate(nb.cells) if c.cell_type == "code" and i not in exercise_cells(nb)]
    for out in (o for c in lesson for o in c.get("outputs", [])):
        shown = out.get("text", "") + out.get("data", {}).get("text/plain", "")
        outside |= {line.strip() for line in shown.splitlines()}
    learner = nbformat.read(learner_text_file, as_version=4)
    shown: set[str] = set()  # every line a learner sees, whole: sources, and the text of every output
    for cell in learner.cells:
        texts = [cell.source] + [o.get("text", "") for o in cell.get("outputs", [])]
        texts += [str(v) for o in cell.get("outputs", []) for v in o.get("data", {}).values()]
        shown |= {line.strip() for t in texts for line in t.splitlines()}
    leaked = sorted((inside - outside) & shown)
    assert not leaked, f"{learner_text_file.name}: solution lines in the learner copy: {leaked[:3]}"


def test_update_adds_new_notebooks_and_reports_how_existing_ones_differ(tmp_path):
    src, out = tmp_path / "nb", tmp_path / "learner"
    src.mkdir()
    make_instructor_notebook(src / "a.ipynb")
    make_instructor_notebook(src / "b.ipynb")
    assert {r.status for r in export_student_notebooks(src, out, update=True)} == {"written"}
    # The learner edits a.ipynb (and runs it: outputs do not count as edits); the course changes b.ipynb
    # and adds c.ipynb.
    nb = nbformat.read(out / "a.ipynb", as_version=4)
    nb.cells[0].source += "\nmy notes"
    nbformat.write(nb, out / "a.ipynb")
    edited = (out / "a.ipynb").read_bytes()
    course = nbformat.read(src / "b.ipynb", as_version=4)
    course.cells[1].source = "print(2 + 3)"
    nbformat.write(course, src / "b.ipynb")
    make_instructor_notebook(src / "c.ipynb")
    status = {r.target.name: r.status for r in export_student_notebooks(src, out, update=True)}
    assert status == {"a.ipynb": "edited by you", "b.ipynb": "the course changed", "c.ipynb": "written"}
    assert (out / "a.ipynb").read_bytes() == edited
    assert "print(2 + 2)" in (out / "b.ipynb").read_text()  # the learner's copy is not replaced
    again = {r.target.name: r.status for r in export_student_notebooks(src, out, update=True)}
    assert again["c.ipynb"] == "up to date"


def test_make_lab_creates_learner_copies_once_and_keeps_a_learners_edit(tmp_path):
    """`make lab LAB_ARGS=--version` in a copy of the repository's layout (the real Makefile, notebooks
    and .venv): learner/ gets one copy per course notebook with no solution text; a second run keeps an edit."""
    import os
    import shutil
    import subprocess

    root = tmp_path / "clone"
    root.mkdir()
    shutil.copy(REPO / "Makefile", root / "Makefile")
    shutil.copytree(REPO / "notebooks", root / "notebooks")
    shutil.copy(REPO / "pyproject.toml", root / "pyproject.toml")
    os.utime(root / "pyproject.toml", (0, 0))  # older than the venv's setup stamp: make must not reinstall
    (root / ".venv").symlink_to(REPO / ".venv")
    env = {**os.environ, "MAKEFLAGS": ""}
    run = subprocess.run(["make", "lab", "LAB_ARGS=--version"], cwd=root, env=env, capture_output=True, text=True)
    assert run.returncode == 0, run.stdout + run.stderr
    course = sorted(p.name for p in (root / "notebooks").glob("*.ipynb"))
    learner = sorted(p.name for p in (root / "learner").glob("*.ipynb"))
    assert learner == course
    for name in course:
        text = (root / "learner" / name).read_text()
        assert BEGIN not in text and END not in text
        assert_no_solution_text(root / "notebooks" / name, root / "learner" / name)
    nb = nbformat.read(root / "learner" / course[0], as_version=4)
    nb.cells[0].source += "\n\nA note of mine."
    nbformat.write(nb, root / "learner" / course[0])
    mine = (root / "learner" / course[0]).read_bytes()
    again = subprocess.run(["make", "lab", "LAB_ARGS=--version"], cwd=root, env=env, capture_output=True, text=True)
    assert again.returncode == 0, again.stdout + again.stderr
    assert (root / "learner" / course[0]).read_bytes() == mine
    assert "kept: you edited it" in again.stdout


def test_a_learner_copy_runs_to_the_end_and_its_checks_say_not_yet(tmp_path, capsys):
    """Run All on a learner copy: every cell runs, the exercise says "not yet", later cells still run."""
    src, out = tmp_path / "nb", tmp_path / "out"
    src.mkdir()
    nb = nbformat.v4.new_notebook()
    nb.cells = [
        nbformat.v4.new_code_cell(
            "from course_lib.exercises import exercise, verdict, solved\n"
            "@exercise('9.5', 'demo')\n"
            "def check_demo(n, fn):\n"
            "    return verdict('9.5 demo', n == 64 and fn(2) == 4, 'yes', 'no')"
        ),
        nbformat.v4.new_code_cell(
            f'# NBVAL_CHECK_OUTPUT\n{BEGIN}\nn = 2 * 32\ndef square(x):\n    """x squared"""\n    return x * x\n{END}\n'
            "print(check_demo(n, square))"
        ),
        nbformat.v4.new_code_cell("if solved('9.5', n):\n    print('uses', n)\nprint('the end')"),
    ]
    nbformat.write(nb, src / "a.ipynb")
    export_student_notebooks(src, out)
    learner = nbformat.read(out / "a.ipynb", as_version=4)
    assert "NBVAL" not in learner.cells[1].source and "x squared" in learner.cells[1].source
    assert "2 * 32" not in learner.cells[1].source and "x * x" not in learner.cells[1].source
    namespace: dict = {}
    for cell in learner.cells:
        exec(cell.source, namespace)  # none raises
    printed = capsys.readouterr().out
    assert "not yet [9.5 demo]" in printed and "solve exercise 9.5 first" in printed and printed.endswith("the end\n")
    for cell in nb.cells:  # the instructor's version passes
        exec(cell.source, namespace)
    assert "correct [9.5 demo]" in capsys.readouterr().out


def _check_functions_called(source: str) -> list[tuple[str, str]]:
    """``(module, function)`` for each ``nbNN.check_x(`` call in a cell."""
    return re.findall(r"\b(nb\d\d)\.(check_\w+)\s*\(", source)


@pytest.mark.parametrize("path", sorted((REPO / "notebooks").glob("*.ipynb")), ids=lambda p: p.stem)
def test_every_learner_cell_runs_and_every_check_answers_not_yet(path, tmp_path):
    """A learner copy is valid Python cell by cell, and every check it calls is declared with
    ``@exercise``: so an unanswered exercise prints a verdict and Run All goes on to the quiz."""
    import importlib

    student, _ = student_notebook(nbformat.read(path, as_version=4), where=path.name)
    flags = ast.PyCF_ONLY_AST | ast.PyCF_ALLOW_TOP_LEVEL_AWAIT
    for index, cell in enumerate(student.cells):
        if cell.cell_type != "code":
            continue
        compile(_without_magics(cell.source), f"{path.name}, cell {index}", "exec", flags=flags)
        for module, function in _check_functions_called(cell.source):
            check = getattr(importlib.import_module(f"course_lib.exercises.{module}"), function)
            assert hasattr(check, "exercise_id"), f"{path.name}, cell {index}: {module}.{function} is not declared with @exercise"


def test_a_stub_names_what_the_solution_assigns_not_its_comprehension_variables():
    source = f"{BEGIN}\ntotal = sum(x * 2 for x in range(3))\nbest = [y for y in [1]]\na, b = 1, 2\n{END}\ncheck(total)\n"
    stub, _ = strip_solutions(source)
    assert stub.splitlines()[1:] == ["total = ...", "best = ...", "a = ...", "b = ...", "check(total)"]
