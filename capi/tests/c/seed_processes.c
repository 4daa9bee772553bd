/* Two processes, each with its own connection, see each other's writes. The
 * parent maps before it forks: the child cannot use that mapping (mappings
 * do not survive fork), and maps for itself on a connection of its own. The
 * child's last write survives its exit without rmunmap.
 *
 * usage: seed_processes PORT
 * procs.bin: 8192 zero bytes. */
#include <sys/wait.h>

#include "check.h"

static void send_token(int fd, char c) { CHECK(write(fd, &c, 1) == 1); }
static void wait_token(int fd, char want) {
    char c = 0;
    CHECK(read(fd, &c, 1) == 1 && c == want);
}

int main(int argc, char **argv) {
    CHECK(argc == 2);
    int port = atoi(argv[1]);
    char buf[64];
    int to_child[2], to_parent[2];
    CHECK(pipe(to_child) == 0 && pipe(to_parent) == 0);

    void *m = rmmap(loc(port, "procs.bin"), 0);
    CHECK(m != MAP_FAILED);
    CHECK(count_sockets() == 1);
    fflush(stdout);
    pid_t pid = fork();
    CHECK(pid >= 0);
    if (pid == 0) {
        /* The child: the parent's socket is inherited, its mapping is not. */
        CHECK(count_sockets() == 1);
        CHECK_ERRNO(mread(m, 0, buf, 1) == -1, EINVAL);
        void *c = rmmap(loc(port, "procs.bin"), 0);
        CHECK(c != MAP_FAILED);
        CHECK(count_sockets() == 2); /* its own connection */
        wait_token(to_child[0], '1');
        CHECK(mread(c, 100, buf, 12) == 12);
        CHECK(memcmp(buf, "parent wrote", 12) == 0);
        /* Across the page boundary at 4096. */
        CHECK(mwrite(c, 4090, "child wrote!", 12) == 12);
        send_token(to_parent[1], '2');
        wait_token(to_child[0], '3');
        CHECK(mread(c, 100, buf, 13) == 13);
        CHECK(memcmp(buf, "parent again!", 13) == 0);
        /* A last write, and exit without rmunmap: exit writes it back. */
        CHECK(mwrite(c, 200, "written at exit", 15) == 15);
        exit(0);
    }
    CHECK(mwrite(m, 100, "parent wrote", 12) == 12);
    send_token(to_child[1], '1');
    wait_token(to_parent[0], '2');
    CHECK(mread(m, 4090, buf, 12) == 12);
    CHECK(memcmp(buf, "child wrote!", 12) == 0);
    CHECK(mwrite(m, 100, "parent again!", 13) == 13);
    send_token(to_child[1], '3');
    int status;
    CHECK(waitpid(pid, &status, 0) == pid);
    CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0);
    CHECK(mread(m, 200, buf, 15) == 15);
    CHECK(memcmp(buf, "written at exit", 15) == 0);
    CHECK(rmunmap(m) == 0);
    CHECK(wait_for_sockets(0) == 0);
    printf("seed_processes: ok\n");
    return 0;
}
