/* A counter shared by processes on any number of machines: rmmap_fetch_add
 * runs at the server, atomically with every other client's operations, so
 * no increment is lost.
 *
 *   counter ADDR PATH PROCESSES INCREMENTS
 *
 * Creates PATH if missing (8 bytes: a little-endian 64-bit word), forks
 * PROCESSES processes, each with its own connection, each adding 1
 * INCREMENTS times, and prints the value before and after. Exits 1 unless it
 * grew by exactly PROCESSES * INCREMENTS (run it on several machines at once
 * and each sees its own share, and the total, go in).
 *
 *   cargo build --release -p rmmap-c
 *   cc capi/examples/counter.c $(pkg-config --cflags --libs capi/rmmap.pc) \
 *      -Wl,-rpath,target/release -o counter
 *   ./counter 127.0.0.1:7878 counter.bin 4 1000
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <unistd.h>

#include "rmmap.h"

static int fail(const char *what, rmmap_error e) {
    fprintf(stderr, "%s: %s: %s\n", what, rmmap_error_name(e), rmmap_strerror_last());
    return 1;
}

static int add(const char *addr, const char *path, long increments) {
    rmmap_client *client;
    rmmap_mapping *word;
    rmmap_error e = rmmap_connect(addr, NULL, &client);
    if (e != RMMAP_OK) return fail("connect", e);
    e = rmmap_map(client, path, 0, 8, RMMAP_MAP_READ_WRITE, &word);
    if (e != RMMAP_OK) return fail("map", e);
    for (long i = 0; i < increments; i++) {
        e = rmmap_fetch_add(word, 0, 1, NULL);
        if (e != RMMAP_OK) return fail("fetch_add", e);
    }
    if ((e = rmmap_unmap(word)) != RMMAP_OK) return fail("unmap", e);
    if ((e = rmmap_close(client)) != RMMAP_OK) return fail("close", e);
    return 0;
}

int main(int argc, char **argv) {
    if (argc != 5) {
        fprintf(stderr, "usage: %s ADDR PATH PROCESSES INCREMENTS\n", argv[0]);
        return 2;
    }
    const char *addr = argv[1], *path = argv[2];
    long processes = atol(argv[3]), increments = atol(argv[4]);

    rmmap_client *client;
    rmmap_mapping *word;
    rmmap_error e = rmmap_connect(addr, NULL, &client);
    if (e != RMMAP_OK) return fail("connect", e);
    /* Creates the file, or extends a shorter one with zeros. */
    e = rmmap_map(client, path, 0, 8, RMMAP_MAP_READ_WRITE | RMMAP_MAP_CREATE, &word);
    if (e != RMMAP_OK) return fail("map", e);
    uint64_t before, after;
    if ((e = rmmap_read(word, 0, &before, 8)) != RMMAP_OK) return fail("read", e);

    fflush(stdout);
    for (long p = 0; p < processes; p++) {
        pid_t pid = fork();
        if (pid < 0) return 1;
        /* Handles do not survive fork: each child connects for itself. */
        if (pid == 0) _exit(add(addr, path, increments));
    }
    int failed = 0, status;
    while (wait(&status) > 0) failed += !(WIFEXITED(status) && WEXITSTATUS(status) == 0);

    if ((e = rmmap_read(word, 0, &after, 8)) != RMMAP_OK) return fail("read", e);
    if ((e = rmmap_sync(word)) != RMMAP_OK) return fail("sync", e);
    printf("counter: %" PRIu64 " -> %" PRIu64 " (%ld processes x %ld increments, %d failed)\n", before,
           after, processes, increments, failed);
    rmmap_unmap(word);
    rmmap_close(client);
    return !failed && after - before == (uint64_t)(processes * increments) ? 0 : 1;
}
