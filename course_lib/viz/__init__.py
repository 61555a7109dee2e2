"""Plotly figures for the course: where people would rather look than read.

One module per notebook's figures, all in one house style (``style``: a colour-blind-safe
palette with one meaning per colour, ``COLORS``). Each function returns a
``plotly.graph_objects.Figure`` (show it with ``fig.show()``) and says in its docstring which
notebook uses it. Everything is re-exported here: ``from course_lib.viz import blocks_figure``.
"""

from __future__ import annotations

from course_lib.viz.blocks import blocks_figure, free_queue_figure
from course_lib.viz.chat import chat_turns_figure, hit_rate_curves_figure, reuse_bars_figure
from course_lib.viz.engine import knob_figure, scenario_figure
from course_lib.viz.kv_cache import _POOL_COLORS, block_pool_figure, cold_warm_figure, kv_memory_figure, prefill_decode_figure
from course_lib.viz.metrics import LiveHitRateChart, hit_rate_figure
from course_lib.viz.static import STATIC_FIGURES_ENV, _figure_bundle, enable_static_figures
from course_lib.viz.style import COLORS, POLICY_COLORS, SERIES, use_house_style

__all__ = [
    "COLORS", "POLICY_COLORS", "SERIES", "STATIC_FIGURES_ENV", "LiveHitRateChart", "block_pool_figure",
    "blocks_figure", "chat_turns_figure", "cold_warm_figure", "enable_static_figures", "free_queue_figure",
    "hit_rate_curves_figure", "hit_rate_figure", "kv_memory_figure", "knob_figure", "prefill_decode_figure",
    "reuse_bars_figure", "scenario_figure", "use_house_style",
]  # fmt: skip

use_house_style()
