/* crdt_v1.c - the crdt.v1 codec: decoding with every protocol check, encoding, error names */
#include "crdt_v1.h"

#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "crdt_json.h"

static const char *const type_names[CRDT_V1_TYPE_COUNT] = {
    [CRDT_V1_HELLO] = "hello",
    [CRDT_V1_SUBSCRIBE] = "subscribe",
    [CRDT_V1_UNSUBSCRIBE] = "unsubscribe",
    [CRDT_V1_APPLY] = "apply",
    [CRDT_V1_PING] = "ping",
    [CRDT_V1_WELCOME] = "welcome",
    [CRDT_V1_CHANGE] = "change",
    [CRDT_V1_SUBSCRIBED] = "subscribed",
    [CRDT_V1_UNSUBSCRIBED] = "unsubscribed",
    [CRDT_V1_ACK] = "ack",
    [CRDT_V1_PONG] = "pong",
    [CRDT_V1_ERROR] = "error",
};

static const char *const code_names[CRDT_V1_E_COUNT] = {
    "bad_json",  "bad_request", "unknown_type", "unknown_op", "wrong_type", "unauthorized",
    "too_large", "limit",       "storage",      "expired",    "internal",
};

const char *crdt_v1_type_name(crdt_v1_type_t t)
{
    return t > CRDT_V1_NONE && t < CRDT_V1_TYPE_COUNT ? type_names[t] : NULL;
}

const char *crdt_v1_code_name(crdt_v1_code_t c)
{
    return (unsigned)c < CRDT_V1_E_COUNT ? code_names[c] : NULL;
}

crdt_v1_code_t crdt_v1_code_from_name(const char *name)
{
    for (int c = 0; name && c < CRDT_V1_E_COUNT; c++)
        if (!strcmp(name, code_names[c]))
            return (crdt_v1_code_t)c;
    return CRDT_V1_E_OTHER;
}

bool crdt_v1_client_id_ok(const char *c, size_t n)
{
    if (!c || n < 1 || n > CRDT_V1_CLIENT_MAX)
        return false;
    for (size_t i = 0; i < n; i++) {
        char ch = c[i];
        if (!((ch >= 'A' && ch <= 'Z') || (ch >= 'a' && ch <= 'z') || (ch >= '0' && ch <= '9') ||
              ch == '.' || ch == '_' || ch == ':' || ch == '-'))
            return false;
    }
    return true;
}

static bool is_client_type(crdt_v1_type_t t)
{
    return t >= CRDT_V1_HELLO && t <= CRDT_V1_PING;
}

/* ---- decoding ------------------------------------------------------------------------------- */

typedef struct dec {
    const json_t *j;
    const crdt_v1_limits_t *lim;
    crdt_v1_msg_t *m;
    crdt_v1_error_t *err;
} dec_t;

static int fail(dec_t *d, crdt_v1_code_t code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static int fail(dec_t *d, crdt_v1_code_t code, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    crdt_v1_fail(d->err, code, fmt, ap);
    va_end(ap);
    return -1;
}

int crdt_v1_fail(crdt_v1_error_t *err, crdt_v1_code_t code, const char *fmt, va_list ap)
{
    err->code = code;
    vsnprintf(err->text, sizeof(err->text), fmt, ap);
    return -1;
}

/* A non-negative integer field up to max: 1 and *out when present, 0 when absent, -1 when
 * malformed. */
static int u64_field(const json_t *o, const char *name, uint64_t max, uint64_t *out)
{
    const json_t *v = json_object_get(o, name);
    if (!v)
        return 0;
    if (!json_is_integer(v) || json_integer_value(v) < 0 || (uint64_t)json_integer_value(v) > max)
        return -1;
    *out = (uint64_t)json_integer_value(v);
    return 1;
}

/* A required non-negative integer field; -1 after failing with `what` when absent or bad. */
static int need_u64(dec_t *d, const char *name, uint64_t *out)
{
    if (u64_field(d->j, name, INT64_MAX, out) == 1)
        return 0;
    return fail(d, CRDT_V1_E_BAD_REQUEST, "\"%s\": a non-negative integer is required", name);
}

static int opt_bool(dec_t *d, const char *name, bool required, bool *out)
{
    const json_t *v = json_object_get(d->j, name);
    if (!v && !required) {
        *out = false;
        return 0;
    }
    if (!json_is_boolean(v))
        return fail(d, CRDT_V1_E_BAD_REQUEST, "\"%s\": %s boolean", name,
                    required ? "a" : "expected a");
    *out = json_is_true(v);
    return 0;
}

/* An optional string field copied into *out (NULL when absent); -1 after failing. */
static int opt_str(dec_t *d, const char *name, char **out)
{
    const json_t *v = json_object_get(d->j, name);
    *out = NULL;
    if (!v)
        return 0;
    if (!json_is_string(v))
        return fail(d, CRDT_V1_E_BAD_REQUEST, "\"%s\": expected a string", name);
    size_t n = json_string_length(v);
    if (memchr(json_string_value(v), '\0', n))
        return fail(d, CRDT_V1_E_BAD_REQUEST, "\"%s\": a NUL in the string", name);
    if (!(*out = malloc(n + 1)))
        return fail(d, CRDT_V1_E_INTERNAL, "out of memory");
    memcpy(*out, json_string_value(v), n + 1);
    return 0;
}

/* A byte string in either JSON form (docs/encoding.md, "Bytes in JSON and URLs": a string, or
 * {"base64":..}) of min..max bytes (max 0: unbounded) into a new buffer (NULL for 0 bytes); 0, or
 * -1 with *why a static reason. */
static int bytes_value(const json_t *v, size_t min, size_t max, uint8_t **out, size_t *len,
                       const char **why)
{
    *out = NULL;
    *len = 0;
    *why = "expected a string or {\"base64\":\"...\"}";
    if (!v)
        return -1;
    uint8_t *b = NULL;
    size_t n = 0;
    int rc = crdt_json_get_bytes(v, max ? max : SIZE_MAX, &b, &n, why);
    if (rc == CRDT_ENOMEM)
        *why = "out of memory";
    if (rc < 0)
        return -1;
    if (n < min) {
        crdt_free(b);
        *why = "empty";
        return -1;
    }
    if (!n) {
        crdt_free(b);
        b = NULL;
    }
    *out = b;
    *len = n;
    return 0;
}

static size_t max_key(const dec_t *d)
{
    return d->lim ? d->lim->max_key : 0;
}

static int read_key(dec_t *d)
{
    const char *why;
    if (bytes_value(json_object_get(d->j, "key"), 1, max_key(d), &d->m->key, &d->m->klen, &why)) {
        if (max_key(d))
            return fail(d, CRDT_V1_E_BAD_REQUEST,
                        "\"key\": %s (1 to %zu bytes, a string or {\"base64\":..})", why,
                        max_key(d));
        return fail(d, CRDT_V1_E_BAD_REQUEST,
                    "\"key\": %s (1 or more bytes, a string or {\"base64\":..})", why);
    }
    return 0;
}

static int read_topics(dec_t *d)
{
    const json_t *ks = json_object_get(d->j, "keys"), *ps = json_object_get(d->j, "prefixes");
    if ((ks && !json_is_array(ks)) || (ps && !json_is_array(ps)))
        return fail(d, CRDT_V1_E_BAD_REQUEST, "\"keys\" and \"prefixes\" must be arrays");
    size_t nk = json_array_size(ks), np = json_array_size(ps), n = nk + np;
    if (!n)
        return fail(d, CRDT_V1_E_BAD_REQUEST, "no keys and no prefixes");
    if (d->lim && d->lim->max_topics && n > d->lim->max_topics)
        return fail(d, CRDT_V1_E_LIMIT, "more than %zu keys and prefixes (--ws-max-subscriptions)",
                    d->lim->max_topics);
    crdt_v1_topic_t *t = calloc(n, sizeof(*t));
    if (!t)
        return fail(d, CRDT_V1_E_INTERNAL, "out of memory");
    d->m->topics = t;
    d->m->ntopics = n;
    for (size_t i = 0; i < n; i++) {
        bool prefix = i >= nk;
        const json_t *v = prefix ? json_array_get(ps, i - nk) : json_array_get(ks, i);
        t[i].prefix = prefix;
        const char *why;
        if (bytes_value(v, prefix ? 0 : 1, max_key(d), &t[i].bytes, &t[i].len, &why)) {
            if (max_key(d))
                return fail(d, CRDT_V1_E_BAD_REQUEST,
                            "%s[%zu]: %s (%s to %zu bytes, a string or {\"base64\":..})",
                            prefix ? "prefixes" : "keys", prefix ? i - nk : i, why,
                            prefix ? "0" : "1", max_key(d));
            return fail(d, CRDT_V1_E_BAD_REQUEST, "%s[%zu]: %s (a string or {\"base64\":..})",
                        prefix ? "prefixes" : "keys", prefix ? i - nk : i, why);
        }
    }
    return 0;
}

static int dec_hello(dec_t *d)
{
    crdt_v1_msg_t *m = d->m;
    const json_t *cl = json_object_get(d->j, "client");
    if (!json_is_string(cl) || !crdt_v1_client_id_ok(json_string_value(cl), json_string_length(cl)))
        return fail(d, CRDT_V1_E_BAD_REQUEST, "\"client\" must be 1..64 of [A-Za-z0-9._:-]");
    memcpy(m->client, json_string_value(cl), json_string_length(cl) + 1);
    if (u64_field(d->j, "cursor", INT64_MAX, &m->cursor) < 0)
        return fail(d, CRDT_V1_E_BAD_REQUEST, "\"cursor\" must be a non-negative integer");
    return opt_str(d, "token", &m->token);
}

static int dec_subscribe(dec_t *d, bool sub)
{
    crdt_v1_msg_t *m = d->m;
    if (need_u64(d, "id", &m->id))
        return -1;
    m->has_id = d->err->has_id = true;
    d->err->id = m->id;
    if (sub) {
        int r = u64_field(d->j, "since", INT64_MAX, &m->since);
        if (r < 0)
            return fail(d, CRDT_V1_E_BAD_REQUEST, "\"since\": expected a non-negative integer");
        m->has_since = r == 1;
    }
    return read_topics(d);
}

static int dec_apply(dec_t *d)
{
    crdt_v1_msg_t *m = d->m;
    if (u64_field(d->j, "id", CRDT_V1_MAX_ID - 1, &m->id) != 1 || m->id == 0)
        return fail(d, CRDT_V1_E_BAD_REQUEST, "\"id\": an integer 1..2^53-1 is required");
    m->has_id = d->err->has_id = true;
    d->err->id = m->id;
    if (read_key(d))
        return -1;
    json_t *op = json_object_get(d->j, "op"), *delta = json_object_get(d->j, "delta");
    if ((op != NULL) == (delta != NULL))
        return fail(d, CRDT_V1_E_BAD_REQUEST, "give exactly one of \"op\" and \"delta\"");
    if (op && !json_is_object(op))
        return fail(d, CRDT_V1_E_BAD_REQUEST,
                    "\"op\": expected a JSON object {\"type\":..,\"op\":..}");
    if (delta && !json_is_object(delta))
        return fail(d, CRDT_V1_E_BAD_REQUEST, "\"delta\": expected a libcrdt JSON frame");
    m->op = json_incref(op);
    m->frame = json_incref(delta);
    return 0;
}

static int dec_welcome(dec_t *d)
{
    crdt_v1_msg_t *m = d->m;
    if (need_u64(d, "node", &m->node) || need_u64(d, "seq", &m->seq))
        return -1;
    if (u64_field(d->j, "expires", INT64_MAX, &m->expires) < 0)
        return fail(d, CRDT_V1_E_BAD_REQUEST, "\"expires\": expected a non-negative integer");
    if (opt_str(d, "session", &m->session) || opt_str(d, "subject", &m->subject))
        return -1;
    const json_t *lim = json_object_get(d->j, "limits");
    if (!lim)
        return 0;
    if (!json_is_object(lim))
        return fail(d, CRDT_V1_E_BAD_REQUEST, "\"limits\": expected an object");
    m->has_limits = true;
    static const char *const names[5] = {"max_message", "max_subscriptions", "send_queue",
                                         "idle_timeout", "max_errors"};
    uint64_t *f[5] = {&m->limits.max_message, &m->limits.max_subscriptions, &m->limits.send_queue,
                      &m->limits.idle_timeout, &m->limits.max_errors};
    for (int i = 0; i < 5; i++)
        if (u64_field(lim, names[i], INT64_MAX, f[i]) < 0)
            return fail(d, CRDT_V1_E_BAD_REQUEST, "\"limits.%s\": expected a non-negative integer",
                        names[i]);
    return 0;
}

static int dec_change(dec_t *d)
{
    crdt_v1_msg_t *m = d->m;
    if (need_u64(d, "cursor", &m->cursor) || need_u64(d, "seq", &m->seq) || read_key(d))
        return -1;
    json_t *st = json_object_get(d->j, "state"), *dl = json_object_get(d->j, "delta");
    if ((st != NULL) == (dl != NULL))
        return fail(d, CRDT_V1_E_BAD_REQUEST, "give exactly one of \"state\" and \"delta\"");
    m->full = st != NULL;
    crdt_error_t ce;
    m->obj = crdt_obj_from_json(st ? st : dl, &ce);
    if (!m->obj)
        return fail(d, ce.code == CRDT_ENOMEM ? CRDT_V1_E_INTERNAL : CRDT_V1_E_BAD_REQUEST,
                    "\"%s\": %s", st ? "state" : "delta", ce.text);
    m->frame = json_incref(st ? st : dl);
    return 0;
}

static int dec_error(dec_t *d)
{
    crdt_v1_msg_t *m = d->m;
    int r = u64_field(d->j, "id", INT64_MAX, &m->id);
    if (r < 0)
        return fail(d, CRDT_V1_E_BAD_REQUEST, "\"id\": expected a non-negative integer");
    m->has_id = r == 1;
    const json_t *c = json_object_get(d->j, "code");
    if (!json_is_string(c) || !json_string_length(c) ||
        json_string_length(c) >= sizeof(m->code_name) ||
        memchr(json_string_value(c), '\0', json_string_length(c)))
        return fail(d, CRDT_V1_E_BAD_REQUEST, "\"code\": a string of 1..%zu bytes is required",
                    sizeof(m->code_name) - 1);
    m->code = crdt_v1_code_from_name(json_string_value(c));
    if (m->code == CRDT_V1_E_OTHER)
        memcpy(m->code_name, json_string_value(c), json_string_length(c) + 1);
    return opt_str(d, "message", &m->message);
}

int crdt_v1_decode(const char *text, size_t len, unsigned from, const crdt_v1_limits_t *lim,
                   crdt_v1_msg_t *m, crdt_v1_error_t *err)
{
    crdt_v1_error_t dummy;
    if (!err)
        err = &dummy;
    memset(m, 0, sizeof(*m));
    memset(err, 0, sizeof(*err));
    dec_t d = {NULL, lim, m, err};
    json_error_t je;
    json_t *j = json_loadb(text, len, JSON_REJECT_DUPLICATES, &je);
    if (!j)
        return fail(&d, CRDT_V1_E_BAD_JSON, "malformed JSON at line %d, column %d: %s", je.line,
                    je.column, je.text);
    d.j = j;
    int rc = -1;
    if (!json_is_object(j)) {
        fail(&d, CRDT_V1_E_BAD_JSON, "expected a JSON object");
        goto out;
    }
    const json_t *tv = json_object_get(j, "type");
    if (!json_is_string(tv)) {
        fail(&d, CRDT_V1_E_BAD_REQUEST, "\"type\": a string is required");
        goto out;
    }
    crdt_v1_type_t t = CRDT_V1_NONE;
    for (int i = CRDT_V1_HELLO; i < CRDT_V1_TYPE_COUNT; i++)
        if (!strcmp(json_string_value(tv), type_names[i]))
            t = (crdt_v1_type_t)i;
    if (t == CRDT_V1_NONE || is_client_type(t) != (from == CRDT_V1_FROM_CLIENT)) {
        fail(&d, CRDT_V1_E_UNKNOWN_TYPE, "unknown message type");
        goto out;
    }
    m->type = err->type = t;
    switch (t) {
    case CRDT_V1_HELLO: rc = dec_hello(&d); break;
    case CRDT_V1_SUBSCRIBE: rc = dec_subscribe(&d, true); break;
    case CRDT_V1_UNSUBSCRIBE: rc = dec_subscribe(&d, false); break;
    case CRDT_V1_APPLY: rc = dec_apply(&d); break;
    case CRDT_V1_WELCOME: rc = dec_welcome(&d); break;
    case CRDT_V1_CHANGE: rc = dec_change(&d); break;
    case CRDT_V1_SUBSCRIBED:
        rc = need_u64(&d, "id", &m->id) || need_u64(&d, "cursor", &m->cursor) ? -1 : 0;
        m->has_id = true;
        break;
    case CRDT_V1_UNSUBSCRIBED:
        rc = need_u64(&d, "id", &m->id);
        m->has_id = true;
        break;
    case CRDT_V1_ACK:
        rc = need_u64(&d, "id", &m->id) || need_u64(&d, "seq", &m->seq) ||
                     opt_bool(&d, "applied", true, &m->applied) ||
                     opt_bool(&d, "duplicate", false, &m->duplicate)
                 ? -1
                 : 0;
        m->has_id = true;
        break;
    case CRDT_V1_ERROR: rc = dec_error(&d); break;
    default: rc = 0; break; /* ping, pong: nothing more */
    }
out:
    json_decref(j);
    if (rc) {
        crdt_v1_type_t et = err->type;
        crdt_v1_msg_clear(m);
        err->type = et;
    }
    return rc;
}

void crdt_v1_msg_clear(crdt_v1_msg_t *m)
{
    free(m->token);
    for (size_t i = 0; i < m->ntopics; i++)
        crdt_free(m->topics[i].bytes);
    free(m->topics);
    crdt_free(m->key);
    json_decref(m->op);
    json_decref(m->frame);
    crdt_obj_free(m->obj);
    free(m->session);
    free(m->subject);
    free(m->message);
    memset(m, 0, sizeof(*m));
}

/* ---- encoding ------------------------------------------------------------------------------- */

typedef struct enc {
    crdt_buf_t *b;
    int rc;
} enc_t;

static void raw(enc_t *e, const char *s, size_t n)
{
    if (!e->rc && crdt_buf_append(e->b, s, n))
        e->rc = CRDT_ENOMEM;
}

static void lit(enc_t *e, const char *s)
{
    raw(e, s, strlen(s));
}

static void u64(enc_t *e, uint64_t v)
{
    char t[24];
    int n = snprintf(t, sizeof(t), "%" PRIu64, v);
    raw(e, t, (size_t)n);
}

/* `,"name":` (the comma unless first) */
static void name(enc_t *e, const char *n)
{
    raw(e, ",\"", 2);
    lit(e, n);
    raw(e, "\":", 2);
}

static void num_field(enc_t *e, const char *n, uint64_t v)
{
    name(e, n);
    u64(e, v);
}

/* A JSON value's compact text. */
static void json_value(enc_t *e, const json_t *v)
{
    if (e->rc)
        return;
    if (!v) {
        e->rc = CRDT_EINVAL;
        return;
    }
    size_t n = json_dumpb(v, NULL, 0, JSON_COMPACT | JSON_ENCODE_ANY);
    if (!n || crdt_buf_reserve(e->b, n)) {
        e->rc = n ? CRDT_ENOMEM : CRDT_EINVAL;
        return;
    }
    json_dumpb(v, (char *)e->b->data + e->b->len, n, JSON_COMPACT | JSON_ENCODE_ANY);
    e->b->len += n;
}

/* A JSON string of s (UTF-8; CRDT_EINVAL otherwise). */
static void str(enc_t *e, const char *s)
{
    if (e->rc)
        return;
    json_t *j = s ? json_string(s) : NULL;
    if (!j)
        e->rc = CRDT_EINVAL;
    json_value(e, j);
    json_decref(j);
}

/* A byte string in its one JSON form: a string when UTF-8 text (escaped as jansson writes it),
 * else {"base64":"<standard base64>"} (docs/encoding.md, "Bytes in JSON and URLs"). */
static void bytes(enc_t *e, const void *data, size_t n)
{
    if (e->rc)
        return;
    if (crdt_buf_reserve(e->b, crdt_json_bytes_len(data, n))) {
        e->rc = CRDT_ENOMEM;
        return;
    }
    e->b->len += crdt_json_bytes_write((char *)e->b->data + e->b->len, data, n);
}

static void topics(enc_t *e, const crdt_v1_msg_t *m, bool prefix)
{
    name(e, prefix ? "prefixes" : "keys");
    raw(e, "[", 1);
    bool first = true;
    for (size_t i = 0; i < m->ntopics; i++) {
        if (m->topics[i].prefix != prefix)
            continue;
        if (!first)
            raw(e, ",", 1);
        first = false;
        bytes(e, m->topics[i].bytes, m->topics[i].len);
    }
    raw(e, "]", 1);
}

static void frame_of(enc_t *e, const crdt_obj_t *obj, const json_t *frame)
{
    if (!obj) {
        json_value(e, frame);
        return;
    }
    json_t *j = crdt_obj_to_json(obj);
    if (!j && !e->rc)
        e->rc = CRDT_ENOMEM;
    json_value(e, j);
    json_decref(j);
}

static void change_body(enc_t *e, const void *key, size_t klen, uint64_t seq, bool full,
                        const crdt_obj_t *obj, const json_t *frame)
{
    if (!klen)
        e->rc = e->rc ? e->rc : CRDT_EINVAL;
    lit(e, "\"key\":");
    bytes(e, key, klen);
    num_field(e, "seq", seq);
    name(e, full ? "state" : "delta");
    frame_of(e, obj, frame);
    raw(e, "}", 1);
}

size_t crdt_v1_change_head(char head[CRDT_V1_CHANGE_HEAD_MAX], uint64_t cursor)
{
    int n = snprintf(head, CRDT_V1_CHANGE_HEAD_MAX, "{\"type\":\"change\",\"cursor\":%" PRIu64 ",",
                     cursor);
    return (size_t)n;
}

int crdt_v1_encode_change_body(const void *key, size_t klen, uint64_t seq, bool full,
                               const crdt_obj_t *obj, const json_t *frame, crdt_buf_t *out)
{
    size_t at = out->len;
    enc_t e = {out, 0};
    change_body(&e, key, klen, seq, full, obj, frame);
    if (e.rc)
        out->len = at;
    return e.rc;
}

int crdt_v1_encode(const crdt_v1_msg_t *m, crdt_buf_t *out)
{
    size_t at = out->len;
    enc_t e = {out, 0};
    const char *tn = crdt_v1_type_name(m->type);
    if (!tn)
        return CRDT_EINVAL;
    if (m->type == CRDT_V1_CHANGE) {
        char head[CRDT_V1_CHANGE_HEAD_MAX];
        raw(&e, head, crdt_v1_change_head(head, m->cursor));
        change_body(&e, m->key, m->klen, m->seq, m->full, m->obj, m->frame);
        goto out;
    }
    lit(&e, "{\"type\":\"");
    lit(&e, tn);
    raw(&e, "\"", 1);
    switch (m->type) {
    case CRDT_V1_HELLO:
        if (!crdt_v1_client_id_ok(m->client, strlen(m->client)))
            e.rc = CRDT_EINVAL;
        name(&e, "client");
        str(&e, m->client);
        num_field(&e, "cursor", m->cursor);
        if (m->token) {
            name(&e, "token");
            str(&e, m->token);
        }
        break;
    case CRDT_V1_SUBSCRIBE:
    case CRDT_V1_UNSUBSCRIBE:
        num_field(&e, "id", m->id);
        topics(&e, m, false);
        topics(&e, m, true);
        if (m->type == CRDT_V1_SUBSCRIBE && m->has_since)
            num_field(&e, "since", m->since);
        break;
    case CRDT_V1_APPLY:
        num_field(&e, "id", m->id);
        name(&e, "key");
        if (!m->klen || (m->op != NULL) == (m->frame != NULL))
            e.rc = CRDT_EINVAL;
        bytes(&e, m->key, m->klen);
        name(&e, m->op ? "op" : "delta");
        json_value(&e, m->op ? m->op : m->frame);
        break;
    case CRDT_V1_WELCOME:
        num_field(&e, "node", m->node);
        num_field(&e, "seq", m->seq);
        if (m->session) {
            name(&e, "session");
            str(&e, m->session);
        }
        if (m->subject) {
            name(&e, "subject");
            str(&e, m->subject);
        }
        num_field(&e, "expires", m->expires);
        if (m->has_limits) {
            lit(&e, ",\"limits\":{\"max_message\":");
            u64(&e, m->limits.max_message);
            num_field(&e, "max_subscriptions", m->limits.max_subscriptions);
            num_field(&e, "send_queue", m->limits.send_queue);
            num_field(&e, "idle_timeout", m->limits.idle_timeout);
            num_field(&e, "max_errors", m->limits.max_errors);
            raw(&e, "}", 1);
        }
        break;
    case CRDT_V1_SUBSCRIBED:
        num_field(&e, "id", m->id);
        num_field(&e, "cursor", m->cursor);
        break;
    case CRDT_V1_UNSUBSCRIBED: num_field(&e, "id", m->id); break;
    case CRDT_V1_ACK:
        num_field(&e, "id", m->id);
        num_field(&e, "seq", m->seq);
        lit(&e, m->applied ? ",\"applied\":true" : ",\"applied\":false");
        if (m->duplicate)
            lit(&e, ",\"duplicate\":true");
        break;
    case CRDT_V1_ERROR: {
        const char *cn = m->code == CRDT_V1_E_OTHER ? m->code_name : crdt_v1_code_name(m->code);
        if (!cn || !cn[0])
            e.rc = CRDT_EINVAL;
        name(&e, "code");
        str(&e, cn ? cn : "");
        if (m->message) {
            json_t *t = json_string(m->message);
            name(&e, "message");
            if (t)
                json_value(&e, t);
            else /* a message quoting bytes that are not UTF-8 */
                lit(&e, "\"(message not UTF-8)\"");
            json_decref(t);
        }
        if (m->has_id)
            num_field(&e, "id", m->id);
        break;
    }
    default: break; /* ping, pong */
    }
    raw(&e, "}", 1);
out:
    if (e.rc)
        out->len = at;
    return e.rc;
}

/* ---- comparison ----------------------------------------------------------------------------- */

static bool str_eq(const char *a, const char *b)
{
    return a == b || (a && b && !strcmp(a, b));
}

static bool bytes_eq(const void *a, size_t al, const void *b, size_t bl)
{
    return al == bl && (!al || !memcmp(a, b, al));
}

static bool obj_eq(const crdt_obj_t *a, const crdt_obj_t *b)
{
    return a == b || (a && b && crdt_obj_equal(a, b));
}

static bool json_eq(const json_t *a, const json_t *b)
{
    return a == b || (a && b && json_equal((json_t *)a, (json_t *)b));
}

bool crdt_v1_msg_equal(const crdt_v1_msg_t *a, const crdt_v1_msg_t *b)
{
    if (a->type != b->type || a->has_id != b->has_id || (a->has_id && a->id != b->id))
        return false;
    switch (a->type) {
    case CRDT_V1_HELLO:
        return str_eq(a->token, b->token) && !strcmp(a->client, b->client) &&
               a->cursor == b->cursor;
    case CRDT_V1_SUBSCRIBE:
        if (a->has_since != b->has_since || (a->has_since && a->since != b->since))
            return false;
        /* fall through */
    case CRDT_V1_UNSUBSCRIBE:
        if (a->ntopics != b->ntopics)
            return false;
        for (size_t i = 0; i < a->ntopics; i++)
            if (a->topics[i].prefix != b->topics[i].prefix ||
                !bytes_eq(a->topics[i].bytes, a->topics[i].len, b->topics[i].bytes,
                          b->topics[i].len))
                return false;
        return true;
    case CRDT_V1_APPLY:
        return bytes_eq(a->key, a->klen, b->key, b->klen) && json_eq(a->op, b->op) &&
               json_eq(a->frame, b->frame);
    case CRDT_V1_WELCOME:
        return a->node == b->node && a->seq == b->seq && a->expires == b->expires &&
               str_eq(a->session, b->session) && str_eq(a->subject, b->subject) &&
               a->has_limits == b->has_limits &&
               (!a->has_limits || !memcmp(&a->limits, &b->limits, sizeof(a->limits)));
    case CRDT_V1_CHANGE:
        return a->cursor == b->cursor && a->seq == b->seq && a->full == b->full &&
               bytes_eq(a->key, a->klen, b->key, b->klen) && obj_eq(a->obj, b->obj);
    case CRDT_V1_SUBSCRIBED: return a->cursor == b->cursor;
    case CRDT_V1_ACK:
        return a->seq == b->seq && a->applied == b->applied && a->duplicate == b->duplicate;
    case CRDT_V1_ERROR:
        return a->code == b->code &&
               (a->code != CRDT_V1_E_OTHER || !strcmp(a->code_name, b->code_name)) &&
               str_eq(a->message, b->message);
    default: return true;
    }
}
