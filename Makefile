# Two entry points, both self-installing on a fresh machine (Python 3.11+, Node 20 for the
# Node.js example tests):
#   make cluster   set up and start a local 3-node cluster (Ctrl-C stops it)
#   make test      set up and run the whole test suite
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
DATA_DIR ?= ./raftka-data

.PHONY: cluster broker test lint proto bench clean

$(BIN)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $@

examples/node/node_modules/.installed: examples/node/package.json
	cd examples/node && npm install --no-audit --no-fund --loglevel=error
	touch $@

examples/nestjs/node_modules/.installed: examples/nestjs/package.json
	cd examples/nestjs && npm install --no-audit --no-fund --loglevel=error
	touch $@

cluster: $(BIN)/.installed
	$(BIN)/raftka cluster up --nodes 3 --data-dir $(DATA_DIR)

broker: $(BIN)/.installed
	$(BIN)/raftka broker --id 1 --data-dir $(DATA_DIR)/single --listen 127.0.0.1:9090

test: $(BIN)/.installed examples/node/node_modules/.installed examples/nestjs/node_modules/.installed
	$(BIN)/ruff check .
	$(BIN)/mypy
	$(BIN)/python -m pytest

lint: $(BIN)/.installed
	$(BIN)/ruff check .
	$(BIN)/mypy

proto: $(BIN)/.installed
	$(BIN)/python -m raftka.proto.generate

bench: $(BIN)/.installed
	$(BIN)/raftka bench produce
	$(BIN)/raftka bench consume

clean:
	rm -rf $(VENV) examples/node/node_modules examples/nestjs/node_modules .pytest_cache
