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

/* ---- the in-memory hash of the id index ------------------------------------------------------
 * crdt_hash64 is promised stable (replicas compare fingerprints made with it) and chains four
 * 64-bit mixes even for a short key: some 40 cycles of latency, paid several times per timeline
 * write (the lookup, the insert, the entry a bound drops, the prefetch of each). The index's
 * positions are private to one object in one process (seeded per index), so it hashes with this
 * cheaper keyed function instead: 128-bit multiplies folded to 64 bits, the key read in at most
 * two (possibly overlapping) loads up to 16 bytes, 16 bytes a step beyond. Not stable across
 * versions: never store or compare its values outside an index.
 *
 * The four odd constants are the ones wyhash (public domain) uses; the construction is ours. A
 * multiply-fold has one trap: an operand of 0 zeroes the product whatever the other holds, so
 * every operand the key can steer also carries the seed. Were one operand only the key XOR a
 * constant, keys starting with that constant's 8 bytes would all hash alike in every process (a
 * flood of colliding members from the network); test_core checks that they do not. */
#if defined(__SIZEOF_INT128__) && !defined(__wasm__) && !defined(CRDT_HIDX_FOLD32)
static inline uint64_t fold_mul(uint64_t a, uint64_t b)
{
    unsigned __int128 m = (unsigned __int128)a * b;
    return (uint64_t)m ^ (uint64_t)(m >> 64);
}
#else
/* WebAssembly (and 32-bit targets) have no 64x64->128 multiply: clang makes the one above a call
 * to compiler-rt's __multi3 (four i64 multiplies and the carries), which cost crdt.wasm about a
 * twentieth of a timeline write. Here two 32x32->64 products instead, each one i64.mul, of crossed
 * halves (a's low with b's high, a's high with b's low), so every bit of both operands enters, and
 * each half still carries its share of the seed (no half is the key alone). The second product is
 * rotated by 32 before the XOR, so the low bits (an index's home slot) get a high half (well mixed)
 * and the top bits (its tag) too. Another function than the native one: fine, its values never
 * leave an index. */
static inline uint64_t fold_mul(uint64_t a, uint64_t b)
{
    uint64_t p = (uint64_t)(uint32_t)a * (uint32_t)(b >> 32);
    uint64_t q = (uint64_t)(uint32_t)(a >> 32) * (uint32_t)b;
    return p ^ (q << 32 | q >> 32);
}
#endif

static inline uint64_t load32(const uint8_t *p)
{
    uint32_t v;
    memcpy(&v, p, 4);
    return v;
}

#define FH_K0 0xa0761d6478bd642full
#define FH_K1 0xe7037ed1a0b428dbull
#define FH_K2 0x8ebc6af09c88c6e3ull
#define FH_K3 0x589965cc75374cc3ull

uint64_t crdt__hidx_hash_bytes(const void *data, size_t n, uint64_t seed)
{
    const uint8_t *p = data;
    uint64_t a, b, h = seed ^ (n * 0x9E3779B97F4A7C15ull);
    if (n <= 16) {
        if (n >= 8) {
            a = load64(p);
            b = load64(p + n - 8);
        } else if (n >= 4) {
            a = load32(p);
            b = load32(p + n - 4);
        } else if (n) {
            a = (uint64_t)p[0] << 16 | (uint64_t)p[n >> 1] << 8 | p[n - 1];
            b = 0;
        } else {
            a = b = 0;
        }
    } else {
        uint64_t h2 = h;
        while (n > 16) {
            h = fold_mul(load64(p) ^ seed ^ FH_K0, load64(p + 8) ^ h);
            h2 = (h2 ^ h) * 0x9E3779B97F4A7C15ull;
            p += 16;
            n -= 16;
        }
        a = load64(p + n - 16) ^ h2;
        b = load64(p + n - 8);
    }
    return fold_mul(fold_mul(a ^ seed ^ FH_K1, b ^ h ^ FH_K2), h ^ FH_K3);
}

/*
 * A slot holds id + 1 in its low 24 bits, above them its distance from its home slot (4 bits,
 * 15 meaning "15 or more") and a tag of the key's hash (the top 4 bits). A probe compares a key
 * only when its tag matches (1 in 16 of the others): a lookup of an absent key (every insert of a
 * new member) used to read the entry and the bytes of every occupied slot it passed, two cache
 * misses each in a big object. The distance gives a removal the home of each slot it shifts back
 * without hashing that slot's key again (two more misses each: a bounded timeline removes one
 * entry per insert). An id too large for 24 bits (an object of 16M entries) turns both off for
 * good: the slots are rewritten in place to the plain id + 1 (their positions depend only on the
 * hash), flagged by the top bit of `mask` (a capacity is at most 2^31), which clones copy.
 */
#define ID_BITS 24
#define ID_LIMIT ((1u << ID_BITS) - 1) /* id + 1 must stay below it while tagged */
#define DIST_SHIFT ID_BITS
#define DIST_MAX 15u /* a stored distance of 15: look the home up */
#define TAG_MASK 0xF0000000u
#define UNTAGGED 0x80000000u /* in mask */

static inline uint32_t cap_mask(const crdt__hidx_t *h) { return h->mask & ~UNTAGGED; }
static inline bool tagged(const crdt__hidx_t *h) { return !(h->mask & UNTAGGED); }
static inline uint32_t tag_of(uint64_t hash) { return (uint32_t)(hash >> 32) & TAG_MASK; }
static inline uint32_t slot_id(const crdt__hidx_t *h, uint32_t s)
{
    return (tagged(h) ? s & ID_LIMIT : s) - 1;
}
/* A tagged slot for id at distance dist from its home. */
static inline uint32_t tagged_slot(uint32_t tag, uint32_t dist, uint32_t id)
{
    return tag | (dist < DIST_MAX ? dist : DIST_MAX) << DIST_SHIFT | (id + 1);
}

/* Mixed into the seed of every index made after crdt__hidx_set_salt: crdt.wasm's linear memory
 * has no ASLR (an object's address is the same in every page that makes the same calls), so
 * crdt-wasm.js passes random bytes in at load. 0 natively, where the address suffices. */
static uint64_t hidx_salt;

void crdt__hidx_set_salt(uint64_t salt)
{
    __atomic_store_n(&hidx_salt, salt, __ATOMIC_RELAXED);
}

void crdt__hidx_init(crdt__hidx_t *h)
{
    memset(h, 0, sizeof(*h));
    /* A per-index seed (from its address, which ASLR varies, and the salt) makes crafted
     * colliding members specific to one object of one process, not to every crdtd. */
    h->seed = mix((uint64_t)(uintptr_t)h ^ 0x243F6A8885A308D3ull ^
                  __atomic_load_n(&hidx_salt, __ATOMIC_RELAXED));
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
    return h->slots ? ((size_t)cap_mask(h) + 1) * sizeof(uint32_t) : 0;
}

static uint64_t key_hash(const crdt__hidx_t *h, uint32_t id, crdt__key_fn fn, const void *ctx)
{
    const uint8_t *k;
    size_t n;
    fn(ctx, id, &k, &n);
    return crdt__hidx_hash_bytes(k, n, h->seed);
}

uint32_t crdt__hidx_find(const crdt__hidx_t *h, const void *key, size_t len, crdt__key_fn fn,
                         const void *ctx)
{
    if (!h->count)
        return CRDT__NO_ID;
    return crdt__hidx_find_hashed(h, key, len, crdt__hidx_hash_bytes(key, len, h->seed), fn, ctx);
}

uint32_t crdt__hidx_find_hashed(const crdt__hidx_t *h, const void *key, size_t len, uint64_t hash,
                                crdt__key_fn fn, const void *ctx)
{
    if (!h->count)
        return CRDT__NO_ID;
    uint32_t mask = cap_mask(h), i = (uint32_t)hash & mask;
    uint32_t tmask = tagged(h) ? TAG_MASK : 0, want = tag_of(hash) & tmask;
    for (;;) {
        uint32_t s = h->slots[i];
        if (!s)
            return CRDT__NO_ID;
        if ((s & tmask) == want) {
            uint32_t id = slot_id(h, s);
            const uint8_t *k;
            size_t n;
            fn(ctx, id, &k, &n);
            if (n == len && (len == 0 || memcmp(k, key, len) == 0))
                return id;
        }
        i = (i + 1) & mask;
    }
}

/* Turns the tags off: every slot becomes the plain id + 1, where it is. */
static void untag(crdt__hidx_t *h)
{
    uint32_t cap = h->slots ? cap_mask(h) + 1 : 0;
    for (uint32_t i = 0; i < cap; i++)
        if (h->slots[i])
            h->slots[i] &= ID_LIMIT;
    h->mask |= UNTAGGED;
}

static void place(crdt__hidx_t *h, uint32_t id, uint64_t hash)
{
    if (tagged(h) && id + 1 >= ID_LIMIT)
        untag(h);
    uint32_t mask = cap_mask(h), home = (uint32_t)hash & mask, i = home;
    while (h->slots[i])
        i = (i + 1) & mask;
    h->slots[i] = tagged(h) ? tagged_slot(tag_of(hash), (i - home) & mask, id) : id + 1;
}

static int resize(crdt__hidx_t *h, uint32_t cap, crdt__key_fn fn, const void *ctx)
{
    uint32_t *old = h->slots;
    uint32_t oldcap = old ? cap_mask(h) + 1 : 0;
    uint32_t *slots = crdt__calloc(cap, sizeof(uint32_t));
    if (!slots)
        return CRDT_ENOMEM;
    h->slots = slots;
    h->mask = (cap - 1) | (h->mask & UNTAGGED);
    for (uint32_t i = 0; i < oldcap; i++)
        if (old[i]) {
            uint32_t id = slot_id(h, old[i]);
            place(h, id, key_hash(h, id, fn, ctx));
        }
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
    if (h->slots && cap <= cap_mask(h) + 1)
        return 0;
    return resize(h, cap, fn, ctx);
}

int crdt__hidx_reserve_one(crdt__hidx_t *h, crdt__key_fn fn, const void *ctx)
{
    if (h->count == UINT32_MAX - 1)
        return CRDT_ENOMEM;
    if (!h->slots || (uint64_t)(h->count + 1) * 4 > (uint64_t)(cap_mask(h) + 1) * 3)
        return crdt__hidx_reserve(h, h->count + 1, fn, ctx);
    return 0;
}

int crdt__hidx_insert(crdt__hidx_t *h, uint32_t id, crdt__key_fn fn, const void *ctx)
{
    int rc = crdt__hidx_reserve_one(h, fn, ctx);
    if (rc < 0)
        return rc;
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
    uint32_t mask = cap_mask(h), i = (uint32_t)key_hash(h, id, fn, ctx) & mask;
    while (h->slots[i] && slot_id(h, h->slots[i]) != id)
        i = (i + 1) & mask;
    if (!h->slots[i])
        return;
    /* Backward-shift deletion: no tombstones, so lookups never slow down with churn. */
    uint32_t hole = i;
    bool tags = tagged(h);
    for (;;) {
        i = (i + 1) & mask;
        uint32_t s = h->slots[i];
        if (!s)
            break;
        uint32_t dist = tags ? (s >> DIST_SHIFT) & DIST_MAX : DIST_MAX;
        uint32_t home = dist < DIST_MAX ? (i - dist) & mask
                                        : (uint32_t)key_hash(h, slot_id(h, s), fn, ctx) & mask;
        /* s may move into the hole if its home is not in the cyclic range (hole, i] */
        bool stays = (hole <= i) ? (home > hole && home <= i) : (home > hole || home <= i);
        if (!stays) {
            h->slots[hole] =
                tags ? tagged_slot(s & TAG_MASK, (hole - home) & mask, (s & ID_LIMIT) - 1) : s;
            hole = i;
        }
    }
    h->slots[hole] = 0;
    h->count--;
}

void crdt__hidx_prefetch(const crdt__hidx_t *h, uint64_t hash)
{
    if (h->slots)
        __builtin_prefetch(&h->slots[(uint32_t)hash & cap_mask(h)]);
}
