#!/usr/bin/env python3
"""Side-by-side benchmark of process supervisors (stdlib only, Linux, run as root).

Every supervisor gets the same work: keep N copies of build/worker alive.  A
worker appends "<name> <CLOCK_REALTIME ns> <pid>" to one shared start log when
it starts, then sleeps in pause().  The harness reads that log, so every
latency below is "worker's own start timestamp minus the harness's timestamp
of the event" (same clock, no polling error).

Per (supervisor, N) it measures:
  cold start   launch of the supervisor -> last of the N start lines
  memory       RSS (and PSS) summed over the supervisor's own processes
  idle CPU     utime+stime of those processes over --idle seconds, % of one core
  restart      SIGKILL one worker, time to its new start line (--restarts times,
               different workers, each victim alive >= 1.2 s so anti-flap
               throttles for "died too fast" services do not apply)
  re-kill      SIGKILL a worker again right after it restarted (< 1 s old):
               shows the anti-flap delay
  storm        SIGKILL 10% of the workers at once, time until all are back
  stop         stop request -> every process of the tree gone

Adding a supervisor = one subclass of Supervisor (see the adapters section and
the Whisperd stub), registered in ADAPTERS.

Safety: the harness makes itself a child subreaper, so everything a
supervisor starts stays below it; it only ever signals pids that are live
descendants of itself (workers are also checked by /proc/PID/exe), never by
name; every run ends by stopping the supervisor, SIGKILLing leftover
descendants by pid, reaping, and deleting its temp dir.
"""

from __future__ import annotations

import argparse
import ctypes
import datetime as _dt
import json
import math
import os
import platform
import random
import shutil
import shlex
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

BENCH_DIR = Path(__file__).resolve().parent
BUILD_DIR = BENCH_DIR / "build"
WORKER_SRC = BENCH_DIR / "worker.c"
WORKER_BIN = BUILD_DIR / "worker"
VENV_BIN = BENCH_DIR / ".venv" / "bin"
RESULTS_DIR = BENCH_DIR / "results"

CLK_TCK = os.sysconf("SC_CLK_TCK")
MYPID = os.getpid()
MIN_AGE_S = 1.2  # victims must have been up this long (runit/s6 throttle < 1 s lifetimes)


def log(msg: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def now_ns() -> int:
    return time.time_ns()  # CLOCK_REALTIME, the clock the worker stamps with


# --------------------------------------------------------------------------
# /proc helpers
# --------------------------------------------------------------------------

@dataclass
class Proc:
    pid: int
    ppid: int
    state: str
    comm: str
    utime: int
    stime: int
    starttime: int


def read_proc(pid: int) -> Proc | None:
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            raw = f.read().decode("utf-8", "replace")
    except OSError:
        return None
    lpar, rpar = raw.index("("), raw.rindex(")")
    rest = raw[rpar + 2:].split()
    return Proc(pid=pid, ppid=int(rest[1]), state=rest[0], comm=raw[lpar + 1:rpar],
                utime=int(rest[11]), stime=int(rest[12]), starttime=int(rest[19]))


def all_procs() -> dict[int, Proc]:
    out = {}
    for name in os.listdir("/proc"):
        if name.isdigit():
            p = read_proc(int(name))
            if p:
                out[p.pid] = p
    return out


def my_descendants(include_zombies: bool = False) -> dict[int, Proc]:
    """Every live process below this harness (the harness is a subreaper, so
    nothing a supervisor starts can escape this set)."""
    procs = all_procs()
    kids: dict[int, list[int]] = {}
    for p in procs.values():
        kids.setdefault(p.ppid, []).append(p.pid)
    out, todo = {}, list(kids.get(MYPID, []))
    while todo:
        pid = todo.pop()
        p = procs.get(pid)
        if p is None:
            continue
        if include_zombies or p.state != "Z":
            out[pid] = p
        todo.extend(kids.get(pid, []))
    return out


def exe_of(pid: int) -> str | None:
    try:
        return os.readlink(f"/proc/{pid}/exe")
    except OSError:
        return None


def is_worker(pid: int) -> bool:
    return exe_of(pid) == str(WORKER_BIN)


def status_kib(pid: int, key: str) -> int:
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith(key + ":"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def pss_kib(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/smaps_rollup") as f:
            for line in f:
                if line.startswith("Pss:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def sched_ns(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/schedstat") as f:
            return int(f.read().split()[0])
    except OSError:
        return 0


def reap_orphans() -> None:
    """Reap zombies re-parented to us (we are a subreaper)."""
    while True:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return


def become_subreaper() -> None:
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        PR_SET_CHILD_SUBREAPER = 36
        if libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) != 0:
            log("warning: PR_SET_CHILD_SUBREAPER failed; orphans may escape the harness")
    except OSError:
        log("warning: prctl unavailable; orphans may escape the harness")


def kill_descendant(pid: int, sig: int, desc: dict[int, Proc] | None = None) -> bool:
    """Signal pid only if it is (still) a live descendant of this harness.
    desc: a fresh my_descendants() result, to avoid one /proc scan per pid."""
    if pid not in (desc if desc is not None else my_descendants()):
        return False
    try:
        os.kill(pid, sig)
        return True
    except ProcessLookupError:
        return False


def run_out(cmd: list[str]) -> str:
    try:
        r = subprocess.run(cmd, stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=20)
        return (r.stdout + r.stderr).strip()
    except (OSError, subprocess.TimeoutExpired) as e:
        return f"? ({e})"


def dpkg_version(pkg: str) -> str:
    if not shutil.which("dpkg-query"):
        return "?"
    v = run_out(["dpkg-query", "-W", "-f=${Version}", pkg])
    return v if v and "no packages" not in v else "?"


# --------------------------------------------------------------------------
# start log
# --------------------------------------------------------------------------

class StartLog:
    """Tails the shared start log: lines '<name> <ns> <pid>'."""

    def __init__(self, path: Path):
        self.path = path
        path.write_bytes(b"")
        self._f = open(path, "rb")
        self._buf = b""
        self.latest: dict[str, tuple[int, int]] = {}  # name -> (ts_ns, pid)
        self.first: dict[str, int] = {}               # name -> first ts_ns
        self.count = 0

    def poll(self) -> None:
        data = self._f.read()
        if not data:
            return
        self._buf += data
        *lines, self._buf = self._buf.split(b"\n")
        for line in lines:
            parts = line.split()
            if len(parts) != 3:
                continue
            name, ts, pid = parts[0].decode(), int(parts[1]), int(parts[2])
            self.count += 1
            self.latest[name] = (ts, pid)
            self.first.setdefault(name, ts)

    def wait(self, cond, timeout_s: float, alive=None, interval: float = 0.005) -> bool:
        end = time.monotonic() + timeout_s
        while True:
            self.poll()
            if cond():
                return True
            if time.monotonic() > end:
                return False
            if alive is not None and not alive():
                return False
            time.sleep(interval)

    def close(self) -> None:
        self._f.close()


# --------------------------------------------------------------------------
# adapters
# --------------------------------------------------------------------------

@dataclass
class Worker:
    name: str        # e.g. w0042 (for whisperd: the character name)
    argv: list[str]  # full command: [worker, name, logfile]


class Supervisor:
    """One adapter per supervisor.  The harness calls, in order:
        available() -> configure(workdir, workers, ctx) -> start() (timed) ->
        overhead_pids() (any number of times) -> stop()
    workdir is a fresh temp dir owned by this run; the harness deletes it.
    ctx has: worker_bin, log (start log path), n.
    """

    name = "base"
    # comm names counted as supervisor overhead; None = every live non-worker
    # process below the harness (fine for single-binary supervisors).
    overhead_comms: set[str] | None = None
    stop_timeout_s = 60.0
    restart_note = ""

    def __init__(self):
        self.proc: subprocess.Popen | None = None
        self.workdir: Path | None = None
        self.extra_env: dict[str, str] = {}

    # -- describe ---------------------------------------------------------
    def available(self) -> tuple[bool, str]:
        return True, ""

    def version(self) -> str:
        return "?"

    # -- lifecycle --------------------------------------------------------
    def configure(self, workdir: Path, workers: list[Worker], ctx: dict) -> None:
        raise NotImplementedError

    def command(self) -> list[str]:
        raise NotImplementedError

    def start(self) -> subprocess.Popen:
        env = dict(os.environ)
        env.update(self.extra_env)
        out = open(self.workdir / "supervisor.out", "wb")
        self.proc = subprocess.Popen(self.command(), cwd=self.workdir, env=env,
                                     stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                                     start_new_session=True, close_fds=True)
        out.close()
        return self.proc

    def root_pid(self) -> int:
        return self.proc.pid

    def overhead_pids(self) -> list[int]:
        out = []
        for p in my_descendants().values():
            if is_worker(p.pid):
                continue
            if self.overhead_comms is not None and p.comm not in self.overhead_comms:
                continue
            out.append(p.pid)
        return sorted(out)

    def stop(self) -> None:
        kill_descendant(self.root_pid(), signal.SIGTERM)


class Supervisord(Supervisor):
    name = "supervisord"
    overhead_comms = None  # the single python process (it forks nothing else)
    restart_note = ("autorestart=true, startsecs=0 (no backoff); restart happens on the main "
                    "loop pass after the child is reaped; the loop blocks in poll() with a 1 s "
                    "timeout and SIGCHLD does not cut it short (PEP 475 retries poll), so a "
                    "restart waits for the next wake-up")

    def _bin(self) -> str | None:
        cand = VENV_BIN / "supervisord"
        return str(cand) if cand.exists() else shutil.which("supervisord")

    def available(self):
        return (True, "") if self._bin() else (False, "supervisord not found (run setup.sh)")

    def version(self):
        py = Path(self._bin()).parent / "python"
        pyv = run_out([str(py), "-V"]) if py.exists() else "python ?"
        return f"supervisor {run_out([self._bin(), '--version'])} ({pyv})"

    def configure(self, workdir, workers, ctx):
        self.workdir = workdir
        lines = [
            "[supervisord]",
            "nodaemon=true",
            f"logfile={workdir}/supervisord.log",
            f"pidfile={workdir}/supervisord.pid",
            f"childlogdir={workdir}",
            # supervisord keeps 3 pipe fds per child; the default minfds=1024
            # is enough up to ~330 workers.  Not higher than needed: each
            # spawn close()s every fd below minfds in the child.
            f"minfds={max(1024, 3 * len(workers) + 128)}",
            "",
        ]
        for w in workers:
            lines += [
                f"[program:{w.name}]",
                "command=" + shlex.join(w.argv),
                "autostart=true",
                "autorestart=true",
                "startsecs=0",
                "stdout_logfile=NONE",
                "stderr_logfile=NONE",
                "",
            ]
        (workdir / "supervisord.conf").write_text("\n".join(lines))

    def command(self):
        return [self._bin(), "-c", str(self.workdir / "supervisord.conf")]


class S6(Supervisor):
    name = "s6"
    overhead_comms = {"s6-svscan", "s6-supervise"}
    notify = False
    restart_note = ("s6-supervise waits 1 s before respawning a service that was not *ready* "
                    "when it died; without a notification-fd a service never becomes ready, "
                    "so every restart takes >= 1 s. Hard-coded (not configurable) in 2.11.")

    def available(self):
        return (True, "") if shutil.which("s6-svscan") else (False, "s6-svscan not found (apt-get install s6)")

    def version(self):
        return f"s6 {dpkg_version('s6')} (skalibs {dpkg_version('libskarnet2.13')})"

    def configure(self, workdir, workers, ctx):
        self.workdir = workdir
        scan = workdir / "scan"
        scan.mkdir()
        for w in workers:
            d = scan / w.name
            d.mkdir()
            # direct exec, no shell: the worker takes its name from the service dir
            (d / "run").symlink_to(ctx["worker_bin"])
            if self.notify:
                (d / "notification-fd").write_text("3\n")
        self.extra_env = {"BENCH_LOG": str(ctx["log"])}
        if self.notify:
            self.extra_env["BENCH_NOTIFY_FD"] = "3"
        self.max_services = max(500, 2 * len(workers) + 10)

    def command(self):
        return ["s6-svscan", "-c", str(self.max_services), str(self.workdir / "scan")]

    # stop: SIGTERM to s6-svscan = s6-svscanctl -t: every s6-supervise brings its
    # service down and exits, then s6-svscan exits.


class S6Notify(S6):
    name = "s6+notify"
    notify = True
    restart_note = ("same s6, plus notification-fd=3 and the worker writes a newline on fd 3 "
                    "after start (s6 readiness protocol); a service that has been ready for "
                    "> 1 s is respawned immediately")


class Runit(Supervisor):
    name = "runit"
    overhead_comms = {"runsvdir", "runsv"}
    restart_note = ("runsv sleep(1)s (a blocking full second) before respawning a service "
                    "whose ./run lived < 1 s; otherwise it respawns at once. Hard-coded in "
                    "runsv.c, not configurable")

    def available(self):
        ok = shutil.which("runsvdir") and shutil.which("runsv")
        return (True, "") if ok else (False, "runsvdir/runsv not found (apt-get install runit)")

    def version(self):
        return f"runit {dpkg_version('runit')}"

    def configure(self, workdir, workers, ctx):
        self.workdir = workdir
        scan = workdir / "service"
        scan.mkdir()
        for w in workers:
            d = scan / w.name
            d.mkdir()
            (d / "run").symlink_to(ctx["worker_bin"])
        # runsvdir sleep(1)s before a scan when the scan dir's mtime is in the
        # current second (guard against half-created service dirs).  A real
        # deployment's service dir is old, so backdate ours; without this,
        # cold start is ~1 s longer.
        old = time.time() - 10
        os.utime(scan, (old, old))
        self.extra_env = {"BENCH_LOG": str(ctx["log"])}

    def command(self):
        return ["runsvdir", str(self.workdir / "service")]

    def stop(self):
        # SIGHUP: runsvdir sends TERM to every runsv and exits; runsv on TERM
        # brings its service down (TERM+CONT) and exits once it is down.
        kill_descendant(self.root_pid(), signal.SIGHUP)


class Whisperd(Supervisor):
    """whisperd, driven through its roster (docs/DESIGN.md section 3).

    Every worker becomes a character with an explicit `command:`, restart
    `always` with no delay, readiness `started` (the bench worker does not speak
    sd_notify), and no resource limits, so that the work is the same as for the
    other supervisors.  `WHISPERD_LIMITS=1` adds a memory/pids limit to every
    character, to measure what cgroup placement costs.

    The binary is $WHISPERD_BIN, else `whisperd` on PATH.
    """

    name = "whisperd"
    overhead_comms = None
    restart_note = "restart: always, restart_delay: 0s (no anti-flap floor by design)"

    def _bin(self) -> str | None:
        return os.environ.get("WHISPERD_BIN") or shutil.which("whisperd")

    def available(self):
        if not self._bin():
            return False, "whisperd not found (set WHISPERD_BIN or put it on PATH)"
        return True, ""

    def version(self):
        return run_out([self._bin(), "--version"]) if self._bin() else "?"

    def configure(self, workdir, workers, ctx):
        self.workdir = workdir
        for sub in ("state", "run", "logs"):
            (workdir / sub).mkdir(exist_ok=True)
        limits = os.environ.get("WHISPERD_LIMITS") == "1"
        lines = [
            "version: 1",
            "defaults:",
            "  restart: always",
            "  restart_delay: 0s",
            "  health: {ready: started}",
            # Like runit and s6 here: the workers keep root and no sandbox, so the comparison is of
            # supervision alone (floors.py measures what a character's own user and Landlock add).
            "  user: root",
            "  sandbox: {filesystem: off}",
        ]
        if limits:
            lines.append("  limits: {memory: 64M, pids: 64}")
        lines.append("characters:")
        for w in workers:
            argv = ", ".join(json.dumps(a) for a in w.argv)
            lines.append(f"  {w.name}:")
            lines.append(f"    command: [{argv}]")
        (workdir / "roster.yaml").write_text("\n".join(lines) + "\n")

    def command(self):
        d = self.workdir
        return [self._bin(), "--roster", str(d / "roster.yaml"),
                "--state-dir", str(d / "state"), "--runtime-dir", str(d / "run"),
                "--log-dir", str(d / "logs"), "--http", "off"]


ADAPTERS: dict[str, type[Supervisor]] = {
    cls.name: cls for cls in (Supervisord, S6, S6Notify, Runit, Whisperd)
}
DEFAULT_SUPS = ["supervisord", "s6", "s6+notify", "runit"]


# --------------------------------------------------------------------------
# measurements
# --------------------------------------------------------------------------

def pct(values: list[float], p: float) -> float | None:
    """Nearest-rank percentile."""
    if not values:
        return None
    s = sorted(values)
    return s[max(0, math.ceil(p / 100 * len(s)) - 1)]


def build_worker() -> None:
    BUILD_DIR.mkdir(exist_ok=True)
    if WORKER_BIN.exists() and WORKER_BIN.stat().st_mtime >= WORKER_SRC.stat().st_mtime:
        return
    cmd = ["gcc", "-O2", "-Wall", "-static", "-o", str(WORKER_BIN), str(WORKER_SRC)]
    log("building worker: " + " ".join(cmd))
    subprocess.run(cmd, check=True)


class Run:
    """One (supervisor, N) measurement."""

    def __init__(self, sup: Supervisor, n: int, args):
        self.sup, self.n, self.args = sup, n, args
        self.rng = random.Random(args.seed * 1000 + n)
        self.res: dict = {"supervisor": sup.name, "n": n}

    def alive(self) -> bool:
        return self.sup.proc is not None and self.sup.proc.poll() is None

    def live_worker_pid(self, name: str, desc: dict[int, Proc]) -> int:
        ts, pid = self.slog.latest[name]
        if pid not in desc or not is_worker(pid):
            raise RuntimeError(f"worker {name} pid {pid} is not a live worker below the harness")
        return pid

    def wait_age(self, names: list[str]) -> None:
        newest = max(self.slog.latest[n][0] for n in names)
        wait = MIN_AGE_S - (now_ns() - newest) / 1e9
        if wait > 0:
            time.sleep(wait)

    def wait_new(self, names: list[str], old: dict[str, int], timeout: float) -> bool:
        return self.slog.wait(lambda: all(self.slog.latest[n][1] != old[n] for n in names),
                              timeout, alive=self.alive)

    def execute(self) -> dict:
        a, sup, n = self.args, self.sup, self.n
        self.tmp = Path(tempfile.mkdtemp(prefix=f"svbench-{sup.name.replace('+', '-')}-{n}-",
                                         dir=a.tmpdir or None))
        self.slog = StartLog(self.tmp / "start.log")
        names = [f"w{i:04d}" for i in range(1, n + 1)]
        workers = [Worker(nm, [str(WORKER_BIN), nm, str(self.slog.path)]) for nm in names]
        sup.workdir = self.tmp
        sup.configure(self.tmp, workers, {"worker_bin": str(WORKER_BIN), "log": str(self.slog.path), "n": n})
        self.res["loadavg_before"] = os.getloadavg()[0]

        # 1. cold start ----------------------------------------------------
        t0 = now_ns()
        sup.start()
        ok = self.slog.wait(lambda: len(self.slog.first) >= n, a.start_timeout, alive=self.alive)
        if not ok:
            raise RuntimeError(f"only {len(self.slog.first)}/{n} workers started "
                               f"(supervisor alive={self.alive()}): " + self.tail_out())
        self.res["cold_start_ms"] = (max(self.slog.first.values()) - t0) / 1e6
        self.res["first_worker_ms"] = (min(self.slog.first.values()) - t0) / 1e6

        time.sleep(a.settle)
        desc = my_descendants()
        workers_alive = [p for p in desc if is_worker(p)]
        self.res["workers_alive"] = len(workers_alive)
        if len(workers_alive) != n:
            raise RuntimeError(f"{len(workers_alive)} workers alive, expected {n}")

        # 2. memory --------------------------------------------------------
        ov = sup.overhead_pids()
        procs = all_procs()
        self.res["overhead_procs"] = len(ov)
        self.res["overhead_comms"] = sorted({procs[p].comm for p in ov if p in procs})
        rss = sum(status_kib(p, "VmRSS") for p in ov)
        pss = sum(pss_kib(p) for p in ov)
        by_comm: dict[str, dict] = {}
        for p in ov:
            c = by_comm.setdefault(procs[p].comm if p in procs else "?", {"procs": 0, "rss_kib": 0, "pss_kib": 0})
            c["procs"] += 1
            c["rss_kib"] += status_kib(p, "VmRSS")
            c["pss_kib"] += pss_kib(p)
        self.res["mem_by_comm"] = by_comm
        self.res["rss_mib"] = rss / 1024
        self.res["rss_per_worker_kib"] = rss / n
        self.res["pss_mib"] = pss / 1024
        self.res["worker_rss_kib_each"] = statistics.mean(status_kib(p, "VmRSS") for p in workers_alive)

        # 3. idle CPU ------------------------------------------------------
        before = {p: procs[p] for p in ov if p in procs}
        sched0 = {p: sched_ns(p) for p in before}
        m0 = time.monotonic()
        time.sleep(a.idle)
        elapsed = time.monotonic() - m0
        ticks, sched = 0, 0
        for p, pr in before.items():
            cur = read_proc(p)
            if cur is None or cur.starttime != pr.starttime:
                continue
            ticks += (cur.utime + cur.stime) - (pr.utime + pr.stime)
            sched += sched_ns(p) - sched0[p]
        self.res["idle_window_s"] = elapsed
        self.res["idle_cpu_pct"] = ticks / CLK_TCK / elapsed * 100
        self.res["idle_cpu_pct_schedstat"] = sched / 1e9 / elapsed * 100
        self.res["overhead_pids_changed_during_idle"] = sorted(set(sup.overhead_pids()) ^ set(before))

        # 4. restart latency ----------------------------------------------
        order = names[:]
        self.rng.shuffle(order)
        lat = []
        fails = 0
        for i in range(a.restarts):
            nm = order[i % n]
            self.wait_age([nm])
            old = {nm: self.live_worker_pid(nm, my_descendants())}
            tk = now_ns()
            os.kill(old[nm], signal.SIGKILL)
            if self.wait_new([nm], old, a.restart_timeout):
                lat.append((self.slog.latest[nm][0] - tk) / 1e6)
            else:
                fails += 1
            time.sleep(a.gap)
        self.res["restart_ms"] = lat
        self.res["restart_failures"] = fails

        # 5. re-kill right after a restart (anti-flap) ----------------------
        rk = []
        for i in range(a.rekills):
            nm = order[(a.restarts + i) % n]
            self.wait_age([nm])
            old = {nm: self.live_worker_pid(nm, my_descendants())}
            os.kill(old[nm], signal.SIGKILL)
            if not self.wait_new([nm], old, a.restart_timeout):
                fails += 1
                continue
            old = {nm: self.live_worker_pid(nm, my_descendants())}
            tk = now_ns()
            os.kill(old[nm], signal.SIGKILL)
            if self.wait_new([nm], old, a.restart_timeout):
                rk.append((self.slog.latest[nm][0] - tk) / 1e6)
            else:
                fails += 1
        self.res["rekill_ms"] = rk
        self.res["restart_failures"] = fails

        # 6. crash storm ---------------------------------------------------
        k = max(1, n // 10)
        storms = []
        for _ in range(a.storms):
            victims = self.rng.sample(names, k)
            self.wait_age(victims)
            desc = my_descendants()
            old = {v: self.live_worker_pid(v, desc) for v in victims}
            tk = now_ns()
            for v in victims:
                os.kill(old[v], signal.SIGKILL)
            if self.wait_new(victims, old, a.restart_timeout + 5):
                storms.append((max(self.slog.latest[v][0] for v in victims) - tk) / 1e6)
            else:
                self.res.setdefault("storm_failures", 0)
                self.res["storm_failures"] += 1
        self.res["storm_killed"] = k
        self.res["storm_ms"] = storms
        self.res["alive_after"] = sum(1 for p in my_descendants() if is_worker(p))
        # let every worker age past the anti-flap window so stop() measures a
        # steady-state shutdown, not runsv's sleep(1) for a just-restarted worker
        self.wait_age(names)
        return self.res

    def tail_out(self) -> str:
        try:
            return (self.tmp / "supervisor.out").read_text(errors="replace")[-600:]
        except OSError:
            return ""

    def teardown(self) -> None:
        """Stop the supervisor, then SIGKILL (by pid) anything of ours left."""
        sup = self.sup
        if sup.proc is not None:
            tracked = set(my_descendants())
            t = time.monotonic()
            if self.alive():
                try:
                    sup.stop()
                except Exception as e:  # noqa: BLE001
                    log(f"{sup.name}: stop() failed: {e}")
            end = t + sup.stop_timeout_s
            while time.monotonic() < end:
                # cheap check of the pids we knew (a full /proc scan every 10 ms
                # would steal a core from the supervisor); full scan at the end
                reap_orphans()
                sup.proc.poll()
                tracked = {p for p in tracked if (pr := read_proc(p)) and pr.state != "Z"}
                if not tracked:
                    tracked = set(my_descendants())
                    if not tracked:
                        break
                time.sleep(0.01)
            left = my_descendants()
            self.res["stop_ms"] = (time.monotonic() - t) * 1000 if not left else None
            if left:
                log(f"{sup.name}: {len(left)} processes left after stop, SIGKILL by pid")
                self.res["stop_leftovers"] = len(left)
            for _ in range(50):
                left = my_descendants()
                if not left:
                    break
                for pid in left:
                    kill_descendant(pid, signal.SIGKILL, left)
                time.sleep(0.05)
                reap_orphans()
            try:
                sup.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                pass
            reap_orphans()
        if getattr(self, "slog", None):
            self.slog.close()
        if getattr(self, "tmp", None):
            shutil.rmtree(self.tmp, ignore_errors=True)


# --------------------------------------------------------------------------
# report
# --------------------------------------------------------------------------

def fmt_ms(v) -> str:
    if v is None:
        return "–"
    return f"{v:.1f}" if v < 100 else f"{v:.0f}"


def markdown_table(results: list[dict]) -> str:
    hdr = ["supervisor", "N", "cold start ms", "sup procs", "sup RSS MiB (KiB/worker)",
           "sup PSS MiB (KiB/worker)", "idle CPU % core (schedstat)", "restart p50 / p95 / max ms", "re-kill <1 s ms",
           "storm 10% ms", "stop ms"]
    rows = ["| " + " | ".join(hdr) + " |", "|" + "---|" * len(hdr)]
    for r in results:
        if "error" in r:
            rows.append(f"| {r['supervisor']} | {r['n']} | error: {r['error'][:80]} |" + " – |" * (len(hdr) - 3))
            continue
        lat = r.get("restart_ms", [])
        rk = r.get("rekill_ms", [])
        st = r.get("storm_ms", [])
        cells = [
            r["supervisor"], str(r["n"]), fmt_ms(r.get("cold_start_ms")),
            str(r.get("overhead_procs", "–")),
            f"{r['rss_mib']:.1f} ({r['rss_per_worker_kib']:.0f})" if "rss_mib" in r else "–",
            f"{r['pss_mib']:.1f} ({r['pss_mib'] * 1024 / r['n']:.0f})" if "pss_mib" in r else "–",
            f"{r['idle_cpu_pct']:.3f} ({r['idle_cpu_pct_schedstat']:.3f})" if "idle_cpu_pct" in r else "–",
            " / ".join(fmt_ms(pct(lat, p)) for p in (50, 95, 100)) if lat else "–",
            fmt_ms(statistics.median(rk)) if rk else "–",
            (f"{fmt_ms(statistics.median(st))} (max {fmt_ms(max(st))})" if len(st) > 1 else fmt_ms(st[0]))
            if st else "–",
            fmt_ms(r.get("stop_ms")),
        ]
        if r.get("restart_failures") or r.get("storm_failures"):
            cells[7] += f" ({r.get('restart_failures', 0) + r.get('storm_failures', 0)} timeouts)"
        rows.append("| " + " | ".join(cells) + " |")
    return "\n".join(rows)


def machine_info() -> dict:
    model = "?"
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    osr = {}
    try:
        for line in open("/etc/os-release"):
            if "=" in line:
                k, v = line.rstrip().split("=", 1)
                osr[k] = v.strip('"')
    except OSError:
        pass
    return {
        "date_utc": _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "os": osr.get("PRETTY_NAME", "?"),
        "kernel": platform.release(),
        "cpus": os.cpu_count(),
        "cpu_model": model,
        "mem_gib": round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1),
        "python": platform.python_version(),
        "pid1": (read_proc(1).comm if read_proc(1) else "?"),
    }


# --------------------------------------------------------------------------
# main
# --------------------------------------------------------------------------

def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("-s", "--supervisors", default=",".join(DEFAULT_SUPS),
                    help=f"comma list of {', '.join(ADAPTERS)} (default: %(default)s)")
    ap.add_argument("-n", "--workers", default="10,100,300", help="comma list of N (default: %(default)s)")
    ap.add_argument("--idle", type=float, default=20.0, help="idle CPU window, s (default: %(default)s)")
    ap.add_argument("--restarts", type=int, default=20, help="single-kill restarts per run (default: %(default)s)")
    ap.add_argument("--rekills", type=int, default=3, help="kills of a just-restarted worker (default: %(default)s)")
    ap.add_argument("--storms", type=int, default=3, help="crash storms of 10%% per run (default: %(default)s)")
    ap.add_argument("--settle", type=float, default=2.0, help="pause after cold start, s (default: %(default)s)")
    ap.add_argument("--gap", type=float, default=0.05, help="pause between single kills, s (default: %(default)s)")
    ap.add_argument("--start-timeout", type=float, default=120.0)
    ap.add_argument("--restart-timeout", type=float, default=10.0)
    ap.add_argument("--tmpdir", default="/dev/shm" if os.access("/dev/shm", os.W_OK) else "",
                    help="parent of the per-run temp dirs (config, supervise state, start log); "
                         "tmpfs like /run in production (default: %(default)s)")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--quick", action="store_true", help="smoke test: N=10, 3 s idle, 5 restarts, 1 storm")
    ap.add_argument("--out", default=str(RESULTS_DIR), help="where to write JSON + markdown (default: %(default)s)")
    ap.add_argument("--list", action="store_true", help="list adapters and whether they can run")
    a = ap.parse_args()
    if a.quick:
        a.workers, a.idle, a.restarts, a.rekills, a.storms, a.settle = "10", 3.0, 5, 1, 1, 1.0

    if a.list:
        for name, cls in ADAPTERS.items():
            ok, why = cls().available()
            print(f"{name:12s} {'ok' if ok else 'unavailable'}  {why}")
        return 0
    if os.geteuid() != 0:
        log("warning: not root; PSS needs root, everything else should work")

    sups = [s.strip() for s in a.supervisors.split(",") if s.strip()]
    for s in sups:
        if s not in ADAPTERS:
            ap.error(f"unknown supervisor {s!r}; known: {', '.join(ADAPTERS)}")
    ns = [int(x) for x in a.workers.split(",") if x.strip()]

    become_subreaper()
    build_worker()
    stray = my_descendants()
    if stray:
        log(f"refusing to start: this harness already has children {sorted(stray)}")
        return 2

    def on_signal(signum, _frame):
        raise KeyboardInterrupt(f"signal {signum}")
    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGHUP, on_signal)

    info = machine_info()
    versions, notes, results = {}, {}, []
    t_start = time.monotonic()
    try:
        for sname in sups:
            probe = ADAPTERS[sname]()
            ok, why = probe.available()
            if not ok:
                log(f"skip {sname}: {why}")
                results.append({"supervisor": sname, "n": "-", "error": why})
                continue
            versions[sname] = probe.version()
            notes[sname] = probe.restart_note
            for n in ns:
                sup = ADAPTERS[sname]()
                run = Run(sup, n, a)
                log(f"{sname} N={n} ...")
                t = time.monotonic()
                try:
                    res = run.execute()
                except KeyboardInterrupt:
                    raise
                except Exception as e:  # noqa: BLE001
                    log(f"{sname} N={n} failed: {e}")
                    res = dict(run.res, error=str(e))
                finally:
                    run.teardown()
                res["wall_s"] = round(time.monotonic() - t, 1)
                results.append(res)
                log(f"{sname} N={n} done in {res['wall_s']} s: cold={fmt_ms(res.get('cold_start_ms'))} ms "
                    f"restart p50={fmt_ms(pct(res.get('restart_ms', []), 50))} ms stop={fmt_ms(res.get('stop_ms'))} ms")
    except KeyboardInterrupt as e:
        log(f"interrupted ({e}); cleaned up, writing partial results")
    finally:
        # belt and braces: nothing of ours may outlive the harness
        left = my_descendants()
        for pid in left:
            kill_descendant(pid, signal.SIGKILL, left)
        reap_orphans()

    table = markdown_table(results)
    total = time.monotonic() - t_start
    stamp = time.strftime("%Y%m%d-%H%M%S")
    out_dir = Path(a.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    doc = {"machine": info, "versions": versions, "restart_notes": notes, "args": {k: (os.path.basename(v) if k in ("out", "tmpdir") and isinstance(v, str) else v) for k, v in vars(a).items()},
           "total_s": round(total, 1), "results": results}
    (out_dir / f"{stamp}.json").write_text(json.dumps(doc, indent=1))
    md = [f"Run {info['date_utc']} on {info['os']}, kernel {info['kernel']}, {info['cpus']} cores "
          f"({info['cpu_model']}), {info['mem_gib']} GiB, PID 1 = {info['pid1']}; "
          f"work dirs under {a.tmpdir or tempfile.gettempdir()}; total {total:.0f} s.", ""]
    md += [f"- {k}: {v}" for k, v in versions.items()] + ["", table, ""]
    (out_dir / f"{stamp}.md").write_text("\n".join(md))
    (out_dir / "latest.md").write_text("\n".join(md))
    print("\n".join(md))
    log(f"wrote {out_dir}/{stamp}.json and .md")
    return 0 if all("error" not in r for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
