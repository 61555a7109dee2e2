"""The committed notebooks as a reader finds them on GitHub or nbviewer, before running anything.

nbval (``make test``) re-executes every notebook; these checks look at the stored files:
each is executed, carries no error and no stderr text, pins at least one result, starts with
``check_env()``, and every plotly figure also carries a static image (``make notebooks``).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

NOTEBOOKS = sorted((Path(__file__).resolve().parents[1] / "notebooks").glob("*.ipynb"))
PLOTLY = "application/vnd.plotly.v1+json"


def _code_cells(path: Path) -> list[dict]:
    return [c for c in json.loads(path.read_text())["cells"] if c["cell_type"] == "code"]


def test_the_course_has_its_eight_notebooks_in_teaching_order():
    assert [p.name[:2] for p in NOTEBOOKS] == [f"{i:02d}" for i in range(8)]


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
