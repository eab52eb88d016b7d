/* The floor for scripts/bench/http.sh: the least an HTTP/1.1 keep-alive server can do on this
 * machine to answer GET with a body of N bytes (one epoll loop, head and body in one sendmsg,
 * nothing parsed beyond "a request arrived"). Measured with the same wrk command as whisperd,
 * it shows how much of a latency figure is the kernel, the VM and wrk rather than the server.
 * With "sendfile" the body is kept in a memory file and sent by sendfile(2) after a MSG_MORE
 * head, as whisperd sends a large /metrics. Accepted connections get TCP_NODELAY, as in whisperd.
 * Usage: static_http PORT BYTES [sendfile]   (listens on 127.0.0.1) */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/mman.h>
#include <sys/sendfile.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <unistd.h>

#define MAX_FDS 4096

static size_t sent[MAX_FDS];
static int responding[MAX_FDS];

static void watch(int epoll_fd, int op, int fd, unsigned events) {
    struct epoll_event event = {.events = events, .data.fd = fd};
    epoll_ctl(epoll_fd, op, fd, &event);
}

int main(int argc, char **argv) {
    if (argc < 3 || argc > 4) {
        fprintf(stderr, "usage: %s PORT BYTES [sendfile]\n", argv[0]);
        return 2;
    }
    size_t body_length = strtoul(argv[2], NULL, 10);
    char *body = malloc(body_length);
    memset(body, 'x', body_length);
    char head[200];
    size_t head_length = (size_t)snprintf(head, sizeof head,
        "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: %zu\r\nConnection: keep-alive\r\n\r\n", body_length);
    size_t total = head_length + body_length;
    int body_fd = -1;
    if (argc == 4 && strcmp(argv[3], "sendfile") == 0) {
        body_fd = memfd_create("body", MFD_CLOEXEC);
        if (body_fd < 0 || write(body_fd, body, body_length) != (ssize_t)body_length) {
            perror("memfd");
            return 1;
        }
    }

    int listener = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    int one = 1;
    setsockopt(listener, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    struct sockaddr_in address = {.sin_family = AF_INET, .sin_port = htons((uint16_t)atoi(argv[1]))};
    address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (bind(listener, (struct sockaddr *)&address, sizeof address) < 0 || listen(listener, 128) < 0) {
        perror("listen");
        return 1;
    }
    int epoll_fd = epoll_create1(EPOLL_CLOEXEC);
    watch(epoll_fd, EPOLL_CTL_ADD, listener, EPOLLIN);
    struct epoll_event events[64];
    char scratch[16384];
    for (;;) {
        int count = epoll_wait(epoll_fd, events, 64, -1);
        for (int i = 0; i < count; i++) {
            int fd = events[i].data.fd;
            if (fd == listener) {
                int client;
                while ((client = accept4(listener, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC)) >= 0) {
                    if (client >= MAX_FDS) {
                        close(client);
                        continue;
                    }
                    responding[client] = 0;
                    setsockopt(client, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
                    watch(epoll_fd, EPOLL_CTL_ADD, client, EPOLLIN);
                }
                continue;
            }
            if (!responding[fd]) {
                ssize_t got = recv(fd, scratch, sizeof scratch, 0);
                if (got < 0 && errno == EAGAIN) continue;
                if (got <= 0) {
                    close(fd);
                    continue;
                }
                responding[fd] = 1;
                sent[fd] = 0;
            }
            while (responding[fd]) {
                ssize_t wrote;
                size_t body_sent = sent[fd] > head_length ? sent[fd] - head_length : 0;
                if (body_fd >= 0 && sent[fd] < head_length) {
                    wrote = send(fd, head + sent[fd], head_length - sent[fd], MSG_NOSIGNAL | MSG_MORE);
                } else if (body_fd >= 0) {
                    off_t offset = (off_t)body_sent;
                    wrote = sendfile(fd, body_fd, &offset, body_length - body_sent);
                } else {
                    struct iovec parts[2];
                    int used = 0;
                    if (sent[fd] < head_length) parts[used++] = (struct iovec){head + sent[fd], head_length - sent[fd]};
                    parts[used++] = (struct iovec){body + body_sent, body_length - body_sent};
                    struct msghdr message = {.msg_iov = parts, .msg_iovlen = (size_t)used};
                    wrote = sendmsg(fd, &message, MSG_NOSIGNAL);
                }
                if (wrote < 0) {
                    if (errno == EAGAIN) {
                        watch(epoll_fd, EPOLL_CTL_MOD, fd, EPOLLOUT);
                        break;
                    }
                    responding[fd] = 0;
                    close(fd);
                    break;
                }
                sent[fd] += (size_t)wrote;
                if (sent[fd] == total) {
                    responding[fd] = 0;
                    if (events[i].events & EPOLLOUT) watch(epoll_fd, EPOLL_CTL_MOD, fd, EPOLLIN);
                }
            }
        }
    }
}
