/* test_ws_sync.c - crdt.v1 through the crdtc library against a real crdtd: two clients converge
 * on every type, an offline client catches up exactly by cursor, retries are idempotent */
#include "tap.h"

#include <signal.h>
#include <stdint.h>

#include "crdtc_helper.h"

#ifndef CRDTD_BIN
#error "CRDTD_BIN (the crdtd binary) must be defined"
#endif

static crdtd_proc_t srv;
static crdtc_loop_t *loop;

static const char *const conv_keys[] = {"conv:g",  "conv:pn", "conv:reg", "conv:lww",
                                        "conv:or", "conv:tl", "conv:op"};
#define NCONV (sizeof(conv_keys) / sizeof(conv_keys[0]))

/* Local writes of every type through libcrdt mutators on the local replica, sent as deltas. */
static int write_every_type(crdtc_t *c, const char *tag, int round)
{
    int fails = 0;
    crdt_obj_t *d = NULL, *o;
    crdt_hlc_ts_t ts;
    char m[64];
    snprintf(m, sizeof(m), "%s-%d", tag, round);
    size_t ml = strlen(m);
#define SEND(k)                                                                                    \
    do {                                                                                           \
        if (!d || crdtc_apply_delta(c, k, strlen(k), d) <= 0)                                      \
            fails++;                                                                               \
        crdt_obj_free(d);                                                                          \
        d = NULL;                                                                                  \
    } while (0)
    o = crdtc_local(c, "conv:g", 6, CRDT_GCOUNTER);
    if (!o || crdt_gcounter_incr(o, crdtc_replica_id(c), 3, &d) < 0)
        fails++;
    SEND("conv:g");
    o = crdtc_local(c, "conv:pn", 7, CRDT_PNCOUNTER);
    if (!o || crdt_pncounter_add(o, crdtc_replica_id(c), round % 2 ? -2 : 5, &d) < 0)
        fails++;
    SEND("conv:pn");
    o = crdtc_local(c, "conv:reg", 8, CRDT_LWWREG);
    crdtc_hlc_now(c, &ts);
    if (!o || crdt_lwwreg_set(o, &ts, m, ml, &d) < 0)
        fails++;
    SEND("conv:reg");
    o = crdtc_local(c, "conv:lww", 8, CRDT_LWWSET);
    crdtc_hlc_now(c, &ts);
    if (!o || crdt_lwwset_add(o, m, ml, &ts, &d) < 0)
        fails++;
    SEND("conv:lww");
    if (round > 0) { /* remove the previous round's member */
        snprintf(m, sizeof(m), "%s-%d", tag, round - 1);
        crdtc_hlc_now(c, &ts);
        if (crdt_lwwset_remove(o, m, strlen(m), &ts, &d) < 0)
            fails++;
        SEND("conv:lww");
        snprintf(m, sizeof(m), "%s-%d", tag, round);
    }
    o = crdtc_local(c, "conv:or", 7, CRDT_ORSET);
    if (!o || crdt_orset_add(o, crdtc_replica_id(c), m, ml, &d) < 0)
        fails++;
    SEND("conv:or");
    if (round == 2) {
        if (crdt_orset_remove(o, m, ml, &d) < 0)
            fails++;
        SEND("conv:or");
    }
    o = crdtc_local(c, "conv:tl", 7, CRDT_TIMELINE);
    if (!o || crdt_timeline_add(o, m, ml, 1000.0 + round, &d) < 0)
        fails++;
    SEND("conv:tl");
#undef SEND
    /* and a REST-shaped op, whose effect comes back through the feed */
    json_t *op = json_pack("{s:s,s:s,s:I}", "type", "pncounter", "op", "incr", "by", 7);
    if (crdtc_apply_op(c, "conv:op", 7, op) <= 0)
        fails++;
    json_decref(op);
    return fails;
}

static bool all_converged(tc_t *a, tc_t *b)
{
    for (size_t i = 0; i < NCONV; i++) {
        const char *k = conv_keys[i];
        crdt_buf_t x = local_state(a->c, k), y = local_state(b->c, k),
                   z = rest_state(srv.port, k, strlen(k));
        bool eq = buf_eq(&x, &y) && buf_eq(&y, &z);
        crdt_buf_free(&x), crdt_buf_free(&y), crdt_buf_free(&z);
        if (!eq)
            return false;
    }
    return true;
}

static void test_converge(void)
{
    tc_t a, b;
    tc_new(&a, loop, srv.port, "conv-a", NULL, NULL);
    tc_new(&b, loop, srv.port, "conv-b", NULL, NULL);
    ok(crdtc_subscribe_prefix(a.c, "conv:", 5, CRDTC_SINCE_AUTO) > 0, "A subscribes to conv:");
    ok(crdtc_subscribe_prefix(b.c, "conv:", 5, CRDTC_SINCE_AUTO) > 0, "B subscribes to conv:");
    crdtc_connect(a.c);
    crdtc_connect(b.c);
    ok(RUN_UNTIL(loop, a.subscribed == 1 && b.subscribed == 1, 5000), "both subscribed");
    int fails = 0;
    for (int r = 0; r < 3; r++) {
        fails += write_every_type(a.c, "a", r);
        fails += write_every_type(b.c, "b", r);
        crdtc_loop_service(loop, 0);
    }
    is_int(fails, 0, "every local write was accepted and queued");
    ok(RUN_UNTIL(loop, !crdtc_pending(a.c) && !crdtc_pending(b.c), 5000), "all applies acked");
    is_int(a.errors + b.errors, 0, "no errors");
    /* changes may still be in flight after the acks */
    bool conv = false;
    for (int i = 0; i < 200 && !(conv = all_converged(&a, &b)); i++)
        run_for(loop, 20);
    ok(conv, "both local replicas equal the server's state byte for byte, every type");
    for (size_t i = 0; i < NCONV && !conv; i++) {
        crdt_buf_t x = local_state(a.c, conv_keys[i]), y = local_state(b.c, conv_keys[i]),
                   z = rest_state(srv.port, conv_keys[i], strlen(conv_keys[i]));
        diag("%s: A %zu bytes, B %zu, server %zu", conv_keys[i], x.len, y.len, z.len);
        crdt_buf_free(&x), crdt_buf_free(&y), crdt_buf_free(&z);
    }
    is_int(rest_counter(srv.port, "conv:g"), 18, "gcounter: 2 clients x 3 rounds x 3");
    is_int(rest_counter(srv.port, "conv:pn"), 2 * (5 - 2 + 5), "pncounter sums both clients");
    is_int(rest_counter(srv.port, "conv:op"), 42, "REST-shaped incr ops: 6 x 7");
    int64_t v = 0;
    const crdt_obj_t *o = crdtc_local(a.c, "conv:op", 7, 0);
    if (o)
        crdt_counter_value(o, &v);
    is_int(v, 42, "A's replica learnt the op's effect");
    o = crdtc_local(b.c, "conv:or", 7, 0);
    is_int(o ? (long long)crdt_set_size(o) : -1, 4, "orset: 6 adds, 2 removed");
    o = crdtc_local(a.c, "conv:lww", 8, 0);
    is_int(o ? (long long)crdt_set_size(o) : -1, 2, "lwwset: the latest member of each client");
    crdtc_free(a.c);
    crdtc_free(b.c);
}

/* A client offline while another writes gets exactly the keys it missed, then live changes. */
static void test_offline_resume(const char *dir)
{
    char state[1100];
    snprintf(state, sizeof(state), "%s/off.state", dir);
    tc_t a, w;
    tc_new(&a, loop, srv.port, "off-a", NULL, state);
    tc_new(&w, loop, srv.port, "off-w", NULL, NULL);
    crdtc_subscribe_prefix(a.c, "off:", 4, CRDTC_SINCE_AUTO);
    crdtc_connect(a.c);
    crdtc_connect(w.c);
    char key[32];
    for (int i = 0; i < 6; i++) {
        snprintf(key, sizeof(key), "off:%d", i);
        json_t *op = json_pack("{s:s,s:s}", "type", "gcounter", "op", "incr");
        crdtc_apply_op(w.c, key, strlen(key), op);
        json_decref(op);
    }
    ok(RUN_UNTIL(loop, !crdtc_pending(w.c) && a.subscribed == 1, 5000), "6 keys written");
    ok(RUN_UNTIL(loop, a.changes >= 6, 5000), "A saw them (%d changes)", a.changes);
    RUN_UNTIL(loop, false, 100);
    crdtc_disconnect(a.c);
    ok(RUN_UNTIL(loop, a.closes == 1, 3000), "A disconnected");
    uint64_t cur = crdtc_cursor(a.c);
    crdtc_free(a.c); /* the program ends: only its state file is left */

    /* while A is away: two keys change (one twice), one key is new, three do not change */
    const char *missed[] = {"off:1", "off:4", "off:1", "off:new"};
    for (int i = 0; i < 4; i++) {
        json_t *op = json_pack("{s:s,s:s}", "type", "gcounter", "op", "incr");
        crdtc_apply_op(w.c, missed[i], strlen(missed[i]), op);
        json_decref(op);
    }
    ok(RUN_UNTIL(loop, !crdtc_pending(w.c), 5000), "writer wrote while A was offline");

    tc_new(&a, loop, srv.port, "off-a", NULL, state);
    ok(crdtc_cursor(a.c) == cur && cur > 0, "the state file kept the cursor (%llu)",
       (unsigned long long)cur);
    /* an offline apply, queued before connecting */
    crdt_obj_t *o = crdtc_local(a.c, "off:mine", 8, CRDT_GCOUNTER), *d = NULL;
    crdt_gcounter_incr(o, crdtc_replica_id(a.c), 5, &d);
    ok(crdtc_apply_delta(a.c, "off:mine", 8, d) > 0 && crdtc_pending(a.c) == 1,
       "an apply made offline is queued");
    crdt_obj_free(d);
    crdtc_subscribe_prefix(a.c, "off:", 4, CRDTC_SINCE_AUTO);
    crdtc_connect(a.c);
    ok(RUN_UNTIL(loop, a.subscribed == 1 && !crdtc_pending(a.c), 5000),
       "A resumed and its offline apply was acked");
    RUN_UNTIL(loop, false, 100);
    /* the catch-up holds exactly the keys changed since the cursor: off:1, off:4, off:new and
     * A's own off:mine (its own write may come as a live delta or inside the catch-up) */
    ok(strstr(a.full_keys, "off:1\n") && strstr(a.full_keys, "off:4\n") &&
           strstr(a.full_keys, "off:new\n"),
       "the catch-up has every key changed while offline");
    ok(!strstr(a.full_keys, "off:0\n") && !strstr(a.full_keys, "off:2\n") &&
           !strstr(a.full_keys, "off:3\n") && !strstr(a.full_keys, "off:5\n"),
       "and none of the unchanged keys");
    if (a.full_changes > 4)
        diag("full states received: %s", a.full_keys);
    ok(same_as_server(a.c, srv.port, "off:1"), "off:1 equals the server's (2 increments)");
    ok(same_as_server(a.c, srv.port, "off:new"), "off:new equals the server's");
    ok(same_as_server(a.c, srv.port, "off:mine"), "the offline write reached the server");
    /* then live changes */
    int before = a.changes;
    json_t *op = json_pack("{s:s,s:s}", "type", "gcounter", "op", "incr");
    crdtc_apply_op(w.c, "off:2", 5, op);
    json_decref(op);
    ok(RUN_UNTIL(loop, a.changes > before && same_as_server(a.c, srv.port, "off:2"), 5000),
       "a live change arrives after the catch-up");
    crdtc_free(a.c);

    /* after a long absence, since 0: full states of every key under the prefix */
    tc_t f;
    tc_new(&f, loop, srv.port, "off-fresh", NULL, NULL);
    crdtc_subscribe_prefix(f.c, "off:", 4, 0);
    crdtc_connect(f.c);
    ok(RUN_UNTIL(loop, f.subscribed == 1, 5000), "a client with since 0 subscribed");
    is_int(f.full_changes, 8, "it received the full state of all 8 keys");
    bool same = true;
    const char *all[] = {"off:0", "off:1", "off:2",   "off:3",
                         "off:4", "off:5", "off:new", "off:mine"};
    for (int i = 0; i < 8; i++)
        same = same && same_as_server(f.c, srv.port, all[i]);
    ok(same, "each equal to the server's");
    crdtc_free(f.c);
    crdtc_free(w.c);
}

/* The same op id resent after a dropped connection: acked as a duplicate, applied once. */
static void test_idempotent_retry(void)
{
    tc_t a;
    tc_new(&a, loop, srv.port, "retry-a", NULL, NULL);
    crdtc_connect(a.c);
    ok(RUN_UNTIL(loop, crdtc_ready(a.c), 5000), "connected");
    json_t *op = json_pack("{s:s,s:s,s:I}", "type", "pncounter", "op", "incr", "by", 10);
    int64_t id = crdtc_apply_op(a.c, "retry:n", 7, op);
    json_decref(op);
    /* written, then the connection drops before the ack is read */
    ok(RUN_UNTIL(loop, crdtc_inflight(a.c) == 1, 2000), "the apply was written");
    crdtc_drop(a.c);
    ok(RUN_UNTIL(loop, a.closes == 1, 3000), "the connection dropped before the ack");
    is_int(a.acks, 0, "no ack was read");
    ok(RUN_UNTIL(loop, a.acks == 1, 5000), "after the reconnect the retry was acked");
    ok(a.last_ack.id == (uint64_t)id, "with the original op id");
    ok(a.last_ack.duplicate && !a.last_ack.applied, "as a duplicate, not applied again");
    is_int(rest_counter(srv.port, "retry:n"), 10, "the counter was incremented once");
    /* and a later op still applies */
    op = json_pack("{s:s,s:I}", "op", "incr", "by", 1);
    crdtc_apply_op(a.c, "retry:n", 7, op);
    json_decref(op);
    ok(RUN_UNTIL(loop, a.acks == 2, 5000) && a.last_ack.applied && !a.last_ack.duplicate,
       "the next op id applies");
    is_int(rest_counter(srv.port, "retry:n"), 11, "counter 11");
    crdtc_free(a.c);

    /* the same client id in a new program without a state file: ids still move forward */
    tc_new(&a, loop, srv.port, "retry-a", NULL, NULL);
    crdtc_connect(a.c);
    op = json_pack("{s:s,s:I}", "op", "incr", "by", 1);
    crdtc_apply_op(a.c, "retry:n", 7, op);
    json_decref(op);
    ok(RUN_UNTIL(loop, a.acks == 1, 5000) && a.last_ack.applied, "a restarted client applies");
    is_int(rest_counter(srv.port, "retry:n"), 12, "counter 12");
    crdtc_free(a.c);
}

int main(void)
{
    signal(SIGPIPE, SIG_IGN);
    char *dir = test_tmpdir();
    char data[1100];
    snprintf(data, sizeof(data), "%s/data", dir);
    const char *args[] = {"--data-dir", data, "--fsync", "everysec", NULL};
    if (crdtd_start(&srv, CRDTD_BIN, dir, args)) {
        rm_rf(dir);
        skip_all("crdtd did not start");
    }
    loop = crdtc_loop_new();
    ok(loop != NULL, "client loop");
    test_converge();
    test_offline_resume(dir);
    test_idempotent_retry();
    crdtc_loop_free(loop);
    is_int(crdtd_stop(&srv, SIGTERM, 5000), 0, "crdtd exits cleanly");
    rm_rf(dir);
    free(dir);
    return done_testing();
}
