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
exec /usr/bin/python3 scripts/bench/chat.py --bin "$bin" "$@"
