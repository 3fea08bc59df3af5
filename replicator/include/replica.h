/* replica.h - the replica: keyspace of CRDT objects, durable delta log, snapshots, change feed */
#ifndef CRDT_REPLICA_H
#define CRDT_REPLICA_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "crdt.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct crdt_replica crdt_replica_t;

/* Internal keys: keys whose first bytes are 0x00 'c' '/' hold the bookkeeping of the replica's
 * users (crdtd's per-client op-id marks, docs/protocol.md), not data. They are stored, logged,
 * replicated and in the change feed like every key, so they survive restarts and converge
 * between nodes; but the stats count them apart (internal_keys, not in keys or keys_by_type),
 * scans of a store leave them out, and a timeline created at an internal key is unbounded (it is
 * a map of marks, not a feed). What shows data to people (REST, the WebSocket change messages,
 * listings) leaves them out too. */
#define CRDT_INTERNAL_PREFIX "\0c/"
#define CRDT_INTERNAL_PREFIX_LEN 3
static inline bool crdt_key_internal(const void *key, size_t klen)
{
    const unsigned char *k = (const unsigned char *)key;
    return klen >= CRDT_INTERNAL_PREFIX_LEN && k[0] == 0 && k[1] == 'c' && k[2] == '/';
}

typedef enum crdt_fsync_policy {
    CRDT_FSYNC_ALWAYS = 0,   /* a write is acknowledged after the log record is fsynced */
    CRDT_FSYNC_EVERYSEC = 1, /* acknowledged once written to the OS; fsync at most 1 s later */
    CRDT_FSYNC_NO = 2,       /* acknowledged once written to the OS; the OS decides when to sync */
} crdt_fsync_policy_t;

typedef struct crdt_replica_config {
    const char *dir;             /* data directory, created if missing; NULL: memory only, no log */
    uint64_t node_id;            /* this replica's id (HLC node, counter slots, OR-Set dots) */
    crdt_fsync_policy_t fsync;   /* default CRDT_FSYNC_EVERYSEC */
    uint32_t timeline_max_size;  /* bound of timelines created by a first write (0: unbounded) */
    uint64_t snapshot_log_bytes; /* start a snapshot once the log is this large (0: only on call) */
    uint32_t load_threads; /* threads joining recovered keys in the background after open (default
                              2, at most 8); 0: a key is joined only when first touched */
    uint64_t index_block_bytes;  /* log bytes each block of the log's index covers (0: 32 MiB) */
    uint64_t max_clock_drift_ms; /* how far ahead of the wall clock a timestamp in an applied
                                    delta may pull the replica's HLC (default 24 h, as the Redis
                                    module's max-clock-drift-ms); 0: not at all */
} crdt_replica_config_t;

/* The default of max_clock_drift_ms: one day, the Redis module's default too. */
#define CRDT_REPLICA_MAX_CLOCK_DRIFT_MS (24ull * 3600 * 1000)

/* Fills *cfg with the defaults (everysec, node 1, timeline bound 1000, snapshot at 64 MiB, clock
 * drift bound 24 h). */
void crdt_replica_config_init(crdt_replica_config_t *cfg);

/* Opens (locks, loads the snapshot, scans the log, dropping a torn or corrupt tail) and returns
 * a new replica, or NULL with *err filled: a locked directory says which pid holds it. The logged
 * changes are joined into their keys after open returns: by background threads, or by whatever
 * touches a key first (a read, a write, the feed, a fingerprint), which then waits for that key
 * alone. See crdt_replica_keys_loading(). */
crdt_replica_t *crdt_replica_open(const crdt_replica_config_t *cfg, crdt_error_t *err);
/* Flushes and fsyncs the log, waits for a running snapshot, unlocks, frees. */
void crdt_replica_close(crdt_replica_t *r);

typedef struct crdt_recovery_report {
    uint64_t snapshot_keys;   /* keys loaded from the snapshot */
    uint64_t log_records;     /* log records replayed */
    uint64_t index_records;   /* of those, the ones the log's index listed (not scanned) */
    uint64_t dropped_bytes;   /* bytes of torn or corrupt tail dropped (and truncated away) */
    char dropped_reason[160]; /* why, when dropped_bytes > 0 */
    double seconds;           /* wall time of open: the replica serves from then on */
    uint64_t pending_keys;    /* keys open left to be joined in the background */
    double loaded_seconds;    /* from the start of open until every key was joined (0 before) */
} crdt_recovery_report_t;

const crdt_recovery_report_t *crdt_replica_recovery(const crdt_replica_t *r);

/* Keys whose logged changes are still being joined after open (0 once all are). */
uint64_t crdt_replica_keys_loading(const crdt_replica_t *r);
/* Joins every pending key now, with the background threads, and returns once all are joined.
 * Also reports (crdt_replica_last_error) a record that failed to join. */
void crdt_replica_wait_loaded(crdt_replica_t *r);

uint64_t crdt_replica_node_id(const crdt_replica_t *r);
/* The data directory, or NULL for a replica in memory only. */
const char *crdt_replica_dir(const crdt_replica_t *r);
/* A fresh HLC timestamp of this replica (for LWW writes): after every timestamp it issued and
 * every one it received (crdt_replica_apply folds each delta's greatest timestamp into the clock,
 * within max_clock_drift_ms of the wall clock). */
int crdt_replica_hlc_now(crdt_replica_t *r, crdt_hlc_ts_t *ts);

/* ---- reads ------------------------------------------------------------------------------------
 * These readers, the change feed (crdt_replica_changes) and the fingerprints take a mutable
 * replica: reading a key whose logged changes are still being joined after open finishes that
 * key's load first, and the fingerprint readers refresh the fingerprints they memoise. What the
 * replica holds does not change. Every call that takes a const replica mutates nothing. */

/* The object at key, borrowed until the next write to that key, or NULL if absent. */
const crdt_obj_t *crdt_replica_get(crdt_replica_t *r, const void *key, size_t klen);
/* crdt_replica_get of each of n keys into out[i]: the same results, with the lookups' memory
 * reads (table slot, key entry, key bytes, object) overlapped across the keys, where n lookups
 * one after the other would each wait for their own. */
void crdt_replica_get_many(crdt_replica_t *r, const crdt_bytes_t *keys, size_t n,
                           const crdt_obj_t **out);

typedef int (*crdt_replica_key_cb)(const void *key, size_t klen, const crdt_obj_t *o, void *ud);
/* Calls cb for every key (unspecified order); stops when cb returns non-zero and returns that. */
int crdt_replica_foreach(crdt_replica_t *r, crdt_replica_key_cb cb, void *ud);

/* Keys from position `cursor` (0: the first) for at most `limit` keys, in no particular order but
 * stable while no key is added (new keys come after every existing one); *next is where to go on,
 * 0 once every key was seen. Stops when cb returns non-zero and returns that. */
int crdt_replica_scan(crdt_replica_t *r, uint64_t cursor, size_t limit, crdt_replica_key_cb cb,
                      void *ud, uint64_t *next);

/* The data keys that begin with prefix (plen 0: every key) and come after `after` (exclusive; NULL:
 * from the first; alen 0 with a non-NULL after: after the empty key), in bytewise order (a
 * prefix before the keys it begins), at most `limit` of them; internal keys (crdt_key_internal)
 * and keys with nothing live (crdt_obj_is_live false: deleted) are skipped. *more is true when
 * a further key would have been listed (or cb stopped the listing). cb must not write to r.
 * Costs O(log n + limit + the keys skipped) once the ordered index exists; the first listing
 * builds it (a sort of every key: O(n log n)), and from then on every new key is added to it.
 * Returns cb's non-zero value if it stopped, 0, or CRDT_EINVAL / CRDT_ENOMEM. */
int crdt_replica_list_keys(crdt_replica_t *r, const void *prefix, size_t plen, const void *after,
                           size_t alen, size_t limit, crdt_replica_key_cb cb, void *ud, bool *more);

/* ---- writes --------------------------------------------------------------------------------- *
 * Both calls append the resulting delta to the log buffer, give it the next change sequence number
 * (*seq), update the change feed and the fingerprints, and notify the listener. They return 1 if the
 * key changed, 0 for a no-op (nothing logged, *seq untouched), or a negative CRDT_E* code with the
 * key untouched: CRDT_ETYPE when the key holds another type. A write is durable per the policy only
 * once crdt_replica_durable_seq() >= *seq: acknowledge clients then, not before. */

/* Who made a change: CRDT_ORIGIN_LOCAL for this node's own clients, else the node id of the peer
 * the delta came from. The listener is told, so a change is not echoed back to its origin. */
#define CRDT_ORIGIN_LOCAL 0

/* Joins a delta or state from elsewhere (a client: origin CRDT_ORIGIN_LOCAL, or the peer `origin`)
 * into key, creating it if absent.
 *
 * The clock's receive step: whatever the origin, and whether or not the join changed anything, the
 * delta's greatest HLC timestamp (crdt_obj_max_ts: LWW-Registers and LWW-sets) is folded into the
 * replica's clock, so that a later local LWW write orders after every value this replica has seen.
 * A timestamp more than max_clock_drift_ms ahead of the wall clock is still joined (refusing it
 * would break convergence), but it does not move the clock: the replica counts it
 * (stats.clock_ahead) and logs it at most once a minute. The Redis module applies the same rule. */
int crdt_replica_apply(crdt_replica_t *r, const void *key, size_t klen, const crdt_obj_t *delta,
                       uint64_t origin, uint64_t *seq);

/* Runs a local mutator: mutate(obj, ud, &delta) is called on the key's object (created empty of
 * `type` first if absent; timelines with the configured bound) and must return what the libcrdt
 * mutator returned, leaving the delta (or NULL) in *delta. */
typedef int (*crdt_replica_mutate_cb)(crdt_obj_t *obj, void *ud, crdt_obj_t **delta);
int crdt_replica_mutate(crdt_replica_t *r, const void *key, size_t klen, crdt_type_t type,
                        crdt_replica_mutate_cb mutate, void *ud, uint64_t *seq);

/* Runs the write m describes (crdt.h's crdt_mut_t) on key as this replica: the mutator of m's
 * type, or for CRDT_MUT_MERGE a join of m->state (origin local). An LWW write without a timestamp
 * (ts.ms == 0) is stamped with crdt_replica_hlc_now. Returns as crdt_replica_mutate. */
int crdt_replica_write(crdt_replica_t *r, const void *key, size_t klen, const crdt_mut_t *m,
                       uint64_t *seq);

/* ---- durability: group commit driven by the event loop --------------------------------------- */

/* Writes buffered log records; fsyncs them when the policy is always (or everysec and a second has
 * passed). Call once per event-loop turn after handling input. 0 or a negative code (I/O error:
 * the replica then refuses writes with CRDT_EIO-like errors until restarted; see the log line). */
int crdt_replica_flush(crdt_replica_t *r);
/* Highest sequence number durable as the policy promises. */
uint64_t crdt_replica_durable_seq(const crdt_replica_t *r);
/* Timer work: the everysec fsync, starting/finishing background snapshots. now_ms monotonic. */
void crdt_replica_tick(crdt_replica_t *r, uint64_t now_ms);
/* Starts a snapshot now (in the background); then truncates the log it covers. */
int crdt_replica_snapshot(crdt_replica_t *r);

/* ---- change feed ---------------------------------------------------------------------------- *
 * Every change gets a sequence number. The feed is compacted to the latest change per key. */

uint64_t crdt_replica_last_seq(const crdt_replica_t *r);

typedef int (*crdt_feed_cb)(const void *key, size_t klen, uint64_t seq, const crdt_obj_t *state,
                            void *ud);
/* Calls cb, in sequence order, for up to `limit` keys whose latest change is after `since`, with
 * the key's current state; *next receives the sequence to pass as `since` to continue (the seq of
 * the last key delivered, or last_seq once the feed is exhausted). Returns 0, or the non-zero
 * value of cb that stopped it (that key counts as not delivered: *next stays before it). */
int crdt_replica_changes(crdt_replica_t *r, uint64_t since, size_t limit, crdt_feed_cb cb, void *ud,
                         uint64_t *next);

/* Called after every applied change with the delta that changed the key (borrowed for the call):
 * for fan-out to subscribers and peers. One listener; NULL removes it. */
typedef void (*crdt_replica_listener_cb)(const void *key, size_t klen, uint64_t seq,
                                         const crdt_obj_t *delta, uint64_t origin, void *ud);
void crdt_replica_set_listener(crdt_replica_t *r, crdt_replica_listener_cb cb, void *ud);

/* ---- anti-entropy hooks --------------------------------------------------------------------- */

/* 64-bit fingerprint of the key's state (a hash of its canonical encoding), kept incrementally.
 * 0 and *fp, or CRDT_EINVAL (*fp = 0) when the key is absent. */
int crdt_replica_key_fingerprint(crdt_replica_t *r, const void *key, size_t klen, uint64_t *fp);
/* Order-independent digest of the whole keyspace (combines hash(key) and fingerprint per key). */
uint64_t crdt_replica_digest(crdt_replica_t *r);

/* ---- introspection for /metrics ------------------------------------------------------------- */

typedef struct crdt_replica_stats {
    uint64_t keys;                            /* data keys: internal ones are not counted */
    uint64_t keys_by_type[CRDT_TYPE_MAX + 1]; /* data keys by type */
    uint64_t log_bytes; /* current log size on disk */
    uint64_t writes;    /* changes applied */
    uint64_t noops;     /* writes that changed nothing */
    uint64_t fsyncs;
    double fsync_seconds_total; /* sum of fsync durations */
    double fsync_seconds_max;
    uint64_t snapshots;
    bool snapshot_running;
    uint64_t clock_ahead; /* applied deltas stamped beyond max_clock_drift_ms ahead of the wall
                             clock: joined, but the clock did not follow them */
    uint64_t internal_keys; /* keys crdt_key_internal says are internal (in no count above) */
} crdt_replica_stats_t;

void crdt_replica_stats(const crdt_replica_t *r, crdt_replica_stats_t *st);

/* ---- errors ---------------------------------------------------------------------------------
 * Writing or syncing the data directory failed (or a logged change could not be recorded): the
 * replica then refuses writes with CRDT_EIO (crdt.h) until restarted; crdt_replica_last_error()
 * says why. crdt_strerror() names every code. */

/* NULL while healthy; after a storage failure, the message that was also logged to stderr. */
const char *crdt_replica_last_error(const crdt_replica_t *r);

#ifdef __cplusplus
}
#endif

#endif /* CRDT_REPLICA_H */
