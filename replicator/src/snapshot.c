/* snapshot.c - copy-on-write snapshots written by a forked child, and loading them at startup */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include "replica_private.h"

#define SNAP_NAME "snapshot"
#define SNAP_TMP "snapshot.tmp"
#define SNAP_RETRY_MS 10000

/* ---- loading -------------------------------------------------------------------------------- */

int rep_snapshot_load(crdt_replica_t *r, crdt_error_t *err)
{
    /* A leftover temporary file is a snapshot that never completed. */
    unlinkat(r->dirfd, SNAP_TMP, 0);
    int fd = openat(r->dirfd, SNAP_NAME, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        if (errno == ENOENT)
            return 0;
        rep_seterr(err, CRDT_EIO, "cannot open %s/" SNAP_NAME ": %s", r->dir, strerror(errno));
        return CRDT_EIO;
    }
    /* A snapshot is complete by construction (fsynced before its rename), and the log it covers
     * is gone: damage here is not a torn tail to drop but data loss to report. */
    uint8_t h[REP_SNAP_HEADER];
    ssize_t got = pread(fd, h, sizeof(h), 0);
    if (got != (ssize_t)sizeof(h) || memcmp(h, REP_SNAP_MAGIC, 8) != 0 ||
        crdt_crc32c(0, h, 24) != rep_get32(h + 24)) {
        rep_seterr(err, CRDT_EDECODE,
                   "%s/" SNAP_NAME " has a damaged header; restore it from a "
                   "backup, or move it away to start from the log alone",
                   r->dir);
        close(fd);
        return CRDT_EDECODE;
    }
    uint64_t seq = rep_get64(h + 8), nkeys = rep_get64(h + 16);
    rep_reader_t rd;
    int rc = rep_reader_init(&rd, fd, REP_SNAP_HEADER);
    if (rc < 0) {
        rep_seterr(err, rc, "cannot read %s/" SNAP_NAME, r->dir);
        close(fd);
        return rc;
    }
    const uint8_t *body;
    size_t blen;
    char why[120];
    for (uint64_t i = 0; i <= nkeys; i++) {
        uint64_t at = rd.off;
        rc = rep_reader_next(&rd, &body, &blen, why, sizeof(why));
        if (i == nkeys && rc == REP_REC_EOF)
            break;
        if (i == nkeys && rc == REP_REC_OK)
            snprintf(why, sizeof(why), "more records than the %" PRIu64 " keys announced", nkeys);
        if (rc != REP_REC_OK || i == nkeys) {
            if (rc == REP_REC_EOF)
                snprintf(why, sizeof(why), "ends after %" PRIu64 " of %" PRIu64 " keys", i, nkeys);
            rep_seterr(err, rc == REP_REC_IOERR ? CRDT_EIO : CRDT_EDECODE,
                       "%s/" SNAP_NAME " is damaged at offset %" PRIu64 ": %s", r->dir, at, why);
            rc = rc == REP_REC_IOERR ? CRDT_EIO : CRDT_EDECODE;
            goto out;
        }
        crdt_error_t rerr = {0};
        if ((rc = rep_replay(r, body, blen, true, &rerr)) < 0) {
            rep_seterr(err, rc, "%s/" SNAP_NAME " offset %" PRIu64 ": %s", r->dir, at,
                       rc == CRDT_ENOMEM ? "out of memory" : rerr.text);
            goto out;
        }
    }
    rc = 0;
    r->snap.done_seq = seq;
    if (seq > r->last_seq)
        r->last_seq = seq;
    r->rec.snapshot_keys = nkeys;
out:
    rep_reader_free(&rd);
    close(fd);
    return rc;
}

/* ---- writing (in the child) ----------------------------------------------------------------- */

/* Writes every key at `seq` into snapshot.tmp, fsyncs it, renames it over the snapshot. */
static int write_snapshot(crdt_replica_t *r, uint64_t seq)
{
    int fd = openat(r->dirfd, SNAP_TMP, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0) {
        fprintf(stderr, "crdtd snapshot: cannot create %s/" SNAP_TMP ": %s\n", r->dir,
                strerror(errno));
        return -1;
    }
    crdt_buf_t b = {0};
    uint8_t h[REP_SNAP_HEADER] = {0};
    memcpy(h, REP_SNAP_MAGIC, 8);
    rep_put64(h + 8, seq);
    rep_put64(h + 16, r->nkeys);
    rep_put32(h + 24, crdt_crc32c(0, h, 24));
    int rc = crdt_buf_append(&b, h, sizeof(h));
    for (uint32_t id = 0; rc == 0 && id < r->nkeys; id++) {
        const rep_key_t *k = &r->keys[id];
        rc = rep_record_append(&b, k->seq, k->key, k->klen, k->obj);
        if (rc == 0 && b.len >= REP_BUF_FLUSH) {
            rc = rep_write_all(fd, b.data, b.len);
            b.len = 0;
        }
    }
    if (rc == 0)
        rc = rep_write_all(fd, b.data, b.len);
    crdt_buf_free(&b);
    if (rc == 0 && fsync(fd) < 0)
        rc = -1;
    if (close(fd) < 0)
        rc = -1;
    if (rc == 0 && renameat(r->dirfd, SNAP_TMP, r->dirfd, SNAP_NAME) < 0)
        rc = -1;
    if (rc == 0 && fsync(r->dirfd) < 0)
        rc = -1;
    if (rc < 0) {
        fprintf(stderr, "crdtd snapshot: writing %s/" SNAP_NAME " failed: %s\n", r->dir,
                errno ? strerror(errno) : "out of memory");
        unlinkat(r->dirfd, SNAP_TMP, 0);
    }
    return rc;
}

int rep_snapshot_start(crdt_replica_t *r)
{
    if (r->snap.pid)
        return 0; /* one at a time; the running one will be reaped by tick */
    if (r->failed)
        return CRDT_EIO;
    if (r->last_seq == r->snap.done_seq)
        return 0; /* nothing changed since the snapshot on disk */
    /* The child must see whole objects, and a fork copies no threads: finish the load first. */
    rep_load_all(r);
    if (r->failed)
        return CRDT_EIO;
    /* From here on the new segment takes the writes after seq S = last_seq; the child writes
     * the state at S; once its snapshot is in place the segments before S are deleted. */
    int rc = rep_log_rotate(r);
    if (rc < 0)
        return rc;
    uint64_t seq = r->last_seq;
    pid_t parent = getpid();
    fflush(stderr);
    pid_t pid = fork();
    if (pid < 0) {
        fprintf(stderr, "crdtd replica: cannot fork for a snapshot: %s; will retry\n",
                strerror(errno));
        r->snap.retry_after_ms = rep_mono_ms() + SNAP_RETRY_MS;
        return CRDT_EIO;
    }
    if (pid == 0) {
        /* The child keeps the directory lock (inherited) while it writes, and dies with the
         * parent, so a restarted crdtd never races a stale child renaming an old snapshot. */
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        if (getppid() != parent)
            _exit(2);
        _exit(write_snapshot(r, seq) == 0 ? 0 : 1);
    }
    r->snap.pid = pid;
    r->snap.seq = seq;
    return 0;
}

/* True if the snapshot on disk is the one at `seq` (when someone else reaped our child). */
static bool snapshot_on_disk_is(crdt_replica_t *r, uint64_t seq)
{
    int fd = openat(r->dirfd, SNAP_NAME, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return false;
    uint8_t h[REP_SNAP_HEADER];
    bool ok = pread(fd, h, sizeof(h), 0) == (ssize_t)sizeof(h) &&
              memcmp(h, REP_SNAP_MAGIC, 8) == 0 && crdt_crc32c(0, h, 24) == rep_get32(h + 24) &&
              rep_get64(h + 8) == seq;
    close(fd);
    return ok;
}

void rep_snapshot_poll(crdt_replica_t *r, bool wait)
{
    if (!r->snap.pid)
        return;
    int status = 0;
    pid_t p;
    do
        p = waitpid(r->snap.pid, &status, wait ? 0 : WNOHANG);
    while (p < 0 && errno == EINTR);
    if (p == 0)
        return;
    bool ok;
    if (p < 0) /* ECHILD: the embedding program reaped it (a SIGCHLD handler) */
        ok = snapshot_on_disk_is(r, r->snap.seq);
    else
        ok = WIFEXITED(status) && WEXITSTATUS(status) == 0;
    r->snap.pid = 0;
    if (ok) {
        r->snap.done_seq = r->snap.seq;
        r->st.snapshots++;
        rep_log_drop_covered(r, r->snap.seq);
    } else {
        fprintf(stderr,
                "crdtd replica: snapshot at seq %" PRIu64 " failed (%s %d); the log is "
                "kept and a snapshot retried later\n",
                r->snap.seq, p > 0 && WIFSIGNALED(status) ? "signal" : "exit status",
                p > 0 && WIFSIGNALED(status) ? WTERMSIG(status) : WEXITSTATUS(status));
        unlinkat(r->dirfd, SNAP_TMP, 0);
        r->snap.retry_after_ms = rep_mono_ms() + SNAP_RETRY_MS;
    }
}
