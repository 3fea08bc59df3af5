/* test_delete.c - CRDT_MUT_DELETE on every type: what is removed, what concurrent writes keep,
 * crdt_obj_is_live, and the cleared register's codecs (the laws run deletes in each type's test) */
#include <stdlib.h>
#include <string.h>

#include "crdt.h"
#include "crdt_json.h"
#include "tap.h"

#include "codec_check.h" /* after tap.h, whose ok() it uses */

static const crdt_mut_t DEL_TL = {.type = CRDT_TIMELINE, .kind = CRDT_MUT_DELETE};
static const crdt_mut_t DEL_OR = {.type = CRDT_ORSET, .kind = CRDT_MUT_DELETE};
static const crdt_mut_t DEL_PN = {.type = CRDT_PNCOUNTER, .kind = CRDT_MUT_DELETE};
static const crdt_mut_t DEL_GC = {.type = CRDT_GCOUNTER, .kind = CRDT_MUT_DELETE};

static crdt_hlc_ts_t ts(uint64_t ms, uint32_t c, uint64_t node)
{
    return (crdt_hlc_ts_t){ms, c, node};
}

/* Runs the delete m on o as replica `replica` and checks the mutator contract: 1, the delta
 * joined into the state before equals the state after, nothing live is left. Returns the delta
 * (caller frees). */
static crdt_obj_t *delete_checked(crdt_obj_t *o, const crdt_mut_t *m, uint64_t replica,
                                  const char *name)
{
    crdt_obj_t *before = crdt_obj_clone(o), *d = NULL;
    is_int(crdt_mut_apply(o, m, replica, &d), 1, "%s: delete changes the state", name);
    ok(d != NULL, "%s: delete gives a delta", name);
    ok(!crdt_obj_is_live(o), "%s: nothing live after the delete", name);
    ok(!crdt_obj_is_empty(o) || crdt_obj_type(o) == CRDT_ORSET,
       "%s: the delete is remembered (not the bottom state) where the type needs it", name);
    if (d && before) {
        ok(crdt_obj_merge(before, d) == 1 && crdt_obj_equal(before, o),
           "%s: the delta joined into the prior state gives the deleted state", name);
        /* the delta round-trips through both codecs (it travels as any delta does) */
        crdt_buf_t b = {0};
        crdt_error_t err;
        crdt_obj_t *back =
            crdt_obj_encode(d, &b) == 0 ? crdt_obj_decode(b.data, b.len, &err) : NULL;
        ok(back && crdt_obj_equal(back, d), "%s: the delta round-trips the binary codec", name);
        crdt_obj_free(back);
        crdt_buf_free(&b);
        json_t *j = crdt_obj_to_json(d);
        back = j ? crdt_obj_from_json(j, &err) : NULL;
        ok(back && crdt_obj_equal(back, d), "%s: the delta round-trips the JSON codec", name);
        crdt_obj_free(back);
        json_decref(j);
    }
    crdt_obj_free(before);
    crdt_obj_t *again = NULL;
    is_int(crdt_mut_apply(o, m, replica, &again), 0, "%s: a second delete is a no-op", name);
    ok(again == NULL, "%s: ... with no delta", name);
    return d;
}

/* a ⊔ b both ways must agree (the delete commutes with the concurrent write). */
static crdt_obj_t *join_both_ways(const crdt_obj_t *base, const crdt_obj_t *da,
                                  const crdt_obj_t *db, const char *name)
{
    crdt_obj_t *x = crdt_obj_clone(base), *y = crdt_obj_clone(base);
    crdt_obj_merge(x, da);
    crdt_obj_merge(x, db);
    crdt_obj_merge(y, db);
    crdt_obj_merge(y, da);
    ok(crdt_obj_equal(x, y), "%s: the delete and the concurrent write join in either order", name);
    crdt_obj_free(y);
    return x;
}

static void test_timeline(void)
{
    crdt_obj_t *t = crdt_timeline_new(0), *d = NULL;
    ok(!crdt_obj_is_live(t), "timeline: an empty timeline is not live");
    is_int(crdt_mut_apply(t, &DEL_TL, 1, &d), 0, "timeline: deleting an empty timeline: no-op");
    crdt_timeline_add(t, "a", 1, 10, NULL);
    crdt_timeline_add(t, "b", 1, 20, NULL);
    crdt_timeline_add(t, "c", 1, 30, NULL);
    crdt_timeline_remove(t, "z", 1, 40, NULL); /* a doomstone stays as it is */
    ok(crdt_obj_is_live(t), "timeline: live with entries");
    crdt_obj_t *base = crdt_obj_clone(t); /* what both replicas saw */

    crdt_obj_t *da = delete_checked(t, &DEL_TL, 1, "timeline");
    crdt_stats_t st;
    crdt_obj_stats(da, &st);
    is_int((long long)st.entries, 0, "timeline: the delta holds no live entry");
    is_int((long long)st.tombstones, 3, "timeline: the delta is a tombstone per live entry");
    crdt_tl_entry_t fl;
    is_int(crdt_timeline_floor(t, &fl), 0, "timeline: a delete raises no floor");

    /* concurrently on B: "b" re-added at a higher score, "a" at its own score, "n" new low */
    crdt_obj_t *b = crdt_obj_clone(base), *db = crdt_timeline_new(0), *x = NULL;
    crdt_timeline_add(b, "b", 1, 25, &x);
    crdt_obj_merge(db, x);
    crdt_obj_free(x);
    crdt_timeline_add(b, "a", 1, 10, &x); /* a no-op on B: already there */
    ok(x == NULL, "timeline: re-adding at the same score is a no-op");
    crdt_timeline_add(b, "n", 1, 1, &x);
    crdt_obj_merge(db, x);
    crdt_obj_free(x);
    crdt_obj_t *j = join_both_ways(base, da, db, "timeline");
    double s;
    ok(crdt_timeline_score(j, "b", 1, &s) == 1 && s == 25,
       "timeline: an add at a higher score, concurrent with the delete, survives");
    ok(crdt_timeline_score(j, "n", 1, &s) == 1 && s == 1,
       "timeline: an entry the deleting replica never saw survives, whatever its score");
    ok(crdt_timeline_score(j, "a", 1, &s) == 0 && crdt_timeline_score(j, "c", 1, &s) == 0,
       "timeline: what the deleting replica saw is gone");
    is_int((long long)crdt_timeline_card(j), 2, "timeline: two live entries after the join");
    /* a later add of a deleted member at its old score stays removed: remove wins ties */
    is_int(crdt_timeline_add(t, "c", 1, 30, NULL), 0,
           "timeline: re-adding at the deleted score "
           "loses (remove wins ties)");
    is_int(crdt_timeline_add(t, "c", 1, 31, NULL), 1, "timeline: ... a higher score wins");
    crdt_obj_free(j);
    crdt_obj_free(b);
    crdt_obj_free(db);
    crdt_obj_free(da);
    crdt_obj_free(base);
    crdt_obj_free(t);

    /* a bounded timeline keeps its bound and floor through a delete */
    crdt_obj_t *bt = crdt_timeline_new(2);
    crdt_timeline_add(bt, "a", 1, 1, NULL);
    crdt_timeline_add(bt, "b", 1, 2, NULL);
    crdt_timeline_add(bt, "c", 1, 3, NULL); /* drops "a": floor (1, "a") */
    da = delete_checked(bt, &DEL_TL, 1, "timeline(2)");
    ok(crdt_timeline_floor(bt, &fl) == 1 && fl.score == 1, "timeline(2): the floor stays");
    is_int(crdt_timeline_max_size(bt), 2, "timeline(2): the bound stays");
    crdt_obj_free(da);
    crdt_obj_free(bt);
}

static void test_lwwset(void)
{
    crdt_obj_t *s = crdt_obj_new(CRDT_LWWSET), *d = NULL;
    crdt_hlc_ts_t t1 = ts(100, 0, 1), t2 = ts(200, 0, 1), t9 = ts(900, 0, 1);
    crdt_mut_t del = {.type = CRDT_LWWSET, .kind = CRDT_MUT_DELETE, .ts = t9};
    is_int(crdt_mut_apply(s, &del, 1, &d), 0, "lwwset: deleting an empty set: no-op");
    crdt_lwwset_add(s, "a", 1, &t1, NULL);
    crdt_lwwset_add(s, "b", 1, &t2, NULL);
    crdt_lwwset_remove(s, "c", 1, &t2, NULL);
    crdt_obj_t *base = crdt_obj_clone(s);

    crdt_hlc_ts_t seen;
    ok(crdt_mut_seen_ts(s, &del, &seen) == 1 && crdt_hlc_cmp(&seen, &t2) == 0,
       "lwwset: a delete competes with the greatest timestamp of the set (the store's clock "
       "passes it)");
    crdt_mut_t unstamped = del;
    unstamped.ts = ts(0, 0, 0);
    is_int(crdt_mut_apply(s, &unstamped, 1, &d), CRDT_EINVAL, "lwwset: a delete needs a timestamp");
    ok(crdt_mut_needs_ts(&del), "lwwset: crdt_mut_needs_ts says so");

    crdt_obj_t *da = delete_checked(s, &del, 1, "lwwset");
    crdt_stats_t st;
    crdt_obj_stats(da, &st);
    is_int((long long)st.tombstones, 2, "lwwset: the delta is a tombstone per live member");
    crdt_obj_stats(s, &st);
    is_int((long long)st.tombstones, 3, "lwwset: tombstones a, b (new) and c (kept)");

    /* concurrently on B: "a" re-added after the delete's time, "n" added before it (never seen
     * by A), "b" re-added before the delete's time */
    crdt_obj_t *b = crdt_obj_clone(base), *db = crdt_obj_new(CRDT_LWWSET), *x = NULL;
    crdt_hlc_ts_t t10 = ts(1000, 0, 2), t5 = ts(500, 0, 2);
    crdt_lwwset_add(b, "a", 1, &t10, &x);
    crdt_obj_merge(db, x);
    crdt_obj_free(x);
    crdt_lwwset_add(b, "n", 1, &t5, &x);
    crdt_obj_merge(db, x);
    crdt_obj_free(x);
    crdt_lwwset_add(b, "b", 1, &t5, &x);
    crdt_obj_merge(db, x);
    crdt_obj_free(x);
    crdt_obj_t *j = join_both_ways(base, da, db, "lwwset");
    ok(crdt_set_contains(j, "a", 1) == 1, "lwwset: an add stamped after the delete survives");
    ok(crdt_set_contains(j, "n", 1) == 1, "lwwset: a member the deleting replica never saw "
                                          "survives");
    ok(crdt_set_contains(j, "b", 1) == 0,
       "lwwset: a re-add of a seen member stamped before the delete loses (LWW)");
    crdt_obj_free(j);
    crdt_obj_free(b);
    crdt_obj_free(db);
    crdt_obj_free(da);

    /* a delete stamped below some entries removes only those it beats */
    crdt_obj_t *s2 = crdt_obj_clone(base);
    crdt_mut_t early = {.type = CRDT_LWWSET, .kind = CRDT_MUT_DELETE, .ts = ts(150, 0, 1)};
    is_int(crdt_mut_apply(s2, &early, 1, &d), 1, "lwwset: an early delete changes something");
    ok(crdt_set_contains(s2, "a", 1) == 0 && crdt_set_contains(s2, "b", 1) == 1,
       "lwwset: ... it removes what it is later than, not the later add");
    crdt_obj_free(d);
    crdt_obj_free(s2);
    crdt_obj_free(base);
    crdt_obj_free(s);
}

static void test_orset(void)
{
    crdt_obj_t *s = crdt_obj_new(CRDT_ORSET), *d = NULL;
    is_int(crdt_mut_apply(s, &DEL_OR, 1, &d), 0, "orset: deleting an empty set: no-op");
    crdt_orset_add(s, 1, "a", 1, NULL);
    crdt_orset_add(s, 2, "b", 1, NULL);
    crdt_orset_add(s, 1, "c", 1, NULL);
    crdt_orset_remove(s, "c", 1, NULL);
    crdt_obj_t *base = crdt_obj_clone(s);
    crdt_obj_t *da = delete_checked(s, &DEL_OR, 1, "orset");
    is_int((long long)crdt_set_size(da), 0, "orset: the delta holds no entry (a context only)");

    /* concurrently on B (replica 2): "a" added again (a new dot), "n" added */
    crdt_obj_t *b = crdt_obj_clone(base), *db = crdt_obj_new(CRDT_ORSET), *x = NULL;
    crdt_orset_add(b, 2, "a", 1, &x);
    crdt_obj_merge(db, x);
    crdt_obj_free(x);
    crdt_orset_add(b, 2, "n", 1, &x);
    crdt_obj_merge(db, x);
    crdt_obj_free(x);
    crdt_obj_t *j = join_both_ways(base, da, db, "orset");
    ok(crdt_set_contains(j, "a", 1) == 1 && crdt_set_contains(j, "n", 1) == 1,
       "orset: adds concurrent with the delete survive (add wins)");
    ok(crdt_set_contains(j, "b", 1) == 0 && crdt_set_contains(j, "c", 1) == 0,
       "orset: the dots the deleting replica saw are gone");
    is_int((long long)crdt_set_size(j), 2, "orset: two members after the join");
    /* a later add on A is a new dot: it shows */
    crdt_orset_add(s, 1, "b", 1, NULL);
    ok(crdt_set_contains(s, "b", 1) == 1, "orset: an add after the delete shows");
    crdt_obj_free(j);
    crdt_obj_free(b);
    crdt_obj_free(db);
    crdt_obj_free(da);
    crdt_obj_free(base);
    crdt_obj_free(s);
}

static void test_lwwreg(void)
{
    crdt_obj_t *r = crdt_obj_new(CRDT_LWWREG);
    crdt_hlc_ts_t t1 = ts(100, 0, 1), t2 = ts(200, 0, 1);
    crdt_mut_t del = {.type = CRDT_LWWREG, .kind = CRDT_MUT_DELETE, .ts = t2};
    ok(!crdt_obj_is_live(r), "lwwreg: an unset register is not live");
    crdt_lwwreg_set(r, &t1, "v", 1, NULL);
    ok(crdt_obj_is_live(r), "lwwreg: a set register is live");
    crdt_lwwreg_set(r, &t1, "", 0, NULL);
    ok(crdt_obj_is_live(r), "lwwreg: a register holding the empty value is live");
    crdt_obj_free(r);
    r = crdt_obj_new(CRDT_LWWREG);
    crdt_lwwreg_set(r, &t1, "v", 1, NULL);
    crdt_obj_t *base = crdt_obj_clone(r);
    crdt_hlc_ts_t seen;
    ok(crdt_mut_seen_ts(r, &del, &seen) == 1 && crdt_hlc_cmp(&seen, &t1) == 0,
       "lwwreg: a delete competes with the register's timestamp");
    crdt_obj_t *da = delete_checked(r, &del, 1, "lwwreg");
    const void *v = "x";
    size_t len = 9;
    crdt_hlc_ts_t got;
    is_int(crdt_lwwreg_get(r, &v, &len, &got), 0, "lwwreg: get on a cleared register: 0");
    ok(v == NULL && len == 0 && crdt_hlc_cmp(&got, &t2) == 0,
       "lwwreg: ... no value, and the clear's timestamp");
    is_int(crdt_lwwreg_cleared(r), 1, "lwwreg: crdt_lwwreg_cleared says so");
    is_int(crdt_lwwreg_cleared(base), 0, "lwwreg: a set register is not cleared");
    ok(crdt_mut_seen_ts(r, &del, &seen) == 1 && crdt_hlc_cmp(&seen, &t2) == 0,
       "lwwreg: a cleared register still has its timestamp for the next write to pass");
    crdt_hlc_ts_t mx;
    ok(crdt_obj_max_ts(r, &mx) == 1 && crdt_hlc_cmp(&mx, &t2) == 0, "lwwreg: max_ts of a clear");

    /* concurrent sets: one later than the clear wins, one earlier loses */
    crdt_obj_t *late = crdt_obj_new(CRDT_LWWREG), *early = crdt_obj_new(CRDT_LWWREG);
    crdt_hlc_ts_t t3 = ts(300, 0, 2), t15 = ts(150, 0, 2);
    crdt_lwwreg_set(late, &t3, "new", 3, NULL);
    crdt_lwwreg_set(early, &t15, "old", 3, NULL);
    crdt_obj_t *j = join_both_ways(base, da, late, "lwwreg (later set)");
    ok(crdt_lwwreg_get(j, &v, &len, NULL) == 1 && len == 3 && !memcmp(v, "new", 3),
       "lwwreg: a set stamped after the clear wins");
    crdt_obj_free(j);
    j = join_both_ways(base, da, early, "lwwreg (earlier set)");
    ok(crdt_lwwreg_cleared(j) == 1, "lwwreg: a set stamped before the clear loses to it");
    crdt_obj_free(j);
    /* equal timestamps: the clear wins over any value */
    crdt_obj_t *tie = crdt_obj_new(CRDT_LWWREG);
    crdt_lwwreg_set(tie, &t2, "\xff\xff", 2, NULL);
    j = join_both_ways(base, da, tie, "lwwreg (same timestamp)");
    ok(crdt_lwwreg_cleared(j) == 1, "lwwreg: at one timestamp the clear wins over a value");
    is_int(crdt_lwwreg_set(r, &t2, "zz", 2, NULL), 0,
           "lwwreg: a set at the clear's timestamp "
           "is a no-op");
    is_int(crdt_lwwreg_clear(r, &t1, NULL), 0, "lwwreg: an older clear is a no-op");
    is_int(crdt_lwwreg_clear(r, NULL, NULL), CRDT_EINVAL, "lwwreg: clear needs a timestamp");
    crdt_hlc_ts_t t0 = ts(5, 0, 0);
    is_int(crdt_lwwreg_clear(r, &t0, NULL), CRDT_EINVAL, "lwwreg: clear refuses node 0");
    is_int(crdt_lwwreg_clear(late, &t3, NULL), 1,
           "lwwreg: a clear at the value's own timestamp "
           "wins (clear beats value on ties)");
    crdt_obj_t *pn = crdt_obj_new(CRDT_PNCOUNTER);
    is_int(crdt_lwwreg_clear(pn, &t3, NULL), CRDT_ETYPE, "lwwreg: clear on a counter: ETYPE");
    is_int(crdt_lwwreg_cleared(pn), CRDT_ETYPE, "lwwreg: cleared on a counter: ETYPE");
    crdt_obj_free(pn);
    crdt_obj_free(j);
    crdt_obj_free(tie);
    crdt_obj_free(late);
    crdt_obj_free(early);
    crdt_obj_free(da);
    crdt_obj_free(base);
    crdt_obj_free(r);
}

static void test_lwwreg_codecs(void)
{
    /* binary: state byte 2, then the timestamp, no value */
    crdt_obj_t *r = crdt_obj_new(CRDT_LWWREG);
    crdt_hlc_ts_t t = ts(300, 2, 5);
    crdt_lwwreg_clear(r, &t, NULL);
    crdt_buf_t b = {0};
    is_int(crdt_obj_encode(r, &b), 0, "cleared register encodes");
    static const uint8_t payload[] = {2, 0xAC, 0x02, 2, 5};
    uint8_t framed[64];
    size_t flen = codec_frame(CRDT_LWWREG, payload, sizeof payload, framed);
    is_mem(b.data, b.len, framed, flen, "cleared register: the documented bytes");
    codec_good_payload(CRDT_LWWREG, payload, sizeof payload, "cleared register payload");
    static const uint8_t bad3[] = {3, 1, 0, 1};
    codec_bad_payload(CRDT_LWWREG, bad3, sizeof bad3, 3, "state byte 3");
    static const uint8_t trailing[] = {2, 1, 0, 1, 0};
    codec_bad_payload(CRDT_LWWREG, trailing, sizeof trailing, 7, "cleared with a value after it");
    static const uint8_t node0[] = {2, 1, 0, 0};
    codec_bad_payload(CRDT_LWWREG, node0, sizeof node0, 4, "cleared at node 0");
    crdt_buf_free(&b);

    /* JSON */
    json_t *j = crdt_obj_to_json(r);
    char *text = json_dumps(j, JSON_SORT_KEYS | JSON_COMPACT);
    is(text,
       "{\"state\":{\"cleared\":true,\"ts\":{\"c\":2,\"ms\":300,\"node\":5}},\"type\":"
       "\"lwwreg\"}",
       "cleared register: the documented JSON");
    crdt_error_t err;
    crdt_obj_t *back = crdt_obj_from_json(j, &err);
    ok(back && crdt_obj_equal(back, r), "cleared register: JSON round-trips");
    crdt_obj_free(back);
    free(text);
    json_decref(j);
    codec_bad_json("{\"type\":\"lwwreg\",\"state\":{\"ts\":{\"ms\":1,\"c\":0,\"node\":1},"
                   "\"cleared\":false}}",
                   "cleared", "cleared false");
    codec_bad_json("{\"type\":\"lwwreg\",\"state\":{\"ts\":{\"ms\":1,\"c\":0,\"node\":1},"
                   "\"cleared\":true,\"value\":\"\"}}",
                   "only ts and cleared", "cleared with a value");
    codec_bad_json("{\"type\":\"lwwreg\",\"state\":{\"cleared\":true}}", "ts",
                   "cleared without ts");
    crdt_obj_free(r);
}

static void test_counters(void)
{
    crdt_obj_t *p = crdt_obj_new(CRDT_PNCOUNTER), *d = NULL;
    ok(!crdt_obj_is_live(p), "pncounter: a new counter is not live");
    is_int(crdt_mut_apply(p, &DEL_PN, 1, &d), 0, "pncounter: deleting 0 is a no-op");
    crdt_pncounter_add(p, 1, 7, NULL);
    crdt_pncounter_add(p, 2, 3, NULL);
    crdt_pncounter_add(p, 2, -3, NULL);
    crdt_pncounter_add(p, 2, 3, NULL);
    ok(crdt_obj_is_live(p), "pncounter: 10 is live");
    crdt_obj_t *base = crdt_obj_clone(p);
    crdt_obj_t *da = delete_checked(p, &DEL_PN, 1, "pncounter");
    int64_t v = -1;
    ok(crdt_counter_value(p, &v) == 0 && v == 0, "pncounter: 0 after the delete");
    /* concurrently on replica 2: +5 */
    crdt_obj_t *b = crdt_obj_clone(base), *db = NULL;
    crdt_pncounter_add(b, 2, 5, &db);
    crdt_obj_t *j = join_both_ways(base, da, db, "pncounter");
    ok(crdt_counter_value(j, &v) == 0 && v == 5,
       "pncounter: an increment concurrent with the delete survives (value 5, got %lld)",
       (long long)v);
    crdt_obj_free(j);
    crdt_obj_free(b);
    crdt_obj_free(db);
    crdt_obj_free(da);
    crdt_obj_free(base);
    /* a negative value is deleted upwards */
    crdt_pncounter_add(p, 1, -4, NULL);
    da = delete_checked(p, &DEL_PN, 3, "pncounter (negative)");
    crdt_obj_free(da);
    crdt_obj_free(p);

    crdt_obj_t *g = crdt_obj_new(CRDT_GCOUNTER);
    ok(!crdt_obj_is_live(g), "gcounter: a new counter is not live");
    crdt_gcounter_incr(g, 1, 4, NULL);
    ok(crdt_obj_is_live(g), "gcounter: 4 is live");
    crdt_obj_t *before = crdt_obj_clone(g);
    is_int(crdt_mut_apply(g, &DEL_GC, 1, &d), CRDT_ENOTSUP, "gcounter: a delete is refused");
    ok(d == NULL && crdt_obj_equal(g, before), "gcounter: ... and changes nothing");
    ok(strstr(crdt_strerror(CRDT_ENOTSUP), "gcounter") != NULL,
       "CRDT_ENOTSUP's text names the gcounter (%s)", crdt_strerror(CRDT_ENOTSUP));
    crdt_obj_free(before);
    crdt_obj_free(g);

    /* a delete of another type than the object's */
    crdt_obj_t *t = crdt_timeline_new(0);
    is_int(crdt_mut_apply(t, &DEL_PN, 1, &d), CRDT_ETYPE,
           "a pncounter delete on a timeline: "
           "ETYPE");
    crdt_obj_free(t);
    ok(!crdt_obj_is_live(NULL), "is_live(NULL) is false");
}

int main(void)
{
    test_timeline();
    test_lwwset();
    test_orset();
    test_lwwreg();
    test_lwwreg_codecs();
    test_counters();
    return done_testing();
}
