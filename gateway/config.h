/* config.h - crdtd's configuration: flags, the --config file, defaults (config.c)
 *
 * Layer: above util.h (see util.h for the whole order). Includes replica.h for the fsync policy.
 */
#ifndef CRDT_GW_CONFIG_H
#define CRDT_GW_CONFIG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "replica.h"

#define GW_MAX_PEERS 16
#define GW_MAX_CORS 32         /* --cors-origin entries */
#define GW_CORS_ORIGIN_MAX 256 /* bytes of one, NUL included */
#define GW_MAX_HOSTS 32        /* --allowed-host names */
#define GW_HOST_NAME_MAX 254   /* bytes of one, NUL included (a DNS name is at most 253) */

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
    uint64_t max_clock_drift_ms; /* how far ahead an applied timestamp may pull the HLC */
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

    /* who may connect (auth.c) and TLS on the listeners (loop.c); docs/security.md */
    bool metrics_auth;           /* /metrics needs a token too */
    bool allow_open;             /* listen beyond loopback without a token secret */
    char roshi_token_file[1024]; /* token applied to roshi requests without Authorization */
    char tls_cert[1024];         /* PEM certificate chain of both listeners ("" = cleartext) */
    char tls_key[1024];          /* PEM private key */
    char peer_ca[1024];          /* CA of peers' certificates (wss:// peers), "" = system store */
    char peer_cert[1024];        /* mutual TLS with peers: this node's certificate and key */
    char peer_key[1024];
    bool peer_require_tls;       /* refuse cleartext peer links */

    /* peers, subprotocol crdt-peer.v1 (peer.c) */
    char cluster[64];              /* cluster name, must match on both ends of a link */
    char peer_secret_file[1024];   /* shared secret of the cluster; env CRDTD_PEER_SECRET */
    char peers[GW_MAX_PEERS][256]; /* ws://host:port of each configured peer */
    int npeers;
    size_t peer_queue;          /* outbound queue bound per peer, bytes */
    unsigned peer_batch_ms;     /* wait at most this long to fill a batch */
    unsigned anti_entropy_secs; /* period of anti-entropy rounds on each link, 0: only on connect */
    int64_t test_clock_offset_ms; /* tests only: added to the wall clock the handshake reports */

    /* the store (main.c, docs/scale-out.md): empty = the embedded store in data_dir; else
     * redis://host:port[,host:port...], a Redis or the seeds of a cluster with crdt.so */
    char store[1024];
    unsigned redis_wait;            /* a write is acknowledged once this many replicas have it */
    unsigned redis_wait_timeout_ms; /* WAIT's timeout; short of redis_wait replicas: 503 */
    unsigned redis_timeout_ms;      /* connect/reply timeout of a Redis node before it is down */
    bool redis_follow;              /* follow crdt.so's change logs: every gateway's writes */

    /* browsers (cors.c, static.c; docs/web-client.md) */
    char cors_origins[GW_MAX_CORS][GW_CORS_ORIGIN_MAX]; /* --cors-origin, lower case */
    int ncors;
    /* --allowed-host, lower case, no trailing dot: the names a node without a token secret
     * answers besides IP addresses and localhost (cors.h, gw_host_allowed) */
    char allowed_hosts[GW_MAX_HOSTS][GW_HOST_NAME_MAX];
    int nhosts;
    char static_dir[1024]; /* files served at / on --listen; "" = none */
    bool static_dir_set;   /* --static-dir given (else the demo beside the binary, if there) */
} gw_config_t;

/* Fills *c with the defaults. */
void gw_config_defaults(gw_config_t *c);

/* Parses flags (and the --config file they name, whose values flags given later override).
 * Returns 0 to run, 1 when --help or --version was printed (exit 0), -1 after printing an error
 * to stderr (exit 2). */
int gw_config_parse(gw_config_t *c, int argc, char **argv);

/* Parses "host:port" (or ":port", or "port") into *a; 0 or -1. */
int gw_addr_parse(const char *s, gw_addr_t *a);

#endif /* CRDT_GW_CONFIG_H */
