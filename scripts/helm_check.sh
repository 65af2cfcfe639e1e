#!/usr/bin/env bash
# The Helm chart's CI check (`make helm-check`): for every values set (defaults, CPU-only trial, production
# GPU, external Redis) it runs `helm lint --strict` and `helm template` with Helm 4 and Helm 3, then validates
# every rendered object offline against the Kubernetes 1.35 schemas (kubernetes-validate, strict: unknown
# fields fail). Kinds outside Kubernetes' own API: KEDA's ScaledObject and TriggerAuthentication are validated
# against the schemas vendored in the chart (deploy/helm/thinkmesh/schemas/, strict too); cert-manager's
# Certificate is the only kind allowed to go unvalidated; tests/e2e/test_chart.py asserts its content instead.
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
PYTHON="${VENV:-.venv}/bin/python"
[ -x "$PYTHON" ] || PYTHON="$(command -v python3)"
# Schemas of these kinds are not in Kubernetes' API: skipped by kubernetes-validate, asserted by the tests.
ALLOWED_UNKNOWN='kind Certificate with api version cert-manager.io/v1'
# These are skipped by kubernetes-validate too, then validated against the chart's vendored CRD schemas.
VENDORED=(
  'kind ScaledObject with api version keda.sh/v1alpha1'
  'kind TriggerAuthentication with api version keda.sh/v1alpha1'
)
SCHEMAS="$CHART/schemas"

# Validates the rendered objects of the kinds in $SCHEMAS (keda.sh-v1alpha1-<kind>.json) against those schemas;
# prints how many it checked.
validate_vendored() {
  "$PYTHON" - "$1" "$SCHEMAS" <<'PY'
import json, pathlib, sys
import jsonschema, yaml
rendered, schemas = sys.argv[1], pathlib.Path(sys.argv[2])
checked, failed = 0, False
for obj in yaml.safe_load_all(open(rendered)):
    if not obj:
        continue
    group = obj["apiVersion"].replace("/", "-")
    path = schemas / f"{group}-{obj['kind'].lower()}.json"
    if not path.exists():
        continue
    checked += 1
    validator = jsonschema.Draft7Validator(json.loads(path.read_text()))
    for error in validator.iter_errors(obj):
        where = "/".join(map(str, error.absolute_path))
        print(f"{obj['kind']} {obj['metadata']['name']}: {where}: {error.message}", file=sys.stderr)
        failed = True
print(checked)
sys.exit(1 if failed else 0)
PY
}

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
  unexpected="$(grep -v -F -e "$ALLOWED_UNKNOWN" "${VENDORED[@]/#/-e}" <<<"$report" | grep -v '^$' || true)"
  if [ -n "$unexpected" ]; then
    echo "$unexpected" >&2
    echo "FAIL $name: objects without a Kubernetes $KUBE_VERSION schema" >&2
    failed=1
    continue
  fi
  if ! vendored="$(validate_vendored "$rendered")"; then
    echo "FAIL $name: KEDA objects do not validate against $SCHEMAS" >&2
    failed=1
    continue
  fi
  objects="$(grep -c '^kind:' "$rendered")"
  skipped="$(grep -c -F "$ALLOWED_UNKNOWN" <<<"$report" || true)"
  note=""
  [ "$vendored" -gt 0 ] && note=" ($vendored KEDA objects valid against the vendored CRD schemas)"
  [ "$skipped" -gt 0 ] && note="$note ($skipped cert-manager Certificates left to the tests)"
  echo "ok   $name: helm lint + template with $("$HELM" version --template '{{.Version}}') and $("$HELM3" version --template '{{.Version}}'); $objects objects valid for Kubernetes $KUBE_VERSION$note"
done

exit "$failed"
