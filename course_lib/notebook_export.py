"""Learner copies of the course: notebooks without solutions, and the bundle an instructor hands out.

The instructor notebooks in ``notebooks/`` keep their solutions between lines
``### BEGIN SOLUTION`` and ``### END SOLUTION`` (nbgrader's markers: see
``course_lib.nbgrader_source`` for a real nbgrader assignment made from them), so
they run and are tested as they are. A learner copy replaces each marked region
by a stub the learner completes (``name = ...`` for each name the solution assigns, a
function's signature with a body that raises ``NotImplementedError``), so every cell still
runs: the exercise's check answers "not yet" and Run All reaches the end. It clears the
outputs of the exercise cells (the cells holding a solution, the cells that call
an exercise check, and later cells that use a name the solution defines) and the
stored widget state; every other output stays as in the course.

- ``make lab`` runs ``course export-student --update`` (default ``notebooks/`` ->
  ``learner/``, which git ignores) and opens ``learner/``. A learner's file is
  never overwritten: ``--update`` adds notebooks that are new and says which
  existing copies differ from the course, and why (edited by the learner, or the
  course changed since the copy was made; ``learner/.course-export.json`` records
  what was written).
- ``course export-student --bundle DIR``: learner notebooks, the quizzes without
  keys and a README for students, nothing else.
"""

from __future__ import annotations

import argparse
import ast
import hashlib
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from course_lib.engine import CourseError

if TYPE_CHECKING:
    from nbformat import NotebookNode

BEGIN = "### BEGIN SOLUTION"
END = "### END SOLUTION"
CODE_PLACEHOLDER = ("# TODO: write your solution here.", 'raise NotImplementedError("exercise not solved yet")')
MARKDOWN_PLACEHOLDER = ("_Write your answer here._",)
MANIFEST = ".course-export.json"
WIDGET_VIEW = "application/vnd.jupyter.widget-view+json"

_MARKER = re.compile(r"^(?P<indent>[ \t]*)(?P<marker>### (?:BEGIN|END) SOLUTION)\s*$")
_CHECK_CALL = re.compile(r"\bcheck_\w+\s*\(")
_NBVAL_MARKER = re.compile(r"^[ \t]*# NBVAL_[A-Z_]+[ \t]*\n?", re.M)


def strip_solutions(source: str, *, cell_type: str = "code", where: str = "cell") -> tuple[str, int]:
    """Replace every solution region of ``source`` by a placeholder.

    Returns the new source and how many regions were replaced. The placeholder
    keeps the indentation of the ``BEGIN`` marker, so a solution inside a
    function body leaves a valid body. Unbalanced markers raise ``CourseError``.
    """
    out: list[str] = []
    inside = False
    count = 0
    region: list[str] = []
    indent = ""
    for number, line in enumerate(source.splitlines(keepends=True), 1):
        match = _MARKER.match(line.rstrip("\r\n"))
        if match and match["marker"] == BEGIN:
            if inside:
                raise CourseError(f"{where}, line {number}: '{BEGIN}' inside another solution region")
            inside, count, region, indent = True, count + 1, [], match["indent"]
        elif match and match["marker"] == END:
            if not inside:
                raise CourseError(f"{where}, line {number}: '{END}' without a '{BEGIN}' before it")
            inside = False
            placeholder = solution_stub("".join(region)) if cell_type == "code" else MARKDOWN_PLACEHOLDER
            out.extend(f"{indent}{p}\n" for p in placeholder)
        elif inside:
            region.append(line)
        else:
            out.append(line)
    if inside:
        raise CourseError(f"{where}: '{BEGIN}' is never closed by '{END}'")
    text = "".join(out)
    if not source.endswith("\n") and text.endswith("\n"):
        text = text[:-1]
    return text, count


def solution_stub(region: str) -> tuple[str, ...]:
    """What a learner gets instead of a solution region: lines that run, and that the check recognises.

    Each name the solution assigns becomes ``name = ...`` (the check answers "not yet" for ``...``);
    each function keeps its signature and docstring, with a body that raises
    ``NotImplementedError`` (which the check also answers with "not yet"). A region that is not
    valid Python on its own (say, a ``return`` inside a function's body) falls back to a comment
    and ``raise NotImplementedError``: the check calling that function answers "not yet" too.
    """
    import textwrap

    code = textwrap.dedent(region)
    try:
        tree = ast.parse(code)
    except SyntaxError:
        return CODE_PLACEHOLDER
    if _returns_outside_a_function(tree):  # a region in a function's body: its value comes from the solution
        return CODE_PLACEHOLDER
    lines: list[str] = []
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            doc = ast.get_docstring(node)
            stub = ast.FunctionDef(
                name=node.name, args=node.args, decorator_list=node.decorator_list, returns=node.returns,
                type_params=getattr(node, "type_params", []),
                body=([ast.Expr(ast.Constant(doc))] if doc else [])
                + [ast.Raise(ast.Call(ast.Name("NotImplementedError"), [ast.Constant("write this function")], []))],
            )  # fmt: skip
            lines.extend(ast.unparse(ast.fix_missing_locations(stub)).splitlines())
        else:
            stored = _assigned_names(node)
            lines.extend(f"{name} = ..." for name in dict.fromkeys(stored) if f"{name} = ..." not in lines)
    todo = [w for w, has in (("replace each ... with your answer", any(l.endswith("= ...") for l in lines)),
                             ("write the body of each function", any(l.startswith("def ") for l in lines))) if has]  # fmt: skip
    return (f"# TODO: {' and '.join(todo) or 'write your solution here'}.", *(lines or ["..."]))


def _assigned_names(node: ast.AST) -> list[str]:
    """Names ``node`` binds in the cell's namespace, in order: not a comprehension's or a lambda's own."""
    names: list[str] = []
    todo = [node]
    while todo:
        current = todo.pop(0)
        if isinstance(current, ast.Name) and isinstance(current.ctx, ast.Store):
            names.append(current.id)
        elif not isinstance(current, (ast.ListComp, ast.SetComp, ast.DictComp, ast.GeneratorExp, ast.Lambda)):
            todo.extend(ast.iter_child_nodes(current))
    return names


def _returns_outside_a_function(tree: ast.AST) -> bool:
    """True when ``return`` (or ``yield``) appears in ``tree`` outside any function it defines."""
    todo = list(ast.iter_child_nodes(tree))
    while todo:
        node = todo.pop()
        if isinstance(node, (ast.Return, ast.Yield, ast.YieldFrom)):
            return True
        if not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda, ast.ClassDef)):
            todo.extend(ast.iter_child_nodes(node))
    return False


def solution_lines(source: str) -> list[str]:
    """The non-blank lines inside the solution regions of ``source`` (what must never reach a learner)."""
    lines, inside = [], False
    for line in source.splitlines():
        match = _MARKER.match(line)
        if match:
            inside = match["marker"] == BEGIN
        elif inside and line.strip():
            lines.append(line.strip())
    return lines


def defined_names(source: str) -> set[str]:
    """Top-level names a cell binds (functions, classes, assignments, imports); magics are ignored."""
    code = "\n".join("" if line.lstrip().startswith(("%", "!")) else line for line in source.splitlines())
    try:
        tree = ast.parse(code)
    except SyntaxError:
        return set()
    names: set[str] = set()
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.add(node.name)
        elif isinstance(node, (ast.Assign, ast.AnnAssign, ast.AugAssign, ast.For, ast.With)):
            targets = node.targets if isinstance(node, ast.Assign) else [getattr(node, "target", None)]
            for t in targets:
                names |= {n.id for n in ast.walk(t) if isinstance(n, ast.Name)} if t is not None else set()
    return names


def exercise_cells(nb: NotebookNode) -> set[int]:
    """Indices of the cells whose outputs could show a solution: solution cells, cells calling a
    check, and later code cells that use a name a solution cell defines."""
    marked = {i for i, c in enumerate(nb.cells) if c.cell_type == "code" and BEGIN in c.source}
    names: set[str] = set()
    for i in marked:
        names |= defined_names(nb.cells[i].source)
    uses = re.compile(r"\b(?:" + "|".join(map(re.escape, sorted(names))) + r")\b") if names else None
    out = set(marked)
    first = min(marked, default=len(nb.cells))
    for i, cell in enumerate(nb.cells):
        if cell.cell_type != "code" or i in out:
            continue
        if _CHECK_CALL.search(cell.source) or (i > first and uses is not None and uses.search(cell.source)):
            out.add(i)
    return out


@dataclass
class ExportedNotebook:
    source: Path
    target: Path
    solutions_removed: int
    status: str = "written"  # written | up to date | edited by you | the course changed | both changed


def student_notebook(nb: NotebookNode, *, where: str = "notebook") -> tuple[NotebookNode, int]:
    """A learner copy of a parsed notebook (the argument is not modified)."""
    import copy

    nb = copy.deepcopy(nb)
    clear = exercise_cells(nb)
    removed = 0
    for index, cell in enumerate(nb.cells):
        if cell.cell_type in ("code", "markdown"):
            cell.source, n = strip_solutions(cell.source, cell_type=cell.cell_type, where=f"{where}, cell {index}")
            removed += n
        if cell.cell_type != "code":
            continue
        cell.source = _NBVAL_MARKER.sub("", cell.source)  # the test suite's markers mean nothing to a learner
        if index in clear:
            cell.outputs = []
            cell.execution_count = None
            cell.metadata.pop("execution", None)
        else:  # the stored widget state goes (it may hold exercise results): keep the other representations
            for out in cell.outputs:
                if "data" in out and WIDGET_VIEW in out["data"]:
                    del out["data"][WIDGET_VIEW]
            cell.outputs = [o for o in cell.outputs if "data" not in o or o["data"]]
    nb.metadata.pop("widgets", None)
    return nb, removed


def source_digest(nb: NotebookNode) -> str:
    """A hash of a notebook's cell types and sources: running it (outputs) does not change it."""
    parts = [[c.cell_type, c.source] for c in nb.cells]
    return hashlib.sha256(json.dumps(parts, ensure_ascii=False).encode("utf-8")).hexdigest()[:16]


def _course_notebooks(src: Path) -> list[Path]:
    if not src.is_dir():
        raise CourseError(f"{src} is not a directory of notebooks")
    paths = sorted(p for p in src.rglob("*.ipynb") if ".ipynb_checkpoints" not in p.parts)
    if not paths:
        raise CourseError(f"no notebooks (*.ipynb) in {src}")
    return paths


def export_student_notebooks(
    source_dir: str | Path, out_dir: str | Path, *, force: bool = False, update: bool = False
) -> list[ExportedNotebook]:
    """Write learner copies of every ``*.ipynb`` under ``source_dir`` into ``out_dir``.

    Sub-folders are mirrored; Jupyter's ``.ipynb_checkpoints`` are skipped. Existing
    files: without flags the export stops before writing anything; ``update`` writes
    only the missing notebooks and reports how each existing copy differs; ``force``
    overwrites them.
    """
    import nbformat

    src, dst = Path(source_dir), Path(out_dir)
    if dst.resolve() == src.resolve() or src.resolve() in dst.resolve().parents:
        raise CourseError(f"the output folder {dst} must be outside {src}: the instructor notebooks stay as they are")
    plan = [(p, dst / p.relative_to(src)) for p in _course_notebooks(src)]
    existing = [str(t) for _, t in plan if t.exists()]
    if existing and not (force or update):
        raise CourseError(
            f"{len(existing)} file(s) already exist, e.g. {existing[0]}; pass --update to add only new notebooks, "
            "or --force to overwrite them"
        )
    # Convert everything first, so a notebook with broken markers writes nothing.
    converted = []
    for source, target in plan:
        student, removed = student_notebook(nbformat.read(source, as_version=4), where=str(source))
        converted.append((source, target, student, removed))
    manifest_path = dst / MANIFEST
    try:
        manifest: dict[str, Any] = json.loads(manifest_path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        manifest = {}
    results = []
    for source, target, student, removed in converted:
        key = target.relative_to(dst).as_posix()
        new = source_digest(student)
        if target.exists() and not force:
            try:
                mine = source_digest(nbformat.read(target, as_version=4))
            except Exception:  # unreadable: the learner's file anyway, never touched
                mine = "unreadable"
            written = manifest.get(key)
            if mine == new:
                status = "up to date"
            elif written is None or mine != written:
                status = "edited by you" if written == new or written is None else "both changed"
            else:
                status = "the course changed"
            results.append(ExportedNotebook(source, target, removed, status))
            continue
        target.parent.mkdir(parents=True, exist_ok=True)
        nbformat.write(student, target)
        manifest[key] = new
        results.append(ExportedNotebook(source, target, removed, "written"))
    dst.mkdir(parents=True, exist_ok=True)
    manifest_path.write_text(json.dumps(manifest, indent=1, sort_keys=True) + "\n", encoding="utf-8")
    return results


STUDENT_README = """# Prefix Caching with vLLM: your copy of the course

This folder holds the course notebooks without their solutions and the quizzes
without their answer keys.

1. Install the course package your instructor gives you (a wheel, or
   `pip install prefix-caching-course[cpu]` from your course's package index), in
   Python 3.11 on Linux.
2. Open the notebooks: `jupyter lab notebooks/`.
3. Each notebook starts with `course_lib.check_env()`: run it first.

**Exercises.** Write your code where a cell says `# TODO: write your solution
here.` and run the cell: the automatic check says whether your answer is right.
A wrong answer tells you what kind of mistake it is, not the value; ask for
more help with `course_lib.exercises.hint("02.1")`, then `hint("02.1", 2)`.

**Quizzes.** The last cell of each notebook shows its quiz. Your answers are
recorded, not marked: enter your name, click "Save answers", and hand in the
`.json` file it writes. Your instructor grades it with the answer key
(`course grade`). The files in `quizzes/` are the same questions, for reading
offline.
"""


def export_bundle(source_dir: str | Path, quiz_dir: str | Path, out_dir: str | Path, *, force: bool = False) -> list[Path]:
    """What an instructor hands out: ``notebooks/`` (learner copies), ``quizzes/`` (no keys), ``README.md``."""
    out = Path(out_dir)
    if out.exists() and any(out.iterdir()) and not force:
        raise CourseError(f"{out} is not empty; choose a new folder or pass --force")
    notebooks = export_student_notebooks(source_dir, out / "notebooks", force=True)
    (out / "notebooks" / MANIFEST).unlink(missing_ok=True)  # a bundle is not a learner's working copy yet
    quizzes = export_student_quizzes(quiz_dir, out / "quizzes", force=True)
    readme = out / "README.md"
    readme.write_text(STUDENT_README, encoding="utf-8")
    return [r.target for r in notebooks] + quizzes + [readme]


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


QUIZ_DIR_HINT = "COURSE_QUIZ_DIR"


def cli_export_student(args: argparse.Namespace) -> int:
    """``course export-student [NOTEBOOKS [OUTDIR]] [--update | --force] [--quizzes DIR] [--bundle DIR]``."""
    from course_lib import quiz

    if getattr(args, "bundle", None):
        # Quizzes resolve as in every command (quiz.quiz_dir_origin: the current project first), and we say where from.
        quiz_src, origin = (Path(args.quizzes), "--quizzes") if getattr(args, "quizzes", None) else quiz.quiz_dir_origin()
        print(f"quizzes from {quiz_src} ({origin}); notebooks from {Path(args.notebooks).resolve()}")
        written = export_bundle(args.notebooks, quiz_src, args.bundle, force=args.force)
        print(f"{args.bundle}: student bundle with {len(written)} files (notebooks without solutions, "
              "quizzes without keys, README.md)")  # fmt: skip
        return 0
    quiz_out = Path(args.outdir) / "quizzes"
    if getattr(args, "quizzes", None) and quiz_out.is_dir() and any(quiz_out.glob("*.yaml")) and not args.force:
        raise CourseError(f"{quiz_out} already holds quizzes; pass --force to overwrite them")
    results = export_student_notebooks(args.notebooks, args.outdir, force=args.force, update=args.update)
    quiet = getattr(args, "update", False)
    for r in results:
        if r.status == "written":
            print(f"{r.target}  (new: {r.solutions_removed} solution region(s) removed, exercise outputs cleared)")
        elif r.status != "up to date" or not quiet:
            note = {
                "edited by you": "kept: you edited it",
                "the course changed": "kept: the course changed since this copy was made",
                "both changed": "kept: you edited it and the course changed",
                "up to date": "up to date",
            }[r.status]
            print(f"{r.target}  ({note})")
    differing = [r for r in results if r.status in ("the course changed", "both changed")]
    if differing:
        print(f"{len(differing)} notebook(s) differ from the course's current version; your copies are never "
              f"overwritten: rename one to get a fresh copy on the next `course export-student --update`.")  # fmt: skip
    if getattr(args, "quizzes", None):
        for path in export_student_quizzes(args.quizzes, quiz_out, force=True):
            print(f"{path}  (student copy: no answer key)")
        print(f"Students see these quizzes in exam mode with {QUIZ_DIR_HINT}={quiz_out}")
    return 0
