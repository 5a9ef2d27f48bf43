#!/usr/bin/env bash
# Build (or reuse) a stand-in for the Dockerfile's base, python:3.11-slim-bookworm, for machines
# that cannot pull it (no container registry is reachable from CI's). It is Debian bookworm's own
# Python 3.11 from Debian packages (mmdebstrap), the Dockerfile is used unchanged through its
# BASE_IMAGE build argument, and everyone with a registry keeps the official image.
# Differences that matter: Python lives in /usr/bin (the official image: /usr/local/bin), and the
# machine's extra CA certificates are trusted, because package downloads here pass through a
# TLS-intercepting proxy. Prints the image name on its last line.
# Usage: deploy/image/base.sh
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
podman="$here/podman.sh"
mirror="${DEBIAN_MIRROR:-http://deb.debian.org/debian}"
# The tag is this recipe's hash: change the recipe and the next run builds a new base.
image="localhost/conference-base/python:3.11-bookworm-$(sha256sum "${BASH_SOURCE[0]}" | cut -c1-12)"

if "$podman" image exists "$image"; then echo "$image"; exit 0; fi

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
echo "base.sh: building $image from Debian bookworm packages" >&2
mkdir -p "$work/ca"
cp /usr/local/share/ca-certificates/*.crt "$work/ca/" 2>/dev/null || true
mmdebstrap --quiet --variant=minbase \
  --include=python3,python3-pip,python-is-python3,ca-certificates,passwd \
  --customize-hook="copy-in $work/ca/. /usr/local/share/ca-certificates" \
  --customize-hook='chroot "$1" update-ca-certificates >/dev/null' \
  --customize-hook='rm -f "$1"/usr/lib/python3*/EXTERNALLY-MANAGED' \
  --customize-hook='rm -rf "$1"/var/lib/apt/lists/* "$1"/var/cache/apt/*' \
  bookworm "$work/rootfs.tar" "$mirror"
# One --change per setting: `ENV A=1 B=2` in a single --change sets only A.
"$podman" import --quiet \
  --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
  --change 'ENV LANG=C.UTF-8' \
  --change 'ENV SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt' \
  --change 'ENV PIP_CERT=/etc/ssl/certs/ca-certificates.crt' \
  --change 'ENV UV_SYSTEM_CERTS=true' \
  --change 'CMD ["python3"]' \
  "$work/rootfs.tar" "$image" >/dev/null
echo "$image"
