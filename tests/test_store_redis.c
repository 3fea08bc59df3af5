/* test_store_redis.c - the Redis store (gateway/redis) against real redis-server processes with
 * crdt.so: the store contract of test_store.c on one server, byte-identical states with the
 * embedded store, WAIT, a restart; a real 3-primary cluster (keys on every primary, MOVED after a
 * slot moved, ASK during the move, a primary killed: fail fast, then recovery after failover);
 * and fake servers on loopback answering garbage, wrong reply types or nothing.
 */
#include <errno.h>
#include <math.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "crdt_store.h"
#include "evloop_poll.h"
#include "list_check.h"
#include "logpos.h"
#include "redis_cluster_helper.h"
#include "redis_helper.h"
#include "store_redis.h"
#include "tap.h"

static ep_loop_t *L;

/* ---- results of completions -------------------------------------------------------------------
 */

typedef struct res {
    bool done;
    int calls, rc;
    uint64_t seq;
    crdt_obj_t *obj; /* a copy */
    size_t card, n;
    uint8_t mark[64];
    size_t mark_len;
} res_t;

static void res_reset(res_t *r)
{
    crdt_obj_free(r->obj);
    memset(r, 0, sizeof(*r));
}

static void on_write(void *ud, int rc, uint64_t seq)
{
    res_t *r = ud;
    r->calls++;
    r->rc = rc;
    r->seq = seq;
    r->done = true;
}

static void on_get(void *ud, int rc, const crdt_obj_t *o)
{
    res_t *r = ud;
    r->calls++;
    r->rc = rc;
    r->obj = o ? crdt_obj_clone(o) : NULL;
    r->card = o && crdt_obj_type(o) == CRDT_TIMELINE ? crdt_timeline_card(o) : 0;
    r->done = true;
}

static void on_many(void *ud, int rc, const crdt_obj_t *const *objs, size_t n)
{
    res_t *r = ud;
    r->calls++;
    r->rc = rc;
    r->n = 0;
    for (size_t i = 0; objs && i < n; i++)
        r->n += objs[i] != NULL;
    r->done = true;
}

static void on_done(void *ud, int rc, uint64_t next)
{
    res_t *r = ud;
    r->calls++;
    r->rc = rc;
    r->seq = next;
    r->done = true;
}

static int scan_each(void *ud, const void *key, size_t klen, const crdt_obj_t *o)
{
    (void)key, (void)klen, (void)o;
    ((res_t *)ud)->n++;
    return 0;
}

static void on_mark(void *ud, int rc, const void *p, size_t n)
{
    res_t *r = ud;
    r->calls++;
    r->rc = rc;
    r->mark_len = n;
    if (p && n <= sizeof(r->mark))
        memcpy(r->mark, p, n);
    r->done = true;
}

static void on_status(void *ud, int rc)
{
    res_t *r = ud;
    r->calls++;
    r->rc = rc;
    r->done = true;
}

static void on_fp(void *ud, int rc, uint64_t fp)
{
    res_t *r = ud;
    r->calls++;
    r->rc = rc;
    r->seq = fp;
    r->done = true;
}

typedef struct feed_res {
    bool done, states_ok;
    int rc;
    size_t n;
    uint64_t next, last_seq;
    char keys[16][16];
} feed_res_t;

static int feed_each(const void *key, size_t klen, uint64_t seq, const crdt_obj_t *state, void *ud)
{
    feed_res_t *f = ud;
    if (f->n == 0)
        f->states_ok = true;
    if (!state || seq <= f->last_seq)
        f->states_ok = false;
    f->last_seq = seq;
    if (f->n < 16)
        snprintf(f->keys[f->n], sizeof(f->keys[0]), "%.*s", (int)(klen < 15 ? klen : 15),
                 (const char *)key);
    f->n++;
    return 0;
}

static void on_feed_done(void *ud, int rc, uint64_t next)
{
    feed_res_t *f = ud;
    f->rc = rc;
    f->next = next;
    f->done = true;
}

static bool wait_res(res_t *r)
{
    return ep_run_until(L, &r->done, 5000);
}

typedef struct events {
    int changes;
    uint64_t last_seq, last_origin, durable;
    bool in_order;
    int durables;
} events_t;

static void ev_change(void *ud, const void *key, size_t klen, uint64_t seq, const crdt_obj_t *delta,
                      uint64_t origin)
{
    (void)key, (void)klen;
    events_t *e = ud;
    if (seq != e->last_seq + 1 || !delta)
        e->in_order = false;
    e->changes++;
    e->last_seq = seq;
    e->last_origin = origin;
}

static void ev_durable(void *ud, uint64_t d)
{
    events_t *e = ud;
    e->durables++;
    e->durable = d;
}

static crdt_store_t *open_store(const char *url, const crdt_store_redis_config_t *cfg0)
{
    crdt_store_redis_config_t cfg;
    if (cfg0)
        cfg = *cfg0;
    else {
        crdt_store_redis_config_init(&cfg);
        cfg.node_id = 42;
    }
    char err[256] = "";
    crdt_store_t *st = crdt_store_redis_open(url, &cfg, ep_loop(L), err, sizeof(err));
    if (!st) {
        diag("open %s: %s", url, err);
        return NULL;
    }
    uint64_t end = gw_evloop_mono_ms() + 8000;
    while (crdt_store_redis_ready(st) != 1 && gw_evloop_mono_ms() < end)
        ep_run_once(L, 20);
    return st;
}

/* A store over srv, ready (a test point says so), or NULL. */
static crdt_store_t *open_server(rh_server_t *srv)
{
    char url[64];
    snprintf(url, sizeof(url), "redis://127.0.0.1:%d", srv->port);
    crdt_store_t *st = open_store(url, NULL);
    if (ok(st && crdt_store_redis_ready(st) == 1, "open %s", url))
        return st;
    crdt_store_close(st);
    return NULL;
}

static void sw(crdt_store_t *st, const char *key, const crdt_mut_t *m, res_t *r)
{
    res_reset(r);
    crdt_store_write(st, key, strlen(key), m, on_write, r);
    wait_res(r);
}

static void sget(crdt_store_t *st, const char *key, res_t *r)
{
    res_reset(r);
    crdt_store_get(st, key, strlen(key), on_get, r);
    wait_res(r);
}

/* ---- tl_write_batch: timeline writes checked as one ------------------------------------------ */

typedef struct bres {
    bool done;
    int calls, rc;
    crdt_store_batch_result_t res;
} bres_t;

static void on_batch(void *ud, int rc, const crdt_store_batch_result_t *res)
{
    bres_t *b = ud;
    b->calls++;
    b->rc = rc;
    b->res = *res;
    b->done = true;
}

/* n writes of kind to keys[i] (score i + base, member "m<i>") through tl_write_batch. */
static void batch_of(crdt_store_t *st, const char *const *keys, size_t n, crdt_mut_kind_t kind,
                     double base, bres_t *b)
{
    crdt_store_kmut_t w[16];
    char mem[16][8];
    for (size_t i = 0; i < n && i < 16; i++) {
        snprintf(mem[i], sizeof(mem[i]), "m%zu", i);
        w[i] = (crdt_store_kmut_t){(const uint8_t *)keys[i],
                                   strlen(keys[i]),
                                   {.type = CRDT_TIMELINE,
                                    .kind = kind,
                                    .bytes = mem[i],
                                    .len = strlen(mem[i]),
                                    .score = base + (double)i}};
    }
    memset(b, 0, sizeof(*b));
    crdt_store_tl_write_batch(st, w, n, on_batch, b);
    ep_run_until(L, &b->done, 5000);
}

/* calls=N of a command in INFO commandstats */
static long long cmd_calls(rh_server_t *srv, const char *cmd)
{
    redisReply *r = rh_cmd(srv, "INFO commandstats");
    long long v = 0;
    char field[64];
    snprintf(field, sizeof(field), "cmdstat_%s:calls=", cmd);
    const char *p = r && r->type == REDIS_REPLY_STRING ? strstr(r->str, field) : NULL;
    if (p)
        v = strtoll(p + strlen(field), NULL, 10);
    if (r)
        freeReplyObject(r);
    return v;
}

static size_t card_of(crdt_store_t *st, const char *key)
{
    res_t r = {0};
    sget(st, key, &r);
    size_t c = r.rc == 0 && r.obj ? crdt_timeline_card(r.obj) : 0;
    res_reset(&r);
    return c;
}

/* ---- the contract on one server ---------------------------------------------------------------
 */

static bool wait_loop(bool *done, void *ctx)
{
    (void)ctx;
    return ep_run_until(L, done, 10000);
}

static void test_contract(rh_server_t *srv)
{
    diag("the store contract against one redis-server with crdt.so");
    char url[64];
    snprintf(url, sizeof(url), "redis://127.0.0.1:%d", srv->port);
    crdt_store_t *st = open_store(url, NULL);
    ok(st && crdt_store_redis_ready(st) == 1, "open and discover %s", url);
    if (!st || crdt_store_redis_ready(st) != 1) {
        crdt_store_close(st);
        return;
    }
    is(st->ops->name, "redis", "the store names itself");
    is_int(crdt_store_redis_is_cluster(st), 0, "a single server, not a cluster");
    ok(crdt_store_last_error(st) == NULL, "healthy once discovered");
    is_int((int)crdt_store_node_id(st), 42, "node id from the configuration");
    ok(crdt_store_embedded_replica(st) == NULL, "no replica under a Redis store");
    events_t ev = {.in_order = true};
    crdt_store_set_events(st, &(crdt_store_events_t){ev_change, ev_durable, &ev, NULL});

    res_t r = {0};
    crdt_mut_t add = {
        .type = CRDT_TIMELINE, .kind = CRDT_MUT_ADD, .bytes = "p1", .len = 2, .score = 1};
    sw(st, "feed", &add, &r);
    ok(r.calls == 1 && r.rc == 1 && r.seq == 1, "timeline add: rc 1, seq 1 (rc %d seq %llu)", r.rc,
       (unsigned long long)r.seq);
    ok(ev.changes == 1 && ev.last_seq == 1 && ev.last_origin == CRDT_ORIGIN_LOCAL,
       "the change event reports seq 1 and a local origin");
    sw(st, "feed", &add, &r);
    ok(r.calls == 1 && r.rc == 0 && r.seq == 0, "the same add again is a no-op");
    is_int(ev.changes, 1, "and no event");

    crdt_mut_t set = {.type = CRDT_LWWREG, .kind = CRDT_MUT_SET, .bytes = "x", .len = 1};
    sw(st, "feed", &set, &r);
    is_int(r.rc, CRDT_ETYPE, "a register write on a timeline: ETYPE");
    sw(st, "reg", &set, &r);
    ok(r.rc == 1 && r.seq == 2, "an LWW write without a timestamp is stamped by the module");
    freeReplyObject(rh_cmd(srv, "SET native v"));
    sw(st, "native", &add, &r);
    is_int(r.rc, CRDT_ETYPE, "a write on a native Redis string: ETYPE");

    crdt_mut_t bad = add;
    bad.score = 0.0 / 0.0;
    sw(st, "feed", &bad, &r);
    is_int(r.rc, CRDT_EINVAL, "a NaN score is refused before Redis sees it");
    crdt_mut_t g = {.type = CRDT_GCOUNTER, .kind = CRDT_MUT_INCR, .n = -1};
    sw(st, "g", &g, &r);
    is_int(r.rc, CRDT_EINVAL, "a negative grow-only increment is refused");
    crdt_mut_t pn = {.type = CRDT_PNCOUNTER, .kind = CRDT_MUT_INCR, .n = -5};
    sw(st, "pn", &pn, &r);
    is_int(r.rc, 1, "a PN-counter decrement");
    crdt_mut_t os = {.type = CRDT_ORSET, .kind = CRDT_MUT_ADD, .bytes = "m", .len = 1};
    sw(st, "os", &os, &r);
    is_int(r.rc, 1, "an OR-Set add");
    crdt_mut_t ls = {.type = CRDT_LWWSET, .kind = CRDT_MUT_ADD, .bytes = "m", .len = 1};
    sw(st, "ls", &ls, &r);
    is_int(r.rc, 1, "an LWW-element-set add, stamped by the store's clock");
    sget(st, "ls", &r);
    ok(r.obj && crdt_obj_type(r.obj) == CRDT_LWWSET, "and the key holds an LWW-element-set");

    crdt_obj_t *remote = crdt_timeline_new(0), *d = NULL;
    crdt_timeline_add(remote, "p2", 2, 2, &d);
    res_reset(&r);
    crdt_store_apply(st, "feed", 4, d, 9, on_write, &r);
    wait_res(&r);
    ok(r.rc == 1 && r.seq == crdt_store_last_seq(st), "apply of a remote delta (seq %llu)",
       (unsigned long long)r.seq);
    is_int((int)ev.last_origin, 9, "the event carries the peer's origin");
    res_reset(&r);
    crdt_store_apply(st, "feed", 4, d, 9, on_write, &r);
    wait_res(&r);
    ok(r.rc == 0 && r.seq == 0, "the same delta again is a no-op");
    crdt_obj_free(d);
    crdt_obj_free(remote);

    sget(st, "feed", &r);
    ok(r.calls == 1 && r.rc == 0 && r.card == 2, "get: both entries");
    sget(st, "nope", &r);
    ok(r.calls == 1 && r.rc == 0 && r.obj == NULL, "get of an absent key: NULL");
    sget(st, "native", &r);
    is_int(r.rc, CRDT_ETYPE, "get of a native key: ETYPE");
    crdt_bytes_t keys[3] = {{"feed", 4}, {"nope", 4}, {"reg", 3}};
    res_reset(&r);
    crdt_store_get_many(st, keys, 3, on_many, &r);
    wait_res(&r);
    ok(r.calls == 1 && r.rc == 0 && r.n == 2, "get_many: two of three keys present");

    res_reset(&r);
    crdt_store_fingerprint(st, "feed", 4, on_fp, &r);
    wait_res(&r);
    uint64_t fp = r.seq;
    ok(r.rc == 0 && fp != 0, "fingerprint of a key");
    res_reset(&r);
    crdt_store_fingerprint(st, "nope", 4, on_fp, &r);
    wait_res(&r);
    is_int(r.rc, CRDT_EINVAL, "fingerprint of an absent key: EINVAL");

    res_reset(&r);
    crdt_store_mark_get(st, "peers", on_mark, &r);
    wait_res(&r);
    ok(r.calls == 1 && r.rc == 0 && r.mark_len == 0, "a mark never put reads as empty");
    res_reset(&r);
    crdt_store_mark_put(st, "peers", "abc", 3, on_status, &r);
    wait_res(&r);
    ok(r.calls == 1 && r.rc == 0, "mark put");
    res_reset(&r);
    crdt_store_mark_put(st, "peers", "hel\0o", 5, on_status, &r);
    wait_res(&r);
    res_reset(&r);
    crdt_store_mark_get(st, "peers", on_mark, &r);
    wait_res(&r);
    ok(r.rc == 0 && r.mark_len == 5 && memcmp(r.mark, "hel\0o", 5) == 0,
       "a second put replaces the mark (binary-safe)");
    redisReply *mk = rh_cmd(srv, "GET {crdtd:42}:mark:peers");
    ok(mk && mk->type == REDIS_REPLY_STRING && mk->len == 5, "kept under {crdtd:42}:mark:peers");
    freeReplyObject(mk);
    res_reset(&r);
    crdt_store_mark_put(st, "../escape", "x", 1, on_status, &r);
    ok(r.done && r.rc == CRDT_EINVAL, "a bad mark name is refused at once");

    /* scan: the CRDT keys only (not the mark, not the native key) */
    long long keys_in_redis = rh_info_field(srv, "crdt", "crdt_keys");
    res_reset(&r);
    size_t seen = 0;
    uint64_t cur = 0;
    int rounds = 0;
    do {
        res_reset(&r);
        crdt_store_scan(st, cur, 2, scan_each, on_done, &r);
        wait_res(&r);
        seen += r.n;
        cur = r.seq;
    } while (r.rc == 0 && cur != 0 && ++rounds < 100);
    ok(r.rc == 0 && (long long)seen == keys_in_redis,
       "scan in pages of 2 visits every CRDT key once (%zu of %lld)", seen, keys_in_redis);
    /* an internal key (crdtd's op-id marks, 0x00 'c' '/') is left out of scans */
    rh_int(rh_cmd(srv, "CRDT.TLADD %b 1 m", "\0c/ids/1", (size_t)8));
    ok(rh_info_field(srv, "crdt", "crdt_keys") == keys_in_redis + 1, "an internal key in Redis");
    seen = 0;
    cur = 0;
    rounds = 0;
    do {
        res_reset(&r);
        crdt_store_scan(st, cur, 2, scan_each, on_done, &r);
        wait_res(&r);
        seen += r.n;
        cur = r.seq;
    } while (r.rc == 0 && cur != 0 && ++rounds < 100);
    ok(r.rc == 0 && (long long)seen == keys_in_redis,
       "scan leaves the internal key out (%zu of %lld data keys)", seen, keys_in_redis);
    rh_int(rh_cmd(srv, "DEL %b", "\0c/ids/1", (size_t)8));

    /* the change feed: keys changed after a seq, oldest first, with their current state */
    static const char *const changed[] = {"reg", "pn", "os", "ls", "feed"};
    feed_res_t fr = {0};
    crdt_store_changes(st, 0, 100, feed_each, on_feed_done, &fr);
    ep_run_until(L, &fr.done, 5000);
    bool keys_ok = fr.rc == 0 && fr.n == 5;
    for (size_t i = 0; keys_ok && i < 5; i++)
        keys_ok = strcmp(fr.keys[i], changed[i]) == 0 && fr.states_ok;
    ok(keys_ok, "changes(0): the 5 keys changed, each once, in the order of their last change");
    ok(fr.next == crdt_store_last_seq(st), "and next is last_seq once the feed is exhausted");
    memset(&fr, 0, sizeof(fr));
    crdt_store_changes(st, 0, 2, feed_each, on_feed_done, &fr);
    ep_run_until(L, &fr.done, 5000);
    uint64_t next = fr.next;
    ok(fr.rc == 0 && fr.n == 2 && strcmp(fr.keys[1], "pn") == 0 && next < crdt_store_last_seq(st),
       "changes(0, limit 2): two keys, next before the rest");
    memset(&fr, 0, sizeof(fr));
    crdt_store_changes(st, next, 100, feed_each, on_feed_done, &fr);
    ep_run_until(L, &fr.done, 5000);
    ok(fr.rc == 0 && fr.n == 3 && strcmp(fr.keys[0], "os") == 0, "and from there the other three");
    memset(&fr, 0, sizeof(fr));
    crdt_store_changes(st, crdt_store_last_seq(st) + 100, 10, feed_each, on_feed_done, &fr);
    ok(fr.done && fr.rc == CRDT_EUNAVAIL && strstr(crdt_store_last_error(st), "another run"),
       "a position ahead of the store (another run of the gateway): EUNAVAIL, rescan: %s",
       crdt_store_last_error(st) ? crdt_store_last_error(st) : "");

    /* grow-only counters keep their type (CRDT.GINCRBY; INCRBY would make a PN-counter) */
    crdt_mut_t gi = {.type = CRDT_GCOUNTER, .kind = CRDT_MUT_INCR, .n = 3};
    sw(st, "g", &gi, &r);
    is_int(r.rc, 1, "a grow-only increment on an absent key");
    sget(st, "g", &r);
    ok(r.obj && crdt_obj_type(r.obj) == CRDT_GCOUNTER,
       "makes a G-counter, as the embedded store does");
    sw(st, "g", &gi, &r);
    is_int(r.rc, 1, "and the next grow-only increment finds its type");
    sw(st, "pn", &gi, &r);
    is_int(r.rc, CRDT_ETYPE, "a grow-only increment on a PN-counter: ETYPE");

    /* durability: many writes in flight; completions in order, durable_seq covers all */
    uint64_t before = crdt_store_last_seq(st);
    enum { NW = 300 };
    static res_t many[NW];
    for (int i = 0; i < NW; i++) {
        memset(&many[i], 0, sizeof(many[i]));
        char k[32], m[16];
        snprintf(k, sizeof(k), "dur:%d", i % 37);
        snprintf(m, sizeof(m), "m%d", i);
        crdt_mut_t a = {
            .type = CRDT_TIMELINE, .kind = CRDT_MUT_ADD, .bytes = m, .len = strlen(m), .score = i};
        crdt_store_write(st, k, strlen(k), &a, on_write, &many[i]);
    }
    crdt_store_redis_stats_t rs;
    crdt_store_redis_stats(st, &rs);
    cmp_ok(rs.sent - rs.replies, ">=", 100, "writes are pipelined (%llu in flight)",
           (unsigned long long)(rs.sent - rs.replies));
    ep_run_until(L, &many[NW - 1].done, 10000);
    bool all = true, ordered = true;
    for (int i = 0; i < NW; i++) {
        all = all && many[i].done && many[i].rc == 1;
        ordered = ordered && many[i].seq == before + 1 + (uint64_t)i;
    }
    ok(all, "all %d pipelined writes completed", NW);
    ok(ordered, "seqs follow the order of completion on one connection");
    is_int((int)crdt_store_durable_seq(st), (int)crdt_store_last_seq(st),
           "durable_seq reaches last_seq");
    ok(ev.durable == crdt_store_durable_seq(st) && ev.durables > 0, "the durable event told it");
    ok(ev.in_order, "change events came in seq order, each with a delta");
    crdt_store_stats_t sts;
    crdt_store_stats(st, &sts);
    cmp_ok(sts.writes, ">=", NW, "stats count the writes");
    res_reset(&r);
    crdt_store_close(st);
}

/* ---- fan-out through the change logs -----------------------------------------------------------
 */

typedef struct fan {
    int events, bad;
    int per_key[64]; /* events of "fan:<i>" / "ck:<i>" keys */
    uint64_t last_seq;
    bool ordered;
} fan_t;

static void fan_change(void *ud, const void *key, size_t klen, uint64_t seq,
                       const crdt_obj_t *delta, uint64_t origin)
{
    (void)origin;
    fan_t *f = ud;
    f->events++;
    if (seq <= f->last_seq)
        f->ordered = false;
    f->last_seq = seq;
    char k[32];
    snprintf(k, sizeof(k), "%.*s", (int)(klen < 31 ? klen : 31), (const char *)key);
    const char *colon = strchr(k, ':');
    int i = colon ? atoi(colon + 1) : -1;
    if (!delta || crdt_obj_type(delta) != CRDT_TIMELINE || i < 0 || i >= 64)
        f->bad++;
    else
        f->per_key[i]++;
}

static crdt_store_t *open_follower(const char *url, uint64_t node, fan_t *f)
{
    crdt_store_redis_config_t cfg;
    crdt_store_redis_config_init(&cfg);
    cfg.node_id = node;
    cfg.follow_logs = true;
    crdt_store_t *st = open_store(url, &cfg);
    if (st) {
        memset(f, 0, sizeof(*f));
        f->ordered = true;
        crdt_store_set_events(st, &(crdt_store_events_t){fan_change, NULL, f, NULL});
        ep_run_for(L, 150); /* the first CRDT.LOG.LIST of every primary */
    }
    return st;
}

static bool wait_events(fan_t *f, int n, int ms)
{
    uint64_t end = gw_evloop_mono_ms() + (uint64_t)ms;
    while (f->events < n && gw_evloop_mono_ms() < end)
        ep_run_once(L, 20);
    return f->events >= n;
}

static void test_follow(rh_server_t *srv)
{
    diag("two gateways over one Redis: every write reaches both through the change logs");
    char url[64];
    snprintf(url, sizeof(url), "redis://127.0.0.1:%d", srv->port);
    fan_t fa, fb;
    crdt_store_t *a = open_follower(url, 51, &fa), *b = open_follower(url, 52, &fb);
    ok(a && b, "two stores following the logs");
    if (!a || !b) {
        crdt_store_close(a);
        crdt_store_close(b);
        return;
    }
    res_t r = {0};
    for (int i = 0; i < 10; i++) {
        char k[16], m[8];
        snprintf(k, sizeof(k), "fan:%d", i);
        snprintf(m, sizeof(m), "m%d", i);
        crdt_mut_t add = {
            .type = CRDT_TIMELINE, .kind = CRDT_MUT_ADD, .bytes = m, .len = strlen(m), .score = i};
        sw(i % 2 ? b : a, k, &add, &r);
    }
    ok(wait_events(&fa, 10, 3000) && wait_events(&fb, 10, 3000),
       "both gateways got the 10 changes, 5 written through each (%d, %d events)", fa.events,
       fb.events);
    ep_run_for(L, 200);
    bool once = fa.events == 10 && fb.events == 10 && !fa.bad && !fb.bad;
    for (int i = 0; i < 10; i++)
        once = once && fa.per_key[i] == 1 && fb.per_key[i] == 1;
    ok(once, "each change once, with its key and its delta");
    ok(fa.ordered && fb.ordered, "in seq order");
    ok(crdt_store_durable_seq(a) == crdt_store_last_seq(a), "followed changes count as durable");
    feed_res_t fr = {0};
    crdt_store_changes(b, 0, 100, feed_each, on_feed_done, &fr);
    ep_run_until(L, &fr.done, 5000);
    ok(fr.rc == 0 && fr.n == 10 && fr.states_ok,
       "the follower's change feed lists the 10 keys, wherever they were written");
    crdt_store_close(a);
    crdt_store_close(b);
    /* a follower started later reads the logs from their end: nothing old is replayed */
    crdt_store_t *c = open_follower(url, 53, &fa);
    ep_run_for(L, 300);
    ok(c && fa.events == 0, "a new follower starts at the logs' end");
    crdt_store_close(c);

    /* a gateway restarted with the same node id resumes where it was */
    fan_t fd;
    crdt_store_t *d = open_follower(url, 61, &fd);
    ep_run_for(L, 400); /* reads the logs' ends and saves those positions */
    crdt_store_close(d);
    crdt_store_t *w = open_store(url, NULL);
    res_t r2 = {0};
    for (int i = 20; i < 23; i++) {
        char k[16];
        snprintf(k, sizeof(k), "fan:%d", i);
        crdt_mut_t add = {
            .type = CRDT_TIMELINE, .kind = CRDT_MUT_ADD, .bytes = "late", .len = 4, .score = 1};
        if (w)
            sw(w, k, &add, &r2);
    }
    crdt_store_close(w);
    d = open_follower(url, 61, &fd);
    wait_events(&fd, 3, 3000);
    ep_run_for(L, 200);
    crdt_store_redis_stats_t rs;
    crdt_store_redis_stats(d, &rs);
    ok(d && fd.events == 3 && fd.per_key[20] == 1 && fd.per_key[22] == 1 && rs.log_resumed > 0,
       "restarted with its node id, a gateway reports the 3 changes made while it was down "
       "(%d events, %llu positions resumed)",
       fd.events, (unsigned long long)rs.log_resumed);
    crdt_store_close(d);
}

/* ---- closing with operations pending ------------------------------------------------------------
 */

static void test_close_pending(rh_server_t *srv)
{
    diag(
        "close with operations waiting for discovery and in flight: none completes, nothing leaks");
    char url[64];
    snprintf(url, sizeof(url), "redis://127.0.0.1:%d", srv->port);
    crdt_store_redis_config_t cfg;
    crdt_store_redis_config_init(&cfg);
    cfg.node_id = 42;
    char err[256];
    res_t r[4] = {{0}};
    crdt_bytes_t keys[2] = {{"feed", 4}, {"reg", 3}};
    crdt_mut_t add = {
        .type = CRDT_TIMELINE, .kind = CRDT_MUT_ADD, .bytes = "c", .len = 1, .score = 1};
    for (int round = 0; round < 2; round++) {
        crdt_store_t *st = crdt_store_redis_open(url, &cfg, ep_loop(L), err, sizeof(err));
        if (!st) {
            fail("open: %s", err);
            return;
        }
        if (round == 1) { /* in flight rather than waiting */
            uint64_t end = gw_evloop_mono_ms() + 5000;
            while (crdt_store_redis_ready(st) != 1 && gw_evloop_mono_ms() < end)
                ep_run_once(L, 20);
        }
        crdt_store_get_many(st, keys, 2, on_many, &r[0]);
        crdt_store_write(st, "closing", 7, &add, on_write, &r[1]);
        crdt_store_get(st, "feed", 4, on_get, &r[2]);
        /* batches: keys of several slots (a types phase first while discovering), one slot */
        bres_t b[2] = {{0}};
        crdt_store_kmut_t w[3] = {{(const uint8_t *)"cb:1", 4, add},
                                  {(const uint8_t *)"cb:2", 4, add},
                                  {(const uint8_t *)"cb:3", 4, add}};
        crdt_store_tl_write_batch(st, w, 3, on_batch, &b[0]);
        crdt_store_kmut_t w1[2] = {{(const uint8_t *)"{cb}1", 5, add},
                                   {(const uint8_t *)"{cb}2", 5, add}};
        crdt_store_tl_write_batch(st, w1, 2, on_batch, &b[1]);
        crdt_store_close(st);
        ep_run_for(L, 100);
        ok(!r[0].done && !r[1].done && !r[2].done && !b[0].done && !b[1].done,
           "%s: closed with operations (batches too) %s: none completes",
           round ? "ready" : "discovering", round ? "in flight" : "queued");
    }
}

/* ---- byte-identical states with the embedded store (merge paths) ------------------------------
 */

typedef struct gather {
    crdt_buf_t enc;
    bool done;
} gather_t;

static void test_identical(rh_server_t *srv)
{
    diag("byte-identical states: the same deltas through the embedded and the Redis store");
    char url[64];
    snprintf(url, sizeof(url), "redis://127.0.0.1:%d", srv->port);
    crdt_store_t *rs = open_store(url, NULL);
    crdt_replica_config_t cfg;
    crdt_replica_config_init(&cfg);
    cfg.node_id = 42;
    cfg.timeline_max_size = 0; /* as the module's timeline-max-size: unbounded */
    crdt_error_t err = {0};
    crdt_store_t *es = crdt_store_embedded_open(&cfg, &err);
    ok(rs && es, "both stores open");
    if (!rs || !es) {
        crdt_store_close(rs);
        crdt_store_close(es);
        return;
    }
    /* deltas of every type, from three origins, delivered with duplicates */
    srand(7);
    int nd = 0;
    res_t r = {0};
    bool same_rc = true;
    for (int i = 0; i < 120; i++) {
        crdt_obj_t *o = NULL, *d = NULL;
        char key[16];
        int t = i % 6;
        snprintf(key, sizeof(key), "same:%d", t);
        char m[8];
        snprintf(m, sizeof(m), "m%d", rand() % 9);
        crdt_hlc_ts_t ts = {.ms = 1000 + (uint64_t)(rand() % 50), .node = 1 + (uint64_t)(i % 3)};
        switch (t) {
        case 0:
            o = crdt_timeline_new(0);
            if (rand() % 3)
                crdt_timeline_add(o, m, strlen(m), rand() % 20, &d);
            else
                crdt_timeline_remove(o, m, strlen(m), rand() % 20, &d);
            break;
        case 1:
            o = crdt_obj_new(CRDT_GCOUNTER);
            crdt_gcounter_incr(o, 1 + (uint64_t)(i % 3), 1 + (uint64_t)(rand() % 5), &d);
            break;
        case 2:
            o = crdt_obj_new(CRDT_PNCOUNTER);
            crdt_pncounter_add(o, 1 + (uint64_t)(i % 3), rand() % 11 - 5 ? rand() % 11 - 5 : 1, &d);
            break;
        case 3:
            o = crdt_obj_new(CRDT_LWWREG);
            crdt_lwwreg_set(o, &ts, m, strlen(m), &d);
            break;
        case 4:
            o = crdt_obj_new(CRDT_LWWSET);
            crdt_lwwset_add(o, m, strlen(m), &ts, &d);
            break;
        default:
            o = crdt_obj_new(CRDT_ORSET);
            crdt_orset_add(o, 1 + (uint64_t)(i % 3), m, strlen(m), &d);
            break;
        }
        if (!d) {
            crdt_obj_free(o);
            continue;
        }
        for (int dup = 0; dup < 1 + (i % 2); dup++) {
            res_t er = {0};
            crdt_store_apply(es, key, strlen(key), d, 1 + (uint64_t)(i % 3), on_write, &er);
            res_reset(&r);
            crdt_store_apply(rs, key, strlen(key), d, 1 + (uint64_t)(i % 3), on_write, &r);
            wait_res(&r);
            if (er.rc != r.rc) {
                same_rc = false;
                diag("delta %d dup %d on %s: embedded rc %d, redis rc %d", i, dup, key, er.rc,
                     r.rc);
            }
        }
        nd++;
        crdt_obj_free(d);
        crdt_obj_free(o);
    }
    ok(same_rc, "every apply (%d deltas, with duplicates) answered the same in both stores", nd);
    bool identical = true, fps = true;
    for (int t = 0; t < 6; t++) {
        char key[16];
        snprintf(key, sizeof(key), "same:%d", t);
        res_t er = {0};
        crdt_store_get(es, key, strlen(key), on_get, &er);
        redisReply *st = rh_cmd(srv, "CRDT.STATE %s", key);
        crdt_buf_t b = {0};
        if (er.obj)
            crdt_obj_encode(er.obj, &b);
        if (!st || st->type != REDIS_REPLY_STRING || st->len != b.len ||
            memcmp(st->str, b.data, b.len) != 0) {
            identical = false;
            diag("%s differs (%zu bytes embedded, redis %zu)", key, b.len,
                 st && st->type == REDIS_REPLY_STRING ? st->len : 0);
        }
        freeReplyObject(st);
        crdt_buf_free(&b);
        res_t fe = {0};
        crdt_store_fingerprint(es, key, strlen(key), on_fp, &fe);
        res_reset(&r);
        crdt_store_fingerprint(rs, key, strlen(key), on_fp, &r);
        wait_res(&r);
        fps = fps && fe.rc == 0 && r.rc == 0 && fe.seq == r.seq;
        res_reset(&er);
    }
    ok(identical, "CRDT.STATE is byte-identical to the embedded store's encoding, every type");
    ok(fps, "and the fingerprints agree");
    res_reset(&r);
    crdt_store_close(rs);
    crdt_store_close(es);
}

/* ---- WAIT, restart ----------------------------------------------------------------------------
 */

/* Without following the logs, a change's delta is the key's state read after the write: read
 * only for the keys whose delta the events want; the others are reported with delta NULL. */
typedef struct wanted {
    int changes, with_delta;
    uint64_t last_seq;
} wanted_t;

static void wanted_change(void *ud, const void *key, size_t klen, uint64_t seq,
                          const crdt_obj_t *delta, uint64_t origin)
{
    (void)key, (void)klen, (void)origin;
    wanted_t *w = ud;
    w->changes++;
    w->with_delta += delta != NULL;
    w->last_seq = seq;
}

static bool wants_prefix(void *ud, const void *key, size_t klen)
{
    (void)ud;
    return klen >= 5 && !memcmp(key, "want:", 5);
}

static void test_unwanted_states(rh_server_t *srv)
{
    diag("no state read for a change whose delta nobody wants");
    crdt_store_t *st = open_server(srv);
    if (!st)
        return;
    wanted_t w = {0};
    crdt_store_set_events(st, &(crdt_store_events_t){wanted_change, NULL, &w, wants_prefix});
    res_t r = {0};
    crdt_mut_t add = {
        .type = CRDT_TIMELINE, .kind = CRDT_MUT_ADD, .bytes = "x", .len = 1, .score = 3};
    long long states = cmd_calls(srv, "crdt.state");
    sw(st, "skip:1", &add, &r);
    ok(r.rc == 1 && w.changes == 1 && w.with_delta == 0 && w.last_seq == r.seq,
       "an unwanted key's change is reported, seq %llu, without its delta",
       (unsigned long long)r.seq);
    is_int((int)(cmd_calls(srv, "crdt.state") - states), 0, "and no CRDT.STATE was sent for it");
    sw(st, "want:1", &add, &r);
    ok(r.rc == 1 && w.changes == 2 && w.with_delta == 1, "a wanted key's change has its delta");
    is_int((int)(cmd_calls(srv, "crdt.state") - states), 1, "read with one CRDT.STATE");
    const char *keys[] = {"skip:2", "want:2", "skip:3"};
    bres_t b;
    batch_of(st, keys, 3, CRDT_MUT_ADD, 10, &b);
    ok(b.rc == 0 && w.changes == 5 && w.with_delta == 2,
       "a batch of three: three changes, the wanted one with its delta (%d changes, %d deltas)",
       w.changes, w.with_delta);
    is_int((int)(cmd_calls(srv, "crdt.state") - states), 2, "one more CRDT.STATE, for it alone");
    res_reset(&r);
    crdt_store_close(st);
}

/* A command issued outside the store's callbacks leaves at once, not at the loop's next poll:
 * Redis has the write before crdtd's loop runs again (store_redis.c, send_now). */
static void test_send_now(rh_server_t *srv)
{
    diag("a request's command reaches Redis before the loop runs again");
    crdt_store_t *st = open_server(srv);
    if (!st)
        return;
    res_t r = {0};
    crdt_mut_t add = {
        .type = CRDT_TIMELINE, .kind = CRDT_MUT_ADD, .bytes = "now", .len = 3, .score = 5};
    res_reset(&r);
    crdt_store_write(st, "sent:now", 8, &add, on_write, &r);
    bool seen = false;
    for (int i = 0; i < 200 && !seen; i++) { /* the loop is not run meanwhile: at most 2 s */
        redisReply *e = rh_cmd(srv, "EXISTS sent:now");
        seen = e && e->type == REDIS_REPLY_INTEGER && e->integer == 1;
        if (e)
            freeReplyObject(e);
        if (!seen)
            usleep(10000);
    }
    ok(seen && !r.done, "the write is in Redis while its completion still waits for the loop");
    wait_res(&r);
    ok(r.calls == 1 && r.rc == 1, "then it completes as applied (rc %d)", r.rc);
    res_reset(&r);
    crdt_store_close(st);
}

static void test_wait(rh_server_t *srv)
{
    diag("acknowledgement by WAIT");
    char url[64];
    snprintf(url, sizeof(url), "redis://127.0.0.1:%d", srv->port);
    crdt_store_redis_config_t cfg;
    crdt_store_redis_config_init(&cfg);
    cfg.node_id = 42;
    cfg.wait_replicas = 1;
    cfg.wait_timeout_ms = 150;
    crdt_store_t *st = open_store(url, &cfg);
    res_t r = {0};
    crdt_mut_t add = {
        .type = CRDT_TIMELINE, .kind = CRDT_MUT_ADD, .bytes = "w", .len = 1, .score = 1};
    if (st) {
        uint64_t t0 = gw_evloop_mono_ms();
        sw(st, "waited", &add, &r);
        ok(r.rc == CRDT_EUNAVAIL && crdt_store_last_error(st) &&
               strstr(crdt_store_last_error(st), "WAIT"),
           "no replica: the write fails after WAIT's timeout: %s",
           crdt_store_last_error(st) ? crdt_store_last_error(st) : "");
        cmp_ok(gw_evloop_mono_ms() - t0, ">=", 140, "it waited for the replicas");
        static const char *const wk[] = {"waited:b1", "waited:b2"};
        bres_t b;
        batch_of(st, wk, 2, CRDT_MUT_ADD, 1, &b);
        ok(b.rc == CRDT_EUNAVAIL && b.res.applied == 2,
           "a batch too: applied, not known to be replicated: CRDT_EUNAVAIL (rc %d)", b.rc);
        crdt_store_close(st);
    }
    rh_server_t rep = {0};
    char port[16];
    snprintf(port, sizeof(port), "%d", srv->port);
    const char *extra[] = {"--replicaof", "127.0.0.1", port, NULL};
    if (rh_start(&rep, NULL, "node-id 43", extra) < 0) {
        fail("start a replica");
        return;
    }
    uint64_t end = gw_evloop_mono_ms() + 10000;
    while (gw_evloop_mono_ms() < end) {
        freeReplyObject(rh_cmd(srv, "CRDT.TLADD sync 1 x"));
        if (rh_int(rh_cmd(srv, "WAIT 1 100")) == 1)
            break;
    }
    cfg.wait_timeout_ms = 2000;
    st = open_store(url, &cfg);
    if (st) {
        add.bytes = "w2";
        add.len = 2;
        sw(st, "waited", &add, &r);
        ok(r.rc == 1 && crdt_store_durable_seq(st) == r.seq,
           "with a replica: the write completes once WAIT 1 says it has it (rc %d: %s)", r.rc,
           crdt_store_last_error(st) ? crdt_store_last_error(st) : "healthy");
        redisReply *x = rh_cmd(&rep, "CRDT.TLCARD waited");
        ok(x && x->type == REDIS_REPLY_INTEGER && x->integer >= 1,
           "and the replica holds it already");
        freeReplyObject(x);
        static const char *const wk[] = {"waited:b3", "waited:b4"};
        bres_t b;
        batch_of(st, wk, 2, CRDT_MUT_ADD, 1, &b);
        x = rh_cmd(&rep, "EXISTS waited:b3 waited:b4");
        ok(b.rc == 0 && b.res.applied == 2 && crdt_store_durable_seq(st) == b.res.seq && x &&
               x->integer == 2,
           "a batch completes once WAIT 1 says the replica has it (rc %d)", b.rc);
        freeReplyObject(x);
        crdt_store_close(st);
    }
    rh_stop(&rep);
}

static void test_restart(rh_server_t *srv)
{
    diag("Redis stopped and restarted under the store");
    char url[64];
    snprintf(url, sizeof(url), "redis://127.0.0.1:%d", srv->port);
    crdt_store_t *st = open_store(url, NULL);
    if (!st) {
        fail("open");
        return;
    }
    res_t r = {0};
    crdt_mut_t add = {
        .type = CRDT_TIMELINE, .kind = CRDT_MUT_ADD, .bytes = "a", .len = 1, .score = 1};
    sw(st, "rs", &add, &r);
    is_int(r.rc, 1, "a write before the restart");
    rh_kill(srv);
    add.bytes = "b";
    uint64_t t0 = gw_evloop_mono_ms();
    sw(st, "rs", &add, &r);
    is_int(r.rc, CRDT_EUNAVAIL, "Redis killed: the write fails with EUNAVAIL");
    const char *e = crdt_store_last_error(st);
    char want[32];
    snprintf(want, sizeof(want), ":%d", srv->port);
    ok(e && strstr(e, want), "last_error names the server: %s", e ? e : "(none)");
    int fast = 0;
    for (int i = 0; i < 5; i++) {
        uint64_t t1 = gw_evloop_mono_ms();
        sw(st, "rs", &add, &r);
        fast += r.rc == CRDT_EUNAVAIL && gw_evloop_mono_ms() - t1 < 100;
    }
    is_int(fast, 5, "while it is down, writes fail fast (< 100 ms each)");
    cmp_ok(gw_evloop_mono_ms() - t0, "<", 2000, "within the backoff, not the timeout");
    ok(rh_restart(srv) == 0, "restart redis-server on the same port");
    uint64_t end = gw_evloop_mono_ms() + 8000;
    do {
        ep_run_for(L, 50);
        sw(st, "rs", &add, &r);
    } while (r.rc < 0 && gw_evloop_mono_ms() < end);
    ok(r.rc >= 0, "the store reconnects by itself (backoff) and writes again");
    end = gw_evloop_mono_ms() + 3000;
    while (crdt_store_last_error(st) && gw_evloop_mono_ms() < end)
        ep_run_once(L, 50);
    ok(crdt_store_last_error(st) == NULL, "and is healthy again");
    crdt_store_redis_stats_t rs;
    crdt_store_redis_stats(st, &rs);
    cmp_ok(rs.reconnects, ">=", 1, "reconnects counted (%llu)", (unsigned long long)rs.reconnects);
    crdt_store_close(st);
}

/* ---- fake servers ------------------------------------------------------------------------------
 */

typedef enum {
    FAKE_GARBAGE,  /* answers every command with bytes that are not RESP */
    FAKE_NOMODULE, /* a Redis without crdt.so */
    FAKE_WRONG,    /* discovery fine, then integers for states and strings for counts */
    FAKE_BADSTATE, /* states that libcrdt cannot decode */
    FAKE_SILENT,   /* discovery fine, then never answers */
    FAKE_SLOTS,    /* a cluster whose CLUSTER SLOTS is nonsense */
    FAKE_HUGE,     /* discovery fine, then an array header claiming 2e9 elements */
    FAKE_OLDMOD,   /* a crdt.so without CRDT.TLMADD / TLMREM (before 0.4.0) */
} fake_mode_t;

static const char INFO_OK[] =
    "# Server\r\nredis_version:7.0.0\r\n# Cluster\r\ncluster_enabled:0\r\n"
    "# crdt\r\ncrdt_node_id:5\r\n";
static const char INFO_CL[] = "# Cluster\r\ncluster_enabled:1\r\n# crdt\r\ncrdt_node_id:5\r\n";

static void put_bulk(int fd, const char *s, size_t n)
{
    char hdr[32];
    int hl = snprintf(hdr, sizeof(hdr), "$%zu\r\n", n);
    if (write(fd, hdr, (size_t)hl) < 0 || write(fd, s, n) < 0 || write(fd, "\r\n", 2) < 0)
        _exit(0);
}

static void put(int fd, const char *s)
{
    if (write(fd, s, strlen(s)) < 0)
        _exit(0);
}

static void fake_answer(int fd, fake_mode_t mode, const redisReply *cmd)
{
    const char *verb = cmd->element[0]->str;
    bool info = strcasecmp(verb, "INFO") == 0;
    switch (mode) {
    case FAKE_GARBAGE: put(fd, "?this is not RESP\r\n"); return;
    case FAKE_NOMODULE:
        if (info)
            put_bulk(fd, "# Server\r\nredis_version:7.0.0\r\n", 31);
        else
            put(fd, "-ERR unknown command\r\n");
        return;
    case FAKE_SLOTS:
        if (info)
            put_bulk(fd, INFO_CL, sizeof(INFO_CL) - 1);
        else
            put(fd, "*2\r\n*3\r\n:0\r\n:99999\r\n*1\r\n:1\r\n$3\r\nabc\r\n");
        return;
    case FAKE_WRONG:
        if (info)
            put_bulk(fd, INFO_OK, sizeof(INFO_OK) - 1);
        else if (strcasecmp(verb, "CRDT.STATE") == 0)
            put(fd, ":12\r\n");
        else
            put(fd, "+OK\r\n");
        return;
    case FAKE_BADSTATE:
        if (info)
            put_bulk(fd, INFO_OK, sizeof(INFO_OK) - 1);
        else
            put_bulk(fd, "\x01\x02garbage", 9);
        return;
    case FAKE_SILENT:
        if (info)
            put_bulk(fd, INFO_OK, sizeof(INFO_OK) - 1);
        return;
    case FAKE_HUGE:
        if (info)
            put_bulk(fd, INFO_OK, sizeof(INFO_OK) - 1);
        else
            put(fd, "*2000000000\r\n*2000000\r\n");
        return;
    case FAKE_OLDMOD:
        if (info)
            put_bulk(fd, INFO_OK, sizeof(INFO_OK) - 1);
        else if (!strcasecmp(verb, "CRDT.TLMADD") || !strcasecmp(verb, "CRDT.TLMREM"))
            put(fd, "-ERR unknown command 'CRDT.TLMADD', with args beginning with: \r\n");
        else if (!strcasecmp(verb, "CRDT.TYPE"))
            put(fd, cmd->elements > 1 && !strcmp(cmd->element[1]->str, "old:g") ? "+gcounter\r\n"
                                                                                : "+none\r\n");
        else if (!strcasecmp(verb, "CRDT.TLADD") || !strcasecmp(verb, "CRDT.TLREM"))
            put(fd, ":1\r\n");
        else
            put(fd, "+OK\r\n");
        return;
    }
}

/* A child process serving `mode` on a free loopback port; *pid to kill. */
static int fake_start(fake_mode_t mode, pid_t *pid)
{
    int ls;
    int port = rh_listen_fork(pid, &ls, 30);
    if (*pid != 0)
        return port;
    for (;;) {
        int fd = accept(ls, NULL, NULL);
        if (fd < 0)
            _exit(0);
        redisReader *rd = redisReaderCreate();
        char buf[4096];
        ssize_t n;
        while ((n = read(fd, buf, sizeof(buf))) > 0) {
            redisReaderFeed(rd, buf, (size_t)n);
            void *rep = NULL;
            while (redisReaderGetReply(rd, &rep) == REDIS_OK && rep) {
                redisReply *cmd = rep;
                if (cmd->type == REDIS_REPLY_ARRAY && cmd->elements > 0 &&
                    cmd->element[0]->type == REDIS_REPLY_STRING)
                    fake_answer(fd, mode, cmd);
                freeReplyObject(rep);
                rep = NULL;
            }
        }
        redisReaderFree(rd);
        close(fd);
    }
}

static void fake_stop(pid_t pid)
{
    if (pid > 0) {
        kill(pid, SIGKILL);
        waitpid(pid, NULL, 0);
    }
}

static void test_fakes(void)
{
    diag("fake servers: garbage, no module, wrong reply types, undecodable states, silence");
    struct {
        fake_mode_t mode;
        const char *name, *want_err;
        int want_ready, want_rc;
    } cases[] = {
        {FAKE_GARBAGE, "garbage", "Protocol error", -1, CRDT_EUNAVAIL},
        {FAKE_NOMODULE, "no crdt.so", "crdt.so is not loaded", -1, CRDT_EUNAVAIL},
        {FAKE_SLOTS, "bad CLUSTER SLOTS", "CLUSTER SLOTS", -1, CRDT_EUNAVAIL},
        {FAKE_WRONG, "wrong reply types", "unexpected reply", 1, CRDT_EIO},
        {FAKE_BADSTATE, "undecodable state", "cannot decode", 1, CRDT_EDECODE},
        {FAKE_SILENT, "silence", "no reply within", 1, CRDT_EUNAVAIL},
        {FAKE_HUGE, "a 2e9-element array", "connection lost", 1, CRDT_EUNAVAIL},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        pid_t pid = 0;
        int port = fake_start(cases[i].mode, &pid);
        if (port < 0) {
            fail("fake server %s", cases[i].name);
            continue;
        }
        char url[64];
        snprintf(url, sizeof(url), "redis://127.0.0.1:%d", port);
        crdt_store_redis_config_t cfg;
        crdt_store_redis_config_init(&cfg);
        cfg.node_id = 42;
        cfg.timeout_ms = 300;
        char err[256];
        crdt_store_t *st = crdt_store_redis_open(url, &cfg, ep_loop(L), err, sizeof(err));
        if (!st) {
            fail("open %s: %s", cases[i].name, err);
            fake_stop(pid);
            continue;
        }
        uint64_t end = gw_evloop_mono_ms() + 3000;
        while (crdt_store_redis_ready(st) == 0 && gw_evloop_mono_ms() < end)
            ep_run_once(L, 20);
        is_int(crdt_store_redis_ready(st), cases[i].want_ready, "%s: discovery %s", cases[i].name,
               cases[i].want_ready == 1 ? "succeeds" : "fails");
        res_t r = {0};
        sget(st, "k", &r);
        ok(r.done && r.rc == cases[i].want_rc, "%s: a get completes with %s (got %s)",
           cases[i].name, crdt_strerror(cases[i].want_rc), crdt_strerror(r.rc));
        crdt_mut_t add = {
            .type = CRDT_TIMELINE, .kind = CRDT_MUT_ADD, .bytes = "a", .len = 1, .score = 1};
        if (cases[i].mode == FAKE_WRONG) {
            sw(st, "k", &add, &r);
            is_int(r.rc, CRDT_EIO, "%s: a write answered +OK: EIO", cases[i].name);
        }
        const char *e = crdt_store_last_error(st);
        ok(e && strstr(e, cases[i].want_err), "%s: last_error says so: %s", cases[i].name,
           e ? e : "(none)");
        res_reset(&r);
        crdt_store_close(st);
        fake_stop(pid);
    }
    /* nothing listening at all */
    crdt_store_redis_config_t cfg;
    crdt_store_redis_config_init(&cfg);
    cfg.node_id = 42;
    char err[256];
    ok(crdt_store_redis_open("http://x:1", &cfg, ep_loop(L), err, sizeof(err)) == NULL &&
           strstr(err, "redis://"),
       "a URL of another scheme is refused: %s", err);
    ok(crdt_store_redis_open("redis://127.0.0.1:0", &cfg, ep_loop(L), err, sizeof(err)) == NULL,
       "port 0 refused: %s", err);
    ok(crdt_store_redis_open("redis://a:1,", &cfg, ep_loop(L), err, sizeof(err)) == NULL,
       "a trailing comma refused: %s", err);
    cfg.node_id = 0;
    ok(crdt_store_redis_open("redis://127.0.0.1:1", &cfg, ep_loop(L), err, sizeof(err)) == NULL,
       "node id 0 refused: %s", err);
}

/* ---- a real cluster -----------------------------------------------------------------------------
 */

static rc_cluster_t CL;

static int primary_of_slot(unsigned slot)
{
    for (int i = 0; i < CL.n; i++)
        if (CL.node[i].pid > 0) {
            int o = rc_slot_owner(&CL, i, slot);
            if (o >= 0)
                return o;
        }
    return -1;
}

/* Moves slot from node `from` to node `to` with CLUSTER SETSLOT and MIGRATE. With `half`, stops
 * after the keys moved but before the slot is assigned (the window where ASK is answered). */
static int move_slot(unsigned slot, int from, int to, bool half)
{
    char fid[41], tid[41];
    if (rc_node_id(&CL, from, fid) < 0 || rc_node_id(&CL, to, tid) < 0)
        return -1;
    redisReply *r;
    r = rh_cmd(&CL.node[to], "CLUSTER SETSLOT %u IMPORTING %s", slot, fid);
    freeReplyObject(r);
    r = rh_cmd(&CL.node[from], "CLUSTER SETSLOT %u MIGRATING %s", slot, tid);
    freeReplyObject(r);
    for (int round = 0; round < 100; round++) {
        r = rh_cmd(&CL.node[from], "CLUSTER GETKEYSINSLOT %u 100", slot);
        if (!r || r->type != REDIS_REPLY_ARRAY) {
            freeReplyObject(r);
            return -1;
        }
        size_t n = r->elements;
        for (size_t i = 0; i < n; i++) {
            redisReply *m = rh_cmd(&CL.node[from], "MIGRATE 127.0.0.1 %d %b 0 5000",
                                   CL.node[to].port, r->element[i]->str, r->element[i]->len);
            freeReplyObject(m);
        }
        freeReplyObject(r);
        if (n == 0)
            break;
    }
    if (half)
        return 0;
    for (int i = 0; i < CL.n; i++)
        if (CL.node[i].pid > 0) {
            r = rh_cmd(&CL.node[i], "CLUSTER SETSLOT %u NODE %s", slot, tid);
            freeReplyObject(r);
        }
    return 0;
}

static void finish_move(unsigned slot, int to)
{
    char tid[41];
    if (rc_node_id(&CL, to, tid) < 0)
        return;
    for (int i = 0; i < CL.n; i++)
        if (CL.node[i].pid > 0)
            freeReplyObject(rh_cmd(&CL.node[i], "CLUSTER SETSLOT %u NODE %s", slot, tid));
}

static void batch_cluster(crdt_store_t *st);
static bool tl_range_same(crdt_store_t *st, const char *const *keys, size_t n,
                          const crdt_store_tl_query_t *q, const char *what);

static void test_cluster(void)
{
    const char *why = rc_skip_reason();
    if (why) {
        ok(1, "# SKIP cluster: %s", why);
        return;
    }
    diag("a real cluster: 3 primaries, 3 replicas");
    if (rc_start(&CL, 3, 1, "") < 0) {
        fail("start the cluster");
        return;
    }
    char url[128];
    snprintf(url, sizeof(url), "redis://127.0.0.1:%d,127.0.0.1:%d", CL.node[0].port,
             CL.node[1].port);
    crdt_store_redis_config_t cfg;
    crdt_store_redis_config_init(&cfg);
    cfg.node_id = 42;
    cfg.wait_replicas = 1; /* acknowledged writes survive the failover below */
    crdt_store_t *st = open_store(url, &cfg);
    ok(st && crdt_store_redis_ready(st) == 1, "open over the cluster's seeds (WAIT 1)");
    if (!st || crdt_store_redis_ready(st) != 1) {
        crdt_store_close(st);
        rc_stop(&CL);
        return;
    }
    is_int(crdt_store_redis_is_cluster(st), 1, "cluster detected");
    fan_t fan = {0};
    crdt_store_t *fol = open_follower(url, 77, &fan);
    ok(fol != NULL, "a second gateway follows the cluster's change logs");
    enum { NK = 60 };
    static res_t w[NK];
    for (int i = 0; i < NK; i++) {
        char k[16];
        snprintf(k, sizeof(k), "ck:%d", i);
        crdt_mut_t a = {
            .type = CRDT_TIMELINE, .kind = CRDT_MUT_ADD, .bytes = k, .len = strlen(k), .score = i};
        memset(&w[i], 0, sizeof(w[i]));
        crdt_store_write(st, k, strlen(k), &a, on_write, &w[i]);
    }
    bool all = true;
    for (int i = 0; i < NK; i++) {
        wait_res(&w[i]);
        all = all && w[i].rc == 1;
    }
    ok(all, "%d writes pipelined over the cluster all applied", NK);
    is_int((int)crdt_store_durable_seq(st), NK, "durable_seq covers them");
    int with_keys = 0;
    for (int i = 0; i < CL.n; i++) {
        redisReply *role = rh_cmd(&CL.node[i], "ROLE");
        bool primary = role && role->type == REDIS_REPLY_ARRAY && role->elements > 0 &&
                       strcmp(role->element[0]->str, "master") == 0;
        freeReplyObject(role);
        if (primary && rh_info_field(&CL.node[i], "crdt", "crdt_keys") > 0)
            with_keys++;
    }
    is_int(with_keys, 3, "the keys landed on all three primaries");
    {
        static char names[NK][16];
        const char *ks[NK];
        for (int i = 0; i < NK; i++) {
            snprintf(names[i], sizeof(names[i]), "ck:%d", i);
            ks[i] = names[i];
        }
        crdt_store_tl_query_t q = {.offset = 0, .count = 5};
        tl_range_same(st, ks, NK, &q, "over the cluster, keys of every primary, offset");
        crdt_store_tl_query_t b = {.by_score = true,
                                   .max = 50,
                                   .min = 10,
                                   .has_after = true,
                                   .after = {"", 0, 30},
                                   .limit = 2};
        tl_range_same(st, ks, NK, &b, "over the cluster, by score AFTER");
    }
    {
        lc_model_t m = {0};
        for (int i = 0; i < NK; i++) {
            char k[16];
            int kl = snprintf(k, sizeof(k), "ck:%d", i);
            lc_add_live(&m, k, (size_t)kl);
        }
        lc_sort(&m);
        size_t pages = 0;
        ok(lc_walk_ok(st, wait_loop, NULL, &m, "ck:", 3, 7, &pages) && pages >= 9,
           "list_keys over the cluster: every primary's keys, in order, by pages of 7");
        free(m.live);
    }
    {
        long long total = 0;
        for (int i = 0; i < CL.n; i++) {
            redisReply *role = rh_cmd(&CL.node[i], "ROLE");
            if (role && role->type == REDIS_REPLY_ARRAY && role->elements > 0 &&
                strcmp(role->element[0]->str, "master") == 0)
                total += rh_info_field(&CL.node[i], "crdt", "crdt_keys");
            freeReplyObject(role);
        }
        size_t seen = 0;
        uint64_t cur = 0;
        int rounds = 0;
        res_t sr = {0};
        do {
            res_reset(&sr);
            crdt_store_scan(st, cur, 16, scan_each, on_done, &sr);
            wait_res(&sr);
            seen += sr.n;
            cur = sr.seq;
        } while (sr.rc == 0 && cur != 0 && ++rounds < 200);
        ok(sr.rc == 0 && (long long)seen == total,
           "scan walks every primary: %zu keys of %lld, in %d pages", seen, total, rounds + 1);
    }
    if (fol) {
        wait_events(&fan, NK, 5000);
        bool each = fan.bad == 0;
        for (int i = 0; i < NK; i++)
            each = each && fan.per_key[i] == 1;
        ok(each && fan.events == NK,
           "the other gateway got every write, from the logs of all three primaries (%d)",
           fan.events);
    }
    crdt_store_redis_stats_t rs;
    crdt_store_redis_stats(st, &rs);
    is_int((int)rs.redirects_moved, 0, "routed by the slot map: no MOVED");
    batch_cluster(st);

    /* MOVED after a slot migration */
    const char *mk = "ck:7";
    unsigned slot = crdtm_keyslot(mk, strlen(mk));
    int from = primary_of_slot(slot), to = -1;
    for (int i = 0; i < CL.n && to < 0; i++) {
        int o = primary_of_slot((slot + 6000 * (unsigned)(i + 1)) % 16384);
        if (o >= 0 && o != from)
            to = o;
    }
    ok(from >= 0 && to >= 0 && move_slot(slot, from, to, false) == 0,
       "slot %u of %s moved from node %d to node %d", slot, mk, from, to);
    res_t r = {0};
    sget(st, mk, &r);
    crdt_store_redis_stats(st, &rs);
    ok(r.rc == 0 && r.card == 1 && rs.redirects_moved >= 1,
       "a read of the moved key follows MOVED (%llu) and finds it",
       (unsigned long long)rs.redirects_moved);
    ep_run_for(L, 200);
    crdt_store_redis_stats(st, &rs);
    uint64_t moved = rs.redirects_moved;
    sget(st, mk, &r);
    crdt_store_redis_stats(st, &rs);
    ok(r.rc == 0 && rs.redirects_moved == moved && rs.slot_refreshes >= 2,
       "the map was refreshed: the next read goes straight to the new owner");

    /* ASK while a slot is half moved */
    const char *ak = "ck:11";
    unsigned aslot = crdtm_keyslot(ak, strlen(ak));
    int afrom = primary_of_slot(aslot), ato = afrom == from ? to : from;
    if (ato == afrom)
        ato = (afrom + 1) % 3;
    ok(move_slot(aslot, afrom, ato, true) == 0, "slot %u half moved (keys migrated)", aslot);
    sget(st, ak, &r);
    crdt_store_redis_stats(st, &rs);
    ok(r.rc == 0 && r.card == 1 && rs.redirects_ask >= 1,
       "a read during the move follows ASK with ASKING (%llu)",
       (unsigned long long)rs.redirects_ask);
    finish_move(aslot, ato);
    ok(rc_wait_ok(&CL, 20) == 0, "cluster ok after the moves");

    /* a primary killed: its slots fail fast, then the replica takes over */
    const char *kk = "ck:3";
    unsigned kslot = crdtm_keyslot(kk, strlen(kk));
    int victim = primary_of_slot(kslot);
    ok(victim >= 0, "primary of %s is node %d (port %d)", kk, victim,
       victim >= 0 ? CL.node[victim].port : 0);
    if (victim >= 0) {
        int ck3_before = fan.per_key[3]; /* the follower's events of ck:3 before the kill */
        rh_kill(&CL.node[victim]);
        crdt_mut_t a = {
            .type = CRDT_TIMELINE, .kind = CRDT_MUT_ADD, .bytes = "x", .len = 1, .score = 99};
        sw(st, kk, &a, &r);
        is_int(r.rc, CRDT_EUNAVAIL, "a write to the killed primary's slot: EUNAVAIL");
        int fast = 0;
        for (int i = 0; i < 5; i++) {
            uint64_t t1 = gw_evloop_mono_ms();
            sw(st, kk, &a, &r);
            fast += r.rc == CRDT_EUNAVAIL && gw_evloop_mono_ms() - t1 < 100;
        }
        cmp_ok(fast, ">=", 4, "and fails fast while it is down (%d of 5 under 100 ms)", fast);
        const char *e = crdt_store_last_error(st);
        char want[32];
        snprintf(want, sizeof(want), ":%d", CL.node[victim].port);
        ok(e && strstr(e, want), "last_error names the node: %s", e ? e : "(none)");
        /* a key of another primary is served meanwhile */
        int other = -1;
        char ok_key[16] = "";
        for (int i = 0; i < NK && other < 0; i++) {
            snprintf(ok_key, sizeof(ok_key), "ck:%d", i);
            int o = primary_of_slot(crdtm_keyslot(ok_key, strlen(ok_key)));
            if (o >= 0 && o != victim)
                other = o;
        }
        sget(st, ok_key, &r);
        is_int(r.rc, 0, "a key on a live primary is still served");
        uint64_t end = gw_evloop_mono_ms() + 30000;
        do {
            ep_run_for(L, 100);
            sget(st, kk, &r);
        } while (r.rc < 0 && gw_evloop_mono_ms() < end);
        ok(r.rc == 0 && r.obj && crdt_timeline_score(r.obj, "ck:3", 4, &(double){0}) == 1,
           "after the failover the promoted replica serves the slot, with the entry "
           "acknowledged by WAIT 1 before the kill");
        /* the promoted replica has no replica of its own until the killed node rejoins: WAIT 1
         * cannot be met, and the store says so */
        a.bytes = "y";
        sw(st, kk, &a, &r);
        const char *e2 = crdt_store_last_error(st);
        ok(r.rc == CRDT_EUNAVAIL && e2 && strstr(e2, "WAIT"),
           "with no replica left, a write fails its WAIT: %s", e2 ? e2 : "(none)");
        ok(rh_restart(&CL.node[victim]) == 0,
           "the killed node restarts (and rejoins as a replica)");
        /* each try a new member: a try whose WAIT failed was still applied */
        char zm[16] = "";
        end = gw_evloop_mono_ms() + 30000;
        int tries = 0;
        do {
            ep_run_for(L, 100);
            snprintf(zm, sizeof(zm), "z%d", tries++);
            a.bytes = zm;
            a.len = strlen(zm);
            sw(st, kk, &a, &r);
        } while (r.rc < 0 && gw_evloop_mono_ms() < end);
        is_int(r.rc, 1, "once it replicates, a write with WAIT 1 is acknowledged again");
        if (fol) {
            /* the follower went on from the log's position on the promoted replica */
            int seen_before = ck3_before;
            uint64_t fend = gw_evloop_mono_ms() + 3000;
            while (fan.per_key[3] == seen_before && gw_evloop_mono_ms() < fend)
                ep_run_once(L, 20);
            crdt_store_redis_stats_t fs;
            crdt_store_redis_stats(fol, &fs);
            ok(fan.per_key[3] > seen_before && fs.log_truncated == 0,
               "the follower gateway got the write made after the failover, without a gap "
               "(%d events of ck:3)",
               fan.per_key[3]);
        }
        sget(st, kk, &r);
        ok(r.rc == 0 && r.obj && crdt_timeline_score(r.obj, zm, strlen(zm), &(double){0}) == 1 &&
               crdt_timeline_score(r.obj, "ck:3", 4, &(double){0}) == 1,
           "the key holds the acknowledged entries (%zu entries)", r.card);
    }
    res_reset(&r);
    crdt_store_close(fol);
    crdt_store_close(st);
    rc_stop(&CL);
}

/* A crdt.so from before CRDT.TLMADD: a batch's writes go one by one after a CRDT.TYPE each (the
 * all-or-nothing check as before), the store stays healthy. */
static void test_old_module(void)
{
    diag("tl_write_batch over a crdt.so without CRDT.TLMADD (a fake server)");
    pid_t pid = 0;
    int port = fake_start(FAKE_OLDMOD, &pid);
    if (port < 0) {
        fail("fake server");
        return;
    }
    char url[64];
    snprintf(url, sizeof(url), "redis://127.0.0.1:%d", port);
    crdt_store_t *st = open_store(url, NULL);
    if (st && crdt_store_redis_ready(st) == 1) {
        static const char *const k3[] = {"old:a", "old:b", "old:c"};
        for (int round = 0; round < 2; round++) {
            bres_t b;
            batch_of(st, k3, 3, round ? CRDT_MUT_REMOVE : CRDT_MUT_ADD, 1, &b);
            ok(b.rc == 0 && b.res.applied == 3 && b.res.seq == crdt_store_last_seq(st) &&
                   crdt_store_durable_seq(st) == b.res.seq && !crdt_store_last_error(st),
               "%s batch: written one by one, healthy (rc %d, %zu applied)",
               round ? "then every" : "the first", b.rc, b.res.applied);
        }
        static const char *const kg[] = {"old:a", "old:g", "old:c"};
        bres_t b;
        batch_of(st, kg, 3, CRDT_MUT_ADD, 1, &b);
        ok(b.rc == CRDT_ETYPE && b.res.bad == 1 && b.res.bad_type == CRDT_GCOUNTER &&
               b.res.applied == 0,
           "a G-counter's key second: CRDT_ETYPE naming it (rc %d, bad %zu)", b.rc, b.res.bad);
    } else {
        fail("open the fake server");
    }
    crdt_store_close(st);
    kill(pid, SIGKILL);
    waitpid(pid, NULL, 0);
}

/* ---- tl_range: the entries of timelines, read by the module ------------------------------------
 */

/* Entries as text, exactly: each member's bytes in hex and the score's bits (%a). */
static void tl_text(char **out, size_t *len, const crdt_tl_entry_t *es, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        char *p = realloc(*out, *len + es[i].member_len * 2 + 48);
        if (!p)
            return;
        *out = p;
        for (size_t k = 0; k < es[i].member_len; k++)
            *len += (size_t)sprintf(p + *len, "%02x", ((const uint8_t *)es[i].member)[k]);
        *len += (size_t)sprintf(p + *len, "=%a,", es[i].score);
    }
    char *p = realloc(*out, *len + 2);
    if (p) {
        *out = p;
        p[(*len)++] = ';';
        p[*len] = '\0';
    }
}

typedef struct tlres {
    bool done;
    int calls, rc;
    size_t n;
    char *text; /* every key's entries (tl_text) */
    size_t len;
} tlres_t;

static void on_tl_range(void *ud, int rc, const crdt_tl_entry_t *const *ents, const size_t *counts,
                        size_t n)
{
    tlres_t *t = ud;
    t->calls++;
    t->rc = rc;
    t->n = n;
    for (size_t i = 0; rc == 0 && i < n; i++)
        tl_text(&t->text, &t->len, ents[i], counts[i]);
    t->done = true;
}

/* tl_range of keys[0..n) with q: true when it completed once with rc 0 and, per key, exactly the
 * entries libcrdt's range reads take of the key's state (CRDT.STATE through the store: absent,
 * another type, a native value: none). */
static bool tl_range_same(crdt_store_t *st, const char *const *keys, size_t n,
                          const crdt_store_tl_query_t *q, const char *what)
{
    crdt_bytes_t kb[64];
    char *want = NULL;
    size_t wlen = 0;
    for (size_t i = 0; i < n && i < 64; i++) {
        kb[i] = (crdt_bytes_t){keys[i], strlen(keys[i])};
        res_t r = {0};
        sget(st, keys[i], &r);
        crdt_tl_entry_t es[64];
        size_t m = 0;
        if (r.rc == 0 && r.obj && crdt_obj_type(r.obj) == CRDT_TIMELINE)
            m = q->by_score
                    ? crdt_timeline_range_by_score(r.obj, q->max, q->min,
                                                   q->has_after ? &q->after : NULL,
                                                   q->limit < 64 ? q->limit : 64, es)
                    : crdt_timeline_range(r.obj, q->offset, q->count < 64 ? q->count : 64, es);
        tl_text(&want, &wlen, es, m);
        res_reset(&r);
    }
    tlres_t t = {0};
    crdt_store_tl_range(st, kb, n, q, on_tl_range, &t);
    ep_run_until(L, &t.done, 5000);
    bool same =
        t.calls == 1 && t.rc == 0 && t.n == n && !strcmp(t.text ? t.text : "", want ? want : "");
    ok(same, "tl_range %s: the entries of every key as the state's range read gives them", what);
    if (!same)
        diag("calls %d rc %d n %zu\n#   got  %s\n#   want %s", t.calls, t.rc, t.n,
             t.text ? t.text : "", want ? want : "");
    free(t.text);
    free(want);
    return same;
}

/* The timelines of the tl_range tests (equal scores, fractions, a member with NUL and 0xff) and
 * keys that hold no timeline. */
static void tl_range_data(crdt_store_t *st)
{
    static const struct {
        const char *key;
        double score;
        const char *m;
        size_t mlen;
    } ents[] = {
        {"tr:a", 1, "one", 3},        {"tr:a", 2, "b", 1},         {"tr:a", 2, "a", 1},
        {"tr:a", 2, "c", 1},          {"tr:a", 0.1 + 0.2, "f", 1}, {"tr:a", -1e300, "low", 3},
        {"tr:a", 1e17 + 8, "big", 3}, {"tr:a", 2, "\0\xff", 2},    {"tr:b", 2, "b2", 2},
        {"tr:b", 5.5, "b5", 2},
    };
    res_t r = {0};
    for (size_t i = 0; i < sizeof(ents) / sizeof(ents[0]); i++) {
        crdt_mut_t a = {.type = CRDT_TIMELINE,
                        .kind = CRDT_MUT_ADD,
                        .bytes = ents[i].m,
                        .len = ents[i].mlen,
                        .score = ents[i].score};
        sw(st, ents[i].key, &a, &r);
    }
    crdt_mut_t d = {
        .type = CRDT_TIMELINE, .kind = CRDT_MUT_REMOVE, .bytes = "one", .len = 3, .score = 1};
    sw(st, "tr:a", &d, &r); /* removed: never listed */
    crdt_mut_t g = {.type = CRDT_GCOUNTER, .kind = CRDT_MUT_INCR, .n = 3};
    sw(st, "tr:g", &g, &r);
    res_reset(&r);
}

static const char *const TR_KEYS[] = {"tr:a", "tr:none", "tr:g", "tr:s", "tr:b"};

/* The queries every tl_range test runs over TR_KEYS. */
static bool tl_range_queries(crdt_store_t *st, const char *how)
{
    char what[96];
    bool all = true;
    static const size_t offs[][2] = {{0, 3}, {2, 3}, {1, 100}, {100, 5}, {0, 1}};
    for (size_t i = 0; i < sizeof(offs) / sizeof(offs[0]); i++) {
        crdt_store_tl_query_t q = {.offset = offs[i][0], .count = offs[i][1]};
        snprintf(what, sizeof(what), "%s offset %zu count %zu", how, offs[i][0], offs[i][1]);
        all &= tl_range_same(st, TR_KEYS, 5, &q, what);
    }
    static const struct {
        double max, min, ascore;
        const char *am;
        bool after;
        size_t limit;
    } sc[] = {
        {INFINITY, -INFINITY, 0, "", false, 100},   /* everything */
        {2, 0, 0, "", false, 3},                    /* equal scores, cut by the limit */
        {2, 0, 2, "b", true, 10},                   /* AFTER an entry among equal scores */
        {2, 0, 2, "bb", true, 10},                  /* AFTER a position no entry holds */
        {1e308, -1e308, 2, "\0\xff", true, 2},      /* AFTER the binary member */
        {3, 0.30000000000000004, 0, "", false, 10}, /* min exactly 0.1 + 0.2 */
        {0, 5, 0, "", false, 10},                   /* max < min: nothing */
    };
    for (size_t i = 0; i < sizeof(sc) / sizeof(sc[0]); i++) {
        crdt_store_tl_query_t q = {
            .by_score = true,
            .max = sc[i].max,
            .min = sc[i].min,
            .has_after = sc[i].after,
            .after = {sc[i].am, sc[i].am[0] ? strlen(sc[i].am) : 2 * (i == 4), sc[i].ascore},
            .limit = sc[i].limit};
        snprintf(what, sizeof(what), "%s by score #%zu (max %g min %g%s limit %zu)", how, i,
                 sc[i].max, sc[i].min, sc[i].after ? " AFTER" : "", sc[i].limit);
        all &= tl_range_same(st, TR_KEYS, 5, &q, what);
    }
    return all;
}

/* ERR replies the server has given (errorstats). */
static long long err_replies(rh_server_t *srv)
{
    redisReply *r = rh_cmd(srv, "INFO errorstats");
    const char *p =
        r && r->type == REDIS_REPLY_STRING ? strstr(r->str, "errorstat_ERR:count=") : NULL;
    long long v = p ? strtoll(p + 20, NULL, 10) : 0;
    if (r)
        freeReplyObject(r);
    return v;
}

static void test_tl_range(rh_server_t *srv)
{
    diag("tl_range on one server: CRDT.TLRANGE / TLRANGEBYSCORE WITHSCORES");
    crdt_store_t *st = open_server(srv);
    if (!st)
        return;
    ok(st->ops->tl_range != NULL, "the Redis store has tl_range");
    tl_range_data(st);
    redisReply *set = rh_cmd(srv, "SET tr:s plain");
    freeReplyObject(set);
    long long states = cmd_calls(srv, "crdt.state"), ranges = cmd_calls(srv, "crdt.tlrange"),
              byscore = cmd_calls(srv, "crdt.tlrangebyscore");
    tlres_t t = {0};
    crdt_bytes_t kb[5];
    for (size_t i = 0; i < 5; i++)
        kb[i] = (crdt_bytes_t){TR_KEYS[i], strlen(TR_KEYS[i])};
    crdt_store_tl_query_t q = {.offset = 0, .count = 2};
    crdt_store_tl_range(st, kb, 5, &q, on_tl_range, &t);
    ep_run_until(L, &t.done, 5000);
    ok(t.calls == 1 && t.rc == 0 && t.n == 5 && t.text &&
           !strcmp(t.text, "626967=0x1.6345785d8ap+56,63=0x1p+1,;;;;6235=0x1.6p+2,6232=0x1p+1,;"),
       "offset 0 count 2: the newest two of each timeline, nothing of the others (%s)",
       t.text ? t.text : "");
    free(t.text);
    is_int((int)(cmd_calls(srv, "crdt.tlrange") - ranges), 5, "one CRDT.TLRANGE per key");
    is_int((int)(cmd_calls(srv, "crdt.state") - states), 0, "and no CRDT.STATE");
    ok(!crdt_store_last_error(st), "a native value and a G-counter leave the store healthy");
    ok(tl_range_queries(st, "direct"), "every query gives the state's entries");
    ok(cmd_calls(srv, "crdt.tlrangebyscore") > byscore, "by score: CRDT.TLRANGEBYSCORE");

    memset(&t, 0, sizeof(t));
    crdt_store_tl_query_t nan = {.by_score = true, .max = NAN, .min = 0, .limit = 3};
    crdt_store_tl_range(st, kb, 5, &nan, on_tl_range, &t);
    ok(t.done && t.calls == 1 && t.rc == CRDT_EINVAL, "a NaN bound: CRDT_EINVAL at once (rc %d)",
       t.rc);
    free(t.text);
    memset(&t, 0, sizeof(t));
    crdt_store_tl_range(st, kb, 0, &q, on_tl_range, &t);
    ok(t.done && t.calls == 1 && t.rc == 0 && t.n == 0, "no keys: done at once");
    crdt_store_close(st);

    diag("tl_range over a Redis that does not know the commands (renamed by a proxy)");
    pid_t pid = 0;
    static const char *const renamed[] = {"CRDT.TLRANGE", "CRDT.TLRANGEBYSCORE", NULL};
    int port = rh_rename_proxy(srv->port, renamed, &pid);
    if (!ok(port > 0, "the renaming proxy")) {
        fake_stop(pid);
        return;
    }
    char url[64];
    snprintf(url, sizeof(url), "redis://127.0.0.1:%d", port);
    st = open_store(url, NULL);
    if (ok(st && crdt_store_redis_ready(st) == 1, "open through the proxy")) {
        long long errs = err_replies(srv);
        ok(tl_range_queries(st, "fallback"), "every query still gives the state's entries");
        long long first = err_replies(srv) - errs;
        ok(first >= 1 && first <= 5, "the first call met the unknown command (%lld errors)", first);
        errs = err_replies(srv);
        states = cmd_calls(srv, "crdt.state");
        memset(&t, 0, sizeof(t));
        crdt_store_tl_range(st, kb, 5, &q, on_tl_range, &t);
        ep_run_until(L, &t.done, 5000);
        ok(t.calls == 1 && t.rc == 0 && t.text &&
               !strcmp(t.text,
                       "626967=0x1.6345785d8ap+56,63=0x1p+1,;;;;6235=0x1.6p+2,6232=0x1p+1,;"),
           "then offset 0 count 2 as before (%s)", t.text ? t.text : "");
        free(t.text);
        is_int((int)(err_replies(srv) - errs), 0, "remembered: not asked again");
        is_int((int)(cmd_calls(srv, "crdt.state") - states), 5, "one CRDT.STATE per key");
        ok(!crdt_store_last_error(st), "the store stays healthy");
    }
    crdt_store_close(st);
    fake_stop(pid);
}

/* ---- tl_write_batch on one server ---------------------------------------------------------- */

static void test_batch(rh_server_t *srv)
{
    diag("tl_write_batch on one server: CRDT.TLMADD / TLMREM");
    crdt_store_t *st = open_server(srv);
    if (!st)
        return;
    ok(st->ops->tl_write_batch != NULL, "the Redis store offers tl_write_batch");
    events_t ev = {.in_order = true};
    crdt_store_events_t evs = {ev_change, ev_durable, &ev, NULL};
    crdt_store_set_events(st, &evs);
    ev.last_seq = crdt_store_last_seq(st);
    freeReplyObject(rh_cmd(srv, "CONFIG RESETSTAT"));

    static const char *const k4[] = {"bt:a", "bt:b", "bt:a", "bt:c"};
    bres_t b;
    batch_of(st, k4, 4, CRDT_MUT_ADD, 1, &b);
    ok(b.calls == 1 && b.rc == 0 && b.res.applied == 4, "4 adds over 3 keys: rc %d, %zu applied",
       b.rc, b.res.applied);
    ok(b.res.seq == crdt_store_last_seq(st) && crdt_store_durable_seq(st) == b.res.seq,
       "the batch's seq is the last, durable once it completed (%llu)",
       (unsigned long long)b.res.seq);
    is_int(cmd_calls(srv, "crdt.tlmadd"), 1, "one CRDT.TLMADD");
    is_int(cmd_calls(srv, "crdt.type") + cmd_calls(srv, "crdt.tladd"), 0,
           "no CRDT.TYPE, no CRDT.TLADD");
    ok(ev.changes == 4 && ev.in_order, "a change event per change, in seq order, with a state (%d)",
       ev.changes);
    ok(card_of(st, "bt:a") == 2 && card_of(st, "bt:b") == 1 && card_of(st, "bt:c") == 1,
       "the keys hold their entries");
    batch_of(st, k4, 4, CRDT_MUT_ADD, 1, &b);
    ok(b.rc == 0 && b.res.applied == 0 && b.res.seq == 0, "the same again: no change, no seq");

    /* a key of another type anywhere: nothing written, the write named */
    freeReplyObject(rh_cmd(srv, "CRDT.GINCRBY bt:g 1"));
    freeReplyObject(rh_cmd(srv, "SET bt:s x"));
    static const char *const kg[] = {"bt:new1", "bt:a", "bt:g", "bt:new2"};
    batch_of(st, kg, 4, CRDT_MUT_ADD, 10, &b);
    ok(b.rc == CRDT_ETYPE && b.res.bad == 2 && b.res.bad_type == CRDT_GCOUNTER &&
           b.res.applied == 0,
       "a G-counter third: CRDT_ETYPE naming write 2 as a gcounter (rc %d, bad %zu, type %d)", b.rc,
       b.res.bad, (int)b.res.bad_type);
    ok(rh_int(rh_cmd(srv, "EXISTS bt:new1 bt:new2")) == 0 && card_of(st, "bt:a") == 2,
       "nothing of it written");
    static const char *const ks[] = {"bt:a", "bt:s"};
    batch_of(st, ks, 2, CRDT_MUT_REMOVE, 10, &b);
    ok(b.rc == CRDT_ETYPE && b.res.bad == 1 && b.res.bad_type == 0,
       "a native string: CRDT_ETYPE naming write 1, not a CRDT (rc %d, bad %zu)", b.rc, b.res.bad);
    is_int((long long)card_of(st, "bt:a"), 2, "nothing removed");

    /* removes */
    /* removes: bt:a held m0 and m2 (its writes 0 and 2), bt:b m1 */
    static const char *const kr[] = {"bt:a", "bt:b"};
    batch_of(st, kr, 2, CRDT_MUT_REMOVE, 100, &b);
    ok(b.rc == 0 && b.res.applied == 2 && card_of(st, "bt:b") == 0 && card_of(st, "bt:a") == 1 &&
           cmd_calls(srv, "crdt.tlmrem") == 2,
       "a batch of removes goes as CRDT.TLMREM (rc %d, %zu applied)", b.rc, b.res.applied);

    /* bad input never reaches Redis */
    long long sent = cmd_calls(srv, "crdt.tlmadd") + cmd_calls(srv, "crdt.tlmrem");
    crdt_store_kmut_t w[2] = {
        {(const uint8_t *)"bt:x",
         4,
         {.type = CRDT_TIMELINE, .kind = CRDT_MUT_ADD, .bytes = "m", .len = 1, .score = 1}},
        {(const uint8_t *)"bt:y",
         4,
         {.type = CRDT_TIMELINE, .kind = CRDT_MUT_REMOVE, .bytes = "m", .len = 1, .score = 1}}};
    memset(&b, 0, sizeof(b));
    crdt_store_tl_write_batch(st, w, 2, on_batch, &b);
    ok(b.done && b.rc == CRDT_EINVAL, "adds and removes mixed: CRDT_EINVAL at once");
    w[1].m.kind = CRDT_MUT_ADD;
    w[1].m.score = NAN;
    memset(&b, 0, sizeof(b));
    crdt_store_tl_write_batch(st, w, 2, on_batch, &b);
    ok(b.done && b.rc == CRDT_EINVAL, "a NaN score: CRDT_EINVAL at once");
    w[1].m.score = 1;
    w[1].m.type = CRDT_ORSET;
    memset(&b, 0, sizeof(b));
    crdt_store_tl_write_batch(st, w, 2, on_batch, &b);
    ok(b.done && b.rc == CRDT_EINVAL, "another type than timeline: CRDT_EINVAL at once");
    memset(&b, 0, sizeof(b));
    crdt_store_tl_write_batch(st, w, 0, on_batch, &b);
    ok(b.done && b.rc == 0 && b.res.applied == 0, "no writes: done at once");
    is_int(cmd_calls(srv, "crdt.tlmadd") + cmd_calls(srv, "crdt.tlmrem"), sent, "none was sent");
    ok(rh_int(rh_cmd(srv, "EXISTS bt:x bt:y")) == 0, "nothing written");
    crdt_store_close(st);

    /* Redis gone: CRDT_EUNAVAIL, the store's reason in last_error */
    rh_server_t gone = {0};
    if (rh_start(&gone, NULL, "node-id 9", NULL) == 0) {
        char url[64];
        snprintf(url, sizeof(url), "redis://127.0.0.1:%d", gone.port);
        st = open_store(url, NULL);
        rh_kill(&gone);
        batch_of(st, k4, 4, CRDT_MUT_ADD, 1, &b);
        ok(b.calls == 1 && b.rc == CRDT_EUNAVAIL && crdt_store_last_error(st),
           "Redis killed: CRDT_EUNAVAIL (%d): %s", b.rc,
           crdt_store_last_error(st) ? crdt_store_last_error(st) : "");
        crdt_store_close(st);
        rh_stop(&gone);
    }
}

/* Over a cluster: keys of one slot go as one command; keys of several slots are type-checked
 * first, so a wrong-typed key among them stores nothing on any primary. */
static void batch_cluster(crdt_store_t *st)
{
    long long t0 = 0, m0 = 0;
    for (int i = 0; i < CL.n; i++)
        t0 += cmd_calls(&CL.node[i], "crdt.type"), m0 += cmd_calls(&CL.node[i], "crdt.tlmadd");
    static const char *const one[] = {"{bt}a", "{bt}b", "{bt}c"};
    bres_t b;
    batch_of(st, one, 3, CRDT_MUT_ADD, 1, &b);
    long long t1 = 0, m1 = 0;
    for (int i = 0; i < CL.n; i++)
        t1 += cmd_calls(&CL.node[i], "crdt.type"), m1 += cmd_calls(&CL.node[i], "crdt.tlmadd");
    ok(b.rc == 0 && b.res.applied == 3 && m1 - m0 == 1 && t1 == t0,
       "cluster, keys of one slot: one CRDT.TLMADD, no CRDT.TYPE (rc %d, %lld, %lld)", b.rc,
       m1 - m0, t1 - t0);
    static const char *const many[] = {"bt:1", "bt:2", "bt:3", "bt:4", "bt:5", "bt:6"};
    batch_of(st, many, 6, CRDT_MUT_ADD, 1, &b);
    bool all = b.rc == 0 && b.res.applied == 6;
    for (size_t i = 0; i < 6; i++)
        all = all && card_of(st, many[i]) == 1;
    ok(all, "keys of six slots: type-checked, then written, every one (rc %d)", b.rc);
    /* a counter among keys of several slots (on several primaries) */
    crdt_mut_t inc = {.type = CRDT_GCOUNTER, .kind = CRDT_MUT_INCR, .n = 1};
    res_t r = {0};
    sw(st, "bt:ctr", &inc, &r);
    static const char *const bad[] = {"bt:n1", "bt:n2", "bt:ctr", "bt:n3", "bt:n4"};
    batch_of(st, bad, 5, CRDT_MUT_ADD, 1, &b);
    ok(b.rc == CRDT_ETYPE && b.res.bad == 2 && b.res.bad_type == CRDT_GCOUNTER &&
           b.res.applied == 0,
       "a G-counter among keys of several slots: CRDT_ETYPE naming it (rc %d, bad %zu)", b.rc,
       b.res.bad);
    size_t left = 0;
    for (size_t i = 0; i < 5; i++)
        if (i != 2)
            left += card_of(st, bad[i]);
    is_int((long long)left, 0, "and no other slot was written");
}

/* ---- list_keys: SCAN MATCH, sorted (list_check.h) ------------------------------------------ */

static void test_list(rh_server_t *srv)
{
    diag("list_keys over one redis-server");
    freeReplyObject(rh_cmd(srv, "FLUSHALL"));
    char url[64];
    snprintf(url, sizeof(url), "redis://127.0.0.1:%d", srv->port);
    crdt_store_t *st = open_store(url, NULL);
    ok(st && crdt_store_redis_ready(st) == 1, "open %s", url);
    if (!st || crdt_store_redis_ready(st) != 1) {
        crdt_store_close(st);
        return;
    }
    freeReplyObject(rh_cmd(srv, "SET k:plain v")); /* not a crdtd object: never listed */
    lc_model_t m = {0};
    ok(lc_populate(st, wait_loop, NULL, &m, 'k', 1500), "1,500 keys written (some deleted)");
    lc_check(st, wait_loop, NULL, &m, "redis");
    /* a page with most candidates deleted: the listing scans again past them */
    crdt_mut_t add = {.type = CRDT_ORSET, .kind = CRDT_MUT_ADD, .bytes = "m", .len = 1};
    crdt_mut_t del = {.type = CRDT_ORSET, .kind = CRDT_MUT_DELETE};
    bool good = true;
    for (int i = 0; i < 300; i++) {
        char k[16];
        int kl = snprintf(k, sizeof(k), "d:%04d", i);
        good = lc_write(st, wait_loop, NULL, k, (size_t)kl, &add) && good;
        if (i < 290)
            good = lc_write(st, wait_loop, NULL, k, (size_t)kl, &del) && good;
        else
            lc_add_live(&m, k, (size_t)kl);
    }
    ok(good, "300 keys d:, the first 290 deleted");
    lc_sort(&m);
    ok(lc_page_ok(st, wait_loop, NULL, &m, "d:", 2, NULL, 0, 5) &&
           lc_page_ok(st, wait_loop, NULL, &m, "d:", 2, NULL, 0, 10),
       "a page behind 290 deleted keys (more than the candidates kept) still fills");
    free(m.live);
    crdt_store_close(st);
}

int main(void)
{
    const char *why = rh_skip_reason();
    if (why)
        skip_all("%s", why);
    rh_watchdog(240);
    signal(SIGPIPE, SIG_IGN);
    L = ep_new();
    rh_server_t srv = {0};
    if (rh_start(&srv, NULL, "node-id 7", NULL) < 0)
        bail_out("cannot start redis-server");
    test_contract(&srv);
    test_identical(&srv);
    test_follow(&srv);
    test_close_pending(&srv);
    test_send_now(&srv);
    test_unwanted_states(&srv);
    test_wait(&srv);
    test_restart(&srv);
    test_list(&srv);
    test_batch(&srv);
    test_tl_range(&srv);
    rh_stop(&srv);
    test_fakes();
    test_old_module();
    test_cluster();
    ep_free(L);
    rh_cleanup();
    ok(rh_sanitizer_reports() == 0, "no sanitizer reports from the servers");
    return done_testing();
}
