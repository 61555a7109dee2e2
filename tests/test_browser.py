"""The course as a learner sees it: real JupyterLab 4, driven by a real Chromium (issue 15).

JupyterLab runs on 127.0.0.1 with a token; Debian's ``chromium`` (found through
``COURSE_CHROMIUM`` or ``PATH``; Playwright's own browser download is not used) is
driven through Playwright's Python API. Two small notebooks are generated in a
temporary folder, each named after the course notebook it exercises and running the
same ``course_lib`` code as the notebook's cells, in a real kernel (and, for the live chart,
against a real vLLM server):

* ``02_block_hashing``: the block explorer answers a slider move (in steps of 32 on a CPU), a block figure is drawn
  as SVG, the quiz widget records and judges an answer;
* ``06_metrics``: the live hit-rate chart shows more than one point *while its cell is
  still running*, and leaves a figure behind when it ends;
* a learner's copy of notebook 00 (``course export-student``) in JupyterLab as ``make lab`` opens it:
  Run All with every exercise unanswered reaches the quiz, and nbgrader's tools are hidden.

Screenshots go to ``out/browser/`` (git-ignored): ``<notebook>-<step>.png`` at each step,
``<notebook>-failure.png`` when an assertion fails. Without a browser the test is skipped on a
learner's machine and fails under ``CI=true`` (``.ci/run`` installs ``chromium`` first).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import nbformat
import pytest

ROOT = Path(__file__).resolve().parents[1]
SHOTS = ROOT / "out" / "browser"
LEARNER_NOTEBOOK = "00_setup.ipynb"  # the learner copy whose Run All the browser test watches
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
    "--disable-sync",
]
NO_BROWSER = "no Chromium found: install Debian's `chromium` (apt-get install chromium) or set COURSE_CHROMIUM"


def chromium_path() -> str | None:
    """``COURSE_CHROMIUM`` if set, else ``chromium`` / ``chromium-browser`` on PATH."""
    explicit = os.environ.get("COURSE_CHROMIUM")
    if explicit:
        return explicit if os.access(explicit, os.X_OK) else None
    return shutil.which("chromium") or shutil.which("chromium-browser")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _stop(proc: subprocess.Popen, name: str) -> None:
    """Stop a process group we started, by its pid: SIGTERM, then SIGKILL."""
    if proc.poll() is not None:
        return
    try:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)
    except ProcessLookupError:
        pass
    assert proc.poll() is not None, f"{name} (pid {proc.pid}) still running"


# --- the notebooks the browser runs ------------------------------------------------------


def _code(source: str) -> nbformat.NotebookNode:
    return nbformat.v4.new_code_cell(source)


# Notebook 06's live-chart cell with less traffic (6 requests, not 15): the same course_lib code, a shorter test.
LIVE_CELL = """\
import asyncio
import uuid

from course_lib.server import send_chat_async
from course_lib.viz import LiveHitRateChart

chart = LiveHitRateChart(target=0.70)
task = asyncio.ensure_future(send_chat_async(server, chat_requests()[:6], max_tokens=4, pause_s=0.3,
                                             cache_salt=uuid.uuid4().hex))
snapshots = []
async for snap in metrics.monitor_cache_metrics(server.base_url, interval=0.5, duration=300):
    snapshots.append(snap)
    chart.update(metrics.hit_rate_timeline(snapshots))
    if task.done():
        break
await task
if hasattr(chart, "finish"):  # the chart before issue 15 had no finish()
    chart.finish()
"""


def _write_notebooks(folder: Path) -> None:
    nb02 = nbformat.v4.new_notebook()
    nb02.cells = [
        _code("from course_lib.widgets import block_explorer\n\nexplorer = block_explorer()\nexplorer"),
        _code("from course_lib.viz import blocks_figure\n\n"
              "blocks_figure(list(range(100)), 32, token_text=[f't{i} ' for i in range(100)])"),  # fmt: skip
        _code('from course_lib import quiz\n\nquiz.show("02_block_hashing")'),
    ]
    nb06 = nbformat.v4.new_notebook()
    nb06.cells = [
        _code("from course_lib import metrics\nfrom course_lib.server import VLLMServer, chat_requests, rag_requests\n\n"
              "server = VLLMServer().start()"),  # fmt: skip
        _code(LIVE_CELL),
        _code("server.stop()\nprint(server)"),
    ]
    for name, nb in (("02_block_hashing.ipynb", nb02), ("06_metrics.ipynb", nb06)):
        nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
        nbformat.write(nb, folder / name)


# --- JupyterLab and Chromium -------------------------------------------------------------


@pytest.fixture(scope="module")
def chromium() -> str:
    path = chromium_path()
    if path is None:
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"CI=true but {NO_BROWSER}; .ci/run installs it")
        pytest.skip(NO_BROWSER)
    return path


@contextlib.contextmanager
def _jupyterlab(folder: Path, home: Path, config_path: Path | None = None):
    """JupyterLab 4 on 127.0.0.1 with a token, serving ``folder``; ``config_path`` as ``make lab`` passes it."""
    port, token = _free_port(), secrets.token_hex(16)
    news = home / "settings" / "@jupyterlab" / "apputils-extension" / "notification.jupyterlab-settings"
    news.parent.mkdir(parents=True)
    news.write_text(json.dumps({"fetchNews": "false"}))  # no "get Jupyter news?" toast over the outputs
    env = dict(os.environ,
               JUPYTER_CONFIG_DIR=str(home / "config"), JUPYTER_RUNTIME_DIR=str(home / "runtime"),
               JUPYTERLAB_SETTINGS_DIR=str(home / "settings"), JUPYTERLAB_WORKSPACES_DIR=str(home / "workspaces"))  # fmt: skip
    env.pop("JUPYTER_CONFIG_PATH", None)
    if config_path is not None:
        env["JUPYTER_CONFIG_PATH"] = str(config_path)
    cmd = [sys.executable, "-m", "jupyter", "lab", "--no-browser", "--ServerApp.ip=127.0.0.1",
           f"--ServerApp.port={port}", "--ServerApp.port_retries=0", f"--IdentityProvider.token={token}",
           f"--ServerApp.root_dir={folder}", "--LabApp.expose_app_in_browser=True", "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate"]  # fmt: skip
    if os.geteuid() == 0:
        cmd.append("--allow-root")  # Jupyter refuses root without it (CI containers run as root)
    log = open(home / "jupyterlab.log", "wb")
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 90
        while True:
            assert proc.poll() is None, f"JupyterLab exited: {(home / 'jupyterlab.log').read_text()[-2000:]}"
            try:
                with urllib.request.urlopen(f"{url}/api/status?token={token}", timeout=2) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            assert time.monotonic() < deadline, "JupyterLab did not answer within 90 s"
            time.sleep(0.5)
        yield {"url": url, "token": token, "folder": folder}
    finally:
        _stop(proc, "JupyterLab")
        log.close()


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    """JupyterLab as instructors open it (nbgrader's extension on), serving the generated notebooks."""
    folder = tmp_path_factory.mktemp("lab")
    _write_notebooks(folder)
    with _jupyterlab(folder, tmp_path_factory.mktemp("jupyter-home")) as server:
        yield server


@pytest.fixture(scope="module")
def learner_lab(tmp_path_factory):
    """JupyterLab as ``make lab`` opens it: the learner's copy of notebook 00, with the learners' Jupyter config."""
    from course_lib.notebook_export import export_student_notebooks

    source, folder = tmp_path_factory.mktemp("course"), tmp_path_factory.mktemp("learner")
    shutil.copy(ROOT / "notebooks" / LEARNER_NOTEBOOK, source / LEARNER_NOTEBOOK)
    export_student_notebooks(source, folder)
    learner = nbformat.read(folder / LEARNER_NOTEBOOK, as_version=4)
    for cell in learner.cells:  # no stored counts: a count on a cell then means this run executed it
        if cell.cell_type == "code":
            cell.outputs, cell.execution_count = [], None
    nbformat.write(learner, folder / LEARNER_NOTEBOOK)
    config = ROOT / "course_lib" / "data" / "jupyter-learner"
    with _jupyterlab(folder, tmp_path_factory.mktemp("learner-home"), config_path=config) as server:
        yield server


@pytest.fixture(scope="module")
def browser(chromium):
    import psutil
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        before = {c.pid for c in psutil.Process().children(recursive=True)}
        b = p.chromium.launch(executable_path=chromium, headless=True, args=CHROMIUM_FLAGS)
        ours = [c for c in psutil.Process().children(recursive=True) if c.pid not in before and "chrom" in c.name()]
        try:
            yield b
        finally:
            b.close()
            for c in ours:  # anything Chromium left behind, by pid
                if c.is_running():
                    c.kill()
            psutil.wait_procs(ours, timeout=10)


# The notebook panel showing a file, from JupyterLab's shell (exposed by --LabApp.expose_app_in_browser).
PANEL_JS = "Array.from(window.jupyterapp.shell.widgets('main')).find(w => w.context && w.context.path === NAME)"


class Notebook:
    """One notebook open in JupyterLab: run it, read its cells (from JupyterLab's models), take screenshots."""

    def __init__(self, browser, lab: dict, name: str) -> None:
        self.name = name.removesuffix(".ipynb")
        self.page = browser.new_page(viewport={"width": 1280, "height": 1000})
        self.page.set_default_timeout(60_000)
        self.shots: list[str] = []
        self.page.goto(f"{lab['url']}/lab/tree/{name}?token={lab['token']}")
        self.panel_js = PANEL_JS.replace("NAME", json.dumps(name))
        self.page.wait_for_function("() => window.jupyterapp && document.querySelector('.jp-Notebook .jp-Cell')")
        self.wait_kernel()
        # JupyterLab may restore other notebooks' tabs in this page: scope every DOM query to this panel.
        self.root = self.page.locator(f"[id={json.dumps(self.page.evaluate(f'() => {self.panel_js}.id'))}]")

    def wait_kernel(self) -> None:
        """Until the notebook's kernel is connected and idle."""
        self.page.wait_for_function(
            f"() => {{ const w = {self.panel_js}; const k = w && w.sessionContext.session && w.sessionContext.session.kernel;"
            " return k && k.connectionStatus === 'connected' && k.status === 'idle'; }",
            timeout=120_000,
        )

    def shot(self, step: str, cell: int | None = None) -> None:
        """Screenshot to out/browser/<notebook>-<step>.png, scrolled to cell ``cell``'s output if given."""
        SHOTS.mkdir(parents=True, exist_ok=True)
        if cell is not None:
            self.page.evaluate(f"() => {self.panel_js}.content.widgets[{cell}].node"
                               ".querySelector('.jp-Cell-outputArea').scrollIntoView({block: 'center'})")  # fmt: skip
        path = SHOTS / f"{self.name}-{step}.png"
        self.page.screenshot(path=str(path), full_page=True)
        self.shots.append(path.name)

    def run_all(self) -> None:
        """Run every cell (as Run > Run All Cells); retried once if the kernel reconnected and dropped it."""
        for _ in range(2):
            self.wait_kernel()
            # Not awaited: the command's promise resolves only when every cell has run.
            self.page.evaluate(f"() => {{ const w = {self.panel_js}; window.jupyterapp.shell.activateById(w.id);"
                               " window.jupyterapp.commands.execute('notebook:run-all-cells'); }")  # fmt: skip
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline:
                running, count = self.status(self.code_cells()[0])
                if running or count:
                    return
                time.sleep(0.5)
        raise AssertionError(f"{self.name}: Run All did not start the first cell")

    def code_cells(self) -> list[int]:
        """Indices (among all cells, as ``status`` takes them) of the code cells."""
        return self.page.evaluate(f"() => {self.panel_js}.content.widgets.map((w, i) => [w.model.type, i])"
                                  ".filter(p => p[0] === 'code').map(p => p[1])")  # fmt: skip

    def status(self, i: int) -> tuple[bool, int | None]:
        """(cell ``i`` running or queued?, its execution count), from JupyterLab's cell model."""
        running, count = self.page.evaluate(
            f"() => {{ const m = {self.panel_js}.content.widgets[{i}].model;"
            " return [m.executionState === 'running', m.executionCount]; }"
        )
        return running, count

    def cell(self, i: int):
        return self.root.locator(".jp-CodeCell").nth(i)

    def wait_done(self, i: int, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        while True:
            running, count = self.status(i)
            if count and not running:
                return
            assert time.monotonic() < deadline, f"cell {i} of {self.name} still running after {timeout_s:.0f} s"
            time.sleep(0.25)

    def errors(self) -> list[str]:
        """Text of every error or stderr output on the page."""
        sel = ('.jp-OutputArea-output[data-mime-type="application/vnd.jupyter.stderr"],'
               '.jp-OutputArea-output[data-mime-type="application/vnd.jupyter.error"]')  # fmt: skip
        return [(t or "")[:500] for t in self.root.locator(sel).all_text_contents()]

    def state(self, i: int) -> tuple[bool, list[int]]:
        """(cell ``i`` still running?, its drawn figures' points per trace), read in one go from the page."""
        running, points = self.page.evaluate(
            f"() => {{ const c = {self.panel_js}.content.widgets[{i}];"
            " return [c.model.executionState === 'running',"
            " Array.from(c.node.querySelectorAll('.js-plotly-plot')).flatMap(gd => (gd.data || []).map(t => (t.y || []).filter(v => v !== null && v !== undefined).length))]; }"
        )
        return running, points

    def plot_points(self, i: int) -> list[int]:
        """Points with a value (an idle interval has none) of each trace of each plotly figure drawn in cell ``i``."""
        return self.cell(i).evaluate(
            "el => Array.from(el.querySelectorAll('.js-plotly-plot'))"
            ".flatMap(gd => (gd.data || []).map(t => (t.y || []).filter(v => v !== null && v !== undefined).length))"
        )

    def svg_count(self, i: int) -> int:
        return self.cell(i).locator(".js-plotly-plot svg.main-svg").count()


@contextlib.contextmanager
def _open(browser, lab, name):
    """The notebook open in a page; a screenshot if the test fails, and the page closed either way."""
    nb = Notebook(browser, lab, name)
    try:
        yield nb
    except Exception:
        nb.shot("failure")
        raise
    finally:
        print("screenshots:", nb.shots)
        nb.page.close()


def test_block_explorer_figure_and_quiz_in_jupyterlab(browser, lab):
    with _open(browser, lab, "02_block_hashing.ipynb") as nb:
        nb.run_all()
        for i in range(3):
            nb.wait_done(i, 120)
        summary = nb.cell(0).locator(".widget-html-content").first
        assert "block_size=32" in (summary.text_content() or "")
        nb.shot("explorer")

        # The explorer answers a slider move: on the CPU it steps by 32 (the CPU kernel's rule), so one step
        # right is 64; the kernel recomputes and the page shows block_size=64.
        handle = nb.cell(0).locator(".widget-slider .noUi-handle").first
        handle.focus()
        handle.press("ArrowRight")
        nb.page.wait_for_function("el => el.textContent.includes('block_size=64')", arg=summary.element_handle(),
                                  timeout=30_000)  # fmt: skip
        nb.shot("explorer-slider")

        # The block figure is drawn by plotly.js as SVG.
        assert nb.svg_count(1) >= 1
        nb.shot("figure", cell=1)

        # The quiz records an answer: answer the first question (whatever its kind) and check it.
        check = nb.cell(2).get_by_role("button", name="Check", exact=True).first
        question = check.locator("xpath=..")
        if question.locator("input[type=text]").count():
            question.locator("input[type=text]").first.fill("32")
        else:
            question.locator("input[type=radio], input[type=checkbox]").first.check()
        check.click()
        question.get_by_text(re.compile(r"^(Correct|Not quite|Partly right)")).first.wait_for(timeout=30_000)
        nb.shot("quiz", cell=2)
        assert nb.errors() == []


NBGRADER_JS = "() => ['nbgrader:validate-assignment', 'nbgrader:open-formgrader'].filter(c => window.jupyterapp.commands.hasCommand(c))"


def test_run_all_on_a_learner_copy_reaches_the_quiz_without_instructor_tools(browser, learner_lab, lab):
    """A learner's Run All with every exercise unanswered: each says "not yet", no cell fails, the last cell
    (the quiz) runs; nbgrader's menu and Validate button are not there (they are in the instructors' lab)."""
    with _open(browser, lab, "02_block_hashing.ipynb") as instructor:
        assert instructor.page.evaluate(NBGRADER_JS), "control: the instructors' lab should have nbgrader's commands"
    with _open(browser, learner_lab, LEARNER_NOTEBOOK) as nb:
        assert nb.page.evaluate(NBGRADER_JS) == []
        menus = nb.page.locator(".lm-MenuBar-itemLabel").all_text_contents()
        assert menus and not [m for m in menus if "grader" in m.lower()], menus
        code = nb.code_cells()
        nb.run_all()
        nb.wait_done(code[-1], 600)  # Run All reached the last code cell and ran it
        assert all(nb.status(i)[1] for i in code), "every code cell ran"
        assert nb.errors() == []
        outputs = " ".join(nb.root.locator(".jp-OutputArea-output").all_text_contents())
        assert "not yet [00." in outputs and "no answer yet" in outputs.lower()
        nb.shot("learner-run-all")


def test_live_hit_rate_chart_moves_while_its_cell_runs(browser, lab):
    with _open(browser, lab, "06_metrics.ipynb") as nb:
        nb.run_all()
        nb.wait_done(0, 600)  # the vLLM server start (20-80 s on 2 idle cores, minutes on a loaded machine)
        assert nb.errors() == []
        # Cell 1 runs traffic and redraws the chart. Watch it while its prompt still shows [*].
        seen_running: list[int] = []
        deadline = time.monotonic() + 300
        while True:
            running, points = nb.state(1)
            if not running:
                break
            if points:
                seen_running.append(max(points))
            if seen_running and seen_running[-1] >= 2 and "live-running" not in " ".join(nb.shots):
                nb.shot("live-running", cell=1)
            assert time.monotonic() < deadline, "the live-chart cell ran for more than 300 s"
            time.sleep(0.2)
        nb.wait_done(1, 60)
        assert seen_running and max(seen_running) > 1, (
            f"while the cell ran, the chart showed at most {max(seen_running, default=0)} point(s) "
            f"({len(seen_running)} observations with a figure drawn)"
        )
        # finish() leaves a regular figure with every point (drawn as SVG once plotly.js has run).
        deadline = time.monotonic() + 60
        while not (nb.svg_count(1) >= 1 and max(nb.plot_points(1), default=0) > 1):
            assert time.monotonic() < deadline, f"no final figure with points: {nb.plot_points(1)}"
            time.sleep(0.5)
        nb.shot("live-final", cell=1)
        nb.wait_done(2, 60)
        assert nb.errors() == []
