/* roshi_scan.h - reading roshi-server's request bodies (roshi_scan.c): tuple arrays and key arrays
 *
 * Layer: bottom (includes nothing of gateway/); used by roshi.c and tests/fuzz/fuzz_roshi_scan.c.
 *
 * Each body has two readers with one meaning. The fast one is a bounds-checked scanner of the
 * shape clients send ([{"key":"..","score":n,"member":".."},...] and ["..",...]: the field names in
 * lower case, base64 strings without escapes, null, JSON numbers) that allocates nothing and
 * decodes the base64 into the caller's arena; it declines (returns 0) anything else, and anything
 * it would have to refuse. The other reads the body with jansson as Go's encoding/json reads it
 * (roshi-server's semantics, its error messages) and decides everything the fast one declined.
 * tests/fuzz/fuzz_roshi_scan.c checks that whatever the fast one accepts, the jansson one accepts
 * with the same result.
 */
#ifndef CRDT_GW_ROSHI_SCAN_H
#define CRDT_GW_ROSHI_SCAN_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* A tuple {key, score, member}: bytes in the arena (a missing or null field is empty / 0). */
typedef struct gw_roshi_tuple {
    const uint8_t *key, *member;
    size_t klen, mlen;
    double score;
} gw_roshi_tuple_t;

/* A key of a select: bytes in the arena. */
typedef struct gw_roshi_key {
    const uint8_t *p;
    size_t len;
} gw_roshi_key_t;

/* A refused body: the HTTP status (400, or 500 when out of memory) and roshi's error text. */
typedef struct gw_roshi_err {
    int status;
    char msg[256];
} gw_roshi_err_t;

/* An upper bound of the elements of the body's array (its commas + 1): the capacity to pass. */
size_t gw_roshi_max_elems(const char *body, size_t len);
/* The arena the readers need: len + 3 bytes (decoded base64 is shorter than its text). */
#define GW_ROSHI_ARENA(len) ((len) + 3)

/* The fast readers: 1 and *n elements in out[0..cap), or 0 (declined: use the jansson reader). */
int gw_roshi_tuples_fast(const char *body, size_t len, uint8_t *arena, gw_roshi_tuple_t *out,
                         size_t cap, size_t *n);
int gw_roshi_keys_fast(const char *body, size_t len, uint8_t *arena, gw_roshi_key_t *out,
                       size_t cap, size_t *n);

/* The jansson readers: 0 and *n elements, or -1 with *err. */
int gw_roshi_tuples_json(const char *body, size_t len, uint8_t *arena, gw_roshi_tuple_t *out,
                         size_t cap, size_t *n, gw_roshi_err_t *err);
int gw_roshi_keys_json(const char *body, size_t len, uint8_t *arena, gw_roshi_key_t *out,
                       size_t cap, size_t *n, gw_roshi_err_t *err);

/* The fast reader, else the jansson one. */
int gw_roshi_tuples(const char *body, size_t len, uint8_t *arena, gw_roshi_tuple_t *out,
                    size_t cap, size_t *n, gw_roshi_err_t *err);
int gw_roshi_keys(const char *body, size_t len, uint8_t *arena, gw_roshi_key_t *out, size_t cap,
                  size_t *n, gw_roshi_err_t *err);

#endif /* CRDT_GW_ROSHI_SCAN_H */
