/* sync.h - WebSocket client sessions (sync.c), subprotocol "crdt.v1"
 *
 * Layer: above http.h and op.h (sessions apply ops with gw_apply_op). main.c puts
 * gw_sync_callback in the lws protocol list and registers the sessions as a loop sink.
 */
#ifndef CRDT_GW_SYNC_H
#define CRDT_GW_SYNC_H

#include <stddef.h>
#include <stdint.h>

#include <libwebsockets.h>

#include "crdt.h"
#include "op.h"
#include "server.h"

#define GW_SYNC_PROTOCOL "crdt.v1"
/* binary crdt.v1 (proto/crdt_v1_bin.h), served by the same callback */
#define GW_SYNC_BIN_PROTOCOL "crdt.v1.bin"
/* Reads the token secret, sets up session state; 0 or -1 (logged). After gw_http_start. */
int gw_sync_init(gw_server_t *s);
/* Frees what sessions still hold; the lws context is destroyed after this. */
void gw_sync_shutdown(gw_server_t *s);
int gw_sync_callback(struct lws *wsi, enum lws_callback_reasons reason, void *user, void *in,
                     size_t len);
/* Whether a change of key would reach a session (one subscribes to it or to a prefix of it). */
bool gw_sync_wants(gw_server_t *s, const void *key, size_t klen);
/* Every change applied to the replica (from any source), in seq order: fan-out. */
void gw_sync_on_change(gw_server_t *s, const void *key, size_t klen, uint64_t seq,
                       const crdt_obj_t *delta);
/* crdt_replica_durable_seq() may have advanced (or a storage failure was met): send acks. */
void gw_sync_on_durable(gw_server_t *s);
/* Prometheus text for /metrics (malloc'd, NUL-terminated), or NULL. */
char *gw_sync_metrics(gw_server_t *s);

#endif /* CRDT_GW_SYNC_H */
