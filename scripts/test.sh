#!/usr/bin/env bash
# The whole test suite: unit tests of the pure core and config, adapter tests against the
# real kernel, and integration tests that run the built whisperd binary.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh
swift build
swift test "$@"
