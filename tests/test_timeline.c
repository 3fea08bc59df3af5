/* test_timeline.c - the timeline: write rules, ties, doomstones, trimming, reads, codecs, laws */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tap.h"

#include "crdt.h"
#include "crdt_json.h"
#include "laws.h"

/* ---- helpers -------------------------------------------------------------------------------- */

/* A readable picture of a timeline's whole state from its JSON form, e.g.
 * "max=3 F(b,2) A(e,5) R(d,4)" (members must be printable in tests). Static buffer. */
static const char *show(const crdt_obj_t *o)
{
    static char out[4096];
    out[0] = '\0';
    if (!o)
        return "(null)";
    json_t *j = crdt_obj_to_json(o);
    json_t *st = json_object_get(j, "state");
    size_t n = 0;
    uint8_t *m;
    size_t mlen;
    long long max = json_integer_value(json_object_get(st, "max_size"));
    if (max)
        n += (size_t)snprintf(out + n, sizeof(out) - n, "max=%lld ", max);
    json_t *fl = json_object_get(st, "floor");
    if (!json_is_null(fl)) {
        const char *why;
        crdt_json_get_bytes(json_object_get(fl, "member"), 1u << 20, &m, &mlen, &why);
        n += (size_t)snprintf(out + n, sizeof(out) - n, "F(%.*s,%g) ", (int)mlen, (char *)m,
                              json_number_value(json_object_get(fl, "score")));
        free(m);
    }
    size_t i;
    json_t *e;
    json_array_foreach(json_object_get(st, "entries"), i, e)
    {
        const char *why;
        crdt_json_get_bytes(json_object_get(e, "member"), 1u << 20, &m, &mlen, &why);
        n += (size_t)snprintf(out + n, sizeof(out) - n, "%s(%.*s,%g) ",
                              json_is_true(json_object_get(e, "live")) ? "A" : "R", (int)mlen,
                              (char *)m, json_number_value(json_object_get(e, "score")));
        free(m);
        if (n >= sizeof(out) - 64)
            break;
    }
    json_decref(j);
    if (n && out[n - 1] == ' ')
        out[n - 1] = '\0';
    return out;
}

static int add(crdt_obj_t *t, const char *m, double s)
{
    return crdt_timeline_add(t, m, strlen(m), s, NULL);
}

static int rem(crdt_obj_t *t, const char *m, double s)
{
    return crdt_timeline_remove(t, m, strlen(m), s, NULL);
}

/* ---- the write-rule table of DESIGN.md ------------------------------------------------------ */

static void test_write_rules(void)
{
    /* rows: the state before; columns: add/remove at score 0, 1, 2 */
    static const char *const rows[] = {"A(a,1)", "R(a,1)", ""};
    static const char *const want[3][6] = {
        {"A(a,1)", "A(a,1)", "A(a,2)", "A(a,1)", "R(a,1)", "R(a,2)"},
        {"R(a,1)", "R(a,1)", "A(a,2)", "R(a,1)", "R(a,1)", "R(a,2)"},
        {"A(a,0)", "A(a,1)", "A(a,2)", "R(a,0)", "R(a,1)", "R(a,2)"},
    };
    for (int r = 0; r < 3; r++) {
        for (int c = 0; c < 6; c++) {
            crdt_obj_t *t = crdt_timeline_new(0);
            if (r == 0)
                add(t, "a", 1);
            else if (r == 1)
                rem(t, "a", 1);
            is(show(t), rows[r], "setup %s", rows[r]);
            crdt_obj_t *before = crdt_obj_clone(t), *delta = (crdt_obj_t *)1;
            bool is_add = c < 3;
            double s = c % 3;
            int rc = is_add ? crdt_timeline_add(t, "a", 1, s, &delta)
                            : crdt_timeline_remove(t, "a", 1, s, &delta);
            const char *name = rows[r][0] ? rows[r] : "absent";
            is(show(t), want[r][c], "%s, %s(a,%g) -> %s", name, is_add ? "add" : "remove", s,
               want[r][c]);
            bool changed = strcmp(show(before), want[r][c]) != 0;
            is_int(rc, changed, "%s, %s(a,%g) reports %s", name, is_add ? "add" : "remove", s,
                   changed ? "a change" : "no change");
            if (changed) {
                is(show(delta), want[r][c], "  its delta holds just the new entry");
                crdt_obj_merge(before, delta);
                ok(crdt_obj_equal(before, t), "  delta joined into the prior state = the state");
            } else {
                ok(delta == NULL, "  no delta for a no-op");
            }
            crdt_obj_free(delta);
            crdt_obj_free(before);
            crdt_obj_free(t);
        }
    }
}

static void test_ties_and_doomstones(void)
{
    crdt_obj_t *t = crdt_timeline_new(0);
    add(t, "a", 5);
    add(t, "c", 5);
    add(t, "b", 5);
    add(t, "ab", 5);
    add(t, "", 5);
    add(t, "z", 4);
    is(show(t), "A(c,5) A(b,5) A(ab,5) A(a,5) A(,5) A(z,4)",
       "equal scores order by member descending bytewise (a prefix sorts older)");
    is_int(rem(t, "b", 5), 1, "remove at the equal score wins");
    is_int(add(t, "b", 5), 0, "add at the equal score loses to the tombstone");
    is_int(crdt_timeline_card(t), 5, "card counts live entries only");
    double sc = -1;
    is_int(crdt_timeline_score(t, "b", 1, &sc), 0, "a removed member has no score");
    is_int(crdt_timeline_score(t, "a", 1, &sc), 1, "a live member has one");
    ok(sc == 5, "score of a is 5");
    crdt_obj_free(t);

    /* a remove of a never-added member is a doomstone blocking older adds */
    t = crdt_timeline_new(0);
    is_int(rem(t, "x", 5), 1, "remove of an absent member changes the state");
    is(show(t), "R(x,5)", "it leaves a tombstone");
    is_int(add(t, "x", 4), 0, "an older add is blocked");
    is_int(add(t, "x", 5), 0, "an add at the same score is blocked");
    is_int(add(t, "x", 6), 1, "a newer add wins");
    is(show(t), "A(x,6)", "the member is live again at the newer score");
    is_int(rem(t, "x", 5.5), 0, "an older remove loses");
    crdt_stats_t st;
    rem(t, "y", 1);
    crdt_obj_stats(t, &st);
    is_int((long long)st.entries, 1, "stats: one live entry");
    is_int((long long)st.tombstones, 1, "stats: one tombstone");
    ok(st.memory > 0, "stats: memory is counted");
    crdt_obj_free(t);
}

static void test_bad_arguments(void)
{
    crdt_obj_t *t = crdt_timeline_new(0), *d = (crdt_obj_t *)1;
    is_int(crdt_timeline_add(t, "a", 1, NAN, &d), CRDT_EINVAL, "NaN score rejected");
    ok(d == NULL, "  no delta");
    is_int(crdt_timeline_add(t, "a", 1, INFINITY, NULL), CRDT_EINVAL, "+inf rejected");
    is_int(crdt_timeline_remove(t, "a", 1, -INFINITY, NULL), CRDT_EINVAL, "-inf rejected");
    is_int(crdt_timeline_add(t, "a", (size_t)CRDT_MAX_BLOB + 1, 1, NULL), CRDT_EINVAL,
           "oversized member rejected");
    is_int(crdt_timeline_add(t, NULL, 3, 1, NULL), CRDT_EINVAL, "NULL member with a length");
    ok(crdt_obj_is_empty(t), "the timeline is unchanged by rejected writes");

    is_int(add(t, "a", -0.0), 1, "-0.0 accepted");
    double sc = 1;
    crdt_timeline_score(t, "a", 1, &sc);
    ok(sc == 0 && !signbit(sc), "-0.0 is stored as 0.0");
    crdt_obj_t *u = crdt_timeline_new(0);
    add(u, "a", 0.0);
    ok(crdt_obj_equal(t, u), "a timeline written at -0.0 equals one written at 0.0");
    is_int(rem(u, "a", -0.0), 1, "remove at -0.0 ties with 0.0 (remove wins)");
    crdt_obj_free(u);
    crdt_obj_free(t);
}

/* ---- trimming and the floor ----------------------------------------------------------------- */

static void test_trimming(void)
{
    crdt_obj_t *t = crdt_timeline_new(3);
    is_int(crdt_timeline_max_size(t), 3, "max_size");
    add(t, "a", 1);
    add(t, "b", 2);
    add(t, "c", 3);
    crdt_tl_entry_t fl;
    is_int(crdt_timeline_floor(t, &fl), 0, "no floor before anything is dropped");
    add(t, "d", 4);
    rem(t, "e", 5);
    is(show(t), "max=3 F(b,2) R(e,5) A(d,4) A(c,3)",
       "bound 3 keeps the top 3 (tombstones count) and the highest dropped is the floor");
    is_int(crdt_timeline_floor(t, &fl), 1, "floor reported");
    ok(fl.score == 2 && fl.member_len == 1 && memcmp(fl.member, "b", 1) == 0, "floor is (2,b)");
    is_int(add(t, "a", 1), 0, "a trimmed entry never returns at its old score");
    is_int(add(t, "z", 1), 0, "a write below the floor is ignored");
    is_int(add(t, "b", 2), 0, "a write exactly at the floor is ignored");
    is_int(rem(t, "b", 2), 0, "a remove exactly at the floor is ignored");
    is_int(add(t, "a", 2), 0, "equal score, smaller member: below the floor, ignored");
    crdt_obj_t *d = NULL;
    is_int(add(t, "c", 2), 0, "an older write for a kept member loses");
    is_int(crdt_timeline_add(t, "bz", 2, 2, &d), 1,
           "equal score, greater member: above the floor but below everything kept");
    is(show(t), "max=3 F(bz,2) R(e,5) A(d,4) A(c,3)",
       "  it is dropped at once and raises the floor");
    is(show(d), "A(bz,2)", "  its delta is the write itself");
    crdt_obj_free(d);
    is_int(add(t, "f", 3.5), 1, "a write inside the kept range enters");
    is(show(t), "max=3 F(c,3) R(e,5) A(d,4) A(f,3.5)", "  and pushes out the oldest");
    is_int(add(t, "bz", 2.5), 0, "the old floor's member below the new floor stays out");
    is_int(add(t, "c", 9), 1, "a trimmed member comes back only with a newer score");
    is(show(t), "max=3 F(f,3.5) A(c,9) R(e,5) A(d,4)", "  trimming again");

    /* the borrowed floor member passed back in (aliasing the timeline's own storage) */
    crdt_timeline_floor(t, &fl);
    is_int(crdt_timeline_add(t, fl.member, fl.member_len, 100, NULL), 1,
           "adding the floor's own borrowed member works");
    is(show(t), "max=3 F(d,4) A(f,100) A(c,9) R(e,5)", "  state after that");
    crdt_obj_free(t);
}

/* the state does not depend on the order writes arrive in */
static void test_order_independence(void)
{
    enum { N = 300 };
    struct w {
        char m[4];
        double s;
        bool add;
    } ws[N];
    laws_rng_t rng = {12345};
    for (int i = 0; i < N; i++) {
        snprintf(ws[i].m, sizeof(ws[i].m), "%c", 'a' + (int)laws_below(&rng, 20));
        ws[i].s = (double)laws_below(&rng, 30);
        ws[i].add = laws_below(&rng, 4) != 0;
    }
    crdt_obj_t *ref = NULL;
    bool same = true;
    for (int round = 0; round < 20; round++) {
        crdt_obj_t *t = crdt_timeline_new(5);
        for (int i = N; i > 1; i--) {
            int j = (int)laws_below(&rng, (uint64_t)i);
            struct w tmp = ws[i - 1];
            ws[i - 1] = ws[j];
            ws[j] = tmp;
        }
        for (int i = 0; i < N; i++)
            (ws[i].add ? add : rem)(t, ws[i].m, ws[i].s);
        if (!ref)
            ref = t;
        else {
            same = same && crdt_obj_equal(ref, t);
            crdt_obj_free(t);
        }
    }
    ok(same, "20 permutations of 300 writes into a bound-5 timeline give one state");
    crdt_tl_entry_t fl;
    ok(crdt_timeline_floor(ref, &fl) == 1, "  and trimming happened (%s)", show(ref));
    crdt_obj_free(ref);
}

static void test_merge_bounds(void)
{
    crdt_obj_t *a = crdt_timeline_new(5), *b = crdt_timeline_new(3), *u = crdt_timeline_new(0);
    const char *names[] = {"a", "b", "c", "d", "e", "f", "g"};
    for (int i = 0; i < 7; i++) {
        add(a, names[i], i);         /* a keeps 2..6, floor (1,b) */
        add(b, names[i], 10 - i);    /* b keeps 10,9,8 = a,b,c; floor (7,d) */
        add(u, names[i], 0.5 + i);   /* unbounded: all */
    }
    crdt_obj_t *ab = crdt_obj_clone(a);
    is_int(crdt_obj_merge(ab, b), 1, "merge of different bounds changes the state");
    is(show(ab), "max=3 F(d,7) A(a,10) A(b,9) A(c,8)",
       "the smaller bound wins; top 3 of the union; floor = the highest of both floors and "
       "everything dropped");
    crdt_obj_t *ba = crdt_obj_clone(b);
    crdt_obj_merge(ba, a);
    ok(crdt_obj_equal(ab, ba), "  and it commutes");
    is_int(crdt_obj_merge(ab, b), 0, "merging again reports no change");

    crdt_obj_t *au = crdt_obj_clone(u);
    crdt_obj_merge(au, a);
    is_int(crdt_timeline_max_size(au), 5, "unbounded merged with bounded keeps the bound");
    is(show(au), "max=5 F(b,1.5) A(g,6.5) A(f,5.5) A(e,4.5) A(d,3.5) A(c,2.5)",
       "  and its union is trimmed");
    crdt_obj_t *ua = crdt_obj_clone(a);
    crdt_obj_merge(ua, u);
    ok(crdt_obj_equal(au, ua), "  and it commutes");
    crdt_obj_free(a);
    crdt_obj_free(b);
    crdt_obj_free(u);
    crdt_obj_free(ab);
    crdt_obj_free(ba);
    crdt_obj_free(au);
    crdt_obj_free(ua);
}

/* Offset paging must agree with a cursor walk and with card: it relies on per-block live counts,
 * which every insert, delete, split, join, tie and merge keeps up to date. */
static bool paging_consistent(const crdt_obj_t *t)
{
    crdt_tl_entry_t page[37], walk[37];
    size_t seen = 0;
    crdt_tl_entry_t cur;
    bool have = false, good = true;
    char cm[64];
    for (size_t off = 0;; off += 37) {
        size_t got = crdt_timeline_range(t, off, 37, page);
        size_t wgot = crdt_timeline_range_by_score(t, INFINITY, -INFINITY, have ? &cur : NULL, 37,
                                                   walk);
        good = good && got == wgot;
        for (size_t i = 0; good && i < got; i++)
            good = crdt_tl_entry_cmp(&page[i], &walk[i]) == 0;
        seen += got;
        if (got < 37 || !good)
            break;
        if (page[got - 1].member_len > sizeof(cm))
            return false;
        memcpy(cm, page[got - 1].member, page[got - 1].member_len);
        cur = (crdt_tl_entry_t){cm, page[got - 1].member_len, page[got - 1].score};
        have = true;
    }
    return good && seen == crdt_timeline_card(t);
}

/* Block bookkeeping under ties, moves that drain blocks (joins), splits and trimming. */
static void test_block_upkeep(void)
{
    crdt_obj_t *t = crdt_timeline_new(0);
    char m[16];
    for (int i = 0; i < 640; i++) {
        snprintf(m, sizeof(m), "n%03d", i);
        add(t, m, i);
    }
    ok(paging_consistent(t), "paging after 640 ascending adds");
    int tied = 0;
    for (int i = 0; i < 640; i += 3) {
        snprintf(m, sizeof(m), "n%03d", i);
        tied += rem(t, m, i);
    }
    is_int(tied, 214, "removes at equal scores all win");
    is_int((long long)crdt_timeline_card(t), 640 - 214, "card after the ties");
    ok(paging_consistent(t), "paging after ties turned entries into tombstones");
    for (int i = 0; i < 500; i++) {
        snprintf(m, sizeof(m), "n%03d", i);
        add(t, m, 1000 + (i * 7919) % 500); /* moves from the old end to the new front */
    }
    ok(paging_consistent(t), "paging after moves drained and joined blocks");
    for (int i = 639; i >= 0; i -= 2) {
        snprintf(m, sizeof(m), "n%03d", i);
        rem(t, m, 5000 + i);
    }
    ok(paging_consistent(t), "paging after removes moved half the entries again");
    crdt_obj_free(t);

    t = crdt_timeline_new(100);
    for (int i = 0; i < 1000; i++) {
        snprintf(m, sizeof(m), "n%03d", i % 700);
        (i % 5 ? add : rem)(t, m, (i * 31) % 997);
    }
    ok(paging_consistent(t), "paging in a bounded timeline after trimming");
    crdt_obj_free(t);
}

/* Small timelines (most feeds) must not pay for a whole 64-id block and 8-entry pool: before the
 * lone first block grew from 4 ids, 1 entry cost 636 B and 10 cost 844 B. The bounds leave ~30 B
 * of slack over today's 268/632 B (struct ~130 B, pool, block, hash index, member bytes), so
 * allocating a full block or pool for a small feed again fails here. */
static void test_small_memory(void)
{
    crdt_stats_t st;
    char m[16];
    crdt_obj_t *t = crdt_timeline_new(0);
    add(t, "member-0", 0);
    crdt_obj_stats(t, &st);
    cmp_ok((long long)st.memory, "<", 300, "a 1-entry timeline costs under 300 B");
    for (int i = 1; i < 10; i++) {
        snprintf(m, sizeof(m), "member-%d", i);
        add(t, m, i);
    }
    crdt_obj_stats(t, &st);
    cmp_ok((long long)st.memory, "<", 660, "a 10-entry timeline costs under 660 B");
    crdt_obj_free(t);

    /* growth through every lone-block capacity and past the first split: all reads stay right,
     * and clones and bulk merges of small states (sized lone blocks) agree with the source */
    t = crdt_timeline_new(0);
    bool good = true, clones = true, merges = true;
    for (int n = 1; n <= 200 && good; n++) {
        snprintf(m, sizeof(m), "e%03d", n - 1);
        good = add(t, m, (n * 37) % 211) == 1 && crdt_timeline_card(t) == (size_t)n &&
               paging_consistent(t);
        for (int k = 0; good && k < n; k += 7) {
            double sc;
            snprintf(m, sizeof(m), "e%03d", k);
            good = crdt_timeline_score(t, m, strlen(m), &sc) == 1 && sc == (k + 1) * 37 % 211;
        }
        crdt_obj_t *c = crdt_obj_clone(t), *e = crdt_timeline_new(0);
        clones = clones && c && crdt_obj_equal(c, t) && add(c, "zz", 999) == 1 &&
                 paging_consistent(c);
        merges = merges && e && crdt_obj_merge(e, t) == 1 && crdt_obj_equal(e, t) &&
                 add(e, "zz", 999) == 1 && paging_consistent(e);
        crdt_obj_free(c);
        crdt_obj_free(e);
    }
    ok(good, "every read is right after each add from 1 to 200 entries");
    ok(clones, "clones of 1..200 entries equal their source and take a further add");
    ok(merges, "bulk merges into an empty timeline equal their source and take a further add");
    crdt_obj_free(t);

    /* a bound of 1 empties and refills the lone block on every add (the block becomes the spare) */
    t = crdt_timeline_new(1);
    good = true;
    for (int i = 0; i < 100 && good; i++) {
        snprintf(m, sizeof(m), "b%d", i % 7);
        add(t, m, 10 + i);
        good = crdt_timeline_card(t) == 1 && paging_consistent(t);
    }
    ok(good, "a 1-bounded timeline stays right while its only block is recycled");
    crdt_obj_free(t);
}

/* Large merges (the linear bulk path) give the state of all writes applied to one timeline. */
static void test_merge_large(void)
{
    enum { N = 3000 };
    laws_rng_t rng = {777};
    const uint32_t bounds[][2] = {{0, 0}, {0, 700}, {500, 0}, {900, 400}, {1000, 1000}};
    for (size_t k = 0; k < sizeof(bounds) / sizeof(bounds[0]); k++) {
        uint32_t ba = bounds[k][0], bb = bounds[k][1];
        uint32_t bmin = !ba ? bb : !bb ? ba : ba < bb ? ba : bb;
        crdt_obj_t *a = crdt_timeline_new(ba), *b = crdt_timeline_new(bb);
        crdt_obj_t *all = crdt_timeline_new(bmin);
        for (int i = 0; i < 2 * N; i++) {
            char m[16];
            snprintf(m, sizeof(m), "m%d", (int)laws_below(&rng, N));
            double s = (double)laws_below(&rng, 5000);
            bool is_add = laws_below(&rng, 5) != 0;
            crdt_obj_t *side = i % 2 ? a : b;
            (is_add ? add : rem)(side, m, s);
            (is_add ? add : rem)(all, m, s);
        }
        crdt_obj_t *ab = crdt_obj_clone(a), *ba_ = crdt_obj_clone(b);
        crdt_obj_merge(ab, b);
        crdt_obj_merge(ba_, a);
        ok(crdt_obj_equal(ab, all) && crdt_obj_equal(ba_, all),
           "merge of %u- and %u-bounded timelines of %d writes each = all writes applied to one",
           ba, bb, N);
        /* and merging it into itself, or its parts again, changes nothing */
        is_int(crdt_obj_merge(ab, a), 0, "  merging a part again reports no change");
        /* a range read over the merged state is in order */
        crdt_tl_entry_t out[256];
        size_t got = crdt_timeline_range(ab, 0, 256, out);
        bool sorted = true;
        for (size_t i = 1; i < got; i++)
            sorted = sorted && crdt_tl_entry_cmp(&out[i - 1], &out[i]) < 0;
        ok(sorted && got > 0, "  its range read is strictly newest first");
        ok(paging_consistent(ab) && paging_consistent(ba_) && paging_consistent(a) &&
               paging_consistent(all),
           "  offset paging = cursor paging = card, merged or written");
        crdt_obj_free(a);
        crdt_obj_free(b);
        crdt_obj_free(all);
        crdt_obj_free(ab);
        crdt_obj_free(ba_);
    }
}

/* ---- reads ---------------------------------------------------------------------------------- */

typedef struct ref_ent {
    char m[24];
    double s;
    bool live;
} ref_ent_t;

static int ref_cmp(const void *x, const void *y)
{
    const ref_ent_t *a = x, *b = y;
    crdt_tl_entry_t ea = {a->m, strlen(a->m), a->s}, eb = {b->m, strlen(b->m), b->s};
    return crdt_tl_entry_cmp(&ea, &eb);
}

static bool entry_is(const crdt_tl_entry_t *e, const ref_ent_t *r)
{
    return e->score == r->s && e->member_len == strlen(r->m) &&
           memcmp(e->member, r->m, e->member_len) == 0;
}

/* Builds an unbounded timeline of n members (a fifth of them tombstones) and the reference list
 * of its live entries newest first; returns the live count. */
static size_t build(crdt_obj_t *t, size_t n, uint64_t seed, ref_ent_t *live)
{
    laws_rng_t rng = {seed};
    ref_ent_t *all = calloc(n, sizeof(*all));
    for (size_t i = 0; i < n; i++) {
        snprintf(all[i].m, sizeof(all[i].m), "m%zu", i);
        all[i].s = (double)laws_below(&rng, n / 4 + 1); /* plenty of equal scores */
        all[i].live = laws_below(&rng, 5) != 0;
        (all[i].live ? add : rem)(t, all[i].m, all[i].s);
    }
    qsort(all, n, sizeof(*all), ref_cmp);
    size_t k = 0;
    for (size_t i = 0; i < n; i++)
        if (all[i].live)
            live[k++] = all[i];
    free(all);
    return k;
}

static void test_range(void)
{
    enum { N = 3000 };
    crdt_obj_t *t = crdt_timeline_new(0);
    ref_ent_t *ref = calloc(N, sizeof(*ref));
    size_t nlive = build(t, N, 7, ref);
    is_int((long long)crdt_timeline_card(t), (long long)nlive, "card = live entries");
    crdt_tl_entry_t out[100];

    bool good = true;
    size_t offsets[] = {0, 1, 63, 64, 65, 500, nlive - 50, nlive - 1};
    for (size_t k = 0; k < sizeof(offsets) / sizeof(offsets[0]); k++) {
        size_t got = crdt_timeline_range(t, offsets[k], 50, out);
        size_t want = nlive - offsets[k] < 50 ? nlive - offsets[k] : 50;
        good = good && got == want;
        for (size_t i = 0; i < got; i++)
            good = good && entry_is(&out[i], &ref[offsets[k] + i]);
    }
    ok(good, "range(offset, 50) matches the reference at block edges and the end");
    is_int((long long)crdt_timeline_range(t, nlive, 10, out), 0, "range past the end is empty");

    /* blocks without tombstones are skipped into without looking at entries */
    crdt_obj_t *all_live = crdt_timeline_new(0);
    for (int i = 0; i < 500; i++) {
        char m[16];
        snprintf(m, sizeof(m), "n%d", i);
        add(all_live, m, i);
    }
    good = true;
    for (size_t off = 0; off < 520; off += 7) {
        size_t got = crdt_timeline_range(all_live, off, 3, out);
        good = good && got == (off >= 500 ? 0 : off >= 497 ? 500 - off : 3);
        for (size_t i = 0; i < got; i++)
            good = good && out[i].score == (double)(499 - off - i);
    }
    ok(good, "offset reads in a timeline without tombstones");
    crdt_obj_free(all_live);

    /* paging by offset visits every live entry exactly once, in order */
    size_t seen = 0;
    good = true;
    for (size_t off = 0;; off += 37) {
        size_t got = crdt_timeline_range(t, off, 37, out);
        for (size_t i = 0; i < got; i++)
            good = good && entry_is(&out[i], &ref[seen++]);
        if (got < 37)
            break;
    }
    ok(good && seen == nlive, "offset paging visits each live entry once (%zu of %zu)", seen,
       nlive);

    /* score-cursor paging: each page continues strictly after the last entry of the previous */
    seen = 0;
    good = true;
    crdt_tl_entry_t cursor;
    bool have = false;
    for (int pages = 0; pages < 10000; pages++) {
        size_t got = crdt_timeline_range_by_score(t, INFINITY, -INFINITY, have ? &cursor : NULL,
                                                  7, out);
        for (size_t i = 0; i < got; i++)
            good = good && seen < nlive && entry_is(&out[i], &ref[seen++]);
        if (got < 7)
            break;
        /* the cursor's bytes must outlive the page: copy them */
        static char cm[24];
        memcpy(cm, out[got - 1].member, out[got - 1].member_len);
        cursor = (crdt_tl_entry_t){cm, out[got - 1].member_len, out[got - 1].score};
        have = true;
    }
    ok(good && seen == nlive, "cursor paging visits each live entry once (%zu of %zu)", seen,
       nlive);

    /* a score window: inclusive on both ends */
    double hi = ref[100].s, lo = ref[300].s;
    size_t first = 0, last = 0;
    while (ref[first].s > hi)
        first++;
    last = first;
    while (last < nlive && ref[last].s >= lo)
        last++;
    size_t got = crdt_timeline_range_by_score(t, hi, lo, NULL, 100, out);
    good = got == (last - first < 100 ? last - first : 100);
    for (size_t i = 0; i < got; i++)
        good = good && entry_is(&out[i], &ref[first + i]);
    ok(good, "range_by_score [%g, %g] starts at the first entry <= max, both ends inclusive", lo,
       hi);
    crdt_tl_entry_t cur = {ref[first + 3].m, strlen(ref[first + 3].m), ref[first + 3].s};
    got = crdt_timeline_range_by_score(t, hi, lo, &cur, 5, out);
    ok(got == 5 && entry_is(&out[0], &ref[first + 4]), "a cursor inside the window continues after it");
    is_int((long long)crdt_timeline_range_by_score(t, 1, 2, NULL, 5, out), 0,
           "max < min gives nothing");
    is_int((long long)crdt_timeline_range_by_score(t, NAN, 0, NULL, 5, out), 0, "NaN gives nothing");
    crdt_tl_entry_t beyond = {"", 0, -1e300};
    is_int((long long)crdt_timeline_range_by_score(t, INFINITY, -INFINITY, &beyond, 5, out), 0,
           "a cursor past the oldest entry gives nothing");
    free(ref);
    crdt_obj_free(t);
}

static void test_select(void)
{
    enum { N = 400, K = 4 };
    crdt_obj_t *tl[K + 2];
    ref_ent_t *ref = calloc(N * K, sizeof(*ref));
    size_t *refsrc = calloc(N * K, sizeof(size_t));
    size_t total = 0;
    for (int k = 0; k < K; k++) {
        tl[k] = crdt_timeline_new(0);
        size_t n = build(tl[k], N, 100 + (uint64_t)k, ref + total);
        for (size_t i = 0; i < n; i++)
            refsrc[total + i] = (size_t)k;
        total += n;
    }
    tl[K] = NULL;                     /* NULL entries count as empty */
    tl[K + 1] = crdt_timeline_new(0); /* so do empty timelines */
    /* the reference: a stable sort by position keeps lower source indexes first on ties */
    for (size_t i = 1; i < total; i++) {
        ref_ent_t r = ref[i];
        size_t s = refsrc[i], j = i;
        while (j > 0 && (ref_cmp(&ref[j - 1], &r) > 0 ||
                         (ref_cmp(&ref[j - 1], &r) == 0 && refsrc[j - 1] > s))) {
            ref[j] = ref[j - 1];
            refsrc[j] = refsrc[j - 1];
            j--;
        }
        ref[j] = r;
        refsrc[j] = s;
    }
    crdt_tl_entry_t out[64];
    size_t src[64];
    bool good = true;
    size_t seen = 0;
    for (size_t off = 0; off < total + 64; off += 50) {
        size_t got =
            crdt_timeline_select((const crdt_obj_t *const *)tl, K + 2, off, 50, out, src);
        size_t want = off >= total ? 0 : (total - off < 50 ? total - off : 50);
        good = good && got == want;
        for (size_t i = 0; i < got; i++)
            good = good && entry_is(&out[i], &ref[off + i]) && src[i] == refsrc[off + i];
        seen += got;
    }
    ok(good && seen == total, "coalesced select over %d timelines matches a sorted union with "
                              "sources (%zu entries)", K, total);
    const crdt_obj_t *one[] = {NULL, tl[2]};
    size_t got = crdt_timeline_select(one, 2, 3, 10, out, src);
    crdt_tl_entry_t direct[10];
    crdt_timeline_range(tl[2], 3, 10, direct);
    good = got == 10;
    for (size_t i = 0; i < got; i++)
        good = good && src[i] == 1 && crdt_tl_entry_cmp(&out[i], &direct[i]) == 0;
    ok(good, "select over one real timeline equals its range, with the right source");
    /* an entry present in two timelines appears once per timeline */
    crdt_obj_t *x = crdt_timeline_new(0), *y = crdt_timeline_new(0);
    add(x, "same", 1e9);
    add(y, "same", 1e9);
    const crdt_obj_t *xy[] = {y, x};
    got = crdt_timeline_select(xy, 2, 0, 2, out, src);
    ok(got == 2 && src[0] == 0 && src[1] == 1, "a shared entry appears once per timeline");
    crdt_obj_free(x);
    crdt_obj_free(y);
    for (int k = 0; k < K + 2; k++)
        crdt_obj_free(tl[k]);
    free(ref);
    free(refsrc);
}

/* ---- codecs --------------------------------------------------------------------------------- */

static void put_varint(crdt_buf_t *b, uint64_t v)
{
    do {
        uint8_t c = (uint8_t)(v & 0x7F);
        v >>= 7;
        if (v)
            c |= 0x80;
        crdt_buf_append(b, &c, 1);
    } while (v);
}

static void put_double(crdt_buf_t *b, double d)
{
    uint64_t u;
    memcpy(&u, &d, 8);
    for (int i = 0; i < 8; i++) {
        uint8_t c = (uint8_t)(u >> (8 * i));
        crdt_buf_append(b, &c, 1);
    }
}

static void put_u8(crdt_buf_t *b, uint8_t v) { crdt_buf_append(b, &v, 1); }

static void put_entry(crdt_buf_t *b, double s, uint8_t flag, const char *m)
{
    put_double(b, s);
    put_u8(b, flag);
    put_varint(b, strlen(m));
    crdt_buf_append(b, m, strlen(m));
}

/* Frames a payload (version, type, length, payload, CRC) and decodes it. */
static crdt_obj_t *decode_payload(const crdt_buf_t *p, crdt_error_t *err)
{
    crdt_buf_t f = {0};
    put_u8(&f, CRDT_CODEC_VERSION);
    put_u8(&f, CRDT_TIMELINE);
    put_varint(&f, p->len);
    crdt_buf_append(&f, p->data, p->len);
    uint32_t crc = crdt_crc32c(0, f.data, f.len);
    for (int i = 0; i < 4; i++)
        put_u8(&f, (uint8_t)(crc >> (8 * i)));
    crdt_obj_t *o = crdt_obj_decode(f.data, f.len, err);
    crdt_buf_free(&f);
    return o;
}

static void expect_reject(crdt_buf_t *p, const char *why, const char *name)
{
    crdt_error_t err;
    crdt_obj_t *o = decode_payload(p, &err);
    ok(!o && err.code == CRDT_EDECODE && strstr(err.text, why), "rejects %s (\"%s\")", name,
       o ? "accepted!" : err.text);
    crdt_obj_free(o);
    crdt_buf_free(p);
}

static void test_codec(void)
{
    crdt_obj_t *t = crdt_timeline_new(2);
    add(t, "a", 1);
    rem(t, "b", 2);
    add(t, "c", 3);
    crdt_buf_t enc = {0};
    crdt_obj_encode(t, &enc);
    crdt_buf_t p = {0};
    put_varint(&p, 2);
    put_u8(&p, 1);
    put_double(&p, 1);
    put_varint(&p, 1);
    put_u8(&p, 'a');
    put_varint(&p, 2);
    put_entry(&p, 3, 1, "c");
    put_entry(&p, 2, 0, "b");
    crdt_error_t err;
    crdt_obj_t *d = decode_payload(&p, &err);
    ok(d && crdt_obj_equal(d, t), "a hand-made payload in the documented layout decodes");
    crdt_buf_t re = {0};
    if (d)
        crdt_obj_encode(d, &re);
    ok(re.len == enc.len && memcmp(re.data, enc.data, enc.len) == 0,
       "and the encoder writes exactly that layout");
    crdt_buf_free(&re);
    crdt_buf_free(&enc);
    crdt_buf_free(&p);
    crdt_obj_free(d);
    crdt_obj_free(t);

#define PAYLOAD(max, body)                                                                         \
    do {                                                                                           \
        p = (crdt_buf_t){0};                                                                       \
        put_varint(&p, max);                                                                       \
        body;                                                                                      \
    } while (0)
    PAYLOAD(0, put_u8(&p, 0); put_varint(&p, 2); put_entry(&p, 1, 1, "a"); put_entry(&p, 2, 1, "b"));
    expect_reject(&p, "order", "ascending scores");
    PAYLOAD(0, put_u8(&p, 0); put_varint(&p, 2); put_entry(&p, 1, 1, "a"); put_entry(&p, 1, 1, "b"));
    expect_reject(&p, "order", "equal scores with ascending members");
    PAYLOAD(0, put_u8(&p, 0); put_varint(&p, 2); put_entry(&p, 1, 1, "a"); put_entry(&p, 1, 0, "a"));
    expect_reject(&p, "order", "one position twice");
    PAYLOAD(0, put_u8(&p, 0); put_varint(&p, 2); put_entry(&p, 2, 1, "a"); put_entry(&p, 1, 0, "a"));
    expect_reject(&p, "twice", "a member twice");
    PAYLOAD(0, put_u8(&p, 0); put_varint(&p, 1); put_entry(&p, 2, 2, "a"));
    expect_reject(&p, "flag", "an entry flag of 2");
    PAYLOAD(0, put_u8(&p, 0); put_varint(&p, 1); put_entry(&p, NAN, 1, "a"));
    expect_reject(&p, "finite", "a NaN score");
    PAYLOAD(0, put_u8(&p, 0); put_varint(&p, 1); put_entry(&p, -0.0, 1, "a"));
    expect_reject(&p, "finite", "a -0.0 score");
    PAYLOAD(0, put_u8(&p, 0); put_varint(&p, 1); put_entry(&p, 1, 1, "a"); put_u8(&p, 0));
    expect_reject(&p, "trailing", "trailing bytes");
    PAYLOAD(1, put_u8(&p, 0); put_varint(&p, 2); put_entry(&p, 2, 1, "b"); put_entry(&p, 1, 1, "a"));
    expect_reject(&p, "out of range", "more entries than max_size");
    PAYLOAD(0, put_u8(&p, 2); put_varint(&p, 0));
    expect_reject(&p, "floor flag", "a floor flag of 2");
    PAYLOAD(0, put_u8(&p, 1); put_double(&p, 1); put_varint(&p, 0); put_varint(&p, 0));
    expect_reject(&p, "unbounded", "a floor in an unbounded timeline");
    PAYLOAD(2, put_u8(&p, 1); put_double(&p, 1); put_varint(&p, 0); put_varint(&p, 1);
            put_entry(&p, 2, 1, "a"));
    expect_reject(&p, "not full", "a floor in a timeline that is not full");
    PAYLOAD(1, put_u8(&p, 1); put_double(&p, 1); put_varint(&p, 1); put_u8(&p, 'b');
            put_varint(&p, 1); put_entry(&p, 1, 1, "a"));
    expect_reject(&p, "floor", "an entry below the floor");
    PAYLOAD(1, put_u8(&p, 1); put_double(&p, 1); put_varint(&p, 1); put_u8(&p, 'a');
            put_varint(&p, 1); put_entry(&p, 1, 1, "a"));
    expect_reject(&p, "floor", "an entry at the floor");
    PAYLOAD(0, put_u8(&p, 0); put_varint(&p, 1000000));
    expect_reject(&p, "count", "a count larger than the bytes could hold");
    PAYLOAD((uint64_t)UINT32_MAX + 1, put_u8(&p, 0); put_varint(&p, 0));
    expect_reject(&p, "max_size", "a max_size beyond 32 bits");
#undef PAYLOAD
}

/* ---- joining encodings: crdt_obj_merge_encoded(_many) ---------------------------------------- */

/* Frames a timeline payload as crdt_obj_encode would (version, type, length, payload, CRC). */
static void frame_payload(const crdt_buf_t *p, crdt_buf_t *f)
{
    put_u8(f, CRDT_CODEC_VERSION);
    put_u8(f, CRDT_TIMELINE);
    put_varint(f, p->len);
    crdt_buf_append(f, p->data, p->len);
    uint32_t crc = crdt_crc32c(0, f->data, f->len);
    for (int i = 0; i < 4; i++)
        put_u8(f, (uint8_t)(crc >> (8 * i)));
}

static bool same_bytes(const crdt_obj_t *a, const crdt_obj_t *b)
{
    crdt_buf_t x = {0}, y = {0};
    crdt_obj_encode(a, &x);
    crdt_obj_encode(b, &y);
    bool same = x.len == y.len && memcmp(x.data, y.data, x.len) == 0;
    crdt_buf_free(&x);
    crdt_buf_free(&y);
    return same;
}

/* One random encoding to join: mostly a mutator's one-entry delta (adds and removes over few
 * members and scores, so ties and moves are common), sometimes a delta of several entries, a
 * bounded state with a floor, or a large unbounded one (the paths that decode whole). */
static void random_encoding(laws_rng_t *rng, crdt_buf_t *out)
{
    uint64_t kind = laws_below(rng, 20);
    crdt_obj_t *o = crdt_timeline_new(kind == 0 ? 1 + (uint32_t)laws_below(rng, 6) : 0);
    size_t n = kind == 0 ? 12 : kind == 1 ? 2 + laws_below(rng, 8) : kind == 2 ? 40 : 1;
    for (size_t i = 0; i < n; i++) {
        char m[8];
        snprintf(m, sizeof(m), "m%u", (unsigned)laws_below(rng, 24));
        double sc = (double)laws_below(rng, 12);
        if (laws_below(rng, 4) == 0)
            crdt_timeline_remove(o, m, strlen(m), sc, NULL);
        else
            crdt_timeline_add(o, m, strlen(m), sc, NULL);
    }
    crdt_obj_encode(o, out);
    crdt_obj_free(o);
}

static void test_merge_encoded_equals_merge(void)
{
    laws_rng_t rng = {laws_seed() ^ 0x6d65726765ull};
    int mismatches = 0, changed_mismatch = 0, cases = 400;
    for (int c = 0; c < cases; c++) {
        /* dst: empty, small, or bounded and full with a floor */
        uint32_t bound =
            (uint32_t)laws_below(&rng, 3) == 0 ? 0 : 1 + (uint32_t)laws_below(&rng, 10);
        crdt_obj_t *dst = crdt_timeline_new(bound);
        for (uint64_t i = laws_below(&rng, 30); i > 0; i--) {
            char m[8];
            snprintf(m, sizeof(m), "m%u", (unsigned)laws_below(&rng, 24));
            crdt_timeline_add(dst, m, strlen(m), (double)laws_below(&rng, 12), NULL);
        }
        size_t n = 1 + laws_below(&rng, c % 4 == 0 ? 200 : 20);
        crdt_buf_t *bufs = calloc(n, sizeof(*bufs));
        crdt_bytes_t *encs = calloc(n, sizeof(*encs));
        for (size_t i = 0; i < n; i++) {
            random_encoding(&rng, &bufs[i]);
            encs[i] = (crdt_bytes_t){bufs[i].data, bufs[i].len};
        }
        /* the reference: decode each, merge each, in order */
        crdt_obj_t *ref = crdt_obj_clone(dst);
        int ref_changed = 0;
        for (size_t i = 0; i < n; i++) {
            crdt_obj_t *d = crdt_obj_decode(encs[i].data, encs[i].len, NULL);
            ref_changed |= crdt_obj_merge(ref, d);
            crdt_obj_free(d);
        }
        crdt_obj_t *many = crdt_obj_clone(dst);
        crdt_error_t err;
        size_t failed = 99;
        int rc = crdt_obj_merge_encoded_many(many, encs, n, &failed, &err);
        crdt_obj_t *one = crdt_obj_clone(dst);
        int one_changed = 0;
        for (size_t i = 0; i < n; i++)
            one_changed |= crdt_obj_merge_encoded(one, encs[i].data, encs[i].len, NULL);
        if (!same_bytes(ref, many) || !same_bytes(ref, one) || rc < 0) {
            if (!mismatches++)
                diag("case %d: ref %s", c, show(ref));
        }
        if (rc != ref_changed || one_changed != ref_changed)
            changed_mismatch++;
        for (size_t i = 0; i < n; i++)
            crdt_buf_free(&bufs[i]);
        free(bufs);
        free(encs);
        crdt_obj_free(ref);
        crdt_obj_free(many);
        crdt_obj_free(one);
        crdt_obj_free(dst);
    }
    is_int(mismatches, 0, "merge_encoded(_many) gives the bytes of decode + merge (%d cases)",
           cases);
    is_int(changed_mismatch, 0, "and the same changed flag");

    /* a feed replayed oldest first, newest first and shuffled: one result */
    crdt_obj_t *a = crdt_timeline_new(50), *b = crdt_timeline_new(50), *r = crdt_timeline_new(50);
    crdt_buf_t bufs[300] = {{0}};
    crdt_bytes_t fwd[300], rev[300];
    for (int i = 0; i < 300; i++) {
        crdt_obj_t *d = NULL;
        char m[16];
        snprintf(m, sizeof(m), "item:%d", (int)laws_below(&rng, 120));
        crdt_obj_t *tmp = crdt_timeline_new(0);
        crdt_timeline_add(tmp, m, strlen(m), i + 0.5, &d);
        crdt_obj_encode(d, &bufs[i]);
        crdt_obj_merge(r, d);
        crdt_obj_free(d);
        crdt_obj_free(tmp);
        fwd[i] = (crdt_bytes_t){bufs[i].data, bufs[i].len};
        rev[299 - i] = fwd[i];
    }
    is_int(crdt_obj_merge_encoded_many(a, fwd, 300, NULL, NULL), 1, "a feed oldest first joins");
    is_int(crdt_obj_merge_encoded_many(b, rev, 300, NULL, NULL), 1, "and newest first");
    ok(same_bytes(a, r) && same_bytes(b, r), "both equal merging one by one (%s)",
       crdt_timeline_card(r) == 50 ? "bounded, with a floor" : "?");
    is_int(crdt_obj_merge_encoded_many(a, rev, 300, NULL, NULL), 0, "joining it again: no change");
    for (int i = 0; i < 300; i++)
        crdt_buf_free(&bufs[i]);
    crdt_obj_free(a);
    crdt_obj_free(b);
    crdt_obj_free(r);
}

/* Whatever the bytes, merge_encoded accepts exactly what crdt_obj_decode accepts, and a rejected
 * batch leaves dst as it was. */
static void test_merge_encoded_rejects(void)
{
    crdt_obj_t *dst = crdt_timeline_new(4);
    add(dst, "a", 1), add(dst, "b", 2), add(dst, "c", 3), add(dst, "d", 4), add(dst, "e", 5);
    crdt_buf_t before = {0};
    crdt_obj_encode(dst, &before);
    crdt_obj_t *d = NULL, *tmp = crdt_timeline_new(0);
    crdt_timeline_add(tmp, "zz", 2, 9, &d);
    crdt_buf_t good = {0};
    crdt_obj_encode(d, &good);
    crdt_obj_free(d);
    crdt_obj_free(tmp);
    laws_rng_t rng = {laws_seed() ^ 0x636f7272ull};
    int disagree = 0, touched = 0, bad_index = 0, tries = 3000;
    uint8_t buf[64];
    for (int t = 0; t < tries; t++) {
        size_t len = good.len;
        memcpy(buf, good.data, len);
        int how = (int)laws_below(&rng, 3);
        if (how == 0) {
            len = laws_below(&rng, good.len); /* truncated */
        } else {
            for (int k = 1 + (int)laws_below(&rng, 3); k > 0; k--)
                buf[laws_below(&rng, len)] ^= (uint8_t)(1 + laws_below(&rng, 255));
            if (how == 2 && len > 4) { /* a valid checksum over damaged content */
                uint32_t crc = crdt_crc32c(0, buf, len - 4);
                for (int i = 0; i < 4; i++)
                    buf[len - 4 + (size_t)i] = (uint8_t)(crc >> (8 * i));
            }
        }
        crdt_error_t derr, merr;
        crdt_obj_t *o = crdt_obj_decode(buf, len, &derr);
        crdt_obj_t *copy = crdt_obj_clone(dst);
        crdt_bytes_t encs[3] = {{good.data, good.len}, {buf, len}, {good.data, good.len}};
        size_t failed = 99;
        int rc = crdt_obj_merge_encoded_many(copy, encs, 3, &failed, &merr);
        bool accepted = o && crdt_obj_type(o) == CRDT_TIMELINE;
        if (accepted != (rc >= 0))
            disagree++;
        if (rc < 0) {
            crdt_buf_t after = {0};
            crdt_obj_encode(copy, &after);
            if (after.len != before.len || memcmp(after.data, before.data, after.len) != 0)
                touched++;
            crdt_buf_free(&after);
            if (failed != 1 || !merr.text[0] || (rc != CRDT_EDECODE && rc != CRDT_ETYPE))
                bad_index++;
        }
        crdt_obj_free(o);
        crdt_obj_free(copy);
    }
    is_int(disagree, 0, "damaged encodings: merge_encoded accepts exactly what decode accepts");
    is_int(touched, 0, "a rejected batch leaves dst unchanged");
    is_int(bad_index, 0, "and says which encoding was bad, with a message");

    /* hand-made payloads the decoder rejects, in the shapes the fast path reads itself */
    crdt_buf_t p = {0}, f = {0};
    crdt_error_t err;
    put_varint(&p, 0), put_u8(&p, 0), put_varint(&p, 2);
    put_entry(&p, 5, 1, "x"), put_entry(&p, 4, 1, "x");
    frame_payload(&p, &f);
    is_int(crdt_obj_merge_encoded(dst, f.data, f.len, &err), CRDT_EDECODE,
           "a member twice: rejected");
    ok(strstr(err.text, "member appears twice") != NULL, "saying so (%s)", err.text);
    p.len = f.len = 0;
    put_varint(&p, 0), put_u8(&p, 0), put_varint(&p, 2);
    put_entry(&p, 4, 1, "x"), put_entry(&p, 5, 1, "y");
    frame_payload(&p, &f);
    is_int(crdt_obj_merge_encoded(dst, f.data, f.len, &err), CRDT_EDECODE,
           "entries out of order: rejected");
    ok(strstr(err.text, "strictly decreasing") != NULL, "saying so (%s)", err.text);
    p.len = f.len = 0;
    put_varint(&p, 0), put_u8(&p, 0), put_varint(&p, 1);
    put_entry(&p, 4, 2, "x");
    frame_payload(&p, &f);
    is_int(crdt_obj_merge_encoded(dst, f.data, f.len, &err), CRDT_EDECODE, "flag 2: rejected");
    p.len = f.len = 0;
    put_varint(&p, 0), put_u8(&p, 0), put_varint(&p, 1);
    put_entry(&p, -0.0, 1, "x");
    frame_payload(&p, &f);
    is_int(crdt_obj_merge_encoded(dst, f.data, f.len, &err), CRDT_EDECODE, "-0.0: rejected");
    p.len = f.len = 0;
    put_varint(&p, 0), put_u8(&p, 0), put_varint(&p, 1);
    put_entry(&p, 4, 1, "x");
    put_u8(&p, 0);
    frame_payload(&p, &f);
    is_int(crdt_obj_merge_encoded(dst, f.data, f.len, &err), CRDT_EDECODE,
           "trailing byte: rejected");
    crdt_buf_t after = {0};
    crdt_obj_encode(dst, &after);
    ok(after.len == before.len && memcmp(after.data, before.data, after.len) == 0,
       "dst unchanged by all of them");
    crdt_buf_free(&after);

    crdt_obj_t *counter = crdt_obj_new(CRDT_GCOUNTER);
    crdt_gcounter_incr(counter, 1, 3, NULL);
    crdt_buf_t cb = {0};
    crdt_obj_encode(counter, &cb);
    is_int(crdt_obj_merge_encoded(dst, cb.data, cb.len, &err), CRDT_ETYPE,
           "a counter's encoding: CRDT_ETYPE");
    crdt_obj_t *c2 = crdt_obj_new(CRDT_GCOUNTER);
    is_int(crdt_obj_merge_encoded(c2, cb.data, cb.len, &err), 1,
           "which joins a counter (generic path)");
    ok(crdt_obj_equal(c2, counter), "into the same state");
    is_int(crdt_obj_merge_encoded(c2, good.data, good.len, &err), CRDT_ETYPE,
           "and a timeline's does not");
    is_int(crdt_obj_merge_encoded(dst, NULL, 5, &err), CRDT_EDECODE, "NULL bytes: rejected");
    is_int(crdt_obj_merge_encoded_many(NULL, NULL, 0, NULL, NULL), CRDT_EINVAL,
           "no dst: CRDT_EINVAL");
    is_int(crdt_obj_merge_encoded_many(dst, NULL, 0, NULL, NULL), 0, "nothing to join: 0");
    crdt_buf_free(&cb);
    crdt_obj_free(counter);
    crdt_obj_free(c2);
    crdt_buf_free(&p);
    crdt_buf_free(&f);
    crdt_buf_free(&good);
    crdt_buf_free(&before);
    crdt_obj_free(dst);
}

static crdt_obj_t *from_text(const char *text, crdt_error_t *err)
{
    json_t *j = json_loads(text, 0, NULL);
    crdt_obj_t *o = j ? crdt_obj_from_json(j, err) : NULL;
    json_decref(j);
    return o;
}

static void test_json(void)
{
    crdt_obj_t *t = crdt_timeline_new(2);
    add(t, "a", 1);
    rem(t, "b", 2.25);
    add(t, "c", 1234.5);
    json_t *j = crdt_obj_to_json(t);
    char *s = json_dumps(j, JSON_COMPACT | JSON_SORT_KEYS);
    is(s,
       "{\"state\":{\"entries\":[{\"live\":true,\"member\":\"c\",\"score\":1234.5},"
       "{\"live\":false,\"member\":\"b\",\"score\":2.25}],\"floor\":{\"member\":\"a\","
       "\"score\":1.0},\"max_size\":2},\"type\":\"timeline\"}",
       "JSON form as documented");
    crdt_error_t err;
    crdt_obj_t *back = from_text(s, &err);
    ok(back && crdt_obj_equal(back, t), "and it reads back");
    crdt_obj_free(back);
    free(s);
    json_decref(j);
    crdt_obj_free(t);

    struct {
        const char *text, *why;
    } bad[] = {
        {"{\"type\":\"timeline\",\"state\":{\"max_size\":0,\"entries\":[]}}", "floor"},
        {"{\"type\":\"timeline\",\"state\":{\"max_size\":-1,\"floor\":null,\"entries\":[]}}",
         "max_size"},
        {"{\"type\":\"timeline\",\"state\":{\"max_size\":0,\"floor\":null,\"entries\":[],"
         "\"x\":1}}",
         "unexpected"},
        {"{\"type\":\"timeline\",\"state\":{\"max_size\":0,\"floor\":null,\"entries\":"
         "[{\"member\":\"a\",\"score\":1,\"live\":1}]}}",
         "entries[0].live"},
        {"{\"type\":\"timeline\",\"state\":{\"max_size\":0,\"floor\":null,\"entries\":"
         "[{\"member\":\"a\",\"score\":1,\"live\":true},"
         "{\"member\":\"b\",\"score\":2,\"live\":true}]}}",
         "entries[1]: entries not in strictly decreasing"},
        {"{\"type\":\"timeline\",\"state\":{\"max_size\":0,\"floor\":null,\"entries\":"
         "[{\"member\":{\"base64\":\"!!\"},\"score\":1,\"live\":true}]}}",
         "entries[0].member"},
        {"{\"type\":\"timeline\",\"state\":{\"max_size\":0,\"floor\":null,\"entries\":"
         "[{\"member\":\"a\",\"score\":\"1\",\"live\":true}]}}",
         "entries[0].score"},
        {"{\"type\":\"timeline\",\"state\":{\"max_size\":1,\"floor\":{\"member\":\"b\","
         "\"score\":5},\"entries\":[{\"member\":\"a\",\"score\":5,\"live\":true}]}}",
         "entries[0]: entry at or below the floor"},
        {"{\"type\":\"timeline\",\"state\":{\"max_size\":0,\"floor\":{\"member\":\"a\","
         "\"score\":5},\"entries\":[]}}",
         "floor: floor in an unbounded"},
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        crdt_obj_t *o = from_text(bad[i].text, &err);
        ok(!o && err.code == CRDT_EDECODE && strstr(err.text, bad[i].why),
           "JSON rejected with a message naming \"%s\" (\"%s\")", bad[i].why,
           o ? "accepted!" : err.text);
        crdt_obj_free(o);
    }
}

/* ---- laws ----------------------------------------------------------------------------------- */

static crdt_obj_t *create_bounded(void) { return crdt_timeline_new(6); }
static crdt_obj_t *create_unbounded(void) { return crdt_timeline_new(0); }

/* One random add or remove over 12 members of varied lengths and scores 0..9 (with an occasional
 * half step), so ties, doomstones and trimming all happen. Now and then, on bounded timelines, a
 * join with an empty timeline of a smaller bound: lowering the bound is a lattice step too, and
 * the empty timeline is its delta. */
static crdt_obj_t *mutate(laws_rng_t *rng, crdt_obj_t *state, uint64_t replica, crdt_hlc_t *clock,
                          uint64_t now_ms)
{
    (void)replica;
    (void)clock;
    (void)now_ms;
    static const char *const members[] = {"", "a", "b", "ab", "ba", "c", "cc", "d", "e\0x", "f",
                                          "zz", "\xff"};
    static const size_t lens[] = {0, 1, 1, 2, 2, 1, 2, 1, 3, 1, 2, 1};
    size_t i = (size_t)laws_below(rng, 12);
    double s = (double)laws_below(rng, 10);
    if (laws_below(rng, 8) == 0)
        s += 0.5;
    crdt_obj_t *d = NULL;
    if (crdt_timeline_max_size(state) && laws_below(rng, 25) == 0) {
        d = crdt_timeline_new(2 + (uint32_t)laws_below(rng, 5));
        if (crdt_obj_merge(state, d) != 1) {
            crdt_obj_free(d);
            d = NULL;
        }
        return d;
    }
    if (laws_below(rng, 16) == 0) {
        crdt_mut_t m = {.type = CRDT_TIMELINE, .kind = CRDT_MUT_DELETE};
        crdt_mut_apply(state, &m, replica, &d);
    } else if (laws_below(rng, 3) == 0)
        crdt_timeline_remove(state, members[i], lens[i], s, &d);
    else
        crdt_timeline_add(state, members[i], lens[i], s, &d);
    return d;
}

static bool same_encoding(const crdt_obj_t *a, const crdt_obj_t *b)
{
    crdt_buf_t x = {0}, y = {0};
    bool same = crdt_obj_encode(a, &x) == 0 && crdt_obj_encode(b, &y) == 0 && x.len == y.len &&
                !memcmp(x.data, y.data, x.len);
    crdt_buf_free(&x);
    crdt_buf_free(&y);
    return same;
}

/* crdt_timeline_add_into / _remove_into: the same results, states and deltas as the writes that
 * make a new delta each, over a bounded timeline (drops, floor), ties, removes, repeats, members
 * borrowed from the timeline itself and from the delta; the reused delta never grows. */
static void test_write_into(void)
{
    crdt_obj_t *a = crdt_timeline_new(20), *b = crdt_timeline_new(20);
    crdt_obj_t *into = crdt_timeline_new(7); /* a bound of its own: emptied and unbounded */
    uint64_t x = 0x853c49e6748fea9bull;
    size_t diff = 0, changed = 0;
    for (int i = 0; i < 5000; i++) {
        x ^= x << 13, x ^= x >> 7, x ^= x << 17;
        char m[16];
        int n = snprintf(m, sizeof(m), "m%u", (unsigned)(x % 60));
        const void *mp = m;
        size_t ml = (size_t)n;
        crdt_tl_entry_t e[1];
        if (i % 7 == 0 && crdt_timeline_range(b, 0, 1, e) == 1) /* a member inside b's store */
            mp = e[0].member, ml = e[0].member_len;
        double score = (double)(i / 8 + (x >> 40) % 8) + (i % 3 ? 0 : 0.5); /* rising: drops */
        bool add = (x >> 20) % 4 != 0;
        crdt_obj_t *d = NULL;
        int ra = add ? crdt_timeline_add(a, mp, ml, score, &d)
                     : crdt_timeline_remove(a, mp, ml, score, &d);
        int rb = add ? crdt_timeline_add_into(b, mp, ml, score, into)
                     : crdt_timeline_remove_into(b, mp, ml, score, into);
        diff += ra != rb || !same_encoding(a, b) || (ra == 1 && !same_encoding(d, into));
        changed += ra == 1;
        crdt_obj_free(d);
        /* a member inside the delta's own store (a live entry: a remove's delta has none) */
        if (i % 11 == 0 && rb == 1 && crdt_timeline_range(into, 0, 1, e) == 1) {
            ra = crdt_timeline_add(a, e[0].member, e[0].member_len, score + 1, &d);
            rb = crdt_timeline_add_into(b, e[0].member, e[0].member_len, score + 1, into);
            diff += ra != rb || !same_encoding(a, b) || (ra == 1 && !same_encoding(d, into));
            crdt_obj_free(d);
        }
    }
    ok(!diff && changed > 1000, "write_into: 5000 writes give the results, states and deltas of "
                                "the allocating writes (%zu differ, %zu changed)", diff, changed);
    crdt_stats_t st;
    crdt_obj_stats(into, &st);
    ok(st.memory < 1024, "write_into: the reused delta stays small (%zu bytes)", st.memory);
    is_int(crdt_timeline_add_into(a, "m", 1, 1, a), CRDT_EINVAL, "write_into: delta is not t");
    crdt_obj_t *c = crdt_obj_new(CRDT_PNCOUNTER);
    is_int(crdt_timeline_add_into(a, "m", 1, 1, c), CRDT_EINVAL, "write_into: delta a timeline");
    is_int(crdt_timeline_add_into(c, "m", 1, 1, into), CRDT_ETYPE, "write_into: t a timeline");
    crdt_obj_free(c);
    crdt_obj_free(a);
    crdt_obj_free(b);
    crdt_obj_free(into);
}

int main(void)
{
    test_write_rules();
    test_ties_and_doomstones();
    test_bad_arguments();
    test_trimming();
    test_order_independence();
    test_merge_bounds();
    test_merge_large();
    test_block_upkeep();
    test_small_memory();
    test_range();
    test_select();
    test_codec();
    test_merge_encoded_equals_merge();
    test_merge_encoded_rejects();
    test_json();
    test_write_into();
    const char *env = getenv("CRDT_LAW_CASES");
    int cases = env ? atoi(env) : 3000;
    laws_type_t bounded = {"timeline(6)", create_bounded, mutate};
    laws_type_t unbounded = {"timeline", create_unbounded, mutate};
    laws_run(&bounded, cases);
    laws_run(&unbounded, cases);
    return done_testing();
}
