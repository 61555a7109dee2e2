"""The quiz widget: a quiz rendered with ipywidgets at the end of every notebook (``quiz.show``).

Practice mode (a quiz with its key, as instructors and self-learners in a checkout
have it) checks each answer at once; exam mode (a student copy: the bundle and the
wheel ship only those) records the answers and saves them as a submission file
carrying the quiz id and version, for the instructor's ``course grade``.
Numbers may be typed with a decimal comma ("0,75") as well as a point.
"""

from __future__ import annotations

import html
import json
import os
import re
from pathlib import Path
from typing import Any

from course_lib.quiz.judging import Judgement, judge, letter
from course_lib.quiz.schema import Question, Quiz, QuizError, load_quiz
from course_lib.quiz.schema import number as _number

_GROUPED = re.compile(r"^\d{1,3}(?:[,.]\d{3})+$")


def parse_number(text: str) -> int | float:
    """A number typed by a learner: ``0.75``, ``0,75`` (decimal comma), ``1 024``, ``1,024.5``, ``1.024,5``.

    A single point is a decimal point. A single comma is a decimal comma, except
    when exactly three digits follow it after a non-zero part (``1,024``): that is
    1024 in English and 1.024 in much of Europe, so it is refused with a message
    instead of guessed. Raises ``ValueError`` with the reason shown to the learner.
    """
    s = text.strip().replace("\u00a0", "").replace("\u202f", "").replace(" ", "").replace("_", "")
    if s.startswith(("+", "-")):
        sign, s = s[0], s[1:]
    else:
        sign = ""
    if not s or not re.fullmatch(r"[0-9.,]+(?:[eE][+-]?[0-9]+)?", s):
        raise ValueError("That is not a number.")
    mantissa, _, exponent = s.partition("e") if "e" in s else s.partition("E")
    commas, dots = mantissa.count(","), mantissa.count(".")
    if commas and dots:
        decimal = "," if mantissa.rfind(",") > mantissa.rfind(".") else "."
        thousands = "." if decimal == "," else ","
        if mantissa.count(decimal) > 1:
            raise ValueError("That is not a number.")
        mantissa = mantissa.replace(thousands, "").replace(decimal, ".")
    elif commas + dots > 1:
        if not _GROUPED.match(mantissa) or (commas and dots):
            raise ValueError("That is not a number.")
        mantissa = mantissa.replace(",", "").replace(".", "")
    elif commas + dots == 1:
        sep = "," if commas else "."
        head, tail = mantissa.split(sep)
        if sep == "," and len(tail) == 3 and head not in ("", "0"):
            raise ValueError(f"{text.strip()!r} is ambiguous (a thousands separator or a decimal comma?): "
                             "write it without the comma, or with a decimal point")  # fmt: skip
        mantissa = f"{head or '0'}.{tail}"
    value = float(sign + mantissa + (f"e{exponent}" if exponent else ""))
    if value != value or value in (float("inf"), float("-inf")):
        raise ValueError("That number is out of range.")
    return int(value) if value.is_integer() and abs(value) < 2**53 else value


def _inline(text: str) -> str:
    """Escape ``text`` for HTML, rendering `code` spans."""
    return re.sub(r"`([^`]+)`", r"<code>\1</code>", html.escape(text))


def _plain(text: str) -> str:
    return text.replace("`", "")


class _QuestionInput:
    """The widgets of one question and how to read the learner's answer from them."""

    def __init__(self, number: int, question: Question) -> None:
        import ipywidgets as w

        self.question = question
        q = question
        pts = _number(q.points)
        head = w.HTML(
            f"<b>{number}. {_inline(q.prompt)}</b> <i>({pts} point{'s' if pts != 1 else ''}"
            f"{', tick all that apply' if q.type == 'multiple' else ''})</i>"
        )
        # Choice texts go in an HTML list (long text wraps, `code` renders); the controls carry
        # only the letters, because ipywidgets draws radio/checkbox labels on one clipped line.
        letters = [letter(i) for i in range(len(q.choices))]
        listing = w.HTML(
            "<div style='margin-left:1em'>"
            + "".join(f"<div><b>{letter}.</b> {_inline(c.text)}</div>" for letter, c in zip(letters, q.choices))
            + "</div>"
        )
        if q.type == "single":
            self.control: Any = w.RadioButtons(
                options=[(letter, i) for i, letter in enumerate(letters)],
                index=None,
                orientation="horizontal",
                layout=w.Layout(width="auto"),
            )
            body: list[Any] = [listing, self.control]
        elif q.type == "multiple":
            self.control = [
                w.Checkbox(value=False, description=letter, indent=False, layout=w.Layout(width="4em"))
                for letter in letters
            ]
            body = [listing, w.HBox(list(self.control))]
        else:
            hint = "a number" if q.type == "numeric" else "your answer"
            self.control = w.Text(value="", placeholder=hint, layout=w.Layout(width="20em"))
            body = [self.control]
        self.feedback = w.HTML("")
        self.check_button = w.Button(description="Check", layout=w.Layout(width="6em"))
        self.head = head
        self.body = body

    def value(self) -> Any:
        """The current answer in submission form (``None`` when unanswered or unreadable)."""
        q = self.question
        if q.type == "single":
            return self.control.value
        if q.type == "multiple":
            picked = [i for i, box in enumerate(self.control) if box.value]
            return picked or None
        text = self.control.value.strip()
        if not text:
            return None
        if q.type == "text":
            return text
        try:
            return parse_number(text)
        except ValueError:
            return None


class QuizView:
    """A quiz rendered with ipywidgets; ``widget`` is the box to display.

    Practice mode (a quiz with its key): a Check button per question shows the
    feedback at once, and "Show my score" totals the points. Exam mode (a student
    copy, or ``mode="exam"``): answers are only recorded. Both can save the answers
    as a submission file for ``course grade``; an existing file is never replaced
    unless "overwrite" is ticked.
    """

    def __init__(self, quiz: Quiz, *, mode: str | None = None, student: str = "", path: str = "") -> None:
        import ipywidgets as w

        if mode is None:
            mode = "practice" if quiz.has_key else "exam"
        if mode not in ("practice", "exam"):
            raise QuizError(f"mode must be 'practice' or 'exam', not {mode!r}")
        if mode == "practice" and not quiz.has_key:
            raise QuizError(f"quiz {quiz.id!r} has no answer key (a student copy): it can only be shown in exam mode")
        self.quiz = quiz
        self.mode = mode
        self.inputs: dict[str, _QuestionInput] = {}
        title = w.HTML(
            f"<h3>Quiz: {_inline(quiz.title)}</h3>"
            + (f"<p>{_inline(quiz.description)}</p>" if quiz.description else "")
            + (
                "<p><i>Practice mode: check each answer as you go, then see your score.</i></p>"
                if mode == "practice"
                else "<p><i>Exam mode: your answers are recorded, not marked. Save them when you are done.</i></p>"
            )
        )
        parts: list[Any] = [title]
        for number, q in enumerate(quiz.questions, 1):
            item = _QuestionInput(number, q)
            self.inputs[q.id] = item
            children = [item.head, *item.body]
            if mode == "practice":
                item.check_button.on_click(lambda _b, qid=q.id: self.check(qid))
                children += [item.check_button, item.feedback]
            parts.append(w.VBox(children, layout=w.Layout(margin="0 0 12px 0")))
        self.score_html = w.HTML("")
        if mode == "practice":
            score_button = w.Button(description="Show my score", button_style="info", layout=w.Layout(width="12em"))
            score_button.on_click(lambda _b: self.show_score())
            parts.append(w.HBox([score_button, self.score_html]))
        self.student = w.Text(value=student, description="Your name", placeholder="e.g. ada")
        self.path = w.Text(value=path, description="Save to", placeholder=f"{quiz.id}-<name>.json")
        self.overwrite = w.Checkbox(value=False, description="overwrite", indent=False, layout=w.Layout(width="auto"))
        self.save_button = w.Button(description="Save answers", icon="save", layout=w.Layout(width="12em"))
        self.save_status = w.HTML("")
        self.save_button.on_click(lambda _b: self._save_clicked())
        parts.append(
            w.VBox([w.HTML("<b>Submit</b>"), self.student, w.HBox([self.path, self.overwrite]), self.save_button, self.save_status])
        )
        self.widget = w.VBox(parts)

    def fill(self, answers: dict[str, Any]) -> None:
        """Set answers through the widgets, as a learner clicking and typing would (tests, scripted demos).

        ``answers`` is in submission form: a choice index (single), a list of indices (multiple),
        a number or text (numeric/text, typed into the box as a learner would).
        """
        for qid, value in answers.items():
            item = self.inputs[qid]
            if item.question.type == "single":
                item.control.value = value
            elif item.question.type == "multiple":
                for i, box in enumerate(item.control):
                    box.value = i in value
            else:
                item.control.value = str(value)

    # -- reading and judging
    def answers(self) -> dict[str, Any]:
        """The answers given so far, in submission form (unanswered questions left out)."""
        values = {qid: item.value() for qid, item in self.inputs.items()}
        return {qid: v for qid, v in values.items() if v is not None}

    def submission(self) -> dict[str, Any]:
        """The submission ``course grade`` reads."""
        return {
            "quiz": self.quiz.id,
            "quiz_version": self.quiz.version,
            "student": self.student.value.strip(),
            "answers": self.answers(),
        }

    def check(self, qid: str) -> Judgement:
        """Judge one question now and show its feedback (practice mode)."""
        if self.mode != "practice":
            raise QuizError("answers are not judged in exam mode")
        item = self.inputs[qid]
        result = judge(item.question, item.value())
        if not result.answered:
            text = item.control.value.strip() if item.question.type == "numeric" else ""
            reason = "Answer first, then check."
            if text:
                try:
                    parse_number(text)
                except ValueError as exc:
                    reason = str(exc)
            item.feedback.value = f"<span style='color:#9a6700'>{html.escape(reason)}</span>"
            return result
        color = "#1a7f37" if result.correct else ("#9a6700" if result.earned else "#cf222e")
        verdict = "Correct" if result.correct else ("Partly right" if result.earned else "Not quite")
        notes = "".join(f"<li>{_inline(n)}</li>" for n in result.feedback)
        item.feedback.value = (
            f"<div style='color:{color}'><b>{verdict}</b> ({_number(result.earned)}/{_number(result.points)})</div>"
            f"<ul>{notes}</ul>"
        )
        return result

    def score(self) -> tuple[float, float]:
        """(points earned, maximum) for the current answers (practice mode)."""
        if self.mode != "practice":
            raise QuizError("answers are not judged in exam mode")
        answers = self.answers()
        earned = sum(judge(q, answers.get(q.id)).earned for q in self.quiz.questions)
        return float(earned), self.quiz.max_points

    def show_score(self) -> tuple[float, float]:
        earned, total = self.score()
        self.score_html.value = f"<b>Score: {_number(earned)} / {_number(total)}</b>"
        return earned, total

    # -- saving
    def default_path(self) -> Path:
        name = re.sub(r"[^A-Za-z0-9_.-]+", "_", self.student.value.strip()) or "anonymous"
        return Path(f"{self.quiz.id}-{name}.json")

    def save(self, path: str | os.PathLike[str] | None = None, *, overwrite: bool = False) -> Path:
        """Write the submission as JSON; refuses an existing file unless ``overwrite``."""
        data = self.submission()
        if not data["student"]:
            raise QuizError("enter your name before saving: the gradebook has one row per student")
        target = Path(path) if path else self.default_path()
        if target.exists() and not overwrite:
            raise QuizError(f"{target} already exists: choose another file name, or tick 'overwrite' to replace it")
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(json.dumps(data, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
        return target

    def _save_clicked(self) -> None:
        try:
            target = self.save(self.path.value.strip() or None, overwrite=self.overwrite.value)
        except (QuizError, OSError) as exc:
            self.save_status.value = f"<span style='color:#cf222e'>{html.escape(str(exc))}</span>"
            return
        missing = [q.id for q in self.quiz.questions if q.id not in self.answers()]
        note = f" Unanswered: {', '.join(missing)}." if missing else ""
        self.save_status.value = f"<span style='color:#1a7f37'>Saved to {html.escape(str(target))}.{note}</span>"
        self.overwrite.value = False

    # -- display
    def text(self) -> str:
        """A plain-text rendering (for consoles and static notebook viewers)."""
        lines = [f"Quiz: {_plain(self.quiz.title)} ({len(self.quiz.questions)} questions, {self.mode} mode)"]
        for number, q in enumerate(self.quiz.questions, 1):
            lines.append(f"{number}. {_plain(q.prompt)}")
            for i, c in enumerate(q.choices):
                lines.append(f"   {letter(i)}. {_plain(c.text)}")
        return "\n".join(lines)

    def __repr__(self) -> str:
        return f"<QuizView {self.quiz.id!r}: {len(self.quiz.questions)} questions, {self.mode} mode>"

    def _repr_mimebundle_(self, include: Any = None, exclude: Any = None) -> dict[str, Any]:
        bundle = dict(self.widget._repr_mimebundle_(include=include, exclude=exclude) or {})
        # Where no kernel draws the widget (GitHub, nbviewer, a saved notebook), say so first (issue 15).
        bundle["text/plain"] = "Quiz: an interactive widget. Run the cell (with its kernel) to answer.\n\n" + self.text()
        return bundle


def build(path_or_id: str | os.PathLike[str] | Quiz, *, mode: str | None = None, student: str = "") -> QuizView:
    """Load a quiz and build its widgets without displaying them (for tests and scripts)."""
    return QuizView(load_quiz(path_or_id), mode=mode, student=student)


def show(path_or_id: str | os.PathLike[str] | Quiz, *, mode: str | None = None, student: str = "") -> None:
    """Display a quiz: the last cell of every notebook, e.g. ``quiz.show("02_block_hashing")``.

    ``path_or_id`` is a quiz id looked up in ``quiz_dir()`` or a path to a quiz file.
    A quiz with its key opens in practice mode, a student copy in exam mode.
    """
    view = build(path_or_id, mode=mode, student=student)
    try:
        from IPython import get_ipython
        from IPython.display import display
    except ImportError:  # plain Python without IPython: print the questions
        get_ipython = None
    if get_ipython is None or get_ipython() is None:
        print(view.text())
    else:
        display(view)


