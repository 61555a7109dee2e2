"""Automatic checks for the notebooks' exercises: one module per notebook (``nb01`` ...).

A check function takes the learner's answer, compares it with what the course
computes itself (never a stored constant), and returns an ``ExerciseResult``
that prints as a one-line verdict telling the learner what is wrong, not just
that something is. Solutions live in the instructor notebooks between
``### BEGIN SOLUTION`` and ``### END SOLUTION``; ``course export-student``
removes them.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class ExerciseResult:
    """The verdict on one exercise: ``ok`` and a message for the learner."""

    exercise: str
    ok: bool
    message: str

    def __str__(self) -> str:
        return f"{'✅ correct' if self.ok else '❌ not yet'} [{self.exercise}]: {self.message}"

    __repr__ = __str__

    def _repr_html_(self) -> str:
        import html

        color = "#1a7f37" if self.ok else "#cf222e"
        return f'<div style="color:{color}">{html.escape(str(self))}</div>'

    def __bool__(self) -> bool:
        return self.ok


def verdict(exercise: str, ok: bool, if_ok: str, if_not: str) -> ExerciseResult:
    """Build a result with the message that fits the outcome."""
    return ExerciseResult(exercise, ok, if_ok if ok else if_not)
