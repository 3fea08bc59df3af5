/* test_roshi_redis.c - roshi selects over Redis answer byte for byte what the embedded store does
 *
 * Three crdtd processes: one on the embedded store, one with --store redis:// (selects read
 * through crdt_store_tl_range: CRDT.TLRANGE / TLRANGEBYSCORE), one on the same Redis through a
 * proxy that renames those commands (the store falls back to CRDT.STATE). The same roshi inserts
 * and deletes go to the embedded one and the Redis (several keys, equal scores within and across
 * keys, members and keys with bytes that need escaping), then many selects (offset, limit,
 * coalesce, start / stop cursors, their edge cases) whose bodies must be identical but for the
 * "duration" field.
 */
#define _GNU_SOURCE /* memmem */
#include "tap.h"

#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>

#include "crdt.h"
#include "http_client.h"
#include "redis_helper.h"

#ifndef CRDTD_BIN
#error "CRDTD_BIN (the crdtd binary) must be defined"
#endif

/* Standard base64 of p[0..n) into one of 32 rotating buffers. */
static const char *b64n(const void *p, size_t n)
{
    static char bufs[32][256];
    static int k;
    char *o = bufs[k++ % 32];
    size_t w = n <= 180 ? crdt_base64_encode_into(o, p, n, CRDT_B64_STD) : 0;
    o[w] = '\0';
    return o;
}

/* A roshi cursor for a query string. */
static const char *cursor(double score, const void *m, size_t mlen)
{
    return hc_roshi_cursor(score, m, mlen, true);
}

typedef struct bytes {
    const char *p;
    size_t n;
} bytes_t;
#define B(s)                                                                                       \
    {                                                                                              \
        s, sizeof(s) - 1                                                                           \
    }

static const bytes_t KEYS[] = {B("k1"),       B("k<2>&"), B("k\xff\xfe"),
                               B("k\n\"4\\"), B("never"), B("\0c/mark")};
#define NKEYS 6

/* (key, score, member) inserted, in this order; then the deletes below */
static const struct {
    int key;
    double score;
    bytes_t m;
} INS[] = {
    {0, 1, B("a")},         {0, 2, B("b")},
    {0, 2, B("a")},         {0, 2, B("c")},
    {0, 0.5, B("<m>")},     {0, -3, B("\0x")},
    {0, 1e300, B("")},      {0, 1.5e-7, B("tiny")},
    {1, 2, B("b")},         {1, 2, B("\xff")},
    {1, 7, B("m\"q\\")},    {1, 12345678901234567.0, B("big")},
    {1, 0.1 + 0.2, B("f")}, {2, 2, B("b")},
    {2, 2, B("a")},         {2, 3, B("\xe2\x80\xa8")},
    {2, -0.0, B("z")},      {3, 5, B("x")},
    {3, 5, B("y")},         {3, 1, B("gone")},
};
static const struct {
    int key;
    double score;
    bytes_t m;
} DEL[] = {{3, 1, B("gone")}, {0, 3, B("c")}};

static char body[16384];

/* A JSON list of tuples. */
static const char *tuples(bool del)
{
    size_t w = (size_t)snprintf(body, sizeof(body), "[");
    size_t n = del ? sizeof(DEL) / sizeof(DEL[0]) : sizeof(INS) / sizeof(INS[0]);
    for (size_t i = 0; i < n; i++) {
        int k = del ? DEL[i].key : INS[i].key;
        double s = del ? DEL[i].score : INS[i].score;
        bytes_t m = del ? DEL[i].m : INS[i].m;
        w += (size_t)snprintf(body + w, sizeof(body) - w,
                              "%s{\"key\":\"%s\",\"score\":%.17g,"
                              "\"member\":\"%s\"}",
                              i ? "," : "", b64n(KEYS[k].p, KEYS[k].n), s, b64n(m.p, m.n));
    }
    snprintf(body + w, sizeof(body) - w, "]");
    return body;
}

/* A select's keys: indexes into KEYS, -1 ends. */
static const char *keys_body(const int *ks)
{
    size_t w = (size_t)snprintf(body, sizeof(body), "[");
    for (int i = 0; ks[i] >= 0; i++)
        w += (size_t)snprintf(body + w, sizeof(body) - w, "%s\"%s\"", i ? "," : "",
                              b64n(KEYS[ks[i]].p, KEYS[ks[i]].n));
    snprintf(body + w, sizeof(body) - w, "]");
    return body;
}

/* The response as status + body with `"duration":"..."` cut out (malloc'd). */
static char *answer(int port, const char *path, const char *b)
{
    hc_resp_t r = {0};
    if (hc_request(port, "GET", path, b, &r) != 0 || !r.body) {
        hc_resp_free(&r);
        return strdup("(no response)");
    }
    char *out = malloc(r.body_len + 16);
    if (!out) {
        hc_resp_free(&r);
        return NULL;
    }
    int w = snprintf(out, 16, "%d ", r.status);
    const char *p = r.body, *end = r.body + r.body_len;
    const char *d = memmem(p, r.body_len, "\"duration\":\"", 12);
    if (d) {
        const char *q = memchr(d + 12, '"', (size_t)(end - d - 12));
        memcpy(out + w, p, (size_t)(d - p));
        w += (int)(d - p);
        p = q ? q + 1 : end;
    }
    memcpy(out + w, p, (size_t)(end - p));
    out[w + (end - p)] = '\0';
    hc_resp_free(&r);
    return out;
}

static int write_all(int port, bool del)
{
    hc_resp_t r = {0};
    int rc = hc_request(port, del ? "DELETE" : "POST", "/", tuples(del), &r);
    int st = rc == 0 ? r.status : 0;
    hc_resp_free(&r);
    return st;
}

int main(void)
{
    const char *why = rh_skip_reason();
    if (why)
        skip_all("%s", why);
    rh_watchdog(rh_sanitized() ? 170 : 110);
    signal(SIGPIPE, SIG_IGN);
    char *dir = test_tmpdir();
    if (!dir)
        skip_all("no temporary directory");
    rh_server_t srv = {0};
    if (rh_start(&srv, NULL, "node-id 9", NULL) < 0)
        bail_out("cannot start redis-server");
    static const char *const renamed[] = {"CRDT.TLRANGE", "CRDT.TLRANGEBYSCORE", NULL};
    pid_t proxy = 0;
    int pport = rh_rename_proxy(srv.port, renamed, &proxy);
    ok(pport > 0, "a proxy to Redis that renames CRDT.TLRANGE and CRDT.TLRANGEBYSCORE");

    char data[700], url[64], purl[64];
    snprintf(data, sizeof(data), "%s/data", dir);
    snprintf(url, sizeof(url), "redis://127.0.0.1:%d", srv.port);
    snprintf(purl, sizeof(purl), "redis://127.0.0.1:%d", pport);
    const char *eargs[] = {"--data-dir", data, "--roshi-listen", "127.0.0.1:0", NULL};
    const char *rargs[] = {"--store",        url,           "--node-id", "31",
                           "--roshi-listen", "127.0.0.1:0", NULL};
    const char *fargs[] = {"--store",        purl,          "--node-id", "32",
                           "--roshi-listen", "127.0.0.1:0", NULL};
    crdtd_proc_t E = {0}, R = {0}, F = {0};
    bool up = crdtd_start(&E, CRDTD_BIN, dir, eargs) == 0;
    up = crdtd_start(&R, CRDTD_BIN, dir, rargs) == 0 && up;
    up = pport > 0 && crdtd_start(&F, CRDTD_BIN, dir, fargs) == 0 && up;
    if (!ok(up, "crdtd on the embedded store, on Redis, and on Redis through the proxy")) {
        crdtd_stop(&E, SIGTERM, 5000), crdtd_stop(&R, SIGTERM, 5000), crdtd_stop(&F, SIGTERM, 5000);
        rh_stop(&srv);
        rh_cleanup();
        rm_rf(dir);
        free(dir);
        return done_testing();
    }

    is_int(write_all(E.roshi_port, false), 200, "inserts into the embedded store");
    is_int(write_all(R.roshi_port, false), 200, "the same inserts into Redis");
    is_int(write_all(E.roshi_port, true), 200, "deletes from the embedded store");
    is_int(write_all(R.roshi_port, true), 200, "the same deletes from Redis");

    static const int keysets[][NKEYS + 2] = {
        {0, 1, 2, 3, 4, 5, -1}, {0, -1}, {1, 0, 1, 2, -1}, {3, 2, 1, 0, -1}, {4, 5, -1}, {-1},
    };
    char queries[64][300];
    int nq = 0;
    static const char *const plain[] = {
        "",         "limit=3",         "offset=2&limit=2",     "offset=100&limit=5",
        "limit=0",  "limit=-1",        "offset=1&limit=10000", "limit=20000",
        "offset=4", "offset=x&limit=y"};
    for (size_t i = 0; i < sizeof(plain) / sizeof(plain[0]); i++) {
        snprintf(queries[nq++], 300, "/?%s", plain[i]);
        snprintf(queries[nq++], 300, "/?coalesce=true%s%s", plain[i][0] ? "&" : "", plain[i]);
    }
    /* cursors at entries (ties among equal scores), between them, at the ends, not finite */
    struct {
        double s;
        bytes_t m;
    } cur[] = {{2, B("b")},       {2, B("a")},        {0.5, B("<m>")},     {5, B("y")},
               {1e300, B("")},    {2.5, B("q")},      {-3, B("\0x")},      {NAN, B("")},
               {INFINITY, B("")}, {-INFINITY, B("")}, {0.1 + 0.2, B("f")}, {-0.0, B("z")}};
    size_t nc = sizeof(cur) / sizeof(cur[0]);
    for (size_t i = 0; i < nc && nq < 60; i++) {
        const char *c = cursor(cur[i].s, cur[i].m.p, cur[i].m.n);
        snprintf(queries[nq++], 300, "/?start=%s&limit=3", c);
        snprintf(queries[nq++], 300, "/?stop=%s&coalesce=true", c);
        size_t j = (i + 3) % nc;
        const char *d = cursor(cur[j].s, cur[j].m.p, cur[j].m.n);
        if (nq < 63)
            snprintf(queries[nq++], 300, "/?start=%s&stop=%s&coalesce=%s", c, d,
                     i % 2 ? "true" : "false");
    }
    snprintf(queries[nq++], 300, "/?start=%s&stop=%s&limit=0", cursor(1e300, "", 0),
             cursor(-3, "\0x", 2));

    int same = 0, total = 0;
    for (size_t k = 0; k < sizeof(keysets) / sizeof(keysets[0]); k++) {
        for (int q = 0; q < nq; q++) {
            char b[2048];
            snprintf(b, sizeof(b), "%s", keys_body(keysets[k]));
            char *e = answer(E.roshi_port, queries[q], b), *r = answer(R.roshi_port, queries[q], b),
                 *f = answer(F.roshi_port, queries[q], b);
            bool eq = e && r && f && !strcmp(e, r) && !strcmp(e, f);
            total++;
            same += eq;
            if (!eq)
                ok(0,
                   "keys #%zu %s: the same over Redis\n#   embedded %s\n#   redis    %s\n"
                   "#   fallback %s",
                   k, queries[q], e ? e : "", r ? r : "", f ? f : "");
            free(e), free(r), free(f);
        }
    }
    is_int(same, total, "every select (%d) answered byte for byte the same on the three", total);

    /* a select that reaches Redis's entries at all, as a check on the comparison itself */
    char *e = answer(R.roshi_port, "/?limit=2", keys_body((const int[]){0, -1}));
    ok(e && strstr(e, "\"records\":{\"k1\":[{") && strstr(e, b64n("b", 1)),
       "a select over Redis finds the entries (%s)", e ? e : "");
    free(e);

    /* the Redis gateway read entries, not states; the one behind the proxy, states */
    long long tl = 0, st = 0;
    {
        redisReply *r = rh_cmd(&srv, "INFO commandstats");
        const char *p =
            r && r->type == REDIS_REPLY_STRING ? strstr(r->str, "cmdstat_crdt.tlrange:") : NULL;
        tl = p ? strtoll(strstr(p, "calls=") + 6, NULL, 10) : 0;
        p = r && r->type == REDIS_REPLY_STRING ? strstr(r->str, "cmdstat_crdt.state:") : NULL;
        st = p ? strtoll(strstr(p, "calls=") + 6, NULL, 10) : 0;
        if (r)
            freeReplyObject(r);
    }
    ok(tl > 0 && st > 0,
       "Redis answered CRDT.TLRANGE (%lld) and, for the fallback, CRDT.STATE (%lld)", tl, st);

    /* Redis gone: a select that reads through tl_range fails as one that reads states does */
    rh_kill(&srv);
    const int all[] = {0, 1, 2, -1};
    static const char *const gone[] = {"/?limit=2", "/?coalesce=true&offset=1",
                                       "/?start=4611686018427387904AYg%3D%3D"};
    for (size_t i = 0; i < sizeof(gone) / sizeof(gone[0]); i++) {
        char *r = answer(R.roshi_port, gone[i], keys_body(all));
        char *f = answer(F.roshi_port, gone[i], keys_body(all));
        ok(r && f && !strncmp(r, "503 ", 4) && strstr(r, "reading the keys failed") &&
               !strncmp(f, "503 ", 4),
           "Redis killed, %s: 503 from both (%s / %s)", gone[i], r ? r : "", f ? f : "");
        free(r), free(f);
    }

    crdtd_stop(&E, SIGTERM, 5000);
    crdtd_stop(&R, SIGTERM, 5000);
    crdtd_stop(&F, SIGTERM, 5000);
    if (proxy > 0) {
        kill(proxy, SIGKILL);
        waitpid(proxy, NULL, 0);
    }
    rh_stop(&srv);
    rh_cleanup();
    rm_rf(dir);
    free(dir);
    ok(rh_sanitizer_reports() == 0, "no sanitizer reports from the servers");
    return done_testing();
}
