/* store_redis.c - crdt_store_t over Redis / Redis Cluster with crdt.so (see store_redis.h) */
#include "store_redis.h"

#include <math.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <hiredis/async.h>
#include <hiredis/hiredis.h>

#include "logpos.h"
#include "redis_parse.h"

#define SR_MAX_NODES 64
#define SR_NO_NODE 0xffffu
#define SR_SEEDS_MAX 16
#define SR_HOUSEKEEPING_MS 50
#define SR_SCAN_NODE_SHIFT 48
#define SR_ERR_HOLD_MS 1000

typedef struct sr_store sr_store_t;
typedef struct sr_node sr_node_t;
typedef struct sr_req sr_req_t;

/* One hiredis connection: what the adapter hooks get as ev.data (freed by its cleanup hook, so a
 * node's new connection never receives the old one's cleanup). */
typedef struct sr_conn {
    sr_node_t *node;
    redisAsyncContext *ac;
    gw_watch_t *w;
    unsigned want;
    sr_reply_arena_t *arena; /* where the reader makes its replies (redis_parse.h) */
} sr_conn_t;

typedef enum { N_DOWN, N_CONNECTING, N_UP } node_state_t;

struct sr_node {
    sr_store_t *st;
    sr_addr_t addr;
    sr_conn_t *conn; /* NULL while down */
    node_state_t state;
    unsigned fails;    /* consecutive failed connects/losses (backoff exponent) */
    uint64_t retry_at; /* a down node is not tried before this */
    uint64_t since;    /* when the connect started */
    char why[200];     /* why it is down */
    unsigned gen;      /* connections made so far */
    /* following the node's change logs */
    bool listed;           /* its first CRDT.LOG.LIST was answered */
    bool follow_busy;      /* a LIST or READs in flight */
    unsigned follow_reads; /* READs in flight */
    bool follow_more;      /* a READ came back full: read again at once */
    uint64_t follow_next;  /* next poll */
    sr_req_t *head, *tail; /* in flight, oldest first (reply timeouts) */
};

typedef enum {
    R_GET,
    R_MANY,
    R_WRITE,
    R_STATE_AFTER, /* the state read right after a change, for the change event */
    R_WAIT,
    R_FP,
    R_MARK_GET,
    R_MARK_PUT,
    R_SCAN,
    R_SCAN_STATE,
    R_LIST_SCAN,  /* list_keys: SCAN MATCH <prefix>* on one primary */
    R_LIST_STATE, /* list_keys: CRDT.STATE of a candidate, for its liveness */
    R_INFO,
    R_SLOTS,
    R_LOG_LIST,
    R_LOG_READ,
    R_RSX_OPEN,
    R_RSX_RECV,
    R_RSX_DIFFS,
    R_RSX_CLOSE,
    R_RSX_ITEMS, /* CRDT.RSX.ITEMS of one primary, for a session run in the gateway */
    R_RSX_DIGEST,
    R_TYPES,       /* CRDT.TYPE of one key of a types call */
    R_LOG_POLL,    /* CRDT.LOG.POLL of a node's logs */
    R_BATCH,       /* CRDT.TLMADD / TLMREM of one slot's writes of a tl_write_batch */
    R_BATCH_STATE, /* the state of a key it changed, for the change event */
    R_BATCH_WAIT,  /* WAIT after it */
    R_TLRANGE,     /* CRDT.TLRANGE / TLRANGEBYSCORE of one key of a tl_range call */
    R_TLSTATE,     /* CRDT.STATE of one key of a tl_range call (a crdt.so without them) */
} req_kind_t;

/* A change log (crdt:log:{TAG}:EPOCH) and how far this store has read it. Kept by name for the
 * store's life: a log keeps its name across a failover (replicated) and a resharding (migrated
 * with its slot), so the reader continues from its position on whichever node lists it next. */
typedef struct sr_log {
    char name[CRDTM_LOG_NAME_MAX];
    char pos[CRDTM_POS_TEXT_MAX];
    sr_node_t *node; /* the node that listed it last; NULL when none does */
    size_t nlen;     /* strlen(name) */
    uint32_t next;   /* the next log of its slot (an index in logs; UINT32_MAX: none) */
} sr_log_t;

typedef struct sr_feed_ent {
    uint64_t seq;
    char *key;
    size_t klen;
} sr_feed_ent_t;

typedef struct sr_batch sr_batch_t;

typedef struct sr_many {
    crdt_store_get_many_cb cb;
    void *ud;
    size_t n, left;
    int rc;
    crdt_obj_t **objs;
    crdt_store_types_cb tcb; /* a types call: types[] instead of objs */
    crdt_type_t *types;
    sr_batch_t *batch; /* a types call of a batch's first phase: batch_typed instead of tcb */
    size_t bad;        /* the first key whose read failed with CRDT_ETYPE (SIZE_MAX: none) */
    /* a tl_range call: rcb instead of cb; per key its entries (one block each: the entries, then
     * their members' bytes) or, read with CRDT.STATE, its object in objs */
    crdt_store_tl_range_cb rcb;
    crdt_store_tl_query_t q; /* q.after.member points into keys' block */
    crdt_tl_entry_t **ents;
    size_t *counts;
    crdt_bytes_t *keys; /* copies (bytes after them): a key may have to be asked again */
} sr_many_t;

typedef struct sr_scan {
    crdt_store_key_cb each;
    crdt_store_done_cb done;
    void *ud;
    size_t left; /* state reads outstanding */
    int rc;
    bool stop;
    uint64_t next;
} sr_scan_t;

typedef struct sr_list sr_list_t;

struct sr_req {
    sr_store_t *st;
    req_kind_t kind;
    char *cmd; /* formatted (RESP), kept to resend after a redirect */
    size_t cmdlen;
    const char *verb; /* for messages */
    unsigned slot;    /* routing; SR_NO_NODE: a fixed node */
    sr_node_t *fixed; /* commands for one node (INFO, CLUSTER SLOTS, SCAN, WAIT) */
    unsigned redirects;
    sr_node_t *node; /* where it is in flight */
    uint64_t sent_ms;
    uint64_t deadline;     /* no reply by then: the node is taken as down */
    sr_req_t *prev, *next; /* node's in-flight list, or the waiting list */
    bool linked;

    void *cb;
    void *ud;
    /* writes */
    int rc;
    bool typed_count; /* the reply is a count of changed elements (>0: changed) */
    bool incr;        /* INCRBY: changed iff n != 0 */
    int64_t n;
    crdt_obj_t *delta; /* the delta sent (MERGE paths): the change event's */
    uint64_t origin;
    char *key;
    size_t klen;
    sr_req_t *parent; /* R_STATE_AFTER / R_WAIT: the write */
    uint64_t seq;
    /* get_many / scan */
    sr_many_t *many;
    size_t idx;
    sr_scan_t *scan;
    unsigned scan_node;
    size_t *idxs; /* R_LOG_POLL: the logs asked, in order */
    size_t nidx;
    sr_list_t *list;   /* R_LIST_*: the listing; idx: the candidate (R_LIST_STATE) */
    sr_batch_t *batch; /* R_BATCH*: the batch; idx: the group (R_BATCH_STATE: bidx the write) */
    size_t bidx;
};

/* list_keys (below) */
static void list_scan_reply(sr_store_t *s, sr_req_t *q, const redisReply *r);
static void list_state_reply(sr_store_t *s, sr_req_t *q, const redisReply *r);
static void list_part_failed(sr_list_t *L, int rc);
static void list_drop(sr_list_t *L);

struct sr_store {
    crdt_store_t base;
    crdt_store_redis_config_t cfg;
    const gw_evloop_t *loop;
    gw_timer_t *timer;
    crdt_hlc_t hlc;

    sr_addr_t seeds[SR_SEEDS_MAX];
    int nseeds;
    sr_node_t *nodes[SR_MAX_NODES];
    int nnodes;
    uint16_t slot_node[CRDTM_SLOTS];
    int ready;        /* 1 ready, 0 discovering, -1 last discovery failed */
    int cluster;      /* -1 unknown */
    bool discovering; /* INFO/CLUSTER SLOTS in flight */
    int disc_seed;    /* the seed being asked */
    unsigned disc_fails;
    uint64_t disc_retry_at;
    bool refresh_inflight;
    uint64_t refresh_due; /* 0: none */

    sr_req_t *wait_head, *wait_tail; /* queued until the topology is known */
    size_t nwaiting;

    /* seqs: window of completed flags for seqs durable+1 .. last */
    uint64_t last_seq, durable_seq, durable_told;
    uint8_t *win;
    size_t win_off, win_len, win_cap;

    char err[320]; /* the current problem (NULL through last_error when healthy) */
    bool err_set;
    uint64_t err_at; /* when: a problem stays reported for SR_ERR_HOLD_MS at least */
    int depth;       /* nesting of hiredis callbacks we are in */
    bool closing;
    uint64_t writes, noops;
    sr_log_t *logs;
    size_t nlogs, cap_logs;
    uint32_t *slot_logs; /* per slot the first of its logs (an index in logs; UINT32_MAX: none) */
    bool logpos_loaded, logpos_busy, logpos_dirty; /* the saved positions (mark log-positions) */
    bool logpos_found; /* a previous run saved some: logs unknown to it are read from the start */
    uint64_t logpos_retry_at, logpos_saved_at;
    sr_feed_ent_t *feed; /* ring of the last cfg.feed_max changes reported */
    size_t feed_head, feed_len;
    uint64_t feed_dropped; /* seq of the newest change dropped from the ring */
    crdt_store_redis_stats_t rs;
    /* anti-entropy: open sessions (freed at close), the names DIFFS gave for the ids found to
     * differ (rsx_keys), the item count DIGEST gave last (rsx_items) */
    crdt_store_rsx_t *rsx_list;
    struct sr_rname **rnames;
    size_t rnames_cap, rnames_n;
    uint64_t rsx_items, rsx_items_at;
    bool rsx_items_busy;
    sr_batch_t *batches; /* tl_write_batch calls not completed (freed at close) */
    bool follow_started; /* every primary of the map had its logs listed once */
    bool no_poll;        /* crdt.so without CRDT.LOG.POLL: one CRDT.LOG.READ per log */
    bool no_tlm;         /* crdt.so without CRDT.TLMADD: a batch's writes go one by one */
    bool no_tlrange;     /* crdt.so without CRDT.TLRANGE: tl_range reads states (CRDT.STATE) */
};

static sr_store_t *srs(crdt_store_t *st)
{
    return (sr_store_t *)st;
}

static const sr_store_t *csrs(const crdt_store_t *st)
{
    return (const sr_store_t *)st;
}

static uint64_t now_ms(const sr_store_t *s)
{
    return s->loop->now_ms(s->loop->ctx);
}

static void set_err(sr_store_t *s, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void set_err(sr_store_t *s, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(s->err, sizeof(s->err), fmt, ap);
    va_end(ap);
    s->err_set = true;
    s->err_at = now_ms(s);
}

/* ---- requests ---------------------------------------------------------------------------------
 */

static sr_req_t *req_new(sr_store_t *s, req_kind_t kind, const char *verb, int argc,
                         const char **argv, const size_t *lens)
{
    sr_req_t *q = calloc(1, sizeof(*q));
    if (!q)
        return NULL;
    char *cmd = NULL;
    int len = redisFormatCommandArgv(&cmd, argc, argv, lens);
    if (len < 0 || !cmd) {
        free(q);
        return NULL;
    }
    q->st = s;
    q->kind = kind;
    q->verb = verb;
    q->cmd = cmd;
    q->cmdlen = (size_t)len;
    q->slot = SR_NO_NODE;
    return q;
}

static void req_free(sr_req_t *q)
{
    if (!q)
        return;
    redisFreeCommand(q->cmd);
    free(q->idxs);
    crdt_obj_free(q->delta);
    free(q->key);
    free(q);
}

static void inflight_link(sr_node_t *n, sr_req_t *q)
{
    q->prev = n->tail;
    q->next = NULL;
    if (n->tail)
        n->tail->next = q;
    else
        n->head = q;
    n->tail = q;
    q->node = n;
    q->linked = true;
}

static void inflight_unlink(sr_req_t *q)
{
    sr_node_t *n = q->node;
    if (!q->linked || !n)
        return;
    if (q->prev)
        q->prev->next = q->next;
    else
        n->head = q->next;
    if (q->next)
        q->next->prev = q->prev;
    else
        n->tail = q->prev;
    q->prev = q->next = NULL;
    q->linked = false;
}

static void req_fail(sr_req_t *q, int rc);
static void rsx_failed(sr_req_t *q, int rc, const char *why);
static void req_dispatch(sr_store_t *s, sr_req_t *q);
static void send_wait(sr_req_t *w);
static void discovery_failed(sr_store_t *s, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
static void on_reply(redisAsyncContext *ac, void *reply, void *priv);

/* ---- seqs and durability ----------------------------------------------------------------------
 */

static uint64_t seq_assign(sr_store_t *s)
{
    if (s->win_off + s->win_len == s->win_cap) {
        if (s->win_off > 0) {
            memmove(s->win, s->win + s->win_off, s->win_len);
            s->win_off = 0;
        } else {
            size_t cap = s->win_cap ? s->win_cap * 2 : 256;
            uint8_t *w = realloc(s->win, cap);
            if (!w)
                return 0;
            s->win = w;
            s->win_cap = cap;
        }
    }
    s->win[s->win_off + s->win_len++] = 0;
    return ++s->last_seq;
}

static void tell_durable(sr_store_t *s)
{
    if (s->durable_seq != s->durable_told && s->base.ev.durable) {
        s->durable_told = s->durable_seq;
        s->base.ev.durable(s->base.ev.ud, s->durable_seq);
    }
}

static void seq_complete(sr_store_t *s, uint64_t seq)
{
    if (seq <= s->durable_seq || seq > s->last_seq)
        return;
    s->win[s->win_off + (seq - s->durable_seq - 1)] = 1;
    while (s->win_len && s->win[s->win_off]) {
        s->win_off++;
        s->win_len--;
        s->durable_seq++;
    }
    if (s->win_len == 0)
        s->win_off = 0;
    tell_durable(s);
}

/* ---- connections: the hiredis adapter over gw_evloop_t ----------------------------------------
 */

static void free_all(sr_store_t *s);

static void conn_io(void *ud, unsigned events)
{
    sr_conn_t *c = ud;
    redisAsyncContext *ac = c->ac;
    sr_node_t *n = c->node;
    sr_store_t *s = n->st;
    unsigned gen = n->gen;
    /* hiredis may free ac (and c, through the cleanup hook) inside either call */
    s->depth++;
    if (events & GW_EV_READ)
        redisAsyncHandleRead(ac);
    if ((events & GW_EV_WRITE) && !s->closing && n->gen == gen && n->conn)
        redisAsyncHandleWrite(ac);
    if (--s->depth == 0 && s->closing)
        free_all(s); /* closed from inside a completion: hiredis is done with every context */
}

static void conn_want(sr_conn_t *c, unsigned want)
{
    const gw_evloop_t *l = c->node->st->loop;
    c->want = want;
    if (c->w)
        l->want(l->ctx, c->w, want);
    else if (want)
        c->w = l->watch(l->ctx, c->ac->c.fd, want, conn_io, c);
}

static void ev_add_read(void *p)
{
    sr_conn_t *c = p;
    conn_want(c, c->want | GW_EV_READ);
}

static void ev_del_read(void *p)
{
    sr_conn_t *c = p;
    conn_want(c, c->want & ~(unsigned)GW_EV_READ);
}

static void ev_add_write(void *p)
{
    sr_conn_t *c = p;
    conn_want(c, c->want | GW_EV_WRITE);
}

static void ev_del_write(void *p)
{
    sr_conn_t *c = p;
    conn_want(c, c->want & ~(unsigned)GW_EV_WRITE);
}

static void node_lost(sr_node_t *n, const char *why);

/* hiredis frees a context: after its pending callbacks (reply NULL), before its disconnect
 * callback, on every path (closed by the server, an I/O or protocol error, a failed connect, our
 * own redisAsyncFree). A node still pointing at the connection learns here that it is gone. */
static void ev_cleanup(void *p)
{
    sr_conn_t *c = p;
    sr_node_t *n = c->node;
    const gw_evloop_t *l = n->st->loop;
    if (c->w)
        l->unwatch(l->ctx, c->w);
    c->w = NULL;
    if (n->conn == c) {
        char why[200];
        snprintf(why, sizeof(why), "connection lost: %s",
                 c->ac->errstr[0] ? c->ac->errstr : "closed by the server");
        node_lost(n, why);
    }
    c->ac->ev.data = NULL;             /* the disconnect callback comes after this */
    sr_reader_arena_release(c->arena); /* hiredis frees the reader (and a half-read reply) next */
    free(c);
}

static uint64_t backoff_ms(const sr_store_t *s, unsigned fails)
{
    uint64_t d = s->cfg.backoff_min_ms;
    for (unsigned i = 1; i < fails && d < s->cfg.backoff_max_ms; i++)
        d *= 2;
    if (d > s->cfg.backoff_max_ms)
        d = s->cfg.backoff_max_ms;
    /* jitter: 50% .. 100% of the step, so gateways do not reconnect in lockstep */
    return d / 2 + (uint64_t)rand() % (d / 2 + 1);
}

/* Bookkeeping of a node that stopped answering: down until its backoff passed; in a cluster the
 * slot map is reloaded (a replica may be taking over). The connection is not touched. */
static void node_lost(sr_node_t *n, const char *why)
{
    sr_store_t *s = n->st;
    if (why != n->why)
        snprintf(n->why, sizeof(n->why), "%s", why);
    n->conn = NULL;
    n->fails++;
    n->retry_at = now_ms(s) + backoff_ms(s, n->fails);
    n->state = N_DOWN;
    set_err(s, "redis %s:%d: %s", n->addr.host, n->addr.port, n->why);
    if (s->cluster == 1 && !s->refresh_due)
        s->refresh_due = now_ms(s) + s->cfg.backoff_min_ms;
}

/* The node is down (why); its connection, if any, is dropped: every command in flight on it
 * completes with CRDT_EUNAVAIL. */
static void node_down(sr_node_t *n, const char *why)
{
    sr_conn_t *c = n->conn;
    node_lost(n, why);
    if (c)
        redisAsyncFree(c->ac); /* calls the pending callbacks with NULL, then the cleanup hook */
}

static void on_connect(const redisAsyncContext *ac, int status)
{
    sr_conn_t *c = ac->ev.data;
    if (!c || c->node->conn != c)
        return;
    sr_node_t *n = c->node;
    if (status != REDIS_OK) {
        /* hiredis frees ac after this callback */
        char why[200];
        snprintf(why, sizeof(why), "cannot connect: %s", ac->errstr[0] ? ac->errstr : "error");
        node_lost(n, why);
        return;
    }
    n->state = N_UP;
    n->fails = 0;
    n->why[0] = '\0';
}

static void on_disconnect(const redisAsyncContext *ac, int status)
{
    /* the cleanup hook ran before and did the bookkeeping */
    (void)ac, (void)status;
}

/* A connection to n, starting one when n is down and its backoff has passed; false (n->why says
 * why) when n cannot take commands now. */
static bool node_ensure(sr_node_t *n)
{
    if (n->conn)
        return true;
    sr_store_t *s = n->st;
    uint64_t now = now_ms(s);
    if (n->fails && now < n->retry_at)
        return false;
    redisAsyncContext *ac = redisAsyncConnect(n->addr.host, n->addr.port);
    if (!ac || ac->err) {
        char why[200];
        snprintf(why, sizeof(why), "cannot connect: %s",
                 ac && ac->errstr[0] ? ac->errstr : "out of memory");
        if (ac)
            redisAsyncFree(ac);
        node_down(n, why);
        return false;
    }
    sr_conn_t *c = calloc(1, sizeof(*c));
    if (!c || !(c->arena = sr_reader_arena(ac->c.reader))) {
        free(c);
        redisAsyncFree(ac);
        node_down(n, "out of memory");
        return false;
    }
    c->node = n;
    c->ac = ac;
    ac->ev.data = c;
    ac->ev.addRead = ev_add_read;
    ac->ev.delRead = ev_del_read;
    ac->ev.addWrite = ev_add_write;
    ac->ev.delWrite = ev_del_write;
    ac->ev.cleanup = ev_cleanup;
    redisAsyncSetConnectCallback(ac, on_connect);
    redisAsyncSetDisconnectCallback(ac, on_disconnect);
    n->conn = c;
    n->gen++;
    if (n->fails)
        s->rs.reconnects++;
    n->state = N_CONNECTING;
    n->since = now;
    /* the non-blocking connect completes when the socket becomes writable */
    ev_add_write(c);
    ev_add_read(c);
    return true;
}

static sr_node_t *node_get(sr_store_t *s, const sr_addr_t *a, int *idx)
{
    for (int i = 0; i < s->nnodes; i++)
        if (s->nodes[i]->addr.port == a->port && strcmp(s->nodes[i]->addr.host, a->host) == 0) {
            if (idx)
                *idx = i;
            return s->nodes[i];
        }
    if (s->nnodes == SR_MAX_NODES)
        return NULL;
    sr_node_t *n = calloc(1, sizeof(*n));
    if (!n)
        return NULL;
    n->st = s;
    n->addr = *a;
    if (idx)
        *idx = s->nnodes;
    s->nodes[s->nnodes++] = n;
    return n;
}

/* ---- sending ----------------------------------------------------------------------------------
 */

/* A command issued outside hiredis's callbacks (a request being handled) leaves at once instead
 * of at the next poll's writability, so Redis works on it while crdtd parses the next request:
 * the two overlap instead of taking turns batch by batch (1.12x more roshi inserts/s over
 * Redis, docs/benchmarks.md). Inside a callback the commands still go out together when it returns.
 * redisBufferWrite only writes, it runs no callback: a write error stays in the context, and the
 * write interest hiredis armed hands it to redisAsyncHandleWrite from the loop. */
static void send_now(sr_conn_t *c)
{
    redisContext *rc = &c->ac->c;
    int done = 0;
    if (!(rc->flags & REDIS_CONNECTED) || rc->err)
        return;
    if (redisBufferWrite(rc, &done) == REDIS_OK && done)
        conn_want(c, c->want & ~(unsigned)GW_EV_WRITE);
}

static bool send_on(sr_store_t *s, sr_req_t *q, sr_node_t *n, bool asking)
{
    if (!node_ensure(n)) {
        s->rs.fail_fast++;
        set_err(s, "redis %s:%d is unreachable: %s", n->addr.host, n->addr.port, n->why);
        return false;
    }
    if (asking && redisAsyncCommand(n->conn->ac, NULL, NULL, "ASKING") != REDIS_OK)
        return false;
    if (redisAsyncFormattedCommand(n->conn->ac, on_reply, q, q->cmd, q->cmdlen) != REDIS_OK)
        return false;
    q->sent_ms = now_ms(s);
    /* WAIT blocks the connection for up to its own timeout */
    q->deadline = q->sent_ms + s->cfg.timeout_ms + (q->kind == R_WAIT ? s->cfg.wait_timeout_ms : 0);
    inflight_link(n, q);
    s->rs.sent++;
    if (s->depth == 0)
        send_now(n->conn);
    return true;
}

static void wait_push(sr_store_t *s, sr_req_t *q)
{
    q->prev = s->wait_tail;
    q->next = NULL;
    if (s->wait_tail)
        s->wait_tail->next = q;
    else
        s->wait_head = q;
    s->wait_tail = q;
    s->nwaiting++;
    q->sent_ms = now_ms(s);
}

/* Sends q where its slot lives, or queues it while the topology is unknown; completes it with
 * CRDT_EUNAVAIL when that node cannot be reached now. */
static void req_dispatch(sr_store_t *s, sr_req_t *q)
{
    sr_node_t *n = q->fixed;
    if (!n) {
        if (s->ready != 1) {
            if (s->nwaiting >= s->cfg.max_pending) {
                set_err(s, "too many operations waiting for the Redis topology (%zu)", s->nwaiting);
                req_fail(q, CRDT_EUNAVAIL);
                return;
            }
            wait_push(s, q);
            return;
        }
        uint16_t i = s->slot_node[q->slot];
        if (i == SR_NO_NODE || i >= s->nnodes) {
            s->rs.fail_fast++;
            set_err(s, "slot %u is not served by any node of the cluster's slot map", q->slot);
            if (!s->refresh_due)
                s->refresh_due = now_ms(s);
            req_fail(q, CRDT_EUNAVAIL);
            return;
        }
        n = s->nodes[i];
    }
    if (!send_on(s, q, n, false))
        req_fail(q, CRDT_EUNAVAIL);
}

static void route(sr_req_t *q, const void *key, size_t klen)
{
    q->slot = crdtm_keyslot(key, klen);
}

/* ---- completions ------------------------------------------------------------------------------
 */

static void batch_typed(sr_batch_t *b, int rc, const crdt_type_t *types, size_t bad);

/* Frees an aggregate of get_many, types or tl_range with what it holds. */
static void many_free(sr_many_t *m)
{
    free(m->types);
    for (size_t i = 0; i < m->n; i++) {
        crdt_obj_free(m->objs[i]);
        if (m->ents)
            free(m->ents[i]);
    }
    free(m->objs);
    free(m->ents);
    free(m->counts);
    free(m->keys);
    free(m);
}

/* A tl_range key read with CRDT.STATE: its entries out of the object, as the command would
 * have answered (members borrowed from the object). */
static int tl_range_of_state(sr_many_t *m, size_t i)
{
    const crdt_obj_t *o = m->objs[i];
    if (!o || crdt_obj_type(o) != CRDT_TIMELINE)
        return 0;
    const crdt_store_tl_query_t *q = &m->q;
    size_t card = crdt_timeline_card(o), want = q->by_score ? q->limit : q->count;
    if (want > card)
        want = card;
    if (!want)
        return 0;
    if (!(m->ents[i] = malloc(want * sizeof(crdt_tl_entry_t))))
        return CRDT_ENOMEM;
    m->counts[i] = q->by_score ? crdt_timeline_range_by_score(o, q->max, q->min,
                                                              q->has_after ? &q->after : NULL, want,
                                                              m->ents[i])
                               : crdt_timeline_range(o, q->offset, want, m->ents[i]);
    return 0;
}

static void tl_range_finish(sr_many_t *m)
{
    for (size_t i = 0; i < m->n && m->rc == 0; i++)
        m->rc = tl_range_of_state(m, i);
    if (m->rc < 0)
        m->rcb(m->ud, m->rc, NULL, NULL, 0);
    else
        m->rcb(m->ud, 0, (const crdt_tl_entry_t *const *)m->ents, m->counts, m->n);
}

static void many_part(sr_many_t *m, size_t idx, int rc, crdt_obj_t *obj)
{
    if (rc < 0 && m->rc == 0)
        m->rc = rc;
    if (rc == CRDT_ETYPE && m->bad == SIZE_MAX)
        m->bad = idx;
    if (obj)
        m->objs[idx] = obj;
    if (--m->left)
        return;
    if (m->batch)
        batch_typed(m->batch, m->rc, m->types, m->bad);
    else if (m->tcb)
        m->tcb(m->ud, m->rc, m->rc < 0 ? NULL : m->types, m->rc < 0 ? 0 : m->n);
    else if (m->rcb)
        tl_range_finish(m);
    else if (m->rc < 0)
        m->cb(m->ud, m->rc, NULL, 0);
    else
        m->cb(m->ud, 0, (const crdt_obj_t *const *)m->objs, m->n);
    many_free(m);
}

static void scan_finish(sr_scan_t *sc)
{
    if (sc->left)
        return;
    sc->done(sc->ud, sc->rc, sc->rc < 0 ? 0 : sc->next);
    free(sc);
}

/* Completes a write whose outcome is known: rc 1 changed (q->seq assigned), 0 no-op, < 0. */
static void write_finish(sr_req_t *q)
{
    sr_store_t *s = q->st;
    if (q->rc > 0)
        s->writes++;
    else if (q->rc == 0)
        s->noops++;
    if (q->cb)
        ((crdt_store_write_cb)q->cb)(q->ud, q->rc, q->rc > 0 ? q->seq : 0);
    if (q->seq)
        seq_complete(s, q->seq);
    req_free(q);
}

static void follow_send_poll(sr_store_t *s, sr_node_t *n);

static void follow_read_done(sr_node_t *n)
{
    sr_store_t *s = n->st;
    if (n->follow_reads && --n->follow_reads)
        return;
    n->follow_busy = false;
    bool more = n->follow_more;
    n->follow_next = now_ms(s) + (more ? 0 : s->cfg.follow_poll_ms);
    n->follow_more = false;
    if (more && !s->no_poll && !s->closing && n->state == N_UP) {
        /* a full read: the next one at once, over the same logs (no LIST, no timer), so following
         * keeps up with any write rate rather than one read per housekeeping turn */
        n->follow_busy = true;
        n->follow_reads = 1; /* held while sending */
        follow_send_poll(s, n);
        follow_read_done(n);
    }
}

static void batch_req_failed(sr_req_t *q, int rc);

static void req_fail(sr_req_t *q, int rc)
{
    sr_store_t *s = q->st;
    switch (q->kind) {
    case R_GET: ((crdt_store_get_cb)q->cb)(q->ud, rc, NULL); break;
    case R_MANY:
    case R_TYPES:
    case R_TLRANGE:
    case R_TLSTATE: many_part(q->many, q->idx, rc, NULL); break;
    case R_WRITE:
        q->rc = rc;
        write_finish(q);
        return;
    case R_STATE_AFTER: {
        /* the write was applied; only its change event is lost */
        sr_req_t *w = q->parent;
        q->parent = NULL;
        w->seq = seq_assign(s);
        send_wait(w);
        break;
    }
    case R_WAIT: {
        /* applied, but not known to be replicated: the caller hears it failed */
        sr_req_t *w = q->parent;
        q->parent = NULL;
        w->rc = rc;
        write_finish(w);
        break;
    }
    case R_FP: ((crdt_store_fp_cb)q->cb)(q->ud, rc, 0); break;
    case R_MARK_GET: ((crdt_store_mark_cb)q->cb)(q->ud, rc, NULL, 0); break;
    case R_MARK_PUT:
        if (q->cb)
            ((crdt_store_status_cb)q->cb)(q->ud, rc);
        break;
    case R_LIST_SCAN:
    case R_LIST_STATE: list_part_failed(q->list, rc); break;
    case R_SCAN:
    case R_SCAN_STATE:
        if (q->scan->rc == 0)
            q->scan->rc = rc;
        q->scan->left--;
        scan_finish(q->scan);
        break;
    case R_INFO:
        discovery_failed(s, "redis %s:%d: discovery failed: %s", q->node ? q->node->addr.host : "?",
                         q->node ? q->node->addr.port : 0, q->node ? q->node->why : "");
        break;
    case R_LOG_LIST:
        q->fixed->follow_busy = false;
        q->fixed->follow_next = now_ms(s) + s->cfg.backoff_max_ms;
        break;
    case R_LOG_READ: follow_read_done(q->fixed); break;
    case R_LOG_POLL: follow_read_done(q->fixed); break;
    case R_BATCH:
    case R_BATCH_STATE:
    case R_BATCH_WAIT: batch_req_failed(q, rc); break;
    case R_RSX_OPEN:
    case R_RSX_RECV:
    case R_RSX_DIFFS:
    case R_RSX_CLOSE:
    case R_RSX_ITEMS:
    case R_RSX_DIGEST: rsx_failed(q, rc, NULL); break;
    case R_SLOTS:
        s->refresh_inflight = false;
        if (s->ready != 1)
            discovery_failed(s, "redis %s:%d: CLUSTER SLOTS not answered: %s",
                             q->node ? q->node->addr.host : "?", q->node ? q->node->addr.port : 0,
                             q->node ? q->node->why : "");
        else if (!s->refresh_due)
            s->refresh_due = now_ms(s) + 250;
        break;
    }
    req_free(q);
}

/* An error reply (not a redirect) as a CRDT code, with last_error set for the ones that say the
 * store cannot serve. */
static int reply_error_code(sr_store_t *s, const sr_req_t *q, const redisReply *r)
{
    const char *e = r->str ? r->str : "";
    if (strncmp(e, "WRONGTYPE", 9) == 0)
        return CRDT_ETYPE;
    if (strncmp(e, "NOTSUP", 6) == 0)
        return CRDT_ENOTSUP;
    if (strncmp(e, "CLUSTERDOWN", 11) == 0 || strncmp(e, "TRYAGAIN", 8) == 0 ||
        strncmp(e, "LOADING", 7) == 0 || strncmp(e, "MASTERDOWN", 10) == 0 ||
        strncmp(e, "READONLY", 8) == 0 || strncmp(e, "BUSY", 4) == 0) {
        set_err(s, "redis %s:%d: %s: %.160s", q->node ? q->node->addr.host : "?",
                q->node ? q->node->addr.port : 0, q->verb, e);
        if (s->cluster == 1 && !s->refresh_due)
            s->refresh_due = now_ms(s) + s->cfg.backoff_min_ms;
        return CRDT_EUNAVAIL;
    }
    if (strncmp(e, "OOM", 3) == 0)
        return CRDT_ELIMIT;
    if (strstr(e, "bad payload") || strstr(e, "payload"))
        return CRDT_EDECODE;
    if (strncmp(e, "ERR unknown command", 19) == 0) {
        set_err(s, "redis %s:%d does not know %s: is crdt.so loaded? (%.120s)",
                q->node ? q->node->addr.host : "?", q->node ? q->node->addr.port : 0, q->verb, e);
        return CRDT_EUNAVAIL;
    }
    set_err(s, "redis: %s: %.200s", q->verb, e);
    return CRDT_EINVAL;
}

static int bad_reply(sr_store_t *s, const sr_req_t *q, const redisReply *r)
{
    static const char *const names[] = {"?",   "string", "array", "integer",
                                        "nil", "status", "error"};
    s->rs.bad_replies++;
    set_err(s, "redis %s:%d: unexpected reply to %s: %s", q->node ? q->node->addr.host : "?",
            q->node ? q->node->addr.port : 0, q->verb,
            r->type >= 1 && r->type <= 6 ? names[r->type] : "unknown type");
    return CRDT_EIO;
}

/* A CRDT.STATE reply into *obj (NULL for nil): 0 or a negative code. */
static int decode_state(sr_store_t *s, const sr_req_t *q, const redisReply *r, crdt_obj_t **obj)
{
    *obj = NULL;
    if (r->type == REDIS_REPLY_NIL)
        return 0;
    if (r->type != REDIS_REPLY_STRING)
        return bad_reply(s, q, r);
    crdt_error_t err = {0};
    *obj = crdt_obj_decode(r->str, r->len, &err);
    if (!*obj) {
        s->rs.bad_replies++;
        set_err(s, "redis: %s returned a state libcrdt cannot decode: %s", q->verb, err.text);
        return err.code ? err.code : CRDT_EDECODE;
    }
    return 0;
}

static void after_change(sr_req_t *w);

static void handle_write_reply(sr_store_t *s, sr_req_t *q, const redisReply *r)
{
    if (r->type != REDIS_REPLY_INTEGER) {
        q->rc = bad_reply(s, q, r);
        write_finish(q);
        return;
    }
    if (q->incr)
        q->rc = q->n != 0;
    else
        q->rc = r->integer > 0;
    if (q->rc <= 0) {
        write_finish(q);
        return;
    }
    after_change(q);
}

static sr_req_t *child_of(sr_req_t *w, req_kind_t kind, const char *verb, int argc,
                          const char **argv, const size_t *lens)
{
    sr_req_t *c = req_new(w->st, kind, verb, argc, argv, lens);
    if (!c)
        return NULL;
    c->parent = w;
    c->fixed = w->node; /* the node that applied the write */
    return c;
}

static void send_wait(sr_req_t *w)
{
    sr_store_t *s = w->st;
    if (!s->cfg.wait_replicas) {
        write_finish(w);
        return;
    }
    char nb[16], tb[16];
    snprintf(nb, sizeof(nb), "%u", s->cfg.wait_replicas);
    snprintf(tb, sizeof(tb), "%u", s->cfg.wait_timeout_ms);
    const char *argv[] = {"WAIT", nb, tb};
    size_t lens[] = {4, strlen(nb), strlen(tb)};
    sr_req_t *c = child_of(w, R_WAIT, "WAIT", 3, argv, lens);
    if (!c) {
        w->rc = CRDT_ENOMEM;
        write_finish(w);
        return;
    }
    req_dispatch(s, c);
}

static void feed_append(sr_store_t *s, const void *key, size_t klen, uint64_t seq);

/* Would the events use the delta of a change of key (crdt_store_events_t.wants_delta)? */
static bool delta_wanted(const sr_store_t *s, const void *key, size_t klen)
{
    const crdt_store_events_t *ev = &s->base.ev;
    return ev->change && (!ev->wants_delta || ev->wants_delta(ev->ud, key, klen));
}

/* Reports a change made through this store (without following the logs): with its delta, or with
 * NULL where the events do not want it (wanted: delta_wanted, asked once by the caller); a wanted
 * delta that could not be read is not reported. */
static void report_change(sr_store_t *s, const void *key, size_t klen, uint64_t seq,
                          const crdt_obj_t *delta, uint64_t origin, bool wanted)
{
    feed_append(s, key, klen, seq);
    if (s->base.ev.change && (delta || !wanted))
        s->base.ev.change(s->base.ev.ud, key, klen, seq, delta, origin);
}

static void fire_change(sr_req_t *w, const crdt_obj_t *delta, bool wanted)
{
    sr_store_t *s = w->st;
    if (s->cfg.follow_logs)
        return; /* the change comes back from the log */
    report_change(s, w->key, w->klen, w->seq, delta, w->origin, wanted);
}

/* Redis applied the write w: number it, tell the change event, wait for replicas if asked. For a
 * typed command the change event carries the key's state read right after (a state is a valid
 * delta: joins are idempotent), read on the same connection so it follows the write. */
static void after_change(sr_req_t *w)
{
    sr_store_t *s = w->st;
    bool wanted = !w->delta && !s->cfg.follow_logs && delta_wanted(s, w->key, w->klen);
    if (wanted) {
        const char *argv[] = {"CRDT.STATE", w->key};
        size_t lens[] = {10, w->klen};
        sr_req_t *c = child_of(w, R_STATE_AFTER, "CRDT.STATE", 2, argv, lens);
        if (c) {
            req_dispatch(s, c);
            return;
        }
    }
    w->seq = seq_assign(s);
    fire_change(w, w->delta, wanted);
    send_wait(w);
}

static void handle_state_after(sr_store_t *s, sr_req_t *q, const redisReply *r)
{
    sr_req_t *w = q->parent;
    q->parent = NULL;
    crdt_obj_t *obj = NULL;
    int rc = decode_state(s, q, r, &obj);
    w->seq = seq_assign(s);
    if (rc == 0)
        fire_change(w, obj, true);
    crdt_obj_free(obj);
    send_wait(w);
}

static void handle_wait(sr_store_t *s, sr_req_t *q, const redisReply *r)
{
    sr_req_t *w = q->parent;
    q->parent = NULL;
    if (r->type != REDIS_REPLY_INTEGER) {
        w->rc = bad_reply(s, q, r);
    } else if (r->integer < (long long)s->cfg.wait_replicas) {
        set_err(s, "redis %s:%d: WAIT %u: only %lld replicas acknowledged within %u ms",
                q->node->addr.host, q->node->addr.port, s->cfg.wait_replicas, r->integer,
                s->cfg.wait_timeout_ms);
        w->rc = CRDT_EUNAVAIL;
    }
    write_finish(w);
}

static void discovery_reply(sr_store_t *s, sr_req_t *q, const redisReply *r);
static void log_list_reply(sr_store_t *s, sr_req_t *q, const redisReply *r);
static void log_read_reply(sr_store_t *s, sr_req_t *q, const redisReply *r);
static void log_poll_reply(sr_store_t *s, sr_req_t *q, const redisReply *r);
static void slots_reply(sr_store_t *s, sr_req_t *q, const redisReply *r);
static void scan_reply(sr_store_t *s, sr_req_t *q, const redisReply *r);

static void rsx_reply(sr_store_t *s, sr_req_t *q, const redisReply *r);

static bool batch_wrongtype(sr_req_t *q, const redisReply *r);
static void batch_reply(sr_store_t *s, sr_req_t *q, const redisReply *r);
static bool tl_range_error(sr_store_t *s, sr_req_t *q, const redisReply *r);
static void tl_range_reply(sr_store_t *s, sr_req_t *q, const redisReply *r);

static void handle_reply(sr_store_t *s, sr_req_t *q, const redisReply *r)
{
    if (q->kind >= R_RSX_OPEN && q->kind <= R_RSX_DIGEST) {
        rsx_reply(s, q, r);
        req_free(q);
        return;
    }
    if (r->type == REDIS_REPLY_ERROR && q->kind == R_LOG_POLL && r->str &&
        strncmp(r->str, "ERR unknown command", 19) == 0) {
        s->no_poll = true; /* an older crdt.so: one CRDT.LOG.READ per log from now on */
        follow_read_done(q->fixed);
        req_free(q);
        return;
    }
    if (r->type == REDIS_REPLY_ERROR &&
        (q->kind == R_LOG_LIST || q->kind == R_LOG_READ || q->kind == R_LOG_POLL)) {
        /* a log deleted, trimmed away or moved with its slot: the next LIST says where */
        set_err(s, "redis %s:%d: %s: %.200s", q->node->addr.host, q->node->addr.port, q->verb,
                r->str ? r->str : "error");
        req_fail(q, CRDT_EUNAVAIL);
        return;
    }
    if (r->type == REDIS_REPLY_ERROR && q->kind == R_BATCH && batch_wrongtype(q, r)) {
        req_free(q);
        return;
    }
    if (r->type == REDIS_REPLY_ERROR && (q->kind == R_TLRANGE || q->kind == R_TLSTATE) &&
        tl_range_error(s, q, r)) {
        req_free(q);
        return;
    }
    if (r->type == REDIS_REPLY_ERROR && q->kind != R_INFO && q->kind != R_SLOTS) {
        req_fail(q, reply_error_code(s, q, r));
        return;
    }
    crdt_obj_t *obj = NULL;
    int rc;
    switch (q->kind) {
    case R_GET:
        rc = decode_state(s, q, r, &obj);
        ((crdt_store_get_cb)q->cb)(q->ud, rc, obj);
        crdt_obj_free(obj);
        break;
    case R_MANY:
    case R_TLSTATE:
        rc = decode_state(s, q, r, &obj);
        many_part(q->many, q->idx, rc, obj);
        break;
    case R_TLRANGE: tl_range_reply(s, q, r); break;
    case R_TYPES: {
        crdt_type_t t = 0;
        rc = 0;
        if (sr_parse_type(r, &t, NULL, 0) < 0)
            rc = bad_reply(s, q, r);
        q->many->types[q->idx] = t;
        many_part(q->many, q->idx, rc, NULL);
        break;
    }
    case R_WRITE:
        handle_write_reply(s, q, r);
        q = NULL; /* owned by the write path now */
        break;
    case R_STATE_AFTER: handle_state_after(s, q, r); break;
    case R_WAIT: handle_wait(s, q, r); break;
    case R_FP:
        rc = decode_state(s, q, r, &obj);
        if (rc == 0 && !obj) {
            ((crdt_store_fp_cb)q->cb)(q->ud, CRDT_EINVAL, 0);
        } else if (rc < 0) {
            ((crdt_store_fp_cb)q->cb)(q->ud, rc, 0);
        } else {
            /* the hash of the bytes Redis holds: they are the canonical encoding. The embedded
             * replica's fingerprint and the module's items use the same crdt_rsx_state_fp, so a
             * key in one state compares equal over either store. */
            ((crdt_store_fp_cb)q->cb)(q->ud, 0, crdt_rsx_state_fp(r->str, r->len));
        }
        crdt_obj_free(obj);
        break;
    case R_MARK_GET:
        if (r->type == REDIS_REPLY_NIL)
            ((crdt_store_mark_cb)q->cb)(q->ud, 0, NULL, 0);
        else if (r->type == REDIS_REPLY_STRING)
            ((crdt_store_mark_cb)q->cb)(q->ud, 0, r->len ? r->str : NULL, r->len);
        else
            ((crdt_store_mark_cb)q->cb)(q->ud, bad_reply(s, q, r), NULL, 0);
        break;
    case R_MARK_PUT:
        rc = r->type == REDIS_REPLY_STATUS ? 0 : bad_reply(s, q, r);
        if (q->cb)
            ((crdt_store_status_cb)q->cb)(q->ud, rc);
        break;
    case R_SCAN: scan_reply(s, q, r); break;
    case R_LIST_SCAN: list_scan_reply(s, q, r); break;
    case R_LIST_STATE: list_state_reply(s, q, r); break;
    case R_SCAN_STATE: {
        sr_scan_t *sc = q->scan;
        rc = decode_state(s, q, r, &obj);
        if (rc < 0 && sc->rc == 0)
            sc->rc = rc;
        /* internal keys (op-id marks) are bookkeeping: a scan lists data keys only */
        if (obj && !sc->stop && sc->rc == 0 && !crdt_key_internal(q->key, q->klen) &&
            sc->each(sc->ud, q->key, q->klen, obj))
            sc->stop = true;
        crdt_obj_free(obj);
        sc->left--;
        scan_finish(sc);
        break;
    }
    case R_INFO: discovery_reply(s, q, r); break;
    case R_SLOTS: slots_reply(s, q, r); break;
    case R_LOG_LIST: log_list_reply(s, q, r); break;
    case R_LOG_READ: log_read_reply(s, q, r); break;
    case R_LOG_POLL: log_poll_reply(s, q, r); break;
    case R_BATCH:
    case R_BATCH_STATE:
    case R_BATCH_WAIT: batch_reply(s, q, r); break;
    case R_RSX_OPEN:
    case R_RSX_RECV:
    case R_RSX_DIFFS:
    case R_RSX_CLOSE:
    case R_RSX_ITEMS:
    case R_RSX_DIGEST: break; /* rsx_reply, above */
    }
    req_free(q);
}

static void follow_redirect(sr_store_t *s, sr_req_t *q, const redisReply *r)
{
    bool ask = false;
    unsigned slot = 0;
    sr_addr_t to;
    int k = sr_parse_redirect(r->str, r->len, &ask, &slot, &to);
    if (k < 0) {
        s->rs.bad_replies++;
        set_err(s, "redis: malformed redirect to %s: %.120s", q->verb, r->str);
        req_fail(q, CRDT_EIO);
        return;
    }
    if (++q->redirects > s->cfg.max_redirects) {
        set_err(s, "redis: %s redirected more than %u times (last: %.120s)", q->verb,
                s->cfg.max_redirects, r->str);
        req_fail(q, CRDT_EUNAVAIL);
        return;
    }
    int idx = -1;
    sr_node_t *n = node_get(s, &to, &idx);
    if (!n) {
        set_err(s, "redis: too many cluster nodes (more than %d)", SR_MAX_NODES);
        req_fail(q, CRDT_EUNAVAIL);
        return;
    }
    if (ask) {
        s->rs.redirects_ask++;
    } else {
        s->rs.redirects_moved++;
        s->slot_node[slot] = (uint16_t)idx;
        s->follow_started = false;
        if (!s->refresh_due)
            s->refresh_due = now_ms(s); /* the map is stale: reload it soon, once */
    }
    if (!send_on(s, q, n, ask))
        req_fail(q, CRDT_EUNAVAIL);
}

/* Frees q without completing anything (the store is closing), with the aggregates it holds. */
static void req_drop(sr_req_t *q)
{
    if (q->parent)
        req_free(q->parent);
    if (q->many && --q->many->left == 0)
        many_free(q->many);
    if (q->scan && --q->scan->left == 0)
        free(q->scan);
    if (q->list)
        list_drop(q->list);
    req_free(q);
}

static void on_reply(redisAsyncContext *ac, void *reply, void *priv)
{
    sr_req_t *q = priv;
    sr_store_t *s = q->st;
    redisReply *r = reply;
    inflight_unlink(q);
    if (s->closing) {
        req_drop(q);
        return;
    }
    s->depth++;
    s->rs.replies += r != NULL;
    if (!r) {
        sr_node_t *n = q->node;
        if (n && n->conn && n->conn->ac == ac) {
            char why[200];
            snprintf(why, sizeof(why), "connection lost: %s",
                     ac->errstr[0] ? ac->errstr : "closed");
            node_lost(n, why); /* hiredis is freeing ac: later sends fail fast */
        }
        set_err(s, "redis %s:%d: %s (%s not answered%s)", n ? n->addr.host : "?",
                n ? n->addr.port : 0, n ? n->why : "connection lost", q->verb,
                q->kind == R_WRITE ? "; the write's outcome is unknown" : "");
        req_fail(q, CRDT_EUNAVAIL);
    } else if (r->type == REDIS_REPLY_ERROR && r->str &&
               (strncmp(r->str, "MOVED ", 6) == 0 || strncmp(r->str, "ASK ", 4) == 0) &&
               (q->fixed == NULL || q->kind == R_SCAN_STATE)) {
        follow_redirect(s, q, r);
    } else {
        handle_reply(s, q, r);
    }
    s->depth--;
}

/* ---- topology ---------------------------------------------------------------------------------
 */

static void flush_waiting(sr_store_t *s, int rc)
{
    sr_req_t *q = s->wait_head;
    s->wait_head = s->wait_tail = NULL;
    s->nwaiting = 0;
    while (q) {
        sr_req_t *nx = q->next;
        q->prev = q->next = NULL;
        if (rc < 0)
            req_fail(q, rc);
        else
            req_dispatch(s, q);
        q = nx;
    }
}

static void discovery_failed(sr_store_t *s, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(s->err, sizeof(s->err), fmt, ap);
    va_end(ap);
    s->err_set = true;
    s->err_at = now_ms(s);
    s->discovering = false;
    if (s->ready != 1) {
        s->ready = -1;
        s->disc_fails++;
        s->disc_seed = (s->disc_seed + 1) % s->nseeds;
        s->disc_retry_at = now_ms(s) + backoff_ms(s, s->disc_fails);
        flush_waiting(s, CRDT_EUNAVAIL);
    }
}

static void send_to(sr_store_t *s, sr_node_t *n, req_kind_t kind, const char *verb, int argc,
                    const char **argv)
{
    size_t lens[4];
    for (int i = 0; i < argc; i++)
        lens[i] = strlen(argv[i]);
    sr_req_t *q = req_new(s, kind, verb, argc, argv, lens);
    if (!q)
        return;
    q->fixed = n;
    if (!send_on(s, q, n, false)) {
        if (kind == R_SLOTS)
            s->refresh_inflight = false;
        if (kind == R_INFO)
            discovery_failed(s, "redis %s:%d is unreachable: %s", n->addr.host, n->addr.port,
                             n->why);
        req_free(q);
    }
}

static void become_ready(sr_store_t *s)
{
    s->ready = 1;
    s->discovering = false;
    s->disc_fails = 0;
    s->err_set = false;
    flush_waiting(s, 0);
}

/* INFO (server + cluster + crdt) of a seed: is crdt.so loaded, is this a cluster. */
static void discovery_reply(sr_store_t *s, sr_req_t *q, const redisReply *r)
{
    sr_node_t *n = q->node;
    if (r->type == REDIS_REPLY_ERROR) {
        discovery_failed(s, "redis %s:%d: INFO: %.200s", n->addr.host, n->addr.port,
                         r->str ? r->str : "");
        return;
    }
    if (r->type != REDIS_REPLY_STRING) {
        s->rs.bad_replies++;
        discovery_failed(s, "redis %s:%d: INFO did not answer a string: is this a Redis server?",
                         n->addr.host, n->addr.port);
        return;
    }
    char v[64];
    if (!sr_info_field(r, "crdt_node_id", v, sizeof(v))) {
        discovery_failed(s, "redis %s:%d: crdt.so is not loaded (INFO has no crdt_node_id)",
                         n->addr.host, n->addr.port);
        return;
    }
    bool cl = sr_info_field(r, "cluster_enabled", v, sizeof(v)) && strcmp(v, "1") == 0;
    s->cluster = cl;
    if (!cl) {
        int idx = 0;
        for (int i = 0; i < s->nnodes; i++)
            if (s->nodes[i] == n)
                idx = i;
        for (unsigned i = 0; i < CRDTM_SLOTS; i++)
            s->slot_node[i] = (uint16_t)idx;
        become_ready(s);
        return;
    }
    const char *argv[] = {"CLUSTER", "SLOTS"};
    s->refresh_inflight = true;
    send_to(s, n, R_SLOTS, "CLUSTER SLOTS", 2, argv);
    if (!s->refresh_inflight)
        discovery_failed(s, "redis %s:%d: cannot send CLUSTER SLOTS", n->addr.host, n->addr.port);
}

static void slots_reply(sr_store_t *s, sr_req_t *q, const redisReply *r)
{
    s->refresh_inflight = false;
    s->rs.slot_refreshes++;
    sr_range_t *ranges = malloc(sizeof(*ranges) * CRDTM_SLOTS);
    char why[160];
    int n =
        ranges ? sr_parse_slots(r, q->node->addr.host, ranges, CRDTM_SLOTS, why, sizeof(why)) : -1;
    if (n < 0) {
        if (!ranges)
            snprintf(why, sizeof(why), "out of memory");
        if (r->type == REDIS_REPLY_ERROR)
            snprintf(why, sizeof(why), "%.150s", r->str ? r->str : "error");
        else
            s->rs.bad_replies++;
        free(ranges);
        if (s->ready != 1)
            discovery_failed(s, "redis %s:%d: CLUSTER SLOTS: %s", q->node->addr.host,
                             q->node->addr.port, why);
        else
            s->refresh_due = now_ms(s) + s->cfg.backoff_max_ms;
        return;
    }
    uint16_t map[CRDTM_SLOTS];
    for (unsigned i = 0; i < CRDTM_SLOTS; i++)
        map[i] = SR_NO_NODE;
    bool full = true;
    for (int i = 0; i < n; i++) {
        int idx = -1;
        if (!node_get(s, &ranges[i].addr, &idx))
            continue;
        for (unsigned sl = ranges[i].lo; sl <= ranges[i].hi; sl++)
            map[sl] = (uint16_t)idx;
    }
    for (unsigned i = 0; i < CRDTM_SLOTS; i++)
        full = full && map[i] != SR_NO_NODE;
    memcpy(s->slot_node, map, sizeof(map));
    s->follow_started = false; /* a new primary must list its logs first */
    free(ranges);
    /* keep refreshing while part of the map is missing or a mapped node is down (failover) */
    bool down = !full;
    for (unsigned i = 0; i < CRDTM_SLOTS && !down; i++)
        down = s->nodes[map[i]]->state == N_DOWN && s->nodes[map[i]]->fails > 0;
    s->refresh_due = down ? now_ms(s) + 250 : 0;
    if (s->ready != 1)
        become_ready(s);
}

static void start_discovery(sr_store_t *s)
{
    int idx = -1;
    sr_node_t *n = node_get(s, &s->seeds[s->disc_seed], &idx);
    if (!n)
        return;
    s->discovering = true;
    if (s->ready == -1)
        s->ready = 0;
    const char *argv[] = {"INFO", "everything"};
    send_to(s, n, R_INFO, "INFO", 2, argv);
}

/* A node other than the failed ones to ask CLUSTER SLOTS: an up one first, else the next seed. */
static void refresh_slots(sr_store_t *s)
{
    sr_node_t *pick = NULL;
    for (int i = 0; i < s->nnodes && !pick; i++)
        if (s->nodes[i]->state == N_UP)
            pick = s->nodes[i];
    for (int i = 0; i < s->nnodes && !pick; i++)
        if (!s->nodes[i]->fails || now_ms(s) >= s->nodes[i]->retry_at)
            pick = s->nodes[i];
    if (!pick) {
        s->refresh_due = now_ms(s) + 250;
        return;
    }
    s->refresh_due = 0;
    s->refresh_inflight = true;
    const char *argv[] = {"CLUSTER", "SLOTS"};
    send_to(s, pick, R_SLOTS, "CLUSTER SLOTS", 2, argv);
}

/* ---- following the change logs ----------------------------------------------------------------
 */

/* The log of that name (its slot parsed from it), added when new. Found through the slot's
 * chain: a LOG.LIST names every log of a node (one per slot written), so a scan of all the logs
 * per name cost the list's length squared. */
static sr_log_t *log_find_or_add(sr_store_t *s, const char *name, size_t len, unsigned slot,
                                 bool *added)
{
    *added = false;
    if (slot >= CRDTM_SLOTS || len >= CRDTM_LOG_NAME_MAX || s->nlogs >= UINT32_MAX - 1)
        return NULL;
    if (!s->slot_logs) {
        s->slot_logs = malloc(CRDTM_SLOTS * sizeof(*s->slot_logs));
        if (!s->slot_logs)
            return NULL;
        memset(s->slot_logs, 0xff, CRDTM_SLOTS * sizeof(*s->slot_logs));
    }
    for (uint32_t i = s->slot_logs[slot]; i != UINT32_MAX; i = s->logs[i].next)
        if (s->logs[i].nlen == len && memcmp(s->logs[i].name, name, len) == 0)
            return &s->logs[i];
    if (s->nlogs == s->cap_logs) {
        size_t cap = s->cap_logs ? s->cap_logs * 2 : 64;
        sr_log_t *p = realloc(s->logs, cap * sizeof(*p));
        if (!p)
            return NULL;
        s->logs = p;
        s->cap_logs = cap;
    }
    sr_log_t *l = &s->logs[s->nlogs];
    memset(l, 0, sizeof(*l));
    memcpy(l->name, name, len);
    l->nlen = len;
    l->next = s->slot_logs[slot];
    s->slot_logs[slot] = (uint32_t)s->nlogs++;
    *added = true;
    return l;
}

static void follow_send_read(sr_store_t *s, sr_node_t *n, size_t idx)
{
    char cnt[16];
    snprintf(cnt, sizeof(cnt), "%u", s->cfg.follow_count);
    const char *argv[] = {"CRDT.LOG.READ", s->logs[idx].name, s->logs[idx].pos, cnt};
    size_t lens[] = {13, strlen(argv[1]), strlen(argv[2]), strlen(cnt)};
    sr_req_t *q = req_new(s, R_LOG_READ, "CRDT.LOG.READ", 4, argv, lens);
    if (!q)
        return;
    q->fixed = n;
    q->idx = idx;
    n->follow_reads++;
    if (!send_on(s, q, n, false))
        req_fail(q, CRDT_EUNAVAIL);
}

/* CRDT.LOG.POLL of n's logs, SR_POLL_LOGS per command: one command per poll of an idle node
 * rather than one CRDT.LOG.READ per log (a node holds a log per slot written to). */
#define SR_POLL_LOGS 1024
static void follow_send_poll(sr_store_t *s, sr_node_t *n)
{
    size_t i = 0;
    while (i < s->nlogs) {
        size_t *idxs = malloc(SR_POLL_LOGS * sizeof(*idxs));
        const char **argv = malloc((2 + 2 * SR_POLL_LOGS) * sizeof(*argv));
        size_t *lens = malloc((2 + 2 * SR_POLL_LOGS) * sizeof(*lens));
        char cnt[16];
        snprintf(cnt, sizeof(cnt), "%u", s->cfg.follow_count);
        size_t k = 0;
        if (idxs && argv && lens) {
            argv[0] = "CRDT.LOG.POLL";
            lens[0] = 13;
            argv[1] = cnt;
            lens[1] = strlen(cnt);
            for (; i < s->nlogs && k < SR_POLL_LOGS; i++) {
                if (s->logs[i].node != n)
                    continue;
                idxs[k] = i;
                argv[2 + 2 * k] = s->logs[i].name;
                lens[2 + 2 * k] = s->logs[i].nlen;
                argv[3 + 2 * k] = s->logs[i].pos;
                lens[3 + 2 * k] = strlen(s->logs[i].pos);
                k++;
            }
        }
        sr_req_t *q =
            k ? req_new(s, R_LOG_POLL, "CRDT.LOG.POLL", (int)(2 + 2 * k), argv, lens) : NULL;
        free(argv);
        free(lens);
        if (!q) {
            free(idxs);
            return; /* nothing to poll, or out of memory: the next poll tries again */
        }
        q->fixed = n;
        q->idxs = idxs;
        q->nidx = k;
        n->follow_reads++;
        if (!send_on(s, q, n, false))
            req_fail(q, CRDT_EUNAVAIL);
    }
}

static void log_list_reply(sr_store_t *s, sr_req_t *q, const redisReply *r)
{
    sr_node_t *n = q->fixed;
    n->follow_busy = false;
    n->follow_next = now_ms(s) + s->cfg.follow_poll_ms;
    if (r->type != REDIS_REPLY_ARRAY) {
        bad_reply(s, q, r);
        return;
    }
    for (size_t i = 0; i < s->nlogs; i++)
        if (s->logs[i].node == n)
            s->logs[i].node = NULL;
    for (size_t i = 0; i < r->elements; i++) {
        const redisReply *e = r->element ? r->element[i] : NULL;
        uint64_t epoch;
        unsigned slot;
        if (!e || e->type != REDIS_REPLY_STRING || !e->str || e->len >= CRDTM_LOG_NAME_MAX ||
            !crdtm_log_name_parse(e->str, e->len, &epoch, &slot))
            continue; /* not a log name: skip it rather than send it back */
        bool added;
        sr_log_t *l = log_find_or_add(s, e->str, e->len, slot, &added);
        if (!l)
            break;
        /* a new gateway reads the logs there are at its start from their end; a log that
         * appears later, or that a restarted gateway's saved positions do not know (created
         * while it was down), is read from its start */
        if (added)
            snprintf(l->pos, sizeof(l->pos), "%s", n->listed || s->logpos_found ? "0" : "$");
        l->node = n;
    }
    n->listed = true;
    n->follow_busy = true;
    n->follow_reads = 1; /* held while sending */
    if (s->no_poll) {
        for (size_t i = 0; i < s->nlogs; i++)
            if (s->logs[i].node == n)
                follow_send_read(s, n, i);
    } else {
        follow_send_poll(s, n);
    }
    follow_read_done(n);
}

/* One log's CRDT.LOG.READ reply r (alone, or one of a CRDT.LOG.POLL): its entries become change
 * events, its position is kept. */
static void log_read_apply(sr_store_t *s, sr_node_t *n, sr_log_t *l, const sr_req_t *q,
                           const redisReply *r)
{
    char pos[CRDTM_POS_TEXT_MAX], why[160] = "log forgotten";
    bool truncated = false;
    size_t ne = 0;
    if (r && r->type == REDIS_REPLY_ERROR) {
        /* a log deleted, trimmed away or moved with its slot: the next LIST says where */
        set_err(s, "redis %s:%d: %s: %.200s", n->addr.host, n->addr.port, q->verb,
                r->str ? r->str : "error");
        return;
    }
    if (!l || sr_parse_log_read(r, pos, sizeof(pos), &truncated, &ne, why, sizeof(why)) < 0) {
        s->rs.bad_replies++;
        set_err(s, "redis %s:%d: %s", n->addr.host, n->addr.port, why);
        return;
    }
    if (truncated) {
        s->rs.log_truncated++;
        set_err(s,
                "redis %s:%d: change log %s was trimmed past this store's position: changes "
                "were missed (anti-entropy repairs them)",
                n->addr.host, n->addr.port, l->name);
    }
    const crdt_store_events_t *ev = &s->base.ev;
    for (size_t i = 0; i < ne; i++) {
        sr_log_entry_t e;
        crdt_error_t err = {0};
        crdt_obj_t *d = NULL;
        bool ok = sr_log_entry(r, i, &e);
        /* a delta nobody would use is not decoded (a gateway with no subscriber of the key and
         * no peer: the roshi listener's case); the change is reported all the same */
        bool want = ok && delta_wanted(s, e.key, e.klen);
        if (!ok || (want && !(d = crdt_obj_decode(e.delta, e.dlen, &err)))) {
            s->rs.bad_replies++;
            set_err(s, "redis %s:%d: a malformed entry in change log %s: %s", n->addr.host,
                    n->addr.port, l->name, err.text[0] ? err.text : "not [id, key, delta]");
            continue;
        }
        uint64_t seq = seq_assign(s);
        s->rs.log_entries++;
        feed_append(s, e.key, e.klen, seq);
        if (ev->change)
            ev->change(ev->ud, e.key, e.klen, seq, d, e.origin ? e.origin : CRDT_ORIGIN_LOCAL);
        crdt_obj_free(d);
        seq_complete(s, seq);
    }
    if (strcmp(l->pos, pos) != 0) {
        snprintf(l->pos, sizeof(l->pos), "%s", pos);
        s->logpos_dirty = true;
    }
    if (ne >= s->cfg.follow_count)
        n->follow_more = true;
}

static void log_read_reply(sr_store_t *s, sr_req_t *q, const redisReply *r)
{
    sr_node_t *n = q->fixed;
    log_read_apply(s, n, q->idx < s->nlogs ? &s->logs[q->idx] : NULL, q, r);
    follow_read_done(n);
}

/* [[log, <LOG.READ reply>], ..., more]: the logs with news, in the order asked. */
static void log_poll_reply(sr_store_t *s, sr_req_t *q, const redisReply *r)
{
    sr_node_t *n = q->fixed;
    bool more = false;
    size_t items = 0;
    if (sr_parse_log_poll(r, &more, &items, NULL, 0) < 0) {
        bad_reply(s, q, r);
        follow_read_done(n);
        return;
    }
    if (more)
        n->follow_more = true;
    size_t at = 0;
    for (size_t i = 0; i < items; i++) {
        const char *nm;
        size_t nlen;
        const redisReply *read;
        if (!sr_log_poll_item(r, i, &nm, &nlen, &read)) {
            bad_reply(s, q, r);
            break;
        }
        /* the reply keeps the order of the request: find the log from where the last one was */
        while (at < q->nidx && (q->idxs[at] >= s->nlogs || s->logs[q->idxs[at]].nlen != nlen ||
                                memcmp(s->logs[q->idxs[at]].name, nm, nlen) != 0))
            at++;
        if (at == q->nidx) {
            bad_reply(s, q, r);
            break;
        }
        log_read_apply(s, n, &s->logs[q->idxs[at]], q, read);
        at++;
    }
    follow_read_done(n);
}

/* ---- log positions kept across restarts: the mark "log-positions" ---------------------------- */

#define LOGPOS_MARK "log-positions"
#define LOGPOS_SAVE_MS 1000

static void sr_mark_get(crdt_store_t *st, const char *name, crdt_store_mark_cb cb, void *ud);
static void sr_mark_put(crdt_store_t *st, const char *name, const void *p, size_t n,
                        crdt_store_status_cb cb, void *ud);

/* "name pos\n" per line; lines of another shape are skipped (the mark is ours, but Redis keeps it
 * and anyone can SET it) */
static void logpos_loaded(void *ud, int rc, const void *p, size_t n)
{
    sr_store_t *s = ud;
    s->logpos_busy = false;
    if (rc < 0) {
        s->logpos_retry_at = now_ms(s) + s->cfg.backoff_max_ms;
        return;
    }
    const char *b = p, *end = b ? b + n : NULL;
    while (b && b < end) {
        const char *eol = memchr(b, '\n', (size_t)(end - b));
        const char *le = eol ? eol : end;
        const char *sp = memchr(b, ' ', (size_t)(le - b));
        uint64_t epoch;
        unsigned slot;
        crdtm_pos_t pos;
        const char *why;
        if (sp && (size_t)(sp - b) < CRDTM_LOG_NAME_MAX && (size_t)(le - sp - 1) > 0 &&
            (size_t)(le - sp - 1) < CRDTM_POS_TEXT_MAX &&
            crdtm_log_name_parse(b, (size_t)(sp - b), &epoch, &slot) &&
            crdtm_pos_parse(sp + 1, (size_t)(le - sp - 1), &pos, &why) == 0) {
            bool added;
            sr_log_t *l = log_find_or_add(s, b, (size_t)(sp - b), slot, &added);
            if (l && added) {
                memcpy(l->pos, sp + 1, (size_t)(le - sp - 1));
                l->pos[le - sp - 1] = '\0';
                s->rs.log_resumed++;
            }
        }
        b = le + 1;
    }
    s->logpos_found = s->nlogs > 0;
    s->logpos_loaded = true;
}

static void logpos_saved(void *ud, int rc)
{
    sr_store_t *s = ud;
    s->logpos_busy = false;
    if (rc < 0)
        s->logpos_dirty = true;
}

static void logpos_save(sr_store_t *s)
{
    crdt_buf_t b = {0};
    bool okb = true;
    for (size_t i = 0; i < s->nlogs && okb; i++) {
        const sr_log_t *l = &s->logs[i];
        if (strcmp(l->pos, "$") == 0 || !l->pos[0])
            continue; /* nothing read yet: nothing to resume */
        okb = crdt_buf_append(&b, l->name, strlen(l->name)) == 0 &&
              crdt_buf_append(&b, " ", 1) == 0 &&
              crdt_buf_append(&b, l->pos, strlen(l->pos)) == 0 && crdt_buf_append(&b, "\n", 1) == 0;
    }
    if (okb) {
        s->logpos_dirty = false;
        s->logpos_busy = true;
        s->logpos_saved_at = now_ms(s);
        sr_mark_put(&s->base, LOGPOS_MARK, b.data, b.len, logpos_saved, s);
    }
    crdt_buf_free(&b);
}

/* Before following: the positions a previous run of this gateway (same node id) saved. */
static bool logpos_ready(sr_store_t *s, uint64_t now)
{
    if (s->logpos_loaded)
        return true;
    if (!s->logpos_busy && now >= s->logpos_retry_at) {
        s->logpos_busy = true;
        sr_mark_get(&s->base, LOGPOS_MARK, logpos_loaded, s);
    }
    return s->logpos_loaded;
}

static void follow(sr_store_t *s, const bool *used, uint64_t now)
{
    if (!logpos_ready(s, now))
        return;
    for (int i = 0; i < s->nnodes; i++) {
        sr_node_t *n = s->nodes[i];
        if (!used[i] || n->follow_busy || now < n->follow_next || n->state != N_UP)
            continue;
        const char *argv[] = {"CRDT.LOG.LIST"};
        size_t lens[] = {13};
        sr_req_t *q = req_new(s, R_LOG_LIST, "CRDT.LOG.LIST", 1, argv, lens);
        if (!q)
            return;
        q->fixed = n;
        n->follow_busy = true;
        if (!send_on(s, q, n, false))
            req_fail(q, CRDT_EUNAVAIL);
    }
}

static void housekeeping(sr_store_t *s)
{
    uint64_t now = now_ms(s);
    /* reply and connect timeouts */
    for (int i = 0; i < s->nnodes; i++) {
        sr_node_t *n = s->nodes[i];
        if (!n->conn)
            continue;
        if (n->state == N_CONNECTING && now - n->since > s->cfg.timeout_ms) {
            s->rs.timeouts++;
            node_down(n, "connect timed out");
        } else if (n->head && now > n->head->deadline) {
            s->rs.timeouts++;
            char why[96];
            snprintf(why, sizeof(why), "no reply within %u ms", s->cfg.timeout_ms);
            node_down(n, why);
        }
    }
    /* operations waiting for the topology do not wait forever */
    while (s->wait_head && now - s->wait_head->sent_ms > s->cfg.timeout_ms) {
        sr_req_t *q = s->wait_head;
        s->wait_head = q->next;
        if (!s->wait_head)
            s->wait_tail = NULL;
        s->nwaiting--;
        q->next = NULL;
        if (!s->err_set)
            set_err(s, "the Redis topology is not known yet (discovery did not finish in %u ms)",
                    s->cfg.timeout_ms);
        req_fail(q, CRDT_EUNAVAIL);
    }
    if (s->ready != 1 && !s->discovering && now >= s->disc_retry_at)
        start_discovery(s);
    if (s->ready == 1 && s->cluster == 1 && s->refresh_due && now >= s->refresh_due &&
        !s->refresh_inflight)
        refresh_slots(s);
    if (s->ready != 1)
        return;
    /* reconnect the nodes the map uses once their backoff passed; healthy again once all are up */
    bool used[SR_MAX_NODES] = {0};
    for (unsigned i = 0; i < CRDTM_SLOTS; i++)
        if (s->slot_node[i] < SR_MAX_NODES)
            used[s->slot_node[i]] = true;
    bool ok = !s->refresh_due;
    for (int i = 0; i < s->nnodes; i++) {
        sr_node_t *n = s->nodes[i];
        if (!used[i])
            continue;
        if (!n->conn && now >= n->retry_at)
            node_ensure(n);
        ok = ok && n->state == N_UP;
    }
    if (ok && s->err_set && now - s->err_at >= SR_ERR_HOLD_MS)
        s->err_set = false;
    if (s->cfg.follow_logs) {
        follow(s, used, now);
        if (s->logpos_loaded && s->logpos_dirty && !s->logpos_busy &&
            now - s->logpos_saved_at >= LOGPOS_SAVE_MS)
            logpos_save(s);
    }
}

static void on_timer(void *ud)
{
    sr_store_t *s = ud;
    housekeeping(s);
    s->loop->timer_arm(s->loop->ctx, s->timer, SR_HOUSEKEEPING_MS);
}

/* ---- operations -------------------------------------------------------------------------------
 */

static void sr_get(crdt_store_t *st, const void *key, size_t klen, crdt_store_get_cb cb, void *ud)
{
    sr_store_t *s = srs(st);
    const char *argv[] = {"CRDT.STATE", key};
    size_t lens[] = {10, klen};
    sr_req_t *q = req_new(s, R_GET, "CRDT.STATE", 2, argv, lens);
    if (!q) {
        cb(ud, CRDT_ENOMEM, NULL);
        return;
    }
    q->cb = (void *)cb;
    q->ud = ud;
    route(q, key, klen);
    req_dispatch(s, q);
}

#define SR_MANY_ARGS_MAX 8

/* Sends `verb key args...` (nargs <= SR_MANY_ARGS_MAX, borrowed) for keys[a..e) of m, pipelined
 * and routed by slot; a request that cannot be made counts as that key's failure. */
static void many_issue_args(sr_store_t *s, sr_many_t *m, const crdt_bytes_t *keys, size_t a,
                            size_t e, req_kind_t kind, const char *verb, const char *const *args,
                            const size_t *alens, int nargs)
{
    const char *argv[2 + SR_MANY_ARGS_MAX] = {verb};
    size_t lens[2 + SR_MANY_ARGS_MAX] = {strlen(verb)};
    for (int k = 0; k < nargs; k++)
        argv[2 + k] = args[k], lens[2 + k] = alens[k];
    for (size_t i = a; i < e; i++) {
        argv[1] = keys[i].data;
        lens[1] = keys[i].len;
        sr_req_t *q = req_new(s, kind, verb, 2 + nargs, argv, lens);
        if (!q) {
            many_part(m, i, CRDT_ENOMEM, NULL);
            continue;
        }
        q->many = m;
        q->idx = i;
        route(q, keys[i].data, keys[i].len);
        req_dispatch(s, q);
    }
}

/* Sends `verb key` for each of the n keys of m (many_issue_args). */
static void many_issue(sr_store_t *s, sr_many_t *m, const crdt_bytes_t *keys, size_t n,
                       req_kind_t kind, const char *verb)
{
    many_issue_args(s, m, keys, 0, n, kind, verb, NULL, NULL, 0);
}

static void sr_get_many(crdt_store_t *st, const crdt_bytes_t *keys, size_t n,
                        crdt_store_get_many_cb cb, void *ud)
{
    sr_store_t *s = srs(st);
    if (n == 0) {
        cb(ud, 0, NULL, 0);
        return;
    }
    sr_many_t *m = calloc(1, sizeof(*m));
    crdt_obj_t **objs = calloc(n, sizeof(*objs));
    if (!m || !objs) {
        free(m);
        free(objs);
        cb(ud, CRDT_ENOMEM, NULL, 0);
        return;
    }
    *m = (sr_many_t){.cb = cb, .ud = ud, .n = n, .left = n, .objs = objs, .bad = SIZE_MAX};
    /* one CRDT.STATE per key, all pipelined: keys of a roshi select may live on every primary */
    many_issue(s, m, keys, n, R_MANY, "CRDT.STATE");
}

/* CRDT.TYPE of each key, pipelined: a type check without reading (and decoding) whole states */
static void sr_types(crdt_store_t *st, const crdt_bytes_t *keys, size_t n, crdt_store_types_cb cb,
                     void *ud)
{
    sr_store_t *s = srs(st);
    if (n == 0) {
        cb(ud, 0, NULL, 0);
        return;
    }
    sr_many_t *m = calloc(1, sizeof(*m));
    crdt_type_t *types = calloc(n, sizeof(*types));
    crdt_obj_t **objs = calloc(n, sizeof(*objs)); /* none: freed with the aggregate */
    if (!m || !types || !objs) {
        free(m);
        free(types);
        free(objs);
        cb(ud, CRDT_ENOMEM, NULL, 0);
        return;
    }
    *m = (sr_many_t){
        .tcb = cb, .ud = ud, .n = n, .left = n, .objs = objs, .types = types, .bad = SIZE_MAX};
    many_issue(s, m, keys, n, R_TYPES, "CRDT.TYPE");
}

static int hlc_stamp(sr_store_t *s, crdt_hlc_ts_t *ts)
{
    return crdt_hlc_tick(&s->hlc, crdt_wall_ms(), ts);
}

/* CRDT.MERGE key <delta>, with ORIGIN <id> for a peer's change (origin not CRDT_ORIGIN_LOCAL):
 * the module writes it into the change log entry, so followers tell it from a local change. */
static sr_req_t *merge_req(sr_store_t *s, const void *key, size_t klen, const crdt_obj_t *delta,
                           int *rc, uint64_t origin)
{
    crdt_buf_t b = {0};
    *rc = crdt_obj_encode(delta, &b);
    if (*rc < 0) {
        crdt_buf_free(&b);
        return NULL;
    }
    char ob[24];
    snprintf(ob, sizeof(ob), "%llu", (unsigned long long)origin);
    const char *argv[] = {"CRDT.MERGE", key, (const char *)b.data, "ORIGIN", ob};
    size_t lens[] = {10, klen, b.len, 6, strlen(ob)};
    sr_req_t *q =
        req_new(s, R_WRITE, "CRDT.MERGE", origin != CRDT_ORIGIN_LOCAL ? 5 : 3, argv, lens);
    crdt_buf_free(&b);
    if (!q)
        *rc = CRDT_ENOMEM;
    return q;
}

static void start_write(sr_store_t *s, sr_req_t *q, const void *key, size_t klen,
                        crdt_store_write_cb cb, void *ud, uint64_t origin)
{
    q->cb = (void *)cb;
    q->ud = ud;
    q->origin = origin;
    q->key = malloc(klen ? klen : 1);
    if (!q->key) {
        q->rc = CRDT_ENOMEM;
        write_finish(q);
        return;
    }
    if (klen)
        memcpy(q->key, key, klen);
    q->klen = klen;
    route(q, key, klen);
    req_dispatch(s, q);
}

static void sr_write(crdt_store_t *st, const void *key, size_t klen, const crdt_mut_t *m,
                     crdt_store_write_cb cb, void *ud)
{
    sr_store_t *s = srs(st);
    int rc = 0;
    crdt_mut_t mm = *m;
    /* Validate with libcrdt itself on an empty object of the type (kind, score, member size,
     * sign of a grow-only increment), so bad input never reaches Redis. */
    if (mm.kind != CRDT_MUT_MERGE) {
        if (mm.type < 1 || mm.type > CRDT_TYPE_MAX) {
            cb(ud, CRDT_EINVAL, 0);
            return;
        }
        crdt_obj_t *probe = crdt_obj_new(mm.type);
        crdt_mut_t pm = mm;
        if (crdt_mut_needs_ts(&pm) && pm.ts.ms == 0)
            pm.ts = (crdt_hlc_ts_t){.ms = 1, .node = s->cfg.node_id};
        rc = probe ? crdt_mut_apply(probe, &pm, s->cfg.node_id, NULL) : CRDT_ENOMEM;
        crdt_obj_free(probe);
        if (rc < 0) {
            cb(ud, rc, 0);
            return;
        }
    }
    sr_req_t *q = NULL;
    char num[48];
    if (mm.kind == CRDT_MUT_DELETE) {
        /* the observed-remove runs in Redis, on what it holds, stamped by the module's clock */
        const char *tn = crdt_type_name(mm.type);
        const char *argv[] = {"CRDT.DELETE", key, "TYPE", tn};
        size_t lens[] = {11, klen, 4, strlen(tn)};
        q = req_new(s, R_WRITE, "CRDT.DELETE", 4, argv, lens);
        if (!q) {
            cb(ud, CRDT_ENOMEM, 0);
            return;
        }
        q->typed_count = true;
        start_write(s, q, key, klen, cb, ud, CRDT_ORIGIN_LOCAL);
        return;
    }
    switch (mm.kind == CRDT_MUT_MERGE ? CRDT_TYPE_MAX + 1 : mm.type) {
    case CRDT_TIMELINE: {
        snprintf(num, sizeof(num), "%.17g", mm.score);
        const char *verb = mm.kind == CRDT_MUT_ADD ? "CRDT.TLADD" : "CRDT.TLREM";
        const char *argv[] = {verb, key, num, mm.bytes ? mm.bytes : ""};
        size_t lens[] = {10, klen, strlen(num), mm.len};
        q = req_new(s, R_WRITE, verb, 4, argv, lens);
        if (q)
            q->typed_count = true;
        break;
    }
    case CRDT_ORSET: {
        const char *verb = mm.kind == CRDT_MUT_ADD ? "CRDT.SADD" : "CRDT.SREM";
        const char *argv[] = {verb, key, mm.bytes ? mm.bytes : ""};
        size_t lens[] = {9, klen, mm.len};
        q = req_new(s, R_WRITE, verb, 3, argv, lens);
        if (q)
            q->typed_count = true;
        break;
    }
    case CRDT_GCOUNTER:
    case CRDT_PNCOUNTER: {
        /* GINCRBY: an absent key becomes a G-counter, as in the embedded store (INCRBY would
         * make a PN-counter, and the next grow-only write would find the wrong type) */
        const char *verb = mm.type == CRDT_GCOUNTER ? "CRDT.GINCRBY" : "CRDT.INCRBY";
        snprintf(num, sizeof(num), "%lld", (long long)mm.n);
        const char *argv[] = {verb, key, num};
        size_t lens[] = {strlen(verb), klen, strlen(num)};
        q = req_new(s, R_WRITE, verb, 3, argv, lens);
        if (q) {
            q->incr = true;
            q->n = mm.n;
        }
        break;
    }
    case CRDT_LWWREG:
        if (mm.ts.ms == 0) {
            /* stamped by the module's HLC, after everything the register holds */
            const char *argv[] = {"CRDT.SET", key, mm.bytes ? mm.bytes : ""};
            size_t lens[] = {8, klen, mm.len};
            q = req_new(s, R_WRITE, "CRDT.SET", 3, argv, lens);
            break;
        }
        /* a write with its own timestamp is a delta */
        __attribute__((fallthrough));
    case CRDT_LWWSET: {
        if (mm.ts.ms == 0 && (rc = hlc_stamp(s, &mm.ts)) < 0)
            break;
        crdt_obj_t *o = crdt_obj_new(mm.type), *delta = NULL;
        rc = o ? crdt_mut_apply(o, &mm, s->cfg.node_id, &delta) : CRDT_ENOMEM;
        crdt_obj_free(o);
        if (rc > 0 && delta) {
            q = merge_req(s, key, klen, delta, &rc, CRDT_ORIGIN_LOCAL);
            if (q)
                q->delta = delta;
            else
                crdt_obj_free(delta);
        } else if (rc >= 0) {
            crdt_obj_free(delta);
            rc = CRDT_EINVAL;
        }
        break;
    }
    default: /* MERGE */
        if (!mm.state) {
            rc = CRDT_EINVAL;
            break;
        }
        q = merge_req(s, key, klen, mm.state, &rc, CRDT_ORIGIN_LOCAL);
        if (q && s->base.ev.change && !(q->delta = crdt_obj_clone(mm.state))) {
            req_free(q);
            q = NULL;
            rc = CRDT_ENOMEM;
        }
        break;
    }
    if (!q) {
        cb(ud, rc < 0 ? rc : CRDT_ENOMEM, 0);
        return;
    }
    start_write(s, q, key, klen, cb, ud, CRDT_ORIGIN_LOCAL);
}

static void sr_apply(crdt_store_t *st, const void *key, size_t klen, const crdt_obj_t *delta,
                     uint64_t origin, crdt_store_write_cb cb, void *ud)
{
    sr_store_t *s = srs(st);
    int rc = 0;
    sr_req_t *q = delta ? merge_req(s, key, klen, delta, &rc, origin) : NULL;
    if (!q) {
        cb(ud, delta ? rc : CRDT_EINVAL, 0);
        return;
    }
    if (s->base.ev.change && !(q->delta = crdt_obj_clone(delta))) {
        req_free(q);
        cb(ud, CRDT_ENOMEM, 0);
        return;
    }
    /* the receive step of our clock: a peer's register or set timestamps move hlc_now past them */
    crdt_type_t t = crdt_obj_type(delta);
    if (t == CRDT_LWWREG) {
        crdt_hlc_ts_t seen, out; /* a value's timestamp, or a clear's */
        if (crdt_obj_max_ts(delta, &seen) == 1)
            crdt_hlc_recv(&s->hlc, crdt_wall_ms(), &seen, &out);
    }
    start_write(s, q, key, klen, cb, ud, origin);
}

/* ---- timeline writes checked as one: tl_write_batch over CRDT.TLMADD / CRDT.TLMREM -------------
 *
 * The writes are grouped by hash slot (a cluster refuses a command over keys of several slots
 * with CROSSSLOT; a single server, once known not to be a cluster, takes them all in one group).
 * One group: its command checks every key's type before writing any, so the batch is one command.
 * Several: a CRDT.TYPE per key first (the types phase), then every group's command at once. Each
 * group then numbers its changes (after reading the changed keys' states for the change event when
 * the logs are not followed), waits for replicas if asked, and the batch completes with the last.
 */

typedef struct sr_bgroup {
    sr_req_t *q;     /* formatted and not sent yet (the types phase); NULL once sent */
    size_t first, n; /* its writes: b->order[first .. first + n) */
    sr_node_t *node; /* where it was applied */
    size_t pending;  /* state reads in flight */
    bool changed;
    bool redo; /* the module has no CRDT.TLMADD: its writes go one by one (after the types) */
} sr_bgroup_t;

struct sr_batch {
    sr_store_t *st;
    sr_batch_t *prev, *next; /* the store's list of batches in progress */
    crdt_store_batch_cb cb;
    void *ud;
    size_t n, ngroups, left; /* left: groups not done */
    size_t *order;           /* write indices grouped by slot */
    sr_bgroup_t *groups;
    char *kbuf; /* the keys' copies: key i at kbuf + koff[i], koff[i + 1] - koff[i] */
    size_t *koff;
    uint64_t *seqs; /* the changes' seqs, completed after cb */
    size_t nseqs;
    char *mbuf; /* the members' copies (as kbuf), and the scores: for writes one by one */
    size_t *moff;
    double *scores;
    size_t tlm_applied; /* changes made by CRDT.TLMADD (one by one: counted by sr_write) */
    bool add;
    bool typed; /* the types phase ran */
    bool redo;  /* a group is to be written one by one once every group answered */
    int rc;
    crdt_store_batch_result_t res;
};

static void batch_free(sr_batch_t *b)
{
    sr_store_t *s = b->st;
    if (b->prev)
        b->prev->next = b->next;
    else
        s->batches = b->next;
    if (b->next)
        b->next->prev = b->prev;
    for (size_t g = 0; g < b->ngroups; g++)
        req_free(b->groups[g].q);
    free(b); /* one block with its arrays */
}

static void batch_finish(sr_batch_t *b)
{
    sr_store_t *s = b->st;
    s->writes += b->tlm_applied;
    b->cb(b->ud, b->rc, &b->res);
    for (size_t i = 0; i < b->nseqs; i++)
        seq_complete(s, b->seqs[i]);
    batch_free(b);
}

static void batch_types_start(sr_batch_t *b);
static void batch_send(sr_batch_t *b);

static void batch_group_done(sr_batch_t *b, int rc)
{
    if (rc < 0 && b->rc == 0)
        b->rc = rc;
    if (--b->left)
        return;
    if (b->redo && b->rc == 0) {
        /* groups an older crdt.so refused: their writes one by one, every type checked first */
        b->redo = false;
        if (b->typed)
            batch_send(b);
        else
            batch_types_start(b);
        return;
    }
    batch_finish(b);
}

/* One write of a redone group completed (sr_write numbered it and waited for replicas). */
static void batch_one_done(void *ud, int rc, uint64_t seq)
{
    sr_batch_t *b = ud;
    if (rc > 0) {
        b->res.applied++;
        if (seq > b->res.seq)
            b->res.seq = seq;
    }
    batch_group_done(b, rc < 0 ? rc : 0);
}

/* Every group not sent yet: its command, or (an older crdt.so) its writes one by one. */
static void batch_send(sr_batch_t *b)
{
    sr_store_t *s = b->st;
    b->left++; /* held while sending: a send that fails at once completes its part */
    for (size_t g = 0; g < b->ngroups; g++) {
        sr_bgroup_t *G = &b->groups[g];
        if (G->redo || (s->no_tlm && G->q)) {
            G->redo = false;
            req_free(G->q);
            G->q = NULL;
            for (size_t k = G->first; k < G->first + G->n; k++) {
                size_t i = b->order[k];
                crdt_mut_t m = {.type = CRDT_TIMELINE,
                                .kind = b->add ? CRDT_MUT_ADD : CRDT_MUT_REMOVE,
                                .bytes = b->mbuf + b->moff[i],
                                .len = b->moff[i + 1] - b->moff[i],
                                .score = b->scores[i]};
                b->left++;
                sr_write(&s->base, b->kbuf + b->koff[i], b->koff[i + 1] - b->koff[i], &m,
                         batch_one_done, b);
            }
        } else if (G->q) {
            sr_req_t *q = G->q;
            G->q = NULL;
            b->left++;
            req_dispatch(s, q);
        }
    }
    batch_group_done(b, 0);
}

static sr_req_t *batch_child(sr_batch_t *b, size_t g, req_kind_t kind, const char *verb, int argc,
                             const char **argv, const size_t *lens)
{
    sr_req_t *c = req_new(b->st, kind, verb, argc, argv, lens);
    if (!c)
        return NULL;
    c->batch = b;
    c->idx = g;
    c->fixed = b->groups[g].node; /* the node that applied the writes */
    return c;
}

/* A change of the batch numbered (and, without following the logs, reported). */
static void batch_change(sr_batch_t *b, size_t i, const crdt_obj_t *state, bool wanted)
{
    sr_store_t *s = b->st;
    uint64_t seq = seq_assign(s);
    if (!seq)
        return; /* no memory for the window: the change is not numbered */
    b->seqs[b->nseqs++] = seq;
    if (seq > b->res.seq)
        b->res.seq = seq;
    if (s->cfg.follow_logs)
        return; /* the change comes back from the log */
    report_change(s, b->kbuf + b->koff[i], b->koff[i + 1] - b->koff[i], seq, state,
                  CRDT_ORIGIN_LOCAL, wanted);
}

/* A group's changes are numbered: WAIT for replicas if asked, then it is done. */
static void batch_group_after(sr_batch_t *b, size_t g)
{
    sr_store_t *s = b->st;
    if (!s->cfg.wait_replicas || !b->groups[g].changed) {
        batch_group_done(b, 0);
        return;
    }
    char nb[16], tb[16];
    snprintf(nb, sizeof(nb), "%u", s->cfg.wait_replicas);
    snprintf(tb, sizeof(tb), "%u", s->cfg.wait_timeout_ms);
    const char *argv[] = {"WAIT", nb, tb};
    size_t lens[] = {4, strlen(nb), strlen(tb)};
    sr_req_t *c = batch_child(b, g, R_BATCH_WAIT, "WAIT", 3, argv, lens);
    if (!c) {
        batch_group_done(b, CRDT_ENOMEM);
        return;
    }
    req_dispatch(s, c);
}

static void batch_state_done(sr_batch_t *b, size_t g)
{
    if (--b->groups[g].pending == 0)
        batch_group_after(b, g);
}

/* The group's command answered: changed[k] for its k-th write. */
static void batch_applied(sr_batch_t *b, size_t g, const uint8_t *changed)
{
    sr_store_t *s = b->st;
    sr_bgroup_t *G = &b->groups[g];
    bool states = !s->cfg.follow_logs && s->base.ev.change;
    G->pending = 1; /* held while issuing */
    for (size_t k = 0; k < G->n; k++) {
        size_t i = b->order[G->first + k];
        if (!changed[k]) {
            s->noops++;
            continue;
        }
        b->res.applied++;
        b->tlm_applied++;
        G->changed = true;
        sr_req_t *c = NULL;
        bool wanted = states && delta_wanted(s, b->kbuf + b->koff[i], b->koff[i + 1] - b->koff[i]);
        if (wanted) {
            const char *argv[] = {"CRDT.STATE", b->kbuf + b->koff[i]};
            size_t lens[] = {10, b->koff[i + 1] - b->koff[i]};
            c = batch_child(b, g, R_BATCH_STATE, "CRDT.STATE", 2, argv, lens);
        }
        if (!c) {
            batch_change(b, i, NULL, wanted);
            continue;
        }
        c->bidx = i;
        G->pending++;
        req_dispatch(s, c);
    }
    batch_state_done(b, g);
}

static void batch_req_failed(sr_req_t *q, int rc)
{
    sr_batch_t *b = q->batch;
    switch (q->kind) {
    case R_BATCH: batch_group_done(b, rc); break;
    case R_BATCH_STATE:
        /* the write was applied; only its change event is lost */
        batch_change(b, q->bidx, NULL, true);
        batch_state_done(b, q->idx);
        break;
    default: /* R_BATCH_WAIT: applied, not known to be replicated */ batch_group_done(b, rc); break;
    }
}

/* WRONGTYPE from a group's command: nothing of it was written; the write it names. An older
 * crdt.so without the command: nothing written either; the group is redone one write at a time
 * (after a types phase), and so is every batch from then on. */
static bool batch_wrongtype(sr_req_t *q, const redisReply *r)
{
    sr_batch_t *b = q->batch;
    if (r->str && strncmp(r->str, "ERR unknown command", 19) == 0) {
        q->st->no_tlm = true;
        b->groups[q->idx].redo = true;
        b->redo = true;
        batch_group_done(b, 0);
        return true;
    }
    if (!r->str || strncmp(r->str, "WRONGTYPE", 9) != 0)
        return false;
    sr_bgroup_t *G = &b->groups[q->idx];
    size_t pos;
    crdt_type_t t;
    if (b->res.bad == SIZE_MAX && sr_parse_tlm_wrongtype(r->str, r->len, G->n, &pos, &t)) {
        b->res.bad = b->order[G->first + pos];
        b->res.bad_type = t;
    }
    batch_group_done(b, CRDT_ETYPE);
    return true;
}

static void batch_reply(sr_store_t *s, sr_req_t *q, const redisReply *r)
{
    sr_batch_t *b = q->batch;
    size_t g = q->idx;
    if (q->kind == R_BATCH) {
        sr_bgroup_t *G = &b->groups[g];
        uint8_t one[16], *changed = G->n <= sizeof(one) ? one : malloc(G->n);
        char why[96];
        if (!changed) {
            batch_group_done(b, CRDT_ENOMEM);
            return;
        }
        G->node = q->node;
        if (sr_parse_tlm(r, G->n, changed, why, sizeof(why)) < 0) {
            s->rs.bad_replies++;
            set_err(s, "redis %s:%d: %s", q->node->addr.host, q->node->addr.port, why);
            batch_group_done(b, CRDT_EIO);
        } else {
            batch_applied(b, g, changed);
        }
        if (changed != one)
            free(changed);
    } else if (q->kind == R_BATCH_STATE) {
        crdt_obj_t *obj = NULL;
        decode_state(s, q, r, &obj);
        batch_change(b, q->bidx, obj, true);
        crdt_obj_free(obj);
        batch_state_done(b, g);
    } else { /* R_BATCH_WAIT */
        int rc = 0;
        if (r->type != REDIS_REPLY_INTEGER) {
            rc = bad_reply(s, q, r);
        } else if (r->integer < (long long)s->cfg.wait_replicas) {
            set_err(s, "redis %s:%d: WAIT %u: only %lld replicas acknowledged within %u ms",
                    q->node->addr.host, q->node->addr.port, s->cfg.wait_replicas, r->integer,
                    s->cfg.wait_timeout_ms);
            rc = CRDT_EUNAVAIL;
        }
        batch_group_done(b, rc);
    }
}

/* The types phase answered: every key a timeline or nothing, then every group goes. */
static void batch_typed(sr_batch_t *b, int rc, const crdt_type_t *types, size_t bad)
{
    if (rc == CRDT_ETYPE) {
        b->res.bad = bad < b->n ? bad : SIZE_MAX; /* not a CRDT (CRDT.TYPE: WRONGTYPE) */
    } else if (rc == 0) {
        for (size_t i = 0; i < b->n && rc == 0; i++)
            if (types[i] && types[i] != CRDT_TIMELINE) {
                rc = CRDT_ETYPE;
                b->res.bad = i;
                b->res.bad_type = types[i];
            }
    }
    if (rc < 0) {
        b->rc = rc;
        batch_finish(b);
        return;
    }
    b->left = 0;
    batch_send(b);
}

/* The types phase: a CRDT.TYPE per key, pipelined (the keys may live on every primary). */
static void batch_types_start(sr_batch_t *b)
{
    sr_store_t *s = b->st;
    size_t n = b->n;
    b->typed = true;
    sr_many_t *m = calloc(1, sizeof(*m));
    crdt_type_t *types = calloc(n, sizeof(*types));
    crdt_obj_t **objs = calloc(n, sizeof(*objs));
    crdt_bytes_t *keys = malloc(n * sizeof(*keys));
    if (!m || !types || !objs || !keys) {
        free(m), free(types), free(objs), free(keys);
        b->rc = CRDT_ENOMEM;
        batch_finish(b);
        return;
    }
    for (size_t i = 0; i < n; i++)
        keys[i] = (crdt_bytes_t){b->kbuf + b->koff[i], b->koff[i + 1] - b->koff[i]};
    *m = (sr_many_t){.n = n, .left = n, .objs = objs, .types = types, .batch = b, .bad = SIZE_MAX};
    many_issue(s, m, keys, n, R_TYPES, "CRDT.TYPE");
    free(keys);
}

typedef struct slot_idx {
    unsigned slot;
    size_t i;
} slot_idx_t;

static int slot_idx_cmp(const void *a, const void *b)
{
    const slot_idx_t *x = a, *y = b;
    if (x->slot != y->slot)
        return x->slot < y->slot ? -1 : 1;
    return (x->i > y->i) - (x->i < y->i);
}

/* Decimal digits of v at p; their count. */
static size_t put_dec(char *p, uint64_t v)
{
    char t[20];
    size_t n = 0;
    do
        t[n++] = (char)('0' + v % 10);
    while (v /= 10);
    for (size_t i = 0; i < n; i++)
        p[i] = t[n - 1 - i];
    return n;
}

/* "$<len>\r\n<bytes>\r\n" at p (room for len + 26); its length. */
static size_t put_bulk_arg(char *p, const void *d, size_t len)
{
    size_t at = 0;
    p[at++] = '$';
    at += put_dec(p + at, len);
    p[at++] = '\r', p[at++] = '\n';
    if (len)
        memcpy(p + at, d, len);
    at += len;
    p[at++] = '\r', p[at++] = '\n';
    return at;
}

/* A score as the module reads it back exactly: the digits of an integer below 2^53 (the usual
 * roshi scores: timestamps), else %.17g. */
static size_t put_score(char *p, double d)
{
    if (d > -9007199254740992.0 && d < 9007199254740992.0 && d == (double)(int64_t)d) {
        int64_t v = (int64_t)d;
        size_t at = 0;
        if (v < 0)
            p[at++] = '-';
        return at + put_dec(p + at, (uint64_t)(v < 0 ? -v : v));
    }
    return (size_t)snprintf(p, 32, "%.17g", d);
}

/* The RESP of `verb` over the writes order[a..e) (malloc'd, *len). Formatted here rather than with
 * redisFormatCommandArgv: no argv arrays, and no snprintf per argument. */
static char *batch_format(const sr_batch_t *b, const crdt_store_kmut_t *w, size_t a, size_t e,
                          size_t *len)
{
    size_t cap = 16 + 26 + 11 + 1; /* + 1: the NUL below */
    for (size_t k = a; k < e; k++) {
        size_t i = b->order[k];
        cap += 3 * 26 + w[i].klen + 32 + w[i].m.len;
    }
    char *c = malloc(cap), *p = c;
    if (!c)
        return NULL;
    *p++ = '*';
    p += put_dec(p, 1 + 3 * (e - a));
    *p++ = '\r', *p++ = '\n';
    p += put_bulk_arg(p, b->add ? "CRDT.TLMADD" : "CRDT.TLMREM", 11);
    for (size_t k = a; k < e; k++) {
        size_t i = b->order[k];
        char num[32];
        size_t nl = put_score(num, w[i].m.score);
        p += put_bulk_arg(p, w[i].key, w[i].klen);
        p += put_bulk_arg(p, num, nl);
        p += put_bulk_arg(p, w[i].m.bytes, w[i].m.len);
    }
    *len = (size_t)(p - c);
    /* hiredis 0.14's redisAsyncFormattedCommand finds the command name with strchr: the
     * formatted command must end in a NUL, as redisFormatCommandArgv's do. */
    *p = '\0';
    return c;
}

static sr_req_t *req_raw(sr_store_t *s, req_kind_t kind, const char *verb, char *cmd, size_t len)
{
    sr_req_t *q = calloc(1, sizeof(*q));
    if (!q) {
        free(cmd);
        return NULL;
    }
    q->st = s;
    q->kind = kind;
    q->verb = verb;
    q->cmd = cmd;
    q->cmdlen = len;
    q->slot = SR_NO_NODE;
    return q;
}

static void sr_tl_write_batch(crdt_store_t *st, const crdt_store_kmut_t *w, size_t n,
                              crdt_store_batch_cb cb, void *ud)
{
    sr_store_t *s = srs(st);
    crdt_store_batch_result_t res = {.bad = SIZE_MAX};
    if (n == 0) {
        cb(ud, 0, &res);
        return;
    }
    /* the checks libcrdt makes of a timeline write, so bad input never reaches Redis */
    size_t ktotal = 0, mtotal = 0;
    for (size_t i = 0; i < n; i++) {
        const crdt_mut_t *m = &w[i].m;
        if (m->type != CRDT_TIMELINE || m->kind != w[0].m.kind ||
            (m->kind != CRDT_MUT_ADD && m->kind != CRDT_MUT_REMOVE) || !isfinite(m->score) ||
            m->len > CRDT_MAX_BLOB || (m->len && !m->bytes) || (w[i].klen && !w[i].key) ||
            w[i].klen > CRDT_MAX_BLOB) {
            cb(ud, CRDT_EINVAL, &res);
            return;
        }
        ktotal += w[i].klen;
        mtotal += w[i].m.len;
    }
    /* one block: the batch, its groups, order, key offsets, seqs, slots and the keys' copies */
    size_t off_groups = (sizeof(sr_batch_t) + 15) & ~(size_t)15;
    size_t off_order = off_groups + n * sizeof(sr_bgroup_t);
    size_t off_koff = off_order + n * sizeof(size_t);
    size_t off_seqs = off_koff + (n + 1) * sizeof(size_t);
    size_t off_si = off_seqs + n * sizeof(uint64_t);
    size_t off_moff = off_si + n * sizeof(slot_idx_t);
    size_t off_scores = off_moff + (n + 1) * sizeof(size_t);
    size_t off_kbuf = off_scores + n * sizeof(double);
    char *blk = n < SIZE_MAX / 256 && ktotal <= SIZE_MAX / 4 && mtotal <= SIZE_MAX / 4
                    ? calloc(1, off_kbuf + ktotal + mtotal + 1)
                    : NULL;
    if (!blk) {
        cb(ud, CRDT_ENOMEM, &res);
        return;
    }
    sr_batch_t *b = (sr_batch_t *)blk;
    b->groups = (sr_bgroup_t *)(blk + off_groups);
    b->order = (size_t *)(blk + off_order);
    b->koff = (size_t *)(blk + off_koff);
    b->seqs = (uint64_t *)(blk + off_seqs);
    slot_idx_t *si = (slot_idx_t *)(blk + off_si);
    b->kbuf = blk + off_kbuf;
    b->moff = (size_t *)(blk + off_moff);
    b->scores = (double *)(blk + off_scores);
    b->mbuf = b->kbuf + ktotal;
    b->st = s;
    b->cb = cb;
    b->ud = ud;
    b->n = n;
    b->add = w[0].m.kind == CRDT_MUT_ADD;
    b->res = res;
    b->next = s->batches;
    if (s->batches)
        s->batches->prev = b;
    s->batches = b;
    /* one group on a server known not to be a cluster; else one per slot */
    bool single = s->ready == 1 && s->cluster == 0;
    size_t at = 0, mat = 0;
    for (size_t i = 0; i < n; i++) {
        b->koff[i] = at;
        if (w[i].klen)
            memcpy(b->kbuf + at, w[i].key, w[i].klen);
        at += w[i].klen;
        b->moff[i] = mat;
        if (w[i].m.len)
            memcpy(b->mbuf + mat, w[i].m.bytes, w[i].m.len);
        mat += w[i].m.len;
        b->scores[i] = w[i].m.score;
        si[i] = (slot_idx_t){single ? 0 : crdtm_keyslot((const char *)w[i].key, w[i].klen), i};
    }
    b->koff[n] = at;
    b->moff[n] = mat;
    if (!single)
        qsort(si, n, sizeof(*si), slot_idx_cmp);
    for (size_t k = 0; k < n; k++)
        b->order[k] = si[k].i;
    const char *verb = b->add ? "CRDT.TLMADD" : "CRDT.TLMREM";
    for (size_t a = 0; a < n;) {
        size_t e = a + 1;
        while (e < n && si[e].slot == si[a].slot)
            e++;
        size_t len = 0;
        char *cmd = batch_format(b, w, a, e, &len);
        sr_req_t *q = cmd ? req_raw(s, R_BATCH, verb, cmd, len) : NULL;
        if (!q) {
            b->rc = CRDT_ENOMEM;
            batch_finish(b);
            return;
        }
        q->batch = b;
        q->idx = b->ngroups;
        route(q, w[b->order[a]].key, w[b->order[a]].klen);
        b->groups[b->ngroups++] = (sr_bgroup_t){.q = q, .first = a, .n = e - a};
        a = e;
    }
    b->left = b->ngroups;
    if (b->ngroups == 1 && !s->no_tlm) {
        sr_req_t *q = b->groups[0].q;
        b->groups[0].q = NULL;
        req_dispatch(s, q);
        return;
    }
    /* several slots (or an older crdt.so): every key's type first, so no group is written unless
     * all can be */
    batch_types_start(b);
}

/* ---- the change feed: the changes this store reported, by seq ----------------------------------
 */

/* ---- tl_range --------------------------------------------------------------------------------
 */

/* An error answering a tl_range key's read: true when it is no failure of the call. */
static bool tl_range_error(sr_store_t *s, sr_req_t *q, const redisReply *r)
{
    const char *e = r->str ? r->str : "";
    if (strncmp(e, "WRONGTYPE", 9) == 0) {
        many_part(q->many, q->idx, 0, NULL); /* another type, or not a CRDT: no entries */
        return true;
    }
    if (q->kind == R_TLRANGE && strncmp(e, "ERR unknown command", 19) == 0) {
        /* an older crdt.so: this key's state instead, and every key's from now on */
        s->no_tlrange = true;
        many_issue_args(s, q->many, q->many->keys, q->idx, q->idx + 1, R_TLSTATE, "CRDT.STATE",
                        NULL, NULL, 0);
        return true;
    }
    return false;
}

/* A CRDT.TLRANGE / TLRANGEBYSCORE reply: the key's entries, copied (the reply goes when this
 * returns) into one block, the members' bytes after the entries. */
static void tl_range_reply(sr_store_t *s, sr_req_t *q, const redisReply *r)
{
    sr_many_t *m = q->many;
    size_t cap = m->q.by_score ? m->q.limit : m->q.count, n = 0, bytes = 0;
    if (r->type == REDIS_REPLY_ARRAY && r->element)
        n = r->elements / 2 < cap ? r->elements / 2 : cap;
    for (size_t i = 0; i < n; i++) {
        const redisReply *e = r->element[2 * i];
        if (e && e->type == REDIS_REPLY_STRING)
            bytes += e->len;
    }
    crdt_tl_entry_t *es = n ? malloc(n * sizeof(*es) + bytes) : NULL;
    if (n && !es) {
        many_part(m, q->idx, CRDT_ENOMEM, NULL);
        return;
    }
    char why[120];
    size_t got;
    if (sr_parse_tl_entries(r, es, n, &got, why, sizeof(why)) < 0) {
        free(es);
        s->rs.bad_replies++;
        set_err(s, "redis %s:%d: %s", q->node ? q->node->addr.host : "?",
                q->node ? q->node->addr.port : 0, why);
        many_part(m, q->idx, CRDT_EIO, NULL);
        return;
    }
    char *b = (char *)(es + got);
    for (size_t i = 0; i < got; i++) {
        memcpy(b, es[i].member, es[i].member_len);
        es[i].member = b;
        b += es[i].member_len;
    }
    m->ents[q->idx] = es;
    m->counts[q->idx] = got;
    many_part(m, q->idx, 0, NULL);
}

/* A count as the module's argument (a long long). */
static size_t put_count(char *p, size_t v)
{
    return put_dec(p, v > (size_t)INT64_MAX ? (uint64_t)INT64_MAX : (uint64_t)v);
}

static void sr_tl_range(crdt_store_t *st, const crdt_bytes_t *keys, size_t n,
                        const crdt_store_tl_query_t *q, crdt_store_tl_range_cb cb, void *ud)
{
    sr_store_t *s = srs(st);
    if (q->by_score &&
        (isnan(q->max) || isnan(q->min) || (q->has_after && !isfinite(q->after.score)))) {
        cb(ud, CRDT_EINVAL, NULL, NULL, 0);
        return;
    }
    size_t kbytes = q->by_score && q->has_after ? q->after.member_len : 0;
    for (size_t i = 0; i < n; i++)
        kbytes += keys[i].len;
    sr_many_t *m = calloc(1, sizeof(*m));
    crdt_obj_t **objs = calloc(n ? n : 1, sizeof(*objs));
    crdt_tl_entry_t **ents = calloc(n ? n : 1, sizeof(*ents));
    size_t *counts = calloc(n ? n : 1, sizeof(*counts));
    crdt_bytes_t *kc = malloc(n * sizeof(*kc) + kbytes + 1);
    if (!m || !objs || !ents || !counts || !kc) {
        free(m), free(objs), free(ents), free(counts), free(kc);
        cb(ud, CRDT_ENOMEM, NULL, NULL, 0);
        return;
    }
    *m = (sr_many_t){.rcb = cb,
                     .ud = ud,
                     .n = n,
                     .left = n,
                     .objs = objs,
                     .bad = SIZE_MAX,
                     .q = *q,
                     .ents = ents,
                     .counts = counts,
                     .keys = kc};
    uint8_t *at = (uint8_t *)(kc + n);
    for (size_t i = 0; i < n; i++) {
        if (keys[i].len)
            memcpy(at, keys[i].data, keys[i].len);
        kc[i] = (crdt_bytes_t){at, keys[i].len};
        at += keys[i].len;
    }
    if (q->by_score && q->has_after) {
        if (q->after.member_len)
            memcpy(at, q->after.member, q->after.member_len);
        m->q.after.member = at;
    }
    if (n == 0 || (q->by_score ? q->limit : q->count) == 0) {
        /* nothing to read of any key */
        cb(ud, 0, (const crdt_tl_entry_t *const *)ents, counts, n);
        many_free(m);
        return;
    }
    if (s->no_tlrange) {
        many_issue(s, m, kc, n, R_TLSTATE, "CRDT.STATE");
        return;
    }
    char num[4][32];
    const char *args[SR_MANY_ARGS_MAX]; /* max min AFTER score member LIMIT n WITHSCORES */
    size_t lens[SR_MANY_ARGS_MAX];
    int na = 0;
    if (!q->by_score) {
        lens[na] = put_count(num[0], q->offset), args[na++] = num[0];
        lens[na] = put_count(num[1], q->count), args[na++] = num[1];
    } else {
        lens[na] = put_score(num[0], q->max), args[na++] = num[0];
        lens[na] = put_score(num[1], q->min), args[na++] = num[1];
        if (q->has_after) {
            args[na] = "AFTER", lens[na++] = 5;
            lens[na] = put_score(num[2], q->after.score), args[na++] = num[2];
            args[na] = m->q.after.member_len ? m->q.after.member : "";
            lens[na++] = m->q.after.member_len;
        }
        args[na] = "LIMIT", lens[na++] = 5;
        lens[na] = put_count(num[3], q->limit), args[na++] = num[3];
    }
    args[na] = "WITHSCORES", lens[na++] = 10;
    many_issue_args(s, m, kc, 0, n, R_TLRANGE, q->by_score ? "CRDT.TLRANGEBYSCORE" : "CRDT.TLRANGE",
                    args, lens, na);
}

static void feed_append(sr_store_t *s, const void *key, size_t klen, uint64_t seq)
{
    if (!s->cfg.feed_max)
        return;
    if (!s->feed && !(s->feed = calloc(s->cfg.feed_max, sizeof(*s->feed))))
        return;
    char *k = malloc(klen ? klen : 1);
    if (!k)
        return;
    if (klen)
        memcpy(k, key, klen);
    size_t at = (s->feed_head + s->feed_len) % s->cfg.feed_max;
    if (s->feed_len == s->cfg.feed_max) {
        /* the oldest entry goes: positions at or before it are no longer complete */
        sr_feed_ent_t *old = &s->feed[s->feed_head];
        s->feed_dropped = old->seq;
        free(old->key);
        s->feed_head = (s->feed_head + 1) % s->cfg.feed_max;
        s->feed_len--;
        at = (s->feed_head + s->feed_len) % s->cfg.feed_max;
    }
    s->feed[at] = (sr_feed_ent_t){.seq = seq, .key = k, .klen = klen};
    s->feed_len++;
}

typedef struct sr_feed_read {
    sr_store_t *st;
    crdt_feed_cb each;
    crdt_store_done_cb done;
    void *ud;
    size_t n;
    bool exhausted;
    crdt_bytes_t *keys;
    uint64_t *seqs;
} sr_feed_read_t;

static void feed_read_free(sr_feed_read_t *fr)
{
    for (size_t i = 0; fr->keys && i < fr->n; i++)
        free((void *)fr->keys[i].data);
    free(fr->keys);
    free(fr->seqs);
    free(fr);
}

static void feed_got(void *ud, int rc, const crdt_obj_t *const *objs, size_t n)
{
    sr_feed_read_t *fr = ud;
    uint64_t next = fr->seqs[0] - 1;
    bool all = true;
    for (size_t i = 0; rc == 0 && i < n; i++) {
        if (objs[i] &&
            fr->each(fr->keys[i].data, fr->keys[i].len, fr->seqs[i], objs[i], fr->ud) != 0) {
            all = false;
            break;
        }
        next = fr->seqs[i];
    }
    if (rc == 0 && all && fr->exhausted)
        next = fr->st->last_seq;
    fr->done(fr->ud, rc, rc == 0 ? next : fr->seqs[0] - 1);
    feed_read_free(fr);
}

static void sr_changes(crdt_store_t *st, uint64_t since, size_t limit, crdt_feed_cb each,
                       crdt_store_done_cb done, void *ud)
{
    sr_store_t *s = srs(st);
    if (!s->cfg.feed_max) {
        set_err(s, "change feed: off (feed_max 0)");
        done(ud, CRDT_EUNAVAIL, since);
        return;
    }
    if (since > s->last_seq) {
        set_err(s,
                "change feed: position %llu is ahead of this store (last seq %llu): it belongs "
                "to another run of the gateway; rescan",
                (unsigned long long)since, (unsigned long long)s->last_seq);
        done(ud, CRDT_EUNAVAIL, since);
        return;
    }
    /* A position this store no longer holds the changes after: CRDT_ELIMIT (the ring's bound),
     * not EUNAVAIL (Redis is fine): a reader rescans, the peer engine resumes at the durable seq
     * and leaves the gap to anti-entropy. Not last_error: the store is healthy. */
    if (since && since < s->cfg.seq_base) {
        s->rs.feed_gaps++;
        done(ud, CRDT_ELIMIT, since);
        return;
    }
    if (since < s->feed_dropped) {
        s->rs.feed_gaps++;
        done(ud, CRDT_ELIMIT, since);
        return;
    }
    /* newest first, keep each key's latest change, then oldest first up to limit */
    size_t cand = 0;
    while (cand < s->feed_len &&
           s->feed[(s->feed_head + s->feed_len - 1 - cand) % s->cfg.feed_max].seq > since)
        cand++;
    if (cand == 0 || limit == 0) {
        done(ud, 0, cand == 0 ? s->last_seq : since);
        return;
    }
    size_t tcap = 16;
    while (tcap < cand * 2)
        tcap *= 2;
    size_t *table = malloc(tcap * sizeof(*table)); /* feed indexes + 1; 0 free */
    size_t *keep = malloc(cand * sizeof(*keep));
    sr_feed_read_t *fr = calloc(1, sizeof(*fr));
    if (!table || !keep || !fr) {
        free(table);
        free(keep);
        free(fr);
        done(ud, CRDT_ENOMEM, since);
        return;
    }
    memset(table, 0, tcap * sizeof(*table));
    size_t nk = 0;
    for (size_t i = 0; i < cand; i++) {
        size_t idx = (s->feed_head + s->feed_len - 1 - i) % s->cfg.feed_max;
        const sr_feed_ent_t *e = &s->feed[idx];
        size_t h = (size_t)crdt_hash64(e->key, e->klen, 0) & (tcap - 1);
        bool seen = false;
        while (table[h]) {
            const sr_feed_ent_t *o = &s->feed[table[h] - 1];
            if (o->klen == e->klen && memcmp(o->key, e->key, e->klen) == 0) {
                seen = true;
                break;
            }
            h = (h + 1) & (tcap - 1);
        }
        if (seen)
            continue;
        table[h] = idx + 1;
        keep[nk++] = idx;
    }
    free(table);
    size_t n = nk < limit ? nk : limit;
    *fr = (sr_feed_read_t){
        .st = s, .each = each, .done = done, .ud = ud, .n = n, .exhausted = n == nk};
    fr->keys = calloc(n, sizeof(*fr->keys));
    fr->seqs = calloc(n, sizeof(*fr->seqs));
    bool okm = fr->keys && fr->seqs;
    for (size_t i = 0; okm && i < n; i++) {
        const sr_feed_ent_t *e = &s->feed[keep[nk - 1 - i]]; /* oldest kept first */
        char *k = malloc(e->klen ? e->klen : 1);
        okm = k != NULL;
        if (k && e->klen)
            memcpy(k, e->key, e->klen);
        fr->keys[i] = (crdt_bytes_t){k, e->klen};
        fr->seqs[i] = e->seq;
    }
    free(keep);
    if (!okm) {
        feed_read_free(fr);
        done(ud, CRDT_ENOMEM, since);
        return;
    }
    /* the keys' current states, as the embedded feed gives them */
    sr_get_many(st, fr->keys, n, feed_got, fr);
}

/* ---- scan: SCAN ... TYPE crdtd-obj over every primary, then CRDT.STATE of each key ------------
 */

/* The primaries in map order: index i of the scan cursor's node part. */
static int primaries(const sr_store_t *s, int *out)
{
    int n = 0;
    bool seen[SR_MAX_NODES] = {0};
    for (unsigned i = 0; i < CRDTM_SLOTS; i++) {
        uint16_t k = s->slot_node[i];
        if (k != SR_NO_NODE && k < SR_MAX_NODES && !seen[k]) {
            seen[k] = true;
            out[n++] = k;
        }
    }
    return n;
}

static void scan_send(sr_store_t *s, sr_scan_t *sc, unsigned node_ord, uint64_t cur, size_t limit)
{
    int prim[SR_MAX_NODES];
    int np = primaries(s, prim);
    if ((int)node_ord >= np) {
        sc->next = 0;
        scan_finish(sc);
        return;
    }
    char cb[24], lb[24];
    snprintf(cb, sizeof(cb), "%llu", (unsigned long long)cur);
    snprintf(lb, sizeof(lb), "%zu", limit ? limit : 1);
    const char *argv[] = {"SCAN", cb, "COUNT", lb, "TYPE", "crdtd-obj"};
    size_t lens[6];
    for (int i = 0; i < 6; i++)
        lens[i] = strlen(argv[i]);
    sr_req_t *q = req_new(s, R_SCAN, "SCAN", 6, argv, lens);
    if (!q) {
        sc->rc = CRDT_ENOMEM;
        scan_finish(sc);
        return;
    }
    q->scan = sc;
    q->scan_node = node_ord;
    q->idx = limit;
    q->fixed = s->nodes[prim[node_ord]];
    sc->left++;
    if (!send_on(s, q, q->fixed, false))
        req_fail(q, CRDT_EUNAVAIL);
}

static void scan_reply(sr_store_t *s, sr_req_t *q, const redisReply *r)
{
    sr_scan_t *sc = q->scan;
    sc->left--;
    uint64_t cur = 0;
    const redisReply *keys = NULL;
    if (sr_parse_scan(r, SR_SCAN_NODE_SHIFT - 1, &cur, &keys, NULL, 0) < 0) {
        if (sc->rc == 0)
            sc->rc = bad_reply(s, q, r);
        scan_finish(sc);
        return;
    }
    for (size_t i = 0; i < keys->elements; i++) {
        const redisReply *k = keys->element ? keys->element[i] : NULL;
        if (!k || k->type != REDIS_REPLY_STRING)
            continue;
        const char *argv[] = {"CRDT.STATE", k->str};
        size_t lens[] = {10, k->len};
        sr_req_t *c = req_new(s, R_SCAN_STATE, "CRDT.STATE", 2, argv, lens);
        if (!c || !(c->key = malloc(k->len ? k->len : 1))) {
            req_free(c);
            sc->rc = CRDT_ENOMEM;
            continue;
        }
        memcpy(c->key, k->str, k->len);
        c->klen = k->len;
        c->scan = sc;
        c->fixed = q->fixed; /* the key lives where SCAN found it */
        sc->left++;
        if (!send_on(s, c, c->fixed, false))
            req_fail(c, CRDT_EUNAVAIL);
    }
    unsigned ord = q->scan_node;
    if (cur == 0) {
        int prim[SR_MAX_NODES];
        ord++;
        sc->next = (int)ord < primaries(s, prim) ? (uint64_t)ord << SR_SCAN_NODE_SHIFT : 0;
        /* a cursor of 0 for a later node still means "continue": mark it with bit 47 */
        if (sc->next)
            sc->next |= 1ull << (SR_SCAN_NODE_SHIFT - 1);
    } else {
        sc->next = ((uint64_t)ord << SR_SCAN_NODE_SHIFT) | cur;
    }
    scan_finish(sc);
}

static void sr_scan(crdt_store_t *st, uint64_t cursor, size_t limit, crdt_store_key_cb each,
                    crdt_store_done_cb done, void *ud)
{
    sr_store_t *s = srs(st);
    if (s->ready != 1) {
        set_err(s, "the Redis topology is not known yet: cannot scan");
        done(ud, CRDT_EUNAVAIL, cursor);
        return;
    }
    sr_scan_t *sc = calloc(1, sizeof(*sc));
    if (!sc) {
        done(ud, CRDT_ENOMEM, cursor);
        return;
    }
    *sc = (sr_scan_t){.each = each, .done = done, .ud = ud, .next = cursor};
    unsigned ord = (unsigned)(cursor >> SR_SCAN_NODE_SHIFT);
    uint64_t cur = cursor & ((1ull << (SR_SCAN_NODE_SHIFT - 1)) - 1);
    sc->left++; /* held while sending */
    scan_send(s, sc, ord, cur, limit);
    sc->left--;
    scan_finish(sc);
}

/* ---- list_keys: SCAN MATCH over every primary, sorted here --------------------------------------
 * Redis has no ordered scan: a listing SCANs (MATCH on the glob-escaped prefix, TYPE crdtd-obj,
 * COUNT LIST_COUNT per call) every primary to the end, keeping the `cap` smallest names after
 * `after` (key names only, no state), then reads the state of those candidates only
 * (CRDT.STATE: crdt.so has no cheaper liveness test) to leave out deleted keys, and lists them
 * in order. When deleted keys leave the page short and names were dropped for want of room, it
 * scans again after the last candidate. A page costs a scan of the keys matching the prefix. */

#define LIST_COUNT "1000"

typedef struct list_cand {
    uint8_t *p;
    size_t n;
    signed char live; /* -1 unknown, 0 deleted (or gone), 1 live */
} list_cand_t;

struct sr_list {
    sr_store_t *s;
    crdt_store_name_cb each;
    crdt_store_done_cb done;
    void *ud;
    uint8_t *prefix, *after;
    size_t plen, alen;
    bool has_after;
    char *pat; /* the MATCH pattern */
    size_t patlen;
    size_t limit, emitted;
    list_cand_t *c; /* ascending, distinct, at most cap */
    size_t n, cap;
    bool dropped; /* this pass saw a name beyond the kept ones */
    bool states;  /* the pass's scans are done: reading the candidates' states */
    size_t left;  /* requests outstanding */
    bool sending; /* held while sending a batch */
    int rc;
};

static int list_cmp(const uint8_t *a, size_t an, const uint8_t *b, size_t bn)
{
    size_t m = an < bn ? an : bn;
    int c = m ? memcmp(a, b, m) : 0;
    return c ? c : an < bn ? -1 : an > bn;
}

static void list_clear(sr_list_t *L)
{
    for (size_t i = 0; i < L->n; i++)
        free(L->c[i].p);
    L->n = 0;
}

static void list_free(sr_list_t *L)
{
    list_clear(L);
    free(L->c);
    free(L->prefix);
    free(L->after);
    free(L->pat);
    free(L);
}

/* A request of L freed without completing (the store is closing). */
static void list_drop(sr_list_t *L)
{
    if (--L->left == 0 && !L->sending)
        list_free(L);
}

/* Keeps name when it is among the cap smallest after `after` under the prefix. */
static int list_offer(sr_list_t *L, const char *k, size_t kn)
{
    if (kn < L->plen || (L->plen && memcmp(k, L->prefix, L->plen) != 0) ||
        crdt_key_internal(k, kn) ||
        (L->has_after && list_cmp((const uint8_t *)k, kn, L->after, L->alen) <= 0))
        return 0;
    if (L->n == L->cap &&
        list_cmp((const uint8_t *)k, kn, L->c[L->n - 1].p, L->c[L->n - 1].n) >= 0) {
        L->dropped = true;
        return 0;
    }
    size_t lo = 0, hi = L->n;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (list_cmp(L->c[mid].p, L->c[mid].n, (const uint8_t *)k, kn) < 0)
            lo = mid + 1;
        else
            hi = mid;
    }
    if (lo < L->n && !list_cmp(L->c[lo].p, L->c[lo].n, (const uint8_t *)k, kn))
        return 0; /* SCAN may return a key twice */
    uint8_t *copy = malloc(kn ? kn : 1);
    if (!copy)
        return CRDT_ENOMEM;
    memcpy(copy, k, kn);
    if (L->n == L->cap) {
        free(L->c[--L->n].p);
        L->dropped = true;
    }
    memmove(L->c + lo + 1, L->c + lo, (L->n - lo) * sizeof(*L->c));
    L->c[lo] = (list_cand_t){copy, kn, -1};
    L->n++;
    return 0;
}

static void list_send_scan(sr_list_t *L, sr_node_t *node, const char *cursor)
{
    sr_store_t *s = L->s;
    const char *argv[] = {"SCAN",  cursor,     "MATCH", L->pat,
                          "COUNT", LIST_COUNT, "TYPE",  "crdtd-obj"};
    size_t lens[8];
    for (int i = 0; i < 8; i++)
        lens[i] = strlen(argv[i]);
    lens[3] = L->patlen;
    sr_req_t *q = req_new(s, R_LIST_SCAN, "SCAN", 8, argv, lens);
    if (!q) {
        if (L->rc == 0)
            L->rc = CRDT_ENOMEM;
        return;
    }
    q->list = L;
    q->fixed = node;
    L->left++;
    if (!send_on(s, q, node, false))
        req_fail(q, CRDT_EUNAVAIL);
}

static void list_step(sr_list_t *L);

/* One pass: a SCAN from cursor 0 on every primary. */
static void list_pass(sr_list_t *L)
{
    sr_store_t *s = L->s;
    int prim[SR_MAX_NODES];
    int np = primaries(s, prim);
    L->states = false;
    L->dropped = false;
    L->sending = true;
    for (int i = 0; i < np && L->rc == 0; i++)
        list_send_scan(L, s->nodes[prim[i]], "0");
    L->sending = false;
}

static void list_finish(sr_list_t *L, int rc, uint64_t more)
{
    L->done(L->ud, rc, more);
    list_free(L);
}

/* Called whenever a request of L completed: goes on once none is outstanding. */
static void list_step(sr_list_t *L)
{
    if (L->left || L->sending)
        return;
    if (L->rc < 0) {
        list_finish(L, L->rc, 0);
        return;
    }
    if (!L->states) { /* the names are in: read the candidates' states */
        L->states = true;
        L->sending = true;
        for (size_t i = 0; i < L->n && L->rc == 0; i++) {
            const char *argv[] = {"CRDT.STATE", (const char *)L->c[i].p};
            size_t lens[] = {10, L->c[i].n};
            sr_req_t *q = req_new(L->s, R_LIST_STATE, "CRDT.STATE", 2, argv, lens);
            if (!q) {
                L->rc = CRDT_ENOMEM;
                break;
            }
            q->list = L;
            q->idx = i;
            route(q, L->c[i].p, L->c[i].n);
            L->left++;
            req_dispatch(L->s, q);
        }
        L->sending = false;
        list_step(L);
        return;
    }
    for (size_t i = 0; i < L->n; i++) {
        if (L->c[i].live != 1)
            continue;
        if (L->emitted == L->limit) {
            list_finish(L, 0, 1);
            return;
        }
        L->emitted++;
        if (L->each(L->ud, L->c[i].p, L->c[i].n)) {
            list_finish(L, 0, 1);
            return;
        }
    }
    if (!L->dropped || L->n == 0) {
        list_finish(L, 0, 0);
        return;
    }
    /* deleted keys left the page short, and names were dropped: another pass after the last */
    list_cand_t last = L->c[L->n - 1];
    L->c[L->n - 1].p = NULL;
    list_clear(L);
    free(L->after);
    L->after = last.p;
    L->alen = last.n;
    L->has_after = true;
    list_pass(L);
    list_step(L);
}

static void list_part_failed(sr_list_t *L, int rc)
{
    if (L->rc == 0)
        L->rc = rc;
    L->left--;
    list_step(L);
}

static void list_scan_reply(sr_store_t *s, sr_req_t *q, const redisReply *r)
{
    sr_list_t *L = q->list;
    L->left--;
    if (r->type != REDIS_REPLY_ARRAY || r->elements != 2 || !r->element || !r->element[0] ||
        r->element[0]->type != REDIS_REPLY_STRING || !r->element[1] ||
        r->element[1]->type != REDIS_REPLY_ARRAY) {
        if (L->rc == 0)
            L->rc = bad_reply(s, q, r);
        list_step(L);
        return;
    }
    const redisReply *keys = r->element[1];
    for (size_t i = 0; i < keys->elements && L->rc == 0; i++) {
        const redisReply *k = keys->element ? keys->element[i] : NULL;
        if (k && k->type == REDIS_REPLY_STRING) {
            int rc = list_offer(L, k->str, k->len);
            if (rc < 0)
                L->rc = rc;
        }
    }
    const char *cur = r->element[0]->str;
    if (L->rc == 0 && strcmp(cur, "0") != 0) {
        char cb[32];
        snprintf(cb, sizeof(cb), "%.30s", cur);
        L->sending = true;
        list_send_scan(L, q->fixed, cb);
        L->sending = false;
    }
    list_step(L);
}

static void list_state_reply(sr_store_t *s, sr_req_t *q, const redisReply *r)
{
    sr_list_t *L = q->list;
    crdt_obj_t *obj = NULL;
    int rc = decode_state(s, q, r, &obj);
    if (rc < 0 && L->rc == 0)
        L->rc = rc;
    if (q->idx < L->n)
        L->c[q->idx].live = obj && crdt_obj_is_live(obj) ? 1 : 0;
    crdt_obj_free(obj);
    L->left--;
    list_step(L);
}

/* The glob pattern matching the keys that begin with prefix: its bytes, with the glob's special
 * ones (* ? [ ] \) escaped, then '*'. */
static char *list_pattern(const uint8_t *prefix, size_t plen, size_t *len)
{
    char *p = malloc(2 * plen + 2);
    if (!p)
        return NULL;
    size_t n = 0;
    for (size_t i = 0; i < plen; i++) {
        uint8_t b = prefix[i];
        if (b == '*' || b == '?' || b == '[' || b == ']' || b == '\\')
            p[n++] = '\\';
        p[n++] = (char)b;
    }
    p[n++] = '*';
    p[n] = '\0';
    *len = n;
    return p;
}

static uint8_t *list_dup(const void *p, size_t n)
{
    uint8_t *d = malloc(n ? n : 1);
    if (d && n)
        memcpy(d, p, n);
    return d;
}

static void sr_list_keys(crdt_store_t *st, const void *prefix, size_t plen, const void *after,
                         size_t alen, size_t limit, crdt_store_name_cb each,
                         crdt_store_done_cb done, void *ud)
{
    sr_store_t *s = srs(st);
    if (s->ready != 1) {
        set_err(s, "the Redis topology is not known yet: cannot list");
        done(ud, CRDT_EUNAVAIL, 0);
        return;
    }
    if ((!prefix && plen) || limit > ((size_t)1 << 20)) {
        done(ud, CRDT_EINVAL, 0);
        return;
    }
    sr_list_t *L = calloc(1, sizeof(*L));
    size_t cap = 2 * (limit + 1) + 64; /* room for some deleted keys among the candidates */
    if (L) {
        *L = (sr_list_t){.s = s,
                         .each = each,
                         .done = done,
                         .ud = ud,
                         .plen = plen,
                         .alen = alen,
                         .has_after = after != NULL,
                         .limit = limit,
                         .cap = cap};
        L->prefix = list_dup(prefix, plen);
        L->after = after ? list_dup(after, alen) : NULL;
        L->pat = list_pattern(prefix, plen, &L->patlen);
        L->c = malloc(cap * sizeof(*L->c));
    }
    if (!L || !L->prefix || (after && !L->after) || !L->pat || !L->c) {
        if (L)
            list_free(L);
        done(ud, CRDT_ENOMEM, 0);
        return;
    }
    list_pass(L);
    list_step(L);
}

/* ---- fingerprints and marks -------------------------------------------------------------------
 */

static void sr_fingerprint(crdt_store_t *st, const void *key, size_t klen, crdt_store_fp_cb cb,
                           void *ud)
{
    sr_store_t *s = srs(st);
    const char *argv[] = {"CRDT.STATE", key};
    size_t lens[] = {10, klen};
    sr_req_t *q = req_new(s, R_FP, "CRDT.STATE", 2, argv, lens);
    if (!q) {
        cb(ud, CRDT_ENOMEM, 0);
        return;
    }
    q->cb = (void *)cb;
    q->ud = ud;
    route(q, key, klen);
    req_dispatch(s, q);
}

#define MARK_MAX (1u << 20)

static size_t mark_key(const sr_store_t *s, const char *name, char *buf, size_t cap)
{
    int n = snprintf(buf, cap, "{crdtd:%llu}:mark:%s", (unsigned long long)s->cfg.node_id, name);
    return n < 0 ? 0 : (size_t)n;
}

static void sr_mark_get(crdt_store_t *st, const char *name, crdt_store_mark_cb cb, void *ud)
{
    sr_store_t *s = srs(st);
    if (!crdt_store_mark_name_ok(name)) {
        cb(ud, CRDT_EINVAL, NULL, 0);
        return;
    }
    char k[128];
    size_t kl = mark_key(s, name, k, sizeof(k));
    const char *argv[] = {"GET", k};
    size_t lens[] = {3, kl};
    sr_req_t *q = req_new(s, R_MARK_GET, "GET", 2, argv, lens);
    if (!q) {
        cb(ud, CRDT_ENOMEM, NULL, 0);
        return;
    }
    q->cb = (void *)cb;
    q->ud = ud;
    route(q, k, kl);
    req_dispatch(s, q);
}

static void sr_mark_put(crdt_store_t *st, const char *name, const void *p, size_t n,
                        crdt_store_status_cb cb, void *ud)
{
    sr_store_t *s = srs(st);
    if (!crdt_store_mark_name_ok(name) || n > MARK_MAX || (!p && n)) {
        if (cb)
            cb(ud, CRDT_EINVAL);
        return;
    }
    char k[128];
    size_t kl = mark_key(s, name, k, sizeof(k));
    const char *argv[] = {"SET", k, n ? p : ""};
    size_t lens[] = {3, kl, n};
    sr_req_t *q = req_new(s, R_MARK_PUT, "SET", 3, argv, lens);
    if (!q) {
        if (cb)
            cb(ud, CRDT_ENOMEM);
        return;
    }
    q->cb = (void *)cb;
    q->ud = ud;
    route(q, k, kl);
    req_dispatch(s, q);
}

/* ---- anti-entropy over CRDT.RSX.* -------------------------------------------------------------
 * One crdt_rsx session of the module per store session, over every slot (CRDT.RSX.OPEN k role
 * 0 16383) of the one primary: the module keeps the items (key id, state fingerprint) per slot
 * beside the keys, so nothing is listed through crdtd and the bytes exchanged grow with the
 * difference. Steps: the initiator's first step is OPEN (its reply carries the first message);
 * a responder's first step is OPEN then RECV; every other step is RECV; once RECV says done,
 * DIFFS lists the differing ids with the names this side holds, remembered for rsx_keys. Over a
 * cluster of several primaries one module session cannot cover the keyspace: the session then
 * runs here (crdt_rsx over an index built from CRDT.RSX.ITEMS 0 16383 of every primary, O(keys)
 * per round; the messages between the sites still grow with the difference only). */

#define SR_RSX_KEY "crdtd-rsx"   /* routes the session's commands (any key of the primary) */
#define SR_RNAMES_MAX (1u << 20) /* names remembered for repairs before the map starts over */
#define SR_RSX_ITEMS_MS 1000     /* rsx_items refreshes its count at most this often */

typedef struct sr_rname {
    uint64_t id;
    struct sr_rname *next;
    size_t len;
    char name[];
} sr_rname_t;

struct crdt_store_rsx {
    sr_store_t *st;
    crdt_store_rsx_t *prev, *next; /* the store's list */
    bool initiator;
    bool opened;   /* the module holds the session (sid) */
    bool finished; /* DIFFS ended it in the module (or it was never opened) */
    bool closed;   /* rsx_close came: freed once no request is in flight */
    bool failed;
    unsigned inflight;
    char sid[24];
    crdt_store_rsx_cb cb; /* the step in flight */
    void *ud;
    uint8_t *pending; /* a responder's first message, sent once OPEN answered */
    size_t npending;
    crdt_buf_t reply;
    crdt_rsx_diff_t *diffs;
    size_t ndiffs;
    crdt_rsx_stats_t stats;
    /* over several primaries: the session runs here, over the items CRDT.RSX.ITEMS gave */
    bool local;
    crdt_rsx_config_t cfg;
    unsigned items_left;     /* ITEMS replies outstanding */
    struct sr_litem *litems; /* (id, fp, name) of every key, sorted by id once all came */
    size_t nlitems, caplitems;
    crdt_rsx_index_t *ix;
    crdt_rsx_session_t *ls;
};

typedef struct sr_litem {
    uint64_t id, fp;
    char *name;
    size_t len;
} sr_litem_t;

static void rsx_free(crdt_store_rsx_t *x)
{
    sr_store_t *s = x->st;
    if (x->prev)
        x->prev->next = x->next;
    else if (s->rsx_list == x)
        s->rsx_list = x->next;
    if (x->next)
        x->next->prev = x->prev;
    free(x->pending);
    crdt_buf_free(&x->reply);
    free(x->diffs);
    for (size_t i = 0; i < x->nlitems; i++)
        free(x->litems[i].name);
    free(x->litems);
    crdt_rsx_session_free(x->ls);
    crdt_rsx_index_free(x->ix);
    free(x);
}

static void rnames_clear(sr_store_t *s)
{
    for (size_t i = 0; i < s->rnames_cap; i++) {
        sr_rname_t *e = s->rnames[i];
        while (e) {
            sr_rname_t *nx = e->next;
            free(e);
            e = nx;
        }
    }
    free(s->rnames);
    s->rnames = NULL;
    s->rnames_cap = s->rnames_n = 0;
}

static void rnames_add(sr_store_t *s, uint64_t id, const char *name, size_t len)
{
    if (s->rnames_n >= SR_RNAMES_MAX)
        rnames_clear(s);
    if (!s->rnames) {
        s->rnames_cap = 4096;
        if (!(s->rnames = calloc(s->rnames_cap, sizeof(*s->rnames)))) {
            s->rnames_cap = 0;
            return;
        }
    }
    size_t b = (size_t)(id * 0x9E3779B97F4A7C15ull >> 20) & (s->rnames_cap - 1);
    for (sr_rname_t *e = s->rnames[b]; e; e = e->next)
        if (e->id == id && e->len == len && !memcmp(e->name, name, len))
            return;
    sr_rname_t *e = malloc(sizeof(*e) + (len ? len : 1));
    if (!e)
        return;
    e->id = id;
    e->len = len;
    memcpy(e->name, name, len);
    e->next = s->rnames[b];
    s->rnames[b] = e;
    s->rnames_n++;
}

/* Sends an RSX command for session x (argv[1] is the routing key); completes through rsx_reply. */
static void rsx_send(crdt_store_rsx_t *x, req_kind_t kind, const char *verb, int argc,
                     const char **argv, const size_t *lens)
{
    sr_store_t *s = x->st;
    sr_req_t *q = req_new(s, kind, verb, argc, argv, lens);
    if (!q) {
        if (kind != R_RSX_CLOSE && x->cb) {
            crdt_store_rsx_cb cb = x->cb;
            x->cb = NULL;
            crdt_store_rsx_result_t res = {.err = {.code = CRDT_ENOMEM}};
            x->failed = true;
            cb(x->ud, CRDT_ENOMEM, &res);
        }
        return;
    }
    q->ud = x;
    x->inflight++;
    route(q, SR_RSX_KEY, strlen(SR_RSX_KEY));
    req_dispatch(s, q);
}

/* The step in flight ends: rc 0 with what x holds, or an error. */
static void rsx_complete(crdt_store_rsx_t *x, int rc, const char *why)
{
    crdt_store_rsx_cb cb = x->cb;
    x->cb = NULL;
    if (!cb)
        return;
    crdt_store_rsx_result_t res;
    memset(&res, 0, sizeof(res));
    if (rc < 0) {
        x->failed = true;
        x->st->rs.rsx_failed++;
        res.err.code = rc;
        snprintf(res.err.text, sizeof(res.err.text), "%s", why ? why : crdt_strerror(rc));
        cb(x->ud, rc, &res);
        return;
    }
    res.reply = x->reply.len ? x->reply.data : NULL;
    res.reply_len = x->reply.len;
    if (x->ls)
        crdt_rsx_session_stats(x->ls, &x->stats);
    else if (res.reply_len) {
        x->stats.msgs_sent++;
        x->stats.bytes_sent += res.reply_len;
    }
    res.done = x->finished;
    res.diffs = x->diffs;
    res.ndiffs = x->finished ? x->ndiffs : 0;
    res.stats = x->stats;
    cb(x->ud, 0, &res);
}

static void rsx_recv(crdt_store_rsx_t *x, const void *msg, size_t n)
{
    x->stats.msgs_received++;
    x->stats.bytes_received += n;
    const char *argv[] = {"CRDT.RSX.RECV", SR_RSX_KEY, x->sid, msg ? msg : ""};
    size_t lens[] = {13, strlen(SR_RSX_KEY), strlen(x->sid), n};
    rsx_send(x, R_RSX_RECV, "CRDT.RSX.RECV", 4, argv, lens);
}

static void rsx_failed(sr_req_t *q, int rc, const char *why)
{
    crdt_store_rsx_t *x = q->ud;
    if (q->kind == R_RSX_DIGEST) {
        q->st->rsx_items_busy = false;
        return;
    }
    x->inflight--;
    if (x->closed) {
        if (!x->inflight)
            rsx_free(x);
        return;
    }
    if (q->kind == R_RSX_DIFFS)
        x->finished = true; /* DIFFS ends the session in the module, answered or not */
    if (q->kind == R_RSX_ITEMS)
        x->items_left = 0; /* the first failure completes the step; the other replies are dropped */
    rsx_complete(x, rc, why);
}

static int litem_cmp(const void *a, const void *b)
{
    const sr_litem_t *x = a, *y = b;
    return (x->id > y->id) - (x->id < y->id);
}

/* One step of a session run here: msg NULL is the initiator's first. */
static void rsx_local_step(crdt_store_rsx_t *x, const void *msg, size_t n)
{
    sr_store_t *s = x->st;
    x->reply.len = 0;
    bool done = false;
    crdt_error_t err;
    memset(&err, 0, sizeof(err));
    int rc = msg ? crdt_rsx_receive(x->ls, msg, n, &x->reply, &done, &err)
                 : crdt_rsx_initiate(x->ls, &x->reply);
    if (rc < 0) {
        rsx_complete(x, rc, err.text[0] ? err.text : NULL);
        return;
    }
    if (done) {
        x->finished = true;
        const crdt_rsx_diff_t *d;
        size_t nd = crdt_rsx_session_diffs(x->ls, &d);
        free(x->diffs);
        x->diffs = malloc((nd ? nd : 1) * sizeof(*x->diffs));
        if (!x->diffs) {
            rsx_complete(x, CRDT_ENOMEM, NULL);
            return;
        }
        if (nd)
            memcpy(x->diffs, d, nd * sizeof(*d));
        x->ndiffs = nd;
        for (size_t i = 0; i < nd; i++) {
            /* the names of the keys of this id, for rsx_keys */
            size_t lo = 0, hi = x->nlitems;
            while (lo < hi) {
                size_t mid = lo + (hi - lo) / 2;
                if (x->litems[mid].id < d[i].id)
                    lo = mid + 1;
                else
                    hi = mid;
            }
            for (size_t k = lo; k < x->nlitems && x->litems[k].id == d[i].id; k++)
                rnames_add(s, d[i].id, x->litems[k].name, x->litems[k].len);
        }
    }
    rsx_complete(x, 0, NULL);
}

/* Every primary's items are in: the index, the session, and the step that waited for them. */
static void rsx_local_start(crdt_store_rsx_t *x)
{
    if (x->nlitems)
        qsort(x->litems, x->nlitems, sizeof(*x->litems), litem_cmp);
    crdt_rsx_item_t *items = malloc((x->nlitems ? x->nlitems : 1) * sizeof(*items));
    size_t m = 0;
    for (size_t i = 0; items && i < x->nlitems; i++) {
        /* keys of one id are one item whose fp is the sum of theirs (crdt_reconcile.h) */
        if (m && items[m - 1].id == x->litems[i].id)
            items[m - 1].fp += x->litems[i].fp;
        else
            items[m++] = (crdt_rsx_item_t){x->litems[i].id, x->litems[i].fp};
    }
    x->ix = items ? crdt_rsx_index_new() : NULL;
    int rc = x->ix ? crdt_rsx_index_build(x->ix, items, m) : CRDT_ENOMEM;
    free(items);
    if (rc == 0 && !(x->ls = crdt_rsx_session_new(x->ix, x->initiator, &x->cfg)))
        rc = CRDT_ENOMEM;
    if (rc < 0) {
        rsx_complete(x, rc, "cannot build the anti-entropy index of the cluster's keys");
        return;
    }
    x->st->rs.rsx_sessions++;
    /* the step's completion may close (and free) x: nothing of x is touched after it */
    uint8_t *pending = x->pending;
    x->pending = NULL;
    rsx_local_step(x, x->initiator ? NULL : pending, x->initiator ? 0 : x->npending);
    free(pending);
}

static void rsx_items_reply(crdt_store_rsx_t *x, sr_store_t *s, sr_req_t *q, const redisReply *r)
{
    size_t nitems = 0;
    if (sr_parse_rsx_items(r, &nitems, NULL, 0) < 0) {
        x->items_left = 0;
        rsx_complete(x, bad_reply(s, q, r), "CRDT.RSX.ITEMS: unexpected reply");
        return;
    }
    for (size_t i = 0; i < nitems; i++) {
        sr_rsx_item_t it;
        if (!sr_rsx_item(r, i, &it)) {
            x->items_left = 0;
            rsx_complete(x, bad_reply(s, q, r), "CRDT.RSX.ITEMS: unexpected entry");
            return;
        }
        if (x->nlitems == x->caplitems) {
            size_t cap = x->caplitems ? x->caplitems * 2 : 1024;
            sr_litem_t *p = realloc(x->litems, cap * sizeof(*p));
            if (!p) {
                x->items_left = 0;
                rsx_complete(x, CRDT_ENOMEM, NULL);
                return;
            }
            x->litems = p;
            x->caplitems = cap;
        }
        char *name = malloc(it.nlen ? it.nlen : 1);
        if (!name) {
            x->items_left = 0;
            rsx_complete(x, CRDT_ENOMEM, NULL);
            return;
        }
        memcpy(name, it.name, it.nlen);
        x->litems[x->nlitems++] = (sr_litem_t){it.id, it.fp, name, it.nlen};
    }
    if (x->items_left && --x->items_left == 0)
        rsx_local_start(x);
}

static void rsx_reply(sr_store_t *s, sr_req_t *q, const redisReply *r)
{
    if (q->kind == R_RSX_DIGEST) {
        s->rsx_items_busy = false;
        uint64_t items;
        if (sr_parse_rsx_digest(r, &items))
            s->rsx_items = items;
        return;
    }
    crdt_store_rsx_t *x = q->ud;
    if (r->type == REDIS_REPLY_ERROR) {
        char why[sizeof(((crdt_error_t *)0)->text)];
        snprintf(why, sizeof(why), "redis: %s: %.*s", q->verb, (int)(r->len > 200 ? 200 : r->len),
                 r->str ? r->str : "error");
        /* a message the module's session refused is the peer's fault: EDECODE, as the embedded
         * store says it; anything else (no session, anti-entropy off) is the store's */
        bool refused = r->str && strstr(r->str, "reconcile message refused");
        rsx_failed(q, refused ? CRDT_EDECODE : CRDT_EUNAVAIL, why);
        return;
    }
    x->inflight--;
    if (x->closed) {
        char sid[24];
        const char *msg;
        size_t mlen;
        if (q->kind == R_RSX_OPEN &&
            sr_parse_rsx_open(r, sid, sizeof(sid), &msg, &mlen, NULL, 0) == 0) {
            /* opened after all: close it in the module too */
            const char *argv[] = {"CRDT.RSX.CLOSE", SR_RSX_KEY, sid};
            size_t lens[] = {14, strlen(SR_RSX_KEY), strlen(sid)};
            snprintf(x->sid, sizeof(x->sid), "%s", sid);
            /* held across the send: one that fails at once completes inside it, and would free
             * x there when it was the last in flight */
            x->inflight++;
            rsx_send(x, R_RSX_CLOSE, "CRDT.RSX.CLOSE", 3, argv, lens);
            x->inflight--;
        }
        if (!x->inflight)
            rsx_free(x);
        return;
    }
    switch (q->kind) {
    case R_RSX_OPEN: {
        const char *msg;
        size_t mlen;
        if (sr_parse_rsx_open(r, x->sid, sizeof(x->sid), &msg, &mlen, NULL, 0) < 0) {
            rsx_complete(x, bad_reply(s, q, r), "CRDT.RSX.OPEN: unexpected reply");
            return;
        }
        x->opened = true;
        s->rs.rsx_sessions++;
        if (!x->initiator) {
            /* a failure to send completes (and may close and free x) inside rsx_recv */
            uint8_t *pending = x->pending;
            x->pending = NULL;
            rsx_recv(x, pending, x->npending);
            free(pending);
            return;
        }
        x->reply.len = 0;
        if (crdt_buf_append(&x->reply, msg, mlen) < 0) {
            rsx_complete(x, CRDT_ENOMEM, NULL);
            return;
        }
        rsx_complete(x, 0, NULL);
        return;
    }
    case R_RSX_RECV: {
        const char *msg;
        size_t mlen;
        bool more;
        if (sr_parse_rsx_recv(r, &msg, &mlen, &more, NULL, 0) < 0) {
            rsx_complete(x, bad_reply(s, q, r), "CRDT.RSX.RECV: unexpected reply");
            return;
        }
        x->reply.len = 0;
        if (mlen && crdt_buf_append(&x->reply, msg, mlen) < 0) {
            rsx_complete(x, CRDT_ENOMEM, NULL);
            return;
        }
        if (!more) {
            rsx_complete(x, 0, NULL);
            return;
        }
        const char *argv[] = {"CRDT.RSX.DIFFS", SR_RSX_KEY, x->sid};
        size_t lens[] = {14, strlen(SR_RSX_KEY), strlen(x->sid)};
        rsx_send(x, R_RSX_DIFFS, "CRDT.RSX.DIFFS", 3, argv, lens);
        return;
    }
    case R_RSX_DIFFS: {
        x->finished = true;
        size_t nrows = 0;
        if (sr_parse_rsx_diffs(r, &nrows, NULL, 0) < 0) {
            rsx_complete(x, bad_reply(s, q, r), "CRDT.RSX.DIFFS: unexpected reply");
            return;
        }
        free(x->diffs);
        x->diffs = calloc(nrows ? nrows : 1, sizeof(*x->diffs));
        x->ndiffs = 0;
        if (!x->diffs) {
            rsx_complete(x, CRDT_ENOMEM, NULL);
            return;
        }
        for (size_t i = 0; i < nrows; i++) {
            sr_rsx_diff_t row;
            if (!sr_rsx_diff_row(r, i, &row)) {
                rsx_complete(x, bad_reply(s, q, r), "CRDT.RSX.DIFFS: unexpected entry");
                return;
            }
            uint64_t id = row.id;
            if (row.name)
                rnames_add(s, id, row.name, row.nlen);
            /* one row per name: an id of several keys comes once */
            if (x->ndiffs && x->diffs[x->ndiffs - 1].id == id)
                continue;
            x->diffs[x->ndiffs++] = (crdt_rsx_diff_t){id, row.state};
        }
        rsx_complete(x, 0, NULL);
        return;
    }
    case R_RSX_ITEMS: rsx_items_reply(x, s, q, r); return;
    default: return; /* CLOSE: nothing to tell */
    }
}

/* A session of several primaries' keys is not one module session (see above). */
static bool rsx_single(const sr_store_t *s)
{
    int idx[SR_MAX_NODES];
    return s->ready == 1 && primaries(s, idx) == 1;
}

static crdt_store_rsx_t *sr_rsx_open(crdt_store_t *st, bool initiator, const crdt_rsx_config_t *cfg)
{
    /* a module session draws its own salt and takes cfg's limits (CRDT.RSX.OPEN ... MAXMSG
     * MAXCELLS); a session run here (several primaries) takes all of cfg */
    sr_store_t *s = srs(st);
    crdt_store_rsx_t *x = calloc(1, sizeof(*x));
    if (!x)
        return NULL;
    x->st = s;
    x->initiator = initiator;
    if (cfg)
        x->cfg = *cfg;
    else
        crdt_rsx_config_init(&x->cfg);
    x->next = s->rsx_list;
    if (x->next)
        x->next->prev = x;
    s->rsx_list = x;
    return x;
}

static void sr_rsx_step(crdt_store_t *st, crdt_store_rsx_t *x, const void *msg, size_t n,
                        crdt_store_rsx_cb cb, void *ud)
{
    sr_store_t *s = srs(st);
    x->cb = cb;
    x->ud = ud;
    if (x->failed || x->finished) {
        rsx_complete(x, CRDT_EINVAL, "the anti-entropy session is over");
        return;
    }
    if (x->ls) {
        rsx_local_step(x, msg, n);
        return;
    }
    if (!x->opened && s->ready == 1 && !rsx_single(s)) {
        /* several primaries: one module session cannot cover them; run the session here over
         * every primary's items (CRDT.RSX.ITEMS 0 16383 on each) */
        if (!x->initiator) {
            if (!msg) {
                rsx_complete(x, CRDT_EINVAL, "a responder's first step needs the peer's message");
                return;
            }
            free(x->pending);
            if (!(x->pending = malloc(n ? n : 1))) {
                rsx_complete(x, CRDT_ENOMEM, NULL);
                return;
            }
            memcpy(x->pending, msg, n);
            x->npending = n;
        }
        int idx[SR_MAX_NODES];
        int np = primaries(s, idx);
        x->local = true;
        x->items_left = (unsigned)np;
        x->inflight++; /* held while sending: a failure completes, and may close, inside */
        for (int i = 0; i < np && x->items_left; i++) {
            const char *argv[] = {"CRDT.RSX.ITEMS", "0", "16383"};
            size_t lens[] = {14, 1, 5};
            sr_req_t *q = req_new(s, R_RSX_ITEMS, "CRDT.RSX.ITEMS", 3, argv, lens);
            if (!q) {
                x->items_left = 0;
                rsx_complete(x, CRDT_ENOMEM, NULL);
                break;
            }
            q->ud = x;
            q->fixed = s->nodes[idx[i]];
            x->inflight++;
            if (!send_on(s, q, q->fixed, false))
                req_fail(q, CRDT_EUNAVAIL);
        }
        if (--x->inflight == 0 && x->closed)
            rsx_free(x);
        return;
    }
    if (x->opened) {
        rsx_recv(x, msg, n);
        return;
    }
    if (!x->initiator) {
        if (!msg) {
            rsx_complete(x, CRDT_EINVAL, "a responder's first step needs the peer's message");
            return;
        }
        free(x->pending);
        x->pending = malloc(n ? n : 1);
        if (!x->pending) {
            rsx_complete(x, CRDT_ENOMEM, NULL);
            return;
        }
        memcpy(x->pending, msg, n);
        x->npending = n;
    }
    /* the peer engine's limits, so the module's messages fit the link that carries them */
    char mm[24], mc[24];
    snprintf(mm, sizeof(mm), "%zu", x->cfg.max_msg < 256 ? (size_t)256 : x->cfg.max_msg);
    snprintf(mc, sizeof(mc), "%zu", x->cfg.max_cells ? x->cfg.max_cells : (size_t)1);
    const char *role = x->initiator ? "INITIATOR" : "RESPONDER";
    const char *argv[] = {"CRDT.RSX.OPEN", SR_RSX_KEY, role,       "0", "16383",
                          "MAXMSG",        mm,         "MAXCELLS", mc};
    size_t lens[] = {13, strlen(SR_RSX_KEY), strlen(role), 1, 5, 6, strlen(mm), 8, strlen(mc)};
    rsx_send(x, R_RSX_OPEN, "CRDT.RSX.OPEN", 9, argv, lens);
}

static void sr_rsx_close(crdt_store_t *st, crdt_store_rsx_t *x)
{
    (void)st;
    x->closed = true;
    x->cb = NULL;
    /* held across the send: a send that fails at once (Redis down) completes inside it, and the
     * completion frees a closed session once nothing is in flight */
    x->inflight++;
    if (x->opened && !x->finished) {
        const char *argv[] = {"CRDT.RSX.CLOSE", SR_RSX_KEY, x->sid};
        size_t lens[] = {14, strlen(SR_RSX_KEY), strlen(x->sid)};
        x->finished = true;
        rsx_send(x, R_RSX_CLOSE, "CRDT.RSX.CLOSE", 3, argv, lens);
    }
    if (--x->inflight == 0)
        rsx_free(x);
}

typedef struct sr_rkeys {
    crdt_store_key_cb each;
    crdt_store_done_cb done;
    void *ud;
    crdt_bytes_t *keys;
    size_t n;
} sr_rkeys_t;

static void rkeys_got(void *ud, int rc, const crdt_obj_t *const *objs, size_t n)
{
    sr_rkeys_t *k = ud;
    for (size_t i = 0; rc == 0 && i < n; i++)
        if (objs[i] && k->each(k->ud, k->keys[i].data, k->keys[i].len, objs[i]))
            break;
    k->done(k->ud, rc, 0);
    free(k->keys);
    free(k);
}

/* The keys DIFFS named for id, with their states now (CRDT.STATE each). */
static void sr_rsx_keys(crdt_store_t *st, uint64_t id, crdt_store_key_cb each,
                        crdt_store_done_cb done, void *ud)
{
    sr_store_t *s = srs(st);
    size_t n = 0;
    sr_rname_t *head = NULL;
    if (s->rnames_cap) {
        head = s->rnames[(size_t)(id * 0x9E3779B97F4A7C15ull >> 20) & (s->rnames_cap - 1)];
        for (sr_rname_t *e = head; e; e = e->next)
            n += e->id == id;
    }
    if (!n) {
        done(ud, 0, 0);
        return;
    }
    sr_rkeys_t *k = calloc(1, sizeof(*k));
    crdt_bytes_t *keys = calloc(n, sizeof(*keys));
    if (!k || !keys) {
        free(k);
        free(keys);
        done(ud, CRDT_ENOMEM, 0);
        return;
    }
    size_t i = 0;
    for (sr_rname_t *e = head; e; e = e->next)
        if (e->id == id)
            keys[i++] = (crdt_bytes_t){(const uint8_t *)e->name, e->len};
    *k = (sr_rkeys_t){.each = each, .done = done, .ud = ud, .keys = keys, .n = n};
    sr_get_many(st, keys, n, rkeys_got, k);
}

static size_t sr_rsx_items(crdt_store_t *st)
{
    sr_store_t *s = srs(st);
    uint64_t now = now_ms(s);
    if (s->ready == 1 && !s->rsx_items_busy && rsx_single(s) &&
        (!s->rsx_items_at || now - s->rsx_items_at >= SR_RSX_ITEMS_MS)) {
        s->rsx_items_at = now;
        const char *argv[] = {"CRDT.RSX.DIGEST", "0", "16383"};
        size_t lens[] = {15, 1, 5};
        sr_req_t *q = req_new(s, R_RSX_DIGEST, "CRDT.RSX.DIGEST", 3, argv, lens);
        if (q) {
            s->rsx_items_busy = true;
            route(q, SR_RSX_KEY, strlen(SR_RSX_KEY));
            req_dispatch(s, q);
        }
    }
    return (size_t)s->rsx_items;
}

/* ---- the rest ---------------------------------------------------------------------------------
 */

static uint64_t sr_last_seq(const crdt_store_t *st)
{
    return csrs(st)->last_seq;
}

static uint64_t sr_durable_seq(const crdt_store_t *st)
{
    return csrs(st)->durable_seq;
}

static uint64_t sr_node_id(const crdt_store_t *st)
{
    return csrs(st)->cfg.node_id;
}

static int sr_hlc_now(crdt_store_t *st, crdt_hlc_ts_t *ts)
{
    return hlc_stamp(srs(st), ts);
}

static int sr_flush(crdt_store_t *st)
{
    /* hiredis writes as soon as the socket takes it; nothing is buffered here */
    tell_durable(srs(st));
    return 0;
}

static void sr_tick(crdt_store_t *st, uint64_t now)
{
    (void)now;
    housekeeping(srs(st));
}

/* Following the change logs, a gateway reads the logs that exist at its start from their end:
 * until every primary's first CRDT.LOG.LIST was answered, a write made elsewhere could land in a
 * log it would then skip, so it does not call itself ready (/healthz 503) before that. */
static bool follow_starting(const sr_store_t *s)
{
    if (!s->cfg.follow_logs)
        return false;
    bool used[SR_MAX_NODES] = {0};
    for (unsigned i = 0; i < CRDTM_SLOTS; i++)
        if (s->slot_node[i] < SR_MAX_NODES)
            used[s->slot_node[i]] = true;
    for (int i = 0; i < s->nnodes; i++)
        if (used[i] && !s->nodes[i]->listed)
            return true;
    return false;
}

static const char *sr_last_error(const crdt_store_t *st)
{
    const sr_store_t *s = csrs(st);
    if (s->err_set || s->ready != 1)
        return s->err[0] ? s->err : "connecting to Redis";
    /* called per request: follow_starting's walk of the slot map is cached until every primary
     * listed its logs once (it stays so: a node that joins later is read from its logs' start) */
    if (!s->follow_started) {
        if (follow_starting(s))
            return "starting: reading where every primary's change logs end";
        ((sr_store_t *)s)->follow_started = true;
    }
    return NULL;
}

static void sr_stats(const crdt_store_t *st, crdt_store_stats_t *out)
{
    const sr_store_t *s = csrs(st);
    memset(out, 0, sizeof(*out));
    out->writes = s->writes;
    out->noops = s->noops;
}

static void batch_free(sr_batch_t *b);

static void free_all(sr_store_t *s)
{
    while (s->batches)
        batch_free(s->batches);
    while (s->rsx_list)
        rsx_free(s->rsx_list);
    rnames_clear(s);
    for (int i = 0; i < s->nnodes; i++)
        free(s->nodes[i]);
    free(s->win);
    free(s->logs);
    free(s->slot_logs);
    for (size_t i = 0; i < s->feed_len; i++)
        free(s->feed[(s->feed_head + i) % s->cfg.feed_max].key);
    free(s->feed);
    free(s);
}

static void sr_close(crdt_store_t *st)
{
    sr_store_t *s = srs(st);
    if (s->closing)
        return;
    s->closing = true;
    if (s->timer)
        s->loop->timer_free(s->loop->ctx, s->timer);
    s->timer = NULL;
    for (sr_req_t *q = s->wait_head, *nx; q; q = nx) {
        nx = q->next;
        req_drop(q);
    }
    s->wait_head = NULL;
    for (int i = 0; i < s->nnodes; i++) {
        sr_conn_t *c = s->nodes[i]->conn;
        s->nodes[i]->conn = NULL;
        if (c)
            redisAsyncFree(c->ac); /* pending callbacks see `closing` and only free */
    }
    /* the pending callbacks ran (with NULL) and dropped their requests; inside a completion
     * hiredis frees the current context when it returns, and conn_io frees the store then */
    if (s->depth == 0)
        free_all(s);
}

static const crdt_store_ops_t sr_ops = {
    .name = "redis",
    .close = sr_close,
    .get = sr_get,
    .get_many = sr_get_many,
    .write = sr_write,
    .apply = sr_apply,
    .changes = sr_changes,
    .scan = sr_scan,
    .list_keys = sr_list_keys,
    .fingerprint = sr_fingerprint,
    .mark_get = sr_mark_get,
    .mark_put = sr_mark_put,
    .last_seq = sr_last_seq,
    .durable_seq = sr_durable_seq,
    .node_id = sr_node_id,
    .hlc_now = sr_hlc_now,
    .flush = sr_flush,
    .tick = sr_tick,
    .last_error = sr_last_error,
    .stats = sr_stats,
    .rsx_open = sr_rsx_open,
    .rsx_step = sr_rsx_step,
    .rsx_close = sr_rsx_close,
    .rsx_keys = sr_rsx_keys,
    .rsx_items = sr_rsx_items,
    .pipelined = true, /* one key's commands go on one connection, in order */
    .types = sr_types,
    .tl_write_batch = sr_tl_write_batch,
    .tl_range = sr_tl_range,
};

void crdt_store_redis_config_init(crdt_store_redis_config_t *cfg)
{
    *cfg = (crdt_store_redis_config_t){.node_id = 0,
                                       .wait_replicas = 0,
                                       .wait_timeout_ms = 1000,
                                       .timeout_ms = 2000,
                                       .backoff_min_ms = 50,
                                       .backoff_max_ms = 2000,
                                       .max_redirects = 5,
                                       .max_pending = 65536,
                                       .feed_max = 65536};
}

crdt_store_t *crdt_store_redis_open(const char *url, const crdt_store_redis_config_t *cfg,
                                    const gw_evloop_t *loop, char *err, size_t errlen)
{
    if (!cfg || !loop) {
        snprintf(err, errlen, "the Redis store needs a configuration and an event loop");
        return NULL;
    }
    sr_store_t *s = calloc(1, sizeof(*s));
    if (!s) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    s->cfg = *cfg;
    if (crdt_hlc_init(&s->hlc, cfg->node_id, 86400000) < 0) {
        snprintf(err, errlen, "the Redis store needs a node id (1 .. 2^63-1), got %llu",
                 (unsigned long long)cfg->node_id);
        free(s);
        return NULL;
    }
    if (!s->cfg.timeout_ms)
        s->cfg.timeout_ms = 2000;
    if (!s->cfg.backoff_min_ms)
        s->cfg.backoff_min_ms = 50;
    if (s->cfg.backoff_max_ms < s->cfg.backoff_min_ms)
        s->cfg.backoff_max_ms = s->cfg.backoff_min_ms;
    if (!s->cfg.wait_timeout_ms)
        s->cfg.wait_timeout_ms = 1000;
    if (!s->cfg.max_pending)
        s->cfg.max_pending = 65536;
    if (!s->cfg.follow_poll_ms)
        s->cfg.follow_poll_ms = 50;
    /* A poll visits every log of the node (a seek each, and a read of each log with news): with
     * a small budget it stopped after a few hundred logs and the next one started over, so under
     * load most of Redis's time went to polls (docs/benchmarks.md, issue 16's roshi listener) */
    if (!s->cfg.follow_count)
        s->cfg.follow_count = 10000;
    s->nseeds = sr_parse_url(url, s->seeds, SR_SEEDS_MAX, err, errlen);
    if (s->nseeds < 0) {
        free(s);
        return NULL;
    }
    s->base.ops = &sr_ops;
    s->loop = loop;
    s->cluster = -1;
    /* the first change is seq_base + 1 (positions of an earlier run are below it) */
    s->last_seq = s->durable_seq = s->durable_told = s->cfg.seq_base;
    for (unsigned i = 0; i < CRDTM_SLOTS; i++)
        s->slot_node[i] = SR_NO_NODE;
    s->timer = loop->timer_new(loop->ctx, on_timer, s);
    if (!s->timer) {
        snprintf(err, errlen, "cannot create a timer on the event loop");
        free(s);
        return NULL;
    }
    loop->timer_arm(loop->ctx, s->timer, SR_HOUSEKEEPING_MS);
    start_discovery(s);
    return &s->base;
}

int crdt_store_redis_ready(const crdt_store_t *st)
{
    return st && st->ops == &sr_ops ? csrs(st)->ready : -1;
}

int crdt_store_redis_is_cluster(const crdt_store_t *st)
{
    return st && st->ops == &sr_ops && csrs(st)->ready == 1 ? csrs(st)->cluster : -1;
}

void crdt_store_redis_stats(const crdt_store_t *st, crdt_store_redis_stats_t *out)
{
    memset(out, 0, sizeof(*out));
    if (!st || st->ops != &sr_ops)
        return;
    const sr_store_t *s = csrs(st);
    *out = s->rs;
    out->nodes = (unsigned)s->nnodes;
    for (int i = 0; i < s->nnodes; i++)
        out->nodes_up += s->nodes[i]->state == N_UP;
}
