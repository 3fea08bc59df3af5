/* test_delete_http.c - deleting keys against real crdtd processes: REST DELETE on every type and
 * the 404 after it, the gcounter's 409, grants, the crdt.v1 op, replication of a delete between
 * two nodes with a concurrent write on the other surviving; and the op-id marks (internal keys)
 * showing nowhere (feed, /healthz, reads, roshi) and expiring */
#include "tap.h"

#include <arpa/inet.h>
#include <jansson.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "crdt.h"
#include "crdt_json.h"
#include "http_client.h"
#include "token.h"
#include "ws_raw.h"

#ifndef CRDTD_BIN
#error "CRDTD_BIN (the crdtd binary) must be defined"
#endif
#ifndef CRDTC_BIN
#define CRDTC_BIN "" /* crdtc not built: its part is skipped */
#endif

#define T 5000
#define MARK_PERIOD_MS 600 /* CRDTD_TEST_MARK_PERIOD_MS of the marks node */

static const char SECRET[] = "delete-test-secret-0123456789abcdef";

/* ---- how keys and members are written (the one place to change with the key scheme) -------- */

/* "/v1/keys/" + the key as a URL path segment + suffix, in one of 8 rotating buffers. */
static const char *key_path_n(const void *key, size_t n, const char *suffix)
{
    static char bufs[8][2048];
    static int next;
    char *b = bufs[next++ % 8];
    char *enc = crdt_base64_encode_ex(key, n, CRDT_B64_URL | CRDT_B64_NOPAD, NULL);
    snprintf(b, sizeof(bufs[0]), "/v1/keys64/%s%s", enc ? enc : "", suffix);
    crdt_free(enc);
    return b;
}
static const char *key_path(const char *key, const char *suffix)
{
    return key_path_n(key, strlen(key), suffix);
}

/* A member or register value as a JSON value (quoted). */
static const char *jm(const char *m)
{
    static char bufs[8][1024];
    static int next;
    char *b = bufs[next++ % 8];
    json_t *j = crdt_json_bytes(m, strlen(m));
    char *t = json_dumps(j, JSON_ENCODE_ANY | JSON_COMPACT);
    snprintf(b, sizeof(bufs[0]), "%s", t ? t : "null");
    free(t);
    json_decref(j);
    return b;
}

/* Whether a JSON member / key value of a response is the bytes m[0..n). */
static bool bytes_are(const json_t *v, const void *m, size_t n)
{
    uint8_t *d = NULL;
    size_t dn = 0;
    const char *why = NULL;
    bool same = crdt_json_get_bytes(v, SIZE_MAX, &d, &dn, &why) == 0 && dn == n && (n == 0 || memcmp(d, m, n) == 0);
    crdt_free(d);
    return same;
}
static bool member_is(const json_t *v, const char *m)
{
    return bytes_are(v, m, strlen(m));
}
/* Whether a JSON key of a response starts with crdtd's internal prefix 0x00 'c' '/'. */
static bool key_internal(const json_t *v)
{
    uint8_t *d = NULL;
    size_t dn = 0;
    const char *why = NULL;
    bool in = crdt_json_get_bytes(v, SIZE_MAX, &d, &dn, &why) == 0 && dn >= 3 && d[0] == 0 && d[1] == 'c' && d[2] == '/';
    crdt_free(d);
    return in;
}

/* ---- requests ------------------------------------------------------------------------------- */

static json_t *J; /* the last response's body */

static int req_tok(int port, const char *method, const char *path, const char *body,
                   const char *tok)
{
    json_decref(J);
    J = NULL;
    char hdr[4096] = "";
    if (tok)
        snprintf(hdr, sizeof(hdr), "Authorization: Bearer %s\r\n", tok);
    int fd = hc_connect(port);
    hc_resp_t r = {0};
    int st = 0;
    if (fd >= 0 && !hc_send(fd, method, path, hdr, body, body ? strlen(body) : 0, &r))
        st = r.status;
    if (fd >= 0)
        close(fd);
    if (st && r.body)
        J = json_loadb(r.body, r.body_len, JSON_ALLOW_NUL, NULL);
    if (st && r.body_len && !J)
        diag("%s %s: %d, a body that is not JSON: %.300s", method, path, st, r.body);
    hc_resp_free(&r);
    return st;
}
static int req(int port, const char *method, const char *path, const char *body)
{
    return req_tok(port, method, path, body, NULL);
}

static long long jint(const json_t *o, const char *f)
{
    json_t *v = json_object_get(o, f);
    return json_is_integer(v) ? json_integer_value(v) : -1;
}

static const char *jstr(const json_t *o, const char *f)
{
    json_t *v = json_object_get(o, f);
    return json_is_string(v) ? json_string_value(v) : "";
}

static int post(int port, const char *key, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static int post(int port, const char *key, const char *fmt, ...)
{
    char body[2048];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(body, sizeof(body), fmt, ap);
    va_end(ap);
    return req(port, "POST", key_path(key, ""), body);
}

/* GET a key's value into J; the status. */
static int get(int port, const char *key)
{
    return req(port, "GET", key_path(key, "?state=0"), NULL);
}

/* Whether entries (an array of {"member","score"}) holds member m at score s. */
static bool has_entry(const json_t *entries, const char *m, double s)
{
    size_t i;
    json_t *e;
    json_array_foreach(entries, i, e)
    {
        if (member_is(json_object_get(e, "member"), m))
            return json_number_value(json_object_get(e, "score")) == s;
    }
    return false;
}
static bool has_member(const json_t *members, const char *m)
{
    size_t i;
    json_t *e;
    json_array_foreach(members, i, e)
    {
        if (member_is(e, m))
            return true;
    }
    return false;
}

static uint64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

static uint64_t mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

/* ---- REST DELETE on every type -------------------------------------------------------------- */

/* DELETE key: 200 with applied 1 and a seq; then GET is 404. Returns the seq. */
static long long delete_ok(int port, const char *key, const char *what)
{
    is_int(req(port, "DELETE", key_path(key, ""), NULL), 200, "%s: DELETE answers 200", what);
    is_int(jint(J, "applied"), 1, "%s: ... applied 1", what);
    is_int(jint(J, "ops"), 1, "%s: ... ops 1", what);
    long long seq = jint(J, "seq");
    ok(seq > 0, "%s: ... with its seq (%lld)", what, seq);
    is_int(get(port, key), 404, "%s: GET after the delete: 404", what);
    char lp[1200];
    snprintf(lp, sizeof(lp), "/v1/keys?prefix=%s", hc_pct(key));
    is_int(req(port, "GET", lp, NULL), 200, "%s: the listing answers", what);
    bool listed = false;
    size_t li;
    json_t *lk;
    json_array_foreach(json_object_get(J, "keys"), li, lk) listed |= bytes_are(lk, key, strlen(key));
    ok(!listed, "%s: ... without the deleted key", what);
    is_int(req(port, "DELETE", key_path(key, ""), NULL), 404,
           "%s: a second DELETE finds nothing live: 404", what);
    return seq;
}

static void test_rest_delete(int port)
{
    /* timeline: every live entry goes at its score; a higher score comes back */
    post(port, "d:tl", "{\"type\":\"timeline\",\"op\":\"add\",\"member\":%s,\"score\":1}", jm("a"));
    post(port, "d:tl", "{\"type\":\"timeline\",\"op\":\"add\",\"member\":%s,\"score\":2}", jm("b"));
    is_int(get(port, "d:tl"), 200, "timeline: there before the delete");
    long long seq = delete_ok(port, "d:tl", "timeline");
    is_int(req(port, "GET", key_path("d:tl", "/timeline"), NULL), 200,
           "timeline: the timeline read of a deleted timeline answers");
    is_int((long long)json_array_size(json_object_get(J, "entries")), 0, "... with no entries");
    post(port, "d:tl", "{\"type\":\"timeline\",\"op\":\"add\",\"member\":%s,\"score\":2}", jm("b"));
    is_int(jint(J, "applied"), 0, "timeline: re-adding at the deleted score loses (remove wins)");
    post(port, "d:tl", "{\"type\":\"timeline\",\"op\":\"add\",\"member\":%s,\"score\":3}", jm("b"));
    is_int(jint(J, "applied"), 1, "timeline: a higher score is a new write");
    is_int(get(port, "d:tl"), 200, "timeline: live again");
    ok(has_entry(json_object_get(J, "value"), "b", 3) &&
           !has_entry(json_object_get(J, "value"), "a", 1),
       "timeline: b at 3, a still gone");
    /* the delete is in the change feed at its seq */
    char path[128];
    snprintf(path, sizeof(path), "/v1/changes?since=%lld&limit=1000", seq - 1);
    is_int(req(port, "GET", path, NULL), 200, "the change feed after the delete");
    bool found = false;
    size_t i;
    json_t *c;
    json_array_foreach(json_object_get(J, "changes"), i, c) found =
        found || bytes_are(json_object_get(c, "key"), "d:tl", 4);
    ok(found, "the deleted key is in the change feed");

    /* lwwset: tombstones at a fresh timestamp; a later add shows */
    post(port, "d:lws", "{\"type\":\"lwwset\",\"op\":\"add\",\"members\":[%s,%s]}", jm("x"),
         jm("y"));
    delete_ok(port, "d:lws", "lwwset");
    post(port, "d:lws", "{\"type\":\"lwwset\",\"op\":\"add\",\"member\":%s}", jm("x"));
    is_int(get(port, "d:lws"), 200, "lwwset: an add after the delete shows");
    ok(has_member(json_object_get(J, "value"), "x") &&
           !has_member(json_object_get(J, "value"), "y"),
       "lwwset: x back, y gone");

    /* orset */
    post(port, "d:ors", "{\"type\":\"orset\",\"op\":\"add\",\"members\":[%s,%s]}", jm("p"),
         jm("q"));
    delete_ok(port, "d:ors", "orset");
    post(port, "d:ors", "{\"type\":\"orset\",\"op\":\"add\",\"member\":%s}", jm("q"));
    is_int(get(port, "d:ors"), 200, "orset: an add after the delete shows");
    ok(has_member(json_object_get(J, "value"), "q") &&
           !has_member(json_object_get(J, "value"), "p"),
       "orset: q back, p gone");

    /* lwwreg: cleared; a later set shows */
    post(port, "d:reg", "{\"type\":\"lwwreg\",\"op\":\"set\",\"value\":%s}", jm("v1"));
    delete_ok(port, "d:reg", "lwwreg");
    is_int(req(port, "GET", key_path("d:reg", ""), NULL), 404, "lwwreg: the full read is 404 too");
    post(port, "d:reg", "{\"type\":\"lwwreg\",\"op\":\"set\",\"value\":%s}", jm("v2"));
    is_int(jint(J, "applied"), 1, "lwwreg: a set after the clear wins");
    is_int(get(port, "d:reg"), 200, "lwwreg: set again");
    ok(member_is(json_object_get(J, "value"), "v2"), "lwwreg: the new value");

    /* pncounter: minus what this node saw; a later increment counts from 0 */
    post(port, "d:pn", "{\"type\":\"pncounter\",\"op\":\"incr\",\"by\":7}");
    post(port, "d:pn", "{\"type\":\"pncounter\",\"op\":\"decr\",\"by\":2}");
    delete_ok(port, "d:pn", "pncounter");
    post(port, "d:pn", "{\"type\":\"pncounter\",\"op\":\"incr\",\"by\":3}");
    is_int(get(port, "d:pn"), 200, "pncounter: live again");
    is_int(jint(J, "value"), 3, "pncounter: counts from 0 after the delete");
    /* a counter that went back to 0 by itself has nothing live either */
    post(port, "d:pn0", "{\"type\":\"pncounter\",\"op\":\"incr\",\"by\":2}");
    post(port, "d:pn0", "{\"type\":\"pncounter\",\"op\":\"decr\",\"by\":2}");
    is_int(get(port, "d:pn0"), 404, "pncounter at 0: GET 404");

    /* gcounter: refused, nothing changes */
    post(port, "d:gc", "{\"type\":\"gcounter\",\"op\":\"incr\",\"by\":4}");
    is_int(req(port, "DELETE", key_path("d:gc", ""), NULL), 409, "gcounter: DELETE is 409");
    ok(strstr(jstr(J, "error"), "gcounter") != NULL || strstr(jstr(J, "message"), "gcounter"),
       "gcounter: ... saying a gcounter cannot be deleted");
    is_int(get(port, "d:gc"), 200, "gcounter: still there");
    is_int(jint(J, "value"), 4, "gcounter: unchanged");

    /* the other paths to a delete and the bad ones */
    is_int(req(port, "DELETE", key_path("d:never", ""), NULL), 404, "DELETE of an absent key: 404");
    post(port, "d:ors2", "{\"type\":\"orset\",\"op\":\"add\",\"member\":%s}", jm("m"));
    is_int(req(port, "DELETE", key_path("d:ors2", ""), "{\"type\":\"timeline\"}"), 409,
           "DELETE with a body naming another type: 409");
    is_int(req(port, "DELETE", key_path("d:ors2", ""), "{\"op\":\"add\"}"), 400,
           "DELETE with another op: 400");
    is_int(req(port, "DELETE", key_path("d:ors2", ""), "[1"), 400, "DELETE with bad JSON: 400");
    is_int(get(port, "d:ors2"), 200, "the refused deletes changed nothing");
    is_int(req(port, "DELETE", key_path("d:ors2", ""), "{\"type\":\"orset\"}"), 200,
           "DELETE with a body naming the key's type: 200");
    is_int(post(port, "d:ors3", "{\"type\":\"orset\",\"op\":\"add\",\"member\":%s}", jm("m")), 200,
           "POST {\"op\":\"delete\"} works too: setup");
    is_int(post(port, "d:ors3", "{\"op\":\"delete\"}"), 200, "POST {\"op\":\"delete\"}: 200");
    is_int(get(port, "d:ors3"), 404, "... and the key reads 404");
    static const uint8_t reserved[] = {0, 'c', '/', 'x'};
    is_int(req(port, "DELETE", key_path_n(reserved, sizeof reserved, ""), NULL), 400,
           "DELETE of a reserved key: 400");
    is_int(req(port, "PUT", key_path("d:ors2", ""), "{}"), 405, "PUT on a key: 405");
}

/* ---- grants --------------------------------------------------------------------------------- */

static char *mint(const char *sub, const char *read, const char *write)
{
    gw_grant_t r[1] = {{(uint8_t *)(uintptr_t)read, read ? strlen(read) : 0}};
    gw_grant_t w[1] = {{(uint8_t *)(uintptr_t)write, write ? strlen(write) : 0}};
    return gw_token_make_kid(NULL, SECRET, strlen(SECRET), sub, (int64_t)time(NULL) + 600, r,
                             read ? 1 : 0, w, write ? 1 : 0);
}

static void test_grants(int port)
{
    char *rw = mint("alice", "", "team:");
    char *ro = mint("bob", "", NULL);
    char *other = mint("carol", "", "other:");
    char body[256];
    snprintf(body, sizeof(body), "{\"type\":\"orset\",\"op\":\"add\",\"member\":%s}", jm("m"));
    is_int(req_tok(port, "POST", key_path("team:k", ""), body, rw), 200, "grants: setup write");
    is_int(req_tok(port, "DELETE", key_path("team:k", ""), NULL, NULL), 401,
           "grants: DELETE without a token: 401");
    is_int(req_tok(port, "DELETE", key_path("team:k", ""), NULL, ro), 403,
           "grants: DELETE with a read-only token: 403");
    is_int(req_tok(port, "DELETE", key_path("team:k", ""), NULL, other), 403,
           "grants: DELETE outside the token's write grant: 403");
    is_int(req_tok(port, "GET", key_path("team:k", ""), NULL, ro), 200,
           "grants: the refused deletes changed nothing");
    is_int(req_tok(port, "DELETE", key_path("team:k", ""), NULL, rw), 200,
           "grants: DELETE under the write grant: 200");
    is_int(req_tok(port, "GET", key_path("team:k", ""), NULL, ro), 404, "grants: then 404");
    free(rw);
    free(ro);
    free(other);
}

/* ---- crdt.v1 -------------------------------------------------------------------------------- */

static json_t *ws_expect(ws_raw_t *w, const char *type)
{
    char *m = ws_wait_type(w, type, T);
    json_t *j = m ? json_loads(m, 0, NULL) : NULL;
    free(m);
    return j;
}

static bool ws_session(ws_raw_t *w, int port, const char *client)
{
    if (ws_open(w, port, "crdt.v1") != 101)
        return false;
    char hello[256];
    snprintf(hello, sizeof(hello), "{\"type\":\"hello\",\"client\":\"%s\"}", client);
    ws_text(w, hello);
    json_t *j = ws_expect(w, "welcome");
    json_decref(j);
    return j != NULL;
}

/* Sends an apply of op on key with id; the reply (ack or error), parsed, or NULL. */
static json_t *ws_apply(ws_raw_t *w, uint64_t id, const char *key, const char *op)
{
    char msg[2048];
    snprintf(msg, sizeof(msg), "{\"type\":\"apply\",\"id\":%llu,\"key\":%s,\"op\":%s}",
             (unsigned long long)id, jm(key), op);
    ws_text(w, msg);
    for (;;) {
        char *m = NULL;
        if (ws_recv(w, T, &m, NULL) != WS_OP_TEXT) {
            free(m);
            return NULL;
        }
        json_t *j = json_loads(m, 0, NULL);
        free(m);
        const char *t = jstr(j, "type");
        if (!strcmp(t, "ack") || !strcmp(t, "error"))
            return j;
        json_decref(j);
    }
}

static void test_ws_delete(int port)
{
    ws_raw_t w;
    if (!ws_session(&w, port, "ws-deleter")) {
        fail("crdt.v1 session");
        return;
    }
    char op[256];
    snprintf(op, sizeof(op), "{\"type\":\"timeline\",\"op\":\"add\",\"member\":%s,\"score\":5}",
             jm("e"));
    json_t *j = ws_apply(&w, 1, "w:tl", op);
    ok(j && !strcmp(jstr(j, "type"), "ack"), "ws: setup add acked");
    json_decref(j);
    j = ws_apply(&w, 2, "w:tl", "{\"op\":\"delete\"}");
    ok(j && !strcmp(jstr(j, "type"), "ack") && json_is_true(json_object_get(j, "applied")),
       "ws: {\"op\":\"delete\"} is acked, applied");
    ok(jint(j, "seq") > 0, "ws: ... with a seq");
    json_decref(j);
    is_int(get(port, "w:tl"), 404, "ws: the key reads 404 after the WebSocket delete");
    j = ws_apply(&w, 3, "w:tl", "{\"op\":\"delete\"}");
    ok(j && !strcmp(jstr(j, "type"), "ack") && json_is_false(json_object_get(j, "applied")),
       "ws: deleting it again is acked, not applied");
    json_decref(j);
    j = ws_apply(&w, 4, "w:never", "{\"op\":\"delete\"}");
    ok(j && !strcmp(jstr(j, "type"), "ack") && json_is_false(json_object_get(j, "applied")),
       "ws: deleting an absent key: acked, not applied");
    json_decref(j);
    post(port, "w:gc", "{\"type\":\"gcounter\",\"op\":\"incr\",\"by\":1}");
    j = ws_apply(&w, 5, "w:gc", "{\"op\":\"delete\"}");
    ok(j && !strcmp(jstr(j, "type"), "error") && !strcmp(jstr(j, "code"), "wrong_type"),
       "ws: deleting a gcounter is a wrong_type error (%s)", j ? jstr(j, "message") : "");
    json_decref(j);
    j = ws_apply(&w, 6, "w:tl", "{\"op\":\"delete\"}");
    ok(j && !strcmp(jstr(j, "type"), "ack"), "ws: the session still serves");
    json_decref(j);
    ws_free(&w);
}

/* ---- crdtc delete --------------------------------------------------------------------------- */

/* Runs crdtc with args; its stdout (first line) into out; the exit status (-1: not run). */
static int crdtc(const char *args, char *out, size_t n)
{
    char cmd[1024];
    snprintf(cmd, sizeof(cmd), "%s %s 2>/dev/null", CRDTC_BIN, args);
    FILE *p = popen(cmd, "r");
    if (!p)
        return -1;
    out[0] = '\0';
    if (!fgets(out, (int)n, p))
        out[0] = '\0';
    out[strcspn(out, "\n")] = '\0';
    char sink[256];
    while (fgets(sink, sizeof(sink), p))
        ;
    int st = pclose(p);
    return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

static void test_crdtc_delete(int port)
{
    if (!CRDTC_BIN[0]) {
        diag("crdtc not built: its delete is not tested here");
        return;
    }
    char args[256], out[512];
    post(port, "c:ors", "{\"type\":\"orset\",\"op\":\"add\",\"member\":%s}", jm("m"));
    snprintf(args, sizeof(args), "--quiet --url ws://127.0.0.1:%d delete c:ors", port);
    is_int(crdtc(args, out, sizeof(out)), 0, "crdtc delete: exit 0");
    json_t *ack = json_loads(out, 0, NULL);
    ok(json_is_true(json_object_get(ack, "applied")) && jint(ack, "seq") > 0,
       "crdtc delete: prints the ack, applied (%s)", out);
    json_decref(ack);
    is_int(get(port, "c:ors"), 404, "crdtc delete: the key reads 404");
    is_int(crdtc(args, out, sizeof(out)), 0, "crdtc delete of a deleted key: exit 0");
    ack = json_loads(out, 0, NULL);
    ok(json_is_false(json_object_get(ack, "applied")), "crdtc delete: ... not applied (%s)", out);
    json_decref(ack);
    post(port, "c:gc", "{\"type\":\"gcounter\",\"op\":\"incr\"}");
    snprintf(args, sizeof(args), "--quiet --url ws://127.0.0.1:%d delete c:gc", port);
    is_int(crdtc(args, out, sizeof(out)), 1, "crdtc delete of a gcounter: exit 1 (refused)");
    snprintf(args, sizeof(args), "--quiet --url ws://127.0.0.1:%d delete a b", port);
    is_int(crdtc(args, out, sizeof(out)), 2, "crdtc delete with two keys: usage, exit 2");
    snprintf(args, sizeof(args), "--quiet --url ws://127.0.0.1:%d --delta delete a", port);
    is_int(crdtc(args, out, sizeof(out)), 2, "crdtc --delta delete: usage, exit 2");
    is_int(crdtc("--help", out, sizeof(out)), 0, "crdtc --help");
}

/* ---- internal keys: the op-id marks --------------------------------------------------------- */

static long long healthz_keys(int port)
{
    return req(port, "GET", "/healthz", NULL) == 200 ? jint(J, "keys") : -1;
}

static double metric(int port, const char *name)
{
    hc_resp_t r = {0};
    double v = -1;
    if (hc_request(port, "GET", "/metrics", NULL, &r) == 0 && r.body) {
        char pat[160];
        snprintf(pat, sizeof(pat), "\n%s ", name);
        const char *p = strstr(r.body, pat);
        if (p)
            v = strtod(p + strlen(pat), NULL);
    }
    hc_resp_free(&r);
    return v;
}

/* The mark key of a period, as the server names it (marks.h). */
static size_t mark_key(uint64_t period, uint8_t *out)
{
    memcpy(out, "\0c/ids/", 7);
    return 7 + (size_t)snprintf((char *)out + 7, 24, "%llu", (unsigned long long)period);
}

/* Sleeps until `into` ms after the start of the next period. */
static void align_to_period(int into)
{
    uint64_t now = now_ms();
    uint64_t next = (now / MARK_PERIOD_MS + 1) * MARK_PERIOD_MS + (uint64_t)into;
    usleep((useconds_t)(next - now) * 1000);
}

static void test_marks(int port, int roshi_port)
{
    long long k0 = healthz_keys(port);
    ws_raw_t w;
    if (!ws_session(&w, port, "marked")) {
        fail("crdt.v1 session");
        return;
    }
    char op[256];
    snprintf(op, sizeof(op), "{\"type\":\"orset\",\"op\":\"add\",\"member\":%s}", jm("z"));
    align_to_period(50);
    uint64_t period = now_ms() / MARK_PERIOD_MS;
    json_t *j = ws_apply(&w, 10, "m:one", op);
    ok(j && !strcmp(jstr(j, "type"), "ack"), "marks: an apply over crdt.v1 (it writes a mark)");
    json_decref(j);
    is_int(healthz_keys(port), k0 + 1, "marks: /healthz counts the data key, not the mark");

    /* the feed, reads, the coalesced read and roshi never show the mark */
    is_int(req(port, "GET", "/v1/changes?since=0&limit=10000", NULL), 200, "marks: the feed");
    size_t i, internal = 0, n = json_array_size(json_object_get(J, "changes"));
    json_t *c;
    json_array_foreach(json_object_get(J, "changes"), i, c) internal +=
        key_internal(json_object_get(c, "key"));
    ok(n > 0 && internal == 0, "marks: no internal key among the %zu changes of the feed", n);
    uint8_t mk[40];
    size_t ml = mark_key(period, mk);
    is_int(req(port, "GET", key_path_n(mk, ml, ""), NULL), 404, "marks: GET of the mark key: 404");
    is_int(req(port, "GET", key_path_n(mk, ml, "/timeline"), NULL), 200,
           "marks: the timeline read of the mark key answers");
    is_int((long long)json_array_size(json_object_get(J, "entries")), 0, "... with nothing in it");
    is_int(jint(J, "size"), 0, "... size 0");
    char *kb = crdt_base64_encode_ex(mk, ml, CRDT_B64_URL | CRDT_B64_NOPAD, NULL);
    char path[256];
    snprintf(path, sizeof(path), "/v1/timelines?keys64=%s", kb);
    is_int(req(port, "GET", path, NULL), 200, "marks: the coalesced read of the mark key answers");
    is_int((long long)json_array_size(json_object_get(J, "entries")), 0, "... with nothing in it");
    if (roshi_port) {
        char *std = crdt_base64_encode(mk, ml, NULL);
        char body[256];
        snprintf(body, sizeof(body), "[\"%s\"]", std);
        /* (jansson cannot hold the NUL of the record's key: the raw body is read) */
        int fd = hc_connect(roshi_port);
        hc_resp_t r = {0};
        int st =
            fd >= 0 && !hc_send(fd, "GET", "/?limit=10", "", body, strlen(body), &r) ? r.status : 0;
        if (fd >= 0)
            close(fd);
        is_int(st, 200, "marks: a roshi select of it");
        ok(r.body && strstr(r.body, "\"records\":{") && strstr(r.body, ":[]}") &&
               !strstr(r.body, "\"member\""),
           "marks: ... shows no mark (%.*s)", r.body ? (int)strcspn(r.body, "\n") : 0,
           r.body ? r.body : "");
        hc_resp_free(&r);
        crdt_free(std);
    }
    crdt_free(kb);

    /* within the next period, a retry is still a duplicate */
    align_to_period(50);
    j = ws_apply(&w, 10, "m:one", op);
    ok(j && json_is_true(json_object_get(j, "duplicate")),
       "marks: a retry in the next period is a duplicate");
    json_decref(j);
    ws_free(&w);

    /* two periods without this client: its mark has expired, the op applies again */
    align_to_period(50);
    align_to_period(50);
    double sweeps0 = metric(port, "crdtd_ws_mark_sweeps_total");
    ws_raw_t w2;
    if (!ws_session(&w2, port, "marked")) {
        fail("crdt.v1 session");
        return;
    }
    j = ws_apply(&w2, 10, "m:one", op);
    ok(j && !strcmp(jstr(j, "type"), "ack") && !json_object_get(j, "duplicate"),
       "marks: after two periods the client's mark has expired: the op is not a duplicate");
    json_decref(j);
    ok(metric(port, "crdtd_ws_mark_sweeps_total") > sweeps0, "marks: a sweep ran");
    ok(metric(port, "crdtd_ws_mark_keys_emptied_total") >= 1,
       "marks: the sweep emptied the key of an expired period");
    ws_free(&w2);
}

/* ---- replication between two nodes ---------------------------------------------------------- */

static int free_port(void)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a;
    memset(&a, 0, sizeof(a));
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t len = sizeof(a);
    if (fd < 0 || bind(fd, (struct sockaddr *)&a, sizeof(a)) ||
        getsockname(fd, (struct sockaddr *)&a, &len)) {
        if (fd >= 0)
            close(fd);
        return -1;
    }
    close(fd);
    return ntohs(a.sin_port);
}

typedef struct node {
    crdtd_proc_t p;
    int port, id;
    char dir[600], listen[32], idarg[8], peer[64];
} node_t;

static const char *tmp;
static char peer_secret[700];

static int node_start(node_t *n)
{
    const char *args[] = {"--listen",
                          n->listen,
                          "--node-id",
                          n->idarg,
                          "--data-dir",
                          n->dir,
                          "--peer",
                          n->peer,
                          "--peer-secret-file",
                          peer_secret,
                          "--anti-entropy-interval",
                          "1",
                          NULL};
    char logdir[700];
    snprintf(logdir, sizeof(logdir), "%s/log%d", tmp, n->id);
    mkdir(logdir, 0755);
    return crdtd_start(&n->p, CRDTD_BIN, logdir, args);
}

static void node_init(node_t *n, int id, int port, int other_port)
{
    memset(n, 0, sizeof(*n));
    n->id = id;
    n->port = port;
    snprintf(n->listen, sizeof(n->listen), "127.0.0.1:%d", port);
    snprintf(n->idarg, sizeof(n->idarg), "%d", id);
    snprintf(n->dir, sizeof(n->dir), "%s/node%d", tmp, id);
    snprintf(n->peer, sizeof(n->peer), "ws://127.0.0.1:%d", other_port);
}

static bool digest(int port, char *out, size_t n)
{
    if (req(port, "GET", "/healthz", NULL) != 200)
        return false;
    snprintf(out, n, "%s", jstr(J, "digest"));
    return out[0] != '\0';
}

static bool wait_converged(const node_t *a, const node_t *b, int timeout_ms)
{
    uint64_t end = mono_ms() + (uint64_t)timeout_ms;
    char da[64], db[64];
    do {
        if (digest(a->port, da, sizeof(da)) && digest(b->port, db, sizeof(db)) && !strcmp(da, db))
            return true;
        usleep(50000);
    } while (mono_ms() < end);
    return false;
}

/* Waits until GET key on port answers `status`. */
static bool wait_status(int port, const char *key, int status, int timeout_ms)
{
    uint64_t end = mono_ms() + (uint64_t)timeout_ms;
    do {
        if (get(port, key) == status)
            return true;
        usleep(50000);
    } while (mono_ms() < end);
    return false;
}

static void test_replication(void)
{
    snprintf(peer_secret, sizeof(peer_secret), "%s/peer-secret", tmp);
    FILE *f = fopen(peer_secret, "w");
    fputs("replicated deletes are writes like any other\n", f);
    fclose(f);
    int pa = free_port(), pb = free_port();
    node_t A, B;
    node_init(&A, 1, pa, pb);
    node_init(&B, 2, pb, pa);
    if (node_start(&A) || node_start(&B)) {
        fail("two linked crdtd nodes start");
        return;
    }
    post(A.port, "r:tl", "{\"type\":\"timeline\",\"op\":\"add\",\"member\":%s,\"score\":1}",
         jm("a"));
    post(A.port, "r:tl", "{\"type\":\"timeline\",\"op\":\"add\",\"member\":%s,\"score\":2}",
         jm("b"));
    post(A.port, "r:pn", "{\"type\":\"pncounter\",\"op\":\"incr\",\"by\":10}");
    post(A.port, "r:reg", "{\"type\":\"lwwreg\",\"op\":\"set\",\"value\":%s}", jm("old"));
    ok(wait_converged(&A, &B, 15000), "replication: A's writes reach B");
    is_int(get(B.port, "r:pn"), 200, "replication: B has the counter");
    is_int(jint(J, "value"), 10, "replication: ... at 10");

    /* A deletes while B is down; then B writes while A is down: concurrent */
    crdtd_stop(&B.p, SIGTERM, 10000);
    is_int(req(A.port, "DELETE", key_path("r:tl", ""), NULL), 200,
           "replication: A deletes the "
           "timeline (B down)");
    is_int(req(A.port, "DELETE", key_path("r:pn", ""), NULL), 200,
           "replication: A deletes the "
           "counter");
    crdtd_stop(&A.p, SIGTERM, 10000);
    if (node_start(&B)) {
        fail("B restarts");
        return;
    }
    post(B.port, "r:tl", "{\"type\":\"timeline\",\"op\":\"add\",\"member\":%s,\"score\":3}",
         jm("c"));
    post(B.port, "r:tl", "{\"type\":\"timeline\",\"op\":\"add\",\"member\":%s,\"score\":10}",
         jm("a"));
    post(B.port, "r:pn", "{\"type\":\"pncounter\",\"op\":\"incr\",\"by\":3}");
    if (node_start(&A)) {
        fail("A restarts");
        return;
    }
    ok(wait_converged(&A, &B, 20000), "replication: A and B converge after the partition");
    for (int k = 0; k < 2; k++) {
        int port = k ? B.port : A.port;
        const char *who = k ? "B" : "A";
        is_int(get(port, "r:tl"), 200, "replication: %s: the timeline is live", who);
        const json_t *v = json_object_get(J, "value");
        ok(has_entry(v, "c", 3), "replication: %s: B's concurrent new entry survives", who);
        ok(has_entry(v, "a", 10),
           "replication: %s: B's concurrent re-add at a higher score "
           "survives",
           who);
        ok(!has_entry(v, "b", 2) && json_array_size(v) == 2,
           "replication: %s: what A had seen is deleted", who);
        is_int(get(port, "r:pn"), 200, "replication: %s: the counter", who);
        is_int(jint(J, "value"), 3,
               "replication: %s: B's concurrent increment survives the "
               "delete (10 - 10 + 3)",
               who);
    }
    /* the live path: a delete on B reaches A */
    is_int(req(B.port, "DELETE", key_path("r:reg", ""), NULL), 200,
           "replication: B deletes the "
           "register");
    ok(wait_status(A.port, "r:reg", 404, 15000), "replication: A sees the register deleted");
    ok(wait_converged(&A, &B, 15000), "replication: converged again");
    crdtd_stop(&A.p, SIGTERM, 10000);
    crdtd_stop(&B.p, SIGTERM, 10000);
}

int main(void)
{
    signal(SIGPIPE, SIG_IGN);
    char *dir = test_tmpdir();
    if (!dir)
        skip_all("no temporary directory");
    tmp = dir;
    char data[600], data2[600], secret_file[700];
    snprintf(data, sizeof(data), "%s/data", dir);
    snprintf(data2, sizeof(data2), "%s/data2", dir);
    snprintf(secret_file, sizeof(secret_file), "%s/token-secret", dir);
    FILE *f = fopen(secret_file, "w");
    fputs(SECRET, f);
    fclose(f);
    unsetenv("CRDTD_TOKEN_SECRET");

    char period[16];
    snprintf(period, sizeof(period), "%d", MARK_PERIOD_MS);
    setenv("CRDTD_TEST_MARK_PERIOD_MS", period, 1);
    crdtd_proc_t srv, auth;
    const char *args[] = {"--data-dir", data, "--roshi-listen", "127.0.0.1:0", NULL};
    if (crdtd_start(&srv, CRDTD_BIN, dir, args))
        bail_out("cannot start crdtd");
    unsetenv("CRDTD_TEST_MARK_PERIOD_MS");
    const char *aargs[] = {"--data-dir", data2, "--token-secret-file", secret_file, NULL};
    if (crdtd_start(&auth, CRDTD_BIN, dir, aargs))
        bail_out("cannot start crdtd with tokens");

    test_rest_delete(srv.port);
    test_grants(auth.port);
    test_ws_delete(srv.port);
    test_crdtc_delete(srv.port);
    test_marks(srv.port, srv.roshi_port);
    int st = crdtd_stop(&srv, SIGTERM, 10000);
    ok(WIFEXITED(st) && WEXITSTATUS(st) == 0, "crdtd exits cleanly");
    crdtd_stop(&auth, SIGTERM, 10000);

    test_replication();
    json_decref(J);
    rm_rf(dir);
    free(dir);
    return done_testing();
}
