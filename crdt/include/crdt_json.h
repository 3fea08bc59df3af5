/* crdt_json.h - libcrdt's JSON codec (jansson), the shapes documented in docs/encoding.md */
#ifndef CRDT_JSON_H
#define CRDT_JSON_H

#include <jansson.h>

#include "crdt.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Returns a new reference to the JSON form of o, or NULL on allocation failure. Members and
 * values are byte strings in their JSON form (crdt_json_bytes: a string when they are text, else
 * {"base64":...}); scores are JSON reals that read back to the same double. */
json_t *crdt_obj_to_json(const crdt_obj_t *o);

/* Returns a new object from its JSON form (j is borrowed), or NULL with *err filled: CRDT_EDECODE
 * and a message naming the offending field. */
crdt_obj_t *crdt_obj_from_json(const json_t *j, crdt_error_t *err);

/* The one JSON form of a byte string (key, prefix, member, register value) in every layer
 * (docs/encoding.md, "Bytes in JSON and URLs"): a JSON string when crdt_utf8_text(p, n), else
 * {"base64":"<standard base64, padded>"}. A new reference, or NULL on allocation failure. */
json_t *crdt_json_bytes(const void *p, size_t n);

/* The same form as text, for writers that do not build jansson values (the gateway's hot paths,
 * the crdt.v1 encoder): crdt_json_bytes_len is the number of characters the form of p[0..n)
 * takes; crdt_json_bytes_write writes it into out (that many, no NUL) and returns the length. A text string is escaped as jansson escapes it (", \\, the C0 controls; no other
 * character), so both writers agree byte for byte. */
size_t crdt_json_bytes_len(const void *p, size_t n);
size_t crdt_json_bytes_write(char *out, const void *p, size_t n);

/* Reads either form of crdt_json_bytes (j borrowed; a string may hold any UTF-8, NUL included
 * when the parser allowed it): 0 and a new buffer *out of *n bytes (free with crdt_free; never
 * NULL, even for 0 bytes), or CRDT_EDECODE with *why a static reason ("expected a string or
 * {\"base64\":...}", "invalid base64", "longer than max"), or CRDT_ENOMEM. max bounds the
 * decoded length. */
int crdt_json_get_bytes(const json_t *j, size_t max, uint8_t **out, size_t *n, const char **why);

/* JSON <-> HLC timestamp {"ms":N,"c":N,"node":N}. */
json_t *crdt_hlc_to_json(const crdt_hlc_ts_t *ts);
int crdt_hlc_from_json(const json_t *j, crdt_hlc_ts_t *ts);

#ifdef __cplusplus
}
#endif

#endif /* CRDT_JSON_H */
