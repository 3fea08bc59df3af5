/* bench_recovery.c - replica recovery time against reading the same log file, same process
 *
 * Builds a data directory holding a log of N timeline writes (default 10M over 10,000 keys of
 * max size 1,000, fsync policy no, no snapshot), then times, --runs times each, interleaved:
 *   read      a cat-like loop read()ing every log segment in 1 MiB blocks (the baseline; not
 *             the segments' indexes, log-*.idx);
 *   recovery  crdt_replica_open() of the directory in a fresh child process (as a restart):
 *             the log's index read and what follows it scanned; then reads of random keys and
 *             the wait until every key is joined.
 * By default both read the file from the page cache (it was just written; the read runs first
 * each round); --cold drops the pages of the log and of its index from the cache
 * (posix_fadvise DONTNEED) before each read and each recovery. --no-index deletes the index
 * before each recovery, which then scans the whole log (and writes the index again as it goes).
 * Prints the medians and their ratio (target: recovery <= 3x read).
 * Usage: bench_recovery [--writes N] [--keys K] [--max-size M] [--runs R] [--cold]
 *                       [--no-snapshot] [--no-index] [--dir PATH] [--keep] [--reuse]
 * --keep leaves the directory (and a bench.meta file describing its log); --reuse with --dir
 * starts from such a directory instead of writing the log again (for quick iterations; a clean
 * open and close first indexes the log again if a --no-index run left it without).
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "replica.h"

#define MAX_RUNS 15

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

/* CPU seconds (user + system, all threads) this process used so far. */
static double cpu_s(void)
{
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return (double)ru.ru_utime.tv_sec + (double)ru.ru_utime.tv_usec * 1e-6 +
           (double)ru.ru_stime.tv_sec + (double)ru.ru_stime.tv_usec * 1e-6;
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

typedef struct add_op {
    char member[24];
    size_t mlen;
    double score;
} add_op_t;

static int add_cb(crdt_obj_t *o, void *ud, crdt_obj_t **delta)
{
    add_op_t *a = ud;
    return crdt_timeline_add(o, a->member, a->mlen, a->score, delta);
}

/* Reads every log segment of dir (log-<20 digits>) like cat would; returns bytes read. With
 * `evict`, only drops the pages of the segments and of their indexes (log-*.idx) from the page
 * cache instead. With `unlink_index`, only deletes the indexes. */
static uint64_t read_logs(const char *dir, bool evict, bool unlink_index)
{
    static char buf[1 << 20];
    uint64_t total = 0;
    DIR *d = opendir(dir);
    struct dirent *de;
    while (d && (de = readdir(d))) {
        if (strncmp(de->d_name, "log-", 4) != 0)
            continue;
        bool segment = strlen(de->d_name) == 24;
        if (unlink_index) {
            if (!segment)
                unlinkat(dirfd(d), de->d_name, 0);
            continue;
        }
        if (!segment && !evict)
            continue; /* the baseline is reading the log itself */
        char path[4096];
        snprintf(path, sizeof(path), "%s/%s", dir, de->d_name);
        int fd = open(path, O_RDONLY);
        ssize_t n;
        if (evict && fd >= 0) {
            fdatasync(fd);
            posix_fadvise(fd, 0, 0, POSIX_FADV_DONTNEED);
            close(fd);
            continue;
        }
        while (fd >= 0 && (n = read(fd, buf, sizeof(buf))) > 0)
            total += (uint64_t)n;
        if (fd >= 0)
            close(fd);
    }
    if (d)
        closedir(d);
    return total;
}

static uint64_t read_file(const char *path)
{
    static char buf[1 << 20];
    uint64_t total = 0;
    int fd = open(path, O_RDONLY);
    ssize_t n;
    while (fd >= 0 && (n = read(fd, buf, sizeof(buf))) > 0)
        total += (uint64_t)n;
    if (fd >= 0)
        close(fd);
    return total;
}

#define PROBES 200

typedef struct recovery_result {
    int ok;
    double wall, cpu;
    double loaded, loaded_cpu;   /* until every key was joined (crdt_replica_wait_loaded) */
    double probe_p50, probe_p99; /* a read of a random key right after open */
    unsigned long long records, dropped, indexed;
    char why[200];
} recovery_result_t;

/* Opens (recovers) the replica in a forked child and reports how it went; with `digest` not 0
 * the child also checks the recovered keyspace's digest. 0, or -1 if the child could not run. */
static int recover_in_child(const crdt_replica_config_t *cfg, uint64_t digest, uint64_t keys,
                            recovery_result_t *res)
{
    memset(res, 0, sizeof(*res));
    snprintf(res->why, sizeof(res->why), "the child died");
    int fds[2];
    if (pipe(fds) < 0)
        return -1;
    fflush(stdout);
    pid_t pid = fork();
    if (pid < 0)
        return -1;
    if (pid == 0) {
        close(fds[0]);
        recovery_result_t out = {0};
        crdt_error_t err;
        double t0 = now_s(), c0 = cpu_s();
        crdt_replica_t *r = crdt_replica_open(cfg, &err);
        out.wall = now_s() - t0;
        out.cpu = cpu_s() - c0;
        if (r) {
            /* what a client sees right after the restart: reads of random keys, each joined on
             * the spot unless the background threads got to it first */
            double lat[PROBES];
            for (int i = 0; i < PROBES; i++) {
                char key[24];
                size_t klen = (size_t)snprintf(key, sizeof(key), "feed:%llu",
                                               (unsigned long long)(rnd() % keys));
                double q = now_s();
                if (!crdt_replica_get(r, key, klen))
                    _exit(3);
                lat[i] = now_s() - q;
            }
            out.probe_p50 = median(lat, PROBES);
            out.probe_p99 = lat[PROBES * 99 / 100];
            crdt_replica_wait_loaded(r);
            out.loaded = now_s() - t0;
            out.loaded_cpu = cpu_s() - c0;
        }
        if (!r) {
            snprintf(out.why, sizeof(out.why), "%s", err.text);
        } else {
            const crdt_recovery_report_t *rep = crdt_replica_recovery(r);
            out.records = rep->log_records;
            out.indexed = rep->index_records;
            out.dropped = rep->dropped_bytes;
            out.ok = !digest || crdt_replica_digest(r) == digest;
            snprintf(out.why, sizeof(out.why), "recovered keyspace differs (digest)");
        }
        if (write(fds[1], &out, sizeof(out)) != (ssize_t)sizeof(out))
            _exit(1);
        _exit(0); /* no teardown: the next run starts from a fresh process anyway */
    }
    close(fds[1]);
    ssize_t n = read(fds[0], res, sizeof(*res));
    close(fds[0]);
    int status;
    waitpid(pid, &status, 0);
    return n == (ssize_t)sizeof(*res) ? 0 : -1;
}

static void rm_dir(const char *path)
{
    DIR *d = opendir(path);
    struct dirent *de;
    while (d && (de = readdir(d)))
        if (strcmp(de->d_name, ".") && strcmp(de->d_name, ".."))
            unlinkat(dirfd(d), de->d_name, 0);
    if (d)
        closedir(d);
    rmdir(path);
}

int main(int argc, char **argv)
{
    uint64_t writes = 10000000, keys = 10000;
    uint32_t max_size = 1000;
    int runs = 3;
    bool keep = false, cold = false, snapshot = true, reuse = false, index = true;
    char dir[4096] = "";
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!strcmp(a, "--writes") && v)
            writes = strtoull(v, NULL, 10), i++;
        else if (!strcmp(a, "--keys") && v)
            keys = strtoull(v, NULL, 10), i++;
        else if (!strcmp(a, "--max-size") && v)
            max_size = (uint32_t)strtoul(v, NULL, 10), i++;
        else if (!strcmp(a, "--runs") && v)
            runs = atoi(v), i++;
        else if (!strcmp(a, "--dir") && v)
            snprintf(dir, sizeof(dir), "%s", v), i++;
        else if (!strcmp(a, "--no-snapshot"))
            snapshot = false;
        else if (!strcmp(a, "--cold"))
            cold = true;
        else if (!strcmp(a, "--keep"))
            keep = true;
        else if (!strcmp(a, "--reuse"))
            reuse = true;
        else if (!strcmp(a, "--no-index"))
            index = false;
        else {
            fprintf(stderr,
                    "usage: %s [--writes N] [--keys K] [--max-size M] [--runs R] "
                    "[--cold] [--no-snapshot] [--no-index] [--dir PATH] [--keep] [--reuse]\n",
                    argv[0]);
            return 2;
        }
    }
    if (runs < 1 || runs > MAX_RUNS || keys < 1) {
        fprintf(stderr, "runs must be 1..%d, keys >= 1\n", MAX_RUNS);
        return 2;
    }
    if (!dir[0]) {
        snprintf(dir, sizeof(dir), "/tmp/bench_recovery.XXXXXX");
        if (!mkdtemp(dir)) {
            perror("mkdtemp");
            return 1;
        }
        rmdir(dir); /* the replica creates it */
    }

    crdt_replica_config_t cfg;
    crdt_replica_config_init(&cfg);
    cfg.dir = dir;
    cfg.fsync = CRDT_FSYNC_NO;
    cfg.timeline_max_size = max_size;
    cfg.snapshot_log_bytes = 0;
    crdt_error_t err;
    char meta[4200];
    snprintf(meta, sizeof(meta), "%s/bench.meta", dir);
    uint64_t changed = 0, digest = 0, log_bytes = 0;
    double t0;
    crdt_replica_t *r;
    FILE *mf = reuse ? fopen(meta, "r") : NULL;
    if (mf) {
        unsigned long long w, k, c, d, lb;
        unsigned m;
        int ok = fscanf(mf, "%llu %llu %u %llu %llu %llu", &w, &k, &m, &c, &d, &lb) == 6 &&
                 w == writes && k == keys && m == max_size;
        fclose(mf);
        if (!ok) {
            fprintf(stderr, "%s describes another log\n", meta);
            return 1;
        }
        changed = c, digest = d, log_bytes = lb;
        printf("log: reusing %s (%llu writes, %.1f MB)\n", dir, w, (double)lb / 1e6);
        goto measure;
    }
    r = crdt_replica_open(&cfg, &err);
    if (!r) {
        fprintf(stderr, "open %s: %s\n", dir, err.text);
        return 1;
    }
    /* The write side: member ids drawn from a range 4x the bound per key, scores rising, so
     * writes land, trim, raise floors and sometimes lose, as in an activity feed. */
    t0 = now_s();
    for (uint64_t i = 0; i < writes; i++) {
        char key[24];
        size_t klen =
            (size_t)snprintf(key, sizeof(key), "feed:%llu", (unsigned long long)(i % keys));
        add_op_t a;
        a.mlen = (size_t)snprintf(a.member, sizeof(a.member), "item:%llu",
                                  (unsigned long long)(rnd() % (4ull * max_size + 1)));
        a.score = (double)(i / keys) + (double)(rnd() % 1000) / 1000.0;
        uint64_t seq;
        int rc = crdt_replica_mutate(r, key, klen, CRDT_TIMELINE, add_cb, &a, &seq);
        if (rc < 0) {
            fprintf(stderr, "write %llu: %s\n", (unsigned long long)i, crdt_strerror(rc));
            return 1;
        }
        changed += (uint64_t)rc;
        if (i % 1024 == 1023 && crdt_replica_flush(r) < 0) {
            fprintf(stderr, "flush: %s\n", crdt_replica_last_error(r));
            return 1;
        }
    }
    crdt_replica_flush(r);
    double build_s = now_s() - t0;
    crdt_replica_stats_t wst;
    crdt_replica_stats(r, &wst);
    digest = crdt_replica_digest(r);
    log_bytes = wst.log_bytes;
    crdt_replica_close(r);
    if (keep && (mf = fopen(meta, "w"))) {
        fprintf(mf, "%llu %llu %u %llu %llu %llu\n", (unsigned long long)writes,
                (unsigned long long)keys, max_size, (unsigned long long)changed,
                (unsigned long long)digest, (unsigned long long)log_bytes);
        fclose(mf);
    }
    printf("log: %llu writes (%llu changed) over %llu keys, max size %u: %.1f MB in %.2f s "
           "(%.0f writes/s)\n",
           (unsigned long long)writes, (unsigned long long)changed, (unsigned long long)keys,
           max_size, (double)log_bytes / 1e6, build_s, (double)writes / build_s);

measure:;
    /* A clean open and close leaves the log wholly indexed again (after a --no-index run). */
    if (reuse && index) {
        r = crdt_replica_open(&cfg, &err);
        if (!r) {
            fprintf(stderr, "open %s: %s\n", dir, err.text);
            return 1;
        }
        crdt_replica_close(r);
    }
    printf("recovery %s\n", index ? "from the log's index and a scan of what follows it"
                                  : "by scanning the log (its index deleted before each run)");
    double rd[MAX_RUNS], rec[MAX_RUNS], cpu[MAX_RUNS], ratio[MAX_RUNS], full[MAX_RUNS],
        full_cpu[MAX_RUNS], full_ratio[MAX_RUNS], p50[MAX_RUNS], p99[MAX_RUNS];
    crdt_replica_stats_t st;
    if (cold)
        printf("cold: the log's pages are dropped (posix_fadvise DONTNEED) before every read and "
               "every recovery\n");
    for (int k = 0; k < runs; k++) {
        if (cold)
            read_logs(dir, true, false);
        t0 = now_s();
        uint64_t bytes = read_logs(dir, false, false);
        rd[k] = now_s() - t0;
        if (bytes != log_bytes) {
            fprintf(stderr, "read %llu bytes, expected %llu\n", (unsigned long long)bytes,
                    (unsigned long long)log_bytes);
            return 1;
        }
        if (!index)
            read_logs(dir, false, true);
        if (cold)
            read_logs(dir, true, false);
        /* Each recovery runs in a fresh child process, as a restarting crdtd does: a heap that
         * already held a keyspace (an earlier run's, freed) would spare it the page faults of
         * building one, a quarter of the time. */
        recovery_result_t res;
        if (recover_in_child(&cfg, k == 0 ? digest : 0, keys, &res) < 0 || !res.ok) {
            fprintf(stderr, "recovery: %s\n", res.why);
            return 1;
        }
        rec[k] = res.wall;
        cpu[k] = res.cpu;
        if (res.records != changed || res.dropped) {
            fprintf(stderr, "recovery replayed %llu records, dropped %llu bytes\n",
                    (unsigned long long)res.records, (unsigned long long)res.dropped);
            return 1;
        }
        ratio[k] = rec[k] / rd[k];
        full[k] = res.loaded;
        full_cpu[k] = res.loaded_cpu;
        full_ratio[k] = full[k] / rd[k];
        p50[k] = res.probe_p50;
        p99[k] = res.probe_p99;
        printf("run %d: read %.3f s (%.0f MB/s), open %.3f s (%.2f M records/s, %.1f%% from "
               "the index, %.2f CPU s), ratio %.2f; first reads p50 %.0f us p99 %.0f us; all "
               "keys joined at %.3f s (%.2f CPU s, ratio %.1f)\n",
               k + 1, rd[k], (double)bytes / 1e6 / rd[k], rec[k],
               (double)res.records / 1e6 / rec[k],
               res.records ? 100.0 * (double)res.indexed / (double)res.records : 0.0, cpu[k],
               ratio[k], p50[k] * 1e6, p99[k] * 1e6, full[k], full_cpu[k], full_ratio[k]);
    }
    printf("median (%s): read %.3f s, open (serving) %.3f s (%.2f CPU s), open/read %.2fx "
           "(target <= 3x); reads right after open p50 %.0f us, p99 %.0f us; every key joined "
           "at %.3f s (%.2f CPU s), %.1fx the read\n",
           cold ? "cold page cache" : "warm page cache", median(rd, runs), median(rec, runs),
           median(cpu, runs), median(ratio, runs), median(p50, runs) * 1e6, median(p99, runs) * 1e6,
           median(full, runs), median(full_cpu, runs), median(full_ratio, runs));
    /* What a running crdtd recovers from instead: a snapshot of the same keyspace (the log it
     * covers deleted), timed the same way against reading the snapshot file. */
    if (snapshot) {
        r = crdt_replica_open(&cfg, &err);
        if (!r || crdt_replica_snapshot(r) < 0) {
            fprintf(stderr, "snapshot: %s\n", r ? crdt_replica_last_error(r) : err.text);
            return 1;
        }
        t0 = now_s();
        do {
            usleep(20000);
            crdt_replica_tick(r, 0);
            crdt_replica_stats(r, &st);
        } while (st.snapshot_running);
        double snap_s = now_s() - t0;
        crdt_replica_close(r);
        char path[4200];
        snprintf(path, sizeof(path), "%s/snapshot", dir);
        struct stat sb;
        uint64_t snap_bytes = stat(path, &sb) == 0 ? (uint64_t)sb.st_size : 0;
        for (int k = 0; k < runs; k++) {
            t0 = now_s();
            uint64_t n = read_file(path);
            rd[k] = now_s() - t0;
            t0 = now_s();
            double c0 = cpu_s();
            r = crdt_replica_open(&cfg, &err);
            rec[k] = now_s() - t0;
            cpu[k] = cpu_s() - c0;
            if (!r || n != snap_bytes || crdt_replica_digest(r) != digest) {
                fprintf(stderr, "reopen from the snapshot failed or differs\n");
                return 1;
            }
            ratio[k] = rec[k] / rd[k];
            crdt_replica_close(r);
        }
        printf("snapshot: %.1f MB written in the background in %.2f s; recovery from it: read "
               "%.3f s, recovery %.3f s (%.2f CPU s), recovery/read %.2fx (medians)\n",
               (double)snap_bytes / 1e6, snap_s, median(rd, runs), median(rec, runs),
               median(cpu, runs), median(ratio, runs));
    }
    if (!keep)
        rm_dir(dir);
    return 0;
}
