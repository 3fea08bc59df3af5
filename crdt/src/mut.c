/* mut.c - crdt_mut_t: one description of a write, run as the matching libcrdt mutator */
#include "crdt_private.h"

bool crdt_mut_needs_ts(const crdt_mut_t *m)
{
    return (m->type == CRDT_LWWREG && (m->kind == CRDT_MUT_SET || m->kind == CRDT_MUT_DELETE)) ||
           (m->type == CRDT_LWWSET &&
            (m->kind == CRDT_MUT_ADD || m->kind == CRDT_MUT_REMOVE || m->kind == CRDT_MUT_DELETE));
}

int crdt_mut_seen_ts(const crdt_obj_t *o, const crdt_mut_t *m, crdt_hlc_ts_t *out)
{
    if (!crdt_mut_needs_ts(m) || crdt_obj_type(o) != m->type)
        return 0;
    /* a register's timestamp whether it holds a value or was cleared; a set delete competes
     * with every entry */
    if (m->type == CRDT_LWWREG || m->kind == CRDT_MUT_DELETE)
        return crdt_obj_max_ts(o, out) == 1;
    if (!m->bytes && m->len)
        return 0;
    return crdt__lwwset_member_ts(o, m->bytes, m->len, out);
}

/* A PN-Counter's delete: minus the value this replica sees, in its own slots. */
static int pncounter_delete(crdt_obj_t *o, uint64_t replica, crdt_obj_t **delta)
{
    int64_t v;
    int rc = crdt_counter_value(o, &v);
    if (rc < 0)
        return rc;
    if (v == 0)
        return 0;
    if (v == INT64_MIN) /* its N side alone is past int64: no add can be made (as for incr) */
        return CRDT_EOVERFLOW;
    return crdt_pncounter_add(o, replica, -v, delta);
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
        if (m->kind == CRDT_MUT_DELETE)
            return CRDT_ENOTSUP;
        if (m->kind != CRDT_MUT_INCR || m->n < 0)
            return CRDT_EINVAL;
        return crdt_gcounter_incr(o, replica, (uint64_t)m->n, delta);
    case CRDT_PNCOUNTER:
        if (m->kind == CRDT_MUT_DELETE)
            return pncounter_delete(o, replica, delta);
        if (m->kind != CRDT_MUT_INCR)
            return CRDT_EINVAL;
        return crdt_pncounter_add(o, replica, m->n, delta);
    case CRDT_LWWREG:
        if (m->kind == CRDT_MUT_DELETE) /* nothing to remove when it holds no value */
            return crdt_lwwreg_get(o, NULL, NULL, NULL) == 1 ? crdt_lwwreg_clear(o, &m->ts, delta)
                                                             : 0;
        if (m->kind != CRDT_MUT_SET)
            return CRDT_EINVAL;
        return crdt_lwwreg_set(o, &m->ts, m->bytes, m->len, delta);
    case CRDT_LWWSET:
        if (m->kind == CRDT_MUT_ADD)
            return crdt_lwwset_add(o, m->bytes, m->len, &m->ts, delta);
        if (m->kind == CRDT_MUT_REMOVE)
            return crdt_lwwset_remove(o, m->bytes, m->len, &m->ts, delta);
        if (m->kind == CRDT_MUT_DELETE)
            return crdt__lwwset_delete(o, &m->ts, delta);
        return CRDT_EINVAL;
    case CRDT_ORSET:
        if (m->kind == CRDT_MUT_ADD)
            return crdt_orset_add(o, replica, m->bytes, m->len, delta);
        if (m->kind == CRDT_MUT_REMOVE)
            return crdt_orset_remove(o, m->bytes, m->len, delta);
        if (m->kind == CRDT_MUT_DELETE)
            return crdt__orset_delete(o, delta);
        return CRDT_EINVAL;
    case CRDT_TIMELINE:
        if (m->kind == CRDT_MUT_ADD)
            return crdt_timeline_add(o, m->bytes, m->len, m->score, delta);
        if (m->kind == CRDT_MUT_REMOVE)
            return crdt_timeline_remove(o, m->bytes, m->len, m->score, delta);
        if (m->kind == CRDT_MUT_DELETE)
            return crdt__timeline_delete(o, delta);
        return CRDT_EINVAL;
    }
    return CRDT_EINVAL;
}
