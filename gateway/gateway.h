/* gateway.h - private to crdtd's gateway: config, server state, requests, responses, metrics */
#ifndef CRDT_GATEWAY_H
#define CRDT_GATEWAY_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <jansson.h>
#include <libwebsockets.h>

#include "crdt.h"
#include "crdt_store.h"
#include "replica.h"

/* ---- configuration (config.c) --------------------------------------------------------------- */

#define GW_MAX_PEERS 16

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

    /* WebSocket client sessions, subprotocol crdt.v1 (sync.c) */
    char token_secret_file[1024];  /* HMAC-SHA256 key of client tokens; env CRDTD_TOKEN_SECRET */
    size_t ws_max_message;         /* largest message in either direction, bytes */
    unsigned ws_max_subscriptions; /* per session */
    unsigned ws_max_sessions;      /* per server */
    size_t ws_send_queue;          /* per-session send queue bound, bytes */
    unsigned ws_idle_timeout;      /* seconds without any frame from the client */
    unsigned ws_max_errors;        /* error replies before the session is closed */

    /* peers, subprotocol crdt-peer.v1 (peer.c) */
    char cluster[64];              /* cluster name, must match on both ends of a link */
    char peer_secret_file[1024];   /* shared secret of the cluster; env CRDTD_PEER_SECRET */
    char peers[GW_MAX_PEERS][256]; /* ws://host:port of each configured peer */
    int npeers;
    size_t peer_queue;          /* outbound queue bound per peer, bytes */
    unsigned peer_batch_ms;     /* wait at most this long to fill a batch */
    unsigned anti_entropy_secs; /* period of anti-entropy rounds on each link, 0: only on connect */
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
    GW_EP_PEERS,        /* GET /v1/peers */
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
    /* the store interface over the replica (embedded): what WebSocket sessions (sync.c) read and
     * write through; its change event is the replica's listener */
    crdt_store_t *store;
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
    struct gw_sync *sync;   /* WebSocket client sessions (sync.c), NULL until gw_sync_init */
    struct gw_peers *peers; /* peer links (peer.c), NULL until gw_peer_init */
    /* The peer link whose delta is being applied right now (peer.c sets it around
     * crdt_replica_apply), so the change is not echoed back to the node it came from; -1 when the
     * change came from a client. */
    int applying_peer;
    bool loading; /* recovered keys are still being joined in the background (logged when done) */
} gw_server_t;

/* Creates the lws context with the listener(s); 0 or -1 (logged). */
int gw_http_start(gw_server_t *s);
/* Runs the loop until s->stopping; then acknowledges what it can and destroys the context. */
void gw_http_run(gw_server_t *s);
/* To be called after a handler wrote (seq advanced): schedules the group commit. */
void gw_http_schedule_flush(gw_server_t *s);
uint64_t gw_now_us(void);

/* ---- WebSocket client sessions (sync.c), subprotocol "crdt.v1" --------------------------------
 * The protocol callback is in http.c's protocol list; everything else about sessions is sync.c's.
 */

#define GW_SYNC_PROTOCOL "crdt.v1"
/* Reads the token secret, sets up session state; 0 or -1 (logged). After gw_http_start. */
int gw_sync_init(gw_server_t *s);
/* Frees what sessions still hold; the lws context is destroyed after this. */
void gw_sync_shutdown(gw_server_t *s);
int gw_sync_callback(struct lws *wsi, enum lws_callback_reasons reason, void *user, void *in,
                     size_t len);
/* Every change applied to the replica (from any source), in seq order: fan-out. */
void gw_sync_on_change(gw_server_t *s, const void *key, size_t klen, uint64_t seq,
                       const crdt_obj_t *delta);
/* crdt_replica_durable_seq() may have advanced (or a storage failure was met): send acks. */
void gw_sync_on_durable(gw_server_t *s);
/* Prometheus text for /metrics (malloc'd, NUL-terminated), or NULL. */
char *gw_sync_metrics(gw_server_t *s);

/* The outcome of one write in REST's shape (rest.c), shared by POST /v1/keys/{key} and crdt.v1's
 * apply. */
typedef struct gw_op_result {
    int rc;           /* 0, or -1: the op failed (status, code and message say why) */
    int status;       /* the HTTP status REST answers with: 200, 400, 409, 500, 503 */
    const char *code; /* crdt.v1 error code (docs/protocol.md) on failure, else NULL */
    char message[400];
    size_t applied, ops; /* ops that changed the key / ops in the request */
    uint64_t seq;        /* seq of the last change made, 0 when nothing changed */
} gw_op_result_t;

/* Called exactly once with the outcome of gw_apply_op, possibly before gw_apply_op returns; r is
 * borrowed for the call. */
typedef void (*gw_op_done_cb)(gw_server_t *s, const gw_op_result_t *r, void *ud);

/* Applies a REST-shaped op object (the body of POST /v1/keys/{key}) to key: validates, runs the
 * ops, records apply metrics, then calls done(s, r, ud). r->status 200 on success (r->applied may
 * be 0: a no-op); otherwise r->status/code/message say why (a batch stopped by a storage failure
 * keeps r->applied/seq). key and op are borrowed for the call only (what is needed later is
 * copied). Does not schedule the flush: the caller does, after recording what waits for it. */
void gw_apply_op(gw_server_t *s, const uint8_t *key, size_t klen, const json_t *op,
                 gw_op_done_cb done, void *ud);

/* Keys starting with these bytes are crdtd's own (per-client op-id high-water marks of crdt.v1):
 * clients can neither write nor subscribe to them. */
#define GW_RESERVED_PREFIX "\0c/"
#define GW_RESERVED_PREFIX_LEN 3
bool gw_key_reserved(const void *key, size_t klen);

/* ---- peer links (peer.c), subprotocol "crdt-peer.v1" on the same port ------------------------ */

#define GW_PEER_PROTOCOL "crdt-peer.v1"
/* Reads the peer secret, builds the anti-entropy index, starts connecting to the configured
 * peers; 0 or -1 (logged). After gw_http_start. */
int gw_peer_init(gw_server_t *s);
void gw_peer_shutdown(gw_server_t *s);
int gw_peer_callback(struct lws *wsi, enum lws_callback_reasons reason, void *user, void *in,
                     size_t len);
void gw_peer_on_change(gw_server_t *s, const void *key, size_t klen, uint64_t seq,
                       const crdt_obj_t *delta);
void gw_peer_on_durable(gw_server_t *s);
char *gw_peer_metrics(gw_server_t *s);
/* GET /v1/peers: per-peer status as JSON. */
void gw_peer_status(gw_server_t *s, gw_response_t *rs);

/* ---- crypto (crypto.c, OpenSSL's libcrypto, which libwebsockets already links) ----------------
 */

#define GW_HMAC_LEN 32
/* HMAC-SHA256 of msg under key into out[32]. */
void gw_hmac_sha256(const void *key, size_t klen, const void *msg, size_t mlen,
                    uint8_t out[GW_HMAC_LEN]);
/* Constant-time comparison of n bytes: true when equal. */
bool gw_ct_equal(const void *a, const void *b, size_t n);
/* n bytes from the OS's CSPRNG; 0 or -1. */
int gw_random(void *buf, size_t n);
/* A secret from the file at `path` (if non-empty; trailing newlines stripped) or else from the
 * environment variable `env`. Returns its length (>= 16), 0 when neither is set, or -1 after
 * logging why (unreadable, shorter than 16 bytes, longer than cap). */
int gw_load_secret(const char *path, const char *env, uint8_t *buf, size_t cap);

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
