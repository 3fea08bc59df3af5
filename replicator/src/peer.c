/* peer.c - the peer engine (crdt_peer.h): links, handshake, outbox, acks, marks, catch-up,
 * anti-entropy, keepalive, dials and statistics of crdt-peer.v1, sans I/O
 *
 * docs/replication.md, "Peer links", is the reference; in short:
 *
 * - Every configured peer is a dial slot that keeps one outbound link (capped exponential backoff
 *   with jitter); inbound links are accepted too. A mutual HMAC challenge proves the cluster
 *   secret, and the wall clocks exchanged in it must agree within the drift bound. One link per
 *   peer node: when both ends dialled, the link dialled by the lower node id stays.
 * - Only changes that originate here (origin CRDT_ORIGIN_LOCAL) are pushed: in a full mesh every
 *   node hears every write from its origin, and anti-entropy repairs partial meshes. Changes are
 *   encoded once into a shared outbox, batched, released only once durable here (so a crash never
 *   makes a peer hold seqs we reuse), and queued by reference on every live link.
 * - A batch carries `through`: every local change with seq <= through has been sent. The receiver
 *   acks `through` once what the batch produced is durable on its side, and remembers it per
 *   origin node and epoch (the store mark "peers"), so that on reconnect the sender resumes from
 *   there with the change feed, then goes live. A link whose queue passes the bound drops it and
 *   catches up from the feed the same way, paced by pulls: memory stays bounded.
 * - Anti-entropy runs on every connect and periodically, started by the dialler; the store runs
 *   the session over its own index; each side then sends the states of the differing keys it
 *   holds.
 */
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "crdt_peer.h"
#include "peer_wire.h"

#define MAX_LINKS 64       /* links alive at once (handshakes included) */
#define MAX_RECS 64        /* peers remembered (status, stats) */
#define MAX_SLOTS 16       /* dial slots */
#define HANDSHAKE_MAX 4096 /* largest message before the peer proved the secret */
#define HANDSHAKE_MS 5000  /* a link must be up within this */
#define KEEPALIVE_MS 1000  /* a PING when nothing else was sent for this long */
#define CHECK_MS 500       /* links are checked this often */
#define DEAD_MS 6000       /* a link silent for this long is closed */
#define BACKOFF_MIN_MS 100 /* reconnect delays: 100 ms doubling to 10 s, with jitter */
#define BACKOFF_MAX_MS 10000
#define MARKS_WRITE_MS 1000 /* the marks are written at most this often */
#define AE_TIMEOUT_MS 10000 /* a session older than this is abandoned */
#define AE_FIRST_MS 5000    /* without a period: the on-connect session starts by then anyway */
#define LOADING_WAIT_MS 100 /* dials wait in such steps until the marks are read */
#define PEND_MAX 4096       /* received batches waiting for durability, per link */
#define LAG_RING 1024       /* (through, time) samples of released batches, for lag seconds */
#define MARK_NAME "peers"
#define MARK_VERSION 1
#define NEVER UINT64_MAX

/* ---- frames ---------------------------------------------------------------------------------- */

struct crdt_peer_frame {
    unsigned refs;
    size_t len; /* payload bytes, at buf + headroom */
    size_t headroom;
    uint64_t first_seq; /* DELTAS from the outbox: seqs of the first and last entries */
    uint64_t max_seq;
    uint64_t through;
    uint32_t count;
    bool data; /* DELTAS: advances sent_through, counts as deltas sent */
    uint8_t *buf;
};
typedef struct crdt_peer_frame frame_t;

typedef struct qnode {
    frame_t *f;
    struct qnode *next;
} qnode_t;

typedef struct fifo {
    qnode_t *head, *tail;
    size_t bytes, n;
} fifo_t;

static frame_t *frame_new(size_t headroom, size_t cap)
{
    frame_t *f = calloc(1, sizeof(*f));
    if (!f)
        return NULL;
    f->buf = malloc(headroom + cap + 1);
    if (!f->buf) {
        free(f);
        return NULL;
    }
    f->refs = 1;
    f->headroom = headroom;
    return f;
}

/* A frame that adopts the bytes of b (b is left empty): b starts with `headroom` bytes. */
static frame_t *frame_adopt(crdt_buf_t *b, size_t headroom)
{
    frame_t *f = calloc(1, sizeof(*f));
    if (!f)
        return NULL;
    f->refs = 1;
    f->buf = b->data;
    f->headroom = headroom;
    f->len = b->len - headroom;
    memset(b, 0, sizeof(*b));
    return f;
}

static frame_t *frame_copy(size_t headroom, const void *p, size_t n)
{
    frame_t *f = frame_new(headroom, n);
    if (!f)
        return NULL;
    memcpy(f->buf + headroom, p, n);
    f->len = n;
    return f;
}

static void frame_unref(frame_t *f)
{
    if (f && --f->refs == 0) {
        free(f->buf);
        free(f);
    }
}

uint8_t *crdt_peer_frame_data(crdt_peer_frame_t *f)
{
    return f->buf + f->headroom;
}

size_t crdt_peer_frame_len(const crdt_peer_frame_t *f)
{
    return f->len;
}

bool crdt_peer_frame_shared(const crdt_peer_frame_t *f)
{
    return f->refs > 1;
}

void crdt_peer_frame_release(crdt_peer_frame_t *f)
{
    frame_unref(f);
}

static int fifo_push(fifo_t *q, frame_t *f)
{
    qnode_t *n = malloc(sizeof(*n));
    if (!n)
        return CRDT_ENOMEM;
    n->f = f;
    n->next = NULL;
    if (q->tail)
        q->tail->next = n;
    else
        q->head = n;
    q->tail = n;
    q->bytes += f->len;
    q->n++;
    return 0;
}

/* Removes the head and returns its frame (the reference moves to the caller). */
static frame_t *fifo_pop(fifo_t *q)
{
    qnode_t *n = q->head;
    if (!n)
        return NULL;
    q->head = n->next;
    if (!q->head)
        q->tail = NULL;
    frame_t *f = n->f;
    q->bytes -= f->len;
    q->n--;
    free(n);
    return f;
}

static void fifo_clear(fifo_t *q)
{
    frame_t *f;
    while ((f = fifo_pop(q)))
        frame_unref(f);
}

/* ---- state ---------------------------------------------------------------------------------- */

typedef crdt_peer_link_t link_t;

/* A peer: a dial slot (index < nslots) and/or a node met on an inbound link. Outlives links:
 * holds the counters of the status. */
typedef struct peer_rec {
    crdt_peers_t *P;
    bool used;
    int slot;         /* dial slot, -1 for an inbound-only node */
    uint64_t node_id; /* 0 until a handshake told us */
    link_t *link;     /* the link that is up, or NULL */
    link_t *dial;     /* our outbound link while it exists (dial slots) */
    bool standby;     /* the peer's own link to us is the one kept: do not dial meanwhile */
    unsigned attempts;
    uint64_t dial_at; /* NEVER: no dial scheduled */
    uint64_t bytes_sent, bytes_received, deltas_sent, deltas_received;
    uint64_t ups, ae_rounds, keys_repaired, keys_repair_sent, type_conflicts;
    uint64_t ack_sent, ack_received; /* applied-through marks: ours of theirs, theirs of ours */
    char address[280];
    char last_error[200];
} peer_rec_t;

typedef struct pend {
    uint64_t through; /* the sender's mark the batch brings us to */
    uint64_t local;   /* our last seq after applying it: durable_seq must reach this */
} pend_t;

enum link_state { LK_HANDSHAKE = 0, LK_UP };

/* A store call's context that may outlive the call (a store completing later): on the engine's
 * list until its completion ran, so crdt_peers_free frees what a closed store never completed. */
typedef struct inflight {
    struct inflight *prev, *next;
    crdt_buf_t *owned;         /* freed with it (may be NULL) */
    crdt_store_rsx_t *session; /* closed with it (may be NULL) */
} inflight_t;

struct crdt_peer_link {
    crdt_peers_t *P;
    int idx;
    void *ud;
    bool outbound;
    peer_rec_t *rec; /* dial slot (outbound) or, once up, the peer's record */
    enum link_state state;
    bool closing;
    bool got_challenge;
    bool ws_open;      /* the connection is established (handshake messages may flow) */
    bool catchup_idle; /* the feed had nothing sendable: wait for durability or the timer */
    char addr[280];
    uint64_t t_open_ms, check_at;
    /* handshake */
    crdt_buf_t transcript;
    uint8_t nonce[PW_NONCE_LEN];
    uint64_t remote_node, remote_epoch;
    uint64_t remote_durable; /* the peer's durable seq at the handshake: its catch-up target */
    bool ae_first_due;       /* the on-connect session waits until both catch-ups are done */
    uint64_t last_rx_ms, last_tx_ms;
    /* sending: control (handshake, AE, BYE) before data */
    fifo_t ctl, data;
    bool live;             /* data comes from the outbox; false: catching up from the feed */
    uint64_t cursor;       /* catch-up: feed position (everything <= cursor sent) */
    uint64_t sent_through; /* the highest `through` pulled */
    bool overflow_logged;
    /* acks of what we received */
    uint64_t applied;    /* their seqs durably applied here, through this */
    uint64_t rx_through; /* the highest `through` received on this link */
    bool ack_due;
    pend_t *pend;
    size_t npend, cap_pend;
    /* received messages whose applies have not all completed, oldest first */
    struct apply_batch *ab_head, *ab_tail;
    struct feed_ctx *feed; /* catch-up: the change-feed read in flight or not consumed yet */
    /* anti-entropy */
    crdt_store_rsx_t *ae;
    struct ae_step_ctx *ae_step; /* the step in flight */
    fifo_t ae_rx;                /* anti-entropy messages received meanwhile */
    uint64_t *repair_ids;
    size_t nrepair, repair_pos;
    struct repair_ctx *repair; /* the REPAIR message being built */
    uint64_t ae_started_ms, ae_at;
};

typedef struct mark {
    uint64_t node, epoch, applied;
} mark_t;

struct crdt_peers {
    crdt_store_t *st;
    crdt_peers_config_t cfg;
    crdt_peers_host_t host;
    char cluster[64];
    uint8_t secret[1024];
    uint64_t node_id;
    uint64_t epoch; /* this replica's history: seqs are only comparable within one epoch */
    uint64_t now;   /* the time of the current call */
    peer_rec_t recs[MAX_RECS];
    int nslots;
    link_t *links[MAX_LINKS];
    int links_hi; /* links[] is empty from here on */
    /* applied-through marks of every origin we heard from */
    mark_t marks[MAX_RECS];
    int nmarks;
    bool marks_dirty;
    uint64_t marks_at;
    /* the outbox of local changes */
    crdt_buf_t open;
    uint32_t open_count;
    uint64_t open_first, open_max;
    fifo_t staged; /* sealed batches waiting for durability */
    uint64_t released_through;
    /* every local change after this seq is in the outbox or was released: a link may go live
     * once its catch-up reached our durable seq and that is at least this */
    uint64_t complete_after;
    uint64_t batch_at;
    bool outbox_dropped_logged;
    struct {
        uint64_t through, ms;
    } ring[LAG_RING];
    size_t ring_start, ring_n;
    crdt_buf_t scratch;
    uint64_t outbox_overflows, clock_refusals;
    inflight_t *inflight; /* contexts of store calls not completed yet */
    bool freeing;         /* in crdt_peers_free */
    bool loading;         /* the marks' read has not completed: no links, no dials */
    int load_rc;
    char *load_legacy;
};

/* One anti-entropy step: its completion may come after the call returned. A link has at most one
 * in flight (l->ae_step); messages received meanwhile wait in l->ae_rx, in order. A session ended
 * meanwhile (or a link gone) is closed by the step's completion, which then ignores its result. */
typedef struct ae_step_ctx {
    inflight_t node; /* first: freed through it */
    crdt_peers_t *P;
    link_t *l;           /* NULL once the link is gone */
    crdt_store_rsx_t *s; /* the session stepped */
    bool ended;          /* the session ended meanwhile: close it, ignore the result */
    bool issuing, done, failed;
} ae_step_ctx_t;

static void inflight_add(crdt_peers_t *P, inflight_t *n)
{
    n->prev = NULL;
    n->next = P->inflight;
    if (P->inflight)
        P->inflight->prev = n;
    P->inflight = n;
}

/* Unlinks and frees n (the first member of its allocation). */
static void inflight_free(crdt_peers_t *P, inflight_t *n)
{
    if (n->prev)
        n->prev->next = n->next;
    else
        P->inflight = n->next;
    if (n->next)
        n->next->prev = n->prev;
    if (n->owned)
        crdt_buf_free(n->owned);
    if (n->session)
        crdt_store_rsx_close(P->st, n->session);
    free(n);
}

static void batches_detach(link_t *l);
static void feed_detach(link_t *l);
static void repair_detach(link_t *l);
static void link_close(link_t *l, uint8_t refuse, uint8_t bye, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
static void schedule_dial(peer_rec_t *rec, uint64_t delay_ms);
static void ae_maybe_first(link_t *l);
static void plog(crdt_peers_t *P, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static void plog(crdt_peers_t *P, const char *fmt, ...)
{
    char line[600];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(line, sizeof(line), fmt, ap);
    va_end(ap);
    if (P->host.log)
        P->host.log(P->host.ud, line);
}

/* Records why link l ended or was refused as its peer's last_error, unless another link to that
 * peer is up: the error of a duplicate closed beside a healthy link, or of a redial while the
 * peer's own link to us serves, is logged only. last_error is cleared when a link comes up
 * (link_up), so a peer that is up never shows a stale one. */
static void rec_error(link_t *l, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static void rec_error(link_t *l, const char *fmt, ...)
{
    peer_rec_t *r = l->rec;
    if (!r || (r->link && r->link != l))
        return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(r->last_error, sizeof(r->last_error), fmt, ap);
    va_end(ap);
}

static const char *rec_name(const crdt_peers_t *P, const peer_rec_t *rec, const link_t *l,
                            char *buf, size_t n)
{
    if (rec && rec->slot >= 0 && P->cfg.slot_names && P->cfg.slot_names[rec->slot])
        snprintf(buf, n, "%s", P->cfg.slot_names[rec->slot]);
    else if (l)
        snprintf(buf, n, "%s (inbound)", l->addr);
    else
        snprintf(buf, n, "node %" PRIu64, rec ? rec->node_id : 0);
    return buf;
}

static void want_write(link_t *l)
{
    if (l->P->host.want_write)
        l->P->host.want_write(l->P->host.ud, l->ud);
}

static uint64_t rand_u64(crdt_peers_t *P)
{
    uint64_t v = 0;
    if (P->host.random && P->host.random(P->host.ud, &v, sizeof(v)))
        v = 0;
    return v;
}

/* ---- marks: what we durably applied of each origin, kept in the store mark "peers" ----------- */

static mark_t *mark_find(crdt_peers_t *P, uint64_t node)
{
    for (int i = 0; i < P->nmarks; i++)
        if (P->marks[i].node == node)
            return &P->marks[i];
    return NULL;
}

/* Our applied-through mark of node's history `epoch` (0 when we know another history). */
static uint64_t mark_get(crdt_peers_t *P, uint64_t node, uint64_t epoch)
{
    mark_t *m = mark_find(P, node);
    return m && m->epoch == epoch ? m->applied : 0;
}

static void mark_set(crdt_peers_t *P, uint64_t node, uint64_t epoch, uint64_t applied)
{
    mark_t *m = mark_find(P, node);
    if (!m) {
        if (P->nmarks == MAX_RECS) {
            /* forget the oldest; a peer we forget is resent from the start (harmless) */
            memmove(&P->marks[0], &P->marks[1], (MAX_RECS - 1) * sizeof(P->marks[0]));
            P->nmarks--;
        }
        m = &P->marks[P->nmarks++];
        m->node = node;
        m->epoch = epoch;
        m->applied = 0;
    }
    if (m->epoch != epoch) {
        m->epoch = epoch;
        m->applied = 0;
    }
    if (applied > m->applied || m->applied == 0) {
        m->applied = applied;
        P->marks_dirty = true;
    }
    if (P->marks_dirty && P->marks_at == NEVER)
        P->marks_at = P->now + MARKS_WRITE_MS;
}

static void marks_put_cb(void *ud, int rc)
{
    crdt_peers_t *P = ud;
    if (rc < 0) {
        plog(P, "peers: cannot write the replication marks: %s", crdt_strerror(rc));
        P->marks_dirty = true; /* retried at the next write */
    }
}

/* The last write, from crdt_peers_free: may complete after the engine is gone. */
static void marks_put_last_cb(void *ud, int rc)
{
    (void)ud;
    (void)rc;
}

/* Writes the marks (the store replaces the blob atomically). They only ever lag the truth: a mark
 * is set once the data it covers is durable, so a crash can make a peer resend a little, never
 * skip anything. Layout: version u8, epoch u64, count varint, count x (node varint, epoch u64,
 * applied varint). */
static void marks_write(crdt_peers_t *P)
{
    if (P->loading)
        return; /* written once loaded */
    crdt_buf_t b = {0};
    int rc = pw_put_u8(&b, MARK_VERSION) || pw_put_u64(&b, P->epoch) ||
             pw_put_varint(&b, (uint64_t)P->nmarks);
    for (int i = 0; !rc && i < P->nmarks; i++)
        rc = pw_put_varint(&b, P->marks[i].node) || pw_put_u64(&b, P->marks[i].epoch) ||
             pw_put_varint(&b, P->marks[i].applied);
    P->marks_dirty = false;
    P->marks_at = NEVER;
    if (rc)
        marks_put_cb(P, CRDT_ENOMEM);
    else
        crdt_store_mark_put(P->st, MARK_NAME, b.data, b.len,
                            P->freeing ? marks_put_last_cb : marks_put_cb, P->freeing ? NULL : P);
    crdt_buf_free(&b);
}

/* The read of the marks at creation; with a store that completes later the engine is `loading`
 * (no links, no dials) until marks_loaded ran. */
typedef struct marks_load_ctx {
    inflight_t node; /* first: freed through it */
    crdt_peers_t *P;
    int rc; /* 1: loaded, 0: none, -1: damaged or unreadable, -2: not completed yet */
    bool issuing;
} marks_load_ctx_t;

static int marks_loaded(crdt_peers_t *P, int rc, const char *legacy);

/* Reads the marks blob into P: 1 loaded, 0 none, -1 damaged or unreadable. */
static int marks_parse(crdt_peers_t *P, int rc, const void *p, size_t n)
{
    if (rc < 0)
        return -1;
    if (!p)
        return 0;
    pw_reader_t r;
    uint8_t v;
    uint64_t epoch, count;
    pw_reader_init(&r, p, n);
    if (!pw_get_u8(&r, &v) || v != MARK_VERSION || !pw_get_u64(&r, &epoch) || !epoch ||
        !pw_get_varint(&r, &count) || count > MAX_RECS) {
        return -1;
    }
    mark_t m[MAX_RECS];
    for (uint64_t i = 0; i < count; i++)
        if (!pw_get_varint(&r, &m[i].node) || !pw_get_u64(&r, &m[i].epoch) ||
            !pw_get_varint(&r, &m[i].applied)) {
            return -1;
        }
    if (pw_left(&r)) {
        return -1;
    }
    P->epoch = epoch;
    P->nmarks = (int)count;
    memcpy(P->marks, m, (size_t)count * sizeof(m[0]));
    return 1;
}

static void marks_get_cb(void *ud, int rc, const void *p, size_t n)
{
    marks_load_ctx_t *c = ud;
    c->rc = marks_parse(c->P, rc, p, n);
    if (c->issuing)
        return; /* crdt_peers_new goes on */
    crdt_peers_t *P = c->P;
    P->load_rc = c->rc;
    inflight_free(P, &c->node);
    if (marks_loaded(P, P->load_rc, P->load_legacy))
        plog(P, "peers: no random bytes for the replication epoch; retrying");
}

/* An old peers.state (crdt-peers 1): epoch and marks, read once when upgrading. */
static bool legacy_load(crdt_peers_t *P, const char *text)
{
    uint64_t epoch = 0;
    mark_t m[MAX_RECS];
    int n = 0;
    const char *line = text;
    if (strncmp(line, "crdt-peers 1\n", 13))
        return false;
    line += 13;
    if (sscanf(line, "epoch %" SCNx64, &epoch) != 1 || !epoch)
        return false;
    while ((line = strchr(line, '\n')) && *++line) {
        if (n == MAX_RECS || sscanf(line, "mark %" SCNu64 " %" SCNx64 " %" SCNu64, &m[n].node,
                                    &m[n].epoch, &m[n].applied) != 3)
            return false;
        n++;
    }
    P->epoch = epoch;
    P->nmarks = n;
    memcpy(P->marks, m, (size_t)n * sizeof(m[0]));
    return true;
}

/* ---- links ---------------------------------------------------------------------------------- */

static int queue_ctl(link_t *l, const crdt_buf_t *msg)
{
    frame_t *f = frame_copy(l->P->cfg.headroom, msg->data, msg->len);
    if (!f || fifo_push(&l->ctl, f)) {
        frame_unref(f);
        return CRDT_ENOMEM;
    }
    want_write(l);
    return 0;
}

/* Logs why, sends a REFUSE (refuse != 0) or BYE (bye != 0) as the last message, then asks the
 * transport to close. */
static void link_close(link_t *l, uint8_t refuse, uint8_t bye, const char *fmt, ...)
{
    crdt_peers_t *P = l->P;
    if (l->closing)
        return;
    char msg[200], name[300];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    plog(P, "peer %s: %s%s", rec_name(P, l->rec, l, name, sizeof(name)), msg,
         refuse ? "; link refused" : "; closing the link");
    rec_error(l, "%s", msg);
    l->closing = true;
    if (!bye)
        fifo_clear(&l->ctl); /* a BYE follows what is queued (the WELCOME of a duplicate) */
    fifo_clear(&l->data);
    crdt_buf_t b = {0};
    if (refuse)
        pw_encode_refuse(&b, refuse, msg);
    else if (bye)
        pw_put_u8(&b, PW_BYE), pw_put_u8(&b, bye);
    if (b.len) {
        frame_t *f = frame_copy(P->cfg.headroom, b.data, b.len);
        if (f && fifo_push(&l->ctl, f))
            frame_unref(f);
    }
    crdt_buf_free(&b);
    if (P->host.close)
        P->host.close(P->host.ud, l->ud, false);
    want_write(l);
}

static void ae_end(link_t *l)
{
    if (l->ae) {
        if (l->ae_step && l->ae_step->s == l->ae)
            l->ae_step->ended = true; /* closed by the step's completion */
        else
            crdt_store_rsx_close(l->P->st, l->ae);
        l->ae = NULL;
    }
}

/* Frees a link whose connection is gone (or is being abandoned). */
static void link_free(link_t *l, bool redial)
{
    crdt_peers_t *P = l->P;
    ae_end(l);
    if (l->ae_step) {
        l->ae_step->l = NULL; /* its completion closes the session and frees it */
        l->ae_step = NULL;
    }
    fifo_clear(&l->ae_rx);
    repair_detach(l);
    batches_detach(l);
    feed_detach(l);
    fifo_clear(&l->ctl);
    fifo_clear(&l->data);
    crdt_buf_free(&l->transcript);
    free(l->pend);
    free(l->repair_ids);
    P->links[l->idx] = NULL;
    while (P->links_hi > 0 && !P->links[P->links_hi - 1])
        P->links_hi--;
    peer_rec_t *dial = l->outbound ? l->rec : NULL;
    for (int i = 0; i < MAX_RECS; i++) {
        peer_rec_t *r = &P->recs[i];
        if (r->link == l) {
            r->link = NULL;
            /* a standby dial slot for that node wakes up: the link it deferred to is gone */
            for (int j = 0; j < P->nslots; j++)
                if (P->recs[j].standby && P->recs[j].node_id == r->node_id && redial) {
                    P->recs[j].standby = false;
                    if (!P->recs[j].dial)
                        schedule_dial(&P->recs[j], BACKOFF_MIN_MS);
                }
        }
        if (r->dial == l)
            r->dial = NULL;
    }
    free(l);
    if (dial && redial)
        schedule_dial(dial, dial->standby ? BACKOFF_MAX_MS : 0);
}

/* ---- the outbox: local changes, batched, released once durable ------------------------------ */

static void lag_note(crdt_peers_t *P, uint64_t through)
{
    size_t i = (P->ring_start + P->ring_n) % LAG_RING;
    if (P->ring_n == LAG_RING)
        P->ring_start = (P->ring_start + 1) % LAG_RING;
    else
        P->ring_n++;
    P->ring[i].through = through;
    P->ring[i].ms = P->now;
}

/* Seconds since the oldest release our peer has not acked (0 when it acked everything). */
static double lag_seconds(const crdt_peers_t *P, uint64_t acked, uint64_t now)
{
    for (size_t k = 0; k < P->ring_n; k++) {
        size_t i = (P->ring_start + k) % LAG_RING;
        if (P->ring[i].through > acked)
            return now > P->ring[i].ms ? (double)(now - P->ring[i].ms) / 1e3 : 0;
    }
    return 0;
}

/* The link falls back to the change feed from what it already sent. */
static void link_to_catchup(link_t *l, const char *why)
{
    char name[300];
    if (l->live && !l->overflow_logged) {
        plog(l->P, "peer %s: %s; catching up from the change feed",
             rec_name(l->P, l->rec, l, name, sizeof(name)), why);
        l->overflow_logged = true;
    }
    fifo_clear(&l->data);
    l->live = false;
    l->catchup_idle = false;
    l->cursor = l->sent_through;
    want_write(l);
}

static void distribute(crdt_peers_t *P, frame_t *f)
{
    for (int i = 0; i < MAX_LINKS; i++) {
        link_t *l = P->links[i];
        if (!l || l->state != LK_UP || l->closing || !l->live)
            continue;
        if (l->data.bytes + f->len > P->cfg.queue_bytes) {
            link_to_catchup(l, "outbound queue full");
            continue;
        }
        f->refs++;
        if (fifo_push(&l->data, f)) {
            f->refs--;
            link_to_catchup(l, "out of memory queueing deltas");
            continue;
        }
        want_write(l);
    }
    lag_note(P, f->through);
    P->released_through = f->through;
    frame_unref(f);
}

static int deltas_start(crdt_buf_t *b, size_t headroom)
{
    b->len = 0;
    if (crdt_buf_reserve(b, headroom + PW_BATCH_BYTES + 64))
        return CRDT_ENOMEM;
    memset(b->data, 0, headroom + PW_DELTAS_HDR);
    b->data[headroom] = PW_DELTAS;
    b->len = headroom + PW_DELTAS_HDR;
    return 0;
}

static void outbox_seal(crdt_peers_t *P)
{
    if (!P->open_count)
        return;
    size_t H = P->cfg.headroom;
    pw_store_u32(P->open.data + H + PW_D_COUNT, P->open_count);
    frame_t *f = frame_adopt(&P->open, H);
    if (!f)
        return; /* keep the batch; sealing is retried at the next release */
    f->first_seq = P->open_first;
    f->max_seq = P->open_max;
    f->count = P->open_count;
    f->data = true;
    P->open_count = 0;
    if (fifo_push(&P->staged, f)) {
        frame_unref(f);
        P->complete_after = crdt_store_last_seq(P->st);
        /* lost: every live link must catch up from the feed instead */
        for (int i = 0; i < MAX_LINKS; i++)
            if (P->links[i] && P->links[i]->live)
                link_to_catchup(P->links[i], "out of memory in the outbox");
    }
}

/* Drops the outbox (too big: durability stalls, or memory): links go to the feed. */
static void outbox_drop(crdt_peers_t *P, const char *why)
{
    if (!P->outbox_dropped_logged)
        plog(P, "peers: dropping %zu bytes of unsent deltas (%s); links catch up from the feed",
             P->staged.bytes + P->open.len, why);
    P->outbox_dropped_logged = true;
    P->outbox_overflows++;
    fifo_clear(&P->staged);
    P->open_count = 0;
    P->open.len = 0;
    P->complete_after = crdt_store_last_seq(P->st);
    for (int i = 0; i < MAX_LINKS; i++)
        if (P->links[i] && P->links[i]->live)
            link_to_catchup(P->links[i], why);
}

/* Releases what is durable. With `timer`: also seals the open batch and, when nothing else goes
 * out, sends a progress mark (an empty batch) so acks and lag reach our last durable seq even
 * when our recent changes all came from peers. */
static void outbox_release(crdt_peers_t *P, bool timer)
{
    uint64_t D = crdt_store_durable_seq(P->st);
    size_t H = P->cfg.headroom;
    if (timer)
        outbox_seal(P);
    while (P->staged.head && P->staged.head->f->max_seq <= D) {
        frame_t *f = fifo_pop(&P->staged);
        uint64_t next_first = P->staged.head  ? P->staged.head->f->first_seq
                              : P->open_count ? P->open_first
                                              : UINT64_MAX;
        uint64_t through = next_first - 1 < D ? next_first - 1 : D;
        if (through < f->max_seq)
            through = f->max_seq;
        f->through = through;
        pw_store_u64(f->buf + H + PW_D_FROM, P->released_through);
        pw_store_u64(f->buf + H + PW_D_THROUGH, through);
        distribute(P, f);
    }
    if (timer && !P->staged.head) {
        uint64_t T = P->open_count && P->open_first - 1 < D ? P->open_first - 1 : D;
        if (T > P->released_through) {
            frame_t *f = frame_new(H, PW_DELTAS_HDR);
            if (f) {
                uint8_t *p = f->buf + H;
                p[0] = PW_DELTAS;
                pw_store_u64(p + PW_D_FROM, P->released_through);
                pw_store_u64(p + PW_D_THROUGH, T);
                pw_store_u32(p + PW_D_COUNT, 0);
                f->len = PW_DELTAS_HDR;
                f->through = T;
                f->data = true;
                distribute(P, f);
            }
        }
    }
}

/* Links catching up that found nothing sendable look again (durability advanced). */
static void wake_catchup(crdt_peers_t *P)
{
    for (int i = 0; i < MAX_LINKS; i++) {
        link_t *l = P->links[i];
        if (l && l->state == LK_UP && !l->live && l->catchup_idle) {
            l->catchup_idle = false;
            want_write(l);
        }
    }
}

static void schedule_batch(crdt_peers_t *P)
{
    if (P->batch_at == NEVER)
        P->batch_at = P->now + P->cfg.batch_ms;
}

static void batch_due(crdt_peers_t *P)
{
    P->batch_at = NEVER;
    outbox_release(P, true);
    wake_catchup(P);
    /* not everything could go (not durable yet): look again */
    uint64_t D = crdt_store_durable_seq(P->st);
    if (P->open_count || P->staged.head || D > P->released_through ||
        crdt_store_last_seq(P->st) > D)
        P->batch_at = P->now + (P->cfg.batch_ms ? P->cfg.batch_ms : 1);
}

static bool any_link(const crdt_peers_t *P)
{
    for (int i = 0; i < MAX_LINKS; i++)
        if (P->links[i] && P->links[i]->state == LK_UP)
            return true;
    return false;
}

void crdt_peers_on_change(crdt_peers_t *P, const void *key, size_t klen, uint64_t seq,
                          const crdt_obj_t *delta, uint64_t origin, uint64_t now)
{
    P->now = now;
    size_t H = P->cfg.headroom;
    schedule_batch(P);
    if (origin != CRDT_ORIGIN_LOCAL)
        return; /* a peer's change: its origin sends it to everyone (full mesh) */
    if (!any_link(P)) {
        /* Nobody to send to: links that come up start from the feed, which has this change.
         * Keep the outbox empty so a long outage costs no memory. */
        outbox_seal(P);
        fifo_clear(&P->staged);
        P->open_count = 0;
        P->complete_after = seq;
        return;
    }
    P->scratch.len = 0;
    if (crdt_obj_encode(delta, &P->scratch) < 0) {
        outbox_drop(P, "out of memory encoding a delta");
        return;
    }
    if (P->scratch.len + klen + 32 > PW_MAX_MESSAGE - PW_DELTAS_HDR) {
        plog(P,
             "peers: a delta of %zu bytes is larger than a peer message may be (%u); "
             "replicating it through the feed",
             P->scratch.len, PW_MAX_MESSAGE);
        outbox_drop(P, "oversized delta");
        return;
    }
    if (P->open_count && P->open.len - H + P->scratch.len + klen + 24 > PW_BATCH_BYTES)
        outbox_seal(P);
    if (!P->open_count && deltas_start(&P->open, H)) {
        outbox_drop(P, "out of memory");
        return;
    }
    if (pw_put_entry(&P->open, true, seq, key, klen, P->scratch.data, P->scratch.len)) {
        outbox_drop(P, "out of memory");
        return;
    }
    if (!P->open_count)
        P->open_first = seq;
    P->open_max = seq;
    P->open_count++;
    if (P->open_count >= PW_BATCH_COUNT || P->open.len - H >= PW_BATCH_BYTES)
        outbox_seal(P);
    if (P->staged.bytes + P->open.len > P->cfg.queue_bytes)
        outbox_drop(P, "unsent deltas over the queue bound while the log is not durable");
    if (P->scratch.cap > (1u << 20))
        crdt_buf_free(&P->scratch);
}

/* ---- catch-up and repairs: messages built when the transport pulls --------------------------- */

/* One read of the change feed for a link's catch-up (one message); a link has at most one in
 * flight (l->feed), and its result is used only if the link's cursor did not move meanwhile. */
typedef struct feed_ctx {
    inflight_t node; /* first: freed through it; owns buf */
    crdt_peers_t *P;
    crdt_buf_t *b; /* &buf */
    uint32_t count;
    uint64_t durable;
    int stop; /* 1: a change not durable yet, 2: out of memory, 3: the message is full, 4: link gone
               */
    uint64_t next;
    int rc;
    link_t *l;     /* NULL once the link is gone */
    uint64_t from; /* the link's cursor when issued */
    bool done, issuing;
    crdt_buf_t buf;
} feed_ctx_t;

static int feed_cb(const void *key, size_t klen, uint64_t seq, const crdt_obj_t *state, void *ud)
{
    feed_ctx_t *c = ud;
    if (!c->l)
        return c->stop = 4;
    if (seq > c->durable)
        return c->stop = 1; /* not durable yet: it goes live or in the next round */
    c->P->scratch.len = 0;
    if (crdt_obj_encode(state, &c->P->scratch) < 0)
        return c->stop = 2;
    size_t need = c->P->scratch.len + klen + 24;
    if (need > PW_MAX_MESSAGE - PW_DELTAS_HDR) {
        plog(c->P,
             "peers: the state of a key (%zu bytes) is larger than a peer message may be; "
             "not replicated",
             c->P->scratch.len);
        return 0;
    }
    if (c->count && c->b->len - c->P->cfg.headroom + need > PW_BATCH_BYTES)
        return c->stop = 3;
    if (pw_put_entry(c->b, true, seq, key, klen, c->P->scratch.data, c->P->scratch.len))
        return c->stop = 2;
    c->count++;
    return 0;
}

static void feed_done_cb(void *ud, int rc, uint64_t next)
{
    feed_ctx_t *c = ud;
    c->rc = rc;
    c->next = next;
    c->done = true;
    if (!c->l)
        inflight_free(c->P, &c->node);
    else if (!c->issuing)
        want_write(c->l); /* a late completion: the next pull builds the message */
}

/* The link is going away: a read in flight frees itself when it completes. */
static void feed_detach(link_t *l)
{
    if (!l->feed)
        return;
    if (l->feed->done)
        inflight_free(l->P, &l->feed->node);
    else
        l->feed->l = NULL;
    l->feed = NULL;
}

/* Builds the next catch-up message of l into *out (NULL when there is nothing to send, or the read
 * is still in flight); switches the link to live once it reached our durable seq. */
static int catchup_next(link_t *l, frame_t **out)
{
    crdt_peers_t *P = l->P;
    size_t H = P->cfg.headroom;
    *out = NULL;
    feed_ctx_t *c = l->feed;
    if (c && c->done && c->from != l->cursor) { /* the cursor moved meanwhile: read again */
        inflight_free(P, &c->node);
        c = l->feed = NULL;
    }
    if (!c) {
        c = calloc(1, sizeof(*c));
        if (!c || deltas_start(&c->buf, H)) {
            free(c);
            return CRDT_ENOMEM;
        }
        c->node.owned = &c->buf;
        inflight_add(P, &c->node);
        c->P = P;
        c->b = &c->buf;
        c->durable = crdt_store_durable_seq(P->st);
        c->next = l->cursor;
        c->l = l;
        c->from = l->cursor;
        c->issuing = true;
        l->feed = c;
        crdt_store_changes(P->st, l->cursor, PW_BATCH_COUNT, feed_cb, feed_done_cb, c);
        c->issuing = false;
    }
    if (!c->done)
        return 0;
    l->feed = NULL;
    uint64_t D = c->durable;
    if (c->rc == CRDT_ELIMIT && !c->count) {
        /* The store no longer holds the changes after the cursor (a store over Redis keeps a
         * bounded feed per run): go on from what is durable here; anti-entropy, which runs on
         * every connect, repairs what the peer missed. */
        char name[300];
        plog(P,
             "peer %s: the change feed no longer holds the changes after seq %" PRIu64
             "; resuming after seq %" PRIu64 " (anti-entropy repairs the gap)",
             rec_name(P, l->rec, l, name, sizeof(name)), l->cursor, D);
        c->rc = 0;
        c->stop = 0;
        c->next = D;
    }
    if (c->stop == 2 || c->rc < 0) {
        int rc = c->rc < 0 ? c->rc : CRDT_ENOMEM;
        inflight_free(P, &c->node);
        return rc;
    }
    crdt_buf_t *b = c->b;
    /* stopped at the first key whose change is not durable yet: everything through D went;
     * otherwise the feed is exhausted (next = last_seq) or the message is full */
    uint64_t through = c->stop == 1 ? D : c->next < D ? c->next : D;
    if (through < l->cursor)
        through = l->cursor;
    if (c->count || through > l->cursor) {
        pw_store_u64(b->data + H + PW_D_FROM, l->cursor);
        pw_store_u64(b->data + H + PW_D_THROUGH, through);
        pw_store_u32(b->data + H + PW_D_COUNT, c->count);
        frame_t *f = frame_adopt(b, H);
        if (!f) {
            inflight_free(P, &c->node);
            return CRDT_ENOMEM;
        }
        f->through = through;
        f->count = c->count;
        f->data = true;
        *out = f;
    }
    inflight_free(P, &c->node);
    l->cursor = through;
    if (l->cursor >= D && D >= P->complete_after) {
        /* From here the outbox carries every change after D (see the release rule). */
        l->live = true;
        l->overflow_logged = false;
        ae_maybe_first(l);
    }
    return 0;
}

/* A REPAIR message being built: one rsx_keys call at a time, whose completion may come after the
 * call returned. A link has at most one (l->repair); a link gone, or new repair ids, detach it. */
typedef struct repair_ctx {
    inflight_t node; /* first: freed through it; owns buf */
    crdt_peers_t *P;
    crdt_buf_t *b; /* &buf */
    uint32_t count;
    bool full, oom;
    link_t *l;       /* NULL once detached */
    uint32_t before; /* count and length before the id in flight (rolled back if it does not fit) */
    size_t blen;
    bool inflight, issuing, result; /* result: the id's keys are in and not taken yet */
    crdt_buf_t buf;
} repair_ctx_t;

static int repair_key_cb(void *ud, const void *key, size_t klen, const crdt_obj_t *o)
{
    repair_ctx_t *c = ud;
    if (!c->l)
        return 1;
    c->P->scratch.len = 0;
    if (crdt_obj_encode(o, &c->P->scratch) < 0)
        return 0;
    size_t need = c->P->scratch.len + klen + 24;
    if (need > PW_MAX_MESSAGE - PW_REPAIR_HDR)
        return 0;
    if (c->count && c->b->len - c->P->cfg.headroom + need > PW_BATCH_BYTES) {
        c->full = true;
        return 1;
    }
    if (pw_put_entry(c->b, false, 0, key, klen, c->P->scratch.data, c->P->scratch.len)) {
        c->oom = true;
        return 1;
    }
    c->count++;
    return 0;
}

static void repair_done_cb(void *ud, int rc, uint64_t next)
{
    (void)rc;
    (void)next;
    repair_ctx_t *c = ud;
    c->inflight = false;
    if (!c->l) {
        inflight_free(c->P, &c->node);
        return;
    }
    c->result = true;
    if (!c->issuing)
        want_write(c->l); /* a late completion: the next pull goes on */
}

/* Drops l's message being built (its completion, if in flight, frees it). */
static void repair_detach(link_t *l)
{
    repair_ctx_t *c = l->repair;
    if (!c)
        return;
    if (c->inflight)
        c->l = NULL;
    else
        inflight_free(l->P, &c->node);
    l->repair = NULL;
}

static int repair_next(link_t *l, frame_t **out)
{
    crdt_peers_t *P = l->P;
    size_t H = P->cfg.headroom;
    *out = NULL;
    repair_ctx_t *c = l->repair;
    if (!c) {
        c = calloc(1, sizeof(*c));
        if (!c || crdt_buf_reserve(&c->buf, H + PW_BATCH_BYTES + 64)) {
            if (c)
                crdt_buf_free(&c->buf);
            free(c);
            return CRDT_ENOMEM;
        }
        c->node.owned = &c->buf;
        inflight_add(P, &c->node);
        c->P = P;
        c->b = &c->buf;
        c->l = l;
        memset(c->buf.data, 0, H + PW_REPAIR_HDR);
        c->buf.data[H] = PW_REPAIR;
        c->buf.len = H + PW_REPAIR_HDR;
        l->repair = c;
    }
    if (c->inflight)
        return 0; /* its completion wakes us */
    for (;;) {
        if (c->result) {
            c->result = false;
            if (c->full || c->oom) {
                /* keys of one id travel together: roll back a partly added id */
                c->b->len = c->blen;
                c->count = c->before;
                break;
            }
            l->repair_pos++;
        }
        if (l->repair_pos >= l->nrepair)
            break;
        c->before = c->count;
        c->blen = c->b->len;
        c->inflight = c->issuing = true;
        crdt_store_rsx_keys(P->st, l->repair_ids[l->repair_pos], repair_key_cb, repair_done_cb, c);
        c->issuing = false;
        if (c->inflight)
            return 0; /* completes later */
    }
    l->repair = NULL;
    if (l->repair_pos >= l->nrepair) {
        free(l->repair_ids);
        l->repair_ids = NULL;
        l->nrepair = l->repair_pos = 0;
    }
    if (!c->count) {
        int rc = c->oom ? CRDT_ENOMEM : 0;
        inflight_free(P, &c->node);
        return rc;
    }
    crdt_buf_t *b = c->b;
    pw_store_u32(b->data + H + 1, c->count);
    frame_t *f = frame_adopt(b, H);
    uint32_t count = c->count;
    inflight_free(P, &c->node);
    if (!f)
        return CRDT_ENOMEM;
    f->count = count;
    if (l->rec)
        l->rec->keys_repair_sent += count;
    *out = f;
    return 0;
}

/* ---- anti-entropy --------------------------------------------------------------------------- */

static crdt_store_rsx_t *ae_session(link_t *l, bool initiator)
{
    crdt_rsx_config_t cfg;
    crdt_rsx_config_init(&cfg);
    cfg.max_msg = PW_MAX_MESSAGE - 1;
    cfg.seed = rand_u64(l->P);
    if (!cfg.seed)
        cfg.seed = 1; /* 0 would make the session read the clock */
    return crdt_store_rsx_open(l->P->st, initiator, &cfg);
}

static int queue_ae(link_t *l, const uint8_t *msg, size_t n)
{
    crdt_buf_t b = {0};
    int rc = pw_put_u8(&b, PW_AE) || crdt_buf_append(&b, msg, n) ? CRDT_ENOMEM : 0;
    if (!rc)
        rc = queue_ctl(l, &b);
    crdt_buf_free(&b);
    return rc;
}

/* The session is done on this side: send the states of the differing keys we hold. */
static void ae_finish(link_t *l, const crdt_store_rsx_result_t *res)
{
    crdt_peers_t *P = l->P;
    size_t n = res->ndiffs, k = 0;
    for (size_t i = 0; i < n; i++)
        k += (res->diffs[i].flags & CRDT_RSX_WE_HAVE) != 0;
    if (k) {
        uint64_t *ids = malloc(k * sizeof(*ids));
        if (ids) {
            size_t j = 0;
            for (size_t i = 0; i < n; i++)
                if (res->diffs[i].flags & CRDT_RSX_WE_HAVE)
                    ids[j++] = res->diffs[i].id;
            repair_detach(l); /* a message of the old ids being built */
            free(l->repair_ids);
            l->repair_ids = ids;
            l->nrepair = k;
            l->repair_pos = 0;
        }
    }
    if (l->rec)
        l->rec->ae_rounds++;
    if (P->cfg.verbose || n) {
        char name[300];
        plog(P,
             "peer %s: anti-entropy round: %zu keys differ (%zu to send), %" PRIu64
             " messages, %" PRIu64 "/%" PRIu64 " bytes out/in",
             rec_name(P, l->rec, l, name, sizeof(name)), n, k,
             res->stats.msgs_sent + res->stats.msgs_received, res->stats.bytes_sent,
             res->stats.bytes_received);
    }
}

static void ae_rx_next(link_t *l);

static void ae_step_cb(void *ud, int rc, const crdt_store_rsx_result_t *res)
{
    ae_step_ctx_t *c = ud;
    crdt_peers_t *P = c->P;
    link_t *l = c->l;
    bool issuing = c->issuing;
    if (l)
        l->ae_step = NULL;
    if (!l || c->ended) {
        inflight_free(P, &c->node); /* closes the session */
        if (l && !issuing)
            ae_rx_next(l);
        return;
    }
    if (rc < 0) {
        c->failed = true;
        link_close(l, PW_R_PROTOCOL, 0, "bad anti-entropy message: %s (byte %zu)",
                   res->err.text[0] ? res->err.text : crdt_strerror(rc), res->err.offset);
    } else if (res->reply_len && queue_ae(l, res->reply, res->reply_len)) {
        c->failed = true;
        link_close(l, 0, 0, "out of memory in anti-entropy");
    } else if (res->done) {
        c->done = true;
        ae_finish(l, res);
    }
    bool failed = c->failed, done = c->done;
    c->node.session = NULL; /* the link's session goes on (or ae_end closes it) */
    inflight_free(P, &c->node);
    if (failed || done) {
        ae_end(l);
        if (done)
            want_write(l);
    }
    if (!issuing)
        ae_rx_next(l);
}

/* Steps l's session with a message (NULL: the initiator's first); false: out of memory. */
static bool ae_step(link_t *l, const uint8_t *m, size_t n)
{
    crdt_peers_t *P = l->P;
    ae_step_ctx_t *c = calloc(1, sizeof(*c));
    if (!c)
        return false;
    inflight_add(P, &c->node);
    c->P = P;
    c->l = l;
    c->s = c->node.session = l->ae;
    c->issuing = true;
    l->ae_step = c;
    crdt_store_rsx_step(P->st, l->ae, m, n, ae_step_cb, c);
    if (l->ae_step == c)
        c->issuing = false; /* completes later */
    return true;
}

static void ae_start(link_t *l)
{
    crdt_peers_t *P = l->P;
    if (l->ae && P->now - l->ae_started_ms > AE_TIMEOUT_MS) {
        /* a lost message (or a stuck peer) must not freeze the index for ever */
        char name[300];
        plog(P, "peer %s: anti-entropy session unanswered for %d s; starting over",
             rec_name(P, l->rec, l, name, sizeof(name)), AE_TIMEOUT_MS / 1000);
        ae_end(l);
    }
    if (l->ae || l->ae_step || l->nrepair || l->state != LK_UP || l->closing)
        return;
    l->ae = ae_session(l, true);
    if (!l->ae) {
        plog(P, "peers: out of memory starting anti-entropy");
        return;
    }
    l->ae_started_ms = P->now;
    if (!ae_step(l, NULL, 0)) {
        plog(P, "peers: out of memory starting anti-entropy");
        ae_end(l);
    }
}

/* The first session of an outbound link, once we sent our catch-up and applied theirs. */
static void ae_maybe_first(link_t *l)
{
    if (l->ae_first_due && l->live && l->applied >= l->remote_durable) {
        l->ae_first_due = false;
        ae_start(l);
    }
}

static void ae_timer(link_t *l)
{
    crdt_peers_t *P = l->P;
    l->ae_first_due = false;
    ae_start(l);
    l->ae_at = P->cfg.anti_entropy_ms ? P->now + P->cfg.anti_entropy_ms : NEVER;
}

static void on_ae_now(link_t *l, const uint8_t *m, size_t n)
{
    crdt_peers_t *P = l->P;
    /* a first message (kind 1) opens a new session on the responder */
    if (n >= 2 && m[1] == 1 && !l->outbound) {
        ae_end(l);
        l->ae = ae_session(l, false);
        l->ae_started_ms = P->now;
        if (!l->ae) {
            plog(P, "peers: out of memory for anti-entropy");
            return;
        }
    }
    if (!l->ae) {
        link_close(l, PW_R_PROTOCOL, 0, "anti-entropy message outside a session");
        return;
    }
    if (!ae_step(l, m, n))
        link_close(l, 0, 0, "out of memory in anti-entropy");
}

/* Messages that came while a step was in flight, in order, one step at a time. */
static void ae_rx_next(link_t *l)
{
    frame_t *f;
    while (!l->ae_step && !l->closing && (f = fifo_pop(&l->ae_rx))) {
        on_ae_now(l, f->buf + f->headroom, f->len);
        frame_unref(f);
    }
}

static void on_ae(link_t *l, const uint8_t *m, size_t n)
{
    if (l->ae_step || l->ae_rx.head) { /* the session's steps are serialized */
        frame_t *f = frame_copy(0, m, n);
        if (!f || fifo_push(&l->ae_rx, f)) {
            frame_unref(f);
            link_close(l, 0, 0, "out of memory in anti-entropy");
        }
        return;
    }
    on_ae_now(l, m, n);
}

/* ---- receiving data ------------------------------------------------------------------------- */

/* One received DELTAS or REPAIR message: its applies may complete after the calls return (a store
 * over the network), so it lives on the heap, one allocation per message. The link keeps its
 * batches in arrival order and acts on a batch (the applied hook, the ack) only once it and every
 * earlier one completed. A link freed first detaches its batches (l = NULL): their completions
 * then only count down and free them. */
typedef struct apply_batch apply_batch_t;

typedef struct apply_ent {
    apply_batch_t *b;
    const uint8_t *key; /* the received message's bytes: valid only during the call */
    size_t klen;
} apply_ent_t;

struct apply_batch {
    inflight_t node; /* first: freed through it */
    crdt_peers_t *P;
    apply_batch_t *next;
    link_t *l;      /* NULL once the link is gone */
    uint32_t left;  /* applies issued and not completed */
    uint32_t count; /* applies issued */
    bool issuing;   /* not every apply is issued yet */
    bool ack;       /* a DELTAS message: acknowledge `through` once durable */
    bool repair;
    uint64_t through;
    apply_ent_t ent[];
};

static bool batch_done(const apply_batch_t *b)
{
    return !b->left && !b->issuing;
}

/* Registers the ack of a received batch: sent once our log holds what it changed is durable. */
static void ack_register(link_t *l, uint64_t through)
{
    if (through <= l->applied)
        return;
    uint64_t local = crdt_store_last_seq(l->P->st);
    if (l->npend && l->npend >= PEND_MAX) {
        l->pend[l->npend - 1] = (pend_t){through, local}; /* coarser, never wrong */
        return;
    }
    if (l->npend == l->cap_pend) {
        size_t c = l->cap_pend ? l->cap_pend * 2 : 16;
        pend_t *v = realloc(l->pend, c * sizeof(*v));
        if (!v) {
            link_close(l, 0, 0, "out of memory");
            return;
        }
        l->pend = v;
        l->cap_pend = c;
    }
    l->pend[l->npend++] = (pend_t){through, local};
    crdt_peers_on_durable(l->P, l->P->now); /* a store without a log: durable at once */
}

/* Acts on the completed batches at the head of l's list, in order, and frees them. */
static void batches_drain(link_t *l)
{
    crdt_peers_t *P = l->P;
    bool applied = false;
    while (l->ab_head && batch_done(l->ab_head)) {
        apply_batch_t *b = l->ab_head;
        l->ab_head = b->next;
        if (!l->ab_head)
            l->ab_tail = NULL;
        if (b->count && P->host.applied && !applied) {
            applied = true;
            P->host.applied(P->host.ud);
        }
        if (b->ack)
            ack_register(l, b->through);
        inflight_free(P, &b->node);
    }
}

/* The link is going away: its batches still waiting for completions free themselves. */
static void batches_detach(link_t *l)
{
    for (apply_batch_t *b = l->ab_head, *nx; b; b = nx) {
        nx = b->next;
        b->l = NULL;
        b->next = NULL;
        if (batch_done(b))
            inflight_free(b->P, &b->node);
    }
    l->ab_head = l->ab_tail = NULL;
}

static void apply_cb(void *ud, int rc, uint64_t seq)
{
    (void)seq;
    apply_ent_t *e = ud;
    apply_batch_t *b = e->b;
    link_t *l = b->l;
    b->left--;
    if (!l) {
        if (batch_done(b))
            inflight_free(b->P, &b->node);
        return;
    }
    peer_rec_t *rec = l->rec;
    if (rc == CRDT_ETYPE) {
        if (rec && rec->type_conflicts++ < 10) {
            if (e->key)
                plog(l->P, "peers: key %.*s holds another type here than on the peer; not joined",
                     (int)(e->klen > 64 ? 64 : e->klen), (const char *)e->key);
            else
                plog(l->P, "peers: a key holds another type here than on the peer; not joined");
        }
    } else if (rc < 0) {
        plog(l->P, "peers: cannot apply a change from the peer: %s", crdt_strerror(rc));
    } else if (rc == 1 && b->repair && rec) {
        rec->keys_repaired++;
    }
    if (batch_done(b) && b == l->ab_head)
        batches_drain(l);
}

/* Applies every entry (a DELTAS or REPAIR message) and, for DELTAS (ack), acknowledges `through`
 * once they all completed and are durable; false after closing the link. */
static bool apply_entries(link_t *l, pw_reader_t *rd, uint32_t count, bool with_seq, bool repair,
                          bool ack, uint64_t through)
{
    crdt_peers_t *P = l->P;
    /* every entry takes bytes: this bounds the allocation by the message */
    if (count > pw_left(rd)) {
        link_close(l, PW_R_PROTOCOL, 0, "malformed %s message: %u entries in %zu bytes",
                   repair ? "repair" : "deltas", count, pw_left(rd));
        return false;
    }
    apply_batch_t *b = malloc(sizeof(*b) + (size_t)count * sizeof(apply_ent_t));
    if (!b) {
        link_close(l, 0, 0, "out of memory");
        return false;
    }
    *b = (apply_batch_t){
        .P = P, .l = l, .issuing = true, .ack = ack, .repair = repair, .through = through};
    inflight_add(P, &b->node);
    if (l->ab_tail)
        l->ab_tail->next = b;
    else
        l->ab_head = b;
    l->ab_tail = b;
    bool ok = true;
    for (uint32_t i = 0; i < count; i++) {
        pw_entry_t e;
        const char *why = NULL;
        if (!pw_get_entry(rd, with_seq, &e, &why)) {
            link_close(l, PW_R_PROTOCOL, 0, "malformed %s message: %s",
                       repair ? "repair" : "deltas", why);
            ok = false;
            break;
        }
        crdt_error_t err = {0};
        crdt_obj_t *o = crdt_obj_decode(e.obj, e.olen, &err);
        if (!o) {
            link_close(l, PW_R_PROTOCOL, 0, "undecodable object in a %s message: %s",
                       repair ? "repair" : "deltas", err.text);
            ok = false;
            break;
        }
        apply_ent_t *en = &b->ent[i];
        *en = (apply_ent_t){b, e.key, e.klen};
        b->left++;
        b->count++;
        crdt_store_apply(P->st, e.key, e.klen, o, l->remote_node, apply_cb, en);
        en->key = NULL; /* the message is not ours after this call */
        crdt_obj_free(o);
    }
    if (ok && pw_left(rd)) {
        link_close(l, PW_R_PROTOCOL, 0, "trailing bytes after %u entries", count);
        ok = false;
    }
    if (!ok)
        b->ack = false;
    b->issuing = false;
    if (batch_done(b) && b == l->ab_head)
        batches_drain(l);
    return ok;
}

static void on_deltas(link_t *l, const uint8_t *m, size_t n)
{
    pw_reader_t rd;
    uint8_t type;
    uint64_t from, through;
    uint32_t count;
    pw_reader_init(&rd, m, n);
    if (!pw_get_u8(&rd, &type) || !pw_get_u64(&rd, &from) || !pw_get_u64(&rd, &through) ||
        !pw_get_u32(&rd, &count)) {
        link_close(l, PW_R_PROTOCOL, 0, "truncated deltas message");
        return;
    }
    if (from > l->rx_through) {
        /* TCP does not lose bytes, but a middlebox can: resume from our durable mark instead */
        link_close(l, 0, 0,
                   "gap in the delta stream (got seqs after %" PRIu64 ", have through %" PRIu64 ")",
                   from, l->rx_through);
        return;
    }
    if (through > l->rx_through)
        l->rx_through = through;
    /* acknowledged once the applies completed and our log holds what they changed durably */
    if (apply_entries(l, &rd, count, true, false, true, through) && l->rec)
        l->rec->deltas_received += count;
}

static void on_repair(link_t *l, const uint8_t *m, size_t n)
{
    pw_reader_t rd;
    uint8_t type;
    uint32_t count;
    pw_reader_init(&rd, m, n);
    if (!pw_get_u8(&rd, &type) || !pw_get_u32(&rd, &count)) {
        link_close(l, PW_R_PROTOCOL, 0, "truncated repair message");
        return;
    }
    apply_entries(l, &rd, count, false, true, false, 0);
}

void crdt_peers_on_durable(crdt_peers_t *P, uint64_t now)
{
    P->now = now;
    uint64_t D = crdt_store_durable_seq(P->st);
    for (int i = 0; i < MAX_LINKS; i++) {
        link_t *l = P->links[i];
        if (!l || l->state != LK_UP || !l->npend)
            continue;
        size_t k = 0;
        uint64_t th = l->applied;
        while (k < l->npend && l->pend[k].local <= D) {
            if (l->pend[k].through > th)
                th = l->pend[k].through;
            k++;
        }
        if (!k)
            continue;
        memmove(l->pend, l->pend + k, (l->npend - k) * sizeof(*l->pend));
        l->npend -= k;
        if (th > l->applied) {
            l->applied = th;
            l->ack_due = true;
            mark_set(P, l->remote_node, l->remote_epoch, th);
            want_write(l);
            ae_maybe_first(l);
        }
    }
    outbox_release(P, false);
    wake_catchup(P);
}

/* ---- handshake ------------------------------------------------------------------------------ */

/* The record of node (a dial slot that met it, or one met inbound), created if needed. */
static peer_rec_t *rec_for_node(crdt_peers_t *P, uint64_t node)
{
    for (int i = 0; i < MAX_RECS; i++)
        if (P->recs[i].used && P->recs[i].node_id == node)
            return &P->recs[i];
    for (int i = P->nslots; i < MAX_RECS; i++)
        if (!P->recs[i].used) {
            memset(&P->recs[i], 0, sizeof(P->recs[i]));
            P->recs[i].P = P;
            P->recs[i].used = true;
            P->recs[i].slot = -1;
            P->recs[i].node_id = node;
            P->recs[i].dial_at = NEVER;
            return &P->recs[i];
        }
    return NULL;
}

/* Both ends agree on which of two links between them stays: the one dialled by the lower id. */
static bool keep_new_link(const crdt_peers_t *P, const link_t *l)
{
    bool i_dial_kept = P->node_id < l->remote_node;
    return l->outbound == i_dial_kept;
}

/* Moves what an inbound-only record q knows into the dial slot rec that has now met its node:
 * the counters and the acks both ways (the acks follow the link that survives, whichever it is;
 * the status must not show a kept link's peer as never having acked). */
static void rec_merge(peer_rec_t *rec, peer_rec_t *q)
{
    rec->bytes_sent += q->bytes_sent;
    rec->bytes_received += q->bytes_received;
    rec->deltas_sent += q->deltas_sent;
    rec->deltas_received += q->deltas_received;
    rec->ups += q->ups;
    rec->ae_rounds += q->ae_rounds;
    rec->keys_repaired += q->keys_repaired;
    rec->keys_repair_sent += q->keys_repair_sent;
    rec->type_conflicts += q->type_conflicts;
    if (q->ack_received > rec->ack_received)
        rec->ack_received = q->ack_received;
    if (q->ack_sent > rec->ack_sent)
        rec->ack_sent = q->ack_sent;
    if (q->link) {
        rec->link = q->link;
        q->link->rec = rec;
        snprintf(rec->address, sizeof(rec->address), "%s", q->address);
    }
    q->used = false;
}

static void link_up(link_t *l, uint64_t their_resume)
{
    crdt_peers_t *P = l->P;
    peer_rec_t *rec;
    if (l->outbound) {
        rec = l->rec;
        if (rec->node_id && rec->node_id != l->remote_node) {
            char name[300];
            plog(P, "peer %s: now node %" PRIu64 " (was node %" PRIu64 ")",
                 rec_name(P, rec, NULL, name, sizeof(name)), l->remote_node, rec->node_id);
            rec->ack_received = rec->ack_sent = 0; /* another node's marks */
        }
        rec->node_id = l->remote_node;
        /* merge a record made when that node dialled us first */
        for (int i = P->nslots; i < MAX_RECS; i++) {
            peer_rec_t *q = &P->recs[i];
            if (q->used && q->node_id == l->remote_node)
                rec_merge(rec, q);
        }
    } else {
        rec = rec_for_node(P, l->remote_node);
        if (!rec) {
            link_close(l, PW_R_BUSY, 0, "too many peers");
            return;
        }
        l->rec = rec;
    }
    /* the peer durably holds our changes through their_resume (in our current epoch) */
    uint64_t last = crdt_store_last_seq(P->st);
    uint64_t resume = their_resume <= last ? their_resume : 0;
    uint64_t applied = mark_get(P, l->remote_node, l->remote_epoch);
    if (rec->link && rec->link != l) {
        link_t *other = rec->link;
        uint64_t keeper = P->node_id < l->remote_node ? P->node_id : l->remote_node;
        if (keep_new_link(P, l)) {
            if (other->outbound)
                rec->standby = true;
            link_close(other, 0, PW_BYE_DUPLICATE,
                       "duplicate link to node %" PRIu64 ", keeping the one node %" PRIu64
                       " dialled",
                       l->remote_node, keeper);
            rec->link = NULL;
        } else {
            if (l->outbound)
                rec->standby = true;
            link_close(l, 0, PW_BYE_DUPLICATE,
                       "duplicate link to node %" PRIu64 ", keeping the one node %" PRIu64
                       " dialled",
                       l->remote_node, keeper);
            return;
        }
    }
    rec->link = l;
    rec->ups++;
    rec->attempts = 0;
    if (l->outbound)
        rec->standby = false;
    rec->last_error[0] = '\0';
    snprintf(rec->address, sizeof(rec->address), "%s", l->addr);
    l->state = LK_UP;
    crdt_buf_free(&l->transcript);
    l->cursor = resume;
    l->sent_through = l->cursor;
    l->live = false;
    rec->ack_received = l->cursor; /* the peer's word at this handshake is the truth now */
    l->applied = applied;
    l->rx_through = l->applied; /* what we told the peer to resume from */
    rec->ack_sent = l->applied;
    char name[300];
    plog(P,
         "peer %s: link up with node %" PRIu64 " (%s), resuming after seq %" PRIu64 " of %" PRIu64,
         rec_name(P, rec, l, name, sizeof(name)), l->remote_node,
         l->outbound ? "outbound" : "inbound", l->cursor, last);
    want_write(l);
    if (l->outbound) {
        /* The on-connect session runs once both catch-ups are done: run at once, it would find
         * every key the feed is about to carry and send it twice. The periodic timer (or a 5 s
         * fallback without one) starts a session regardless. */
        l->ae_first_due = true;
        l->ae_at = P->now + (P->cfg.anti_entropy_ms ? P->cfg.anti_entropy_ms : AE_FIRST_MS);
        ae_maybe_first(l);
    }
    schedule_batch(P);
}

static int send_challenge(link_t *l)
{
    crdt_peers_t *P = l->P;
    pw_challenge_t c;
    memset(&c, 0, sizeof(c));
    c.version = PW_VERSION;
    c.node_id = P->node_id;
    c.epoch = P->epoch;
    c.durable = crdt_store_durable_seq(P->st);
    c.clock_ms = P->host.wall_ms ? P->host.wall_ms(P->host.ud) : 0;
    if (!P->host.random || P->host.random(P->host.ud, l->nonce, PW_NONCE_LEN))
        return -1;
    memcpy(c.nonce, l->nonce, PW_NONCE_LEN);
    l->transcript.len = 0;
    if (pw_encode_challenge(&l->transcript, &c))
        return -1;
    return queue_ctl(l, &l->transcript);
}

static void fmt_wall(uint64_t ms, char *buf, size_t n)
{
    time_t t = (time_t)(ms / 1000);
    struct tm tm;
    if (gmtime_r(&t, &tm))
        snprintf(buf, n, "%04d-%02d-%02dT%02d:%02d:%02d.%03uZ", tm.tm_year + 1900, tm.tm_mon + 1,
                 tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec, (unsigned)(ms % 1000));
    else
        snprintf(buf, n, "%" PRIu64 " ms", ms);
}

/* The clock check of the handshake: false after refusing the link. */
/* The transport's word on the node id the other end claims (its TLS certificate must name it);
 * false after closing the link with the transport's reason. */
static bool identify_ok(link_t *l, uint64_t node)
{
    crdt_peers_t *P = l->P;
    const char *why = P->host.identify ? P->host.identify(P->host.ud, l->ud, node) : NULL;
    if (!why)
        return true;
    link_close(l, PW_R_PROOF, 0, "node %" PRIu64 " refused: %s", node, why);
    return false;
}

static bool clock_ok(link_t *l, uint64_t theirs)
{
    crdt_peers_t *P = l->P;
    if (!P->cfg.max_clock_drift_ms)
        return true;
    uint64_t ours = P->host.wall_ms ? P->host.wall_ms(P->host.ud) : 0;
    uint64_t diff = ours > theirs ? ours - theirs : theirs - ours;
    if (diff <= P->cfg.max_clock_drift_ms)
        return true;
    char a[80], b[80];
    fmt_wall(ours, a, sizeof(a));
    fmt_wall(theirs, b, sizeof(b));
    P->clock_refusals++;
    link_close(l, PW_R_CLOCK, 0,
               "clock differs by %.3f s: ours %s, the peer's %s (node %" PRIu64
               "), more than the drift bound of %" PRIu64 " ms",
               (double)diff / 1e3, a, b, l->remote_node, P->cfg.max_clock_drift_ms);
    return false;
}

static void on_challenge(link_t *l, const uint8_t *m, size_t n)
{
    crdt_peers_t *P = l->P;
    pw_challenge_t c;
    const char *why = "?";
    int rc = pw_decode_challenge(m, n, &c, &why);
    if (rc == -2) {
        link_close(l, PW_R_VERSION, 0, "incompatible protocol version %u (we speak %u)", c.version,
                   PW_VERSION);
        return;
    }
    if (rc) {
        link_close(l, PW_R_PROTOCOL, 0, "bad handshake: %s", why);
        return;
    }
    if (c.node_id == P->node_id) {
        link_close(l, PW_R_SELF, 0, "the peer has our node id %" PRIu64 " (is it us?)", c.node_id);
        return;
    }
    if (!identify_ok(l, c.node_id))
        return;
    l->got_challenge = true;
    l->remote_node = c.node_id;
    l->remote_epoch = c.epoch;
    l->remote_durable = c.durable;
    if (!clock_ok(l, c.clock_ms))
        return;
    pw_hello_t h;
    memset(&h, 0, sizeof(h));
    h.version = PW_VERSION;
    snprintf(h.cluster, sizeof(h.cluster), "%s", P->cluster);
    h.node_id = P->node_id;
    h.epoch = P->epoch;
    h.durable = crdt_store_durable_seq(P->st);
    h.clock_ms = P->host.wall_ms ? P->host.wall_ms(P->host.ud) : 0;
    if (!P->host.random || P->host.random(P->host.ud, l->nonce, PW_NONCE_LEN)) {
        link_close(l, 0, 0, "no random bytes");
        return;
    }
    memcpy(h.nonce, l->nonce, PW_NONCE_LEN);
    h.resume = mark_get(P, c.node_id, c.epoch);
    l->transcript.len = 0;
    crdt_buf_t hello = {0};
    if (crdt_buf_append(&l->transcript, m, n) || pw_encode_hello_body(&hello, &h) ||
        crdt_buf_append(&l->transcript, hello.data, hello.len)) {
        crdt_buf_free(&hello);
        link_close(l, 0, 0, "out of memory");
        return;
    }
    uint8_t proof[PW_PROOF_LEN];
    pw_proof(P->secret, P->cfg.secret_len, false, &l->transcript, proof);
    if (crdt_buf_append(&hello, proof, PW_PROOF_LEN) ||
        crdt_buf_append(&l->transcript, proof, PW_PROOF_LEN) || queue_ctl(l, &hello))
        link_close(l, 0, 0, "out of memory");
    crdt_buf_free(&hello);
}

/* Adds a handshake message's body to the transcript and checks the proof of the cluster secret
 * it carries (the welcome's is the server's); false after closing the link. */
static bool proof_ok(link_t *l, const uint8_t *m, size_t body, bool server, const uint8_t *proof,
                     const char *who)
{
    crdt_peers_t *P = l->P;
    if (crdt_buf_append(&l->transcript, m, body)) {
        link_close(l, 0, 0, "out of memory");
        return false;
    }
    uint8_t want[PW_PROOF_LEN];
    pw_proof(P->secret, P->cfg.secret_len, server, &l->transcript, want);
    if (!pw_proof_equal(want, proof)) {
        link_close(l, PW_R_PROOF, 0,
                   "wrong proof of the cluster secret from %s (different --peer-secret-file?)", who);
        return false;
    }
    return true;
}

static void on_hello(link_t *l, const uint8_t *m, size_t n)
{
    crdt_peers_t *P = l->P;
    pw_hello_t h;
    size_t body = 0;
    const char *why = "?";
    int rc = pw_decode_hello(m, n, &h, &body, &why);
    if (rc == -2) {
        link_close(l, PW_R_VERSION, 0, "incompatible protocol version %u (we speak %u)", h.version,
                   PW_VERSION);
        return;
    }
    if (rc) {
        link_close(l, PW_R_PROTOCOL, 0, "bad handshake: %s", why);
        return;
    }
    if (strcmp(h.cluster, P->cluster)) {
        link_close(l, PW_R_CLUSTER, 0, "cluster mismatch: the peer is in \"%s\", we are in \"%s\"",
                   h.cluster, P->cluster);
        return;
    }
    char who[48];
    snprintf(who, sizeof(who), "node %" PRIu64, h.node_id);
    if (!proof_ok(l, m, body, false, h.proof, who))
        return;
    if (h.node_id == P->node_id) {
        link_close(l, PW_R_SELF, 0, "the peer has our node id %" PRIu64, h.node_id);
        return;
    }
    if (!identify_ok(l, h.node_id))
        return;
    l->remote_node = h.node_id;
    l->remote_epoch = h.epoch;
    l->remote_durable = h.durable;
    if (!clock_ok(l, h.clock_ms))
        return;
    pw_welcome_t w = {mark_get(P, h.node_id, h.epoch), {0}};
    crdt_buf_t msg = {0};
    uint8_t proof[PW_PROOF_LEN];
    if (crdt_buf_append(&l->transcript, h.proof, PW_PROOF_LEN) ||
        pw_encode_welcome_body(&msg, &w) || crdt_buf_append(&l->transcript, msg.data, msg.len)) {
        crdt_buf_free(&msg);
        link_close(l, 0, 0, "out of memory");
        return;
    }
    pw_proof(P->secret, P->cfg.secret_len, true, &l->transcript, proof);
    if (crdt_buf_append(&msg, proof, PW_PROOF_LEN) || queue_ctl(l, &msg)) {
        crdt_buf_free(&msg);
        link_close(l, 0, 0, "out of memory");
        return;
    }
    crdt_buf_free(&msg);
    link_up(l, h.resume);
}

static void on_welcome(link_t *l, const uint8_t *m, size_t n)
{
    pw_welcome_t w;
    size_t body = 0;
    const char *why = "?";
    if (pw_decode_welcome(m, n, &w, &body, &why)) {
        link_close(l, PW_R_PROTOCOL, 0, "bad handshake: %s", why);
        return;
    }
    if (!proof_ok(l, m, body, true, w.proof, "the server"))
        return;
    link_up(l, w.resume);
}

/* ---- messages ------------------------------------------------------------------------------- */

static void on_message(link_t *l, const uint8_t *m, size_t n)
{
    crdt_peers_t *P = l->P;
    char name[300];
    if (!n) {
        link_close(l, PW_R_PROTOCOL, 0, "empty message");
        return;
    }
    uint8_t type = m[0];
    if (type == PW_REFUSE) {
        uint8_t code = 0;
        char text[160] = "";
        pw_decode_refuse(m, n, &code, text, sizeof(text));
        plog(P, "peer %s: refused by the peer: %s (%s)", rec_name(P, l->rec, l, name, sizeof(name)),
             pw_refuse_text(code), text);
        rec_error(l, "refused by the peer: %s", text[0] ? text : pw_refuse_text(code));
        if (l->rec && code != PW_R_PROTOCOL && code != PW_R_BUSY)
            l->rec->attempts = 8; /* a configuration fault: retry, but only every ~10 s */
        if (code == PW_R_CLOCK)
            P->clock_refusals++;
        l->closing = true; /* nothing more to send */
        fifo_clear(&l->ctl);
        fifo_clear(&l->data);
        if (P->host.close)
            P->host.close(P->host.ud, l->ud, false);
        want_write(l);
        return;
    }
    if (l->state == LK_HANDSHAKE && type != PW_BYE) {
        if (l->outbound && !l->got_challenge && type == PW_CHALLENGE)
            on_challenge(l, m, n);
        else if (l->outbound && l->got_challenge && type == PW_WELCOME)
            on_welcome(l, m, n);
        else if (!l->outbound && type == PW_HELLO)
            on_hello(l, m, n);
        else
            link_close(l, PW_R_PROTOCOL, 0, "unexpected message type %u during the handshake",
                       type);
        return;
    }
    switch (type) {
    case PW_DELTAS: on_deltas(l, m, n); break;
    case PW_REPAIR: on_repair(l, m, n); break;
    case PW_AE: on_ae(l, m + 1, n - 1); break;
    case PW_PING:
        if (n != 1)
            link_close(l, PW_R_PROTOCOL, 0, "malformed ping");
        break;
    case PW_ACK: {
        pw_reader_t rd;
        uint8_t t;
        uint64_t v;
        pw_reader_init(&rd, m, n);
        if (!pw_get_u8(&rd, &t) || !pw_get_varint(&rd, &v) || pw_left(&rd)) {
            link_close(l, PW_R_PROTOCOL, 0, "malformed ack");
            break;
        }
        if (l->rec && v > l->rec->ack_received)
            l->rec->ack_received = v;
        break;
    }
    case PW_BYE: {
        uint8_t code = n >= 2 ? m[1] : 0;
        if (code == PW_BYE_DUPLICATE && l->outbound && l->rec) {
            /* the peer keeps its own link to us; dial again only once that one is gone */
            l->rec->standby = true;
            plog(P, "peer %s: the peer keeps its own link to us (duplicate)",
                 rec_name(P, l->rec, l, name, sizeof(name)));
        } else {
            plog(P, "peer %s: the peer closes the link (%s)",
                 rec_name(P, l->rec, l, name, sizeof(name)),
                 code == PW_BYE_SHUTDOWN    ? "shutting down"
                 : code == PW_BYE_DUPLICATE ? "duplicate link, keeping the other"
                                            : "bye");
        }
        l->closing = true;
        fifo_clear(&l->ctl);
        fifo_clear(&l->data);
        if (P->host.close)
            P->host.close(P->host.ud, l->ud, false);
        want_write(l);
        break;
    }
    default: link_close(l, PW_R_PROTOCOL, 0, "unknown message type %u", type); break;
    }
}

/* ---- the link API --------------------------------------------------------------------------- */

crdt_peer_link_t *crdt_peers_link_new(crdt_peers_t *P, int slot, const char *addr, void *link_ud,
                                      uint64_t now)
{
    P->now = now;
    int idx = -1;
    for (int i = 0; i < MAX_LINKS; i++)
        if (!P->links[i]) {
            idx = i;
            break;
        }
    if (slot >= P->nslots || (slot >= 0 && P->recs[slot].dial)) {
        plog(P, "peers: no dial slot %d for a new link", slot);
        return NULL;
    }
    if (P->loading) {
        plog(P, "peer %s: refused: the replication marks are still being read", addr ? addr : "?");
        return NULL;
    }
    if (idx < 0) {
        plog(P, "peer %s%s: refused: too many links (%d)", addr ? addr : "?",
             slot < 0 ? " (inbound)" : "", MAX_LINKS);
        return NULL;
    }
    link_t *l = calloc(1, sizeof(*l));
    if (!l)
        return NULL;
    l->P = P;
    l->idx = idx;
    l->ud = link_ud;
    l->outbound = slot >= 0;
    l->rec = slot >= 0 ? &P->recs[slot] : NULL;
    l->t_open_ms = l->last_rx_ms = l->last_tx_ms = now;
    l->check_at = now + CHECK_MS;
    l->ae_at = NEVER;
    snprintf(l->addr, sizeof(l->addr), "%s", addr ? addr : "?");
    P->links[idx] = l;
    if (idx >= P->links_hi)
        P->links_hi = idx + 1;
    if (slot >= 0) {
        P->recs[slot].dial = l;
        P->recs[slot].attempts++;
    } else {
        l->ws_open = true;
        if (send_challenge(l)) {
            plog(P, "peer %s (inbound): cannot start the handshake", l->addr);
            link_free(l, false);
            return NULL;
        }
    }
    return l;
}

void crdt_peer_link_established(crdt_peer_link_t *l, uint64_t now)
{
    l->P->now = now;
    l->ws_open = true;
    l->last_rx_ms = now;
}

size_t crdt_peer_link_max_message(const crdt_peer_link_t *l)
{
    return l->state == LK_UP ? PW_MAX_MESSAGE : HANDSHAKE_MAX;
}

void crdt_peer_link_receive(crdt_peer_link_t *l, const void *msg, size_t n, uint64_t now)
{
    l->P->now = now;
    if (l->closing)
        return;
    l->last_rx_ms = now;
    if (l->rec)
        l->rec->bytes_received += n;
    if (n > crdt_peer_link_max_message(l)) {
        link_close(l, PW_R_PROTOCOL, 0, "message of more than %zu bytes (limit %zu)", n,
                   crdt_peer_link_max_message(l));
        return;
    }
    on_message(l, msg, n);
}

void crdt_peer_link_fault(crdt_peer_link_t *l, const char *why, uint64_t now)
{
    l->P->now = now;
    link_close(l, PW_R_PROTOCOL, 0, "%s", why);
}

bool crdt_peer_link_wants_write(const crdt_peer_link_t *l)
{
    if (l->ctl.head || l->closing)
        return true;
    if (l->state != LK_UP)
        return false;
    return l->ack_due || (l->nrepair && !(l->repair && l->repair->inflight)) ||
           (!l->live && !l->catchup_idle && (!l->feed || l->feed->done)) || l->data.head;
}

int crdt_peer_link_pull(crdt_peer_link_t *l, crdt_peer_frame_t **out, uint64_t now)
{
    crdt_peers_t *P = l->P;
    P->now = now;
    frame_t *f = NULL;
    *out = NULL;
    if (l->ctl.head) {
        f = fifo_pop(&l->ctl);
    } else if (l->closing) {
        return -1;
    } else if (l->state != LK_UP || !l->ws_open) {
        return 0;
    } else if (l->ack_due) {
        crdt_buf_t b = {0};
        l->ack_due = false;
        if (pw_put_u8(&b, PW_ACK) || pw_put_varint(&b, l->applied) ||
            !(f = frame_copy(P->cfg.headroom, b.data, b.len))) {
            crdt_buf_free(&b);
            link_close(l, 0, 0, "out of memory");
            return crdt_peer_link_pull(l, out, now);
        }
        crdt_buf_free(&b);
        if (l->rec)
            l->rec->ack_sent = l->applied;
    } else if (l->nrepair) {
        if (repair_next(l, &f)) {
            link_close(l, 0, 0, "out of memory building a repair");
            return crdt_peer_link_pull(l, out, now);
        }
    } else if (!l->live) {
        if (catchup_next(l, &f)) {
            link_close(l, 0, 0, "cannot read the change feed");
            return crdt_peer_link_pull(l, out, now);
        }
        if (!f && !l->live && !l->feed)
            l->catchup_idle = true; /* not while a read is in flight: its completion wakes us */
    } else if (l->data.head) {
        f = fifo_pop(&l->data);
    }
    if (!f)
        return 0;
    if (f->data) {
        l->sent_through = f->through > l->sent_through ? f->through : l->sent_through;
        if (l->rec)
            l->rec->deltas_sent += f->count;
    }
    if (l->rec)
        l->rec->bytes_sent += f->len;
    l->last_tx_ms = now;
    *out = f;
    return 1;
}

void crdt_peer_link_closed(crdt_peer_link_t *l, const char *why, uint64_t now)
{
    crdt_peers_t *P = l->P;
    P->now = now;
    char name[300];
    if (l->state == LK_UP && !l->closing)
        plog(P, "peer %s: link down%s%s", rec_name(P, l->rec, l, name, sizeof(name)),
             why ? ": " : "", why ? why : "");
    else if (l->outbound && !l->closing && why &&
             (P->cfg.verbose || (l->rec && l->rec->attempts <= 1)))
        plog(P, "peer %s: %s (retrying)", rec_name(P, l->rec, l, name, sizeof(name)), why);
    if (l->rec && !l->closing && (why || !l->rec->last_error[0]))
        rec_error(l, "%s", why ? why : "connection closed");
    link_free(l, true);
}

/* ---- timers --------------------------------------------------------------------------------- */

static void link_check(link_t *l)
{
    crdt_peers_t *P = l->P;
    uint64_t t = P->now;
    l->check_at = t + CHECK_MS;
    char name[300];
    if (!l->ws_open && t - l->t_open_ms > HANDSHAKE_MS) {
        /* Still connecting: a transport may never report such a connection's death (lws 4.1
         * does not when it dies of a timeout), so the engine forgets it and the transport kills
         * it. */
        plog(P, "peer %s: no connection within %d s; retrying",
             rec_name(P, l->rec, l, name, sizeof(name)), HANDSHAKE_MS / 1000);
        rec_error(l, "no WebSocket upgrade within %d s", HANDSHAKE_MS / 1000);
        void *ud = l->ud;
        link_free(l, true);
        if (P->host.close)
            P->host.close(P->host.ud, ud, true);
        return;
    }
    if (l->closing)
        return;
    if (l->state != LK_UP && t - l->t_open_ms > HANDSHAKE_MS) {
        link_close(l, PW_R_PROTOCOL, 0, "no handshake within %d s", HANDSHAKE_MS / 1000);
    } else if (l->ae && t - l->ae_started_ms > AE_TIMEOUT_MS) {
        plog(P, "peer %s: anti-entropy session unanswered for %d s; abandoned",
             rec_name(P, l->rec, l, name, sizeof(name)), AE_TIMEOUT_MS / 1000);
        ae_end(l);
    } else if (l->state == LK_UP && t - l->last_rx_ms > DEAD_MS) {
        link_close(l, 0, 0, "nothing received for %.1f s", (double)(t - l->last_rx_ms) / 1e3);
    } else if (l->state == LK_UP && t - l->last_tx_ms >= KEEPALIVE_MS && !l->ctl.head) {
        crdt_buf_t b = {0};
        if (!pw_put_u8(&b, PW_PING))
            queue_ctl(l, &b);
        crdt_buf_free(&b);
    }
}

static void dial_due(crdt_peers_t *P, peer_rec_t *rec)
{
    rec->dial_at = NEVER;
    if (rec->dial)
        return;
    if (rec->standby) {
        /* the peer keeps its own link to us: look again later, dial once it is gone (its close
         * wakes us too; this timer only guards against a close we never saw) */
        if (rec->link) {
            schedule_dial(rec, BACKOFF_MAX_MS);
            return;
        }
        rec->standby = false;
    }
    if (P->host.dial)
        P->host.dial(P->host.ud, rec->slot);
    if (!rec->dial && rec->dial_at == NEVER)
        schedule_dial(rec, 0); /* the transport could not even start: try again later */
}

/* Schedules a dial; delay 0 means "the next backoff step". */
static void schedule_dial(peer_rec_t *rec, uint64_t delay_ms)
{
    crdt_peers_t *P = rec->P;
    if (rec->dial_at != NEVER)
        return;
    if (!delay_ms) {
        unsigned n = rec->attempts < 8 ? rec->attempts : 8;
        uint64_t d = (uint64_t)BACKOFF_MIN_MS << n;
        if (d > BACKOFF_MAX_MS)
            d = BACKOFF_MAX_MS;
        /* jitter: anywhere in [d/2, d], so peers restarted together do not dial in step */
        delay_ms = d / 2 + rand_u64(P) % (d / 2 + 1);
    }
    rec->dial_at = P->now + delay_ms;
}

void crdt_peers_tick(crdt_peers_t *P, uint64_t now)
{
    P->now = now;
    if (P->batch_at <= now)
        batch_due(P);
    for (int i = 0; i < MAX_LINKS; i++) {
        link_t *l = P->links[i];
        if (l && l->ae_at <= now && !l->closing)
            ae_timer(l);
        l = P->links[i];
        if (l && l->check_at <= now)
            link_check(l);
    }
    if (P->loading && P->load_rc != -2)
        marks_loaded(P, P->load_rc, NULL); /* the epoch's random bytes failed: again */
    for (int i = 0; i < P->nslots; i++)
        if (P->recs[i].dial_at <= now) {
            if (P->loading) /* the marks are not read yet: a dial waits */
                P->recs[i].dial_at = now + LOADING_WAIT_MS;
            else
                dial_due(P, &P->recs[i]);
        }
    if (P->marks_at <= now && P->marks_dirty)
        marks_write(P);
    else if (P->marks_at <= now)
        P->marks_at = NEVER;
}

uint64_t crdt_peers_deadline(const crdt_peers_t *P)
{
    uint64_t d = P->batch_at < P->marks_at ? P->batch_at : P->marks_at;
    for (int i = 0; i < P->links_hi; i++) {
        const link_t *l = P->links[i];
        if (!l)
            continue;
        if (l->check_at < d)
            d = l->check_at;
        if (l->ae_at < d && !l->closing)
            d = l->ae_at;
    }
    for (int i = 0; i < P->nslots; i++)
        if (P->recs[i].dial_at < d)
            d = P->recs[i].dial_at;
    return d;
}

/* ---- the engine ----------------------------------------------------------------------------- */

void crdt_peers_config_init(crdt_peers_config_t *cfg)
{
    memset(cfg, 0, sizeof(*cfg));
    cfg->cluster = "crdtd";
    cfg->queue_bytes = 64u << 20;
    cfg->batch_ms = 5;
    cfg->max_clock_drift_ms = 86400000;
}

static crdt_peers_t *fail(crdt_peers_t *P, crdt_error_t *err, int code, const char *text)
{
    if (err) {
        err->code = code;
        snprintf(err->text, sizeof(err->text), "%s", text);
    }
    if (P) {
        crdt_buf_free(&P->open);
        memset(P->secret, 0, sizeof(P->secret));
        free(P);
    }
    return NULL;
}

/* The marks' read completed (rc as marks_parse's): takes the legacy file's marks if the store had
 * none, picks a new epoch if needed and persists it; the engine is then ready. -1: no random
 * bytes (still loading; crdt_peers_tick retries). */
static int marks_loaded(crdt_peers_t *P, int rc, const char *legacy)
{
    if (rc == -1)
        plog(P, "peers: the replication marks are damaged; starting a new replication epoch "
                "(peers resend)");
    if (rc <= 0 && legacy && legacy_load(P, legacy))
        plog(P, "peers: read the replication marks of peers.state (upgrade)");
    while (!P->epoch) {
        if (!P->host.random || P->host.random(P->host.ud, &P->epoch, sizeof(P->epoch))) {
            P->epoch = 0;
            P->loading = true;
            P->load_rc = rc < 0 ? rc : 0; /* retried without the legacy marks */
            free(P->load_legacy);
            P->load_legacy = NULL;
            return -1;
        }
    }
    P->loading = false;
    free(P->load_legacy);
    P->load_legacy = NULL;
    if (rc != 1)
        marks_write(P);
    return 0;
}

crdt_peers_t *crdt_peers_new(crdt_store_t *st, const crdt_peers_config_t *cfg,
                             const crdt_peers_host_t *host, uint64_t now, crdt_error_t *err)
{
    if (!st || !cfg || !host || !cfg->cluster || strlen(cfg->cluster) >= 64)
        return fail(NULL, err, CRDT_EINVAL, "peers: bad configuration (cluster name)");
    if (cfg->secret_len < 16 || cfg->secret_len > 1024 || !cfg->secret)
        return fail(NULL, err, CRDT_EINVAL, "peers: the cluster secret must be 16 to 1024 bytes");
    if (cfg->nslots < 0 || cfg->nslots > MAX_SLOTS)
        return fail(NULL, err, CRDT_EINVAL, "peers: at most 16 dial slots");
    crdt_peers_t *P = calloc(1, sizeof(*P));
    if (!P)
        return fail(NULL, err, CRDT_ENOMEM, "peers: out of memory");
    P->st = st;
    P->cfg = *cfg;
    P->host = *host;
    P->now = now;
    snprintf(P->cluster, sizeof(P->cluster), "%s", cfg->cluster);
    P->cfg.cluster = P->cluster;
    memcpy(P->secret, cfg->secret, cfg->secret_len);
    P->cfg.secret = P->secret;
    P->cfg.legacy_state = NULL;
    P->node_id = crdt_store_node_id(st);
    P->batch_at = P->marks_at = NEVER;
    /* copied: the read may complete after this returns (then the engine waits for it) */
    if (cfg->legacy_state && !(P->load_legacy = strdup(cfg->legacy_state)))
        return fail(P, err, CRDT_ENOMEM, "peers: out of memory");
    marks_load_ctx_t *c = calloc(1, sizeof(*c));
    if (!c) {
        free(P->load_legacy);
        return fail(P, err, CRDT_ENOMEM, "peers: out of memory");
    }
    c->P = P;
    c->rc = -2;
    c->issuing = true;
    inflight_add(P, &c->node);
    crdt_store_mark_get(st, MARK_NAME, marks_get_cb, c);
    c->issuing = false;
    if (c->rc != -2) {
        int rc = c->rc;
        inflight_free(P, &c->node);
        if (marks_loaded(P, rc, P->load_legacy))
            return fail(P, err, CRDT_EIO, "peers: no random bytes for the replication epoch");
    } else {
        P->loading = true;
        P->load_rc = -2;
    }
    P->nslots = cfg->nslots;
    for (int i = 0; i < MAX_RECS; i++) {
        P->recs[i].P = P;
        P->recs[i].slot = -1;
        P->recs[i].dial_at = NEVER;
    }
    for (int i = 0; i < P->nslots; i++) {
        P->recs[i].used = true;
        P->recs[i].slot = i;
        P->recs[i].dial_at = now + 1;
    }
    P->released_through = crdt_store_durable_seq(st);
    P->complete_after = crdt_store_last_seq(st);
    return P;
}

void crdt_peers_free(crdt_peers_t *P)
{
    if (!P)
        return;
    for (int i = 0; i < MAX_LINKS; i++)
        if (P->links[i])
            link_free(P->links[i], false);
    P->freeing = true;
    if (P->marks_dirty)
        marks_write(P);
    free(P->load_legacy);
    while (P->inflight) /* calls the store dropped (closed first) or never completes */
        inflight_free(P, P->inflight);
    fifo_clear(&P->staged);
    crdt_buf_free(&P->open);
    crdt_buf_free(&P->scratch);
    memset(P->secret, 0, sizeof(P->secret));
    free(P);
}

/* ---- status --------------------------------------------------------------------------------- */

static const char *rec_state(const peer_rec_t *r)
{
    if (r->link)
        return "up";
    if (r->dial)
        return r->dial->ws_open ? "handshake" : "connecting";
    if (r->standby)
        return "standby";
    return "down";
}

size_t crdt_peers_status(const crdt_peers_t *P, crdt_peer_status_t *out, size_t max, uint64_t now)
{
    size_t n = 0;
    uint64_t last = crdt_store_last_seq(P->st);
    for (int i = 0; i < MAX_RECS; i++) {
        const peer_rec_t *r = &P->recs[i];
        if (!r->used)
            continue;
        if (n < max) {
            crdt_peer_status_t *s = &out[n];
            memset(s, 0, sizeof(*s));
            const link_t *l = r->link ? r->link : r->dial;
            s->slot = r->slot;
            s->name = r->slot >= 0 && P->cfg.slot_names && P->cfg.slot_names[r->slot]
                          ? P->cfg.slot_names[r->slot]
                          : "";
            s->node_id = r->node_id;
            s->state = rec_state(r);
            s->mode = !r->link ? NULL : r->link->live ? "live" : "catchup";
            s->outbound = r->link ? r->link->outbound : r->slot >= 0;
            snprintf(s->address, sizeof(s->address), "%s", l ? l->addr : r->address);
            s->ack_sent = r->ack_sent;
            s->ack_received = r->ack_received;
            s->lag_deltas = last > r->ack_received ? last - r->ack_received : 0;
            s->lag_seconds = lag_seconds(P, r->ack_received, now);
            s->ae_rounds = r->ae_rounds;
            s->keys_repaired = r->keys_repaired;
            s->keys_repair_sent = r->keys_repair_sent;
            s->type_conflicts = r->type_conflicts;
            s->deltas_sent = r->deltas_sent;
            s->deltas_received = r->deltas_received;
            s->bytes_sent = r->bytes_sent;
            s->bytes_received = r->bytes_received;
            s->connects = r->ups;
            snprintf(s->last_error, sizeof(s->last_error), "%s", r->last_error);
        }
        n++;
    }
    return n;
}

void crdt_peers_stats(const crdt_peers_t *P, crdt_peers_stats_t *out)
{
    memset(out, 0, sizeof(*out));
    out->epoch = P->epoch;
    out->outbox_overflows = P->outbox_overflows;
    out->clock_refusals = P->clock_refusals;
    for (int i = 0; i < MAX_LINKS; i++)
        out->links += P->links[i] != NULL;
}
