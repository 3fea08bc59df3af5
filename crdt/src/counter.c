/* counter.c - G-Counter and PN-Counter: per-replica slots joined by per-slot max */
#include <stdio.h>
#include <stdlib.h>

#include "crdt_private.h"

/* One replica's contribution. Slots are kept sorted by replica id with no zero values, so equal
 * states have identical arrays and the encoding is a straight walk. */
typedef struct slot {
    uint64_t replica;
    uint64_t value; /* 1 .. INT64_MAX */
} slot_t;

typedef struct slots {
    slot_t *v;
    size_t n;
    size_t cap;
} slots_t;

typedef struct gcounter {
    crdt_obj_t obj;
    slots_t s;
} gcounter_t;

/* A PN-Counter is two G-Counters: increments in p, decrements in n; value = sum(p) - sum(n). */
typedef struct pncounter {
    crdt_obj_t obj;
    slots_t p;
    slots_t n;
} pncounter_t;

typedef unsigned __int128 u128;

/* ---- slot arrays ---------------------------------------------------------------------------- */

/* Index of replica's slot (true) or where it would be inserted (false). */
static bool slots_find(const slots_t *s, uint64_t replica, size_t *at)
{
    size_t lo = 0, hi = s->n;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (s->v[mid].replica < replica)
            lo = mid + 1;
        else
            hi = mid;
    }
    *at = lo;
    return lo < s->n && s->v[lo].replica == replica;
}

static uint64_t slots_get(const slots_t *s, uint64_t replica)
{
    size_t at;
    return slots_find(s, replica, &at) ? s->v[at].value : 0;
}

static u128 slots_sum(const slots_t *s)
{
    u128 sum = 0;
    for (size_t i = 0; i < s->n; i++)
        sum += s->v[i].value;
    return sum;
}

static int slots_reserve(slots_t *s, size_t need)
{
    if (need <= s->cap)
        return 0;
    size_t cap = crdt__grow_cap(s->cap, need);
    if (cap > SIZE_MAX / sizeof(slot_t))
        return CRDT_ENOMEM;
    slot_t *v = crdt__realloc(s->v, cap * sizeof(slot_t));
    if (!v)
        return CRDT_ENOMEM;
    s->v = v;
    s->cap = cap;
    return 0;
}

/* Sets replica's slot to value (> 0). 0 or CRDT_ENOMEM with s unchanged. */
static int slots_set(slots_t *s, uint64_t replica, uint64_t value)
{
    size_t at;
    if (slots_find(s, replica, &at)) {
        s->v[at].value = value;
        return 0;
    }
    if (slots_reserve(s, s->n + 1) < 0)
        return CRDT_ENOMEM;
    memmove(s->v + at + 1, s->v + at, (s->n - at) * sizeof(slot_t));
    s->v[at] = (slot_t){replica, value};
    s->n++;
    return 0;
}

static void slots_free(slots_t *s)
{
    crdt__free(s->v);
    memset(s, 0, sizeof(*s));
}

static int slots_copy(slots_t *dst, const slots_t *src)
{
    memset(dst, 0, sizeof(*dst));
    if (!src->n)
        return 0;
    if (slots_reserve(dst, src->n) < 0)
        return CRDT_ENOMEM;
    memcpy(dst->v, src->v, src->n * sizeof(slot_t));
    dst->n = src->n;
    return 0;
}

/* Per-slot max. Builds the result aside and swaps it in, so ENOMEM leaves dst as it was. */
static int slots_merge(slots_t *dst, const slots_t *src)
{
    size_t i, j, k = 0;
    bool changed = false;
    /* Fast path: no new replicas means the join is in place. */
    bool fresh = false;
    for (j = 0; j < src->n && !fresh; j++) {
        size_t at;
        fresh = !slots_find(dst, src->v[j].replica, &at);
    }
    if (!fresh) {
        for (j = 0; j < src->n; j++) {
            size_t at;
            slots_find(dst, src->v[j].replica, &at);
            if (src->v[j].value > dst->v[at].value) {
                dst->v[at].value = src->v[j].value;
                changed = true;
            }
        }
        return changed;
    }
    if (dst->n + src->n < dst->n || dst->n + src->n > SIZE_MAX / sizeof(slot_t))
        return CRDT_ENOMEM;
    size_t cap = dst->n + src->n;
    slot_t *out = crdt__malloc(cap * sizeof(slot_t));
    if (!out)
        return CRDT_ENOMEM;
    i = j = 0;
    while (i < dst->n || j < src->n) {
        if (j == src->n || (i < dst->n && dst->v[i].replica < src->v[j].replica)) {
            out[k++] = dst->v[i++];
        } else if (i == dst->n || src->v[j].replica < dst->v[i].replica) {
            out[k++] = src->v[j++];
        } else {
            out[k] = dst->v[i];
            if (src->v[j].value > out[k].value)
                out[k].value = src->v[j].value;
            k++, i++, j++;
        }
    }
    crdt__free(dst->v);
    dst->v = out;
    dst->n = k;
    dst->cap = cap;
    return 1;
}

static bool slots_equal(const slots_t *a, const slots_t *b)
{
    return a->n == b->n && (a->n == 0 || memcmp(a->v, b->v, a->n * sizeof(slot_t)) == 0);
}

static void slots_encode(const slots_t *s, crdt__writer_t *w)
{
    crdt__wr_varint(w, s->n);
    for (size_t i = 0; i < s->n; i++) {
        crdt__wr_varint(w, s->v[i].replica);
        crdt__wr_varint(w, s->v[i].value);
    }
}

/* Reads "varint n; n x (varint replica, varint value)", replicas strictly ascending, values
 * 1..INT64_MAX. `what` names the slot list in errors. */
static int slots_decode(slots_t *s, crdt__reader_t *r, const char *what)
{
    uint64_t n;
    memset(s, 0, sizeof(*s));
    /* each slot takes at least two bytes, which bounds the allocation by the input size */
    if (crdt__rd_count(r, (r->len - r->pos) / 2, "slot count", &n) < 0)
        return CRDT_EDECODE;
    if (n && slots_reserve(s, (size_t)n) < 0)
        return crdt__nomem(r);
    uint64_t prev = 0;
    for (uint64_t i = 0; i < n; i++) {
        uint64_t replica, value;
        size_t at = r->pos;
        if (crdt__rd_count(r, CRDT_REPLICA_MAX, "replica id", &replica) < 0)
            goto fail;
        if (replica <= prev) {
            r->pos = at;
            crdt__fail(r, "%s slot %llu: replica id %llu %s", what, (unsigned long long)i,
                       (unsigned long long)replica,
                       replica == 0 ? "is reserved" : "is not above the previous slot's");
            goto fail;
        }
        at = r->pos;
        if (crdt__rd_count(r, INT64_MAX, "slot value", &value) < 0)
            goto fail;
        if (value == 0) {
            r->pos = at;
            crdt__fail(r, "%s slot %llu: zero value (zero slots are never stored)", what,
                       (unsigned long long)i);
            goto fail;
        }
        s->v[s->n++] = (slot_t){replica, value};
        prev = replica;
    }
    return 0;
fail:
    slots_free(s);
    return CRDT_EDECODE;
}

static json_t *slots_to_json(const slots_t *s)
{
    json_t *a = json_array();
    if (!a)
        return NULL;
    for (size_t i = 0; i < s->n; i++) {
        json_t *e = json_pack("{s:I,s:I}", "replica", (json_int_t)s->v[i].replica, "value",
                              (json_int_t)s->v[i].value);
        if (!e || json_array_append_new(a, e) < 0) {
            json_decref(a);
            return NULL;
        }
    }
    return a;
}

/* [{"replica":N,"value":N}...], replicas strictly ascending, values 1..INT64_MAX. */
static int slots_from_json(slots_t *s, const json_t *a, const char *what, crdt_error_t *err)
{
    memset(s, 0, sizeof(*s));
    if (!json_is_array(a)) {
        crdt__json_fail(err, "%s: expected an array of {\"replica\",\"value\"}", what);
        return CRDT_EDECODE;
    }
    size_t n = json_array_size(a);
    if (n && slots_reserve(s, n) < 0) {
        if (err && !err->code) {
            err->code = CRDT_ENOMEM;
            snprintf(err->text, sizeof(err->text), "out of memory");
        }
        return CRDT_ENOMEM;
    }
    uint64_t prev = 0;
    for (size_t i = 0; i < n; i++) {
        const json_t *e = json_array_get(a, i);
        char field[64];
        int64_t replica, value;
        if (!json_is_object(e)) {
            crdt__json_fail(err, "%s[%zu]: expected an object {\"replica\",\"value\"}", what, i);
            goto fail;
        }
        snprintf(field, sizeof(field), "%s[%zu].replica", what, i);
        if (crdt__json_get_int(json_object_get(e, "replica"), field, 1, INT64_MAX, &replica, err) <
            0)
            goto fail;
        if ((uint64_t)replica <= prev) {
            crdt__json_fail(err, "%s: replica ids must be strictly ascending", field);
            goto fail;
        }
        snprintf(field, sizeof(field), "%s[%zu].value", what, i);
        if (crdt__json_get_int(json_object_get(e, "value"), field, 1, INT64_MAX, &value, err) < 0)
            goto fail;
        if (json_object_size(e) != 2) {
            crdt__json_fail(err, "%s[%zu]: unexpected fields beside replica and value", what, i);
            goto fail;
        }
        s->v[s->n++] = (slot_t){(uint64_t)replica, (uint64_t)value};
        prev = (uint64_t)replica;
    }
    return 0;
fail:
    slots_free(s);
    return CRDT_EDECODE;
}

/* ---- G-Counter ------------------------------------------------------------------------------ */

static crdt_obj_t *gcounter_create(void)
{
    gcounter_t *g = crdt__calloc(1, sizeof(*g));
    if (!g)
        return NULL;
    g->obj.vt = &crdt__gcounter_vt;
    return &g->obj;
}

static void gcounter_destroy(crdt_obj_t *o)
{
    gcounter_t *g = (gcounter_t *)o;
    slots_free(&g->s);
    crdt__free(g);
}

static crdt_obj_t *gcounter_clone(const crdt_obj_t *o)
{
    const gcounter_t *src = (const gcounter_t *)o;
    gcounter_t *g = (gcounter_t *)gcounter_create();
    if (!g)
        return NULL;
    if (slots_copy(&g->s, &src->s) < 0) {
        crdt__free(g);
        return NULL;
    }
    return &g->obj;
}

static int gcounter_merge(crdt_obj_t *dst, const crdt_obj_t *src)
{
    return slots_merge(&((gcounter_t *)dst)->s, &((const gcounter_t *)src)->s);
}

static bool gcounter_equal(const crdt_obj_t *a, const crdt_obj_t *b)
{
    return slots_equal(&((const gcounter_t *)a)->s, &((const gcounter_t *)b)->s);
}

static bool gcounter_is_empty(const crdt_obj_t *o)
{
    return ((const gcounter_t *)o)->s.n == 0;
}

static void gcounter_stats(const crdt_obj_t *o, crdt_stats_t *st)
{
    const gcounter_t *g = (const gcounter_t *)o;
    st->entries = g->s.n;
    st->tombstones = 0;
    st->memory = sizeof(*g) + g->s.cap * sizeof(slot_t);
}

static void gcounter_encode(const crdt_obj_t *o, crdt__writer_t *w)
{
    slots_encode(&((const gcounter_t *)o)->s, w);
}

static crdt_obj_t *gcounter_decode(crdt__reader_t *r)
{
    gcounter_t *g = (gcounter_t *)gcounter_create();
    if (!g) {
        crdt__nomem(r);
        return NULL;
    }
    if (slots_decode(&g->s, r, "gcounter") < 0) {
        crdt__free(g);
        return NULL;
    }
    return &g->obj;
}

static json_t *gcounter_to_json(const crdt_obj_t *o)
{
    json_t *a = slots_to_json(&((const gcounter_t *)o)->s);
    return a ? json_pack("{s:o}", "slots", a) : NULL;
}

static crdt_obj_t *gcounter_from_json(const json_t *state, crdt_error_t *err)
{
    if (!json_is_object(state))
        return crdt__json_fail(err, "state: expected an object {\"slots\":[...]}");
    if (json_object_size(state) != 1 || !json_object_get(state, "slots"))
        return crdt__json_fail(err, "state: expected exactly one field, slots");
    gcounter_t *g = (gcounter_t *)gcounter_create();
    if (!g)
        return NULL;
    if (slots_from_json(&g->s, json_object_get(state, "slots"), "slots", err) < 0) {
        crdt__free(g);
        return NULL;
    }
    return &g->obj;
}

const crdt__vtable_t crdt__gcounter_vt = {
    .type = CRDT_GCOUNTER,
    .name = "gcounter",
    .create = gcounter_create,
    .destroy = gcounter_destroy,
    .clone = gcounter_clone,
    .merge = gcounter_merge,
    .equal = gcounter_equal,
    .is_empty = gcounter_is_empty,
    .stats = gcounter_stats,
    .encode = gcounter_encode,
    .decode = gcounter_decode,
    .to_json = gcounter_to_json,
    .from_json = gcounter_from_json,
};

/* A new counter object (G or PN per vt) holding one slot, for a delta; NULL on ENOMEM. */
static crdt_obj_t *one_slot_delta(const crdt__vtable_t *vt, bool negative, uint64_t replica,
                                  uint64_t value)
{
    crdt_obj_t *d = vt->create();
    if (!d)
        return NULL;
    slots_t *s = vt == &crdt__gcounter_vt ? &((gcounter_t *)d)->s
                 : negative               ? &((pncounter_t *)d)->n
                                          : &((pncounter_t *)d)->p;
    if (slots_set(s, replica, value) < 0) {
        crdt_obj_free(d);
        return NULL;
    }
    return d;
}

int crdt_gcounter_incr(crdt_obj_t *c, uint64_t replica, uint64_t n, crdt_obj_t **delta)
{
    if (delta)
        *delta = NULL;
    if (!c || c->vt != &crdt__gcounter_vt)
        return CRDT_ETYPE;
    if (!crdt__replica_ok(replica))
        return CRDT_EINVAL;
    if (n == 0)
        return 0;
    gcounter_t *g = (gcounter_t *)c;
    /* The slot is part of the sum, so checking the sum also bounds the slot. */
    if (slots_sum(&g->s) + n > (u128)INT64_MAX)
        return CRDT_EOVERFLOW;
    uint64_t value = slots_get(&g->s, replica) + n;
    crdt_obj_t *d = NULL;
    if (delta && !(d = one_slot_delta(&crdt__gcounter_vt, false, replica, value)))
        return CRDT_ENOMEM;
    if (slots_set(&g->s, replica, value) < 0) {
        crdt_obj_free(d);
        return CRDT_ENOMEM;
    }
    if (delta)
        *delta = d;
    return 1;
}

/* ---- PN-Counter ----------------------------------------------------------------------------- */

static crdt_obj_t *pncounter_create(void)
{
    pncounter_t *c = crdt__calloc(1, sizeof(*c));
    if (!c)
        return NULL;
    c->obj.vt = &crdt__pncounter_vt;
    return &c->obj;
}

static void pncounter_destroy(crdt_obj_t *o)
{
    pncounter_t *c = (pncounter_t *)o;
    slots_free(&c->p);
    slots_free(&c->n);
    crdt__free(c);
}

static crdt_obj_t *pncounter_clone(const crdt_obj_t *o)
{
    const pncounter_t *src = (const pncounter_t *)o;
    pncounter_t *c = (pncounter_t *)pncounter_create();
    if (!c)
        return NULL;
    if (slots_copy(&c->p, &src->p) < 0 || slots_copy(&c->n, &src->n) < 0) {
        pncounter_destroy(&c->obj);
        return NULL;
    }
    return &c->obj;
}

static int pncounter_merge(crdt_obj_t *dst, const crdt_obj_t *src)
{
    pncounter_t *d = (pncounter_t *)dst;
    const pncounter_t *s = (const pncounter_t *)src;
    /* If n's join fails after p's succeeded, dst holds part of src: still below the full join. */
    int a = slots_merge(&d->p, &s->p);
    if (a < 0)
        return a;
    int b = slots_merge(&d->n, &s->n);
    if (b < 0)
        return b;
    return a || b;
}

static bool pncounter_equal(const crdt_obj_t *a, const crdt_obj_t *b)
{
    const pncounter_t *x = (const pncounter_t *)a, *y = (const pncounter_t *)b;
    return slots_equal(&x->p, &y->p) && slots_equal(&x->n, &y->n);
}

static bool pncounter_is_empty(const crdt_obj_t *o)
{
    const pncounter_t *c = (const pncounter_t *)o;
    return c->p.n == 0 && c->n.n == 0;
}

static void pncounter_stats(const crdt_obj_t *o, crdt_stats_t *st)
{
    const pncounter_t *c = (const pncounter_t *)o;
    st->entries = c->p.n + c->n.n;
    st->tombstones = 0;
    st->memory = sizeof(*c) + (c->p.cap + c->n.cap) * sizeof(slot_t);
}

static void pncounter_encode(const crdt_obj_t *o, crdt__writer_t *w)
{
    const pncounter_t *c = (const pncounter_t *)o;
    slots_encode(&c->p, w);
    slots_encode(&c->n, w);
}

static crdt_obj_t *pncounter_decode(crdt__reader_t *r)
{
    pncounter_t *c = (pncounter_t *)pncounter_create();
    if (!c) {
        crdt__nomem(r);
        return NULL;
    }
    if (slots_decode(&c->p, r, "pncounter p") < 0 || slots_decode(&c->n, r, "pncounter n") < 0) {
        pncounter_destroy(&c->obj);
        return NULL;
    }
    return &c->obj;
}

static json_t *pncounter_to_json(const crdt_obj_t *o)
{
    const pncounter_t *c = (const pncounter_t *)o;
    json_t *p = slots_to_json(&c->p);
    json_t *n = p ? slots_to_json(&c->n) : NULL;
    if (!n) {
        json_decref(p);
        return NULL;
    }
    return json_pack("{s:o,s:o}", "p", p, "n", n);
}

static crdt_obj_t *pncounter_from_json(const json_t *state, crdt_error_t *err)
{
    if (!json_is_object(state))
        return crdt__json_fail(err, "state: expected an object {\"p\":[...],\"n\":[...]}");
    const json_t *p = json_object_get(state, "p"), *n = json_object_get(state, "n");
    if (!p)
        return crdt__json_fail(err, "state.p: missing");
    if (!n)
        return crdt__json_fail(err, "state.n: missing");
    if (json_object_size(state) != 2)
        return crdt__json_fail(err, "state: unexpected fields beside p and n");
    pncounter_t *c = (pncounter_t *)pncounter_create();
    if (!c)
        return NULL;
    if (slots_from_json(&c->p, p, "p", err) < 0 || slots_from_json(&c->n, n, "n", err) < 0) {
        pncounter_destroy(&c->obj);
        return NULL;
    }
    return &c->obj;
}

const crdt__vtable_t crdt__pncounter_vt = {
    .type = CRDT_PNCOUNTER,
    .name = "pncounter",
    .create = pncounter_create,
    .destroy = pncounter_destroy,
    .clone = pncounter_clone,
    .merge = pncounter_merge,
    .equal = pncounter_equal,
    .is_empty = pncounter_is_empty,
    .stats = pncounter_stats,
    .encode = pncounter_encode,
    .decode = pncounter_decode,
    .to_json = pncounter_to_json,
    .from_json = pncounter_from_json,
};

int crdt_pncounter_add(crdt_obj_t *c, uint64_t replica, int64_t n, crdt_obj_t **delta)
{
    if (delta)
        *delta = NULL;
    if (!c || c->vt != &crdt__pncounter_vt)
        return CRDT_ETYPE;
    if (!crdt__replica_ok(replica))
        return CRDT_EINVAL;
    if (n == 0)
        return 0;
    pncounter_t *pn = (pncounter_t *)c;
    bool negative = n < 0;
    /* -(n + 1) + 1 is |n| without the signed overflow of -INT64_MIN */
    uint64_t amount = negative ? (uint64_t)(-(n + 1)) + 1 : (uint64_t)n;
    slots_t *side = negative ? &pn->n : &pn->p;
    const slots_t *other = negative ? &pn->p : &pn->n;
    /* Both sums within int64 keep every value reachable from here within int64 too. */
    if (slots_sum(side) + amount > (u128)INT64_MAX || slots_sum(other) > (u128)INT64_MAX)
        return CRDT_EOVERFLOW;
    uint64_t value = slots_get(side, replica) + amount;
    crdt_obj_t *d = NULL;
    if (delta && !(d = one_slot_delta(&crdt__pncounter_vt, negative, replica, value)))
        return CRDT_ENOMEM;
    if (slots_set(side, replica, value) < 0) {
        crdt_obj_free(d);
        return CRDT_ENOMEM;
    }
    if (delta)
        *delta = d;
    return 1;
}

int crdt_counter_value(const crdt_obj_t *c, int64_t *out)
{
    if (!c)
        return CRDT_ETYPE;
    if (c->vt == &crdt__gcounter_vt) {
        u128 sum = slots_sum(&((const gcounter_t *)c)->s);
        if (sum > (u128)INT64_MAX)
            return CRDT_EOVERFLOW;
        *out = (int64_t)sum;
        return 0;
    }
    if (c->vt == &crdt__pncounter_vt) {
        const pncounter_t *pn = (const pncounter_t *)c;
        u128 p = slots_sum(&pn->p), n = slots_sum(&pn->n);
        /* Merged remote slots may push a side past int64 while the difference still fits. */
        if (p >= n) {
            if (p - n > (u128)INT64_MAX)
                return CRDT_EOVERFLOW;
            *out = (int64_t)(uint64_t)(p - n);
        } else {
            u128 neg = n - p; /* value = -neg, which fits down to INT64_MIN = -(INT64_MAX + 1) */
            if (neg > (u128)INT64_MAX + 1)
                return CRDT_EOVERFLOW;
            *out = neg == (u128)INT64_MAX + 1 ? INT64_MIN : -(int64_t)(uint64_t)neg;
        }
        return 0;
    }
    return CRDT_ETYPE;
}
