/* test_http_badinput.c - malformed HTTP and JSON never take crdtd down or touch earlier data */
#include "tap.h"

#include <jansson.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "http_client.h"

#ifndef CRDTD_BIN
#error "CRDTD_BIN (the crdtd binary) must be defined"
#endif

static crdtd_proc_t srv;
static char *sentinel; /* binary state of key "sentinel" before the abuse */

static char *get_binary(const char *key)
{
    hc_resp_t r;
    char path[256];
    snprintf(path, sizeof(path), "/v1/keys/%s", key);
    if (hc_request(srv.port, "GET", path, NULL, &r) || r.status != 200) {
        hc_resp_free(&r);
        return NULL;
    }
    json_t *j = json_loadb(r.body, r.body_len, 0, NULL);
    json_t *b = json_object_get(j, "binary");
    char *s = json_is_string(b) ? strdup(json_string_value(b)) : NULL;
    json_decref(j);
    hc_resp_free(&r);
    return s;
}

static bool alive(void)
{
    int st;
    if (waitpid(srv.pid, &st, WNOHANG) != 0)
        return false;
    hc_resp_t r;
    bool ok = hc_request(srv.port, "GET", "/healthz", NULL, &r) == 0 && r.status == 200;
    hc_resp_free(&r);
    return ok;
}

static bool intact(void)
{
    char *now = get_binary("sentinel");
    bool same = now && sentinel && !strcmp(now, sentinel);
    free(now);
    return same;
}

/* Sends raw bytes; returns the status of the first response line (0 if none). */
static int raw(const void *data, size_t len, bool shut_wr)
{
    size_t n;
    char *out = hc_raw(srv.port, data, len, shut_wr, 1500, &n);
    int status = 0;
    if (out && n > 12 && !strncmp(out, "HTTP/1.", 7))
        status = atoi(out + 9);
    free(out);
    return status;
}

static int raw_str(const char *s, bool shut_wr)
{
    return raw(s, strlen(s), shut_wr);
}

static void check(const char *what, int status, int want)
{
    if (want)
        is_int(status, want, "%s: status", what);
    ok(alive(), "%s: still answers /healthz", what);
}

/* POST `body` to path with an honest Content-Length on a fresh connection. */
static int post(const char *path, const char *body, size_t len)
{
    int fd = hc_connect(srv.port);
    if (fd < 0)
        return 0;
    hc_resp_t r;
    int st = hc_send(fd, "POST", path, "", body, len, &r) == 0 ? r.status : 0;
    hc_resp_free(&r);
    close(fd);
    return st;
}

static int send_method(int port, const char *method, const char *body)
{
    int fd = hc_connect(port);
    if (fd < 0)
        return 0;
    hc_resp_t r;
    int st = hc_send(fd, method, "/", "", body, strlen(body), &r) == 0 ? r.status : 0;
    hc_resp_free(&r);
    close(fd);
    return st;
}

static void http_corpus(void)
{
    check("garbage request line", raw_str("GARBAGE\r\n\r\n", true), 0);
    check("method only", raw_str("GET\r\n\r\n", true), 0);
    check("unknown method", raw_str("FROB / HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n", true), 0);
    check("HTTP/9.9", raw_str("GET /healthz HTTP/9.9\r\n\r\n", true), 0);
    check("HTTP/1.0 without Host", raw_str("GET /healthz HTTP/1.0\r\n\r\n", true), 200);
    check("bare LF line ends", raw_str("GET /healthz HTTP/1.1\nHost: x\n\n", true), 0);
    check("empty connection", raw_str("", true), 0);

    uint8_t junk[4096];
    uint64_t x = 0x9e3779b97f4a7c15ull;
    for (size_t i = 0; i < sizeof(junk); i++) {
        x ^= x << 13, x ^= x >> 7, x ^= x << 17;
        junk[i] = (uint8_t)x;
    }
    check("4 KiB of random bytes", raw(junk, sizeof(junk), true), 0);
    memcpy(junk, "GET /", 5);
    check("random bytes after GET /", raw(junk, sizeof(junk), true), 0);

    size_t big = 100000;
    char *huge = malloc(big + 200);
    int n = sprintf(huge, "GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Big: ");
    memset(huge + n, 'a', big);
    strcpy(huge + n + big, "\r\n\r\n");
    check("a 100 KB header", raw_str(huge, true), 0);
    n = sprintf(huge, "GET /v1/keys/");
    memset(huge + n, 'A', big);
    strcpy(huge + n + big, " HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n");
    check("a 100 KB URL", raw_str(huge, true), 0);
    size_t w = (size_t)sprintf(huge, "GET /healthz HTTP/1.1\r\n");
    for (int i = 0; i < 3000 && w + 40 < big; i++)
        w += (size_t)sprintf(huge + w, "X-H%d: v\r\n", i);
    strcpy(huge + w, "\r\n");
    check("3000 headers", raw_str(huge, true), 0);
    free(huge);

    const char *b = "{\"type\":\"pncounter\",\"op\":\"incr\"}";
    char req[1024];
    snprintf(
        req, sizeof(req),
        "POST /v1/keys/dHJ1bmM HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 100\r\n\r\n%.10s", b);
    check("truncated body (100 promised, 10 sent)", raw_str(req, true), 0);
    check("a body promised and never sent",
          raw_str("POST /v1/keys/dHJ1bmM HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 50\r\n\r\n",
                  true),
          0);
    check(
        "oversized body (10 MB announced)",
        raw_str(
            "POST /v1/keys/YmlnZw HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 10485760\r\n\r\n",
            false),
        413);
    check("Content-Length: -1",
          raw_str("POST /v1/keys/YQ HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: -1\r\n\r\n{}",
                  true),
          0);
    check("Content-Length: abc",
          raw_str("POST /v1/keys/YQ HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: abc\r\n\r\n{}",
                  true),
          0);
    check("Content-Length: 2^70",
          raw_str("POST /v1/keys/YQ HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: "
                  "1180591620717411303424\r\n\r\n{}",
                  true),
          0);
    check("two Content-Lengths",
          raw_str("POST /v1/keys/YQ HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 2\r\n"
                  "Content-Length: 40\r\n\r\n{}",
                  true),
          0);
    check(
        "chunked body",
        raw_str("POST /v1/keys/YQ HTTP/1.1\r\nHost: 127.0.0.1\r\nTransfer-Encoding: chunked\r\n\r\n"
                "2\r\n{}\r\n0\r\n\r\n",
                false),
        411);
    check("POST without Content-Length",
          raw_str("POST /v1/keys/YQ HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n", false), 411);
    check("body longer than Content-Length (pipelined junk)",
          raw_str("POST /v1/keys/YQ HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: "
                  "2\r\n\r\n{}GARBAGE\r\n\r\n",
                  true),
          0);
    check("two pipelined requests",
          raw_str("GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\nGET /healthz HTTP/1.1\r\nHost: "
                  "127.0.0.1\r\n\r\n",
                  true),
          200);
    /* pipelining: lws 4.1.6 loops on input pipelined behind a request with a body unless
     * crdtd closes such a connection after answering (gateway/http.c) */
    {
        const char *pb = "{\"type\":\"gcounter\",\"op\":\"incr\"}";
        char post[256], get[] = "GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n", seq[1024];
        snprintf(post, sizeof(post),
                 "POST /v1/keys/cGlwZQ HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                 "Content-Length: %zu\r\n\r\n%s",
                 strlen(pb), pb);
        static const char *const shapes[] = {"PP", "GP", "PG", "PPP", "GGPGPG"};
        for (size_t k = 0; k < 5; k++) {
            size_t sl = 0;
            for (const char *c = shapes[k]; *c; c++)
                sl += (size_t)snprintf(seq + sl, sizeof(seq) - sl, "%s", *c == 'P' ? post : get);
            char what[64];
            snprintf(what, sizeof(what), "pipelined %s", shapes[k]);
            int st = 0;
            size_t got;
            char *out = hc_raw(srv.port, seq, sl, false, 300, &got);
            if (out && got > 12)
                st = atoi(out + 9);
            free(out);
            check(what, st, 200);
        }
    }
    check(
        "WebSocket upgrade",
        raw_str("GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
                true),
        0);
    check("NUL in the path",
          raw("GET /v1/keys/\0AAA HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n", 37, true), 0);
    check("%00 in the path", raw_str("GET /v1/keys/%00 HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n", true),
          0);
    check("bad percent escape",
          raw_str("GET /v1/keys/%ZZ HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n", true), 0);
    check("dot segments",
          raw_str("GET /../../../etc/passwd HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n", true), 0);
    check("100 query arguments",
          raw_str("GET /v1/changes?a=1&a=1&a=1&a=1&a=1&a=1&a=1&a=1&a=1&a=1&a=1&a=1&a=1&a=1&a=1&"
                  "a=1&a=1&a=1&a=1&a=1&a=1&a=1&a=1&a=1&a=1 HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n",
                  true),
          400);
    /* a client that stalls mid-header and then goes away */
    int fd = hc_connect(srv.port);
    if (fd >= 0) {
        (void)!write(fd, "GET /heal", 9);
        usleep(100000);
        close(fd);
    }
    check("stalled then closed mid-header", 0, 0);
}

static void json_corpus(void)
{
    static const char *bodies[] = {
        "{",
        "[",
        "}",
        "nul",
        "\"unterminated",
        "{\"type\":\"timeline\",\"op\":\"add\",\"member\":\"a\",\"score\":NaN}",
        "{\"type\":\"timeline\",\"op\":\"add\",\"member\":\"a\",\"score\":Infinity}",
        "{\"type\":\"timeline\",\"op\":\"add\",\"member\":\"a\",\"score\":-1e400}",
        "{\"type\":\"timeline\",\"op\":\"add\",\"member\":\"a\",\"score\":1e-400}",
        "{\"type\":\"timeline\",\"op\":\"add\",\"member\":\"a\",\"score\":-0.0}",
        "{\"type\":\"timeline\",\"op\":\"add\",\"member\":\"a\",\"score\":true}",
        "{\"type\":\"timeline\",\"op\":\"add\",\"member\":null,\"score\":1}",
        "{\"type\":\"timeline\",\"op\":\"add\",\"member\":[],\"score\":1}",
        "{\"type\":\"timeline\",\"op\":\"add\",\"entries\":{},\"score\":1}",
        "{\"type\":\"timeline\",\"op\":\"add\",\"entries\":[1,2,3]}",
        "{\"type\":\"timeline\",\"op\":\"add\",\"entries\":[{\"member\":\"a\"}]}",
        "{\"type\":\"timeline\",\"op\":\"add\",\"entries\":[]}",
        "{\"type\":\"timeline\",\"op\":\"add\",\"member\":{\"base64\":\"YQ=\"},\"score\":1}",
        "{\"type\":\"timeline\",\"op\":\"add\",\"member\":\"Y Q==\",\"score\":1}",
        "{\"type\":\"timeline\",\"op\":\"add\",\"member\":{\"base64\":\"YQ==YQ==\"},\"score\":1}",
        "{\"type\":\"timeline\",\"op\":\"add\",\"member\":\"\\u0000\",\"score\":1}",
        "{\"type\":\"timeline\",\"op\":\"add\",\"member\":\"\xff\xfe\",\"score\":1}",
        "{\"type\":5,\"op\":\"add\"}",
        "{\"type\":\"timeline\",\"op\":7}",
        "{\"type\":\"pncounter\",\"op\":\"incr\",\"by\":1.5}",
        "{\"type\":\"pncounter\",\"op\":\"incr\",\"by\":99999999999999999999999}",
        "{\"type\":\"pncounter\",\"op\":\"decr\",\"by\":-9223372036854775808}",
        "{\"type\":\"lwwreg\",\"op\":\"set\"}",
        "{\"type\":\"lwwreg\",\"op\":\"set\",\"value\":{}}",
        "{\"op\":\"merge\",\"binary\":\"////\"}",
        "{\"op\":\"merge\",\"binary\":\"AQYl6AcAAwAAAAAAAAhA\"}",
        "{\"op\":\"merge\",\"state\":{\"type\":\"timeline\",\"state\":{\"entries\":5}}}",
        "{\"op\":\"merge\",\"state\":{\"type\":\"gcounter\",\"state\":[[0,1]]}}",
        "{\"op\":\"merge\",\"state\":1,\"binary\":\"AA==\"}",
        "{\"op\":\"merge\"}",
        "{\"a\":1}garbage",
        "\xef\xbb\xbf{\"op\":\"incr\"}",
        "[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[",
    };
    int bad = 0, down = 0;
    for (size_t i = 0; i < sizeof(bodies) / sizeof(bodies[0]); i++) {
        int st = post("/v1/keys/badjson", bodies[i], strlen(bodies[i]));
        if (st != 400 && st != 409 && st != 200) {
            bad++;
            diag("body %zu (%s): status %d", i, bodies[i], st);
        }
        if (!alive()) {
            down++;
            diag("server down after body %zu", i);
            break;
        }
    }
    is_int(bad, 0, "every malformed JSON body got a 400-class answer (or a harmless 200)");
    is_int(down, 0, "and the server kept serving after each");
    /* one with an embedded NUL byte and deep nesting beyond jansson's limit */
    check("JSON with a NUL byte", post("/v1/keys/badjson", "{\"op\"\0:1}", 9), 400);
    char *deep = malloc(100001);
    memset(deep, '[', 100000);
    deep[100000] = '\0';
    check("100000 nested arrays", post("/v1/keys/badjson", deep, 100000), 400);
    free(deep);

    /* the same against the roshi listener */
    static const char *rbodies[] = {
        "",
        "{",
        "[1]",
        "[{}]",
        "[{\"key\":1,\"score\":1,\"member\":\"YQ==\"}]",
        "[{\"key\":\"YQ==\",\"score\":\"1\",\"member\":\"YQ==\"}]", /* null: 0, as roshi */
        "[{\"key\":\"YQ\",\"score\":1,\"member\":\"YQ==\"}]",
        "[[\"YQ==\"]]",
        "[true]", /* [null]: a null key or tuple is Go's zero value, not malformed */
        "{\"key\":\"YQ==\"}",
    };
    static const char *methods[] = {"GET", "POST", "DELETE"};
    bad = 0;
    for (size_t m = 0; m < 3; m++) {
        for (size_t i = 0; i < sizeof(rbodies) / sizeof(rbodies[0]); i++) {
            int st = send_method(srv.roshi_port, methods[m], rbodies[i]);
            if (st != 400) {
                bad++;
                diag("roshi %s %s: status %d", methods[m], rbodies[i], st);
            }
        }
    }
    is_int(bad, 0, "roshi: every malformed body is a 400");
    ok(alive(), "roshi abuse: still serving");
}

/* Mutations of valid requests: byte flips, truncations, duplications, on fresh connections. */
static void mutation_fuzz(int rounds)
{
    static const char *seeds[] = {
        "POST /v1/keys/ZnV6eg HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 61\r\n\r\n"
        "{\"type\":\"timeline\",\"op\":\"add\",\"member\":\"a\",\"score\":1.5}",
        "GET /v1/keys/ZnV6eg/timeline?limit=3&offset=1 HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n",
        "GET /v1/timelines?keys=ZnV6eg,c2VudGluZWw&limit=5 HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n",
        "GET /v1/changes?since=0&limit=5 HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n",
        "POST /v1/keys/ZnV6eg HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 52\r\n\r\n"
        "{\"op\":\"add\",\"entries\":[{\"member\":\"b\",\"score\":2}]}",
    };
    uint64_t x = 12345;
    int down = 0;
    char buf[512];
    for (int i = 0; i < rounds && !down; i++) {
        const char *s = seeds[i % 5];
        size_t n = strlen(s);
        memcpy(buf, s, n);
        int edits = 1 + (int)(x % 4);
        for (int e = 0; e < edits; e++) {
            x ^= x << 13, x ^= x >> 7, x ^= x << 17;
            size_t at = (size_t)(x % n);
            switch ((x >> 32) % 4) {
            case 0: buf[at] = (char)(x >> 40); break;
            case 1: buf[at] ^= (char)(1u << ((x >> 44) % 8)); break;
            case 2: n = at + 1; break; /* truncate */
            case 3:
                if (n + 8 < sizeof(buf)) {
                    memmove(buf + at + 8, buf + at, n - at);
                    memcpy(buf + at, "\r\n%0{\"[9", 8);
                    n += 8;
                }
                break;
            }
        }
        raw(buf, n, true);
        if (i % 25 == 24 && !alive())
            down++;
    }
    ok(!down && alive(), "%d mutated requests: still serving", rounds);
}


/* ---- configuration errors: reported before anything is created ------------------------------ */

static bool file_has(const char *path, const char *needle)
{
    FILE *f = fopen(path, "r");
    if (!f)
        return false;
    char buf[4096];
    size_t n = fread(buf, 1, sizeof(buf) - 1, f);
    fclose(f);
    buf[n] = '\0';
    return strstr(buf, needle) != NULL;
}

/* Each bad flag set: crdtd exits 2 with the message on stderr, and the data directory it was
 * given does not exist afterwards (no directory, no lock). */
static void bad_flags(const char *dir)
{
    char data[600], errf[600], shortf[600], goodf[600], missing[600];
    snprintf(data, sizeof(data), "%s/flagdata", dir);
    snprintf(errf, sizeof(errf), "%s/flags.err", dir);
    snprintf(shortf, sizeof(shortf), "%s/short.secret", dir);
    snprintf(goodf, sizeof(goodf), "%s/good.secret", dir);
    snprintf(missing, sizeof(missing), "%s/no-such-file", dir);
    FILE *f = fopen(shortf, "w");
    if (f) {
        fputs("tooshort\n", f);
        fclose(f);
    }
    f = fopen(goodf, "w");
    if (f) {
        fputs("0123456789abcdef0123456789abcdef\n", f);
        fclose(f);
    }
    unsetenv("CRDTD_PEER_SECRET");
    unsetenv("CRDTD_TOKEN_SECRET");
    struct {
        const char *what, *msg;
        const char *args[12];
    } cases[] = {
        {"--peer without a secret", "--peer needs the cluster secret",
         {"--peer", "ws://127.0.0.1:1", NULL}},
        {"--peer-secret-file missing", "cannot read the secret file",
         {"--peer", "ws://127.0.0.1:1", "--peer-secret-file", missing, NULL}},
        {"--peer-secret-file too short", "shorter than 16 bytes",
         {"--peer", "ws://127.0.0.1:1", "--peer-secret-file", shortf, NULL}},
        {"--peer without a port", "expected ws://host:port",
         {"--peer", "ws://127.0.0.1", "--peer-secret-file", goodf, NULL}},
        {"--tls-cert missing", "cannot read the certificate",
         {"--tls-cert", missing, "--tls-key", missing, NULL}},
        {"--peer-ca missing", "--peer-ca",
         {"--peer-ca", missing, NULL}},
        {"--token-secret-file missing", "cannot read the token secret file",
         {"--token-secret-file", missing, NULL}},
        {"--token-secret-file not a key ring", "token",
         {"--token-secret-file", shortf, NULL}},
        {"non-loopback listener without tokens", "refusing to listen",
         {"--listen", "0.0.0.0:0", NULL}},
        {"--store with a bad address list", "--store",
         {"--store", "redis://127.0.0.1:1,", NULL}},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        const char *argv[16];
        int n = 0;
        argv[n++] = "--data-dir";
        argv[n++] = data;
        if (strcmp(cases[i].args[0], "--listen") != 0) {
            argv[n++] = "--listen";
            argv[n++] = "127.0.0.1:0";
        }
        for (int j = 0; cases[i].args[j]; j++)
            argv[n++] = cases[i].args[j];
        argv[n] = NULL;
        rm_rf(data);
        int st = crdtd_run(CRDTD_BIN, argv, errf, 5000);
        ok(WIFEXITED(st) && WEXITSTATUS(st) == 2, "%s: exits 2", cases[i].what);
        ok(file_has(errf, cases[i].msg), "%s: stderr says \"%s\"", cases[i].what, cases[i].msg);
        struct stat sb;
        ok(stat(data, &sb) != 0, "%s: the data directory was not created", cases[i].what);
    }
    rm_rf(data);
}

int main(void)
{
    signal(SIGPIPE, SIG_IGN);
    char *dir = test_tmpdir();
    if (!dir)
        skip_all("no temporary directory");
    bad_flags(dir);
    char data[600];
    snprintf(data, sizeof(data), "%s/data", dir);
    const char *args[] = {"--data-dir", data, "--roshi-listen", "127.0.0.1:0", NULL};
    if (crdtd_start(&srv, CRDTD_BIN, dir, args) != 0) {
        ok(0, "crdtd starts");
        rm_rf(dir);
        return done_testing();
    }
    hc_resp_t r;
    hc_request(
        srv.port, "POST", "/v1/keys/sentinel",
        "{\"type\":\"timeline\",\"op\":\"add\",\"entries\":[{\"member\":\"a\",\"score\":1},"
        "{\"member\":\"b\",\"score\":2}]}",
        &r);
    is_int(r.status, 200, "sentinel data written");
    hc_resp_free(&r);
    sentinel = get_binary("sentinel");
    ok(sentinel != NULL, "sentinel read back");

    http_corpus();
    ok(intact(), "sentinel intact after the HTTP corpus");
    json_corpus();
    ok(intact(), "sentinel intact after the JSON corpus");
    mutation_fuzz(500);
    ok(intact(), "sentinel intact after the mutations");

    int st = crdtd_stop(&srv, SIGTERM, 10000);
    ok(WIFEXITED(st) && WEXITSTATUS(st) == 0, "SIGTERM after the abuse: exit 0");
    free(sentinel);
    rm_rf(dir);
    free(dir);
    return done_testing();
}
