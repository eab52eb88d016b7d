#!/usr/bin/env python3
"""whisperd's chaos suite: a fleet of 12 characters (4 built-in workers answering through a
zero-latency test LLM, 8 plain commands, two of which fork a daemon of their own) under a real
whisperd, with real cgroups, and one scenario after another. Each prints its figures and the
suite exits 1 when a promise breaks.

  kill-storm   N random SIGKILLs to characters' processes → every character back, no orphan,
               no duplicate, /metrics restarts{reason="Signaled"} == kills made
  crash        SIGKILL whisperd mid-storm, start it again → no orphan, no duplicate, every
               character back, a persisted stop intent kept
  silent       a child that ignores SIGTERM is killed after its grace; a child that stops its
               watchdog pings is restarted with WatchdogTimeout; children flooding their notify
               socket and stdout do not push /health's p99 past 10 ms
  oom          one character grows past its memory limit, again and again → OOMKilled with its
               peak memory; the workers' chat p99 while it does within 10 % of without
  hogs         a fork bomb and a CPU hog, one character each → held at pids / cpus; the workers'
               chat p99 within 10 % of without
  db-outage    the PostgreSQL cluster the workers share stops for 30 s → facet store:down, no
               restart, chat answered 503, back by themselves; every 200-answered message stored
  disk-full    the log dir (a tmpfs) fills up → the flooding child never blocks, dropped lines
               counted, /health p99 <= 10 ms; logging resumes once there is room
  reload       50 roster edits, valid and invalid alternately, during a kill storm → after each,
               the fleet is the last valid roster (names, and one process each)

The workers keep their conversations in a throwaway PostgreSQL cluster; the log dir is a small
tmpfs. Only processes this script started are signalled (by pid). Everything lives in temp dirs
and an own cgroup base, removed (and unmounted) at the end, also on failure.
"""
import argparse
import http.client
import json
import multiprocessing
import os
import random
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import traceback
import urllib.request

PG_BIN = "/usr/lib/postgresql/15/bin"
HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
failures = []
CGROUP_ROOTS = ["/sys/fs/cgroup/" + c for c in ("unified", "pids", "memory", "cpu", "cpuacct", "freezer", "cpuset")]
# --partition: the misbehaving characters get `cpuset:` of their own CPU, everything else (the
# workers, whisperd, PostgreSQL, the LLM, the load) the other CPUs.
HOSTILE_CPUSET = ""


def promise(ok, text):
    print(("ok    " if ok else "FAIL  ") + text, flush=True)
    if not ok:
        failures.append(text)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def http_get(port, path, timeout=5):
    with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=timeout) as r:
        return r.status, r.read().decode()


def health(port):
    try:
        return http_get(port, "/health")
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


class Postgres:
    """A throwaway cluster on a loopback port, run as the postgres user; stop() and start() are
    the outage (a fast shutdown: every committed row is on disk before it ends)."""

    def __init__(self):
        self.dir = tempfile.mkdtemp(prefix="wd-chaos-pg-")
        shutil.chown(self.dir, "postgres", "postgres")
        self.as_pg = ["setpriv", "--reuid=postgres", "--regid=postgres", "--init-groups", "--"]
        subprocess.run(self.as_pg + [f"{PG_BIN}/initdb", "-D", f"{self.dir}/data", "-A", "trust", "-U", "whisperd",
                                     "-E", "UTF8"], check=True, capture_output=True)
        self.port = free_port()
        self.process = None
        self.start()
        subprocess.run(["createdb", "-h", "127.0.0.1", "-p", str(self.port), "-U", "whisperd", "whisperd"], check=True)
        self.url = f"postgresql://whisperd@127.0.0.1:{self.port}/whisperd"

    def start(self):
        self.process = subprocess.Popen(
            self.as_pg + [f"{PG_BIN}/postgres", "-D", f"{self.dir}/data", "-p", str(self.port), "-k", self.dir,
                          "-c", "listen_addresses=127.0.0.1", "-c", "max_connections=200",
                          # No disk flushes: their latency would swamp what the chat p99 comparisons
                          # measure. The outage is a clean shutdown, which still writes everything.
                          "-c", "fsync=off", "-c", "synchronous_commit=off", "-c", "full_page_writes=off"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        for _ in range(400):
            if subprocess.run(["pg_isready", "-q", "-h", "127.0.0.1", "-p", str(self.port)]).returncode == 0:
                return
            time.sleep(0.05)
        raise RuntimeError("PostgreSQL did not start")

    def stop(self):
        if self.process and self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)  # fast shutdown, by pid
            self.process.wait(timeout=60)

    def query(self, sql):
        return subprocess.run(["psql", "-h", "127.0.0.1", "-p", str(self.port), "-U", "whisperd", "-d", "whisperd",
                               "-At", "-c", sql], capture_output=True, text=True, check=True).stdout

    def cleanup(self):
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)


class Fleet:
    def __init__(self, binary, work, marker, postgres):
        self.binary, self.work, self.marker, self.postgres = binary, work, marker, postgres
        self.http = free_port()
        self.cgroup = "/wd-chaos-" + str(os.getpid())
        self.process = None
        self.llm = subprocess.Popen(["/usr/bin/python3", os.path.join(ROOT, "scripts/bench/fake_llm.py")],
                                    stdout=subprocess.PIPE, text=True)
        self.llm_port = int(self.llm.stdout.readline())
        self.workers = [f"w{i}" for i in range(4)]
        self.worker_ports = {name: free_port() for name in self.workers}
        self.plain = [f"p{i}" for i in range(8)]
        for name in self.workers:
            os.makedirs(f"{work}/characters/{name}", exist_ok=True)
            with open(f"{work}/characters/{name}/character.md", "w") as f:
                f.write(f"You are {name}.\n")
        # The log dir is a small tmpfs of its own, so the disk-full scenario can fill it.
        self.logs = f"{work}/logs"
        os.makedirs(self.logs)
        subprocess.run(["mount", "-t", "tmpfs", "-o", "size=32m,mode=0755", "wd-chaos-logs", self.logs], check=True)
        self.write_roster()

    def write_roster(self, extra=""):
        lines = [
            "defaults:",
            "  restart: always",
            "  restart_delay: 0s",
            "  restart_delay_max: 200ms",
            "  restart_budget: {max: 10000, window: 1s}",
            "  stop_grace: 2s",
            "  limits: {memory: 256M, pids: 64}",
            "  health: {ready: started, ready_timeout: 10s, watchdog: off}",
            # The scenarios measure resource isolation (cgroups) as before tenants existed; the
            # workers keep root so they reach the scenario files in the 0700 work dir.
            "  user: root",
            "  sandbox: {filesystem: off}",
            "  env:",
            f"    LLM_BASE_URL: http://127.0.0.1:{self.llm_port}",
            "    LLM_MODEL_NAME: chaos",
            f"    POSTGRES_URL: {self.postgres.url}",
            "characters:",
        ]
        for name in self.workers:
            lines.append(f"  {name}: {{port: {self.worker_ports[name]}, health: {{ready: notify, watchdog: 5s}}}}")
        for index, name in enumerate(self.plain):
            # argv[0] carries the marker (bash's exec -a), so every process the fleet starts is known.
            if index < 2:  # forks a daemon of its own that outlives its shell unless the cgroup is killed
                command = (f"[bash, -c, '(exec -a {self.marker}-{name}-daemon setsid sleep 100000) & "
                           f"exec -a {self.marker}-{name} sleep 100001']")
            else:
                command = f"[bash, -c, 'exec -a {self.marker}-{name} sleep 100002']"
            lines.append(f"  {name}: {{command: {command}}}")
        with open(f"{self.work}/roster.yaml", "w") as f:
            f.write("\n".join(lines) + "\n" + extra)
        self.expected = set(self.workers) | set(self.plain) | set(re.findall(r"^  ([a-z0-9][a-z0-9_-]*):", extra, re.M))

    def apply(self, extra=""):
        """Writes the base roster plus `extra` and reloads; returns whisperctl's result."""
        self.write_roster(extra)
        return self.ctl("reload")

    def start(self):
        self.log = open(f"{self.work}/whisperd.log", "a")
        self.process = subprocess.Popen(
            [self.binary, "--roster", f"{self.work}/roster.yaml", "--state-dir", f"{self.work}/state",
             "--runtime-dir", f"{self.work}/run", "--log-dir", self.logs,
             "--http", f"127.0.0.1:{self.http}", "--cgroup", self.cgroup],
            stdout=self.log, stderr=subprocess.STDOUT, start_new_session=True)

    def characters(self):
        status, body = http_get(self.http, "/v1/characters")
        data = json.loads(body)
        return {c["name"]: c for c in (data if isinstance(data, list) else data.get("characters", []))}

    def wait_all_ready(self, timeout=60, except_names=()):
        deadline = time.time() + timeout
        while time.time() < deadline:
            try:
                chars = self.characters()
                if set(chars) == self.expected and all(c.get("ready") for n, c in chars.items() if n not in except_names):
                    return True
            except Exception:
                pass
            time.sleep(0.1)
        return False

    def character(self, name):
        status, body = http_get(self.http, f"/v1/characters/{name}")
        return json.loads(body)

    def ctl(self, *args):
        return subprocess.run([os.path.join(os.path.dirname(self.binary), "whisperctl"), "--socket",
                               f"{self.work}/run/control.sock", *args], capture_output=True, text=True, timeout=60)

    def restarts(self):
        """character → {reason: count} from /metrics."""
        _, text = http_get(self.http, "/metrics")
        result = {}
        for m in re.finditer(r'^whisperd_character_restarts_total\{([^}]*)\} ([0-9.e+]+)$', text, re.M):
            labels = dict(re.findall(r'(\w+)="([^"]*)"', m.group(1)))
            result.setdefault(labels["character"], {})[labels["reason"]] = int(float(m.group(2)))
        return result

    def marked_processes(self):
        """(pid, cmdline) of live processes whose command line carries this run's marker."""
        found = []
        for pid in os.listdir("/proc"):
            if not pid.isdigit():
                continue
            try:
                with open(f"/proc/{pid}/cmdline", "rb") as f:
                    cmd = f.read().replace(b"\0", b" ").decode(errors="replace")
                with open(f"/proc/{pid}/stat") as f:
                    state = f.read().rsplit(")", 1)[1].split()[0]
            except OSError:
                continue
            if self.marker in cmd and state != "Z" and "chaos.py" not in cmd:
                found.append((int(pid), cmd))
        return found

    def cgroup_pids(self):
        pids = set()
        for root in CGROUP_ROOTS:
            base = root + self.cgroup
            for dirpath, _, files in os.walk(base):
                if "cgroup.procs" in files:
                    with open(os.path.join(dirpath, "cgroup.procs")) as f:
                        pids.update(int(x) for x in f.read().split())
        return pids

    def orphans_and_duplicates(self):
        procs = self.marked_processes()
        inside = self.cgroup_pids()
        orphans = [(p, c) for p, c in procs if p not in inside]
        counts = {}
        for _, cmd in procs:
            name = cmd.split(self.marker + "-")[-1].split()[0]
            counts[name] = counts.get(name, 0) + 1
        duplicates = {n: c for n, c in counts.items() if c > 1}
        return orphans, duplicates

    def stop(self):
        if self.process and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()

    def cleanup(self):
        self.stop()
        for pid, _ in self.marked_processes():  # only ever ours: they carry this run's marker
            try:
                os.kill(pid, signal.SIGKILL)
            except OSError:
                pass
        self.llm.kill()
        self.llm.wait()
        subprocess.run(["umount", self.logs], capture_output=True)
        for root in CGROUP_ROOTS:
            base = root + self.cgroup
            for dirpath, _, _ in sorted(os.walk(base), key=lambda t: -len(t[0])):
                try:
                    os.rmdir(dirpath)
                except OSError:
                    pass


def health_latencies_ms(fleet, count):
    """GET /health `count` times, 5 ms apart; the latencies in ms."""
    latencies = []
    for _ in range(count):
        started = time.perf_counter()
        health(fleet.http)
        latencies.append((time.perf_counter() - started) * 1000)
        time.sleep(0.005)
    return latencies


def percentile(values, fraction):
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * fraction))] if ordered else float("nan")


class ChatLoad:
    """Paced chat on every worker, one process and one keep-alive connection each: `rate` turns a
    second per worker, well below saturation, so a latency change is interference, not queueing.
    Processes, not threads: with threads, one paused at the wrong moment holds the GIL and the
    other workers' turns are timed with its pause in them. Records (phase, worker, status,
    seconds, user, message, memory_stored, error) for every turn, as they come."""

    PHASES = ["warmup", "without", "with", "after", "before", "outage", "recovering"]

    def __init__(self, fleet, rate=25, tag="t"):
        self.fleet, self.rate, self.tag = fleet, rate, tag
        context = multiprocessing.get_context("fork")
        self._phase = context.Value("i", 0, lock=False)
        self._running = context.Event()
        self._running.set()
        self._queue = context.Queue()
        self.results = []
        self.lock = threading.Lock()
        self.processes = [context.Process(target=self.run, args=(name, fleet.worker_ports[name]), daemon=True)
                          for name in fleet.workers]
        for process in self.processes:
            process.start()
        self.collector = threading.Thread(target=self.collect, daemon=True)
        self.collector.start()

    @property
    def phase(self):
        return self.PHASES[self._phase.value]

    @phase.setter
    def phase(self, name):
        self._phase.value = self.PHASES.index(name)

    def collect(self):
        finished = 0
        while finished < len(self.processes):
            result = self._queue.get()
            if result is None:
                finished += 1
                continue
            with self.lock:
                self.results.append(result)

    def run(self, worker, port):
        connection = None
        sequence = 0
        next_at = time.perf_counter()
        while self._running.is_set():
            next_at += 1 / self.rate
            delay = next_at - time.perf_counter()
            if delay > 0:
                time.sleep(delay)
            else:
                next_at = time.perf_counter()
            sequence += 1
            user = f"{self.tag}-{worker}-u{sequence % 20}"
            message = f"{self.tag}-{worker}-{sequence}"
            body = json.dumps({"user_id": user, "message": message})
            phase = self.phase
            started = time.perf_counter()
            status, stored, error = 0, None, ""
            try:
                if connection is None:
                    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
                connection.request("POST", "/api/chat", body, {"Content-Type": "application/json"})
                response = connection.getresponse()
                answer = response.read()
                status = response.status
                try:
                    decoded = json.loads(answer)
                    stored = decoded.get("memory_stored")
                    error = decoded.get("error", "")
                except ValueError:
                    pass
                if response.getheader("Connection", "").lower() == "close":
                    connection.close()
                    connection = None
            except (OSError, http.client.HTTPException) as e:
                error = str(e)
                if connection:
                    connection.close()
                connection = None
            took = time.perf_counter() - started
            self._queue.put((phase, worker, status, took, user, message, stored, error))
        self._queue.put(None)

    def stop(self):
        self._running.clear()
        self.collector.join(30)
        for process in self.processes:
            process.join(15)
        with self.lock:
            return list(self.results)

    def latencies_ms(self, phase):
        with self.lock:
            return [r[3] * 1000 for r in self.results if r[0] == phase and r[2] == 200]

    def statuses(self, phase):
        with self.lock:
            counts = {}
            for r in self.results:
                if r[0] == phase:
                    counts[r[2]] = counts.get(r[2], 0) + 1
            return counts


def compare_chat_p99(fleet, label, start_event, stop_event, rounds=6, seconds=5):
    """Alternates windows without and with the event (so drift hits both alike) under paced chat
    on every worker; returns (p99 without, p99 with) over the pooled windows."""
    load = ChatLoad(fleet, tag=f"{label}{int(time.time())}")
    time.sleep(2)
    for index in range(rounds):
        load.phase = "without"
        time.sleep(seconds)
        start_event()
        load.phase = "with"
        time.sleep(seconds)
        stop_event()
    load.phase = "after"
    load.stop()
    without, with_event = load.latencies_ms("without"), load.latencies_ms("with")
    p99_without, p99_with = percentile(without, 0.99), percentile(with_event, 0.99)
    print(f"   chat on {len(fleet.workers)} workers, {load.rate}/s each: without {len(without)} turns, "
          f"p50 {percentile(without, 0.5):.2f} ms, p99 {p99_without:.2f} ms; with {len(with_event)} turns, "
          f"p50 {percentile(with_event, 0.5):.2f} ms, p99 {p99_with:.2f} ms "
          f"({(p99_with / p99_without - 1) * 100:+.1f} %); statuses: without {load.statuses('without')}, "
          f"with {load.statuses('with')}", flush=True)
    return p99_without, p99_with, load


def storm(fleet, kills, duration, rng, on_kill=None):
    """Kills characters' main processes at random; returns kills delivered per character."""
    made = {}
    interval = duration / kills
    delivered = 0
    while delivered < kills:
        time.sleep(interval * rng.uniform(0.5, 1.5))
        try:
            chars = fleet.characters()
        except Exception:
            continue
        running = [c for c in chars.values() if c.get("pid") and c.get("state") == "running"]
        if not running:
            continue
        victim = rng.choice(running)
        try:
            os.kill(victim["pid"], signal.SIGKILL)
        except ProcessLookupError:
            continue
        made[victim["name"]] = made.get(victim["name"], 0) + 1
        delivered += 1
        if on_kill:
            on_kill(delivered)
    return made


def kill_storm(fleet, args):
    print(f"\n== kill storm: {args.kills} SIGKILLs over ~{args.storm_seconds} s", flush=True)
    before = fleet.restarts()
    started = time.time()
    made = storm(fleet, args.kills, args.storm_seconds, random.Random(args.seed))
    took = time.time() - started
    back = fleet.wait_all_ready(60)
    time.sleep(0.5)
    orphans, duplicates = fleet.orphans_and_duplicates()
    after = fleet.restarts()
    mismatched = {}
    for name in set(made) | set(after):
        counted = after.get(name, {}).get("Signaled", 0) - before.get(name, {}).get("Signaled", 0)
        if counted != made.get(name, 0):
            mismatched[name] = (made.get(name, 0), counted)
    print(f"   {sum(made.values())} kills in {took:.1f} s over {len(made)} characters", flush=True)
    promise(back, "every character back and ready")
    promise(not orphans, f"0 orphans ({len(orphans)}: {orphans[:3]})")
    promise(not duplicates, f"0 duplicate instances ({duplicates})")
    promise(not mismatched, f"restarts_total{{reason=\"Signaled\"}} equals the kills made per character (made, counted: {mismatched})")


def supervisor_crash(fleet, args):
    print("\n== supervisor crash: SIGKILL whisperd mid-storm, start it again", flush=True)
    result = fleet.ctl("stop", "p7")
    promise(result.returncode == 0, f"whisperctl stop p7 ({result.stderr.strip()})")
    rng = random.Random(args.seed + 1)

    def maybe_crash(delivered):
        if delivered == 50:
            fleet.process.kill()  # whisperd itself, by pid
            fleet.process.wait()

    storm(fleet, 50, 5, rng, on_kill=maybe_crash)
    old_pids = {p for p, _ in fleet.marked_processes()}
    fleet.start()
    back = fleet.wait_all_ready(60, except_names=("p7",))
    time.sleep(0.5)
    orphans, duplicates = fleet.orphans_and_duplicates()
    chars = fleet.characters()
    survivors = old_pids & {p for p, _ in fleet.marked_processes()}
    promise(back, "every character back after whisperd's restart")
    promise(not orphans, f"0 orphans ({orphans[:3]})")
    promise(not duplicates, f"0 duplicates ({duplicates})")
    promise(not survivors, f"the dead whisperd's children were all killed before the new start ({len(survivors)} left)")
    promise(chars.get("p7", {}).get("state") == "stopped", f"p7's stop intent kept ({chars.get('p7', {}).get('state')})")
    result = fleet.ctl("start", "p7")
    promise(result.returncode == 0, "whisperctl start p7")


def silent_children(fleet, args):
    print("\n== slow and silent children", flush=True)
    flood_notify = ("python3 -c \"import socket,os,time\n"
                    "s=socket.socket(socket.AF_UNIX,socket.SOCK_DGRAM)\n"
                    "a=os.environ['NOTIFY_SOCKET']\n"
                    "s.sendto(b'READY=1',a)\n"
                    "while True:\n"
                    "  try: s.sendto(b'STATUS=flood\\\\nX_WHISPERD_INFLIGHT=1\\\\nbogus',a)\n"
                    "  except OSError: time.sleep(0.001)\"")
    extra = "\n".join([
        f"  stubborn: {{command: [bash, -c, 'trap \"\" TERM; exec -a {fleet.marker}-stubborn sleep 100003'], stop_grace: 1s}}",
        "  silent:",
        f"    command: [bash, -c, '{fleet.binary} notify READY=1 WATCHDOG=1; exec -a {fleet.marker}-silent sleep 100004']",
        "    health: {ready: notify, watchdog: 1s}",
        f"  floodout: {{command: [sh, -c, 'yes {fleet.marker}-floodout-line']}}",
        f"  floodnotify:",
        f"    command: [sh, -c, '{flood_notify.replace(chr(39), chr(39) * 2)}', {fleet.marker}-floodnotify]",
        "    health: {ready: notify}",
    ]) + "\n"
    fleet.write_roster(extra)
    fleet.process.send_signal(signal.SIGHUP)
    time.sleep(3)
    latencies = health_latencies_ms(fleet, 500)
    p99 = percentile(latencies, 0.99)
    print(f"   /health under stdout and notify floods: p50 {percentile(latencies, 0.5):.2f} ms, p99 {p99:.2f} ms", flush=True)
    promise(p99 <= 10, f"/health p99 {p99:.2f} ms <= 10 ms while two children flood")
    chars = fleet.characters()
    restarts = fleet.restarts().get("silent", {})
    promise(restarts.get("WatchdogTimeout", 0) >= 1, f"the silent child was restarted with WatchdogTimeout ({restarts})")
    started = time.time()
    result = fleet.ctl("stop", "stubborn")
    took = time.time() - started
    promise(result.returncode == 0 and 0.9 <= took <= 5, f"the child ignoring SIGTERM was killed after its 1 s grace ({took:.1f} s)")


def metric_value(fleet, name, character):
    _, text = http_get(fleet.http, "/metrics")
    match = re.search(rf'^{name}\{{character="{character}"\}} ([0-9.e+]+)$', text, re.M)
    return float(match.group(1)) if match else 0.0


def cgroup_dir(fleet, controller, name):
    """The character's directory in a v1 controller (whisperd's layout: BASE/char-NAME)."""
    for dirpath, dirnames, _ in os.walk(f"/sys/fs/cgroup/{controller}{fleet.cgroup}"):
        if os.path.basename(dirpath) == "char-" + name:
            return dirpath
    return None


def python_command(code, marker):
    # JSON strings are YAML double-quoted strings; the trailing argument carries the marker.
    return f"[/usr/bin/python3, -c, {json.dumps(code)}, {marker}]"


def restart_totals(fleet, names):
    restarts = fleet.restarts()
    return {name: sum(restarts.get(name, {}).values()) for name in names}


def oom_in_one(fleet, args):
    print("\n== OOM in one: a character grows 4 MiB every 50 ms past its 64M limit, again and again", flush=True)
    grower = "import time\nheld = []\ntime.sleep(0.3)\nwhile True:\n    held.append(b'x' * (4 << 20))\n    time.sleep(0.05)\n"
    extra = (f"  oomer:\n    command: {python_command(grower, fleet.marker + '-oomer')}\n"
             "    limits: {memory: 64M}\n    restart_delay: 500ms\n    restart_delay_max: 2s\n" + HOSTILE_CPUSET)
    result = fleet.apply(extra)
    promise(result.returncode == 0, f"roster with oomer applied ({result.stderr.strip()})")
    fleet.ctl("stop", "oomer")
    others = [n for n in fleet.expected if n != "oomer"]
    before = restart_totals(fleet, others)
    oom_before = fleet.restarts().get("oomer", {}).get("OOMKilled", 0)
    seen = []

    def stop_event():
        seen.append(fleet.character("oomer"))
        fleet.ctl("stop", "oomer")

    p99_without, p99_with, _ = compare_chat_p99(fleet, "oom", lambda: fleet.ctl("start", "oomer"), stop_event)
    ooms = fleet.restarts().get("oomer", {}).get("OOMKilled", 0) - oom_before
    exits = [c.get("last_exit", {}) for c in seen]
    peaks = [e.get("peak_memory_bytes", 0) for e in exits if e.get("reason") == "OOMKilled"]
    print(f"   {ooms} OOM kills; last exits seen: {[e.get('reason') for e in exits]}; peaks "
          f"{[round(p / 2**20, 1) for p in peaks]} MiB", flush=True)
    promise(ooms >= 3, f"oomer restarted with reason OOMKilled ({ooms} times)")
    promise(bool(peaks) and all(48 * 2**20 <= p <= 66 * 2**20 for p in peaks),
            "its exits say OOMKilled with a peak memory at its 64M limit")
    promise(restart_totals(fleet, others) == before, "no other character restarted")
    promise(p99_with <= p99_without * 1.10, f"the workers' chat p99 during the OOMs within 10 % of without "
                                            f"({p99_with:.2f} vs {p99_without:.2f} ms)")
    result = fleet.apply("")
    promise(result.returncode == 0 and fleet.wait_all_ready(30), "oomer removed, the fleet of 12 ready")


def hogs(fleet, args):
    print("\n== fork bomb (pids 32, cpus 0.25) and CPU hog (cpus 0.25), one character each", flush=True)
    # Every process forks for ever (a failed fork is retried 10 ms later), so the tree stays at the cap.
    bomb = "import os, time\nwhile True:\n    try:\n        os.fork()\n    except OSError:\n        time.sleep(0.01)\n"
    extra = (f"  forkbomb:\n    command: {python_command(bomb, fleet.marker + '-forkbomb')}\n"
             "    limits: {pids: 32, cpus: 0.25}\n    restart_delay: 1s\n    restart_delay_max: 2s\n" + HOSTILE_CPUSET
             + f"  hog:\n    command: {python_command('while True: pass', fleet.marker + '-hog')}\n"
             "    limits: {cpus: 0.25}\n" + HOSTILE_CPUSET)
    result = fleet.apply(extra)
    promise(result.returncode == 0, f"roster with forkbomb and hog applied ({result.stderr.strip()})")
    fleet.ctl("stop", "forkbomb")
    fleet.ctl("stop", "hog")
    others = [n for n in fleet.expected if n not in ("forkbomb", "hog")]
    before = restart_totals(fleet, others)
    pids_seen, hog_shares = [], []
    window = {}

    def bomb_stop():
        directory = cgroup_dir(fleet, "pids", "forkbomb")
        if directory:
            with open(f"{directory}/pids.current") as f:
                current = int(f.read())
            with open(f"{directory}/pids.events") as f:
                refused = int(f.read().split()[1])
            pids_seen.append((current, refused))
        fleet.ctl("stop", "forkbomb")

    def hog_start():
        fleet.ctl("start", "hog")
        window["cpu"] = fleet.character("hog").get("resources", {}).get("cpu_seconds", 0)
        window["at"] = time.time()

    def hog_stop():
        cpu = fleet.character("hog").get("resources", {}).get("cpu_seconds", 0)
        hog_shares.append((cpu - window["cpu"]) / (time.time() - window["at"]))
        fleet.ctl("stop", "hog")

    # One at a time, so each figure says what it is about.
    print("   the fork bomb:", flush=True)
    bomb_without, bomb_with, _ = compare_chat_p99(fleet, "bomb", lambda: fleet.ctl("start", "forkbomb"), bomb_stop)
    print("   the CPU hog:", flush=True)
    hog_without, hog_with, _ = compare_chat_p99(fleet, "hog", hog_start, hog_stop)
    print(f"   fork bomb (pids.current, forks refused at the limit): {pids_seen}; hog's CPU share per window: "
          f"{[round(x, 3) for x in hog_shares]}", flush=True)
    promise(bool(pids_seen) and all(c <= 32 and refused > 0 for c, refused in pids_seen),
            "the fork bomb is held at 32 tasks (and forks past it were refused)")
    promise(bool(hog_shares) and all(0.1 <= x <= 0.25 * 1.15 for x in hog_shares), "the hog is held at 0.25 CPU")
    promise(restart_totals(fleet, others) == before, "no other character restarted")
    promise(bomb_with <= bomb_without * 1.10, f"the workers' chat p99 during the fork bomb within 10 % of without "
                                              f"({bomb_with:.2f} vs {bomb_without:.2f} ms)")
    promise(hog_with <= hog_without * 1.10, f"the workers' chat p99 beside the CPU hog within 10 % of without "
                                            f"({hog_with:.2f} vs {hog_without:.2f} ms)")
    left = [p for p, cmd in fleet.marked_processes() if f"{fleet.marker}-forkbomb" in cmd or f"{fleet.marker}-hog" in cmd]
    promise(not left, f"stopping them left no process behind ({len(left)})")
    result = fleet.apply("")
    promise(result.returncode == 0 and fleet.wait_all_ready(30), "forkbomb and hog removed, the fleet of 12 ready")


def db_outage(fleet, args):
    print("\n== dependency outage: the workers' PostgreSQL cluster stops for 30 s", flush=True)
    before = restart_totals(fleet, fleet.workers)
    load = ChatLoad(fleet, rate=10, tag=f"db{int(time.time())}")
    load.phase = "before"
    time.sleep(5)
    fleet.postgres.stop()
    load.phase = "outage"
    down_at = time.time()
    seen_down = set()
    health_codes = set()
    while time.time() - down_at < 30:
        try:
            for name, c in fleet.characters().items():
                if name in fleet.workers and c.get("facets", {}).get("store", "").startswith("down"):
                    seen_down.add(name)
            health_codes.add(health(fleet.http)[0])
        except Exception:
            pass
        time.sleep(0.5)
    fleet.postgres.start()
    load.phase = "recovering"
    back_at = time.time()
    recovered = {}
    while time.time() - back_at < 60 and len(recovered) < len(fleet.workers):
        with load.lock:
            for r in load.results:
                if r[0] == "recovering" and r[2] == 200 and r[6] and r[1] not in recovered:
                    recovered[r[1]] = time.time() - back_at
        time.sleep(0.1)
    load.phase = "after"
    time.sleep(3)
    results = load.stop()
    facets = {n: c.get("facets", {}).get("store", "ok") for n, c in fleet.characters().items() if n in fleet.workers}
    outage = [r for r in results if r[0] == "outage"]
    outage_codes = {}
    for r in outage:
        outage_codes[r[2]] = outage_codes.get(r[2], 0) + 1
    clear_503 = all(r[2] == 503 and "store" in r[7] for r in outage if r[2] != 200)
    acknowledged = {r[5] for r in results if r[2] == 200}
    stored = set(fleet.postgres.query(f"SELECT content FROM messages WHERE role = 'user' AND content LIKE '{load.tag}-%'").split())
    lost = acknowledged - stored
    after_codes = load.statuses("after")
    print(f"   {len(results)} turns; during the outage: {outage_codes}; store:down seen on {sorted(seen_down)}; "
          f"/health answered {sorted(health_codes)}; back after {max(recovered.values(), default=float('nan')):.1f} s "
          f"({ {k: round(v, 1) for k, v in recovered.items()} }); after: {after_codes}; "
          f"{len(acknowledged)} acknowledged, {len(lost)} not in the store", flush=True)
    promise(seen_down == set(fleet.workers), "every worker reported facet store:down")
    promise(restart_totals(fleet, fleet.workers) == before, "no worker was restarted")
    promise(outage_codes.get(503, 0) > 0 and clear_503, "chat during the outage answered 503 naming the store")
    promise(len(recovered) == len(fleet.workers) and set(after_codes) == {200} and set(facets.values()) == {"ok"},
            f"every worker recovered by itself (facets {facets})")
    promise(not lost, f"0 acknowledged turns lost ({sorted(lost)[:5]})")


def disk_full(fleet, args):
    print("\n== disk full: the log dir's tmpfs fills up under a child writing as fast as it can", flush=True)
    progress = f"{fleet.work}/floodlog.progress"
    # The count is replaced atomically: a reader of a file being rewritten in place saw it empty.
    writer = ("import os, sys\ni = 0\nwhile True:\n    i += 1\n    sys.stdout.write('line %d of a flood\\n' % i)\n"
              f"    if i % 5000 == 0:\n        sys.stdout.flush()\n        open({progress + '.new'!r}, 'w').write(str(i))\n"
              f"        os.replace({progress + '.new'!r}, {progress!r})\n")
    result = fleet.apply(f"  floodlog:\n    command: {python_command(writer, fleet.marker + '-floodlog')}\n")
    promise(result.returncode == 0, f"roster with floodlog applied ({result.stderr.strip()})")

    def lines_written():
        try:
            with open(progress) as f:
                return int(f.read() or 0)
        except (OSError, ValueError):
            return 0

    time.sleep(1)
    filler = f"{fleet.logs}/filler"
    with open(filler, "wb") as f:
        try:
            while True:
                f.write(b"\0" * (1 << 20))
                f.flush()
        except OSError:
            pass
    time.sleep(1)
    dropped_before = metric_value(fleet, "whisperd_character_log_lines_dropped_total", "floodlog")
    written_before = lines_written()
    latencies = health_latencies_ms(fleet, 400)
    written_after = lines_written()
    dropped_after = metric_value(fleet, "whisperd_character_log_lines_dropped_total", "floodlog")
    p99 = percentile(latencies, 0.99)
    print(f"   while full: the child wrote {written_after - written_before} lines, whisperd dropped "
          f"{dropped_after - dropped_before:.0f}; /health p50 {percentile(latencies, 0.5):.2f} ms, p99 {p99:.2f} ms", flush=True)
    promise(written_after - written_before > 50000, "the flooding child kept writing (never blocked)")
    promise(dropped_after > dropped_before, "the lines the disk refused were counted as dropped")
    promise(p99 <= 10, f"/health p99 {p99:.2f} ms <= 10 ms while the disk is full")
    os.unlink(filler)
    mark = lines_written()
    resumed = False
    seen = "nothing read"
    deadline = time.time() + 10
    while time.time() < deadline and not resumed:
        time.sleep(0.5)
        try:
            with open(f"{fleet.logs}/floodlog.log", "rb") as f:
                f.seek(max(0, os.path.getsize(f"{fleet.logs}/floodlog.log") - 4096))
                numbers = [int(n) for n in re.findall(rb"line (\d+) of a flood\n", f.read())]
            resumed = bool(numbers) and max(numbers) > mark
            free = os.statvfs(fleet.logs)
            seen = (f"last line in the log {max(numbers) if numbers else None}, child at {lines_written()}, "
                    f"{free.f_bavail * free.f_frsize // 1024} KiB free")
        except OSError as error:
            seen = str(error)
    promise(resumed, f"logging resumed once there was room again (lines past {mark}; {seen})")
    result = fleet.apply("")
    promise(result.returncode == 0 and fleet.wait_all_ready(30), "floodlog removed, the fleet of 12 ready")


INVALID_EDITS = [
    "  bad{i}: {{command: [sleep, '1'], port: 99999999}}\n",
    "  ../bad{i}: {{command: [sleep, '1']}}\n",
    "  bad{i}: {{command: [sleep, '1'], after: [nobody{i}]}}\n",
    "  bad{i}: {{command: [sleep, '1'], limits: {{memory: lots}}}}\n",
    "  bad{i}: [unclosed\n",
]


def reload_under_fire(fleet, args):
    print("\n== reload under fire: 50 roster edits, valid and invalid alternately, during a kill storm", flush=True)
    rng = random.Random(args.seed + 2)
    stop = threading.Event()
    kills = [0]

    def storm_forever():
        while not stop.is_set():
            time.sleep(rng.uniform(0.02, 0.1))
            try:
                running = [c for c in fleet.characters().values() if c.get("pid") and c.get("state") == "running"]
                if running:
                    os.kill(rng.choice(running)["pid"], signal.SIGKILL)
                    kills[0] += 1
            except Exception:
                pass

    stormer = threading.Thread(target=storm_forever, daemon=True)
    stormer.start()
    last_valid = set(fleet.expected)
    problems = []
    converge = []
    for edit in range(50):
        if edit % 2 == 0:
            # Keeps one extra character, adds one, drops one, and changes the env of the kept one.
            extra = "".join(f"  r{k}: {{command: [bash, -c, 'exec -a {fleet.marker}-r{k} sleep {200000 + k}'], "
                            f"env: {{EDIT: '{edit}'}}}}\n" for k in (edit // 2, edit // 2 + 1))
            result = fleet.apply(extra)
            if result.returncode != 0:
                problems.append(f"valid edit {edit} refused: {result.stderr.strip()[:200]}")
            last_valid = set(fleet.expected)
            started = time.time()
            while time.time() - started < 15:
                try:
                    if set(fleet.characters()) == last_valid:
                        break
                except Exception:
                    pass
                time.sleep(0.05)
            else:
                problems.append(f"after valid edit {edit} the fleet did not become the roster")
            converge.append(time.time() - started)
        else:
            fleet.write_roster(INVALID_EDITS[(edit // 2) % len(INVALID_EDITS)].format(i=edit))
            fleet.expected = last_valid
            result = fleet.ctl("reload")
            if result.returncode == 0:
                problems.append(f"invalid edit {edit} was accepted")
            if set(fleet.characters()) != last_valid:
                problems.append(f"after invalid edit {edit} the fleet is not the last valid roster")
        time.sleep(0.2)  # ~10 s of edits, so the storm has time to hit every kind of transition
    stop.set()
    stormer.join()
    back = fleet.wait_all_ready(60)
    time.sleep(0.5)
    orphans, duplicates = fleet.orphans_and_duplicates()
    running_extras = {cmd.split(fleet.marker + "-")[-1].split()[0] for _, cmd in fleet.marked_processes()
                      if f"{fleet.marker}-r" in cmd}
    wanted_extras = {n for n in last_valid if n.startswith("r")}
    print(f"   50 edits, {kills[0]} kills meanwhile; a valid edit took effect in {percentile(converge, 0.5):.2f} s "
          f"(median), {max(converge):.2f} s (max); extras running: {sorted(running_extras)}", flush=True)
    promise(not problems, f"after every edit the fleet was the last valid roster ({problems[:3]})")
    promise(back, "every character of the last valid roster back and ready")
    promise(running_extras == wanted_extras, "exactly the last valid roster's extra characters run")
    promise(not orphans and not duplicates, f"0 orphans, 0 duplicates ({orphans[:3]}, {duplicates})")
    result = fleet.apply("")
    promise(result.returncode == 0 and fleet.wait_all_ready(30), "back to the fleet of 12")


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--bin", required=True, help="whisperd binary (whisperctl beside it)")
    parser.add_argument("--kills", type=int, default=1000)
    parser.add_argument("--storm-seconds", type=float, default=120)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--scenarios", default=",".join(SCENARIOS))
    parser.add_argument("--partition", action="store_true",
                        help="pin the OOM-looping, fork-bombing and CPU-hogging characters to the last CPU "
                             "(roster cpuset:) and everything else to the others")
    args = parser.parse_args()
    if args.partition:
        global HOSTILE_CPUSET
        cpus = sorted(os.sched_getaffinity(0))
        if len(cpus) < 2:
            raise SystemExit("--partition needs two CPUs")
        HOSTILE_CPUSET = f"    cpuset: '{cpus[-1]}'\n"
        # Inherited by PostgreSQL, the test LLM, whisperd and (without cpuset:) its characters.
        os.sched_setaffinity(0, set(cpus[:-1]))
        print(f"partitioned: misbehaving characters on CPU {cpus[-1]}, everything else on {cpus[:-1]}", flush=True)
    # Only the children's command lines carry the marker (not whisperd's, not the work dir's).
    marker = f"chaosmark{os.getpid()}"
    work = tempfile.mkdtemp(prefix="wd-chaos-")
    postgres, fleet = None, None
    try:
        postgres = Postgres()
        fleet = Fleet(os.path.abspath(args.bin), work, marker, postgres)
        fleet.start()
        ready = fleet.wait_all_ready(60)
        promise(ready, "the fleet of 12 starts and is ready")
        if not ready:
            with open(f"{work}/whisperd.log") as f:
                print(f.read()[-3000:])
            raise SystemExit(1)
        for name in args.scenarios.split(","):
            try:
                SCENARIOS[name](fleet, args)
            except Exception as error:  # a broken scenario is a broken promise; the others still run
                traceback.print_exc()
                promise(False, f"scenario {name} ran to its end ({error!r})")
    finally:
        if fleet:
            fleet.cleanup()
        else:
            subprocess.run(["umount", f"{work}/logs"], capture_output=True)
        if postgres:
            postgres.cleanup()
        if failures:
            print(f"\nlogs kept in {work}", flush=True)
        else:
            shutil.rmtree(work, ignore_errors=True)
    print(f"\n{'FAILED: ' + str(len(failures)) + ' promise(s) broken' if failures else 'all promises kept'}")
    sys.exit(1 if failures else 0)


SCENARIOS = {"kill-storm": kill_storm, "crash": supervisor_crash, "oom": oom_in_one, "hogs": hogs,
             "db-outage": db_outage, "disk-full": disk_full, "reload": reload_under_fire, "silent": silent_children}

if __name__ == "__main__":
    main()
