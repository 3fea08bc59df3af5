/* peer_index.c - the anti-entropy index of the replica's keyspace: ids, fingerprints, id -> keys
 *
 * The replica never deletes a key, so entries only appear. Every key has one `pkey` record (its
 * bytes, id and last fingerprint); an open-addressing table maps ids to the records of that id
 * (chained: two keys with one id, about n^2/2^62, are folded into one rsx item whose fp is the
 * sum of theirs, as crdt_reconcile.h asks). A change only marks the key stale; the fingerprint
 * (an encoding of the whole object, costly for big timelines) is read when anti-entropy starts,
 * which is also the only time the rsx index may change (sessions borrow it).
 */
#include <stdlib.h>
#include <string.h>

#include "peer_index.h"

typedef struct pkey {
    uint64_t id;
    uint64_t fp;
    struct pkey *next; /* another key with the same id */
    bool stale;
    uint32_t klen;
    uint8_t key[];
} pkey_t;

struct peer_index {
    crdt_replica_t *r;
    crdt_rsx_index_t *rsx;
    pkey_t **slots; /* head of the chain of each id; NULL: empty */
    size_t cap, used;
    pkey_t **stale;
    size_t nstale, cap_stale;
};

static size_t slot_of(const peer_index_t *px, uint64_t id)
{
    /* ids are already uniform hashes */
    size_t i = (size_t)(id * 0x9E3779B97F4A7C15ull >> 17) & (px->cap - 1);
    while (px->slots[i] && px->slots[i]->id != id)
        i = (i + 1) & (px->cap - 1);
    return i;
}

static int grow(peer_index_t *px)
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

static int mark_stale(peer_index_t *px, pkey_t *k)
{
    if (k->stale)
        return 0;
    if (px->nstale == px->cap_stale) {
        size_t n = px->cap_stale ? px->cap_stale * 2 : 256;
        pkey_t **v = realloc(px->stale, n * sizeof(*v));
        if (!v)
            return CRDT_ENOMEM;
        px->stale = v;
        px->cap_stale = n;
    }
    k->stale = true;
    px->stale[px->nstale++] = k;
    return 0;
}

/* The record of key, created if absent; NULL on OOM. */
static pkey_t *find_or_add(peer_index_t *px, const void *key, size_t klen, bool *created)
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
    k->stale = false;
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

static uint64_t id_fp(const peer_index_t *px, uint64_t id)
{
    uint64_t sum = 0;
    for (pkey_t *k = px->slots[slot_of(px, id)]; k; k = k->next)
        sum += k->fp;
    return sum;
}

typedef struct load_ctx {
    peer_index_t *px;
    crdt_rsx_item_t *items;
    size_t n, cap;
    int rc;
} load_ctx_t;

static int load_cb(const void *key, size_t klen, const crdt_obj_t *o, void *ud)
{
    (void)o;
    load_ctx_t *c = ud;
    bool created;
    pkey_t *k = find_or_add(c->px, key, klen, &created);
    if (!k)
        return c->rc = CRDT_ENOMEM;
    if (crdt_replica_key_fingerprint(c->px->r, key, klen, &k->fp) < 0)
        return c->rc = CRDT_ENOMEM;
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

peer_index_t *peer_index_new(crdt_replica_t *r)
{
    peer_index_t *px = calloc(1, sizeof(*px));
    if (!px)
        return NULL;
    px->r = r;
    px->rsx = crdt_rsx_index_new();
    if (!px->rsx || grow(px)) {
        peer_index_free(px);
        return NULL;
    }
    load_ctx_t c = {px, NULL, 0, 0, 0};
    crdt_replica_foreach(r, load_cb, &c);
    if (c.rc) {
        free(c.items);
        peer_index_free(px);
        return NULL;
    }
    /* sorted, one item per id (colliding keys folded), fps summed per id */
    if (c.n)
        qsort(c.items, c.n, sizeof(*c.items), item_cmp);
    size_t m = 0;
    for (size_t i = 0; i < c.n; i++) {
        if (m && c.items[m - 1].id == c.items[i].id)
            continue;
        c.items[m].id = c.items[i].id;
        c.items[m].fp = id_fp(px, c.items[i].id);
        m++;
    }
    int rc = crdt_rsx_index_build(px->rsx, c.items, m);
    free(c.items);
    if (rc < 0) {
        peer_index_free(px);
        return NULL;
    }
    return px;
}

void peer_index_free(peer_index_t *px)
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
    free(px->stale);
    crdt_rsx_index_free(px->rsx);
    free(px);
}

int peer_index_touch(peer_index_t *px, const void *key, size_t klen)
{
    bool created;
    pkey_t *k = find_or_add(px, key, klen, &created);
    if (!k)
        return CRDT_ENOMEM;
    return mark_stale(px, k);
}

size_t peer_index_refresh(peer_index_t *px)
{
    size_t done = 0;
    while (px->nstale) {
        pkey_t *k = px->stale[px->nstale - 1];
        uint64_t fp;
        if (crdt_replica_key_fingerprint(px->r, k->key, k->klen, &fp) < 0)
            break; /* out of memory: stays stale for the next round */
        k->fp = fp;
        if (crdt_rsx_index_upsert(px->rsx, k->id, id_fp(px, k->id)) < 0)
            break;
        k->stale = false;
        px->nstale--;
        done++;
    }
    return done;
}

size_t peer_index_stale(const peer_index_t *px)
{
    return px->nstale;
}

const crdt_rsx_index_t *peer_index_rsx(const peer_index_t *px)
{
    return px->rsx;
}

int peer_index_keys(const peer_index_t *px, uint64_t id, peer_index_key_cb cb, void *ud)
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
