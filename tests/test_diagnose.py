"""course_lib.diagnose and ``course diagnose`` against the real engine, a live server and the real CLI.

``cached_tokens`` is checked against the engine's own ``num_cached_tokens`` (A sent to an
engine with an empty cache, then B), for a pair of every cause; the cause of each pair is
known from how the pair was built. Every kind of bad input goes through the real command
in a subprocess: one line on stderr, exit status 2, no traceback.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

from course_lib.chat import chatml_template
from course_lib.diagnose import CAUSES, diagnose_metrics, diagnose_prompts, load_scrape, to_token_ids
from course_lib.engine import CourseError, block_size, run_one
from course_lib.metrics import NUM_PREEMPTIONS, PREFIX_CACHE_QUERIES, parse_metrics, scrape
from course_lib.model import course_tokenizer
from course_lib.server import chat_requests, free_port, send_chat

RULES = (
    "You are the assistant of a bicycle shop in the city centre. Answer in two short sentences, politely, and only "
    "about the shop. We sell city bikes, folding bikes, helmets, lights and locks, and we repair every brand."
)
SYSTEM = [{"role": "system", "content": RULES}]
REASONING = "<think>The customer asks about opening hours. Our hours are nine to six on weekdays.</think>"


def _pairs() -> dict[str, dict]:
    """One (A, B, salts, template) pair per cause, built so that the cause is known."""
    return {
        "identical": dict(a=RULES, b=RULES),
        "different_salt": dict(a=RULES, b=RULES, salt_a="tenant-a", salt_b="tenant-b"),
        "template_rewrite": dict(
            a=SYSTEM + [{"role": "user", "content": "When do you open?"},
                        {"role": "assistant", "content": REASONING + "We open at nine."}],
            b=SYSTEM + [{"role": "user", "content": "When do you open?"},
                        {"role": "assistant", "content": REASONING + "We open at nine."},
                        {"role": "user", "content": "And on Sunday?"}],
            chat_template=chatml_template(strip_reasoning=True),
        ),  # fmt: skip
        "tokenisation_or_whitespace": dict(a=RULES + " Question: ", b=RULES + " Question: do you sell electric bikes?"),
        "differs_in_first_block": dict(a="Today is 2026-12-03. " + RULES, b="Today is 2026-12-04. " + RULES),
        "short_common_prefix": dict(a="Be brief. What is a derailleur?", b="Be brief. How do I fix a flat tyre at home?"),
        "long_shared_prefix": dict(a=RULES + " Question: do you rent bikes?", b=RULES + " Question: what does a lock cost?"),
    }


PAIRS = _pairs()


def test_the_pairs_cover_every_cause():
    assert set(PAIRS) == set(CAUSES)


@pytest.mark.parametrize("cause", list(PAIRS))
def test_cached_tokens_match_the_engine(fresh_llm, cause):
    pair = PAIRS[cause]
    tok, template = fresh_llm.get_tokenizer(), pair.get("chat_template")
    d = diagnose_prompts(pair["a"], pair["b"], block_size=block_size(fresh_llm), salt_a=pair.get("salt_a"),
                         salt_b=pair.get("salt_b"), tokenizer=tok, chat_template=template)  # fmt: skip
    assert d.cause == cause, str(d)
    ids_a, ids_b = to_token_ids(tok, pair["a"], template), to_token_ids(tok, pair["b"], template)
    assert (d.prompt_tokens_a, d.prompt_tokens_b) == (len(ids_a), len(ids_b))
    run_one(fresh_llm, ids_a, cache_salt=pair.get("salt_a"))
    measured = run_one(fresh_llm, ids_b, cache_salt=pair.get("salt_b"))
    assert d.cached_tokens == measured.num_cached_tokens, str(d)


def test_identical_prompt_on_a_block_boundary_loses_its_last_block(fresh_llm):
    ids = to_token_ids(fresh_llm.get_tokenizer(), RULES)[:64]
    d = diagnose_prompts(ids, ids, tokenizer=fresh_llm.get_tokenizer())
    run_one(fresh_llm, ids)
    assert (d.cause, d.cached_tokens) == ("identical", run_one(fresh_llm, ids).num_cached_tokens) == ("identical", 32)


def test_report_makes_whitespace_visible_and_json_has_the_keys():
    d = diagnose_prompts(**{k: v for k, v in PAIRS["tokenisation_or_whitespace"].items()})
    assert "'·'" in d.context_a and "\n" not in d.context_a + d.context_b
    keys = {"prompt_tokens_a", "prompt_tokens_b", "common_prefix_tokens", "first_difference", "cached_tokens",
            "block_size", "cause"}  # fmt: skip
    assert keys <= d.to_dict().keys() and d.block_size == 32
    assert diagnose_prompts("Hello there", "Hello there, friend").first_difference is None


def _course(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "course_lib.cli", *args], capture_output=True, text=True, timeout=120)


def test_cli_prompts_json_agrees_with_the_library(tmp_path):
    pair = PAIRS["differs_in_first_block"]
    (tmp_path / "a.txt").write_text(pair["a"])
    (tmp_path / "b.json").write_text(json.dumps([{"role": "user", "content": pair["b"]}]))
    out = _course("diagnose", "prompts", str(tmp_path / "a.txt"), str(tmp_path / "b.json"), "--json", "--block-size", "64")
    assert out.returncode == 0, out.stderr
    got = json.loads(out.stdout)
    expected = diagnose_prompts(pair["a"], [{"role": "user", "content": pair["b"]}], block_size=64).to_dict()
    assert got == expected and got["block_size"] == 64


def _bad_inputs(tmp_path: Path) -> dict[str, tuple[list[str], str]]:
    ok = tmp_path / "ok.txt"
    ok.write_text(RULES)
    (tmp_path / "latin1.txt").write_bytes("café".encode("latin-1"))
    (tmp_path / "dict.json").write_text('{"role": "user", "content": "hi"}')
    (tmp_path / "strings.txt").write_text('["hello", "world"]')
    (tmp_path / "broken.json").write_text('[{"role": "user", "content": ')
    (tmp_path / "empty.txt").write_text("  \n")
    (tmp_path / "python.prom").write_text("# TYPE python_gc_objects_collected_total counter\npython_gc_objects_collected_total 5\n")
    (tmp_path / "garbage.prom").write_text("this is not prometheus text\n")
    url = f"http://127.0.0.1:{free_port()}/metrics"
    return {
        "missing file": (["prompts", str(tmp_path / "nope.txt"), str(ok)], "no such file"),
        "not UTF-8": (["prompts", str(tmp_path / "latin1.txt"), str(ok)], "not UTF-8"),
        "chat not a list": (["prompts", str(ok), str(tmp_path / "dict.json")], "list of messages"),
        "list of strings": (["prompts", str(tmp_path / "strings.txt"), str(ok)], "list of messages"),
        "broken JSON": (["prompts", str(tmp_path / "broken.json"), str(ok)], "not valid JSON"),
        "empty prompt": (["prompts", str(tmp_path / "empty.txt"), str(ok)], "empty"),
        "bad block size": (["prompts", str(ok), str(ok), "--block-size", "0"], "positive integer"),
        "no vLLM counters": (["metrics", str(tmp_path / "python.prom"), str(tmp_path / "python.prom")], "no vLLM"),
        "not a scrape": (["metrics", str(tmp_path / "garbage.prom"), str(tmp_path / "garbage.prom")], "malformed"),
        "missing scrape": (["metrics", str(tmp_path / "nope.prom"), str(tmp_path / "nope.prom")], "no such file"),
        "unreachable URL": (["metrics", url, url], "unreachable"),
    }


def test_every_bad_input_is_one_line_and_status_2(tmp_path):
    for what, (args, needle) in _bad_inputs(tmp_path).items():
        out = _course("diagnose", *args)
        assert out.returncode == 2, (what, out.returncode, out.stderr)
        lines = out.stderr.strip().splitlines()
        assert len(lines) == 1 and "Traceback" not in out.stderr, (what, out.stderr)
        assert needle in lines[0] and out.stdout == "", (what, lines[0])


def _scrape_when_counted(server, before, expected_queries, timeout=10.0):
    end = time.monotonic() + timeout
    while True:
        after = scrape(server.base_url)
        if after.value(PREFIX_CACHE_QUERIES) - before.value(PREFIX_CACHE_QUERIES) >= expected_queries:
            return after
        if time.monotonic() > end:
            return after
        time.sleep(0.2)


def test_metrics_on_live_scrapes_match_the_api(server):
    before = scrape(server.base_url)
    requests = [(label, [dict(m[0], content="[diagnose] " + m[0]["content"]), *m[1:]]) for label, m in chat_requests()]
    results = send_chat(server, requests)
    after = _scrape_when_counted(server, before, sum(r.prompt_tokens for r in results))
    d = diagnose_metrics(before, after)
    assert d.queries == sum(r.prompt_tokens for r in results) and d.hits == sum(r.cached_tokens for r in results)
    assert d.requests == len(results) and d.preemptions == 0 and d.warnings == []
    assert d.hit_rate == pytest.approx(d.hits / d.queries) and 0 < d.hit_rate < 1
    assert (d.external_queries, d.external_hits) == (0, 0) and 0 <= d.kv_cache_usage <= 1  # no KV connector


def test_metrics_cli_on_urls_and_files(server, tmp_path):
    idle = _course("diagnose", "metrics", server.base_url, server.base_url + "/metrics", "--json")
    assert idle.returncode == 0, idle.stderr
    got = json.loads(idle.stdout)
    assert got["hit_rate"] is None and got["queries"] == 0 and "no traffic" in " ".join(got["warnings"])
    before_text = httpx_get(server.base_url + "/metrics")
    send_chat(server, chat_requests()[:2])
    time.sleep(1.0)
    after_text = httpx_get(server.base_url + "/metrics")
    (tmp_path / "before.prom").write_text(before_text)
    (tmp_path / "after.prom").write_text(after_text)
    out = _course("diagnose", "metrics", str(tmp_path / "before.prom"), str(tmp_path / "after.prom"), "--json")
    assert out.returncode == 0, out.stderr
    cli = json.loads(out.stdout)
    lib = diagnose_metrics(parse_metrics(before_text), parse_metrics(after_text)).to_dict()
    assert {k: cli[k] for k in ("hit_rate", "queries", "hits", "preemptions", "requests")} == \
        {k: lib[k] for k in ("hit_rate", "queries", "hits", "preemptions", "requests")} and cli["queries"] > 0
    swapped = _course("diagnose", "metrics", str(tmp_path / "after.prom"), str(tmp_path / "before.prom"), "--json")
    assert "went down" in " ".join(json.loads(swapped.stdout)["warnings"])


def test_preemptions_are_reported_with_a_warning(server, tmp_path):
    text = httpx_get(server.base_url + "/metrics")
    before = parse_metrics(text)
    name = NUM_PREEMPTIONS
    lines = [ln for ln in text.splitlines() if ln.startswith(name)]
    assert lines, "the server exports vllm:num_preemptions_total"
    bumped = "\n".join(f"{ln.rsplit(' ', 1)[0]} {float(ln.rsplit(' ', 1)[1]) + 3}" if ln.startswith(name) else ln
                       for ln in text.splitlines()) + "\n"  # fmt: skip
    d = diagnose_metrics(before, parse_metrics(bumped))
    assert d.preemptions == 3 * len(lines) and any("preemption" in w for w in d.warnings)


def test_load_scrape_refuses_text_without_vllm_counters(tmp_path):
    path = tmp_path / "x.prom"
    path.write_text("# TYPE up gauge\nup 1\n")
    with pytest.raises(CourseError, match="no vLLM prefix-cache counters"):
        load_scrape(str(path))


def httpx_get(url: str) -> str:
    import httpx

    r = httpx.get(url, timeout=10.0)
    r.raise_for_status()
    return r.text


def test_quiz_08_computed_answers_come_from_course_lib():
    """quizzes/08_troubleshooting.yaml: each numeric answer is what course_lib computes for its scenario."""
    import random

    from course_lib import quiz as Q
    from course_lib.simulator import expected_cached_tokens

    rng = random.Random(8)
    ids = [rng.randrange(1000, 40000) for _ in range(300)]
    stamped = ids[:18] + [ids[18] + 1] + ids[19:150]
    junction_a, junction_b = ids[:64], ids[:63] + ids[200:205]
    scrape = "# TYPE vllm:prefix_cache_queries counter\nvllm:prefix_cache_queries_total {q}\n" \
             "# TYPE vllm:prefix_cache_hits counter\nvllm:prefix_cache_hits_total {h}\n"  # fmt: skip
    restart = diagnose_metrics(parse_metrics(scrape.format(q=5000, h=4000)), parse_metrics(scrape.format(q=1000, h=200)))
    computed = {
        "seconds_at_top": diagnose_prompts(ids[:150], stamped, tokenizer=course_tokenizer()).cached_tokens,
        "junction_block": expected_cached_tokens(junction_a, junction_b, 32),
        "hybrid_unit": expected_cached_tokens(ids[:250], ids[:250] + ids[260:270], 96),
        "eagle_drop": expected_cached_tokens(ids[:100], ids[:100] + ids[200:230], 32) - 32,
        "restart_rate": restart.hit_rate,
    }
    assert len(junction_b) == 68 and any("went down" in w for w in restart.warnings)
    quiz = Q.load_quiz("08_troubleshooting")
    for qid, value in computed.items():
        assert Q.judge(quiz.question(qid), value).correct, (qid, value)


def test_exercise_checks_of_notebook_08(fresh_llm):
    """08.1-08.3: a right answer passes, a typical wrong one fails without the expected value, `...` is 'not yet'."""
    from course_lib.exercises import nb08
    from course_lib.simulator import PrefixCacheSimulator

    tok = fresh_llm.get_tokenizer()
    assert nb08.check_stable_system_prompt(lambda r, u, t: f"{r}\nCustomer: {u}. Date: {t}.", RULES, tok).ok
    assert not nb08.check_stable_system_prompt(lambda r, u, t: f"Hello {u}, it is {t}.\n{r}", RULES, tok).ok
    a = to_token_ids(tok, RULES + " Question: ")
    b = to_token_ids(tok, RULES + " Question: do you sell electric bikes?")
    right = diagnose_prompts(a, b, tokenizer=tok).cached_tokens
    assert nb08.check_junction_prediction(right, fresh_llm, a, b).ok
    wrong = nb08.check_junction_prediction(right + 32, fresh_llm, a, b)
    assert not wrong.ok and str(right) not in wrong.message.split("predicted")[1]
    prompts = [list(range(100 * i, 100 * i + 150)) for i in range(1, 4)]
    sizes = [n for n in range(6, 40) if nb08._rotation_hits(n, 32, prompts, 2)]
    smallest = sizes[0]
    sim = PrefixCacheSimulator(smallest, 32)
    sim.run(prompts)
    assert sim.run(prompts) == [128] * 3  # the smallest size really hits every full block on round 2
    assert nb08.check_pool_size(smallest, prompts, 32).ok and not nb08.check_pool_size(smallest + 1, prompts, 32).ok
    assert "no answer yet" in str(nb08.check_pool_size(..., prompts, 32)).lower()
