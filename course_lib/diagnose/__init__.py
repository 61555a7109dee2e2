"""``course diagnose``: why is my hit rate low? (notebook 08, troubleshooting)

Two questions, one module each:

- ``prompts``: why did prompt B not hit the cache prompt A left? Token counts, where B
  leaves A (whitespace made visible), the cached tokens vLLM's rule gives, and a cause
  from a fixed list (``CAUSES``). ``course diagnose prompts A B``.
- ``scrapes``: what do two scrapes of ``/metrics`` say about the interval between them?
  Hit rate, queries, hits, external hits, preemptions, requests, KV usage, warnings.
  ``course diagnose metrics BEFORE AFTER``.

Bad input (a missing file, a file that is not UTF-8, a chat file that is not a list of
messages, a scrape without vLLM counters, an unreachable URL) is a ``CourseError`` with
one line naming the problem; the ``course`` command prints it and exits with status 2.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from course_lib.diagnose.prompts import (
    CAUSES,
    FIXES,
    PromptDiagnosis,
    diagnose_prompts,
    is_messages,
    to_token_ids,
    visible,
)
from course_lib.diagnose.scrapes import MetricsDiagnosis, diagnose_metrics, load_scrape
from course_lib.engine import CourseError


def read_text(path: str | Path) -> str:
    """A file's text, or a one-line ``CourseError`` (missing, a directory, not UTF-8, empty)."""
    p = Path(path)
    if not p.is_file():
        raise CourseError(f"{path}: no such file")
    try:
        text = p.read_bytes().decode("utf-8")
    except UnicodeDecodeError as exc:
        raise CourseError(f"{path}: not UTF-8 text (byte {exc.start}); save it as UTF-8") from None
    if not text.strip():
        raise CourseError(f"{path}: the file is empty; a prompt needs at least one token")
    return text


def read_prompt(path: str | Path) -> str | list[dict[str, str]]:
    """A prompt file: a JSON list of chat messages, or else plain text (used as it is, byte for byte).

    A ``.json`` file, or a file whose content parses as a JSON list, must be a list of
    ``{"role": ..., "content": ...}`` messages; anything else is plain text.
    """
    text = read_text(path)
    try:
        data: Any = json.loads(text)
    except ValueError:
        if str(path).endswith(".json"):
            raise CourseError(f"{path}: not valid JSON; a chat file is a JSON list of messages") from None
        return text
    if isinstance(data, list) or str(path).endswith(".json"):
        if not is_messages(data):
            raise CourseError(
                f"{path}: a chat file must be a non-empty JSON list of messages "
                '[{"role": "user", "content": "..."}], each with string role and content'
            )
        return [{"role": msg["role"], "content": msg["content"]} for msg in data]
    return text


def cli_prompts(args: argparse.Namespace) -> int:
    """``course diagnose prompts A B``: print the diagnosis (or one JSON object with ``--json``)."""
    a, b = read_prompt(args.a), read_prompt(args.b)
    template = read_text(args.chat_template) if args.chat_template else None
    result = diagnose_prompts(a, b, block_size=args.block_size, salt_a=args.salt_a, salt_b=args.salt_b,
                              chat_template=template)  # fmt: skip
    print(json.dumps(result.to_dict(), ensure_ascii=False) if args.json else result)
    return 0


def cli_metrics(args: argparse.Namespace) -> int:
    """``course diagnose metrics BEFORE AFTER``: the interval between two scrapes."""
    result = diagnose_metrics(load_scrape(args.before), load_scrape(args.after))
    print(json.dumps(result.to_dict()) if args.json else result)
    return 0


def add_parser(sub: argparse._SubParsersAction) -> None:
    """Register ``course diagnose prompts|metrics`` (called by ``course_lib.cli``)."""
    from course_lib.engine import CPU_BLOCK_SIZE

    p = sub.add_parser("diagnose", help="why is my hit rate low? compare two prompts, or two /metrics scrapes")
    dsub = p.add_subparsers(dest="diagnose_command", required=True)
    pr = dsub.add_parser("prompts", help="what a cache holding prompt A serves of prompt B, and why")
    pr.add_argument("a", help="file: plain-text prompt, or a JSON list of chat messages")
    pr.add_argument("b", help="file: plain-text prompt, or a JSON list of chat messages")
    pr.add_argument("--block-size", type=int, default=CPU_BLOCK_SIZE, help=f"KV block size (default {CPU_BLOCK_SIZE})")
    pr.add_argument("--salt-a", help="cache_salt of A (default none)")
    pr.add_argument("--salt-b", help="cache_salt of B (default none)")
    pr.add_argument("--chat-template", metavar="FILE", help="a Jinja chat template instead of the model's")
    pr.add_argument("--json", action="store_true", help="print one JSON object")
    pr.set_defaults(func=cli_prompts)
    me = dsub.add_parser("metrics", help="hit rate, preemptions and warnings between two /metrics scrapes")
    me.add_argument("before", help="a saved scrape (file) or a server URL (http://host:port[/metrics])")
    me.add_argument("after", help="a saved scrape (file) or a server URL")
    me.add_argument("--json", action="store_true", help="print one JSON object")
    me.set_defaults(func=cli_metrics)


__all__ = [
    "CAUSES", "FIXES", "MetricsDiagnosis", "PromptDiagnosis", "add_parser", "diagnose_metrics",
    "diagnose_prompts", "load_scrape", "read_prompt", "to_token_ids", "visible",
]  # fmt: skip
