#!/usr/bin/env bash
# Installs what building and running whisperd needs on Debian 12, and with `test` or `bench`
# what testing or benchmarking it needs too. Idempotent; run as root.
#
#   scripts/install-deps.sh run     build whisperd and run the sample (scripts/run-sample.sh,
#                                   scripts/install.sh): C headers and libraries, curl, python3
#   scripts/install-deps.sh test    run + the test suite's tools (the default; scripts/test.sh,
#                                   e2e-systemd.sh, sanitizers.sh, chaos/run.sh)
#   scripts/install-deps.sh bench   run + what scripts/bench/ drives (wrk)
#   scripts/install-deps.sh image   run + what scripts/build-image.sh needs (podman)
#   scripts/install-deps.sh --list [SET]   print the set's packages, one a line; install nothing
#
# run: pkg-config, libsystemd-dev, zlib1g-dev and the headers of libcurl4-openssl-dev and
#   libsqlite3-dev to build; libpq5 for a PostgreSQL store; the worker loads libcurl, SQLite
#   and libpq with dlopen (Sources/CWorkerLibs). curl for the README's commands; python3 for
#   scripts/local-llm.sh (which installs its own build tools).
# test: postgresql-15 (the store tests' throwaway clusters: initdb/postgres run as user
#   postgres), prometheus (its promtool checks /metrics; Debian ships promtool only in that
#   package), procps and util-linux (setpriv), debootstrap and systemd-container
#   (scripts/e2e-systemd.sh; systemd-container may upgrade the host's systemd to match);
#   chromium, chromium-driver and tmux (scripts/e2e-dashboard.sh: the dashboard in a real
#   browser, `whisperctl top` in a real terminal), and selenium from PyPI (pinned below) in a
#   virtualenv at /var/cache/whisperd-test/selenium;
#   python3-venv and, from PyPI, kubernetes-validate (pinned below) in a virtualenv at
#   /var/cache/whisperd-test/kubernetes-validate: the tests check `whisperd export kubernetes`
#   against the API schemas of one Kubernetes version (KUBERNETES_VERSION below), and
#   schemathesis and openapi-spec-validator (pinned below) in one at
#   /var/cache/whisperd-test/api-contract (scripts/e2e-api.sh; docs/api.md); and
#   image's packages (scripts/e2e-kubernetes.sh plays the exported manifests on podman).
# image: podman with runc (Debian's crun refuses this machine's hybrid cgroups), netavark,
#   aardvark-dns and iptables (pods' networks and their names), catatonit (podman builds its
#   pods' pause image from it, offline), ca-certificates and tzdata (copied into the image).
#
# Never starts or leaves enabled a service: packages such as postgresql and prometheus enable
# and start their units on install. While it installs, a policy-rc.d (Debian's switch for
# this; only when there is none already) forbids starting any service, and every unit the
# install enabled is disabled again (the tests start their own processes).
set -euo pipefail
list_only=0
if [ "${1:-}" = --list ]; then list_only=1; shift; fi
set_name=${1:-test}
image=(podman runc netavark aardvark-dns iptables catatonit ca-certificates tzdata)
runtime=(pkg-config libsystemd-dev zlib1g-dev libcurl4-openssl-dev libsqlite3-dev libpq5 curl python3)
case "$set_name" in
  run) packages=("${runtime[@]}") ;;
  test) packages=("${runtime[@]}" postgresql-15 prometheus procps util-linux debootstrap systemd-container "${image[@]}" chromium chromium-driver tmux) ;;
  bench) packages=("${runtime[@]}" wrk procps) ;;
  image) packages=("${runtime[@]}" "${image[@]}") ;;
  *) echo "usage: scripts/install-deps.sh [--list] [run|test|bench|image]" >&2; exit 2 ;;
esac
[ "$set_name" = test ] && packages+=(python3-venv)
if [ "$list_only" = 1 ]; then printf '%s\n' "${packages[@]}"; exit 0; fi
missing=()
for package in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "install ok installed" || missing+=("$package")
done

enabled_units() { systemctl list-unit-files --state=enabled --no-legend 2>/dev/null | awk '{print $1}' | sort; }

if ((${#missing[@]})); then
  if [ "$(id -u)" != 0 ]; then
    echo "install-deps: need root to install: ${missing[*]}" >&2
    exit 1
  fi
  echo "install-deps ($set_name): apt-get install ${missing[*]}" >&2
  policy=/usr/sbin/policy-rc.d
  if [ ! -e "$policy" ]; then
    printf '#!/bin/sh\n# scripts/install-deps.sh: no service starts while it installs packages.\nexit 101\n' >"$policy"
    chmod 755 "$policy"
    trap 'rm -f "$policy"' EXIT
  fi
  before=$(enabled_units)
  # Another apt/dpkg may hold the lock for a moment: retry.
  for attempt in 1 2 3 4 5; do
    if apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}"; then
      break
    fi
    [ "$attempt" = 5 ] && { echo "install-deps: apt-get failed" >&2; exit 1; }
    sleep 5
  done
  for unit in $(comm -13 <(echo "$before") <(enabled_units)); do
    echo "install-deps: $unit was enabled by its package; disabling it" >&2
    systemctl disable --quiet "$unit" 2>/dev/null || true
  done
fi
command -v swift >/dev/null || { echo "install-deps: swift is not on PATH (Swift 6.x toolchain required)" >&2; exit 1; }
# The browser test's driver (scripts/e2e-dashboard.sh), pinned, in a virtualenv of its own
# (Debian's python3 refuses pip installs outside one); the newest selenium needs a certifi
# newer than some mirrors hold.
if [ "$set_name" = test ]; then
  selenium_version=4.38.0
  selenium_home=/var/cache/whisperd-test/selenium
  if ! "$selenium_home/bin/pip" show selenium 2>/dev/null | grep -qx "Version: $selenium_version"; then
    echo "install-deps (test): selenium==$selenium_version into $selenium_home" >&2
    mkdir -p "$(dirname "$selenium_home")"
    [ -x "$selenium_home/bin/python" ] || /usr/bin/python3 -m venv "$selenium_home"
    "$selenium_home/bin/pip" install --quiet "selenium==$selenium_version"
  fi
fi

# The manifests' validator (Tests/IntegrationTests/KubernetesTests.swift, scripts/e2e-kubernetes.sh):
# kubernetes-validate with the schemas of Kubernetes 1.31, in a virtualenv of its own.
if [ "$set_name" = test ]; then
  validator_version=1.31.0
  validator_home=/var/cache/whisperd-test/kubernetes-validate
  if ! "$validator_home/bin/pip" show kubernetes-validate 2>/dev/null | grep -x "Version: $validator_version" >/dev/null; then
    echo "install-deps (test): kubernetes-validate==$validator_version into $validator_home" >&2
    mkdir -p "$(dirname "$validator_home")"
    [ -x "$validator_home/bin/python" ] || /usr/bin/python3 -m venv "$validator_home"
    "$validator_home/bin/pip" install --quiet "kubernetes-validate==$validator_version"
  fi
fi

# The API contract's tools (scripts/e2e-api.sh), pinned, in a virtualenv of their own;
# reinstalled only when the pins change.
if [ "$set_name" = test ]; then
  api_tools=(schemathesis==4.32.5 openapi-spec-validator==0.9.0)
  api_home=/var/cache/whisperd-test/api-contract
  stamp=$api_home/.installed-$(printf '%s\n' "${api_tools[@]}" | sha256sum | cut -c1-12)
  if [ ! -f "$stamp" ]; then
    echo "install-deps (test): ${api_tools[*]} into $api_home" >&2
    rm -rf "$api_home"
    mkdir -p "$(dirname "$api_home")"
    /usr/bin/python3 -m venv "$api_home"
    "$api_home/bin/pip" install --quiet --disable-pip-version-check "${api_tools[@]}"
    touch "$stamp"
  fi
fi
