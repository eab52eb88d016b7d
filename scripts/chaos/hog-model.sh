#!/usr/bin/env bash
# Chaos scenario 3 without whisperd (docs/reliability.md): the chat-path model
# (scripts/chaos/hog_model.c) alone and beside a busy loop held at 0.25 CPU by a v1 cpu cgroup
# (as whisperd's `cpus: 0.25`), the same under SCHED_IDLE, and with the two partitioned on
# separate CPUs. Root, cgroup v1 cpu controller; ~1 minute. Only its own processes are killed.
set -euo pipefail
work=$(mktemp -d /tmp/hog-model-XXXXXX)
group=/sys/fs/cgroup/cpu/hog-model-$$
hog=""
cleanup() {
  set +e
  [ -n "$hog" ] && kill "$hog" 2>/dev/null && wait "$hog" 2>/dev/null
  rmdir "$group" 2>/dev/null
  rm -rf "$work"
}
trap cleanup EXIT
compiler=$(command -v cc || echo "$(dirname "$(command -v swift)")/clang")
"$compiler" -O2 -o "$work/hog_model" "$(dirname "$0")/hog_model.c"
mkdir "$group"
echo 25000 > "$group/cpu.cfs_quota_us"
echo 100000 > "$group/cpu.cfs_period_us"
start_hog() {  # $1: a prefix command (e.g. "chrt -i 0"), $2: taskset CPU list or "" for none
  local pin=()
  [ -n "$2" ] && pin=(taskset -c "$2")
  if [ -n "$2" ]; then
    "${pin[@]}" python3 -c 'while True: pass' &
  else
    sh -c "echo \$\$ > $group/cgroup.procs; exec $1 python3 -c 'while True: pass'" &
  fi
  hog=$!
  sleep 0.3
}
stop_hog() { kill "$hog"; wait "$hog" 2>/dev/null || true; hog=""; }
echo "alone:                                 $("$work/hog_model" 8 150)"
start_hog "" ""
echo "beside a hog at 0.25 CPU:              $("$work/hog_model" 8 150)"
stop_hog
start_hog "chrt -i 0" ""
echo "beside a SCHED_IDLE hog at 0.25 CPU:   $("$work/hog_model" 8 150)"
stop_hog
echo "alone, on CPU 0:                       $(taskset -c 0 "$work/hog_model" 8 150)"
start_hog "" 1
echo "on CPU 0, a hog (no cap) on CPU 1:     $(taskset -c 0 "$work/hog_model" 8 150)"
stop_hog
