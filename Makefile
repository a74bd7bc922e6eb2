# Two commands on a fresh machine: `make demo` (train a tiny FPDM on digits, write a sample grid) and
# `make test`. Both create the virtual environment first if it is missing.
VENV ?= .venv
PY := $(VENV)/bin/python
FPDM := $(VENV)/bin/fpdm
DEMO := runs/demo-fpdm

.PHONY: venv demo test lint clean

venv: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e ".[dev]"
	touch $@

demo: venv
	$(FPDM) train --data digits --model FPDM-T/2 --out $(DEMO) --threads 1 $(if $(wildcard $(DEMO)/ckpt.pt),--resume)
	$(FPDM) sample --ckpt $(DEMO)/ckpt.pt --steps 250 --iters 4 --seeds 0-99 --threads 1 --out $(DEMO)/samples

test: venv
	$(PY) -m pytest -q

lint: venv
	$(VENV)/bin/ruff check src tests tools benchmarks

clean:
	rm -rf $(VENV) runs .pytest_cache .ruff_cache
