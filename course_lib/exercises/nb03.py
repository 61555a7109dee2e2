"""Checks for the exercises of ``notebooks/03_chat.ipynb`` (chat caching, pitfalls, salts).

Each check measures on the real engine or derives the answer from token ids,
never from a stored constant.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Callable

from course_lib.chat import block_size_of, expected_cached_tokens, measure_reuse, render_chat
from course_lib.exercises import ExerciseResult, verdict

if TYPE_CHECKING:
    from vllm import LLM

    from course_lib.chat import ChatSession


def check_turn_prediction(session: ChatSession, predicted: int) -> ExerciseResult:
    """Exercise 1: ``predicted`` = the last turn's ``num_cached_tokens``, computed from token
    counts BEFORE the turn ran (the previous prompt's full blocks)."""
    name = "03.1 predict a turn's cache hit"
    if len(session.stats) < 2:
        return verdict(name, False, "", "run at least two turns with session.chat(...) first")
    measured = session.stats[-1].num_cached_tokens
    bs = block_size_of(session.llm)
    from_tokens = expected_cached_tokens(session.prompts[-2], session.prompts[-1], bs)
    if predicted == measured:
        return verdict(
            name, True,
            f"{predicted} tokens: the previous prompt ({len(session.prompts[-2])} tokens) rounded down to "
            f"whole blocks of {bs}; vLLM measured the same",
            "",
        )  # fmt: skip
    hint = (
        f"vLLM measured {measured}. Only FULL blocks of {bs} tokens are cached: take the previous turn's "
        f"prompt length (session.prompts[-2]) and round it down to a multiple of {bs}"
    )
    if from_tokens != measured:
        hint += (
            f" (here the token rule gives {from_tokens}: did another request with the same salt run in between, "
            "or did a turn generate its reply instead of using reply=?)"
        )
    return verdict(name, False, "", f"you predicted {predicted}; {hint}")


def check_stable_messages(
    llm: "LLM", fn: Callable[[str, str, str], list[dict[str, str]]], policy: str
) -> ExerciseResult:
    """Exercise 2: ``fn(date, request_id, question)`` returns chat messages that keep the
    date, the request id and ``policy``, yet let requests on other days reuse the policy's blocks."""
    name = "03.2 a cache-friendly system prompt"
    tok = llm.get_tokenizer()
    cases = [("2026-11-27", "req-7f3a91", "Can I return a book?"), ("2026-11-28", "req-c24e08", "Do you ship abroad?")]
    try:
        msgs = [fn(*c) for c in cases]
        ids = [render_chat(tok, m) for m in msgs]
    except Exception as exc:
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
        f"the next day's request reused only {r.num_cached_tokens} tokens (vLLM measured); the policy alone "
        f"fills {needed} tokens of full blocks. Put the policy first and the date and request id after it "
        "(end of the system prompt, or in the user message)",
    )  # fmt: skip


def check_tenant_salt(llm: "LLM", fn: Callable[[str], str]) -> ExerciseResult:
    """Exercise 3: ``fn(tenant_id)`` derives the salt the SERVER attaches for a tenant:
    stable per tenant, different across tenants, not guessable from the tenant id."""
    name = "03.3 server-side tenant salts"
    try:
        a1, a2, b = fn("acme"), fn("acme"), fn("globex")
    except Exception as exc:
        return verdict(name, False, "", f"your function raised {type(exc).__name__}: {exc}")
    if not all(isinstance(s, str) and s for s in (a1, a2, b)):
        return verdict(name, False, "", "return a non-empty str (vLLM's cache_salt is a string)")
    if a1 != a2:
        return verdict(name, False, "", "the same tenant got two salts: its own requests could not share the cache")
    if a1 == b:
        return verdict(name, False, "", "two tenants got the same salt: they share cached blocks again")
    if "acme" in a1 or len(a1) < 32:
        return verdict(
            name, False, "",
            "a salt that contains the tenant id, or is short, can be guessed: derive it from a server-side secret "
            "(e.g. hmac.new(SECRET, tenant_id.encode(), 'sha256').hexdigest())",
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
