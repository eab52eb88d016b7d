#!/usr/bin/env bash
# Runs whisperd on the sample roster from this checkout (state, sockets and logs under
# etc/.whisperd/), with the status endpoint on 127.0.0.1:9464: three characters answering
# through a real local model (scripts/local-llm.sh, installed here first: ~7 min the first
# time, as it compiles llama.cpp), all supervised by whisperd. Ctrl-C stops the fleet.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh
scripts/local-llm.sh --install
swift build -c release
exec .build/release/whisperd --roster etc/roster.yaml "$@"
