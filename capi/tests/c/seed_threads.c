/* Four threads of one process share one connection: each maps the same
 * file, writes its own word and reads the others', concurrently; the
 * process has one socket while they do, and none once all have unmapped.
 *
 * usage: seed_threads PORT
 * threads.bin: 4096 zero bytes. */
#include <pthread.h>
#include <stdint.h>

#include "check.h"

#define THREADS 4
#define ROUNDS 300

static int port;
static pthread_barrier_t mapped, checked;

static void *run(void *arg) {
    long id = (long)arg;
    /* A mapping from this thread's own word, and one of the whole file
     * (the same address in every thread where memory mappings are used:
     * each rmunmap ends one of them). */
    void *mine = rmmap(loc(port, "threads.bin"), id * 8);
    void *all = rmmap(loc(port, "threads.bin"), 0);
    CHECK(mine != MAP_FAILED && all != MAP_FAILED);
    pthread_barrier_wait(&mapped);
    pthread_barrier_wait(&checked);
    uint64_t last[THREADS] = {0};
    for (uint64_t round = 1; round <= ROUNDS; round++) {
        CHECK(mwrite(mine, 0, &round, 8) == 8);
        for (int other = 0; other < THREADS; other++) {
            uint64_t v;
            CHECK(mread(all, other * 8, &v, 8) == 8);
            /* Every word only grows: a read never goes back in time, and
             * sees this thread's own write. */
            CHECK(v >= last[other]);
            last[other] = v;
            if (other == id) CHECK(v == round);
        }
    }
    pthread_barrier_wait(&mapped);
    CHECK(rmunmap(mine) == 0);
    CHECK(rmunmap(all) == 0);
    return NULL;
}

int main(int argc, char **argv) {
    CHECK(argc == 2);
    port = atoi(argv[1]);
    CHECK(count_sockets() == 0);
    pthread_barrier_init(&mapped, NULL, THREADS + 1);
    pthread_barrier_init(&checked, NULL, THREADS + 1);
    pthread_t t[THREADS];
    for (long i = 0; i < THREADS; i++) CHECK(pthread_create(&t[i], NULL, run, (void *)i) == 0);
    pthread_barrier_wait(&mapped);
    /* Eight mappings, made concurrently by four threads: one connection. */
    int during = count_sockets();
    CHECK(during == 1);
    pthread_barrier_wait(&checked);
    pthread_barrier_wait(&mapped);
    CHECK(count_sockets() == 1); /* still, after 4 x 300 x 5 calls from four threads at once */
    for (int i = 0; i < THREADS; i++) pthread_join(t[i], NULL);
    /* Every mapping unmapped: the connection closed. */
    CHECK(wait_for_sockets(0) == 0);

    /* The final words, as a new mapping sees them. */
    void *m = rmmap(loc(port, "threads.bin"), 0);
    CHECK(m != MAP_FAILED);
    for (int i = 0; i < THREADS; i++) {
        uint64_t v;
        CHECK(mread(m, i * 8, &v, 8) == 8);
        CHECK(v == ROUNDS);
    }
    CHECK(rmunmap(m) == 0);
    printf("seed_threads: %d threads, %d sockets while mapped, ok\n", THREADS, during);
    return 0;
}
