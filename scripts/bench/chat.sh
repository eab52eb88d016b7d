#!/usr/bin/env bash
# Chat overhead of the character worker with a zero-latency LLM, on SQLite and PostgreSQL
# (a throwaway cluster): exec -> READY, idle RSS, wrk -c 16 on POST /api/chat. Targets (issue 6):
# overhead p50 <= 2 ms (SQLite) and <= 5 ms (PostgreSQL), idle RSS <= 30 MiB, READY <= 150 ms.
# Writes docs/bench/chat-<date>.md. Arguments go to chat.py (e.g. --stores sqlite --duration 5s).
set -euo pipefail
cd "$(dirname "$0")/../.."
scripts/install-deps.sh bench
bin=$(scripts/build-release.sh)
# Measured as installed, not as the linker left it in the page cache (see the helper).
/usr/bin/python3 scripts/bench/drop-binary-cache.py "$bin"
# --hummingbird: the same run also measures the bench-only Hummingbird 2 server (the worker's
# chat path behind Hummingbird; built by build-hummingbird.sh, ~15-20 min the first time).
args=()
for arg in "$@"; do
  if [ "$arg" = --hummingbird ]; then args+=(--hummingbird "$(scripts/bench/build-hummingbird.sh)"); else args+=("$arg"); fi
done
exec /usr/bin/python3 scripts/bench/chat.py --bin "$bin" "${args[@]}"
