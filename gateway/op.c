/* op.c - the one op path: REST-shaped op objects -> crdt_mut_t -> the store */
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "crdt_json.h"
#include "op.h"
#include "util.h"

/*
 * An op object ({"type":..,"op":..,...}, docs/http-api.md) arrives from POST /v1/keys/{key} and
 * from crdt.v1's apply. It is validated and parsed into crdt_mut_t values that own nothing; the
 * decoded member bytes they point at live in the op's run (op_run_t) until its writes completed.
 * The parse needs the key's type when the op does not name one, so a store get comes first; the
 * op is copied then (it is borrowed for the gw_apply_op call only). The writes then run one after
 * the other through gw_run_writes, each issued from the completion of the one before, so a store
 * that completes later sees the same sequence as the embedded one.
 */

typedef struct op_item {
    uint8_t *m; /* member or value, owned */
    size_t mlen;
    double score;
} op_item_t;

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
    r->rc = -1;
    r->status = status;
    r->code = code;
    return -1;
}

static int op_store_error(gw_server_t *s, gw_op_result_t *r, int rc, const char *what)
{
    switch (rc) {
    case CRDT_EUNAVAIL: {
        /* a remote store (Redis) down or a slot without its primary: passes, retry later */
        const char *why = crdt_store_last_error(s->store);
        return op_fail(r, 503, "storage", "%s: the store is unavailable: %s", what,
                       why ? why : "no reply");
    }
    case CRDT_ETYPE: return op_fail(r, 409, "wrong_type", "%s: the key holds another type", what);
    case CRDT_ENOTSUP:
        return op_fail(r, 409, "wrong_type", "%s: a gcounter only grows: it cannot be deleted",
                       what);
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

int gw_b64_field(const json_t *v, const char *what, size_t max, gw_op_result_t *r, uint8_t **out,
                 size_t *outlen)
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

int gw_bytes_field(const json_t *v, const char *what, size_t max, gw_op_result_t *r,
                   uint8_t **out, size_t *outlen)
{
    const char *why = NULL;
    int rc = crdt_json_get_bytes(v, max, out, outlen, &why);
    if (rc == CRDT_ENOMEM)
        return op_fail(r, 500, "internal", "out of memory");
    if (rc < 0) {
        if (!v)
            return op_fail(r, 400, "bad_request", "%s: missing (a string, or {\"base64\":..})",
                           what);
        if (!strcmp(why, "longer than the limit"))
            return op_fail(r, 400, "bad_request", "%s: longer than the limit of %zu bytes", what,
                           max);
        return op_fail(r, 400, "bad_request", "%s: %s", what, why);
    }
    return 0;
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
        if (gw_bytes_field(m, what, s->cfg.max_member, r, &items[i].m, &items[i].mlen))
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

bool gw_key_reserved(const void *key, size_t klen)
{
    return crdt_key_internal(key, klen); /* one definition: the replica's (replica.h) */
}

/* ---- a run of writes ------------------------------------------------------------------------ */

typedef struct writes_run {
    gw_server_t *s;
    const gw_write_t *w;
    size_t n, next;
    size_t applied;
    uint64_t seq, t0;
    int rc;
    bool issuing, pending;
    size_t inflight; /* a pipelined run: writes issued and not completed */
    gw_writes_done_cb done;
    void *ud;
} writes_run_t;

static void writes_issue(writes_run_t *wr);

static void writes_finish(writes_run_t *wr)
{
    gw_server_t *s = wr->s;
    gw_metrics_apply(&s->metrics, (double)(gw_now_us() - wr->t0) / 1e6);
    gw_writes_done_cb done = wr->done;
    void *ud = wr->ud;
    int rc = wr->rc;
    size_t applied = wr->applied;
    uint64_t seq = wr->seq;
    free(wr);
    done(s, rc, applied, seq, ud);
}

static void write_cb(void *ud, int rc, uint64_t seq)
{
    writes_run_t *wr = ud;
    wr->pending = false;
    if (rc < 0) {
        wr->rc = rc;
    } else if (rc > 0) {
        wr->applied++;
        wr->seq = seq;
    }
    if (wr->issuing)
        return; /* completed inside the store call: writes_issue goes on */
    if (wr->rc < 0 || wr->next == wr->n)
        writes_finish(wr);
    else
        writes_issue(wr);
}

/* A store that pipelines (over Redis): every write of the run is issued at once, so one request
 * costs one round trip rather than one per write; the run ends with the last completion. A write
 * that fails does not stop the others (they are in flight already): rc is the first error, applied
 * counts the writes that changed a key, seq the highest seq. */
static void piped_cb(void *ud, int rc, uint64_t seq)
{
    writes_run_t *wr = ud;
    if (rc < 0 && wr->rc == 0)
        wr->rc = rc;
    else if (rc > 0) {
        wr->applied++;
        if (seq > wr->seq)
            wr->seq = seq;
    }
    if (--wr->inflight == 0 && !wr->issuing)
        writes_finish(wr);
}

static void writes_issue_piped(writes_run_t *wr)
{
    crdt_store_t *st = wr->s->store;
    wr->issuing = true;
    wr->inflight = 1; /* held while issuing */
    for (size_t i = 0; i < wr->n; i++) {
        const gw_write_t *w = &wr->w[i];
        wr->inflight++;
        if (w->m.kind == CRDT_MUT_MERGE)
            crdt_store_apply(st, w->key, w->klen, w->m.state, CRDT_ORIGIN_LOCAL, piped_cb, wr);
        else
            crdt_store_write(st, w->key, w->klen, &w->m, piped_cb, wr);
    }
    wr->issuing = false;
    if (--wr->inflight == 0)
        writes_finish(wr);
}

/* Issues writes while they complete at once; returns when one is left in flight (its completion
 * continues) or all are done. A loop rather than recursion: a batch may hold thousands of ops. */
static void writes_issue(writes_run_t *wr)
{
    crdt_store_t *st = wr->s->store;
    if (st->ops->pipelined && wr->next == 0 && wr->n > 1) {
        writes_issue_piped(wr);
        return;
    }
    while (wr->next < wr->n && wr->rc == 0) {
        const gw_write_t *w = &wr->w[wr->next++];
        wr->pending = true;
        wr->issuing = true;
        if (w->m.kind == CRDT_MUT_MERGE)
            crdt_store_apply(st, w->key, w->klen, w->m.state, CRDT_ORIGIN_LOCAL, write_cb, wr);
        else
            crdt_store_write(st, w->key, w->klen, &w->m, write_cb, wr);
        wr->issuing = false;
        if (wr->pending)
            return;
    }
    writes_finish(wr);
}

void gw_run_writes(gw_server_t *s, const gw_write_t *w, size_t n, gw_writes_done_cb done, void *ud)
{
    writes_run_t *wr = malloc(sizeof(*wr));
    if (!wr) {
        done(s, CRDT_ENOMEM, 0, 0, ud);
        return;
    }
    *wr = (writes_run_t){.s = s, .w = w, .n = n, .t0 = gw_now_us(), .done = done, .ud = ud};
    writes_issue(wr);
}

/* ---- an op ---------------------------------------------------------------------------------- */

typedef struct op_run {
    gw_server_t *s;
    uint8_t *key;
    size_t klen;
    char op[16]; /* the op's name (valid names are short; a longer one is refused anyway) */
    bool type_given;
    crdt_type_t type;
    json_t *copy; /* the op, kept for the parse while the key's type is fetched */
    op_item_t *items;
    size_t nitems;
    gw_write_t *writes;
    size_t nwrites;
    crdt_obj_t *state; /* merge */
    gw_op_result_t r;
    bool parse_failed; /* r holds the parse error, reported unless the key's type conflicts */
    gw_op_done_cb done;
    void *ud;
    /* an op of one item (most are) needs no allocation for it: */
    op_item_t one_item;
    gw_write_t one_write;
    uint8_t keybuf[]; /* the key's copy */
} op_run_t;

static void op_finish(op_run_t *o)
{
    gw_server_t *s = o->s;
    gw_op_done_cb done = o->done;
    void *ud = o->ud;
    gw_op_result_t r = o->r;
    if (o->items == &o->one_item)
        free(o->one_item.m);
    else
        free_items(o->items, o->nitems);
    if (o->writes != &o->one_write)
        free(o->writes);
    crdt_obj_free(o->state);
    json_decref(o->copy);
    free(o);
    done(s, &r, ud);
}

/* {"op":"merge","state":{"type":..,"state":..}} or {"op":"merge","binary":"<base64>"}. */
static int parse_merge(op_run_t *o, const json_t *body)
{
    gw_op_result_t *r = &o->r;
    const json_t *st = json_object_get(body, "state");
    const json_t *bin = json_object_get(body, "binary");
    crdt_error_t err = {0};
    crdt_obj_t *obj = NULL;
    if (st && !bin) {
        obj = crdt_obj_from_json(st, &err);
    } else if (bin && !st) {
        uint8_t *raw;
        size_t rlen;
        if (gw_b64_field(bin, "binary", o->s->cfg.max_body, r, &raw, &rlen))
            return -1;
        obj = crdt_obj_decode(raw, rlen, &err);
        free(raw);
    } else {
        return op_fail(r, 400, "bad_request",
                       "merge needs exactly one of \"state\" and \"binary\"");
    }
    if (!obj) {
        if (err.code == CRDT_ENOMEM)
            return op_fail(r, 500, "internal", "out of memory");
        return op_fail(r, 400, "bad_request", "invalid %s state at %zu: %s", st ? "JSON" : "binary",
                       err.offset, err.text[0] ? err.text : "decode error");
    }
    const json_t *type = json_object_get(body, "type");
    if (type && (!json_is_string(type) ||
                 strcmp(json_string_value(type), crdt_type_name(crdt_obj_type(obj))) != 0)) {
        crdt_obj_free(obj);
        return op_fail(r, 400, "bad_request", "\"type\" does not match the state's type");
    }
    o->state = obj;
    o->nwrites = 1;
    o->writes = &o->one_write;
    o->writes[0] = (gw_write_t){
        o->key, o->klen, {.type = crdt_obj_type(obj), .kind = CRDT_MUT_MERGE, .state = obj}};
    return 0;
}

/* {"op":"delete"}: one CRDT_MUT_DELETE of the key's type (docs/http-api.md, "Deleting a key"). */
static int parse_delete(op_run_t *o)
{
    if (o->type == CRDT_GCOUNTER)
        return op_fail(&o->r, 409, "wrong_type",
                       "a gcounter only grows: it cannot be deleted (use a pncounter)");
    o->items = &o->one_item;
    o->nitems = 1;
    o->writes = &o->one_write;
    o->nwrites = 1;
    o->writes[0] = (gw_write_t){o->key, o->klen, {.type = o->type, .kind = CRDT_MUT_DELETE}};
    return 0;
}

/* Parses the op of a key of type o->type into o->writes (and the bytes into o->items). */
static int parse_op(op_run_t *o, const json_t *body)
{
    gw_server_t *s = o->s;
    gw_op_result_t *r = &o->r;
    crdt_type_t type = o->type;
    const char *op = o->op;
    bool is_add = !strcmp(op, "add"), is_remove = !strcmp(op, "remove");
    crdt_mut_t m = {.type = type};
    if (!strcmp(op, "delete"))
        return parse_delete(o);
    switch (type) {
    case CRDT_GCOUNTER:
    case CRDT_PNCOUNTER: {
        bool incr = !strcmp(op, "incr"), decr = !strcmp(op, "decr");
        if (!incr && !decr)
            return op_fail(r, 400, "unknown_op", "%s ops: incr, decr%s", crdt_type_name(type),
                           type == CRDT_PNCOUNTER ? ", delete" : "");
        int64_t by = 0;
        if (int_field(body, "by", 1, r, &by))
            return -1;
        if (type == CRDT_GCOUNTER) {
            if (decr || by < 0)
                return op_fail(r, 400, decr ? "unknown_op" : "bad_request",
                               "a gcounter only grows: incr by a non-negative \"by\"");
        } else {
            if (decr && by == INT64_MIN)
                return op_fail(r, 400, "bad_request", "\"by\": out of range");
            by = decr ? -by : by;
        }
        m.kind = CRDT_MUT_INCR;
        m.n = by;
        o->items = &o->one_item;
        o->nitems = 1;
        break;
    }
    case CRDT_LWWREG:
        if (strcmp(op, "set") != 0)
            return op_fail(r, 400, "unknown_op", "lwwreg ops: set, delete");
        o->items = &o->one_item;
        o->nitems = 1;
        if (gw_bytes_field(json_object_get(body, "value"), "value", s->cfg.max_member, r,
                         &o->items[0].m, &o->items[0].mlen))
            return -1;
        m.kind = CRDT_MUT_SET;
        break;
    case CRDT_LWWSET:
    case CRDT_ORSET:
    case CRDT_TIMELINE:
        if (!is_add && !is_remove)
            return op_fail(r, 400, "unknown_op", "%s ops: add, remove, delete",
                           crdt_type_name(type));
        if (collect_items(s, body, type == CRDT_TIMELINE, r, &o->items, &o->nitems))
            return -1;
        m.kind = is_add ? CRDT_MUT_ADD : CRDT_MUT_REMOVE;
        break;
    }
    if (!o->items)
        return op_fail(r, 500, "internal", "out of memory");
    o->writes = o->nitems == 1 ? &o->one_write : malloc(o->nitems * sizeof(*o->writes));
    if (!o->writes)
        return op_fail(r, 500, "internal", "out of memory");
    /* LWW writes carry no timestamp (ts.ms 0): the store stamps each with its clock */
    for (size_t i = 0; i < o->nitems; i++) {
        o->writes[i] = (gw_write_t){o->key, o->klen, m};
        o->writes[i].m.bytes = o->items[i].m;
        o->writes[i].m.len = o->items[i].mlen;
        o->writes[i].m.score = o->items[i].score;
    }
    o->nwrites = o->nitems;
    return 0;
}

static void op_written(gw_server_t *s, int rc, size_t applied, uint64_t seq, void *ud)
{
    (void)s;
    op_run_t *o = ud;
    o->r.ops = o->nwrites;
    o->r.applied = applied;
    o->r.seq = seq;
    /* only a storage failure or memory can stop a validated batch midway (or, for a merge, a key
     * of another type): r.applied and r.seq say what was done before */
    if (rc < 0)
        op_store_error(s, &o->r, rc, o->op);
    op_finish(o);
}

static void op_got_type(void *ud, int rc, const crdt_obj_t *cur)
{
    op_run_t *o = ud;
    if (rc < 0) {
        op_store_error(o->s, &o->r, rc, o->op);
        op_finish(o);
        return;
    }
    if (o->type_given) {
        /* the key's type conflicts: that is the answer, whatever else is wrong with the op */
        if (cur && crdt_obj_type(cur) != o->type) {
            op_fail(&o->r, 409, "wrong_type", "the key holds type %s, not %s",
                    crdt_type_name(crdt_obj_type(cur)), crdt_type_name(o->type));
            op_finish(o);
            return;
        }
        if (o->parse_failed) {
            op_finish(o);
            return;
        }
    }
    if (!strcmp(o->op, "delete") && (!cur || !crdt_obj_is_live(cur))) {
        /* nothing this node sees to remove: a no-op, which REST answers with 404 */
        o->r.status = 404;
        o->r.ops = 1;
        snprintf(o->r.message, sizeof(o->r.message), "no such key");
        op_finish(o);
        return;
    }
    if (!o->type_given) {
        if (!cur) {
            op_fail(&o->r, 400, "bad_request", "\"type\" is needed to create a key");
            op_finish(o);
            return;
        }
        o->type = crdt_obj_type(cur);
        if (parse_op(o, o->copy) < 0) {
            op_finish(o);
            return;
        }
    }
    gw_run_writes(o->s, o->writes, o->nwrites, op_written, o);
}

void gw_apply_op(gw_server_t *s, const uint8_t *key, size_t klen, const json_t *body,
                 gw_op_done_cb done, void *ud)
{
    op_run_t *o = malloc(sizeof(*o) + klen);
    if (!o) {
        gw_op_result_t r = {.rc = -1, .status = 500, .code = "internal"};
        snprintf(r.message, sizeof(r.message), "out of memory");
        done(s, &r, ud);
        return;
    }
    *o = (op_run_t){.s = s, .key = o->keybuf, .klen = klen, .done = done, .ud = ud};
    memcpy(o->keybuf, key, klen);
    o->r.status = 200;
    gw_op_result_t *r = &o->r;
    if (gw_key_reserved(key, klen)) {
        op_fail(r, 400, "bad_request",
                "keys starting with the bytes 0x00 'c' '/' are reserved for crdtd");
        op_finish(o);
        return;
    }
    if (!json_is_object(body)) {
        op_fail(r, 400, "bad_request", "expected a JSON object {\"type\":..,\"op\":..}");
        op_finish(o);
        return;
    }
    const json_t *opv = json_object_get(body, "op");
    if (!json_is_string(opv)) {
        op_fail(r, 400, "bad_request", "\"op\": expected a string");
        op_finish(o);
        return;
    }
    /* up to a NUL, as the op name always read (strcmp) */
    size_t oplen = strnlen(json_string_value(opv), sizeof(o->op));
    if (oplen < sizeof(o->op))
        memcpy(o->op, json_string_value(opv), oplen + 1);
    else
        memcpy(o->op, "?", 2); /* no such op: refused by the parse */
    if (!strcmp(o->op, "merge")) {
        if (parse_merge(o, body) < 0) {
            op_finish(o);
            return;
        }
        gw_run_writes(s, o->writes, o->nwrites, op_written, o);
        return;
    }

    /* The type: given, or the existing key's (which the store has to tell first). */
    const json_t *tv = json_object_get(body, "type");
    if (tv) {
        if (!json_is_string(tv) || crdt_type_from_name(json_string_value(tv), &o->type) < 0) {
            op_fail(r, 400, "unknown_type",
                    "\"type\": expected one of gcounter, pncounter, lwwreg, lwwset, orset, "
                    "timeline");
            op_finish(o);
            return;
        }
        o->type_given = true;
        o->parse_failed = parse_op(o, body) < 0;
    } else if (!(o->copy = json_deep_copy(body))) {
        op_fail(r, 500, "internal", "out of memory");
        op_finish(o);
        return;
    }
    crdt_store_get(s->store, o->key, o->klen, op_got_type, o);
}
