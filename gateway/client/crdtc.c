/* crdtc.c - crdt.v1 client: one libwebsockets client context, sessions, local replica, resume */
#include "crdtc.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <libwebsockets.h>

#include "crdt_json.h"
#include "crdt_v1.h"
#include "crdt_v1_bin.h"
#include "wsmsg.h"

#define CRDTC_PROTOCOL CRDT_V1_PROTOCOL
#define ID_RESERVE 1024 /* op ids reserved in the state file ahead of use */

typedef enum conn_state { ST_IDLE = 0, ST_CONNECTING, ST_OPEN, ST_READY } conn_state_t;

/* an apply not acknowledged yet: kept (and re-sent after a reconnect) until its ack or error */
typedef struct outmsg {
    struct outmsg *next;
    uint64_t id;   /* the op id */
    bool sent;     /* written on the current connection */
    gw_frame_t *f; /* its encoding */
} outmsg_t;

typedef struct sub {
    bool prefix;
    bool held;      /* a subscribed reply came for it: resume with since = cursor */
    uint64_t since; /* for the first subscribe, until held */
    uint64_t req_id;
    bool queued; /* req_id allocated while offline, to be used by the first send */
    size_t len;
    uint8_t *bytes;
} sub_t;

typedef struct entry {
    struct entry *next;
    uint64_t hash;
    crdt_obj_t *obj;
    size_t klen;
    uint8_t key[];
} entry_t;

struct crdtc_loop {
    struct lws_context *ctx;
    lws_sorted_usec_list_t sul_wake;
    crdtc_t *clients; /* list, for state-file writes after each round */
};

struct crdtc {
    crdtc_loop_t *loop;
    crdtc_t *next_client;
    char *host, *path, *token, *client_id, *state_file;
    int port;
    bool tls;
    bool binary; /* crdt.v1.bin: the server's data messages are binary */
    size_t max_message, max_pending;
    unsigned backoff_min_ms, backoff_max_ms, attempts;
    bool no_reconnect, user_closed, want_close, auth_refused;
    crdtc_callbacks_t cb;
    void *ud;

    struct lws *wsi;
    conn_state_t state;
    lws_sorted_usec_list_t sul_reconnect;
    int close_code;
    char close_reason[124];
    bool reading;

    /* input */
    gw_wsrx_t rx;
    uint64_t bytes_in;

    /* output: control messages, then applies */
    gw_wsq_t ctl;
    gw_wswriter_t w;
    outmsg_t *pend_head, *pend_tail;
    size_t npending, pending_bytes;

    /* ids, cursor, persistence */
    uint64_t next_id, reserved, cursor;
    uint64_t node; /* the node the cursor belongs to, 0: unknown */
    bool dirty;
    sub_t *subs;
    size_t nsubs, subs_cap;
    sub_t *prev; /* held in an earlier run (state file) */
    size_t nprev;

    /* local replica */
    entry_t **buckets;
    size_t nbuckets, nentries;
    crdt_hlc_t hlc;
    uint64_t replica_id;
    uint32_t timeline_max_size;
};

const char *crdtc_strerror(int err)
{
    switch (err) {
    case CRDTC_OK: return "ok";
    case CRDTC_ENOMEM: return "out of memory";
    case CRDTC_EINVAL: return "invalid argument";
    case CRDTC_ETYPE: return "the local replica holds another type under that key";
    case CRDTC_EFULL: return "too many unacknowledged applies";
    case CRDTC_EIO: return "state file error";
    case CRDTC_ECONN: return "cannot connect";
    default: return crdt_strerror(err);
    }
}

static uint64_t wall_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (uint64_t)ts.tv_sec * 1000000u + (uint64_t)ts.tv_nsec / 1000u;
}

static char *dupstr(const char *s)
{
    return s ? strdup(s) : NULL;
}

/* ---- local replica: a chained hash table ---------------------------------------------------- */

static entry_t *find_entry(const crdtc_t *c, const void *key, size_t klen, uint64_t h)
{
    if (!c->nbuckets)
        return NULL;
    for (entry_t *e = c->buckets[h & (c->nbuckets - 1)]; e; e = e->next)
        if (e->hash == h && e->klen == klen && !memcmp(e->key, key, klen))
            return e;
    return NULL;
}

static int grow_buckets(crdtc_t *c)
{
    size_t n = c->nbuckets ? c->nbuckets * 2 : 64;
    entry_t **b = calloc(n, sizeof(*b));
    if (!b)
        return CRDTC_ENOMEM;
    for (size_t i = 0; i < c->nbuckets; i++)
        for (entry_t *e = c->buckets[i], *nx; e; e = nx) {
            nx = e->next;
            e->next = b[e->hash & (n - 1)];
            b[e->hash & (n - 1)] = e;
        }
    free(c->buckets);
    c->buckets = b;
    c->nbuckets = n;
    return 0;
}

/* Adds key -> obj (obj is stolen on success). */
static entry_t *add_entry(crdtc_t *c, const void *key, size_t klen, uint64_t h, crdt_obj_t *obj)
{
    if (c->nentries >= c->nbuckets && grow_buckets(c))
        return NULL;
    entry_t *e = malloc(sizeof(*e) + klen);
    if (!e)
        return NULL;
    e->hash = h;
    e->obj = obj;
    e->klen = klen;
    memcpy(e->key, key, klen);
    e->next = c->buckets[h & (c->nbuckets - 1)];
    c->buckets[h & (c->nbuckets - 1)] = e;
    c->nentries++;
    return e;
}

/* Joins o (borrowed) into the local object of key. A state of another type than the local one
 * replaces it when `authoritative` (the server holds that type), else CRDTC_ETYPE. */
static int join_local(crdtc_t *c, const void *key, size_t klen, const crdt_obj_t *o,
                      bool authoritative, entry_t **out)
{
    uint64_t h = crdt_hash64(key, klen, 0x63726474u);
    entry_t *e = find_entry(c, key, klen, h);
    if (e && crdt_obj_type(e->obj) != crdt_obj_type(o)) {
        if (!authoritative)
            return CRDTC_ETYPE;
        crdt_obj_t *copy = crdt_obj_clone(o);
        if (!copy)
            return CRDTC_ENOMEM;
        crdt_obj_free(e->obj);
        e->obj = copy;
    } else if (e) {
        if (crdt_obj_merge(e->obj, o) < 0)
            return CRDTC_ENOMEM;
    } else {
        /* a timeline first seen as a delta takes the bound local timelines have (a delta carries
         * none), so its encoding matches the server's bounded one */
        crdt_obj_t *copy = NULL;
        if (crdt_obj_type(o) == CRDT_TIMELINE && !crdt_timeline_max_size(o)) {
            copy = crdt_timeline_new(c->timeline_max_size);
            if (copy && crdt_obj_merge(copy, o) < 0) {
                crdt_obj_free(copy);
                copy = NULL;
            }
        } else {
            copy = crdt_obj_clone(o);
        }
        if (!copy)
            return CRDTC_ENOMEM;
        if (!(e = add_entry(c, key, klen, h, copy))) {
            crdt_obj_free(copy);
            return CRDTC_ENOMEM;
        }
    }
    if (out)
        *out = e;
    return 0;
}

crdt_obj_t *crdtc_local(crdtc_t *c, const void *key, size_t klen, crdt_type_t create_type)
{
    uint64_t h = crdt_hash64(key, klen, 0x63726474u);
    entry_t *e = find_entry(c, key, klen, h);
    if (e)
        return create_type > 0 && crdt_obj_type(e->obj) != create_type ? NULL : e->obj;
    if (create_type <= 0 || !klen)
        return NULL;
    crdt_obj_t *o = create_type == CRDT_TIMELINE ? crdt_timeline_new(c->timeline_max_size)
                                                 : crdt_obj_new(create_type);
    if (!o)
        return NULL;
    if (!(e = add_entry(c, key, klen, h, o))) {
        crdt_obj_free(o);
        return NULL;
    }
    return o;
}

int crdtc_foreach(const crdtc_t *c,
                  int (*cb)(const void *key, size_t klen, const crdt_obj_t *o, void *ud), void *ud)
{
    for (size_t i = 0; i < c->nbuckets; i++)
        for (entry_t *e = c->buckets[i]; e; e = e->next) {
            int r = cb(e->key, e->klen, e->obj, ud);
            if (r)
                return r;
        }
    return 0;
}

size_t crdtc_local_count(const crdtc_t *c)
{
    return c->nentries;
}

uint64_t crdtc_replica_id(const crdtc_t *c)
{
    return c->replica_id;
}

int crdtc_hlc_now(crdtc_t *c, crdt_hlc_ts_t *ts)
{
    return crdt_hlc_tick(&c->hlc, crdt_wall_ms(), ts) ? CRDTC_EINVAL : 0;
}

static uint64_t juint(json_t *o, const char *name)
{
    json_t *v = json_object_get(o, name);
    return json_is_integer(v) && json_integer_value(v) > 0 ? (uint64_t)json_integer_value(v) : 0;
}

/* ---- the state file: {"client","cursor","node","next_id","keys":[..],"prefixes":[..]} --------
 * keys and prefixes in the JSON form of byte strings (a string when text, else {"base64":..}) */

static int save_state(crdtc_t *c, bool sync)
{
    if (!c->state_file)
        return 0;
    json_t *j = json_object(), *keys = json_array(), *prefixes = json_array();
    if (!j || !keys || !prefixes) {
        json_decref(j), json_decref(keys), json_decref(prefixes);
        return CRDTC_ENOMEM;
    }
    json_object_set_new(j, "client", json_string(c->client_id));
    json_object_set_new(j, "cursor", json_integer((json_int_t)c->cursor));
    json_object_set_new(j, "node", json_integer((json_int_t)c->node));
    json_object_set_new(j, "next_id", json_integer((json_int_t)c->reserved));
    for (size_t i = 0; i < c->nsubs; i++) {
        if (!c->subs[i].held)
            continue;
        json_array_append_new(c->subs[i].prefix ? prefixes : keys,
                              crdt_json_bytes(c->subs[i].len ? c->subs[i].bytes : (uint8_t *)"",
                                              c->subs[i].len));
    }
    json_object_set_new(j, "keys", keys);
    json_object_set_new(j, "prefixes", prefixes);
    char *text = json_dumps(j, JSON_COMPACT);
    json_decref(j);
    if (!text)
        return CRDTC_ENOMEM;
    size_t n = strlen(c->state_file) + 8;
    char *tmp = malloc(n);
    int rc = CRDTC_EIO;
    if (tmp) {
        snprintf(tmp, n, "%s.tmp", c->state_file);
        int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
        if (fd >= 0) {
            size_t len = strlen(text);
            bool okw = write(fd, text, len) == (ssize_t)len && write(fd, "\n", 1) == 1;
            if (okw && sync)
                okw = fsync(fd) == 0;
            if (close(fd) == 0 && okw && rename(tmp, c->state_file) == 0)
                rc = 0;
        }
        if (rc)
            unlink(tmp);
        free(tmp);
    }
    free(text);
    if (!rc)
        c->dirty = false;
    return rc;
}

static int bytes_field(json_t *v, uint8_t **out, size_t *len)
{
    const char *why;
    return crdt_json_get_bytes(v, SIZE_MAX, out, len, &why) ? -1 : 0;
}

static int load_state(crdtc_t *c)
{
    json_error_t je;
    FILE *f = fopen(c->state_file, "r");
    if (!f)
        return errno == ENOENT ? 0 : CRDTC_EIO;
    json_t *j = json_loadf(f, 0, &je);
    fclose(f);
    if (!json_is_object(j)) {
        json_decref(j);
        return CRDTC_EIO;
    }
    json_t *cur = json_object_get(j, "cursor"), *nid = json_object_get(j, "next_id");
    c->node = juint(j, "node");
    if (json_is_integer(cur) && json_integer_value(cur) >= 0)
        c->cursor = (uint64_t)json_integer_value(cur);
    if (json_is_integer(nid) && json_integer_value(nid) > 0)
        c->reserved = (uint64_t)json_integer_value(nid);
    const char *names[2] = {"keys", "prefixes"};
    for (int k = 0; k < 2; k++) {
        json_t *a = json_object_get(j, names[k]), *v;
        size_t i;
        if (!json_is_array(a))
            continue;
        json_array_foreach(a, i, v)
        {
            sub_t s = {.prefix = k == 1};
            if (bytes_field(v, &s.bytes, &s.len))
                continue;
            sub_t *p = realloc(c->prev, (c->nprev + 1) * sizeof(*p));
            if (!p) {
                free(s.bytes);
                break;
            }
            c->prev = p;
            c->prev[c->nprev++] = s;
        }
    }
    json_decref(j);
    return 0;
}

/* The next op / request id: strictly increasing across runs. Ids start at the wall clock in
 * microseconds (so a program without a state file, or whose state file was lost, still moves past
 * the server's high-water mark) or the state file's reservation, whichever is larger. */
static int64_t next_id(crdtc_t *c)
{
    if (c->next_id >= c->reserved && c->state_file) {
        uint64_t old = c->reserved;
        c->reserved = c->next_id + ID_RESERVE;
        if (save_state(c, true)) {
            c->reserved = old;
            return CRDTC_EIO;
        }
    }
    return (int64_t)c->next_id++;
}

/* ---- output --------------------------------------------------------------------------------- */

/* A new frame holding m's encoding, or NULL. */
static gw_frame_t *encode(const crdt_v1_msg_t *m)
{
    crdt_buf_t b = {0};
    if (gw_frame_buf_start(&b, 128) || crdt_v1_encode(m, &b)) {
        crdt_buf_free(&b);
        return NULL;
    }
    return gw_frame_adopt(&b);
}

static void want_write(crdtc_t *c)
{
    if (c->wsi && c->state >= ST_OPEN)
        lws_callback_on_writable(c->wsi);
}

/* Queues a control message (hello, subscribe, unsubscribe). */
static int queue_ctl(crdtc_t *c, const crdt_v1_msg_t *m)
{
    if (gw_wsq_push(&c->ctl, encode(m), 0, 0, 0))
        return CRDTC_ENOMEM;
    want_write(c);
    return 0;
}

static void free_list(outmsg_t *m)
{
    while (m) {
        outmsg_t *nx = m->next;
        gw_frame_unref(m->f);
        free(m);
        m = nx;
    }
}

/* The first apply not yet written on this connection. */
static outmsg_t *next_unsent(crdtc_t *c)
{
    for (outmsg_t *m = c->pend_head; m; m = m->next)
        if (!m->sent)
            return m;
    return NULL;
}

/* Everything queued, control messages first, goes out framed and masked by us into one write
 * (gw_ws_batch_*: one SSL_write and TLS record, one send) of at most GW_WS_BATCH_MAX bytes (a
 * message bigger than that goes alone), instead of one lws_write, and one record, per message:
 * an application that makes many applies in a turn pays the per-record cost once. */
static int on_writeable(crdtc_t *c)
{
    if (c->want_close) {
        /* our own close: the code close_cb reports is the one we sent, not 1006 */
        lws_close_reason(c->wsi, LWS_CLOSE_STATUS_NORMAL, (unsigned char *)"bye", 3);
        c->close_code = LWS_CLOSE_STATUS_NORMAL;
        snprintf(c->close_reason, sizeof(c->close_reason), "bye");
        return -1;
    }
    if (lws_send_pipe_choked(c->wsi)) {
        lws_callback_on_writable(c->wsi);
        return 0;
    }
    gw_ws_batch_begin(&c->w);
    bool more = false;
    outmsg_t *m = NULL;
    for (;;) {
        const gw_wsq_item_t *it = gw_wsq_peek(&c->ctl);
        const gw_frame_t *f;
        if (it) {
            f = it->f;
        } else {
            /* the applies written on this connection are a prefix of the list (sent in order,
             * appended at its tail, all unsent again on reconnect): go on after the last one */
            m = m ? m->next : (c->state == ST_READY ? next_unsent(c) : NULL);
            if (!m)
                break;
            f = m->f;
        }
        size_t have = gw_ws_batch_len(&c->w);
        if (have && have + 14 + f->len > GW_WS_BATCH_MAX) {
            more = true;
            break;
        }
        /* copied into the batch: a kept apply's encoding is never masked in place */
        if (gw_ws_batch_add(&c->w, NULL, 0, f))
            return -1;
        if (it) {
            gw_wsq_item_t done;
            gw_wsq_pop(&c->ctl, &done);
            gw_frame_unref(done.f);
        } else {
            m->sent = true;
        }
    }
    if (gw_ws_batch_write(&c->w, c->wsi))
        return -1;
    if (more)
        lws_callback_on_writable(c->wsi);
    return 0;
}

/* Removes the pending apply `id`; true if it was there. */
static bool drop_pending(crdtc_t *c, uint64_t id)
{
    outmsg_t *prev = NULL;
    for (outmsg_t *m = c->pend_head; m; prev = m, m = m->next) {
        if (m->id != id)
            continue;
        if (prev)
            prev->next = m->next;
        else
            c->pend_head = m->next;
        if (c->pend_tail == m)
            c->pend_tail = prev;
        c->npending--;
        c->pending_bytes -= m->f->len;
        gw_frame_unref(m->f);
        free(m);
        return true;
    }
    return false;
}

/* ---- subscriptions -------------------------------------------------------------------------- */

static int send_subscribe(crdtc_t *c, sub_t *s)
{
    int64_t id = s->queued ? (int64_t)s->req_id : next_id(c);
    if (id < 0)
        return (int)id;
    s->req_id = (uint64_t)id;
    s->queued = false;
    crdt_v1_topic_t t = {s->bytes, s->len, s->prefix};
    crdt_v1_msg_t m = {.type = CRDT_V1_SUBSCRIBE,
                       .has_id = true,
                       .id = (uint64_t)id,
                       .topics = &t,
                       .ntopics = 1,
                       .has_since = true,
                       .since = s->held ? c->cursor : s->since};
    return queue_ctl(c, &m);
}

static sub_t *find_sub(crdtc_t *c, const void *p, size_t n, bool prefix)
{
    for (size_t i = 0; i < c->nsubs; i++)
        if (c->subs[i].prefix == prefix && c->subs[i].len == n &&
            (!n || !memcmp(c->subs[i].bytes, p, n)))
            return &c->subs[i];
    return NULL;
}

static int64_t subscribe(crdtc_t *c, const void *p, size_t n, bool prefix, int64_t since)
{
    if ((!prefix && !n) || since < CRDTC_SINCE_AUTO)
        return CRDTC_EINVAL;
    sub_t *s = find_sub(c, p, n, prefix);
    if (!s) {
        if (c->nsubs == c->subs_cap) {
            size_t cap = c->subs_cap ? c->subs_cap * 2 : 8;
            sub_t *ns = realloc(c->subs, cap * sizeof(*ns));
            if (!ns)
                return CRDTC_ENOMEM;
            c->subs = ns;
            c->subs_cap = cap;
        }
        s = &c->subs[c->nsubs];
        memset(s, 0, sizeof(*s));
        if (!(s->bytes = malloc(n ? n : 1)))
            return CRDTC_ENOMEM;
        if (n)
            memcpy(s->bytes, p, n);
        s->len = n;
        s->prefix = prefix;
        c->nsubs++;
    }
    if (since == CRDTC_SINCE_AUTO) {
        bool was_held = s->held;
        for (size_t i = 0; !was_held && i < c->nprev; i++)
            was_held = c->prev[i].prefix == prefix && c->prev[i].len == n &&
                       (!n || !memcmp(c->prev[i].bytes, p, n));
        s->held = was_held;
        s->since = was_held ? c->cursor : 0;
    } else {
        s->held = false;
        s->since = (uint64_t)since;
    }
    if (c->state == ST_READY) {
        int r = send_subscribe(c, s);
        if (r)
            return r;
        return (int64_t)s->req_id;
    }
    /* the id is allocated now so the caller can match subscribed_cb on the first connect */
    int64_t id = next_id(c);
    if (id > 0) {
        s->req_id = (uint64_t)id;
        s->queued = true;
    }
    return id;
}

int64_t crdtc_subscribe(crdtc_t *c, const void *key, size_t klen, int64_t since)
{
    return subscribe(c, key, klen, false, since);
}

int64_t crdtc_subscribe_prefix(crdtc_t *c, const void *prefix, size_t plen, int64_t since)
{
    return subscribe(c, prefix, plen, true, since);
}

int crdtc_unsubscribe(crdtc_t *c, const void *key, size_t klen, bool prefix)
{
    sub_t *s = find_sub(c, key, klen, prefix);
    if (!s)
        return CRDTC_EINVAL;
    if (c->state == ST_READY) {
        int64_t id = next_id(c);
        crdt_v1_topic_t t = {(uint8_t *)key, klen, prefix};
        crdt_v1_msg_t m = {.type = CRDT_V1_UNSUBSCRIBE,
                           .has_id = true,
                           .id = (uint64_t)id,
                           .topics = &t,
                           .ntopics = 1};
        if (id > 0)
            queue_ctl(c, &m);
    }
    free(s->bytes);
    *s = c->subs[--c->nsubs];
    c->dirty = true;
    return 0;
}

/* ---- writes --------------------------------------------------------------------------------- */

/* Queues an apply of op (a REST-shaped op object) or frame (a libcrdt JSON frame); both borrowed.
 */
static int64_t queue_apply(crdtc_t *c, const void *key, size_t klen, const json_t *op,
                           const json_t *frame)
{
    int64_t id = next_id(c);
    if (id < 0)
        return id;
    crdt_v1_msg_t am = {.type = CRDT_V1_APPLY,
                        .has_id = true,
                        .id = (uint64_t)id,
                        .key = (uint8_t *)key,
                        .klen = klen,
                        .op = (json_t *)op,
                        .frame = (json_t *)frame};
    outmsg_t *m = calloc(1, sizeof(*m));
    if (!m || !(m->f = encode(&am))) {
        free(m);
        return CRDTC_ENOMEM;
    }
    m->id = (uint64_t)id;
    if (c->pending_bytes + m->f->len > c->max_pending) {
        free_list(m);
        return CRDTC_EFULL;
    }
    if (c->pend_tail)
        c->pend_tail->next = m;
    else
        c->pend_head = m;
    c->pend_tail = m;
    c->npending++;
    c->pending_bytes += m->f->len;
    if (c->state == ST_READY)
        want_write(c);
    return id;
}

int64_t crdtc_apply_op(crdtc_t *c, const void *key, size_t klen, const json_t *op)
{
    if (!klen || !json_is_object(op))
        return CRDTC_EINVAL;
    return queue_apply(c, key, klen, op, NULL);
}

int64_t crdtc_delete(crdtc_t *c, const void *key, size_t klen)
{
    json_t *op = json_pack("{s:s}", "op", "delete");
    if (!op)
        return CRDTC_ENOMEM;
    int64_t id = crdtc_apply_op(c, key, klen, op);
    json_decref(op);
    return id;
}

int64_t crdtc_apply_delta(crdtc_t *c, const void *key, size_t klen, const crdt_obj_t *delta)
{
    if (!klen || !delta)
        return CRDTC_EINVAL;
    int r = join_local(c, key, klen, delta, false, NULL);
    if (r)
        return r;
    json_t *frame = crdt_obj_to_json(delta);
    if (!frame)
        return CRDTC_ENOMEM;
    int64_t id = queue_apply(c, key, klen, NULL, frame);
    json_decref(frame);
    return id;
}

/* ---- input ---------------------------------------------------------------------------------- */

static void report_error(crdtc_t *c, uint64_t id, const char *code, const char *msg)
{
    if (c->cb.error_cb)
        c->cb.error_cb(c, id, code, msg, c->ud);
}

/* The most recent cursor is kept, not the largest: a catch-up that starts further back lowers it
 * until it is done (docs/protocol.md). */
static void set_cursor(crdtc_t *c, uint64_t cur)
{
    if (cur != c->cursor) {
        c->cursor = cur;
        c->dirty = true;
    }
}

static void on_welcome(crdtc_t *c, const crdt_v1_msg_t *m)
{
    c->state = ST_READY;
    c->attempts = 0;
    uint64_t node = m->node;
    if (c->node && node != c->node) {
        /* cursors are positions in one node's feed: on another node start over with full states */
        c->cursor = 0;
        for (size_t i = 0; i < c->nsubs; i++) {
            c->subs[i].held = false;
            c->subs[i].since = 0;
        }
    }
    if (node != c->node) {
        c->node = node;
        c->dirty = true;
    }
    crdtc_welcome_t w = {
        .node = node,
        .seq = m->seq,
        .expires = m->expires,
        .session = m->session ? m->session : "",
        .subject = m->subject ? m->subject : "",
        .max_message = m->limits.max_message,
        .max_subscriptions = m->limits.max_subscriptions,
        .send_queue = m->limits.send_queue,
        .idle_timeout = m->limits.idle_timeout,
    };
    /* subscriptions first (so nothing written below is missed), then the queued applies */
    for (size_t i = 0; i < c->nsubs; i++)
        send_subscribe(c, &c->subs[i]);
    for (outmsg_t *o = c->pend_head; o; o = o->next)
        o->sent = false;
    want_write(c);
    if (c->cb.welcome_cb)
        c->cb.welcome_cb(c, &w, c->ud);
}

static void on_change(crdtc_t *c, const crdt_v1_msg_t *m)
{
    entry_t *e = NULL;
    if (join_local(c, m->key, m->klen, m->obj, true, &e)) {
        report_error(c, 0, "protocol", "out of memory joining a change");
        return;
    }
    set_cursor(c, m->cursor);
    crdtc_change_t ch = {.key = m->key,
                         .klen = m->klen,
                         .seq = m->seq,
                         .cursor = c->cursor,
                         .full = m->full,
                         .obj = m->obj,
                         .head = e->obj,
                         .frame = m->frame};
    if (c->cb.change_cb)
        c->cb.change_cb(c, &ch, c->ud);
}

static void on_message(crdtc_t *c, const uint8_t *p, size_t n, bool binary)
{
    crdt_v1_msg_t m;
    crdt_v1_error_t e;
    if (binary ? crdt_v1_bin_decode(p, n, CRDT_V1_FROM_SERVER, NULL, &m, &e)
               : crdt_v1_decode((const char *)p, n, CRDT_V1_FROM_SERVER, NULL, &m, &e)) {
        char text[240];
        snprintf(text, sizeof(text), "%s%s%s", e.type ? crdt_v1_type_name(e.type) : "",
                 e.type ? ": " : "", e.text);
        report_error(c, 0, "protocol", text);
        return;
    }
    switch (m.type) {
    case CRDT_V1_CHANGE: on_change(c, &m); break;
    case CRDT_V1_ACK: {
        crdtc_ack_t a = {.id = m.id, .seq = m.seq, .applied = m.applied, .duplicate = m.duplicate};
        drop_pending(c, a.id);
        if (c->cb.ack_cb)
            c->cb.ack_cb(c, &a, c->ud);
        break;
    }
    case CRDT_V1_SUBSCRIBED:
        set_cursor(c, m.cursor);
        for (size_t i = 0; i < c->nsubs; i++)
            if (c->subs[i].req_id == m.id && !c->subs[i].held) {
                c->subs[i].held = true;
                c->dirty = true;
            }
        if (c->cb.subscribed_cb)
            c->cb.subscribed_cb(c, m.id, c->cursor, c->ud);
        break;
    case CRDT_V1_WELCOME: on_welcome(c, &m); break;
    case CRDT_V1_ERROR: {
        uint64_t id = m.has_id ? m.id : 0;
        if (id && !drop_pending(c, id)) {
            /* a refused subscription is not re-sent on reconnect */
            for (size_t i = 0; i < c->nsubs; i++)
                if (c->subs[i].req_id == id) {
                    free(c->subs[i].bytes);
                    c->subs[i] = c->subs[--c->nsubs];
                    break;
                }
        }
        report_error(c, id, m.code == CRDT_V1_E_OTHER ? m.code_name : crdt_v1_code_name(m.code),
                     m.message ? m.message : "");
        break;
    }
    default: break; /* pong, unsubscribed */
    }
    crdt_v1_msg_clear(&m);
}

static int on_receive(crdtc_t *c, struct lws *wsi, const void *in, size_t len)
{
    switch (gw_wsrx_receive(&c->rx, wsi, in, len)) {
    case GW_WSRX_MESSAGE:
        c->bytes_in += gw_wsrx_len(&c->rx);
        on_message(c, gw_wsrx_data(&c->rx), gw_wsrx_len(&c->rx), c->rx.binary);
        gw_wsrx_done(&c->rx);
        return 0;
    case GW_WSRX_TOO_LARGE:
        /* skipping a change would leave a hole behind a later cursor: drop the connection */
        report_error(c, 0, "too_large", "a message from the server over max_message");
        lws_close_reason(wsi, LWS_CLOSE_STATUS_MESSAGE_TOO_LARGE, NULL, 0);
        return -1;
    case GW_WSRX_WRONG_KIND:
        report_error(c, 0, "protocol", "a binary message (crdt.v1 uses text)");
        return 0;
    case GW_WSRX_ENOMEM: return -1;
    default: return 0;
    }
}

/* ---- connection ----------------------------------------------------------------------------- */

static void reconnect_cb(lws_sorted_usec_list_t *sul);

static void on_disconnected(crdtc_t *c)
{
    if (c->state == ST_IDLE)
        return;
    c->state = ST_IDLE;
    c->wsi = NULL;
    gw_wsrx_free(&c->rx);
    gw_wsq_clear(&c->ctl); /* hello and subscribes are rebuilt on connect */
    if (c->close_code == 4001 || c->close_code == 4003)
        c->auth_refused = true;
    bool again = !c->no_reconnect && !c->user_closed && !c->auth_refused;
    if (again) {
        unsigned ms = c->backoff_min_ms;
        for (unsigned i = 0; i < c->attempts && ms < c->backoff_max_ms; i++)
            ms *= 2;
        if (ms > c->backoff_max_ms)
            ms = c->backoff_max_ms;
        ms = ms / 2 + (unsigned)(rand() % (int)(ms / 2 + 1)); /* jitter: many clients, one server */
        c->attempts++;
        lws_sul_schedule(c->loop->ctx, 0, &c->sul_reconnect, reconnect_cb,
                         (lws_usec_t)ms * LWS_US_PER_MS);
    }
    if (c->dirty)
        save_state(c, false);
    if (c->cb.close_cb)
        c->cb.close_cb(c, c->close_code, c->close_reason, again, c->ud);
}

static int start_connect(crdtc_t *c)
{
    struct lws_client_connect_info ci;
    memset(&ci, 0, sizeof(ci));
    ci.context = c->loop->ctx;
    ci.address = c->host;
    ci.port = c->port;
    ci.path = c->path;
    ci.host = c->host;
    ci.origin = c->host;
    ci.protocol = c->binary ? CRDT_V1_BIN_PROTOCOL : CRDTC_PROTOCOL;
    ci.local_protocol_name = CRDTC_PROTOCOL;
    ci.opaque_user_data = c;
    ci.pwsi = &c->wsi;
    if (c->tls)
        ci.ssl_connection = LCCSCF_USE_SSL;
    c->state = ST_CONNECTING;
    c->close_code = 0;
    c->close_reason[0] = '\0';
    c->want_close = false;
    if (!lws_client_connect_via_info(&ci)) {
        /* may have been reported through CLIENT_CONNECTION_ERROR already */
        if (c->state == ST_CONNECTING)
            on_disconnected(c);
        return CRDTC_ECONN;
    }
    return 0;
}

static void reconnect_cb(lws_sorted_usec_list_t *sul)
{
    crdtc_t *c = lws_container_of(sul, crdtc_t, sul_reconnect);
    if (c->state == ST_IDLE && !c->user_closed)
        start_connect(c);
}

int crdtc_connect(crdtc_t *c)
{
    if (c->state != ST_IDLE)
        return 0;
    c->user_closed = false;
    c->auth_refused = false;
    lws_sul_schedule(c->loop->ctx, 0, &c->sul_reconnect, NULL, LWS_SET_TIMER_USEC_CANCEL);
    return start_connect(c);
}

void crdtc_disconnect(crdtc_t *c)
{
    c->user_closed = true;
    lws_sul_schedule(c->loop->ctx, 0, &c->sul_reconnect, NULL, LWS_SET_TIMER_USEC_CANCEL);
    if (c->wsi && c->state >= ST_OPEN) {
        c->want_close = true;
        lws_callback_on_writable(c->wsi);
    } else if (c->wsi) {
        lws_set_timeout(c->wsi, PENDING_TIMEOUT_USER_OK, LWS_TO_KILL_ASYNC);
    }
}

void crdtc_drop(crdtc_t *c)
{
    if (c->wsi)
        lws_set_timeout(c->wsi, PENDING_TIMEOUT_USER_OK, LWS_TO_KILL_ASYNC);
}

bool crdtc_ready(const crdtc_t *c)
{
    return c->state == ST_READY;
}

int crdtc_set_token(crdtc_t *c, const char *token)
{
    char *t = dupstr(token);
    if (token && !t)
        return CRDTC_ENOMEM;
    free(c->token);
    c->token = t;
    c->auth_refused = false;
    return 0;
}

void crdtc_set_reading(crdtc_t *c, bool reading)
{
    c->reading = reading;
    if (c->wsi && c->state >= ST_OPEN)
        lws_rx_flow_control(c->wsi, reading ? 1 : 0);
}

uint64_t crdtc_cursor(const crdtc_t *c)
{
    return c->cursor;
}

size_t crdtc_pending(const crdtc_t *c)
{
    return c->npending;
}

size_t crdtc_inflight(const crdtc_t *c)
{
    size_t n = 0;
    for (const outmsg_t *m = c->pend_head; m; m = m->next)
        n += m->sent;
    return n;
}

int crdtc_fd(const crdtc_t *c)
{
    return c->wsi && c->state >= ST_OPEN ? (int)lws_get_socket_fd(c->wsi) : -1;
}

uint64_t crdtc_bytes_in(const crdtc_t *c)
{
    return c->bytes_in;
}

int crdtc_last_close(const crdtc_t *c)
{
    return c->close_code;
}

size_t crdtc_rx_buffered(const crdtc_t *c)
{
    return c->rx.cap;
}

static int client_cb(struct lws *wsi, enum lws_callback_reasons reason, void *user, void *in,
                     size_t len)
{
    (void)user;
    crdtc_t *c = wsi ? lws_get_opaque_user_data(wsi) : NULL;
    if (!c)
        return 0;
    switch (reason) {
    case LWS_CALLBACK_CLIENT_ESTABLISHED: {
        c->wsi = wsi;
        c->state = ST_OPEN;
        crdt_v1_msg_t h = {.type = CRDT_V1_HELLO, .token = c->token, .cursor = c->cursor};
        memcpy(h.client, c->client_id, strlen(c->client_id) + 1);
        queue_ctl(c, &h);
        if (!c->reading)
            lws_rx_flow_control(wsi, 0);
        break;
    }
    case LWS_CALLBACK_CLIENT_RECEIVE: return on_receive(c, wsi, in, len);
    case LWS_CALLBACK_CLIENT_WRITEABLE: return on_writeable(c);
    case LWS_CALLBACK_WS_PEER_INITIATED_CLOSE:
        if (len >= 2) {
            const unsigned char *p = in;
            c->close_code = p[0] << 8 | p[1];
            size_t n =
                len - 2 < sizeof(c->close_reason) - 1 ? len - 2 : sizeof(c->close_reason) - 1;
            memcpy(c->close_reason, p + 2, n);
            c->close_reason[n] = '\0';
        }
        break;
    case LWS_CALLBACK_CLIENT_CONNECTION_ERROR:
        c->close_code = 0;
        snprintf(c->close_reason, sizeof(c->close_reason), "%s",
                 in ? (const char *)in : "connection failed");
        on_disconnected(c);
        break;
    case LWS_CALLBACK_CLIENT_CLOSED:
        if (!c->close_code)
            c->close_code = 1006;
        on_disconnected(c);
        break;
    default: break;
    }
    return 0;
}

/* ---- loop and lifecycle --------------------------------------------------------------------- */

static const struct lws_protocols client_protocols[] = {
    {CRDTC_PROTOCOL, client_cb, 0, 0, 0, NULL, 0},
    {NULL, NULL, 0, 0, 0, NULL, 0},
};

static crdtc_loop_t *loop_new(bool tls, const char *ca_file)
{
    crdtc_loop_t *l = calloc(1, sizeof(*l));
    if (!l)
        return NULL;
    lws_set_log_level(LLL_ERR, NULL);
    struct lws_context_creation_info info;
    memset(&info, 0, sizeof(info));
    info.port = CONTEXT_PORT_NO_LISTEN;
    info.protocols = client_protocols;
    info.options = LWS_SERVER_OPTION_DISABLE_IPV6;
    if (tls) {
        info.options |= LWS_SERVER_OPTION_DO_SSL_GLOBAL_INIT;
        if (ca_file) {
            info.options |= LWS_SERVER_OPTION_DISABLE_OS_CA_CERTS;
            info.client_ssl_ca_filepath = ca_file;
        }
    }
    info.gid = -1;
    info.uid = -1;
    l->ctx = lws_create_context(&info);
    if (!l->ctx) {
        free(l);
        return NULL;
    }
    return l;
}

crdtc_loop_t *crdtc_loop_new(void)
{
    return loop_new(false, NULL);
}

crdtc_loop_t *crdtc_loop_new_tls(const char *ca_file)
{
    return loop_new(true, ca_file);
}

void crdtc_loop_free(crdtc_loop_t *l)
{
    if (!l)
        return;
    lws_context_destroy(l->ctx);
    free(l);
}

static void wake_cb(lws_sorted_usec_list_t *sul)
{
    (void)sul;
}

int crdtc_loop_service(crdtc_loop_t *l, int timeout_ms)
{
    /* lws 4.1 waits until its next timer whatever timeout it is given: a timer bounds the wait */
    lws_sul_schedule(l->ctx, 0, &l->sul_wake, wake_cb,
                     (lws_usec_t)(timeout_ms > 0 ? timeout_ms : 0) * LWS_US_PER_MS);
    int r = lws_service(l->ctx, timeout_ms > 0 ? timeout_ms : -1);
    for (crdtc_t *c = l->clients; c; c = c->next_client)
        if (c->dirty)
            save_state(c, false);
    return r < 0 ? -1 : 0;
}

crdtc_t *crdtc_new(crdtc_loop_t *l, const crdtc_config_t *cfg, int *err)
{
    int dummy;
    if (!err)
        err = &dummy;
    *err = CRDTC_EINVAL;
    if (!l || !cfg || !cfg->client_id ||
        !crdt_v1_client_id_ok(cfg->client_id, strlen(cfg->client_id)) || cfg->port < 0 ||
        cfg->port > 65535)
        return NULL;
    *err = CRDTC_ENOMEM;
    crdtc_t *c = calloc(1, sizeof(*c));
    if (!c)
        return NULL;
    c->loop = l;
    c->host = strdup(cfg->host ? cfg->host : "127.0.0.1");
    c->tls = cfg->tls;
    c->path = strdup(cfg->path ? cfg->path : "/");
    c->token = dupstr(cfg->token);
    c->client_id = strdup(cfg->client_id);
    c->state_file = dupstr(cfg->state_file);
    c->port = cfg->port ? cfg->port : 7379;
    c->max_message = cfg->max_message ? cfg->max_message : 1u << 20;
    c->max_pending = cfg->max_pending ? cfg->max_pending : 64u << 20;
    c->backoff_min_ms = cfg->backoff_min_ms ? cfg->backoff_min_ms : 50;
    c->backoff_max_ms = cfg->backoff_max_ms ? cfg->backoff_max_ms : 5000;
    if (c->backoff_max_ms < c->backoff_min_ms)
        c->backoff_max_ms = c->backoff_min_ms;
    c->no_reconnect = cfg->no_reconnect;
    c->timeline_max_size = cfg->timeline_max_size < 0            ? 0
                           : cfg->timeline_max_size == 0         ? 1000
                           : cfg->timeline_max_size > UINT32_MAX ? UINT32_MAX
                                                                 : (uint32_t)cfg->timeline_max_size;
    c->cb = cfg->cb;
    c->ud = cfg->ud;
    c->cursor = cfg->cursor;
    c->reading = true;
    c->binary = cfg->binary;
    gw_wsrx_init(&c->rx, c->max_message, GW_WS_TEXT | (c->binary ? GW_WS_BINARY : 0));
    gw_wsq_init(&c->ctl, 0);
    gw_wswriter_init(&c->w, GW_WS_TEXT, true);
    c->replica_id = crdt_hash64(cfg->client_id, strlen(cfg->client_id), 0x726570u) & INT64_MAX;
    if (!c->replica_id)
        c->replica_id = 1;
    crdt_hlc_init(&c->hlc, c->replica_id, 60000);
    if (!c->host || !c->path || (cfg->token && !c->token) || !c->client_id ||
        (cfg->state_file && !c->state_file)) {
        crdtc_free(c);
        return NULL;
    }
    if (c->state_file && (*err = load_state(c))) {
        crdtc_free(c);
        return NULL;
    }
    c->next_id = wall_us();
    if (c->reserved > c->next_id)
        c->next_id = c->reserved;
    c->next_client = l->clients;
    l->clients = c;
    *err = 0;
    return c;
}

void crdtc_free(crdtc_t *c)
{
    if (!c)
        return;
    crdtc_loop_t *l = c->loop;
    for (crdtc_t **pp = &l->clients; *pp; pp = &(*pp)->next_client)
        if (*pp == c) {
            *pp = c->next_client;
            break;
        }
    if (l->ctx)
        lws_sul_schedule(l->ctx, 0, &c->sul_reconnect, NULL, LWS_SET_TIMER_USEC_CANCEL);
    if (c->wsi) {
        /* the wsi outlives us until the loop closes it: it must not call back into freed memory */
        lws_set_opaque_user_data(c->wsi, NULL);
        lws_set_timeout(c->wsi, PENDING_TIMEOUT_USER_OK, LWS_TO_KILL_ASYNC);
    }
    if (c->dirty && c->client_id)
        save_state(c, false);
    gw_wsq_free(&c->ctl);
    gw_wswriter_free(&c->w);
    free_list(c->pend_head);
    for (size_t i = 0; i < c->nsubs; i++)
        free(c->subs[i].bytes);
    free(c->subs);
    for (size_t i = 0; i < c->nprev; i++)
        free(c->prev[i].bytes);
    free(c->prev);
    for (size_t i = 0; i < c->nbuckets; i++)
        for (entry_t *e = c->buckets[i], *nx; e; e = nx) {
            nx = e->next;
            crdt_obj_free(e->obj);
            free(e);
        }
    free(c->buckets);
    gw_wsrx_free(&c->rx);
    free(c->host);
    free(c->path);
    free(c->token);
    free(c->client_id);
    free(c->state_file);
    free(c);
}
