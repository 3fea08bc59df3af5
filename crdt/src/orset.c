/* orset.c - add-wins OR-Set with a compact causal context (delta-state, tombstone-free) */
#include <stdio.h>
#include <stdlib.h>

#include "crdt_private.h"

/*
 * State (Almeida, Shoker, Baquero, "Delta State Replicated Data Types"): a set of (member, dot)
 * pairs plus a causal context CC, the set of every dot this state has seen. A removed member leaves
 * no tombstone: its dots stay in the CC only, which is what lets a join tell "removed here" from
 * "not yet seen here". The CC is kept compact and canonical: a version vector (replica -> highest
 * contiguous seq, entries with seq >= 1, replicas ascending) plus a cloud of dots beyond it, sorted
 * by (replica, seq), each cloud dot > vv[replica] + 1 (anything else is folded into the vv).
 *
 * Layout: entries in one flat pool (dense, swap-removed), member bytes in a blob store, a hash
 * index of entry ids by member. An entry almost always has one dot, kept inline; entries with
 * several (concurrent adds merged) keep them, ascending, in one shared array `xdots`.
 *
 * Sequence numbers are 1..INT64_MAX so they stay exact as JSON integers.
 */

#define SEQ_MAX ((uint64_t)INT64_MAX)

typedef struct entry {
    uint32_t off; /* member bytes in blobs */
    uint32_t len;
    uint32_t ndots; /* >= 1 */
    uint32_t xoff;  /* ndots > 1: first dot in xdots */
    crdt_dot_t dot; /* ndots == 1 */
} entry_t;

typedef struct cc {
    crdt_dot_t *vv; /* (replica, highest contiguous seq), replicas ascending */
    size_t nvv, capvv;
    crdt_dot_t *cloud; /* ascending by (replica, seq) */
    size_t ncloud, capcloud;
} cc_t;

typedef struct orset {
    crdt_obj_t obj;
    entry_t *e;
    uint32_t n, cap;
    crdt_dot_t *xdots;
    size_t xlen, xcap, xgarbage;
    crdt__blobs_t blobs;
    crdt__hidx_t idx;
    /* dot -> (entry id, position among its dots), so a delta's context finds the dots it removes
     * without a scan of every entry. Slot: 0 empty, else (id + 1) << 32 | position. */
    uint64_t *dslots;
    uint32_t dmask, dcount;
    uint64_t dseed;
    cc_t cc;
} orset_t;

#define OS(o) ((orset_t *)(o))
#define COS(o) ((const orset_t *)(o))

static void orset_destroy(crdt_obj_t *o);

/* ---- small helpers -------------------------------------------------------------------------- */

static int dot_cmp(const crdt_dot_t *a, const crdt_dot_t *b)
{
    if (a->replica != b->replica)
        return a->replica < b->replica ? -1 : 1;
    return (a->seq > b->seq) - (a->seq < b->seq);
}

static const crdt_dot_t *entry_dots(const orset_t *s, const entry_t *e)
{
    return e->ndots == 1 ? &e->dot : s->xdots + e->xoff;
}

static const uint8_t *entry_key(const orset_t *s, const entry_t *e)
{
    return s->blobs.data ? s->blobs.data + e->off : (const uint8_t *)"";
}

static void key_fn(const void *ctx, uint32_t id, const uint8_t **key, size_t *len)
{
    const orset_t *s = ctx;
    *key = entry_key(s, &s->e[id]);
    *len = s->e[id].len;
}

static uint32_t find(const orset_t *s, const void *m, size_t len)
{
    return crdt__hidx_find(&s->idx, m, len, key_fn, s);
}

/* ---- the dot index ---------------------------------------------------------------------------
 * Keys are read from the entries, so the index must be updated while they still hold what it
 * says: remove a dot before it leaves its entry, insert after it arrives. Moving a dot (entry
 * swapped into another slot, position shifted) rewrites its slot by value. */

static uint64_t dot_hash(const orset_t *s, const crdt_dot_t *d)
{
    uint64_t k[2] = {d->replica, d->seq};
    return crdt_hash64(k, sizeof(k), s->dseed);
}

static uint64_t dval(uint32_t id, uint32_t pos)
{
    return ((uint64_t)id + 1) << 32 | pos;
}

static const crdt_dot_t *dslot_dot(const orset_t *s, uint64_t v)
{
    const entry_t *e = &s->e[(uint32_t)(v >> 32) - 1];
    return &entry_dots(s, e)[(uint32_t)v];
}

/* The slot holding dot d, or UINT32_MAX. */
static uint32_t di_find(const orset_t *s, const crdt_dot_t *d)
{
    if (!s->dcount)
        return UINT32_MAX;
    for (uint32_t i = (uint32_t)dot_hash(s, d) & s->dmask;; i = (i + 1) & s->dmask) {
        uint64_t v = s->dslots[i];
        if (!v)
            return UINT32_MAX;
        if (dot_cmp(dslot_dot(s, v), d) == 0)
            return i;
    }
}

static void di_place(orset_t *s, uint64_t v, uint64_t hash)
{
    uint32_t i = (uint32_t)hash & s->dmask;
    while (s->dslots[i])
        i = (i + 1) & s->dmask;
    s->dslots[i] = v;
}

/* Room for n dots at a load of at most 3/4. 0 or CRDT_ENOMEM. */
static int di_reserve(orset_t *s, size_t n)
{
    uint64_t need = (uint64_t)n + n / 3 + 1, cap = 16;
    if (s->dslots && need <= (uint64_t)s->dmask + 1)
        return 0;
    while (cap < need)
        cap <<= 1;
    if (cap > (1ull << 31))
        return CRDT_ENOMEM;
    uint64_t *old = s->dslots;
    uint32_t oldcap = old ? s->dmask + 1 : 0;
    uint64_t *slots = crdt__calloc((size_t)cap, sizeof(uint64_t));
    if (!slots)
        return CRDT_ENOMEM;
    s->dslots = slots;
    s->dmask = (uint32_t)cap - 1;
    for (uint32_t i = 0; i < oldcap; i++)
        if (old[i])
            di_place(s, old[i], dot_hash(s, dslot_dot(s, old[i])));
    crdt__free(old);
    return 0;
}

/* Inserts dot `pos` of entry id (present there now); di_reserve made the room. */
static void di_insert(orset_t *s, uint32_t id, uint32_t pos)
{
    uint64_t v = dval(id, pos);
    di_place(s, v, dot_hash(s, dslot_dot(s, v)));
    s->dcount++;
}

/* Rewrites the slot of dot d from value `from` to `to` (no key is read: d may be in motion). */
static void di_move(orset_t *s, const crdt_dot_t *d, uint64_t from, uint64_t to)
{
    if (from == to)
        return;
    for (uint32_t i = (uint32_t)dot_hash(s, d) & s->dmask;; i = (i + 1) & s->dmask) {
        if (s->dslots[i] == from) {
            s->dslots[i] = to;
            return;
        }
    }
}

/* Removes dot d (present, its entry still holding it). Backward shift: no tombstones. */
static void di_remove(orset_t *s, const crdt_dot_t *d)
{
    uint32_t hole = di_find(s, d);
    if (hole == UINT32_MAX)
        return;
    for (uint32_t i = (hole + 1) & s->dmask;; i = (i + 1) & s->dmask) {
        uint64_t v = s->dslots[i];
        if (!v)
            break;
        uint32_t home = (uint32_t)dot_hash(s, dslot_dot(s, v)) & s->dmask;
        bool stays = (hole <= i) ? (home > hole && home <= i) : (home > hole || home <= i);
        if (!stays) {
            s->dslots[hole] = v;
            hole = i;
        }
    }
    s->dslots[hole] = 0;
    s->dcount--;
}

/* Grows *p (elements of `size` bytes) to hold `need`; 0 or CRDT_ENOMEM. */
static int reserve(void **p, size_t *cap, size_t need, size_t size)
{
    if (need <= *cap)
        return 0;
    size_t c = crdt__grow_cap(*cap, need);
    if (c > SIZE_MAX / size)
        return CRDT_ENOMEM;
    void *q = crdt__realloc(*p, c * size);
    if (!q)
        return CRDT_ENOMEM;
    *p = q;
    *cap = c;
    return 0;
}

static int reserve_entries(orset_t *s, size_t need)
{
    if (need > UINT32_MAX - 1)
        return CRDT_ENOMEM;
    size_t cap = s->cap;
    int rc = reserve((void **)&s->e, &cap, need, sizeof(entry_t));
    if (rc == 0) {
        if (cap > UINT32_MAX)
            cap = UINT32_MAX;
        s->cap = (uint32_t)cap;
        rc = crdt__hidx_reserve(&s->idx, (uint32_t)need, key_fn, s);
    }
    return rc;
}

static int reserve_blobs(crdt__blobs_t *b, size_t extra)
{
    if (extra > UINT32_MAX - b->len)
        return CRDT_EINVAL;
    size_t need = (size_t)b->len + extra;
    if (need <= b->cap)
        return 0;
    size_t cap = crdt__grow_cap(b->cap, need);
    if (cap > UINT32_MAX)
        cap = UINT32_MAX;
    uint8_t *d = crdt__realloc(b->data, cap);
    if (!d)
        return CRDT_ENOMEM;
    b->data = d;
    b->cap = (uint32_t)cap;
    return 0;
}

/* ---- causal context ------------------------------------------------------------------------- */

static void cc_free(cc_t *c)
{
    crdt__free(c->vv);
    crdt__free(c->cloud);
    memset(c, 0, sizeof(*c));
}

/* Index of replica r in the vv, or -1. */
static ptrdiff_t vv_find(const cc_t *c, uint64_t r)
{
    size_t lo = 0, hi = c->nvv;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (c->vv[mid].replica < r)
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo < c->nvv && c->vv[lo].replica == r ? (ptrdiff_t)lo : -1;
}

static uint64_t vv_get(const cc_t *c, uint64_t r)
{
    ptrdiff_t i = vv_find(c, r);
    return i < 0 ? 0 : c->vv[i].seq;
}

/* First cloud index whose dot is >= d. */
static size_t cloud_lower(const cc_t *c, const crdt_dot_t *d)
{
    size_t lo = 0, hi = c->ncloud;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (dot_cmp(&c->cloud[mid], d) < 0)
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo;
}

static bool cc_contains(const cc_t *c, const crdt_dot_t *d)
{
    if (d->seq <= vv_get(c, d->replica))
        return true;
    size_t i = cloud_lower(c, d);
    return i < c->ncloud && dot_cmp(&c->cloud[i], d) == 0;
}

/* The highest seq of replica r the context has seen, cloud included. */
static uint64_t cc_max(const cc_t *c, uint64_t r)
{
    crdt_dot_t past = {r, UINT64_MAX};
    size_t i = cloud_lower(c, &past);
    if (i > 0 && c->cloud[i - 1].replica == r)
        return c->cloud[i - 1].seq;
    return vv_get(c, r);
}

static bool cc_equal(const cc_t *a, const cc_t *b)
{
    return a->nvv == b->nvv && a->ncloud == b->ncloud &&
           (a->nvv == 0 || memcmp(a->vv, b->vv, a->nvv * sizeof(crdt_dot_t)) == 0) &&
           (a->ncloud == 0 || memcmp(a->cloud, b->cloud, a->ncloud * sizeof(crdt_dot_t)) == 0);
}

/* out = a ∪ b, compacted: per replica the vv is the larger of the two, then cloud dots (both
 * clouds merged, ascending) that extend it contiguously fold in; the rest stay in the cloud. out
 * must be zeroed; 0 or CRDT_ENOMEM (out left empty). */
static int cc_union(const cc_t *a, const cc_t *b, cc_t *out)
{
    size_t vmax = a->nvv + b->nvv + a->ncloud + b->ncloud, cmax = a->ncloud + b->ncloud;
    if (vmax && reserve((void **)&out->vv, &out->capvv, vmax, sizeof(crdt_dot_t)) < 0)
        return CRDT_ENOMEM;
    if (cmax && reserve((void **)&out->cloud, &out->capcloud, cmax, sizeof(crdt_dot_t)) < 0) {
        cc_free(out);
        return CRDT_ENOMEM;
    }
    size_t ia = 0, ib = 0, ca = 0, cb = 0;
    for (;;) {
        uint64_t r = UINT64_MAX;
        bool any = false;
        if (ia < a->nvv && a->vv[ia].replica <= r)
            r = a->vv[ia].replica, any = true;
        if (ib < b->nvv && b->vv[ib].replica <= r)
            r = b->vv[ib].replica, any = true;
        if (ca < a->ncloud && a->cloud[ca].replica <= r)
            r = a->cloud[ca].replica, any = true;
        if (cb < b->ncloud && b->cloud[cb].replica <= r)
            r = b->cloud[cb].replica, any = true;
        if (!any)
            break;
        uint64_t m = 0;
        if (ia < a->nvv && a->vv[ia].replica == r)
            m = a->vv[ia++].seq;
        if (ib < b->nvv && b->vv[ib].replica == r && b->vv[ib].seq > m)
            m = b->vv[ib].seq;
        if (ib < b->nvv && b->vv[ib].replica == r)
            ib++;
        for (;;) {
            bool ha = ca < a->ncloud && a->cloud[ca].replica == r;
            bool hb = cb < b->ncloud && b->cloud[cb].replica == r;
            uint64_t sq;
            if (ha && hb) {
                uint64_t x = a->cloud[ca].seq, y = b->cloud[cb].seq;
                sq = x < y ? x : y;
                if (x == sq)
                    ca++;
                if (y == sq)
                    cb++;
            } else if (ha) {
                sq = a->cloud[ca++].seq;
            } else if (hb) {
                sq = b->cloud[cb++].seq;
            } else {
                break;
            }
            if (sq <= m)
                continue;
            if (sq == m + 1)
                m = sq; /* only while no gap was pushed: later dots are larger than any gap */
            else
                out->cloud[out->ncloud++] = (crdt_dot_t){r, sq};
        }
        if (m)
            out->vv[out->nvv++] = (crdt_dot_t){r, m};
    }
    return 0;
}

/* A context holding just the (ascending) dots given. */
static int cc_from_dots(const crdt_dot_t *d, size_t n, cc_t *out)
{
    cc_t tmp = {0};
    /* A read-only view of the caller's dots: cc_union takes it as const and never writes, grows
     * or frees it (capcloud 0), so dropping const here mutates nothing. */
    tmp.cloud = (crdt_dot_t *)d;
    tmp.ncloud = n;
    cc_t none = {0};
    return cc_union(&tmp, &none, out);
}

/* Room for cc_add_next, which then cannot fail. */
static int cc_prepare_next(cc_t *c)
{
    if (reserve((void **)&c->vv, &c->capvv, c->nvv + 1, sizeof(crdt_dot_t)) < 0 ||
        reserve((void **)&c->cloud, &c->capcloud, c->ncloud + 1, sizeof(crdt_dot_t)) < 0)
        return CRDT_ENOMEM;
    return 0;
}

/* Adds dot (r, seq) where seq = cc_max(r) + 1; cc_prepare_next made the room. */
static void cc_add_next(cc_t *c, uint64_t r, uint64_t seq)
{
    crdt_dot_t past = {r, UINT64_MAX};
    size_t i = cloud_lower(c, &past);
    if (i > 0 && c->cloud[i - 1].replica == r) {
        /* r already has a gap: the new dot is past every dot of r, so it cannot fold */
        memmove(c->cloud + i + 1, c->cloud + i, (c->ncloud - i) * sizeof(crdt_dot_t));
        c->cloud[i] = (crdt_dot_t){r, seq};
        c->ncloud++;
        return;
    }
    ptrdiff_t v = vv_find(c, r);
    if (v >= 0) {
        c->vv[v].seq = seq;
        return;
    }
    size_t at = 0;
    while (at < c->nvv && c->vv[at].replica < r)
        at++;
    memmove(c->vv + at + 1, c->vv + at, (c->nvv - at) * sizeof(crdt_dot_t));
    c->vv[at] = (crdt_dot_t){r, seq};
    c->nvv++;
}

static int cc_copy(const cc_t *src, cc_t *dst)
{
    memset(dst, 0, sizeof(*dst));
    if (src->nvv && reserve((void **)&dst->vv, &dst->capvv, src->nvv, sizeof(crdt_dot_t)) < 0)
        return CRDT_ENOMEM;
    if (src->ncloud &&
        reserve((void **)&dst->cloud, &dst->capcloud, src->ncloud, sizeof(crdt_dot_t)) < 0) {
        cc_free(dst);
        return CRDT_ENOMEM;
    }
    if (src->nvv)
        memcpy(dst->vv, src->vv, src->nvv * sizeof(crdt_dot_t));
    if (src->ncloud)
        memcpy(dst->cloud, src->cloud, src->ncloud * sizeof(crdt_dot_t));
    dst->nvv = src->nvv;
    dst->ncloud = src->ncloud;
    return 0;
}

/* ---- entries -------------------------------------------------------------------------------- */

/* Drops entry id: its bytes and extra dots become garbage; the last entry moves into its slot. */
static void entry_remove(orset_t *s, uint32_t id)
{
    entry_t *e = &s->e[id];
    for (uint32_t j = 0; j < e->ndots; j++)
        di_remove(s, &entry_dots(s, e)[j]);
    crdt__hidx_remove(&s->idx, id, key_fn, s);
    crdt__blobs_drop(&s->blobs, e->len);
    if (e->ndots > 1)
        s->xgarbage += e->ndots;
    uint32_t last = s->n - 1;
    if (id != last) {
        crdt__hidx_remove(&s->idx, last, key_fn, s);
        s->e[id] = s->e[last];
        s->n--;
        for (uint32_t j = 0; j < s->e[id].ndots; j++)
            di_move(s, &entry_dots(s, &s->e[id])[j], dval(last, j), dval(id, j));
        /* count just went down by two, so this insert cannot need to grow */
        (void)crdt__hidx_insert(&s->idx, id, key_fn, s);
    } else {
        s->n--;
    }
}

/* Appends an entry; capacity (entries, both indexes, blobs, xdots) must have been reserved. */
static uint32_t entry_append(orset_t *s, const void *m, size_t len, const crdt_dot_t *dots,
                             size_t nd)
{
    uint32_t id = s->n++;
    entry_t *e = &s->e[id];
    uint32_t off = 0;
    (void)crdt__blobs_add(&s->blobs, m, len, &off);
    e->off = off;
    e->len = (uint32_t)len;
    e->ndots = (uint32_t)nd;
    e->xoff = 0;
    e->dot = (crdt_dot_t){0, 0};
    if (nd == 1) {
        e->dot = dots[0];
    } else {
        e->xoff = (uint32_t)s->xlen;
        /* memmove: merge may stage the dots at exactly this place */
        memmove(s->xdots + s->xlen, dots, nd * sizeof(crdt_dot_t));
        s->xlen += nd;
    }
    (void)crdt__hidx_insert(&s->idx, id, key_fn, s);
    for (uint32_t j = 0; j < e->ndots; j++)
        di_insert(s, id, j);
    return id;
}

/* Drops dot `pos` of entry id; the entry goes with its last dot (and the last entry moves into
 * its slot). */
static void drop_dot(orset_t *s, uint32_t id, uint32_t pos)
{
    entry_t *e = &s->e[id];
    if (e->ndots == 1) {
        entry_remove(s, id);
        return;
    }
    crdt_dot_t *ds = s->xdots + e->xoff;
    di_remove(s, &ds[pos]);
    for (uint32_t j = pos + 1; j < e->ndots; j++) {
        ds[j - 1] = ds[j];
        di_move(s, &ds[j - 1], dval(id, j), dval(id, j - 1));
    }
    e->ndots--;
    s->xgarbage++;
    if (e->ndots == 1) {
        e->dot = ds[0];
        s->xgarbage++;
    }
}

/* Rewrites blobs and xdots without their garbage. Best effort: on ENOMEM nothing changes. */
static void maybe_compact(orset_t *s)
{
    if (crdt__blobs_wants_compaction(&s->blobs)) {
        uint32_t live = s->blobs.len - s->blobs.garbage;
        uint8_t *d = crdt__malloc(live ? live : 1);
        if (d) {
            uint32_t o = 0;
            for (uint32_t i = 0; i < s->n; i++) {
                entry_t *e = &s->e[i];
                if (e->len)
                    memcpy(d + o, s->blobs.data + e->off, e->len);
                e->off = o;
                o += e->len;
            }
            crdt__free(s->blobs.data);
            s->blobs.data = d;
            s->blobs.len = o;
            s->blobs.cap = live ? live : 1;
            s->blobs.garbage = 0;
        }
    }
    if (s->xgarbage > 64 && s->xgarbage > s->xlen / 2) {
        size_t live = s->xlen - s->xgarbage;
        crdt_dot_t *x = live ? crdt__malloc(live * sizeof(crdt_dot_t)) : NULL;
        if (x || !live) {
            size_t o = 0;
            for (uint32_t i = 0; i < s->n; i++) {
                entry_t *e = &s->e[i];
                if (e->ndots > 1) {
                    memcpy(x + o, s->xdots + e->xoff, e->ndots * sizeof(crdt_dot_t));
                    e->xoff = (uint32_t)o;
                    o += e->ndots;
                }
            }
            crdt__free(s->xdots);
            s->xdots = x;
            s->xlen = s->xcap = o;
            s->xgarbage = 0;
        }
    }
}

/* ---- vtable --------------------------------------------------------------------------------- */

static orset_t *orset_new(void)
{
    orset_t *s = crdt__calloc(1, sizeof(*s));
    if (!s)
        return NULL;
    s->obj.vt = &crdt__orset_vt;
    crdt__hidx_init(&s->idx);
    /* per object, like the member index: crafted colliding dots hit one object of one process */
    s->dseed = crdt_hash64(&s, sizeof(s), 0x9E3779B97F4A7C15ull);
    return s;
}

static crdt_obj_t *orset_create(void)
{
    orset_t *s = orset_new();
    return s ? &s->obj : NULL;
}

static void orset_destroy(crdt_obj_t *o)
{
    orset_t *s = OS(o);
    crdt__free(s->e);
    crdt__free(s->xdots);
    crdt__blobs_free(&s->blobs);
    crdt__hidx_free(&s->idx);
    crdt__free(s->dslots);
    cc_free(&s->cc);
    crdt__free(s);
}

static crdt_obj_t *orset_clone(const crdt_obj_t *o)
{
    const orset_t *a = COS(o);
    orset_t *s = orset_new();
    if (!s)
        return NULL;
    size_t bytes = 0, x = 0;
    for (uint32_t i = 0; i < a->n; i++) {
        bytes += a->e[i].len;
        x += a->e[i].ndots > 1 ? a->e[i].ndots : 0;
    }
    if (cc_copy(&a->cc, &s->cc) < 0 || reserve_entries(s, a->n ? a->n : 1) < 0 ||
        di_reserve(s, a->dcount) < 0 || reserve_blobs(&s->blobs, bytes) < 0 ||
        (x && reserve((void **)&s->xdots, &s->xcap, x, sizeof(crdt_dot_t)) < 0)) {
        orset_destroy(&s->obj);
        return NULL;
    }
    for (uint32_t i = 0; i < a->n; i++) {
        const entry_t *e = &a->e[i];
        entry_append(s, entry_key(a, e), e->len, entry_dots(a, e), e->ndots);
    }
    return &s->obj;
}

static bool orset_equal(const crdt_obj_t *x, const crdt_obj_t *y)
{
    const orset_t *a = COS(x), *b = COS(y);
    if (a->n != b->n || !cc_equal(&a->cc, &b->cc))
        return false;
    for (uint32_t i = 0; i < a->n; i++) {
        const entry_t *e = &a->e[i];
        uint32_t j = find(b, entry_key(a, e), e->len);
        if (j == CRDT__NO_ID || b->e[j].ndots != e->ndots ||
            memcmp(entry_dots(a, e), entry_dots(b, &b->e[j]), e->ndots * sizeof(crdt_dot_t)))
            return false;
    }
    return true;
}

static bool orset_is_empty(const crdt_obj_t *o)
{
    const orset_t *s = COS(o);
    return s->n == 0 && s->cc.nvv == 0 && s->cc.ncloud == 0;
}

static void orset_stats(const crdt_obj_t *o, crdt_stats_t *st)
{
    const orset_t *s = COS(o);
    st->entries = s->n;
    st->tombstones = 0;
    st->memory = sizeof(*s) + (size_t)s->cap * sizeof(entry_t) + s->xcap * sizeof(crdt_dot_t) +
                 s->blobs.cap + crdt__hidx_memory(&s->idx) +
                 (s->dslots ? ((size_t)s->dmask + 1) * sizeof(uint64_t) : 0) +
                 (s->cc.capvv + s->cc.capcloud) * sizeof(crdt_dot_t);
}

/* Is dot d among the (ascending) dots of src's entry for this member? */
static bool has_dot(const orset_t *s, uint32_t id, const crdt_dot_t *d)
{
    if (id == CRDT__NO_ID)
        return false;
    const entry_t *e = &s->e[id];
    const crdt_dot_t *ds = entry_dots(s, e);
    size_t lo = 0, hi = e->ndots;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        int c = dot_cmp(&ds[mid], d);
        if (c == 0)
            return true;
        if (c < 0)
            lo = mid + 1;
        else
            hi = mid;
    }
    return false;
}

/* How many dots the context holds, counted up to just past `limit`. */
static size_t cc_dots_upto(const cc_t *c, size_t limit)
{
    size_t n = c->ncloud;
    for (size_t i = 0; i < c->nvv && n <= limit; i++)
        n += c->vv[i].seq > limit ? limit + 1 : (size_t)c->vv[i].seq;
    return n;
}

/* Join step for one dot d of src's context: dst drops it unless src holds it for that member. */
static bool drop_unless_kept(orset_t *d, const orset_t *s, const crdt_dot_t *dot)
{
    uint32_t slot = di_find(d, dot);
    if (slot == UINT32_MAX)
        return false;
    uint64_t v = d->dslots[slot];
    uint32_t id = (uint32_t)(v >> 32) - 1, pos = (uint32_t)v;
    const entry_t *e = &d->e[id];
    if (has_dot(s, find(s, entry_key(d, e), e->len), dot))
        return false;
    drop_dot(d, id, pos);
    return true;
}

/* The join. Everything that may fail (the new context, capacity for src's new entries and dots)
 * happens before dst is touched, so ENOMEM leaves dst as it was. */
static int orset_merge(crdt_obj_t *dobj, const crdt_obj_t *sobj)
{
    orset_t *d = OS(dobj);
    const orset_t *s = COS(sobj);

    /* Phase 1: plan and reserve. */
    cc_t cc = {0};
    if (cc_union(&d->cc, &s->cc, &cc) < 0)
        return CRDT_ENOMEM;
    size_t new_entries = 0, new_bytes = 0, new_x = 0, new_dots = 0;
    for (uint32_t i = 0; i < s->n; i++) {
        const entry_t *e = &s->e[i];
        const crdt_dot_t *ds = entry_dots(s, e);
        size_t k = 0;
        for (uint32_t j = 0; j < e->ndots; j++)
            k += !cc_contains(&d->cc, &ds[j]);
        if (!k)
            continue;
        uint32_t id = find(d, entry_key(s, e), e->len);
        size_t o = id == CRDT__NO_ID ? 0 : d->e[id].ndots;
        new_entries++;
        new_dots += k;
        new_bytes += e->len;
        new_x += o + k; /* also covers staging a lone unseen dot at the tail */
    }
    if (reserve_entries(d, (size_t)d->n + new_entries) < 0 ||
        reserve_blobs(&d->blobs, new_bytes) < 0 ||
        di_reserve(d, (size_t)d->dcount + new_dots) < 0 ||
        (new_x && reserve((void **)&d->xdots, &d->xcap, d->xlen + new_x, sizeof(crdt_dot_t)) < 0)) {
        cc_free(&cc);
        return CRDT_ENOMEM;
    }

    bool changed = !cc_equal(&cc, &d->cc);
    /* Phase 2: a dot of dst survives if src has it too, or src never saw it. A small context
     * (a delta's) is walked dot by dot through the dot index; a large one (a full state's) is
     * cheaper met by walking dst's entries. */
    if (cc_dots_upto(&s->cc, d->dcount) <= d->dcount) {
        for (size_t i = 0; i < s->cc.nvv; i++)
            for (uint64_t q = 1; q <= s->cc.vv[i].seq; q++)
                changed |= drop_unless_kept(d, s, &(crdt_dot_t){s->cc.vv[i].replica, q});
        for (size_t i = 0; i < s->cc.ncloud; i++)
            changed |= drop_unless_kept(d, s, &s->cc.cloud[i]);
    } else {
        /* downward, so the entry swapped into a freed slot was already visited */
        for (uint32_t i = d->n; i-- > 0;) {
            uint32_t sid = find(s, entry_key(d, &d->e[i]), d->e[i].len);
            for (uint32_t j = d->e[i].ndots; j-- > 0;) {
                const crdt_dot_t *dj = &entry_dots(d, &d->e[i])[j];
                if (has_dot(s, sid, dj) || !cc_contains(&s->cc, dj))
                    continue;
                changed = true;
                bool last = d->e[i].ndots == 1;
                drop_dot(d, i, j);
                if (last)
                    break;
            }
        }
    }
    /* Phase 3: src's dots that dst never saw join in. */
    for (uint32_t i = 0; i < s->n; i++) {
        const entry_t *e = &s->e[i];
        const crdt_dot_t *ds = entry_dots(s, e);
        const uint8_t *key = entry_key(s, e);
        uint32_t id = find(d, key, e->len);
        size_t k = 0;
        for (uint32_t j = 0; j < e->ndots; j++)
            k += !cc_contains(&d->cc, &ds[j]);
        if (!k)
            continue;
        changed = true;
        if (id == CRDT__NO_ID) {
            if (k == e->ndots) {
                entry_append(d, key, e->len, ds, k);
            } else {
                /* stage the unseen dots at the tail of xdots (reserved), then append */
                crdt_dot_t *t = d->xdots + d->xlen;
                size_t o = 0;
                for (uint32_t j = 0; j < e->ndots; j++)
                    if (!cc_contains(&d->cc, &ds[j]))
                        t[o++] = ds[j];
                entry_append(d, key, e->len, t, k);
            }
            continue;
        }
        /* merge dst's dots and the unseen ones (disjoint, both ascending) at the tail of xdots */
        entry_t *de = &d->e[id];
        const crdt_dot_t *old = entry_dots(d, de);
        crdt_dot_t *t = d->xdots + d->xlen;
        size_t a = 0, o = 0;
        uint32_t j = 0;
        while (a < de->ndots || j < e->ndots) {
            if (j < e->ndots && cc_contains(&d->cc, &ds[j])) {
                j++;
                continue;
            }
            if (j >= e->ndots || (a < de->ndots && dot_cmp(&old[a], &ds[j]) < 0))
                t[o++] = old[a++];
            else
                t[o++] = ds[j++];
        }
        for (uint32_t q = 0; q < de->ndots; q++)
            di_remove(d, &entry_dots(d, de)[q]);
        if (de->ndots > 1)
            d->xgarbage += de->ndots;
        de->xoff = (uint32_t)d->xlen;
        de->ndots = (uint32_t)o;
        d->xlen += o;
        for (uint32_t q = 0; q < de->ndots; q++)
            di_insert(d, id, q);
    }
    cc_free(&d->cc);
    d->cc = cc;
    maybe_compact(d);
    return changed ? 1 : 0;
}

/* ---- mutators ------------------------------------------------------------------------------- */

/* A new delta holding at most one entry (m, dots[0]) and the context of the ascending ctx dots. */
static crdt_obj_t *make_delta(const void *m, size_t len, const crdt_dot_t *dot,
                              const crdt_dot_t *ctx, size_t nctx)
{
    orset_t *s = orset_new();
    if (!s)
        return NULL;
    if (cc_from_dots(ctx, nctx, &s->cc) < 0 ||
        (dot && (reserve_entries(s, 1) < 0 || reserve_blobs(&s->blobs, len) < 0 ||
                 di_reserve(s, 1) < 0))) {
        orset_destroy(&s->obj);
        return NULL;
    }
    if (dot)
        entry_append(s, m, len, dot, 1);
    return &s->obj;
}

int crdt_orset_add(crdt_obj_t *o, uint64_t replica, const void *m, size_t len, crdt_obj_t **delta)
{
    if (delta)
        *delta = NULL;
    if (o->vt != &crdt__orset_vt)
        return CRDT_ETYPE;
    if (!crdt__replica_ok(replica) || len > CRDT_MAX_BLOB || (!m && len))
        return CRDT_EINVAL;
    orset_t *s = OS(o);
    uint64_t top = cc_max(&s->cc, replica);
    if (top >= SEQ_MAX)
        return CRDT_EOVERFLOW;
    crdt_dot_t dot = {replica, top + 1};
    uint32_t id = find(s, m, len);
    const crdt_dot_t *old = id == CRDT__NO_ID ? NULL : entry_dots(s, &s->e[id]);
    size_t nold = id == CRDT__NO_ID ? 0 : s->e[id].ndots;

    if (delta) {
        /* context = the new dot and the dots this add supersedes, ascending */
        crdt_dot_t stack[8], *ctx = stack;
        if (nold + 1 > 8 && !(ctx = crdt__malloc((nold + 1) * sizeof(crdt_dot_t))))
            return CRDT_ENOMEM;
        size_t k = 0;
        bool placed = false;
        for (size_t i = 0; i < nold; i++) {
            if (!placed && dot_cmp(&dot, &old[i]) < 0) {
                ctx[k++] = dot;
                placed = true;
            }
            ctx[k++] = old[i];
        }
        if (!placed)
            ctx[k++] = dot;
        *delta = make_delta(m, len, &dot, ctx, k);
        if (ctx != stack)
            crdt__free(ctx);
        if (!*delta)
            return CRDT_ENOMEM;
    }
    if (cc_prepare_next(&s->cc) < 0 || di_reserve(s, (size_t)s->dcount + 1) < 0 ||
        (id == CRDT__NO_ID &&
         (reserve_entries(s, (size_t)s->n + 1) < 0 || reserve_blobs(&s->blobs, len) < 0))) {
        if (delta) {
            crdt_obj_free(*delta);
            *delta = NULL;
        }
        return CRDT_ENOMEM;
    }
    if (id == CRDT__NO_ID) {
        entry_append(s, m, len, &dot, 1);
    } else {
        entry_t *e = &s->e[id];
        for (uint32_t j = 0; j < e->ndots; j++)
            di_remove(s, &entry_dots(s, e)[j]);
        if (e->ndots > 1)
            s->xgarbage += e->ndots;
        e->ndots = 1;
        e->dot = dot;
        di_insert(s, id, 0);
    }
    cc_add_next(&s->cc, replica, dot.seq);
    maybe_compact(s);
    return 1;
}

int crdt_orset_remove(crdt_obj_t *o, const void *m, size_t len, crdt_obj_t **delta)
{
    if (delta)
        *delta = NULL;
    if (o->vt != &crdt__orset_vt)
        return CRDT_ETYPE;
    if (len > CRDT_MAX_BLOB || (!m && len))
        return CRDT_EINVAL;
    orset_t *s = OS(o);
    uint32_t id = find(s, m, len);
    if (id == CRDT__NO_ID)
        return 0;
    if (delta) {
        const entry_t *e = &s->e[id];
        *delta = make_delta(NULL, 0, NULL, entry_dots(s, e), e->ndots);
        if (!*delta)
            return CRDT_ENOMEM;
    }
    entry_remove(s, id);
    maybe_compact(s);
    return 1;
}

int crdt__orset_delete(crdt_obj_t *o, crdt_obj_t **delta)
{
    if (delta)
        *delta = NULL;
    if (!o || o->vt != &crdt__orset_vt)
        return CRDT_ETYPE;
    orset_t *s = OS(o);
    if (s->n == 0)
        return 0;
    if (delta) {
        /* no entries under the whole causal context: joined anywhere, it drops every entry whose
         * dot this replica has seen (the live ones; the others it had removed already), and
         * keeps the adds it has not seen. The context is compact (mostly a version vector). */
        orset_t *d = orset_new();
        if (!d || cc_copy(&s->cc, &d->cc) < 0) {
            if (d)
                orset_destroy(&d->obj);
            return CRDT_ENOMEM;
        }
        *delta = &d->obj;
    }
    while (s->n)
        entry_remove(s, s->n - 1);
    maybe_compact(s);
    return 1;
}

/* ---- queries -------------------------------------------------------------------------------- */

int crdt__orset_contains(const crdt_obj_t *o, const void *m, size_t len)
{
    if (o->vt != &crdt__orset_vt)
        return CRDT_ETYPE;
    if (!m && len)
        return 0;
    return find(COS(o), m, len) != CRDT__NO_ID;
}

size_t crdt__orset_size(const crdt_obj_t *o)
{
    return o->vt == &crdt__orset_vt ? COS(o)->n : 0;
}

typedef struct sorted {
    const uint8_t *p;
    uint32_t len;
    uint32_t id;
} sorted_t;

static int sorted_cmp(const void *a, const void *b)
{
    const sorted_t *x = a, *y = b;
    return crdt__bytes_cmp(x->p, x->len, y->p, y->len);
}

/* New array of the entries in ascending member order (caller frees), or NULL: ENOMEM if n > 0. */
static sorted_t *sort_entries(const orset_t *s)
{
    if (!s->n)
        return NULL;
    sorted_t *v = crdt__malloc((size_t)s->n * sizeof(*v));
    if (!v)
        return NULL;
    for (uint32_t i = 0; i < s->n; i++)
        v[i] = (sorted_t){entry_key(s, &s->e[i]), s->e[i].len, i};
    qsort(v, s->n, sizeof(*v), sorted_cmp);
    return v;
}

int crdt__orset_foreach(const crdt_obj_t *o, crdt_member_cb cb, void *ud)
{
    if (o->vt != &crdt__orset_vt)
        return CRDT_ETYPE;
    const orset_t *s = COS(o);
    if (!s->n)
        return 0;
    sorted_t *v = sort_entries(s);
    if (!v)
        return CRDT_ENOMEM;
    int rc = 0;
    for (uint32_t i = 0; i < s->n && !rc; i++)
        rc = cb(v[i].p, v[i].len, ud);
    crdt__free(v);
    return rc;
}

/* ---- binary codec --------------------------------------------------------------------------- */

static void orset_encode(const crdt_obj_t *o, crdt__writer_t *w)
{
    const orset_t *s = COS(o);
    sorted_t *v = sort_entries(s);
    if (s->n && !v) {
        w->err = CRDT_ENOMEM;
        return;
    }
    crdt__wr_varint(w, s->cc.nvv);
    for (size_t i = 0; i < s->cc.nvv; i++) {
        crdt__wr_varint(w, s->cc.vv[i].replica);
        crdt__wr_varint(w, s->cc.vv[i].seq);
    }
    crdt__wr_varint(w, s->cc.ncloud);
    for (size_t i = 0; i < s->cc.ncloud; i++) {
        crdt__wr_varint(w, s->cc.cloud[i].replica);
        crdt__wr_varint(w, s->cc.cloud[i].seq);
    }
    crdt__wr_varint(w, s->n);
    for (uint32_t i = 0; i < s->n; i++) {
        const entry_t *e = &s->e[v[i].id];
        const crdt_dot_t *ds = entry_dots(s, e);
        crdt__wr_blob(w, v[i].p, v[i].len);
        crdt__wr_varint(w, e->ndots);
        for (uint32_t j = 0; j < e->ndots; j++) {
            crdt__wr_varint(w, ds[j].replica);
            crdt__wr_varint(w, ds[j].seq);
        }
    }
    crdt__free(v);
}

/* Both decoders feed one builder, so the binary and the JSON form obey identical rules. Each step
 * returns 0, CRDT_EDECODE with b->msg saying why, or CRDT_ENOMEM. */
typedef struct builder {
    orset_t *s;
    crdt_dot_t *dots; /* the current entry's dots */
    size_t nd, capd;
    const uint8_t *m; /* the current entry's member (borrowed until entry_end) */
    size_t len;
    char msg[128];
} builder_t;

static int bfail(builder_t *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static int bfail(builder_t *b, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(b->msg, sizeof(b->msg), fmt, ap);
    va_end(ap);
    return CRDT_EDECODE;
}

static int check_dot(builder_t *b, const char *what, uint64_t r, uint64_t seq)
{
    if (!crdt__replica_ok(r))
        return bfail(b, "%s replica %llu out of range 1..%llu", what, (unsigned long long)r,
                     (unsigned long long)CRDT_REPLICA_MAX);
    if (seq < 1 || seq > SEQ_MAX)
        return bfail(b, "%s seq %llu out of range 1..%llu", what, (unsigned long long)seq,
                     (unsigned long long)SEQ_MAX);
    return 0;
}

static int b_vv(builder_t *b, uint64_t r, uint64_t max)
{
    cc_t *c = &b->s->cc;
    if (check_dot(b, "vv", r, max) < 0)
        return CRDT_EDECODE;
    if (c->nvv && c->vv[c->nvv - 1].replica >= r)
        return bfail(b, "vv replicas not strictly ascending (%llu after %llu)",
                     (unsigned long long)r, (unsigned long long)c->vv[c->nvv - 1].replica);
    if (reserve((void **)&c->vv, &c->capvv, c->nvv + 1, sizeof(crdt_dot_t)) < 0)
        return CRDT_ENOMEM;
    c->vv[c->nvv++] = (crdt_dot_t){r, max};
    return 0;
}

static int b_cloud(builder_t *b, uint64_t r, uint64_t seq)
{
    cc_t *c = &b->s->cc;
    crdt_dot_t d = {r, seq};
    if (check_dot(b, "cloud", r, seq) < 0)
        return CRDT_EDECODE;
    if (c->ncloud && dot_cmp(&c->cloud[c->ncloud - 1], &d) >= 0)
        return bfail(b, "cloud dots not strictly ascending ((%llu,%llu) after (%llu,%llu))",
                     (unsigned long long)r, (unsigned long long)seq,
                     (unsigned long long)c->cloud[c->ncloud - 1].replica,
                     (unsigned long long)c->cloud[c->ncloud - 1].seq);
    uint64_t v = vv_get(c, r);
    if (seq <= v + 1)
        return bfail(b,
                     "cloud dot (%llu,%llu) is not beyond vv %llu + 1 (non-canonical: it "
                     "belongs in the vv)",
                     (unsigned long long)r, (unsigned long long)seq, (unsigned long long)v);
    if (reserve((void **)&c->cloud, &c->capcloud, c->ncloud + 1, sizeof(crdt_dot_t)) < 0)
        return CRDT_ENOMEM;
    c->cloud[c->ncloud++] = d;
    return 0;
}

static int b_entry_begin(builder_t *b, const uint8_t *m, size_t len)
{
    orset_t *s = b->s;
    if (s->n) {
        const entry_t *p = &s->e[s->n - 1];
        if (crdt__bytes_cmp(entry_key(s, p), p->len, m, len) >= 0)
            return bfail(b, "members not strictly ascending (bytewise)");
    }
    b->m = m;
    b->len = len;
    b->nd = 0;
    return 0;
}

static int b_dot(builder_t *b, uint64_t r, uint64_t seq)
{
    crdt_dot_t d = {r, seq};
    if (check_dot(b, "dot", r, seq) < 0)
        return CRDT_EDECODE;
    if (b->nd && dot_cmp(&b->dots[b->nd - 1], &d) >= 0)
        return bfail(b, "dots of a member not strictly ascending");
    if (!cc_contains(&b->s->cc, &d))
        return bfail(b, "dot (%llu,%llu) is not in the causal context", (unsigned long long)r,
                     (unsigned long long)seq);
    /* a dot names one add of one member: two members claiming it come from no history */
    if (di_find(b->s, &d) != UINT32_MAX)
        return bfail(b, "dot (%llu,%llu) belongs to two members", (unsigned long long)r,
                     (unsigned long long)seq);
    if (reserve((void **)&b->dots, &b->capd, b->nd + 1, sizeof(crdt_dot_t)) < 0)
        return CRDT_ENOMEM;
    b->dots[b->nd++] = d;
    return 0;
}

static int b_entry_end(builder_t *b)
{
    orset_t *s = b->s;
    if (!b->nd)
        return bfail(b, "a member needs at least one dot");
    if (reserve_entries(s, (size_t)s->n + 1) < 0 || reserve_blobs(&s->blobs, b->len) < 0 ||
        di_reserve(s, (size_t)s->dcount + b->nd) < 0 ||
        (b->nd > 1 &&
         reserve((void **)&s->xdots, &s->xcap, s->xlen + b->nd, sizeof(crdt_dot_t)) < 0))
        return CRDT_ENOMEM;
    entry_append(s, b->m, b->len, b->dots, b->nd);
    return 0;
}

/* Reports a builder failure at byte `at` of the payload. */
static int rd_report(crdt__reader_t *r, builder_t *b, int rc, size_t at)
{
    if (rc == CRDT_ENOMEM)
        return crdt__nomem(r);
    r->pos = at;
    return crdt__fail(r, "%s", b->msg);
}

static int rd_pair(crdt__reader_t *r, uint64_t *a, uint64_t *b)
{
    return crdt__rd_varint(r, a) < 0 || crdt__rd_varint(r, b) < 0 ? CRDT_EDECODE : 0;
}

static int decode_into(crdt__reader_t *r, builder_t *b)
{
    uint64_t n, x, y;
    int rc;
    /* every item takes at least two bytes: counts beyond what remains are lies */
    if (crdt__rd_count(r, (r->len - r->pos) / 2, "vv size", &n) < 0)
        return CRDT_EDECODE;
    for (uint64_t i = 0; i < n; i++) {
        size_t at = r->pos;
        if (rd_pair(r, &x, &y) < 0)
            return CRDT_EDECODE;
        if ((rc = b_vv(b, x, y)) < 0)
            return rd_report(r, b, rc, at);
    }
    if (crdt__rd_count(r, (r->len - r->pos) / 2, "cloud size", &n) < 0)
        return CRDT_EDECODE;
    for (uint64_t i = 0; i < n; i++) {
        size_t at = r->pos;
        if (rd_pair(r, &x, &y) < 0)
            return CRDT_EDECODE;
        if ((rc = b_cloud(b, x, y)) < 0)
            return rd_report(r, b, rc, at);
    }
    if (crdt__rd_count(r, (r->len - r->pos) / 4, "element count", &n) < 0)
        return CRDT_EDECODE;
    for (uint64_t i = 0; i < n; i++) {
        size_t at = r->pos;
        const uint8_t *m;
        size_t len;
        uint64_t nd;
        if (crdt__rd_blob(r, &m, &len) < 0)
            return CRDT_EDECODE;
        if ((rc = b_entry_begin(b, m, len)) < 0)
            return rd_report(r, b, rc, at);
        at = r->pos;
        if (crdt__rd_count(r, (r->len - r->pos) / 2, "dot count", &nd) < 0)
            return CRDT_EDECODE;
        if (nd == 0) {
            r->pos = at;
            return crdt__fail(r, "a member needs at least one dot");
        }
        for (uint64_t j = 0; j < nd; j++) {
            at = r->pos;
            if (rd_pair(r, &x, &y) < 0)
                return CRDT_EDECODE;
            if ((rc = b_dot(b, x, y)) < 0)
                return rd_report(r, b, rc, at);
        }
        if ((rc = b_entry_end(b)) < 0)
            return rd_report(r, b, rc, r->pos);
    }
    return 0;
}

static crdt_obj_t *orset_decode(crdt__reader_t *r)
{
    builder_t b = {0};
    b.s = orset_new();
    if (!b.s) {
        crdt__nomem(r);
        return NULL;
    }
    int rc = decode_into(r, &b);
    crdt__free(b.dots);
    if (rc < 0) {
        orset_destroy(&b.s->obj);
        return NULL;
    }
    return &b.s->obj;
}

/* ---- JSON ----------------------------------------------------------------------------------- */

static json_t *dots_json(const crdt_dot_t *d, size_t n)
{
    json_t *a = json_array();
    for (size_t i = 0; a && i < n; i++) {
        if (json_array_append_new(a, json_pack("{s:I,s:I}", "replica", (json_int_t)d[i].replica,
                                               "seq", (json_int_t)d[i].seq)) < 0) {
            json_decref(a);
            return NULL;
        }
    }
    return a;
}

static json_t *orset_to_json(const crdt_obj_t *o)
{
    const orset_t *s = COS(o);
    sorted_t *v = sort_entries(s);
    if (s->n && !v)
        return NULL;
    json_t *els = json_array();
    for (uint32_t i = 0; els && i < s->n; i++) {
        const entry_t *e = &s->e[v[i].id];
        json_t *el = json_pack("{s:o,s:o}", "member", crdt__json_blob(v[i].p, v[i].len), "dots",
                               dots_json(entry_dots(s, e), e->ndots));
        if (json_array_append_new(els, el) < 0) {
            json_decref(els);
            els = NULL;
        }
    }
    crdt__free(v);
    if (!els)
        return NULL;
    return json_pack("{s:o,s:o,s:o}", "vv", dots_json(s->cc.vv, s->cc.nvv), "cloud",
                     dots_json(s->cc.cloud, s->cc.ncloud), "elements", els);
}

/* Reads {"replica":N,"seq":N} (exactly those fields). */
static int json_dot(const json_t *j, const char *where, uint64_t *r, uint64_t *seq,
                    crdt_error_t *err)
{
    char field[96];
    int64_t a, b;
    if (!json_is_object(j) || json_object_size(j) != 2) {
        crdt__json_fail(err, "%s: expected {\"replica\":N,\"seq\":N}", where);
        return CRDT_EDECODE;
    }
    snprintf(field, sizeof(field), "%s.replica", where);
    if (crdt__json_get_int(json_object_get(j, "replica"), field, 0, INT64_MAX, &a, err) < 0)
        return CRDT_EDECODE;
    snprintf(field, sizeof(field), "%s.seq", where);
    if (crdt__json_get_int(json_object_get(j, "seq"), field, 0, INT64_MAX, &b, err) < 0)
        return CRDT_EDECODE;
    *r = (uint64_t)a;
    *seq = (uint64_t)b;
    return 0;
}

static int json_report(builder_t *b, int rc, const char *where, crdt_error_t *err)
{
    if (rc == CRDT_ENOMEM) {
        if (err && !err->code) {
            err->code = CRDT_ENOMEM;
            snprintf(err->text, sizeof(err->text), "out of memory");
        }
        return rc;
    }
    crdt__json_fail(err, "%s: %s", where, b->msg);
    return rc;
}

static int from_json_into(const json_t *st, builder_t *b, crdt_error_t *err)
{
    char where[96];
    uint64_t x, y;
    int rc;
    if (!json_is_object(st) || json_object_size(st) != 3)
        return crdt__json_fail(err,
                               "state: expected {\"vv\":[..],\"cloud\":[..],\"elements\":[..]}"),
               CRDT_EDECODE;
    const json_t *vv = json_object_get(st, "vv"), *cloud = json_object_get(st, "cloud"),
                 *els = json_object_get(st, "elements");
    if (!json_is_array(vv) || !json_is_array(cloud) || !json_is_array(els))
        return crdt__json_fail(err, "state: vv, cloud and elements must be arrays"), CRDT_EDECODE;
    for (size_t i = 0; i < json_array_size(vv); i++) {
        snprintf(where, sizeof(where), "vv[%zu]", i);
        if (json_dot(json_array_get(vv, i), where, &x, &y, err) < 0)
            return CRDT_EDECODE;
        if ((rc = b_vv(b, x, y)) < 0)
            return json_report(b, rc, where, err);
    }
    for (size_t i = 0; i < json_array_size(cloud); i++) {
        snprintf(where, sizeof(where), "cloud[%zu]", i);
        if (json_dot(json_array_get(cloud, i), where, &x, &y, err) < 0)
            return CRDT_EDECODE;
        if ((rc = b_cloud(b, x, y)) < 0)
            return json_report(b, rc, where, err);
    }
    for (size_t i = 0; i < json_array_size(els); i++) {
        const json_t *el = json_array_get(els, i);
        snprintf(where, sizeof(where), "elements[%zu]", i);
        if (!json_is_object(el) || json_object_size(el) != 2 ||
            !json_is_array(json_object_get(el, "dots")))
            return crdt__json_fail(err, "%s: expected {\"member\":bytes,\"dots\":[..]}", where),
                   CRDT_EDECODE;
        char mwhere[112];
        snprintf(mwhere, sizeof(mwhere), "%s.member", where);
        uint8_t *m = NULL;
        size_t len = 0;
        if ((rc = crdt__json_get_blob(json_object_get(el, "member"), mwhere, &m, &len, err)) < 0)
            return rc;
        rc = b_entry_begin(b, m, len);
        const json_t *dots = json_object_get(el, "dots");
        for (size_t j = 0; rc == 0 && j < json_array_size(dots); j++) {
            snprintf(where, sizeof(where), "elements[%zu].dots[%zu]", i, j);
            if (json_dot(json_array_get(dots, j), where, &x, &y, err) < 0) {
                crdt__free(m);
                return CRDT_EDECODE;
            }
            rc = b_dot(b, x, y);
        }
        if (rc == 0)
            rc = b_entry_end(b);
        crdt__free(m);
        if (rc < 0)
            return json_report(b, rc, where, err);
    }
    return 0;
}

static crdt_obj_t *orset_from_json(const json_t *st, crdt_error_t *err)
{
    builder_t b = {0};
    b.s = orset_new();
    if (!b.s)
        return NULL;
    int rc = from_json_into(st, &b, err);
    crdt__free(b.dots);
    if (rc < 0) {
        orset_destroy(&b.s->obj);
        return NULL;
    }
    return &b.s->obj;
}

const crdt__vtable_t crdt__orset_vt = {
    .type = CRDT_ORSET,
    .name = "orset",
    .create = orset_create,
    .destroy = orset_destroy,
    .clone = orset_clone,
    .merge = orset_merge,
    .equal = orset_equal,
    .is_empty = orset_is_empty,
    .stats = orset_stats,
    .encode = orset_encode,
    .decode = orset_decode,
    .to_json = orset_to_json,
    .from_json = orset_from_json,
};
