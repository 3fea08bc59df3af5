/* test_ws_protocol.c - crdt.v1 sessions against a real crdtd: handshake, hello, tokens, apply and
 * acks, exactly-once across a restart, subscribe catch-up and live deltas, limits, and a corpus of
 * malformed frames and messages after each of which the server still serves */
#include "tap.h"

#include <jansson.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "crdt_json.h"
#include "http_client.h"
#include "token.h"
#include "ws_raw.h"

#ifndef CRDTD_BIN
#error "CRDTD_BIN (the crdtd binary) must be defined"
#endif

#define T 5000 /* ms to wait for any one reply */

static const char SECRET[] = "0123456789abcdef0123456789abcdef";

static json_t *parse(const char *m)
{
    return m ? json_loads(m, 0, NULL) : NULL;
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

/* Waits for a message of `type`; returns it parsed (caller decrefs) or NULL. */
static json_t *expect(ws_raw_t *w, const char *type)
{
    char *m = ws_wait_type(w, type, T);
    json_t *j = parse(m);
    free(m);
    return j;
}

/* The next message, whatever it is, parsed; NULL on close/timeout. */
static json_t *next_msg(ws_raw_t *w, int timeout_ms)
{
    char *m = NULL;
    int op = ws_recv(w, timeout_ms, &m, NULL);
    json_t *j = op == WS_OP_TEXT ? parse(m) : NULL;
    free(m);
    return j;
}

/* Opens a session and says hello; returns the welcome (caller decrefs) or NULL. */
static json_t *session(ws_raw_t *w, int port, const char *client, const char *token)
{
    if (ws_open(w, port, "crdt.v1") != 101)
        return NULL;
    char hello[9000];
    if (token)
        snprintf(hello, sizeof(hello), "{\"type\":\"hello\",\"client\":\"%s\",\"token\":\"%s\"}",
                 client, token);
    else
        snprintf(hello, sizeof(hello), "{\"type\":\"hello\",\"client\":\"%s\",\"cursor\":0}",
                 client);
    ws_text(w, hello);
    return expect(w, "welcome");
}

/* Sends m and returns the error code of the reply (an "error" message expected). */
static char *error_code(ws_raw_t *w, const char *m)
{
    static char code[64];
    ws_text(w, m);
    json_t *j = expect(w, "error");
    snprintf(code, sizeof(code), "%s", j ? jstr(j, "code") : "(none)");
    json_decref(j);
    return code;
}

/* ping -> pong: the session still serves */
static bool alive(ws_raw_t *w)
{
    if (ws_text(w, "{\"type\":\"ping\"}"))
        return false;
    json_t *j = expect(w, "pong");
    json_decref(j);
    return j != NULL;
}

static int rest(int port, const char *method, const char *path, const char *body, json_t **out)
{
    hc_resp_t r = {0};
    int st = hc_request(port, method, path, body, &r) ? 0 : r.status;
    if (out)
        *out = st ? json_loadb(r.body, r.body_len, 0, NULL) : NULL;
    hc_resp_free(&r);
    return st;
}

static long long counter_value(int port, const char *key)
{
    char path[600];
    snprintf(path, sizeof(path), "/v1/keys/%s?state=0", hc_pct(key));
    json_t *j;
    if (rest(port, "GET", path, NULL, &j) != 200)
        return -1;
    long long v = jint(j, "value");
    json_decref(j);
    return v;
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

/* A fresh session and a REST request both work. */
static void still_serves(int port, const char *what)
{
    ws_raw_t w;
    json_t *wel = session(&w, port, "probe", NULL);
    ok(wel && alive(&w), "after %s: a fresh session works", what);
    json_decref(wel);
    ws_free(&w);
    is_int(rest(port, "GET", "/healthz", NULL, NULL), 200, "after %s: REST works", what);
}

static char *apply_msg(char *buf, size_t n, long long id, const char *key, const char *op)
{
    snprintf(buf, n, "{\"type\":\"apply\",\"id\":%lld,\"key\":\"%s\",\"op\":%s}", id,
             (key), op);
    return buf;
}

/* ---- handshake, hello, apply, dedupe -------------------------------------------------------- */

static void test_handshake(int port)
{
    ws_raw_t w;
    is_int(ws_open(&w, port, NULL), 400, "upgrade without a subprotocol is refused");
    ws_free(&w);
    is_int(ws_open(&w, port, "chat"), 400, "upgrade with another subprotocol is refused");
    ws_free(&w);
    is_int(ws_open(&w, port, "crdt.v1"), 101, "crdt.v1 upgrades");
    ws_text(&w, "{\"type\":\"subscribe\",\"id\":1,\"prefixes\":[\"\"]}");
    is_int(ws_wait_close(&w, T), 4003, "a first message other than hello closes with 4003");
    ws_free(&w);
    ws_open(&w, port, "crdt.v1");
    ws_text(&w, "not json");
    is_int(ws_wait_close(&w, T), 4003, "garbage before hello: 4003");
    ws_free(&w);
    ws_open(&w, port, "crdt.v1");
    ws_text(&w, "{\"type\":\"hello\",\"client\":\"bad id!\"}");
    is_int(ws_wait_close(&w, T), 4003, "a hello with a bad client id: 4003");
    ws_free(&w);

    json_t *wel = session(&w, port, "c1", NULL);
    ok(wel != NULL, "hello -> welcome");
    is_int(jint(wel, "node"), 1, "welcome: node id");
    ok(jint(wel, "seq") >= 0, "welcome: seq");
    is_int(strlen(jstr(wel, "session")), 16, "welcome: a session id");
    json_t *lim = json_object_get(wel, "limits");
    is_int(jint(lim, "max_message"), 4096, "welcome: limits.max_message");
    is_int(jint(lim, "max_subscriptions"), 4, "welcome: limits.max_subscriptions");
    json_decref(wel);
    is(error_code(&w, "{\"type\":\"hello\",\"client\":\"c1\"}"), "bad_request",
       "a second hello is an error");
    ok(alive(&w), "ping -> pong");
    ws_free(&w);
}

static uint64_t test_apply(int port)
{
    ws_raw_t w;
    char m[512];
    json_t *wel = session(&w, port, "writer-1", NULL);
    json_decref(wel);
    ws_text(&w, apply_msg(m, sizeof(m), 1, "clicks", "{\"type\":\"pncounter\",\"op\":\"incr\"}"));
    json_t *a = expect(&w, "ack");
    is_int(jint(a, "id"), 1, "ack carries the op id");
    ok(json_is_true(json_object_get(a, "applied")), "ack: applied");
    uint64_t seq = (uint64_t)jint(a, "seq");
    ok(seq > 0, "ack: seq");
    ok(metric(port, "crdtd_durable_seq") >= (double)seq,
       "the ack came once the write was durable (--fsync always)");
    json_decref(a);
    is_int(counter_value(port, "clicks"), 1, "REST reads the applied op");

    ws_text(&w, apply_msg(m, sizeof(m), 1, "clicks", "{\"type\":\"pncounter\",\"op\":\"incr\"}"));
    a = expect(&w, "ack");
    ok(json_is_true(json_object_get(a, "duplicate")), "the same id again: acked as duplicate");
    ok(json_is_false(json_object_get(a, "applied")), "duplicate: not applied");
    json_decref(a);
    is_int(counter_value(port, "clicks"), 1, "no double effect: counter still 1");

    /* a delta (a libcrdt frame) instead of an op */
    ws_text(&w,
            "{\"type\":\"apply\",\"id\":2,\"key\":\"tags\",\"delta\":{\"type\":\"gcounter\","
            "\"state\":{\"slots\":[{\"replica\":9,\"value\":5}]}}}");
    a = expect(&w, "ack");
    is_int(jint(a, "id"), 2, "a delta apply is acked");
    json_decref(a);
    is_int(counter_value(port, "tags"), 5, "the delta was joined");

    /* another session of the same client continues the ids */
    ws_raw_t w2;
    wel = session(&w2, port, "writer-1", NULL);
    json_decref(wel);
    ws_text(&w2, apply_msg(m, sizeof(m), 2, "clicks", "{\"type\":\"pncounter\",\"op\":\"incr\"}"));
    a = expect(&w2, "ack");
    ok(json_is_true(json_object_get(a, "duplicate")), "dedupe spans sessions of a client id");
    json_decref(a);
    ws_text(&w2, apply_msg(m, sizeof(m), 3, "clicks", "{\"type\":\"pncounter\",\"op\":\"incr\"}"));
    a = expect(&w2, "ack");
    ok(json_is_true(json_object_get(a, "applied")), "a new id applies");
    json_decref(a);
    is_int(counter_value(port, "clicks"), 2, "counter 2");
    /* another client id has its own ids */
    ws_raw_t w3;
    wel = session(&w3, port, "writer-2", NULL);
    json_decref(wel);
    ws_text(&w3, apply_msg(m, sizeof(m), 1, "clicks", "{\"type\":\"pncounter\",\"op\":\"incr\"}"));
    a = expect(&w3, "ack");
    ok(json_is_true(json_object_get(a, "applied")), "ids are per client id");
    json_decref(a);
    is_int(counter_value(port, "clicks"), 3, "counter 3");
    ws_free(&w);
    ws_free(&w2);
    ws_free(&w3);
    return seq;
}

/* ---- the malformed corpus ------------------------------------------------------------------- */

static void test_corpus(int port)
{
    ws_raw_t w;
    char m[512];
    json_t *wel = session(&w, port, "corpus-1", NULL);
    json_decref(wel);
    is(error_code(&w, "{\"type\":"), "bad_json", "truncated JSON: bad_json");
    is(error_code(&w, "[1,2]"), "bad_json", "not an object: bad_json");
    is(error_code(&w, "{\"type\":5}"), "bad_request", "type not a string: bad_request");
    is(error_code(&w, "{\"type\":\"frobnicate\"}"), "unknown_type", "unknown type");
    is(error_code(&w, "{\"type\":\"apply\",\"id\":\"7\",\"key\":\"key\",\"op\":{}}"),
       "bad_request", "id of the wrong type");
    ws_free(&w);
    still_serves(port, "the first errors");

    wel = session(&w, port, "corpus-2", NULL);
    json_decref(wel);
    is(error_code(&w, "{\"type\":\"apply\",\"id\":1,\"key\":{\"base64\":\"!!!\"},\"op\":{\"type\":\"gcounter\","
                      "\"op\":\"incr\"}}"),
       "bad_request", "bad base64 key");
    is(error_code(&w, apply_msg(m, sizeof(m), 2, "k", "{\"type\":\"quux\",\"op\":\"incr\"}")),
       "unknown_type", "unknown CRDT type");
    is(error_code(&w, apply_msg(m, sizeof(m), 3, "clicks", "{\"op\":\"frob\"}")), "unknown_op",
       "unknown op");
    is(error_code(&w, apply_msg(m, sizeof(m), 4, "clicks",
                                "{\"type\":\"orset\",\"op\":\"add\",\"member\":\"x\"}")),
       "wrong_type", "op of another type on a key: wrong_type");
    ws_free(&w);

    wel = session(&w, port, "corpus-3", NULL);
    json_decref(wel);
    is(error_code(&w, "{\"type\":\"apply\",\"id\":5,\"key\":\"key\",\"delta\":{\"type\":\"orset\","
                      "\"state\":17}}"),
       "bad_request", "a bad delta frame");
    is(error_code(&w, "{\"type\":\"subscribe\",\"id\":1,\"keys\":\"a2V5\"}"), "bad_request",
       "keys not an array");
    ws_frame(&w, WS_OP_BINARY, true, "\x01\x02", 2);
    json_t *e = expect(&w, "error");
    is(jstr(e, "code"), "bad_request", "a binary frame: bad_request");
    json_decref(e);
    ws_free(&w);

    /* an oversized message, in one frame and in fragments: discarded, too_large, session open */
    wel = session(&w, port, "corpus-4", NULL);
    json_decref(wel);
    size_t big = 10000;
    char *huge = malloc(big + 1);
    memset(huge, ' ', big);
    huge[0] = '{';
    huge[big - 1] = '}';
    huge[big] = 0;
    is(error_code(&w, huge), "too_large", "a message over --ws-max-message: too_large");
    ok(alive(&w), "the session stays open after too_large");
    for (int i = 0; i < 5; i++)
        ws_frame(&w, i ? WS_OP_CONT : WS_OP_TEXT, i == 4, huge, 2000);
    e = expect(&w, "error");
    is(jstr(e, "code"), "too_large", "a fragmented message over the limit: too_large");
    json_decref(e);
    ok(alive(&w), "still open");
    free(huge);

    /* a valid message in three fragments, with a ping between them */
    const char *msg = "{\"type\":\"ping\"}";
    ws_frame(&w, WS_OP_TEXT, false, msg, 5);
    ws_frame(&w, WS_OP_PING, true, "hi", 2);
    ws_frame(&w, WS_OP_CONT, false, msg + 5, 5);
    ws_frame(&w, WS_OP_CONT, true, msg + 10, strlen(msg) - 10);
    e = expect(&w, "pong");
    ok(e != NULL, "a fragmented message (with a ping between fragments) is reassembled");
    json_decref(e);
    ws_frame(&w, WS_OP_PONG, true, "", 0);
    ok(alive(&w), "an unsolicited pong is ignored");
    ws_free(&w);
    still_serves(port, "oversized and fragmented messages");

    /* a truncated frame, then the connection closes */
    ws_open(&w, port, "crdt.v1");
    ws_bytes(&w, "\x81\xfe\x10", 3);
    ws_free(&w);
    ws_open(&w, port, "crdt.v1");
    ws_text(&w, "{\"type\":\"hello\",\"client\":\"t\"}");
    ws_bytes(&w, "\x81\x85\x00\x00\x00\x00{\"ty", 10);
    ws_free(&w);
    still_serves(port, "truncated frames");

    /* --ws-max-errors 5: the sixth bad message closes with 4009 */
    wel = session(&w, port, "corpus-5", NULL);
    json_decref(wel);
    for (int i = 0; i < 5; i++)
        error_code(&w, "nope");
    ws_text(&w, "nope");
    is_int(ws_wait_close(&w, T), 4009, "past --ws-max-errors: closed with 4009");
    ws_free(&w);
    still_serves(port, "a 4009 close");
}

/* ---- subscribe, catch-up, live, resume ------------------------------------------------------ */

static uint64_t put_reg(int port, const char *key, const char *val)
{
    char path[600], body[600];
    snprintf(path, sizeof(path), "/v1/keys/%s", hc_pct(key));
    snprintf(body, sizeof(body), "{\"type\":\"lwwreg\",\"op\":\"set\",\"value\":\"%s\"}",
             (val));
    json_t *j;
    rest(port, "POST", path, body, &j);
    uint64_t seq = (uint64_t)jint(j, "seq");
    json_decref(j);
    return seq;
}

static void test_subscribe(int port)
{
    put_reg(port, "feed:1", "a");
    put_reg(port, "feed:2", "b");
    put_reg(port, "other", "x");
    uint64_t s3 = put_reg(port, "feed:3", "c");

    ws_raw_t w;
    char m[512];
    json_t *wel = session(&w, port, "sub-1", NULL);
    json_decref(wel);
    snprintf(m, sizeof(m), "{\"type\":\"subscribe\",\"id\":7,\"prefixes\":[\"%s\"],\"since\":0}",
             ("feed:"));
    ws_text(&w, m);
    int states = 0;
    bool order = true;
    uint64_t last = 0;
    json_t *j;
    while ((j = next_msg(&w, T)) && !strcmp(jstr(j, "type"), "change")) {
        states += json_object_get(j, "state") != NULL;
        order = order && (uint64_t)jint(j, "seq") > last;
        last = (uint64_t)jint(j, "seq");
        ok(strncmp(jstr(j, "key"), "feed:", 5) == 0,
           "catch-up key under the prefix");
        json_decref(j);
    }
    is_int(states, 3, "catch-up: the full state of the 3 keys under the prefix");
    ok(order, "catch-up in change-feed order");
    is(jstr(j, "type"), "subscribed", "then subscribed");
    is_int(jint(j, "id"), 7, "subscribed echoes the id");
    uint64_t cursor = (uint64_t)jint(j, "cursor");
    ok(cursor >= s3, "subscribed cursor covers the catch-up");
    json_decref(j);

    uint64_t s4 = put_reg(port, "feed:2", "bb");
    put_reg(port, "other", "y");
    j = expect(&w, "change");
    is(jstr(j, "key"), ("feed:2"), "live change for a key under the prefix");
    ok(json_object_get(j, "delta") != NULL, "live changes carry the delta");
    is_int(jint(j, "seq"), (long long)s4, "with its seq");
    is_int(jint(j, "cursor"), (long long)s4, "cursor = seq once caught up");
    json_decref(j);
    ok(alive(&w), "no change for keys outside the subscription");

    /* resume: what changed after the cursor only */
    put_reg(port, "feed:1", "aa");
    ws_raw_t w2;
    wel = session(&w2, port, "sub-2", NULL);
    json_decref(wel);
    snprintf(m, sizeof(m), "{\"type\":\"subscribe\",\"id\":8,\"prefixes\":[\"%s\"],\"since\":%llu}",
             ("feed:"), (unsigned long long)s4);
    ws_text(&w2, m);
    j = next_msg(&w2, T);
    is(jstr(j, "key"), ("feed:1"), "resume from a cursor: the key changed since");
    json_decref(j);
    j = next_msg(&w2, T);
    is(jstr(j, "type"), "subscribed", "and nothing else");
    json_decref(j);

    /* exact keys, unsubscribe */
    snprintf(m, sizeof(m), "{\"type\":\"subscribe\",\"id\":9,\"keys\":[\"%s\"]}",
             ("other"));
    ws_text(&w2, m);
    j = expect(&w2, "subscribed");
    ok(j != NULL, "subscribe to an exact key");
    json_decref(j);
    put_reg(port, "other", "z");
    j = expect(&w2, "change");
    is(jstr(j, "key"), ("other"), "live change of the exact key");
    json_decref(j);
    snprintf(m, sizeof(m), "{\"type\":\"unsubscribe\",\"id\":10,\"keys\":[\"%s\"]}",
             ("other"));
    ws_text(&w2, m);
    j = expect(&w2, "unsubscribed");
    is_int(jint(j, "id"), 10, "unsubscribed");
    json_decref(j);
    put_reg(port, "other", "zz");
    j = next_msg(&w2, 300);
    ok(j == NULL, "no change after unsubscribe");
    json_decref(j);

    /* the op-id marks are never delivered, even to a subscription of every key */
    snprintf(m, sizeof(m), "{\"type\":\"subscribe\",\"id\":11,\"prefixes\":[\"\"],\"since\":0}");
    ws_text(&w2, m);
    bool reserved = false;
    while ((j = next_msg(&w2, T)) && !strcmp(jstr(j, "type"), "change")) {
        reserved = reserved || !strncmp(jstr(j, "key"), "AGMv", 4);
        json_decref(j);
    }
    json_decref(j);
    ok(!reserved, "reserved keys are hidden from subscriptions");
    snprintf(m, sizeof(m),
             "{\"type\":\"apply\",\"id\":1,\"key\":{\"base64\":\"AGMvAHgx\"},\"op\":{\"type\":"
             "\"timeline\",\"op\":\"add\",\"member\":\"hwm\",\"score\":1e9}}");
    is(error_code(&w2, m), "bad_request", "reserved keys cannot be written");

    /* --ws-max-subscriptions 4 */
    snprintf(m, sizeof(m),
             "{\"type\":\"subscribe\",\"id\":12,\"keys\":[\"a\",\"b\",\"c\"]}");
    is(error_code(&w2, m), "limit", "over --ws-max-subscriptions: limit");
    ws_free(&w);
    ws_free(&w2);
}

/* ---- byte strings: text and binary keys and members, both ways -------------------------------- */

static void test_byte_strings(int port)
{
    ws_raw_t w;
    json_t *wel = session(&w, port, "bytes-1", NULL);
    json_decref(wel);
    ws_text(&w, "{\"type\":\"subscribe\",\"id\":1,\"keys\":[{\"base64\":\"AP8=\"},"
                "\"caf\u00e9\"],\"since\":0}");
    json_t *j = expect(&w, "subscribed");
    ok(j != NULL, "subscribed to a binary key and a text key");
    json_decref(j);
    ws_text(&w, "{\"type\":\"apply\",\"id\":1,\"key\":{\"base64\":\"AP8=\"},\"op\":{\"type\":"
                "\"orset\",\"op\":\"add\",\"members\":[{\"base64\":\"AA==\"},\"m\\\"q\"]}}");
    json_t *ack = NULL;
    j = NULL;
    for (int i = 0; i < 6 && (!ack || !j); i++) { /* the change and the ack, in either order */
        json_t *m = next_msg(&w, T);
        if (!m)
            break;
        if (!strcmp(jstr(m, "type"), "ack") && !ack)
            ack = m;
        else if (!strcmp(jstr(m, "type"), "change") && !j)
            j = m;
        else
            json_decref(m);
    }
    ok(ack && json_is_true(json_object_get(ack, "applied")), "apply to the key 00 FF: acked");
    json_decref(ack);
    json_t *k = json_object_get(j, "key");
    ok(json_is_object(k) && !strcmp(jstr(k, "base64"), "AP8="),
       "its change names the key {\"base64\":\"AP8=\"}");
    char *d = j ? json_dumps(json_object_get(j, "delta"), JSON_COMPACT) : NULL;
    ok(d && strstr(d, "{\"member\":{\"base64\":\"AA==\"},"),
       "the first delta's member, the byte 00: {\"base64\"}: %s", d ? d : "");
    free(d);
    json_decref(j);
    ws_text(&w, "{\"type\":\"apply\",\"id\":2,\"key\":{\"base64\":\"Y2Fmw6k=\"},\"op\":{\"type\":"
                "\"gcounter\",\"op\":\"incr\"}}");
    j = expect(&w, "change");
    ok(j && !strcmp(jstr(j, "key"), "caf\xc3\xa9"), "its change names the key as text");
    json_decref(j);
    ws_free(&w);
    json_t *r = NULL;
    is_int(rest(port, "GET", "/v1/keys64/AP8?state=0", NULL, &r), 200, "REST reads the key 00 FF");
    json_t *v = json_object_get(r, "value");
    ok(json_array_size(v) == 2 && json_is_object(json_array_get(v, 0)) &&
           !strcmp(json_string_value(json_array_get(v, 1)), "m\"q"),
       "with the members the session wrote");
    json_decref(r);
    /* the session's op-id marks live under the reserved prefix 00 'c' '/': never listed */
    char *body = NULL;
    hc_resp_t hr = {0};
    if (hc_request(port, "GET", "/v1/keys?limit=1000", NULL, &hr) == 0)
        body = hr.body;
    ok(body && strstr(body, "{\"base64\":\"AP8=\"}") && !strstr(body, "\"AGMv"),
       "GET /v1/keys lists 00 FF and no mark key (00 'c' '/'): %.300s", body ? body : "");
    hc_resp_free(&hr);
}

/* ---- tokens --------------------------------------------------------------------------------- */

static char *mint(const char *sub, int64_t exp, const char *read, const char *write)
{
    gw_grant_t r[1] = {{(uint8_t *)read, read ? strlen(read) : 0}};
    gw_grant_t w[1] = {{(uint8_t *)write, write ? strlen(write) : 0}};
    return gw_token_make(SECRET, strlen(SECRET), sub, exp, r, read ? 1 : 0, w, write ? 1 : 0);
}

static void test_tokens(int port, ws_raw_t *expiring)
{
    int64_t now = (int64_t)time(NULL);
    ws_raw_t w;
    char m[512];

    char *good = mint("alice", now + 3600, "", ("foo"));
    json_t *wel = session(&w, port, "t1", good);
    ok(wel != NULL, "a valid token: welcome");
    is(jstr(wel, "subject"), "alice", "welcome: subject");
    is_int(jint(wel, "expires"), (long long)(now + 3600), "welcome: expires");
    json_decref(wel);
    ws_text(&w, apply_msg(m, sizeof(m), 1, "foo:1", "{\"type\":\"gcounter\",\"op\":\"incr\"}"));
    json_t *a = expect(&w, "ack");
    ok(a != NULL, "write under the write grant: acked");
    json_decref(a);
    is(error_code(&w, apply_msg(m, sizeof(m), 2, "bar", "{\"type\":\"gcounter\",\"op\":\"incr\"}")),
       "unauthorized", "write outside the write grant: unauthorized");
    ws_free(&w);

    char *bad = strdup(good);
    size_t bl = strlen(bad);
    bad[bl - 2] = bad[bl - 2] == 'A' ? 'B' : 'A';
    ws_open(&w, port, "crdt.v1");
    snprintf(m, sizeof(m), "{\"type\":\"hello\",\"client\":\"t2\",\"token\":\"%s\"}", bad);
    ws_text(&w, m);
    is_int(ws_wait_close(&w, T), 4001, "a token with a bad MAC: 4001");
    ok(strstr(w.close_reason, "invalid") != NULL, "reason says invalid (%s)", w.close_reason);
    ws_free(&w);

    ws_open(&w, port, "crdt.v1");
    ws_text(&w, "{\"type\":\"hello\",\"client\":\"t3\"}");
    is_int(ws_wait_close(&w, T), 4001, "no token: 4001");
    ws_free(&w);

    char *old = mint("bob", now - 10, "", "");
    ws_open(&w, port, "crdt.v1");
    snprintf(m, sizeof(m), "{\"type\":\"hello\",\"client\":\"t4\",\"token\":\"%s\"}", old);
    ws_text(&w, m);
    is_int(ws_wait_close(&w, T), 4001, "an expired token: 4001");
    is(w.close_reason, "token expired", "with reason \"token expired\"");
    ws_free(&w);

    char *ro = mint("carol", now + 3600, ("foo"), NULL);
    wel = session(&w, port, "t5", ro);
    json_decref(wel);
    is(error_code(&w,
                  apply_msg(m, sizeof(m), 1, "foo:1", "{\"type\":\"gcounter\",\"op\":\"incr\"}")),
       "unauthorized", "a read-only grant cannot apply");
    snprintf(m, sizeof(m), "{\"type\":\"subscribe\",\"id\":1,\"keys\":[\"%s\"]}",
             ("bar"));
    is(error_code(&w, m), "unauthorized", "subscribe to a key outside the read grant");
    snprintf(m, sizeof(m), "{\"type\":\"subscribe\",\"id\":2,\"prefixes\":[\"%s\"]}",
             ("fo"));
    is(error_code(&w, m), "unauthorized", "subscribe to a prefix wider than the grant");
    snprintf(m, sizeof(m), "{\"type\":\"subscribe\",\"id\":3,\"prefixes\":[\"%s\"]}",
             ("foo:"));
    ws_text(&w, m);
    a = expect(&w, "subscribed");
    ok(a != NULL, "subscribe inside the read grant");
    json_decref(a);
    ws_free(&w);

    /* a token that expires in 2 s: the session is closed by the server's timer */
    char *soon = mint("dave", now + 2, "", "");
    wel = session(expiring, port, "t6", soon);
    ok(wel != NULL, "a token valid for 2 more seconds");
    json_decref(wel);
    free(good), free(bad), free(old), free(ro), free(soon);
}

/* ---- main ----------------------------------------------------------------------------------- */

int main(void)
{
    char *dir = test_tmpdir();
    char d1[512], d2[512], d3[512], secret_file[600];
    snprintf(d1, sizeof(d1), "%s/a", dir);
    snprintf(d2, sizeof(d2), "%s/b", dir);
    snprintf(d3, sizeof(d3), "%s/c", dir);
    snprintf(secret_file, sizeof(secret_file), "%s/secret", dir);
    FILE *f = fopen(secret_file, "w");
    fputs(SECRET, f);
    fclose(f);
    unsetenv("CRDTD_TOKEN_SECRET");

    crdtd_proc_t s1, s2, s3;
    const char *a1[] = {"--data-dir",
                        d1,
                        "--fsync",
                        "always",
                        "--ws-max-message",
                        "4096",
                        "--ws-max-subscriptions",
                        "4",
                        "--ws-max-errors",
                        "5",
                        NULL};
    if (crdtd_start(&s1, CRDTD_BIN, dir, a1))
        bail_out("cannot start crdtd");
    const char *a2[] = {"--data-dir", d2, "--token-secret-file", secret_file, NULL};
    if (crdtd_start(&s2, CRDTD_BIN, dir, a2))
        bail_out("cannot start crdtd with a token secret");
    const char *a3[] = {"--data-dir",
                        d3,
                        "--fsync",
                        "no",
                        "--ws-max-sessions",
                        "3",
                        "--ws-idle-timeout",
                        "1",
                        "--ws-send-queue",
                        "64K",
                        NULL};
    if (crdtd_start(&s3, CRDTD_BIN, dir, a3))
        bail_out("cannot start a third crdtd");

    test_handshake(s1.port);
    test_apply(s1.port);
    ws_raw_t expiring;
    test_tokens(s2.port, &expiring);
    test_corpus(s1.port);
    test_subscribe(s1.port);
    test_byte_strings(s1.port);

    /* every write is made by a writable callback and carries at least one message */
    double cbs = metric(s1.port, "crdtd_ws_writable_callbacks_total"),
           wr = metric(s1.port, "crdtd_ws_writes_total"),
           out = metric(s1.port, "crdtd_ws_messages_total{direction=\"out\"}");
    ok(wr > 0 && cbs >= wr && out >= wr,
       "/metrics: %.0f writable callbacks, %.0f writes, %.0f messages out", cbs, wr, out);

    /* --ws-max-sessions 3 and --ws-idle-timeout 1 on the third server */
    ws_raw_t ws[4];
    for (int i = 0; i < 3; i++) {
        json_t *wel = session(&ws[i], s3.port, "many", NULL);
        json_decref(wel);
    }
    is_int(ws_open(&ws[3], s3.port, "crdt.v1"), 101, "the fourth session upgrades");
    is_int(ws_wait_close(&ws[3], T), 4013, "and is closed with 4013 (--ws-max-sessions 3)");
    ws_free(&ws[3]);
    ok(alive(&ws[0]), "the first sessions are unaffected");
    usleep(1600 * 1000); /* silent, not answering pings, for more than the idle timeout */
    int code = ws_wait_close(&ws[1], T);
    is_int(code, 1001, "a silent session is closed after --ws-idle-timeout");
    for (int i = 0; i < 3; i++)
        ws_free(&ws[i]);

    /* the expiring token's session (opened in test_tokens) is closed by now or soon */
    is_int(ws_wait_close(&expiring, 4000), 4001, "a session whose token expires: closed with 4001");
    is(expiring.close_reason, "token expired", "reason \"token expired\"");
    ws_free(&expiring);

    /* slow consumer on the third server: subscribe, stop reading, write big values */
    ws_raw_t slow;
    json_t *wel = session(&slow, s3.port, "slow", NULL);
    json_decref(wel);
    ws_text(&slow, "{\"type\":\"subscribe\",\"id\":1,\"prefixes\":[\"\"]}");
    json_t *sj = expect(&slow, "subscribed");
    json_decref(sj);
    size_t vlen = 45000;
    char *val = malloc(vlen + 1), *body = malloc(vlen * 2 + 128);
    memset(val, 'v', vlen);
    val[vlen] = 0;
    size_t elen;
    char *venc = crdt_base64_encode(val, vlen, &elen);
    int writes = 0;
    for (; writes < 600 && metric(s3.port, "crdtd_ws_slow_consumer_total") < 1; writes++) {
        for (int k = 0; k < 10; k++) {
            snprintf(body, vlen * 2 + 128, "{\"type\":\"lwwreg\",\"op\":\"set\",\"value\":\"%s\"}",
                     venc);
            rest(s3.port, "POST", "/v1/keys/big", body, NULL);
        }
    }
    is_int((long long)metric(s3.port, "crdtd_ws_slow_consumer_total"), 1,
           "a subscriber that stops reading is dropped as a slow consumer (after %d writes)",
           writes * 10);
    code = ws_wait_close(&slow, 10000);
    ok(code == 4008 || code == 1006, "it sees close 4008 (or the connection drop): %d", code);
    ws_free(&slow);
    free(val), free(body), free(venc);
    still_serves(s3.port, "a slow consumer");

    /* metrics */
    ok(metric(s1.port, "crdtd_ws_sessions_opened_total") > 10, "metrics: sessions opened");
    ok(metric(s1.port, "crdtd_ws_acks_total") >= 5, "metrics: acks");

    /* exactly-once across a restart, with sessions open at SIGTERM */
    ws_raw_t open1;
    wel = session(&open1, s1.port, "lingering", NULL);
    json_decref(wel);
    int st = crdtd_stop(&s1, SIGTERM, 10000);
    ok(st >= 0 && WIFEXITED(st) && WEXITSTATUS(st) == 0, "SIGTERM with a session open: exit 0");
    ws_free(&open1);
    if (crdtd_start(&s1, CRDTD_BIN, dir, a1))
        bail_out("cannot restart crdtd");
    ws_raw_t w;
    char m[512];
    wel = session(&w, s1.port, "writer-1", NULL);
    json_decref(wel);
    ws_text(&w, apply_msg(m, sizeof(m), 3, "clicks", "{\"type\":\"pncounter\",\"op\":\"incr\"}"));
    json_t *a = expect(&w, "ack");
    ok(json_is_true(json_object_get(a, "duplicate")), "after a restart: still a duplicate");
    json_decref(a);
    is_int(counter_value(s1.port, "clicks"), 3, "and no double effect");
    ws_text(&w, apply_msg(m, sizeof(m), 4, "clicks", "{\"type\":\"pncounter\",\"op\":\"incr\"}"));
    a = expect(&w, "ack");
    ok(json_is_true(json_object_get(a, "applied")), "the next id applies");
    json_decref(a);
    ws_free(&w);

    for (crdtd_proc_t *p = &s1; p; p = p == &s1 ? &s2 : p == &s2 ? &s3 : NULL) {
        st = crdtd_stop(p, SIGTERM, 10000);
        ok(st >= 0 && WIFEXITED(st) && WEXITSTATUS(st) == 0, "crdtd on port %d exits 0", p->port);
    }
    rm_rf(dir);
    free(dir);
    return done_testing();
}
