#!/usr/bin/env python3
"""What `whisperctl reexec` costs (issue "operations"): whisperd with N characters (default
300, `sleep` processes as tenants) re-executes itself R times while a client asks
`GET /health` on the control socket as fast as it can; reports, per re-exec, how long the
control socket went unanswered (the longest gap between two answers), the time `whisperctl
reexec` took, and how many characters were restarted (pids changed or restarts counted:
target 0).

Usage: scripts/bench/reexec.py --bin .build-release/release/whisperd [--characters 300] [--rounds 5]
(whisperctl is taken from beside whisperd.)
"""
import argparse
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path


def control_get(path, socket_path, timeout=2.0):
    """One HTTP/1.1 GET on the control socket; the body, or None when it does not answer."""
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as conn:
            conn.settimeout(timeout)
            conn.connect(socket_path)
            conn.sendall(f"GET {path} HTTP/1.1\r\nHost: whisperd\r\nConnection: close\r\n\r\n".encode())
            data = b""
            while True:
                chunk = conn.recv(65536)
                if not chunk:
                    break
                data += chunk
        head, _, body = data.partition(b"\r\n\r\n")
        return body if head.startswith(b"HTTP/1.1 200") else None
    except OSError:
        return None


class Poller:
    """Asks /health without pause; records when each answer came."""

    def __init__(self, socket_path):
        self.socket_path = socket_path
        self.answers = []
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self.run)
        self.thread.start()

    def run(self):
        while not self.stopping.is_set():
            if control_get("/health", self.socket_path) is not None:
                self.answers.append(time.monotonic())

    def stop(self):
        self.stopping.set()
        self.thread.join()

    def longest_gap(self, start, end):
        times = [t for t in self.answers if start - 1 <= t <= end + 1]
        gaps = [b - a for a, b in zip(times, times[1:]) if b >= start and a <= end]
        return max(gaps) if gaps else float("nan")


def characters(socket_path):
    body = control_get("/v1/characters", socket_path, timeout=10)
    return {c["name"]: (c.get("pid"), c.get("restarts", 0)) for c in json.loads(body)["characters"]}


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--bin", required=True)
    parser.add_argument("--characters", type=int, default=300)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    whisperd = os.path.abspath(args.bin)
    whisperctl = os.path.join(os.path.dirname(whisperd), "whisperctl")
    work = Path(tempfile.mkdtemp(prefix="whisperd-reexec-"))
    os.chmod(work, 0o755)
    roster = ["version: 1", "defaults:", "  health: {ready: started, watchdog: off}", "characters:"]
    roster += [f"  c{i:03d}: {{command: [sleep, '3600']}}" for i in range(args.characters)]
    (work / "roster.yaml").write_text("\n".join(roster) + "\n")
    socket_path = str(work / "run/control.sock")
    process = subprocess.Popen(
        [whisperd, "--roster", str(work / "roster.yaml"), "--state-dir", str(work / "state"), "--runtime-dir", str(work / "run"),
         "--log-dir", str(work / "logs"), "--http", "off", "--cgroup", f"/whisperd-bench-reexec-{os.getpid()}"],
        stderr=open(work / "whisperd.log", "w"))
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            body = control_get("/health", socket_path)
            if body and json.loads(body).get("status") == "ok":
                break
            time.sleep(0.05)
        else:
            sys.exit("whisperd did not get every character ready: " + str(work / "whisperd.log"))
        before = characters(socket_path)
        rows = []
        poller = Poller(socket_path)
        time.sleep(0.5)
        for round in range(args.rounds):
            start = time.monotonic()
            result = subprocess.run([whisperctl, "--socket", socket_path, "reexec"], capture_output=True, text=True)
            end = time.monotonic()
            if result.returncode != 0:
                sys.exit(f"reexec failed: {result.stderr}")
            time.sleep(0.3)
            rows.append((round + 1, end - start, poller.longest_gap(start, end)))
        poller.stop()
        after = characters(socket_path)
        restarted = [name for name, (pid, restarts) in after.items() if before.get(name, (None, 0))[0] != pid or restarts != 0]
        with open(f"/proc/{process.pid}/status") as status:
            rss = next(line for line in status if line.startswith("VmRSS")).split()[1]
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=60)
        shutil.rmtree(work, ignore_errors=True)
    print(f"whisperd reexec with {args.characters} characters (sleep, tenants), {args.rounds} rounds, {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}")
    print()
    print("| round | `whisperctl reexec` ms | control socket unanswered, longest gap ms |")
    print("|---|---|---|")
    for round, took, gap in rows:
        print(f"| {round} | {took * 1000:.1f} | {gap * 1000:.1f} |")
    gaps = sorted(gap for _, _, gap in rows)
    print()
    print(f"median gap {gaps[len(gaps) // 2] * 1000:.1f} ms; characters restarted: {len(restarted)} of {len(after)} (target 0); whisperd RSS after: {int(rss) / 1024:.1f} MiB")
    if restarted:
        print("restarted: " + ", ".join(sorted(restarted)[:20]))
        sys.exit(1)


if __name__ == "__main__":
    main()
