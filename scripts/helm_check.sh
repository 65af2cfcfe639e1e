#!/usr/bin/env bash
# The Helm chart's CI check (`make helm-check`): for every values set (defaults, CPU-only trial, production
# GPU, external Redis) it runs `helm lint --strict` and `helm template` with Helm 4 and Helm 3, then validates
# every rendered object offline against the Kubernetes 1.35 schemas (kubernetes-validate, strict: unknown
# fields fail). Kinds outside Kubernetes' own API (cert-manager's Certificate) are the only ones allowed to
# go unvalidated; tests/e2e/test_chart.py asserts their content instead.
#
#   bash scripts/helm_check.sh        (~10 s; installs helm into .tools/ first when needed)
set -euo pipefail

cd "$(dirname "$0")/.."
CHART=deploy/helm/thinkmesh
VALUES_DIR=deploy/helm/values
KUBE_VERSION=1.35.0
HELM="${HELM:-.tools/helm}"
HELM3="${HELM3:-.tools/helm3}"
VALIDATE="${VENV:-.venv}/bin/kubernetes-validate"
[ -x "$VALIDATE" ] || VALIDATE="$(command -v kubernetes-validate || true)"
[ -n "$VALIDATE" ] || { echo "helm_check: kubernetes-validate is missing (pip install kubernetes-validate)" >&2; exit 1; }
# Schemas of these kinds are not in Kubernetes' API: skipped by kubernetes-validate, asserted by the tests.
ALLOWED_UNKNOWN='kind Certificate with api version cert-manager.io/v1'

bash scripts/install_helm.sh

out="$(mktemp -d)"
trap 'rm -rf "$out"' EXIT

# name=values file ("" for the chart defaults)
sets=("defaults=")
for file in "$VALUES_DIR"/*.yaml; do
  sets+=("$(basename "$file" .yaml)=$file")
done

failed=0
for set in "${sets[@]}"; do
  name="${set%%=*}"
  file="${set#*=}"
  args=()
  [ -n "$file" ] && args=(-f "$file")
  rendered="$out/$name.yaml"
  ok=1

  for helm in "$HELM" "$HELM3"; do
    version="$("$helm" version --template '{{.Version}}')"
    if ! lint="$("$helm" lint --strict "$CHART" "${args[@]}" --kube-version "$KUBE_VERSION" 2>&1)"; then
      echo "$lint" >&2
      echo "FAIL $name: helm $version lint" >&2
      ok=0
      continue
    fi
    if ! "$helm" template thinkmesh "$CHART" "${args[@]}" --namespace thinkmesh --kube-version "$KUBE_VERSION" \
        > "$rendered.$version" 2> "$out/err"; then
      cat "$out/err" >&2
      echo "FAIL $name: helm $version template" >&2
      ok=0
    fi
  done
  [ "$ok" -eq 1 ] || { failed=1; continue; }
  cp "$rendered.$("$HELM" version --template '{{.Version}}')" "$rendered"

  report="$("$VALIDATE" --kubernetes-version "$KUBE_VERSION" --strict --quiet "$rendered" 2>&1)" || {
    echo "$report" >&2
    echo "FAIL $name: objects do not validate against Kubernetes $KUBE_VERSION" >&2
    failed=1
    continue
  }
  unexpected="$(grep -v -F "$ALLOWED_UNKNOWN" <<<"$report" | grep -v '^$' || true)"
  if [ -n "$unexpected" ]; then
    echo "$unexpected" >&2
    echo "FAIL $name: objects without a Kubernetes $KUBE_VERSION schema" >&2
    failed=1
    continue
  fi
  objects="$(grep -c '^kind:' "$rendered")"
  skipped="$(grep -c -F "$ALLOWED_UNKNOWN" <<<"$report" || true)"
  note=""
  [ "$skipped" -gt 0 ] && note=" ($skipped cert-manager Certificates left to the tests)"
  echo "ok   $name: helm lint + template with $("$HELM" version --template '{{.Version}}') and $("$HELM3" version --template '{{.Version}}'); $objects objects valid for Kubernetes $KUBE_VERSION$note"
done

exit "$failed"
