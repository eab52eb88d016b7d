#!/usr/bin/env bash
# Copies the harness (scripts/bench/harness) to a scratch dir, so its build, virtualenv and
# results stay out of the checkout, installs its supervisors (runit, s6 from Debian;
# supervisord from PyPI) and builds its worker. Prints the scratch dir. Used by the other
# bench scripts.
set -euo pipefail
cd "$(dirname "$0")/../.."
harness=$PWD/scripts/bench/harness
work=${WORK:-/tmp/whisperd-bench}
case "$work" in /|"$PWD"|"$PWD"/*) echo "prepare-harness: WORK=$work must be a scratch dir outside the checkout" >&2; exit 1 ;; esac
rm -rf "$work" && mkdir -p "$work" && cp -r "$harness/." "$work/"
(cd "$work" && ./setup.sh >&2)
echo "$work"
