#!/usr/bin/env bash
# Build (or reuse) the pinned Kubernetes binaries `make k8s-test` runs: etcd, kube-apiserver,
# kube-controller-manager, kube-scheduler, kubectl and kwok, from the Go module proxy (no other
# download site is reachable here, and Debian ships no kube-apiserver). They are cached outside the
# clone, keyed by version, so only the first run on a machine pays for the build (about 10 minutes
# from empty Go caches; seconds afterwards). Prints the bin folder on its last line.
set -euo pipefail

kube_version=v1.37.2
etcd_version=v3.6.16
kwok_version=v0.8.0
tools_dir="${K8S_TOOLS_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/conference-service/k8s}"
bin="$tools_dir/kube-$kube_version-etcd-$etcd_version-kwok-$kwok_version/bin"
mkdir -p "$bin" "$tools_dir/src"
export GOFLAGS=-mod=mod GOWORK=off CGO_ENABLED=0

module_dir() { # the read-only folder of a downloaded module
  go mod download -json "$1" | sed -n 's/^\t"Dir": "\(.*\)",$/\1/p'
}

writable_copy() { # $1 module@version, $2 destination
  rm -rf "$2"
  cp -r "$(module_dir "$1")" "$2"
  chmod -R u+w "$2"
}

log() { echo "k8s tools: $*" >&2; }

if [[ ! -x "$bin/etcd" ]]; then
  log "building etcd $etcd_version"
  src="$tools_dir/src/etcd-$etcd_version"
  writable_copy "go.etcd.io/etcd/server/v3@$etcd_version" "$src"
  # The module points at its siblings in the etcd repository; take the published ones instead.
  (cd "$src" && go mod edit -dropreplace=go.etcd.io/etcd/api/v3 -dropreplace=go.etcd.io/etcd/client/pkg/v3 \
      -dropreplace=go.etcd.io/etcd/client/v3 -dropreplace=go.etcd.io/etcd/pkg/v3 \
    && go build -trimpath -ldflags '-s -w' -o "$bin/etcd.tmp" . && mv "$bin/etcd.tmp" "$bin/etcd")
fi

kube_components=(kube-apiserver kube-controller-manager kube-scheduler kubectl)
missing=()
for c in "${kube_components[@]}"; do [[ -x "$bin/$c" ]] || missing+=("$c"); done
if ((${#missing[@]})); then
  src="$tools_dir/src/kubernetes-$kube_version"
  if [[ ! -f "$src/.prepared" ]]; then
    log "preparing k8s.io/kubernetes $kube_version"
    writable_copy "k8s.io/kubernetes@$kube_version" "$src"
    # go.mod replaces each staging module with ./staging/src/k8s.io/X, which the module zip does
    # not hold: use the published k8s.io/X at the matching v0 version instead.
    staging_version="v0.${kube_version#v1.}"
    edits=()
    while read -r mod; do
      case "$mod" in
        k8s.io/sample-cli-plugin | k8s.io/sample-controller) edits+=("-dropreplace=$mod" "-droprequire=$mod") ;;
        *) edits+=("-replace=$mod=$mod@$staging_version") ;;
      esac
    done < <(cd "$src" && go mod edit -json | python3 -c '
import json, sys
for r in json.load(sys.stdin).get("Replace") or []:
    if r["New"]["Path"].startswith("./staging/"):
        print(r["Old"]["Path"])')
    (cd "$src" && rm -f go.work go.work.sum && go mod edit "${edits[@]}")
    touch "$src/.prepared"
  fi
  minor="${kube_version#v1.}"; minor="${minor%%.*}"
  ldflags="-s -w -X k8s.io/component-base/version.gitVersion=$kube_version \
-X k8s.io/component-base/version.gitMajor=1 -X k8s.io/component-base/version.gitMinor=$minor \
-X k8s.io/client-go/pkg/version.gitVersion=$kube_version"
  for c in "${missing[@]}"; do
    log "building $c $kube_version"
    (cd "$src" && go build -trimpath -ldflags "$ldflags" -o "$bin/$c.tmp" "./cmd/$c" && mv "$bin/$c.tmp" "$bin/$c")
  done
fi

if [[ ! -x "$bin/kwok" ]]; then
  log "building kwok $kwok_version"
  GOBIN="$bin" go install "sigs.k8s.io/kwok/cmd/kwok@$kwok_version"
fi
# kwok's stages (how a fake node moves a pod along) ship in its module, not in the binary.
if [[ ! -d "$bin/../kwok-stages" ]]; then
  stages="$(module_dir "sigs.k8s.io/kwok@$kwok_version")/kustomize/stage"
  cp -r "$stages" "$bin/../kwok-stages.tmp" && chmod -R u+w "$bin/../kwok-stages.tmp"
  mv "$bin/../kwok-stages.tmp" "$bin/../kwok-stages"
fi
echo "$bin"
