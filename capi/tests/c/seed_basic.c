/* The seed's four calls on one server: reads and writes across pages, short
 * reads and writes at the end, data on the server's disk after rmunmap,
 * every error the header promises, one connection per server.
 *
 * usage: seed_basic PORT READ_ONLY_PORT CLOSED_PORT SILENT_PORT ROOT
 * The harness exports ROOT on PORT (and read-only on READ_ONLY_PORT), listens
 * without ever answering on SILENT_PORT, and puts in ROOT
 * data.bin: 10000 bytes, byte i = i % 251. RMMAP_TEST_MEMORY=1 says memory
 * mappings are in use. */
#include <fcntl.h>

#include "check.h"

static char expected(long i) { return (char)(i % 251); }

int main(int argc, char **argv) {
    CHECK(argc == 6);
    int port = atoi(argv[1]), ro_port = atoi(argv[2]), closed_port = atoi(argv[3]);
    int silent_port = atoi(argv[4]);
    const char *root = argv[5];
    int memory = getenv("RMMAP_TEST_MEMORY") && strcmp(getenv("RMMAP_TEST_MEMORY"), "1") == 0;
    static char buf[20000];

    CHECK(count_sockets() == 0);
    void *m = rmmap(loc(port, "data.bin"), 1000);
    CHECK(m != MAP_FAILED);
    CHECK(count_sockets() == 1);

    /* The mapping runs from offset 1000 to the end: 9000 bytes. */
    CHECK(mread(m, 0, buf, 100) == 100);
    for (int i = 0; i < 100; i++) CHECK(buf[i] == expected(1000 + i));
    CHECK(mread(m, 0, buf, sizeof buf) == 9000);
    for (int i = 0; i < 9000; i++) CHECK(buf[i] == expected(1000 + i));

    /* Short at the end, 0 at or past it. */
    CHECK(mread(m, 8990, buf, 100) == 10);
    for (int i = 0; i < 10; i++) CHECK(buf[i] == expected(9990 + i));
    CHECK(mread(m, 9000, buf, 10) == 0);
    CHECK(mread(m, 50000, buf, 10) == 0);
    CHECK(mwrite(m, 8995, "0123456789", 10) == 5);
    CHECK(mwrite(m, 9000, "x", 1) == 0);

    /* A write across a page boundary (file offset 4090: pages 0 and 1). */
    CHECK(mwrite(m, 3090, "hello, world", 12) == 12);
    memset(buf, 0, 12);
    CHECK(mread(m, 3090, buf, 12) == 12);
    CHECK(memcmp(buf, "hello, world", 12) == 0);

    /* A second mapping of the same file from another offset sees it, on the
     * same connection. */
    void *m2 = rmmap(loc(port, "data.bin"), 4096);
    CHECK(m2 != MAP_FAILED && m2 != m);
    CHECK(mread(m2, 0, buf, 7) == 7);
    CHECK(memcmp(buf, " world", 6) == 0 && buf[6] == expected(4096 + 6));
    CHECK(mread(m2, 5899, buf, 10) == 5);
    CHECK(memcmp(buf, "01234", 5) == 0);
    CHECK(count_sockets() == 1);

    if (memory) {
        /* The address is a real mapping: loads and stores go to the same
         * bytes, coherently with mread and mwrite. */
        CHECK(((volatile char *)m)[3090] == 'h');
        CHECK(((volatile char *)m2)[1] == 'w');
        ((volatile char *)m)[3095] = ';';
        CHECK(mread(m2, 1, buf, 1) == 1 && buf[0] == 'w');
        CHECK(mread(m, 3095, buf, 1) == 1 && buf[0] == ';');
        CHECK(mwrite(m, 3095, ",", 1) == 1);
        CHECK(((volatile char *)m)[3095] == ',');

        /* The file grew since the process mapped it into memory: EBUSY. */
        rmmap_client *c;
        char addr[64];
        snprintf(addr, sizeof addr, "127.0.0.1:%d", port);
        CHECK(rmmap_connect(addr, NULL, &c) == RMMAP_OK);
        CHECK(rmmap_set_len(c, "data.bin", 12000, false) == RMMAP_OK);
        CHECK_ERRNO(rmmap(loc(port, "data.bin"), 0) == MAP_FAILED, EBUSY);
        CHECK(rmmap_close(c) == RMMAP_OK);
    }

    /* Every error of rmmap. */
    CHECK_ERRNO(rmmap(loc(port, "missing.bin"), 0) == MAP_FAILED, ENOENT);
    CHECK_ERRNO(rmmap(loc(port, "../outside.bin"), 0) == MAP_FAILED, EACCES);
    CHECK_ERRNO(rmmap(loc(port, "/etc/passwd"), 0) == MAP_FAILED, EACCES);
    CHECK_ERRNO(rmmap(loc(port, "escape"), 0) == MAP_FAILED, EACCES); /* a symlink out */
    CHECK_ERRNO(rmmap(loc(port, "data.bin"), memory ? 12000 : 10000) == MAP_FAILED, EINVAL);
    CHECK_ERRNO(rmmap(loc(port, "data.bin"), 1 << 30) == MAP_FAILED, EINVAL);
    CHECK_ERRNO(rmmap(loc(port, "data.bin"), -1) == MAP_FAILED, EINVAL);
    CHECK_ERRNO(rmmap(loc(port, NULL), 0) == MAP_FAILED, EINVAL);
    CHECK_ERRNO(rmmap(loc(0, "data.bin"), 0) == MAP_FAILED, EINVAL);
    CHECK_ERRNO(rmmap(loc(closed_port, "data.bin"), 0) == MAP_FAILED, ECONNREFUSED);
    CHECK_ERRNO(rmmap(loc(port, "dir"), 0) == MAP_FAILED, EIO); /* not a file */
    /* A server that accepts the connection but never answers: no call
     * waits longer than the connect timeout. (EHOSTUNREACH, for a host with
     * no route, is mapped the same way and checked in the Rust tests.) */
    setenv("RMMAP_CONNECT_TIMEOUT_MS", "300", 1);
    CHECK_ERRNO(rmmap(loc(silent_port, "data.bin"), 0) == MAP_FAILED, ETIMEDOUT);
    unsetenv("RMMAP_CONNECT_TIMEOUT_MS");
    CHECK(count_sockets() == 1);

    /* Every error of mread and mwrite. */
    CHECK_ERRNO(mread((void *)buf, 0, buf, 1) == -1, EINVAL);
    CHECK_ERRNO(mwrite(NULL, 0, buf, 1) == -1, EINVAL);
    CHECK_ERRNO(mread(m, 0, NULL, 1) == -1, EINVAL);
    CHECK_ERRNO(mwrite(m, 0, NULL, 1) == -1, EINVAL);
    CHECK_ERRNO(mread(m, -5, buf, 1) == -1, EINVAL);
    CHECK(strstr(rmmap_strerror_last(), "negative") != NULL);

    /* rmunmap writes back and syncs: the bytes are in the server's file. */
    CHECK(rmunmap(m2) == 0);
    CHECK(rmunmap(m) == 0);
    CHECK_ERRNO(rmunmap(m) == -1, EINVAL);
    CHECK_ERRNO(mread(m, 0, buf, 1) == -1, EINVAL);
    char path[4096];
    snprintf(path, sizeof path, "%s/data.bin", root);
    int fd = open(path, O_RDONLY);
    CHECK(fd >= 0);
    CHECK(pread(fd, buf, 12, 4090) == 12);
    CHECK(memcmp(buf, "hello, world", 12) == 0);
    CHECK(pread(fd, buf, 5, 9995) == 5);
    CHECK(memcmp(buf, "01234", 5) == 0);
    close(fd);
    /* The process's last mapping on the server: its connection closed. */
    CHECK(wait_for_sockets(0) == 0);

    /* A refused write: the read-only server maps read-only. */
    void *r = rmmap(loc(ro_port, "data.bin"), 4090);
    CHECK(r != MAP_FAILED);
    CHECK(mread(r, 0, buf, 12) == 12);
    CHECK(memcmp(buf, "hello, world", 12) == 0);
    CHECK_ERRNO(mwrite(r, 0, "x", 1) == -1, EROFS);
    CHECK(count_sockets() == 1);
    CHECK(rmunmap(r) == 0);
    CHECK(wait_for_sockets(0) == 0);
    printf("seed_basic: ok\n");
    return 0;
}
