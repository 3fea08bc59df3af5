/* test_redis_delete.c - CRDT.DELETE of crdt.so through real redis-server processes: every type,
 * its errors and command info, the change log and keyspace events, two servers that join a
 * delete with a write made concurrently on the other; and crdtd --store redis:// deleting through
 * it, its op-id marks out of the feed and the reads */
#include "tap.h"

#include <stdbool.h>
#include <stdint.h>
#include <string.h>
#include <unistd.h>

#include <jansson.h>
#include <signal.h>
#include <sys/wait.h>

#include "crdt.h"
#include "http_client.h"
#include "redis_helper.h"
#include "ws_raw.h"

static rh_server_t S, O; /* two "datacenters" */

#define CMD(...) rh_cmd(&S, __VA_ARGS__)
#define INT(...) rh_int(rh_cmd(&S, __VA_ARGS__))
#define ERR(...) rh_err(rh_cmd(&S, __VA_ARGS__))

static bool starts(const char *s, const char *prefix)
{
    return s && strncmp(s, prefix, strlen(prefix)) == 0;
}

static bool is_nil(redisReply *r)
{
    bool nil = r && r->type == REDIS_REPLY_NIL;
    if (r)
        freeReplyObject(r);
    return nil;
}

/* The elements of an array reply joined by spaces. */
static const char *joined(redisReply *r)
{
    static char buf[2048];
    buf[0] = '\0';
    if (!r)
        return "(no reply)";
    if (r->type == REDIS_REPLY_ERROR)
        snprintf(buf, sizeof(buf), "(error) %s", r->str);
    else if (r->type == REDIS_REPLY_ARRAY)
        for (size_t i = 0; i < r->elements; i++) {
            size_t n = strlen(buf);
            snprintf(buf + n, sizeof(buf) - n, "%s%.*s", i ? " " : "", (int)r->element[i]->len,
                     r->element[i]->str);
        }
    freeReplyObject(r);
    return buf;
}

static void test_command_info(void)
{
    redisReply *r = CMD("COMMAND INFO crdt.delete");
    redisReply *c = r && r->type == REDIS_REPLY_ARRAY && r->elements == 1 ? r->element[0] : NULL;
    if (ok(c && c->type == REDIS_REPLY_ARRAY && c->elements >= 6, "COMMAND INFO crdt.delete")) {
        is_int(c->element[1]->integer, -2, "crdt.delete arity -2");
        bool write = false;
        for (size_t i = 0; i < c->element[2]->elements; i++)
            write = write || !strcmp(c->element[2]->element[i]->str, "write");
        ok(write, "crdt.delete is a write command");
        bool fast = false;
        for (size_t i = 0; i < c->element[2]->elements; i++)
            fast = fast || !strcmp(c->element[2]->element[i]->str, "fast");
        ok(!fast, "crdt.delete is not flagged fast (it is linear in the value)");
        ok(c->element[3]->integer == 1 && c->element[4]->integer == 1 &&
               c->element[5]->integer == 1,
           "crdt.delete: one key, the first argument");
    }
    if (r)
        freeReplyObject(r);
    is(joined(CMD("COMMAND GETKEYS crdt.delete k1 TYPE orset")), "k1",
       "COMMAND GETKEYS: the key only, not the TYPE argument");
    r = CMD("COMMAND DOCS crdt.delete");
    ok(r && r->type == REDIS_REPLY_ARRAY && r->elements == 2, "COMMAND DOCS crdt.delete");
    if (r)
        freeReplyObject(r);
}

static void test_types(void)
{
    /* timeline */
    INT("CRDT.TLADD tl 1 a 2 b");
    is_int(INT("CRDT.DELETE tl"), 1, "timeline: DELETE removes the live entries: 1");
    is_int(INT("CRDT.TLCARD tl"), 0, "timeline: nothing live after it");
    is_int(INT("EXISTS tl"), 1, "timeline: the key stays, holding its tombstones");
    is_int(INT("CRDT.DELETE tl"), 0, "timeline: a second DELETE finds nothing: 0");
    is_int(INT("CRDT.TLADD tl 2 b"), 0, "timeline: an add at the deleted score loses");
    is_int(INT("CRDT.TLADD tl 3 b"), 1, "timeline: a higher score wins");
    /* set (an OR-Set from SADD) */
    INT("CRDT.SADD s x y");
    is_int(INT("CRDT.DELETE s"), 1, "orset: DELETE: 1");
    is_int(INT("CRDT.SCARD s"), 0, "orset: empty after it");
    INT("CRDT.SADD s x");
    is(joined(CMD("CRDT.SMEMBERS s")), "x", "orset: an add after the delete shows");
    /* register */
    rh_int(CMD("CRDT.SET r v1"));
    is_int(INT("CRDT.DELETE r"), 1, "lwwreg: DELETE clears it: 1");
    ok(is_nil(CMD("CRDT.GET r")), "lwwreg: GET of a cleared register is nil");
    is_int(INT("CRDT.DELETE r"), 0, "lwwreg: a cleared register has nothing to delete: 0");
    rh_int(CMD("CRDT.SET r v2"));
    size_t l = 0;
    char *v = rh_str(CMD("CRDT.GET r"), &l);
    ok(v && l == 2 && !memcmp(v, "v2", 2), "lwwreg: a set after the clear wins");
    free(v);
    /* pncounter */
    INT("CRDT.INCRBY c 5");
    is_int(INT("CRDT.DELETE c"), 1, "pncounter: DELETE: 1");
    is_int(INT("CRDT.GET c"), 0, "pncounter: 0 after it");
    is_int(INT("CRDT.INCRBY c 2"), 2, "pncounter: counts on from 0");
    /* gcounter */
    INT("CRDT.GINCRBY g 3");
    ok(starts(ERR("CRDT.DELETE g"), "NOTSUP"), "gcounter: DELETE refused with NOTSUP");
    is_int(INT("CRDT.GET g"), 3, "gcounter: unchanged");
    /* absent keys, options, errors */
    is_int(INT("CRDT.DELETE nokey"), 0, "an absent key: 0");
    is_int(INT("EXISTS nokey"), 0, "... and no key is made");
    ok(starts(ERR("CRDT.DELETE s TYPE timeline"), "WRONGTYPE"), "TYPE of another type: WRONGTYPE");
    is_int(INT("CRDT.DELETE s TYPE orset"), 1, "TYPE of the key's type: deleted");
    ok(starts(ERR("CRDT.DELETE s TYPE bogus"), "ERR unknown type"), "TYPE bogus: unknown type");
    ok(starts(ERR("CRDT.DELETE s FOO orset"), "ERR syntax"), "an unknown option: syntax error");
    ok(starts(ERR("CRDT.DELETE"), "ERR wrong number"), "no key: arity error");
    ok(starts(ERR("CRDT.DELETE a b"), "ERR wrong number"), "two arguments: arity error");
    rh_int(CMD("SET plain hello"));
    ok(starts(ERR("CRDT.DELETE plain"), "WRONGTYPE"), "a plain Redis string: WRONGTYPE");
}

static void test_log_and_events(void)
{
    long long before = rh_info_field(&S, "crdt", "crdt_log_appends");
    INT("CRDT.TLADD lg 1 a");
    INT("CRDT.DELETE lg");
    INT("CRDT.DELETE lg"); /* a no-op: nothing appended */
    is_int(rh_info_field(&S, "crdt", "crdt_log_appends") - before, 2,
           "the change log: an entry for the add and one for the delete, none for the no-op");
    freeReplyObject(CMD("CONFIG SET notify-keyspace-events Kd"));
    redisContext *sub = redisConnectWithTimeout("127.0.0.1", S.port, (struct timeval){2, 0});
    redisSetTimeout(sub, (struct timeval){2, 0});
    redisReply *s = redisCommand(sub, "SUBSCRIBE __keyspace@0__:ev");
    if (s)
        freeReplyObject(s);
    INT("CRDT.SADD ev m");
    INT("CRDT.DELETE ev");
    const char *want[] = {"crdt.sadd", "crdt.delete"};
    for (int i = 0; i < 2; i++) {
        void *rep = NULL;
        char got[64] = "";
        if (redisGetReply(sub, &rep) == REDIS_OK && rep) {
            redisReply *m = rep;
            if (m->type == REDIS_REPLY_ARRAY && m->elements == 3)
                snprintf(got, sizeof(got), "%s", m->element[2]->str);
            freeReplyObject(m);
        }
        is(got, want[i], "keyspace notification %s", want[i]);
    }
    redisFree(sub);
    freeReplyObject(CMD("CONFIG SET notify-keyspace-events \"\""));
}

/* Copies key's state from one server into the other (CRDT.MERGE of CRDT.STATE). */
static void ship(rh_server_t *from, rh_server_t *to, const char *key)
{
    size_t l = 0;
    char *st = rh_str(rh_cmd(from, "CRDT.STATE %s", key), &l);
    if (st)
        rh_int(rh_cmd(to, "CRDT.MERGE %s %b", key, st, l));
    free(st);
}

static bool same_state(const char *key)
{
    size_t a = 0, b = 0;
    char *x = rh_str(rh_cmd(&S, "CRDT.STATE %s", key), &a);
    char *y = rh_str(rh_cmd(&O, "CRDT.STATE %s", key), &b);
    bool same = x && y && a == b && !memcmp(x, y, a);
    free(x);
    free(y);
    return same;
}

static void test_concurrent(void)
{
    /* both servers hold the same timeline, set and counter */
    rh_int(CMD("CRDT.TLADD ct 1 a 2 b"));
    rh_int(CMD("CRDT.SADD cs x"));
    rh_int(CMD("CRDT.INCRBY cc 10"));
    ship(&S, &O, "ct");
    ship(&S, &O, "cs");
    ship(&S, &O, "cc");
    /* S deletes; O writes concurrently, not having seen the delete */
    is_int(INT("CRDT.DELETE ct"), 1, "concurrent: S deletes the timeline");
    is_int(INT("CRDT.DELETE cs"), 1, "concurrent: S deletes the set");
    is_int(INT("CRDT.DELETE cc"), 1, "concurrent: S deletes the counter");
    rh_int(rh_cmd(&O, "CRDT.TLADD ct 5 a 3 c"));
    rh_int(rh_cmd(&O, "CRDT.SADD cs x"));
    rh_int(rh_cmd(&O, "CRDT.INCRBY cc 4"));
    const char *keys[] = {"ct", "cs", "cc"};
    for (int i = 0; i < 3; i++) {
        ship(&S, &O, keys[i]);
        ship(&O, &S, keys[i]);
        ok(same_state(keys[i]), "concurrent: %s converges on both servers", keys[i]);
    }
    is(joined(CMD("CRDT.TLRANGE ct 0 10 WITHSCORES")), "a 5 c 3",
       "concurrent: O's re-add at a higher score and its new entry survive, b is gone");
    is(joined(CMD("CRDT.SMEMBERS cs")), "x", "concurrent: O's concurrent add survives (add wins)");
    is_int(INT("CRDT.GET cc"), 4, "concurrent: O's increment survives (10 - 10 + 4)");
}

/* ---- crdtd over this Redis ------------------------------------------------------------------ */

static json_t *J;

static int req(int port, const char *method, const char *path, const char *body)
{
    json_decref(J);
    J = NULL;
    hc_resp_t r = {0};
    int st = hc_request(port, method, path, body, &r) ? 0 : r.status;
    if (st && r.body)
        J = json_loadb(r.body, r.body_len, 0, NULL);
    hc_resp_free(&r);
    return st;
}

/* "/v1/keys/" + the key as a URL path segment (the one place to change with the key scheme) */
static const char *key_path(const void *key, size_t n)
{
    static char b[4][512];
    static int next;
    char *out = b[next++ % 4];
    char *enc = crdt_base64_encode_ex(key, n, CRDT_B64_URL | CRDT_B64_NOPAD, NULL);
    snprintf(out, sizeof(b[0]), "/v1/keys64/%s", enc ? enc : "");
    crdt_free(enc);
    return out;
}
#define KP(s) key_path((s), strlen(s))

static void test_gateway(void)
{
    char url[64];
    snprintf(url, sizeof(url), "redis://127.0.0.1:%d", S.port);
    char *tmp = test_tmpdir();
    crdtd_proc_t gw;
    const char *args[] = {"--store", url, "--node-id", "31", NULL};
    if (!tmp || crdtd_start(&gw, CRDTD_BIN, tmp, args)) {
        fail("crdtd --store redis:// starts");
        free(tmp);
        return;
    }
    int st = 0;
    for (int i = 0; i < 100 && (st = req(gw.port, "GET", "/healthz", NULL)) != 200; i++)
        rh_sleep_ms(50);
    is_int(st, 200, "gateway: healthy over Redis");
    /* its feed positions start at this run's base: an older one is gone, and says so */
    is_int(req(gw.port, "GET", "/v1/changes?since=1", NULL), 410,
           "gateway: a feed position older than this run: 410");
    ok(strstr(json_string_value(json_object_get(J, "error")), "rescan") != NULL,
       "gateway: ... telling the reader to rescan");
    is_int(req(gw.port, "GET", "/v1/changes?since=0", NULL), 200, "gateway: since=0 answers");
    char body[256];
    snprintf(body, sizeof(body),
             "{\"type\":\"timeline\",\"op\":\"add\",\"member\":\"%s\","
             "\"score\":1}",
             "m");
    is_int(req(gw.port, "POST", KP("g:tl"), body), 200, "gateway: a timeline write");
    is_int(req(gw.port, "DELETE", KP("g:tl"), NULL), 200, "gateway: DELETE through CRDT.DELETE");
    is_int(json_integer_value(json_object_get(J, "applied")), 1, "gateway: ... applied");
    is_int(req(gw.port, "GET", KP("g:tl"), NULL), 404, "gateway: then GET is 404");
    is_int(INT("CRDT.TLCARD g:tl"), 0, "gateway: Redis holds no live entry");
    is_int(req(gw.port, "DELETE", KP("g:tl"), NULL), 404, "gateway: a second DELETE: 404");
    is_int(req(gw.port, "POST", KP("g:gc"), "{\"type\":\"gcounter\",\"op\":\"incr\"}"), 200,
           "gateway: a gcounter");
    is_int(req(gw.port, "DELETE", KP("g:gc"), NULL), 409, "gateway: its DELETE is 409");
    is_int(INT("CRDT.GET g:gc"), 1, "gateway: ... and Redis still holds it");
    snprintf(body, sizeof(body), "{\"type\":\"lwwreg\",\"op\":\"set\",\"value\":\"%s\"}",
             "v");
    req(gw.port, "POST", KP("g:reg"), body);
    is_int(req(gw.port, "DELETE", KP("g:reg"), "{\"type\":\"lwwreg\"}"), 200,
           "gateway: a register's DELETE");
    ok(is_nil(CMD("CRDT.GET g:reg")), "gateway: the register is cleared in Redis");
    is_int(req(gw.port, "DELETE", KP("g:reg"), "{\"type\":\"orset\"}"), 409,
           "gateway: a DELETE naming another type than the key's: 409");
    is_int(req(gw.port, "DELETE", KP("g:reg"), NULL), 404, "gateway: the cleared register: 404");
    /* a crdt.v1 apply writes an op-id mark into Redis: the gateway's feed does not show it */
    ws_raw_t w;
    if (ws_open(&w, gw.port, "crdt.v1") == 101) {
        ws_text(&w, "{\"type\":\"hello\",\"client\":\"over-redis\"}");
        free(ws_wait_type(&w, "welcome", 5000));
        ws_text(&w, "{\"type\":\"apply\",\"id\":5,\"key\":\"g:pn\",\"op\":{\"type\":"
                    "\"pncounter\",\"op\":\"incr\"}}");
        char *ack = ws_wait_type(&w, "ack", 5000);
        ok(ack != NULL, "gateway: a crdt.v1 apply over Redis is acked");
        free(ack);
        /* a cursor this run does not know (older than its positions): the catch-up starts over
         * as for a cursor of 0 (the key's state, now or once the gateway has read its log
         * entry), then subscribed, no error */
        ws_text(&w, "{\"type\":\"subscribe\",\"id\":9,\"since\":1,\"keys\":[\"g:pn\"]}");
        bool got_sub = false, got_change = false, got_error = false;
        for (int q = 0; q < 50 && !(got_sub && got_change) && !got_error; q++) {
            char *m = NULL;
            if (ws_recv(&w, 200, &m, NULL) == WS_OP_TEXT && m) {
                got_sub |= strstr(m, "\"type\":\"subscribed\"") != NULL;
                got_change |= strstr(m, "\"type\":\"change\"") && strstr(m, "\"g:pn\"");
                got_error |= strstr(m, "\"type\":\"error\"") != NULL;
                if (got_error)
                    diag("%s", m);
            }
            free(m);
        }
        ok(got_sub && !got_error, "gateway: a stale cursor is subscribed, without an error");
        ok(got_change, "gateway: ... and gets the key's state");
        ws_free(&w);
    } else {
        fail("gateway: a crdt.v1 session");
    }
    redisReply *keys = CMD("KEYS *ids/*");
    ok(keys && keys->type == REDIS_REPLY_ARRAY && keys->elements == 1 &&
           keys->element[0]->len > 3 && !memcmp(keys->element[0]->str, "\0c/", 3),
       "gateway: the mark is an internal key in Redis");
    if (keys)
        freeReplyObject(keys);
    /* the gateway follows Redis's change logs: its feed fills as it reads them (a change read
     * back from a log gets a feed seq of its own). Wait for the four data keys, then until
     * last_seq has stood still for 400 ms: every log entry there is, the mark's too, was read */
    size_t i, internal = 0, n = 0;
    long long last = -1, stable_since = 0;
    for (int t = 0; t < 200; t++) {
        st = req(gw.port, "GET", "/v1/changes?since=0&limit=1000", NULL);
        n = json_array_size(json_object_get(J, "changes"));
        long long ls = json_integer_value(json_object_get(J, "last_seq"));
        if (ls != last) {
            last = ls;
            stable_since = t;
        }
        if (n >= 4 && t - stable_since >= 8)
            break;
        rh_sleep_ms(50);
    }
    is_int(st, 200, "gateway: the feed");
    json_t *c;
    json_array_foreach(json_object_get(J, "changes"), i, c)
    {
        /* an internal key (0x00 'c' '/') is not text: it would come as {"base64":"AGMv..."} */
        json_t *kj = json_object_get(c, "key");
        const char *k = json_string_value(json_object_get(kj, "base64"));
        internal += !json_is_string(kj) && (!k || !strncmp(k, "AGMv", 4));
    }
    if (!ok(n >= 4 && internal == 0, "gateway: no internal key among the %zu changes of the feed",
            n)) {
        char *txt = J ? json_dumps(J, JSON_COMPACT) : NULL;
        diag("feed: %s", txt ? txt : "(no JSON)");
        free(txt);
    }
    st = crdtd_stop(&gw, SIGTERM, 10000);
    ok(WIFEXITED(st) && WEXITSTATUS(st) == 0, "gateway: exits cleanly");
    rm_rf(tmp);
    free(tmp);
}

int main(void)
{
    const char *why = rh_skip_reason();
    if (why)
        skip_all("%s", why);
    rh_watchdog(120);
    if (rh_start(&S, NULL, "node-id 7", NULL) < 0 || rh_start(&O, NULL, "node-id 8", NULL) < 0) {
        ok(0, "servers start");
        return done_testing();
    }
    test_command_info();
    test_types();
    test_log_and_events();
    test_concurrent();
    test_gateway();
    json_decref(J);
    ok(rh_int(CMD("DBSIZE")) >= 0, "server alive at the end");
    if (rh_sanitized())
        is_int(rh_sanitizer_reports(), 0, "no ASan/UBSan report from any redis-server");
    rh_cleanup();
    return done_testing();
}
