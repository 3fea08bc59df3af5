/* bench_tls.c - crdt.v1 apply+ack round trips over wss:// against ws:// in the same run: two crdtd
 * processes (--no-persist), one with --tls-cert/--tls-key, each driven by the same client
 * (OpenSSL or a plain socket under one framing loop) with a window of W applies in flight; runs
 * alternate between the two and the medians are compared (ratio wss / ws, target >= 0.8).
 *
 *   bench_tls CRDTD_BIN TLS_CERTS_SH [--runs 5] [--secs 2] [--window 16] [--coalesce] [--pin]
 *             [--ciphersuites TLS_CHACHA20_POLY1305_SHA256] [--crdtc]
 *
 * --coalesce: the client writes the applies that answer acks which came together in one write
 * (one TLS record), as a pipelining client would; without it, one write (record) per apply.
 * --crdtc: the client is the project's own, the crdtc library (gateway/client), on one loop per
 * scheme (a TLS loop trusting the CA made here for wss://): each ack's callback makes the next
 * apply, and crdtc writes the applies queued in a turn as one write (one TLS record), so this is
 * the figure a crdtc application gets. Without it the client is the hand-written one below
 * (--ciphersuites then applies to it only; crdtc's TLS is lws's defaults).
 * --pin (2+ CPUs): the client on CPU 0, the servers on CPU 1; on a machine shared with other
 * work this is noisier than letting the scheduler move them, so it is off by default.
 */
#define _GNU_SOURCE
#include <sched.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <arpa/inet.h>
#include <openssl/err.h>
#include <openssl/ssl.h>

#include "http_client.h"
#ifdef BENCH_TLS_CRDTC
#include "crdtc.h"
#endif

typedef struct conn {
    int fd;
    SSL *ssl; /* NULL: cleartext */
    unsigned char buf[1 << 16];
    size_t len;
} conn_t;

static double now_s(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + (double)t.tv_nsec / 1e9;
}

static int io_write(conn_t *c, const void *p, size_t n)
{
    size_t at = 0;
    while (at < n) {
        int w = c->ssl ? SSL_write(c->ssl, (const char *)p + at, (int)(n - at))
                       : (int)send(c->fd, (const char *)p + at, n - at, 0);
        if (w <= 0)
            return -1;
        at += (size_t)w;
    }
    return 0;
}

static int io_read(conn_t *c)
{
    if (c->len == sizeof(c->buf))
        return -1;
    int r = c->ssl ? SSL_read(c->ssl, c->buf + c->len, (int)(sizeof(c->buf) - c->len))
                   : (int)recv(c->fd, c->buf + c->len, sizeof(c->buf) - c->len, 0);
    if (r <= 0)
        return -1;
    c->len += (size_t)r;
    return 0;
}

/* Drops one whole server frame (unmasked, payload < 64K) if the buffer holds one: 0, 1 when it
 * does not (yet), -1 on a frame this client does not read. */
static int take_frame(conn_t *c)
{
    if (c->len < 2)
        return 1;
    size_t pl = c->buf[1] & 0x7f, hl = 2;
    if (pl == 126) {
        if (c->len < 4)
            return 1;
        hl = 4;
        pl = ((size_t)c->buf[2] << 8) | c->buf[3];
    } else if (pl == 127) {
        return -1;
    }
    if (c->len < hl + pl)
        return 1;
    memmove(c->buf, c->buf + hl + pl, c->len - hl - pl);
    c->len -= hl + pl;
    return 0;
}

/* Waits for one whole server frame and drops it; 0 or -1. */
static int read_frame(conn_t *c)
{
    for (;;) {
        int r = take_frame(c);
        if (r <= 0)
            return r;
        if (io_read(c))
            return -1;
    }
}

/* Frames the text s as a masked client frame at f (room for 4 + 4 + 400 bytes); its length, or 0
 * when s is too long. */
static size_t frame_text(unsigned char *f, const char *s)
{
    size_t n = strlen(s), hl = 0;
    if (n > 400)
        return 0;
    f[hl++] = 0x81;
    if (n < 126) {
        f[hl++] = (unsigned char)(0x80 | n);
    } else {
        f[hl++] = 0x80 | 126;
        f[hl++] = (unsigned char)(n >> 8);
        f[hl++] = (unsigned char)n;
    }
    static const unsigned char mask[4] = {1, 2, 3, 4};
    memcpy(f + hl, mask, 4);
    hl += 4;
    for (size_t i = 0; i < n; i++)
        f[hl + i] = (unsigned char)s[i] ^ mask[i % 4];
    return hl + n;
}

static int send_text(conn_t *c, const char *s)
{
    unsigned char f[512];
    size_t n = frame_text(f, s);
    return n ? io_write(c, f, n) : -1;
}

static int conn_open(conn_t *c, int port, SSL_CTX *ctx)
{
    memset(c, 0, sizeof(*c));
    c->fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    int one = 1;
    setsockopt(c->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    if (connect(c->fd, (struct sockaddr *)&a, sizeof(a)))
        return -1;
    if (ctx) {
        c->ssl = SSL_new(ctx);
        SSL_set_fd(c->ssl, c->fd);
        SSL_set_tlsext_host_name(c->ssl, "localhost");
        SSL_set1_host(c->ssl, "localhost");
        if (SSL_connect(c->ssl) != 1) {
            ERR_print_errors_fp(stderr);
            return -1;
        }
        static bool said;
        if (!said) { /* what the server chose, once */
            said = true;
            printf("wss:// session: %s %s\n", SSL_get_version(c->ssl), SSL_get_cipher_name(c->ssl));
        }
    }
    char up[400];
    snprintf(up, sizeof(up),
             "GET / HTTP/1.1\r\nHost: localhost\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
             "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n"
             "Sec-WebSocket-Protocol: crdt.v1\r\n\r\n");
    if (io_write(c, up, strlen(up)))
        return -1;
    for (;;) { /* the 101's headers */
        unsigned char *e = memmem(c->buf, c->len, "\r\n\r\n", 4);
        if (e) {
            size_t hl = (size_t)(e - c->buf) + 4;
            if (!memmem(c->buf, hl, " 101 ", 5))
                return -1;
            memmove(c->buf, c->buf + hl, c->len - hl);
            c->len -= hl;
            break;
        }
        if (io_read(c))
            return -1;
    }
    if (send_text(c, "{\"type\":\"hello\",\"client\":\"bench-tls\",\"cursor\":0}") ||
        read_frame(c))
        return -1;
    return 0;
}

static void conn_close(conn_t *c)
{
    if (c->ssl) {
        SSL_shutdown(c->ssl);
        SSL_free(c->ssl);
    }
    close(c->fd);
}

/* Applies per second over `secs`, window applies in flight, each acked. */
static double run(int port, SSL_CTX *ctx, double secs, int window, bool coalesce,
                  unsigned long *ops_out)
{
    conn_t c;
    static unsigned long next_id = 1;
    if (conn_open(&c, port, ctx)) {
        fprintf(stderr, "bench_tls: cannot open a session on %d\n", port);
        return 0;
    }
    char m[256];
    unsigned long sent = 0, acked = 0;
    double t0 = now_s(), end = t0 + secs;
    for (int i = 0; i < window; i++, sent++) {
        snprintf(m, sizeof(m),
                 "{\"type\":\"apply\",\"id\":%lu,\"key\":\"Y291bnRlcg==\",\"op\":{\"type\":"
                 "\"pncounter\",\"op\":\"incr\",\"by\":1}}",
                 next_id++);
        send_text(&c, m);
    }
    static unsigned char out[256 * 512];
    while (now_s() < end) {
        if (read_frame(&c))
            break;
        /* one apply for each ack: written one at a time (a record each over TLS), or with
         * --coalesce, one write for the acks that came together */
        int k = 1;
        while (coalesce && k < window && take_frame(&c) == 0)
            k++;
        acked += (unsigned long)k;
        size_t at = 0;
        for (int i = 0; i < k; i++, sent++) {
            snprintf(m, sizeof(m),
                     "{\"type\":\"apply\",\"id\":%lu,\"key\":\"Y291bnRlcg==\",\"op\":{\"type\":"
                     "\"pncounter\",\"op\":\"incr\",\"by\":1}}",
                     next_id++);
            if (!coalesce) {
                send_text(&c, m);
                continue;
            }
            at += frame_text(out + at, m);
        }
        if (at && io_write(&c, out, at))
            break;
    }
    double dt = now_s() - t0;
    while (acked < sent && !read_frame(&c))
        acked++;
    conn_close(&c);
    *ops_out = acked;
    return (double)acked / dt;
}

#ifdef BENCH_TLS_CRDTC
/* ---- the crdtc client (--crdtc) ------------------------------------------------------------- */

typedef struct cb_state {
    json_t *op;
    const char *key;
    unsigned long sent, acked;
    bool refill; /* keep the window full (off while draining) */
    bool failed;
} cb_state_t;

static void cb_ack(crdtc_t *c, const crdtc_ack_t *a, void *ud)
{
    (void)a;
    cb_state_t *st = ud;
    st->acked++;
    /* the next apply at once: those answering one read of acks go out in one write */
    if (st->refill && crdtc_apply_op(c, st->key, strlen(st->key), st->op) > 0)
        st->sent++;
}

static void cb_error(crdtc_t *c, uint64_t id, const char *code, const char *msg, void *ud)
{
    (void)c, (void)id;
    ((cb_state_t *)ud)->failed = true;
    fprintf(stderr, "bench_tls: crdtc error %s: %s\n", code, msg ? msg : "");
}

static void cb_close(crdtc_t *c, int code, const char *reason, bool again, void *ud)
{
    (void)c, (void)again;
    ((cb_state_t *)ud)->failed = true;
    fprintf(stderr, "bench_tls: crdtc closed %d %s\n", code, reason ? reason : "");
}

/* Applies per second over `secs` through crdtc on loop l (TLS or not), window in flight. */
static double run_crdtc(crdtc_loop_t *l, int port, bool tls, double secs, int window,
                        unsigned long *ops_out)
{
    static int serial;
    char id[32];
    snprintf(id, sizeof(id), "bench-tls-%d", serial++);
    cb_state_t st = {.key = "counter", .refill = true};
    st.op = json_pack("{s:s,s:s,s:i}", "type", "pncounter", "op", "incr", "by", 1);
    crdtc_config_t cfg = {.host = tls ? "localhost" : "127.0.0.1",
                          .port = port,
                          .client_id = id,
                          .tls = tls,
                          .no_reconnect = true,
                          .cb = {.ack_cb = cb_ack, .error_cb = cb_error, .close_cb = cb_close},
                          .ud = &st};
    crdtc_t *c = crdtc_new(l, &cfg, NULL);
    *ops_out = 0;
    if (!c || crdtc_connect(c)) {
        fprintf(stderr, "bench_tls: crdtc cannot connect to %d\n", port);
        crdtc_free(c);
        json_decref(st.op);
        return 0;
    }
    double dl = now_s() + 10;
    while (!crdtc_ready(c) && !st.failed && now_s() < dl)
        crdtc_loop_service(l, 10);
    double t0 = now_s(), end = t0 + secs;
    for (int i = 0; i < window; i++)
        if (crdtc_apply_op(c, st.key, strlen(st.key), st.op) > 0)
            st.sent++;
    while (!st.failed && now_s() < end)
        crdtc_loop_service(l, 10);
    double dt = now_s() - t0;
    st.refill = false;
    dl = now_s() + 10;
    while (!st.failed && st.acked < st.sent && now_s() < dl)
        crdtc_loop_service(l, 10);
    unsigned long acked = st.acked;
    crdtc_free(c);
    for (int i = 0; i < 5; i++) /* the connection's teardown */
        crdtc_loop_service(l, 1);
    json_decref(st.op);
    *ops_out = st.failed ? 0 : acked;
    return st.failed ? 0 : (double)acked / dt;
}
#endif

/* CPU seconds (user + system) the process has used so far, from /proc/PID/stat. */
static double cpu_s(pid_t pid)
{
    char path[64], buf[1024];
    snprintf(path, sizeof(path), "/proc/%d/stat", (int)pid);
    FILE *f = fopen(path, "r");
    size_t n = f ? fread(buf, 1, sizeof(buf) - 1, f) : 0;
    if (f)
        fclose(f);
    buf[n] = '\0';
    char *p = strrchr(buf, ')');
    unsigned long ut = 0, st = 0;
    /* after the command: state, then fields 4..13, then utime (14) and stime (15) */
    if (!p || sscanf(p + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %lu %lu", &ut, &st) != 2)
        return 0;
    return (double)(ut + st) / (double)sysconf(_SC_CLK_TCK);
}

/* The read and write syscalls (syscr + syscw of /proc/PID/io) the process has made so far: with
 * CPU per apply it tells how the applies were batched (a turn's acks go out in one write). The
 * kernel counts read()/write(), which OpenSSL uses, not recv()/send(), which lws uses on a
 * cleartext socket. */
static void io_calls(pid_t pid, double *rd, double *wr)
{
    char path[64], line[128];
    snprintf(path, sizeof(path), "/proc/%d/io", (int)pid);
    FILE *f = fopen(path, "r");
    *rd = *wr = 0;
    while (f && fgets(line, sizeof(line), f)) {
        unsigned long v;
        if (sscanf(line, "syscr: %lu", &v) == 1)
            *rd = (double)v;
        else if (sscanf(line, "syscw: %lu", &v) == 1)
            *wr = (double)v;
    }
    if (f)
        fclose(f);
}

/* The times the process has slept (voluntary context switches, /proc/PID/status): about one
 * per loop turn that waited in poll. */
static double sleeps(pid_t pid)
{
    char path[64], line[128];
    snprintf(path, sizeof(path), "/proc/%d/status", (int)pid);
    FILE *f = fopen(path, "r");
    unsigned long v = 0;
    while (f && fgets(line, sizeof(line), f))
        if (sscanf(line, "voluntary_ctxt_switches: %lu", &v) == 1)
            break;
    if (f)
        fclose(f);
    return (double)v;
}

/* Runs this thread (and what it starts) on CPUs first..last. */
static void pin(int first, int last)
{
    cpu_set_t set;
    CPU_ZERO(&set);
    for (int c = first; c <= last; c++)
        CPU_SET(c, &set);
    sched_setaffinity(0, sizeof(set), &set);
}

/* CPU seconds this process (the client) has used so far. */
static double self_cpu_s(void)
{
    struct rusage u;
    getrusage(RUSAGE_SELF, &u);
    return (double)u.ru_utime.tv_sec + (double)u.ru_utime.tv_usec / 1e6 +
           (double)u.ru_stime.tv_sec + (double)u.ru_stime.tv_usec / 1e6;
}

static int cmp_d(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

int main(int argc, char **argv)
{
    if (argc < 3) {
        fprintf(stderr, "usage: bench_tls CRDTD_BIN TLS_CERTS_SH [--runs N] [--secs S] "
                        "[--window W] [--coalesce] [--pin] [--ciphersuites LIST] [--crdtc]\n");
        return 2;
    }
    int runs = 5, window = 16;
    double secs = 2;
    bool coalesce = false, pinning = false, use_crdtc = false;
    const char *suites = NULL; /* the client's TLS 1.3 suites, in order (the server follows) */
    for (int i = 3; i < argc; i += 2) {
        if (!strcmp(argv[i], "--coalesce")) {
            coalesce = true;
            i--;
        } else if (!strcmp(argv[i], "--crdtc")) {
#ifndef BENCH_TLS_CRDTC
            fprintf(stderr, "bench_tls: built without the crdtc library\n");
            return 2;
#endif
            use_crdtc = true;
            i--;
        } else if (!strcmp(argv[i], "--pin")) {
            pinning = true;
            i--;
        } else if (i + 1 >= argc)
            return 2;
        else if (!strcmp(argv[i], "--runs"))
            runs = atoi(argv[i + 1]);
        else if (!strcmp(argv[i], "--secs"))
            secs = atof(argv[i + 1]);
        else if (!strcmp(argv[i], "--window"))
            window = atoi(argv[i + 1]);
        else if (!strcmp(argv[i], "--ciphersuites"))
            suites = argv[i + 1];
        else {
            fprintf(stderr, "bench_tls: unknown option %s\n", argv[i]);
            return 2;
        }
    }
    if (runs < 1 || runs > 50 || window < 1 || window > 256 || secs <= 0)
        return 2;
    signal(SIGPIPE, SIG_IGN);
    char *dir = test_tmpdir();
    char cmd[2048], cert[1100], key[1100], ca[1100];
    snprintf(cmd, sizeof(cmd), "sh '%s' '%s/pki' localhost", argv[2], dir);
    if (system(cmd)) {
        fprintf(stderr, "bench_tls: cannot make certificates\n");
        return 1;
    }
    snprintf(cert, sizeof(cert), "%s/pki/localhost.pem", dir);
    snprintf(key, sizeof(key), "%s/pki/localhost.key", dir);
    snprintf(ca, sizeof(ca), "%s/pki/ca.pem", dir);
    crdtd_proc_t plain, tls;
    const char *pa[] = {"--no-persist", NULL};
    const char *ta[] = {"--no-persist", "--tls-cert", cert, "--tls-key", key, NULL};
    /* --pin: the servers on CPU 1 (one is busy at a time), the client on CPU 0 */
    long ncpu = sysconf(_SC_NPROCESSORS_ONLN);
    if (pinning && ncpu >= 2)
        pin(1, 1);
    int started = crdtd_start(&plain, argv[1], dir, pa) || crdtd_start(&tls, argv[1], dir, ta);
    if (pinning && ncpu >= 2)
        pin(0, 0);
    if (started) {
        fprintf(stderr, "bench_tls: crdtd did not start\n");
        return 1;
    }
    SSL_CTX *ctx = SSL_CTX_new(TLS_client_method());
    SSL_CTX_load_verify_locations(ctx, ca, NULL);
    SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, NULL);
    if (suites && SSL_CTX_set_ciphersuites(ctx, suites) != 1) {
        fprintf(stderr, "bench_tls: --ciphersuites %s: not a TLS 1.3 suite list\n", suites);
        return 2;
    }

#ifdef BENCH_TLS_CRDTC
    crdtc_loop_t *lplain = use_crdtc ? crdtc_loop_new() : NULL;
    crdtc_loop_t *ltls = use_crdtc ? crdtc_loop_new_tls(ca) : NULL;
    if (use_crdtc && (!lplain || !ltls)) {
        fprintf(stderr, "bench_tls: cannot make crdtc loops\n");
        return 1;
    }
#define RUN(port, ctx_, tls_)                                                                      \
    (use_crdtc ? run_crdtc((tls_) ? ltls : lplain, (port), (tls_), secs, window, &n)              \
               : run((port), (ctx_), secs, window, coalesce, &n))
#else
#define RUN(port, ctx_, tls_) run((port), (ctx_), secs, window, coalesce, &n)
#endif
    double ws[50], wss[50], cws[50], cwss[50], kws[50], kwss[50], rr[50];
    /* per apply: the wss:// server's read and write calls, each server's sleeps */
    double rwss[50], wwss[50], sws[50], swss[50];
    unsigned long n;
    for (int r = 0; r < runs; r++) { /* alternating, so drift on a shared machine hits both */
        double c0 = cpu_s(plain.pid), k0 = self_cpu_s(), s0 = sleeps(plain.pid), r0, w0, r1, w1;
        ws[r] = RUN(plain.port, NULL, false);
        cws[r] = n ? (cpu_s(plain.pid) - c0) * 1e6 / (double)n : 0;
        kws[r] = n ? (self_cpu_s() - k0) * 1e6 / (double)n : 0;
        sws[r] = n ? (sleeps(plain.pid) - s0) / (double)n : 0;
        c0 = cpu_s(tls.pid), k0 = self_cpu_s(), s0 = sleeps(tls.pid);
        io_calls(tls.pid, &r0, &w0);
        wss[r] = RUN(tls.port, ctx, true);
        cwss[r] = n ? (cpu_s(tls.pid) - c0) * 1e6 / (double)n : 0;
        kwss[r] = n ? (self_cpu_s() - k0) * 1e6 / (double)n : 0;
        io_calls(tls.pid, &r1, &w1);
        rwss[r] = n ? (r1 - r0) / (double)n : 0;
        wwss[r] = n ? (w1 - w0) / (double)n : 0;
        swss[r] = n ? (sleeps(tls.pid) - s0) / (double)n : 0;
        rr[r] = ws[r] > 0 ? wss[r] / ws[r] : 0;
        printf("run %d: ws %.0f applies/s (each: CPU server %.1f us, client %.1f us; server "
               "sleeps %.3f), wss %.0f applies/s (%.1f us, %.1f us; %.3f; reads %.3f, writes "
               "%.3f) ratio %.3f\n",
               r + 1, ws[r], cws[r], kws[r], sws[r], wss[r], cwss[r], kwss[r], swss[r], rwss[r],
               wwss[r], ws[r] > 0 ? wss[r] / ws[r] : 0);
    }
    qsort(rr, (size_t)runs, sizeof(double), cmp_d);
    qsort(kws, (size_t)runs, sizeof(double), cmp_d);
    qsort(kwss, (size_t)runs, sizeof(double), cmp_d);
    qsort(ws, (size_t)runs, sizeof(double), cmp_d);
    qsort(wss, (size_t)runs, sizeof(double), cmp_d);
    qsort(cws, (size_t)runs, sizeof(double), cmp_d);
    qsort(cwss, (size_t)runs, sizeof(double), cmp_d);
    double mws = ws[runs / 2], mwss = wss[runs / 2], mc = cws[runs / 2], mct = cwss[runs / 2];
    printf("apply+ack, window %d%s, %d runs of %.1f s: median ws:// %.0f/s, wss:// %.0f/s, "
           "ratio wss/ws %.3f (median of the runs' ratios %.3f); server CPU per apply ws:// %.1f us, wss:// %.1f us, ratio "
           "ws/wss %.3f; client CPU per apply ws:// %.1f us, wss:// %.1f us\n",
           window,
           use_crdtc  ? " (client: crdtc)"
           : coalesce ? " (client coalescing its writes)"
                      : "", runs, secs, mws, mwss, mws > 0 ? mwss / mws : 0, rr[runs / 2], mc, mct,
           mct > 0 ? mc / mct : 0, kws[runs / 2], kwss[runs / 2]);
    SSL_CTX_free(ctx);
#ifdef BENCH_TLS_CRDTC
    crdtc_loop_free(lplain);
    crdtc_loop_free(ltls);
#endif
    crdtd_stop(&plain, SIGTERM, 5000);
    crdtd_stop(&tls, SIGTERM, 5000);
    rm_rf(dir);
    free(dir);
    return 0;
}
