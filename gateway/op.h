/* op.h - the one op path (op.c): a REST-shaped op object (the body of POST /v1/keys/{key}, a
 * crdt.v1 apply) parsed into crdt_mut_t values and run through the store
 *
 * Layer: above server.h (no HTTP: sessions use it too). Also the reserved key prefix and the
 * JSON field decoders (byte strings, base64) that every request parser uses.
 */
#ifndef CRDT_GW_OP_H
#define CRDT_GW_OP_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <jansson.h>

#include "crdt.h"
#include "server.h"

/* The outcome of one write in REST's shape (op.c), shared by POST /v1/keys/{key} and crdt.v1's
 * apply. */
typedef struct gw_op_result {
    int rc;           /* 0, or -1: the op failed (status, code and message say why) */
    int status;       /* the HTTP status REST answers with: 200, 400, 409, 500, 503; 404 with rc 0
                         for a delete that found nothing live (a no-op) */
    const char *code; /* crdt.v1 error code (docs/protocol.md) on failure, else NULL */
    char message[400];
    size_t applied, ops; /* ops that changed the key / ops in the request */
    uint64_t seq;        /* seq of the last change made, 0 when nothing changed */
} gw_op_result_t;

/* Called exactly once with the outcome of gw_apply_op, possibly before gw_apply_op returns; r is
 * borrowed for the call. */
typedef void (*gw_op_done_cb)(gw_server_t *s, const gw_op_result_t *r, void *ud);

/* Applies a REST-shaped op object (the body of POST /v1/keys/{key}) to key: validates, runs the
 * ops, records apply metrics, then calls done(s, r, ud). r->rc 0 on success (r->applied may
 * be 0: a no-op); otherwise r->status/code/message say why (a batch stopped by a storage failure
 * keeps r->applied/seq). key and op are borrowed for the call only (what is needed later is
 * copied). Does not schedule the flush: the caller does, after recording what waits for it. */
void gw_apply_op(gw_server_t *s, const uint8_t *key, size_t klen, const json_t *op,
                 gw_op_done_cb done, void *ud);

/* Keys starting with these bytes are crdtd's own (per-client op-id high-water marks of crdt.v1,
 * marks.h): the replica's internal keys (replica.h, crdt_key_internal). Clients can neither write
 * nor subscribe to them, and no read, listing or feed shows them. */
#define GW_RESERVED_PREFIX "\0c/"
#define GW_RESERVED_PREFIX_LEN 3
bool gw_key_reserved(const void *key, size_t klen);

/* One write of a batch: the key and the mutation (both borrowed by gw_run_writes until done);
 * the store's own batch entry, so a run can go to crdt_store_tl_write_batch as it is. */
typedef crdt_store_kmut_t gw_write_t;

/* rc 0, or the negative code of the write that stopped the batch; applied: writes that changed
 * their key; seq: the seq of the last change made (0: none). */
typedef void (*gw_writes_done_cb)(gw_server_t *s, int rc, size_t applied, uint64_t seq, void *ud);

/* Runs w[0..n) through the store in order, each issued from the completion of the one before:
 * crdt_store_write, or for CRDT_MUT_MERGE crdt_store_apply with origin CRDT_ORIGIN_LOCAL. Stops at
 * the first failure. Records the apply latency; done is called exactly once, possibly before
 * gw_run_writes returns. Does not schedule the flush. */
void gw_run_writes(gw_server_t *s, const gw_write_t *w, size_t n, gw_writes_done_cb done, void *ud);

/* Decodes a standard base64 JSON string field into a new buffer (*out, free()) of at most max
 * bytes: 0, or -1 with r->status/code/message naming `what`. (The "binary" of a merge: an
 * encoding, always base64.) */
int gw_b64_field(const json_t *v, const char *what, size_t max, gw_op_result_t *r, uint8_t **out,
                 size_t *outlen);
/* Decodes a byte string field (a member, a value) in either JSON form of docs/encoding.md's
 * "Bytes in JSON and URLs" (a string, or {"base64":..}) into a new buffer (*out, free()) of at
 * most max bytes: 0, or -1 with r->status/code/message naming `what`. */
int gw_bytes_field(const json_t *v, const char *what, size_t max, gw_op_result_t *r,
                   uint8_t **out, size_t *outlen);

#endif /* CRDT_GW_OP_H */
