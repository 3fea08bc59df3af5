/* fuzz_logpos.c - libFuzzer harness for crdt.so's change-log parsers: reader positions and log
 * names (logpos.c), the untrusted arguments of CRDT.LOG.READ
 *
 * Whatever crdtm_pos_parse accepts as a position AT must format back to exactly the same bytes
 * (one text per position), and a log name it accepts must be the name crdtm_log_name writes for
 * its tag and epoch, in the slot its tag hashes to. An entry value crdtm_entry_decode accepts
 * stays inside the input, and encodes back to the same bytes when its varints are minimal.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fuzz_common.h"
#include "logpos.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    /* an exact-size heap copy, so ASan catches any read past the end */
    char *s = malloc(size ? size : 1);
    if (!s)
        return 0;
    if (size)
        memcpy(s, data, size);
    crdtm_pos_t p;
    const char *why = NULL;
    if (crdtm_pos_parse(s, size, &p, &why) == 0) {
        if (p.kind == CRDTM_POS_AT) {
            char back[CRDTM_POS_TEXT_MAX];
            size_t n = crdtm_pos_format(&p, back);
            FUZZ_REQUIRE(n == size && memcmp(back, s, size) == 0);
            FUZZ_REQUIRE(p.offset > 0);
        } else {
            FUZZ_REQUIRE(size == 1);
        }
    } else {
        FUZZ_REQUIRE(why && !strncmp(why, "ERR ", 4));
    }
    uint64_t epoch;
    unsigned slot;
    if (crdtm_log_name_parse(s, size, &epoch, &slot)) {
        FUZZ_REQUIRE(slot < CRDTM_SLOTS);
        FUZZ_REQUIRE(crdtm_keyslot(s, size) == slot);
        const size_t plen = sizeof(CRDTM_LOG_PREFIX) - 1;
        size_t tag_len = size - plen - 2 - 16;
        char tag[CRDTM_TAG_MAX];
        memcpy(tag, s + plen, tag_len);
        tag[tag_len] = '\0';
        char back[CRDTM_LOG_NAME_MAX];
        size_t n = crdtm_log_name(back, tag, epoch);
        FUZZ_REQUIRE(n == size && memcmp(back, s, size) == 0);
    }
    (void)crdtm_keyslot(s, size);
    crdtm_entry_t e;
    if (crdtm_entry_decode(s, size, &e) == 0) {
        FUZZ_REQUIRE(e.key >= s && e.key + e.klen <= s + size);
        FUZZ_REQUIRE(e.delta >= e.key + e.klen && e.delta + e.dlen == s + size);
        char *back = malloc(CRDTM_ENTRY_MAX(e.klen, e.dlen));
        if (back) {
            size_t n = crdtm_entry_encode(back, e.key, e.klen, e.origin, e.delta, e.dlen);
            FUZZ_REQUIRE(n <= size);
            crdtm_entry_t again;
            FUZZ_REQUIRE(crdtm_entry_decode(back, n, &again) == 0);
            FUZZ_REQUIRE(again.klen == e.klen && !memcmp(again.key, e.key, e.klen));
            FUZZ_REQUIRE(again.origin == e.origin && again.dlen == e.dlen);
            FUZZ_REQUIRE(!memcmp(again.delta, e.delta, e.dlen));
            free(back);
        }
    }
    free(s);
    return 0;
}
