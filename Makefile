# Kitten-and-Puppy Lab. Two commands on a fresh Debian machine: `make run` and `make test`.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
# TensorFlow build: the CUDA one when an NVIDIA GPU answers, else the (smaller) CPU one.
TF_EXTRA ?= $(shell nvidia-smi -L >/dev/null 2>&1 && echo gpu || echo cpu)
LAB_DATA_DIR ?= ../shared/data/dogs-vs-cats/train
LAB_MODELS_DIR ?= models

.PHONY: help install os-deps test test-fast lint run demo data web worker bench compose-check clean

help:
	@echo "make run    - set up and run the whole lab (redis-server, a worker, the web server)"
	@echo "make demo   - a quick training demo on the command line"
	@echo "make data   - download the dataset into LAB_DATA_DIR"
	@echo "make test   - set up and run the whole test suite (unit, stack, browser)"
	@echo "make test-fast - the unit tests only (tests/unit: no services, a few minutes)"
	@echo "make lint   - ruff"
	@echo "make web    - the web server alone (API and live channel; needs redis-server)"
	@echo "make worker - one Celery training worker alone (needs redis-server)"
	@echo "make bench  - benchmarks: scan speed, live latency, held-out accuracy (long)"
	@echo "make compose-check - the Docker Compose stack for real: build, train, restart (long)"

install: $(VENV)/.installed node_modules/.installed

# The Socket.IO browser client, from the npm registry (never a CDN, nothing copied in).
node_modules/.installed: package.json package-lock.json | os-deps
	npm ci --no-audit --no-fund --loglevel=error
	touch $@

# OS packages, installed only when missing: python3-venv (a separate Debian package),
# redis-server (the job queue and live-event bus; the tests start their own), chromium (the
# browser tests drive it), npm (fetches the Socket.IO client the dashboard serves) and
# postgresql (the tests start their own server for the PostgreSQL run store; Debian keeps
# initdb and pg_ctl in /usr/lib/postgresql/<version>/bin, off the PATH).
APT_INSTALL := DEBIAN_FRONTEND=noninteractive apt-get install -y -qq
os-deps:
	@missing=""; \
	$(PYTHON) -c 'import ensurepip, venv' >/dev/null 2>&1 || missing="$$missing python3-venv python3-pip"; \
	command -v redis-server >/dev/null 2>&1 || missing="$$missing redis-server"; \
	command -v chromium >/dev/null 2>&1 || missing="$$missing chromium"; \
	command -v npm >/dev/null 2>&1 || missing="$$missing npm"; \
	ls /usr/lib/postgresql/*/bin/initdb /usr/lib/postgresql/*/bin/pg_ctl >/dev/null 2>&1 \
	  || missing="$$missing postgresql"; \
	if [ -n "$$missing" ]; then \
	  echo "installing OS packages:$$missing (needs root)"; \
	  apt-get update -qq && $(APT_INSTALL) $$missing; \
	fi

# The postgres extra (psycopg) too: the tests run the run store on PostgreSQL as well.
# Makefile is a prerequisite so that a venv made before a change of these lines is redone.
$(VENV)/.installed: pyproject.toml Makefile | os-deps
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e ".[$(TF_EXTRA),dev,postgres]"
	touch $@

lint: $(VENV)/.installed
	$(PY) -m ruff check .

# Two test processes (pytest-xdist), each taking whole files: many tests wait on processes
# starting, restarting or timing out, so two share the 2 cores well (docs/BENCHMARKS.md).
TEST_JOBS ?= 2
test: install
	$(PY) -m ruff check .
	$(PY) -m pytest -n $(TEST_JOBS) --dist loadfile

# The unit tests alone: nothing started (not even PostgreSQL), for the edit-test loop.
test-fast: install
	$(PY) -m ruff check .
	$(PY) -m pytest tests/unit -m unit -n $(TEST_JOBS) --dist loadfile

# The whole lab: redis-server (if none answers), one worker and the web server; Ctrl-C stops
# what it started. Configuration by environment (LAB_PORT, LAB_DATA_DIR, REDIS_URL, ...).
run: install
	LAB_DATA_DIR="$(LAB_DATA_DIR)" LAB_MODELS_DIR="$(LAB_MODELS_DIR)" $(PY) -m launcher

# The Dogs vs. Cats photos into LAB_DATA_DIR: the Kaggle competition files when Kaggle
# credentials are set (KAGGLE_USERNAME/KAGGLE_KEY or ~/.kaggle/kaggle.json), else Microsoft's
# PetImages zip. Offline it says so.
data: install
	$(PY) -m ml download --dest "$(LAB_DATA_DIR)"

# A short CLI demo without the dashboard: a few epochs on 2,000 photos (a smoke test of the
# whole path, not an accuracy figure: see docs/BENCHMARKS.md).
demo: install
	$(PY) -m ml scan "$(LAB_DATA_DIR)"
	$(PY) -m ml train --data "$(LAB_DATA_DIR)" --out "$(LAB_MODELS_DIR)/demo" --limit 2000 --epochs 5 --progress
	$(PY) -m ml predict --model "$(LAB_MODELS_DIR)/demo/model.keras" \
	  "$$(find "$(LAB_DATA_DIR)" -type f \( -iname 'cat.*' -o -ipath '$(LAB_DATA_DIR)/*cat*/*' \) | head -n1)" \
	  "$$(find "$(LAB_DATA_DIR)" -type f \( -iname 'dog.*' -o -ipath '$(LAB_DATA_DIR)/*dog*/*' \) | head -n1)"
	@echo "Full-size training and held-out accuracy: see docs/BENCHMARKS.md"

# The parts one at a time (make run will start them all). Configuration: docs/CONFIGURATION.md.
web: install
	$(PY) -m dashboard

worker: install
	$(PY) -m celery -A worker.celery_app worker --concurrency 1 --loglevel INFO -n lab@%h

bench: install
	$(PY) bench/scan_speed.py
	$(PY) bench/live_latency.py --clients 50
	$(PY) bench/accuracy.py --data "$(LAB_DATA_DIR)" --recipe fast_cnn --epochs 30 --early-stopping-patience 6
	$(PY) bench/accuracy.py --data "$(LAB_DATA_DIR)" --recipe seed_cnn --epochs 15

# The Docker Compose stack for real (not part of `make test`: minutes, and it needs Docker):
# builds the CPU image, starts the stack, trains and predicts through the API, restarts it
# and tears it all down again. Only python3 and Docker are needed, no venv. Options:
# COMPOSE_CHECK_ARGS="--keep-images --build-gpu ..." (see docker/compose_check.py).
compose-check:
	$(PYTHON) docker/compose_check.py $(COMPOSE_CHECK_ARGS)

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache bench/out
