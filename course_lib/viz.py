"""Plotly figures for the course: where people would rather look than read.

Each function returns a ``plotly.graph_objects.Figure`` (show it with ``fig.show()``)
and says in its docstring which notebook uses it.
"""

from __future__ import annotations


# --- metrics (notebook 05) ---


def hit_rate_figure(rows: list[dict], target: float | None = 0.7, title: str = "Prefix cache hit rate") -> "go.Figure":
    """Hit rate over time from ``course_lib.metrics.hit_rate_timeline`` rows (notebook 05).

    Two lines: the hit rate of each scrape interval (gaps where the server was idle)
    and the cumulative one since the first scrape; a dashed line marks ``target``
    (the seed's ">70% for chat").
    """
    import plotly.graph_objects as go

    t = [r["t"] for r in rows]
    fig = go.Figure()
    fig.add_scatter(x=t, y=[r["interval"] for r in rows], mode="lines+markers", name="per interval")
    fig.add_scatter(x=t, y=[r["cumulative"] for r in rows], mode="lines", name="cumulative", line={"width": 3})
    if target is not None:
        fig.add_hline(y=target, line_dash="dash", annotation_text=f"target {target:.0%}")
    fig.update_layout(
        title=title, xaxis_title="seconds since the first scrape", yaxis_title="hit rate (tokens)",
        yaxis={"range": [0, 1.05], "tickformat": ".0%"}, height=380, margin={"t": 50, "b": 40},
    )  # fmt: skip
    return fig


class LiveHitRateChart:
    """A hit-rate chart that redraws in place while traffic runs (notebook 05).

    Uses an IPython display handle (``display(..., display_id=True)`` then ``update``),
    which also works headless (nbconvert, nbval keep the last version), unlike a widget
    that needs a live frontend. Outside IPython, ``update`` does nothing.
    """

    def __init__(self, target: float | None = 0.7, title: str = "Prefix cache hit rate (live)") -> None:
        self.target, self.title = target, title
        self._handle = None
        try:
            from IPython.display import display

            self._handle = display(hit_rate_figure([], target, title), display_id=True)
        except ImportError:
            pass

    def update(self, rows: list[dict]) -> None:
        """Redraw with the rows so far (``course_lib.metrics.hit_rate_timeline``)."""
        if self._handle is not None:
            self._handle.update(hit_rate_figure(rows, self.target, self.title))
