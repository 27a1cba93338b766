#!/usr/bin/env bash
# Builds the two images docker-compose.yml runs, from the Dockerfile, with BuildKit:
#
#   jitnet           target runtime: the server, kernels compiled at build time
#   jitnet-loadtest  target loadtest: locust and the locustfile (compose profile "load")
#
#   bash deploy/build-images.sh                 # extra arguments go to both `docker build`s
#   bash deploy/build-images.sh --no-cache      # e.g. a build from scratch
#
# pip inside the build gets this machine's pip configuration and CA bundle, where they exist, as
# BuildKit secrets (/etc/pip.conf, ~/.config/pip/pip.conf, /etc/ssl/certs/ca-certificates.crt):
# mounted for the RUN steps that install packages, never copied into a layer. Where none exists
# pip uses PyPI, as `docker compose build` would.
#
# The docker client must build with BuildKit: a client with the buildx plugin, or Debian's
# docker.io client (20.10) with DOCKER_BUILDKIT=1, which this picks when the `docker` on PATH is
# a newer client without buildx. Env: DOCKER (client), JITNET_IMAGE, JITNET_LOADTEST_IMAGE.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

IMAGE="${JITNET_IMAGE:-jitnet}"
LOADTEST_IMAGE="${JITNET_LOADTEST_IMAGE:-jitnet-loadtest}"

if [[ -z ${DOCKER:-} ]]; then
    DOCKER=docker
    if ! docker buildx version >/dev/null 2>&1 && [[ -x /usr/bin/docker ]]; then
        DOCKER=/usr/bin/docker
    fi
fi
export DOCKER_BUILDKIT=1

secrets=()
add_secret() {  # ID FILE: passed only when the file exists and can be read
    if [[ -r $2 ]]; then
        secrets+=(--secret "id=$1,src=$2")
    fi
}
add_secret pip.conf /etc/pip.conf
add_secret pip-user.conf "${XDG_CONFIG_HOME:-$HOME/.config}/pip/pip.conf"
add_secret ca-certificates.crt /etc/ssl/certs/ca-certificates.crt

build() {  # TARGET TAG [docker build arguments...]
    local target=$1 tag=$2 began=$SECONDS
    shift 2
    echo "build-images: $tag (target $target)" >&2
    "$DOCKER" build --target "$target" --tag "$tag" "${secrets[@]}" "$@" .
    echo "build-images: $tag built in $((SECONDS - began)) s," \
        "$("$DOCKER" image inspect --format '{{.Size}}' "$tag" | awk '{printf "%.0f MB", $1 / 1e6}')" >&2
}

build runtime "$IMAGE" "$@"
build loadtest "$LOADTEST_IMAGE" "$@"
