#!/usr/bin/env bash
# The chaos suite (docs/reliability.md): builds the release binary, then runs every scenario.
# Bounded: ~3-4 minutes with the defaults. Arguments go to chaos.py (--kills, --storm-seconds,
# --scenarios kill-storm,crash,silent, --seed).
set -euo pipefail
cd "$(dirname "$0")/../.."
scripts/install-deps.sh >&2
bin=$(scripts/build-release.sh)
exec /usr/bin/python3 scripts/chaos/chaos.py --bin "$bin" "$@"
