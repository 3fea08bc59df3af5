/* rest.h - crdtd's REST API (rest.c): keys, ops, timeline reads, the change feed
 *
 * Layer: above http.h, op.h and peer.h (GET /v1/peers), status.h (/healthz, /metrics). Also the
 * roshi cursor format, which REST's score-ordered timeline pages share with roshi.c.
 */
#ifndef CRDT_GW_REST_H
#define CRDT_GW_REST_H

#include <stddef.h>
#include <stdint.h>

#include "crdt.h"
#include "http.h"

/* Routes a request of the main listener; replies through gw_http_reply. */
void gw_rest_handle(gw_server_t *s, gw_exchange_t *x);

/* The cursor of roshi: decimal IEEE-754 bits of the score, '!', standard base64 of the member.
 * gw_cursor_format returns a new string (malloc'd) or NULL; gw_cursor_parse fills *score and a
 * new *member buffer (free()): 0, or -1 when s is not a cursor. */
char *gw_cursor_format(const crdt_tl_entry_t *e);
int gw_cursor_parse(const char *s, double *score, uint8_t **member, size_t *mlen);

#endif /* CRDT_GW_REST_H */
