/* roshi.c - roshi-server's HTTP API (insert, delete, select) over crdtd's timelines */
#include <float.h>
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "crdt_json.h"
#include "gateway.h"

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

int gw_cursor_parse(const char *s, double *score, uint8_t **member, size_t *mlen);

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

static void free_tuples(tuple_t *t, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        free(t[i].key);
        free(t[i].member);
    }
    free(t);
}

typedef struct tl_op {
    const tuple_t *t;
    bool add;
} tl_op_t;

static int tl_mutate(crdt_obj_t *obj, void *ud, crdt_obj_t **delta)
{
    const tl_op_t *op = ud;
    return op->add ? crdt_timeline_add(obj, op->t->member, op->t->mlen, op->t->score, delta)
                   : crdt_timeline_remove(obj, op->t->member, op->t->mlen, op->t->score, delta);
}

static void roshi_write(gw_server_t *s, const gw_request_t *rq, gw_response_t *rs, bool add)
{
    uint64_t t0 = gw_now_us();
    json_t *body = gw_parse_body(rq, rs);
    if (!body)
        return;
    tuple_t *ts = NULL;
    size_t n = 0;
    if (!json_is_array(body)) {
        gw_respond_error(rs, 400, "expected a JSON array of {\"key\",\"score\",\"member\"}");
        goto out;
    }
    n = json_array_size(body);
    ts = calloc(n ? n : 1, sizeof(*ts));
    if (!ts) {
        gw_respond_error(rs, 500, "out of memory");
        goto out;
    }
    /* Validate everything before applying anything, so a bad tuple leaves no partial write. */
    for (size_t i = 0; i < n; i++) {
        const json_t *el = json_array_get(body, i);
        char what[48];
        if (!json_is_object(el)) {
            gw_respond_error(rs, 400, "[%zu]: expected an object {\"key\",\"score\",\"member\"}",
                             i);
            goto out;
        }
        snprintf(what, sizeof(what), "[%zu].key", i);
        if (gw_b64_field(json_object_get(el, "key"), what, s->cfg.max_key, rs, &ts[i].key,
                         &ts[i].klen))
            goto out;
        if (ts[i].klen == 0) {
            gw_respond_error(rs, 400, "[%zu].key: empty key", i);
            goto out;
        }
        snprintf(what, sizeof(what), "[%zu].member", i);
        if (gw_b64_field(json_object_get(el, "member"), what, s->cfg.max_member, rs, &ts[i].member,
                         &ts[i].mlen))
            goto out;
        const json_t *sc = json_object_get(el, "score");
        if (!json_is_number(sc) || !isfinite(json_number_value(sc))) {
            gw_respond_error(rs, 400, "[%zu].score: expected a finite number", i);
            goto out;
        }
        ts[i].score = json_number_value(sc);
        const crdt_obj_t *o = crdt_replica_get(s->replica, ts[i].key, ts[i].klen);
        if (o && crdt_obj_type(o) != CRDT_TIMELINE) {
            gw_respond_error(rs, 409, "[%zu].key holds type %s, not timeline", i,
                             crdt_type_name(crdt_obj_type(o)));
            goto out;
        }
    }
    uint64_t last = 0, changed = 0, ta = gw_now_us();
    int rc = 0;
    for (size_t i = 0; i < n; i++) {
        tl_op_t op = {&ts[i], add};
        uint64_t seq = 0;
        rc = crdt_replica_mutate(s->replica, ts[i].key, ts[i].klen, CRDT_TIMELINE, tl_mutate, &op,
                                 &seq);
        if (rc < 0)
            break;
        if (rc > 0) {
            changed++;
            last = seq;
        }
    }
    gw_metrics_apply(&s->metrics, (double)(gw_now_us() - ta) / 1e6);
    if (rc < 0) {
        gw_respond_error(rs, rc == CRDT_EIO ? 503 : 500, "%s failed after %" PRIu64 " applied: %s",
                         add ? "insert" : "delete", changed, crdt_strerror(rc));
    } else {
        json_t *j = json_object();
        json_object_set_new_nocheck(j, add ? "inserted" : "deleted",
                                    json_integer((json_int_t)changed));
        json_object_set_new_nocheck(j, "duration", duration_json(t0));
        gw_respond_json(rs, 200, j);
    }
    if (last) {
        rs->wait_seq = last;
        gw_http_schedule_flush(s);
    }
out:
    free_tuples(ts, n);
    json_decref(body);
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

static void roshi_select(gw_server_t *s, const gw_request_t *rq, gw_response_t *rs)
{
    uint64_t t0 = gw_now_us();
    long long offset, limit;
    bool coalesce;
    bool offset_given = go_int(rq, "offset", 0, &offset);
    go_int(rq, "limit", ROSHI_DEFAULT_LIMIT, &limit);
    go_bool(rq, "coalesce", false, &coalesce);
    const char *start_s = gw_arg(rq, "start"), *stop_s = gw_arg(rq, "stop");
    bool start_given = start_s && *start_s, stop_given = stop_s && *stop_s;
    bool by_range = start_given || stop_given;

    json_t *body = gw_parse_body(rq, rs);
    if (!body)
        return;
    size_t nk = 0;
    uint8_t **kb = NULL;
    size_t *kl = NULL;
    const crdt_obj_t **tls = NULL;
    crdt_tl_entry_t *es = NULL;
    size_t *src = NULL;
    uint8_t *start_m = NULL, *stop_m = NULL;

    if (!json_is_array(body)) {
        gw_respond_error(rs, 400, "expected a JSON array of base64 keys");
        goto out;
    }
    if (offset_given && by_range) {
        gw_respond_error(rs, 400, "cannot specify both offset and start/stop");
        goto out;
    }
    if (limit < 0) {
        gw_respond_error(rs, 400, "negative limit is invalid for %s select",
                         by_range ? "cursor-based" : "offset-based");
        goto out;
    }
    if (offset < 0) {
        gw_respond_error(rs, 400, "negative offset is invalid");
        goto out;
    }
    if (limit > ROSHI_MAX_LIMIT)
        limit = ROSHI_MAX_LIMIT; /* roshi has no cap; an unbounded response is not served here */
    crdt_tl_entry_t start = {.score = DBL_MAX, .member = "", .member_len = 0};
    crdt_tl_entry_t stop = {.score = 0, .member = "", .member_len = 0};
    if (start_given) {
        if (gw_cursor_parse(start_s, &start.score, &start_m, &start.member_len)) {
            gw_respond_error(rs, 400, "invalid cursor string (start)");
            goto out;
        }
        start.member = start_m;
    }
    if (stop_given) {
        if (gw_cursor_parse(stop_s, &stop.score, &stop_m, &stop.member_len)) {
            gw_respond_error(rs, 400, "invalid cursor string (stop)");
            goto out;
        }
        stop.member = stop_m;
    }

    /* Keys, deduplicated as roshi's map does. */
    size_t n = json_array_size(body);
    kb = calloc(n ? n : 1, sizeof(*kb));
    kl = calloc(n ? n : 1, sizeof(*kl));
    tls = calloc(n ? n : 1, sizeof(*tls));
    if (!kb || !kl || !tls) {
        gw_respond_error(rs, 500, "out of memory");
        goto out;
    }
    for (size_t i = 0; i < n; i++) {
        char what[32];
        snprintf(what, sizeof(what), "[%zu]", i);
        uint8_t *k;
        size_t klen;
        if (gw_b64_field(json_array_get(body, i), what, s->cfg.max_key, rs, &k, &klen))
            goto out;
        bool dup = false;
        for (size_t j = 0; j < nk && !dup; j++)
            dup = kl[j] == klen && !memcmp(kb[j], k, klen);
        if (dup) {
            free(k);
            continue;
        }
        const crdt_obj_t *o = klen ? crdt_replica_get(s->replica, k, klen) : NULL;
        if (o && crdt_obj_type(o) != CRDT_TIMELINE)
            o = NULL; /* not a timeline: as empty as a key roshi never saw */
        kb[nk] = k;
        kl[nk] = klen;
        tls[nk] = o;
        nk++;
    }

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
    json_decref(body);
    for (size_t i = 0; i < nk; i++)
        free(kb[i]);
    free(kb), free(kl), free(tls), free(es), free(src), free(start_m), free(stop_m);
}

void gw_roshi_handle(gw_server_t *s, const gw_request_t *rq, gw_response_t *rs)
{
    if (!strcmp(rq->path, "/metrics") && rq->method == GW_GET) {
        rs->ep = GW_EP_METRICS;
        gw_metrics_render(s, rs);
        return;
    }
    if (!strcmp(rq->path, "/healthz") && rq->method == GW_GET) {
        rs->ep = GW_EP_HEALTHZ;
        gw_healthz(s, rs);
        return;
    }
    if (strcmp(rq->path, "/") != 0) {
        rs->ep = GW_EP_OTHER;
        gw_respond_error(rs, 404, "no such endpoint (the roshi API is served at /)");
        return;
    }
    switch (rq->method) {
    case GW_GET:
        rs->ep = GW_EP_ROSHI_SELECT;
        roshi_select(s, rq, rs);
        break;
    case GW_POST:
        rs->ep = GW_EP_ROSHI_INSERT;
        roshi_write(s, rq, rs, true);
        break;
    case GW_DELETE:
        rs->ep = GW_EP_ROSHI_DELETE;
        roshi_write(s, rq, rs, false);
        break;
    default:
        rs->ep = GW_EP_OTHER;
        gw_respond_error(rs, 405, "method not allowed; the roshi API takes GET, POST, DELETE");
        break;
    }
}
