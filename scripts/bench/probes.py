#!/usr/bin/env python3
"""What exec health checks cost whisperd itself (issue "compose parity": an exec probe every 1 s
on 100 services must cost whisperd < 2 % of one core).

Starts whisperd (the release build) on N services (`sleep`), each with
`health: {ready: exec, exec: {test: [CMD, /bin/true], interval: 1s, start_interval: 1s}}`, waits
until all are ready, then reads whisperd's own CPU time (utime + stime of the process: every
thread, not the probes, which are other processes) over --seconds, and the same for an
identical fleet with `ready: started` and no probe, in the same run. Prints both and the
difference as a share of one core.

Usage: scripts/bench/probes.py --bin .build-release/release/whisperd [-n 100] [--seconds 30]
"""
import argparse
import json
import os
import shutil
import signal
import subprocess
import tempfile
import time
import urllib.request
from pathlib import Path


def cpu_seconds(pid):
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def free_port():
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run(binary, n, seconds, probes):
    work = Path(tempfile.mkdtemp(prefix="whisperd-probes-"))
    os.chmod(work, 0o755)
    port = free_port()
    health = ("{ready: exec, exec: {test: [CMD, /bin/true], interval: 1s, start_interval: 1s, timeout: 5s}}"
              if probes else "{ready: started}")
    lines = ["version: 1", "defaults:", f"  health: {health}", "characters:"]
    for i in range(n):
        lines.append(f"  s{i:03d}: {{command: [sleep, '100000']}}")
    (work / "roster.yaml").write_text("\n".join(lines) + "\n")
    proc = subprocess.Popen([binary, "--roster", str(work / "roster.yaml"), "--state-dir", str(work / "state"),
                             "--runtime-dir", str(work / "run"), "--log-dir", str(work / "logs"),
                             "--http", f"127.0.0.1:{port}"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + 60
        while time.time() < deadline:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2) as response:
                    body = json.loads(response.read())
                    if response.status == 200 and all(c.get("ready") for c in body.get("characters", [])):
                        break
            except Exception:
                pass
            time.sleep(0.2)
        else:
            raise SystemExit("the fleet did not become ready")
        time.sleep(2)
        before, at = cpu_seconds(proc.pid), time.monotonic()
        time.sleep(seconds)
        used, elapsed = cpu_seconds(proc.pid) - before, time.monotonic() - at
        return used / elapsed * 100
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=60)
        shutil.rmtree(work, ignore_errors=True)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--bin", required=True)
    parser.add_argument("-n", type=int, default=100)
    parser.add_argument("--seconds", type=float, default=30)
    args = parser.parse_args()
    with_probes = run(args.bin, args.n, args.seconds, True)
    without = run(args.bin, args.n, args.seconds, False)
    print(f"N = {args.n}, {args.seconds:.0f} s each, {os.cpu_count()} cores, load {os.getloadavg()[0]:.1f}")
    print("| fleet | whisperd CPU, % of one core |")
    print("|---|---|")
    print(f"| {args.n} services, an exec probe (/bin/true) every 1 s each | {with_probes:.2f} |")
    print(f"| the same, ready: started, no probe | {without:.2f} |")
    print(f"\nthe probes cost whisperd {with_probes - without:.2f} % of one core (target < 2 %)")


if __name__ == "__main__":
    main()
