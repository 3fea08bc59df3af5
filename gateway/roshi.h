/* roshi.h - roshi-server's HTTP API (roshi.c) on the --roshi listener
 *
 * Layer: above rest.h (the cursor format), op.h and status.h.
 */
#ifndef CRDT_GW_ROSHI_H
#define CRDT_GW_ROSHI_H

#include "http.h"

/* Routes a request of the roshi listener; replies through gw_http_reply. */
void gw_roshi_handle(gw_server_t *s, gw_exchange_t *x);

#endif /* CRDT_GW_ROSHI_H */
