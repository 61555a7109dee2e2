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


# --- chat and RAG (notebooks 03, 04) ---


def chat_turns_figure(rows: list[dict], title: str = "What each chat turn reused") -> "go.Figure":
    """Per turn, the prompt split into cached and prefilled tokens (notebook 03).

    ``rows`` are ``ChatSession.turn_table()`` rows; the dotted line marks the
    previous turn's full blocks, the least the cache must give back.
    """
    import plotly.graph_objects as go

    turns = [f"turn {r['turn']}" for r in rows]
    fig = go.Figure()
    fig.add_bar(x=turns, y=[r["num_cached_tokens"] for r in rows], name="cached (from the prefix cache)")
    fig.add_bar(x=turns, y=[r["prefilled_tokens"] for r in rows], name="prefilled (computed)")
    fig.add_scatter(x=turns, y=[r["prev_prompt_full_blocks"] for r in rows], mode="lines+markers",
                    name="previous prompt's full blocks", line={"dash": "dot", "color": "black"})  # fmt: skip
    fig.update_layout(barmode="stack", title=title, yaxis_title="prompt tokens", height=380, margin={"t": 50, "b": 40})
    return fig


def reuse_bars_figure(rows: list[dict], title: str = "Cached tokens, case by case") -> "go.Figure":
    """Grouped bars of ``num_cached_tokens`` against prompt tokens per case (notebooks 03, 04).

    ``rows`` need keys ``case``, ``prompt_tokens`` and ``num_cached_tokens``
    (``course_lib.chat.Reuse.row()`` gives them).
    """
    import plotly.graph_objects as go

    cases = [r["case"] for r in rows]
    fig = go.Figure()
    fig.add_bar(x=cases, y=[r["prompt_tokens"] for r in rows], name="prompt tokens", marker_color="lightgray")
    fig.add_bar(x=cases, y=[r["num_cached_tokens"] for r in rows], name="num_cached_tokens")
    fig.update_layout(barmode="group", title=title, yaxis_title="tokens", height=380, margin={"t": 50, "b": 80})
    return fig


def hit_rate_curves_figure(
    rows: list[dict], target: float | None = 0.7, title: str = "Simulated hit rate against cache size"
) -> "go.Figure":
    """Hit rate against cache size, one line per block size (or per ``workload``) (notebooks 03, 04).

    ``rows`` are ``course_lib.workloads.sweep`` rows, optionally with a
    ``workload`` key; the dashed line marks ``target`` (the seed's ">70%").
    """
    import plotly.graph_objects as go

    def series(r: dict) -> str:
        return " / ".join(str(x) for x in (r.get("workload"), f"block {r['block_size']}") if x)

    fig = go.Figure()
    for name in dict.fromkeys(series(r) for r in rows):
        pts = sorted((r["cache_tokens"], r["hit_rate"]) for r in rows if series(r) == name)
        fig.add_scatter(x=[p[0] for p in pts], y=[p[1] for p in pts], mode="lines+markers", name=name)
    if target is not None:
        fig.add_hline(y=target, line_dash="dash", annotation_text=f"target {target:.0%}")
    fig.update_layout(
        title=title, xaxis={"title": "KV cache size (tokens)", "type": "log"},
        yaxis={"title": "hit rate (cached / prompt tokens)", "range": [0, 1.02], "tickformat": ".0%"},
        height=420, margin={"t": 50, "b": 40},
    )  # fmt: skip
    return fig


# --- live engine (notebook 02) ---


def scenario_figure(comparison: "Any") -> "go.Figure":
    """The seed's scenario, caching off vs on (notebook 02).

    Left: tokens per request, split into cached (from vLLM) and prefilled.
    Right: median TTFT per request. Takes a ``course_lib.scenario.ScenarioComparison``.
    """
    import plotly.graph_objects as go
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
    fig.update_yaxes(title_text="tokens", row=1, col=1)
    fig.update_yaxes(title_text="ms", row=1, col=2)
    order = [f"req {i}<br>{label}" for i in range(1, n + 1) for label in ("off", "on")]
    fig.update_xaxes(categoryorder="array", categoryarray=order)
    return fig


def knob_figure(x: list, y: list, *, title: str, x_title: str, y_title: str, names: list[str] | None = None) -> "go.Figure":
    """One bar group per x value, one bar per series in ``y`` (notebook 02's block-size and pool-size sweeps).

    ``y`` is a list of series (each as long as ``x``); ``names`` labels them.
    """
    import plotly.graph_objects as go

    fig = go.Figure()
    for i, series in enumerate(y):
        fig.add_bar(x=[str(v) for v in x], y=series, name=(names or [""] * len(y))[i])
    fig.update_layout(title=title, xaxis_title=x_title, yaxis_title=y_title, barmode="group", height=360,
                      margin={"t": 50, "b": 40})  # fmt: skip
    return fig
