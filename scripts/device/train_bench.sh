#!/usr/bin/env bash
# The GPU check of issue #28, for a lent GPU machine (the `device` tool: one H100/H200, 15 minutes a session).
#
# Trains a Qwen2.5-0.5B-shaped model (random weights, curriculum solutions) for STEPS optimizer steps twice — on
# one process as a one-GPU trainer pod would, and under FSDP (torchrun, one rank: the sharding, the bf16 mixed
# precision over fp32 weights, the per-layer activation checkpointing and the full-state gather before the save all
# run) — and reports tokens/s, peak GPU memory and the sizing estimate for the same run. Then the sizing table.
#
# Run from the repository root. The machine's python3 has torch, transformers and accelerate; the versions this
# project pins travel as wheels when `.whl/` holds them (pure Python, a few MB):
#   echo /.whl/ >> .git/info/exclude
#   python3 -m pip download --no-deps --only-binary=:all: -d .whl transformers==5.19.0 accelerate==1.16.0
# and the device call: carry [".whl"], command "bash scripts/device/train_bench.sh", timeout_s 540.
# On a machine without a GPU, `STEPS=2 SHAPE=micro bash scripts/device/train_bench.sh` runs the same commands, with two
# DDP processes in place of FSDP (CI does: tests/integration/trainer/test_train_bench.py).
set -euo pipefail

STEPS="${STEPS:-300}"
SHAPE="${SHAPE:-0.5b}"
BATCH="${BATCH:-16}"
RESULTS="${OUT:-${TMPDIR:-/tmp}/train-bench}"
PYTHON="${PYTHON:-python3}"
mkdir -p "$RESULTS"

if compgen -G ".whl/*.whl" > /dev/null; then
    "$PYTHON" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
    export PYTHONPATH="/tmp/site:$PWD"
else
    export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
fi
export PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false

{ nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv 2>/dev/null || echo "no GPU"; } | tee "$RESULTS/gpu.txt"
"$PYTHON" -c 'import torch, transformers, accelerate; print("torch", torch.__version__, "transformers", transformers.__version__, "accelerate", accelerate.__version__)' | tee -a "$RESULTS/gpu.txt"

bench() {  # NAME ARGS...: one run, its JSON report kept as NAME.json
    local name="$1"; shift
    "$PYTHON" -m services.dev.train_bench --shape "$SHAPE" --steps "$STEPS" --batch-size "$BATCH" --json "$@" \
        2> "$RESULTS/$name.log" | tail -n 1 | tee "$RESULTS/$name.json"
}

bench plain
if "$PYTHON" -c 'import sys, torch; sys.exit(not torch.cuda.is_available())'; then
    bench fsdp --fsdp on --gradient-checkpointing on
else  # no GPU, no FSDP (Accelerate runs CPU processes as DDP): the two-process path instead
    bench ddp --nproc-per-node 2
fi
"$PYTHON" -m services.dev.train_bench --sizing | tee "$RESULTS/sizing.md"
