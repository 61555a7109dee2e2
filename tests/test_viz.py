"""Figures in course_lib.viz: they must draw what the engine and vLLM's hasher say."""

from __future__ import annotations

# --- block hashing (notebook 02) ---

BLOCK = 32


def _vllm_sha256_hashes(token_ids: list[int], block_size: int) -> list[bytes]:
    from course_lib.engine import prepare_environment

    prepare_environment()
    from vllm import SamplingParams
    from vllm.utils.hashing import sha256
    from vllm.v1.core.kv_cache_utils import get_request_block_hasher
    from vllm.v1.request import Request

    req = Request("r", token_ids, SamplingParams(max_tokens=1), None,
                  block_hasher=get_request_block_hasher(block_size, sha256))  # fmt: skip
    return list(req.block_hashes)


def test_blocks_figure_draws_the_blocks_the_engine_hits(fresh_llm):
    from course_lib.engine import measure
    from course_lib.simulator import PrefixCacheSimulator
    from course_lib.viz import blocks_figure

    first = list(range(200, 200 + 3 * BLOCK + 5))
    second = first[: 2 * BLOCK + 7] + [11] * 40  # shares 2 full blocks, then diverges; 111 tokens
    engine_cached = measure(fresh_llm, [first, second])[1].num_cached_tokens
    sim = PrefixCacheSimulator(1000, BLOCK)
    sim.process(first)
    fig = blocks_figure(second, BLOCK, sim, token_text=[f"t{t} " for t in second])
    blocks = fig.layout.meta
    assert [b["size"] for b in blocks] == [BLOCK, BLOCK, BLOCK, len(second) % BLOCK]  # the partial last block is drawn
    assert sum(b["status"] == "hit" for b in blocks) * BLOCK == engine_cached
    assert [b["block_hash"] for b in blocks[:3]] == [h.hex() for h in _vllm_sha256_hashes(second, BLOCK)]
    assert blocks[3]["block_hash"] is None and blocks[3]["status"].startswith("partial")
    assert len(fig.layout.shapes) == 4
    labels = fig.data[0].text
    assert all(b["block_hash"][:8] in label for b, label in zip(blocks[:3], labels))
    assert "t200" in labels[0] and "no hash" in labels[3]


def test_blocks_figure_marks_the_last_token_cap(fresh_llm):
    from course_lib.engine import measure
    from course_lib.simulator import PrefixCacheSimulator
    from course_lib.viz import blocks_figure

    prompt = list(range(300, 300 + 2 * BLOCK))  # block-aligned: an identical resubmission recomputes block 1
    engine_cached = measure(fresh_llm, [prompt, prompt])[1].num_cached_tokens
    sim = PrefixCacheSimulator(1000, BLOCK)
    sim.process(prompt)
    statuses = [b["status"] for b in blocks_figure(prompt, BLOCK, sim).layout.meta]
    assert statuses[0] == "hit" and statuses[1].startswith("recomputed")
    assert statuses.count("hit") * BLOCK == engine_cached


def test_free_queue_figure_shows_each_state():
    from course_lib.simulator import PrefixCacheSimulator
    from course_lib.viz import COLORS, free_queue_figure

    sim = PrefixCacheSimulator(5, 4)
    steps = [("start", sim.free_queue_state())]
    sim.process(list(range(6)))
    steps.append(("after A", sim.free_queue_state()))
    fig = free_queue_figure(steps)
    assert [list(row) for row in fig.layout.meta] == [[b for b, _ in state] for _, state in steps]
    assert len(fig.layout.shapes) == sum(len(state) for _, state in steps)
    cached = sum(s.fillcolor == COLORS["cached"] for s in fig.layout.shapes)
    assert cached == sum(h is not None for _, state in steps for _, h in state) == 1


def test_free_queue_figure_names_owners_and_marks_evictions():
    """Blocks carry their owner's name (A0 = block 0 of request A); an evicted block is outlined and says whose."""
    from course_lib.simulator import PrefixCacheSimulator
    from course_lib.viz import COLORS, free_queue_figure

    sim = PrefixCacheSimulator(4, 4)  # 3 usable blocks; A = 2 full blocks + 1 partial, then B evicts A's
    steps, owners, evicted, owner = [("start", sim.free_queue_state())], [{}], [[]], {}
    for name, prompt in (("A", list(range(9))), ("B", list(range(100, 109)))):
        sim.process(prompt)
        owner.update({b: f"{name}{k}" for k, b in enumerate(sim.last.block_ids)})
        steps.append((name, sim.free_queue_state()))
        owners.append(dict(owner))
        evicted.append(sim.last.evicted_block_ids)
    assert evicted[2], "B must evict A's cached blocks"
    fig = free_queue_figure(steps, owners=owners, evicted=evicted)
    labels = fig.data[0].text
    assert any(label.startswith("<b>A0</b>") for label in labels) and any("<b>B1</b>" in label for label in labels)
    outlined = [s for s in fig.layout.shapes if s.line.color == COLORS["evicted"]]
    assert len(outlined) == len(evicted[2])
    assert sum("evicted A" in label for label in labels) == len(evicted[2])


# --- axes, the live chart, static images (issue 15) ---


def _axis_titles(fig) -> dict[str, str]:
    """Title of every visible axis of a figure, by axis name."""
    layout = fig.to_dict()["layout"]
    return {k: (v.get("title") or {}).get("text", "") for k, v in layout.items()
            if k.startswith(("xaxis", "yaxis")) and v.get("visible", True)}  # fmt: skip


def test_every_axis_says_its_quantity_and_unit():
    from course_lib.simulator import PrefixCacheSimulator
    from course_lib.viz import chat_turns_figure, free_queue_figure, hit_rate_curves_figure, hit_rate_figure, reuse_bars_figure

    rows = [{"t": 0.5, "interval": 0.2, "cumulative": 0.2}, {"t": 1.0, "interval": 0.8, "cumulative": 0.5}]
    turns = [{"turn": 1, "num_cached_tokens": 0, "prefilled_tokens": 40, "prev_prompt_full_blocks": 0}]
    cases = [{"case": "a", "prompt_tokens": 40, "num_cached_tokens": 32}]
    sweep = [{"cache_tokens": c, "block_size": 32, "hit_rate": h} for c, h in ((1024, 0.1), (2048, 0.4), (4096, 0.7))]
    sim = PrefixCacheSimulator(5, 4)
    figures = [hit_rate_figure(rows), chat_turns_figure(turns), reuse_bars_figure(cases), hit_rate_curves_figure(sweep)]
    numeric_x = {hit_rate_figure.__name__, hit_rate_curves_figure.__name__}  # the others' x axes are categories
    for make, fig in zip((hit_rate_figure, chat_turns_figure, reuse_bars_figure, hit_rate_curves_figure), figures):
        titles = _axis_titles(fig)
        assert {"xaxis", "yaxis"} <= set(titles) and all(titles.values()), f"{make.__name__}: {titles}"
        for axis, title in titles.items():
            if axis.startswith("y") or make.__name__ in numeric_x:
                assert "(" in title and ")" in title, f"{make.__name__}: {axis} title {title!r} has no unit"
    assert set(_axis_titles(free_queue_figure([("start", sim.free_queue_state())]))) == {"xaxis", "yaxis"}


def test_log_cache_size_axis_labels_every_size():
    from course_lib.viz import hit_rate_curves_figure

    sizes = [1024, 2048, 4096, 8192]  # less than a decade: plotly alone draws no major tick label here
    fig = hit_rate_curves_figure([{"cache_tokens": c, "block_size": 32, "hit_rate": 0.5} for c in sizes])
    assert fig.layout.xaxis.type == "log"
    assert list(fig.layout.xaxis.tickvals) == sizes
    assert list(fig.layout.xaxis.ticktext) == ["1,024", "2,048", "4,096", "8,192"]


def test_live_chart_leaves_one_final_figure_in_the_cell():
    """In IPython: each update replaces the cell's output; after finish() one figure with every row remains."""
    from IPython.core.interactiveshell import InteractiveShell
    from IPython.utils.capture import capture_output

    from course_lib.viz import LiveHitRateChart

    InteractiveShell.instance()
    rows = [{"t": 0.5 * (i + 1), "interval": i / 10, "cumulative": i / 20} for i in range(5)]
    with capture_output() as cap:
        chart = LiveHitRateChart(target=0.7)
        for n in range(1, len(rows) + 1):
            chart.update(rows[:n])
            assert len(cap.outputs) == 1  # replaced, not appended
            assert list(cap.outputs[0].data["application/vnd.plotly.v1+json"]["data"][0]["x"]) == [r["t"] for r in rows[:n]]
        chart.finish()
    assert len(cap.outputs) == 1
    final = cap.outputs[0].data["application/vnd.plotly.v1+json"]["data"]
    assert list(final[0]["y"]) == [r["interval"] for r in rows] and list(final[1]["y"]) == [r["cumulative"] for r in rows]


def test_live_chart_outside_ipython_keeps_the_rows():
    import subprocess
    import sys

    code = ("from course_lib.viz import LiveHitRateChart\n"
            "c = LiveHitRateChart(); c.update([{'t': 1.0, 'interval': 0.5, 'cumulative': 0.5}]); c.finish()\n"
            "print(list(c.figure().data[0].x))")  # fmt: skip
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[1.0]" and out.stderr == ""


def test_static_figures_add_a_png_without_warnings():
    """COURSE_STATIC_FIGURES=1 (make notebooks): every figure's bundle also carries a PNG, drawn by kaleido."""
    import os
    import shutil
    import subprocess
    import sys

    import pytest

    if not (os.environ.get("COURSE_CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")):
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail("CI=true but no chromium for kaleido; .ci/run installs it")
        pytest.skip("no chromium for kaleido (apt-get install chromium)")
    code = ("import base64, course_lib\n"
            "from course_lib.viz import _figure_bundle, hit_rate_figure\n"
            "for n in (1, 2):\n"
            "    b = _figure_bundle(hit_rate_figure([{'t': 1.0, 'interval': 0.5, 'cumulative': 0.5}] * n))\n"
            "    png = b['image/png']; png = base64.b64decode(png) if isinstance(png, str) else png\n"
            "    print(sorted(b), png[:8] == b'\\x89PNG\\r\\n\\x1a\\n')\n")  # fmt: skip
    env = dict(os.environ, COURSE_STATIC_FIGURES="1")
    out = subprocess.run([sys.executable, "-W", "error::UserWarning", "-c", code], capture_output=True, text=True,
                         env=env, timeout=300, check=True)  # fmt: skip
    assert out.stdout.splitlines() == ["['application/vnd.plotly.v1+json', 'image/png', 'text/plain'] True"] * 2
    assert out.stderr == ""


def test_hit_rate_curves_zoom_to_the_data_and_say_so():
    """Notebook 04's block-size figure: differences of a few points on a zoomed axis, titled as zoomed."""
    from course_lib.viz import hit_rate_curves_figure

    rows = [{"cache_tokens": c, "block_size": b, "hit_rate": h}
            for b, rates in ((16, (0.82, 0.89)), (128, (0.80, 0.84))) for c, h in zip((4096, 65536), rates)]  # fmt: skip
    zoomed = hit_rate_curves_figure(rows, target=0.7, zoom=True)
    lo, hi = zoomed.layout.yaxis.range
    assert 0.75 < lo < 0.80 and 0.89 < hi < 0.95 and "zoomed" in zoomed.layout.yaxis.title.text
    assert not zoomed.layout.shapes  # the 70 % target lies outside the zoomed axis: not drawn
    full = hit_rate_curves_figure(rows)
    assert list(full.layout.yaxis.range) == [0, 1.02] and len(full.layout.shapes) == 1
    assert [t.name for t in full.data] == ["block 16", "block 128"]


def test_chat_figures_use_the_cache_colours():
    from course_lib.viz import COLORS, chat_turns_figure, reuse_bars_figure

    turns = chat_turns_figure([{"turn": 1, "num_cached_tokens": 0, "prefilled_tokens": 40, "prev_prompt_full_blocks": 0}])
    bars = reuse_bars_figure([{"case": "a", "prompt_tokens": 40, "num_cached_tokens": 32}])
    for fig in (turns, bars):
        assert [t.marker.color for t in fig.data[:2]] == [COLORS["cached"], COLORS["computed"]]
    assert [list(t.y) for t in bars.data] == [[32], [8]]  # stacked: cached + prefilled = the prompt
