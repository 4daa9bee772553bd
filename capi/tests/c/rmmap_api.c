/* The full API of rmmap.h: options, mapping kinds, reads, writes, sync, set
 * length, the remote atomics, memory mappings as pointers, every error code
 * it can meet, two clients on their own connections seeing each other (the
 * second given a list of addresses whose first does not answer, as a
 * client of a cluster is).
 *
 * usage: rmmap_api PORT CLOSED_PORT
 * data.bin: 10000 bytes, byte i = i % 251. */
#include <stdint.h>

#include "check.h"

int main(int argc, char **argv) {
    CHECK(argc == 3);
    char addr[64], closed[64], members[160], buf[256];
    snprintf(addr, sizeof addr, "127.0.0.1:%s", argv[1]);
    snprintf(closed, sizeof closed, "127.0.0.1:%s", argv[2]);
    snprintf(members, sizeof members, "%s,%s", closed, addr);

    rmmap_options *o = rmmap_options_new();
    CHECK(o != NULL);
    OK(rmmap_options_set_connect_timeout_ms(o, 5000));
    OK(rmmap_options_set_give_up_ms(o, 10000));
    FAILS(rmmap_options_set_token_file(o, "/nonexistent/token"), RMMAP_CONFIG);
    FAILS(rmmap_options_set_tls_name(o, "example.org"), RMMAP_INVALID_ARGUMENT);
    FAILS(rmmap_options_set_tls_ca_file(o, NULL), RMMAP_INVALID_ARGUMENT);
    rmmap_client *c, *c2, *none = NULL;
    OK(rmmap_connect(addr, o, &c));
    OK(rmmap_connect(members, NULL, &c2));
    rmmap_options_free(o);
    FAILS(rmmap_connect(closed, NULL, &none), RMMAP_CONNECT_FAILED);
    CHECK(none == NULL);
    FAILS(rmmap_connect(NULL, NULL, &none), RMMAP_INVALID_ARGUMENT);

    /* Create a file, map it read-write. */
    OK(rmmap_set_len(c, "api.bin", 8192, true));
    rmmap_mapping *m, *m2, *x = NULL;
    OK(rmmap_map(c, "api.bin", 0, 8192, RMMAP_MAP_READ_WRITE, &m));
    CHECK(rmmap_mapping_len(m) == 8192 && rmmap_mapping_file_len(m) == 8192);
    CHECK(rmmap_mapping_ptr(m) == NULL);
    OK(rmmap_write(m, 4090, "hello, world", 12));
    OK(rmmap_read(m, 4090, buf, 12));
    CHECK(memcmp(buf, "hello, world", 12) == 0);
    OK(rmmap_sync(m));

    /* Another client, on its own connection, sees it at once. */
    OK(rmmap_map(c2, "api.bin", 4096, 4096, RMMAP_MAP_READ_ONLY, &m2));
    OK(rmmap_read(m2, 0, buf, 6));
    CHECK(memcmp(buf, " world", 6) == 0);
    OK(rmmap_write(m, 4096, "W", 1));
    OK(rmmap_read(m2, 0, buf, 1));
    CHECK(buf[0] == 'W');

    /* The remote atomics. */
    uint64_t prev = 99;
    bool done = false;
    OK(rmmap_fetch_add(m, 16, 5, &prev));
    CHECK(prev == 0);
    OK(rmmap_fetch_add(m, 16, 5, &prev));
    CHECK(prev == 5);
    OK(rmmap_swap(m, 16, 42, &prev));
    CHECK(prev == 10);
    OK(rmmap_compare_exchange(m, 16, 41, 7, &prev, &done));
    CHECK(prev == 42 && !done);
    OK(rmmap_compare_exchange(m, 16, 42, 7, &prev, &done));
    CHECK(prev == 42 && done);
    OK(rmmap_fetch_add(m, 16, 1, NULL));
    uint64_t word;
    rmmap_mapping *whole;
    OK(rmmap_map(c2, "api.bin", 0, 8192, RMMAP_MAP_READ_ONLY, &whole));
    OK(rmmap_read(whole, 16, &word, 8));
    CHECK(word == 8);

    /* Errors. */
    FAILS(rmmap_read(m, 8190, buf, 4), RMMAP_OUT_OF_RANGE);
    FAILS(rmmap_write(m, 9000, buf, 1), RMMAP_OUT_OF_RANGE);
    FAILS(rmmap_fetch_add(m, 3, 1, &prev), RMMAP_MISALIGNED);
    FAILS(rmmap_write(whole, 0, "x", 1), RMMAP_READ_ONLY);
    FAILS(rmmap_fetch_add(whole, 0, 1, &prev), RMMAP_READ_ONLY);
    FAILS(rmmap_map(c, "missing.bin", 0, 1, RMMAP_MAP_READ_ONLY, &x), RMMAP_NOT_FOUND);
    FAILS(rmmap_map(c, "../outside.bin", 0, 1, RMMAP_MAP_READ_ONLY, &x), RMMAP_BAD_PATH);
    FAILS(rmmap_map(c, "escape", 0, 1, RMMAP_MAP_READ_ONLY, &x), RMMAP_DENIED);
    FAILS(rmmap_map(c, "dir", 0, 1, RMMAP_MAP_READ_ONLY, &x), RMMAP_NOT_A_FILE);
    FAILS(rmmap_map(c, "data.bin", 9000, 2000, RMMAP_MAP_READ_ONLY, &x), RMMAP_OUT_OF_RANGE);
    FAILS(rmmap_map(c, "data.bin", 0, 1, 0x100, &x), RMMAP_INVALID_ARGUMENT);
    FAILS(rmmap_map(NULL, "data.bin", 0, 1, 0, &x), RMMAP_INVALID_ARGUMENT);
    FAILS(rmmap_map(c, NULL, 0, 1, 0, &x), RMMAP_INVALID_ARGUMENT);
    FAILS(rmmap_map(c, "data.bin", 0, 1, 0, NULL), RMMAP_INVALID_ARGUMENT);
    FAILS(rmmap_read(m, 0, NULL, 1), RMMAP_INVALID_ARGUMENT);
    FAILS(rmmap_read(NULL, 0, buf, 1), RMMAP_INVALID_ARGUMENT);
    CHECK(x == NULL);
    CHECK(strcmp(rmmap_error_name(RMMAP_NOT_FOUND), "not_found") == 0);
    CHECK(strcmp(rmmap_error_name(RMMAP_SESSION_LOST), "session_lost") == 0);
    CHECK(strcmp(rmmap_error_name(12345), "unknown") == 0);
    CHECK(RMMAP_NOT_FOUND == 5 && RMMAP_MISALIGNED == 22); /* the wire numbers */

    /* Create with the mapping; read-only data.bin as it is. */
    rmmap_mapping *created, *data;
    OK(rmmap_map(c, "created.bin", 0, 100, RMMAP_MAP_READ_WRITE | RMMAP_MAP_CREATE, &created));
    CHECK(rmmap_mapping_file_len(created) == 100);
    OK(rmmap_map(c, "data.bin", 9990, 10, RMMAP_MAP_READ_ONLY, &data));
    OK(rmmap_read(data, 0, buf, 10));
    for (int i = 0; i < 10; i++) CHECK(buf[i] == (char)((9990 + i) % 251));

    /* Memory mappings, where they work. */
    rmmap_error mem = rmmap_memory_supported();
    if (mem == RMMAP_OK) {
        OK(rmmap_set_len(c, "mem.bin", 16384, true));
        rmmap_mapping *mm;
        OK(rmmap_map(c, "mem.bin", 0, 16384, RMMAP_MAP_READ_WRITE | RMMAP_MAP_MEMORY, &mm));
        volatile char *p = rmmap_mapping_ptr(mm);
        CHECK(p != NULL && ((uintptr_t)p % 4096) == 0);
        p[5000] = 'M'; /* a plain store */
        rmmap_mapping *other;
        OK(rmmap_map(c2, "mem.bin", 0, 16384, RMMAP_MAP_READ_WRITE, &other));
        OK(rmmap_read(other, 5000, buf, 1)); /* the other client sees it */
        CHECK(buf[0] == 'M');
        OK(rmmap_write(other, 8000, "from c2", 7));
        CHECK(memcmp((const char *)p + 8000, "from c2", 7) == 0); /* a plain load */
        OK(rmmap_fetch_add(other, 24, 3, NULL));
        CHECK(((volatile uint64_t *)p)[3] == 3);
        OK(rmmap_fetch_add(mm, 24, 4, &prev));
        CHECK(prev == 3 && ((volatile uint64_t *)p)[3] == 7);
        OK(rmmap_write(mm, 100, "copied", 6)); /* rmmap_write on memory */
        CHECK(memcmp((const char *)p + 100, "copied", 6) == 0);
        OK(rmmap_read(mm, 8000, buf, 7));
        CHECK(memcmp(buf, "from c2", 7) == 0);
        OK(rmmap_sync(mm));
        FAILS(rmmap_map(c, "mem.bin", 100, 10, RMMAP_MAP_MEMORY, &x), RMMAP_UNSUPPORTED);
        OK(rmmap_unmap(other));
        OK(rmmap_unmap(mm));
        printf("  memory mappings: ok\n");
    } else {
        CHECK(mem == RMMAP_NO_MEMORY_MAPPINGS);
        printf("  memory mappings not available here: %s\n", rmmap_strerror_last());
        FAILS(rmmap_map(c, "data.bin", 0, 4096, RMMAP_MAP_MEMORY, &x), RMMAP_NO_MEMORY_MAPPINGS);
    }

    OK(rmmap_unmap(data));
    OK(rmmap_unmap(created));
    OK(rmmap_unmap(whole));
    OK(rmmap_unmap(m2));
    OK(rmmap_unmap(m));
    OK(rmmap_unmap(NULL));
    /* Closing a client: its mappings' operations fail with RMMAP_CLOSED. */
    OK(rmmap_map(c2, "api.bin", 0, 10, RMMAP_MAP_READ_ONLY, &m2));
    OK(rmmap_close(c2));
    FAILS(rmmap_read(m2, 0, buf, 1), RMMAP_CLOSED);
    rmmap_error unmapped = rmmap_unmap(m2); /* freed either way */
    CHECK(unmapped == RMMAP_OK || unmapped == RMMAP_CLOSED);
    OK(rmmap_close(c));
    OK(rmmap_close(NULL));
    printf("rmmap_api: ok\n");
    return 0;
}
