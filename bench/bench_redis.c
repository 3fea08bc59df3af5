/* bench_redis.c - crdt.so against native sorted sets and a roshi-style Lua script, one server
 *
 * Starts one redis-server with crdt.so (node-id 1, timeline-max-size 10000) on loopback and drives
 * it from many pipelined hiredis connections. Every figure is a median of RUNS runs, and every
 * ratio compares two workloads measured against the same server in the same run, alternating
 * which goes first:
 *   1. CRDT.TLADD vs ZADD of the same (key, score, member) stream          target >= 0.85x
 *   2. CRDT.TLADD vs EVALSHA of roshi's insert on two sorted sets          target >= 3x
 *   3. CRDT.TLRANGE key 0 50 vs ZREVRANGE key 0 49 on 10,000-entry keys   target >= 0.85x
 *   4. MEMORY USAGE per entry: timeline vs roshi's add+remove sorted sets target <= 0.6x
 * Environment: BENCH_RUNS (5), BENCH_OPS (200000), BENCH_CONNS (16), BENCH_PIPELINE (32),
 * BENCH_AOF=1 (appendonly yes, appendfsync everysec).
 */
#include <math.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "redis_helper.h"

#define MAX_CONNS 64
#define TL_BOUND 10000

static rh_server_t srv;
static redisContext *conns[MAX_CONNS];
static int nconns = 16, pipeline = 32, runs = 5;
static long total_ops = 200000;
static char lua_sha[64];

/* roshi's insert, on an add set KEYS[1] and a remove set KEYS[2]: the write applies only if its
 * score beats the member's score in both sets (a tie with the remove set loses), moves the member
 * out of the remove set, and trims the add set to max-size ARGV[3] (oldest first). */
static const char *roshi_insert_lua =
    "local s = tonumber(ARGV[1])\n"
    "local a = redis.call('ZSCORE', KEYS[1], ARGV[2])\n"
    "if a and s <= tonumber(a) then return 0 end\n"
    "local r = redis.call('ZSCORE', KEYS[2], ARGV[2])\n"
    "if r and s <= tonumber(r) then return 0 end\n"
    "redis.call('ZREM', KEYS[2], ARGV[2])\n"
    "redis.call('ZADD', KEYS[1], s, ARGV[2])\n"
    "redis.call('ZREMRANGEBYRANK', KEYS[1], 0, -(tonumber(ARGV[3]) + 1))\n"
    "return 1\n";

/* roshi's delete: the same, with the sets' roles swapped (remove set trimmed too). */
static const char *roshi_delete_lua =
    "local s = tonumber(ARGV[1])\n"
    "local a = redis.call('ZSCORE', KEYS[1], ARGV[2])\n"
    "if a and s < tonumber(a) then return 0 end\n"
    "local r = redis.call('ZSCORE', KEYS[2], ARGV[2])\n"
    "if r and s <= tonumber(r) then return 0 end\n"
    "redis.call('ZREM', KEYS[1], ARGV[2])\n"
    "redis.call('ZADD', KEYS[2], s, ARGV[2])\n"
    "redis.call('ZREMRANGEBYRANK', KEYS[2], 0, -(tonumber(ARGV[3]) + 1))\n"
    "return 1\n";
static char lua_del_sha[64];

typedef enum { W_TLADD, W_ZADD, W_ROSHI, W_TLRANGE, W_ZREVRANGE } workload_t;
static const char *wname[] = {"CRDT.TLADD", "ZADD", "EVALSHA roshi-insert", "CRDT.TLRANGE 0 50",
                              "ZREVRANGE 0 49"};

#define NKEYS_WRITE 1000
#define NKEYS_READ 20

/* Command i of a workload into argv/lens (buffers owned by the caller's slot). */
typedef struct slot {
    char b[6][64];
    const char *argv[8];
    size_t lens[8];
    int argc;
} slot_t;

static uint64_t mix(uint64_t x)
{
    x ^= x >> 33;
    x *= 0xff51afd7ed558ccdull;
    x ^= x >> 33;
    x *= 0xc4ceb9fe1a85ec53ull;
    return x ^ (x >> 33);
}

static void set_arg(slot_t *s, int i, const char *str)
{
    s->argv[i] = str;
    s->lens[i] = strlen(str);
}

static void make_cmd(workload_t w, long i, slot_t *s)
{
    uint64_t h = mix((uint64_t)i);
    long key = (long)(h % NKEYS_WRITE);
    /* Activity-feed-like scores: mostly increasing time with jitter; members repeat now and
     * then, so some writes are updates and some lose. */
    long score = 1600000000L + i / 4 + (long)(h >> 40) % 1000;
    unsigned member = (unsigned)((h >> 20) % 150000);
    switch (w) {
    case W_TLADD:
        set_arg(s, 0, "CRDT.TLADD");
        snprintf(s->b[0], 64, "tl:%ld", key);
        snprintf(s->b[1], 64, "%ld", score);
        snprintf(s->b[2], 64, "item:%u", member);
        set_arg(s, 1, s->b[0]);
        set_arg(s, 2, s->b[1]);
        set_arg(s, 3, s->b[2]);
        s->argc = 4;
        break;
    case W_ZADD:
        set_arg(s, 0, "ZADD");
        snprintf(s->b[0], 64, "z:%ld", key);
        snprintf(s->b[1], 64, "%ld", score);
        snprintf(s->b[2], 64, "item:%u", member);
        set_arg(s, 1, s->b[0]);
        set_arg(s, 2, s->b[1]);
        set_arg(s, 3, s->b[2]);
        s->argc = 4;
        break;
    case W_ROSHI:
        set_arg(s, 0, "EVALSHA");
        set_arg(s, 1, lua_sha);
        set_arg(s, 2, "2");
        snprintf(s->b[0], 64, "r:%ld+", key);
        snprintf(s->b[1], 64, "r:%ld-", key);
        snprintf(s->b[2], 64, "%ld", score);
        snprintf(s->b[3], 64, "item:%u", member);
        set_arg(s, 3, s->b[0]);
        set_arg(s, 4, s->b[1]);
        set_arg(s, 5, s->b[2]);
        set_arg(s, 6, s->b[3]);
        set_arg(s, 7, "10000");
        s->argc = 8;
        break;
    case W_TLRANGE:
        set_arg(s, 0, "CRDT.TLRANGE");
        snprintf(s->b[0], 64, "rtl:%ld", (long)(h % NKEYS_READ));
        set_arg(s, 1, s->b[0]);
        set_arg(s, 2, "0");
        set_arg(s, 3, "50");
        s->argc = 4;
        break;
    case W_ZREVRANGE:
        set_arg(s, 0, "ZREVRANGE");
        snprintf(s->b[0], 64, "rz:%ld", (long)(h % NKEYS_READ));
        set_arg(s, 1, s->b[0]);
        set_arg(s, 2, "0");
        set_arg(s, 3, "49");
        s->argc = 4;
        break;
    }
}

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* Length of the one complete RESP reply at p, 0 if more bytes are needed. The driver counts
 * replies this way instead of building hiredis reply objects (a malloc per element), so the
 * client costs less than the server even for 50-element replies. */
static size_t resp_skip(const char *p, size_t n, int *errors)
{
    const char *nl = n ? memchr(p, '\n', n) : NULL;
    if (!nl)
        return 0;
    size_t hdr = (size_t)(nl - p) + 1;
    switch (p[0]) {
    case '-': (*errors)++; return hdr;
    case '+':
    case ':':
    case ',':
    case '_': return hdr;
    case '$': {
        long len = strtol(p + 1, NULL, 10);
        if (len < 0)
            return hdr;
        return hdr + (size_t)len + 2 <= n ? hdr + (size_t)len + 2 : 0;
    }
    case '*': {
        long cnt = strtol(p + 1, NULL, 10);
        size_t off = hdr;
        for (long i = 0; i < cnt; i++) {
            size_t k = resp_skip(p + off, n - off, errors);
            if (!k)
                return 0;
            off += k;
        }
        return off;
    }
    default: return hdr;
    }
}

typedef struct rbuf {
    char *data;
    size_t len, cap;
} rbuf_t;
static rbuf_t rbufs[MAX_CONNS];

/* Reads from connection c until `want` complete replies were consumed; -1 on a socket error. */
static int read_replies(int c, long want, int *errors)
{
    rbuf_t *b = &rbufs[c];
    size_t pos = 0;
    while (want > 0) {
        size_t k = resp_skip(b->data + pos, b->len - pos, errors);
        if (k) {
            pos += k;
            want--;
            continue;
        }
        memmove(b->data, b->data + pos, b->len - pos);
        b->len -= pos;
        pos = 0;
        if (b->cap - b->len < 65536) {
            b->cap = b->cap ? b->cap * 2 : 1 << 20;
            b->data = realloc(b->data, b->cap);
        }
        ssize_t n = read(conns[c]->fd, b->data + b->len, b->cap - b->len);
        if (n <= 0)
            return -1;
        b->len += (size_t)n;
    }
    memmove(b->data, b->data + pos, b->len - pos);
    b->len -= pos;
    return 0;
}

/* Commands of one slice, encoded in RESP ahead of the timed part so the client spends its time
 * on write() and counting replies only (on a shared 2-core machine its CPU is the server's). */
static char *cmdbuf;
static size_t cmdcap, *cmdoff, offcap;

static void append(const void *p, size_t n, size_t *len)
{
    if (*len + n > cmdcap) {
        cmdcap = (*len + n) * 2;
        cmdbuf = realloc(cmdbuf, cmdcap);
    }
    memcpy(cmdbuf + *len, p, n);
    *len += n;
}

static void prepare(workload_t w, long first, long ops)
{
    slot_t s;
    size_t len = 0;
    if ((size_t)ops + 1 > offcap) {
        offcap = (size_t)ops + 1;
        cmdoff = realloc(cmdoff, offcap * sizeof(*cmdoff));
    }
    for (long i = 0; i < ops; i++) {
        make_cmd(w, first + i, &s);
        cmdoff[i] = len;
        char hdr[32];
        int n = snprintf(hdr, sizeof(hdr), "*%d\r\n", s.argc);
        append(hdr, (size_t)n, &len);
        for (int k = 0; k < s.argc; k++) {
            n = snprintf(hdr, sizeof(hdr), "$%zu\r\n", s.lens[k]);
            append(hdr, (size_t)n, &len);
            append(s.argv[k], s.lens[k], &len);
            append("\r\n", 2, &len);
        }
    }
    cmdoff[ops] = len;
}

static int write_all(int fd, const char *p, size_t n)
{
    while (n) {
        ssize_t k = write(fd, p, n);
        if (k <= 0)
            return -1;
        p += k;
        n -= (size_t)k;
    }
    return 0;
}

/* Sends commands [first, first + ops) of workload w over all connections, `pipeline` in flight per
 * connection. Returns the seconds it took, or -1 on an error reply. */
static double drive(workload_t w, long first, long ops)
{
    prepare(w, first, ops);
    long sent = 0;
    int errors = 0;
    double t0 = now_s();
    while (sent < ops) {
        long inflight[MAX_CONNS] = {0};
        for (int c = 0; c < nconns && sent < ops; c++) {
            long n = ops - sent < pipeline ? ops - sent : pipeline;
            if (write_all(conns[c]->fd, cmdbuf + cmdoff[sent], cmdoff[sent + n] - cmdoff[sent]) < 0)
                return -1;
            inflight[c] = n;
            sent += n;
        }
        for (int c = 0; c < nconns; c++)
            if (inflight[c] && read_replies(c, inflight[c], &errors) < 0)
                return -1;
    }
    double dt = now_s() - t0;
    if (errors)
        fprintf(stderr, "%s: %d error replies\n", wname[w], errors);
    return errors ? -1 : dt;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static double median(double *v, int n)
{
    qsort(v, (size_t)n, sizeof(double), cmp_double);
    return n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
}

static void flush(void)
{
    freeReplyObject(rh_cmd(&srv, "FLUSHALL"));
}

/* Compares workloads a and b over `runs` runs. A run (from an empty db for writes) sends the same
 * `ops` commands of each, in SLICES slices alternating a and b (which goes first alternates too),
 * so both see the same load on a shared machine. Gives the median ops/s of each and the median of
 * the per-run ratios a/b. */
#define SLICES 10
static void compare(workload_t a, workload_t b, long ops, bool fresh, double *ma, double *mb,
                    double *mratio)
{
    double va[32], vb[32], ratio[32];
    for (int r = 0; r < runs; r++) {
        if (fresh)
            flush();
        double ta = 0, tb = 0;
        long slice = ops / SLICES;
        for (int k = 0; k < SLICES; k++) {
            bool a_first = (k + r) % 2 == 0;
            double t1 = drive(a_first ? a : b, k * slice, slice);
            double t2 = drive(a_first ? b : a, k * slice, slice);
            if (t1 < 0 || t2 < 0) {
                fprintf(stderr, "bench_redis: a workload failed\n");
                exit(1);
            }
            ta += a_first ? t1 : t2;
            tb += a_first ? t2 : t1;
        }
        va[r] = (double)(slice * SLICES) / ta;
        vb[r] = (double)(slice * SLICES) / tb;
        ratio[r] = va[r] / vb[r];
        printf("  run %d: %-22s %9.0f ops/s   %-22s %9.0f ops/s   ratio %.2f\n", r + 1, wname[a],
               va[r], wname[b], vb[r], ratio[r]);
    }
    *ma = median(va, runs);
    *mb = median(vb, runs);
    *mratio = median(ratio, runs);
}

/* 10,000 entries per read key, the same data in a timeline and a sorted set. */
static void load_read_keys(void)
{
    for (int k = 0; k < NKEYS_READ; k++) {
        for (int base = 0; base < TL_BOUND; base += 500) {
            const char *argv_tl[2 + 1000], *argv_z[2 + 1000];
            size_t len_tl[2 + 1000], len_z[2 + 1000];
            static char buf[1000][32];
            char key_tl[32], key_z[32];
            snprintf(key_tl, sizeof(key_tl), "rtl:%d", k);
            snprintf(key_z, sizeof(key_z), "rz:%d", k);
            argv_tl[0] = "CRDT.TLADD";
            argv_z[0] = "ZADD";
            argv_tl[1] = key_tl;
            argv_z[1] = key_z;
            int n = 2;
            for (int i = base; i < base + 500; i++) {
                snprintf(buf[2 * (i - base)], 32, "%d", 1600000000 + i * 7);
                snprintf(buf[2 * (i - base) + 1], 32, "item:%d", i);
                argv_tl[n] = argv_z[n] = buf[2 * (i - base)];
                argv_tl[n + 1] = argv_z[n + 1] = buf[2 * (i - base) + 1];
                n += 2;
            }
            for (int i = 0; i < n; i++) {
                len_tl[i] = strlen(argv_tl[i]);
                len_z[i] = strlen(argv_z[i]);
            }
            redisReply *r1 = rh_cmdv(&srv, n, argv_tl, len_tl);
            redisReply *r2 = rh_cmdv(&srv, n, argv_z, len_z);
            if (!r1 || !r2 || r1->type != REDIS_REPLY_INTEGER || r2->type != REDIS_REPLY_INTEGER)
                fprintf(stderr, "bench_redis: loading read keys failed: %s\n",
                        r1 && r1->type == REDIS_REPLY_ERROR   ? r1->str
                        : r2 && r2->type == REDIS_REPLY_ERROR ? r2->str
                                                              : "?");
            if (r1)
                freeReplyObject(r1);
            if (r2)
                freeReplyObject(r2);
        }
    }
    printf("  read keys: CRDT.TLCARD rtl:0 = %lld, ZCARD rz:0 = %lld\n",
           rh_int(rh_cmd(&srv, "CRDT.TLCARD rtl:0")), rh_int(rh_cmd(&srv, "ZCARD rz:0")));
}

/* MEMORY USAGE per entry of the same writes kept by a timeline and by roshi's two sorted sets:
 * 10,000 inserts, then deletes of every 10th member at a newer score. */
static void memory_per_entry(double *tl_pe, double *roshi_pe)
{
    flush();
    for (int i = 0; i < TL_BOUND; i++) {
        char score[32], member[32];
        snprintf(score, sizeof(score), "%d", 1600000000 + i * 7);
        snprintf(member, sizeof(member), "item:%d", i);
        freeReplyObject(rh_cmd(&srv, "CRDT.TLADD mtl %s %s", score, member));
        freeReplyObject(rh_cmd(&srv, "EVALSHA %s 2 mr+ mr- %s %s 100000", lua_sha, score, member));
    }
    int removed = 0;
    for (int i = 0; i < TL_BOUND; i += 10, removed++) {
        char score[32], member[32];
        snprintf(score, sizeof(score), "%d", 1700000000 + i);
        snprintf(member, sizeof(member), "item:%d", i);
        freeReplyObject(rh_cmd(&srv, "CRDT.TLREM mtl %s %s", score, member));
        freeReplyObject(
            rh_cmd(&srv, "EVALSHA %s 2 mr+ mr- %s %s 100000", lua_del_sha, score, member));
    }
    long long a = rh_int(rh_cmd(&srv, "MEMORY USAGE mtl SAMPLES 0"));
    long long p = rh_int(rh_cmd(&srv, "MEMORY USAGE mr+ SAMPLES 0"));
    long long m = rh_int(rh_cmd(&srv, "MEMORY USAGE mr- SAMPLES 0"));
    long long card = rh_int(rh_cmd(&srv, "CRDT.TLCARD mtl"));
    long long zc = rh_int(rh_cmd(&srv, "ZCARD mr+")) + rh_int(rh_cmd(&srv, "ZCARD mr-"));
    printf("  timeline: %lld bytes, %lld live + %d tombstones\n", a, card, removed);
    printf("  roshi:    %lld + %lld bytes, %lld entries in both sets\n", p, m, zc);
    *tl_pe = (double)a / TL_BOUND;
    *roshi_pe = (double)(p + m) / TL_BOUND;
}

static long env_long(const char *name, long def, long min, long max)
{
    const char *e = getenv(name);
    long v = e ? strtol(e, NULL, 10) : def;
    return v < min ? min : v > max ? max : v;
}

int main(void)
{
    const char *why = rh_skip_reason();
    if (why) {
        printf("bench_redis: skipped: %s\n", why);
        return 0;
    }
    runs = (int)env_long("BENCH_RUNS", 5, 1, 31);
    total_ops = env_long("BENCH_OPS", 200000, 1000, 100000000);
    nconns = (int)env_long("BENCH_CONNS", 16, 1, MAX_CONNS);
    pipeline = (int)env_long("BENCH_PIPELINE", 32, 1, 10000);
    rh_watchdog(1800);
    char margs[64];
    snprintf(margs, sizeof(margs), "node-id 1 timeline-max-size %d", TL_BOUND);
    /* BENCH_AOF=1: appendonly everysec, so both sides pay for propagation (TLADD writes its
     * CRDT.MERGE delta, ZADD itself). */
    const char *aof = getenv("BENCH_AOF");
    bool with_aof = aof && strcmp(aof, "1") == 0;
    const char *extra[] = {"--appendonly", with_aof ? "yes" : "no", "--appendfsync", "everysec",
                           NULL};
    if (rh_start(&srv, NULL, margs, extra) < 0) {
        fprintf(stderr, "bench_redis: cannot start redis-server with crdt.so\n");
        return 1;
    }
    for (int c = 0; c < nconns; c++) {
        conns[c] = redisConnect("127.0.0.1", srv.port);
        if (!conns[c] || conns[c]->err) {
            fprintf(stderr, "bench_redis: connect failed\n");
            return 1;
        }
    }
    char *sha = rh_str(rh_cmd(&srv, "SCRIPT LOAD %s", roshi_insert_lua), NULL);
    char *dsha = rh_str(rh_cmd(&srv, "SCRIPT LOAD %s", roshi_delete_lua), NULL);
    if (!sha || !dsha) {
        fprintf(stderr, "bench_redis: SCRIPT LOAD failed\n");
        return 1;
    }
    snprintf(lua_sha, sizeof(lua_sha), "%s", sha);
    snprintf(lua_del_sha, sizeof(lua_del_sha), "%s", dsha);
    free(sha);
    free(dsha);
    printf("bench_redis: redis-server with crdt.so%s, %d connections x pipeline %d, %ld ops per "
           "run, median of %d runs\n",
           with_aof ? " and an AOF (everysec)" : "", nconns, pipeline, total_ops, runs);

    double tl, z, roshi, tl2, rr, zr, q1, q2, q3;
    printf("1. writes: CRDT.TLADD vs ZADD, same stream over %d keys\n", NKEYS_WRITE);
    compare(W_TLADD, W_ZADD, total_ops, true, &tl, &z, &q1);
    printf("2. writes: CRDT.TLADD vs roshi's insert as EVALSHA on two sorted sets\n");
    compare(W_TLADD, W_ROSHI, total_ops, true, &tl2, &roshi, &q2);
    flush();
    load_read_keys();
    printf("3. reads: newest 50 of %d-entry keys\n", TL_BOUND);
    compare(W_TLRANGE, W_ZREVRANGE, total_ops, false, &rr, &zr, &q3);
    printf("4. memory: %d inserts, then every 10th member deleted\n", TL_BOUND);
    double mtl, mroshi;
    memory_per_entry(&mtl, &mroshi);

    printf("\nresults (medians of %d runs; ratio = median of the per-run ratios)\n", runs);
    printf("  CRDT.TLADD   %9.0f ops/s  vs ZADD         %9.0f ops/s  ratio %.2fx (target >= "
           "0.85x)\n",
           tl, z, q1);
    printf("  CRDT.TLADD   %9.0f ops/s  vs roshi EVALSHA %8.0f ops/s  ratio %.2fx (target >= "
           "3x)\n",
           tl2, roshi, q2);
    printf("  CRDT.TLRANGE %9.0f ops/s  vs ZREVRANGE    %9.0f ops/s  ratio %.2fx (target >= "
           "0.85x)\n",
           rr, zr, q3);
    printf("  memory/entry %9.1f B      vs roshi         %9.1f B      ratio %.2fx (target <= "
           "0.6x)\n",
           mtl, mroshi, mtl / mroshi);
    for (int c = 0; c < nconns; c++)
        redisFree(conns[c]);
    rh_cleanup();
    return 0;
}
