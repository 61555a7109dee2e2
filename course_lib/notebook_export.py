"""Student notebooks: the instructor notebooks with their exercise solutions removed.

The instructor notebooks in ``notebooks/`` keep their solutions between lines
``### BEGIN SOLUTION`` and ``### END SOLUTION`` (nbgrader's markers, so nbgrader
can be used on them too), so they run and are tested as they are. ``course
export-student notebooks/ OUTDIR`` writes copies in which each marked region is
replaced by a placeholder that fails loudly until the learner fills it in, and
every output, execution count and stored widget state is cleared (outputs could
show the solution's results). The source notebooks are never modified.
"""

from __future__ import annotations

import argparse
import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from course_lib.engine import CourseError

if TYPE_CHECKING:
    from nbformat import NotebookNode

BEGIN = "### BEGIN SOLUTION"
END = "### END SOLUTION"
CODE_PLACEHOLDER = ("# TODO: write your solution here.", 'raise NotImplementedError("exercise not solved yet")')
MARKDOWN_PLACEHOLDER = ("_Write your answer here._",)

_MARKER = re.compile(r"^(?P<indent>[ \t]*)(?P<marker>### (?:BEGIN|END) SOLUTION)\s*$")


def strip_solutions(source: str, *, cell_type: str = "code", where: str = "cell") -> tuple[str, int]:
    """Replace every solution region of ``source`` by a placeholder.

    Returns the new source and how many regions were replaced. The placeholder
    keeps the indentation of the ``BEGIN`` marker, so a solution inside a
    function body leaves a valid body. Unbalanced markers raise ``CourseError``.
    """
    placeholder = CODE_PLACEHOLDER if cell_type == "code" else MARKDOWN_PLACEHOLDER
    out: list[str] = []
    inside = False
    count = 0
    for number, line in enumerate(source.splitlines(keepends=True), 1):
        match = _MARKER.match(line.rstrip("\r\n"))
        if match and match["marker"] == BEGIN:
            if inside:
                raise CourseError(f"{where}, line {number}: '{BEGIN}' inside another solution region")
            inside, count = True, count + 1
            out.extend(f"{match['indent']}{p}\n" for p in placeholder)
        elif match and match["marker"] == END:
            if not inside:
                raise CourseError(f"{where}, line {number}: '{END}' without a '{BEGIN}' before it")
            inside = False
        elif not inside:
            out.append(line)
    if inside:
        raise CourseError(f"{where}: '{BEGIN}' is never closed by '{END}'")
    text = "".join(out)
    if not source.endswith("\n") and text.endswith("\n"):
        text = text[:-1]
    return text, count


@dataclass
class ExportedNotebook:
    source: Path
    target: Path
    solutions_removed: int


def student_notebook(nb: NotebookNode, *, where: str = "notebook") -> tuple[NotebookNode, int]:
    """A student copy of a parsed notebook (the argument is not modified)."""
    import copy

    nb = copy.deepcopy(nb)
    removed = 0
    for index, cell in enumerate(nb.cells):
        if cell.cell_type in ("code", "markdown"):
            cell.source, n = strip_solutions(cell.source, cell_type=cell.cell_type, where=f"{where}, cell {index}")
            removed += n
        if cell.cell_type == "code":
            cell.outputs = []
            cell.execution_count = None
            cell.metadata.pop("execution", None)
    nb.metadata.pop("widgets", None)  # stored widget state is output too
    return nb, removed


def export_student_notebooks(source_dir: str | Path, out_dir: str | Path, *, force: bool = False) -> list[ExportedNotebook]:
    """Write student copies of every ``*.ipynb`` under ``source_dir`` into ``out_dir``.

    Sub-folders are mirrored; Jupyter's ``.ipynb_checkpoints`` are skipped. An
    existing file in ``out_dir`` is kept (the export stops before writing
    anything) unless ``force``.
    """
    import nbformat

    src = Path(source_dir)
    dst = Path(out_dir)
    if not src.is_dir():
        raise CourseError(f"{src} is not a directory of notebooks")
    if dst.resolve() == src.resolve() or src.resolve() in dst.resolve().parents:
        raise CourseError(f"the output folder {dst} must be outside {src}: the instructor notebooks stay as they are")
    paths = sorted(p for p in src.rglob("*.ipynb") if ".ipynb_checkpoints" not in p.parts)
    if not paths:
        raise CourseError(f"no notebooks (*.ipynb) in {src}")
    plan = [(p, dst / p.relative_to(src)) for p in paths]
    existing = [str(t) for _, t in plan if t.exists()]
    if existing and not force:
        raise CourseError(f"{len(existing)} file(s) already exist, e.g. {existing[0]}; pass --force to overwrite them")
    # Convert everything first, so a notebook with broken markers writes nothing.
    converted = []
    for source, target in plan:
        nb = nbformat.read(source, as_version=4)
        student, removed = student_notebook(nb, where=str(source))
        converted.append((source, target, student, removed))
    results = []
    for source, target, student, removed in converted:
        target.parent.mkdir(parents=True, exist_ok=True)
        nbformat.write(student, target)
        results.append(ExportedNotebook(source, target, removed))
    return results


def cli_export_student(args: argparse.Namespace) -> int:
    """``course export-student NOTEBOOKS OUTDIR [--force]``."""
    quiz_out = Path(args.outdir) / "quizzes"
    if getattr(args, "quizzes", None) and quiz_out.is_dir() and any(quiz_out.glob("*.yaml")) and not args.force:
        raise CourseError(f"{quiz_out} already holds quizzes; pass --force to overwrite them")
    results = export_student_notebooks(args.notebooks, args.outdir, force=args.force)
    for r in results:
        print(f"{r.target}  ({r.solutions_removed} solution region(s) removed, outputs cleared)")
    if getattr(args, "quizzes", None):
        written = export_student_quizzes(args.quizzes, quiz_out, force=True)
        for path in written:
            print(f"{path}  (student copy: no answer key)")
        print(f"Students see these quizzes in exam mode with {QUIZ_DIR_HINT}={quiz_out}")
    return 0


QUIZ_DIR_HINT = "COURSE_QUIZ_DIR"


def export_student_quizzes(quiz_dir: str | Path, out_dir: str | Path, *, force: bool = False) -> list[Path]:
    """Student copies (no key, exam mode) of every quiz in ``quiz_dir``, written to ``out_dir``.

    The notebooks' ``quiz.show("NN_name")`` finds them when ``COURSE_QUIZ_DIR`` points at ``out_dir``.
    """
    from course_lib import quiz

    sources = quiz.all_quiz_paths(Path(quiz_dir))
    if not sources:
        raise CourseError(f"no quiz files (*.yaml) in {quiz_dir}")
    targets = [Path(out_dir) / p.name for p in sources]
    existing = [str(t) for t in targets if t.exists()]
    if existing and not force:
        raise CourseError(f"{existing[0]} already exists; pass --force to overwrite it")
    quizzes = [quiz.load_quiz(p) for p in sources]  # validate them all before writing any
    return [quiz.export_student(q, t, force=force) for q, t in zip(quizzes, targets)]
