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

static bool wss_ping(CURL *c)
{
    buf_t b = {0};
    bool r = !ws_text_frame(c, "{\"type\":\"ping\"}") && recv_until(c, &b, "\"pong\"", 5000);
    free(b.p);
    return r;
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
    is_int(https("127.0.0.1", srv.port, "/v1/keys/dGxz", ca_a, "POST",
                 "{\"type\":\"pncounter\",\"op\":\"incr\",\"by\":3}", &rc, err, NULL),
           200, "a REST write over HTTPS");
    is_int(https("127.0.0.1", srv.port, "/v1/keys/dGxz", ca_a, "GET", NULL, &rc, err, &body), 200,
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

    curl_global_cleanup();
    rm_rf(dir);
    free(tmp);
    return done_testing();
}
