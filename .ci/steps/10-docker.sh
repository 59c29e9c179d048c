#!/usr/bin/env bash
# A Docker engine and the local base image for the container tests.
# No image registry is reachable, so the base image is built from Debian packages
# (debootstrap + docker import) and carries the host's CA bundle so pip and uv work inside.
# Idempotent: every part is skipped when what it makes is already there.
set -euo pipefail

BASE_IMAGE="${DEPLOYBOT_BASE_IMAGE:-deploybot-base:bookworm}"
SUITE=bookworm
CA_BUNDLE=/etc/ssl/certs/ca-certificates.crt
DOCKERD_LOG="${DOCKERD_LOG:-/var/log/deploybot-dockerd.log}"

t0=$SECONDS
took() { echo "[10-docker] $1 took $((SECONDS - t0))s"; t0=$SECONDS; }

# 1. Packages: Debian's docker.io and debootstrap.
missing=()
command -v dockerd >/dev/null 2>&1 || missing+=(docker.io)
command -v docker >/dev/null 2>&1 || missing+=(docker.io)
command -v debootstrap >/dev/null 2>&1 || missing+=(debootstrap)
if [ "${#missing[@]}" -gt 0 ]; then
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
took "packages (${missing[*]:-none missing})"

# 2. The engine: start dockerd unless one already answers.
if ! docker info >/dev/null 2>&1; then
    # No bridge and no iptables: this sandbox has neither; builds and runs use --network host.
    setsid nohup dockerd --bridge=none --iptables=false >"$DOCKERD_LOG" 2>&1 </dev/null &
    for _ in $(seq 1 120); do
        docker info >/dev/null 2>&1 && break
        sleep 0.5
    done
    if ! docker info >/dev/null 2>&1; then
        echo "[10-docker] dockerd did not come up; its log:" >&2
        tail -n 50 "$DOCKERD_LOG" >&2 || true
        exit 1
    fi
fi
took "docker engine ($(docker version --format '{{.Server.Version}}'))"

# 3. The base image: a minimal Debian with python3, from the mirror apt uses here.
debian_mirror() {
    local uri
    # deb822 sources first (URIs: ...), then one-line sources (deb URL suite ...).
    uri=$(grep -hs '^URIs:' /etc/apt/sources.list.d/*.sources 2>/dev/null \
        | awk '{print $2}' | grep -v -- '-security' | grep '/debian/*$' | head -n1 || true)
    if [ -z "$uri" ]; then
        uri=$(grep -hs '^deb ' /etc/apt/sources.list /etc/apt/sources.list.d/*.list 2>/dev/null \
            | grep -v '\[' | awk '{print $2}' | grep -v -- '-security' | grep '/debian/*$' \
            | head -n1 || true)
    fi
    echo "${uri:-http://deb.debian.org/debian}"
}

if docker image inspect "$BASE_IMAGE" >/dev/null 2>&1; then
    took "base image $BASE_IMAGE (present, reused)"
else
    mirror=$(debian_mirror)
    rootfs=$(mktemp -d /tmp/deploybot-rootfs.XXXXXX)
    trap 'rm -rf "$rootfs"' EXIT
    echo "[10-docker] debootstrap $SUITE from $mirror"
    debootstrap --variant=minbase \
        --include=python3,python3-venv,python3-pip,ca-certificates \
        "$SUITE" "$rootfs" "$mirror" >/tmp/deploybot-debootstrap.log 2>&1 \
        || { tail -n 30 /tmp/deploybot-debootstrap.log >&2; exit 1; }
    took "debootstrap"
    # The host's bundle holds every CA this machine trusts for the package registries.
    cp "$CA_BUNDLE" "$rootfs$CA_BUNDLE"
    rm -rf "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/lib/apt/lists/* \
        "$rootfs"/usr/share/doc/* "$rootfs"/usr/share/man/* "$rootfs"/usr/share/locale/*
    tar -C "$rootfs" -c . | docker import \
        --change 'ENV LANG=C.UTF-8' \
        --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
        --change 'CMD ["/bin/bash"]' \
        - "$BASE_IMAGE" >/dev/null
    took "base image $BASE_IMAGE (imported)"
fi
docker image ls "$BASE_IMAGE" --format '[10-docker] {{.Repository}}:{{.Tag}} {{.Size}}'
