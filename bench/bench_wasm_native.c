/* bench_wasm_native.c - the native half of bench_wasm.sh: timeline apply and merge in libcrdt
 *
 * The workload bench_wasm.mjs runs in WebAssembly, step for step: N adds of "post:<i>" into one
 * timeline bounded to 1,000, each returning its delta's encoding (what a replica sends), then
 * those deltas merged one by one into a fresh timeline of the same bound. Scores come from the
 * same 32-bit LCG on both sides, so the final states are identical: both print a checksum of the
 * final encoding and bench_wasm.sh refuses figures whose checksums differ.
 * Each write goes into one reused delta object (crdt_timeline_add_into), encoded into one buffer
 * and copied into a block of its own, as crdt.wasm and crdt-wasm.js do it.
 * One untimed warm-up pass of min(N, 20000) first, as on the wasm side.
 * Then the same apply and merge again with the deltas kept another way (the log variant): each
 * appended to one growing byte buffer, the merge reading them from it. Both sides keep what they
 * keep the same way there, where above the wasm side holds N Uint8Arrays in the JavaScript heap
 * (whose garbage collector costs it more than N malloc'd blocks cost here): run_log.
 * Usage: bench_wasm_native N  -> prints "apply_ops_s X", "merge_ops_s Y" (wall clock),
 * "apply_cpu_ops_s", "merge_cpu_ops_s" (per second of the process's CPU time),
 * "apply_drop_cpu_ops_s" (the adds again, each delta dropped once made), "drop_bytes",
 * "state_fnv Z", and for the log variant "apply_log_ops_s", "merge_log_ops_s",
 * "apply_log_cpu_ops_s", "merge_log_cpu_ops_s", "log_fnv" (the log's checksum), and "keep_cpu_ns"
 * (the CPU ns of making and keeping one 30-byte copy: run_keep)
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "crdt.h"
#ifdef BENCH_WASI
/* bench_wasm_wasi.sh's build, for wasm32-wasi with crdt/wasm/crdt_wasm.c: the calls crdt-wasm.js
 * makes for a timeline write and a merge, so the wasm side runs what crdt.wasm runs per call */
void crdt_wasm_init(int count_heap);
int crdt_wasm_timeline_write(crdt_obj_t *t, int kind, const void *bytes, size_t len, double score);
int crdt_wasm_obj_merge_encoded(crdt_obj_t *dst, const void *p, size_t len);
const uint8_t *crdt_wasm_out_ptr(void);
size_t crdt_wasm_out_len(void);
#endif

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

/* CPU time of the process (every thread), the figure a loaded machine skews least */
static double cpu_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static uint32_t fnv1a(const uint8_t *p, size_t n)
{
    uint32_t h = 2166136261u;
    for (size_t i = 0; i < n; i++)
        h = (h ^ p[i]) * 16777619u;
    return h;
}

typedef struct result {
    double apply, merge, apply_cpu, merge_cpu;
    uint32_t fnv;
} result_t;

/* The workload's i-th add into tl (scores from the one LCG both sides share, *x its state): rc as
 * crdt_timeline_add_into's, and when 1 the delta's encoding at *d (*dn bytes, valid until the
 * next write). Natively the delta goes into `delta`, encoded into b; in bench_wasm_wasi.sh's build
 * through crdt_wasm_timeline_write, which does the same and leaves it in crdt.wasm's result
 * buffer. */
static inline int write_nth(crdt_obj_t *tl, crdt_obj_t *delta, crdt_buf_t *b, size_t i, uint32_t *x,
                            const uint8_t **d, size_t *dn)
{
    char member[32];
    *x = *x * 1664525u + 1013904223u;
    double score = (double)i + (double)(*x % 100) / 8.0;
    int len = snprintf(member, sizeof member, "post:%zu", i);
#ifdef BENCH_WASI
    (void)delta;
    (void)b;
    int rc = crdt_wasm_timeline_write(tl, CRDT_MUT_ADD, member, (size_t)len, score);
    *d = crdt_wasm_out_ptr();
    *dn = crdt_wasm_out_len();
#else
    int rc = crdt_timeline_add_into(tl, member, (size_t)len, score, delta);
    if (rc == 1) {
        b->len = 0;
        if (crdt_obj_encode(delta, b) < 0)
            return CRDT_ENOMEM;
        *d = b->data;
        *dn = b->len;
    }
#endif
    return rc;
}

/* One encoded delta joined into t (crdt.wasm's call in bench_wasm_wasi.sh's build). */
static inline int merge_one(crdt_obj_t *t, const uint8_t *p, size_t n)
{
#ifdef BENCH_WASI
    return crdt_wasm_obj_merge_encoded(t, p, n);
#else
    return crdt_obj_merge_encoded(t, p, n, NULL);
#endif
}

/* The end of a run: the merged timeline must encode as the applied one (else -1, said with
 * `what`); the two phases' rates (t and c: wall and CPU seconds at their three marks) and the
 * state's checksum into res. */
static int finish(const char *what, const crdt_obj_t *tl, const crdt_obj_t *fresh, size_t n,
                  const double *t, const double *c, result_t *res)
{
    crdt_buf_t a = {0}, b = {0};
    int rc = crdt_obj_encode(tl, &a) < 0 || crdt_obj_encode(fresh, &b) < 0 || a.len != b.len ||
                     fnv1a(a.data, a.len) != fnv1a(b.data, b.len)
                 ? -1
                 : 0;
    if (rc)
        fprintf(stderr, "bench_wasm_native: the %s do not give the state\n", what);
    res->apply = (double)n / (t[1] - t[0]);
    res->merge = (double)n / (t[2] - t[1]);
    res->apply_cpu = (double)n / (c[1] - c[0]);
    res->merge_cpu = (double)n / (c[2] - c[1]);
    res->fnv = fnv1a(a.data, a.len);
    crdt_buf_free(&a);
    crdt_buf_free(&b);
    return rc;
}

static int run(size_t n, result_t *res)
{
    crdt_bytes_t *deltas = calloc(n, sizeof *deltas);
    crdt_obj_t *tl = crdt_timeline_new(1000), *fresh = crdt_timeline_new(1000);
    crdt_obj_t *delta = crdt_timeline_new(0); /* reused by every write, as in crdt.wasm */
    crdt_buf_t b = {0};
    if (!deltas || !tl || !fresh || !delta)
        return -1;
    uint32_t x = 12345;

    double t0 = now_s(), c0 = cpu_s();
    for (size_t i = 0; i < n; i++) {
        const uint8_t *d;
        size_t dn;
        int rc = write_nth(tl, delta, &b, i, &x, &d, &dn);
        if (rc < 0)
            return -1;
        if (rc == 1) {
            /* what crdt-wasm.js does: the encoding copied into a block of exactly its size that
             * the caller keeps */
            if (!(deltas[i].data = malloc(dn)))
                return -1;
            memcpy((void *)deltas[i].data, d, dn);
            deltas[i].len = dn;
        }
    }
    double t1 = now_s(), c1 = cpu_s();
    for (size_t i = 0; i < n; i++)
        if (deltas[i].len && merge_one(fresh, deltas[i].data, deltas[i].len) < 0)
            return -1;
    double t2 = now_s(), c2 = cpu_s();

    if (finish("merged deltas", tl, fresh, n, (double[]){t0, t1, t2}, (double[]){c0, c1, c2}, res))
        return -1;
    for (size_t i = 0; i < n; i++)
        free((void *)deltas[i].data);
    free(deltas);
    crdt_buf_free(&b);
    crdt_obj_free(tl);
    crdt_obj_free(fresh);
    crdt_obj_free(delta);
    return 0;
}

/* The log variant (apply-log, merge-log): the same adds, each delta appended to one growing
 * byte buffer, its end offset noted (what crdt-wasm.js's caller does with the Uint8Array it gets:
 * appends it to one log, a send buffer, and drops it), then the deltas merged into a fresh
 * timeline straight from that buffer. The encoding goes into one reused buffer and is copied onto
 * the log's end, as on the wasm side. *fnv: the log's checksum, compared with the wasm side's. */
static int run_log(size_t n, result_t *res, uint32_t *fnv)
{
    uint32_t *ends = calloc(n ? n : 1, sizeof *ends);
    crdt_obj_t *tl = crdt_timeline_new(1000), *fresh = crdt_timeline_new(1000);
    crdt_obj_t *delta = crdt_timeline_new(0);
    crdt_buf_t b = {0}, log = {0};
    if (!ends || !tl || !fresh || !delta)
        return -1;
    uint32_t x = 12345;

    double t0 = now_s(), c0 = cpu_s();
    for (size_t i = 0; i < n; i++) {
        const uint8_t *d;
        size_t dn;
        int rc = write_nth(tl, delta, &b, i, &x, &d, &dn);
        if (rc < 0)
            return -1;
        if (rc == 1 && crdt_buf_append(&log, d, dn) < 0)
            return -1;
        ends[i] = (uint32_t)log.len;
    }
    double t1 = now_s(), c1 = cpu_s();
    for (size_t i = 0, start = 0; i < n; start = ends[i++])
        if (ends[i] > start && merge_one(fresh, log.data + start, ends[i] - start) < 0)
            return -1;
    double t2 = now_s(), c2 = cpu_s();

    if (finish("logged deltas", tl, fresh, n, (double[]){t0, t1, t2}, (double[]){c0, c1, c2}, res))
        return -1;
    *fnv = fnv1a(log.data, log.len);
    free(ends);
    crdt_buf_free(&b);
    crdt_buf_free(&log);
    crdt_obj_free(tl);
    crdt_obj_free(fresh);
    crdt_obj_free(delta);
    return 0;
}

/* The same adds into another timeline, each delta encoded and dropped (a client that sends each
 * and keeps none): ops per CPU second; *bytes the deltas' total length, compared with the wasm
 * side's. */
static double run_drop(size_t n, size_t *bytes)
{
    crdt_obj_t *tl = crdt_timeline_new(1000), *delta = crdt_timeline_new(0);
    if (!tl || !delta)
        return -1;
    uint32_t x = 12345;
    crdt_buf_t b = {0};
    *bytes = 0;
    double c0 = cpu_s();
    for (size_t i = 0; i < n; i++) {
        const uint8_t *d;
        size_t dn;
        int rc = write_nth(tl, delta, &b, i, &x, &d, &dn);
        if (rc < 0)
            return -1;
        if (rc == 1) {
            /* what the wasm side's copy out is: a block of its own, then dropped */
            void *copy = malloc(dn);
            if (!copy)
                return -1;
            memcpy(copy, d, dn);
            *bytes += dn;
            free(copy);
        }
    }
    double c1 = cpu_s();
    crdt_buf_free(&b);
    crdt_obj_free(tl);
    crdt_obj_free(delta);
    return (double)n / (c1 - c0);
}

/* The floor of the kept variant without libcrdt: N copies of a 30-byte delta (the workload's
 * deltas average 30.4 bytes) made and kept, as run() keeps the real ones (malloc, memcpy), then
 * freed untimed. CPU ns per copy; bench_wasm.mjs's keep() is the JavaScript side (a slice kept). */
static double run_keep(size_t n)
{
    void **keep = calloc(n ? n : 1, sizeof *keep);
    if (!keep)
        return -1;
    unsigned char src[30];
    for (size_t i = 0; i < sizeof src; i++)
        src[i] = (unsigned char)(i * 7 + 1);
    double c0 = cpu_s();
    for (size_t i = 0; i < n; i++) {
        if (!(keep[i] = malloc(sizeof src)))
            return -1;
        memcpy(keep[i], src, sizeof src);
        ((unsigned char *)keep[i])[0] = (unsigned char)i; /* not one block copied n times */
    }
    double c1 = cpu_s();
    for (size_t i = 0; i < n; i++)
        free(keep[i]);
    free(keep);
    return (c1 - c0) * 1e9 / (double)(n ? n : 1);
}

int main(int argc, char **argv)
{
    size_t n = argc > 1 ? strtoul(argv[1], NULL, 10) : 200000;
#ifdef BENCH_WASI
    crdt_wasm_init(0); /* as crdt-wasm.js starts: libcrdt's blocks from heap.c */
#endif
    result_t r;
    /* the same warm-up pass as bench_wasm.mjs (caches and the heap, here) */
    if (run(n < 20000 ? n : 20000, &r) < 0 || run(n, &r) < 0)
        return 1;
    size_t drop_bytes;
    double drop = run_drop(n < 20000 ? n : 20000, &drop_bytes);
    drop = drop < 0 ? drop : run_drop(n, &drop_bytes);
    if (drop < 0)
        return 1;
    result_t l;
    uint32_t log_fnv;
    if (run_log(n < 20000 ? n : 20000, &l, &log_fnv) < 0 || run_log(n, &l, &log_fnv) < 0)
        return 1;
    double keep = run_keep(n < 20000 ? n : 20000);
    keep = keep < 0 ? keep : run_keep(n);
    if (keep < 0)
        return 1;
    if (l.fnv != r.fnv) {
        fprintf(stderr, "bench_wasm_native: the log variant ends in another state\n");
        return 1;
    }
    printf("apply_ops_s %.0f\nmerge_ops_s %.0f\napply_cpu_ops_s %.0f\nmerge_cpu_ops_s %.0f\n"
           "apply_drop_cpu_ops_s %.0f\ndrop_bytes %zu\nstate_fnv %08" PRIx32 "\n",
           r.apply, r.merge, r.apply_cpu, r.merge_cpu, drop, drop_bytes, r.fnv);
    printf("apply_log_ops_s %.0f\nmerge_log_ops_s %.0f\napply_log_cpu_ops_s %.0f\n"
           "merge_log_cpu_ops_s %.0f\nlog_fnv %08" PRIx32 "\n",
           l.apply, l.merge, l.apply_cpu, l.merge_cpu, log_fnv);
    printf("keep_cpu_ns %.1f\n", keep);
    return 0;
}
