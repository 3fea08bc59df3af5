/* fuzz_decode.c - libFuzzer harness for crdt_obj_decode
 *
 * The first input byte picks a mode: odd appends the correct CRC-32C to the rest, so the fuzzer
 * reaches the payload decoders instead of stopping at the checksum; even passes the rest as is.
 * Whatever the decoder accepts must be canonical: it re-encodes to exactly the input. */
#include "fuzz_common.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

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
        fuzz_append_crc(buf, 0, n);
        n += 4;
    }
    crdt_error_t err;
    crdt_obj_t *o = crdt_obj_decode(buf, n, &err);
    if (o) {
        crdt_buf_t b = {0};
        FUZZ_REQUIRE(crdt_obj_encode(o, &b) == 0);
        FUZZ_REQUIRE(b.len == n && memcmp(b.data, buf, n) == 0);
        crdt_buf_free(&b);
        fuzz_check_object(o);
        crdt_obj_free(o);
    } else {
        FUZZ_REQUIRE(err.code == CRDT_EDECODE || err.code == CRDT_ENOMEM);
        FUZZ_REQUIRE(err.offset <= n && err.text[0]);
    }
    free(buf);
    return 0;
}
