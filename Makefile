# Two commands do everything from a fresh clone: `make run` and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
HOST ?= 127.0.0.1
PORT ?= 8700
DATA_DIR ?= ./tidings-data

.PHONY: run cluster test bench demo soak reliability clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet -e .
	touch $@

$(VENV)/.installed-test: pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet -e '.[test]'
	command -v chromium >/dev/null || (apt-get update -qq && apt-get install -y -qq chromium)
	touch $(VENV)/.installed $@

demo: $(VENV)/.installed
	$(BIN)/tidings demo $(if $(ORDERS),--orders $(ORDERS))

run: $(VENV)/.installed
	$(BIN)/tidings serve --host $(HOST) --port $(PORT) --data-dir $(DATA_DIR)

$(VENV)/.installed-cluster: pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet -e '.[cluster]'
	touch $(VENV)/.installed $@

# Three nats-servers and three hub nodes (8701-8703) on loopback; Ctrl-C stops them.
# See README, "Running a cluster".
cluster: $(VENV)/.installed-cluster
	$(BIN)/tidings cluster --data-dir $(or $(CLUSTER_DIR),./cluster-data)

test: $(VENV)/.installed-test
	$(BIN)/ruff check src tests bench examples
	$(BIN)/mypy
	$(BIN)/pytest -q

$(VENV)/.installed-bench: pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet -e '.[bench]'
	command -v wrk >/dev/null || (apt-get update -qq && apt-get install -y -qq wrk)
	touch $@

bench: $(VENV)/.installed $(VENV)/.installed-bench
	$(BIN)/tidings bench log
	$(BIN)/tidings bench handlers
	$(BIN)/tidings bench http
	$(BIN)/tidings bench ws
	$(BIN)/tidings bench webhooks
	$(BIN)/tidings bench shop
	$(BIN)/tidings bench lookup
	$(BIN)/tidings bench streams
	$(BIN)/tidings bench nats

# Ten minutes of hostile clients beside ordinary publishes; prints a JSON summary.
soak: $(VENV)/.installed-test
	$(BIN)/python tests/support/soak.py --seconds $(or $(SOAK_SECONDS),600)

# Kill loops, a full disk, flipped bits, power cuts and the soak, bounded in time (at
# most about 45 minutes); RELIABILITY_SCALE=0.1 for a quick look. See docs/reliability.md.
reliability: $(VENV)/.installed-test
	$(BIN)/python tests/support/reliability.py

clean:
	rm -rf $(VENV) build src/*.egg-info
