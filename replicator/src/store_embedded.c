/* store_embedded.c - the embedded store: crdt_store_t over a crdt_replica_t, completing at once */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "crdt_store.h"
#include "store_rsx.h"

#define MARK_MAX (1u << 20) /* a mark is small metadata: refuse to load a larger file */

typedef struct mem_mark {
    char name[65];
    uint8_t *p;
    size_t n;
    struct mem_mark *next;
} mem_mark_t;

typedef struct emb_store {
    crdt_store_t base;
    crdt_replica_t *r;
    bool owns;
    uint64_t durable_told; /* the durable seq the last durable event reported */
    mem_mark_t *marks;     /* marks of a replica without a data directory */
    store_rsx_t *rsx;      /* the anti-entropy index, built at the first session */
    int rsx_sessions;      /* sessions borrowing it: it is refreshed only when none does */
} emb_store_t;

struct crdt_store_rsx {
    crdt_rsx_session_t *s;
    crdt_buf_t reply;
};

static emb_store_t *emb(crdt_store_t *st)
{
    return (emb_store_t *)st;
}

static const emb_store_t *cemb(const crdt_store_t *st)
{
    return (const emb_store_t *)st;
}

static void on_replica_change(const void *key, size_t klen, uint64_t seq, const crdt_obj_t *delta,
                              uint64_t origin, void *ud)
{
    emb_store_t *e = ud;
    if (e->base.ev.change)
        e->base.ev.change(e->base.ev.ud, key, klen, seq, delta, origin);
}

static void tell_durable(emb_store_t *e, bool always)
{
    uint64_t d = crdt_replica_durable_seq(e->r);
    if ((always || d != e->durable_told) && e->base.ev.durable) {
        e->durable_told = d;
        e->base.ev.durable(e->base.ev.ud, d);
    }
}

static void emb_close(crdt_store_t *st)
{
    emb_store_t *e = emb(st);
    crdt_replica_set_listener(e->r, NULL, NULL);
    store_rsx_free(e->rsx);
    if (e->owns)
        crdt_replica_close(e->r);
    for (mem_mark_t *m = e->marks, *nx; m; m = nx) {
        nx = m->next;
        free(m->p);
        free(m);
    }
    free(e);
}

static void emb_get(crdt_store_t *st, const void *key, size_t klen, crdt_store_get_cb cb, void *ud)
{
    cb(ud, 0, crdt_replica_get(emb(st)->r, key, klen));
}

static void emb_get_many(crdt_store_t *st, const crdt_bytes_t *keys, size_t n,
                         crdt_store_get_many_cb cb, void *ud)
{
    const crdt_obj_t *small[16] = {0};
    const crdt_obj_t **objs = n <= 16 ? small : malloc(n * sizeof(*objs));
    if (!objs) {
        cb(ud, CRDT_ENOMEM, NULL, 0);
        return;
    }
    crdt_replica_get_many(emb(st)->r, keys, n, objs);
    cb(ud, 0, objs, n);
    if (objs != small)
        free(objs);
}

static void emb_write(crdt_store_t *st, const void *key, size_t klen, const crdt_mut_t *m,
                      crdt_store_write_cb cb, void *ud)
{
    uint64_t seq = 0;
    int rc = crdt_replica_write(emb(st)->r, key, klen, m, &seq);
    cb(ud, rc, rc > 0 ? seq : 0);
}

static void emb_apply(crdt_store_t *st, const void *key, size_t klen, const crdt_obj_t *delta,
                      uint64_t origin, crdt_store_write_cb cb, void *ud)
{
    uint64_t seq = 0;
    int rc = crdt_replica_apply(emb(st)->r, key, klen, delta, origin, &seq);
    cb(ud, rc, rc > 0 ? seq : 0);
}

static void emb_changes(crdt_store_t *st, uint64_t since, size_t limit, crdt_feed_cb each,
                        crdt_store_done_cb done, void *ud)
{
    uint64_t next = since;
    int rc = crdt_replica_changes(emb(st)->r, since, limit, each, ud, &next);
    done(ud, rc > 0 ? 0 : rc, next);
}

typedef struct scan_ctx {
    crdt_store_key_cb each;
    void *ud;
} scan_ctx_t;

static int scan_cb(const void *key, size_t klen, const crdt_obj_t *o, void *ud)
{
    scan_ctx_t *c = ud;
    if (crdt_key_internal(key, klen))
        return 0; /* bookkeeping, not data: scans list data keys only */
    return c->each(c->ud, key, klen, o);
}

static void emb_scan(crdt_store_t *st, uint64_t cursor, size_t limit, crdt_store_key_cb each,
                     crdt_store_done_cb done, void *ud)
{
    scan_ctx_t c = {each, ud};
    uint64_t next = 0;
    crdt_replica_scan(emb(st)->r, cursor, limit, scan_cb, &c, &next);
    done(ud, 0, next);
}

typedef struct list_ctx {
    crdt_store_name_cb each;
    void *ud;
} list_ctx_t;

static int list_cb(const void *key, size_t klen, const crdt_obj_t *o, void *ud)
{
    (void)o;
    list_ctx_t *c = ud;
    return c->each(c->ud, key, klen);
}

static void emb_list_keys(crdt_store_t *st, const void *prefix, size_t plen, const void *after,
                          size_t alen, size_t limit, crdt_store_name_cb each,
                          crdt_store_done_cb done, void *ud)
{
    list_ctx_t c = {each, ud};
    bool more = false;
    int rc =
        crdt_replica_list_keys(emb(st)->r, prefix, plen, after, alen, limit, list_cb, &c, &more);
    done(ud, rc < 0 ? rc : 0, more ? 1 : 0);
}

static void emb_fingerprint(crdt_store_t *st, const void *key, size_t klen, crdt_store_fp_cb cb,
                            void *ud)
{
    uint64_t fp = 0;
    int rc = crdt_replica_key_fingerprint(emb(st)->r, key, klen, &fp);
    cb(ud, rc, fp);
}

/* ---- marks: "mark-<name>" files in the data directory, replaced by rename ------------------- */

typedef struct types_ctx {
    crdt_store_types_cb cb;
    void *ud;
} types_ctx_t;

static void types_got(void *ud, int rc, const crdt_obj_t *const *objs, size_t n)
{
    types_ctx_t c = *(types_ctx_t *)ud;
    free(ud);
    if (rc < 0) {
        c.cb(c.ud, rc, NULL, 0);
        return;
    }
    crdt_type_t one[16] = {0};
    crdt_type_t *t = n <= 16 ? one : malloc(n * sizeof(*t));
    if (!t) {
        c.cb(c.ud, CRDT_ENOMEM, NULL, 0);
        return;
    }
    for (size_t i = 0; i < n; i++)
        t[i] = objs[i] ? crdt_obj_type(objs[i]) : (crdt_type_t)0;
    c.cb(c.ud, 0, t, n);
    if (t != one)
        free(t);
}

void crdt_store_types(crdt_store_t *st, const crdt_bytes_t *keys, size_t n, crdt_store_types_cb cb,
                      void *ud)
{
    if (st->ops->types) {
        st->ops->types(st, keys, n, cb, ud);
        return;
    }
    types_ctx_t *c = malloc(sizeof(*c));
    if (!c) {
        cb(ud, CRDT_ENOMEM, NULL, 0);
        return;
    }
    *c = (types_ctx_t){cb, ud};
    crdt_store_get_many(st, keys, n, types_got, c);
}

bool crdt_store_mark_name_ok(const char *name)
{
    size_t n = name ? strlen(name) : 0;
    if (n == 0 || n > 64 || name[0] == '.')
        return false;
    for (size_t i = 0; i < n; i++) {
        char c = name[i];
        if (!((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '.' || c == '_' || c == '-'))
            return false;
    }
    return true;
}

static mem_mark_t *mem_mark(emb_store_t *e, const char *name)
{
    for (mem_mark_t *m = e->marks; m; m = m->next)
        if (strcmp(m->name, name) == 0)
            return m;
    return NULL;
}

static void emb_mark_get(crdt_store_t *st, const char *name, crdt_store_mark_cb cb, void *ud)
{
    emb_store_t *e = emb(st);
    if (!crdt_store_mark_name_ok(name)) {
        cb(ud, CRDT_EINVAL, NULL, 0);
        return;
    }
    const char *dir = crdt_replica_dir(e->r);
    if (!dir) {
        mem_mark_t *m = mem_mark(e, name);
        cb(ud, 0, m ? m->p : NULL, m ? m->n : 0);
        return;
    }
    char path[4200];
    snprintf(path, sizeof(path), "%s/mark-%s", dir, name);
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        cb(ud, errno == ENOENT ? 0 : CRDT_EIO, NULL, 0);
        return;
    }
    struct stat sb;
    uint8_t *buf = NULL;
    int rc = CRDT_EIO;
    if (fstat(fd, &sb) == 0 && sb.st_size >= 0 && (uint64_t)sb.st_size <= MARK_MAX) {
        size_t n = (size_t)sb.st_size, got = 0;
        buf = malloc(n ? n : 1);
        if (!buf) {
            rc = CRDT_ENOMEM;
        } else {
            while (got < n) {
                ssize_t k = read(fd, buf + got, n - got);
                if (k <= 0)
                    break;
                got += (size_t)k;
            }
            if (got == n) {
                close(fd);
                cb(ud, 0, buf, n);
                free(buf);
                return;
            }
        }
    }
    close(fd);
    free(buf);
    cb(ud, rc, NULL, 0);
}

static int write_file_atomic(const char *dir, const char *name, const void *p, size_t n)
{
    char path[4200], tmp[4220];
    snprintf(path, sizeof(path), "%s/mark-%s", dir, name);
    snprintf(tmp, sizeof(tmp), "%s.tmp", path);
    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0)
        return CRDT_EIO;
    const uint8_t *b = p;
    size_t put = 0;
    while (put < n) {
        ssize_t k = write(fd, b + put, n - put);
        if (k <= 0)
            break;
        put += (size_t)k;
    }
    bool ok = put == n && fdatasync(fd) == 0;
    ok = close(fd) == 0 && ok;
    if (!ok || rename(tmp, path) != 0) {
        unlink(tmp);
        return CRDT_EIO;
    }
    int dfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dfd >= 0) {
        fsync(dfd);
        close(dfd);
    }
    return 0;
}

static void emb_mark_put(crdt_store_t *st, const char *name, const void *p, size_t n,
                         crdt_store_status_cb cb, void *ud)
{
    emb_store_t *e = emb(st);
    if (!crdt_store_mark_name_ok(name) || n > MARK_MAX || (!p && n)) {
        if (cb)
            cb(ud, CRDT_EINVAL);
        return;
    }
    const char *dir = crdt_replica_dir(e->r);
    int rc = 0;
    if (dir) {
        rc = write_file_atomic(dir, name, p, n);
    } else {
        mem_mark_t *m = mem_mark(e, name);
        uint8_t *copy = malloc(n ? n : 1);
        if (!copy || (!m && !(m = calloc(1, sizeof(*m))))) {
            free(copy);
            rc = CRDT_ENOMEM;
        } else {
            if (!m->name[0]) {
                snprintf(m->name, sizeof(m->name), "%s", name);
                m->next = e->marks;
                e->marks = m;
            }
            if (n)
                memcpy(copy, p, n);
            free(m->p);
            m->p = copy;
            m->n = n;
        }
    }
    if (cb)
        cb(ud, rc);
}

/* ---- the rest ------------------------------------------------------------------------------- */

static uint64_t emb_last_seq(const crdt_store_t *st)
{
    return crdt_replica_last_seq(cemb(st)->r);
}

static uint64_t emb_durable_seq(const crdt_store_t *st)
{
    return crdt_replica_durable_seq(cemb(st)->r);
}

static uint64_t emb_node_id(const crdt_store_t *st)
{
    return crdt_replica_node_id(cemb(st)->r);
}

static int emb_hlc_now(crdt_store_t *st, crdt_hlc_ts_t *ts)
{
    return crdt_replica_hlc_now(emb(st)->r, ts);
}

static int emb_flush(crdt_store_t *st)
{
    emb_store_t *e = emb(st);
    int rc = crdt_replica_flush(e->r);
    tell_durable(e, rc < 0);
    return rc;
}

static void emb_tick(crdt_store_t *st, uint64_t now_ms)
{
    emb_store_t *e = emb(st);
    crdt_replica_tick(e->r, now_ms);
    tell_durable(e, false);
}

static const char *emb_last_error(const crdt_store_t *st)
{
    return crdt_replica_last_error(cemb(st)->r);
}

static void emb_stats(const crdt_store_t *st, crdt_store_stats_t *out)
{
    crdt_replica_stats_t rs;
    crdt_replica_stats(cemb(st)->r, &rs);
    memset(out, 0, sizeof(*out));
    out->keys = rs.keys;
    memcpy(out->keys_by_type, rs.keys_by_type, sizeof(out->keys_by_type));
    out->writes = rs.writes;
    out->noops = rs.noops;
    out->log_bytes = rs.log_bytes;
    out->fsyncs = rs.fsyncs;
    out->snapshots = rs.snapshots;
    out->fsync_seconds_total = rs.fsync_seconds_total;
    out->fsync_seconds_max = rs.fsync_seconds_max;
    out->snapshot_running = rs.snapshot_running;
    out->keys_loading = crdt_replica_keys_loading(cemb(st)->r);
    out->clock_ahead = rs.clock_ahead;
    out->internal_keys = rs.internal_keys;
}

/* ---- anti-entropy: sessions over store_rsx ------------------------------------------------- */

static store_rsx_t *emb_rsx(emb_store_t *e)
{
    if (!e->rsx)
        e->rsx = store_rsx_new(e->r);
    if (e->rsx && e->rsx_sessions == 0)
        store_rsx_refresh(e->rsx); /* on failure the index lags: the next session retries */
    return e->rsx;
}

static crdt_store_rsx_t *emb_rsx_open(crdt_store_t *st, bool initiator,
                                      const crdt_rsx_config_t *cfg)
{
    emb_store_t *e = emb(st);
    store_rsx_t *px = emb_rsx(e);
    crdt_store_rsx_t *s = px ? calloc(1, sizeof(*s)) : NULL;
    if (!s)
        return NULL;
    s->s = crdt_rsx_session_new(store_rsx_index(px), initiator, cfg);
    if (!s->s) {
        free(s);
        return NULL;
    }
    e->rsx_sessions++;
    return s;
}

static void emb_rsx_step(crdt_store_t *st, crdt_store_rsx_t *s, const void *msg, size_t n,
                         crdt_store_rsx_cb cb, void *ud)
{
    (void)st;
    crdt_store_rsx_result_t res;
    memset(&res, 0, sizeof(res));
    s->reply.len = 0;
    int rc = msg ? crdt_rsx_receive(s->s, msg, n, &s->reply, &res.done, &res.err)
                 : crdt_rsx_initiate(s->s, &s->reply);
    if (rc == 0) {
        res.reply = s->reply.data;
        res.reply_len = s->reply.len;
        if (res.done)
            res.ndiffs = crdt_rsx_session_diffs(s->s, &res.diffs);
        crdt_rsx_session_stats(s->s, &res.stats);
    } else if (!res.err.code) {
        res.err.code = rc;
    }
    cb(ud, rc, &res);
}

static void emb_rsx_close(crdt_store_t *st, crdt_store_rsx_t *s)
{
    emb_store_t *e = emb(st);
    crdt_rsx_session_free(s->s);
    crdt_buf_free(&s->reply);
    free(s);
    e->rsx_sessions--;
}

typedef struct rsx_keys_ctx {
    emb_store_t *e;
    crdt_store_key_cb each;
    void *ud;
} rsx_keys_ctx_t;

static int rsx_key_cb(const void *key, size_t klen, void *ud)
{
    rsx_keys_ctx_t *c = ud;
    const crdt_obj_t *o = crdt_replica_get(c->e->r, key, klen);
    return o ? c->each(c->ud, key, klen, o) : 0;
}

static void emb_rsx_keys(crdt_store_t *st, uint64_t id, crdt_store_key_cb each,
                         crdt_store_done_cb done, void *ud)
{
    emb_store_t *e = emb(st);
    rsx_keys_ctx_t c = {e, each, ud};
    int rc = e->rsx ? store_rsx_keys(e->rsx, id, rsx_key_cb, &c) : 0;
    if (done)
        done(ud, rc < 0 ? rc : 0, 0);
}

static size_t emb_rsx_items(crdt_store_t *st)
{
    store_rsx_t *px = emb_rsx(emb(st));
    return px ? crdt_rsx_index_count(store_rsx_index(px)) : 0;
}

static const crdt_store_ops_t emb_ops = {
    .name = "embedded",
    .close = emb_close,
    .get = emb_get,
    .get_many = emb_get_many,
    .write = emb_write,
    .apply = emb_apply,
    .changes = emb_changes,
    .scan = emb_scan,
    .fingerprint = emb_fingerprint,
    .mark_get = emb_mark_get,
    .mark_put = emb_mark_put,
    .last_seq = emb_last_seq,
    .durable_seq = emb_durable_seq,
    .node_id = emb_node_id,
    .hlc_now = emb_hlc_now,
    .flush = emb_flush,
    .tick = emb_tick,
    .last_error = emb_last_error,
    .stats = emb_stats,
    .rsx_open = emb_rsx_open,
    .rsx_step = emb_rsx_step,
    .rsx_close = emb_rsx_close,
    .rsx_keys = emb_rsx_keys,
    .rsx_items = emb_rsx_items,
    .list_keys = emb_list_keys,
};

crdt_store_t *crdt_store_embedded_wrap(crdt_replica_t *r)
{
    if (!r)
        return NULL;
    emb_store_t *e = calloc(1, sizeof(*e));
    if (!e)
        return NULL;
    e->base.ops = &emb_ops;
    e->r = r;
    e->durable_told = crdt_replica_durable_seq(r);
    crdt_replica_set_listener(r, on_replica_change, e);
    return &e->base;
}

crdt_store_t *crdt_store_embedded_open(const crdt_replica_config_t *cfg, crdt_error_t *err)
{
    crdt_replica_t *r = crdt_replica_open(cfg, err);
    if (!r)
        return NULL;
    crdt_store_t *st = crdt_store_embedded_wrap(r);
    if (!st) {
        crdt_replica_close(r);
        if (err && !err->code) {
            err->code = CRDT_ENOMEM;
            snprintf(err->text, sizeof(err->text), "out of memory");
        }
        return NULL;
    }
    emb(st)->owns = true;
    return st;
}

crdt_replica_t *crdt_store_embedded_replica(crdt_store_t *st)
{
    return st && st->ops == &emb_ops ? emb(st)->r : NULL;
}
