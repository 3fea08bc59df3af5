/* wasm_vectors.c - native libcrdt's answers to a seeded script of ops, for the wasm build to match
 *
 *   wasm_vectors SEED NOPS
 *
 * Runs NOPS random ops of every type (timelines bounded and not, both counters, a register, a
 * LWW-set, an OR-set; several replicas; no-ops, removes before adds, deletes of whole values and
 * counter overflows included) on native libcrdt and prints, one per line, tab-separated:
 *   op    key type max_size kind member_hex score n replica ms logical node  rc delta_hex|-
 *   state key hex                                  the final state of every key
 *   bad   key input_hex rc offset text state_hex   a corrupted encoding merged into that state,
 *                                                  and the state after it
 *   rep   now key kind member_hex score n rc delta_hex|-
 *                                                  writes as a replica (node 7) makes them:
 *                                                  counter slot and OR-set dots of 7, timestamps
 *                                                  from an HLC of node 7 ticked at `now`
 *   repstate key hex
 * gateway/client/js/test/vectors.test.js replays the script in WebAssembly and asserts the same
 * results, byte for byte. Members are hex because they may hold any byte. */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "crdt.h"

/* The script's randomness: libcrdt's stable hash over a counter (the same on every machine). */
typedef struct rng {
    uint64_t seed, i;
} rng_t;

static uint64_t below(rng_t *r, uint64_t n)
{
    r->i++;
    return n ? crdt_hash64(&r->i, sizeof r->i, r->seed) % n : 0;
}

static void print_hex(const void *p, size_t n)
{
    const uint8_t *b = p;
    if (!n)
        fputs("-", stdout);
    for (size_t i = 0; i < n; i++)
        printf("%02x", b[i]);
}

static void print_obj_hex(const crdt_obj_t *o)
{
    crdt_buf_t b = {0};
    if (!o) {
        fputs("-", stdout);
        return;
    }
    if (crdt_obj_encode(o, &b) < 0) {
        fprintf(stderr, "wasm_vectors: out of memory\n");
        exit(1);
    }
    print_hex(b.data, b.len);
    crdt_buf_free(&b);
}

typedef struct key {
    const char *name;
    crdt_type_t type;
    uint32_t max_size;
    crdt_obj_t *o;
} vkey_t;

/* A pool small enough for members to meet again: text, UTF-8 beyond ASCII, a NUL byte, empty. */
static const struct {
    const char *p;
    size_t len;
} members[] = {
    {"post:1", 6}, {"post:2", 6}, {"post:3", 6},   {"post:10", 7},
    {"a", 1},      {"b", 1},      {"c", 1},        {"d", 1},
    {"e", 1},      {"f", 1},      {"\xc3\xbc", 2}, {"\xf0\x9f\x98\x80", 4},
    {"x\0y", 3},   {"", 0},       {"zz", 2},       {"post:11", 7},
};
#define NMEMBERS (sizeof members / sizeof members[0])

static double pick_score(rng_t *rng)
{
    static const double frac[] = {0, 0.5, 0.25, 0.125};
    double s = (double)below(rng, 24) + frac[below(rng, 4)];
    if (below(rng, 8) == 0)
        s = -s;
    if (below(rng, 16) == 0)
        s = 1.7e9 + s; /* unix seconds, as feeds use */
    return s;
}

static void print_op(const vkey_t *k, const char *kind, size_t mi, double score, int64_t n,
                     uint64_t replica, const crdt_hlc_ts_t *ts, int rc, const crdt_obj_t *delta)
{
    printf("op\t%s\t%s\t%" PRIu32 "\t%s\t", k->name, crdt_type_name(k->type), k->max_size, kind);
    if (mi < NMEMBERS)
        print_hex(members[mi].p, members[mi].len);
    else
        fputs("-", stdout);
    printf("\t%.17g\t%" PRId64 "\t%" PRIu64 "\t%" PRIu64 "\t%" PRIu32 "\t%" PRIu64 "\t%d\t", score,
           n, replica, ts->ms, ts->logical, ts->node, rc);
    print_obj_hex(delta);
    putchar('\n');
}

static void random_op(rng_t *rng, vkey_t *k)
{
    crdt_obj_t *delta = NULL;
    size_t mi = below(rng, NMEMBERS);
    const void *m = members[mi].p;
    size_t mlen = members[mi].len;
    crdt_hlc_ts_t ts = {1 + below(rng, 40), (uint32_t)below(rng, 3), 1 + below(rng, 3)};
    crdt_hlc_ts_t none = {0, 0, 0};
    uint64_t replica = 1 + below(rng, 3);
    bool add = below(rng, 3) != 0;
    int rc;
    if (below(rng, 12) == 0) {
        /* a delete (CRDT_MUT_DELETE): every type, a gcounter refusing it */
        crdt_mut_t dm = {.type = k->type, .kind = CRDT_MUT_DELETE, .ts = ts};
        rc = crdt_mut_apply(k->o, &dm, replica, &delta);
        print_op(k, "delete", NMEMBERS, 0, 0, replica, &ts, rc, delta);
        crdt_obj_free(delta);
        return;
    }
    switch (k->type) {
    case CRDT_TIMELINE: {
        double score = pick_score(rng);
        rc = add ? crdt_timeline_add(k->o, m, mlen, score, &delta)
                 : crdt_timeline_remove(k->o, m, mlen, score, &delta);
        print_op(k, add ? "add" : "remove", mi, score, 0, 0, &none, rc, delta);
        break;
    }
    case CRDT_GCOUNTER: {
        int64_t n = (int64_t)below(rng, 1000);
        if (below(rng, 10) == 0)
            n = 0; /* a no-op */
        if (below(rng, 20) == 0)
            n = INT64_MAX / 3; /* overflows after a few */
        rc = crdt_gcounter_incr(k->o, replica, (uint64_t)n, &delta);
        print_op(k, "incr", NMEMBERS, 0, n, replica, &none, rc, delta);
        break;
    }
    case CRDT_PNCOUNTER: {
        int64_t n = (int64_t)below(rng, 2001) - 1000;
        if (below(rng, 20) == 0)
            n = below(rng, 2) ? INT64_MAX / 3 : INT64_MIN / 3;
        rc = crdt_pncounter_add(k->o, replica, n, &delta);
        print_op(k, "incr", NMEMBERS, 0, n, replica, &none, rc, delta);
        break;
    }
    case CRDT_LWWREG: {
        /* the value: a member of the pool, so it may be empty or hold a NUL */
        rc = crdt_lwwreg_set(k->o, &ts, m, mlen, &delta);
        print_op(k, "set", mi, 0, 0, 0, &ts, rc, delta);
        break;
    }
    case CRDT_LWWSET:
        rc = add ? crdt_lwwset_add(k->o, m, mlen, &ts, &delta)
                 : crdt_lwwset_remove(k->o, m, mlen, &ts, &delta);
        print_op(k, add ? "add" : "remove", mi, 0, 0, 0, &ts, rc, delta);
        break;
    case CRDT_ORSET:
        rc = add ? crdt_orset_add(k->o, replica, m, mlen, &delta)
                 : crdt_orset_remove(k->o, m, mlen, &delta);
        print_op(k, add ? "add" : "remove", mi, 0, 0, add ? replica : 0, &none, rc, delta);
        break;
    }
    crdt_obj_free(delta);
}

static void print_bad(const vkey_t *k, const uint8_t *p, size_t n)
{
    crdt_obj_t *c = crdt_obj_clone(k->o);
    crdt_error_t err = {0};
    int rc = c ? crdt_obj_merge_encoded(c, p, n, &err) : CRDT_ENOMEM;
    printf("bad\t%s\t", k->name);
    print_hex(p, n);
    printf("\t%d\t%zu\t%s\t", rc, rc < 0 ? err.offset : 0, rc < 0 ? err.text : "");
    print_obj_hex(c); /* what the state became: unchanged on an error, else the join */
    putchar('\n');
    crdt_obj_free(c);
}

/* Truncations, a flipped bit under the checksum, a flipped payload byte with the checksum made
 * right again (so the payload decoder judges it), and an encoding of another type. */
static void corruptions(rng_t *rng, const vkey_t *k, const vkey_t *other)
{
    crdt_buf_t b = {0};
    if (crdt_obj_encode(k->o, &b) < 0)
        exit(1);
    print_bad(k, b.data, 0);
    print_bad(k, b.data, 1 + below(rng, b.len - 1));
    print_bad(k, b.data, b.len - 1);
    uint8_t *x = malloc(b.len);
    if (!x)
        exit(1);
    for (int i = 0; i < 3; i++) {
        memcpy(x, b.data, b.len);
        x[below(rng, b.len)] ^= (uint8_t)(1u << below(rng, 8));
        print_bad(k, x, b.len);
    }
    size_t hdr = 2 + crdt_varint_len(b.len - 6); /* version, type, payload length */
    for (int i = 0; i < 6 && b.len > hdr + 4; i++) {
        memcpy(x, b.data, b.len);
        x[hdr + below(rng, b.len - hdr - 4)] ^= (uint8_t)(1 + below(rng, 255));
        uint32_t crc = crdt_crc32c(0, x, b.len - 4);
        for (int j = 0; j < 4; j++)
            x[b.len - 4 + (size_t)j] = (uint8_t)(crc >> (8 * j));
        print_bad(k, x, b.len);
    }
    free(x);
    crdt_buf_free(&b);
    if (crdt_obj_encode(other->o, &b) < 0)
        exit(1);
    print_bad(k, b.data, b.len);
    crdt_buf_free(&b);
}

/* A replica's own writes: node 7's slot and dots, its clock ticked at scripted times. */
static void replica_section(rng_t *rng, int nops)
{
    vkey_t keys[] = {
        {"r:tl", CRDT_TIMELINE, 0, NULL},  {"r:gc", CRDT_GCOUNTER, 0, NULL},
        {"r:pn", CRDT_PNCOUNTER, 0, NULL}, {"r:reg", CRDT_LWWREG, 0, NULL},
        {"r:lws", CRDT_LWWSET, 0, NULL},   {"r:ors", CRDT_ORSET, 0, NULL},
    };
    size_t nkeys = sizeof keys / sizeof keys[0];
    for (size_t i = 0; i < nkeys; i++)
        keys[i].o = crdt_obj_new(keys[i].type);
    crdt_hlc_t clock;
    crdt_hlc_init(&clock, 7, 60000);
    uint64_t now = 1700000000000u;
    for (int i = 0; i < nops; i++) {
        vkey_t *k = &keys[below(rng, nkeys)];
        size_t mi = below(rng, NMEMBERS);
        const void *m = members[mi].p;
        size_t mlen = members[mi].len;
        bool add = below(rng, 3) != 0;
        /* time mostly moves on, sometimes stands still or steps back (the HLC covers both) */
        uint64_t step = below(rng, 4);
        now = step == 3 ? now - 5 : now + step;
        crdt_obj_t *delta = NULL;
        crdt_hlc_ts_t ts;
        double score = 0;
        int64_t n = 0;
        int rc;
        const char *kind = add ? "add" : "remove";
        switch (k->type) {
        case CRDT_TIMELINE:
            score = pick_score(rng);
            rc = add ? crdt_timeline_add(k->o, m, mlen, score, &delta)
                     : crdt_timeline_remove(k->o, m, mlen, score, &delta);
            break;
        case CRDT_GCOUNTER:
        case CRDT_PNCOUNTER:
            kind = "incr";
            n = (int64_t)below(rng, 100) - (k->type == CRDT_PNCOUNTER ? 50 : 0);
            rc = k->type == CRDT_GCOUNTER ? crdt_gcounter_incr(k->o, 7, (uint64_t)n, &delta)
                                          : crdt_pncounter_add(k->o, 7, n, &delta);
            break;
        case CRDT_LWWREG:
            kind = "set";
            crdt_hlc_tick(&clock, now, &ts);
            rc = crdt_lwwreg_set(k->o, &ts, m, mlen, &delta);
            break;
        case CRDT_LWWSET:
            crdt_hlc_tick(&clock, now, &ts);
            rc = add ? crdt_lwwset_add(k->o, m, mlen, &ts, &delta)
                     : crdt_lwwset_remove(k->o, m, mlen, &ts, &delta);
            break;
        default:
            rc = add ? crdt_orset_add(k->o, 7, m, mlen, &delta)
                     : crdt_orset_remove(k->o, m, mlen, &delta);
            break;
        }
        printf("rep\t%" PRIu64 "\t%s\t%s\t", now, k->name, kind);
        print_hex(m, mlen);
        printf("\t%.17g\t%" PRId64 "\t%d\t", score, n, rc);
        print_obj_hex(delta);
        putchar('\n');
        crdt_obj_free(delta);
    }
    for (size_t i = 0; i < nkeys; i++) {
        printf("repstate\t%s\t", keys[i].name);
        print_obj_hex(keys[i].o);
        putchar('\n');
        crdt_obj_free(keys[i].o);
    }
}

int main(int argc, char **argv)
{
    if (argc != 3) {
        fprintf(stderr, "usage: wasm_vectors SEED NOPS\n");
        return 2;
    }
    rng_t rng = {strtoull(argv[1], NULL, 0), 0};
    int nops = atoi(argv[2]);
    vkey_t keys[] = {
        {"tl:bounded", CRDT_TIMELINE, 8, NULL}, {"tl:open", CRDT_TIMELINE, 0, NULL},
        {"gc", CRDT_GCOUNTER, 0, NULL},         {"pn", CRDT_PNCOUNTER, 0, NULL},
        {"reg", CRDT_LWWREG, 0, NULL},          {"lws", CRDT_LWWSET, 0, NULL},
        {"ors", CRDT_ORSET, 0, NULL},
    };
    size_t nkeys = sizeof keys / sizeof keys[0];
    for (size_t i = 0; i < nkeys; i++) {
        keys[i].o = keys[i].type == CRDT_TIMELINE ? crdt_timeline_new(keys[i].max_size)
                                                  : crdt_obj_new(keys[i].type);
        if (!keys[i].o)
            return 1;
    }
    printf("# wasm_vectors %s %d\n", argv[1], nops);
    for (int i = 0; i < nops; i++)
        random_op(&rng, &keys[below(&rng, nkeys)]);
    for (size_t i = 0; i < nkeys; i++) {
        printf("state\t%s\t", keys[i].name);
        print_obj_hex(keys[i].o);
        putchar('\n');
    }
    for (size_t i = 0; i < nkeys; i++)
        corruptions(&rng, &keys[i], &keys[(i + 2) % nkeys]);
    replica_section(&rng, nops);
    for (size_t i = 0; i < nkeys; i++)
        crdt_obj_free(keys[i].o);
    return 0;
}
