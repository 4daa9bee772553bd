/* The seed's scenario: several processes, on one machine or on several,
 * modify the same remote file with the four calls of fmmap.h, and each sees
 * what the others wrote.
 *
 *   seed_scenario HOST PORT PATH WORKERS          fork WORKERS workers here
 *   seed_scenario HOST PORT PATH WORKERS --id N   be worker N only: run one
 *                                                 per machine, N = 0..WORKERS-1
 *
 * PATH must exist on the server and hold WORKERS * 64 bytes, for example
 * `truncate -s 4096 /srv/export/scenario.bin` next to `rmmap serve /srv/export`.
 * Each worker maps the file, writes its record into slot N (64 bytes at
 * N * 64), reads the file until every worker's record is there (the file is
 * their meeting point), prints what it saw, and unmaps: its record is then on
 * the server's disk.
 *
 *   cargo build --release -p rmmap-c
 *   cc capi/examples/seed_scenario.c -I capi/include -L target/release -lrmmap \
 *      -Wl,-rpath,target/release -o seed_scenario
 *   ./seed_scenario 127.0.0.1 7878 scenario.bin 4
 */
#include <arpa/inet.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "fmmap.h"

#define SLOT 64

static int worker(fileloc_t where, int id, int workers) {
    void *file = rmmap(where, 0);
    if (file == MAP_FAILED) {
        fprintf(stderr, "worker %d: rmmap: %s (%s)\n", id, strerror(errno), rmmap_strerror_last());
        return 1;
    }
    char host[64] = "?", record[SLOT];
    gethostname(host, sizeof host - 1);
    memset(record, 0, sizeof record);
    snprintf(record, sizeof record, "worker %d pid %d on %.24s", id, (int)getpid(), host);
    if (mwrite(file, (off_t)id * SLOT, record, SLOT) != SLOT) {
        fprintf(stderr, "worker %d: mwrite: %s (%s)\n", id, strerror(errno), rmmap_strerror_last());
        return 1;
    }
    /* Wait, for up to a minute, until every worker's record is there. */
    char all[SLOT * 64];
    size_t len = (size_t)workers * SLOT;
    time_t give_up = time(NULL) + 60;
    for (;;) {
        ssize_t n = mread(file, 0, all, len);
        if (n != (ssize_t)len) {
            fprintf(stderr, "worker %d: mread: %s (%s)\n", id, n < 0 ? strerror(errno) : "short",
                    rmmap_strerror_last());
            return 1;
        }
        int seen = 0;
        for (int w = 0; w < workers; w++) seen += strncmp(all + w * SLOT, "worker ", 7) == 0;
        if (seen == workers) break;
        if (time(NULL) > give_up) {
            fprintf(stderr, "worker %d: saw only %d of %d workers\n", id, seen, workers);
            return 1;
        }
        usleep(1000);
    }
    for (int w = 0; w < workers; w++) printf("worker %d sees: %.*s\n", id, SLOT, all + w * SLOT);
    fflush(stdout);
    /* Writes back and syncs: the record is on the server's disk. */
    if (rmunmap(file) != 0) {
        fprintf(stderr, "worker %d: rmunmap: %s (%s)\n", id, strerror(errno), rmmap_strerror_last());
        return 1;
    }
    return 0;
}

int main(int argc, char **argv) {
    if (argc != 5 && !(argc == 7 && strcmp(argv[5], "--id") == 0)) {
        fprintf(stderr, "usage: %s HOST PORT PATH WORKERS [--id N]\n", argv[0]);
        return 2;
    }
    fileloc_t where;
    memset(&where, 0, sizeof where);
    if (inet_pton(AF_INET, argv[1], &where.ipaddress) != 1) {
        fprintf(stderr, "%s is not an IPv4 address\n", argv[1]);
        return 2;
    }
    where.port = atoi(argv[2]);
    where.pathname = argv[3];
    int workers = atoi(argv[4]);
    if (workers < 1 || workers > 64) {
        fprintf(stderr, "WORKERS must be 1 to 64\n");
        return 2;
    }
    if (argc == 7) return worker(where, atoi(argv[6]), workers);

    /* Start with empty slots, so that old records do not count. */
    void *file = rmmap(where, 0);
    if (file == MAP_FAILED) {
        fprintf(stderr, "rmmap: %s (%s)\n", strerror(errno), rmmap_strerror_last());
        return 1;
    }
    char zeros[SLOT * 64] = {0};
    if (mwrite(file, 0, zeros, (size_t)workers * SLOT) != (ssize_t)workers * SLOT || rmunmap(file) != 0) {
        fprintf(stderr, "clearing the slots: %s (%s)\n", strerror(errno), rmmap_strerror_last());
        return 1;
    }
    fflush(stdout);
    for (int id = 0; id < workers; id++) {
        pid_t pid = fork();
        if (pid < 0) return 1;
        if (pid == 0) _exit(worker(where, id, workers));
    }
    int failed = 0, status;
    while (wait(&status) > 0) failed += !(WIFEXITED(status) && WEXITSTATUS(status) == 0);
    printf("%d workers, %d failed\n", workers, failed);
    return failed ? 1 : 0;
}
