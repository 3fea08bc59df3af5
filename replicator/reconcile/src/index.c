/* index.c - the anti-entropy index: a treap of (id, fp) items with per-subtree sketches */
#include <stdlib.h>

#include "rsx_private.h"

/* Nodes live in one array and link by 32-bit index; index 0 is the empty tree. A node carries the
 * sketch of its whole subtree, so a range sketch is two root-to-leaf walks. */
typedef struct rsx_node {
    uint64_t id, fp;
    crdt_rsx_sketch_t agg;
    uint32_t l, r, prio;
} rsx_node_t;

struct crdt_rsx_index {
    rsx_node_t *n;
    uint32_t cap, used; /* slots 1..used-1 were handed out */
    uint32_t free;      /* free list through .l */
    uint32_t root;
    size_t count;
    uint64_t rng;
};

static uint32_t ix_rand(crdt_rsx_index_t *ix)
{
    ix->rng = ix->rng * UINT64_C(6364136223846793005) + UINT64_C(1442695040888963407);
    return (uint32_t)(ix->rng >> 32);
}

static void ix_pull(rsx_node_t *n, uint32_t t)
{
    rsx_node_t *x = &n[t];
    crdt_rsx_sketch_t s = {0};
    rsx_sk_add_item(&s, x->id, x->fp);
    if (x->l)
        rsx_sk_add(&s, &n[x->l].agg);
    if (x->r)
        rsx_sk_add(&s, &n[x->r].agg);
    x->agg = s;
}

static int ix_grow(crdt_rsx_index_t *ix, size_t need)
{
    if (need <= ix->cap)
        return 0;
    if (need > UINT32_MAX - 1)
        return CRDT_ENOMEM;
    size_t cap = ix->cap ? ix->cap : 1024;
    while (cap < need)
        cap = cap * 2 > UINT32_MAX - 1 ? UINT32_MAX - 1 : cap * 2;
    rsx_node_t *n = realloc(ix->n, cap * sizeof *n);
    if (!n)
        return CRDT_ENOMEM;
    ix->n = n;
    ix->cap = (uint32_t)cap;
    return 0;
}

crdt_rsx_index_t *crdt_rsx_index_new(void)
{
    crdt_rsx_index_t *ix = calloc(1, sizeof *ix);
    if (!ix)
        return NULL;
    ix->rng = UINT64_C(0x853c49e6748fea9b);
    if (ix_grow(ix, 1024)) {
        free(ix);
        return NULL;
    }
    ix->used = 1;
    memset(&ix->n[0], 0, sizeof ix->n[0]);
    return ix;
}

void crdt_rsx_index_free(crdt_rsx_index_t *ix)
{
    if (!ix)
        return;
    free(ix->n);
    free(ix);
}

size_t crdt_rsx_index_count(const crdt_rsx_index_t *ix)
{
    return ix->count;
}

bool crdt_rsx_index_get(const crdt_rsx_index_t *ix, uint64_t id, uint64_t *fp)
{
    uint32_t t = ix->root;
    while (t) {
        const rsx_node_t *x = &ix->n[t];
        if (id == x->id) {
            if (fp)
                *fp = x->fp;
            return true;
        }
        t = id < x->id ? x->l : x->r;
    }
    return false;
}

/* Splits tree t into ids < key (*l) and ids >= key (*r). Depth is O(log n) expected. */
static void ix_split(rsx_node_t *n, uint32_t t, uint64_t key, uint32_t *l, uint32_t *r)
{
    if (!t) {
        *l = *r = 0;
        return;
    }
    if (n[t].id < key) {
        ix_split(n, n[t].r, key, &n[t].r, r);
        *l = t;
    } else {
        ix_split(n, n[t].l, key, l, &n[t].l);
        *r = t;
    }
    ix_pull(n, t);
}

/* Joins two trees where every id of l is below every id of r. */
static uint32_t ix_merge(rsx_node_t *n, uint32_t l, uint32_t r)
{
    if (!l || !r)
        return l ? l : r;
    if (n[l].prio > n[r].prio) {
        n[l].r = ix_merge(n, n[l].r, r);
        ix_pull(n, l);
        return l;
    }
    n[r].l = ix_merge(n, l, n[r].l);
    ix_pull(n, r);
    return r;
}

static uint32_t ix_insert(rsx_node_t *n, uint32_t t, uint32_t x)
{
    if (!t)
        return x;
    if (n[x].prio > n[t].prio) {
        ix_split(n, t, n[x].id, &n[x].l, &n[x].r);
        ix_pull(n, x);
        return x;
    }
    if (n[x].id < n[t].id)
        n[t].l = ix_insert(n, n[t].l, x);
    else
        n[t].r = ix_insert(n, n[t].r, x);
    ix_pull(n, t);
    return t;
}

/* Replaces the fp of an id known to be present, refreshing the sketches on its path. */
static void ix_update(rsx_node_t *n, uint32_t t, uint64_t id, uint64_t fp)
{
    if (n[t].id == id)
        n[t].fp = fp;
    else
        ix_update(n, id < n[t].id ? n[t].l : n[t].r, id, fp);
    ix_pull(n, t);
}

static uint32_t ix_erase(crdt_rsx_index_t *ix, uint32_t t, uint64_t id)
{
    rsx_node_t *n = ix->n;
    if (n[t].id == id) {
        uint32_t m = ix_merge(n, n[t].l, n[t].r);
        n[t].l = ix->free;
        ix->free = t;
        return m;
    }
    if (id < n[t].id)
        n[t].l = ix_erase(ix, n[t].l, id);
    else
        n[t].r = ix_erase(ix, n[t].r, id);
    ix_pull(n, t);
    return t;
}

int crdt_rsx_index_upsert(crdt_rsx_index_t *ix, uint64_t id, uint64_t fp)
{
    if (id >= RSX_P)
        return CRDT_EINVAL;
    uint64_t old;
    if (crdt_rsx_index_get(ix, id, &old)) {
        if (old != fp)
            ix_update(ix->n, ix->root, id, fp);
        return 0;
    }
    uint32_t x = ix->free;
    if (x) {
        ix->free = ix->n[x].l;
    } else {
        if (ix_grow(ix, (size_t)ix->used + 1))
            return CRDT_ENOMEM;
        x = ix->used++;
    }
    rsx_node_t *nx = &ix->n[x];
    nx->id = id;
    nx->fp = fp;
    nx->l = nx->r = 0;
    nx->prio = ix_rand(ix);
    ix_pull(ix->n, x);
    ix->root = ix_insert(ix->n, ix->root, x);
    ix->count++;
    return 1;
}

int crdt_rsx_index_remove(crdt_rsx_index_t *ix, uint64_t id)
{
    if (!crdt_rsx_index_get(ix, id, NULL))
        return 0;
    ix->root = ix_erase(ix, ix->root, id);
    ix->count--;
    return 1;
}

/* Post-order sketch computation for a freshly built tree; recursion depth is the treap's depth. */
static void ix_pull_all(rsx_node_t *n, uint32_t t)
{
    if (!t)
        return;
    ix_pull_all(n, n[t].l);
    ix_pull_all(n, n[t].r);
    ix_pull(n, t);
}

int crdt_rsx_index_build(crdt_rsx_index_t *ix, const crdt_rsx_item_t *items, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (items[i].id >= RSX_P || (i && items[i].id <= items[i - 1].id))
            return CRDT_EINVAL;
    if (n > UINT32_MAX - 2)
        return CRDT_ENOMEM;
    if (ix_grow(ix, n + 1))
        return CRDT_ENOMEM;
    uint32_t *stack = malloc((n + 1) * sizeof *stack);
    if (!stack)
        return CRDT_ENOMEM;
    /* Cartesian tree in one left-to-right pass: the right spine lives on a stack. */
    rsx_node_t *nd = ix->n;
    size_t top = 0;
    for (size_t i = 0; i < n; i++) {
        uint32_t x = (uint32_t)(i + 1);
        nd[x].id = items[i].id;
        nd[x].fp = items[i].fp;
        nd[x].l = nd[x].r = 0;
        nd[x].prio = ix_rand(ix);
        uint32_t last = 0;
        while (top && nd[stack[top - 1]].prio < nd[x].prio)
            last = stack[--top];
        nd[x].l = last;
        if (top)
            nd[stack[top - 1]].r = x;
        stack[top++] = x;
    }
    ix->root = n ? stack[0] : 0;
    free(stack);
    ix->used = (uint32_t)(n + 1);
    ix->free = 0;
    ix->count = n;
    ix_pull_all(nd, ix->root);
    return 0;
}

/* The sketch of all ids < bound. */
static void ix_prefix(const crdt_rsx_index_t *ix, uint64_t bound, crdt_rsx_sketch_t *s)
{
    memset(s, 0, sizeof *s);
    uint32_t t = ix->root;
    const rsx_node_t *n = ix->n;
    while (t) {
        if (n[t].id < bound) {
            if (n[t].l)
                rsx_sk_add(s, &n[n[t].l].agg);
            rsx_sk_add_item(s, n[t].id, n[t].fp);
            t = n[t].r;
        } else {
            t = n[t].l;
        }
    }
}

void crdt_rsx_index_total(const crdt_rsx_index_t *ix, crdt_rsx_sketch_t *out)
{
    if (ix->root)
        *out = ix->n[ix->root].agg;
    else
        memset(out, 0, sizeof *out);
}

void crdt_rsx_index_range(const crdt_rsx_index_t *ix, uint64_t lo, uint64_t hi,
                          crdt_rsx_sketch_t *out)
{
    if (hi <= lo) {
        memset(out, 0, sizeof *out);
        return;
    }
    crdt_rsx_sketch_t a;
    ix_prefix(ix, hi, out);
    if (lo) {
        ix_prefix(ix, lo, &a);
        rsx_sk_sub(out, &a);
    }
}

void crdt_rsx_item_sketch(uint64_t id, uint64_t fp, crdt_rsx_sketch_t *out)
{
    memset(out, 0, sizeof *out);
    rsx_sk_add_item(out, id, fp);
}

void crdt_rsx_sketch_add(crdt_rsx_sketch_t *acc, const crdt_rsx_sketch_t *x)
{
    rsx_sk_add(acc, x);
}

void crdt_rsx_sketch_sub(crdt_rsx_sketch_t *acc, const crdt_rsx_sketch_t *x)
{
    rsx_sk_sub(acc, x);
}

bool crdt_rsx_sketch_equal(const crdt_rsx_sketch_t *x, const crdt_rsx_sketch_t *y)
{
    return x->count == y->count && x->a == y->a && x->b == y->b && x->c == y->c;
}

typedef struct list_ctx {
    const rsx_node_t *n;
    uint64_t lo, hi;
    crdt_rsx_item_t *out;
    size_t max, got;
} list_ctx_t;

/* In-order walk pruned to [lo, hi): O(log n + items visited). */
static void ix_list(list_ctx_t *c, uint32_t t)
{
    while (t) {
        const rsx_node_t *x = &c->n[t];
        if (x->id < c->lo) {
            t = x->r;
            continue;
        }
        if (x->id >= c->hi) {
            t = x->l;
            continue;
        }
        ix_list(c, x->l);
        if (c->got >= c->max)
            return;
        c->out[c->got++] = (crdt_rsx_item_t){x->id, x->fp};
        t = x->r;
    }
}

size_t rsx_index_list_raw(const crdt_rsx_index_t *ix, uint64_t lo, uint64_t hi,
                          crdt_rsx_item_t *out, size_t max)
{
    list_ctx_t c = {ix->n, lo, hi, out, max, 0};
    if (max && lo < hi)
        ix_list(&c, ix->root);
    return c.got;
}

size_t crdt_rsx_index_list(const crdt_rsx_index_t *ix, uint64_t lo, uint64_t hi,
                           crdt_rsx_item_t *out, size_t max)
{
    crdt_rsx_sketch_t s;
    crdt_rsx_index_range(ix, lo, hi, &s);
    if (s.count && max) {
        list_ctx_t c = {ix->n, lo, hi, out, max, 0};
        ix_list(&c, ix->root);
    }
    return (size_t)s.count;
}

/* ---- hashes (part of the wire protocol) ---------------------------------------------------- */

static uint64_t rsx_hash_bytes(const void *p, size_t len, uint64_t seed)
{
    const uint8_t *b = p;
    uint64_t h = seed ^ rsx_mix(len + UINT64_C(0x9e3779b97f4a7c15));
    size_t i = 0;
    for (; i + 8 <= len; i += 8) {
        h ^= rsx_mix(rsx_le64(b + i) + h);
        h = (h << 27 | h >> 37) * UINT64_C(0x9e3779b97f4a7c15);
    }
    uint8_t tail[8] = {0};
    memcpy(tail, b + i, len - i);
    h ^= rsx_mix(rsx_le64(tail) ^ (uint64_t)(len - i) << 56);
    return rsx_mix(h);
}

uint64_t crdt_rsx_key_id(const void *key, size_t len)
{
    return rsx_red(rsx_hash_bytes(key, len, UINT64_C(0x6b657969645f7631)));
}

/* libcrdt's stable two-lane hash with the seed "crdtfp01": the fingerprint the embedded replica
 * keeps for every key (crdt_replica_key_fingerprint, REST's "fingerprint") and the module's items,
 * one definition so an embedded node and a Redis site agree on every key in the same state. */
uint64_t crdt_rsx_state_fp(const void *enc, size_t len)
{
    return crdt_hash64(enc, len, UINT64_C(0x6372647466703031));
}
