/* crdt_store.h - the store interface: every read, write, change-feed read, fingerprint and mark
 *
 * Everything above the store (the gateway's REST, roshi and WebSocket handlers, the peer engine)
 * reaches data through this interface only. Operations complete through callbacks, so a store
 * whose operations complete later (one over the network: Redis with crdt.so) fits without
 * changing any caller. The embedded store (crdt_store_embedded_*, over crdt_replica_t) is the
 * first implementation and completes every call before it returns.
 *
 * Rules every implementation keeps:
 * - each operation calls its completion exactly once, possibly before returning;
 * - objects and bytes handed to a completion are borrowed for the duration of the call;
 * - changes are numbered by a per-store sequence (1, 2, ...) that the change feed, the events and
 *   durability share; a write is acknowledged to its client only once durable_seq >= its seq;
 * - crdt_store_close completes nothing more: pending completions are dropped (the caller is
 *   going away too).
 */
#ifndef CRDT_STORE_H
#define CRDT_STORE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "crdt.h"
#include "crdt_reconcile.h"
#include "replica.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct crdt_store crdt_store_t;

/* ---- completions ---------------------------------------------------------------------------- */

/* rc 0 with obj (NULL when the key is absent), or a negative CRDT_E* code. */
typedef void (*crdt_store_get_cb)(void *ud, int rc, const crdt_obj_t *obj);
/* rc 0 with objs[i] for keys[i] (NULL: absent), or a negative code (objs NULL). */
typedef void (*crdt_store_get_many_cb)(void *ud, int rc, const crdt_obj_t *const *objs, size_t n);
/* rc 1: the key changed, seq is the change's; 0: a no-op (seq 0); negative: nothing changed. */
typedef void (*crdt_store_write_cb)(void *ud, int rc, uint64_t seq);
/* End of a feed read or a scan: rc 0 and the position to continue from, or a negative code. */
typedef void (*crdt_store_done_cb)(void *ud, int rc, uint64_t next);
/* A scanned key (borrowed); non-zero stops the scan. */
typedef int (*crdt_store_key_cb)(void *ud, const void *key, size_t klen, const crdt_obj_t *obj);
/* A listed key (borrowed); non-zero stops the listing. */
typedef int (*crdt_store_name_cb)(void *ud, const void *key, size_t klen);
/* rc 0 and the key's fingerprint, or CRDT_EINVAL (absent) or another negative code. */
typedef void (*crdt_store_fp_cb)(void *ud, int rc, uint64_t fp);
/* rc 0 and the mark's bytes (NULL, 0 when never put), or a negative code. */
typedef void (*crdt_store_mark_cb)(void *ud, int rc, const void *p, size_t n);
/* rc 0 or a negative code. */
typedef void (*crdt_store_status_cb)(void *ud, int rc);
/* rc 0 with types[i] for keys[i] (0: absent), or a negative code (types NULL). */
typedef void (*crdt_store_types_cb)(void *ud, int rc, const crdt_type_t *types, size_t n);

/* One write of a batch (crdt_store_tl_write_batch): the key and the mutation, borrowed. */
typedef struct crdt_store_kmut {
    const uint8_t *key;
    size_t klen;
    crdt_mut_t m;
} crdt_store_kmut_t;

/* The outcome of a batch of writes. */
typedef struct crdt_store_batch_result {
    size_t applied; /* writes that changed their key */
    uint64_t seq;   /* the highest seq of those changes (0: none) */
    /* rc CRDT_ETYPE: the index of a write whose key holds another type (SIZE_MAX: not known),
     * and that type (0: not a CRDT, e.g. a native Redis value) */
    size_t bad;
    crdt_type_t bad_type;
} crdt_store_batch_result_t;
/* rc 0 with res, or a negative code; res is always given (its applied and seq count what was
 * written before a failure). */
typedef void (*crdt_store_batch_cb)(void *ud, int rc, const crdt_store_batch_result_t *res);

/* What crdt_store_tl_range reads of each timeline: entries by position or by score. */
typedef struct crdt_store_tl_query {
    bool by_score;
    /* !by_score: entries [offset, offset + count) newest first (crdt_timeline_range) */
    size_t offset, count;
    /* by_score: up to limit entries with min <= score <= max newest first, strictly after `after`
     * when has_after (crdt_timeline_range_by_score); max and min may be infinite, not NaN;
     * after.score is finite */
    double max, min;
    bool has_after;
    crdt_tl_entry_t after;
    size_t limit;
} crdt_store_tl_query_t;
/* rc 0 with ents[i][0..counts[i]) for keys[i] (counts[i] 0: empty, absent or not a timeline),
 * everything borrowed for the call; or a negative code (ents and counts NULL). */
typedef void (*crdt_store_tl_range_cb)(void *ud, int rc, const crdt_tl_entry_t *const *ents,
                                       const size_t *counts, size_t n);

/* Anti-entropy: a reconciliation session (crdt_reconcile.h) the store runs over its own index of
 * (key id, state fingerprint) items, so the index lives beside the data it describes: the embedded
 * store keeps a crdt_rsx_index_t refreshed from the replica's change feed; a store over Redis
 * answers the same messages with commands. */
typedef struct crdt_store_rsx crdt_store_rsx_t;
typedef struct crdt_store_rsx_result {
    const uint8_t *reply; /* the message to send the peer (borrowed); reply_len 0: none due */
    size_t reply_len;
    bool done;                    /* the session is finished on this side */
    const crdt_rsx_diff_t *diffs; /* once done: every differing id, who holds it (borrowed) */
    size_t ndiffs;
    crdt_rsx_stats_t stats;
    crdt_error_t err; /* rc < 0: why the session failed */
} crdt_store_rsx_result_t;
/* rc 0 with res, or a negative code (CRDT_EDECODE for a malformed message, res->err says why);
 * after an error the session is dead. */
typedef void (*crdt_store_rsx_cb)(void *ud, int rc, const crdt_store_rsx_result_t *res);

/* ---- events --------------------------------------------------------------------------------- */

typedef struct crdt_store_events {
    /* Every change applied, in seq order, with the delta that changed the key and its origin
     * (CRDT_ORIGIN_LOCAL or the peer's node id): fan-out to subscribers and peers. delta is NULL
     * only where wants_delta said it is not wanted. */
    void (*change)(void *ud, const void *key, size_t klen, uint64_t seq, const crdt_obj_t *delta,
                   uint64_t origin);
    /* durable_seq advanced, or a storage failure appeared (crdt_store_last_error). */
    void (*durable)(void *ud, uint64_t durable_seq);
    void *ud;
    /* Optional (NULL: every change's delta is wanted): false when nothing would use the delta
     * of a change of key (no subscriber of it, no peer). A store that has to decode a delta to
     * report it (one following Redis's change logs) may then skip the decoding and report the
     * change with delta NULL; its seq, key and origin are reported all the same. The embedded
     * store always passes the delta. */
    bool (*wants_delta)(void *ud, const void *key, size_t klen);
} crdt_store_events_t;

/* ---- the operations an implementation provides ---------------------------------------------- */

typedef struct crdt_store_stats {
    uint64_t keys;                            /* data keys (internal keys are not counted) */
    uint64_t keys_by_type[CRDT_TYPE_MAX + 1]; /* data keys by type */
    uint64_t writes, noops;
    uint64_t log_bytes, fsyncs, snapshots;
    double fsync_seconds_total, fsync_seconds_max;
    bool snapshot_running;
    uint64_t keys_loading;  /* keys still being recovered in the background */
    uint64_t clock_ahead;   /* applied deltas stamped beyond the clock drift bound (joined, the
                               clock not moved): crdt_replica_stats_t.clock_ahead */
    uint64_t internal_keys; /* internal keys (replica.h's crdt_key_internal) the store holds;
                               0 where the store does not count them (Redis) */
} crdt_store_stats_t;

typedef struct crdt_store_ops {
    const char *name; /* "embedded", "redis" */
    void (*close)(crdt_store_t *st);

    void (*get)(crdt_store_t *st, const void *key, size_t klen, crdt_store_get_cb cb, void *ud);
    void (*get_many)(crdt_store_t *st, const crdt_bytes_t *keys, size_t n,
                     crdt_store_get_many_cb cb, void *ud);
    void (*write)(crdt_store_t *st, const void *key, size_t klen, const crdt_mut_t *m,
                  crdt_store_write_cb cb, void *ud);
    void (*apply)(crdt_store_t *st, const void *key, size_t klen, const crdt_obj_t *delta,
                  uint64_t origin, crdt_store_write_cb cb, void *ud);
    void (*changes)(crdt_store_t *st, uint64_t since, size_t limit, crdt_feed_cb each,
                    crdt_store_done_cb done, void *ud);
    void (*scan)(crdt_store_t *st, uint64_t cursor, size_t limit, crdt_store_key_cb each,
                 crdt_store_done_cb done, void *ud);
    void (*fingerprint)(crdt_store_t *st, const void *key, size_t klen, crdt_store_fp_cb cb,
                        void *ud);
    void (*mark_get)(crdt_store_t *st, const char *name, crdt_store_mark_cb cb, void *ud);
    void (*mark_put)(crdt_store_t *st, const char *name, const void *p, size_t n,
                     crdt_store_status_cb cb, void *ud);

    uint64_t (*last_seq)(const crdt_store_t *st);
    uint64_t (*durable_seq)(const crdt_store_t *st);
    uint64_t (*node_id)(const crdt_store_t *st);
    int (*hlc_now)(crdt_store_t *st, crdt_hlc_ts_t *ts);
    int (*flush)(crdt_store_t *st);
    void (*tick)(crdt_store_t *st, uint64_t now_ms);
    const char *(*last_error)(const crdt_store_t *st);
    void (*stats)(const crdt_store_t *st, crdt_store_stats_t *out);

    /* anti-entropy (added with the peer engine) */
    crdt_store_rsx_t *(*rsx_open)(crdt_store_t *st, bool initiator, const crdt_rsx_config_t *cfg);
    void (*rsx_step)(crdt_store_t *st, crdt_store_rsx_t *s, const void *msg, size_t n,
                     crdt_store_rsx_cb cb, void *ud);
    void (*rsx_close)(crdt_store_t *st, crdt_store_rsx_t *s);
    void (*rsx_keys)(crdt_store_t *st, uint64_t id, crdt_store_key_cb each, crdt_store_done_cb done,
                     void *ud);
    size_t (*rsx_items)(crdt_store_t *st);

    /* true: a store over the network, whose writes a caller may issue before the earlier ones
     * completed (one request's writes pipelined); writes to one key still apply in the order
     * issued. false (the embedded store): completions come at once anyway. */
    bool pipelined;
    /* optional (NULL: crdt_store_types reads the objects with get_many): the types of n keys
     * without their states, for a check before writing (a store over Redis: CRDT.TYPE) */
    void (*types)(crdt_store_t *st, const crdt_bytes_t *keys, size_t n, crdt_store_types_cb cb,
                  void *ud);
    /* ordered listing (added with GET /v1/keys) */
    void (*list_keys)(crdt_store_t *st, const void *prefix, size_t plen, const void *after,
                      size_t alen, size_t limit, crdt_store_name_cb each, crdt_store_done_cb done,
                      void *ud);
    /* optional (NULL: the caller checks the types with crdt_store_types, then writes): timeline
     * writes checked as one (crdt_store_tl_write_batch) */
    void (*tl_write_batch)(crdt_store_t *st, const crdt_store_kmut_t *w, size_t n,
                           crdt_store_batch_cb cb, void *ud);
    /* optional (NULL: the caller reads the objects with get_many): entries of n timelines
     * without their whole states (crdt_store_tl_range) */
    void (*tl_range)(crdt_store_t *st, const crdt_bytes_t *keys, size_t n,
                     const crdt_store_tl_query_t *q, crdt_store_tl_range_cb cb, void *ud);
} crdt_store_ops_t;

struct crdt_store {
    const crdt_store_ops_t *ops;
    crdt_store_events_t ev;
};

/* ---- calls ----------------------------------------------------------------------------------- */

/* Sets the events (copied); call before the first write. */
static inline void crdt_store_set_events(crdt_store_t *st, const crdt_store_events_t *ev)
{
    st->ev = *ev;
}

/* Closes the store and frees it (the embedded store closes its replica when it owns it). */
static inline void crdt_store_close(crdt_store_t *st)
{
    if (st)
        st->ops->close(st);
}

/* The object at key. */
static inline void crdt_store_get(crdt_store_t *st, const void *key, size_t klen,
                                  crdt_store_get_cb cb, void *ud)
{
    st->ops->get(st, key, klen, cb, ud);
}

/* The objects at n keys, in one go (a roshi select, a coalesced timeline read). */
static inline void crdt_store_get_many(crdt_store_t *st, const crdt_bytes_t *keys, size_t n,
                                       crdt_store_get_many_cb cb, void *ud)
{
    st->ops->get_many(st, keys, n, cb, ud);
}

/* A local write (origin CRDT_ORIGIN_LOCAL), as m describes it; m and its bytes are borrowed for
 * the call. LWW writes without a timestamp are stamped by the store's clock. CRDT_ETYPE when the
 * key holds another type, CRDT_EIO / CRDT_EUNAVAIL when the store cannot take writes. */
static inline void crdt_store_write(crdt_store_t *st, const void *key, size_t klen,
                                    const crdt_mut_t *m, crdt_store_write_cb cb, void *ud)
{
    st->ops->write(st, key, klen, m, cb, ud);
}

/* Joins a delta or state (borrowed) into key; origin as the events report it. A remote delta's
 * timestamps advance the store's clock (the receive step of the hybrid logical clock). */
static inline void crdt_store_apply(crdt_store_t *st, const void *key, size_t klen,
                                    const crdt_obj_t *delta, uint64_t origin,
                                    crdt_store_write_cb cb, void *ud)
{
    st->ops->apply(st, key, klen, delta, origin, cb, ud);
}

/* The change feed: `each` for up to `limit` keys whose latest change is after `since`, in seq
 * order, with the key's current state (crdt_replica_changes' contract); then done(next). */
static inline void crdt_store_changes(crdt_store_t *st, uint64_t since, size_t limit,
                                      crdt_feed_cb each, crdt_store_done_cb done, void *ud)
{
    st->ops->changes(st, since, limit, each, done, ud);
}

/* The types of n keys (0: absent): a type check before writing, without reading the states
 * where the store can (ops->types), else through get_many. */
void crdt_store_types(crdt_store_t *st, const crdt_bytes_t *keys, size_t n, crdt_store_types_cb cb,
                      void *ud);

/* n timeline writes w[0..n) (all CRDT_MUT_ADD or all CRDT_MUT_REMOVE of CRDT_TIMELINE; anything
 * else is CRDT_EINVAL, nothing written), all-or-nothing as to types: every key is checked to hold a
 * timeline or nothing before any is written; when one does not, nothing is written and cb gets
 * CRDT_ETYPE with res->bad naming it. w and its bytes are borrowed for the call. Only where
 * ops->tl_write_batch is set (a store over Redis: one CRDT.TLMADD / TLMREM for the writes of
 * one hash slot, so one command on a single Redis; keys of several slots of a cluster are first
 * checked with a CRDT.TYPE each, then written with a command per slot, and a key whose type
 * changes between the two can leave the other slots' writes made: rc CRDT_ETYPE then counts
 * them in res->applied). */
static inline void crdt_store_tl_write_batch(crdt_store_t *st, const crdt_store_kmut_t *w, size_t n,
                                             crdt_store_batch_cb cb, void *ud)
{
    st->ops->tl_write_batch(st, w, n, cb, ud);
}

/* The entries q selects of each of n timelines keys[0..n), read where the store keeps them, so
 * that only those travel (a store over Redis: one CRDT.TLRANGE or CRDT.TLRANGEBYSCORE ...
 * WITHSCORES per key, pipelined and routed by slot). cb gets, per key, exactly what
 * crdt_timeline_range (or crdt_timeline_range_by_score) returns on the key's timeline; a key that
 * is absent, holds another CRDT type or a value that is not a CRDT (a native Redis value) has no
 * entries. A failure of any key's read fails the call (rc CRDT_EUNAVAIL, CRDT_EIO for a reply that
 * makes no sense, ...); a NaN bound or a non-finite after.score is CRDT_EINVAL at once. keys, q and
 * q->after's member are borrowed for the call; the entries cb gets live until it returns. Only
 * where ops->tl_range is set (NULL: the store has nothing better than get_many; a store over Redis
 * whose crdt.so lacks the commands reads the states with CRDT.STATE and answers the same). */
static inline void crdt_store_tl_range(crdt_store_t *st, const crdt_bytes_t *keys, size_t n,
                                       const crdt_store_tl_query_t *q, crdt_store_tl_range_cb cb,
                                       void *ud)
{
    st->ops->tl_range(st, keys, n, q, cb, ud);
}

/* Every data key, in no particular order, from cursor (0: the start) for about `limit` keys (the
 * internal keys of replica.h's crdt_key_internal are skipped: they count toward `limit` but are
 * never passed to `each`); done's next is the cursor to continue with, 0 once the scan is
 * complete. */
static inline void crdt_store_scan(crdt_store_t *st, uint64_t cursor, size_t limit,
                                   crdt_store_key_cb each, crdt_store_done_cb done, void *ud)
{
    st->ops->scan(st, cursor, limit, each, done, ud);
}

/* The data keys that begin with prefix (plen 0: all) and come after `after` (exclusive; NULL: from
 * the first; a non-NULL after with alen 0 is the empty key), in bytewise order (a prefix sorts
 * before the keys it begins), at most `limit`, each once, key only; internal keys
 * (crdt_key_internal) and keys with nothing live (crdt_obj_is_live false: deleted) are never
 * listed. Then done(rc, more): more 1 when a further key may follow (continue after the last key
 * listed), 0 when the range is exhausted. prefix and after are borrowed for the call. The
 * embedded store answers from an ordered index of its keys (O(log n + limit)); a store over Redis
 * scans the keys matching the prefix (Redis has no ordered scan: docs/http-api.md). */
static inline void crdt_store_list_keys(crdt_store_t *st, const void *prefix, size_t plen,
                                        const void *after, size_t alen, size_t limit,
                                        crdt_store_name_cb each, crdt_store_done_cb done, void *ud)
{
    st->ops->list_keys(st, prefix, plen, after, alen, limit, each, done, ud);
}

/* The key's state fingerprint (anti-entropy, REST's "fingerprint"). */
static inline void crdt_store_fingerprint(crdt_store_t *st, const void *key, size_t klen,
                                          crdt_store_fp_cb cb, void *ud)
{
    st->ops->fingerprint(st, key, klen, cb, ud);
}

/* Marks: small named blobs the store keeps durably beside the data (a peer link's resume marks
 * and epoch). Names are [a-z0-9._-]{1,64}, not starting with '.' (crdt_store_mark_name_ok; a store
 * refuses others with CRDT_EINVAL). A put replaces the whole blob atomically. */
bool crdt_store_mark_name_ok(const char *name);
static inline void crdt_store_mark_get(crdt_store_t *st, const char *name, crdt_store_mark_cb cb,
                                       void *ud)
{
    st->ops->mark_get(st, name, cb, ud);
}
static inline void crdt_store_mark_put(crdt_store_t *st, const char *name, const void *p, size_t n,
                                       crdt_store_status_cb cb, void *ud)
{
    st->ops->mark_put(st, name, p, n, cb, ud);
}

/* The seq of the latest change / the highest seq durable as configured. */
static inline uint64_t crdt_store_last_seq(const crdt_store_t *st)
{
    return st->ops->last_seq(st);
}
static inline uint64_t crdt_store_durable_seq(const crdt_store_t *st)
{
    return st->ops->durable_seq(st);
}
static inline uint64_t crdt_store_node_id(const crdt_store_t *st)
{
    return st->ops->node_id(st);
}
/* A fresh HLC timestamp of this node. */
static inline int crdt_store_hlc_now(crdt_store_t *st, crdt_hlc_ts_t *ts)
{
    return st->ops->hlc_now(st, ts);
}
/* Once per event-loop turn after handling input: writes out what is buffered (group commit);
 * fires the durable event when durable_seq advanced. 0 or a negative code. */
static inline int crdt_store_flush(crdt_store_t *st)
{
    return st->ops->flush(st);
}
/* Timer work (fsyncs, snapshots, reconnects); now_ms monotonic. */
static inline void crdt_store_tick(crdt_store_t *st, uint64_t now_ms)
{
    st->ops->tick(st, now_ms);
}
/* NULL while healthy, else why writes are refused. */
static inline const char *crdt_store_last_error(const crdt_store_t *st)
{
    return st->ops->last_error(st);
}
static inline void crdt_store_stats(const crdt_store_t *st, crdt_store_stats_t *out)
{
    st->ops->stats(st, out);
}

/* Opens a reconciliation session over the store's anti-entropy index (brought up to date first
 * when no other session borrows it); cfg is copied. NULL on allocation failure. */
static inline crdt_store_rsx_t *crdt_store_rsx_open(crdt_store_t *st, bool initiator,
                                                    const crdt_rsx_config_t *cfg)
{
    return st->ops->rsx_open(st, initiator, cfg);
}
/* One step: msg NULL starts the session (initiator: res->reply is the first message); else the
 * peer's message (borrowed), answered as crdt_rsx_receive does. */
static inline void crdt_store_rsx_step(crdt_store_t *st, crdt_store_rsx_t *s, const void *msg,
                                       size_t n, crdt_store_rsx_cb cb, void *ud)
{
    st->ops->rsx_step(st, s, msg, n, cb, ud);
}
static inline void crdt_store_rsx_close(crdt_store_t *st, crdt_store_rsx_t *s)
{
    if (s)
        st->ops->rsx_close(st, s);
}
/* Every key whose rsx id is `id` with its current state (`each`; usually one key), then done. */
static inline void crdt_store_rsx_keys(crdt_store_t *st, uint64_t id, crdt_store_key_cb each,
                                       crdt_store_done_cb done, void *ud)
{
    st->ops->rsx_keys(st, id, each, done, ud);
}
/* Items in the index (after bringing it up to date when no session borrows it). */
static inline size_t crdt_store_rsx_items(crdt_store_t *st)
{
    return st->ops->rsx_items(st);
}

/* ---- the embedded store ---------------------------------------------------------------------- */

/* Opens a replica with cfg and returns a store over it (which owns it), or NULL with *err. */
crdt_store_t *crdt_store_embedded_open(const crdt_replica_config_t *cfg, crdt_error_t *err);
/* A store over an open replica r (borrowed: closing the store leaves r open), or NULL (memory).
 * The store becomes r's listener. */
crdt_store_t *crdt_store_embedded_wrap(crdt_replica_t *r);
/* The replica under an embedded store, NULL for other stores (introspection: recovery report,
 * digest, tests). */
crdt_replica_t *crdt_store_embedded_replica(crdt_store_t *st);

/* ---- the deferred store (tests) ----------------------------------------------------------------
 */

/* A store over inner (which it owns and closes) whose asynchronous calls complete later: each is
 * recorded and run on inner by crdt_store_deferred_run, as a store over the network would complete
 * it, after the call returned. For testing callers against late completions. NULL: no memory. */
crdt_store_t *crdt_store_deferred_wrap(crdt_store_t *inner);
/* Runs the calls recorded so far (those their completions make wait for the next run); returns
 * how many ran. */
size_t crdt_store_deferred_run(crdt_store_t *st);
/* Calls recorded and not run yet. */
size_t crdt_store_deferred_pending(const crdt_store_t *st);

#ifdef __cplusplus
}
#endif

#endif /* CRDT_STORE_H */
