/* http.h - HTTP requests and responses (http.c): assembling requests, sending responses, and the
 * exchange that carries one request to its handler and the response back, however late
 *
 * Layer: above server.h, loop.h and jsonw.h; below the handlers (rest.h, roshi.h, status.h).
 *
 * An exchange (gw_exchange_t) is made when a request is complete and handed to s->route. The
 * handler reads x->rq, builds x->rs and calls gw_http_reply(x) exactly once, at once or from the
 * completion of a store call. Ownership rule: from the route call until gw_http_reply the exchange
 * belongs to the handler (it stays valid however long the store takes); the connection only
 * points at it. A connection that closes in between detaches (x->conn becomes NULL) and
 * gw_http_reply then frees the exchange and sends nothing. After gw_http_reply the exchange
 * belongs to the connection, which frees it once the response is sent, or when it closes.
 */
#ifndef CRDT_GW_HTTP_H
#define CRDT_GW_HTTP_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <jansson.h>
#include <libwebsockets.h>

#include "cors.h"
#include "jsonw.h"
#include "loop.h"
#include "metrics.h"
#include "server.h"
#include "token.h"

typedef enum gw_method {
    GW_GET = 0,
    GW_POST,
    GW_PUT,
    GW_DELETE,
    GW_PATCH,
    GW_HEAD,
    GW_OPTIONS,
    GW_OTHER_METHOD
} gw_method_t;

typedef struct gw_arg {
    const char *name;
    const char *value; /* "" when the argument had no '=' */
} gw_arg_t;

#define GW_MAX_ARGS 16

typedef struct gw_request {
    gw_method_t method;
    bool roshi; /* arrived on the roshi listener */
    char *path; /* NUL-terminated, percent-decoded by lws */
    size_t path_len;
    char *argbuf; /* storage of the args below */
    gw_arg_t args[GW_MAX_ARGS];
    int nargs;
    bool too_many_args;
    char *auth; /* the Authorization header, NUL-terminated, or NULL */
    bool head;  /* a HEAD: method is GW_GET, and the response goes without its body */
    char *origin; /* the Origin header, NUL-terminated, or NULL */
    char *if_none_match; /* the If-None-Match header, or NULL (static.c) */
    gw_origin_t origin_kind; /* what that origin is to this server (cors.h) */
    uint8_t *body; /* NUL-terminated for convenience; body_len excludes the NUL */
    size_t body_len;
    size_t body_expected;
} gw_request_t;

typedef struct gw_response {
    int status;
    const char *content_type;
    char *buf; /* headroom for lws and the headers (http.c), then the body; malloc'd */
    size_t len;
    uint64_t wait_seq; /* acknowledge only once crdt_store_durable_seq() >= this (0: now) */
    bool close;        /* close the connection after the response */
    bool www_auth;     /* add WWW-Authenticate: Bearer (a 401) */
    bool preflight;    /* a CORS preflight's answer: Access-Control-Allow-Methods etc. */
    const char *cache_control; /* a Cache-Control header, or NULL (static.c) */
    char etag[48];             /* an ETag header's value, quotes included, or "" (static.c) */
    gw_endpoint_t ep;
} gw_response_t;

typedef struct gw_exchange {
    gw_server_t *srv;
    gw_request_t rq; /* owned: moved out of the connection when the request was complete */
    gw_response_t rs;
    struct gw_conn *conn; /* NULL once the connection closed (the response is dropped) */
    uint64_t t_start_us;  /* request complete */
    gw_durable_wait_t wait;
    bool has_tok; /* tok holds the request's verified token (auth.c) */
    gw_token_t tok;
} gw_exchange_t;

/* The response in x->rs is complete: sends it once x->rs.wait_seq is durable (at once when 0);
 * a response still empty becomes a 500. Exactly once per exchange. */
void gw_http_reply(gw_exchange_t *x);

/* The lws callback of protocols[0]: HTTP on every listener, and the upgrade check (WebSocket
 * only on the main listener, only for the other protocols of the list). */
int gw_http_callback(struct lws *wsi, enum lws_callback_reasons reason, void *user, void *in,
                     size_t len);
/* Per-session data size of protocols[0]. */
size_t gw_http_session_size(void);

/* Value of query argument `name`, or NULL. */
const char *gw_arg(const gw_request_t *rq, const char *name);
/* Parses JSON from the body, responding 400 with the position on failure (returns NULL). */
json_t *gw_parse_body(const gw_request_t *rq, gw_response_t *rs);

/* Responses: each replaces whatever rs held. gw_respond_json steals j. */
void gw_respond_json(gw_response_t *rs, int status, json_t *j);
void gw_respond_text(gw_response_t *rs, int status, const char *ctype, const char *text,
                     size_t len);
/* Adopts the writer's buffer as the response body (application/json); w is left empty. */
void gw_respond_jw(gw_response_t *rs, int status, gw_jw_t *w);

/* The error shape shared with roshi-server: {"error":msg,"code":status,"description":text}. */
void gw_respond_error(gw_response_t *rs, int status, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
/* A JSON parse error: 400 with "position":{"line","column","offset"}. */
void gw_respond_json_error(gw_response_t *rs, const json_error_t *e);
const char *gw_status_text(int status);

#endif /* CRDT_GW_HTTP_H */
