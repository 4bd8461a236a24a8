# scorelab: `make help` lists the targets.
SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(VENV)/bin/pip
STAMP := $(VENV)/.installed
export PYTHONPATH := $(CURDIR)/src:$(PYTHONPATH)

.DEFAULT_GOAL := help

help: ## List the targets
	@grep -E '^[a-zA-Z_-]+:.*?## ' $(MAKEFILE_LIST) | awk 'BEGIN {FS = ":.*?## "}; {printf "  \033[36m%-14s\033[0m %s\n", $$1, $$2}'

$(STAMP): requirements.txt pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PIP) install -q -r requirements.txt
	$(PIP) install -q --no-deps -e .
	touch $(STAMP)

venv: $(STAMP) ## Create the virtual environment (pip, pinned torch from local wheels)

DEMO_RUN := logs/train/runs/experiment-mnist_demo
demo: $(STAMP) ## Train the MNIST demo (a fixed number of steps), sample, and score 1,000 samples of the final weights
	$(PY) -m scorelab.data.prepare mnist --root data/raw
	$(PY) -m scorelab.train experiment=mnist_demo
	$(PY) -m scorelab.evaluate ckpt_path=$(DEMO_RUN)/checkpoints/last.ckpt n_samples=1000 \
		precision=bf16 guidance.guide_ckpt=$(DEMO_RUN)/checkpoints/guide.ckpt guidance.weight=4 \
		hydra.run.dir=$(DEMO_RUN)/evaluation
	@echo "sample grid: $(DEMO_RUN)/evaluation/samples_grid.png   scores: $(DEMO_RUN)/evaluation/metrics.json"

data: $(STAMP) ## Put real MNIST into torchvision's raw layout under data/raw (offline-capable)
	$(PY) -m scorelab.data.prepare mnist --root data/raw

fid-weights: $(STAMP) ## Install the FID Inception weights into torch-fidelity's cache (offline)
	$(PY) -m scorelab.metrics.fid_weights

# The fast suite runs on both cores (pytest-xdist); `make test TEST_WORKERS=0` runs it in one process.
TEST_WORKERS ?= 2
test: $(STAMP) data ## Prepare MNIST if missing, then run the fast test suite (< 5 min on 2 cores)
	$(PY) -m pytest -q -p no:cacheprovider -n $(TEST_WORKERS)

test-full: $(STAMP) data fid-weights ## Run every test, slow ones included (prepares MNIST and the FID weights first)
	$(PY) -m pytest -q -p no:cacheprovider -m "slow or not slow"

lint: $(STAMP) ## ruff check and format check
	$(VENV)/bin/ruff check src tests benchmarks experiments
	$(VENV)/bin/ruff format --check src tests benchmarks experiments

format: $(STAMP) ## ruff format in place
	$(VENV)/bin/ruff format src tests benchmarks experiments
	$(VENV)/bin/ruff check --fix src tests benchmarks experiments

bench-nets: $(STAMP) ## Benchmark every network (img/s, memory, FLOPs, fraction of peak); BENCH_ARGS="--device cuda --compile" on a GPU
	$(PY) benchmarks/bench_nets.py $(BENCH_ARGS)

soak: $(STAMP) ## Kill-and-resume soak test (not in CI)
	$(PY) benchmarks/soak.py

clean: ## Remove caches and run outputs (keeps the venv and data)
	rm -rf outputs multirun logs wandb lightning_logs .pytest_cache .ruff_cache
	find . -name __pycache__ -type d -prune -exec rm -rf {} +

.PHONY: help venv demo data fid-weights test test-full lint format bench-nets soak clean
