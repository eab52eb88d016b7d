#define _GNU_SOURCE
#include "CWhisperLinux.h"

#include <errno.h>
#include <pthread.h>
#include <stddef.h>
#include <stdint.h>
#include <fcntl.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sched.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#ifndef CLOSE_RANGE_CLOEXEC
#define CLOSE_RANGE_CLOEXEC (1U << 2)
#endif

/* ThreadSanitizer's runtime cannot follow a child that runs on our memory (it aborts in its
   own bookkeeping), so a TSan build spawns with plain fork and ships the report through a pipe. */
#if defined(__has_feature)
#  if __has_feature(thread_sanitizer)
#    define WHISPER_SPAWN_BY_FORK 1
#  endif
#endif

int whisper_sanitizer_build(void)
{
#if defined(__has_feature)
#  if __has_feature(thread_sanitizer) || __has_feature(address_sanitizer)
    return 1;
#  endif
#endif
    return 0;
}

/* Shared with the vfork child: it runs in our memory until exec or _exit. */
struct child_report {
    volatile int error;
    volatile int step;
};

static int dup_onto(int from, int to)
{
    if (from < 0) return 0;
    if (from == to) {
        int flags = fcntl(from, F_GETFD);
        return flags < 0 ? -1 : fcntl(from, F_SETFD, flags & ~FD_CLOEXEC);
    }
    return dup2(from, to) < 0 ? -1 : 0;
}

/*
 * Why not plain vfork: the child then starts with a copy of whisperd's whole descriptor table
 * (four descriptors per character) and execve has to close them all again, which costs more
 * than everything else in a restart. Instead the child shares our table (CLONE_FILES) just long
 * enough to unshare a copy of its first few slots (close_range with CLOSE_RANGE_UNSHARE), where
 * the parent has put what the child needs. Those slots are reserved once, early, by
 * whisper_spawn_reserve_slots(); without them we fall back to vfork.
 */
enum { SLOT_STDIN, SLOT_STDOUT, SLOT_STDERR, SLOT_CGROUP_DIR, SLOT_LANDLOCK, SLOT_CGROUP0, SLOT_COUNT = SLOT_CGROUP0 + WHISPER_SPAWN_MAX_CGROUPS };
static int reserved_slots[SLOT_COUNT];
static int reserved_max = -1;
static int reserved_null = -1;
static pthread_mutex_t slot_lock = PTHREAD_MUTEX_INITIALIZER;

#ifndef CLOSE_RANGE_UNSHARE
#define CLOSE_RANGE_UNSHARE (1U << 1)
#endif

int whisper_spawn_reserve_slots(void)
{
    pthread_mutex_lock(&slot_lock);
    if (reserved_max >= 0) { pthread_mutex_unlock(&slot_lock); return 0; }
    int null_fd = open("/dev/null", O_RDONLY | O_CLOEXEC);
    if (null_fd < 0) { pthread_mutex_unlock(&slot_lock); return -1; }
    int max = null_fd;
    for (int i = 0; i < SLOT_COUNT; i++) {
        reserved_slots[i] = fcntl(null_fd, F_DUPFD_CLOEXEC, 0);
        if (reserved_slots[i] < 0) { pthread_mutex_unlock(&slot_lock); return -1; }
        if (reserved_slots[i] > max) max = reserved_slots[i];
    }
    reserved_null = null_fd;
    reserved_max = max;
    pthread_mutex_unlock(&slot_lock);
    return 0;
}

struct child_context {
    const whisper_spawn_request *request;
    int use_slots;
    int joined_at_clone;   /* clone3 put the child into the v2 cgroup already */
    int slots[SLOT_COUNT];
    int slot_max;
    struct child_report *report;
    int report_fd;         /* fork mode only: where the child writes its report (else -1) */
};

/* Signals whose disposition is not SIG_DFL in whisperd (ignored or handled), noted in the
   parent so the child resets just those instead of making 64 sigaction calls per spawn. */
static int nondefault_signals[NSIG];
static int nondefault_count = -1;

void whisper_spawn_note_signal_dispositions(void)
{
    int count = 0;
    for (int sig = 1; sig < NSIG; sig++) {
        if (sig == SIGKILL || sig == SIGSTOP) continue;
        struct sigaction current;
        if (sigaction(sig, NULL, &current) != 0) continue;
        if ((current.sa_flags & SA_SIGINFO) || current.sa_handler != SIG_DFL) nondefault_signals[count++] = sig;
    }
    __atomic_store_n(&nondefault_count, count, __ATOMIC_RELEASE);
}

static void reset_signals(void)
{
    struct sigaction dfl;
    memset(&dfl, 0, sizeof dfl);
    dfl.sa_handler = SIG_DFL;
    int count = __atomic_load_n(&nondefault_count, __ATOMIC_ACQUIRE);
    if (count < 0) {
        for (int sig = 1; sig < NSIG; sig++) {
            if (sig == SIGKILL || sig == SIGSTOP) continue;
            sigaction(sig, &dfl, NULL);
        }
        return;
    }
    for (int i = 0; i < count; i++) sigaction(nondefault_signals[i], &dfl, NULL);
}

static void child_fail(struct child_context *context, int step)
{
    context->report->error = errno;
    context->report->step = step;
    if (context->report_fd >= 0) {
        ssize_t ignored = write(context->report_fd, context->report, sizeof *context->report);
        (void)ignored;
    }
    _exit(127);
}

#ifndef PR_CAP_AMBIENT
#define PR_CAP_AMBIENT 47
#define PR_CAP_AMBIENT_CLEAR_ALL 4
#endif

static long landlock_restrict(int ruleset_fd)
{
    return syscall(446 /* landlock_restrict_self */, ruleset_fd, 0U);
}

int whisper_landlock_restrict_self(int ruleset_fd)
{
    return (int)landlock_restrict(ruleset_fd);
}

/* The child becomes its tenant: bounding set, groups, gid, uid (DESIGN §10). Raw system calls:
   glibc's set*id wrappers would broadcast the change to whisperd's threads, whose memory this
   child still shares, and the kernel changes only the calling thread's credentials anyway. */
static void become_tenant(struct child_context *context, const whisper_spawn_request *request)
{
    if (request->drop_capabilities) {
        /* Without CAP_SETPCAP these fail; the uid change below still empties every set. */
        for (int cap = 0; cap <= request->cap_last; cap++) prctl(PR_CAPBSET_DROP, cap, 0, 0, 0);
        prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0);
    }
    if (!request->change_identity) return;
    if (syscall(SYS_setgroups, (size_t)request->group_count, request->groups) != 0) child_fail(context, 6);
    if (syscall(SYS_setresgid, request->gid, request->gid, request->gid) != 0) child_fail(context, 6);
    if (syscall(SYS_setresuid, request->uid, request->uid, request->uid) != 0) child_fail(context, 6);
    /* Belt and braces: a uid that did not change must never reach exec. */
    if (syscall(SYS_getuid) != (long)request->uid || syscall(SYS_geteuid) != (long)request->uid) {
        errno = EPERM;
        child_fail(context, 6);
    }
}

/* Runs in the child, on its own stack, in our memory: async-signal-safe calls only. */
static int child_main(void *argument)
{
    struct child_context *context = argument;
    const whisper_spawn_request *request = context->request;
    int in_fd = request->stdin_fd, out_fd = request->stdout_fd, err_fd = request->stderr_fd;
    int cgroup_dir = request->cgroup_dir_fd;
    int landlock_fd = request->landlock_ruleset_fd;
    const int *cgroup_fds = request->cgroup_task_fds;
    int cgroup_count = request->cgroup_task_count;

    if (context->use_slots) {
        /* A private table holding only the low slots; nothing of the parent's is copied past it. */
        if (syscall(SYS_close_range, (unsigned)(context->slot_max + 1), ~0U, CLOSE_RANGE_UNSHARE) != 0) {
            if (unshare(CLONE_FILES) != 0) child_fail(context, 4);
        }
        in_fd = context->slots[SLOT_STDIN];
        out_fd = context->slots[SLOT_STDOUT];
        err_fd = context->slots[SLOT_STDERR];
        if (cgroup_dir >= 0) cgroup_dir = context->slots[SLOT_CGROUP_DIR];
        if (landlock_fd >= 0) landlock_fd = context->slots[SLOT_LANDLOCK];
        cgroup_fds = &context->slots[SLOT_CGROUP0];
    }
    reset_signals();
    if (request->reset_nice) setpriority(PRIO_PROCESS, 0, request->nice);
    /* Own session: it cannot join another character's process group, nor reach whisperd's. */
    if (request->new_session && setsid() < 0) child_fail(context, 6);
    if (request->nofile_soft >= 0) {
        struct rlimit limit;
        if (getrlimit(RLIMIT_NOFILE, &limit) == 0) {
            limit.rlim_cur = (rlim_t)request->nofile_soft;
            setrlimit(RLIMIT_NOFILE, &limit);
        }
    }
    if (request->data_limit >= 0) {
        struct rlimit limit = { (rlim_t)request->data_limit, (rlim_t)request->data_limit };
        setrlimit(RLIMIT_DATA, &limit);
    }
    for (int i = 0; i < request->rlimit_count; i++) {
        const whisper_rlimit *entry = &request->rlimits[i];
        struct rlimit limit = {
            entry->soft < 0 ? RLIM_INFINITY : (rlim_t)entry->soft,
            entry->hard < 0 ? RLIM_INFINITY : (rlim_t)entry->hard,
        };
        if (setrlimit(entry->resource, &limit) != 0) child_fail(context, 9);
    }
    if (request->set_oom_score_adj) {
        char text[16];
        int value = request->oom_score_adj, length = 0;
        unsigned magnitude = value < 0 ? (unsigned)(-value) : (unsigned)value;
        char digits[12];
        int count = 0;
        do { digits[count++] = (char)('0' + magnitude % 10); magnitude /= 10; } while (magnitude && count < 11);
        if (value < 0) text[length++] = '-';
        while (count) text[length++] = digits[--count];
        int fd = open("/proc/self/oom_score_adj", O_WRONLY | O_CLOEXEC);
        if (fd < 0 || write(fd, text, (size_t)length) != length) child_fail(context, 9);
        close(fd);
    }
    if (cgroup_dir >= 0 && !context->joined_at_clone) {
        /* No clone3 here: the slow, always-available way. */
        int procs = openat(cgroup_dir, "cgroup.procs", O_WRONLY | O_CLOEXEC);
        if (procs < 0 || write(procs, "0", 1) != 1) child_fail(context, 3);
        close(procs);
    }
    /* We are a single thread, so moving this thread moves the whole process. */
    for (int i = 0; i < cgroup_count; i++) {
        if (write(cgroup_fds[i], "0", 1) != 1) child_fail(context, 3);
    }
    become_tenant(context, request);
    /* As the tenant: a directory it may not enter is an error now, not a way in later. */
    if (request->working_directory && chdir(request->working_directory) != 0) child_fail(context, 2);
    if (request->no_new_privs && prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0) child_fail(context, 7);
    if (landlock_fd >= 0 && landlock_restrict(landlock_fd) != 0) child_fail(context, 8);
    if (dup_onto(in_fd, 0) || dup_onto(out_fd, 1) || dup_onto(err_fd, 2)) child_fail(context, 4);
    if (context->use_slots) {
        syscall(SYS_close_range, 3U, ~0U, 0U);
    } else {
        /* Nothing of whisperd's leaks into the character: mark every other fd close-on-exec. */
        syscall(SYS_close_range, 3U, ~0U, CLOSE_RANGE_CLOEXEC);
    }
    sigset_t empty;
    sigemptyset(&empty);
    sigprocmask(SIG_SETMASK, &empty, NULL);
    execve(request->path, request->argv, request->envp);
    child_fail(context, 5);
    return 127;
}

#if defined(__x86_64__)
/* The clone_args of clone3(2), spelled out so no kernel header is needed. */
struct whisper_clone_args {
    uint64_t flags, pidfd, child_tid, parent_tid, exit_signal, stack, stack_size, tls, set_tid, set_tid_size, cgroup;
};
#define WHISPER_CLONE_INTO_CGROUP 0x200000000ULL

/* long whisper_clone3_run(struct whisper_clone_args *args, size_t size, int (*fn)(void *), void *arg)
   glibc has no clone3 wrapper. Parent: returns the child's pid, or -errno. Child: starts on the
   stack given in args (nothing to return to), runs fn(arg) and exits with its result. The
   syscall keeps every register but rax, rcx and r11, so fn (rdx) and arg (moved to r8) survive. */
long whisper_clone3_run(struct whisper_clone_args *args, size_t size, int (*fn)(void *), void *arg);
__asm__(
    ".text\n"
    ".globl whisper_clone3_run\n"
    ".type whisper_clone3_run,@function\n"
    "whisper_clone3_run:\n"
    "    mov %rcx, %r8\n"
    "    mov $435, %eax\n"
    "    syscall\n"
    "    test %rax, %rax\n"
    "    jz 1f\n"
    "    ret\n"
    "1:  xor %ebp, %ebp\n"
    "    mov %r8, %rdi\n"
    "    call *%rdx\n"
    "    mov %eax, %edi\n"
    "    mov $60, %eax\n"
    "    syscall\n"
    "    hlt\n"
    ".size whisper_clone3_run, .-whisper_clone3_run\n");
static int clone3_unsupported;
#endif

whisper_spawn_result whisper_spawn(const whisper_spawn_request *request)
{
    whisper_spawn_result result = { .pid = -1, .pidfd = -1, .error = 0, .failed_step = 0 };
    struct child_report report = { 0, 0 };
    struct child_context context;
    memset(&context, 0, sizeof context);
    context.request = request;
    context.report = &report;
    context.report_fd = -1;

#if WHISPER_SPAWN_BY_FORK
    int report_pipe[2];
    if (pipe2(report_pipe, O_CLOEXEC) != 0) {
        result.error = errno;
        result.failed_step = 1;
        return result;
    }
    context.report_fd = report_pipe[1];
    sigset_t all, saved;
    sigfillset(&all);
    pthread_sigmask(SIG_SETMASK, &all, &saved);
    pid_t pid = fork();
    if (pid == 0) child_main(&context);
    int fork_errno = errno;
    pthread_sigmask(SIG_SETMASK, &saved, NULL);
    close(report_pipe[1]);
    if (pid > 0) {
        /* EOF (the pipe closed at exec) means the exec worked. */
        ssize_t got;
        do { got = read(report_pipe[0], &report, sizeof report); } while (got < 0 && errno == EINTR);
        if (got != (ssize_t)sizeof report) { report.error = 0; report.step = 0; }
    }
    close(report_pipe[0]);
#else
    pthread_mutex_lock(&slot_lock);
    context.use_slots = reserved_max >= 0 && request->cgroup_task_count <= WHISPER_SPAWN_MAX_CGROUPS;
    if (context.use_slots) {
        memcpy(context.slots, reserved_slots, sizeof reserved_slots);
        context.slot_max = reserved_max;
        int ok = dup2(request->stdin_fd >= 0 ? request->stdin_fd : reserved_null, reserved_slots[SLOT_STDIN]) >= 0
            && dup2(request->stdout_fd >= 0 ? request->stdout_fd : reserved_null, reserved_slots[SLOT_STDOUT]) >= 0
            && dup2(request->stderr_fd >= 0 ? request->stderr_fd : reserved_null, reserved_slots[SLOT_STDERR]) >= 0;
        if (ok && request->cgroup_dir_fd >= 0) ok = dup2(request->cgroup_dir_fd, reserved_slots[SLOT_CGROUP_DIR]) >= 0;
        if (ok && request->landlock_ruleset_fd >= 0) ok = dup2(request->landlock_ruleset_fd, reserved_slots[SLOT_LANDLOCK]) >= 0;
        for (int i = 0; ok && i < request->cgroup_task_count; i++)
            ok = dup2(request->cgroup_task_fds[i], reserved_slots[SLOT_CGROUP0 + i]) >= 0;
        if (!ok) context.use_slots = 0;
    }

    /* Block every signal across the clone so no handler runs in the child on shared memory. */
    sigset_t all, saved;
    sigfillset(&all);
    pthread_sigmask(SIG_SETMASK, &all, &saved);
    pid_t pid = -1;
    if (context.use_slots) {
        /* The parent is suspended until exec (CLONE_VFORK), so its frame can hold the child's stack. */
        _Alignas(64) char stack[32768];
#if defined(__x86_64__)
        if (request->cgroup_dir_fd >= 0 && !request->cgroup_dir_by_write
            && !__atomic_load_n(&clone3_unsupported, __ATOMIC_RELAXED)) {
            struct whisper_clone_args args;
            memset(&args, 0, sizeof args);
            args.flags = CLONE_VM | CLONE_VFORK | CLONE_FILES | WHISPER_CLONE_INTO_CGROUP;
            args.exit_signal = SIGCHLD;
            args.stack = (uint64_t)(uintptr_t)stack;
            args.stack_size = sizeof stack;
            args.cgroup = (uint64_t)request->cgroup_dir_fd;
            context.joined_at_clone = 1;
            long rc = whisper_clone3_run(&args, sizeof args, child_main, &context);
            if (rc >= 0) {
                pid = (pid_t)rc;
            } else {
                /* An old kernel, or a cgroup clone3 refuses: the child joins by writing instead,
                   which also reports a real problem properly. */
                if (rc == -ENOSYS || rc == -E2BIG) __atomic_store_n(&clone3_unsupported, 1, __ATOMIC_RELAXED);
                context.joined_at_clone = 0;
            }
        }
#endif
        if (pid < 0) pid = clone(child_main, stack + sizeof stack, CLONE_VM | CLONE_VFORK | CLONE_FILES | SIGCHLD, &context);
    } else {
        pid = vfork();
        if (pid == 0) child_main(&context);
    }
    int fork_errno = errno;
    pthread_sigmask(SIG_SETMASK, &saved, NULL);

    if (context.use_slots) {
        /* Drop our references to the child's pipe ends and cgroup files. */
        int used = SLOT_CGROUP0 + request->cgroup_task_count;
        for (int i = SLOT_STDOUT; i < used; i++) dup2(reserved_null, reserved_slots[i]);
    }
    pthread_mutex_unlock(&slot_lock);
#endif

    if (pid < 0) {
        result.error = fork_errno;
        result.failed_step = 1;
        return result;
    }
    if (report.step != 0) {
        /* The child already _exit'ed: reap it here, nobody else knows its pid. */
        int status;
        while (waitpid(pid, &status, 0) < 0 && errno == EINTR) {}
        result.error = report.error;
        result.failed_step = report.step;
        return result;
    }
    result.pid = pid;
    result.pidfd = whisper_pidfd_open(pid);
    return result;
}

int whisper_pidfd_open(pid_t pid)
{
    return (int)syscall(SYS_pidfd_open, pid, 0);
}

int whisper_pidfd_send_signal(int pidfd, int sig)
{
    return (int)syscall(SYS_pidfd_send_signal, pidfd, sig, NULL, 0);
}

#ifndef P_PIDFD
#define P_PIDFD 3
#endif

int whisper_pidfd_reap(int pidfd, int *exited_code, int *killed_signal)
{
    siginfo_t info;
    memset(&info, 0, sizeof info);
    int rc;
    do {
        rc = waitid((idtype_t)P_PIDFD, (id_t)pidfd, &info, WEXITED | WNOHANG);
    } while (rc < 0 && errno == EINTR);
    if (rc < 0) return -1;
    if (info.si_pid == 0) return 0;
    *exited_code = -1;
    *killed_signal = 0;
    if (info.si_code == CLD_EXITED) *exited_code = info.si_status;
    else *killed_signal = info.si_status;
    return 1;
}
