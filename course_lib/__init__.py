"""course_lib: the companion library of the course "Prefix Caching with vLLM".

One module per concept, each naming the vLLM source it mirrors:

- ``model``: the course model, SmolLM2-135M-Instruct, converted offline from a PyPI wheel (notebook 00)
- ``engine``: ``make_llm``, ``measure``, ``warm_cache`` on the real engine (notebooks 00, 03)
- ``check``: ``check_env``, the first cell of every notebook
- ``hashing``, ``simulator``: vLLM's block hashing and prefix cache, re-implemented (notebook 02)
- ``chat``, ``rag``: caching patterns (notebooks 04, 05)
- ``server``, ``metrics``: a live OpenAI server and its ``/metrics`` (notebook 06)
- ``viz``, ``widgets``: plots and explorers
- ``quiz``: quizzes, exercises and grading
- ``cli``: the ``course`` command
"""

import os as _os

from course_lib.check import check_env

if _os.environ.get("COURSE_STATIC_FIGURES"):  # `make notebooks`: a PNG next to every plotly figure
    from course_lib.viz import enable_static_figures

    enable_static_figures()

__all__ = ["check_env"]
__version__ = "0.1.0"
