/* test_lwwreg.c - LWW-Register: ordering, ties, binary values, codecs, laws */
#include <stdlib.h>
#include <string.h>

#include "crdt.h"
#include "crdt_json.h"
#include "tap.h"
#include "codec_check.h"

#include "laws.h" /* after tap.h, whose ok() and diag() it uses */

static crdt_hlc_ts_t ts(uint64_t ms, uint32_t c, uint64_t node)
{
    return (crdt_hlc_ts_t){ms, c, node};
}

/* The register's value as (pointer, length), or length SIZE_MAX when unset. */
static size_t get(const crdt_obj_t *r, const void **v, crdt_hlc_ts_t *t)
{
    size_t len = 0;
    int rc = crdt_lwwreg_get(r, v, &len, t);
    return rc == 1 ? len : SIZE_MAX;
}

static void bad_payload(const uint8_t *p, size_t n, size_t want_off, const char *name)
{
    codec_bad_payload(CRDT_LWWREG, p, n, want_off, name);
}
#define bad_json codec_bad_json

static void test_semantics(void)
{
    crdt_obj_t *r = crdt_obj_new(CRDT_LWWREG), *d = NULL;
    const void *v;
    crdt_hlc_ts_t t, t5 = ts(100, 5, 2);
    ok(crdt_obj_is_empty(r), "new register is empty");
    is_int(crdt_lwwreg_get(r, &v, NULL, NULL), 0, "get on unset register returns 0");

    is_int(crdt_lwwreg_set(r, &t5, "hello", 5, &d), 1, "first set changes");
    ok(d != NULL, "first set gives a delta");
    size_t len = get(d, &v, &t);
    is_mem(v, len, "hello", 5, "delta holds the value");
    ok(crdt_hlc_cmp(&t, &t5) == 0, "delta holds the timestamp");
    crdt_obj_free(d);

    crdt_hlc_ts_t older = ts(100, 4, 9), newer_node = ts(100, 5, 3), newer = ts(101, 0, 1);
    d = (crdt_obj_t *)1;
    is_int(crdt_lwwreg_set(r, &older, "old", 3, &d), 0, "older timestamp loses");
    ok(d == NULL, "a losing write gives no delta");
    len = get(r, &v, &t);
    is_mem(v, len, "hello", 5, "value kept after losing write");
    is_int(crdt_lwwreg_set(r, &newer_node, "node3", 5, NULL), 1,
           "same ms and logical, greater node wins");
    is_int(crdt_lwwreg_set(r, &newer, "new", 3, NULL), 1, "greater ms wins");
    len = get(r, &v, &t);
    is_mem(v, len, "new", 3, "value is the newest");
    ok(crdt_hlc_cmp(&t, &newer) == 0, "timestamp is the newest");

    /* equal timestamps: the bytewise greater value wins, in either order */
    crdt_obj_t *a = crdt_obj_new(CRDT_LWWREG), *b = crdt_obj_new(CRDT_LWWREG);
    crdt_hlc_ts_t tie = ts(7, 0, 1);
    is_int(crdt_lwwreg_set(a, &tie, "abc", 3, NULL), 1, "a: abc at tie");
    is_int(crdt_lwwreg_set(b, &tie, "abd", 3, NULL), 1, "b: abd at tie");
    is_int(crdt_lwwreg_set(a, &tie, "abd", 3, NULL), 1, "a: abd at the same ts beats abc");
    is_int(crdt_lwwreg_set(b, &tie, "abc", 3, NULL), 0, "b: abc at the same ts loses to abd");
    ok(crdt_obj_equal(a, b), "tie resolved the same way in both orders");
    is_int(crdt_lwwreg_set(a, &tie, "abd", 3, NULL), 0, "rewriting the same (ts, value): no-op");
    is_int(crdt_lwwreg_set(a, &tie, "ab", 2, NULL), 0, "a prefix sorts below: loses the tie");
    is_int(crdt_lwwreg_set(a, &tie, "abd\0", 4, NULL), 1, "a longer value with the prefix wins");
    crdt_obj_free(a);
    crdt_obj_free(b);

    /* merges pick the same winner */
    a = crdt_obj_new(CRDT_LWWREG);
    b = crdt_obj_new(CRDT_LWWREG);
    crdt_hlc_ts_t t1 = ts(50, 0, 1), t2 = ts(50, 0, 2);
    crdt_lwwreg_set(a, &t1, "x", 1, NULL);
    crdt_lwwreg_set(b, &t2, "y", 1, NULL);
    crdt_obj_t *a2 = crdt_obj_clone(a);
    is_int(crdt_obj_merge(a, b), 1, "merge: b's later write wins in a");
    is_int(crdt_obj_merge(b, a2), 0, "merge: a's earlier write changes nothing in b");
    ok(crdt_obj_equal(a, b), "converged");
    crdt_obj_t *empty = crdt_obj_new(CRDT_LWWREG);
    is_int(crdt_obj_merge(a, empty), 0, "merging the bottom changes nothing");
    is_int(crdt_obj_merge(empty, a), 1, "merging into the bottom takes the value");
    ok(crdt_obj_equal(a, empty), "bottom + a = a");
    crdt_obj_free(a);
    crdt_obj_free(a2);
    crdt_obj_free(b);
    crdt_obj_free(empty);

    /* binary-safe values and the empty value */
    static const uint8_t bin[] = {0, 1, 0, 0xff, 0, '\n'};
    crdt_hlc_ts_t t9 = ts(200, 0, 1);
    is_int(crdt_lwwreg_set(r, &t9, bin, sizeof(bin), NULL), 1, "binary value with NULs");
    len = get(r, &v, NULL);
    is_mem(v, len, bin, sizeof(bin), "binary value kept whole");
    crdt_hlc_ts_t t10 = ts(201, 0, 1);
    is_int(crdt_lwwreg_set(r, &t10, NULL, 0, NULL), 1, "empty value (NULL, 0) is a value");
    len = get(r, &v, &t);
    is_int(len, 0, "get: set, length 0");
    ok(v != NULL, "get: a non-NULL pointer even for the empty value");
    ok(!crdt_obj_is_empty(r), "a register holding the empty value is not the bottom");

    /* a value borrowed from the register itself can be written back */
    crdt_hlc_ts_t t11 = ts(202, 0, 1), t12 = ts(203, 0, 1);
    crdt_lwwreg_set(r, &t11, "self", 4, NULL);
    get(r, &v, NULL);
    is_int(crdt_lwwreg_set(r, &t12, v, 4, NULL), 1, "set from the register's own buffer");
    len = get(r, &v, NULL);
    is_mem(v, len, "self", 4, "value intact");

    /* arguments */
    crdt_hlc_ts_t bad = ts(300, 0, 0);
    is_int(crdt_lwwreg_set(r, &bad, "x", 1, NULL), CRDT_EINVAL, "node 0 rejected");
    bad = ts((uint64_t)INT64_MAX + 1, 0, 1);
    is_int(crdt_lwwreg_set(r, &bad, "x", 1, NULL), CRDT_EINVAL, "ms past INT64_MAX rejected");
    is_int(crdt_lwwreg_set(r, NULL, "x", 1, NULL), CRDT_EINVAL, "NULL timestamp rejected");
    is_int(crdt_lwwreg_set(r, &t12, NULL, 1, NULL), CRDT_EINVAL, "NULL value with a length");
    is_int(crdt_lwwreg_set(r, &t12, "x", (size_t)CRDT_MAX_BLOB + 1, NULL), CRDT_EINVAL,
           "value over CRDT_MAX_BLOB rejected");
    crdt_obj_t *g = crdt_obj_new(CRDT_GCOUNTER);
    is_int(crdt_lwwreg_set(g, &t12, "x", 1, NULL), CRDT_ETYPE, "set on a gcounter: ETYPE");
    is_int(crdt_lwwreg_get(g, &v, &len, NULL), CRDT_ETYPE, "get on a gcounter: ETYPE");
    crdt_obj_free(g);
    crdt_obj_free(r);
}

static void test_codecs(void)
{
    crdt_obj_t *r = crdt_obj_new(CRDT_LWWREG);
    crdt_buf_t b = {0};
    crdt_error_t err;
    json_t *j = crdt_obj_to_json(r);
    char *s = json_dumps(j, JSON_COMPACT | JSON_ENCODE_ANY);
    is(s, "{\"type\":\"lwwreg\",\"state\":null}", "unset register JSON is null");
    free(s);
    json_decref(j);
    is_int(crdt_obj_encode(r, &b), 0, "encode unset");
    is_int(b.len, 3 + 1 + 4, "unset payload is one byte");
    is_int(b.data[3], 0, "set flag 0");
    crdt_obj_t *back = crdt_obj_decode(b.data, b.len, &err);
    ok(back && crdt_obj_is_empty(back), "unset round trip");
    crdt_obj_free(back);
    crdt_buf_free(&b);

    crdt_hlc_ts_t t = ts(1000, 2, 3);
    crdt_lwwreg_set(r, &t, "a\0b", 3, NULL);
    is_int(crdt_obj_encode(r, &b), 0, "encode set");
    const uint8_t want[] = {0x01, 0xe8, 0x07, 0x02, 0x03, 0x03, 'a', 0, 'b'};
    is_mem(b.data + 3, b.len - 7, want, sizeof(want), "payload: flag, hlc, blob");
    back = crdt_obj_decode(b.data, b.len, &err);
    ok(back && crdt_obj_equal(back, r), "binary round trip");
    crdt_obj_free(back);
    crdt_buf_free(&b);
    j = crdt_obj_to_json(r);
    s = json_dumps(j, JSON_COMPACT);
    is(s,
       "{\"type\":\"lwwreg\",\"state\":{\"ts\":{\"ms\":1000,\"c\":2,\"node\":3},"
       "\"value\":{\"base64\":\"YQBi\"}}}",
       "JSON shape");
    back = crdt_obj_from_json(j, &err);
    ok(back && crdt_obj_equal(back, r), "JSON round trip");
    crdt_obj_free(back);
    free(s);
    json_decref(j);
    crdt_obj_free(r);

    bad_payload((const uint8_t[]){0x03}, 1, 3, "state byte 3");
    bad_payload((const uint8_t[]){0x02}, 1, 4, "state byte 2 (cleared) without its timestamp");
    bad_payload((const uint8_t[]){}, 0, 3, "empty payload");
    bad_payload((const uint8_t[]){0x01, 0x01, 0x00, 0x00, 0x00}, 5, 4, "timestamp node 0");
    bad_payload((const uint8_t[]){0x01, 0x01, 0x00, 0x01, 0x05, 'a'}, 6, 8,
                "value longer than the payload");
    bad_payload((const uint8_t[]){0x01, 0x01, 0x00, 0x01}, 4, 7, "missing value");
    bad_payload((const uint8_t[]){0x00, 0x00}, 2, 4, "trailing byte after unset");
    bad_payload((const uint8_t[]){0x01, 0x01, 0x80, 0x80, 0x80, 0x80, 0x10, 0x01, 0x00}, 9, 5,
                "logical past 32 bits");
    bad_payload((const uint8_t[]){0x01, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x01,
                                  0x00, 0x01, 0x00},
                14, 4, "ms past INT64_MAX");

    bad_json("{\"type\":\"lwwreg\",\"state\":[]}", "state", "state an array");
    bad_json("{\"type\":\"lwwreg\",\"state\":{\"value\":\"\"}}", "ts", "missing ts");
    bad_json("{\"type\":\"lwwreg\",\"state\":{\"ts\":{\"ms\":1,\"c\":0,\"node\":0},"
             "\"value\":\"\"}}",
             "ts.node", "node 0");
    bad_json("{\"type\":\"lwwreg\",\"state\":{\"ts\":{\"ms\":1,\"c\":-1,\"node\":1},"
             "\"value\":\"\"}}",
             "ts.c", "negative logical");
    bad_json("{\"type\":\"lwwreg\",\"state\":{\"ts\":{\"ms\":1,\"c\":0,\"node\":1},"
             "\"value\":{\"base64\":\"a\"}}}",
             "value", "bad base64");
    bad_json("{\"type\":\"lwwreg\",\"state\":{\"ts\":{\"ms\":1,\"c\":0,\"node\":1}}}", "value",
             "missing value");
    bad_json("{\"type\":\"lwwreg\",\"state\":{\"ts\":{\"ms\":1,\"c\":0,\"node\":1},"
             "\"value\":\"\",\"extra\":1}}",
             "unexpected", "extra field");
}

/* ---- property laws -------------------------------------------------------------------------- */

static crdt_obj_t *reg_create(void)
{
    return crdt_obj_new(CRDT_LWWREG);
}

static crdt_obj_t *reg_mutate(laws_rng_t *rng, crdt_obj_t *state, uint64_t replica,
                              crdt_hlc_t *clock, uint64_t now_ms)
{
    static const char *const vals[] = {"", "a", "ab", "b", "a\0", "zz"};
    crdt_hlc_ts_t t;
    if (laws_below(rng, 2)) {
        if (crdt_hlc_tick(clock, now_ms, &t) < 0)
            return NULL;
    } else {
        /* crafted timestamps in a tiny range: equal ones happen, so value tie-breaks run */
        t = ts(1000 + laws_below(rng, 3), (uint32_t)laws_below(rng, 2), 1 + laws_below(rng, 2));
    }
    (void)replica;
    size_t k = (size_t)laws_below(rng, 6);
    size_t len = k == 4 ? 2 : strlen(vals[k]);
    crdt_obj_t *d = NULL;
    if (laws_below(rng, 4) == 0) {
        /* a delete: a clear at t, which ties and races with sets at the same crafted times */
        crdt_mut_t m = {.type = CRDT_LWWREG, .kind = CRDT_MUT_DELETE, .ts = t};
        crdt_mut_apply(state, &m, replica, &d);
        return d;
    }
    crdt_lwwreg_set(state, &t, vals[k], len, &d);
    return d;
}

int main(void)
{
    test_semantics();
    test_codecs();
    static const laws_type_t reg = {"lwwreg", reg_create, reg_mutate};
    laws_run(&reg, 3000);
    return done_testing();
}
