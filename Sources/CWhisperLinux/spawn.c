#define _GNU_SOURCE
#include "CWhisperLinux.h"

#include <errno.h>
#include <pthread.h>
#include <stddef.h>
#include <fcntl.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#ifndef CLOSE_RANGE_CLOEXEC
#define CLOSE_RANGE_CLOEXEC (1U << 2)
#endif

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

whisper_spawn_result whisper_spawn(const whisper_spawn_request *request)
{
    whisper_spawn_result result = { .pid = -1, .pidfd = -1, .error = 0, .failed_step = 0 };
    struct child_report report = { 0, 0 };

    /* Block every signal across vfork so no handler runs in the child on our stack. */
    sigset_t all, saved;
    sigfillset(&all);
    pthread_sigmask(SIG_SETMASK, &all, &saved);

    pid_t pid = vfork();
    if (pid == 0) {
        /* Child: only async-signal-safe calls below. */
        struct sigaction dfl;
        memset(&dfl, 0, sizeof dfl);
        dfl.sa_handler = SIG_DFL;
        for (int sig = 1; sig < NSIG; sig++) {
            if (sig == SIGKILL || sig == SIGSTOP) continue;
            sigaction(sig, &dfl, NULL);
        }
        if (request->new_process_group) setpgid(0, 0);
        for (int i = 0; i < request->cgroup_procs_count; i++) {
            if (write(request->cgroup_procs_fds[i], "0", 1) != 1) {
                report.error = errno; report.step = 3; _exit(127);
            }
        }
        if (request->nofile_soft >= 0) {
            struct rlimit limit;
            if (getrlimit(RLIMIT_NOFILE, &limit) == 0) {
                limit.rlim_cur = (rlim_t)request->nofile_soft;
                setrlimit(RLIMIT_NOFILE, &limit);
            }
        }
        if (request->working_directory && chdir(request->working_directory) != 0) {
            report.error = errno; report.step = 2; _exit(127);
        }
        if (dup_onto(request->stdin_fd, 0) || dup_onto(request->stdout_fd, 1) || dup_onto(request->stderr_fd, 2)) {
            report.error = errno; report.step = 4; _exit(127);
        }
        /* Nothing of whisperd's leaks into the character: mark every other fd close-on-exec. */
        syscall(SYS_close_range, 3U, ~0U, CLOSE_RANGE_CLOEXEC);
        sigset_t empty;
        sigemptyset(&empty);
        sigprocmask(SIG_SETMASK, &empty, NULL);
        execve(request->path, request->argv, request->envp);
        report.error = errno; report.step = 5;
        _exit(127);
    }
    int fork_errno = errno;
    pthread_sigmask(SIG_SETMASK, &saved, NULL);

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
