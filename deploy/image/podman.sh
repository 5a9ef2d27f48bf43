#!/usr/bin/env bash
# podman with the project's own settings, for `make image` and `make image-test`: storage under
# $STACK_DIR/containers, no search registries, and the two fixes a sandboxed machine like CI's
# needs (crun cannot run in a hybrid cgroup hierarchy, and may not raise the open-files and
# process limits above what the sandbox grants). Installs podman from Debian on first use.
# Usage: deploy/image/podman.sh ARGS...   (the same arguments as podman)
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
conf="${STACK_DIR:-$here/../../.stack}/containers"

if ! command -v podman >/dev/null || ! command -v mmdebstrap >/dev/null; then
  echo "podman.sh: installing podman, runc and mmdebstrap from Debian" >&2
  sudo=""; [[ $(id -u) -eq 0 ]] || sudo="sudo"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq podman runc uidmap mmdebstrap >/dev/null
fi

mkdir -p "$conf/storage" "$conf/run"
nofile="$(ulimit -Hn)"; [[ "$nofile" == unlimited ]] && nofile=1048576
cat >"$conf/containers.conf.new" <<CONF
[containers]
default_ulimits = ["nofile=$nofile:$nofile", "nproc=32768:32768"]

[engine]
runtime = "runc"
CONF
mv "$conf/containers.conf.new" "$conf/containers.conf"
cat >"$conf/storage.conf.new" <<CONF
[storage]
driver = "overlay"
graphroot = "$conf/storage"
runroot = "$conf/run"
CONF
mv "$conf/storage.conf.new" "$conf/storage.conf"

export CONTAINERS_CONF="$conf/containers.conf"
export CONTAINERS_STORAGE_CONF="$conf/storage.conf"
export CONTAINERS_REGISTRIES_CONF="$here/registries.conf"
exec podman "$@"
