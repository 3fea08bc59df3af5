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

int rep_record_append(crdt_buf_t *b, uint64_t seq, const void *key, size_t klen,
                      const crdt_obj_t *o)
{
    size_t start = b->len;
    if (crdt_buf_reserve(b, REP_REC_HEADER + 20 + klen) < 0)
        return CRDT_ENOMEM;
    uint8_t *p = b->data + start + REP_REC_HEADER;
    p += crdt_varint_put(p, seq);
    p += crdt_varint_put(p, klen);
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

/* ---- the chunked reader --------------------------------------------------------------------- */

#define READER_CHUNK (1u << 20)

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

/* The slow half of rep_reader_fill (replica_private.h): reads until `need` bytes are buffered or
 * the file ends. 0, CRDT_ENOMEM or CRDT_EIO. */
int rep_reader_fill_more(rep_reader_t *rd, size_t need)
{
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
    return rep_reader_take(rd, true, body, len, why, whylen);
}

/* ---- segments ------------------------------------------------------------------------------- */

void rep_seg_name(char *out, size_t n, uint64_t base)
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

int rep_write_all(int fd, const void *buf, size_t n)
{
    const uint8_t *p = buf;
    while (n) {
        ssize_t w = write(fd, p, n);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0) {
            if (w == 0)
                errno = EIO;
            return -1;
        }
        p += w;
        n -= (size_t)w;
    }
    return 0;
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
    rep_seg_name(name, sizeof(name), base);
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
    rep_idx_create(r, base);
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

/* Scans one segment (load.c: checks, indexes and lists every record under its key; the joins
 * happen after open), truncates a torn or corrupt tail away and maps what is valid for the
 * joins. 0 or a negative code. */
static int replay_segment(crdt_replica_t *r, rep_scan_t *scan, int fd, const char *name,
                          uint64_t base, uint64_t *size, crdt_error_t *err)
{
    /* (the scan finds the index's blocks, if any) */
    r->log.idx.file_end = 0;
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
        rep_idx_resume(r, base, REP_SEG_HEADER); /* a fresh index */
        *size = REP_SEG_HEADER;
        return 0;
    }
    if (pread(fd, h, sizeof(h), 0) != (ssize_t)sizeof(h)) {
        rep_seterr(err, CRDT_EIO, "cannot read %s/%s: %s", r->dir, name, strerror(errno));
        return CRDT_EIO;
    }
    if (memcmp(h, REP_SEG_MAGIC, 8) != 0 || rep_get64(h + 8) != base) {
        /* Not a torn tail: refusing keeps whatever it is for a human to look at. */
        rep_seterr(err, CRDT_EDECODE,
                   "%s/%s does not start with a log segment header for base "
                   "%" PRIu64 "; move it away to start without it",
                   r->dir, name, base);
        return CRDT_EDECODE;
    }
    char why[120];
    uint64_t valid = fsize;
    int rc = rep_scan_segment(r, scan, fd, base, &valid, why, sizeof(why), err);
    if (rc < 0)
        return rc;
    if (rc > 0) {
        note_drop(r, fsize - valid, name, valid, why);
        if (ftruncate(fd, (off_t)valid) < 0 || fdatasync(fd) < 0) {
            rep_seterr(err, CRDT_EIO, "cannot truncate %s/%s: %s", r->dir, name, strerror(errno));
            return CRDT_EIO;
        }
        fsize = valid;
    }
    *size = fsize;
    return rep_scan_map(r, fd, fsize, err);
}

int rep_log_open(crdt_replica_t *r, crdt_error_t *err)
{
    uint64_t *bases;
    size_t n;
    int rc = list_segments(r, &bases, &n, err);
    if (rc < 0)
        return rc;
    char name[40];
    rep_scan_t *scan = NULL;
    if ((rc = rep_scan_begin(r, &scan)) < 0) {
        free(bases);
        rep_seterr(err, rc, "out of memory");
        return rc;
    }
    /* Segments whose successor starts at or before the snapshot's seq are wholly covered by it
     * (a crash came between the snapshot's rename and their deletion). */
    size_t first = 0;
    while (first + 1 < n && bases[first + 1] <= r->snap.done_seq) {
        rep_seg_name(name, sizeof(name), bases[first]);
        unlinkat(r->dirfd, name, 0);
        rep_idx_unlink(r, bases[first]);
        first++;
    }
    for (size_t i = first; i < n; i++) {
        rep_seg_name(name, sizeof(name), bases[i]);
        int fd = openat(r->dirfd, name, O_RDWR | O_APPEND | O_CLOEXEC);
        if (fd < 0) {
            rep_seterr(err, CRDT_EIO, "cannot open %s/%s: %s", r->dir, name, strerror(errno));
            rc = CRDT_EIO;
            break;
        }
        uint64_t size = 0;
        if ((rc = replay_segment(r, scan, fd, name, bases[i], &size, err)) < 0) {
            close(fd);
            break;
        }
        if (i + 1 < n) {
            rep_idx_close(r); /* (the last segment's index goes on with the writes) */
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
    rep_scan_end(r, scan);
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
    rep_idx_close(r);
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
            rep_seg_name(name, sizeof(name), r->log.seg_base);
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
        rep_seg_name(name, sizeof(name), r->log.seg_base);
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
        int fd = y->fd, ifd = y->idx_fd;
        const uint8_t *blk = y->blk;
        size_t left = y->blk_len;
        pthread_mutex_unlock(&y->mu);
        double t0 = rep_mono_s();
        int rc = fdatasync(fd);
        int e = rc < 0 ? errno : 0;
        double dt = rep_mono_s() - t0;
        close(fd);
        /* the index's block only once its records are durable */
        int ie = ifd >= 0 && !e && rep_write_all(ifd, blk, left) < 0 ? errno : 0;
        if (ifd >= 0)
            close(ifd);
        pthread_mutex_lock(&y->mu);
        y->fd = -1;
        y->idx_fd = -1;
        y->idx_err = ie;
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
    y->fd = y->idx_fd = -1;
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

int rep_syncer_reap(crdt_replica_t *r)
{
    rep_syncer_t *y = &r->log.syncer;
    if (!y->busy)
        return 0;
    pthread_mutex_lock(&y->mu);
    bool done = y->done;
    int e = y->err, ie = y->idx_err;
    double dt = y->secs;
    uint8_t *blk = y->blk;
    uint64_t blk_base = y->blk_base;
    if (done) {
        y->done = false;
        y->blk = NULL;
    }
    pthread_mutex_unlock(&y->mu);
    if (!done)
        return 0;
    y->busy = false;
    if (blk) {
        free(blk);
        if (ie && blk_base == r->log.idx.base)
            rep_idx_disable(r, strerror(ie));
    }
    if (e) {
        char name[40];
        rep_seg_name(name, sizeof(name), r->log.seg_base);
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
    rep_syncer_reap(r);
    pthread_cond_destroy(&y->cv);
    pthread_mutex_destroy(&y->mu);
}

int rep_log_sync_everysec(crdt_replica_t *r)
{
    rep_syncer_t *y = &r->log.syncer;
    if (r->failed)
        return CRDT_EIO;
    if (rep_syncer_reap(r) < 0)
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
            rep_seg_name(name, sizeof(name), r->log.old[i].base);
            if (unlinkat(r->dirfd, name, 0) < 0 && errno != ENOENT)
                fprintf(stderr, "crdtd replica: cannot delete %s/%s: %s\n", r->dir, name,
                        strerror(errno));
            rep_idx_unlink(r, r->log.old[i].base);
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
