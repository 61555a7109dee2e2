"""An nbgrader assignment made from the course notebooks' solution markers (``course nbgrader-source``).

The instructor notebooks mark solutions with nbgrader's own ``### BEGIN SOLUTION`` /
``### END SOLUTION`` lines, but nbgrader also needs cell metadata, which the
notebooks in ``notebooks/`` do not carry (they are the course, edited and tested
as plain notebooks). This module writes the nbgrader *source* version of each
notebook into a course directory, adding:

- ``solution`` metadata on every cell holding a solution region (nbgrader's
  ``generate_assignment`` replaces the region by ``raise NotImplementedError()``);
- after each cell that calls an exercise check (``check_...(``), an autograded
  test cell (``grade: true``, ``points``, locked) whose body is
  ``course_lib.exercises.require_passed()``: it raises unless the checks run
  since the previous test cell all passed. The released notebook's placeholder
  raises before its check runs, so the test cell fails: zero points;
- read-only (``locked``) markdown cells: the exercise statements.

Then, in the course directory: ``nbgrader generate_assignment NAME``, hand out
``release/NAME/``, collect into ``submitted/STUDENT/NAME/``, ``nbgrader autograde
NAME``. ``tests/test_nbgrader.py`` runs that round trip (instructor version: full
marks; released version: zero). nbgrader's metadata format is its schema version 3
(nbgrader/nbgraderformat/v3.py in nbgrader 0.9.6).
"""

from __future__ import annotations

import argparse
import copy
import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from course_lib.engine import CourseError
from course_lib.notebook_export import BEGIN, _CHECK_CALL, _course_notebooks

if TYPE_CHECKING:
    from nbformat import NotebookNode

TEST_CELL = (
    "# Autograded (nbgrader): the exercise check in the cell above must pass.\n"
    "from course_lib.exercises import require_passed\n\n"
    "require_passed()"
)
CONFIG = """# nbgrader configuration written by `course nbgrader-source`.
c = get_config()  # noqa: F821
c.CourseDirectory.root = {root!r}
c.CourseDirectory.course_id = "prefix-caching-course"
# Exercise cells run vLLM on CPU: give them time.
c.ExecutePreprocessor.timeout = 1200
"""


def _meta(kind: str, grade_id: str, points: float = 0) -> dict:
    meta = {"grade": kind == "test", "solution": kind == "solution", "locked": kind != "solution",
            "grade_id": grade_id, "schema_version": 3}  # fmt: skip
    if kind == "test":
        meta["points"] = points
    return meta


@dataclass
class AssignmentNotebook:
    source: Path
    target: Path
    solution_cells: int
    test_cells: int


def nbgrader_notebook(nb: NotebookNode, *, prefix: str, points: float = 1) -> tuple[NotebookNode, int, int]:
    """The nbgrader source version of a course notebook (the argument is not modified).

    Returns the notebook, its number of solution cells and of autograded test cells.
    """
    import nbformat

    nb = copy.deepcopy(nb)
    solutions = [i for i, c in enumerate(nb.cells) if BEGIN in c.source]
    tested: set[int] = set()
    for s in solutions:
        j = next((k for k in range(s, len(nb.cells)) if nb.cells[k].cell_type == "code"
                  and _CHECK_CALL.search(nb.cells[k].source)), None)  # fmt: skip
        if j is not None:
            tested.add(j)
    cells = []
    n_tests = 0
    for i, cell in enumerate(nb.cells):
        cell.metadata.pop("nbgrader", None)
        if i in solutions:
            cell.metadata["nbgrader"] = _meta("solution", f"{prefix}-solution-{i}")
        elif cell.cell_type == "markdown":
            cell.metadata["nbgrader"] = _meta("readonly", f"{prefix}-text-{i}")
        cells.append(cell)
        if i in tested:
            test = nbformat.v4.new_code_cell(TEST_CELL)
            test.metadata["nbgrader"] = _meta("test", f"{prefix}-test-{i}", points)
            cells.append(test)
            n_tests += 1
    nb.cells = cells
    return nb, len(solutions), n_tests


def write_nbgrader_source(
    notebooks: str | Path, course_dir: str | Path, assignment: str, *, points: float = 1, force: bool = False
) -> list[AssignmentNotebook]:
    """Write ``COURSE_DIR/source/ASSIGNMENT/*.ipynb`` (and ``nbgrader_config.py`` if missing)."""
    import nbformat

    if not re.fullmatch(r"[A-Za-z0-9_-]+", assignment):
        raise CourseError(f"assignment name {assignment!r}: use letters, digits, '-' and '_' only")
    src, root = Path(notebooks), Path(course_dir)
    target_dir = root / "source" / assignment
    paths = _course_notebooks(src)
    existing = [p for p in paths if (target_dir / p.name).exists()]
    if existing and not force:
        raise CourseError(f"{target_dir / existing[0].name} already exists; pass --force to overwrite")
    results = []
    converted = []
    for path in paths:
        prefix = re.sub(r"[^A-Za-z0-9_-]", "-", path.stem)
        nb, n_sol, n_test = nbgrader_notebook(nbformat.read(path, as_version=4), prefix=prefix, points=points)
        converted.append((path, nb, n_sol, n_test))
    target_dir.mkdir(parents=True, exist_ok=True)
    for path, nb, n_sol, n_test in converted:
        nbformat.write(nb, target_dir / path.name)
        results.append(AssignmentNotebook(path, target_dir / path.name, n_sol, n_test))
    config = root / "nbgrader_config.py"
    if not config.exists():
        config.write_text(CONFIG.format(root=str(root.resolve())), encoding="utf-8")
    return results


def cli_nbgrader_source(args: argparse.Namespace) -> int:
    """``course nbgrader-source COURSE_DIR [--notebooks notebooks] [--assignment NAME] [--points N] [--force]``."""
    results = write_nbgrader_source(args.notebooks, args.course_dir, args.assignment, points=args.points, force=args.force)
    for r in results:
        print(f"{r.target}  ({r.solution_cells} solution cell(s), {r.test_cells} autograded test cell(s))")
    print(f"next: cd {args.course_dir} && nbgrader generate_assignment {args.assignment}")
    return 0
