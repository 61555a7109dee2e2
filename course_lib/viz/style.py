"""The course's one figure style: a colour-blind-safe palette with one meaning per colour.

Every figure in the course is drawn with these colours, so a learner who has learnt that
bluish green means "served from the cache" in notebook 01 reads it the same way in notebook 09.
The palette is Okabe and Ito's (*Color Universal Design*, 2008), chosen because its eight
colours stay distinct for the common forms of colour blindness; greys mark what carries no data.

``use_house_style()`` registers a plotly template (white background, light grid, DejaVu Sans,
the categorical colours below as the colorway) and makes it the default; ``course_lib.check_env()``
calls it in the first cell of every notebook, and importing ``course_lib.viz`` does too.
Axis titles are the figure's own business: every axis says what it shows and its unit.
"""

from __future__ import annotations

#: One meaning per colour, across every notebook.
COLORS: dict[str, str] = {
    "cached": "#009E73",  # bluish green: tokens or blocks served from the prefix cache (a hit)
    "computed": "#E69F00",  # orange: tokens or blocks computed (prefilled) now, a miss
    "evicted": "#D55E00",  # vermillion: a cached block evicted (its hash dropped) for reuse
    "partial": "#F0E442",  # yellow: a partial block, which never gets a hash and is never cached
    "free": "#DDDDDD",  # light grey: a free block holding nothing reusable
    "null": "#777777",  # mid grey: vLLM's null block (block 0, never handed out)
    "bound": "#000000",  # black (dashed lines): an ideal bound, a target, a reference
}

#: Categories with no cache meaning (configurations, prompt sets, engines), in this order.
SERIES: list[str] = ["#0072B2", "#CC79A7", "#56B4E9", "#882255", "#332288", "#999933"]

#: Routing policies (notebooks 07-09), the same colour in every figure; pooled is the shared-cache bound.
POLICY_COLORS: dict[str, str] = {
    "round_robin": "#56B4E9",
    "consistent_hash": "#0072B2",
    "cache_aware": "#CC79A7",
    "kv_aware": "#882255",
    "least_loaded": "#332288",
    "pooled": COLORS["bound"],
}

FONT = "DejaVu Sans, Verdana, Arial, sans-serif"
TEMPLATE_NAME = "course"


def use_house_style() -> None:
    """Register the course's plotly template and make ``plotly_white+course`` the default (idempotent)."""
    import plotly.graph_objects as go
    import plotly.io as pio

    if TEMPLATE_NAME not in pio.templates:
        axis = {"showline": True, "linecolor": "#444444", "ticks": "outside", "gridcolor": "#E6E6E6",
                "zeroline": False, "title": {"standoff": 8}, "automargin": True}  # fmt: skip
        pio.templates[TEMPLATE_NAME] = go.layout.Template(
            layout={
                "colorway": SERIES,
                "font": {"family": FONT, "size": 13, "color": "#222222"},
                "paper_bgcolor": "white",
                "plot_bgcolor": "white",
                "xaxis": axis,
                "yaxis": axis,
                "legend": {"bgcolor": "rgba(255,255,255,0.8)"},
                "title": {"x": 0, "xref": "paper", "xanchor": "left"},  # above the plot, clear of the y title
            }
        )
    pio.templates.default = f"plotly_white+{TEMPLATE_NAME}"


__all__ = ["COLORS", "FONT", "POLICY_COLORS", "SERIES", "use_house_style"]
