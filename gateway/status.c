/* status.c - GET /metrics (Prometheus text) and GET /healthz, from the store's statistics */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "peer.h"
#include "prom.h"
#include "status.h"
#include "sync.h"
#include "util.h"

static void gauge(gw_prom_t *o, const char *name, const char *help, uint64_t v)
{
    gw_prom_family(o, name, "gauge", help);
    gw_prom_u64(o, name, NULL, 0, v);
}

static void counter(gw_prom_t *o, const char *name, const char *help, uint64_t v)
{
    gw_prom_family(o, name, "counter", help);
    gw_prom_u64(o, name, NULL, 0, v);
}

/* The store's numbers need no store call with a completion: they are what the store keeps
 * current (crdt_store_stats and the seqs are synchronous in the interface). */
void gw_status_metrics(gw_server_t *s, gw_exchange_t *x)
{
    crdt_store_stats_t st;
    memset(&st, 0, sizeof(st));
    crdt_store_stats(s->store, &st);
    gw_prom_t o;
    gw_prom_init(&o, 16384);

    gw_metrics_write_http(&s->metrics, &o);
    gauge(&o, "crdtd_keys_loading", "Recovered keys whose logged changes are still being joined.",
          st.keys_loading);
    gw_prom_family(&o, "crdtd_keys", "gauge", "Keys in the keyspace, by type.");
    for (int t = CRDT_TYPE_MIN; t <= CRDT_TYPE_MAX; t++)
        gw_prom_u64(&o, "crdtd_keys", &(gw_prom_label_t){"type", crdt_type_name((crdt_type_t)t)}, 1,
                    st.keys_by_type[t]);
    gauge(&o, "crdtd_log_bytes", "Size of the delta log on disk.", st.log_bytes);
    counter(&o, "crdtd_writes_total", "Writes that changed a key.", st.writes);
    counter(&o, "crdtd_noop_writes_total", "Writes that changed nothing.", st.noops);
    gw_prom_family(&o, "crdtd_fsync_seconds", "summary", "Time spent in fsync of the log.");
    gw_prom_f64(&o, "crdtd_fsync_seconds_sum", NULL, 0, st.fsync_seconds_total);
    gw_prom_u64(&o, "crdtd_fsync_seconds_count", NULL, 0, st.fsyncs);
    gw_prom_family(&o, "crdtd_fsync_seconds_max", "gauge", "Longest fsync of the log.");
    gw_prom_f64(&o, "crdtd_fsync_seconds_max", NULL, 0, st.fsync_seconds_max);
    counter(&o, "crdtd_snapshots_total", "Snapshots completed.", st.snapshots);
    gauge(&o, "crdtd_snapshot_running", "1 while a snapshot is being written.",
          st.snapshot_running ? 1 : 0);
    counter(&o, "crdtd_clock_ahead_total",
            "Applied writes stamped beyond --max-clock-drift-ms ahead of this clock (merged; the "
            "clock did not follow them).",
            st.clock_ahead);
    gauge(&o, "crdtd_last_seq", "Sequence number of the latest change.",
          crdt_store_last_seq(s->store));
    gauge(&o, "crdtd_durable_seq", "Highest change durable per the fsync policy.",
          crdt_store_durable_seq(s->store));
    gauge(&o, "crdtd_pending_acks", "Write responses waiting for durability.", s->loop.waiting);
    /* as /healthz: a failure the store found on its own (the background fsync of --fsync
     * everysec, reaped by the tick) counts before a flush ran into it */
    gauge(&o, "crdtd_storage_healthy", "0 after a storage failure (writes refused).",
          gw_loop_storage_failed(s) ? 0 : 1);
    gw_prom_family(&o, "crdtd_uptime_seconds", "gauge", "Seconds since start.");
    gw_prom_f64(&o, "crdtd_uptime_seconds", NULL, 0, (double)(gw_mono_ms() - s->started_ms) / 1e3);
    gw_metrics_write_latency(&s->metrics, &o);
    char *more[2] = {gw_sync_metrics(s), gw_peer_metrics(s)};
    for (int i = 0; i < 2; i++) {
        if (more[i])
            gw_prom_raw(&o, more[i], strlen(more[i]));
        free(more[i]);
    }
    size_t len;
    char *text = gw_prom_take(&o, &len);
    if (!text)
        gw_respond_error(&x->rs, 500, "out of memory");
    else
        gw_respond_text(&x->rs, 200, "text/plain; version=0.0.4; charset=utf-8", text, len);
    free(text);
    gw_http_reply(x);
}

void gw_status_healthz(gw_server_t *s, gw_exchange_t *x)
{
    crdt_store_stats_t st;
    memset(&st, 0, sizeof(st));
    crdt_store_stats(s->store, &st);
    const char *err = crdt_store_last_error(s->store);
    bool ok = !gw_loop_storage_failed(s);
    const char *status = ok ? "ok" : s->store_transient ? "unavailable" : "failing";
    json_t *j =
        json_pack("{s:s, s:I, s:I, s:I, s:I, s:I, s:b}", "status", status, "node_id",
                  (json_int_t)crdt_store_node_id(s->store), "keys", (json_int_t)st.keys, "last_seq",
                  (json_int_t)crdt_store_last_seq(s->store), "durable_seq",
                  (json_int_t)crdt_store_durable_seq(s->store), "uptime_ms",
                  (json_int_t)(gw_mono_ms() - s->started_ms), "persistent", !s->cfg.no_persist);
    /* the keyspace digest is introspection of the embedded replica: other stores show none */
    crdt_replica_t *r = crdt_store_embedded_replica(s->store);
    if (j && st.keys_loading) {
        /* the digest would join every pending key on the event loop: not for a health probe */
        json_object_set_new_nocheck(j, "loading_keys", json_integer((json_int_t)st.keys_loading));
    } else if (j && r) {
        /* the order-independent keyspace digest: equal on converged replicas */
        char hex[17];
        snprintf(hex, sizeof(hex), "%016" PRIx64, crdt_replica_digest(r));
        json_object_set_new_nocheck(j, "digest", json_string(hex));
    }
    if (j && s->store_transient)
        json_object_set_new_nocheck(j, "store", json_string("redis"));
    if (j && !ok)
        json_object_set_new_nocheck(j, "error", json_string(err ? err : "storage failure"));
    gw_respond_json(&x->rs, ok ? 200 : 503, j);
    gw_http_reply(x);
}
