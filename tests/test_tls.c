/* test_tls.c - HTTPS and WSS on crdtd's listeners (--tls-cert, --tls-key): certificates made here
 * with openssl (scripts/tls-certs.sh): a client trusting the CA is served over HTTPS (REST and
 * roshi) and WSS; the wrong CA, an expired certificate and one for another host are refused by
 * the client with the reason; cleartext to the TLS port is refused; the node serves after each bad
 * case; SIGHUP serves a new certificate (and keeps the old one when the new pair is broken), with a
 * WSS session open across it */
#define _GNU_SOURCE /* memmem */
#include "tap.h"

#include <poll.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <curl/curl.h>

#include "http_client.h"

#ifndef CRDTD_BIN
#error "CRDTD_BIN (the crdtd binary) must be defined"
#endif
#ifndef TLS_CERTS_SH
#error "TLS_CERTS_SH (scripts/tls-certs.sh) must be defined"
#endif

static char dir[512];
static char cmd_buf[4096];
static char cert_path[1100], key_path[1100];

typedef struct buf {
    char *p;
    size_t n;
} buf_t;

static size_t collect(void *d, size_t sz, size_t nm, void *ud)
{
    buf_t *b = ud;
    char *q = realloc(b->p, b->n + sz * nm + 1);
    if (!q)
        return 0;
    b->p = q;
    memcpy(b->p + b->n, d, sz * nm);
    b->n += sz * nm;
    b->p[b->n] = '\0';
    return sz * nm;
}

/* One HTTPS request trusting only the CA file ca. Returns the HTTP status (0 when the transfer
 * failed: *rc and err say why); *body (if not NULL) gets the body. */
static long https(const char *host, int port, const char *path, const char *ca, const char *method,
                  const char *data, CURLcode *rc, char *err, char **body)
{
    CURL *c = curl_easy_init();
    char url[512];
    snprintf(url, sizeof(url), "https://%s:%d%s", host, port, path);
    buf_t b = {0};
    err[0] = '\0';
    curl_easy_setopt(c, CURLOPT_URL, url);
    curl_easy_setopt(c, CURLOPT_CAINFO, ca);
    curl_easy_setopt(c, CURLOPT_CAPATH, NULL); /* the CA given only, not the system store */
    curl_easy_setopt(c, CURLOPT_IPRESOLVE, CURL_IPRESOLVE_V4);
    curl_easy_setopt(c, CURLOPT_ERRORBUFFER, err);
    curl_easy_setopt(c, CURLOPT_TIMEOUT, 5L);
    curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, collect);
    curl_easy_setopt(c, CURLOPT_WRITEDATA, &b);
    curl_easy_setopt(c, CURLOPT_CUSTOMREQUEST, method);
    if (data)
        curl_easy_setopt(c, CURLOPT_POSTFIELDS, data);
    *rc = curl_easy_perform(c);
    long st = 0;
    if (*rc == CURLE_OK)
        curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &st);
    curl_easy_cleanup(c);
    if (body)
        *body = b.p;
    else
        free(b.p);
    return st;
}

static bool serves(int port, const char *ca)
{
    CURLcode rc;
    char err[CURL_ERROR_SIZE];
    return https("127.0.0.1", port, "/healthz", ca, "GET", NULL, &rc, err, NULL) == 200;
}

/* A request that must fail verification, with the error text holding want. */
static void refused(int port, const char *host, const char *ca, const char *want,
                    const char *name)
{
    CURLcode rc;
    char err[CURL_ERROR_SIZE];
    long st = https(host, port, "/healthz", ca, "GET", NULL, &rc, err, NULL);
    ok(st == 0 && rc == CURLE_PEER_FAILED_VERIFICATION, "%s: refused by the client (%d)", name,
       (int)rc);
    ok(strstr(err, want) != NULL, "%s: error says \"%s\": %s", name, want, err);
}

static void certs(const char *sub, const char *env, const char *name)
{
    char cmd[4096];
    snprintf(cmd, sizeof(cmd), "%s sh '%s' '%s/%s' %s", env, TLS_CERTS_SH, dir, sub, name);
    if (system(cmd) != 0)
        bail_out("cannot make certificates: %s", cmd);
}

static void serve(const char *sub, const char *name)
{
    char cmd[4096];
    snprintf(cmd, sizeof(cmd), "cp '%s/%s/%s.pem' '%s/cert.pem' && cp '%s/%s/%s.key' '%s/key.pem'",
             dir, sub, name, dir, dir, sub, name, dir);
    if (system(cmd) != 0)
        bail_out("cannot copy %s", name);
}

static int log_count(const char *path, const char *needle)
{
    FILE *f = fopen(path, "r");
    char line[2048];
    int n = 0;
    while (f && fgets(line, sizeof(line), f))
        n += strstr(line, needle) != NULL;
    if (f)
        fclose(f);
    return n;
}

static bool reload(crdtd_proc_t *p, const char *needle)
{
    int before = log_count(p->errlog, needle);
    kill(p->pid, SIGHUP);
    for (int i = 0; i < 250; i++) {
        if (log_count(p->errlog, needle) > before)
            return true;
        usleep(20000);
    }
    return false;
}

/* ---- WebSocket over the TLS connection curl holds (CONNECT_ONLY) ------------------------------ */

static int wait_sock(CURL *c, bool out, int ms)
{
    curl_socket_t fd;
    if (curl_easy_getinfo(c, CURLINFO_ACTIVESOCKET, &fd) != CURLE_OK)
        return -1;
    struct pollfd p = {fd, (short)(out ? POLLOUT : POLLIN), 0};
    return poll(&p, 1, ms);
}

static int send_all(CURL *c, const void *d, size_t n)
{
    size_t at = 0;
    for (int tries = 0; at < n && tries < 200; tries++) {
        size_t w = 0;
        CURLcode rc = curl_easy_send(c, (const char *)d + at, n - at, &w);
        if (rc == CURLE_AGAIN) {
            wait_sock(c, true, 50);
            continue;
        }
        if (rc != CURLE_OK)
            return -1;
        at += w;
    }
    return at == n ? 0 : -1;
}

/* Reads into b until it holds needle; false on timeout or EOF. */
static bool recv_until(CURL *c, buf_t *b, const char *needle, int ms)
{
    for (int waited = 0; waited < ms; waited += 20) {
        if (b->p && memmem(b->p, b->n, needle, strlen(needle)))
            return true;
        char tmp[4096];
        size_t got = 0;
        CURLcode rc = curl_easy_recv(c, tmp, sizeof(tmp), &got);
        if (rc == CURLE_AGAIN) {
            wait_sock(c, false, 20);
            continue;
        }
        if (rc != CURLE_OK || got == 0)
            return false;
        collect(tmp, 1, got, b);
    }
    return false;
}

static int ws_text_frame(CURL *c, const char *s)
{
    size_t n = strlen(s);
    uint8_t f[1024];
    if (n > sizeof(f) - 8)
        return -1;
    size_t hl = 0;
    f[hl++] = 0x81;
    if (n < 126) {
        f[hl++] = (uint8_t)(0x80 | n);
    } else {
        f[hl++] = 0x80 | 126;
        f[hl++] = (uint8_t)(n >> 8);
        f[hl++] = (uint8_t)n;
    }
    const uint8_t mask[4] = {0x12, 0x34, 0x56, 0x78};
    memcpy(f + hl, mask, 4);
    hl += 4;
    for (size_t i = 0; i < n; i++)
        f[hl + i] = (uint8_t)s[i] ^ mask[i % 4];
    return send_all(c, f, hl + n);
}

/* A crdt.v1 session over WSS: upgrade, hello, welcome. NULL on failure. */
static CURL *wss_session(int port, const char *ca)
{
    CURL *c = curl_easy_init();
    char url[128], err[CURL_ERROR_SIZE];
    snprintf(url, sizeof(url), "https://127.0.0.1:%d/", port);
    curl_easy_setopt(c, CURLOPT_URL, url);
    curl_easy_setopt(c, CURLOPT_CAINFO, ca);
    curl_easy_setopt(c, CURLOPT_CAPATH, NULL);
    curl_easy_setopt(c, CURLOPT_CONNECT_ONLY, 1L);
    curl_easy_setopt(c, CURLOPT_ERRORBUFFER, err);
    curl_easy_setopt(c, CURLOPT_TIMEOUT, 5L);
    if (curl_easy_perform(c) != CURLE_OK) {
        diag("wss connect: %s", err);
        curl_easy_cleanup(c);
        return NULL;
    }
    char up[512];
    snprintf(up, sizeof(up),
             "GET / HTTP/1.1\r\nHost: 127.0.0.1:%d\r\nUpgrade: websocket\r\nConnection: "
             "Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: "
             "13\r\nSec-WebSocket-Protocol: crdt.v1\r\n\r\n",
             port);
    buf_t b = {0};
    bool upgraded = !send_all(c, up, strlen(up)) && recv_until(c, &b, "\r\n\r\n", 5000) &&
                    strstr(b.p, " 101 ");
    if (!upgraded)
        diag("wss upgrade answer: %s", b.p ? b.p : "(none)");
    free(b.p);
    b = (buf_t){0};
    bool welcomed = upgraded &&
                    !ws_text_frame(c, "{\"type\":\"hello\",\"client\":\"tls-1\",\"cursor\":0}") &&
                    recv_until(c, &b, "\"welcome\"", 5000);
    if (upgraded && !welcomed)
        diag("wss: no welcome: %zu bytes", b.n);
    free(b.p);
    if (!welcomed) {
        curl_easy_cleanup(c);
        return NULL;
    }
    return c;
}

static bool wss_ping(CURL *c);

/* A masked client frame of opcode op carrying p[0..n), sent with one curl_easy_send (so one TLS
 * write: one record, or records of 16 KiB for a bigger frame). */
static int ws_frame(CURL *c, uint8_t op, const void *p, size_t n)
{
    uint8_t *f = malloc(n + 14);
    if (!f)
        return -1;
    size_t hl = 0;
    f[hl++] = 0x80 | op;
    if (n < 126) {
        f[hl++] = (uint8_t)(0x80 | n);
    } else if (n < 65536) {
        f[hl++] = 0x80 | 126;
        f[hl++] = (uint8_t)(n >> 8);
        f[hl++] = (uint8_t)n;
    } else {
        free(f);
        return -1;
    }
    const uint8_t mask[4] = {0x9a, 0x0b, 0x7c, 0x3d};
    memcpy(f + hl, mask, 4);
    hl += 4;
    for (size_t i = 0; i < n; i++)
        f[hl + i] = ((const uint8_t *)p)[i] ^ mask[i % 4];
    int rc = send_all(c, f, hl + n);
    free(f);
    return rc;
}

/* Counts the occurrences of needle in b. */
static int count_in(const buf_t *b, const char *needle)
{
    int n = 0;
    size_t nl = strlen(needle);
    for (const char *q = b->p; q && (q = memmem(q, b->n - (size_t)(q - b->p), needle, nl)); q++)
        n++;
    return n;
}

/* A burst of applies, each its own TLS record, written before any ack is read: the server reads
 * the records ahead (OpenSSL buffers what poll no longer sees), so every ack must come without
 * the client writing anything more, including after a record that holds only a ping and a
 * message that spans several records. */
static void burst_part(int port, const char *ca)
{
    CURL *c = wss_session(port, ca);
    if (!c) {
        fail("burst: no session");
        return;
    }
    enum { N = 300 };
    bool sent = true;
    char m[256];
    for (int i = 1; i <= N && sent; i++) {
        if (i == N / 2) {
            sent = !ws_frame(c, 0x9, "ping", 4); /* a record with only a control frame */
            continue;
        }
        int len = snprintf(m, sizeof(m),
                           "{\"type\":\"apply\",\"id\":%d,\"key\":\"burst\",\"op\":{\"type\":"
                           "\"pncounter\",\"op\":\"incr\",\"by\":1}}",
                           i);
        if (i == N - 10) {
            /* 40 KB of JSON whitespace: three records */
            static char big[40000 + 256];
            memset(big, ' ', sizeof(big));
            memcpy(big, m, (size_t)len - 1);
            big[sizeof(big) - 1] = '}';
            sent = !ws_frame(c, 0x1, big, sizeof(big));
        } else {
            sent = !ws_frame(c, 0x1, m, (size_t)len);
        }
    }
    ok(sent, "burst: %d applies written, one record each (a ping, a 40 KB one)", N - 1);
    buf_t b = {0};
    char last[64];
    snprintf(last, sizeof(last), "\"id\":%d,", N);
    recv_until(c, &b, last, 10000);
    is_int(count_in(&b, "\"type\":\"ack\""), N - 1,
           "every apply of the burst is acked without the client writing more");
    free(b.p);
    b = (buf_t){0};
    ok(wss_ping(c), "the session answers after the burst");
    curl_easy_cleanup(c);
    char *body = NULL;
    CURLcode rc;
    char err[CURL_ERROR_SIZE];
    https("127.0.0.1", port, "/v1/keys/burst", ca, "GET", NULL, &rc, err, &body);
    char want[32];
    snprintf(want, sizeof(want), "\"value\":%d", N - 1);
    ok(body && strstr(body, want), "the counter holds %d: %s", N - 1, body ? body : "(none)");
    free(body);
}

static bool wss_ping(CURL *c)
{
    buf_t b = {0};
    bool r = !ws_text_frame(c, "{\"type\":\"ping\"}") && recv_until(c, &b, "\"pong\"", 5000);
    free(b.p);
    return r;
}

/* ---- peers over mutual TLS ------------------------------------------------------------------ */

typedef struct node {
    crdtd_proc_t p;
    int id;
} node_t;

/* Starts node id with certificate `cert` of CA dir `sub` (and --peer-ca of CA dir `ca_sub`),
 * dialling the given peers (wss:// URLs, NULL-terminated). */
static int node_start(node_t *n, int id, const char *sub, const char *cert, const char *ca_sub,
                      const char *const *peers, const char *secret)
{
    static char buf[16][1100];
    int b = 0;
    const char *args[48];
    int a = 0;
    n->id = id;
    snprintf(buf[b], sizeof(buf[0]), "%d", id);
    args[a++] = "--node-id", args[a++] = buf[b++];
    snprintf(buf[b], sizeof(buf[0]), "%s/node%d", dir, id);
    args[a++] = "--data-dir", args[a++] = buf[b++];
    snprintf(buf[b], sizeof(buf[0]), "%s/%s/%s.pem", dir, sub, cert);
    args[a++] = "--tls-cert", args[a++] = buf[b];
    args[a++] = "--peer-cert", args[a++] = buf[b++];
    snprintf(buf[b], sizeof(buf[0]), "%s/%s/%s.key", dir, sub, cert);
    args[a++] = "--tls-key", args[a++] = buf[b];
    args[a++] = "--peer-key", args[a++] = buf[b++];
    snprintf(buf[b], sizeof(buf[0]), "%s/%s/ca.pem", dir, ca_sub);
    args[a++] = "--peer-ca", args[a++] = buf[b++];
    args[a++] = "--peer-secret-file", args[a++] = secret;
    args[a++] = "--peer-require-tls";
    args[a++] = "--anti-entropy-interval", args[a++] = "1";
    for (int i = 0; peers && peers[i]; i++)
        args[a++] = "--peer", args[a++] = peers[i];
    args[a] = NULL;
    char ndir[1100];
    snprintf(ndir, sizeof(ndir), "%s/run%d", dir, id);
    mkdir(ndir, 0700);
    return crdtd_start(&n->p, CRDTD_BIN, ndir, args);
}

/* Whether node n shows a peer link up to node `other` in /v1/peers within ms. */
static bool link_up(const node_t *n, int other, const char *ca, int ms)
{
    char want[64];
    snprintf(want, sizeof(want), "\"node_id\":%d,", other);
    for (int waited = 0; waited <= ms; waited += 100) {
        CURLcode rc;
        char err[CURL_ERROR_SIZE];
        char *body = NULL;
        https("127.0.0.1", n->p.port, "/v1/peers", ca, "GET", NULL, &rc, err, &body);
        bool up = false;
        for (const char *q = body; q && (q = strstr(q, want)) != NULL; q++) {
            const char *st = strstr(q, "\"state\":\"");
            const char *next = strstr(q + 1, "\"node_id\":");
            if (st && (!next || st < next) && !strncmp(st + 9, "up\"", 3))
                up = true;
        }
        free(body);
        if (up)
            return true;
        usleep(100000);
    }
    return false;
}

static bool has_value(const node_t *n, const char *key, const char *ca, const char *want,
                      int ms)
{
    char path[256];
    snprintf(path, sizeof(path), "/v1/keys/%s", key);
    for (int waited = 0; waited <= ms; waited += 100) {
        CURLcode rc;
        char err[CURL_ERROR_SIZE];
        char *body = NULL;
        long st = https("127.0.0.1", n->p.port, path, ca, "GET", NULL, &rc, err, &body);
        bool ok = st == 200 && body && strstr(body, want);
        free(body);
        if (ok)
            return true;
        usleep(100000);
    }
    return false;
}

static void peers_part(void)
{
    certs("p", "", "node-1 node-2 node-3 node-5");
    certs("q", "", "node-4");
    char ca_p[1100], ca_q[1100], secret[1100], url[3][64];
    snprintf(ca_p, sizeof(ca_p), "%s/p/ca.pem", dir);
    snprintf(ca_q, sizeof(ca_q), "%s/q/ca.pem", dir);
    snprintf(secret, sizeof(secret), "%s/peer-secret", dir);
    FILE *f = fopen(secret, "w");
    if (f) {
        fputs("a-test-cluster-secret-of-some-length\n", f);
        fclose(f);
    }
    node_t n[8];
    memset(n, 0, sizeof(n));
    if (node_start(&n[1], 1, "p", "node-1", "p", NULL, secret))
        bail_out("node 1 did not start");
    snprintf(url[1], sizeof(url[1]), "wss://127.0.0.1:%d", n[1].p.port);
    const char *p2[] = {url[1], NULL};
    if (node_start(&n[2], 2, "p", "node-2", "p", p2, secret))
        bail_out("node 2 did not start");
    snprintf(url[2], sizeof(url[2]), "wss://127.0.0.1:%d", n[2].p.port);
    const char *p3[] = {url[1], url[2], NULL};
    if (node_start(&n[3], 3, "p", "node-3", "p", p3, secret))
        bail_out("node 3 did not start");
    ok(link_up(&n[1], 2, ca_p, 10000) && link_up(&n[1], 3, ca_p, 10000) &&
           link_up(&n[2], 3, ca_p, 10000),
       "three nodes link up over mutual TLS (wss://, --peer-ca, certificates named node-<id>)");
    CURLcode rc;
    char err[CURL_ERROR_SIZE];
    const char *inc = "{\"type\":\"pncounter\",\"op\":\"incr\",\"by\":1}";
    for (int i = 1; i <= 3; i++)
        for (int k = 0; k < 5; k++)
            https("127.0.0.1", n[i].p.port, "/v1/keys/mtls", ca_p, "POST", inc, &rc, err, NULL);
    bool conv = true;
    for (int i = 1; i <= 3; i++)
        conv &= has_value(&n[i], "mtls", ca_p, "\"value\":15", 10000);
    ok(conv, "writes on every node converge on every node (value 15 everywhere)");
    ok(log_count(n[1].p.errlog, "refused") == 0, "no refusal on the good links");

    /* node 4: a certificate of another CA; node 1 must refuse it (the client-certificate
     * verification callback), and node 4 refuses node 1's (not its --peer-ca) */
    const char *p4[] = {url[1], NULL};
    if (node_start(&n[4], 4, "q", "node-4", "q", p4, secret) == 0) {
        ok(!link_up(&n[1], 4, ca_p, 3000), "a peer with a certificate of another CA gets no link");
        ok(log_count(n[4].p.errlog, "cannot connect") > 0 ||
               log_count(n[4].p.errlog, "refused") > 0,
           "the dialler says it could not connect");
        crdtd_stop(&n[4].p, SIGTERM, 5000);
    } else {
        fail("node 4 did not start");
    }
    /* node 4 again, trusting our CA for the server but presenting the other CA's certificate */
    snprintf(cmd_buf, sizeof(cmd_buf), "cp '%s/p/ca.pem' '%s/q/ca-p.pem'", dir, dir);
    if (system(cmd_buf) != 0)
        bail_out("cp");
    {
        static char b[6][1100];
        snprintf(b[0], sizeof(b[0]), "%s/node4b", dir);
        snprintf(b[1], sizeof(b[1]), "%s/q/node-4.pem", dir);
        snprintf(b[2], sizeof(b[2]), "%s/q/node-4.key", dir);
        snprintf(b[3], sizeof(b[3]), "%s/p/ca.pem", dir);
        const char *a4[] = {"--node-id", "4", "--data-dir", b[0], "--tls-cert", b[1],
                            "--tls-key", b[2], "--peer-cert", b[1], "--peer-key", b[2],
                            "--peer-ca", b[3], "--peer-secret-file", secret, "--peer", url[1],
                            NULL};
        char rdir[1100];
        snprintf(rdir, sizeof(rdir), "%s/run4b", dir);
        mkdir(rdir, 0700);
        int before = log_count(n[1].p.errlog, "certificate refused");
        if (crdtd_start(&n[4].p, CRDTD_BIN, rdir, a4) == 0) {
            ok(!link_up(&n[1], 4, ca_p, 3000),
               "a client certificate of another CA is refused by the server");
            ok(log_count(n[1].p.errlog, "certificate refused") > before,
               "node 1 logs the refused client certificate");
            crdtd_stop(&n[4].p, SIGTERM, 5000);
        } else {
            fail("node 4 (b) did not start");
        }
    }
    /* node 5 presents node-2's certificate (right CA, wrong name) */
    const char *p5[] = {url[1], NULL};
    if (node_start(&n[5], 5, "p", "node-2", "p", p5, secret) == 0) {
        ok(!link_up(&n[1], 5, ca_p, 3000), "a certificate naming another node gets no link");
        ok(log_count(n[1].p.errlog, "does not name node-5") > 0,
           "node 1 says the certificate does not name node-5");
        crdtd_stop(&n[5].p, SIGTERM, 5000);
    } else {
        fail("node 5 did not start");
    }
    /* cleartext: a --peer ws:// to a TLS port gets nothing */
    {
        static char b[2][1100];
        snprintf(b[0], sizeof(b[0]), "%s/node6", dir);
        snprintf(b[1], sizeof(b[1]), "ws://127.0.0.1:%d", n[1].p.port);
        const char *a6[] = {"--node-id", "6", "--data-dir", b[0], "--peer-secret-file", secret,
                            "--peer", b[1], NULL};
        char rdir[1100];
        snprintf(rdir, sizeof(rdir), "%s/run6", dir);
        mkdir(rdir, 0700);
        if (crdtd_start(&n[6].p, CRDTD_BIN, rdir, a6) == 0) {
            ok(!link_up(&n[1], 6, ca_p, 2000), "a cleartext peer gets no link to a TLS node");
            crdtd_stop(&n[6].p, SIGTERM, 5000);
        } else {
            fail("node 6 did not start");
        }
    }
    char errf[1100];
    snprintf(errf, sizeof(errf), "%s/req.err", dir);
    const char *bad[] = {"--listen", "127.0.0.1:0", "--no-persist", "--peer-require-tls",
                         "--tls-cert", cert_path, "--tls-key", key_path, "--peer-secret-file",
                         secret, "--peer", "ws://127.0.0.1:9", NULL};
    ok(crdtd_run(CRDTD_BIN, bad, errf, 10000) != 0 && log_count(errf, "is not wss://") > 0,
       "--peer-require-tls refuses a ws:// peer at start");

    is_int(https("127.0.0.1", n[1].p.port, "/healthz", ca_p, "GET", NULL, &rc, err, NULL), 200,
           "node 1 serves after every refused peer");
    ok(link_up(&n[1], 2, ca_p, 3000) && link_up(&n[1], 3, ca_p, 3000), "and keeps its links");
    for (int i = 1; i <= 3; i++)
        crdtd_stop(&n[i].p, SIGTERM, 5000);
}

int main(void)
{
    signal(SIGPIPE, SIG_IGN);
    curl_global_init(CURL_GLOBAL_DEFAULT);
    char *tmp = test_tmpdir();
    snprintf(dir, sizeof(dir), "%s", tmp);
    certs("a", "", "localhost");
    certs("a", "TLS_START=20200101000000Z TLS_END=20200201000000Z", "expired");
    certs("a", "TLS_ONLY_SAN=DNS:wrong.example", "wronghost");
    certs("b", "", "other");
    char ca_a[1100], ca_b[1100], cert[1100], key[1100], data[1100];
    snprintf(ca_a, sizeof(ca_a), "%s/a/ca.pem", dir);
    snprintf(ca_b, sizeof(ca_b), "%s/b/ca.pem", dir);
    snprintf(cert, sizeof(cert), "%s/cert.pem", dir);
    snprintf(key, sizeof(key), "%s/key.pem", dir);
    snprintf(data, sizeof(data), "%s/data", dir);
    serve("a", "localhost");

    crdtd_proc_t srv;
    const char *args[] = {"--data-dir",     data, "--tls-cert", cert, "--tls-key", key,
                          "--roshi-listen", "127.0.0.1:0", NULL};
    if (crdtd_start(&srv, CRDTD_BIN, dir, args)) {
        rm_rf(dir);
        bail_out("crdtd with TLS did not start");
    }
    CURLcode rc;
    char err[CURL_ERROR_SIZE];
    char *body = NULL;
    is_int(https("127.0.0.1", srv.port, "/healthz", ca_a, "GET", NULL, &rc, err, NULL), 200,
           "HTTPS with the CA: 127.0.0.1 (%s)", err);
    is_int(https("localhost", srv.port, "/healthz", ca_a, "GET", NULL, &rc, err, NULL), 200,
           "HTTPS with the CA: localhost (%s)", err);
    is_int(https("127.0.0.1", srv.port, "/v1/keys/tls", ca_a, "POST",
                 "{\"type\":\"pncounter\",\"op\":\"incr\",\"by\":3}", &rc, err, NULL),
           200, "a REST write over HTTPS");
    is_int(https("127.0.0.1", srv.port, "/v1/keys/tls", ca_a, "GET", NULL, &rc, err, &body), 200,
           "read back over HTTPS");
    ok(body && strstr(body, "\"value\":3"), "with its value: %s", body ? body : "");
    free(body);
    body = NULL;
    is_int(https("127.0.0.1", srv.roshi_port, "/", ca_a, "POST",
                 "[{\"key\":\"a2V5\",\"score\":1,\"member\":\"bTE=\"}]", &rc, err, NULL),
           200, "roshi insert over HTTPS on the roshi listener (%s)", err);
    is_int(https("127.0.0.1", srv.roshi_port, "/", ca_a, "GET", "[\"a2V5\"]", &rc, err, &body),
           200, "roshi select over HTTPS");
    ok(body && strstr(body, "bTE="), "holds the member");
    free(body);

    CURL *ws = wss_session(srv.port, ca_a);
    ok(ws != NULL, "a crdt.v1 session over WSS is welcomed");
    ok(ws && wss_ping(ws), "and answers a ping");
    burst_part(srv.port, ca_a);

    refused(srv.port, "127.0.0.1", ca_b, "unable to get local issuer certificate",
            "another CA");
    ok(serves(srv.port, ca_a), "the node serves after the wrong-CA client");
    hc_resp_t r = {0};
    int hrc = hc_request(srv.port, "GET", "/healthz", NULL, &r);
    ok(hrc != 0 || r.status == 0, "cleartext HTTP to the TLS port gets no HTTP answer (status %d)",
       r.status);
    hc_resp_free(&r);
    r = (hc_resp_t){0};
    hrc = hc_request(srv.roshi_port, "GET", "/healthz", NULL, &r);
    ok(hrc != 0 || r.status == 0, "nor on the roshi TLS port");
    hc_resp_free(&r);
    ok(serves(srv.port, ca_a) && serves(srv.roshi_port, ca_a),
       "the node serves after the cleartext attempts");

#ifdef CRDTC_BIN
    /* the C client over wss:// with --ca */
    {
        char url[64], errf[1100];
        snprintf(url, sizeof(url), "wss://localhost:%d", srv.port);
        snprintf(errf, sizeof(errf), "%s/crdtc.err", dir);
        const char *good[] = {"--url", url, "--ca", ca_a, "--timeout", "5", "apply", "viacli",
                              "{\"type\":\"pncounter\",\"op\":\"incr\",\"by\":7}", NULL};
        is_int(crdtd_run(CRDTC_BIN, good, errf, 10000), 0, "crdtc apply over wss:// with --ca");
        body = NULL;
        https("127.0.0.1", srv.port, "/v1/keys/viacli", ca_a, "GET", NULL, &rc, err, &body);
        ok(body && strstr(body, "\"value\":7"), "the write is there");
        free(body);
        const char *wrong[] = {"--url", url, "--ca", ca_b, "--timeout", "2", "apply", "viacli",
                               "{\"type\":\"pncounter\",\"op\":\"incr\",\"by\":100}",
                               NULL};
        ok(crdtd_run(CRDTC_BIN, wrong, errf, 10000) != 0,
           "crdtc with another CA gets no ack (status 1)");
        body = NULL;
        https("127.0.0.1", srv.port, "/v1/keys/viacli", ca_a, "GET", NULL, &rc, err, &body);
        ok(body && strstr(body, "\"value\":7"), "and wrote nothing");
        free(body);
    }
#endif

    /* reloads */
    serve("a", "expired");
    ok(reload(&srv, "TLS certificate reloaded"), "SIGHUP loads the expired certificate");
    refused(srv.port, "127.0.0.1", ca_a, "expired", "an expired certificate");
    serve("a", "wronghost");
    ok(reload(&srv, "TLS certificate reloaded"), "SIGHUP loads the certificate of wrong.example");
    refused(srv.port, "127.0.0.1", ca_a, "127.0.0.1", "a certificate for another host");
    serve("b", "other");
    ok(reload(&srv, "TLS certificate reloaded"), "SIGHUP loads the other CA's certificate");
    ok(serves(srv.port, ca_b), "the new certificate is served: the other CA's client is served");
    ok(serves(srv.roshi_port, ca_b), "on the roshi listener too");
    refused(srv.port, "127.0.0.1", ca_a, "unable to get local issuer certificate",
            "the first CA after the reload");
    ok(ws && wss_ping(ws), "the WSS session opened before the reloads is still open");

    /* a broken pair keeps the certificate served */
    char cmd[2400];
    snprintf(cmd, sizeof(cmd), "cp '%s/a/localhost.pem' '%s'", dir, cert);
    if (system(cmd) != 0)
        bail_out("cp");
    ok(reload(&srv, "keeping the previous TLS certificate"),
       "SIGHUP with a key that does not match keeps the previous certificate");
    ok(log_count(srv.errlog, "does not belong to the certificate") > 0, "and says why");
    ok(serves(srv.port, ca_b), "which is still served");
    if (ws)
        curl_easy_cleanup(ws);
    is_int(crdtd_stop(&srv, SIGTERM, 5000) == 0, 1, "stopped cleanly");

    /* a start with a broken pair is refused */
    char errf[1100];
    snprintf(errf, sizeof(errf), "%s/bad.err", dir);
    const char *bad[] = {"--listen", "127.0.0.1:0", "--data-dir", data, "--tls-cert", cert,
                         "--tls-key", key, NULL};
    ok(crdtd_run(CRDTD_BIN, bad, errf, 10000) != 0 &&
           log_count(errf, "the key does not belong to the certificate") > 0,
       "a start with a mismatched key is refused, saying why");
    const char *half[] = {"--listen", "127.0.0.1:0", "--data-dir", data, "--tls-cert", cert, NULL};
    ok(crdtd_run(CRDTD_BIN, half, errf, 10000) != 0, "--tls-cert without --tls-key is refused");

    snprintf(cert_path, sizeof(cert_path), "%s/a/localhost.pem", dir);
    snprintf(key_path, sizeof(key_path), "%s/a/localhost.key", dir);
    peers_part();

    curl_global_cleanup();
    rm_rf(dir);
    free(tmp);
    return done_testing();
}
