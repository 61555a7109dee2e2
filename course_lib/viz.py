"""Plotly figures for the course: where people would rather look than read.

Each function returns a ``plotly.graph_objects.Figure`` (show it with ``fig.show()``)
and says in its docstring which notebook uses it.
"""

from __future__ import annotations
