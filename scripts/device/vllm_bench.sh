#!/usr/bin/env bash
# The GPU check of issue #29, for a lent GPU machine (the `device` tool): the vllm backend on a Qwen2.5-0.5B-shaped
# model (random weights) — generated tokens/s of a search-shaped load (32 trees × 4 levels × 8 candidates, 128 new
# tokens a step), vLLM's prefix-cache hit rate over it, and the time of an in-place model swap
# (services/dev/vllm_bench.py; `--shape micro` of the same code runs in `make test-vllm` on vLLM's CPU build).
#
# vLLM must be importable there: its CUDA wheel (with its dependencies, several hundred MB) is more than a device
# call carries (64 MiB), so on a machine without it the script says so and exits 3 without spending the GPU.
# Run from the repository root: the device call's command "bash scripts/device/vllm_bench.sh", timeout_s 540.
set -euo pipefail

SHAPE="${SHAPE:-0.5b}"
RESULTS="${OUT:-${TMPDIR:-/tmp}/vllm-bench}"
PYTHON="${PYTHON:-python3}"
mkdir -p "$RESULTS"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false

{ nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv 2>/dev/null || echo "no GPU"; } | tee "$RESULTS/gpu.txt"
if ! "$PYTHON" -c 'import vllm; print("vllm", vllm.__version__)' | tee -a "$RESULTS/gpu.txt"; then
    echo "vLLM is not installed on this machine: nothing measured" | tee -a "$RESULTS/gpu.txt"
    exit 3
fi
"$PYTHON" -m services.dev.vllm_bench --shape "$SHAPE" --json "$@" 2> "$RESULTS/bench.log" | tail -n 1 | tee "$RESULTS/bench.json"
