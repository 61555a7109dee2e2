"""Judging one answer to one question: the course's scoring rule (``judge``) and what a well-formed
answer is (``answer_problem``). The quiz widget and ``course grade`` both judge with these.

- ``single``, ``numeric``, ``text``: all or nothing. A numeric answer is right when
  ``|given - answer| <= tolerance`` (absolute, default 0); a text answer when it
  equals one of ``accept`` ignoring case and surrounding whitespace.
- ``multiple``: partial credit, "right picks minus wrong picks": with C correct
  choices, a learner who ticks R of them and W wrong ones earns
  ``points * max(0, R - W) / C``. Ticking everything therefore earns nothing
  unless every choice is correct, and an unanswered question earns 0.
- A question missing from a submission is unanswered: 0 points, not an error.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from course_lib.quiz.schema import Question, QuizError

# ---------------------------------------------------------------------- judging


@dataclass(frozen=True)
class Judgement:
    """The verdict on one answer: points earned and the feedback to show."""

    question: str
    earned: float
    points: float
    answered: bool
    feedback: tuple[str, ...] = ()

    @property
    def correct(self) -> bool:
        return self.answered and math.isclose(self.earned, self.points)


def letter(index: int) -> str:
    """Choices are shown and discussed as A, B, C...; submissions use 0-based indices."""
    return chr(ord("A") + index)


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def answer_problem(question: Question, answer: Any) -> str | None:
    """Why ``answer`` is not a well-formed answer to ``question`` (``None`` if it is)."""
    if answer is None:
        return None
    n = len(question.choices)
    if question.type == "single":
        if not _is_int(answer) or not 0 <= answer < n:
            return f"answer to {question.id!r} must be a choice index 0..{n - 1}, not {short(answer)}"
    elif question.type == "multiple":
        if not isinstance(answer, list) or not all(_is_int(a) and 0 <= a < n for a in answer):
            return f"answer to {question.id!r} must be a list of choice indices 0..{n - 1}, not {short(answer)}"
        if len(set(answer)) != len(answer):
            return f"answer to {question.id!r} lists a choice twice: {short(answer)}"
    elif question.type == "numeric":
        if not (isinstance(answer, (int, float)) and not isinstance(answer, bool)) or not math.isfinite(answer):
            return f"answer to {question.id!r} must be a finite number, not {short(answer)}"
    elif question.type == "text":
        if not isinstance(answer, str):
            return f"answer to {question.id!r} must be a string, not {short(answer)}"
    return None


def short(value: Any) -> str:
    """``repr(value)``, cut to 60 characters: how a message quotes what a file held."""
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _normalise_text(text: str) -> str:
    return text.strip().casefold()


def judge(question: Question, answer: Any) -> Judgement:
    """Score one answer (see the module docstring for the rules) and collect its feedback."""
    if not question.has_key:
        raise QuizError(f"question {question.id!r} has no answer key (a student copy cannot be graded)")
    problem = answer_problem(question, answer)
    if problem:
        raise QuizError(problem)
    unanswered = answer is None or answer == [] or (isinstance(answer, str) and not answer.strip())
    if unanswered:
        return Judgement(question.id, 0.0, question.points, False, ())
    notes: list[str] = []
    if question.type == "single":
        choice = question.choices[answer]
        earned = question.points if choice.correct else 0.0
        notes.append(f"{letter(answer)}: {choice.feedback}")
    elif question.type == "multiple":
        picked = set(answer)
        correct = {i for i, c in enumerate(question.choices) if c.correct}
        right, wrong = len(picked & correct), len(picked - correct)
        earned = question.points * max(0, right - wrong) / len(correct)
        for i, c in enumerate(question.choices):
            if i in picked or i in correct:
                mark = "✓" if (i in picked) == bool(c.correct) else "✗"
                state = "ticked" if i in picked else "not ticked"
                notes.append(f"{mark} {letter(i)} ({state}): {c.feedback}")
    elif question.type == "numeric":
        ok = abs(float(answer) - float(question.answer)) <= question.tolerance + 1e-12
        earned = question.points if ok else 0.0
    else:
        ok = _normalise_text(answer) in {_normalise_text(a) for a in question.accept}
        earned = question.points if ok else 0.0
    if question.feedback:
        notes.append(question.feedback)
    return Judgement(question.id, float(earned), question.points, True, tuple(n for n in notes if n))
