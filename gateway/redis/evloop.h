/* evloop.h - the tiny event-loop interface a store over the network runs on
 *
 * The Redis store (store_redis.c) needs three things from whatever loop the process runs: watch a
 * file descriptor for readability and writability, stop watching it, and one-shot timers. It
 * never knows libwebsockets: crdtd hands it gw_evloop_lws (evloop_lws.h), the tests a poll() loop
 * (tests/evloop_poll.h).
 *
 * Rules every implementation keeps:
 * - a watch's callback runs on the loop's thread with the events that are ready (GW_EV_READ,
 *   GW_EV_WRITE); it may change the watch's interest, unwatch it or create others;
 * - unwatch never closes the fd (its owner does) and no callback of that watch runs afterwards;
 * - a timer fires once, `ms` after it was armed; arming an armed timer moves it; disarming or
 *   freeing a timer from its own callback is allowed.
 */
#ifndef GW_EVLOOP_H
#define GW_EVLOOP_H

#include <stdint.h>
#include <time.h>

#ifdef __cplusplus
extern "C" {
#endif

enum { GW_EV_READ = 1, GW_EV_WRITE = 2 };

typedef struct gw_watch gw_watch_t; /* opaque, the implementation's */
typedef struct gw_timer gw_timer_t;

typedef void (*gw_io_cb)(void *ud, unsigned events);
typedef void (*gw_timer_cb)(void *ud);

typedef struct gw_evloop {
    void *ctx; /* the implementation's state, first argument of every call */
    /* Starts watching fd with interest `events` (0 allowed); NULL when out of resources. */
    gw_watch_t *(*watch)(void *ctx, int fd, unsigned events, gw_io_cb cb, void *ud);
    /* Replaces the interest of w. */
    void (*want)(void *ctx, gw_watch_t *w, unsigned events);
    void (*unwatch)(void *ctx, gw_watch_t *w);
    gw_timer_t *(*timer_new)(void *ctx, gw_timer_cb cb, void *ud);
    void (*timer_arm)(void *ctx, gw_timer_t *t, uint64_t ms);
    void (*timer_disarm)(void *ctx, gw_timer_t *t);
    void (*timer_free)(void *ctx, gw_timer_t *t);
    /* A monotonic clock in milliseconds. */
    uint64_t (*now_ms)(void *ctx);
} gw_evloop_t;

/* CLOCK_MONOTONIC in milliseconds: the now_ms of both implementations (and the tests' clock). */
static inline uint64_t gw_evloop_mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

#ifdef __cplusplus
}
#endif

#endif /* GW_EVLOOP_H */
