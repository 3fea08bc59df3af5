/* rest.c - crdtd's REST API: read keys, apply ops to each type, timeline reads, the change feed */
#include <float.h>
#include <inttypes.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "auth.h"
#include "crdt_json.h"
#include "loop.h"
#include "op.h"
#include "peer.h"
#include "rest.h"
#include "status.h"
#include "token.h"

/*
 * Byte strings (keys, prefixes, members, values) follow docs/encoding.md, "Bytes in JSON and
 * URLs": in JSON a string when they are UTF-8 text, else {"base64":..} (crdt_json_bytes,
 * gw_jw_bytes; requests take both forms); in URLs percent-encoded. libwebsockets 4.1.6 decodes
 * the path and the query before we see them, and on the way it merges "//", resolves "/./" and
 * "/../" (encoded or not), turns a bare '+' into a space, cuts at a bare ';' or '&', and drops a
 * request with %00 in it; so every URL byte string also has a base64url twin (RFC 4648 section 5,
 * padding optional) that lws leaves alone: /v1/keys64/{key} for a path key, and the arguments
 * prefix64, after64 and keys64 for prefix, after and keys. Routes (docs/http-api.md):
 *
 *   GET  /healthz                         GET /metrics
 *   GET  /v1/keys?prefix&after&limit      keys in key order, a page at a time
 *   GET  /v1/keys/{key}                   type, value, JSON state, binary state
 *   POST /v1/keys/{key}                   apply an op: {"type":..,"op":..,...}
 *   DELETE /v1/keys/{key}                 the op {"op":"delete"}: an observed-remove
 *   GET  /v1/keys/{key}/timeline          newest first: ?offset&limit, or ?max&min&cursor&limit
 *   GET  /v1/timelines?keys=k1,k2         coalesced newest first over several timelines
 *   GET  /v1/changes?since&limit          the change feed
 *
 * (/v1/keys64/{key} wherever /v1/keys/{key} is.)
 *
 * Every handler reads through the store and answers from the completion of its store call
 * (gw_http_reply); what a completion needs is in the handler's context (the decoded key, the
 * parsed arguments), freed there. Objects a completion receives are borrowed for the call, so the
 * response is rendered inside it.
 */

#define DEFAULT_LIMIT 50
#define MAX_LIMIT 10000
#define MAX_SELECT_KEYS 1000
#define LIST_DEFAULT_LIMIT 100
#define LIST_MAX_LIMIT 1000

/* ---- shared helpers ------------------------------------------------------------------------- */

/* base64url (padding optional: stripped, as any number of '=' was before) -> bytes; 0 or -1. */
static int b64url_decode(const char *s, size_t n, uint8_t **out, size_t *outlen)
{
    while (n && s[n - 1] == '=')
        n--;
    return crdt_base64_decode_ex(s, n, CRDT_B64_URL | CRDT_B64_NOPAD, out, outlen) < 0 ? -1 : 0;
}

/* A byte string of a URL into a new buffer (*out, free()): seg as lws percent-decoded it, or with
 * b64 its base64url. what names it in the error; 1..max bytes (min 0 allows the empty string,
 * *out then still a buffer). 0, or -1 after responding 400. */
static int url_bytes(const char *seg, size_t n, bool b64, const char *what, size_t min, size_t max,
                     gw_response_t *rs, uint8_t **out, size_t *outlen)
{
    *out = NULL;
    *outlen = 0;
    if (n < min) {
        gw_respond_error(rs, 400, "empty %s", what);
        return -1;
    }
    if (!b64) {
        if (n > max) {
            gw_respond_error(rs, 400, "%s of %zu bytes: the limit is %zu (--max-key)", what, n,
                             max);
            return -1;
        }
        if (!(*out = malloc(n ? n : 1))) {
            gw_respond_error(rs, 500, "out of memory");
            return -1;
        }
        memcpy(*out, seg, n);
        *outlen = n;
        return 0;
    }
    if (n / 4 * 3 > max + 3) {
        gw_respond_error(rs, 400, "%s longer than the limit of %zu bytes (--max-key)", what, max);
        return -1;
    }
    if (b64url_decode(seg, n, out, outlen)) {
        gw_respond_error(rs, 400, "%s is not valid base64url (RFC 4648 section 5, padding optional)",
                         what);
        return -1;
    }
    if (*outlen < min || *outlen > max) {
        gw_respond_error(rs, 400, "%s of %zu bytes: the limit is %zu (--max-key)", what, *outlen,
                         max);
        free(*out);
        *out = NULL;
        return -1;
    }
    return 0;
}

static int key_from_url(gw_server_t *s, const char *seg, size_t n, bool b64, gw_response_t *rs,
                        uint8_t **key, size_t *klen)
{
    return url_bytes(seg, n, b64, "key", 1, s->cfg.max_key, rs, key, klen);
}

/* A byte-string query argument `name`, percent-encoded, or its base64url twin `name`64: 0 when
 * neither is given, 1 with a new buffer *out (free()), -1 after responding 400 (both given, bad
 * base64url, too long). */
static int arg_bytes(gw_server_t *s, const gw_request_t *rq, const char *name,
                     gw_response_t *rs, uint8_t **out, size_t *n)
{
    char name64[32];
    snprintf(name64, sizeof(name64), "%s64", name);
    const char *v = gw_arg(rq, name), *v64 = gw_arg(rq, name64);
    *out = NULL;
    *n = 0;
    if (!v && !v64)
        return 0;
    if (v && v64) {
        gw_respond_error(rs, 400, "query arguments %s and %s: give one of them", name, name64);
        return -1;
    }
    char what[48];
    snprintf(what, sizeof(what), "query argument %s", v ? name : name64);
    return url_bytes(v ? v : v64, strlen(v ? v : v64), v64 != NULL, what, 0, s->cfg.max_key, rs,
                     out, n)
               ? -1
               : 1;
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

static int respond_store_error(gw_response_t *rs, int rc, const char *what)
{
    switch (rc) {
    case CRDT_ETYPE: gw_respond_error(rs, 409, "%s: the key holds another type", what); break;
    case CRDT_EINVAL: gw_respond_error(rs, 400, "%s: invalid argument", what); break;
    case CRDT_EOVERFLOW: gw_respond_error(rs, 400, "%s: counter would overflow int64", what); break;
    case CRDT_ENOMEM: gw_respond_error(rs, 500, "%s: out of memory", what); break;
    case CRDT_EIO:
        gw_respond_error(rs, 503, "%s: storage failure, writes are refused until restart", what);
        break;
    case CRDT_EUNAVAIL: gw_respond_error(rs, 503, "%s: the store is unavailable", what); break;
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
    json_object_set_new_nocheck(o, "member", crdt_json_bytes(e->member, e->member_len));
    json_object_set_new_nocheck(o, "score", json_real(e->score));
    return o;
}

char *gw_cursor_format(const crdt_tl_entry_t *e)
{
    uint64_t bits;
    memcpy(&bits, &e->score, sizeof(bits));
    size_t blen = crdt_base64_encoded_len(e->member_len, CRDT_B64_STD);
    char *s = malloc(blen + 24);
    if (!s)
        return NULL;
    int n = snprintf(s, 24, "%" PRIu64 "!", bits);
    crdt_base64_encode_into(s + n, e->member, e->member_len, CRDT_B64_STD);
    s[(size_t)n + blen] = '\0';
    return s;
}

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
    return json_array_append_new(ud, crdt_json_bytes(m, len)) ? -1 : 0;
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
        return crdt_json_bytes(val, len);
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

typedef struct key_ctx {
    gw_exchange_t *x;
    uint8_t *key;
    size_t klen;
    json_t *j;
} key_ctx_t;

static void key_ctx_done(key_ctx_t *c)
{
    gw_exchange_t *x = c->x;
    json_decref(c->j);
    free(c->key);
    free(c);
    gw_http_reply(x);
}

static void get_key_fp(void *ud, int rc, uint64_t fp)
{
    key_ctx_t *c = ud;
    if (rc == 0) {
        char hex[17];
        snprintf(hex, sizeof(hex), "%016" PRIx64, fp);
        json_object_set_new_nocheck(c->j, "fingerprint", json_string(hex));
    }
    gw_respond_json(&c->x->rs, 200, c->j);
    c->j = NULL;
    key_ctx_done(c);
}

static void get_key_got(void *ud, int rc, const crdt_obj_t *o)
{
    key_ctx_t *c = ud;
    gw_response_t *rs = &c->x->rs;
    if (rc < 0) {
        respond_store_error(rs, rc, "read");
        key_ctx_done(c);
        return;
    }
    if (!o || !crdt_obj_is_live(o)) {
        /* a key whose content was deleted (or never had any) reads as absent */
        gw_respond_error(rs, 404, "no such key");
        key_ctx_done(c);
        return;
    }
    json_t *j = c->j = json_object();
    if (!j) {
        gw_respond_error(rs, 500, "out of memory");
        key_ctx_done(c);
        return;
    }
    json_object_set_new_nocheck(j, "key", crdt_json_bytes(c->key, c->klen));
    json_object_set_new_nocheck(j, "type", json_string(crdt_type_name(crdt_obj_type(o))));
    json_object_set_new_nocheck(j, "value", value_json(o, j));
    const char *st = gw_arg(&c->x->rq, "state");
    if (!st || strcmp(st, "0") != 0) {
        json_object_set_new_nocheck(j, "state", crdt_obj_to_json(o));
        crdt_buf_t b = {0};
        if (crdt_obj_encode(o, &b) == 0)
            json_object_set_new_nocheck(j, "binary", gw_b64_json(b.data, b.len)); /* a frame */
        crdt_buf_free(&b);
    }
    crdt_store_fingerprint(c->x->srv->store, c->key, c->klen, get_key_fp, c);
}

/* Takes key (freed in the completion). */
static void get_key(gw_server_t *s, gw_exchange_t *x, uint8_t *key, size_t klen)
{
    key_ctx_t *c = malloc(sizeof(*c)); /* filled below */
    if (!c) {
        free(key);
        gw_respond_error(&x->rs, 500, "out of memory");
        gw_http_reply(x);
        return;
    }
    *c = (key_ctx_t){x, key, klen, NULL};
    if (gw_key_reserved(key, klen)) { /* crdtd's own keys are not data: absent to every read */
        get_key_got(c, 0, NULL);
        return;
    }
    crdt_store_get(s->store, key, klen, get_key_got, c);
}

/* ---- POST /v1/keys/{key} -------------------------------------------------------------------- */

static void post_done(gw_server_t *s, const gw_op_result_t *r, void *ud)
{
    gw_exchange_t *x = ud;
    gw_response_t *rs = &x->rs;
    if (r->rc < 0 && !r->applied) {
        gw_respond_error(rs, r->status, "%s", r->message);
        gw_http_reply(x);
        return;
    }
    json_t *j =
        json_pack("{s:I, s:I, s:I}", "applied", (json_int_t)r->applied, "ops", (json_int_t)r->ops,
                  "seq", (json_int_t)(r->seq ? r->seq : crdt_store_last_seq(s->store)));
    if (r->rc < 0 && j) /* a batch stopped midway by a storage failure (or memory) */
        json_object_set_new_nocheck(j, "error", json_string(r->message));
    gw_respond_json(rs, r->rc < 0 ? 503 : 200, j);
    rs->wait_seq = r->seq; /* gw_http_reply holds the answer until it is durable */
    if (r->seq)
        gw_loop_schedule_flush(s);
    gw_http_reply(x);
}

static void post_key(gw_server_t *s, gw_exchange_t *x, uint8_t *key, size_t klen)
{
    json_t *body = gw_parse_body(&x->rq, &x->rs);
    if (!body) {
        free(key);
        gw_http_reply(x);
        return;
    }
    gw_apply_op(s, key, klen, body, post_done, x); /* key and body are borrowed for the call */
    json_decref(body);
    free(key);
}

/* ---- DELETE /v1/keys/{key} ------------------------------------------------------------------ */

static void delete_done(gw_server_t *s, const gw_op_result_t *r, void *ud)
{
    gw_exchange_t *x = ud;
    if (r->rc == 0 && r->status == 404) { /* nothing live here to delete */
        gw_respond_error(&x->rs, 404, "%s", r->message);
        gw_http_reply(x);
        return;
    }
    post_done(s, r, ud); /* answered as every write: applied, ops, seq, once durable */
}

/* The op {"op":"delete"} (docs/http-api.md, "Deleting a key"); an optional body
 * {"type":".."} asks that the key hold that type. Takes key. */
static void delete_key(gw_server_t *s, gw_exchange_t *x, uint8_t *key, size_t klen)
{
    json_t *op = NULL;
    if (x->rq.body_len) {
        if (!(op = gw_parse_body(&x->rq, &x->rs)))
            goto out;
        const json_t *name = json_object_get(op, "op");
        if (name && (!json_is_string(name) || strcmp(json_string_value(name), "delete") != 0)) {
            gw_respond_error(&x->rs, 400, "DELETE takes no op but \"delete\" (POST applies ops)");
            goto out;
        }
    } else {
        op = json_object();
    }
    if (!op || json_object_set_new(op, "op", json_string("delete")) < 0) {
        gw_respond_error(&x->rs, 500, "out of memory");
        goto out;
    }
    gw_apply_op(s, key, klen, op, delete_done, x); /* key and op are borrowed for the call */
    json_decref(op);
    free(key);
    return;
out:
    json_decref(op);
    free(key);
    gw_http_reply(x);
}

/* ---- timeline reads ------------------------------------------------------------------------- */

typedef struct tl_ctx {
    gw_exchange_t *x;
    uint8_t *key;
    size_t klen;
    uint64_t offset, limit;
    double max, min;
    bool by_score;
    crdt_tl_entry_t after;
    bool has_after;
    uint8_t *cmem; /* the cursor's member */
} tl_ctx_t;

static void timeline_write(tl_ctx_t *c, const crdt_obj_t *o)
{
    gw_response_t *rs = &c->x->rs;
    uint64_t limit = c->limit, offset = c->offset;
    crdt_tl_entry_t *es = malloc((limit ? limit : 1) * sizeof(*es));
    if (!es) {
        gw_respond_error(rs, 500, "out of memory");
        return;
    }
    size_t n = 0, bytes = 0;
    if (o && limit)
        n = c->by_score ? crdt_timeline_range_by_score(o, c->max, c->min,
                                                       c->has_after ? &c->after : NULL, limit, es)
                        : crdt_timeline_range(o, offset, limit, es);
    for (size_t i = 0; i < n; i++)
        bytes += es[i].member_len + es[i].member_len / 3 + 64;
    gw_jw_t w;
    gw_jw_init(&w, bytes + c->klen * 2 + 128);
    gw_jw_lit(&w, "{\"key\":");
    gw_jw_bytes(&w, c->key, c->klen);
    gw_jw_lit(&w, ",\"entries\":[");
    for (size_t i = 0; i < n; i++) {
        gw_jw_lit(&w, i ? ",{\"member\":" : "{\"member\":");
        gw_jw_bytes(&w, es[i].member, es[i].member_len);
        gw_jw_lit(&w, ",\"score\":");
        gw_jw_double(&w, es[i].score);
        gw_jw_lit(&w, "}");
    }
    gw_jw_lit(&w, "],\"size\":");
    gw_jw_u64(&w, o ? crdt_timeline_card(o) : 0);
    if (c->by_score) {
        /* digits, '!' and base64: nothing to escape */
        char *cur = n == limit && n ? gw_cursor_format(&es[n - 1]) : NULL;
        gw_jw_lit(&w, ",\"cursor\":");
        if (cur) {
            gw_jw_lit(&w, "\"");
            gw_jw_lit(&w, cur);
            gw_jw_lit(&w, "\"}");
        } else {
            gw_jw_lit(&w, "null}");
        }
        if (n == limit && n && !cur)
            w.oom = true;
        free(cur);
    } else {
        gw_jw_lit(&w, ",\"next_offset\":");
        if (n == limit && n)
            gw_jw_u64(&w, offset + n);
        else
            gw_jw_lit(&w, "null");
        gw_jw_lit(&w, "}");
    }
    free(es);
    gw_respond_jw(rs, 200, &w);
}

static void timeline_got(void *ud, int rc, const crdt_obj_t *o)
{
    tl_ctx_t *c = ud;
    gw_exchange_t *x = c->x;
    if (rc < 0)
        respond_store_error(&x->rs, rc, "read");
    else if (o && crdt_obj_type(o) != CRDT_TIMELINE)
        gw_respond_error(&x->rs, 409, "the key holds type %s, not timeline",
                         crdt_type_name(crdt_obj_type(o)));
    else
        timeline_write(c, o);
    free(c->cmem);
    free(c->key);
    free(c);
    gw_http_reply(x);
}

/* Takes key. */
static void get_timeline(gw_server_t *s, gw_exchange_t *x, uint8_t *key, size_t klen)
{
    const gw_request_t *rq = &x->rq;
    gw_response_t *rs = &x->rs;
    tl_ctx_t *c = malloc(sizeof(*c)); /* filled below */
    if (!c) {
        gw_respond_error(rs, 500, "out of memory");
        goto fail;
    }
    *c = (tl_ctx_t){
        .x = x, .key = key, .klen = klen, .limit = DEFAULT_LIMIT, .max = DBL_MAX, .min = -DBL_MAX};
    if (arg_u64(rq, "offset", SIZE_MAX / 2, &c->offset, rs) ||
        arg_u64(rq, "limit", MAX_LIMIT, &c->limit, rs) || arg_double(rq, "max", &c->max, rs) ||
        arg_double(rq, "min", &c->min, rs))
        goto fail;
    const char *cursor = gw_arg(rq, "cursor");
    c->by_score = cursor || gw_arg(rq, "max") || gw_arg(rq, "min");
    if (c->by_score && gw_arg(rq, "offset")) {
        gw_respond_error(rs, 400, "offset cannot be combined with max, min or cursor");
        goto fail;
    }
    if (cursor && *cursor) {
        if (gw_cursor_parse(cursor, &c->after.score, &c->cmem, &c->after.member_len)) {
            gw_respond_error(rs, 400, "invalid cursor (expected the \"cursor\" of a response)");
            goto fail;
        }
        c->after.member = c->cmem;
        c->has_after = true;
    }
    if (gw_key_reserved(key, klen)) { /* crdtd's own keys are not data: read as absent */
        timeline_got(c, 0, NULL);
        return;
    }
    crdt_store_get(s->store, key, klen, timeline_got, c);
    return;
fail:
    if (c)
        free(c->cmem);
    free(c);
    free(key);
    gw_http_reply(x);
}

/* GET /v1/timelines?keys=k1,k2,...&offset=&limit= : one newest-first list over several. */
typedef struct tls_ctx {
    gw_exchange_t *x;
    uint64_t offset, limit;
    size_t nk;
    uint8_t **kb;
    crdt_bytes_t *keys;
} tls_ctx_t;

static void tls_free(tls_ctx_t *c)
{
    if (c->kb)
        for (size_t i = 0; i < c->nk; i++)
            free(c->kb[i]);
    free(c->kb);
    free(c->keys);
    free(c);
}

static void timelines_got(void *ud, int rc, const crdt_obj_t *const *tls, size_t nk)
{
    tls_ctx_t *c = ud;
    gw_exchange_t *x = c->x;
    gw_response_t *rs = &x->rs;
    uint64_t offset = c->offset, limit = c->limit;
    crdt_tl_entry_t *es = NULL;
    size_t *src = NULL;
    json_t *j = NULL;
    if (rc < 0) {
        respond_store_error(rs, rc, "read");
        goto out;
    }
    for (size_t i = 0; i < nk; i++)
        if (tls[i] && crdt_obj_type(tls[i]) != CRDT_TIMELINE &&
            !gw_key_reserved(c->keys[i].data, c->keys[i].len)) {
            gw_respond_error(rs, 409, "keys[%zu] holds type %s, not timeline", i,
                             crdt_type_name(crdt_obj_type(tls[i])));
            goto out;
        }
    es = malloc((limit ? limit : 1) * sizeof(*es));
    src = malloc((limit ? limit : 1) * sizeof(*src));
    j = json_object();
    json_t *a = json_array();
    if (!es || !src || !j || !a) {
        json_decref(a);
        gw_respond_error(rs, 500, "out of memory");
        goto out;
    }
    /* crdtd's own keys are not data: they read as absent (empty) */
    const crdt_obj_t **vis = malloc(nk * sizeof(*vis));
    if (!vis) {
        json_decref(a);
        gw_respond_error(rs, 500, "out of memory");
        goto out;
    }
    for (size_t i = 0; i < nk; i++)
        vis[i] = gw_key_reserved(c->keys[i].data, c->keys[i].len) ? NULL : tls[i];
    size_t n = limit ? crdt_timeline_select(vis, nk, offset, limit, es, src) : 0;
    free(vis);
    for (size_t i = 0; i < n; i++) {
        json_t *e = entry_json(&es[i]);
        if (e)
            json_object_set_new_nocheck(e, "key",
                                        crdt_json_bytes(c->keys[src[i]].data, c->keys[src[i]].len));
        json_array_append_new(a, e);
    }
    json_object_set_new_nocheck(j, "entries", a);
    json_object_set_new_nocheck(
        j, "next_offset", n == limit && n ? json_integer((json_int_t)(offset + n)) : json_null());
    gw_respond_json(rs, 200, j);
    j = NULL;
out:
    json_decref(j);
    free(es);
    free(src);
    tls_free(c);
    gw_http_reply(x);
}

static void get_timelines(gw_server_t *s, gw_exchange_t *x)
{
    const gw_request_t *rq = &x->rq;
    gw_response_t *rs = &x->rs;
    uint64_t offset = 0, limit = DEFAULT_LIMIT;
    tls_ctx_t *c = NULL;
    if (arg_u64(rq, "offset", SIZE_MAX / 2, &offset, rs) ||
        arg_u64(rq, "limit", MAX_LIMIT, &limit, rs))
        goto fail;
    /* keys: percent-encoded keys; keys64: base64url ones. A comma separates in both: lws has
     * decoded a %2C before we see it, so a key holding a comma is given in keys64. */
    const char *keys = gw_arg(rq, "keys"), *keys64 = gw_arg(rq, "keys64");
    bool b64 = keys64 != NULL;
    if (keys && keys64) {
        gw_respond_error(rs, 400, "query arguments keys and keys64: give one of them");
        goto fail;
    }
    if (b64)
        keys = keys64;
    if (!keys || !*keys) {
        gw_respond_error(rs, 400,
                         "query argument keys (comma-separated keys) or keys64 (comma-separated "
                         "base64url keys) needed");
        goto fail;
    }
    size_t nk = 1;
    for (const char *p = keys; *p; p++)
        nk += *p == ',';
    if (nk > MAX_SELECT_KEYS) {
        gw_respond_error(rs, 400, "at most %d keys per select", MAX_SELECT_KEYS);
        goto fail;
    }
    c = calloc(1, sizeof(*c));
    if (c) {
        *c = (tls_ctx_t){
            x, offset, limit, nk, calloc(nk, sizeof(uint8_t *)), calloc(nk, sizeof(crdt_bytes_t))};
    }
    if (!c || !c->kb || !c->keys) {
        gw_respond_error(rs, 500, "out of memory");
        goto fail;
    }
    const char *p = keys;
    for (size_t i = 0; i < nk; i++) {
        const char *e = strchr(p, ',');
        size_t len = e ? (size_t)(e - p) : strlen(p);
        if (key_from_url(s, p, len, b64, rs, &c->kb[i], &c->keys[i].len))
            goto fail;
        c->keys[i].data = c->kb[i];
        char what[32];
        snprintf(what, sizeof(what), "keys[%zu]", i);
        if (!gw_auth_http_key(x, GW_ACCESS_READ, c->kb[i], c->keys[i].len, what))
            goto fail;
        p = e ? e + 1 : p + len;
    }
    crdt_store_get_many(s->store, c->keys, nk, timelines_got, c);
    return;
fail:
    if (c)
        tls_free(c);
    gw_http_reply(x);
}

/* ---- the change feed ------------------------------------------------------------------------ */

typedef struct feed_ctx {
    gw_exchange_t *x;
    json_t *arr;
    bool with_state;
    uint64_t since;
} feed_ctx_t;

static int feed_cb(const void *key, size_t klen, uint64_t seq, const crdt_obj_t *state, void *ud)
{
    feed_ctx_t *f = ud;
    if (gw_key_reserved(key, klen))
        return 0; /* crdtd's own bookkeeping (op-id marks) is not in the feed anyone reads */
    /* a token sees the changes of the keys it may read; the others are left out, as if absent */
    if (gw_auth_key(gw_auth_http_token(f->x), GW_ACCESS_READ, key, klen, false) != GW_DENY_NONE)
        return 0;
    json_t *c = json_object();
    if (!c)
        return -1;
    json_object_set_new_nocheck(c, "key", crdt_json_bytes(key, klen));
    json_object_set_new_nocheck(c, "seq", json_integer((json_int_t)seq));
    if (state) {
        json_object_set_new_nocheck(c, "type", json_string(crdt_type_name(crdt_obj_type(state))));
        if (f->with_state)
            json_object_set_new_nocheck(c, "state", crdt_obj_to_json(state));
    }
    return json_array_append_new(f->arr, c) ? -1 : 0;
}

static void changes_done(void *ud, int rc, uint64_t next)
{
    feed_ctx_t *f = ud;
    gw_exchange_t *x = f->x;
    if (rc == CRDT_ELIMIT) {
        /* the store no longer holds the changes after since (a gateway over Redis keeps a
         * bounded ring, and its positions start anew each run): the reader must rescan */
        json_decref(f->arr);
        gw_respond_error(&x->rs, 410,
                         "changes: position %llu is older than this gateway keeps: rescan from "
                         "since=0",
                         (unsigned long long)f->since);
    } else if (rc < 0) {
        json_decref(f->arr);
        respond_store_error(&x->rs, rc, "changes");
    } else {
        json_t *j = json_object();
        json_object_set_new_nocheck(j, "changes", f->arr);
        json_object_set_new_nocheck(j, "next", json_integer((json_int_t)next));
        json_object_set_new_nocheck(j, "last_seq",
                                    json_integer((json_int_t)crdt_store_last_seq(x->srv->store)));
        gw_respond_json(&x->rs, 200, j);
    }
    free(f);
    gw_http_reply(x);
}

static void get_changes(gw_server_t *s, gw_exchange_t *x)
{
    const gw_request_t *rq = &x->rq;
    gw_response_t *rs = &x->rs;
    uint64_t since = 0, limit = 100;
    if (arg_u64(rq, "since", INT64_MAX, &since, rs) ||
        arg_u64(rq, "limit", MAX_LIMIT, &limit, rs)) {
        gw_http_reply(x);
        return;
    }
    const char *st = gw_arg(rq, "state");
    feed_ctx_t *f = malloc(sizeof(*f));
    if (f)
        *f = (feed_ctx_t){x, json_array(), !st || strcmp(st, "0") != 0, since};
    if (!f || !f->arr) {
        free(f);
        gw_respond_error(rs, 500, "out of memory");
        gw_http_reply(x);
        return;
    }
    crdt_store_changes(s->store, since, (size_t)limit, feed_cb, changes_done, f);
}

/* ---- GET /v1/keys?prefix&after&limit: keys in key order -------------------------------------- */

/*
 * The store lists keys in key order from a point (crdt_store_list_keys: the embedded store from
 * its ordered index, so a page costs O(log n + limit)), live data keys only. A page asks it for
 * limit + 1 keys (the extra one says whether a next page exists); when the token reads only part
 * of the prefix, the keys it may not read are dropped and the listing goes on after the last key
 * the store gave, in chunks, until the page is full or the range ends.
 */

#define LIST_SCAN_CHUNK 1024

typedef struct list_key {
    uint8_t *p;
    size_t n;
} list_key_t;

typedef struct list_ctx {
    gw_exchange_t *x;
    uint8_t *prefix, *after;
    size_t plen, alen;
    bool has_after;
    bool filter; /* the token may read only part of the prefix: check each key */
    size_t limit;
    list_key_t *keys; /* up to limit + 1 keys, ascending */
    size_t n;
    list_key_t last; /* the last key the store listed (where the next chunk starts after) */
    bool has_last;
    int rc;
    bool issuing, pending, finished;
} list_ctx_t;

static int key_cmp(const uint8_t *a, size_t an, const uint8_t *b, size_t bn)
{
    size_t m = an < bn ? an : bn;
    int c = m ? memcmp(a, b, m) : 0;
    return c ? c : an < bn ? -1 : an > bn;
}

static int list_each(void *ud, const void *key, size_t klen)
{
    list_ctx_t *c = ud;
    if (c->n == c->limit + 1)
        return 1; /* the page is full */
    /* defensive: a store must list in order, each key once, data keys only, under the prefix */
    if ((c->has_last && key_cmp(key, klen, c->last.p, c->last.n) <= 0) ||
        (c->has_after && key_cmp(key, klen, c->after, c->alen) <= 0) || klen < c->plen ||
        (c->plen && memcmp(key, c->prefix, c->plen) != 0) || gw_key_reserved(key, klen))
        return 0;
    uint8_t *copy = malloc(klen ? klen : 1);
    if (!copy) {
        c->rc = CRDT_ENOMEM;
        return 1;
    }
    memcpy(copy, key, klen);
    free(c->last.p);
    c->last = (list_key_t){copy, klen};
    c->has_last = true;
    if (c->filter &&
        gw_auth_key(gw_auth_http_token(c->x), GW_ACCESS_READ, key, klen, false) != GW_DENY_NONE)
        return 0;
    uint8_t *kept = malloc(klen ? klen : 1);
    if (!kept) {
        c->rc = CRDT_ENOMEM;
        return 1;
    }
    memcpy(kept, key, klen);
    c->keys[c->n++] = (list_key_t){kept, klen};
    return 0;
}

static void list_free(list_ctx_t *c)
{
    for (size_t i = 0; i < c->n; i++)
        free(c->keys[i].p);
    free(c->keys);
    free(c->last.p);
    free(c->prefix);
    free(c->after);
    free(c);
}

static void list_finish(list_ctx_t *c)
{
    gw_exchange_t *x = c->x;
    if (c->rc < 0) {
        respond_store_error(&x->rs, c->rc, "list");
    } else {
        size_t n = c->n > c->limit ? c->limit : c->n, bytes = 64;
        for (size_t i = 0; i < n; i++)
            bytes += c->keys[i].n + c->keys[i].n / 3 + 16;
        gw_jw_t w;
        gw_jw_init(&w, bytes);
        gw_jw_lit(&w, "{\"keys\":[");
        for (size_t i = 0; i < n; i++) {
            if (i)
                gw_jw_lit(&w, ",");
            gw_jw_bytes(&w, c->keys[i].p, c->keys[i].n);
        }
        gw_jw_lit(&w, "],\"next\":");
        if (c->n > c->limit) {
            /* the after64 of the next page: base64url needs no escaping, in JSON or a URL */
            char *next = gw_b64url_encode(c->keys[n - 1].p, c->keys[n - 1].n);
            if (!next)
                w.oom = true;
            gw_jw_lit(&w, "\"");
            gw_jw_lit(&w, next ? next : "");
            gw_jw_lit(&w, "\"}");
            crdt_free(next);
        } else {
            gw_jw_lit(&w, "null}");
        }
        gw_respond_jw(&x->rs, 200, &w);
    }
    list_free(c);
    gw_http_reply(x);
}

static void list_issue_more(list_ctx_t *c);

static void list_listed(void *ud, int rc, uint64_t more)
{
    list_ctx_t *c = ud;
    c->pending = false;
    if (rc < 0 && c->rc == 0)
        c->rc = rc;
    c->finished = c->rc < 0 || !more || c->n == c->limit + 1;
    if (c->issuing)
        return; /* completed inside the store call: list_issue_more goes on */
    if (c->finished)
        list_finish(c);
    else
        list_issue_more(c);
}

/* Lists while the calls complete at once; returns with one in flight (its completion goes on). */
static void list_issue_more(list_ctx_t *c)
{
    while (!c->finished) {
        size_t need = c->limit + 1 - c->n;
        if (c->filter && need < LIST_SCAN_CHUNK)
            need = LIST_SCAN_CHUNK; /* some keys may be dropped: ask for more at once */
        const uint8_t *after = c->has_last ? c->last.p : c->after;
        size_t alen = c->has_last ? c->last.n : c->alen;
        if (!c->has_last && !c->has_after)
            after = NULL; /* from the first key */
        else if (!after)
            after = (const uint8_t *)""; /* after the empty key: non-NULL */
        c->pending = c->issuing = true;
        crdt_store_list_keys(c->x->srv->store, c->prefix, c->plen, after, alen, need, list_each,
                             list_listed, c);
        c->issuing = false;
        if (c->pending)
            return;
    }
    list_finish(c);
}

/* Whether some read grant of t lies under prefix (so part of the prefix is readable). */
static bool grant_under(const gw_token_t *t, const uint8_t *prefix, size_t plen)
{
    for (size_t i = 0; i < t->nread; i++)
        if (t->read[i].len > plen && (!plen || !memcmp(t->read[i].prefix, prefix, plen)))
            return true;
    return false;
}

static void list_keys(gw_server_t *s, gw_exchange_t *x)
{
    const gw_request_t *rq = &x->rq;
    gw_response_t *rs = &x->rs;
    list_ctx_t *c = calloc(1, sizeof(*c));
    uint64_t limit = LIST_DEFAULT_LIMIT;
    int r;
    if (!c) {
        gw_respond_error(rs, 500, "out of memory");
        goto fail;
    }
    c->x = x;
    if (arg_u64(rq, "limit", LIST_MAX_LIMIT, &limit, rs))
        goto fail;
    if (!limit) {
        gw_respond_error(rs, 400, "query argument limit: 1..%d", LIST_MAX_LIMIT);
        goto fail;
    }
    c->limit = (size_t)limit;
    if (arg_bytes(s, rq, "prefix", rs, &c->prefix, &c->plen) < 0 ||
        (r = arg_bytes(s, rq, "after", rs, &c->after, &c->alen)) < 0)
        goto fail;
    c->has_after = r == 1;
    const gw_token_t *t = gw_auth_http_token(x);
    if (gw_auth_enabled(s) && !t) {
        /* a handler reached without the gate: gw_auth_http_key answers 401 */
        gw_auth_http_key(x, GW_ACCESS_READ, c->prefix, c->plen, "prefix");
        goto fail;
    }
    if (t && gw_auth_key(t, GW_ACCESS_READ, c->prefix, c->plen, true) != GW_DENY_NONE) {
        /* the prefix is not all readable: list what a grant under it allows, or refuse */
        if (!grant_under(t, c->prefix, c->plen)) {
            gw_auth_http_key(x, GW_ACCESS_READ, c->prefix, c->plen, "prefix");
            goto fail;
        }
        c->filter = true;
    }
    if (!(c->keys = malloc((c->limit + 1) * sizeof(*c->keys)))) {
        gw_respond_error(rs, 500, "out of memory");
        goto fail;
    }
    list_issue_more(c);
    return;
fail:
    if (c)
        list_free(c);
    gw_http_reply(x);
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

void gw_rest_handle(gw_server_t *s, gw_exchange_t *x)
{
    const gw_request_t *rq = &x->rq;
    gw_response_t *rs = &x->rs;
    const char *p = rq->path;
    if (rq->too_many_args) {
        rs->ep = GW_EP_OTHER;
        gw_respond_error(rs, 400, "too many query arguments (at most %d)", GW_MAX_ARGS);
        gw_http_reply(x);
        return;
    }
    if (!strcmp(p, "/healthz")) {
        rs->ep = GW_EP_HEALTHZ;
        if (method_ok(rq, rs, GW_GET, GW_GET, "GET"))
            gw_status_healthz(s, x);
        else
            gw_http_reply(x);
        return;
    }
    if (!strcmp(p, "/metrics")) {
        rs->ep = GW_EP_METRICS;
        if (method_ok(rq, rs, GW_GET, GW_GET, "GET"))
            gw_status_metrics(s, x);
        else
            gw_http_reply(x);
        return;
    }
    if (!strcmp(p, "/v1/changes")) {
        rs->ep = GW_EP_CHANGES;
        if (method_ok(rq, rs, GW_GET, GW_GET, "GET"))
            get_changes(s, x);
        else
            gw_http_reply(x);
        return;
    }
    if (!strcmp(p, "/v1/peers")) {
        rs->ep = GW_EP_PEERS;
        if (method_ok(rq, rs, GW_GET, GW_GET, "GET"))
            gw_peer_status(s, rs);
        gw_http_reply(x);
        return;
    }
    if (!strcmp(p, "/v1/timelines")) {
        rs->ep = GW_EP_SELECT;
        if (method_ok(rq, rs, GW_GET, GW_GET, "GET"))
            get_timelines(s, x);
        else
            gw_http_reply(x);
        return;
    }
    if (!strcmp(p, "/v1/keys")) {
        rs->ep = GW_EP_LIST;
        if (method_ok(rq, rs, GW_GET, GW_GET, "GET"))
            list_keys(s, x);
        else
            gw_http_reply(x);
        return;
    }
    /* /v1/keys/{key}: the key as lws percent-decoded it, everything up to a final "/timeline";
     * /v1/keys64/{key}: base64url, which has no '/'. */
    static const char prefix[] = "/v1/keys/", prefix64[] = "/v1/keys64/";
    static const char tl[] = "/timeline";
    bool b64 = !strncmp(p, prefix64, sizeof(prefix64) - 1);
    if (b64 || !strncmp(p, prefix, sizeof(prefix) - 1)) {
        const char *seg = p + (b64 ? sizeof(prefix64) : sizeof(prefix)) - 1;
        size_t slen = strlen(seg);
        bool timeline = false;
        if (slen > sizeof(tl) - 1 && !strcmp(seg + slen - (sizeof(tl) - 1), tl)) {
            timeline = true;
            slen -= sizeof(tl) - 1;
        }
        bool del = !timeline && rq->method == GW_DELETE;
        rs->ep = timeline                       ? GW_EP_TIMELINE
                 : rq->method == GW_POST || del ? GW_EP_KEY_WRITE
                                                : GW_EP_KEY;
        if (b64 && memchr(seg, '/', slen)) {
            rs->ep = GW_EP_OTHER;
            gw_respond_error(rs, 404, "no such endpoint");
            gw_http_reply(x);
            return;
        }
        if (rq->path_len != (size_t)(seg - p) + strlen(seg)) {
            /* lws cut the path at a bare ';' or '&' (it splits there as in a query) */
            gw_respond_error(rs, 400,
                             "the path holds a bare ';' or '&': percent-encode them in a key "
                             "(%%3B, %%26)");
            gw_http_reply(x);
            return;
        }
        uint8_t *key;
        size_t klen;
        if ((timeline ? !method_ok(rq, rs, GW_GET, GW_GET, "GET")
                      : !del && !method_ok(rq, rs, GW_GET, GW_POST, "GET, POST, DELETE")) ||
            key_from_url(s, seg, slen, b64, rs, &key, &klen)) {
            gw_http_reply(x);
            return;
        }
        bool write = rq->method == GW_POST || del;
        if (!gw_auth_http_key(x, write ? GW_ACCESS_WRITE : GW_ACCESS_READ, key, klen, "key")) {
            free(key);
            gw_http_reply(x);
            return;
        }
        if (timeline)
            get_timeline(s, x, key, klen);
        else if (del)
            delete_key(s, x, key, klen);
        else if (rq->method == GW_POST)
            post_key(s, x, key, klen);
        else
            get_key(s, x, key, klen);
        return;
    }
    rs->ep = GW_EP_OTHER;
    gw_respond_error(rs, 404, "no such endpoint");
    gw_http_reply(x);
}
