#define _GNU_SOURCE
#include "CWhisperLinux.h"

#include <errno.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>

/* landlock(7). The numbers are the same on every architecture (the generic syscall table). */
enum { SYS_LANDLOCK_CREATE_RULESET = 444, SYS_LANDLOCK_ADD_RULE = 445 };
enum { LANDLOCK_CREATE_RULESET_VERSION = 1 };
enum { LANDLOCK_RULE_PATH_BENEATH = 1, LANDLOCK_RULE_NET_PORT = 2 };

struct ruleset_attr {
    uint64_t handled_access_fs;
    uint64_t handled_access_net; /* ABI 4 */
    uint64_t scoped;             /* ABI 6 */
};

struct path_beneath_attr {
    uint64_t allowed_access;
    int32_t parent_fd;
} __attribute__((packed));

struct net_port_attr {
    uint64_t allowed_access;
    uint64_t port;
};

int whisper_landlock_abi(void)
{
    long abi = syscall(SYS_LANDLOCK_CREATE_RULESET, NULL, (size_t)0, LANDLOCK_CREATE_RULESET_VERSION);
    return abi < 0 ? 0 : (int)abi;
}

int whisper_landlock_create_ruleset(uint64_t handled_fs, uint64_t handled_net, uint64_t scoped)
{
    struct ruleset_attr attr;
    memset(&attr, 0, sizeof attr);
    attr.handled_access_fs = handled_fs;
    attr.handled_access_net = handled_net;
    attr.scoped = scoped;
    /* An older kernel takes the larger struct as long as the fields it does not know are zero,
       which the caller guarantees by masking with what the ABI has. */
    size_t size = scoped ? sizeof attr : handled_net ? offsetof(struct ruleset_attr, scoped) : sizeof attr.handled_access_fs;
    return (int)syscall(SYS_LANDLOCK_CREATE_RULESET, &attr, size, 0U);
}

int whisper_landlock_allow_path(int ruleset_fd, int parent_fd, uint64_t access)
{
    struct path_beneath_attr attr = { .allowed_access = access, .parent_fd = parent_fd };
    return (int)syscall(SYS_LANDLOCK_ADD_RULE, ruleset_fd, LANDLOCK_RULE_PATH_BENEATH, &attr, 0U);
}

int whisper_landlock_allow_port(int ruleset_fd, uint64_t port, uint64_t access)
{
    struct net_port_attr attr = { .allowed_access = access, .port = port };
    return (int)syscall(SYS_LANDLOCK_ADD_RULE, ruleset_fd, LANDLOCK_RULE_NET_PORT, &attr, 0U);
}
