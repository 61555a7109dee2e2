"""Checks for the exercises of ``notebooks/09_second_tier.ipynb`` (a second KV tier, the course's connector).

Each check computes the answer itself: the block size from a block file the engine wrote,
the local and tier hits by running the scenario on the live engine under a fresh
``cache_salt`` (new block hashes: nothing cached locally or in the tier), never from a constant.
"""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any, Sequence

from course_lib.exercises import ExerciseResult, exercise, verdict


@exercise(
    "09.1",
    "the bytes of one block in the tier",
    hints=(
        "A block holds, for each of its tokens, a key vector and a value vector in every layer, for every KV head.",
        "Multiply: layers x 2 (K and V) x KV heads x head size x tokens per block x bytes per number. The model's "
        "config has the layer and head counts; head size = hidden size / attention heads; bfloat16 is 2 bytes.",
    ),
)
def check_block_bytes(predicted: int, tier_dir: str | Path) -> ExerciseResult:
    """Exercise 1: the payload of one block file, compared with a file the engine wrote (size minus header)."""
    from course_lib.offload.store import SUFFIX, read_header

    name = "09.1 the bytes of one block in the tier"
    files = sorted(Path(tier_dir).glob("*" + SUFFIX))
    if not files:
        return verdict(name, False, "", "the tier directory has no block file yet: run the cells of section 4 first")
    head, offset = read_header(files[0])
    actual = files[0].stat().st_size - offset
    if not isinstance(predicted, (int, float)) or int(predicted) != predicted:
        return verdict(name, False, "", f"give a whole number of bytes, not {predicted!r}")
    if int(predicted) == actual:
        return verdict(name, True, f"{actual:,} bytes: the file holds {actual:,} bytes of KV plus a "
                       f"{offset}-byte header. A 1M-token tier of this model needs {actual * 1_000_000 // 32 / 2**30:.1f} GiB.",
                       "")  # fmt: skip
    hints: tuple[str, ...] = ()
    if int(predicted) * 2 == actual:
        hints = ("Twice as many: each token stores a key AND a value.",)
    elif int(predicted) == actual * 2 or int(predicted) * 3 == actual * 9:
        hints = ("Count KV heads (the model shares 3 KV heads among 9 query heads), and 2 bytes per bfloat16.",)
    return verdict(name, False, "", f"{int(predicted):,} bytes is not the size of one block's payload: recount the "
                   "factors of one block (all layers, keys and values)", hints)  # fmt: skip


def _counters(llm: Any) -> tuple[float, float]:
    values = {m.name: getattr(m, "value", 0) for m in llm.get_metrics()}
    return values["vllm:prefix_cache_hits"], values["vllm:external_prefix_cache_hits"]


@exercise(
    "09.2",
    "local hit, then tier hit",
    hints=(
        "After reset_prefix_cache() the local cache is empty and the tier is not. The request C then puts its "
        "own full blocks (loaded or computed) back into the local cache.",
        "The local cache is looked up first, block by block; the tier only continues from where the local hit "
        "stops. Neither may cover the prompt's last token.",
    ),
)
def check_local_then_tier(predicted: Sequence[int], llm: Any, prompt_a: Sequence[int],
                          prompt_c: Sequence[int]) -> ExerciseResult:
    """Exercise 2: run A, reset the local cache, run C, run A again; (local, tier) hits of the last run.

    Runs on the engine under a fresh ``cache_salt``, so A and C share no block with anything
    cached before (the salt enters every block hash), then reads vLLM's two counters.
    """
    from vllm import SamplingParams

    name = "09.2 local hit, then tier hit"
    if not isinstance(predicted, (tuple, list)) or len(predicted) != 2:
        return verdict(name, False, "", "give a pair: (tokens from the local cache, tokens from the tier)")
    salt = uuid.uuid4().hex
    sampling = SamplingParams(max_tokens=1, temperature=0.0)

    def run(prompt: Sequence[int]) -> None:
        llm.generate([{"prompt_token_ids": list(prompt), "cache_salt": salt}], sampling, use_tqdm=False)

    run(prompt_a)
    llm.reset_prefix_cache()
    run(prompt_c)
    local0, tier0 = _counters(llm)
    run(prompt_a)
    local1, tier1 = _counters(llm)
    actual = (round(local1 - local0), round(tier1 - tier0))
    got = tuple(int(x) for x in predicted)
    if got == actual:
        return verdict(name, True, f"{actual[0]} tokens from the local cache (C's blocks) and {actual[1]} from the "
                       "tier, as vLLM's counters prefix_cache_hits and external_prefix_cache_hits rose", "")  # fmt: skip
    hints: tuple[str, ...] = ()
    if got[0] == 0:
        hints = ("Running C filled the local cache again with C's full blocks, including the ones it loaded.",)
    elif sum(got) == sum(actual):
        hints = ("The total is right; the split is not: which blocks did C leave in the local cache?",)
    elif sum(got) > sum(actual):
        hints = ("Neither cache may cover the last prompt token: count whole blocks of len(A) - 1 tokens.",)
    return verdict(name, False, "", f"{got} is not what the engine reported: follow A's blocks one by one, "
                   "local cache first, then the tier", hints)  # fmt: skip
