/* The same-work floor of scripts/bench/floors.py: the kernel work whisperd does per character
 * as a tenant, without a supervisor around it:
 *   isolated_floor cold N WORKER LOG WORK V2BASE V1MEMBASE UIDBASE     start N workers, then pause
 *   isolated_floor restart WORKER LOG WORK V2BASE V1MEMBASE UIDBASE    one worker, respawned on exit
 *   isolated_floor storm N WORKER LOG WORK V2BASE V1MEMBASE UIDBASE    N workers, each respawned on exit
 * Per worker, once: its state and runtime directories (0700, chowned to its uid), a v2 cgroup
 * (opened, cgroup.events opened) and a v1 memory cgroup (tasks opened, OOM eventfd registered),
 * a Landlock ruleset like whisperd's `filesystem: default` (read /, devices, write its two
 * directories and the start log; TCP bind handled; signals and abstract sockets scoped).
 * Per spawn: clone3 into the v2 cgroup; in the child setsid, join the v1 cgroup, drop the
 * bounding set and ambient capabilities, setgroups/setresgid/setresuid, chdir, no_new_privs,
 * landlock_restrict_self, execve. clone3 here copies this small process (no CLONE_VM: that needs
 * a stack of its own, as whisperd's spawn.c has); a fork of a process this small costs about
 * what a vfork does. */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

extern char **environ;
struct clone_args_ { uint64_t flags, pidfd, child_tid, parent_tid, exit_signal, stack, stack_size, tls, set_tid, set_tid_size, cgroup; };
struct ruleset_attr_ { uint64_t handled_fs, handled_net, scoped; };
struct path_attr_ { uint64_t allowed; int32_t parent_fd; } __attribute__((packed));

struct worker { char name[16], state[512], run[512]; uid_t uid; int cgroup_dir, tasks_fd, ruleset; };
static const char *worker_bin, *log_path, *work, *v2base, *membase;
static int cap_last = 40, abi;

static void die(const char *what) { perror(what); exit(1); }

static void allow(int ruleset, const char *path, uint64_t access) {
    int fd = open(path, O_PATH | O_CLOEXEC);
    if (fd < 0) return;
    struct stat info;
    fstat(fd, &info);
    uint64_t on_files = 1 | 2 | 4 | (1 << 14) | (1 << 15);
    struct path_attr_ attr = { S_ISDIR(info.st_mode) ? access : access & on_files, fd };
    if (syscall(445, ruleset, 1, &attr, 0) != 0) die("landlock_add_rule");
    close(fd);
}

static void prepare(struct worker *w, int index, uid_t uid_base) {
    char path[1024];
    snprintf(w->name, sizeof w->name, "w%03d", index);
    w->uid = uid_base + index;
    snprintf(w->state, sizeof w->state, "%s/state/%s", work, w->name);
    snprintf(w->run, sizeof w->run, "%s/run/%s", work, w->name);
    if (mkdir(w->state, 0700) || chown(w->state, w->uid, w->uid) || mkdir(w->run, 0700) || chown(w->run, w->uid, w->uid)) die("own dirs");
    snprintf(path, sizeof path, "%s/char-%s", v2base, w->name);
    if (mkdir(path, 0755) && errno != EEXIST) die("mkdir v2");
    w->cgroup_dir = open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    snprintf(path, sizeof path, "%s/char-%s/cgroup.events", v2base, w->name);
    if (w->cgroup_dir < 0 || open(path, O_RDONLY | O_CLOEXEC) < 0) die("open v2");
    snprintf(path, sizeof path, "%s/char-%s", membase, w->name);
    if (mkdir(path, 0755) && errno != EEXIST) die("mkdir v1");
    snprintf(path, sizeof path, "%s/char-%s/tasks", membase, w->name);
    w->tasks_fd = open(path, O_WRONLY | O_CLOEXEC);
    snprintf(path, sizeof path, "%s/char-%s/memory.oom_control", membase, w->name);
    int oom = open(path, O_RDONLY | O_CLOEXEC), event = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    snprintf(path, sizeof path, "%s/char-%s/cgroup.event_control", membase, w->name);
    int control = open(path, O_WRONLY | O_CLOEXEC);
    char line[32];
    int length = snprintf(line, sizeof line, "%d %d", event, oom);
    if (w->tasks_fd < 0 || oom < 0 || control < 0 || write(control, line, length) != length) die("v1 memory");
    close(control);

    uint64_t handled = (1 << 13) - 1;
    if (abi >= 2) handled |= 1 << 13;
    if (abi >= 3) handled |= 1 << 14;
    if (abi >= 5) handled |= 1 << 15;
    struct ruleset_attr_ attr = { handled, abi >= 4 ? 1 : 0, abi >= 6 ? 3 : 0 };
    size_t size = abi >= 6 ? sizeof attr : abi >= 4 ? 16 : 8;
    w->ruleset = (int)syscall(444, &attr, size, 0);
    if (w->ruleset < 0) die("landlock_create_ruleset");
    uint64_t read = (1 | 4 | 8 | (1 << 15)) & handled, device = (2 | 4 | (1 << 14) | (1 << 15)) & handled;
    allow(w->ruleset, "/", read);
    const char *devices[] = {"/dev/null", "/dev/zero", "/dev/full", "/dev/tty"};
    for (int i = 0; i < 4; i++) allow(w->ruleset, devices[i], device);
    allow(w->ruleset, w->state, handled);
    allow(w->ruleset, w->run, handled);
    allow(w->ruleset, log_path, handled);
}

static pid_t spawn(struct worker *w) {
    struct clone_args_ args;
    memset(&args, 0, sizeof args);
    args.flags = 0x200000000ULL; /* CLONE_INTO_CGROUP */
    args.exit_signal = SIGCHLD;
    args.cgroup = (uint64_t)w->cgroup_dir;
    pid_t pid = (pid_t)syscall(SYS_clone3, &args, sizeof args);
    if (pid != 0) return pid;
    gid_t gid = w->uid;
    if (setsid() < 0 || write(w->tasks_fd, "0", 1) != 1) _exit(120);
    for (int cap = 0; cap <= cap_last; cap++) prctl(PR_CAPBSET_DROP, cap, 0, 0, 0);
    prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0);
    if (syscall(SYS_setgroups, 1, &gid) || syscall(SYS_setresgid, gid, gid, gid) || syscall(SYS_setresuid, w->uid, w->uid, w->uid)) _exit(121);
    if (chdir(w->state) || prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) || syscall(446, w->ruleset, 0)) _exit(122);
    char *argv[] = {(char *)worker_bin, w->name, (char *)log_path, NULL};
    execve(worker_bin, argv, environ);
    _exit(127);
}

int main(int argc, char **argv) {
    int cold = argc == 9 && strcmp(argv[1], "cold") == 0;
    int storm = argc == 9 && strcmp(argv[1], "storm") == 0;
    if (!cold && !storm && !(argc == 8 && strcmp(argv[1], "restart") == 0)) { fprintf(stderr, "usage: see the top of isolated.c\n"); return 2; }
    int n = cold || storm ? atoi(argv[2]) : 1;
    char **rest = argv + (cold || storm ? 3 : 2);
    worker_bin = rest[0]; log_path = rest[1]; work = rest[2]; v2base = rest[3]; membase = rest[4];
    uid_t uid_base = (uid_t)atoi(rest[5]);
    FILE *last = fopen("/proc/sys/kernel/cap_last_cap", "r");
    if (last) { if (fscanf(last, "%d", &cap_last) != 1) cap_last = 40; fclose(last); }
    abi = (int)syscall(444, NULL, 0, 1);
    if (abi < 1) die("landlock abi");
    struct worker *workers = calloc(n, sizeof *workers);
    pid_t *pids = calloc(n, sizeof *pids);
    for (int i = 0; i < n; i++) {
        prepare(&workers[i], i, uid_base);
        if ((pids[i] = spawn(&workers[i])) < 0) die("clone3");
    }
    if (cold) for (;;) pause();
    for (;;) {
        int status;
        pid_t gone = waitpid(-1, &status, 0);
        if (gone < 0) die("waitpid");
        for (int i = 0; i < n; i++)
            if (pids[i] == gone && (pids[i] = spawn(&workers[i])) < 0) die("clone3");
    }
}
