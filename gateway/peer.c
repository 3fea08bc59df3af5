/* peer.c - replication links between crdtd nodes (crdt-peer.v1). PLACEHOLDER: refuses every link
 * until the real implementation lands (issue #6). */
#include "gateway.h"

int gw_peer_init(gw_server_t *s)
{
    (void)s;
    return 0;
}

void gw_peer_shutdown(gw_server_t *s)
{
    (void)s;
}

int gw_peer_callback(struct lws *wsi, enum lws_callback_reasons reason, void *user, void *in,
                     size_t len)
{
    (void)wsi, (void)user, (void)in, (void)len;
    return reason == LWS_CALLBACK_ESTABLISHED ? -1 : 0;
}

void gw_peer_on_change(gw_server_t *s, const void *key, size_t klen, uint64_t seq,
                       const crdt_obj_t *delta)
{
    (void)s, (void)key, (void)klen, (void)seq, (void)delta;
}

void gw_peer_on_durable(gw_server_t *s)
{
    (void)s;
}

char *gw_peer_metrics(gw_server_t *s)
{
    (void)s;
    return NULL;
}

void gw_peer_status(gw_server_t *s, gw_response_t *rs)
{
    (void)s;
    gw_respond_error(rs, 501, "replication is not built yet");
}
