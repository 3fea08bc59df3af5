/* store_rsx.c - the embedded store's anti-entropy index: rsx ids and fingerprints of the
 * replica's keys in a crdt_rsx_index_t, and an id -> keys map for repairs
 *
 * The replica never deletes a key, so entries only appear. Every key has one `pkey` record (its
 * bytes, id and last fingerprint); an open-addressing table maps ids to the records of that id
 * (chained: two keys with one id, about n^2/2^62, are folded into one rsx item whose fp is the
 * sum of theirs, as crdt_reconcile.h asks).
 *
 * Nothing is tracked per change: the index remembers the seq it reflects, and a refresh reads the
 * replica's change feed from there (the keys changed since, each once) and their fingerprints,
 * which the replica keeps itself (recomputed only for keys whose state changed). A replica's key
 * fingerprint is crdt_rsx_state_fp of its encoding, the fp crdt.so gives its items too, so the
 * index agrees with a Redis site's on every key in the same state. A refresh runs
 * when a session is about to start and no session borrows the index.
 */
#include <stdlib.h>
#include <string.h>

#include "store_rsx.h"

typedef struct pkey {
    uint64_t id;
    uint64_t fp;
    struct pkey *next; /* another key with the same id */
    uint32_t klen;
    uint8_t key[];
} pkey_t;

struct store_rsx {
    crdt_replica_t *r;
    crdt_rsx_index_t *rsx;
    pkey_t **slots; /* head of the chain of each id; NULL: empty */
    size_t cap, used;
    uint64_t seq; /* the index reflects every change through this seq */
};

static size_t slot_of(const store_rsx_t *px, uint64_t id)
{
    /* ids are already uniform hashes */
    size_t i = (size_t)(id * 0x9E3779B97F4A7C15ull >> 17) & (px->cap - 1);
    while (px->slots[i] && px->slots[i]->id != id)
        i = (i + 1) & (px->cap - 1);
    return i;
}

static int grow(store_rsx_t *px)
{
    size_t ncap = px->cap ? px->cap * 2 : 1024;
    pkey_t **old = px->slots;
    size_t ocap = px->cap;
    px->slots = calloc(ncap, sizeof(*px->slots));
    if (!px->slots) {
        px->slots = old;
        return CRDT_ENOMEM;
    }
    px->cap = ncap;
    for (size_t i = 0; i < ocap; i++)
        if (old[i])
            px->slots[slot_of(px, old[i]->id)] = old[i];
    free(old);
    return 0;
}

/* The record of key, created if absent; NULL on OOM. */
static pkey_t *find_or_add(store_rsx_t *px, const void *key, size_t klen, bool *created)
{
    uint64_t id = crdt_rsx_key_id(key, klen);
    *created = false;
    if (px->cap) {
        size_t i = slot_of(px, id);
        for (pkey_t *k = px->slots[i]; k; k = k->next)
            if (k->klen == klen && !memcmp(k->key, key, klen))
                return k;
    }
    if ((px->used + 1) * 10 > px->cap * 7 && grow(px))
        return NULL;
    pkey_t *k = malloc(sizeof(*k) + klen);
    if (!k)
        return NULL;
    k->id = id;
    k->fp = 0;
    k->klen = (uint32_t)klen;
    memcpy(k->key, key, klen);
    size_t i = slot_of(px, id);
    k->next = px->slots[i];
    if (!px->slots[i])
        px->used++;
    px->slots[i] = k;
    *created = true;
    return k;
}

static uint64_t id_fp(const store_rsx_t *px, uint64_t id)
{
    uint64_t sum = 0;
    for (pkey_t *k = px->slots[slot_of(px, id)]; k; k = k->next)
        sum += k->fp;
    return sum;
}

typedef struct refresh_ctx {
    store_rsx_t *px;
    crdt_rsx_item_t *items; /* bulk build: one item per key, folded after sorting */
    size_t n, cap;
    bool bulk;
    int rc;
} refresh_ctx_t;

static int refresh_cb(const void *key, size_t klen, uint64_t seq, const crdt_obj_t *o, void *ud)
{
    (void)o;
    (void)seq;
    refresh_ctx_t *c = ud;
    bool created;
    pkey_t *k = find_or_add(c->px, key, klen, &created);
    if (!k)
        return c->rc = CRDT_ENOMEM;
    if (crdt_replica_key_fingerprint(c->px->r, key, klen, &k->fp) < 0)
        return c->rc = CRDT_ENOMEM;
    if (!c->bulk)
        return crdt_rsx_index_upsert(c->px->rsx, k->id, id_fp(c->px, k->id)) < 0
                   ? (c->rc = CRDT_ENOMEM)
                   : 0;
    if (c->n == c->cap) {
        size_t ncap = c->cap ? c->cap * 2 : 1024;
        crdt_rsx_item_t *v = realloc(c->items, ncap * sizeof(*v));
        if (!v)
            return c->rc = CRDT_ENOMEM;
        c->items = v;
        c->cap = ncap;
    }
    c->items[c->n++] = (crdt_rsx_item_t){k->id, 0};
    return 0;
}

static int item_cmp(const void *a, const void *b)
{
    const crdt_rsx_item_t *x = a, *y = b;
    return (x->id > y->id) - (x->id < y->id);
}

store_rsx_t *store_rsx_new(crdt_replica_t *r)
{
    store_rsx_t *px = calloc(1, sizeof(*px));
    if (!px)
        return NULL;
    px->r = r;
    px->rsx = crdt_rsx_index_new();
    if (!px->rsx || grow(px)) {
        store_rsx_free(px);
        return NULL;
    }
    return px;
}

void store_rsx_free(store_rsx_t *px)
{
    if (!px)
        return;
    for (size_t i = 0; i < px->cap; i++) {
        pkey_t *k = px->slots[i];
        while (k) {
            pkey_t *next = k->next;
            free(k);
            k = next;
        }
    }
    free(px->slots);
    crdt_rsx_index_free(px->rsx);
    free(px);
}

int store_rsx_refresh(store_rsx_t *px)
{
    uint64_t last = crdt_replica_last_seq(px->r);
    if (px->seq >= last)
        return 0;
    /* the first refresh sees every key: build in O(n) from a sorted array */
    refresh_ctx_t c = {px, NULL, 0, 0, crdt_rsx_index_count(px->rsx) == 0, 0};
    uint64_t at = px->seq;
    while (at < last) {
        uint64_t next = at;
        int rc = crdt_replica_changes(px->r, at, 4096, refresh_cb, &c, &next);
        if (rc || c.rc || next <= at)
            break;
        at = next;
    }
    int rc = c.rc;
    if (!rc && c.bulk && c.n) {
        /* sorted, one item per id (colliding keys folded), fps summed per id */
        qsort(c.items, c.n, sizeof(*c.items), item_cmp);
        size_t m = 0;
        for (size_t i = 0; i < c.n; i++) {
            if (m && c.items[m - 1].id == c.items[i].id)
                continue;
            c.items[m].id = c.items[i].id;
            c.items[m].fp = id_fp(px, c.items[i].id);
            m++;
        }
        rc = crdt_rsx_index_build(px->rsx, c.items, m);
    }
    free(c.items);
    if (rc < 0)
        return rc; /* px->seq unchanged: the next refresh reads the same keys again */
    px->seq = at;
    return 0;
}

const crdt_rsx_index_t *store_rsx_index(const store_rsx_t *px)
{
    return px->rsx;
}

int store_rsx_keys(const store_rsx_t *px, uint64_t id, store_rsx_key_cb cb, void *ud)
{
    if (!px->cap)
        return 0;
    for (pkey_t *k = px->slots[slot_of(px, id)]; k; k = k->next) {
        int rc = cb(k->key, k->klen, ud);
        if (rc)
            return rc;
    }
    return 0;
}
