"""Tests of course_lib.nbgrader_source: a real nbgrader round trip on the course's notebooks.

In a temporary nbgrader course directory, ``course nbgrader-source`` writes the source versions of
every course notebook plus a small notebook made of notebook 02's real exercise cells (the other
notebooks' exercises need a live engine or server, minutes each). ``nbgrader generate_assignment``
must accept them all and release versions without solutions; ``nbgrader autograde`` of the
instructor version gives full marks on the exercise cells and of the released version zero.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import nbformat

from course_lib.nbgrader_source import nbgrader_notebook
from course_lib.notebook_export import BEGIN
from test_notebook_export import assert_no_solution_text

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
ASSIGNMENT = "ps1"
MINI = "02_exercises"


def _mini_notebook(path: Path) -> int:
    """Notebook 02's exercise section as it is in the course (statements, solutions, checks, quiz; not the
    "Going deeper" section before the quiz), after the one import its solutions need. Returns the number of exercises."""
    nb = nbformat.read(REPO / "notebooks" / "02_block_hashing.ipynb", as_version=4)
    first = min(i for i, c in enumerate(nb.cells) if BEGIN in c.source)
    start = max(i for i in range(first) if nb.cells[i].cell_type == "markdown" and nb.cells[i].source.startswith("#"))
    # Without the optional "Going deeper" section (it reads vLLM's source with names from the main path).
    deeper = [i for i, c in enumerate(nb.cells) if c.cell_type == "markdown" and c.source.startswith("## ")]
    gd = next((i for i in deeper if nb.cells[i].source.startswith("## Going deeper")), len(nb.cells))
    after = next((i for i in deeper if i > gd), len(nb.cells))
    nb.cells = [nbformat.v4.new_code_cell("from course_lib.hashing import block_hashes")] + nb.cells[start:gd] + nb.cells[after:]
    nbformat.write(nb, path)
    return sum(BEGIN in c.source for c in nb.cells)


def _nbgrader(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}"}
    run = subprocess.run([str(BIN / "nbgrader"), *args], cwd=cwd, env=env, capture_output=True, text=True)
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-4000:]
    return run


def test_metadata_marks_solutions_tests_and_read_only_cells():
    nb = nbformat.v4.new_notebook()
    nb.cells = [
        nbformat.v4.new_markdown_cell("## Exercise"),
        nbformat.v4.new_code_cell(f"def f():\n    {BEGIN}\n    return 1\n    ### END SOLUTION\n"),
        nbformat.v4.new_code_cell("print(check_f(f))"),
        nbformat.v4.new_code_cell("x = 2"),
    ]
    out, n_sol, n_test = nbgrader_notebook(nb, prefix="t", points=2)
    assert (n_sol, n_test) == (1, 1) and len(out.cells) == 5
    meta = [c.metadata.get("nbgrader") for c in out.cells]
    assert meta[0]["locked"] and not meta[0]["grade"] and not meta[0]["solution"]
    assert meta[1]["solution"] and not meta[1]["grade"] and not meta[1]["locked"]
    assert meta[2] is None and meta[4] is None
    assert meta[3]["grade"] and meta[3]["locked"] and meta[3]["points"] == 2 and "require_passed()" in out.cells[3].source
    assert len({m["grade_id"] for m in meta if m}) == 3
    assert nb.cells[1].metadata == {}  # the argument is not modified


def test_nbgrader_round_trip_full_marks_for_the_solution_zero_for_the_release(tmp_path):
    notebooks = tmp_path / "notebooks"
    shutil.copytree(REPO / "notebooks", notebooks, ignore=shutil.ignore_patterns("*.cfg", ".ipynb_checkpoints"))
    n_exercises = _mini_notebook(notebooks / f"{MINI}.ipynb")
    assert n_exercises >= 2
    course = tmp_path / "course"
    cmd = [sys.executable, "-m", "course_lib.cli", "nbgrader-source", str(course), "--notebooks", str(notebooks),
           "--assignment", ASSIGNMENT]  # fmt: skip
    subprocess.run(cmd, check=True, cwd=tmp_path, capture_output=True)

    # nbgrader accepts every course notebook (no "solution region in a non-solution cell").
    _nbgrader("generate_assignment", ASSIGNMENT, cwd=course)
    release = course / "release" / ASSIGNMENT
    for path in sorted(notebooks.glob("*.ipynb")):
        assert (release / path.name).exists(), path.name
        text = (release / path.name).read_text()
        assert BEGIN not in text and "raise NotImplementedError" in text, path.name
        assert_no_solution_text(path, release / path.name)

    for student, version in (("instructor", course / "source"), ("learner", release.parent)):
        target = course / "submitted" / student / ASSIGNMENT
        target.mkdir(parents=True)
        shutil.copy(version / ASSIGNMENT / f"{MINI}.ipynb", target / f"{MINI}.ipynb")
    _nbgrader("autograde", ASSIGNMENT, "--create", cwd=course)

    from nbgrader.api import Gradebook

    with Gradebook(f"sqlite:///{course / 'gradebook.db'}") as gb:
        scores = {}
        for student in ("instructor", "learner"):
            nb = gb.find_submission_notebook(MINI, ASSIGNMENT, student)
            grades = [g for g in nb.grades if g.cell.name.startswith(f"{MINI}-test-")]
            assert len(grades) == n_exercises
            scores[student] = (sum(g.score for g in grades), sum(g.max_score for g in grades))
    assert scores["instructor"] == (n_exercises, n_exercises)
    assert scores["learner"] == (0, n_exercises)
