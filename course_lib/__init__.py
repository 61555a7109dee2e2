"""course_lib: the companion library of the course "Prefix Caching with vLLM".

One module per concept, each naming the vLLM source it mirrors:

- ``model``: the embedded tiny Llama, built offline (notebook 00)
- ``engine``: ``make_llm``, ``measure``, ``warm_cache`` on the real engine (notebooks 00, 02)
- ``check``: ``check_env``, the first cell of every notebook
- ``hashing``, ``simulator``: vLLM's block hashing and prefix cache, re-implemented (notebook 01)
- ``chat``, ``rag``: caching patterns (notebooks 03, 04)
- ``server``, ``metrics``: a live OpenAI server and its ``/metrics`` (notebook 05)
- ``viz``, ``widgets``: plots and explorers
- ``quiz``: quizzes, exercises and grading
- ``cli``: the ``course`` command
"""

from course_lib.check import check_env

__all__ = ["check_env"]
__version__ = "0.1.0"
