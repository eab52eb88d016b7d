#!/usr/bin/env bash
# What cgroups cost whisperd: the supervisor benchmark (scripts/bench/harness, whisperd only) three times, on the same
# machine in one go:
#   none    --cgroup-backend none (process groups only: the baseline)
#   cgroups default backend (auto), no limits: placement before exec + whole-cgroup kill
#   limits  default backend with WHISPERD_LIMITS=1 (memory 64M + pids 64 per character)
# The three alternate for $ROUNDS rounds (default 3) and each figure is the median over the
# rounds, because this VM's restart latency drifts by ±0.3 ms from minute to minute.
# Prints one table and writes it, with the raw JSON, to docs/bench/cgroups-<date>.{md,json}.
# Extra arguments go to bench.py (default: -n 300 --restarts 100 --storms 5 --idle 5).
set -euo pipefail
cd "$(dirname "$0")/../.."
repo=$PWD
scripts/install-deps.sh bench
bin=$(scripts/build-release.sh)
work=$(scripts/bench/prepare-harness.sh)
args=("$@")
((${#args[@]})) || args=(-n 300 --restarts 100 --storms 5 --idle 5)
stamp=$(date -u +%Y%m%d-%H%M%S)
for round in $(seq "${ROUNDS:-3}"); do
  for config in none cgroups limits; do
    wrapper="$work/whisperd-$config"
    backend=auto; [ "$config" = none ] && backend=none
    printf '#!/bin/sh\nexec %q --cgroup-backend %s "$@"\n' "$bin" "$backend" > "$wrapper"
    chmod +x "$wrapper"
    limits=0; [ "$config" = limits ] && limits=1
    (cd "$work" && WHISPERD_BIN="$wrapper" WHISPERD_LIMITS=$limits \
       python3 bench.py -s whisperd --out "$work/results-$config" "${args[@]}" >&2)
  done
done
python3 - "$work" "$repo/docs/bench/cgroups-$stamp" <<'PY'
import glob, json, statistics, sys
work, out = sys.argv[1], sys.argv[2]
rows, raw = [], {}
def p50(values): return statistics.median(values) if values else float("nan")
for config in ("none", "cgroups", "limits"):
    runs = [json.load(open(path)) for path in sorted(glob.glob(f"{work}/results-{config}/*.json"))]
    raw[config] = runs
    for n in sorted({r["n"] for run in runs for r in run["results"]}):
        results = [r for run in runs for r in run["results"] if r["n"] == n]
        med = lambda key: statistics.median(key(r) for r in results)
        rows.append((config, n, med(lambda r: p50(r["restart_ms"])), med(lambda r: p50(r["rekill_ms"])),
                     med(lambda r: p50(r["storm_ms"])), med(lambda r: r["cold_start_ms"]), med(lambda r: r["pss_mib"]),
                     med(lambda r: r["stop_ms"]), sum(r["restart_failures"] for r in results),
                     min(r["alive_after"] for r in results)))
base = {n: restart for config, n, restart, *_ in rows if config == "none"}
lines = ["| config | N | restart p50 ms | vs none | re-kill p50 ms | storm p50 ms | cold start ms | PSS MiB | stop ms | failures | alive after |",
         "|---|---|---|---|---|---|---|---|---|---|---|"]
for config, n, restart, rekill, storm, cold, pss, stop, failures, alive in rows:
    delta = restart - base.get(n, restart)
    lines.append(f"| {config} | {n} | {restart:.3f} | {delta:+.3f} | {rekill:.3f} | {storm:.2f} | {cold:.1f} | {pss:.1f} | {stop:.0f} | {failures} | {alive} |")
first = raw["none"][0]
machine = first["machine"]
text = (f"# whisperd: what cgroups cost\n\n{machine['date_utc']}, {machine['os']}, kernel {machine['kernel']}, "
        f"{machine['cpus']} cores, PID 1 {machine['pid1']}. Args: {first['args']['workers']} workers, "
        f"{first['args']['restarts']} restarts, {first['args']['storms']} storms; {len(raw['none'])} alternating "
        "rounds, each figure the median over the rounds (failures summed, alive the minimum).\n\n"
        "- none: `--cgroup-backend none` (process groups only)\n"
        "- cgroups: default backend, no limits (each character in its cgroups before exec, whole-cgroup kill)\n"
        "- limits: default backend, `WHISPERD_LIMITS=1` (memory 64M + pids 64 each)\n\n" + "\n".join(lines) + "\n")
open(out + ".md", "w").write(text)
json.dump(raw, open(out + ".json", "w"), indent=1)
print(text)
PY
