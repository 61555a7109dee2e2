"""The embedded model: offline, deterministic, identical on every machine."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from course_lib import model

# Pinned once from a build on the project's machine (x86_64). They exist to catch a
# change in the tokenizer training, the weight drawing or a dependency that would
# make learners see other token ids or hashes than the course's stored outputs.
PINNED_SENTENCE = "Prefix caching reuses the KV cache of shared prompt prefixes."
PINNED_IDS = [52, 265, 380, 92, 270, 490, 324, 287, 89, 468, 264, 680, 337, 281, 558, 72, 362, 513, 286, 18]
PINNED_WEIGHTS_SHA256 = "fa821ceb7381e67e9f91d3cb69612df3f0bfcbb45a5cd67060647f9896f97711"


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> model.ModelInfo:
    return model.build_model(tmp_path_factory.mktemp("m") / "model", quiet=True)


@pytest.fixture(scope="module")
def tokenizer(built):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(built.path)


def test_pinned_token_ids(tokenizer):
    assert tokenizer.encode(PINNED_SENTENCE) == PINNED_IDS
    assert tokenizer.decode(PINNED_IDS) == PINNED_SENTENCE


def test_pinned_weights_sha256(built):
    assert model.sha256_file(built.path / model.WEIGHTS_FILE) == PINNED_WEIGHTS_SHA256
    assert built.weights_sha256 == PINNED_WEIGHTS_SHA256


def test_two_builds_are_byte_identical(built, tmp_path):
    again = model.build_model(tmp_path / "again", quiet=True)
    for name in ("tokenizer.json", model.WEIGHTS_FILE, "config.json"):
        assert (again.path / name).read_bytes() == (built.path / name).read_bytes(), name


def test_size_is_about_25m_parameters(built):
    assert 20e6 < built.num_parameters < 30e6
    cfg = json.loads((built.path / "config.json").read_text())
    assert cfg["architectures"] == ["LlamaForCausalLM"]
    assert cfg["vocab_size"] >= built.vocab_size  # every token id has an embedding row


def test_chat_turns_tokenize_stably(tokenizer):
    """Appending a turn never changes the tokens of the earlier turns (special role tokens)."""
    conv = [{"role": "system", "content": "You are a Python expert."}, {"role": "user", "content": "What are decorators?"}]
    def ids(messages):
        return tokenizer.encode(tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False))

    longer = conv + [{"role": "assistant", "content": "A function that wraps a function."},
                     {"role": "user", "content": "Show me an example"}]
    ids1, ids2 = ids(conv), ids(longer)
    assert ids2[: len(ids1)] == ids1
    for role in ("<|system|>", "<|user|>", "<|assistant|>", "<|end|>"):
        assert len(tokenizer.encode(role)) == 1, role


def test_ensure_model_builds_once_and_reuses(tmp_path, monkeypatch):
    target = tmp_path / "cache" / "m"
    monkeypatch.setenv("COURSE_MODEL_DIR", str(target))
    assert model.default_model_dir() == target
    info = model.ensure_model(quiet=True)
    assert info.path == target and (target / model.MARKER_FILE).exists()
    mtime = os.stat(target / model.WEIGHTS_FILE).st_mtime_ns
    assert model.ensure_model(quiet=True) == info
    assert os.stat(target / model.WEIGHTS_FILE).st_mtime_ns == mtime  # not rebuilt
    assert not [p for p in target.parent.iterdir() if p.name.startswith(".m.") and p.is_dir()]  # no temp dirs left


def test_incomplete_model_dir_is_rebuilt(tmp_path):
    target = tmp_path / "half"
    target.mkdir()
    (target / "config.json").write_text("{}")  # an interrupted build: no marker file
    info = model.ensure_model(target, quiet=True)
    assert info.weights_sha256 == PINNED_WEIGHTS_SHA256
    assert json.loads((target / "config.json").read_text())["model_type"] == "llama"


def test_corpus_ships_inside_the_package():
    text = model.corpus_text()
    assert "prefix caching" in text.lower() and len(text) > 2000
    assert Path(model.__file__).with_name("data").joinpath("corpus.txt").exists()
