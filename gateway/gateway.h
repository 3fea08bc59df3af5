/* gateway.h - private to crdtd's gateway: config, server state, requests, responses, metrics */
#ifndef CRDT_GATEWAY_H
#define CRDT_GATEWAY_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <jansson.h>
#include <libwebsockets.h>

#include "crdt.h"
#include "replica.h"

/* ---- configuration (config.c) --------------------------------------------------------------- */

typedef struct gw_addr {
    char host[256];
    int port; /* 0: let the kernel choose; the chosen port is printed */
} gw_addr_t;

typedef struct gw_config {
    gw_addr_t listen;
    gw_addr_t roshi;
    bool roshi_enabled;
    char data_dir[1024];
    bool no_persist;
    crdt_fsync_policy_t fsync;
    uint64_t node_id;
    uint32_t timeline_max_size;
    uint64_t snapshot_log_bytes;
    size_t max_body;   /* request body bytes */
    size_t max_key;    /* key bytes (decoded) */
    size_t max_member; /* member / register value bytes (decoded) */
    size_t max_header; /* request line + headers bytes */
    unsigned tick_ms;  /* replica timer period */
    bool verbose;
} gw_config_t;

/* Fills *c with the defaults. */
void gw_config_defaults(gw_config_t *c);

/* Parses flags (and the --config file they name, whose values flags given later override).
 * Returns 0 to run, 1 when --help or --version was printed (exit 0), -1 after printing an error
 * to stderr (exit 2). */
int gw_config_parse(gw_config_t *c, int argc, char **argv);

/* Parses "host:port" (or ":port", or "port") into *a; 0 or -1. */
int gw_addr_parse(const char *s, gw_addr_t *a);

/* ---- metrics (metrics.c) -------------------------------------------------------------------- */

/* Endpoints, as labelled in /metrics. */
typedef enum gw_endpoint {
    GW_EP_KEY = 0,      /* GET /v1/keys/{key} */
    GW_EP_KEY_WRITE,    /* POST /v1/keys/{key} */
    GW_EP_TIMELINE,     /* GET /v1/keys/{key}/timeline */
    GW_EP_SELECT,       /* GET /v1/timelines */
    GW_EP_CHANGES,      /* GET /v1/changes */
    GW_EP_HEALTHZ,      /* GET /healthz */
    GW_EP_METRICS,      /* GET /metrics */
    GW_EP_ROSHI_SELECT, /* roshi GET / */
    GW_EP_ROSHI_INSERT, /* roshi POST / */
    GW_EP_ROSHI_DELETE, /* roshi DELETE / */
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
} gw_metrics_t;

void gw_metrics_request(gw_metrics_t *m, gw_endpoint_t ep, int status);
void gw_metrics_apply(gw_metrics_t *m, double seconds);
void gw_metrics_ack(gw_metrics_t *m, double seconds);
const char *gw_endpoint_name(gw_endpoint_t ep);

/* ---- requests and responses (http.c) -------------------------------------------------------- */

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
    uint8_t *body; /* NUL-terminated for convenience; body_len excludes the NUL */
    size_t body_len;
    size_t body_expected;
} gw_request_t;

/* A response buffer: LWS_PRE for lws, GW_HDR_ROOM for the status line and headers, the body. */
#define GW_HDR_ROOM 512
#define GW_BODY_AT (LWS_PRE + GW_HDR_ROOM)

typedef struct gw_response {
    int status;
    const char *content_type;
    char *buf; /* headroom for lws and the headers (http.c), then the body; malloc'd */
    size_t len;
    uint64_t wait_seq; /* acknowledge only once crdt_replica_durable_seq() >= this (0: now) */
    bool close;        /* close the connection after the response */
    gw_endpoint_t ep;
} gw_response_t;

/* Value of query argument `name`, or NULL. */
const char *gw_arg(const gw_request_t *rq, const char *name);

/* Responses: each replaces whatever rs held. gw_respond_json steals j. */
void gw_respond_json(gw_response_t *rs, int status, json_t *j);
void gw_respond_text(gw_response_t *rs, int status, const char *ctype, const char *text,
                     size_t len);
/* ---- a JSON writer for the hot read paths (jsonw.c): no allocation per value -------------------
 */

typedef struct gw_jw {
    char *p; /* GW_BODY_AT bytes of headroom, then the JSON text */
    size_t len, cap;
    bool oom;
} gw_jw_t;

/* Starts an empty document (with the response headroom); false on allocation failure. */
bool gw_jw_init(gw_jw_t *w, size_t hint);
void gw_jw_free(gw_jw_t *w);
void gw_jw_raw(gw_jw_t *w, const char *s, size_t n);
/* A literal: the caller guarantees it needs no JSON escaping. */
void gw_jw_lit(gw_jw_t *w, const char *s);
/* "<standard base64 of the bytes>" */
void gw_jw_b64(gw_jw_t *w, const void *p, size_t n);
/* The shortest decimal that reads back as d (finite), with ".0" when it looks like an integer. */
void gw_jw_double(gw_jw_t *w, double d);
/* A number as Go's encoding/json writes a float64 (roshi-server's responses): shortest digits,
 * no ".0", exponent form below 1e-6 and from 1e21. */
void gw_jw_double_go(gw_jw_t *w, double d);
void gw_jw_u64(gw_jw_t *w, uint64_t v);
/* Adopts the writer's buffer as the response body (application/json); w is left empty. */
void gw_respond_jw(gw_response_t *rs, int status, gw_jw_t *w);

/* The error shape shared with roshi-server: {"error":msg,"code":status,"description":text}. */
void gw_respond_error(gw_response_t *rs, int status, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
/* A JSON parse error: 400 with "position":{"line","column","offset"}. */
void gw_respond_json_error(gw_response_t *rs, const json_error_t *e);
const char *gw_status_text(int status);

/* ---- the server ----------------------------------------------------------------------------- */

struct gw_conn;

typedef struct gw_server {
    gw_config_t cfg;
    crdt_replica_t *replica;
    struct lws_context *ctx;
    struct lws_vhost *vh_main, *vh_roshi;
    int main_port, roshi_port;
    lws_sorted_usec_list_t sul_flush, sul_tick;
    bool flush_scheduled;
    struct gw_conn *pending_head, *pending_tail; /* waiting for durability, in seq order */
    size_t pending;
    gw_metrics_t metrics;
    int storage_error; /* last negative code from crdt_replica_flush, 0 while healthy */
    uint64_t started_ms;
    volatile int stopping;
} gw_server_t;

/* Creates the lws context with the listener(s); 0 or -1 (logged). */
int gw_http_start(gw_server_t *s);
/* Runs the loop until s->stopping; then acknowledges what it can and destroys the context. */
void gw_http_run(gw_server_t *s);
/* To be called after a handler wrote (seq advanced): schedules the group commit. */
void gw_http_schedule_flush(gw_server_t *s);
uint64_t gw_now_us(void);

/* ---- handlers (rest.c, roshi.c, metrics.c) -------------------------------------------------- */

void gw_rest_handle(gw_server_t *s, const gw_request_t *rq, gw_response_t *rs);
void gw_roshi_handle(gw_server_t *s, const gw_request_t *rq, gw_response_t *rs);
void gw_metrics_render(gw_server_t *s, gw_response_t *rs);
void gw_healthz(gw_server_t *s, gw_response_t *rs);

/* ---- shared helpers (rest.c) ---------------------------------------------------------------- */

/* Parses JSON from the body, responding 400 with the position on failure (returns NULL). */
json_t *gw_parse_body(const gw_request_t *rq, gw_response_t *rs);
/* Decodes a standard base64 JSON string field into a new buffer; on failure responds 400 naming
 * `what` and returns -1. max: the decoded size limit (responded with 400 too). */
int gw_b64_field(const json_t *v, const char *what, size_t max, gw_response_t *rs, uint8_t **out,
                 size_t *outlen);
/* Base64 (standard) of bytes as a new JSON string. */
json_t *gw_b64_json(const void *p, size_t n);
/* Millisecond clock for crdt_replica_tick. */
uint64_t gw_mono_ms(void);

#define GW_LOG(...) gw_log(__VA_ARGS__)
void gw_log(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

#endif /* CRDT_GATEWAY_H */
