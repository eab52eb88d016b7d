#!/usr/bin/env bash
# Runs whisperd on the sample roster from this checkout (state, sockets and logs under
# etc/.whisperd/), with the status endpoint on 127.0.0.1:9464: three characters answering
# through a real local model (scripts/local-llm.sh), all supervised by whisperd. Ctrl-C stops
# the fleet.
#
# The first run installs what running needs (scripts/install-deps.sh run: C headers and
# libraries, curl, python3 — no test tools, no service), the local model (python3-venv, cmake
# and build-essential from Debian, then llama-cpp-python from PyPI, which compiles llama.cpp:
# ~7 minutes on 2 cores) and makes the release build (scripts/build-release.sh, ~5 minutes,
# into .build-release/, the build the tests and scripts/install.sh use too). Later runs start
# in seconds.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh run
scripts/local-llm.sh --install
bin=$(scripts/build-release.sh)
exec "$bin" --roster etc/roster.yaml "$@"
