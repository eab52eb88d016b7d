#!/usr/bin/env python3
"""One character worker under hostile clients: Debian's slowhttptest (slowloris -H, slow body
-B, slow read -X) and a wrk flood, each while a legitimate client chats (a new connection per
request, one every 50 ms, zero-latency LLM: scripts/bench/fake_llm.py). Reports, per phase,
the legitimate client's p50/p99 and failures against the baseline (no attack), the worker's
peak RSS, the connections held to its port and how many the attacker kept open.

--memory 256M runs the worker under whisperd with that memory limit (a one-character roster)
and reports the cgroup's peak and OOM kills. Run through scripts/bench/hostile.sh (builds the
release binary). Traffic only to 127.0.0.1; every phase is bounded in time (--seconds) and
every loop in count.

--hummingbird BIN (hostile.sh --hummingbird) runs every phase, in the same run, against the
bench-only Hummingbird 2 server too (scripts/bench/hummingbird-worker: the worker's chat path,
only the HTTP layer differs); with --memory it runs under whisperd as a `command:` character.

The legitimate client connects from another loopback address than the attacker (127.0.0.2: a
flood comes from other addresses than a client's); the flood phases run again with it on the
attacker's (127.0.0.1: as behind a reverse proxy, where every client has the proxy's address).
--placement says where the processes run (each in the list is a run of every server): `shared`
(the default, and how every earlier run was placed: the server on CPU 0, the attacker, the client
and the fake LLM on CPU 1), `apart` (the same, with the attacker at SCHED_IDLE: it gets only the
CPU time the client and the fake LLM leave, as an attacker on the network uses none of the
client's), `unpinned` (no pinning, no priorities). The slow attacks run in the first placement
listed only. --variant LABEL:NAME=VALUE
attacks the same build again with that setting in the worker's environment.

--rounds K interleaves each flood phase with quiet windows: K rounds of a quiet window and an
attack window (--window s each, the attack built up for --ramp s before its window), the
client's latencies pooled over the K quiet and over the K attack windows. The table keeps the
old figure (the attack's pooled p99 over the baseline phase's, measured once at the start of
the server's run) beside the new one (over the pooled quiet windows'). The new one is the honest
one on a shared machine: the baseline at the start and an attack minutes later may see different
neighbours (another engineer's build takes both cores for a minute, then stops), so the old ratio
follows the neighbours as much as the attack; quiet and attack windows seconds apart, several
times over, see the same ones, and a pooled p99 of K windows rests on K times the chats.
"""
import argparse
import http.client
import json
import os
import re
import shutil
import socket
import statistics
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


def status_field(pid, name):
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(name + ":"):
            return int(line.split()[1])
    return 0


def connections_to(port):
    """Established TCP connections whose local port is `port` (the worker's side)."""
    count = 0
    target = f"{port:04X}"
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            if fields[1].rsplit(":", 1)[1] == target and fields[3] == "01":
                count += 1
    return count


PLACEMENTS = {
    # where: (the server, the attacker, the client and the fake LLM; the attacker at SCHED_IDLE)
    "shared": ("0", "1", "1", False),
    "apart": ("0", "1", "1", True),
    "unpinned": (None, None, None, False),
}


def pinned(cpus, argv):
    return (["taskset", "-c", cpus] if cpus else []) + argv


def pin_process(pid, cpus):
    """Every thread of `pid` (taskset -a) onto `cpus` (None: all)."""
    subprocess.run(["taskset", "-apc", cpus or f"0-{os.cpu_count() - 1}", str(pid)], check=True, stdout=subprocess.DEVNULL)


def pin_self(cpus):
    os.sched_setaffinity(0, {int(cpus)} if cpus else set(range(os.cpu_count())))


def start_under_whisperd(binary, work, port, env, memory, command=None, cpus="0"):
    """whisperd with a one-character roster (the worker, or `command` — the Hummingbird server
    — with `limits: {memory: …}`, its store in its own state directory); returns (whisperd, the
    character's pid, its memory cgroup directory or None)."""
    roster = Path(work) / "roster.yaml"
    worker_env = {key: value for key, value in env.items() if key not in ("PATH", "API_PORT", "WHISPERD_SQLITE_PATH")}
    roster.write_text(
        "version: 1\n"
        f"characters_dir: {REPO / 'characters'}\n"
        "characters:\n"
        "  elena:\n"
        f"    port: {port}\n"
        + (f"    command: {json.dumps(command)}\n    health: {{ready: started, watchdog: off}}\n" if command
           else "    health: {ready: notify, watchdog: off}\n")
        + f"    env: {json.dumps(worker_env)}\n"
        f"    limits: {{memory: {memory}}}\n")
    whisperd = subprocess.Popen(pinned(cpus, [binary]) + ["--roster", str(roster), "--state-dir", f"{work}/wstate",
                                 "--runtime-dir", f"{work}/run", "--log-dir", f"{work}/logs", "--http", "off"],
                                env={"PATH": "/usr/bin:/bin"}, stdout=subprocess.DEVNULL,
                                stderr=open(f"{work}/whisperd.log", "w"))
    wait_port(port, timeout=30)
    children = Path(f"/proc/{whisperd.pid}/task/{whisperd.pid}/children").read_text().split()
    mark = os.path.basename(command[0]).encode() if command else b"worker"
    pid = next(int(child) for child in children if mark in Path(f"/proc/{child}/cmdline").read_bytes())
    cgroup = None
    for line in Path(f"/proc/{pid}/cgroup").read_text().splitlines():
        _, controllers, path = line.split(":", 2)
        for base in ([f"/sys/fs/cgroup/memory{path}"] if "memory" in controllers.split(",") else []) + \
                ([f"/sys/fs/cgroup{path}"] if controllers == "" else []):
            if Path(base, "memory.max_usage_in_bytes").exists() or Path(base, "memory.peak").exists():
                cgroup = base
    return whisperd, pid, cgroup


def cgroup_memory(cgroup):
    """(limit MiB, peak MiB, OOM kills) of a v1 or v2 memory cgroup."""
    if cgroup is None:
        return None
    base = Path(cgroup)

    def number(name):
        try:
            text = (base / name).read_text().strip()
            return float("inf") if text == "max" else int(text)
        except (OSError, ValueError):
            return None

    if (base / "memory.max_usage_in_bytes").exists():
        oom = re.search(r"oom_kill (\d+)", (base / "memory.oom_control").read_text())
        return number("memory.limit_in_bytes") / 2**20, number("memory.max_usage_in_bytes") / 2**20, int(oom.group(1)) if oom else 0
    events = (base / "memory.events").read_text()
    oom = re.search(r"oom_kill (\d+)", events)
    return number("memory.max") / 2**20, number("memory.peak") / 2**20, int(oom.group(1)) if oom else 0


def server_gauges(port):
    """The worker's own count of connections and of bytes buffered by unfinished requests (its
    /metrics); None when it could not be read."""
    try:
        # From an address of its own: neither the attacker's nor the client's connections.
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=2, source_address=("127.0.0.3", 0))
        conn.request("GET", "/metrics")
        text = conn.getresponse().read().decode()
        conn.close()
    except (OSError, http.client.HTTPException):
        return None
    found = {}
    for name in ("http_connections", "http_buffered_bytes"):
        match = re.search(rf"^whisperd_worker_{name}{{[^}}]*}} (\d+)", text, re.M)
        found[name] = int(match.group(1)) if match else None
    return found


class Legit(threading.Thread):
    """Chats one at a time, a new connection each, every `interval` s, until `stop` is set
    (or `limit` requests): latencies of the 200s, and what failed."""

    def __init__(self, port, interval, limit, health_only=False, source="127.0.0.1"):
        super().__init__(daemon=True)
        self.port, self.interval, self.limit, self.health_only = port, interval, limit, health_only
        self.source = source
        self.latencies, self.failures = [], []
        self.stop = threading.Event()

    def run(self):
        body = json.dumps({"user_id": "legit", "message": "Hello there, how is the kelp forest today?"})
        for index in range(self.limit):
            if self.stop.is_set():
                return
            started = time.monotonic()
            try:
                conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10, source_address=(self.source, 0))
                if self.health_only:
                    conn.request("GET", "/health")
                else:
                    conn.request("POST", "/api/chat", body, {"Content-Type": "application/json"})
                response = conn.getresponse()
                answer = response.read()
                conn.close()
                if response.status == 200:
                    self.latencies.append((time.monotonic() - started) * 1000)
                else:
                    self.failures.append(f"{response.status}")
                    if os.environ.get("HOSTILE_DEBUG"):
                        print(f"legit: {response.status} {answer[:120]!r}", file=sys.stderr)
            except (OSError, http.client.HTTPException) as error:
                self.failures.append(type(error).__name__)
            spent = time.monotonic() - started
            self.stop.wait(max(0.0, self.interval - spent))


def percentile(values, fraction):
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(fraction * (len(ordered) - 1))))]


def phase(name, port, pid, attack, seconds, ramp, health_only=False, source="127.0.0.1"):
    """Runs `attack` (argv or None), waits `ramp` s for it to build up, then the legitimate
    client for `seconds` s, sampling RSS and connections every 0.5 s."""
    attacker = None
    if attack:
        # Line-buffered: slowhttptest's status survives its being stopped.
        attacker = subprocess.Popen(["stdbuf", "-oL"] + attack, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        time.sleep(ramp)
    legit = Legit(port, 0.05, int(seconds / 0.05) + 1, health_only, source)
    legit.start()
    held, rss, served, buffered = [], [], [], []
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        held.append(connections_to(port))
        rss.append(status_field(pid, "VmRSS"))
        gauges = server_gauges(port)
        if gauges and gauges["http_connections"] is not None:  # Hummingbird has no such gauges
            served.append(gauges["http_connections"])
            buffered.append(gauges["http_buffered_bytes"] or 0)
        time.sleep(0.5)
    legit.stop.set()
    legit.join(timeout=15)
    attacker_note = ""
    if attacker:
        failed_early = attacker.poll() not in (None, 0)
        if "wrk" in attack:
            # wrk prints its totals only at the end of its (bounded) run.
            try:
                attacker.wait(timeout=10)
            except subprocess.TimeoutExpired:
                pass
        attacker.terminate()
        try:
            output, _ = attacker.communicate(timeout=10)
        except subprocess.TimeoutExpired:
            attacker.kill()
            output, _ = attacker.communicate()
        attacker_note = summarize_attacker(output)
        if failed_early:
            raise RuntimeError(f"the attacker failed: {' '.join(attack)}: {output[-500:]}")
        if os.environ.get("HOSTILE_DEBUG"):
            print(output[-3000:], file=sys.stderr)
    return {
        "name": name, "ok": len(legit.latencies), "failures": legit.failures, "latencies": legit.latencies,
        "p50": percentile(legit.latencies, 0.5), "p99": percentile(legit.latencies, 0.99),
        "held_max": max(held) if held else 0, "held_median": statistics.median(held) if held else 0,
        "rss_max_mib": max(rss) / 1024 if rss else float("nan"), "attacker": attacker_note,
        "served_max": max(served) if served else -1, "buffered_max": max(buffered) if buffered else -1,
    }


def interleaved(name, port, pid, attack, args, health_only, source):
    """The attack in `args.rounds` rounds, each a quiet window and then an attack window of
    `args.window` s (the attack built up for `args.ramp` s before its window), the client's
    latencies pooled over the quiet windows and over the attack windows: both see the same
    machine (another engineer's build, a neighbour's burst) within seconds of each other, where
    a single baseline at the start of a server's run may have seen another load altogether."""
    quiet, attacked = [], []
    for _ in range(args.rounds):
        quiet.append(phase(name + " (quiet)", port, pid, None, args.window, 0, health_only, source))
        time.sleep(1)
        attacked.append(phase(name, port, pid, attack, args.window, args.ramp, health_only, source))
        time.sleep(2)
    pooled_quiet = [value for row in quiet for value in row["latencies"]]
    pooled = [value for row in attacked for value in row["latencies"]]
    row = dict(attacked[-1])
    row.update({
        "ok": len(pooled), "failures": [f for r in attacked for f in r["failures"]], "latencies": pooled,
        "p50": percentile(pooled, 0.5), "p99": percentile(pooled, 0.99),
        "held_max": max(r["held_max"] for r in attacked), "held_median": statistics.median([r["held_median"] for r in attacked]),
        "rss_max_mib": max(r["rss_max_mib"] for r in attacked), "served_max": max(r["served_max"] for r in attacked),
        "buffered_max": max(r["buffered_max"] for r in attacked),
        "attacker": " / ".join(r["attacker"] for r in attacked),
        "quiet_ok": len(pooled_quiet), "quiet_failures": [f for r in quiet for f in r["failures"]],
        "quiet_p50": percentile(pooled_quiet, 0.5), "quiet_p99": percentile(pooled_quiet, 0.99),
        "rounds": [(q["p99"], a["p99"]) for q, a in zip(quiet, attacked)],
    })
    return row


def summarize_attacker(output):
    """slowhttptest's last status (connected / pending / closed / service available), or wrk's totals."""
    output = re.sub(r"\x1b\[[0-9;]*[A-Za-z]", "", output)
    statuses = re.findall(r"(pending|connected|error|closed|service available):\s+(\d+|YES|NO)", output)
    if statuses:
        latest = {}
        for key, value in statuses:
            latest[key] = value
        return ", ".join(f"{key} {value}" for key, value in latest.items())
    requests = re.search(r"(\d+) requests in ([\d.]+\w+)", output)
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", output)
    errors = re.search(r"Socket errors: (.*)", output)
    parts = []
    if requests:
        parts.append(f"{requests.group(1)} requests in {requests.group(2)}")
    if non2xx:
        parts.append(f"{non2xx.group(1)} non-2xx")
    if errors:
        parts.append("socket errors " + errors.group(1).strip())
    return "; ".join(parts)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--bin", required=True)
    parser.add_argument("--also-bin", action="append", default=[], metavar="LABEL=PATH",
                        help="another whisperd binary (e.g. the build before a change) attacked in the same run")
    parser.add_argument("--variant", action="append", default=[], metavar="LABEL:NAME=VALUE[,NAME=VALUE]",
                        help="the --bin build again, with these settings in the worker's environment")
    parser.add_argument("--hummingbird", default="", help="also attack this whisperd-hummingbird binary (build-hummingbird.sh)")
    parser.add_argument("--seconds", type=float, default=20, help="legitimate client's time per phase")
    parser.add_argument("--ramp", type=float, default=8, help="attack's time to build up before measuring")
    parser.add_argument("--connections", type=int, default=1000, help="slowhttptest's target connections")
    parser.add_argument("--memory", default="", help="run the server under whisperd with this memory limit (e.g. 256M)")
    parser.add_argument("--placement", default="shared", help="comma-separated: shared, apart, unpinned (see the top of this file)")
    parser.add_argument("--diagnose", action="store_true",
                        help="two more flood phases: the attacker at SCHED_IDLE (it takes only CPU time the client and the "
                             "LLM leave), and the client asking GET /health instead of chatting")
    parser.add_argument("--rounds", type=int, default=0,
                        help="flood phases interleaved: this many rounds of a quiet window and an attack window each, "
                             "p99s pooled (0: one attack window after the baseline, as before)")
    parser.add_argument("--window", type=float, default=6, help="seconds of each interleaved window (--rounds)")
    parser.add_argument("--only", default="", help="comma-separated words: run only the phases whose name has one (baseline always runs); "
                             "a word starting with = is a whole name")
    args = parser.parse_args()
    placements = args.placement.split(",")
    for placement in placements:
        if placement not in PLACEMENTS:
            parser.error(f"--placement {placement}: not one of {', '.join(PLACEMENTS)}")

    work = tempfile.mkdtemp(prefix="whisperd-hostile-bench-", dir="/var/tmp")
    os.chmod(work, 0o755)  # under whisperd the worker is a user of its own (docs/security.md)
    processes = []
    try:
        llm = subprocess.Popen([sys.executable, str(HERE / "fake_llm.py")], stdout=subprocess.PIPE, text=True)
        processes.append(llm)
        llm_port = int(llm.stdout.readline())
        servers = [("whisperd", None, {})]
        others = {}
        for entry in args.also_bin:
            label, path = entry.split("=", 1)
            others[f"whisperd ({label})"] = path
            servers.append((f"whisperd ({label})", None, {}))
        for entry in args.variant:
            label, settings = entry.split(":", 1)
            servers.append((f"whisperd ({label})", None, dict(pair.split("=", 1) for pair in settings.split(","))))
        if args.hummingbird:
            # Capped like the worker (it stops accepting at 256), and as Hummingbird comes (no cap).
            servers += [("hummingbird", args.hummingbird, {}), ("hummingbird, no cap", args.hummingbird, {"HB_MAX_CONNECTIONS": "0"})]
        lines = [f"`scripts/bench/hostile.sh {' '.join(sys.argv[3:])}` ({time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}): "
                 f"{os.cpu_count()} cores, kernel {os.uname().release}; release build; one server with default limits"
                 f"{' under whisperd (memory ' + args.memory + ')' if args.memory else ''}, the zero-latency fake LLM; "
                 "placements: shared = the server on CPU 0, the attacker, the client and the fake LLM on CPU 1; apart = the same "
                 "with the attacker at SCHED_IDLE; unpinned = no pinning. The client "
                 f"chats on a new connection every 50 ms for {args.seconds:.0f} s per phase, after the attack has built up for "
                 f"{args.ramp:.0f} s, from 127.0.0.2 (the attacker is on 127.0.0.1) unless the phase says 127.0.0.1. "
                 "\"whisperd\" is the worker's own HTTP server; \"hummingbird\" the same chat path on Hummingbird 2 "
                 "(scripts/bench/hummingbird-worker)."
                 + (f" Each flood interleaved: {args.rounds} rounds of a quiet window and an attack window of {args.window:.0f} s "
                    f"(the attack built up for {args.ramp:.0f} s before its window), p99s pooled; \"p99 / baseline\" is the "
                    "attack's pooled p99 over the baseline phase at the start of the server's run (the old figure), the "
                    "interleaved column over its own pooled quiet windows (the new one)." if args.rounds else "")
                 + f" Load average at the start: {', '.join(f'{x:.2f}' for x in os.getloadavg())}.", "",
                 "| placement | server | phase | chats ok | failed | p50 ms | p99 ms | p99 / baseline | interleaved: quiet p50 / p99 ms, p99 / quiet p99 (rounds: quiet → attack p99) | TCP connections to the port (max / median) | the server's own count (max) | bytes buffered (max) | RSS max MiB | attacker's view |",
                 "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
        notes = []
        for placement in placements:
            server_cpus, attacker_cpus, client_cpus, idle_attacker = PLACEMENTS[placement]
            pin_process(llm.pid, client_cpus)
            pin_self(client_cpus)
            for server, hummingbird, server_env in servers:
                binary = others.get(server, args.bin)
                port = free_port()
                env = {"PATH": "/usr/bin:/bin", "API_PORT": str(port), "WHISPERD_CHARACTERS_DIR": str(REPO / "characters"),
                       "WHISPERD_SQLITE_PATH": f"{work}/memory-{len(notes)}.sqlite3", "WHISPERD_STATE_DIR": f"{work}/state",
                       "LLM_BASE_URL": f"http://127.0.0.1:{llm_port}/v1", "LLM_MODEL_NAME": "bench-model", **server_env}
                cgroup = None
                if args.memory:
                    shutil.rmtree(f"{work}/wstate", ignore_errors=True)
                    supervisor, server_pid, cgroup = start_under_whisperd(
                        binary, work, port, env, args.memory, command=[hummingbird, "elena"] if hummingbird else None, cpus=server_cpus)
                elif hummingbird:
                    supervisor = subprocess.Popen(pinned(server_cpus, [hummingbird, "elena"]), env=env,
                                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
                    server_pid = supervisor.pid
                    wait_port(port, timeout=30)
                else:
                    supervisor, _ = start_worker(binary, env, f"{work}/notify.sock")
                    server_pid = supervisor.pid
                    pin_process(server_pid, server_cpus)
                    wait_port(port)
                processes.append(supervisor)
                rows = run_phases(args, port, server_pid, attacker_cpus, idle_attacker, slow_attacks=placement == placements[0])
                baseline = rows[0]
                for row in rows:
                    failed = len(row["failures"])
                    kinds = ", ".join(sorted(set(row["failures"])))
                    served = "–" if row["served_max"] < 0 else row["served_max"]
                    buffered = "–" if row["buffered_max"] < 0 else row["buffered_max"]
                    lines.append(f"| {placement} | {server} | {row['name']} | {row['ok']} | {failed}{' (' + kinds + ')' if failed else ''} | "
                                 f"{row['p50']:.2f} | {row['p99']:.2f} | {row['p99'] / baseline['p99']:.2f} | {interleaving(row)} | "
                                 f"{row['held_max']} / {row['held_median']:.0f} | {served} | {buffered} | {row['rss_max_mib']:.1f} | {row['attacker']} |")
                hwm = status_field(server_pid, "VmHWM") / 1024
                alive = Path(f"/proc/{server_pid}").exists()
                notes.append(f"{placement}, {server}: peak RSS (VmHWM) over the run {hwm:.1f} MiB; the same process at the end: "
                             f"{'yes' if alive else 'NO'}; load average at its end {os.getloadavg()[0]:.2f} "
                             f"({time.strftime('%H:%M', time.gmtime())}).")
                if args.memory:
                    memory = cgroup_memory(cgroup)
                    notes.append(f"{placement}, {server} under whisperd, `limits: {{memory: {args.memory}}}`: " + (
                        f"cgroup limit {memory[0]:.0f} MiB, peak usage {memory[1]:.1f} MiB, OOM kills {memory[2]}." if memory
                        else "no memory cgroup found (whisperd without a memory controller: not enforced)."))
                supervisor.terminate()
                try:
                    supervisor.wait(timeout=20)
                except subprocess.TimeoutExpired:
                    supervisor.kill()
                    supervisor.wait()
                processes.remove(supervisor)
                # Partial results survive a run cut short.
                print("\n".join(lines[-len(rows):]), file=sys.stderr)
        print("\n".join(lines + [""] + notes))
    finally:
        for proc in processes:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        shutil.rmtree(work, ignore_errors=True)


def interleaving(row):
    """The interleaved protocol's figure for a row (--rounds), or a dash."""
    if "quiet_p99" not in row:
        return "–"
    failed = len(row["quiet_failures"])
    rounds = ", ".join(f"{quiet:.1f} → {attacked:.1f}" for quiet, attacked in row["rounds"])
    return (f"{row['quiet_p50']:.2f} / {row['quiet_p99']:.2f}{f' ({failed} failed)' if failed else ''}, "
            f"**{row['p99'] / row['quiet_p99']:.2f}×** ({rounds})")


def run_phases(args, port, pid, attacker_cpus, idle_attacker=False, slow_attacks=True):
    """The baseline and each attack against the server on `port` (process `pid`)."""
    url = f"http://127.0.0.1:{port}"
    # An interleaved flood (--rounds) runs for its build-up and one window at a time.
    seconds = str(int(args.ramp + (args.window if args.rounds else args.seconds)))
    idle = ["chrt", "--idle", "0"] if idle_attacker else []

    def wrk(connections):
        return idle + pinned(attacker_cpus, ["wrk", "-c", str(connections), "-t", "1", "-d", f"{seconds}s", f"{url}/health"])

    slow = idle + pinned(attacker_cpus, ["slowhttptest", "-c", str(args.connections), "-r", "200", "-i", "5",
                                  "-l", str(int(args.ramp + args.seconds + 10)), "-p", "5"])
    other = "127.0.0.2"
    # (name, attack, the client's address, whether the client asks GET /health instead of chatting)
    phases = [
        ("baseline", None, other, False),
        ("slowloris (slowhttptest -H)", slow + ["-H", "-u", f"{url}/health"], other, False),
        ("slow body (slowhttptest -B, Content-Length 8192)", slow + ["-B", "-s", "8192", "-u", f"{url}/api/chat"], other, False),
        ("slow read (slowhttptest -X, window 1-32 B, 10 pipelined)", slow + ["-X", "-k", "10", "-w", "1", "-y", "32", "-n", "5", "-z", "8",
                                                                     "-u", f"{url}/metrics"], other, False),
        ("flood (wrk -c 512 GET /health)", wrk(512), other, False),
        ("flood (wrk -c 512), client from 127.0.0.1", wrk(512), "127.0.0.1", False),
        ("flood under the cap (wrk -c 200)", wrk(200), other, False),
        ("flood under the cap (wrk -c 200), client from 127.0.0.1", wrk(200), "127.0.0.1", False),
    ]
    if args.diagnose:
        phases += [("flood, the attacker at SCHED_IDLE", ["chrt", "--idle", "0"] + wrk(512), other, False),
                   ("flood, the client asks GET /health", wrk(512), other, True)]
    if not slow_attacks:
        phases = [entry for entry in phases if entry[1] is None or "slowhttptest" not in entry[1]]
    if args.only:
        words = args.only.split(",")
        phases = [entry for entry in phases if entry[1] is None or any(
            entry[0] == word[1:] if word.startswith("=") else word in entry[0] for word in words)]
    rows = []
    for name, attack, source, health_only in phases:
        if args.rounds and attack and "wrk" in attack:
            rows.append(interleaved(name, port, pid, attack, args, health_only, source))
        else:
            rows.append(phase(name, port, pid, attack, args.seconds, args.ramp if attack else 0, health_only, source))
        print({key: value for key, value in rows[-1].items() if key != "latencies"}, file=sys.stderr)
        time.sleep(2)
    return rows


if __name__ == "__main__":
    main()
