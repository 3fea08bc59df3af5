/* load.c - recovery's scan of the log, and the background load of the keys it leaves pending
 *
 * Opening a replica does not join the log into the keyspace. It scans every segment once, in
 * order, through a small reused buffer (as `cat` reads it): checks each record's length and
 * CRC-32C, finds (or creates, empty) its key and advances the key's seq, and appends the record's
 * position to a list per key. That is all a restart needs to serve: every key and its type are
 * known, the change feed can be rebuilt, the torn tail is found and cut, and new writes can be
 * appended. Open then returns, with the segments mapped read-only, and joining the records into
 * their keys happens after:
 *   - background threads (cfg.load_threads) take the pending keys in id order, each key's whole
 *     list at once (crdt_obj_merge_encoded_many: a timeline's hundreds of one-entry deltas in one
 *     linear pass);
 *   - whatever touches a key first on the replica's own thread (a read, a write, the feed, a
 *     fingerprint) joins it there and then if no thread has taken it yet, or waits for the thread
 *     that has (one key's join: tens to hundreds of microseconds).
 * Each key is joined exactly once, by whoever claims it (an atomic state per key: pending ->
 * claimed -> done). The threads touch nothing of the replica but their claimed keys' objects
 * (whose pointers never move) and this file's immutable index, so the replica's thread goes on
 * growing the key table, appending to the log and serving while they run. Snapshots (a fork must
 * not copy a half-joined object) and close wait for the load to finish or stop it.
 *
 * Why: on the machines we measured, joining 10M records builds ~500 MB of objects, which page
 * faults alone make cost a second or more; a restart had to wait for all of it before serving a
 * single key. Now it waits for a scan at close to the speed of reading the file. */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <pthread.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "replica_private.h"

#define LOAD_PENDING 1
#define LOAD_CLAIMED 2
#define LOAD_DONE 0
#define GROUP_MAX 65536         /* records of one key joined per call (bounds the call's memory) */
#define ARENA_CHUNK (64u << 20) /* the per-key position lists are carved out of chunks this big */
#define BLK_FIRST 4             /* entries in a key's first block; each next one doubles, up to */
#define BLK_MAX 4096
#define WINDOW (1ull << 32) /* entries are 32-bit offsets into a window of a segment */
#define SEG_MAX (1u << 24)  /* windows in all */

/* Positions of a key's records, oldest block last: newest first is the order joins want (for
 * LWW types and timelines older writes then lose early). */
typedef struct load_blk {
    struct load_blk *prev; /* the key's older block */
    uint32_t n, cap;
    uint32_t win;        /* the window (L->segs) its entries are offsets into */
    const uint32_t *ext; /* a block of the log's index: its entries, in the index (else NULL) */
    uint32_t ent[];      /* the entries the scan appends */
} load_blk_t;

static inline const uint32_t *blk_ent(const load_blk_t *b)
{
    return b->ext ? b->ext : b->ent;
}

/* A window: up to 4 GiB of a segment (a segment is one window unless it is larger), so that a
 * record's position takes 4 bytes: the index is the one allocation of the scan that grows with
 * the log, and fresh memory is expensive (page faults, zeroing). */
typedef struct load_seg {
    uint64_t base;        /* names the segment in messages */
    uint64_t start;       /* offset of the window in the segment */
    const uint8_t *map;   /* the window's first byte, once mapped */
    uint64_t size;        /* bytes of the segment from start on */
    void *owned;          /* the segment's mapping (PROT_READ: read through map only), for
                             madvise and munmap; on its first window only (else NULL) */
    uint64_t owned_len;
} load_seg_t;

typedef struct load_chunk {
    struct load_chunk *next;
    size_t used, size;
} load_chunk_t;

struct rep_load {
    /* fixed once the threads start */
    uint32_t nkeys;    /* ids below this may be pending */
    crdt_obj_t **obj;  /* obj[id] == the key's object (objects never move) */
    load_blk_t **head; /* newest block of id's pending records, NULL if none */
    uint8_t *state;    /* LOAD_*, atomically */
    load_seg_t *segs;
    size_t nsegs, cap_segs;
    load_chunk_t *chunks;
    const uint8_t **key; /* key[id], klen[id]: the key's bytes (they never move either) */
    uint32_t *klen;
    struct load_map {
        void *p;
        size_t len;
    } * maps; /* the indexes read, in use by ext blocks */
    size_t nmaps;
    /* shared */
    uint32_t remaining; /* keys not done (atomic) */
    uint64_t done_us;   /* when the last key was done, rep_mono_s() in microseconds (atomic) */
    uint32_t next;      /* the threads' cursor over ids (atomic) */
    int stop;           /* atomic */
    unsigned running;   /* threads still in their loop (atomic) */
    int advised;        /* a thread asked for the segments to be read ahead (atomic) */
    pthread_mutex_t mu; /* guards the first failure below */
    int err_rc;
    char err_text[320];
    pthread_t th[REP_LOAD_MAX_THREADS];
    unsigned nth;    /* threads started (the replica's thread only) */
    unsigned stride; /* threads meant to run: how far ahead one prefetches (fixed before) */
    const char *dir; /* the replica's, for messages */
    /* the replica's own thread */
    crdt_bytes_t *encs;
    uint64_t *where;
    bool reported; /* the failure was handed to rep_fail */
};

/* ---- the index: per-key block lists in big chunks ----------------------------------------- */

static void *chunk_map(size_t bytes)
{
    void *p = mmap(NULL, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE,
                   -1, 0);
    if (p == MAP_FAILED)
        return NULL;
#ifdef MADV_HUGEPAGE
    madvise(p, bytes, MADV_HUGEPAGE); /* a page fault per 2 MiB instead of per 4 KiB */
#endif
    return p;
}

/* A block with room for cap entries, after prev (the key's newest). */
static load_blk_t *blk_alloc(rep_load_t *L, load_blk_t *prev, uint32_t cap)
{
    size_t bytes = (sizeof(load_blk_t) + (size_t)cap * sizeof(uint32_t) + 7) & ~(size_t)7;
    load_chunk_t *c = L->chunks;
    if (!c || c->size - c->used < bytes) {
        size_t size = ARENA_CHUNK;
        if (!(c = chunk_map(size)))
            return NULL;
        c->next = L->chunks;
        c->size = size;
        c->used = (sizeof(*c) + 15) & ~(size_t)15;
        L->chunks = c;
    }
    load_blk_t *b = (load_blk_t *)((uint8_t *)c + c->used);
    c->used += bytes;
    b->prev = prev;
    b->n = 0;
    b->cap = cap;
    b->win = 0;
    b->ext = NULL;
    return b;
}

static load_blk_t *blk_new(rep_load_t *L, load_blk_t *prev)
{
    return blk_alloc(L, prev, prev ? (prev->cap >= BLK_MAX ? BLK_MAX : prev->cap * 2) : BLK_FIRST);
}

/* ---- the scan's key table ------------------------------------------------------------------ *
 * Private to the scan, with the cheaper keyed hash the keyspace table uses too (rep_fast_hash, a
 * multiply-fold of 8-byte words, seeded per process: colliding keys cannot be prepared in
 * advance; libcrdt's stable hash cost more than the rest of a record's scan together). Its slots are 4-byte ids (a table that stays in
 * the core's cache), and everything the scan needs of a key, the hash, up to 16 key bytes to
 * compare and the cursor where its next record goes, is in one cache line per key: a record
 * costs a slot (cached), that line and the line its entry goes into. */

/* The newest block's fill is kept here rather than in the block, so appending a record touches
 * this line and the entry's, not the block's header too. */
typedef struct scan_key {
    uint64_t h;
    uint32_t klen;
    uint8_t type;
    uint8_t pfx[16];
    load_blk_t *cur; /* newest block */
    uint64_t seq;
    uint32_t n, cap; /* cur's entries and room (written back to cur when it is full or done) */
    uint32_t win;
} __attribute__((aligned(64))) scan_key_t;

typedef struct scan {
    crdt_replica_t *r;
    rep_load_t *L;
    uint32_t *slots; /* id + 1, 0: empty */
    uint32_t mask, used;
    scan_key_t *keys; /* by id */
    uint32_t cap_keys;
    uint64_t seed;
} scan_t;

static int scan_grow_table(scan_t *s)
{
    uint32_t ncap = s->slots ? (s->mask + 1) * 2 : 1024;
    uint32_t *slots = calloc(ncap, sizeof(*slots));
    if (!slots)
        return CRDT_ENOMEM;
    for (uint32_t i = 0; s->slots && i <= s->mask; i++) {
        if (!s->slots[i])
            continue;
        uint32_t j = (uint32_t)s->keys[s->slots[i] - 1].h & (ncap - 1);
        while (slots[j])
            j = (j + 1) & (ncap - 1);
        slots[j] = s->slots[i];
    }
    free(s->slots);
    s->slots = slots;
    s->mask = ncap - 1;
    return 0;
}

/* Registers key id (present in the replica) in the scan's table and per-key arrays. */
static int scan_add(scan_t *s, uint32_t id, const uint8_t *key, size_t klen, uint64_t h)
{
    if ((uint64_t)(s->used + 1) * 2 > (uint64_t)s->mask + 1 && scan_grow_table(s) < 0)
        return CRDT_ENOMEM;
    if (id >= s->cap_keys) {
        uint32_t ncap = s->cap_keys ? s->cap_keys * 2 : 1024;
        while (ncap <= id)
            ncap *= 2;
        void *m = NULL;
        if (posix_memalign(&m, 64, (size_t)ncap * sizeof(scan_key_t)) != 0)
            return CRDT_ENOMEM;
        scan_key_t *k = m;
        if (s->keys)
            memcpy(k, s->keys, (size_t)s->cap_keys * sizeof(*k));
        memset(k + s->cap_keys, 0, (size_t)(ncap - s->cap_keys) * sizeof(*k));
        free(s->keys);
        s->keys = k;
        s->cap_keys = ncap;
    }
    scan_key_t *k = &s->keys[id];
    k->h = h;
    k->klen = (uint32_t)klen;
    memset(k->pfx, 0, sizeof(k->pfx));
    memcpy(k->pfx, key, klen < 16 ? klen : 16);
    const rep_key_t *rk = &s->r->keys[id];
    k->seq = rk->seq;
    k->type = rk->type;
    uint32_t i = (uint32_t)h & s->mask;
    while (s->slots[i])
        i = (i + 1) & s->mask;
    s->slots[i] = id + 1;
    s->used++;
    return 0;
}

/* The slot's zero-padded prefix against a key of up to 16 bytes; `end` as for scan_hash. */
static inline bool pfx_eq(const uint8_t *pfx, const uint8_t *key, size_t klen, const uint8_t *end)
{
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
    if (end && end - key >= 16) {
        uint64_t a0, a1, b0, b1;
        memcpy(&a0, pfx, 8);
        memcpy(&a1, pfx + 8, 8);
        memcpy(&b0, key, 8);
        memcpy(&b1, key + 8, 8);
        if (klen < 8) {
            b0 = klen ? b0 & (~0ull >> (64 - 8 * klen)) : 0;
            b1 = 0;
        } else if (klen < 16) {
            b1 = klen > 8 ? b1 & (~0ull >> (64 - 8 * (klen - 8))) : 0;
        }
        return a0 == b0 && a1 == b1;
    }
#endif
    return memcmp(pfx, key, klen) == 0;
}

static inline uint32_t scan_find(const scan_t *s, const uint8_t *key, size_t klen, uint64_t h,
                                 const uint8_t *end)
{
    for (uint32_t i = (uint32_t)h & s->mask;; i = (i + 1) & s->mask) {
        uint32_t slot = s->slots[i];
        if (!slot)
            return UINT32_MAX;
        const scan_key_t *sl = &s->keys[slot - 1];
        if (sl->h != h || sl->klen != klen)
            continue;
        if (klen <= 16) {
            if (pfx_eq(sl->pfx, key, klen, end))
                return slot - 1;
        } else if (memcmp(sl->pfx, key, 16) == 0 &&
                   memcmp(s->r->keys[slot - 1].key + 16, key + 16, klen - 16) == 0) {
            return slot - 1;
        }
    }
}

static int scan_new_load(crdt_replica_t *r)
{
    rep_load_t *L = calloc(1, sizeof(*L));
    if (!L)
        return CRDT_ENOMEM;
    pthread_mutex_init(&L->mu, NULL);
    L->dir = r->dir ? r->dir : "";
    r->load = L;
    return 0;
}

int rep_scan_begin(crdt_replica_t *r, rep_scan_t **out)
{
    *out = NULL;
    if (!r->load && scan_new_load(r) < 0)
        return CRDT_ENOMEM;
    scan_t *s = calloc(1, sizeof(*s));
    if (!s)
        return CRDT_ENOMEM;
    s->r = r;
    s->L = r->load;
    s->seed = r->seed ^ 0x5bd1e9955bd1e995ull;
    int rc = scan_grow_table(s);
    for (uint32_t id = 0; rc == 0 && id < r->nkeys; id++) {
        const rep_key_t *k = &r->keys[id];
        rc = scan_add(s, id, k->key, k->klen, rep_fast_hash(k->key, k->klen, s->seed, NULL));
    }
    if (rc < 0) {
        rep_scan_end(r, (rep_scan_t *)s);
        return rc;
    }
    *out = (rep_scan_t *)s;
    return 0;
}

/* A record the fast path does not take (an unusual layout, a new key whose encoding does not
 * name a type, a record of another type than its key's): replayed on the spot, the old way,
 * which reports what is wrong with it. */
static int scan_slow(scan_t *s, uint32_t id, const uint8_t *body, size_t blen, uint64_t seq,
                     const uint8_t *enc, size_t elen, crdt_error_t *err)
{
    crdt_replica_t *r = s->r;
    uint32_t before = r->nkeys;
    rep_idx_disable(r, NULL); /* the index has no way to list what this replays */
    int rc = id == UINT32_MAX ? rep_replay(r, body, blen, false, err)
                              : rep_replay_into(r, id, seq, enc, elen, err);
    if (rc < 0)
        return rc;
    if (id != UINT32_MAX && seq > r->last_seq)
        r->last_seq = seq;
    if (id != UINT32_MAX && seq > s->keys[id].seq)
        s->keys[id].seq = seq;
    for (uint32_t nid = before; nid < r->nkeys; nid++) {
        const rep_key_t *k = &r->keys[nid];
        if ((rc = scan_add(s, nid, k->key, k->klen, rep_fast_hash(k->key, k->klen, s->seed, NULL))) < 0)
            return rc;
    }
    r->rec.log_records++;
    return 0;
}

/* Adds a window of segment `base` starting at `start` (a segment past 4 GiB). */
static int scan_window(rep_load_t *L, uint64_t base, uint64_t start)
{
    if (L->nsegs >= SEG_MAX)
        return CRDT_ENOMEM;
    if (L->nsegs == L->cap_segs) {
        size_t ncap = L->cap_segs ? L->cap_segs * 2 : 8;
        load_seg_t *v = realloc(L->segs, ncap * sizeof(*v));
        if (!v)
            return CRDT_ENOMEM;
        L->segs = v;
        L->cap_segs = ncap;
    }
    L->segs[L->nsegs++] = (load_seg_t){base, start, NULL, 0, NULL, 0};
    return 0;
}

/* A new key, empty, of the given type (its first record's). Its id, or UINT32_MAX (no memory). */
static uint32_t scan_new_key(scan_t *s, const uint8_t *key, size_t klen, uint64_t h, uint8_t type)
{
    crdt_replica_t *r = s->r;
    crdt_obj_t *obj = rep_new_object(r, (crdt_type_t)type, key, klen);
    uint32_t id;
    if (!obj || (id = rep_insert(r, key, klen, rep_table_hash(key, klen, r->seed), obj)) == UINT32_MAX) {
        crdt_obj_free(obj);
        return UINT32_MAX;
    }
    return scan_add(s, id, key, klen, h) < 0 ? UINT32_MAX : id;
}

/* ---- the log's index (index.c writes it): its blocks instead of scanning their records ------ *
 * A block is used when it is intact (length, CRC), follows the previous one, ends within the
 * segment exactly after a record whose header it names (read back from the segment), and its
 * keys parse and agree with the types known; the first that is not ends the index, and the scan
 * goes on from the last one used. Its offset lists are used in place (the index is read whole,
 * into memory the load keeps). What the index says is checked again when a key is joined: each
 * listed record must be intact and the key's own. */

typedef struct idx_group {
    uint64_t seq;
    uint32_t count, klen;
    uint8_t type;
    const uint8_t *key;
    const uint32_t *off;
} idx_group_t;

/* The group at *pos of a block body of blen bytes, advancing *pos. false: it does not parse. */
static bool idx_group_at(const uint8_t *body, size_t blen, size_t *pos, idx_group_t *g)
{
    if (blen - *pos < REP_IDX_GROUP)
        return false;
    const uint8_t *p = body + *pos;
    g->seq = rep_get64(p);
    g->count = rep_get32(p + 8);
    g->klen = rep_get32(p + 12);
    g->type = p[16];
    size_t keyroom = ((size_t)g->klen + 3) & ~(size_t)3;
    if (g->count == 0 || g->type < CRDT_TYPE_MIN || g->type > CRDT_TYPE_MAX ||
        keyroom > blen - *pos - REP_IDX_GROUP ||
        (uint64_t)g->count * 4 > blen - *pos - REP_IDX_GROUP - keyroom)
        return false;
    g->key = p + REP_IDX_GROUP;
    g->off = (const uint32_t *)(const void *)(p + REP_IDX_GROUP + keyroom);
    *pos += REP_IDX_GROUP + keyroom + (size_t)g->count * 4;
    return true;
}

/* Every group of a block parses, the counts add up, and no key has another type than known. */
static bool idx_block_ok(const scan_t *s, const uint8_t *body, size_t blen, uint32_t groups,
                         uint64_t records)
{
    size_t pos = REP_IDX_BODY;
    uint64_t total = 0;
    for (uint32_t i = 0; i < groups; i++) {
        idx_group_t g;
        if (!idx_group_at(body, blen, &pos, &g))
            return false;
        total += g.count;
        uint32_t id = scan_find(s, g.key, g.klen, rep_fast_hash(g.key, g.klen, s->seed, NULL), NULL);
        if (id != UINT32_MAX && s->keys[id].type != g.type)
            return false;
    }
    return total == records && ((pos + 7) & ~(size_t)7) == blen;
}

/* Lists a checked block's records under their keys (creating keys), as the scan would have. */
static int idx_block_take(scan_t *s, const uint8_t *body, size_t blen, uint32_t groups,
                          uint32_t win)
{
    size_t pos = REP_IDX_BODY;
    for (uint32_t i = 0; i < groups; i++) {
        idx_group_t g;
        idx_group_at(body, blen, &pos, &g);
        uint64_t h = rep_fast_hash(g.key, g.klen, s->seed, NULL);
        uint32_t id = scan_find(s, g.key, g.klen, h, NULL);
        if (id == UINT32_MAX && (id = scan_new_key(s, g.key, g.klen, h, g.type)) == UINT32_MAX)
            return CRDT_ENOMEM;
        scan_key_t *k = &s->keys[id];
        if (g.seq > k->seq)
            k->seq = g.seq;
        if (k->cur)
            k->cur->n = k->n;
        load_blk_t *b = blk_alloc(s->L, k->cur, 0);
        if (!b)
            return CRDT_ENOMEM;
        b->win = win;
        b->ext = g.off;
        b->n = b->cap = g.count;
        k->cur = b;
        k->n = k->cap = g.count;
        k->win = win;
    }
    return 0;
}

/* Maps log-<base>.idx whole, for as long as the load lasts (its offset lists are used in place;
 * mapping the page cache's pages costs no fresh memory). NULL when there is none or it cannot be
 * mapped: then the segment is scanned. The blocks taken stay below where rep_idx_resume later
 * cuts the file, and blocks appended after are not in the mapping. */
static const uint8_t *idx_read(scan_t *s, uint64_t base, size_t *len)
{
    crdt_replica_t *r = s->r;
    rep_load_t *L = s->L;
    char name[48];
    rep_seg_name(name, sizeof(name), base);
    strcat(name, ".idx");
    int fd = openat(r->dirfd, name, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return NULL;
    struct stat sb;
    void *m = MAP_FAILED;
    struct load_map *maps = NULL;
    if (fstat(fd, &sb) == 0 && sb.st_size >= REP_IDX_HEADER + REP_IDX_BLK_HEADER + REP_IDX_BODY &&
        (uint64_t)sb.st_size < SIZE_MAX / 2 &&
        (maps = realloc(L->maps, (L->nmaps + 1) * sizeof(*maps))) != NULL) {
        L->maps = maps;
        m = mmap(NULL, (size_t)sb.st_size, PROT_READ, MAP_SHARED | MAP_POPULATE, fd, 0);
    }
    close(fd);
    if (m == MAP_FAILED)
        return NULL;
    L->maps[L->nmaps++] = (struct load_map){m, (size_t)sb.st_size};
    *len = (size_t)sb.st_size;
    return m;
}

/* Takes the usable blocks of segment base's index (fd: the segment, fsize bytes). *start: where
 * the scan goes on (the end of the last block taken, or the first record). Sets the index
 * writer's file_end (where the blocks taken end in the index file; 0 if it has no valid header).
 * 0 or CRDT_ENOMEM. */
static int idx_take(scan_t *s, int fd, uint64_t base, uint64_t fsize, uint64_t *start)
{
    crdt_replica_t *r = s->r;
    *start = REP_SEG_HEADER;
    r->log.idx.file_end = 0;
#if !defined(__BYTE_ORDER__) || __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
    return 0; /* the offset lists are used in place, as little-endian words */
#endif
    size_t size = 0;
    const uint8_t *buf = idx_read(s, base, &size);
    if (!buf || size < REP_IDX_HEADER || memcmp(buf, REP_IDX_MAGIC, 8) != 0 ||
        rep_get64(buf + 8) != base)
        return 0;
    size_t pos = REP_IDX_HEADER;
    r->log.idx.file_end = pos;
    while (size - pos >= REP_IDX_BLK_HEADER + REP_IDX_BODY) {
        uint32_t blen = rep_get32(buf + pos), crc = rep_get32(buf + pos + 4);
        const uint8_t *body = buf + pos + REP_IDX_BLK_HEADER;
        if (blen < REP_IDX_BODY || blen % 8 || blen > size - pos - REP_IDX_BLK_HEADER ||
            crdt_crc32c(0, body, blen) != crc)
            break;
        uint64_t from = rep_get64(body), to = rep_get64(body + 8), last_at = rep_get64(body + 16);
        uint32_t last_len = rep_get32(body + 24), last_crc = rep_get32(body + 28);
        uint64_t max_seq = rep_get64(body + 32), records = rep_get64(body + 40);
        uint32_t groups = rep_get32(body + 48);
        uint8_t lh[REP_REC_HEADER];
        if (from != *start || to <= from || to > fsize || to - from > UINT32_MAX ||
            last_at < from || last_at > to || to - last_at != REP_REC_HEADER + (uint64_t)last_len ||
            pread(fd, lh, sizeof(lh), (off_t)last_at) != (ssize_t)sizeof(lh) ||
            rep_get32(lh) != last_len || rep_get32(lh + 4) != last_crc ||
            !idx_block_ok(s, body, blen, groups, records))
            break;
        int rc = scan_window(s->L, base, from);
        if (rc < 0 || (rc = idx_block_take(s, body, blen, groups, (uint32_t)s->L->nsegs - 1)) < 0)
            return rc;
        if (max_seq > r->last_seq)
            r->last_seq = max_seq;
        r->rec.log_records += records;
        r->rec.index_records += records;
        *start = to;
        pos += REP_IDX_BLK_HEADER + blen;
        r->log.idx.file_end = pos;
    }
    return 0;
}

/* Records are taken a batch at a time from the buffer (rep_reader_take without reading, so the
 * batch's bodies stay put), hashed, and their table slots and key lines requested before any is
 * looked up: the lookups then find their lines in cache instead of waiting for each in turn (the
 * keys of a large keyspace do not fit beside the read buffer in the core's own cache). */
#define SCAN_BATCH 64

typedef struct scan_rec {
    const uint8_t *body, *key, *enc;
    uint64_t at, seq, h;
    uint32_t blen, klen, elen, id;
    bool fast; /* parsed; false: replayed the slow way, which says what is wrong */
} scan_rec_t;

/* Where the records of the segment being scanned go: its current window. */
typedef struct scan_win {
    uint64_t base;  /* the segment's */
    uint32_t win;   /* index in L->segs */
    uint64_t start; /* the window's offset in the segment */
} scan_win_t;

/* Finds (or creates) the keys of a batch of records and lists the records under them. 0, or a
 * negative code with *at the offset of the record that failed. */
static int scan_batch(scan_t *s, scan_win_t *w, scan_rec_t *batch, size_t nb, uint64_t *max_seq,
                      uint64_t *records, crdt_error_t *rerr, uint64_t *at)
{
    int rc;
    /* the key lines of the slots' first candidates */
    for (size_t i = 0; i < nb; i++) {
        if (!batch[i].fast)
            continue;
        uint32_t slot = s->slots[(uint32_t)batch[i].h & s->mask];
        if (slot)
            __builtin_prefetch(&s->keys[slot - 1]);
    }
    /* every record's key */
    for (size_t i = 0; i < nb; i++) {
        scan_rec_t *q = &batch[i];
        q->id = UINT32_MAX;
        *at = q->at;
        if (!q->fast) {
            if ((rc = scan_slow(s, UINT32_MAX, q->body, q->blen, 0, NULL, 0, rerr)) < 0)
                return rc;
            continue;
        }
        if (q->seq > *max_seq)
            *max_seq = q->seq;
        uint32_t id = scan_find(s, q->key, q->klen, q->h, q->body + q->blen);
        bool framed = q->elen >= 2 && q->enc[0] == CRDT_CODEC_VERSION &&
                      q->enc[1] >= CRDT_TYPE_MIN && q->enc[1] <= CRDT_TYPE_MAX;
        if (id == UINT32_MAX && framed &&
            (id = scan_new_key(s, q->key, q->klen, q->h, q->enc[1])) == UINT32_MAX)
            return CRDT_ENOMEM;
        if (id == UINT32_MAX || !framed || q->enc[1] != s->keys[id].type) {
            if ((rc = scan_slow(s, id, q->body, q->blen, q->seq, q->enc, q->elen, rerr)) < 0)
                return rc;
            continue;
        }
        q->id = id;
    }
    /* every record listed under its key */
    for (size_t i = 0; i < nb; i++) {
        const scan_rec_t *q = &batch[i];
        if (q->id == UINT32_MAX)
            continue;
        *at = q->at;
        rep_idx_note(s->r, q->id, q->at); /* the next block of the index lists it too */
        scan_key_t *k = &s->keys[q->id];
        if (q->seq > k->seq)
            k->seq = q->seq;
        if (q->at - w->start >= WINDOW) { /* a segment past 4 GiB: a new window */
            if ((rc = scan_window(s->L, w->base, q->at)) < 0)
                return rc;
            w->win = (uint32_t)s->L->nsegs - 1;
            w->start = q->at;
        }
        if (i + 4 < nb && batch[i + 4].id != UINT32_MAX) {
            const scan_key_t *ahead = &s->keys[batch[i + 4].id];
            if (ahead->cur)
                __builtin_prefetch(&ahead->cur->ent[ahead->n], 1);
        }
        if (!k->cur || k->n == k->cap || k->win != w->win) {
            if (k->cur)
                k->cur->n = k->n;
            load_blk_t *b = blk_new(s->L, k->cur);
            if (!b)
                return CRDT_ENOMEM;
            b->win = w->win;
            k->cur = b;
            k->n = 0;
            k->cap = b->cap;
            k->win = w->win;
        }
        k->cur->ent[k->n++] = (uint32_t)(q->at - w->start);
        (*records)++;
    }
    return 0;
}

static uint64_t scan_seq_of(const void *ctx, uint32_t id)
{
    return ((const scan_t *)ctx)->keys[id].seq;
}

int rep_scan_segment(crdt_replica_t *r, rep_scan_t *sc, int fd, uint64_t base, uint64_t *valid,
                     char *why, size_t whylen, crdt_error_t *err)
{
    scan_t *s = (scan_t *)sc;
    int rc = scan_window(s->L, base, 0);
    if (rc < 0) {
        rep_seterr(err, rc, "out of memory (or more than %u log windows)", SEG_MAX);
        return rc;
    }
    scan_win_t w = {base, (uint32_t)s->L->nsegs - 1, 0};
    struct stat sb;
    uint64_t start = REP_SEG_HEADER;
    if (fstat(fd, &sb) == 0 && (rc = idx_take(s, fd, base, (uint64_t)sb.st_size, &start)) < 0) {
        rep_seterr(err, rc, "out of memory (or more than %u log windows)", SEG_MAX);
        return rc;
    }
    rep_idx_resume(r, base, start); /* the records scanned go into the index's next blocks */
    posix_fadvise(fd, (off_t)start, 0, POSIX_FADV_SEQUENTIAL);
    rep_reader_t rd;
    if ((rc = rep_reader_init(&rd, fd, start)) < 0) {
        rep_seterr(err, rc, "cannot read %s/log-%020" PRIu64 ": %s", r->dir, base,
                   rc == CRDT_ENOMEM ? "out of memory" : strerror(errno));
        return rc;
    }
    const uint64_t snap_seq = r->snap.done_seq;
    uint64_t max_seq = r->last_seq, records = 0, at = start;
    crdt_error_t rerr = {0};
    scan_rec_t batch[SCAN_BATCH];
    int st = REP_REC_OK;
    while (st == REP_REC_OK && rc == 0) {
        size_t nb = 0;
        while (nb < SCAN_BATCH) {
            scan_rec_t *q = &batch[nb];
            size_t blen, klen, elen;
            q->at = rd.off;
            /* only the batch's first record may read: reading moves the buffer */
            st = rep_reader_take(&rd, nb == 0, &q->body, &blen, why, whylen);
            if (st != REP_REC_OK)
                break;
            q->blen = (uint32_t)blen;
            q->fast = rep_record_parse(q->body, blen, &q->seq, &q->key, &klen, &q->enc, &elen) == 0;
            if (q->fast) {
                /* records the snapshot already holds need nothing: it has their join */
                if (q->seq <= snap_seq) {
                    rep_idx_disable(r, NULL); /* (a block's last record must be noted) */
                    continue;
                }
                q->klen = (uint32_t)klen;
                q->elen = (uint32_t)elen;
                q->h = rep_fast_hash(q->key, klen, s->seed, q->body + blen);
                __builtin_prefetch(&s->slots[(uint32_t)q->h & s->mask]);
            }
            nb++;
        }
        if (st == REP_REC_AGAIN)
            st = REP_REC_OK;
        rc = scan_batch(s, &w, batch, nb, &max_seq, &records, &rerr, &at);
        if (rc == 0)
            rep_idx_scan_flush(r, fd, rd.off, max_seq, scan_seq_of, s);
    }
    *valid = rd.off;
    rep_reader_free(&rd);
    if (rc < 0) {
        rep_seterr(err, rc, "%s/log-%020" PRIu64 " offset %" PRIu64 ": %s", r->dir, base, at,
                   rc == CRDT_ENOMEM ? "out of memory" : rerr.text);
        return rc;
    }
    if (st == REP_REC_IOERR) {
        rep_seterr(err, CRDT_EIO, "cannot read %s/log-%020" PRIu64 ": %s", r->dir, base, why);
        return CRDT_EIO;
    }
    if (max_seq > r->last_seq)
        r->last_seq = max_seq;
    r->rec.log_records += records;
    return st == REP_REC_EOF ? 0 : 1;
}

int rep_scan_map(crdt_replica_t *r, int fd, uint64_t size, crdt_error_t *err)
{
    rep_load_t *L = r->load;
    /* the segment's windows are the last ones listed */
    size_t first = L->nsegs - 1;
    while (first > 0 && L->segs[first].start > 0)
        first--;
    uint64_t base = L->segs[first].base;
    if (size <= REP_SEG_HEADER)
        return 0;
    void *m = mmap(NULL, (size_t)size, PROT_READ, MAP_SHARED, fd, 0);
    if (m == MAP_FAILED) {
        rep_seterr(err, CRDT_EIO, "cannot map %s/log-%020" PRIu64 ": %s", r->dir, base,
                   strerror(errno));
        return CRDT_EIO;
    }
    /* the joins read records in key order, from all over the segment */
    /* (no MADV_RANDOM: it would also turn off fault-around, a page fault per record) */
    L->segs[first].owned = m;
    L->segs[first].owned_len = size;
    for (size_t i = first; i < L->nsegs; i++) {
        load_seg_t *w = &L->segs[i];
        w->size = w->start < size ? size - w->start : 0;
        w->map = (const uint8_t *)m + (w->start < size ? w->start : 0);
    }
    return 0;
}

void rep_scan_end(crdt_replica_t *r, rep_scan_t *sc)
{
    scan_t *s = (scan_t *)sc;
    if (!s)
        return;
    rep_load_t *L = s->L;
    /* hand the lists and seqs over: from here on the scan's table is not needed */
    if (L && s->keys) {
        uint32_t n = r->nkeys;
        crdt_obj_t **obj = malloc(((size_t)n + 1) * sizeof(*obj));
        load_blk_t **head = calloc((size_t)n + 1, sizeof(*head));
        uint8_t *state = calloc((size_t)n + 1, 1);
        const uint8_t **key = malloc(((size_t)n + 1) * sizeof(*key));
        uint32_t *klen = malloc(((size_t)n + 1) * sizeof(*klen));
        if (obj && head && state && key && klen) {
            for (uint32_t id = 0; id < n && id < s->cap_keys; id++) {
                rep_key_t *k = &r->keys[id];
                if (s->keys[id].seq > k->seq)
                    k->seq = s->keys[id].seq;
                obj[id] = k->obj;
                key[id] = k->key;
                klen[id] = k->klen;
                head[id] = s->keys[id].cur;
                if (head[id])
                    head[id]->n = s->keys[id].n;
                if (head[id]) {
                    state[id] = LOAD_PENDING;
                    L->remaining++;
                }
            }
            free(L->obj);
            free(L->head);
            free(L->state);
            free(L->key);
            free(L->klen);
            L->obj = obj, L->head = head, L->state = state, L->key = key, L->klen = klen;
            L->nkeys = n;
        } else {
            free(obj), free(head), free(state), free(key), free(klen);
            L->err_rc = CRDT_ENOMEM; /* rep_load_start refuses to go on */
        }
    }
    free(s->slots);
    free(s->keys);
    free(s);
}

/* ---- joining a key --------------------------------------------------------------------------- */

/* The encoding of key id's record at `off` of window `win`, or NULL with *why saying what is
 * wrong. The scan checked the records it listed, and the map is read-only and the directory
 * locked, so they are still there; the index's listings are checked here: each must be an
 * intact record of this key. */
static bool entry_enc(const rep_load_t *L, uint32_t id, uint32_t win, uint32_t off,
                      crdt_bytes_t *out, const char **why)
{
    const load_seg_t *sg = &L->segs[win];
    *why = "lies past the end of the segment";
    if (!sg->map || (uint64_t)off + REP_REC_HEADER > sg->size)
        return false;
    const uint8_t *h = sg->map + off;
    uint32_t blen = rep_get32(h);
    if (blen > sg->size - off - REP_REC_HEADER)
        return false;
    uint64_t seq;
    const uint8_t *key, *enc;
    size_t klen, elen;
    *why = "is not an intact record";
    if (crdt_crc32c(0, h + REP_REC_HEADER, blen) != rep_get32(h + 4) ||
        rep_record_parse(h + REP_REC_HEADER, blen, &seq, &key, &klen, &enc, &elen) < 0)
        return false;
    *why = "is another key's record";
    if (klen != L->klen[id] || (klen && memcmp(key, L->key[id], klen) != 0))
        return false;
    /* (an index that lists one new key twice, under two types, gets past open's checks) */
    *why = "is a record of another type than its key";
    if (elen < 2 || enc[1] != (uint8_t)crdt_obj_type(L->obj[id]))
        return false;
    *out = (crdt_bytes_t){enc, elen};
    return true;
}

/* An entry's place, for messages: window << 32 | offset in the window. */
static void where_str(const rep_load_t *L, uint64_t w, uint64_t *base, uint64_t *off)
{
    const load_seg_t *sg = &L->segs[w >> 32];
    *base = sg->base;
    *off = sg->start + (w & 0xffffffffu);
}

static void load_note_error(rep_load_t *L, int rc, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void load_note_error(rep_load_t *L, int rc, const char *fmt, ...)
{
    pthread_mutex_lock(&L->mu);
    if (!L->err_rc) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(L->err_text, sizeof(L->err_text), fmt, ap);
        va_end(ap);
        __atomic_store_n(&L->err_rc, rc, __ATOMIC_RELEASE);
    }
    pthread_mutex_unlock(&L->mu);
}

static int merge_group(rep_load_t *L, const char *dir, uint32_t id, crdt_bytes_t *encs, size_t n,
                       const uint64_t *where)
{
    size_t bad = 0;
    crdt_error_t err = {0};
    int rc = crdt_obj_merge_encoded_many(L->obj[id], encs, n, &bad, &err);
    if (rc >= 0)
        return 0;
    uint64_t base, off;
    where_str(L, where[bad < n ? bad : 0], &base, &off);
    load_note_error(L, rc, "%s/log-%020" PRIu64 ", record at offset %" PRIu64 ": %s%s%s", dir, base,
                    off,
                    rc == CRDT_ENOMEM    ? "out of memory"
                    : rc == CRDT_EDECODE ? "cannot decode an intact record"
                                         : crdt_strerror(rc),
                    rc == CRDT_EDECODE ? ": " : "", rc == CRDT_EDECODE ? err.text : "");
    return rc;
}

/* Joins all of key id's pending records into its object, newest first, GROUP_MAX at a time;
 * `where` is scratch of GROUP_MAX entries. A failure is noted (the first one wins) and the key
 * keeps what joined. */
static void join_key(rep_load_t *L, const char *dir, uint32_t id, crdt_bytes_t *encs,
                     uint64_t *where)
{
    size_t n = 0;
    for (const load_blk_t *b = L->head[id]; b; b = b->prev) {
        const uint32_t *ent = blk_ent(b);
        for (uint32_t i = b->n; i-- > 0;) {
            where[n] = (uint64_t)b->win << 32 | ent[i];
            const char *why;
            if (!entry_enc(L, id, b->win, ent[i], &encs[n], &why)) {
                uint64_t base, off;
                where_str(L, where[n], &base, &off);
                if (b->ext)
                    load_note_error(L, CRDT_EDECODE,
                                    "%s/log-%020" PRIu64 ", record at offset %" PRIu64
                                    " %s (the segment's index lists it: move log-%020" PRIu64
                                    ".idx away and restart to scan the segment instead)",
                                    dir, base, off, why, base);
                else
                    load_note_error(L, CRDT_EDECODE,
                                    "%s/log-%020" PRIu64 ", record at offset %" PRIu64
                                    " %s: it changed on disk while the replica held it",
                                    dir, base, off, why);
                return;
            }
            n++;
            if (n == GROUP_MAX) {
                if (merge_group(L, dir, id, encs, n, where) < 0)
                    return;
                n = 0;
            }
        }
    }
    if (n)
        merge_group(L, dir, id, encs, n, where);
}

static void finish_key(rep_load_t *L, uint32_t id)
{
    __atomic_store_n(&L->state[id], LOAD_DONE, __ATOMIC_RELEASE);
    if (__atomic_fetch_sub(&L->remaining, 1, __ATOMIC_ACQ_REL) == 1)
        __atomic_store_n(&L->done_us, (uint64_t)(rep_mono_s() * 1e6), __ATOMIC_RELEASE);
}

static bool claim(rep_load_t *L, uint32_t id)
{
    uint8_t want = LOAD_PENDING;
    return __atomic_compare_exchange_n(&L->state[id], &want, LOAD_CLAIMED, false, __ATOMIC_ACQ_REL,
                                       __ATOMIC_ACQUIRE);
}

/* Asks for the first lines of a key's records while the one before it is joined. */
static void prefetch_key(const rep_load_t *L, uint32_t id)
{
    unsigned budget = 2048;
    for (const load_blk_t *b = L->head[id]; b && budget; b = b->prev) {
        const load_seg_t *sg = &L->segs[b->win];
        const uint32_t *ent = blk_ent(b);
        for (uint32_t i = b->n; i-- > 0 && budget && sg->map; budget--)
            __builtin_prefetch(sg->map + ent[i]);
    }
}

static void *loader_main(void *arg)
{
    rep_load_t *L = arg;
    crdt_bytes_t *encs = malloc(GROUP_MAX * sizeof(*encs));
    uint64_t *where = malloc(GROUP_MAX * sizeof(*where));
    const char *dir = L->dir;
    if (!encs || !where)
        load_note_error(L, CRDT_ENOMEM, "out of memory for a loader thread");
    /* What the index listed was not read at open: have the kernel read the segments ahead, in
     * order, rather than a page fault at a time all over them as the keys are joined (the first
     * thread asks, once; off the replica's thread, as it may wait for the disk's queue). */
    int first = 0;
    if (__atomic_compare_exchange_n(&L->advised, &first, 1, false, __ATOMIC_ACQ_REL,
                                    __ATOMIC_ACQUIRE))
        for (size_t i = 0; i < L->nsegs; i++)
            if (L->segs[i].owned)
                madvise(L->segs[i].owned, (size_t)L->segs[i].owned_len, MADV_WILLNEED);
    while (encs && where && !__atomic_load_n(&L->stop, __ATOMIC_ACQUIRE)) {
        uint32_t id = __atomic_fetch_add(&L->next, 1, __ATOMIC_ACQ_REL);
        if (id >= L->nkeys)
            break;
        if (id + L->stride < L->nkeys)
            prefetch_key(L, id + L->stride);
        if (claim(L, id)) {
            join_key(L, dir, id, encs, where);
            finish_key(L, id);
        }
    }
    free(encs);
    free(where);
    __atomic_fetch_sub(&L->running, 1, __ATOMIC_ACQ_REL);
    return NULL;
}

/* ---- the replica's side ---------------------------------------------------------------------- */

static void load_free(crdt_replica_t *r)
{
    rep_load_t *L = r->load;
    if (!L)
        return;
    for (size_t i = 0; i < L->nsegs; i++)
        if (L->segs[i].owned)
            munmap(L->segs[i].owned, (size_t)L->segs[i].owned_len);
    for (load_chunk_t *c = L->chunks, *next; c; c = next) {
        next = c->next;
        munmap(c, c->size);
    }
    for (size_t i = 0; i < L->nmaps; i++)
        munmap(L->maps[i].p, L->maps[i].len);
    free(L->maps);
    free(L->key);
    free(L->klen);
    free(L->segs);
    free(L->obj);
    free(L->head);
    free(L->state);
    free(L->encs);
    free(L->where);
    pthread_mutex_destroy(&L->mu);
    free(L);
    r->load = NULL;
}

/* A failed join (an intact record this build cannot decode, or no memory) leaves its key with
 * what did join; the log still holds the record, so the replica stops taking writes and
 * snapshots (which would drop the log) and says why, rather than serving on as if complete. */
static void load_check_error(crdt_replica_t *r)
{
    rep_load_t *L = r->load;
    if (!L->reported && __atomic_load_n(&L->err_rc, __ATOMIC_ACQUIRE)) {
        L->reported = true;
        pthread_mutex_lock(&L->mu);
        rep_fail(r, "%s", L->err_text);
        pthread_mutex_unlock(&L->mu);
    }
}

int rep_load_start(crdt_replica_t *r, crdt_error_t *err)
{
    rep_load_t *L = r->load;
    if (!L)
        return 0;
    if (L->err_rc == CRDT_ENOMEM && !L->state) {
        load_free(r);
        rep_seterr(err, CRDT_ENOMEM, "out of memory");
        return CRDT_ENOMEM;
    }
    r->rec.pending_keys = L->remaining;
    if (!L->remaining) {
        load_free(r);
        r->rec.loaded_seconds = rep_mono_s() - r->rec_t0;
        return 0;
    }
    unsigned want =
        r->cfg.load_threads > REP_LOAD_MAX_THREADS ? REP_LOAD_MAX_THREADS : r->cfg.load_threads;
    L->nth = 0;
    L->stride = want;
    __atomic_store_n(&L->running, want, __ATOMIC_RELEASE);
    for (unsigned i = 0; i < want; i++) {
        L->nth = i + 1;
        if (pthread_create(&L->th[i], NULL, loader_main, L) != 0) {
            L->nth = i;
            __atomic_fetch_sub(&L->running, want - i, __ATOMIC_ACQ_REL);
            fprintf(stderr,
                    "crdtd replica: %u of %u background load threads started; the rest "
                    "of the keys load when touched\n",
                    i, want);
            break;
        }
    }
    return 0;
}

void rep_load_key(crdt_replica_t *r, uint32_t id)
{
    rep_load_t *L = r->load;
    if (id >= L->nkeys || __atomic_load_n(&L->state[id], __ATOMIC_ACQUIRE) == LOAD_DONE)
        return;
    if (claim(L, id)) {
        if (!L->encs)
            L->encs = malloc(GROUP_MAX * sizeof(*L->encs));
        if (!L->where)
            L->where = malloc(GROUP_MAX * sizeof(*L->where));
        if (L->encs && L->where)
            join_key(L, L->dir, id, L->encs, L->where);
        else
            load_note_error(L, CRDT_ENOMEM, "out of memory while loading a key");
        finish_key(L, id);
    } else {
        /* a background thread is joining it: a fraction of a millisecond */
        for (unsigned spins = 0; __atomic_load_n(&L->state[id], __ATOMIC_ACQUIRE) != LOAD_DONE;
             spins++) {
            if (spins < 64) {
                sched_yield();
            } else {
                struct timespec ts = {0, 50000};
                nanosleep(&ts, NULL);
            }
        }
    }
    load_check_error(r);
}

static void load_join_threads(crdt_replica_t *r)
{
    rep_load_t *L = r->load;
    for (unsigned i = 0; i < L->nth; i++)
        pthread_join(L->th[i], NULL);
    L->nth = 0;
}

void rep_load_poll(crdt_replica_t *r)
{
    rep_load_t *L = r->load;
    if (!L)
        return;
    load_check_error(r);
    if (__atomic_load_n(&L->remaining, __ATOMIC_ACQUIRE) ||
        __atomic_load_n(&L->running, __ATOMIC_ACQUIRE))
        return;
    load_join_threads(r);
    uint64_t done = __atomic_load_n(&L->done_us, __ATOMIC_ACQUIRE);
    r->rec.loaded_seconds = (done ? (double)done / 1e6 : rep_mono_s()) - r->rec_t0;
    load_free(r);
}

void rep_load_all(crdt_replica_t *r)
{
    rep_load_t *L = r->load;
    if (!L)
        return;
    /* Helps: the keys no thread has taken yet are joined here, from the end (the threads work
     * from the start). */
    for (uint32_t id = L->nkeys; id-- > 0;)
        rep_load_key(r, id);
    load_check_error(r); /* a thread's failure on a key nobody here had to wait for */
    r->rec.loaded_seconds = rep_mono_s() - r->rec_t0;
    rep_load_stop(r);
}

void rep_load_stop(crdt_replica_t *r)
{
    rep_load_t *L = r->load;
    if (!L)
        return;
    __atomic_store_n(&L->stop, 1, __ATOMIC_RELEASE);
    load_join_threads(r);
    load_free(r);
}

uint64_t rep_load_pending(const crdt_replica_t *r)
{
    return r->load ? __atomic_load_n(&r->load->remaining, __ATOMIC_ACQUIRE) : 0;
}
