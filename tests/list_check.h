/* list_check.h - crdt_store_list_keys checked against a model, for any store (test_store.c runs it
 * on the embedded and deferred stores, test_store_redis.c on the Redis one)
 *
 * The caller gives a wait function that drives the store until *done (returns false on timeout):
 * for a store that completes at once it only reads *done. The model is the set of keys written
 * live (internal and deleted keys are written too and must never be listed); every listing is
 * compared with the model's sorted keys for the same prefix, after and limit. */
#ifndef LIST_CHECK_H
#define LIST_CHECK_H

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "crdt_store.h"
#include "tap.h"

typedef bool (*lc_wait_fn)(bool *done, void *ctx);

typedef struct lc_key {
    uint8_t b[24];
    size_t n;
} lc_key_t;

typedef struct lc_model {
    lc_key_t *live; /* the keys that must be listed (unsorted until lc_sort) */
    size_t n, cap;
} lc_model_t;

static int lc_cmp(const uint8_t *a, size_t an, const uint8_t *b, size_t bn)
{
    size_t m = an < bn ? an : bn;
    int c = m ? memcmp(a, b, m) : 0;
    return c ? c : an < bn ? -1 : an > bn;
}

static int lc_qcmp(const void *x, const void *y)
{
    const lc_key_t *a = x, *b = y;
    return lc_cmp(a->b, a->n, b->b, b->n);
}

static void lc_add_live(lc_model_t *m, const void *k, size_t n)
{
    if (m->n == m->cap) {
        m->cap = m->cap ? m->cap * 2 : 256;
        m->live = realloc(m->live, m->cap * sizeof(*m->live));
        if (!m->live)
            abort();
    }
    memcpy(m->live[m->n].b, k, n);
    m->live[m->n++].n = n;
}

static void lc_sort(lc_model_t *m)
{
    qsort(m->live, m->n, sizeof(*m->live), lc_qcmp);
}

typedef struct lc_res {
    bool done;
    int rc;
    uint64_t more;
    lc_key_t *keys;
    size_t n, cap;
    bool stop_after_one; /* the callback stops the listing after the first key */
} lc_res_t;

static void lc_on_write(void *ud, int rc, uint64_t seq)
{
    (void)seq;
    lc_res_t *r = ud;
    r->rc = rc;
    r->done = true;
}

static int lc_each(void *ud, const void *key, size_t klen)
{
    lc_res_t *r = ud;
    if (r->n == r->cap) {
        r->cap = r->cap ? r->cap * 2 : 64;
        r->keys = realloc(r->keys, r->cap * sizeof(*r->keys));
        if (!r->keys)
            abort();
    }
    r->keys[r->n].n = klen < sizeof(r->keys[0].b) ? klen : sizeof(r->keys[0].b);
    memcpy(r->keys[r->n].b, key, r->keys[r->n].n);
    r->n++;
    return r->stop_after_one ? 1 : 0;
}

static void lc_on_done(void *ud, int rc, uint64_t more)
{
    lc_res_t *r = ud;
    r->rc = rc;
    r->more = more;
    r->done = true;
}

/* Writes m at key; true when the write completed with rc >= 0. */
static bool lc_write(crdt_store_t *st, lc_wait_fn wait, void *ctx, const void *key, size_t klen,
                     const crdt_mut_t *m)
{
    lc_res_t r = {0};
    crdt_store_write(st, key, klen, m, lc_on_write, &r);
    return wait(&r.done, ctx) && r.rc >= 0;
}

/* Writes keys: n live ones "k:<i>" (in a scattered order), some with 0xFF and 0x00 bytes, an
 * internal one, and deleted ones; adds the live ones to the model. tag makes the keys of a second
 * call distinct ("k:" and "j:" say). false when a write failed. */
static bool lc_populate(crdt_store_t *st, lc_wait_fn wait, void *ctx, lc_model_t *m, char tag,
                        size_t n)
{
    crdt_mut_t add = {.type = CRDT_ORSET, .kind = CRDT_MUT_ADD, .bytes = "m", .len = 1};
    crdt_mut_t del = {.type = CRDT_ORSET, .kind = CRDT_MUT_DELETE};
    bool good = true;
    for (size_t j = 0; j < n; j++) {
        size_t i = (j * 7919) % n; /* 7919 is prime: a permutation unless n is a multiple */
        if (n % 7919 == 0)
            i = j;
        char k[24];
        int kl = snprintf(k, sizeof(k), "%c:%06zu", tag, i);
        good = lc_write(st, wait, ctx, k, (size_t)kl, &add) && good;
        if (i % 10 == 3) /* every tenth deleted: present in the store, nothing live */
            good = lc_write(st, wait, ctx, k, (size_t)kl, &del) && good;
        else
            lc_add_live(m, k, (size_t)kl);
    }
    /* bytes at the ends of the order, and a prefix of 0xFF bytes */
    static const struct {
        const char *k;
        size_t n;
    } odd[] = {{"\xff", 1},
               {"\xff\xff", 2},
               {"\xff\xff\x00", 3},
               {"\xff\xfe", 2},
               {"\x00", 1},
               {"\x00\x01", 2},
               {"\x00"
                "c",
                2},
               {"\x00"
                "c0",
                3},
               /* a glob's special bytes (a store over Redis MATCHes the prefix) */
               {"g*1", 3},
               {"g*2", 3},
               {"gx1", 3},
               {"g?a", 3},
               {"g[a]", 4},
               {"g\\b", 3},
               {"gab", 3}};
    for (size_t i = 0; i < sizeof(odd) / sizeof(odd[0]); i++) {
        char k[8];
        memcpy(k, odd[i].k, odd[i].n);
        if (tag != 'k') { /* a second call: distinct keys */
            k[odd[i].n] = tag;
        }
        size_t kl = odd[i].n + (tag != 'k');
        good = lc_write(st, wait, ctx, k, kl, &add) && good;
        lc_add_live(m, k, kl);
    }
    /* internal keys (an op-id mark's kind of key): in the store, never listed */
    char ik[16] = {0, 'c', '/', 'o', 'p', tag};
    good = lc_write(st, wait, ctx, ik, 6, &add) && good;
    good = lc_write(st, wait, ctx, ik, 3, &add) && good;
    return good;
}

/* Lists one page; false on timeout. */
static bool lc_list(crdt_store_t *st, lc_wait_fn wait, void *ctx, const void *prefix, size_t plen,
                    const void *after, size_t alen, size_t limit, lc_res_t *r)
{
    free(r->keys);
    bool one = r->stop_after_one;
    memset(r, 0, sizeof(*r));
    r->stop_after_one = one;
    crdt_store_list_keys(st, prefix, plen, after, alen, limit, lc_each, lc_on_done, r);
    return wait(&r->done, ctx);
}

/* The page the model expects: its keys from index *from, count *cnt, and whether more follow. */
static void lc_expect(const lc_model_t *m, const void *prefix, size_t plen, const void *after,
                      size_t alen, size_t limit, size_t *from, size_t *cnt, bool *more)
{
    size_t i = 0;
    while (i < m->n && (lc_cmp(m->live[i].b, m->live[i].n, prefix, plen) < 0 ||
                        (after && lc_cmp(m->live[i].b, m->live[i].n, after, alen) <= 0)))
        i++;
    *from = i;
    size_t c = 0;
    while (i + c < m->n && m->live[i + c].n >= plen &&
           (!plen || !memcmp(m->live[i + c].b, prefix, plen)) && c < limit)
        c++;
    *cnt = c;
    size_t j = i + c;
    *more = j < m->n && m->live[j].n >= plen && (!plen || !memcmp(m->live[j].b, prefix, plen));
}

/* Whether one page matches the model (a diagnostic when not). */
static bool lc_page_ok(crdt_store_t *st, lc_wait_fn wait, void *ctx, const lc_model_t *m,
                       const void *prefix, size_t plen, const void *after, size_t alen,
                       size_t limit)
{
    lc_res_t r = {0};
    if (!lc_list(st, wait, ctx, prefix, plen, after, alen, limit, &r)) {
        diag("list_keys did not complete");
        return false;
    }
    size_t from, cnt;
    bool more;
    lc_expect(m, prefix, plen, after, alen, limit, &from, &cnt, &more);
    bool good = r.rc == 0 && r.n == cnt && (r.more != 0) == more;
    for (size_t i = 0; good && i < cnt; i++)
        good = lc_cmp(r.keys[i].b, r.keys[i].n, m->live[from + i].b, m->live[from + i].n) == 0;
    if (!good)
        diag("rc %d, %zu keys (expected %zu), more %d (expected %d)", r.rc, r.n, cnt, (int)r.more,
             (int)more);
    free(r.keys);
    return good;
}

/* Every key under prefix, page by page of `limit` after the last key of the previous page. */
static bool lc_walk_ok(crdt_store_t *st, lc_wait_fn wait, void *ctx, const lc_model_t *m,
                       const void *prefix, size_t plen, size_t limit, size_t *pages)
{
    lc_key_t last;
    bool has_last = false, good = true;
    *pages = 0;
    for (size_t guard = 0; good && guard < m->n + 2; guard++) {
        good = lc_page_ok(st, wait, ctx, m, prefix, plen, has_last ? last.b : NULL,
                          has_last ? last.n : 0, limit);
        lc_res_t r = {0};
        if (!good || !lc_list(st, wait, ctx, prefix, plen, has_last ? last.b : NULL,
                              has_last ? last.n : 0, limit, &r))
            return false;
        (*pages)++;
        if (!r.more || r.n == 0) {
            free(r.keys);
            return good;
        }
        last = r.keys[r.n - 1];
        has_last = true;
        free(r.keys);
    }
    return false;
}

/* The checks, on a store populated through lc_populate into m. */
static void lc_check(crdt_store_t *st, lc_wait_fn wait, void *ctx, lc_model_t *m, const char *what)
{
    lc_sort(m);
    ok(lc_page_ok(st, wait, ctx, m, NULL, 0, NULL, 0, 100),
       "%s: the first 100 keys, in bytewise order, no deleted or internal key", what);
    ok(lc_page_ok(st, wait, ctx, m, NULL, 0, NULL, 0, m->n + 10),
       "%s: every key in one page (more 0)", what);
    ok(lc_page_ok(st, wait, ctx, m, "k:", 2, NULL, 0, 1), "%s: prefix k:, limit 1", what);
    ok(lc_page_ok(st, wait, ctx, m, "k:0001", 6, "k:000123", 8, 5),
       "%s: prefix and after inside it", what);
    ok(lc_page_ok(st, wait, ctx, m, "k:0001", 6, "a", 1, 5),
       "%s: an after before the prefix starts at the prefix", what);
    ok(lc_page_ok(st, wait, ctx, m, "k:0001", 6, "k:1", 3, 5),
       "%s: an after beyond the prefix: an empty page", what);
    ok(lc_page_ok(st, wait, ctx, m, NULL, 0, "\xff\xff\xff", 3, 5),
       "%s: an after beyond the last key: an empty page", what);
    ok(lc_page_ok(st, wait, ctx, m, "\xff", 1, NULL, 0, 10), "%s: a prefix of 0xFF", what);
    ok(lc_page_ok(st, wait, ctx, m, "\xff\xff", 2, "\xff\xff", 2, 10),
       "%s: prefix 0xFF 0xFF after itself: its longer keys", what);
    ok(lc_page_ok(st, wait, ctx, m, "\x00", 1, NULL, 0, 10),
       "%s: a prefix of 0x00 skips the internal keys under it", what);
    ok(lc_page_ok(st, wait, ctx, m,
                  "\x00"
                  "c/",
                  3, NULL, 0, 10),
       "%s: the internal prefix itself lists nothing", what);
    ok(lc_page_ok(st, wait, ctx, m, NULL, 0, "", 0, 3), "%s: after the empty key", what);
    ok(lc_page_ok(st, wait, ctx, m, "nothing", 7, NULL, 0, 10),
       "%s: a prefix no key has: an empty page", what);
    ok(lc_page_ok(st, wait, ctx, m, "g*", 2, NULL, 0, 10) &&
           lc_page_ok(st, wait, ctx, m, "g?", 2, NULL, 0, 10) &&
           lc_page_ok(st, wait, ctx, m, "g[", 2, NULL, 0, 10) &&
           lc_page_ok(st, wait, ctx, m, "g\\", 2, NULL, 0, 10) &&
           lc_page_ok(st, wait, ctx, m, "g[a", 3, NULL, 0, 10),
       "%s: prefixes with * ? [ \\ list only the keys that begin with those bytes", what);
    char deleted[] = "k:000003"; /* i % 10 == 3: deleted */
    ok(lc_page_ok(st, wait, ctx, m, deleted, 8, NULL, 0, 10),
       "%s: a deleted key's own prefix: not listed", what);
    size_t pages = 0;
    ok(lc_walk_ok(st, wait, ctx, m, "k:", 2, 97, &pages) && pages > 1,
       "%s: walking prefix k: by pages of 97 gives every key once, in order (%zu pages)", what,
       pages);
    ok(lc_walk_ok(st, wait, ctx, m, "\xff", 1, 1, &pages) && pages >= 4,
       "%s: walking prefix 0xFF by pages of 1 (%zu pages)", what, pages);
    lc_res_t r = {.stop_after_one = true};
    ok(lc_list(st, wait, ctx, "k:", 2, NULL, 0, 10, &r) && r.rc == 0 && r.n == 1 && r.more,
       "%s: a callback that stops gets one key and more 1", what);
    free(r.keys);
}

#endif /* LIST_CHECK_H */
