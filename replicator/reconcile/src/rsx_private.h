/* rsx_private.h - internals of the reconcile library: prime-field arithmetic and the hashes */
#ifndef CRDT_RSX_PRIVATE_H
#define CRDT_RSX_PRIVATE_H

#include <stdint.h>
#include <string.h>

#include "crdt_reconcile.h"

#define RSX_P CRDT_RSX_ID_SPACE

/* Reduces any 64-bit value modulo 2^61-1 (one fold leaves at most P + 7). */
static inline uint64_t rsx_red(uint64_t x)
{
    x = (x & RSX_P) + (x >> 61);
    return x >= RSX_P ? x - RSX_P : x;
}
static inline uint64_t rsx_add(uint64_t a, uint64_t b)
{
    return rsx_red(a + b);
}
static inline uint64_t rsx_sub(uint64_t a, uint64_t b)
{
    return rsx_red(a + RSX_P - b);
}
static inline uint64_t rsx_mul(uint64_t a, uint64_t b)
{
    unsigned __int128 t = (unsigned __int128)a * b;
    return rsx_red(((uint64_t)t & RSX_P) + (uint64_t)(t >> 61));
}
/* a^(P-2): the inverse of a non-zero a (Fermat). */
static inline uint64_t rsx_inv(uint64_t a)
{
    uint64_t r = 1, e = RSX_P - 2;
    while (e) {
        if (e & 1)
            r = rsx_mul(r, a);
        a = rsx_mul(a, a);
        e >>= 1;
    }
    return r;
}

/* A bijective 64-bit finaliser (the splitmix64 one). Part of the wire protocol: never change. */
static inline uint64_t rsx_mix(uint64_t x)
{
    x ^= x >> 30;
    x *= UINT64_C(0xbf58476d1ce4e5b9);
    x ^= x >> 27;
    x *= UINT64_C(0x94d049bb133111eb);
    x ^= x >> 31;
    return x;
}

/* The field weight of an fp (never 0, so every item moves the sketch) and the check weight of an
 * id. Part of the wire protocol. */
static inline uint64_t rsx_u(uint64_t fp)
{
    uint64_t u = rsx_red(rsx_mix(fp ^ UINT64_C(0x243f6a8885a308d3)));
    return u ? u : 1;
}
static inline uint64_t rsx_w(uint64_t id)
{
    return rsx_red(rsx_mix(id ^ UINT64_C(0x13198a2e03707344)));
}

static inline void rsx_sk_add_item(crdt_rsx_sketch_t *s, uint64_t id, uint64_t fp)
{
    uint64_t u = rsx_u(fp);
    s->count++;
    s->a = rsx_add(s->a, rsx_mul(id, u));
    s->b = rsx_add(s->b, u);
    s->c = rsx_add(s->c, rsx_mul(rsx_w(id), u));
}
static inline void rsx_sk_add(crdt_rsx_sketch_t *s, const crdt_rsx_sketch_t *t)
{
    s->count += t->count;
    s->a = rsx_add(s->a, t->a);
    s->b = rsx_add(s->b, t->b);
    s->c = rsx_add(s->c, t->c);
}
static inline void rsx_sk_sub(crdt_rsx_sketch_t *s, const crdt_rsx_sketch_t *t)
{
    s->count -= t->count;
    s->a = rsx_sub(s->a, t->a);
    s->b = rsx_sub(s->b, t->b);
    s->c = rsx_sub(s->c, t->c);
}

/* Copies up to max items with lo <= id < hi, in order; returns how many (no counting pass). */
size_t rsx_index_list_raw(const crdt_rsx_index_t *ix, uint64_t lo, uint64_t hi,
                          crdt_rsx_item_t *out, size_t max);

static inline uint64_t rsx_le64(const uint8_t *p)
{
    uint64_t v = 0;
    for (int i = 7; i >= 0; i--)
        v = v << 8 | p[i];
    return v;
}

#endif
