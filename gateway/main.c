/* main.c - crdtd: open the store, wire the units onto one event loop, stop cleanly on a signal */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "auth.h"
#include "config.h"
#include "http.h"
#include "loop.h"
#include "peer.h"
#include "rest.h"
#include "roshi.h"
#include "server.h"
#include "static.h"
#include "sync.h"
#include "util.h"
#ifdef CRDTD_HAVE_REDIS
#include "evloop_lws.h"
#include "redis_parse.h"
#include "store_redis.h"
#endif

static gw_server_t server;

static void on_signal(int sig)
{
    if (sig == SIGHUP)
        server.reload = 1;
    else
        server.stopping = 1;
    /* wakes the poll; lws_cancel_service writes to its event pipe, async-signal-safe */
    if (server.ctx)
        lws_cancel_service(server.ctx);
}

/* SIGHUP, from the loop: the token key ring (sessions open stay open), the listeners' and the
 * peers' TLS files. */
static void on_reload(gw_server_t *s)
{
    gw_auth_reload(s);
    gw_loop_tls_reload(s);
    gw_loop_peer_tls_reload(s);
}

static void route(gw_server_t *s, gw_exchange_t *x)
{
    if (gw_static_wants(s, x) && gw_static_serve(s, x)) /* the web app's files: no token */
        return;
    if (!gw_auth_http(s, x)) {
        gw_http_reply(x);
        return;
    }
    if (x->rq.roshi)
        gw_roshi_handle(s, x);
    else
        gw_rest_handle(s, x);
}

/* Sessions see every change, whatever its origin; peers push only local ones (peer.c). */
static void sync_change(gw_server_t *s, const void *key, size_t klen, uint64_t seq,
                        const crdt_obj_t *delta, uint64_t origin)
{
    (void)origin;
    if (s->sync)
        gw_sync_on_change(s, key, klen, seq, delta);
}

static void peer_change(gw_server_t *s, const void *key, size_t klen, uint64_t seq,
                        const crdt_obj_t *delta, uint64_t origin)
{
    if (s->peers)
        gw_peer_on_change(s, key, klen, seq, delta, origin);
}

static bool sync_wants(gw_server_t *s, const void *key, size_t klen)
{
    return s->sync && gw_sync_wants(s, key, klen);
}

/* every change goes to the peers (their links queue it, or note it for the resume) */
static bool peer_wants(gw_server_t *s, const void *key, size_t klen)
{
    (void)key, (void)klen;
    return s->peers != NULL;
}

/* Per-session data of the WebSocket protocols is one pointer: sync.c and peer.c allocate their
 * own session structs. rx_buffer_size bounds one read, not a message; they reassemble. The size
 * of protocols[0]'s is set in main (gw_http_session_size). */
static struct lws_protocols protocols[] = {
    {"http", gw_http_callback, 0, 0, 0, NULL, 0},
    {GW_SYNC_PROTOCOL, gw_sync_callback, sizeof(void *), 65536, 0, NULL, 0},
    {GW_SYNC_BIN_PROTOCOL, gw_sync_callback, sizeof(void *), 65536, 0, NULL, 0},
    {GW_PEER_PROTOCOL, gw_peer_callback, sizeof(void *), 65536, GW_PROTO_SELF_AUTH, NULL, 0},
#ifdef CRDTD_HAVE_REDIS
    GW_EVLOOP_LWS_PROTOCOL, /* the Redis store's sockets (--store redis://) */
#endif
    {NULL, NULL, 0, 0, 0, NULL, 0},
};

/* CRDTD_TEST_STORE_DEFER=1 (tests only): the store's calls complete later, on this timer, as a
 * store over the network would complete them; every caller must cope (tests/test_ws_defer.c). */
static lws_sorted_usec_list_t sul_defer;

static void defer_cb(lws_sorted_usec_list_t *sul)
{
    (void)sul;
    crdt_store_deferred_run(server.store);
    lws_sul_schedule(server.ctx, 0, &sul_defer, defer_cb, 2 * LWS_US_PER_MS);
}

/* ---- --store redis:// (docs/scale-out.md) ---------------------------------------------------
 * Checked before anything opens; opened on the lws loop once the vhost exists (redis_open).
 * The Redis store's errors pass (s->store_transient). WebSocket sessions and peer links run on it
 * (both cope with completions that come later: tests/test_ws_defer.c, test_peer_sim). */
#ifdef CRDTD_HAVE_REDIS
static gw_evloop_lws_t redis_loop;
#endif

static int redis_check(const gw_config_t *c)
{
#ifdef CRDTD_HAVE_REDIS
    sr_addr_t addrs[64];
    char why[256];
    if (sr_parse_url(c->store, addrs, 64, why, sizeof(why)) < 0) {
        fprintf(stderr, "crdtd: --store %s: %s\n", c->store, why);
        return -1;
    }
    return 0;
#else
    (void)c;
    fprintf(stderr, "crdtd: --store redis:// needs crdtd built with hiredis\n");
    return -1;
#endif
}

static int redis_open(gw_server_t *s)
{
#ifdef CRDTD_HAVE_REDIS
    crdt_store_redis_config_t cfg;
    crdt_store_redis_config_init(&cfg);
    cfg.node_id = s->cfg.node_id;
    cfg.wait_replicas = s->cfg.redis_wait;
    cfg.wait_timeout_ms = s->cfg.redis_wait_timeout_ms;
    cfg.timeout_ms = s->cfg.redis_timeout_ms;
    cfg.follow_logs = s->cfg.redis_follow;
    /* seqs of a later run follow an earlier run's (a peer's resume mark is never taken for a
     * position of this run) */
    cfg.seq_base = (uint64_t)crdt_wall_ms() * 1000u;
    char err[256];
    gw_evloop_lws_init(&redis_loop, s->ctx, s->vh_main);
    crdt_store_t *st = crdt_store_redis_open(s->cfg.store, &cfg, gw_evloop_lws_loop(&redis_loop),
                                             err, sizeof(err));
    if (!st) {
        gw_log("cannot open the Redis store %s: %s", s->cfg.store, err);
        return -1;
    }
    s->store_transient = true;
    gw_loop_use_store(s, st);
    gw_log("node %llu, store %s (wait %u replicas, %s the change logs)",
           (unsigned long long)s->cfg.node_id, s->cfg.store, cfg.wait_replicas,
           cfg.follow_logs ? "following" : "not following");
    return 0;
#else
    (void)s;
    return -1;
#endif
}

/* The loop's last sink: the Redis store's sockets and timers live on the lws context, so it closes
 * after the loop drained and before the context is destroyed (the embedded store closes after). */
static void redis_shutdown(gw_server_t *s)
{
    if (s->store_transient) {
        crdt_store_close(s->store);
        s->store = NULL;
    }
}

static const char *fsync_name(crdt_fsync_policy_t p)
{
    return p == CRDT_FSYNC_ALWAYS ? "always" : p == CRDT_FSYNC_NO ? "no" : "everysec";
}

int main(int argc, char **argv)
{
    gw_server_t *s = &server;
    gw_config_defaults(&s->cfg);
    int rc = gw_config_parse(&s->cfg, argc, argv);
    if (rc)
        return rc > 0 ? 0 : 2;

    crdt_replica_config_t rc_cfg;
    crdt_replica_config_init(&rc_cfg);
    rc_cfg.dir = s->cfg.no_persist ? NULL : s->cfg.data_dir;
    rc_cfg.node_id = s->cfg.node_id;
    rc_cfg.fsync = s->cfg.fsync;
    rc_cfg.timeline_max_size = s->cfg.timeline_max_size;
    rc_cfg.snapshot_log_bytes = s->cfg.snapshot_log_bytes;
    rc_cfg.max_clock_drift_ms = s->cfg.max_clock_drift_ms;

    /* Every configuration error is reported before anything is created (the data directory, its
     * lock): the Redis URL, the TLS files, the peers' secret and URLs, the token key ring. */
    crdt_error_t err = {0};
    bool redis = s->cfg.store[0] != '\0';
    if (redis && redis_check(&s->cfg))
        return 2;
    if (gw_loop_check(&s->cfg) || gw_peer_check(&s->cfg) || gw_static_init(s))
        return 2;
    s->route = route;
    s->on_reload = on_reload;
    if (gw_auth_init(s))
        return 2;
    s->store = redis ? NULL : crdt_store_embedded_open(&rc_cfg, &err);
    if (!s->store && !redis) {
        gw_log("cannot open the data directory %s: %s", rc_cfg.dir ? rc_cfg.dir : "(memory)",
               err.text[0] ? err.text : crdt_strerror(err.code));
        gw_auth_free(s);
        return 1;
    }
    crdt_replica_t *rep_r = s->store ? crdt_store_embedded_replica(s->store) : NULL;
    const crdt_recovery_report_t *rep = rep_r ? crdt_replica_recovery(rep_r) : NULL;
    if (rc_cfg.dir && rep) {
        gw_log("recovered %s: %llu keys from the snapshot, %llu log records (%llu listed by the "
               "log's index, the rest scanned) in %.3f s; %llu keys join their records in the "
               "background (each at once when touched)",
               rc_cfg.dir, (unsigned long long)rep->snapshot_keys,
               (unsigned long long)rep->log_records, (unsigned long long)rep->index_records,
               rep->seconds, (unsigned long long)rep->pending_keys);
        s->loading = rep->pending_keys > 0;
        if (rep->dropped_bytes)
            gw_log("dropped %llu bytes of log tail: %s", (unsigned long long)rep->dropped_bytes,
                   rep->dropped_reason);
    }
    s->started_ms = gw_mono_ms();

    struct sigaction sa;
    memset(&sa, 0, sizeof(sa));
    sa.sa_handler = on_signal;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGHUP, &sa, NULL);
    signal(SIGPIPE, SIG_IGN);

    const char *defer = getenv("CRDTD_TEST_STORE_DEFER");
    bool deferred = defer && !strcmp(defer, "1");
    if (deferred) {
        crdt_store_t *d = crdt_store_deferred_wrap(s->store);
        if (!d) {
            gw_log("out of memory");
            crdt_store_close(s->store);
            gw_auth_free(s);
            return 1;
        }
        s->store = d;
        gw_log("CRDTD_TEST_STORE_DEFER: store calls complete later (a test setting)");
    }

    s->client_fallback = gw_peer_callback;
    protocols[0].per_session_data_size = gw_http_session_size();
    if (redis) /* shut down last (sinks shut down in reverse order) */
        gw_loop_add_sink(s, &(gw_loop_sink_t){NULL, NULL, redis_shutdown});
    gw_loop_add_sink(
        s, &(gw_loop_sink_t){sync_change, gw_sync_on_durable, gw_sync_shutdown, sync_wants});
    gw_loop_add_sink(
        s, &(gw_loop_sink_t){peer_change, gw_peer_on_durable, gw_peer_shutdown, peer_wants});
    if (gw_loop_start(s, protocols) || (redis && redis_open(s)) || gw_sync_init(s) ||
        gw_peer_init(s)) {
        gw_loop_finish(s);
        crdt_store_close(s->store);
        gw_auth_free(s);
        return 1;
    }
    if (deferred)
        lws_sul_schedule(s->ctx, 0, &sul_defer, defer_cb, 2 * LWS_US_PER_MS);
    if (!redis)
        gw_log("node %llu, data %s, fsync %s, timeline bound %u",
               (unsigned long long)s->cfg.node_id,
               s->cfg.no_persist ? "in memory only" : s->cfg.data_dir, fsync_name(s->cfg.fsync),
               s->cfg.timeline_max_size);
    /* stdout, one line each, for scripts and tests that start crdtd on port 0 */
    const char *scheme = gw_loop_tls(s) ? "https" : "http";
    printf("crdtd: listening on %s://%s:%d\n", scheme, s->cfg.listen.host, s->main_port);
    if (s->vh_roshi)
        printf("crdtd: roshi API listening on %s://%s:%d\n", scheme, s->cfg.roshi.host,
               s->roshi_port);
    fflush(stdout);

    gw_loop_run(s);

    gw_log("stopping: flushing the log");
    crdt_store_close(s->store);
    gw_auth_free(s);
    gw_log("stopped");
    return 0;
}
