/* test_ws_defer.c - crdt.v1 sessions over a store whose calls complete later
 * (CRDTD_TEST_STORE_DEFER=1: crdtd wraps its store in crdt_store_deferred_wrap and runs the calls
 * on a timer): acks, duplicates and catch-ups still right, messages behind an apply in flight run
 * in order, and sessions closed while their store calls are in flight harm nothing (the ASan
 * build turns a late completion touching a freed session into a failure) */
#include "tap.h"

#include <jansson.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "crdt_json.h"
#include "http_client.h"
#include "ws_raw.h"

#ifndef CRDTD_BIN
#error "CRDTD_BIN (the crdtd binary) must be defined"
#endif

#define T 5000 /* ms to wait for any one reply */

static json_t *next_text(ws_raw_t *w)
{
    char *m = NULL;
    int op = ws_recv(w, T, &m, NULL);
    json_t *j = op == WS_OP_TEXT && m ? json_loads(m, 0, NULL) : NULL;
    free(m);
    return j;
}

static const char *jstr(const json_t *o, const char *f)
{
    json_t *v = json_object_get(o, f);
    return json_is_string(v) ? json_string_value(v) : "";
}

static long long jint(const json_t *o, const char *f)
{
    json_t *v = json_object_get(o, f);
    return json_is_integer(v) ? json_integer_value(v) : -1;
}

static bool session(ws_raw_t *w, int port, const char *client)
{
    if (ws_open(w, port, "crdt.v1") != 101)
        return false;
    char hello[256];
    snprintf(hello, sizeof(hello), "{\"type\":\"hello\",\"client\":\"%s\",\"cursor\":0}", client);
    ws_text(w, hello);
    json_t *j = next_text(w);
    bool ok = j && !strcmp(jstr(j, "type"), "welcome");
    json_decref(j);
    return ok;
}

static void send_incr(ws_raw_t *w, long long id, const char *key)
{
    char m[512];
    snprintf(m, sizeof(m),
             "{\"type\":\"apply\",\"id\":%lld,\"key\":\"%s\",\"op\":{\"type\":\"pncounter\","
             "\"op\":\"incr\"}}",
             id, (key));
    ws_text(w, m);
}

static long long counter_value(int port, const char *key)
{
    char path[600];
    char *e = crdt_base64_encode_ex(key, strlen(key), CRDT_B64_URL | CRDT_B64_NOPAD, NULL);
    snprintf(path, sizeof(path), "/v1/keys64/%s?state=0", e ? e : "");
    crdt_free(e);
    hc_resp_t r = {0};
    long long v = -1;
    if (!hc_request(port, "GET", path, NULL, &r) && r.status == 200) {
        json_t *j = json_loadb(r.body, r.body_len, 0, NULL);
        json_t *val = json_object_get(j, "value");
        v = json_is_integer(val) ? json_integer_value(val) : -1;
        json_decref(j);
    } else if (r.status == 404) {
        v = 0;
    }
    hc_resp_free(&r);
    return v;
}

static bool alive(ws_raw_t *w)
{
    if (ws_text(w, "{\"type\":\"ping\"}"))
        return false;
    char *m = ws_wait_type(w, "pong", T);
    free(m);
    return m != NULL;
}

static void test_in_order(int port)
{
    ws_raw_t w;
    ok(session(&w, port, "defer-1"), "a session over the deferred store says hello");
    /* pipelined: three applies, a retry of the second right behind it, and a ping */
    send_incr(&w, 10, "d:ord");
    send_incr(&w, 11, "d:ord");
    send_incr(&w, 11, "d:ord");
    send_incr(&w, 12, "d:ord");
    ws_text(&w, "{\"type\":\"ping\"}");
    long long ids[5] = {0};
    bool dup[5] = {0}, applied[5] = {0};
    int nacks = 0;
    bool pong = false;
    for (int i = 0; i < 10 && (nacks < 4 || !pong); i++) {
        json_t *j = next_text(&w);
        if (!j)
            break;
        if (!strcmp(jstr(j, "type"), "ack") && nacks < 4) {
            ids[nacks] = jint(j, "id");
            dup[nacks] = json_is_true(json_object_get(j, "duplicate"));
            applied[nacks] = json_is_true(json_object_get(j, "applied"));
            nacks++;
        } else if (!strcmp(jstr(j, "type"), "pong")) {
            pong = true;
        }
        json_decref(j);
    }
    is_int(nacks, 4, "four acks");
    ok(ids[0] == 10 && ids[1] == 11 && ids[2] == 11 && ids[3] == 12, "in the order sent");
    ok(applied[0] && applied[1] && applied[3], "10, 11 and 12 applied");
    /* without the session's messages waiting behind its apply in flight, both 11s would read
     * the mark before either wrote it, and both would apply */
    ok(dup[2] && !applied[2], "the retry of 11 right behind it is a duplicate");
    ok(pong, "the ping behind them is answered");
    is_int(counter_value(port, "d:ord"), 3, "three increments, not four");
    ws_free(&w);
}

static void test_catch_up(int port)
{
    for (int i = 0; i < 40; i++) {
        char key[32], path[128];
        snprintf(key, sizeof(key), "cu:%02d", i);
        char *e = crdt_base64_encode_ex(key, strlen(key), CRDT_B64_URL | CRDT_B64_NOPAD, NULL);
        snprintf(path, sizeof(path), "/v1/keys64/%s", e ? e : "");
        crdt_free(e);
        hc_resp_t r = {0};
        hc_request(port, "POST", path, "{\"type\":\"gcounter\",\"op\":\"incr\",\"by\":1}", &r);
        hc_resp_free(&r);
    }
    ws_raw_t w;
    ok(session(&w, port, "defer-2"), "a subscriber");
    char m[256];
    snprintf(m, sizeof(m), "{\"type\":\"subscribe\",\"id\":5,\"prefixes\":[\"%s\"],\"since\":0}",
             ("cu:"));
    ws_text(&w, m);
    int states = 0;
    bool subscribed = false;
    for (int i = 0; i < 100 && !subscribed; i++) {
        json_t *j = next_text(&w);
        if (!j)
            break;
        if (!strcmp(jstr(j, "type"), "change") && json_object_get(j, "state"))
            states++;
        subscribed = !strcmp(jstr(j, "type"), "subscribed") && jint(j, "id") == 5;
        json_decref(j);
    }
    is_int(states, 40, "the catch-up read from the deferred feed sends every key's state");
    ok(subscribed, "then subscribed");
    ws_free(&w);
}

static void test_close_in_flight(int port)
{
    /* a session closed right after its apply: the op takes effect at most once, and a retry on a
     * new session finds out which */
    long long before = counter_value(port, "d:gone");
    ws_raw_t w;
    ok(session(&w, port, "defer-3"), "a session");
    send_incr(&w, 20, "d:gone");
    ws_free(&w); /* gone before the store completes anything */
    usleep(50 * 1000);
    ws_raw_t w2;
    ok(session(&w2, port, "defer-3"), "the same client again");
    send_incr(&w2, 20, "d:gone");
    char *a = ws_wait_type(&w2, "ack", T);
    ok(a != NULL, "the retry is acked");
    free(a);
    is_int(counter_value(port, "d:gone") - (before < 0 ? 0 : before), 1,
           "the op took effect exactly once");
    ws_free(&w2);

    /* many sessions closing in the middle of applies and catch-ups */
    for (int i = 0; i < 30; i++) {
        ws_raw_t z;
        char client[32];
        snprintf(client, sizeof(client), "gone-%d", i);
        if (!session(&z, port, client))
            continue;
        if (i % 2) { /* a catch-up first: its chunk read may be in flight at the close */
            ws_text(&z, "{\"type\":\"subscribe\",\"id\":1,\"prefixes\":[\"\"],\"since\":0}");
            usleep(1000 * (unsigned)(i % 4));
        }
        send_incr(&z, 1, "d:many");
        send_incr(&z, 2, "d:many");
        ws_free(&z);
    }
    usleep(200 * 1000);
    ws_raw_t w3;
    ok(session(&w3, port, "defer-4") && alive(&w3),
       "the server still serves after 30 sessions closed with store calls in flight");
    long long v = counter_value(port, "d:many");
    ok(v >= 0 && v <= 60, "at most two increments per session took effect (%lld)", v);
    ws_free(&w3);
}

int main(void)
{
    char *dir = test_tmpdir();
    setenv("CRDTD_TEST_STORE_DEFER", "1", 1);
    unsetenv("CRDTD_TOKEN_SECRET");
    crdtd_proc_t s;
    const char *args[] = {"--data-dir", dir, "--fsync", "always", NULL};
    if (crdtd_start(&s, CRDTD_BIN, dir, args))
        bail_out("cannot start crdtd");
    test_in_order(s.port);
    test_catch_up(s.port);
    test_close_in_flight(s.port);
    int st = crdtd_stop(&s, SIGTERM, 10000);
    ok(st >= 0 && WIFEXITED(st) && WEXITSTATUS(st) == 0, "crdtd exits 0");
    rm_rf(dir);
    free(dir);
    return done_testing();
}
