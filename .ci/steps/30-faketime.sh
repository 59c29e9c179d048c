#!/usr/bin/env bash
# Debian's faketime (libfaketime), for the lock tests that run `deploybot` with a clock some
# minutes off. Idempotent and fast when it is there.
set -euo pipefail

t0=$SECONDS
installed=none
if ! command -v faketime >/dev/null 2>&1; then
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends faketime >/dev/null
    installed=faketime
fi
echo "[30-faketime] $(faketime --version 2>&1 | grep -m1 Version || echo faketime) (installed: $installed) took $((SECONDS - t0))s"
