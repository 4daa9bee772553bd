/* Connecting with options: TLS trusting a CA file, a token file, the name
 * the certificate must carry; and the seed's calls configured the same way
 * from the environment. Every wrong setting is refused with a message.
 *
 * usage: tls_and_tokens PORT CA OTHER_CA TOKEN STRANGER_TOKEN
 * The server on PORT speaks TLS with a certificate from CA (for localhost and
 * 127.0.0.1) and admits only the client of TOKEN. data.bin: 10000 bytes,
 * byte i = i % 251. */
#include "check.h"

static rmmap_error connect_with(const char *addr, const char *ca, const char *token,
                                const char *name, rmmap_client **c) {
    rmmap_options *o = rmmap_options_new();
    OK(rmmap_options_set_connect_timeout_ms(o, 5000));
    if (ca) OK(rmmap_options_set_tls_ca_file(o, ca));
    if (name) OK(rmmap_options_set_tls_name(o, name));
    if (token) OK(rmmap_options_set_token_file(o, token));
    rmmap_error e = rmmap_connect(addr, o, c);
    rmmap_options_free(o);
    return e;
}

int main(int argc, char **argv) {
    CHECK(argc == 6);
    const char *ca = argv[2], *other_ca = argv[3], *token = argv[4], *stranger = argv[5];
    char addr[64], local[64], buf[16];
    snprintf(addr, sizeof addr, "127.0.0.1:%s", argv[1]);
    snprintf(local, sizeof local, "localhost:%s", argv[1]);

    /* The right CA and token: in. */
    rmmap_client *c = NULL;
    rmmap_mapping *m;
    OK(connect_with(addr, ca, token, NULL, &c));
    OK(rmmap_map(c, "data.bin", 0, 10000, RMMAP_MAP_READ_WRITE, &m));
    OK(rmmap_read(m, 250, buf, 2));
    CHECK(buf[0] == (char)(250 % 251) && buf[1] == 0);
    OK(rmmap_write(m, 0, "tls", 3));
    OK(rmmap_unmap(m));
    OK(rmmap_close(c));
    /* By another name the certificate carries. */
    OK(connect_with(local, ca, token, NULL, &c));
    OK(rmmap_close(c));
    OK(connect_with(addr, ca, token, "localhost", &c));
    OK(rmmap_close(c));

    /* Everything else: refused, and said why. */
    c = NULL;
    FAILS(connect_with(addr, ca, NULL, NULL, &c), RMMAP_HANDSHAKE_FAILED);        /* no token */
    FAILS(connect_with(addr, ca, stranger, NULL, &c), RMMAP_HANDSHAKE_FAILED);    /* unknown client */
    FAILS(connect_with(addr, other_ca, token, NULL, &c), RMMAP_HANDSHAKE_FAILED); /* wrong CA */
    FAILS(connect_with(addr, ca, token, "example.org", &c), RMMAP_HANDSHAKE_FAILED); /* wrong name */
    FAILS(connect_with(addr, NULL, token, NULL, &c), RMMAP_HANDSHAKE_FAILED);     /* no TLS */
    CHECK(c == NULL);

    /* The seed's calls, configured from the environment. */
    setenv("RMMAP_TLS_CA_FILE", ca, 1);
    setenv("RMMAP_TOKEN_FILE", token, 1);
    void *s = rmmap(loc(atoi(argv[1]), "data.bin"), 0);
    CHECK(s != MAP_FAILED);
    CHECK(mread(s, 0, buf, 3) == 3 && memcmp(buf, "tls", 3) == 0);
    CHECK(mwrite(s, 3, "+seed", 5) == 5);
    CHECK(rmunmap(s) == 0);
    setenv("RMMAP_TOKEN_FILE", stranger, 1); /* credentials the server denies */
    CHECK_ERRNO(rmmap(loc(atoi(argv[1]), "data.bin"), 0) == MAP_FAILED, EACCES);
    setenv("RMMAP_TOKEN_FILE", "/nonexistent/token", 1);
    CHECK_ERRNO(rmmap(loc(atoi(argv[1]), "data.bin"), 0) == MAP_FAILED, EINVAL);
    setenv("RMMAP_TOKEN_FILE", token, 1);
    setenv("RMMAP_GIVE_UP_MS", "soon", 1);
    CHECK_ERRNO(rmmap(loc(atoi(argv[1]), "data.bin"), 0) == MAP_FAILED, EINVAL);
    printf("tls_and_tokens: ok\n");
    return 0;
}
