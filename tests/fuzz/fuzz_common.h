/* fuzz_common.h - checks shared by the decoder harnesses: what a decoder accepts must be canonical */
#ifndef CRDT_FUZZ_COMMON_H
#define CRDT_FUZZ_COMMON_H

#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "crdt.h"
#include "crdt_json.h"

/* A finding: print it and abort so libFuzzer saves the input. */
#define FUZZ_REQUIRE(cond)                                                                        \
    do {                                                                                          \
        if (!(cond)) {                                                                            \
            fprintf(stderr, "fuzz: requirement failed: %s (%s:%d)\n", #cond, __FILE__, __LINE__); \
            abort();                                                                              \
        }                                                                                         \
    } while (0)

/* An accepted object must re-encode to a decodable equal state, survive JSON, and merge. */
static inline void fuzz_check_object(const crdt_obj_t *o)
{
    crdt_buf_t b = {0};
    crdt_error_t err;
    FUZZ_REQUIRE(crdt_obj_encode(o, &b) == 0);
    crdt_obj_t *back = crdt_obj_decode(b.data, b.len, &err);
    FUZZ_REQUIRE(back && crdt_obj_equal(back, o));
    json_t *j = crdt_obj_to_json(o);
    FUZZ_REQUIRE(j);
    crdt_obj_t *fromj = crdt_obj_from_json(j, &err);
    FUZZ_REQUIRE(fromj && crdt_obj_equal(fromj, o));
    FUZZ_REQUIRE(crdt_obj_merge(back, o) == 0); /* joining what it holds changes nothing */
    crdt_stats_t st;
    crdt_obj_stats(o, &st);
    json_decref(j);
    crdt_obj_free(fromj);
    crdt_obj_free(back);
    crdt_buf_free(&b);
}

static inline void fuzz_append_crc(uint8_t *buf, size_t from, size_t n)
{
    uint32_t crc = crdt_crc32c(0, buf + from, n - from);
    for (int i = 0; i < 4; i++)
        buf[n + (size_t)i] = (uint8_t)(crc >> (8 * i));
}

#endif
