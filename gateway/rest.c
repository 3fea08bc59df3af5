/* rest.c - crdtd's REST API: read keys, apply ops to each type, timeline reads, the change feed */
#include <float.h>
#include <inttypes.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "crdt_json.h"
#include "gateway.h"

/*
 * Keys travel in URLs as base64url (RFC 4648 section 5, padding optional): any byte string is a
 * key, and lws's path normalisation ("//", "/../", percent-decoding) cannot alter one. In JSON,
 * keys, members and register values are standard base64, as in libcrdt's JSON codec and roshi.
 * Routes (docs/http-api.md):
 *
 *   GET  /healthz                         GET /metrics
 *   GET  /v1/keys/{key}                   type, value, JSON state, binary state
 *   POST /v1/keys/{key}                   apply an op: {"type":..,"op":..,...}
 *   GET  /v1/keys/{key}/timeline          newest first: ?offset&limit, or ?max&min&cursor&limit
 *   GET  /v1/timelines?keys=k1,k2         coalesced newest first over several timelines
 *   GET  /v1/changes?since&limit          the change feed
 */

#define DEFAULT_LIMIT 50
#define MAX_LIMIT 10000
#define MAX_SELECT_KEYS 1000

/* ---- shared helpers ------------------------------------------------------------------------- */

json_t *gw_parse_body(const gw_request_t *rq, gw_response_t *rs)
{
    json_error_t e;
    if (!rq->body_len) {
        gw_respond_error(rs, 400, "empty request body, expected JSON");
        return NULL;
    }
    json_t *j = json_loadb((const char *)rq->body, rq->body_len, JSON_REJECT_DUPLICATES, &e);
    if (!j)
        gw_respond_json_error(rs, &e);
    return j;
}

json_t *gw_b64_json(const void *p, size_t n)
{
    size_t len;
    char *s = crdt_base64_encode(p, n, &len);
    if (!s)
        return NULL;
    json_t *j = json_stringn_nocheck(s, len);
    free(s);
    return j;
}

/* base64url (padding optional) -> bytes; 0 or -1. */
static int b64url_decode(const char *s, size_t n, uint8_t **out, size_t *outlen)
{
    while (n && s[n - 1] == '=')
        n--;
    if (n % 4 == 1)
        return -1;
    size_t padded = (n + 3) / 4 * 4;
    char *t = malloc(padded + 1);
    if (!t)
        return -1;
    for (size_t i = 0; i < n; i++) {
        char c = s[i];
        if (c == '-')
            c = '+';
        else if (c == '_')
            c = '/';
        else if (c == '+' || c == '/')
            c = '!'; /* not in the url alphabet: make the decoder refuse it */
        t[i] = c;
    }
    for (size_t i = n; i < padded; i++)
        t[i] = '=';
    int rc = crdt_base64_decode(t, padded, out, outlen);
    free(t);
    return rc < 0 ? -1 : 0;
}

static int key_from_url(gw_server_t *s, const char *seg, size_t n, gw_response_t *rs, uint8_t **key,
                        size_t *klen)
{
    if (!n) {
        gw_respond_error(rs, 400, "empty key");
        return -1;
    }
    if (n / 4 * 3 > s->cfg.max_key + 3) {
        gw_respond_error(rs, 400, "key longer than the limit of %zu bytes (--max-key)",
                         s->cfg.max_key);
        return -1;
    }
    if (b64url_decode(seg, n, key, klen)) {
        gw_respond_error(rs, 400,
                         "key is not valid base64url (RFC 4648 section 5, padding optional)");
        return -1;
    }
    if (*klen == 0 || *klen > s->cfg.max_key) {
        gw_respond_error(rs, 400, "key of %zu bytes: keys are 1 to %zu bytes (--max-key)", *klen,
                         s->cfg.max_key);
        free(*key);
        *key = NULL;
        return -1;
    }
    return 0;
}

/* Parses a non-negative integer query argument; 0 if absent (default kept), -1 after responding. */
static int arg_u64(const gw_request_t *rq, const char *name, uint64_t max, uint64_t *out,
                   gw_response_t *rs)
{
    const char *v = gw_arg(rq, name);
    if (!v)
        return 0;
    char *end;
    if (!*v || *v == '-' || *v == '+' || *v == ' ') {
        gw_respond_error(rs, 400, "query argument %s: expected a non-negative integer", name);
        return -1;
    }
    unsigned long long n = strtoull(v, &end, 10);
    if (*end || n > max) {
        gw_respond_error(rs, 400, "query argument %s: expected an integer 0..%" PRIu64, name, max);
        return -1;
    }
    *out = n;
    return 0;
}

static int arg_double(const gw_request_t *rq, const char *name, double *out, gw_response_t *rs)
{
    const char *v = gw_arg(rq, name);
    if (!v)
        return 0;
    char *end;
    double d = strtod(v, &end);
    if (!*v || *end || isnan(d)) {
        gw_respond_error(rs, 400, "query argument %s: expected a number", name);
        return -1;
    }
    *out = d;
    return 0;
}

static int respond_replica_error(gw_response_t *rs, int rc, const char *what)
{
    switch (rc) {
    case CRDT_ETYPE: gw_respond_error(rs, 409, "%s: the key holds another type", what); break;
    case CRDT_EINVAL: gw_respond_error(rs, 400, "%s: invalid argument", what); break;
    case CRDT_EOVERFLOW: gw_respond_error(rs, 400, "%s: counter would overflow int64", what); break;
    case CRDT_ENOMEM: gw_respond_error(rs, 500, "%s: out of memory", what); break;
    case CRDT_EIO:
        gw_respond_error(rs, 503, "%s: storage failure, writes are refused until restart", what);
        break;
    default: gw_respond_error(rs, 500, "%s: %s", what, crdt_strerror(rc)); break;
    }
    return -1;
}

/* ---- timeline entries as JSON --------------------------------------------------------------- */

static json_t *entry_json(const crdt_tl_entry_t *e)
{
    json_t *o = json_object();
    if (!o)
        return NULL;
    json_object_set_new_nocheck(o, "member", gw_b64_json(e->member, e->member_len));
    json_object_set_new_nocheck(o, "score", json_real(e->score));
    return o;
}

/* The cursor format of roshi: decimal IEEE-754 bits of the score, '!', base64 of the member. */
static char *cursor_string(const crdt_tl_entry_t *e)
{
    uint64_t bits;
    memcpy(&bits, &e->score, sizeof(bits));
    size_t blen;
    char *b = crdt_base64_encode(e->member, e->member_len, &blen);
    if (!b)
        return NULL;
    char *s = malloc(blen + 24);
    if (s)
        snprintf(s, blen + 24, "%" PRIu64 "!%s", bits, b);
    free(b);
    return s;
}

int gw_cursor_parse(const char *s, double *score, uint8_t **member, size_t *mlen);
int gw_cursor_parse(const char *s, double *score, uint8_t **member, size_t *mlen)
{
    const char *bang = strchr(s, '!');
    if (!bang || bang == s || bang - s > 20)
        return -1;
    uint64_t bits = 0;
    for (const char *p = s; p < bang; p++) {
        if (*p < '0' || *p > '9')
            return -1;
        uint64_t d = (uint64_t)(*p - '0');
        if (bits > (UINT64_MAX - d) / 10)
            return -1;
        bits = bits * 10 + d;
    }
    memcpy(score, &bits, sizeof(bits));
    if (isnan(*score))
        return -1;
    /* A '+' of the base64 that reached us unescaped may have become a space (form encoding). */
    size_t n = strlen(bang + 1);
    char *b = malloc(n + 1);
    if (!b)
        return -1;
    for (size_t i = 0; i <= n; i++)
        b[i] = bang[1 + i] == ' ' ? '+' : bang[1 + i];
    int rc = crdt_base64_decode(b, n, member, mlen);
    free(b);
    return rc < 0 ? -1 : 0;
}

/* ---- GET /v1/keys/{key} --------------------------------------------------------------------- */

static int member_to_array(const void *m, size_t len, void *ud)
{
    return json_array_append_new(ud, gw_b64_json(m, len)) ? -1 : 0;
}

static json_t *value_json(const crdt_obj_t *o, json_t *out)
{
    switch (crdt_obj_type(o)) {
    case CRDT_GCOUNTER:
    case CRDT_PNCOUNTER: {
        int64_t v = 0;
        if (crdt_counter_value(o, &v) < 0)
            return json_null();
        return json_integer(v);
    }
    case CRDT_LWWREG: {
        const void *val;
        size_t len;
        crdt_hlc_ts_t ts;
        if (crdt_lwwreg_get(o, &val, &len, &ts) != 1)
            return json_null();
        json_object_set_new_nocheck(out, "timestamp", crdt_hlc_to_json(&ts));
        return gw_b64_json(val, len);
    }
    case CRDT_LWWSET:
    case CRDT_ORSET: {
        json_t *a = json_array();
        if (a)
            crdt_set_foreach(o, member_to_array, a);
        return a;
    }
    case CRDT_TIMELINE: {
        size_t card = crdt_timeline_card(o), n = card < 1000 ? card : 1000;
        json_object_set_new_nocheck(out, "size", json_integer((json_int_t)card));
        json_object_set_new_nocheck(out, "max_size",
                                    json_integer((json_int_t)crdt_timeline_max_size(o)));
        crdt_tl_entry_t *es = malloc((n ? n : 1) * sizeof(*es));
        json_t *a = json_array();
        if (!es || !a) {
            free(es);
            json_decref(a);
            return NULL;
        }
        n = crdt_timeline_range(o, 0, n, es);
        for (size_t i = 0; i < n; i++)
            json_array_append_new(a, entry_json(&es[i]));
        free(es);
        if (n < card)
            json_object_set_new_nocheck(out, "truncated", json_true());
        return a;
    }
    }
    return json_null();
}

static void get_key(gw_server_t *s, const uint8_t *key, size_t klen, const gw_request_t *rq,
                    gw_response_t *rs)
{
    const crdt_obj_t *o = crdt_replica_get(s->replica, key, klen);
    if (!o) {
        gw_respond_error(rs, 404, "no such key");
        return;
    }
    json_t *j = json_object();
    if (!j) {
        gw_respond_error(rs, 500, "out of memory");
        return;
    }
    json_object_set_new_nocheck(j, "key", gw_b64_json(key, klen));
    json_object_set_new_nocheck(j, "type", json_string(crdt_type_name(crdt_obj_type(o))));
    json_object_set_new_nocheck(j, "value", value_json(o, j));
    const char *st = gw_arg(rq, "state");
    if (!st || strcmp(st, "0") != 0) {
        json_object_set_new_nocheck(j, "state", crdt_obj_to_json(o));
        crdt_buf_t b = {0};
        if (crdt_obj_encode(o, &b) == 0)
            json_object_set_new_nocheck(j, "binary", gw_b64_json(b.data, b.len));
        crdt_buf_free(&b);
    }
    uint64_t fp;
    if (crdt_replica_key_fingerprint(s->replica, key, klen, &fp) == 0) {
        char hex[17];
        snprintf(hex, sizeof(hex), "%016" PRIx64, fp);
        json_object_set_new_nocheck(j, "fingerprint", json_string(hex));
    }
    gw_respond_json(rs, 200, j);
}

/* ---- POST /v1/keys/{key} -------------------------------------------------------------------- */

enum op_kind {
    OP_GC_INCR,
    OP_PN_ADD,
    OP_REG_SET,
    OP_LWW_ADD,
    OP_LWW_REMOVE,
    OP_OR_ADD,
    OP_OR_REMOVE,
    OP_TL_ADD,
    OP_TL_REMOVE,
};

typedef struct op_item {
    uint8_t *m; /* member or value, owned */
    size_t mlen;
    double score;
} op_item_t;

typedef struct op_ctx {
    enum op_kind kind;
    uint64_t node;
    int64_t n;
    crdt_hlc_ts_t ts;
    const op_item_t *item;
} op_ctx_t;

static int mutate_cb(crdt_obj_t *obj, void *ud, crdt_obj_t **delta)
{
    op_ctx_t *c = ud;
    const op_item_t *it = c->item;
    switch (c->kind) {
    case OP_GC_INCR: return crdt_gcounter_incr(obj, c->node, (uint64_t)c->n, delta);
    case OP_PN_ADD: return crdt_pncounter_add(obj, c->node, c->n, delta);
    case OP_REG_SET: return crdt_lwwreg_set(obj, &c->ts, it->m, it->mlen, delta);
    case OP_LWW_ADD: return crdt_lwwset_add(obj, it->m, it->mlen, &c->ts, delta);
    case OP_LWW_REMOVE: return crdt_lwwset_remove(obj, it->m, it->mlen, &c->ts, delta);
    case OP_OR_ADD: return crdt_orset_add(obj, c->node, it->m, it->mlen, delta);
    case OP_OR_REMOVE: return crdt_orset_remove(obj, it->m, it->mlen, delta);
    case OP_TL_ADD: return crdt_timeline_add(obj, it->m, it->mlen, it->score, delta);
    case OP_TL_REMOVE: return crdt_timeline_remove(obj, it->m, it->mlen, it->score, delta);
    }
    return CRDT_EINVAL;
}
static void free_items(op_item_t *items, size_t n)
{
    for (size_t i = 0; i < n; i++)
        free(items[i].m);
    free(items);
}

/* Records a failure in *r: the HTTP status REST answers with, the crdt.v1 error code, the text. */
static int op_fail(gw_op_result_t *r, int status, const char *code, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
static int op_fail(gw_op_result_t *r, int status, const char *code, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(r->message, sizeof(r->message), fmt, ap);
    va_end(ap);
    r->status = status;
    r->code = code;
    return -1;
}

static int op_replica_error(gw_op_result_t *r, int rc, const char *what)
{
    switch (rc) {
    case CRDT_ETYPE: return op_fail(r, 409, "wrong_type", "%s: the key holds another type", what);
    case CRDT_EINVAL: return op_fail(r, 400, "bad_request", "%s: invalid argument", what);
    case CRDT_EOVERFLOW:
        return op_fail(r, 400, "bad_request", "%s: counter would overflow int64", what);
    case CRDT_ENOMEM: return op_fail(r, 500, "internal", "%s: out of memory", what);
    case CRDT_EIO:
        return op_fail(r, 503, "storage", "%s: storage failure, writes are refused until restart",
                       what);
    default: return op_fail(r, 500, "internal", "%s: %s", what, crdt_strerror(rc));
    }
}

static int b64_field(const json_t *v, const char *what, size_t max, gw_op_result_t *r,
                     uint8_t **out, size_t *outlen)
{
    if (!json_is_string(v))
        return op_fail(r, 400, "bad_request", "%s: expected a base64 string, got %s", what,
                       !v                  ? "nothing"
                       : json_is_number(v) ? "a number"
                       : json_is_null(v)   ? "null"
                       : json_is_array(v)  ? "an array"
                       : json_is_object(v) ? "an object"
                                           : "a boolean");
    size_t slen = json_string_length(v);
    if (slen / 4 * 3 > max + 3)
        return op_fail(r, 400, "bad_request", "%s: longer than the limit of %zu bytes", what, max);
    int rc = crdt_base64_decode(json_string_value(v), slen, out, outlen);
    if (rc == CRDT_ENOMEM)
        return op_fail(r, 500, "internal", "out of memory");
    if (rc < 0)
        return op_fail(r, 400, "bad_request",
                       "%s: invalid base64 (standard alphabet, with padding)", what);
    if (*outlen > max) {
        free(*out);
        *out = NULL;
        return op_fail(r, 400, "bad_request", "%s: %zu bytes, longer than the limit of %zu bytes",
                       what, *outlen, max);
    }
    return 0;
}

int gw_b64_field(const json_t *v, const char *what, size_t max, gw_response_t *rs, uint8_t **out,
                 size_t *outlen)
{
    gw_op_result_t r = {0};
    if (b64_field(v, what, max, &r, out, outlen) == 0)
        return 0;
    gw_respond_error(rs, r.status, "%s", r.message);
    return -1;
}

/* Reads a finite JSON number (JSON has no NaN or infinity; jansson refuses overflowing reals). */
static int score_field(const json_t *v, const char *what, gw_op_result_t *r, double *out)
{
    if (!json_is_number(v))
        return op_fail(r, 400, "bad_request", "%s: expected a number", what);
    double d = json_number_value(v);
    if (!isfinite(d))
        return op_fail(r, 400, "bad_request", "%s: must be finite", what);
    *out = d;
    return 0;
}

/* Collects the members of an op: "member" (one) or "members" (array); timeline entries carry a
 * "score" each ("entries": [{"member","score"}] or "member" + "score"). */
static int collect_items(gw_server_t *s, const json_t *body, bool scored, gw_op_result_t *r,
                         op_item_t **out, size_t *nout)
{
    const json_t *one = json_object_get(body, "member");
    const json_t *many = json_object_get(body, scored ? "entries" : "members");
    const char *mname = scored ? "entries" : "members";
    if ((one != NULL) == (many != NULL))
        return op_fail(r, 400, "bad_request", "give exactly one of \"member\" and \"%s\"", mname);
    if (many && !json_is_array(many))
        return op_fail(r, 400, "bad_request", "\"%s\": expected an array", mname);
    size_t n = many ? json_array_size(many) : 1;
    if (n == 0)
        return op_fail(r, 400, "bad_request", "\"%s\": empty array", mname);
    op_item_t *items = calloc(n, sizeof(*items));
    if (!items)
        return op_fail(r, 500, "internal", "out of memory");
    char what[64];
    for (size_t i = 0; i < n; i++) {
        const json_t *m = one, *sc = json_object_get(body, "score");
        if (many) {
            const json_t *el = json_array_get(many, i);
            if (scored) {
                if (!json_is_object(el)) {
                    op_fail(r, 400, "bad_request", "entries[%zu]: expected an object", i);
                    goto fail;
                }
                m = json_object_get(el, "member");
                sc = json_object_get(el, "score");
            } else {
                m = el;
            }
        }
        if (many)
            snprintf(what, sizeof(what), scored ? "entries[%zu].member" : "members[%zu]", i);
        else
            snprintf(what, sizeof(what), "member");
        if (b64_field(m, what, s->cfg.max_member, r, &items[i].m, &items[i].mlen))
            goto fail;
        if (scored) {
            if (many)
                snprintf(what, sizeof(what), "entries[%zu].score", i);
            else
                snprintf(what, sizeof(what), "score");
            if (score_field(sc, what, r, &items[i].score))
                goto fail;
        }
    }
    *out = items;
    *nout = n;
    return 0;
fail:
    free_items(items, n);
    return -1;
}

static int int_field(const json_t *body, const char *name, int64_t dflt, gw_op_result_t *r,
                     int64_t *out)
{
    const json_t *v = json_object_get(body, name);
    if (!v) {
        *out = dflt;
        return 0;
    }
    if (!json_is_integer(v))
        return op_fail(r, 400, "bad_request", "\"%s\": expected an integer", name);
    *out = json_integer_value(v);
    return 0;
}

/* {"op":"merge","state":{"type":..,"state":..}} or {"op":"merge","binary":"<base64>"}. */
static int apply_merge(gw_server_t *s, const uint8_t *key, size_t klen, const json_t *body,
                       gw_op_result_t *r)
{
    const json_t *st = json_object_get(body, "state");
    const json_t *bin = json_object_get(body, "binary");
    crdt_error_t err = {0};
    crdt_obj_t *o = NULL;
    if (st && !bin) {
        o = crdt_obj_from_json(st, &err);
    } else if (bin && !st) {
        uint8_t *raw;
        size_t rlen;
        if (b64_field(bin, "binary", s->cfg.max_body, r, &raw, &rlen))
            return -1;
        o = crdt_obj_decode(raw, rlen, &err);
        free(raw);
    } else {
        return op_fail(r, 400, "bad_request",
                       "merge needs exactly one of \"state\" and \"binary\"");
    }
    if (!o) {
        if (err.code == CRDT_ENOMEM)
            return op_fail(r, 500, "internal", "out of memory");
        return op_fail(r, 400, "bad_request", "invalid %s state at %zu: %s", st ? "JSON" : "binary",
                       err.offset, err.text[0] ? err.text : "decode error");
    }
    const json_t *type = json_object_get(body, "type");
    if (type && (!json_is_string(type) ||
                 strcmp(json_string_value(type), crdt_type_name(crdt_obj_type(o))) != 0)) {
        crdt_obj_free(o);
        return op_fail(r, 400, "bad_request", "\"type\" does not match the state's type");
    }
    uint64_t seq = 0, t0 = gw_now_us();
    int rc = crdt_replica_apply(s->replica, key, klen, o, CRDT_ORIGIN_LOCAL, &seq);
    gw_metrics_apply(&s->metrics, (double)(gw_now_us() - t0) / 1e6);
    crdt_obj_free(o);
    if (rc < 0)
        return op_replica_error(r, rc, "merge");
    r->ops = 1;
    r->applied = rc > 0;
    r->seq = rc > 0 ? seq : 0;
    return 0;
}

bool gw_key_reserved(const void *key, size_t klen)
{
    return klen >= GW_RESERVED_PREFIX_LEN &&
           memcmp(key, GW_RESERVED_PREFIX, GW_RESERVED_PREFIX_LEN) == 0;
}

static int apply_op(gw_server_t *s, const uint8_t *key, size_t klen, const json_t *body,
                    gw_op_result_t *r)
{
    memset(r, 0, sizeof(*r));
    r->status = 200;
    op_item_t *items = NULL;
    size_t nitems = 0;
    int ret = -1;
    if (gw_key_reserved(key, klen))
        return op_fail(r, 400, "bad_request",
                       "keys starting with the bytes 0x00 'c' '/' are reserved for crdtd");
    if (!json_is_object(body))
        return op_fail(r, 400, "bad_request", "expected a JSON object {\"type\":..,\"op\":..}");
    const json_t *opv = json_object_get(body, "op");
    if (!json_is_string(opv))
        return op_fail(r, 400, "bad_request", "\"op\": expected a string");
    const char *op = json_string_value(opv);
    if (!strcmp(op, "merge"))
        return apply_merge(s, key, klen, body, r);

    /* The type: given, or the existing key's. */
    const crdt_obj_t *cur = crdt_replica_get(s->replica, key, klen);
    const json_t *tv = json_object_get(body, "type");
    crdt_type_t type;
    if (tv) {
        if (!json_is_string(tv) || crdt_type_from_name(json_string_value(tv), &type) < 0)
            return op_fail(r, 400, "unknown_type",
                           "\"type\": expected one of gcounter, pncounter, lwwreg, lwwset, "
                           "orset, timeline");
        if (cur && crdt_obj_type(cur) != type)
            return op_fail(r, 409, "wrong_type", "the key holds type %s, not %s",
                           crdt_type_name(crdt_obj_type(cur)), crdt_type_name(type));
    } else if (cur) {
        type = crdt_obj_type(cur);
    } else {
        return op_fail(r, 400, "bad_request", "\"type\" is needed to create a key");
    }

    op_ctx_t ctx = {.node = crdt_replica_node_id(s->replica)};
    bool is_add = !strcmp(op, "add"), is_remove = !strcmp(op, "remove");
    switch (type) {
    case CRDT_GCOUNTER:
    case CRDT_PNCOUNTER: {
        bool incr = !strcmp(op, "incr"), decr = !strcmp(op, "decr");
        if (!incr && !decr)
            return op_fail(r, 400, "unknown_op", "%s ops: incr, decr", crdt_type_name(type));
        int64_t by = 0;
        if (int_field(body, "by", 1, r, &by))
            return -1;
        if (type == CRDT_GCOUNTER) {
            if (decr || by < 0)
                return op_fail(r, 400, decr ? "unknown_op" : "bad_request",
                               "a gcounter only grows: incr by a non-negative \"by\"");
            ctx.kind = OP_GC_INCR;
        } else {
            if (decr && by == INT64_MIN)
                return op_fail(r, 400, "bad_request", "\"by\": out of range");
            ctx.kind = OP_PN_ADD;
            by = decr ? -by : by;
        }
        ctx.n = by;
        nitems = 1;
        items = calloc(1, sizeof(*items));
        break;
    }
    case CRDT_LWWREG: {
        if (strcmp(op, "set") != 0)
            return op_fail(r, 400, "unknown_op", "lwwreg ops: set");
        items = calloc(1, sizeof(*items));
        if (!items)
            break;
        nitems = 1;
        if (b64_field(json_object_get(body, "value"), "value", s->cfg.max_member, r, &items[0].m,
                      &items[0].mlen))
            goto out;
        ctx.kind = OP_REG_SET;
        break;
    }
    case CRDT_LWWSET:
    case CRDT_ORSET:
    case CRDT_TIMELINE:
        if (!is_add && !is_remove)
            return op_fail(r, 400, "unknown_op", "%s ops: add, remove", crdt_type_name(type));
        if (collect_items(s, body, type == CRDT_TIMELINE, r, &items, &nitems))
            return -1;
        ctx.kind = type == CRDT_LWWSET  ? (is_add ? OP_LWW_ADD : OP_LWW_REMOVE)
                   : type == CRDT_ORSET ? (is_add ? OP_OR_ADD : OP_OR_REMOVE)
                                        : (is_add ? OP_TL_ADD : OP_TL_REMOVE);
        break;
    }
    if (!items) {
        op_fail(r, 500, "internal", "out of memory");
        goto out;
    }

    uint64_t t0 = gw_now_us();
    int rc = 0;
    r->ops = nitems;
    for (size_t i = 0; i < nitems; i++) {
        uint64_t seq = 0;
        ctx.item = &items[i];
        if (ctx.kind == OP_REG_SET || ctx.kind == OP_LWW_ADD || ctx.kind == OP_LWW_REMOVE) {
            if ((rc = crdt_replica_hlc_now(s->replica, &ctx.ts)) < 0)
                break;
        }
        rc = crdt_replica_mutate(s->replica, key, klen, type, mutate_cb, &ctx, &seq);
        if (rc < 0)
            break;
        if (rc > 0) {
            r->applied++;
            r->seq = seq;
        }
    }
    gw_metrics_apply(&s->metrics, (double)(gw_now_us() - t0) / 1e6);
    if (rc < 0) {
        /* only a storage failure or memory can stop a validated batch midway: r->applied and
         * r->seq say what was done before */
        op_replica_error(r, rc, op);
        goto out;
    }
    ret = 0;
out:
    free_items(items, nitems);
    return ret;
}

void gw_apply_op(gw_server_t *s, const uint8_t *key, size_t klen, const json_t *op,
                 gw_op_done_cb done, void *ud)
{
    gw_op_result_t r;
    r.rc = apply_op(s, key, klen, op, &r);
    done(s, &r, ud);
}

static void post_done(gw_server_t *s, const gw_op_result_t *r, void *ud)
{
    gw_response_t *rs = ud;
    if (r->rc < 0 && !r->applied) {
        gw_respond_error(rs, r->status, "%s", r->message);
        return;
    }
    json_t *j =
        json_pack("{s:I, s:I, s:I}", "applied", (json_int_t)r->applied, "ops", (json_int_t)r->ops,
                  "seq", (json_int_t)(r->seq ? r->seq : crdt_replica_last_seq(s->replica)));
    if (r->rc < 0 && j) /* a batch stopped midway by a storage failure (or memory) */
        json_object_set_new_nocheck(
            j, "error", json_string(r->status == 503 ? crdt_strerror(CRDT_EIO) : r->message));
    gw_respond_json(rs, r->rc < 0 ? 503 : 200, j);
    if (r->seq) {
        rs->wait_seq = r->seq;
        gw_http_schedule_flush(s);
    }
}

static void post_key(gw_server_t *s, const uint8_t *key, size_t klen, const gw_request_t *rq,
                     gw_response_t *rs)
{
    json_t *body = gw_parse_body(rq, rs);
    if (!body)
        return;
    gw_apply_op(s, key, klen, body, post_done, rs);
    json_decref(body);
}

/* ---- timeline reads ------------------------------------------------------------------------- */

static void get_timeline(gw_server_t *s, const uint8_t *key, size_t klen, const gw_request_t *rq,
                         gw_response_t *rs)
{
    uint64_t offset = 0, limit = DEFAULT_LIMIT;
    double max = DBL_MAX, min = -DBL_MAX;
    if (arg_u64(rq, "offset", SIZE_MAX / 2, &offset, rs) ||
        arg_u64(rq, "limit", MAX_LIMIT, &limit, rs) || arg_double(rq, "max", &max, rs) ||
        arg_double(rq, "min", &min, rs))
        return;
    const char *cursor = gw_arg(rq, "cursor");
    bool by_score = cursor || gw_arg(rq, "max") || gw_arg(rq, "min");
    if (by_score && gw_arg(rq, "offset")) {
        gw_respond_error(rs, 400, "offset cannot be combined with max, min or cursor");
        return;
    }
    const crdt_obj_t *o = crdt_replica_get(s->replica, key, klen);
    if (o && crdt_obj_type(o) != CRDT_TIMELINE) {
        gw_respond_error(rs, 409, "the key holds type %s, not timeline",
                         crdt_type_name(crdt_obj_type(o)));
        return;
    }
    crdt_tl_entry_t after = {0}, *afterp = NULL;
    uint8_t *cmem = NULL;
    if (cursor && *cursor) {
        if (gw_cursor_parse(cursor, &after.score, &cmem, &after.member_len)) {
            gw_respond_error(rs, 400, "invalid cursor (expected the \"cursor\" of a response)");
            return;
        }
        after.member = cmem;
        afterp = &after;
    }
    crdt_tl_entry_t *es = malloc((limit ? limit : 1) * sizeof(*es));
    if (!es) {
        free(cmem);
        gw_respond_error(rs, 500, "out of memory");
        return;
    }
    size_t n = 0, bytes = 0;
    if (o && limit)
        n = by_score ? crdt_timeline_range_by_score(o, max, min, afterp, limit, es)
                     : crdt_timeline_range(o, offset, limit, es);
    for (size_t i = 0; i < n; i++)
        bytes += es[i].member_len / 3 * 4 + 48;
    gw_jw_t w;
    gw_jw_init(&w, bytes + klen * 2 + 128);
    gw_jw_lit(&w, "{\"key\":");
    gw_jw_b64(&w, key, klen);
    gw_jw_lit(&w, ",\"entries\":[");
    for (size_t i = 0; i < n; i++) {
        gw_jw_lit(&w, i ? ",{\"member\":" : "{\"member\":");
        gw_jw_b64(&w, es[i].member, es[i].member_len);
        gw_jw_lit(&w, ",\"score\":");
        gw_jw_double(&w, es[i].score);
        gw_jw_lit(&w, "}");
    }
    gw_jw_lit(&w, "],\"size\":");
    gw_jw_u64(&w, o ? crdt_timeline_card(o) : 0);
    if (by_score) {
        /* digits, '!' and base64: nothing to escape */
        char *c = n == limit && n ? cursor_string(&es[n - 1]) : NULL;
        gw_jw_lit(&w, ",\"cursor\":");
        if (c) {
            gw_jw_lit(&w, "\"");
            gw_jw_lit(&w, c);
            gw_jw_lit(&w, "\"}");
        } else {
            gw_jw_lit(&w, "null}");
        }
        if (n == limit && n && !c)
            w.oom = true;
        free(c);
    } else {
        gw_jw_lit(&w, ",\"next_offset\":");
        if (n == limit && n)
            gw_jw_u64(&w, offset + n);
        else
            gw_jw_lit(&w, "null");
        gw_jw_lit(&w, "}");
    }
    free(es);
    free(cmem);
    gw_respond_jw(rs, 200, &w);
}

/* GET /v1/timelines?keys=k1,k2,...&offset=&limit= : one newest-first list over several. */
static void get_timelines(gw_server_t *s, const gw_request_t *rq, gw_response_t *rs)
{
    uint64_t offset = 0, limit = DEFAULT_LIMIT;
    if (arg_u64(rq, "offset", SIZE_MAX / 2, &offset, rs) ||
        arg_u64(rq, "limit", MAX_LIMIT, &limit, rs))
        return;
    const char *keys = gw_arg(rq, "keys");
    if (!keys || !*keys) {
        gw_respond_error(rs, 400, "query argument keys: comma-separated base64url keys needed");
        return;
    }
    size_t nk = 1;
    for (const char *p = keys; *p; p++)
        nk += *p == ',';
    if (nk > MAX_SELECT_KEYS) {
        gw_respond_error(rs, 400, "at most %d keys per select", MAX_SELECT_KEYS);
        return;
    }
    const crdt_obj_t **tls = calloc(nk, sizeof(*tls));
    uint8_t **kb = calloc(nk, sizeof(*kb));
    size_t *kl = calloc(nk, sizeof(*kl));
    crdt_tl_entry_t *es = malloc((limit ? limit : 1) * sizeof(*es));
    size_t *src = malloc((limit ? limit : 1) * sizeof(*src));
    json_t *j = NULL;
    if (!tls || !kb || !kl || !es || !src) {
        gw_respond_error(rs, 500, "out of memory");
        goto out;
    }
    const char *p = keys;
    for (size_t i = 0; i < nk; i++) {
        const char *e = strchr(p, ',');
        size_t len = e ? (size_t)(e - p) : strlen(p);
        if (key_from_url(s, p, len, rs, &kb[i], &kl[i]))
            goto out;
        const crdt_obj_t *o = crdt_replica_get(s->replica, kb[i], kl[i]);
        if (o && crdt_obj_type(o) != CRDT_TIMELINE) {
            gw_respond_error(rs, 409, "keys[%zu] holds type %s, not timeline", i,
                             crdt_type_name(crdt_obj_type(o)));
            goto out;
        }
        tls[i] = o;
        p = e ? e + 1 : p + len;
    }
    size_t n = limit ? crdt_timeline_select(tls, nk, offset, limit, es, src) : 0;
    j = json_object();
    json_t *a = json_array();
    if (!j || !a) {
        json_decref(a);
        gw_respond_error(rs, 500, "out of memory");
        goto out;
    }
    for (size_t i = 0; i < n; i++) {
        json_t *e = entry_json(&es[i]);
        if (e)
            json_object_set_new_nocheck(e, "key", gw_b64_json(kb[src[i]], kl[src[i]]));
        json_array_append_new(a, e);
    }
    json_object_set_new_nocheck(j, "entries", a);
    json_object_set_new_nocheck(
        j, "next_offset", n == limit && n ? json_integer((json_int_t)(offset + n)) : json_null());
    gw_respond_json(rs, 200, j);
    j = NULL;
out:
    json_decref(j);
    if (kb)
        for (size_t i = 0; i < nk; i++)
            free(kb[i]);
    free(kb), free(kl), free(tls), free(es), free(src);
}

/* ---- the change feed ------------------------------------------------------------------------ */

typedef struct feed_ctx {
    json_t *arr;
    bool with_state;
} feed_ctx_t;

static int feed_cb(const void *key, size_t klen, uint64_t seq, const crdt_obj_t *state, void *ud)
{
    feed_ctx_t *f = ud;
    json_t *c = json_object();
    if (!c)
        return -1;
    json_object_set_new_nocheck(c, "key", gw_b64_json(key, klen));
    json_object_set_new_nocheck(c, "seq", json_integer((json_int_t)seq));
    if (state) {
        json_object_set_new_nocheck(c, "type", json_string(crdt_type_name(crdt_obj_type(state))));
        if (f->with_state)
            json_object_set_new_nocheck(c, "state", crdt_obj_to_json(state));
    }
    return json_array_append_new(f->arr, c) ? -1 : 0;
}

static void get_changes(gw_server_t *s, const gw_request_t *rq, gw_response_t *rs)
{
    uint64_t since = 0, limit = 100;
    if (arg_u64(rq, "since", INT64_MAX, &since, rs) || arg_u64(rq, "limit", MAX_LIMIT, &limit, rs))
        return;
    const char *st = gw_arg(rq, "state");
    feed_ctx_t f = {json_array(), !st || strcmp(st, "0") != 0};
    uint64_t next = since;
    if (!f.arr) {
        gw_respond_error(rs, 500, "out of memory");
        return;
    }
    int rc = crdt_replica_changes(s->replica, since, (size_t)limit, feed_cb, &f, &next);
    if (rc < 0) {
        json_decref(f.arr);
        respond_replica_error(rs, rc, "changes");
        return;
    }
    json_t *j = json_object();
    json_object_set_new_nocheck(j, "changes", f.arr);
    json_object_set_new_nocheck(j, "next", json_integer((json_int_t)next));
    json_object_set_new_nocheck(j, "last_seq",
                                json_integer((json_int_t)crdt_replica_last_seq(s->replica)));
    gw_respond_json(rs, 200, j);
}

/* ---- routing -------------------------------------------------------------------------------- */

static bool method_ok(const gw_request_t *rq, gw_response_t *rs, gw_method_t m1, gw_method_t m2,
                      const char *allowed)
{
    if (rq->method == m1 || rq->method == m2)
        return true;
    gw_respond_error(rs, 405, "method not allowed here; allowed: %s", allowed);
    return false;
}

void gw_rest_handle(gw_server_t *s, const gw_request_t *rq, gw_response_t *rs)
{
    const char *p = rq->path;
    if (rq->too_many_args) {
        rs->ep = GW_EP_OTHER;
        gw_respond_error(rs, 400, "too many query arguments (at most %d)", GW_MAX_ARGS);
        return;
    }
    if (!strcmp(p, "/healthz")) {
        rs->ep = GW_EP_HEALTHZ;
        if (method_ok(rq, rs, GW_GET, GW_GET, "GET"))
            gw_healthz(s, rs);
        return;
    }
    if (!strcmp(p, "/metrics")) {
        rs->ep = GW_EP_METRICS;
        if (method_ok(rq, rs, GW_GET, GW_GET, "GET"))
            gw_metrics_render(s, rs);
        return;
    }
    if (!strcmp(p, "/v1/changes")) {
        rs->ep = GW_EP_CHANGES;
        if (method_ok(rq, rs, GW_GET, GW_GET, "GET"))
            get_changes(s, rq, rs);
        return;
    }
    if (!strcmp(p, "/v1/peers")) {
        rs->ep = GW_EP_PEERS;
        if (method_ok(rq, rs, GW_GET, GW_GET, "GET"))
            gw_peer_status(s, rs);
        return;
    }
    if (!strcmp(p, "/v1/timelines")) {
        rs->ep = GW_EP_SELECT;
        if (method_ok(rq, rs, GW_GET, GW_GET, "GET"))
            get_timelines(s, rq, rs);
        return;
    }
    static const char prefix[] = "/v1/keys/";
    if (!strncmp(p, prefix, sizeof(prefix) - 1)) {
        const char *seg = p + sizeof(prefix) - 1;
        const char *slash = strchr(seg, '/');
        size_t slen = slash ? (size_t)(slash - seg) : strlen(seg);
        bool timeline = false;
        if (slash) {
            if (strcmp(slash, "/timeline") != 0) {
                gw_respond_error(rs, 404, "no such endpoint");
                return;
            }
            timeline = true;
        }
        rs->ep = timeline ? GW_EP_TIMELINE : rq->method == GW_POST ? GW_EP_KEY_WRITE : GW_EP_KEY;
        if (timeline ? !method_ok(rq, rs, GW_GET, GW_GET, "GET")
                     : !method_ok(rq, rs, GW_GET, GW_POST, "GET, POST"))
            return;
        uint8_t *key;
        size_t klen;
        if (key_from_url(s, seg, slen, rs, &key, &klen))
            return;
        if (timeline)
            get_timeline(s, key, klen, rq, rs);
        else if (rq->method == GW_POST)
            post_key(s, key, klen, rq, rs);
        else
            get_key(s, key, klen, rq, rs);
        free(key);
        return;
    }
    rs->ep = GW_EP_OTHER;
    gw_respond_error(rs, 404, "no such endpoint");
}
