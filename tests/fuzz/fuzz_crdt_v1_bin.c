/* fuzz_crdt_v1_bin.c - libFuzzer harness for binary crdt.v1 (gateway/proto/crdt_v1_bin.c)
 *
 * The first byte picks the side whose messages are decoded (bit 0: the server's, else the
 * client's) and the limits (bit 1: max_key 16 and max_topics 4, else none); the rest is one binary
 * message. Whatever the decoder accepts must encode, and decode again to an equal struct (and the
 * same bytes); whatever it refuses must name a documented error code and say why. */
#include "crdt_v1_bin.h"
#include "fuzz_common.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (!size)
        return 0;
    unsigned from = data[0] & 1 ? CRDT_V1_FROM_SERVER : CRDT_V1_FROM_CLIENT;
    crdt_v1_limits_t lim = {16, 4}, *lp = data[0] & 2 ? &lim : NULL;
    crdt_v1_msg_t m, back;
    crdt_v1_error_t err;
    if (crdt_v1_bin_decode(data + 1, size - 1, from, lp, &m, &err)) {
        FUZZ_REQUIRE(crdt_v1_code_name(err.code) && err.text[0]);
        FUZZ_REQUIRE(m.type == CRDT_V1_NONE && !m.key && !m.topics && !m.obj && !m.op);
        return 0;
    }
    FUZZ_REQUIRE(crdt_v1_type_name(m.type) && crdt_v1_bin_has(&m));
    crdt_buf_t b = {0}, b2 = {0};
    FUZZ_REQUIRE(crdt_v1_bin_encode(&m, &b) == 0);
    int rc = crdt_v1_bin_decode(b.data, b.len, from, lp, &back, &err);
    if (rc)
        fprintf(stderr, "fuzz: re-encoding refused (%s)\n", err.text);
    FUZZ_REQUIRE(rc == 0);
    FUZZ_REQUIRE(crdt_v1_msg_equal(&m, &back));
    FUZZ_REQUIRE(crdt_v1_bin_encode(&back, &b2) == 0);
    FUZZ_REQUIRE(b2.len == b.len && memcmp(b.data, b2.data, b.len) == 0);
    /* the JSON form says the same (a binary apply is a merge op; a change carries its object) */
    crdt_buf_t j = {0};
    FUZZ_REQUIRE(crdt_v1_encode(&m, &j) == 0);
    if (m.obj)
        fuzz_check_object(m.obj);
    crdt_v1_msg_clear(&back);
    crdt_v1_msg_clear(&m);
    crdt_buf_free(&b);
    crdt_buf_free(&b2);
    crdt_buf_free(&j);
    return 0;
}
