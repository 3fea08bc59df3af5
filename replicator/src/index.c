/* index.c - the log's index: where each key's records are in a segment, written as the log grows
 *
 * Beside every segment log-<base> the replica keeps log-<base>.idx: a header, then blocks, each
 * covering the next stretch of the segment (from where the previous block ended) and listing, per
 * key, the offsets of the key's records in it. A restart reads the blocks instead of scanning the
 * records they cover (load.c), and scans only what follows the last one.
 *
 * A block is written only once the records it covers are durable (after an fdatasync of the
 * segment), so an index never vouches for records a power failure could still take away; it is
 * checksummed, and checked against the segment when read (its range ends where the segment has
 * the record it names last). The index is never fsynced and never needed: a block that is missing,
 * torn or wrong is not used, and the records from there on are scanned as before. Writing it costs
 * 8 bytes of memory per record until its block is written, and, every REP_IDX_BLOCK_BYTES of log,
 * a pass over those records on the replica's thread (a few milliseconds) and a write of the block
 * (about 4 bytes per record) after the fsync, on the syncer thread. */
#define _GNU_SOURCE /* mremap */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <unistd.h>

#include "replica_private.h"

static void idx_name(char *out, size_t n, uint64_t base)
{
    rep_seg_name(out, n, base);
    size_t len = strlen(out);
    snprintf(out + len, n - len, ".idx");
}

/* The notes of a restart's scan can be millions (a segment that had no index): their array is
 * grown in place in huge pages (mremap), not copied into fresh 4 KiB pages at every doubling,
 * which cost as much as the scan itself. */
#define PEND_CHUNK (2u << 20)
#define PEND_KEEP                                                                                  \
    (16u << 20) /* an array larger than this is given back once its block is built                 \
                 */

static int pend_grow(rep_idx_t *x)
{
    size_t bytes = x->cap_pend * sizeof(*x->pend);
    size_t nbytes = bytes ? bytes * 2 : PEND_CHUNK;
    void *p = bytes
                  ? mremap(x->pend, bytes, nbytes, MREMAP_MAYMOVE)
                  : mmap(NULL, nbytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED)
        return CRDT_ENOMEM;
#ifdef MADV_HUGEPAGE
    madvise(p, nbytes, MADV_HUGEPAGE);
#endif
    x->pend = p;
    x->cap_pend = nbytes / sizeof(*x->pend);
    return 0;
}

static void pend_free(rep_idx_t *x)
{
    if (x->pend)
        munmap(x->pend, x->cap_pend * sizeof(*x->pend));
    x->pend = NULL;
    x->npend = x->cap_pend = 0;
}

static void idx_free_notes(rep_idx_t *x)
{
    pend_free(x);
    free(x->cnt);
    free(x->touched);
    x->cnt = NULL;
    x->touched = NULL;
    x->ntouched = x->cap_touched = 0;
    x->cap_cnt = 0;
}

void rep_idx_disable(crdt_replica_t *r, const char *why)
{
    rep_idx_t *x = &r->log.idx;
    if (why && !x->off && !x->warned) {
        char name[48];
        idx_name(name, sizeof(name), x->base);
        fprintf(stderr,
                "crdtd replica: not indexing %s/%s further: %s (a restart scans the records "
                "it does not cover)\n",
                r->dir, name, why);
        x->warned = true;
    }
    x->off = true;
    idx_free_notes(x);
}

/* Forgets the records noted; the next block starts at `covered`. */
static void idx_reset(crdt_replica_t *r, uint64_t covered)
{
    rep_idx_t *x = &r->log.idx;
    for (size_t i = 0; i < x->ntouched; i++)
        x->cnt[x->touched[i]] = 0;
    x->npend = x->ntouched = 0;
    x->covered = covered;
    x->off = false;
}

void rep_idx_close(crdt_replica_t *r)
{
    rep_idx_t *x = &r->log.idx;
    if (x->fd >= 0)
        close(x->fd);
    x->fd = -1;
    idx_free_notes(x);
}

void rep_idx_unlink(crdt_replica_t *r, uint64_t base)
{
    char name[48];
    idx_name(name, sizeof(name), base);
    unlinkat(r->dirfd, name, 0);
}

static void idx_open_file(crdt_replica_t *r, uint64_t base, bool keep, uint64_t keep_bytes)
{
    rep_idx_t *x = &r->log.idx;
    char name[48];
    idx_name(name, sizeof(name), base);
    if (x->fd >= 0)
        close(x->fd);
    x->fd = -1;
    x->warned = false;
    int fd = openat(r->dirfd, name, O_RDWR | O_CREAT | O_APPEND | O_CLOEXEC | (keep ? 0 : O_TRUNC),
                    0644);
    if (fd < 0) {
        rep_idx_disable(r, strerror(errno));
        return;
    }
    uint8_t h[REP_IDX_HEADER];
    memcpy(h, REP_IDX_MAGIC, 8);
    rep_put64(h + 8, base);
    /* a kept index loses what follows its accepted blocks (a torn or stale block) */
    if (keep ? ftruncate(fd, (off_t)keep_bytes) < 0 : rep_write_all(fd, h, sizeof(h)) < 0) {
        close(fd);
        rep_idx_disable(r, strerror(errno));
        return;
    }
    x->fd = fd;
}

void rep_idx_create(crdt_replica_t *r, uint64_t base)
{
    idx_reset(r, REP_SEG_HEADER);
    r->log.idx.base = base;
    r->log.idx.synced = true; /* (written by this process: flush and tick fsync it) */
    idx_open_file(r, base, false, 0);
}

void rep_idx_resume(crdt_replica_t *r, uint64_t base, uint64_t covered)
{
    rep_idx_t *x = &r->log.idx;
    idx_reset(r, covered);
    x->base = base;
    x->synced = false;
    if (x->file_end >= REP_IDX_HEADER)
        idx_open_file(r, base, true, x->file_end);
    else
        idx_open_file(r, base, false, 0);
}

static int idx_grow(void **v, size_t *cap, size_t need, size_t size)
{
    if (need <= *cap)
        return 0;
    size_t ncap = *cap ? *cap : 1024;
    while (ncap < need)
        ncap *= 2;
    void *n = realloc(*v, ncap * size);
    if (!n)
        return CRDT_ENOMEM;
    *v = n;
    *cap = ncap;
    return 0;
}

void rep_idx_note(crdt_replica_t *r, uint32_t id, uint64_t off)
{
    rep_idx_t *x = &r->log.idx;
    if (x->off)
        return;
    if (off < x->covered || off - x->covered > UINT32_MAX) {
        rep_idx_disable(r, "a block would cover more than 4 GiB of log");
        return;
    }
    if (id >= x->cap_cnt) {
        size_t cap = x->cap_cnt;
        if (idx_grow((void **)&x->cnt, &cap, (size_t)id + 1, sizeof(*x->cnt)) < 0 ||
            cap > UINT32_MAX) {
            rep_idx_disable(r, "out of memory");
            return;
        }
        memset(x->cnt + x->cap_cnt, 0, (cap - x->cap_cnt) * sizeof(*x->cnt));
        x->cap_cnt = (uint32_t)cap;
    }
    if ((x->npend == x->cap_pend && pend_grow(x) < 0) ||
        (x->cnt[id] == 0 && idx_grow((void **)&x->touched, &x->cap_touched, x->ntouched + 1,
                                     sizeof(*x->touched)) < 0)) {
        rep_idx_disable(r, "out of memory");
        return;
    }
    if (x->cnt[id]++ == 0)
        x->touched[x->ntouched++] = id;
    x->pend[x->npend++] = (rep_idx_ent_t){id, (uint32_t)(off - x->covered)};
}

/* The block for every record noted, which end at `to` of segment fd (all written out, and
 * fsynced: the caller's part), or NULL (out of memory, or the last record is not where the notes
 * say). A group's seq: seq_of(ctx, id), the key's latest as of `to`. Resets the notes. */
static uint8_t *idx_build(crdt_replica_t *r, int fd, uint64_t to, uint64_t max_seq,
                          rep_idx_seq_fn seq_of, const void *ctx, size_t *out_len)
{
    rep_idx_t *x = &r->log.idx;
    const uint64_t from = x->covered;
    const uint64_t last_at = from + x->pend[x->npend - 1].rel;
    uint8_t lh[REP_REC_HEADER];
    if (pread(fd, lh, sizeof(lh), (off_t)last_at) != (ssize_t)sizeof(lh) ||
        last_at + REP_REC_HEADER + rep_get32(lh) != to || to - from > UINT32_MAX)
        return NULL;
    size_t len = REP_IDX_BLK_HEADER + REP_IDX_BODY;
    for (size_t i = 0; i < x->ntouched; i++) {
        const rep_key_t *k = &r->keys[x->touched[i]];
        len += REP_IDX_GROUP + ((k->klen + 3u) & ~3u) + 4 * (size_t)x->cnt[x->touched[i]];
    }
    len = (len + 7) & ~(size_t)7;
    if (len - REP_IDX_BLK_HEADER > UINT32_MAX)
        return NULL;
    uint8_t *b = calloc(1, len);
    if (!b)
        return NULL;
    uint8_t *p = b + REP_IDX_BLK_HEADER;
    rep_put64(p, from);
    rep_put64(p + 8, to);
    rep_put64(p + 16, last_at);
    rep_put32(p + 24, rep_get32(lh));
    rep_put32(p + 28, rep_get32(lh + 4));
    rep_put64(p + 32, max_seq);
    rep_put64(p + 40, x->npend);
    rep_put32(p + 48, (uint32_t)x->ntouched);
    size_t pos = REP_IDX_BLK_HEADER + REP_IDX_BODY;
    /* each key's header and key, and where its offsets go (cnt becomes the cursor) */
    for (size_t i = 0; i < x->ntouched; i++) {
        uint32_t id = x->touched[i];
        const rep_key_t *k = &r->keys[id];
        uint8_t *g = b + pos;
        rep_put64(g, seq_of(ctx, id));
        rep_put32(g + 8, x->cnt[id]);
        rep_put32(g + 12, k->klen);
        g[16] = k->type;
        if (k->klen)
            memcpy(g + REP_IDX_GROUP, k->key, k->klen);
        pos += REP_IDX_GROUP + ((k->klen + 3u) & ~3u);
        size_t n = x->cnt[id];
        x->cnt[id] = (uint32_t)(pos / 4);
        pos += 4 * n;
    }
    for (size_t i = 0; i < x->npend; i++) /* rel is from `covered`, which is `from` */
        rep_put32(b + 4 * (size_t)x->cnt[x->pend[i].id]++, x->pend[i].rel);
    for (size_t i = 0; i < x->ntouched; i++)
        x->cnt[x->touched[i]] = 0;
    rep_put32(b, (uint32_t)(len - REP_IDX_BLK_HEADER));
    rep_put32(b + 4, crdt_crc32c(0, b + REP_IDX_BLK_HEADER, len - REP_IDX_BLK_HEADER));
    x->npend = x->ntouched = 0;
    x->covered = to;
    if (x->cap_pend * sizeof(*x->pend) > PEND_KEEP)
        pend_free(x);
    *out_len = len;
    return b;
}

static uint64_t key_seq(const void *ctx, uint32_t id)
{
    return ((const crdt_replica_t *)ctx)->keys[id].seq;
}

void rep_idx_scan_flush(crdt_replica_t *r, int fd, uint64_t to, uint64_t max_seq,
                        rep_idx_seq_fn seq_of, const void *ctx)
{
    rep_idx_t *x = &r->log.idx;
    uint64_t every = r->cfg.index_block_bytes ? r->cfg.index_block_bytes : REP_IDX_BLOCK_BYTES;
    if (x->fd < 0 || x->off || !x->npend || to - x->covered < every)
        return;
    /* the records were written by an earlier process, which may not have fsynced them */
    if (!x->synced && fdatasync(fd) < 0) {
        rep_idx_disable(r, strerror(errno));
        return;
    }
    x->synced = true;
    size_t len = 0;
    uint8_t *blk = idx_build(r, fd, to, max_seq, seq_of, ctx, &len);
    if (!blk)
        rep_idx_disable(r, "out of memory, or the notes disagree with the segment");
    else if (rep_write_all(x->fd, blk, len) < 0)
        rep_idx_disable(r, strerror(errno));
    free(blk);
}

void rep_idx_flush(crdt_replica_t *r, bool final)
{
    rep_idx_t *x = &r->log.idx;
    rep_syncer_t *y = &r->log.syncer;
    if (x->fd < 0 || x->off || !x->npend || r->failed || r->log.buf.len)
        return;
    uint64_t every = r->cfg.index_block_bytes ? r->cfg.index_block_bytes : REP_IDX_BLOCK_BYTES;
    if (!final && r->log.seg_bytes - x->covered < every)
        return;
    bool async = y->running && !final && r->cfg.fsync != CRDT_FSYNC_ALWAYS;
    if (async && (rep_syncer_reap(r) < 0 || y->busy))
        return; /* the next flush or tick tries again */
    if (!async && r->log.synced_seq < r->log.written_seq) {
        if (!final && r->cfg.fsync == CRDT_FSYNC_ALWAYS)
            return; /* the next flush fsyncs */
        if (rep_log_sync(r) < 0)
            return;
    }
    size_t len = 0;
    uint8_t *blk = idx_build(r, r->log.fd, r->log.seg_bytes, r->last_seq, key_seq, r, &len);
    if (!blk) {
        rep_idx_disable(r, "out of memory, or the notes disagree with the segment");
        return;
    }
    if (!async) {
        if (rep_write_all(x->fd, blk, len) < 0)
            rep_idx_disable(r, strerror(errno));
        free(blk);
        return;
    }
    /* The syncer fsyncs the segment and then appends the block: a durable index never names a
     * record that is not. Both descriptors are duplicates (a rotation may close ours). */
    int fd = fcntl(r->log.fd, F_DUPFD_CLOEXEC, 0);
    int ifd = fd >= 0 ? fcntl(x->fd, F_DUPFD_CLOEXEC, 0) : -1;
    if (ifd < 0) {
        if (fd >= 0)
            close(fd);
        free(blk);
        rep_idx_disable(r, strerror(errno));
        return;
    }
    pthread_mutex_lock(&y->mu);
    y->fd = fd;
    y->idx_fd = ifd;
    y->blk = blk;
    y->blk_len = len;
    y->blk_base = x->base;
    pthread_cond_signal(&y->cv);
    pthread_mutex_unlock(&y->mu);
    y->busy = true;
    y->seq = r->log.written_seq;
    r->log.last_fsync_ms = rep_mono_ms();
}
