/* peer_index.h - private to crdtd: the anti-entropy index of the replica's keyspace (key ids and
 * fingerprints in a crdt_rsx_index_t, an id -> keys map for repairs, lazily refreshed) */
#ifndef CRDT_PEER_INDEX_H
#define CRDT_PEER_INDEX_H

#include <stddef.h>
#include <stdint.h>

#include "crdt_reconcile.h"
#include "replica.h"

typedef struct peer_index peer_index_t;

/* Builds the index of every key of r (fingerprints from crdt_replica_key_fingerprint). Returns a
 * new index, or NULL on allocation failure. */
peer_index_t *peer_index_new(crdt_replica_t *r);
void peer_index_free(peer_index_t *px);

/* A key changed (or appeared): remember it, so that the next refresh re-reads its fingerprint.
 * Cheap: a hash and a table probe; the fingerprint (an encoding of the object) is computed only
 * when anti-entropy needs it. 0 or CRDT_ENOMEM (the key is then missing from the index until a
 * later change retries; the next anti-entropy round still finds it on the peer's side). */
int peer_index_touch(peer_index_t *px, const void *key, size_t klen);

/* Moves the fingerprints of the keys touched since the last refresh into the rsx index. Must not
 * run while a reconciliation session borrows the index. Returns how many keys were refreshed. */
size_t peer_index_refresh(peer_index_t *px);

/* Keys touched and not yet refreshed. */
size_t peer_index_stale(const peer_index_t *px);

/* The rsx index, for crdt_rsx_session_new (borrowed). */
const crdt_rsx_index_t *peer_index_rsx(const peer_index_t *px);

/* Calls cb for every key whose id is `id` (usually one); stops when cb returns non-zero and
 * returns that. */
typedef int (*peer_index_key_cb)(const void *key, size_t klen, void *ud);
int peer_index_keys(const peer_index_t *px, uint64_t id, peer_index_key_cb cb, void *ud);

#endif /* CRDT_PEER_INDEX_H */
