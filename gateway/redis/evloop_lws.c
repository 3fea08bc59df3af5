/* evloop_lws.c - gw_evloop_t over libwebsockets (raw-file adoption of foreign fds, lws_sul) */
#include "evloop_lws.h"

#include <fcntl.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

struct gw_watch {
    gw_evloop_lws_t *el;
    struct lws *wsi; /* NULL once lws closed it */
    unsigned events;
    gw_io_cb cb;
    void *ud;
    bool dead; /* unwatched: freed when lws reports the close */
};

struct gw_timer {
    lws_sorted_usec_list_t sul; /* first: the sul callback gets its address */
    gw_evloop_lws_t *el;
    gw_timer_cb cb;
    void *ud;
};

static void apply_interest(gw_watch_t *w)
{
    if (!w->wsi)
        return;
    lws_rx_flow_control(w->wsi, (w->events & GW_EV_READ) ? 1 : 0);
    if (w->events & GW_EV_WRITE)
        lws_callback_on_writable(w->wsi);
}

static gw_watch_t *el_watch(void *ctx, int fd, unsigned events, gw_io_cb cb, void *ud)
{
    gw_evloop_lws_t *el = ctx;
    gw_watch_t *w = calloc(1, sizeof(*w));
    if (!w)
        return NULL;
    int dfd = fcntl(fd, F_DUPFD_CLOEXEC, 0);
    if (dfd < 0) {
        free(w);
        return NULL;
    }
    *w = (gw_watch_t){.el = el, .events = events, .cb = cb, .ud = ud};
    lws_adopt_desc_t info;
    memset(&info, 0, sizeof(info));
    info.vh = el->vhost;
    info.type = LWS_ADOPT_RAW_FILE_DESC;
    info.fd.filefd = dfd;
    info.vh_prot_name = GW_EVLOOP_LWS_PROTOCOL_NAME;
    info.opaque = w;
    w->wsi = lws_adopt_descriptor_vhost_via_info(&info); /* closes dfd on failure */
    if (!w->wsi) {
        free(w);
        return NULL;
    }
    apply_interest(w);
    return w;
}

static void el_want(void *ctx, gw_watch_t *w, unsigned events)
{
    (void)ctx;
    unsigned old = w->events;
    w->events = events;
    if (!w->wsi)
        return;
    if ((old ^ events) & GW_EV_READ)
        lws_rx_flow_control(w->wsi, (events & GW_EV_READ) ? 1 : 0);
    if ((events & GW_EV_WRITE) && !(old & GW_EV_WRITE))
        lws_callback_on_writable(w->wsi);
}

static void el_unwatch(void *ctx, gw_watch_t *w)
{
    (void)ctx;
    w->dead = true;
    w->events = 0;
    if (w->wsi) {
        lws_rx_flow_control(w->wsi, 0);
        lws_set_timeout(w->wsi, PENDING_TIMEOUT_USER_OK, LWS_TO_KILL_ASYNC);
    } else {
        free(w);
    }
}

int gw_evloop_lws_callback(struct lws *wsi, enum lws_callback_reasons reason, void *user, void *in,
                           size_t len)
{
    (void)user, (void)in, (void)len;
    gw_watch_t *w = lws_get_opaque_user_data(wsi);
    switch (reason) {
    case LWS_CALLBACK_RAW_RX_FILE:
        if (w && !w->dead && (w->events & GW_EV_READ))
            w->cb(w->ud, GW_EV_READ);
        return 0;
    case LWS_CALLBACK_RAW_WRITEABLE_FILE:
        if (w && !w->dead && (w->events & GW_EV_WRITE)) {
            w->cb(w->ud, GW_EV_WRITE);
            /* lws's writable request is one-shot: ask again while the owner still wants it */
            if (!w->dead && (w->events & GW_EV_WRITE) && w->wsi)
                lws_callback_on_writable(w->wsi);
        }
        return 0;
    case LWS_CALLBACK_RAW_CLOSE_FILE:
        if (w) {
            lws_set_opaque_user_data(wsi, NULL);
            w->wsi = NULL;
            if (w->dead)
                free(w);
            else if (w->events)
                w->cb(w->ud, w->events); /* closed under the owner: let it see the error */
        }
        return 0;
    default: return 0;
    }
}

static void sul_fire(lws_sorted_usec_list_t *sul)
{
    gw_timer_t *t = (gw_timer_t *)sul;
    t->cb(t->ud);
}

static gw_timer_t *el_timer_new(void *ctx, gw_timer_cb cb, void *ud)
{
    gw_timer_t *t = calloc(1, sizeof(*t));
    if (!t)
        return NULL;
    t->el = ctx;
    t->cb = cb;
    t->ud = ud;
    return t;
}

static void el_timer_arm(void *ctx, gw_timer_t *t, uint64_t ms)
{
    gw_evloop_lws_t *el = ctx;
    lws_sul_schedule(el->context, 0, &t->sul, sul_fire, (lws_usec_t)ms * 1000);
}

static void el_timer_disarm(void *ctx, gw_timer_t *t)
{
    (void)ctx;
    lws_sul_cancel(&t->sul);
}

static void el_timer_free(void *ctx, gw_timer_t *t)
{
    (void)ctx;
    lws_sul_cancel(&t->sul);
    free(t);
}

static uint64_t el_now(void *ctx)
{
    (void)ctx;
    return gw_evloop_mono_ms();
}

void gw_evloop_lws_init(gw_evloop_lws_t *el, struct lws_context *context, struct lws_vhost *vhost)
{
    el->context = context;
    el->vhost = vhost;
    el->api = (gw_evloop_t){.ctx = el,
                            .watch = el_watch,
                            .want = el_want,
                            .unwatch = el_unwatch,
                            .timer_new = el_timer_new,
                            .timer_arm = el_timer_arm,
                            .timer_disarm = el_timer_disarm,
                            .timer_free = el_timer_free,
                            .now_ms = el_now};
}

const gw_evloop_t *gw_evloop_lws_loop(gw_evloop_lws_t *el)
{
    return &el->api;
}
