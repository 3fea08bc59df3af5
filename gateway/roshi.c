/* roshi.c - roshi-server's HTTP API (insert, delete, select) over crdtd's timelines */
#include <float.h>
#include <inttypes.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "auth.h"
#include "crdt_json.h"
#include "loop.h"
#include "op.h"
#include "roshi.h"
#include "roshi_scan.h"
#include "status.h"
#include "util.h"

/*
 * The shapes of soundcloud/roshi's roshi-server (roshi-server/main.go, common/), at its root:
 *
 *   POST   /  [{"key":b64,"score":f,"member":b64},...]  -> {"duration":"1.2ms","inserted":n}
 *   DELETE /  same body                                  -> {"deleted":n,"duration":".."}
 *   GET    /?offset&limit&coalesce&start&stop  ["b64key",...]
 *          -> {"duration":"..","records":{"<key>":[{"key","score","member"},...]}}
 *             or, with coalesce=true, {"duration":"..","records":[{"key","score","member"},...]}
 *   errors -> {"code":400,"description":"Bad Request","error":".."}
 *
 * roshi writes its responses as Go maps, so their fields come sorted; the records of a
 * non-coalesced select are keyed by the key's bytes as a Go string (sorted bytewise, invalid UTF-8
 * as U+FFFD, <, >, & escaped). The bodies are read as Go's encoding/json reads them: only the
 * first JSON value counts, null is an empty list, a tuple's missing or null field is its zero
 * value (an empty member, score 0), field names match case-insensitively, the last duplicate wins.
 * start/stop are roshi cursors (common/cursor.go): "<uint64 of the float64 bits>A<URL-safe base64
 * of the member>", entries strictly after start down to strictly before stop. The differences that
 * remain are listed in docs/http-api.md.
 */

#define ROSHI_DEFAULT_LIMIT 10
#define ROSHI_MAX_LIMIT 10000

/* ---- Go's encoding/json output -------------------------------------------------------------- */

/* A JSON string of the bytes p[0..n) as Go's json.Encoder writes a string: invalid UTF-8 becomes
 * \ufffd, control characters \n \r \t or \u00XX, and <, >, &, U+2028, U+2029 are \u-escaped. */
static void jw_go_string(gw_jw_t *w, const uint8_t *p, size_t n)
{
    static const char hex[] = "0123456789abcdef";
    gw_jw_raw(w, "\"", 1);
    size_t run = 0; /* bytes at p[i - run .. i) to copy as they are */
    for (size_t i = 0; i < n;) {
        uint8_t c = p[i];
        char esc[8];
        size_t elen = 0, len = 1;
        if (c < 0x80) {
            if (c >= 0x20 && c != '"' && c != '\\' && c != '<' && c != '>' && c != '&') {
                i++, run++;
                continue;
            }
            if (c == '"' || c == '\\')
                esc[0] = '\\', esc[1] = (char)c, elen = 2;
            else if (c == '\n' || c == '\r' || c == '\t')
                esc[0] = '\\', esc[1] = c == '\n' ? 'n' : c == '\r' ? 'r' : 't', elen = 2;
            else
                memcpy(esc, "\\u00", 4), esc[4] = hex[c >> 4], esc[5] = hex[c & 15], elen = 6;
        } else {
            len = (c >> 5) == 6 ? 2 : (c >> 4) == 14 ? 3 : (c >> 3) == 30 ? 4 : 0;
            bool ok = len && i + len <= n;
            uint32_t cp = len == 2 ? c & 0x1f : len == 3 ? c & 0x0f : c & 0x07;
            for (size_t k = 1; ok && k < len; k++) {
                ok = (p[i + k] & 0xc0) == 0x80;
                cp = cp << 6 | (p[i + k] & 0x3f);
            }
            if (ok && ((len == 2 && cp < 0x80) || (len == 3 && cp < 0x800) ||
                       (len == 4 && (cp < 0x10000 || cp > 0x10ffff)) ||
                       (cp >= 0xd800 && cp <= 0xdfff)))
                ok = false;
            if (!ok)
                memcpy(esc, "\\ufffd", 6), elen = 6, len = 1;
            else if (cp == 0x2028 || cp == 0x2029)
                memcpy(esc, cp == 0x2028 ? "\\u2028" : "\\u2029", 6), elen = 6;
            else {
                i += len, run += len;
                continue;
            }
        }
        gw_jw_raw(w, (const char *)p + i - run, run);
        run = 0;
        gw_jw_raw(w, esc, elen);
        i += len;
    }
    gw_jw_raw(w, (const char *)p + n - run, run);
    gw_jw_raw(w, "\"", 1);
}

/* roshi's respondError: {"code":status,"description":text,"error":msg}. */
static void roshi_error(gw_response_t *rs, int status, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void roshi_error(gw_response_t *rs, int status, const char *fmt, ...)
{
    char msg[512];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    size_t len = n < 0 ? 0 : (size_t)n < sizeof(msg) ? (size_t)n : sizeof(msg) - 1;
    gw_jw_t w;
    gw_jw_init(&w, 128 + len * 2);
    gw_jw_lit(&w, "{\"code\":");
    gw_jw_u64(&w, (uint64_t)status);
    gw_jw_lit(&w, ",\"description\":\"");
    gw_jw_lit(&w, gw_status_text(status)); /* ASCII words */
    gw_jw_lit(&w, "\",\"error\":");
    jw_go_string(&w, (const uint8_t *)msg, len);
    gw_jw_lit(&w, "}");
    rs->wait_seq = 0;
    gw_respond_jw(rs, status, &w);
}

/* "duration":"<Go duration since t0_us>" (digits, '.', unit letters, the micro sign). */
static void jw_duration(gw_jw_t *w, uint64_t t0_us)
{
    char d[GW_GO_DURATION_MAX];
    size_t n = gw_go_duration((gw_now_us() - t0_us) * 1000, d);
    gw_jw_raw(w, "\"duration\":\"", 12);
    gw_jw_raw(w, d, n);
    gw_jw_raw(w, "\"", 1);
}

/* gw_auth_http_key for the key of element i ("[i]<suffix>" in the denial): the name is only
 * formatted when the key is refused (a request checks one key per tuple). */
static bool key_allowed(gw_exchange_t *x, gw_access_t a, const void *key, size_t klen, size_t i,
                        const char *suffix)
{
    if ((x->has_tok || !gw_auth_enabled(x->srv)) &&
        gw_auth_key(gw_auth_http_token(x), a, key, klen, false) == GW_DENY_NONE)
        return true;
    char what[40];
    snprintf(what, sizeof(what), "[%zu]%s", i, suffix);
    return gw_auth_http_key(x, a, key, klen, what);
}

/* ---- writes --------------------------------------------------------------------------------- */

typedef struct write_ctx {
    gw_exchange_t *x;
    bool add;
    uint64_t t0;
    size_t n;          /* tuples sent: roshi's count */
    gw_write_t *w;      /* the writes, then */
    crdt_bytes_t *keys; /* the keys, the tuples and the arena of decoded bytes */
    size_t bytes;       /* allocated for all of it (wctx_alloc) */
} write_ctx_t;

/* The last write context freed, kept for the next request of this thread's loop: a context of
 * ten tuples is some 5 KiB, past malloc's per-thread cache, and each one cost a trip through its
 * bins. One of at most WCTX_KEEP bytes is kept; whatever frees a context with free() may. */
#define WCTX_KEEP (64u << 10)
static _Thread_local void *wctx_kept;
static _Thread_local size_t wctx_kept_size;

/* A context of at least `size` bytes; *got says how many it has. */
static write_ctx_t *wctx_alloc(size_t size, size_t *got)
{
    if (wctx_kept && wctx_kept_size >= size) {
        write_ctx_t *c = wctx_kept;
        *got = wctx_kept_size;
        wctx_kept = NULL;
        return c;
    }
    *got = size < 8192 ? 8192 : size; /* room for the usual request, to be kept afterwards */
    return malloc(*got);
}

static void wctx_free(write_ctx_t *c)
{
    if (c->bytes <= WCTX_KEEP && (!wctx_kept || wctx_kept_size < c->bytes)) {
        free(wctx_kept);
        wctx_kept = c;
        wctx_kept_size = c->bytes;
        return;
    }
    free(c);
}

static void roshi_written(gw_server_t *s, int rc, size_t changed, uint64_t last, void *ud)
{
    write_ctx_t *c = ud;
    gw_exchange_t *x = c->x;
    gw_response_t *rs = &x->rs;
    if (rc < 0) {
        roshi_error(rs, rc == CRDT_EIO || rc == CRDT_EUNAVAIL ? 503 : 500, "%s failed after %zu applied: %s",
                    c->add ? "insert" : "delete", changed, crdt_strerror(rc));
    } else {
        gw_jw_t w;
        gw_jw_init(&w, 64);
        gw_jw_lit(&w, c->add ? "{" : "{\"deleted\":");
        if (!c->add) {
            gw_jw_u64(&w, c->n);
            gw_jw_lit(&w, ",");
        }
        jw_duration(&w, c->t0);
        if (c->add) {
            gw_jw_lit(&w, ",\"inserted\":");
            gw_jw_u64(&w, c->n);
        }
        gw_jw_lit(&w, "}");
        gw_respond_jw(rs, 200, &w);
    }
    if (last) {
        rs->wait_seq = last;
        gw_loop_schedule_flush(s);
    }
    wctx_free(c);
    gw_http_reply(x);
}

/* Every tuple's key must hold a timeline (or nothing) before anything is written: false (and
 * the error answered) when one holds another type or the read failed. */
static bool roshi_types_ok(gw_exchange_t *x, int rc, const crdt_type_t *types,
                           const crdt_obj_t *const *objs, size_t n)
{
    if (rc < 0) {
        roshi_error(&x->rs, rc == CRDT_EUNAVAIL || rc == CRDT_EIO ? 503 : 500,
                    "reading the keys failed: %s", crdt_strerror(rc));
        return false;
    }
    for (size_t i = 0; i < n; i++) {
        crdt_type_t t = types ? types[i] : objs[i] ? crdt_obj_type(objs[i]) : 0;
        if (t && t != CRDT_TIMELINE) {
            roshi_error(&x->rs, 409, "[%zu].key holds type %s, not timeline", i,
                        crdt_type_name(t));
            return false;
        }
    }
    return true;
}

/* The embedded store hands the objects over: checked, and prefetched before the writes. */
static void roshi_write_got(void *ud, int rc, const crdt_obj_t *const *objs, size_t n)
{
    write_ctx_t *c = ud;
    gw_exchange_t *x = c->x;
    if (!roshi_types_ok(x, rc, NULL, objs, n)) {
        free(c);
        gw_http_reply(x);
        return;
    }
    /* The tuples go to keys all over the keyspace: their cache misses overlap this way, where
     * each write would otherwise wait for its own, one after the other. */
    for (int stage = 0; stage < CRDT_TL_PREFETCH_STAGES && n > 1; stage++)
        for (size_t i = 0; i < n; i++)
            crdt_timeline_prefetch(objs[i], c->w[i].m.bytes, c->w[i].m.len, stage);
    gw_run_writes(x->srv, c->w, c->n, roshi_written, c);
}

/* A store that knows types without reading states (Redis: CRDT.TYPE) answers with types only. */
static void roshi_write_typed(void *ud, int rc, const crdt_type_t *types, size_t n)
{
    write_ctx_t *c = ud;
    gw_exchange_t *x = c->x;
    if (!roshi_types_ok(x, rc, types, NULL, n)) {
        free(c);
        gw_http_reply(x);
        return;
    }
    gw_run_writes(x->srv, c->w, c->n, roshi_written, c);
}

/* A store that checks and writes a whole request as one (Redis: CRDT.TLMADD, one command on a
 * single server) answers here: roshi's all-or-nothing type check without a read per tuple. */
static void roshi_batch_done(void *ud, int rc, const crdt_store_batch_result_t *res)
{
    write_ctx_t *c = ud;
    gw_exchange_t *x = c->x;
    gw_metrics_apply(&x->srv->metrics, (double)(gw_now_us() - c->t0) / 1e6);
    if (rc == CRDT_ETYPE && res->applied == 0) {
        if (res->bad < c->n && res->bad_type)
            roshi_error(&x->rs, 409, "[%zu].key holds type %s, not timeline", res->bad,
                        crdt_type_name(res->bad_type));
        else if (res->bad < c->n)
            roshi_error(&x->rs, 409, "[%zu].key holds a value that is not a CRDT, not timeline",
                        res->bad);
        else
            roshi_error(&x->rs, 409, "a key holds another type than timeline");
        free(c);
        gw_http_reply(x);
        return;
    }
    roshi_written(x->srv, rc, res->applied, res->seq, c);
}

static void roshi_write(gw_server_t *s, gw_exchange_t *x, bool add)
{
    const gw_request_t *rq = &x->rq;
    gw_response_t *rs = &x->rs;
    uint64_t t0 = gw_now_us();
    const char *body = rq->body ? (const char *)rq->body : "";
    size_t cap = gw_roshi_max_elems(body, rq->body_len);
    /* One allocation: the context, the writes, the keys, the tuples and the decoded bytes. */
    size_t bytes;
    write_ctx_t *c = wctx_alloc(sizeof(*c) +
                                    cap * (sizeof(gw_write_t) + sizeof(crdt_bytes_t) +
                                           sizeof(gw_roshi_tuple_t)) +
                                    GW_ROSHI_ARENA(rq->body_len),
                                &bytes);
    if (!c) {
        roshi_error(rs, 500, "out of memory");
        goto fail;
    }
    *c = (write_ctx_t){x, add, t0, 0, (gw_write_t *)(c + 1), NULL, bytes};
    c->keys = (crdt_bytes_t *)(c->w + cap);
    gw_roshi_tuple_t *ts = (gw_roshi_tuple_t *)(c->keys + cap);
    gw_roshi_err_t err;
    if (gw_roshi_tuples(body, rq->body_len, (uint8_t *)(ts + cap), ts, cap, &c->n, &err)) {
        roshi_error(rs, err.status, "%s", err.msg);
        goto fail;
    }
    /* Validate everything before applying anything, so a bad tuple leaves no partial write. */
    for (size_t i = 0; i < c->n; i++) {
        const gw_roshi_tuple_t *t = &ts[i];
        if (t->klen == 0) {
            roshi_error(rs, 400, "[%zu].key: empty key (crdtd keys are not empty)", i);
            goto fail;
        }
        if (t->klen > s->cfg.max_key || t->mlen > s->cfg.max_member) {
            roshi_error(rs, 400, "[%zu].%s: %zu bytes, longer than the limit of %zu bytes", i,
                        t->klen > s->cfg.max_key ? "key" : "member",
                        t->klen > s->cfg.max_key ? t->klen : t->mlen,
                        t->klen > s->cfg.max_key ? s->cfg.max_key : s->cfg.max_member);
            goto fail;
        }
        if (gw_key_reserved(t->key, t->klen)) {
            roshi_error(rs, 400, "[%zu].key: the key prefix is reserved", i);
            goto fail;
        }
        if (!key_allowed(x, GW_ACCESS_WRITE, t->key, t->klen, i, ".key"))
            goto fail; /* a request with a key outside the grants stores nothing */
        c->keys[i] = (crdt_bytes_t){t->key, t->klen};
        c->w[i] = (gw_write_t){t->key,
                               t->klen,
                               {.type = CRDT_TIMELINE,
                                .kind = add ? CRDT_MUT_ADD : CRDT_MUT_REMOVE,
                                .bytes = t->member,
                                .len = t->mlen,
                                .score = t->score}};
    }
    if (s->store->ops->tl_write_batch)
        crdt_store_tl_write_batch(s->store, c->w, c->n, roshi_batch_done, c);
    else if (s->store->ops->types)
        crdt_store_types(s->store, c->keys, c->n, roshi_write_typed, c);
    else
        crdt_store_get_many(s->store, c->keys, c->n, roshi_write_got, c);
    return;
fail:
    free(c);
    gw_http_reply(x);
}

/* ---- cursors (common/cursor.go) ------------------------------------------------------------- */

/* Parses "<decimal uint64 of the float64 bits>A<URL-safe base64 with padding>", split at the
 * first 'A'; the member is decoded into *member (crdt_free). 0, or -1 after responding 400. */
static int roshi_cursor_parse(gw_response_t *rs, const char *s, double *score, uint8_t **member,
                              size_t *mlen)
{
    const char *a = strchr(s, 'A');
    if (!a) {
        roshi_error(rs, 400, "invalid cursor string (%s)", s);
        return -1;
    }
    uint64_t bits = 0;
    bool ok = a > s;
    for (const char *p = s; ok && p < a; p++) {
        uint64_t d = (uint64_t)(*p - '0');
        ok = *p >= '0' && *p <= '9' && bits <= (UINT64_MAX - d) / 10;
        bits = bits * 10 + d;
    }
    if (!ok) {
        roshi_error(rs, 400, "invalid score in cursor string (strconv.ParseUint: parsing \"%.*s\": %s)",
                    (int)(a - s), s, a > s && a - s <= 20 ? "value out of range" : "invalid syntax");
        return -1;
    }
    memcpy(score, &bits, sizeof(bits));
    int rc = crdt_base64_decode_ex(a + 1, strlen(a + 1), CRDT_B64_URL, member, mlen);
    if (rc < 0) {
        roshi_error(rs, rc == CRDT_ENOMEM ? 500 : 400, "invalid member in cursor string (%s)",
                    rc == CRDT_ENOMEM ? "out of memory" : "illegal base64 data");
        return -1;
    }
    return 0;
}

/* ---- select --------------------------------------------------------------------------------- */

/* Go's url.Values.Get + strconv: "" is absent; an unparsable value counts as given with the
 * default (roshi's parseInt/parseBool). */
static bool go_int(const gw_request_t *rq, const char *name, long long dflt, long long *out)
{
    const char *v = gw_arg(rq, name);
    *out = dflt;
    if (!v || !*v)
        return false;
    char *end;
    long long n = strtoll(v, &end, 10);
    if (!*end && strchr("+-0123456789", *v))
        *out = n;
    return true;
}

static bool go_bool(const gw_request_t *rq, const char *name, bool dflt, bool *out)
{
    const char *v = gw_arg(rq, name);
    *out = dflt;
    if (!v || !*v)
        return false;
    static const char *const t[] = {"1", "t", "T", "TRUE", "true", "True"};
    static const char *const f[] = {"0", "f", "F", "FALSE", "false", "False"};
    for (size_t i = 0; i < 6; i++) {
        if (!strcmp(v, t[i]))
            *out = true;
        if (!strcmp(v, f[i]))
            *out = false;
    }
    return true;
}

/* A score as Go writes a float64: integers below 2^53 (timestamps, the usual scores) are their
 * digits (and -0 is "-0"), everything else goes through gw_jw_double_go's shortest form. */
static bool score_is_int(double d)
{
    return d > -9007199254740992.0 && d < 9007199254740992.0 && d == (double)(int64_t)d;
}

/* An entry {"key":..,"score":..,"member":..} after its key's part, `{"key":"<base64>","score":`
 * (written once per key by key_heads), preceded by a comma unless it is the first, at p, which
 * has room for KSM_ROOM(hlen, member_len) bytes: where it ends. A select writes up to thousands
 * of them into one reservation (select_write), and they were half of its own work when each
 * reserved its room and wrote its score digit by digit. */
#define KSM_MID ",\"member\":\""
#define KSM_ROOM(hlen, mlen)                                                                       \
    (1 + (hlen) + 1 + GW_U64_MAX_DIGITS + sizeof(KSM_MID) - 1 + ((mlen) + 2) / 3 * 4 + 2)
static char *ksm_put(char *p, const char *head, size_t hlen, const crdt_tl_entry_t *e, bool comma)
{
    if (comma)
        *p++ = ',';
    memcpy(p, head, hlen);
    p += hlen;
    if (signbit(e->score))
        *p++ = '-';
    p += gw_u64_put(p, (uint64_t)fabs(e->score));
    memcpy(p, KSM_MID, sizeof(KSM_MID) - 1);
    p += sizeof(KSM_MID) - 1;
    p += crdt_base64_encode_into(p, e->member, e->member_len, CRDT_B64_STD);
    *p++ = '"';
    *p++ = '}';
    return p;
}

/* The same entry when its score is not an integer (score_is_int): through the writer. */
static void ksm_write_slow(gw_jw_t *w, const char *head, size_t hlen, const crdt_tl_entry_t *e,
                           bool comma)
{
    if (comma)
        gw_jw_raw(w, ",", 1);
    gw_jw_raw(w, head, hlen);
    gw_jw_double_go(w, e->score);
    gw_jw_raw(w, KSM_MID, sizeof(KSM_MID) - 2);
    gw_jw_b64(w, e->member, e->member_len);
    gw_jw_raw(w, "}", 1);
}

/* Entries es[0..n) with their keys' heads (heads + hoff[src(k)] .. hoff[src(k) + 1]), each
 * preceded by a comma unless it is the first, in one reservation. src: es[k]'s key is src[k], or
 * every entry's is `key` when src is NULL. */
static void ksm_write_all(gw_jw_t *w, const char *heads, const size_t *hoff,
                          const crdt_tl_entry_t *es, const size_t *src, size_t key, size_t n)
{
    size_t need = 0;
    for (size_t k = 0; k < n; k++) {
        size_t i = src ? src[k] : key;
        need += KSM_ROOM(hoff[i + 1] - hoff[i], es[k].member_len);
    }
    char *p = gw_jw_extend(w, need);
    if (!p)
        return;
    for (size_t k = 0; k < n; k++) {
        size_t i = src ? src[k] : key;
        const char *h = heads + hoff[i];
        size_t hlen = hoff[i + 1] - hoff[i];
        need -= KSM_ROOM(hlen, es[k].member_len);
        if (score_is_int(es[k].score)) {
            p = ksm_put(p, h, hlen, &es[k], k > 0);
            continue;
        }
        /* the slow one writes through w, which may move it: then room for the rest again */
        w->len = (size_t)(p - w->p);
        ksm_write_slow(w, h, hlen, &es[k], k > 0);
        if (!(p = gw_jw_extend(w, need)))
            return;
    }
    w->len = (size_t)(p - w->p);
    w->p[w->len] = '\0';
}

/* The heads of the entries of each key, and room for the order of the keys, in one allocation
 * (free() it): key i's head at heads + off[i] .. off[i + 1]. NULL when out of memory. */
static void *key_heads(const crdt_bytes_t *keys, size_t nk, size_t **off, char **heads,
                       const crdt_bytes_t ***order)
{
    static const char pre[] = "{\"key\":\"", post[] = "\",\"score\":";
    size_t total = 0;
    for (size_t i = 0; i < nk; i++)
        total += sizeof(pre) - 1 + crdt_base64_encoded_len(keys[i].len, CRDT_B64_STD) +
                 sizeof(post) - 1;
    size_t *o = malloc((nk + 1) * sizeof(*o) + nk * sizeof(**order) + total + 1);
    if (!o)
        return NULL;
    *order = (const crdt_bytes_t **)(o + nk + 1);
    char *h = (char *)(*order + nk);
    size_t at = 0;
    for (size_t i = 0; i < nk; i++) {
        o[i] = at;
        memcpy(h + at, pre, sizeof(pre) - 1);
        at += sizeof(pre) - 1;
        at += crdt_base64_encode_into(h + at, keys[i].data, keys[i].len, CRDT_B64_STD);
        memcpy(h + at, post, sizeof(post) - 1);
        at += sizeof(post) - 1;
    }
    o[nk] = at;
    *off = o, *heads = h;
    return o;
}

typedef struct select_ctx {
    gw_exchange_t *x;
    uint64_t t0;
    long long offset, limit;
    bool coalesce, by_range;
    crdt_tl_entry_t start, stop;
    uint8_t *start_m, *stop_m;
    size_t nk;
    crdt_bytes_t *keys; /* distinct keys, bytes in the arena after them */
    const crdt_obj_t **tls; /* room for the keys' timelines (select_got) */
    /* read with crdt_store_tl_range: the keys asked (not the reserved ones), and for each key
     * its index among them (SIZE_MAX: not asked) */
    crdt_bytes_t *asked;
    size_t *asked_of;
} select_ctx_t;

static void select_free(select_ctx_t *c)
{
    crdt_free(c->start_m), crdt_free(c->stop_m);
    free(c->asked);
    free(c);
}

/* Of entries es[0..n) of one timeline, newest first and at or after stop's score, how many come
 * strictly before `stop`: range_by_score includes score == stop.score, roshi wants only those
 * with member > stop.member, which come first among equal scores (newest first = member
 * descending). */
static size_t before_stop(const crdt_tl_entry_t *es, size_t n, const crdt_tl_entry_t *stop)
{
    while (n && es[n - 1].score == stop->score && crdt_tl_entry_cmp(&es[n - 1], stop) >= 0)
        n--;
    return n;
}

/* Entries of one timeline strictly after `start` and strictly before `stop`, newest first. */
static size_t select_range(const crdt_obj_t *o, const crdt_tl_entry_t *start,
                           const crdt_tl_entry_t *stop, size_t limit, crdt_tl_entry_t *out)
{
    /* a NaN stop admits nothing (roshi's beforeStop is false for every score) */
    if (!o || !limit || isnan(stop->score))
        return 0;
    size_t n = crdt_timeline_range_by_score(o, start->score, stop->score, start, limit, out);
    return before_stop(out, n, stop);
}

typedef struct pair {
    crdt_tl_entry_t e;
    size_t src;
} pair_t;

/* Newest first; the same entry in several keys: the lower key first (crdt_timeline_select's
 * order). */
static int cmp_pairs(const void *a, const void *b)
{
    const pair_t *x = a, *y = b;
    int c = crdt_tl_entry_cmp(&x->e, &y->e);
    return c ? c : (x->src > y->src) - (x->src < y->src);
}

static int cmp_keys(const void *a, const void *b)
{
    const crdt_bytes_t *x = *(const crdt_bytes_t *const *)a, *y = *(const crdt_bytes_t *const *)b;
    int c = memcmp(x->data, y->data, x->len < y->len ? x->len : y->len);
    return c ? c : (x->len > y->len) - (x->len < y->len);
}

/* What a select answers, before it is written: not coalesced, key i's entries
 * es[at[i] .. at[i] + cnt[i]); coalesced, es[0..got) with src[k] the key of es[k]. ps is the
 * scratch of a coalesced select and the one allocation (select_out_init) of all of it. */
typedef struct select_out {
    pair_t *ps;
    crdt_tl_entry_t *es;
    size_t *src, *at, *cnt;
    size_t got;
    size_t size; /* bytes at ps */
} select_out_t;

/* The last select's room, kept for the next select of this thread's loop as wctx_kept is for
 * writes: a newest-50 select's is some 3 KiB, past malloc's per-thread cache. */
#define SELECT_KEEP (64u << 10)
static _Thread_local void *select_kept;
static _Thread_local size_t select_kept_size;

/* Room for cap entries of nk keys; false when out of memory. select_out_done gives it back. */
static bool select_out_init(select_out_t *o, size_t cap, size_t nk)
{
    size_t per = sizeof(pair_t) + sizeof(crdt_tl_entry_t) + sizeof(size_t);
    cap = cap ? cap : 1;
    if (cap > SIZE_MAX / 2 / per || nk > SIZE_MAX / 2 / (2 * sizeof(size_t)))
        return false;
    size_t size = cap * per + nk * 2 * sizeof(size_t);
    if (select_kept && select_kept_size >= size) {
        o->ps = select_kept, o->size = select_kept_size;
        select_kept = NULL;
    } else {
        o->size = size < 4096 ? 4096 : size;
        o->ps = malloc(o->size);
    }
    if (!o->ps)
        return false;
    o->es = (crdt_tl_entry_t *)(o->ps + cap);
    o->src = (size_t *)(o->es + cap);
    o->at = o->src + cap;
    o->cnt = o->at + nk;
    o->got = 0;
    return true;
}

static void select_out_done(select_out_t *o)
{
    if (o->size <= SELECT_KEEP && (!select_kept || select_kept_size < o->size)) {
        free(select_kept);
        select_kept = o->ps, select_kept_size = o->size;
    } else {
        free(o->ps);
    }
    o->ps = NULL;
}

/* A coalesced select out of the n entries of every key in ps: newest first, `skip` skipped, at
 * most limit. */
static void select_coalesce(select_out_t *o, size_t n, size_t skip, size_t limit)
{
    qsort(o->ps, n, sizeof(*o->ps), cmp_pairs);
    o->got = 0;
    for (size_t k = skip; k < n && o->got < limit; k++) {
        o->es[o->got] = o->ps[k].e;
        o->src[o->got++] = o->ps[k].src;
    }
}

/* The response to a select of the first nk keys, out of o. */
static void select_write(select_ctx_t *c, size_t nk, const select_out_t *o)
{
    gw_response_t *rs = &c->x->rs;
    size_t *hoff;
    char *heads;
    const crdt_bytes_t **order;
    void *block = key_heads(c->keys, nk, &hoff, &heads, &order);
    if (!block) {
        roshi_error(rs, 500, "out of memory");
        return;
    }
    /* roshi measures the duration before it encodes the response */
    gw_jw_t w;
    gw_jw_init(&w, 128 + o->got * 96);
    gw_jw_lit(&w, "{");
    jw_duration(&w, c->t0);
    if (c->coalesce) {
        gw_jw_lit(&w, ",\"records\":[");
        ksm_write_all(&w, heads, hoff, o->es, o->src, 0, o->got);
        gw_jw_lit(&w, "]}");
    } else {
        for (size_t i = 0; i < nk; i++)
            order[i] = &c->keys[i];
        qsort(order, nk, sizeof(*order), cmp_keys); /* Go's encoder sorts map keys */
        gw_jw_lit(&w, ",\"records\":{");
        for (size_t j = 0; j < nk; j++) {
            size_t i = (size_t)(order[j] - c->keys);
            if (j)
                gw_jw_lit(&w, ",");
            jw_go_string(&w, c->keys[i].data, c->keys[i].len);
            gw_jw_lit(&w, ":[");
            ksm_write_all(&w, heads, hoff, o->es + o->at[i], NULL, i, o->cnt[i]);
            gw_jw_lit(&w, "]");
        }
        gw_jw_lit(&w, "}}");
    }
    free(block);
    gw_respond_jw(rs, 200, &w);
}

/* A select answered from the keys' objects (tls[i]: key i's timeline, or NULL). */
static void select_render(select_ctx_t *c, const crdt_obj_t **tls)
{
    size_t limit = (size_t)c->limit, offset = (size_t)c->offset, nk = c->nk;
    /* roshi asks Redis with a start cursor of NaN and drops the keys that fail: none are left */
    if (c->by_range && isnan(c->start.score))
        nk = 0;
    select_out_t o;
    if (!select_out_init(&o, limit * (c->coalesce && !c->by_range ? 1 : nk), nk)) {
        roshi_error(&c->x->rs, 500, "out of memory");
        return;
    }
    if (c->coalesce && !c->by_range) {
        o.got = crdt_timeline_select(tls, nk, offset, limit, o.es, o.src);
    } else if (c->coalesce) {
        size_t n = 0;
        for (size_t i = 0; i < nk; i++) {
            size_t m = select_range(tls[i], &c->start, &c->stop, limit, o.es + n);
            for (size_t k = 0; k < m; k++)
                o.ps[n + k] = (pair_t){o.es[n + k], i};
            n += m;
        }
        select_coalesce(&o, n, 0, limit);
    } else {
        for (size_t i = 0; i < nk; i++) {
            o.at[i] = o.got;
            o.cnt[i] = c->by_range ? select_range(tls[i], &c->start, &c->stop, limit, o.es + o.got)
                       : tls[i]    ? crdt_timeline_range(tls[i], offset, limit, o.es + o.got)
                                   : 0;
            o.got += o.cnt[i];
        }
    }
    select_write(c, nk, &o);
    select_out_done(&o);
}

static void select_failed(select_ctx_t *c, int rc)
{
    roshi_error(&c->x->rs, rc == CRDT_EUNAVAIL || rc == CRDT_EIO ? 503 : 500,
                "reading the keys failed: %s", crdt_strerror(rc));
}

static void select_got(void *ud, int rc, const crdt_obj_t *const *objs, size_t n)
{
    select_ctx_t *c = ud;
    gw_exchange_t *x = c->x;
    const crdt_obj_t **tls = c->tls; /* n is c->nk */
    if (rc < 0) {
        select_failed(c, rc);
    } else {
        /* not a timeline, or crdtd's own (op-id marks): as empty as a key roshi never saw */
        for (size_t i = 0; i < n; i++)
            tls[i] = objs[i] && crdt_obj_type(objs[i]) == CRDT_TIMELINE &&
                             !gw_key_reserved(c->keys[i].data, c->keys[i].len)
                         ? objs[i]
                         : NULL;
        select_render(c, tls);
    }
    select_free(c);
    gw_http_reply(x);
}

/* A select answered from the entries crdt_store_tl_range read (select_ranged_query): per key what
 * select_render takes of its object. */
static void select_ranged(void *ud, int rc, const crdt_tl_entry_t *const *ents,
                          const size_t *counts, size_t n)
{
    select_ctx_t *c = ud;
    gw_exchange_t *x = c->x;
    size_t total = 0;
    for (size_t k = 0; rc == 0 && k < n; k++)
        total += counts[k];
    select_out_t o;
    if (rc < 0) {
        select_failed(c, rc);
    } else if (!select_out_init(&o, total, c->nk)) {
        roshi_error(&x->rs, 500, "out of memory");
    } else {
        size_t m = 0; /* entries gathered */
        for (size_t i = 0; i < c->nk; i++) {
            size_t k = c->asked_of[i], cnt = k == SIZE_MAX ? 0 : counts[k];
            if (cnt && c->by_range)
                cnt = before_stop(ents[k], cnt, &c->stop);
            o.at[i] = m;
            o.cnt[i] = cnt;
            for (size_t j = 0; j < cnt; j++, m++) {
                o.es[m] = ents[k][j];
                if (c->coalesce)
                    o.ps[m] = (pair_t){ents[k][j], i};
            }
        }
        o.got = m;
        /* coalesced: every key's entries merged (an offset select read each key's newest
         * offset + limit: the offset is skipped over the merge) */
        if (c->coalesce)
            select_coalesce(&o, m, c->by_range ? 0 : (size_t)c->offset, (size_t)c->limit);
        select_write(c, c->nk, &o);
        select_out_done(&o);
    }
    select_free(c);
    gw_http_reply(x);
}

/* The query of a select through crdt_store_tl_range, and the keys to ask (c->asked: all but the
 * reserved ones, which stay empty unasked); false when the select is answered from the objects
 * instead: a store without tl_range, a cursor score the commands do not take (NaN, infinite:
 * select_render has roshi's exact answer to those), or no memory for the keys. */
static bool select_ranged_query(gw_server_t *s, select_ctx_t *c, crdt_store_tl_query_t *q,
                                size_t *nasked)
{
    if (!s->store->ops->tl_range ||
        (c->by_range && (!isfinite(c->start.score) || !isfinite(c->stop.score))))
        return false;
    c->asked = malloc((c->nk ? c->nk : 1) * (sizeof(*c->asked) + sizeof(*c->asked_of)));
    if (!c->asked)
        return false;
    c->asked_of = (size_t *)(c->asked + c->nk);
    *nasked = 0;
    for (size_t i = 0; i < c->nk; i++) {
        bool reserved = gw_key_reserved(c->keys[i].data, c->keys[i].len);
        c->asked_of[i] = reserved ? SIZE_MAX : *nasked;
        if (!reserved)
            c->asked[(*nasked)++] = c->keys[i];
    }
    size_t offset = (size_t)c->offset, limit = (size_t)c->limit;
    if (c->by_range)
        *q = (crdt_store_tl_query_t){.by_score = true,
                                     .max = c->start.score,
                                     .min = c->stop.score,
                                     .has_after = true,
                                     .after = c->start,
                                     .limit = limit};
    else if (c->coalesce)
        *q = (crdt_store_tl_query_t){.offset = 0, .count = limit ? offset + limit : 0};
    else
        *q = (crdt_store_tl_query_t){.offset = offset, .count = limit};
    return true;
}

static void roshi_select(gw_server_t *s, gw_exchange_t *x)
{
    const gw_request_t *rq = &x->rq;
    gw_response_t *rs = &x->rs;
    uint64_t t0 = gw_now_us();
    /* roshi decodes the body before it looks at the query */
    const char *body = rq->body ? (const char *)rq->body : "";
    size_t cap = gw_roshi_max_elems(body, rq->body_len), n;
    /* One allocation: the context, the keys, their objects and the arena of decoded bytes. */
    select_ctx_t *c = malloc(
        sizeof(*c) + cap * (sizeof(crdt_bytes_t) + sizeof(crdt_obj_t *) + sizeof(gw_roshi_key_t)) +
        GW_ROSHI_ARENA(rq->body_len));
    if (!c) {
        roshi_error(rs, 500, "out of memory");
        goto fail;
    }
    *c = (select_ctx_t){.x = x, .t0 = t0};
    c->keys = (crdt_bytes_t *)(c + 1);
    c->tls = (const crdt_obj_t **)(c->keys + cap);
    gw_roshi_key_t *ks = (gw_roshi_key_t *)(c->tls + cap);
    gw_roshi_err_t err;
    if (gw_roshi_keys(body, rq->body_len, (uint8_t *)(ks + cap), ks, cap, &n, &err)) {
        roshi_error(rs, err.status, "%s", err.msg);
        goto fail;
    }
    /* Keys, deduplicated as roshi's map does; every one must be readable with the token. */
    for (size_t i = 0; i < n; i++) {
        if (!key_allowed(x, GW_ACCESS_READ, ks[i].p, ks[i].len, i, ""))
            goto fail;
        bool dup = false;
        for (size_t j = 0; j < c->nk && !dup; j++)
            dup = c->keys[j].len == ks[i].len && !memcmp(c->keys[j].data, ks[i].p, ks[i].len);
        if (!dup)
            c->keys[c->nk++] = (crdt_bytes_t){ks[i].p, ks[i].len};
    }

    bool offset_given = go_int(rq, "offset", 0, &c->offset);
    go_int(rq, "limit", ROSHI_DEFAULT_LIMIT, &c->limit);
    go_bool(rq, "coalesce", false, &c->coalesce);
    const char *start_s = gw_arg(rq, "start"), *stop_s = gw_arg(rq, "stop");
    bool start_given = start_s && *start_s, stop_given = stop_s && *stop_s;
    c->by_range = start_given || stop_given;
    c->start = (crdt_tl_entry_t){.score = DBL_MAX, .member = "", .member_len = 0};
    c->stop = (crdt_tl_entry_t){.score = 0, .member = "", .member_len = 0};
    if (offset_given && c->by_range) {
        roshi_error(rs, 400, "cannot specify both offset and start/stop");
        goto fail;
    }
    if (start_given) {
        if (roshi_cursor_parse(rs, start_s, &c->start.score, &c->start_m, &c->start.member_len))
            goto fail;
        c->start.member = c->start_m;
    }
    if (stop_given) {
        if (roshi_cursor_parse(rs, stop_s, &c->stop.score, &c->stop_m, &c->stop.member_len))
            goto fail;
        c->stop.member = c->stop_m;
    }
    if (c->offset < 0) {
        roshi_error(rs, 400, "negative offset is invalid");
        goto fail;
    }
    if (c->limit < 0) {
        if (c->coalesce) { /* roshi-server panics on this one and closes the connection */
            roshi_error(rs, 400, "negative limit is invalid for %s select",
                        c->by_range ? "cursor-based" : "offset-based");
            goto fail;
        }
        /* roshi's farm drops every key whose read failed: nothing is left */
        c->nk = 0;
        c->limit = 0;
    }
    if (c->limit > ROSHI_MAX_LIMIT)
        c->limit = ROSHI_MAX_LIMIT; /* roshi has no cap; an unbounded response is not served here */
    crdt_store_tl_query_t q;
    size_t nasked;
    if (select_ranged_query(s, c, &q, &nasked))
        crdt_store_tl_range(s->store, c->asked, nasked, &q, select_ranged, c);
    else
        crdt_store_get_many(s->store, c->keys, c->nk, select_got, c);
    return;
fail:
    if (c)
        select_free(c);
    gw_http_reply(x);
}

void gw_roshi_handle(gw_server_t *s, gw_exchange_t *x)
{
    const gw_request_t *rq = &x->rq;
    gw_response_t *rs = &x->rs;
    if (!strcmp(rq->path, "/metrics") && rq->method == GW_GET) {
        rs->ep = GW_EP_METRICS;
        gw_status_metrics(s, x);
        return;
    }
    if (!strcmp(rq->path, "/healthz") && rq->method == GW_GET) {
        rs->ep = GW_EP_HEALTHZ;
        gw_status_healthz(s, x);
        return;
    }
    /* gorilla/pat routes by path prefix: roshi-server serves its API on every path */
    switch (rq->method) {
    case GW_GET:
        rs->ep = GW_EP_ROSHI_SELECT;
        roshi_select(s, x);
        break;
    case GW_POST:
        rs->ep = GW_EP_ROSHI_INSERT;
        roshi_write(s, x, true);
        break;
    case GW_DELETE:
        rs->ep = GW_EP_ROSHI_DELETE;
        roshi_write(s, x, false);
        break;
    default:
        /* no route matches: net/http's plain-text 404, as roshi-server (gorilla/pat) answers */
        rs->ep = GW_EP_OTHER;
        gw_respond_text(rs, 404, "text/plain; charset=utf-8", "404 page not found\n", 19);
        gw_http_reply(x);
        break;
    }
}
