/* store_redis.h - crdt_store_t over Redis (one server or a Redis Cluster) with crdt.so loaded
 *
 * crdtd keeps no dataset of its own: every store operation becomes CRDT.* commands, sent with
 * hiredis's async API on the process's event loop (gw_evloop_t), pipelined (any number in flight
 * per connection), routed by the cluster's slot map (CRC16 of the key's hash tag; CLUSTER SLOTS
 * at start, after MOVED and while a node is down; ASK followed with ASKING), reconnecting with
 * capped, jittered exponential backoff. While the node of a key's slot is unreachable, operations
 * on it fail at once with CRDT_EUNAVAIL and crdt_store_last_error says which node and why.
 *
 * Writes (docs/scale-out.md has the table):
 * - timeline add/remove, OR-Set add/remove, counter increments and register sets without a
 *   timestamp go as the module's typed commands (CRDT.TLADD, CRDT.SADD, CRDT.INCRBY, CRDT.SET ...):
 *   the write is stamped where it is applied, by the module's HLC and node id, and OR-Set removes
 *   see the dots Redis holds. A counter's slot is the module's node, never crdtd's.
 * - writes carrying their own timestamp, LWW-element-set writes (the module has no command that
 *   creates one) and merges are built here as a delta and sent as CRDT.MERGE; an LWW-element-set
 *   write without a timestamp is stamped with this store's HLC (node id cfg.node_id).
 * - applies (remote deltas) are CRDT.MERGE of the delta as given, so states built by merges are
 *   byte-identical to the embedded store's.
 * A write completes once Redis applied it, or with cfg.wait_replicas > 0 once WAIT says that many
 * replicas have it. Each completed change gets the next local seq (1, 2, ...); durable_seq is the
 * highest seq up to which every change has completed (and was acknowledged by WAIT).
 *
 * Reads: CRDT.STATE (libcrdt's canonical binary encoding, decoded here). Fingerprints hash those
 * bytes exactly as the embedded replica does. Marks are Redis strings under
 * "{crdtd:<node_id>}:mark:<name>" (one slot per gateway). Scan walks SCAN ... TYPE crdtd-obj over
 * every primary.
 *
 * Change events and the feed: without cfg.follow_logs the events report the changes made through
 * this store (a typed write's delta is the key's state read right after it); with it, every
 * change of every primary's per-slot change log (crdt.so's CRDT.LOG.*, read with CRDT.LOG.POLL),
 * whichever gateway made it. An apply with a peer's origin goes as CRDT.MERGE ... ORIGIN id, and
 * its log entry comes back with that origin (so the peer engine does not push it back).
 * crdt_store_changes lists the keys of the last cfg.feed_max changes reported.
 *
 * Anti-entropy (rsx_*): one crdt.so reconcile session (CRDT.RSX.*) over every slot of the one
 * primary; over a cluster of several primaries the session runs here, over the items
 * CRDT.RSX.ITEMS gives from every primary (O(keys) per round).
 *
 * crdt_store_close drops every pending completion; do not call it from inside a completion of
 * the same store.
 */
#ifndef GW_STORE_REDIS_H
#define GW_STORE_REDIS_H

#include <stddef.h>
#include <stdint.h>

#include "crdt_store.h"
#include "evloop.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct crdt_store_redis_config {
    uint64_t node_id;         /* this gateway's replica id (marks, LWW-set stamps, hlc_now) */
    unsigned wait_replicas;   /* > 0: a write completes once WAIT says this many replicas have it */
    unsigned wait_timeout_ms; /* WAIT's timeout (default 1000) */
    unsigned timeout_ms;      /* connect and reply timeout per node (default 2000) */
    unsigned backoff_min_ms;  /* first reconnect delay (default 50) */
    unsigned backoff_max_ms;  /* cap of the reconnect delay (default 2000) */
    unsigned max_redirects;   /* MOVED/ASK followed per command (default 5) */
    size_t max_pending;       /* operations queued while the topology is unknown (default 65536) */
    /* Follow crdt.so's per-slot change logs (CRDT.LOG.LIST / CRDT.LOG.READ on every primary): the
     * change events then report every change made through any gateway (fan-out), each once,
     * and a local write's own event comes from the log too. The positions are saved (at most
     * once a second) in the mark "log-positions" of node_id, and a store opened again with the
     * same node_id resumes from them: changes made while it was down are reported after the
     * restart, and those of its last second possibly twice. Logs without a saved position are
     * read from their end if seen when the store starts, from their start if they appear later. */
    bool follow_logs;
    unsigned follow_poll_ms; /* pause between polls of an idle primary (default 50) */
    unsigned follow_count;   /* entries per CRDT.LOG.POLL / READ (default 10000, the module's
                                cap: a poll reads every log's news at once) */
    /* crdt_store_changes lists the changes this store reported (its change events) from a ring
     * of the last feed_max (default 65536; 0: no feed, changes answers EUNAVAIL); a position
     * older than the ring, or from another run of the store, answers EUNAVAIL: rescan. */
    size_t feed_max;
    /* The first change is seq_base + 1 (default 0). crdtd gives the wall clock in microseconds,
     * so the seqs of a later run follow those of an earlier one: a peer's or a client's position
     * from an earlier run is below seq_base and answered CRDT_ELIMIT (a gap: rescan), never taken
     * for a position of this run. A position older than the ring is answered CRDT_ELIMIT too. */
    uint64_t seq_base;
} crdt_store_redis_config_t;

void crdt_store_redis_config_init(crdt_store_redis_config_t *cfg);

/* Opens a store over the Redis at url ("redis://host:port[,host:port...]"). Returns at once: the
 * connection and the discovery (cluster or not, crdt.so loaded, the slot map) run on `loop`
 * (borrowed; it must outlive the store); operations submitted meanwhile wait for it. NULL with
 * err on a bad URL or configuration. */
crdt_store_t *crdt_store_redis_open(const char *url, const crdt_store_redis_config_t *cfg,
                                    const gw_evloop_t *loop, char *err, size_t errlen);

/* 1 once the topology is known and operations are being sent, 0 while discovering, -1 when the
 * last discovery failed (crdt_store_last_error says why; it is retried with backoff). */
int crdt_store_redis_ready(const crdt_store_t *st);

/* 1 when the store is over a Redis Cluster, 0 over a single server, -1 for another store or
 * before discovery. */
int crdt_store_redis_is_cluster(const crdt_store_t *st);

/* Counters for tests and metrics. */
typedef struct crdt_store_redis_stats {
    uint64_t sent, replies, redirects_moved, redirects_ask, slot_refreshes, reconnects, fail_fast,
        timeouts, bad_replies, log_entries, log_truncated, log_resumed;
    uint64_t feed_gaps;                            /* feed reads answered CRDT_ELIMIT */
    uint64_t rsx_sessions, rsx_failed, rsx_cached; /* anti-entropy (CRDT.RSX.*) */
    unsigned nodes, nodes_up;
} crdt_store_redis_stats_t;
void crdt_store_redis_stats(const crdt_store_t *st, crdt_store_redis_stats_t *out);

#ifdef __cplusplus
}
#endif

#endif /* GW_STORE_REDIS_H */
