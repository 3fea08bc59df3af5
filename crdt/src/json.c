/* json.c - the JSON frame {"type":..,"state":..} and shared JSON field readers */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "crdt_json.h"
#include "crdt_private.h"

/* ---- field helpers -------------------------------------------------------------------------- */

void *crdt__json_fail(crdt_error_t *err, const char *fmt, ...)
{
    if (err && !err->code) {
        va_list ap;
        va_start(ap, fmt);
        err->code = CRDT_EDECODE;
        err->offset = 0;
        vsnprintf(err->text, sizeof(err->text), fmt, ap);
        va_end(ap);
    }
    return NULL;
}

json_t *crdt_json_bytes(const void *p, size_t n)
{
    if (crdt_utf8_text(p, n))
        return json_stringn_nocheck(n ? (const char *)p : "", n);
    size_t len;
    char *s = crdt_base64_encode(p, n, &len);
    if (!s)
        return NULL;
    json_t *j = json_pack("{s:s%}", "base64", s, len);
    crdt__free(s);
    return j;
}

size_t crdt_json_bytes_len(const void *data, size_t n)
{
    const uint8_t *p = data;
    if (!crdt_utf8_text(p, n))
        return sizeof("{\"base64\":\"\"}") - 1 + crdt_base64_encoded_len(n, CRDT_B64_STD);
    size_t len = n + 2;
    for (size_t i = 0; i < n; i++)
        if (p[i] < 0x20 || p[i] == '"' || p[i] == '\\')
            len += p[i] == '"' || p[i] == '\\' || p[i] == '\b' || p[i] == '\f' || p[i] == '\n' ||
                           p[i] == '\r' || p[i] == '\t'
                       ? 1
                       : 5;
    return len;
}

size_t crdt_json_bytes_write(char *out, const void *data, size_t n)
{
    const uint8_t *p = data;
    char *o = out;
    if (!crdt_utf8_text(p, n)) {
        static const char open[] = "{\"base64\":\"";
        memcpy(o, open, sizeof(open) - 1);
        o += sizeof(open) - 1;
        o += crdt_base64_encode_into(o, p, n, CRDT_B64_STD);
        memcpy(o, "\"}", 2);
        return (size_t)(o + 2 - out);
    }
    *o++ = '"';
    for (size_t i = 0; i < n; i++) {
        uint8_t c = p[i];
        if (c >= 0x20 && c != '"' && c != '\\') {
            *o++ = (char)c;
            continue;
        }
        *o++ = '\\';
        switch (c) {
        case '"': *o++ = '"'; break;
        case '\\': *o++ = '\\'; break;
        case '\b': *o++ = 'b'; break;
        case '\f': *o++ = 'f'; break;
        case '\n': *o++ = 'n'; break;
        case '\r': *o++ = 'r'; break;
        case '\t': *o++ = 't'; break;
        default:
            *o++ = 'u';
            *o++ = '0';
            *o++ = '0';
            *o++ = "0123456789ABCDEF"[c >> 4];
            *o++ = "0123456789ABCDEF"[c & 15];
            break;
        }
    }
    *o++ = '"';
    return (size_t)(o - out);
}

int crdt_json_get_bytes(const json_t *j, size_t max, uint8_t **out, size_t *n, const char **why)
{
    static const char *const shape = "expected a string or {\"base64\":\"...\"}";
    if (json_is_string(j)) {
        size_t len = json_string_length(j);
        if (len > max) {
            *why = "longer than the limit";
            return CRDT_EDECODE;
        }
        uint8_t *b = crdt__malloc(len ? len : 1);
        if (!b)
            return CRDT_ENOMEM;
        if (len)
            memcpy(b, json_string_value(j), len);
        *out = b;
        *n = len;
        return 0;
    }
    const json_t *b64 = json_is_object(j) && json_object_size(j) == 1
                            ? json_object_get(j, "base64")
                            : NULL;
    if (!json_is_string(b64)) {
        *why = shape;
        return CRDT_EDECODE;
    }
    size_t slen = json_string_length(b64);
    if (max <= SIZE_MAX - 3 && slen / 4 * 3 > max + 2) { /* SIZE_MAX: no bound */
        *why = "longer than the limit";
        return CRDT_EDECODE;
    }
    int rc = crdt_base64_decode(json_string_value(b64), slen, out, n);
    if (rc == CRDT_EDECODE)
        *why = "invalid base64 (standard alphabet, padded)";
    if (rc == 0 && *n > max) {
        crdt__free(*out);
        *out = NULL;
        *why = "longer than the limit";
        return CRDT_EDECODE;
    }
    return rc;
}

json_t *crdt__json_blob(const void *p, size_t n)
{
    return crdt_json_bytes(p, n);
}

int crdt__json_get_blob(const json_t *j, const char *what, uint8_t **out, size_t *n,
                        crdt_error_t *err)
{
    const char *why = NULL;
    int rc = crdt_json_get_bytes(j, CRDT_MAX_BLOB, out, n, &why);
    if (rc == CRDT_EDECODE)
        crdt__json_fail(err, "%s: %s", what, why);
    return rc;
}

int crdt__json_get_int(const json_t *j, const char *what, int64_t min, int64_t max, int64_t *out,
                       crdt_error_t *err)
{
    if (!json_is_integer(j)) {
        crdt__json_fail(err, "%s: expected an integer", what);
        return CRDT_EDECODE;
    }
    json_int_t v = json_integer_value(j);
    if (v < min || v > max) {
        crdt__json_fail(err, "%s: %lld out of range [%lld, %lld]", what, (long long)v,
                        (long long)min, (long long)max);
        return CRDT_EDECODE;
    }
    *out = (int64_t)v;
    return 0;
}

int crdt__json_get_score(const json_t *j, const char *what, double *out, crdt_error_t *err)
{
    if (!json_is_number(j)) {
        crdt__json_fail(err, "%s: expected a number", what);
        return CRDT_EDECODE;
    }
    double d = json_number_value(j);
    if (!isfinite(d)) {
        crdt__json_fail(err, "%s: not a finite number", what);
        return CRDT_EDECODE;
    }
    *out = d == 0 ? 0.0 : d;
    return 0;
}

json_t *crdt_hlc_to_json(const crdt_hlc_ts_t *ts)
{
    /* ms and node stay below 2^63 on every clock we issue; logical is 32 bits */
    return json_pack("{s:I,s:I,s:I}", "ms", (json_int_t)ts->ms, "c", (json_int_t)ts->logical,
                     "node", (json_int_t)ts->node);
}

int crdt__json_get_hlc(const json_t *j, const char *what, crdt_hlc_ts_t *ts, crdt_error_t *err)
{
    int64_t ms, c, node;
    char field[96];
    if (!json_is_object(j)) {
        crdt__json_fail(err, "%s: expected an object {\"ms\",\"c\",\"node\"}", what);
        return CRDT_EDECODE;
    }
    snprintf(field, sizeof(field), "%s.ms", what);
    if (crdt__json_get_int(json_object_get(j, "ms"), field, 0, INT64_MAX, &ms, err) < 0)
        return CRDT_EDECODE;
    snprintf(field, sizeof(field), "%s.c", what);
    if (crdt__json_get_int(json_object_get(j, "c"), field, 0, UINT32_MAX, &c, err) < 0)
        return CRDT_EDECODE;
    snprintf(field, sizeof(field), "%s.node", what);
    if (crdt__json_get_int(json_object_get(j, "node"), field, 0, INT64_MAX, &node, err) < 0)
        return CRDT_EDECODE;
    if (json_object_size(j) != 3) {
        crdt__json_fail(err, "%s: unexpected fields", what);
        return CRDT_EDECODE;
    }
    ts->ms = (uint64_t)ms;
    ts->logical = (uint32_t)c;
    ts->node = (uint64_t)node;
    return 0;
}

int crdt_hlc_from_json(const json_t *j, crdt_hlc_ts_t *ts)
{
    return crdt__json_get_hlc(j, "hlc", ts, NULL);
}

/* ---- the frame ------------------------------------------------------------------------------ */

json_t *crdt_obj_to_json(const crdt_obj_t *o)
{
    json_t *state = o->vt->to_json(o);
    if (!state)
        return NULL;
    return json_pack("{s:s,s:o}", "type", o->vt->name, "state", state);
}

crdt_obj_t *crdt_obj_from_json(const json_t *j, crdt_error_t *err)
{
    if (err)
        memset(err, 0, sizeof(*err));
    if (!json_is_object(j))
        return crdt__json_fail(err, "expected an object {\"type\":..., \"state\":...}");
    const json_t *type = json_object_get(j, "type");
    const json_t *state = json_object_get(j, "state");
    crdt_type_t t;
    if (!json_is_string(type) || crdt_type_from_name(json_string_value(type), &t) < 0)
        return crdt__json_fail(err, "type: expected one of gcounter, pncounter, lwwreg, lwwset, "
                                    "orset, timeline");
    if (!state)
        return crdt__json_fail(err, "state: missing");
    if (json_object_size(j) != 2)
        return crdt__json_fail(err, "unexpected fields beside type and state");
    const crdt__vtable_t *vt = crdt__vtable_of((int)t);
    crdt_obj_t *o = vt->from_json(state, err);
    if (!o && err && !err->code)
        crdt__json_fail(err, "state: invalid %s", vt->name);
    return o;
}
