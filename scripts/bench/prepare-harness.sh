#!/usr/bin/env bash
# Copies ../shared/bench (read-only) to a scratch dir, installs its supervisors and builds its
# worker. Prints the scratch dir. Used by the other bench scripts.
set -euo pipefail
cd "$(dirname "$0")/../.."
shared=${SHARED_BENCH:-$PWD/../shared/bench}
work=${WORK:-/tmp/whisperd-bench}
[ -f "$shared/bench.py" ] || { echo "no benchmark harness at $shared" >&2; exit 1; }
rm -rf "$work" && mkdir -p "$work" && cp -r "$shared/." "$work/" && chmod -R u+w "$work"
(cd "$work" && ./setup.sh >&2)
echo "$work"
