/* lwwreg.c - last-writer-wins register: an HLC timestamp and a binary-safe value */
#include <stdlib.h>

#include "crdt_json.h"
#include "crdt_private.h"

typedef struct lwwreg {
    crdt_obj_t obj;
    bool set;     /* false: the bottom, nothing ever written */
    bool cleared; /* set, and the latest write is a clear (a tombstone at ts, no value) */
    crdt_hlc_ts_t ts;
    uint8_t *val; /* NULL when len == 0 */
    size_t len;
} lwwreg_t;

/* Timestamps we accept: a real writer (node 1..CRDT_REPLICA_MAX) and an ms that JSON keeps exact
 * (<= INT64_MAX), so every state the mutators or decoders admit round-trips through both codecs. */
static bool ts_ok(const crdt_hlc_ts_t *ts)
{
    return crdt__replica_ok(ts->node) && ts->ms <= (uint64_t)INT64_MAX;
}

/* Whether (ts, cleared, val) beats what r holds. Equal timestamps fall back to a clear first,
 * then the bytewise greater value, so two replicas that somehow wrote different things under one
 * timestamp still agree: the order (ts, cleared, value) is total, which keeps merge a join. */
static bool wins(const lwwreg_t *r, const crdt_hlc_ts_t *ts, bool cleared, const void *val,
                 size_t len)
{
    if (!r->set)
        return true;
    int c = crdt_hlc_cmp(ts, &r->ts);
    if (c != 0)
        return c > 0;
    if (cleared != r->cleared)
        return cleared;
    return !cleared && crdt__bytes_cmp(val, len, r->val, r->len) > 0;
}

/* Replaces r's content with a clear at ts (cannot fail). */
static void assign_clear(lwwreg_t *r, const crdt_hlc_ts_t *ts)
{
    crdt__free(r->val);
    r->val = NULL;
    r->len = 0;
    r->ts = *ts;
    r->set = true;
    r->cleared = true;
}

/* Replaces r's content with a copy of (ts, val). 0 or CRDT_ENOMEM with r unchanged. val may point
 * into r's own buffer. */
static int assign(lwwreg_t *r, const crdt_hlc_ts_t *ts, const void *val, size_t len)
{
    uint8_t *copy = NULL;
    if (len) {
        copy = crdt__malloc(len);
        if (!copy)
            return CRDT_ENOMEM;
        memcpy(copy, val, len);
    }
    crdt__free(r->val);
    r->val = copy;
    r->len = len;
    r->ts = *ts;
    r->set = true;
    r->cleared = false;
    return 0;
}

static crdt_obj_t *lwwreg_create(void)
{
    lwwreg_t *r = crdt__calloc(1, sizeof(*r));
    if (!r)
        return NULL;
    r->obj.vt = &crdt__lwwreg_vt;
    return &r->obj;
}

static void lwwreg_destroy(crdt_obj_t *o)
{
    lwwreg_t *r = (lwwreg_t *)o;
    crdt__free(r->val);
    crdt__free(r);
}

static crdt_obj_t *lwwreg_clone(const crdt_obj_t *o)
{
    const lwwreg_t *src = (const lwwreg_t *)o;
    lwwreg_t *r = (lwwreg_t *)lwwreg_create();
    if (!r)
        return NULL;
    if (src->cleared)
        assign_clear(r, &src->ts);
    else if (src->set && assign(r, &src->ts, src->val, src->len) < 0) {
        crdt__free(r);
        return NULL;
    }
    return &r->obj;
}

static int lwwreg_merge(crdt_obj_t *dst, const crdt_obj_t *src)
{
    lwwreg_t *d = (lwwreg_t *)dst;
    const lwwreg_t *s = (const lwwreg_t *)src;
    if (!s->set || !wins(d, &s->ts, s->cleared, s->val, s->len))
        return 0;
    if (s->cleared) {
        assign_clear(d, &s->ts);
        return 1;
    }
    return assign(d, &s->ts, s->val, s->len) < 0 ? CRDT_ENOMEM : 1;
}

static bool lwwreg_equal(const crdt_obj_t *a, const crdt_obj_t *b)
{
    const lwwreg_t *x = (const lwwreg_t *)a, *y = (const lwwreg_t *)b;
    if (x->set != y->set || x->cleared != y->cleared)
        return false;
    return !x->set || (crdt_hlc_cmp(&x->ts, &y->ts) == 0 &&
                       crdt__bytes_cmp(x->val, x->len, y->val, y->len) == 0);
}

static bool lwwreg_is_empty(const crdt_obj_t *o)
{
    return !((const lwwreg_t *)o)->set;
}

static void lwwreg_stats(const crdt_obj_t *o, crdt_stats_t *st)
{
    const lwwreg_t *r = (const lwwreg_t *)o;
    st->entries = r->set && !r->cleared ? 1 : 0;
    st->tombstones = r->cleared ? 1 : 0;
    st->memory = sizeof(*r) + r->len;
}

/* u8 state: 0 unset; 1 set: hlc (varint ms, varint logical, varint node), blob value; 2 cleared:
 * hlc only. */
static void lwwreg_encode(const crdt_obj_t *o, crdt__writer_t *w)
{
    const lwwreg_t *r = (const lwwreg_t *)o;
    crdt__wr_u8(w, r->cleared ? 2 : r->set ? 1 : 0);
    if (r->set) {
        crdt__wr_hlc(w, &r->ts);
        if (!r->cleared)
            crdt__wr_blob(w, r->val, r->len);
    }
}

static crdt_obj_t *lwwreg_decode(crdt__reader_t *r)
{
    uint8_t set;
    crdt_hlc_ts_t ts;
    const uint8_t *val = NULL;
    size_t len = 0;
    if (crdt__rd_u8(r, &set) < 0)
        return NULL;
    if (set > 2) {
        r->pos--;
        crdt__fail(r, "lwwreg: state byte %u is none of 0 (unset), 1 (set), 2 (cleared)", set);
        return NULL;
    }
    if (set) {
        size_t at = r->pos;
        if (crdt__rd_hlc(r, &ts) < 0)
            return NULL;
        if (!ts_ok(&ts)) {
            r->pos = at;
            crdt__fail(r, "lwwreg: timestamp %s",
                       ts.node == 0 ? "node 0 is reserved" : "ms beyond INT64_MAX");
            return NULL;
        }
        if (set == 1 && crdt__rd_blob(r, &val, &len) < 0)
            return NULL;
    }
    lwwreg_t *reg = (lwwreg_t *)lwwreg_create();
    if (reg && set == 2)
        assign_clear(reg, &ts);
    if (!reg || (set == 1 && assign(reg, &ts, val, len) < 0)) {
        crdt__free(reg);
        crdt__nomem(r);
        return NULL;
    }
    return &reg->obj;
}

/* null when unset, {"ts":{"ms","c","node"},"cleared":true} when cleared, else
 * {"ts":{"ms","c","node"},"value":bytes} (bytes: crdt_json_bytes). */
static json_t *lwwreg_to_json(const crdt_obj_t *o)
{
    const lwwreg_t *r = (const lwwreg_t *)o;
    if (!r->set)
        return json_null();
    json_t *ts = crdt_hlc_to_json(&r->ts);
    if (ts && r->cleared)
        return json_pack("{s:o,s:b}", "ts", ts, "cleared", 1);
    json_t *val = ts ? crdt__json_blob(r->val, r->len) : NULL;
    if (!val) {
        json_decref(ts);
        return NULL;
    }
    return json_pack("{s:o,s:o}", "ts", ts, "value", val);
}

static crdt_obj_t *lwwreg_from_json(const json_t *state, crdt_error_t *err)
{
    if (json_is_null(state))
        return lwwreg_create();
    if (!json_is_object(state))
        return crdt__json_fail(err, "state: expected null or an object {\"ts\",\"value\"}");
    crdt_hlc_ts_t ts;
    if (crdt__json_get_hlc(json_object_get(state, "ts"), "ts", &ts, err) < 0)
        return NULL;
    if (!ts_ok(&ts))
        return crdt__json_fail(err, "ts.node: must be 1..%llu",
                               (unsigned long long)CRDT_REPLICA_MAX);
    const json_t *cl = json_object_get(state, "cleared");
    if (cl) {
        if (!json_is_true(cl))
            return crdt__json_fail(err, "cleared: expected true (absent for a register that "
                                        "holds a value)");
        if (json_object_size(state) != 2)
            return crdt__json_fail(err, "state: a cleared register has only ts and cleared");
        lwwreg_t *c = (lwwreg_t *)lwwreg_create();
        if (c)
            assign_clear(c, &ts);
        return c ? &c->obj : NULL;
    }
    uint8_t *val = NULL;
    size_t len = 0;
    if (crdt__json_get_blob(json_object_get(state, "value"), "value", &val, &len, err) < 0)
        return NULL;
    if (json_object_size(state) != 2) {
        crdt__free(val);
        return crdt__json_fail(err, "state: unexpected fields beside ts and value");
    }
    lwwreg_t *r = (lwwreg_t *)lwwreg_create();
    if (r) {
        r->set = true;
        r->ts = ts;
        r->len = len;
        r->val = len ? val : NULL;
        if (!len)
            crdt__free(val);
    } else {
        crdt__free(val);
    }
    return r ? &r->obj : NULL;
}

static int lwwreg_max_ts(const crdt_obj_t *o, crdt_hlc_ts_t *out)
{
    const lwwreg_t *r = (const lwwreg_t *)o;
    if (!r->set)
        return 0;
    *out = r->ts;
    return 1;
}

const crdt__vtable_t crdt__lwwreg_vt = {
    .type = CRDT_LWWREG,
    .name = "lwwreg",
    .create = lwwreg_create,
    .destroy = lwwreg_destroy,
    .clone = lwwreg_clone,
    .merge = lwwreg_merge,
    .equal = lwwreg_equal,
    .is_empty = lwwreg_is_empty,
    .stats = lwwreg_stats,
    .encode = lwwreg_encode,
    .decode = lwwreg_decode,
    .to_json = lwwreg_to_json,
    .from_json = lwwreg_from_json,
    .max_ts = lwwreg_max_ts,
};

int crdt_lwwreg_set(crdt_obj_t *o, const crdt_hlc_ts_t *ts, const void *val, size_t len,
                    crdt_obj_t **delta)
{
    if (delta)
        *delta = NULL;
    if (!o || o->vt != &crdt__lwwreg_vt)
        return CRDT_ETYPE;
    if (!ts || !ts_ok(ts) || len > CRDT_MAX_BLOB || (!val && len))
        return CRDT_EINVAL;
    lwwreg_t *r = (lwwreg_t *)o;
    if (!wins(r, ts, false, val, len))
        return 0;
    lwwreg_t *d = NULL;
    if (delta) {
        d = (lwwreg_t *)lwwreg_create();
        if (!d || assign(d, ts, val, len) < 0) {
            crdt__free(d);
            return CRDT_ENOMEM;
        }
    }
    if (assign(r, ts, val, len) < 0) {
        if (d)
            lwwreg_destroy(&d->obj);
        return CRDT_ENOMEM;
    }
    if (delta)
        *delta = &d->obj;
    return 1;
}

int crdt_lwwreg_clear(crdt_obj_t *o, const crdt_hlc_ts_t *ts, crdt_obj_t **delta)
{
    if (delta)
        *delta = NULL;
    if (!o || o->vt != &crdt__lwwreg_vt)
        return CRDT_ETYPE;
    if (!ts || !ts_ok(ts))
        return CRDT_EINVAL;
    lwwreg_t *r = (lwwreg_t *)o;
    if (!wins(r, ts, true, NULL, 0))
        return 0;
    if (delta) {
        lwwreg_t *d = (lwwreg_t *)lwwreg_create();
        if (!d)
            return CRDT_ENOMEM;
        assign_clear(d, ts);
        *delta = &d->obj;
    }
    assign_clear(r, ts);
    return 1;
}

int crdt_lwwreg_cleared(const crdt_obj_t *o)
{
    if (!o || o->vt != &crdt__lwwreg_vt)
        return CRDT_ETYPE;
    return ((const lwwreg_t *)o)->cleared ? 1 : 0;
}

int crdt_lwwreg_get(const crdt_obj_t *o, const void **val, size_t *len, crdt_hlc_ts_t *ts)
{
    if (!o || o->vt != &crdt__lwwreg_vt)
        return CRDT_ETYPE;
    const lwwreg_t *r = (const lwwreg_t *)o;
    if (!r->set || r->cleared) {
        if (val)
            *val = NULL;
        if (len)
            *len = 0;
        if (ts)
            *ts = r->set ? r->ts : (crdt_hlc_ts_t){0, 0, 0};
        return 0;
    }
    if (val)
        *val = r->val ? (const void *)r->val : (const void *)"";
    if (len)
        *len = r->len;
    if (ts)
        *ts = r->ts;
    return 1;
}
