#!/usr/bin/env bash
# `make images`: builds the five images the chart deploys, from the lock, offline after one download.
#
#   1. the Python base (PYTHON_IMAGE). By default thinkmesh/python:3.11-bookworm, made here when missing:
#      `debootstrap --variant=minbase bookworm` plus python3 and python3-venv, `docker import`ed (~1 min; needs
#      root and debootstrap). No registry is asked, so it works where Docker Hub cannot be reached. Set
#      PYTHON_IMAGE=python:3.11-slim-bookworm (or any Debian 12 image with CPython 3.11) to use another.
#   2. the wheelhouse .whl/: every package of the lock files, downloaded on this host with the lock's hashes
#      checked (.whl/py), and the torch build of TORCH_VARIANT (.whl/torch).
#   3. thinkmesh-build (deploy/docker/build.Dockerfile: wheelhouse, lock, thinkmesh wheel), then the shared torch
#      layer and the images, each installing offline from thinkmesh-build.
#
# Settings (environment):
#   TORCH_VARIANT  cpu (default): torch's CPU wheel (TORCH, as the Makefile installs it); the torch images are
#                  tagged TAG-cpu and the policy gets the "policy" extra (transformers, backend hf).
#                  cuda: torch and its CUDA libraries from requirements/torch-cuda.txt, the policy on vLLM
#                  (requirements/vllm.txt): the images the chart pulls by default, tagged TAG.
#   IMAGE_PREFIX   registry and namespace of the images (default: the one values.yaml pulls from)
#   IMAGE_TAG      default: the chart's appVersion
#   PUSH=1         push every image after building it (docker login first)
#
# The legacy builder (DOCKER_BUILDKIT=0) builds the Dockerfiles as they are: BuildKit pulls its frontend image.
set -euo pipefail
cd "$(dirname "$0")/.."

export DOCKER_BUILDKIT=0
PYTHON="${PYTHON:-python3}"
TORCH="${TORCH:-torch==2.13.0}"
TORCH_VARIANT="${TORCH_VARIANT:-cpu}"
PYTHON_IMAGE="${PYTHON_IMAGE:-thinkmesh/python:3.11-bookworm}"
# The registry and namespace values.yaml pulls from: what precedes /thinkmesh-sandbox in its repository.
IMAGE_PREFIX="${IMAGE_PREFIX:-$(sed -n 's#^ *repository: *\(.*\)/thinkmesh-sandbox *$#\1#p' deploy/helm/thinkmesh/values.yaml)}"
IMAGE_TAG="${IMAGE_TAG:-$(sed -n 's/^appVersion: *"\{0,1\}\([^"]*\)"\{0,1\}$/\1/p' deploy/helm/thinkmesh/Chart.yaml)}"
case "$TORCH_VARIANT" in
  cpu) TORCH_TAG="$IMAGE_TAG-cpu" POLICY_EXTRA=policy ;;
  cuda) TORCH_TAG="$IMAGE_TAG" POLICY_EXTRA=vllm ;;
  *) echo "images: TORCH_VARIANT is cpu or cuda, not '$TORCH_VARIANT'" >&2; exit 2 ;;
esac
BUILD_IMAGE="thinkmesh-build:$IMAGE_TAG"
docker info >/dev/null 2>&1 || { echo "images: no Docker engine answers (start dockerd, or see docs/operations.md)" >&2; exit 1; }

seconds() { date +%s; }
elapsed() { echo $(($(seconds) - $1)); }

# 1. The base.
if ! docker image inspect "$PYTHON_IMAGE" >/dev/null 2>&1; then
  if [ "$PYTHON_IMAGE" = thinkmesh/python:3.11-bookworm ]; then
    command -v debootstrap >/dev/null || { echo "images: debootstrap is needed for the base (apt-get install debootstrap)" >&2; exit 1; }
    start="$(seconds)"
    root="$(mktemp -d)"
    trap 'rm -rf "$root"' EXIT
    debootstrap --variant=minbase --include=python3,python3-venv bookworm "$root" "${DEBIAN_MIRROR:-http://deb.debian.org/debian}" >/dev/null
    rm -rf "$root"/var/cache/apt/archives/*.deb "$root"/var/lib/apt/lists/*
    tar -C "$root" -c . | docker import --change 'CMD ["python3"]' - "$PYTHON_IMAGE" >/dev/null
    rm -rf "$root"
    trap - EXIT
    echo "images: base $PYTHON_IMAGE made with debootstrap in $(elapsed "$start") s"
  else
    docker pull "$PYTHON_IMAGE"
  fi
fi

# 2. The wheelhouse, for CPython 3.11 on Linux x86_64 whatever the host (as the lock is).
download() {  # pip download ARGS...: quiet, less the warnings of a pip.conf whose extra indexes are not there
  "$PYTHON" -m pip download -q --disable-pip-version-check --no-deps "${tags[@]}" "$@" \
    2> >(grep -v 'is ignored: it is neither a file nor a directory' >&2)
}
start="$(seconds)"
mkdir -p .whl/py
# runtime.txt holds every image's lock file (tests/unit/common/test_lock.py checks it), so it is fetched once.
locks=(build runtime)
[ "$TORCH_VARIANT" = cpu ] || locks+=(vllm)
# Downloaded once per content of the lock files (and of TORCH): pip asks the index about every pin even when
# the file is already here.
files=()
for lock in "${locks[@]}" torch-cuda; do files+=("requirements/$lock.txt"); done
stamp="$( (cat "${files[@]}"; echo "$TORCH_VARIANT $TORCH") | sha256sum | cut -c1-16)"
if [ "$(cat .whl/STAMP 2>/dev/null)" != "$stamp" ]; then
  for lock in "${locks[@]}"; do
    download --require-hashes -d .whl/py -r "requirements/$lock.txt"
  done
  # .whl/torch holds one variant only: the build context carries no CUDA wheels into a CPU build.
  rm -rf .whl/torch
  mkdir -p .whl/torch
  if [ "$TORCH_VARIANT" = cpu ]; then
    # shellcheck disable=SC2086  # TORCH may carry pip options (e.g. --index-url), as in the Makefile
    download -d .whl/torch $TORCH
  else
    download --require-hashes -d .whl/torch -r requirements/torch-cuda.txt
  fi
  echo "$stamp" > .whl/STAMP
fi
echo "images: wheelhouse .whl/ ready in $(elapsed "$start") s ($(du -sh .whl | cut -f1))"

# 3. The images.
build() {  # build REF DOCKERFILE [build args...]
  local ref=$1 file=$2 start
  shift 2
  start="$(seconds)"
  docker build -q -f "deploy/docker/$file.Dockerfile" -t "$ref" --build-arg "PYTHON_IMAGE=$PYTHON_IMAGE" \
    --build-arg "BUILD_IMAGE=$BUILD_IMAGE" "$@" . \
    > /dev/null 2> >(grep -v -e 'legacy builder is deprecated' -e 'BuildKit is currently disabled' \
      -e 'DOCKER_BUILDKIT=0' -e '^ *environment-variable\.$' -e '^$' >&2)
  printf 'images: %-52s %4s s  %s\n' "$ref" "$(elapsed "$start")" \
    "$(docker image inspect -f '{{.Size}}' "$ref" | awk '{printf "%.0f MB", $1 / 1e6}')"
}
build "$BUILD_IMAGE" build
torch_image="$IMAGE_PREFIX/thinkmesh-torch:$TORCH_TAG"
built=("$IMAGE_PREFIX/thinkmesh-sandbox:$IMAGE_TAG" "$IMAGE_PREFIX/thinkmesh-search:$IMAGE_TAG" "$torch_image")
build "${built[0]}" sandbox
build "${built[1]}" search
build "$torch_image" torch --build-arg "TORCH_VARIANT=$TORCH_VARIANT"
for name in policy ppm trainer; do
  ref="$IMAGE_PREFIX/thinkmesh-$name:$TORCH_TAG"
  built+=("$ref")
  extra=()
  [ "$name" = policy ] && extra=(--build-arg "EXTRA=$POLICY_EXTRA")
  build "$ref" "$name" --build-arg "TORCH_IMAGE=$torch_image" "${extra[@]}"
done

if [ "${PUSH:-0}" = 1 ]; then
  for ref in "${built[@]}"; do docker push "$ref"; done
fi
