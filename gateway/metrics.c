/* metrics.c - request counters, latency histograms, /metrics (Prometheus text) and /healthz */
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "gateway.h"

static const double lat_bounds[GW_LAT_BUCKETS] = {
    0.000005, 0.00001, 0.000025, 0.00005, 0.0001, 0.00025, 0.0005, 0.001,
    0.0025,   0.005,   0.01,     0.025,   0.05,   0.1,     0.25,   1.0,
};

static const char *const ep_names[GW_EP_COUNT] = {
    "key",     "key_write", "timeline",     "timelines",    "changes",      "healthz",
    "metrics", "peers",     "roshi_select", "roshi_insert", "roshi_delete", "other",
};

const char *gw_endpoint_name(gw_endpoint_t ep)
{
    return ep < GW_EP_COUNT ? ep_names[ep] : "other";
}

void gw_metrics_request(gw_metrics_t *m, gw_endpoint_t ep, int status)
{
    if (ep >= GW_EP_COUNT)
        ep = GW_EP_OTHER;
    if (status < 100 || status > 599)
        status = 500;
    m->by_status[ep][status - 100]++;
}

static void observe(uint64_t *buckets, uint64_t *count, double *sum, double seconds)
{
    for (int i = 0; i < GW_LAT_BUCKETS; i++) {
        if (seconds <= lat_bounds[i]) {
            buckets[i]++;
            break;
        }
    }
    (*count)++;
    *sum += seconds;
}

void gw_metrics_apply(gw_metrics_t *m, double seconds)
{
    observe(m->apply_buckets, &m->apply_count, &m->apply_sum, seconds);
}

void gw_metrics_ack(gw_metrics_t *m, double seconds)
{
    observe(m->ack_buckets, &m->ack_count, &m->ack_sum, seconds);
}

/* ---- rendering ------------------------------------------------------------------------------ */

typedef struct out {
    char *p;
    size_t len, cap;
    bool oom;
} out_t;

static void outf(out_t *o, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void outf(out_t *o, const char *fmt, ...)
{
    if (o->oom)
        return;
    for (;;) {
        va_list ap;
        va_start(ap, fmt);
        int n = vsnprintf(o->p + o->len, o->cap - o->len, fmt, ap);
        va_end(ap);
        if (n < 0) {
            o->oom = true;
            return;
        }
        if ((size_t)n < o->cap - o->len) {
            o->len += (size_t)n;
            return;
        }
        size_t ncap = o->cap * 2 + (size_t)n;
        char *np = realloc(o->p, ncap);
        if (!np) {
            o->oom = true;
            return;
        }
        o->p = np;
        o->cap = ncap;
    }
}

static void histogram(out_t *o, const char *name, const char *help, const uint64_t *buckets,
                      uint64_t count, double sum)
{
    outf(o, "# HELP %s %s\n# TYPE %s histogram\n", name, help, name);
    uint64_t cum = 0;
    for (int i = 0; i < GW_LAT_BUCKETS; i++) {
        cum += buckets[i];
        outf(o, "%s_bucket{le=\"%g\"} %" PRIu64 "\n", name, lat_bounds[i], cum);
    }
    outf(o, "%s_bucket{le=\"+Inf\"} %" PRIu64 "\n", name, count);
    outf(o, "%s_sum %.9f\n%s_count %" PRIu64 "\n", name, sum, name, count);
}

void gw_metrics_render(gw_server_t *s, gw_response_t *rs)
{
    const gw_metrics_t *m = &s->metrics;
    out_t o = {malloc(16384), 0, 16384, false};
    if (!o.p) {
        gw_respond_error(rs, 500, "out of memory");
        return;
    }
    crdt_replica_stats_t st;
    memset(&st, 0, sizeof(st));
    crdt_replica_stats(s->replica, &st);

    outf(&o, "# HELP crdtd_http_requests_total HTTP requests answered, by endpoint and status.\n"
             "# TYPE crdtd_http_requests_total counter\n");
    for (int ep = 0; ep < GW_EP_COUNT; ep++)
        for (int i = 0; i < 500; i++)
            if (m->by_status[ep][i])
                outf(&o, "crdtd_http_requests_total{endpoint=\"%s\",status=\"%d\"} %" PRIu64 "\n",
                     ep_names[ep], i + 100, m->by_status[ep][i]);
    outf(&o, "# HELP crdtd_http_errors_total HTTP requests answered with status >= 400.\n"
             "# TYPE crdtd_http_errors_total counter\n");
    for (int ep = 0; ep < GW_EP_COUNT; ep++) {
        uint64_t errs = 0;
        for (int i = 300; i < 500; i++)
            errs += m->by_status[ep][i];
        outf(&o, "crdtd_http_errors_total{endpoint=\"%s\"} %" PRIu64 "\n", ep_names[ep], errs);
    }
    outf(&o,
         "# HELP crdtd_http_received_bytes_total Request body bytes received.\n"
         "# TYPE crdtd_http_received_bytes_total counter\n"
         "crdtd_http_received_bytes_total %" PRIu64 "\n"
         "# HELP crdtd_http_sent_bytes_total Response body bytes sent.\n"
         "# TYPE crdtd_http_sent_bytes_total counter\n"
         "crdtd_http_sent_bytes_total %" PRIu64 "\n",
         m->bytes_in, m->bytes_out);
    outf(&o,
         "# HELP crdtd_keys_loading Recovered keys whose logged changes are still being joined.\n"
         "# TYPE crdtd_keys_loading gauge\ncrdtd_keys_loading %" PRIu64 "\n",
         crdt_replica_keys_loading(s->replica));
    outf(&o, "# HELP crdtd_keys Keys in the keyspace, by type.\n# TYPE crdtd_keys gauge\n");
    for (int t = CRDT_TYPE_MIN; t <= CRDT_TYPE_MAX; t++)
        outf(&o, "crdtd_keys{type=\"%s\"} %" PRIu64 "\n", crdt_type_name((crdt_type_t)t),
             st.keys_by_type[t]);
    outf(&o,
         "# HELP crdtd_log_bytes Size of the delta log on disk.\n# TYPE crdtd_log_bytes gauge\n"
         "crdtd_log_bytes %" PRIu64 "\n"
         "# HELP crdtd_writes_total Writes that changed a key.\n"
         "# TYPE crdtd_writes_total counter\ncrdtd_writes_total %" PRIu64 "\n"
         "# HELP crdtd_noop_writes_total Writes that changed nothing.\n"
         "# TYPE crdtd_noop_writes_total counter\ncrdtd_noop_writes_total %" PRIu64 "\n"
         "# HELP crdtd_fsync_seconds Time spent in fsync of the log.\n"
         "# TYPE crdtd_fsync_seconds summary\n"
         "crdtd_fsync_seconds_sum %.9f\ncrdtd_fsync_seconds_count %" PRIu64 "\n"
         "# HELP crdtd_fsync_seconds_max Longest fsync of the log.\n"
         "# TYPE crdtd_fsync_seconds_max gauge\ncrdtd_fsync_seconds_max %.9f\n"
         "# HELP crdtd_snapshots_total Snapshots completed.\n"
         "# TYPE crdtd_snapshots_total counter\ncrdtd_snapshots_total %" PRIu64 "\n"
         "# HELP crdtd_snapshot_running 1 while a snapshot is being written.\n"
         "# TYPE crdtd_snapshot_running gauge\ncrdtd_snapshot_running %d\n",
         st.log_bytes, st.writes, st.noops, st.fsync_seconds_total, st.fsyncs, st.fsync_seconds_max,
         st.snapshots, st.snapshot_running ? 1 : 0);
    outf(&o,
         "# HELP crdtd_clock_ahead_total Applied writes stamped beyond --max-clock-drift-ms ahead "
         "of this clock (merged; the clock did not follow them).\n"
         "# TYPE crdtd_clock_ahead_total counter\ncrdtd_clock_ahead_total %" PRIu64 "\n",
         st.clock_ahead);
    outf(&o,
         "# HELP crdtd_last_seq Sequence number of the latest change.\n"
         "# TYPE crdtd_last_seq gauge\ncrdtd_last_seq %" PRIu64 "\n"
         "# HELP crdtd_durable_seq Highest change durable per the fsync policy.\n"
         "# TYPE crdtd_durable_seq gauge\ncrdtd_durable_seq %" PRIu64 "\n"
         "# HELP crdtd_pending_acks Write responses waiting for durability.\n"
         "# TYPE crdtd_pending_acks gauge\ncrdtd_pending_acks %zu\n"
         "# HELP crdtd_storage_healthy 0 after a storage failure (writes refused).\n"
         "# TYPE crdtd_storage_healthy gauge\ncrdtd_storage_healthy %d\n"
         "# HELP crdtd_uptime_seconds Seconds since start.\n"
         "# TYPE crdtd_uptime_seconds gauge\ncrdtd_uptime_seconds %.3f\n",
         crdt_replica_last_seq(s->replica), crdt_replica_durable_seq(s->replica), s->pending,
         /* as /healthz: a failure the replica found on its own (the background fsync of
          * --fsync everysec, reaped by the tick) sets no storage_error until a flush runs */
         (s->storage_error || crdt_replica_last_error(s->replica)) ? 0 : 1,
         (double)(gw_mono_ms() - s->started_ms) / 1e3);
    histogram(&o, "crdtd_apply_seconds",
              "Time to apply the ops of one write request to the replica (in memory).",
              m->apply_buckets, m->apply_count, m->apply_sum);
    histogram(&o, "crdtd_write_ack_seconds",
              "Time from a complete write request to its acknowledgement (includes the flush).",
              m->ack_buckets, m->ack_count, m->ack_sum);
    char *more[2] = {gw_sync_metrics(s), gw_peer_metrics(s)};
    for (int i = 0; i < 2; i++) {
        if (more[i])
            outf(&o, "%s", more[i]);
        free(more[i]);
    }
    if (o.oom) {
        free(o.p);
        gw_respond_error(rs, 500, "out of memory");
        return;
    }
    gw_respond_text(rs, 200, "text/plain; version=0.0.4; charset=utf-8", o.p, o.len);
    free(o.p);
}

void gw_healthz(gw_server_t *s, gw_response_t *rs)
{
    crdt_replica_stats_t st;
    memset(&st, 0, sizeof(st));
    crdt_replica_stats(s->replica, &st);
    const char *err = crdt_replica_last_error(s->replica);
    bool ok = !s->storage_error && !err;
    json_t *j =
        json_pack("{s:s, s:I, s:I, s:I, s:I, s:I, s:b}", "status", ok ? "ok" : "failing", "node_id",
                  (json_int_t)crdt_replica_node_id(s->replica), "keys", (json_int_t)st.keys,
                  "last_seq", (json_int_t)crdt_replica_last_seq(s->replica), "durable_seq",
                  (json_int_t)crdt_replica_durable_seq(s->replica), "uptime_ms",
                  (json_int_t)(gw_mono_ms() - s->started_ms), "persistent", !s->cfg.no_persist);
    uint64_t loading = crdt_replica_keys_loading(s->replica);
    if (j && loading) {
        /* the digest would join every pending key on the event loop: not for a health probe */
        json_object_set_new_nocheck(j, "loading_keys", json_integer((json_int_t)loading));
    } else if (j) {
        /* the order-independent keyspace digest: equal on converged replicas */
        char hex[17];
        snprintf(hex, sizeof(hex), "%016" PRIx64, crdt_replica_digest(s->replica));
        json_object_set_new_nocheck(j, "digest", json_string(hex));
    }
    if (j && !ok)
        json_object_set_new_nocheck(j, "error", json_string(err ? err : "storage failure"));
    gw_respond_json(rs, ok ? 200 : 503, j);
}
