/* redis_reconcile.h - finds the keys on which two crdt.so deployments differ, through the
 * CRDT.RSX.* commands (a test and benchmark client of the module's anti-entropy)
 *
 * A side is one server or the primaries of a cluster: CRDT.RSX.DIGEST with a step is asked of each
 * of its nodes and their hashes XORed (a slot's hash comes from the node holding it, the others
 * give 0), for 16 ranges of 1,024 slots; each range that differs (adjacent ones joined up to
 * 4,096 slots, cut where the serving node changes) then runs one crdt_rsx session (CRDT.RSX.OPEN
 * ... first last, RECV, DIFFS) on the node that serves it, all sessions stepped together (in waves
 * of 512), one round trip per protocol turn; DIFFS ends each (HELD on one side, UNIQUE on the
 * other: each key named once). Bytes count what crosses the wire both ways: commands as RESP and
 * replies' payloads.
 */
#ifndef CRDT_REDIS_RECONCILE_H
#define CRDT_REDIS_RECONCILE_H

#include <stddef.h>
#include <stdint.h>

#include <hiredis/hiredis.h>

#define RR_MAX_NODES 8

typedef struct rr_side {
    int n;
    redisContext *node[RR_MAX_NODES]; /* borrowed */
    unsigned char owner[16384];       /* index into node[] of the node serving each slot */
} rr_side_t;

typedef struct rr_result {
    char **names; /* differing keys (either side's names), malloc'd, each once */
    size_t n;
    size_t named; /* names the DIFFS replies carried (a key named by both sides counts twice) */
    uint64_t bytes_out, bytes_in; /* sent to the servers, received from them */
    unsigned round_trips;
    unsigned ranges_differing; /* slot ranges reconciled by a session each */
} rr_result_t;

/* One server serving every slot. */
void rr_side_single(rr_side_t *s, redisContext *c);

/* Reconciles a against b. 0, or -1 with a message on stdout (a TAP diag). */
int rr_reconcile(rr_side_t *a, rr_side_t *b, rr_result_t *out);
void rr_result_free(rr_result_t *r);

#endif /* CRDT_REDIS_RECONCILE_H */
