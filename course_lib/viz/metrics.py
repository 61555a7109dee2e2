"""The hit-rate figures of notebook 06: a chart of scrape intervals, and one that redraws live."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Sequence

if TYPE_CHECKING:  # plotly is imported inside each function: importing course_lib stays fast
    import plotly.graph_objects as go

from course_lib.viz.static import _figure_bundle
from course_lib.viz.style import COLORS


def hit_rate_figure(rows: list[dict], target: float | None = 0.7, title: str = "Prefix cache hit rate") -> "go.Figure":
    """Hit rate over time from ``course_lib.metrics.hit_rate_timeline`` rows (notebook 06).

    Two lines: the hit rate of each scrape interval (gaps where the server was idle)
    and the cumulative one since the first scrape; a dashed line marks ``target``
    (a target often quoted for chat: more than 70%).
    """
    import plotly.graph_objects as go

    t = [r["t"] for r in rows]
    fig = go.Figure()
    fig.add_scatter(x=t, y=[r["interval"] for r in rows], mode="lines+markers", name="per interval")
    fig.add_scatter(x=t, y=[r["cumulative"] for r in rows], mode="lines", name="cumulative", line={"width": 3})
    if target is not None:
        fig.add_hline(y=target, line_dash="dash", line_color=COLORS["bound"], annotation_text=f"target {target:.0%}")
    fig.update_layout(
        title=title, xaxis_title="time since the first scrape (s)",
        yaxis_title="hit rate (% of prompt tokens cached)",
        yaxis={"range": [0, 1.05], "tickformat": ".0%"}, height=380, margin={"t": 50, "b": 40},
    )  # fmt: skip
    return fig


class LiveHitRateChart:
    """A hit-rate chart that redraws while traffic runs, then stays as a plain figure (notebook 06).

    Each ``update`` replaces the cell's output with the figure of the rows so far
    (``clear_output(wait=True)``, then the figure): the frontend draws every version as a new
    plotly output while the cell is still running (JupyterLab 4, Notebook 7; checked in a real
    browser by ``tests/test_browser.py``). So the chart owns its cell's output: create it in the
    cell that runs the loop, and print after the loop. ``finish()`` draws the final version the
    way every other figure is displayed (with a PNG next to it when static figures are on), which
    is what the saved notebook, GitHub and nbviewer show.

    Three mechanisms that do not work in JupyterLab 4: updating a plotly output in place through
    an IPython display handle (the plotly renderer keeps the first version until a reload); and
    any widget (an ``ipywidgets.Output``, plotly's ``FigureWidget``) when it is the kernel's first
    widget: JupyterLab's widget manager starts with the first widget output, misses that widget's
    creation, and recovers it by asking the kernel, which answers only after the running cell ends.
    (``FigureWidget`` is also an anywidget whose state carries plotly.js, about 5 MB, which
    nbclient saves into the executed notebook.) Outside IPython nothing is displayed: ``update``
    keeps the rows and ``figure()`` draws them.
    """

    def __init__(self, target: float | None = 0.7, title: str = "Prefix cache hit rate (live)") -> None:
        self.target, self.title = target, title
        self.rows: list[dict] = []
        try:
            from IPython import get_ipython
        except ImportError:
            self._live = False
        else:
            self._live = get_ipython() is not None
        if self._live:
            self._draw()

    def figure(self) -> "go.Figure":
        """The chart of the rows so far, as a plain figure."""
        return hit_rate_figure(self.rows, self.target, self.title)

    def _draw(self, final: bool = False) -> None:
        from IPython.display import clear_output, display

        clear_output(wait=True)  # the old version goes when the new one arrives: no flicker
        fig = self.figure()
        # While live, plotly's JSON only: a PNG per redraw would cost kaleido time at every scrape.
        display(_figure_bundle(fig) if final else {"application/vnd.plotly.v1+json": fig.to_plotly_json(),
                                                   "text/plain": f"<live chart: {len(self.rows)} intervals>"},
                raw=True)  # fmt: skip

    def update(self, rows: list[dict]) -> None:
        """Redraw with the rows so far (``course_lib.metrics.hit_rate_timeline``)."""
        self.rows = list(rows)
        if self._live:
            self._draw()

    def finish(self) -> None:
        """Draw the final version as a regular figure (kept in the saved notebook; ``figure()`` returns it)."""
        if self._live:
            self._draw(final=True)
