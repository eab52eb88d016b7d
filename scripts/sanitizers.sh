#!/usr/bin/env bash
# The whole Swift test suite under ThreadSanitizer and AddressSanitizer (docs/reliability.md).
#
#   scripts/sanitizers.sh                    # thread, then address
#   scripts/sanitizers.sh thread [-- ARGS]   # one sanitizer; ARGS go to swift test (--filter …)
#
# Each sanitizer builds in its own scratch dir (.build-tsan, .build-asan; ~5 minutes from
# scratch). Every instrumented process — the test runner and each whisperd, whisperctl and
# worker the integration tests start — writes its reports to a log_path under that dir, so a
# race or memory error in a child fails the run too, not only one in the test process.
# The TSan build passes -DWHISPER_TSAN: `Locked` (WhisperConcurrency) is then a pthread mutex, which
# TSan models, instead of Synchronization.Mutex, whose raw futex it cannot see.
# The ASan build links with the toolchain's lld: gold prints "Cannot export local symbol
# '__asan_…'" for each of ~140 symbols of the ASan runtime's export list, per executable
# (harmless; lld is quiet). TSan's runtime gives gold no such trouble.
set -euo pipefail
cd "$(dirname "$0")/.."
sanitizers=()
while [ $# -gt 0 ] && [ "$1" != "--" ]; do sanitizers+=("$1"); shift; done
[ "${1:-}" = "--" ] && shift
[ ${#sanitizers[@]} -gt 0 ] || sanitizers=(thread address)
scripts/install-deps.sh test >&2
status=0
# The pids of running processes whose executable is under $1.
leftovers() {
    local proc exe
    for proc in /proc/[0-9]*; do
        exe=$(readlink "$proc/exe" 2>/dev/null) || continue
        case "$exe" in "$1"*) echo "${proc#/proc/}" ;; esac
    done
}

for sanitizer in "${sanitizers[@]}"; do
    case "$sanitizer" in
        thread) scratch=.build-tsan; flags=(-Xswiftc -DWHISPER_TSAN) ;;
        address) scratch=.build-asan; flags=(-Xswiftc -use-ld=lld) ;;
        *) echo "unknown sanitizer: $sanitizer (thread or address)" >&2; exit 2 ;;
    esac
    reports="$PWD/$scratch/sanitizer-reports"
    rm -rf "$reports"
    mkdir -p "$reports"
    # Characters run as users of their own (docs/security.md): like /tmp, anyone may add a report.
    chmod 1777 "$reports"
    echo "== swift test --sanitize=$sanitizer" >&2
    swift build --build-tests --sanitize="$sanitizer" --scratch-path "$scratch" "${flags[@]}"
    export TSAN_OPTIONS="log_path=$reports/tsan halt_on_error=0 second_deadlock_stack=1"
    # A small quarantine: the default 256 MiB of freed memory held back would fail the tests that
    # bound a worker's memory growth. Leaks are checked in every process the tests start
    # (whisperd, its workers, whisperctl), not in the test runner itself, where Foundation's
    # Process and XCTest keep objects to the end.
    asan="log_path=$reports/asan quarantine_size_mb=16 suppressions=$PWD/scripts/asan.supp"
    export ASAN_OPTIONS="$asan detect_leaks=0"
    export WHISPERD_TEST_CHILD_ASAN_OPTIONS="$asan detect_leaks=1"
    export LSAN_OPTIONS="suppressions=$PWD/scripts/lsan.supp print_suppressions=0"
    test_status=0
    failed=0
    swift test --skip-build --sanitize="$sanitizer" --scratch-path "$scratch" "${flags[@]}" "$@" || test_status=$?
    # A test runner that a sanitizer aborted skipped its clean-up: whatever still runs from
    # this scratch dir is ours and left over. SIGTERM first, so a whisperd stops its fleet.
    left=$(leftovers "$PWD/$scratch/")
    if [ -n "$left" ]; then
        echo "== $sanitizer: processes left running: $(echo $left)" >&2
        kill -TERM $left 2>/dev/null || true
        for _ in $(seq 100); do [ -z "$(leftovers "$PWD/$scratch/")" ] && break; sleep 0.1; done
        left=$(leftovers "$PWD/$scratch/")
        [ -z "$left" ] || kill -KILL $left 2>/dev/null || true
        failed=1
    fi
    found=$(find "$reports" -type f -size +0 | sort)
    if [ -n "$found" ]; then
        echo "== $sanitizer: reports in $(echo "$found" | wc -l) process(es):" >&2
        for file in $found; do echo "--- $file" >&2; head -c 20000 "$file" >&2; done
        failed=1
    fi
    if [ "$test_status" -ne 0 ]; then
        echo "== $sanitizer: swift test failed ($test_status)" >&2
        failed=1
    fi
    if [ "$failed" -eq 0 ]; then echo "== $sanitizer: passed, no reports" >&2; else status=1; fi
done
exit $status
