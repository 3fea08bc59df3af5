/* server.h - the state of one crdtd server (gw_server_t), which every serving unit receives
 *
 * Layer: above config.h, metrics.h and loop.h; below http.h and the units that serve (see util.h
 * for the whole order). The units behind the opaque pointers (sessions, peers) keep their state to
 * themselves.
 */
#ifndef CRDT_GW_SERVER_H
#define CRDT_GW_SERVER_H

#include <stdbool.h>
#include <stdint.h>

#include <libwebsockets.h>

#include "config.h"
#include "crdt_store.h"
#include "loop.h"
#include "metrics.h"

struct gw_exchange;

/* Routes a complete HTTP request (http.c calls it; main.c sets it): REST or roshi. */
typedef void (*gw_route_fn)(gw_server_t *s, struct gw_exchange *x);

struct gw_server {
    gw_config_t cfg;
    crdt_store_t *store; /* every read and write goes through it */
    struct lws_context *ctx;
    const struct lws_protocols *protocols; /* the list gw_loop_start was given */
    struct lws_vhost *vh_main, *vh_roshi;
    int main_port, roshi_port;
    gw_loop_t loop;
    gw_route_fn route;
    /* lws callback of the unit that dials client connections (peer links): a dialled wsi that
     * dies before its upgrade may be reported to protocols[0], HTTP, which passes it on. */
    lws_callback_function *client_fallback;
    gw_metrics_t metrics;
    int storage_error; /* last negative code from crdt_store_flush, 0 while healthy */
    uint64_t started_ms;
    volatile int stopping;
    volatile int reload;                  /* SIGHUP seen: the loop calls on_reload */
    void (*on_reload)(gw_server_t *s);    /* main.c: key ring and certificates */
    struct gw_auth *auth;                 /* token key ring (auth.c), NULL until gw_auth_init */
    bool open_node; /* no token secret (gw_auth_init sets it): http.c answers allowed Hosts only */
    struct gw_sync *sync;   /* WebSocket client sessions (sync.c), NULL until gw_sync_init */
    struct gw_peers *peers; /* peer links (peer.c), NULL until gw_peer_init */
    bool loading; /* recovered keys are still being joined in the background (logged when done) */
    /* The store's errors pass (Redis unreachable, a slot without its primary): its last_error
     * makes /healthz answer 503 while it lasts, but is never latched as a storage failure and
     * does not fail the writes waiting for durability (main.c sets it for --store redis://). */
    bool store_transient;
};

/* lws_protocols.id of a WebSocket protocol whose sessions prove who they are before anything
 * else (crdt-peer.v1: the cluster secret's challenge): a node without a token secret does not
 * check the Host of their upgrades (http.c), which a peer that dials by name would fail. */
#define GW_PROTO_SELF_AUTH 1

#endif /* CRDT_GW_SERVER_H */
