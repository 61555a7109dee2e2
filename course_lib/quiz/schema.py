"""Quiz files: the data model, loading, validation (schema + checks a schema cannot express), versions
and student copies (no key).

A quiz file (validated by ``course_lib/data/quiz.schema.json`` plus ``validate_quiz_data``)::

    id: module2                # must equal the file name (module2.yaml)
    title: ...
    questions:
      - {id: q1, type: single, prompt: ..., points: 1, feedback: ...,
         choices: [{text: ..., correct: true, feedback: ...}, ...]}
      - {id: q2, type: numeric, prompt: ..., answer: 1024, tolerance: 0, feedback: ...}
      - {id: q3, type: text, prompt: ..., accept: [sha256], feedback: ...}

Validation reports every problem of a file in one run, each with its line number:
YAML syntax, duplicate keys (which plain YAML loaders silently resolve to the last
one), schema violations, then the semantic checks. A quiz's ``version`` is a short
hash of its content; its student copy carries the version of the quiz it was made
from, so a submission records which text the learner answered.
"""

from __future__ import annotations

import functools
import hashlib
import json
import math
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from course_lib.engine import CourseError
from course_lib.quiz.safe_io import FileRefused, read_regular_file, shown
from course_lib.quiz.yaml_file import ParsedQuizFile, parse_quiz_text  # noqa: F401 (re-exported)

QUIZ_DIR_ENV = "COURSE_QUIZ_DIR"
DATA_DIR = Path(__file__).resolve().parent.parent / "data"
SCHEMA_PATH = DATA_DIR / "quiz.schema.json"
#: Keyless student copies of the course quizzes, shipped in the package (the wheel has no keys).
PACKAGED_QUIZ_DIR = DATA_DIR / "quizzes"
QUESTION_TYPES = ("single", "multiple", "numeric", "text")
KEY_FIELDS = ("correct", "answer", "accept", "tolerance", "feedback")
MAX_QUIZ_BYTES = 2_000_000


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
    version: str = ""

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


# ---------------------------------------------------------------------- locating


@functools.lru_cache(maxsize=1)
def schema() -> dict[str, Any]:
    """The JSON Schema of quiz files, shipped in the package."""
    return json.loads(SCHEMA_PATH.read_text(encoding="utf-8"))


PROJECT_NAME = "prefix-caching-course"
_PROJECT_NAME_LINE = re.compile(r'^name\s*=\s*["\']' + re.escape(PROJECT_NAME) + r'["\']\s*$', re.M)


def project_root(start: str | os.PathLike[str] | None = None) -> Path | None:
    """The course project that ``start`` (default: the current directory) lies in: the nearest folder
    at or above it with a ``quizzes/`` folder and a ``pyproject.toml`` naming this course."""
    here = Path(start if start is not None else Path.cwd()).resolve()
    for folder in (here, *here.parents):
        pyproject = folder / "pyproject.toml"
        if (folder / "quizzes").is_dir() and pyproject.is_file():
            try:
                head = read_regular_file(pyproject, 200_000).decode("utf-8", "replace")
            except FileRefused:
                continue
            if _PROJECT_NAME_LINE.search(head):
                return folder
    return None


def quiz_dir_origin() -> tuple[Path, str]:
    """Where quiz ids are looked up, and a phrase saying why there (printed by every command).

    In this order: ``$COURSE_QUIZ_DIR``; the ``quizzes/`` of the course project the current
    directory lies in (so a copy of the course grades, validates and bundles its own quizzes);
    the ``quizzes/`` of the checkout the package runs from; the keyless copies shipped inside the
    package (an installed wheel), which open in exam mode.
    """
    env = os.environ.get(QUIZ_DIR_ENV)
    if env:
        return Path(env).expanduser(), f"${QUIZ_DIR_ENV}"
    project = project_root()
    if project is not None:
        return project / "quizzes", f"the course project in {project}, the current directory"
    checkout = checkout_quiz_dir()
    if checkout is not None:
        return checkout, f"the checkout the course package runs from ({checkout.parent}); the current directory is not in a course project"
    return PACKAGED_QUIZ_DIR, "the keyless copies shipped in the course package (exam mode)"


def quiz_dir() -> Path:
    """Where quiz ids are looked up (``quiz_dir_origin`` says in which order, and why)."""
    return quiz_dir_origin()[0]


def checkout_quiz_dir() -> Path | None:
    """The repository's ``quizzes/`` when the package runs from a checkout (not from an installed wheel)."""
    repo = Path(__file__).resolve().parents[2]
    if (repo / "quizzes").is_dir() and (repo / "pyproject.toml").is_file():
        return repo / "quizzes"
    return None


def locate(path_or_id: str | os.PathLike[str]) -> tuple[Path, str]:
    """A quiz id such as ``"02_block_hashing"`` or a path to a ``.yaml`` file, as a path, and where it came from."""
    text = os.fspath(path_or_id)
    path = Path(text).expanduser()
    if path.suffix in (".yaml", ".yml", ".json") or os.sep in text or "/" in text:
        if not path.is_file():
            what = "is not a regular file" if os.path.lexists(path) else "does not exist"
            raise QuizError(f"quiz file {text!r} {what}")
        return path, "the file given"
    base, origin = quiz_dir_origin()
    for suffix in (".yaml", ".yml"):
        candidate = base / f"{text}{suffix}"
        if candidate.is_file():
            return candidate, f"quiz id looked up in {origin}"
    known = sorted(p.stem for p in base.glob("*.yaml")) if base.is_dir() else []
    raise QuizError(
        f"no quiz {text!r} in {base}, from {origin} (known: {', '.join(known) or 'none'}). "
        f"Pass a path to a quiz .yaml file, or set {QUIZ_DIR_ENV} to the folder holding the quizzes."
    )


def resolve(path_or_id: str | os.PathLike[str]) -> Path:
    """A quiz id such as ``"02_block_hashing"`` or a path to a ``.yaml`` file, as a path (see ``locate``)."""
    return locate(path_or_id)[0]


def all_quiz_paths(directory: Path | None = None) -> list[Path]:
    """The quiz files of a directory (default ``quiz_dir()``), sorted by name."""
    return sorted((directory or quiz_dir()).glob("*.yaml"))


# ---------------------------------------------------------------------- reading files


def read_quiz_file(path: Path) -> ParsedQuizFile:
    """Read a quiz file: a regular file of at most ``MAX_QUIZ_BYTES``, UTF-8."""
    try:
        text = read_regular_file(path, MAX_QUIZ_BYTES).decode("utf-8-sig")
    except FileRefused as exc:
        raise QuizError(f"{shown(path)} cannot be read: {exc}") from None
    except UnicodeDecodeError as exc:
        raise QuizError(f"{shown(path)} cannot be read: not UTF-8 (byte {exc.start})") from None
    return parse_quiz_text(text)


def read_quiz_data(path: Path) -> Any:
    """The parsed data of a quiz file (YAML errors raise ``QuizError``)."""
    parsed = read_quiz_file(path)
    if parsed.data is None and parsed.problems:
        raise QuizError(f"{shown(path)}: " + "; ".join(parsed.problems))
    return parsed.data


# ---------------------------------------------------------------------- validation


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


def _import_jsonschema() -> Any:
    """``jsonschema``, imported without its optional ``rfc3987_syntax`` format checker when that is not
    loaded yet: building that grammar takes about 3 s at import, and the quiz schema has no ``iri`` format."""
    import sys

    if "jsonschema" not in sys.modules and "rfc3987_syntax" not in sys.modules:
        sys.modules["rfc3987_syntax"] = None  # type: ignore[assignment]  # makes its import fail; jsonschema skips it
        try:
            import jsonschema
        finally:
            del sys.modules["rfc3987_syntax"]
    import jsonschema

    return jsonschema


def _schema_errors(data: Any) -> list[tuple[tuple[Any, ...], str]]:
    jsonschema = _import_jsonschema()

    validator = jsonschema.Draft202012Validator(schema())
    errors = sorted(validator.iter_errors(data), key=lambda e: list(map(str, e.absolute_path)))
    out = []
    for err in errors:
        path = tuple(err.absolute_path)
        where = "/".join(str(p) for p in path) or "(top level)"
        if len(path) >= 2 and path[0] == "questions" and isinstance(data, dict):
            try:
                where += f" (question {data['questions'][path[1]].get('id')!r})"
            except (AttributeError, IndexError, KeyError, TypeError):
                pass
        message = err.message
        if err.validator in ("not", "if", "then") or len(message) > 200:
            message = _explain(err)
        out.append((path, f"{where}: {message}"))
    return out


def _semantic_errors(data: dict[str, Any]) -> list[tuple[tuple[Any, ...], str]]:
    """Checks a schema cannot express, run defensively so they add to the schema's report."""
    out: list[tuple[tuple[Any, ...], str]] = []
    questions = data.get("questions")
    if not isinstance(questions, list):
        return out
    seen: set[Any] = set()
    student = bool(data.get("student_copy"))
    for index, q in enumerate(questions):
        if not isinstance(q, dict):
            continue
        here = ("questions", index)
        qid = q.get("id")
        if qid in seen:
            out.append((here + ("id",), f"question id {qid!r} is used twice"))
        seen.add(qid)
        for key in ("answer", "tolerance", "points"):
            value = q.get(key)
            if isinstance(value, float) and not math.isfinite(value):
                out.append((here + (key,), f"question {qid!r}: {key} must be a finite number, not {value}"))
        choices = q.get("choices") if isinstance(q.get("choices"), list) else []
        texts = [c["text"].strip() for c in choices if isinstance(c, dict) and isinstance(c.get("text"), str)]
        if len(set(texts)) != len(texts):
            out.append((here + ("choices",), f"question {qid!r}: two choices have the same text"))
        if student:
            continue
        n_correct = sum(1 for c in choices if isinstance(c, dict) and c.get("correct") is True)
        if q.get("type") == "single" and choices and n_correct != 1:
            msg = f"question {qid!r}: a 'single' question needs exactly one correct choice, not {n_correct}"
            out.append((here + ("choices",), msg))
        if q.get("type") == "multiple" and choices and n_correct < 1:
            out.append((here + ("choices",), f"question {qid!r}: a 'multiple' question needs at least one correct choice"))
    return out


def validate_quiz_data(data: Any, parsed: ParsedQuizFile | None = None, source: Path | None = None) -> list[str]:
    """Every problem of a parsed quiz file, in one list: YAML (duplicate keys), schema, semantics,
    and (with ``source``) an ``id`` that differs from the file name. With ``parsed`` each problem
    starts with its line number."""
    problems = list(parsed.problems) if parsed else []
    found = _schema_errors(data)
    if isinstance(data, dict):
        found += _semantic_errors(data)
        keyed = not data.get("student_copy")  # a student copy may be saved under any name
        if keyed and source is not None and isinstance(data.get("id"), str) and data["id"] != source.stem:
            found.append((("id",), f"id {data['id']!r} differs from the file name {source.name!r} (use id: {source.stem})"))
        if keyed and "version" in data:
            found.append((("version",), "a quiz with its key may not set `version`: it is always computed from the "
                          "content (so changing an answer changes it); only a student copy records the version it "
                          "was made from. Remove the line"))  # fmt: skip
    for path, message in found:
        line = parsed.line_of(path) if parsed else None
        problems.append(f"line {line}: {message}" if line else message)
    return problems


def content_version(data: dict[str, Any]) -> str:
    """A short hash of a quiz's content (what the learner sees and the key), ignoring YAML layout."""
    content = {k: v for k, v in data.items() if k not in ("student_copy", "version")}
    canonical = json.dumps(content, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()[:12]


def quiz_from_data(data: dict[str, Any], source: Path | None = None, parsed: ParsedQuizFile | None = None) -> Quiz:
    """Build a ``Quiz`` from parsed YAML, raising ``QuizError`` listing every problem."""
    problems = validate_quiz_data(data, parsed, source)
    if problems:
        name = shown(source) if source else "quiz"
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
        # A keyed quiz's version is always its content hash (a written one would freeze it); a student
        # copy carries the version of the keyed quiz it was made from.
        version=(data.get("version") or content_version(data)) if data.get("student_copy") else content_version(data),
    )


def load_quiz(path_or_id: str | os.PathLike[str] | Quiz) -> Quiz:
    """Load and validate a quiz given its id (``"module2"``) or its file path."""
    if isinstance(path_or_id, Quiz):
        return path_or_id
    path = resolve(path_or_id)
    parsed = read_quiz_file(path)
    if parsed.data is None and parsed.problems:
        raise QuizError(f"{shown(path)} is not a valid quiz:\n  - " + "\n  - ".join(parsed.problems))
    return quiz_from_data(parsed.data, source=path, parsed=parsed)


def check_quiz_file(path: Path) -> list[str]:
    """Every problem of one quiz file (empty when valid): what ``course quiz validate`` prints."""
    parsed = read_quiz_file(path)
    if parsed.data is None and parsed.problems:
        return parsed.problems
    return validate_quiz_data(parsed.data, parsed, path)


# ---------------------------------------------------------------------- student copy


def number(x: float) -> int | float:
    """A score as it is written: 1 not 1.0, 0.67 for two thirds."""
    x = round(float(x), 2)
    return int(x) if x.is_integer() else x


def student_copy_data(quiz: Quiz) -> dict[str, Any]:
    """The quiz without any key or feedback: what ``course quiz export-student`` writes."""
    questions = []
    for q in quiz.questions:
        item: dict[str, Any] = {"id": q.id, "type": q.type, "prompt": q.prompt, "points": number(q.points)}
        if q.choices:
            item["choices"] = [{"text": c.text} for c in q.choices]
        questions.append(item)
    data: dict[str, Any] = {"id": quiz.id, "title": quiz.title}
    if quiz.description:
        data["description"] = quiz.description
    data["student_copy"] = True
    data["version"] = quiz.version
    data["questions"] = questions
    return data


def student_copy_text(quiz: Quiz) -> str:
    import yaml

    data = student_copy_data(quiz)
    problems = validate_quiz_data(data)
    if problems:  # a bug in this module, not in the quiz
        raise QuizError(f"student copy of {quiz.id!r} is invalid: {problems}")
    text = "# Student copy: no answer key. Generated by `course quiz export-student`.\n"
    return text + yaml.safe_dump(data, sort_keys=False, allow_unicode=True, width=100)


def export_student(path_or_id: str | os.PathLike[str] | Quiz, out: str | os.PathLike[str], *, force: bool = False) -> Path:
    """Write the student copy of a quiz to ``out`` (refuses to overwrite unless ``force``)."""
    quiz = load_quiz(path_or_id)
    target = Path(out)
    if target.exists() and not force:
        raise QuizError(f"{target} already exists; pass --force to overwrite it")
    text = student_copy_text(quiz)
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(text, encoding="utf-8")
    return target
