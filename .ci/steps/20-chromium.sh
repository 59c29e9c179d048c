#!/usr/bin/env bash
# Debian's Chromium for the browser test (Playwright drives it; Playwright's own browser
# download cannot reach its CDN here), and a colour emoji font so the page's ✅ 🚀 ❌ render.
# Idempotent and fast when both are there.
set -euo pipefail

CHROMIUM=/usr/bin/chromium
EMOJI_FONT=fonts-noto-color-emoji

t0=$SECONDS
missing=()
[ -x "$CHROMIUM" ] || missing+=(chromium)
dpkg -s "$EMOJI_FONT" >/dev/null 2>&1 || missing+=("$EMOJI_FONT")
if [ "${#missing[@]}" -gt 0 ]; then
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
# The wrapper script prints a harmless shell warning on some hosts; keep only the version.
version=$("$CHROMIUM" --version 2>/dev/null || true)
echo "[20-chromium] ${version:-chromium installed} (installed: ${missing[*]:-none}) took $((SECONDS - t0))s"
