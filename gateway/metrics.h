/* metrics.h - request counters and latency histograms, and their Prometheus families (metrics.c)
 *
 * Layer: above prom.h. Knows nothing of the server: status.c renders /metrics from these and the
 * store's statistics.
 */
#ifndef CRDT_GW_METRICS_H
#define CRDT_GW_METRICS_H

#include <stdint.h>

#include "prom.h"

/* Endpoints, as labelled in /metrics. */
typedef enum gw_endpoint {
    GW_EP_KEY = 0,      /* GET /v1/keys/{key} */
    GW_EP_KEY_WRITE,    /* POST /v1/keys/{key} */
    GW_EP_TIMELINE,     /* GET /v1/keys/{key}/timeline */
    GW_EP_SELECT,       /* GET /v1/timelines */
    GW_EP_CHANGES,      /* GET /v1/changes */
    GW_EP_HEALTHZ,      /* GET /healthz */
    GW_EP_METRICS,      /* GET /metrics */
    GW_EP_PEERS,        /* GET /v1/peers */
    GW_EP_ROSHI_SELECT, /* roshi GET / */
    GW_EP_ROSHI_INSERT, /* roshi POST / */
    GW_EP_ROSHI_DELETE, /* roshi DELETE / */
    GW_EP_LIST,         /* GET /v1/keys */
    GW_EP_OTHER,        /* unknown paths, malformed requests */
    GW_EP_COUNT
} gw_endpoint_t;

#define GW_LAT_BUCKETS 16

typedef struct gw_metrics {
    uint64_t requests[GW_EP_COUNT][6]; /* by status class: [1..5]xx; [0] other */
    uint64_t by_status[GW_EP_COUNT][600 - 100];
    uint64_t apply_count;
    double apply_sum;
    uint64_t apply_buckets[GW_LAT_BUCKETS]; /* cumulative at render time, per bucket here */
    uint64_t ack_count;
    double ack_sum;
    uint64_t ack_buckets[GW_LAT_BUCKETS];
    uint64_t bytes_in, bytes_out;
    uint64_t connections;
    uint64_t replies_dropped; /* the connection closed before its handler replied (not shown) */
} gw_metrics_t;

void gw_metrics_request(gw_metrics_t *m, gw_endpoint_t ep, int status);
void gw_metrics_apply(gw_metrics_t *m, double seconds);
void gw_metrics_ack(gw_metrics_t *m, double seconds);
const char *gw_endpoint_name(gw_endpoint_t ep);

/* Appends the HTTP families (requests by endpoint and status, errors, bytes) to o. */
void gw_metrics_write_http(const gw_metrics_t *m, gw_prom_t *o);
/* Appends the apply and write-ack latency histograms to o. */
void gw_metrics_write_latency(const gw_metrics_t *m, gw_prom_t *o);

#endif /* CRDT_GW_METRICS_H */
