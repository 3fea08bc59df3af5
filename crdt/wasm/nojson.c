/* nojson.c - the JSON codec's absence in the WebAssembly build: every jansson call fails */
/* libcrdt's type files reach their JSON faces only through crdt_obj_to_json / crdt_obj_from_json
 * (json.c), which the wasm build leaves out and the ABI does not export. These definitions satisfy
 * the links of the vtables without jansson: value constructors return NULL (to_json reports
 * "out of memory", so nothing half-built escapes), readers see no value, and the field helpers
 * report that the build has no JSON. */
#include <stdio.h>

#include "crdt_json.h"
#include "crdt_private.h"

json_t *json_object(void)
{
    return NULL;
}
json_t *json_array(void)
{
    return NULL;
}
json_t *json_real(double value)
{
    (void)value;
    return NULL;
}
json_t *json_boolean(int value)
{
    (void)value;
    return NULL;
}
json_t *json_null(void)
{
    return NULL;
}
json_t *json_pack(const char *fmt, ...)
{
    (void)fmt;
    return NULL;
}
int json_object_set_new(json_t *object, const char *key, json_t *value)
{
    (void)object, (void)key, (void)value;
    return -1;
}
json_t *json_object_get(const json_t *object, const char *key)
{
    (void)object, (void)key;
    return NULL;
}
size_t json_object_size(const json_t *object)
{
    (void)object;
    return 0;
}
int json_array_append_new(json_t *array, json_t *value)
{
    (void)array, (void)value;
    return -1;
}
json_t *json_array_get(const json_t *array, size_t index)
{
    (void)array, (void)index;
    return NULL;
}
size_t json_array_size(const json_t *array)
{
    (void)array;
    return 0;
}
void json_decref(json_t *json)
{
    (void)json;
}
int json_is_object(const json_t *json)
{
    (void)json;
    return 0;
}
int json_is_array(const json_t *json)
{
    (void)json;
    return 0;
}
int json_is_boolean(const json_t *json)
{
    (void)json;
    return 0;
}
int json_is_true(const json_t *json)
{
    (void)json;
    return 0;
}
int json_is_null(const json_t *json)
{
    (void)json;
    return 0;
}

/* ---- libcrdt's JSON field helpers (json.c in the native build) ------------------------------ */

static void no_json(crdt_error_t *err)
{
    if (err && !err->code) {
        err->code = CRDT_EDECODE;
        err->offset = 0;
        snprintf(err->text, sizeof(err->text), "this build of libcrdt has no JSON codec");
    }
}

void *crdt__json_fail(crdt_error_t *err, const char *fmt, ...)
{
    (void)fmt;
    no_json(err);
    return NULL;
}

json_t *crdt__json_blob(const void *p, size_t n)
{
    (void)p, (void)n;
    return NULL;
}

int crdt__json_get_blob(const json_t *j, const char *what, uint8_t **out, size_t *n,
                        crdt_error_t *err)
{
    (void)j, (void)what, (void)out, (void)n;
    no_json(err);
    return CRDT_EDECODE;
}

int crdt__json_get_int(const json_t *j, const char *what, int64_t min, int64_t max, int64_t *out,
                       crdt_error_t *err)
{
    (void)j, (void)what, (void)min, (void)max, (void)out;
    no_json(err);
    return CRDT_EDECODE;
}

int crdt__json_get_score(const json_t *j, const char *what, double *out, crdt_error_t *err)
{
    (void)j, (void)what, (void)out;
    no_json(err);
    return CRDT_EDECODE;
}

int crdt__json_get_hlc(const json_t *j, const char *what, crdt_hlc_ts_t *ts, crdt_error_t *err)
{
    (void)j, (void)what, (void)ts;
    no_json(err);
    return CRDT_EDECODE;
}

json_t *crdt_hlc_to_json(const crdt_hlc_ts_t *ts)
{
    (void)ts;
    return NULL;
}
