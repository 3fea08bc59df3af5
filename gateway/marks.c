/* marks.c - crdt.v1's op-id high-water marks: internal keys by period, with expiry */
#include <float.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "loop.h"
#include "marks.h"

/*
 * Why periods: a key cannot be dropped from a replicated keyspace (a peer's copy, or the log,
 * would bring it back), so marks that must not stay forever live in keys that can be emptied
 * as a whole by a join. A timeline's floor does that: a delta with floor (DBL_MAX, "\xff") and
 * a bound of 1 keeps only its own sentinel entry (DBL_MAX, "\xff\xff") and drops every mark
 * (scores are op ids <= 2^53, members are subject "\0" client and never sort above the
 * sentinel at that score), and later writes at or below the floor are ignored. What stays of an
 * old period is one sentinel and the floor: a few dozen bytes a period.
 */

static const uint8_t SENTINEL[] = {0xff, 0xff};
static const uint8_t FLOOR[] = {0xff};

void gw_marks_init(gw_marks_t *m, gw_server_t *s)
{
    memset(m, 0, sizeof(*m));
    m->srv = s;
    m->period_ms = GW_MARK_PERIOD_MS;
    const char *env = getenv("CRDTD_TEST_MARK_PERIOD_MS");
    if (env && *env) {
        unsigned long long v = strtoull(env, NULL, 10);
        if (v >= 10)
            m->period_ms = v;
    }
}

static size_t key_of(uint64_t period, uint8_t *out)
{
    memcpy(out, CRDT_INTERNAL_PREFIX "ids/", CRDT_INTERNAL_PREFIX_LEN + 4);
    int n = snprintf((char *)out + CRDT_INTERNAL_PREFIX_LEN + 4, 21, "%" PRIu64, period);
    return CRDT_INTERNAL_PREFIX_LEN + 4 + (size_t)n;
}

/* ---- the sweep: empties the keys of the periods before the previous one --------------------- */

typedef struct gw_marks_sweep {
    gw_marks_t *m;
    crdt_store_t *st;
    crdt_obj_t *floor; /* the delta that empties a period's key */
    unsigned pending;  /* store calls in flight, plus one while issuing */
    crdt_bytes_t keys[GW_MARK_EXPIRE_SPAN];
    uint8_t kb[GW_MARK_EXPIRE_SPAN][GW_MARK_KEY_MAX];
    size_t n;
} sweep_t;

static void sweep_release(sweep_t *w)
{
    if (--w->pending)
        return;
    w->m->sweep = NULL;
    gw_loop_schedule_flush(w->m->srv);
    crdt_obj_free(w->floor);
    free(w);
}

static void sweep_applied(void *ud, int rc, uint64_t seq)
{
    sweep_t *w = ud;
    (void)seq;
    if (rc > 0)
        w->m->emptied++;
    sweep_release(w);
}

static bool emptied(const crdt_obj_t *o)
{
    crdt_tl_entry_t fl;
    return crdt_obj_type(o) != CRDT_TIMELINE ||
           (crdt_timeline_floor(o, &fl) == 1 && fl.score == DBL_MAX);
}

static void sweep_got(void *ud, int rc, const crdt_obj_t *const *objs, size_t n)
{
    sweep_t *w = ud;
    for (size_t i = 0; rc == 0 && i < n; i++) {
        if (!objs[i] || emptied(objs[i]))
            continue;
        w->pending++;
        crdt_store_apply(w->st, w->keys[i].data, w->keys[i].len, w->floor, CRDT_ORIGIN_LOCAL,
                         sweep_applied, w);
    }
    sweep_release(w);
}

static crdt_obj_t *floor_delta(void)
{
    crdt_obj_t *t = crdt_timeline_new(1);
    if (!t || crdt_timeline_add(t, FLOOR, sizeof FLOOR, DBL_MAX, NULL) < 0 ||
        crdt_timeline_add(t, SENTINEL, sizeof SENTINEL, DBL_MAX, NULL) < 0) {
        crdt_obj_free(t);
        return NULL;
    }
    return t;
}

/* Once per period (and at the first apply after a start): the keys of up to
 * GW_MARK_EXPIRE_SPAN periods before the previous one that are not emptied yet are emptied. */
static void sweep_start(gw_marks_t *m, uint64_t period)
{
    if (m->sweep || period <= m->swept || period < 2)
        return;
    m->swept = period;
    sweep_t *w = calloc(1, sizeof(*w));
    if (!w || !(w->floor = floor_delta())) {
        free(w);
        return; /* memory: the next period tries again */
    }
    w->m = m;
    w->st = m->srv->store;
    for (uint64_t p = period - 2;; p--) {
        w->keys[w->n] = (crdt_bytes_t){w->kb[w->n], key_of(p, w->kb[w->n])};
        w->n++;
        if (p == 0 || w->n == GW_MARK_EXPIRE_SPAN)
            break;
    }
    m->sweep = w;
    m->sweeps++;
    w->pending = 1;
    crdt_store_get_many(w->st, w->keys, w->n, sweep_got, w);
}

void gw_marks_shutdown(gw_marks_t *m)
{
    /* the store drops the completions still pending when it closes (after this), as sync.c's
     * zombies say: nothing will release the sweep */
    if (m->sweep) {
        crdt_obj_free(m->sweep->floor);
        free(m->sweep);
    }
    m->sweep = NULL;
}

/* ---- one client's mark ---------------------------------------------------------------------- */

void gw_marks_ref(gw_marks_t *m, const char *sub, const char *client, gw_mark_ref_t *ref)
{
    uint64_t period = crdt_wall_ms() / m->period_ms;
    ref->period = period;
    ref->keys[0] = (crdt_bytes_t){ref->key[0], key_of(period, ref->key[0])};
    ref->keys[1] = (crdt_bytes_t){ref->key[1], key_of(period ? period - 1 : 0, ref->key[1])};
    size_t sl = sub ? strnlen(sub, GW_TOKEN_MAX_SUB) : 0;
    size_t cl = strnlen(client, CRDT_V1_CLIENT_MAX);
    if (sl)
        memcpy(ref->member, sub, sl);
    ref->member[sl] = '\0';
    memcpy(ref->member + sl + 1, client, cl);
    ref->mlen = sl + 1 + cl;
    sweep_start(m, period);
}

uint64_t gw_marks_value(const gw_mark_ref_t *ref, const crdt_obj_t *const *objs, size_t n)
{
    uint64_t best = 0;
    for (size_t i = 0; objs && i < n; i++) {
        double v;
        if (!objs[i] || crdt_obj_type(objs[i]) != CRDT_TIMELINE ||
            crdt_timeline_score(objs[i], ref->member, ref->mlen, &v) != 1 || !(v >= 0))
            continue;
        uint64_t u = v >= (double)CRDT_V1_MAX_ID ? CRDT_V1_MAX_ID : (uint64_t)v;
        if (u > best)
            best = u;
    }
    return best;
}

void gw_marks_put(gw_marks_t *m, const gw_mark_ref_t *ref, uint64_t id, crdt_store_write_cb cb,
                  void *ud)
{
    crdt_mut_t mut = {.type = CRDT_TIMELINE,
                      .kind = CRDT_MUT_ADD,
                      .bytes = ref->member,
                      .len = ref->mlen,
                      .score = (double)id};
    crdt_store_write(m->srv->store, ref->keys[0].data, ref->keys[0].len, &mut, cb, ud);
}
