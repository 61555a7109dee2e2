"""Shared fixtures: one real vLLM engine on CPU for the whole test session.

Tests that need other engine settings (block size, a tiny pool, caching off)
start their own with ``make_llm(...)`` and drop it when done; engines start in
about 1-3 s once the first one has loaded vLLM.
"""

from __future__ import annotations

import gc

import pytest


@pytest.fixture(scope="session")
def llm():
    """The course's default engine (SmolLM2-135M-Instruct, CPU defaults)."""
    from course_lib.engine import make_llm

    engine = make_llm()
    yield engine
    del engine
    gc.collect()


@pytest.fixture()
def fresh_llm(llm):
    """The session engine with an empty prefix cache."""
    assert llm.reset_prefix_cache()
    return llm


@pytest.fixture(scope="session")
def server():
    """A real vLLM OpenAI server (course defaults) for the session; started on first use only."""
    from course_lib.server import VLLMServer

    with VLLMServer(progress=False) as srv:
        yield srv
