"""Multi-turn chat on the real engine, and the measurements that show what a chat cache reuses.

Taught in ``notebooks/04_chat.ipynb``.

Why token ids: a chat turn's prompt is the whole conversation so far, rendered by
the tokenizer's chat template. ``ChatSession`` renders it to token ids itself and
sends those ids to vLLM, so the tokens the course counts are exactly the tokens
vLLM hashes into blocks (``vllm/v1/core/kv_cache_utils.py``, ``hash_block_tokens``).
Turn ``k``'s prompt is a token prefix of turn ``k+1``'s (the template appends
messages and never rewrites earlier ones), so turn ``k+1`` finds at least turn
``k``'s full blocks cached. The cap is vLLM's own: at most ``num_tokens - 1``
tokens can hit (``vllm/v1/core/kv_cache_manager.py``, ``get_computed_blocks``),
and only full blocks are ever hashed.

The prompt is rendered by ``tokenizer.apply_chat_template(..., add_generation_prompt=True)``,
the model's own template (SmolLM2's is ChatML and inserts a default system prompt
when the messages have none), or by any Jinja template passed as ``chat_template=``,
as vLLM's chat endpoint does (``vllm/renderers/hf.py``, ``safe_apply_chat_template``).
Rendering on the client and sending token ids, rather than text, is what lets the
notebook count exactly the tokens the engine sees.

A template that rewrites earlier turns breaks the prefix property. Reasoning
models' templates drop the ``<think>`` part of assistant messages before the last
user message (vLLM ships one: ``vllm/transformers_utils/chat_templates/template_minicpmv45.jinja``),
so the reasoning tokens the server generated, and cached, never come back as a
prefix. ``chatml_template(strip_reasoning=True)`` is a small template that does
this, for the notebook to measure against the same template without the rewrite.

``cache_salt``: vLLM's OpenAI server rejects salts that are empty, longer than
128 characters or contain ``@``, ``/``, ``\\`` or NUL
(``vllm/entrypoints/generate/base/protocol.py``, ``validate_cache_salt``); the
offline ``LLM`` does not check. ``check_cache_salt`` applies the server's rule, so a
salt that works in the notebooks also works behind the server.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Mapping, Sequence

from course_lib.engine import CourseError, RequestStats, run_one
from course_lib.engine import block_size as block_size_of
from course_lib.simulator import common_prefix_len, expected_cached_tokens

if TYPE_CHECKING:
    from vllm import LLM, SamplingParams

Message = dict[str, str]


#: vLLM's OpenAI-server limits on ``cache_salt`` (``vllm/entrypoints/generate/base/protocol.py``:
#: ``_MAX_CACHE_SALT_LENGTH``, ``_CACHE_SALT_FORBIDDEN_CHARS``).
MAX_CACHE_SALT_LENGTH = 128
CACHE_SALT_FORBIDDEN_CHARS = frozenset("@/\\\x00")


def cache_salt_problem(salt: object) -> str | None:
    """Why vLLM's OpenAI server would reject ``salt`` as a ``cache_salt``, or ``None`` if it accepts it.

    Mirrors ``validate_cache_salt`` in ``vllm/entrypoints/generate/base/protocol.py``
    (``None`` means "no salt" and is accepted); taught in notebook 04, section 4 and
    exercise 04.3. The length is counted in characters (Python ``len``), not bytes.
    """
    if salt is None:
        return None
    if not isinstance(salt, str) or not salt:
        return "it must be a non-empty string"
    if len(salt) > MAX_CACHE_SALT_LENGTH:
        return f"it has {len(salt)} characters; the server accepts at most {MAX_CACHE_SALT_LENGTH}"
    bad = sorted({repr(c) for c in salt if c in CACHE_SALT_FORBIDDEN_CHARS})
    if bad:
        return f"it contains {', '.join(bad)}; the server rejects '@', '/', a backslash and NUL"
    return None


def check_cache_salt(salt: str | None) -> str | None:
    """Return ``salt`` if vLLM's server accepts it; raise ``CourseError`` saying why not otherwise."""
    problem = cache_salt_problem(salt)
    if problem:
        raise CourseError(
            f"cache_salt {salt!r:.40} would be rejected by vLLM's OpenAI server: {problem} "
            "(vllm/entrypoints/generate/base/protocol.py, validate_cache_salt). A hex digest "
            "(hmac ... .hexdigest(), 64 characters) always passes; standard base64 can contain '/'."
        )
    return salt


def chatml_template(*, strip_reasoning: bool = False) -> str:
    """A minimal ChatML chat template (SmolLM2's format, without its default system prompt).

    With ``strip_reasoning=True`` it rewrites earlier turns the way reasoning models'
    templates do (Qwen3; vLLM's bundled ``template_minicpmv45.jinja``): an assistant
    message before the last user message keeps only the text after ``</think>``.
    Written for notebook 04 (pitfall 3e) to measure what that rewrite costs the cache.
    """
    strip = (
        "{%- if m['role'] == 'assistant' and loop.index0 < ns.last_user and '</think>' in content -%}"
        "{%- set content = content.split('</think>')[-1].lstrip('\\n') -%}"
        "{%- endif -%}"
        if strip_reasoning
        else ""
    )
    return (
        "{%- set ns = namespace(last_user=-1) -%}"
        "{%- for m in messages -%}{%- if m['role'] == 'user' -%}{%- set ns.last_user = loop.index0 -%}"
        "{%- endif -%}{%- endfor -%}"
        "{%- for m in messages -%}{%- set content = m['content'] -%}"
        + strip
        + "{{- '<|im_start|>' + m['role'] + '\\n' + content + '<|im_end|>\\n' -}}{%- endfor -%}"
        "{%- if add_generation_prompt -%}{{- '<|im_start|>assistant\\n' -}}{%- endif -%}"
    )


def render_chat(
    tokenizer: Any,
    messages: Sequence[Mapping[str, str]],
    *,
    add_generation_prompt: bool = True,
    chat_template: str | None = None,
) -> list[int]:
    """Token ids of ``messages`` rendered by the tokenizer's own chat template (or ``chat_template``).

    Rendering and tokenizing in one call is what vLLM's chat endpoint does
    (``vllm/renderers/hf.py``, ``safe_apply_chat_template``); the template already
    inserts any BOS token, so no second one is added.
    """
    if chat_template is None and not getattr(tokenizer, "chat_template", None):
        raise CourseError(
            "this tokenizer has no chat template: load an instruct/chat model, or use the course's "
            "model (make_llm() with no model argument), or pass chat_template="
        )
    out = tokenizer.apply_chat_template(
        [dict(m) for m in messages],
        add_generation_prompt=add_generation_prompt,
        tokenize=True,
        chat_template=chat_template,
    )
    if isinstance(out, Mapping) or hasattr(out, "input_ids"):  # transformers >= 5 returns a BatchEncoding
        out = out["input_ids"]
    return [int(t) for t in out]


def default_chat_sampling() -> "SamplingParams":
    """Greedy, and short enough for CPU: a reply of at most 48 tokens."""
    from vllm import SamplingParams

    return SamplingParams(max_tokens=48, temperature=0.0)


def _prefill_only() -> "SamplingParams":
    from vllm import SamplingParams

    return SamplingParams(max_tokens=1, temperature=0.0)


class ChatSession:
    """One conversation: a system prompt, the turns so far, and what each turn cost.

    ``chat(msg)`` sends the whole conversation (as token ids) and appends the
    generated reply. ``chat(msg, reply="...")`` still sends and measures the
    turn's prompt, but records the given reply instead of the generated one:
    the next turns then have prompts (and cached-token counts) fixed in advance,
    which the notebooks can pin, whereas generated text may differ between CPUs.

    ``cache_salt`` is passed to vLLM with every request: only requests with the
    same salt share cached blocks (the salt enters the first block's hash). It is
    checked with the OpenAI server's rule (``check_cache_salt``). An empty
    ``system_prompt`` sends no system message: the model's template may then
    insert its own. ``chat_template`` replaces the tokenizer's template.
    """

    def __init__(
        self,
        llm: "LLM",
        system_prompt: str,
        *,
        cache_salt: str | None = None,
        sampling: "SamplingParams | None" = None,
        chat_template: str | None = None,
    ) -> None:
        self.llm = llm
        self.system_prompt = system_prompt
        self.cache_salt = check_cache_salt(cache_salt)
        self.sampling = sampling
        self.chat_template = chat_template
        self.tokenizer = llm.get_tokenizer()
        self.history: list[Message] = []
        self.stats: list[RequestStats] = []
        self.prompts: list[list[int]] = []

    def messages(self, user_message: str | None = None) -> list[Message]:
        """The system prompt, the history and (optionally) a new user message."""
        msgs: list[Message] = []
        if self.system_prompt:
            msgs.append({"role": "system", "content": self.system_prompt})
        msgs.extend(dict(m) for m in self.history)
        if user_message is not None:
            msgs.append({"role": "user", "content": user_message})
        return msgs

    def build_prompt(self, user_message: str) -> list[int]:
        """Token ids of the next turn's prompt, ending with the assistant header."""
        return render_chat(self.tokenizer, self.messages(user_message), chat_template=self.chat_template)

    def chat(self, user_message: str, *, reply: str | None = None) -> str:
        """Send one turn; return the assistant's reply (generated, or ``reply`` if given)."""
        if not isinstance(user_message, str):
            raise TypeError(f"user_message must be a str, not {type(user_message).__name__}")
        ids = self.build_prompt(user_message)
        sampling = _prefill_only() if reply is not None else (self.sampling or default_chat_sampling())
        stats = run_one(self.llm, ids, sampling, cache_salt=self.cache_salt)
        answer = reply if reply is not None else stats.text
        self.prompts.append(ids)
        self.stats.append(stats)
        self.history.append({"role": "user", "content": user_message})
        self.history.append({"role": "assistant", "content": answer})
        return answer

    def add_turn(self, user_message: str, reply: str) -> None:
        """Append a turn to the history without sending anything (no stats recorded)."""
        self.history.append({"role": "user", "content": user_message})
        self.history.append({"role": "assistant", "content": reply})

    def turn_table(self) -> list[dict[str, int]]:
        """One row per turn: prompt tokens, cached tokens, prefilled tokens and the
        tokens the previous turn's prompt guarantees (its full blocks)."""
        bs = block_size_of(self.llm)
        rows = []
        for k, (ids, st) in enumerate(zip(self.prompts, self.stats), start=1):
            prev = self.prompts[k - 2] if k > 1 else []
            rows.append(
                {
                    "turn": k,
                    "prompt_tokens": st.prompt_tokens,
                    "num_cached_tokens": st.num_cached_tokens,
                    "prefilled_tokens": st.prefilled_tokens,
                    "prev_prompt_full_blocks": expected_cached_tokens(prev, ids, bs),
                }
            )
        return rows


@dataclass
class Reuse:
    """What a second prompt reused from a first one, predicted and measured."""

    label: str
    first_tokens: int
    second_tokens: int
    common_prefix_tokens: int
    expected_cached: int
    num_cached_tokens: int
    extra: dict[str, Any] = field(default_factory=dict)

    def row(self) -> dict[str, Any]:
        return {
            "case": self.label,
            "prompt_tokens": self.second_tokens,
            "common_prefix_tokens": self.common_prefix_tokens,
            "expected_cached": self.expected_cached,
            "num_cached_tokens": self.num_cached_tokens,
        }


def measure_reuse(
    llm: "LLM",
    first: Sequence[int],
    second: Sequence[int],
    *,
    label: str = "",
    first_salt: str | None = None,
    second_salt: str | None = None,
) -> Reuse:
    """Empty the prefix cache, run ``first``, then ``second``: what did ``second`` reuse?

    The expectation comes from the token ids alone (``expected_cached_tokens``);
    with different salts nothing is expected to be shared.
    """
    if not llm.reset_prefix_cache():
        raise CourseError("vLLM refused to reset the prefix cache (a request still running?)")
    run_one(llm, list(first), cache_salt=first_salt)
    st = run_one(llm, list(second), cache_salt=second_salt)
    common = common_prefix_len(first, second)
    expected = expected_cached_tokens(first, second, block_size_of(llm)) if first_salt == second_salt else 0
    return Reuse(label, len(first), len(second), common, expected, st.num_cached_tokens)


def print_table(rows: Sequence[Mapping[str, Any]]) -> None:
    """Print dict rows as an aligned text table (deterministic, for pinned cells)."""
    if not rows:
        print("(no rows)")
        return
    cols = list(rows[0].keys())
    widths = {c: max(len(str(c)), *(len(str(r.get(c, ""))) for r in rows)) for c in cols}
    print("  ".join(str(c).rjust(widths[c]) for c in cols))
    for r in rows:
        print("  ".join(str(r.get(c, "")).rjust(widths[c]) for c in cols))


def show_tokens(tokenizer: Any, ids: Sequence[int]) -> list[str]:
    """The token strings of ``ids`` as the tokenizer spells them (for boundary demos)."""
    return [str(t) for t in tokenizer.convert_ids_to_tokens(list(ids))]


def tools_section(tools: Sequence[Mapping[str, Any]], *, canonical: bool = False) -> str:
    """Tool definitions as text for a system prompt, one JSON object per line.

    ``canonical=True`` sorts the tools by name and each object's keys, so the
    same set of tools always renders to the same text (and the same tokens), in
    whatever order the application happened to collect them.
    """
    import json

    items = sorted(tools, key=lambda t: str(t.get("name", ""))) if canonical else list(tools)
    return "\n".join(json.dumps(dict(t), sort_keys=canonical, ensure_ascii=False) for t in items)
