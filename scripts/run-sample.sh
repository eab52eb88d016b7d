#!/usr/bin/env bash
# Runs whisperd on the sample roster from this checkout (state, sockets and logs under
# etc/.whisperd/), with the status endpoint on 127.0.0.1:9464. Ctrl-C stops the fleet.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh
swift build -c release
exec .build/release/whisperd --roster etc/roster.yaml "$@"
