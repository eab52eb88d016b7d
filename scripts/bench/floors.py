#!/usr/bin/env python3
"""Where whisperd's cold start and restart time go, and how low they could go on this machine.

Cold start:
Starts whisperd on a roster of N bench workers (the bench harness's worker, as bench.py's
whisperd adapter does) with each cgroup backend in turn — auto (this host: v2 grouping + v1
memory), v2 (grouping only), none — and, as the floor, a bare C spawner that only
posix_spawns the same N workers (no sockets, pipes, logs or cgroups). Each alternates for
--rounds rounds. Reported per configuration: the median time from launch to the last
worker's start line (bench.py's "cold start"), and for whisperd the main (loop) thread's
own CPU time, its wait for a CPU, and the rest (blocked, mostly waiting for each child's
execve, which vfork semantics make the parent wait for) from /proc/PID/task/PID/schedstat.

Restart: --kills SIGKILLs, each of a worker up for 1.2 s (a different character each time under
whisperd, as bench.py does), timed from the kill to the new start line — under whisperd with
each backend, and under a bare C loop of waitpid + posix_spawn of one worker (the floor: the
kernel's and the worker's own cost).

Storm: a tenth of N workers SIGKILLed at once, --storms times, timed until all are back —
under whisperd with each backend and under a bare C loop of waitpid(-1) + posix_spawn.

Isolation (--section isolation, or all): whisperd with every character a tenant (own uid,
own directories, Landlock, cgroups: its default as root) against the same-work floor
(isolated_floor.c: a C loop doing the same kernel work per character — cgroup placement,
own directories, uid drop, capability drop, no_new_privs, Landlock ruleset and restriction —
and nothing else) and against runit (root, no cgroups, no sandbox): cold start, restart p50
and whisperd's PSS, with the ratios the issue sets (≤ 1.3× cold, ≤ 1.15× restart, ≤ 8 MiB);
then the storm with tenants against the floor's storm mode (each worker respawned on exit).

Usage: scripts/bench/floors.py --bin .build-release/release/whisperd [-n 300] [--rounds 5] [--kills 25] [--storms 5]
                               [--restart-rounds 3]
                               [--section all|backends|isolation]
Needs the harness's worker: scripts/bench/prepare-harness.sh builds it.
"""
import argparse
import contextlib
import json
import os
import shutil
import signal
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

FLOOR_C = r"""
#define _GNU_SOURCE
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>
extern char **environ;
int main(int argc, char **argv) {
    int n = atoi(argv[1]);
    for (int i = 0; i < n; i++) {
        char name[16];
        snprintf(name, sizeof name, "w%03d", i);
        char *args[] = {argv[2], name, argv[3], NULL};
        pid_t pid;
        /* In the spawner's process group, so that killing the group takes them all. */
        if (posix_spawn(&pid, argv[2], NULL, NULL, args, environ) != 0) { perror("posix_spawn"); return 1; }
    }
    pause();
    return 0;
}
"""

# Keeps N workers: spawns them, then respawns whichever exits (waitpid on any child).
STORM_C = r"""
#define _GNU_SOURCE
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/wait.h>
extern char **environ;
static pid_t pids[4096];
static int start(int i, char *worker, char *log) {
    char name[16];
    snprintf(name, sizeof name, "w%03d", i);
    char *args[] = {worker, name, log, 0};
    return posix_spawn(&pids[i], worker, 0, 0, args, environ);
}
int main(int argc, char **argv) {
    int n = atoi(argv[1]);
    for (int i = 0; i < n; i++) if (start(i, argv[2], argv[3]) != 0) return 1;
    for (;;) {
        int status;
        pid_t gone = waitpid(-1, &status, 0);
        if (gone < 0) return 1;
        for (int i = 0; i < n; i++) if (pids[i] == gone && start(i, argv[2], argv[3]) != 0) return 1;
    }
}
"""

RESTART_C = r"""
#define _GNU_SOURCE
#include <spawn.h>
#include <sys/wait.h>
extern char **environ;
int main(int argc, char **argv) {
    char *args[] = {argv[1], "w000", argv[2], 0};
    for (;;) {
        pid_t pid;
        int status;
        if (posix_spawn(&pid, argv[1], 0, 0, args, environ) != 0 || waitpid(pid, &status, 0) < 0) return 1;
    }
}
"""


def mount_point(kind, option=None):
    """The mount point of a cgroup hierarchy: kind cgroup2, or cgroup with `option` (memory)."""
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        fields = line.split()
        dash = fields.index("-")
        if fields[dash + 1] == kind and (option is None or option in fields[dash + 3].split(",")):
            return fields[4]
    raise SystemExit(f"no {kind} {option or ''} hierarchy mounted")


@contextlib.contextmanager
def isolated_floor(program, worker, arguments):
    """The same-work floor (isolated_floor.c): `arguments` go between the mode and the worker
    (`["cold", "300"]` or `["restart"]`). Its workers are setsid'd, so they are found and killed
    through the cgroups this function made for them; everything is removed at the end."""
    work = Path(tempfile.mkdtemp(prefix="isolated-floor-", dir="/dev/shm"))
    v2 = Path(mount_point("cgroup2")) / f"whisperd-floor-{os.getpid()}"
    memory = Path(mount_point("cgroup", "memory")) / f"whisperd-floor-{os.getpid()}"
    try:
        os.chmod(work, 0o755)
        for sub in ("state", "run"):
            (work / sub).mkdir()
        log = work / "start.log"
        log.touch()
        os.chmod(log, 0o666)
        v2.mkdir()
        memory.mkdir()
        launched = time.time_ns()
        proc = subprocess.Popen([program, arguments[0], *arguments[1:], worker, str(log), str(work), str(v2), str(memory), "62000"],
                                start_new_session=True)
        try:
            yield proc, log, launched
        finally:
            proc.kill()
            proc.wait()
            for group in v2.glob("char-*"):
                # The floor's own workers, by pid, until the cgroup is empty.
                deadline = time.monotonic() + 10
                while (pids := [int(p) for p in (group / "cgroup.procs").read_text().split()]) and time.monotonic() < deadline:
                    for pid in pids:
                        with contextlib.suppress(ProcessLookupError):
                            os.kill(pid, signal.SIGKILL)
                    time.sleep(0.01)
    finally:
        for base in (v2, memory):
            for group in base.glob("char-*"):
                with contextlib.suppress(OSError):
                    group.rmdir()
            with contextlib.suppress(OSError):
                base.rmdir()
        shutil.rmtree(work, ignore_errors=True)


@contextlib.contextmanager
def runit_fleet(worker, n):
    """runsvdir keeping N bench workers (as the harness's runit adapter: `run` a symlink to
    the worker, which takes its name from the directory); stopped with SIGHUP (runsvdir TERMs
    every runsv, each brings its worker down), then any worker of this run still alive is killed."""
    work = Path(tempfile.mkdtemp(prefix="runit-floors-", dir="/dev/shm"))
    try:
        log = work / "start.log"
        log.touch()
        scan = work / "service"
        scan.mkdir()
        for i in range(n):
            (scan / f"w{i:03d}").mkdir()
            (scan / f"w{i:03d}" / "run").symlink_to(worker)
        # runsvdir waits a second before scanning a directory changed in the current second.
        os.utime(scan, (time.time() - 10, time.time() - 10))
        launched = time.time_ns()
        proc = subprocess.Popen(["runsvdir", str(scan)], start_new_session=True, env={**os.environ, "BENCH_LOG": str(log)},
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            yield proc, log, launched
        finally:
            proc.send_signal(signal.SIGHUP)
            proc.wait(timeout=30)
            started = {int(line.split()[2]) for line in log.read_text().splitlines() if line.strip()}
            deadline = time.monotonic() + 10
            while (alive := [pid for pid in started if Path(f"/proc/{pid}").exists()]) and time.monotonic() < deadline:
                time.sleep(0.01)
            for pid in alive:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def pss_kib(pid):
    for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
        if line.startswith("Pss:"):
            return int(line.split()[1])
    return None


def isolation_section(args, build):
    """whisperd with tenants vs the same-work floor vs runit, alternating, in one run."""
    floor = str(build / "isolated_floor")
    subprocess.run(["gcc", "-O2", "-o", floor, str(Path(__file__).with_name("isolated_floor.c"))], check=True)
    cold = {"tenants": [], "floor": [], "runit": []}
    pss = []
    for _ in range(args.rounds):
        with whisperd_fleet(args.bin, args.worker, args.n, "auto", tenants=True) as (proc, log, launched):
            cold["tenants"].append((max(wait_for(log, args.n, proc)) - launched) / 1e6)
            time.sleep(2)  # as the harness: PSS 2 s after the cold start
            pss.append(pss_kib(proc.pid))
        with isolated_floor(floor, args.worker, ["cold", str(args.n)]) as (proc, log, launched):
            cold["floor"].append((max(wait_for(log, args.n, proc)) - launched) / 1e6)
        with runit_fleet(args.worker, args.n) as (proc, log, launched):
            cold["runit"].append((max(wait_for(log, args.n, proc)) - launched) / 1e6)
    # Restarts alternate too (--restart-rounds rounds of --kills each, pooled): one sitting of
    # 25 kills moves the p50 by a tenth of a millisecond from run to run on this machine.
    restarts = {"tenants": [], "floor": [], "runit": []}
    for _ in range(args.restart_rounds):
        restarts["tenants"] += restart_whisperd(args.bin, args.worker, "auto", args.kills, tenants=True)
        with isolated_floor(floor, args.worker, ["restart"]) as (proc, log, _):
            wait_for(log, 1, proc)
            restarts["floor"] += restart_samples(log, args.kills, proc, distinct=False)
        with runit_fleet(args.worker, args.kills) as (proc, log, _):
            wait_for(log, args.kills, proc)
            restarts["runit"] += restart_samples(log, args.kills, proc, distinct=True)
    # The storm: a tenth of N killed at once, until all are back, with tenants vs the floor.
    storms = {}
    with whisperd_fleet(args.bin, args.worker, args.n, "auto", tenants=True) as (proc, log, _):
        storms["tenants"] = storm_samples(log, args.n, args.storms, proc)
    with isolated_floor(floor, args.worker, ["storm", str(args.n)]) as (proc, log, _):
        storms["floor"] = storm_samples(log, args.n, args.storms, proc)
    return cold, restarts, pss, storms


def print_isolation(args, cold, restarts, pss, storms):
    print(f"Isolation: N = {args.n}, {args.rounds} rounds (cold start, medians, ms), {args.restart_rounds} × {args.kills} kills (restart, alternating); "
          f"{os.cpu_count()} cores, kernel {os.uname().release}")
    labels = (("tenants", "whisperd, auto, every character a tenant (own uid and dirs, Landlock, cgroups)"),
              ("floor", "same-work floor (isolated_floor.c)"), ("runit", "runit (root, no cgroups, no sandbox)"))
    print("| supervisor | cold start | restart p50 | restart min | restart max |")
    print("|---|---|---|---|---|")
    for name, label in labels:
        samples = sorted(restarts[name])
        print(f"| {label} | {statistics.median(cold[name]):.1f} | {statistics.median(samples):.2f} | "
              f"{samples[0]:.2f} | {samples[-1]:.2f} |")
    cold_ratio = statistics.median(cold["tenants"]) / statistics.median(cold["floor"])
    restart_ratio = statistics.median(restarts["tenants"]) / statistics.median(restarts["floor"])
    print()
    print(f"whisperd / same-work floor: cold start {cold_ratio:.2f}× (target ≤ 1.3×), "
          f"restart p50 {restart_ratio:.2f}× (target ≤ 1.15×)")
    print(f"whisperd PSS 2 s after the cold start: median {statistics.median(pss) / 1024:.1f} MiB, "
          f"max {max(pss) / 1024:.1f} MiB (target ≤ 8 MiB)")
    print(f"storm ({args.n // 10} of {args.n} killed at once, {args.storms} times, ms until all are back): "
          f"whisperd with tenants median {statistics.median(storms['tenants']):.1f} "
          f"(max {max(storms['tenants']):.1f}), same-work floor {statistics.median(storms['floor']):.1f} "
          f"(max {max(storms['floor']):.1f}): {statistics.median(storms['tenants']) / statistics.median(storms['floor']):.2f}×")


def start_lines(log):
    return [int(line.split()[1]) for line in log.read_text().splitlines() if line.strip()]


def wait_for(log, n, proc, timeout=30):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        stamps = start_lines(log)
        if len(stamps) >= n:
            return stamps
        if proc.poll() is not None:
            raise RuntimeError(f"exited early with {proc.returncode}")
        time.sleep(0.005)
    raise RuntimeError("not every worker started")


@contextlib.contextmanager
def whisperd_fleet(binary, worker, n, backend, tenants=False):
    """whisperd (with `backend`) keeping N bench workers, as bench.py's adapter runs it;
    yields (process, start log, launch time in ns). Stopped with SIGTERM, temp dir removed.
    `tenants`: every worker a user of its own in its Landlock sandbox (whisperd's default as
    root), allowed to append to the start log; else root without a sandbox, as runit and s6."""
    work = Path(tempfile.mkdtemp(prefix="whisperd-floors-", dir="/dev/shm"))
    try:
        os.chmod(work, 0o755)
        for sub in ("state", "run", "logs"):
            (work / sub).mkdir()
        log = work / "start.log"
        log.touch()
        os.chmod(log, 0o666)
        isolation = [f"  sandbox: {{write_paths: [{json.dumps(str(log))}]}}"] if tenants else ["  user: root", "  sandbox: {filesystem: off}"]
        lines = ["version: 1", "defaults:", "  restart: always", "  restart_delay: 0s", "  health: {ready: started}"] + isolation + ["characters:"]
        for i in range(n):
            lines += [f"  w{i:03d}:", f"    command: [{json.dumps(worker)}, \"w{i:03d}\", {json.dumps(str(log))}]"]
        (work / "roster.yaml").write_text("\n".join(lines) + "\n")
        launched = time.time_ns()
        proc = subprocess.Popen([binary, "--roster", str(work / "roster.yaml"), "--state-dir", str(work / "state"),
                                 "--runtime-dir", str(work / "run"), "--log-dir", str(work / "logs"), "--http", "off",
                                 "--cgroup-backend", backend], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            yield proc, log, launched
        finally:
            proc.send_signal(signal.SIGTERM)
            proc.wait(timeout=30)
    finally:
        shutil.rmtree(work, ignore_errors=True)


@contextlib.contextmanager
def bare_loop(arguments):
    """One of the C floors, writing to a start log of its own: `arguments` + [log path];
    yields (process, start log, launch time in ns). It and its workers share a process group
    of their own, which is killed at the end."""
    with tempfile.NamedTemporaryFile(dir="/dev/shm", prefix="floor-", delete=False) as handle:
        log = Path(handle.name)
    try:
        launched = time.time_ns()
        proc = subprocess.Popen(arguments + [str(log)], start_new_session=True)
        try:
            yield proc, log, launched
        finally:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    finally:
        log.unlink(missing_ok=True)


def run_whisperd(binary, worker, n, backend, tenants=False):
    with whisperd_fleet(binary, worker, n, backend, tenants) as (proc, log, launched):
        stamps = wait_for(log, n, proc)
        on_cpu, runqueue, _ = map(int, Path(f"/proc/{proc.pid}/task/{proc.pid}/schedstat").read_text().split())
    total = (max(stamps) - launched) / 1e6
    return {"cold": total, "on_cpu": on_cpu / 1e6, "runqueue": runqueue / 1e6,
            "blocked": total - on_cpu / 1e6 - runqueue / 1e6}


def restart_samples(log, kills, proc, distinct):
    """SIGKILLs a worker `kills` times (a different one each time when `distinct`, as bench.py
    does: one character killed every 1.2 s would rightly be put in crashloop by whisperd);
    milliseconds from each kill to the next start line."""
    def entries():
        return [line.split() for line in log.read_text().splitlines() if line.strip()]
    samples = []
    for round in range(kills):
        time.sleep(1.2)
        seen = entries()
        if distinct:
            name = f"w{round:03d}"
            pid = int([entry for entry in seen if entry[0] == name][-1][2])
        else:
            pid = int(seen[-1][2])
        # The pid is from a start line of this run: a live worker the supervisor started.
        killed_at = time.time_ns()
        os.kill(pid, signal.SIGKILL)
        while len(entries()) <= len(seen):
            if proc.poll() is not None:
                raise RuntimeError("the supervisor exited")
            time.sleep(0.0005)
        samples.append((int(entries()[-1][1]) - killed_at) / 1e6)
    return samples


def storm_samples(log, n, storms, proc):
    """Kills a tenth of the N workers at once, `storms` times; ms until all of them are back."""
    import random
    rng = random.Random(7)
    def latest():
        found = {}
        for line in log.read_text().splitlines():
            if line.strip():
                name, stamp, pid = line.split()
                found[name] = (int(stamp), int(pid))
        return found
    wait_for(log, n, proc)
    samples = []
    for _ in range(storms):
        time.sleep(1.2)
        before = latest()
        victims = rng.sample(sorted(before), max(1, n // 10))
        killed_at = time.time_ns()
        for name in victims:
            os.kill(before[name][1], signal.SIGKILL)
        deadline = time.monotonic() + 10
        while True:
            now = latest()
            if all(now[name][1] != before[name][1] for name in victims):
                break
            if time.monotonic() > deadline or proc.poll() is not None:
                raise RuntimeError("not every victim came back")
            time.sleep(0.001)
        samples.append((max(now[name][0] for name in victims) - killed_at) / 1e6)
    return samples


def storm_whisperd(binary, worker, n, backend, storms):
    with whisperd_fleet(binary, worker, n, backend) as (proc, log, _):
        return storm_samples(log, n, storms, proc)


def storm_floor(supervisor, worker, n, storms):
    with bare_loop([supervisor, str(n), worker]) as (proc, log, _):
        return storm_samples(log, n, storms, proc)


def restart_whisperd(binary, worker, backend, kills, tenants=False):
    # One character per kill: one killed every 1.2 s would rightly go to crashloop.
    with whisperd_fleet(binary, worker, kills, backend, tenants) as (proc, log, _):
        wait_for(log, kills, proc)
        return restart_samples(log, kills, proc, distinct=True)


def restart_floor(loop, worker, kills):
    with bare_loop([loop, worker]) as (proc, log, _):
        wait_for(log, 1, proc)
        return restart_samples(log, kills, proc, distinct=False)


def run_floor(spawner, worker, n):
    with bare_loop([spawner, str(n), worker]) as (proc, log, launched):
        stamps = wait_for(log, n, proc)
    return {"cold": (max(stamps) - launched) / 1e6}


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--bin", required=True)
    parser.add_argument("-n", type=int, default=300)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--kills", type=int, default=25)
    parser.add_argument("--storms", type=int, default=5)
    parser.add_argument("--restart-rounds", type=int, default=3, help="isolation section: rounds of --kills restarts, alternating")
    parser.add_argument("--worker", default="/tmp/whisperd-bench/build/worker")
    parser.add_argument("--section", choices=("all", "backends", "isolation"), default="all")
    args = parser.parse_args()
    if not os.access(args.worker, os.X_OK):
        raise SystemExit(f"no bench worker at {args.worker}: run scripts/bench/prepare-harness.sh")
    build = Path(tempfile.mkdtemp(prefix="spawn-floor-"))
    if args.section != "backends":
        try:
            print_isolation(args, *isolation_section(args, build))
        finally:
            if args.section == "isolation":
                shutil.rmtree(build, ignore_errors=True)
        if args.section == "isolation":
            return
        print()
    try:
        (build / "floor.c").write_text(FLOOR_C)
        subprocess.run(["gcc", "-O2", "-o", str(build / "floor"), str(build / "floor.c")], check=True)
        (build / "restart.c").write_text(RESTART_C)
        subprocess.run(["gcc", "-O2", "-o", str(build / "restart"), str(build / "restart.c")], check=True)
        (build / "storm.c").write_text(STORM_C)
        subprocess.run(["gcc", "-O2", "-o", str(build / "storm"), str(build / "storm.c")], check=True)
        results = {name: [] for name in ("tenants", "auto", "v2", "none", "floor")}
        for _ in range(args.rounds):
            results["tenants"].append(run_whisperd(args.bin, args.worker, args.n, "auto", tenants=True))
            for backend in ("auto", "v2", "none"):
                results[backend].append(run_whisperd(args.bin, args.worker, args.n, backend))
            results["floor"].append(run_floor(str(build / "floor"), args.worker, args.n))
        restarts = {backend: restart_whisperd(args.bin, args.worker, backend, args.kills) for backend in ("auto", "none")}
        restarts["tenants"] = restart_whisperd(args.bin, args.worker, "auto", args.kills, tenants=True)
        restarts["floor"] = restart_floor(str(build / "restart"), args.worker, args.kills)
        storms = {backend: storm_whisperd(args.bin, args.worker, args.n, backend, args.storms) for backend in ("auto", "none")}
        storms["floor"] = storm_floor(str(build / "storm"), args.worker, args.n, args.storms)
    finally:
        shutil.rmtree(build, ignore_errors=True)
    print(f"N = {args.n}, {args.rounds} rounds, medians (ms); {os.cpu_count()} cores, kernel {os.uname().release}")
    print("| configuration | cold start | loop thread on CPU | waiting for a CPU | blocked (mostly child execve) |")
    print("|---|---|---|---|---|")
    for name, label in (("tenants", "whisperd, auto, characters as tenants (own uid, Landlock)"),
                        ("auto", "whisperd, --cgroup-backend auto"), ("v2", "whisperd, --cgroup-backend v2"),
                        ("none", "whisperd, --cgroup-backend none"), ("floor", "bare posix_spawn loop (C)")):
        rows = results[name]
        def median(key):
            return f"{statistics.median(row[key] for row in rows):.1f}" if key in rows[0] else "—"
        print(f"| {label} | {median('cold')} | {median('on_cpu')} | {median('runqueue')} | {median('blocked')} |")
    print()
    print_samples(f"Restart: {args.kills} SIGKILLs of a worker up for 1.2 s, ms from the kill to its new start line:",
                  "p50", restarts, "bare waitpid + posix_spawn loop (C)", digits=2)
    print()
    print_samples(f"Storm: {max(1, args.n // 10)} of {args.n} workers SIGKILLed at once, {args.storms} times, "
                  "ms until all are back:", "median", storms, "bare waitpid(-1) + posix_spawn loop (C)", digits=1)


def print_samples(title, middle, samples_by_supervisor, floor_label, digits):
    """One markdown table: median, min and max of each supervisor's samples."""
    print(title)
    print(f"| supervisor | {middle} | min | max |")
    print("|---|---|---|---|")
    for name, label in (("tenants", "whisperd, auto, characters as tenants (own uid, Landlock)"),
                        ("auto", "whisperd, --cgroup-backend auto"), ("none", "whisperd, --cgroup-backend none"),
                        ("floor", floor_label)):
        if name not in samples_by_supervisor:
            continue
        samples = sorted(samples_by_supervisor[name])
        print(f"| {label} | {statistics.median(samples):.{digits}f} | {samples[0]:.{digits}f} | {samples[-1]:.{digits}f} |")


if __name__ == "__main__":
    main()
