#ifndef CWHISPERLINUX_H
#define CWHISPERLINUX_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <signal.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/file.h>
#include <malloc.h>

/// What the child does between fork and exec. Everything is prepared by the parent:
/// the child only makes async-signal-safe system calls.

/// One resource limit (RLIMIT_*) for a child; a value of -1 is RLIM_INFINITY.
typedef struct whisper_rlimit {
    int resource;
    long long soft;
    long long hard;
} whisper_rlimit;

typedef struct whisper_spawn_request {
    const char *path;            /* absolute path of the program */
    char *const *argv;
    char *const *envp;
    const char *working_directory;
    int stdin_fd;                /* dup2'ed to 0 (e.g. /dev/null) */
    int stdout_fd;               /* dup2'ed to 1 */
    int stderr_fd;               /* dup2'ed to 2 */
    /* Placement before the program's first instruction. The v2 cgroup (a directory fd) is
       joined at clone time with clone3(CLONE_INTO_CGROUP); v1 hierarchies by the child writing
       "0" into their open `tasks` files. Both avoid the
       kernel's global threadgroup lock that a cgroup.procs write takes (milliseconds). */
    int cgroup_dir_fd;           /* v2 cgroup directory, or -1 */
    int cgroup_dir_by_write;     /* join it by writing cgroup.procs instead (see CharacterCgroup.killAll) */
    const int *cgroup_task_fds;  /* v1 `tasks` files */
    int cgroup_task_count;
    int new_session;             /* setsid(): own session and process group (pgid = pid) */
    long long nofile_soft;       /* >= 0: RLIMIT_NOFILE soft limit to restore (whisperd raises its own) */
    long long data_limit;        /* >= 0: RLIMIT_DATA in bytes (the memory bound when no memory cgroup) */
    /* Resource settings applied while still privileged (raising needs root). */
    int set_oom_score_adj;       /* write oom_score_adj below to /proc/self/oom_score_adj */
    int oom_score_adj;
    const whisper_rlimit *rlimits;
    int rlimit_count;
    /* The tenant (DESIGN §10), after the cgroup join, in this order: drop the capability
       bounding set, setgroups, setgid, setuid, chdir as the new user, no_new_privs, Landlock. */
    int change_identity;         /* setgroups(groups)/setgid(gid)/setuid(uid) */
    uid_t uid;
    gid_t gid;
    const gid_t *groups;
    int group_count;
    int drop_capabilities;       /* PR_CAPBSET_DROP 0...cap_last and clear ambient capabilities */
    int cap_last;
    int no_new_privs;            /* PR_SET_NO_NEW_PRIVS: no setuid/file-capability gain at exec */
    int landlock_ruleset_fd;     /* >= 0: landlock_restrict_self(fd) (needs no_new_privs) */
    int exec_report_fd;          /* >= 0: a close-on-exec descriptor the child holds until its exec */
    int copy_whole_table;        /* the child may be held before its first step (its cgroup's CPU or
                                    memory.high limits): no slots, so the spawn does not wait for it */
} whisper_spawn_request;

typedef struct whisper_spawn_result {
    pid_t pid;          /* > 0 on success */
    int pidfd;          /* pidfd of the child, -1 if the kernel has none */
    int error;          /* errno of the step that failed, 0 on success */
    int failed_step;    /* 0 none, 1 fork, 2 chdir, 3 cgroup, 4 dup2, 5 exec, 6 setgroups/setgid/setuid,
                           7 capabilities/no_new_privs, 8 landlock, 9 rlimit/oom_score_adj */
    uint64_t serial;    /* names this spawn for whisper_spawn_take_failure */
    int exec_pending;   /* 1: returned before the child's exec; a later failure is reported then */
} whisper_spawn_result;

/// When whisper_spawn returned with exec_pending, a step of the child that failed before exec
/// (it then exits with 127) is kept under the spawn's serial: after the child has exited, this
/// returns 1 and the errno and step once, or 0 when the child reached exec.
int whisper_spawn_take_failure(uint64_t serial, int *error, int *failed_step);

/// 1 when whisper_spawn waits for the child's exec (ThreadSanitizer builds, other architectures).
int whisper_spawn_waits_for_exec(void);

/// Records which signals whisperd ignores or handles, so children reset only those. Call again
/// after changing a disposition (SignalDispositions.ignoreSIGPIPE in WhisperSystem does).
void whisper_spawn_note_signal_dispositions(void);

/// 1 in a ThreadSanitizer or AddressSanitizer build (scripts/sanitizers.sh), else 0.
int whisper_sanitizer_build(void);

/// Offset of the first CRLF CRLF in `bytes` (an HTTP head's end), or -1 (memmem).
long whisper_find_blank_line(const uint8_t *bytes, size_t count);

/// Starts a child with a pre-exec cgroup join and tenant set-up. On x86-64 the child shares our
/// memory (clone with CLONE_VM, no page tables copied) and is not waited for: the call returns at
/// once, with exec_pending (see whisper_spawn_take_failure). Elsewhere: vfork, waited. Never runs
/// Swift code in the child.
whisper_spawn_result whisper_spawn(const whisper_spawn_request *request);

/// Sets aside a few low descriptor numbers (once; later calls do nothing) so a child can start
/// with a copy of just those instead of whisperd's whole table (see spawn.c, "Slots"). Call it
/// early, while whisperd holds few descriptors. Returns how many slots there are (0: not used).
int whisper_spawn_reserve_slots(void);

int whisper_pidfd_open(pid_t pid);
int whisper_pidfd_send_signal(int pidfd, int sig);
/// waitid(P_PIDFD, …, WEXITED|WNOHANG), with WNOWAIT when `keep_zombie` (the status read, the
/// zombie left to reap): 1 exited (code/status set), 0 still running, -1 error.
int whisper_pidfd_reap(int pidfd, int *exited_code, int *killed_signal, int keep_zombie);

/* Landlock (landlock(7)), spelled out so that no kernel header newer than the build host's is
   needed. whisper_landlock_abi: the kernel's ABI version, 0 when it has none (or disabled). */
int whisper_landlock_abi(void);
/* A ruleset handling these access rights (masks already reduced to what the ABI knows); fd or -1. */
int whisper_landlock_create_ruleset(uint64_t handled_fs, uint64_t handled_net, uint64_t scoped);
/* Allows `access` beneath the file or directory open at parent_fd (O_PATH is enough). 0 or -1. */
int whisper_landlock_allow_path(int ruleset_fd, int parent_fd, uint64_t access);
/* Allows `access` (bind/connect) on a TCP port. 0 or -1. */
int whisper_landlock_allow_port(int ruleset_fd, uint64_t port, uint64_t access);
/* Restricts the calling thread with the ruleset (needs no_new_privs). */
int whisper_landlock_restrict_self(int ruleset_fd);

/// Blocks the given signals in the calling thread. Called on the main thread before any other
/// thread exists, it blocks them process-wide: every thread created later inherits the mask, so
/// the signals reach only a signalfd (a thread that does not block them would take the default
/// action, which for SIGTERM kills the process). Children get a clean mask (spawn.c).
int whisper_block_signals(const int *signals, int count);
/// signalfd for the given signals, which are also blocked in the calling thread (see
/// whisper_block_signals for the other threads).
int whisper_signalfd(const int *signals, int count);
/// Reads one signal number from a signalfd; -1 if none.
int whisper_signalfd_read(int fd);

/// timerfd on CLOCK_MONOTONIC; arm at an absolute time (ns), or disarm with a negative one.
int whisper_timerfd_create(void);
int whisper_timerfd_arm_absolute(int fd, int64_t monotonic_ns);
int64_t whisper_monotonic_ns(void);
int64_t whisper_realtime_ns(void);

/// Datagram socket bound at path with SO_PASSCRED; nonblocking, close-on-exec.
int whisper_notify_socket_bind(const char *path);
/// Receives one datagram with the sender's credentials; returns length or -1 (errno).
ssize_t whisper_recv_with_credentials(int fd, void *buffer, size_t length, pid_t *sender_pid, uid_t *sender_uid);
/// The one sd_notify sender: a datagram to an AF_UNIX path (abstract if it starts with '@'), with
/// extra sendto flags (MSG_DONTWAIT: fail with EAGAIN rather than wait while the receiver's queue
/// is full). 0 ok, -1 (errno).
int whisper_notify_send_flags(const char *socket_path, const char *message, size_t length, int flags);

/// sd_notify_barrier: sends BARRIER=1 with a pipe end and waits (up to timeout_ms) until the
/// receiver has handled everything sent before it and closed that end. 0 ok, -1 (errno).
int whisper_notify_barrier(const char *socket_path, int timeout_ms);
/// Nonblocking, close-on-exec TCP listener on an IPv4/IPv6 literal address.
/* reuse_port: SO_REUSEPORT, so a new process of the same user can listen beside this one. */
int whisper_tcp_listen(const char *host, int port, int backlog, int reuse_port);
/// Nonblocking TCP connect to a literal address; returns fd (connect may be in progress).
int whisper_tcp_connect(const char *host, int port);
/// Nonblocking, close-on-exec Unix stream listener, created with the given mode.
int whisper_unix_listen(const char *path, int mode, int backlog);
/// accept4, nonblocking and close-on-exec; a TCP connection gets TCP_NODELAY (every answer is
/// written whole, so Nagle only ever delays a body's last segment).
int whisper_accept(int fd);
/* The same, and the peer's address in `peer` (16 bytes, may be NULL): an IPv6 address as it is,
   an IPv4 one in its v4-mapped form (::ffff:a.b.c.d), all zeros for a Unix socket's peer. */
int whisper_accept_peer(int fd, unsigned char *peer);
/* Asks the kernel to reclaim the pages of this process's private file mappings (its code,
   read-only data, libraries, and the never-written pages of the data segments) that only it maps (MADV_PAGEOUT; pages shared with another
   process, such as a worker running the same binary, are left alone). A page needed again is
   read back on its next touch. Returns the number of mappings advised, -1 if /proc/self/maps
   cannot be read. */
int whisper_page_out_file_mappings(void);
/// A memory file (memfd) holding `count` bytes, offset 0; -1 (errno) on failure.
int whisper_memfd_with_bytes(const char *name, const void *bytes, size_t count);
/// sendfile(2) from `offset` of `in_fd`: bytes sent, or -1 (errno).
long whisper_sendfile(int out_fd, int in_fd, int64_t offset, size_t count);
/// pread(2) until `count` bytes are read or end of file: bytes read, or -1 (errno).
long whisper_pread_all(int fd, void *buffer, size_t count, int64_t offset);
/// SO_PEERCRED of a connected Unix socket; -1 on error.
int whisper_peer_credentials(int fd, pid_t *pid, uid_t *uid, gid_t *gid);
/* The peer's supplementary groups as of connect() (SO_PEERGROUPS): the count (more than
   capacity: nothing copied, ask again with that much room), or -1. */
int whisper_peer_groups(int fd, gid_t *groups, int capacity);
int whisper_socket_error(int fd);

/// A pipe with both ends close-on-exec; the read end nonblocking.
int whisper_pipe(int fds[2]);
int whisper_set_nonblocking(int fd, int on);

/// Only the sigaction: call SignalDispositions.ignoreSIGPIPE, which also tells the spawner.
int whisper_ignore_sigpipe(void);
/// The calling thread's id.
pid_t whisper_gettid(void);
#endif
