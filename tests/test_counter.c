/* test_counter.c - G-Counter and PN-Counter: semantics, overflow edges, codecs, laws */
#include <stdlib.h>
#include <string.h>

#include "crdt.h"
#include "crdt_json.h"
#include "tap.h"
#include "codec_check.h"

#include "laws.h" /* after tap.h, whose ok() and diag() it uses */

/* the shared decoder checks of codec_check.h, under this file's names */
#define frame codec_frame
#define bad_payload codec_bad_payload
#define good_payload codec_good_payload
#define bad_json codec_bad_json

static int64_t value_of(const crdt_obj_t *c)
{
    int64_t v = -12345;
    int rc = crdt_counter_value(c, &v);
    return rc < 0 ? rc : v;
}

static void test_gcounter(void)
{
    crdt_obj_t *a = crdt_obj_new(CRDT_GCOUNTER), *b = crdt_obj_new(CRDT_GCOUNTER);
    crdt_obj_t *d = NULL;
    ok(crdt_obj_is_empty(a), "new gcounter is empty");
    is_int(value_of(a), 0, "new gcounter is 0");

    is_int(crdt_gcounter_incr(a, 1, 5, &d), 1, "incr r1 by 5 changes");
    ok(d != NULL, "incr gives a delta");
    is_int(value_of(d), 5, "delta holds the slot's absolute value");
    crdt_obj_free(d);
    is_int(crdt_gcounter_incr(a, 1, 3, &d), 1, "incr r1 by 3");
    is_int(value_of(d), 8, "delta is the new absolute slot value 8, not the increment");
    crdt_obj_t *d_old = d;
    is_int(crdt_gcounter_incr(a, 2, 10, NULL), 1, "incr r2 by 10, no delta asked");
    is_int(value_of(a), 18, "value sums slots");

    d = (crdt_obj_t *)1;
    is_int(crdt_gcounter_incr(a, 3, 0, &d), 0, "n = 0 is a no-op");
    ok(d == NULL, "n = 0 gives no delta");
    is_int(value_of(a), 18, "n = 0 left the value");
    crdt_stats_t st;
    crdt_obj_stats(a, &st);
    is_int(st.entries, 2, "n = 0 stored no zero slot");

    is_int(crdt_gcounter_incr(a, 0, 1, NULL), CRDT_EINVAL, "replica 0 is rejected");
    is_int(crdt_gcounter_incr(a, CRDT_REPLICA_MAX + 1, 1, NULL), CRDT_EINVAL,
           "replica above CRDT_REPLICA_MAX is rejected");
    is_int(crdt_gcounter_incr(a, CRDT_REPLICA_MAX, 1, NULL), 1, "replica CRDT_REPLICA_MAX works");

    /* another replica writes concurrently */
    is_int(crdt_gcounter_incr(b, 2, 4, NULL), 1, "b: r2 += 4");
    is_int(crdt_gcounter_incr(b, 3, 7, NULL), 1, "b: r3 += 7");
    crdt_obj_t *a2 = crdt_obj_clone(a);
    is_int(crdt_obj_merge(a, b), 1, "merge b into a changes a");
    is_int(value_of(a), 8 + 10 + 1 + 7, "merge takes the per-slot max (r2 keeps 10)");
    is_int(crdt_obj_merge(a, b), 0, "merging again changes nothing");
    is_int(crdt_obj_merge(b, a2), 1, "merge a into b");
    ok(crdt_obj_equal(a, b), "both orders converge");
    is_int(crdt_obj_merge(a, d_old), 0, "an old delta (duplicate / reordered) changes nothing");
    crdt_obj_free(d_old);
    crdt_obj_free(a2);

    crdt_obj_t *pn = crdt_obj_new(CRDT_PNCOUNTER);
    is_int(crdt_obj_merge(a, pn), CRDT_ETYPE, "merging a pncounter into a gcounter: ETYPE");
    is_int(crdt_gcounter_incr(pn, 1, 1, NULL), CRDT_ETYPE, "gcounter_incr on a pncounter: ETYPE");
    crdt_obj_free(pn);
    crdt_obj_free(a);
    crdt_obj_free(b);
}

static void test_gcounter_overflow(void)
{
    crdt_obj_t *a = crdt_obj_new(CRDT_GCOUNTER);
    crdt_obj_t *d = (crdt_obj_t *)1;
    is_int(crdt_gcounter_incr(a, 1, (uint64_t)INT64_MAX + 1, &d), CRDT_EOVERFLOW,
           "incr by INT64_MAX + 1 overflows");
    ok(d == NULL, "no delta on overflow");
    ok(crdt_obj_is_empty(a), "state unchanged after overflow");
    is_int(crdt_gcounter_incr(a, 1, UINT64_MAX, NULL), CRDT_EOVERFLOW, "incr by UINT64_MAX");
    is_int(crdt_gcounter_incr(a, 1, INT64_MAX - 1, NULL), 1, "incr to INT64_MAX - 1");
    is_int(crdt_gcounter_incr(a, 2, 1, NULL), 1, "another replica reaches exactly INT64_MAX");
    is_int(value_of(a), INT64_MAX, "value is INT64_MAX");
    crdt_obj_t *before = crdt_obj_clone(a);
    is_int(crdt_gcounter_incr(a, 3, 1, NULL), CRDT_EOVERFLOW, "one more on a third replica");
    is_int(crdt_gcounter_incr(a, 1, 1, NULL), CRDT_EOVERFLOW, "one more on the first replica");
    ok(crdt_obj_equal(a, before), "state unchanged after overflow at the edge");

    /* Merged remote slots can sum past int64 (each slot is valid alone) */
    crdt_obj_t *b = crdt_obj_new(CRDT_GCOUNTER);
    is_int(crdt_gcounter_incr(b, 5, INT64_MAX, NULL), 1, "b: r5 = INT64_MAX");
    is_int(crdt_obj_merge(a, b), 1, "merge succeeds");
    int64_t v;
    is_int(crdt_counter_value(a, &v), CRDT_EOVERFLOW, "value of merged slots past INT64_MAX");
    is_int(crdt_gcounter_incr(a, 1, 1, NULL), CRDT_EOVERFLOW, "incr while already past");
    crdt_obj_free(before);
    crdt_obj_free(a);
    crdt_obj_free(b);
}

static void test_pncounter(void)
{
    crdt_obj_t *a = crdt_obj_new(CRDT_PNCOUNTER), *b = crdt_obj_new(CRDT_PNCOUNTER);
    crdt_obj_t *d = NULL;
    is_int(value_of(a), 0, "new pncounter is 0");
    is_int(crdt_pncounter_add(a, 1, 10, &d), 1, "add 10");
    crdt_stats_t st;
    crdt_obj_stats(d, &st);
    is_int(st.entries, 1, "delta holds one slot");
    crdt_obj_free(d);
    is_int(crdt_pncounter_add(a, 1, -3, &d), 1, "add -3");
    is_int(value_of(d), -3, "delta holds only the N slot of replica 1");
    crdt_obj_free(d);
    is_int(value_of(a), 7, "value 7");
    is_int(crdt_pncounter_add(a, 2, -20, NULL), 1, "r2 adds -20");
    is_int(value_of(a), -13, "value -13");
    d = (crdt_obj_t *)1;
    is_int(crdt_pncounter_add(a, 2, 0, &d), 0, "add 0 is a no-op");
    ok(d == NULL, "add 0 gives no delta");
    is_int(crdt_pncounter_add(a, 0, 1, NULL), CRDT_EINVAL, "replica 0 rejected");

    is_int(crdt_pncounter_add(b, 3, 100, NULL), 1, "b: r3 +100");
    is_int(crdt_pncounter_add(b, 1, -5, NULL), 1, "b: r1 -5 (concurrent with a's -3)");
    crdt_obj_t *a2 = crdt_obj_clone(a);
    is_int(crdt_obj_merge(a, b), 1, "merge b into a");
    is_int(value_of(a), 10 - 5 - 20 + 100, "per-side per-slot max: N[r1] = max(3, 5)");
    is_int(crdt_obj_merge(b, a2), 1, "merge a into b");
    ok(crdt_obj_equal(a, b), "converged");
    crdt_obj_free(a2);
    is_int(crdt_gcounter_incr(a, 1, 1, NULL), CRDT_ETYPE, "gcounter_incr on pncounter: ETYPE");
    int64_t v;
    crdt_obj_t *set = crdt_obj_new(CRDT_LWWSET);
    is_int(crdt_counter_value(set, &v), CRDT_ETYPE, "counter_value of an lwwset: ETYPE");
    crdt_obj_free(set);
    crdt_obj_free(a);
    crdt_obj_free(b);
}

static void test_pncounter_edges(void)
{
    crdt_obj_t *a = crdt_obj_new(CRDT_PNCOUNTER);
    crdt_obj_t *d = (crdt_obj_t *)1;
    is_int(crdt_pncounter_add(a, 1, INT64_MIN, &d), CRDT_EOVERFLOW,
           "add INT64_MIN: the N side would hold 2^63");
    ok(d == NULL && crdt_obj_is_empty(a), "no delta, state unchanged");
    is_int(crdt_pncounter_add(a, 1, -INT64_MAX, NULL), 1, "add -INT64_MAX");
    is_int(value_of(a), -INT64_MAX, "value -INT64_MAX");
    crdt_obj_t *before = crdt_obj_clone(a);
    is_int(crdt_pncounter_add(a, 2, -1, NULL), CRDT_EOVERFLOW, "one more down overflows N");
    is_int(crdt_pncounter_add(a, 1, INT64_MIN, NULL), CRDT_EOVERFLOW, "INT64_MIN again");
    ok(crdt_obj_equal(a, before), "state unchanged");
    is_int(crdt_pncounter_add(a, 2, INT64_MAX, NULL), 1, "add INT64_MAX on top: P side full");
    is_int(value_of(a), 0, "value back to 0");
    is_int(crdt_pncounter_add(a, 3, 1, NULL), CRDT_EOVERFLOW, "P side sum would pass INT64_MAX");
    crdt_obj_free(before);
    crdt_obj_free(a);

    /* INT64_MIN as a value is reachable only through merged remote slots */
    crdt_obj_t *x = crdt_obj_new(CRDT_PNCOUNTER), *y = crdt_obj_new(CRDT_PNCOUNTER);
    is_int(crdt_pncounter_add(x, 1, -INT64_MAX, NULL), 1, "x: r1 -INT64_MAX");
    is_int(crdt_pncounter_add(y, 2, -1, NULL), 1, "y: r2 -1");
    is_int(crdt_obj_merge(x, y), 1, "merge");
    is_int(value_of(x), INT64_MIN, "merged value is exactly INT64_MIN");
    is_int(crdt_pncounter_add(x, 3, 5, NULL), CRDT_EOVERFLOW,
           "add while N already past INT64_MAX overflows");
    is_int(crdt_pncounter_add(y, 3, -2, NULL), 1, "y: r3 -2");
    is_int(crdt_obj_merge(x, y), 1, "merge");
    int64_t v;
    is_int(crdt_counter_value(x, &v), CRDT_EOVERFLOW, "value below INT64_MIN: EOVERFLOW");
    crdt_obj_free(x);
    crdt_obj_free(y);

    /* P past int64 but the difference fits */
    x = crdt_obj_new(CRDT_PNCOUNTER);
    y = crdt_obj_new(CRDT_PNCOUNTER);
    crdt_pncounter_add(x, 1, INT64_MAX, NULL);
    crdt_pncounter_add(y, 2, 10, NULL);
    crdt_pncounter_add(y, 3, -20, NULL);
    crdt_obj_merge(x, y);
    is_int(value_of(x), INT64_MAX - 10, "sides past int64 with a difference in range");
    crdt_obj_free(x);
    crdt_obj_free(y);
}

static void test_codecs(void)
{
    crdt_obj_t *g = crdt_obj_new(CRDT_GCOUNTER);
    crdt_gcounter_incr(g, 3, 300, NULL);
    crdt_gcounter_incr(g, 1, 1, NULL);
    crdt_buf_t b = {0};
    is_int(crdt_obj_encode(g, &b), 0, "encode gcounter");
    /* frame: 01 01 len | 02 | 01 01 | 03 ac 02 | crc */
    const uint8_t want[] = {0x02, 0x01, 0x01, 0x03, 0xac, 0x02};
    ok(b.len == 3 + sizeof(want) + 4 && b.data[2] == sizeof(want), "frame length");
    is_mem(b.data + 3, b.len - 7, want, sizeof(want), "payload bytes: slots sorted by replica");
    crdt_error_t err;
    crdt_obj_t *g2 = crdt_obj_decode(b.data, b.len, &err);
    ok(g2 && crdt_obj_equal(g, g2), "binary round trip");
    crdt_obj_free(g2);
    crdt_buf_free(&b);

    json_t *j = crdt_obj_to_json(g);
    char *s = json_dumps(j, JSON_COMPACT);
    is(s,
       "{\"type\":\"gcounter\",\"state\":{\"slots\":[{\"replica\":1,\"value\":1},"
       "{\"replica\":3,\"value\":300}]}}",
       "gcounter JSON shape");
    g2 = crdt_obj_from_json(j, &err);
    ok(g2 && crdt_obj_equal(g, g2), "JSON round trip");
    crdt_obj_free(g2);
    free(s);
    json_decref(j);
    crdt_obj_free(g);

    crdt_obj_t *p = crdt_obj_new(CRDT_PNCOUNTER);
    crdt_pncounter_add(p, 2, -7, NULL);
    crdt_pncounter_add(p, 1, INT64_MAX, NULL);
    j = crdt_obj_to_json(p);
    s = json_dumps(j, JSON_COMPACT);
    is(s,
       "{\"type\":\"pncounter\",\"state\":{\"p\":[{\"replica\":1,\"value\":9223372036854775807}"
       "],\"n\":[{\"replica\":2,\"value\":7}]}}",
       "pncounter JSON shape, INT64_MAX exact");
    g2 = crdt_obj_from_json(j, &err);
    ok(g2 && crdt_obj_equal(p, g2), "pncounter JSON round trip");
    crdt_obj_free(g2);
    free(s);
    json_decref(j);
    is_int(crdt_obj_encode(p, &b), 0, "encode pncounter");
    g2 = crdt_obj_decode(b.data, b.len, &err);
    ok(g2 && crdt_obj_equal(p, g2), "pncounter binary round trip");
    crdt_obj_free(g2);
    crdt_buf_free(&b);
    crdt_obj_free(p);

    /* payload offsets: frame header is 3 bytes, so payload byte i is at offset 3 + i */
    good_payload(CRDT_GCOUNTER, (const uint8_t[]){0x00}, 1, "empty gcounter");
    good_payload(
        CRDT_GCOUNTER,
        (const uint8_t[]){0x01, 0x01, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x7f}, 11,
        "slot value INT64_MAX");
    bad_payload(CRDT_GCOUNTER, (const uint8_t[]){0x02, 0x02, 0x01, 0x01, 0x01}, 5, 3 + 3,
                "replicas out of order");
    bad_payload(CRDT_GCOUNTER, (const uint8_t[]){0x02, 0x01, 0x01, 0x01, 0x01}, 5, 3 + 3,
                "duplicate replica");
    bad_payload(CRDT_GCOUNTER, (const uint8_t[]){0x01, 0x00, 0x01}, 3, 3 + 1, "replica 0");
    bad_payload(CRDT_GCOUNTER, (const uint8_t[]){0x01, 0x01, 0x00}, 3, 3 + 2, "zero slot");
    bad_payload(
        CRDT_GCOUNTER,
        (const uint8_t[]){0x01, 0x01, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x01},
        12, 3 + 2, "slot value 2^63");
    bad_payload(CRDT_GCOUNTER, (const uint8_t[]){0x05, 0x01, 0x01}, 3, 3 + 0,
                "count larger than the bytes allow");
    bad_payload(CRDT_GCOUNTER, (const uint8_t[]){0x01, 0x01}, 2, 3 + 2, "truncated slot");
    bad_payload(CRDT_GCOUNTER, (const uint8_t[]){0x00, 0x00}, 2, 3 + 1, "trailing byte");
    bad_payload(CRDT_GCOUNTER, (const uint8_t[]){0x01, 0x81, 0x00, 0x01}, 4, 3 + 2,
                "non-canonical varint");
    good_payload(CRDT_PNCOUNTER, (const uint8_t[]){0x01, 0x01, 0x05, 0x01, 0x01, 0x02}, 6,
                 "pncounter p and n");
    bad_payload(CRDT_PNCOUNTER, (const uint8_t[]){0x00}, 1, 3 + 1, "pncounter without n");
    bad_payload(CRDT_PNCOUNTER, (const uint8_t[]){0x00, 0x01, 0x02, 0x00}, 4, 3 + 3,
                "pncounter zero n slot");

    bad_json("{\"type\":\"gcounter\",\"state\":[]}", "state", "state not an object");
    bad_json("{\"type\":\"gcounter\",\"state\":{\"slots\":[],\"x\":1}}", "slots",
             "extra state field");
    bad_json("{\"type\":\"gcounter\",\"state\":{\"slots\":{}}}", "slots", "slots not an array");
    bad_json("{\"type\":\"gcounter\",\"state\":{\"slots\":[{\"replica\":0,\"value\":1}]}}",
             "slots[0].replica", "replica 0");
    bad_json("{\"type\":\"gcounter\",\"state\":{\"slots\":[{\"replica\":2,\"value\":1},"
             "{\"replica\":1,\"value\":1}]}}",
             "slots[1].replica", "unsorted replicas");
    bad_json("{\"type\":\"gcounter\",\"state\":{\"slots\":[{\"replica\":1,\"value\":0}]}}",
             "slots[0].value", "zero value");
    bad_json("{\"type\":\"gcounter\",\"state\":{\"slots\":[{\"replica\":1,\"value\":\"3\"}]}}",
             "slots[0].value", "string value");
    bad_json("{\"type\":\"gcounter\",\"state\":{\"slots\":[{\"replica\":1,\"value\":1,\"x\":0}]}}",
             "slots[0]", "extra slot field");
    bad_json("{\"type\":\"pncounter\",\"state\":{\"p\":[]}}", "state.n", "pncounter missing n");
    bad_json("{\"type\":\"pncounter\",\"state\":{\"p\":[],\"n\":[{\"replica\":1,\"value\":-1}]}}",
             "n[0].value", "pncounter negative n value");
}

/* ---- property laws -------------------------------------------------------------------------- */

static crdt_obj_t *gc_create(void)
{
    return crdt_obj_new(CRDT_GCOUNTER);
}
static crdt_obj_t *pn_create(void)
{
    return crdt_obj_new(CRDT_PNCOUNTER);
}

static crdt_obj_t *gc_mutate(laws_rng_t *rng, crdt_obj_t *state, uint64_t replica,
                             crdt_hlc_t *clock, uint64_t now_ms)
{
    (void)clock;
    (void)now_ms;
    crdt_obj_t *d = NULL;
    /* mostly small increments; now and then a huge one so overflow refusals happen too */
    uint64_t n = laws_below(rng, 8) ? laws_below(rng, 5) : (uint64_t)INT64_MAX / 2;
    crdt_gcounter_incr(state, replica, n, &d);
    return d;
}

static crdt_obj_t *pn_mutate(laws_rng_t *rng, crdt_obj_t *state, uint64_t replica,
                             crdt_hlc_t *clock, uint64_t now_ms)
{
    (void)clock;
    (void)now_ms;
    crdt_obj_t *d = NULL;
    int64_t n;
    switch (laws_below(rng, 10)) {
    case 0: n = INT64_MIN; break;
    case 1: n = INT64_MAX / 2; break;
    case 2: n = -(INT64_MAX / 2); break;
    case 3: {
        crdt_mut_t m = {.type = CRDT_PNCOUNTER, .kind = CRDT_MUT_DELETE};
        crdt_mut_apply(state, &m, replica, &d);
        return d;
    }
    default: n = (int64_t)laws_below(rng, 11) - 5; break;
    }
    crdt_pncounter_add(state, replica, n, &d);
    return d;
}

int main(void)
{
    test_gcounter();
    test_gcounter_overflow();
    test_pncounter();
    test_pncounter_edges();
    test_codecs();

    static const laws_type_t gc = {"gcounter", gc_create, gc_mutate};
    static const laws_type_t pn = {"pncounter", pn_create, pn_mutate};
    laws_run(&gc, 2000);
    laws_run(&pn, 2000);
    return done_testing();
}
