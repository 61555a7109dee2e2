"""course_lib.engine on the real vLLM CPU engine, and each branch of the device helper."""

from __future__ import annotations

import gc

import pytest

from course_lib import engine
from course_lib.engine import CourseError, make_llm, measure


# --- detect_device: one test per branch --------------------------------------------

def test_detect_device_forced_cpu(monkeypatch):
    monkeypatch.setenv("COURSE_DEVICE", "cpu")
    assert engine.detect_device() == "cpu"


def test_detect_device_forced_cuda(monkeypatch):
    monkeypatch.setenv("COURSE_DEVICE", "CUDA")
    assert engine.detect_device() == "cuda"


def test_detect_device_rejects_unknown(monkeypatch):
    monkeypatch.setenv("COURSE_DEVICE", "tpu")
    with pytest.raises(CourseError, match="cpu' or 'cuda"):
        engine.detect_device()


def test_detect_device_follows_torch(monkeypatch):
    import torch

    monkeypatch.delenv("COURSE_DEVICE", raising=False)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert engine.detect_device() == "cuda"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert engine.detect_device() == "cpu"


def test_this_machine_is_cpu(monkeypatch):
    monkeypatch.delenv("COURSE_DEVICE", raising=False)
    assert engine.detect_device() == "cpu"


# --- per-device defaults -------------------------------------------------------------

def test_engine_defaults_per_device(monkeypatch):
    monkeypatch.delenv("VLLM_CPU_KVCACHE_SPACE", raising=False)
    cpu, cuda = engine.engine_defaults("cpu"), engine.engine_defaults("cuda")
    assert cpu["block_size"] == 32 and cpu["enforce_eager"] is True
    assert cpu["kv_cache_memory_bytes"] == 1 << 30
    # The same block size on a GPU, so pinned token counts and cached-token tables hold on both.
    assert cuda["block_size"] == 32 and "enforce_eager" not in cuda and "kv_cache_memory_bytes" not in cuda
    monkeypatch.setenv("VLLM_CPU_KVCACHE_SPACE", "2")  # the user's own budget wins
    assert "kv_cache_memory_bytes" not in engine.engine_defaults("cpu")


def test_default_model_is_the_course_model_on_both_devices(monkeypatch):
    from course_lib.model import ensure_model

    monkeypatch.delenv("COURSE_MODEL", raising=False)
    path = str(ensure_model(quiet=True).path)
    assert engine.default_model("cuda") == engine.default_model("cpu") == path
    monkeypatch.setenv("COURSE_MODEL", engine.BIGGER_CUDA_MODEL)  # the documented bigger GPU option
    assert engine.default_model("cuda") == engine.default_model("cpu") == "Qwen/Qwen2.5-0.5B-Instruct"


# --- clear errors, raised before vLLM starts ----------------------------------------------

def test_block_size_16_is_refused_on_cpu_with_a_reason(monkeypatch):
    monkeypatch.setenv("COURSE_DEVICE", "cpu")
    with pytest.raises(CourseError, match="multiple of 32"):
        make_llm(block_size=16)


def test_missing_model_directory(tmp_path):
    with pytest.raises(CourseError, match="does not exist"):
        make_llm(str(tmp_path / "no-such-model"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(CourseError, match="no config.json"):
        make_llm(str(tmp_path / "empty"))


def test_vllm_not_installed_message(monkeypatch):
    monkeypatch.setattr(engine, "vllm_available", lambda: False)
    with pytest.raises(CourseError, match="make setup"):
        make_llm()


def test_prompt_longer_than_max_model_len(llm):
    max_len = llm.llm_engine.model_config.max_model_len
    with pytest.raises(CourseError, match="max_model_len"):
        measure(llm, [[5] * max_len])


# --- the real engine ---------------------------------------------------------------------

def test_default_engine_answers_paris(llm):
    """The course model is a real trained chat model: greedy decoding names the capital."""
    from vllm import SamplingParams

    out = llm.chat([{"role": "user", "content": "What is the capital of France?"}],
                   SamplingParams(temperature=0.0, max_tokens=20), use_tqdm=False)  # fmt: skip
    assert "Paris" in out[0].outputs[0].text


def test_default_engine_serves_smollm2(llm):
    from course_lib.model import WEIGHTS_FILE, ensure_model

    info = ensure_model(quiet=True)
    assert llm.llm_engine.model_config.model == str(info.path) and (info.path / WEIGHTS_FILE).exists()
    tok = llm.get_tokenizer()
    assert len(tok) >= 49152 and tok.chat_template

def test_cpu_engine_uses_course_defaults(llm):
    cache = llm.llm_engine.vllm_config.cache_config
    cfg = llm.llm_engine.model_config.hf_config
    assert cache.block_size == 32 and cache.enable_prefix_caching
    # The KV cache is bounded to 1 GiB: blocks = budget / bytes per block (K and V, every layer, bf16).
    bytes_per_block = cache.block_size * cfg.num_hidden_layers * 2 * cfg.num_key_value_heads * cfg.head_dim * 2
    assert cache.num_gpu_blocks == (1 << 30) // bytes_per_block


def test_repeated_prompt_hits_all_full_blocks_but_the_last_token(fresh_llm):
    tok = fresh_llm.get_tokenizer()
    prompt = "You are a helpful AI assistant specialized in programming. " * 20
    n = len(tok.encode(prompt))
    block = fresh_llm.llm_engine.vllm_config.cache_config.block_size
    first, second = measure(fresh_llm, [prompt, prompt])
    assert first.prompt_tokens == second.prompt_tokens == n
    assert first.num_cached_tokens == 0
    # vLLM caps the hit at num_tokens - 1 and counts only full blocks.
    assert second.num_cached_tokens == (n - 1) // block * block
    assert second.prefilled_tokens == n - second.num_cached_tokens
    assert first.ttft_s > 0 and second.ttft_s > 0


def test_token_id_prompts_and_cache_salt(fresh_llm):
    ids = list(range(10, 110))
    block = engine.block_size(fresh_llm)
    a, b, c = measure(fresh_llm, [ids, ids, ids], cache_salt="tenant-a")
    assert (a.num_cached_tokens, b.num_cached_tokens) == (0, (len(ids) - 1) // block * block)
    other = engine.run_one(fresh_llm, ids, cache_salt="tenant-b")
    assert other.num_cached_tokens == 0  # another salt shares nothing


def test_caching_off_and_tiny_pool(llm):
    off = make_llm(enable_prefix_caching=False)
    try:
        r = measure(off, [[7] * 100, [7] * 100])
        assert [x.num_cached_tokens for x in r] == [0, 0]
    finally:
        engine.close_llm(off)
    tiny = make_llm(num_gpu_blocks_override=6)
    try:
        block = engine.block_size(tiny)
        assert tiny.llm_engine.model_config.max_model_len == (6 - 1) * block  # fits the pool (one null block)
        assert tiny.llm_engine.vllm_config.cache_config.num_gpu_blocks == 6
    finally:
        del tiny
        gc.collect()
    # Closing or dropping other engines must not break the one still in use.
    assert measure(llm, [[9] * 40])[0].prompt_tokens == 40


def test_warm_then_measure_returns_request_stats(fresh_llm):
    stats = measure(fresh_llm, ["Hello there, " * 10])
    assert isinstance(stats[0], engine.RequestStats)
    assert 0.0 <= stats[0].hit_rate <= 1.0
