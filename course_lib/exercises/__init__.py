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
``### END SOLUTION``; ``course export-student`` replaces them by ``name = ...`` stubs (and
functions whose body raises ``NotImplementedError``). Every check is declared with
``@exercise("04.1", "a title", hints=(...))``: an answer still ``...`` or a function not yet
written gets a "not yet" verdict instead of a traceback, so Run All on a learner's copy reaches
the end of the notebook; and the exercise's general hints are there before the first try.
"""

from __future__ import annotations

import functools
import importlib
import re
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence, TypeVar

#: The hints of the most recent failed check of each exercise, for ``hint(exercise, level)``.
_LAST_HINTS: dict[str, tuple[str, ...]] = {}
#: The general hints each exercise declares (``@exercise(..., hints=...)``), available before any try.
_HINTS: dict[str, tuple[str, ...]] = {}
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
        return f"{'✓ correct' if self.ok else '✗ not yet'} [{self.exercise}]: {_sentences(self.message)}"

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


_SENTENCE_START = re.compile(r"(\w+)([.!?]\s+)([a-z])")
_NOT_A_SENTENCE_END = {"e.g", "i.e", "g", "e", "vs", "cf"}


def _sentences(text: str) -> str:
    """Capitalise the first word of each sentence (messages are built from parts, each in lower case)."""
    text = text[:1].upper() + text[1:]
    return _SENTENCE_START.sub(
        lambda m: m[0] if m[1].lower() in _NOT_A_SENTENCE_END else m[1] + m[2] + m[3].upper(), text
    )


def _hint_text(exercise: str, hints: Sequence[str], level: int) -> str:
    if not hints:
        return f"[{exercise}] this exercise has no hints: its check's message says all there is."
    level = max(1, min(int(level), len(hints)))
    lines = [f"[{exercise}] hint {i}/{len(hints)}: {h}" for i, h in enumerate(hints[:level], 1)]
    if level < len(hints):
        lines.append(f"(more: hint({exercise!r}, {level + 1}))")
    return "\n".join(lines)


def hint(exercise: str, level: int = 1) -> None:
    """Print the hints up to ``level`` for ``exercise`` (e.g. ``"02.1"``), at any time.

    After a wrong answer the hints fit that answer; before any try (or after a right one) they
    are the exercise's general hints.
    """
    key = _short_id(exercise)
    if key not in _HINTS:  # the learner asked before the cell that imports the checks ran
        try:
            importlib.import_module(f"course_lib.exercises.nb{key.split('.')[0]}")
        except ImportError:
            pass
    print(_hint_text(key, _LAST_HINTS.get(key) or _HINTS.get(key, ()), level))


def _unanswered(value: Any) -> bool:
    """``...`` (the learner copy's placeholder), also inside a list, tuple, set or dict."""
    if value is Ellipsis:
        return True
    if isinstance(value, (list, tuple, set, frozenset)):
        return any(_unanswered(v) for v in value)
    if isinstance(value, dict):
        return any(_unanswered(v) for v in value.values())
    return False


def not_answered(exercise: str, what: str = "") -> ExerciseResult:
    """The verdict for an exercise the learner has not answered yet (never a traceback)."""
    key = _short_id(exercise)
    what = what or "replace each ... in the cell above with your answer, then run the cell again"
    result = ExerciseResult(exercise, False, f"no answer yet: {what} (hints: course_lib.exercises.hint({key!r}))")
    _PENDING.append(result)
    return result


F = TypeVar("F", bound=Callable[..., ExerciseResult])


def exercise(exercise_id: str, title: str, hints: Sequence[str] = ()) -> Callable[[F], F]:
    """Declare a check function for exercise ``exercise_id`` (``"04.1"``) with its general ``hints``.

    The check runs only when every argument is answered: an argument that is (or contains)
    ``...`` gives a "not answered yet" verdict, and so does a learner's function that still
    raises ``NotImplementedError``. Either way the cell ends normally, so Run All goes on.
    """
    _HINTS[exercise_id] = tuple(hints)
    name = f"{exercise_id} {title}"

    def decorate(check: F) -> F:
        @functools.wraps(check)
        def wrapper(*args: Any, **kwargs: Any) -> ExerciseResult:
            if any(_unanswered(v) for v in (*args, *kwargs.values())):
                return not_answered(name)
            try:
                return check(*args, **kwargs)
            except NotImplementedError:
                return not_answered(name, "a function in the cell above still raises NotImplementedError: write its body")

        wrapper.exercise_id = exercise_id  # type: ignore[attr-defined]
        wrapper.exercise_name = name  # type: ignore[attr-defined]
        return wrapper  # type: ignore[return-value]

    return decorate


def solved(exercise_id: str, *values: Any) -> bool:
    """For a cell that uses a learner's answer: True when ``values`` are answered, else say which exercise to do."""
    if any(_unanswered(v) for v in values):
        print(f"This cell uses your answer to exercise {exercise_id}: solve exercise {exercise_id} first, then run it again.")
        return False
    return True


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


__all__ = ["ExerciseResult", "exercise", "hint", "not_answered", "require_passed", "solved", "verdict"]
