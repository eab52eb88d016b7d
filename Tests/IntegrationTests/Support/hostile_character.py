#!/usr/bin/env python3
"""A hostile character: run by whisperd like any `command:` service, it tries to reach what is
not its own and records each outcome. The test (TenantTests) reads the table from
$STATE_DIRECTORY/attempts.json and requires every attempt to have failed.

Its targets come from the environment the test's roster gives it: NEIGHBOUR (a character's
name), NEIGHBOUR_PORT, WHISPERD_TEST_STATE, WHISPERD_TEST_RUNTIME, WHISPERD_TEST_LOGS,
WHISPERD_TEST_ROSTER, WHISPERD_TEST_ENV_FILE, WHISPERD_TEST_SETUID_ID (a setuid-root copy of
`id`). Nothing here is simulated: every attempt is the real system call."""
import ctypes
import errno
import json
import os
import signal
import socket
import subprocess
import sys
import time

env = os.environ
neighbour = env["NEIGHBOUR"]
state, runtime, logs = env["WHISPERD_TEST_STATE"], env["WHISPERD_TEST_RUNTIME"], env["WHISPERD_TEST_LOGS"]
libc = ctypes.CDLL(None, use_errno=True)
attempts = []


def attempt(name):
    def wrap(body):
        try:
            detail = body()
            attempts.append({"attempt": name, "succeeded": True, "detail": str(detail)[:200]})
        except Exception as error:  # the refusal is the expected outcome
            attempts.append({"attempt": name, "succeeded": False, "detail": f"{type(error).__name__}: {error}"[:200]})
        return body
    return wrap


def neighbour_pid():
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/cmdline", "rb") as handle:
                argv = handle.read().split(b"\0")
        except OSError:
            continue
        if len(argv) >= 3 and argv[1] == b"worker" and argv[2] == neighbour.encode():
            return int(entry)
    raise RuntimeError("neighbour not found in /proc")


def check(result, call):
    if result != 0:
        code = ctypes.get_errno()
        raise OSError(code, f"{call}: {os.strerror(code)}")
    return "returned 0"


pid = neighbour_pid()


def read(path):
    with open(path, "rb") as handle:
        return f"read {len(handle.read(4096))} bytes of {path}"


def append(path):
    with open(path, "ab") as handle:
        handle.write(b"\n# hostile\n")
    return f"appended to {path}"


def own_cgroup(controller):
    with open("/proc/self/cgroup") as handle:
        for line in handle:
            _, controllers, path = line.rstrip("\n").split(":", 2)
            if controller in controllers.split(","):
                return f"/sys/fs/cgroup/{controller}{path}"
    raise RuntimeError(f"no {controller} cgroup")


attempt("read the neighbour's store")(lambda: read(f"{state}/{neighbour}/memory.sqlite3"))
attempt("list the neighbour's state directory")(lambda: os.listdir(f"{state}/{neighbour}"))
attempt("read the neighbour's env file")(lambda: read(env["WHISPERD_TEST_ENV_FILE"]))
attempt("read the neighbour's log file")(lambda: read(f"{logs}/{neighbour}.log"))
attempt("read the neighbour's /proc/PID/environ")(lambda: read(f"/proc/{pid}/environ"))
attempt("write into the neighbour's state directory")(lambda: append(f"{state}/{neighbour}/hostile"))
attempt("write into the neighbour's runtime directory")(lambda: append(f"{runtime}/{neighbour}/hostile"))
attempt("write /tmp")(lambda: append(f"/tmp/hostile-{os.getpid()}"))
attempt("write /dev/shm")(lambda: append(f"/dev/shm/hostile-{os.getpid()}"))
attempt("write the roster")(lambda: append(env["WHISPERD_TEST_ROSTER"]))
attempt("write the env file")(lambda: append(env["WHISPERD_TEST_ENV_FILE"]))


@attempt("use the control socket")
def _():
    client = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    client.settimeout(5)
    client.connect(f"{runtime}/control.sock")
    client.sendall(b"POST /v1/characters/" + neighbour.encode() + b"/stop HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n")
    answer = client.recv(200)
    if not answer:
        raise ConnectionError("closed without an answer")
    if not answer.startswith(b"HTTP/1.1 2"):
        raise PermissionError(answer.split(b"\r\n")[0].decode(errors="replace"))
    return answer.split(b"\r\n")[0].decode(errors="replace")


def notify_neighbour(message):
    sender = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sender.sendto(message, f"{runtime}/notify/{neighbour}.sock")
    return "datagram sent (whisperd must still ignore it: see the neighbour's checks)"


attempt("send READY=1 to the neighbour's notify socket")(lambda: notify_neighbour(b"READY=1"))
attempt("send WATCHDOG=trigger to the neighbour's notify socket")(lambda: notify_neighbour(b"WATCHDOG=trigger"))
attempt("setpgid into the neighbour's process group")(lambda: check(libc.setpgid(0, os.getpgid(pid)), "setpgid"))
attempt("kill the neighbour")(lambda: check(libc.kill(pid, signal.SIGTERM), "kill"))
attempt("ptrace the neighbour")(lambda: check(libc.ptrace(16, pid, None, None), "ptrace(PTRACE_ATTACH)"))  # PTRACE_ATTACH
attempt("raise its own memory limit")(lambda: append(own_cgroup("memory") + "/memory.limit_in_bytes"))
attempt("raise its own pids limit")(lambda: append(own_cgroup("pids") + "/pids.max"))
attempt("leave its cgroup for the parent's")(lambda: append(os.path.dirname(own_cgroup("memory")) + "/cgroup.procs"))


def bind(address, port):
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind((address, port))
    listener.listen(1)
    return f"listening on {address}:{port}"


neighbour_port = int(env["NEIGHBOUR_PORT"])
# The neighbour holds 127.0.0.1:PORT, so that bind fails anyway; 127.0.0.2 is the squat.
attempt("bind the neighbour's port (127.0.0.2)")(lambda: bind("127.0.0.2", neighbour_port))
attempt("bind a port not its own")(lambda: bind("127.0.0.1", neighbour_port + 17))


@attempt("regain root through a setuid binary")
def _():
    output = subprocess.run([env["WHISPERD_TEST_SETUID_ID"], "-u"], capture_output=True, text=True, timeout=10)
    euid = output.stdout.strip()
    if euid != "0":
        raise PermissionError(f"euid stayed {euid}")
    return "euid 0"


@attempt("regain privileges with setuid(0)")
def _():
    return check(libc.setuid(0), "setuid(0)")


# Its own directories work: the sandbox is not a wall around everything.
own = {"uid": os.getuid(), "gid": os.getgid(), "groups": os.getgroups(), "state": env.get("STATE_DIRECTORY"),
       "tmpdir": env.get("TMPDIR"), "pgid_is_own": os.getpgid(0) == os.getpid(), "sid_is_own": os.getsid(0) == os.getpid()}
with open(f"{env['STATE_DIRECTORY']}/own-file", "w") as handle:
    handle.write("mine\n")
own["wrote_own_state"] = True
with open(f"{env['STATE_DIRECTORY']}/attempts.json.tmp", "w") as handle:
    json.dump({"own": own, "attempts": attempts}, handle, indent=1)
os.rename(f"{env['STATE_DIRECTORY']}/attempts.json.tmp", f"{env['STATE_DIRECTORY']}/attempts.json")
for row in attempts:
    print(f"{'SUCCEEDED' if row['succeeded'] else 'refused  '}  {row['attempt']}: {row['detail']}", flush=True)
signal.pause()
