/* bench_store_redis.c - writes/s through the Redis store (gateway/redis) on one redis-server with
 * crdt.so, against a raw pipelined hiredis client sending the same CRDT.TLADD commands (the
 * ceiling of that server), and the embedded store in memory, in one run; medians of R runs.
 *
 *   bench_store_redis [writes] [runs]
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "crdt_store.h"
#include "evloop_poll.h"
#include "redis_helper.h"
#include "store_redis.h"

static ep_loop_t *L;
static size_t done_n;
static int failed;

static double now_s(void)
{
    return (double)gw_evloop_mono_ms() / 1000.0;
}

static int cmp_d(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static double median(double *v, int n)
{
    qsort(v, (size_t)n, sizeof(*v), cmp_d);
    return n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
}

static void on_write(void *ud, int rc, uint64_t seq)
{
    (void)ud, (void)seq;
    done_n++;
    failed += rc < 0;
}

static void mk(int run, size_t i, char *key, char *member)
{
    snprintf(key, 32, "b%d:%zu", run, i % 1000);
    snprintf(member, 32, "m%zu", i);
}

/* writes through a store with at most `window` in flight; writes/s */
static double through_store(crdt_store_t *st, int run, size_t n, size_t window, bool loop)
{
    done_n = 0;
    failed = 0;
    double t0 = now_s();
    size_t sent = 0;
    while (done_n < n) {
        while (sent < n && sent - done_n < window) {
            char key[32], m[32];
            mk(run, sent, key, m);
            crdt_mut_t add = {.type = CRDT_TIMELINE, .kind = CRDT_MUT_ADD, .bytes = m,
                              .len = strlen(m), .score = (double)sent};
            crdt_store_write(st, key, strlen(key), &add, on_write, NULL);
            sent++;
        }
        if (loop)
            ep_run_once(L, 10);
    }
    return (double)n / (now_s() - t0);
}

/* the same commands from a blocking hiredis context, pipelined by `window` */
static double raw_pipelined(redisContext *c, int run, size_t n, size_t window)
{
    double t0 = now_s();
    for (size_t base = 0; base < n; base += window) {
        size_t k = n - base < window ? n - base : window;
        for (size_t i = 0; i < k; i++) {
            char key[32], m[32], sc[32];
            mk(run, base + i, key, m);
            snprintf(sc, sizeof(sc), "%zu", base + i);
            redisAppendCommand(c, "CRDT.TLADD %s %s %s", key, sc, m);
        }
        for (size_t i = 0; i < k; i++) {
            void *r = NULL;
            if (redisGetReply(c, &r) != REDIS_OK)
                return 0;
            freeReplyObject(r);
        }
    }
    return (double)n / (now_s() - t0);
}

int main(int argc, char **argv)
{
    size_t n = argc > 1 ? (size_t)atol(argv[1]) : 100000;
    int runs = argc > 2 ? atoi(argv[2]) : 5;
    if (runs < 1 || runs > 50 || n < 1000) {
        fprintf(stderr, "usage: bench_store_redis [writes >= 1000] [runs 1..50]\n");
        return 2;
    }
    const char *why = rh_skip_reason();
    if (why) {
        printf("# skipped: %s\n", why);
        return 0;
    }
    rh_watchdog(600);
    L = ep_new();
    rh_server_t srv = {0};
    const char *extra[] = {"--save", "", "--appendonly", "no", NULL};
    if (rh_start(&srv, NULL, "node-id 7", extra) < 0)
        return 1;
    char url[64], err[256];
    snprintf(url, sizeof(url), "redis://127.0.0.1:%d", srv.port);
    crdt_store_redis_config_t cfg;
    crdt_store_redis_config_init(&cfg);
    cfg.node_id = 9;
    crdt_store_t *rs = crdt_store_redis_open(url, &cfg, ep_loop(L), err, sizeof(err));
    while (rs && crdt_store_redis_ready(rs) == 0)
        ep_run_once(L, 10);
    if (!rs || crdt_store_redis_ready(rs) != 1) {
        fprintf(stderr, "open: %s\n", rs ? crdt_store_last_error(rs) : err);
        return 1;
    }
    crdt_replica_config_t rc;
    crdt_replica_config_init(&rc);
    rc.node_id = 9;
    crdt_error_t e = {0};
    crdt_store_t *es = crdt_store_embedded_open(&rc, &e);
    enum { W = 256 };
    double emb[50], raw[50], st[50], st1[50];
    for (int r = 0; r < runs; r++) {
        emb[r] = through_store(es, r, n, W, false);
        raw[r] = raw_pipelined(srv.c, 1000 + r, n, W);
        st[r] = through_store(rs, 2000 + r, n, W, true);
        st1[r] = through_store(rs, 3000 + r, n / 10, 1, true);
        freeReplyObject(rh_cmd(&srv, "FLUSHALL"));
    }
    double m_emb = median(emb, runs), m_raw = median(raw, runs), m_st = median(st, runs),
           m_st1 = median(st1, runs);
    printf("# bench_store_redis: %zu timeline adds over 1000 keys, %d runs, medians; failed %d\n",
           n, runs, failed);
    printf("embedded store (memory)            %10.0f writes/s\n", m_emb);
    printf("raw hiredis, %d pipelined          %10.0f writes/s\n", W, m_raw);
    printf("redis store, %d in flight          %10.0f writes/s  %.2fx raw, %.3fx embedded\n", W,
           m_st, m_st / m_raw, m_st / m_emb);
    printf("redis store, 1 in flight            %10.0f writes/s  %.3fx the pipelined store\n",
           m_st1, m_st1 / m_st);
    crdt_store_close(rs);
    crdt_store_close(es);
    rh_stop(&srv);
    rh_cleanup();
    ep_free(L);
    return 0;
}
