/* fuzz_op.c - libFuzzer harness for crdt_op_decode (dot varints, then an object frame)
 *
 * Like fuzz_decode, an odd first byte appends the right CRC over the frame part (found by skipping
 * the two leading varints) so the fuzzer gets past the checksum. */
#include "fuzz_common.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static size_t skip_varint(const uint8_t *p, size_t n, size_t at)
{
    while (at < n && (p[at] & 0x80))
        at++;
    return at < n ? at + 1 : n;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    int fix_crc = data[0] & 1;
    data++;
    size--;
    uint8_t *buf = malloc(size + 4);
    if (!buf)
        return 0;
    memcpy(buf, data, size);
    size_t n = size;
    if (fix_crc) {
        size_t frame = skip_varint(buf, n, skip_varint(buf, n, 0));
        fuzz_append_crc(buf, frame, n);
        n += 4;
    }
    crdt_op_t op;
    crdt_error_t err;
    if (crdt_op_decode(buf, n, &op, &err) == 0) {
        crdt_buf_t b = {0};
        FUZZ_REQUIRE(op.delta && op.dot.replica >= 1);
        FUZZ_REQUIRE(crdt_op_encode(&op, &b) == 0);
        FUZZ_REQUIRE(b.len == n && memcmp(b.data, buf, n) == 0);
        crdt_obj_t *state = crdt_obj_new(crdt_obj_type(op.delta));
        FUZZ_REQUIRE(state && crdt_op_apply(state, &op) >= 0 && crdt_op_apply(state, &op) == 0);
        crdt_obj_free(state);
        crdt_buf_free(&b);
        fuzz_check_object(op.delta);
        crdt_op_clear(&op);
    } else {
        FUZZ_REQUIRE(op.delta == NULL && err.text[0]);
    }
    free(buf);
    return 0;
}
