# afno-repro: every target that needs Python creates the environment (.venv) first on a fresh machine.
SHELL := /bin/bash
PYTHON ?= python3
# The checkout, absolute: `make -f <checkout>/Makefile ...` from another folder writes outputs/ there.
ROOT := $(dir $(abspath $(lastword $(MAKEFILE_LIST))))
VENV := $(ROOT).venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.DEFAULT_GOAL := help
.PHONY: help install demo fewshot-demo test test-all model-table benchmarks gpu-check reproduce-all clean
# Byte-code goes into the environment, not beside the sources: a test run leaves the checkout as it found it.
export PYTHONPYCACHEPREFIX := $(VENV)/pycache

help:  ## list the targets
	@grep -E '^[a-zA-Z_-]+:.*?## ' $(MAKEFILE_LIST) | awk -F':.*?## ' '{printf "  make %-14s %s\n", $$1, $$2}'

$(STAMP): $(ROOT)pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e "$(ROOT)[dev]"
	@touch $(STAMP)

install: $(STAMP)  ## create .venv and install the package with its test extras

demo: $(STAMP)  ## train AFNO inpainting on the embedded photographs (CPU, a few minutes) and print PSNR/SSIM vs baselines
	$(PY) $(ROOT)train.py

fewshot-demo: $(STAMP)  ## finetune the demo's inpainting model on the embedded shapes and from scratch; print both mIoU (CPU minutes)
	$(PY) $(ROOT)train.py experiment=fewshot_demo

test: $(STAMP)  ## the fast tier (minutes): unit, config and in-process tests, docstring examples, one CLI smoke run
	cd $(ROOT) && $(PY) -m pytest -q -m "not slow"

test-all: $(STAMP)  ## every test (what CI runs): also every README command as printed, the pipeline, Slurm, DDP
	cd $(ROOT) && $(PY) -m pytest -q

SCALE ?= paper
reproduce-all: $(STAMP)  ## every table and figure, pretraining first, then the report in outputs/report/<scale>/ (SCALE=smoke: embedded data, CPU minutes; ARGS="--dry-run", "--only table3_fewshot", data folders)
	$(PY) -m afno_repro.pipeline --scale $(SCALE) $(ARGS)

model-table: $(STAMP)  ## parameters and GFLOPs of every paper row, counted from the models, beside the paper's
	$(PY) $(ROOT)scripts/model_table.py

benchmarks: $(STAMP)  ## AFNO speed vs the reference formulation, mask generator rate, mixer scaling, scoring vs forward
	$(PY) $(ROOT)scripts/benchmark_mixers.py
	$(PY) $(ROOT)scripts/benchmark_masks.py
	$(PY) $(ROOT)scripts/model_table.py --scaling
	$(PY) $(ROOT)scripts/benchmark_scoring.py

gpu-check: $(STAMP)  ## on a GPU: mixer speed, one training step per Table 2/4/5 row, the bf16 smoke sweep -> outputs/gpu_check.json (<10 min)
	mkdir -p outputs && $(PY) $(ROOT)scripts/gpu_check.py --out outputs/gpu_check.json

clean:  ## remove run outputs and caches (keeps .venv)
	rm -rf outputs multirun .pytest_cache
