/* replica.c - the keyspace, the write path, the change feed and the anti-entropy fingerprints */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "crdt_reconcile.h"
#include "replica_private.h"

#define NO_ID UINT32_MAX
/* The hashes that leave the process are fixed, so that replicas agree: a key's fingerprint is
 * crdt_rsx_state_fp of its encoding (the anti-entropy item's fp, the same on a Redis site: crdt.so
 * uses it too), the digest mixes in a fixed-seed hash of the key. The table's seed is per process
 * instead, so crafted colliding keys help nobody twice. */
#define KEY_SEED 0x637264746b793031ull /* "crdtky01" */
/* Fingerprints are refreshed lazily, when asked for: a change only marks its key stale. Refreshing
 * in flush instead cost a third of the write throughput with 1,000-entry timelines (an encoding of
 * the whole object per changed key), paid whether or not anyone reads the fingerprints. */

/* ---- small helpers -------------------------------------------------------------------------- */

uint64_t rep_mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

double rep_mono_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

void rep_seterr(crdt_error_t *err, int code, const char *fmt, ...)
{
    if (!err || err->code)
        return;
    err->code = code;
    err->offset = 0;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err->text, sizeof(err->text), fmt, ap);
    va_end(ap);
}

void rep_fail(crdt_replica_t *r, const char *fmt, ...)
{
    if (r->failed)
        return;
    r->failed = true;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(r->failure, sizeof(r->failure), fmt, ap);
    va_end(ap);
    fprintf(stderr, "crdtd replica: %s; refusing writes until restarted\n", r->failure);
}

const char *crdt_replica_last_error(const crdt_replica_t *r)
{
    return r->failed ? r->failure : NULL;
}

static inline uint64_t fmix(uint64_t h)
{
    h ^= h >> 33;
    h *= 0xff51afd7ed558ccdull;
    h ^= h >> 33;
    h *= 0xc4ceb9fe1a85ec53ull;
    h ^= h >> 33;
    return h;
}

/* ---- keyspace table ------------------------------------------------------------------------- */

uint32_t rep_find(const crdt_replica_t *r, const void *key, size_t klen, uint64_t h)
{
    if (!r->slots)
        return NO_ID;
    for (uint32_t i = (uint32_t)h & r->mask;; i = (i + 1) & r->mask) {
        uint32_t s = r->slots[i];
        if (!s)
            return NO_ID;
        const rep_key_t *k = &r->keys[s - 1];
        if (k->hash == h && k->klen == klen && (klen == 0 || memcmp(k->key, key, klen) == 0))
            return s - 1;
    }
}

static void table_place(uint32_t *slots, uint32_t mask, uint64_t h, uint32_t id)
{
    uint32_t i = (uint32_t)h & mask;
    while (slots[i])
        i = (i + 1) & mask;
    slots[i] = id + 1;
}

/* Makes room for one more key in the table, the key array and the dirty list (so that nothing
 * can fail after a write changed an object). */
static int reserve_key(crdt_replica_t *r)
{
    if (r->nkeys >= UINT32_MAX - 2)
        return CRDT_ENOMEM;
    uint32_t cap = r->slots ? r->mask + 1 : 0;
    if ((uint64_t)(r->nkeys + 1) * 4 > (uint64_t)cap * 3) {
        uint32_t ncap = cap ? cap * 2 : 64;
        uint32_t *slots = calloc(ncap, sizeof(*slots));
        if (!slots)
            return CRDT_ENOMEM;
        for (uint32_t id = 0; id < r->nkeys; id++)
            table_place(slots, ncap - 1, r->keys[id].hash, id);
        free(r->slots);
        r->slots = slots;
        r->mask = ncap - 1;
    }
    if (r->nkeys == r->cap_keys) {
        uint32_t ncap = r->cap_keys ? r->cap_keys * 2 : 64;
        rep_key_t *keys = realloc(r->keys, (size_t)ncap * sizeof(*keys));
        if (!keys)
            return CRDT_ENOMEM;
        r->keys = keys;
        uint32_t *dirty = realloc(r->dirty, (size_t)ncap * sizeof(*dirty));
        if (!dirty)
            return CRDT_ENOMEM;
        r->dirty = dirty;
        r->cap_keys = ncap;
        r->cap_dirty = ncap;
    }
    return 0;
}

uint32_t rep_insert(crdt_replica_t *r, const void *key, size_t klen, uint64_t h, crdt_obj_t *obj)
{
    if (reserve_key(r) < 0)
        return NO_ID;
    uint8_t *copy = malloc(klen ? klen : 1);
    if (!copy)
        return NO_ID;
    if (klen)
        memcpy(copy, key, klen);
    uint32_t id = r->nkeys++;
    rep_key_t *k = &r->keys[id];
    memset(k, 0, sizeof(*k));
    k->key = copy;
    k->klen = (uint32_t)klen;
    k->hash = h;
    k->obj = obj;
    k->type = (uint8_t)crdt_obj_type(obj);
    table_place(r->slots, r->mask, h, id);
    r->keys_by_type[crdt_obj_type(obj)]++;
    if (crdt_key_internal(key, klen))
        r->internal_by_type[crdt_obj_type(obj)]++;
    rep_order_add(r, id); /* the ordered index of listings (keyorder.c), once built */
    return id;
}

uint32_t rep_timeline_bound(const crdt_replica_t *r, const void *key, size_t klen)
{
    return crdt_key_internal(key, klen) ? 0 : r->cfg.timeline_max_size;
}

crdt_obj_t *rep_new_object(const crdt_replica_t *r, crdt_type_t type, const void *key, size_t klen)
{
    if (type == CRDT_TIMELINE)
        return crdt_timeline_new(rep_timeline_bound(r, key, klen));
    return crdt_obj_new(type);
}

/* ---- fingerprints --------------------------------------------------------------------------- */

int rep_mark_dirty(crdt_replica_t *r, uint32_t id)
{
    rep_key_t *k = &r->keys[id];
    k->fp_dirty = true;
    if (!k->in_dirty) {
        /* cap_dirty follows cap_keys, so there is always room for every key once */
        k->in_dirty = true;
        r->dirty[r->ndirty++] = id;
    }
    return 0;
}

/* Recomputes one key's fingerprint and its digest term. false on ENOMEM (still dirty). */
static bool refresh_fp(crdt_replica_t *r, uint32_t id)
{
    rep_ready(r, id);
    rep_key_t *k = &r->keys[id];
    r->scratch.len = 0;
    if (crdt_obj_encode(k->obj, &r->scratch) < 0)
        return false;
    uint64_t fp = crdt_rsx_state_fp(r->scratch.data, r->scratch.len);
    /* Sum of a strong mix of (key, fingerprint): order-independent, updatable by subtraction. */
    uint64_t c = fmix(rep_hash(k->key, k->klen, KEY_SEED) ^ fmix(fp + 0x9E3779B97F4A7C15ull));
    r->digest += c - k->contrib;
    k->fp = fp;
    k->contrib = c;
    k->fp_dirty = false;
    return true;
}

/* Refreshes every stale fingerprint (those of keys changed since the last refresh). */
static void refresh_dirty(crdt_replica_t *r)
{
    while (r->ndirty) {
        uint32_t id = r->dirty[r->ndirty - 1];
        /* a fingerprint getter may have refreshed it already */
        if (r->keys[id].fp_dirty && !refresh_fp(r, id))
            break; /* out of memory: it stays listed */
        r->keys[id].in_dirty = false;
        r->ndirty--;
    }
    if (r->scratch.cap > (16u << 20)) /* one huge object should not pin its buffer forever */
        crdt_buf_free(&r->scratch);
}

int crdt_replica_key_fingerprint(crdt_replica_t *r, const void *key, size_t klen, uint64_t *fp)
{
    uint32_t id = rep_find(r, key, klen, rep_table_hash(key, klen, r->seed));
    *fp = 0;
    if (id == NO_ID)
        return CRDT_EINVAL;
    if (r->keys[id].fp_dirty && !refresh_fp(r, id))
        return CRDT_ENOMEM;
    *fp = r->keys[id].fp;
    return 0;
}

uint64_t crdt_replica_digest(crdt_replica_t *r)
{
    refresh_dirty(r);
    return r->digest;
}

/* ---- change feed ---------------------------------------------------------------------------- */

/* Makes room for one more feed entry, dropping superseded ones first when they pile up. */
static int reserve_feed(crdt_replica_t *r)
{
    if (r->nfeed < r->cap_feed)
        return 0;
    if (r->nfeed > 2 * (size_t)r->nkeys + 64) {
        size_t w = 0;
        for (size_t i = 0; i < r->nfeed; i++)
            if (r->keys[r->feed[i].id].seq == r->feed[i].seq)
                r->feed[w++] = r->feed[i];
        r->nfeed = w;
        if (w < r->cap_feed)
            return 0;
    }
    size_t ncap = r->cap_feed ? r->cap_feed * 2 : 256;
    rep_feed_ent_t *f = realloc(r->feed, ncap * sizeof(*f));
    if (!f)
        return CRDT_ENOMEM;
    r->feed = f;
    r->cap_feed = ncap;
    return 0;
}

uint64_t crdt_replica_last_seq(const crdt_replica_t *r)
{
    return r->last_seq;
}

int crdt_replica_changes(crdt_replica_t *r, uint64_t since, size_t limit, crdt_feed_cb cb, void *ud,
                         uint64_t *next)
{
    size_t lo = 0, hi = r->nfeed;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (r->feed[mid].seq <= since)
            lo = mid + 1;
        else
            hi = mid;
    }
    uint64_t pos = since;
    size_t n = 0, i = lo;
    for (; i < r->nfeed && n < limit; i++) {
        const rep_feed_ent_t *e = &r->feed[i];
        const rep_key_t *k = &r->keys[e->id];
        if (k->seq == e->seq) {
            rep_ready(r, e->id); /* a read that may finish a load */
            int rc = cb(k->key, k->klen, e->seq, k->obj, ud);
            if (rc) {
                if (next)
                    *next = pos;
                return rc;
            }
            n++;
        }
        /* a superseded entry is passed over: the key comes again later at its latest seq */
        pos = e->seq;
    }
    if (i == r->nfeed && r->last_seq > pos)
        pos = r->last_seq;
    if (next)
        *next = pos;
    return 0;
}

void crdt_replica_set_listener(crdt_replica_t *r, crdt_replica_listener_cb cb, void *ud)
{
    r->listener = cb;
    r->listener_ud = ud;
}

/* ---- writes --------------------------------------------------------------------------------- */

static int write_checks(crdt_replica_t *r, const void *key, size_t klen)
{
    if (!r || (!key && klen) || klen > CRDT_MAX_BLOB)
        return CRDT_EINVAL;
    if (r->failed)
        return CRDT_EIO;
    if (reserve_feed(r) < 0 || reserve_key(r) < 0)
        return CRDT_ENOMEM;
    return 0;
}

static bool logging(const crdt_replica_t *r)
{
    return r->log.fd >= 0;
}

/* Bookkeeping once key `id` changed and its record (if any) is in the log buffer at `mark`. */
static void commit(crdt_replica_t *r, uint32_t id, uint64_t seq, const crdt_obj_t *delta,
                   size_t mark, uint64_t origin)
{
    rep_key_t *k = &r->keys[id];
    k->seq = seq;
    r->last_seq = seq;
    r->feed[r->nfeed++] = (rep_feed_ent_t){seq, id};
    rep_mark_dirty(r, id);
    r->st.writes++;
    if (logging(r)) {
        r->log.buf_seq = seq;
        rep_idx_note(r, id, r->log.seg_bytes + mark);
        if (r->log.buf.len >= REP_BUF_FLUSH)
            rep_log_write(r); /* a failure is sticky and reported by the next write and flush */
    }
    if (r->listener)
        r->listener(k->key, k->klen, seq, delta, origin, r->listener_ud);
}

/* The HLC receive step for one timestamp a joined delta held. Within the drift bound the clock
 * moves past it; beyond it the clock stays where it is (as crdt_hlc_recv and the Redis module
 * leave it), and that is counted and logged at most once a minute. */
static void observe_ts(crdt_replica_t *r, const crdt_hlc_ts_t *ts, uint64_t origin, bool report)
{
    uint64_t now = crdt_wall_ms();
    crdt_hlc_ts_t out;
    int rc = crdt_hlc_recv(&r->hlc, now, ts, &out);
    if (rc == CRDT_EOVERFLOW) {
        /* That millisecond's logical counter is used up: order after it from the next one on
         * (ts->ms is within the bound, or recv had said CRDT_ECLOCK). */
        uint64_t ms = r->hlc.last_ms > ts->ms ? r->hlc.last_ms : ts->ms;
        r->hlc.last_ms = (ms > now ? ms : now) + 1;
        r->hlc.last_logical = 0;
    } else if (rc == CRDT_ECLOCK && report) {
        r->st.clock_ahead++;
        if (!r->clock_warned_ms || now - r->clock_warned_ms >= 60000 || now < r->clock_warned_ms) {
            r->clock_warned_ms = now;
            fprintf(stderr,
                    "crdtd replica: a delta from %s%llu is stamped %llu ms ahead of this clock, "
                    "beyond max-clock-drift-ms %llu: joined, but the clock does not follow it "
                    "(%llu such deltas so far)\n",
                    origin == CRDT_ORIGIN_LOCAL ? "a local client, node " : "peer node ",
                    (unsigned long long)(origin == CRDT_ORIGIN_LOCAL ? r->cfg.node_id : origin),
                    (unsigned long long)(ts->ms - now), (unsigned long long)r->hlc.max_drift_ms,
                    (unsigned long long)r->st.clock_ahead);
        }
    }
}

int crdt_replica_apply(crdt_replica_t *r, const void *key, size_t klen, const crdt_obj_t *delta,
                       uint64_t origin, uint64_t *seq)
{
    int rc = write_checks(r, key, klen);
    if (rc < 0)
        return rc;
    if (!delta)
        return CRDT_EINVAL;
    crdt_type_t type = crdt_obj_type(delta);
    uint64_t h = rep_table_hash(key, klen, r->seed);
    uint32_t id = rep_find(r, key, klen, h);
    if (id != NO_ID && r->keys[id].type != type)
        return CRDT_ETYPE;
    if (id != NO_ID)
        rep_ready(r, id);
    /* The record goes into the buffer first, so that running out of memory there leaves the
     * key untouched; a no-op takes it back out. seq is the next one if the join changes anything.
     */
    uint64_t s = r->last_seq + 1;
    size_t mark = r->log.buf.len;
    if (logging(r) && (rc = rep_record_append(&r->log.buf, s, key, klen, delta)) < 0)
        return rc;
    if (id == NO_ID) {
        crdt_obj_t *obj = rep_new_object(r, type, key, klen);
        rc = obj ? crdt_obj_merge(obj, delta) : CRDT_ENOMEM;
        if (rc > 0 && (id = rep_insert(r, key, klen, h, obj)) == NO_ID)
            rc = CRDT_ENOMEM;
        if (rc <= 0)
            crdt_obj_free(obj);
    } else {
        rc = crdt_obj_merge(r->keys[id].obj, delta);
    }
    /* The receive step, for every join that took (a no-op too: it still says what exists). */
    crdt_hlc_ts_t seen;
    if (rc >= 0 && crdt_obj_max_ts(delta, &seen) == 1)
        observe_ts(r, &seen, origin, true);
    if (rc <= 0) {
        r->log.buf.len = mark;
        if (rc == 0)
            r->st.noops++;
        return rc;
    }
    commit(r, id, s, delta, mark, origin);
    if (seq)
        *seq = s;
    return 1;
}

/* crdt_replica_mutate; with `lent` the delta the mutator gives is the replica's own (tl_delta),
 * which is kept rather than freed. */
static int mutate_impl(crdt_replica_t *r, const void *key, size_t klen, crdt_type_t type,
                       crdt_replica_mutate_cb mutate, void *ud, uint64_t *seq, bool lent);

int crdt_replica_mutate(crdt_replica_t *r, const void *key, size_t klen, crdt_type_t type,
                        crdt_replica_mutate_cb mutate, void *ud, uint64_t *seq)
{
    return mutate_impl(r, key, klen, type, mutate, ud, seq, false);
}

static void drop_delta(crdt_obj_t *delta, bool lent)
{
    if (!lent)
        crdt_obj_free(delta);
}

static int mutate_impl(crdt_replica_t *r, const void *key, size_t klen, crdt_type_t type,
                       crdt_replica_mutate_cb mutate, void *ud, uint64_t *seq, bool lent)
{
    int rc = write_checks(r, key, klen);
    if (rc < 0)
        return rc;
    if (!mutate || type < CRDT_TYPE_MIN || type > CRDT_TYPE_MAX)
        return CRDT_EINVAL;
    uint64_t h = rep_table_hash(key, klen, r->seed);
    uint32_t id = rep_find(r, key, klen, h);
    if (id != NO_ID && r->keys[id].type != type)
        return CRDT_ETYPE;
    if (id != NO_ID)
        rep_ready(r, id);
    crdt_obj_t *fresh = NULL;
    crdt_obj_t *obj = id != NO_ID ? r->keys[id].obj : (fresh = rep_new_object(r, type, key, klen));
    if (!obj)
        return CRDT_ENOMEM;
    crdt_obj_t *delta = NULL;
    rc = mutate(obj, ud, &delta);
    if (rc <= 0) {
        drop_delta(delta, lent);
        crdt_obj_free(fresh);
        if (rc == 0)
            r->st.noops++;
        return rc;
    }
    /* A mutator that reports a change without a delta still gets logged: the whole state. */
    const crdt_obj_t *logged = delta ? delta : obj;
    uint64_t s = r->last_seq + 1;
    size_t mark = r->log.buf.len;
    if (logging(r) && (rc = rep_record_append(&r->log.buf, s, key, klen, logged)) < 0) {
        if (fresh) { /* a new key never became visible: nothing to undo */
            drop_delta(delta, lent);
            crdt_obj_free(fresh);
            return rc;
        }
        /* The object changed in memory but its record could not be kept: acknowledging later
         * writes would lie about durability, so the replica stops taking them. This write keeps
         * its seq, which durable_seq never reaches: it is never acknowledged either. */
        rep_fail(r, "out of memory while logging a change");
    }
    if (fresh && (id = rep_insert(r, key, klen, h, fresh)) == NO_ID) {
        r->log.buf.len = mark;
        drop_delta(delta, lent);
        crdt_obj_free(fresh);
        return CRDT_ENOMEM;
    }
    commit(r, id, s, logged, mark, CRDT_ORIGIN_LOCAL);
    drop_delta(delta, lent);
    if (seq)
        *seq = s;
    return 1;
}

typedef struct mut_ctx {
    const crdt_mut_t *m;
    uint64_t node;
    crdt_obj_t *into; /* tl_mut_cb: the replica's delta */
} mut_ctx_t;

static int mut_cb(crdt_obj_t *obj, void *ud, crdt_obj_t **delta)
{
    const mut_ctx_t *c = ud;
    return crdt_mut_apply(obj, c->m, c->node, delta);
}

/* A timeline add or remove, its delta written into the replica's own (no allocation per write). */
static int tl_mut_cb(crdt_obj_t *obj, void *ud, crdt_obj_t **delta)
{
    const mut_ctx_t *c = ud;
    crdt_obj_t *into = c->into;
    int rc = c->m->kind == CRDT_MUT_ADD
                 ? crdt_timeline_add_into(obj, c->m->bytes, c->m->len, c->m->score, into)
                 : crdt_timeline_remove_into(obj, c->m->bytes, c->m->len, c->m->score, into);
    *delta = rc > 0 ? into : NULL;
    return rc;
}

int crdt_replica_write(crdt_replica_t *r, const void *key, size_t klen, const crdt_mut_t *m,
                       uint64_t *seq)
{
    if (!r || !m)
        return CRDT_EINVAL;
    if (m->kind == CRDT_MUT_MERGE)
        return m->state ? crdt_replica_apply(r, key, klen, m->state, CRDT_ORIGIN_LOCAL, seq)
                        : CRDT_EINVAL;
    crdt_mut_t stamped;
    if (crdt_mut_needs_ts(m) && m->ts.ms == 0) {
        /* Past what the write competes with, too: after a restart the clock has not seen the
         * values recovered from disk (a beyond-the-bound one was counted when it was applied). */
        uint32_t id = (key || !klen) && klen <= CRDT_MAX_BLOB
                          ? rep_find(r, key, klen, rep_table_hash(key, klen, r->seed))
                          : NO_ID;
        crdt_hlc_ts_t seen;
        if (id != NO_ID) {
            rep_ready(r, id);
            if (crdt_mut_seen_ts(r->keys[id].obj, m, &seen) == 1)
                observe_ts(r, &seen, CRDT_ORIGIN_LOCAL, false);
        }
        stamped = *m;
        int rc = crdt_replica_hlc_now(r, &stamped.ts);
        if (rc < 0)
            return rc;
        m = &stamped;
    }
    mut_ctx_t c = {m, r->cfg.node_id, NULL};
    if (m->type == CRDT_TIMELINE && (m->kind == CRDT_MUT_ADD || m->kind == CRDT_MUT_REMOVE) &&
        !r->tl_delta_busy && (r->tl_delta || (r->tl_delta = crdt_timeline_new(0)))) {
        c.into = r->tl_delta;
        r->tl_delta_busy = true; /* until the listener has seen it */
        int rc = mutate_impl(r, key, klen, m->type, tl_mut_cb, &c, seq, true);
        r->tl_delta_busy = false;
        return rc;
    }
    return crdt_replica_mutate(r, key, klen, m->type, mut_cb, &c, seq);
}

/* ---- reads ---------------------------------------------------------------------------------- */

const crdt_obj_t *crdt_replica_get(crdt_replica_t *r, const void *key, size_t klen)
{
    uint32_t id = rep_find(r, key, klen, rep_table_hash(key, klen, r->seed));
    if (id == NO_ID)
        return NULL;
    rep_ready(r, id); /* finishes the key's load, if it is still pending */
    return r->keys[id].obj;
}

/* The entry a lookup of hash h would examine first (a hint: the probe may go on past it). */
static const rep_key_t *first_candidate(const crdt_replica_t *r, uint64_t h)
{
    uint32_t s = r->slots[(uint32_t)h & r->mask];
    return s ? &r->keys[s - 1] : NULL;
}

void crdt_replica_get_many(crdt_replica_t *r, const crdt_bytes_t *keys, size_t n,
                           const crdt_obj_t **out)
{
    /* In groups of up to 16, stage by stage: the slots, then the entries they name, then the
     * bytes and objects of the entries that match, then the lookups themselves. */
    for (size_t at = 0; at < n; at += 16) {
        size_t m = n - at < 16 ? n - at : 16;
        const crdt_bytes_t *k = keys + at;
        uint64_t h[16];
        for (size_t i = 0; i < m; i++) {
            h[i] = rep_table_hash(k[i].data, k[i].len, r->seed);
            if (r->slots)
                __builtin_prefetch(&r->slots[(uint32_t)h[i] & r->mask]);
        }
        if (r->slots && m > 1) {
            for (size_t i = 0; i < m; i++) {
                const rep_key_t *e = first_candidate(r, h[i]);
                if (e)
                    __builtin_prefetch(e);
            }
            for (size_t i = 0; i < m; i++) {
                const rep_key_t *e = first_candidate(r, h[i]);
                if (e && e->hash == h[i]) {
                    __builtin_prefetch(e->key);
                    __builtin_prefetch(e->obj);
                }
            }
        }
        for (size_t i = 0; i < m; i++) {
            uint32_t id = rep_find(r, k[i].data, k[i].len, h[i]);
            if (id != NO_ID)
                rep_ready(r, id); /* finishes the key's load, if it is still pending */
            out[at + i] = id == NO_ID ? NULL : r->keys[id].obj;
        }
    }
}

int crdt_replica_foreach(crdt_replica_t *r, crdt_replica_key_cb cb, void *ud)
{
    for (uint32_t id = 0; id < r->nkeys; id++) {
        rep_ready(r, id);
        int rc = cb(r->keys[id].key, r->keys[id].klen, r->keys[id].obj, ud);
        if (rc)
            return rc;
    }
    return 0;
}

int crdt_replica_scan(crdt_replica_t *r, uint64_t cursor, size_t limit, crdt_replica_key_cb cb,
                      void *ud, uint64_t *next)
{
    uint64_t id = cursor;
    for (size_t n = 0; id < r->nkeys && n < limit; id++, n++) {
        rep_ready(r, (uint32_t)id);
        int rc = cb(r->keys[id].key, r->keys[id].klen, r->keys[id].obj, ud);
        if (rc) {
            *next = id + 1 < r->nkeys ? id + 1 : 0;
            return rc;
        }
    }
    *next = id < r->nkeys ? id : 0;
    return 0;
}

const char *crdt_replica_dir(const crdt_replica_t *r)
{
    return r->dir;
}

uint64_t crdt_replica_node_id(const crdt_replica_t *r)
{
    return r->cfg.node_id;
}

int crdt_replica_hlc_now(crdt_replica_t *r, crdt_hlc_ts_t *ts)
{
    uint64_t now = crdt_wall_ms();
    if (crdt_hlc_tick(&r->hlc, now, ts) == 0)
        return 0;
    /* The logical counter of the clock's millisecond is exhausted (a peer can send a timestamp
     * that leaves it so): move on to the next millisecond rather than fail writes until the wall
     * clock gets there, as the Redis module does. */
    r->hlc.last_ms++;
    r->hlc.last_logical = 0;
    return crdt_hlc_tick(&r->hlc, now, ts);
}

/* ---- replay (recovery) ---------------------------------------------------------------------- */

static int join_decoded(crdt_replica_t *r, uint32_t id, uint64_t seq, crdt_obj_t *o);

int rep_replay(crdt_replica_t *r, const uint8_t *body, size_t len, bool snapshot, crdt_error_t *err)
{
    uint64_t seq;
    const uint8_t *key, *enc;
    size_t klen, elen;
    if (rep_record_parse(body, len, &seq, &key, &klen, &enc, &elen) < 0) {
        rep_seterr(err, CRDT_EDECODE, "record has a checksum but an invalid layout");
        return CRDT_EDECODE;
    }
    crdt_error_t de;
    crdt_obj_t *o = crdt_obj_decode(enc, elen, &de);
    if (!o) {
        if (de.code == CRDT_ENOMEM)
            return CRDT_ENOMEM;
        rep_seterr(err, CRDT_EDECODE, "cannot decode an intact record (seq %llu): %s",
                   (unsigned long long)seq, de.text);
        return CRDT_EDECODE;
    }
    crdt_type_t type = crdt_obj_type(o);
    uint64_t h = rep_table_hash(key, klen, r->seed);
    uint32_t id = rep_find(r, key, klen, h);
    if (id == NO_ID) {
        /* A snapshot state, or a delta equal to what an empty object joined with it would be,
         * becomes the key's object as is: one decode, no merge. */
        if (!snapshot && type == CRDT_TIMELINE &&
            crdt_timeline_max_size(o) != rep_timeline_bound(r, key, klen)) {
            crdt_obj_t *obj = rep_new_object(r, type, key, klen);
            int rc = obj ? crdt_obj_merge(obj, o) : CRDT_ENOMEM;
            crdt_obj_free(o);
            if (rc < 0) {
                crdt_obj_free(obj);
                return rc;
            }
            o = obj;
        }
        id = rep_insert(r, key, klen, h, o);
        if (id == NO_ID) {
            crdt_obj_free(o);
            return CRDT_ENOMEM;
        }
        if (seq > r->keys[id].seq)
            r->keys[id].seq = seq;
        if (seq > r->last_seq)
            r->last_seq = seq;
        return 0;
    }
    int rc = join_decoded(r, id, seq, o);
    if (rc == 0 && seq > r->last_seq)
        r->last_seq = seq;
    return rc;
}

/* Joins a decoded object (taken) into key id and advances the seqs. */
static int join_decoded(crdt_replica_t *r, uint32_t id, uint64_t seq, crdt_obj_t *o)
{
    rep_key_t *k = &r->keys[id];
    if (crdt_obj_type(k->obj) != crdt_obj_type(o)) {
        /* Cannot come from this code's write path; keep what was there and say so. */
        fprintf(stderr, "crdtd replica: recovery skips a %s record for a %s key (seq %llu)\n",
                crdt_type_name(crdt_obj_type(o)), crdt_type_name(crdt_obj_type(k->obj)),
                (unsigned long long)seq);
        crdt_obj_free(o);
        return 0;
    }
    int rc = crdt_obj_merge(k->obj, o);
    crdt_obj_free(o);
    if (rc < 0)
        return rc;
    if (seq > k->seq)
        k->seq = seq;
    return 0;
}

int rep_replay_into(crdt_replica_t *r, uint32_t id, uint64_t seq, const uint8_t *enc, size_t elen,
                    crdt_error_t *err)
{
    crdt_error_t de;
    crdt_obj_t *o = crdt_obj_decode(enc, elen, &de);
    if (!o) {
        if (de.code == CRDT_ENOMEM)
            return CRDT_ENOMEM;
        rep_seterr(err, CRDT_EDECODE, "cannot decode an intact record (seq %llu): %s",
                   (unsigned long long)seq, de.text);
        return CRDT_EDECODE;
    }
    return join_decoded(r, id, seq, o);
}

static int feed_cmp(const void *a, const void *b)
{
    const rep_feed_ent_t *x = a, *y = b;
    return (x->seq > y->seq) - (x->seq < y->seq);
}

/* After recovery: one feed entry per key in seq order, every fingerprint to be computed. */
static int rebuild_indexes(crdt_replica_t *r)
{
    size_t cap = (size_t)r->nkeys + 256;
    rep_feed_ent_t *f = malloc(cap * sizeof(*f));
    if (!f)
        return CRDT_ENOMEM;
    for (uint32_t id = 0; id < r->nkeys; id++) {
        f[id] = (rep_feed_ent_t){r->keys[id].seq, id};
        rep_mark_dirty(r, id);
    }
    qsort(f, r->nkeys, sizeof(*f), feed_cmp);
    free(r->feed);
    r->feed = f;
    r->nfeed = r->nkeys;
    r->cap_feed = cap;
    return 0;
}

/* ---- lifecycle ------------------------------------------------------------------------------ */

void crdt_replica_config_init(crdt_replica_config_t *cfg)
{
    memset(cfg, 0, sizeof(*cfg));
    cfg->node_id = 1;
    cfg->fsync = CRDT_FSYNC_EVERYSEC;
    cfg->timeline_max_size = 1000;
    cfg->snapshot_log_bytes = 64ull << 20;
    cfg->load_threads = 2;
    cfg->max_clock_drift_ms = CRDT_REPLICA_MAX_CLOCK_DRIFT_MS;
}

uint64_t crdt_replica_keys_loading(const crdt_replica_t *r)
{
    return rep_load_pending(r);
}

void crdt_replica_wait_loaded(crdt_replica_t *r)
{
    rep_load_all(r);
}

static void free_replica(crdt_replica_t *r)
{
    rep_load_stop(r);
    for (uint32_t id = 0; id < r->nkeys; id++) {
        free(r->keys[id].key);
        crdt_obj_free(r->keys[id].obj);
    }
    rep_order_free(r);
    free(r->keys);
    free(r->slots);
    free(r->feed);
    free(r->dirty);
    crdt_buf_free(&r->scratch);
    crdt_obj_free(r->tl_delta);
    crdt_buf_free(&r->log.buf);
    free(r->log.old);
    if (r->lockfd >= 0)
        close(r->lockfd); /* releases the flock */
    if (r->dirfd >= 0)
        close(r->dirfd);
    free(r->dir);
    free(r);
}

crdt_replica_t *crdt_replica_open(const crdt_replica_config_t *cfg, crdt_error_t *err)
{
    if (err)
        memset(err, 0, sizeof(*err));
    if (!cfg || cfg->node_id < 1 || cfg->node_id > CRDT_REPLICA_MAX ||
        (unsigned)cfg->fsync > CRDT_FSYNC_NO) {
        rep_seterr(err, CRDT_EINVAL,
                   "invalid replica configuration (node id 1..2^63-1, fsync "
                   "always|everysec|no)");
        return NULL;
    }
    double t0 = rep_mono_s();
    crdt_replica_t *r = calloc(1, sizeof(*r));
    if (!r) {
        rep_seterr(err, CRDT_ENOMEM, "out of memory");
        return NULL;
    }
    r->cfg = *cfg;
    r->dirfd = r->lockfd = r->log.fd = r->log.idx.fd = -1;
    r->seed = fmix((uint64_t)(uintptr_t)r ^ ((uint64_t)getpid() << 32) ^ (uint64_t)time(NULL) ^
                   0x243F6A8885A308D3ull);
    crdt_hlc_init(&r->hlc, cfg->node_id, cfg->max_clock_drift_ms);
    r->rec_t0 = t0;
    int rc = 0;
    if (cfg->dir) {
        r->dir = strdup(cfg->dir);
        r->cfg.dir = r->dir;
        if (!r->dir) {
            rep_seterr(err, CRDT_ENOMEM, "out of memory");
            goto fail;
        }
        if (mkdir(r->dir, 0755) < 0 && errno != EEXIST) {
            rep_seterr(err, CRDT_EIO, "cannot create data directory %s: %s", r->dir,
                       strerror(errno));
            goto fail;
        }
        r->dirfd = open(r->dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        if (r->dirfd < 0) {
            rep_seterr(err, CRDT_EIO, "cannot open data directory %s: %s", r->dir, strerror(errno));
            goto fail;
        }
        if ((r->lockfd = rep_lock(r->dirfd, r->dir, err)) < 0)
            goto fail;
        if ((rc = rep_snapshot_load(r, err)) < 0 || (rc = rep_log_open(r, err)) < 0) {
            rep_seterr(err, rc, "%s", crdt_strerror(rc));
            goto fail;
        }
    }
    if (rebuild_indexes(r) < 0) {
        rep_seterr(err, CRDT_ENOMEM, "out of memory");
        goto fail;
    }
    if (rep_load_start(r, err) < 0)
        goto fail;
    r->log.buf_seq = r->log.written_seq = r->log.synced_seq = r->last_seq;
    /* (under policy no only the index's blocks use it: they wait for an fsync) */
    if (logging(r) && cfg->fsync != CRDT_FSYNC_ALWAYS && rep_syncer_start(r) < 0)
        fprintf(stderr, "crdtd replica: no background fsync thread; fsyncing inline\n");
    r->rec.seconds = rep_mono_s() - t0;
    if (r->rec.dropped_bytes)
        fprintf(stderr, "crdtd replica: recovery dropped %llu bytes: %s\n",
                (unsigned long long)r->rec.dropped_bytes, r->rec.dropped_reason);
    return r;
fail:
    rep_log_close(r);
    free_replica(r);
    return NULL;
}

void crdt_replica_close(crdt_replica_t *r)
{
    if (!r)
        return;
    if (logging(r)) {
        rep_snapshot_poll(r, true);
        rep_syncer_stop(r);
        if (!r->failed && rep_log_write(r) == 0 && rep_log_sync(r) == 0)
            rep_idx_flush(r, true); /* a clean stop leaves the whole log indexed */
    }
    rep_log_close(r);
    free_replica(r);
}

const crdt_recovery_report_t *crdt_replica_recovery(const crdt_replica_t *r)
{
    return &r->rec;
}

/* ---- durability ----------------------------------------------------------------------------- */

int crdt_replica_flush(crdt_replica_t *r)
{
    if (!logging(r))
        return 0;
    if (r->failed)
        return CRDT_EIO;
    if (rep_log_write(r) < 0)
        return CRDT_EIO;
    if (r->cfg.fsync == CRDT_FSYNC_ALWAYS && r->log.synced_seq < r->log.written_seq &&
        rep_log_sync(r) < 0)
        return CRDT_EIO;
    if (r->cfg.fsync == CRDT_FSYNC_EVERYSEC && rep_log_sync_everysec(r) < 0)
        return CRDT_EIO;
    rep_idx_flush(r, false);
    return 0;
}

uint64_t crdt_replica_durable_seq(const crdt_replica_t *r)
{
    if (!logging(r))
        return r->last_seq;
    return r->cfg.fsync == CRDT_FSYNC_ALWAYS ? r->log.synced_seq : r->log.written_seq;
}

void crdt_replica_tick(crdt_replica_t *r, uint64_t now_ms)
{
    /* Timing uses the replica's own CLOCK_MONOTONIC reading so that flush and tick agree
     * whatever clock the event loop keeps. */
    (void)now_ms;
    rep_load_poll(r);
    if (!logging(r))
        return;
    rep_snapshot_poll(r, false);
    if (r->failed)
        return;
    if (r->log.buf.len && rep_log_write(r) < 0)
        return;
    if (r->cfg.fsync == CRDT_FSYNC_EVERYSEC && rep_log_sync_everysec(r) < 0)
        return;
    rep_idx_flush(r, false);
    uint64_t now = rep_mono_ms();
    /* not while keys are loading: the fork would have to wait for all of them */
    if (r->cfg.snapshot_log_bytes && !r->snap.pid && !r->load && now >= r->snap.retry_after_ms &&
        r->log.old_bytes + r->log.seg_bytes >= r->cfg.snapshot_log_bytes)
        rep_snapshot_start(r);
}

int crdt_replica_snapshot(crdt_replica_t *r)
{
    if (!logging(r))
        return 0;
    return rep_snapshot_start(r);
}

void crdt_replica_stats(const crdt_replica_t *r, crdt_replica_stats_t *st)
{
    *st = r->st;
    st->keys = r->nkeys;
    st->internal_keys = 0;
    for (int t = 0; t <= CRDT_TYPE_MAX; t++) {
        st->keys_by_type[t] = r->keys_by_type[t] - r->internal_by_type[t];
        st->internal_keys += r->internal_by_type[t];
    }
    st->keys -= st->internal_keys;
    st->log_bytes = logging(r) ? r->log.old_bytes + r->log.seg_bytes : 0;
    st->snapshot_running = r->snap.pid != 0;
}
