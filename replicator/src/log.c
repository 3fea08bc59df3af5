/* log.c - the delta log: record codec, segments, group commit and recovery of a torn tail */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "replica_private.h"

/* ---- records: u32 body length, u32 CRC-32C of the body, body = varint seq, varint key length,
 * key bytes, the object's libcrdt encoding (which runs to the end of the body) ---------------- */

static size_t put_varint(uint8_t *p, uint64_t v)
{
    size_t n = 0;
    while (v >= 0x80) {
        p[n++] = (uint8_t)(v | 0x80);
        v >>= 7;
    }
    p[n++] = (uint8_t)v;
    return n;
}

static int get_varint(const uint8_t *p, size_t len, size_t *pos, uint64_t *v)
{
    uint64_t x = 0;
    for (unsigned shift = 0; shift < 64; shift += 7) {
        if (*pos >= len)
            return CRDT_EDECODE;
        uint8_t b = p[(*pos)++];
        x |= (uint64_t)(b & 0x7F) << shift;
        if (!(b & 0x80)) {
            *v = x;
            return 0;
        }
    }
    return CRDT_EDECODE;
}

int rep_record_append(crdt_buf_t *b, uint64_t seq, const void *key, size_t klen,
                      const crdt_obj_t *o)
{
    size_t start = b->len;
    if (crdt_buf_reserve(b, REP_REC_HEADER + 20 + klen) < 0)
        return CRDT_ENOMEM;
    uint8_t *p = b->data + start + REP_REC_HEADER;
    p += put_varint(p, seq);
    p += put_varint(p, klen);
    if (klen)
        memcpy(p, key, klen);
    b->len = (size_t)(p - b->data) + klen;
    if (crdt_obj_encode(o, b) < 0) {
        b->len = start;
        return CRDT_ENOMEM;
    }
    size_t body = b->len - start - REP_REC_HEADER;
    if (body > REP_REC_MAX) {
        b->len = start;
        return CRDT_EINVAL;
    }
    uint8_t *h = b->data + start;
    rep_put32(h, (uint32_t)body);
    rep_put32(h + 4, crdt_crc32c(0, h + REP_REC_HEADER, body));
    return 0;
}

int rep_record_parse(const uint8_t *body, size_t len, uint64_t *seq, const uint8_t **key,
                     size_t *klen, const uint8_t **obj, size_t *olen)
{
    size_t pos = 0;
    uint64_t kl;
    if (get_varint(body, len, &pos, seq) < 0 || get_varint(body, len, &pos, &kl) < 0 ||
        kl > len - pos || kl == len - pos)
        return CRDT_EDECODE;
    *key = body + pos;
    *klen = (size_t)kl;
    pos += (size_t)kl;
    *obj = body + pos;
    *olen = len - pos;
    return 0;
}

/* ---- the chunked reader --------------------------------------------------------------------- */

#define READER_CHUNK (4u << 20)

int rep_reader_init(rep_reader_t *rd, int fd, uint64_t off)
{
    memset(rd, 0, sizeof(*rd));
    rd->fd = fd;
    rd->off = off;
    rd->cap = READER_CHUNK;
    struct stat sb;
    if (fstat(fd, &sb) < 0)
        return CRDT_EIO;
    rd->size = (uint64_t)sb.st_size;
    rd->buf = malloc(rd->cap);
    if (!rd->buf)
        return CRDT_ENOMEM;
    if (lseek(fd, (off_t)off, SEEK_SET) < 0) {
        free(rd->buf);
        rd->buf = NULL;
        return CRDT_EIO;
    }
    return 0;
}

void rep_reader_free(rep_reader_t *rd)
{
    free(rd->buf);
    rd->buf = NULL;
}

/* Reads until `need` bytes are buffered or the file ends. 0, CRDT_ENOMEM or CRDT_EIO. */
static int fill(rep_reader_t *rd, size_t need)
{
    if (rd->end - rd->start >= need || rd->eof)
        return 0;
    if (need > rd->cap) {
        size_t cap = rd->cap;
        while (cap < need)
            cap *= 2;
        uint8_t *b = malloc(cap);
        if (!b)
            return CRDT_ENOMEM;
        memcpy(b, rd->buf + rd->start, rd->end - rd->start);
        free(rd->buf);
        rd->buf = b;
        rd->cap = cap;
        rd->end -= rd->start;
        rd->start = 0;
    } else if (rd->start + need > rd->cap) {
        memmove(rd->buf, rd->buf + rd->start, rd->end - rd->start);
        rd->end -= rd->start;
        rd->start = 0;
    }
    while (rd->end - rd->start < need) {
        ssize_t n = read(rd->fd, rd->buf + rd->end, rd->cap - rd->end);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0)
            return CRDT_EIO;
        if (n == 0) {
            rd->eof = true;
            break;
        }
        rd->end += (size_t)n;
    }
    return 0;
}

int rep_reader_next(rep_reader_t *rd, const uint8_t **body, size_t *len, char *why, size_t whylen)
{
    int rc = fill(rd, REP_REC_HEADER);
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
    if ((rc = fill(rd, REP_REC_HEADER + (size_t)blen)) < 0) {
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

/* ---- segments ------------------------------------------------------------------------------- */

static void seg_name(char *out, size_t n, uint64_t base)
{
    snprintf(out, n, "log-%020" PRIu64, base);
}

static bool parse_seg_name(const char *name, uint64_t *base)
{
    if (strncmp(name, "log-", 4) != 0 || strlen(name) != 24)
        return false;
    uint64_t v = 0;
    for (const char *p = name + 4; *p; p++) {
        if (*p < '0' || *p > '9')
            return false;
        uint64_t d = (uint64_t)(*p - '0');
        if (v > (UINT64_MAX - d) / 10)
            return false;
        v = v * 10 + d;
    }
    *base = v;
    return true;
}

int rep_fsync_dir(crdt_replica_t *r)
{
    if (fsync(r->dirfd) < 0) {
        rep_fail(r, "cannot fsync data directory %s: %s", r->dir, strerror(errno));
        return CRDT_EIO;
    }
    return 0;
}

static bool sync_wanted(const crdt_replica_t *r)
{
    return r->cfg.fsync != CRDT_FSYNC_NO;
}

/* Creates log-<base> with its header and makes it the current segment. */
static int create_segment(crdt_replica_t *r, uint64_t base)
{
    char name[40];
    seg_name(name, sizeof(name), base);
    int fd = openat(r->dirfd, name, O_RDWR | O_CREAT | O_TRUNC | O_APPEND | O_CLOEXEC, 0644);
    if (fd < 0) {
        rep_fail(r, "cannot create log segment %s/%s: %s", r->dir, name, strerror(errno));
        return CRDT_EIO;
    }
    uint8_t h[REP_SEG_HEADER];
    memcpy(h, REP_SEG_MAGIC, 8);
    rep_put64(h + 8, base);
    if (write(fd, h, sizeof(h)) != (ssize_t)sizeof(h) || (sync_wanted(r) && fdatasync(fd) < 0)) {
        rep_fail(r, "cannot write log segment %s/%s: %s", r->dir, name, strerror(errno));
        close(fd);
        return CRDT_EIO;
    }
    r->log.fd = fd;
    r->log.seg_base = base;
    r->log.seg_bytes = REP_SEG_HEADER;
    return sync_wanted(r) ? rep_fsync_dir(r) : 0;
}

static int push_old(crdt_replica_t *r, uint64_t base, uint64_t bytes)
{
    if (r->log.n_old == r->log.cap_old) {
        size_t cap = r->log.cap_old ? r->log.cap_old * 2 : 8;
        rep_seg_t *o = realloc(r->log.old, cap * sizeof(*o));
        if (!o)
            return CRDT_ENOMEM;
        r->log.old = o;
        r->log.cap_old = cap;
    }
    r->log.old[r->log.n_old++] = (rep_seg_t){base, bytes};
    r->log.old_bytes += bytes;
    return 0;
}

static int u64_cmp(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return (x > y) - (x < y);
}

/* The bases of every log segment in the directory, ascending. */
static int list_segments(crdt_replica_t *r, uint64_t **out, size_t *n, crdt_error_t *err)
{
    *out = NULL;
    *n = 0;
    int fd = dup(r->dirfd);
    DIR *d = fd >= 0 ? fdopendir(fd) : NULL;
    if (!d) {
        if (fd >= 0)
            close(fd);
        rep_seterr(err, CRDT_EIO, "cannot list %s: %s", r->dir, strerror(errno));
        return CRDT_EIO;
    }
    rewinddir(d);
    size_t cap = 0;
    struct dirent *de;
    int rc = 0;
    while ((de = readdir(d))) {
        uint64_t base;
        if (!parse_seg_name(de->d_name, &base))
            continue;
        if (*n == cap) {
            cap = cap ? cap * 2 : 16;
            uint64_t *v = realloc(*out, cap * sizeof(*v));
            if (!v) {
                rc = CRDT_ENOMEM;
                break;
            }
            *out = v;
        }
        (*out)[(*n)++] = base;
    }
    closedir(d);
    if (rc < 0) {
        free(*out);
        *out = NULL;
        rep_seterr(err, rc, "out of memory");
        return rc;
    }
    if (*n)
        qsort(*out, *n, sizeof(**out), u64_cmp);
    return 0;
}

static void note_drop(crdt_replica_t *r, uint64_t bytes, const char *name, uint64_t off,
                      const char *why)
{
    if (!r->rec.dropped_bytes)
        snprintf(r->rec.dropped_reason, sizeof(r->rec.dropped_reason),
                 "%.100s at offset %" PRIu64 " of %.28s", why, off, name);
    r->rec.dropped_bytes += bytes;
}

/* Replay in key order. Deltas are joins, so the order they are joined in does not matter; what
 * does is memory: records of one key are spread over the whole log, and joining them as they come
 * touches a different object (cold in cache) for nearly every record. So the segment is mapped,
 * a first pass checks and frames every record and notes (offset, key id) of those of keys already
 * present, and a second pass hands each key all its records of a batch at once
 * (crdt_obj_merge_encoded_many): libcrdt validates them and joins them without building an object
 * per record; a timeline takes a key's hundreds of one-entry deltas in one linear pass. Keys are
 * independent objects, so the second pass runs on two threads, each taking whole keys. */
/* 2 x 16 bytes of index per record while a batch is sorted: 512 MiB at most (and never more than
 * 1.6 times the segment: a record takes 20 bytes or more). All of a key's records in one batch is
 * the fast case: its object is then built in one pass. */
#define BATCH_RECORDS (16u << 20)
#ifndef REP_REPLAY_THREADS
#define REP_REPLAY_THREADS 2 /* 1 or 2 (a build-time switch, for measuring) */
#endif
#define GROUP_MAX 65536 /* records of one key joined per call (bounds the call's memory) */

typedef struct batch_ent {
    uint64_t enc; /* file offset of the record's encoding (which ends the record) */
    uint32_t id;
    uint32_t elen;
} batch_ent_t;

typedef struct replay_batch {
    const uint8_t *map; /* the segment */
    batch_ent_t *ents;
    size_t n, cap;
    uint64_t max_seq;
} replay_batch_t;

/* The keys of a batch one thread replays: ids `first`, first + step, ... A key stays with one
 * thread in every batch, so its memory is always grown by the same thread (and its malloc
 * arena). */
typedef struct replay_part {
    crdt_replica_t *r;
    const replay_batch_t *b;
    uint32_t first, step;
    int rc;
    uint64_t at; /* offset of the failing record's encoding */
    crdt_error_t err;
} replay_part_t;

static void *big_alloc(size_t bytes);
static void big_free(void *p, size_t bytes);

static void *replay_part_run(void *arg)
{
    replay_part_t *p = arg;
    uint32_t nkeys = p->r->nkeys;
    /* This thread's share of the batch, sorted by key (a counting sort): ents[start[id] ..
     * start[id + 1]) are key id's records in log order. Each thread sorts its own share, so the
     * sort runs on both cores too. */
    uint32_t *start = calloc((size_t)nkeys + 1, sizeof(*start));
    crdt_bytes_t *encs = malloc(GROUP_MAX * sizeof(*encs));
    const batch_ent_t *all = p->b->ents;
    size_t n_all = p->b->n, mine = 0;
    batch_ent_t *ents = NULL;
    if (start && encs) {
        for (size_t i = 0; i < n_all; i++) {
            if (all[i].id % p->step == p->first) {
                start[all[i].id + 1]++;
                mine++;
            }
        }
        ents = big_alloc((mine ? mine : 1) * sizeof(*ents));
    }
    if (!ents) {
        p->rc = CRDT_ENOMEM;
        snprintf(p->err.text, sizeof(p->err.text), "out of memory");
        free(start);
        free(encs);
        return NULL;
    }
    for (uint32_t id = 0; id < nkeys; id++)
        start[id + 1] += start[id];
    for (size_t i = 0; i < n_all; i++)
        if (all[i].id % p->step == p->first)
            ents[start[all[i].id]++] = all[i];
    /* the scatter advanced every start to its end: shift back */
    memmove(start + 1, start, (size_t)nkeys * sizeof(*start));
    start[0] = 0;
    const uint8_t *map = p->b->map;
    for (uint32_t id = p->first; id < nkeys && p->rc == 0; id += p->step) {
        /* A key's records lie all over the log, so reading them is a cache miss each. The next
         * key's are requested now and arrive while this one's are joined (a few hundred KiB at
         * most in flight: GROUP_MAX records). Copying the records into key order beforehand
         * cost more than these misses (a scatter into one stream per key). */
        if (id + p->step < nkeys) {
            size_t lo = start[id + p->step], hi = start[id + p->step + 1];
            if (hi - lo > GROUP_MAX)
                hi = lo + GROUP_MAX;
            for (size_t k = lo; k < hi; k++) {
                __builtin_prefetch(map + ents[k].enc);
                __builtin_prefetch(map + ents[k].enc + ents[k].elen - 1);
            }
        }
        for (size_t j = start[id]; j < start[id + 1];) {
            size_t end = start[id + 1];
            if (end - j > GROUP_MAX)
                end = j + GROUP_MAX;
            /* newest first: for LWW types and timelines older writes then lose early, and a
             * feed's rising scores arrive already in the timeline's newest-first order */
            size_t n = 0;
            for (size_t k = end; k-- > j;)
                encs[n++] = (crdt_bytes_t){map + ents[k].enc, ents[k].elen};
            size_t bad = 0;
            int rc = crdt_obj_merge_encoded_many(p->r->keys[id].obj, encs, n, &bad, &p->err);
            if (rc < 0) {
                p->rc = rc;
                p->at = ents[end - 1 - bad].enc;
                break;
            }
            j = end;
        }
    }
    big_free(ents, (mine ? mine : 1) * sizeof(*ents));
    free(start);
    free(encs);
    return NULL;
}

/* The batch's index arrays are large and short-lived: map them with huge pages where the kernel
 * offers them (a page fault per 4 KiB of a few hundred MiB is a measurable share of a replay). */
static void *big_alloc(size_t bytes)
{
    size_t len = (bytes + (2u << 20) - 1) & ~(size_t)((2u << 20) - 1);
    void *p = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED)
        return NULL;
#ifdef MADV_HUGEPAGE
    madvise(p, len, MADV_HUGEPAGE);
#endif
    return p;
}

static void big_free(void *p, size_t bytes)
{
    if (p)
        munmap(p, (bytes + (2u << 20) - 1) & ~(size_t)((2u << 20) - 1));
}

static void batch_free(replay_batch_t *b)
{
    big_free(b->ents, b->cap * sizeof(*b->ents));
    b->ents = NULL;
    b->n = b->cap = 0;
}

/* Joins every batched record, grouped by key. */
static int batch_run(crdt_replica_t *r, replay_batch_t *b, const char *name, crdt_error_t *err)
{
    if (!b->n)
        return 0;
    int rc = 0;
    /* Keys are independent objects and libcrdt has no shared state, so a second thread takes
     * every other key. */
    int nthreads = REP_REPLAY_THREADS > 1 && b->n >= 4096 && r->nkeys > 1 ? 2 : 1;
    replay_part_t part[2] = {{r, b, 0, (uint32_t)nthreads, 0, 0, {0}}, {r, b, 1, 2, 0, 0, {0}}};
    pthread_t th;
    bool threaded = false;
    if (nthreads == 2) {
        threaded = pthread_create(&th, NULL, replay_part_run, &part[1]) == 0;
        if (!threaded)
            part[0].step = 1;
    }
    replay_part_run(&part[0]);
    if (threaded)
        pthread_join(th, NULL);
    for (int i = 0; i < (threaded ? 2 : 1); i++) {
        if (part[i].rc < 0) {
            rc = part[i].rc;
            rep_seterr(err, rc, "%s/%s, record with its object at offset %" PRIu64 ": %s", r->dir,
                       name, part[i].at,
                       rc == CRDT_ENOMEM    ? "out of memory"
                       : rc == CRDT_EDECODE ? "cannot decode an intact record"
                                            : crdt_strerror(rc));
            if (rc == CRDT_EDECODE && err && err->code == rc) {
                size_t l = strlen(err->text);
                snprintf(err->text + l, sizeof(err->text) - l, ": %s", part[i].err.text);
            }
            goto out;
        }
    }
    if (b->max_seq > r->last_seq)
        r->last_seq = b->max_seq;
    r->rec.log_records += b->n;
    b->n = 0;
out:
    return rc;
}

/* The key of the previous record, so a run of records of one key looks it up once. */
typedef struct key_cache {
    const uint8_t *key;
    size_t klen;
    uint32_t id;
} key_cache_t;

/* Replays one record now (a new key, or something to report) or batches it (a key already
 * present, the record of its type). */
static int replay_record(crdt_replica_t *r, replay_batch_t *b, key_cache_t *kc, const uint8_t *body,
                         size_t blen, uint64_t at, const char *name, crdt_error_t *err)
{
    uint64_t seq;
    const uint8_t *key, *enc;
    size_t klen, elen;
    int rc;
    uint32_t id = UINT32_MAX;
    bool parsed = rep_record_parse(body, blen, &seq, &key, &klen, &enc, &elen) == 0;
    if (parsed) {
        /* Records the snapshot already holds need no decoding: it has their join. */
        if (seq <= r->snap.done_seq)
            return 0;
        if (kc->key && kc->klen == klen && memcmp(kc->key, key, klen) == 0)
            id = kc->id;
        else
            id = rep_find(r, key, klen, rep_hash(key, klen, r->seed));
    }
    crdt_error_t rerr = {0};
    if (parsed && id == UINT32_MAX && elen >= 2 && enc[0] == CRDT_CODEC_VERSION &&
        enc[1] >= CRDT_TYPE_MIN && enc[1] <= CRDT_TYPE_MAX) {
        /* A new key starts empty and its records go into the batch like any other: the threads
         * that join them then allocate its memory. */
        uint64_t h = rep_hash(key, klen, r->seed);
        crdt_obj_t *obj = rep_new_object(r, (crdt_type_t)enc[1]);
        if (!obj || (id = rep_insert(r, key, klen, h, obj)) == UINT32_MAX) {
            crdt_obj_free(obj);
            rep_seterr(err, CRDT_ENOMEM, "out of memory");
            return CRDT_ENOMEM;
        }
    }
    if (id == UINT32_MAX) {
        /* an invalid layout or frame: rep_replay says what is wrong */
        if ((rc = rep_replay(r, body, blen, false, &rerr)) < 0)
            goto fail;
        r->rec.log_records++;
        return 0;
    }
    *kc = (key_cache_t){key, klen, id};
    rep_key_t *k = &r->keys[id];
    if (elen < 2 || enc[1] != k->type) {
        /* another type (or no frame at all): reported (or skipped) the slow way */
        if ((rc = rep_replay_into(r, id, seq, enc, elen, &rerr)) < 0)
            goto fail;
        if (seq > r->last_seq)
            r->last_seq = seq;
        r->rec.log_records++;
        return 0;
    }
    if (!b->ents) {
        /* room for the batch at once: pages are only touched as records arrive */
        b->cap = BATCH_RECORDS;
        if (!(b->ents = big_alloc(b->cap * sizeof(*b->ents)))) {
            b->cap = 0;
            rep_seterr(err, CRDT_ENOMEM, "out of memory");
            return CRDT_ENOMEM;
        }
    }
    /* only this thread writes seqs: the apply threads touch objects alone */
    if (seq > k->seq)
        k->seq = seq;
    b->ents[b->n++] = (batch_ent_t){(uint64_t)(enc - b->map), id, (uint32_t)elen};
    if (seq > b->max_seq)
        b->max_seq = seq;
    if (b->n >= BATCH_RECORDS)
        return batch_run(r, b, name, err);
    return 0;
fail:
    rep_seterr(err, rc, "%s/%s offset %" PRIu64 ": %s", r->dir, name, at,
               rc == CRDT_ENOMEM ? "out of memory" : rerr.text);
    return rc;
}

/* The next record of a mapped segment at *pos: REP_REC_OK (body, len set, *pos advanced),
 * REP_REC_EOF, or REP_REC_TORN / REP_REC_CORRUPT with `why` filled (*pos stays at the record). */
static int map_next(const uint8_t *map, uint64_t size, uint64_t *pos, const uint8_t **body,
                    size_t *len, char *why, size_t whylen)
{
    uint64_t have = size - *pos;
    if (have == 0)
        return REP_REC_EOF;
    if (have < REP_REC_HEADER) {
        snprintf(why, whylen, "torn record header (%" PRIu64 " of %u bytes)", have, REP_REC_HEADER);
        return REP_REC_TORN;
    }
    const uint8_t *h = map + *pos;
    uint32_t blen = rep_get32(h), crc = rep_get32(h + 4);
    if (blen < 3 || blen > REP_REC_MAX) {
        snprintf(why, whylen, "impossible record length %" PRIu32, blen);
        return REP_REC_CORRUPT;
    }
    if (REP_REC_HEADER + (uint64_t)blen > have) {
        snprintf(why, whylen, "torn record (%" PRIu64 " of %zu bytes present)", have,
                 REP_REC_HEADER + (size_t)blen);
        return REP_REC_TORN;
    }
    if (crdt_crc32c(0, h + REP_REC_HEADER, blen) != crc) {
        snprintf(why, whylen, "checksum mismatch in a record of %" PRIu32 " bytes", blen);
        return REP_REC_CORRUPT;
    }
    *body = h + REP_REC_HEADER;
    *len = blen;
    *pos += REP_REC_HEADER + (uint64_t)blen;
    return REP_REC_OK;
}

/* Segments up to this size are read into (huge-page) memory; larger ones are mapped. */
#define SEGMENT_READ_MAX (2ull << 30)

/* The whole segment in memory. Replay reads a key's records from all over it, a cache and TLB
 * miss each: in anonymous memory with 2 MiB pages the TLB misses go away, and reading is one
 * sequential pass at the speed of `cat`. A segment too large to hold twice is mapped instead
 * (its pages come and go with the page cache). 0 or CRDT_EIO. */
static int load_segment(int fd, uint64_t fsize, const uint8_t **out, bool *mapped)
{
    posix_fadvise(fd, 0, 0, POSIX_FADV_SEQUENTIAL);
    uint8_t *buf = fsize <= SEGMENT_READ_MAX ? big_alloc((size_t)fsize) : NULL;
    if (buf) {
        uint64_t got = 0;
        while (got < fsize) {
            ssize_t n =
                pread(fd, buf + got, (size_t)(fsize - got > (1u << 30) ? (1u << 30) : fsize - got),
                      (off_t)got);
            if (n < 0 && errno == EINTR)
                continue;
            if (n <= 0) {
                int e = n < 0 ? errno : EIO;
                big_free(buf, (size_t)fsize);
                errno = e;
                return CRDT_EIO;
            }
            got += (uint64_t)n;
        }
        *out = buf;
        *mapped = false;
        return 0;
    }
    posix_fadvise(fd, 0, 0, POSIX_FADV_WILLNEED);
    const uint8_t *map = mmap(NULL, (size_t)fsize, PROT_READ, MAP_PRIVATE, fd, 0);
    if (map == MAP_FAILED)
        return CRDT_EIO;
    *out = map;
    *mapped = true;
    return 0;
}

static void unload_segment(const uint8_t *p, uint64_t fsize, bool mapped)
{
    if (mapped)
        munmap((void *)p, (size_t)fsize);
    else
        big_free((void *)p, (size_t)fsize);
}

/* Replays one segment and truncates a torn or corrupt tail away. 0 or a negative code. */
static int replay_segment(crdt_replica_t *r, int fd, const char *name, uint64_t base,
                          uint64_t *size, crdt_error_t *err)
{
    struct stat sb;
    if (fstat(fd, &sb) < 0) {
        rep_seterr(err, CRDT_EIO, "cannot stat %s/%s: %s", r->dir, name, strerror(errno));
        return CRDT_EIO;
    }
    uint64_t fsize = (uint64_t)sb.st_size;
    uint8_t h[REP_SEG_HEADER];
    if (fsize < REP_SEG_HEADER) {
        /* Created, then the crash came before its header was complete: nothing in it yet. */
        note_drop(r, fsize, name, 0, "torn segment header");
        memcpy(h, REP_SEG_MAGIC, 8);
        rep_put64(h + 8, base);
        if (ftruncate(fd, 0) < 0 || pwrite(fd, h, sizeof(h), 0) != (ssize_t)sizeof(h) ||
            fdatasync(fd) < 0) {
            rep_seterr(err, CRDT_EIO, "cannot repair %s/%s: %s", r->dir, name, strerror(errno));
            return CRDT_EIO;
        }
        *size = REP_SEG_HEADER;
        return 0;
    }
    if (fsize > SIZE_MAX) {
        rep_seterr(err, CRDT_EIO, "%s/%s is too large to map", r->dir, name);
        return CRDT_EIO;
    }
    const uint8_t *map;
    bool mapped;
    int rc = load_segment(fd, fsize, &map, &mapped);
    if (rc < 0) {
        rep_seterr(err, CRDT_EIO, "cannot read %s/%s: %s", r->dir, name, strerror(errno));
        return CRDT_EIO;
    }
    if (memcmp(map, REP_SEG_MAGIC, 8) != 0 || rep_get64(map + 8) != base) {
        unload_segment(map, fsize, mapped);
        /* Not a torn tail: refusing keeps whatever it is for a human to look at. */
        rep_seterr(err, CRDT_EDECODE,
                   "%s/%s does not start with a log segment header for base "
                   "%" PRIu64 "; move it away to start without it",
                   r->dir, name, base);
        return CRDT_EDECODE;
    }
    const uint8_t *body;
    size_t blen;
    char why[120];
    replay_batch_t batch = {map, NULL, 0, 0, 0};
    key_cache_t kc = {NULL, 0, 0};
    int brc = 0;
    uint64_t pos = REP_SEG_HEADER;
    for (;;) {
        uint64_t at = pos;
        if ((rc = map_next(map, fsize, &pos, &body, &blen, why, sizeof(why))) != REP_REC_OK)
            break;
        if ((brc = replay_record(r, &batch, &kc, body, blen, at, name, err)) < 0)
            break;
    }
    if (brc == 0)
        brc = batch_run(r, &batch, name, err);
    batch_free(&batch);
    unload_segment(map, fsize, mapped);
    if (brc < 0)
        return brc;
    if (rc != REP_REC_EOF) {
        note_drop(r, fsize - pos, name, pos, why);
        if (ftruncate(fd, (off_t)pos) < 0 || fdatasync(fd) < 0) {
            rep_seterr(err, CRDT_EIO, "cannot truncate %s/%s: %s", r->dir, name, strerror(errno));
            return CRDT_EIO;
        }
        fsize = pos;
    }
    *size = fsize;
    return 0;
}

int rep_log_open(crdt_replica_t *r, crdt_error_t *err)
{
    uint64_t *bases;
    size_t n;
    int rc = list_segments(r, &bases, &n, err);
    if (rc < 0)
        return rc;
    char name[40];
    /* Segments whose successor starts at or before the snapshot's seq are wholly covered by it
     * (a crash came between the snapshot's rename and their deletion). */
    size_t first = 0;
    while (first + 1 < n && bases[first + 1] <= r->snap.done_seq) {
        seg_name(name, sizeof(name), bases[first]);
        unlinkat(r->dirfd, name, 0);
        first++;
    }
    for (size_t i = first; i < n; i++) {
        seg_name(name, sizeof(name), bases[i]);
        int fd = openat(r->dirfd, name, O_RDWR | O_APPEND | O_CLOEXEC);
        if (fd < 0) {
            rep_seterr(err, CRDT_EIO, "cannot open %s/%s: %s", r->dir, name, strerror(errno));
            rc = CRDT_EIO;
            break;
        }
        uint64_t size = 0;
        if ((rc = replay_segment(r, fd, name, bases[i], &size, err)) < 0) {
            close(fd);
            break;
        }
        if (i + 1 < n) {
            close(fd);
            if ((rc = push_old(r, bases[i], size)) < 0) {
                rep_seterr(err, rc, "out of memory");
                break;
            }
        } else {
            r->log.fd = fd;
            r->log.seg_base = bases[i];
            r->log.seg_bytes = size;
        }
    }
    free(bases);
    if (rc < 0)
        return rc;
    if (r->log.fd < 0 && create_segment(r, r->last_seq) < 0) {
        rep_seterr(err, CRDT_EIO, "%s", r->failure);
        return CRDT_EIO;
    }
    if (first > 0 && fsync(r->dirfd) < 0) {
        rep_seterr(err, CRDT_EIO, "cannot fsync %s: %s", r->dir, strerror(errno));
        return CRDT_EIO;
    }
    return 0;
}

void rep_log_close(crdt_replica_t *r)
{
    if (r->log.fd >= 0)
        close(r->log.fd);
    r->log.fd = -1;
}

/* ---- group commit --------------------------------------------------------------------------- */

int rep_log_write(crdt_replica_t *r)
{
    if (r->failed)
        return CRDT_EIO;
    const uint8_t *p = r->log.buf.data;
    size_t left = r->log.buf.len;
    while (left) {
        ssize_t n = write(r->log.fd, p, left);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0) {
            char name[40];
            seg_name(name, sizeof(name), r->log.seg_base);
            rep_fail(r, "cannot write log %s/%s: %s", r->dir, name, strerror(errno));
            return CRDT_EIO;
        }
        p += n;
        left -= (size_t)n;
        r->log.seg_bytes += (uint64_t)n;
    }
    r->log.buf.len = 0;
    r->log.written_seq = r->log.buf_seq;
    if (r->log.buf.cap > 4 * REP_BUF_FLUSH) /* after a huge record, give the memory back */
        crdt_buf_free(&r->log.buf);
    return 0;
}

int rep_log_sync(crdt_replica_t *r)
{
    if (r->failed)
        return CRDT_EIO;
    double t0 = rep_mono_s();
    if (fdatasync(r->log.fd) < 0) {
        /* After a failed fsync the kernel may have dropped the dirty pages: nothing written
         * since the last good fsync can be promised, so stop here (see "fsyncgate"). */
        char name[40];
        seg_name(name, sizeof(name), r->log.seg_base);
        rep_fail(r, "fsync of log %s/%s failed: %s", r->dir, name, strerror(errno));
        return CRDT_EIO;
    }
    double dt = rep_mono_s() - t0;
    r->st.fsyncs++;
    r->st.fsync_seconds_total += dt;
    if (dt > r->st.fsync_seconds_max)
        r->st.fsync_seconds_max = dt;
    r->log.synced_seq = r->log.written_seq;
    r->log.last_fsync_ms = rep_mono_ms();
    return 0;
}

/* ---- the background fsync (policy everysec) -------------------------------------------------- */

static void *syncer_main(void *arg)
{
    rep_syncer_t *y = arg;
    pthread_mutex_lock(&y->mu);
    while (!y->stop || y->fd >= 0) {
        if (y->fd < 0) {
            pthread_cond_wait(&y->cv, &y->mu);
            continue;
        }
        int fd = y->fd;
        pthread_mutex_unlock(&y->mu);
        double t0 = rep_mono_s();
        int rc = fdatasync(fd);
        int e = rc < 0 ? errno : 0;
        double dt = rep_mono_s() - t0;
        close(fd);
        pthread_mutex_lock(&y->mu);
        y->fd = -1;
        y->err = e;
        y->secs = dt;
        y->done = true;
    }
    pthread_mutex_unlock(&y->mu);
    return NULL;
}

int rep_syncer_start(crdt_replica_t *r)
{
    rep_syncer_t *y = &r->log.syncer;
    y->fd = -1;
    if (pthread_mutex_init(&y->mu, NULL) != 0)
        return CRDT_ENOMEM;
    if (pthread_cond_init(&y->cv, NULL) != 0) {
        pthread_mutex_destroy(&y->mu);
        return CRDT_ENOMEM;
    }
    if (pthread_create(&y->th, NULL, syncer_main, y) != 0) {
        pthread_cond_destroy(&y->cv);
        pthread_mutex_destroy(&y->mu);
        return CRDT_ENOMEM;
    }
    y->running = true;
    return 0;
}

/* Takes the result of a finished background fsync, if any. */
static int syncer_reap(crdt_replica_t *r)
{
    rep_syncer_t *y = &r->log.syncer;
    if (!y->busy)
        return 0;
    pthread_mutex_lock(&y->mu);
    bool done = y->done;
    int e = y->err;
    double dt = y->secs;
    if (done)
        y->done = false;
    pthread_mutex_unlock(&y->mu);
    if (!done)
        return 0;
    y->busy = false;
    if (e) {
        char name[40];
        seg_name(name, sizeof(name), r->log.seg_base);
        rep_fail(r, "fsync of log %s/%s failed: %s", r->dir, name, strerror(e));
        return CRDT_EIO;
    }
    r->st.fsyncs++;
    r->st.fsync_seconds_total += dt;
    if (dt > r->st.fsync_seconds_max)
        r->st.fsync_seconds_max = dt;
    if (y->seq > r->log.synced_seq)
        r->log.synced_seq = y->seq;
    return 0;
}

void rep_syncer_stop(crdt_replica_t *r)
{
    rep_syncer_t *y = &r->log.syncer;
    if (!y->running)
        return;
    pthread_mutex_lock(&y->mu);
    y->stop = true;
    pthread_cond_signal(&y->cv);
    pthread_mutex_unlock(&y->mu);
    pthread_join(y->th, NULL);
    y->running = false;
    syncer_reap(r);
    pthread_cond_destroy(&y->cv);
    pthread_mutex_destroy(&y->mu);
}

int rep_log_sync_everysec(crdt_replica_t *r)
{
    rep_syncer_t *y = &r->log.syncer;
    if (r->failed)
        return CRDT_EIO;
    if (syncer_reap(r) < 0)
        return CRDT_EIO;
    uint64_t now = rep_mono_ms();
    if (y->busy || r->log.synced_seq >= r->log.written_seq || now - r->log.last_fsync_ms < 1000)
        return 0;
    r->log.last_fsync_ms = now;
    /* The thread syncs a duplicate, so a segment rotation may close ours meanwhile. */
    int fd = y->running ? fcntl(r->log.fd, F_DUPFD_CLOEXEC, 0) : -1;
    if (fd < 0)
        return rep_log_sync(r);
    pthread_mutex_lock(&y->mu);
    y->fd = fd;
    pthread_cond_signal(&y->cv);
    pthread_mutex_unlock(&y->mu);
    y->busy = true;
    y->seq = r->log.written_seq;
    return 0;
}

int rep_log_rotate(crdt_replica_t *r)
{
    if (rep_log_write(r) < 0)
        return CRDT_EIO;
    if (r->last_seq == r->log.seg_base)
        return 0; /* the current segment holds no record: it can serve as the new one */
    if (sync_wanted(r) && r->log.synced_seq < r->log.written_seq && rep_log_sync(r) < 0)
        return CRDT_EIO;
    if (push_old(r, r->log.seg_base, r->log.seg_bytes) < 0)
        return CRDT_ENOMEM;
    int old = r->log.fd;
    if (create_segment(r, r->last_seq) < 0) {
        /* keep appending to the old segment is impossible: the replica failed */
        r->log.n_old--;
        r->log.old_bytes -= r->log.old[r->log.n_old].bytes;
        r->log.fd = old;
        return CRDT_EIO;
    }
    close(old);
    return 0;
}

void rep_log_drop_covered(crdt_replica_t *r, uint64_t upto)
{
    size_t k = 0;
    bool dropped = false;
    for (size_t i = 0; i < r->log.n_old; i++) {
        uint64_t next = i + 1 < r->log.n_old ? r->log.old[i + 1].base : r->log.seg_base;
        if (next <= upto) {
            char name[40];
            seg_name(name, sizeof(name), r->log.old[i].base);
            if (unlinkat(r->dirfd, name, 0) < 0 && errno != ENOENT)
                fprintf(stderr, "crdtd replica: cannot delete %s/%s: %s\n", r->dir, name,
                        strerror(errno));
            r->log.old_bytes -= r->log.old[i].bytes;
            dropped = true;
        } else {
            r->log.old[k++] = r->log.old[i];
        }
    }
    r->log.n_old = k;
    if (dropped && fsync(r->dirfd) < 0)
        fprintf(stderr, "crdtd replica: cannot fsync %s: %s\n", r->dir, strerror(errno));
}
