"""The course's embedded default model: a tiny Llama built offline, deterministically.

Taught in ``notebooks/00_setup.ipynb``.

Why it exists: the course must run where no model hub is reachable and no GPU is
present, yet every number it shows must come from the real vLLM engine. A
randomly initialised ``LlamaForCausalLM`` is a real model to vLLM: it has real
layers, a real KV cache, real block hashing and real prefill cost. Only its text
is nonsense, because nothing trained its weights. Prefix caching never looks at
the text, only at token ids and the KV cache, so everything the course measures
about caching holds for it as it does for a trained model.

Determinism: the tokenizer is a byte-level BPE trained on ``data/corpus.txt``
(shipped in the package) with pinned ``tokenizers``; the weights are drawn from
NumPy's PCG64 generator with a fixed seed (bit-identical on every platform) and
rounded to bfloat16. The weights file is therefore byte-identical on every
machine, and ``tests/test_model.py`` pins its sha256.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import shutil
import tempfile
import time
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Iterator

#: Bump when anything below changes what is written to disk.
MODEL_VERSION = "tiny-llama-v1"
SEED = 0

#: Architecture of the embedded model: about 26M parameters, so that prefill
#: dominates a request on a 2-core CPU while the engine still starts in seconds.
HIDDEN_SIZE = 512
INTERMEDIATE_SIZE = 1376
NUM_LAYERS = 8
NUM_HEADS = 8
NUM_KV_HEADS = 8
VOCAB_SIZE = 1024
MAX_POSITION_EMBEDDINGS = 4096

#: Chat roles are special tokens, so a chat turn's tokens never merge with the
#: next turn's: earlier turns tokenize identically when a turn is appended.
SPECIAL_TOKENS = ["<|pad|>", "<|end|>", "<|system|>", "<|user|>", "<|assistant|>"]
CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "<|{{ message['role'] }}|>\n{{ message['content'] }}<|end|>\n"
    "{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>\n{% endif %}"
)

MARKER_FILE = "course_model.json"
WEIGHTS_FILE = "model.safetensors"


@dataclass(frozen=True)
class ModelInfo:
    """Where the embedded model lives and what it is."""

    path: Path
    version: str
    num_parameters: int
    weights_sha256: str
    vocab_size: int


def default_model_dir() -> Path:
    """``$COURSE_MODEL_DIR`` if set, else ``~/.cache/prefix-caching-course/<version>``."""
    env = os.environ.get("COURSE_MODEL_DIR")
    if env:
        return Path(env).expanduser()
    base = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache"))
    return base / "prefix-caching-course" / MODEL_VERSION


def corpus_text() -> str:
    """The text the tokenizer is trained on (shipped inside the package)."""
    return resources.files("course_lib").joinpath("data/corpus.txt").read_text(encoding="utf-8")


def _log(msg: str, quiet: bool) -> None:
    if not quiet:
        print(msg, flush=True)


def _train_tokenizer(out_dir: Path) -> int:
    """Train the byte-level BPE tokenizer and save it with its chat template."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=VOCAB_SIZE,
        min_frequency=2,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator([corpus_text()], trainer=trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        pad_token="<|pad|>",
        eos_token="<|end|>",
        additional_special_tokens=["<|system|>", "<|user|>", "<|assistant|>"],
        model_max_length=MAX_POSITION_EMBEDDINGS,
    )
    fast.chat_template = CHAT_TEMPLATE
    fast.save_pretrained(out_dir)
    return tok.get_vocab_size()


def _config(eos_token_id: int, pad_token_id: int) -> dict:
    return {
        "architectures": ["LlamaForCausalLM"],
        "model_type": "llama",
        "hidden_size": HIDDEN_SIZE,
        "intermediate_size": INTERMEDIATE_SIZE,
        "num_hidden_layers": NUM_LAYERS,
        "num_attention_heads": NUM_HEADS,
        "num_key_value_heads": NUM_KV_HEADS,
        "head_dim": HIDDEN_SIZE // NUM_HEADS,
        "vocab_size": VOCAB_SIZE,
        "max_position_embeddings": MAX_POSITION_EMBEDDINGS,
        "rms_norm_eps": 1e-5,
        "rope_theta": 10000.0,
        "hidden_act": "silu",
        "tie_word_embeddings": False,
        "attention_bias": False,
        "mlp_bias": False,
        "torch_dtype": "bfloat16",
        "bos_token_id": eos_token_id,
        "eos_token_id": eos_token_id,
        "pad_token_id": pad_token_id,
    }


def _weight_shapes() -> list[tuple[str, tuple[int, ...]]]:
    h, i, v = HIDDEN_SIZE, INTERMEDIATE_SIZE, VOCAB_SIZE
    kv = NUM_KV_HEADS * (HIDDEN_SIZE // NUM_HEADS)
    shapes: list[tuple[str, tuple[int, ...]]] = [("model.embed_tokens.weight", (v, h))]
    for layer in range(NUM_LAYERS):
        p = f"model.layers.{layer}."
        shapes += [
            (p + "self_attn.q_proj.weight", (h, h)),
            (p + "self_attn.k_proj.weight", (kv, h)),
            (p + "self_attn.v_proj.weight", (kv, h)),
            (p + "self_attn.o_proj.weight", (h, h)),
            (p + "mlp.gate_proj.weight", (i, h)),
            (p + "mlp.up_proj.weight", (i, h)),
            (p + "mlp.down_proj.weight", (h, i)),
            (p + "input_layernorm.weight", (h,)),
            (p + "post_attention_layernorm.weight", (h,)),
        ]
    shapes += [("model.norm.weight", (h,)), ("lm_head.weight", (v, h))]
    return shapes


def _write_weights(out_dir: Path, quiet: bool) -> int:
    """Draw every weight from PCG64(SEED) in a fixed order; norms are ones."""
    import numpy as np
    import torch
    from safetensors.torch import save_file

    rng = np.random.Generator(np.random.PCG64(SEED))
    tensors = {}
    total = 0
    shapes = _weight_shapes()
    for n, (name, shape) in enumerate(shapes, 1):
        if len(shape) == 1:
            arr = np.ones(shape, dtype=np.float32)
        else:
            arr = (rng.standard_normal(shape, dtype=np.float32) * np.float32(0.02)).astype(np.float32)
        tensors[name] = torch.from_numpy(arr).to(torch.bfloat16).contiguous()
        total += arr.size
        if n % 18 == 0 or n == len(shapes):
            _log(f"  weights: {n}/{len(shapes)} tensors", quiet)
    save_file(tensors, str(out_dir / WEIGHTS_FILE), metadata={"format": "pt"})
    return total


def sha256_file(path: Path) -> str:
    """Hex sha256 of a file, read in chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


@contextlib.contextmanager
def _lock(path: Path) -> Iterator[None]:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def build_model(out_dir: Path, quiet: bool = False) -> ModelInfo:
    """Build the tokenizer and the weights into ``out_dir`` (which must not exist)."""
    out_dir.mkdir(parents=True)
    start = time.perf_counter()
    _log("[1/3] training the byte-level BPE tokenizer on the course corpus", quiet)
    vocab = _train_tokenizer(out_dir)
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(out_dir)
    (out_dir / "config.json").write_text(
        json.dumps(_config(tok.eos_token_id, tok.pad_token_id), indent=2, sort_keys=True)
    )
    (out_dir / "generation_config.json").write_text(
        json.dumps({"eos_token_id": tok.eos_token_id, "pad_token_id": tok.pad_token_id}, indent=2)
    )
    _log("[2/3] drawing random weights (PCG64, seed 0) and rounding to bfloat16", quiet)
    n_params = _write_weights(out_dir, quiet)
    _log("[3/3] writing the marker file", quiet)
    digest = sha256_file(out_dir / WEIGHTS_FILE)
    info = ModelInfo(out_dir, MODEL_VERSION, n_params, digest, vocab)
    marker = {"version": MODEL_VERSION, "num_parameters": n_params, "weights_sha256": digest, "vocab_size": vocab}
    (out_dir / MARKER_FILE).write_text(json.dumps(marker, indent=2))
    _log(f"built the course model ({n_params / 1e6:.1f}M parameters) in {time.perf_counter() - start:.1f} s", quiet)
    return info


def _read_marker(path: Path) -> ModelInfo | None:
    try:
        m = json.loads((path / MARKER_FILE).read_text())
    except (OSError, ValueError):
        return None
    if m.get("version") != MODEL_VERSION:
        return None
    return ModelInfo(path, m["version"], m["num_parameters"], m["weights_sha256"], m["vocab_size"])


def ensure_model(path: Path | str | None = None, quiet: bool = False) -> ModelInfo:
    """Return the embedded model, building it on first use (about 10 s, shown as it goes).

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
        _log(f"Building the course model into {target} (first use only)", quiet)
        tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
        try:
            build_model(tmp / "model", quiet=quiet)
            if target.exists():
                shutil.rmtree(target)  # an incomplete or outdated model
            os.replace(tmp / "model", target)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    info = _read_marker(target)
    assert info is not None
    return info
