/* evloop_poll.h - a minimal poll()-based gw_evloop_t for tests (single thread, no allocation per
 * turn beyond growth) */
#ifndef CRDT_EVLOOP_POLL_H
#define CRDT_EVLOOP_POLL_H

#include <stdbool.h>

#include "evloop.h"

typedef struct ep_loop ep_loop_t;

ep_loop_t *ep_new(void);
void ep_free(ep_loop_t *l);
/* The gw_evloop_t over l (valid while l lives). */
const gw_evloop_t *ep_loop(ep_loop_t *l);
/* One turn: waits at most timeout_ms for I/O or the next timer, runs what is ready. */
void ep_run_once(ep_loop_t *l, int timeout_ms);
/* Runs turns until *flag is true or timeout_ms passed; true when the flag was set. */
bool ep_run_until(ep_loop_t *l, const bool *flag, int timeout_ms);
/* Runs turns for ms milliseconds. */
void ep_run_for(ep_loop_t *l, int ms);
/* Watches and armed timers currently registered. */
int ep_watches(const ep_loop_t *l);

#endif /* CRDT_EVLOOP_POLL_H */
