"""Checks for the exercises of ``notebooks/08_troubleshooting.ipynb`` (the clinic).

Each check computes the right answer itself, from the real engine or from course_lib
(the token rule of ``course_lib.diagnose``, the exact ``PrefixCacheSimulator``), never
from a stored constant, and never reveals it on a wrong answer.
"""

from __future__ import annotations

from typing import Any, Callable, Sequence

from course_lib.chat import measure_reuse, render_chat
from course_lib.diagnose import diagnose_prompts
from course_lib.exercises import ExerciseResult, exercise, verdict
from course_lib.simulator import PrefixCacheSimulator, full_block_tokens

_QUESTION = [{"role": "user", "content": "When do you open on Saturday?"}]


@exercise(
    "08.1",
    "a system prompt that keeps its date and its cache",
    hints=(
        "The chain of block hashes breaks at the first token that differs: what differs between two days?",
        "Keep the rules first, byte for byte the same for everyone every day, and put what changes after them.",
    ),
)
def check_stable_system_prompt(build: Callable[[str, str, str], str], rules: str, tokenizer: Any) -> ExerciseResult:
    """``build(rules, user, today)`` -> a system prompt with a name and a date that still shares the rules' blocks.

    Two customers on two days (with the same question) are compared with ``diagnose_prompts``:
    the second must get at least the full blocks of the system turn holding the rules alone.
    """
    name = "08.1 a system prompt that keeps its date and its cache"
    cases = (("Ana", "Thursday 3 December 2026"), ("Bartholomew", "Friday 4 December 2026"))
    prompts = [build(rules, user, day) for user, day in cases]
    if not all(isinstance(p, str) and rules in p and user in p and day in p for p, (user, day) in zip(prompts, cases)):
        return verdict(name, False, "", "your prompt must contain the rules unchanged, the name and the date it was given")
    chats = [[{"role": "system", "content": p}, *_QUESTION] for p in prompts]
    d = diagnose_prompts(chats[0], chats[1], tokenizer=tokenizer)
    rules_turn = render_chat(tokenizer, [{"role": "system", "content": rules}], add_generation_prompt=False)
    floor = full_block_tokens(len(rules_turn) - 2, d.block_size)  # without <|im_end|> and the newline
    return verdict(
        name, d.cached_tokens >= floor,
        f"the second customer's request reuses {d.cached_tokens} tokens (cause: {d.cause})",
        f"the second customer's request reuses only {d.cached_tokens} tokens: the two prompts part too early "
        f"(cause: {d.cause})",
        ("Run diagnose_prompts on the two customers' chats and read where they first differ.",),
    )  # fmt: skip


@exercise(
    "08.2",
    "predict a junction's cached tokens",
    hints=(
        "Tokenize A and B and find the first index where the token ids differ, not the characters.",
        "Only whole blocks before that index can hit, and never B's last token.",
    ),
)
def check_junction_prediction(prediction: int, llm: Any, a: Sequence[int], b: Sequence[int]) -> ExerciseResult:
    """``prediction``: ``num_cached_tokens`` of B sent right after A on an empty cache, measured on ``llm``."""
    name = "08.2 predict a junction's cached tokens"
    measured = measure_reuse(llm, a, b).num_cached_tokens
    return verdict(
        name, int(prediction) == measured,
        f"{measured} tokens, as the engine reports: the block holding the re-tokenised junction misses",
        f"you predicted {prediction}: not what the engine reports.",
        ("Compare the token ids around the junction (course_lib.diagnose.diagnose_prompts shows them).",
         "The text agrees further than the tokens do: count full blocks up to the first differing TOKEN."),
    )  # fmt: skip


def _rotation_hits(num_gpu_blocks: int, block_size: int, prompts: Sequence[Sequence[int]], rounds: int) -> bool:
    sim = PrefixCacheSimulator(num_gpu_blocks, block_size)
    try:
        for _ in range(rounds):
            cached = sim.run(prompts)
    except ValueError:  # a request that needs more blocks than the pool has could never run
        return False
    return all(c == full_block_tokens(len(p) - 1, block_size) for c, p in zip(cached, prompts))


@exercise(
    "08.3",
    "the smallest pool for a rotating working set",
    hints=(
        "A request of P prompt tokens and one generated token holds ceil(P / block_size) blocks while it runs.",
        "Cached blocks are evicted oldest first; try pool sizes in PrefixCacheSimulator and find the first "
        "one where the second round hits every full block.",
    ),
)
def check_pool_size(answer: int, prompts: Sequence[Sequence[int]], block_size: int) -> ExerciseResult:
    """``answer``: the smallest ``num_gpu_blocks`` (null block included) for which the second round hits fully."""
    name = "08.3 the smallest pool for a rotating working set"
    if not isinstance(answer, int) or answer < 2:
        return verdict(name, False, "", "give a whole number of blocks, at least 2 (vLLM reserves one null block)")
    need = max(-(-len(p) // block_size) for p in prompts) + 1
    if answer < need:
        return verdict(name, False, "", "with so few blocks the longest request could not even run")
    ok = _rotation_hits(answer, block_size, prompts, 2) and not _rotation_hits(answer - 1, block_size, prompts, 2)
    return verdict(
        name, ok,
        f"{answer} blocks: one fewer and least-recently-used eviction takes a block the next request needs",
        f"{answer} blocks is not the smallest pool where every repeat hits all its full blocks",
        ("Replay two rounds in PrefixCacheSimulator(num_gpu_blocks, block_size) for each candidate size.",),
    )  # fmt: skip
