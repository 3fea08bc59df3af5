/* roshi_scan.c - reading roshi-server's request bodies: a fast scanner and jansson, one meaning */
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <jansson.h>

#include "crdt.h"
#include "roshi_scan.h"

/*
 * roshi-server decodes its bodies with Go's encoding/json into []common.KeyScoreMember (whose
 * UnmarshalJSON reads {"key":[]byte,"score":float64,"member":[]byte}) and [][]byte. Its profile
 * here was jansson's: an object, three values and their strings per tuple, then a base64 buffer
 * each. The fast scanner reads the usual shape in place; it declines anything it is not sure of,
 * so the jansson reader (the reference) gives every refusal and every unusual case.
 */

size_t gw_roshi_max_elems(const char *body, size_t len)
{
    size_t n = 1;
    for (const char *p = body, *end = body + len; (p = memchr(p, ',', (size_t)(end - p))); p++)
        n++;
    return n;
}

/* ---- the fast scanner ----------------------------------------------------------------------- */

typedef struct scan {
    const char *p, *end;
} scan_t;

static void ws(scan_t *s)
{
    while (s->p < s->end && (*s->p == ' ' || *s->p == '\t' || *s->p == '\n' || *s->p == '\r'))
        s->p++;
}

static bool lit(scan_t *s, const char *w, size_t n)
{
    if ((size_t)(s->end - s->p) < n || memcmp(s->p, w, n))
        return false;
    s->p += n;
    return true;
}

/* null, or a string of base64 characters decoded into *arena: false to decline. */
static bool bytes_value(scan_t *s, uint8_t **arena, const uint8_t **p, size_t *n)
{
    *p = *arena, *n = 0;
    if (lit(s, "null", 4))
        return true;
    if (s->p >= s->end || *s->p != '"')
        return false;
    const char *b = ++s->p;
    /* Up to the next quote; anything in between that is not base64 (an escape, a control
     * character, UTF-8) makes the decoder refuse, and so the scanner decline. */
    const char *q = memchr(b, '"', (size_t)(s->end - b));
    if (!q)
        return false;
    s->p = q + 1;
    if (crdt_base64_decode_into(*arena, b, (size_t)(q - b), CRDT_B64_STD, n) < 0)
        return false;
    *arena += *n;
    return true;
}

static bool digits(scan_t *s)
{
    const char *b = s->p;
    while (s->p < s->end && *s->p >= '0' && *s->p <= '9')
        s->p++;
    return s->p > b;
}

/* null, or a JSON number (its grammar exactly) that is a finite double: false to decline. */
static bool number_value(scan_t *s, double *d)
{
    *d = 0;
    if (lit(s, "null", 4))
        return true;
    /* An integer of up to 15 digits (scores are timestamps and counters): one pass, and the
     * value is exact (below 2^53), as the general reading below gives it. */
    const char *f = s->p + (s->p < s->end && *s->p == '-');
    if (f < s->end && *f >= '1' && *f <= '9') {
        const char *q = f;
        uint64_t v = 0;
        while (q < s->end && q - f < 15 && *q >= '0' && *q <= '9')
            v = v * 10 + (uint64_t)(*q++ - '0');
        if (q == s->end || !((*q >= '0' && *q <= '9') || *q == '.' || *q == 'e' || *q == 'E')) {
            *d = f > s->p ? -(double)v : (double)v;
            s->p = q;
            return true;
        }
    }
    const char *b = s->p;
    if (s->p < s->end && *s->p == '-')
        s->p++;
    if (s->p < s->end && *s->p == '0')
        s->p++;
    else if (!(s->p < s->end && *s->p >= '1' && *s->p <= '9' && digits(s)))
        return false;
    if (s->p < s->end && *s->p == '.') {
        s->p++;
        if (!digits(s))
            return false;
    }
    if (s->p < s->end && (*s->p == 'e' || *s->p == 'E')) {
        s->p++;
        if (s->p < s->end && (*s->p == '+' || *s->p == '-'))
            s->p++;
        if (!digits(s))
            return false;
    }
    /* Clinger's fast path: up to 15 significant digits and no exponent make a mantissa below 2^53
     * and a power of ten that are both exact doubles, so one division rounds as strtod does */
    static const double pow10[] = {1e0, 1e1, 1e2, 1e3, 1e4, 1e5, 1e6, 1e7, 1e8,
                                   1e9, 1e10, 1e11, 1e12, 1e13, 1e14, 1e15};
    uint64_t m = 0;
    size_t nd = 0, frac = 0;
    bool dot = false, simple = true;
    for (const char *q = b + (*b == '-'); q < s->p && simple; q++) {
        if (*q == '.') {
            dot = true;
        } else if (*q >= '0' && *q <= '9') {
            m = m * 10 + (uint64_t)(*q - '0');
            nd++;
            frac += dot;
        } else {
            simple = false; /* an exponent */
        }
    }
    if (simple && nd <= 15) {
        *d = (double)m / pow10[frac];
        if (*b == '-')
            *d = -*d;
        return true;
    }
    char buf[64];
    size_t n = (size_t)(s->p - b);
    if (n >= sizeof(buf))
        return false;
    memcpy(buf, b, n);
    buf[n] = '\0';
    *d = strtod(buf, NULL);
    return isfinite(*d);
}

/* ws ':' ws after a field name */
static bool colon(scan_t *s)
{
    ws(s);
    if (!lit(s, ":", 1))
        return false;
    ws(s);
    return true;
}

/* The shape every client writes, {"key":"..","score":N,"member":".."} in this order without
 * spaces, read with three fixed comparisons instead of a field loop; false (nothing consumed,
 * nothing decoded) for anything else, which the general loop then reads. */
static bool tuple_compact(scan_t *s, uint8_t **arena, gw_roshi_tuple_t *t)
{
    static const char k[] = "{\"key\":", sc[] = ",\"score\":", mb[] = ",\"member\":";
    scan_t q = *s;
    uint8_t *a = *arena;
    if (!lit(&q, k, sizeof(k) - 1) || q.p >= q.end || *q.p != '"' ||
        !bytes_value(&q, &a, &t->key, &t->klen) || !lit(&q, sc, sizeof(sc) - 1) ||
        q.p >= q.end || *q.p == 'n' || !number_value(&q, &t->score) ||
        !lit(&q, mb, sizeof(mb) - 1) || q.p >= q.end || *q.p != '"' ||
        !bytes_value(&q, &a, &t->member, &t->mlen) || !lit(&q, "}", 1))
        return false;
    *s = q;
    *arena = a;
    return true;
}

static bool tuple(scan_t *s, uint8_t **arena, gw_roshi_tuple_t *t)
{
    if (tuple_compact(s, arena, t))
        return true;
    *t = (gw_roshi_tuple_t){*arena, *arena, 0, 0, 0};
    if (!lit(s, "{", 1))
        return false;
    ws(s);
    if (lit(s, "}", 1))
        return true;
    for (;;) {
        if (lit(s, "\"key\"", 5)) {
            if (!colon(s) || !bytes_value(s, arena, &t->key, &t->klen))
                return false;
        } else if (lit(s, "\"member\"", 8)) {
            if (!colon(s) || !bytes_value(s, arena, &t->member, &t->mlen))
                return false;
        } else if (lit(s, "\"score\"", 7)) {
            if (!colon(s) || !number_value(s, &t->score))
                return false;
        } else {
            return false;
        }
        ws(s);
        if (lit(s, "}", 1))
            return true;
        if (!lit(s, ",", 1))
            return false;
        ws(s);
    }
}

/* One element at s->p into element i of the output; false to decline. */
typedef bool (*elem_fn)(scan_t *s, uint8_t **arena, void *out, size_t i);

static bool tuple_elem(scan_t *s, uint8_t **arena, void *out, size_t i)
{
    return tuple(s, arena, (gw_roshi_tuple_t *)out + i);
}

static bool key_elem(scan_t *s, uint8_t **arena, void *out, size_t i)
{
    gw_roshi_key_t *k = (gw_roshi_key_t *)out + i;
    return s->p < s->end && *s->p == '"' && bytes_value(s, arena, &k->p, &k->len);
}

/* ws '[' ws (']' | elem (ws ',' ws elem)* ws ']'); what follows is not read, as Go's
 * Decoder.Decode reads one value. 1, or 0 to decline. */
static int array_fast(const char *body, size_t len, uint8_t *arena, elem_fn elem, void *out,
                      size_t cap, size_t *n)
{
    scan_t s = {body, body + len};
    *n = 0;
    ws(&s);
    if (!lit(&s, "[", 1))
        return 0;
    ws(&s);
    if (lit(&s, "]", 1))
        return 1;
    for (;;) {
        if (*n >= cap || !elem(&s, &arena, out, *n))
            return 0;
        ++*n;
        ws(&s);
        if (lit(&s, "]", 1))
            return 1;
        if (!lit(&s, ",", 1))
            return 0;
        ws(&s);
    }
}

int gw_roshi_tuples_fast(const char *body, size_t len, uint8_t *arena, gw_roshi_tuple_t *out,
                         size_t cap, size_t *n)
{
    return array_fast(body, len, arena, tuple_elem, out, cap, n);
}

int gw_roshi_keys_fast(const char *body, size_t len, uint8_t *arena, gw_roshi_key_t *out,
                       size_t cap, size_t *n)
{
    return array_fast(body, len, arena, key_elem, out, cap, n);
}

/* ---- the jansson reader: Go's encoding/json semantics --------------------------------------- */

static int fail(gw_roshi_err_t *err, int status, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static int fail(gw_roshi_err_t *err, int status, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err->msg, sizeof(err->msg), fmt, ap);
    va_end(ap);
    err->status = status;
    return -1;
}

/* Go's name for the JSON kind of v in "cannot unmarshal <kind> into ...". */
static const char *go_kind(const json_t *v)
{
    return json_is_object(v)   ? "object"
           : json_is_array(v)  ? "array"
           : json_is_string(v) ? "string"
           : json_is_number(v) ? "number"
                               : "bool";
}

/* The body as Go's json.Decoder.Decode reads it: the first JSON value (what follows is not read),
 * "EOF" for an empty body. */
static json_t *load(const char *body, size_t len, gw_roshi_err_t *err)
{
    size_t i = 0;
    while (i < len && strchr(" \t\r\n", body[i]) && body[i])
        i++;
    if (i == len) {
        fail(err, 400, "EOF");
        return NULL;
    }
    json_error_t e;
    json_t *j = json_loadb(body, len,
                           JSON_DECODE_ANY | JSON_DISABLE_EOF_CHECK | JSON_DECODE_INT_AS_REAL |
                               JSON_ALLOW_NUL,
                           &e);
    if (!j) {
        if ((size_t)e.position >= len)
            fail(err, 400, "unexpected EOF");
        else
            fail(err, 400, "malformed JSON at line %d, column %d (byte %d): %s", e.line, e.column,
                 e.position, e.text);
    }
    return j;
}

/* load, then the value must be an array (of at most cap elements) or null, as for a Go slice. */
static json_t *load_array(const char *body, size_t len, size_t cap, const char *gotype,
                          gw_roshi_err_t *err)
{
    json_t *j = load(body, len, err);
    if (j && !json_is_array(j) && !json_is_null(j))
        fail(err, 400, "json: cannot unmarshal %s into Go value of type %s", go_kind(j), gotype);
    else if (j && json_array_size(j) > cap)
        fail(err, 500, "more elements than the body can hold");
    else
        return j;
    json_decref(j);
    return NULL;
}

/* A []byte: a standard base64 string with padding, or null (or absent) for nothing. */
static int bytes_json(const json_t *v, const char *field, uint8_t **arena, const uint8_t **p,
                      size_t *n, gw_roshi_err_t *err)
{
    *p = *arena, *n = 0;
    if (!v || json_is_null(v))
        return 0;
    if (!json_is_string(v))
        return fail(err, 400, "json: cannot unmarshal %s into Go %s of type []uint8", go_kind(v),
                    field);
    if (crdt_base64_decode_into(*arena, json_string_value(v), json_string_length(v), CRDT_B64_STD,
                                n) < 0)
        return fail(err, 400, "illegal base64 data in %s", field);
    *arena += *n;
    return 0;
}

int gw_roshi_tuples_json(const char *body, size_t len, uint8_t *arena, gw_roshi_tuple_t *out,
                         size_t cap, size_t *n, gw_roshi_err_t *err)
{
    *n = 0;
    json_t *j = load_array(body, len, cap, "[]common.KeyScoreMember", err);
    if (!j)
        return -1;
    int rc = 0;
    for (size_t i = 0; i < json_array_size(j); i++) {
        const json_t *el = json_array_get(j, i), *kv = NULL, *mv = NULL, *sv = NULL;
        gw_roshi_tuple_t *t = &out[i];
        if (json_is_object(el)) {
            /* Go matches field names case-insensitively; a later one replaces an earlier one */
            const char *name;
            json_t *v;
            json_object_foreach((json_t *)el, name, v) {
                if (!strcasecmp(name, "key"))
                    kv = v;
                else if (!strcasecmp(name, "member"))
                    mv = v;
                else if (!strcasecmp(name, "score"))
                    sv = v;
            }
        } else if (!json_is_null(el)) {
            rc = fail(err, 400,
                      "json: cannot unmarshal %s into Go value of type common.jsonKeyScoreMember",
                      go_kind(el));
            goto out;
        }
        if ((rc = bytes_json(kv, "struct field jsonKeyScoreMember.key", &arena, &t->key, &t->klen,
                             err)) < 0 ||
            (rc = bytes_json(mv, "struct field jsonKeyScoreMember.member", &arena, &t->member,
                             &t->mlen, err)) < 0)
            goto out;
        t->score = 0;
        if (sv && !json_is_null(sv)) {
            if (!json_is_number(sv)) {
                rc = fail(err, 400,
                          "json: cannot unmarshal %s into Go struct field "
                          "jsonKeyScoreMember.score of type float64",
                          go_kind(sv));
                goto out;
            }
            t->score = json_number_value(sv);
        }
        *n = i + 1;
    }
out:
    json_decref(j);
    return rc;
}

int gw_roshi_keys_json(const char *body, size_t len, uint8_t *arena, gw_roshi_key_t *out,
                       size_t cap, size_t *n, gw_roshi_err_t *err)
{
    *n = 0;
    json_t *j = load_array(body, len, cap, "[][]uint8", err);
    if (!j)
        return -1;
    int rc = 0;
    for (size_t i = 0; i < json_array_size(j); i++) {
        if ((rc = bytes_json(json_array_get(j, i), "value", &arena, &out[i].p, &out[i].len, err)) <
            0)
            goto out;
        *n = i + 1;
    }
out:
    json_decref(j);
    return rc;
}

int gw_roshi_tuples(const char *body, size_t len, uint8_t *arena, gw_roshi_tuple_t *out,
                    size_t cap, size_t *n, gw_roshi_err_t *err)
{
    if (gw_roshi_tuples_fast(body, len, arena, out, cap, n))
        return 0;
    return gw_roshi_tuples_json(body, len, arena, out, cap, n, err);
}

int gw_roshi_keys(const char *body, size_t len, uint8_t *arena, gw_roshi_key_t *out, size_t cap,
                  size_t *n, gw_roshi_err_t *err)
{
    if (gw_roshi_keys_fast(body, len, arena, out, cap, n))
        return 0;
    return gw_roshi_keys_json(body, len, arena, out, cap, n, err);
}
