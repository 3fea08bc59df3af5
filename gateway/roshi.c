/* roshi.c - roshi-server's HTTP API (insert, delete, select) over crdtd's timelines */
#include <float.h>
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "auth.h"
#include "crdt_json.h"
#include "loop.h"
#include "op.h"
#include "rest.h"
#include "roshi.h"
#include "status.h"
#include "util.h"

/*
 * The shapes of soundcloud/roshi's roshi-server, at its root:
 *
 *   POST   /  [{"key":b64,"score":f,"member":b64},...]  -> {"inserted":n,"duration":"1.2ms"}
 *   DELETE /  same body                                  -> {"deleted":n,"duration":".."}
 *   GET    /?offset&limit&coalesce&start&stop  ["b64key",...]
 *          -> {"records":{"<key>":[{"key","score","member"},...]},"duration":".."}
 *             or, with coalesce=true, {"records":[{"key","score","member"},...],...}
 *   errors -> {"error":"..","code":400,"description":"Bad Request"}
 *
 * Records of a non-coalesced select are keyed by the key's bytes as a JSON string (Go's map of
 * strings), entries by base64. start/stop are roshi cursors "<float64 bits>!<base64 member>":
 * entries strictly after start down to strictly before stop. Deliberate differences
 * (docs/http-api.md): "inserted"/"deleted" count the tuples that changed state (roshi counts
 * every tuple sent), a write is answered once durable, and bad tuples (missing fields, a key or
 * member that is not base64 or too long) fail the whole request with 400 before anything is
 * applied, where roshi's Go decoder would have taken zero values.
 */

#define ROSHI_DEFAULT_LIMIT 10
#define ROSHI_MAX_LIMIT 10000

/* Go's time.Duration.String() for durations under a minute. */
static void go_duration(uint64_t ns, char *out, size_t n)
{
    const char *unit;
    uint64_t scale;
    int digits;
    if (ns == 0) {
        snprintf(out, n, "0s");
        return;
    }
    if (ns < 1000) {
        snprintf(out, n, "%" PRIu64 "ns", ns);
        return;
    }
    if (ns < 1000000)
        unit = "\xc2\xb5s", scale = 1000, digits = 3;
    else if (ns < 1000000000)
        unit = "ms", scale = 1000000, digits = 6;
    else
        unit = "s", scale = 1000000000, digits = 9;
    char frac[16];
    snprintf(frac, sizeof(frac), "%0*" PRIu64, digits, ns % scale);
    int len = digits;
    while (len > 0 && frac[len - 1] == '0')
        len--;
    frac[len] = '\0';
    snprintf(out, n, "%" PRIu64 "%s%s%s", ns / scale, len ? "." : "", frac, unit);
}

static json_t *duration_json(uint64_t t0_us)
{
    char d[48];
    go_duration((gw_now_us() - t0_us) * 1000, d, sizeof(d));
    return json_string(d);
}

/* ---- writes --------------------------------------------------------------------------------- */

typedef struct tuple {
    uint8_t *key, *member;
    size_t klen, mlen;
    double score;
} tuple_t;

typedef struct write_ctx {
    gw_exchange_t *x;
    bool add;
    uint64_t t0;
    tuple_t *ts;
    size_t n;
    crdt_bytes_t *keys;
    gw_write_t *w;
    size_t nvalid; /* tuples before the first invalid one */
    bool invalid;  /* the response holds that tuple's error */
} write_ctx_t;

static void write_ctx_free(write_ctx_t *c)
{
    for (size_t i = 0; c->ts && i < c->n; i++) {
        free(c->ts[i].key);
        free(c->ts[i].member);
    }
    free(c->ts);
    free(c->keys);
    free(c->w);
    free(c);
}

static void roshi_written(gw_server_t *s, int rc, size_t changed, uint64_t last, void *ud)
{
    write_ctx_t *c = ud;
    gw_exchange_t *x = c->x;
    gw_response_t *rs = &x->rs;
    if (rc < 0) {
        gw_respond_error(rs, rc == CRDT_EIO ? 503 : 500, "%s failed after %zu applied: %s",
                         c->add ? "insert" : "delete", changed, crdt_strerror(rc));
    } else {
        json_t *j = json_object();
        json_object_set_new_nocheck(j, c->add ? "inserted" : "deleted",
                                    json_integer((json_int_t)changed));
        json_object_set_new_nocheck(j, "duration", duration_json(c->t0));
        gw_respond_json(rs, 200, j);
    }
    if (last) {
        rs->wait_seq = last;
        gw_loop_schedule_flush(s);
    }
    write_ctx_free(c);
    gw_http_reply(x);
}

/* Every tuple's key must hold a timeline (or nothing) before anything is written. The first
 * problem in tuple order is reported: a key of another type before a later invalid tuple. */
static void roshi_write_got(void *ud, int rc, const crdt_obj_t *const *objs, size_t n)
{
    write_ctx_t *c = ud;
    gw_exchange_t *x = c->x;
    if (rc < 0) {
        gw_respond_error(&x->rs, rc == CRDT_EUNAVAIL || rc == CRDT_EIO ? 503 : 500,
                         "reading the keys failed: %s", crdt_strerror(rc));
        goto fail;
    }
    for (size_t i = 0; i < n; i++)
        if (objs[i] && crdt_obj_type(objs[i]) != CRDT_TIMELINE) {
            gw_respond_error(&x->rs, 409, "[%zu].key holds type %s, not timeline", i,
                             crdt_type_name(crdt_obj_type(objs[i])));
            goto fail;
        }
    if (c->invalid)
        goto fail;
    gw_run_writes(x->srv, c->w, c->n, roshi_written, c);
    return;
fail:
    write_ctx_free(c);
    gw_http_reply(x);
}

/* Parses tuple i; false after responding 400. */
static bool tuple_parse(gw_server_t *s, const json_t *el, size_t i, gw_response_t *rs, tuple_t *t)
{
    char what[48];
    gw_op_result_t r;
    if (!json_is_object(el)) {
        gw_respond_error(rs, 400, "[%zu]: expected an object {\"key\",\"score\",\"member\"}", i);
        return false;
    }
    snprintf(what, sizeof(what), "[%zu].key", i);
    if (gw_b64_field(json_object_get(el, "key"), what, s->cfg.max_key, &r, &t->key, &t->klen)) {
        gw_respond_error(rs, r.status, "%s", r.message);
        return false;
    }
    if (t->klen == 0) {
        gw_respond_error(rs, 400, "[%zu].key: empty key", i);
        return false;
    }
    snprintf(what, sizeof(what), "[%zu].member", i);
    if (gw_b64_field(json_object_get(el, "member"), what, s->cfg.max_member, &r, &t->member,
                     &t->mlen)) {
        gw_respond_error(rs, r.status, "%s", r.message);
        return false;
    }
    const json_t *sc = json_object_get(el, "score");
    if (!json_is_number(sc) || !isfinite(json_number_value(sc))) {
        gw_respond_error(rs, 400, "[%zu].score: expected a finite number", i);
        return false;
    }
    t->score = json_number_value(sc);
    return true;
}

static void roshi_write(gw_server_t *s, gw_exchange_t *x, bool add)
{
    const gw_request_t *rq = &x->rq;
    gw_response_t *rs = &x->rs;
    uint64_t t0 = gw_now_us();
    write_ctx_t *c = NULL;
    json_t *body = gw_parse_body(rq, rs);
    if (!body)
        goto fail;
    if (!json_is_array(body)) {
        gw_respond_error(rs, 400, "expected a JSON array of {\"key\",\"score\",\"member\"}");
        goto fail;
    }
    size_t n = json_array_size(body);
    c = calloc(1, sizeof(*c));
    if (c)
        *c = (write_ctx_t){x,
                           add,
                           t0,
                           calloc(n ? n : 1, sizeof(tuple_t)),
                           n,
                           calloc(n ? n : 1, sizeof(crdt_bytes_t)),
                           calloc(n ? n : 1, sizeof(gw_write_t))};
    if (!c || !c->ts || !c->keys || !c->w) {
        gw_respond_error(rs, 500, "out of memory");
        goto fail;
    }
    /* Validate everything before applying anything, so a bad tuple leaves no partial write. */
    for (size_t i = 0; i < n; i++) {
        tuple_t *t = &c->ts[i];
        if (!tuple_parse(s, json_array_get(body, i), i, rs, t)) {
            c->invalid = true;
            break;
        }
        char what[32];
        snprintf(what, sizeof(what), "[%zu].key", i);
        if (!gw_auth_http_key(x, GW_ACCESS_WRITE, t->key, t->klen, what)) {
            goto fail; /* a request with a key outside the grants stores nothing */
        }
        c->keys[i] = (crdt_bytes_t){t->key, t->klen};
        c->w[i] = (gw_write_t){t->key,
                               t->klen,
                               {.type = CRDT_TIMELINE,
                                .kind = add ? CRDT_MUT_ADD : CRDT_MUT_REMOVE,
                                .bytes = t->member,
                                .len = t->mlen,
                                .score = t->score}};
        c->nvalid = i + 1;
    }
    json_decref(body);
    body = NULL;
    if (c->invalid && !c->nvalid)
        goto fail;
    crdt_store_get_many(s->store, c->keys, c->nvalid, roshi_write_got, c);
    return;
fail:
    json_decref(body);
    if (c)
        write_ctx_free(c);
    gw_http_reply(x);
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
    if (!*end)
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

/* A JSON object key from key bytes the way Go's encoder writes a map[string] key: invalid UTF-8
 * becomes U+FFFD. Returns a new buffer in *out. */
static char *go_string(const uint8_t *p, size_t n, size_t *outlen)
{
    char *o = malloc(n * 3 + 1);
    if (!o)
        return NULL;
    size_t w = 0;
    for (size_t i = 0; i < n;) {
        uint8_t c = p[i];
        size_t len = c < 0x80 ? 1 : (c >> 5) == 6 ? 2 : (c >> 4) == 14 ? 3 : (c >> 3) == 30 ? 4 : 0;
        bool ok = len && i + len <= n;
        uint32_t cp = len == 1 ? c : len == 2 ? c & 0x1f : len == 3 ? c & 0x0f : c & 0x07;
        for (size_t k = 1; ok && k < len; k++) {
            if ((p[i + k] & 0xc0) != 0x80)
                ok = false;
            cp = cp << 6 | (p[i + k] & 0x3f);
        }
        if (ok && ((len == 2 && cp < 0x80) || (len == 3 && cp < 0x800) ||
                   (len == 4 && (cp < 0x10000 || cp > 0x10ffff)) || (cp >= 0xd800 && cp <= 0xdfff)))
            ok = false;
        if (ok) {
            memcpy(o + w, p + i, len);
            w += len;
            i += len;
        } else {
            memcpy(o + w, "\xef\xbf\xbd", 3);
            w += 3;
            i++;
        }
    }
    o[w] = '\0';
    *outlen = w;
    return o;
}

static void ksm_write(gw_jw_t *w, const uint8_t *key, size_t klen, const crdt_tl_entry_t *e)
{
    gw_jw_lit(w, "{\"key\":");
    gw_jw_b64(w, key, klen);
    gw_jw_lit(w, ",\"score\":");
    gw_jw_double_go(w, e->score);
    gw_jw_lit(w, ",\"member\":");
    gw_jw_b64(w, e->member, e->member_len);
    gw_jw_lit(w, "}");
}

/* Entries of one timeline strictly after `start` and strictly before `stop`, newest first. */
static size_t select_range(const crdt_obj_t *o, const crdt_tl_entry_t *start,
                           const crdt_tl_entry_t *stop, size_t limit, crdt_tl_entry_t *out)
{
    if (!o || !limit)
        return 0;
    size_t n = crdt_timeline_range_by_score(o, start->score, stop->score, start, limit, out);
    /* range_by_score includes score == stop.score; roshi wants those with member > stop.member,
     * which come first among equal scores (newest first = member descending) */
    while (n && out[n - 1].score == stop->score && crdt_tl_entry_cmp(&out[n - 1], stop) >= 0)
        n--;
    return n;
}

static int cmp_entries_src(const void *a, const void *b)
{
    return crdt_tl_entry_cmp(a, b);
}

typedef struct select_ctx {
    gw_exchange_t *x;
    uint64_t t0;
    long long offset, limit;
    bool coalesce, by_range;
    crdt_tl_entry_t start, stop;
    uint8_t *start_m, *stop_m;
    size_t nk;
    uint8_t **kb;
    size_t *kl;
    crdt_bytes_t *keys;
} select_ctx_t;

static void select_free(select_ctx_t *c)
{
    for (size_t i = 0; c->kb && i < c->nk; i++)
        free(c->kb[i]);
    free(c->kb), free(c->kl), free(c->keys), free(c->start_m), free(c->stop_m);
    free(c);
}

static void select_render(select_ctx_t *c, const crdt_obj_t **tls)
{
    gw_response_t *rs = &c->x->rs;
    long long offset = c->offset, limit = c->limit;
    bool coalesce = c->coalesce, by_range = c->by_range;
    size_t nk = c->nk;
    uint8_t **kb = c->kb;
    size_t *kl = c->kl;
    const crdt_tl_entry_t start = c->start, stop = c->stop;
    uint64_t t0 = c->t0;
    crdt_tl_entry_t *es = NULL;
    size_t *src = NULL;

    size_t per = (size_t)limit + (coalesce && !by_range ? (size_t)offset : 0);
    size_t cap = coalesce ? per * (nk ? nk : 1) : per;
    es = malloc((cap ? cap : 1) * sizeof(*es));
    src = malloc((cap ? cap : 1) * sizeof(*src));
    if (!es || !src) {
        gw_respond_error(rs, 500, "out of memory");
        goto out;
    }

    gw_jw_t w;
    gw_jw_init(&w, 4096);
    if (coalesce) {
        size_t got = 0;
        if (!by_range) {
            got = crdt_timeline_select(tls, nk, (size_t)offset, (size_t)limit, es, src);
        } else {
            for (size_t i = 0; i < nk; i++) {
                size_t m = select_range(tls[i], &start, &stop, (size_t)limit, es + got);
                for (size_t k = 0; k < m; k++)
                    src[got + k] = i;
                got += m;
            }
            /* sort (entry, source) pairs newest first, then keep `limit` */
            typedef struct {
                crdt_tl_entry_t e;
                size_t src;
            } pair_t;
            pair_t *pairs = malloc((got ? got : 1) * sizeof(*pairs));
            if (!pairs) {
                gw_jw_free(&w);
                gw_respond_error(rs, 500, "out of memory");
                goto out;
            }
            for (size_t i = 0; i < got; i++)
                pairs[i].e = es[i], pairs[i].src = src[i];
            qsort(pairs, got, sizeof(*pairs), cmp_entries_src);
            if (got > (size_t)limit)
                got = (size_t)limit;
            for (size_t i = 0; i < got; i++)
                es[i] = pairs[i].e, src[i] = pairs[i].src;
            free(pairs);
        }
        gw_jw_lit(&w, "{\"records\":[");
        for (size_t i = 0; i < got; i++) {
            if (i)
                gw_jw_lit(&w, ",");
            ksm_write(&w, kb[src[i]], kl[src[i]], &es[i]);
        }
        gw_jw_lit(&w, "]");
    } else {
        gw_jw_lit(&w, "{\"records\":{");
        for (size_t i = 0; i < nk; i++) {
            size_t got = by_range ? select_range(tls[i], &start, &stop, (size_t)limit, es)
                         : tls[i] ? crdt_timeline_range(tls[i], (size_t)offset, (size_t)limit, es)
                                  : 0;
            size_t namelen;
            char *name = go_string(kb[i], kl[i], &namelen);
            json_t *js = name ? json_stringn(name, namelen) : NULL;
            char *quoted = js ? json_dumps(js, JSON_ENCODE_ANY) : NULL;
            json_decref(js);
            free(name);
            if (!quoted) {
                gw_jw_free(&w);
                gw_respond_error(rs, 500, "out of memory");
                goto out;
            }
            if (i)
                gw_jw_lit(&w, ",");
            gw_jw_lit(&w, quoted);
            free(quoted);
            gw_jw_lit(&w, ":[");
            for (size_t k = 0; k < got; k++) {
                if (k)
                    gw_jw_lit(&w, ",");
                ksm_write(&w, kb[i], kl[i], &es[k]);
            }
            gw_jw_lit(&w, "]");
        }
        gw_jw_lit(&w, "}");
    }
    char d[48];
    go_duration((gw_now_us() - t0) * 1000, d, sizeof(d));
    gw_jw_lit(&w, ",\"duration\":\"");
    gw_jw_lit(&w, d); /* digits, '.', unit letters and the micro sign: nothing to escape */
    gw_jw_lit(&w, "\"}");
    gw_respond_jw(rs, 200, &w);
out:
    free(es), free(src);
}

static void select_got(void *ud, int rc, const crdt_obj_t *const *objs, size_t n)
{
    select_ctx_t *c = ud;
    gw_exchange_t *x = c->x;
    const crdt_obj_t **tls = calloc(n ? n : 1, sizeof(*tls));
    if (rc < 0) {
        gw_respond_error(&x->rs, rc == CRDT_EUNAVAIL || rc == CRDT_EIO ? 503 : 500,
                         "reading the keys failed: %s", crdt_strerror(rc));
    } else if (!tls) {
        gw_respond_error(&x->rs, 500, "out of memory");
    } else {
        /* not a timeline: as empty as a key roshi never saw */
        for (size_t i = 0; i < n; i++)
            tls[i] = objs[i] && crdt_obj_type(objs[i]) == CRDT_TIMELINE ? objs[i] : NULL;
        select_render(c, tls);
    }
    free(tls);
    select_free(c);
    gw_http_reply(x);
}

static void roshi_select(gw_server_t *s, gw_exchange_t *x)
{
    const gw_request_t *rq = &x->rq;
    gw_response_t *rs = &x->rs;
    select_ctx_t *c = calloc(1, sizeof(*c));
    json_t *body = NULL;
    if (!c) {
        gw_respond_error(rs, 500, "out of memory");
        goto fail;
    }
    c->x = x;
    c->t0 = gw_now_us();
    bool offset_given = go_int(rq, "offset", 0, &c->offset);
    go_int(rq, "limit", ROSHI_DEFAULT_LIMIT, &c->limit);
    go_bool(rq, "coalesce", false, &c->coalesce);
    const char *start_s = gw_arg(rq, "start"), *stop_s = gw_arg(rq, "stop");
    bool start_given = start_s && *start_s, stop_given = stop_s && *stop_s;
    c->by_range = start_given || stop_given;

    body = gw_parse_body(rq, rs);
    if (!body)
        goto fail;
    if (!json_is_array(body)) {
        gw_respond_error(rs, 400, "expected a JSON array of base64 keys");
        goto fail;
    }
    if (offset_given && c->by_range) {
        gw_respond_error(rs, 400, "cannot specify both offset and start/stop");
        goto fail;
    }
    if (c->limit < 0) {
        gw_respond_error(rs, 400, "negative limit is invalid for %s select",
                         c->by_range ? "cursor-based" : "offset-based");
        goto fail;
    }
    if (c->offset < 0) {
        gw_respond_error(rs, 400, "negative offset is invalid");
        goto fail;
    }
    if (c->limit > ROSHI_MAX_LIMIT)
        c->limit = ROSHI_MAX_LIMIT; /* roshi has no cap; an unbounded response is not served here */
    c->start = (crdt_tl_entry_t){.score = DBL_MAX, .member = "", .member_len = 0};
    c->stop = (crdt_tl_entry_t){.score = 0, .member = "", .member_len = 0};
    if (start_given) {
        if (gw_cursor_parse(start_s, &c->start.score, &c->start_m, &c->start.member_len)) {
            gw_respond_error(rs, 400, "invalid cursor string (start)");
            goto fail;
        }
        c->start.member = c->start_m;
    }
    if (stop_given) {
        if (gw_cursor_parse(stop_s, &c->stop.score, &c->stop_m, &c->stop.member_len)) {
            gw_respond_error(rs, 400, "invalid cursor string (stop)");
            goto fail;
        }
        c->stop.member = c->stop_m;
    }

    /* Keys, deduplicated as roshi's map does. */
    size_t n = json_array_size(body);
    c->kb = calloc(n ? n : 1, sizeof(*c->kb));
    c->kl = calloc(n ? n : 1, sizeof(*c->kl));
    c->keys = calloc(n ? n : 1, sizeof(*c->keys));
    if (!c->kb || !c->kl || !c->keys) {
        gw_respond_error(rs, 500, "out of memory");
        goto fail;
    }
    for (size_t i = 0; i < n; i++) {
        char what[32];
        snprintf(what, sizeof(what), "[%zu]", i);
        uint8_t *k;
        size_t klen;
        gw_op_result_t r;
        if (gw_b64_field(json_array_get(body, i), what, s->cfg.max_key, &r, &k, &klen)) {
            gw_respond_error(rs, r.status, "%s", r.message);
            goto fail;
        }
        if (!gw_auth_http_key(x, GW_ACCESS_READ, k, klen, what)) {
            free(k);
            goto fail;
        }
        bool dup = false;
        for (size_t j = 0; j < c->nk && !dup; j++)
            dup = c->kl[j] == klen && !memcmp(c->kb[j], k, klen);
        if (dup) {
            free(k);
            continue;
        }
        c->kb[c->nk] = k;
        c->kl[c->nk] = klen;
        c->keys[c->nk] = (crdt_bytes_t){k, klen};
        c->nk++;
    }
    json_decref(body);
    crdt_store_get_many(s->store, c->keys, c->nk, select_got, c);
    return;
fail:
    json_decref(body);
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
    if (strcmp(rq->path, "/") != 0) {
        rs->ep = GW_EP_OTHER;
        gw_respond_error(rs, 404, "no such endpoint (the roshi API is served at /)");
        gw_http_reply(x);
        return;
    }
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
        rs->ep = GW_EP_OTHER;
        gw_respond_error(rs, 405, "method not allowed; the roshi API takes GET, POST, DELETE");
        gw_http_reply(x);
        break;
    }
}
