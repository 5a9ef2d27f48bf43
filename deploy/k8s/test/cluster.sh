#!/usr/bin/env bash
# A real Kubernetes control plane on loopback, for `make k8s-test`: etcd, kube-apiserver,
# kube-controller-manager, kube-scheduler, and kwok managing three fake nodes, so that
# Deployments, Jobs and PodDisruptionBudgets reconcile without running containers.
# Binaries: deploy/k8s/test/tools.sh (pinned, cached outside the clone). State, logs and the
# kubeconfig: $STACK_DIR/k8s.
# Usage: cluster.sh start|stop|kubeconfig
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
state="${STACK_DIR:-$here/../../../.stack}/k8s"
etcd_port="${K8S_ETCD_PORT:-12379}"
api_port="${K8S_API_PORT:-16443}"
kubeconfig="$state/kubeconfig"
node_annotation="kwok.x-k8s.io/node"
nodes=(node-a node-b node-c)

log() { echo "cluster: $*" >&2; }
die() { log "$*"; exit 1; }

daemon() { # name, command...: start in the background, log to $state/NAME.log, remember the pid
  local name="$1"; shift
  "$@" >"$state/$name.log" 2>&1 &
  echo $! >"$state/$name.pid"
}

running() { [[ -f "$state/$1.pid" ]] && kill -0 "$(cat "$state/$1.pid")" 2>/dev/null; }

wait_for() { # what, seconds, command...
  local what="$1" seconds="$2"; shift 2
  local deadline=$((SECONDS + seconds))
  until "$@" >/dev/null 2>&1; do
    ((SECONDS < deadline)) || die "timed out after ${seconds}s waiting for $what (logs: $state)"
    sleep 0.5
  done
}

certificates() { # a CA, the api server's serving certificate, the service-account key pair
  local pki="$state/pki"
  [[ -f "$pki/done" ]] && return
  mkdir -p "$pki"
  openssl req -x509 -newkey rsa:2048 -nodes -days 30 -subj "/CN=k8s-test-ca" \
    -keyout "$pki/ca.key" -out "$pki/ca.crt" 2>/dev/null
  openssl req -newkey rsa:2048 -nodes -subj "/CN=kube-apiserver" \
    -keyout "$pki/apiserver.key" -out "$pki/apiserver.csr" 2>/dev/null
  printf 'subjectAltName=IP:127.0.0.1,DNS:localhost,DNS:kubernetes.default.svc\n' >"$pki/san.ext"
  openssl x509 -req -in "$pki/apiserver.csr" -CA "$pki/ca.crt" -CAkey "$pki/ca.key" \
    -CAcreateserial -days 30 -extfile "$pki/san.ext" -out "$pki/apiserver.crt" 2>/dev/null
  openssl genrsa -out "$pki/sa.key" 2048 2>/dev/null
  openssl rsa -in "$pki/sa.key" -pubout -out "$pki/sa.pub" 2>/dev/null
  touch "$pki/done"
}

write_kubeconfig() {
  local token="$1"
  cat >"$kubeconfig" <<CONF
apiVersion: v1
kind: Config
clusters:
  - name: k8s-test
    cluster:
      server: https://127.0.0.1:$api_port
      certificate-authority: $state/pki/ca.crt
users:
  - name: admin
    user:
      token: $token
contexts:
  - name: k8s-test
    context: {cluster: k8s-test, user: admin}
current-context: k8s-test
CONF
}

start() {
  local bin
  bin="$("$here/tools.sh" | tail -1)"
  mkdir -p "$state"
  echo "$bin" >"$state/bin"
  if running kube-apiserver && "$bin/kubectl" --kubeconfig "$kubeconfig" get --raw /readyz >/dev/null 2>&1; then
    log "already running (kubeconfig: $kubeconfig)"; return
  fi
  stop 2>/dev/null || true
  certificates
  local token
  token="$(openssl rand -hex 16)"
  echo "$token,admin,admin,system:masters" >"$state/tokens.csv"
  write_kubeconfig "$token"
  rm -rf "$state/etcd"
  daemon etcd "$bin/etcd" --data-dir "$state/etcd" --unsafe-no-fsync \
    --listen-client-urls "http://127.0.0.1:$etcd_port" --advertise-client-urls "http://127.0.0.1:$etcd_port" \
    --listen-peer-urls "http://127.0.0.1:$((etcd_port + 1))" \
    --initial-advertise-peer-urls "http://127.0.0.1:$((etcd_port + 1))" \
    --initial-cluster "default=http://127.0.0.1:$((etcd_port + 1))"
  wait_for etcd 30 curl -fsS "http://127.0.0.1:$etcd_port/health"
  # --endpoint-reconciler-type none: otherwise the server refuses to advertise 127.0.0.1.
  daemon kube-apiserver "$bin/kube-apiserver" \
    --etcd-servers "http://127.0.0.1:$etcd_port" \
    --bind-address 127.0.0.1 --advertise-address 127.0.0.1 --secure-port "$api_port" \
    --tls-cert-file "$state/pki/apiserver.crt" --tls-private-key-file "$state/pki/apiserver.key" \
    --client-ca-file "$state/pki/ca.crt" \
    --token-auth-file "$state/tokens.csv" --authorization-mode Node,RBAC \
    --service-account-key-file "$state/pki/sa.pub" \
    --service-account-signing-key-file "$state/pki/sa.key" \
    --service-account-issuer https://kubernetes.default.svc \
    --service-cluster-ip-range 10.96.0.0/16 \
    --endpoint-reconciler-type none
  wait_for "kube-apiserver /readyz" 90 "$bin/kubectl" --kubeconfig "$kubeconfig" get --raw /readyz
  daemon kube-controller-manager "$bin/kube-controller-manager" \
    --kubeconfig "$kubeconfig" --leader-elect=false --bind-address 127.0.0.1 --secure-port 0 \
    --service-account-private-key-file "$state/pki/sa.key" --root-ca-file "$state/pki/ca.crt" \
    --controllers '*' --horizontal-pod-autoscaler-sync-period 5s
  daemon kube-scheduler "$bin/kube-scheduler" \
    --kubeconfig "$kubeconfig" --leader-elect=false --bind-address 127.0.0.1 --secure-port 0
  # kwok moves pods along on the nodes it manages: ready, then (for a Job's) completed.
  local stages=()
  while IFS= read -r f; do stages+=(--config "$f"); done < <(
    find "$bin"/../kwok-stages/{node/fast,node/heartbeat-with-lease,pod/fast} -maxdepth 1 \
      -name '*.yaml' ! -name kustomization.yaml | sort)
  daemon kwok "$bin/kwok" --kubeconfig "$kubeconfig" \
    --manage-all-nodes=false --manage-nodes-with-annotation-selector "$node_annotation=fake" \
    --cidr 10.244.0.0/16 --node-ip 127.0.0.1 --server-address "" "${stages[@]}"
  for node in "${nodes[@]}"; do
    "$bin/kubectl" --kubeconfig "$kubeconfig" apply -f - >/dev/null <<NODE
apiVersion: v1
kind: Node
metadata:
  name: $node
  annotations: {$node_annotation: fake}
  labels:
    kubernetes.io/hostname: $node
    kubernetes.io/os: linux
    kubernetes.io/arch: amd64
    type: kwok
status:
  allocatable: {cpu: "8", memory: 32Gi, pods: "110"}
  capacity: {cpu: "8", memory: 32Gi, pods: "110"}
NODE
  done
  wait_for "3 Ready nodes" 60 bash -c \
    "[[ \$('$bin/kubectl' --kubeconfig '$kubeconfig' get nodes --no-headers | grep -cw Ready) -eq ${#nodes[@]} ]]"
  wait_for "the default ServiceAccount" 60 "$bin/kubectl" --kubeconfig "$kubeconfig" get serviceaccount default
  log "up: kube-apiserver https://127.0.0.1:$api_port, ${#nodes[@]} kwok nodes (kubeconfig: $kubeconfig)"
}

stop() {
  local name
  for name in kwok kube-scheduler kube-controller-manager kube-apiserver etcd; do
    if running "$name"; then
      kill "$(cat "$state/$name.pid")" 2>/dev/null || true
      for _ in $(seq 50); do running "$name" || break; sleep 0.1; done
      running "$name" && kill -9 "$(cat "$state/$name.pid")" 2>/dev/null
    fi
    rm -f "$state/$name.pid"
  done
  log "stopped"
}

case "${1:-}" in
  start) start ;;
  stop) stop ;;
  kubeconfig) echo "$kubeconfig" ;;
  *) die "usage: $0 start|stop|kubeconfig" ;;
esac
