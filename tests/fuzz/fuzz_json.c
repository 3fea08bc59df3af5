/* fuzz_json.c - libFuzzer harness for crdt_obj_from_json over arbitrary JSON text */
#include "fuzz_common.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    json_error_t jerr;
    json_t *j = json_loadb((const char *)data, size, JSON_DECODE_ANY, &jerr);
    if (!j)
        return 0;
    crdt_error_t err;
    crdt_obj_t *o = crdt_obj_from_json(j, &err);
    if (o) {
        fuzz_check_object(o);
        crdt_obj_free(o);
    } else {
        FUZZ_REQUIRE(err.code == CRDT_EDECODE && err.text[0]);
    }
    json_decref(j);
    return 0;
}
