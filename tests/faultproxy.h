/* faultproxy.h - a loopback TCP proxy that injects faults into a link, for replication tests
 *
 * A proxy listens on a free 127.0.0.1 port and forwards every connection it accepts to
 * 127.0.0.1:target, in a thread of its own (one poll loop, non-blocking sockets). While it runs,
 * the test changes what the link does:
 *
 *   pass       forward everything (the default)
 *   drop       read and discard bytes in both directions, keeping the connections open
 *   delay N    hold every chunk N ms before forwarding it (order is kept)
 *   cut        close every current connection (new ones are accepted)
 *   partition  close every current connection and every new one at once, until turned off
 *   reorder    "reorder across reconnects": hold what current connections carry, then close
 *              their client side (the dialer reconnects through the proxy and its new connection
 *              passes), and only later deliver the held bytes to the server on the old
 *              connection and close it: the server sees old data after newer data
 *
 * Every control call returns once the proxy thread has applied it, so a test can say "after
 * fp_cut() returned, no connection from before survives". Buffers are bounded (fp_set_buffer_cap,
 * default 1 MiB per direction per connection): a full buffer stops reading from that side, as a
 * real network's window would. All traffic stays on loopback.
 */
#ifndef CRDT_FAULTPROXY_H
#define CRDT_FAULTPROXY_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef struct fp_proxy fp_proxy_t;

typedef struct fp_stats {
    uint64_t accepted;    /* connections accepted and forwarded */
    uint64_t refused;     /* connections closed at once (partition, no target, upstream down) */
    uint64_t cut;         /* connections closed by fp_cut / fp_partition / fp_reorder */
    uint64_t forwarded;   /* bytes written to either side */
    uint64_t dropped;     /* bytes discarded by drop mode (or queued for a side that closed) */
    uint64_t reordered;   /* held bytes delivered late by fp_reorder */
    size_t max_buffered;  /* most bytes ever queued in one direction of one connection */
    unsigned connections; /* connections open now (held ones included) */
} fp_stats_t;

/* Starts a proxy on a free 127.0.0.1 port forwarding to 127.0.0.1:target_port (0: no target yet,
 * connections are refused until fp_set_target). Returns NULL on failure. */
fp_proxy_t *fp_start(int target_port);

/* The port the proxy listens on. */
int fp_port(const fp_proxy_t *p);

/* Changes the target for new connections (current ones keep theirs); 0 refuses new ones. */
void fp_set_target(fp_proxy_t *p, int target_port);

/* Back to plain forwarding: drop off, delay 0 (bytes already delayed keep their due time). */
void fp_pass(fp_proxy_t *p);

/* Drop mode on or off: bytes read while on are discarded, connections stay open. */
void fp_drop(fp_proxy_t *p, bool on);

/* Delay every chunk read from now on by ms milliseconds (0: none). */
void fp_delay(fp_proxy_t *p, unsigned ms);

/* Closes every current connection (both sides); new connections are forwarded. */
void fp_cut(fp_proxy_t *p);

/* Partition on: closes every current connection and refuses new ones; off: forwards again. */
void fp_partition(fp_proxy_t *p, bool on);

/* Reorder across reconnects: the connections open now stop forwarding (both directions are
 * buffered, bounded); after hold_ms their client side is closed; after another release_ms the
 * bytes they held from the client are written to the server on the old connection, which is then
 * closed. Connections accepted after this call pass normally. */
void fp_reorder(fp_proxy_t *p, unsigned hold_ms, unsigned release_ms);

/* Bound of bytes queued per direction per connection for connections read from now on (>= 1). */
void fp_set_buffer_cap(fp_proxy_t *p, size_t bytes);

/* A copy of the counters. */
void fp_get_stats(fp_proxy_t *p, fp_stats_t *out);

/* Closes every connection, stops the thread, frees p (NULL is fine). */
void fp_stop(fp_proxy_t *p);

#endif /* CRDT_FAULTPROXY_H */
