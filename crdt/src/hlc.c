/* hlc.c - hybrid logical clock: physical milliseconds, a logical counter, the node id */
#include <time.h>

#include "crdt_private.h"

int crdt_hlc_cmp(const crdt_hlc_ts_t *a, const crdt_hlc_ts_t *b)
{
    if (a->ms != b->ms)
        return a->ms < b->ms ? -1 : 1;
    if (a->logical != b->logical)
        return a->logical < b->logical ? -1 : 1;
    if (a->node != b->node)
        return a->node < b->node ? -1 : 1;
    return 0;
}

int crdt_hlc_init(crdt_hlc_t *c, uint64_t node, uint64_t max_drift_ms)
{
    if (!crdt__replica_ok(node))
        return CRDT_EINVAL;
    c->node = node;
    c->last_ms = 0;
    c->last_logical = 0;
    c->max_drift_ms = max_drift_ms;
    return 0;
}

/* Moves the clock to max(last, now, remote) and bumps the logical counter where the physical part
 * did not advance; the classic HLC receive rule, with no remote for a local tick. */
static int advance(crdt_hlc_t *c, uint64_t now_ms, const crdt_hlc_ts_t *remote, crdt_hlc_ts_t *out)
{
    uint64_t ms = c->last_ms > now_ms ? c->last_ms : now_ms;
    if (remote && remote->ms > ms)
        ms = remote->ms;
    uint64_t logical = 0;
    if (ms == c->last_ms)
        logical = (uint64_t)c->last_logical + 1;
    if (remote && ms == remote->ms && (uint64_t)remote->logical + 1 > logical)
        logical = (uint64_t)remote->logical + 1;
    if (logical > UINT32_MAX)
        return CRDT_EOVERFLOW;
    c->last_ms = ms;
    c->last_logical = (uint32_t)logical;
    out->ms = ms;
    out->logical = (uint32_t)logical;
    out->node = c->node;
    return 0;
}

int crdt_hlc_tick(crdt_hlc_t *c, uint64_t now_ms, crdt_hlc_ts_t *out)
{
    return advance(c, now_ms, NULL, out);
}

int crdt_hlc_recv(crdt_hlc_t *c, uint64_t now_ms, const crdt_hlc_ts_t *remote, crdt_hlc_ts_t *out)
{
    if (remote->ms > now_ms && remote->ms - now_ms > c->max_drift_ms)
        return CRDT_ECLOCK;
    return advance(c, now_ms, remote, out);
}

uint64_t crdt_wall_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}
