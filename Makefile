# raftcron — the two commands a newcomer needs are `make run` and `make test`.
PY      ?= python3
VENV    := .venv
BIN     := $(VENV)/bin
STAMP   := $(VENV)/.installed-dev
RSTAMP  := $(VENV)/.installed
SEEDS   ?= 0..299
# make test runs the suite over this many pytest-xdist workers: the suite mostly waits on
# processes and timers, so workers beyond the cores still shorten it (README, "Testing").
TEST_WORKERS ?= 3
PROTO_DIR := coord/pb
LOCK    := requirements.lock
PIP     := PIP_CONSTRAINT=$(abspath $(LOCK)) $(BIN)/python -m pip

.PHONY: run test lint proto sim schedsim bench clean venv dev lock screenshots

# Every install goes through the committed lock: PIP_CONSTRAINT pins the packages and the
# build backend's too, so a new release on PyPI cannot change what make run/test install.
$(RSTAMP): pyproject.toml $(LOCK)
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(PIP) install -q pip
	$(PIP) install -q -e .
	touch $@

$(STAMP): pyproject.toml $(LOCK)
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(PIP) install -q pip
	$(PIP) install -q -e '.[dev]'
	touch $@ $(RSTAMP)

## lock: re-resolve every dependency to today's newest allowed versions into requirements.lock
lock:
	rm -rf .lock-venv
	$(PY) -m venv .lock-venv
	.lock-venv/bin/python -m pip install -q --upgrade pip
	.lock-venv/bin/python -m pip install -q -e '.[dev]' hatchling
	{ sed -n '1,2p' $(LOCK); .lock-venv/bin/python -m pip freeze --all --exclude-editable \
	  | grep -v '^-e'; } > $(LOCK).new
	mv $(LOCK).new $(LOCK)
	rm -rf .lock-venv
	@echo "requirements.lock refreshed: now run 'make proto' and 'make test', then commit both"

venv: $(RSTAMP)
dev: $(STAMP)

## run: start a single-node agent (embedded coord + worker) running jobs.example.yaml
run: $(RSTAMP)
	$(BIN)/raftcron agent --jobs jobs.example.yaml

## test: the whole suite (unit, simulation sweep, compatibility, processes)
test: $(STAMP)
	PYTHONHASHSEED=0 $(BIN)/python -m pytest -q -n $(TEST_WORKERS) --dist worksteal

## screenshots: re-make docs/dashboard/*.png with the dashboard's browser tests
screenshots: $(STAMP)
	RAFTCRON_SCREENSHOTS=1 PYTHONHASHSEED=0 $(BIN)/python -m pytest -q -n 0 \
	  tests/dashboard/test_browser_pages.py tests/dashboard/test_browser_scale.py

## lint: ruff, mypy --strict, and the layering contract (DESIGN.md "Layers", tests/layering.py)
lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/mypy
	$(BIN)/python -m tests.layering

## proto: regenerate the committed *_pb2 modules from coord/pb/*.proto
proto: $(STAMP)
	$(BIN)/python -m coord.pb.generate

## sim: sweep simulator seeds, e.g. make sim SEEDS=1000..5999
sim: $(STAMP)
	PYTHONHASHSEED=0 $(BIN)/python -m tests.sim.sweep $(SEEDS)

## schedsim: sweep scheduler-simulator seeds, e.g. make schedsim SEEDS=0..19999
schedsim: $(STAMP)
	PYTHONHASHSEED=0 $(BIN)/python -m tests.schedsim.sweep $(SEEDS)

## bench: benchmarks against a real etcd side by side (not part of make test)
bench: $(STAMP)
	$(BIN)/python -m bench

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache
