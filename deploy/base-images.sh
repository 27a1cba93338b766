#!/usr/bin/env bash
# Stand-ins for the two base images the Dockerfile and docker-compose.yml name, for a machine
# whose Docker engine reaches no registry. Where an image is already present, or can be pulled,
# this does nothing for it: the real image always wins.
#
#   bash deploy/base-images.sh
#
#   python:3.11-slim-bookworm  Debian bookworm (debootstrap, minbase) with Debian's python3
#                              (3.11) and a virtual environment at /usr/local, so that
#                              /usr/local/bin/python and pip exist and install into
#                              /usr/local/lib/python3.11/site-packages, as in the official image.
#   nginx:1.22.1               Debian bookworm with Debian's nginx (1.22.1, the same version),
#                              CMD nginx -g 'daemon off;' as upstream.
#
# Needs root, debootstrap and a Docker engine. The Debian mirror is read from this machine's own
# apt sources (/etc/apt/sources.list.d/*.sources, or sources.list); DEBIAN_MIRROR overrides it,
# and with neither, debootstrap uses its default mirror. About a minute per image.
# Env: DOCKER (client, default docker), DEBIAN_MIRROR, PULL_TIMEOUT (seconds, default 120).
set -euo pipefail

DOCKER="${DOCKER:-docker}"
PULL_TIMEOUT="${PULL_TIMEOUT:-120}"
SUITE=bookworm
PYTHON_IMAGE=python:3.11-slim-bookworm
NGINX_IMAGE=nginx:1.22.1
PATH_ENV=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin

log() { echo "base-images: $*" >&2; }

# The first "deb" URI of this machine's apt sources that serves $SUITE's main component.
apt_mirror() {
    local file
    for file in /etc/apt/sources.list.d/*.sources; do
        [[ -f $file ]] || continue
        # deb822: paragraphs of "Key: value" lines.
        awk -v suite="$SUITE" '
            BEGIN { RS = ""; FS = "\n" }
            {
                types = ""; uris = ""; suites = ""; comps = ""; enabled = "yes"
                for (i = 1; i <= NF; i++) {
                    line = $i
                    if (line ~ /^[ \t]*#/) continue
                    key = tolower(line); sub(/:.*/, "", key)
                    value = line; sub(/^[^:]*:[ \t]*/, "", value)
                    if (key == "types") types = " " value " "
                    else if (key == "uris") uris = value
                    else if (key == "suites") suites = " " value " "
                    else if (key == "components") comps = " " value " "
                    else if (key == "enabled") enabled = tolower(value)
                }
                if (enabled != "no" && types ~ / deb / && suites ~ (" " suite " ") \
                    && comps ~ / main /) {
                    split(uris, u, /[ \t]+/); print u[1]; exit
                }
            }' "$file"
    done
    for file in /etc/apt/sources.list /etc/apt/sources.list.d/*.list; do
        [[ -f $file ]] || continue
        # One-line form: deb [options] URI SUITE COMPONENT...
        awk -v suite="$SUITE" '
            $1 == "deb" {
                i = 2
                if ($2 ~ /^\[/) { while (i <= NF && $i !~ /\]$/) i++; i++ }
                if ($(i + 1) == suite) { for (j = i + 2; j <= NF; j++) if ($j == "main") { print $i; exit } }
            }' "$file"
    done
}

# A root filesystem of bookworm with the given extra packages, in a new directory under $WORK.
bootstrap() {
    local root=$1 include=$2 mirror
    mirror="${DEBIAN_MIRROR:-$(apt_mirror | head -n 1)}"
    command -v debootstrap >/dev/null || {
        log "debootstrap is not installed (apt-get install -y debootstrap)"
        return 1
    }
    log "debootstrap $SUITE with $include${mirror:+ (mirror from the apt sources)}"
    # In two stages, so that dpkg can be told not to fsync every file it unpacks before the
    # second one installs the packages (twice as fast here; Debian's own container images
    # carry the same setting, as docker-apt-speedup).
    # shellcheck disable=SC2086  # $mirror is empty (debootstrap's default) or one URI
    if debootstrap --variant=minbase --foreign --include="$include" "$SUITE" "$root" $mirror \
        >"$root.log" 2>&1; then
        mkdir -p "$root/etc/dpkg/dpkg.cfg.d"
        echo force-unsafe-io >"$root/etc/dpkg/dpkg.cfg.d/docker-apt-speedup"
        chroot "$root" /debootstrap/debootstrap --second-stage >>"$root.log" 2>&1 && return 0
    fi
    tail -n 30 "$root.log" >&2
    return 1
}

# Leaves a root filesystem as small as an image should be: no package downloads or indexes.
trim() {
    local root=$1
    rm -rf "$root"/var/cache/apt/archives/*.deb "$root"/var/cache/apt/*.bin \
        "$root"/var/lib/apt/lists/* "$root"/usr/share/doc/* "$root"/usr/share/man/* \
        "$root"/var/log/*.log "$root"/var/log/apt/* "$root"/tmp/* "$root"/root/.cache
}

import_rootfs() {
    local root=$1 tag=$2
    shift 2
    local changes=()
    for change in "$@"; do changes+=(--change "$change"); done
    tar -C "$root" --numeric-owner -c . |
        "$DOCKER" import "${changes[@]}" \
            --message "jitnet stand-in for $tag (debootstrap $SUITE, deploy/base-images.sh)" \
            - "$tag" >/dev/null
}

make_python() {
    local root="$WORK/python"
    bootstrap "$root" python3,python3-venv,ca-certificates
    # A virtual environment at /usr/local: python, python3 and pip in /usr/local/bin, packages in
    # /usr/local/lib/python3.11/site-packages, as the official image has them.
    chroot "$root" /usr/bin/python3 -m venv /usr/local
    chroot "$root" /usr/local/bin/python -m pip --version >&2
    trim "$root"
    import_rootfs "$root" "$PYTHON_IMAGE" "ENV PATH=$PATH_ENV" "ENV LANG=C.UTF-8" \
        "LABEL org.jitnet.stand-in=debootstrap" 'CMD ["python3"]'
}

make_nginx() {
    local root="$WORK/nginx"
    bootstrap "$root" nginx
    trim "$root"
    # As the official image: logs to the container's output, in the foreground. (`docker import`
    # takes no STOPSIGNAL: compose sets SIGQUIT, the official image's, for the nginx service.)
    ln -sf /dev/stdout "$root/var/log/nginx/access.log"
    ln -sf /dev/stderr "$root/var/log/nginx/error.log"
    import_rootfs "$root" "$NGINX_IMAGE" "ENV PATH=$PATH_ENV" "LABEL org.jitnet.stand-in=debootstrap" \
        "EXPOSE 80" 'CMD ["nginx", "-g", "daemon off;"]'
}

cleanup() {
    [[ -n ${WORK:-} && -d $WORK ]] || return 0
    # debootstrap mounts /proc and /sys inside the root while it installs; after a failure
    # they may still be there. Never delete through a mount.
    local mount
    while read -r mount; do
        umount -l "$mount" 2>/dev/null || true
    done < <(awk -v w="$WORK/" 'index($2, w) == 1 { print $2 }' /proc/mounts | sort -r)
    rm -rf --one-file-system "$WORK"
}

ensure() {
    local tag=$1 maker=$2
    if "$DOCKER" image inspect "$tag" >/dev/null 2>&1; then
        log "$tag: present"
        return 0
    fi
    if timeout "$PULL_TIMEOUT" "$DOCKER" pull -q "$tag" >/dev/null 2>&1; then
        log "$tag: pulled"
        return 0
    fi
    log "$tag: cannot be pulled; making a stand-in"
    if [[ $(id -u) != 0 ]]; then
        log "making a stand-in needs root (debootstrap, chroot)"
        return 1
    fi
    local began=$SECONDS
    "$maker"
    log "$tag: stand-in made in $((SECONDS - began)) s"
}

WORK=""
trap cleanup EXIT
WORK="$(mktemp -d "${TMPDIR:-/var/tmp}/jitnet-base-images.XXXXXX")"

# One after the other: at once, they took longer here (both wait on the same disk).
ensure "$PYTHON_IMAGE" make_python
ensure "$NGINX_IMAGE" make_nginx
