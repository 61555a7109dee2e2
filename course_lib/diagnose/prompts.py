"""Why did prompt B not hit the cache that prompt A left? One answer from the token ids.

Taught in ``notebooks/08_troubleshooting.ipynb`` (the clinic) and run by
``course diagnose prompts A B``.

The rule it applies is vLLM 0.32.0's, for a cache that holds A alone (single KV-cache
group, full attention):

- B reuses whole blocks of the token prefix it shares with A
  (``vllm/v1/core/kv_cache_utils.py``, ``hash_block_tokens``: each block's hash chains
  the previous one, so the first differing token ends the hits);
- never more than ``len(B) - 1`` tokens: the last prompt token is always computed
  again, for its logits (``vllm/v1/core/kv_cache_manager.py``, ``get_computed_blocks``);
- nothing when the salts differ: ``cache_salt`` enters the first block's extra keys
  (``("cache_salt", salt)`` in ``kv_cache_utils.py``), so every hash differs.

``expected_cached_tokens`` (``course_lib.simulator``) is that rule; this module adds
the *why*: where B leaves A, what the tokens there look like, and which of a fixed
list of causes fits. ``tests/test_diagnose.py`` checks ``cached_tokens`` against the
engine's ``num_cached_tokens`` for a pair of each cause.
"""

from __future__ import annotations

import difflib
from dataclasses import asdict, dataclass
from typing import Any, Mapping, Sequence, Union

from course_lib.chat import render_chat
from course_lib.engine import CPU_BLOCK_SIZE, CourseError
from course_lib.simulator import common_prefix_len, expected_cached_tokens

Messages = Sequence[Mapping[str, str]]
PromptInput = Union[str, Messages]

#: The fixed list of causes: key -> what it means (the report's "cause" line).
CAUSES: dict[str, str] = {
    "different_salt": "A and B carry different cache_salt values: the salt enters the first block's hash, "
    "so no block of A can serve B",
    "identical": "B is A again: every full block hits, except that the last prompt token is always recomputed "
    "(the n-1 cap), which costs the last block when the prompt ends on a block boundary",
    "template_rewrite": "B continues A's conversation, but the chat template rendered an earlier turn "
    "differently (it rewrites history, e.g. drops reasoning), so B leaves A inside a turn A already had",
    "tokenisation_or_whitespace": "the texts agree past the point where the tokens differ: whitespace or a "
    "token merge at the junction changed the token ids, and the block holding them cannot hit",
    "differs_in_first_block": "B differs from A inside the first block (a timestamp, an id, a name at the top) "
    "although much of the rest is the same: the chain of block hashes breaks at block 0",
    "short_common_prefix": "the prefix A and B share is shorter than one block: only full blocks are cached",
    "long_shared_prefix": "B shares a long prefix with A and hits normally: its full blocks are served",
}

#: What to do about each cause (one line, printed under the cause).
FIXES: dict[str, str] = {
    "different_salt": "give one salt per tenant (or none), not one per request",
    "identical": "nothing to fix; a resend recomputes at least its last token",
    "template_rewrite": "keep earlier turns byte-identical: use a template that does not rewrite history, "
    "or accept the loss from the first rewritten turn on",
    "tokenisation_or_whitespace": "end the shared part on a stable boundary (e.g. a newline the template adds "
    "anyway) and do not vary whitespace at the junction",
    "differs_in_first_block": "move what varies (date, id, user name) after the shared part",
    "short_common_prefix": "share more than one block (or accept no reuse); a smaller block size helps on a GPU",
    "long_shared_prefix": "nothing to fix",
}

CONTEXT_TOKENS = 3
_VISIBLE = str.maketrans({" ": "·", "\n": "↵", "\t": "→", "\r": "␍"})


def visible(text: str) -> str:
    """``text`` with its whitespace made visible: space ``·``, newline ``↵``, tab ``→``."""
    return text.translate(_VISIBLE)


@dataclass
class PromptDiagnosis:
    """What a cache holding A does for B, and why (the ``--json`` object is ``to_dict()``)."""

    prompt_tokens_a: int
    prompt_tokens_b: int
    common_prefix_tokens: int
    first_difference: int | None  # token index where B leaves A; None when B starts with all of A
    cached_tokens: int
    block_size: int
    cause: str
    salt_a: str | None = None
    salt_b: str | None = None
    context_a: str = ""
    context_b: str = ""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self) | {"explanation": CAUSES[self.cause], "fix": FIXES[self.cause]}

    def __str__(self) -> str:
        bs, d = self.block_size, self.first_difference
        salts = "none" if self.salt_a is None and self.salt_b is None else f"A={self.salt_a!r} B={self.salt_b!r}"
        lines = [f"A: {self.prompt_tokens_a} tokens   B: {self.prompt_tokens_b} tokens   block size {bs}   salts: {salts}"]
        if d is None:
            lines.append(f"B starts with all of A ({self.common_prefix_tokens} tokens)")
        else:
            lines.append(f"common prefix: {self.common_prefix_tokens} tokens; B first differs from A at token {d} "
                         f"(block {d // bs})")
            lines += [f"  A  {self.context_a}", f"  B  {self.context_b}"]
        lines.append(f"cached tokens of B (a cache holding A): {self.cached_tokens} of {self.prompt_tokens_b}")
        lines.append(f"cause: {self.cause}: {CAUSES[self.cause]}")
        lines.append(f"fix: {FIXES[self.cause]}")
        return "\n".join(lines)


def is_messages(value: object) -> bool:
    """True for a list of chat messages: dicts with string ``role`` and ``content``."""
    return isinstance(value, list) and bool(value) and all(
        isinstance(m, dict) and isinstance(m.get("role"), str) and isinstance(m.get("content"), str) for m in value
    )


def to_token_ids(tokenizer: Any, prompt: PromptInput | Sequence[int], chat_template: str | None = None) -> list[int]:
    """Token ids of a plain-text prompt, a chat (rendered by the template) or ids as given.

    A chat ending with a user turn gets the assistant header (``add_generation_prompt``),
    as the chat endpoint sends it; one ending with an assistant turn is rendered as it
    stands: the conversation including that reply, which is what the cache holds after it.
    """
    if isinstance(prompt, str):
        return list(tokenizer.encode(prompt, add_special_tokens=False))
    items = list(prompt)
    if items and all(isinstance(t, int) for t in items):
        return [int(t) for t in items]
    if not is_messages(items):
        raise CourseError("a chat prompt must be a non-empty list of messages, each {'role': str, 'content': str}")
    gen = items[-1]["role"] != "assistant"
    return render_chat(tokenizer, items, add_generation_prompt=gen, chat_template=chat_template)


def _token_text(tokenizer: Any, token_id: int) -> str:
    return visible(tokenizer.decode([token_id]))


def context(tokenizer: Any, ids: Sequence[int], at: int, width: int = CONTEXT_TOKENS) -> str:
    """The tokens around position ``at``, index and text, whitespace visible; ``▶`` marks ``at``."""
    left = [f"[{i}]{_token_text(tokenizer, ids[i])!r}" for i in range(max(at - width, 0), min(at, len(ids)))]
    right = [f"[{i}]{_token_text(tokenizer, ids[i])!r}" for i in range(at, min(at + width, len(ids)))]
    head = "… " if at - width > 0 else ""
    tail = " …" if at + width < len(ids) else ""
    return f"{head}{' '.join(left)} ▶ {' '.join(right) or '(end of prompt)'}{tail}"


def _texts_agree_past(tokenizer: Any, a: Sequence[int], b: Sequence[int], at: int) -> bool:
    """Is the difference at token ``at`` only in how the same text was cut into tokens, or in whitespace?

    True when one text is a prefix of the other (a junction tokenised two ways), when
    the texts still agree past both differing tokens, or when the next characters
    differ in whitespace only.
    """
    ta, tb = tokenizer.decode(list(a)), tokenizer.decode(list(b))
    agree = common_prefix_len(ta, tb)
    if agree in (len(ta), len(tb)):
        return True
    ends = (len(tokenizer.decode(list(a[: at + 1]))), len(tokenizer.decode(list(b[: at + 1]))))
    if agree >= max(ends):
        return True
    shared = len(tokenizer.decode(list(a[:at])))
    rest_a, rest_b = ("".join(t[shared : shared + 80].split())[:20] for t in (ta, tb))
    return bool(rest_a) and rest_a == rest_b


def _realigns(a: Sequence[int], b: Sequence[int], at: int, block_size: int) -> bool:
    """Do A and B share at least a block's worth of tokens again after they part at ``at``?"""
    matcher = difflib.SequenceMatcher(None, list(a[at:]), list(b[at:]), autojunk=False)
    return sum(m.size for m in matcher.get_matching_blocks()) >= block_size


def _chat_rewritten(chat_a: PromptInput | None, chat_b: PromptInput | None, first_difference: int | None,
                    len_a: int) -> bool:
    """B's messages start with all of A's, yet the tokens part inside A: the template rewrote a turn."""
    if not (is_messages(chat_a) and is_messages(chat_b)) or first_difference is None:
        return False
    a, b = [dict(m) for m in chat_a], [dict(m) for m in chat_b]  # type: ignore[union-attr]
    return len(b) > len(a) and b[: len(a)] == a and first_difference < len_a


def classify(tokenizer: Any, a: Sequence[int], b: Sequence[int], block_size: int, *, same_salt: bool = True,
             chat_a: PromptInput | None = None, chat_b: PromptInput | None = None) -> str:
    """The cause (a key of ``CAUSES``) that explains what B gets from a cache holding A."""
    common = common_prefix_len(a, b)
    differs = common < len(a)
    if not same_salt:
        return "different_salt"
    if list(a) == list(b):
        return "identical"
    if differs and _chat_rewritten(chat_a, chat_b, common, len(a)):
        return "template_rewrite"
    if differs and common < len(b) and _texts_agree_past(tokenizer, a, b, common):
        return "tokenisation_or_whitespace"
    if common < block_size:
        if differs and _realigns(a, b, common, block_size):
            return "differs_in_first_block"
        return "short_common_prefix"
    return "long_shared_prefix"


def diagnose_prompts(
    a: PromptInput | Sequence[int],
    b: PromptInput | Sequence[int],
    *,
    block_size: int = CPU_BLOCK_SIZE,
    salt_a: str | None = None,
    salt_b: str | None = None,
    tokenizer: Any = None,
    chat_template: str | None = None,
) -> PromptDiagnosis:
    """Diagnose B against a cache that holds A: token counts, where they part, cached tokens, cause.

    ``a`` and ``b`` are plain text, chat messages or token ids; the tokenizer is the
    course model's unless given. ``cached_tokens`` is ``expected_cached_tokens`` (full
    blocks of the common prefix, at most ``len(B) - 1``), or 0 when the salts differ.
    """
    if not isinstance(block_size, int) or block_size <= 0:
        raise CourseError(f"block size must be a positive integer, not {block_size!r}")
    if tokenizer is None:
        from course_lib.model import course_tokenizer

        tokenizer = course_tokenizer()
    ids_a, ids_b = (to_token_ids(tokenizer, p, chat_template) for p in (a, b))
    if not ids_a or not ids_b:
        raise CourseError("a prompt needs at least one token: " + ("A" if not ids_a else "B") + " has none")
    common = common_prefix_len(ids_a, ids_b)
    first = None if common == len(ids_a) else common
    same_salt = salt_a == salt_b
    cached = expected_cached_tokens(ids_a, ids_b, block_size) if same_salt else 0
    cause = classify(tokenizer, ids_a, ids_b, block_size, same_salt=same_salt,
                     chat_a=a if is_messages(a) else None, chat_b=b if is_messages(b) else None)  # fmt: skip
    ctx = ("", "") if first is None else (context(tokenizer, ids_a, first), context(tokenizer, ids_b, first))
    return PromptDiagnosis(len(ids_a), len(ids_b), common, first, cached, block_size, cause, salt_a, salt_b, *ctx)
