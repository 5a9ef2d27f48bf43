#!/usr/bin/env bash
# `make image`: build the service image with the Dockerfile, as IMAGE (default
# localhost/conference-service:dev). The official base is used when it is present or can be
# pulled; otherwise a stand-in from Debian packages (deploy/image/base.sh) through BASE_IMAGE.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
podman="$here/podman.sh"
image="${IMAGE:-localhost/conference-service:dev}"
official="docker.io/library/python:3.11-slim-bookworm"

if "$podman" image exists "$official" || timeout 60 "$podman" pull --quiet "$official" >/dev/null 2>&1; then
  base="$official"
else
  echo "build.sh: $official cannot be pulled here; using a stand-in from Debian packages" >&2
  base="$("$here/base.sh" | tail -1)"
fi
echo "build.sh: building $image on $base" >&2
"$podman" build --quiet --pull=never --network host --build-arg "BASE_IMAGE=$base" \
  --label "org.opencontainers.image.revision=$(git -C "$repo" rev-parse HEAD 2>/dev/null || echo unknown)" \
  -t "$image" -f "$repo/Dockerfile" "$repo" >/dev/null
echo "build.sh: $image $("$podman" image inspect --format '{{.Size}}' "$image" | awk '{printf "%.0f MB", $1/1e6}')" >&2
echo "$image"
