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

            self._handle = display(self._bundle([]), raw=True, display_id=True)
        except ImportError:
            pass

    def _bundle(self, rows: list[dict]) -> dict:
        # A raw MIME bundle: a Figure displayed as an object renders itself through
        # plotly.io.show, which ignores display_id, so every update would add a new figure.
        fig = hit_rate_figure(rows, self.target, self.title)
        bundle = fig._repr_mimebundle_(include=None, exclude=None) or {}
        bundle.setdefault("application/vnd.plotly.v1+json", fig.to_plotly_json())
        bundle["text/plain"] = f"<hit-rate chart: {len(rows)} intervals>"
        return bundle

    def update(self, rows: list[dict]) -> None:
        """Redraw with the rows so far (``course_lib.metrics.hit_rate_timeline``)."""
        if self._handle is not None:
            self._handle.update(self._bundle(rows), raw=True)


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


# --- block hashing (notebook 01) ---

_BLOCK_COLORS = {
    "hit": "#2ca02c",
    "miss": "#ff7f0e",
    "recomputed (last-token cap)": "#f2c12e",
    "partial (no hash)": "#c7c7c7",
}


def blocks_figure(
    token_ids: "Sequence[int]",
    block_size: int,
    cached: "Any" = None,
    *,
    token_text: "Sequence[str] | None" = None,
    hash_algo: str = "sha256",
    cache_salt: str | None = None,
    none_hash: bytes | None = None,
    per_row: int = 4,
    title: str | None = None,
) -> "go.Figure":
    """A prompt's blocks as vLLM's prefix cache sees them (notebook 01 and its explorer).

    One box per block: its index, token range, the start of its ``block_hash``,
    a snippet of its text (``token_text``: one string per token), coloured by what
    the lookup does against ``cached`` (a ``PrefixCacheSimulator`` or a set of
    hashes; ``None`` = empty cache): hit, miss, recomputed because of the
    ``num_tokens - 1`` cap, or the partial last block that has no hash. Hover a
    box for its full text. ``fig.layout.meta`` lists the blocks (index, start,
    size, status, hash hex) for programs and tests.
    """
    import plotly.graph_objects as go

    from course_lib.hashing import short_hash
    from course_lib.simulator import describe_blocks

    rows = describe_blocks(token_ids, block_size, cached, hash_algo, cache_salt=cache_salt, none_hash=none_hash)
    fig = go.Figure()
    xs, ys, labels, hovers, meta = [], [], [], [], []
    for b in rows:
        col, row = b.index % per_row, b.index // per_row
        width = len(b.token_ids) / block_size  # the partial block is drawn as wide as it is full
        fig.add_shape(type="rect", x0=col + 0.03, x1=col + 0.03 + 0.94 * width, y0=-row - 0.92, y1=-row - 0.08,
                      fillcolor=_BLOCK_COLORS[b.status], opacity=0.85, layer="below",
                      line={"color": "black", "width": 1, "dash": "dot" if b.block_hash is None else "solid"})  # fmt: skip
        text = "".join(token_text[b.start : b.start + len(b.token_ids)]) if token_text is not None else ""
        snippet = text.replace("\n", "⏎")
        snippet = snippet if len(snippet) <= 22 else snippet[:21] + "…"
        h = short_hash(b.block_hash) if b.block_hash is not None else "no hash"
        labels.append(f"<b>block {b.index}</b> [{b.start}:{b.start + len(b.token_ids)})<br>{h}<br>{b.status}"
                      + (f"<br><i>{_html_escape(snippet)}</i>" if snippet else ""))  # fmt: skip
        hovers.append(f"block {b.index}: tokens {b.start}..{b.start + len(b.token_ids) - 1} ({len(b.token_ids)}/{block_size})"
                      f"<br>hash {b.block_hash.hex() if b.block_hash else 'none (partial block)'}<br>{b.status}"
                      + (f"<br>{_html_escape(text)}" if text else ""))  # fmt: skip
        xs.append(col + 0.5)  # centred in the block's slot, so a narrow partial block's label still fits
        ys.append(-row - 0.5)
        meta.append({"index": b.index, "start": b.start, "size": len(b.token_ids), "status": b.status,
                     "block_hash": b.block_hash.hex() if b.block_hash else None})  # fmt: skip
    fig.add_scatter(x=xs, y=ys, mode="text", text=labels, hovertext=hovers, hoverinfo="text",
                    textfont={"size": 11}, showlegend=False)  # fmt: skip
    for status, color in _BLOCK_COLORS.items():  # legend entries
        fig.add_scatter(x=[None], y=[None], mode="markers", marker={"color": color, "size": 12, "symbol": "square"},
                        name=status)  # fmt: skip
    n_rows = max(1, -(-len(rows) // per_row))
    hits = sum(b.status == "hit" for b in rows)
    fig.update_layout(
        title=title or f"{len(token_ids)} tokens, block_size={block_size}: {hits} block(s) hit = {hits * block_size} cached tokens",
        xaxis={"visible": False, "range": [0, per_row]}, yaxis={"visible": False, "range": [-n_rows, 0]},
        height=130 + 110 * n_rows, margin={"t": 50, "b": 10, "l": 10, "r": 10}, plot_bgcolor="white",
        legend={"orientation": "h", "y": -0.02}, meta=meta,
    )  # fmt: skip
    return fig


def _html_escape(text: str) -> str:
    import html

    return html.escape(text)


def free_queue_figure(steps: "list[tuple[str, list[tuple[int, bytes | None]]]]", title: str | None = None) -> "go.Figure":
    """The free queue of a tiny pool after each step: who gets evicted next (notebook 01).

    ``steps`` are ``(label, PrefixCacheSimulator.free_queue_state())`` pairs. One row
    per step, left = next block handed out (and evicted if it holds a hash). Blue
    blocks hold a hash (cached, evicted least-recently-used first); grey ones hold
    none (reused first). The null block 0 is never free, so it never appears.
    """
    import plotly.graph_objects as go

    from course_lib.hashing import short_hash

    fig = go.Figure()
    xs, ys, labels = [], [], []
    width = max((len(state) for _, state in steps), default=1)
    for r, (label, state) in enumerate(steps):
        for pos, (block_id, block_hash) in enumerate(state):
            color = "#1f77b4" if block_hash is not None else "#d9d9d9"
            fig.add_shape(type="rect", x0=pos + 0.05, x1=pos + 0.95, y0=-r - 0.9, y1=-r - 0.1, fillcolor=color,
                          layer="below", line={"color": "black", "width": 1})  # fmt: skip
            xs.append(pos + 0.5)
            ys.append(-r - 0.5)
            labels.append(f"<b>{block_id}</b><br>{short_hash(block_hash, 6) if block_hash else '—'}")
    fig.add_scatter(x=xs, y=ys, mode="text", text=labels, textfont={"size": 11, "color": "black"}, showlegend=False,
                    hoverinfo="skip")  # fmt: skip
    fig.update_layout(
        title=title or "Free queue after each request (left = reused next; blue = cached, grey = no hash)",
        xaxis={"range": [0, width], "title": "position in the free queue (0 = evicted first)", "dtick": 1,
               "showgrid": False, "zeroline": False},
        yaxis={"range": [-len(steps), 0], "tickvals": [-r - 0.5 for r in range(len(steps))],
               "ticktext": [label for label, _ in steps], "showgrid": False, "zeroline": False},
        height=120 + 60 * len(steps), margin={"t": 50, "b": 40, "l": 10, "r": 10}, plot_bgcolor="white",
        meta=[[block_id for block_id, _ in state] for _, state in steps],
    )  # fmt: skip
    return fig
