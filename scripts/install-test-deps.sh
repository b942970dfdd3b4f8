#!/usr/bin/env bash
# Installs what the browser end-to-end test (tests/e2e/run.sh) needs and is missing: Xvfb,
# xauth, setxkbmap (x11-xkb-utils, for the agent's keymap test) and Chromium from the
# distribution (Debian/Ubuntu apt-get, as root or through sudo), playwright-core in
# tests/e2e/node_modules (`npm ci`, the pinned version; no browser download), and panva's
# oidc-provider in tests/oidc/node_modules (the second OpenID Connect provider the sign-in
# tests run against).
# Node and npm come from the distribution too when missing. The database and cache servers the
# store and cluster tests start on loopback come from the distribution as well: postgresql
# (initdb and postgres in /usr/lib/postgresql/*/bin) and redis-server.
# Usage: scripts/install-test-deps.sh
set -euo pipefail
cd "$(dirname "$0")/.."

missing=()
command -v Xvfb >/dev/null || missing+=(xvfb)
command -v xauth >/dev/null || missing+=(xauth)
command -v setxkbmap >/dev/null || missing+=(x11-xkb-utils)  # the agent's non-US keymap test
[ -x /usr/bin/chromium ] || missing+=(chromium)
command -v npm >/dev/null || missing+=(nodejs npm)
# The store tests' PostgreSQL (assist-testkit looks in /usr/lib/postgresql/*/bin).
compgen -G '/usr/lib/postgresql/*/bin/initdb' >/dev/null || missing+=(postgresql)
command -v redis-server >/dev/null || missing+=(redis-server)

if [ "${#missing[@]}" -gt 0 ]; then
  if ! command -v apt-get >/dev/null; then
    echo "install-test-deps: install ${missing[*]} with your package manager (no apt-get here)" >&2
    exit 1
  fi
  sudo=()
  if [ "$(id -u)" != 0 ]; then
    command -v sudo >/dev/null || { echo "install-test-deps: need root or sudo to install ${missing[*]}" >&2; exit 1; }
    sudo=(sudo)
  fi
  echo "install-test-deps: installing ${missing[*]}"
  "${sudo[@]}" apt-get update -qq
  DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  # Debian's postgresql package creates and starts a cluster of its own; the tests do not use
  # it (they run their own server on a free port), so it may stay or be stopped.
fi

command -v npm >/dev/null || { echo "install-test-deps: npm (node 20+) is needed" >&2; exit 1; }
if [ ! -d tests/e2e/node_modules/playwright-core ]; then
  echo "install-test-deps: npm ci in tests/e2e"
  (cd tests/e2e && npm ci --no-audit --no-fund --loglevel=error)
fi
if [ ! -d tests/oidc/node_modules/oidc-provider ]; then
  echo "install-test-deps: npm ci in tests/oidc"
  (cd tests/oidc && npm ci --no-audit --no-fund --loglevel=error)
fi
