#!/usr/bin/env bash
# Side-by-side supervisor benchmark (scripts/bench/harness): whisperd against runit and s6.
# The harness is copied to a scratch dir first (scripts/bench/prepare-harness.sh); results
# land in $WORK/results (default WORK: /tmp/whisperd-bench). Extra arguments go to bench.py, e.g.
#   scripts/bench/supervisors.sh -n 300 --idle 5
# WHISPERD_LIMITS=1 gives every character a memory and pids limit (see bench.py).
set -euo pipefail
cd "$(dirname "$0")/../.."
scripts/install-deps.sh bench
bin=$(scripts/build-release.sh)
# Measured as installed, not as the linker left it in the page cache (see the helper).
/usr/bin/python3 scripts/bench/drop-binary-cache.py "$bin"
work=$(scripts/bench/prepare-harness.sh)
args=("$@")
((${#args[@]})) || args=(-s whisperd,runit,s6+notify -n 10,100,300)
cd "$work"
WHISPERD_BIN="$bin" python3 bench.py "${args[@]}"
