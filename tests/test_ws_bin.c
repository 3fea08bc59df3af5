/* test_ws_bin.c - binary crdt.v1 (subprotocol crdt.v1.bin) against a real crdtd: the handshake,
 * binary subscribe, apply, ack and change (live deltas and catch-up states), duplicates, JSON and
 * binary sessions side by side, and malformed binary messages after each of which it still serves
 */
#include "tap.h"

#include <jansson.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>

#include "crdt_v1.h"
#include "crdt_v1_bin.h"
#include "http_client.h"
#include "ws_raw.h"

#ifndef CRDTD_BIN
#error "CRDTD_BIN (the crdtd binary) must be defined"
#endif

#define T 5000 /* ms to wait for any one reply */

/* Opens a crdt.v1.bin (or crdt.v1) session and says hello; true on welcome. */
static bool session(ws_raw_t *w, int port, const char *proto, const char *client)
{
    if (ws_open(w, port, proto) != 101)
        return false;
    char hello[200];
    snprintf(hello, sizeof(hello), "{\"type\":\"hello\",\"client\":\"%s\"}", client);
    ws_text(w, hello);
    char *m = ws_wait_type(w, "welcome", T);
    free(m);
    return m != NULL;
}

/* The next binary message decoded as the server's, or false (a text one, a timeout, a close).
 * *text gets a text message instead, when text is not NULL. */
static bool next_bin(ws_raw_t *w, crdt_v1_msg_t *m, size_t *len, char **text)
{
    char *p = NULL;
    size_t n = 0;
    int op = ws_recv(w, T, &p, &n);
    if (text)
        *text = NULL;
    if (op == WS_OP_TEXT && text) {
        *text = p;
        return false;
    }
    crdt_v1_error_t e;
    bool got = op == WS_OP_BINARY &&
               crdt_v1_bin_decode((const uint8_t *)p, n, CRDT_V1_FROM_SERVER, NULL, m, &e) == 0;
    if (op == WS_OP_BINARY && !got)
        diag("undecodable: %s", e.text);
    if (len)
        *len = n;
    free(p);
    return got;
}

static void send_bin(ws_raw_t *w, const crdt_v1_msg_t *m)
{
    crdt_buf_t b = {0};
    if (crdt_v1_bin_encode(m, &b) == 0)
        ws_frame(w, WS_OP_BINARY, true, b.data, b.len);
    crdt_buf_free(&b);
}

static void subscribe(ws_raw_t *w, uint64_t id, const char *topic, bool prefix, bool has_since)
{
    crdt_v1_topic_t t = {.bytes = (uint8_t *)topic, .len = strlen(topic), .prefix = prefix};
    crdt_v1_msg_t m = {
        .type = CRDT_V1_SUBSCRIBE, .id = id, .topics = &t, .ntopics = 1, .has_since = has_since};
    send_bin(w, &m);
}

static void apply(ws_raw_t *w, uint64_t id, const char *key, const crdt_obj_t *delta)
{
    crdt_v1_msg_t m = {.type = CRDT_V1_APPLY,
                       .id = id,
                       .key = (uint8_t *)key,
                       .klen = strlen(key),
                       .obj = (crdt_obj_t *)delta};
    send_bin(w, &m);
}

/* The code of the next message, which must be a JSON error (with id when want_id > 0). */
static char *error_of(ws_raw_t *w, long long want_id)
{
    static char code[64];
    char *m = ws_wait_type(w, "error", T);
    json_t *j = m ? json_loads(m, 0, NULL) : NULL;
    const char *c = json_string_value(json_object_get(j, "code"));
    snprintf(code, sizeof(code), "%s", c ? c : "(none)");
    if (want_id > 0 && json_integer_value(json_object_get(j, "id")) != want_id)
        snprintf(code, sizeof(code), "(wrong id)");
    json_decref(j);
    free(m);
    return code;
}

static bool alive(ws_raw_t *w)
{
    ws_text(w, "{\"type\":\"ping\"}");
    char *m = ws_wait_type(w, "pong", T);
    free(m);
    return m != NULL;
}

static void test_handshake(int port)
{
    ws_raw_t w;
    is_int(ws_open(&w, port, "crdt.v1.bin"), 101, "crdt.v1.bin upgrades");
    static const uint8_t sub[] = {0x01, 1, 0, 1, 1, 0};
    ws_frame(&w, WS_OP_BINARY, true, sub, sizeof(sub));
    is_int(ws_wait_close(&w, T), 4003, "a binary message before hello: 4003");
    is(w.close_reason, "hello expected: binary frame", "its reason");
    ws_free(&w);
    ok(session(&w, port, "crdt.v1.bin", "bin-hs"), "hello and welcome stay JSON");
    ok(alive(&w), "ping and pong stay JSON");
    ws_free(&w);
}

static void test_data(int port)
{
    ws_raw_t a, j, wr, b;
    ok(session(&a, port, "crdt.v1.bin", "bin-a"), "subscriber a (binary)");
    ok(session(&j, port, "crdt.v1", "json-j"), "subscriber j (JSON)");
    ok(session(&wr, port, "crdt.v1.bin", "bin-w"), "writer (binary)");
    subscribe(&a, 1, "feed:", true, false);
    crdt_v1_msg_t m;
    size_t len = 0;
    ok(next_bin(&a, &m, NULL, NULL) && m.type == CRDT_V1_SUBSCRIBED && m.id == 1,
       "a binary subscribe is answered with a binary subscribed");
    crdt_v1_msg_clear(&m);
    ws_text(&j, "{\"type\":\"subscribe\",\"id\":1,\"prefixes\":[\"\"]}");
    char *sj = ws_wait_type(&j, "subscribed", T);
    ok(sj != NULL, "the JSON session subscribes to everything");
    free(sj);

    /* a binary apply of a timeline delta */
    crdt_obj_t *tl = crdt_timeline_new(1000), *delta = NULL;
    crdt_timeline_add(tl, "post:3", 6, 1700000400, &delta);
    apply(&wr, 10, "feed:12", delta);
    ok(next_bin(&wr, &m, NULL, NULL) && m.type == CRDT_V1_ACK && m.id == 10 && m.applied &&
           !m.duplicate && m.seq > 0,
       "a binary apply is acked in binary (applied)");
    crdt_v1_msg_clear(&m);
    bool got = next_bin(&a, &m, &len, NULL);
    ok(got && m.type == CRDT_V1_CHANGE && !m.full && m.klen == 7 && !memcmp(m.key, "feed:12", 7) &&
           crdt_obj_equal(m.obj, delta) && m.cursor == m.seq,
       "the subscriber gets the delta as a binary change");
    diag("one small timeline change to a binary subscriber: %zu bytes of message, %zu on the "
         "wire (JSON crdt.v1: 245)",
         len, len + 2);
    cmp_ok(len + 2, "<", 70, "fewer bytes than Yjs's 70");
    crdt_v1_msg_clear(&m);
    char *jc = ws_wait_type(&j, "change", T);
    ok(jc && strstr(jc, "\"delta\":{\"type\":\"timeline\""), "the JSON session gets it as JSON");
    if (jc)
        diag("the same change in JSON crdt.v1: %zu bytes", strlen(jc));
    free(jc);

    /* a retry with the same id: a duplicate, no second change */
    apply(&wr, 10, "feed:12", delta);
    ok(next_bin(&wr, &m, NULL, NULL) && m.type == CRDT_V1_ACK && m.id == 10 && !m.applied &&
           m.duplicate,
       "the same id again: acked as a duplicate");
    crdt_v1_msg_clear(&m);
    /* a join of what is there: applied false */
    apply(&wr, 11, "feed:12", delta);
    ok(next_bin(&wr, &m, NULL, NULL) && m.type == CRDT_V1_ACK && m.id == 11 && !m.applied &&
           !m.duplicate,
       "a delta already known: acked, not applied");
    crdt_v1_msg_clear(&m);
    /* another type than the key holds: the JSON error with the id */
    crdt_obj_t *g = crdt_obj_new(CRDT_GCOUNTER), *gd = NULL;
    crdt_gcounter_incr(g, 5, 1, &gd);
    apply(&wr, 12, "feed:12", gd);
    is(error_of(&wr, 12), "wrong_type", "a delta of another type: wrong_type with its id");

    /* catch-up: a new binary session gets the full state */
    ok(session(&b, port, "crdt.v1.bin", "bin-b"), "subscriber b");
    subscribe(&b, 5, "feed:12", false, true); /* since 0 */
    ok(next_bin(&b, &m, NULL, NULL) && m.type == CRDT_V1_CHANGE && m.full &&
           crdt_obj_equal(m.obj, tl),
       "a catch-up is a binary change with the full state");
    crdt_v1_msg_clear(&m);
    ok(next_bin(&b, &m, NULL, NULL) && m.type == CRDT_V1_SUBSCRIBED && m.id == 5,
       "then a binary subscribed");
    crdt_v1_msg_clear(&m);
    /* a JSON subscribe on a binary session works too (the answer is binary) */
    ws_text(&b, "{\"type\":\"subscribe\",\"id\":6,\"prefixes\":[\"\"],\"since\":0}");
    bool sub6 = false;
    for (int i = 0; i < 10 && !sub6; i++) {
        if (!next_bin(&b, &m, NULL, NULL))
            break;
        sub6 = m.type == CRDT_V1_SUBSCRIBED && m.id == 6;
        crdt_v1_msg_clear(&m);
    }
    ok(sub6, "a JSON subscribe on a binary session: a binary subscribed");
    crdt_v1_topic_t t = {.bytes = (uint8_t *)"feed:12", .len = 7};
    crdt_v1_msg_t un = {.type = CRDT_V1_UNSUBSCRIBE, .id = 7, .topics = &t, .ntopics = 1};
    send_bin(&b, &un);
    char *u = ws_wait_type(&b, "unsubscribed", T);
    ok(u != NULL, "a binary unsubscribe: unsubscribed (JSON)");
    free(u);

    crdt_obj_free(gd);
    crdt_obj_free(g);
    crdt_obj_free(delta);
    crdt_obj_free(tl);
    ws_free(&a);
    ws_free(&j);
    ws_free(&wr);
    ws_free(&b);
}

static void test_bad(int port)
{
    ws_raw_t w;
    ok(session(&w, port, "crdt.v1.bin", "bin-bad"), "a session for bad input");
    static const struct {
        const char *name, *code;
        long long id;
        uint8_t bytes[16];
        size_t n;
    } cases[] = {
        {"an unknown type", "unknown_type", 0, {0x09, 1, 2}, 3},
        {"a server's type", "unknown_type", 0, {0x41, 1, 0, 1, 1, 'k', 1}, 7},
        {"a truncated subscribe", "bad_request", 3, {0x01, 3, 0, 2, 0}, 5},
        {"a varint that is not canonical", "bad_request", 0, {0x01, 0x83, 0x00, 0}, 4},
        {"no topics", "bad_request", 4, {0x01, 4, 0, 0}, 4},
        {"a corrupt delta", "bad_request", 20, {0x03, 20, 1, 'k', 1, 6, 0xff, 0xff}, 8},
        {"an apply without a delta", "bad_request", 21, {0x03, 21, 1, 'k'}, 4},
        {"a reserved key", "bad_request", 22, {0x03, 22, 3, 0, 'c', '/', 1, 1, 0, 0, 0}, 11},
        {"an empty message", "bad_request", 0, {0}, 0},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        ws_frame(&w, WS_OP_BINARY, true, cases[i].bytes, cases[i].n);
        is(error_of(&w, cases[i].id), cases[i].code, "%s: %s%s", cases[i].name, cases[i].code,
           cases[i].id ? " with its id" : "");
        ok(alive(&w), "%s: the session still serves", cases[i].name);
    }
    ws_free(&w);
    /* a JSON session is still refused binary frames */
    ok(session(&w, port, "crdt.v1", "json-bad"), "a JSON session");
    static const uint8_t sub[] = {0x01, 1, 0, 1, 1, 0};
    ws_frame(&w, WS_OP_BINARY, true, sub, sizeof(sub));
    is(error_of(&w, 0), "bad_request", "a binary message on a crdt.v1 session: bad_request");
    ws_free(&w);
}

int main(void)
{
    char *dir = test_tmpdir();
    char d1[512];
    snprintf(d1, sizeof(d1), "%s/a", dir);
    unsetenv("CRDTD_TOKEN_SECRET");
    crdtd_proc_t s1;
    const char *a1[] = {"--data-dir", d1, "--fsync", "always", NULL};
    if (crdtd_start(&s1, CRDTD_BIN, dir, a1))
        bail_out("cannot start crdtd");
    test_handshake(s1.port);
    test_data(s1.port);
    test_bad(s1.port);
    int st = crdtd_stop(&s1, SIGTERM, 10000);
    ok(st >= 0 && WIFEXITED(st) && WEXITSTATUS(st) == 0, "crdtd exits 0");
    rm_rf(dir);
    free(dir);
    return done_testing();
}
