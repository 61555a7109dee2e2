"""Engine helpers: one way to start vLLM on a CPU or a GPU, and honest per-request numbers.

Taught in ``notebooks/00_setup.ipynb`` (``make_llm``, ``measure``) and
``notebooks/03_live_engine.ipynb`` (``warm_cache``, the knobs).

The CPU and CUDA paths are the same code with other defaults (``engine_defaults``):

=================  ===============================  ==================================
setting            CPU (tested in CI)               CUDA
=================  ===============================  ==================================
model              SmolLM2-135M-Instruct, built     the same (``course_lib.model``)
                   offline (``course_lib.model``)
block_size         32 (CPU attention needs a        32 as well, so every pinned token
                   multiple of 32)                  count and cached-token table holds
KV cache budget    1 GiB, engine argument           ``gpu_memory_utilization`` 0.5
                   ``kv_cache_memory_bytes``
compilation        ``enforce_eager`` (starts in     vLLM's default (CUDA graphs)
                   seconds instead of ~50 s)
=================  ===============================  ==================================

``$COURSE_MODEL`` overrides the model on either device: a model directory, or on
a GPU machine with hub access a hub name such as ``Qwen/Qwen2.5-0.5B-Instruct``
(``BIGGER_CUDA_MODEL``), a larger option that is not the default (its token ids
and counts differ from the pinned notebook outputs).

The KV cache budget: ``kv_cache_memory_bytes`` is the engine argument the course
passes (``--kv-cache-memory-bytes`` on the server); ``VLLM_CPU_KVCACHE_SPACE``
(GiB, an integer) is the CPU build's environment-variable alternative. When that
variable is set, vLLM's CPU platform overwrites ``kv_cache_memory_bytes`` with it
(``vllm/platforms/cpu.py``, ``check_and_update_config``), so the course then
leaves the argument out and the variable decides.

Both run the engine core in-process (``VLLM_ENABLE_V1_MULTIPROCESSING=0``), so the
engine works in a Jupyter kernel and under pytest without a ``__main__`` guard.
"""

from __future__ import annotations

import gc
import importlib.util
import logging
import math
import os
import time
import warnings
import weakref
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable, Sequence, Union

if TYPE_CHECKING:  # vLLM is imported lazily: the environment must be set first.
    from vllm import LLM, SamplingParams

CPU_BLOCK_SIZE = 32
#: The same block size on a GPU, so the notebooks' pinned cached-token counts hold on both
#: devices. Left unset, vLLM's block size is not one number: ``CacheConfig.DEFAULT_BLOCK_SIZE``
#: (16) goes to ``Platform.update_block_size_for_backend`` (``vllm/platforms/interface.py``),
#: which takes the attention backend's preferred size: 16 on the common FlashAttention path,
#: 64 for FlashMLA, 128 for CUTLASS MLA; hybrid models are then re-aligned to their Mamba
#: page size. The CPU platform sets 128 (``vllm/platforms/cpu.py``, ``check_and_update_config``).
CUDA_BLOCK_SIZE = 32
#: A bigger model for a GPU with hub access, documented as an option (``COURSE_MODEL``), not the default.
BIGGER_CUDA_MODEL = "Qwen/Qwen2.5-0.5B-Instruct"
DEFAULT_CPU_KV_CACHE_GIB = 1
DEFAULT_MAX_MODEL_LEN = 4096

Prompt = Union[str, Sequence[int]]


class CourseError(RuntimeError):
    """A problem the learner can fix; the message says how."""


def detect_device() -> str:
    """``"cuda"`` if vLLM will run on an NVIDIA GPU here, else ``"cpu"``.

    ``$COURSE_DEVICE`` (``cpu`` or ``cuda``) overrides the detection.
    """
    prepare_environment()  # before torch is imported: its C++ log level is read at load
    forced = os.environ.get("COURSE_DEVICE", "").strip().lower()
    if forced:
        if forced not in ("cpu", "cuda"):
            raise CourseError(f"COURSE_DEVICE must be 'cpu' or 'cuda', not {forced!r}")
        return forced
    try:
        import torch
    except ImportError:
        return "cpu"
    return "cuda" if torch.cuda.is_available() else "cpu"


def vllm_available() -> bool:
    """True if the ``vllm`` module (CPU or CUDA build) can be imported."""
    return importlib.util.find_spec("vllm") is not None


def prepare_environment() -> None:
    """Set the environment vLLM reads at import and start-up (only where unset).

    Must run before ``import vllm``; ``make_llm`` and ``course_lib.server`` call it.
    """
    # The engine core in this process: works in notebooks and needs no __main__ guard.
    os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
    # No telemetry from a course machine.
    os.environ.setdefault("VLLM_NO_USAGE_STATS", "1")
    os.environ.setdefault("DO_NOT_TRACK", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    # Errors only: notebooks show the course's output, not vLLM's start-up log
    # (set VLLM_LOGGING_LEVEL=INFO to see it all).
    os.environ.setdefault("VLLM_LOGGING_LEVEL", "ERROR")
    # vLLM configures its loggers only when an engine starts, so warnings logged while its
    # modules import (e.g. "Triton is installed, but doesn't include CPU backend") would
    # reach Python's last-resort stderr handler; give the "vllm" logger the level until then.
    vllm_logger = logging.getLogger("vllm")
    if not vllm_logger.handlers and vllm_logger.level == logging.NOTSET:
        vllm_logger.setLevel(os.environ["VLLM_LOGGING_LEVEL"].upper())
    # torch's C++ warnings (the CPU worker's "NUMA binding: Using MEMBIND policy ...") are
    # informational here; read when torch loads, so this must run before `import torch`.
    os.environ.setdefault("TORCH_CPP_LOG_LEVEL", "ERROR")
    # A deprecation inside vLLM's Triton shim, not something a learner can act on.
    warnings.filterwarnings("ignore", message=".*torch.distributed.reduce_op.*", category=FutureWarning)


def default_model(device: str | None = None) -> str:
    """The model ``make_llm`` loads when none is given: ``$COURSE_MODEL``, else the course model's directory.

    The course model (SmolLM2-135M-Instruct, ``course_lib.model``) is the default on
    every device and is built on first use. ``device`` is accepted for symmetry with
    ``engine_defaults``; the choice does not depend on it.
    """
    if os.environ.get("COURSE_MODEL"):
        return os.environ["COURSE_MODEL"]
    from course_lib.model import ensure_model

    return str(ensure_model().path)


def engine_defaults(device: str) -> dict[str, Any]:
    """vLLM engine arguments the course uses on ``device`` (without the model)."""
    common: dict[str, Any] = {
        "enable_prefix_caching": True,  # V1's default already; explicit for the reader
        "max_model_len": DEFAULT_MAX_MODEL_LEN,
        "seed": 0,
        "disable_log_stats": False,  # per-request timestamps (TTFT) and LLM.get_metrics()
    }
    if device == "cuda":
        return common | {"block_size": CUDA_BLOCK_SIZE, "gpu_memory_utilization": 0.5}
    defaults = common | {
        "block_size": CPU_BLOCK_SIZE,
        "enforce_eager": True,
        "dtype": "bfloat16",
        "use_tqdm_on_load": False,  # the course model loads in a second: no progress bar
    }
    # VLLM_CPU_KVCACHE_SPACE, when set, overrides kv_cache_memory_bytes (vllm/platforms/cpu.py).
    if not os.environ.get("VLLM_CPU_KVCACHE_SPACE"):
        defaults["kv_cache_memory_bytes"] = DEFAULT_CPU_KV_CACHE_GIB << 30
    return defaults


def _check_block_size(device: str, block_size: int) -> None:
    if not isinstance(block_size, int) or block_size <= 0:
        raise CourseError(f"block_size must be a positive integer, not {block_size!r}")
    if device == "cpu" and block_size % CPU_BLOCK_SIZE:
        raise CourseError(
            f"block_size={block_size} does not run on vLLM's CPU backend: its attention kernel "
            f"needs a multiple of {CPU_BLOCK_SIZE} (32, 64, 96, 128, ...). 16 is what vLLM picks on a GPU "
            "when the block size is unset and the attention backend accepts it (FlashAttention does; "
            "FlashMLA takes 64, CUTLASS MLA 128), and the CPU backend picks 128 when unset."
        )


def _check_model(model: str) -> None:
    path = Path(model).expanduser()
    if path.is_dir():
        if not (path / "config.json").exists():
            raise CourseError(f"model directory {model!r} has no config.json: it is not a Hugging Face model directory")
    elif model.startswith((".", "/", "~")):
        raise CourseError(
            f"model directory {model!r} does not exist. Leave model=None to use the course's "
            "model (SmolLM2-135M-Instruct), or set COURSE_MODEL to a model directory (or a hub name on a GPU machine)."
        )


#: Engines made by ``make_llm`` that are still alive in this process.
_LIVE_ENGINES: "weakref.WeakSet[LLM]" = weakref.WeakSet()


def _guard_shared_teardown() -> None:
    """Let several in-process engines live side by side in one kernel.

    With the engine core in-process, vLLM's ``EngineCore.shutdown``
    (``vllm/v1/engine/core.py``) calls ``cleanup_dist_env_and_memory``, which
    destroys the process-wide model-parallel groups. Deleting one engine then
    breaks every other live engine with "pipeline model parallel group is not
    initialized". The course keeps an engine with caching on beside one with
    caching off, so the teardown is deferred until the last engine made by
    ``make_llm`` is gone. Memory is still released (the engine's own objects are
    garbage collected); only the shared process groups are kept.
    """
    import vllm.v1.engine.core as core

    real = core.cleanup_dist_env_and_memory
    if getattr(real, "_course_guard", False):
        return

    def guarded(*args: Any, **kwargs: Any) -> None:
        if len(_LIVE_ENGINES):
            gc.collect()
            return
        real(*args, **kwargs)

    guarded._course_guard = True  # type: ignore[attr-defined]
    core.cleanup_dist_env_and_memory = guarded


def make_llm(model: str | None = None, **overrides: Any) -> "LLM":
    """Start a real vLLM engine with the course's per-device defaults.

    Any vLLM engine argument can be overridden, e.g. ``make_llm(block_size=64)``,
    ``make_llm(enable_prefix_caching=False)``, ``make_llm(num_gpu_blocks_override=8)``.
    """
    device = detect_device()
    prepare_environment()
    if not vllm_available():
        raise CourseError(
            "vLLM is not installed in this Python environment. Run `make setup` (CPU) or "
            "`make setup-gpu` (NVIDIA GPU) at the repository root, then use the .venv kernel."
        )
    model = model or default_model(device)
    _check_model(model)
    kwargs = engine_defaults(device) | overrides
    _check_block_size(device, kwargs["block_size"])
    blocks = kwargs.get("num_gpu_blocks_override")
    if blocks and "max_model_len" not in overrides:
        # A tiny pool (to show eviction) cannot hold a 4096-token request; vLLM refuses to
        # start unless max_model_len fits. One block is vLLM's reserved null block.
        kwargs["max_model_len"] = min(DEFAULT_MAX_MODEL_LEN, (blocks - 1) * kwargs["block_size"])
    from vllm import LLM

    _guard_shared_teardown()
    try:
        llm = LLM(model=model, **kwargs)
    except (ValueError, RuntimeError) as exc:  # vLLM's own validation, made readable
        raise CourseError(f"vLLM could not start with {kwargs}: {exc}") from exc
    _LIVE_ENGINES.add(llm)
    return llm


def close_llm(llm: "LLM") -> None:
    """Shut an engine down now and free its KV cache (other engines keep working).

    Dropping the last reference (``del llm``) does the same when the garbage
    collector gets to it; this makes it happen at a known point.
    """
    _LIVE_ENGINES.discard(llm)
    llm.llm_engine.engine_core.shutdown()
    gc.collect()


@dataclass
class RequestStats:
    """What one request cost: the numbers vLLM reports for it.

    ``num_cached_tokens`` comes from vLLM's ``RequestOutput.num_cached_tokens``
    (tokens whose KV came from the prefix cache); ``ttft_s`` is the time to the
    first token (see ``measure`` for how it is measured).
    """

    prompt_tokens: int
    num_cached_tokens: int
    ttft_s: float
    text: str = ""
    output_token_ids: list[int] = field(default_factory=list, repr=False)

    @property
    def prefilled_tokens(self) -> int:
        """Tokens the engine had to compute: the prompt minus the cache hit."""
        return self.prompt_tokens - self.num_cached_tokens

    @property
    def hit_rate(self) -> float:
        """Share of this prompt served from the prefix cache."""
        return self.num_cached_tokens / self.prompt_tokens if self.prompt_tokens else 0.0


def default_sampling() -> "SamplingParams":
    """Greedy, one token: a request that is all prefill, so its time is the TTFT."""
    from vllm import SamplingParams

    return SamplingParams(max_tokens=1, temperature=0.0)


def _as_prompt(prompt: Prompt, cache_salt: str | None = None) -> Any:
    if isinstance(prompt, str):
        p: dict[str, Any] = {"prompt": prompt}
    else:
        p = {"prompt_token_ids": list(prompt)}
    if cache_salt is not None:
        p["cache_salt"] = cache_salt
    return p


def block_size(llm: "LLM") -> int:
    """The running engine's KV cache block size (32 by course default; read it, ``block_size=`` may change it)."""
    return int(llm.llm_engine.vllm_config.cache_config.block_size)


def prompt_token_ids(llm: "LLM", prompt: Prompt) -> list[int]:
    """The token ids vLLM will see for ``prompt`` (strings go through its tokenizer)."""
    if isinstance(prompt, str):
        return list(llm.get_tokenizer().encode(prompt))
    return list(prompt)


def _check_fits(llm: "LLM", n_tokens: int, max_tokens: int) -> None:
    max_len = llm.llm_engine.model_config.max_model_len
    if n_tokens + max_tokens > max_len:
        raise CourseError(
            f"prompt of {n_tokens} tokens plus {max_tokens} to generate exceeds max_model_len={max_len}. "
            "Shorten the prompt, lower max_tokens, or start the engine with a larger max_model_len "
            "(up to the model's max_position_embeddings)."
        )


def run_one(
    llm: "LLM", prompt: Prompt, sampling: "SamplingParams | None" = None, *, cache_salt: str | None = None
) -> RequestStats:
    """Run one request alone and return its ``RequestStats``."""
    sampling = sampling or default_sampling()
    n = len(prompt_token_ids(llm, prompt))
    _check_fits(llm, n, sampling.max_tokens or 0)
    start = time.perf_counter()
    out = llm.generate([_as_prompt(prompt, cache_salt)], sampling, use_tqdm=False)[0]
    wall = time.perf_counter() - start
    metrics = getattr(out, "metrics", None)
    ttft = getattr(metrics, "first_token_latency", 0.0) if metrics is not None else 0.0
    if not ttft:
        # Stats disabled (disable_log_stats=True): only a one-token request's wall time is its TTFT.
        ttft = wall if sampling.max_tokens == 1 else math.nan
    completion = out.outputs[0]
    return RequestStats(
        prompt_tokens=len(out.prompt_token_ids or []),
        num_cached_tokens=int(out.num_cached_tokens or 0),
        ttft_s=float(ttft),
        text=completion.text,
        output_token_ids=list(completion.token_ids),
    )


def measure(
    llm: "LLM",
    prompts: Iterable[Prompt],
    sampling: "SamplingParams | None" = None,
    *,
    cache_salt: str | None = None,
) -> list[RequestStats]:
    """Run ``prompts`` one at a time (never batched) and return one ``RequestStats`` each.

    One at a time, so each request sees the cache its predecessors left, as in
    the course's tables. TTFT is vLLM's own per-request ``first_token_latency``:
    the time from the request's arrival in the engine to its first output token,
    measured by the engine (``vllm/v1/metrics/stats.py``); it needs stats on,
    which ``make_llm`` turns on. With stats off, a one-token request's wall time
    is used instead (the same thing plus a little Python overhead).
    """
    return [run_one(llm, p, sampling, cache_salt=cache_salt) for p in prompts]


def warm_cache(llm: "LLM", templates: dict[str, str] | Iterable[str]) -> list[RequestStats]:
    """Prefill each template once (one output token) so later requests find it cached.

    A recipe often shown appends ``"\\nTest"`` to each template; that is not needed:
    the template's own full blocks are what later requests share. Its last, partial block is
    never cached (only full blocks get a hash), so a template should be followed by
    the varying part of the prompt, never preceded by it. Taught in notebook 03.
    """
    items = templates.values() if isinstance(templates, dict) else templates
    return measure(llm, list(items))
