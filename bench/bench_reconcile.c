/* bench_reconcile.c - anti-entropy bandwidth and time vs a full-digest exchange in the same run
 *
 * Two indexes of N items that differ in d items (half present on one side only, half with another
 * fp) reconcile in-process; the figures are the bytes each way, messages and round trips, and the
 * CPU time of each side. Baseline: the naive exchange of every (id, fp) pair (16 bytes each) with
 * a merge-join, measured here too. Every protocol byte counts as overhead: the library sends no
 * states, only ids and sketches.
 *
 *   bench_reconcile [runs=5] [N list, default 100000,1000000] [d list, default 0,1,10,1000,100000]
 *   (RSX_STATS=1 prints range sketches and ids sent per session on stderr)
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "crdt_reconcile.h"

static uint64_t rng = 12345;
static uint64_t rnd(void)
{
    uint64_t z = (rng += UINT64_C(0x9e3779b97f4a7c15));
    z = (z ^ (z >> 30)) * UINT64_C(0xbf58476d1ce4e5b9);
    z = (z ^ (z >> 27)) * UINT64_C(0x94d049bb133111eb);
    return z ^ (z >> 31);
}

static double now(clockid_t c)
{
    struct timespec ts;
    clock_gettime(c, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static int item_cmp(const void *a, const void *b)
{
    const crdt_rsx_item_t *x = a, *y = b;
    return x->id < y->id ? -1 : x->id > y->id;
}

static int dbl_cmp(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static double median(double *v, int n)
{
    qsort(v, (size_t)n, sizeof *v, dbl_cmp);
    return n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
}

typedef struct result {
    double bytes_ab, bytes_ba, msgs, cpu_a, cpu_b, wall, diffs;
} result_t;

/* One session; times each side's calls with the thread CPU clock. */
static int run_session(const crdt_rsx_index_t *a, const crdt_rsx_index_t *b, uint64_t seed,
                       result_t *r)
{
    crdt_rsx_config_t cfg;
    crdt_rsx_config_init(&cfg);
    cfg.seed = seed;
    memset(r, 0, sizeof *r);
    double w0 = now(CLOCK_MONOTONIC);
    double t0 = now(CLOCK_THREAD_CPUTIME_ID);
    crdt_rsx_session_t *sa = crdt_rsx_session_new(a, true, &cfg);
    crdt_rsx_session_t *sb = crdt_rsx_session_new(b, false, &cfg);
    crdt_buf_t msg = {0}, reply = {0};
    int rc = crdt_rsx_initiate(sa, &msg);
    r->cpu_a += now(CLOCK_THREAD_CPUTIME_ID) - t0;
    r->msgs = 1;
    r->bytes_ab += (double)msg.len;
    int turn = 1;
    bool done = false;
    while (!rc && msg.len) {
        crdt_error_t err;
        reply.len = 0;
        t0 = now(CLOCK_THREAD_CPUTIME_ID);
        rc = crdt_rsx_receive(turn ? sb : sa, msg.data, msg.len, &reply, &done, &err);
        double dt = now(CLOCK_THREAD_CPUTIME_ID) - t0;
        if (turn)
            r->cpu_b += dt;
        else
            r->cpu_a += dt;
        if (rc)
            fprintf(stderr, "session failed: %s\n", err.text);
        if (reply.len) {
            r->msgs++;
            if (turn)
                r->bytes_ba += (double)reply.len;
            else
                r->bytes_ab += (double)reply.len;
        }
        crdt_buf_t t = msg;
        msg = reply;
        reply = t;
        turn ^= 1;
    }
    r->wall = now(CLOCK_MONOTONIC) - w0;
    if (getenv("RSX_STATS")) {
        crdt_rsx_stats_t x, y;
        crdt_rsx_session_stats(sa, &x);
        crdt_rsx_session_stats(sb, &y);
        fprintf(stderr, "cells %llu+%llu ids %llu+%llu est %llu\n",
                (unsigned long long)x.cells_sent, (unsigned long long)y.cells_sent,
                (unsigned long long)x.diff_ids_sent, (unsigned long long)y.diff_ids_sent,
                (unsigned long long)x.estimated_diffs);
    }
    const crdt_rsx_diff_t *d;
    r->diffs = (double)crdt_rsx_session_diffs(sa, &d);
    size_t db = crdt_rsx_session_diffs(sb, &d);
    if ((size_t)r->diffs != db)
        rc = -1;
    crdt_rsx_session_free(sa);
    crdt_rsx_session_free(sb);
    crdt_buf_free(&msg);
    crdt_buf_free(&reply);
    return rc;
}

/* The naive exchange: both sides list every (id, fp) and one merge-joins the other's list. */
static double naive_full_digest(const crdt_rsx_index_t *a, const crdt_rsx_index_t *b, size_t *nd)
{
    double t0 = now(CLOCK_THREAD_CPUTIME_ID);
    size_t na = crdt_rsx_index_count(a), nb = crdt_rsx_index_count(b);
    crdt_rsx_item_t *x = malloc((na + 1) * sizeof *x), *y = malloc((nb + 1) * sizeof *y);
    uint8_t *wire = malloc(nb * 16 + 1);
    crdt_rsx_index_list(a, 0, CRDT_RSX_ID_SPACE, x, na);
    crdt_rsx_index_list(b, 0, CRDT_RSX_ID_SPACE, y, nb);
    memcpy(wire, y, nb * 16); /* "send" */
    memcpy(y, wire, nb * 16);
    size_t i = 0, j = 0, n = 0;
    while (i < na || j < nb) {
        if (j == nb || (i < na && x[i].id < y[j].id))
            i++, n++;
        else if (i == na || y[j].id < x[i].id)
            j++, n++;
        else
            n += x[i++].fp != y[j++].fp;
    }
    *nd = n;
    free(x), free(y), free(wire);
    return now(CLOCK_THREAD_CPUTIME_ID) - t0;
}

static size_t parse_list(const char *s, size_t *out, size_t max)
{
    size_t n = 0;
    while (*s && n < max) {
        out[n++] = (size_t)strtoull(s, (char **)&s, 10);
        if (*s == ',')
            s++;
    }
    return n;
}

int main(int argc, char **argv)
{
    int runs = argc > 1 ? atoi(argv[1]) : 5;
    size_t ns[8] = {100000, 1000000}, ds[16] = {0, 1, 10, 1000, 100000};
    size_t nn = argc > 2 ? parse_list(argv[2], ns, 8) : 2;
    size_t nd = argc > 3 ? parse_list(argv[3], ds, 16) : 5;
    if (runs < 1)
        runs = 1;

    printf("# bench_reconcile: %d runs per row, medians; bytes are protocol bytes (all overhead)\n",
           runs);
    printf("%-9s %-7s %10s %10s %7s %6s %9s %9s %9s %9s %11s %9s %8s\n", "N", "d", "bytes A>B",
           "bytes B>A", "B/diff", "RT/max", "cpu A ms", "cpu B ms", "wall ms", "naive ms",
           "naive bytes", "bytes %", "budget");
    for (size_t in = 0; in < nn; in++) {
        size_t n = ns[in];
        crdt_rsx_item_t *base = malloc(n * sizeof *base);
        for (size_t i = 0; i < n; i++)
            base[i] = (crdt_rsx_item_t){rnd() % CRDT_RSX_ID_SPACE, rnd()};
        qsort(base, n, sizeof *base, item_cmp);
        size_t m = 0;
        for (size_t i = 0; i < n; i++)
            if (!m || base[i].id != base[m - 1].id)
                base[m++] = base[i];
        n = m;
        crdt_rsx_index_t *a = crdt_rsx_index_new();
        double t0 = now(CLOCK_MONOTONIC);
        crdt_rsx_index_build(a, base, n);
        double build = now(CLOCK_MONOTONIC) - t0;
        fprintf(stderr, "# N=%zu: bulk build %.1f ms\n", n, build * 1e3);
        for (size_t id = 0; id < nd; id++) {
            size_t d = ds[id];
            if (d > n)
                continue;
            /* b = a with d changes at distinct random positions: a quarter only in a, a quarter
             * only in b (new ids), half with another fp */
            crdt_rsx_item_t *bi = malloc((n + d) * sizeof *bi);
            memcpy(bi, base, n * sizeof *bi);
            size_t nb = n;
            uint8_t *touched = calloc(n, 1);
            for (size_t k = 0; k < d; k++) {
                size_t at;
                do
                    at = (size_t)(rnd() % n);
                while (touched[at]);
                touched[at] = 1;
                if (k % 4 == 0)
                    bi[at].id = UINT64_MAX; /* removed below */
                else if (k % 4 == 1)
                    bi[nb++] = (crdt_rsx_item_t){rnd() % CRDT_RSX_ID_SPACE, rnd()};
                else
                    bi[at].fp ^= rnd() | 1;
            }
            free(touched);
            qsort(bi, nb, sizeof *bi, item_cmp);
            while (nb && bi[nb - 1].id == UINT64_MAX)
                nb--;
            m = 0;
            for (size_t i = 0; i < nb; i++)
                if (!m || bi[i].id != bi[m - 1].id)
                    bi[m++] = bi[i];
            nb = m;
            crdt_rsx_index_t *b = crdt_rsx_index_new();
            crdt_rsx_index_build(b, bi, nb);
            free(bi);

            double ab[16], ba[16], ms[16], ca[16], cb[16], wl[16], nv[16];
            size_t found = 0, truth = 0;
            int bad = 0;
            for (int r = 0; r < runs && r < 16; r++) {
                result_t res;
                bad |= run_session(a, b, rnd(), &res) != 0;
                ab[r] = res.bytes_ab, ba[r] = res.bytes_ba, ms[r] = res.msgs;
                ca[r] = res.cpu_a * 1e3, cb[r] = res.cpu_b * 1e3, wl[r] = res.wall * 1e3;
                found = (size_t)res.diffs;
                nv[r] = naive_full_digest(a, b, &truth) * 1e3;
            }
            int R = runs < 16 ? runs : 16;
            double maxm = 0;
            for (int r = 0; r < R; r++)
                maxm = ms[r] > maxm ? ms[r] : maxm;
            double mab = median(ab, R), mba = median(ba, R), mms = median(ms, R);
            double total = mab + mba, budget = 64.0 * (double)truth + 4096;
            double naive_bytes = 16.0 * (double)(n + nb);
            printf("%-9zu %-7zu %10.0f %10.0f %7.1f %2.0f/%-2.0f %9.2f %9.2f %9.2f %9.1f %11.0f "
                   "%8.3f%% "
                   "%8s%s\n",
                   n, truth, mab, mba, truth ? total / (double)truth : 0.0,
                   (double)(((int)mms + 1) / 2), (double)(((int)maxm + 1) / 2), median(ca, R),
                   median(cb, R), median(wl, R), median(nv, R), naive_bytes,
                   100 * total / naive_bytes, total <= budget ? "ok" : "OVER",
                   bad || found != truth ? "  MISMATCH" : "");
            fflush(stdout);
            crdt_rsx_index_free(b);
        }
        crdt_rsx_index_free(a);
        free(base);
    }
    return 0;
}
