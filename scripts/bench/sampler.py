#!/usr/bin/env python3
"""What the dashboard's sampler costs whisperd at N characters (issue 26: "cheap: measure its
cost at N=300").

Runs whisperd (the release build, as root on this host's cgroups) on N idle services (`sleep`)
twice in the same run: with `--http off` (no dashboard, no sampler) and with the HTTP port (the
sampler reads every character's cgroup files every 5 s on its own thread). Over --seconds each,
reads whisperd's CPU time (utime + stime, every thread) and, in the second, the sampler thread's
own (`whisperd-sample` in /proc/PID/task). Then times GET /dashboard/api/characters/s000/samples.
Prints one line per figure; docs/performance.md quotes them.

Usage: scripts/bench/sampler.py --bin .build-release/release/whisperd [-n 300] [--seconds 60]
"""
import argparse
import json
import os
import shutil
import socket
import subprocess
import tempfile
import time
import urllib.request
from pathlib import Path

TICK = os.sysconf("SC_CLK_TCK")


def cpu_seconds(stat_path):
    fields = Path(stat_path).read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK


def sampler_thread(pid):
    for task in Path(f"/proc/{pid}/task").iterdir():
        if (task / "comm").read_text().strip().startswith("whisperd-sample"):
            return task / "stat"
    return None


def rss_kib(pid, field="VmRSS:"):
    """VmRSS, or RssAnon: the anonymous part (the rest is the binary's shared, clean pages)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field):
            return int(line.split()[1])
    return 0


def control_get(path, sock_path):
    """GET over the control socket (the HTTP port may be off)."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(5)
        s.connect(sock_path)
        s.sendall(f"GET {path} HTTP/1.1\r\nHost: whisperd\r\nConnection: close\r\n\r\n".encode())
        data = b""
        while chunk := s.recv(65536):
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    return int(head.split()[1]), body


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run(binary, n, seconds, dashboard):
    work = Path(tempfile.mkdtemp(prefix="whisperd-sampler-bench-"))
    os.chmod(work, 0o755)
    lines = ["version: 1", "defaults:", "  health: {ready: started}", "  limits: {memory: 64M}", "characters:"]
    lines += [f"  s{i:03d}: {{command: [sleep, '100000']}}" for i in range(n)]
    (work / "roster.yaml").write_text("\n".join(lines) + "\n")
    port = free_port()
    proc = subprocess.Popen(
        [binary, "--roster", str(work / "roster.yaml"), "--state-dir", str(work / "state"), "--runtime-dir", str(work / "run"),
         "--log-dir", str(work / "logs"), "--http", f"127.0.0.1:{port}" if dashboard else "off",
         "--cgroup", f"/sampler-bench-{os.getpid()}-{int(dashboard)}"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    result = {}
    try:
        deadline = time.time() + 120
        while time.time() < deadline:
            try:
                status, body = control_get("/health", str(work / "run" / "control.sock"))
                characters = json.loads(body).get("characters", [])
                if status == 200 and len(characters) == n and all(c.get("ready") for c in characters):
                    break
            except (OSError, ValueError):
                pass
            time.sleep(0.5)
        else:
            raise SystemExit("whisperd did not get every service ready in 120 s")
        time.sleep(6)  # one sampling period past start-up
        thread = sampler_thread(proc.pid) if dashboard else None
        rss_before = rss_kib(proc.pid)
        total_before = cpu_seconds(f"/proc/{proc.pid}/stat")
        thread_before = cpu_seconds(thread) if thread else 0
        time.sleep(seconds)
        result["cpu_share"] = (cpu_seconds(f"/proc/{proc.pid}/stat") - total_before) / seconds
        if thread:
            result["sampler_share"] = (cpu_seconds(thread) - thread_before) / seconds
        result["rss_growth_kib"] = rss_kib(proc.pid) - rss_before
        result["rss_kib"] = rss_kib(proc.pid)
        result["anon_kib"] = rss_kib(proc.pid, "RssAnon:")
        if dashboard:
            url = f"http://127.0.0.1:{port}/dashboard/api/characters/s000/samples"
            timings = []
            for _ in range(100):
                started = time.perf_counter()
                with urllib.request.urlopen(url, timeout=5) as response:
                    points = len(json.loads(response.read())["points"])
                timings.append(time.perf_counter() - started)
            timings.sort()
            result["samples_p50_ms"] = timings[50] * 1000
            result["samples_points"] = points
    finally:
        proc.terminate()
        proc.wait(timeout=60)
        shutil.rmtree(work, ignore_errors=True)
    return result


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--bin", required=True)
    parser.add_argument("-n", type=int, default=300)
    parser.add_argument("--seconds", type=float, default=60)
    args = parser.parse_args()
    off = run(args.bin, args.n, args.seconds, dashboard=False)
    on = run(args.bin, args.n, args.seconds, dashboard=True)
    print(f"n={args.n} seconds={args.seconds:.0f}")
    print(f"whisperd CPU without the dashboard: {off['cpu_share'] * 100:.3f} % of a core")
    print(f"whisperd CPU with the dashboard:    {on['cpu_share'] * 100:.3f} % of a core")
    print(f"sampler thread CPU:                 {on['sampler_share'] * 100:.3f} % of a core "
          f"({on['sampler_share'] * 5 / args.n * 1e6:.1f} us per character per 5 s sample)")
    print(f"whisperd RSS: {off['rss_kib'] / 1024:.1f} MiB without, {on['rss_kib'] / 1024:.1f} MiB with "
          f"(+{on['rss_growth_kib']} KiB over the window); anonymous {off['anon_kib'] / 1024:.1f} / {on['anon_kib'] / 1024:.1f} MiB")
    print(f"history bound: {args.n} x 720 points x 16 B = {args.n * 720 * 16 / 2**20:.1f} MiB after an hour")
    print(f"GET samples ({on['samples_points']} points) p50 {on['samples_p50_ms']:.2f} ms")


main()
