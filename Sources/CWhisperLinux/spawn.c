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
#include <linux/futex.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <sys/mman.h>
#include <unistd.h>

#ifndef CLOSE_RANGE_CLOEXEC
#define CLOSE_RANGE_CLOEXEC (1U << 2)
#endif
#ifndef CLOSE_RANGE_UNSHARE
#define CLOSE_RANGE_UNSHARE (1U << 1)
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

/* What the child reports when a step before exec fails (errno and step, see whisper_spawn_result). */
struct child_report {
    volatile int error;
    volatile int step;
};

/*
 * The child's system calls. The child runs on whisperd's memory (CLONE_VM) and, since it is not
 * waited for, beside whisperd's threads: it must not write anything of whisperd's, and glibc's
 * wrappers write errno (a thread-local of the thread that cloned). So on x86-64 it makes raw
 * system calls, which return -errno and touch nothing. Elsewhere the parent waits (vfork) and
 * glibc's wrappers are safe.
 */
#if defined(__x86_64__) && !defined(WHISPER_SPAWN_BY_FORK)
#define WHISPER_SPAWN_NOT_WAITING 1
static inline long sys6(long number, long a, long b, long c, long d, long e, long f)
{
    register long r10 __asm__("r10") = d;
    register long r8 __asm__("r8") = e;
    register long r9 __asm__("r9") = f;
    long result;
    __asm__ volatile("syscall"
                     : "=a"(result)
                     : "a"(number), "D"(a), "S"(b), "d"(c), "r"(r10), "r"(r8), "r"(r9)
                     : "rcx", "r11", "memory");
    return result;
}
#else
static long sys6(long number, long a, long b, long c, long d, long e, long f)
{
    long result = syscall(number, a, b, c, d, e, f);
    return result < 0 ? -errno : result;
}
#endif
#define sys0(n) sys6((n), 0, 0, 0, 0, 0, 0)
#define sys1(n, a) sys6((n), (long)(a), 0, 0, 0, 0, 0)
#define sys2(n, a, b) sys6((n), (long)(a), (long)(b), 0, 0, 0, 0)
#define sys3(n, a, b, c) sys6((n), (long)(a), (long)(b), (long)(c), 0, 0, 0)
#define sys4(n, a, b, c, d) sys6((n), (long)(a), (long)(b), (long)(c), (long)(d), 0, 0)
#define sys5(n, a, b, c, d, e) sys6((n), (long)(a), (long)(b), (long)(c), (long)(d), (long)(e), 0)

/* Code that runs in the child: no sanitizer bookkeeping (it would write the shared runtime's
   state from a second process), never inlined into the parent's frames. */
#define CHILD_CODE __attribute__((noinline, no_sanitize("address", "undefined")))

struct child_context {
    const whisper_spawn_request *request;
    int joined_at_clone;   /* clone3 put the child into the v2 cgroup already */
    struct child_report *report;
    int report_fd;         /* fork mode only: where the child writes its report (else -1) */
    unsigned table_cut;    /* > 0: started on whisperd's table (CLONE_FILES); copy just below this */
    int *table_copied;     /* set to TABLE_COPIED (and woken) once the child has its own table */
};
enum { TABLE_COPYING = 1, TABLE_COPIED = 2 };

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

/* The kernel's struct sigaction (rt_sigaction), not glibc's. */
struct kernel_sigaction {
    unsigned long handler;
    unsigned long flags;
    unsigned long restorer;
    uint64_t mask;
};

CHILD_CODE static void reset_signals(void)
{
    struct kernel_sigaction dfl = { 0, 0, 0, 0 };  /* SIG_DFL, no flags, empty mask */
    int count = __atomic_load_n(&nondefault_count, __ATOMIC_ACQUIRE);
    if (count < 0) {
        for (int sig = 1; sig < NSIG; sig++) {
            if (sig == SIGKILL || sig == SIGSTOP) continue;
            sys4(SYS_rt_sigaction, sig, &dfl, 0, 8);
        }
        return;
    }
    for (int i = 0; i < count; i++) sys4(SYS_rt_sigaction, nondefault_signals[i], &dfl, 0, 8);
}

CHILD_CODE __attribute__((noreturn)) static void child_fail(struct child_context *context, int step, long result)
{
    context->report->error = (int)-result;
    context->report->step = step;
    if (context->report_fd >= 0) sys3(SYS_write, context->report_fd, context->report, sizeof *context->report);
    for (;;) sys1(SYS_exit_group, 127);
}

#ifndef PR_CAP_AMBIENT
#define PR_CAP_AMBIENT 47
#define PR_CAP_AMBIENT_CLEAR_ALL 4
#endif

int whisper_landlock_restrict_self(int ruleset_fd)
{
    return (int)syscall(446 /* landlock_restrict_self */, ruleset_fd, 0U);
}

/* The kernel's struct rlimit64 (prlimit64). */
struct kernel_rlimit {
    uint64_t current;
    uint64_t maximum;
};

/* The child becomes its tenant: bounding set, groups, gid, uid (DESIGN §10). The kernel changes
   only the calling thread's credentials, which is the whole child. */
CHILD_CODE static void become_tenant(struct child_context *context, const whisper_spawn_request *request)
{
    if (request->drop_capabilities) {
        /* Without CAP_SETPCAP these fail; the uid change below still empties every set. */
        for (int cap = 0; cap <= request->cap_last; cap++) sys2(SYS_prctl, PR_CAPBSET_DROP, cap);
        sys2(SYS_prctl, PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL);
    }
    if (!request->change_identity) return;
    long result;
    if ((result = sys2(SYS_setgroups, (size_t)request->group_count, request->groups)) != 0) child_fail(context, 6, result);
    if ((result = sys3(SYS_setresgid, request->gid, request->gid, request->gid)) != 0) child_fail(context, 6, result);
    if ((result = sys3(SYS_setresuid, request->uid, request->uid, request->uid)) != 0) child_fail(context, 6, result);
    /* Belt and braces: a uid that did not change must never reach exec. */
    if (sys0(SYS_getuid) != (long)request->uid || sys0(SYS_geteuid) != (long)request->uid) child_fail(context, 6, -EPERM);
}

CHILD_CODE static long dup_onto(int from, int to)
{
    if (from < 0) return 0;
    if (from == to) {
        long flags = sys2(SYS_fcntl, from, F_GETFD);
        return flags < 0 ? flags : sys3(SYS_fcntl, from, F_SETFD, flags & ~FD_CLOEXEC);
    }
    long result = sys3(SYS_dup3, from, to, 0);
    return result < 0 ? result : 0;
}

/* Runs in the child, on its own stack, in our memory: raw system calls only (see sys6). */
CHILD_CODE static int child_main(void *argument)
{
    struct child_context *context = argument;
    const whisper_spawn_request *request = context->request;
    long result;

    if (context->table_cut > 0) {
        /* First thing, on whisperd's own table: a copy of the descriptors below the cut (the
           slots with what this child needs, and the few whisperd opened before them). The
           parent waits for this before it touches a slot or closes what the child needs. */
        if ((result = sys3(SYS_close_range, context->table_cut, ~0U, CLOSE_RANGE_UNSHARE)) != 0) child_fail(context, 1, result);
        __atomic_store_n(context->table_copied, TABLE_COPIED, __ATOMIC_RELEASE);
        sys3(SYS_futex, context->table_copied, FUTEX_WAKE, 1);
    }
    reset_signals();
    /* Own session: it cannot join another character's process group, nor reach whisperd's. */
    if (request->new_session && (result = sys0(SYS_setsid)) < 0) child_fail(context, 6, result);
    if (request->nofile_soft >= 0) {
        struct kernel_rlimit limit;
        if (sys4(SYS_prlimit64, 0, RLIMIT_NOFILE, 0, &limit) == 0) {
            limit.current = (uint64_t)request->nofile_soft;
            sys4(SYS_prlimit64, 0, RLIMIT_NOFILE, &limit, 0);
        }
    }
    if (request->data_limit >= 0) {
        struct kernel_rlimit limit = { (uint64_t)request->data_limit, (uint64_t)request->data_limit };
        sys4(SYS_prlimit64, 0, RLIMIT_DATA, &limit, 0);
    }
    for (int i = 0; i < request->rlimit_count; i++) {
        const whisper_rlimit *entry = &request->rlimits[i];
        struct kernel_rlimit limit = {
            entry->soft < 0 ? ~0ULL : (uint64_t)entry->soft,
            entry->hard < 0 ? ~0ULL : (uint64_t)entry->hard,
        };
        if ((result = sys4(SYS_prlimit64, 0, entry->resource, &limit, 0)) != 0) child_fail(context, 9, result);
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
        long fd = sys4(SYS_openat, AT_FDCWD, "/proc/self/oom_score_adj", O_WRONLY | O_CLOEXEC, 0);
        if (fd < 0) child_fail(context, 9, fd);
        if ((result = sys3(SYS_write, fd, text, length)) != length) child_fail(context, 9, result < 0 ? result : -EIO);
        sys1(SYS_close, fd);
    }
    if (request->cgroup_dir_fd >= 0 && !context->joined_at_clone) {
        /* No clone3 here: the slow, always-available way. */
        long procs = sys4(SYS_openat, request->cgroup_dir_fd, "cgroup.procs", O_WRONLY | O_CLOEXEC, 0);
        if (procs < 0) child_fail(context, 3, procs);
        if ((result = sys3(SYS_write, procs, "0", 1)) != 1) child_fail(context, 3, result < 0 ? result : -EIO);
        sys1(SYS_close, procs);
    }
    /* We are a single thread, so moving this thread moves the whole process. */
    for (int i = 0; i < request->cgroup_task_count; i++) {
        if ((result = sys3(SYS_write, request->cgroup_task_fds[i], "0", 1)) != 1) child_fail(context, 3, result < 0 ? result : -EIO);
    }
    become_tenant(context, request);
    /* As the tenant: a directory it may not enter is an error now, not a way in later. */
    if (request->working_directory && (result = sys1(SYS_chdir, request->working_directory)) != 0) child_fail(context, 2, result);
    if (request->no_new_privs && (result = sys2(SYS_prctl, PR_SET_NO_NEW_PRIVS, 1)) != 0) child_fail(context, 7, result);
    if (request->landlock_ruleset_fd >= 0 && (result = sys2(446 /* landlock_restrict_self */, request->landlock_ruleset_fd, 0)) != 0)
        child_fail(context, 8, result);
    if ((result = dup_onto(request->stdin_fd, 0)) || (result = dup_onto(request->stdout_fd, 1)) || (result = dup_onto(request->stderr_fd, 2)))
        child_fail(context, 4, result);
    /* Nothing of whisperd's leaks into the character: every other descriptor closes at exec (and
       a report pipe stays open until then). */
    sys3(SYS_close_range, 3U, ~0U, CLOSE_RANGE_CLOEXEC);
    uint64_t empty = 0;
    sys4(SYS_rt_sigprocmask, SIG_SETMASK, &empty, 0, 8);
    result = sys3(SYS_execve, request->path, request->argv, request->envp);
    child_fail(context, 5, result);
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
    "    mov $231, %eax\n"
    "    syscall\n"
    "    hlt\n"
    ".size whisper_clone3_run, .-whisper_clone3_run\n");
static int clone3_unsupported;
#endif

static pthread_mutex_t spawn_lock = PTHREAD_MUTEX_INITIALIZER;

#if WHISPER_SPAWN_NOT_WAITING
/*
 * A spawn that does not wait for the child's exec. The child shares our memory (CLONE_VM: no
 * page tables copied) but gets a copy of the descriptor table (no CLONE_FILES), so the parent may
 * close or reuse any descriptor as soon as clone returns. What the child reads until exec — the
 * request, its strings, its stack — lives in a record of its own that the parent keeps until
 * the kernel zeroes the record's `tid` word: CLONE_CHILD_CLEARTID does that when the child's
 * memory is released, at exec or at exit, whichever comes first. A step that fails before exec
 * leaves its report in the record; it is kept (by the spawn's serial number) until the caller
 * asks, once the child has exited (whisper_spawn_take_failure).
 */
enum { RECORD_STACK_SIZE = 64 * 1024, FAILURES_KEPT = 64 };

struct spawn_record {
    int tid;                         /* nonzero while the child may still read this record */
    int busy;
    uint64_t serial;
    struct child_report report;
    struct child_context context;
    whisper_spawn_request request;   /* a copy whose pointers point into `arena` */
    char *arena;
    char *stack;
};

struct kept_failure {
    uint64_t serial;
    int error;
    int step;
};

/* Each record is allocated once and never moves (its child holds pointers into it); freed ones
   are reused. */
static struct spawn_record **records;
static int record_count;
static struct kept_failure failures[FAILURES_KEPT];
static int next_failure;
static uint64_t next_serial = 1;

/* Frees the records of children that have exec'ed or exited; keeps the reports of failures. */
static void settle_records(void)
{
    for (int i = 0; i < record_count; i++) {
        struct spawn_record *record = records[i];
        if (!record->busy || __atomic_load_n(&record->tid, __ATOMIC_ACQUIRE) != 0) continue;
        if (record->report.step != 0) {
            failures[next_failure] = (struct kept_failure){ record->serial, record->report.error, record->report.step };
            next_failure = (next_failure + 1) % FAILURES_KEPT;
        }
        free(record->arena);
        record->arena = NULL;
        record->busy = 0;
    }
}

/* A free record, or a new one: a spawn never waits for another child's exec. (A child stopped
   before its exec — by another process of its uid, say — only keeps its own record; one that
   dumps core before exec, which the kernel does not clear the word for, keeps it for good.) */
static struct spawn_record *acquire_record(void)
{
    settle_records();
    for (int i = 0; i < record_count; i++)
        if (!records[i]->busy) return records[i];
    struct spawn_record **grown = realloc(records, sizeof *records * (size_t)(record_count + 1));
    if (!grown) return NULL;
    records = grown;
    struct spawn_record *record = calloc(1, sizeof *record);
    if (!record) return NULL;
    records[record_count++] = record;
    return record;
}

/*
 * Slots. A child copies whisperd's whole descriptor table at clone and closes every copy at
 * exec: with hundreds of characters that is thousands of descriptors per spawn, most of a cold
 * start's kernel time. So a few low numbers are set aside once (each a copy of /dev/null,
 * never closed, so no other thread's open can take one). A spawn copies what its child needs
 * into them and clones with CLONE_FILES; the child's first call, close_range(cut, ~0,
 * CLOSE_RANGE_UNSHARE), gives it a table of just the numbers below the cut (the kernel copies
 * at least the first 64). The parent waits for that call (the child's first), then puts the
 * placeholder back into the slots it used, so no pipe stays open through a slot. That wait is
 * only as long as the child takes to be scheduled, unless its cgroup can hold it (a v2 CPU
 * quota, weight or cpuset, memory.high, joined at clone): then the request says
 * copy_whole_table and the child copies the whole table as before, so no character's limits
 * can stall whisperd's loop.
 */
enum { SLOT_COUNT = 16 };
static int slots[SLOT_COUNT];
static int slot_placeholder = -1;
static unsigned slot_cut;          /* 0: slots unused (not reserved, or no close_range here) */
static int slots_tried;

static int reserve_slots_locked(void)
{
    if (slots_tried) return slot_cut ? SLOT_COUNT : 0;
    slots_tried = 1;
    /* close_range and CLOSE_RANGE_UNSHARE came together (Linux 5.9); closing nothing tells. */
    if (syscall(SYS_close_range, ~0U, ~0U, 0) != 0) return 0;
    int placeholder = open("/dev/null", O_RDONLY | O_CLOEXEC);
    if (placeholder < 0) return 0;
    int highest = placeholder;
    for (int i = 0; i < SLOT_COUNT; i++) {
        slots[i] = fcntl(placeholder, F_DUPFD_CLOEXEC, 3);
        if (slots[i] < 0) {
            for (int j = 0; j < i; j++) close(slots[j]);
            close(placeholder);
            return 0;
        }
        if (slots[i] > highest) highest = slots[i];
    }
    slot_placeholder = placeholder;
    slot_cut = (unsigned)highest + 1;
    return SLOT_COUNT;
}

int whisper_spawn_reserve_slots(void)
{
    pthread_mutex_lock(&spawn_lock);
    int count = reserve_slots_locked();
    pthread_mutex_unlock(&spawn_lock);
    return count;
}

static void release_slots(int used)
{
    for (int i = 0; i < used; i++) dup3(slot_placeholder, slots[i], O_CLOEXEC);
}

/* Moves the descriptors the child uses into slots, rewriting the record's request to name them.
   Returns how many slots hold something (release_slots puts the placeholder back), or -1 when
   the child should copy the whole table instead (no slots, too many descriptors, a failed dup). */
static int fill_slots(whisper_spawn_request *request, int *task_fds)
{
    if (!slot_cut || request->copy_whole_table) return -1;
    int needed = request->cgroup_task_count + 6;
    if (needed > SLOT_COUNT) return -1;
    int *fields[6 + SLOT_COUNT] = { &request->stdin_fd, &request->stdout_fd, &request->stderr_fd, &request->cgroup_dir_fd,
                                    &request->landlock_ruleset_fd, &request->exec_report_fd };
    int field_count = 6;
    for (int i = 0; i < request->cgroup_task_count; i++) fields[field_count++] = &task_fds[i];
    /* Every descriptor into its slot first; the request names the slots only once all are there
       (a failed dup leaves it naming whisperd's own descriptors, for the whole-table copy). */
    int renamed[6 + SLOT_COUNT];
    int used = 0;
    for (int i = 0; i < field_count; i++) {
        renamed[i] = *fields[i];
        if (*fields[i] < 0) continue;
        if (dup3(*fields[i], slots[used], O_CLOEXEC) < 0) {
            release_slots(used);
            return -1;
        }
        renamed[i] = slots[used++];
    }
    for (int i = 0; i < field_count; i++) *fields[i] = renamed[i];
    return used;
}

static size_t align8(size_t size) { return (size + 7) & ~(size_t)7; }

static size_t string_list_size(char *const *list, size_t *count)
{
    size_t size = 0, n = 0;
    for (; list && list[n]; n++) size += strlen(list[n]) + 1;
    *count = n;
    return size;
}

/* Copies the request and everything it points to into one block the record owns. */
static int copy_request(struct spawn_record *record, const whisper_spawn_request *request)
{
    size_t argc, envc;
    size_t strings = strlen(request->path) + 1 + string_list_size(request->argv, &argc)
        + string_list_size(request->envp, &envc)
        + (request->working_directory ? strlen(request->working_directory) + 1 : 0);
    size_t size = align8(sizeof(char *) * (argc + 1)) + align8(sizeof(char *) * (envc + 1))
        + align8(sizeof(gid_t) * (size_t)request->group_count) + align8(sizeof(whisper_rlimit) * (size_t)request->rlimit_count)
        + align8(sizeof(int) * (size_t)request->cgroup_task_count) + strings;
    char *arena = malloc(size ? size : 1);
    if (!arena) return -1;
    char *cursor = arena;
    record->request = *request;
    char **argv = (char **)cursor;
    cursor += align8(sizeof(char *) * (argc + 1));
    char **envp = (char **)cursor;
    cursor += align8(sizeof(char *) * (envc + 1));
    if (request->group_count > 0) {
        memcpy(cursor, request->groups, sizeof(gid_t) * (size_t)request->group_count);
        record->request.groups = (const gid_t *)cursor;
    }
    cursor += align8(sizeof(gid_t) * (size_t)request->group_count);
    if (request->rlimit_count > 0) {
        memcpy(cursor, request->rlimits, sizeof(whisper_rlimit) * (size_t)request->rlimit_count);
        record->request.rlimits = (const whisper_rlimit *)cursor;
    }
    cursor += align8(sizeof(whisper_rlimit) * (size_t)request->rlimit_count);
    if (request->cgroup_task_count > 0) {
        memcpy(cursor, request->cgroup_task_fds, sizeof(int) * (size_t)request->cgroup_task_count);
        record->request.cgroup_task_fds = (const int *)cursor;
    }
    cursor += align8(sizeof(int) * (size_t)request->cgroup_task_count);
#define COPY_STRING(from) ({ size_t length_ = strlen(from) + 1; char *to_ = memcpy(cursor, (from), length_); cursor += length_; to_; })
    record->request.path = COPY_STRING(request->path);
    if (request->working_directory) record->request.working_directory = COPY_STRING(request->working_directory);
    for (size_t i = 0; i < argc; i++) argv[i] = COPY_STRING(request->argv[i]);
    argv[argc] = NULL;
    for (size_t i = 0; i < envc; i++) envp[i] = COPY_STRING(request->envp[i]);
    envp[envc] = NULL;
#undef COPY_STRING
    record->request.argv = argv;
    record->request.envp = envp;
    record->arena = arena;
    return 0;
}

static whisper_spawn_result spawn_not_waiting(const whisper_spawn_request *request)
{
    whisper_spawn_result result = { .pid = -1, .pidfd = -1, .error = 0, .failed_step = 0, .serial = 0, .exec_pending = 0 };
    pthread_mutex_lock(&spawn_lock);
    struct spawn_record *record = acquire_record();
    if (!record) {
        result.error = ENOMEM;
        result.failed_step = 1;
        pthread_mutex_unlock(&spawn_lock);
        return result;
    }
    if (!record->stack) {
        void *stack = mmap(NULL, RECORD_STACK_SIZE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_STACK, -1, 0);
        if (stack == MAP_FAILED) {
            result.error = errno;
            result.failed_step = 1;
            pthread_mutex_unlock(&spawn_lock);
            return result;
        }
        record->stack = stack;
    }
    if (copy_request(record, request) != 0) {
        result.error = ENOMEM;
        result.failed_step = 1;
        pthread_mutex_unlock(&spawn_lock);
        return result;
    }
    record->serial = next_serial++;
    record->report.error = 0;
    record->report.step = 0;
    record->context = (struct child_context){ .request = &record->request, .report = &record->report, .report_fd = -1 };
    reserve_slots_locked();
    int slots_used = fill_slots(&record->request, (int *)record->request.cgroup_task_fds);
    unsigned long shares_table = 0;
    if (slots_used >= 0) {
        shares_table = CLONE_FILES;
        record->context.table_cut = slot_cut;
        record->context.table_copied = &record->tid;
    }
    __atomic_store_n(&record->tid, TABLE_COPYING, __ATOMIC_RELEASE);

    /* Block every signal across the clone so no handler runs in the child on shared memory. */
    sigset_t all, saved;
    sigfillset(&all);
    pthread_sigmask(SIG_SETMASK, &all, &saved);
    pid_t pid = -1;
    int pidfd = -1, clone_errno = 0;
    if (request->cgroup_dir_fd >= 0 && !request->cgroup_dir_by_write && !__atomic_load_n(&clone3_unsupported, __ATOMIC_RELAXED)) {
        struct whisper_clone_args args;
        memset(&args, 0, sizeof args);
        args.flags = CLONE_VM | CLONE_CHILD_CLEARTID | CLONE_PIDFD | WHISPER_CLONE_INTO_CGROUP | shares_table;
        args.pidfd = (uint64_t)(uintptr_t)&pidfd;
        args.child_tid = (uint64_t)(uintptr_t)&record->tid;
        args.exit_signal = SIGCHLD;
        args.stack = (uint64_t)(uintptr_t)record->stack;
        args.stack_size = RECORD_STACK_SIZE;
        args.cgroup = (uint64_t)request->cgroup_dir_fd;
        record->context.joined_at_clone = 1;
        long rc = whisper_clone3_run(&args, sizeof args, child_main, &record->context);
        if (rc >= 0) {
            pid = (pid_t)rc;
        } else {
            /* An old kernel, or a cgroup clone3 refuses: the child joins by writing instead,
               which also reports a real problem properly. */
            if (rc == -ENOSYS || rc == -E2BIG) __atomic_store_n(&clone3_unsupported, 1, __ATOMIC_RELAXED);
            record->context.joined_at_clone = 0;
            pidfd = -1;
        }
    }
    if (pid < 0) {
        pid = clone(child_main, record->stack + RECORD_STACK_SIZE, (int)(CLONE_VM | CLONE_CHILD_CLEARTID | shares_table | SIGCHLD),
                    &record->context, NULL, NULL, &record->tid);
        clone_errno = errno;
        if (pid > 0) pidfd = whisper_pidfd_open(pid);
    }
    pthread_sigmask(SIG_SETMASK, &saved, NULL);
    if (slots_used >= 0) {
        /* Until the child has its own table, the slots and what it needs must stay as they are.
           Its exit (before or after) also ends the wait: the kernel zeroes the word then. */
        if (pid > 0) {
            while (__atomic_load_n(&record->tid, __ATOMIC_ACQUIRE) == TABLE_COPYING)
                syscall(SYS_futex, &record->tid, FUTEX_WAIT, TABLE_COPYING, NULL);
        }
        release_slots(slots_used);
    }
    if (pid < 0) {
        free(record->arena);
        record->arena = NULL;
        __atomic_store_n(&record->tid, 0, __ATOMIC_RELEASE);
        result.error = clone_errno;
        result.failed_step = 1;
    } else {
        record->busy = 1;
        result.pid = pid;
        result.pidfd = pidfd;
        result.serial = record->serial;
        result.exec_pending = 1;
    }
    pthread_mutex_unlock(&spawn_lock);
    return result;
}

int whisper_spawn_take_failure(uint64_t serial, int *error, int *failed_step)
{
    pthread_mutex_lock(&spawn_lock);
    settle_records();
    int found = 0;
    for (int i = 0; i < FAILURES_KEPT && !found; i++) {
        if (failures[i].serial != serial || serial == 0) continue;
        *error = failures[i].error;
        *failed_step = failures[i].step;
        failures[i].serial = 0;
        found = 1;
    }
    pthread_mutex_unlock(&spawn_lock);
    return found;
}
#else
int whisper_spawn_reserve_slots(void)
{
    return 0;
}

int whisper_spawn_take_failure(uint64_t serial, int *error, int *failed_step)
{
    (void)serial;
    (void)error;
    (void)failed_step;
    return 0;
}
#endif

/* The waiting spawns: fork (ThreadSanitizer builds) or vfork (other architectures). */
static whisper_spawn_result spawn_waiting(const whisper_spawn_request *request)
{
    whisper_spawn_result result = { .pid = -1, .pidfd = -1, .error = 0, .failed_step = 0, .serial = 0, .exec_pending = 0 };
    struct child_report report = { 0, 0 };
    struct child_context context = { .request = request, .joined_at_clone = 0, .report = &report, .report_fd = -1 };
    pid_t pid;
    int fork_errno;
    sigset_t all, saved;
    sigfillset(&all);
#if WHISPER_SPAWN_BY_FORK
    int report_pipe[2];
    if (pipe2(report_pipe, O_CLOEXEC) != 0) {
        result.error = errno;
        result.failed_step = 1;
        return result;
    }
    context.report_fd = report_pipe[1];
    pthread_sigmask(SIG_SETMASK, &all, &saved);
    pid = fork();
    if (pid == 0) child_main(&context);
    fork_errno = errno;
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
    pthread_mutex_lock(&spawn_lock);
    pthread_sigmask(SIG_SETMASK, &all, &saved);
    pid = vfork();
    if (pid == 0) child_main(&context);
    fork_errno = errno;
    pthread_sigmask(SIG_SETMASK, &saved, NULL);
    pthread_mutex_unlock(&spawn_lock);
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

int whisper_spawn_waits_for_exec(void)
{
#if WHISPER_SPAWN_NOT_WAITING
    return 0;
#else
    return 1;
#endif
}

whisper_spawn_result whisper_spawn(const whisper_spawn_request *request)
{
#if WHISPER_SPAWN_NOT_WAITING
    return spawn_not_waiting(request);
#else
    return spawn_waiting(request);
#endif
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

int whisper_pidfd_reap(int pidfd, int *exited_code, int *killed_signal, int keep_zombie)
{
    siginfo_t info;
    memset(&info, 0, sizeof info);
    int rc;
    do {
        rc = waitid((idtype_t)P_PIDFD, (id_t)pidfd, &info, WEXITED | WNOHANG | (keep_zombie ? WNOWAIT : 0));
    } while (rc < 0 && errno == EINTR);
    if (rc < 0) return -1;
    if (info.si_pid == 0) return 0;
    *exited_code = -1;
    *killed_signal = 0;
    if (info.si_code == CLD_EXITED) *exited_code = info.si_status;
    else *killed_signal = info.si_status;
    return 1;
}
