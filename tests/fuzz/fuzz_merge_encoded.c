/* fuzz_merge_encoded.c - libFuzzer harness for crdt_obj_merge_encoded_many (log replay's joiner)
 *
 * The first input byte picks a mode: bit 0 appends the correct CRC-32C to each encoding (so the
 * fuzzer reaches the payload readers), bit 1 splits the rest in two encodings at a point the
 * second byte gives. The batch [a valid delta, the input's encodings, the valid delta again] is
 * joined into an empty timeline, a bounded full one with a floor, and a counter. Required: the
 * join succeeds exactly when every encoding decodes to dst's type, then equals decoding and
 * merging each (same bytes, same changed flag); otherwise dst is unchanged. */
#include "fuzz_common.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static crdt_obj_t *make_dst(int which)
{
    if (which == 2) {
        crdt_obj_t *c = crdt_obj_new(CRDT_GCOUNTER);
        crdt_gcounter_incr(c, 1, 5, NULL);
        return c;
    }
    crdt_obj_t *t = crdt_timeline_new(which == 1 ? 3 : 0);
    static const char *m[] = {"a", "b", "c", "d", "e"};
    for (int i = 0; which == 1 && i < 5; i++)
        crdt_timeline_add(t, m[i], 1, (double)i, NULL);
    return t;
}

static bool same_bytes(const crdt_obj_t *a, const crdt_obj_t *b)
{
    crdt_buf_t x = {0}, y = {0};
    FUZZ_REQUIRE(crdt_obj_encode(a, &x) == 0 && crdt_obj_encode(b, &y) == 0);
    bool same = x.len == y.len && memcmp(x.data, y.data, x.len) == 0;
    crdt_buf_free(&x);
    crdt_buf_free(&y);
    return same;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 2)
        return 0;
    int fix_crc = data[0] & 1, split = data[0] & 2;
    size_t cut = split ? data[1] : 0;
    data += split ? 2 : 1;
    size -= split ? 2 : 1;
    if (cut > size)
        cut = size;
    size_t part_len[2] = {split ? cut : size, split ? size - cut : 0};
    int parts = split ? 2 : 1;
    uint8_t *buf[2] = {NULL, NULL};
    crdt_bytes_t encs[4];
    size_t from = 0;
    for (int i = 0; i < parts; i++) {
        buf[i] = malloc(part_len[i] + 4);
        if (!buf[i])
            goto out;
        memcpy(buf[i], data + from, part_len[i]);
        from += part_len[i];
        size_t n = part_len[i];
        if (fix_crc) {
            fuzz_append_crc(buf[i], 0, n);
            n += 4;
        }
        encs[1 + i] = (crdt_bytes_t){buf[i], n};
    }
    crdt_obj_t *tmp = crdt_timeline_new(0), *d = NULL;
    crdt_timeline_add(tmp, "z", 1, 7, &d);
    crdt_buf_t good = {0};
    FUZZ_REQUIRE(d && crdt_obj_encode(d, &good) == 0);
    crdt_obj_free(d);
    crdt_obj_free(tmp);
    encs[0] = encs[parts + 1] = (crdt_bytes_t){good.data, good.len};
    size_t n = (size_t)parts + 2;
    for (int which = 0; which < 3; which++) {
        crdt_obj_t *dst = make_dst(which), *ref = crdt_obj_clone(dst), *got = crdt_obj_clone(dst);
        FUZZ_REQUIRE(dst && ref && got);
        bool all_ok = true;
        int ref_changed = 0;
        for (size_t i = 0; i < n && all_ok; i++) {
            crdt_obj_t *o = crdt_obj_decode(encs[i].data, encs[i].len, NULL);
            all_ok = o && crdt_obj_type(o) == crdt_obj_type(dst);
            if (all_ok)
                ref_changed |= crdt_obj_merge(ref, o);
            crdt_obj_free(o);
        }
        crdt_error_t err;
        size_t failed = n;
        int rc = crdt_obj_merge_encoded_many(got, encs, n, &failed, &err);
        if (all_ok) {
            FUZZ_REQUIRE(rc == ref_changed);
            FUZZ_REQUIRE(same_bytes(got, ref));
        } else {
            FUZZ_REQUIRE(rc == CRDT_EDECODE || rc == CRDT_ETYPE || rc == CRDT_ENOMEM);
            FUZZ_REQUIRE(err.code == rc && err.text[0]);
            if (rc != CRDT_ENOMEM) {
                FUZZ_REQUIRE(failed < n && err.offset <= encs[failed].len);
                FUZZ_REQUIRE(same_bytes(got, dst));
            }
        }
        crdt_obj_free(dst);
        crdt_obj_free(ref);
        crdt_obj_free(got);
    }
    crdt_buf_free(&good);
out:
    free(buf[0]);
    free(buf[1]);
    return 0;
}
