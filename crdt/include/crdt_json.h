/* crdt_json.h - libcrdt's JSON codec (jansson), the shapes documented in docs/encoding.md */
#ifndef CRDT_JSON_H
#define CRDT_JSON_H

#include <jansson.h>

#include "crdt.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Returns a new reference to the JSON form of o, or NULL on allocation failure. Members and
 * values are base64; scores are JSON reals that read back to the same double. */
json_t *crdt_obj_to_json(const crdt_obj_t *o);

/* Returns a new object from its JSON form (j is borrowed), or NULL with *err filled: CRDT_EDECODE
 * and a message naming the offending field. */
crdt_obj_t *crdt_obj_from_json(const json_t *j, crdt_error_t *err);

/* JSON <-> HLC timestamp {"ms":N,"c":N,"node":N}. */
json_t *crdt_hlc_to_json(const crdt_hlc_ts_t *ts);
int crdt_hlc_from_json(const json_t *j, crdt_hlc_ts_t *ts);

#ifdef __cplusplus
}
#endif

#endif /* CRDT_JSON_H */
