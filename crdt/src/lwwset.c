/* lwwset.c - LWW-element-set with roshi semantics, and the public set queries for both set types */
#include <stdio.h>
#include <stdlib.h>

#include "crdt_json.h"
#include "crdt_private.h"

/* One member's entry. Members are never dropped (a removal keeps a tombstone that must keep
 * blocking older adds), so entries live in one flat array, their bytes in one blob store, and an
 * entry's index is its id for the hash index: no allocation per member. 32 bytes an entry. */
typedef struct entry {
    uint64_t ms;
    uint64_t node;
    uint32_t logical;
    uint32_t off; /* member bytes at blobs.data + off */
    uint32_t len;
    uint8_t live; /* 1 added, 0 removed (tombstone) */
} entry_t;

typedef struct lwwset {
    crdt_obj_t obj;
    entry_t *e;
    uint32_t n, cap; /* entries used / allocated */
    uint32_t *order; /* ids sorted by member bytes, for ordered reads and the encoding */
    uint32_t ocap;
    uint32_t live;       /* live entries; n - live are tombstones */
    crdt__hidx_t idx;    /* member bytes -> id */
    crdt__blobs_t blobs; /* member bytes */
} lwwset_t;

/* The most entries one set holds: ids are uint32 and the index needs one id spare. */
#define MAX_ENTRIES (UINT32_MAX - 2u)

static bool ts_ok(const crdt_hlc_ts_t *ts)
{
    /* a real writer, and an ms JSON keeps exact, so every admitted state round-trips */
    return crdt__replica_ok(ts->node) && ts->ms <= (uint64_t)INT64_MAX;
}

static crdt_hlc_ts_t entry_ts(const entry_t *e)
{
    return (crdt_hlc_ts_t){e->ms, e->logical, e->node};
}

static const uint8_t *member_of(const lwwset_t *s, uint32_t id)
{
    /* an empty store has no buffer; hand out a valid pointer for empty members anyway */
    return s->blobs.data ? s->blobs.data + s->e[id].off : (const uint8_t *)"";
}

static void key_fn(const void *ctx, uint32_t id, const uint8_t **key, size_t *len)
{
    const lwwset_t *s = ctx;
    *key = member_of(s, id);
    *len = s->e[id].len;
}

static uint32_t find(const lwwset_t *s, const void *m, size_t len)
{
    if (len > CRDT_MAX_BLOB)
        return CRDT__NO_ID;
    return crdt__hidx_find(&s->idx, m ? m : "", len, key_fn, s);
}

static int cmp_ids(const lwwset_t *s, uint32_t a, uint32_t b)
{
    return crdt__bytes_cmp(member_of(s, a), s->e[a].len, member_of(s, b), s->e[b].len);
}

/* True when the write (ts, live) beats entry e: the greater timestamp wins, and at equal
 * timestamps a remove beats an add. (ts, removed) ordered lexicographically is a total order, so
 * keeping the greater of the two is a join. */
static bool beats(const entry_t *e, const crdt_hlc_ts_t *ts, bool live)
{
    crdt_hlc_ts_t cur = entry_ts(e);
    int c = crdt_hlc_cmp(ts, &cur);
    return c > 0 || (c == 0 && e->live && !live);
}

static void overwrite(lwwset_t *s, uint32_t id, const crdt_hlc_ts_t *ts, bool live)
{
    entry_t *e = &s->e[id];
    s->live = s->live - e->live + (live ? 1u : 0u);
    e->ms = ts->ms;
    e->logical = ts->logical;
    e->node = ts->node;
    e->live = live ? 1 : 0;
}

/* Makes room for `more` new entries in every array, so the appends that follow cannot fail on
 * anything but the blob store. Reserving changes no state. */
static int reserve(lwwset_t *s, size_t more)
{
    if (more > MAX_ENTRIES - s->n)
        return CRDT_ENOMEM;
    uint32_t need = s->n + (uint32_t)more;
    if (need > s->cap) {
        size_t cap = crdt__grow_cap(s->cap, need);
        if (cap > MAX_ENTRIES)
            cap = MAX_ENTRIES;
        entry_t *e = crdt__realloc(s->e, cap * sizeof(entry_t));
        if (!e)
            return CRDT_ENOMEM;
        s->e = e;
        s->cap = (uint32_t)cap;
    }
    if (need > s->ocap) {
        size_t cap = crdt__grow_cap(s->ocap, need);
        if (cap > MAX_ENTRIES)
            cap = MAX_ENTRIES;
        uint32_t *o = crdt__realloc(s->order, cap * sizeof(uint32_t));
        if (!o)
            return CRDT_ENOMEM;
        s->order = o;
        s->ocap = (uint32_t)cap;
    }
    return crdt__hidx_reserve(&s->idx, need, key_fn, s);
}

/* Appends a member known to be absent, as id s->n, without placing it in `order` (see
 * place_new). Needs reserve() first. 0 or CRDT_ENOMEM / CRDT_EINVAL with s unchanged. */
static int append(lwwset_t *s, const void *m, size_t len, const crdt_hlc_ts_t *ts, bool live)
{
    uint32_t off, id = s->n;
    int rc = crdt__blobs_add(&s->blobs, m, len, &off);
    if (rc < 0)
        return rc;
    s->e[id] = (entry_t){ts->ms, ts->node, ts->logical, off, (uint32_t)len, live ? 1 : 0};
    if (crdt__hidx_insert(&s->idx, id, key_fn, s) < 0) {
        s->blobs.len = off; /* it was the last blob added: take it back */
        return CRDT_ENOMEM;
    }
    s->n++;
    s->live += live ? 1u : 0u;
    return 0;
}

/* Puts ids first..n-1, appended in ascending member order, into their places in `order`, whose
 * first `first` slots are sorted. Works back to front in place: each new id's position among the
 * old ones is a binary search, and only the old ids above it move. */
static void place_new(lwwset_t *s, uint32_t first)
{
    uint32_t old_end = first, k = s->n;
    for (uint32_t j = s->n; j-- > first;) {
        uint32_t lo = 0, hi = old_end;
        while (lo < hi) {
            uint32_t mid = lo + (hi - lo) / 2;
            if (cmp_ids(s, s->order[mid], j) < 0)
                lo = mid + 1;
            else
                hi = mid;
        }
        uint32_t moving = old_end - lo;
        k -= moving;
        memmove(s->order + k, s->order + lo, moving * sizeof(uint32_t));
        old_end = lo;
        s->order[--k] = j;
    }
}

/* The write (m, ts, live) joined into s: 1 changed, 0 not, CRDT_ENOMEM (s unchanged). */
static int apply(lwwset_t *s, const void *m, size_t len, const crdt_hlc_ts_t *ts, bool live)
{
    uint32_t id = find(s, m, len);
    if (id != CRDT__NO_ID) {
        if (!beats(&s->e[id], ts, live))
            return 0;
        overwrite(s, id, ts, live);
        return 1;
    }
    int rc = reserve(s, 1);
    if (rc == 0)
        rc = append(s, m, len, ts, live);
    if (rc < 0)
        return rc == CRDT_EINVAL ? CRDT_ENOMEM : rc;
    place_new(s, s->n - 1);
    return 1;
}

static crdt_obj_t *lwwset_create(void)
{
    lwwset_t *s = crdt__calloc(1, sizeof(*s));
    if (!s)
        return NULL;
    s->obj.vt = &crdt__lwwset_vt;
    crdt__hidx_init(&s->idx);
    return &s->obj;
}

static void lwwset_destroy(crdt_obj_t *o)
{
    lwwset_t *s = (lwwset_t *)o;
    crdt__free(s->e);
    crdt__free(s->order);
    crdt__hidx_free(&s->idx);
    crdt__blobs_free(&s->blobs);
    crdt__free(s);
}

static crdt_obj_t *lwwset_clone(const crdt_obj_t *o)
{
    const lwwset_t *src = (const lwwset_t *)o;
    lwwset_t *s = (lwwset_t *)lwwset_create();
    if (!s)
        return NULL;
    if (!src->n)
        return &s->obj;
    /* Copy the arrays as they are; the index too, with its seed, so nothing is rehashed. */
    s->e = crdt__malloc(src->n * sizeof(entry_t));
    s->order = crdt__malloc(src->n * sizeof(uint32_t));
    s->idx.slots = crdt__malloc(crdt__hidx_memory(&src->idx));
    s->blobs.data = src->blobs.len ? crdt__malloc(src->blobs.len) : NULL;
    if (!s->e || !s->order || !s->idx.slots || (src->blobs.len && !s->blobs.data)) {
        lwwset_destroy(&s->obj);
        return NULL;
    }
    memcpy(s->e, src->e, src->n * sizeof(entry_t));
    memcpy(s->order, src->order, src->n * sizeof(uint32_t));
    memcpy(s->idx.slots, src->idx.slots, crdt__hidx_memory(&src->idx));
    if (src->blobs.len)
        memcpy(s->blobs.data, src->blobs.data, src->blobs.len);
    s->n = s->cap = s->ocap = src->n;
    s->live = src->live;
    s->idx.mask = src->idx.mask;
    s->idx.count = src->idx.count;
    s->idx.seed = src->idx.seed;
    s->blobs.len = s->blobs.cap = src->blobs.len;
    s->blobs.garbage = 0;
    return &s->obj;
}

static int lwwset_merge(crdt_obj_t *dst, const crdt_obj_t *src)
{
    lwwset_t *d = (lwwset_t *)dst;
    const lwwset_t *s = (const lwwset_t *)src;
    if (!s->n)
        return 0;
    /* Reserve for the worst case (all of src new) so only the blob store can fail midway. */
    if (reserve(d, s->n) < 0)
        return CRDT_ENOMEM;
    uint32_t first = d->n;
    int changed = 0, rc = 0;
    /* Walking src in member order appends new members in ascending order, as place_new needs. */
    for (uint32_t i = 0; i < s->n; i++) {
        uint32_t sid = s->order[i];
        const entry_t *se = &s->e[sid];
        crdt_hlc_ts_t ts = entry_ts(se);
        const uint8_t *m = member_of(s, sid);
        uint32_t id = find(d, m, se->len);
        if (id == CRDT__NO_ID) {
            if ((rc = append(d, m, se->len, &ts, se->live)) < 0)
                break; /* what joined so far is below the full join: still a valid state */
            changed = 1;
        } else if (beats(&d->e[id], &ts, se->live)) {
            overwrite(d, id, &ts, se->live);
            changed = 1;
        }
    }
    place_new(d, first);
    return rc < 0 ? CRDT_ENOMEM : changed;
}

static bool lwwset_equal(const crdt_obj_t *a, const crdt_obj_t *b)
{
    const lwwset_t *x = (const lwwset_t *)a, *y = (const lwwset_t *)b;
    if (x->n != y->n || x->live != y->live)
        return false;
    for (uint32_t i = 0; i < x->n; i++) {
        const entry_t *p = &x->e[x->order[i]], *q = &y->e[y->order[i]];
        if (p->ms != q->ms || p->logical != q->logical || p->node != q->node ||
            p->live != q->live ||
            crdt__bytes_cmp(member_of(x, x->order[i]), p->len, member_of(y, y->order[i]), q->len) !=
                0)
            return false;
    }
    return true;
}

static bool lwwset_is_empty(const crdt_obj_t *o)
{
    return ((const lwwset_t *)o)->n == 0;
}

static void lwwset_stats(const crdt_obj_t *o, crdt_stats_t *st)
{
    const lwwset_t *s = (const lwwset_t *)o;
    st->entries = s->live;
    st->tombstones = s->n - s->live;
    st->memory = sizeof(*s) + (size_t)s->cap * sizeof(entry_t) +
                 (size_t)s->ocap * sizeof(uint32_t) + crdt__hidx_memory(&s->idx) + s->blobs.cap;
}

/* varint n; n x (blob member, hlc, u8 live), members strictly ascending bytewise. */
static void lwwset_encode(const crdt_obj_t *o, crdt__writer_t *w)
{
    const lwwset_t *s = (const lwwset_t *)o;
    crdt__wr_varint(w, s->n);
    for (uint32_t i = 0; i < s->n; i++) {
        uint32_t id = s->order[i];
        crdt_hlc_ts_t ts = entry_ts(&s->e[id]);
        crdt__wr_blob(w, member_of(s, id), s->e[id].len);
        crdt__wr_hlc(w, &ts);
        crdt__wr_u8(w, s->e[id].live);
    }
}

/* Appends a member that sorts after every member s holds (the codecs check that), keeping
 * `order` sorted with no search. */
static int append_last(lwwset_t *s, const void *m, size_t len, const crdt_hlc_ts_t *ts, bool live)
{
    int rc = reserve(s, 1);
    if (rc == 0)
        rc = append(s, m, len, ts, live);
    if (rc == 0)
        s->order[s->n - 1] = s->n - 1;
    return rc;
}

static crdt_obj_t *lwwset_decode(crdt__reader_t *r)
{
    uint64_t n;
    /* an entry takes at least 5 bytes (length, ms, logical, node, flag) */
    if (crdt__rd_count(r, (r->len - r->pos) / 5, "member count", &n) < 0)
        return NULL;
    lwwset_t *s = (lwwset_t *)lwwset_create();
    if (!s || reserve(s, (size_t)n) < 0)
        goto nomem;
    const uint8_t *prev = NULL;
    size_t prev_len = 0;
    for (uint64_t i = 0; i < n; i++) {
        const uint8_t *m;
        size_t len, at = r->pos;
        crdt_hlc_ts_t ts;
        uint8_t live;
        if (crdt__rd_blob(r, &m, &len) < 0)
            goto fail;
        if (i > 0 && crdt__bytes_cmp(prev, prev_len, m, len) >= 0) {
            r->pos = at;
            crdt__fail(r,
                       "lwwset member %llu: not above the previous member (members must be "
                       "unique and in ascending byte order)",
                       (unsigned long long)i);
            goto fail;
        }
        at = r->pos;
        if (crdt__rd_hlc(r, &ts) < 0)
            goto fail;
        if (!ts_ok(&ts)) {
            r->pos = at;
            crdt__fail(r, "lwwset member %llu: timestamp %s", (unsigned long long)i,
                       ts.node == 0 ? "node 0 is reserved" : "ms beyond INT64_MAX");
            goto fail;
        }
        if (crdt__rd_u8(r, &live) < 0)
            goto fail;
        if (live > 1) {
            r->pos--;
            crdt__fail(r, "lwwset member %llu: live flag %u is neither 0 nor 1",
                       (unsigned long long)i, live);
            goto fail;
        }
        int rc = append_last(s, m, len, &ts, live);
        if (rc == CRDT_EINVAL) {
            crdt__fail(r, "lwwset: members exceed 4 GiB in all");
            goto fail;
        }
        if (rc < 0)
            goto nomem;
        prev = m;
        prev_len = len;
    }
    return &s->obj;
nomem:
    crdt__nomem(r);
fail:
    if (s)
        lwwset_destroy(&s->obj);
    return NULL;
}

/* {"members":[{"member":bytes,"ts":{"ms","c","node"},"live":bool}...]} in member order. */
static json_t *lwwset_to_json(const crdt_obj_t *o)
{
    const lwwset_t *s = (const lwwset_t *)o;
    json_t *a = json_array();
    if (!a)
        return NULL;
    for (uint32_t i = 0; i < s->n; i++) {
        uint32_t id = s->order[i];
        crdt_hlc_ts_t ts = entry_ts(&s->e[id]);
        json_t *m = crdt__json_blob(member_of(s, id), s->e[id].len);
        json_t *t = m ? crdt_hlc_to_json(&ts) : NULL;
        json_t *e =
            t ? json_pack("{s:o,s:o,s:b}", "member", m, "ts", t, "live", (int)s->e[id].live) : NULL;
        if (!e) {
            if (!t)
                json_decref(m);
            json_decref(a);
            return NULL;
        }
        if (json_array_append_new(a, e) < 0) {
            json_decref(a);
            return NULL;
        }
    }
    return json_pack("{s:o}", "members", a);
}

static crdt_obj_t *lwwset_from_json(const json_t *state, crdt_error_t *err)
{
    if (!json_is_object(state))
        return crdt__json_fail(err, "state: expected an object {\"members\":[...]}");
    const json_t *a = json_object_get(state, "members");
    if (!json_is_array(a))
        return crdt__json_fail(err, "members: expected an array");
    if (json_object_size(state) != 1)
        return crdt__json_fail(err, "state: unexpected fields beside members");
    lwwset_t *s = (lwwset_t *)lwwset_create();
    if (!s)
        return NULL;
    uint8_t *prev = NULL, *m = NULL;
    size_t prev_len = 0, len = 0;
    for (size_t i = 0; i < json_array_size(a); i++) {
        const json_t *e = json_array_get(a, i);
        char field[64];
        crdt_hlc_ts_t ts;
        if (!json_is_object(e)) {
            crdt__json_fail(err, "members[%zu]: expected an object {\"member\",\"ts\",\"live\"}",
                            i);
            goto fail;
        }
        snprintf(field, sizeof(field), "members[%zu].member", i);
        if (crdt__json_get_blob(json_object_get(e, "member"), field, &m, &len, err) < 0)
            goto fail;
        if (i > 0 && crdt__bytes_cmp(prev, prev_len, m, len) >= 0) {
            crdt__json_fail(err, "%s: members must be unique and in ascending byte order", field);
            goto fail;
        }
        snprintf(field, sizeof(field), "members[%zu].ts", i);
        if (crdt__json_get_hlc(json_object_get(e, "ts"), field, &ts, err) < 0)
            goto fail;
        if (!ts_ok(&ts)) {
            crdt__json_fail(err, "%s.node: must be 1..%llu", field,
                            (unsigned long long)CRDT_REPLICA_MAX);
            goto fail;
        }
        const json_t *live = json_object_get(e, "live");
        if (!json_is_boolean(live)) {
            crdt__json_fail(err, "members[%zu].live: expected true or false", i);
            goto fail;
        }
        if (json_object_size(e) != 3) {
            crdt__json_fail(err, "members[%zu]: unexpected fields beside member, ts and live", i);
            goto fail;
        }
        if (append_last(s, m, len, &ts, json_is_true(live)) < 0) {
            crdt__json_fail(err, "members[%zu]: too many or too large members", i);
            goto fail;
        }
        crdt__free(prev);
        prev = m;
        prev_len = len;
        m = NULL;
    }
    crdt__free(prev);
    return &s->obj;
fail:
    crdt__free(prev);
    crdt__free(m);
    lwwset_destroy(&s->obj);
    return NULL;
}

static int lwwset_max_ts(const crdt_obj_t *o, crdt_hlc_ts_t *out)
{
    const lwwset_t *s = (const lwwset_t *)o;
    if (s->n == 0)
        return 0;
    crdt_hlc_ts_t best = entry_ts(&s->e[0]);
    for (uint32_t id = 1; id < s->n; id++) {
        crdt_hlc_ts_t ts = entry_ts(&s->e[id]);
        if (crdt_hlc_cmp(&ts, &best) > 0)
            best = ts;
    }
    *out = best;
    return 1;
}

const crdt__vtable_t crdt__lwwset_vt = {
    .type = CRDT_LWWSET,
    .name = "lwwset",
    .create = lwwset_create,
    .destroy = lwwset_destroy,
    .clone = lwwset_clone,
    .merge = lwwset_merge,
    .equal = lwwset_equal,
    .is_empty = lwwset_is_empty,
    .stats = lwwset_stats,
    .encode = lwwset_encode,
    .decode = lwwset_decode,
    .to_json = lwwset_to_json,
    .from_json = lwwset_from_json,
    .max_ts = lwwset_max_ts,
};

/* add and remove: one write of (m, ts, live) under the shared mutator contract */
static int write_member(crdt_obj_t *o, const void *m, size_t len, const crdt_hlc_ts_t *ts,
                        bool live, crdt_obj_t **delta)
{
    if (delta)
        *delta = NULL;
    if (!o || o->vt != &crdt__lwwset_vt)
        return CRDT_ETYPE;
    if (!ts || !ts_ok(ts) || len > CRDT_MAX_BLOB || (!m && len))
        return CRDT_EINVAL;
    lwwset_t *s = (lwwset_t *)o;
    uint32_t id = find(s, m, len);
    if (id != CRDT__NO_ID && !beats(&s->e[id], ts, live))
        return 0; /* lost to what is there, or wrote what is there: report it as the no-op it is */
    crdt_obj_t *d = NULL;
    if (delta) {
        d = lwwset_create();
        if (!d || apply((lwwset_t *)d, m, len, ts, live) < 0) {
            crdt_obj_free(d);
            return CRDT_ENOMEM;
        }
    }
    if (id != CRDT__NO_ID) {
        overwrite(s, id, ts, live);
    } else if (apply(s, m, len, ts, live) < 0) {
        crdt_obj_free(d);
        return CRDT_ENOMEM;
    }
    if (delta)
        *delta = d;
    return 1;
}

int crdt_lwwset_add(crdt_obj_t *s, const void *m, size_t len, const crdt_hlc_ts_t *ts,
                    crdt_obj_t **delta)
{
    return write_member(s, m, len, ts, true, delta);
}

int crdt_lwwset_remove(crdt_obj_t *s, const void *m, size_t len, const crdt_hlc_ts_t *ts,
                       crdt_obj_t **delta)
{
    return write_member(s, m, len, ts, false, delta);
}

int crdt__lwwset_delete(crdt_obj_t *o, const crdt_hlc_ts_t *ts, crdt_obj_t **delta)
{
    if (delta)
        *delta = NULL;
    if (!o || o->vt != &crdt__lwwset_vt)
        return CRDT_ETYPE;
    if (!ts || !ts_ok(ts))
        return CRDT_EINVAL;
    lwwset_t *s = (lwwset_t *)o;
    uint32_t hit = 0;
    for (uint32_t id = 0; id < s->n; id++)
        hit += s->e[id].live && beats(&s->e[id], ts, false);
    if (!hit)
        return 0;
    if (delta) {
        /* tombstones of what this remove beats, in member order (so appends keep `order`) */
        lwwset_t *d = (lwwset_t *)lwwset_create();
        if (!d || reserve(d, hit) < 0)
            goto nomem;
        for (uint32_t i = 0; i < s->n; i++) {
            uint32_t id = s->order[i];
            if (!s->e[id].live || !beats(&s->e[id], ts, false))
                continue;
            if (append(d, member_of(s, id), s->e[id].len, ts, false) < 0)
                goto nomem;
            d->order[d->n - 1] = d->n - 1;
        }
        *delta = &d->obj;
        goto apply;
    nomem:
        if (d)
            lwwset_destroy(&d->obj);
        return CRDT_ENOMEM;
    }
apply:
    for (uint32_t id = 0; id < s->n; id++)
        if (s->e[id].live && beats(&s->e[id], ts, false))
            overwrite(s, id, ts, false);
    return 1;
}

/* ---- set queries: LWW-sets here, OR-Sets through orset.c ------------------------------------ */

int crdt_set_contains(const crdt_obj_t *o, const void *m, size_t len)
{
    if (!o)
        return CRDT_ETYPE;
    if (!m && len)
        return CRDT_EINVAL;
    if (o->vt == &crdt__orset_vt)
        return crdt__orset_contains(o, m, len);
    if (o->vt != &crdt__lwwset_vt)
        return CRDT_ETYPE;
    const lwwset_t *s = (const lwwset_t *)o;
    uint32_t id = find(s, m, len);
    return id != CRDT__NO_ID && s->e[id].live;
}

int crdt__lwwset_member_ts(const crdt_obj_t *o, const void *m, size_t len, crdt_hlc_ts_t *ts)
{
    const lwwset_t *s = (const lwwset_t *)o;
    uint32_t id = find(s, m, len);
    if (id == CRDT__NO_ID)
        return 0;
    *ts = entry_ts(&s->e[id]);
    return 1;
}

size_t crdt_set_size(const crdt_obj_t *o)
{
    if (o && o->vt == &crdt__orset_vt)
        return crdt__orset_size(o);
    if (o && o->vt == &crdt__lwwset_vt)
        return ((const lwwset_t *)o)->live;
    return 0;
}

int crdt_set_foreach(const crdt_obj_t *o, crdt_member_cb cb, void *ud)
{
    if (!o)
        return CRDT_ETYPE;
    if (!cb)
        return CRDT_EINVAL;
    if (o->vt == &crdt__orset_vt)
        return crdt__orset_foreach(o, cb, ud);
    if (o->vt != &crdt__lwwset_vt)
        return CRDT_ETYPE;
    const lwwset_t *s = (const lwwset_t *)o;
    for (uint32_t i = 0; i < s->n; i++) {
        uint32_t id = s->order[i];
        if (!s->e[id].live)
            continue;
        int rc = cb(member_of(s, id), s->e[id].len, ud);
        if (rc)
            return rc;
    }
    return 0;
}
