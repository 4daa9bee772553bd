/* Assertions for the C tests: a failed check prints where, errno and
 * rmmap_strerror_last(), and ends the process with status 1. */
#ifndef RMMAP_TEST_CHECK_H
#define RMMAP_TEST_CHECK_H

#include <arpa/inet.h>
#include <dirent.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "fmmap.h"
#include "rmmap.h"

#define CHECK(cond)                                                                  \
    do {                                                                             \
        if (!(cond)) {                                                               \
            int e_ = errno;                                                          \
            fprintf(stderr, "%s:%d: check failed: %s (errno %d %s; last error: %s)\n", \
                    __FILE__, __LINE__, #cond, e_, strerror(e_), rmmap_strerror_last()); \
            exit(1);                                                                 \
        }                                                                            \
    } while (0)

/* A call that must fail with -1 (or MAP_FAILED) and errno `want`. */
#define CHECK_ERRNO(call_failed, want)                                               \
    do {                                                                             \
        errno = 0;                                                                   \
        int failed_ = (call_failed);                                                 \
        int e_ = errno;                                                              \
        if (!failed_ || e_ != (want)) {                                              \
            fprintf(stderr, "%s:%d: expected failure with %s, got %s errno %d (%s); last error: %s\n", \
                    __FILE__, __LINE__, #want, failed_ ? "failure" : "success", e_,  \
                    strerror(e_), rmmap_strerror_last());                            \
            exit(1);                                                                 \
        }                                                                            \
        printf("  %-14s %s\n", #want, rmmap_strerror_last());                       \
    } while (0)

/* A call of rmmap.h that must succeed. */
#define OK(call) CHECK((call) == RMMAP_OK)

/* A call of rmmap.h that must fail with `code`. */
#define FAILS(call, code)                                                            \
    do {                                                                             \
        rmmap_error r_ = (call);                                                     \
        if (r_ != (code)) {                                                          \
            fprintf(stderr, "%s:%d: %s gave %s, expected %s (%s)\n", __FILE__, __LINE__, \
                    #call, rmmap_error_name(r_), rmmap_error_name(code), rmmap_strerror_last()); \
            exit(1);                                                                 \
        }                                                                            \
        printf("  %-24s %s\n", #code, rmmap_strerror_last());                       \
    } while (0)

/* The file location of `path` on 127.0.0.1:`port`. */
static inline fileloc_t loc(int port, const char *path) {
    fileloc_t l;
    memset(&l, 0, sizeof l);
    l.ipaddress.s_addr = htonl(INADDR_LOOPBACK);
    l.port = port;
    l.pathname = (char *)path;
    return l;
}

/* How many TCP connections (or listeners) this process has open: its
 * sockets of the internet families, from /proc/self/fd. (Tokio's signal
 * handling keeps a Unix socket pair, which does not count.) */
static inline int count_sockets(void) {
    DIR *d = opendir("/proc/self/fd");
    CHECK(d != NULL);
    int n = 0;
    struct dirent *e;
    char path[512], target[512];
    while ((e = readdir(d)) != NULL) {
        if (e->d_name[0] == '.') continue;
        snprintf(path, sizeof path, "/proc/self/fd/%s", e->d_name);
        ssize_t len = readlink(path, target, sizeof target - 1);
        if (len <= 0) continue;
        target[len] = 0;
        if (strncmp(target, "socket:", 7) != 0) continue;
        int domain = 0;
        socklen_t size = sizeof domain;
        if (getsockopt(atoi(e->d_name), SOL_SOCKET, SO_DOMAIN, &domain, &size) == 0 &&
            (domain == AF_INET || domain == AF_INET6))
            n++;
    }
    closedir(d);
    return n;
}

/* Waits up to 5 s for this process to have `want` sockets open. */
static inline int wait_for_sockets(int want) {
    int n = count_sockets();
    for (int i = 0; i < 500 && n != want; i++) {
        usleep(10000);
        n = count_sockets();
    }
    return n;
}

#endif
