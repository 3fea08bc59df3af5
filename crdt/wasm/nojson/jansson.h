/* jansson.h - the WebAssembly build's stand-in for jansson: libcrdt without its JSON codec.
 *
 * libcrdt's type files carry their JSON faces (to_json/from_json in each vtable) beside the binary
 * codec, so they include <jansson.h> through crdt_private.h. The wasm build leaves json.c (the JSON
 * entry points) out and compiles against this header instead: it declares the part of jansson's
 * API the type files use, and nojson.c defines every one as a failure (no value is ever made), so
 * nothing JSON is reachable from the exported ABI and nothing of jansson is linked. A jansson call
 * added to crdt/src that is not declared here fails the wasm build at compile time, not at run
 * time. Only on the wasm include path; never installed. */
#ifndef CRDT_WASM_NOJSON_JANSSON_H
#define CRDT_WASM_NOJSON_JANSSON_H

/* What jansson.h itself includes, which libcrdt's files may rely on (timeline.c's snprintf). */
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>

typedef struct json_t json_t; /* never defined: no value exists */
typedef long long json_int_t;

json_t *json_object(void);
json_t *json_array(void);
json_t *json_real(double value);
json_t *json_boolean(int value);
json_t *json_null(void);
json_t *json_pack(const char *fmt, ...);
int json_object_set_new(json_t *object, const char *key, json_t *value);
json_t *json_object_get(const json_t *object, const char *key);
size_t json_object_size(const json_t *object);
int json_array_append_new(json_t *array, json_t *value);
json_t *json_array_get(const json_t *array, size_t index);
size_t json_array_size(const json_t *array);
void json_decref(json_t *json);
int json_is_object(const json_t *json);
int json_is_array(const json_t *json);
int json_is_boolean(const json_t *json);
int json_is_true(const json_t *json);
int json_is_null(const json_t *json);

#endif /* CRDT_WASM_NOJSON_JANSSON_H */
