/* test_crdtc_bin.c - the crdtc library over binary crdt.v1 (config.binary) against a real crdtd:
 * changes, acks and subscribed arrive binary and join the local replica as with JSON; a binary and
 * a JSON subscriber of the same writes converge, the binary one in far fewer bytes; resume after a
 * drop */
#include "tap.h"

#include <signal.h>
#include <stdint.h>
#include <sys/wait.h>

#include "crdtc_helper.h"

#ifndef CRDTD_BIN
#error "CRDTD_BIN (the crdtd binary) must be defined"
#endif

static crdtc_t *client(tc_t *t, crdtc_loop_t *l, int port, const char *id, bool binary)
{
    memset(t, 0, sizeof(*t));
    crdtc_config_t cfg = {.port = port,
                          .client_id = id,
                          .backoff_min_ms = 20,
                          .backoff_max_ms = 200,
                          .binary = binary,
                          .cb = {.welcome_cb = th_welcome,
                                 .change_cb = th_change,
                                 .subscribed_cb = th_subscribed,
                                 .ack_cb = th_ack,
                                 .error_cb = th_error,
                                 .close_cb = th_close},
                          .ud = t};
    int err = 0;
    t->c = crdtc_new(l, &cfg, &err);
    if (!t->c)
        diag("crdtc_new(%s): %s", id, crdtc_strerror(err));
    return t->c;
}

/* A timeline add on the writer's local replica, sent as its delta. */
static int64_t post(crdtc_t *w, const char *key, const char *member, double score)
{
    crdt_obj_t *o = crdtc_local(w, key, strlen(key), CRDT_TIMELINE), *d = NULL;
    if (!o || crdt_timeline_add(o, member, strlen(member), score, &d) < 0)
        return -1;
    int64_t id = crdtc_apply_delta(w, key, strlen(key), d);
    crdt_obj_free(d);
    return id;
}

int main(void)
{
    char *dir = test_tmpdir();
    char data[512];
    snprintf(data, sizeof(data), "%s/data", dir);
    crdtd_proc_t srv;
    const char *args[] = {"--data-dir", data, NULL};
    if (crdtd_start(&srv, CRDTD_BIN, dir, args))
        bail_out("cannot start crdtd");
    crdtc_loop_t *loop = crdtc_loop_new();
    tc_t tb, tj, tw;
    crdtc_t *b = client(&tb, loop, srv.port, "reader-bin", true);
    crdtc_t *j = client(&tj, loop, srv.port, "reader-json", false);
    crdtc_t *w = client(&tw, loop, srv.port, "writer", false);
    if (!b || !j || !w)
        bail_out("crdtc_new");
    crdtc_connect(b);
    crdtc_connect(j);
    crdtc_connect(w);
    ok(RUN_UNTIL(loop, tb.welcomes && tj.welcomes && tw.welcomes, 5000), "three sessions");
    crdtc_subscribe_prefix(b, "cb:", 3, 0);
    crdtc_subscribe_prefix(j, "cb:", 3, 0);
    ok(RUN_UNTIL(loop, tb.subscribed && tj.subscribed, 5000),
       "subscribed (binary for one, JSON for the other)");
    uint64_t b0 = crdtc_bytes_in(b), j0 = crdtc_bytes_in(j);

    const int N = 20;
    for (int i = 0; i < N; i++) {
        char m[32];
        snprintf(m, sizeof(m), "post:%d", i);
        if (post(w, "cb:feed", m, 1700000000.0 + i) <= 0)
            fail("post %d", i);
    }
    ok(RUN_UNTIL(loop, tw.acks == N && tb.changes == N && tj.changes == N, 10000),
       "%d changes reach both subscribers (%d binary, %d JSON)", N, tb.changes, tj.changes);
    ok(same_as_server(b, srv.port, "cb:feed"), "the binary subscriber's replica is the server's");
    ok(same_as_server(j, srv.port, "cb:feed"), "and so is the JSON one's");
    uint64_t bb = crdtc_bytes_in(b) - b0, jb = crdtc_bytes_in(j) - j0;
    diag("%d small timeline changes: %llu bytes binary, %llu JSON (%.2fx)", N,
         (unsigned long long)bb, (unsigned long long)jb, (double)bb / (double)jb);
    cmp_ok(bb * 3, "<", jb, "binary changes are under a third of JSON's bytes");
    cmp_ok(bb / (uint64_t)N, "<", 70, "under 70 bytes a change");

    /* the binary reader writes too: its ack comes binary */
    json_t *op = json_pack("{s:s,s:s,s:I}", "type", "pncounter", "op", "incr", "by", 2);
    ok(crdtc_apply_op(b, "cb:likes", 8, op) > 0, "an apply from the binary reader");
    json_decref(op);
    ok(RUN_UNTIL(loop, tb.acks == 1 && tb.changes == N + 1, 5000),
       "acked (binary) and its change arrives (binary)");
    ok(tb.last_ack.applied && !tb.last_ack.duplicate, "applied, not a duplicate");
    is_int(tb.errors, 0, "no errors on the binary session");

    /* a drop, writes meanwhile, resume by cursor: only the changed key comes back, in full */
    crdtc_drop(b);
    ok(RUN_UNTIL(loop, tb.closes >= 1, 5000), "the binary reader is dropped");
    int before = tb.full_changes;
    tb.full_keys[0] = '\0';
    post(w, "cb:feed", "post:late", 1800000000.0);
    ok(RUN_UNTIL(loop,
                 tb.welcomes >= 2 && tb.full_changes > before &&
                     same_as_server(b, srv.port, "cb:feed"),
                 10000),
       "it reconnects and catches up");
    is(tb.full_keys, "cb:feed\n", "exactly the changed key, as a full state");

    crdtc_free(b);
    crdtc_free(j);
    crdtc_free(w);
    crdtc_loop_free(loop);
    int st = crdtd_stop(&srv, SIGTERM, 10000);
    ok(st >= 0 && WIFEXITED(st) && WEXITSTATUS(st) == 0, "crdtd exits 0");
    rm_rf(dir);
    free(dir);
    return done_testing();
}
