#!/usr/bin/env bash
# The whole test suite: unit tests of the pure core and config, adapter tests against the
# real kernel, integration tests that run the built whisperd binary, then the end-to-end
# tests: on a real systemd in a container (scripts/e2e-systemd.sh) and on a real local
# model (scripts/e2e-local-model.sh), then every fuzz target for FUZZ_SECONDS (default 60)
# each (scripts/fuzz.sh), then the Swift suite again under ThreadSanitizer and
# AddressSanitizer (scripts/sanitizers.sh; SANITIZERS=0 skips it). Arguments go to swift test.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh
swift build
swift test "$@"
scripts/e2e-systemd.sh
scripts/e2e-local-model.sh
scripts/fuzz.sh --seconds "${FUZZ_SECONDS:-60}"
if [ "${SANITIZERS:-1}" != 0 ]; then scripts/sanitizers.sh thread address; fi
