/* crdt_v1_bin.c - binary crdt.v1: data messages as a type byte, varints and libcrdt encodings */
#include "crdt_v1_bin.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "crdt_json.h"

#define INT_MAX_WIRE ((uint64_t)INT64_MAX) /* cursors, seqs, request ids: as JSON's bound */

typedef struct bdec {
    const uint8_t *p;
    size_t n, pos;
    const crdt_v1_limits_t *lim;
    crdt_v1_msg_t *m;
    crdt_v1_error_t *err;
} bdec_t;

static int bfail(bdec_t *d, crdt_v1_code_t code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static int bfail(bdec_t *d, crdt_v1_code_t code, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    crdt_v1_fail(d->err, code, fmt, ap);
    va_end(ap);
    return -1;
}

/* A varint up to max at the read position; `what` names it in the error. */
static int get_u64(bdec_t *d, const char *what, uint64_t max, uint64_t *out)
{
    size_t at = d->pos;
    int why = crdt_varint_scan(d->p, d->n, &d->pos, out);
    if (why)
        return bfail(d, CRDT_V1_E_BAD_REQUEST, "%s at byte %zu: %s", what, at,
                     why == CRDT_VARINT_TRUNCATED  ? "truncated"
                     : why == CRDT_VARINT_TOO_LONG ? "a varint over 64 bits"
                                                   : "a varint that is not canonical");
    if (*out > max)
        return bfail(d, CRDT_V1_E_BAD_REQUEST, "%s at byte %zu: %llu is out of range", what, at,
                     (unsigned long long)*out);
    return 0;
}

static int get_byte(bdec_t *d, const char *what, uint8_t *out)
{
    if (d->pos >= d->n)
        return bfail(d, CRDT_V1_E_BAD_REQUEST, "%s at byte %zu: truncated", what, d->pos);
    *out = d->p[d->pos++];
    return 0;
}

static size_t bmax_key(const bdec_t *d)
{
    return d->lim && d->lim->max_key ? d->lim->max_key : SIZE_MAX;
}

/* A length-prefixed byte string of min..max_key bytes, copied into *out (libcrdt's allocator,
 * as crdt_v1_msg_clear frees it; NULL for 0 bytes). */
static int get_bytes(bdec_t *d, const char *what, size_t min, uint8_t **out, size_t *len)
{
    uint64_t n;
    size_t at = d->pos;
    if (get_u64(d, what, INT_MAX_WIRE, &n))
        return -1;
    if (n < min || n > bmax_key(d))
        return bfail(d, CRDT_V1_E_BAD_REQUEST, "%s at byte %zu: %llu bytes (expected %zu to %zu)",
                     what, at, (unsigned long long)n, min,
                     bmax_key(d) == SIZE_MAX ? (size_t)INT64_MAX : bmax_key(d));
    if (n > d->n - d->pos)
        return bfail(d, CRDT_V1_E_BAD_REQUEST, "%s at byte %zu: truncated", what, at);
    *out = NULL;
    *len = 0;
    if (n) {
        crdt_buf_t b = {0};
        if (crdt_buf_append(&b, d->p + d->pos, (size_t)n))
            return bfail(d, CRDT_V1_E_INTERNAL, "out of memory");
        *out = b.data;
        *len = (size_t)n;
    }
    d->pos += (size_t)n;
    return 0;
}

static int at_end(bdec_t *d)
{
    if (d->pos != d->n)
        return bfail(d, CRDT_V1_E_BAD_REQUEST, "%zu bytes after the end of the message",
                     d->n - d->pos);
    return 0;
}

static int need_id(bdec_t *d, uint64_t max)
{
    if (get_u64(d, "id", max, &d->m->id))
        return -1;
    d->m->has_id = d->err->has_id = true;
    d->err->id = d->m->id;
    return 0;
}

static int dec_topics(bdec_t *d)
{
    crdt_v1_msg_t *m = d->m;
    uint64_t n;
    if (get_u64(d, "topic count", INT_MAX_WIRE, &n))
        return -1;
    if (!n)
        return bfail(d, CRDT_V1_E_BAD_REQUEST, "no keys and no prefixes");
    if (n > (d->n - d->pos) / 2) /* each topic takes 2 bytes at least */
        return bfail(d, CRDT_V1_E_BAD_REQUEST, "topic count %llu: truncated",
                     (unsigned long long)n);
    if (d->lim && d->lim->max_topics && n > d->lim->max_topics)
        return bfail(d, CRDT_V1_E_LIMIT, "more than %zu keys and prefixes (--ws-max-subscriptions)",
                     d->lim->max_topics);
    crdt_v1_topic_t *t = calloc((size_t)n, sizeof(*t));
    if (!t)
        return bfail(d, CRDT_V1_E_INTERNAL, "out of memory");
    m->topics = t;
    /* keys first, then prefixes, as crdt_v1_decode gives them: read in order, then sorted
     * stably by kind (a binary subscribe may interleave them) */
    for (size_t i = 0; i < n; i++) {
        uint8_t kind = 0;
        if (get_byte(d, "topic kind", &kind))
            return -1;
        if (kind > 1)
            return bfail(d, CRDT_V1_E_BAD_REQUEST, "topic %zu: kind %u (0 key, 1 prefix)", i, kind);
        t[i].prefix = kind == 1;
        if (get_bytes(d, t[i].prefix ? "prefix" : "key", t[i].prefix ? 0 : 1, &t[i].bytes,
                      &t[i].len))
            return -1;
        m->ntopics = i + 1;
    }
    crdt_v1_topic_t *sorted = malloc((size_t)n * sizeof(*sorted));
    if (!sorted)
        return bfail(d, CRDT_V1_E_INTERNAL, "out of memory");
    size_t k = 0;
    for (int pass = 0; pass < 2; pass++)
        for (size_t i = 0; i < n; i++)
            if (t[i].prefix == (pass == 1))
                sorted[k++] = t[i];
    memcpy(t, sorted, (size_t)n * sizeof(*t));
    free(sorted);
    return 0;
}

static int dec_client(bdec_t *d, uint8_t type)
{
    crdt_v1_msg_t *m = d->m;
    switch (type) {
    case CRDT_V1_BIN_SUBSCRIBE: {
        m->type = d->err->type = CRDT_V1_SUBSCRIBE;
        uint8_t flags = 0;
        if (need_id(d, INT_MAX_WIRE) || get_byte(d, "flags", &flags))
            return -1;
        if (flags & ~1u)
            return bfail(d, CRDT_V1_E_BAD_REQUEST, "flags 0x%02x: unknown bits", flags);
        if (flags & 1u) {
            if (get_u64(d, "since", INT_MAX_WIRE, &m->since))
                return -1;
            m->has_since = true;
        }
        return dec_topics(d) || at_end(d) ? -1 : 0;
    }
    case CRDT_V1_BIN_UNSUBSCRIBE:
        m->type = d->err->type = CRDT_V1_UNSUBSCRIBE;
        return need_id(d, INT_MAX_WIRE) || dec_topics(d) || at_end(d) ? -1 : 0;
    case CRDT_V1_BIN_APPLY: {
        m->type = d->err->type = CRDT_V1_APPLY;
        if (need_id(d, CRDT_V1_MAX_ID - 1))
            return -1;
        if (m->id == 0)
            return bfail(d, CRDT_V1_E_BAD_REQUEST, "id: an integer 1..2^53-1 is required");
        if (get_bytes(d, "key", 1, &m->key, &m->klen))
            return -1;
        if (d->pos == d->n)
            return bfail(d, CRDT_V1_E_BAD_REQUEST, "apply: no delta after the key");
        /* the op path decodes and checks it, as every merge (gateway/op.c) */
        char *b64 = crdt_base64_encode(d->p + d->pos, d->n - d->pos, NULL);
        m->op = b64 ? json_pack("{s:s, s:s}", "op", "merge", "binary", b64) : NULL;
        crdt_free(b64);
        if (!m->op)
            return bfail(d, CRDT_V1_E_INTERNAL, "out of memory");
        d->pos = d->n;
        return 0;
    }
    default: return bfail(d, CRDT_V1_E_UNKNOWN_TYPE, "unknown binary message type 0x%02x", type);
    }
}

static int dec_server(bdec_t *d, uint8_t type)
{
    crdt_v1_msg_t *m = d->m;
    uint8_t flags = 0;
    switch (type) {
    case CRDT_V1_BIN_CHANGE: {
        m->type = d->err->type = CRDT_V1_CHANGE;
        if (get_u64(d, "cursor", INT_MAX_WIRE, &m->cursor) || get_byte(d, "flags", &flags))
            return -1;
        if (flags & ~1u)
            return bfail(d, CRDT_V1_E_BAD_REQUEST, "flags 0x%02x: unknown bits", flags);
        m->full = flags & 1u;
        if (get_u64(d, "seq", INT_MAX_WIRE, &m->seq) || get_bytes(d, "key", 1, &m->key, &m->klen))
            return -1;
        crdt_error_t e = {0};
        size_t at = d->pos;
        m->obj = crdt_obj_decode(d->p + at, d->n - at, &e);
        if (!m->obj)
            return bfail(d, e.code == CRDT_ENOMEM ? CRDT_V1_E_INTERNAL : CRDT_V1_E_BAD_REQUEST,
                         "%s at byte %zu: %s", m->full ? "state" : "delta", at + e.offset,
                         e.text[0] ? e.text : crdt_strerror(e.code));
        d->pos = d->n;
        return 0;
    }
    case CRDT_V1_BIN_ACK:
        m->type = d->err->type = CRDT_V1_ACK;
        if (get_byte(d, "flags", &flags))
            return -1;
        if (flags & ~3u)
            return bfail(d, CRDT_V1_E_BAD_REQUEST, "flags 0x%02x: unknown bits", flags);
        m->applied = flags & 1u;
        m->duplicate = flags & 2u;
        return need_id(d, INT_MAX_WIRE) || get_u64(d, "seq", INT_MAX_WIRE, &m->seq) || at_end(d)
                   ? -1
                   : 0;
    case CRDT_V1_BIN_SUBSCRIBED:
        m->type = d->err->type = CRDT_V1_SUBSCRIBED;
        return need_id(d, INT_MAX_WIRE) || get_u64(d, "cursor", INT_MAX_WIRE, &m->cursor) ||
                       at_end(d)
                   ? -1
                   : 0;
    default: return bfail(d, CRDT_V1_E_UNKNOWN_TYPE, "unknown binary message type 0x%02x", type);
    }
}

int crdt_v1_bin_decode(const uint8_t *p, size_t n, unsigned from, const crdt_v1_limits_t *lim,
                       crdt_v1_msg_t *m, crdt_v1_error_t *err)
{
    memset(m, 0, sizeof(*m));
    memset(err, 0, sizeof(*err));
    bdec_t d = {.p = p, .n = n, .lim = lim, .m = m, .err = err};
    int rc;
    if (!n)
        rc = bfail(&d, CRDT_V1_E_BAD_REQUEST, "an empty binary message");
    else
        rc = from == CRDT_V1_FROM_CLIENT ? dec_client(&d, p[d.pos++]) : dec_server(&d, p[d.pos++]);
    if (rc) {
        crdt_v1_type_t et = err->type;
        crdt_v1_msg_clear(m);
        err->type = et;
    }
    return rc;
}

/* ---- encoding ------------------------------------------------------------------------------- */

bool crdt_v1_bin_has(const crdt_v1_msg_t *m)
{
    switch (m->type) {
    case CRDT_V1_SUBSCRIBE:
    case CRDT_V1_UNSUBSCRIBE:
    case CRDT_V1_CHANGE:
    case CRDT_V1_ACK:
    case CRDT_V1_SUBSCRIBED: return true;
    case CRDT_V1_APPLY: return m->obj || (!m->frame && m->op);
    default: return false;
    }
}

static int put_bytes(crdt_buf_t *b, const void *p, size_t n)
{
    return crdt_buf_put_varint(b, n) || crdt_buf_append(b, p, n) ? CRDT_ENOMEM : 0;
}

static int put_byte(crdt_buf_t *b, uint8_t v)
{
    return crdt_buf_append(b, &v, 1);
}

int crdt_v1_bin_change_body(const void *key, size_t klen, uint64_t seq, bool full,
                            const crdt_obj_t *obj, crdt_buf_t *out)
{
    if (!obj || !klen)
        return CRDT_EINVAL;
    size_t was = out->len;
    int rc = put_byte(out, full ? 1 : 0);
    if (!rc)
        rc = crdt_buf_put_varint(out, seq);
    if (!rc)
        rc = put_bytes(out, key, klen);
    if (!rc)
        rc = crdt_obj_encode(obj, out);
    if (rc)
        out->len = was;
    return rc;
}

size_t crdt_v1_bin_change_head(uint8_t head[CRDT_V1_BIN_CHANGE_HEAD_MAX], uint64_t cursor)
{
    head[0] = CRDT_V1_BIN_CHANGE;
    return 1 + crdt_varint_put(head + 1, cursor);
}

static int enc_topics(const crdt_v1_msg_t *m, crdt_buf_t *b)
{
    if (!m->ntopics)
        return CRDT_EINVAL;
    int rc = crdt_buf_put_varint(b, m->ntopics);
    for (size_t i = 0; !rc && i < m->ntopics; i++) {
        const crdt_v1_topic_t *t = &m->topics[i];
        if (!t->prefix && !t->len)
            return CRDT_EINVAL;
        rc = put_byte(b, t->prefix ? 1 : 0);
        if (!rc)
            rc = put_bytes(b, t->bytes, t->len);
    }
    return rc;
}

/* The delta bytes of a binary apply: m->obj encoded, or the base64 "binary" of a merge op. */
static int enc_apply_delta(const crdt_v1_msg_t *m, crdt_buf_t *b)
{
    if (m->obj)
        return crdt_obj_encode(m->obj, b);
    const json_t *op = json_object_get(m->op, "op"), *bin = json_object_get(m->op, "binary");
    if (!json_is_string(op) || strcmp(json_string_value(op), "merge") || !json_is_string(bin) ||
        json_object_size(m->op) != 2)
        return CRDT_EINVAL;
    uint8_t *raw = NULL;
    size_t n = 0;
    if (crdt_base64_decode(json_string_value(bin), json_string_length(bin), &raw, &n) < 0)
        return CRDT_EINVAL;
    int rc = n ? crdt_buf_append(b, raw, n) : CRDT_EINVAL;
    crdt_free(raw);
    return rc;
}

int crdt_v1_bin_encode(const crdt_v1_msg_t *m, crdt_buf_t *out)
{
    if (!crdt_v1_bin_has(m))
        return CRDT_EINVAL;
    size_t was = out->len;
    int rc = 0;
    switch (m->type) {
    case CRDT_V1_SUBSCRIBE:
        rc = put_byte(out, CRDT_V1_BIN_SUBSCRIBE);
        if (!rc)
            rc = crdt_buf_put_varint(out, m->id);
        if (!rc)
            rc = put_byte(out, m->has_since ? 1 : 0);
        if (!rc && m->has_since)
            rc = crdt_buf_put_varint(out, m->since);
        if (!rc)
            rc = enc_topics(m, out);
        break;
    case CRDT_V1_UNSUBSCRIBE:
        rc = put_byte(out, CRDT_V1_BIN_UNSUBSCRIBE);
        if (!rc)
            rc = crdt_buf_put_varint(out, m->id);
        if (!rc)
            rc = enc_topics(m, out);
        break;
    case CRDT_V1_APPLY:
        if (!m->klen || !m->id || m->id >= CRDT_V1_MAX_ID) {
            rc = CRDT_EINVAL;
            break;
        }
        rc = put_byte(out, CRDT_V1_BIN_APPLY);
        if (!rc)
            rc = crdt_buf_put_varint(out, m->id);
        if (!rc)
            rc = put_bytes(out, m->key, m->klen);
        if (!rc)
            rc = enc_apply_delta(m, out);
        break;
    case CRDT_V1_CHANGE: {
        uint8_t head[CRDT_V1_BIN_CHANGE_HEAD_MAX];
        rc = crdt_buf_append(out, head, crdt_v1_bin_change_head(head, m->cursor));
        if (!rc)
            rc = crdt_v1_bin_change_body(m->key, m->klen, m->seq, m->full, m->obj, out);
        break;
    }
    case CRDT_V1_ACK:
        rc = put_byte(out, CRDT_V1_BIN_ACK);
        if (!rc)
            rc = put_byte(out, (uint8_t)((m->applied ? 1 : 0) | (m->duplicate ? 2 : 0)));
        if (!rc)
            rc = crdt_buf_put_varint(out, m->id);
        if (!rc)
            rc = crdt_buf_put_varint(out, m->seq);
        break;
    case CRDT_V1_SUBSCRIBED:
        rc = put_byte(out, CRDT_V1_BIN_SUBSCRIBED);
        if (!rc)
            rc = crdt_buf_put_varint(out, m->id);
        if (!rc)
            rc = crdt_buf_put_varint(out, m->cursor);
        break;
    default: rc = CRDT_EINVAL; break;
    }
    if (rc)
        out->len = was;
    return rc;
}
