"""Where the prefix-cache rules stop: live checks of their scope on the real engine.

Taught in ``notebooks/03_live_engine.ipynb`` ("The rules' scope, live"). Each
function runs a small, fixed workload and returns vLLM's own numbers
(``num_cached_tokens``, what the scheduler did per step, what
``reset_prefix_cache`` returned), so a notebook can pin them:

- ``prompt_logprobs_hits``: by default a request asking for ``prompt_logprobs``
  does not read the prefix cache (``SamplingParams.__post_init__`` sets
  ``skip_reading_prefix_cache`` when the user left it ``None``;
  ``KVCacheManager.get_computed_blocks`` then returns no hit), but its blocks are
  still written and cached; ``skip_reading_overrides`` sets the flag by hand, both ways;
- ``step_trace``: per scheduler step, which request was admitted with how many
  cached tokens and how many tokens each request got. It shows that prompts in
  one ``generate`` call hit each other's blocks (a block's hash is registered
  when ``KVCacheManager.allocate_slots`` allocates it for the step that computes
  it) and what chunked prefill does to that;
- ``reset_while_running``: ``LLM.reset_prefix_cache()`` refuses while a request
  holds blocks (``BlockPool.reset_prefix_cache``) unless
  ``reset_running_requests=True`` preempts them first (``Scheduler.reset_prefix_cache``).

``step_trace`` and ``reset_while_running`` drive the engine core in this process
(``VLLM_ENABLE_V1_MULTIPROCESSING=0``, which ``course_lib.engine`` sets).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Sequence

from course_lib.engine import CourseError, default_sampling, run_one

if TYPE_CHECKING:
    from vllm import LLM, SamplingParams


def _scheduler(llm: "LLM") -> Any:
    """The engine core's ``Scheduler`` (only reachable when the core runs in this process)."""
    core = getattr(llm.llm_engine.engine_core, "engine_core", None)
    if core is None:
        raise CourseError(
            "the engine core runs in another process, so its scheduler cannot be traced. "
            "Fix: set VLLM_ENABLE_V1_MULTIPROCESSING=0 before importing vllm (course_lib.engine.make_llm does)."
        )
    return core.scheduler


def _must_reset(llm: "LLM") -> None:
    if not llm.reset_prefix_cache():
        raise CourseError(
            "vLLM refused to reset the prefix cache: a request still holds blocks. "
            "Fix: let running requests finish first (see reset_while_running)."
        )


# --- prompt_logprobs ------------------------------------------------------------------------------


def prompt_logprobs_hits(llm: "LLM", prompt: Sequence[int]) -> list[tuple[str, int]]:
    """``num_cached_tokens`` of one prompt sent four times, with and without ``prompt_logprobs``.

    From an empty cache: (1) plain, (2) the same prompt asking for prompt
    logprobs, (3) plain again, then after a reset (4) prompt logprobs first and
    (5) plain. (2) and (4) read nothing from the cache; (3) and (5) hit, because a
    prompt-logprobs request still writes its blocks into the cache.
    """
    from vllm import SamplingParams

    ids = list(prompt)
    logprobs = SamplingParams(max_tokens=1, temperature=0.0, prompt_logprobs=0)
    _must_reset(llm)
    rows = [
        ("plain, empty cache", run_one(llm, ids).num_cached_tokens),
        ("prompt_logprobs=0, same prompt", run_one(llm, ids, logprobs).num_cached_tokens),
        ("plain again", run_one(llm, ids).num_cached_tokens),
    ]
    _must_reset(llm)
    rows += [
        ("after a reset: prompt_logprobs=0 first", run_one(llm, ids, logprobs).num_cached_tokens),
        ("then plain", run_one(llm, ids).num_cached_tokens),
    ]
    return rows


def skip_reading_overrides(llm: "LLM", prompt: Sequence[int]) -> list[tuple[str, int]]:
    """``num_cached_tokens`` when ``SamplingParams.skip_reading_prefix_cache`` is set by hand.

    The flag is a public field (``vllm/sampling_params.py``); only when it is left
    ``None`` does ``__post_init__`` derive it from ``prompt_logprobs``. With the prompt
    cached: (1) ``prompt_logprobs=0`` with the flag ``False`` reads the cache (vLLM then
    returns logprobs only for the prompt tokens it computed), (2) a plain request
    with the flag ``True`` reads nothing.
    """
    from vllm import SamplingParams

    ids = list(prompt)
    _must_reset(llm)
    run_one(llm, ids)  # the prompt's full blocks are now cached
    reads = SamplingParams(max_tokens=1, temperature=0.0, prompt_logprobs=0, skip_reading_prefix_cache=False, detokenize=False)
    skips = SamplingParams(max_tokens=1, temperature=0.0, skip_reading_prefix_cache=True)
    return [
        ("prompt_logprobs=0, skip_reading_prefix_cache=False", run_one(llm, ids, reads).num_cached_tokens),
        ("plain, skip_reading_prefix_cache=True", run_one(llm, ids, skips).num_cached_tokens),
    ]


# --- what the scheduler does, step by step --------------------------------------------------------


@dataclass
class StepRecord:
    """One scheduler step: requests admitted (with their cache hit) and tokens scheduled per request."""

    step: int
    admitted: dict[int, int] = field(default_factory=dict)  # request index (0-based) -> cached tokens at admission
    scheduled: dict[int, int] = field(default_factory=dict)  # request index (0-based) -> tokens computed this step

    def line(self) -> str:
        """The step as text, requests numbered from 1 as in the notebooks' tables."""
        adm = ", ".join(f"request {i + 1} (cached {c})" for i, c in sorted(self.admitted.items())) or "-"
        sch = ", ".join(f"request {i + 1}: {n}" for i, n in sorted(self.scheduled.items()))
        return f"step {self.step}: admitted {adm}; tokens computed: {sch}"


@dataclass
class StepTrace:
    """A ``generate`` call seen from the scheduler."""

    cached_tokens: list[int]
    steps: list[StepRecord]

    def lines(self) -> list[str]:
        return [s.line() for s in self.steps] + [f"num_cached_tokens per request: {self.cached_tokens}"]


def step_trace(
    llm: "LLM", prompts: Sequence[Sequence[int]], sampling: "SamplingParams | None" = None
) -> StepTrace:
    """Submit ``prompts`` in ONE ``generate`` call (from an empty cache) and record every scheduler step.

    Wraps ``Scheduler.schedule`` for the length of the call and reads each
    ``SchedulerOutput``: ``scheduled_new_reqs[*].num_computed_tokens`` is the
    cache hit a request was admitted with, ``num_scheduled_tokens`` the tokens
    each request computes in that step (``vllm/v1/core/sched/output.py``).
    """
    sched = _scheduler(llm)
    _must_reset(llm)
    raw: list[tuple[dict[str, int], dict[str, int]]] = []
    original = sched.schedule

    def traced(*args: Any, **kwargs: Any) -> Any:
        out = original(*args, **kwargs)
        if out.total_num_scheduled_tokens:
            raw.append(({r.req_id: r.num_computed_tokens for r in out.scheduled_new_reqs},
                        dict(out.num_scheduled_tokens)))
        return out

    sched.schedule = traced
    try:
        outs = llm.generate(
            [{"prompt_token_ids": list(p)} for p in prompts], sampling or default_sampling(), use_tqdm=False
        )
    finally:
        del sched.schedule  # the instance attribute; the class method is back
    # The engine core appends a suffix to each request id ("3-1a2b..."); the output keeps the prefix.
    index = {o.request_id: i for i, o in enumerate(outs)}

    def idx(req_id: str) -> int:
        return index[req_id.rsplit("-", 1)[0] if req_id not in index else req_id]

    steps = [
        StepRecord(k + 1, {idx(r): c for r, c in adm.items()}, {idx(r): n for r, n in sch.items()})
        for k, (adm, sch) in enumerate(raw)
    ]
    return StepTrace([int(o.num_cached_tokens or 0) for o in outs], steps)


# --- KV cache groups and their hit rules ---------------------------------------------------------


def kv_cache_groups(llm: "LLM") -> list[str]:
    """The engine's KV cache groups and the coordinator that reconciles their hits, as text lines.

    ``get_kv_cache_coordinator`` (``vllm/v1/core/kv_cache_coordinator.py``) picks
    ``UnitaryKVCacheCoordinator`` for one group (every layer full attention, as in
    the course model) and ``HybridKVCacheCoordinator`` when layer types differ
    (sliding window, Mamba, linear attention). Groups are not one per layer type:
    ``_get_kv_cache_groups_uniform_page_size`` (``vllm/v1/core/kv_cache_utils.py``)
    splits the layers into groups of equal size, so 10 full-attention and 20
    sliding-window layers make 3 groups of 10 (1 full, 2 sliding window). Each group
    has its own ``SingleTypeKVCacheManager``; the hybrid coordinator looks up groups
    that share a spec together, with that spec's ``find_longest_cache_hit``.
    """
    coordinator = _scheduler(llm).kv_cache_manager.coordinator
    lines = [f"coordinator: {type(coordinator).__name__}"]
    for gid, group in enumerate(coordinator.kv_cache_config.kv_cache_groups):
        spec = group.kv_cache_spec
        lines.append(
            f"group {gid}: {type(spec).__name__}, {len(group.layer_names)} layers, block_size {spec.block_size}, "
            f"hit rule: {type(coordinator.single_type_managers[gid]).__name__}.find_longest_cache_hit"
        )
    return lines


# --- reset_prefix_cache -----------------------------------------------------------------------------


def reset_while_running(llm: "LLM", prompt: Sequence[int], max_tokens: int = 8) -> list[tuple[str, Any]]:
    """What ``reset_prefix_cache`` does while a request is running, and after.

    Adds one request through ``LLMEngine.add_request``, runs one engine step (its
    prefill: it now holds blocks), then calls ``reset_prefix_cache()`` (refused:
    ``False``) and ``reset_prefix_cache(reset_running_requests=True)`` (the
    request is preempted, its blocks freed, the reset succeeds), and finishes the
    request. Returns (what, value) rows.
    """
    from vllm import SamplingParams

    engine = llm.llm_engine
    _must_reset(llm)
    ids = list(prompt)
    # ignore_eos: the request must still be running after its first step.
    params = SamplingParams(max_tokens=max_tokens, temperature=0.0, ignore_eos=True)
    engine.add_request("reset-demo", {"prompt_token_ids": ids}, params)
    engine.step()
    sched = _scheduler(llm)
    rows: list[tuple[str, Any]] = [("running requests after one step", len(sched.running))]
    rows.append(("reset_prefix_cache()", llm.reset_prefix_cache()))
    rows.append(("reset_prefix_cache(reset_running_requests=True)", llm.reset_prefix_cache(reset_running_requests=True)))
    rows.append(("running requests after it (preempted to waiting)", len(sched.running)))
    final = None
    while engine.has_unfinished_requests():
        for out in engine.step():
            if out.finished:
                final = out
    rows.append(("the request still finished, tokens generated", len(final.outputs[0].token_ids) if final else 0))
    rows.append(("reset_prefix_cache() with nothing running", llm.reset_prefix_cache()))
    return rows


__all__: list[str] = [
    "prompt_logprobs_hits", "skip_reading_overrides", "kv_cache_groups", "StepRecord", "StepTrace", "step_trace", "reset_while_running",
]
