/* test_orset.c - add-wins OR-Set: semantics, causal-context compaction, codecs and the laws */
#include "tap.h"
#include "codec_check.h"

#include "laws.h" /* after tap.h: it reports through it */

#include "crdt.h"
#include "crdt_json.h"
#include "crdt_private.h" /* crdt__orset_contains/size/foreach: the queries behind crdt_set_* */

/* the shared decoder checks of codec_check.h, under this file's names */
#define frame(p, n, out) codec_frame(CRDT_ORSET, p, n, out)

#define S(str) (str), strlen(str)

static crdt_obj_t *new_set(void)
{
    return crdt_obj_new(CRDT_ORSET);
}

static int has(const crdt_obj_t *s, const char *m)
{
    return crdt__orset_contains(s, S(m));
}

static int add(crdt_obj_t *s, uint64_t r, const char *m, crdt_obj_t **delta)
{
    return crdt_orset_add(s, r, S(m), delta);
}

static int rm(crdt_obj_t *s, const char *m, crdt_obj_t **delta)
{
    return crdt_orset_remove(s, S(m), delta);
}

static size_t encoded_len(const crdt_obj_t *o)
{
    crdt_buf_t b = {0};
    size_t n = crdt_obj_encode(o, &b) == 0 ? b.len : 0;
    crdt_buf_free(&b);
    return n;
}

/* The JSON "state" member as compact text (caller frees). */
static char *state_text(const crdt_obj_t *o)
{
    json_t *j = crdt_obj_to_json(o);
    char *s =
        j ? json_dumps(json_object_get(j, "state"), JSON_COMPACT | JSON_PRESERVE_ORDER) : NULL;
    json_decref(j);
    return s;
}

static void is_state(const crdt_obj_t *o, const char *want, const char *name)
{
    char *got = state_text(o);
    is(got, want, "%s", name);
    free(got);
}

/* ---- basics --------------------------------------------------------------------------------- */

typedef struct collect {
    char out[256];
    int stop_at;
    int calls;
} collect_t;

static int collect_cb(const void *m, size_t len, void *ud)
{
    collect_t *c = ud;
    c->calls++;
    strncat(c->out, (const char *)m, len);
    strcat(c->out, ",");
    return c->calls == c->stop_at ? 7 : 0;
}

static void test_basics(void)
{
    crdt_obj_t *s = new_set(), *d = NULL;
    ok(s && crdt_obj_type(s) == CRDT_ORSET, "new OR-Set");
    ok(crdt_obj_is_empty(s), "a new set is bottom");
    is_int(crdt__orset_size(s), 0, "size 0");
    is_int(has(s, "a"), 0, "contains nothing");

    is_int(add(s, 1, "c", &d), 1, "add c changes the state");
    ok(d != NULL, "add gives a delta");
    crdt_obj_free(d);
    is_int(add(s, 1, "a", NULL), 1, "add a");
    is_int(add(s, 2, "b", NULL), 1, "add b from another replica");
    is_int(add(s, 1, "a", NULL), 1, "re-adding a present member still makes a new dot");
    is_int(crdt__orset_size(s), 3, "size 3");
    ok(has(s, "a") && has(s, "b") && has(s, "c") && !has(s, "d"), "contains a b c, not d");
    ok(!crdt_obj_is_empty(s), "no longer bottom");

    /* the public queries dispatch to these */
    is_int(crdt_set_contains(s, S("b")), 1, "crdt_set_contains sees b");
    is_int(crdt_set_contains(s, S("d")), 0, "crdt_set_contains: d absent");
    is_int(crdt_set_size(s), 3, "crdt_set_size 3");
    collect_t pc = {.stop_at = 0};
    is_int(crdt_set_foreach(s, collect_cb, &pc), 0, "crdt_set_foreach");
    is(pc.out, "a,b,c,", "crdt_set_foreach in order");

    collect_t c = {.stop_at = 0};
    is_int(crdt__orset_foreach(s, collect_cb, &c), 0, "foreach returns 0");
    is(c.out, "a,b,c,", "foreach in ascending bytewise order");
    collect_t c2 = {.stop_at = 2};
    is_int(crdt__orset_foreach(s, collect_cb, &c2), 7, "foreach stops with the callback's value");
    is_int(c2.calls, 2, "after two calls");

    d = (crdt_obj_t *)1;
    is_int(rm(s, "a", &d), 1, "remove a");
    ok(d != NULL, "remove gives a delta");
    crdt_obj_free(d);
    is_int(has(s, "a"), 0, "a is gone");
    is_int(crdt__orset_size(s), 2, "size 2");
    d = (crdt_obj_t *)1;
    is_int(rm(s, "a", &d), 0, "removing it again is a no-op");
    ok(d == NULL, "and gives no delta");
    is_int(rm(s, "zz", NULL), 0, "removing a never-added member is a no-op");
    is_int(add(s, 3, "", NULL), 1, "the empty member is a member like any other");
    ok(has(s, ""), "contains the empty member");
    is_int(crdt__orset_size(s), 3, "size 3 again");

    /* dots: c (1,1), a (1,2), b (2,1), a again (1,3) superseding (1,2), "" (3,1) */
    is_state(
        s,
        "{\"vv\":[{\"replica\":1,\"seq\":3},{\"replica\":2,\"seq\":1},{\"replica\":3,\"seq\":1}"
        "],\"cloud\":[],\"elements\":[{\"member\":\"\",\"dots\":[{\"replica\":3,\"seq\":1}]},"
        "{\"member\":\"b\",\"dots\":[{\"replica\":2,\"seq\":1}]},{\"member\":\"c\","
        "\"dots\":[{\"replica\":1,\"seq\":1}]}]}",
        "JSON state: vv holds every dot seen, removed a leaves no trace but its dots");

    crdt_stats_t st;
    crdt_obj_stats(s, &st);
    is_int(st.entries, 3, "stats: 3 live entries");
    is_int(st.tombstones, 0, "stats: no tombstones");
    cmp_ok(st.memory, ">", 0, "stats: memory counted");

    char big = 'x';
    is_int(crdt_orset_add(s, 0, &big, 1, NULL), CRDT_EINVAL, "replica 0 rejected");
    is_int(crdt_orset_add(s, CRDT_REPLICA_MAX + 1, &big, 1, NULL), CRDT_EINVAL,
           "replica above CRDT_REPLICA_MAX rejected");
    is_int(crdt_orset_add(s, CRDT_REPLICA_MAX, &big, 1, NULL), 1, "replica CRDT_REPLICA_MAX ok");
    is_int(crdt_orset_add(s, 1, &big, (size_t)CRDT_MAX_BLOB + 1, NULL), CRDT_EINVAL,
           "member over CRDT_MAX_BLOB rejected");
    is_int(crdt_orset_remove(s, &big, (size_t)CRDT_MAX_BLOB + 1, NULL), CRDT_EINVAL,
           "remove of an oversized member rejected");
    crdt_obj_free(s);
}

/* ---- semantics ------------------------------------------------------------------------------ */

static void test_add_wins(void)
{
    crdt_obj_t *a = new_set(), *b = new_set();
    add(a, 1, "x", NULL);
    crdt_obj_merge(b, a);
    ok(has(b, "x"), "B sees x after the merge");

    /* concurrently: A removes x, B re-adds it */
    crdt_obj_t *da = NULL, *db = NULL;
    is_int(rm(a, "x", &da), 1, "A removes x");
    is_int(add(b, 2, "x", &db), 1, "B re-adds x");
    ok(!has(a, "x") && has(b, "x"), "before exchange: A without, B with");

    crdt_obj_t *a2 = crdt_obj_clone(a), *b2 = crdt_obj_clone(b);
    is_int(crdt_obj_merge(a, b), 1, "A merges B's state");
    is_int(crdt_obj_merge(b, a2), 0, "B merging A's remove changes nothing: B saw that dot");
    ok(has(a, "x") && has(b, "x"), "add wins: both see x");
    ok(crdt_obj_equal(a, b), "and the states are equal");

    /* the same through the deltas alone */
    crdt_obj_merge(a2, db);
    crdt_obj_merge(b2, da);
    ok(has(a2, "x") && has(b2, "x") && crdt_obj_equal(a2, b2), "delta exchange: add wins too");
    ok(crdt_obj_equal(a2, a), "and agrees with the state exchange");
    crdt_obj_free(da);
    crdt_obj_free(db);
    crdt_obj_free(a);
    crdt_obj_free(b);
    crdt_obj_free(a2);
    crdt_obj_free(b2);
}

static void test_observed_remove(void)
{
    crdt_obj_t *a = new_set(), *b = new_set();
    add(a, 1, "x", NULL);
    add(b, 2, "x", NULL); /* B's add A has not seen */
    rm(a, "x", NULL);     /* removes only (1,1) */
    crdt_obj_merge(a, b);
    ok(has(a, "x"), "A's remove did not touch B's unseen add");
    crdt_obj_merge(b, a);
    ok(has(b, "x") && crdt_obj_equal(a, b), "B keeps x, states agree");
    is_state(a,
             "{\"vv\":[{\"replica\":1,\"seq\":1},{\"replica\":2,\"seq\":1}],\"cloud\":[],"
             "\"elements\":[{\"member\":\"x\",\"dots\":[{\"replica\":2,\"seq\":1}]}]}",
             "only B's dot is left");

    /* concurrent adds give one member two dots; a remove that saw both removes it everywhere */
    crdt_obj_t *c = new_set(), *e = new_set();
    add(c, 1, "y", NULL);
    add(e, 2, "y", NULL);
    crdt_obj_merge(c, e);
    crdt_obj_merge(e, c);
    is_state(c,
             "{\"vv\":[{\"replica\":1,\"seq\":1},{\"replica\":2,\"seq\":1}],\"cloud\":[],"
             "\"elements\":[{\"member\":\"y\",\"dots\":[{\"replica\":1,\"seq\":1},"
             "{\"replica\":2,\"seq\":1}]}]}",
             "two concurrent adds: two dots on one member");
    crdt_obj_t *d = NULL;
    rm(c, "y", &d);
    is_int(crdt_obj_merge(e, d), 1, "the remove delta applies");
    ok(!has(c, "y") && !has(e, "y") && crdt_obj_equal(c, e), "a remove that saw both dots wins");
    /* a later add supersedes both dots at once */
    crdt_obj_t *f = new_set(), *g = new_set();
    add(f, 1, "z", NULL);
    add(g, 2, "z", NULL);
    crdt_obj_merge(f, g);
    crdt_obj_t *dz = NULL;
    add(f, 3, "z", &dz);
    is_state(dz,
             "{\"vv\":[{\"replica\":1,\"seq\":1},{\"replica\":2,\"seq\":1},{\"replica\":3,"
             "\"seq\":1}],\"cloud\":[],\"elements\":[{\"member\":\"z\",\"dots\":[{\"replica\""
             ":3,\"seq\":1}]}]}",
             "add delta: the new dot, and the dots it supersedes in its context");
    crdt_obj_merge(g, dz);
    ok(crdt_obj_equal(f, g), "the add delta replaces both old dots at the other replica");
    crdt_obj_free(dz);

    /* three concurrent adds; a replica that saw and removed one of them gets the other two */
    crdt_obj_t *p = new_set(), *q = new_set(), *r3 = new_set(), *seen = new_set();
    add(p, 1, "w", NULL);
    crdt_obj_merge(seen, p);
    add(q, 2, "w", NULL);
    add(r3, 3, "w", NULL);
    crdt_obj_merge(p, q);
    crdt_obj_merge(p, r3); /* p: w {(1,1),(2,1),(3,1)} */
    crdt_obj_t *keep = crdt_obj_clone(seen);
    rm(seen, "w", NULL);
    is_int(crdt_obj_merge(seen, p), 1, "merge into a replica that removed one of three dots");
    is_state(seen,
             "{\"vv\":[{\"replica\":1,\"seq\":1},{\"replica\":2,\"seq\":1},{\"replica\":3,\"seq\""
             ":1}],\"cloud\":[],\"elements\":[{\"member\":\"w\",\"dots\":[{\"replica\":2,"
             "\"seq\":1},{\"replica\":3,\"seq\":1}]}]}",
             "it keeps the two dots it never saw");
    is_int(crdt_obj_merge(keep, p), 1, "merge into a replica holding one of the three dots");
    ok(crdt_obj_equal(keep, p), "it ends with all three");
    crdt_obj_merge(p, seen);
    crdt_obj_merge(keep, seen);
    ok(crdt_obj_equal(keep, p) && crdt_obj_equal(p, seen), "all three converge");
    crdt_obj_free(p);
    crdt_obj_free(q);
    crdt_obj_free(r3);
    crdt_obj_free(seen);
    crdt_obj_free(keep);
    crdt_obj_free(f);
    crdt_obj_free(g);
    crdt_obj_free(d);
    crdt_obj_free(a);
    crdt_obj_free(b);
    crdt_obj_free(c);
    crdt_obj_free(e);
}

static void test_readd(void)
{
    crdt_obj_t *a = new_set(), *b = new_set();
    add(a, 1, "x", NULL);
    crdt_obj_merge(b, a);
    rm(a, "x", NULL);
    ok(!has(a, "x"), "removed");
    is_int(add(a, 1, "x", NULL), 1, "re-added");
    ok(has(a, "x"), "present again");
    crdt_obj_merge(b, a);
    ok(has(b, "x"), "a replica that saw the first add sees the re-add");
    rm(b, "x", NULL);
    crdt_obj_merge(a, b);
    ok(!has(a, "x"), "and a remove after it removes it");

    /* idempotence */
    crdt_obj_t *c = crdt_obj_clone(a);
    is_int(crdt_obj_merge(a, c), 0, "merging an equal state reports no change");
    is_int(crdt_obj_merge(a, a), 0, "merging itself reports no change");
    ok(crdt_obj_equal(a, c), "and changes nothing");
    crdt_obj_t *e = new_set();
    is_int(crdt_obj_merge(a, e), 0, "merging bottom changes nothing");
    is_int(crdt_obj_merge(e, a), 1, "merging into bottom does");
    ok(crdt_obj_equal(a, e), "bottom + a == a");
    crdt_obj_free(a);
    crdt_obj_free(b);
    crdt_obj_free(c);
    crdt_obj_free(e);
}

static void test_compaction(void)
{
    crdt_obj_t *a = new_set(), *d[4] = {0};
    const char *names[4] = {"p", "q", "r", "s"};
    for (int i = 0; i < 4; i++)
        add(a, 7, names[i], &d[i]);

    crdt_obj_t *b = new_set();
    crdt_obj_merge(b, d[3]);
    crdt_obj_merge(b, d[1]);
    is_state(b,
             "{\"vv\":[],\"cloud\":[{\"replica\":7,\"seq\":2},{\"replica\":7,\"seq\":4}],"
             "\"elements\":[{\"member\":\"q\",\"dots\":[{\"replica\":7,\"seq\":2}]},"
             "{\"member\":\"s\",\"dots\":[{\"replica\":7,\"seq\":4}]}]}",
             "out-of-order dots wait in the cloud");
    crdt_obj_merge(b, d[0]);
    is_state(b,
             "{\"vv\":[{\"replica\":7,\"seq\":2}],\"cloud\":[{\"replica\":7,\"seq\":4}],"
             "\"elements\":[{\"member\":\"p\",\"dots\":[{\"replica\":7,\"seq\":1}]},"
             "{\"member\":\"q\",\"dots\":[{\"replica\":7,\"seq\":2}]},"
             "{\"member\":\"s\",\"dots\":[{\"replica\":7,\"seq\":4}]}]}",
             "dot 1 arrives: 1 and 2 fold into the vv");
    crdt_obj_merge(b, d[2]);
    ok(crdt_obj_equal(a, b), "all four, any order: equal to the origin");
    crdt_obj_t *c = new_set();
    for (int i = 0; i < 4; i++)
        crdt_obj_merge(c, d[i]);
    ok(crdt_obj_equal(b, c), "in order and out of order give equal states");
    is_int(encoded_len(b), encoded_len(c), "and identical encoding sizes");
    /* two one-byte members either way; dots {1,2} compact to vv 7:2, dots {2,4} stay a cloud */
    crdt_obj_t *x = new_set(), *y = new_set();
    crdt_obj_merge(x, d[0]);
    crdt_obj_merge(x, d[1]);
    crdt_obj_merge(y, d[1]);
    crdt_obj_merge(y, d[3]);
    is_int(encoded_len(y) - encoded_len(x), 2, "a contiguous context encodes smaller than a cloud");
    crdt_obj_free(x);
    crdt_obj_free(y);
    is_state(c,
             "{\"vv\":[{\"replica\":7,\"seq\":4}],\"cloud\":[],\"elements\":[{\"member\":\"p\","
             "\"dots\":[{\"replica\":7,\"seq\":1}]},{\"member\":\"q\",\"dots\":[{\"replica\":7,"
             "\"seq\":2}]},{\"member\":\"r\",\"dots\":[{\"replica\":7,\"seq\":3}]},{\"member\":"
             "\"s\",\"dots\":[{\"replica\":7,\"seq\":4}]}]}",
             "contiguous dots end up in the vv, the cloud empty");

    /* a replica that learnt of dots beyond its own counter continues after them */
    crdt_obj_t *e = new_set();
    crdt_obj_merge(e, d[3]); /* cloud (7,4) */
    add(e, 7, "t", NULL);
    is_state(e,
             "{\"vv\":[],\"cloud\":[{\"replica\":7,\"seq\":4},{\"replica\":7,\"seq\":5}],"
             "\"elements\":[{\"member\":\"s\",\"dots\":[{\"replica\":7,\"seq\":4}]},"
             "{\"member\":\"t\",\"dots\":[{\"replica\":7,\"seq\":5}]}]}",
             "a new dot is past the cloud, never reusing a seen seq");
    for (int i = 0; i < 4; i++)
        crdt_obj_free(d[i]);
    crdt_obj_free(a);
    crdt_obj_free(b);
    crdt_obj_free(c);
    crdt_obj_free(e);
}

static void test_no_tombstones(void)
{
    crdt_obj_t *s = new_set(), *grow = new_set();
    char m[32];
    for (int i = 0; i < 10000; i++) {
        int n = snprintf(m, sizeof(m), "member-%05d-with-some-padding", i);
        crdt_orset_add(s, 1 + (uint64_t)(i % 3), m, (size_t)n, NULL);
        crdt_orset_remove(s, m, (size_t)n, NULL);
        crdt_orset_add(grow, 1, m, (size_t)n, NULL);
    }
    crdt_stats_t st, sg;
    crdt_obj_stats(s, &st);
    crdt_obj_stats(grow, &sg);
    is_int(st.entries, 0, "10,000 adds and removes: no live entries");
    is_int(st.tombstones, 0, "and no tombstones");
    cmp_ok(st.memory, "<", 16 * 1024, "memory stays bounded (%zu bytes)", st.memory);
    cmp_ok(sg.memory, ">", 10000 * 32, "while 10,000 live members take room (%zu bytes)",
           sg.memory);
    diag("orset memory: 10,000 live members %zu bytes (%.1f/member beyond %d member bytes)",
         sg.memory, (double)sg.memory / 10000.0, 29);
    size_t enc = encoded_len(s);
    cmp_ok(enc, "<", 32, "the encoding is just the version vector (%zu bytes)", enc);
    is_state(s,
             "{\"vv\":[{\"replica\":1,\"seq\":3334},{\"replica\":2,\"seq\":3333},{\"replica\":3,"
             "\"seq\":3333}],\"cloud\":[],\"elements\":[]}",
             "only the causal context remains");
    /* one member re-added over and over does not grow either */
    crdt_obj_t *one = new_set();
    for (int i = 0; i < 10000; i++)
        add(one, 1 + (uint64_t)(i % 2), "same", NULL);
    crdt_obj_stats(one, &st);
    is_int(st.entries, 1, "one member re-added 10,000 times: one entry");
    cmp_ok(st.memory, "<", 4096, "in bounded memory (%zu bytes)", st.memory);
    crdt_obj_free(s);
    crdt_obj_free(grow);
    crdt_obj_free(one);
}

/* ---- binary codec --------------------------------------------------------------------------- */

typedef struct bad {
    const char *name;
    uint8_t p[40];
    size_t n;
    size_t at; /* payload offset of the fault */
    const char *says;
} bad_t;

static void test_binary(void)
{
    /* the canonical encoding, spelt out: vv {1:2, 3:1}, cloud {(3,3)}, "a"{(1,1),(3,3)}, "b"{(1,2)}
     */
    const uint8_t good[] = {2, 1,   2, 3, 1,       /* vv */
                            1, 3,   3,             /* cloud */
                            2,                     /* two elements */
                            1, 'a', 2, 1, 1, 3, 3, /* "a": dots (1,1) (3,3) */
                            1, 'b', 1, 1, 2};      /* "b": dot (1,2) */
    uint8_t buf[128];
    size_t n = frame(good, sizeof(good), buf);
    crdt_error_t err;
    crdt_obj_t *o = crdt_obj_decode(buf, n, &err);
    ok(o != NULL, "a hand-made canonical payload decodes (%s)", o ? "" : err.text);
    if (o) {
        ok(has(o, "a") && has(o, "b") && crdt__orset_size(o) == 2, "with members a and b");
        crdt_buf_t b = {0};
        crdt_obj_encode(o, &b);
        is_mem(b.data, b.len, buf, n, "and re-encodes to the same bytes");
        crdt_buf_free(&b);
        crdt_obj_t *c = crdt_obj_clone(o);
        ok(c && crdt_obj_equal(c, o), "clone is equal");
        crdt_obj_free(c);
        /* an add by replica 3 continues after its cloud dot */
        add(o, 3, "c", NULL);
        is_state(o,
                 "{\"vv\":[{\"replica\":1,\"seq\":2},{\"replica\":3,\"seq\":1}],\"cloud\":[{"
                 "\"replica\":3,\"seq\":3},{\"replica\":3,\"seq\":4}],\"elements\":[{\"member\":"
                 "\"a\",\"dots\":[{\"replica\":1,\"seq\":1},{\"replica\":3,\"seq\":3}]},{"
                 "\"member\":\"b\",\"dots\":[{\"replica\":1,\"seq\":2}]},{\"member\":\"c\","
                 "\"dots\":[{\"replica\":3,\"seq\":4}]}]}",
                 "decoded state as JSON");
        crdt_obj_free(o);
    }
    uint8_t empty[] = {0, 0, 0};
    n = frame(empty, 3, buf);
    o = crdt_obj_decode(buf, n, &err);
    ok(o && crdt_obj_is_empty(o), "bottom is three zero bytes");
    crdt_obj_free(o);

    static const bad_t bads[] = {
        {"dot not in the context", {0, 0, 1, 1, 'a', 1, 1, 1}, 8, 6, "not in the causal context"},
        {"dot beyond the vv", {1, 1, 1, 0, 1, 1, 'a', 1, 1, 2}, 10, 8, "not in the causal context"},
        {"zero replica in the vv", {1, 0, 1, 0, 0}, 5, 1, "replica 0 out of range"},
        {"zero seq in the vv", {1, 1, 0, 0, 0}, 5, 1, "seq 0 out of range"},
        {"vv replicas unsorted", {2, 2, 1, 1, 1, 0, 0}, 7, 3, "not strictly ascending"},
        {"vv replicas repeated", {2, 1, 1, 1, 2, 0, 0}, 7, 3, "not strictly ascending"},
        {"cloud dot that extends the vv", {1, 1, 1, 1, 1, 2, 0}, 7, 4, "non-canonical"},
        {"cloud dot under the vv", {1, 1, 3, 1, 1, 2, 0}, 7, 4, "non-canonical"},
        {"cloud dot (r,1) with no vv", {0, 1, 4, 1, 0}, 5, 2, "non-canonical"},
        {"cloud unsorted", {0, 2, 1, 5, 1, 3, 0}, 7, 4, "not strictly ascending"},
        {"zero replica in a dot", {1, 1, 1, 0, 1, 1, 'a', 1, 0, 1}, 10, 8, "replica 0"},
        {"members unsorted",
         {1, 1, 2, 0, 2, 1, 'b', 1, 1, 1, 1, 'a', 1, 1, 2},
         15,
         10,
         "members not strictly"},
        {"members repeated",
         {1, 1, 2, 0, 2, 1, 'a', 1, 1, 1, 1, 'a', 1, 1, 2},
         15,
         10,
         "members not strictly"},
        {"dots unsorted", {1, 1, 2, 0, 1, 1, 'a', 2, 1, 2, 1, 1}, 12, 10, "not strictly ascending"},
        {"no dots", {1, 1, 2, 0, 1, 1, 'a', 0}, 8, 7, "at least one dot"},
        {"one dot under two members",
         {1, 1, 2, 0, 2, 1, 'a', 1, 1, 1, 1, 'b', 1, 1, 1},
         15,
         13,
         "two members"},
        {"trailing byte", {0, 0, 0, 9}, 4, 3, "trailing"},
        {"element count beyond the input", {0, 0, 100}, 3, 2, "out of range"},
        {"non-canonical varint", {0x80, 0x00, 0, 0}, 4, 1, "non-canonical varint"},
    };
    for (size_t i = 0; i < sizeof(bads) / sizeof(bads[0]); i++) {
        const bad_t *b = &bads[i];
        n = frame(b->p, b->n, buf);
        memset(&err, 0, sizeof(err));
        o = crdt_obj_decode(buf, n, &err);
        ok(o == NULL && err.code == CRDT_EDECODE, "rejected: %s", b->name);
        is_int(err.offset, 3 + b->at, "  at payload byte %zu", b->at);
        ok(strstr(err.text, b->says) != NULL, "  saying '%s' (%s)", b->says, err.text);
        crdt_obj_free(o);
    }
}

/* ---- JSON ----------------------------------------------------------------------------------- */

static void test_json(void)
{
    crdt_obj_t *a = new_set(), *b = new_set();
    add(a, 1, "x", NULL);
    add(b, 2, "x", NULL);
    add(b, 2, "y", NULL);
    crdt_obj_t *dd = NULL;
    add(a, 1, "y", &dd);
    crdt_obj_merge(a, b);
    crdt_obj_t *c = new_set(); /* a state with a cloud */
    crdt_obj_merge(c, dd);
    crdt_obj_t *srcs[] = {a, c, dd};
    for (int i = 0; i < 3; i++) {
        json_t *j = crdt_obj_to_json(srcs[i]);
        crdt_error_t err;
        crdt_obj_t *back = j ? crdt_obj_from_json(j, &err) : NULL;
        ok(back && crdt_obj_equal(back, srcs[i]), "JSON round trip %d", i);
        crdt_obj_free(back);
        json_decref(j);
    }
    crdt_obj_free(dd);

    static const struct {
        const char *name, *state, *says;
    } bads[] = {
        {"not an object", "[]", "state: expected"},
        {"missing cloud", "{\"vv\":[],\"elements\":[]}", "state: expected"},
        {"extra field", "{\"vv\":[],\"cloud\":[],\"elements\":[],\"x\":1}", "state: expected"},
        {"vv not an array", "{\"vv\":{},\"cloud\":[],\"elements\":[]}", "must be arrays"},
        {"zero replica", "{\"vv\":[{\"replica\":0,\"seq\":1}],\"cloud\":[],\"elements\":[]}",
         "vv[0]: vv replica 0"},
        {"negative seq", "{\"vv\":[{\"replica\":1,\"seq\":-1}],\"cloud\":[],\"elements\":[]}",
         "vv[0].seq"},
        {"string seq", "{\"vv\":[{\"replica\":1,\"seq\":\"1\"}],\"cloud\":[],\"elements\":[]}",
         "vv[0].seq: expected an integer"},
        {"extra dot field",
         "{\"vv\":[{\"replica\":1,\"seq\":1,\"x\":0}],\"cloud\":[],\"elements\":[]}", "vv[0]"},
        {"non-canonical cloud",
         "{\"vv\":[{\"replica\":1,\"seq\":1}],\"cloud\":[{\"replica\":1,\"seq\":2}],"
         "\"elements\":[]}",
         "cloud[0]: cloud dot (1,2)"},
        {"dot not in the context",
         "{\"vv\":[{\"replica\":1,\"seq\":1}],\"cloud\":[],\"elements\":[{\"member\":\"a\","
         "\"dots\":[{\"replica\":1,\"seq\":2}]}]}",
         "elements[0].dots[0]: dot (1,2) is not in the causal context"},
        {"bad base64",
         "{\"vv\":[{\"replica\":1,\"seq\":1}],\"cloud\":[],\"elements\":[{\"member\":{\"base64\":\"YQ=\"},"
         "\"dots\":[{\"replica\":1,\"seq\":1}]}]}",
         "elements[0].member: invalid base64"},
        {"no dots",
         "{\"vv\":[{\"replica\":1,\"seq\":1}],\"cloud\":[],\"elements\":[{\"member\":\"a\","
         "\"dots\":[]}]}",
         "elements[0]: a member needs at least one dot"},
        {"members unsorted",
         "{\"vv\":[{\"replica\":1,\"seq\":2}],\"cloud\":[],\"elements\":[{\"member\":\"b\","
         "\"dots\":[{\"replica\":1,\"seq\":1}]},{\"member\":\"a\",\"dots\":[{\"replica\":1,"
         "\"seq\":2}]}]}",
         "elements[1]: members not strictly ascending"},
        {"shared dot",
         "{\"vv\":[{\"replica\":1,\"seq\":2}],\"cloud\":[],\"elements\":[{\"member\":\"a\","
         "\"dots\":[{\"replica\":1,\"seq\":1}]},{\"member\":\"b\",\"dots\":[{\"replica\":1,"
         "\"seq\":1}]}]}",
         "two members"},
    };
    for (size_t i = 0; i < sizeof(bads) / sizeof(bads[0]); i++) {
        json_error_t jerr;
        json_t *st = json_loads(bads[i].state, 0, &jerr);
        json_t *j = json_pack("{s:s,s:o}", "type", "orset", "state", st);
        crdt_error_t err;
        crdt_obj_t *o = j ? crdt_obj_from_json(j, &err) : NULL;
        ok(j && !o && err.code == CRDT_EDECODE, "JSON rejected: %s", bads[i].name);
        ok(strstr(err.text, bads[i].says) != NULL, "  saying '%s' (%s)", bads[i].says, err.text);
        crdt_obj_free(o);
        json_decref(j);
    }
    crdt_obj_free(a);
    crdt_obj_free(b);
    crdt_obj_free(c);
}

/* ---- a naive reference model: the join exactly as the paper writes it ----------------------- */

#define M_MAX 512
typedef struct model {
    int np;
    struct {
        int m;
        crdt_dot_t d;
    } p[M_MAX]; /* (member, dot) pairs */
    int nc;
    crdt_dot_t cc[M_MAX]; /* every dot seen, unordered */
} model_t;

static bool m_seen(const model_t *x, crdt_dot_t d)
{
    for (int i = 0; i < x->nc; i++)
        if (x->cc[i].replica == d.replica && x->cc[i].seq == d.seq)
            return true;
    return false;
}

static bool m_has_pair(const model_t *x, int m, crdt_dot_t d)
{
    for (int i = 0; i < x->np; i++)
        if (x->p[i].m == m && x->p[i].d.replica == d.replica && x->p[i].d.seq == d.seq)
            return true;
    return false;
}

static void m_join(model_t *s, const model_t *t)
{
    model_t r = {0};
    for (int i = 0; i < s->np; i++)
        if (m_has_pair(t, s->p[i].m, s->p[i].d) || !m_seen(t, s->p[i].d))
            r.p[r.np++] = s->p[i];
    for (int i = 0; i < t->np; i++)
        if (!m_seen(s, t->p[i].d))
            r.p[r.np++] = t->p[i];
    for (int i = 0; i < s->nc; i++)
        r.cc[r.nc++] = s->cc[i];
    for (int i = 0; i < t->nc; i++)
        if (!m_seen(s, t->cc[i]))
            r.cc[r.nc++] = t->cc[i];
    *s = r;
}

static void m_add(model_t *s, int m, uint64_t replica)
{
    uint64_t top = 0;
    for (int i = 0; i < s->nc; i++)
        if (s->cc[i].replica == replica && s->cc[i].seq > top)
            top = s->cc[i].seq;
    crdt_dot_t d = {replica, top + 1};
    model_t r = *s;
    r.np = 0;
    for (int i = 0; i < s->np; i++)
        if (s->p[i].m != m)
            r.p[r.np++] = s->p[i];
    r.p[r.np].m = m;
    r.p[r.np++].d = d;
    r.cc[r.nc++] = d;
    *s = r;
}

static void m_remove(model_t *s, int m)
{
    int k = 0;
    for (int i = 0; i < s->np; i++)
        if (s->p[i].m != m)
            s->p[k++] = s->p[i];
    s->np = k;
}

static bool m_contains(const model_t *s, int m)
{
    for (int i = 0; i < s->np; i++)
        if (s->p[i].m == m)
            return true;
    return false;
}

static void test_model(void)
{
    enum { R = 3, MEMBERS = 8, CASES = 300, STEPS = 40 };
    laws_rng_t rng = {0x5EED0125ull};
    int bad = 0, checks = 0;
    for (int c = 0; c < CASES && !bad; c++) {
        crdt_obj_t *s[R];
        static model_t ms[R];
        for (int i = 0; i < R; i++) {
            s[i] = new_set();
            memset(&ms[i], 0, sizeof(ms[i]));
        }
        for (int k = 0; k < STEPS && !bad; k++) {
            int i = (int)laws_below(&rng, R), j = (int)laws_below(&rng, R);
            int m = (int)laws_below(&rng, MEMBERS);
            char key[2] = {(char)('a' + m), 0};
            switch (laws_below(&rng, 4)) {
            case 0:
            case 1:
                crdt_orset_add(s[i], (uint64_t)i + 1, key, 1, NULL);
                m_add(&ms[i], m, (uint64_t)i + 1);
                break;
            case 2:
                crdt_orset_remove(s[i], key, 1, NULL);
                m_remove(&ms[i], m);
                break;
            default:
                crdt_obj_merge(s[i], s[j]);
                m_join(&ms[i], &ms[j]);
                break;
            }
            for (int x = 0; x < R; x++)
                for (int y = 0; y < MEMBERS; y++) {
                    char kk[2] = {(char)('a' + y), 0};
                    checks++;
                    if (has(s[x], kk) != m_contains(&ms[x], y) && !bad++)
                        diag("case %d step %d: replica %d member %c: orset %d, model %d", c, k, x,
                             'a' + y, has(s[x], kk), m_contains(&ms[x], y));
                }
        }
        for (int i = 0; i < R; i++)
            crdt_obj_free(s[i]);
    }
    ok(!bad, "membership agrees with a naive model of the paper's join (%d checks)", checks);
}

/* ---- laws ----------------------------------------------------------------------------------- */

static crdt_obj_t *laws_create(void)
{
    return crdt_obj_new(CRDT_ORSET);
}

static crdt_obj_t *laws_mutate(laws_rng_t *rng, crdt_obj_t *s, uint64_t replica, crdt_hlc_t *clock,
                               uint64_t now_ms)
{
    (void)clock;
    (void)now_ms;
    static const char *const names[] = {"a", "b", "c", "d", "e", "f", "g", "h", "", "\xff\x00z"};
    size_t i = (size_t)laws_below(rng, 10);
    size_t len = i == 9 ? 3 : strlen(names[i]);
    crdt_obj_t *d = NULL;
    crdt_mut_t del = {.type = CRDT_ORSET, .kind = CRDT_MUT_DELETE};
    uint64_t pick = laws_below(rng, 12);
    int rc = pick < 6    ? crdt_orset_add(s, replica, names[i], len, &d)
             : pick < 11 ? crdt_orset_remove(s, names[i], len, &d)
                         : crdt_mut_apply(s, &del, replica, &d);
    if (rc < 0)
        diag("orset mutator failed: %d", rc);
    return d;
}

static const laws_type_t orset_laws = {"orset", laws_create, laws_mutate};

int main(void)
{
    test_basics();
    test_add_wins();
    test_observed_remove();
    test_readd();
    test_compaction();
    test_no_tombstones();
    test_binary();
    test_json();
    test_model();
    laws_run(&orset_laws, 5000);
    return done_testing();
}
