#!/usr/bin/env bash
# Offline lint of the deployment (make lint-deploy): render each deploy/k8s overlay with a pinned
# kustomize (installed with `go install` into $STACK_DIR/bin on first use), check the Prometheus
# Operator objects and the pod security shape (deploy/k8s/check.py), validate every built-in
# object with kubernetes-validate in strict mode, then hadolint the Dockerfile. No cluster needed.
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="$repo/.venv/bin"
stack_bin="${STACK_DIR:-$repo/.stack}/bin"
kustomize="$stack_bin/kustomize"
kustomize_version=v5.8.1 # v5.8.2 needs Go >= 1.26, v5.8.3 Go >= 1.27; this one Go >= 1.24
# The oldest Kubernetes we support (CronJob timeZone, Job podFailurePolicy) and the newest schema
# kubernetes-validate ships.
kube_versions=(-k 1.30.0 -k 1.37.0)

for tool in python kubernetes-validate hadolint; do
  [[ -x "$venv/$tool" ]] || { echo "lint.sh: $venv/$tool is missing: run 'make deps'" >&2; exit 2; }
done

if [[ "$("$kustomize" version 2>/dev/null)" != "$kustomize_version" ]]; then
  command -v go >/dev/null || { echo "lint.sh: Go is needed to install kustomize" >&2; exit 2; }
  echo "installing kustomize $kustomize_version into $stack_bin"
  GOBIN="$stack_bin" go install "sigs.k8s.io/kustomize/kustomize/v5@$kustomize_version"
fi

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
status=0
for overlay in "$repo"/deploy/k8s/overlays/*/; do
  name="$(basename "$overlay")"
  if ! "$kustomize" build "$overlay" >"$work/$name.yaml"; then
    echo "FAIL $name: kustomize build" >&2; status=1; continue
  fi
  "$venv/python" "$repo/deploy/k8s/check.py" "$work/$name.yaml" "$work/$name.builtin.yaml" || status=1
  # CRDs were split off above, so a warning here (no schema for a kind/apiVersion) is an error.
  if ! out="$("$venv/kubernetes-validate" --strict --quiet "${kube_versions[@]}" "$work/$name.builtin.yaml" 2>&1)" \
    || [[ -n "$out" ]]; then
    printf '%s\n' "${out//$work\//}" >&2; status=1
  fi
  echo "$name: $(grep -c '^kind:' "$work/$name.yaml") objects checked"
done

"$venv/hadolint" "$repo/Dockerfile" || status=1
[[ $status -eq 0 ]] && echo "deploy lint: OK" || echo "deploy lint: FAILED" >&2
exit "$status"
