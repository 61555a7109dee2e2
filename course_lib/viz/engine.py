"""Figures of notebook 03: the shared-system-prompt scenario and the engine knobs."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Sequence

if TYPE_CHECKING:  # plotly is imported inside each function: importing course_lib stays fast
    import plotly.graph_objects as go

from course_lib.viz.style import COLORS


def scenario_figure(comparison: "Any") -> "go.Figure":
    """The seed's scenario, caching off vs on (notebook 03).

    Left: tokens per request, split into cached (from vLLM) and prefilled.
    Right: median TTFT per request. Takes a ``course_lib.scenario.ScenarioComparison``.
    """
    from plotly.subplots import make_subplots

    off, on = comparison.off[0], comparison.on[0]
    n = len(on.rows)
    fig = make_subplots(rows=1, cols=2, subplot_titles=("tokens per request", "median TTFT per request"))
    for run, label in ((off, "off"), (on, "on")):
        x = [f"req {r.request}<br>{label}" for r in run.rows]
        fig.add_bar(x=x, y=[r.cached_tokens for r in run.rows], name=f"cached ({label})",
                    marker_color="#2ca02c", showlegend=label == "on", legendgroup="cached", row=1, col=1)
        fig.add_bar(x=x, y=[r.prefilled_tokens for r in run.rows], name=f"prefilled ({label})",
                    marker_color="#d62728", showlegend=label == "on", legendgroup="prefilled", row=1, col=1)
    for caching, label, color in ((False, "off", "#7f7f7f"), (True, "on", "#1f77b4")):
        # Own x categories per setting: the layout's barmode="stack" must not stack off on top of on.
        fig.add_bar(x=[f"req {i}<br>{label}" for i in range(1, n + 1)],
                    y=[comparison.median_ttft(caching, i) * 1e3 for i in range(1, n + 1)],
                    name=f"TTFT, caching {label}", marker_color=color, row=1, col=2)
    fig.update_layout(
        barmode="stack", height=400, margin={"t": 60, "b": 40},
        title=(f"Seed scenario: measured TTFT speedup {comparison.measured_speedup:.2f}x, "
               f"token bound {comparison.ideal_speedup:.2f}x"),
    )  # fmt: skip
    fig.update_yaxes(title_text="prompt tokens (tokens)", row=1, col=1)
    fig.update_yaxes(title_text="median TTFT (ms)", row=1, col=2)
    fig.update_xaxes(title_text="request, caching off / on")
    order = [f"req {i}<br>{label}" for i in range(1, n + 1) for label in ("off", "on")]
    fig.update_xaxes(categoryorder="array", categoryarray=order)
    return fig


def knob_figure(x: list, y: list, *, title: str, x_title: str, y_title: str, names: list[str] | None = None) -> "go.Figure":
    """One bar group per x value, one bar per series in ``y`` (notebook 03's block-size and pool-size sweeps).

    ``y`` is a list of series (each as long as ``x``); ``names`` labels them.
    """
    import plotly.graph_objects as go

    fig = go.Figure()
    for i, series in enumerate(y):
        fig.add_bar(x=[str(v) for v in x], y=series, name=(names or [""] * len(y))[i])
    fig.update_layout(title=title, xaxis_title=x_title, yaxis_title=y_title, barmode="group", height=360,
                      margin={"t": 50, "b": 40})  # fmt: skip
    return fig
