/* crdt_wasm.c - libcrdt's exported C ABI for WebAssembly: handles, (ptr, len) buffers, results */
/*
 * The JavaScript side (gateway/client/js/crdt-wasm.js) drives libcrdt through these functions
 * only. Conventions, one for every call:
 *   - Objects and clocks are handles: pointers into linear memory, made by crdt_wasm_obj_new /
 *     _decode / _clone / crdt_wasm_hlc_new and released by the matching _free. A null handle
 *     gets CRDT_EINVAL, an object of another type than a call needs CRDT_ETYPE. A handle that is
 *     not a live one (freed, made up) is the caller's bug: crdt-wasm.js never passes one (its
 *     wrappers refuse to be used once freed).
 *   - Bytes go in as (ptr, len) in memory the caller got from crdt_wasm_alloc (and frees).
 *   - Functions return an int: 0 or more on success (1 changed / 0 no-op for writes, counts for
 *     reads), a negative CRDT_E* code on failure. Whatever else a call produces (a delta's
 *     encoding, a value, entries) is in the result buffer (crdt_wasm_out_ref, or _ptr and _len),
 *     valid until the next call; every call that produces something starts it empty. A decode
 * failure leaves its offset and text in crdt_wasm_err_offset()/_text().
 *   - Time is a parameter (now_ms): nothing here reads a clock, and the module imports nothing.
 * Result layouts (little endian): a timestamp is ms u64, logical u32, node u64 (20 bytes); a
 * timeline entry is score f64, member length u32, member bytes; a set member is length u32, bytes.
 */
#include <stddef.h>
#include <stdlib.h>

#include "crdt.h"
#include "crdt_private.h"
#include "heap.h"

_Static_assert(sizeof(void *) == 4 && sizeof(size_t) == 4 && offsetof(crdt_buf_t, len) == 4,
               "crdt_wasm_out_ref's layout is two u32s: wasm32 only");

#define EXPORT(name) __attribute__((export_name(#name), visibility("default")))

/* Results bigger than this are released after the next call starts, so one large encoding does
 * not pin its memory for the life of the page. */
#define OUT_KEEP (1u << 20)

static crdt_buf_t out;
static crdt_error_t last_err;

/* The one-entry delta every timeline write goes into (crdt_timeline_add_into), kept across writes
 * so that a write allocates nothing for it: made on the first write, dropped after a member of
 * more than TL_DELTA_KEEP bytes (it would keep the room) and by crdt_wasm_heap_live (the module's
 * own, not the caller's: a leak check does not count it). */
#define TL_DELTA_KEEP 4096u
static crdt_obj_t *tl_delta;

static void tl_delta_drop(void)
{
    crdt_obj_free(tl_delta);
    tl_delta = NULL;
}

/* ---- the heap: heap.c's size classes over wasi-libc's dlmalloc, for libcrdt and this file,
 * counted on request ------------------------------------------------------------------------
 * The count (bytes of live blocks) lets the JavaScript tests prove that freeing handles and
 * closing a replica gives every byte back. It costs a heap_usable per call, so it is
 * chosen at init (the tests ask for it; a page need not): one allocator, libcrdt's hook, either
 * way. */
static size_t heap_live;
static bool counting;

static void *counted_malloc(size_t n)
{
    void *p = heap_alloc(n);
    if (p)
        heap_live += heap_usable(p);
    return p;
}

static void *counted_realloc(void *p, size_t n)
{
    size_t before = p ? heap_usable(p) : 0;
    void *q = heap_resize(p, n ? n : 1); /* never 0: realloc(p, 0) would free p */
    if (q)
        heap_live = heap_live - before + heap_usable(q);
    return q;
}

static void counted_free(void *p)
{
    if (p) {
        heap_live -= heap_usable(p);
        heap_release(p);
    }
}

static crdt_allocator_t heap = {heap_alloc, heap_resize, heap_release};

static void *heap_malloc(size_t n)
{
    return heap.malloc(n ? n : 1);
}
static void heap_free(void *p)
{
    heap.free(p);
}

/* The loader calls this once, before anything else; count_heap non-zero keeps the count of
 * crdt_wasm_heap_live. (Not a constructor: a constructor links wasi-libc's exit-time stdio
 * flushing, and with it WASI imports.) */
EXPORT(crdt_wasm_init) void crdt_wasm_init(int count_heap)
{
    if (count_heap && !counting)
        heap = (crdt_allocator_t){counted_malloc, counted_realloc, counted_free};
    counting = counting || count_heap;
    crdt_set_allocator(&heap);
}

/* Random bytes from the page (crypto.getRandomValues) for the seeds of the id indexes: linear
 * memory has no ASLR, so without them a timeline's seed would be the same in every page and
 * colliding members could be computed offline. Call before making objects. */
EXPORT(crdt_wasm_hash_salt) void crdt_wasm_hash_salt(uint32_t lo, uint32_t hi)
{
    crdt__hidx_set_salt((uint64_t)hi << 32 | lo);
}

static void begin(void)
{
    if (out.cap > OUT_KEEP)
        crdt_buf_free(&out);
    out.len = 0;
    last_err.code = 0;
    last_err.offset = 0;
    last_err.text[0] = '\0';
}

static void put_u32(uint32_t v)
{
    uint8_t b[4] = {(uint8_t)v, (uint8_t)(v >> 8), (uint8_t)(v >> 16), (uint8_t)(v >> 24)};
    crdt_buf_append(&out, b, 4);
}

static void put_u64(uint64_t v)
{
    put_u32((uint32_t)v);
    put_u32((uint32_t)(v >> 32));
}

static int put_ts(const crdt_hlc_ts_t *ts)
{
    if (crdt_buf_reserve(&out, 20) < 0)
        return CRDT_ENOMEM;
    put_u64(ts->ms);
    put_u32(ts->logical);
    put_u64(ts->node);
    return 0;
}

/* A mutator's result: its delta's encoding in the result buffer (empty when nothing changed). The
 * state has changed when the encoding fails for memory; the caller then sees CRDT_ENOMEM. */
static int finish_delta(int rc, crdt_obj_t *delta)
{
    if (delta) {
        if (rc >= 0 && crdt_obj_encode(delta, &out) < 0)
            rc = CRDT_ENOMEM;
        crdt_obj_free(delta);
    }
    return rc;
}

static int check(const crdt_obj_t *o, crdt_type_t want)
{
    if (!o)
        return CRDT_EINVAL;
    return crdt_obj_type(o) == want ? 0 : CRDT_ETYPE;
}

static int check_set(const crdt_obj_t *o)
{
    if (!o)
        return CRDT_EINVAL;
    crdt_type_t t = crdt_obj_type(o);
    return t == CRDT_LWWSET || t == CRDT_ORSET ? 0 : CRDT_ETYPE;
}

static int check_counter(const crdt_obj_t *o)
{
    if (!o)
        return CRDT_EINVAL;
    crdt_type_t t = crdt_obj_type(o);
    return t == CRDT_GCOUNTER || t == CRDT_PNCOUNTER ? 0 : CRDT_ETYPE;
}

/* ---- memory, results, errors ----------------------------------------------------------------- */

/* n bytes (at least 1) for the caller to fill and free, or 0. */
EXPORT(crdt_wasm_alloc) void *crdt_wasm_alloc(size_t n)
{
    return heap_malloc(n);
}
EXPORT(crdt_wasm_free) void crdt_wasm_free(void *p)
{
    heap_free(p);
}

/* Bytes in live heap blocks (libcrdt's and the caller's allocations), not counting the result
 * buffer nor the caller's block `keep` (its input buffer; may be 0): what a leak check compares.
 * SIZE_MAX when the module was initialised without counting. */
EXPORT(crdt_wasm_heap_live) size_t crdt_wasm_heap_live(void *keep)
{
    if (!counting)
        return SIZE_MAX;
    tl_delta_drop();
    size_t n = heap_live;
    if (out.data)
        n -= heap_usable(out.data);
    if (keep)
        n -= heap_usable(keep);
    return n;
}

/* Where the result buffer's crdt_buf_t lives (data pointer, then length, as u32s on wasm32): the
 * JavaScript side reads both from memory instead of calling out_ptr and out_len on each result. */
EXPORT(crdt_wasm_out_ref) const crdt_buf_t *crdt_wasm_out_ref(void)
{
    return &out;
}
EXPORT(crdt_wasm_out_ptr) const uint8_t *crdt_wasm_out_ptr(void)
{
    return out.data;
}
EXPORT(crdt_wasm_out_len) size_t crdt_wasm_out_len(void)
{
    return out.len;
}
EXPORT(crdt_wasm_err_text) const char *crdt_wasm_err_text(void)
{
    return last_err.text;
}
EXPORT(crdt_wasm_err_offset) size_t crdt_wasm_err_offset(void)
{
    return last_err.offset;
}
/* A static NUL-terminated text for a CRDT_E* code. */
EXPORT(crdt_wasm_strerror) const char *crdt_wasm_strerror(int code)
{
    return crdt_strerror(code);
}

/* ---- objects --------------------------------------------------------------------------------- */

/* A new empty object of `type`; a timeline keeps at most max_size entries (0: unbounded). 0 on an
 * unknown type or no memory. */
EXPORT(crdt_wasm_obj_new) crdt_obj_t *crdt_wasm_obj_new(int type, uint32_t max_size)
{
    if (type == CRDT_TIMELINE)
        return crdt_timeline_new(max_size);
    if (type < CRDT_TYPE_MIN || type > CRDT_TYPE_MAX)
        return NULL;
    return crdt_obj_new((crdt_type_t)type);
}

EXPORT(crdt_wasm_obj_free) void crdt_wasm_obj_free(crdt_obj_t *o)
{
    crdt_obj_free(o);
}

EXPORT(crdt_wasm_obj_clone) crdt_obj_t *crdt_wasm_obj_clone(const crdt_obj_t *o)
{
    return o ? crdt_obj_clone(o) : NULL;
}

/* The type tag, or CRDT_EINVAL for a null handle. */
EXPORT(crdt_wasm_obj_type) int crdt_wasm_obj_type(const crdt_obj_t *o)
{
    return o ? (int)crdt_obj_type(o) : CRDT_EINVAL;
}

EXPORT(crdt_wasm_obj_equal) int crdt_wasm_obj_equal(const crdt_obj_t *a, const crdt_obj_t *b)
{
    return a && b && crdt_obj_equal(a, b);
}

EXPORT(crdt_wasm_obj_is_empty) int crdt_wasm_obj_is_empty(const crdt_obj_t *o)
{
    return o && crdt_obj_is_empty(o);
}

/* A new object from exactly len bytes of an encoding, or 0 with the error's code, offset and text
 * kept (crdt_wasm_err_*); the code is also the result buffer's first 4 bytes (as int32). */
EXPORT(crdt_wasm_obj_decode) crdt_obj_t *crdt_wasm_obj_decode(const void *p, size_t len)
{
    begin();
    crdt_obj_t *o = crdt_obj_decode(p, len, &last_err);
    if (!o)
        put_u32((uint32_t)(last_err.code ? last_err.code : CRDT_EDECODE));
    return o;
}

/* The object's encoding into the result buffer. 0 or CRDT_ENOMEM. */
EXPORT(crdt_wasm_obj_encode) int crdt_wasm_obj_encode(const crdt_obj_t *o)
{
    begin();
    if (!o)
        return CRDT_EINVAL;
    return crdt_obj_encode(o, &out);
}

/* Joins src into dst: 1 changed, 0 not, CRDT_ETYPE, CRDT_ENOMEM. */
EXPORT(crdt_wasm_obj_merge) int crdt_wasm_obj_merge(crdt_obj_t *dst, const crdt_obj_t *src)
{
    begin();
    if (!dst || !src)
        return CRDT_EINVAL;
    return crdt_obj_merge(dst, src);
}

/* Joins the encoding in p[0..len) into dst (crdt_obj_merge_encoded: validated first, dst unchanged
 * on CRDT_EDECODE / CRDT_ETYPE, whose offset and text are kept). */
EXPORT(crdt_wasm_obj_merge_encoded)
int crdt_wasm_obj_merge_encoded(crdt_obj_t *dst, const void *p, size_t len)
{
    begin();
    if (!dst)
        return CRDT_EINVAL;
    return crdt_obj_merge_encoded(dst, p, len, &last_err);
}

/* Bytes the object holds (crdt_obj_stats' memory), for compaction and metrics. */
EXPORT(crdt_wasm_obj_memory) size_t crdt_wasm_obj_memory(const crdt_obj_t *o)
{
    crdt_stats_t st = {0};
    if (o)
        crdt_obj_stats(o, &st);
    return st.memory;
}

/* ---- writes ---------------------------------------------------------------------------------- */

/* Every write, as libcrdt's one description of a write (crdt_mut_t, crdt_mut_apply): `type` is
 * the type the write needs (CRDT_ETYPE if o is another), `kind` a crdt_mut_kind_t (INCR, SET,
 * ADD, REMOVE); bytes are the member or value, score the timeline's, n a counter's increment,
 * (ms, logical, node) the timestamp of a register or LWW-set write, replica the counter slot or
 * OR-set dot. Returns 1 with the delta's encoding in the result buffer, 0 when nothing changed
 * (the buffer empty), or a negative code with o unchanged. */
EXPORT(crdt_wasm_apply)
int crdt_wasm_apply(crdt_obj_t *o, int type, int kind, const void *bytes, size_t len, double score,
                    int64_t n, uint64_t ms, uint32_t logical, uint64_t node, uint64_t replica)
{
    begin();
    if (!o || kind < CRDT_MUT_INCR || kind > CRDT_MUT_DELETE || kind == CRDT_MUT_MERGE)
        return CRDT_EINVAL;
    crdt_mut_t m = {
        .type = (crdt_type_t)type,
        .kind = (crdt_mut_kind_t)kind,
        .bytes = bytes,
        .len = len,
        .score = score,
        .n = n,
        .ts = {ms, logical, node},
    };
    crdt_obj_t *delta = NULL;
    return finish_delta(crdt_mut_apply(o, &m, replica, &delta), delta);
}

/* 1 when o has visible content (crdt_obj_is_live), 0 if not. */
EXPORT(crdt_wasm_is_live) int crdt_wasm_is_live(const crdt_obj_t *o)
{
    return o && crdt_obj_is_live(o) ? 1 : 0;
}

/* ---- timeline -------------------------------------------------------------------------------- */

/* A timeline add (kind CRDT_MUT_ADD) or remove (CRDT_MUT_REMOVE) of member bytes[0..len) at score:
 * crdt_wasm_apply's result for a timeline, without its 64-bit parameters (which a JavaScript
 * caller passes as BigInts, converted on every call: the most frequent write pays for none). */
EXPORT(crdt_wasm_timeline_write)
int crdt_wasm_timeline_write(crdt_obj_t *t, int kind, const void *bytes, size_t len, double score)
{
    begin();
    int rc = check(t, CRDT_TIMELINE);
    if (rc < 0)
        return rc;
    if (kind != CRDT_MUT_ADD && kind != CRDT_MUT_REMOVE)
        return CRDT_EINVAL;
    if (!tl_delta && !(tl_delta = crdt_timeline_new(0)))
        return CRDT_ENOMEM;
    rc = kind == CRDT_MUT_ADD ? crdt_timeline_add_into(t, bytes, len, score, tl_delta)
                              : crdt_timeline_remove_into(t, bytes, len, score, tl_delta);
    if (rc == 1 && crdt_obj_encode(tl_delta, &out) < 0)
        rc = CRDT_ENOMEM;
    if (len > TL_DELTA_KEEP)
        tl_delta_drop();
    return rc;
}

/* Live entries (0 for another type). */
EXPORT(crdt_wasm_timeline_card) size_t crdt_wasm_timeline_card(const crdt_obj_t *t)
{
    return check(t, CRDT_TIMELINE) < 0 ? 0 : crdt_timeline_card(t);
}

EXPORT(crdt_wasm_timeline_max_size) uint32_t crdt_wasm_timeline_max_size(const crdt_obj_t *t)
{
    return check(t, CRDT_TIMELINE) < 0 ? 0 : crdt_timeline_max_size(t);
}

/* 1 and the score (f64) in the result buffer if m is live, 0 if not. */
EXPORT(crdt_wasm_timeline_score)
int crdt_wasm_timeline_score(const crdt_obj_t *t, const void *m, size_t len)
{
    begin();
    int rc = check(t, CRDT_TIMELINE);
    if (rc < 0)
        return rc;
    double score;
    rc = crdt_timeline_score(t, m, len, &score);
    if (rc == 1 && crdt_buf_append(&out, &score, sizeof score) < 0)
        return CRDT_ENOMEM;
    return rc;
}

static int put_entries(const crdt_tl_entry_t *e, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        if (crdt_buf_reserve(&out, 12 + e[i].member_len) < 0)
            return CRDT_ENOMEM;
        crdt_buf_append(&out, &e[i].score, sizeof e[i].score);
        put_u32((uint32_t)e[i].member_len);
        crdt_buf_append(&out, e[i].member, e[i].member_len);
    }
    return (int)n;
}

/* 1 and the floor entry (the highest ever dropped) in the result buffer, or 0 if none. */
EXPORT(crdt_wasm_timeline_floor) int crdt_wasm_timeline_floor(const crdt_obj_t *t)
{
    begin();
    int rc = check(t, CRDT_TIMELINE);
    if (rc < 0)
        return rc;
    crdt_tl_entry_t e;
    if (crdt_timeline_floor(t, &e) != 1)
        return 0;
    return put_entries(&e, 1);
}

/* The number of entries read; `want` is capped by what can exist, so a huge count from the caller
 * allocates nothing extra. */
static crdt_tl_entry_t *entries_for(const crdt_obj_t *t, size_t skip, size_t *want)
{
    size_t card = crdt_timeline_card(t);
    size_t avail = skip < card ? card - skip : 0;
    if (*want > avail)
        *want = avail;
    return heap_malloc(*want * sizeof(crdt_tl_entry_t));
}

/* Up to count live entries newest first after skipping offset, into the result buffer. Returns how
 * many (INT32_MAX at most), or a negative code. */
EXPORT(crdt_wasm_timeline_range)
int crdt_wasm_timeline_range(const crdt_obj_t *t, size_t offset, size_t count)
{
    begin();
    int rc = check(t, CRDT_TIMELINE);
    if (rc < 0)
        return rc;
    if (count > INT32_MAX)
        count = INT32_MAX;
    crdt_tl_entry_t *e = entries_for(t, offset, &count);
    if (!e)
        return CRDT_ENOMEM;
    size_t n = crdt_timeline_range(t, offset, count, e);
    rc = put_entries(e, n);
    heap_free(e);
    return rc;
}

/* Up to limit live entries with min <= score <= max, newest first, continuing strictly after
 * (after_score, after_m) when has_after is non-zero. Into the result buffer; returns how many. */
EXPORT(crdt_wasm_timeline_range_by_score)
int crdt_wasm_timeline_range_by_score(const crdt_obj_t *t, double max, double min, int has_after,
                                      double after_score, const void *after_m, size_t after_len,
                                      size_t limit)
{
    begin();
    int rc = check(t, CRDT_TIMELINE);
    if (rc < 0)
        return rc;
    if (limit > INT32_MAX)
        limit = INT32_MAX;
    crdt_tl_entry_t after = {after_m, after_len, after_score};
    crdt_tl_entry_t *e = entries_for(t, 0, &limit);
    if (!e)
        return CRDT_ENOMEM;
    size_t n = crdt_timeline_range_by_score(t, max, min, has_after ? &after : NULL, limit, e);
    rc = put_entries(e, n);
    heap_free(e);
    return rc;
}

/* ---- counters -------------------------------------------------------------------------------- */

/* 0 and the value (int64) in the result buffer, or CRDT_EOVERFLOW / CRDT_ETYPE. */
EXPORT(crdt_wasm_counter_value) int crdt_wasm_counter_value(const crdt_obj_t *c)
{
    begin();
    int rc = check_counter(c);
    if (rc < 0)
        return rc;
    int64_t v;
    rc = crdt_counter_value(c, &v);
    if (rc < 0)
        return rc;
    put_u64((uint64_t)v);
    return out.len == 8 ? 0 : CRDT_ENOMEM;
}

/* ---- LWW-register ---------------------------------------------------------------------------- */

/* 1 and the timestamp then the value in the result buffer if set, 0 if never set. */
EXPORT(crdt_wasm_lwwreg_get) int crdt_wasm_lwwreg_get(const crdt_obj_t *r)
{
    begin();
    int rc = check(r, CRDT_LWWREG);
    if (rc < 0)
        return rc;
    const void *v;
    size_t len;
    crdt_hlc_ts_t ts;
    if (crdt_lwwreg_get(r, &v, &len, &ts) != 1)
        return 0;
    if (put_ts(&ts) < 0 || crdt_buf_append(&out, v, len) < 0)
        return CRDT_ENOMEM;
    return 1;
}

/* ---- set queries (LWW-set and OR-set) -------------------------------------------------------- */

/* 1 if m is a live member of a LWW-set or OR-set, 0 if not. */
EXPORT(crdt_wasm_set_contains)
int crdt_wasm_set_contains(const crdt_obj_t *s, const void *m, size_t len)
{
    int rc = check_set(s);
    return rc < 0 ? rc : crdt_set_contains(s, m, len);
}

EXPORT(crdt_wasm_set_size) size_t crdt_wasm_set_size(const crdt_obj_t *s)
{
    return check_set(s) < 0 ? 0 : crdt_set_size(s);
}

static int put_member(const void *m, size_t len, void *ud)
{
    (void)ud;
    if (crdt_buf_reserve(&out, 4 + len) < 0)
        return CRDT_ENOMEM;
    put_u32((uint32_t)len);
    crdt_buf_append(&out, m, len);
    return 0;
}

/* Every live member in ascending bytewise order into the result buffer; returns how many. */
EXPORT(crdt_wasm_set_members) int crdt_wasm_set_members(const crdt_obj_t *s)
{
    begin();
    int rc = check_set(s);
    if (rc < 0)
        return rc;
    rc = crdt_set_foreach(s, put_member, NULL);
    if (rc < 0)
        return rc;
    size_t n = crdt_set_size(s);
    return n > INT32_MAX ? CRDT_ELIMIT : (int)n;
}

/* ---- hybrid logical clock -------------------------------------------------------------------- */

/* A new clock for replica `node` that refuses remote timestamps more than max_drift_ms ahead, or
 * 0 for a bad node id or no memory. Free with crdt_wasm_hlc_free. */
EXPORT(crdt_wasm_hlc_new) crdt_hlc_t *crdt_wasm_hlc_new(uint64_t node, uint64_t max_drift_ms)
{
    crdt_hlc_t *c = heap_malloc(sizeof *c);
    if (c && crdt_hlc_init(c, node, max_drift_ms) < 0) {
        heap_free(c);
        c = NULL;
    }
    return c;
}

EXPORT(crdt_wasm_hlc_free) void crdt_wasm_hlc_free(crdt_hlc_t *c)
{
    heap_free(c);
}

/* A local event at now_ms: the new timestamp in the result buffer. */
EXPORT(crdt_wasm_hlc_tick) int crdt_wasm_hlc_tick(crdt_hlc_t *c, uint64_t now_ms)
{
    begin();
    if (!c)
        return CRDT_EINVAL;
    crdt_hlc_ts_t ts;
    int rc = crdt_hlc_tick(c, now_ms, &ts);
    return rc < 0 ? rc : put_ts(&ts);
}

/* Receipt of a remote timestamp at now_ms: the new local timestamp in the result buffer, or
 * CRDT_ECLOCK (clock unchanged) if it runs too far ahead. */
EXPORT(crdt_wasm_hlc_recv)
int crdt_wasm_hlc_recv(crdt_hlc_t *c, uint64_t now_ms, uint64_t ms, uint32_t logical, uint64_t node)
{
    begin();
    if (!c)
        return CRDT_EINVAL;
    crdt_hlc_ts_t remote = {ms, logical, node}, ts;
    int rc = crdt_hlc_recv(c, now_ms, &remote, &ts);
    return rc < 0 ? rc : put_ts(&ts);
}
