/* marks.h - crdt.v1's op-id high-water marks (marks.c): internal keys by period, with expiry
 *
 * Layer: above op.h and token.h (sync.c uses it). docs/protocol.md ("Op-id marks") is the
 * contract: the highest applied op id of each (token subject, client id) is a timeline entry
 * (member subject "\0" client, score the id: the greater score wins, a max-register) in the
 * internal key "\0c/ids/<period>" of the wall-clock period it was written in. A lookup reads the
 * current and the previous period's keys, so a mark lives from one to two periods after its
 * client's last apply (GW_MARK_PERIOD_MS, a day); the keys of older periods are emptied by a
 * floor that drops every entry (a lattice step, so it replicates and converges like any write).
 */
#ifndef CRDT_GW_MARKS_H
#define CRDT_GW_MARKS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "crdt.h"
#include "crdt_store.h"
#include "crdt_v1.h"
#include "server.h"
#include "token.h"

#define GW_MARK_PERIOD_MS (24ull * 3600 * 1000)
#define GW_MARK_EXPIRE_SPAN 30 /* periods before the previous one whose keys a sweep empties */
#define GW_MARK_KEY_MAX (CRDT_INTERNAL_PREFIX_LEN + 4 + 20)
#define GW_MARK_MEMBER_MAX (GW_TOKEN_MAX_SUB + 1 + CRDT_V1_CLIENT_MAX)

struct gw_marks_sweep;

typedef struct gw_marks {
    gw_server_t *srv;
    uint64_t period_ms;           /* GW_MARK_PERIOD_MS, or CRDTD_TEST_MARK_PERIOD_MS (tests) */
    uint64_t swept;               /* the last period a sweep started in (0: none yet) */
    struct gw_marks_sweep *sweep; /* in flight: completions may come later */
    uint64_t sweeps, emptied;     /* for tests and metrics: sweeps run, keys emptied */
} gw_marks_t;

/* Where one client's mark is, at the time it is computed (an apply keeps it for its steps). */
typedef struct gw_mark_ref {
    uint64_t period;
    uint8_t key[2][GW_MARK_KEY_MAX]; /* [0] the current period's key, [1] the previous one's */
    crdt_bytes_t keys[2];            /* borrowed views of key[], for crdt_store_get_many */
    uint8_t member[GW_MARK_MEMBER_MAX];
    size_t mlen;
} gw_mark_ref_t;

void gw_marks_init(gw_marks_t *m, gw_server_t *s);
/* Frees a sweep still in flight (the store, closed next, drops its completions). */
void gw_marks_shutdown(gw_marks_t *m);

/* Fills *ref for (sub, client) now (sub NULL: no token). Keep ref at a stable address while
 * its keys are in a store call. Starts the sweep of older periods once per period. */
void gw_marks_ref(gw_marks_t *m, const char *sub, const char *client, gw_mark_ref_t *ref);
/* The high-water mark that crdt_store_get_many(store, ref->keys, 2, ...) gave (0: none). */
uint64_t gw_marks_value(const gw_mark_ref_t *ref, const crdt_obj_t *const *objs, size_t n);
/* Records id as the client's mark in the current period's key; cb as crdt_store_write's. */
void gw_marks_put(gw_marks_t *m, const gw_mark_ref_t *ref, uint64_t id, crdt_store_write_cb cb,
                  void *ud);

#endif /* CRDT_GW_MARKS_H */
