"""Quizzes: load and validate ``quizzes/*.yaml``, render them as widgets, grade submissions.

Every notebook ends with ``quiz.show("NN_name")``; ``quizzes/module2.yaml`` is the
module quiz. Instructors export a student copy (``course quiz export-student``)
and grade submissions into a gradebook (``course grade``).

A quiz file (validated by ``course_lib/data/quiz.schema.json`` plus the checks in
``validate_quiz_data`` that a schema cannot express)::

    id: module2
    title: ...
    questions:
      - {id: q1, type: single, prompt: ..., points: 1, feedback: ...,
         choices: [{text: ..., correct: true, feedback: ...}, ...]}
      - {id: q2, type: numeric, prompt: ..., answer: 1024, tolerance: 0, feedback: ...}
      - {id: q3, type: text, prompt: ..., accept: [sha256], feedback: ...}

A submission is JSON: ``{"quiz": "module2", "student": "ada", "answers": {"q1": 0,
"q2": 1024, "q3": "sha256"}}``; ``single`` is answered by a 0-based choice index,
``multiple`` by a list of indices, ``numeric`` by a number, ``text`` by a string.

Scoring (``judge``):

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

import argparse
import csv
import functools
import html
import io
import json
import math
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

from course_lib.engine import CourseError

QUIZ_DIR_ENV = "COURSE_QUIZ_DIR"
SCHEMA_PATH = Path(__file__).resolve().parent / "data" / "quiz.schema.json"
QUESTION_TYPES = ("single", "multiple", "numeric", "text")
KEY_FIELDS = ("correct", "answer", "accept", "tolerance", "feedback")


class QuizError(CourseError):
    """A quiz file or a submission is not valid; the message says what and where."""


# --------------------------------------------------------------------------- model


@dataclass(frozen=True)
class Choice:
    text: str
    correct: bool | None = None
    feedback: str | None = None


@dataclass(frozen=True)
class Question:
    id: str
    type: str
    prompt: str
    points: float = 1.0
    choices: tuple[Choice, ...] = ()
    answer: float | None = None
    tolerance: float = 0.0
    accept: tuple[str, ...] = ()
    feedback: str | None = None

    @property
    def has_key(self) -> bool:
        """Whether this question carries its answer key (a student copy does not)."""
        if self.type in ("single", "multiple"):
            return all(c.correct is not None for c in self.choices)
        if self.type == "numeric":
            return self.answer is not None
        return bool(self.accept)


@dataclass(frozen=True)
class Quiz:
    id: str
    title: str
    questions: tuple[Question, ...]
    description: str = ""
    student_copy: bool = False
    source: Path | None = field(default=None, compare=False)

    @property
    def has_key(self) -> bool:
        return not self.student_copy and all(q.has_key for q in self.questions)

    @property
    def max_points(self) -> float:
        return float(sum(q.points for q in self.questions))

    def question(self, qid: str) -> Question:
        for q in self.questions:
            if q.id == qid:
                return q
        raise KeyError(qid)


# ---------------------------------------------------------------------- loading


@functools.lru_cache(maxsize=1)
def schema() -> dict[str, Any]:
    """The JSON Schema of quiz files, shipped in the package."""
    return json.loads(SCHEMA_PATH.read_text(encoding="utf-8"))


def quiz_dir() -> Path:
    """Where quiz ids are looked up: ``$COURSE_QUIZ_DIR``, else the repository's ``quizzes/``.

    An instructor can point ``COURSE_QUIZ_DIR`` at a folder of student copies so the
    notebooks' last cells show exam-mode quizzes.
    """
    env = os.environ.get(QUIZ_DIR_ENV)
    if env:
        return Path(env).expanduser()
    return Path(__file__).resolve().parent.parent / "quizzes"


def resolve(path_or_id: str | os.PathLike[str]) -> Path:
    """A quiz id such as ``"01_block_hashing"`` or a path to a ``.yaml`` file, as a path."""
    text = os.fspath(path_or_id)
    path = Path(text).expanduser()
    if path.suffix in (".yaml", ".yml", ".json") or os.sep in text or "/" in text:
        if not path.is_file():
            raise QuizError(f"quiz file {text!r} does not exist")
        return path
    base = quiz_dir()
    for suffix in (".yaml", ".yml"):
        candidate = base / f"{text}{suffix}"
        if candidate.is_file():
            return candidate
    known = sorted(p.stem for p in base.glob("*.yaml")) if base.is_dir() else []
    raise QuizError(
        f"no quiz {text!r} in {base} (known: {', '.join(known) or 'none'}). "
        f"Pass a path to a quiz .yaml file, or set {QUIZ_DIR_ENV} to the folder holding the quizzes."
    )


def _schema_errors(data: Any) -> list[str]:
    import jsonschema

    validator = jsonschema.Draft202012Validator(schema())
    errors = sorted(validator.iter_errors(data), key=lambda e: list(map(str, e.absolute_path)))
    out = []
    for err in errors:
        where = "/".join(str(p) for p in err.absolute_path) or "(top level)"
        # Name the question, not just its index, so the author finds it.
        path = list(err.absolute_path)
        if len(path) >= 2 and path[0] == "questions" and isinstance(data, dict):
            try:
                where += f" (question {data['questions'][path[1]].get('id')!r})"
            except (AttributeError, IndexError, KeyError, TypeError):
                pass
        message = err.message
        if err.validator in ("not", "if", "then") or len(message) > 200:
            message = _explain(err)
        out.append(f"{where}: {message}")
    return out


def _explain(err: Any) -> str:
    inst = err.instance
    if isinstance(inst, dict) and inst.get("type") in QUESTION_TYPES:
        allowed = {
            "single": "choices (no answer/tolerance/accept)",
            "multiple": "choices (no answer/tolerance/accept)",
            "numeric": "answer and optional tolerance (no choices/accept)",
            "text": "accept (no choices/answer/tolerance)",
        }[inst["type"]]
        return f"a {inst['type']!r} question takes {allowed}"
    return str(err.message)[:200]


def validate_quiz_data(data: Any) -> list[str]:
    """All problems of a parsed quiz file: schema violations, then semantic ones.

    Semantic checks: unique question ids; ``single`` has exactly one correct choice,
    ``multiple`` at least one; choice texts unique within a question; numeric
    answers finite.
    """
    problems = _schema_errors(data)
    if problems or not isinstance(data, dict):
        return problems
    seen: set[str] = set()
    for q in data["questions"]:
        qid = q["id"]
        if qid in seen:
            problems.append(f"question id {qid!r} is used twice")
        seen.add(qid)
        choices = q.get("choices", [])
        texts = [c["text"].strip() for c in choices]
        if len(set(texts)) != len(texts):
            problems.append(f"question {qid!r}: two choices have the same text")
        if data.get("student_copy"):
            continue
        n_correct = sum(bool(c["correct"]) for c in choices)
        if q["type"] == "single" and n_correct != 1:
            problems.append(f"question {qid!r}: a 'single' question needs exactly one correct choice, not {n_correct}")
        if q["type"] == "multiple" and n_correct < 1:
            problems.append(f"question {qid!r}: a 'multiple' question needs at least one correct choice")
        if q["type"] == "numeric" and not math.isfinite(q["answer"]):
            problems.append(f"question {qid!r}: the numeric answer must be a finite number")
    return problems


def quiz_from_data(data: dict[str, Any], source: Path | None = None) -> Quiz:
    """Build a ``Quiz`` from parsed YAML, raising ``QuizError`` listing every problem."""
    problems = validate_quiz_data(data)
    if problems:
        name = str(source) if source else "quiz"
        raise QuizError(f"{name} is not a valid quiz:\n  - " + "\n  - ".join(problems))
    questions = []
    for q in data["questions"]:
        questions.append(
            Question(
                id=q["id"],
                type=q["type"],
                prompt=q["prompt"].strip(),
                points=float(q.get("points", 1)),
                choices=tuple(
                    Choice(c["text"].strip(), c.get("correct"), (c.get("feedback") or "").strip() or None)
                    for c in q.get("choices", [])
                ),
                answer=q.get("answer"),
                tolerance=float(q.get("tolerance", 0)),
                accept=tuple(a.strip() for a in q.get("accept", [])),
                feedback=(q.get("feedback") or "").strip() or None,
            )
        )
    return Quiz(
        id=data["id"],
        title=data["title"].strip(),
        questions=tuple(questions),
        description=(data.get("description") or "").strip(),
        student_copy=bool(data.get("student_copy", False)),
        source=source,
    )


def read_quiz_data(path: Path) -> Any:
    import yaml

    try:
        return yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise QuizError(f"{path} is not valid YAML: {exc}") from exc


def load_quiz(path_or_id: str | os.PathLike[str] | Quiz) -> Quiz:
    """Load and validate a quiz given its id (``"module2"``) or its file path."""
    if isinstance(path_or_id, Quiz):
        return path_or_id
    path = resolve(path_or_id)
    return quiz_from_data(read_quiz_data(path), source=path)


def all_quiz_paths(directory: Path | None = None) -> list[Path]:
    """The quiz files of a directory (default ``quiz_dir()``), sorted by name."""
    return sorted((directory or quiz_dir()).glob("*.yaml"))


# ---------------------------------------------------------------------- student copy


def student_copy_data(quiz: Quiz) -> dict[str, Any]:
    """The quiz without any key or feedback: what ``course quiz export-student`` writes."""
    questions = []
    for q in quiz.questions:
        item: dict[str, Any] = {"id": q.id, "type": q.type, "prompt": q.prompt, "points": _number(q.points)}
        if q.choices:
            item["choices"] = [{"text": c.text} for c in q.choices]
        questions.append(item)
    data: dict[str, Any] = {"id": quiz.id, "title": quiz.title}
    if quiz.description:
        data["description"] = quiz.description
    data["student_copy"] = True
    data["questions"] = questions
    return data


def export_student(path_or_id: str | os.PathLike[str] | Quiz, out: str | os.PathLike[str], *, force: bool = False) -> Path:
    """Write the student copy of a quiz to ``out`` (refuses to overwrite unless ``force``)."""
    import yaml

    quiz = load_quiz(path_or_id)
    target = Path(out)
    if target.exists() and not force:
        raise QuizError(f"{target} already exists; pass --force to overwrite it")
    data = student_copy_data(quiz)
    assert not validate_quiz_data(data), validate_quiz_data(data)
    target.parent.mkdir(parents=True, exist_ok=True)
    text = "# Student copy: no answer key. Generated by `course quiz export-student`.\n"
    text += yaml.safe_dump(data, sort_keys=False, allow_unicode=True, width=100)
    target.write_text(text, encoding="utf-8")
    return target


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


def _letter(index: int) -> str:
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
            return f"answer to {question.id!r} must be a choice index 0..{n - 1}, not {answer!r}"
    elif question.type == "multiple":
        if not isinstance(answer, list) or not all(_is_int(a) and 0 <= a < n for a in answer):
            return f"answer to {question.id!r} must be a list of choice indices 0..{n - 1}, not {answer!r}"
        if len(set(answer)) != len(answer):
            return f"answer to {question.id!r} lists a choice twice: {answer!r}"
    elif question.type == "numeric":
        if not (isinstance(answer, (int, float)) and not isinstance(answer, bool)) or not math.isfinite(answer):
            return f"answer to {question.id!r} must be a number, not {answer!r}"
    elif question.type == "text":
        if not isinstance(answer, str):
            return f"answer to {question.id!r} must be a string, not {answer!r}"
    return None


def _normalise(text: str) -> str:
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
        notes.append(f"{_letter(answer)}: {choice.feedback}")
    elif question.type == "multiple":
        picked = set(answer)
        correct = {i for i, c in enumerate(question.choices) if c.correct}
        right, wrong = len(picked & correct), len(picked - correct)
        earned = question.points * max(0, right - wrong) / len(correct)
        for i, c in enumerate(question.choices):
            if i in picked or i in correct:
                mark = "✓" if (i in picked) == bool(c.correct) else "✗"
                state = "ticked" if i in picked else "not ticked"
                notes.append(f"{mark} {_letter(i)} ({state}): {c.feedback}")
    elif question.type == "numeric":
        ok = abs(float(answer) - float(question.answer)) <= question.tolerance + 1e-12
        earned = question.points if ok else 0.0
    else:
        ok = _normalise(answer) in {_normalise(a) for a in question.accept}
        earned = question.points if ok else 0.0
    if question.feedback:
        notes.append(question.feedback)
    return Judgement(question.id, float(earned), question.points, True, tuple(n for n in notes if n))


# ---------------------------------------------------------------------- submissions


def submission_problems(data: Any, quiz: Quiz) -> list[str]:
    """Why a parsed submission cannot be graded against ``quiz`` (empty if it can)."""
    if not isinstance(data, dict):
        return ["not a JSON object with keys quiz, student, answers"]
    problems = []
    missing = [k for k in ("quiz", "student", "answers") if k not in data]
    if missing:
        problems.append(f"missing key(s) {', '.join(missing)}")
    extra = sorted(set(data) - {"quiz", "student", "answers"})
    if extra:
        problems.append(f"unexpected key(s) {', '.join(extra)}")
    if "quiz" in data and data["quiz"] != quiz.id:
        problems.append(f"is a submission for quiz {data['quiz']!r}, not {quiz.id!r}")
    if "student" in data and not (isinstance(data["student"], str) and data["student"].strip()):
        problems.append("student must be a non-empty string")
    answers = data.get("answers")
    if "answers" in data and not isinstance(answers, dict):
        problems.append("answers must be an object mapping question ids to answers")
    elif isinstance(answers, dict):
        known = {q.id for q in quiz.questions}
        unknown = sorted(str(k) for k in answers if k not in known)
        if unknown:
            problems.append(f"unknown question id(s) {', '.join(unknown)} (quiz {quiz.id!r} has {', '.join(sorted(known))})")
        for q in quiz.questions:
            if q.id in answers:
                problem = answer_problem(q, answers[q.id])
                if problem:
                    problems.append(problem)
    return problems


def score_submission(data: dict[str, Any], quiz: Quiz) -> dict[str, float]:
    """Points per question id (in quiz order) for a well-formed submission."""
    problems = submission_problems(data, quiz)
    if problems:
        raise QuizError("; ".join(problems))
    return {q.id: judge(q, data["answers"].get(q.id)).earned for q in quiz.questions}


@dataclass
class GradeRow:
    student: str
    scores: dict[str, float]
    source: Path

    @property
    def total(self) -> float:
        return float(sum(self.scores.values()))


@dataclass
class Gradebook:
    """The result of grading: one row per student, plus one problem line per rejected file."""

    quiz: Quiz
    rows: list[GradeRow]
    problems: list[str]

    def to_csv(self) -> str:
        buf = io.StringIO()
        writer = csv.writer(buf, lineterminator="\n")
        ids = [q.id for q in self.quiz.questions]
        writer.writerow(["student", *ids, "total", "max"])
        for row in self.rows:
            writer.writerow(
                [row.student, *(_number(row.scores[i]) for i in ids), _number(row.total), _number(self.quiz.max_points)]
            )
        return buf.getvalue()


def _number(x: float) -> int | float:
    """A score as it is written: 1 not 1.0, 0.67 for two thirds."""
    x = round(float(x), 2)
    return int(x) if x.is_integer() else x


def grade(quiz_path_or_id: str | os.PathLike[str] | Quiz, submissions: Iterable[str | os.PathLike[str]]) -> Gradebook:
    """Grade submission files against a quiz's key.

    Files that cannot be graded (not JSON, another quiz, unknown question ids, a
    malformed answer, a student already graded from another file) each give one
    problem line naming the file; the others are still graded. Rows are sorted by
    student name, so the gradebook does not depend on the order of the files.
    """
    quiz = load_quiz(quiz_path_or_id)
    if not quiz.has_key:
        raise QuizError(f"quiz {quiz.id!r} has no answer key (is it a student copy?); grade with the instructor's file")
    rows: dict[str, GradeRow] = {}
    problems: list[str] = []
    for path in sorted({Path(p) for p in submissions}, key=str):
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            problems.append(f"{path}: no such file")
            continue
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            problems.append(f"{path}: not valid JSON ({exc})")
            continue
        found = submission_problems(data, quiz)
        if found:
            problems.append(f"{path}: " + "; ".join(found))
            continue
        student = data["student"].strip()
        if student in rows:
            problems.append(f"{path}: student {student!r} was already graded from {rows[student].source}")
            continue
        rows[student] = GradeRow(student, score_submission(data, quiz), path)
    return Gradebook(quiz, [rows[s] for s in sorted(rows)], problems)


def write_gradebook(book: Gradebook, out: str | os.PathLike[str], *, force: bool = False) -> Path:
    """Write the gradebook CSV; an existing file is kept unless ``force``."""
    target = Path(out)
    if target.exists() and not force:
        raise QuizError(f"{target} already exists; pass --force to overwrite the gradebook")
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(target.name + ".tmp")
    tmp.write_text(book.to_csv(), encoding="utf-8")
    tmp.replace(target)
    return target


# ---------------------------------------------------------------------- widgets


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
        letters = [_letter(i) for i in range(len(q.choices))]
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
            number = float(text.replace(",", ""))
        except ValueError:
            return None
        if not math.isfinite(number):
            return None
        return int(number) if number.is_integer() else number


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

    # -- reading and judging
    def answers(self) -> dict[str, Any]:
        """The answers given so far, in submission form (unanswered questions left out)."""
        values = {qid: item.value() for qid, item in self.inputs.items()}
        return {qid: v for qid, v in values.items() if v is not None}

    def submission(self) -> dict[str, Any]:
        """The submission ``course grade`` reads."""
        return {"quiz": self.quiz.id, "student": self.student.value.strip(), "answers": self.answers()}

    def check(self, qid: str) -> Judgement:
        """Judge one question now and show its feedback (practice mode)."""
        if self.mode != "practice":
            raise QuizError("answers are not judged in exam mode")
        item = self.inputs[qid]
        result = judge(item.question, item.value())
        if not result.answered:
            unreadable = item.question.type == "numeric" and item.control.value.strip()
            item.feedback.value = (
                "<span style='color:#9a6700'>That is not a number.</span>"
                if unreadable
                else "<span style='color:#9a6700'>Answer first, then check.</span>"
            )
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
                lines.append(f"   {_letter(i)}. {_plain(c.text)}")
        return "\n".join(lines)

    def __repr__(self) -> str:
        return f"<QuizView {self.quiz.id!r}: {len(self.quiz.questions)} questions, {self.mode} mode>"

    def _repr_mimebundle_(self, include: Any = None, exclude: Any = None) -> dict[str, Any]:
        bundle = dict(self.widget._repr_mimebundle_(include=include, exclude=exclude) or {})
        bundle["text/plain"] = self.text()
        return bundle


def build(path_or_id: str | os.PathLike[str] | Quiz, *, mode: str | None = None, student: str = "") -> QuizView:
    """Load a quiz and build its widgets without displaying them (for tests and scripts)."""
    return QuizView(load_quiz(path_or_id), mode=mode, student=student)


def show(path_or_id: str | os.PathLike[str] | Quiz, *, mode: str | None = None, student: str = "") -> None:
    """Display a quiz: the last cell of every notebook, e.g. ``quiz.show("01_block_hashing")``.

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


__all__ = [
    "Choice",
    "Gradebook",
    "Judgement",
    "Question",
    "Quiz",
    "QuizError",
    "QuizView",
    "build",
    "export_student",
    "grade",
    "judge",
    "load_quiz",
    "quiz_dir",
    "resolve",
    "show",
    "student_copy_data",
    "submission_problems",
    "validate_quiz_data",
    "write_gradebook",
]


# ---------------------------------------------------------------------- command line


def cli_quiz(args: argparse.Namespace) -> int:
    """``course quiz export-student QUIZ --out PATH`` and ``course quiz validate [QUIZ...]``."""
    if args.quiz_command == "export-student":
        target = export_student(args.quiz, args.out, force=args.force)
        print(f"{target}: student copy of {load_quiz(args.quiz).id!r} (no answer key, exam mode)")
        return 0
    paths = [resolve(q) for q in args.quizzes] or all_quiz_paths()
    if not paths:
        raise QuizError(f"no quiz files in {quiz_dir()}")
    status = 0
    for path in paths:
        try:
            quiz = load_quiz(path)
        except QuizError as exc:
            print(f"[FAIL] {exc}")
            status = 1
        else:
            kind = "student copy" if quiz.student_copy else "with key"
            print(f"[OK] {path}: {quiz.id!r}, {len(quiz.questions)} questions, {_number(quiz.max_points)} points ({kind})")
    return status


def cli_grade(args: argparse.Namespace) -> int:
    """``course grade --quiz QUIZ --out grades.csv [--force] SUBMISSION...``.

    Exit status 0 when every submission was graded, 1 when some were rejected
    (each reported on stderr on its own line), 2 for errors that stop grading.
    """
    import sys

    out = Path(args.out)
    if out.exists() and not args.force:
        raise QuizError(f"{out} already exists; pass --force to overwrite the gradebook")
    book = grade(args.quiz, args.submissions)
    write_gradebook(book, out, force=args.force)
    for line in book.problems:
        print(f"rejected: {line}", file=sys.stderr)
    print(f"{out}: {len(book.rows)} student(s) graded on {book.quiz.id!r}, {len(book.problems)} submission(s) rejected")
    return 1 if book.problems else 0
