/* cors.h - which web origins may use crdtd from a page: the --cors-origin allow-list (cors.c)
 *
 * Layer: above config.h (pure functions of strings, no libwebsockets); http.c applies them.
 *
 * A browser sends Origin with every cross-origin request, with every POST, and with every
 * WebSocket upgrade. An origin is one of: absent (curl, crdtc without a browser), the page's own
 * (the Origin's host[:port] is the request's Host: the demo crdtd serves itself), on the list
 * (--cors-origin: such pages may read the HTTP API's responses and write), or foreign. A foreign
 * origin gets no CORS headers (the browser keeps the responses from the page), and its writes and
 * WebSocket upgrades are refused with 403: a page on another site cannot write through a
 * visitor's crdtd (a loopback node without a token secret accepts any write) or open a session.
 */
#ifndef CRDT_GW_CORS_H
#define CRDT_GW_CORS_H

#include <stdbool.h>
#include <stddef.h>

#include "config.h"

typedef enum gw_origin {
    GW_ORIGIN_NONE = 0, /* no Origin header */
    GW_ORIGIN_SAME,     /* the Origin names the Host the request was sent to */
    GW_ORIGIN_LISTED,   /* on the --cors-origin list */
    GW_ORIGIN_FOREIGN,  /* any other, "null" included */
} gw_origin_t;

/* Adds each origin of a comma-separated list (scheme://host[:port], scheme http or https, no
 * path; stored lower case) to c->cors_origins. 0, or -1 with the reason in why (nothing of the
 * list is added then). */
int gw_cors_add(gw_config_t *c, const char *list, char *why, size_t whylen);

/* What the Origin header `origin` (NULL: none) is for a request that named `host` (its Host
 * header, NULL if none) on a server configured with c. Case-insensitive. */
gw_origin_t gw_cors_classify(const gw_config_t *c, const char *origin, const char *host);

/* Adds each host name of a comma-separated list (letters, digits, '-', '_' and '.'; no port; stored
 * lower case, without a trailing dot) to c->allowed_hosts. 0, or -1 with the reason in why
 * (nothing of the list is added then). */
int gw_hosts_add(gw_config_t *c, const char *list, char *why, size_t whylen);

/* Whether a node without a token secret answers a request whose Host header is `host` (NULL or
 * empty: none). DNS rebinding: a site can make its own name resolve to 127.0.0.1, and its pages
 * are then "same origin" with the node, Origin check passed; but their requests still carry the
 * site's name in Host. So an open node answers only a Host that is an IP address (v4, or v6 in
 * brackets or bare), `localhost` or a name under `.localhost` (browsers resolve those to loopback
 * themselves), or one of --allowed-host, with or without a port; and a request without Host
 * (no browser sends one). Case-insensitive; a trailing dot is ignored. */
bool gw_host_allowed(const gw_config_t *c, const char *host);

/* The methods and request headers a preflight allows (Access-Control-Allow-*). */
#define GW_CORS_METHODS "GET, HEAD, POST, PUT, DELETE, OPTIONS"
#define GW_CORS_HEADERS "Authorization, Content-Type, If-None-Match"
/* Response headers a page may read besides the safelisted ones. */
#define GW_CORS_EXPOSE "ETag, WWW-Authenticate"
#define GW_CORS_MAX_AGE "600"

#endif /* CRDT_GW_CORS_H */
