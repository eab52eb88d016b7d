#!/usr/bin/env bash
# The chaos suite (docs/reliability.md): builds the release binary, then runs every scenario.
# Bounded: ~6.5 minutes with the defaults. Needs root (cgroups, a tmpfs mount, PostgreSQL run as
# the postgres user). Arguments go to chaos.py (--kills, --storm-seconds, --seed, --scenarios
# kill-storm,crash,oom,hogs,db-outage,disk-full,reload,silent).
set -euo pipefail
cd "$(dirname "$0")/../.."
scripts/install-deps.sh test >&2
bin=$(scripts/build-release.sh)
exec /usr/bin/python3 scripts/chaos/chaos.py --bin "$bin" "$@"
