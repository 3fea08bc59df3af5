/* crdt_private.h - libcrdt internals shared by the type implementations; not installed */
#ifndef CRDT_PRIVATE_H
#define CRDT_PRIVATE_H

#include <jansson.h>
#include <stdarg.h>
#include <string.h>

#include "crdt.h"

/* ---- the heap: every allocation of libcrdt goes through the hooks of crdt_set_allocator ------ */

extern crdt_allocator_t crdt__alloc;
static inline void *crdt__malloc(size_t n) { return crdt__alloc.malloc(n); }
static inline void *crdt__realloc(void *p, size_t n) { return crdt__alloc.realloc(p, n); }
static inline void crdt__free(void *p) { crdt__alloc.free(p); }
void *crdt__calloc(size_t n, size_t size);

/* ---- objects: every type's struct starts with crdt_obj_t, whose vtable says what it is ------- */

typedef struct crdt__reader crdt__reader_t;
typedef struct crdt__writer crdt__writer_t;

typedef struct crdt__vtable {
    crdt_type_t type;
    const char *name;
    crdt_obj_t *(*create)(void);
    void (*destroy)(crdt_obj_t *o);
    crdt_obj_t *(*clone)(const crdt_obj_t *o);
    /* Joins src (same type) into dst: 1 changed, 0 not, CRDT_ENOMEM. On ENOMEM dst must still be a
     * valid state (it may hold part of src: any partial join is below the full one). */
    int (*merge)(crdt_obj_t *dst, const crdt_obj_t *src);
    bool (*equal)(const crdt_obj_t *a, const crdt_obj_t *b);
    bool (*is_empty)(const crdt_obj_t *o);
    void (*stats)(const crdt_obj_t *o, crdt_stats_t *st);
    /* Payload only (the frame is core.c's); canonical: equal states, identical bytes. */
    void (*encode)(const crdt_obj_t *o, crdt__writer_t *w);
    /* Payload only; must consume exactly r's bytes, validate everything, and on failure call
     * crdt__fail (or crdt__nomem) and return NULL. */
    crdt_obj_t *(*decode)(crdt__reader_t *r);
    /* Optional: joins n encodings (whole frames) into dst as crdt_obj_merge_encoded_many says,
     * without building objects where it can. NULL: decode each, then merge. */
    int (*merge_encoded)(crdt_obj_t *dst, const crdt_bytes_t *encs, size_t n, size_t *failed,
                         crdt_error_t *err);
    /* The "state" member of the JSON form (core adds "type"); NULL on ENOMEM. */
    json_t *(*to_json)(const crdt_obj_t *o);
    /* From the "state" member; on failure fill err via crdt__json_fail and return NULL. */
    crdt_obj_t *(*from_json)(const json_t *state, crdt_error_t *err);
    /* Optional, for the types whose timestamps are HLC: 1 and the greatest one in *out, 0 when
     * the object holds none. NULL: the type holds no HLC timestamps. */
    int (*max_ts)(const crdt_obj_t *o, crdt_hlc_ts_t *out);
} crdt__vtable_t;

struct crdt_obj {
    const crdt__vtable_t *vt;
};

/* The vtable of a type tag, or NULL for an unknown tag. */
const crdt__vtable_t *crdt__vtable_of(int type);

extern const crdt__vtable_t crdt__gcounter_vt;
extern const crdt__vtable_t crdt__pncounter_vt;
extern const crdt__vtable_t crdt__lwwreg_vt;
extern const crdt__vtable_t crdt__lwwset_vt;
extern const crdt__vtable_t crdt__orset_vt;
extern const crdt__vtable_t crdt__timeline_vt;

/* Checks a frame (length, CRC-32C, version, type tag, payload length) and gives its type's vtable
 * and a reader over the payload. 0 or CRDT_EDECODE with err filled. */
int crdt__frame_open(const uint8_t *data, size_t len, size_t base, crdt_error_t *err,
                     const crdt__vtable_t **vt, crdt__reader_t *payload);
/* Decodes a payload opened by crdt__frame_open (every byte must be used); NULL with err filled. */
crdt_obj_t *crdt__decode_payload(const crdt__vtable_t *vt, crdt__reader_t *payload);
/* Decodes one encoding that must be of dst's type: NULL with err filled (CRDT_EDECODE, CRDT_ETYPE
 * or CRDT_ENOMEM). */
crdt_obj_t *crdt__decode_one(const crdt_obj_t *dst, const crdt_bytes_t *enc, crdt_error_t *err);

/* OR-Set queries behind the public crdt_set_* calls (which live in lwwset.c and dispatch). */
int crdt__orset_contains(const crdt_obj_t *s, const void *m, size_t len);
/* 1 and the timestamp of m's entry (live or tombstone) in an LWW-set, 0 when m has none. */
int crdt__lwwset_member_ts(const crdt_obj_t *s, const void *m, size_t len, crdt_hlc_ts_t *ts);
size_t crdt__orset_size(const crdt_obj_t *s);

/* CRDT_MUT_DELETE of each set-like type (crdt.h documents the semantics), under the mutator
 * contract: 1 and *delta (if delta is not NULL), 0 when nothing live was there, or a negative
 * code with the object unchanged. */
int crdt__timeline_delete(crdt_obj_t *t, crdt_obj_t **delta);
int crdt__lwwset_delete(crdt_obj_t *s, const crdt_hlc_ts_t *ts, crdt_obj_t **delta);
int crdt__orset_delete(crdt_obj_t *s, crdt_obj_t **delta);
int crdt__orset_foreach(const crdt_obj_t *s, crdt_member_cb cb, void *ud);

/* ---- binary writer: errors are sticky, so encoders write straight on and check once --------- */

struct crdt__writer {
    crdt_buf_t *b;
    int err;
};

void crdt__wr_u8(crdt__writer_t *w, uint8_t v);
void crdt__wr_varint(crdt__writer_t *w, uint64_t v);
void crdt__wr_raw(crdt__writer_t *w, const void *p, size_t n);
/* varint length, then the bytes */
void crdt__wr_blob(crdt__writer_t *w, const void *p, size_t n);
/* 8 bytes, IEEE 754 little endian */
void crdt__wr_double(crdt__writer_t *w, double d);
void crdt__wr_hlc(crdt__writer_t *w, const crdt_hlc_ts_t *ts);

/* ---- binary reader: every read is bounds-checked; the first failure is recorded ------------- */

struct crdt__reader {
    const uint8_t *p;
    size_t len;
    size_t pos;
    size_t base; /* offset of p[0] in the whole input, for error offsets */
    crdt_error_t *err;
};

/* Records CRDT_EDECODE at the reader's position (first failure wins); returns CRDT_EDECODE. */
int crdt__fail(crdt__reader_t *r, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
int crdt__nomem(crdt__reader_t *r);
int crdt__rd_u8(crdt__reader_t *r, uint8_t *v);
int crdt__rd_varint(crdt__reader_t *r, uint64_t *v);
/* A varint that must be <= max; `what` names it in the error. */
int crdt__rd_count(crdt__reader_t *r, uint64_t max, const char *what, uint64_t *v);
int crdt__rd_raw(crdt__reader_t *r, size_t n, const uint8_t **p);
/* varint length (<= CRDT_MAX_BLOB and <= what remains), then borrows the bytes */
int crdt__rd_blob(crdt__reader_t *r, const uint8_t **p, size_t *n);
/* a finite double (NaN, infinities and -0.0 are rejected: they are never encoded) */
int crdt__rd_score(crdt__reader_t *r, double *d);
int crdt__rd_hlc(crdt__reader_t *r, crdt_hlc_ts_t *ts);
/* Succeeds only when every byte was consumed. */
int crdt__rd_end(crdt__reader_t *r);

/* ---- JSON helpers --------------------------------------------------------------------------- */

/* Fills err (if not NULL) with CRDT_EDECODE and the message; returns NULL for convenience. */
void *crdt__json_fail(crdt_error_t *err, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* New reference: the bytes' JSON form, crdt_json_bytes (a string when text, else {"base64"}). */
json_t *crdt__json_blob(const void *p, size_t n);
/* Reads either JSON form of bytes (crdt_json_get_bytes, at most CRDT_MAX_BLOB) into a new buffer;
 * `what` names the field in the error. */
int crdt__json_get_blob(const json_t *j, const char *what, uint8_t **out, size_t *n,
                        crdt_error_t *err);
/* A JSON integer in [min, max]. */
int crdt__json_get_int(const json_t *j, const char *what, int64_t min, int64_t max, int64_t *out,
                       crdt_error_t *err);
/* A finite JSON number (integer or real); -0.0 becomes 0.0. */
int crdt__json_get_score(const json_t *j, const char *what, double *out, crdt_error_t *err);
int crdt__json_get_hlc(const json_t *j, const char *what, crdt_hlc_ts_t *ts, crdt_error_t *err);

/* ---- hashing and a compact open-addressing index of uint32 ids ------------------------------ */


/* Gives the key bytes of an id; the index stores only ids and asks its owner for keys. */
typedef void (*crdt__key_fn)(const void *ctx, uint32_t id, const uint8_t **key, size_t *len);

typedef struct crdt__hidx {
    uint32_t *slots; /* 0: empty, else id + 1 and a tag (hash.c) */
    uint32_t mask;   /* capacity - 1 (a power of two, or 0 before the first insert); its top
                      * bit says the tags are off (hash.c) */
    uint32_t count;
    uint64_t seed;
} crdt__hidx_t;

#define CRDT__NO_ID UINT32_MAX

void crdt__hidx_init(crdt__hidx_t *h);
/* Mixed into the seeds of the indexes made from now on (crdt.wasm: random bytes from JavaScript). */
void crdt__hidx_set_salt(uint64_t salt);
void crdt__hidx_free(crdt__hidx_t *h);
/* The id whose key equals (key, len), or CRDT__NO_ID. */
uint32_t crdt__hidx_find(const crdt__hidx_t *h, const void *key, size_t len, crdt__key_fn fn,
                         const void *ctx);
/* Inserts an id whose key is not present yet (the caller checked); may grow. 0 or CRDT_ENOMEM. */
int crdt__hidx_insert(crdt__hidx_t *h, uint32_t id, crdt__key_fn fn, const void *ctx);
/* The index's own keyed hash (hash.c): fast, private to a process, not crdt_hash64. */
uint64_t crdt__hidx_hash_bytes(const void *data, size_t n, uint64_t seed);
/* The hash find and insert_reserved use (so a caller that does both hashes once). */
static inline uint64_t crdt__hidx_hash(const crdt__hidx_t *h, const void *key, size_t len)
{
    return crdt__hidx_hash_bytes(key, len, h->seed);
}
uint32_t crdt__hidx_find_hashed(const crdt__hidx_t *h, const void *key, size_t len, uint64_t hash,
                                crdt__key_fn fn, const void *ctx);
/* Room for one more id, as crdt__hidx_insert makes it (then insert_reserved). 0 or CRDT_ENOMEM. */
int crdt__hidx_reserve_one(crdt__hidx_t *h, crdt__key_fn fn, const void *ctx);
/* Inserts an absent id whose key hashes to `hash`, with room reserved beforehand (cannot fail). */
void crdt__hidx_insert_reserved(crdt__hidx_t *h, uint32_t id, uint64_t hash);
/* Asks the CPU to load the home slot of `hash` (a hint: no effect). */
void crdt__hidx_prefetch(const crdt__hidx_t *h, uint64_t hash);
/* Removes an id that is present. */
void crdt__hidx_remove(crdt__hidx_t *h, uint32_t id, crdt__key_fn fn, const void *ctx);
/* Makes room for `n` ids in all without further growth. 0 or CRDT_ENOMEM. */
int crdt__hidx_reserve(crdt__hidx_t *h, uint32_t n, crdt__key_fn fn, const void *ctx);
size_t crdt__hidx_memory(const crdt__hidx_t *h);

/* ---- blob store: member bytes of one object in one growing buffer, no malloc per member ----- */

typedef struct crdt__blobs {
    uint8_t *data;
    uint32_t len;
    uint32_t cap;
    uint32_t garbage; /* bytes of dropped blobs, reclaimed by the owner's compaction */
} crdt__blobs_t;

/* Copies n bytes in and returns their offset in *off. CRDT_ENOMEM, or CRDT_EINVAL past 4 GiB. */
int crdt__blobs_add(crdt__blobs_t *b, const void *p, size_t n, uint32_t *off);
static inline void crdt__blobs_drop(crdt__blobs_t *b, size_t n) { b->garbage += (uint32_t)n; }
/* True when dropped bytes make up over half the store (worth a compaction by the owner). */
static inline bool crdt__blobs_wants_compaction(const crdt__blobs_t *b)
{
    return b->garbage > 4096 && b->garbage > b->len / 2;
}
void crdt__blobs_free(crdt__blobs_t *b);

/* ---- small shared helpers ------------------------------------------------------------------- */

/* memcmp order for byte strings of different lengths (a prefix sorts first). */
static inline int crdt__bytes_cmp(const void *a, size_t alen, const void *b, size_t blen)
{
    size_t n = alen < blen ? alen : blen;
    int c = n ? memcmp(a, b, n) : 0;
    if (c)
        return c;
    return (alen > blen) - (alen < blen);
}

static inline bool crdt__replica_ok(uint64_t r) { return r >= 1 && r <= CRDT_REPLICA_MAX; }

/* CRC-32C by the tables alone (crdt_crc32c uses the CPU's instruction when it has one); for
 * tests that compare the two. */
uint32_t crdt__crc32c_portable(uint32_t crc, const void *data, size_t n);

/* Growth for arrays: returns the new capacity >= need, or 0 on overflow. */
size_t crdt__grow_cap(size_t cap, size_t need);

#endif /* CRDT_PRIVATE_H */
