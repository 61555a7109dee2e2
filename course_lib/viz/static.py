"""Static PNGs next to every figure (``make notebooks``), and the display bundle figures are shown with."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Sequence

if TYPE_CHECKING:  # plotly is imported inside each function: importing course_lib stays fast
    import plotly.graph_objects as go


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
