# persona-interp: `make demo` runs the main job (`interp pipeline`) on the embedded default model, `make test` the tests.
# Both bootstrap .venv idempotently (torch 2.13.0 CPU build first, then the package with pinned deps).

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
RUNS ?= runs
PIP_QUIET := --quiet --disable-pip-version-check

.PHONY: venv demo planted-demo screenshot test test-fast bench trait-study lint format clean

venv: $(STAMP)

$(STAMP): pyproject.toml requirements.lock
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install $(PIP_QUIET) --upgrade pip
	$(BIN)/pip install $(PIP_QUIET) torch==2.13.0
	$(BIN)/pip install $(PIP_QUIET) -c requirements.lock -e '.[dev]'
	$(BIN)/python -c "import torch, transformers, interp, cli"
	touch $(STAMP)

# The main job: fine-tune -> evaluate -> diff-neurons -> ablate / patch / scale -> report (resumable).
demo: $(STAMP)
	$(BIN)/interp pipeline --trait extraversion --out $(RUNS)/demo

# Ground truth: known emoji neurons planted into a copy of the model, found and ablated again.
planted-demo: $(STAMP)
	$(BIN)/interp models fetch smollm2-135m
	$(BIN)/interp plant --model smollm2-135m --out $(RUNS)/planted-demo/planted
	$(BIN)/interp diff-neurons --base smollm2-135m --finetuned $(RUNS)/planted-demo/planted \
		--prompts 'persona-demo[0::2]' --out $(RUNS)/planted-demo/diff --top-k 200
	$(BIN)/interp ablate --model $(RUNS)/planted-demo/planted --neurons-from $(RUNS)/planted-demo/diff/neurons.csv \
		--top-k 6 --prompts 'persona-demo[1::2]' --alternative from-diff --samples 1 --out $(RUNS)/planted-demo/ablate
	$(BIN)/interp report $(RUNS)/planted-demo

# The README's screenshot of the demo report, taken the way the browser test takes it (needs chromium).
screenshot: $(STAMP)
	$(BIN)/python -m tests.browser $(RUNS)/demo/report.html docs/report.png

# Two pytest-xdist workers, one torch thread each: on two cores that beats one process with two threads (most
# tests are short and single-threaded). A file's tests stay in one worker (tests/conftest.py groups them).
TEST_WORKERS ?= 2
PYTEST := OMP_NUM_THREADS=1 $(BIN)/python -m pytest -n $(TEST_WORKERS) --dist loadgroup

test: $(STAMP)
	$(PYTEST)

test-fast: $(STAMP)
	$(PYTEST) -m "not slow"

bench: $(STAMP)
	$(BIN)/python -m tests.benchmarks.bench

trait-study: $(STAMP)
	HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 $(BIN)/python -m finetune.trait_study --out $(RUNS)/trait-study

lint: $(STAMP)
	$(BIN)/ruff check . && $(BIN)/ruff format --check .

format: $(STAMP)
	$(BIN)/ruff check --fix . && $(BIN)/ruff format .

clean:
	rm -rf $(VENV) $(RUNS) .pytest_cache .ruff_cache *.egg-info
