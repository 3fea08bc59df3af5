/* peer.h - peer links (peer.c), subprotocol "crdt-peer.v1" on the main listener
 *
 * Layer: above http.h (gw_peer_status answers GET /v1/peers). main.c puts gw_peer_callback in the
 * lws protocol list (and as the HTTP client fallback) and registers the peers as a loop sink.
 */
#ifndef CRDT_GW_PEER_H
#define CRDT_GW_PEER_H

#include <stddef.h>
#include <stdint.h>

#include <libwebsockets.h>

#include "crdt.h"
#include "http.h"
#include "server.h"

#define GW_PEER_PROTOCOL "crdt-peer.v1"
/* Reads the peer secret, builds the anti-entropy index, starts connecting to the configured
 * peers; 0 or -1 (logged). After gw_http_start. */
/* The peer flags checked before anything opens (main.c): the secret is readable when given and
 * present for --peer, every --peer URL parses. -1 after logging why. */
int gw_peer_check(const gw_config_t *c);
int gw_peer_init(gw_server_t *s);
void gw_peer_shutdown(gw_server_t *s);
int gw_peer_callback(struct lws *wsi, enum lws_callback_reasons reason, void *user, void *in,
                     size_t len);
/* Every change applied, with its origin: only local changes (CRDT_ORIGIN_LOCAL) are pushed. */
void gw_peer_on_change(gw_server_t *s, const void *key, size_t klen, uint64_t seq,
                       const crdt_obj_t *delta, uint64_t origin);
void gw_peer_on_durable(gw_server_t *s);
char *gw_peer_metrics(gw_server_t *s);
/* GET /v1/peers: per-peer status as JSON. */
void gw_peer_status(gw_server_t *s, gw_response_t *rs);

#endif /* CRDT_GW_PEER_H */
