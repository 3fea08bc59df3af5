/* crdt_reconcile.h - anti-entropy core: keyspace index and range-based set reconciliation */
#ifndef CRDT_RECONCILE_H
#define CRDT_RECONCILE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "crdt.h"

#ifdef __cplusplus
extern "C" {
#endif

/* ------------------------------------------------------------------------------------------------
 * Items. Every key of a replica is one item: `id` = crdt_rsx_key_id(key), `fp` = crdt_rsx_state_fp
 * of the key's canonical state encoding. Two replicas agree on a key when they hold the same
 * (id, fp). Ids live in [0, CRDT_RSX_ID_SPACE): the prime field the sketches are computed in (see
 * docs/replication.md); the hash functions below are part of the wire protocol: every node of a
 * cluster must compute them identically, so they never change within protocol version 1.
 *
 * Two keys with one id (chance about n^2 / 2^62, 2e-7 for a million keys) must be folded into one
 * item by the caller, e.g. fp = sum of the keys' fps; reconciliation then reports that id and the
 * caller exchanges every key that maps to it.
 * --------------------------------------------------------------------------------------------- */
#define CRDT_RSX_ID_SPACE ((UINT64_C(1) << 61) - 1) /* the Mersenne prime 2^61 - 1 */

typedef struct crdt_rsx_item {
    uint64_t id;
    uint64_t fp;
} crdt_rsx_item_t;

/* The id of a key: a 64-bit hash of its bytes reduced into [0, CRDT_RSX_ID_SPACE). */
uint64_t crdt_rsx_key_id(const void *key, size_t len);
/* A 64-bit fingerprint of a state's canonical encoding (crdt_obj_encode output):
 * crdt_hash64(enc, len, 0x6372647466703031), the same value as the embedded replica's key
 * fingerprint (crdt_replica_key_fingerprint) and REST's "fingerprint". */
uint64_t crdt_rsx_state_fp(const void *enc, size_t len);

/* ------------------------------------------------------------------------------------------------
 * Index: the items of one replica, ordered by id, with aggregates per subtree so that the sketch of
 * any id range costs O(log n). A treap in one flat node array (no allocation per item); upsert,
 * remove, lookup, range sketch and the start of a range listing are O(log n) expected.
 * --------------------------------------------------------------------------------------------- */
typedef struct crdt_rsx_index crdt_rsx_index_t;

/* The combined fingerprint of a set of items: count and three sums over the prime field, so
 * sketches of disjoint sets add and a single differing item can be recovered from the difference of
 * two sketches. Order independent and incremental. */
typedef struct crdt_rsx_sketch {
    uint64_t count;
    uint64_t a; /* sum of id * u(fp)       mod 2^61-1 */
    uint64_t b; /* sum of u(fp)            mod 2^61-1 */
    uint64_t c; /* sum of w(id) * u(fp)    mod 2^61-1, the check sum */
} crdt_rsx_sketch_t;

/* Returns a new empty index, or NULL. */
crdt_rsx_index_t *crdt_rsx_index_new(void);
void crdt_rsx_index_free(crdt_rsx_index_t *ix);

/* Sets the fp of id, inserting it if absent. Returns 1 if inserted, 0 if it was present (fp
 * replaced), CRDT_EINVAL if id >= CRDT_RSX_ID_SPACE, CRDT_ENOMEM (index unchanged). */
int crdt_rsx_index_upsert(crdt_rsx_index_t *ix, uint64_t id, uint64_t fp);
/* Returns 1 if id was removed, 0 if it was absent. */
int crdt_rsx_index_remove(crdt_rsx_index_t *ix, uint64_t id);
/* Returns true and *fp (if fp not NULL) when id is present. */
bool crdt_rsx_index_get(const crdt_rsx_index_t *ix, uint64_t id, uint64_t *fp);
size_t crdt_rsx_index_count(const crdt_rsx_index_t *ix);

/* Replaces the whole content by n items sorted by strictly ascending id (borrowed), in O(n).
 * CRDT_EINVAL (index unchanged) if unsorted, duplicated or out of the id space; CRDT_ENOMEM. */
int crdt_rsx_index_build(crdt_rsx_index_t *ix, const crdt_rsx_item_t *items, size_t n);

/* The sketch of the items with lo <= id < hi (empty if hi <= lo). */
void crdt_rsx_index_range(const crdt_rsx_index_t *ix, uint64_t lo, uint64_t hi,
                          crdt_rsx_sketch_t *out);
/* The sketch of the whole index, O(1). */
void crdt_rsx_index_total(const crdt_rsx_index_t *ix, crdt_rsx_sketch_t *out);
/* The sketch of one item. */
void crdt_rsx_item_sketch(uint64_t id, uint64_t fp, crdt_rsx_sketch_t *out);
bool crdt_rsx_sketch_equal(const crdt_rsx_sketch_t *x, const crdt_rsx_sketch_t *y);
/* acc += x and acc -= x: the sketch of the union (the difference) of disjoint sets, so a caller
 * can keep the sketch of a changing set, or of several indexes, without rescanning. */
void crdt_rsx_sketch_add(crdt_rsx_sketch_t *acc, const crdt_rsx_sketch_t *x);
void crdt_rsx_sketch_sub(crdt_rsx_sketch_t *acc, const crdt_rsx_sketch_t *x);

/* Copies up to `max` items with lo <= id < hi into out[] in ascending id order and returns how many
 * items the range holds in all (may exceed max: call again with a bigger array or a higher lo). */
size_t crdt_rsx_index_list(const crdt_rsx_index_t *ix, uint64_t lo, uint64_t hi,
                           crdt_rsx_item_t *out, size_t max);

/* ------------------------------------------------------------------------------------------------
 * Reconciliation session between two replicas (docs/replication.md). One side initiates; messages
 * then alternate until neither side has an open range. Afterwards each side knows every id on which
 * the replicas differ and who holds it; each side then sends the states of the differing keys it
 * holds (flag WE_HAVE) and joins what it receives.
 *
 * The index must not change while a session that borrows it is alive (snapshot it or pause the
 * upserts); sessions never write to it, so several sessions may share one index.
 * Pure computation: the caller carries the messages (one WebSocket binary message each).
 * --------------------------------------------------------------------------------------------- */
#define CRDT_RSX_PROTOCOL_VERSION 1

typedef struct crdt_rsx_config {
    uint64_t seed;    /* randomness for the session salt (initiator); 0: taken from the clock */
    size_t max_msg;   /* largest message sent or accepted, bytes (default 64 MiB) */
    size_t max_cells; /* most ranges one message may open (default 1,048,576) */
    size_t max_diffs; /* most differing ids recorded before the session fails (default 16M) */
    uint32_t probe_fanout;     /* without an estimator: the first split (default 16) */
    uint32_t probe_depth;      /* ... and the levels of its density probe (default 5) */
    uint32_t estimator_levels; /* scales in the first message's difference estimator (default 15,
                                  about 330 bytes, good to ~10^9 differences; 0: none, the
                                  responder then probes, one round trip more) */
} crdt_rsx_config_t;

/* Fills *cfg with the defaults. */
void crdt_rsx_config_init(crdt_rsx_config_t *cfg);

typedef struct crdt_rsx_session crdt_rsx_session_t;

/* Returns a new session over ix (borrowed; must outlive the session and stay unchanged), or NULL.
 * cfg may be NULL for the defaults; it is copied. */
crdt_rsx_session_t *crdt_rsx_session_new(const crdt_rsx_index_t *ix, bool initiator,
                                         const crdt_rsx_config_t *cfg);
void crdt_rsx_session_free(crdt_rsx_session_t *s);

/* Initiator only, once: appends the first message to out. 0, CRDT_EINVAL (responder, or called
 * twice), CRDT_ENOMEM. */
int crdt_rsx_initiate(crdt_rsx_session_t *s, crdt_buf_t *out);

/* Handles one message from the peer and appends the reply to `reply` (nothing is appended when no
 * reply is due). *done becomes true once the session is finished on this side: send the reply if
 * one was appended, then stop. Returns 0, or CRDT_EDECODE with *err filled (if err is not NULL) for
 * a malformed, truncated, oversized or out-of-turn message, CRDT_ELIMIT if a configured limit
 * would be exceeded, CRDT_ENOMEM. After an error the session is dead: every later call returns the
 * same error. Never trusts the input. */
int crdt_rsx_receive(crdt_rsx_session_t *s, const void *msg, size_t len, crdt_buf_t *reply,
                     bool *done, crdt_error_t *err);

/* Who holds a differing id. Both flags set: both hold it, with different fps. */
enum { CRDT_RSX_WE_HAVE = 1, CRDT_RSX_THEY_HAVE = 2 };

typedef struct crdt_rsx_diff {
    uint64_t id;
    unsigned flags; /* CRDT_RSX_WE_HAVE | CRDT_RSX_THEY_HAVE */
} crdt_rsx_diff_t;

/* The differing ids found so far (complete once done), in discovery order, each once. The array
 * is borrowed from the session until its next call. */
size_t crdt_rsx_session_diffs(const crdt_rsx_session_t *s, const crdt_rsx_diff_t **out);

typedef struct crdt_rsx_stats {
    uint64_t msgs_sent, msgs_received;
    uint64_t bytes_sent, bytes_received;
    uint64_t cells_sent;      /* range sketches sent */
    uint64_t diff_ids_sent;   /* differing ids announced to the peer */
    uint64_t estimated_diffs; /* the density estimate used to choose fan-outs (0: none yet) */
} crdt_rsx_stats_t;

void crdt_rsx_session_stats(const crdt_rsx_session_t *s, crdt_rsx_stats_t *st);

#ifdef __cplusplus
}
#endif

#endif /* CRDT_RECONCILE_H */
