#!/usr/bin/env python3
"""Where a legitimate client's slow chats go under a wrk flood (issue 22, nothing pinned): the
worker alone (release build, default limits, the zero-latency fake LLM), the client chatting on
a new connection every 50 ms from 127.0.0.2, `wrk -c N GET /health` from 127.0.0.1. Each chat
is timed in parts (connect, first byte of the answer, the rest) on CLOCK_MONOTONIC; the
scheduler is recorded meanwhile (`perf record -k mono` of sched_switch/sched_wakeup, all CPUs),
and for each of the slowest chats the script says what the client's thread and the worker's
threads were doing in its window: running, runnable but waiting for a CPU (and who had the
CPUs then), or asleep. Also the worker's counters per second (accepts refused for the address
limit, turns deferred by the rate). Exploratory: prints a report, records nothing.

    scripts/bench/flood_trace.py --bin .build-release/release/whisperd [--connections 512] [--seconds 12]
"""
import argparse
import collections
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent
sys.path.insert(0, str(HERE))
from chat import free_port, start_worker, wait_port  # noqa: E402


def chat_once(port, source, body):
    """One chat on a new connection; (start, connect ms, first byte ms, total ms, status) on
    CLOCK_MONOTONIC, or the error's name as status."""
    request = (f"POST /api/chat HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {len(body)}\r\n"
               "Connection: close\r\n\r\n").encode() + body
    start = time.monotonic()
    connected = first = None
    try:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.settimeout(10)
        sock.bind((source, 0))
        sock.connect(("127.0.0.1", port))
        connected = time.monotonic()
        sock.sendall(request)
        data = b""
        while True:
            chunk = sock.recv(65536)
            if first is None:
                first = time.monotonic()
            if not chunk:
                break
            data += chunk
            head, sep, rest = data.partition(b"\r\n\r\n")
            if sep:
                match = re.search(rb"content-length:\s*(\d+)", head, re.I)
                if match and len(rest) >= int(match.group(1)):
                    break
        sock.close()
        status = data[9:12].decode() if data.startswith(b"HTTP/1.1") else "no answer"
    except OSError as error:
        status = type(error).__name__
    end = time.monotonic()
    ms = lambda t: (t - start) * 1000 if t else float("nan")  # noqa: E731
    return start, ms(connected), ms(first), (end - start) * 1000, status


def client(port, seconds, records, stop_at):
    body = json.dumps({"user_id": "legit", "message": "Hello there, how is the kelp forest today?"}).encode()
    while time.monotonic() < stop_at:
        started = time.monotonic()
        records.append(chat_once(port, "127.0.0.2", body))
        time.sleep(max(0.0, 0.05 - (time.monotonic() - started)))


def counters(port):
    try:
        sock = socket.create_connection(("127.0.0.1", port), timeout=2, source_address=("127.0.0.3", 0))
        sock.sendall(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
        sock.close()
    except OSError:
        return {}
    text = data.decode(errors="replace")
    found = {}
    for name in ("http_connections_refused_total", "http_turns_deferred_total", "http_connections"):
        match = re.search(rf"^whisperd_worker_{name}{{[^}}]*}} (\d+)", text, re.M)
        if match:
            found[name] = int(match.group(1))
    return found


def percentile(values, fraction):
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(fraction * (len(ordered) - 1))))] if ordered else float("nan")


def parse_sched(path):
    """perf script of sched_switch/sched_wakeup: per tid, a list of (time, event, cpu, detail)."""
    text = subprocess.run(["perf", "script", "-i", path, "-F", "comm,tid,cpu,time,event,trace"],
                          capture_output=True, text=True).stdout
    switches = []  # (time, cpu, prev_comm, prev_tid, prev_state, next_comm, next_tid)
    wakeups = []  # (time, tid, target_cpu)
    for line in text.splitlines():
        match = re.match(r"\s*(.+?)\s+(\d+)\s+\[(\d+)\]\s+([\d.]+):\s+sched:(\w+):\s+(.*)", line)
        if not match:
            continue
        _, _, cpu, stamp, event, trace = match.groups()
        stamp = float(stamp)
        if event == "sched_switch":
            sw = re.search(r"prev_comm=(.*?) prev_pid=(\d+) .*?prev_state=(\S+) ==> next_comm=(.*?) next_pid=(\d+)", trace)
            if sw:
                switches.append((stamp, int(cpu), sw.group(1), int(sw.group(2)), sw.group(3), sw.group(4), int(sw.group(5))))
        elif event in ("sched_wakeup", "sched_waking"):
            wk = re.search(r"comm=(.*?) pid=(\d+)", trace)
            if wk and event == "sched_wakeup":
                wakeups.append((stamp, int(wk.group(2))))
    return switches, wakeups


def timeline(switches, wakeups, tids):
    """For each tid of interest: intervals (start, end, state) with state run / wait (runnable,
    no CPU) / sleep, from its switches and wake-ups."""
    events = []
    for stamp, cpu, pc, ptid, pstate, nc, ntid in switches:
        if ptid in tids:
            events.append((stamp, ptid, "wait" if pstate.startswith("R") else "sleep"))
        if ntid in tids:
            events.append((stamp, ntid, "run"))
    for stamp, tid in wakeups:
        if tid in tids:
            events.append((stamp, tid, "wait"))
    events.sort()
    state = {}
    intervals = collections.defaultdict(list)
    for stamp, tid, new in events:
        if tid in state:
            since, old = state[tid]
            if old != new or new == "run":
                intervals[tid].append((since, stamp, old))
                state[tid] = (stamp, new)
        else:
            state[tid] = (stamp, new)
    return intervals


def who_ran(switches, start, end, ours=None):
    """CPU time per comm on all CPUs in [start, end] (`ours`: tid -> name, named so)."""
    ours = ours or {}
    per_cpu_current = {}
    spent = collections.Counter()
    for stamp, cpu, pc, ptid, pstate, nc, ntid in switches:
        if stamp > end:
            break
        if cpu in per_cpu_current:
            since, comm = per_cpu_current[cpu]
            overlap = min(stamp, end) - max(since, start)
            if overlap > 0:
                spent[comm] += overlap
        per_cpu_current[cpu] = (stamp, f"[{ours[ntid]}]" if ntid in ours else ("idle" if ntid == 0 else nc))
    for cpu, (since, comm) in per_cpu_current.items():
        overlap = end - max(since, start)
        if overlap > 0:
            spent[comm] += overlap
    return spent


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--bin", required=True)
    parser.add_argument("--connections", type=int, default=512)
    parser.add_argument("--seconds", type=float, default=12)
    parser.add_argument("--ramp", type=float, default=5)
    parser.add_argument("--no-flood", action="store_true")
    parser.add_argument("--env", action="append", default=[], metavar="NAME=VALUE")
    parser.add_argument("--worst", type=int, default=8)
    args = parser.parse_args()
    work = tempfile.mkdtemp(prefix="whisperd-flood-trace-", dir="/var/tmp")
    llm = subprocess.Popen([sys.executable, str(HERE / "fake_llm.py")], stdout=subprocess.PIPE, text=True)
    llm_port = int(llm.stdout.readline())
    port = free_port()
    env = {"PATH": "/usr/bin:/bin", "API_PORT": str(port), "WHISPERD_CHARACTERS_DIR": str(REPO / "characters"),
           "WHISPERD_SQLITE_PATH": f"{work}/memory.sqlite3", "WHISPERD_STATE_DIR": f"{work}/state",
           "LLM_BASE_URL": f"http://127.0.0.1:{llm_port}/v1", "LLM_MODEL_NAME": "bench-model",
           **dict(pair.split("=", 1) for pair in args.env)}
    worker, _ = start_worker(args.bin, env, f"{work}/notify.sock")
    subprocess.run(["taskset", "-apc", f"0-{os.cpu_count() - 1}", str(worker.pid)], check=True, stdout=subprocess.DEVNULL)
    wait_port(port)
    wrk = None
    perf = None
    try:
        if not args.no_flood:
            wrk = subprocess.Popen(["wrk", "-c", str(args.connections), "-t", "1", "-d", f"{int(args.ramp + args.seconds + 3)}s",
                                    f"http://127.0.0.1:{port}/health"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
            time.sleep(args.ramp)
        perf_data = f"{work}/sched.data"
        perf = subprocess.Popen(["perf", "record", "-q", "-k", "mono", "-a", "-e", "sched:sched_switch", "-e", "sched:sched_wakeup",
                                 "-o", perf_data], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(0.5)
        records = []
        stop_at = time.monotonic() + args.seconds
        client_thread = threading.Thread(target=client, args=(port, args.seconds, records, stop_at))
        client_thread.start()
        client_tid = None
        for _ in range(50):
            client_tid = client_thread.native_id
            if client_tid:
                break
            time.sleep(0.01)
        samples = []
        while time.monotonic() < stop_at:
            samples.append((time.monotonic(), counters(port)))
            time.sleep(1)
        client_thread.join()
        perf.send_signal(2)
        perf.wait(timeout=30)
        worker_threads = {int(t): Path(f"/proc/{worker.pid}/task/{t}/comm").read_text().strip()
                          for t in os.listdir(f"/proc/{worker.pid}/task")}
        llm_threads = {int(t): "fake-llm" for t in os.listdir(f"/proc/{llm.pid}/task")}
        if wrk:
            llm_threads.update({int(t): "wrk" for t in os.listdir(f"/proc/{wrk.pid}/task")})
    finally:
        if wrk:
            wrk.terminate()
            wrk_out = wrk.communicate(timeout=10)[0]
        worker.terminate()
        worker.wait(timeout=10)
        llm.kill()
    try:
        report(args, records, samples, wrk_out if wrk else "", perf_data, client_tid, worker_threads, llm_threads)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def report(args, records, samples, wrk_out, perf_data, client_tid, worker_threads, llm_threads):
    totals = [r[3] for r in records if r[4] == "200"]
    failures = [r for r in records if r[4] != "200"]
    print(f"chats {len(records)}, failed {len(failures)} {collections.Counter(r[4] for r in failures)}; "
          f"p50 {percentile(totals, .5):.2f} p90 {percentile(totals, .9):.2f} p99 {percentile(totals, .99):.2f} max {max(totals):.2f} ms")
    print("connect ms p50/p99/max: %.2f %.2f %.2f; first byte after connect p50/p99/max: %.2f %.2f %.2f" % (
        percentile([r[1] for r in records], .5), percentile([r[1] for r in records], .99), max(r[1] for r in records),
        percentile([r[2] - r[1] for r in records], .5), percentile([r[2] - r[1] for r in records], .99),
        max(r[2] - r[1] for r in records)))
    for (t0, c0), (t1, c1) in zip(samples, samples[1:]):
        rates = {k.replace("whisperd_worker_", ""): round((c1.get(k, 0) - c0.get(k, 0)) / (t1 - t0)) for k in c1 if k.endswith("total")}
        print(f"  per second: {rates}, connections {c1.get('http_connections')}")
    if wrk_out:
        print("wrk:", " ".join(line.strip() for line in wrk_out.splitlines() if "requests in" in line or "Non-2xx" in line or "Socket" in line))
    switches, wakeups = parse_sched(perf_data)
    tids = {client_tid: "client", **{t: f"worker {n} {t}" for t, n in worker_threads.items()}, **llm_threads}
    intervals = timeline(switches, wakeups, set(tids))
    # Whole-window summary: each thread's time waiting for a CPU.
    print("time runnable without a CPU over the window (ms), and its longest stretch:")
    for tid, name in sorted(tids.items(), key=lambda kv: kv[1]):
        waits = [(e - s) * 1000 for s, e, st in intervals.get(tid, []) if st == "wait"]
        runs = [(e - s) * 1000 for s, e, st in intervals.get(tid, []) if st == "run"]
        if waits or runs:
            long_runs = " ".join(f">={limit}: {sum(1 for r in runs if r >= limit)}" for limit in (0.25, 0.5, 1, 2))
            print(f"  {name:>18} {tid}: waited {sum(waits):8.1f} (max {max(waits, default=0):6.2f}) ran {sum(runs):8.1f} "
                  f"(max {max(runs, default=0):6.2f}; runs of ms {long_runs})")
    window_start = records[0][0] if records else 0
    span = (records[-1][0] - window_start) if records else 1
    spent = who_ran(switches, window_start, window_start + span, tids)
    print("CPU time over the window by comm (ms):", ", ".join(f"{comm} {t * 1000:.0f}" for comm, t in spent.most_common(10)))
    print(f"slowest {args.worst} chats (connect / first byte / total ms) and what the threads did in them:")
    for start, connect, first, total, status in sorted(records, key=lambda r: -r[3])[:args.worst]:
        end = start + total / 1000
        print(f"  at +{start - window_start:6.3f} s: {connect:6.2f} / {first:6.2f} / {total:6.2f} ({status})")
        for tid, name in tids.items():
            parts = collections.Counter()
            for s, e, st in intervals.get(tid, []):
                overlap = min(e, end) - max(s, start)
                if overlap > 0:
                    parts[st] += overlap * 1000
            if parts.get("run", 0) > 0.05 or parts.get("wait", 0) > 0.05:
                print(f"      {name:>18}: " + ", ".join(f"{k} {v:.2f}" for k, v in sorted(parts.items())))
        others = who_ran(switches, start, end, tids)
        print("      CPUs meanwhile: " + ", ".join(f"{comm} {t * 1000:.2f}" for comm, t in others.most_common(6)))


if __name__ == "__main__":
    main()
