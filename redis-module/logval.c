/* logval.c - a change log as crdt.so holds it: entries in chunks, consumer groups (no Redis API) */
#include "logval.h"
#include "logpos.h"

#include "crdt.h"

#include <stdlib.h>
#include <string.h>

/* Bytes of records a chunk holds (one record bigger than that gets a chunk of its own). */
#define CHUNK_BYTES 4000
/* Bytes of a log's first chunk, before it grows. */
#define FIRST_CHUNK_BYTES 200

static void *(*lv_alloc)(size_t) = malloc;
static void *(*lv_realloc)(void *, size_t) = realloc;
static void (*lv_free)(void *) = free;

void crdtm_lv_set_allocator(void *(*alloc)(size_t), void *(*re)(void *, size_t), void (*fr)(void *))
{
    lv_alloc = alloc;
    lv_realloc = re;
    lv_free = fr;
}

crdtm_logval_t *crdtm_lv_new(uint64_t next)
{
    crdtm_logval_t *lv = lv_alloc(sizeof(*lv));
    if (!lv)
        return NULL;
    memset(lv, 0, sizeof(*lv));
    lv->added = next ? next - 1 : 0;
    lv->cached_slot = -1;
    return lv;
}

void crdtm_lv_free(crdtm_logval_t *lv)
{
    if (!lv)
        return;
    for (uint32_t i = 0; i < lv->nch; i++)
        lv_free(lv->ch[i]);
    lv_free(lv->ch);
    for (uint32_t i = 0; i < lv->ngroups; i++)
        lv_free(lv->groups[i].name);
    lv_free(lv->groups);
    lv_free(lv);
}

size_t crdtm_lv_record(char *out, uint64_t ms, const char *key, size_t klen, uint64_t origin,
                       const void *delta, size_t dlen)
{
    size_t n = crdtm_varint_put(out, ms);
    return n + crdtm_entry_encode(out + n, key, klen, origin, delta, dlen);
}

bool crdtm_lv_record_parse(const char *rec, size_t rlen, uint64_t *ms, const char **entry,
                           size_t *elen)
{
    const char *p = rec, *end = rec + rlen;
    crdtm_entry_t e;
    if (!crdtm_varint_get(&p, end, ms) || crdtm_entry_decode(p, (size_t)(end - p), &e) < 0)
        return false;
    *entry = p;
    *elen = (size_t)(end - p);
    return true;
}

/* The record at byte pos of c: its bytes and the position after it. The chunk's own records
 * were checked when they went in. */
static const char *chunk_rec(const crdtm_chunk_t *c, uint32_t pos, size_t *rlen, uint32_t *next)
{
    const char *p = c->data + pos, *end = c->data + c->used;
    uint64_t l = 0;
    crdtm_varint_get(&p, end, &l);
    *rlen = (size_t)l;
    *next = (uint32_t)(p - c->data) + (uint32_t)l;
    return p;
}

static int push_chunk(crdtm_logval_t *lv, size_t need)
{
    if (lv->nch == lv->chcap) {
        uint32_t cap = lv->chcap ? lv->chcap * 2 : 4;
        crdtm_chunk_t **p = lv_realloc(lv->ch, cap * sizeof(*p));
        if (!p)
            return -2;
        lv->ch = p;
        lv->chcap = cap;
    }
    /* the first chunk small (it grows), the next ones full size */
    size_t want = lv->nch ? CHUNK_BYTES : FIRST_CHUNK_BYTES;
    size_t cap = need > want ? need : want;
    crdtm_chunk_t *c = lv_alloc(sizeof(*c) + cap);
    if (!c)
        return -2;
    *c = (crdtm_chunk_t){.first = lv->added + 1, .cap = (uint32_t)cap};
    lv->ch[lv->nch++] = c;
    lv->bytes += sizeof(*c) + cap;
    return 0;
}

/* Room for need more bytes at the end of the tail chunk (grown, or a new chunk); the tail. NULL
 * when out of memory. */
static crdtm_chunk_t *reserve(crdtm_logval_t *lv, size_t need)
{
    crdtm_chunk_t *t = lv->nch ? lv->ch[lv->nch - 1] : NULL;
    if (t && t->cap - t->used >= need)
        return t;
    if (t && t->cap < CHUNK_BYTES) {
        /* a log's first chunk starts small and doubles up to CHUNK_BYTES: a slot written a few
         * times does not hold 4 KB */
        size_t cap = (size_t)t->cap * 2;
        if (cap < t->used + need)
            cap = t->used + need;
        if (cap > CHUNK_BYTES && t->used + need <= CHUNK_BYTES)
            cap = CHUNK_BYTES;
        crdtm_chunk_t *g = lv_realloc(t, sizeof(*t) + cap);
        if (!g)
            return NULL;
        lv->bytes += cap - g->cap;
        g->cap = (uint32_t)cap;
        lv->ch[lv->nch - 1] = g;
        if (g->cap - g->used >= need)
            return g;
    }
    if (push_chunk(lv, need) < 0)
        return NULL;
    return lv->ch[lv->nch - 1];
}

/* The record's bytes at p went into tail t: the counters follow. */
static void appended(crdtm_logval_t *lv, crdtm_chunk_t *t, size_t n, uint64_t ms)
{
    t->used += (uint32_t)n;
    t->count++;
    lv->added++;
    lv->len++;
    lv->last_ms = ms;
}

int crdtm_lv_append(crdtm_logval_t *lv, const char *rec, size_t rlen)
{
    uint64_t ms;
    const char *e;
    size_t el;
    if (rlen > UINT32_MAX / 2 || !crdtm_lv_record_parse(rec, rlen, &ms, &e, &el))
        return -1;
    crdtm_chunk_t *t = reserve(lv, rlen + 10);
    if (!t)
        return -2;
    char *p = t->data + t->used;
    size_t n = crdtm_varint_put(p, rlen);
    memcpy(p + n, rec, rlen);
    appended(lv, t, n + rlen, ms);
    return 0;
}

const char *crdtm_lv_append_entry(crdtm_logval_t *lv, uint64_t ms, const char *key, size_t klen,
                                  uint64_t origin, const void *delta, size_t dlen, size_t *rlen)
{
    size_t rl = crdt_varint_len(ms) + crdt_varint_len((uint64_t)klen * 2 + (origin != 0)) + klen +
                (origin ? crdt_varint_len(origin) : 0) + dlen;
    if (rl > UINT32_MAX / 2)
        return NULL;
    crdtm_chunk_t *t = reserve(lv, rl + 10);
    if (!t)
        return NULL;
    char *p = t->data + t->used;
    size_t n = crdtm_varint_put(p, rl);
    char *rec = p + n;
    crdtm_lv_record(rec, ms, key, klen, origin, delta, dlen);
    appended(lv, t, n + rl, ms);
    *rlen = rl;
    return rec;
}

uint64_t crdtm_lv_trim(crdtm_logval_t *lv, uint64_t upto)
{
    uint64_t first = crdtm_lv_first(lv);
    if (upto < first || lv->len == 0)
        return 0;
    if (upto > lv->added)
        upto = lv->added;
    uint64_t removed = upto - first + 1;
    uint32_t drop = 0;
    while (drop < lv->nch && lv->ch[drop]->first + lv->ch[drop]->count - 1 <= upto) {
        lv->bytes -= sizeof(crdtm_chunk_t) + lv->ch[drop]->cap;
        lv_free(lv->ch[drop]);
        drop++;
    }
    memmove(lv->ch, lv->ch + drop, (lv->nch - drop) * sizeof(*lv->ch));
    lv->nch -= drop;
    if (lv->nch && lv->ch[0]->first <= upto) {
        crdtm_chunk_t *c = lv->ch[0];
        while (c->first <= upto && c->count > 0) {
            size_t rl;
            uint32_t next;
            chunk_rec(c, c->start, &rl, &next);
            c->start = next;
            c->first++;
            c->count--;
        }
    }
    lv->len -= removed;
    return removed;
}

void crdtm_lv_seek(const crdtm_logval_t *lv, uint64_t offset, crdtm_lv_iter_t *it)
{
    it->lv = lv;
    uint64_t first = crdtm_lv_first(lv);
    if (offset < first)
        offset = first;
    if (offset > lv->added || lv->nch == 0) {
        it->ci = lv->nch;
        it->pos = 0;
        it->offset = lv->added + 1;
        return;
    }
    /* the last chunk whose first record is at or before offset */
    uint32_t lo = 0, hi = lv->nch - 1;
    while (lo < hi) {
        uint32_t mid = lo + (hi - lo + 1) / 2;
        if (lv->ch[mid]->first <= offset)
            lo = mid;
        else
            hi = mid - 1;
    }
    const crdtm_chunk_t *c = lv->ch[lo];
    uint32_t pos = c->start;
    for (uint64_t o = c->first; o < offset; o++) {
        size_t rl;
        chunk_rec(c, pos, &rl, &pos);
    }
    it->ci = lo;
    it->pos = pos;
    it->offset = offset;
}

bool crdtm_lv_next(crdtm_lv_iter_t *it, crdtm_rec_t *r)
{
    const crdtm_logval_t *lv = it->lv;
    while (it->ci < lv->nch && it->pos >= lv->ch[it->ci]->used) {
        it->ci++;
        it->pos = it->ci < lv->nch ? lv->ch[it->ci]->start : 0;
    }
    if (it->ci >= lv->nch)
        return false;
    uint32_t next;
    r->rec = chunk_rec(lv->ch[it->ci], it->pos, &r->rlen, &next);
    r->offset = it->offset++;
    it->pos = next;
    crdtm_lv_record_parse(r->rec, r->rlen, &r->ms, &r->entry, &r->elen);
    return true;
}

uint64_t crdtm_lv_older_than(const crdtm_logval_t *lv, uint64_t ms)
{
    crdtm_lv_iter_t it;
    crdtm_rec_t r;
    uint64_t upto = 0;
    crdtm_lv_seek(lv, 0, &it);
    while (crdtm_lv_next(&it, &r) && r.ms < ms)
        upto = r.offset;
    return upto;
}

int crdtm_lv_group_find(const crdtm_logval_t *lv, const char *name, size_t nlen)
{
    for (uint32_t i = 0; i < lv->ngroups; i++)
        if (lv->groups[i].nlen == nlen && memcmp(lv->groups[i].name, name, nlen) == 0)
            return (int)i;
    return -1;
}

int crdtm_lv_group_set(crdtm_logval_t *lv, const char *name, size_t nlen, uint64_t acked)
{
    int g = crdtm_lv_group_find(lv, name, nlen);
    if (g >= 0) {
        lv->groups[g].acked = acked;
        return 0;
    }
    if (nlen == 0 || nlen > CRDTM_GROUP_NAME_MAX || lv->ngroups >= CRDTM_GROUPS_MAX)
        return -1;
    crdtm_group_t *p = lv_realloc(lv->groups, (lv->ngroups + 1) * sizeof(*p));
    if (!p)
        return -2;
    lv->groups = p;
    char *nm = lv_alloc(nlen);
    if (!nm)
        return -2;
    memcpy(nm, name, nlen);
    p[lv->ngroups++] = (crdtm_group_t){.name = nm, .nlen = nlen, .acked = acked};
    return 0;
}

bool crdtm_lv_group_del(crdtm_logval_t *lv, const char *name, size_t nlen)
{
    int g = crdtm_lv_group_find(lv, name, nlen);
    if (g < 0)
        return false;
    lv_free(lv->groups[g].name);
    memmove(&lv->groups[g], &lv->groups[g + 1],
            (lv->ngroups - (uint32_t)g - 1) * sizeof(*lv->groups));
    lv->ngroups--;
    return true;
}

bool crdtm_lv_min_acked(const crdtm_logval_t *lv, uint64_t *acked)
{
    for (uint32_t i = 0; i < lv->ngroups; i++)
        if (i == 0 || lv->groups[i].acked < *acked)
            *acked = lv->groups[i].acked;
    return lv->ngroups > 0;
}

size_t crdtm_lv_mem(const crdtm_logval_t *lv)
{
    size_t n =
        sizeof(*lv) + lv->bytes + lv->chcap * sizeof(*lv->ch) + lv->ngroups * sizeof(*lv->groups);
    for (uint32_t i = 0; i < lv->ngroups; i++)
        n += lv->groups[i].nlen;
    return n;
}

crdtm_logval_t *crdtm_lv_copy(const crdtm_logval_t *lv)
{
    size_t n;
    char *b = crdtm_lv_encode(lv, &n);
    if (!b)
        return NULL;
    const char *why;
    crdtm_logval_t *c = crdtm_lv_decode(b, n, &why);
    lv_free(b);
    return c;
}

/* ---- the bytes of rdb_save and rdb_load ----------------------------------------------------- */

#define LV_FORMAT 1
/* Most entries a log may say it ever had (2^62). */
#define LV_ADDED_MAX (UINT64_C(1) << 62)

char *crdtm_lv_encode(const crdtm_logval_t *lv, size_t *n)
{
    size_t cap = 1 + 4 * 10;
    for (uint32_t i = 0; i < lv->ngroups; i++)
        cap += lv->groups[i].nlen + 20;
    for (uint32_t i = 0; i < lv->nch; i++)
        cap += lv->ch[i]->used - lv->ch[i]->start;
    char *b = lv_alloc(cap), *p = b;
    if (!b)
        return NULL;
    *p++ = LV_FORMAT;
    p += crdtm_varint_put(p, lv->added);
    p += crdtm_varint_put(p, lv->len);
    p += crdtm_varint_put(p, lv->last_ms);
    p += crdtm_varint_put(p, lv->ngroups);
    for (uint32_t i = 0; i < lv->ngroups; i++) {
        p += crdtm_varint_put(p, lv->groups[i].nlen);
        memcpy(p, lv->groups[i].name, lv->groups[i].nlen);
        p += lv->groups[i].nlen;
        p += crdtm_varint_put(p, lv->groups[i].acked);
    }
    /* the chunks' records as they are: varint(length) record each */
    for (uint32_t i = 0; i < lv->nch; i++) {
        const crdtm_chunk_t *c = lv->ch[i];
        memcpy(p, c->data + c->start, c->used - c->start);
        p += c->used - c->start;
    }
    *n = (size_t)(p - b);
    return b;
}

crdtm_logval_t *crdtm_lv_decode(const char *buf, size_t len, const char **why)
{
    const char *p = buf, *end = buf + len;
    uint64_t added, n, last_ms, ng;
    if (len < 1 || *p++ != LV_FORMAT) {
        *why = "not a change log of this format";
        return NULL;
    }
    if (!crdtm_varint_get(&p, end, &added) || !crdtm_varint_get(&p, end, &n) ||
        !crdtm_varint_get(&p, end, &last_ms) || !crdtm_varint_get(&p, end, &ng)) {
        *why = "truncated header";
        return NULL;
    }
    if (n > added) {
        *why = "more entries kept than added";
        return NULL;
    }
    if (added > LV_ADDED_MAX) {
        /* far past what any log reaches; keeps offsets from wrapping on later appends */
        *why = "entry count out of range";
        return NULL;
    }
    if (ng > CRDTM_GROUPS_MAX) {
        *why = "too many consumer groups";
        return NULL;
    }
    crdtm_logval_t *lv = crdtm_lv_new(added - n + 1);
    if (!lv) {
        *why = "out of memory";
        return NULL;
    }
    for (uint64_t i = 0; i < ng; i++) {
        uint64_t nl, acked;
        if (!crdtm_varint_get(&p, end, &nl) || nl == 0 || nl > CRDTM_GROUP_NAME_MAX ||
            nl > (uint64_t)(end - p)) {
            *why = "bad consumer group name";
            goto fail;
        }
        const char *name = p;
        p += nl;
        if (!crdtm_varint_get(&p, end, &acked) || acked > added) {
            *why = "bad consumer group position";
            goto fail;
        }
        if (crdtm_lv_group_find(lv, name, (size_t)nl) >= 0) {
            *why = "duplicate consumer group";
            goto fail;
        }
        if (crdtm_lv_group_set(lv, name, (size_t)nl, acked) < 0) {
            *why = "out of memory";
            goto fail;
        }
    }
    for (uint64_t i = 0; i < n; i++) {
        uint64_t rl;
        if (!crdtm_varint_get(&p, end, &rl) || rl > (uint64_t)(end - p)) {
            *why = "truncated entry";
            goto fail;
        }
        int rc = crdtm_lv_append(lv, p, (size_t)rl);
        if (rc < 0) {
            *why = rc == -1 ? "malformed entry" : "out of memory";
            goto fail;
        }
        p += rl;
    }
    if (p != end) {
        *why = "bytes after the last entry";
        goto fail;
    }
    lv->last_ms = last_ms;
    return lv;
fail:
    crdtm_lv_free(lv);
    return NULL;
}
