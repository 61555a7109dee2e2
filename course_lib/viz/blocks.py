"""Figures of notebook 02: a prompt's blocks and their hashes, and vLLM's free queue."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Mapping, Sequence

if TYPE_CHECKING:  # plotly is imported inside each function: importing course_lib stays fast
    import plotly.graph_objects as go

from course_lib.viz.style import COLORS


#: What the lookup does with a block -> (fill, outline) in the house style. A block cached but
#: recomputed because of the last-token cap is computed (orange) with a cached (green) outline.
_BLOCK_STYLE = {
    "hit": (COLORS["cached"], "black"),
    "miss": (COLORS["computed"], "black"),
    "recomputed (last-token cap)": (COLORS["computed"], COLORS["cached"]),
    "partial (no hash)": (COLORS["partial"], "black"),
}
_BLOCK_LEGEND = {
    "hit": "hit: served from the cache",
    "miss": "miss: computed",
    "recomputed (last-token cap)": "cached, but recomputed (last-token cap)",
    "partial (no hash)": "partial block: no hash, never cached",
}
#: Kept for code that read the old name: fill colour by status.
_BLOCK_COLORS = {status: fill for status, (fill, _line) in _BLOCK_STYLE.items()}


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
        fill, outline = _BLOCK_STYLE[b.status]
        fig.add_shape(type="rect", x0=col + 0.03, x1=col + 0.03 + 0.94 * width, y0=-row - 0.92, y1=-row - 0.08,
                      fillcolor=fill, opacity=0.85, layer="below",
                      line={"color": outline, "width": 1 if outline == "black" else 4,
                            "dash": "dot" if b.block_hash is None else "solid"})  # fmt: skip
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
    for status, (fill, outline) in _BLOCK_STYLE.items():  # legend entries
        fig.add_scatter(x=[None], y=[None], mode="markers", name=_BLOCK_LEGEND[status],
                        marker={"color": fill, "size": 14, "symbol": "square",
                                "line": {"color": outline, "width": 1 if outline == "black" else 3}})  # fmt: skip
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


def free_queue_figure(
    steps: "list[tuple[str, list[tuple[int, bytes | None]]]]",
    title: str | None = None,
    *,
    owners: "Sequence[Mapping[int, str]] | None" = None,
    evicted: "Sequence[Sequence[int]] | None" = None,
) -> "go.Figure":
    """The free queue of a tiny pool after each step: who gets evicted next (notebook 02).

    ``steps`` are ``(label, PrefixCacheSimulator.free_queue_state())`` pairs: one row per
    step, left = the next block handed out (and evicted if it holds a hash). Blocks are
    labelled by whose KV they hold, ``owners[k][block_id]`` (``"A0"``: block 0 of request
    A), else by block id. A block holding a hash is cached (green, reusable); a block
    holding the partial block of a request has no hash (yellow, reused first); a block
    never used is free (grey). ``evicted[k]`` lists the blocks step ``k`` evicted: they
    get a vermillion outline and say whose cached block was dropped. The null block 0
    is never free, so it never appears. ``fig.layout.meta`` holds each row's block ids.
    """
    import plotly.graph_objects as go

    owners = list(owners) if owners is not None else [{} for _ in steps]
    evicted = [set(e) for e in evicted] if evicted is not None else [set() for _ in steps]
    if len(owners) != len(steps) or len(evicted) != len(steps):
        raise ValueError(f"{len(steps)} steps: give one owners mapping and one evicted list per step")
    fig = go.Figure()
    xs, ys, labels, hovers = [], [], [], []
    width = max((len(state) for _, state in steps), default=1)
    for r, (label, state) in enumerate(steps):
        for pos, (block_id, block_hash) in enumerate(state):
            owner = owners[r].get(block_id)
            kind = "cached" if block_hash is not None else ("partial" if owner else "free")
            was_evicted = block_id in evicted[r]
            fig.add_shape(type="rect", x0=pos + 0.05, x1=pos + 0.95, y0=-r - 0.9, y1=-r - 0.1,
                          fillcolor=COLORS[kind], layer="below",
                          line={"color": COLORS["evicted"] if was_evicted else "black",
                                "width": 4 if was_evicted else 1})  # fmt: skip
            text = f"<b>{owner or '·'}</b><br><span style='font-size:9px'>block {block_id}</span>"
            if was_evicted:
                dropped = owners[r - 1].get(block_id, f"block {block_id}") if r else f"block {block_id}"
                text += f"<br><span style='font-size:10px'><b>evicted {dropped}</b></span>"
            xs.append(pos + 0.5)
            ys.append(-r - 0.5)
            labels.append(text)
            hovers.append(f"block {block_id}: {owner or 'never used'}, "
                          + (f"hash {block_hash.hex()[:16]}…" if block_hash else "no hash"))  # fmt: skip
    fig.add_scatter(x=xs, y=ys, mode="text", text=labels, hovertext=hovers, hoverinfo="text",
                    textfont={"size": 12, "color": "black"}, showlegend=False)  # fmt: skip
    legend = (("cached", "cached (has a hash): evicted least recently used first", "black"),
              ("partial", "partial block (no hash): reused first", "black"),
              ("free", "never used", "black"),
              ("cached", "evicted by this step (outline), now holding new KV", COLORS["evicted"]))  # fmt: skip
    for kind, name, outline in legend:
        fig.add_scatter(x=[None], y=[None], mode="markers", name=name,
                        marker={"color": COLORS[kind], "size": 14, "symbol": "square",
                                "line": {"color": outline, "width": 3 if outline != "black" else 1}})  # fmt: skip
    fig.update_layout(
        title=title or "Free queue after each request (left = reused next)",
        xaxis={"range": [0, width], "title": "position in the free queue (blocks; 0 = taken first)",
               "tickvals": [p + 0.5 for p in range(width)], "ticktext": [str(p) for p in range(width)],
               "showgrid": False, "zeroline": False},
        yaxis={"range": [-len(steps), 0], "tickvals": [-r - 0.5 for r in range(len(steps))],
               "ticktext": [label for label, _ in steps], "showgrid": False, "zeroline": False,
               "title": "after request"},
        height=170 + 72 * len(steps), margin={"t": 50, "b": 40, "l": 10, "r": 10},
        legend={"orientation": "h", "y": -0.18, "x": 0},
        meta=[[block_id for block_id, _ in state] for _, state in steps],
    )  # fmt: skip
    return fig
