/* replica_private.h - replica internals shared by replica.c, log.c, snapshot.c and lock.c */
#ifndef CRDT_REPLICA_PRIVATE_H
#define CRDT_REPLICA_PRIVATE_H

#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <sys/types.h>

#include "replica.h"

/* ---- the keyspace: a flat array of keys indexed by id, and an open-addressing table of ids --- */

typedef struct rep_key {
    uint8_t *key; /* owned copy of the key bytes (NULL when klen is 0) */
    uint32_t klen;
    bool fp_dirty;    /* fp/contrib are stale: the object changed since they were computed */
    bool in_dirty;    /* listed in the replica's dirty list */
    uint8_t type;     /* crdt_obj_type(obj), kept beside the key: replay checks it per record */
    uint64_t hash;    /* hash of the key bytes, for the table and the digest */
    uint64_t seq;     /* sequence number of the key's latest change */
    uint64_t fp;      /* hash of the object's canonical encoding (valid when !fp_dirty) */
    uint64_t contrib; /* this key's term in the keyspace digest (0 while never computed) */
    crdt_obj_t *obj;  /* owned */
} rep_key_t;

typedef struct rep_feed_ent {
    uint64_t seq;
    uint32_t id; /* valid while keys[id].seq == seq; older entries are skipped and compacted */
} rep_feed_ent_t;

/* ---- the log: segments named log-<base>, where every record in it has seq > base ------------ */

#define REP_SEG_MAGIC "CRDTLOG1"
#define REP_SEG_HEADER 16      /* magic, u64 base (little endian) */
#define REP_REC_HEADER 8       /* u32 body length, u32 CRC-32C of the body (little endian) */
#define REP_REC_MAX (1u << 30) /* a larger body is corruption, not a record */
#define REP_SNAP_MAGIC "CRDTSNP1"
#define REP_SNAP_HEADER 32 /* magic, u64 seq, u64 keys, u32 CRC of the 24 bytes before, u32 0 */
#define REP_BUF_FLUSH (1u << 20) /* write the log buffer out once it holds this much */

typedef struct rep_seg {
    uint64_t base;
    uint64_t bytes;
} rep_seg_t;

/* ---- the log's index: log-<base>.idx beside each segment (index.c writes it, load.c reads it) -
 * Blocks, each listing where every key's records are in a stretch of the segment, so that a
 * restart reads the index instead of scanning those records (docs/storage.md, "The index"). */

#define REP_IDX_MAGIC "CRDTIDX1"
#define REP_IDX_HEADER 16    /* magic, u64 base */
#define REP_IDX_BLK_HEADER 8 /* u32 body length (a multiple of 8), u32 CRC-32C of the body */
/* a block's body: u64 from, to, last_at; u32 last_len, last_crc; u64 max_seq, records; u32
 * groups, 0; then the groups */
#define REP_IDX_BODY 56
/* a group: u64 seq, u32 count, u32 klen, u8 type, 3 zero bytes; then the key, zero-padded to 4
 * bytes, and u32 offsets (from `from`)[count] */
#define REP_IDX_GROUP 20
#define REP_IDX_BLOCK_BYTES (32u << 20) /* log bytes a block covers before it is written */

typedef struct rep_idx_ent {
    uint32_t id;  /* the record's key */
    uint32_t rel; /* its offset from `covered` */
} rep_idx_ent_t;

typedef struct rep_idx {
    int fd;            /* the current segment's index, open for appending; -1 when none */
    bool off;          /* not indexing the current segment (a failure, or a record not noted) */
    bool warned;       /* said so on stderr */
    bool synced;       /* the segment was fsynced since it was opened (blocks written at a scan) */
    uint64_t base;     /* the segment's */
    uint64_t covered;  /* the segment's bytes the blocks written (or handed to the syncer) cover */
    uint64_t file_end; /* set by the scan: where the index's accepted blocks end (0: none) */
    rep_idx_ent_t *pend; /* the records after `covered`, in log order */
    size_t npend, cap_pend;
    uint32_t *cnt; /* by key id: its records in pend (the write cursor while a block is built) */
    uint32_t cap_cnt;
    uint32_t *touched; /* the ids with cnt > 0, in order of their first record */
    size_t ntouched, cap_touched;
} rep_idx_t;

/* The everysec fsync runs on a thread of its own, so the event loop never waits for the disk;
 * the index's blocks are written there too, after the fsync that makes their records durable. */
typedef struct rep_syncer {
    pthread_t th;
    bool running;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    /* under mu: the request (a dup of the segment fd, -1 when none) and its result */
    int fd;
    bool done, stop;
    int err;      /* errno of a failed fdatasync, 0 if it succeeded */
    double secs;  /* how long it took */
    int idx_fd;   /* with a block to append after the fsync (a dup), else -1 */
    uint8_t *blk; /* owned by the request */
    size_t blk_len;
    uint64_t blk_base; /* the segment the block indexes */
    int idx_err;       /* errno of a failed write of the block */
    /* main thread only */
    bool busy;    /* a request is outstanding */
    uint64_t seq; /* written_seq when it was made */
} rep_syncer_t;

typedef struct rep_log {
    int fd;             /* current segment, open for appending; -1 when memory only */
    uint64_t seg_base;  /* base of the current segment */
    uint64_t seg_bytes; /* size of the current segment on disk (after the last write) */
    uint64_t old_bytes; /* bytes of older segments not yet covered by a snapshot */
    rep_seg_t *old;     /* those older segments, ascending base */
    size_t n_old, cap_old;
    crdt_buf_t buf;       /* records not yet written */
    uint64_t buf_seq;     /* highest seq in buf (or written, when buf is empty) */
    uint64_t written_seq; /* highest seq written to the OS */
    uint64_t synced_seq;  /* highest seq fsynced */
    uint64_t last_fsync_ms;
    rep_syncer_t syncer;
    rep_idx_t idx;
} rep_log_t;

typedef struct rep_snap {
    pid_t pid;               /* running child, 0 if none */
    uint64_t seq;            /* the seq the running (or last) snapshot covers */
    uint64_t done_seq;       /* seq of the snapshot on disk */
    uint64_t retry_after_ms; /* after a failure, no automatic snapshot before this */
} rep_snap_t;

typedef struct rep_load rep_load_t;

/* The keys in bytewise order (keyorder.c), built at the first listing. */
typedef struct rep_order_chunk rep_order_chunk_t;
typedef struct ord_ent ord_ent_t;
typedef struct rep_order {
    rep_order_chunk_t **chunks; /* ascending; each holds 1..ORDER_CHUNK keys, ascending */
    ord_ent_t *last;            /* by chunk: its last entry (the directory's binary search) */
    size_t n, cap;
    bool built; /* false: not built yet (or dropped after running out of memory) */
} rep_order_t;

struct crdt_replica {
    crdt_replica_config_t cfg;
    char *dir; /* owned copy of cfg.dir */
    int dirfd;
    int lockfd;

    rep_key_t *keys;
    uint32_t nkeys, cap_keys;
    uint32_t *slots; /* 0 empty, else id + 1 */
    uint32_t mask;   /* capacity - 1, or 0 before the first key */
    uint64_t seed;
    uint64_t keys_by_type[CRDT_TYPE_MAX + 1];
    uint64_t internal_by_type[CRDT_TYPE_MAX + 1]; /* of those, keys crdt_key_internal says are */

    rep_feed_ent_t *feed; /* ascending seq */
    size_t nfeed, cap_feed;
    uint64_t last_seq;

    uint32_t *dirty; /* ids whose fingerprint is stale */
    size_t ndirty, cap_dirty;
    uint64_t digest;    /* sum of contrib over keys with a fresh fingerprint */
    crdt_buf_t scratch; /* reused for fingerprint encodings */
    crdt_obj_t *tl_delta; /* reused as the delta of local timeline writes (NULL until the first) */
    bool tl_delta_busy;   /* lent out: a write from inside the listener makes its own */

    crdt_hlc_t hlc;
    uint64_t clock_warned_ms; /* wall time of the last "clock ahead" log line (0: none yet) */
    crdt_replica_listener_cb listener;
    void *listener_ud;

    rep_log_t log;
    rep_snap_t snap;
    crdt_replica_stats_t st;
    crdt_recovery_report_t rec;

    rep_load_t *load; /* recovered keys still to be joined (load.c), NULL once all are */
    double rec_t0;    /* when open began */

    rep_order_t order; /* keyorder.c */

    bool failed;       /* a write to disk failed: refuse writes until restarted */
    char failure[256]; /* why */
};

/* ---- replica.c: keyspace primitives the storage code uses ---------------------------------- */

/* libcrdt's stable hash: fingerprints must agree between replicas */
static inline uint64_t rep_hash(const void *p, size_t n, uint64_t seed)
{
    return crdt_hash64(p, n, seed);
}

/* A cheaper keyed hash (a multiply-fold of 8-byte words) for tables private to this process,
 * seeded per process so that colliding keys cannot be prepared in advance: the keyspace table
 * (rep_table_hash) and the recovery scan's (load.c). Not stable: never stored or compared
 * between replicas. */
static inline uint64_t rep_mum(uint64_t a, uint64_t b)
{
    unsigned __int128 m = (unsigned __int128)a * b;
    return (uint64_t)m ^ (uint64_t)(m >> 64);
}

/* `end`: bytes up to it may be read (past the key), which lets the last partial word be one load;
 * NULL when nothing past the key may be. Both ways give the same hash. */
static inline uint64_t rep_fast_hash(const uint8_t *p, size_t n, uint64_t seed, const uint8_t *end)
{
    uint64_t h = seed ^ ((uint64_t)n * 0x9E3779B97F4A7C15ull);
    while (n >= 8) {
        uint64_t v;
        memcpy(&v, p, 8);
        h = rep_mum(h ^ v, 0xa0761d6478bd642full);
        p += 8;
        n -= 8;
    }
    if (n) {
        uint64_t v = 0;
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
        if (end && end - p >= 8) {
            memcpy(&v, p, 8);
            v &= ~0ull >> (64 - 8 * n);
        } else
#endif
            memcpy(&v, p, n);
        h = rep_mum(h ^ v ^ 0xe7037ed1a0b428dbull, 0x8ebc6af09c88c6e3ull);
    }
    return rep_mum(h, 0x589965cc75374cc3ull);
}

/* The keyspace table's hash (r->seed): every rep_find and rep_insert. */
static inline uint64_t rep_table_hash(const void *p, size_t n, uint64_t seed)
{
    return rep_fast_hash((const uint8_t *)p, n, seed, NULL);
}
/* The id of key, or UINT32_MAX. */
uint32_t rep_find(const crdt_replica_t *r, const void *key, size_t klen, uint64_t h);
/* Adds a key that is absent, owning obj; returns its id or UINT32_MAX (ENOMEM). */
uint32_t rep_insert(crdt_replica_t *r, const void *key, size_t klen, uint64_t h, crdt_obj_t *obj);
/* An empty object of type, timelines with the configured bound. */
/* A new empty object of `type` for key: timelines get the configured bound, except at internal
 * keys (crdt_key_internal), whose timelines are maps and unbounded. */
crdt_obj_t *rep_new_object(const crdt_replica_t *r, crdt_type_t type, const void *key, size_t klen);
uint32_t rep_timeline_bound(const crdt_replica_t *r, const void *key, size_t klen);
/* Marks the key's fingerprint stale (cannot fail: the dirty list has room for every key). */
int rep_mark_dirty(crdt_replica_t *r, uint32_t id);

/* Replays one record (log or snapshot) into the keyspace: joins the encoded object in, sets the
 * key's and the replica's seq to the larger one. A new key adopts the decoded object as is (for a
 * `snapshot` record always, for a log record when that equals joining it into an empty object).
 * 0, CRDT_ENOMEM, or CRDT_EDECODE (err filled) when the intact record holds something this build
 * cannot read. */
int rep_replay(crdt_replica_t *r, const uint8_t *body, size_t len, bool snapshot,
               crdt_error_t *err);

/* Joins one encoded object into the existing key id (log replay in key order) and advances the
 * key's seq. Touches nothing but key id, so threads may replay distinct keys at once; the caller
 * advances r->last_seq. 0, CRDT_ENOMEM or CRDT_EDECODE (err filled). */
int rep_replay_into(crdt_replica_t *r, uint32_t id, uint64_t seq, const uint8_t *enc, size_t elen,
                    crdt_error_t *err);

/* Records the sticky failure: logs it to stderr once and refuses further writes. */
void rep_fail(crdt_replica_t *r, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
void rep_seterr(crdt_error_t *err, int code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
uint64_t rep_mono_ms(void);
double rep_mono_s(void);

/* ---- the record codec (log.c) --------------------------------------------------------------- */

/* Appends a record (seq, key, the object's encoding) to b. 0 or CRDT_ENOMEM (b unchanged). */
int rep_record_append(crdt_buf_t *b, uint64_t seq, const void *key, size_t klen,
                      const crdt_obj_t *o);
/* Parses a record body whose CRC was checked. 0 or CRDT_EDECODE. (Inline: recovery's scan calls
 * it once per record.) */
static inline int rep_record_parse(const uint8_t *body, size_t len, uint64_t *seq,
                                   const uint8_t **key, size_t *klen, const uint8_t **obj,
                                   size_t *olen)
{
    size_t pos = 0;
    uint64_t kl;
    if (crdt_varint_get(body, len, &pos, seq) < 0 || crdt_varint_get(body, len, &pos, &kl) < 0 ||
        kl >= len - pos)
        return CRDT_EDECODE;
    *key = body + pos;
    *klen = (size_t)kl;
    pos += (size_t)kl;
    *obj = body + pos;
    *olen = len - pos;
    return 0;
}

static inline void rep_put32(uint8_t *p, uint32_t v)
{
    p[0] = (uint8_t)v, p[1] = (uint8_t)(v >> 8), p[2] = (uint8_t)(v >> 16),
    p[3] = (uint8_t)(v >> 24);
}
static inline uint32_t rep_get32(const uint8_t *p)
{
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}
static inline void rep_put64(uint8_t *p, uint64_t v)
{
    rep_put32(p, (uint32_t)v);
    rep_put32(p + 4, (uint32_t)(v >> 32));
}
static inline uint64_t rep_get64(const uint8_t *p)
{
    return (uint64_t)rep_get32(p) | (uint64_t)rep_get32(p + 4) << 32;
}

/* A sequential reader of records from a file, in big chunks. */
typedef struct rep_reader {
    int fd;
    uint8_t *buf;
    size_t cap, start, end;
    uint64_t off;  /* file offset of buf[start] */
    uint64_t size; /* of the file when the reader started */
    bool eof;
} rep_reader_t;

enum {
    REP_REC_OK = 1,
    REP_REC_EOF = 0,
    REP_REC_TORN = -1,
    REP_REC_CORRUPT = -2,
    REP_REC_IOERR = -3,
    REP_REC_AGAIN = 2 /* rep_reader_take without reading: the next record is not all buffered */
};

int rep_reader_init(rep_reader_t *rd, int fd, uint64_t off);
void rep_reader_free(rep_reader_t *rd);
/* Next record: REP_REC_OK with its body borrowed until the next call, REP_REC_EOF at a clean end,
 * or a fault with `why` filled; rd->off is then the offset of the faulty record. */
int rep_reader_next(rep_reader_t *rd, const uint8_t **body, size_t *len, char *why, size_t whylen);
int rep_reader_fill_more(rep_reader_t *rd, size_t need);

/* Reads until `need` bytes are buffered or the file ends. 0, CRDT_ENOMEM or CRDT_EIO. */
static inline int rep_reader_fill(rep_reader_t *rd, size_t need)
{
    if (rd->end - rd->start >= need || rd->eof)
        return 0;
    return rep_reader_fill_more(rd, need);
}

/* rep_reader_next, or, with !may_read, REP_REC_AGAIN when the next record is not wholly in the
 * buffer: nothing is read then, so every body returned since the last read stays valid (recovery's
 * scan works on batches of records; inline because it runs once per record of the log). */
static inline int rep_reader_take(rep_reader_t *rd, bool may_read, const uint8_t **body,
                                  size_t *len, char *why, size_t whylen)
{
    if (!may_read && !rd->eof && rd->end - rd->start < REP_REC_HEADER)
        return REP_REC_AGAIN;
    int rc = rep_reader_fill(rd, REP_REC_HEADER);
    if (rc < 0) {
        snprintf(why, whylen, "%s", rc == CRDT_EIO ? strerror(errno) : "out of memory");
        return REP_REC_IOERR;
    }
    size_t have = rd->end - rd->start;
    if (have == 0)
        return REP_REC_EOF;
    if (have < REP_REC_HEADER) {
        snprintf(why, whylen, "torn record header (%zu of %u bytes)", have, REP_REC_HEADER);
        return REP_REC_TORN;
    }
    const uint8_t *h = rd->buf + rd->start;
    uint32_t blen = rep_get32(h), crc = rep_get32(h + 4);
    if (blen < 3 || blen > REP_REC_MAX) {
        snprintf(why, whylen, "impossible record length %" PRIu32, blen);
        return REP_REC_CORRUPT;
    }
    if (rd->off > rd->size || REP_REC_HEADER + (uint64_t)blen > rd->size - rd->off) {
        /* Known from the file size, without reading (or allocating for) a bogus length. */
        snprintf(why, whylen, "torn record (%" PRIu64 " of %zu bytes present)",
                 rd->off > rd->size ? 0 : rd->size - rd->off, REP_REC_HEADER + (size_t)blen);
        return REP_REC_TORN;
    }
    if (!may_read && !rd->eof && have < REP_REC_HEADER + (size_t)blen)
        return REP_REC_AGAIN;
    if ((rc = rep_reader_fill(rd, REP_REC_HEADER + (size_t)blen)) < 0) {
        snprintf(why, whylen, "%s", rc == CRDT_EIO ? strerror(errno) : "out of memory");
        return REP_REC_IOERR;
    }
    have = rd->end - rd->start;
    if (have < REP_REC_HEADER + (size_t)blen) {
        snprintf(why, whylen, "torn record (%zu of %zu bytes present)", have,
                 REP_REC_HEADER + (size_t)blen);
        return REP_REC_TORN;
    }
    h = rd->buf + rd->start;
    if (crdt_crc32c(0, h + REP_REC_HEADER, blen) != crc) {
        snprintf(why, whylen, "checksum mismatch in a record of %" PRIu32 " bytes", blen);
        return REP_REC_CORRUPT;
    }
    *body = h + REP_REC_HEADER;
    *len = blen;
    rd->start += REP_REC_HEADER + (size_t)blen;
    rd->off += REP_REC_HEADER + (size_t)blen;
    return REP_REC_OK;
}

/* ---- log.c: segments, group commit, recovery --------------------------------------------------
 */

/* Recovers the log of r->dir after the snapshot (already loaded) and opens the last segment for
 * appending. 0 or a negative code with err filled. */
int rep_log_open(crdt_replica_t *r, crdt_error_t *err);
void rep_log_close(crdt_replica_t *r);
/* Writes the buffer out (no fsync). 0 or CRDT_EIO (and the replica failed). */
int rep_log_write(crdt_replica_t *r);
/* fsyncs the current segment. 0 or CRDT_EIO. */
int rep_log_sync(crdt_replica_t *r);
/* The everysec fsync: reaps a finished background fsync, and starts one if a second has passed
 * since the last and something written is not synced. 0 or CRDT_EIO. */
int rep_log_sync_everysec(crdt_replica_t *r);
/* Starts / stops (waiting for a running fsync) the background fsync thread. */
int rep_syncer_start(crdt_replica_t *r);
void rep_syncer_stop(crdt_replica_t *r);
/* Writes out and closes the current segment and starts log-<last_seq>. 0 or CRDT_EIO. */
int rep_log_rotate(crdt_replica_t *r);
/* Deletes the older segments whose records all have seq <= upto. */
void rep_log_drop_covered(crdt_replica_t *r, uint64_t upto);
int rep_fsync_dir(crdt_replica_t *r);
/* write() all n bytes (retrying short writes and EINTR). 0, or -1 with errno set. */
int rep_write_all(int fd, const void *p, size_t n);
/* Takes the result of a finished background fsync (and index block write), if any. 0 or
 * CRDT_EIO. */
int rep_syncer_reap(crdt_replica_t *r);
void rep_seg_name(char *out, size_t n, uint64_t base);

/* ---- index.c: writing the log's index ------------------------------------------------------ */

/* Starts the index of a new, empty segment (creates log-<base>.idx). Never fails the replica: an
 * index that cannot be written only means the next restart scans that segment. */
void rep_idx_create(crdt_replica_t *r, uint64_t base);
/* As a restart's scan of segment base starts at `covered` (after the blocks of its index it took):
 * keeps those blocks (r->log.idx.file_end), cuts what follows them, and notes the records
 * scanned for the next ones. rep_idx_close once the segment is scanned unless it stays open
 * for appending. */
void rep_idx_resume(crdt_replica_t *r, uint64_t base, uint64_t covered);
typedef uint64_t (*rep_idx_seq_fn)(const void *ctx, uint32_t id);
/* During that scan: writes a block of the records noted once they cover index_block_bytes,
 * ending at `to` of segment fd (after an fsync of it, once); seq_of gives a key's latest seq so
 * far. (A segment that had no index is indexed by its first restart, with the notes' memory
 * bounded by a block.) */
void rep_idx_scan_flush(crdt_replica_t *r, int fd, uint64_t to, uint64_t max_seq,
                        rep_idx_seq_fn seq_of, const void *ctx);
/* Notes that key id's record is at segment offset `off`. */
void rep_idx_note(crdt_replica_t *r, uint32_t id, uint64_t off);
/* A record of the current segment will not be noted: stop indexing it (why: for stderr, or NULL
 * to say nothing). */
void rep_idx_disable(crdt_replica_t *r, const char *why);
/* Writes a block for the records noted once they cover REP_IDX_BLOCK_BYTES of written log (or,
 * `final`, any), after an fsync of the segment: inline, or on the syncer thread. */
void rep_idx_flush(crdt_replica_t *r, bool final);
/* Closes the index file and frees the notes. */
void rep_idx_close(crdt_replica_t *r);
/* Deletes log-<base>.idx. */
void rep_idx_unlink(crdt_replica_t *r, uint64_t base);

/* ---- load.c: the recovery scan and the background load of the keys it leaves pending ------- */

#define REP_LOAD_MAX_THREADS 8

typedef struct rep_scan rep_scan_t;
/* Starts the scan of the log (after the snapshot is loaded). 0 or CRDT_ENOMEM. */
int rep_scan_begin(crdt_replica_t *r, rep_scan_t **s);
/* Scans one segment (header checked) from its first record: checks every record, creates keys,
 * advances seqs, lists each record under its key. *valid is the offset where the valid records
 * end. 0 at a clean end, 1 at a torn or corrupt record (`why` filled; *valid is its offset), or a
 * negative code with err filled. */
int rep_scan_segment(crdt_replica_t *r, rep_scan_t *s, int fd, uint64_t base, uint64_t *valid,
                     char *why, size_t whylen, crdt_error_t *err);
/* Maps the segment just scanned (its first `size` bytes) for the joins. 0 or CRDT_EIO. */
int rep_scan_map(crdt_replica_t *r, int fd, uint64_t size, crdt_error_t *err);
/* Ends the scan: the seqs go to the keys and the pending lists to r->load. */
void rep_scan_end(crdt_replica_t *r, rep_scan_t *s);
/* Starts the background threads (or frees r->load when nothing is pending). 0 or CRDT_ENOMEM. */
int rep_load_start(crdt_replica_t *r, crdt_error_t *err);
/* Joins key id now if it is still pending (or waits for the thread joining it). */
void rep_load_key(crdt_replica_t *r, uint32_t id);
/* Every key: joins what is pending (with the threads), then frees r->load. */
void rep_load_all(crdt_replica_t *r);
/* From tick: reports a failed join; frees r->load once everything is joined. */
void rep_load_poll(crdt_replica_t *r);
/* Stops the threads (after their current key) and frees r->load, pending keys left as they are. */
void rep_load_stop(crdt_replica_t *r);
uint64_t rep_load_pending(const crdt_replica_t *r);

/* Key id's object is complete (call before touching keys[id].obj on the replica's thread). */
static inline void rep_ready(crdt_replica_t *r, uint32_t id)
{
    if (r->load)
        rep_load_key(r, id);
}

/* ---- keyorder.c: the ordered index of keys --------------------------------------------------- */

/* A key was added (rep_insert's hook): into the index when it is built. Cannot fail (on ENOMEM
 * the index is dropped, and the next listing builds it again). */
void rep_order_add(crdt_replica_t *r, uint32_t id);
void rep_order_free(crdt_replica_t *r);

/* ---- snapshot.c --------------------------------------------------------------------------------
 */

int rep_snapshot_load(crdt_replica_t *r, crdt_error_t *err);
int rep_snapshot_start(crdt_replica_t *r);
/* Reaps a finished child (blocking when `wait`), then drops the covered log. */
void rep_snapshot_poll(crdt_replica_t *r, bool wait);

/* ---- lock.c ------------------------------------------------------------------------------------
 */

/* Locks dirfd's LOCK file (flock) and writes our pid into it; returns the fd, or -1 with err
 * saying which pid holds the lock. */
int rep_lock(int dirfd, const char *dir, crdt_error_t *err);

#endif /* CRDT_REPLICA_PRIVATE_H */
