#!/usr/bin/env bash
# Fuzzes whisperd's parsers of untrusted input with libFuzzer (and the address sanitizer):
# roster + pre-flight, dotenv, sd_notify datagrams, the control/status HTTP request parser,
# the worker's chat request bodies, Discord gateway payloads, Compose files (`import compose`).
#
#   scripts/fuzz.sh [--seconds N] [TARGET…]     default: 60 s each, every target
#
# Seeds are committed in fuzz/corpus/<target>; what a run discovers goes to
# .build-fuzz/corpus/<target> (kept between runs, not committed). A crash stops that target,
# leaves the input in .build-fuzz/crashes/<target>/ and makes the script exit 1: turn it into a
# unit test, fix, then add the input to fuzz/corpus/<target>. A normal build replays the
# committed corpora (`whisperd-fuzz TARGET fuzz/corpus/TARGET`), as the test suite does.
set -euo pipefail
cd "$(dirname "$0")/.."
seconds=60
targets=()
while (($#)); do
  case "$1" in
    --seconds) seconds="$2"; shift 2 ;;
    -h|--help) sed -n 2,13p "$0"; exit 0 ;;
    *) targets+=("$1"); shift ;;
  esac
done
((${#targets[@]})) || targets=(roster dotenv notify http-request chat-request gateway compose)

echo "building the fuzzer (address sanitizer, libFuzzer's coverage) ..." >&2
# Not -sanitize=fuzzer: that links libFuzzer's own main, and an executable target has one
# already (whisperd-fuzz picks its target, then calls LLVMFuzzerRunDriver). Same
# instrumentation, libFuzzer without main. Linked with the toolchain's lld: gold prints
# "Cannot export local symbol '__asan_…'" for each of ~140 symbols of the ASan runtime's
# export list that the static runtime keeps local (harmless, and lld does not complain).
runtime=$(ls "$(dirname "$(readlink -f "$(command -v swiftc)")")"/../lib/clang/*/lib/linux/libclang_rt.fuzzer_no_main-x86_64.a | head -1)
swift build --scratch-path .build-fuzz --product whisperd-fuzz \
  -Xswiftc -sanitize=address -Xswiftc -sanitize-coverage=edge,trace-cmp,pc-table,inline-8bit-counters \
  -Xswiftc -DFUZZING -Xswiftc -use-ld=lld -Xlinker "$runtime" -Xlinker -lstdc++ >&2
fuzzer=.build-fuzz/debug/whisperd-fuzz

failed=0
for target in "${targets[@]}"; do
  [[ -d fuzz/corpus/$target ]] || { echo "no such target: $target" >&2; exit 2; }
  work=.build-fuzz/corpus/$target
  crashes=.build-fuzz/crashes/$target
  mkdir -p "$work" "$crashes"
  log=$(mktemp)
  # Roster parsing reads the directory of a roster path that does not exist: nothing to
  # clean. -rss_limit_mb bounds memory; -timeout flags an input that takes over 10 s.
  if "$fuzzer" "$target" "$work" fuzz/corpus/"$target" -max_total_time="$seconds" -max_len=65536 \
      -rss_limit_mb=2048 -timeout=10 -artifact_prefix="$crashes/" -print_final_stats=1 >"$log" 2>&1; then
    runs=$(grep -o 'stat::number_of_executed_units: *[0-9]*' "$log" | grep -o '[0-9]*$' || echo '?')
    cov=$(grep -o 'cov: [0-9]*' "$log" | tail -1 | grep -o '[0-9]*' || echo '?')
    printf 'fuzz %-13s ok: %s runs in %s s, coverage %s, corpus %s inputs\n' "$target" "$runs" "$seconds" "$cov" "$(ls "$work" | wc -l)"
  else
    failed=1
    echo "fuzz $target FAILED; last lines:" >&2
    tail -40 "$log" >&2
    echo "inputs that failed: $(ls "$crashes")" >&2
  fi
  rm -f "$log"
done
exit "$failed"
