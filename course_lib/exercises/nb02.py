"""Checks for the exercises of ``notebooks/02_block_hashing.ipynb`` (block hashes, the cap, eviction).

Each check computes the right answer with ``course_lib.hashing`` / ``course_lib.simulator``
(both tested byte for byte and request for request against vLLM), never from a stored constant.
"""

from __future__ import annotations

import random
from typing import Callable, Sequence

from course_lib.exercises import ExerciseResult, exercise, verdict
from course_lib.simulator import PrefixCacheSimulator


def _cases(block_size: int) -> list[tuple[list[int], list[int], list[int]]]:
    """Triples (first prompt, its generated tokens, second prompt) that hit every rule: shared prefixes of all
    lengths, identical prompts (aligned and not), a divergence inside block 0, prompts shorter than a block, and
    chat follow-ups (first prompt + its answer + a new turn) where generated tokens fill blocks, or just fail to."""
    rng = random.Random(1)
    base = [rng.randrange(1000) for _ in range(5 * block_size)]

    def out(n: int) -> list[int]:  # generated or new tokens: ids the prompts above never use
        return [rng.randrange(1000, 2000) for _ in range(n)]

    bs = block_size
    cases = [
        (base[: 3 * bs], out(1), base[: 3 * bs]),  # identical, block-aligned: the cap costs a whole block
        (base[: 3 * bs + 5], out(1), base[: 3 * bs + 5]),  # identical, not aligned
        (base[: bs - 1], out(1), base[: bs - 1]),  # shorter than one block: nothing is ever cached
        ([7] + base[1 : 2 * bs], out(1), base[: 2 * bs]),  # differs in token 0: nothing matches
        (base[: 4 * bs], out(1), base[: 2 * bs + 3] + [1, 2, 3] * bs),  # shared 2 blocks + 3 tokens
        (base[: 2 * bs + 2], out(1), base[: 4 * bs]),  # the first prompt's partial block was never cached
    ]
    for first_len, n_out, n_new in ((2 * bs + 20, 20, 30), (bs + 20, 13, 5), (bs + 20, 12, 10), (2 * bs, bs + 1, 0)):
        first, answer = base[:first_len], out(n_out)  # a chat follow-up: the answer's full blocks can hit
        cases.append((first, answer, first + answer + out(n_new)))
    first, answer = base[: bs + 10], out(2 * bs)
    cases.append((first, answer, first + answer[:5] + out(2 * bs)))  # the app edited the answer after 5 tokens
    for _ in range(9):
        first, answer = base[: rng.randrange(1, 4 * bs)], out(rng.randrange(1, 2 * bs))
        if rng.random() < 0.5:
            second = first + answer[: rng.randrange(0, len(answer) + 1)] + out(rng.randrange(0, 40))
        else:
            second = base[: rng.randrange(1, 5 * bs)] + out(rng.randrange(0, 40))
        cases.append((first, answer, second))
    return cases


@exercise("02.1", "predict num_cached_tokens from block hashes", hints=(
    "Only FULL blocks have a hash, and only tokens with KV are cached: the first request's prompt and every "
    "generated token except the last one sampled (it is never fed back to the model).",
    "Walk the second prompt's block hashes from block 0 and stop at the first one the cache lacks (chaining).",
    "Never count the second prompt's last token: at most len(second_ids) - 1 tokens, in whole blocks.",
))  # fmt: skip
def check_predict_cached(
    fn: Callable[[Sequence[int], Sequence[int], Sequence[int], int], int], block_size: int = 32
) -> ExerciseResult:
    """Exercise 1: ``fn(first_ids, first_output_ids, second_ids, block_size)`` returns the ``num_cached_tokens``
    vLLM reports for ``second_ids`` when it runs right after ``first_ids`` generated ``first_output_ids`` on an
    empty cache. The expected values come from ``PrefixCacheSimulator``, which ``tests/test_simulator.py``
    checks against the engine request by request, generated tokens included."""
    name = "02.1 predict num_cached_tokens from block hashes"
    cases = _cases(block_size)
    for first, answer, second in cases:
        sim = PrefixCacheSimulator(1000, block_size)
        sim.process(first, answer)
        expected = sim.process(second)
        try:
            got = fn(list(first), list(answer), list(second), block_size)
        except NotImplementedError:
            raise  # not written yet: @exercise answers "not yet"
        except Exception as exc:  # the learner's code: report, do not crash the notebook
            return verdict(name, False, "", f"your function raised {type(exc).__name__}: {exc}")
        if got != expected:
            with_kv = list(first) + list(answer)[:-1]
            shared = next((k for k, (x, y) in enumerate(zip(with_kv, second)) if x != y), min(len(with_kv), len(second)))
            if list(second) == list(first):
                hint = "the prompts are identical: vLLM caps the hit at num_tokens - 1 tokens, in whole blocks"
            elif len(answer) > 1 and shared > len(first):
                hint = ("the second prompt continues into the first request's generated tokens; work out which of "
                        "them have KV and which blocks they filled")  # fmt: skip
            else:
                hint = "compare block hashes from block 0 and stop at the first difference; only FULL blocks have a hash"
            return verdict(
                name, False, "",
                f"for a first prompt of {len(first)} tokens that generated {len(answer)} token(s), and a second "
                f"prompt of {len(second)} tokens, your function disagrees with vLLM: {hint}.",
                (
                    "A block is cached only if it was FULL of tokens with KV after the first request: its prompt "
                    "and its generated tokens except the last one sampled. The second prompt hits the leading full "
                    "blocks whose hashes (which chain all earlier tokens) match, and never its own last token.",
                    f"In the failing case the second prompt shares its first {shared} tokens with the first "
                    f"request's tokens that have KV; it has {len(second)} tokens and block_size is {block_size}. "
                    "Which of its full blocks lie entirely inside the shared part, and before its last token?",
                ),
            )  # fmt: skip
    return verdict(name, True, f"all {len(cases)} cases agree with vLLM's rules (block_size={block_size})", "")


def eviction_exercise() -> tuple[int, int, list[tuple[str, int, int]]]:
    """The tiny-pool workload of exercise 2: ``(num_gpu_blocks, block_size, requests)``.

    Each request is ``(name, first_token, length)``: the prompt is
    ``list(range(first_token, first_token + length))``, run one at a time with one
    generated token.
    """
    return 7, 4, [("A", 0, 9), ("B", 100, 9), ("A's first 8 tokens", 0, 8), ("C", 200, 9), ("A again", 0, 9),
                  ("B again", 100, 9)]  # fmt: skip


@exercise("02.2", "eviction on a tiny pool", hints=(
    "Usable blocks: num_gpu_blocks - 1 (block 0 is the null block). A 9-token prompt with block size 4 needs 3 "
    "blocks: 2 full, 1 partial.",
    "Freed blocks without a hash go to the FRONT of the free queue, cached ones to the BACK (tail block first); "
    "a new block is taken from the front, evicting its hash.",
    "Remember the num_tokens - 1 cap on hits, and that a partial block never has a hash.",
))  # fmt: skip
def check_eviction(answer: Sequence[int]) -> ExerciseResult:
    """Exercise 2: ``answer`` lists the ``num_cached_tokens`` of each request of ``eviction_exercise()``."""
    name = "02.2 eviction on a tiny pool"
    num_gpu_blocks, block_size, requests = eviction_exercise()
    sim = PrefixCacheSimulator(num_gpu_blocks, block_size)
    expected = [sim.process(list(range(first, first + n))) for _, first, n in requests]
    answer = [int(a) for a in answer]
    if answer == expected:
        return verdict(name, True, f"{answer}: LRU eviction of cached blocks, uncached blocks reused first", "")
    if len(answer) != len(expected):
        return verdict(name, False, "", f"give one number per request ({len(expected)}), not {len(answer)}")
    i = next(k for k, (a, e) in enumerate(zip(answer, expected)) if a != e)
    return verdict(
        name, False, "",
        f"request {i + 1} of {len(requests)} ({requests[i][0]!r}) is off: you said {answer[i]}. Draw the free "
        "queue after each request and check which hashes are still cached when it arrives.",
        (
            "Freed blocks without a hash go to the FRONT of the free queue, cached ones to the BACK (tail block "
            "first), and a new block is taken from the front, evicting its hash.",
            "Remember the num_tokens - 1 cap on hits, and that a partial block never has a hash.",
        ),
    )  # fmt: skip
