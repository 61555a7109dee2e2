"""The wheel and the student bundle: what leaves the instructor's hands.

- The wheel built from pyproject.toml holds course_lib with its exercises, the quiz package and the
  keyless quiz copies, and no quiz key field and no solution line anywhere.
- Installed (``pip install --no-deps``) into a fresh venv outside the repository, it runs the learner
  notebooks' imports, an exercise check and the quiz widget (exam mode, a gradable submission).
  The venv borrows the heavy dependencies (vLLM, torch) from ``.venv`` through a ``.pth`` line
  appended AFTER its own site-packages, so ``course_lib`` itself can only come from the wheel (asserted).
- ``course export-student --bundle`` writes learner notebooks, keyless quizzes and a README, nothing else.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import nbformat
import pytest
import yaml

from course_lib import quiz as Q
from course_lib.notebook_export import solution_lines, strip_solutions
from test_notebook_export import assert_no_solution_text
from test_quiz import perfect_answers, walk_keys

REPO = Path(__file__).resolve().parents[1]


def _solution_only_lines() -> set[str]:
    """Lines inside the instructor notebooks' solution regions that appear nowhere else in them."""
    inside, outside = set(), set()
    for path in sorted((REPO / "notebooks").glob("*.ipynb")):
        nb = nbformat.read(path, as_version=4)
        for cell in nb.cells:
            inside |= set(solution_lines(cell.source))
            outside |= {line.strip() for line in strip_solutions(cell.source, cell_type=cell.cell_type)[0].splitlines()}
    return {line for line in inside - outside if len(line) >= 12}


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    cmd = [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(out), str(REPO)]
    subprocess.run(cmd, check=True, cwd=out, capture_output=True)
    (path,) = out.glob("prefix_caching_course-*.whl")
    return path


def test_wheel_holds_the_package_and_no_key_or_solution(wheel):
    with zipfile.ZipFile(wheel) as zf:
        names = zf.namelist()
        for needed in ("course_lib/exercises/__init__.py", "course_lib/exercises/nb02.py", "course_lib/quiz/__init__.py",
                       "course_lib/quiz/widget.py", "course_lib/data/quiz.schema.json",
                       "course_lib/data/quizzes/02_block_hashing.yaml", "course_lib/data/quizzes/module2.yaml"):  # fmt: skip
            assert needed in names, needed
        assert not [n for n in names if n.startswith("quizzes/") or n.endswith(".ipynb")]
        quizzes = [n for n in names if n.startswith("course_lib/data/quizzes/")]
        # The same files as course_lib/data/quizzes/ (tests/test_quiz.py checks those against quizzes/).
        assert sorted(Path(n).name for n in quizzes) == sorted(p.name for p in Q.PACKAGED_QUIZ_DIR.glob("*.yaml"))
        secret = _solution_only_lines()
        assert secret, "the instructor notebooks should have solutions to look for"
        for name in names:
            data = zf.read(name)
            if name.endswith((".yaml", ".yml")):
                assert not walk_keys(yaml.safe_load(data)) & set(Q.KEY_FIELDS), name
            try:
                text = data.decode("utf-8")
            except UnicodeDecodeError:
                continue  # gzipped traces
            if name.endswith(".py"):
                # The course's modules are the library the checks compute answers with (allowed):
                # course_lib.fleet, for one, walks block hashes exactly as exercise 02.1's solution
                # does. What must not ship is the notebooks' solution text: data files, notebooks.
                continue
            leaked = [line for line in secret if line in text]
            assert not leaked, (name, leaked[:3])


def test_the_bundle_holds_learner_notebooks_keyless_quizzes_and_a_readme(tmp_path):
    out = tmp_path / "bundle"
    cmd = [sys.executable, "-m", "course_lib.cli", "export-student", str(REPO / "notebooks"), "--bundle", str(out)]
    subprocess.run(cmd, check=True, cwd=tmp_path, capture_output=True)
    files = sorted(p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file())
    notebooks = sorted(p.name for p in (REPO / "notebooks").glob("*.ipynb"))
    quizzes = sorted(p.name for p in (REPO / "quizzes").glob("*.yaml"))
    assert files == sorted(["README.md", *(f"notebooks/{n}" for n in notebooks), *(f"quizzes/{q}" for q in quizzes)])
    secret = _solution_only_lines()
    for rel in files:
        text = (out / rel).read_text(encoding="utf-8")
        if not rel.endswith(".ipynb"):  # a notebook gets the line-by-line check below (a solution line may
            assert not [line for line in secret if line in text], rel  # be part of a lesson's own line)
        if rel.endswith(".yaml"):
            data = yaml.safe_load(text)
            assert not walk_keys(data) & set(Q.KEY_FIELDS), rel
            assert data["student_copy"] is True and data["version"] == Q.load_quiz(Path(rel).stem).version
        if rel.endswith(".ipynb"):
            assert_no_solution_text(REPO / rel, out / rel)
    assert "Save answers" in (out / "README.md").read_text() and "hint(" in (out / "README.md").read_text()
    again = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True)
    assert again.returncode == 2 and "not empty" in again.stderr


INSTALLED_CHECK = r"""
import json, sys
from pathlib import Path
import course_lib
assert Path(course_lib.__file__).resolve().is_relative_to(Path(sys.prefix).resolve()), course_lib.__file__
for statement in json.loads(Path(sys.argv[1]).read_text()):
    exec(statement, {})
from course_lib.exercises import nb02
from course_lib.simulator import PrefixCacheSimulator

def predict(first, first_output, second, block_size):
    sim = PrefixCacheSimulator(1000, block_size)
    sim.process(first, first_output)
    return sim.process(second)

assert nb02.check_predict_cached(predict).ok
wrong = nb02.check_predict_cached(lambda a, out, b, bs: len(b))
assert not wrong.ok and wrong.hint(1)
from course_lib import quiz
assert quiz.quiz_dir() == quiz.PACKAGED_QUIZ_DIR
view = quiz.build("02_block_hashing", student="ada")
assert view.mode == "exam" and not view.quiz.has_key
view.fill(json.loads(sys.argv[2]))
print(view.save(sys.argv[3]))
"""


def test_the_wheel_installed_outside_the_repo_runs_imports_an_exercise_and_the_quiz(wheel, tmp_path):
    env_dir = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(env_dir)], check=True)
    python = env_dir / "bin" / "python"
    pip = [sys.executable, "-m", "pip", "--python", str(python), "install", "-q", "--no-deps", "--no-index"]
    subprocess.run([*pip, str(wheel)], check=True, capture_output=True)
    site = subprocess.run([python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                          check=True, capture_output=True, text=True).stdout.strip()  # fmt: skip
    # The dependencies, after the venv's own site-packages (so course_lib comes from the wheel).
    Path(site, "zz_course_deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    imports = []
    for path in sorted((REPO / "notebooks").glob("*.ipynb")):
        for cell in nbformat.read(path, as_version=4).cells:
            if cell.cell_type == "code":
                imports += [line for line in cell.source.splitlines() if line.startswith(("import ", "from "))]
    assert any("course_lib.exercises" in line for line in imports)
    (tmp_path / "imports.json").write_text(json.dumps(sorted(set(imports))))
    (tmp_path / "check.py").write_text(INSTALLED_CHECK)
    keyed = Q.load_quiz(REPO / "quizzes" / "02_block_hashing.yaml")
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", Q.QUIZ_DIR_ENV)}
    run = subprocess.run(
        [python, "check.py", "imports.json", json.dumps(perfect_answers(keyed)), "ada.json"],
        cwd=tmp_path, env=env, capture_output=True, text=True,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr[-3000:]
    # The submission saved from the keyless copy is graded with the instructor's key, same version.
    book = Q.grade(keyed, [tmp_path / "ada.json"])
    assert not book.problems and not book.warnings
    assert book.rows[0].total == pytest.approx(keyed.max_points)
