"""The committed notebooks as a reader finds them on GitHub or nbviewer, before running anything.

nbval (``make test``) re-executes every notebook; these checks look at the stored files:
each is executed, carries no error and no stderr text, pins at least one result, starts with
``check_env()``, and every plotly figure also carries a static image (``make notebooks``).
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((REPO / "notebooks").glob("*.ipynb"))
PLOTLY = "application/vnd.plotly.v1+json"


def _code_cells(path: Path) -> list[dict]:
    return [c for c in json.loads(path.read_text())["cells"] if c["cell_type"] == "code"]


def test_the_course_has_its_notebooks_in_teaching_order():
    # 00-07, then 08 troubleshooting (and 09 second tier when it lands): numbered with no gap.
    assert len(NOTEBOOKS) >= 9 and [p.name[:2] for p in NOTEBOOKS] == [f"{i:02d}" for i in range(len(NOTEBOOKS))]


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_committed_notebook_is_executed_clean_and_pinned(path):
    cells = _code_cells(path)
    assert "check_env()" in "".join(cells[0]["source"]) or "check_env()" in "".join(cells[1]["source"])
    assert all(c.get("execution_count") is not None for c in cells), "commit it executed (make notebooks)"
    outputs = [o for c in cells for o in c.get("outputs", [])]
    assert not [o for o in outputs if o.get("output_type") == "error"]
    assert not [o for o in outputs if o.get("output_type") == "stream" and o.get("name") == "stderr"]
    assert any("NBVAL_CHECK_OUTPUT" in "".join(c["source"]) for c in cells)


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_every_plotly_figure_carries_a_static_image(path):
    figures = [o["data"] for c in _code_cells(path) for o in c.get("outputs", []) if PLOTLY in o.get("data", {})]
    missing = [i for i, d in enumerate(figures) if not ({"image/png", "image/svg+xml"} & d.keys())]
    assert not missing, f"figures {missing} have no PNG/SVG: run `make notebooks NB={path.relative_to(path.parents[1])}`"


def _figures(path: Path) -> list[dict]:
    return [o["data"][PLOTLY] for c in _code_cells(path) for o in c.get("outputs", []) if PLOTLY in o.get("data", {})]


def _untitled_axes(figure: dict) -> list[str]:
    """The axes a reader sees (ticks shown) that have no title: each must say what it shows."""
    layout = figure.get("layout", {})
    used = {t.get(k, ax) for t in figure.get("data", []) for k, ax in (("xaxis", "x"), ("yaxis", "y"))}
    bad = []
    for ref in sorted(used):
        key = ref.replace("x", "xaxis", 1) if ref.startswith("x") else ref.replace("y", "yaxis", 1)
        axis = layout.get(key, {})
        if axis.get("visible") is False or axis.get("showticklabels") is False:
            continue
        title = axis.get("title", {})
        if not (title.get("text") if isinstance(title, dict) else title):
            bad.append(key)
    return bad


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_every_figure_titles_its_visible_axes(path):
    untitled = {
        (i, f.get("layout", {}).get("title", {}).get("text", "?")): axes
        for i, f in enumerate(_figures(path))
        if (axes := _untitled_axes(f))
    }  # fmt: skip
    assert not untitled, f"axes without a title (figure index, title): {untitled}"


_OUTLINE_WORDS = re.compile(
    r"seed lesson|seed['\u2019]s\b|\bthe seed (lesson|scenario|claims?|draws|warms|demo|says|text|code|example)\b"
    r"|SEED_[A-Z]|seed[-_ ]scenario",
    re.I,
)


@pytest.mark.parametrize(
    "path",
    NOTEBOOKS + sorted(REPO.glob("quizzes/*.yaml")) + [REPO / "README.md"] + sorted(REPO.glob("course_lib/**/*.py")),
    ids=lambda p: str(p.relative_to(REPO)),
)
def test_the_course_stands_on_its_own(path):
    """No reference to the outline the course grew from: a learner does not have it."""
    found = _OUTLINE_WORDS.findall(path.read_text(encoding="utf-8", errors="replace"))
    assert not found, f"{len(found)} reference(s) to a document learners do not have"


def _markdown(path: Path) -> list[str]:
    return ["".join(c["source"]) for c in json.loads(path.read_text())["cells"] if c["cell_type"] == "markdown"]


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_each_notebook_opens_with_time_assumptions_and_objectives(path):
    opening = _markdown(path)[0]
    assert re.search(r"\*\*Time[^*]*\*\*", opening), "say how long the notebook takes"
    assert re.search(r"\*\*(Assumes|You need|You should know)", opening), "say what it assumes"
    objectives = re.findall(r"^\d+\. ", opening, re.M)
    assert 3 <= len(objectives) <= 5, f"3-5 numbered objectives, found {len(objectives)}"


@pytest.mark.parametrize("path", NOTEBOOKS[1:], ids=lambda p: p.stem)
def test_vllm_internals_wait_in_a_going_deeper_section_at_the_end(path):
    headings = [m for md in _markdown(path) for m in re.findall(r"^#+ (.+)$", md, re.M)]
    deeper = [i for i, h in enumerate(headings) if h.strip().lower().startswith("going deeper")]
    assert deeper, "a 'Going deeper' section"
    assert len(headings) - deeper[0] <= 12, "'Going deeper' comes at the end (after the main path's sections)"
