/* test_tls_records.c - a crdt.v1 session over wss:// whose records come many to one write, as a
 * server reading several records per read (gateway/loop.c: SSL_read of marked sessions) sees
 * them: a tampered record closes the session at once and nothing from it on is applied, a
 * close_notify behind applies in the same write closes the session, and the node keeps serving. The
 * client is OpenSSL's on a blocking socket; to place several records (and a tampered or closing
 * one) in one write it has them written into a memory BIO first.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#include <openssl/bio.h>
#include <openssl/err.h>
#include <openssl/ssl.h>

#include "http_client.h"
#include "tap.h"

typedef struct {
    int fd;
    SSL *ssl;
    char in[1 << 16];
    size_t len;
} conn_t;

static SSL_CTX *ctx;

/* Reads into c->in until it holds needle (0), or the connection ends or 10 s pass (-1). */
static int read_until(conn_t *c, const char *needle)
{
    for (;;) {
        if (memmem(c->in, c->len, needle, strlen(needle)))
            return 0;
        if (c->len == sizeof(c->in))
            return -1;
        int r = SSL_read(c->ssl, c->in + c->len, (int)(sizeof(c->in) - c->len));
        if (r <= 0) {
            ERR_clear_error();
            return -1;
        }
        c->len += (size_t)r;
    }
}

/* Whether the server ends the connection within 10 s (an alert, a close_notify or EOF), reading
 * and dropping whatever comes before. */
static bool ends(conn_t *c)
{
    for (;;) {
        int r = SSL_read(c->ssl, c->in, (int)sizeof(c->in));
        if (r > 0)
            continue;
        int e = SSL_get_error(c->ssl, r);
        ERR_clear_error();
        return e != SSL_ERROR_WANT_READ; /* the receive timeout reads as WANT_READ */
    }
}

static int conn_open(conn_t *c, int port)
{
    memset(c, 0, sizeof(*c));
    c->fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    struct timeval tv = {.tv_sec = 10};
    setsockopt(c->fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
    int one = 1;
    setsockopt(c->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    if (connect(c->fd, (struct sockaddr *)&a, sizeof(a)))
        return -1;
    c->ssl = SSL_new(ctx);
    SSL_set_fd(c->ssl, c->fd);
    SSL_set_tlsext_host_name(c->ssl, "localhost");
    SSL_set1_host(c->ssl, "localhost");
    if (SSL_connect(c->ssl) != 1) {
        ERR_print_errors_fp(stderr);
        return -1;
    }
    return 0;
}

static void conn_close(conn_t *c)
{
    if (c->ssl)
        SSL_free(c->ssl);
    if (c->fd >= 0)
        close(c->fd);
    c->ssl = NULL, c->fd = -1;
}

/* A masked client text frame of s at f (room for 14 + strlen(s)); its length. */
static size_t frame(unsigned char *f, const char *s)
{
    size_t n = strlen(s), h = 0;
    f[h++] = 0x81;
    if (n < 126) {
        f[h++] = (unsigned char)(0x80 | n);
    } else {
        f[h++] = 0x80 | 126;
        f[h++] = (unsigned char)(n >> 8);
        f[h++] = (unsigned char)n;
    }
    static const unsigned char mask[4] = {9, 8, 7, 6};
    memcpy(f + h, mask, 4);
    h += 4;
    for (size_t i = 0; i < n; i++)
        f[h + i] = (unsigned char)s[i] ^ mask[i % 4];
    return h + n;
}

static int write_text(conn_t *c, const char *s)
{
    unsigned char f[600];
    size_t n = frame(f, s);
    return SSL_write(c->ssl, f, (int)n) == (int)n ? 0 : -1;
}

/* A session past its hello: 0 or -1. */
static int session(conn_t *c, int port)
{
    if (conn_open(c, port))
        return -1;
    const char *up = "GET / HTTP/1.1\r\nHost: localhost\r\nUpgrade: websocket\r\n"
                     "Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
                     "Sec-WebSocket-Version: 13\r\nSec-WebSocket-Protocol: crdt.v1\r\n\r\n";
    if (SSL_write(c->ssl, up, (int)strlen(up)) <= 0 || read_until(c, "\r\n\r\n") ||
        !memmem(c->in, c->len, " 101 ", 5))
        return -1;
    c->len = 0;
    if (write_text(c, "{\"type\":\"hello\",\"client\":\"records\",\"cursor\":0}") ||
        read_until(c, "welcome"))
        return -1;
    c->len = 0;
    return 0;
}

/* Where each TLS record of b[0..n) starts; how many there are. */
static int records(const unsigned char *b, size_t n, size_t *at, int max)
{
    int k = 0;
    for (size_t i = 0; i + 5 <= n && k < max; k++) {
        at[k] = i;
        i += 5 + (((size_t)b[i + 3] << 8) | b[i + 4]);
    }
    return k;
}

/* Writes count applies (pncounter incr on key, ids from id0), a record each, then, with
 * close_notify, the TLS close, all in one write to the socket; with tamper >= 0 the last byte of
 * record tamper (counted from the first apply) is flipped. 0 or -1. */
static int burst(conn_t *c, const char *key, int id0, int count, int tamper, bool close_notify)
{
    BIO *sock = SSL_get_wbio(c->ssl), *mem = BIO_new(BIO_s_mem());
    if (!mem || !BIO_up_ref(sock))
        return -1;
    SSL_set0_wbio(c->ssl, mem); /* drops the reference the SSL had; ours keeps sock */
    int rc = 0;
    char m[256];
    for (int i = 0; i < count && !rc; i++) {
        snprintf(m, sizeof(m),
                 "{\"type\":\"apply\",\"id\":%d,\"key\":\"%s\",\"op\":{\"type\":\"pncounter\","
                 "\"op\":\"incr\",\"by\":1}}",
                 id0 + i, key);
        rc = write_text(c, m);
    }
    if (!rc && close_notify)
        SSL_shutdown(c->ssl);
    char *p = NULL;
    long n = BIO_get_mem_data(mem, &p);
    unsigned char *b = n > 0 ? malloc((size_t)n) : NULL;
    if (b)
        memcpy(b, p, (size_t)n);
    SSL_set0_wbio(c->ssl, sock); /* frees mem, takes our reference */
    if (rc || !b) {
        free(b);
        return -1;
    }
    size_t at[512];
    int k = records(b, (size_t)n, at, 512);
    if (k != count + (close_notify ? 1 : 0))
        rc = -1;
    if (!rc && tamper >= 0 && tamper < k)
        b[(tamper + 1 < k ? at[tamper + 1] : (size_t)n) - 1] ^= 0x5a;
    if (!rc && send(c->fd, b, (size_t)n, 0) != n)
        rc = -1;
    free(b);
    return rc;
}

/* The counter's value through a fresh session's HTTPS GET (-1 when it cannot be read). */
static long counter(int port, const char *key)
{
    conn_t c;
    long v = -1;
    if (conn_open(&c, port) == 0) {
        char req[256];
        snprintf(req, sizeof(req),
                 "GET /v1/keys/%s HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n", key);
        if (SSL_write(c.ssl, req, (int)strlen(req)) > 0 && read_until(&c, "}") == 0) {
            c.in[c.len < sizeof(c.in) ? c.len : sizeof(c.in) - 1] = '\0';
            char *q = strstr(c.in, "\"value\":");
            if (q)
                v = strtol(q + 8, NULL, 10);
        }
    }
    conn_close(&c);
    return v;
}

int main(void)
{
    signal(SIGPIPE, SIG_IGN);
    char *dir = test_tmpdir();
    char cmd[2048], cert[1100], key[1100], ca[1100];
    snprintf(cmd, sizeof(cmd), "sh '%s' '%s/pki' localhost >/dev/null", TLS_CERTS_SH, dir);
    if (system(cmd))
        bail_out("cannot make certificates");
    snprintf(cert, sizeof(cert), "%s/pki/localhost.pem", dir);
    snprintf(key, sizeof(key), "%s/pki/localhost.key", dir);
    snprintf(ca, sizeof(ca), "%s/pki/ca.pem", dir);
    crdtd_proc_t srv;
    const char *args[] = {"--no-persist", "--tls-cert", cert, "--tls-key", key, NULL};
    if (crdtd_start(&srv, CRDTD_BIN, dir, args))
        bail_out("crdtd with TLS did not start");
    ctx = SSL_CTX_new(TLS_client_method());
    SSL_CTX_load_verify_locations(ctx, ca, NULL);
    SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, NULL);

    /* 40 applies in one write: every one acked */
    conn_t c;
    ok(session(&c, srv.port) == 0, "a wss:// session is welcomed");
    ok(burst(&c, "many", 1, 40, -1, false) == 0, "40 applies written at once, a record each");
    ok(read_until(&c, "\"id\":40,") == 0, "the last of them is acked");
    is_int(counter(srv.port, "many"), 40, "and the counter holds 40");
    conn_close(&c);

    /* 30 good records, a tampered one, 20 good ones, in one write */
    ok(session(&c, srv.port) == 0, "a second session is welcomed");
    ok(burst(&c, "tamper", 1, 51, 30, false) == 0, "51 applies written at once, the 31st tampered");
    ok(ends(&c), "the session is closed");
    conn_close(&c);
    /* (applies that had not run when their session went are dropped with it: not acked, the
     * client retries them; so up to 30 may be there) */
    long v = counter(srv.port, "tamper");
    ok(v <= 30, "nothing from the tampered record on is applied (%ld)", v);

    /* the tampered record first: nothing of the write is applied */
    ok(session(&c, srv.port) == 0, "a third session is welcomed");
    ok(burst(&c, "first", 1, 10, 0, false) == 0, "10 applies written at once, the first tampered");
    ok(ends(&c), "the session is closed");
    conn_close(&c);
    ok(counter(srv.port, "first") <= 0, "nothing is applied");

    /* a close_notify behind 25 applies in the same write */
    ok(session(&c, srv.port) == 0, "a fourth session is welcomed");
    ok(burst(&c, "closing", 1, 25, -1, true) == 0, "25 applies and the TLS close in one write");
    ok(ends(&c), "the session is closed");
    conn_close(&c);
    v = counter(srv.port, "closing");
    ok(v <= 25, "no more than the 25 applies (%ld)", v);

    ok(session(&c, srv.port) == 0 && write_text(&c, "{\"type\":\"ping\"}") == 0 &&
           read_until(&c, "pong") == 0,
       "the node still serves sessions");
    conn_close(&c);

    SSL_CTX_free(ctx);
    ok(crdtd_stop(&srv, SIGTERM, 5000) == 0, "crdtd stops cleanly");
    rm_rf(dir);
    free(dir);
    return done_testing();
}
