/* crdt.h - libcrdt: state-, delta- and op-based CRDTs with a binary codec */
#ifndef CRDT_H
#define CRDT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define CRDT_VERSION_MAJOR 0
#define CRDT_VERSION_MINOR 1
#define CRDT_VERSION_PATCH 0

/* ------------------------------------------------------------------------------------------------
 * Errors. Functions return 0 (or a documented non-negative result) on success and one of these
 * negative codes on failure. Constructors return NULL on failure.
 * --------------------------------------------------------------------------------------------- */
enum {
    CRDT_OK = 0,
    CRDT_ENOMEM = -1,    /* allocation failed; the object is unchanged */
    CRDT_EINVAL = -2,    /* bad argument: NaN/infinite score, replica id 0, oversized member ... */
    CRDT_ETYPE = -3,     /* the object is of another type than the operation needs */
    CRDT_EOVERFLOW = -4, /* a counter would leave the range of int64 */
    CRDT_EDECODE = -5,   /* malformed, truncated or corrupted encoding */
    CRDT_ECLOCK = -6,    /* a remote clock runs further ahead than the configured bound */
    CRDT_ELIMIT = -7,    /* a configured limit was reached (size, count, queue); nothing changed */
    CRDT_EUNAVAIL = -8,  /* the store cannot serve now (unreachable, loading); retry later */
    CRDT_ENOTSUP = -9,   /* the type has no such operation: a G-Counter cannot be deleted */
    CRDT_EIO = -20,      /* writing or syncing storage failed: writes are refused until restart */
};

/* Returns a static, human-readable text for a CRDT_E* code: the one strerror of every layer
 * (libcrdt, the replica and stores, the gateway). */
const char *crdt_strerror(int err);

/* ------------------------------------------------------------------------------------------------
 * The heap. Every allocation libcrdt makes goes through these hooks (default: the C library's).
 * Set them once, before any other call (a Redis module passes RedisModule_Alloc & co., so that
 * Redis accounts for CRDT values). Memory libcrdt hands out (crdt_base64_encode strings, the data
 * of a crdt_buf_t) is released with crdt_free / crdt_buf_free. NULL hooks restore the default.
 * --------------------------------------------------------------------------------------------- */
typedef struct crdt_allocator {
    void *(*malloc)(size_t n);
    void *(*realloc)(void *p, size_t n);
    void (*free)(void *p);
} crdt_allocator_t;

void crdt_set_allocator(const crdt_allocator_t *a);
void crdt_free(void *p);

/* Filled by decoders on failure; the caller keeps it (usually on the stack). `offset` is the byte
 * offset (binary codec) or the JSON path-ish position of the fault; `text` says what was wrong. */
typedef struct crdt_error {
    int code;
    size_t offset;
    char text[160];
} crdt_error_t;

/* The largest member, register value or element accepted by mutators and decoders (bytes). */
#define CRDT_MAX_BLOB (64u * 1024u * 1024u)

/* Replica ids are 1 .. CRDT_REPLICA_MAX (0 means "none"; ids stay exact as JSON integers). */
#define CRDT_REPLICA_MAX ((uint64_t)INT64_MAX)

/* ------------------------------------------------------------------------------------------------
 * Growable byte buffer used by the encoders. Zero-initialise (`crdt_buf_t b = {0};`), append,
 * then crdt_buf_free(). The encoders append, so several objects can share one buffer.
 * --------------------------------------------------------------------------------------------- */
typedef struct crdt_buf {
    uint8_t *data;
    size_t len;
    size_t cap;
} crdt_buf_t;

int crdt_buf_reserve(crdt_buf_t *b, size_t extra);
int crdt_buf_append(crdt_buf_t *b, const void *p, size_t n);
void crdt_buf_free(crdt_buf_t *b);

/* A 64-bit hash of n bytes under a seed. Stable: the same on every machine and release (its output
 * may be persisted or compared between replicas, e.g. as a state fingerprint). Not cryptographic. */
uint64_t crdt_hash64(const void *p, size_t n, uint64_t seed);

/* CRC-32C (Castagnoli) of `n` bytes, continuing from `crc` (start with 0). */
uint32_t crdt_crc32c(uint32_t crc, const void *p, size_t n);

/* ------------------------------------------------------------------------------------------------
 * Byte codecs shared by every layer (one of each): unsigned LEB128 varints and base64.
 * --------------------------------------------------------------------------------------------- */
#define CRDT_VARINT_MAX 10

/* Inline, because every codec's hot loop reads and writes them (the log's scan, the timeline's
 * encoder, the peer wire); this is the one implementation. */

/* Writes v into out (at most CRDT_VARINT_MAX bytes) and returns how many bytes it took. */
static inline size_t crdt_varint_put(uint8_t out[CRDT_VARINT_MAX], uint64_t v)
{
    size_t n = 0;
    while (v >= 0x80) {
        out[n++] = (uint8_t)(v | 0x80);
        v >>= 7;
    }
    out[n++] = (uint8_t)v;
    return n;
}

/* Bytes v takes as a varint. */
static inline size_t crdt_varint_len(uint64_t v)
{
    size_t n = 1;
    while (v >= 0x80) {
        v >>= 7;
        n++;
    }
    return n;
}

/* Why crdt_varint_scan refused a varint. */
enum {
    CRDT_VARINT_TRUNCATED = 1,    /* the input ends inside it */
    CRDT_VARINT_TOO_LONG = 2,     /* more than 64 bits */
    CRDT_VARINT_NONCANONICAL = 3, /* a trailing zero group: the value has a shorter encoding */
};

/* Reads a varint at data[*pos] and advances *pos: 0, or a CRDT_VARINT_* reason (*pos and *v
 * unchanged). Only canonical encodings are accepted, so every value has one encoding. */
static inline int crdt_varint_scan(const void *data, size_t len, size_t *pos, uint64_t *v)
{
    const uint8_t *p = (const uint8_t *)data;
    uint64_t x = 0;
    size_t at = *pos;
    for (unsigned i = 0;; i++) {
        if (at >= len)
            return CRDT_VARINT_TRUNCATED;
        uint8_t byte = p[at++];
        if (i == 9 && byte > 1)
            return CRDT_VARINT_TOO_LONG;
        if (i > 0 && byte == 0)
            return CRDT_VARINT_NONCANONICAL;
        x |= (uint64_t)(byte & 0x7F) << (7 * i);
        if (!(byte & 0x80))
            break;
    }
    *pos = at;
    *v = x;
    return 0;
}

/* crdt_varint_scan with libcrdt's error code: 0, or CRDT_EDECODE (*pos unchanged). */
static inline int crdt_varint_get(const void *data, size_t len, size_t *pos, uint64_t *v)
{
    return crdt_varint_scan(data, len, pos, v) ? CRDT_EDECODE : 0;
}

/* Appends v; 0 or CRDT_ENOMEM. */
int crdt_buf_put_varint(crdt_buf_t *b, uint64_t v);

/* Base64 (RFC 4648) variants, as flags: the standard alphabet with padding (0), the URL-safe
 * alphabet ('-', '_'), and no padding (on decode: padding optional, but complete when present).
 * Decoders refuse non-zero bits under the padding, so every byte string has one encoding. */
#define CRDT_B64_STD 0u
#define CRDT_B64_URL 1u
#define CRDT_B64_NOPAD 2u

/* Characters the encoding of n bytes takes (no NUL). */
size_t crdt_base64_encoded_len(size_t n, unsigned flags);
/* Writes the encoding of data[0..n) into out (crdt_base64_encoded_len bytes, no NUL); returns
 * that length. */
size_t crdt_base64_encode_into(char *out, const void *data, size_t n, unsigned flags);
/* A new NUL-terminated string (free with crdt_free), or NULL; *out_len (if not NULL) its length. */
char *crdt_base64_encode_ex(const void *data, size_t len, unsigned flags, size_t *out_len);
/* Decodes into a new buffer *out (free with crdt_free): 0, CRDT_EDECODE or CRDT_ENOMEM. */
int crdt_base64_decode_ex(const char *s, size_t slen, unsigned flags, uint8_t **out,
                          size_t *out_len);
/* Decodes into out, which has room for slen / 4 * 3 + 3 bytes (no allocation; it writes at most
 * slen / 4 * 3 + 2, and with padding required at most slen / 4 * 3): 0 and *out_len,
 * or CRDT_EDECODE (out's contents then undefined). */
int crdt_base64_decode_into(uint8_t *out, const char *s, size_t slen, unsigned flags,
                            size_t *out_len);
/* The standard form (CRDT_B64_STD) of crdt_base64_encode_ex and crdt_base64_decode_ex. */
char *crdt_base64_encode(const void *data, size_t len, size_t *out_len);
int crdt_base64_decode(const char *s, size_t slen, uint8_t **out, size_t *out_len);

/* Byte strings as text (docs/encoding.md, "Bytes in JSON and URLs"): 1 when p[0..n) is valid
 * UTF-8 (RFC 3629: shortest forms only, no surrogates, at most U+10FFFF) with no NUL byte, the
 * bytes every text form (JSON strings, crdtc's arguments) carries as they are. */
int crdt_utf8_text(const void *p, size_t n);

/* ------------------------------------------------------------------------------------------------
 * Hybrid logical clock. Timestamps order totally by (ms, logical, node).
 * --------------------------------------------------------------------------------------------- */
typedef struct crdt_hlc_ts {
    uint64_t ms;      /* physical milliseconds since the Unix epoch */
    uint32_t logical; /* counter within one millisecond */
    uint64_t node;    /* replica id of the writer, the final tie-break */
} crdt_hlc_ts_t;

typedef struct crdt_hlc {
    uint64_t node;
    uint64_t last_ms;
    uint32_t last_logical;
    uint64_t max_drift_ms; /* how far ahead of local time a remote timestamp may be */
} crdt_hlc_t;

/* -1, 0, 1 as a orders before, equal to, after b. */
int crdt_hlc_cmp(const crdt_hlc_ts_t *a, const crdt_hlc_ts_t *b);

/* Initialises a clock for replica `node` (1..CRDT_REPLICA_MAX). CRDT_EINVAL on a bad node id. */
int crdt_hlc_init(crdt_hlc_t *c, uint64_t node, uint64_t max_drift_ms);

/* A local event at physical time `now_ms`: writes into *out a timestamp greater than every one this
 * clock issued or received. CRDT_EOVERFLOW if the logical counter is exhausted. */
int crdt_hlc_tick(crdt_hlc_t *c, uint64_t now_ms, crdt_hlc_ts_t *out);

/* Receipt of a remote timestamp: advances the clock past it and writes the new local timestamp into
 * *out. CRDT_ECLOCK (clock unchanged) if remote->ms is more than max_drift_ms ahead of now_ms. */
int crdt_hlc_recv(crdt_hlc_t *c, uint64_t now_ms, const crdt_hlc_ts_t *remote, crdt_hlc_ts_t *out);

/* The system's real-time clock in milliseconds (the only function here that reads the OS). */
uint64_t crdt_wall_ms(void);

/* ------------------------------------------------------------------------------------------------
 * Objects. Every CRDT is a crdt_obj_t of one type. A delta is an object of the same type, so
 * deltas, states and ops all join with crdt_obj_merge().
 * --------------------------------------------------------------------------------------------- */
typedef enum crdt_type {
    CRDT_GCOUNTER = 1,
    CRDT_PNCOUNTER = 2,
    CRDT_LWWREG = 3,
    CRDT_LWWSET = 4,
    CRDT_ORSET = 5,
    CRDT_TIMELINE = 6,
} crdt_type_t;

#define CRDT_TYPE_MIN CRDT_GCOUNTER
#define CRDT_TYPE_MAX CRDT_TIMELINE

/* "gcounter", "pncounter", "lwwreg", "lwwset", "orset", "timeline"; NULL for an unknown type. */
const char *crdt_type_name(crdt_type_t t);
/* Parses a name as above; CRDT_EINVAL if unknown. */
int crdt_type_from_name(const char *name, crdt_type_t *out);

typedef struct crdt_obj crdt_obj_t;

/* Returns a new, empty object (the lattice's bottom) of `type`; a timeline made this way is
 * unbounded (see crdt_timeline_new). NULL on allocation failure or an unknown type. */
crdt_obj_t *crdt_obj_new(crdt_type_t type);
void crdt_obj_free(crdt_obj_t *o);
/* Returns a new deep copy, or NULL. */
crdt_obj_t *crdt_obj_clone(const crdt_obj_t *o);
crdt_type_t crdt_obj_type(const crdt_obj_t *o);

/* Joins `src` into `dst` (src is borrowed). Returns 1 if dst changed, 0 if not, CRDT_ETYPE if the
 * types differ, CRDT_ENOMEM (dst unchanged) on allocation failure. */
int crdt_obj_merge(crdt_obj_t *dst, const crdt_obj_t *src);

/* True when both objects are of one type and hold the same state. */
bool crdt_obj_equal(const crdt_obj_t *a, const crdt_obj_t *b);

/* True for the bottom state (nothing ever written). */
bool crdt_obj_is_empty(const crdt_obj_t *o);

/* True when o has visible content: a live member (LWW-set, OR-Set) or entry (timeline), a
 * register holding a value (not unset, not cleared), a counter whose value is not 0 (a counter
 * whose slots overflow int64 counts as live). A key whose object is not live reads as absent
 * (REST answers 404): what crdt_mut_apply's CRDT_MUT_DELETE leaves behind is not live. */
bool crdt_obj_is_live(const crdt_obj_t *o);

/* The greatest hybrid-logical-clock timestamp o holds: returns 1 and fills *out for an LWW-Register
 * that is set or an LWW-element-set with an entry (live or tombstone), 0 otherwise (empty, or a
 * type whose order is not HLC: counters, OR-Sets, timelines, whose scores are the caller's). A
 * replica feeds it to crdt_hlc_recv for every delta it joins, so that its next LWW write orders
 * after everything it has seen. O(1) for a register, linear in the entries for a set. */
int crdt_obj_max_ts(const crdt_obj_t *o, crdt_hlc_ts_t *out);

typedef struct crdt_stats {
    size_t entries;    /* live elements / entries / counter slots */
    size_t tombstones; /* tombstones kept (LWW-set, timeline) */
    size_t memory;     /* bytes this object has allocated, headers included */
} crdt_stats_t;

void crdt_obj_stats(const crdt_obj_t *o, crdt_stats_t *st);

/* Mutators below share one contract: they return 1 if the state changed, 0 if the write was a
 * no-op (it lost to what is there, or was below a timeline floor), or a negative CRDT_E* code with
 * the object unchanged. When `delta` is not NULL, *delta receives a new object holding just the
 * change (caller owns it, free with crdt_obj_free), or NULL when nothing changed. Joining that delta
 * into the state before the call gives the state after it. */

/* ---- G-Counter and PN-Counter --------------------------------------------------------------- */

/* Adds n to replica's slot of a G-Counter. CRDT_EOVERFLOW if the value would exceed INT64_MAX. */
int crdt_gcounter_incr(crdt_obj_t *c, uint64_t replica, uint64_t n, crdt_obj_t **delta);
/* Adds n (may be negative) to a PN-Counter. CRDT_EOVERFLOW if the value would leave int64. */
int crdt_pncounter_add(crdt_obj_t *c, uint64_t replica, int64_t n, crdt_obj_t **delta);
/* The value of either counter type. CRDT_EOVERFLOW if merged remote slots exceed int64. */
int crdt_counter_value(const crdt_obj_t *c, int64_t *out);

/* ---- LWW-Register --------------------------------------------------------------------------- */

/* Sets the value (binary-safe, copied) at timestamp ts; the greater timestamp wins. */
int crdt_lwwreg_set(crdt_obj_t *r, const crdt_hlc_ts_t *ts, const void *val, size_t len,
                    crdt_obj_t **delta);
/* Clears the register at timestamp ts: a tombstone that orders like a write, so a later write
 * wins over it and it wins over every earlier one. At equal timestamps the clear wins (as a
 * remove does in an LWW-set): the order of a register's states is (ts, cleared, value). */
int crdt_lwwreg_clear(crdt_obj_t *r, const crdt_hlc_ts_t *ts, crdt_obj_t **delta);
/* Returns 1 and borrows the value (valid until the next mutation) if it holds one, 0 if never set
 * or cleared (then *ts, if not NULL, is the clear's timestamp, or all zero when never set). */
int crdt_lwwreg_get(const crdt_obj_t *r, const void **val, size_t *len, crdt_hlc_ts_t *ts);
/* 1 if the register was cleared (and not written since), 0 if not, CRDT_ETYPE for other types. */
int crdt_lwwreg_cleared(const crdt_obj_t *r);

/* ---- LWW-element-set (roshi semantics: greater timestamp wins, equal timestamps remove wins) -- */

int crdt_lwwset_add(crdt_obj_t *s, const void *m, size_t len, const crdt_hlc_ts_t *ts,
                    crdt_obj_t **delta);
int crdt_lwwset_remove(crdt_obj_t *s, const void *m, size_t len, const crdt_hlc_ts_t *ts,
                       crdt_obj_t **delta);

/* ---- Add-wins OR-Set with a causal context, tombstone-free ---------------------------------- */

/* Adds m with a fresh dot of `replica`. */
int crdt_orset_add(crdt_obj_t *s, uint64_t replica, const void *m, size_t len, crdt_obj_t **delta);
/* Removes every dot of m this replica has seen; concurrent adds elsewhere survive. */
int crdt_orset_remove(crdt_obj_t *s, const void *m, size_t len, crdt_obj_t **delta);

/* ---- Set queries, for LWW-sets and OR-Sets ------------------------------------------------- */

/* 1 if m is a live member, 0 if not, CRDT_ETYPE for other types. */
int crdt_set_contains(const crdt_obj_t *s, const void *m, size_t len);
/* Number of live members (0 for other types). */
size_t crdt_set_size(const crdt_obj_t *s);
/* Calls cb for every live member in ascending bytewise order; stops early and returns cb's value if
 * it is non-zero. The member bytes are borrowed for the call only. */
typedef int (*crdt_member_cb)(const void *m, size_t len, void *ud);
int crdt_set_foreach(const crdt_obj_t *s, crdt_member_cb cb, void *ud);

/* ---- Timeline: roshi-style bounded LWW index, newest first --------------------------------- *
 * Entries are (member, score); per member the greater score wins and equal scores make remove win.
 * Order is newest first: score descending, then member descending bytewise. A bounded timeline keeps
 * the top max_size entries (live and tombstones together); the highest (score, member) it ever
 * dropped becomes its floor, and every later write at or below the floor is ignored. The state is a
 * function of the set of writes seen, whatever their order: a lattice. Merging timelines of
 * different bounds keeps the smaller bound. */

/* Returns a new empty timeline keeping at most max_size entries (0: unbounded), or NULL. */
crdt_obj_t *crdt_timeline_new(uint32_t max_size);
uint32_t crdt_timeline_max_size(const crdt_obj_t *t);

/* Score must be finite (CRDT_EINVAL otherwise); -0.0 is stored as 0.0. */
int crdt_timeline_add(crdt_obj_t *t, const void *m, size_t len, double score, crdt_obj_t **delta);
int crdt_timeline_remove(crdt_obj_t *t, const void *m, size_t len, double score,
                         crdt_obj_t **delta);
/* crdt_timeline_add / _remove for a caller that makes a delta per write and drops it at once
 * (a replica's log): the delta goes into `delta`, a timeline of the caller's (crdt_timeline_new,
 * any bound; it is emptied and left unbounded) instead of a new object, so that a write allocates
 * nothing. 1: delta holds this write's delta, exactly what crdt_timeline_add would have made;
 * 0 or an error: t is unchanged and delta's content is unspecified. delta may not be t. */
int crdt_timeline_add_into(crdt_obj_t *t, const void *m, size_t len, double score,
                           crdt_obj_t *delta);
int crdt_timeline_remove_into(crdt_obj_t *t, const void *m, size_t len, double score,
                              crdt_obj_t *delta);
/* A hint before a batch of writes to many big timelines: asks the CPU to load, in stages, what a
 * write of member m will read (the object, its hash slot, the ends of the order, the entries
 * there, the slot of the entry a bound drops, found from where the last write left it), so that
 * the cache misses of the batch overlap instead of coming one after the other.
 * Run stage 0 for every write of the batch, then stage 1 for every one, and so on to
 * CRDT_TL_PREFETCH_STAGES - 1; then the writes. Changes nothing, reads only what the stage before
 * asked for; any object (not a timeline: nothing). */
#define CRDT_TL_PREFETCH_STAGES 4
void crdt_timeline_prefetch(const crdt_obj_t *t, const void *m, size_t len, int stage);

typedef struct crdt_tl_entry {
    const void *member; /* borrowed from the timeline: valid until its next change */
    size_t member_len;
    double score;
} crdt_tl_entry_t;

/* Live entries. */
size_t crdt_timeline_card(const crdt_obj_t *t);
/* 1 and *score if m is live, 0 if absent or removed. */
int crdt_timeline_score(const crdt_obj_t *t, const void *m, size_t len, double *score);
/* 1 and *floor if the timeline has dropped entries, 0 if it has none. */
int crdt_timeline_floor(const crdt_obj_t *t, crdt_tl_entry_t *floor);

/* Up to `count` live entries newest first, skipping the first `offset` live ones, into out[].
 * Returns how many were written. Cost grows with offset/64 + count, not with the timeline. */
size_t crdt_timeline_range(const crdt_obj_t *t, size_t offset, size_t count, crdt_tl_entry_t *out);

/* Up to `limit` live entries with min <= score <= max, newest first. When `after` is not NULL the
 * read continues strictly after that (score, member) position (a cursor: pass the last entry of the
 * previous page). Returns how many were written. */
size_t crdt_timeline_range_by_score(const crdt_obj_t *t, double max, double min,
                                    const crdt_tl_entry_t *after, size_t limit,
                                    crdt_tl_entry_t *out);

/* Coalesced read over n timelines: the newest `count` live entries after skipping `offset`, as if
 * the timelines were one (an entry present in several appears once per timeline). When `source` is
 * not NULL, source[i] receives the index of the timeline out[i] came from. Returns how many. NULL
 * entries of tls[] and objects of other types count as empty timelines. */
size_t crdt_timeline_select(const crdt_obj_t *const *tls, size_t n, size_t offset, size_t count,
                            crdt_tl_entry_t *out, size_t *source);

/* Position order used by the timeline: <0 if a is newer (sorts first), 0 equal, >0 older. */
int crdt_tl_entry_cmp(const crdt_tl_entry_t *a, const crdt_tl_entry_t *b);

/* ------------------------------------------------------------------------------------------------
 * Binary codec. Layout (docs/encoding.md): version byte, type byte, varint payload length,
 * payload, CRC-32C of all the preceding bytes (4 bytes, little endian). Encodings are canonical:
 * equal states encode to identical bytes.
 * --------------------------------------------------------------------------------------------- */
#define CRDT_CODEC_VERSION 1

/* Appends the encoding of o to b. 0 or CRDT_ENOMEM (b keeps its previous length). */
int crdt_obj_encode(const crdt_obj_t *o, crdt_buf_t *b);

/* Decodes exactly `len` bytes into a new object, or returns NULL and fills *err (if not NULL) with
 * CRDT_EDECODE or CRDT_ENOMEM, the byte offset and a message. Never trusts the input. */
crdt_obj_t *crdt_obj_decode(const void *data, size_t len, crdt_error_t *err);

/* A borrowed byte range. */
typedef struct crdt_bytes {
    const void *data;
    size_t len;
} crdt_bytes_t;

/* Joins the object encoded in data[0..len) into dst: the same result as crdt_obj_decode followed
 * by crdt_obj_merge, with the same validation (frame, CRC-32C, canonical payload: untrusted input
 * is safe), but without building the decoded object where the type allows (timeline deltas go
 * straight into dst). Returns 1 if dst changed, 0 if not; CRDT_EDECODE (err says where and why)
 * or CRDT_ETYPE (an encoding of another type) with dst unchanged; CRDT_ENOMEM, after which dst
 * may hold part of the join (still a valid state, below the full join). */
int crdt_obj_merge_encoded(crdt_obj_t *dst, const void *data, size_t len, crdt_error_t *err);

/* Joins n encodings into dst as crdt_obj_merge_encoded does each, in one go: every encoding is
 * validated before dst changes, so on CRDT_EDECODE / CRDT_ETYPE dst is unchanged and *failed (if
 * not NULL) is the index of the first bad encoding (err's offset is within it). Deltas are joins,
 * so their order does not matter; a timeline joins many small deltas in one linear pass, which
 * is what log replay wants (encs borrowed for the call). Returns 1 / 0 / negative as above. */
int crdt_obj_merge_encoded_many(crdt_obj_t *dst, const crdt_bytes_t *encs, size_t n, size_t *failed,
                                crdt_error_t *err);

/* ------------------------------------------------------------------------------------------------
 * Mutations: the one description of a write, whatever it came from (a REST body, a roshi tuple, a
 * crdt.v1 apply, a Redis command). A store turns it into a libcrdt mutator call (the embedded
 * replica, the Redis module) or a command (a store over the network). Bytes are borrowed.
 * --------------------------------------------------------------------------------------------- */
typedef enum crdt_mut_kind {
    CRDT_MUT_INCR = 1, /* gcounter (n >= 0), pncounter: add n */
    CRDT_MUT_SET,      /* lwwreg: value = bytes at ts */
    CRDT_MUT_ADD,      /* lwwset (at ts), orset (fresh dot), timeline (at score): member = bytes */
    CRDT_MUT_REMOVE,   /* lwwset (at ts), orset (observed dots), timeline (at score) */
    CRDT_MUT_MERGE,    /* join `state` (any type; creates the key as that type) */
    CRDT_MUT_DELETE,   /* an observed-remove of the whole value, per type (below) */
} crdt_mut_kind_t;

/* CRDT_MUT_DELETE removes what the replica running it has seen; writes it has not seen (made
 * concurrently elsewhere) survive the join, as docs/http-api.md ("Deleting a key") documents:
 *   timeline:  every live entry becomes a tombstone at its own score (equal scores: remove wins),
 *              so a concurrent add at a higher score survives (roshi's semantics);
 *   lwwset:    every live member becomes a tombstone at m->ts, a fresh timestamp: adds stamped
 *              later survive;
 *   orset:     every observed dot is removed (the delta is the state's causal context with no
 *              entries): add-wins, concurrent adds survive;
 *   lwwreg:    the register is cleared at m->ts (crdt_lwwreg_clear): a later set wins;
 *   pncounter: the observed value is subtracted in this replica's slots, so increments made
 *              concurrently elsewhere survive (the value after the join is their sum);
 *   gcounter:  refused with CRDT_ENOTSUP: a grow-only counter cannot go down.
 * Nothing live to remove is a no-op (0, no delta). After it crdt_obj_is_live is false. */

typedef struct crdt_mut {
    crdt_type_t type; /* the type the write needs (for MERGE: the state's) */
    crdt_mut_kind_t kind;
    const void *bytes; /* member or register value */
    size_t len;
    double score;       /* timeline */
    int64_t n;          /* counters */
    crdt_hlc_ts_t ts;   /* lwwreg and lwwset; ts.ms == 0: the store stamps it with its clock */
    const crdt_obj_t *state; /* MERGE */
} crdt_mut_t;

/* True when the write needs an HLC timestamp (lwwreg set, lwwset add and remove, and a delete of
 * either). */
bool crdt_mut_needs_ts(const crdt_mut_t *m);

/* The timestamp an LWW write m competes with in o: the register's, or the entry (live or tombstone)
 * of m's member in an LWW-set, or for a delete of an LWW-set the greatest of its entries. 1 and
 * *out, 0 when there is none (unset register, new member, a write that takes no timestamp, o of
 * another type). A store folds it into its clock before
 * stamping m, so that the write wins over the value it replaces (the Redis module's CRDT.SET rule),
 * also for values recovered from disk. O(1), but linear in the entries for an LWW-set delete. */
int crdt_mut_seen_ts(const crdt_obj_t *o, const crdt_mut_t *m, crdt_hlc_ts_t *out);

/* Runs m on o as replica `replica` (counter slots, OR-Set dots): the mutator contract above (1, 0
 * or a negative code; *delta as the mutators give it). CRDT_ETYPE when o is not of m->type,
 * CRDT_EINVAL for a kind the type lacks or a missing timestamp. */
int crdt_mut_apply(crdt_obj_t *o, const crdt_mut_t *m, uint64_t replica, crdt_obj_t **delta);

/* ------------------------------------------------------------------------------------------------
 * Ops: an op is a delta carrying a unique dot (origin replica, sequence number). Applying an op is
 * joining its delta, so duplicated and reordered ops change nothing; the dot lets receivers
 * acknowledge and deduplicate ops by identity.
 * --------------------------------------------------------------------------------------------- */
typedef struct crdt_dot {
    uint64_t replica;
    uint64_t seq;
} crdt_dot_t;

typedef struct crdt_op {
    crdt_dot_t dot;
    crdt_obj_t *delta; /* owned by the op once decoded; see crdt_op_clear */
} crdt_op_t;

/* Joins op->delta into state: like crdt_obj_merge. */
int crdt_op_apply(crdt_obj_t *state, const crdt_op_t *op);
/* Appends an op's encoding: varint replica, varint seq, then the delta's object encoding. */
int crdt_op_encode(const crdt_op_t *op, crdt_buf_t *b);
/* Decodes an op; on success op->delta is a new object the caller frees with crdt_op_clear. */
int crdt_op_decode(const void *data, size_t len, crdt_op_t *op, crdt_error_t *err);
void crdt_op_clear(crdt_op_t *op);

#ifdef __cplusplus
}
#endif

#endif /* CRDT_H */
