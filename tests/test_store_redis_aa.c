/* test_store_redis_aa.c - the Redis store's part of active-active between Redis deployments,
 * against real redis-server processes with crdt.so: a peer's change (apply with an origin) comes
 * back from the change log with that origin, local changes as local; anti-entropy sessions over
 * CRDT.RSX.* between two servers find exactly the keys that differ, rsx_keys gives their states,
 * and after the repair a second session finds nothing and every key is byte-identical; sessions
 * closed early or fed garbage; seq_base and the feed's CRDT_ELIMIT for positions it lost.
 */
#include <signal.h>
#include <stdlib.h>
#include <string.h>

#include "crdt_store.h"
#include "evloop_poll.h"
#include "redis_cluster_helper.h"
#include "redis_helper.h"
#include "store_redis.h"
#include "tap.h"

static ep_loop_t *L;

typedef struct res {
    bool done;
    int rc;
    uint64_t seq;
} res_t;

static void on_write(void *ud, int rc, uint64_t seq)
{
    res_t *r = ud;
    r->rc = rc;
    r->seq = seq;
    r->done = true;
}

static void on_done(void *ud, int rc, uint64_t next)
{
    res_t *r = ud;
    r->rc = rc;
    r->seq = next;
    r->done = true;
}

static int no_each(const void *key, size_t klen, uint64_t seq, const crdt_obj_t *o, void *ud)
{
    (void)key, (void)klen, (void)seq, (void)o, (void)ud;
    return 0;
}

static bool wait_done(bool *done)
{
    return ep_run_until(L, done, 5000);
}

#define MAXEV 256
typedef struct evs {
    int n;
    char key[MAXEV][24];
    uint64_t origin[MAXEV];
    bool had_delta[MAXEV];
    uint64_t seq[MAXEV];
} evs_t;

static void ev_change(void *ud, const void *key, size_t klen, uint64_t seq, const crdt_obj_t *delta,
                      uint64_t origin)
{
    evs_t *e = ud;
    if (e->n >= MAXEV)
        return;
    snprintf(e->key[e->n], sizeof(e->key[0]), "%.*s", (int)(klen < 23 ? klen : 23),
             (const char *)key);
    e->origin[e->n] = origin;
    e->had_delta[e->n] = delta != NULL;
    e->seq[e->n] = seq;
    e->n++;
}

/* The origin the events reported for key (the last), or UINT64_MAX when none. */
static uint64_t origin_of(const evs_t *e, const char *key)
{
    uint64_t o = UINT64_MAX;
    for (int i = 0; i < e->n; i++)
        if (!strcmp(e->key[i], key))
            o = e->origin[i];
    return o;
}

static crdt_store_t *open_url(const char *url, uint64_t node, bool follow, uint64_t seq_base,
                              evs_t *ev)
{
    crdt_store_redis_config_t cfg;
    crdt_store_redis_config_init(&cfg);
    cfg.node_id = node;
    cfg.follow_logs = follow;
    cfg.seq_base = seq_base;
    char err[256] = "";
    crdt_store_t *st = crdt_store_redis_open(url, &cfg, ep_loop(L), err, sizeof(err));
    if (!st) {
        diag("open %s: %s", url, err);
        return NULL;
    }
    if (ev) {
        memset(ev, 0, sizeof(*ev));
        crdt_store_set_events(st, &(crdt_store_events_t){ev_change, NULL, ev, NULL});
    }
    uint64_t end = gw_evloop_mono_ms() + 8000;
    while ((crdt_store_redis_ready(st) != 1 || crdt_store_last_error(st)) &&
           gw_evloop_mono_ms() < end)
        ep_run_once(L, 20);
    return st;
}

static crdt_store_t *open_store(int port, uint64_t node, bool follow, uint64_t seq_base, evs_t *ev)
{
    char url[64];
    snprintf(url, sizeof(url), "redis://127.0.0.1:%d", port);
    return open_url(url, node, follow, seq_base, ev);
}

static int sw(crdt_store_t *st, const char *key, const crdt_mut_t *m)
{
    res_t r = {0};
    crdt_store_write(st, key, strlen(key), m, on_write, &r);
    wait_done(&r.done);
    return r.done ? r.rc : -100;
}

static int add_member(crdt_store_t *st, const char *key, const char *member)
{
    crdt_mut_t m = {
        .type = CRDT_ORSET, .kind = CRDT_MUT_ADD, .bytes = member, .len = strlen(member)};
    return sw(st, key, &m);
}

/* ---- origins ------------------------------------------------------------------------------ */

/* wants_delta of test_wants: only the keys that begin "want:" */
static bool wants_want(void *ud, const void *key, size_t klen)
{
    (void)ud;
    return klen >= 5 && !memcmp(key, "want:", 5);
}

static void test_wants(int port)
{
    diag("a follower decodes only the deltas its events want, and reports every change");
    evs_t ev;
    crdt_store_t *a = open_store(port, 14, true, 0, &ev);
    crdt_store_t *w = open_store(port, 15, false, 0, NULL);
    ok(a && w, "a following store and a writer");
    if (!a || !w) {
        crdt_store_close(a);
        crdt_store_close(w);
        return;
    }
    crdt_store_set_events(a, &(crdt_store_events_t){ev_change, NULL, &ev, wants_want});
    ep_run_for(L, 150);
    is_int(add_member(w, "want:1", "x"), 1, "a write of a wanted key");
    is_int(add_member(w, "skip:1", "x"), 1, "one of a key nobody wants");
    is_int(add_member(w, "want:2", "x"), 1, "another wanted one");
    uint64_t end = gw_evloop_mono_ms() + 3000;
    while (ev.n < 3 && gw_evloop_mono_ms() < end)
        ep_run_once(L, 20);
    is_int(ev.n, 3, "the follower reported the three changes");
    bool seqs = ev.n == 3 && ev.seq[1] == ev.seq[0] + 1 && ev.seq[2] == ev.seq[1] + 1;
    ok(seqs, "with consecutive seqs");
    bool deltas = true;
    for (int i = 0; i < ev.n; i++)
        deltas = deltas && ev.had_delta[i] == (strncmp(ev.key[i], "want:", 5) == 0);
    ok(deltas, "with the delta of a wanted key, none for the other");
    crdt_store_close(a);
    crdt_store_close(w);
}

static void test_origin(int port)
{
    diag("a peer's change comes back from the change log with its origin");
    evs_t ev;
    crdt_store_t *a = open_store(port, 11, true, 0, &ev);
    crdt_store_t *w = open_store(port, 12, false, 0, NULL);
    ok(a && w, "a following store and a writer");
    if (!a || !w) {
        crdt_store_close(a);
        crdt_store_close(w);
        return;
    }
    ep_run_for(L, 150);
    /* a delta as a peer would send it */
    crdt_obj_t *d = crdt_obj_new(CRDT_PNCOUNTER);
    crdt_pncounter_add(d, 99, 5, NULL);
    res_t r = {0};
    crdt_store_apply(w, "o:peer", 6, d, 77, on_write, &r);
    wait_done(&r.done);
    is_int(r.rc, 1, "apply with origin 77 changed the key");
    memset(&r, 0, sizeof(r));
    crdt_store_apply(w, "o:plain", 7, d, CRDT_ORIGIN_LOCAL, on_write, &r);
    wait_done(&r.done);
    is_int(r.rc, 1, "apply with origin local (a client's merge)");
    crdt_obj_free(d);
    is_int(add_member(w, "o:typed", "x"), 1, "a typed write");
    uint64_t end = gw_evloop_mono_ms() + 3000;
    while (ev.n < 3 && gw_evloop_mono_ms() < end)
        ep_run_once(L, 20);
    is_int(ev.n, 3, "the follower saw the three changes");
    ok(origin_of(&ev, "o:peer") == 77, "the peer's change with origin 77 (%llu)",
       (unsigned long long)origin_of(&ev, "o:peer"));
    ok(origin_of(&ev, "o:plain") == CRDT_ORIGIN_LOCAL, "the local merge as local");
    ok(origin_of(&ev, "o:typed") == CRDT_ORIGIN_LOCAL, "the typed write as local");
    crdt_store_close(a);
    crdt_store_close(w);

    /* without following, the write path reports the origin itself */
    evs_t ev2;
    crdt_store_t *b = open_store(port, 13, false, 0, &ev2);
    d = crdt_obj_new(CRDT_PNCOUNTER);
    crdt_pncounter_add(d, 98, 1, NULL);
    memset(&r, 0, sizeof(r));
    if (b)
        crdt_store_apply(b, "o:direct", 8, d, 78, on_write, &r);
    wait_done(&r.done);
    crdt_obj_free(d);
    ok(b && r.rc == 1 && origin_of(&ev2, "o:direct") == 78,
       "not following: the apply's own event carries origin 78");
    crdt_store_close(b);
}

/* ---- seq_base and feed gaps ---------------------------------------------------------------- */

static void test_seq_base(int port)
{
    diag("seq_base: a later run's seqs follow; positions it cannot serve are CRDT_ELIMIT");
    crdt_store_t *st = open_store(port, 14, false, 1000000, NULL);
    if (!st) {
        ok(0, "open");
        return;
    }
    is_int((long long)crdt_store_last_seq(st), 1000000, "last_seq starts at seq_base");
    crdt_mut_t m = {.type = CRDT_ORSET, .kind = CRDT_MUT_ADD, .bytes = "s", .len = 1};
    res_t r = {0};
    crdt_store_write(st, "sb:1", 4, &m, on_write, &r);
    wait_done(&r.done);
    is_int((long long)r.seq, 1000001, "the first change is seq_base + 1");
    res_t f = {0};
    crdt_store_changes(st, 500, 10, no_each, on_done, &f);
    wait_done(&f.done);
    is_int(f.rc, CRDT_ELIMIT, "a position of an earlier run: CRDT_ELIMIT");
    ok(crdt_store_last_error(st) == NULL, "and the store still says it is healthy");
    crdt_store_redis_stats_t rs;
    crdt_store_redis_stats(st, &rs);
    is_int((long long)rs.feed_gaps, 1, "counted as a feed gap");
    crdt_store_close(st);
}

/* ---- anti-entropy -------------------------------------------------------------------------- */

typedef struct step_res {
    bool done_cb;
    int rc;
    bool done;
    uint8_t *reply;
    size_t reply_len;
    crdt_rsx_diff_t *diffs;
    size_t ndiffs;
    char err[160];
} step_res_t;

static void on_step(void *ud, int rc, const crdt_store_rsx_result_t *res)
{
    step_res_t *s = ud;
    s->done_cb = true;
    s->rc = rc;
    free(s->reply);
    s->reply = NULL;
    s->reply_len = 0;
    if (rc < 0) {
        snprintf(s->err, sizeof(s->err), "%s", res->err.text);
        return;
    }
    s->done = res->done;
    if (res->reply_len) {
        s->reply = malloc(res->reply_len);
        memcpy(s->reply, res->reply, res->reply_len);
        s->reply_len = res->reply_len;
    }
    if (res->done) {
        free(s->diffs);
        s->diffs = malloc((res->ndiffs ? res->ndiffs : 1) * sizeof(*s->diffs));
        if (res->ndiffs)
            memcpy(s->diffs, res->diffs, res->ndiffs * sizeof(*s->diffs));
        s->ndiffs = res->ndiffs;
    }
}

static void step(crdt_store_t *st, crdt_store_rsx_t *x, const uint8_t *msg, size_t n,
                 step_res_t *out)
{
    out->done_cb = false;
    crdt_store_rsx_step(st, x, msg, n, on_step, out);
    wait_done(&out->done_cb);
}

/* The bytes of the messages the last run_session carried between its two sides. */
static size_t session_bytes;

/* Runs a whole session between a (initiator) and b; false if it did not finish. */
static bool run_session(crdt_store_t *a, crdt_store_t *b, step_res_t *ra, step_res_t *rb)
{
    crdt_rsx_config_t cfg;
    crdt_rsx_config_init(&cfg);
    crdt_store_rsx_t *xa = crdt_store_rsx_open(a, true, &cfg);
    crdt_store_rsx_t *xb = crdt_store_rsx_open(b, false, &cfg);
    memset(ra, 0, sizeof(*ra));
    memset(rb, 0, sizeof(*rb));
    session_bytes = 0;
    step(a, xa, NULL, 0, ra);
    bool ok_ = ra->done_cb && ra->rc == 0 && ra->reply_len > 0;
    for (int round = 0; ok_ && round < 64 && !(ra->done && rb->done); round++) {
        if (ra->reply_len && !rb->done) {
            session_bytes += ra->reply_len;
            step(b, xb, ra->reply, ra->reply_len, rb);
            ok_ = rb->done_cb && rb->rc == 0;
            free(ra->reply);
            ra->reply = NULL;
            ra->reply_len = 0;
        } else if (rb->reply_len && !ra->done) {
            session_bytes += rb->reply_len;
            step(a, xa, rb->reply, rb->reply_len, ra);
            ok_ = ra->done_cb && ra->rc == 0;
            free(rb->reply);
            rb->reply = NULL;
            rb->reply_len = 0;
        } else {
            break;
        }
    }
    if (!ok_)
        diag("session failed: a rc %d (%s), b rc %d (%s)", ra->rc, ra->err, rb->rc, rb->err);
    crdt_store_rsx_close(a, xa);
    crdt_store_rsx_close(b, xb);
    return ok_ && ra->done && rb->done;
}

typedef struct repair {
    crdt_store_t *to;
    int keys, applied;
    bool done;
    int rc;
    char names[64][24];
} repair_t;

static void on_applied(void *ud, int rc, uint64_t seq)
{
    (void)seq;
    repair_t *p = ud;
    p->applied += rc >= 0;
}

static int repair_each(void *ud, const void *key, size_t klen, const crdt_obj_t *o)
{
    repair_t *p = ud;
    if (p->keys < 64)
        snprintf(p->names[p->keys], sizeof(p->names[0]), "%.*s", (int)(klen < 23 ? klen : 23),
                 (const char *)key);
    p->keys++;
    crdt_store_apply(p->to, key, klen, o, 5, on_applied, p);
    return 0;
}

static void repair_done(void *ud, int rc, uint64_t next)
{
    (void)next;
    repair_t *p = ud;
    p->rc = rc;
    p->done = true;
}

/* Sends from `from` to `to` the keys of every diff `from` holds; the key names sent. */
static int repair(crdt_store_t *from, crdt_store_t *to, const step_res_t *r, repair_t *p)
{
    memset(p, 0, sizeof(*p));
    p->to = to;
    for (size_t i = 0; i < r->ndiffs; i++) {
        if (!(r->diffs[i].flags & CRDT_RSX_WE_HAVE))
            continue;
        p->done = false;
        crdt_store_rsx_keys(from, r->diffs[i].id, repair_each, repair_done, p);
        wait_done(&p->done);
    }
    uint64_t end = gw_evloop_mono_ms() + 3000;
    while (p->applied < p->keys && gw_evloop_mono_ms() < end)
        ep_run_once(L, 10);
    return p->keys;
}

static bool sent(const repair_t *p, const char *name)
{
    for (int i = 0; i < p->keys && i < 64; i++)
        if (!strcmp(p->names[i], name))
            return true;
    return false;
}

static bool identical(rh_server_t *A, rh_server_t *B, const char *key)
{
    size_t la, lb;
    char *a = rh_str(rh_cmd(A, "CRDT.STATE %s", key), &la);
    char *b = rh_str(rh_cmd(B, "CRDT.STATE %s", key), &lb);
    bool same = a && b && la == lb && !memcmp(a, b, la);
    free(a);
    free(b);
    return same;
}

static void test_rsx(rh_server_t *A, rh_server_t *B)
{
    diag("anti-entropy between two Redis servers over CRDT.RSX.*");
    /* the keys of the tests before go */
    rh_err(rh_cmd(A, "FLUSHALL"));
    rh_err(rh_cmd(B, "FLUSHALL"));
    crdt_store_t *a = open_store(A->port, 21, false, 0, NULL);
    crdt_store_t *b = open_store(B->port, 22, false, 0, NULL);
    ok(a && b, "a store on each server");
    if (!a || !b) {
        crdt_store_close(a);
        crdt_store_close(b);
        return;
    }
    /* 40 keys on both, equal (the same writes merged into both) */
    for (int i = 0; i < 40; i++) {
        char k[16];
        snprintf(k, sizeof(k), "eq:%d", i);
        add_member(a, k, "m");
        size_t len;
        char *state = rh_str(rh_cmd(A, "CRDT.STATE %s", k), &len);
        rh_int(rh_cmd(B, "CRDT.MERGE %s %b", k, state, len));
        free(state);
    }
    add_member(a, "only:a", "1");
    add_member(b, "only:b", "2");
    add_member(a, "both", "from-a");
    add_member(b, "both", "from-b");
    crdt_mut_t inc = {.type = CRDT_PNCOUNTER, .kind = CRDT_MUT_INCR, .n = 3};
    sw(a, "ctr", &inc);

    step_res_t ra, rb;
    ok(run_session(a, b, &ra, &rb), "a session over every slot ran to its end on both sides");
    /* differing ids: only:a (a has), only:b (b has), both (both), ctr (a has) */
    int we_a = 0, they_a = 0;
    for (size_t i = 0; i < ra.ndiffs; i++) {
        we_a += (ra.diffs[i].flags & CRDT_RSX_WE_HAVE) != 0;
        they_a += (ra.diffs[i].flags & CRDT_RSX_THEY_HAVE) != 0;
    }
    is_int((long long)ra.ndiffs, 4, "the initiator found the 4 differing keys");
    is_int(we_a, 3, "3 it holds (only:a, both, ctr)");
    is_int(they_a, 2, "2 the responder holds (only:b, both)");
    is_int((long long)rb.ndiffs, 4, "the responder found the same 4");
    repair_t pa, pb;
    is_int(repair(a, b, &ra, &pa), 3, "rsx_keys on a gave 3 keys");
    ok(sent(&pa, "only:a") && sent(&pa, "both") && sent(&pa, "ctr"), "only:a, both and ctr");
    is_int(repair(b, a, &rb, &pb), 2, "rsx_keys on b gave 2 keys");
    ok(sent(&pb, "only:b") && sent(&pb, "both"), "only:b and both");
    free(ra.diffs);
    free(rb.diffs);
    free(ra.reply);
    free(rb.reply);

    ok(run_session(a, b, &ra, &rb), "a second session");
    is_int((long long)ra.ndiffs, 0, "finds no difference left");
    is_int((long long)rb.ndiffs, 0, "on either side");
    free(ra.diffs);
    free(rb.diffs);
    free(ra.reply);
    free(rb.reply);
    bool same = identical(A, B, "only:a") && identical(A, B, "only:b") && identical(A, B, "both") &&
                identical(A, B, "ctr");
    for (int i = 0; i < 40; i++) {
        char k[16];
        snprintf(k, sizeof(k), "eq:%d", i);
        same = same && identical(A, B, k);
    }
    ok(same, "every key is byte-identical on both servers");

    /* CRDT.RSX.ITEMS (the items a session run in a gateway needs): one per key, bad ranges
     * refused */
    redisReply *it = rh_cmd(B, "CRDT.RSX.ITEMS 0 16383");
    ok(it && it->type == REDIS_REPLY_ARRAY && it->elements == 44 && it->element[0]->elements == 3,
       "CRDT.RSX.ITEMS 0 16383: [name, id, fp] for each of the 44 keys of b");
    if (it)
        freeReplyObject(it);
    ok(strstr(rh_err(rh_cmd(B, "CRDT.RSX.ITEMS 9 2")), "slots") != NULL, "a reversed range");
    ok(strstr(rh_err(rh_cmd(B, "CRDT.RSX.ITEMS 0 16384")), "slots") != NULL, "a slot past 16383");
    ok(strstr(rh_err(rh_cmd(B, "CRDT.RSX.ITEMS 0")), "wrong number") != NULL, "one argument");

    /* a responder fed garbage: CRDT_EDECODE with the module's reason */
    crdt_store_rsx_t *x = crdt_store_rsx_open(b, false, NULL);
    step_res_t g = {0};
    step(b, x, (const uint8_t *)"\x01garbage", 8, &g);
    ok(g.done_cb && g.rc == CRDT_EDECODE && strstr(g.err, "refused"),
       "a malformed message: CRDT_EDECODE (%s)", g.err);
    crdt_store_rsx_close(b, x);
    ok(crdt_store_last_error(b) == NULL, "the store stays healthy");

    /* sessions closed early (before and while a step is in flight) leave none open */
    x = crdt_store_rsx_open(a, true, NULL);
    step_res_t e = {0};
    step(a, x, NULL, 0, &e);
    ok(e.done_cb && e.rc == 0 && e.reply_len > 0, "an initiator's first message");
    free(e.reply);
    crdt_store_rsx_close(a, x);
    x = crdt_store_rsx_open(a, true, NULL);
    crdt_store_rsx_step(a, x, NULL, 0, on_step, &e);
    e.done_cb = false;
    crdt_store_rsx_close(a, x); /* with the OPEN in flight */
    ep_run_for(L, 200);
    ok(!e.done_cb, "a step of a closed session completes nothing");
    is_int(rh_info_field(A, "crdt", "crdt_rsx_sessions_open"), 0,
           "the module holds no session of them");
    crdt_store_rsx_items(a); /* sends a DIGEST; its count is what the next call returns */
    ep_run_for(L, 1100);
    crdt_store_rsx_items(a);
    ep_run_for(L, 100);
    ok(crdt_store_rsx_items(a) == 44, "rsx_items counts the 44 keys (%zu)",
       crdt_store_rsx_items(a));
    crdt_store_close(a);
    crdt_store_close(b);
}

/* The key's state through st, encoded. */
typedef struct got {
    bool done;
    int rc;
    crdt_buf_t b;
} got_t;

static void on_got(void *ud, int rc, const crdt_obj_t *o)
{
    got_t *g = ud;
    g->rc = rc;
    if (o)
        crdt_obj_encode(o, &g->b);
    g->done = true;
}

static bool same_through(crdt_store_t *a, crdt_store_t *b, const char *key)
{
    got_t ga = {0}, gb = {0};
    crdt_store_get(a, key, strlen(key), on_got, &ga);
    wait_done(&ga.done);
    crdt_store_get(b, key, strlen(key), on_got, &gb);
    wait_done(&gb.done);
    bool same = ga.b.len && ga.b.len == gb.b.len && !memcmp(ga.b.data, gb.b.data, ga.b.len);
    crdt_buf_free(&ga.b);
    crdt_buf_free(&gb.b);
    return same;
}

/* The peer engine closes a session from the callback that reports its step failed. When the
 * failure is Redis going away, the close's own CRDT.RSX.CLOSE fails at once too, inside the
 * close: the session must outlive that (a use after free ASan caught in test_redis_aa). */
typedef struct close_in_cb {
    crdt_store_t *st;
    crdt_store_rsx_t *x;
    step_res_t r;
} close_in_cb_t;

static void on_step_close(void *ud, int rc, const crdt_store_rsx_result_t *res)
{
    close_in_cb_t *c = ud;
    on_step(&c->r, rc, res);
    if (rc < 0) {
        crdt_store_rsx_close(c->st, c->x);
        c->x = NULL;
    }
}

static void test_rsx_redis_gone(void)
{
    diag("a session whose Redis goes away, closed from its failure callback");
    rh_server_t C = {0};
    crdt_store_t *st = NULL;
    if (rh_start(&C, NULL, "node-id 3", NULL) < 0 ||
        !(st = open_store(C.port, 31, false, 0, NULL))) {
        ok(0, "a store on a third redis-server");
        rh_stop(&C);
        return;
    }
    is_int(add_member(st, "gone:k", "m"), 1, "a key to reconcile");
    crdt_rsx_config_t cfg;
    crdt_rsx_config_init(&cfg);
    close_in_cb_t c = {.st = st, .x = crdt_store_rsx_open(st, true, &cfg)};
    ok(c.x != NULL, "a session opened");
    if (!c.x) {
        crdt_store_close(st);
        rh_stop(&C);
        return;
    }
    step(st, c.x, NULL, 0, &c.r);
    ok(c.r.done_cb && c.r.rc == 0 && c.r.reply_len > 0, "its first step ran in the module");
    /* the step's message is borrowed for the call, and the callback frees c.r.reply */
    size_t n = c.r.reply_len;
    uint8_t *msg = malloc(n ? n : 1);
    if (n)
        memcpy(msg, c.r.reply, n);
    rh_kill(&C);
    c.r.done_cb = false;
    crdt_store_rsx_step(st, c.x, msg, n, on_step_close, &c);
    wait_done(&c.r.done_cb);
    free(msg);
    ok(c.r.done_cb && c.r.rc < 0, "with Redis gone the next step fails (%s)", c.r.err);
    ok(c.x == NULL, "and its callback closed the session");
    ok(rh_restart(&C) == 0, "Redis back");
    int rc = -1;
    for (int i = 0; i < 100 && rc != 1; i++) {
        rc = add_member(st, "gone:k2", "m");
        if (rc != 1)
            rh_sleep_ms(100);
    }
    is_int(rc, 1, "the store writes again");
    crdt_store_rsx_t *x2 = crdt_store_rsx_open(st, true, &cfg);
    step_res_t r2 = {0};
    if (x2)
        step(st, x2, NULL, 0, &r2);
    ok(x2 && r2.done_cb && r2.rc == 0 && r2.reply_len > 0, "and runs a new session");
    crdt_store_rsx_close(st, x2);
    free(r2.reply);
    free(c.r.reply);
    crdt_store_close(st);
    rh_stop(&C);
}

static void test_rsx_cluster(rh_server_t *B)
{
    diag("anti-entropy between a 3-primary cluster (the session runs in the store over "
         "CRDT.RSX.ITEMS of every primary) and one server (a module session)");
    rh_err(rh_cmd(B, "FLUSHALL"));
    rc_cluster_t CL;
    memset(&CL, 0, sizeof(CL));
    if (rc_start(&CL, 3, 0, "") != 0) {
        ok(0, "a cluster of 3 primaries");
        return;
    }
    char url[128];
    snprintf(url, sizeof(url), "redis://127.0.0.1:%d,127.0.0.1:%d,127.0.0.1:%d", CL.node[0].port,
             CL.node[1].port, CL.node[2].port);
    crdt_store_t *c = open_url(url, 31, false, 0, NULL);
    crdt_store_t *b = open_store(B->port, 32, false, 0, NULL);
    ok(c && b && crdt_store_redis_is_cluster(c) == 1,
       "a store over the cluster, one over the server");
    if (!c || !b) {
        crdt_store_close(c);
        crdt_store_close(b);
        rc_stop(&CL);
        return;
    }
    char k[32];
    for (int i = 0; i < 30; i++) {
        snprintf(k, sizeof(k), "cl:%d", i);
        add_member(c, k, "c");
        snprintf(k, sizeof(k), "sv:%d", i);
        add_member(b, k, "b");
    }
    for (int i = 0; i < 10; i++) {
        snprintf(k, sizeof(k), "both:%d", i);
        add_member(c, k, "from-c");
        add_member(b, k, "from-b");
    }
    step_res_t rc_, rb;
    ok(run_session(c, b, &rc_, &rb), "cluster as initiator: the session ran to its end");
    int we = 0, they = 0;
    for (size_t i = 0; i < rc_.ndiffs; i++) {
        we += (rc_.diffs[i].flags & CRDT_RSX_WE_HAVE) != 0;
        they += (rc_.diffs[i].flags & CRDT_RSX_THEY_HAVE) != 0;
    }
    is_int((long long)rc_.ndiffs, 70, "70 keys differ");
    is_int(we, 40, "40 the cluster holds");
    is_int(they, 40, "40 the server holds");
    repair_t pc, pb;
    is_int(repair(c, b, &rc_, &pc), 40, "rsx_keys over the cluster gave 40 keys");
    is_int(repair(b, c, &rb, &pb), 40, "rsx_keys on the server gave 40 keys");
    free(rc_.diffs);
    free(rb.diffs);
    free(rc_.reply);
    free(rb.reply);
    ok(run_session(b, c, &rb, &rc_), "server as initiator, cluster as responder");
    is_int((long long)rb.ndiffs + (long long)rc_.ndiffs, 0, "no difference left on either side");
    free(rc_.diffs);
    free(rb.diffs);
    free(rc_.reply);
    free(rb.reply);
    bool same = true;
    for (int i = 0; i < 30 && same; i++) {
        snprintf(k, sizeof(k), "cl:%d", i);
        same = same_through(c, b, k);
        snprintf(k, sizeof(k), "sv:%d", i);
        same = same && same_through(c, b, k);
    }
    for (int i = 0; i < 10 && same; i++) {
        snprintf(k, sizeof(k), "both:%d", i);
        same = same_through(c, b, k);
    }
    ok(same, "every key byte-identical on the cluster and the server");
    crdt_store_close(c);
    crdt_store_close(b);
    rc_stop(&CL);
}

/* ---- embedded node <-> Redis site ------------------------------------------------------------ */

/* Writes `count` keys "c:<i>" (i from `from`) to es and merges each state into the server, so
 * both hold them byte-identical. */
static bool common_keys(crdt_store_t *es, rh_server_t *S, int from, int count)
{
    bool good = true;
    for (int i = from; i < from + count && good; i++) {
        char k[32];
        snprintf(k, sizeof(k), "c:%d", i);
        int wrc = add_member(es, k, i % 3 ? "m" : "n");
        got_t g = {0};
        crdt_store_get(es, k, strlen(k), on_got, &g);
        wait_done(&g.done);
        redisReply *r = rh_cmd(S, "CRDT.MERGE %s %b", k, g.b.data, g.b.len);
        good = wrc >= 0 && g.rc >= 0 && g.b.len && r && r->type == REDIS_REPLY_INTEGER;
        if (!good)
            diag("%s: write rc %d, get rc %d, merge reply type %d", k, wrc, g.rc, r ? r->type : -1);
        if (r)
            freeReplyObject(r);
        crdt_buf_free(&g.b);
    }
    return good;
}

/* The keys that differ between the embedded store and the server: name and the flags the
 * embedded side must see (the server's are the mirror image). */
static const struct {
    const char *name;
    unsigned flags;
} ediff[] = {
    {"e:1", CRDT_RSX_WE_HAVE},
    {"e:2", CRDT_RSX_WE_HAVE},
    {"e:3", CRDT_RSX_WE_HAVE},
    {"r:1", CRDT_RSX_THEY_HAVE},
    {"r:2", CRDT_RSX_THEY_HAVE},
    {"r:3", CRDT_RSX_THEY_HAVE},
    {"b:1", CRDT_RSX_WE_HAVE | CRDT_RSX_THEY_HAVE},
    {"b:2", CRDT_RSX_WE_HAVE | CRDT_RSX_THEY_HAVE},
};
#define NEDIFF (sizeof(ediff) / sizeof(ediff[0]))

/* true if r names exactly the ids of ediff, each with its flags (mirrored when !embedded). */
static bool names_ediff(const step_res_t *r, bool embedded)
{
    if (r->ndiffs != NEDIFF) {
        diag("%zu differing ids, not %zu", r->ndiffs, NEDIFF);
        return false;
    }
    for (size_t i = 0; i < NEDIFF; i++) {
        uint64_t id = crdt_rsx_key_id(ediff[i].name, strlen(ediff[i].name));
        unsigned f = ediff[i].flags;
        if (!embedded)
            f = (f & CRDT_RSX_WE_HAVE ? CRDT_RSX_THEY_HAVE : 0) |
                (f & CRDT_RSX_THEY_HAVE ? CRDT_RSX_WE_HAVE : 0);
        bool found = false;
        for (size_t k = 0; k < r->ndiffs && !found; k++)
            found = r->diffs[k].id == id && r->diffs[k].flags == f;
        if (!found) {
            diag("%s (flags %u) not among the differences", ediff[i].name, f);
            return false;
        }
    }
    return true;
}

static void free_res(step_res_t *a, step_res_t *b)
{
    free(a->diffs);
    free(b->diffs);
    free(a->reply);
    free(b->reply);
}

static void test_rsx_embedded(rh_server_t *S)
{
    diag("anti-entropy between an embedded store and a Redis store: the same items on both");
    rh_err(rh_cmd(S, "FLUSHALL"));
    crdt_replica_config_t cfg;
    crdt_replica_config_init(&cfg);
    cfg.node_id = 41;
    cfg.timeline_max_size = 0; /* as the module's timeline-max-size: unbounded */
    crdt_error_t err = {0};
    crdt_store_t *es = crdt_store_embedded_open(&cfg, &err);
    crdt_store_t *rs = open_store(S->port, 42, false, 0, NULL);
    ok(es && rs, "an embedded store and a store over the server");
    if (!es || !rs) {
        crdt_store_close(es);
        crdt_store_close(rs);
        return;
    }
    /* N1 common keys (every type's canonical encoding is the same on both: test_store_redis),
     * and d = 8 differing: 3 only embedded, 3 only on the server, 2 on both with other states */
    enum { N1 = 250, N2 = 4000 };
    ok(common_keys(es, S, 0, N1), "%d identical keys on both", N1);
    crdt_mut_t inc = {.type = CRDT_PNCOUNTER, .kind = CRDT_MUT_INCR, .n = 5};
    add_member(es, "e:1", "x");
    add_member(es, "e:2", "y");
    sw(es, "e:3", &inc);
    add_member(rs, "r:1", "x");
    add_member(rs, "r:2", "y");
    sw(rs, "r:3", &inc);
    add_member(es, "b:1", "from-e");
    add_member(rs, "b:1", "from-r");
    sw(es, "b:2", &inc);
    sw(rs, "b:2", &inc); /* the same increment, but of another node: another state */

    step_res_t re, rr;
    ok(run_session(es, rs, &re, &rr), "embedded initiator, Redis responder: the session ended");
    ok(names_ediff(&re, true), "the embedded side names exactly the 8 differing keys");
    ok(names_ediff(&rr, false), "the Redis side names the same 8, mirrored");
    size_t bytes1 = session_bytes;
    free_res(&re, &rr);

    /* 16 times the common keys, the same difference: the bytes grow with log N, not N */
    ok(common_keys(es, S, N1, N2 - N1), "%d identical keys on both", N2);
    ok(run_session(es, rs, &re, &rr), "again with %d common keys", N2);
    ok(names_ediff(&re, true) && names_ediff(&rr, false), "still exactly the 8 keys");
    size_t bytes2 = session_bytes;
    free_res(&re, &rr);
    ok(run_session(rs, es, &rr, &re), "Redis initiator, embedded responder");
    ok(names_ediff(&re, true) && names_ediff(&rr, false), "exactly the 8 keys too");
    size_t bytes3 = session_bytes;
    diag("session bytes: %zu with %d common keys, %zu and %zu with %d", bytes1, N1, bytes2, bytes3,
         N2);
    /* O(N) would be bytes per common key (with the fingerprints apart, every key differed:
     * about 60 bytes a key); O(d log N) for d = 8 is about a kilobyte (a third of it the first
     * message's estimator), and 16x the keys adds about log2(16) levels to a few ranges */
    ok(bytes2 < N2 / 2 && bytes3 < N2 / 2,
       "%zu and %zu bytes for %d keys: under half a byte per common key", bytes2, bytes3, N2);
    ok(bytes2 < 64 * NEDIFF * 12 && bytes3 < 64 * NEDIFF * 12,
       "under 64 bytes per differing key and level (d = %zu, log2 N = 12)", NEDIFF);
    ok(bytes2 < 2 * bytes1 + 256, "16x the common keys: %zu -> %zu bytes, not 16x", bytes1, bytes2);

    /* repair both ways; then nothing differs */
    repair_t pe, pr;
    is_int(repair(es, rs, &re, &pe), 5, "rsx_keys on the embedded store gave its 5 keys");
    is_int(repair(rs, es, &rr, &pr), 5, "rsx_keys on the server gave its 5 keys");
    free_res(&re, &rr);
    ok(run_session(es, rs, &re, &rr), "a session after the repair");
    is_int((long long)re.ndiffs + (long long)rr.ndiffs, 0, "finds no difference left");
    free_res(&re, &rr);
    bool same = true;
    for (size_t i = 0; i < NEDIFF && same; i++)
        same = same_through(es, rs, ediff[i].name);
    ok(same, "the 8 keys are byte-identical in both stores");
    crdt_store_close(es);
    crdt_store_close(rs);
}

int main(void)
{
    const char *why = rh_skip_reason();
    if (why)
        skip_all("%s", why);
    rh_watchdog(rh_sanitized() ? 240 : 120);
    signal(SIGPIPE, SIG_IGN);
    L = ep_new();
    rh_server_t A = {0}, B = {0};
    if (rh_start(&A, NULL, "node-id 1", NULL) < 0 || rh_start(&B, NULL, "node-id 2", NULL) < 0)
        bail_out("cannot start redis-server");
    test_origin(A.port);
    test_wants(A.port);
    test_seq_base(A.port);
    test_rsx(&A, &B);
    test_rsx_embedded(&A);
    test_rsx_redis_gone();
    if (!rc_skip_reason())
        test_rsx_cluster(&B);
    rh_stop(&A);
    rh_stop(&B);
    ep_free(L);
    rh_cleanup();
    ok(rh_sanitizer_reports() == 0, "no sanitizer reports from the servers");
    return done_testing();
}
