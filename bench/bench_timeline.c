/* bench_timeline.c - the timeline against a Redis-style skiplist+hash baseline, same process
 *
 * Figures (each a median of --runs runs, baseline and timeline interleaved in one process):
 *   inserts  1M (member, score) writes over 10,000 keys, max size 1,000 (the baseline trims the
 *            Redis way: ZADD then ZREMRANGEBYRANK of the lowest); three shapes of workload;
 *   selects  newest 50 of a random key, 1M times, after the inserts; and newest 50 coalesced
 *            over 3 random keys (baseline: ZREVRANGE 0 49 of each, merged, as roshi reads);
 *   memory   bytes per live entry beyond member bytes, for 1,000 and 10,000 entries
 *            (crdt_obj_stats and mallinfo2 deltas) and over the whole insert workload;
 *   merge    two 10,000-entry timelines sharing half their entries (baseline: ZUNIONSTORE MAX);
 *   codec    encode / decode MB/s of a 10,000-entry timeline (baseline: an RDB-like dump/load).
 * Usage: bench_timeline [--runs N] [--scale F] [--only workloads|select|memory|merge]
 * (scale < 1 shrinks everything for a smoke run; --only runs one section)
 */
#include <malloc.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "crdt.h"
#include "zset_baseline.h"

#define MAX_RUNS 15
#define SELECT_N 50

static int runs = 5;
static double scale = 1.0;
static const char *only;
static volatile double sink; /* keeps results alive so loops are not optimised away */

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static int dbl_cmp(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static double median(double *v, int n)
{
    qsort(v, (size_t)n, sizeof(*v), dbl_cmp);
    return n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
}

static uint64_t rng_state = 88172645463325252ull;
static inline uint64_t rnd(void)
{
    rng_state ^= rng_state << 13;
    rng_state ^= rng_state >> 7;
    rng_state ^= rng_state << 17;
    return rng_state;
}

static size_t heap_used(void) { return mallinfo2().uordblks; }

/* ---- workloads ------------------------------------------------------------------------------ */

typedef struct member {
    char b[15];
    uint8_t len;
} member_t;

typedef struct workload {
    const char *name;
    uint32_t keys, max_size;
    size_t writes;
    uint32_t *key;
    member_t *m;
    double *score;
} workload_t;

enum { SCORES_UNIFORM, SCORES_RECENT };

static void fmt_member(member_t *m, uint64_t id)
{
    int n = snprintf(m->b, sizeof(m->b), "item:%llu", (unsigned long long)id);
    m->len = (uint8_t)n;
}

/* Writes: random keys; members "item:<id>" with ids from a space 100x the writes per key, so a
 * few writes update a member; scores uniform in [0, 1e9) or "recent" (a clock with jitter, as
 * feeds see: most writes land near the head). */
static workload_t make_workload(const char *name, uint32_t keys, size_t writes, int scores)
{
    workload_t w = {name, keys, 1000, writes, NULL, NULL, NULL};
    w.key = malloc(writes * sizeof(*w.key));
    w.m = malloc(writes * sizeof(*w.m));
    w.score = malloc(writes * sizeof(*w.score));
    uint64_t id_space = (uint64_t)(writes / keys + 1) * 100;
    for (size_t i = 0; i < writes; i++) {
        w.key[i] = (uint32_t)(rnd() % keys);
        fmt_member(&w.m[i], rnd() % id_space);
        w.score[i] = scores == SCORES_UNIFORM ? (double)(rnd() % 1000000000)
                                              : 1.7e12 + (double)i - (double)(rnd() % 2000);
    }
    return w;
}

static void free_workload(workload_t *w)
{
    free(w->key);
    free(w->m);
    free(w->score);
}

typedef struct result {
    double ins_base[MAX_RUNS], ins_crdt[MAX_RUNS], ins_delta[MAX_RUNS];
    double sel_base[MAX_RUNS], sel_crdt[MAX_RUNS];
    double co_base[MAX_RUNS], co_crdt[MAX_RUNS];
    double mem_base, mem_crdt; /* bytes per live entry beyond member bytes, whole workload */
} result_t;

static double run_base_inserts(const workload_t *w, zset_t **z)
{
    double t0 = now_s();
    for (size_t i = 0; i < w->writes; i++) {
        zset_t *s = z[w->key[i]];
        zset_add(s, w->m[i].b, w->m[i].len, w->score[i]);
        zset_trim(s, w->max_size); /* ZREMRANGEBYRANK key 0 -(max+1) after every ZADD */
    }
    return (double)w->writes / (now_s() - t0);
}

static double run_crdt_inserts(const workload_t *w, crdt_obj_t **tl, bool deltas)
{
    double t0 = now_s();
    if (deltas) {
        for (size_t i = 0; i < w->writes; i++) {
            crdt_obj_t *d;
            crdt_timeline_add(tl[w->key[i]], w->m[i].b, w->m[i].len, w->score[i], &d);
            crdt_obj_free(d);
        }
    } else {
        for (size_t i = 0; i < w->writes; i++)
            crdt_timeline_add(tl[w->key[i]], w->m[i].b, w->m[i].len, w->score[i], NULL);
    }
    return (double)w->writes / (now_s() - t0);
}

static double run_base_selects(zset_t **z, const uint32_t *q, size_t nq)
{
    zset_entry_t out[SELECT_N];
    double acc = 0, t0 = now_s();
    for (size_t i = 0; i < nq; i++) {
        size_t n = zset_revrange(z[q[i]], 0, SELECT_N, out); /* ZREVRANGE key 0 49 */
        acc += n ? out[n - 1].score + (double)out[0].len : 0;
    }
    double r = (double)nq / (now_s() - t0);
    sink = acc;
    return r;
}

static double run_crdt_selects(crdt_obj_t **tl, const uint32_t *q, size_t nq)
{
    crdt_tl_entry_t out[SELECT_N];
    double acc = 0, t0 = now_s();
    for (size_t i = 0; i < nq; i++) {
        const crdt_obj_t *one = tl[q[i]];
        size_t n = crdt_timeline_select(&one, 1, 0, SELECT_N, out, NULL);
        acc += n ? out[n - 1].score + (double)out[0].member_len : 0;
    }
    double r = (double)nq / (now_s() - t0);
    sink = acc;
    return r;
}

#define COALESCE 3

/* Newest 50 over 3 keys, the way roshi reads: ZREVRANGE 0 49 of each key, merged by score then
 * member (as the timeline orders). */
static double run_base_coalesced(zset_t **z, const uint32_t *q, size_t nq)
{
    zset_entry_t in[COALESCE][SELECT_N], out[SELECT_N];
    double acc = 0, t0 = now_s();
    for (size_t i = 0; i + COALESCE <= nq; i += COALESCE) {
        size_t n[COALESCE], at[COALESCE] = {0};
        for (int k = 0; k < COALESCE; k++)
            n[k] = zset_revrange(z[q[i + (size_t)k]], 0, SELECT_N, in[k]);
        size_t got = 0;
        while (got < SELECT_N) {
            int best = -1;
            for (int k = 0; k < COALESCE; k++) {
                if (at[k] == n[k])
                    continue;
                const zset_entry_t *c = &in[k][at[k]];
                if (best < 0)
                    best = k;
                else {
                    const zset_entry_t *b = &in[best][at[best]];
                    size_t l = c->len < b->len ? c->len : b->len;
                    int cmp = memcmp(c->member, b->member, l);
                    if (c->score > b->score ||
                        (c->score == b->score && (cmp > 0 || (cmp == 0 && c->len > b->len))))
                        best = k;
                }
            }
            if (best < 0)
                break;
            out[got++] = in[best][at[best]++];
        }
        acc += got ? out[got - 1].score : 0;
    }
    double r = (double)(nq / COALESCE) / (now_s() - t0);
    sink = acc;
    return r;
}

static double run_crdt_coalesced(crdt_obj_t **tl, const uint32_t *q, size_t nq)
{
    crdt_tl_entry_t out[SELECT_N];
    size_t src[SELECT_N];
    double acc = 0, t0 = now_s();
    for (size_t i = 0; i + COALESCE <= nq; i += COALESCE) {
        const crdt_obj_t *set[COALESCE];
        for (int k = 0; k < COALESCE; k++)
            set[k] = tl[q[i + (size_t)k]];
        size_t n = crdt_timeline_select(set, COALESCE, 0, SELECT_N, out, src);
        acc += n ? out[n - 1].score : 0;
    }
    double r = (double)(nq / COALESCE) / (now_s() - t0);
    sink = acc;
    return r;
}

static void bench_workload(const workload_t *w, size_t nsel, result_t *res)
{
    uint32_t *q = malloc(nsel * sizeof(*q));
    for (size_t i = 0; i < nsel; i++)
        q[i] = (uint32_t)(rnd() % w->keys);
    zset_t **z = malloc(w->keys * sizeof(*z));
    crdt_obj_t **tl = malloc(w->keys * sizeof(*tl));
    for (int r = 0; r < runs; r++) {
        for (uint32_t k = 0; k < w->keys; k++) {
            z[k] = zset_new();
            tl[k] = crdt_timeline_new(w->max_size);
        }
        /* alternate which goes first so neither always gets the warmer caches */
        if (r % 2 == 0) {
            res->ins_base[r] = run_base_inserts(w, z);
            res->ins_crdt[r] = run_crdt_inserts(w, tl, false);
        } else {
            res->ins_crdt[r] = run_crdt_inserts(w, tl, false);
            res->ins_base[r] = run_base_inserts(w, z);
        }
        if (r % 2 == 0) {
            res->sel_base[r] = run_base_selects(z, q, nsel);
            res->sel_crdt[r] = run_crdt_selects(tl, q, nsel);
            res->co_base[r] = run_base_coalesced(z, q, nsel);
            res->co_crdt[r] = run_crdt_coalesced(tl, q, nsel);
        } else {
            res->sel_crdt[r] = run_crdt_selects(tl, q, nsel);
            res->sel_base[r] = run_base_selects(z, q, nsel);
            res->co_crdt[r] = run_crdt_coalesced(tl, q, nsel);
            res->co_base[r] = run_base_coalesced(z, q, nsel);
        }
        if (r == 0) {
            size_t live = 0, mbytes = 0, mem_c = 0, mem_b = 0, blive = 0, bbytes = 0;
            for (uint32_t k = 0; k < w->keys; k++) {
                crdt_stats_t st;
                crdt_obj_stats(tl[k], &st);
                mem_c += st.memory;
                live += st.entries + st.tombstones;
                crdt_tl_entry_t e[64];
                for (size_t off = 0;; off += 64) {
                    size_t n = crdt_timeline_range(tl[k], off, 64, e);
                    for (size_t i = 0; i < n; i++)
                        mbytes += e[i].member_len;
                    if (n < 64)
                        break;
                }
                mem_b += zset_memory(z[k]);
                zset_entry_t ze[64];
                for (size_t off = 0;; off += 64) {
                    size_t n = zset_revrange(z[k], off, 64, ze);
                    for (size_t i = 0; i < n; i++)
                        bbytes += ze[i].len;
                    blive += n;
                    if (n < 64)
                        break;
                }
            }
            res->mem_crdt = (double)(mem_c - mbytes) / (double)live;
            res->mem_base = (double)(mem_b - bbytes) / (double)blive;
        }
        for (uint32_t k = 0; k < w->keys; k++) {
            zset_free(z[k]);
            crdt_obj_free(tl[k]);
        }
        /* the same writes again producing deltas, the way a replica runs them */
        for (uint32_t k = 0; k < w->keys; k++)
            tl[k] = crdt_timeline_new(w->max_size);
        res->ins_delta[r] = run_crdt_inserts(w, tl, true);
        for (uint32_t k = 0; k < w->keys; k++)
            crdt_obj_free(tl[k]);
    }
    free(z);
    free(tl);
    free(q);
}

/* ---- memory of single timelines ------------------------------------------------------------- */

static void bench_memory(size_t n)
{
    member_t *m = malloc(n * sizeof(*m));
    double *s = malloc(n * sizeof(*s));
    size_t mbytes = 0;
    for (size_t i = 0; i < n; i++) {
        fmt_member(&m[i], i * 7919 + 1000000); /* distinct ids */
        s[i] = (double)(rnd() % 1000000000);
        mbytes += m[i].len;
    }
    malloc_trim(0);
    size_t h0 = heap_used();
    crdt_obj_t *t = crdt_timeline_new(0);
    for (size_t i = 0; i < n; i++)
        crdt_timeline_add(t, m[i].b, m[i].len, s[i], NULL);
    size_t h1 = heap_used();
    zset_t *z = zset_new();
    for (size_t i = 0; i < n; i++)
        zset_add(z, m[i].b, m[i].len, s[i]);
    size_t h2 = heap_used();
    crdt_stats_t st;
    crdt_obj_stats(t, &st);
    double c_stats = ((double)st.memory - (double)mbytes) / (double)n;
    double c_heap = ((double)(h1 - h0) - (double)mbytes) / (double)n;
    double b_tally = ((double)zset_memory(z) - (double)mbytes) / (double)n;
    double b_heap = ((double)(h2 - h1) - (double)mbytes) / (double)n;
    printf("memory, %zu entries (member %zu B avg), bytes/entry beyond member bytes:\n", n,
           mbytes / n);
    printf("  %-34s %10.1f %10.1f   ratio %.2f\n", "stats.memory | baseline usable", b_tally,
           c_stats, c_stats / b_tally);
    printf("  %-34s %10.1f %10.1f   ratio %.2f\n", "mallinfo2 delta", b_heap, c_heap,
           c_heap / b_heap);
    crdt_obj_free(t);
    zset_free(z);
    free(m);
    free(s);
}

/* ---- merge and codec ------------------------------------------------------------------------ */

static void bench_merge_codec(size_t n)
{
    crdt_obj_t *a = crdt_timeline_new(0), *b = crdt_timeline_new(0);
    zset_t *za = zset_new(), *zb = zset_new();
    for (size_t i = 0; i < n + n / 2; i++) {
        member_t m;
        fmt_member(&m, i);
        double s = (double)(rnd() % 1000000000);
        if (i < n) {
            crdt_timeline_add(a, m.b, m.len, s, NULL);
            zset_add(za, m.b, m.len, s);
        }
        if (i >= n / 2) { /* the middle half is in both, with the same score */
            crdt_timeline_add(b, m.b, m.len, s, NULL);
            zset_add(zb, m.b, m.len, s);
        }
    }
    int iters = (int)(200 * scale) + 1;
    double m_base[MAX_RUNS], m_crdt[MAX_RUNS], m_clone[MAX_RUNS];
    double e_base[MAX_RUNS], e_crdt[MAX_RUNS], d_base[MAX_RUNS], d_crdt[MAX_RUNS];
    crdt_buf_t enc = {0};
    crdt_obj_encode(a, &enc);
    size_t zlen = zset_dump_size(za);
    uint8_t *zbuf = malloc(zlen);
    zset_dump(za, zbuf);
    for (int r = 0; r < runs; r++) {
        double t0 = now_s();
        for (int i = 0; i < iters; i++) {
            zset_t *u = zset_union_max(za, zb);
            sink = (double)zset_card(u);
            zset_free(u);
        }
        double t1 = now_s();
        for (int i = 0; i < iters; i++) {
            crdt_obj_t *c = crdt_obj_clone(a);
            crdt_obj_merge(c, b);
            sink = (double)crdt_timeline_card(c);
            crdt_obj_free(c);
        }
        double t2 = now_s();
        for (int i = 0; i < iters; i++) {
            crdt_obj_t *c = crdt_obj_clone(a);
            sink = (double)crdt_timeline_card(c);
            crdt_obj_free(c);
        }
        double t3 = now_s();
        m_base[r] = iters / (t1 - t0);
        m_crdt[r] = iters / (t2 - t1);
        m_clone[r] = iters / (t3 - t2);

        crdt_buf_t out = {0};
        t0 = now_s();
        for (int i = 0; i < iters; i++) {
            out.len = 0;
            crdt_obj_encode(a, &out);
        }
        t1 = now_s();
        for (int i = 0; i < iters; i++) {
            crdt_obj_t *d = crdt_obj_decode(enc.data, enc.len, NULL);
            sink = (double)crdt_timeline_card(d);
            crdt_obj_free(d);
        }
        t2 = now_s();
        for (int i = 0; i < iters; i++)
            sink = (double)zset_dump(za, zbuf);
        t3 = now_s();
        for (int i = 0; i < iters; i++) {
            zset_t *d = zset_load(zbuf, zlen);
            sink = (double)zset_card(d);
            zset_free(d);
        }
        double t4 = now_s();
        crdt_buf_free(&out);
        e_crdt[r] = (double)enc.len * iters / (t1 - t0) / 1e6;
        d_crdt[r] = (double)enc.len * iters / (t2 - t1) / 1e6;
        e_base[r] = (double)zlen * iters / (t3 - t2) / 1e6;
        d_base[r] = (double)zlen * iters / (t4 - t3) / 1e6;
    }
    double mb = median(m_base, runs), mc = median(m_crdt, runs), cl = median(m_clone, runs);
    printf("merge of two %zu-entry timelines sharing half (per second):\n", n);
    printf("  %-34s %10.0f %10.0f   ratio %.2f\n", "clone+merge | ZUNIONSTORE MAX", mb, mc,
           mc / mb);
    double merge_only = 1.0 / (1.0 / mc - 1.0 / cl);
    printf("  %-34s %10s %10.0f   (clone alone: %.0f/s)\n", "merge alone (derived)", "-",
           merge_only, cl);
    double eb = median(e_base, runs), ec = median(e_crdt, runs);
    double db = median(d_base, runs), dc = median(d_crdt, runs);
    printf("codec, %zu entries (timeline %zu B, dump %zu B), MB/s:\n", n, enc.len, zlen);
    printf("  %-34s %10.0f %10.0f   ratio %.2f\n", "encode | RDB-like dump", eb, ec, ec / eb);
    printf("  %-34s %10.0f %10.0f   ratio %.2f\n", "decode | RDB-like load", db, dc, dc / db);
    printf("  %-34s %10.2f %10.2f   ratio %.2f\n", "  in M entries/s: encode", eb * 1e6 / zlen * n / 1e6,
           ec * 1e6 / enc.len * n / 1e6, (ec / enc.len) / (eb / zlen));
    printf("  %-34s %10.2f %10.2f   ratio %.2f\n", "  in M entries/s: decode", db * 1e6 / zlen * n / 1e6,
           dc * 1e6 / enc.len * n / 1e6, (dc / enc.len) / (db / zlen));
    crdt_buf_free(&enc);
    free(zbuf);
    crdt_obj_free(a);
    crdt_obj_free(b);
    zset_free(za);
    zset_free(zb);
}

/* ---- select on one big timeline ------------------------------------------------------------- */

static void bench_big_select(size_t n)
{
    crdt_obj_t *t = crdt_timeline_new(0);
    zset_t *z = zset_new();
    for (size_t i = 0; i < n; i++) {
        member_t m;
        fmt_member(&m, i);
        double s = (double)(rnd() % 1000000000);
        crdt_timeline_add(t, m.b, m.len, s, NULL);
        zset_add(z, m.b, m.len, s);
    }
    size_t nq = (size_t)(1000000 * scale) + 1;
    double rb[MAX_RUNS], rc[MAX_RUNS], ob[MAX_RUNS], oc[MAX_RUNS];
    crdt_tl_entry_t out[SELECT_N];
    zset_entry_t zo[SELECT_N];
    for (int r = 0; r < runs; r++) {
        double acc = 0, t0 = now_s();
        for (size_t i = 0; i < nq; i++)
            acc += (double)zset_revrange(z, 0, SELECT_N, zo) + zo[0].score;
        double t1 = now_s();
        for (size_t i = 0; i < nq; i++)
            acc += (double)crdt_timeline_range(t, 0, SELECT_N, out) + out[0].score;
        double t2 = now_s();
        /* deep pages: offset 5,000 (ZREVRANGE 5000 5049 walks the skiplist by rank) */
        for (size_t i = 0; i < nq / 10; i++)
            acc += (double)zset_revrange(z, n / 2, SELECT_N, zo) + zo[0].score;
        double t3 = now_s();
        for (size_t i = 0; i < nq / 10; i++)
            acc += (double)crdt_timeline_range(t, n / 2, SELECT_N, out) + out[0].score;
        double t4 = now_s();
        sink = acc;
        rb[r] = (double)nq / (t1 - t0);
        rc[r] = (double)nq / (t2 - t1);
        ob[r] = (double)(nq / 10) / (t3 - t2);
        oc[r] = (double)(nq / 10) / (t4 - t3);
    }
    double b = median(rb, runs), c = median(rc, runs);
    printf("select on one %zu-entry timeline (per second):\n", n);
    printf("  %-34s %10.0f %10.0f   ratio %.2f\n", "newest 50", b, c, c / b);
    b = median(ob, runs);
    c = median(oc, runs);
    printf("  %-34s %10.0f %10.0f   ratio %.2f\n", "50 from offset n/2", b, c, c / b);
    crdt_obj_free(t);
    zset_free(z);
}

int main(int argc, char **argv)
{
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--runs") && i + 1 < argc)
            runs = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--scale") && i + 1 < argc)
            scale = atof(argv[++i]);
        else if (!strcmp(argv[i], "--only") && i + 1 < argc)
            only = argv[++i];
        else {
            fprintf(stderr,
                    "usage: %s [--runs N (1..%d)] [--scale F] "
                    "[--only workloads|select|memory|merge]\n",
                    argv[0], MAX_RUNS);
            return 2;
        }
    }
    if (runs < 1 || runs > MAX_RUNS || scale <= 0) {
        fprintf(stderr, "bad --runs or --scale\n");
        return 2;
    }
    size_t writes = (size_t)(1000000 * scale), nsel = (size_t)(1000000 * scale);
    uint32_t keys = (uint32_t)(10000 * scale) + 1;
    printf("timeline vs Redis-style skiplist+hash, median of %d runs, interleaved; "
           "columns: baseline, timeline, timeline/baseline\n",
           runs);
    for (int k = 0; (!only || !strcmp(only, "workloads")) && k < 3; k++) {
        /* the workload first; the others are variations on it (fewer selects: cold
         * skiplist walks make the baseline's selects slow, and the machine is shared) */
        workload_t w =
            k == 0   ? make_workload("uniform scores, 10k keys", keys, writes, SCORES_UNIFORM)
            : k == 1 ? make_workload("recent scores (feed), 10k keys", keys, writes, SCORES_RECENT)
                     : make_workload("uniform, 100 keys (trimming)", (uint32_t)(100 * scale) + 1,
                                     writes, SCORES_UNIFORM);
        workload_t *ws = &w;
        result_t res;
        size_t sel = k == 0 ? nsel : nsel / 4;
        bench_workload(ws, sel, &res);
        double ib = median(res.ins_base, runs), ic = median(res.ins_crdt, runs);
        double id = median(res.ins_delta, runs);
        double sb = median(res.sel_base, runs), sc = median(res.sel_crdt, runs);
        printf("%s: %zu writes over %u keys, max size %u, %zu selects\n", ws->name, ws->writes,
               ws->keys, ws->max_size, sel);
        printf("  %-34s %10.0f %10.0f   ratio %.2f\n", "inserts/s", ib, ic, ic / ib);
        printf("  %-34s %10.0f %10.0f   ratio %.2f\n", "inserts/s, with deltas made", ib, id,
               id / ib);
        printf("  %-34s %10.0f %10.0f   ratio %.2f\n", "newest-50 selects/s", sb, sc, sc / sb);
        double cb = median(res.co_base, runs), cc = median(res.co_crdt, runs);
        printf("  %-34s %10.0f %10.0f   ratio %.2f\n", "coalesced newest-50 of 3 keys/s", cb, cc,
               cc / cb);
        printf("  %-34s %10.1f %10.1f   ratio %.2f\n", "bytes/entry beyond members", res.mem_base,
               res.mem_crdt, res.mem_crdt / res.mem_base);
        free_workload(ws);
    }
    if (!only || !strcmp(only, "select"))
        bench_big_select((size_t)(10000 * scale));
    if (!only || !strcmp(only, "memory")) {
        bench_memory((size_t)(1000 * scale));
        bench_memory((size_t)(10000 * scale));
    }
    if (!only || !strcmp(only, "merge"))
        bench_merge_codec((size_t)(10000 * scale));
    return 0;
}
