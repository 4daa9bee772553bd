/* A server killed and restarted, then killed for good.
 *
 * usage: seed_restart PORT, with RMMAP_GIVE_UP_MS longer than a restart
 * takes. It prints
 * "kill" and waits for "restarted" on stdin (the harness kills the server
 * with SIGKILL and starts it again on the same port and directory), then
 * "kill-for-good" and waits for "killed".
 * clean.bin and dirty.bin: 1 MiB of zeros each. */
#include "check.h"

static void ask(const char *what, const char *answer) {
    char line[64];
    printf("%s\n", what);
    fflush(stdout);
    CHECK(fgets(line, sizeof line, stdin) != NULL);
    CHECK(strncmp(line, answer, strlen(answer)) == 0);
}

int main(int argc, char **argv) {
    CHECK(argc == 2);
    int port = atoi(argv[1]);
    char buf[64];

    /* clean.bin: written and synced (rmunmap), then mapped again and read. */
    void *a = rmmap(loc(port, "clean.bin"), 0);
    CHECK(a != MAP_FAILED);
    CHECK(mwrite(a, 0, "synced", 6) == 6);
    CHECK(rmunmap(a) == 0);
    a = rmmap(loc(port, "clean.bin"), 0);
    CHECK(a != MAP_FAILED);
    CHECK(mread(a, 0, buf, 6) == 6 && memcmp(buf, "synced", 6) == 0);
    /* dirty.bin: written, never synced. */
    void *d = rmmap(loc(port, "dirty.bin"), 0);
    CHECK(d != MAP_FAILED);
    CHECK(mwrite(d, 0, "unsynced", 8) == 8);

    ask("kill", "restarted");
    /* The new server has no session for this client. A mapping without
     * unsynced writes carries on (mapped again, revalidated): */
    CHECK(mread(a, 0, buf, 6) == 6 && memcmp(buf, "synced", 6) == 0);
    CHECK(mwrite(a, 10, "after", 5) == 5);
    CHECK(mread(a, 10, buf, 5) == 5 && memcmp(buf, "after", 5) == 0);
    /* The one with unsynced writes says so: */
    CHECK_ERRNO(mread(d, 0, buf, 8) == -1, EIO);
    CHECK(strstr(rmmap_strerror_last(), "dirty.bin") != NULL);
    /* Once: then it goes on with the server's bytes (issue 19), in memory
     * mappings too (the lost page is fetched again). */
    CHECK(mread(d, 0, buf, 8) == 8 && memcmp(buf, "\0\0\0\0\0\0\0\0", 8) == 0);
    CHECK(mwrite(d, 0, "x", 1) == 1);
    CHECK(rmunmap(d) == 0);
    CHECK_ERRNO(rmunmap(d) == -1, EINVAL);
    /* Mapped again, it works. */
    d = rmmap(loc(port, "dirty.bin"), 0);
    CHECK(d != MAP_FAILED);
    CHECK(mwrite(d, 0, "again", 5) == 5);
    CHECK(rmunmap(d) == 0);
    CHECK(count_sockets() == 1);

    /* A new client (the last mapping closes the old one) with a short
     * give-up time: RMMAP_GIVE_UP_MS is read when a client connects. */
    CHECK(rmunmap(a) == 0);
    CHECK(wait_for_sockets(0) == 0);
    setenv("RMMAP_GIVE_UP_MS", "1500", 1);
    a = rmmap(loc(port, "clean.bin"), 0);
    CHECK(a != MAP_FAILED);
    CHECK(mread(a, 10, buf, 5) == 5 && memcmp(buf, "after", 5) == 0);

    ask("kill-for-good", "killed");
    /* No server: a read that needs it fails once the client has been
     * disconnected for its give-up time, rather than wait forever. */
    CHECK_ERRNO(mread(a, 900000, buf, 8) == -1, ENOTCONN);
    CHECK_ERRNO(mwrite(a, 900000, "x", 1) == -1, ENOTCONN);
    /* rmunmap cannot sync: it says so, and frees the mapping anyway. */
    CHECK_ERRNO(rmunmap(a) == -1, ENOTCONN);
    CHECK_ERRNO(rmunmap(a) == -1, EINVAL);
    CHECK(wait_for_sockets(0) == 0);
    CHECK_ERRNO(rmmap(loc(port, "clean.bin"), 0) == MAP_FAILED, ECONNREFUSED);
    printf("seed_restart: ok\n");
    return 0;
}
