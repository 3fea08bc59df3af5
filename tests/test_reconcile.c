/* test_reconcile.c - anti-entropy index aggregates and range-based reconciliation vs brute force */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "crdt_reconcile.h"
#include "tap.h"

#define P CRDT_RSX_ID_SPACE

static uint64_t rng_state;
static uint64_t rnd(void)
{
    uint64_t z = (rng_state += UINT64_C(0x9e3779b97f4a7c15));
    z = (z ^ (z >> 30)) * UINT64_C(0xbf58476d1ce4e5b9);
    z = (z ^ (z >> 27)) * UINT64_C(0x94d049bb133111eb);
    return z ^ (z >> 31);
}
static uint64_t below(uint64_t n)
{
    return n ? rnd() % n : 0;
}

static int item_cmp(const void *a, const void *b)
{
    const crdt_rsx_item_t *x = a, *y = b;
    return x->id < y->id ? -1 : x->id > y->id;
}
static int diff_cmp(const void *a, const void *b)
{
    const crdt_rsx_diff_t *x = a, *y = b;
    return x->id < y->id ? -1 : x->id > y->id;
}

/* ---- index vs brute force ----------------------------------------------------------------- */

static void brute_range(const crdt_rsx_item_t *it, size_t n, uint64_t lo, uint64_t hi,
                        crdt_rsx_sketch_t *s)
{
    memset(s, 0, sizeof *s);
    for (size_t i = 0; i < n; i++)
        if (it[i].id >= lo && it[i].id < hi) {
            crdt_rsx_sketch_t one;
            crdt_rsx_item_sketch(it[i].id, it[i].fp, &one);
            s->count++;
            s->a = (s->a + one.a) % P;
            s->b = (s->b + one.b) % P;
            s->c = (s->c + one.c) % P;
        }
}

static void test_index(void)
{
    /* Ids from a small pool so upserts hit existing items and removes hit present ones. */
    enum { POOL = 600, OPS = 6000 };
    crdt_rsx_item_t ref[POOL];
    bool present[POOL] = {0};
    uint64_t ids[POOL];
    for (int i = 0; i < POOL; i++)
        ids[i] = i < 4 ? (uint64_t[]){0, 1, P - 1, P - 2}[i] : below(P);
    crdt_rsx_index_t *ix = crdt_rsx_index_new();
    int bad = 0, badq = 0;
    for (int op = 0; op < OPS; op++) {
        int k = (int)below(POOL);
        if (below(3)) {
            uint64_t fp = below(4) ? rnd() : below(3);
            int rc = crdt_rsx_index_upsert(ix, ids[k], fp);
            bad += rc != (present[k] ? 0 : 1);
            present[k] = true;
            ref[k] = (crdt_rsx_item_t){ids[k], fp};
        } else {
            bad += crdt_rsx_index_remove(ix, ids[k]) != (present[k] ? 1 : 0);
            present[k] = false;
        }
        if (op % 50 == 0) {
            crdt_rsx_item_t live[POOL];
            size_t n = 0;
            for (int i = 0; i < POOL; i++)
                if (present[i])
                    live[n++] = ref[i];
            bad += crdt_rsx_index_count(ix) != n;
            for (int q = 0; q < 20; q++) {
                uint64_t lo = below(4) ? below(P) : 0, hi = below(4) ? below(P + 1) : P;
                if (q == 0)
                    lo = 0, hi = P;
                crdt_rsx_sketch_t got, want;
                crdt_rsx_index_range(ix, lo, hi, &got);
                brute_range(live, n, lo, hi, &want);
                badq += !crdt_rsx_sketch_equal(&got, &want);
            }
            crdt_rsx_sketch_t tot, want;
            crdt_rsx_index_total(ix, &tot);
            brute_range(live, n, 0, P, &want);
            badq += !crdt_rsx_sketch_equal(&tot, &want);
            /* listing a range gives its items in order */
            qsort(live, n, sizeof *live, item_cmp);
            uint64_t lo = below(P), hi = lo + below(P - lo + 1);
            crdt_rsx_item_t got[POOL];
            size_t cnt = crdt_rsx_index_list(ix, lo, hi, got, POOL), j = 0;
            for (size_t i = 0; i < n; i++)
                if (live[i].id >= lo && live[i].id < hi) {
                    badq += j >= cnt || got[j].id != live[i].id || got[j].fp != live[i].fp;
                    j++;
                }
            badq += j != cnt;
            for (int i = 0; i < POOL; i++) {
                uint64_t fp = 0;
                bool has = crdt_rsx_index_get(ix, ids[i], &fp);
                badq += has != present[i] || (has && fp != ref[i].fp);
            }
        }
    }
    is_int(bad, 0, "index: upsert/remove return values match a reference map over %d ops", OPS);
    is_int(badq, 0, "index: counts, range sketches, listings and lookups equal brute force");
    is_int(crdt_rsx_index_upsert(ix, P, 1), CRDT_EINVAL, "index: id outside the field refused");

    /* bulk build equals incremental inserts */
    enum { NB = 5000 };
    crdt_rsx_item_t *it = malloc(NB * sizeof *it);
    for (int i = 0; i < NB; i++)
        it[i] = (crdt_rsx_item_t){below(P), rnd()};
    qsort(it, NB, sizeof *it, item_cmp);
    size_t n = 0;
    for (int i = 0; i < NB; i++)
        if (!n || it[i].id != it[n - 1].id)
            it[n++] = it[i];
    crdt_rsx_index_t *b = crdt_rsx_index_new(), *c = crdt_rsx_index_new();
    is_int(crdt_rsx_index_build(b, it, n), 0, "build: %zu sorted items", n);
    for (size_t i = n; i-- > 0;)
        crdt_rsx_index_upsert(c, it[i].id, it[i].fp);
    int bb = 0;
    for (int q = 0; q < 200; q++) {
        uint64_t lo = below(P), hi = lo + below(P - lo + 1);
        crdt_rsx_sketch_t x, y, z;
        crdt_rsx_index_range(b, lo, hi, &x);
        crdt_rsx_index_range(c, lo, hi, &y);
        brute_range(it, n, lo, hi, &z);
        bb += !crdt_rsx_sketch_equal(&x, &y) || !crdt_rsx_sketch_equal(&x, &z);
    }
    is_int(bb, 0, "build: range sketches equal incremental inserts and brute force");
    /* a built index keeps working incrementally */
    for (size_t i = 0; i < n; i += 3)
        crdt_rsx_index_remove(b, it[i].id);
    for (size_t i = 0; i < n; i += 3)
        crdt_rsx_index_upsert(b, it[i].id, it[i].fp);
    crdt_rsx_sketch_t x, y;
    crdt_rsx_index_total(b, &x);
    crdt_rsx_index_total(c, &y);
    ok(crdt_rsx_sketch_equal(&x, &y) && crdt_rsx_index_count(b) == n,
       "build: removing and re-adding a third restores the sketch");
    crdt_rsx_item_t unsorted[2] = {{5, 1}, {3, 1}}, dup[2] = {{5, 1}, {5, 2}};
    is_int(crdt_rsx_index_build(b, unsorted, 2), CRDT_EINVAL, "build: unsorted refused");
    is_int(crdt_rsx_index_build(b, dup, 2), CRDT_EINVAL, "build: duplicate refused");
    ok(crdt_rsx_index_count(b) == n, "build: a refused build leaves the index unchanged");
    is_int(crdt_rsx_index_build(b, NULL, 0), 0, "build: empty");
    ok(crdt_rsx_index_count(b) == 0, "build: empty index has no items");
    free(it);
    crdt_rsx_index_free(b);
    crdt_rsx_index_free(c);
    crdt_rsx_index_free(ix);
}

/* ---- reconciliation ------------------------------------------------------------------------ */

typedef struct run {
    int msgs;
    size_t bytes[2];
    int rc;
} run_t;

/* Runs a whole session between a (initiator) and b; returns the sessions for inspection. */
static run_t reconcile(const crdt_rsx_index_t *a, const crdt_rsx_index_t *b,
                       const crdt_rsx_config_t *cfg, crdt_rsx_session_t **sa,
                       crdt_rsx_session_t **sb)
{
    run_t r = {0};
    *sa = crdt_rsx_session_new(a, true, cfg);
    *sb = crdt_rsx_session_new(b, false, cfg);
    crdt_buf_t msg = {0}, reply = {0};
    r.rc = crdt_rsx_initiate(*sa, &msg);
    r.msgs = 1;
    r.bytes[0] += msg.len;
    int turn = 1; /* who receives next: 1 = b */
    bool done_a = false, done_b = false;
    while (!r.rc && msg.len && r.msgs < 2000) {
        crdt_error_t err;
        bool done = false;
        reply.len = 0;
        crdt_rsx_session_t *s = turn ? *sb : *sa;
        r.rc = crdt_rsx_receive(s, msg.data, msg.len, &reply, &done, &err);
        if (r.rc)
            diag("receive failed: %s at %zu", err.text, err.offset);
        if (turn)
            done_b = done;
        else
            done_a = done;
        crdt_buf_t t = msg;
        msg = reply;
        reply = t;
        if (msg.len) {
            r.msgs++;
            r.bytes[turn] += msg.len;
        }
        turn ^= 1;
    }
    if (!r.rc && (!done_a || !done_b))
        r.rc = -100;
    crdt_buf_free(&msg);
    crdt_buf_free(&reply);
    return r;
}

/* Expected differences seen from x against y (both sorted). */
static size_t brute_diff(const crdt_rsx_item_t *x, size_t nx, const crdt_rsx_item_t *y, size_t ny,
                         crdt_rsx_diff_t *out)
{
    size_t i = 0, j = 0, n = 0;
    while (i < nx || j < ny) {
        if (j == ny || (i < nx && x[i].id < y[j].id)) {
            out[n++] = (crdt_rsx_diff_t){x[i++].id, CRDT_RSX_WE_HAVE};
        } else if (i == nx || y[j].id < x[i].id) {
            out[n++] = (crdt_rsx_diff_t){y[j++].id, CRDT_RSX_THEY_HAVE};
        } else {
            if (x[i].fp != y[j].fp)
                out[n++] = (crdt_rsx_diff_t){x[i].id, CRDT_RSX_WE_HAVE | CRDT_RSX_THEY_HAVE};
            i++, j++;
        }
    }
    return n;
}

static bool diffs_match(crdt_rsx_session_t *s, const crdt_rsx_diff_t *want, size_t nwant)
{
    const crdt_rsx_diff_t *got;
    size_t n = crdt_rsx_session_diffs(s, &got);
    if (n != nwant) {
        diag("found %zu differing ids, expected %zu", n, nwant);
        return false;
    }
    crdt_rsx_diff_t *sorted = malloc((n ? n : 1) * sizeof *sorted);
    if (n)
        memcpy(sorted, got, n * sizeof *sorted);
    qsort(sorted, n, sizeof *sorted, diff_cmp);
    bool okk = true;
    for (size_t i = 0; i < n && okk; i++)
        if (sorted[i].id != want[i].id || sorted[i].flags != want[i].flags) {
            diag("diff %zu: got id %llu flags %u, expected id %llu flags %u", i,
                 (unsigned long long)sorted[i].id, sorted[i].flags, (unsigned long long)want[i].id,
                 want[i].flags);
            okk = false;
        }
    free(sorted);
    return okk;
}

static size_t dedup(crdt_rsx_item_t *it, size_t n)
{
    qsort(it, n, sizeof *it, item_cmp);
    size_t m = 0;
    for (size_t i = 0; i < n; i++)
        if (!m || it[i].id != it[m - 1].id)
            it[m++] = it[i];
    return m;
}

static void test_pairs(int cases)
{
    int bad = 0, too_many_rounds = 0, failed = 0;
    int worst_msgs = 0;
    for (int c = 0; c < cases; c++) {
        bool tight = c % 5 == 4;
        size_t n = (size_t)(c % 7 == 0 ? below(50) : below(tight ? 2001 : 20001));
        int shape = (int)below(10);
        size_t d = shape == 0 ? 0 : shape <= 3 ? below(10) : shape <= 7 ? below(n / 4 + 2) : n;
        crdt_rsx_item_t *x = malloc((n + 1) * sizeof *x), *y = malloc((n + d + 1) * sizeof *y);
        for (size_t i = 0; i < n; i++)
            x[i] = (crdt_rsx_item_t){below(P), rnd()};
        n = dedup(x, n);
        size_t ny = 0;
        if (shape == 8) { /* one side empty */
            ny = 0;
        } else if (shape == 9) { /* all different */
            for (size_t i = 0; i < n; i++)
                y[ny++] = (crdt_rsx_item_t){below(P), rnd()};
        } else {
            memcpy(y, x, n * sizeof *x);
            ny = n;
            for (size_t k = 0; k < d && ny; k++) {
                size_t at = (size_t)below(ny);
                switch (below(3)) {
                case 0: y[at] = y[--ny]; break;                              /* only x has it */
                case 1: y[ny++] = (crdt_rsx_item_t){below(P), rnd()}; break; /* only y */
                default: y[at].fp ^= 1 + below(UINT64_MAX); break;           /* both, differ */
                }
            }
        }
        ny = dedup(y, ny);
        bool swap = below(2);
        crdt_rsx_index_t *ia = crdt_rsx_index_new(), *ib = crdt_rsx_index_new();
        if (below(2)) {
            crdt_rsx_index_build(ia, swap ? y : x, swap ? ny : n);
            crdt_rsx_index_build(ib, swap ? x : y, swap ? n : ny);
        } else {
            for (size_t i = 0; i < n; i++)
                crdt_rsx_index_upsert(swap ? ib : ia, x[i].id, x[i].fp);
            for (size_t i = 0; i < ny; i++)
                crdt_rsx_index_upsert(swap ? ia : ib, y[i].id, y[i].fp);
        }
        crdt_rsx_diff_t *wa = malloc((n + ny + 1) * sizeof *wa),
                        *wb = malloc((n + ny + 1) * sizeof *wb);
        size_t nwa = swap ? brute_diff(y, ny, x, n, wa) : brute_diff(x, n, y, ny, wa);
        size_t nwb = swap ? brute_diff(x, n, y, ny, wb) : brute_diff(y, ny, x, n, wb);
        crdt_rsx_config_t cfg;
        crdt_rsx_config_init(&cfg);
        cfg.seed = rnd();
        if (c % 3 == 2) /* no estimator: the responder probes instead */
            cfg.estimator_levels = 0;
        if (tight) /* tight limits: deferral paths */
            cfg.max_cells = 64 + below(200), cfg.max_msg = 4096 + below(8192);
        crdt_rsx_session_t *sa, *sb;
        run_t r = reconcile(ia, ib, &cfg, &sa, &sb);
        if (r.rc) {
            failed++;
            diag("case %d: n=%zu ny=%zu d=%zu: session failed %d", c, n, ny, d, r.rc);
        } else if (!diffs_match(sa, wa, nwa) || !diffs_match(sb, wb, nwb)) {
            bad++;
            diag("case %d: n=%zu ny=%zu d=%zu shape %d: wrong differences", c, n, ny, d, shape);
        }
        if (!tight && r.msgs > (cfg.estimator_levels ? 12 : 14)) {
            too_many_rounds++;
            diag("case %d: n=%zu d=%zu took %d messages", c, n, nwa, r.msgs);
        }
        if (!tight && r.msgs > worst_msgs)
            worst_msgs = r.msgs;
        if (nwa == 0 && (r.msgs != 2 || r.bytes[0] + r.bytes[1] > 400)) {
            bad++;
            diag("case %d: equal sets took %d messages, %zu bytes", c, r.msgs,
                 r.bytes[0] + r.bytes[1]);
        }
        crdt_rsx_session_free(sa);
        crdt_rsx_session_free(sb);
        crdt_rsx_index_free(ia);
        crdt_rsx_index_free(ib);
        free(x), free(y), free(wa), free(wb);
    }
    is_int(failed, 0, "reconcile: %d random pairs, no session failed", cases);
    is_int(bad, 0, "reconcile: both sides find exactly the brute-force differences");
    is_int(too_many_rounds, 0,
           "reconcile: at most 6 round trips with default limits (worst %d msgs)", worst_msgs);
}

static void test_small_cases(void)
{
    crdt_rsx_index_t *a = crdt_rsx_index_new(), *b = crdt_rsx_index_new();
    crdt_rsx_session_t *sa, *sb;
    run_t r = reconcile(a, b, NULL, &sa, &sb);
    ok(!r.rc && r.msgs == 2, "two empty replicas: one round trip (%d msgs, %zu+%zu bytes)", r.msgs,
       r.bytes[0], r.bytes[1]);
    const crdt_rsx_diff_t *d;
    ok(crdt_rsx_session_diffs(sa, &d) == 0 && crdt_rsx_session_diffs(sb, &d) == 0,
       "two empty replicas: no differences");
    crdt_rsx_session_free(sa);
    crdt_rsx_session_free(sb);

    for (uint64_t i = 0; i < 1000; i++) {
        crdt_rsx_index_upsert(a, crdt_rsx_key_id(&i, sizeof i), i * 7);
        crdt_rsx_index_upsert(b, crdt_rsx_key_id(&i, sizeof i), i * 7);
    }
    r = reconcile(a, b, NULL, &sa, &sb);
    ok(!r.rc && r.msgs == 2 && r.bytes[0] + r.bytes[1] <= 400,
       "equal replicas: one round trip, %zu + %zu bytes", r.bytes[0], r.bytes[1]);
    crdt_rsx_session_free(sa);
    crdt_rsx_session_free(sb);

    uint64_t k = 5;
    crdt_rsx_index_upsert(b, crdt_rsx_key_id(&k, sizeof k), 1234);
    r = reconcile(a, b, NULL, &sa, &sb);
    ok(!r.rc && r.msgs == 2, "one differing fp: found in one round trip (%d msgs, %zu bytes)",
       r.msgs, r.bytes[0] + r.bytes[1]);
    ok(crdt_rsx_session_diffs(sa, &d) == 1 && d[0].id == crdt_rsx_key_id(&k, sizeof k) &&
           d[0].flags == (CRDT_RSX_WE_HAVE | CRDT_RSX_THEY_HAVE),
       "one differing fp: initiator knows the id and that both hold it");
    ok(crdt_rsx_session_diffs(sb, &d) == 1 && d[0].flags == (CRDT_RSX_WE_HAVE | CRDT_RSX_THEY_HAVE),
       "one differing fp: responder too");
    crdt_rsx_session_free(sa);
    crdt_rsx_session_free(sb);

    crdt_rsx_index_remove(b, crdt_rsx_key_id(&k, sizeof k));
    r = reconcile(a, b, NULL, &sa, &sb);
    ok(!r.rc && r.msgs == 2 && crdt_rsx_session_diffs(sa, &d) == 1 &&
           d[0].flags == CRDT_RSX_WE_HAVE && crdt_rsx_session_diffs(sb, &d) == 1 &&
           d[0].flags == CRDT_RSX_THEY_HAVE,
       "one missing key: one round trip, each side knows who holds it");
    crdt_rsx_session_free(sa);
    crdt_rsx_session_free(sb);

    /* API misuse */
    crdt_buf_t out = {0};
    crdt_rsx_session_t *s = crdt_rsx_session_new(a, false, NULL);
    is_int(crdt_rsx_initiate(s, &out), CRDT_EINVAL, "responder cannot initiate");
    crdt_rsx_session_free(s);
    s = crdt_rsx_session_new(a, true, NULL);
    is_int(crdt_rsx_initiate(s, &out), 0, "initiate");
    is_int(crdt_rsx_initiate(s, &out), CRDT_EINVAL, "initiate twice refused");
    crdt_rsx_session_free(s);
    crdt_buf_free(&out);
    ok(crdt_rsx_key_id("a", 1) < P && crdt_rsx_key_id("", 0) < P, "key ids lie in the field");
    /* The hashes are part of the wire protocol: pin them. */
    ok(crdt_rsx_key_id("crdtd", 5) == UINT64_C(1784805800598116375) &&
           crdt_rsx_state_fp("crdtd", 5) == UINT64_C(3043510914219191933),
       "key id and state fingerprint hashes are unchanged (wire protocol v1)");
    /* The state fingerprint is the embedded replica's key fingerprint (crdt_hash64, "crdtfp01"),
     * so an embedded node's items and a Redis site's agree on a key in the same state. */
    bool same_fp = true;
    for (size_t len = 0; len < 80; len++) {
        uint8_t buf[80];
        for (size_t i = 0; i < len; i++)
            buf[i] = (uint8_t)(i * 37 + len);
        same_fp = same_fp && crdt_rsx_state_fp(buf, len) ==
                                 crdt_hash64(buf, len, UINT64_C(0x6372647466703031));
    }
    ok(same_fp, "crdt_rsx_state_fp is crdt_hash64 with the seed \"crdtfp01\" (lengths 0..79)");
    crdt_rsx_index_free(a);
    crdt_rsx_index_free(b);
}

/* ---- untrusted input ---------------------------------------------------------------------- */

/* Collects real messages of a session, to mutate. */
static void capture(const crdt_rsx_index_t *a, const crdt_rsx_index_t *b, crdt_buf_t *msgs,
                    int *nmsgs, int max)
{
    crdt_rsx_config_t cfg;
    crdt_rsx_config_init(&cfg);
    cfg.seed = 42;
    crdt_rsx_session_t *sa = crdt_rsx_session_new(a, true, &cfg),
                       *sb = crdt_rsx_session_new(b, false, &cfg);
    crdt_buf_t msg = {0};
    crdt_rsx_initiate(sa, &msg);
    *nmsgs = 0;
    int turn = 1;
    while (msg.len && *nmsgs < max) {
        msgs[(*nmsgs)++] = msg;
        crdt_buf_t reply = {0};
        bool done;
        crdt_error_t err;
        if (crdt_rsx_receive(turn ? sb : sa, msg.data, msg.len, &reply, &done, &err))
            break;
        msg = reply;
        turn ^= 1;
    }
    if (*nmsgs == max || !msg.len)
        crdt_buf_free(&msg);
    crdt_rsx_session_free(sa);
    crdt_rsx_session_free(sb);
}

/* Replays messages 0..k-1 to fresh sessions, then feeds `bad` as message k. Returns the rc. */
static int feed(const crdt_rsx_index_t *a, const crdt_rsx_index_t *b, const crdt_buf_t *msgs, int k,
                const uint8_t *bad, size_t len, crdt_error_t *err)
{
    crdt_rsx_config_t cfg;
    crdt_rsx_config_init(&cfg);
    cfg.seed = 42;
    crdt_rsx_session_t *sa = crdt_rsx_session_new(a, true, &cfg),
                       *sb = crdt_rsx_session_new(b, false, &cfg);
    crdt_buf_t out = {0};
    crdt_rsx_initiate(sa, &out);
    bool done;
    for (int i = 0; i < k; i++) {
        out.len = 0;
        crdt_rsx_receive(i % 2 == 0 ? sb : sa, msgs[i].data, msgs[i].len, &out, &done, err);
    }
    out.len = 0;
    crdt_rsx_session_t *s = k % 2 == 0 ? sb : sa;
    int rc = crdt_rsx_receive(s, bad, len, &out, &done, err);
    if (rc) { /* a dead session stays dead */
        crdt_error_t e2;
        if (crdt_rsx_receive(s, bad, len, &out, &done, &e2) != rc)
            rc = -999;
    }
    crdt_buf_free(&out);
    crdt_rsx_session_free(sa);
    crdt_rsx_session_free(sb);
    return rc;
}

static void test_malformed(void)
{
    crdt_rsx_index_t *a = crdt_rsx_index_new(), *b = crdt_rsx_index_new();
    for (uint64_t i = 0; i < 3000; i++) {
        uint64_t id = crdt_rsx_key_id(&i, sizeof i);
        crdt_rsx_index_upsert(a, id, i);
        if (i % 50)
            crdt_rsx_index_upsert(b, id, i % 97 ? i : i + 1);
    }
    crdt_buf_t msgs[16];
    int n;
    capture(a, b, msgs, &n, 16);
    cmp_ok(n, ">=", 4, "captured a session of %d messages", n);
    int trunc_bad = 0, flip_bad = 0, rand_bad = 0, msgs_err = 0;
    crdt_error_t err;
    for (int k = 0; k < n; k++) {
        /* every truncation (sampled for long messages) is refused with a message */
        size_t step = msgs[k].len > 150 ? msgs[k].len / 75 : 1;
        for (size_t len = 0; len < msgs[k].len; len += step) {
            int rc = feed(a, b, msgs, k, msgs[k].data, len, &err);
            trunc_bad += rc != CRDT_EDECODE || !err.text[0];
        }
        /* trailing garbage */
        uint8_t *ext = malloc(msgs[k].len + 1);
        memcpy(ext, msgs[k].data, msgs[k].len);
        ext[msgs[k].len] = 0;
        trunc_bad += feed(a, b, msgs, k, ext, msgs[k].len + 1, &err) != CRDT_EDECODE;
        /* byte flips: refused or accepted, never a crash (ASan watches) */
        for (int f = 0; f < 100; f++) {
            memcpy(ext, msgs[k].data, msgs[k].len);
            ext[below(msgs[k].len)] ^= (uint8_t)(1 + below(255));
            int rc = feed(a, b, msgs, k, ext, msgs[k].len, &err);
            flip_bad += rc != 0 && rc != CRDT_EDECODE && rc != CRDT_ELIMIT;
            msgs_err += rc != 0;
        }
        free(ext);
    }
    /* random bytes as any message of a session */
    uint8_t buf[512];
    for (int t = 0; t < 1500; t++) {
        size_t len = (size_t)below(sizeof buf);
        for (size_t i = 0; i < len; i++)
            buf[i] = (uint8_t)rnd();
        if (len >= 2 && below(2))
            buf[0] = 1, buf[1] = (uint8_t)(1 + below(2));
        int k = (int)below((uint64_t)n);
        int rc = feed(a, b, msgs, k, buf, len, &err);
        rand_bad += rc != 0 && rc != CRDT_EDECODE && rc != CRDT_ELIMIT;
    }
    is_int(trunc_bad, 0, "every truncated or extended message is refused with CRDT_EDECODE");
    is_int(flip_bad, 0, "byte flips are refused cleanly or accepted (%d refused)", msgs_err);
    is_int(rand_bad, 0, "random bytes are refused cleanly");

    /* specific faults */
    crdt_rsx_config_t small;
    crdt_rsx_config_init(&small);
    small.max_msg = 300;
    crdt_rsx_session_t *s = crdt_rsx_session_new(b, false, &small);
    crdt_buf_t out = {0};
    bool done;
    uint8_t big[400] = {1, 1, 1};
    is_int(crdt_rsx_receive(s, big, sizeof big, &out, &done, &err), CRDT_EDECODE,
           "oversized message refused: %s", err.text);
    crdt_rsx_session_free(s);
    uint8_t *first = malloc(msgs[0].len);
    memcpy(first, msgs[0].data, msgs[0].len);
    first[0] = 2;
    is_int(feed(a, b, msgs, 0, first, msgs[0].len, &err), CRDT_EDECODE, "unknown version: %s",
           err.text);
    free(first);
    is_int(feed(a, b, msgs, 1, msgs[0].data, msgs[0].len, &err), CRDT_EDECODE,
           "a first message in the middle: %s", err.text);
    is_int(feed(a, b, msgs, 3, msgs[1].data, msgs[1].len, &err), CRDT_EDECODE,
           "a replayed message: %s", err.text);
    /* a split announcing a huge fan-out in a few bytes */
    uint8_t lie[] = {1, 1, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 4, 0xff, 0xff, 0x3f, 0};
    is_int(feed(a, b, msgs, 0, lie, sizeof lie, &err), CRDT_EDECODE,
           "a huge split in a short message: %s", err.text);
    for (int k = 0; k < n; k++)
        crdt_buf_free(&msgs[k]);
    crdt_buf_free(&out);
    crdt_rsx_index_free(a);
    crdt_rsx_index_free(b);

    /* More differences than max_diffs: the session fails with the limit error, not a decode or
     * overflow one (crdt.h's one enum: CRDT_ELIMIT). */
    crdt_rsx_index_t *la = crdt_rsx_index_new(), *lb = crdt_rsx_index_new();
    for (uint64_t id = 1; id <= 200; id++)
        crdt_rsx_index_upsert(id & 1 ? la : lb, id * 7919, id);
    crdt_rsx_config_t few;
    crdt_rsx_config_init(&few);
    few.max_diffs = 10;
    crdt_rsx_session_t *sa, *sb;
    run_t r = reconcile(la, lb, &few, &sa, &sb);
    is_int(r.rc, CRDT_ELIMIT, "200 differences over max_diffs 10: CRDT_ELIMIT");
    crdt_rsx_session_free(sa);
    crdt_rsx_session_free(sb);
    crdt_rsx_index_free(la);
    crdt_rsx_index_free(lb);
}

int main(void)
{
    const char *env = getenv("CRDT_SEED");
    uint64_t seed = env ? strtoull(env, NULL, 0) : (uint64_t)time(NULL);
    diag("seed %llu (set CRDT_SEED to replay)", (unsigned long long)seed);
    rng_state = seed;
    test_small_cases();
    test_index();
    test_pairs(getenv("RSX_CASES") ? atoi(getenv("RSX_CASES")) : 200);
    test_malformed();
    return done_testing();
}
