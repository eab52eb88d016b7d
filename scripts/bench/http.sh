#!/usr/bin/env bash
# /health and /metrics under load: whisperd (release build) with N characters (default 300,
# each `sleep`), then `wrk -c 16 -t 1 -d 10s --latency` against each endpoint. Prints the
# latency percentiles and writes them to docs/bench/http-<date>.md. Target (issue 5):
# p99 <= 5 ms for both with 300 characters. /metrics is measured twice: plain, and with
# `Accept-Encoding: gzip` as Prometheus sends it. Last, the same wrk on a minimal C server
# (scripts/bench/static_http.c) sending as many bytes as plain /metrics: the floor of this host,
# once with sendmsg from memory and once with sendfile from a memory file (as whisperd sends a
# large /metrics).
# BIN=path measures that whisperd instead of building one (to compare two builds in one
# session, e.g. main's and a branch's, alternately: the host's noise hits both alike).
# On a 2-core machine wrk and whisperd are pinned to different cores (PIN=0 to disable):
# otherwise the load generator preempts the server it measures and the tail is the
# scheduler's, not whisperd's.
set -euo pipefail
cd "$(dirname "$0")/../.."
repo=$PWD
n=${N:-300}
pin=${PIN:-1}
server_cpu=(); client_cpu=()
if [ "$pin" = 1 ] && [ "$(nproc)" -ge 2 ]; then server_cpu=(taskset -c 0); client_cpu=(taskset -c 1); fi
duration=${DURATION:-10s}
scripts/install-deps.sh bench
bin=${BIN:-$(scripts/build-release.sh)}
work=$(mktemp -d /tmp/whisperd-http-XXXXXX)
chmod 755 "$work"  # characters run as users of their own and start in the roster's directory
port=$((20000 + RANDOM % 20000))
cleanup() {
  # Not under -e: a killed server's wait status (143) must not end the cleanup early.
  set +e
  for server in "${pid:-}" "${floor_pid:-}" "${sendfile_floor_pid:-}"; do
    [ -n "$server" ] && kill "$server" 2>/dev/null && wait "$server" 2>/dev/null
  done
  rm -rf "$work"
}
trap cleanup EXIT
{
  echo "version: 1"
  echo "defaults: {restart: always, health: {ready: started}}"
  echo "characters:"
  for i in $(seq "$n"); do echo "  c$i: {command: [sleep, '3600']}"; done
} > "$work/roster.yaml"
"${server_cpu[@]}" "$bin" --roster "$work/roster.yaml" --http "127.0.0.1:$port" --cgroup "/whisperd-http-bench-$$" 2> "$work/whisperd.log" &
pid=$!
for _ in $(seq 300); do
  curl -sf "http://127.0.0.1:$port/health" >/dev/null && break
  sleep 0.1
done
curl -sf "http://127.0.0.1:$port/health" >/dev/null || { echo "whisperd did not become healthy" >&2; tail "$work/whisperd.log" >&2; exit 1; }
# The floor: the same bytes as plain /metrics from a minimal C server, pinned the same way —
# what the kernel, the VM and wrk take before any server does anything (measured last).
plain_bytes=$(curl -s "http://127.0.0.1:$port/metrics" | wc -c)
compiler=$(command -v cc || echo "$(dirname "$(command -v swift)")/clang")  # the Swift toolchain has clang
"$compiler" -O2 -o "$work/static_http" scripts/bench/static_http.c
floor_port=$((port + 1))
"${server_cpu[@]}" "$work/static_http" "$floor_port" "$plain_bytes" &
floor_pid=$!
sendfile_floor_port=$((port + 2))
"${server_cpu[@]}" "$work/static_http" "$sendfile_floor_port" "$plain_bytes" sendfile &
sendfile_floor_pid=$!
for floor in "$floor_port" "$sendfile_floor_port"; do
  for _ in $(seq 50); do curl -sf -o /dev/null "http://127.0.0.1:$floor/" && break; sleep 0.1; done
done
stamp=$(date -u +%Y%m%d-%H%M%S)
out="$repo/docs/bench/http-$stamp.md"
{
  echo "# /health and /metrics under wrk ($n characters)${BIN:+, $BIN}"
  echo
  echo "$(date -u '+%Y-%m-%d %H:%M UTC'), $(nproc) cores, kernel $(uname -r); whisperd release build;"
  echo "\`wrk -c 16 -t 1 -d $duration --latency\` on loopback$([ ${#server_cpu[@]} -gt 0 ] && echo ", whisperd on CPU 0 and wrk on CPU 1"); $(curl -s "http://127.0.0.1:$port/metrics" | wc -c) bytes of /metrics ($(curl -s -H 'Accept-Encoding: gzip' "http://127.0.0.1:$port/metrics" | wc -c) gzip-encoded), $(curl -s "http://127.0.0.1:$port/health" | wc -c) of /health."
  echo
  echo "| endpoint | requests/s | p50 ms | p90 ms | p99 ms | errors |"
  echo "|---|---|---|---|---|---|"
  for target in /health /metrics "/metrics gzip" "floor" "floor sendfile"; do
    path=${target% gzip}
    header=(); [ "$target" != "$path" ] && header=(-H "Accept-Encoding: gzip")
    url="http://127.0.0.1:$port$path"
    if [ "$target" = floor ]; then
      url="http://127.0.0.1:$floor_port/"
      target="floor: $plain_bytes bytes by sendmsg, scripts/bench/static_http.c"
    elif [ "$target" = "floor sendfile" ]; then
      header=()
      url="http://127.0.0.1:$sendfile_floor_port/"
      target="floor: $plain_bytes bytes by sendfile, scripts/bench/static_http.c"
    fi
    result=$("${client_cpu[@]}" wrk -c 16 -t 1 -d "$duration" --latency "${header[@]}" "$url")
    python3 - "$target" "$result" <<'PY'
import re, sys
path, text = sys.argv[1], sys.argv[2]
def ms(label):
    m = re.search(rf"^\s*{label}%\s+([\d.]+)(us|ms|s)\s*$", text, re.M)
    if not m: return float("nan")
    value, unit = float(m.group(1)), m.group(2)
    return value / 1000 if unit == "us" else value * 1000 if unit == "s" else value
rps = re.search(r"Requests/sec:\s+([\d.]+)", text)
errors = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", text)
sock = re.search(r"Socket errors:.*", text)
err = (int(errors.group(1)) if errors else 0)
print(f"| {path} | {float(rps.group(1)) if rps else 0:.0f} | {ms('50'):.2f} | {ms('90'):.2f} | {ms('99'):.2f} | {err}{' ' + sock.group(0) if sock else ''} |")
PY
  done
} | tee "$out"
