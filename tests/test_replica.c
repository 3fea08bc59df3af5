/* test_replica.c - the replica: keyspace, log recovery, snapshots, lock, feed, fingerprints */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdint.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "tap.h"

#include "replica.h"

/* ---- helpers -------------------------------------------------------------------------------- */

static char root[64];

static void rm_dir(const char *path)
{
    DIR *d = opendir(path);
    if (!d)
        return;
    struct dirent *de;
    while ((de = readdir(d))) {
        if (strcmp(de->d_name, ".") && strcmp(de->d_name, ".."))
            unlinkat(dirfd(d), de->d_name, 0);
    }
    closedir(d);
    rmdir(path);
}

/* A fresh, empty data directory path under root (not created: open creates it). */
static const char *fresh_dir(const char *name)
{
    static char path[8][128];
    static int next;
    char *p = path[next++ % 8];
    snprintf(p, 128, "%s/%s", root, name);
    rm_dir(p);
    return p;
}

typedef struct rng {
    uint64_t s;
} rng_t;

static uint64_t rnd(rng_t *r)
{
    uint64_t z = (r->s += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

static uint64_t below(rng_t *r, uint64_t n)
{
    return rnd(r) % n;
}

/* One write of any type, run through crdt_replica_mutate. */
typedef struct wop {
    crdt_type_t type;
    int remove;
    uint64_t replica;
    char member[16];
    size_t mlen;
    double score;
    int64_t n;
    crdt_hlc_ts_t ts;
} wop_t;

static int wop_cb(crdt_obj_t *o, void *ud, crdt_obj_t **delta)
{
    wop_t *w = ud;
    switch (w->type) {
    case CRDT_GCOUNTER: return crdt_gcounter_incr(o, w->replica, (uint64_t)w->n, delta);
    case CRDT_PNCOUNTER: return crdt_pncounter_add(o, w->replica, w->n, delta);
    case CRDT_LWWREG: return crdt_lwwreg_set(o, &w->ts, w->member, w->mlen, delta);
    case CRDT_LWWSET:
        return w->remove ? crdt_lwwset_remove(o, w->member, w->mlen, &w->ts, delta)
                         : crdt_lwwset_add(o, w->member, w->mlen, &w->ts, delta);
    case CRDT_ORSET:
        return w->remove ? crdt_orset_remove(o, w->member, w->mlen, delta)
                         : crdt_orset_add(o, w->replica, w->member, w->mlen, delta);
    case CRDT_TIMELINE:
        return w->remove ? crdt_timeline_remove(o, w->member, w->mlen, w->score, delta)
                         : crdt_timeline_add(o, w->member, w->mlen, w->score, delta);
    }
    return CRDT_EINVAL;
}

static wop_t random_op(rng_t *g, crdt_replica_t *r, crdt_type_t type)
{
    wop_t w = {0};
    w.type = type;
    w.remove = below(g, 4) == 0;
    w.replica = crdt_replica_node_id(r);
    w.mlen = (size_t)snprintf(w.member, sizeof(w.member), "m%u", (unsigned)below(g, 12));
    w.score = (double)below(g, 100);
    w.n = type == CRDT_PNCOUNTER ? (int64_t)below(g, 21) - 10 : (int64_t)below(g, 10) + 1;
    crdt_replica_hlc_now(r, &w.ts);
    return w;
}

/* Key i of a test keyspace and its type: "k<i>", types cycling. */
static size_t key_of(int i, char *buf)
{
    return (size_t)sprintf(buf, "k%d", i);
}
static crdt_type_t type_of(int i)
{
    return (crdt_type_t)(CRDT_TYPE_MIN + i % CRDT_TYPE_MAX);
}

/* n random writes over nkeys keys; returns how many changed something. */
static int random_writes(crdt_replica_t *r, rng_t *g, int n, int nkeys)
{
    int changed = 0;
    for (int i = 0; i < n; i++) {
        char key[16];
        int k = (int)below(g, (uint64_t)nkeys);
        size_t klen = key_of(k, key);
        wop_t w = random_op(g, r, type_of(k));
        uint64_t seq = 0;
        int rc = crdt_replica_mutate(r, key, klen, w.type, wop_cb, &w, &seq);
        if (rc < 0) {
            diag("write %d to %s failed: %s", i, key, crdt_strerror(rc));
            return -1;
        }
        changed += rc;
    }
    return changed;
}

/* Opens a replica as cfg says, or NULL after a diag of why not. */
static crdt_replica_t *open_cfg(const crdt_replica_config_t *cfg)
{
    crdt_error_t err;
    crdt_replica_t *r = crdt_replica_open(cfg, &err);
    if (!r)
        diag("open %s: %s", cfg->dir ? cfg->dir : "(memory)", err.text);
    return r;
}

/* As open_dir (node 1), with `threads` loader threads and a block of the log's index every
 * `block` bytes of log (0: the defaults). */
static crdt_replica_t *open_tuned(const char *dir, crdt_fsync_policy_t policy, uint32_t threads,
                                  uint64_t block)
{
    crdt_replica_config_t cfg;
    crdt_replica_config_init(&cfg);
    cfg.dir = dir;
    cfg.fsync = policy;
    cfg.timeline_max_size = 8;
    if (threads != UINT32_MAX)
        cfg.load_threads = threads;
    cfg.index_block_bytes = block;
    return open_cfg(&cfg);
}

static crdt_replica_t *open_indexed(const char *dir, crdt_fsync_policy_t policy, uint64_t block)
{
    return open_tuned(dir, policy, UINT32_MAX, block);
}

static crdt_replica_t *open_dir(const char *dir, crdt_fsync_policy_t policy, uint64_t node)
{
    crdt_replica_config_t cfg;
    crdt_replica_config_init(&cfg);
    cfg.dir = dir;
    cfg.fsync = policy;
    cfg.node_id = node;
    cfg.timeline_max_size = 8; /* small, so that trimming and floors are exercised */
    return open_cfg(&cfg);
}

/* Compares two keyspaces: same keys, identical encodings, same latest seq per key. */
typedef struct cmp_ctx {
    crdt_replica_t *other;
    int diffs;
    uint64_t *seqs; /* unused here */
} cmp_ctx_t;

static int cmp_key_cb(const void *key, size_t klen, const crdt_obj_t *o, void *ud)
{
    cmp_ctx_t *c = ud;
    const crdt_obj_t *p = crdt_replica_get(c->other, key, klen);
    crdt_buf_t a = {0}, b = {0};
    if (!p || crdt_obj_encode(o, &a) < 0 || crdt_obj_encode(p, &b) < 0 || a.len != b.len ||
        memcmp(a.data, b.data, a.len) != 0) {
        if (c->diffs++ < 3)
            diag("key %.*s differs", (int)klen, (const char *)key);
    }
    crdt_buf_free(&a);
    crdt_buf_free(&b);
    return 0;
}

typedef struct feed_list {
    size_t n;
    char keys[4096][16];
    uint64_t seqs[4096];
} feed_list_t;

static int feed_collect_cb(const void *key, size_t klen, uint64_t seq, const crdt_obj_t *s,
                           void *ud)
{
    (void)s;
    feed_list_t *f = ud;
    if (f->n < 4096 && klen < 16) {
        memcpy(f->keys[f->n], key, klen);
        f->keys[f->n][klen] = 0;
        f->seqs[f->n++] = seq;
    }
    return 0;
}

static void feed_all(crdt_replica_t *r, feed_list_t *f)
{
    f->n = 0;
    uint64_t next;
    crdt_replica_changes(r, 0, SIZE_MAX, feed_collect_cb, f, &next);
}

/* A memory replica holding a copy of r's keyspace (through apply of each state). */
static int copy_cb(const void *key, size_t klen, const crdt_obj_t *o, void *ud)
{
    uint64_t seq;
    return crdt_replica_apply(ud, key, klen, o, CRDT_ORIGIN_LOCAL, &seq) < 0;
}

static int count_files(const char *dir, const char *prefix)
{
    DIR *d = opendir(dir);
    int n = 0;
    struct dirent *de;
    while (d && (de = readdir(d)))
        n += strncmp(de->d_name, prefix, strlen(prefix)) == 0;
    if (d)
        closedir(d);
    return n;
}

/* A log segment's name: log-<20 digits> (log-<20 digits>.idx is its index). */
static bool is_segment(const char *name)
{
    return strncmp(name, "log-", 4) == 0 && strlen(name) == 24;
}

/* Log segments (index files, with `index`) in dir. */
static int count_log_files(const char *dir, bool index)
{
    DIR *d = opendir(dir);
    int n = 0;
    struct dirent *de;
    while (d && (de = readdir(d))) {
        size_t len = strlen(de->d_name);
        n += index ? strncmp(de->d_name, "log-", 4) == 0 && len == 28 &&
                         strcmp(de->d_name + 24, ".idx") == 0
                   : is_segment(de->d_name);
    }
    if (d)
        closedir(d);
    return n;
}

/* The path of the (single or last) log segment of dir. */
static void last_segment(const char *dir, char *out, size_t n)
{
    DIR *d = opendir(dir);
    struct dirent *de;
    char best[256] = "";
    while (d && (de = readdir(d)))
        if (is_segment(de->d_name) && strcmp(de->d_name, best) > 0)
            snprintf(best, sizeof(best), "%s", de->d_name);
    if (d)
        closedir(d);
    snprintf(out, n, "%s/%s", dir, best);
}

static uint64_t file_size(const char *path)
{
    struct stat sb;
    return stat(path, &sb) == 0 ? (uint64_t)sb.st_size : 0;
}

/* ---- tests ---------------------------------------------------------------------------------- */

typedef struct listen_log {
    int calls;
    uint64_t last_seq;
    crdt_obj_t *last_delta;
} listen_log_t;

static void listen_cb(const void *key, size_t klen, uint64_t seq, const crdt_obj_t *delta, uint64_t origin, void *ud)
{
    (void)origin;
    (void)key;
    (void)klen;
    listen_log_t *l = ud;
    l->calls++;
    l->last_seq = seq;
    crdt_obj_free(l->last_delta);
    l->last_delta = crdt_obj_clone(delta);
}

static void test_types_in_memory(void)
{
    crdt_replica_t *r = open_dir(NULL, CRDT_FSYNC_EVERYSEC, 1);
    ok(r != NULL, "memory-only replica opens");
    if (!r)
        return;
    listen_log_t lg = {0};
    crdt_replica_set_listener(r, listen_cb, &lg);
    rng_t g = {42};
    for (int t = CRDT_TYPE_MIN; t <= CRDT_TYPE_MAX; t++) {
        const char *name = crdt_type_name((crdt_type_t)t);
        char key[32];
        memcpy(key, "key\0", 4); /* binary-safe keys */
        size_t klen = 4 + (size_t)snprintf(key + 4, sizeof(key) - 4, "%s", name);
        wop_t w = random_op(&g, r, (crdt_type_t)t);
        w.remove = 0;
        uint64_t before = crdt_replica_last_seq(r), seq = 0;
        int rc = crdt_replica_mutate(r, key, klen, (crdt_type_t)t, wop_cb, &w, &seq);
        is_int(rc, 1, "%s: first write creates the key", name);
        is_int((long long)seq, (long long)before + 1, "%s: it gets the next seq", name);
        const crdt_obj_t *o = crdt_replica_get(r, key, klen);
        ok(o && crdt_obj_type(o) == (crdt_type_t)t, "%s: get returns the object", name);
        ok(lg.last_seq == seq && lg.last_delta && crdt_obj_type(lg.last_delta) == (crdt_type_t)t,
           "%s: the listener saw the delta", name);
        if (t == CRDT_TIMELINE)
            is_int(crdt_timeline_max_size(o), 8, "timeline created with the configured bound");

        /* the same delta again is a no-op: no seq, no listener call, counted */
        crdt_replica_stats_t st0, st1;
        crdt_replica_stats(r, &st0);
        int calls = lg.calls;
        crdt_obj_t *again = crdt_obj_clone(lg.last_delta);
        uint64_t s2 = 777;
        rc = crdt_replica_apply(r, key, klen, again, CRDT_ORIGIN_LOCAL, &s2);
        is_int(rc, 0, "%s: re-applying the delta is a no-op", name);
        crdt_replica_stats(r, &st1);
        ok(s2 == 777 && crdt_replica_last_seq(r) == seq && lg.calls == calls &&
               st1.noops == st0.noops + 1 && st1.writes == st0.writes,
           "%s: a no-op gets no seq and is counted as one", name);

        /* a delta applied to a new key creates it with the same state */
        char key2[32];
        size_t klen2 = (size_t)snprintf(key2, sizeof(key2), "copy-%s", name);
        rc = crdt_replica_apply(r, key2, klen2, again, CRDT_ORIGIN_LOCAL, &s2);
        is_int(rc, 1, "%s: apply creates a key", name);
        ok(crdt_obj_equal(crdt_replica_get(r, key2, klen2), o), "%s: with the delta's state", name);
        crdt_obj_free(again);

        /* another type on this key: refused, key untouched */
        crdt_buf_t enc0 = {0}, enc1 = {0};
        crdt_obj_encode(o, &enc0);
        crdt_type_t other = (crdt_type_t)(t == CRDT_TYPE_MAX ? CRDT_TYPE_MIN : t + 1);
        s2 = 777;
        wop_t w2 = random_op(&g, r, other);
        rc = crdt_replica_mutate(r, key, klen, other, wop_cb, &w2, &s2);
        is_int(rc, CRDT_ETYPE, "%s: mutate as %s is refused", name, crdt_type_name(other));
        crdt_obj_t *foreign = crdt_obj_new(other);
        crdt_obj_t *fd = NULL;
        w2.remove = 0;
        wop_cb(foreign, &w2, &fd);
        rc = crdt_replica_apply(r, key, klen, fd ? fd : foreign, CRDT_ORIGIN_LOCAL, &s2);
        is_int(rc, CRDT_ETYPE, "%s: apply of a %s delta is refused", name, crdt_type_name(other));
        crdt_obj_encode(crdt_replica_get(r, key, klen), &enc1);
        ok(enc0.len == enc1.len && memcmp(enc0.data, enc1.data, enc0.len) == 0 && s2 == 777,
           "%s: the key is untouched", name);
        crdt_buf_free(&enc0);
        crdt_buf_free(&enc1);
        crdt_obj_free(fd);
        crdt_obj_free(foreign);
    }
    /* an empty delta on an absent key changes nothing and creates nothing */
    crdt_obj_t *empty = crdt_obj_new(CRDT_ORSET);
    uint64_t s3 = 5;
    is_int(crdt_replica_apply(r, "nothing", 7, empty, CRDT_ORIGIN_LOCAL, &s3), 0, "an empty delta is a no-op");
    ok(crdt_replica_get(r, "nothing", 7) == NULL && s3 == 5, "and creates no key");
    crdt_obj_free(empty);
    is_int(crdt_replica_durable_seq(r), crdt_replica_last_seq(r),
           "memory only: every write is as durable as promised at once");
    crdt_replica_stats_t st;
    crdt_replica_stats(r, &st);
    is_int(st.keys, 2 * CRDT_TYPE_MAX, "two keys per type");
    is_int(st.keys_by_type[CRDT_TIMELINE], 2, "keys by type");
    is_int(crdt_replica_flush(r), 0, "flush without a log");
    crdt_obj_free(lg.last_delta);
    crdt_replica_close(r);
}

static void test_restart_replays(void)
{
    const char *dir = fresh_dir("restart");
    crdt_replica_t *r = open_dir(dir, CRDT_FSYNC_NO, 1);
    ok(r != NULL, "open a new data directory");
    if (!r)
        return;
    rng_t g = {7};
    /* enough records for recovery to replay a batch with two threads */
    int changed = random_writes(r, &g, 12000, 40);
    cmp_ok(changed, ">", 5000, "random writes over every type");
    /* binary-safe keys */
    crdt_replica_config_t unused;
    (void)unused;
    wop_t w = random_op(&g, r, CRDT_ORSET);
    uint64_t seq;
    is_int(crdt_replica_mutate(r, "\0bin\xff", 5, CRDT_ORSET, wop_cb, &w, &seq), 1,
           "a key with NUL and 0xff bytes");
    is_int(crdt_replica_flush(r), 0, "flush");
    crdt_replica_t *mem = open_dir(NULL, CRDT_FSYNC_NO, 1);
    crdt_replica_foreach(r, copy_cb, mem);
    uint64_t digest = crdt_replica_digest(r), last = crdt_replica_last_seq(r);
    static feed_list_t before;
    feed_all(r, &before);
    crdt_replica_close(r);

    r = open_dir(dir, CRDT_FSYNC_NO, 1);
    ok(r != NULL, "reopen");
    if (!r) {
        crdt_replica_close(mem);
        return;
    }
    const crdt_recovery_report_t *rep = crdt_replica_recovery(r);
    is_int(rep->log_records, changed + 1, "every change replayed from the log");
    is_int(rep->dropped_bytes, 0, "nothing dropped");
    is_int(rep->snapshot_keys, 0, "no snapshot");
    cmp_ok(rep->seconds, ">=", 0, "recovery time reported (%.4f s)", rep->seconds);
    is_int((long long)crdt_replica_digest(r), (long long)digest, "same digest");
    is_int(crdt_replica_last_seq(r), last, "same last seq");
    static feed_list_t after;
    feed_all(r, &after);
    ok(after.n == before.n && memcmp(after.seqs, before.seqs, after.n * 8) == 0 &&
           memcmp(after.keys, before.keys, after.n * 16) == 0,
       "the feed survives restart (%zu keys)", after.n);
    cmp_ctx_t c = {mem, 0, NULL};
    crdt_replica_foreach(r, cmp_key_cb, &c);
    is_int(c.diffs, 0, "every key encodes identically to the pre-restart state");
    ok(crdt_replica_get(r, "\0bin\xff", 5) != NULL, "binary key back");
    /* writes continue after the replay with the next seqs, and survive another restart */
    random_writes(r, &g, 200, 40);
    cmp_ok(crdt_replica_last_seq(r), ">", last, "seqs continue after restart");
    crdt_replica_close(mem);
    mem = open_dir(NULL, CRDT_FSYNC_NO, 1);
    crdt_replica_foreach(r, copy_cb, mem);
    digest = crdt_replica_digest(r);
    crdt_replica_close(r);
    r = open_dir(dir, CRDT_FSYNC_NO, 1);
    ok(r && crdt_replica_digest(r) == digest, "second restart, same digest");
    c = (cmp_ctx_t){mem, 0, NULL};
    if (r)
        crdt_replica_foreach(r, cmp_key_cb, &c);
    is_int(c.diffs, 0, "and the same encodings");
    crdt_replica_close(r);
    crdt_replica_close(mem);
}

static bool wait_snapshot(crdt_replica_t *r)
{
    crdt_replica_stats_t st;
    for (int i = 0; i < 2000; i++) {
        crdt_replica_tick(r, (uint64_t)i);
        crdt_replica_stats(r, &st);
        if (!st.snapshot_running)
            return true;
        usleep(5000);
    }
    return false;
}

static void test_snapshot(void)
{
    const char *dir = fresh_dir("snapshot");
    crdt_replica_t *r = open_dir(dir, CRDT_FSYNC_EVERYSEC, 1);
    if (!r) {
        fail("open");
        return;
    }
    rng_t g = {99};
    random_writes(r, &g, 2000, 50);
    crdt_replica_flush(r);
    is_int(crdt_replica_snapshot(r), 0, "start a snapshot");
    crdt_replica_stats_t st;
    crdt_replica_stats(r, &st);
    ok(st.snapshot_running, "it runs in the background");
    /* writes go on while the child writes */
    int during = random_writes(r, &g, 500, 60);
    cmp_ok(during, ">", 0, "writes while the snapshot runs");
    crdt_replica_flush(r);
    ok(wait_snapshot(r), "the snapshot finishes");
    crdt_replica_stats(r, &st);
    is_int(st.snapshots, 1, "one snapshot done");
    is_int(count_log_files(dir, false), 1, "the covered segment was deleted");
    is_int(count_log_files(dir, true), 1, "and its index");
    is_int(count_files(dir, "snapshot.tmp"), 0, "no temporary file left");
    random_writes(r, &g, 300, 60);
    crdt_replica_t *mem = open_dir(NULL, CRDT_FSYNC_NO, 1);
    crdt_replica_foreach(r, copy_cb, mem);
    uint64_t digest = crdt_replica_digest(r), last = crdt_replica_last_seq(r);
    static feed_list_t before;
    feed_all(r, &before);
    crdt_replica_close(r);

    r = open_dir(dir, CRDT_FSYNC_EVERYSEC, 1);
    if (!r) {
        fail("reopen after snapshot");
        crdt_replica_close(mem);
        return;
    }
    const crdt_recovery_report_t *rep = crdt_replica_recovery(r);
    cmp_ok(rep->snapshot_keys, ">=", 50, "keys loaded from the snapshot");
    cmp_ok(rep->log_records, ">", 0, "and the log after it replayed");
    cmp_ok(rep->log_records, "<=", 800, "but not the records the snapshot covers");
    is_int((long long)crdt_replica_digest(r), (long long)digest, "snapshot + log = same digest");
    is_int(crdt_replica_last_seq(r), last, "same last seq");
    static feed_list_t after;
    feed_all(r, &after);
    ok(after.n == before.n && memcmp(after.seqs, before.seqs, after.n * 8) == 0,
       "feed seqs survive the snapshot");
    cmp_ctx_t c = {mem, 0, NULL};
    crdt_replica_foreach(r, cmp_key_cb, &c);
    is_int(c.diffs, 0, "same encodings");

    /* a second snapshot with nothing new since the last write, then a restart from it alone */
    is_int(crdt_replica_snapshot(r), 0, "second snapshot");
    ok(wait_snapshot(r), "finishes");
    crdt_replica_close(r);
    r = open_dir(dir, CRDT_FSYNC_EVERYSEC, 1);
    ok(r && crdt_replica_recovery(r)->log_records == 0 && crdt_replica_digest(r) == digest,
       "restart from the snapshot alone");

    /* a snapshot that fails (its temporary file cannot be created) keeps the log */
    crdt_replica_close(r);
    r = open_dir(dir, CRDT_FSYNC_EVERYSEC, 1);
    char tmp[256];
    snprintf(tmp, sizeof(tmp), "%s/snapshot.tmp", dir);
    random_writes(r, &g, 200, 60);
    digest = crdt_replica_digest(r);
    ok(r && mkdir(tmp, 0755) == 0, "block snapshot.tmp with a directory");
    is_int(crdt_replica_snapshot(r), 0, "start a snapshot that will fail");
    ok(wait_snapshot(r), "it ends");
    crdt_replica_stats(r, &st);
    ok(st.snapshots == 0 && count_log_files(dir, false) == 2 && count_log_files(dir, true) == 2,
       "no snapshot counted, the log segments and indexes kept (%d)", count_log_files(dir, false));
    rmdir(tmp);
    crdt_replica_close(r);
    r = open_dir(dir, CRDT_FSYNC_EVERYSEC, 1);
    ok(r && crdt_replica_digest(r) == digest, "nothing lost: the old snapshot and the log");
    is_int(crdt_replica_snapshot(r), 0, "a later snapshot");
    ok(wait_snapshot(r), "finishes");
    crdt_replica_stats(r, &st);
    ok(st.snapshots == 1 && count_log_files(dir, false) == 1 && count_log_files(dir, true) == 1,
       "and drops both old segments and their indexes");

    /* automatic snapshots once the log passes snapshot_log_bytes */
    crdt_replica_close(r);
    crdt_replica_config_t cfg;
    crdt_replica_config_init(&cfg);
    cfg.dir = dir;
    cfg.timeline_max_size = 8;
    cfg.snapshot_log_bytes = 16384;
    crdt_error_t err;
    r = crdt_replica_open(&cfg, &err);
    if (!r) {
        fail("open with snapshot_log_bytes");
        crdt_replica_close(mem);
        return;
    }
    for (int i = 0; i < 20; i++) {
        random_writes(r, &g, 100, 60);
        crdt_replica_flush(r);
        crdt_replica_tick(r, 0);
    }
    wait_snapshot(r);
    crdt_replica_stats(r, &st);
    cmp_ok(st.snapshots, ">=", 1, "snapshots start by themselves (%llu)",
           (unsigned long long)st.snapshots);
    cmp_ok(st.log_bytes, "<", 16384 * 4, "and keep the log short");
    digest = crdt_replica_digest(r);
    crdt_replica_close(r);
    r = open_dir(dir, CRDT_FSYNC_EVERYSEC, 1);
    ok(r && crdt_replica_digest(r) == digest, "restart after automatic snapshots");
    crdt_replica_close(r);
    crdt_replica_close(mem);
}

/* Writes n records one by one with a flush after each; bounds[i] is the log size after record i
 * (bounds[0]: before any), digests[i] the digest after it. */
static int build_log(const char *dir, int n, uint64_t *bounds, uint64_t *digests)
{
    crdt_replica_t *r = open_dir(dir, CRDT_FSYNC_NO, 1);
    if (!r)
        return -1;
    rng_t g = {1234};
    crdt_replica_stats_t st;
    crdt_replica_stats(r, &st);
    bounds[0] = st.log_bytes;
    digests[0] = crdt_replica_digest(r);
    for (int i = 1; i <= n;) {
        char key[16];
        int k = (int)below(&g, 6);
        size_t klen = key_of(k, key);
        wop_t w = random_op(&g, r, type_of(k));
        uint64_t seq;
        int rc = crdt_replica_mutate(r, key, klen, w.type, wop_cb, &w, &seq);
        if (rc < 0)
            return -1;
        if (rc == 0)
            continue;
        crdt_replica_flush(r);
        crdt_replica_stats(r, &st);
        bounds[i] = st.log_bytes;
        digests[i] = crdt_replica_digest(r);
        i++;
    }
    crdt_replica_close(r);
    return 0;
}

static void test_torn_tail(void)
{
    enum { N = 40 };
    uint64_t bounds[N + 1], digests[N + 1];
    const char *dir = fresh_dir("torn");
    if (build_log(dir, N, bounds, digests) < 0) {
        fail("build the log");
        return;
    }
    char seg[256];
    last_segment(dir, seg, sizeof(seg));
    is_int(file_size(seg), bounds[N], "log size as reported by stats");
    /* Cut the file at many positions; every reopen must recover exactly the records that are
     * whole and report the rest as dropped. */
    static uint8_t orig[1 << 16];
    int fd = open(seg, O_RDONLY);
    ssize_t olen = fd >= 0 ? read(fd, orig, sizeof(orig)) : -1;
    if (fd >= 0)
        close(fd);
    ok(olen == (ssize_t)bounds[N], "read the log");
    int bad = 0, cuts = 0;
    uint64_t size = bounds[N];
    for (uint64_t cut = size - 1; cut >= bounds[0] && cut<size; cut -= cut> bounds[N - 4] ? 1 : 7) {
        fd = open(seg, O_WRONLY | O_TRUNC);
        if (fd < 0 || write(fd, orig, cut) != (ssize_t)cut) {
            bad++;
            break;
        }
        close(fd);
        int k = 0;
        while (k < N && bounds[k + 1] <= cut)
            k++;
        crdt_replica_t *r = open_dir(dir, CRDT_FSYNC_NO, 1);
        cuts++;
        if (!r) {
            bad++;
            break;
        }
        const crdt_recovery_report_t *rep = crdt_replica_recovery(r);
        bool good = rep->dropped_bytes == cut - bounds[k] &&
                    crdt_replica_last_seq(r) == (uint64_t)k &&
                    crdt_replica_digest(r) == digests[k] && file_size(seg) == bounds[k] &&
                    (rep->dropped_bytes == 0 || strstr(rep->dropped_reason, "torn") != NULL);
        if (!good && bad++ < 3)
            diag("cut at %llu: k=%d dropped %llu (%s) last seq %llu", (unsigned long long)cut, k,
                 (unsigned long long)rep->dropped_bytes, rep->dropped_reason,
                 (unsigned long long)crdt_replica_last_seq(r));
        crdt_replica_close(r);
        if (cut == bounds[0])
            break;
    }
    is_int(bad, 0, "%d cuts: each recovers the whole records before it and drops the rest", cuts);
    /* the repaired log takes writes again */
    crdt_replica_t *r = open_dir(dir, CRDT_FSYNC_NO, 1);
    ok(r && crdt_replica_recovery(r)->dropped_bytes == 0, "a repaired log reopens cleanly");
    rng_t g = {5};
    if (r)
        random_writes(r, &g, 10, 3);
    uint64_t d = r ? crdt_replica_digest(r) : 0;
    crdt_replica_close(r);
    r = open_dir(dir, CRDT_FSYNC_NO, 1);
    ok(r && crdt_replica_digest(r) == d && crdt_replica_recovery(r)->dropped_bytes == 0,
       "and keeps what it writes after the repair");
    crdt_replica_close(r);
}

/* Deletes the index of segment seg (so that a reopen scans it). */
static void drop_index(const char *seg)
{
    char p[300];
    snprintf(p, sizeof(p), "%s.idx", seg);
    unlink(p);
}

static void flip_byte(const char *path, uint64_t off)
{
    int fd = open(path, O_RDWR);
    uint8_t b = 0;
    if (fd >= 0 && pread(fd, &b, 1, (off_t)off) == 1) {
        b ^= 0x5A;
        if (pwrite(fd, &b, 1, (off_t)off) != 1)
            diag("pwrite failed");
    }
    if (fd >= 0)
        close(fd);
}

static void test_corruption(void)
{
    enum { N = 30 };
    uint64_t bounds[N + 1], digests[N + 1];
    const char *dir = fresh_dir("corrupt");
    char seg[256];
    int bad = 0, cases = 0;
    /* a flipped byte in record j (header, seq, key or object bytes) loses j and what follows */
    for (int j = 1; j <= N; j += 3) {
        for (int where = 0; where < 4; where++) {
            rm_dir(dir);
            if (build_log(dir, N, bounds, digests) < 0) {
                bad++;
                break;
            }
            last_segment(dir, seg, sizeof(seg));
            drop_index(seg); /* the scan's checks (test_index: the index's) */
            uint64_t start = bounds[j - 1], len = bounds[j] - start;
            uint64_t at = where == 0   ? start + 1        /* length */
                          : where == 1 ? start + 5        /* CRC */
                          : where == 2 ? start + 8        /* seq */
                                       : start + len - 2; /* the object's bytes */
            flip_byte(seg, at);
            crdt_replica_t *r = open_dir(dir, CRDT_FSYNC_NO, 1);
            cases++;
            if (!r) {
                bad++;
                continue;
            }
            const crdt_recovery_report_t *rep = crdt_replica_recovery(r);
            bool good = rep->dropped_bytes == bounds[N] - start &&
                        crdt_replica_last_seq(r) == (uint64_t)(j - 1) &&
                        crdt_replica_digest(r) == digests[j - 1] && rep->dropped_reason[0];
            if (!good && bad++ < 3)
                diag("flip in record %d at +%llu: dropped %llu (%s), last seq %llu", j,
                     (unsigned long long)(at - start), (unsigned long long)rep->dropped_bytes,
                     rep->dropped_reason, (unsigned long long)crdt_replica_last_seq(r));
            if (j == 1 && where == 1)
                ok(strstr(rep->dropped_reason, "checksum") != NULL, "reason names it: %s",
                   rep->dropped_reason);
            crdt_replica_close(r);
        }
    }
    is_int(bad, 0,
           "%d corruptions: everything before the bad record recovered, the rest "
           "reported dropped",
           cases);

    /* a length just under the limit, far past the end of the file: dropped, nothing allocated */
    rm_dir(dir);
    if (build_log(dir, N, bounds, digests) == 0) {
        last_segment(dir, seg, sizeof(seg));
        drop_index(seg);
        int fd = open(seg, O_RDWR);
        uint8_t len[4] = {0xF0, 0xFF, 0xFF, 0x3F};
        if (fd < 0 || pwrite(fd, len, 4, (off_t)bounds[N / 2]) != 4)
            diag("pwrite failed");
        if (fd >= 0)
            close(fd);
        crdt_replica_t *r = open_dir(dir, CRDT_FSYNC_NO, 1);
        ok(r && crdt_replica_recovery(r)->dropped_bytes == bounds[N] - bounds[N / 2] &&
               crdt_replica_digest(r) == digests[N / 2],
           "a huge bogus length: the records before it recovered (%s)",
           r ? crdt_replica_recovery(r)->dropped_reason : "");
        crdt_replica_close(r);
    }

    /* a segment that does not start with our header is refused, not truncated away */
    rm_dir(dir);
    if (build_log(dir, 5, bounds, digests) == 0) {
        last_segment(dir, seg, sizeof(seg));
        flip_byte(seg, 2);
        crdt_replica_config_t c2;
        crdt_replica_config_init(&c2);
        c2.dir = dir;
        crdt_error_t e2;
        crdt_replica_t *r2 = crdt_replica_open(&c2, &e2);
        ok(!r2 && strstr(e2.text, "header") && file_size(seg) == bounds[5],
           "a segment with a bad header is refused and left alone: %s", e2.text);
        crdt_replica_close(r2);
    }

    /* a damaged snapshot is refused, not silently dropped */
    rm_dir(dir);
    crdt_replica_t *r = open_dir(dir, CRDT_FSYNC_NO, 1);
    rng_t g = {3};
    random_writes(r, &g, 100, 10);
    crdt_replica_snapshot(r);
    wait_snapshot(r);
    crdt_replica_close(r);
    char snap[256];
    snprintf(snap, sizeof(snap), "%s/snapshot", dir);
    flip_byte(snap, file_size(snap) / 2);
    crdt_replica_config_t cfg;
    crdt_replica_config_init(&cfg);
    cfg.dir = dir;
    crdt_error_t err;
    r = crdt_replica_open(&cfg, &err);
    ok(r == NULL && strstr(err.text, "snapshot") != NULL, "a damaged snapshot is refused: %s",
       err.text);
    crdt_replica_close(r);
}

static void test_lock(void)
{
    const char *dir = fresh_dir("lock");
    crdt_replica_t *r = open_dir(dir, CRDT_FSYNC_NO, 1);
    if (!r) {
        fail("open");
        return;
    }
    crdt_replica_config_t cfg;
    crdt_replica_config_init(&cfg);
    cfg.dir = dir;
    crdt_error_t err;
    char want[64];
    snprintf(want, sizeof(want), "pid %ld", (long)getpid());
    crdt_replica_t *r2 = crdt_replica_open(&cfg, &err);
    ok(r2 == NULL && strstr(err.text, want) != NULL, "second open in this process refused: %s",
       err.text);
    crdt_replica_close(r2);

    /* from another process */
    int p[2];
    if (pipe(p) < 0) {
        fail("pipe");
        return;
    }
    pid_t pid = fork();
    if (pid == 0) {
        close(p[0]);
        crdt_error_t e;
        crdt_replica_t *c = crdt_replica_open(&cfg, &e);
        const char *msg = c ? "opened!" : e.text;
        if (write(p[1], msg, strlen(msg)) < 0)
            _exit(2);
        _exit(0);
    }
    close(p[1]);
    char buf[256] = {0};
    ssize_t got = read(p[0], buf, sizeof(buf) - 1);
    (void)got;
    close(p[0]);
    waitpid(pid, NULL, 0);
    ok(strstr(buf, want) != NULL, "a forked process is refused with our pid: %s", buf);
    crdt_replica_close(r);

    /* a child holding it: we are refused with its pid; once it dies the directory is free */
    int go[2], hold[2];
    if (pipe(go) < 0 || pipe(hold) < 0) {
        fail("pipe");
        return;
    }
    pid = fork();
    if (pid == 0) {
        close(go[0]);
        close(hold[1]);
        crdt_error_t e;
        crdt_replica_t *c = crdt_replica_open(&cfg, &e);
        char b = c ? 'y' : 'n';
        if (write(go[1], &b, 1) < 0)
            _exit(2);
        if (read(hold[0], &b, 1) < 0) /* until the parent kills us */
            _exit(2);
        _exit(0);
    }
    close(go[1]);
    close(hold[0]);
    char b = 0;
    if (read(go[0], &b, 1) != 1)
        b = 0;
    ok(b == 'y', "a child opens the directory");
    snprintf(want, sizeof(want), "pid %ld", (long)pid);
    r2 = crdt_replica_open(&cfg, &err);
    ok(r2 == NULL && strstr(err.text, want) != NULL, "we are refused with the child's pid: %s",
       err.text);
    kill(pid, SIGKILL);
    waitpid(pid, NULL, 0);
    close(go[0]);
    close(hold[1]);
    r2 = crdt_replica_open(&cfg, &err);
    ok(r2 != NULL, "the lock dies with its holder");
    crdt_replica_close(r2);
}

static uint64_t write_one(crdt_replica_t *r, int i)
{
    char key[16], m[16];
    size_t klen = (size_t)snprintf(key, sizeof(key), "s%d", i % 8);
    wop_t w = {.type = CRDT_ORSET, .replica = crdt_replica_node_id(r)};
    w.mlen = (size_t)snprintf(m, sizeof(m), "m%d", i);
    memcpy(w.member, m, w.mlen);
    uint64_t seq = 0;
    if (crdt_replica_mutate(r, key, klen, CRDT_ORSET, wop_cb, &w, &seq) != 1)
        return 0;
    return seq;
}

static void test_durable_seq(void)
{
    static const char *names[] = {"always", "everysec", "no"};
    for (int p = CRDT_FSYNC_ALWAYS; p <= CRDT_FSYNC_NO; p++) {
        const char *dir = fresh_dir(names[p]);
        crdt_replica_t *r = open_dir(dir, (crdt_fsync_policy_t)p, 1);
        if (!r) {
            fail("open");
            continue;
        }
        crdt_replica_stats_t st0, st1, st2;
        crdt_replica_stats(r, &st0);
        uint64_t seq = write_one(r, 1);
        ok(seq > 0 && crdt_replica_durable_seq(r) < seq, "%s: not durable before flush", names[p]);
        crdt_replica_flush(r);
        crdt_replica_stats(r, &st1);
        is_int(crdt_replica_durable_seq(r), seq, "%s: durable after flush", names[p]);
        if (p == CRDT_FSYNC_ALWAYS)
            is_int(st1.fsyncs, st0.fsyncs + 1, "always: flush fsynced");
        if (p == CRDT_FSYNC_NO)
            is_int(st1.fsyncs, st0.fsyncs, "no: flush did not fsync");
        if (p == CRDT_FSYNC_EVERYSEC) { /* the first flush started a background fsync: reap it */
            for (int i = 0; i < 400 && st1.fsyncs == st0.fsyncs; i++) {
                usleep(5000);
                crdt_replica_tick(r, 0);
                crdt_replica_stats(r, &st1);
            }
            is_int(st1.fsyncs, st0.fsyncs + 1, "everysec: the first write is fsynced soon");
        }
        /* group commit: many writes, one flush, one fsync */
        uint64_t last = 0;
        for (int i = 2; i < 50; i++)
            last = write_one(r, i);
        ok(crdt_replica_durable_seq(r) < last, "%s: a batch is pending", names[p]);
        crdt_replica_stats(r, &st1);
        crdt_replica_flush(r);
        crdt_replica_stats(r, &st2);
        is_int(crdt_replica_durable_seq(r), last, "%s: one flush covers the batch", names[p]);
        if (p == CRDT_FSYNC_ALWAYS)
            is_int(st2.fsyncs, st1.fsyncs + 1, "always: with one fsync (group commit)");
        if (p == CRDT_FSYNC_EVERYSEC) {
            is_int(st2.fsyncs, st1.fsyncs, "everysec: no fsync within the second");
            usleep(1050 * 1000);
            /* the fsync runs on a background thread: tick starts it, a later tick reaps it */
            for (int i = 0; i < 400; i++) {
                crdt_replica_tick(r, 0);
                crdt_replica_stats(r, &st2);
                if (st2.fsyncs > st1.fsyncs)
                    break;
                usleep(5000);
            }
            is_int(st2.fsyncs, st1.fsyncs + 1, "everysec: tick fsyncs a second later");
            is_int(crdt_replica_durable_seq(r), last, "everysec: durable seq unchanged by it");
            crdt_replica_tick(r, 0);
            crdt_replica_stats(r, &st1);
            is_int(st1.fsyncs, st2.fsyncs, "everysec: and not again without new writes");
        }
        cmp_ok(st2.log_bytes, ">", 16, "%s: log bytes reported", names[p]);
        crdt_replica_close(r);
    }
}

static void test_io_error(void)
{
    /* A real write error: the file size limit. The child reports through its exit status. */
    const char *dir = fresh_dir("ioerr");
    pid_t pid = fork();
    if (pid == 0) {
        signal(SIGXFSZ, SIG_IGN);
        crdt_replica_t *r = open_dir(dir, CRDT_FSYNC_ALWAYS, 1);
        if (!r)
            _exit(10);
        struct rlimit rl = {4096, 4096};
        setrlimit(RLIMIT_FSIZE, &rl);
        int i = 0, rc = 0;
        uint64_t seq = 0, durable_before = 0;
        for (; i < 10000; i++) {
            durable_before = crdt_replica_durable_seq(r);
            seq = write_one(r, i);
            if (!seq)
                _exit(11);
            if ((rc = crdt_replica_flush(r)) < 0)
                break;
        }
        if (rc != CRDT_EIO)
            _exit(12);
        if (crdt_replica_durable_seq(r) != durable_before || durable_before >= seq)
            _exit(13);
        wop_t w = {.type = CRDT_ORSET, .replica = 1, .member = "x", .mlen = 1};
        uint64_t s2;
        if (crdt_replica_mutate(r, "k", 1, CRDT_ORSET, wop_cb, &w, &s2) != CRDT_EIO)
            _exit(14);
        if (!crdt_replica_last_error(r) || !strstr(crdt_replica_last_error(r), "log"))
            _exit(15);
        _exit(0);
    }
    int status = 0;
    waitpid(pid, &status, 0);
    ok(WIFEXITED(status) && WEXITSTATUS(status) == 0,
       "a write error: flush fails, durable seq stays, writes refused (child status %d)",
       WIFEXITED(status) ? WEXITSTATUS(status) : -1);
    crdt_replica_t *r = open_dir(dir, CRDT_FSYNC_ALWAYS, 1);
    ok(r != NULL, "the directory reopens after the failure (%s)",
       r ? crdt_replica_recovery(r)->dropped_reason : "");
    crdt_replica_close(r);
}

typedef struct page_ctx {
    int n;
    char seen[64];
    uint64_t last;
    bool ordered;
    const uint64_t *latest;
    int wrong;
} page_ctx_t;

static int page_cb(const void *key, size_t klen, uint64_t seq, const crdt_obj_t *s, void *ud)
{
    page_ctx_t *c = ud;
    char kb[16] = {0};
    memcpy(kb, key, klen < 15 ? klen : 15);
    int k = atoi(kb + 1);
    (void)s;
    if (seq <= c->last)
        c->ordered = false;
    c->last = seq;
    if (k >= 0 && k < 64) {
        c->seen[k]++;
        if (c->latest[k] != seq)
            c->wrong++;
    }
    c->n++;
    return 0;
}

static int stop_cb(const void *key, size_t klen, uint64_t seq, const crdt_obj_t *s, void *ud)
{
    (void)key, (void)klen, (void)seq, (void)s;
    return ++*(int *)ud == 2 ? 42 : 0;
}

/* Pages through the feed from `since` in pages of `limit`; returns the next since. */
static uint64_t page_all(crdt_replica_t *r, uint64_t since, size_t limit, page_ctx_t *c)
{
    for (int guard = 0; guard < 1000; guard++) {
        int before = c->n;
        uint64_t next = 0;
        crdt_replica_changes(r, since, limit, page_cb, c, &next);
        if (c->n == before) {
            since = next;
            break;
        }
        since = next;
    }
    return since;
}

static void test_feed(void)
{
    const char *dir = fresh_dir("feed");
    crdt_replica_t *r = open_dir(dir, CRDT_FSYNC_NO, 1);
    if (!r) {
        fail("open");
        return;
    }
    uint64_t latest[64] = {0};
    rng_t g = {11};
    /* many writes to few keys, so the feed's lazy compaction runs */
    for (int i = 0; i < 3000; i++) {
        int k = i < 30 ? i : (int)below(&g, 30);
        char key[16];
        size_t klen = key_of(k, key);
        wop_t w = random_op(&g, r, CRDT_PNCOUNTER);
        w.n = 1;
        uint64_t seq;
        if (crdt_replica_mutate(r, key, klen, CRDT_PNCOUNTER, wop_cb, &w, &seq) == 1)
            latest[k] = seq;
    }
    page_ctx_t c = {.ordered = true, .latest = latest};
    uint64_t next = page_all(r, 0, 7, &c);
    int once = 0;
    for (int k = 0; k < 30; k++)
        once += c.seen[k] == 1;
    ok(c.n == 30 && once == 30 && c.ordered && c.wrong == 0,
       "paging by 7 visits each of 30 keys once, in seq order, at its latest seq (%d, %d wrong)",
       c.n, c.wrong);
    is_int(next, crdt_replica_last_seq(r), "next ends at the last seq");
    page_ctx_t c0 = {.ordered = true, .latest = latest};
    uint64_t n2 = 99, n3 = 99;
    crdt_replica_changes(r, 0, 1, page_cb, &c0, &n3);
    ok(c0.n == 1 && n3 == c0.last, "limit 1: one key, next is its seq");
    crdt_replica_changes(r, 5, 0, page_cb, &c0, &n2);
    ok(c0.n == 1 && n2 == 5, "limit 0 returns nothing and keeps since");
    int stops = 0;
    is_int(crdt_replica_changes(r, 0, 10, stop_cb, &stops, &n2), 42, "a callback can stop it");
    is_int(n2, n3, "next then points after the last key the callback accepted");

    /* changes after `next` only */
    for (int k = 3; k < 30; k += 10) {
        char key[16];
        size_t klen = key_of(k, key);
        wop_t w = random_op(&g, r, CRDT_PNCOUNTER);
        w.n = 1;
        uint64_t seq;
        crdt_replica_mutate(r, key, klen, CRDT_PNCOUNTER, wop_cb, &w, &seq);
        latest[k] = seq;
    }
    page_ctx_t c2 = {.ordered = true, .latest = latest};
    uint64_t next2 = page_all(r, next, 2, &c2);
    ok(c2.n == 3 && c2.seen[3] == 1 && c2.seen[13] == 1 && c2.seen[23] == 1 && c2.wrong == 0,
       "resuming from next gives just the 3 keys changed since");
    crdt_replica_close(r);

    /* resume after restart */
    r = open_dir(dir, CRDT_FSYNC_NO, 1);
    if (!r) {
        fail("reopen");
        return;
    }
    page_ctx_t c3 = {.ordered = true, .latest = latest};
    page_all(r, next2, 5, &c3);
    is_int(c3.n, 0, "after restart, nothing new since the saved cursor");
    page_ctx_t c4 = {.ordered = true, .latest = latest};
    page_all(r, next, 5, &c4);
    ok(c4.n == 3 && c4.wrong == 0, "and the same 3 keys since the older cursor");
    page_ctx_t c5 = {.ordered = true, .latest = latest};
    page_all(r, 0, 4, &c5);
    ok(c5.n == 30 && c5.wrong == 0 && c5.ordered, "the whole feed with the same seqs");
    crdt_replica_close(r);
}

typedef struct delta_list {
    size_t n;
    char keys[4096][16];
    size_t klens[4096];
    crdt_obj_t *deltas[4096];
} delta_list_t;

static void collect_cb(const void *key, size_t klen, uint64_t seq, const crdt_obj_t *delta,
                       uint64_t origin, void *ud)
{
    (void)origin;
    (void)seq;
    delta_list_t *l = ud;
    if (l->n < 4096 && klen < 16) {
        memcpy(l->keys[l->n], key, klen);
        l->klens[l->n] = klen;
        l->deltas[l->n++] = crdt_obj_clone(delta);
    }
}

static void test_convergence(void)
{
    crdt_replica_t *a = open_dir(NULL, CRDT_FSYNC_NO, 1), *b = open_dir(NULL, CRDT_FSYNC_NO, 2);
    static delta_list_t da, db;
    crdt_replica_set_listener(a, collect_cb, &da);
    crdt_replica_set_listener(b, collect_cb, &db);
    rng_t g = {2024};
    random_writes(a, &g, 1500, 24);
    random_writes(b, &g, 1500, 24);
    crdt_replica_set_listener(a, NULL, NULL);
    crdt_replica_set_listener(b, NULL, NULL);
    ok(crdt_replica_digest(a) != crdt_replica_digest(b), "diverged replicas differ in digest");
    /* a gets b's deltas in order; b gets a's shuffled, some twice */
    uint64_t seq;
    int errs = 0;
    for (size_t i = 0; i < db.n; i++)
        errs += crdt_replica_apply(a, db.keys[i], db.klens[i], db.deltas[i], CRDT_ORIGIN_LOCAL, &seq) < 0;
    size_t *perm = malloc(da.n * 2 * sizeof(*perm));
    for (size_t i = 0; i < da.n * 2; i++)
        perm[i] = i % da.n;
    for (size_t i = da.n * 2 - 1; i > 0; i--) {
        size_t j = (size_t)below(&g, i + 1), t = perm[i];
        perm[i] = perm[j];
        perm[j] = t;
    }
    for (size_t i = 0; i < da.n * 2; i++)
        errs += crdt_replica_apply(b, da.keys[perm[i]], da.klens[perm[i]], da.deltas[perm[i]], CRDT_ORIGIN_LOCAL, &seq) < 0;
    is_int(errs, 0, "every delta applies");
    ok(crdt_replica_digest(a) == crdt_replica_digest(b),
       "converged replicas have equal digests (%016llx)",
       (unsigned long long)crdt_replica_digest(a));
    int fp_diffs = 0;
    for (int k = 0; k < 24; k++) {
        char key[16];
        size_t klen = key_of(k, key);
        uint64_t fa = 1, fb = 2;
        int ra = crdt_replica_key_fingerprint(a, key, klen, &fa);
        int rb = crdt_replica_key_fingerprint(b, key, klen, &fb);
        fp_diffs += ra != 0 || rb != 0 || fa != fb;
    }
    is_int(fp_diffs, 0, "and equal per-key fingerprints");
    uint64_t fp = 9;
    is_int(crdt_replica_key_fingerprint(a, "absent", 6, &fp), CRDT_EINVAL, "absent key");
    /* incremental: one more change moves the digest, the fingerprint, and only that key's */
    uint64_t d0 = crdt_replica_digest(a), f0, f1, o0, o1;
    crdt_replica_key_fingerprint(a, "k1", 2, &f0);
    crdt_replica_key_fingerprint(a, "k2", 2, &o0);
    wop_t w = random_op(&g, a, type_of(1));
    w.remove = 0;
    w.n = 5;
    crdt_replica_mutate(a, "k1", 2, type_of(1), wop_cb, &w, &seq);
    crdt_replica_key_fingerprint(a, "k1", 2, &f1);
    crdt_replica_key_fingerprint(a, "k2", 2, &o1);
    ok(f1 != f0 && o1 == o0 && crdt_replica_digest(a) != d0,
       "a change moves its key's fingerprint and the digest only");
    crdt_replica_flush(a);
    is_int(crdt_replica_digest(a) == crdt_replica_digest(b), 0, "digests now differ");
    for (size_t i = 0; i < da.n; i++)
        crdt_obj_free(da.deltas[i]);
    for (size_t i = 0; i < db.n; i++)
        crdt_obj_free(db.deltas[i]);
    free(perm);
    /* an independent check: a fresh replica fed a's states has a's digest */
    crdt_replica_t *c = open_dir(NULL, CRDT_FSYNC_NO, 3);
    crdt_replica_foreach(a, copy_cb, c);
    cmp_ctx_t cc = {c, 0, NULL};
    crdt_replica_foreach(a, cmp_key_cb, &cc);
    ok(cc.diffs == 0 && crdt_replica_digest(a) == crdt_replica_digest(c),
       "a copy made through apply has the same states and digest");
    crdt_replica_close(a);
    crdt_replica_close(b);
    crdt_replica_close(c);
}

static void test_crash(void)
{
    /* A child writes with policy always and reports every acknowledged write through a pipe;
     * we SIGKILL it mid-stream, reopen, and look for every acknowledged write. */
    const char *dir = fresh_dir("crash");
    int p[2];
    if (pipe(p) < 0) {
        fail("pipe");
        return;
    }
    pid_t pid = fork();
    if (pid == 0) {
        close(p[0]);
        crdt_replica_t *r = open_indexed(dir, CRDT_FSYNC_ALWAYS, 2048);
        if (!r)
            _exit(1);
        int pending[64], np = 0;
        for (int i = 0;; i++) {
            uint64_t seq = write_one(r, i);
            if (!seq)
                _exit(2);
            pending[np++] = i;
            if (np == 64 || i % 7 == 0) { /* a group commit of a few writes */
                if (crdt_replica_flush(r) < 0 || crdt_replica_durable_seq(r) < seq)
                    _exit(3);
                if (write(p[1], pending, (size_t)np * sizeof(int)) < 0)
                    _exit(4);
                np = 0;
            }
        }
    }
    close(p[1]);
    /* Let it acknowledge a few hundred writes (bounded by 5 s on a loaded machine), then kill it
     * in the middle of whatever it is doing, and read what it acknowledged before dying. */
    static int acked[1 << 20];
    size_t nacked = 0, bytes = 0;
    ssize_t got;
    time_t t0 = time(NULL);
    while (nacked < 300 && time(NULL) - t0 < 5 &&
           (got = read(p[0], (char *)acked + bytes, sizeof(acked) - bytes)) > 0) {
        bytes += (size_t)got;
        nacked = bytes / sizeof(int);
    }
    kill(pid, SIGKILL);
    int status;
    waitpid(pid, &status, 0);
    while ((got = read(p[0], (char *)acked + bytes, sizeof(acked) - bytes)) > 0)
        bytes += (size_t)got;
    nacked = bytes / sizeof(int);
    close(p[0]);
    ok(WIFSIGNALED(status) && nacked > 10, "child killed after %zu acknowledged writes", nacked);
    crdt_replica_t *r = open_dir(dir, CRDT_FSYNC_ALWAYS, 1);
    ok(r != NULL, "reopen after kill -9 (dropped %llu bytes)",
       r ? (unsigned long long)crdt_replica_recovery(r)->dropped_bytes : 0ull);
    if (!r)
        return;
    cmp_ok(crdt_replica_recovery(r)->index_records, ">", 0,
           "the index listed some of them (of %llu records)",
           (unsigned long long)crdt_replica_recovery(r)->log_records);
    size_t missing = 0;
    for (size_t i = 0; i < nacked; i++) {
        char key[16], m[16];
        size_t klen = (size_t)snprintf(key, sizeof(key), "s%d", acked[i] % 8);
        size_t mlen = (size_t)snprintf(m, sizeof(m), "m%d", acked[i]);
        const crdt_obj_t *o = crdt_replica_get(r, key, klen);
        missing += !o || crdt_set_contains(o, m, mlen) != 1;
    }
    is_int(missing, 0, "every acknowledged write is present");
    cmp_ok(crdt_replica_last_seq(r), ">=", nacked, "last seq covers them");
    crdt_replica_close(r);
}

/* ---- replay joins each key's records in one go: the same bytes as merging them one by one --- */

#define RK 24 /* keys of test_replay_equals_merging */

typedef struct ref_space {
    crdt_obj_t *obj[RK];
    int bad; /* listener calls for keys it does not know */
} ref_space_t;

/* The reference: every logged delta merged, one object at a time, as the write path hands it. */
static void ref_listener(const void *key, size_t klen, uint64_t seq, const crdt_obj_t *delta,
                         uint64_t origin, void *ud)
{
    (void)origin;
    ref_space_t *rs = ud;
    (void)seq;
    int k = -1;
    if (klen > 1 && klen < 8 && ((const char *)key)[0] == 'r') {
        char tmp[8];
        memcpy(tmp, key, klen);
        tmp[klen] = '\0';
        k = atoi(tmp + 1);
    }
    if (k < 0 || k >= RK) {
        rs->bad++;
        return;
    }
    if (!rs->obj[k])
        rs->obj[k] = crdt_obj_type(delta) == CRDT_TIMELINE ? crdt_timeline_new(8)
                                                           : crdt_obj_new(crdt_obj_type(delta));
    if (crdt_obj_merge(rs->obj[k], delta) < 0)
        rs->bad++;
}

static int tl_add_cb(crdt_obj_t *o, void *ud, crdt_obj_t **delta)
{
    const wop_t *w = ud;
    return w->remove ? crdt_timeline_remove(o, w->member, w->mlen, w->score, delta)
                     : crdt_timeline_add(o, w->member, w->mlen, w->score, delta);
}

/* A timeline state of n random entries under `bound` (0: unbounded), for crdt_replica_apply:
 * records that are not one-entry deltas (several entries, a bound, a floor). */
static crdt_obj_t *random_state(rng_t *g, uint32_t bound, int n)
{
    crdt_obj_t *o = crdt_timeline_new(bound);
    for (int i = 0; i < n; i++) {
        char m[8];
        int ml = snprintf(m, sizeof(m), "m%d", (int)below(g, 30));
        double sc = (double)below(g, 40);
        if (below(g, 4) == 0)
            crdt_timeline_remove(o, m, (size_t)ml, sc, NULL);
        else
            crdt_timeline_add(o, m, (size_t)ml, sc, NULL);
    }
    return o;
}

static void test_replay_equals_merging(void)
{
    for (uint64_t round = 0; round < 3; round++) {
        const char *dir = fresh_dir("merging");
        crdt_replica_t *r = open_dir(dir, CRDT_FSYNC_NO, 1);
        if (!r) {
            fail("open");
            return;
        }
        static ref_space_t rs;
        memset(&rs, 0, sizeof(rs));
        crdt_replica_set_listener(r, ref_listener, &rs);
        rng_t g = {100 + round};
        int n = 9000, failures = 0;
        for (int i = 0; i < n; i++) {
            char key[8];
            int k = (int)below(&g, RK);
            size_t klen = (size_t)snprintf(key, sizeof(key), "r%d", k);
            uint64_t seq;
            int rc;
            if (k == RK - 1) { /* one key of another type */
                crdt_obj_t *d = crdt_obj_new(CRDT_GCOUNTER);
                crdt_gcounter_incr(d, 1 + below(&g, 3), 1 + below(&g, 5), NULL);
                rc = crdt_replica_apply(r, key, klen, d, CRDT_ORIGIN_LOCAL, &seq);
                crdt_obj_free(d);
            } else if (below(&g, 25) == 0) {
                /* a whole state: several entries, sometimes bounded (with a floor), sometimes
                 * more entries than the fast path reads itself */
                uint64_t kind = below(&g, 3);
                crdt_obj_t *d = random_state(&g, kind == 0 ? 3 + (uint32_t)below(&g, 8) : 0,
                                             kind == 2 ? 40 : 2 + (int)below(&g, 8));
                rc = crdt_replica_apply(r, key, klen, d, CRDT_ORIGIN_LOCAL, &seq);
                crdt_obj_free(d);
            } else {
                /* a feed: rising scores, with ties and older writes mixed in */
                wop_t w = {0};
                w.type = CRDT_TIMELINE;
                w.remove = below(&g, 5) == 0;
                w.mlen = (size_t)snprintf(w.member, sizeof(w.member), "m%d", (int)below(&g, 30));
                w.score =
                    below(&g, 4) == 0 ? (double)below(&g, 40) : (double)(i / 40 + below(&g, 3));
                rc = crdt_replica_mutate(r, key, klen, CRDT_TIMELINE, tl_add_cb, &w, &seq);
            }
            failures += rc < 0;
        }
        is_int(failures, 0, "round %llu: %d random writes", (unsigned long long)round, n);
        is_int(rs.bad, 0, "the reference took every logged delta");
        crdt_replica_close(r);
        r = open_dir(dir, CRDT_FSYNC_NO, 1);
        if (!r) {
            fail("reopen");
            return;
        }
        int diffs = 0, keys = 0;
        for (int k = 0; k < RK; k++) {
            char key[8];
            size_t klen = (size_t)snprintf(key, sizeof(key), "r%d", k);
            const crdt_obj_t *o = crdt_replica_get(r, key, klen);
            if (!rs.obj[k]) {
                diffs += o != NULL;
                continue;
            }
            keys++;
            crdt_buf_t a = {0}, b = {0};
            if (o)
                crdt_obj_encode(o, &a);
            crdt_obj_encode(rs.obj[k], &b);
            if (!o || a.len != b.len || memcmp(a.data, b.data, a.len) != 0)
                diffs++;
            crdt_buf_free(&a);
            crdt_buf_free(&b);
            crdt_obj_free(rs.obj[k]);
        }
        is_int(diffs, 0, "replay gives every key (%d) the bytes of merging its deltas one by one",
               keys);
        crdt_replica_close(r);
    }
}

/* A record whose log checksum is right but whose object is not (as a newer crdtd, or a bug,
 * could write). Open only scans the log, so it is found when its key is joined: the replica then
 * refuses writes and snapshots (a snapshot would drop the log that still holds the record), says
 * why, naming the record, and truncates nothing. */
static void test_intact_but_undecodable(void)
{
    const char *dir = fresh_dir("undecodable");
    crdt_replica_t *r = open_dir(dir, CRDT_FSYNC_NO, 1);
    if (!r) {
        fail("open");
        return;
    }
    wop_t w = {0};
    w.type = CRDT_TIMELINE;
    for (int i = 0; i < 50; i++) {
        w.mlen = (size_t)snprintf(w.member, sizeof(w.member), "m%d", i);
        w.score = i;
        uint64_t seq;
        crdt_replica_mutate(r, "feed", 4, CRDT_TIMELINE, tl_add_cb, &w, &seq);
    }
    uint64_t last = crdt_replica_last_seq(r);
    crdt_replica_close(r);
    /* the last segment gets one more record for "feed": a delta with flag 2 (not 0 or 1) */
    char seg[256];
    snprintf(seg, sizeof(seg), "%s/log-%020llu", dir, 0ull);
    uint8_t enc[64], body[96], rec[128];
    size_t e = 0;
    enc[e++] = CRDT_CODEC_VERSION, enc[e++] = CRDT_TIMELINE, enc[e++] = 0; /* payload length */
    size_t pl = e;
    enc[e++] = 0, enc[e++] = 0, enc[e++] = 1; /* max_size 0, no floor, 1 entry */
    double sc = 1000;
    memcpy(enc + e, &sc, 8), e += 8;
    enc[e++] = 2, enc[e++] = 1, enc[e++] = 'x'; /* flag 2, member "x" */
    enc[pl - 1] = (uint8_t)(e - pl);
    uint32_t crc = crdt_crc32c(0, enc, e);
    for (int i = 0; i < 4; i++)
        enc[e++] = (uint8_t)(crc >> (8 * i));
    size_t b = 0;
    body[b++] = (uint8_t)(last + 1); /* seq (< 128 here) */
    body[b++] = 4;
    memcpy(body + b, "feed", 4), b += 4;
    memcpy(body + b, enc, e), b += e;
    uint32_t bcrc = crdt_crc32c(0, body, b);
    for (int i = 0; i < 4; i++) {
        rec[i] = (uint8_t)(b >> (8 * i));
        rec[4 + i] = (uint8_t)(bcrc >> (8 * i));
    }
    memcpy(rec + 8, body, b);
    int fd = open(seg, O_WRONLY | O_APPEND);
    ok(fd >= 0 && write(fd, rec, 8 + b) == (ssize_t)(8 + b),
       "appended an intact, undecodable record");
    if (fd >= 0)
        close(fd);
    struct stat before, after;
    stat(seg, &before);
    for (uint32_t threads = 0; threads <= 2; threads += 2) {
        crdt_replica_config_t cfg;
        crdt_replica_config_init(&cfg);
        cfg.dir = dir;
        cfg.fsync = CRDT_FSYNC_NO;
        cfg.load_threads = threads;
        crdt_error_t err;
        r = crdt_replica_open(&cfg, &err);
        ok(r != NULL, "%u threads: open scans the log", threads);
        if (!r)
            continue;
        if (threads == 0) {
            ok(crdt_replica_last_error(r) == NULL, "nothing is joined before it is touched");
            ok(crdt_replica_get(r, "feed", 4) != NULL, "a read of the key joins it");
        } else {
            crdt_replica_wait_loaded(r);
        }
        const char *why = crdt_replica_last_error(r);
        ok(why && strstr(why, "cannot decode an intact record") && strstr(why, "flag 2") &&
               strstr(why, "log-00000000000000000000"),
           "the replica says why, naming the segment (%s)", why ? why : "no error");
        wop_t w2 = {0};
        w2.type = CRDT_TIMELINE;
        w2.mlen = 1, w2.member[0] = 'y', w2.score = 1;
        uint64_t seq;
        is_int(crdt_replica_mutate(r, "other", 5, CRDT_TIMELINE, tl_add_cb, &w2, &seq), CRDT_EIO,
               "and refuses writes");
        ok(crdt_replica_snapshot(r) < 0, "and snapshots");
        crdt_replica_close(r);
        stat(seg, &after);
        is_int(after.st_size, before.st_size, "the log keeps every byte");
        is_int(count_files(dir, "snapshot"), 0, "and no snapshot replaced it");
    }
}

static crdt_replica_t *open_loading(const char *dir, uint32_t threads)
{
    return open_tuned(dir, CRDT_FSYNC_NO, threads, 0);
}

static bool same_bytes(const crdt_obj_t *a, const crdt_obj_t *b)
{
    crdt_buf_t x = {0}, y = {0};
    bool same = a && b && crdt_obj_encode(a, &x) == 0 && crdt_obj_encode(b, &y) == 0 &&
                x.len == y.len && memcmp(x.data, y.data, x.len) == 0;
    crdt_buf_free(&x);
    crdt_buf_free(&y);
    return same;
}

/* Open scans the log and leaves the joins to background threads and to whatever touches a key
 * first. Every way in to a key must see it whole: reads, writes, the feed, fingerprints, the
 * digest, snapshots; and close must be able to stop a load half done. */
static void test_lazy_load(void)
{
    enum { NK = 300 };
    const char *dir = fresh_dir("lazy");
    crdt_replica_t *r = open_dir(dir, CRDT_FSYNC_NO, 1);
    crdt_replica_t *mem = open_dir(NULL, CRDT_FSYNC_NO, 1);
    if (!r || !mem) {
        fail("open");
        return;
    }
    rng_t g = {4242};
    ok(random_writes(r, &g, 30000, NK) > 0, "30,000 writes over %d keys of every type", NK);
    crdt_replica_foreach(r, copy_cb, mem);
    crdt_replica_close(r);

    /* no threads: a key is joined when touched, and only then */
    r = open_loading(dir, 0);
    if (!r) {
        fail("reopen");
        return;
    }
    is_int(crdt_replica_keys_loading(r), NK, "open leaves all %d keys to be joined", NK);
    is_int(crdt_replica_recovery(r)->pending_keys, NK, "and reports them");
    ok(crdt_replica_recovery(r)->loaded_seconds == 0, "the load is not finished");
    char key[16];
    size_t klen = key_of(5, key);
    ok(same_bytes(crdt_replica_get(r, key, klen), crdt_replica_get(mem, key, klen)),
       "a read of a pending key sees all of it");
    is_int(crdt_replica_keys_loading(r), NK - 1, "and joins that key alone");
    klen = key_of(7, key);
    wop_t w = random_op(&g, r, type_of(7));
    uint64_t seq = 0, mseq;
    wop_t w2 = w;
    int rc = crdt_replica_mutate(r, key, klen, w.type, wop_cb, &w, &seq);
    int mrc = crdt_replica_mutate(mem, key, klen, w2.type, wop_cb, &w2, &mseq);
    ok(rc == mrc && rc >= 0, "a write to a pending key (%s) acts on the whole state", key);
    ok(same_bytes(crdt_replica_get(r, key, klen), crdt_replica_get(mem, key, klen)),
       "and leaves the same state as on a replica that never restarted");
    is_int(crdt_replica_apply(r, key, klen, crdt_replica_get(mem, "k8", 2), CRDT_ORIGIN_LOCAL, &seq), CRDT_ETYPE,
           "a delta of another type is refused as before");
    uint64_t fp1, fp2;
    klen = key_of(11, key);
    ok(crdt_replica_key_fingerprint(r, key, klen, &fp1) == 0 &&
           crdt_replica_key_fingerprint(mem, key, klen, &fp2) == 0 && fp1 == fp2,
       "a pending key's fingerprint is that of its whole state");
    static feed_list_t f;
    feed_all(r, &f);
    is_int(f.n, NK, "the feed delivers every key");
    ok(f.n && rc == 1 && strcmp(f.keys[f.n - 1], "k7") == 0 && f.seqs[f.n - 1] == seq,
       "last the one written after open, at its seq");
    is_int(crdt_replica_keys_loading(r), 0, "the feed's states joined every key");
    ok(crdt_replica_digest(r) == crdt_replica_digest(mem), "the digest agrees");
    crdt_replica_tick(r, 0);
    ok(crdt_replica_recovery(r)->loaded_seconds > 0, "the report says when the load finished");
    crdt_replica_close(r);

    /* close with every key pending: nothing to join, nothing lost (the sanitizers see the rest) */
    r = open_loading(dir, 0);
    ok(r && crdt_replica_keys_loading(r) == NK, "reopened with all keys pending");
    crdt_replica_close(r);

    /* a snapshot joins everything first (the fork copies no threads and no half-joined key) */
    r = open_loading(dir, 0);
    if (!r) {
        fail("reopen");
        return;
    }
    ok(crdt_replica_snapshot(r) == 0, "a snapshot starts with keys pending");
    is_int(crdt_replica_keys_loading(r), 0, "after joining them all");
    crdt_replica_stats_t st;
    for (int i = 0; i < 500; i++) {
        crdt_replica_tick(r, 0);
        crdt_replica_stats(r, &st);
        if (!st.snapshot_running)
            break;
        usleep(10000);
    }
    is_int(st.snapshots, 1, "and completes");
    crdt_replica_close(r);
    r = open_loading(dir, 2);
    if (!r) {
        fail("reopen");
        return;
    }
    cmp_ctx_t c = {mem, 0, NULL};
    crdt_replica_foreach(r, cmp_key_cb, &c);
    is_int(c.diffs, 0, "the snapshot holds every key whole");
    crdt_replica_close(r);

    /* background threads racing reads and writes of the replica's own thread */
    for (int round = 0; round < 3; round++) {
        r = open_dir(dir, CRDT_FSYNC_NO, 1);
        if (!r) {
            fail("reopen");
            return;
        }
        for (int i = 0; i < 3000; i++) {
            char k2[16];
            int k = (int)below(&g, NK);
            size_t kl = key_of(k, k2);
            wop_t a = random_op(&g, r, type_of(k)), b = a;
            crdt_replica_mutate(r, k2, kl, a.type, wop_cb, &a, &seq);
            crdt_replica_mutate(mem, k2, kl, b.type, wop_cb, &b, &mseq);
        }
        int diffs = 0;
        for (int k = NK; k-- > 0;) {
            klen = key_of(k, key);
            diffs += !same_bytes(crdt_replica_get(r, key, klen), crdt_replica_get(mem, key, klen));
        }
        is_int(diffs, 0, "round %d: reads and writes while 2 threads load: every key agrees",
               round);
        crdt_replica_wait_loaded(r);
        is_int(crdt_replica_keys_loading(r), 0, "then the load finishes");
        ok(crdt_replica_digest(r) == crdt_replica_digest(mem), "and the digest agrees");
        crdt_replica_close(r);
    }
    crdt_replica_close(mem);
}

/* The log's checksum is the CPU's crc32 instruction where there is one: same values as tables. */
uint32_t crdt__crc32c_portable(uint32_t crc, const void *data, size_t n);

/* Copies the files of dir `from` (not LOCK) into a fresh `to`: the disk as a crash leaves it. */
static void copy_files(const char *from, const char *to)
{
    rm_dir(to);
    mkdir(to, 0755);
    DIR *d = opendir(from);
    struct dirent *de;
    static char buf[1 << 16];
    while (d && (de = readdir(d))) {
        if (de->d_name[0] == '.' || !strcmp(de->d_name, "LOCK"))
            continue;
        char a[300], b[300];
        snprintf(a, sizeof(a), "%s/%s", from, de->d_name);
        snprintf(b, sizeof(b), "%s/%s", to, de->d_name);
        int in = open(a, O_RDONLY), out = open(b, O_WRONLY | O_CREAT | O_TRUNC, 0644);
        ssize_t n;
        while (in >= 0 && out >= 0 && (n = read(in, buf, sizeof(buf))) > 0)
            if (write(out, buf, (size_t)n) != n)
                diag("copy %s: short write", b);
        if (in >= 0)
            close(in);
        if (out >= 0)
            close(out);
    }
    if (d)
        closedir(d);
}

/* The log's index: a restart takes the records it lists from it instead of scanning them, and
 * scans only what follows; an index that is torn, damaged or stale is not used; a record that
 * changed under it is found when its key is joined, and refused. */
static void test_index(void)
{
    enum { N = 30 };
    uint64_t bounds[N + 1], digests[N + 1];
    const char *dir = fresh_dir("index");
    char seg[256], idx[300];
    if (build_log(dir, N, bounds, digests) < 0) {
        fail("build the log");
        return;
    }
    last_segment(dir, seg, sizeof(seg));
    snprintf(idx, sizeof(idx), "%s.idx", seg);
    ok(file_size(idx) > 16, "a clean close leaves the segment indexed (%llu bytes)",
       (unsigned long long)file_size(idx));
    crdt_replica_t *r = open_dir(dir, CRDT_FSYNC_NO, 1);
    const crdt_recovery_report_t *rep = r ? crdt_replica_recovery(r) : NULL;
    ok(r && rep->index_records == N && rep->log_records == N && rep->dropped_bytes == 0 &&
           crdt_replica_last_seq(r) == N && crdt_replica_digest(r) == digests[N],
       "reopened from the index: every record, the same keyspace (%llu of %llu listed)",
       rep ? (unsigned long long)rep->index_records : 0ull,
       rep ? (unsigned long long)rep->log_records : 0ull);
    /* records after the index's last block (a crash came before the next): scanned */
    char copy[300];
    snprintf(copy, sizeof(copy), "%s/../index-copy", dir);
    rng_t g0 = {31};
    random_writes(r, &g0, 5, 6);
    crdt_replica_flush(r);
    uint64_t d0 = crdt_replica_digest(r), n0 = crdt_replica_last_seq(r);
    copy_files(dir, copy);
    crdt_replica_close(r);
    r = open_dir(copy, CRDT_FSYNC_NO, 1);
    rep = r ? crdt_replica_recovery(r) : NULL;
    ok(r && rep->index_records == N && rep->log_records == n0 && crdt_replica_digest(r) == d0,
       "the records after the last block scanned (%llu listed, %llu in all)",
       rep ? (unsigned long long)rep->index_records : 0ull,
       rep ? (unsigned long long)rep->log_records : 0ull);
    crdt_replica_close(r);
    r = open_dir(copy, CRDT_FSYNC_NO, 1);
    ok(r && crdt_replica_recovery(r)->index_records == n0 && crdt_replica_digest(r) == d0,
       "and indexed at the next clean close");
    crdt_replica_close(r);
    rm_dir(dir);
    build_log(dir, N, bounds, digests);

    /* a damaged index is not used: torn, a flipped byte, or the header of another segment */
    uint64_t isize = file_size(idx);
    for (int how = 0; how < 3; how++) {
        if (how == 0 && truncate(idx, (off_t)(isize - 5)) < 0)
            diag("truncate failed");
        if (how == 1)
            flip_byte(idx, isize / 2);
        if (how == 2)
            flip_byte(idx, 9);
        r = open_dir(dir, CRDT_FSYNC_NO, 1);
        rep = r ? crdt_replica_recovery(r) : NULL;
        ok(r && rep->index_records == 0 && rep->log_records == N && rep->dropped_bytes == 0 &&
               crdt_replica_digest(r) == digests[N],
           "index %s: not used, the segment scanned instead",
           how == 0   ? "torn"
           : how == 1 ? "with a flipped byte"
                      : "of another segment");
        crdt_replica_close(r); /* which indexes the segment again */
        r = open_dir(dir, CRDT_FSYNC_NO, 1);
        ok(r && crdt_replica_recovery(r)->index_records == N &&
               crdt_replica_digest(r) == digests[N],
           "and the next clean close rewrote it");
        crdt_replica_close(r);
        isize = file_size(idx);
    }

    /* a segment without an index (an older crdtd's, or one lost): the restart that scans it
     * writes blocks as it goes, so that even a crash right after leaves it mostly indexed */
    drop_index(seg);
    r = open_indexed(dir, CRDT_FSYNC_NO, 128);
    ok(r && crdt_replica_recovery(r)->index_records == 0 && crdt_replica_digest(r) == digests[N],
       "no index: scanned");
    copy_files(dir, copy);
    crdt_replica_close(r);
    r = open_indexed(copy, CRDT_FSYNC_NO, 128);
    rep = r ? crdt_replica_recovery(r) : NULL;
    ok(r && rep->index_records > 0 && rep->log_records == N && crdt_replica_digest(r) == digests[N],
       "the scan wrote blocks as it went (%llu of %d listed after a crash right after it)",
       rep ? (unsigned long long)rep->index_records : 0ull, N);
    crdt_replica_close(r);

    /* a log cut inside what the index covers: the index is not used, the tail cut as ever */
    if (truncate(seg, (off_t)(bounds[N] - 3)) < 0)
        diag("truncate failed");
    r = open_dir(dir, CRDT_FSYNC_NO, 1);
    rep = r ? crdt_replica_recovery(r) : NULL;
    ok(r && rep->index_records == 0 && rep->dropped_bytes == bounds[N] - 3 - bounds[N - 1] &&
           crdt_replica_digest(r) == digests[N - 1],
       "a torn log under its index: scanned, the torn record dropped");
    crdt_replica_close(r);

    /* a record changed under the index: open serves, the key's join finds it and the replica
     * refuses writes; the log keeps every byte; without the index the scan cuts there */
    rm_dir(dir);
    if (build_log(dir, N, bounds, digests) < 0) {
        fail("rebuild the log");
        return;
    }
    flip_byte(seg, bounds[10] - 2); /* the object bytes of record 10 */
    r = open_dir(dir, CRDT_FSYNC_NO, 1);
    ok(r && crdt_replica_recovery(r)->dropped_bytes == 0 && crdt_replica_last_seq(r) == N,
       "a record changed under the index: open still serves");
    if (r) {
        crdt_replica_wait_loaded(r);
        const char *why = crdt_replica_last_error(r);
        ok(why && strstr(why, "not an intact record") && strstr(why, "index"),
           "its join says which record and that the index listed it: %s", why ? why : "");
        char key[16];
        size_t klen = key_of(0, key);
        wop_t w = random_op(&(rng_t){9}, r, type_of(0));
        uint64_t seq;
        is_int(crdt_replica_mutate(r, key, klen, w.type, wop_cb, &w, &seq), CRDT_EIO,
               "and writes are refused");
        crdt_replica_close(r);
    }
    is_int(file_size(seg), bounds[N], "the log keeps every byte");
    drop_index(seg);
    r = open_dir(dir, CRDT_FSYNC_NO, 1);
    ok(r && crdt_replica_recovery(r)->dropped_bytes == bounds[N] - bounds[9] &&
           crdt_replica_digest(r) == digests[9],
       "with the index moved away, the scan cuts at that record as before");
    crdt_replica_close(r);

    /* Blocks written as the log grows, under every policy; the files as a crash leaves them
     * (copied while the replica runs) recover from the blocks plus a scan of what follows; and
     * a replica reopened from them goes on indexing. */
    static const crdt_fsync_policy_t pols[] = {CRDT_FSYNC_ALWAYS, CRDT_FSYNC_EVERYSEC,
                                               CRDT_FSYNC_NO};
    for (size_t pi = 0; pi < 3; pi++) {
        rm_dir(dir);
        r = open_indexed(dir, pols[pi], 2048);
        if (!r) {
            fail("open");
            continue;
        }
        rng_t g = {77 + pi};
        for (int round = 0; round < 40; round++) {
            random_writes(r, &g, 20, 12);
            crdt_replica_flush(r);
            crdt_replica_tick(r, 0);
            struct timespec ts = {0, 2000000};
            nanosleep(&ts, NULL); /* the syncer's fsync and block */
            crdt_replica_flush(r);
        }
        random_writes(r, &g, 7, 12); /* a tail past the last block */
        crdt_replica_flush(r);
        uint64_t digest = crdt_replica_digest(r), last = crdt_replica_last_seq(r);
        copy_files(dir, copy);
        crdt_replica_close(r);
        r = open_indexed(copy, pols[pi], 2048);
        rep = r ? crdt_replica_recovery(r) : NULL;
        ok(r && rep->index_records > N && rep->index_records <= rep->log_records &&
               rep->dropped_bytes == 0 && crdt_replica_digest(r) == digest &&
               crdt_replica_last_seq(r) == last,
           "policy %s: blocks as the log grew (%llu of %llu records listed), the tail scanned, "
           "the same keyspace",
           pi == 0   ? "always"
           : pi == 1 ? "everysec"
                     : "no",
           rep ? (unsigned long long)rep->index_records : 0ull,
           rep ? (unsigned long long)rep->log_records : 0ull);
        if (!r)
            continue;
        random_writes(r, &g, 200, 12);
        crdt_replica_flush(r);
        digest = crdt_replica_digest(r);
        crdt_replica_close(r);
        r = open_indexed(copy, pols[pi], 2048);
        rep = r ? crdt_replica_recovery(r) : NULL;
        ok(r && rep->index_records == rep->log_records && crdt_replica_digest(r) == digest,
           "reopened, it went on indexing where the blocks ended (%llu of %llu listed)",
           rep ? (unsigned long long)rep->index_records : 0ull,
           rep ? (unsigned long long)rep->log_records : 0ull);
        crdt_replica_close(r);
    }
    rm_dir(copy);
}

static void test_crc_paths(void)
{
    uint8_t buf[300];
    rng_t g = {5};
    for (size_t i = 0; i < sizeof(buf); i++)
        buf[i] = (uint8_t)rnd(&g);
    int diffs = 0;
    for (size_t off = 0; off < 9; off++)
        for (size_t n = 0; off + n <= sizeof(buf); n += 1 + n / 8)
            diffs += crdt_crc32c(7, buf + off, n) != crdt__crc32c_portable(7, buf + off, n);
    is_int(diffs, 0, "crc32c: every length and alignment equals the portable tables");
}

/* ---- the clock's receive step --------------------------------------------------------------- */

static crdt_replica_t *open_clock(const char *dir, uint64_t node, uint64_t drift)
{
    crdt_replica_config_t cfg;
    crdt_replica_config_init(&cfg);
    cfg.dir = dir;
    cfg.node_id = node;
    cfg.max_clock_drift_ms = drift;
    return open_cfg(&cfg);
}

/* A register delta written by node `node` at (ms, logical). */
static crdt_obj_t *reg_delta(const char *val, uint64_t ms, uint32_t logical, uint64_t node)
{
    crdt_obj_t *d = crdt_obj_new(CRDT_LWWREG);
    crdt_hlc_ts_t ts = {ms, logical, node};
    crdt_lwwreg_set(d, &ts, val, strlen(val), NULL);
    return d;
}

static bool reg_is(crdt_replica_t *r, const char *key, const char *want)
{
    const crdt_obj_t *o = crdt_replica_get(r, key, strlen(key));
    const void *v;
    size_t len;
    if (!o || crdt_lwwreg_get(o, &v, &len, NULL) != 1)
        return false;
    if (len != strlen(want) || memcmp(v, want, len) != 0) {
        diag("register %s holds '%.*s', expected '%s'", key, (int)len, (const char *)v, want);
        return false;
    }
    return true;
}

static int write_reg(crdt_replica_t *r, const char *key, const char *val)
{
    crdt_mut_t m = {.type = CRDT_LWWREG, .kind = CRDT_MUT_SET, .bytes = val, .len = strlen(val)};
    uint64_t seq;
    return crdt_replica_write(r, key, strlen(key), &m, &seq);
}

static void test_clock_receive(void)
{
    crdt_replica_config_t dflt;
    crdt_replica_config_init(&dflt);
    is_int(dflt.max_clock_drift_ms, 24ull * 3600 * 1000, "clock: the drift bound defaults to 24 h");

    /* A remote register write stamped 30 s ahead of this node's wall clock. */
    crdt_replica_t *r = open_clock(NULL, 1, dflt.max_clock_drift_ms);
    uint64_t t = crdt_wall_ms() + 30000;
    crdt_obj_t *d = reg_delta("theirs", t, 4, 2);
    uint64_t seq;
    is_int(crdt_replica_apply(r, "reg", 3, d, 2, &seq), 1, "clock: the remote register applies");
    crdt_obj_free(d);
    crdt_hlc_ts_t now;
    is_int(crdt_replica_hlc_now(r, &now), 0, "clock: hlc_now");
    crdt_hlc_ts_t remote = {t, 4, 2};
    ok(crdt_hlc_cmp(&now, &remote) > 0,
       "clock: after the apply the clock is past it (%llu.%u > %llu.4)", (unsigned long long)now.ms,
       now.logical, (unsigned long long)t);
    is_int(write_reg(r, "reg", "mine"), 1,
           "clock: a local register write after it changes the key");
    ok(reg_is(r, "reg", "mine"), "clock: ... and wins over the remote value");

    /* LWW-set: a remote add 30 s ahead, then a local remove of that member wins. */
    crdt_obj_t *sd = crdt_obj_new(CRDT_LWWSET);
    crdt_hlc_ts_t st = {crdt_wall_ms() + 30000, 0, 3};
    crdt_lwwset_add(sd, "m", 1, &st, NULL);
    is_int(crdt_replica_apply(r, "set", 3, sd, 3, &seq), 1,
           "clock: the remote LWW-set add applies");
    crdt_obj_free(sd);
    crdt_mut_t rm = {.type = CRDT_LWWSET, .kind = CRDT_MUT_REMOVE, .bytes = "m", .len = 1};
    is_int(crdt_replica_write(r, "set", 3, &rm, &seq), 1, "clock: a local remove changes the set");
    is_int(crdt_set_contains(crdt_replica_get(r, "set", 3), "m", 1), 0,
           "clock: ... and wins over the remote add");

    /* A client's merge (origin local) of a state stamped in the future moves the clock too, and a
     * join that changes nothing still counts as seen. */
    uint64_t t2 = crdt_wall_ms() + 40000;
    d = reg_delta("merged", t2, 0, 9);
    is_int(crdt_replica_apply(r, "reg2", 4, d, CRDT_ORIGIN_LOCAL, &seq), 1,
           "clock: a local merge applies");
    is_int(crdt_replica_apply(r, "reg2", 4, d, CRDT_ORIGIN_LOCAL, &seq), 0,
           "clock: merging it again is a no-op");
    crdt_obj_free(d);
    crdt_replica_hlc_now(r, &now);
    ok(now.ms >= t2, "clock: a local-origin merge moves the clock too (%llu >= %llu)",
       (unsigned long long)now.ms, (unsigned long long)t2);

    /* Scores of timelines, counters and OR-Sets are not HLC timestamps: they leave it alone. */
    crdt_obj_t *tl = crdt_obj_new(CRDT_TIMELINE);
    crdt_timeline_add(tl, "x", 1, 9e15, NULL);
    is_int(crdt_replica_apply(r, "tl", 2, tl, 2, &seq), 1, "clock: a timeline applies");
    crdt_obj_free(tl);
    crdt_replica_hlc_now(r, &now);
    ok(now.ms < t2 + 60000, "clock: a timeline's score does not move the clock");

    /* A remote that used up its millisecond's logical counter: the next local write still orders
     * after it instead of failing. */
    uint64_t t3 = crdt_wall_ms() + 50000;
    d = reg_delta("exhausted", t3, UINT32_MAX, 2);
    is_int(crdt_replica_apply(r, "reg3", 4, d, 2, &seq), 1, "clock: a register at logical 2^32-1");
    crdt_obj_free(d);
    is_int(write_reg(r, "reg3", "after"), 1, "clock: a local write after an exhausted counter");
    ok(reg_is(r, "reg3", "after"), "clock: ... wins over it");
    crdt_replica_stats_t sts;
    crdt_replica_stats(r, &sts);
    is_int(sts.clock_ahead, 0, "clock: nothing was beyond the bound");
    crdt_replica_close(r);

    /* Beyond the bound: joined (convergence), but the clock stays within now + bound. */
    r = open_clock(NULL, 1, 60000);
    uint64_t far = crdt_wall_ms() + 10 * 60000;
    d = reg_delta("far", far, 0, 2);
    is_int(crdt_replica_apply(r, "reg", 3, d, 2, &seq), 1, "clock: a delta 10 min ahead is joined");
    crdt_obj_free(d);
    ok(reg_is(r, "reg", "far"), "clock: ... and holds its value");
    crdt_replica_hlc_now(r, &now);
    uint64_t wall = crdt_wall_ms();
    ok(now.ms <= wall + 60000, "clock: the clock did not follow it past now + bound (%llu <= %llu)",
       (unsigned long long)now.ms, (unsigned long long)(wall + 60000));
    crdt_replica_stats(r, &sts);
    is_int(sts.clock_ahead, 1, "clock: the delta beyond the bound is counted");
    is_int(write_reg(r, "reg", "mine"), 0, "clock: a local write still loses to it (the bound)");
    crdt_replica_stats(r, &sts);
    is_int(sts.clock_ahead, 1, "clock: a write competing with it does not count it again");
    crdt_replica_close(r);

    /* After a restart the clock has seen nothing, but a write orders after what it competes
     * with: the register's value, the member's entry, recovered from disk. */
    char dir[128];
    snprintf(dir, sizeof(dir), "%s/clock", root);
    r = open_clock(dir, 1, dflt.max_clock_drift_ms);
    d = reg_delta("theirs", crdt_wall_ms() + 30000, 0, 2);
    crdt_replica_apply(r, "reg", 3, d, 2, &seq);
    crdt_obj_free(d);
    sd = crdt_obj_new(CRDT_LWWSET);
    st = (crdt_hlc_ts_t){crdt_wall_ms() + 30000, 0, 2};
    crdt_lwwset_remove(sd, "m", 1, &st, NULL);
    crdt_replica_apply(r, "set", 3, sd, 2, &seq);
    crdt_obj_free(sd);
    crdt_replica_close(r);
    r = open_clock(dir, 1, dflt.max_clock_drift_ms);
    ok(r != NULL, "clock: reopen");
    if (r) {
        is_int(write_reg(r, "reg", "mine"), 1, "clock: after a restart a register write wins");
        ok(reg_is(r, "reg", "mine"), "clock: ... over the recovered value");
        crdt_mut_t add = {.type = CRDT_LWWSET, .kind = CRDT_MUT_ADD, .bytes = "m", .len = 1};
        is_int(crdt_replica_write(r, "set", 3, &add, &seq), 1,
               "clock: after a restart an add wins over a recovered tombstone");
        is_int(crdt_set_contains(crdt_replica_get(r, "set", 3), "m", 1), 1,
               "clock: ... the member is live");
        crdt_replica_close(r);
    }
}

/* Timeline writes through crdt_replica_write (whose delta is the replica's own, reused): the
 * listener sees each write's exact delta, also when it writes from inside the call (that write
 * makes its own, and the one being shown stays intact), and the log replays to the same state. */
typedef struct nest_ctx {
    crdt_replica_t *r;
    int depth, calls, wrong, nested;
    crdt_mut_t want; /* the outer write being shown */
} nest_ctx_t;

static int delta_is(const crdt_obj_t *d, const crdt_mut_t *m)
{
    crdt_obj_t *e = crdt_timeline_new(0);
    crdt_obj_t *x = NULL;
    int rc = m->kind == CRDT_MUT_ADD ? crdt_timeline_add(e, m->bytes, m->len, m->score, &x)
                                     : crdt_timeline_remove(e, m->bytes, m->len, m->score, &x);
    crdt_buf_t a = {0}, b = {0};
    int same = rc == 1 && crdt_obj_encode(d, &a) == 0 && crdt_obj_encode(x, &b) == 0 &&
               a.len == b.len && !memcmp(a.data, b.data, a.len);
    crdt_buf_free(&a);
    crdt_buf_free(&b);
    crdt_obj_free(x);
    crdt_obj_free(e);
    return same;
}

static void nest_cb(const void *key, size_t klen, uint64_t seq, const crdt_obj_t *delta,
                    uint64_t origin, void *ud)
{
    (void)seq, (void)origin;
    nest_ctx_t *c = ud;
    c->calls++;
    if (c->depth > 0)
        return;
    if (!delta_is(delta, &c->want))
        c->wrong++;
    if (klen == 2 && !memcmp(key, "t0", 2) && c->calls % 3 == 0) {
        c->depth++;
        char m[16];
        int n = snprintf(m, sizeof(m), "in%d", c->calls);
        crdt_mut_t w = {.type = CRDT_TIMELINE, .kind = CRDT_MUT_ADD, .bytes = m,
                        .len = (size_t)n, .score = 1e6 + c->calls};
        c->nested += crdt_replica_write(c->r, "t9", 2, &w, NULL) == 1;
        c->depth--;
        if (!delta_is(delta, &c->want)) /* the delta shown is still this write's */
            c->wrong++;
    }
}

/* crdt_replica_get_many gives what crdt_replica_get gives, key by key: present and absent keys,
 * the empty key, repeats, more keys than one group of 16, and pending keys of a lazy load (which
 * it joins, as a get does). */
static void test_get_many(void)
{
    enum { NK = 200, NQ = 45 };
    const char *dir = fresh_dir("getmany");
    crdt_replica_t *r = open_dir(dir, CRDT_FSYNC_NO, 1);
    if (!r) {
        fail("get_many: open");
        return;
    }
    rng_t g = {99};
    random_writes(r, &g, 5000, NK);
    for (int pass = 0; pass < 2; pass++) {
        char names[NQ][16];
        crdt_bytes_t keys[NQ];
        const crdt_obj_t *got[NQ];
        for (int i = 0; i < NQ; i++) {
            /* every third one absent (beyond NK), one empty, one repeated */
            int k = i % 3 == 2 ? NK + i : (int)below(&g, NK);
            keys[i] = (crdt_bytes_t){names[i], key_of(k, names[i])};
        }
        keys[7] = (crdt_bytes_t){"", 0};
        keys[20] = keys[4];
        size_t pending = crdt_replica_keys_loading(r);
        crdt_replica_get_many(r, keys, NQ, got);
        size_t joined = pending - crdt_replica_keys_loading(r);
        int wrong = 0, present = 0;
        for (int i = 0; i < NQ; i++) {
            const crdt_obj_t *one = crdt_replica_get(r, keys[i].data, keys[i].len);
            wrong += got[i] != one;
            present += one != NULL;
        }
        ok(!wrong && present > NQ / 2 && present < NQ,
           "get_many%s: %d keys (%d present) as crdt_replica_get gives them",
           pass ? " during a lazy load" : "", NQ, present);
        if (pass)
            ok(pending == NK && joined > 0 && joined <= (size_t)present,
               "get_many joins the pending keys it reads (%zu of %zu)", joined, pending);
        crdt_replica_get_many(r, keys, 0, got); /* nothing to do, nothing read */
        if (pass == 0) {
            crdt_replica_close(r);
            r = open_loading(dir, 0);
            if (!r) {
                fail("get_many: reopen");
                return;
            }
        }
    }
    crdt_replica_close(r);
}

static void test_timeline_writes(void)
{
    const char *dir = fresh_dir("tlwrites");
    crdt_replica_t *r = open_dir(dir, CRDT_FSYNC_NO, 1);
    ok(r != NULL, "timeline writes: opens");
    if (!r)
        return;
    nest_ctx_t c = {.r = r};
    crdt_replica_set_listener(r, nest_cb, &c);
    rng_t g = {7};
    int changed = 0, bad = 0;
    for (int i = 0; i < 3000; i++) {
        char key[4], m[16];
        snprintf(key, sizeof(key), "t%d", (int)below(&g, 4));
        int n = snprintf(m, sizeof(m), "m%d", (int)below(&g, 30));
        c.want = (crdt_mut_t){.type = CRDT_TIMELINE,
                              .kind = below(&g, 5) ? CRDT_MUT_ADD : CRDT_MUT_REMOVE,
                              .bytes = m, .len = (size_t)n, .score = (double)(i / 4 + below(&g, 6))};
        int rc = crdt_replica_write(r, key, 2, &c.want, NULL);
        bad += rc < 0;
        changed += rc == 1;
    }
    ok(!bad && changed > 500 && c.nested > 50, "timeline writes: %d changed, %d nested in the "
       "listener", changed, c.nested);
    is_int(c.wrong, 0, "timeline writes: every delta shown is its write's, nested or not");
    crdt_mut_t bad_kind = {.type = CRDT_TIMELINE, .kind = CRDT_MUT_INCR, .n = 1};
    is_int(crdt_replica_write(r, "t1", 2, &bad_kind, NULL), CRDT_EINVAL,
           "timeline writes: an increment of a timeline is refused");
    is_int(crdt_replica_flush(r), 0, "timeline writes: flushed");
    crdt_replica_set_listener(r, NULL, NULL);
    /* reopen the directory after close: the log replays to the state the writes made */
    crdt_replica_t *mem = open_dir(NULL, CRDT_FSYNC_NO, 1);
    cmp_ctx_t cc = {r, 0, NULL};
    /* copy r's state into mem by merging, so r can be closed and compared after reopening */
    int copied = 0;
    for (int k = 0; k < 10; k++) {
        char key[4];
        snprintf(key, sizeof(key), "t%d", k);
        const crdt_obj_t *o = crdt_replica_get(r, key, 2);
        if (o && crdt_replica_apply(mem, key, 2, o, CRDT_ORIGIN_LOCAL, NULL) >= 0)
            copied++;
    }
    crdt_replica_close(r);
    r = open_dir(dir, CRDT_FSYNC_NO, 1);
    ok(r != NULL && copied == 5, "timeline writes: reopens (%d keys)", copied);
    if (r) {
        cc.other = r;
        crdt_replica_foreach(mem, cmp_key_cb, &cc);
        is_int(cc.diffs, 0, "timeline writes: the log replays to the same state");
        crdt_replica_close(r);
    }
    crdt_replica_close(mem);
}

int main(void)
{
    snprintf(root, sizeof(root), "/tmp/test_replica.XXXXXX");
    if (!mkdtemp(root))
        bail_out("mkdtemp: %s", strerror(errno));
    setvbuf(stdout, NULL, _IONBF, 0);
    test_types_in_memory();
    test_timeline_writes();
    test_get_many();
    test_restart_replays();
    test_snapshot();
    test_torn_tail();
    test_corruption();
    test_lock();
    test_durable_seq();
    test_io_error();
    test_feed();
    test_convergence();
    test_crash();
    test_replay_equals_merging();
    test_intact_but_undecodable();
    test_lazy_load();
    test_index();
    test_crc_paths();
    test_clock_receive();
    static const char *subs[] = {"clock",   "restart",     "snapshot", "torn",  "corrupt", "lock",
                                 "always",  "everysec",    "no",       "ioerr", "feed",    "crash",
                                 "merging", "undecodable", "lazy",     "index"};
    for (size_t i = 0; i < sizeof(subs) / sizeof(*subs); i++) {
        char p[128];
        snprintf(p, sizeof(p), "%s/%s", root, subs[i]);
        rm_dir(p);
    }
    rmdir(root);
    return done_testing();
}
