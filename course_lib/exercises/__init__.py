"""Automatic checks for the notebooks' exercises: one module per notebook (``nb02`` ...).

A check function takes the learner's answer, compares it with what the course
computes itself (never a stored constant), and returns an ``ExerciseResult``
that prints as a one-line verdict. A wrong answer is told what kind of mistake
it is and which method leads to the answer, never the expected value itself:
a check that prints the value turns the exercise into copying. More help comes
only on request, in levels: ``result.hint(1)`` (the rule to apply),
``result.hint(2)`` (applied to the case that failed) ..., or
``course_lib.exercises.hint("02.1", 2)`` for the last check of that exercise.
No level states the expected value.

Solutions live in the instructor notebooks between ``### BEGIN SOLUTION`` and
``### END SOLUTION``; ``course export-student`` removes them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

#: The hints of the most recent failed check of each exercise, for ``hint(exercise, level)``.
_LAST_HINTS: dict[str, tuple[str, ...]] = {}
#: Results of the checks run since the last ``require_passed()`` (nbgrader's autograded test cells).
_PENDING: list["ExerciseResult"] = []


def _short_id(exercise: str) -> str:
    """``"02.1 predict ..."`` -> ``"02.1"``: the id a learner types."""
    return exercise.split(" ", 1)[0]


@dataclass
class ExerciseResult:
    """The verdict on one exercise: ``ok``, a message for the learner, and hints on request."""

    exercise: str
    ok: bool
    message: str
    hints: tuple[str, ...] = field(default=(), repr=False)

    def __str__(self) -> str:
        # ✓ and ✗ are text symbols (in DejaVu and most system fonts), not emoji that need an emoji font.
        return f"{'✓ correct' if self.ok else '✗ not yet'} [{self.exercise}]: {self.message}"

    __repr__ = __str__

    def _repr_html_(self) -> str:
        import html

        color = "#1a7f37" if self.ok else "#cf222e"
        return f'<div style="color:{color}">{html.escape(str(self))}</div>'

    def __bool__(self) -> bool:
        return self.ok

    def hint(self, level: int = 1) -> str:
        """Hints 1..``level`` (each more specific than the last, none giving the value)."""
        return _hint_text(_short_id(self.exercise), self.hints, level)


def _hint_text(exercise: str, hints: Sequence[str], level: int) -> str:
    if not hints:
        return f"[{exercise}] no hint: the check passed, or its message already says all there is."
    level = max(1, min(int(level), len(hints)))
    lines = [f"[{exercise}] hint {i}/{len(hints)}: {h}" for i, h in enumerate(hints[:level], 1)]
    if level < len(hints):
        lines.append(f"(more: hint({exercise!r}, {level + 1}))")
    return "\n".join(lines)


def hint(exercise: str, level: int = 1) -> None:
    """Print the hints up to ``level`` for the last failed check of ``exercise`` (e.g. ``"02.1"``)."""
    key = _short_id(exercise)
    print(_hint_text(key, _LAST_HINTS.get(key, ()), level))


def verdict(exercise: str, ok: bool, if_ok: str, if_not: str, hints: Sequence[str] = ()) -> ExerciseResult:
    """Build a result with the message that fits the outcome.

    ``if_not`` says what kind of mistake it is and the method, never the expected
    value; ``hints`` (most general first) are shown only when the learner asks.
    """
    if ok:
        _LAST_HINTS.pop(_short_id(exercise), None)
        result = ExerciseResult(exercise, True, if_ok)
        _PENDING.append(result)
        return result
    hints = tuple(hints)
    message = if_not
    if hints:
        _LAST_HINTS[_short_id(exercise)] = hints
        message = f"{if_not.rstrip()} (a hint, if you want one: course_lib.exercises.hint({_short_id(exercise)!r}))"
    result = ExerciseResult(exercise, False, message, hints)
    _PENDING.append(result)
    return result


def require_passed() -> None:
    """The body of an nbgrader autograded test cell (``course nbgrader-source``): raise unless the
    checks run since the previous test cell all passed, and at least one ran.

    A solution cell whose placeholder raises ``NotImplementedError`` never reaches its check, so
    the test cell after it fails: 0 points. The list is emptied, so a check passed earlier cannot
    earn the points of a later exercise.
    """
    results = list(_PENDING)
    _PENDING.clear()
    if not results:
        raise AssertionError("no exercise check ran in the cell above: run your solution and its check first")
    failed = [r for r in results if not r.ok]
    if failed:
        raise AssertionError("; ".join(str(r) for r in failed))


__all__ = ["ExerciseResult", "hint", "require_passed", "verdict"]
