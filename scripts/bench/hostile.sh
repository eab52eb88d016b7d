#!/usr/bin/env bash
# One character worker under hostile clients (issue 22): slowhttptest's slowloris, slow body
# and slow read, and a wrk flood, each while a legitimate client chats; its p50/p99 and
# failures against the baseline, the worker's RSS, the connections held. Prints a Markdown
# table (recorded in docs/reliability.md). Arguments go to hostile.py (--seconds, --ramp, --diagnose,
# --also-bin LABEL=PATH for another build in the same run,
# --connections, --memory 256M to run the worker under whisperd with that limit, --only,
# --placement shared,apart,unpinned, --variant LABEL:NAME=VALUE for the same build with a setting,
# --rounds K --window S for each flood interleaved with quiet windows, p99s pooled: both figures printed).
set -euo pipefail
cd "$(dirname "$0")/../.."
if ! command -v slowhttptest >/dev/null || ! command -v wrk >/dev/null; then
  apt-get install -y slowhttptest wrk >&2
fi
bin=$(scripts/build-release.sh)
# slowhttptest holds a descriptor per connection.
ulimit -n 8192 2>/dev/null || ulimit -n "$(ulimit -Hn)"
# --hummingbird: the same run also measures the bench-only Hummingbird 2 server (the worker's
# chat path behind Hummingbird; built by build-hummingbird.sh, ~15-20 min the first time).
args=()
for arg in "$@"; do
  if [ "$arg" = --hummingbird ]; then args+=(--hummingbird "$(scripts/bench/build-hummingbird.sh)"); else args+=("$arg"); fi
done
exec /usr/bin/python3 scripts/bench/hostile.py --bin "$bin" "${args[@]}"
