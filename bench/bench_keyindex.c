/* bench_keyindex.c - the ordered key index of listings (replicator/src/keyorder.c): what it costs
 * writes of new keys, and what a page costs with it against a pass over every key
 *
 * In memory (no data directory), with gcounter increments at new keys (the cheapest write, so
 * the index's share shows most), keys "user:<hash>" created in scattered order. Per run:
 *   plain    N new keys into a replica nobody has listed (no index: rep_insert's hook does nothing)
 *   indexed  N new keys into a replica listed once first (each new key goes into the index)
 * then, on the indexed replica of N keys:
 *   page     crdt_replica_list_keys of `limit` keys after a random key (the median of 2,000)
 *   pass     one crdt_replica_foreach over every key doing a key comparison each: the floor of
 *            what a page cost when every page was a pass over the keyspace (the REST listing
 *            before the index)
 *   build    the first listing of a replica of N keys (sorting every key into the index)
 * Prints medians over --runs runs and the ratios indexed/plain and pass/page.
 * Usage: bench_keyindex [--keys N] [--limit L] [--runs R]
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "replica.h"

#define MAX_RUNS 15

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static int dcmp(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static double median(double *v, size_t n)
{
    qsort(v, n, sizeof(*v), dcmp);
    return n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
}

static int key_of(char *k, size_t cap, uint64_t i)
{
    uint64_t h = (i + 1) * 0x9E3779B97F4A7C15ull;
    h ^= h >> 29;
    return snprintf(k, cap, "user:%016llx", (unsigned long long)h);
}

static crdt_replica_t *open_mem(void)
{
    crdt_replica_config_t cfg;
    crdt_replica_config_init(&cfg);
    cfg.node_id = 1;
    crdt_error_t err = {0};
    crdt_replica_t *r = crdt_replica_open(&cfg, &err);
    if (!r) {
        fprintf(stderr, "open: %s\n", err.text);
        exit(1);
    }
    return r;
}

static double write_keys(crdt_replica_t *r, size_t n)
{
    crdt_mut_t m = {.type = CRDT_GCOUNTER, .kind = CRDT_MUT_INCR, .n = 1};
    char k[32];
    double t0 = now_s();
    for (size_t i = 0; i < n; i++) {
        int kl = key_of(k, sizeof(k), i);
        if (crdt_replica_write(r, k, (size_t)kl, &m, NULL) != 1) {
            fprintf(stderr, "write failed\n");
            exit(1);
        }
    }
    return now_s() - t0;
}

static int count_cb(const void *key, size_t klen, const crdt_obj_t *o, void *ud)
{
    (void)key, (void)klen, (void)o;
    (*(size_t *)ud)++;
    return 0;
}

typedef struct pass_ctx {
    const char *after;
    size_t alen, above;
} pass_ctx_t;

static int pass_cb(const void *key, size_t klen, const crdt_obj_t *o, void *ud)
{
    pass_ctx_t *c = ud;
    size_t m = klen < c->alen ? klen : c->alen;
    int d = memcmp(key, c->after, m);
    c->above += (d > 0 || (d == 0 && klen > c->alen)) && crdt_obj_is_live(o);
    return 0;
}

int main(int argc, char **argv)
{
    size_t nkeys = 1000000, limit = 100;
    int runs = 5;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--keys") && i + 1 < argc)
            nkeys = strtoull(argv[++i], NULL, 10);
        else if (!strcmp(argv[i], "--limit") && i + 1 < argc)
            limit = strtoull(argv[++i], NULL, 10);
        else if (!strcmp(argv[i], "--runs") && i + 1 < argc)
            runs = atoi(argv[++i]);
        else {
            fprintf(stderr, "usage: bench_keyindex [--keys N] [--limit L] [--runs R]\n");
            return 2;
        }
    }
    if (runs < 1 || runs > MAX_RUNS || nkeys < 1) {
        fprintf(stderr, "runs: 1..%d, keys >= 1\n", MAX_RUNS);
        return 2;
    }
    printf("bench_keyindex: %zu new gcounter keys per run, pages of %zu, %d runs\n", nkeys, limit,
           runs);
    double plain[MAX_RUNS], indexed[MAX_RUNS], page[MAX_RUNS], pass[MAX_RUNS], build[MAX_RUNS];
    for (int run = 0; run < runs; run++) {
        crdt_replica_t *a = open_mem();
        plain[run] = write_keys(a, nkeys);
        /* the first listing of a replica of N keys: the index's build */
        size_t got = 0;
        bool more;
        double t0 = now_s();
        crdt_replica_list_keys(a, NULL, 0, NULL, 0, limit, count_cb, &got, &more);
        build[run] = now_s() - t0;
        crdt_replica_close(a);

        crdt_replica_t *b = open_mem();
        got = 0;
        crdt_replica_list_keys(b, NULL, 0, NULL, 0, 1, count_cb, &got, &more); /* builds it */
        indexed[run] = write_keys(b, nkeys);
        enum { PAGES = 2000 };
        double *pt = malloc(PAGES * sizeof(*pt));
        char k[32];
        size_t total = 0;
        for (int p = 0; p < PAGES; p++) {
            int kl = key_of(k, sizeof(k), (uint64_t)rand() % nkeys);
            got = 0;
            double s0 = now_s();
            crdt_replica_list_keys(b, "user:", 5, k, (size_t)kl, limit, count_cb, &got, &more);
            pt[p] = now_s() - s0;
            total += got;
        }
        page[run] = median(pt, PAGES);
        free(pt);
        int kl = key_of(k, sizeof(k), 12345 % nkeys);
        pass_ctx_t pc = {k, (size_t)kl, 0};
        t0 = now_s();
        crdt_replica_foreach(b, pass_cb, &pc);
        pass[run] = now_s() - t0;
        crdt_replica_close(b);
        printf("run %d: plain %.0f keys/s, indexed %.0f keys/s, page %.1f us (%zu keys listed), "
               "pass %.1f ms, build %.1f ms\n",
               run + 1, (double)nkeys / plain[run], (double)nkeys / indexed[run], page[run] * 1e6,
               total, pass[run] * 1e3, build[run] * 1e3);
    }
    double mp = median(plain, (size_t)runs), mi = median(indexed, (size_t)runs);
    double mg = median(page, (size_t)runs), ms = median(pass, (size_t)runs);
    double mb = median(build, (size_t)runs);
    printf("medians: new keys plain %.0f/s, indexed %.0f/s: indexed/plain %.3f (write-path cost "
           "%.1f%%, %.0f ns per new key)\n",
           (double)nkeys / mp, (double)nkeys / mi, mp / mi, (mi / mp - 1) * 100,
           (mi - mp) / (double)nkeys * 1e9);
    printf("medians: page of %zu on %zu keys %.1f us; one pass over every key %.1f ms: pass/page "
           "%.0fx; first listing (build) %.1f ms\n",
           limit, nkeys, mg * 1e6, ms * 1e3, ms / mg, mb * 1e3);
    return 0;
}
