/* test_evloop_lws.c - gw_evloop_t over libwebsockets (gateway/redis/evloop_lws.c), as crdtd will
 * run it: timers, and the Redis store's hiredis connections on a real redis-server with crdt.so
 * (pipelined writes, a restart of Redis under it: unwatch, reconnect, watch again) */
#include <signal.h>
#include <string.h>
#include <time.h>

#include "evloop_lws.h"
#include "redis_helper.h"
#include "store_redis.h"
#include "tap.h"

static struct lws_context *CTX;
static const gw_evloop_t *LOOP;
static gw_timer_t *BEAT;

/* lws_service sleeps until the next event or sul (up to 30 s): a 10 ms heartbeat keeps the test's
 * bounded waits bounded, as crdtd's own timers do there */
static void heartbeat(void *ud)
{
    (void)ud;
    LOOP->timer_arm(LOOP->ctx, BEAT, 10);
}

static bool run_until(const bool *flag, int ms)
{
    uint64_t end = gw_evloop_mono_ms() + (uint64_t)ms;
    while (!*flag && gw_evloop_mono_ms() < end)
        lws_service(CTX, 0);
    return *flag;
}

static void run_for(int ms)
{
    bool never = false;
    run_until(&never, ms);
}

typedef struct tm_res {
    int fired;
    uint64_t at;
    bool done;
} tm_res_t;

static void on_timer(void *ud)
{
    tm_res_t *t = ud;
    t->fired++;
    t->at = gw_evloop_mono_ms();
    t->done = true;
}

typedef struct res {
    bool done;
    int rc;
    uint64_t seq;
    size_t card;
} res_t;

static void on_write(void *ud, int rc, uint64_t seq)
{
    res_t *r = ud;
    r->rc = rc;
    r->seq = seq;
    r->done = true;
}

static void on_get(void *ud, int rc, const crdt_obj_t *o)
{
    res_t *r = ud;
    r->rc = rc;
    r->card = o && crdt_obj_type(o) == CRDT_TIMELINE ? crdt_timeline_card(o) : 0;
    r->done = true;
}

int main(void)
{
    const char *why = rh_skip_reason();
    if (why)
        skip_all("%s", why);
    rh_watchdog(120);
    signal(SIGPIPE, SIG_IGN);
    lws_set_log_level(LLL_ERR, NULL);
    static const struct lws_protocols protocols[] = {GW_EVLOOP_LWS_PROTOCOL,
                                                     {NULL, NULL, 0, 0, 0, NULL, 0}};
    struct lws_context_creation_info info;
    memset(&info, 0, sizeof(info));
    info.port = CONTEXT_PORT_NO_LISTEN;
    info.protocols = protocols;
    info.options = LWS_SERVER_OPTION_EXPLICIT_VHOSTS;
    CTX = lws_create_context(&info);
    struct lws_vhost *vh = CTX ? lws_create_vhost(CTX, &info) : NULL;
    ok(CTX && vh, "a libwebsockets context and vhost with the raw-file protocol");
    if (!vh)
        return done_testing();
    gw_evloop_lws_t el;
    gw_evloop_lws_init(&el, CTX, vh);
    const gw_evloop_t *loop = gw_evloop_lws_loop(&el);
    LOOP = loop;
    BEAT = loop->timer_new(loop->ctx, heartbeat, NULL);
    heartbeat(NULL);

    /* timers */
    tm_res_t t1 = {0}, t2 = {0};
    gw_timer_t *a = loop->timer_new(loop->ctx, on_timer, &t1);
    gw_timer_t *b = loop->timer_new(loop->ctx, on_timer, &t2);
    uint64_t t0 = gw_evloop_mono_ms();
    loop->timer_arm(loop->ctx, a, 30);
    loop->timer_arm(loop->ctx, b, 10);
    loop->timer_disarm(loop->ctx, b);
    ok(run_until(&t1.done, 2000) && t1.fired == 1, "an armed timer fires once");
    cmp_ok(t1.at - t0, ">=", 29, "not before its time (%llu ms)", (unsigned long long)(t1.at - t0));
    run_for(50);
    is_int(t2.fired, 0, "a disarmed timer does not fire");
    loop->timer_free(loop->ctx, a);
    loop->timer_free(loop->ctx, b);

    /* the Redis store on it */
    rh_server_t srv = {0};
    if (rh_start(&srv, NULL, "node-id 7", NULL) < 0)
        bail_out("cannot start redis-server");
    char url[64], err[256] = "";
    snprintf(url, sizeof(url), "redis://127.0.0.1:%d", srv.port);
    crdt_store_redis_config_t cfg;
    crdt_store_redis_config_init(&cfg);
    cfg.node_id = 9;
    crdt_store_t *st = crdt_store_redis_open(url, &cfg, loop, err, sizeof(err));
    uint64_t end = gw_evloop_mono_ms() + 5000;
    while (st && crdt_store_redis_ready(st) != 1 && gw_evloop_mono_ms() < end)
        lws_service(CTX, 0);
    ok(st && crdt_store_redis_ready(st) == 1, "the Redis store discovers its server on lws");
    if (st && crdt_store_redis_ready(st) == 1) {
        enum { N = 200 };
        static res_t w[N];
        for (int i = 0; i < N; i++) {
            char m[16];
            snprintf(m, sizeof(m), "m%d", i);
            crdt_mut_t add = {.type = CRDT_TIMELINE,
                              .kind = CRDT_MUT_ADD,
                              .bytes = m,
                              .len = strlen(m),
                              .score = i};
            crdt_store_write(st, "lws", 3, &add, on_write, &w[i]);
        }
        run_until(&w[N - 1].done, 5000);
        bool all = true;
        for (int i = 0; i < N; i++)
            all = all && w[i].done && w[i].rc == 1;
        ok(all, "%d pipelined writes complete through lws's poll", N);
        res_t g = {0};
        crdt_store_get(st, "lws", 3, on_get, &g);
        run_until(&g.done, 3000);
        ok(g.done && g.rc == 0 && g.card == N, "and read back (%zu entries)", g.card);

        ok(rh_restart(&srv) == 0, "redis-server restarted under the store");
        res_t r = {0};
        end = gw_evloop_mono_ms() + 8000;
        do {
            run_for(50);
            memset(&r, 0, sizeof(r));
            crdt_mut_t add = {
                .type = CRDT_TIMELINE, .kind = CRDT_MUT_ADD, .bytes = "after", .len = 5};
            crdt_store_write(st, "lws2", 4, &add, on_write, &r);
            run_until(&r.done, 3000);
        } while (r.rc < 0 && gw_evloop_mono_ms() < end);
        is_int(r.rc, 1, "the connection was dropped, unwatched and made again on lws");
    }
    crdt_store_close(st);
    run_for(20); /* lws closes the adopted descriptors */
    rh_stop(&srv);
    loop->timer_free(loop->ctx, BEAT);
    lws_context_destroy(CTX);
    rh_cleanup();
    return done_testing();
}
