# raftcron — the two commands a newcomer needs are `make run` and `make test`.
PY      ?= python3
VENV    := .venv
BIN     := $(VENV)/bin
STAMP   := $(VENV)/.installed-dev
RSTAMP  := $(VENV)/.installed
SEEDS   ?= 0..299
PROTO_DIR := coord/api/proto

.PHONY: run test lint proto sim bench clean venv dev

$(RSTAMP): pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e .
	touch $@

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[dev]'
	touch $@ $(RSTAMP)

venv: $(RSTAMP)
dev: $(STAMP)

## run: start a single-node agent (embedded coord + worker) running jobs.example.yaml
run: $(RSTAMP)
	$(BIN)/raftcron agent --jobs jobs.example.yaml

## test: the whole suite (unit, simulation sweep, compatibility, processes)
test: $(STAMP)
	PYTHONHASHSEED=0 $(BIN)/python -m pytest -q

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/mypy

## proto: regenerate the committed *_pb2 modules from coord/api/proto/*.proto
proto: $(STAMP)
	$(BIN)/python -m coord.api.proto.generate

## sim: sweep simulator seeds, e.g. make sim SEEDS=1000..5999
sim: $(STAMP)
	PYTHONHASHSEED=0 $(BIN)/python -m tests.sim.sweep $(SEEDS)

## bench: benchmarks against a real etcd side by side (not part of make test)
bench: $(STAMP)
	$(BIN)/python -m bench

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache
