/* status.h - GET /healthz and GET /metrics (status.c), served on both listeners
 *
 * Layer: above http.h, sync.h and peer.h (their metrics join /metrics).
 */
#ifndef CRDT_GW_STATUS_H
#define CRDT_GW_STATUS_H

#include "http.h"

/* Prometheus text of the server, the store, the sessions and the peers; replies to x. */
void gw_status_metrics(gw_server_t *s, gw_exchange_t *x);
/* The health document (status, node, keys, seqs, the keyspace digest); replies to x. */
void gw_status_healthz(gw_server_t *s, gw_exchange_t *x);

#endif /* CRDT_GW_STATUS_H */
