/* hash.c - byte-string hashing and the compact id index the set and timeline types share */
#include <stdlib.h>

#include "crdt_private.h"

static inline uint64_t load64(const uint8_t *p)
{
    uint64_t v;
    memcpy(&v, p, 8);
    return v;
}

static inline uint64_t mix(uint64_t h)
{
    h ^= h >> 33;
    h *= 0xff51afd7ed558ccdull;
    h ^= h >> 33;
    h *= 0xc4ceb9fe1a85ec53ull;
    h ^= h >> 33;
    return h;
}

uint64_t crdt_hash64(const void *data, size_t n, uint64_t seed)
{
    const uint8_t *p = data;
    uint64_t h = seed ^ (n * 0x9E3779B97F4A7C15ull);
    /* Two lanes so long inputs (fingerprints of whole timelines) hash at memory speed. */
    uint64_t h2 = ~seed;
    while (n >= 16) {
        h = (h ^ mix(load64(p))) * 0x9E3779B97F4A7C15ull;
        h2 = (h2 ^ mix(load64(p + 8))) * 0xC2B2AE3D27D4EB4Full;
        h ^= h >> 29;
        h2 ^= h2 >> 31;
        p += 16;
        n -= 16;
    }
    if (n >= 8) {
        h = (h ^ mix(load64(p))) * 0x9E3779B97F4A7C15ull;
        h ^= h >> 29;
        p += 8;
        n -= 8;
    }
    if (n) {
        uint64_t tail = 0;
        memcpy(&tail, p, n);
        h = (h ^ mix(tail ^ n)) * 0x9E3779B97F4A7C15ull;
    }
    return mix(h ^ mix(h2));
}

void crdt__hidx_init(crdt__hidx_t *h)
{
    memset(h, 0, sizeof(*h));
    /* A per-index seed (from its address, which ASLR varies) makes crafted colliding members
     * specific to one object of one process, not to every crdtd. */
    h->seed = mix((uint64_t)(uintptr_t)h ^ 0x243F6A8885A308D3ull);
}

void crdt__hidx_free(crdt__hidx_t *h)
{
    crdt__free(h->slots);
    h->slots = NULL;
    h->mask = 0;
    h->count = 0;
}

size_t crdt__hidx_memory(const crdt__hidx_t *h)
{
    return h->slots ? ((size_t)h->mask + 1) * sizeof(uint32_t) : 0;
}

static uint64_t key_hash(const crdt__hidx_t *h, uint32_t id, crdt__key_fn fn, const void *ctx)
{
    const uint8_t *k;
    size_t n;
    fn(ctx, id, &k, &n);
    return crdt_hash64(k, n, h->seed);
}

uint32_t crdt__hidx_find(const crdt__hidx_t *h, const void *key, size_t len, crdt__key_fn fn,
                         const void *ctx)
{
    if (!h->count)
        return CRDT__NO_ID;
    return crdt__hidx_find_hashed(h, key, len, crdt_hash64(key, len, h->seed), fn, ctx);
}

uint32_t crdt__hidx_find_hashed(const crdt__hidx_t *h, const void *key, size_t len, uint64_t hash,
                                crdt__key_fn fn, const void *ctx)
{
    if (!h->count)
        return CRDT__NO_ID;
    uint32_t i = (uint32_t)hash & h->mask;
    for (;;) {
        uint32_t s = h->slots[i];
        if (!s)
            return CRDT__NO_ID;
        const uint8_t *k;
        size_t n;
        fn(ctx, s - 1, &k, &n);
        if (n == len && (len == 0 || memcmp(k, key, len) == 0))
            return s - 1;
        i = (i + 1) & h->mask;
    }
}

static void place(crdt__hidx_t *h, uint32_t id, uint64_t hash)
{
    uint32_t i = (uint32_t)hash & h->mask;
    while (h->slots[i])
        i = (i + 1) & h->mask;
    h->slots[i] = id + 1;
}

static int resize(crdt__hidx_t *h, uint32_t cap, crdt__key_fn fn, const void *ctx)
{
    uint32_t *old = h->slots;
    uint32_t oldcap = old ? h->mask + 1 : 0;
    uint32_t *slots = crdt__calloc(cap, sizeof(uint32_t));
    if (!slots)
        return CRDT_ENOMEM;
    h->slots = slots;
    h->mask = cap - 1;
    for (uint32_t i = 0; i < oldcap; i++)
        if (old[i])
            place(h, old[i] - 1, key_hash(h, old[i] - 1, fn, ctx));
    crdt__free(old);
    return 0;
}

/* Load factor at most 3/4: probes stay short with 4 bytes a slot. */
static uint32_t cap_for(uint32_t n)
{
    uint64_t need = (uint64_t)n + n / 3 + 1;
    uint64_t cap = 8;
    while (cap < need)
        cap <<= 1;
    return cap > (1ull << 31) ? 0 : (uint32_t)cap;
}

int crdt__hidx_reserve(crdt__hidx_t *h, uint32_t n, crdt__key_fn fn, const void *ctx)
{
    uint32_t cap = cap_for(n);
    if (!cap)
        return CRDT_ENOMEM;
    if (h->slots && cap <= h->mask + 1)
        return 0;
    return resize(h, cap, fn, ctx);
}

int crdt__hidx_insert(crdt__hidx_t *h, uint32_t id, crdt__key_fn fn, const void *ctx)
{
    if (h->count == UINT32_MAX - 1)
        return CRDT_ENOMEM;
    if (!h->slots || (uint64_t)(h->count + 1) * 4 > (uint64_t)(h->mask + 1) * 3) {
        int rc = crdt__hidx_reserve(h, h->count + 1, fn, ctx);
        if (rc < 0)
            return rc;
    }
    place(h, id, key_hash(h, id, fn, ctx));
    h->count++;
    return 0;
}

void crdt__hidx_insert_reserved(crdt__hidx_t *h, uint32_t id, uint64_t hash)
{
    place(h, id, hash);
    h->count++;
}

void crdt__hidx_remove(crdt__hidx_t *h, uint32_t id, crdt__key_fn fn, const void *ctx)
{
    if (!h->count)
        return;
    uint32_t i = (uint32_t)key_hash(h, id, fn, ctx) & h->mask;
    while (h->slots[i] && h->slots[i] != id + 1)
        i = (i + 1) & h->mask;
    if (!h->slots[i])
        return;
    /* Backward-shift deletion: no tombstones, so lookups never slow down with churn. */
    uint32_t hole = i;
    for (;;) {
        i = (i + 1) & h->mask;
        uint32_t s = h->slots[i];
        if (!s)
            break;
        uint32_t home = (uint32_t)key_hash(h, s - 1, fn, ctx) & h->mask;
        /* s may move into the hole if its home is not in the cyclic range (hole, i] */
        bool stays = (hole <= i) ? (home > hole && home <= i) : (home > hole || home <= i);
        if (!stays) {
            h->slots[hole] = s;
            hole = i;
        }
    }
    h->slots[hole] = 0;
    h->count--;
}
