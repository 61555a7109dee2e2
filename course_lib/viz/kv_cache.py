"""Figures of notebook 01: prefill vs decode, what a hit saves, the block pool, KV bytes per request."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Sequence

if TYPE_CHECKING:  # plotly is imported inside each function: importing course_lib stays fast
    import plotly.graph_objects as go

from course_lib.viz.style import COLORS


def prefill_decode_figure(points: "list[Any]", title: str = "Prefill vs decode: time against prompt length") -> "go.Figure":
    """TTFT and decode time per output token against prompt length (notebook 01).

    ``points`` are ``course_lib.kv_cache.Timing`` (from ``prefill_decode_sweep``). Two
    panels on the same x axis, each on its own scale: the prompt is prefilled in one
    step whose cost grows with its length; each output token is one decode step.
    """
    from plotly.subplots import make_subplots

    x = [p.prompt_tokens for p in points]
    fig = make_subplots(rows=1, cols=2, subplot_titles=("time to first token (prefill)", "decode, per output token"),
                        horizontal_spacing=0.16)  # fmt: skip
    fig.add_scatter(x=x, y=[p.ttft_s * 1e3 for p in points], mode="lines+markers", name="TTFT", row=1, col=1)
    fig.add_scatter(x=x, y=[p.decode_s_per_token * 1e3 for p in points], mode="lines+markers",
                    name="decode per token", row=1, col=2)  # fmt: skip
    for col in (1, 2):
        fig.update_xaxes(title_text="prompt length (tokens)", row=1, col=col)
    fig.update_yaxes(title_text="TTFT (ms)", rangemode="tozero", row=1, col=1)
    fig.update_yaxes(title_text="decode (ms per output token)", rangemode="tozero", row=1, col=2)
    fig.update_layout(title=title, height=400, showlegend=False, margin={"t": 80, "b": 50})
    return fig


def cold_warm_figure(timings: "dict[str, Any]", title: str = "What a prefix cache hit saves") -> "go.Figure":
    """TTFT and decode time per token of the same prompt, cold and warm (notebook 01).

    ``timings`` is ``course_lib.kv_cache.cold_vs_warm``'s result: ``{"cold": Timing, "warm": Timing}``.
    """
    from plotly.subplots import make_subplots

    names = list(timings)
    # A run mostly served from the cache in the cache-hit colour, a run that computed everything in the miss colour.
    colors = [COLORS["cached"] if timings[n].num_cached_tokens else COLORS["computed"] for n in names]
    labels = [f"{n}<br>{timings[n].num_cached_tokens} of {timings[n].prompt_tokens}<br>cached" for n in names]
    fig = make_subplots(rows=1, cols=2, subplot_titles=("time to first token", "decode, per output token"),
                        horizontal_spacing=0.16)  # fmt: skip
    fig.add_bar(x=labels, y=[timings[n].ttft_s * 1e3 for n in names], marker_color=colors, row=1, col=1)
    fig.add_bar(x=labels, y=[timings[n].decode_s_per_token * 1e3 for n in names], marker_color=colors,
                row=1, col=2)  # fmt: skip
    for col in (1, 2):
        fig.update_xaxes(title_text="run of the same prompt", tickangle=0, row=1, col=col)
    fig.update_yaxes(title_text="TTFT (ms)", rangemode="tozero", row=1, col=1)
    fig.update_yaxes(title_text="decode (ms per output token)", rangemode="tozero", row=1, col=2)
    fig.update_layout(title=title, height=420, showlegend=False, margin={"t": 80, "b": 50})
    return fig


def _tint(hex_color: str, alpha: float) -> str:
    """``hex_color`` with transparency: the same meaning, drawn lighter."""
    r, g, b = (int(hex_color[i : i + 2], 16) for i in (1, 3, 5))
    return f"rgba({r},{g},{b},{alpha})"


#: One colour per block state, in the course's house style (``course_lib.viz.style.COLORS``):
#: a request's own blocks by role (``BlockTable.roles``), every other block by its pool state
#: (``kv_cache.pool_snapshot``). A free block that keeps its hash is the cache-hit colour, lighter:
#: it is what a later prompt can hit.
_POOL_COLORS = {
    "null": COLORS["null"],
    "cache hit": COLORS["cached"],
    "computed": COLORS["computed"],
    "partial": COLORS["partial"],
    "in use": COLORS.get("in_use", "#0072B2"),
    "cached": _tint(COLORS["cached"], 0.3),
    "empty": COLORS["free"],
}
_POOL_LEGEND = {
    "null": "null block (never handed out)",
    "cache hit": "cache hit: found in the pool, not computed",
    "computed": "computed now (prefilled)",
    "partial": "partial block: computed, never cached",
    "in use": "in use by another request",
    "cached": "free, keeps its hash (a later prompt can hit it)",
    "empty": "free, empty",
}


def block_pool_figure(steps: "list[tuple[Any, ...]]", title: str = "The block pool, moment by moment") -> "go.Figure":
    """Every block of a (tiny) pool at several moments: who holds it, and how it got there (notebook 01).

    ``steps`` are ``(label, course_lib.kv_cache.pool_snapshot(llm), owners)`` or
    ``(label, snapshot, owners, roles)``: ``owners`` maps a block id to the request(s) whose
    block table lists it (e.g. ``{1: "A", 2: "A+B"}``), ``roles`` maps a running request's blocks
    to ``"cache hit"``, ``"computed"`` or ``"partial"`` (``BlockTable.roles()``). A block with a
    role is drawn by its role, every other one by its pool state (``_POOL_LEGEND``), so a request's
    cache hits and the blocks it computed never share a colour.
    """
    import plotly.graph_objects as go

    fig = go.Figure()
    xs, ys, labels, shapes, used = [], [], [], [], set()
    width = max((len(step[1]) for step in steps), default=1)
    for r, (_, state, owners, *rest) in enumerate(steps):
        roles = rest[0] if rest else {}
        for block_id, status in state:
            kind = roles.get(block_id, status) if status == "in use" else status
            used.add(kind)
            # Collected and set once: fig.add_shape re-validates every shape so far (quadratic).
            shapes.append({"type": "rect", "x0": block_id + 0.05, "x1": block_id + 0.95, "y0": -r - 0.9,
                           "y1": -r - 0.1, "fillcolor": _POOL_COLORS[kind], "layer": "below",
                           "line": {"color": "#444444", "width": 1}})  # fmt: skip
            xs.append(block_id + 0.5)
            ys.append(-r - 0.5)
            labels.append(f"<b>{block_id}</b><br>{owners.get(block_id, '')}")
    fig.add_scatter(x=xs, y=ys, mode="text", text=labels, textfont={"size": 11, "color": "black"}, showlegend=False,
                    hoverinfo="skip")  # fmt: skip
    for kind, color in _POOL_COLORS.items():  # legend entries, for the states this figure shows
        if kind in used:
            fig.add_scatter(x=[None], y=[None], mode="markers", name=_POOL_LEGEND[kind],
                            marker={"color": color, "size": 13, "symbol": "square", "line": {"color": "#444444", "width": 1}})  # fmt: skip
    fig.update_layout(
        title=title,
        shapes=shapes,
        xaxis={"range": [0, width], "title": "block id in the pool (0 = the null block)", "showgrid": False,
               "zeroline": False, "showline": False, "ticks": "", "tickvals": [i + 0.5 for i in range(width)],
               "ticktext": [str(i) for i in range(width)]},
        yaxis={"range": [-len(steps), 0], "tickvals": [-r - 0.5 for r in range(len(steps))],
               "ticktext": [step[0] for step in steps], "showgrid": False, "zeroline": False, "showline": False,
               "ticks": "", "title": "moment"},
        height=180 + 70 * len(steps), margin={"t": 50, "b": 40, "l": 10, "r": 10},
        legend={"orientation": "h", "y": -0.22, "x": 0},
        meta=[dict(step[1]) for step in steps],
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
    fig.add_scatter(x=x, y=[r["bytes_used"] / mib for r in rows], mode="lines", line={"dash": "dash", "color": COLORS["bound"]},
                    name="used: tokens x bytes per token")  # fmt: skip
    fig.update_layout(
        title=title, xaxis_title="prompt length (tokens)", yaxis={"title": "KV cache (MiB)", "rangemode": "tozero"},
        height=380, margin={"t": 50, "b": 40}, legend={"orientation": "h", "y": -0.2},
    )  # fmt: skip
    return fig
