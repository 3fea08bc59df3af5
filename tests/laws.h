/* laws.h - the laws every CRDT type must pass, checked over thousands of seeded random cases
 *
 * Include after tap.h in one test program per type. A type supplies an empty-object constructor
 * and a random mutator; laws_run() then checks, per case:
 *   - a mutator's delta joined into the state before it gives the state after it, and a mutator
 *     that reports no change leaves the state equal;
 *   - merge is commutative, associative and idempotent, and reports "no change" when joining
 *     something already included;
 *   - any permutation, with duplicates, of all deltas (and of the same deltas as encoded ops)
 *     converges to the join of all replicas;
 *   - binary and JSON round trips give equal states, and re-encoding gives identical bytes;
 *   - every truncation and byte flip of an encoding is rejected; flips with the checksum fixed up
 *     (so the payload decoder sees them) are rejected or decode to a state whose encoding is those
 *     very bytes (decoders accept only canonical input); mangled JSON is rejected or round-trips.
 * The seed comes from CRDT_SEED (else the clock) and is printed, with the failing case, on failure.
 */
#ifndef CRDT_LAWS_H
#define CRDT_LAWS_H

#include <jansson.h>
#include <stdint.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>

#include "crdt.h"
#include "crdt_json.h"

typedef struct laws_rng {
    uint64_t s;
} laws_rng_t;

/* splitmix64: tiny, fast, and good enough to drive test cases */
static inline uint64_t laws_next(laws_rng_t *r)
{
    uint64_t z = (r->s += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

static inline uint64_t laws_below(laws_rng_t *r, uint64_t n) { return n ? laws_next(r) % n : 0; }

typedef struct laws_type {
    const char *name;
    crdt_obj_t *(*create)(void);
    crdt_obj_t *(*mutate)(laws_rng_t *rng, crdt_obj_t *state, uint64_t replica, crdt_hlc_t *clock,
                          uint64_t now_ms);
} laws_type_t;

/* The run's seed: CRDT_SEED if set, else time and pid. */
static inline uint64_t laws_seed(void)
{
    const char *env = getenv("CRDT_SEED");
    if (env && *env)
        return strtoull(env, NULL, 0);
    return (uint64_t)time(NULL) * 1000003u ^ (uint64_t)getpid();
}

enum {
    LAW_DELTA,
    LAW_NOOP,
    LAW_COMMUTE,
    LAW_ASSOC,
    LAW_IDEMP,
    LAW_PERMUTE,
    LAW_OPS,
    LAW_BINARY,
    LAW_JSON,
    LAW_TRUNC,
    LAW_FLIP,
    LAW_FLIP_CRC,
    LAW_JSON_MANGLE,
    LAW_COUNT
};

static const char *const laws__names[LAW_COUNT] = {
    "delta joined into the prior state equals the mutated state",
    "a mutator reporting no change leaves the state equal",
    "merge is commutative",
    "merge is associative",
    "merge is idempotent and reports no change for what it holds",
    "any permutation of the deltas, with duplicates, converges",
    "encoded ops applied in any order, with duplicates, converge",
    "binary codec round-trips and re-encodes identically",
    "JSON codec round-trips through text",
    "every truncation of an encoding is rejected",
    "every byte flip of an encoding is rejected by the checksum",
    "flips with a valid checksum are rejected or decode canonically",
    "mangled JSON is rejected or decodes to a valid state",
};

typedef struct laws__run {
    const laws_type_t *t;
    uint64_t seed;
    long ccase;
    long checks[LAW_COUNT];
    long fails[LAW_COUNT];
} laws__run_t;

static void laws__check(laws__run_t *run, int law, bool pass, const char *detail)
{
    run->checks[law]++;
    if (pass)
        return;
    if (run->fails[law]++ < 3)
        diag("%s: law '%s' broken in case %ld (CRDT_SEED=%llu): %s", run->t->name,
             laws__names[law], run->ccase, (unsigned long long)run->seed, detail);
}

static crdt_obj_t *laws__join(const crdt_obj_t *a, const crdt_obj_t *b)
{
    crdt_obj_t *r = crdt_obj_clone(a);
    if (r && crdt_obj_merge(r, b) < 0) {
        crdt_obj_free(r);
        return NULL;
    }
    return r;
}

static bool laws__eq(const crdt_obj_t *a, const crdt_obj_t *b)
{
    return a && b && crdt_obj_equal(a, b);
}

static void laws__shuffle(laws_rng_t *rng, size_t *idx, size_t n)
{
    for (size_t i = n; i > 1; i--) {
        size_t j = (size_t)laws_below(rng, i);
        size_t tmp = idx[i - 1];
        idx[i - 1] = idx[j];
        idx[j] = tmp;
    }
}

/* Indices 0..n-1, each once or twice, in random order; returns the count. */
static size_t laws__order(laws_rng_t *rng, size_t n, size_t *idx)
{
    size_t k = 0;
    for (size_t i = 0; i < n; i++) {
        idx[k++] = i;
        if (laws_below(rng, 3) == 0)
            idx[k++] = i;
    }
    laws__shuffle(rng, idx, k);
    return k;
}

static void laws__binary(laws__run_t *run, const crdt_obj_t *o)
{
    crdt_buf_t a = {0}, b = {0};
    crdt_error_t err;
    bool pass = crdt_obj_encode(o, &a) == 0;
    crdt_obj_t *d = pass ? crdt_obj_decode(a.data, a.len, &err) : NULL;
    pass = pass && laws__eq(o, d) && crdt_obj_encode(d, &b) == 0 && a.len == b.len &&
           memcmp(a.data, b.data, a.len) == 0;
    laws__check(run, LAW_BINARY, pass, d ? "decoded state differs" : err.text);
    crdt_obj_free(d);
    crdt_buf_free(&a);
    crdt_buf_free(&b);
}

static void laws__json(laws__run_t *run, const crdt_obj_t *o)
{
    crdt_error_t err = {0};
    json_t *j = crdt_obj_to_json(o);
    char *text = j ? json_dumps(j, JSON_COMPACT) : NULL;
    json_t *back = text ? json_loads(text, 0, NULL) : NULL;
    crdt_obj_t *d = back ? crdt_obj_from_json(back, &err) : NULL;
    laws__check(run, LAW_JSON, laws__eq(o, d), d ? "decoded state differs" : err.text);
    crdt_obj_free(d);
    json_decref(back);
    free(text);
    json_decref(j);
}

static void laws__put_crc(uint8_t *p, size_t len)
{
    uint32_t crc = crdt_crc32c(0, p, len - 4);
    for (int i = 0; i < 4; i++)
        p[len - 4 + (size_t)i] = (uint8_t)(crc >> (8 * i));
}

/* Truncations, flips, and flips behind a valid checksum, of o's encoding. */
static void laws__corrupt(laws__run_t *run, laws_rng_t *rng, const crdt_obj_t *o)
{
    crdt_buf_t enc = {0};
    if (crdt_obj_encode(o, &enc) < 0)
        return;
    crdt_error_t err;
    size_t step = enc.len <= 256 ? 1 : enc.len / 128;
    for (size_t l = 0; l < enc.len; l += step) {
        crdt_obj_t *d = crdt_obj_decode(enc.data, l, &err);
        laws__check(run, LAW_TRUNC, !d && err.code == CRDT_EDECODE && err.offset <= l,
                    "a truncated encoding was accepted");
        crdt_obj_free(d);
    }
    uint8_t *m = malloc(enc.len);
    crdt_buf_t re = {0};
    for (int k = 0; m && k < 24; k++) {
        memcpy(m, enc.data, enc.len);
        size_t at = (size_t)laws_below(rng, enc.len);
        m[at] ^= (uint8_t)(1 + laws_below(rng, 255));
        crdt_obj_t *d = crdt_obj_decode(m, enc.len, &err);
        laws__check(run, LAW_FLIP, !d && err.code == CRDT_EDECODE, "a flipped byte was accepted");
        crdt_obj_free(d);
        if (at >= enc.len - 4)
            continue;
        /* Also flip a second byte now and then, and fix the checksum so the payload decoder is
         * what has to catch it. */
        if (laws_below(rng, 2))
            m[laws_below(rng, enc.len - 4)] ^= (uint8_t)(1 + laws_below(rng, 255));
        laws__put_crc(m, enc.len);
        d = crdt_obj_decode(m, enc.len, &err);
        bool pass;
        if (!d) {
            pass = err.code == CRDT_EDECODE && err.offset <= enc.len && err.text[0];
        } else {
            re.len = 0;
            pass = crdt_obj_encode(d, &re) == 0 && re.len == enc.len &&
                   memcmp(re.data, m, enc.len) == 0;
            /* a decoded state must be usable; a flipped type byte can make another type's
             * valid state (an empty counter is one byte), which cannot join the original */
            crdt_obj_t *j =
                crdt_obj_type(d) == crdt_obj_type(o) ? laws__join(d, o) : crdt_obj_clone(d);
            pass = pass && j != NULL;
            crdt_obj_free(j);
        }
        laws__check(run, LAW_FLIP_CRC, pass,
                    d ? "accepted bytes that do not re-encode identically"
                      : "rejected without an error message");
        crdt_obj_free(d);
    }
    crdt_buf_free(&re);
    free(m);
    crdt_buf_free(&enc);
}

static void laws__collect(json_t *j, json_t **nodes, size_t *n, size_t max)
{
    if (*n < max)
        nodes[(*n)++] = j;
    if (json_is_object(j)) {
        const char *k;
        json_t *v;
        json_object_foreach(j, k, v) laws__collect(v, nodes, n, max);
    } else if (json_is_array(j)) {
        size_t i;
        json_t *v;
        json_array_foreach(j, i, v) laws__collect(v, nodes, n, max);
    }
}

/* Replaces or removes one random node of the JSON form; the decoder must cope. */
static void laws__json_mangle(laws__run_t *run, laws_rng_t *rng, const crdt_obj_t *o)
{
    for (int k = 0; k < 8; k++) {
        json_t *j = crdt_obj_to_json(o);
        if (!j)
            return;
        json_t *nodes[512];
        size_t n = 0;
        laws__collect(j, nodes, &n, 512);
        json_t *target = nodes[laws_below(rng, n)];
        json_t *repl;
        switch (laws_below(rng, 7)) {
        case 0: repl = json_string("!not base64"); break;
        case 1: repl = json_integer(-1); break;
        case 2: repl = json_real(1.5); break;
        case 3: repl = json_null(); break;
        case 4: repl = json_array(); break;
        case 5: repl = json_integer((json_int_t)laws_below(rng, 5)); break;
        default: repl = json_object(); break;
        }
        /* swap the contents in place: objects and arrays can be emptied, scalars replaced via
         * their parent (found by scanning) */
        bool replaced = false;
        for (size_t i = 0; i < n && !replaced; i++) {
            json_t *p = nodes[i];
            if (json_is_object(p)) {
                const char *key;
                json_t *v;
                json_object_foreach(p, key, v)
                {
                    if (v == target) {
                        if (laws_below(rng, 2))
                            json_object_set(p, key, repl);
                        else
                            json_object_del(p, key);
                        replaced = true;
                        break;
                    }
                }
            } else if (json_is_array(p)) {
                for (size_t a = 0; a < json_array_size(p); a++) {
                    if (json_array_get(p, a) == target) {
                        json_array_set(p, a, repl);
                        replaced = true;
                        break;
                    }
                }
            }
        }
        json_decref(repl);
        crdt_error_t err = {0};
        crdt_obj_t *d = crdt_obj_from_json(j, &err);
        bool pass;
        if (!d) {
            pass = err.code == CRDT_EDECODE && err.text[0];
        } else {
            crdt_buf_t b = {0};
            crdt_obj_t *back = NULL;
            pass = crdt_obj_encode(d, &b) == 0 &&
                   (back = crdt_obj_decode(b.data, b.len, &err)) != NULL &&
                   crdt_obj_equal(back, d);
            crdt_obj_free(back);
            crdt_buf_free(&b);
        }
        laws__check(run, LAW_JSON_MANGLE, pass,
                    d ? "accepted JSON gives a state that does not round-trip"
                      : "rejected without an error message");
        crdt_obj_free(d);
        json_decref(j);
    }
}

#define LAWS_REPLICAS 3
#define LAWS_MAX_DELTAS 64

/* Runs `cases` random cases of every law for one type; one TAP result per law. */
static void laws_run(const laws_type_t *t, int cases)
{
    laws__run_t run;
    memset(&run, 0, sizeof(run));
    run.t = t;
    run.seed = laws_seed();
    diag("%s: %d cases, CRDT_SEED=%llu", t->name, cases, (unsigned long long)run.seed);

    for (long c = 0; c < cases; c++) {
        run.ccase = c;
        laws_rng_t rng = {run.seed ^ ((uint64_t)c * 0xD1B54A32D192ED03ull)};
        crdt_obj_t *s[LAWS_REPLICAS];
        crdt_hlc_t clock[LAWS_REPLICAS];
        crdt_obj_t *deltas[LAWS_MAX_DELTAS];
        uint64_t origin[LAWS_MAX_DELTAS];
        size_t nd = 0;
        uint64_t now = 1000;
        for (int i = 0; i < LAWS_REPLICAS; i++) {
            s[i] = t->create();
            crdt_hlc_init(&clock[i], (uint64_t)i + 1, 1000);
        }
        int steps = 1 + (int)laws_below(&rng, 24);
        for (int k = 0; k < steps && nd < LAWS_MAX_DELTAS; k++) {
            int i = (int)laws_below(&rng, LAWS_REPLICAS);
            now += laws_below(&rng, 3);
            if (laws_below(&rng, 5) == 0) {
                crdt_obj_merge(s[i], s[laws_below(&rng, LAWS_REPLICAS)]);
                continue;
            }
            crdt_obj_t *before = crdt_obj_clone(s[i]);
            crdt_obj_t *d = t->mutate(&rng, s[i], (uint64_t)i + 1, &clock[i], now);
            if (d) {
                crdt_obj_t *j = laws__join(before, d);
                laws__check(&run, LAW_DELTA, laws__eq(j, s[i]), "join(before, delta) != after");
                crdt_obj_free(j);
                origin[nd] = (uint64_t)i + 1;
                deltas[nd++] = d;
            } else {
                laws__check(&run, LAW_NOOP, laws__eq(before, s[i]), "state changed");
            }
            crdt_obj_free(before);
        }

        crdt_obj_t *ab = laws__join(s[0], s[1]), *ba = laws__join(s[1], s[0]);
        laws__check(&run, LAW_COMMUTE, laws__eq(ab, ba), "a+b != b+a");
        crdt_obj_t *bc = laws__join(s[1], s[2]);
        crdt_obj_t *ab_c = laws__join(ab, s[2]), *a_bc = laws__join(s[0], bc);
        laws__check(&run, LAW_ASSOC, laws__eq(ab_c, a_bc), "(a+b)+c != a+(b+c)");
        crdt_obj_t *aa = laws__join(s[0], s[0]);
        bool idem = laws__eq(aa, s[0]);
        crdt_obj_t *abb = crdt_obj_clone(ab);
        idem = idem && abb && crdt_obj_merge(abb, s[1]) == 0 && laws__eq(abb, ab);
        crdt_obj_t *same = crdt_obj_clone(s[2]);
        idem = idem && same && crdt_obj_merge(same, s[2]) == 0;
        laws__check(&run, LAW_IDEMP, idem, "a+a != a, or merge reported a change");

        const crdt_obj_t *full = ab_c;
        size_t idx[2 * LAWS_MAX_DELTAS];
        size_t n = laws__order(&rng, nd, idx);
        crdt_obj_t *acc = t->create();
        for (size_t i = 0; i < n; i++)
            crdt_obj_merge(acc, deltas[idx[i]]);
        laws__check(&run, LAW_PERMUTE, laws__eq(acc, full), "joined deltas != joined replicas");
        crdt_obj_free(acc);

        /* the same deltas as ops, through their encoding */
        crdt_buf_t opbuf[LAWS_MAX_DELTAS];
        memset(opbuf, 0, sizeof(opbuf));
        bool opok = true;
        for (size_t i = 0; i < nd; i++) {
            crdt_op_t op = {{origin[i], i + 1}, deltas[i]};
            opok = opok && crdt_op_encode(&op, &opbuf[i]) == 0;
        }
        n = laws__order(&rng, nd, idx);
        acc = t->create();
        for (size_t i = 0; opok && i < n; i++) {
            crdt_op_t op;
            crdt_error_t err;
            opok = crdt_op_decode(opbuf[idx[i]].data, opbuf[idx[i]].len, &op, &err) == 0 &&
                   op.dot.replica == origin[idx[i]] && op.dot.seq == idx[i] + 1 &&
                   crdt_op_apply(acc, &op) >= 0;
            crdt_op_clear(&op);
        }
        laws__check(&run, LAW_OPS, opok && laws__eq(acc, full), "applied ops != joined replicas");
        crdt_obj_free(acc);
        for (size_t i = 0; i < nd; i++)
            crdt_buf_free(&opbuf[i]);

        if (full) {
            laws__binary(&run, full);
            laws__json(&run, full);
        }
        for (int i = 0; i < LAWS_REPLICAS; i++)
            laws__binary(&run, s[i]);
        if (nd) {
            laws__binary(&run, deltas[laws_below(&rng, nd)]);
            laws__json(&run, deltas[laws_below(&rng, nd)]);
        }
        /* corruption is the slow part: every fourth case is plenty over thousands */
        if (full && c % 4 == 0) {
            laws__corrupt(&run, &rng, full);
            laws__json_mangle(&run, &rng, full);
        }

        crdt_obj_free(ab);
        crdt_obj_free(ba);
        crdt_obj_free(bc);
        crdt_obj_free(ab_c);
        crdt_obj_free(a_bc);
        crdt_obj_free(aa);
        crdt_obj_free(abb);
        crdt_obj_free(same);
        for (size_t i = 0; i < nd; i++)
            crdt_obj_free(deltas[i]);
        for (int i = 0; i < LAWS_REPLICAS; i++)
            crdt_obj_free(s[i]);
    }
    for (int law = 0; law < LAW_COUNT; law++) {
        if (law == LAW_NOOP && run.checks[law] == 0)
            continue; /* a type whose mutators always change something */
        ok(run.fails[law] == 0 && run.checks[law] > 0, "%s: %s (%ld checks, %ld failed)", t->name,
           laws__names[law], run.checks[law], run.fails[law]);
    }
}

#endif /* CRDT_LAWS_H */
