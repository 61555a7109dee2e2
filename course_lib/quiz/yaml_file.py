"""Reading a quiz file's YAML with the line of every key, and refusing what YAML would read silently
wrong: duplicate keys (the last one wins), aliases (a file under 1 KB of nested aliases expands to
gigabytes) and YAML 1.1 readings of numbers and booleans (PyYAML reads ``040`` as 32, ``1:30`` as 90,
``3_2`` as 32, ``yes`` as true). ``schema`` validates what this parses.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any


@dataclass
class ParsedQuizFile:
    """A quiz file read from YAML: its data, the line of every key/item, and its YAML problems."""

    data: Any
    lines: dict[tuple[Any, ...], int]
    problems: list[str]
    text: str = ""

    def line_of(self, path: tuple[Any, ...]) -> int | None:
        """The line of the closest enclosing key or item that has one."""
        for n in range(len(path), -1, -1):
            if tuple(path[:n]) in self.lines:
                return self.lines[tuple(path[:n])]
        return None


#: YAML 1.2 (and JSON) spellings of numbers and booleans. PyYAML implements YAML 1.1, which also reads
#: ``040`` as 32 (octal), ``1:30`` as 90 (base 60), ``3_2`` as 32, ``0x20`` as 32 and ``yes``/``on`` as true.
_PLAIN_INT = re.compile(r"[-+]?(?:0|[1-9][0-9]*)")
_PLAIN_FLOAT = re.compile(r"[-+]?(?:(?:0|[1-9][0-9]*)(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][-+]?[0-9]+)?|[-+]?\.(?:inf|Inf|INF)|\.(?:nan|NaN|NAN)")
_PLAIN_BOOL = frozenset(["true", "false", "True", "False", "TRUE", "FALSE"])


def _yaml11_problem(node: Any) -> str | None:
    """Why a plain scalar means something else in YAML 1.1 (what PyYAML reads) than it looks like."""
    if node.style is not None:  # quoted or block scalars are strings
        return None
    tag, text = node.tag, node.value
    kind = tag.rsplit(":", 1)[-1]
    if kind == "int" and not _PLAIN_INT.fullmatch(text):
        return f"the number {text!r} is read by YAML 1.1 as {_yaml_value(node)} (octal, base 60, hexadecimal or `_`)"
    if kind == "float" and not _PLAIN_FLOAT.fullmatch(text):
        return f"the number {text!r} is read by YAML 1.1 as {_yaml_value(node)} (base 60 or `_`)"
    if kind == "bool" and text not in _PLAIN_BOOL:
        return f"{text!r} is read by YAML 1.1 as the boolean {_yaml_value(node)}; write true or false, or quote it"
    return None


def _yaml_value(node: Any) -> Any:
    import yaml

    try:
        return yaml.SafeLoader("").construct_object(node, deep=True)
    except Exception:  # noqa: BLE001 - only used in a message
        return "another value"


def _walk_nodes(node: Any, path: tuple[Any, ...], lines: dict[tuple[Any, ...], int], problems: list[str]) -> None:
    """Record the line of every key and item, duplicate keys and YAML 1.1 surprises (iteratively:
    the node graph is a tree, because ``parse_quiz_text`` refuses aliases before calling this)."""
    import yaml

    stack = [(node, path)]
    while stack:
        node, path = stack.pop()
        if isinstance(node, yaml.MappingNode):
            seen: dict[Any, int] = {}
            for key_node, value_node in node.value:
                key = key_node.value
                line = key_node.start_mark.line + 1
                if key in seen:
                    where = "/".join(map(str, path)) or "top level"
                    problems.append(f"line {line}: duplicate key {key!r} in {where} (first at line {seen[key]})")
                else:
                    seen[key] = line
                lines[path + (key,)] = line
                stack.append((value_node, path + (key,)))
        elif isinstance(node, yaml.SequenceNode):
            for index, item in enumerate(node.value):
                lines[path + (index,)] = item.start_mark.line + 1
                stack.append((item, path + (index,)))
        elif isinstance(node, yaml.ScalarNode):
            problem = _yaml11_problem(node)
            if problem:
                problems.append(f"line {node.start_mark.line + 1}: {problem}: write it as YAML 1.2 and JSON read it, or quote it")


def _alias_problems(text: str) -> list[str]:
    """Aliases (``*name``), refused in quiz files: a few nested ones expand to gigabytes (a "billion
    laughs" file under 1 KB), and a quiz has no need to repeat a node."""
    import yaml

    found = []
    for event in yaml.parse(text, Loader=yaml.SafeLoader):
        if isinstance(event, yaml.AliasEvent):
            found.append(f"line {event.start_mark.line + 1}: YAML alias *{event.anchor} is not allowed in a quiz file "
                         "(anchors and aliases can expand a small file to gigabytes): write the text out")  # fmt: skip
            if len(found) >= 5:
                break
    return found


def parse_quiz_text(text: str) -> ParsedQuizFile:
    """Parse YAML, recording line numbers and duplicate keys (a problem, not silently the last one);
    aliases are refused before anything is built, and YAML 1.1 readings of numbers are problems."""
    import yaml

    try:
        aliases = _alias_problems(text)
        if aliases:
            return ParsedQuizFile(None, {}, aliases, text)
        node = yaml.compose(text, Loader=yaml.SafeLoader)
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}: " if mark is not None else ""
        return ParsedQuizFile(None, {}, [f"{where}not valid YAML ({getattr(exc, 'problem', None) or exc})"], text)
    lines: dict[tuple[Any, ...], int] = {}
    problems: list[str] = []
    if node is not None:
        _walk_nodes(node, (), lines, problems)
    return ParsedQuizFile(data, lines, problems, text)
