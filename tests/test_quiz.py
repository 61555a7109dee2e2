"""Tests of course_lib.quiz: the quiz files, judging, grading, student copies, the widget,
and the quizzes' factual answers checked against the real vLLM engine."""

from __future__ import annotations

import json
import random
import re
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from course_lib import quiz as Q

REPO = Path(__file__).resolve().parents[1]
QUIZ_FILES = sorted((REPO / "quizzes").glob("*.yaml"))
NOTEBOOK_QUIZZES = ["00_setup", "01_kv_cache", "02_block_hashing", "03_live_engine", "04_chat", "05_rag", "06_metrics", "07_fleet",
                    "08_troubleshooting", "09_second_tier"]


# ----------------------------------------------------------------- answer keys as submissions


def perfect_answers(quiz: Q.Quiz) -> dict[str, Any]:
    """The right answer to every question, read from the quiz's own key."""
    answers: dict[str, Any] = {}
    for q in quiz.questions:
        if q.type == "single":
            answers[q.id] = next(i for i, c in enumerate(q.choices) if c.correct)
        elif q.type == "multiple":
            answers[q.id] = [i for i, c in enumerate(q.choices) if c.correct]
        elif q.type == "numeric":
            answers[q.id] = q.answer
        else:
            answers[q.id] = f"  {q.accept[0].upper()} "  # case and surrounding spaces must not matter
    return answers


def wrong_answers(quiz: Q.Quiz) -> dict[str, Any]:
    """A wrong answer to every question, read from the key."""
    answers: dict[str, Any] = {}
    for q in quiz.questions:
        if q.type == "single":
            answers[q.id] = next(i for i, c in enumerate(q.choices) if not c.correct)
        elif q.type == "multiple":
            wrong = [i for i, c in enumerate(q.choices) if not c.correct]
            answers[q.id] = wrong or [0]
        elif q.type == "numeric":
            answers[q.id] = q.answer + q.tolerance + 1
        else:
            answers[q.id] = "not-" + q.accept[0] + "-at-all"
    return answers


def load_raw(path: Path) -> Any:
    return yaml.safe_load(path.read_text(encoding="utf-8"))


def walk_keys(data: Any) -> set[str]:
    if isinstance(data, dict):
        return set(data) | set().union(*(walk_keys(v) for v in data.values()))
    if isinstance(data, list):
        return set().union(*(walk_keys(v) for v in data)) if data else set()
    return set()


# ----------------------------------------------------------------- the quiz files


def test_every_expected_quiz_exists():
    stems = {p.stem for p in QUIZ_FILES}
    assert set(NOTEBOOK_QUIZZES) | {"module2"} <= stems


@pytest.mark.parametrize("path", QUIZ_FILES, ids=lambda p: p.stem)
def test_quiz_file_validates_against_the_shipped_schema(path):
    data = load_raw(path)
    schema = json.loads((REPO / "course_lib" / "data" / "quiz.schema.json").read_text())
    jsonschema.Draft202012Validator.check_schema(schema)
    jsonschema.validate(data, schema, cls=jsonschema.Draft202012Validator)
    assert Q.validate_quiz_data(data) == []
    quiz = Q.load_quiz(path)
    assert quiz.id == path.stem, "a quiz's id must be its file name, so quiz.show(id) finds it"
    assert quiz.has_key
    n = len(quiz.questions)
    assert n >= 15 if quiz.id == "module2" else 4 <= n <= 10


@pytest.mark.parametrize("path", QUIZ_FILES, ids=lambda p: p.stem)
def test_every_question_and_choice_has_feedback(path):
    data = load_raw(path)
    for q in data["questions"]:
        assert isinstance(q.get("feedback"), str) and q["feedback"].strip(), q["id"]
        for c in q.get("choices", []):
            assert isinstance(c.get("feedback"), str) and c["feedback"].strip(), (q["id"], c["text"])


def test_module2_covers_the_often_repeated_errors():
    quiz = Q.load_quiz("module2")
    text = json.dumps(load_raw(REPO / "quizzes" / "module2.yaml"))
    for fact in ("vllm:prefix_cache_queries_total", "vllm:prefix_cache_hits_total", "num_tokens - 1",
                 "cache_salt", "NONE_HASH", "sha256", "LRU", "enable_prefix_caching", "multiple of 32"):
        assert fact in text, fact
    assert {q.type for q in quiz.questions} == set(Q.QUESTION_TYPES)


def test_each_notebook_ends_with_its_own_quiz():
    import nbformat

    notebooks = sorted((REPO / "notebooks").glob("[0-9][0-9]_*.ipynb"))
    assert notebooks, "the course's notebooks are missing"
    for path in notebooks:
        nb = nbformat.read(path, as_version=4)
        # The quiz ends the main path: in one of its last code cells (a "What you measured" cell that prints
        # its numbers from code may follow it). An optional "Going deeper" section may come after it.
        deeper = next((i for i, c in enumerate(nb.cells) if c.cell_type == "markdown"
                       and re.search(r"^#+ Going deeper", c.source, re.M)), len(nb.cells))  # fmt: skip
        ends = {len(nb.cells), deeper}
        last = [s for end in ends for s in [c.source for c in nb.cells[:end] if c.cell_type == "code"][-3:]]
        assert any(f'quiz.show("{path.stem}")' in s for s in last), f"{path.name}: the notebook must end with its quiz"
        assert Q.resolve(path.stem) == REPO / "quizzes" / f"{path.stem}.yaml"


def _minimal() -> dict[str, Any]:
    return {
        "id": "t",
        "title": "T",
        "questions": [
            {"id": "a", "type": "single", "prompt": "p", "feedback": "f",
             "choices": [{"text": "x", "correct": True, "feedback": "f"}, {"text": "y", "correct": False, "feedback": "f"}]},
            {"id": "b", "type": "numeric", "prompt": "p", "answer": 3, "feedback": "f"},
            {"id": "c", "type": "text", "prompt": "p", "accept": ["sha256"], "feedback": "f"},
        ],
    }


def _break(change):
    data = _minimal()
    change(data)
    return data


BROKEN = {
    "two correct in single": (lambda d: d["questions"][0]["choices"][1].update(correct=True), "exactly one correct"),
    "duplicate id": (lambda d: d["questions"][1].update(id="a"), "used twice"),
    "numeric with choices": (lambda d: d["questions"][1].update(choices=[dict(c) for c in d["questions"][0]["choices"]]),
                             "'numeric' question takes"),  # copies: a shared list would be dumped as a YAML alias
    "text without accept": (lambda d: d["questions"][2].pop("accept"), "'accept' is a required property"),
    "missing question feedback": (lambda d: d["questions"][1].pop("feedback"), "'feedback' is a required property"),
    "missing choice feedback": (lambda d: d["questions"][0]["choices"][0].pop("feedback"), "'feedback' is a required property"),
    "unknown type": (lambda d: d["questions"][0].update(type="essay"), "essay"),
    "negative tolerance": (lambda d: d["questions"][1].update(tolerance=-1), "minimum"),
    "yes parsed as bool": (lambda d: d["questions"][2].update(accept=[True]), "not of type 'string'"),
    "key in student copy": (lambda d: d.update(student_copy=True), "Additional properties"),
}


@pytest.mark.parametrize("name", BROKEN)
def test_invalid_quizzes_are_rejected_with_a_message_naming_the_problem(name, tmp_path):
    change, expected = BROKEN[name]
    assert Q.validate_quiz_data(_minimal()) == []
    data = _break(change)
    path = tmp_path / "t.yaml"
    path.write_text(yaml.safe_dump(data))
    with pytest.raises(Q.QuizError) as err:
        Q.load_quiz(path)
    assert expected in str(err.value)
    assert str(path) in str(err.value)


def test_unknown_quiz_id_lists_the_known_ones():
    with pytest.raises(Q.QuizError, match="module2"):
        Q.resolve("no_such_quiz")


# ----------------------------------------------------------------- judging


def _multi_question(points: float = 3) -> Q.Question:
    choices = tuple(Q.Choice(t, t.startswith("ok"), "f") for t in ("ok1", "ok2", "ok3", "bad1", "bad2"))
    return Q.Question("m", "multiple", "p", points, choices, feedback="f")


@pytest.mark.parametrize(
    "ticked, right, wrong",
    [([0, 1, 2], 3, 0), ([0, 1], 2, 0), ([0], 1, 0), ([0, 1, 3], 2, 1), ([0, 3], 1, 1), ([3, 4], 0, 2), ([0, 1, 2, 3, 4], 3, 2)],
)
def test_multiple_choice_partial_credit_is_right_minus_wrong_over_correct(ticked, right, wrong):
    q = _multi_question(points=3)
    result = Q.judge(q, ticked)
    assert result.earned == pytest.approx(3 * max(0, right - wrong) / 3)
    assert result.correct == (right == 3 and wrong == 0)


def test_unanswered_scores_zero_and_is_not_an_error():
    q = _multi_question()
    for empty in (None, []):
        result = Q.judge(q, empty)
        assert (result.earned, result.answered) == (0.0, False)


def test_numeric_tolerance_is_absolute_and_text_ignores_case_and_spaces():
    num = Q.Question("n", "numeric", "p", answer=0.75, tolerance=0.005, feedback="f")
    assert Q.judge(num, 0.754).correct and not Q.judge(num, 0.76).correct
    exact = Q.Question("e", "numeric", "p", answer=64, tolerance=0, feedback="f")
    assert Q.judge(exact, 64).correct and not Q.judge(exact, 65).correct
    txt = Q.Question("t", "text", "p", accept=("sha256",), feedback="f")
    assert Q.judge(txt, "  SHA256\n").correct and not Q.judge(txt, "sha 256").correct


def test_feedback_of_the_chosen_choice_is_returned():
    quiz = Q.load_quiz("module2")
    q = next(q for q in quiz.questions if q.type == "single")
    for i, choice in enumerate(q.choices):
        result = Q.judge(q, i)
        assert any(choice.feedback in note for note in result.feedback) and q.feedback in result.feedback
        assert result.correct == choice.correct


# ----------------------------------------------------------------- grading


def write_submission(path: Path, quiz: str, student: str, answers: dict[str, Any]) -> Path:
    path.write_text(json.dumps({"quiz": quiz, "student": student, "answers": answers}))
    return path


def test_grading_perfect_wrong_partial_and_rejected_submissions(tmp_path):
    quiz = Q.load_quiz("module2")
    perfect, wrong = perfect_answers(quiz), wrong_answers(quiz)
    half_ids = [q.id for q in quiz.questions][::2]
    partial = {qid: perfect[qid] for qid in half_ids}
    expected_partial = sum(q.points for q in quiz.questions if q.id in half_ids)
    files = [
        write_submission(tmp_path / "ada.json", "module2", "ada", perfect),
        write_submission(tmp_path / "bob.json", "module2", "bob", wrong),
        write_submission(tmp_path / "cy.json", "module2", "cy", partial),
    ]
    bad = {
        "broken.json": '{"quiz": "module2", "student": ',
        "foreign.json": json.dumps({"quiz": "02_block_hashing", "student": "eve", "answers": {}}),
        "nokeys.json": json.dumps(["module2", "x"]),
    }
    # Graded except for the part named (an unknown question id is ignored, a malformed answer scores 0).
    part = {
        "unknown.json": json.dumps({"quiz": "module2", "student": "mal", "answers": {**perfect, "q999": 1}}),
        "badtype.json": json.dumps({"quiz": "module2", "student": "tom", "answers": {**perfect, quiz.questions[0].id: "zero"}}),
    }
    for name, text in {**bad, **part}.items():
        (tmp_path / name).write_text(text)
        files.append(tmp_path / name)
    random.Random(0).shuffle(files)

    book = Q.grade("module2", files)
    by_student = {r.student: r for r in book.rows}
    assert [r.student for r in book.rows] == ["ada", "bob", "cy", "mal", "tom"]
    assert by_student["ada"].total == pytest.approx(quiz.max_points)
    assert by_student["bob"].total == 0
    assert by_student["cy"].total == pytest.approx(expected_partial)
    assert by_student["mal"].total == pytest.approx(quiz.max_points)
    assert by_student["tom"].total == pytest.approx(quiz.max_points - quiz.questions[0].points)
    assert len(book.problems) == len(bad) and len(book.partial) == len(part)
    for name in bad:
        assert sum(str(tmp_path / name) in line for line in book.problems) == 1, name
    for name in part:
        assert sum(str(tmp_path / name) in line for line in book.partial) == 1, name
    joined = "\n".join(book.problems + book.partial)
    assert "for quiz '02_block_hashing'" in joined and "q999" in joined and "not valid JSON" in joined

    rows = list(__import__("csv").reader(book.to_csv().splitlines()))
    assert rows[0] == ["student", *(q.id for q in quiz.questions), "total", "max"]
    assert rows[1][0] == "ada" and float(rows[1][-2]) == float(rows[1][-1]) == quiz.max_points


def test_a_student_graded_twice_is_a_conflict_not_two_rows(tmp_path):
    quiz = Q.load_quiz("04_chat")
    a = write_submission(tmp_path / "a.json", "04_chat", "ada", perfect_answers(quiz))
    b = write_submission(tmp_path / "b.json", "04_chat", "Ada", wrong_answers(quiz))
    c = write_submission(tmp_path / "c.json", "04_chat", "zoe", wrong_answers(quiz))
    book = Q.grade("04_chat", [b, a, c])
    assert [r.student for r in book.rows] == ["zoe"]  # neither file is picked over the other
    assert len(book.problems) == 1 and "conflict" in book.problems[0]
    assert str(a) in book.problems[0] and str(b) in book.problems[0]


# ----------------------------------------------------------------- student copies


@pytest.mark.parametrize("path", QUIZ_FILES, ids=lambda p: p.stem)
def test_student_copy_has_no_key_and_is_still_renderable(path, tmp_path):
    keyed = Q.load_quiz(path)
    out = Q.export_student(path, tmp_path / "student.yaml")
    text = out.read_text()
    data = yaml.safe_load(text)
    assert not walk_keys(data) & set(Q.KEY_FIELDS)
    for q in keyed.questions:
        assert q.feedback not in text
        for c in q.choices:
            assert c.feedback not in text
    copy_ = Q.load_quiz(out)
    assert copy_.student_copy and not copy_.has_key
    assert [q.prompt for q in copy_.questions] == [q.prompt for q in keyed.questions]
    view = Q.build(out)
    assert view.mode == "exam"
    with pytest.raises(Q.QuizError, match="exam mode"):
        Q.build(out, mode="practice")
    with pytest.raises(Q.QuizError, match="no answer key"):
        Q.grade(out, [])
    with pytest.raises(Q.QuizError, match="already exists"):
        Q.export_student(path, out)


# ----------------------------------------------------------------- the widget


def fill(view: Q.QuizView, answers: dict[str, Any]) -> None:
    """Answer through the widgets, as a learner clicking and typing would."""
    view.fill(answers)


def test_widget_records_answers_judges_them_and_saves_a_gradable_submission(tmp_path):
    import ipywidgets

    view = Q.build("module2", student="ada")
    assert view.mode == "practice" and isinstance(view.widget, ipywidgets.VBox)
    assert view.answers() == {}
    quiz = view.quiz
    perfect = perfect_answers(quiz)
    fill(view, perfect)
    recorded = view.answers()
    assert set(recorded) == {q.id for q in quiz.questions}
    for q in quiz.questions:
        if q.type == "text":
            assert recorded[q.id] == perfect[q.id].strip()
        else:
            assert recorded[q.id] == perfect[q.id]
    for q in quiz.questions:
        view.inputs[q.id].check_button.click()
        assert "Correct" in view.inputs[q.id].feedback.value
    assert view.show_score() == (pytest.approx(quiz.max_points), quiz.max_points)

    target = tmp_path / "ada.json"
    view.path.value = str(target)
    view.save_button.click()
    assert "Saved" in view.save_status.value
    saved = json.loads(target.read_text())
    assert saved == {"quiz": "module2", "quiz_version": quiz.version, "student": "ada", "answers": recorded}
    book = Q.grade("module2", [target])
    assert not book.problems and book.rows[0].total == pytest.approx(quiz.max_points)

    # Never overwrite silently: a second save is refused until "overwrite" is ticked.
    fill(view, wrong_answers(quiz))
    view.save_button.click()
    assert "already exists" in view.save_status.value
    assert json.loads(target.read_text()) == saved
    view.overwrite.value = True
    view.save_button.click()
    assert json.loads(target.read_text())["answers"] != recorded
    assert Q.grade("module2", [target]).rows[0].total == 0


def test_widget_wrong_and_unreadable_answers_get_feedback():
    view = Q.build("module2")
    quiz = view.quiz
    wrong = wrong_answers(quiz)
    fill(view, wrong)
    for q in quiz.questions:
        result = view.check(q.id)
        assert result.answered and not result.correct
        assert "Not quite" in view.inputs[q.id].feedback.value
    numeric = next(q for q in quiz.questions if q.type == "numeric")
    view.inputs[numeric.id].control.value = "many"
    assert numeric.id not in view.answers()
    view.check(numeric.id)
    assert "not a number" in view.inputs[numeric.id].feedback.value


def test_saving_needs_a_name(tmp_path):
    view = Q.build("00_setup")
    view.path.value = str(tmp_path / "x.json")
    view.save_button.click()
    assert "enter your name" in view.save_status.value and not (tmp_path / "x.json").exists()


def test_exam_mode_records_without_judging(tmp_path, monkeypatch):
    Q.export_student("05_rag", tmp_path / "05_rag.yaml")
    monkeypatch.setenv(Q.QUIZ_DIR_ENV, str(tmp_path))
    view = Q.build("05_rag", student="bo")  # the id now resolves to the student copy
    assert view.mode == "exam"
    assert all(item.feedback.value == "" for item in view.inputs.values())
    keyed = Q.load_quiz(Path(__file__).resolve().parents[1] / "quizzes" / "05_rag.yaml")
    fill(view, perfect_answers(keyed))
    with pytest.raises(Q.QuizError):
        view.check(keyed.questions[0].id)
    out = view.save(tmp_path / "bo.json")
    book = Q.grade(keyed, [out])
    assert book.rows[0].total == pytest.approx(keyed.max_points)


def test_show_builds_headless(capsys):
    Q.show("03_live_engine")
    out = capsys.readouterr().out
    assert "Notebook 03" in out and "1." in out


# ----------------------------------------------------------------- facts checked on the real engine


def _ids(n: int, seed: int) -> list[int]:
    rng = random.Random(seed)
    return [rng.randrange(100, 1000) for _ in range(n)]


def _cached_after(llm, first: list[int], second: list[int], salts=(None, None)) -> int:
    from course_lib.engine import measure

    assert llm.reset_prefix_cache()
    measure(llm, [first], cache_salt=salts[0])
    return measure(llm, [second], cache_salt=salts[1])[0].num_cached_tokens


def _block_rule(shared: int, total: int, block: int) -> int:
    """Cached tokens by the rule the quizzes teach: whole shared blocks, capped at total - 1."""
    return min(shared, total - 1) // block * block


def test_numeric_cache_answers_match_the_real_engine(llm):
    block = llm.llm_engine.vllm_config.cache_config.block_size
    assert block == 32
    answer = {
        (quiz_id, q.id): q.answer
        for quiz_id in ("00_setup", "02_block_hashing", "03_live_engine", "04_chat", "05_rag", "module2")
        for q in Q.load_quiz(quiz_id).questions
        if q.type == "numeric"
    }

    p96, p64, p200, system, shared = _ids(96, 2), _ids(64, 3), _ids(200, 10), _ids(1000, 4), _ids(150, 7)
    # (question, first prompt, second prompt, salts, shared tokens, the engine's answer by the block rule)
    cases = [
        (("00_setup", "repeated_prompt"), _ids(924, 11), _ids(924, 11), (None, None), 924),  # notebook 00's 924 tokens
        (("02_block_hashing", "exact_resubmit"), p96, p96, (None, None), 96),
        (("module2", "aligned_resubmit"), p64, p64, (None, None), 64),
        (("03_live_engine", "second_request_cached"), system + _ids(50, 5), system + _ids(50, 6), (None, None), 1000),
        (("05_rag", "shared_prefix"), shared + _ids(40, 8), shared + _ids(40, 9), (None, None), 150),
        (("04_chat", "salted_hit"), p200, p200, ("tenant-a", "tenant-b"), 0),
        (None, p200, p200, ("tenant-a", "tenant-a"), 200),
    ]
    for key, first, second, salts, n_shared in cases:
        cached = _cached_after(llm, first, second, salts)
        assert cached == _block_rule(n_shared, len(second), block), key
        if key:
            assert cached == answer[key], key

    # Two short text prompts (a common drawing of prefix caching): through the engine's own tokenizer.
    from course_lib.engine import measure, prompt_token_ids

    hi, hello = "System: You are helpful. User: Hi", "System: You are helpful. User: Hello"
    question = Q.load_quiz("02_block_hashing").question("hi_hello")
    counts = [len(prompt_token_ids(llm, p)) for p in (hi, hello)]
    assert max(counts) < block and f"shorter than {block} tokens" in question.prompt
    assert llm.reset_prefix_cache()
    assert [r.num_cached_tokens for r in measure(llm, [hi, hello])] == [0, question.answer]

    # The GPU questions use block size 16, which the CPU backend cannot run: the rule, checked
    # on the engine above (and at block size 64 below), gives their answers.
    assert _block_rule(1000, 1000, 16) == answer[("module2", "gpu_resubmit")]
    shared_total = 1050 + 2 * (1050 - _block_rule(1000, 1050, 16))
    assert shared_total == answer[("module2", "system_prompt_totals")]


def test_block_size_16_answers_match_the_simulator():
    """Block size 16 cannot run on CPU; course_lib.simulator (tested against vLLM) replays it."""
    from course_lib.simulator import PrefixCacheSimulator

    answer = {q.id: q.answer for q in Q.load_quiz("module2").questions if q.type == "numeric"}
    sim = PrefixCacheSimulator(num_gpu_blocks=1024, block_size=16)
    prompt = _ids(1000, 30)
    sim.process(prompt)
    assert sim.process(prompt) == answer["gpu_resubmit"]

    sim = PrefixCacheSimulator(num_gpu_blocks=1024, block_size=16)
    system = _ids(1000, 31)
    requests = [system + _ids(50, 32 + i) for i in range(3)]
    prefilled = sum(len(r) - sim.process(r) for r in requests)
    assert prefilled == answer["system_prompt_totals"]


def test_block_rule_holds_at_block_size_64():
    from course_lib.engine import close_llm, make_llm

    engine = make_llm(block_size=64)
    try:
        for n, shared_n in ((100, 100), (128, 128), (300, 200)):
            a = _ids(n, n)
            b = a[:shared_n] + _ids(n - shared_n, n + 1)
            assert _cached_after(engine, a, b) == _block_rule(shared_n, n, 64)
    finally:
        close_llm(engine)


def test_config_and_metric_answers_match_the_real_engine(llm):
    import dataclasses

    from vllm.config.cache import CacheConfig

    defaults = {f.name: f.default for f in dataclasses.fields(CacheConfig)}
    module2 = Q.load_quiz("module2")
    assert defaults["enable_prefix_caching"] is True
    assert module2.question("default_hash").accept == (defaults["prefix_caching_hash_algo"],)
    assert Q.load_quiz("02_block_hashing").question("default_algo").accept[0] == defaults["prefix_caching_hash_algo"]

    from course_lib.engine import measure

    measure(llm, [_ids(40, 20)])
    names = {m.name for m in llm.get_metrics()}
    q = module2.question("metric_names")
    for choice in q.choices:
        exists = choice.text.removesuffix("_total") in names and choice.text.endswith("_total")
        assert exists == choice.correct, choice.text
    preempt = module2.question("preemption_metric").accept[0]
    assert preempt.removesuffix("_total") in names
    assert not any("hit_rate" in n for n in names), "V1 has no hit-rate metric"
    # The Prometheus text format adds _total to counters: check it with prometheus_client itself.
    from prometheus_client import CollectorRegistry, Counter, generate_latest

    registry = CollectorRegistry()
    Counter("vllm:prefix_cache_hits", "h", registry=registry).inc()
    assert "vllm:prefix_cache_hits_total 1.0" in generate_latest(registry).decode()



@pytest.mark.parametrize(
    "quiz_id, qid, order",
    [("06_metrics", "hit_rate_delta", ("q0", "h0", "q1", "h1")), ("module2", "hit_rate_numbers", ("q0", "q1", "h0", "h1"))],
)
def test_hit_rate_answers_match_the_course_metrics_code(quiz_id, qid, order):
    """The counter values in the prompt, turned into real Prometheus text and read back by
    course_lib.metrics (prometheus_client's parser), give the quiz's answer."""
    import re

    from prometheus_client import CollectorRegistry, Counter, generate_latest

    from course_lib.metrics import parse_metrics, prefix_cache_hit_rate

    question = Q.load_quiz(quiz_id).question(qid)
    numbers = dict(zip(order, map(int, re.findall(r"\b\d{3,}\b", question.prompt))))
    assert len(numbers) == 4

    def snapshot(queries: int, hits: int):
        registry = CollectorRegistry()
        Counter("vllm:prefix_cache_queries", "queried tokens", registry=registry).inc(queries)
        Counter("vllm:prefix_cache_hits", "cached tokens", registry=registry).inc(hits)
        return parse_metrics(generate_latest(registry).decode())

    result = prefix_cache_hit_rate(snapshot(numbers["q0"], numbers["h0"]), snapshot(numbers["q1"], numbers["h1"]))
    assert Q.judge(question, result.rate).correct


# ----------------------------------------------------------------- validation in one run, versions, widget input


def test_validate_reports_every_problem_at_once_with_line_numbers(tmp_path):
    path = tmp_path / "real_name.yaml"
    path.write_text(
        "id: other_name\n"  # 1: differs from the file name
        "title: T\n"
        "title: T again\n"  # 3: duplicate key (plain YAML keeps the last silently)
        "questions:\n"
        "  - id: a\n"
        "    type: numeric\n"
        "    prompt: p\n"
        "    answer: 3\n"
        "    tolerance: .inf\n"  # 9: infinite tolerance accepts every answer
        "    feedback: f\n"
        "  - id: b\n"
        "    type: numeric\n"
        "    prompt: p\n"
        "    answer: .nan\n"  # 14: NaN answer
        "    feedback: f\n"
        "  - id: c\n"
        "    type: single\n"
        "    prompt: p\n"
        "    choices:\n"
        "      - {text: x, correct: true, feedback: f}\n"
        "      - {text: y, correct: false}\n"  # 21: no feedback (schema); 16: no question feedback
    )
    problems = Q.check_quiz_file(path)
    joined = "\n".join(problems)
    expected = {
        1: "differs from the file name",
        3: "duplicate key 'title'",
        9: "tolerance must be a finite number",
        14: "answer must be a finite number",
        21: "'feedback' is a required property",
    }
    for line, text in expected.items():
        assert any(p.startswith(f"line {line}:") and text in p for p in problems), (line, text, joined)
    with pytest.raises(Q.QuizError) as err:
        Q.load_quiz(path)
    assert all(text in str(err.value) for text in expected.values())


def test_validate_cli_prints_file_and_line(tmp_path, capsys):
    from course_lib.cli import main

    path = tmp_path / "q.yaml"
    path.write_text("id: q\ntitle: T\nquestions: []\nquestions: []\n")
    assert main(["quiz", "validate", str(path)]) == 1
    out = capsys.readouterr().out
    assert f"{path}:4: duplicate key 'questions'" in out and "[FAIL]" in out


def test_version_is_a_content_hash_and_the_student_copy_keeps_it(tmp_path):
    quiz = Q.load_quiz("module2")
    assert len(quiz.version) == 12
    copy_ = Q.load_quiz(Q.export_student(quiz, tmp_path / "module2.yaml"))
    assert copy_.version == quiz.version and not copy_.has_key
    # Layout (comments, key order) does not change the version; content does.
    data = load_raw(REPO / "quizzes" / "module2.yaml")
    relaid = tmp_path / "relaid" / "module2.yaml"
    relaid.parent.mkdir()
    relaid.write_text("# a comment\n" + yaml.safe_dump(data, sort_keys=True))
    assert Q.load_quiz(relaid).version == quiz.version
    data["questions"][0]["prompt"] += " (edited)"
    relaid.write_text(yaml.safe_dump(data))
    assert Q.load_quiz(relaid).version != quiz.version


def test_grading_against_a_changed_quiz_warns(tmp_path):
    quiz = Q.load_quiz("module2")
    view = Q.build(quiz, student="ada")
    fill(view, perfect_answers(quiz))
    sub = view.save(tmp_path / "ada.json")
    assert Q.grade(quiz, [sub]).warnings == []
    data = load_raw(REPO / "quizzes" / "module2.yaml")
    data["questions"][0]["choices"].reverse()  # the same question, choices in another order: answers now mean other choices
    changed = tmp_path / "key" / "module2.yaml"
    changed.parent.mkdir()
    changed.write_text(yaml.safe_dump(data))
    book = Q.grade(changed, [sub])
    assert len(book.rows) == 1 and len(book.warnings) == 1
    assert quiz.version in book.warnings[0] and Q.load_quiz(changed).version in book.warnings[0]


@pytest.mark.parametrize(
    "typed, value",
    [("0,75", 0.75), ("0.75", 0.75), ("1024", 1024), ("1 024", 1024), ("1,024.5", 1024.5), ("1.024,5", 1024.5),
     ("1,024,000", 1024000), ("-2,5", -2.5), (",5", 0.5), ("3e2", 300), ("0,750", 0.75)],
)  # fmt: skip
def test_typed_numbers_accept_a_decimal_comma(typed, value):
    assert Q.parse_number(typed) == pytest.approx(value)


@pytest.mark.parametrize("typed, reason", [("1,024", "ambiguous"), ("abc", "not a number"), ("1e999", "out of range"),
                                           ("1,2,3", "not a number"), ("1.2.3", "not a number")])  # fmt: skip
def test_unreadable_or_ambiguous_numbers_are_refused_with_a_reason(typed, reason):
    with pytest.raises(ValueError, match=reason):
        Q.parse_number(typed)


def test_widget_reads_a_decimal_comma_and_explains_an_ambiguous_number():
    quiz = Q.load_quiz("module2")
    q = next(q for q in quiz.questions if q.type == "numeric" and not float(q.answer).is_integer())
    view = Q.build(quiz)
    view.inputs[q.id].control.value = f"{q.answer}".replace(".", ",")
    assert view.answers()[q.id] == pytest.approx(q.answer)
    assert view.check(q.id).correct
    view.inputs[q.id].control.value = "1,024"
    assert q.id not in view.answers()
    view.check(q.id)
    assert "ambiguous" in view.inputs[q.id].feedback.value


def test_the_packaged_quizzes_are_the_keyless_copies_of_quizzes_dir():
    """course_lib/data/quizzes/ is what the wheel ships: exactly the student copies of quizzes/, no key."""
    keyed = {p.stem: Q.load_quiz(p) for p in QUIZ_FILES}
    packaged = {p.stem: p for p in sorted(Q.PACKAGED_QUIZ_DIR.glob("*.yaml"))}
    stale = sorted(set(keyed) ^ set(packaged)) + sorted(
        k for k in set(keyed) & set(packaged) if packaged[k].read_text(encoding="utf-8") != Q.student_copy_text(keyed[k])
    )
    assert not stale, f"packaged quiz copies out of date: {stale}; run `.venv/bin/course quiz sync-package`"
    for path in packaged.values():
        assert not walk_keys(load_raw(path)) & set(Q.KEY_FIELDS)


def test_outside_a_checkout_quizzes_come_from_the_package_in_exam_mode(monkeypatch, tmp_path):
    import importlib

    schema = importlib.import_module("course_lib.quiz.schema")  # the module (quiz.schema is the JSON Schema function)
    monkeypatch.delenv(Q.QUIZ_DIR_ENV, raising=False)
    monkeypatch.chdir(REPO / "notebooks")  # inside the course project: its quizzes/ (a notebook's kernel)
    assert Q.quiz_dir_origin() == (REPO / "quizzes", f"the course project in {REPO}, the current directory")
    monkeypatch.chdir(tmp_path)  # elsewhere: the checkout the package runs from, said so
    assert Q.quiz_dir() == REPO / "quizzes" and "not in a course project" in Q.quiz_dir_origin()[1]
    monkeypatch.setattr(schema, "checkout_quiz_dir", lambda: None)  # as in an installed wheel (tests/test_wheel.py)
    assert Q.quiz_dir() == Q.PACKAGED_QUIZ_DIR
    view = Q.build("02_block_hashing")
    assert view.mode == "exam" and not view.quiz.has_key


# ----------------------------------------------------------------- quiz quality (issue 14's rules)

#: The quizzes written under the rules below (01 and 07 are checked by their own test files).
RULED = NOTEBOOK_QUIZZES + ["module2"]


def _single_ranks() -> list[tuple[str, int, int, int]]:
    """(question, length rank of the correct choice among distinct lengths from the top, #choices, #tied)."""
    out = []
    for quiz_id in RULED:
        for q in Q.load_quiz(quiz_id).questions:
            if q.type == "single":
                lengths = [len(c.text) for c in q.choices]
                right = lengths[next(i for i, c in enumerate(q.choices) if c.correct)]
                out.append((f"{quiz_id}/{q.id}", right, max(lengths), min(lengths), len(lengths)))
    return out


def test_the_longest_or_shortest_choice_is_not_a_tell():
    """The correct choice is the longest in at most a fair share (sum of 1/choices) of the single-choice
    questions, and the shortest no more often: a test-wise learner gains nothing from lengths."""
    rows = _single_ranks()
    fair = sum(1 / n for *_, n in rows)
    longest = [name for name, right, hi, lo, n in rows if right == hi]
    shortest = [name for name, right, hi, lo, n in rows if right == lo]
    assert len(longest) <= round(fair + 0.5), (len(longest), fair, longest)
    assert len(shortest) <= round(fair + 0.5), (len(shortest), fair, shortest)


def test_no_question_shows_a_text_answer_of_another():
    """A text answer (what a learner must recall) never appears in another question's prompt or choices,
    where a learner could copy it (module2 once offered the preemption counter as a choice, and 00 named
    `num_cached_tokens` in another prompt)."""
    for path in QUIZ_FILES:
        quiz = Q.load_quiz(path)
        for q in quiz.questions:
            for answer in q.accept:
                for other in quiz.questions:
                    if other.id != q.id:
                        shown = " ".join([other.prompt, *(c.text for c in other.choices)]).casefold()
                        assert answer.casefold() not in shown, (quiz.id, q.id, other.id, answer)


def test_at_least_half_of_the_questions_need_a_computation_or_prediction():
    skills = [load_raw(REPO / "quizzes" / f"{quiz_id}.yaml")["questions"] for quiz_id in RULED]
    tagged = [q.get("skill") for qs in skills for q in qs]
    assert None not in tagged, "every question of the ruled quizzes says what it asks (skill)"
    assert sum(s in ("compute", "predict") for s in tagged) * 2 >= len(tagged)


def _sim_cached(first: int, second: int, shared: int, block: int, *, aligned_first: bool = True) -> int:
    """num_cached_tokens of a ``second``-token prompt sharing its first ``shared`` tokens with a
    ``first``-token prompt that ran just before, replayed by course_lib's simulator (tested
    request for request against vLLM in tests/test_simulator.py)."""
    from course_lib.simulator import PrefixCacheSimulator

    a = _ids(first, 1000 + first)
    b = a[:shared] + _ids(second - shared, 2000 + second)
    sim = PrefixCacheSimulator(num_gpu_blocks=4096, block_size=block)
    sim.process(a)
    return sim.process(b)


def _system_prompt_scenario(block: int) -> "object":
    """Three requests sharing a 1000-token system prompt, each with its own 50-token question, in the simulator."""
    from course_lib.simulator import PrefixCacheSimulator

    system = _ids(1000, 40)
    sim = PrefixCacheSimulator(num_gpu_blocks=4096, block_size=block)
    cached = [sim.process(system + _ids(50, 41 + i)) for i in range(3)]
    return sim, cached


def _rag(preamble: int, chunks: list[list[int]], question: int, seed: int) -> list[int]:
    return _ids(preamble, 50) + [t for c in chunks for t in c] + _ids(question, seed)


def _computed_answers() -> dict[tuple[str, str], float]:
    """Every computed answer, from course_lib (simulator, metrics), never typed."""
    from course_lib.kv_cache import kv_bytes_per_token
    from course_lib.simulator import PrefixCacheSimulator, expected_cached_tokens

    shared_sim, shared_cached = _system_prompt_scenario(32)
    shared_prompt_tokens = 3 * 1050
    a, b, c = _ids(100, 61), _ids(100, 62), _ids(100, 63)
    unsorted = PrefixCacheSimulator(num_gpu_blocks=4096, block_size=32)
    unsorted.process(_rag(40, [a, b, c], 20, 64))
    canonical = PrefixCacheSimulator(num_gpu_blocks=4096, block_size=32)
    canonical.process(_rag(40, sorted([a, b, c]), 20, 64))
    question_first = PrefixCacheSimulator(num_gpu_blocks=4096, block_size=32)
    context = _ids(1000, 65)
    question_first.process(_ids(20, 66) + context)
    timestamped = PrefixCacheSimulator(num_gpu_blocks=4096, block_size=32)
    system = _ids(600, 67)
    timestamped.process(system[:10] + [1] + system[11:] + _ids(20, 68))
    salted = PrefixCacheSimulator(num_gpu_blocks=4096, block_size=32)
    p200 = _ids(200, 69)
    salted.process(p200, cache_salt="tenant-a")
    return {
        ("00_setup", "short_resubmit"): _sim_cached(33, 33, 33, 32),
        ("00_setup", "extended_prompt"): _sim_cached(100, 120, 70, 32),
        ("00_setup", "below_one_block"): _sim_cached(31, 31, 31, 32),
        ("02_block_hashing", "diverge_mid_block"): _sim_cached(100, 130, 90, 32),
        ("02_block_hashing", "diverge_block16"): _sim_cached(100, 130, 90, 16),
        ("02_block_hashing", "one_block_resubmit"): _sim_cached(32, 32, 32, 32),
        ("02_block_hashing", "partial_first"): _sim_cached(50, 100, 50, 32),
        ("03_live_engine", "ideal_bound"): round(shared_prompt_tokens / (shared_prompt_tokens - sum(shared_cached)), 2),
        ("03_live_engine", "block_64"): _system_prompt_scenario(64)[1][1],
        ("03_live_engine", "warm_hit"): _sim_cached(500, 540, 500, 32),
        ("03_live_engine", "aligned_1024"): _sim_cached(1024, 1024, 1024, 32),
        ("04_chat", "turn2_cached"): _sim_cached(300, 370, 300, 32),
        ("04_chat", "same_salt"): salted.process(p200, cache_salt="tenant-a"),
        ("04_chat", "timestamp_in_block0"): timestamped.process(system[:10] + [2] + system[11:] + _ids(20, 70)),
        ("04_chat", "stable_system"): _sim_cached(620, 630, 600, 32),
        ("05_rag", "question_first"): question_first.process(_ids(20, 71) + context),
        ("05_rag", "unsorted_chunks"): unsorted.process(_rag(40, [c, a, b], 20, 72)),
        ("05_rag", "sorted_chunks"): canonical.process(_rag(40, sorted([c, a, b]), 20, 72)),
        ("06_metrics", "token_weighted"): round((960 + 0) / (1000 + 100), 2),
        ("06_metrics", "hits_increase"): shared_sim.stats.hits,
        ("06_metrics", "queries_increase"): shared_sim.stats.queries,
        ("module2", "unaligned_resubmit"): _sim_cached(130, 130, 130, 32),
        ("module2", "aligned_block64"): _sim_cached(128, 128, 128, 64),
        ("module2", "system_prompt_hit_rate"): round(shared_sim.stats.hit_rate, 2),
        ("module2", "half_shared_block16"): _sim_cached(1000, 1000, 500, 16),
        # 09: the tier is asked from block 0 once the local cache is reset, under the same n-1 cap.
        ("09_second_tier", "tier_after_reset"): expected_cached_tokens(_ids(330, 91), _ids(330, 91), 32),
        ("09_second_tier", "block_bytes"): 32 * kv_bytes_per_token(
            {"num_hidden_layers": 30, "num_attention_heads": 9, "num_key_value_heads": 3, "head_dim": 64}, "bfloat16"
        ),
    }


def test_computed_answers_come_from_course_lib():
    computed = _computed_answers()
    tagged = {(quiz_id, q["id"]) for quiz_id in RULED for q in load_raw(REPO / "quizzes" / f"{quiz_id}.yaml")["questions"]
              if q.get("skill") in ("compute", "predict") and q["type"] == "numeric"}  # fmt: skip
    checked_elsewhere = {("00_setup", "repeated_prompt"), ("02_block_hashing", "exact_resubmit"), ("02_block_hashing", "hi_hello"),
                         ("03_live_engine", "second_request_cached"), ("04_chat", "salted_hit"), ("05_rag", "shared_prefix"),
                         ("06_metrics", "hit_rate_delta"), ("module2", "hit_rate_numbers"), ("module2", "aligned_resubmit"),
                         ("module2", "gpu_resubmit"), ("module2", "system_prompt_totals"),
                         # computed in tests/test_quiz_01_kv_cache.py and tests/test_quiz_07_fleet.py
                         ("01_kv_cache", "bytes_per_token"), ("01_kv_cache", "blocks_in_budget"),
                         ("07_fleet", "capped_block"), ("07_fleet", "fleet_rate"), ("07_fleet", "imbalance"),
                         ("07_fleet", "kv_cost"),
                         # computed in tests/test_diagnose.py (test_quiz_08_computed_answers_come_from_course_lib)
                         ("08_troubleshooting", "seconds_at_top"), ("08_troubleshooting", "junction_block"),
                         ("08_troubleshooting", "hybrid_unit"), ("08_troubleshooting", "eagle_drop"),
                         ("08_troubleshooting", "restart_rate")}  # fmt: skip
    assert tagged - checked_elsewhere <= set(computed), tagged - checked_elsewhere - set(computed)
    for (quiz_id, qid), value in computed.items():
        q = Q.load_quiz(quiz_id).question(qid)
        if q.type == "numeric":
            assert Q.judge(q, value).correct, (quiz_id, qid, value, q.answer)
        else:  # a single-choice computation: the correct choice states the computed number first
            correct = next(c for c in q.choices if c.correct)
            assert correct.text.split(":")[0].split()[0] == str(value), (quiz_id, qid, value, correct.text)
    # The token-weighted rate is what course_lib.metrics computes from real counters, not the share of requests.
    from course_lib.simulator import PrefixCacheSimulator

    sim = PrefixCacheSimulator(num_gpu_blocks=4096, block_size=32)
    long_prompt = _ids(1000, 80)
    sim.process(long_prompt[:960] + _ids(40, 81))
    sim.reset_stats()
    assert sim.process(long_prompt) == 960 and sim.process(_ids(100, 82)) == 0
    assert round(sim.stats.hit_rate, 2) == computed[("06_metrics", "token_weighted")]


def test_tokens_and_blocks_choice_matches_the_block_arithmetic():
    from course_lib.simulator import full_block_tokens

    q = Q.load_quiz("00_setup").question("tokens_and_blocks")
    correct = next(c for c in q.choices if c.correct).text
    blocks, hashed = -(-100 // 32), full_block_tokens(100, 32) // 32
    assert correct.startswith(f"{blocks} blocks") and f"only the {hashed} full" in correct


def test_saved_quiz_output_says_to_run_the_cell():
    """Without a kernel (GitHub, nbviewer) the quiz output explains itself, then lists its questions."""
    view = Q.build("02_block_hashing")
    plain = view._repr_mimebundle_()["text/plain"]
    assert plain.startswith("Quiz: an interactive widget. Run the cell")
    assert view.quiz.questions[0].prompt.split()[0] in plain
