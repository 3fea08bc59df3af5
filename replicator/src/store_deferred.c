/* store_deferred.c - a store whose calls complete later: another store's, run on demand (tests) */
#include <stdlib.h>
#include <string.h>

#include "crdt_store.h"

/*
 * Each asynchronous call is recorded (its arguments copied) and run on the inner store only when
 * crdt_store_deferred_run is called, so its completion comes after the call returned, as it would
 * from a store over the network. Callers that are correct for such a store (they keep what a
 * completion needs, and cope with what changed meanwhile) work unchanged over it; the rest show.
 * The synchronous calls (seqs, node id, clock, flush, tick, stats) go straight through, and so do
 * rsx_open, rsx_close and rsx_items; rsx_step and rsx_keys are deferred like the rest.
 */

typedef enum call_kind {
    C_GET = 1,
    C_GET_MANY,
    C_WRITE,
    C_APPLY,
    C_CHANGES,
    C_SCAN,
    C_FINGERPRINT,
    C_MARK_GET,
    C_MARK_PUT,
    C_RSX_STEP,
    C_RSX_KEYS,
    C_LIST_KEYS,
} call_kind_t;

typedef struct call {
    struct call *next;
    call_kind_t kind;
    void *ud;
    uint8_t *key; /* get, write, apply, fingerprint: a copy */
    size_t klen;
    crdt_bytes_t *keys; /* get_many: copies */
    size_t nkeys;
    crdt_mut_t mut; /* write: bytes and state copied */
    uint8_t *bytes;
    crdt_obj_t *obj; /* write (MERGE state), apply (delta): a copy */
    uint64_t origin, from;
    size_t limit;
    char name[65];
    uint8_t *p; /* mark_put, rsx_step: a copy (rsx_step: NULL for the first) */
    crdt_store_rsx_t *rsx;
    size_t n;
    union {
        crdt_store_get_cb get;
        crdt_store_get_many_cb get_many;
        crdt_store_write_cb write;
        crdt_store_done_cb done;
        crdt_store_fp_cb fp;
        crdt_store_mark_cb mark;
        crdt_store_status_cb status;
        crdt_store_rsx_cb rsx;
    } cb;
    crdt_feed_cb each;
    crdt_store_key_cb key_each;
    crdt_store_name_cb name_each; /* list_keys: key is the prefix, p (n bytes) the after */
    bool has_after;
} call_t;

typedef struct deferred {
    crdt_store_t base;
    crdt_store_t *inner;
    call_t *head, *tail;
} deferred_t;

static deferred_t *def(crdt_store_t *st)
{
    return (deferred_t *)st;
}

static const deferred_t *cdef(const crdt_store_t *st)
{
    return (const deferred_t *)st;
}

static void call_free(call_t *c)
{
    free(c->key);
    for (size_t i = 0; i < c->nkeys; i++)
        free((void *)c->keys[i].data);
    free(c->keys);
    free(c->bytes);
    crdt_obj_free(c->obj);
    free(c->p);
    free(c);
}

static void *dup_bytes(const void *p, size_t n)
{
    uint8_t *d = malloc(n ? n : 1);
    if (d && n)
        memcpy(d, p, n);
    return d;
}

/* A new recorded call with a copy of key (may be NULL), or NULL. */
static call_t *call_new(call_kind_t kind, const void *key, size_t klen, void *ud)
{
    call_t *c = calloc(1, sizeof(*c));
    if (!c)
        return NULL;
    c->kind = kind;
    c->ud = ud;
    if (key && !(c->key = dup_bytes(key, klen))) {
        free(c);
        return NULL;
    }
    c->klen = klen;
    return c;
}

static void push(crdt_store_t *st, call_t *c)
{
    deferred_t *d = def(st);
    if (d->tail)
        d->tail->next = c;
    else
        d->head = c;
    d->tail = c;
}

/* ---- events: the inner store's, passed on ---------------------------------------------------- */

static void fwd_change(void *ud, const void *key, size_t klen, uint64_t seq,
                       const crdt_obj_t *delta, uint64_t origin)
{
    deferred_t *d = ud;
    if (d->base.ev.change)
        d->base.ev.change(d->base.ev.ud, key, klen, seq, delta, origin);
}

static void fwd_durable(void *ud, uint64_t durable_seq)
{
    deferred_t *d = ud;
    if (d->base.ev.durable)
        d->base.ev.durable(d->base.ev.ud, durable_seq);
}

static bool fwd_wants_delta(void *ud, const void *key, size_t klen)
{
    deferred_t *d = ud;
    return !d->base.ev.wants_delta || d->base.ev.wants_delta(d->base.ev.ud, key, klen);
}

/* ---- recorded calls ---------------------------------------------------------------------------
 */

static void d_get(crdt_store_t *st, const void *key, size_t klen, crdt_store_get_cb cb, void *ud)
{
    call_t *c = call_new(C_GET, key, klen, ud);
    if (!c) {
        cb(ud, CRDT_ENOMEM, NULL);
        return;
    }
    c->cb.get = cb;
    push(st, c);
}

static void d_get_many(crdt_store_t *st, const crdt_bytes_t *keys, size_t n,
                       crdt_store_get_many_cb cb, void *ud)
{
    call_t *c = call_new(C_GET_MANY, NULL, 0, ud);
    if (c && n && !(c->keys = calloc(n, sizeof(*c->keys)))) {
        free(c);
        c = NULL;
    }
    for (size_t i = 0; c && i < n; i++) {
        c->keys[i].len = keys[i].len;
        if (!(c->keys[i].data = dup_bytes(keys[i].data, keys[i].len))) {
            call_free(c);
            c = NULL;
            break;
        }
        c->nkeys++;
    }
    if (!c) {
        cb(ud, CRDT_ENOMEM, NULL, 0);
        return;
    }
    c->cb.get_many = cb;
    push(st, c);
}

static void d_write(crdt_store_t *st, const void *key, size_t klen, const crdt_mut_t *m,
                    crdt_store_write_cb cb, void *ud)
{
    call_t *c = call_new(C_WRITE, key, klen, ud);
    if (c) {
        c->mut = *m;
        if (m->bytes && !(c->bytes = dup_bytes(m->bytes, m->len)))
            goto fail;
        if (m->state && !(c->obj = crdt_obj_clone(m->state)))
            goto fail;
        c->mut.bytes = c->bytes;
        c->mut.state = c->obj;
        c->cb.write = cb;
        push(st, c);
        return;
    }
fail:
    if (c)
        call_free(c);
    cb(ud, CRDT_ENOMEM, 0);
}

static void d_apply(crdt_store_t *st, const void *key, size_t klen, const crdt_obj_t *delta,
                    uint64_t origin, crdt_store_write_cb cb, void *ud)
{
    call_t *c = call_new(C_APPLY, key, klen, ud);
    if (c && !(c->obj = crdt_obj_clone(delta))) {
        call_free(c);
        c = NULL;
    }
    if (!c) {
        cb(ud, CRDT_ENOMEM, 0);
        return;
    }
    c->origin = origin;
    c->cb.write = cb;
    push(st, c);
}

static void d_changes(crdt_store_t *st, uint64_t since, size_t limit, crdt_feed_cb each,
                      crdt_store_done_cb done, void *ud)
{
    call_t *c = call_new(C_CHANGES, NULL, 0, ud);
    if (!c) {
        done(ud, CRDT_ENOMEM, since);
        return;
    }
    c->from = since;
    c->limit = limit;
    c->each = each;
    c->cb.done = done;
    push(st, c);
}

static void d_scan(crdt_store_t *st, uint64_t cursor, size_t limit, crdt_store_key_cb each,
                   crdt_store_done_cb done, void *ud)
{
    call_t *c = call_new(C_SCAN, NULL, 0, ud);
    if (!c) {
        done(ud, CRDT_ENOMEM, cursor);
        return;
    }
    c->from = cursor;
    c->limit = limit;
    c->key_each = each;
    c->cb.done = done;
    push(st, c);
}

static void d_list_keys(crdt_store_t *st, const void *prefix, size_t plen, const void *after,
                        size_t alen, size_t limit, crdt_store_name_cb each, crdt_store_done_cb done,
                        void *ud)
{
    call_t *c = call_new(C_LIST_KEYS, prefix, plen, ud);
    if (c && after && !(c->p = dup_bytes(after, alen))) {
        call_free(c);
        c = NULL;
    }
    if (!c) {
        done(ud, CRDT_ENOMEM, 0);
        return;
    }
    c->has_after = after != NULL;
    c->n = alen;
    c->limit = limit;
    c->name_each = each;
    c->cb.done = done;
    push(st, c);
}

static void d_fingerprint(crdt_store_t *st, const void *key, size_t klen, crdt_store_fp_cb cb,
                          void *ud)
{
    call_t *c = call_new(C_FINGERPRINT, key, klen, ud);
    if (!c) {
        cb(ud, CRDT_ENOMEM, 0);
        return;
    }
    c->cb.fp = cb;
    push(st, c);
}

static void d_mark_get(crdt_store_t *st, const char *name, crdt_store_mark_cb cb, void *ud)
{
    call_t *c = call_new(C_MARK_GET, NULL, 0, ud);
    if (!c || strlen(name) >= sizeof(c->name)) {
        int rc = c ? CRDT_EINVAL : CRDT_ENOMEM;
        free(c);
        cb(ud, rc, NULL, 0);
        return;
    }
    strcpy(c->name, name);
    c->cb.mark = cb;
    push(st, c);
}

static void d_mark_put(crdt_store_t *st, const char *name, const void *p, size_t n,
                       crdt_store_status_cb cb, void *ud)
{
    call_t *c = call_new(C_MARK_PUT, NULL, 0, ud);
    if (c && (strlen(name) >= sizeof(c->name) || !(c->p = dup_bytes(p, n)))) {
        bool inval = strlen(name) >= sizeof(c->name);
        call_free(c);
        cb(ud, inval ? CRDT_EINVAL : CRDT_ENOMEM);
        return;
    }
    if (!c) {
        cb(ud, CRDT_ENOMEM);
        return;
    }
    strcpy(c->name, name);
    c->n = n;
    c->cb.status = cb;
    push(st, c);
}

static void run(deferred_t *d, call_t *c)
{
    crdt_store_t *in = d->inner;
    switch (c->kind) {
    case C_GET: crdt_store_get(in, c->key, c->klen, c->cb.get, c->ud); break;
    case C_GET_MANY: crdt_store_get_many(in, c->keys, c->nkeys, c->cb.get_many, c->ud); break;
    case C_WRITE: crdt_store_write(in, c->key, c->klen, &c->mut, c->cb.write, c->ud); break;
    case C_APPLY:
        crdt_store_apply(in, c->key, c->klen, c->obj, c->origin, c->cb.write, c->ud);
        break;
    case C_CHANGES: crdt_store_changes(in, c->from, c->limit, c->each, c->cb.done, c->ud); break;
    case C_SCAN: crdt_store_scan(in, c->from, c->limit, c->key_each, c->cb.done, c->ud); break;
    case C_FINGERPRINT: crdt_store_fingerprint(in, c->key, c->klen, c->cb.fp, c->ud); break;
    case C_MARK_GET: crdt_store_mark_get(in, c->name, c->cb.mark, c->ud); break;
    case C_MARK_PUT: crdt_store_mark_put(in, c->name, c->p, c->n, c->cb.status, c->ud); break;
    case C_RSX_STEP: crdt_store_rsx_step(in, c->rsx, c->p, c->n, c->cb.rsx, c->ud); break;
    case C_RSX_KEYS: crdt_store_rsx_keys(in, c->from, c->key_each, c->cb.done, c->ud); break;
    case C_LIST_KEYS:
        crdt_store_list_keys(in, c->key, c->klen, c->has_after ? c->p : NULL, c->n, c->limit,
                             c->name_each, c->cb.done, c->ud);
        break;
    }
}

size_t crdt_store_deferred_run(crdt_store_t *st)
{
    deferred_t *d = def(st);
    /* only what was recorded before this call: completions that call again wait for the next */
    call_t *c = d->head;
    d->head = d->tail = NULL;
    size_t n = 0;
    while (c) {
        call_t *nx = c->next;
        run(d, c);
        call_free(c);
        c = nx;
        n++;
    }
    return n;
}

size_t crdt_store_deferred_pending(const crdt_store_t *st)
{
    size_t n = 0;
    for (const call_t *c = cdef(st)->head; c; c = c->next)
        n++;
    return n;
}

/* ---- pass-through ------------------------------------------------------------------------------
 */

static void d_close(crdt_store_t *st)
{
    deferred_t *d = def(st);
    for (call_t *c = d->head, *nx; c; c = nx) { /* dropped: the caller is going away too */
        nx = c->next;
        call_free(c);
    }
    crdt_store_close(d->inner);
    free(d);
}

static uint64_t d_last_seq(const crdt_store_t *st)
{
    return crdt_store_last_seq(cdef(st)->inner);
}
static uint64_t d_durable_seq(const crdt_store_t *st)
{
    return crdt_store_durable_seq(cdef(st)->inner);
}
static uint64_t d_node_id(const crdt_store_t *st)
{
    return crdt_store_node_id(cdef(st)->inner);
}
static int d_hlc_now(crdt_store_t *st, crdt_hlc_ts_t *ts)
{
    return crdt_store_hlc_now(def(st)->inner, ts);
}
static int d_flush(crdt_store_t *st)
{
    return crdt_store_flush(def(st)->inner);
}
static void d_tick(crdt_store_t *st, uint64_t now_ms)
{
    crdt_store_tick(def(st)->inner, now_ms);
}
static const char *d_last_error(const crdt_store_t *st)
{
    return crdt_store_last_error(cdef(st)->inner);
}
static void d_stats(const crdt_store_t *st, crdt_store_stats_t *out)
{
    crdt_store_stats(cdef(st)->inner, out);
}

static crdt_store_rsx_t *d_rsx_open(crdt_store_t *st, bool initiator, const crdt_rsx_config_t *cfg)
{
    return crdt_store_rsx_open(def(st)->inner, initiator, cfg);
}
static void d_rsx_step(crdt_store_t *st, crdt_store_rsx_t *s, const void *msg, size_t n,
                       crdt_store_rsx_cb cb, void *ud)
{
    call_t *c = call_new(C_RSX_STEP, NULL, 0, ud);
    if (c && msg && !(c->p = dup_bytes(msg, n))) {
        call_free(c);
        c = NULL;
    }
    if (!c) {
        crdt_store_rsx_result_t res;
        memset(&res, 0, sizeof(res));
        cb(ud, CRDT_ENOMEM, &res);
        return;
    }
    c->rsx = s;
    c->n = n;
    c->cb.rsx = cb;
    push(st, c);
}
static void d_rsx_close(crdt_store_t *st, crdt_store_rsx_t *s)
{
    crdt_store_rsx_close(def(st)->inner, s);
}
static void d_rsx_keys(crdt_store_t *st, uint64_t id, crdt_store_key_cb each,
                       crdt_store_done_cb done, void *ud)
{
    call_t *c = call_new(C_RSX_KEYS, NULL, 0, ud);
    if (!c) {
        if (done)
            done(ud, CRDT_ENOMEM, 0);
        return;
    }
    c->from = id; /* the rsx id */
    c->key_each = each;
    c->cb.done = done;
    push(st, c);
}
static size_t d_rsx_items(crdt_store_t *st)
{
    return crdt_store_rsx_items(def(st)->inner);
}

static const crdt_store_ops_t deferred_ops = {
    .name = "deferred",
    .close = d_close,
    .get = d_get,
    .get_many = d_get_many,
    .write = d_write,
    .apply = d_apply,
    .changes = d_changes,
    .scan = d_scan,
    .list_keys = d_list_keys,
    .fingerprint = d_fingerprint,
    .mark_get = d_mark_get,
    .mark_put = d_mark_put,
    .rsx_open = d_rsx_open,
    .rsx_step = d_rsx_step,
    .rsx_close = d_rsx_close,
    .rsx_keys = d_rsx_keys,
    .rsx_items = d_rsx_items,
    .last_seq = d_last_seq,
    .durable_seq = d_durable_seq,
    .node_id = d_node_id,
    .hlc_now = d_hlc_now,
    .flush = d_flush,
    .tick = d_tick,
    .last_error = d_last_error,
    .stats = d_stats,
};

crdt_store_t *crdt_store_deferred_wrap(crdt_store_t *inner)
{
    deferred_t *d = calloc(1, sizeof(*d));
    if (!d)
        return NULL;
    d->base.ops = &deferred_ops;
    d->inner = inner;
    crdt_store_set_events(inner, &(crdt_store_events_t){fwd_change, fwd_durable, d, fwd_wants_delta});
    return &d->base;
}
