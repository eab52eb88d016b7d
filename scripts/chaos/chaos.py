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

Only processes this script started are signalled (by pid). Everything lives in a temp dir and
an own cgroup base, removed at the end, also on failure.
"""
import argparse
import json
import os
import random
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
failures = []


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


class Fleet:
    def __init__(self, binary, work, marker):
        self.binary, self.work, self.marker = binary, work, marker
        self.http = free_port()
        self.cgroup = "/wd-chaos-" + str(os.getpid())
        self.process = None
        self.llm = subprocess.Popen(["/usr/bin/python3", os.path.join(ROOT, "scripts/bench/fake_llm.py")],
                                    stdout=subprocess.PIPE, text=True)
        self.llm_port = int(self.llm.stdout.readline())
        self.workers = [f"w{i}" for i in range(4)]
        self.plain = [f"p{i}" for i in range(8)]
        for name in self.workers:
            os.makedirs(f"{work}/characters/{name}", exist_ok=True)
            with open(f"{work}/characters/{name}/character.md", "w") as f:
                f.write(f"You are {name}.\n")
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
            "  env:",
            f"    LLM_BASE_URL: http://127.0.0.1:{self.llm_port}",
            "    LLM_MODEL_NAME: chaos",
            "characters:",
        ]
        for name in self.workers:
            lines.append(f"  {name}: {{port: {free_port()}, health: {{ready: notify, watchdog: 5s}}}}")
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

    def start(self):
        self.log = open(f"{self.work}/whisperd.log", "a")
        self.process = subprocess.Popen(
            [self.binary, "--roster", f"{self.work}/roster.yaml", "--state-dir", f"{self.work}/state",
             "--runtime-dir", f"{self.work}/run", "--log-dir", f"{self.work}/logs",
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
                if all(c.get("ready") for n, c in chars.items() if n not in except_names) and len(chars) == 12:
                    return True
            except Exception:
                pass
            time.sleep(0.1)
        return False

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
        for root in ("/sys/fs/cgroup/unified", "/sys/fs/cgroup/pids", "/sys/fs/cgroup/memory"):
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
        for root in ("/sys/fs/cgroup/unified", "/sys/fs/cgroup/pids", "/sys/fs/cgroup/memory", "/sys/fs/cgroup/cpu"):
            base = root + self.cgroup
            for dirpath, _, _ in sorted(os.walk(base), key=lambda t: -len(t[0])):
                try:
                    os.rmdir(dirpath)
                except OSError:
                    pass


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
    latencies = []
    for _ in range(500):
        t = time.perf_counter()
        code, _ = health(fleet.http)
        latencies.append((time.perf_counter() - t) * 1000)
        time.sleep(0.005)
    latencies.sort()
    p99 = latencies[int(len(latencies) * 0.99) - 1]
    print(f"   /health under stdout and notify floods: p50 {latencies[len(latencies) // 2]:.2f} ms, p99 {p99:.2f} ms", flush=True)
    promise(p99 <= 10, f"/health p99 {p99:.2f} ms <= 10 ms while two children flood")
    chars = fleet.characters()
    restarts = fleet.restarts().get("silent", {})
    promise(restarts.get("WatchdogTimeout", 0) >= 1, f"the silent child was restarted with WatchdogTimeout ({restarts})")
    started = time.time()
    result = fleet.ctl("stop", "stubborn")
    took = time.time() - started
    promise(result.returncode == 0 and 0.9 <= took <= 5, f"the child ignoring SIGTERM was killed after its 1 s grace ({took:.1f} s)")


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--bin", required=True, help="whisperd binary (whisperctl beside it)")
    parser.add_argument("--kills", type=int, default=1000)
    parser.add_argument("--storm-seconds", type=float, default=120)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--scenarios", default="kill-storm,crash,silent")
    args = parser.parse_args()
    # Only the children's command lines carry the marker (not whisperd's, not the work dir's).
    marker = f"chaosmark{os.getpid()}"
    work = tempfile.mkdtemp(prefix="wd-chaos-")
    fleet = Fleet(os.path.abspath(args.bin), work, marker)
    try:
        fleet.start()
        ready = fleet.wait_all_ready(60)
        promise(ready, "the fleet of 12 starts and is ready")
        if not ready:
            with open(f"{work}/whisperd.log") as f:
                print(f.read()[-3000:])
            raise SystemExit(1)
        scenarios = {"kill-storm": kill_storm, "crash": supervisor_crash, "silent": silent_children}
        for name in args.scenarios.split(","):
            scenarios[name](fleet, args)
    finally:
        fleet.cleanup()
        if failures:
            print(f"\nlogs kept in {work}", flush=True)
        else:
            shutil.rmtree(work, ignore_errors=True)
    print(f"\n{'FAILED: ' + str(len(failures)) + ' promise(s) broken' if failures else 'all promises kept'}")
    sys.exit(1 if failures else 0)


if __name__ == "__main__":
    main()
