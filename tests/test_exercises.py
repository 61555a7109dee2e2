"""Tests of course_lib.exercises: a wrong answer gets the method, never the expected value;
hints come only on request, in levels, and still do not state the value."""

from __future__ import annotations

import re

from course_lib import exercises
from course_lib.exercises import ExerciseResult, nb02, verdict
from course_lib.simulator import PrefixCacheSimulator


def _numbers(text: str) -> set[int]:
    return {int(x) for x in re.findall(r"\d+", text)}


def test_result_keeps_its_three_field_form():
    r = ExerciseResult("x.1", False, "msg")
    assert (r.exercise, r.ok, r.message, r.hints) == ("x.1", False, "msg", ())
    assert not r and str(r).endswith("[x.1]: Msg")
    assert "no hints" in r.hint()


def test_hints_are_given_level_by_level_only_on_request(capsys):
    r = verdict("9.9 demo", False, "", "wrong method", ("first rule", "second step", "third step"))
    assert "first rule" not in str(r) and "hint('9.9')" in str(r)
    assert "first rule" in r.hint(1) and "second step" not in r.hint(1)
    assert "second step" in r.hint(2) and "third step" not in r.hint(2)
    assert "third step" in r.hint(99)
    exercises.hint("9.9", 2)
    out = capsys.readouterr().out
    assert "second step" in out and "third step" not in out and "hint('9.9', 3)" in out
    ok = verdict("9.9 demo", True, "yes", "no", ("h",))
    assert ok and ok.hints == ()
    exercises.hint("9.9")
    assert "no hints" in capsys.readouterr().out


def test_wrong_prediction_does_not_reveal_the_expected_value():
    # An answer that is off by one block on every case: the expected value must appear nowhere.
    def off_by_one_block(first, first_output, second, block_size):
        sim = PrefixCacheSimulator(1000, block_size)
        sim.process(first, first_output)
        return sim.process(second) + block_size

    r = nb02.check_predict_cached(off_by_one_block, 32)
    assert not r.ok
    case_first_expected = 64  # the first case: identical 96-token prompts, the cap drops one block
    sim = PrefixCacheSimulator(1000, 32)
    sim.process(list(range(96)))
    assert sim.process(list(range(96))) == case_first_expected
    text = str(r) + r.hint(99)
    assert case_first_expected not in _numbers(text)


def test_eviction_check_names_the_request_not_the_value():
    _, _, requests = nb02.eviction_exercise()
    r = nb02.check_eviction([999] * len(requests))
    assert not r.ok and "999" in r.message
    assert r.hint(9).count("hint") >= 2


def test_unanswered_exercise_is_a_verdict_not_a_traceback(capsys):
    @exercises.exercise("9.7", "demo", hints=("count the full blocks",))
    def check(value, fn=None):
        if fn is not None:
            value = fn()
        return verdict("9.7 demo", value == 64, "yes", "no")

    def unwritten():
        raise NotImplementedError("write this function")

    for result in (check(...), check([1, ...]), check({"a": ...}), check(0, fn=unwritten)):
        assert not result.ok and "9.7" in str(result) and "Traceback" not in str(result)
    assert "no answer yet" in str(check(...)).lower() and "NotImplementedError" in str(check(0, fn=unwritten))
    assert check(64).ok and not check(63).ok
    # The general hints are there before any try, and a wrong answer's own hints replace them.
    exercises.hint("9.7")
    assert "count the full blocks" in capsys.readouterr().out
    # A cell that uses an unsolved answer says which exercise to do, and does not raise.
    assert exercises.solved("9.7", 64) and not exercises.solved("9.7", ...)
    assert "solve exercise 9.7 first" in capsys.readouterr().out


def test_messages_read_as_sentences():
    r = verdict("9.6 demo", False, "", "you predicted 3. the rule is e.g. a block. see kv_cache_utils.py ... then retry")
    assert str(r).endswith("[9.6 demo]: You predicted 3. The rule is e.g. a block. See kv_cache_utils.py ... then retry")


def _scrape(queries: int, hits: int, t: float):
    from course_lib.metrics import parse_metrics

    text = (
        "# TYPE vllm:prefix_cache_queries counter\n"
        f'vllm:prefix_cache_queries_total{{engine="0",model_name="m"}} {queries}\n'
        "# TYPE vllm:prefix_cache_hits counter\n"
        f'vllm:prefix_cache_hits_total{{engine="0",model_name="m"}} {hits}\n'
    )
    return parse_metrics(text, timestamp=t)


def test_06_1_weighs_periods_by_their_queries_and_names_the_averaging_slip():
    from course_lib.exercises import nb06

    # Period 1: 900 of 1000 queried tokens cached (90%); period 2: 10 of 100 (10%). Together: 910 / 1100.
    a, b, c = _scrape(0, 0, 0.0), _scrape(1000, 900, 1.0), _scrape(1100, 910, 2.0)

    def summed(intervals):
        q = sum(y.value("vllm:prefix_cache_queries_total") - x.value("vllm:prefix_cache_queries_total") for x, y in intervals)
        h = sum(y.value("vllm:prefix_cache_hits_total") - x.value("vllm:prefix_cache_hits_total") for x, y in intervals)
        return h / q if q else None

    def averaged(intervals):
        rates = [summed([pair]) for pair in intervals]
        return None if None in rates else sum(rates) / len(rates)

    good = nb06.check_hit_rate(summed, a, b, c)
    assert good.ok and f"{910 / 1100:.1%}" in str(good)
    bad = nb06.check_hit_rate(averaged, a, b, c)
    assert not bad.ok and "averaged" in bad.hint(1) and f"{910 / 1100:.1%}" not in str(bad) + bad.hint(9)
    zero = nb06.check_hit_rate(lambda iv: summed(iv) or 0.0, a, b, c)
    assert not zero.ok and "idle" in str(zero)
    assert "no answer yet" in str(nb06.check_hit_rate(..., a, b, c)).lower()


def test_04_1_is_measured_on_the_engine_and_a_wrong_guess_keeps_the_value_hidden(fresh_llm):
    """Exercise 04.1: a history trimmed by the application; the answer is the whole blocks the new
    prompt shares with an earlier one (computed here from token ids, measured by the check)."""
    from course_lib.chat import ChatSession, block_size_of, common_prefix_len
    from course_lib.exercises import nb04

    bs = block_size_of(fresh_llm)
    s = ChatSession(fresh_llm, "You are a careful Python tutor. Answer briefly and show code. " * 8)
    for q in ("What is a list?", "And a tuple?", "And a set?"):
        s.chat(q, reply="A container.")
    s.history = s.history[2:]  # the oldest turn dropped
    nxt = s.build_prompt("And a dict?")
    right = max(common_prefix_len(p, nxt) // bs * bs for p in s.prompts)
    s.chat("And a dict?", reply="A mapping.")
    assert right > 0 and s.stats[-1].num_cached_tokens == right
    assert nb04.check_turn_prediction(s, right).ok
    naive = len(s.prompts[-2]) // bs * bs  # "the previous prompt's full blocks": wrong once the history is trimmed
    wrong = nb04.check_turn_prediction(s, naive)
    assert naive != right and not wrong.ok and right not in _numbers(str(wrong) + wrong.hint(9))
    assert "no answer yet" in str(nb04.check_turn_prediction(s, ...)).lower()


def test_05_1_wants_the_shared_document_first_and_hash_order_is_not_enough(llm):
    from collections import Counter

    from course_lib.exercises import nb05
    from course_lib.rag import SAMPLE_CHUNKS, canonicalize

    best, ranking = nb05.best_fixed_order_reuse(llm)
    assert ranking[0] == "blocks"  # the document every query retrieved
    counts = Counter(SAMPLE_CHUNKS[k] for keys in nb05.RETRIEVED for k in keys)
    good = nb05.check_chunk_order(llm, lambda cs: sorted(cs, key=lambda c: (-counts[c], c)))
    assert good.ok, str(good)
    by_hash = nb05.check_chunk_order(llm, canonicalize)  # one order per set, but the shared document may not lead
    assert not by_hash.ok and best not in _numbers(str(by_hash) + by_hash.hint(9))
    assert not nb05.check_chunk_order(llm, lambda cs: list(cs)).ok  # arrival order: not one order per set

    def unwritten(chunks):
        raise NotImplementedError

    assert "NotImplementedError" in str(nb05.check_chunk_order(llm, unwritten))


def test_01_1_expects_what_the_generation_loops_feed_the_model():
    """Exercise 01.1's expected counts are what notebook 01's two loops feed the model, counted here by running
    loops of the same shape, and a slip is named without the expected value."""
    from course_lib.exercises import nb01

    def fed(prompt: int, n: int, cached: bool) -> int:
        tokens, new, total = list(range(prompt)), list(range(prompt)), 0
        for _ in range(n):
            total += len(new) if cached else len(tokens)
            tokens.append(-1)
            new = tokens[-1:]
        return total

    right = (fed(200, 100, False), fed(200, 100, True))
    assert nb01.check_positions_computed(*right, prompt_tokens=200, new_tokens=100).ok
    slip = nb01.check_positions_computed(200 * 100, right[1] + 1, prompt_tokens=200, new_tokens=100)
    assert not slip.ok and not {right[0], right[1]} & _numbers(str(slip) + slip.hint(9))
    assert "not yet" in str(nb01.check_positions_computed(..., ..., prompt_tokens=200, new_tokens=100))


def test_07_1_prices_replicas_as_vllm_router_does():
    """Exercise 07.1: the check's cost is vllm-router 0.1.17's MultiplicativeScorer, written out here from
    src/policies/kv_aware.rs; a cost that forgets the queue or the running count is refused, and a wrong pick
    is refused without the costs being revealed."""
    from course_lib.exercises import nb07

    def cost(p, c, q, r):
        return (p - c + q) * (r + 1)

    scenario = [(448, 1300, 3), (0, 0, 1)]
    assert cost(464, *scenario[0]) == 5264 and cost(464, *scenario[1]) == 928  # the cold replica is cheaper
    assert nb07.check_router_cost(cost, 1, 464, scenario).ok
    wrong_pick = nb07.check_router_cost(cost, 0, 464, scenario)
    assert not wrong_pick.ok and not {5264, 928} & _numbers(str(wrong_pick) + wrong_pick.hint(9))
    assert not nb07.check_router_cost(lambda p, c, q, r: (p - c) * (r + 1), 1, 464, scenario).ok  # queue forgotten
    assert not nb07.check_router_cost(lambda p, c, q, r: p - c + q, 1, 464, scenario).ok  # load forgotten
    assert nb07.check_router_cost(cost, 0, 464, [(448, 0, 3), (0, 0, 1)]).ok  # nothing queued: the prefix wins
    assert "not yet" in str(nb07.check_router_cost(cost, ..., 464, scenario))

    def unwritten(p, c, q, r):
        raise NotImplementedError

    assert "not yet" in str(nb07.check_router_cost(unwritten, 1, 464, scenario))
