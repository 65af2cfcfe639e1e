# thinkmesh — every target sets up what it needs by itself; on a fresh machine `make demo` and `make test`
# are the only two commands anyone needs.

PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV   ?= .venv
BIN    := $(VENV)/bin
# Installed before anything else so that no resolver ever pulls a multi-GB CUDA build on a CPU machine.
# GPU users: make TORCH='torch==2.13.0 --index-url https://download.pytorch.org/whl/cu128'
TORCH  ?= torch==2.13.0
EXTRAS ?= all
STAMP  := $(VENV)/.installed

.PHONY: venv demo test unit integration lint proto helm-check system-deps clean

venv: $(STAMP)

# Re-installs only when pyproject.toml changes; the stamp makes the target idempotent.
$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q $(TORCH)
	$(BIN)/python -m pip install -q -e ".[$(EXTRAS)]"
	@touch $@

system-deps:
	@bash scripts/system_deps.sh

proto: $(STAMP)
	PATH="$(abspath $(BIN)):$$PATH" $(BIN)/python -m grpc_tools.protoc -I protos \
	  --python_out=protos --grpc_python_out=protos --mypy_out=protos --mypy_grpc_out=protos \
	  protos/thinkmesh/v1/*.proto

lint: $(STAMP)
	$(BIN)/ruff check services tests
	$(BIN)/mypy services

helm-check: $(STAMP)
	bash scripts/helm_check.sh

test: $(STAMP) system-deps lint helm-check
	$(BIN)/pytest -q -p no:cacheprovider

unit: $(STAMP)
	$(BIN)/pytest -q tests/unit

demo: $(STAMP)
	bash scripts/demo.sh

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache
