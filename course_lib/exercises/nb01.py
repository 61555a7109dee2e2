"""Checks for the exercises of ``notebooks/01_kv_cache.ipynb``.

Each check compares the learner's number with what the running engine says
(``course_lib.kv_cache.cache_geometry``: vLLM's own page size and block count), never
with a stored constant. A wrong answer gets the method, not the value.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from course_lib.exercises import ExerciseResult, verdict
from course_lib.kv_cache import blocks_needed, cache_geometry, engine_kv_shape

if TYPE_CHECKING:
    from vllm import LLM


def check_bytes_per_token(answer: int, llm: "LLM") -> ExerciseResult:
    """Exercise 01.1: the KV cache bytes of one token, from the model's config."""
    geometry = cache_geometry(llm)
    shape = engine_kv_shape(llm)
    right = geometry.bytes_per_token  # vLLM's page size per token, summed over its layers
    answer = int(answer)
    # The usual slips, recognised by what the answer would be; the message names the slip only.
    slips = {
        right // 2: "you counted only the keys or only the values: the cache stores both for every token.",
        right // shape.num_layers: "that is one layer's worth: every layer keeps its own keys and values.",
        right // shape.dtype_bytes: "that counts numbers, not bytes: multiply by the size of the cache's dtype.",
        right // shape.num_kv_heads * shape.num_attention_heads: (
            "you used the attention (query) heads: with grouped-query attention only the key-value heads are "
            "cached (num_key_value_heads)."
        ),
    }
    slips.pop(right, None)  # a model where a slip gives the right number has no such slip
    message = slips.get(answer, "not the bytes vLLM allocates per token.")
    return verdict(
        "01.1",
        answer == right,
        f"yes: {right:,} bytes per token, exactly what vLLM's page size gives ({geometry.bytes_per_block:,} bytes "
        f"per block of {geometry.block_size} tokens).",
        message,
        (
            "One token stores a key vector and a value vector, per layer, per key-value head; each vector has "
            "head_dim numbers of the cache's dtype.",
            "Read num_hidden_layers, num_key_value_heads and head_dim from llm.llm_engine.model_config.hf_config, "
            "and the dtype from llm.llm_engine.model_config.dtype; multiply them all, and by 2.",
        ),
    )


def check_requests_that_fit(answer: int, llm: "LLM", prompt_tokens: int, output_tokens: int) -> ExerciseResult:
    """Exercise 01.2: how many requests of this size the engine's block pool holds side by side."""
    geometry = cache_geometry(llm)
    per_request = blocks_needed(prompt_tokens + output_tokens, geometry.block_size)
    right = (geometry.num_blocks - 1) // per_request
    answer = int(answer)
    slips = {
        geometry.num_blocks // per_request: "block 0 is vLLM's null block: no request can use it.",
        (geometry.num_blocks - 1) * geometry.block_size // (prompt_tokens + output_tokens): (
            "you divided tokens by tokens: a request occupies whole blocks, and its last, partial block still "
            "takes a whole block."
        ),
        (geometry.num_blocks - 1) // blocks_needed(prompt_tokens, geometry.block_size): (
            "the output tokens need KV cache too: each generated token is stored before the next is computed."
        ),
    }
    slips.pop(right, None)
    message = slips.get(answer, "not the number of such block tables the pool can hold.")
    return verdict(
        "01.2",
        answer == right,
        f"yes: each request needs {per_request} blocks, and {geometry.num_blocks - 1} blocks are usable, "
        f"so {right} requests fit.",
        message,
        (
            "A request's block table holds ceil(tokens / block_size) blocks, counting prompt and output tokens; "
            "the pool has num_blocks blocks, one of which is reserved.",
            "Use course_lib.kv_cache.cache_geometry(llm) for num_blocks and block_size.",
        ),
    )
