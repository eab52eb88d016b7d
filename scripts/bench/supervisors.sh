#!/usr/bin/env bash
# Side-by-side supervisor benchmark (../shared/bench): whisperd against runit and s6.
# shared/ is read-only, so the harness is copied to a scratch dir first; results land in
# $OUT (default: /tmp/whisperd-bench/results). Extra arguments go to bench.py, e.g.
#   scripts/bench/supervisors.sh -n 300 --idle 5
set -euo pipefail
cd "$(dirname "$0")/../.."
repo=$PWD
shared=${SHARED_BENCH:-$repo/../shared/bench}
work=${WORK:-/tmp/whisperd-bench}
[ -f "$shared/bench.py" ] || { echo "no benchmark harness at $shared" >&2; exit 1; }
scripts/install-deps.sh
bin=$(scripts/build-release.sh)
rm -rf "$work" && mkdir -p "$work" && cp -r "$shared/." "$work/" && chmod -R u+w "$work"
(cd "$work" && ./setup.sh)
args=("$@")
((${#args[@]})) || args=(-s whisperd,runit,s6+notify -n 10,100,300)
cd "$work"
WHISPERD_BIN="$bin" python3 bench.py "${args[@]}"
