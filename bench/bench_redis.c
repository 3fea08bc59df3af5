/* bench_redis.c - crdt.so against native sorted sets and a roshi-style Lua script, on one server
 * or on a 3-primary Redis Cluster; the change log's cost; anti-entropy through CRDT.RSX.*
 *
 * Two deployments run side by side, one with the change log (the default, `log yes`) and one
 * without (`log no`): two redis-servers, or with BENCH_CLUSTER=1 two clusters of 3 primaries made
 * by redis-cli --cluster create. The driver is cluster-aware: it routes every command by its
 * key's slot to the primary serving it, pipelined over several connections per node. Every figure
 * is a median of RUNS runs, and every ratio compares two workloads in the same run, interleaved in
 * slices (which goes first alternates):
 *   1. CRDT.TLADD vs ZADD of the same (key, score, member) stream, log off  target >= 0.85x
 *   2. CRDT.TLADD with the change log vs without                           target >= 0.8x
 *   3. CRDT.TLADD with the change log vs ZADD
 *   4. CRDT.TLADD vs EVALSHA of roshi's insert on two sorted sets (single) target >= 3x
 *   5. CRDT.TLRANGE key 0 50 vs ZREVRANGE key 0 49 on 10,000-entry keys   target >= 0.85x
 *   6. MEMORY USAGE per entry: timeline vs roshi's add+remove sorted sets target <= 0.6x
 *   7. used_memory per entry written, with the change log at its default trim and without,
 *      beyond the member's own bytes                                      target <= 60 B
 * BENCH_RECONCILE=N instead: two single servers with the same N keys, differing in d keys for
 * d in BENCH_DIFFS (0,1,10,100,1000), find the difference through CRDT.RSX.*; bytes, round trips
 * and time, against the 16 bytes per key each side of a full (id, fp) exchange.
 * Environment: BENCH_RUNS (5), BENCH_OPS (200000), BENCH_CONNS (16 per deployment),
 * BENCH_PIPELINE (32), BENCH_AOF=1 (appendonly yes, appendfsync everysec), BENCH_CLUSTER=1,
 * BENCH_RECONCILE=N, BENCH_DIFFS=list.
 */
#include <math.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "logpos.h"
#include "redis_cluster_helper.h"
#include "redis_helper.h"
#include "redis_reconcile.h"

#define MAX_CONNS 64
#define MAX_NODES 3
#define TL_BOUND 10000

/* A deployment: one server or the primaries of a cluster, with connections to each node. */
typedef struct deploy {
    const char *name;
    int nodes, k; /* k connections per node */
    rh_server_t *srv[MAX_NODES];
    redisContext *conn[MAX_NODES][MAX_CONNS];
    unsigned char slot_node[16384];
} deploy_t;

static rh_server_t single[2];
static rc_cluster_t clusters[2];
static deploy_t dep_log, dep_nolog;
static int nconns = 16, pipeline = 32, runs = 5;
static long total_ops = 200000;
static char lua_sha[64];
static bool cluster_mode;
static const char *only; /* BENCH_ONLY: the comparisons to run, e.g. "2,7"; NULL: all */

static bool want(int n)
{
    if (!only)
        return true;
    char b[8];
    snprintf(b, sizeof(b), "%d", n);
    for (const char *p = only; (p = strstr(p, b)); p++)
        if ((p == only || p[-1] == ',') && (p[1] == ',' || p[1] == '\0'))
            return true;
    return false;
}

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

/* Reads from c until `want` complete replies were consumed; -1 on a socket error. */
static int read_replies(redisContext *c, rbuf_t *b, long want, int *errors)
{
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
        ssize_t n = read(c->fd, b->data + b->len, b->cap - b->len);
        if (n <= 0)
            return -1;
        b->len += (size_t)n;
    }
    memmove(b->data, b->data + pos, b->len - pos);
    b->len -= pos;
    return 0;
}

/* Commands of one slice per node, encoded in RESP ahead of the timed part so the client spends
 * its time on write() and counting replies only (on a shared 2-core machine its CPU is the
 * servers'). */
typedef struct queue {
    char *buf;
    size_t len, cap;
    size_t *off; /* off[i]: start of command i; off[n]: end */
    long n, offcap;
} queue_t;
static queue_t queues[MAX_NODES];
static rbuf_t rbufs[MAX_NODES][MAX_CONNS];

static void q_append(queue_t *q, const void *p, size_t n)
{
    if (q->len + n > q->cap) {
        q->cap = (q->len + n) * 2;
        q->buf = realloc(q->buf, q->cap);
    }
    memcpy(q->buf + q->len, p, n);
    q->len += n;
}

static void prepare(deploy_t *d, workload_t w, long first, long ops)
{
    for (int n = 0; n < d->nodes; n++) {
        queues[n].len = 0;
        queues[n].n = 0;
        if (queues[n].offcap < ops + 1) {
            queues[n].offcap = ops + 1;
            queues[n].off = realloc(queues[n].off, (size_t)(ops + 1) * sizeof(size_t));
        }
    }
    slot_t s;
    for (long i = 0; i < ops; i++) {
        make_cmd(w, first + i, &s);
        /* the key is argv[1], or argv[3] for EVALSHA sha 2 key key */
        int ki = w == W_ROSHI ? 3 : 1;
        queue_t *q = &queues[d->slot_node[crdtm_keyslot(s.argv[ki], s.lens[ki])]];
        q->off[q->n++] = q->len;
        char hdr[32];
        int n = snprintf(hdr, sizeof(hdr), "*%d\r\n", s.argc);
        q_append(q, hdr, (size_t)n);
        for (int k = 0; k < s.argc; k++) {
            n = snprintf(hdr, sizeof(hdr), "$%zu\r\n", s.lens[k]);
            q_append(q, hdr, (size_t)n);
            q_append(q, s.argv[k], s.lens[k]);
            q_append(q, "\r\n", 2);
        }
    }
    for (int n = 0; n < d->nodes; n++)
        queues[n].off[queues[n].n] = queues[n].len;
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

/* Sends commands [first, first + ops) of workload w to deployment d, each to the node serving its
 * key, `pipeline` in flight per connection. Returns the seconds it took, or -1 on an error. */
static double drive(deploy_t *d, workload_t w, long first, long ops)
{
    prepare(d, w, first, ops);
    long sent[MAX_NODES] = {0};
    int errors = 0;
    double t0 = now_s();
    for (;;) {
        long inflight[MAX_NODES][MAX_CONNS] = {{0}};
        bool any = false;
        for (int n = 0; n < d->nodes; n++) {
            queue_t *q = &queues[n];
            for (int c = 0; c < d->k && sent[n] < q->n; c++) {
                long m = q->n - sent[n] < pipeline ? q->n - sent[n] : pipeline;
                if (write_all(d->conn[n][c]->fd, q->buf + q->off[sent[n]],
                              q->off[sent[n] + m] - q->off[sent[n]]) < 0)
                    return -1;
                inflight[n][c] = m;
                sent[n] += m;
                any = true;
            }
        }
        if (!any)
            break;
        for (int n = 0; n < d->nodes; n++)
            for (int c = 0; c < d->k; c++)
                if (inflight[n][c] &&
                    read_replies(d->conn[n][c], &rbufs[n][c], inflight[n][c], &errors) < 0)
                    return -1;
    }
    double dt = now_s() - t0;
    if (errors)
        fprintf(stderr, "%s on %s: %d error replies\n", wname[w], d->name, errors);
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

static void flush(deploy_t *d)
{
    for (int n = 0; n < d->nodes; n++)
        freeReplyObject(rh_cmd(d->srv[n], "FLUSHALL"));
}

/* Compares workload a on deployment da with b on db over `runs` runs. A run (from empty
 * databases for writes) sends the same `ops` commands of each, in SLICES slices alternating a and
 * b (which goes first alternates too), so both see the same load on a shared machine. Gives the
 * median ops/s of each and the median of the per-run ratios a/b. */
#define SLICES 10
static void compare(deploy_t *da, workload_t a, deploy_t *db, workload_t b, long ops, bool fresh,
                    double *ma, double *mb, double *mratio)
{
    double va[32], vb[32], ratio[32];
    for (int r = 0; r < runs; r++) {
        if (fresh) {
            flush(da);
            if (db != da)
                flush(db);
        }
        double ta = 0, tb = 0;
        long slice = ops / SLICES;
        for (int k = 0; k < SLICES; k++) {
            bool a_first = (k + r) % 2 == 0;
            double t1 = a_first ? drive(da, a, k * slice, slice) : drive(db, b, k * slice, slice);
            double t2 = a_first ? drive(db, b, k * slice, slice) : drive(da, a, k * slice, slice);
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
        printf("  run %d: %-10s %-20s %9.0f ops/s   %-10s %-20s %9.0f ops/s   ratio %.2f\n", r + 1,
               da->name, wname[a], va[r], db->name, wname[b], vb[r], ratio[r]);
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
            redisReply *r1 = rh_cmdv(dep_nolog.srv[0], n, argv_tl, len_tl);
            redisReply *r2 = rh_cmdv(dep_nolog.srv[0], n, argv_z, len_z);
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
           rh_int(rh_cmd(dep_nolog.srv[0], "CRDT.TLCARD rtl:0")),
           rh_int(rh_cmd(dep_nolog.srv[0], "ZCARD rz:0")));
}

/* MEMORY USAGE per entry of the same writes kept by a timeline and by roshi's two sorted sets:
 * 10,000 inserts, then deletes of every 10th member at a newer score. */
static void memory_per_entry(double *tl_pe, double *roshi_pe)
{
    flush(&dep_nolog);
    for (int i = 0; i < TL_BOUND; i++) {
        char score[32], member[32];
        snprintf(score, sizeof(score), "%d", 1600000000 + i * 7);
        snprintf(member, sizeof(member), "item:%d", i);
        freeReplyObject(rh_cmd(dep_nolog.srv[0], "CRDT.TLADD mtl %s %s", score, member));
        freeReplyObject(
            rh_cmd(dep_nolog.srv[0], "EVALSHA %s 2 mr+ mr- %s %s 100000", lua_sha, score, member));
    }
    int removed = 0;
    for (int i = 0; i < TL_BOUND; i += 10, removed++) {
        char score[32], member[32];
        snprintf(score, sizeof(score), "%d", 1700000000 + i);
        snprintf(member, sizeof(member), "item:%d", i);
        freeReplyObject(rh_cmd(dep_nolog.srv[0], "CRDT.TLREM mtl %s %s", score, member));
        freeReplyObject(rh_cmd(dep_nolog.srv[0], "EVALSHA %s 2 mr+ mr- %s %s 100000", lua_del_sha,
                               score, member));
    }
    long long a = rh_int(rh_cmd(dep_nolog.srv[0], "MEMORY USAGE mtl SAMPLES 0"));
    long long p = rh_int(rh_cmd(dep_nolog.srv[0], "MEMORY USAGE mr+ SAMPLES 0"));
    long long m = rh_int(rh_cmd(dep_nolog.srv[0], "MEMORY USAGE mr- SAMPLES 0"));
    long long card = rh_int(rh_cmd(dep_nolog.srv[0], "CRDT.TLCARD mtl"));
    long long zc = rh_int(rh_cmd(dep_nolog.srv[0], "ZCARD mr+")) +
                   rh_int(rh_cmd(dep_nolog.srv[0], "ZCARD mr-"));
    printf("  timeline: %lld bytes, %lld live + %d tombstones\n", a, card, removed);
    printf("  roshi:    %lld + %lld bytes, %lld entries in both sets\n", p, m, zc);
    *tl_pe = (double)a / TL_BOUND;
    *roshi_pe = (double)(p + m) / TL_BOUND;
}

/* used_memory (summed over the nodes) that `n` writes of new members over 1,000 keys add, per
 * write, less the member's own bytes: the cost per entry of a timeline with the change log as
 * deployed (at its default trim when the log is on). */
static long long used_memory(deploy_t *d)
{
    long long sum = 0;
    for (int i = 0; i < d->nodes; i++)
        sum += rh_info_field(d->srv[i], "memory", "used_memory");
    return sum;
}

static double memory_with_log(deploy_t *d, long n, double *member_len)
{
    flush(d);
    long long before = used_memory(d);
    slot_t s;
    double mlen = 0;
    for (long done = 0; done < n;) {
        long m = n - done < 20000 ? n - done : 20000;
        /* distinct members: item:<i>, score i */
        for (int q = 0; q < d->nodes; q++) {
            queues[q].len = 0;
            queues[q].n = 0;
            if (queues[q].offcap < m + 1) {
                queues[q].offcap = m + 1;
                queues[q].off = realloc(queues[q].off, (size_t)(m + 1) * sizeof(size_t));
            }
        }
        for (long i = done; i < done + m; i++) {
            set_arg(&s, 0, "CRDT.TLADD");
            snprintf(s.b[0], 64, "mem:%ld", i % NKEYS_WRITE);
            snprintf(s.b[1], 64, "%ld", 1600000000L + i);
            snprintf(s.b[2], 64, "item:%ld", i);
            set_arg(&s, 1, s.b[0]);
            set_arg(&s, 2, s.b[1]);
            set_arg(&s, 3, s.b[2]);
            s.argc = 4;
            mlen += (double)s.lens[3];
            queue_t *qq = &queues[d->slot_node[crdtm_keyslot(s.b[0], s.lens[1])]];
            qq->off[qq->n++] = qq->len;
            char hdr[32];
            int k = snprintf(hdr, sizeof(hdr), "*4\r\n");
            q_append(qq, hdr, (size_t)k);
            for (int a = 0; a < 4; a++) {
                k = snprintf(hdr, sizeof(hdr), "$%zu\r\n", s.lens[a]);
                q_append(qq, hdr, (size_t)k);
                q_append(qq, s.argv[a], s.lens[a]);
                q_append(qq, "\r\n", 2);
            }
        }
        int errors = 0;
        for (int q = 0; q < d->nodes; q++) {
            if (write_all(d->conn[q][0]->fd, queues[q].buf, queues[q].len) < 0 ||
                read_replies(d->conn[q][0], &rbufs[q][0], queues[q].n, &errors) < 0)
                fprintf(stderr, "bench_redis: memory load failed\n");
        }
        done += m;
    }
    long long after = used_memory(d);
    *member_len = mlen / (double)n;
    return (double)(after - before) / (double)n - *member_len;
}

static long env_long(const char *name, long def, long min, long max)
{
    const char *e = getenv(name);
    long v = e ? strtol(e, NULL, 10) : def;
    return v < min ? min : v > max ? max : v;
}

static int connect_deploy(deploy_t *d, const char *name, rh_server_t **srv, int nodes)
{
    memset(d, 0, sizeof(*d));
    d->name = name;
    d->nodes = nodes;
    d->k = nconns / nodes > 0 ? nconns / nodes : 1;
    for (int n = 0; n < nodes; n++) {
        d->srv[n] = srv[n];
        for (int c = 0; c < d->k; c++) {
            d->conn[n][c] = redisConnect("127.0.0.1", srv[n]->port);
            if (!d->conn[n][c] || d->conn[n][c]->err)
                return -1;
        }
    }
    if (nodes == 1)
        return 0;
    /* slot -> node from CLUSTER SLOTS */
    redisReply *r = rh_cmd(srv[0], "CLUSTER SLOTS");
    for (size_t i = 0; r && r->type == REDIS_REPLY_ARRAY && i < r->elements; i++) {
        redisReply *e = r->element[i];
        int port = (int)e->element[2]->element[1]->integer;
        int node = -1;
        for (int n = 0; n < nodes; n++)
            if (srv[n]->port == port)
                node = n;
        for (long long sl = e->element[0]->integer; node >= 0 && sl <= e->element[1]->integer; sl++)
            d->slot_node[sl] = (unsigned char)node;
    }
    if (r)
        freeReplyObject(r);
    return 0;
}

static void disconnect_deploy(deploy_t *d)
{
    for (int n = 0; n < d->nodes; n++)
        for (int c = 0; c < d->k; c++)
            if (d->conn[n][c])
                redisFree(d->conn[n][c]);
}

/* ---- anti-entropy through CRDT.RSX.* ------------------------------------------------------- */

static int rec_cmp(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static void pipeline_incr(rh_server_t *s, long from, long to)
{
    for (long i = from; i < to; i += 10000) {
        long end = i + 10000 < to ? i + 10000 : to;
        for (long k = i; k < end; k++)
            redisAppendCommand(s->c, "CRDT.INCRBY c:%ld 1", k);
        for (long k = i; k < end; k++) {
            redisReply *r;
            if (redisGetReply(s->c, (void **)&r) == REDIS_OK)
                freeReplyObject(r);
        }
    }
}

static int bench_reconcile(long nkeys)
{
    /* Both servers have node-id 1: they are copies of one dataset, so the same INCRBY stream
     * gives byte-identical states, and a difference is a key written on A only. */
    rh_server_t A, B;
    if (rh_start(&A, NULL, "node-id 1 log no", NULL) < 0 ||
        rh_start(&B, NULL, "node-id 1 log no", NULL) < 0) {
        fprintf(stderr, "bench_redis: cannot start redis-server\n");
        return 1;
    }
    double t0 = now_s();
    pipeline_incr(&A, 0, nkeys);
    pipeline_incr(&B, 0, nkeys);
    printf("bench_redis: reconcile, two servers of %ld keys (loaded in %.1f s), %d runs\n", nkeys,
           now_s() - t0, runs);
    printf("  memory: used_memory %lld bytes on A (%.1f per key with its fingerprints)\n",
           rh_info_field(&A, "memory", "used_memory"),
           (double)rh_info_field(&A, "memory", "used_memory") / (double)nkeys);
    const char *diffs = getenv("BENCH_DIFFS");
    char list[256];
    snprintf(list, sizeof(list), "%s", diffs && *diffs ? diffs : "0,1,10,100,1000");
    printf(
        "  | d | found | ranges | round trips | bytes out | bytes in | total/d | ms | naive bytes "
        "|\n");
    long written = 0; /* keys made to differ so far, on A: c:0 .. c:written-1 get +1 */
    for (char *save, *t = strtok_r(list, ",", &save); t; t = strtok_r(NULL, ",", &save)) {
        long d = strtol(t, NULL, 10);
        /* make exactly d keys differ: bring B up to A, then write d keys on A */
        for (long k = 0; k < written; k++)
            freeReplyObject(rh_cmd(&B, "CRDT.INCRBY c:%ld 1", k));
        for (long k = 0; k < d; k++)
            freeReplyObject(rh_cmd(&A, "CRDT.INCRBY c:%ld 1", k));
        written = d;
        double ms[32], bytes_out = 0, bytes_in = 0, rts = 0, slots = 0, found = 0;
        for (int r = 0; r < runs; r++) {
            rr_side_t a, b;
            rr_side_single(&a, A.c);
            rr_side_single(&b, B.c);
            rr_result_t res;
            double s0 = now_s();
            if (rr_reconcile(&a, &b, &res) < 0)
                fprintf(stderr, "bench_redis: reconcile failed\n");
            ms[r] = (now_s() - s0) * 1000;
            bytes_out = (double)res.bytes_out;
            bytes_in = (double)res.bytes_in;
            rts = res.round_trips;
            slots = res.ranges_differing;
            found = (double)res.n;
            rr_result_free(&res);
        }
        qsort(ms, (size_t)runs, sizeof(double), rec_cmp);
        printf("  | %ld | %.0f | %.0f | %.0f | %.0f | %.0f | %s%.0f | %.1f | %ld |\n", d, found,
               slots, rts, bytes_out, bytes_in, d ? "" : "-",
               d ? (bytes_out + bytes_in) / (double)d : 0, ms[runs / 2], 32 * nkeys);
    }
    rh_stop(&A);
    rh_stop(&B);
    rh_cleanup();
    return 0;
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
    rh_watchdog(3600);
    long rec = env_long("BENCH_RECONCILE", 0, 0, 100000000);
    if (rec)
        return bench_reconcile(rec);
    only = getenv("BENCH_ONLY");
    const char *cl = getenv("BENCH_CLUSTER");
    cluster_mode = cl && strcmp(cl, "1") == 0;
    char margs[2][96];
    snprintf(margs[0], sizeof(margs[0]), "timeline-max-size %d", TL_BOUND);
    snprintf(margs[1], sizeof(margs[1]), "timeline-max-size %d log no", TL_BOUND);
    /* BENCH_AOF=1: appendonly everysec, so both sides pay for propagation (TLADD writes its
     * CRDT.MERGE delta and its log entry, ZADD itself). */
    const char *aof = getenv("BENCH_AOF");
    bool with_aof = aof && strcmp(aof, "1") == 0;
    const char *extra[] = {"--appendonly", with_aof ? "yes" : "no", "--appendfsync", "everysec",
                           NULL};
    for (int i = 0; i < 2; i++) {
        rh_server_t *nodes[MAX_NODES];
        if (cluster_mode) {
            if (rc_start(&clusters[i], 3, 0, margs[i]) < 0) {
                fprintf(stderr, "bench_redis: cannot start a 3-primary cluster\n");
                return 1;
            }
            for (int n = 0; n < 3; n++)
                nodes[n] = &clusters[i].node[n];
        } else {
            char a[128];
            snprintf(a, sizeof(a), "node-id %d %s", i + 1, margs[i]);
            if (rh_start(&single[i], NULL, a, extra) < 0) {
                fprintf(stderr, "bench_redis: cannot start redis-server with crdt.so\n");
                return 1;
            }
            nodes[0] = &single[i];
        }
        if (connect_deploy(i ? &dep_nolog : &dep_log, i ? "log-off" : "log-on", nodes,
                           cluster_mode ? 3 : 1) < 0) {
            fprintf(stderr, "bench_redis: connect failed\n");
            return 1;
        }
    }
    char *sha = rh_str(rh_cmd(dep_nolog.srv[0], "SCRIPT LOAD %s", roshi_insert_lua), NULL);
    char *dsha = rh_str(rh_cmd(dep_nolog.srv[0], "SCRIPT LOAD %s", roshi_delete_lua), NULL);
    if (!sha || !dsha) {
        fprintf(stderr, "bench_redis: SCRIPT LOAD failed\n");
        return 1;
    }
    snprintf(lua_sha, sizeof(lua_sha), "%s", sha);
    snprintf(lua_del_sha, sizeof(lua_del_sha), "%s", dsha);
    free(sha);
    free(dsha);
    printf("bench_redis: %s with crdt.so%s, log on and log off side by side, %d connections x "
           "pipeline %d per deployment, %ld ops per run, median of %d runs\n",
           cluster_mode ? "two Redis Clusters of 3 primaries" : "two redis-servers",
           with_aof ? " and an AOF (everysec)" : "", nconns, pipeline, total_ops, runs);

    double tl = 0, z = 0, q1 = 0, tll = 0, tln = 0, q2 = 0, tl3 = 0, z3 = 0, q3 = 0, tl4 = 0,
           roshi = 0, q4 = 0, rr = 0, zr = 0, q5 = 0;
    if (want(1)) {
        printf("1. writes: CRDT.TLADD vs ZADD, same stream over %d keys, log off\n", NKEYS_WRITE);
        compare(&dep_nolog, W_TLADD, &dep_nolog, W_ZADD, total_ops, true, &tl, &z, &q1);
    }
    if (want(2)) {
        printf("2. writes: CRDT.TLADD with the change log vs without\n");
        compare(&dep_log, W_TLADD, &dep_nolog, W_TLADD, total_ops, true, &tll, &tln, &q2);
    }
    if (want(3)) {
        printf("3. writes: CRDT.TLADD with the change log vs ZADD\n");
        compare(&dep_log, W_TLADD, &dep_nolog, W_ZADD, total_ops, true, &tl3, &z3, &q3);
    }
    if (!cluster_mode && want(4)) {
        printf("4. writes: CRDT.TLADD vs roshi's insert as EVALSHA on two sorted sets\n");
        compare(&dep_nolog, W_TLADD, &dep_nolog, W_ROSHI, total_ops, true, &tl4, &roshi, &q4);
    }
    if (!cluster_mode && want(5)) {
        flush(&dep_nolog);
        load_read_keys();
        printf("5. reads: newest 50 of %d-entry keys\n", TL_BOUND);
        compare(&dep_nolog, W_TLRANGE, &dep_nolog, W_ZREVRANGE, total_ops, false, &rr, &zr, &q5);
    }
    double mtl = 0, mroshi = 0;
    if (!cluster_mode && want(6)) {
        printf("6. memory: %d inserts, then every 10th member deleted\n", TL_BOUND);
        memory_per_entry(&mtl, &mroshi);
    }
    long nmem = env_long("BENCH_MEM_ENTRIES", 1000000, 1000, 100000000);
    double mlen = 0, mem_log = 0, mem_nolog = 0;
    if (want(7)) {
        printf("7. used_memory per entry: %ld new members over %d keys\n", nmem, NKEYS_WRITE);
        mem_log = memory_with_log(&dep_log, nmem, &mlen);
        mem_nolog = memory_with_log(&dep_nolog, nmem, &mlen);
    }
    long long log_entries = 0;
    for (int n = 0; n < dep_log.nodes; n++) {
        redisReply *r = rh_cmd(dep_log.srv[n], "CRDT.LOG.LIST");
        for (size_t i = 0; r && r->type == REDIS_REPLY_ARRAY && i < r->elements; i++) {
            /* CRDT.LOG.INFO's length; XLEN for a crdt.so of the stream-based log */
            redisReply *li = rh_cmd(dep_log.srv[n], "CRDT.LOG.INFO %s", r->element[i]->str);
            if (li && li->type == REDIS_REPLY_ARRAY && li->elements >= 2)
                log_entries += li->element[1]->integer;
            else
                log_entries += rh_int(rh_cmd(dep_log.srv[n], "XLEN %s", r->element[i]->str));
            if (li)
                freeReplyObject(li);
        }
        if (r)
            freeReplyObject(r);
    }

    printf("\nresults (medians of %d runs; ratio = median of the per-run ratios)\n", runs);
    printf("  CRDT.TLADD (log off) %9.0f ops/s  vs ZADD               %9.0f ops/s  ratio %.2fx "
           "(target >= 0.85x)\n",
           tl, z, q1);
    printf("  CRDT.TLADD (log on)  %9.0f ops/s  vs CRDT.TLADD (off)   %9.0f ops/s  ratio %.2fx "
           "(target >= 0.8x)\n",
           tll, tln, q2);
    printf("  CRDT.TLADD (log on)  %9.0f ops/s  vs ZADD               %9.0f ops/s  ratio %.2fx\n",
           tl3, z3, q3);
    if (!cluster_mode) {
        printf("  CRDT.TLADD           %9.0f ops/s  vs roshi EVALSHA      %9.0f ops/s  ratio %.2fx "
               "(target >= 3x)\n",
               tl4, roshi, q4);
        printf("  CRDT.TLRANGE         %9.0f ops/s  vs ZREVRANGE          %9.0f ops/s  ratio %.2fx "
               "(target >= 0.85x)\n",
               rr, zr, q5);
        printf("  MEMORY USAGE/entry   %9.1f B      vs roshi              %9.1f B      ratio %.2fx "
               "(target <= 0.6x)\n",
               mtl, mroshi, mtl / mroshi);
    }
    printf("  used_memory/entry beyond the %.1f-byte member: %.1f B with the change log at its "
           "default trim (%lld log entries kept), %.1f B without (target <= 60 B)\n",
           mlen, mem_log, log_entries, mem_nolog);
    disconnect_deploy(&dep_log);
    disconnect_deploy(&dep_nolog);
    for (int i = 0; cluster_mode && i < 2; i++)
        rc_stop(&clusters[i]);
    rh_cleanup();
    return 0;
}
