/* main.c - crdtd: open the store, wire the units onto one event loop, stop cleanly on a signal */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "config.h"
#include "http.h"
#include "loop.h"
#include "peer.h"
#include "rest.h"
#include "roshi.h"
#include "server.h"
#include "sync.h"
#include "util.h"

static gw_server_t server;

static void on_signal(int sig)
{
    (void)sig;
    server.stopping = 1;
    /* wakes the poll; lws_cancel_service writes to its event pipe, async-signal-safe */
    if (server.ctx)
        lws_cancel_service(server.ctx);
}

static void route(gw_server_t *s, gw_exchange_t *x)
{
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

/* Per-session data of the WebSocket protocols is one pointer: sync.c and peer.c allocate their
 * own session structs. rx_buffer_size bounds one read, not a message; they reassemble. The size
 * of protocols[0]'s is set in main (gw_http_session_size). */
static struct lws_protocols protocols[] = {
    {"http", gw_http_callback, 0, 0, 0, NULL, 0},
    {GW_SYNC_PROTOCOL, gw_sync_callback, sizeof(void *), 65536, 0, NULL, 0},
    {GW_PEER_PROTOCOL, gw_peer_callback, sizeof(void *), 65536, 0, NULL, 0},
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

    crdt_error_t err = {0};
    s->store = crdt_store_embedded_open(&rc_cfg, &err);
    if (!s->store) {
        gw_log("cannot open the data directory %s: %s", rc_cfg.dir ? rc_cfg.dir : "(memory)",
               err.text[0] ? err.text : crdt_strerror(err.code));
        return 1;
    }
    const crdt_recovery_report_t *rep =
        crdt_replica_recovery(crdt_store_embedded_replica(s->store));
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
    signal(SIGPIPE, SIG_IGN);

    const char *defer = getenv("CRDTD_TEST_STORE_DEFER");
    bool deferred = defer && !strcmp(defer, "1");
    if (deferred) {
        crdt_store_t *d = crdt_store_deferred_wrap(s->store);
        if (!d) {
            gw_log("out of memory");
            crdt_store_close(s->store);
            return 1;
        }
        s->store = d;
        gw_log("CRDTD_TEST_STORE_DEFER: store calls complete later (a test setting)");
    }

    s->route = route;
    s->client_fallback = gw_peer_callback;
    protocols[0].per_session_data_size = gw_http_session_size();
    gw_loop_add_sink(s, &(gw_loop_sink_t){sync_change, gw_sync_on_durable, gw_sync_shutdown});
    gw_loop_add_sink(s, &(gw_loop_sink_t){peer_change, gw_peer_on_durable, gw_peer_shutdown});
    if (gw_loop_start(s, protocols) || gw_sync_init(s) || gw_peer_init(s)) {
        gw_loop_finish(s);
        crdt_store_close(s->store);
        return 1;
    }
    if (deferred)
        lws_sul_schedule(s->ctx, 0, &sul_defer, defer_cb, 2 * LWS_US_PER_MS);
    gw_log("node %llu, data %s, fsync %s, timeline bound %u", (unsigned long long)s->cfg.node_id,
           s->cfg.no_persist ? "in memory only" : s->cfg.data_dir, fsync_name(s->cfg.fsync),
           s->cfg.timeline_max_size);
    /* stdout, one line each, for scripts and tests that start crdtd on port 0 */
    printf("crdtd: listening on http://%s:%d\n", s->cfg.listen.host, s->main_port);
    if (s->vh_roshi)
        printf("crdtd: roshi API listening on http://%s:%d\n", s->cfg.roshi.host, s->roshi_port);
    fflush(stdout);

    gw_loop_run(s);

    gw_log("stopping: flushing the log");
    crdt_store_close(s->store);
    gw_log("stopped");
    return 0;
}
