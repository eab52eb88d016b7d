#!/usr/bin/env bash
# Installs what building and testing whisperd needs on Debian 12. Idempotent; run as root.
set -euo pipefail

# prometheus: promtool checks /metrics in the tests; wrk: scripts/bench/http.sh;
# debootstrap, systemd-container: the end-to-end test on a real systemd (scripts/e2e-systemd.sh);
# libcurl4-openssl-dev, libsqlite3-dev (headers), libpq5: the worker's LLM client and stores, loaded with
# dlopen by the worker only (Sources/CWorkerLibs); postgresql-15:
# the throwaway clusters the store tests start (initdb/postgres, run as user postgres); python3:
# the tests' LLM stand-in.
packages=(pkg-config libsystemd-dev zlib1g-dev libcurl4-openssl-dev libsqlite3-dev libpq5 postgresql-15 curl procps python3 prometheus wrk util-linux debootstrap systemd-container)
missing=()
for package in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "install ok installed" || missing+=("$package")
done
if ((${#missing[@]})); then
  if [ "$(id -u)" != 0 ]; then
    echo "install-deps: need root to install: ${missing[*]}" >&2
    exit 1
  fi
  # Another apt/dpkg may hold the lock for a moment: retry.
  for attempt in 1 2 3 4 5; do
    if apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}"; then
      break
    fi
    [ "$attempt" = 5 ] && { echo "install-deps: apt-get failed" >&2; exit 1; }
    sleep 5
  done
fi
command -v swift >/dev/null || { echo "install-deps: swift is not on PATH (Swift 6.x toolchain required)" >&2; exit 1; }
