#!/usr/bin/env python3
"""Chat overhead of the character worker, with a zero-latency LLM (fake_llm.py).

For SQLite and for PostgreSQL (a throwaway cluster): exec -> READY time (median of 5),
`wrk -c 16` on POST /api/chat (200 users, so every request reads a real history and writes two
rows), the same wrk straight at the fake LLM, the worker's idle RSS after the load, and its own
split (chat minus LLM time, from its /metrics). Writes docs/bench/chat-<date>.md.

With --hummingbird BIN (chat.sh --hummingbird), the same load also goes, in the same run, to
the bench-only Hummingbird 2 server (scripts/bench/hummingbird-worker: the same chat path,
only the HTTP layer differs): its rows say "hummingbird" (it sends no READY: no start time).

Run through scripts/bench/chat.sh (builds the release binary, installs what is needed).
WORKER_THREADS in the environment is passed to the worker (default 16).
"""
import argparse
import os
import re
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent
PG_BIN = "/usr/lib/postgresql/15/bin"


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port, timeout=10):
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return
        except OSError:
            time.sleep(0.02)
    raise RuntimeError(f"nothing listens on {port}")


def duration_seconds(text):
    """wrk's duration: 10s, 2m, 1h."""
    return float(text[:-1]) * {"s": 1, "m": 60, "h": 3600}[text[-1]] if text[-1] in "smh" else float(text)


def wrk(url, lua, connections, duration, cpu):
    result = subprocess.run(["taskset", "-c", cpu, "wrk", "-c", str(connections), "-t", "1", "-d", duration, "--latency",
                             "-s", lua, url], capture_output=True, text=True, check=True).stdout

    def ms(label):
        match = re.search(rf"^\s*{label}%\s+([\d.]+)(us|ms|s)\s*$", result, re.M)
        value, unit = float(match.group(1)), match.group(2)
        return value / 1000 if unit == "us" else value * 1000 if unit == "s" else value

    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", result).group(1))
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", result)
    return {"p50": ms("50"), "p90": ms("90"), "p99": ms("99"), "rps": rps, "non2xx": int(errors.group(1)) if errors else 0}


class Postgres:
    def __init__(self, work, name="pg"):
        self.dir = Path(work) / name
        self.dir.mkdir()
        shutil.chown(self.dir, "postgres", "postgres")
        as_pg = ["setpriv", "--reuid=postgres", "--regid=postgres", "--init-groups", "--"]
        subprocess.run(as_pg + [f"{PG_BIN}/initdb", "-D", str(self.dir / "data"), "-A", "trust", "-U", "whisperd", "-E", "UTF8"],
                       check=True, capture_output=True)
        self.port = free_port()
        # fsync stays on: the figure is for a durable store.
        self.proc = subprocess.Popen(as_pg + [f"{PG_BIN}/postgres", "-D", str(self.dir / "data"), "-p", str(self.port),
                                              "-k", str(self.dir), "-c", "listen_addresses=127.0.0.1"],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        for _ in range(200):
            if subprocess.run(["pg_isready", "-q", "-h", "127.0.0.1", "-p", str(self.port)]).returncode == 0:
                break
            time.sleep(0.05)
        subprocess.run(["createdb", "-h", "127.0.0.1", "-p", str(self.port), "-U", "whisperd", "whisperd"], check=True)
        self.url = f"postgresql://whisperd@127.0.0.1:{self.port}/whisperd"

    def stop(self):
        self.proc.send_signal(2)
        self.proc.wait(timeout=30)


def start_worker(binary, env, notify_path):
    """Starts the worker; returns (process, seconds from exec to READY=1)."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    if os.path.exists(notify_path):
        os.unlink(notify_path)
    sock.bind(notify_path)
    sock.settimeout(10)
    started = time.monotonic()
    proc = subprocess.Popen(["taskset", "-c", "0", binary, "worker", "elena"], env=dict(env, NOTIFY_SOCKET=notify_path),
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    while True:
        data = sock.recv(65536).decode()
        if "READY=1" in data:
            ready = time.monotonic() - started
            break
    sock.close()
    return proc, ready


def start_hummingbird(binary, env):
    """The Hummingbird 2 server with the worker's environment, on the worker's CPU; returns it
    once its port answers."""
    proc = subprocess.Popen(["taskset", "-c", "0", binary, "elena"], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_port(int(env["API_PORT"]), timeout=30)
    return proc


def cpu_seconds(pid):
    """User + system CPU time of a process so far (its threads included)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def rss_mib(pid):
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def metric_mean(text, name):
    total = float(re.search(rf"^{name}_sum{{[^}}]*}} ([\d.e+-]+)$", text, re.M).group(1))
    count = float(re.search(rf"^{name}_count{{[^}}]*}} ([\d.e+-]+)$", text, re.M).group(1))
    return total / count * 1000 if count else float("nan")


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--bin", required=True)
    parser.add_argument("--duration", default="10s")
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--stores", default="sqlite,postgres")
    parser.add_argument("--store-dir", default=None, help="where the SQLite file goes (default: the work dir on /var/tmp, a real disk)")
    parser.add_argument("--hummingbird", default=None, help="also measure this whisperd-hummingbird binary (build-hummingbird.sh)")
    args = parser.parse_args()

    work = tempfile.mkdtemp(prefix="whisperd-chat-bench-", dir="/var/tmp")
    os.chmod(work, 0o755)
    processes = []
    postgres = None
    try:
        llm = subprocess.Popen(["taskset", "-c", "1", sys.executable, str(HERE / "fake_llm.py")], stdout=subprocess.PIPE, text=True)
        processes.append(llm)
        llm_port = int(llm.stdout.readline())
        lua = Path(work) / "chat.lua"
        lua.write_text("""
counter = 0
request = function()
  counter = counter + 1
  local body = '{"user_id":"bench-' .. (counter % 200) .. '","message":"Hello there, how is the kelp forest today?"}'
  return wrk.format("POST", nil, {["Content-Type"] = "application/json"}, body)
end
""")
        llm_lua = Path(work) / "llm.lua"
        llm_lua.write_text("""
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.body = '{"model":"bench-model","messages":[{"role":"user","content":"hi"}],"max_tokens":512}'
""")
        direct = wrk(f"http://127.0.0.1:{llm_port}/v1/chat/completions", str(llm_lua), args.connections, args.duration, "1")
        rows = []
        servers = [("whisperd", args.bin)] + ([("hummingbird", args.hummingbird)] if args.hummingbird else [])
        for store, (server, binary) in [(store, server) for store in args.stores.split(",") for server in servers]:
            port = free_port()
            env = {"PATH": "/usr/bin:/bin", "API_PORT": str(port), "WHISPERD_CHARACTERS_DIR": str(REPO / "characters"),
                   "WHISPERD_SQLITE_PATH": f"{args.store_dir or work}/memory-{store}-{server}-{os.getpid()}.sqlite3",
                   "LLM_BASE_URL": f"http://127.0.0.1:{llm_port}/v1", "LLM_MODEL_NAME": "bench-model",
                   "WORKER_THREADS": os.environ.get("WORKER_THREADS", "16"),
                   # wrk is one address asking as fast as it can: the throughput, not the per-address rate.
                   "API_PEER_REQUESTS_PER_SECOND": "0"}
            if store == "postgres":
                postgres = Postgres(work, f"pg-{server}")
                env["POSTGRES_URL"] = postgres.url
            ready_times = []
            for _ in range(5 if server == "whisperd" else 0):
                proc, ready = start_worker(binary, env, f"{work}/notify.sock")
                ready_times.append(ready * 1000)
                proc.terminate()
                proc.wait()
            if server == "whisperd":
                worker, _ = start_worker(binary, env, f"{work}/notify.sock")
            else:
                worker = start_hummingbird(binary, env)
            processes.append(worker)
            wait_port(port)
            time.sleep(1)  # idle: a second after READY
            idle_rss = rss_mib(worker.pid)
            # Warm-up: every user gets a history.
            wrk(f"http://127.0.0.1:{port}/api/chat", str(lua), args.connections, "2s", "1")
            cpu_before = cpu_seconds(worker.pid)
            loaded = wrk(f"http://127.0.0.1:{port}/api/chat", str(lua), args.connections, args.duration, "1")
            cpu_used = cpu_seconds(worker.pid) - cpu_before
            time.sleep(1)
            metrics = subprocess.run(["curl", "-s", f"http://127.0.0.1:{port}/metrics"], capture_output=True, text=True).stdout
            inside = metric_mean(metrics, "whisperd_worker_chat_duration_seconds") - metric_mean(metrics, "whisperd_worker_llm_duration_seconds")
            rows.append({"store": store, "server": server, "ready": statistics.median(ready_times) if ready_times else float("nan"),
                         "ready_all": ready_times, "idle_rss": idle_rss,
                         "rss_after": rss_mib(worker.pid), "chat": loaded, "inside": inside,
                         "cpu_per_chat": cpu_used / (loaded["rps"] * duration_seconds(args.duration)) * 1e6,
                         "overhead_p50": loaded["p50"] - direct["p50"]})
            worker.terminate()
            worker.wait()
            processes.remove(worker)
            if postgres:
                postgres.stop()
                postgres = None
        stamp = time.strftime("%Y%m%d-%H%M%S", time.gmtime())
        out = REPO / "docs" / "bench" / f"chat-{stamp}.md"
        lines = [f"# Chat overhead of the worker ({time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())})", "",
                 f"{os.cpu_count()} cores, kernel {os.uname().release}; release build; zero-latency fake LLM "
                 f"(scripts/bench/fake_llm.py); `wrk -c {args.connections} -t 1 -d {args.duration}` on POST /api/chat, "
                 "200 users; worker on CPU 0, wrk and the LLM on CPU 1; stores on the VM's disk "
                 "(SQLite WAL + synchronous=FULL; PostgreSQL with fsync on).", "",
                 f"Straight at the fake LLM: p50 {direct['p50']:.2f} ms, p99 {direct['p99']:.2f} ms, {direct['rps']:.0f} requests/s.", "",
                 "| store | HTTP server | exec → READY ms (median of 5) | idle RSS MiB | RSS after load MiB | chat requests/s | chat p50 / p90 / p99 ms | overhead p50 ms (chat − LLM) | worker's own ms per chat (mean, chat − LLM) | worker CPU µs per chat | non-2xx |",
                 "|---|---|---|---|---|---|---|---|---|---|---|"]
        for row in rows:
            chat = row["chat"]
            lines.append(f"| {row['store']} | {row['server']} | {row['ready']:.1f} | {row['idle_rss']:.1f} | {row['rss_after']:.1f} | {chat['rps']:.0f} | "
                         f"{chat['p50']:.2f} / {chat['p90']:.2f} / {chat['p99']:.2f} | {row['overhead_p50']:.2f} | {row['inside']:.2f} | "
                         f"{row['cpu_per_chat']:.0f} | {chat['non2xx']} |")
        out.write_text("\n".join(lines) + "\n")
        print("\n".join(lines))
        print(f"\nwrote {out}")
    finally:
        for proc in processes:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        if postgres:
            postgres.stop()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
