"""Figures of notebook 03: the shared-system-prompt scenario and the engine knobs."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Sequence

if TYPE_CHECKING:  # plotly is imported inside each function: importing course_lib stays fast
    import plotly.graph_objects as go

from course_lib.viz.style import COLORS, SERIES


def scenario_figure(comparison: "Any") -> "go.Figure":
    """The shared-system-prompt scenario, caching off vs on (notebook 03).

    Left: each request's prompt tokens, split into cached (from vLLM) and prefilled.
    Right: median TTFT per request. Two quantities, two panels, each with its own
    titled axis. Takes a ``course_lib.scenario.ScenarioComparison``.
    """
    from plotly.subplots import make_subplots

    off, on = comparison.off[0], comparison.on[0]
    n = len(on.rows)
    # Wide spacing: the right panel's y title sits between the panels and must not touch the left one.
    fig = make_subplots(rows=1, cols=2, horizontal_spacing=0.16,
                        subplot_titles=("prompt tokens: cached or prefilled", "time to first token (median)"))
    for run, label in ((off, "off"), (on, "on")):
        x = [f"req {r.request}<br>{label}" for r in run.rows]
        fig.add_bar(x=x, y=[r.cached_tokens for r in run.rows], name="cached (hit)",
                    marker_color=COLORS["cached"], showlegend=label == "on", legendgroup="cached", row=1, col=1)
        fig.add_bar(x=x, y=[r.prefilled_tokens for r in run.rows], name="prefilled (computed)",
                    marker_color=COLORS["computed"], showlegend=label == "on", legendgroup="prefilled", row=1, col=1)
    for caching, label, color in ((False, "off", SERIES[0]), (True, "on", SERIES[1])):
        # Own x categories per setting: the layout's barmode="stack" must not stack off on top of on.
        fig.add_bar(x=[f"req {i}<br>{label}" for i in range(1, n + 1)],
                    y=[comparison.median_ttft(caching, i) * 1e3 for i in range(1, n + 1)],
                    name=f"TTFT, caching {label}", marker_color=color, row=1, col=2)
    fig.update_layout(
        barmode="stack", height=430, width=860, margin={"t": 80, "b": 60, "l": 70, "r": 20},
        title=(f"Shared system prompt: measured TTFT speedup {comparison.measured_speedup:.2f}x, "
               f"token bound {comparison.ideal_speedup:.2f}x"),
        legend={"orientation": "h", "yanchor": "top", "y": -0.25, "xanchor": "left", "x": 0},
    )  # fmt: skip
    fig.update_yaxes(title_text="tokens per request (tokens)", row=1, col=1)
    fig.update_yaxes(title_text="median TTFT (ms)", row=1, col=2)
    fig.update_xaxes(title_text="request, caching off / on")
    order = [f"req {i}<br>{label}" for i in range(1, n + 1) for label in ("off", "on")]
    fig.update_xaxes(categoryorder="array", categoryarray=order)
    return fig


def knob_figure(
    x: Sequence[Any],
    y: Sequence[Sequence[float]],
    *,
    title: str,
    x_title: str,
    y_title: str | Sequence[str],
    names: Sequence[str] | None = None,
    colors: Sequence[str] | None = None,
) -> "go.Figure":
    """Bars over the values of one knob (notebook 03's block-size and pool-size sweeps).

    ``y`` is a list of series (each as long as ``x``). With one ``y_title`` per
    series, each series gets a panel of its own with its own titled y axis:
    quantities in different units (tokens, milliseconds) never share an axis.
    ``colors`` defaults to the house series colours.
    """
    from plotly.subplots import make_subplots

    names = list(names or [""] * len(y))
    colors = list(colors or SERIES)
    titles = [y_title] * len(y) if isinstance(y_title, str) else list(y_title)
    if len(titles) != len(y):
        raise ValueError(f"{len(y)} series need 1 or {len(y)} y titles, not {len(titles)}")
    panels = 1 if isinstance(y_title, str) else len(y)
    fig = make_subplots(rows=1, cols=panels, horizontal_spacing=0.18,
                        subplot_titles=names if panels > 1 else None)  # fmt: skip
    for i, series in enumerate(y):
        col = i + 1 if panels > 1 else 1
        fig.add_bar(x=[str(v) for v in x], y=list(series), name=names[i], marker_color=colors[i % len(colors)],
                    showlegend=panels == 1 and len(y) > 1, row=1, col=col)  # fmt: skip
        fig.update_yaxes(title_text=titles[i], row=1, col=col)
        fig.update_xaxes(title_text=x_title, type="category", row=1, col=col)
    fig.update_layout(title=title, barmode="group", height=380, width=860 if panels > 1 else 700,
                      margin={"t": 80, "b": 50, "l": 70, "r": 20})  # fmt: skip
    return fig
