#!/usr/bin/env bash
# The whole test suite: unit tests of the pure core and config, adapter tests against the
# real kernel, integration tests that run the built whisperd binary, then the end-to-end
# tests: the API contract (OpenAPI validated, schemathesis against a live whisperd;
# scripts/e2e-api.sh), on a real systemd in a container (scripts/e2e-systemd.sh), on a real
# local model (scripts/e2e-local-model.sh), on a real container engine
# (scripts/e2e-kubernetes.sh: the exported manifests played by podman from the image), the
# web dashboard in Chromium and `whisperctl top` in tmux (scripts/e2e-dashboard.sh, 25–80 s),
# then every fuzz target for FUZZ_SECONDS (default 60) each (scripts/fuzz.sh), then the Swift
# suite again under ThreadSanitizer and
# AddressSanitizer (scripts/sanitizers.sh; SANITIZERS=0 skips it). Arguments go to swift test.
#
# Each phase's output goes to .build/test-logs/<phase>.log; the terminal gets one line per
# phase as it ends — name, seconds, passed and failed checks — and, when a phase fails, the
# end of its log. The last line is "N passed, N failed". A check is a test (swift-testing's
# "✔/✘ Test …" lines), an end-to-end PASS/FAIL line, a fuzz target, a sanitizer finding, or
# a phase with no finer checks (dependencies, build). Like `set -e`, the first failed phase
# ends the run with a non-zero exit.
set -euo pipefail
cd "$(dirname "$0")/.."
logs=$PWD/.build/test-logs
rm -rf "$logs"
mkdir -p "$logs"
total_passed=0
total_failed=0

# The passed and failed checks in a phase's log (swift-testing's "Test run" summary is not one).
count() {
  local log=$1
  passed=$(grep -E '^✔ Test .* passed after|^PASS |^fuzz [^ ]+ +ok:' "$log" | grep -cv '^✔ Test run ' || true)
  failed=$(grep -E '^✘ Test .* failed after|^FAIL |^fuzz [^ ]+ FAILED|^== [a-z]+: (reports in|processes left running)' "$log" |
    grep -cv '^✘ Test run ' || true)
}

# phase NAME COMMAND…: runs it with its output in the phase's log, then prints its line.
phase() {
  local name=$1 log=$logs/$1.log started=$SECONDS status=0
  shift
  [ -t 1 ] && printf '%-16s ...\r' "$name"
  "$@" >"$log" 2>&1 </dev/null || status=$?
  count "$log"
  if [ "$status" -ne 0 ] && [ "$failed" -eq 0 ]; then failed=1; fi
  if [ "$status" -eq 0 ] && [ "$passed" -eq 0 ] && [ "$failed" -eq 0 ]; then passed=1; fi
  total_passed=$((total_passed + passed))
  total_failed=$((total_failed + failed))
  printf '%-16s %5d s  %5d passed  %3d failed\n' "$name" $((SECONDS - started)) "$passed" "$failed"
  if [ "$status" -ne 0 ]; then
    echo "--- $name failed (exit $status); the end of $log:"
    grep -E '^✘ Test .* recorded an issue|^FAIL ' "$log" | head -40 || true
    echo "..."
    tail -60 "$log"
    echo "---"
    echo "$total_passed passed, $total_failed failed"
    exit "$status"
  fi
}

phase dependencies scripts/install-deps.sh test
phase build swift build --build-tests
phase swift-test swift test --skip-build "$@"
phase api-contract scripts/e2e-api.sh
phase e2e-systemd scripts/e2e-systemd.sh
phase e2e-local-model scripts/e2e-local-model.sh
phase e2e-kubernetes scripts/e2e-kubernetes.sh
phase e2e-dashboard scripts/e2e-dashboard.sh
phase fuzz scripts/fuzz.sh --seconds "${FUZZ_SECONDS:-60}"
if [ "${SANITIZERS:-1}" != 0 ]; then phase sanitizers scripts/sanitizers.sh thread address; fi
echo "$total_passed passed, $total_failed failed"
