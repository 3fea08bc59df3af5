/* keyorder.c - the keys in bytewise order, for listings (crdt_replica_list_keys)
 *
 * The keyspace table (replica.c) finds a key by hash and keeps ids in creation order; a listing
 * wants a range of keys in key order. This is an ordered index of the keys: a directory of chunks,
 * each a sorted array of at most ORDER_CHUNK entries (a B+tree of height two), so that finding
 * where a range starts costs two binary searches (O(log n) comparisons), a page is then read in
 * place, and adding a key moves at most a chunk's entries (a split also moves the directory's,
 * once every ORDER_CHUNK / 2 new keys at worst). An entry carries the key's first 16 bytes as two
 * integers, so that most comparisons touch neither the key nor its rep_key_t (cache misses: they
 * were most of an insert's cost at a million keys).
 *
 * It is built at the first listing (a sort of every id, O(n log n)), not at recovery, so a
 * replica nobody lists pays nothing for it, at restart or on its writes; from then on rep_insert
 * adds each new key (rep_order_add). Keys are never removed from the replica (a deleted key keeps
 * its tombstones), so the index only grows; the listing skips keys with nothing live. When memory
 * runs out while adding, the index is dropped and the next listing builds it again.
 */
#include <stdlib.h>
#include <string.h>

#include "replica_private.h"

#define ORDER_CHUNK 256u

/* An index entry: the key's first 16 bytes, big endian and zero-padded (so that comparing them
 * as integers orders as the bytes do, and most comparisons end there without touching the key),
 * the key's bytes (rep_key_t's copy: it never moves or changes while the replica is open) and id.
 */
typedef struct ord_ent {
    uint64_t p0, p1;
    const uint8_t *key;
    uint32_t klen, id;
} ord_ent_t;

struct rep_order_chunk {
    uint32_t n;
    ord_ent_t e[ORDER_CHUNK];
};

static int bytes_cmp(const uint8_t *a, size_t an, const uint8_t *b, size_t bn)
{
    size_t m = an < bn ? an : bn;
    int c = m ? memcmp(a, b, m) : 0;
    return c ? c : an < bn ? -1 : an > bn;
}

static ord_ent_t make_ent(const void *key, size_t klen, uint32_t id)
{
    const uint8_t *k = key;
    uint8_t b[16] = {0};
    if (klen)
        memcpy(b, k, klen < 16 ? klen : 16);
    ord_ent_t e = {0, 0, k, (uint32_t)klen, id};
    for (int i = 0; i < 8; i++) {
        e.p0 = e.p0 << 8 | b[i];
        e.p1 = e.p1 << 8 | b[8 + i];
    }
    return e;
}

static inline int ent_cmp(const ord_ent_t *a, const ord_ent_t *b)
{
    if (a->p0 != b->p0)
        return a->p0 < b->p0 ? -1 : 1;
    if (a->p1 != b->p1)
        return a->p1 < b->p1 ? -1 : 1;
    return bytes_cmp(a->key, a->klen, b->key, b->klen);
}

static int sort_cmp(const void *a, const void *b)
{
    return ent_cmp(a, b);
}

void rep_order_free(crdt_replica_t *r)
{
    rep_order_t *o = &r->order;
    for (size_t i = 0; i < o->n; i++)
        free(o->chunks[i]);
    free(o->chunks);
    free(o->last);
    memset(o, 0, sizeof(*o));
}

static int dir_reserve(rep_order_t *o, size_t need)
{
    if (need <= o->cap)
        return 0;
    size_t ncap = o->cap ? o->cap * 2 : 16;
    while (ncap < need)
        ncap *= 2;
    rep_order_chunk_t **v = realloc(o->chunks, ncap * sizeof(*v));
    if (!v)
        return CRDT_ENOMEM;
    o->chunks = v;
    ord_ent_t *l = realloc(o->last, ncap * sizeof(*l));
    if (!l)
        return CRDT_ENOMEM; /* chunks grew: cap stays, the next call retries */
    o->last = l;
    o->cap = ncap;
    return 0;
}

/* Sorts every key and fills chunks to three quarters (room for inserts before the first split). */
static int order_build(crdt_replica_t *r)
{
    rep_order_t *o = &r->order;
    rep_order_free(r);
    uint32_t n = r->nkeys;
    ord_ent_t *es = malloc((n ? n : 1) * sizeof(*es));
    if (!es)
        return CRDT_ENOMEM;
    for (uint32_t i = 0; i < n; i++)
        es[i] = make_ent(r->keys[i].key, r->keys[i].klen, i);
    qsort(es, n, sizeof(*es), sort_cmp);
    const uint32_t fill = ORDER_CHUNK * 3 / 4;
    size_t nch = n ? (n + fill - 1) / fill : 0;
    if (dir_reserve(o, nch ? nch : 1) < 0) {
        free(es);
        rep_order_free(r);
        return CRDT_ENOMEM;
    }
    for (size_t c = 0; c < nch; c++) {
        rep_order_chunk_t *ch = malloc(sizeof(*ch));
        if (!ch) {
            free(es);
            rep_order_free(r);
            return CRDT_ENOMEM;
        }
        size_t from = c * fill, cnt = n - from < fill ? n - from : fill;
        ch->n = (uint32_t)cnt;
        memcpy(ch->e, es + from, cnt * sizeof(*es));
        o->last[o->n] = ch->e[cnt - 1];
        o->chunks[o->n++] = ch;
    }
    free(es);
    o->built = true;
    return 0;
}

/* The position of the first key >= t (strict: > t): chunk *ci, index *ii; *ci == o->n at the
 * end. */
static void order_seek_ent(const crdt_replica_t *r, const ord_ent_t *t, bool strict, size_t *ci,
                           uint32_t *ii)
{
    const rep_order_t *o = &r->order;
    size_t lo = 0, hi = o->n; /* the first chunk whose last key is >= (>) t */
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        int c = ent_cmp(&o->last[mid], t);
        if (c < 0 || (strict && c == 0))
            lo = mid + 1;
        else
            hi = mid;
    }
    *ci = lo;
    *ii = 0;
    if (lo == o->n)
        return;
    const rep_order_chunk_t *ch = o->chunks[lo];
    uint32_t a = 0, b = ch->n;
    while (a < b) {
        uint32_t mid = a + (b - a) / 2;
        int c = ent_cmp(&ch->e[mid], t);
        if (c < 0 || (strict && c == 0))
            a = mid + 1;
        else
            b = mid;
    }
    *ii = a;
}

static void order_seek(const crdt_replica_t *r, const void *key, size_t klen, bool strict,
                       size_t *ci, uint32_t *ii)
{
    ord_ent_t t = make_ent(key, klen, 0);
    order_seek_ent(r, &t, strict, ci, ii);
}

static int order_insert(crdt_replica_t *r, uint32_t id)
{
    rep_order_t *o = &r->order;
    const rep_key_t *k = &r->keys[id];
    ord_ent_t e = make_ent(k->key, k->klen, id);
    if (o->n == 0) {
        rep_order_chunk_t *ch = malloc(sizeof(*ch));
        if (!ch || dir_reserve(o, 1) < 0) {
            free(ch);
            return CRDT_ENOMEM;
        }
        ch->n = 1;
        ch->e[0] = e;
        o->last[0] = e;
        o->chunks[o->n++] = ch;
        return 0;
    }
    size_t ci;
    uint32_t ii;
    order_seek_ent(r, &e, false, &ci, &ii);
    if (ci == o->n) { /* after every key: the end of the last chunk */
        ci = o->n - 1;
        ii = o->chunks[ci]->n;
    }
    rep_order_chunk_t *ch = o->chunks[ci];
    if (ch->n == ORDER_CHUNK) { /* split in halves, then insert into the half it falls in */
        rep_order_chunk_t *nx = malloc(sizeof(*nx));
        if (!nx || dir_reserve(o, o->n + 1) < 0) {
            free(nx);
            return CRDT_ENOMEM;
        }
        uint32_t half = ORDER_CHUNK / 2;
        nx->n = ORDER_CHUNK - half;
        memcpy(nx->e, ch->e + half, nx->n * sizeof(*nx->e));
        ch->n = half;
        memmove(o->chunks + ci + 2, o->chunks + ci + 1, (o->n - ci - 1) * sizeof(*o->chunks));
        memmove(o->last + ci + 2, o->last + ci + 1, (o->n - ci - 1) * sizeof(*o->last));
        o->chunks[ci + 1] = nx;
        o->last[ci + 1] = o->last[ci];
        o->last[ci] = ch->e[half - 1];
        o->n++;
        if (ii > half) {
            ch = nx;
            ci++;
            ii -= half;
        }
    }
    memmove(ch->e + ii + 1, ch->e + ii, (ch->n - ii) * sizeof(*ch->e));
    ch->e[ii] = e;
    ch->n++;
    if (ii == ch->n - 1)
        o->last[ci] = e;
    return 0;
}

void rep_order_add(crdt_replica_t *r, uint32_t id)
{
    if (r->order.built && order_insert(r, id) < 0)
        rep_order_free(r); /* out of memory: the next listing sorts again */
}

int crdt_replica_list_keys(crdt_replica_t *r, const void *prefix, size_t plen, const void *after,
                           size_t alen, size_t limit, crdt_replica_key_cb cb, void *ud, bool *more)
{
    *more = false;
    if (!r || (!prefix && plen) || !cb)
        return CRDT_EINVAL;
    if (!r->order.built && order_build(r) < 0)
        return CRDT_ENOMEM;
    const rep_order_t *o = &r->order;
    size_t ci;
    uint32_t ii;
    /* the range starts at the prefix, or just after `after` when that is further on */
    if (after && bytes_cmp(after, alen, prefix, plen) >= 0)
        order_seek(r, after, alen, true, &ci, &ii);
    else
        order_seek(r, prefix, plen, false, &ci, &ii);
    size_t n = 0;
    while (ci < o->n) {
        if (ii >= o->chunks[ci]->n) {
            ci++;
            ii = 0;
            continue;
        }
        uint32_t id = o->chunks[ci]->e[ii].id;
        rep_key_t *k = &r->keys[id];
        if (k->klen < plen || (plen && memcmp(k->key, prefix, plen) != 0))
            break; /* past the prefix's range */
        if (crdt_key_internal(k->key, k->klen)) {
            /* bookkeeping, never listed: jump past the whole internal range at once */
            static const uint8_t past[CRDT_INTERNAL_PREFIX_LEN] = {0, 'c', '/' + 1};
            order_seek(r, past, sizeof(past), false, &ci, &ii);
            continue;
        }
        ii++;
        rep_ready(r, id); /* a key still loading after a restart: its object first */
        if (!crdt_obj_is_live(k->obj))
            continue; /* deleted: nothing to list */
        if (n == limit) {
            *more = true;
            break;
        }
        n++;
        int rc = cb(k->key, k->klen, k->obj, ud);
        if (rc) {
            *more = true;
            return rc;
        }
    }
    return 0;
}
