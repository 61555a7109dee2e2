"""Checks for the exercises of ``notebooks/04_chat.ipynb`` (chat caching, pitfalls, salts).

Each check measures on the real engine or derives the answer from token ids,
never from a stored constant.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Callable

from course_lib.chat import block_size_of, cache_salt_problem, expected_cached_tokens, measure_reuse, render_chat
from course_lib.exercises import ExerciseResult, exercise, verdict

if TYPE_CHECKING:
    from vllm import LLM

    from course_lib.chat import ChatSession


@exercise(
    "04.1",
    "predict a turn after the history was trimmed",
    hints=(
        "The cache holds the full blocks of every earlier prompt of this conversation. The new prompt reuses "
        "the longest run of leading tokens it shares with any one of them, in whole blocks.",
        "Build the next prompt with session.build_prompt(...) before sending it, and compare it with each "
        "prompt in session.prompts (common_prefix_len): where does it first differ, now that the oldest turn "
        "is gone?",
    ),
)
def check_turn_prediction(session: ChatSession, predicted: int) -> ExerciseResult:
    """Exercise 1: ``predicted`` = the last turn's ``num_cached_tokens``, computed from token ids
    BEFORE the turn ran: the best whole-block prefix it shares with any earlier prompt."""
    name = "04.1 predict a turn after the history was trimmed"
    if len(session.stats) < 2:
        return verdict(name, False, "", "run at least two turns with session.chat(...) first")
    measured = session.stats[-1].num_cached_tokens
    bs = block_size_of(session.llm)
    last = session.prompts[-1]
    from_tokens = max(expected_cached_tokens(p, last, bs) for p in session.prompts[:-1])
    if predicted == measured:
        return verdict(
            name, True,
            f"{predicted} tokens (vLLM measured the same): the whole blocks the new prompt shares with an earlier "
            f"one, out of {len(last)} prompt tokens",
            "",
        )  # fmt: skip
    hints = [
        "The new prompt matches an earlier prompt only up to its first differing token: compare it with every "
        "earlier prompt (session.prompts), not only with the last one.",
        f"Round the longest common prefix DOWN to a multiple of {bs}: a partial block has no hash.",
    ]
    if from_tokens != measured:
        hints.append(
            "Here the token rule and the engine disagree: did another request run in between, or did a turn "
            "generate its reply instead of using reply=?"
        )
    return verdict(name, False, "", f"you predicted {predicted}: not what vLLM measured.", hints)


@exercise(
    "04.2",
    "a cache-friendly system prompt",
    hints=(
        "A prefix hit stops at the first token that differs: where in your messages is the first token that "
        "changes from one day to the next?",
        "Everything that stays the same must come before everything that changes.",
    ),
)
def check_stable_messages(
    llm: "LLM", fn: Callable[[str, str, str], list[dict[str, str]]], policy: str
) -> ExerciseResult:
    """Exercise 2: ``fn(date, request_id, question)`` returns chat messages that keep the
    date, the request id and ``policy``, yet let requests on other days reuse the policy's blocks."""
    name = "04.2 a cache-friendly system prompt"
    tok = llm.get_tokenizer()
    cases = [("2026-11-27", "req-7f3a91", "Can I return a book?"), ("2026-11-28", "req-c24e08", "Do you ship abroad?")]
    try:
        msgs = [fn(*c) for c in cases]
        ids = [render_chat(tok, m) for m in msgs]
    except NotImplementedError:
        raise  # not written yet: @exercise answers "not yet"
    except Exception as exc:  # the learner's code: report, do not crash the notebook
        return verdict(name, False, "", f"your function raised {type(exc).__name__}: {exc}")
    for (date, rid, _), m in zip(cases, msgs):
        text = " ".join(x.get("content", "") for x in m)
        if date not in text or rid not in text or policy not in text:
            msg = "keep the policy, the date and the request id in the messages: the model needs them"
            return verdict(name, False, "", msg)
    bs = block_size_of(llm)
    policy_ids = render_chat(tok, [{"role": "system", "content": policy}], add_generation_prompt=False)
    needed = ((len(policy_ids) - 2) // bs) * bs  # the policy's full blocks (its closing tokens may differ)
    r = measure_reuse(llm, ids[0], ids[1])
    return verdict(
        name, r.num_cached_tokens >= needed,
        f"the next day's request reused {r.num_cached_tokens} of {r.second_tokens} tokens (vLLM measured), "
        f"at least the policy's {needed}",
        f"the next day's request reused only {r.num_cached_tokens} tokens (vLLM measured), fewer than the "
        "policy's full blocks: something that changes every day comes before the policy ends",
        (
            "A prefix hit stops at the first token that differs: where in your messages is the first token that "
            "changes from one day to the next?",
            "Everything that stays the same must come before everything that changes.",
        ),
    )  # fmt: skip


@exercise(
    "04.3",
    "server-side tenant salts",
    hints=(
        "A keyed hash of the tenant id with a server-side secret is stable per tenant and not guessable.",
        "vLLM's server accepts 1 to 128 characters, none of '@', '/', backslash or NUL: pick an encoding whose "
        "alphabet avoids them.",
    ),
)
def check_tenant_salt(llm: "LLM", fn: Callable[[str], str]) -> ExerciseResult:
    """Exercise 3: ``fn(tenant_id)`` derives the salt the SERVER attaches for a tenant:
    stable per tenant, different across tenants, not guessable from the tenant id, and
    accepted by vLLM's OpenAI server (``cache_salt_problem`` mirrors its ``validate_cache_salt``)."""
    name = "04.3 server-side tenant salts"
    tenants = ["acme", "globex"] + [f"tenant-{i:03d}" for i in range(32)]
    try:
        a1, a2, b = fn("acme"), fn("acme"), fn("globex")
        salts = {t: fn(t) for t in tenants}
    except NotImplementedError:
        raise  # not written yet: @exercise answers "not yet"
    except Exception as exc:  # the learner's code: report, do not crash the notebook
        return verdict(name, False, "", f"your function raised {type(exc).__name__}: {exc}")
    if not all(isinstance(s, str) and s for s in (a1, a2, b, *salts.values())):
        return verdict(name, False, "", "return a non-empty str (vLLM's cache_salt is a string)")
    for tenant, salt in salts.items():
        problem = cache_salt_problem(salt)
        if problem:
            return verdict(
                name, False, "",
                f"vLLM's OpenAI server would reject the salt of tenant {tenant!r}: {problem}",
                (
                    "The server checks every cache_salt (vllm/entrypoints/generate/base/protocol.py, "
                    "validate_cache_salt): 1 to 128 characters, and none of '@', '/', backslash or NUL.",
                    "Standard base64 uses '/'; pick an encoding whose alphabet avoids the forbidden "
                    "characters, and keep the result within 128 characters.",
                ),
            )  # fmt: skip
    if a1 != a2:
        return verdict(name, False, "", "the same tenant got two salts: its own requests could not share the cache")
    if len(set(salts.values())) < len(salts):
        return verdict(name, False, "", "two tenants got the same salt: they share cached blocks again")
    if any(t in s for t, s in salts.items()) or min(len(s) for s in salts.values()) < 32:
        return verdict(
            name, False, "",
            "a salt that contains the tenant id, or is shorter than 32 characters (the course's bar, not vLLM's), "
            "can be guessed: derive it from something only the server knows",
            (
                "A keyed hash of the tenant id with a server-side secret is stable per tenant and not guessable.",
                "Python's hmac module computes one; hexdigest() gives a string long enough.",
            ),
        )  # fmt: skip
    system = "You are the assistant of a shared ticketing platform. Answer from the tenant's own tickets only."
    messages = [{"role": "system", "content": system}, {"role": "user", "content": "Summarise my open tickets."}]
    prompt = render_chat(llm.get_tokenizer(), messages)
    cross = measure_reuse(llm, prompt, prompt, first_salt=a1, second_salt=b)
    same = measure_reuse(llm, prompt, prompt, first_salt=a1, second_salt=a2)
    ok = cross.num_cached_tokens == 0 and same.num_cached_tokens == same.expected_cached > 0
    return verdict(
        name, ok,
        f"other tenant: {cross.num_cached_tokens} cached tokens; same tenant: {same.num_cached_tokens} (vLLM measured)",
        f"measured: other tenant {cross.num_cached_tokens}, same tenant {same.num_cached_tokens} cached tokens",
    )  # fmt: skip
