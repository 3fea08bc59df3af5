/* metrics.c - request counters and latency histograms, written as Prometheus families */
#include <stdio.h>
#include <string.h>

#include "metrics.h"

static const double lat_bounds[GW_LAT_BUCKETS] = {
    0.000005, 0.00001, 0.000025, 0.00005, 0.0001, 0.00025, 0.0005, 0.001,
    0.0025,   0.005,   0.01,     0.025,   0.05,   0.1,     0.25,   1.0,
};

static const char *const ep_names[GW_EP_COUNT] = {
    "key",     "key_write", "timeline",     "timelines",    "changes",      "healthz",
    "metrics", "peers",     "roshi_select", "roshi_insert", "roshi_delete", "list",
    "other",
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

void gw_metrics_write_http(const gw_metrics_t *m, gw_prom_t *o)
{
    gw_prom_family(o, "crdtd_http_requests_total", "counter",
                   "HTTP requests answered, by endpoint and status.");
    for (int ep = 0; ep < GW_EP_COUNT; ep++)
        for (int i = 0; i < 500; i++)
            if (m->by_status[ep][i]) {
                char status[8];
                snprintf(status, sizeof(status), "%d", i + 100);
                gw_prom_label_t l[2] = {{"endpoint", ep_names[ep]}, {"status", status}};
                gw_prom_u64(o, "crdtd_http_requests_total", l, 2, m->by_status[ep][i]);
            }
    gw_prom_family(o, "crdtd_http_errors_total", "counter",
                   "HTTP requests answered with status >= 400.");
    for (int ep = 0; ep < GW_EP_COUNT; ep++) {
        uint64_t errs = 0;
        for (int i = 300; i < 500; i++)
            errs += m->by_status[ep][i];
        gw_prom_u64(o, "crdtd_http_errors_total", &(gw_prom_label_t){"endpoint", ep_names[ep]}, 1,
                    errs);
    }
    gw_prom_family(o, "crdtd_http_received_bytes_total", "counter", "Request body bytes received.");
    gw_prom_u64(o, "crdtd_http_received_bytes_total", NULL, 0, m->bytes_in);
    gw_prom_family(o, "crdtd_http_sent_bytes_total", "counter", "Response body bytes sent.");
    gw_prom_u64(o, "crdtd_http_sent_bytes_total", NULL, 0, m->bytes_out);
}

void gw_metrics_write_latency(const gw_metrics_t *m, gw_prom_t *o)
{
    gw_prom_histogram(o, "crdtd_apply_seconds",
                      "Time to apply the ops of one write request to the replica (in memory).",
                      lat_bounds, m->apply_buckets, GW_LAT_BUCKETS, m->apply_count, m->apply_sum);
    gw_prom_histogram(
        o, "crdtd_write_ack_seconds",
        "Time from a complete write request to its acknowledgement (includes the flush).",
        lat_bounds, m->ack_buckets, GW_LAT_BUCKETS, m->ack_count, m->ack_sum);
}
