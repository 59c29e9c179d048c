#!/usr/bin/env bash
# Installs uv for the Makefile without touching the system Python: into a venv of its own
# (.tools/uv by default), or with pipx when a venv cannot be made. Debian 12's and Ubuntu
# 24.04's python3 is "externally managed" (PEP 668): `pip install uv` there is refused, and a
# venv is the way their own error message points to. When neither works, one line says what to
# install, and the exit status is 1.
set -uo pipefail

venv="${1:-.tools/uv}"
version="${2:-}"
spec="uv${version:+==$version}"

if python3 -m venv "$venv" >/dev/null 2>&1 \
    && "$venv/bin/python" -m pip install --quiet --disable-pip-version-check "$spec"; then
    echo "make: installed $("$venv/bin/uv" --version) into $venv" >&2
    exit 0
fi
rm -rf "$venv"  # a half-made venv (no ensurepip) would be taken for a working one next time
if command -v pipx >/dev/null 2>&1 && pipx install --quiet "$spec" >/dev/null 2>&1; then
    echo "make: installed uv with pipx" >&2
    exit 0
fi
echo "make: uv is missing and could not be installed (python3 -m venv failed): install python3-venv (Debian/Ubuntu: sudo apt-get install python3-venv) or uv itself, then run make again." >&2
exit 1
