"""Figures of notebook 02: a prompt's blocks and their hashes, and vLLM's free queue."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Sequence

if TYPE_CHECKING:  # plotly is imported inside each function: importing course_lib stays fast
    import plotly.graph_objects as go

from course_lib.viz.style import COLORS


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
