/* fuzz_logval.c - libFuzzer harness for crdt.so's change-log values (logval.c): the bytes rdb_load
 * gets, from an RDB file or an untrusted RESTORE payload
 *
 * crdtm_lv_decode must refuse or accept without reading past the input; a log it accepts must
 * serve every walk the module makes (seek to any offset, read to the end, trim, groups), hold as
 * many entries as it says, and encode to bytes that decode to a log encoding the same again.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fuzz_common.h"
#include "logval.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    /* an exact-size heap copy, so ASan catches any read past the end */
    char *s = malloc(size ? size : 1);
    if (!s)
        return 0;
    if (size)
        memcpy(s, data, size);
    const char *why = NULL;
    crdtm_logval_t *lv = crdtm_lv_decode(s, size, &why);
    if (!lv) {
        FUZZ_REQUIRE(why && *why);
        free(s);
        return 0;
    }
    FUZZ_REQUIRE(lv->len <= lv->added);
    crdtm_lv_iter_t it;
    crdtm_rec_t r;
    uint64_t n = 0, want = crdtm_lv_first(lv);
    crdtm_lv_seek(lv, 0, &it);
    while (crdtm_lv_next(&it, &r)) {
        FUZZ_REQUIRE(r.offset == want++);
        FUZZ_REQUIRE(r.entry >= r.rec && r.entry + r.elen == r.rec + r.rlen);
        n++;
    }
    FUZZ_REQUIRE(n == lv->len);
    for (uint64_t o = crdtm_lv_first(lv); o <= lv->added; o += 1 + (o - crdtm_lv_first(lv)) / 3) {
        crdtm_lv_seek(lv, o, &it);
        FUZZ_REQUIRE(crdtm_lv_next(&it, &r) && r.offset == o);
    }
    size_t n1, n2;
    char *b1 = crdtm_lv_encode(lv, &n1);
    FUZZ_REQUIRE(b1);
    crdtm_logval_t *back = crdtm_lv_decode(b1, n1, &why);
    FUZZ_REQUIRE(back && back->len == lv->len && back->added == lv->added &&
                 back->ngroups == lv->ngroups);
    char *b2 = crdtm_lv_encode(back, &n2);
    FUZZ_REQUIRE(b2 && n1 == n2 && memcmp(b1, b2, n1) == 0);
    /* trim to the middle: the rest still reads */
    uint64_t mid = crdtm_lv_first(lv) + lv->len / 2;
    uint64_t gone = crdtm_lv_trim(back, mid);
    FUZZ_REQUIRE(gone <= lv->len && back->len == lv->len - gone);
    n = 0;
    crdtm_lv_seek(back, 0, &it);
    while (crdtm_lv_next(&it, &r))
        n++;
    FUZZ_REQUIRE(n == back->len);
    uint64_t acked;
    if (crdtm_lv_min_acked(lv, &acked))
        FUZZ_REQUIRE(acked <= lv->added);
    free(b1);
    free(b2);
    crdtm_lv_free(back);
    crdtm_lv_free(lv);
    free(s);
    return 0;
}
