#!/usr/bin/env bash
# `make lock`: resolves every Python install of the project once and writes the lock, requirements/*.txt.
#
#   constraints.txt  the one resolution: every extra, vLLM and the CUDA build of torch together, for CPython 3.11
#                    on Linux x86_64 (this machine, CI and every image). Each file below is a subset of it.
#   <extra>.txt      one per pyproject extra (all, runtime, sandbox, search, policy, ppm, trainer), with hashes and
#                    without torch: the Makefile and the images install torch first (TORCH, or torch-cuda.txt), so
#                    these files never pull a CUDA build onto a CPU machine. They are resolved against the CPU
#                    wheel of torch, whose requirements are the CUDA build's less the CUDA libraries.
#   vllm.txt         what the GPU policy image adds to torch-cuda.txt: vLLM and the policy extra.
#   torch-cuda.txt   torch and its CUDA libraries from PyPI: the base layer of the GPU images.
#   build.txt        the build backend of the thinkmesh wheel (the images build it offline).
#   uv.txt           the installer the Makefile uses.
#   inputs.sha256    the digest of what this was resolved from (scripts/lock_inputs.py).
#
# By default every pin moves to the newest release pyproject's ranges allow; LOCK_UPGRADE=0 keeps the current
# pins wherever they still satisfy pyproject (use it after adding a dependency).
set -euo pipefail
cd "$(dirname "$0")/.."

UV="${UV:-.venv/bin/uv}"
TORCH_VERSION="${TORCH_VERSION:-2.13.0}"
OUT=requirements
PLATFORM=(--python-version 3.11 --python-platform x86_64-manylinux_2_28)
UPGRADE=()
[ "${LOCK_UPGRADE:-1}" = 1 ] && UPGRADE=(--upgrade)
# The CPU wheel of torch: on this project's machines it lies on disk; elsewhere PyTorch's CPU index serves it.
if [ -n "${TORCH_FIND_LINKS:-}" ] || [ -d /opt/wheels ]; then
  CPU_TORCH=(--find-links "${TORCH_FIND_LINKS:-/opt/wheels}")
else
  CPU_TORCH=(--extra-index-url https://download.pytorch.org/whl/cpu --index-strategy unsafe-best-match)
fi

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
echo "torch==$TORCH_VERSION" > "$work/torch-cuda.in"
echo "torch==$TORCH_VERSION+cpu" > "$work/torch-cpu.in"

compile() {  # compile OUTPUT ARGS...: one uv pip compile, with the project's header
  local output=$1
  shift
  "$UV" pip compile --quiet "${PLATFORM[@]}" --custom-compile-command "make lock" -o "$OUT/$output" "$@"
}

# 1. The one resolution. A dependency that vLLM caps (transformers, numpy) is held where vLLM allows, so the
#    transformers the CPU tests run is the one the GPU policy image serves with.
compile constraints.txt "${UPGRADE[@]}" pyproject.toml --all-extras -c "$work/torch-cuda.in"

# 2. The CPU installs, one file per extra, torch left out (its requirements stay in).
for extra in all runtime sandbox search policy ppm trainer; do
  compile "$extra.txt" --generate-hashes pyproject.toml --extra "$extra" -c "$OUT/constraints.txt" \
    "${CPU_TORCH[@]}" --override "$work/torch-cpu.in" --no-emit-package torch
done

# 3. The GPU images: torch with its CUDA libraries (the shared base layer), and what the policy adds on vLLM.
compile torch-cuda.txt --generate-hashes "$work/torch-cuda.in" -c "$OUT/constraints.txt"
excluded=()
for name in $(grep -oE '^[a-z0-9][a-z0-9._-]*' "$OUT/torch-cuda.txt"); do excluded+=(--no-emit-package "$name"); done
compile vllm.txt --generate-hashes pyproject.toml --extra vllm -c "$OUT/constraints.txt" "${excluded[@]}"

# 4. Tools: the wheel's build backend and the installer.
python3 -c 'import tomllib; print("\n".join(tomllib.load(open("pyproject.toml", "rb"))["build-system"]["requires"]))' \
  > "$work/build.in"
compile build.txt --generate-hashes "${UPGRADE[@]}" "$work/build.in"
echo uv > "$work/uv.in"
compile uv.txt --generate-hashes "${UPGRADE[@]}" "$work/uv.in"
# What this lock was resolved from (test_lock.py recomputes it: a dependency changed without `make lock` fails).
python3 scripts/lock_inputs.py > "$OUT/inputs.sha256"
# The inputs made above live in a temporary folder: name them by what made them, so the files are the same each run.
sed -i "s#$work/#scripts/lock.sh:#g" "$OUT"/*.txt
echo "lock: $(grep -c '==' "$OUT/constraints.txt") packages in $OUT/constraints.txt; $OUT/*.txt written"
