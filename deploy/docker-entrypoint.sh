#!/bin/sh
# The jitnet image's entrypoint: runs its arguments (`jitnet serve` by default) after making sure
# numba can use the kernels compiled at build time.
#
# numba refuses to import a module with cached kernels when their cache directory is not
# writable ("cannot cache function ...: no locator available"). That happens with a read-only
# root filesystem (`docker run --read-only`, Kubernetes' readOnlyRootFilesystem) or a uid other
# than the image's. Then this copies the build-time cache (a few MB) into a writable directory,
# by default under $TMPDIR or /tmp (mount a tmpfs there), and points NUMBA_CACHE_DIR at the copy:
# the server still loads its kernels in well under a second instead of compiling them (~25 s).
# JITNET_NUMBA_CACHE_COPY chooses the copy's directory.
set -eu

cache="${NUMBA_CACHE_DIR:-}"
if [ -n "$cache" ] && [ -d "$cache" ] && ! [ -w "$cache" ]; then
    copy="${JITNET_NUMBA_CACHE_COPY:-${TMPDIR:-/tmp}/jitnet-numba-cache}"
    if mkdir -p "$copy" 2>/dev/null && [ -w "$copy" ]; then
        cp -R "$cache/." "$copy/"
        echo "jitnet-entrypoint: $cache is not writable; using a copy of the build-time numba cache in $copy" >&2
        NUMBA_CACHE_DIR="$copy"
        export NUMBA_CACHE_DIR
    else
        echo "jitnet-entrypoint: neither $cache nor $copy is writable: numba cannot load its" \
            "cache; mount a tmpfs on ${TMPDIR:-/tmp} (or set JITNET_NUMBA_CACHE_COPY)" >&2
    fi
fi
exec "$@"
