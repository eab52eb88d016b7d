#define _GNU_SOURCE
#include "CWhisperLinux.h"

#include <arpa/inet.h>
#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <stddef.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/sendfile.h>
#include <sys/signalfd.h>
#include <sys/stat.h>
#include <sys/timerfd.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>
#include <sys/syscall.h>

static void whisper_signal_set(sigset_t *set, const int *signals, int count)
{
    sigemptyset(set);
    for (int i = 0; i < count; i++) sigaddset(set, signals[i]);
}

int whisper_block_signals(const int *signals, int count)
{
    sigset_t set;
    whisper_signal_set(&set, signals, count);
    return pthread_sigmask(SIG_BLOCK, &set, NULL) == 0 ? 0 : -1;
}

int whisper_signalfd(const int *signals, int count)
{
    sigset_t set;
    whisper_signal_set(&set, signals, count);
    if (pthread_sigmask(SIG_BLOCK, &set, NULL) != 0) return -1;
    return signalfd(-1, &set, SFD_NONBLOCK | SFD_CLOEXEC);
}

int whisper_signalfd_read(int fd)
{
    struct signalfd_siginfo info;
    ssize_t n = read(fd, &info, sizeof info);
    if (n != (ssize_t)sizeof info) return -1;
    return (int)info.ssi_signo;
}

int whisper_timerfd_create(void)
{
    return timerfd_create(CLOCK_MONOTONIC, TFD_NONBLOCK | TFD_CLOEXEC);
}

int whisper_timerfd_arm_absolute(int fd, int64_t monotonic_ns)
{
    struct itimerspec spec;
    memset(&spec, 0, sizeof spec);
    if (monotonic_ns >= 0) {
        if (monotonic_ns == 0) monotonic_ns = 1; /* 0 would disarm */
        spec.it_value.tv_sec = monotonic_ns / 1000000000LL;
        spec.it_value.tv_nsec = monotonic_ns % 1000000000LL;
    }
    return timerfd_settime(fd, TFD_TIMER_ABSTIME, &spec, NULL);
}

int64_t whisper_monotonic_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

int64_t whisper_realtime_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

static int fill_unix_address(struct sockaddr_un *address, socklen_t *length, const char *path)
{
    memset(address, 0, sizeof *address);
    address->sun_family = AF_UNIX;
    size_t n = strlen(path);
    if (n == 0 || n >= sizeof address->sun_path) { errno = ENAMETOOLONG; return -1; }
    memcpy(address->sun_path, path, n);
    if (path[0] == '@') address->sun_path[0] = '\0';
    *length = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + n);
    return 0;
}

int whisper_notify_socket_bind(const char *path)
{
    struct sockaddr_un address;
    socklen_t length;
    if (fill_unix_address(&address, &length, path) < 0) return -1;
    int fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) return -1;
    int one = 1;
    if (setsockopt(fd, SOL_SOCKET, SO_PASSCRED, &one, sizeof one) < 0) goto fail;
    /* A socket file left by an earlier whisperd is replaced (unlinked only then: most binds are fresh). */
    if (bind(fd, (struct sockaddr *)&address, length) < 0) {
        if (errno != EADDRINUSE || unlink(path) < 0 || bind(fd, (struct sockaddr *)&address, length) < 0) goto fail;
    }
    /* Children may run as other users (later: uid:); the cgroup check guards it. */
    chmod(path, 0666);
    return fd;
fail:;
    int saved = errno;
    close(fd);
    errno = saved;
    return -1;
}

ssize_t whisper_recv_with_credentials(int fd, void *buffer, size_t length, pid_t *sender_pid, uid_t *sender_uid)
{
    struct iovec iov = { .iov_base = buffer, .iov_len = length };
    union {
        struct cmsghdr align;
        char space[CMSG_SPACE(sizeof(struct ucred)) + CMSG_SPACE(sizeof(int) * 16)];
    } control;
    struct msghdr message;
    memset(&message, 0, sizeof message);
    message.msg_iov = &iov;
    message.msg_iovlen = 1;
    message.msg_control = &control;
    message.msg_controllen = sizeof control;
    *sender_pid = 0;
    *sender_uid = (uid_t)-1;
    ssize_t n = recvmsg(fd, &message, MSG_DONTWAIT | MSG_CMSG_CLOEXEC | MSG_TRUNC);
    if (n < 0) return -1;
    for (struct cmsghdr *c = CMSG_FIRSTHDR(&message); c; c = CMSG_NXTHDR(&message, c)) {
        if (c->cmsg_level == SOL_SOCKET && c->cmsg_type == SCM_CREDENTIALS) {
            struct ucred cred;
            memcpy(&cred, CMSG_DATA(c), sizeof cred);
            *sender_pid = cred.pid;
            *sender_uid = cred.uid;
        } else if (c->cmsg_level == SOL_SOCKET && c->cmsg_type == SCM_RIGHTS) {
            /* Never keep file descriptors a child tries to hand us. */
            int count = (int)((c->cmsg_len - CMSG_LEN(0)) / sizeof(int));
            int fds[16];
            if (count > 16) count = 16;
            memcpy(fds, CMSG_DATA(c), sizeof(int) * (size_t)count);
            for (int i = 0; i < count; i++) close(fds[i]);
        }
    }
    if (message.msg_flags & MSG_TRUNC) { errno = EMSGSIZE; return -2; }
    return n;
}

int whisper_notify_send_flags(const char *socket_path, const char *message, size_t length, int flags)
{
    struct sockaddr_un address;
    socklen_t address_length;
    if (fill_unix_address(&address, &address_length, socket_path) < 0) return -1;
    int fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    if (fd < 0) return -1;
    ssize_t n = sendto(fd, message, length, MSG_NOSIGNAL | flags, (struct sockaddr *)&address, address_length);
    int saved = errno;
    close(fd);
    errno = saved;
    return n == (ssize_t)length ? 0 : -1;
}

int whisper_notify_barrier(const char *socket_path, int timeout_ms)
{
    struct sockaddr_un address;
    socklen_t address_length;
    if (fill_unix_address(&address, &address_length, socket_path) < 0) return -1;
    int pipe_fds[2];
    if (pipe2(pipe_fds, O_CLOEXEC) < 0) return -1;
    int fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    if (fd < 0) { close(pipe_fds[0]); close(pipe_fds[1]); return -1; }
    static const char text[] = "BARRIER=1";
    struct iovec iov = { .iov_base = (void *)text, .iov_len = sizeof text - 1 };
    union {
        struct cmsghdr align;
        char space[CMSG_SPACE(sizeof(int))];
    } control;
    memset(&control, 0, sizeof control);
    struct msghdr message;
    memset(&message, 0, sizeof message);
    message.msg_name = &address;
    message.msg_namelen = address_length;
    message.msg_iov = &iov;
    message.msg_iovlen = 1;
    message.msg_control = &control;
    message.msg_controllen = sizeof control;
    struct cmsghdr *c = CMSG_FIRSTHDR(&message);
    c->cmsg_level = SOL_SOCKET;
    c->cmsg_type = SCM_RIGHTS;
    c->cmsg_len = CMSG_LEN(sizeof(int));
    memcpy(CMSG_DATA(c), &pipe_fds[1], sizeof(int));
    ssize_t n = sendmsg(fd, &message, MSG_NOSIGNAL);
    int saved = errno;
    close(fd);
    close(pipe_fds[1]);
    if (n < 0) { close(pipe_fds[0]); errno = saved; return -1; }
    /* The receiver closes the passed end once everything sent before it was handled. */
    struct pollfd wait_for = { .fd = pipe_fds[0], .events = 0, .revents = 0 };
    int rc;
    do { rc = poll(&wait_for, 1, timeout_ms); } while (rc < 0 && errno == EINTR);
    close(pipe_fds[0]);
    if (rc == 0) { errno = ETIMEDOUT; return -1; }
    return rc > 0 ? 0 : -1;
}

static int fill_inet(struct sockaddr_storage *storage, socklen_t *length, const char *host, int port)
{
    memset(storage, 0, sizeof *storage);
    struct sockaddr_in *v4 = (struct sockaddr_in *)storage;
    struct sockaddr_in6 *v6 = (struct sockaddr_in6 *)storage;
    if (inet_pton(AF_INET, host, &v4->sin_addr) == 1) {
        v4->sin_family = AF_INET;
        v4->sin_port = htons((uint16_t)port);
        *length = sizeof *v4;
        return AF_INET;
    }
    if (inet_pton(AF_INET6, host, &v6->sin6_addr) == 1) {
        v6->sin6_family = AF_INET6;
        v6->sin6_port = htons((uint16_t)port);
        *length = sizeof *v6;
        return AF_INET6;
    }
    errno = EINVAL;
    return -1;
}

int whisper_tcp_listen(const char *host, int port, int backlog, int reuse_port)
{
    struct sockaddr_storage address;
    socklen_t length;
    int family = fill_inet(&address, &length, host, port);
    if (family < 0) return -1;
    int fd = socket(family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) return -1;
    int one = 1;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    if (reuse_port && setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof one) < 0) {
        int saved = errno;
        close(fd);
        errno = saved;
        return -1;
    }
    if (bind(fd, (struct sockaddr *)&address, length) < 0 || listen(fd, backlog) < 0) {
        int saved = errno;
        close(fd);
        errno = saved;
        return -1;
    }
    return fd;
}

int whisper_tcp_connect(const char *host, int port)
{
    struct sockaddr_storage address;
    socklen_t length;
    int family = fill_inet(&address, &length, host, port);
    if (family < 0) return -1;
    int fd = socket(family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) return -1;
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    if (connect(fd, (struct sockaddr *)&address, length) < 0 && errno != EINPROGRESS) {
        int saved = errno;
        close(fd);
        errno = saved;
        return -1;
    }
    return fd;
}

int whisper_unix_listen(const char *path, int mode, int backlog)
{
    struct sockaddr_un address;
    socklen_t length;
    if (fill_unix_address(&address, &length, path) < 0) return -1;
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) return -1;
    unlink(path);
    /* Bind under a restrictive umask so the socket is never briefly wider than asked. */
    mode_t old = umask(0777 & ~(mode_t)mode);
    int rc = bind(fd, (struct sockaddr *)&address, length);
    umask(old);
    if (rc < 0 || chmod(path, (mode_t)mode) < 0 || listen(fd, backlog) < 0) {
        int saved = errno;
        close(fd);
        errno = saved;
        return -1;
    }
    return fd;
}

int whisper_accept(int fd)
{
    return whisper_accept_peer(fd, NULL);
}

int whisper_accept_peer(int fd, unsigned char *peer)
{
    struct sockaddr_storage address;
    socklen_t length = sizeof address;
    int connection = accept4(fd, (struct sockaddr *)&address, &length, SOCK_NONBLOCK | SOCK_CLOEXEC);
    if (connection < 0) return connection;
    if (peer != NULL) memset(peer, 0, 16);
    if (length >= sizeof(struct sockaddr_in) && address.ss_family == AF_INET) {
        if (peer != NULL) {
            peer[10] = 0xff;
            peer[11] = 0xff;
            memcpy(peer + 12, &((struct sockaddr_in *)&address)->sin_addr, 4);
        }
    } else if (length >= sizeof(struct sockaddr_in6) && address.ss_family == AF_INET6) {
        if (peer != NULL) memcpy(peer, &((struct sockaddr_in6 *)&address)->sin6_addr, 16);
    } else {
        return connection;
    }
    int one = 1;
    setsockopt(connection, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    return connection;
}

int whisper_memfd_with_bytes(const char *name, const void *bytes, size_t count)
{
    int fd = memfd_create(name, MFD_CLOEXEC);
    if (fd < 0) return -1;
    size_t written = 0;
    while (written < count) {
        ssize_t step = write(fd, (const char *)bytes + written, count - written);
        if (step < 0 && errno == EINTR) continue;
        if (step <= 0) {
            int saved = step < 0 ? errno : ENOSPC;
            close(fd);
            errno = saved;
            return -1;
        }
        written += (size_t)step;
    }
    return fd;
}

long whisper_sendfile(int out_fd, int in_fd, int64_t offset, size_t count)
{
    off_t position = (off_t)offset;
    return (long)sendfile(out_fd, in_fd, &position, count);
}

long whisper_pread_all(int fd, void *buffer, size_t count, int64_t offset)
{
    size_t done = 0;
    while (done < count) {
        ssize_t step = pread(fd, (char *)buffer + done, count - done, (off_t)(offset + (int64_t)done));
        if (step < 0 && errno == EINTR) continue;
        if (step < 0) return -1;
        if (step == 0) break;
        done += (size_t)step;
    }
    return (long)done;
}

int whisper_socket_error(int fd)
{
    int error = 0;
    socklen_t length = sizeof error;
    if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &error, &length) < 0) return errno;
    return error;
}

int whisper_pipe(int fds[2])
{
    if (pipe2(fds, O_CLOEXEC) < 0) return -1;
    /* A new read end's status flags are O_RDONLY alone: no F_GETFL needed. */
    if (fcntl(fds[0], F_SETFL, O_NONBLOCK) == 0) return 0;
    int saved = errno;
    close(fds[0]);
    close(fds[1]);
    errno = saved;
    return -1;
}

int whisper_set_nonblocking(int fd, int on)
{
    int flags = fcntl(fd, F_GETFL);
    if (flags < 0) return -1;
    flags = on ? (flags | O_NONBLOCK) : (flags & ~O_NONBLOCK);
    return fcntl(fd, F_SETFL, flags);
}

int whisper_ignore_sigpipe(void)
{
    struct sigaction ignore;
    memset(&ignore, 0, sizeof ignore);
    ignore.sa_handler = SIG_IGN;
    return sigaction(SIGPIPE, &ignore, NULL);
}

int whisper_peer_credentials(int fd, pid_t *pid, uid_t *uid, gid_t *gid)
{
    struct ucred credentials;
    socklen_t length = sizeof credentials;
    if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &credentials, &length) < 0) return -1;
    *pid = credentials.pid;
    *uid = credentials.uid;
    *gid = credentials.gid;
    return 0;
}

int whisper_peer_groups(int fd, gid_t *groups, int capacity)
{
    socklen_t length = (socklen_t)(sizeof(gid_t) * (size_t)capacity);
    if (getsockopt(fd, SOL_SOCKET, SO_PEERGROUPS, groups, &length) < 0) {
        /* ERANGE: length now holds the size needed; the caller asks again with room. */
        return errno == ERANGE ? (int)(length / sizeof(gid_t)) : -1;
    }
    return (int)(length / sizeof(gid_t));
}

pid_t whisper_gettid(void)
{
    return (pid_t)syscall(SYS_gettid);
}

long whisper_find_blank_line(const uint8_t *bytes, size_t count) {
    const void *found = memmem(bytes, count, "\r\n\r\n", 4);
    return found == NULL ? -1 : (long)((const uint8_t *)found - bytes);
}

int whisper_page_out_file_mappings(void)
{
    FILE *maps = fopen("/proc/self/maps", "re");
    if (maps == NULL) return -1;
    char line[4096 + 256];
    int advised = 0;
    while (fgets(line, sizeof line, maps) != NULL) {
        unsigned long start, end;
        char permissions[8];
        int path_at = 0;
        if (sscanf(line, "%lx-%lx %7s %*s %*s %*s %n", &start, &end, permissions, &path_at) < 3) continue;
        /* Backed by a file (a path, not [vdso], [heap], or anonymous) and private: read-only
           code and data, and the pages of the writable data segment that were only read (still
           the file's; the ones written to are anonymous copies, which need swap and stay). */
        if (permissions[3] != 'p' || path_at <= 0 || line[path_at] != '/') continue;
        if (madvise((void *)start, end - start, MADV_PAGEOUT) == 0) advised++;
    }
    fclose(maps);
    return advised;
}
