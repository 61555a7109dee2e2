"""Interactive explorers for the notebooks (ipywidgets).

Taught in ``notebooks/02_block_hashing.ipynb`` (``BlockExplorer``).

Why: the block rules (full blocks only, chained hashes, the salt on block 0,
the ``num_tokens - 1`` cap) are easiest to believe when you type two prompts
and watch which blocks match change as you edit a word, the block size or
the salt. Everything shown is computed by ``course_lib.hashing`` and
``course_lib.simulator``, which the tests check against vLLM itself.
"""

from __future__ import annotations

import html
from typing import Any, Sequence

import ipywidgets as widgets

from course_lib.engine import CPU_BLOCK_SIZE, detect_device
from course_lib.hashing import HASH_ALGOS, short_hash
from course_lib.model import course_tokenizer  # re-exported: notebook 02 imports it from here
from course_lib.simulator import PrefixCacheSimulator, describe_blocks
from course_lib.viz.style import COLORS

# The shared system prompt spans more than two blocks of 32 tokens with any usual tokenizer, so the
# "Hi"/"Hello" pair shares full blocks (it did not with SmolLM2's tokenizer and a one-line system prompt).
_DEFAULT_SYSTEM = (
    "System: You are a helpful assistant for a course on prefix caching in vLLM. Answer briefly and politely. "
    "When a question is about the KV cache, explain it with blocks, block hashes and cache hits, give one small "
    "example with token counts, and name the vLLM source file the learner should open next.\n"
)
DEFAULT_PROMPTS = (
    _DEFAULT_SYSTEM + "User: Hi, can you explain what a KV cache block is?",
    _DEFAULT_SYSTEM + "User: Hello, can you explain what a KV cache block is?",
)

# The house colours (course_lib.viz.style), lightened for a table's background: hit = cached, miss and
# the block recomputed under the last-token cap = computed, the partial block = partial.
_STATUS_COLORS = {"hit": COLORS["cached"] + "66", "miss": COLORS["computed"] + "66",
                  "recomputed (last-token cap)": COLORS["computed"] + "33", "partial (no hash)": COLORS["partial"] + "88"}  # fmt: skip


def block_size_problem(block_size: int, device: str) -> str | None:
    """Why vLLM would refuse ``block_size`` on ``device``, or None if it runs.

    The rule notebook 02 states: vLLM's CPU attention kernel accepts only multiples of 32
    (``CPUAttentionBackend.get_supported_kernel_block_sizes`` returns ``[MultipleOf(32)]``,
    ``vllm/v1/attention/backends/cpu_attn.py``); an engine started with another size stops
    at start. On a GPU the attention backend decides, so only a positive size is required here.
    """
    if not isinstance(block_size, int) or block_size <= 0:
        return f"block_size must be a positive integer, not {block_size!r}"
    if device == "cpu" and block_size % CPU_BLOCK_SIZE:
        return (f"block_size={block_size} is refused on the CPU: vLLM's CPU attention kernel accepts only multiples "
                f"of {CPU_BLOCK_SIZE} (32, 64, 96, ...), and an engine started with {block_size} stops at start. "
                "Pick a multiple of 32.")  # fmt: skip
    return None


def not_live_bundle(widget: widgets.Widget, what: str, preview_html: str = "") -> dict[str, Any]:
    """A widget's display bundle that explains itself where no kernel runs it (issue 15).

    JupyterLab with a live kernel draws the widget (``application/vnd.jupyter.widget-view+json``);
    a saved notebook opened without its kernel, GitHub, nbviewer and ``nbconvert`` fall back to
    ``text/html``/``text/plain``, which here say to run the cell instead of showing an object repr.
    ``preview_html`` (optional) is a static picture of the widget's current state shown under that line.
    """
    bundle = dict(widgets.Widget._repr_mimebundle_(widget) or {})
    note = f"{what}: an interactive widget. Run the cell (with its kernel) to use it."
    bundle["text/plain"] = note
    bundle["text/html"] = (f"<p><i>{html.escape(note)}</i>"
                           + (" Static preview of its first state:</p>" + preview_html if preview_html else "</p>"))  # fmt: skip
    return bundle


class BlockExplorer(widgets.VBox):
    """Type prompts; see each one's blocks, hashes and which of them hit the cache left by the prompts above it.

    The prompts run one at a time, top to bottom, through a ``PrefixCacheSimulator``
    with a pool large enough never to evict, so prompt ``k`` is looked up against
    the blocks prompts ``0..k-1`` cached. Each prompt has its own ``cache_salt``
    box (empty = no salt). ``results`` holds each prompt's ``num_cached_tokens``,
    ``rows`` its ``BlockInfo`` list, ``summary`` (an HTML widget) the table shown.
    On the CPU (``device``, detected by default) a block size vLLM's CPU kernel
    would refuse is refused here too (``block_size_problem``): the slider moves in
    steps of 32, and a value set otherwise shows the rule instead of a table.
    """

    def __init__(
        self,
        prompts: Sequence[str] = DEFAULT_PROMPTS,
        block_size: int = 32,
        hash_algo: str = "sha256",
        salts: Sequence[str] | None = None,
        tokenizer: Any = None,
        *,
        show_figures: bool = False,
        device: str | None = None,
    ) -> None:
        if len(prompts) < 2:
            raise ValueError("BlockExplorer compares prompts: give it at least two")
        self.device = device or detect_device()
        problem = block_size_problem(block_size, self.device)
        if problem:
            raise ValueError(problem)
        self.tokenizer = tokenizer if tokenizer is not None else course_tokenizer()
        salts = list(salts) if salts is not None else [""] * len(prompts)
        if len(salts) != len(prompts):
            raise ValueError(f"{len(prompts)} prompts but {len(salts)} salts: give one salt per prompt ('' = none)")
        layout = widgets.Layout(width="100%", height="80px")
        self.prompt_boxes = [widgets.Textarea(value=p, description=f"prompt {i}", layout=layout) for i, p in enumerate(prompts)]
        self.salt_boxes = [widgets.Text(value=s, description="cache_salt", placeholder="(none)") for s in salts]
        step = CPU_BLOCK_SIZE if self.device == "cpu" else 1
        self.block_size = widgets.IntSlider(value=block_size, min=step, max=max(256, block_size), step=step,
                                            description="block_size")  # fmt: skip
        self.hash_algo = widgets.Dropdown(options=list(HASH_ALGOS), value=hash_algo, description="hash_algo")
        self.summary = widgets.HTML()
        self.show_figures = show_figures
        self.figure_output = widgets.Output()
        self.results: list[int] = []
        self.rows: list[list[Any]] = []
        self.figures: list[Any] = []
        for w in [*self.prompt_boxes, *self.salt_boxes, self.block_size, self.hash_algo]:
            w.observe(self._on_change, names="value")
        prompt_rows = [widgets.HBox([p, s]) for p, s in zip(self.prompt_boxes, self.salt_boxes)]
        super().__init__([*prompt_rows, widgets.HBox([self.block_size, self.hash_algo]), self.summary, self.figure_output])
        self.update()

    def _on_change(self, _change: dict) -> None:
        self.update()

    def _repr_mimebundle_(self, **kwargs: Any) -> dict[str, Any]:
        return not_live_bundle(self, "Block explorer", self.summary.value)

    def update(self) -> None:
        """Recompute everything from the widgets' current values."""
        bs, algo = self.block_size.value, self.hash_algo.value
        self.results, self.rows, self.figures = [], [], []
        problem = block_size_problem(bs, self.device)
        if problem:  # what the engine would do: refuse, not compute a table for a size that cannot run
            self.summary.value = f"<p><b>refused</b>: {html.escape(problem)}</p>"
            if self.show_figures:
                self.figure_output.clear_output()
            return
        sim = PrefixCacheSimulator(10**6, bs, algo)  # big enough: nothing is evicted
        parts = [f"<p>block_size={bs}, hash_algo={algo}: each prompt is looked up against the blocks "
                 "the prompts above it cached.</p>"]  # fmt: skip
        for i, (box, salt_box) in enumerate(zip(self.prompt_boxes, self.salt_boxes)):
            ids = list(self.tokenizer.encode(box.value)) if box.value else []
            salt = salt_box.value or None
            if not ids:
                self.results.append(0)
                self.rows.append([])
                parts.append(f"<p><b>prompt {i}</b>: empty</p>")
                continue
            before = sim.cached_hashes()
            rows = describe_blocks(ids, bs, before, algo, cache_salt=salt)
            cached = sim.process(ids, cache_salt=salt)
            self.results.append(cached)
            self.rows.append(rows)
            parts.append(self._prompt_html(i, ids, rows, cached, salt))
            if self.show_figures:
                from course_lib.viz import blocks_figure

                text = [self.tokenizer.decode([t]) for t in ids]
                self.figures.append(blocks_figure(ids, bs, before, token_text=text, hash_algo=algo, cache_salt=salt,
                                                  title=f"prompt {i}: {cached} cached tokens"))  # fmt: skip
        self.summary.value = "".join(parts)
        if self.show_figures:
            self.figure_output.clear_output(wait=True)
            with self.figure_output:
                from IPython.display import display

                for fig in self.figures:
                    display(fig)

    def _prompt_html(self, i: int, ids: list[int], rows: list[Any], cached: int, salt: str | None) -> str:
        cells = []
        for r in rows:
            text = html.escape(self.tokenizer.decode(r.token_ids)).replace("\n", "⏎")
            h = short_hash(r.block_hash) if r.block_hash is not None else "no hash"
            cells.append(
                f'<td style="background:{_STATUS_COLORS[r.status]};padding:4px;border:1px solid #999;'
                f'vertical-align:top;max-width:220px" title="{text}"><b>block {r.index}</b> '
                f"<code>{h}</code><br><small>{html.escape(r.status)}</small><br>"
                f"<small>{text[:60]}{'…' if len(text) > 60 else ''}</small></td>"
            )
        salt_txt = f", cache_salt={html.escape(salt)!r}" if salt else ""
        return (f"<p><b>prompt {i}</b>: {len(ids)} tokens{salt_txt} → <b>num_cached_tokens = {cached}</b></p>"
                f'<table style="border-collapse:collapse"><tr>{"".join(cells)}</tr></table>')  # fmt: skip


def block_explorer(*prompts: str, block_size: int = 32, hash_algo: str = "sha256", **kwargs: Any) -> BlockExplorer:
    """Build a ``BlockExplorer`` (``block_explorer()`` uses the "User: Hi" / "User: Hello" pair)."""
    return BlockExplorer(prompts or DEFAULT_PROMPTS, block_size, hash_algo, **kwargs)
