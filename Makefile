# afno-repro: every target that needs Python creates the environment (.venv) first on a fresh machine.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.DEFAULT_GOAL := help
.PHONY: help install demo fewshot-demo test model-table benchmarks clean

help:  ## list the targets
	@grep -E '^[a-zA-Z_-]+:.*?## ' $(MAKEFILE_LIST) | awk -F':.*?## ' '{printf "  make %-14s %s\n", $$1, $$2}'

$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e ".[dev]"
	@touch $(STAMP)

install: $(STAMP)  ## create .venv and install the package with its test extras

demo: $(STAMP)  ## train AFNO inpainting on the embedded photographs (CPU, a few minutes) and print PSNR/SSIM vs baselines
	$(PY) train.py

fewshot-demo: $(STAMP)  ## finetune the demo's inpainting model on the embedded shapes and from scratch; print both mIoU (CPU minutes)
	$(PY) train.py experiment=fewshot_demo

test: $(STAMP)  ## run the test-suite
	$(PY) -m pytest -q

model-table: $(STAMP)  ## parameters and GFLOPs of every paper row, counted from the models, beside the paper's
	$(PY) scripts/model_table.py

benchmarks: $(STAMP)  ## AFNO speed vs the reference formulation, mask generator rate, mixer scaling
	$(PY) scripts/benchmark_mixers.py
	$(PY) scripts/benchmark_masks.py
	$(PY) scripts/model_table.py --scaling

clean:  ## remove run outputs and caches (keeps .venv)
	rm -rf outputs multirun .pytest_cache
