"""Figures of notebooks 04 and 05: what each chat turn reused, cached tokens case by case, hit-rate curves.

Colours follow ``course_lib.viz.style``: bluish green is what the prefix cache served,
orange what was computed (prefilled) now, black dashed an ideal bound or a target.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:  # plotly is imported inside each function: importing course_lib stays fast
    import plotly.graph_objects as go

from course_lib.viz.style import COLORS


#: A horizontal legend between the title and the plot: the bars keep the figure's whole width.
_LEGEND_ON_TOP = {"orientation": "h", "x": 0, "xanchor": "left", "y": 1.02, "yanchor": "bottom", "traceorder": "normal"}


def chat_turns_figure(rows: list[dict], title: str = "What each chat turn reused") -> "go.Figure":
    """Per turn, the prompt split into cached and prefilled tokens (notebook 04).

    ``rows`` are ``ChatSession.turn_table()`` rows; the dashed line marks the
    previous turn's full blocks, the least the cache must give back.
    """
    import plotly.graph_objects as go

    turns = [f"turn {r['turn']}" for r in rows]
    fig = go.Figure()
    fig.add_bar(x=turns, y=[r["num_cached_tokens"] for r in rows], name="cached (prefix cache)",
                marker_color=COLORS["cached"])  # fmt: skip
    fig.add_bar(x=turns, y=[r["prefilled_tokens"] for r in rows], name="prefilled (computed)",
                marker_color=COLORS["computed"])  # fmt: skip
    fig.add_scatter(x=turns, y=[r["prev_prompt_full_blocks"] for r in rows], mode="lines+markers",
                    name="previous prompt's full blocks",
                    line={"dash": "dash", "color": COLORS["bound"]}, marker={"color": COLORS["bound"]})  # fmt: skip
    fig.update_layout(barmode="stack", title=title, xaxis_title="chat turn", yaxis_title="prompt length (tokens)",
                      height=380, margin={"t": 50, "b": 40}, legend={"traceorder": "normal"})  # fmt: skip
    return fig


def reuse_bars_figure(rows: list[dict], title: str = "Cached tokens, case by case") -> "go.Figure":
    """Per case, the second prompt split into cached and prefilled tokens (notebooks 04, 05).

    ``rows`` need keys ``case``, ``prompt_tokens`` and ``num_cached_tokens``
    (``course_lib.chat.Reuse.row()`` gives them). The bars are stacked, so each bar's
    height is the prompt's length and its green part what the cache served.
    """
    import plotly.graph_objects as go

    cases = [r["case"] for r in rows]
    fig = go.Figure()
    fig.add_bar(x=cases, y=[r["num_cached_tokens"] for r in rows], name="cached (num_cached_tokens)",
                marker_color=COLORS["cached"])  # fmt: skip
    fig.add_bar(x=cases, y=[r["prompt_tokens"] - r["num_cached_tokens"] for r in rows], name="prefilled (computed now)",
                marker_color=COLORS["computed"])  # fmt: skip
    fig.update_layout(barmode="stack", title=title, xaxis_title="case", yaxis_title="second prompt (tokens)", height=440,
                      xaxis_tickangle=-35, margin={"t": 80, "b": 80}, legend=_LEGEND_ON_TOP)  # fmt: skip
    return fig


def hit_rate_curves_figure(
    rows: list[dict],
    target: float | None = 0.7,
    title: str = "Simulated hit rate against cache size",
    *,
    zoom: bool = False,
) -> "go.Figure":
    """Hit rate against cache size, one line per block size (or per ``workload``) (notebooks 04, 05).

    ``rows`` are ``course_lib.workloads.sweep`` rows, optionally with a
    ``workload`` key; the dashed line marks ``target`` (a hit-rate target often quoted
    for chat traffic, 70 %). The y axis runs from 0 to 100 %, unless ``zoom=True``:
    then it spans the data only (with a margin) and its title says so, for
    differences of a few points that a full axis would flatten.
    """
    import plotly.graph_objects as go

    several_sizes = len({r["block_size"] for r in rows}) > 1

    def series(r: dict) -> str:  # the block size is named only when it varies (or nothing else names the line)
        block = f"block {r['block_size']}" if several_sizes or not r.get("workload") else None
        return " / ".join(str(x) for x in (r.get("workload"), block) if x)

    fig = go.Figure()
    for name in dict.fromkeys(series(r) for r in rows):
        pts = sorted((r["cache_tokens"], r["hit_rate"]) for r in rows if series(r) == name)
        fig.add_scatter(x=[p[0] for p in pts], y=[p[1] for p in pts], mode="lines+markers", name=name)
    rates = [r["hit_rate"] for r in rows]
    if zoom and rates:
        pad = max(0.005, (max(rates) - min(rates)) * 0.1)
        y_range, y_title = [min(rates) - pad, max(rates) + pad], "hit rate (% of prompt tokens, axis zoomed)"
    else:
        y_range, y_title = [0, 1.02], "hit rate (% of prompt tokens cached)"
    if target is not None and y_range[0] <= target <= y_range[1]:
        fig.add_hline(y=target, line_dash="dash", line_color=COLORS["bound"], annotation_text=f"target {target:.0%}")
    # A log axis over less than a decade gets no major tick labels from plotly: label every size swept.
    sizes = sorted({r["cache_tokens"] for r in rows})
    fig.update_layout(
        title=title,
        xaxis={"title": "KV cache size (tokens, log scale)", "type": "log", "tickvals": sizes,
               "ticktext": [_tokens_label(v) for v in sizes]},
        yaxis={"title": y_title, "range": y_range, "tickformat": ".0%"},
        height=420, margin={"t": 50, "b": 40},
    )  # fmt: skip
    return fig


def _tokens_label(n: float) -> str:
    """A cache size as a tick label, exact and grouped: 512, 4,096, 16,384 (tokens)."""
    return f"{n:,.0f}" if float(n).is_integer() else f"{n:,g}"

