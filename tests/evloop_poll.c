/* evloop_poll.c - a minimal poll()-based gw_evloop_t for tests */
#include "evloop_poll.h"

#include <poll.h>
#include <stdlib.h>
#include <time.h>

struct gw_watch {
    int fd;
    unsigned events;
    gw_io_cb cb;
    void *ud;
    bool dead;
    struct gw_watch *next;
};

struct gw_timer {
    gw_timer_cb cb;
    void *ud;
    bool armed, dead;
    uint64_t due;
    struct gw_timer *next;
};

struct ep_loop {
    gw_evloop_t api;
    gw_watch_t *watches;
    gw_timer_t *timers;
    struct pollfd *pfd;
    gw_watch_t **pw;
    size_t cap;
};

static gw_watch_t *ep_watch(void *ctx, int fd, unsigned events, gw_io_cb cb, void *ud)
{
    ep_loop_t *l = ctx;
    gw_watch_t *w = calloc(1, sizeof(*w));
    if (!w)
        return NULL;
    *w = (gw_watch_t){.fd = fd, .events = events, .cb = cb, .ud = ud, .next = l->watches};
    l->watches = w;
    return w;
}

static void ep_want(void *ctx, gw_watch_t *w, unsigned events)
{
    (void)ctx;
    w->events = events;
}

static void ep_unwatch(void *ctx, gw_watch_t *w)
{
    (void)ctx;
    w->dead = true; /* freed by the loop, which may be iterating over it */
}

static gw_timer_t *ep_timer_new(void *ctx, gw_timer_cb cb, void *ud)
{
    ep_loop_t *l = ctx;
    gw_timer_t *t = calloc(1, sizeof(*t));
    if (!t)
        return NULL;
    *t = (gw_timer_t){.cb = cb, .ud = ud, .next = l->timers};
    l->timers = t;
    return t;
}

static void ep_timer_arm(void *ctx, gw_timer_t *t, uint64_t ms)
{
    (void)ctx;
    t->armed = true;
    t->due = gw_evloop_mono_ms() + ms;
}

static void ep_timer_disarm(void *ctx, gw_timer_t *t)
{
    (void)ctx;
    t->armed = false;
}

static void ep_timer_free(void *ctx, gw_timer_t *t)
{
    (void)ctx;
    t->armed = false;
    t->dead = true;
}

static uint64_t ep_now(void *ctx)
{
    (void)ctx;
    return gw_evloop_mono_ms();
}

ep_loop_t *ep_new(void)
{
    ep_loop_t *l = calloc(1, sizeof(*l));
    if (!l)
        return NULL;
    l->api = (gw_evloop_t){.ctx = l,
                           .watch = ep_watch,
                           .want = ep_want,
                           .unwatch = ep_unwatch,
                           .timer_new = ep_timer_new,
                           .timer_arm = ep_timer_arm,
                           .timer_disarm = ep_timer_disarm,
                           .timer_free = ep_timer_free,
                           .now_ms = ep_now};
    return l;
}

const gw_evloop_t *ep_loop(ep_loop_t *l)
{
    return &l->api;
}

static void reap(ep_loop_t *l)
{
    for (gw_watch_t **p = &l->watches; *p;) {
        gw_watch_t *w = *p;
        if (w->dead) {
            *p = w->next;
            free(w);
        } else {
            p = &w->next;
        }
    }
    for (gw_timer_t **p = &l->timers; *p;) {
        gw_timer_t *t = *p;
        if (t->dead) {
            *p = t->next;
            free(t);
        } else {
            p = &t->next;
        }
    }
}

void ep_free(ep_loop_t *l)
{
    if (!l)
        return;
    for (gw_watch_t *w = l->watches; w; w = w->next)
        w->dead = true;
    for (gw_timer_t *t = l->timers; t; t = t->next)
        t->dead = true;
    reap(l);
    free(l->pfd);
    free(l->pw);
    free(l);
}

int ep_watches(const ep_loop_t *l)
{
    int n = 0;
    for (const gw_watch_t *w = l->watches; w; w = w->next)
        n += !w->dead;
    for (const gw_timer_t *t = l->timers; t; t = t->next)
        n += t->armed && !t->dead;
    return n;
}

void ep_run_once(ep_loop_t *l, int timeout_ms)
{
    reap(l);
    uint64_t now = gw_evloop_mono_ms();
    for (const gw_timer_t *t = l->timers; t; t = t->next)
        if (t->armed && !t->dead) {
            int left = t->due <= now ? 0 : (int)(t->due - now);
            if (left < timeout_ms)
                timeout_ms = left;
        }
    size_t n = 0;
    for (gw_watch_t *w = l->watches; w; w = w->next)
        n++;
    if (n > l->cap) {
        struct pollfd *pfd = realloc(l->pfd, n * sizeof(*pfd));
        if (pfd)
            l->pfd = pfd;
        gw_watch_t **pw = realloc(l->pw, n * sizeof(*pw));
        if (pw)
            l->pw = pw;
        if (!pfd || !pw)
            return;
        l->cap = n;
    }
    n = 0;
    for (gw_watch_t *w = l->watches; w; w = w->next) {
        if (w->dead || !w->events)
            continue;
        l->pfd[n] = (struct pollfd){.fd = w->fd,
                                    .events = (short)(((w->events & GW_EV_READ) ? POLLIN : 0) |
                                                      ((w->events & GW_EV_WRITE) ? POLLOUT : 0))};
        l->pw[n++] = w;
    }
    int k = poll(l->pfd, (nfds_t)n, timeout_ms < 0 ? 0 : timeout_ms);
    for (size_t i = 0; k > 0 && i < n; i++) {
        gw_watch_t *w = l->pw[i];
        short re = l->pfd[i].revents;
        if (!re || w->dead)
            continue;
        unsigned ev = 0;
        if (re & (POLLIN | POLLHUP | POLLERR))
            ev |= GW_EV_READ;
        if (re & (POLLOUT | POLLERR))
            ev |= GW_EV_WRITE;
        ev &= w->events ? w->events : 0;
        if (!ev && (re & (POLLHUP | POLLERR)))
            ev = w->events; /* let the owner see the error through whatever it waits for */
        if (ev)
            w->cb(w->ud, ev);
    }
    now = gw_evloop_mono_ms();
    for (gw_timer_t *t = l->timers; t; t = t->next)
        if (t->armed && !t->dead && t->due <= now) {
            t->armed = false;
            t->cb(t->ud);
        }
}

bool ep_run_until(ep_loop_t *l, const bool *flag, int timeout_ms)
{
    uint64_t end = gw_evloop_mono_ms() + (uint64_t)(timeout_ms < 0 ? 0 : timeout_ms);
    while (!*flag) {
        uint64_t now = gw_evloop_mono_ms();
        if (now >= end)
            return false;
        uint64_t left = end - now;
        ep_run_once(l, left < 50 ? (int)left : 50);
    }
    return true;
}

void ep_run_for(ep_loop_t *l, int ms)
{
    bool never = false;
    ep_run_until(l, &never, ms);
}
