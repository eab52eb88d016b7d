#!/usr/bin/env python3
"""What `whisperctl backup` costs (issue "operations"): 12 built-in workers (SQLite stores,
as tenants, a zero-latency LLM) with --turns chat turns each, then `whisperctl backup --all`
while a paced client chats with every character; reports the backup's time and archive size,
and the client's chat p50/p99 before and during the backup, in one run.

Usage: scripts/bench/backup.py --bin .build-release/release/whisperd [--characters 12] [--turns 10000]
(whisperctl is taken from beside whisperd.)
"""
import argparse
import http.client
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

HERE = Path(__file__).resolve().parent


def chat(connection, user, text):
    body = json.dumps({"user_id": user, "message": text})
    connection.request("POST", "/api/chat", body, {"Content-Type": "application/json"})
    response = connection.getresponse()
    response.read()
    return response.status


def fill(port, turns, users=100):
    """`turns` chats on one character over 8 keep-alive connections."""
    def worker(offset):
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        for index in range(offset, turns, 8):
            if chat(connection, f"user{index % users}", f"fill {index}") != 200:
                raise RuntimeError(f"chat refused on {port}")
        connection.close()
    with ThreadPoolExecutor(8) as pool:
        list(pool.map(worker, range(8)))


class PacedLoad:
    """One chat every `interval` seconds on each character in turn; latencies in ms."""

    def __init__(self, ports, interval=0.01):
        self.ports, self.interval = ports, interval
        self.latencies, self.failures = [], 0
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self.run)
        self.thread.start()

    def run(self):
        connections = {port: http.client.HTTPConnection("127.0.0.1", port, timeout=30) for port in self.ports}
        index = 0
        next_at = time.monotonic()
        while not self.stopping.is_set():
            port = self.ports[index % len(self.ports)]
            started = time.monotonic()
            try:
                status = chat(connections[port], f"paced{index % 20}", f"paced {index}")
            except Exception:
                status = 0
                connections[port] = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
            if status == 200:
                self.latencies.append((time.monotonic() - started) * 1000)
            else:
                self.failures += 1
            index += 1
            next_at += self.interval
            time.sleep(max(0, next_at - time.monotonic()))

    def stop(self):
        self.stopping.set()
        self.thread.join()
        ordered = sorted(self.latencies)
        p = lambda q: ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else float("nan")
        return {"count": len(ordered), "p50": p(0.5), "p99": p(0.99), "failures": self.failures}


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--bin", required=True)
    parser.add_argument("--characters", type=int, default=12)
    parser.add_argument("--turns", type=int, default=10_000)
    args = parser.parse_args()
    whisperctl = str(Path(args.bin).with_name("whisperctl"))
    work = Path(tempfile.mkdtemp(prefix="whisperd-backup-bench-"))
    os.chmod(work, 0o755)
    llm = subprocess.Popen([sys.executable, str(HERE / "fake_llm.py")], stdout=subprocess.PIPE, text=True)
    whisperd = None
    try:
        llm_port = int(llm.stdout.readline())
        names = [f"c{i:02d}" for i in range(args.characters)]
        ports = {}
        lines = ["version: 1", "characters_dir: characters", "defaults:",
                 f"  env: {{LLM_BASE_URL: 'http://127.0.0.1:{llm_port}/v1', LLM_MODEL_NAME: bench-model}}",
                 "  health: {ready: notify, watchdog: off}", "characters:"]
        for offset, name in enumerate(names):
            (work / "characters" / name).mkdir(parents=True)
            (work / "characters" / name / "character.md").write_text(f"You are {name}.\n")
            ports[name] = 18600 + offset
            lines.append(f"  {name}: {{port: {ports[name]}}}")
        (work / "roster.yaml").write_text("\n".join(lines) + "\n")
        for path in work.rglob("*"):
            os.chmod(path, 0o755 if path.is_dir() else 0o644)
        whisperd = subprocess.Popen([args.bin, "--roster", str(work / "roster.yaml"), "--state-dir", str(work / "state"),
                                     "--runtime-dir", str(work / "run"), "--log-dir", str(work / "logs"), "--http", "off"],
                                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        socket_path = str(work / "run" / "control.sock")
        deadline = time.time() + 60
        while time.time() < deadline:
            status = subprocess.run([whisperctl, "--socket", socket_path, "status", "--check"], capture_output=True)
            if status.returncode == 0:
                break
            time.sleep(0.5)
        else:
            raise SystemExit("the fleet did not become ready")
        started = time.monotonic()
        with ThreadPoolExecutor(4) as pool:
            list(pool.map(lambda name: fill(ports[name], args.turns), names))
        filled = time.monotonic() - started
        baseline = PacedLoad(list(ports.values()))
        time.sleep(10)
        before = baseline.stop()
        target = work / "backups"
        target.mkdir()
        during_load = PacedLoad(list(ports.values()))
        time.sleep(1)
        started = time.monotonic()
        result = subprocess.run([whisperctl, "--socket", socket_path, "backup", "--all", "--to", str(target)],
                                capture_output=True, text=True)
        took = time.monotonic() - started
        time.sleep(1)
        during = during_load.stop()
        if result.returncode != 0:
            raise SystemExit(f"backup failed: {result.stderr}")
        archive = Path(result.stdout.strip())
        print(f"{args.characters} characters, {args.turns} turns each (filled in {filled:.0f} s); "
              f"{os.cpu_count()} cores, load {os.getloadavg()[0]:.1f}")
        print(f"backup: {took:.2f} s, archive {archive.stat().st_size / 2**20:.1f} MiB")
        print("| chat (paced, 100/s over every character) | turns | p50 ms | p99 ms | failed |")
        print("|---|---|---|---|---|")
        for label, figures in (("before", before), ("during the backup (and 1 s either side)", during)):
            print(f"| {label} | {figures['count']} | {figures['p50']:.2f} | {figures['p99']:.2f} | {figures['failures']} |")
    finally:
        if whisperd:
            whisperd.send_signal(signal.SIGTERM)
            whisperd.wait(timeout=60)
        llm.kill()
        llm.wait()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
