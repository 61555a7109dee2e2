"""Plotly figures for the course: where people would rather look than read.

Each function returns a ``plotly.graph_objects.Figure`` (show it with ``fig.show()``)
and says in its docstring which notebook uses it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Sequence

if TYPE_CHECKING:  # plotly is imported inside each function: importing course_lib stays fast
    import plotly.graph_objects as go

# --- metrics (notebook 06) ---


def hit_rate_figure(rows: list[dict], target: float | None = 0.7, title: str = "Prefix cache hit rate") -> "go.Figure":
    """Hit rate over time from ``course_lib.metrics.hit_rate_timeline`` rows (notebook 06).

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
        title=title, xaxis_title="time since the first scrape (s)",
        yaxis_title="hit rate (% of queried prompt tokens cached)",
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


def _figure_bundle(fig: "go.Figure") -> dict:
    """A figure's display bundle: plotly's JSON, and a PNG when static figures are on.

    Built here rather than by plotly's default renderer, which depends on where the kernel
    runs (in a plain IPython shell it adds the ``notebook`` renderer's HTML and a plotly.js
    loader). Displayed raw, because a Figure displayed as an object goes through
    ``plotly.io.show``, which ignores ``clear_output`` and display ids.
    """
    bundle = {"application/vnd.plotly.v1+json": fig.to_plotly_json(), "text/plain": f"<figure: {fig.layout.title.text}>"}
    if _static_figures:
        import base64

        bundle["image/png"] = base64.b64encode(fig.to_image(format="png")).decode()
    return bundle


# --- static images next to every figure (maintainer step: make notebooks) ---

STATIC_FIGURES_ENV = "COURSE_STATIC_FIGURES"
_static_figures = False  # set by enable_static_figures()


def enable_static_figures() -> None:
    """From now on every displayed plotly figure also carries an ``image/png`` (issue 15).

    GitHub, nbviewer and other static renderings cannot run plotly.js, so a figure with only
    plotly's JSON shows nothing there. ``make notebooks`` sets ``COURSE_STATIC_FIGURES=1``, and
    ``import course_lib`` then calls this: plotly's renderer becomes ``plotly_mimetype+png``
    (interactive in JupyterLab, PNG elsewhere), the PNG drawn by kaleido with the system's
    Chromium. One kaleido server serves the whole kernel (about 0.3 s a figure instead of
    5-8 s for a Chromium start per figure). Learners and ``make test`` never need it.
    """
    import atexit
    import warnings

    import kaleido
    import plotly.io as pio

    global _static_figures
    _static_figures = True
    pio.renderers.default = "plotly_mimetype+png"
    # plotly passes its own Chromium options on every call; with a running server they are unused, and it warns so.
    warnings.filterwarnings("ignore", message="The kopts argument is ignored", category=UserWarning)
    kaleido.start_sync_server(silence_warnings=True)  # a no-op when already running
    atexit.register(kaleido.stop_sync_server, silence_warnings=True)


# --- chat and RAG (notebooks 04, 05) ---


def chat_turns_figure(rows: list[dict], title: str = "What each chat turn reused") -> "go.Figure":
    """Per turn, the prompt split into cached and prefilled tokens (notebook 04).

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
    fig.update_layout(barmode="stack", title=title, xaxis_title="chat turn", yaxis_title="prompt length (tokens)",
                      height=380, margin={"t": 50, "b": 40})  # fmt: skip
    return fig


def reuse_bars_figure(rows: list[dict], title: str = "Cached tokens, case by case") -> "go.Figure":
    """Grouped bars of ``num_cached_tokens`` against prompt tokens per case (notebooks 04, 05).

    ``rows`` need keys ``case``, ``prompt_tokens`` and ``num_cached_tokens``
    (``course_lib.chat.Reuse.row()`` gives them).
    """
    import plotly.graph_objects as go

    cases = [r["case"] for r in rows]
    fig = go.Figure()
    fig.add_bar(x=cases, y=[r["prompt_tokens"] for r in rows], name="prompt tokens", marker_color="lightgray")
    fig.add_bar(x=cases, y=[r["num_cached_tokens"] for r in rows], name="num_cached_tokens")
    fig.update_layout(barmode="group", title=title, xaxis_title="case", yaxis_title="token count (tokens)", height=380,
                      margin={"t": 50, "b": 80})  # fmt: skip
    return fig


def hit_rate_curves_figure(
    rows: list[dict], target: float | None = 0.7, title: str = "Simulated hit rate against cache size"
) -> "go.Figure":
    """Hit rate against cache size, one line per block size (or per ``workload``) (notebooks 04, 05).

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
    # A log axis over less than a decade gets no major tick labels from plotly: label every size swept.
    sizes = sorted({r["cache_tokens"] for r in rows})
    fig.update_layout(
        title=title,
        xaxis={"title": "KV cache size (tokens, log scale)", "type": "log", "tickvals": sizes,
               "ticktext": [_tokens_label(v) for v in sizes]},
        yaxis={"title": "hit rate (% of prompt tokens cached)", "range": [0, 1.02], "tickformat": ".0%"},
        height=420, margin={"t": 50, "b": 40},
    )  # fmt: skip
    return fig


def _tokens_label(n: float) -> str:
    """A cache size as a tick label, exact and grouped: 512, 4,096, 16,384 (tokens)."""
    return f"{n:,.0f}" if float(n).is_integer() else f"{n:,g}"


# --- live engine (notebook 03) ---


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


# --- block hashing (notebook 02) ---

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
    """A prompt's blocks as vLLM's prefix cache sees them (notebook 02 and its explorer).

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
    """The free queue of a tiny pool after each step: who gets evicted next (notebook 02).

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
               "ticktext": [label for label, _ in steps], "showgrid": False, "zeroline": False, "title": "after"},
        height=120 + 60 * len(steps), margin={"t": 50, "b": 40, "l": 10, "r": 10}, plot_bgcolor="white",
        meta=[[block_id for block_id, _ in state] for _, state in steps],
    )  # fmt: skip
    return fig


# --- the KV cache: prefill vs decode, the block pool (notebook 01) ---


def prefill_decode_figure(points: "list[Any]", title: str = "Prefill vs decode: time against prompt length") -> "go.Figure":
    """TTFT and decode time per output token against prompt length (notebook 01).

    ``points`` are ``course_lib.kv_cache.Timing`` (from ``prefill_decode_sweep``). Two
    panels on the same x axis, each on its own scale: the prompt is prefilled in one
    step whose cost grows with its length; each output token is one decode step.
    """
    from plotly.subplots import make_subplots

    x = [p.prompt_tokens for p in points]
    fig = make_subplots(rows=1, cols=2, subplot_titles=("time to first token (prefill)", "decode, per output token"))
    fig.add_scatter(x=x, y=[p.ttft_s * 1e3 for p in points], mode="lines+markers", name="TTFT", row=1, col=1)
    fig.add_scatter(x=x, y=[p.decode_s_per_token * 1e3 for p in points], mode="lines+markers",
                    name="decode per token", row=1, col=2)  # fmt: skip
    for col in (1, 2):
        fig.update_xaxes(title_text="prompt length (tokens)", row=1, col=col)
    fig.update_yaxes(title_text="TTFT (ms)", rangemode="tozero", row=1, col=1)
    fig.update_yaxes(title_text="decode time (ms per output token)", rangemode="tozero", row=1, col=2)
    fig.update_layout(title=title, height=380, showlegend=False, margin={"t": 70, "b": 50})
    return fig


def cold_warm_figure(timings: "dict[str, Any]", title: str = "What a prefix cache hit saves") -> "go.Figure":
    """TTFT and decode time per token of the same prompt, cold and warm (notebook 01).

    ``timings`` is ``course_lib.kv_cache.cold_vs_warm``'s result: ``{"cold": Timing, "warm": Timing}``.
    """
    from plotly.subplots import make_subplots

    names = list(timings)
    labels = [f"{n}<br>({timings[n].num_cached_tokens} of {timings[n].prompt_tokens} cached)" for n in names]
    fig = make_subplots(rows=1, cols=2, subplot_titles=("time to first token", "decode, per output token"))
    fig.add_bar(x=labels, y=[timings[n].ttft_s * 1e3 for n in names], marker_color=["#d62728", "#2ca02c"], row=1, col=1)
    fig.add_bar(x=labels, y=[timings[n].decode_s_per_token * 1e3 for n in names], marker_color=["#d62728", "#2ca02c"],
                row=1, col=2)  # fmt: skip
    for col in (1, 2):
        fig.update_xaxes(title_text="run of the same prompt (cached tokens)", row=1, col=col)
    fig.update_yaxes(title_text="TTFT (ms)", row=1, col=1)
    fig.update_yaxes(title_text="decode time (ms per output token)", row=1, col=2)
    fig.update_layout(title=title, height=380, showlegend=False, margin={"t": 70, "b": 50})
    return fig


_POOL_COLORS = {"null": "#7f7f7f", "in use": "#ff7f0e", "cached": "#1f77b4", "empty": "#f0f0f0"}


def block_pool_figure(steps: "list[tuple[str, list[tuple[int, str]], dict[int, str]]]",
                      title: str = "The block pool, moment by moment") -> "go.Figure":  # fmt: skip
    """Every block of a (tiny) pool at several moments: who holds it (notebook 01).

    ``steps`` are ``(label, course_lib.kv_cache.pool_snapshot(llm), owners)``, where
    ``owners`` maps a block id to the request(s) whose block table lists it (e.g.
    ``{1: "A", 2: "A+B"}``). Colours: grey = block 0, vLLM's reserved null block;
    orange = in use by a running request; blue = free but still holding its hash
    (a later prompt can hit it); light = empty.
    """
    import plotly.graph_objects as go

    fig = go.Figure()
    xs, ys, labels, shapes = [], [], [], []
    width = max((len(state) for _, state, _ in steps), default=1)
    for r, (_, state, owners) in enumerate(steps):
        for block_id, status in state:
            # Collected and set once: fig.add_shape re-validates every shape so far (quadratic).
            shapes.append({"type": "rect", "x0": block_id + 0.05, "x1": block_id + 0.95, "y0": -r - 0.9,
                           "y1": -r - 0.1, "fillcolor": _POOL_COLORS[status], "layer": "below",
                           "line": {"color": "black", "width": 1}})  # fmt: skip
            xs.append(block_id + 0.5)
            ys.append(-r - 0.5)
            labels.append(f"<b>{block_id}</b><br>{owners.get(block_id, '')}")
    fig.add_scatter(x=xs, y=ys, mode="text", text=labels, textfont={"size": 11, "color": "black"}, showlegend=False,
                    hoverinfo="skip")  # fmt: skip
    for status, color in _POOL_COLORS.items():  # legend entries
        fig.add_scatter(x=[None], y=[None], mode="markers", name=status,
                        marker={"color": color, "size": 12, "symbol": "square", "line": {"color": "black", "width": 1}})  # fmt: skip
    fig.update_layout(
        title=title,
        shapes=shapes,
        xaxis={"range": [0, width], "title": "block id in the pool (0 = the null block)", "showgrid": False,
               "zeroline": False, "tickvals": [i + 0.5 for i in range(width)], "ticktext": [str(i) for i in range(width)]},
        yaxis={"range": [-len(steps), 0], "tickvals": [-r - 0.5 for r in range(len(steps))],
               "ticktext": [label for label, _, _ in steps], "showgrid": False, "zeroline": False, "title": "moment"},
        height=140 + 70 * len(steps), margin={"t": 50, "b": 40, "l": 10, "r": 10}, plot_bgcolor="white",
        legend={"orientation": "h", "y": -0.25},
        meta=[dict(state) for _, state, _ in steps],
    )  # fmt: skip
    return fig


def kv_memory_figure(rows: "list[dict[str, int]]", title: str = "KV cache one request holds") -> "go.Figure":
    """Bytes held (whole blocks, read from the engine) and bytes used (tokens x bytes per token) (notebook 01).

    ``rows`` are ``course_lib.kv_cache.memory_held`` rows; the staircase is paging: memory
    comes in whole blocks, so the last block of a request is partly empty.
    """
    import plotly.graph_objects as go

    mib = 1 << 20
    x = [r["tokens"] for r in rows]
    fig = go.Figure()
    fig.add_scatter(x=x, y=[r["bytes_held"] / mib for r in rows], mode="lines+markers", line_shape="hv",
                    name="held: blocks in its block table x bytes per block")  # fmt: skip
    fig.add_scatter(x=x, y=[r["bytes_used"] / mib for r in rows], mode="lines", line={"dash": "dash"},
                    name="used: tokens x bytes per token")  # fmt: skip
    fig.update_layout(
        title=title, xaxis_title="prompt length (tokens)", yaxis={"title": "KV cache (MiB)", "rangemode": "tozero"},
        height=380, margin={"t": 50, "b": 40}, legend={"orientation": "h", "y": -0.2},
    )  # fmt: skip
    return fig
