/* mut.c - crdt_mut_t: one description of a write, run as the matching libcrdt mutator */
#include "crdt_private.h"

bool crdt_mut_needs_ts(const crdt_mut_t *m)
{
    return (m->type == CRDT_LWWREG && m->kind == CRDT_MUT_SET) ||
           (m->type == CRDT_LWWSET && (m->kind == CRDT_MUT_ADD || m->kind == CRDT_MUT_REMOVE));
}

int crdt_mut_seen_ts(const crdt_obj_t *o, const crdt_mut_t *m, crdt_hlc_ts_t *out)
{
    if (!crdt_mut_needs_ts(m) || crdt_obj_type(o) != m->type)
        return 0;
    if (m->type == CRDT_LWWREG)
        return crdt_lwwreg_get(o, NULL, NULL, out) == 1;
    if (!m->bytes && m->len)
        return 0;
    return crdt__lwwset_member_ts(o, m->bytes, m->len, out);
}

int crdt_mut_apply(crdt_obj_t *o, const crdt_mut_t *m, uint64_t replica, crdt_obj_t **delta)
{
    if (delta)
        *delta = NULL;
    if (m->kind == CRDT_MUT_MERGE) {
        if (!m->state)
            return CRDT_EINVAL;
        if (crdt_obj_type(o) != crdt_obj_type(m->state))
            return CRDT_ETYPE;
        int rc = crdt_obj_merge(o, m->state);
        if (rc > 0 && delta && !(*delta = crdt_obj_clone(m->state)))
            return CRDT_ENOMEM; /* o changed; the caller cannot log it: report, as a mutator would
                                 */
        return rc;
    }
    if (crdt_obj_type(o) != m->type)
        return CRDT_ETYPE;
    if (crdt_mut_needs_ts(m) && m->ts.ms == 0)
        return CRDT_EINVAL;
    switch (m->type) {
    case CRDT_GCOUNTER:
        if (m->kind != CRDT_MUT_INCR || m->n < 0)
            return CRDT_EINVAL;
        return crdt_gcounter_incr(o, replica, (uint64_t)m->n, delta);
    case CRDT_PNCOUNTER:
        if (m->kind != CRDT_MUT_INCR)
            return CRDT_EINVAL;
        return crdt_pncounter_add(o, replica, m->n, delta);
    case CRDT_LWWREG:
        if (m->kind != CRDT_MUT_SET)
            return CRDT_EINVAL;
        return crdt_lwwreg_set(o, &m->ts, m->bytes, m->len, delta);
    case CRDT_LWWSET:
        if (m->kind == CRDT_MUT_ADD)
            return crdt_lwwset_add(o, m->bytes, m->len, &m->ts, delta);
        if (m->kind == CRDT_MUT_REMOVE)
            return crdt_lwwset_remove(o, m->bytes, m->len, &m->ts, delta);
        return CRDT_EINVAL;
    case CRDT_ORSET:
        if (m->kind == CRDT_MUT_ADD)
            return crdt_orset_add(o, replica, m->bytes, m->len, delta);
        if (m->kind == CRDT_MUT_REMOVE)
            return crdt_orset_remove(o, m->bytes, m->len, delta);
        return CRDT_EINVAL;
    case CRDT_TIMELINE:
        if (m->kind == CRDT_MUT_ADD)
            return crdt_timeline_add(o, m->bytes, m->len, m->score, delta);
        if (m->kind == CRDT_MUT_REMOVE)
            return crdt_timeline_remove(o, m->bytes, m->len, m->score, delta);
        return CRDT_EINVAL;
    }
    return CRDT_EINVAL;
}
