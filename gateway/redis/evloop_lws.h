/* evloop_lws.h - gw_evloop_t over a libwebsockets 4.1 context (crdtd's loop)
 *
 * Foreign descriptors (hiredis's sockets) are watched by adopting a dup() of them as raw files on
 * the vhost, bound to the protocol gw_evloop_lws_protocol, which the vhost must list: lws then
 * calls LWS_CALLBACK_RAW_RX_FILE when the fd is readable and LWS_CALLBACK_RAW_WRITEABLE_FILE after
 * lws_callback_on_writable. Read interest is switched with lws_rx_flow_control. The dup is what
 * lws closes when the watch ends; the owner's fd stays open. Timers are lws_sul.
 *
 * Wiring (crdtd's main.c): add GW_EVLOOP_LWS_PROTOCOL to the vhost's protocol list, create the
 * context and vhost, then gw_evloop_lws_init(&el, context, vhost) and pass gw_evloop_lws_loop(&el)
 * to crdt_store_redis_open. Single service thread only (tsi 0).
 */
#ifndef GW_EVLOOP_LWS_H
#define GW_EVLOOP_LWS_H

#include <libwebsockets.h>

#include "evloop.h"

#define GW_EVLOOP_LWS_PROTOCOL_NAME "crdtd-evloop-raw"

int gw_evloop_lws_callback(struct lws *wsi, enum lws_callback_reasons reason, void *user, void *in,
                           size_t len);

/* An entry for the vhost's lws_protocols array. */
#define GW_EVLOOP_LWS_PROTOCOL                                                                     \
    {                                                                                              \
        GW_EVLOOP_LWS_PROTOCOL_NAME, gw_evloop_lws_callback, 0, 0, 0, NULL, 0                      \
    }

typedef struct gw_evloop_lws {
    gw_evloop_t api;
    struct lws_context *context;
    struct lws_vhost *vhost;
} gw_evloop_lws_t;

void gw_evloop_lws_init(gw_evloop_lws_t *el, struct lws_context *context, struct lws_vhost *vhost);
const gw_evloop_t *gw_evloop_lws_loop(gw_evloop_lws_t *el);

#endif /* GW_EVLOOP_LWS_H */
