/* store_rsx.h - private to the replicator: the embedded store's anti-entropy index (rsx ids and
 * fingerprints of the replica's keys, an id -> keys map), refreshed from the change feed */
#ifndef CRDT_STORE_RSX_H
#define CRDT_STORE_RSX_H

#include <stddef.h>
#include <stdint.h>

#include "crdt_reconcile.h"
#include "replica.h"

typedef struct store_rsx store_rsx_t;

/* A new, empty index of r (filled by the first refresh), or NULL on allocation failure. */
store_rsx_t *store_rsx_new(crdt_replica_t *r);
void store_rsx_free(store_rsx_t *px);

/* Brings the index up to date with every change of the replica since the last refresh (the
 * change feed, the replica's own fingerprints). Must not run while a reconciliation session
 * borrows the index. 0 or CRDT_ENOMEM (the index then lags; the next refresh retries). */
int store_rsx_refresh(store_rsx_t *px);

/* The rsx index, for crdt_rsx_session_new (borrowed). */
const crdt_rsx_index_t *store_rsx_index(const store_rsx_t *px);

/* Calls cb for every key whose id is `id` (usually one); stops when cb returns non-zero and
 * returns that. */
typedef int (*store_rsx_key_cb)(const void *key, size_t klen, void *ud);
int store_rsx_keys(const store_rsx_t *px, uint64_t id, store_rsx_key_cb cb, void *ud);

#endif /* CRDT_STORE_RSX_H */
