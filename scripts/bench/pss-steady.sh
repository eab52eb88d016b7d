#!/usr/bin/env bash
# whisperd's PSS at N characters (default 300, each `sleep`), right after start-up and again
# after N single SIGKILLs and three 10 % storms: what the supervisor holds once the restart
# paths have run, not just after start (whisperd releases start-up-only pages once the fleet
# is up; pages needed again come back). The binary is read from disk, as installed.
set -euo pipefail
cd "$(dirname "$0")/../.."
n=${N:-300}
bin=$(scripts/build-release.sh)
/usr/bin/python3 scripts/bench/drop-binary-cache.py "$bin"
work=$(mktemp -d /tmp/whisperd-pss-XXXXXX)
cleanup() {
  set +e
  [ -n "${pid:-}" ] && kill "$pid" 2>/dev/null && wait "$pid" 2>/dev/null
  rm -rf "$work"
}
trap cleanup EXIT
{
  echo "version: 1"
  echo "defaults: {restart_delay: 0s, health: {ready: started}}"
  echo "characters:"
  for i in $(seq "$n"); do echo "  c$i: {command: [sleep, '3600']}"; done
} > "$work/roster.yaml"
"$bin" --roster "$work/roster.yaml" --state-dir "$work/state" --runtime-dir "$work/run" --log-dir "$work/log" \
  --http off --cgroup "/whisperd-pss-bench-$$" 2> "$work/whisperd.log" &
pid=$!
for _ in $(seq 100); do grep -q "startup complete" "$work/whisperd.log" && break; sleep 0.1; done
grep -q "startup complete" "$work/whisperd.log" || { echo "whisperd did not complete start-up" >&2; exit 1; }
sleep 2
pss() { awk '/^Pss:/ {print $2}' "/proc/$pid/smaps_rollup"; }
after_start=$(pss)
children() { pgrep -P "$pid" -x sleep; }
for _ in $(seq "$n"); do kill -KILL "$(children | shuf -n 1)"; sleep 0.01; done
for _ in 1 2 3; do children | shuf -n $((n / 10)) | xargs kill -KILL; sleep 0.5; done
sleep 2
echo "whisperd PSS with $n characters: $((after_start / 1024)).$(((after_start % 1024) * 10 / 1024)) MiB after start-up, $(( $(pss) / 1024 )).$(( ($(pss) % 1024) * 10 / 1024 )) MiB after $n kills and 3 storms"
