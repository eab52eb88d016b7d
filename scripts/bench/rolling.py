#!/usr/bin/env python3
"""What `whisperctl restart --rolling` costs a client (issue "operations"): whisperd runs the
built-in worker `elena` (SQLite store, as a tenant) on a zero-latency LLM (fake_llm.py); wrk
chats without pause (`-c 16`) for a baseline, then again while elena is rolled over --rolls
times. Reports, in one run, the failed requests (socket errors and non-2xx: target 0) and the
p50/p99 of both windows.

Usage: scripts/bench/rolling.py --bin .build-release/release/whisperd [--rolls 3] [--seconds 15]
(whisperctl is taken from beside whisperd.)
"""
import argparse
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wrk(url, lua, connections, seconds):
    """wrk's latency percentiles (ms), requests, socket errors and non-2xx answers."""
    out = subprocess.run(["taskset", "-c", "1", "wrk", "-c", str(connections), "-t", "1", "-d", f"{seconds}s", "--latency",
                          "-s", lua, url], capture_output=True, text=True, check=True).stdout

    def ms(label):
        value, unit = re.search(rf"^\s*{label}%\s+([\d.]+)(us|ms|s)\s*$", out, re.M).groups()
        return float(value) / 1000 if unit == "us" else float(value) * 1000 if unit == "s" else float(value)

    errors = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    return {
        "p50": ms("50"), "p99": ms("99"), "requests": int(re.search(r"(\d+) requests in", out).group(1)),
        "socket_errors": sum(int(x) for x in errors.groups()) if errors else 0,
        "non2xx": int(non2xx.group(1)) if non2xx else 0, "raw": out,
    }


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--bin", required=True)
    parser.add_argument("--rolls", type=int, default=3)
    parser.add_argument("--seconds", type=int, default=15)
    parser.add_argument("--connections", type=int, default=16)
    args = parser.parse_args()
    whisperd = os.path.abspath(args.bin)
    whisperctl = os.path.join(os.path.dirname(whisperd), "whisperctl")
    work = Path(tempfile.mkdtemp(prefix="whisperd-rolling-", dir="/var/tmp"))
    os.chmod(work, 0o755)
    processes = []
    try:
        llm = subprocess.Popen(["taskset", "-c", "1", sys.executable, str(HERE / "fake_llm.py")], stdout=subprocess.PIPE, text=True)
        processes.append(llm)
        llm_port = int(llm.stdout.readline())
        port = free_port()
        shutil.copytree(REPO / "characters" / "elena", work / "characters" / "elena")
        os.chmod(work / "characters", 0o755)
        (work / "roster.yaml").write_text(f"""version: 1
characters_dir: characters
characters:
  elena:
    port: {port}
    stop_grace: 10s
    health: {{ready: notify, ready_timeout: 30s, watchdog: off}}
    env: {{LLM_BASE_URL: "http://127.0.0.1:{llm_port}/v1", LLM_MODEL_NAME: bench-model, API_PEER_REQUESTS_PER_SECOND: "0"}}
""")
        socket_path = str(work / "run/control.sock")
        daemon = subprocess.Popen(
            ["taskset", "-c", "0", whisperd, "--roster", str(work / "roster.yaml"), "--state-dir", str(work / "state"),
             "--runtime-dir", str(work / "run"), "--log-dir", str(work / "logs"), "--http", "off",
             "--cgroup", f"/whisperd-bench-rolling-{os.getpid()}"], stderr=open(work / "whisperd.log", "w"))
        processes.append(daemon)
        ctl = [whisperctl, "--socket", socket_path]
        deadline = time.monotonic() + 60
        while subprocess.run(ctl + ["status", "--check", "elena"], capture_output=True).returncode != 0:
            if time.monotonic() > deadline:
                sys.exit("elena did not get ready: " + (work / "whisperd.log").read_text()[-2000:])
            time.sleep(0.1)
        lua = work / "chat.lua"
        lua.write_text("""
counter = 0
request = function()
  counter = counter + 1
  local body = '{"user_id":"bench-' .. (counter % 200) .. '","message":"Hello there, how is the kelp forest today?"}'
  return wrk.format("POST", nil, {["Content-Type"] = "application/json"}, body)
end
""")
        url = f"http://127.0.0.1:{port}/api/chat"
        wrk(url, str(lua), args.connections, 2)  # warm-up
        baseline = wrk(url, str(lua), args.connections, args.seconds)
        rolls = []

        def roll():
            for index in range(args.rolls):
                time.sleep(args.seconds / (args.rolls + 1))
                start = time.monotonic()
                result = subprocess.run(ctl + ["restart", "--rolling", "elena"], capture_output=True, text=True)
                rolls.append((result.returncode, time.monotonic() - start, result.stdout.strip() or result.stderr.strip()))

        roller = threading.Thread(target=roll)
        roller.start()
        during = wrk(url, str(lua), args.connections, args.seconds)
        roller.join()
        restarts = subprocess.run(ctl + ["status", "--json", "elena"], capture_output=True, text=True).stdout
    finally:
        for process in reversed(processes):
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
        shutil.rmtree(work, ignore_errors=True)
    failed = during["socket_errors"] + during["non2xx"]
    print(f"rolling restart under load, {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}: built-in worker elena (SQLite, tenant), "
          f"zero-latency LLM, wrk -c {args.connections} -t 1 on POST /api/chat, {args.seconds} s windows, {args.rolls} rolling restarts in the second")
    print()
    print("| window | requests | failed (socket errors + non-2xx) | p50 ms | p99 ms |")
    print("|---|---|---|---|---|")
    for label, figures in (("baseline", baseline), (f"{args.rolls} rolling restarts", during)):
        print(f"| {label} | {figures['requests']} | {figures['socket_errors'] + figures['non2xx']} | {figures['p50']:.2f} | {figures['p99']:.2f} |")
    print()
    for code, seconds, text in rolls:
        print(f"- `whisperctl restart --rolling elena`: exit {code}, {seconds * 1000:.0f} ms: {text.splitlines()[-1] if text else ''}")
    print(f"\np99 during / baseline: {during['p99'] / baseline['p99']:.2f}×; failed requests: {failed} (target 0)")
    if failed or any(code != 0 for code, _, _ in rolls):
        print(during["raw"])
        sys.exit(1)


if __name__ == "__main__":
    main()
