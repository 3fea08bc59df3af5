/* sync.c - WebSocket client sessions (crdt.v1). PLACEHOLDER: refuses every session until the real
 * implementation lands (issue #5). */
#include "gateway.h"

int gw_sync_init(gw_server_t *s)
{
    (void)s;
    return 0;
}

void gw_sync_shutdown(gw_server_t *s)
{
    (void)s;
}

int gw_sync_callback(struct lws *wsi, enum lws_callback_reasons reason, void *user, void *in,
                     size_t len)
{
    (void)wsi, (void)user, (void)in, (void)len;
    return reason == LWS_CALLBACK_ESTABLISHED ? -1 : 0;
}

void gw_sync_on_change(gw_server_t *s, const void *key, size_t klen, uint64_t seq,
                       const crdt_obj_t *delta)
{
    (void)s, (void)key, (void)klen, (void)seq, (void)delta;
}

void gw_sync_on_durable(gw_server_t *s)
{
    (void)s;
}

char *gw_sync_metrics(gw_server_t *s)
{
    (void)s;
    return NULL;
}
