/* peer.c - replication links between crdtd nodes (subprotocol crdt-peer.v1): handshake, delta push
 * with acks and resume, anti-entropy, status and metrics
 *
 * docs/replication.md, "Peer links", is the reference; in short:
 *
 * - Every configured --peer is a dial slot that keeps one outbound WebSocket open (capped
 *   exponential backoff with jitter); inbound links are accepted on the main listener. A mutual
 *   HMAC challenge proves the cluster secret. One link per peer node: when both ends dialled, the
 *   link dialled by the lower node id stays and the other is closed with a BYE.
 * - Only changes that originate here (origin CRDT_ORIGIN_LOCAL) are pushed: in a full mesh a node
 *   hears every write from its origin, and anti-entropy repairs partial meshes. Changes are
 *   encoded once into a shared outbox, batched (PW_BATCH_BYTES / PW_BATCH_COUNT / --peer-batch-ms),
 *   released only once durable here (so a crash never makes a peer hold seqs we reuse), and
 *   queued by reference on every live link.
 * - A batch carries `through`: every local change with seq <= through has been sent. The receiver
 *   acks `through` once what the batch produced is durable on its side, and remembers it per
 *   origin node and epoch (peers.state in the data dir), so that on reconnect the sender resumes
 *   from there with the change feed (current states of the keys changed since), then goes live.
 *   A link whose queue passes --peer-queue bytes drops it and catches up from the feed the same
 *   way, paced by writability: memory stays bounded and a slow peer never blocks writers.
 * - Anti-entropy (crdt_reconcile) runs on every connect and every --anti-entropy-interval seconds,
 *   started by the dialler; each side then sends the states of the differing keys it holds.
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "crdt_reconcile.h"
#include "crypto.h"
#include "jsonw.h"
#include "loop.h"
#include "peer.h"
#include "util.h"
#include "peer_index.h"
#include "peer_wire.h"

#define MAX_LINKS 64       /* links alive at once (handshakes included) */
#define MAX_RECS 64        /* peers remembered (status, stats, marks) */
#define HANDSHAKE_MAX 4096 /* largest message before the peer proved the secret */
#define HANDSHAKE_SECS 5   /* a link must be up within this */
#define KEEPALIVE_MS 1000  /* a PING when nothing else was sent for this long */
#define DEAD_MS 6000       /* a link silent for this long is closed */
#define BACKOFF_MIN_MS 100 /* reconnect delays: 100 ms doubling to 10 s, with jitter */
#define BACKOFF_MAX_MS 10000
#define MARKS_WRITE_MS 1000 /* peers.state is rewritten at most this often */
#define AE_TIMEOUT_MS 10000 /* a session older than this is abandoned */
#define PEND_MAX 4096       /* received batches waiting for durability, per link */
#define LAG_RING 1024       /* (through, time) samples of released batches, for lag seconds */
#define STATE_FILE "peers.state"

/* ---- frames: a message with lws headroom, shared by reference between links ------------------ */

typedef struct pframe {
    unsigned refs;
    size_t len;         /* payload bytes, at buf + LWS_PRE */
    uint64_t first_seq; /* DELTAS from the outbox: seqs of the first and last entries */
    uint64_t max_seq;
    uint64_t through;
    uint32_t count;
    uint8_t *buf;
} pframe_t;

typedef struct qnode {
    pframe_t *f;
    struct qnode *next;
} qnode_t;

typedef struct fifo {
    qnode_t *head, *tail;
    size_t bytes, n;
} fifo_t;

static pframe_t *frame_new(size_t cap)
{
    pframe_t *f = calloc(1, sizeof(*f));
    if (!f)
        return NULL;
    f->buf = malloc(LWS_PRE + cap);
    if (!f->buf) {
        free(f);
        return NULL;
    }
    f->refs = 1;
    return f;
}

/* A frame that adopts the bytes of b (b is left empty): b must have been started with LWS_PRE
 * bytes of headroom. */
static pframe_t *frame_adopt(crdt_buf_t *b)
{
    pframe_t *f = calloc(1, sizeof(*f));
    if (!f)
        return NULL;
    f->refs = 1;
    f->buf = b->data;
    f->len = b->len - LWS_PRE;
    memset(b, 0, sizeof(*b));
    return f;
}

static pframe_t *frame_copy(const crdt_buf_t *b)
{
    pframe_t *f = frame_new(b->len);
    if (!f)
        return NULL;
    memcpy(f->buf + LWS_PRE, b->data, b->len);
    f->len = b->len;
    return f;
}

static void frame_unref(pframe_t *f)
{
    if (f && --f->refs == 0) {
        free(f->buf);
        free(f);
    }
}

static int fifo_push(fifo_t *q, pframe_t *f)
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
static pframe_t *fifo_pop(fifo_t *q)
{
    qnode_t *n = q->head;
    if (!n)
        return NULL;
    q->head = n->next;
    if (!q->head)
        q->tail = NULL;
    pframe_t *f = n->f;
    q->bytes -= f->len;
    q->n--;
    free(n);
    return f;
}

static void fifo_clear(fifo_t *q)
{
    pframe_t *f;
    while ((f = fifo_pop(q)))
        frame_unref(f);
}

/* ---- state ---------------------------------------------------------------------------------- */

typedef struct gw_peers gw_peers_t;
typedef struct peer_link peer_link_t;

/* A peer: a configured dial slot (url set) and/or a node met on an inbound link. Outlives links:
 * holds the counters shown in /v1/peers. */
typedef struct peer_rec {
    gw_peers_t *P;
    bool used;
    char url[256]; /* "" for a node that only dialled us */
    char host[256];
    int port;
    char path[128];
    uint64_t node_id;  /* 0 until a handshake told us */
    peer_link_t *link; /* the link that is up, or NULL */
    peer_link_t *dial; /* our outbound link while it exists (dial slots) */
    bool standby;      /* the peer's own link to us is the one kept: do not dial meanwhile */
    unsigned attempts;
    lws_sorted_usec_list_t sul_dial;
    bool dial_scheduled;
    /* counters */
    uint64_t bytes_sent, bytes_received, deltas_sent, deltas_received;
    uint64_t ups, ae_rounds, keys_repaired, keys_repair_sent, type_conflicts;
    uint64_t ack_sent, ack_received; /* applied-through marks: ours of theirs, theirs of ours */
    bool ack_received_known;
    char address[280];
    char last_error[200];
    bool outbound_up; /* direction of the link that is up */
} peer_rec_t;

typedef struct pend {
    uint64_t through; /* the sender's mark the batch brings us to */
    uint64_t local;   /* our last seq after applying it: durable_seq must reach this */
} pend_t;

enum link_state { LK_HANDSHAKE = 0, LK_UP };

struct peer_link {
    gw_peers_t *P;
    int idx;
    struct lws *wsi;
    bool outbound;
    peer_rec_t *rec; /* dial slot (outbound) or, once up, the peer's record */
    enum link_state state;
    bool closing;
    bool got_challenge;
    bool ws_open;      /* the WebSocket is established (handshake messages may flow) */
    bool catchup_idle; /* the feed had nothing sendable: wait for durability or the timer */
    char addr[280];
    uint64_t t_open_ms;
    /* handshake */
    crdt_buf_t transcript;
    uint8_t nonce[PW_NONCE_LEN];
    uint64_t remote_node, remote_epoch;
    uint64_t remote_durable; /* the peer's durable seq at the handshake: its catch-up target */
    bool ae_first_due;       /* the on-connect session waits until both catch-ups are done */
    /* receiving */
    crdt_buf_t rx;
    uint64_t last_rx_ms, last_tx_ms;
    /* sending: control (handshake, AE, BYE) before data */
    fifo_t ctl, data;
    bool live;             /* data comes from the outbox; false: catching up from the feed */
    uint64_t cursor;       /* catch-up: feed position (everything <= cursor sent) */
    uint64_t sent_through; /* the highest `through` handed to lws */
    bool overflow_logged;
    /* acks of what we received */
    uint64_t applied;    /* their seqs durably applied here, through this */
    uint64_t rx_through; /* the highest `through` received on this link */
    bool ack_due;
    pend_t *pend;
    size_t npend, cap_pend;
    /* anti-entropy */
    crdt_rsx_session_t *ae;
    uint64_t *repair_ids;
    size_t nrepair, repair_pos;
    uint64_t ae_started_ms;
    lws_sorted_usec_list_t sul_ae, sul_ka;
    /* A dialled link's frames are client frames, which lws masks in place: they are written from
     * this private copy so the shared frame other links still hold stays intact. */
    uint8_t *wbuf;
    size_t wbuf_cap;
};

typedef struct mark {
    uint64_t node, epoch, applied;
} mark_t;

struct gw_peers {
    gw_server_t *s;
    uint8_t secret[1024];
    size_t slen;
    uint64_t epoch; /* this replica's history: seqs are only comparable within one epoch */
    peer_rec_t recs[MAX_RECS];
    int ndial;
    peer_link_t *links[MAX_LINKS];
    peer_link_t *connecting; /* the link inside lws_client_connect_via_info, see dial_cb */
    bool connect_failed;
    /* applied-through marks of every origin we heard from */
    mark_t marks[MAX_RECS];
    int nmarks;
    bool marks_dirty, marks_scheduled;
    char state_path[1100];
    lws_sorted_usec_list_t sul_marks;
    /* the outbox of local changes */
    crdt_buf_t open;
    uint32_t open_count;
    uint64_t open_first, open_max;
    fifo_t staged; /* sealed batches waiting for durability */
    uint64_t released_through;
    /* every local change after this seq is in the outbox or was released: a link may go live
     * once its catch-up reached our durable seq and that is at least this */
    uint64_t complete_after;
    lws_sorted_usec_list_t sul_batch;
    bool batch_scheduled;
    bool outbox_dropped_logged;
    struct {
        uint64_t through, ms;
    } ring[LAG_RING];
    size_t ring_start, ring_n;
    /* anti-entropy */
    peer_index_t *pix;
    int sessions; /* alive sessions borrowing the index */
    crdt_buf_t scratch;
    uint64_t outbox_overflows;
};

static void link_close(peer_link_t *l, uint8_t refuse, bool bye, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
static void link_want_write(peer_link_t *l);
static void schedule_dial(peer_rec_t *rec, unsigned delay_ms);
static void ae_maybe_first(peer_link_t *l);

static const char *rec_name(const peer_rec_t *rec, const peer_link_t *l, char *buf, size_t n)
{
    if (rec && rec->url[0])
        snprintf(buf, n, "%s", rec->url);
    else if (l)
        snprintf(buf, n, "%s (inbound)", l->addr);
    else
        snprintf(buf, n, "node %" PRIu64, rec ? rec->node_id : 0);
    return buf;
}

/* ---- marks: what we durably applied of each origin, kept in peers.state ---------------------- */

static mark_t *mark_find(gw_peers_t *P, uint64_t node)
{
    for (int i = 0; i < P->nmarks; i++)
        if (P->marks[i].node == node)
            return &P->marks[i];
    return NULL;
}

/* Our applied-through mark of node's history `epoch` (0 when we know another history). */
static uint64_t mark_get(gw_peers_t *P, uint64_t node, uint64_t epoch)
{
    mark_t *m = mark_find(P, node);
    return m && m->epoch == epoch ? m->applied : 0;
}

static void marks_write_cb(lws_sorted_usec_list_t *sul);

static void mark_set(gw_peers_t *P, uint64_t node, uint64_t epoch, uint64_t applied)
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
    if (P->marks_dirty && P->state_path[0] && !P->marks_scheduled) {
        P->marks_scheduled = true;
        lws_sul_schedule(P->s->ctx, 0, &P->sul_marks, marks_write_cb,
                         (lws_usec_t)MARKS_WRITE_MS * 1000);
    }
}

/* Writes peers.state atomically (temporary file, fsync, rename). The marks it holds only ever
 * lag the truth: they are set once the data they cover is durable, so a crash can make a peer
 * resend a little, never skip anything. */
static int marks_write(gw_peers_t *P)
{
    if (!P->state_path[0])
        return 0;
    char tmp[1200];
    snprintf(tmp, sizeof(tmp), "%s.tmp", P->state_path);
    FILE *f = fopen(tmp, "w");
    if (!f) {
        gw_log("peers: cannot write %s: %s", tmp, strerror(errno));
        return -1;
    }
    fprintf(f, "crdt-peers 1\nepoch %016" PRIx64 "\n", P->epoch);
    for (int i = 0; i < P->nmarks; i++)
        fprintf(f, "mark %" PRIu64 " %016" PRIx64 " %" PRIu64 "\n", P->marks[i].node,
                P->marks[i].epoch, P->marks[i].applied);
    int ok = fflush(f) == 0 && fsync(fileno(f)) == 0;
    ok = (fclose(f) == 0) && ok;
    if (!ok || rename(tmp, P->state_path) != 0) {
        gw_log("peers: cannot write %s: %s", P->state_path, strerror(errno));
        unlink(tmp);
        return -1;
    }
    P->marks_dirty = false;
    return 0;
}

static void marks_write_cb(lws_sorted_usec_list_t *sul)
{
    gw_peers_t *P = lws_container_of(sul, gw_peers_t, sul_marks);
    P->marks_scheduled = false;
    if (P->marks_dirty)
        marks_write(P);
}

/* Reads peers.state; a missing or damaged file starts a new epoch (peers then resend from the
 * start, which joins harmlessly). */
static void marks_load(gw_peers_t *P)
{
    FILE *f = fopen(P->state_path, "r");
    bool ok = false;
    if (f) {
        char line[256];
        ok = fgets(line, sizeof(line), f) && !strcmp(line, "crdt-peers 1\n") &&
             fgets(line, sizeof(line), f) && sscanf(line, "epoch %" SCNx64, &P->epoch) == 1 &&
             P->epoch != 0;
        while (ok && fgets(line, sizeof(line), f)) {
            mark_t m;
            if (sscanf(line, "mark %" SCNu64 " %" SCNx64 " %" SCNu64, &m.node, &m.epoch,
                       &m.applied) != 3 ||
                P->nmarks == MAX_RECS) {
                ok = false;
                break;
            }
            P->marks[P->nmarks++] = m;
        }
        fclose(f);
        if (!ok)
            gw_log("peers: %s is damaged; starting a new replication epoch (peers resend)",
                   P->state_path);
    }
    if (!ok) {
        P->nmarks = 0;
        P->epoch = 0;
    }
}

/* ---- link helpers --------------------------------------------------------------------------- */

static uint64_t now_ms(void)
{
    return gw_mono_ms();
}

static void link_want_write(peer_link_t *l)
{
    if (l->wsi)
        lws_callback_on_writable(l->wsi);
}

static int queue_ctl(peer_link_t *l, const crdt_buf_t *msg)
{
    pframe_t *f = frame_copy(msg);
    if (!f || fifo_push(&l->ctl, f)) {
        frame_unref(f);
        return CRDT_ENOMEM;
    }
    link_want_write(l);
    return 0;
}

/* Logs why, sends a REFUSE (refuse != 0) or BYE (bye) as the last message, then closes. Safe from
 * any callback; the close happens at the next writable callback (or the lws timeout below). */
static void link_close(peer_link_t *l, uint8_t refuse, bool bye, const char *fmt, ...)
{
    if (l->closing)
        return;
    char msg[200], name[300];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    gw_log("peer %s: %s%s", rec_name(l->rec, l, name, sizeof(name)), msg,
           refuse ? "; link refused" : "; closing the link");
    if (l->rec)
        snprintf(l->rec->last_error, sizeof(l->rec->last_error), "%s", msg);
    l->closing = true;
    if (!bye)
        fifo_clear(&l->ctl); /* a BYE follows what is queued (the WELCOME of a duplicate) */
    fifo_clear(&l->data);
    crdt_buf_t b = {0};
    if (refuse)
        pw_encode_refuse(&b, refuse, msg);
    else if (bye)
        pw_put_u8(&b, PW_BYE), pw_put_u8(&b, (uint8_t)bye);
    if (b.len) {
        pframe_t *f = frame_copy(&b);
        if (f && fifo_push(&l->ctl, f))
            frame_unref(f);
    }
    crdt_buf_free(&b);
    if (l->wsi) {
        lws_set_timeout(l->wsi, PENDING_TIMEOUT_USER_OK, 2);
        lws_callback_on_writable(l->wsi);
    }
}

static void ae_end(peer_link_t *l)
{
    if (l->ae) {
        crdt_rsx_session_free(l->ae);
        l->ae = NULL;
        l->P->sessions--;
    }
}

/* Frees a link whose connection is gone (or is being abandoned at shutdown). */
static void link_free(peer_link_t *l, bool redial)
{
    gw_peers_t *P = l->P;
    if (l->wsi)
        lws_set_opaque_user_data(l->wsi, NULL);
    lws_sul_cancel(&l->sul_ae);
    lws_sul_cancel(&l->sul_ka);
    ae_end(l);
    fifo_clear(&l->ctl);
    fifo_clear(&l->data);
    crdt_buf_free(&l->rx);
    crdt_buf_free(&l->transcript);
    free(l->pend);
    free(l->repair_ids);
    free(l->wbuf);
    P->links[l->idx] = NULL;
    peer_rec_t *dial = l->outbound ? l->rec : NULL;
    /* the peer's record (found at handshake) may differ from the dial slot only before merging */
    for (int i = 0; i < MAX_RECS; i++) {
        peer_rec_t *r = &P->recs[i];
        if (r->link == l) {
            r->link = NULL;
            /* a standby dial slot for that node wakes up: the link it deferred to is gone */
            for (int j = 0; j < P->ndial; j++)
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

static peer_link_t *link_new(gw_peers_t *P, struct lws *wsi, bool outbound, peer_rec_t *rec)
{
    int idx = -1;
    for (int i = 0; i < MAX_LINKS; i++)
        if (!P->links[i]) {
            idx = i;
            break;
        }
    if (idx < 0)
        return NULL;
    peer_link_t *l = calloc(1, sizeof(*l));
    if (!l)
        return NULL;
    l->P = P;
    l->idx = idx;
    l->wsi = wsi;
    l->outbound = outbound;
    l->rec = rec;
    l->t_open_ms = l->last_rx_ms = l->last_tx_ms = now_ms();
    P->links[idx] = l;
    return l;
}

/* ---- the outbox: local changes, batched, released once durable -------------------------------
 */

static void lag_note(gw_peers_t *P, uint64_t through)
{
    size_t i = (P->ring_start + P->ring_n) % LAG_RING;
    if (P->ring_n == LAG_RING)
        P->ring_start = (P->ring_start + 1) % LAG_RING;
    else
        P->ring_n++;
    P->ring[i].through = through;
    P->ring[i].ms = now_ms();
}

/* Seconds since the oldest release our peer has not acked (0 when it acked everything). */
static double lag_seconds(const gw_peers_t *P, uint64_t acked)
{
    for (size_t k = 0; k < P->ring_n; k++) {
        size_t i = (P->ring_start + k) % LAG_RING;
        if (P->ring[i].through > acked)
            return (double)(now_ms() - P->ring[i].ms) / 1e3;
    }
    return 0;
}

/* The link falls back to the change feed from what it already sent. */
static void link_to_catchup(peer_link_t *l, const char *why)
{
    char name[300];
    if (l->live && !l->overflow_logged) {
        gw_log("peer %s: %s; catching up from the change feed",
               rec_name(l->rec, l, name, sizeof(name)), why);
        l->overflow_logged = true;
    }
    fifo_clear(&l->data);
    l->live = false;
    l->cursor = l->sent_through;
    link_want_write(l);
}

static void distribute(gw_peers_t *P, pframe_t *f)
{
    for (int i = 0; i < MAX_LINKS; i++) {
        peer_link_t *l = P->links[i];
        if (!l || l->state != LK_UP || l->closing || !l->live)
            continue;
        if (l->data.bytes + f->len > P->s->cfg.peer_queue) {
            link_to_catchup(l, "outbound queue full (--peer-queue)");
            continue;
        }
        f->refs++;
        if (fifo_push(&l->data, f)) {
            f->refs--;
            link_to_catchup(l, "out of memory queueing deltas");
            continue;
        }
        link_want_write(l);
    }
    lag_note(P, f->through);
    P->released_through = f->through;
    frame_unref(f);
}

static int outbox_start(gw_peers_t *P)
{
    P->open.len = 0;
    if (crdt_buf_reserve(&P->open, LWS_PRE + PW_BATCH_BYTES + 64))
        return CRDT_ENOMEM;
    memset(P->open.data, 0, LWS_PRE + PW_DELTAS_HDR);
    P->open.data[LWS_PRE] = PW_DELTAS;
    P->open.len = LWS_PRE + PW_DELTAS_HDR;
    P->open_count = 0;
    return 0;
}

static void outbox_seal(gw_peers_t *P)
{
    if (!P->open_count)
        return;
    pw_store_u32(P->open.data + LWS_PRE + PW_D_COUNT, P->open_count);
    pframe_t *f = frame_adopt(&P->open);
    if (!f) {
        /* keep the batch; sealing is retried at the next release */
        return;
    }
    f->first_seq = P->open_first;
    f->max_seq = P->open_max;
    f->count = P->open_count;
    P->open_count = 0;
    if (fifo_push(&P->staged, f)) {
        frame_unref(f);
        P->complete_after = crdt_replica_last_seq(P->s->replica);
        /* lost: every live link must catch up from the feed instead */
        for (int i = 0; i < MAX_LINKS; i++)
            if (P->links[i] && P->links[i]->live)
                link_to_catchup(P->links[i], "out of memory in the outbox");
    }
}

/* Drops the outbox (too big: durability stalls, or memory): links go to the feed. */
static void outbox_drop(gw_peers_t *P, const char *why)
{
    if (!P->outbox_dropped_logged)
        gw_log("peers: dropping %zu bytes of unsent deltas (%s); links catch up from the feed",
               P->staged.bytes + P->open.len, why);
    P->outbox_dropped_logged = true;
    P->outbox_overflows++;
    fifo_clear(&P->staged);
    P->open_count = 0;
    P->open.len = 0;
    P->complete_after = crdt_replica_last_seq(P->s->replica);
    for (int i = 0; i < MAX_LINKS; i++)
        if (P->links[i] && P->links[i]->live)
            link_to_catchup(P->links[i], why);
}

/* Releases what is durable. With `timer`: also seals the open batch and, when nothing else goes
 * out, sends a progress mark (an empty batch) so acks and lag reach our last durable seq even
 * when our recent changes all came from peers. */
static void outbox_release(gw_peers_t *P, bool timer)
{
    gw_server_t *s = P->s;
    uint64_t D = crdt_replica_durable_seq(s->replica);
    if (timer)
        outbox_seal(P);
    while (P->staged.head && P->staged.head->f->max_seq <= D) {
        pframe_t *f = fifo_pop(&P->staged);
        uint64_t next_first = P->staged.head  ? P->staged.head->f->first_seq
                              : P->open_count ? P->open_first
                                              : UINT64_MAX;
        uint64_t through = next_first - 1 < D ? next_first - 1 : D;
        if (through < f->max_seq)
            through = f->max_seq;
        f->through = through;
        pw_store_u64(f->buf + LWS_PRE + PW_D_FROM, P->released_through);
        pw_store_u64(f->buf + LWS_PRE + PW_D_THROUGH, through);
        distribute(P, f);
    }
    if (timer && !P->staged.head) {
        uint64_t T = P->open_count && P->open_first - 1 < D ? P->open_first - 1 : D;
        if (T > P->released_through) {
            pframe_t *f = frame_new(PW_DELTAS_HDR);
            if (f) {
                uint8_t *p = f->buf + LWS_PRE;
                p[0] = PW_DELTAS;
                pw_store_u64(p + PW_D_FROM, P->released_through);
                pw_store_u64(p + PW_D_THROUGH, T);
                pw_store_u32(p + PW_D_COUNT, 0);
                f->len = PW_DELTAS_HDR;
                f->through = T;
                distribute(P, f);
            }
        }
    }
}

/* Links catching up that found nothing sendable look again (durability advanced). */
static void wake_catchup(gw_peers_t *P)
{
    for (int i = 0; i < MAX_LINKS; i++) {
        peer_link_t *l = P->links[i];
        if (l && l->state == LK_UP && !l->live && l->catchup_idle) {
            l->catchup_idle = false;
            link_want_write(l);
        }
    }
}

static void batch_cb(lws_sorted_usec_list_t *sul)
{
    gw_peers_t *P = lws_container_of(sul, gw_peers_t, sul_batch);
    P->batch_scheduled = false;
    outbox_release(P, true);
    wake_catchup(P);
    /* not everything could go (not durable yet): look again */
    if (P->open_count || P->staged.head ||
        crdt_replica_durable_seq(P->s->replica) > P->released_through ||
        crdt_replica_last_seq(P->s->replica) > crdt_replica_durable_seq(P->s->replica)) {
        P->batch_scheduled = true;
        lws_sul_schedule(P->s->ctx, 0, &P->sul_batch, batch_cb,
                         (lws_usec_t)(P->s->cfg.peer_batch_ms ? P->s->cfg.peer_batch_ms : 1) *
                             1000);
    }
}

static void schedule_batch(gw_peers_t *P)
{
    if (P->batch_scheduled)
        return;
    P->batch_scheduled = true;
    lws_sul_schedule(P->s->ctx, 0, &P->sul_batch, batch_cb,
                     (lws_usec_t)P->s->cfg.peer_batch_ms * 1000);
}

static bool any_link(const gw_peers_t *P)
{
    for (int i = 0; i < MAX_LINKS; i++)
        if (P->links[i] && P->links[i]->state == LK_UP)
            return true;
    return false;
}

void gw_peer_on_change(gw_server_t *s, const void *key, size_t klen, uint64_t seq,
                       const crdt_obj_t *delta, uint64_t origin)
{
    gw_peers_t *P = s->peers;
    if (!P)
        return;
    peer_index_touch(P->pix, key, klen);
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
        gw_log("peers: a delta of %zu bytes is larger than a peer message may be (%u); "
               "replicating it through the feed",
               P->scratch.len, PW_MAX_MESSAGE);
        outbox_drop(P, "oversized delta");
        return;
    }
    if (P->open_count && P->open.len - LWS_PRE + P->scratch.len + klen + 24 > PW_BATCH_BYTES)
        outbox_seal(P);
    if (!P->open_count && outbox_start(P)) {
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
    if (P->open_count >= PW_BATCH_COUNT || P->open.len - LWS_PRE >= PW_BATCH_BYTES)
        outbox_seal(P);
    if (P->staged.bytes + P->open.len > s->cfg.peer_queue)
        outbox_drop(P, "unsent deltas over --peer-queue while the log is not durable");
    if (P->scratch.cap > (1u << 20))
        crdt_buf_free(&P->scratch);
}

/* ---- catch-up and repairs: messages built when the socket can take them ---------------------- */

typedef struct feed_ctx {
    gw_peers_t *P;
    crdt_buf_t *b;
    uint32_t count;
    uint64_t durable;
} feed_ctx_t;

static int feed_cb(const void *key, size_t klen, uint64_t seq, const crdt_obj_t *state, void *ud)
{
    feed_ctx_t *c = ud;
    if (seq > c->durable)
        return 1; /* not durable yet: it goes live or in the next round */
    c->P->scratch.len = 0;
    if (crdt_obj_encode(state, &c->P->scratch) < 0)
        return 2;
    size_t need = c->P->scratch.len + klen + 24;
    if (need > PW_MAX_MESSAGE - PW_DELTAS_HDR) {
        gw_log("peers: the state of a key (%zu bytes) is larger than a peer message may be; "
               "not replicated",
               c->P->scratch.len);
        return 0;
    }
    if (c->count && c->b->len - LWS_PRE + need > PW_BATCH_BYTES)
        return 3;
    if (pw_put_entry(c->b, true, seq, key, klen, c->P->scratch.data, c->P->scratch.len))
        return 2;
    c->count++;
    return 0;
}

/* Builds the next catch-up message of l into *out (NULL when there is nothing to send); switches
 * the link to live once it reached our durable seq. */
static int catchup_next(peer_link_t *l, pframe_t **out)
{
    gw_peers_t *P = l->P;
    crdt_replica_t *r = P->s->replica;
    *out = NULL;
    uint64_t D = crdt_replica_durable_seq(r);
    crdt_buf_t b = {0};
    if (crdt_buf_reserve(&b, LWS_PRE + PW_BATCH_BYTES + 64))
        return CRDT_ENOMEM;
    memset(b.data, 0, LWS_PRE + PW_DELTAS_HDR);
    b.data[LWS_PRE] = PW_DELTAS;
    b.len = LWS_PRE + PW_DELTAS_HDR;
    feed_ctx_t c = {P, &b, 0, D};
    uint64_t next = l->cursor;
    int rc = crdt_replica_changes(r, l->cursor, PW_BATCH_COUNT, feed_cb, &c, &next);
    if (rc == 2) {
        crdt_buf_free(&b);
        return CRDT_ENOMEM;
    }
    /* rc 1: stopped at the first key whose change is not durable yet, so everything through D
     * went; rc 0: the feed is exhausted (next = last_seq) or the count limit was reached */
    uint64_t through = rc == 1 ? D : next < D ? next : D;
    if (through < l->cursor)
        through = l->cursor;
    if (c.count || through > l->cursor) {
        pw_store_u64(b.data + LWS_PRE + PW_D_FROM, l->cursor);
        pw_store_u64(b.data + LWS_PRE + PW_D_THROUGH, through);
        pw_store_u32(b.data + LWS_PRE + PW_D_COUNT, c.count);
        pframe_t *f = frame_adopt(&b);
        if (!f) {
            crdt_buf_free(&b);
            return CRDT_ENOMEM;
        }
        f->through = through;
        f->count = c.count;
        *out = f;
    }
    crdt_buf_free(&b);
    l->cursor = through;
    if (l->cursor >= D && D >= P->complete_after) {
        /* From here the outbox carries every change after D (see the release rule). */
        l->live = true;
        l->overflow_logged = false;
        ae_maybe_first(l);
    }
    return 0;
}

typedef struct repair_ctx {
    gw_peers_t *P;
    crdt_buf_t *b;
    uint32_t count;
    bool full;
} repair_ctx_t;

static int repair_key_cb(const void *key, size_t klen, void *ud)
{
    repair_ctx_t *c = ud;
    const crdt_obj_t *o = crdt_replica_get(c->P->s->replica, key, klen);
    if (!o)
        return 0;
    c->P->scratch.len = 0;
    if (crdt_obj_encode(o, &c->P->scratch) < 0)
        return 0;
    size_t need = c->P->scratch.len + klen + 24;
    if (need > PW_MAX_MESSAGE - PW_REPAIR_HDR)
        return 0;
    if (c->count && c->b->len - LWS_PRE + need > PW_BATCH_BYTES) {
        c->full = true;
        return 1;
    }
    if (pw_put_entry(c->b, false, 0, key, klen, c->P->scratch.data, c->P->scratch.len))
        return 1;
    c->count++;
    return 0;
}

static int repair_next(peer_link_t *l, pframe_t **out)
{
    *out = NULL;
    crdt_buf_t b = {0};
    if (crdt_buf_reserve(&b, LWS_PRE + PW_BATCH_BYTES + 64))
        return CRDT_ENOMEM;
    memset(b.data, 0, LWS_PRE + PW_REPAIR_HDR);
    b.data[LWS_PRE] = PW_REPAIR;
    b.len = LWS_PRE + PW_REPAIR_HDR;
    repair_ctx_t c = {l->P, &b, 0, false};
    while (l->repair_pos < l->nrepair) {
        uint32_t before = c.count;
        size_t blen = b.len;
        peer_index_keys(l->P->pix, l->repair_ids[l->repair_pos], repair_key_cb, &c);
        if (c.full) {
            /* keys of one id travel together: roll back a partly added id */
            b.len = blen;
            c.count = before;
            break;
        }
        l->repair_pos++;
    }
    if (l->repair_pos >= l->nrepair) {
        free(l->repair_ids);
        l->repair_ids = NULL;
        l->nrepair = l->repair_pos = 0;
    }
    if (!c.count) {
        crdt_buf_free(&b);
        return 0;
    }
    pw_store_u32(b.data + LWS_PRE + 1, c.count);
    pframe_t *f = frame_adopt(&b);
    if (!f) {
        crdt_buf_free(&b);
        return CRDT_ENOMEM;
    }
    f->count = c.count;
    if (l->rec)
        l->rec->keys_repair_sent += c.count;
    *out = f;
    return 0;
}

/* ---- anti-entropy --------------------------------------------------------------------------- */

static crdt_rsx_session_t *ae_session(peer_link_t *l, bool initiator)
{
    gw_peers_t *P = l->P;
    if (P->sessions == 0)
        peer_index_refresh(P->pix); /* nobody borrows the index: bring it up to date */
    crdt_rsx_config_t cfg;
    crdt_rsx_config_init(&cfg);
    cfg.max_msg = PW_MAX_MESSAGE - 1;
    if (gw_random(&cfg.seed, sizeof(cfg.seed)))
        cfg.seed = 0;
    crdt_rsx_session_t *ss = crdt_rsx_session_new(peer_index_rsx(P->pix), initiator, &cfg);
    if (ss)
        P->sessions++;
    return ss;
}

static int queue_ae(peer_link_t *l, const crdt_buf_t *msg)
{
    crdt_buf_t b = {0};
    int rc = pw_put_u8(&b, PW_AE) || crdt_buf_append(&b, msg->data, msg->len) ? CRDT_ENOMEM : 0;
    if (!rc)
        rc = queue_ctl(l, &b);
    crdt_buf_free(&b);
    return rc;
}

static void ae_start(peer_link_t *l)
{
    if (l->ae && now_ms() - l->ae_started_ms > AE_TIMEOUT_MS) {
        /* a lost message (or a stuck peer) must not freeze the index for ever */
        char name[300];
        gw_log("peer %s: anti-entropy session unanswered for %d s; starting over",
               rec_name(l->rec, l, name, sizeof(name)), AE_TIMEOUT_MS / 1000);
        ae_end(l);
    }
    if (l->ae || l->nrepair || l->state != LK_UP || l->closing)
        return;
    l->ae = ae_session(l, true);
    crdt_buf_t m = {0};
    if (!l->ae || crdt_rsx_initiate(l->ae, &m) || queue_ae(l, &m)) {
        ae_end(l);
        gw_log("peers: out of memory starting anti-entropy");
        crdt_buf_free(&m);
        return;
    }
    l->ae_started_ms = now_ms();
    crdt_buf_free(&m);
}

/* The first session of an outbound link, once we sent our catch-up and applied theirs. */
static void ae_maybe_first(peer_link_t *l)
{
    if (l->ae_first_due && l->live && l->applied >= l->remote_durable) {
        l->ae_first_due = false;
        ae_start(l);
    }
}

static void ae_timer_cb(lws_sorted_usec_list_t *sul)
{
    peer_link_t *l = lws_container_of(sul, peer_link_t, sul_ae);
    l->ae_first_due = false;
    ae_start(l);
    if (l->P->s->cfg.anti_entropy_secs)
        lws_sul_schedule(l->P->s->ctx, 0, &l->sul_ae, ae_timer_cb,
                         (lws_usec_t)l->P->s->cfg.anti_entropy_secs * 1000000);
}

/* The session is done on this side: send the states of the differing keys we hold. */
static void ae_finish(peer_link_t *l)
{
    const crdt_rsx_diff_t *d;
    size_t n = crdt_rsx_session_diffs(l->ae, &d);
    size_t k = 0;
    for (size_t i = 0; i < n; i++)
        k += (d[i].flags & CRDT_RSX_WE_HAVE) != 0;
    if (k) {
        uint64_t *ids = malloc(k * sizeof(*ids));
        if (ids) {
            size_t j = 0;
            for (size_t i = 0; i < n; i++)
                if (d[i].flags & CRDT_RSX_WE_HAVE)
                    ids[j++] = d[i].id;
            free(l->repair_ids);
            l->repair_ids = ids;
            l->nrepair = k;
            l->repair_pos = 0;
        }
    }
    if (l->rec)
        l->rec->ae_rounds++;
    crdt_rsx_stats_t st;
    crdt_rsx_session_stats(l->ae, &st);
    if (l->P->s->cfg.verbose || n) {
        char name[300];
        gw_log("peer %s: anti-entropy round: %zu keys differ (%zu to send), %" PRIu64
               " messages, %" PRIu64 "/%" PRIu64 " bytes out/in",
               rec_name(l->rec, l, name, sizeof(name)), n, k, st.msgs_sent + st.msgs_received,
               st.bytes_sent, st.bytes_received);
    }
    ae_end(l);
    link_want_write(l);
}

static void on_ae(peer_link_t *l, const uint8_t *m, size_t n)
{
    /* a first message (kind 1) opens a new session on the responder */
    if (n >= 2 && m[1] == 1 && !l->outbound) {
        ae_end(l);
        l->ae = ae_session(l, false);
        l->ae_started_ms = now_ms();
        if (!l->ae) {
            gw_log("peers: out of memory for anti-entropy");
            return;
        }
    }
    if (!l->ae) {
        link_close(l, PW_R_PROTOCOL, false, "anti-entropy message outside a session");
        return;
    }
    crdt_buf_t reply = {0};
    bool done = false;
    crdt_error_t err = {0};
    int rc = crdt_rsx_receive(l->ae, m, n, &reply, &done, &err);
    if (rc < 0) {
        crdt_buf_free(&reply);
        ae_end(l);
        link_close(l, PW_R_PROTOCOL, false, "bad anti-entropy message: %s (byte %zu)",
                   err.text[0] ? err.text : crdt_strerror(rc), err.offset);
        return;
    }
    if (reply.len && queue_ae(l, &reply)) {
        crdt_buf_free(&reply);
        ae_end(l);
        link_close(l, 0, false, "out of memory in anti-entropy");
        return;
    }
    crdt_buf_free(&reply);
    if (done)
        ae_finish(l);
}

/* ---- receiving data ------------------------------------------------------------------------- */

/* Applies every entry (a DELTAS or REPAIR message); false after closing the link. */
static bool apply_entries(peer_link_t *l, pw_reader_t *rd, uint32_t count, bool with_seq,
                          bool repair)
{
    gw_server_t *s = l->P->s;
    for (uint32_t i = 0; i < count; i++) {
        pw_entry_t e;
        const char *why = NULL;
        if (!pw_get_entry(rd, with_seq, &e, &why)) {
            link_close(l, PW_R_PROTOCOL, false, "malformed %s message: %s",
                       repair ? "repair" : "deltas", why);
            return false;
        }
        crdt_error_t err = {0};
        crdt_obj_t *o = crdt_obj_decode(e.obj, e.olen, &err);
        if (!o) {
            link_close(l, PW_R_PROTOCOL, false, "undecodable object in a %s message: %s",
                       repair ? "repair" : "deltas", err.text);
            return false;
        }
        uint64_t seq = 0;
        int rc = crdt_replica_apply(s->replica, e.key, e.klen, o, l->rec ? l->rec->node_id : 0, &seq);
        crdt_obj_free(o);
        if (rc == CRDT_ETYPE) {
            if (l->rec && l->rec->type_conflicts++ < 10)
                gw_log("peers: key %.*s holds another type here than on the peer; not joined",
                       (int)(e.klen > 64 ? 64 : e.klen), (const char *)e.key);
        } else if (rc == 1 && repair && l->rec) {
            l->rec->keys_repaired++;
        }
    }
    if (pw_left(rd)) {
        link_close(l, PW_R_PROTOCOL, false, "trailing bytes after %u entries", count);
        return false;
    }
    gw_loop_schedule_flush(s);
    return true;
}

static void on_deltas(peer_link_t *l, const uint8_t *m, size_t n)
{
    pw_reader_t rd;
    uint8_t type;
    uint64_t from, through;
    uint32_t count;
    pw_reader_init(&rd, m, n);
    if (!pw_get_u8(&rd, &type) || !pw_get_u64(&rd, &from) || !pw_get_u64(&rd, &through) ||
        !pw_get_u32(&rd, &count)) {
        link_close(l, PW_R_PROTOCOL, false, "truncated deltas message");
        return;
    }
    if (from > l->rx_through) {
        /* TCP does not lose bytes, but a middlebox can: resume from our durable mark instead */
        link_close(l, 0, false,
                   "gap in the delta stream (got seqs after %" PRIu64 ", have through %" PRIu64 ")",
                   from, l->rx_through);
        return;
    }
    if (through > l->rx_through)
        l->rx_through = through;
    if (!apply_entries(l, &rd, count, true, false))
        return;
    if (l->rec)
        l->rec->deltas_received += count;
    if (through <= l->applied)
        return;
    /* acknowledged once our log holds what this batch changed */
    uint64_t local = crdt_replica_last_seq(l->P->s->replica);
    if (l->npend && l->npend >= PEND_MAX) {
        l->pend[l->npend - 1] = (pend_t){through, local}; /* coarser, never wrong */
        return;
    }
    if (l->npend == l->cap_pend) {
        size_t c = l->cap_pend ? l->cap_pend * 2 : 16;
        pend_t *v = realloc(l->pend, c * sizeof(*v));
        if (!v) {
            link_close(l, 0, false, "out of memory");
            return;
        }
        l->pend = v;
        l->cap_pend = c;
    }
    l->pend[l->npend++] = (pend_t){through, local};
    gw_peer_on_durable(l->P->s); /* --no-persist: durable at once */
}

static void on_repair(peer_link_t *l, const uint8_t *m, size_t n)
{
    pw_reader_t rd;
    uint8_t type;
    uint32_t count;
    pw_reader_init(&rd, m, n);
    if (!pw_get_u8(&rd, &type) || !pw_get_u32(&rd, &count)) {
        link_close(l, PW_R_PROTOCOL, false, "truncated repair message");
        return;
    }
    apply_entries(l, &rd, count, false, true);
}

void gw_peer_on_durable(gw_server_t *s)
{
    gw_peers_t *P = s->peers;
    if (!P)
        return;
    uint64_t D = crdt_replica_durable_seq(s->replica);
    for (int i = 0; i < MAX_LINKS; i++) {
        peer_link_t *l = P->links[i];
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
            link_want_write(l);
            ae_maybe_first(l);
        }
    }
    outbox_release(P, false);
    wake_catchup(P);
}

/* ---- handshake ------------------------------------------------------------------------------ */

/* The record of node (a dial slot that met it, or one met inbound), created if needed. */
static peer_rec_t *rec_for_node(gw_peers_t *P, uint64_t node)
{
    for (int i = 0; i < MAX_RECS; i++)
        if (P->recs[i].used && P->recs[i].node_id == node)
            return &P->recs[i];
    for (int i = P->ndial; i < MAX_RECS; i++)
        if (!P->recs[i].used) {
            memset(&P->recs[i], 0, sizeof(P->recs[i]));
            P->recs[i].P = P;
            P->recs[i].used = true;
            P->recs[i].node_id = node;
            return &P->recs[i];
        }
    return NULL;
}

/* Both ends agree on which of two links between them stays: the one dialled by the lower id. */
static bool keep_new_link(const gw_peers_t *P, const peer_link_t *l)
{
    uint64_t me = P->s->cfg.node_id;
    bool i_dial_kept = me < l->remote_node;
    return l->outbound == i_dial_kept;
}

static void link_up(peer_link_t *l, uint64_t their_resume)
{
    gw_peers_t *P = l->P;
    crdt_replica_t *r = P->s->replica;
    peer_rec_t *rec;
    if (l->outbound) {
        rec = l->rec;
        if (rec->node_id && rec->node_id != l->remote_node)
            gw_log("peer %s: now node %" PRIu64 " (was node %" PRIu64 ")", rec->url, l->remote_node,
                   rec->node_id);
        rec->node_id = l->remote_node;
        /* merge a record made when that node dialled us first */
        for (int i = P->ndial; i < MAX_RECS; i++) {
            peer_rec_t *q = &P->recs[i];
            if (!q->used || q->node_id != l->remote_node)
                continue;
            rec->bytes_sent += q->bytes_sent;
            rec->bytes_received += q->bytes_received;
            rec->deltas_sent += q->deltas_sent;
            rec->deltas_received += q->deltas_received;
            rec->ups += q->ups;
            rec->ae_rounds += q->ae_rounds;
            rec->keys_repaired += q->keys_repaired;
            rec->keys_repair_sent += q->keys_repair_sent;
            if (q->link) {
                rec->link = q->link;
                q->link->rec = rec;
            }
            q->used = false;
        }
    } else {
        rec = rec_for_node(P, l->remote_node);
        if (!rec) {
            link_close(l, PW_R_BUSY, false, "too many peers");
            return;
        }
        l->rec = rec;
    }
    if (rec->link && rec->link != l) {
        peer_link_t *other = rec->link;
        if (keep_new_link(P, l)) {
            if (other->outbound)
                rec->standby = true;
            link_close(other, 0, PW_BYE_DUPLICATE,
                       "duplicate link to node %" PRIu64 ", keeping the one node %" PRIu64
                       " dialled",
                       l->remote_node,
                       P->s->cfg.node_id < l->remote_node ? P->s->cfg.node_id : l->remote_node);
            rec->link = NULL;
        } else {
            if (l->outbound)
                rec->standby = true;
            link_close(l, 0, PW_BYE_DUPLICATE,
                       "duplicate link to node %" PRIu64 ", keeping the one node %" PRIu64
                       " dialled",
                       l->remote_node,
                       P->s->cfg.node_id < l->remote_node ? P->s->cfg.node_id : l->remote_node);
            return;
        }
    }
    rec->link = l;
    rec->ups++;
    rec->attempts = 0;
    if (l->outbound)
        rec->standby = false;
    rec->outbound_up = l->outbound;
    rec->last_error[0] = '\0';
    snprintf(rec->address, sizeof(rec->address), "%s", l->addr);
    l->state = LK_UP;
    crdt_buf_free(&l->transcript);
    /* resume: they durably hold our changes through their_resume (in our current epoch) */
    uint64_t last = crdt_replica_last_seq(r);
    l->cursor = their_resume <= last ? their_resume : 0;
    l->sent_through = l->cursor;
    l->live = false;
    rec->ack_received = l->cursor;
    rec->ack_received_known = true;
    l->applied = mark_get(P, l->remote_node, l->remote_epoch);
    l->rx_through = l->applied; /* what we told the peer to resume from */
    rec->ack_sent = l->applied;
    char name[300];
    gw_log("peer %s: link up with node %" PRIu64 " (%s), resuming after seq %" PRIu64
           " of %" PRIu64,
           rec_name(rec, l, name, sizeof(name)), l->remote_node,
           l->outbound ? "outbound" : "inbound", l->cursor, last);
    link_want_write(l);
    if (l->outbound) {
        /* The on-connect session runs once both catch-ups are done: run at once, it would find
         * every key the feed is about to carry and send it twice. The periodic timer (or a 5 s
         * fallback without one) starts a session regardless. */
        l->ae_first_due = true;
        ae_maybe_first(l);
        lws_sul_schedule(
            P->s->ctx, 0, &l->sul_ae, ae_timer_cb,
            (lws_usec_t)(P->s->cfg.anti_entropy_secs ? P->s->cfg.anti_entropy_secs : 5) * 1000000);
    }
    schedule_batch(P);
}

static int send_challenge(peer_link_t *l)
{
    gw_peers_t *P = l->P;
    pw_challenge_t c = {
        PW_VERSION, P->s->cfg.node_id, P->epoch, crdt_replica_durable_seq(P->s->replica), {0}};
    if (gw_random(l->nonce, PW_NONCE_LEN))
        return -1;
    memcpy(c.nonce, l->nonce, PW_NONCE_LEN);
    l->transcript.len = 0;
    if (pw_encode_challenge(&l->transcript, &c))
        return -1;
    return queue_ctl(l, &l->transcript);
}

static void on_challenge(peer_link_t *l, const uint8_t *m, size_t n)
{
    gw_peers_t *P = l->P;
    pw_challenge_t c;
    const char *why = "?";
    int rc = pw_decode_challenge(m, n, &c, &why);
    if (rc == -2) {
        link_close(l, PW_R_VERSION, false, "incompatible protocol version %u (we speak %u)",
                   c.version, PW_VERSION);
        return;
    }
    if (rc) {
        link_close(l, PW_R_PROTOCOL, false, "bad handshake: %s", why);
        return;
    }
    if (c.node_id == P->s->cfg.node_id) {
        link_close(l, PW_R_SELF, false, "the peer has our node id %" PRIu64 " (is it us?)",
                   c.node_id);
        return;
    }
    l->got_challenge = true;
    l->remote_node = c.node_id;
    l->remote_epoch = c.epoch;
    l->remote_durable = c.durable;
    pw_hello_t h;
    memset(&h, 0, sizeof(h));
    h.version = PW_VERSION;
    snprintf(h.cluster, sizeof(h.cluster), "%s", P->s->cfg.cluster);
    h.node_id = P->s->cfg.node_id;
    h.epoch = P->epoch;
    h.durable = crdt_replica_durable_seq(P->s->replica);
    if (gw_random(l->nonce, PW_NONCE_LEN)) {
        link_close(l, 0, false, "no random bytes");
        return;
    }
    memcpy(h.nonce, l->nonce, PW_NONCE_LEN);
    h.resume = mark_get(P, c.node_id, c.epoch);
    l->transcript.len = 0;
    crdt_buf_t hello = {0};
    if (crdt_buf_append(&l->transcript, m, n) || pw_encode_hello_body(&hello, &h) ||
        crdt_buf_append(&l->transcript, hello.data, hello.len)) {
        crdt_buf_free(&hello);
        link_close(l, 0, false, "out of memory");
        return;
    }
    uint8_t proof[PW_PROOF_LEN];
    pw_proof(P->secret, P->slen, false, &l->transcript, proof);
    if (crdt_buf_append(&hello, proof, PW_PROOF_LEN) ||
        crdt_buf_append(&l->transcript, proof, PW_PROOF_LEN) || queue_ctl(l, &hello))
        link_close(l, 0, false, "out of memory");
    crdt_buf_free(&hello);
}

static void on_hello(peer_link_t *l, const uint8_t *m, size_t n)
{
    gw_peers_t *P = l->P;
    pw_hello_t h;
    size_t body = 0;
    const char *why = "?";
    int rc = pw_decode_hello(m, n, &h, &body, &why);
    if (rc == -2) {
        link_close(l, PW_R_VERSION, false, "incompatible protocol version %u (we speak %u)",
                   h.version, PW_VERSION);
        return;
    }
    if (rc) {
        link_close(l, PW_R_PROTOCOL, false, "bad handshake: %s", why);
        return;
    }
    if (strcmp(h.cluster, P->s->cfg.cluster)) {
        link_close(l, PW_R_CLUSTER, false,
                   "cluster mismatch: the peer is in \"%s\", we are in \"%s\"", h.cluster,
                   P->s->cfg.cluster);
        return;
    }
    if (crdt_buf_append(&l->transcript, m, body)) {
        link_close(l, 0, false, "out of memory");
        return;
    }
    uint8_t want[PW_PROOF_LEN];
    pw_proof(P->secret, P->slen, false, &l->transcript, want);
    if (!gw_ct_equal(want, h.proof, PW_PROOF_LEN)) {
        link_close(l, PW_R_PROOF, false,
                   "wrong proof of the cluster secret from node %" PRIu64
                   " (different --peer-secret-file?)",
                   h.node_id);
        return;
    }
    if (h.node_id == P->s->cfg.node_id) {
        link_close(l, PW_R_SELF, false, "the peer has our node id %" PRIu64, h.node_id);
        return;
    }
    l->remote_node = h.node_id;
    l->remote_epoch = h.epoch;
    l->remote_durable = h.durable;
    pw_welcome_t w = {mark_get(P, h.node_id, h.epoch), {0}};
    crdt_buf_t msg = {0};
    uint8_t proof[PW_PROOF_LEN];
    if (crdt_buf_append(&l->transcript, h.proof, PW_PROOF_LEN) ||
        pw_encode_welcome_body(&msg, &w) || crdt_buf_append(&l->transcript, msg.data, msg.len)) {
        crdt_buf_free(&msg);
        link_close(l, 0, false, "out of memory");
        return;
    }
    pw_proof(P->secret, P->slen, true, &l->transcript, proof);
    if (crdt_buf_append(&msg, proof, PW_PROOF_LEN) || queue_ctl(l, &msg)) {
        crdt_buf_free(&msg);
        link_close(l, 0, false, "out of memory");
        return;
    }
    crdt_buf_free(&msg);
    link_up(l, h.resume);
}

static void on_welcome(peer_link_t *l, const uint8_t *m, size_t n)
{
    gw_peers_t *P = l->P;
    pw_welcome_t w;
    size_t body = 0;
    const char *why = "?";
    if (pw_decode_welcome(m, n, &w, &body, &why)) {
        link_close(l, PW_R_PROTOCOL, false, "bad handshake: %s", why);
        return;
    }
    if (crdt_buf_append(&l->transcript, m, body)) {
        link_close(l, 0, false, "out of memory");
        return;
    }
    uint8_t want[PW_PROOF_LEN];
    pw_proof(P->secret, P->slen, true, &l->transcript, want);
    if (!gw_ct_equal(want, w.proof, PW_PROOF_LEN)) {
        link_close(l, PW_R_PROOF, false,
                   "wrong proof of the cluster secret from the server (different "
                   "--peer-secret-file?)");
        return;
    }
    link_up(l, w.resume);
}

/* ---- messages ------------------------------------------------------------------------------- */

static void on_message(peer_link_t *l, const uint8_t *m, size_t n)
{
    char name[300];
    if (!n) {
        link_close(l, PW_R_PROTOCOL, false, "empty message");
        return;
    }
    uint8_t type = m[0];
    if (type == PW_REFUSE) {
        uint8_t code = 0;
        char text[160] = "";
        pw_decode_refuse(m, n, &code, text, sizeof(text));
        gw_log("peer %s: refused by the peer: %s (%s)", rec_name(l->rec, l, name, sizeof(name)),
               pw_refuse_text(code), text);
        if (l->rec)
            snprintf(l->rec->last_error, sizeof(l->rec->last_error), "refused by the peer: %s",
                     text[0] ? text : pw_refuse_text(code));
        if (l->rec && code != PW_R_PROTOCOL && code != PW_R_BUSY)
            l->rec->attempts = 8; /* a configuration fault: retry, but only every ~10 s */
        l->closing = true;        /* nothing more to send */
        fifo_clear(&l->ctl);
        link_want_write(l);
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
            link_close(l, PW_R_PROTOCOL, false, "unexpected message type %u during the handshake",
                       type);
        return;
    }
    switch (type) {
    case PW_DELTAS: on_deltas(l, m, n); break;
    case PW_REPAIR: on_repair(l, m, n); break;
    case PW_AE: on_ae(l, m + 1, n - 1); break;
    case PW_PING:
        if (n != 1)
            link_close(l, PW_R_PROTOCOL, false, "malformed ping");
        break;
    case PW_ACK: {
        pw_reader_t rd;
        uint8_t t;
        uint64_t v;
        pw_reader_init(&rd, m, n);
        if (!pw_get_u8(&rd, &t) || !pw_get_varint(&rd, &v) || pw_left(&rd)) {
            link_close(l, PW_R_PROTOCOL, false, "malformed ack");
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
            gw_log("peer %s: the peer keeps its own link to us (duplicate)",
                   rec_name(l->rec, l, name, sizeof(name)));
        } else {
            gw_log("peer %s: the peer closes the link (%s)",
                   rec_name(l->rec, l, name, sizeof(name)),
                   code == PW_BYE_SHUTDOWN    ? "shutting down"
                   : code == PW_BYE_DUPLICATE ? "duplicate link, keeping the other"
                                              : "bye");
        }
        l->closing = true;
        fifo_clear(&l->ctl);
        link_want_write(l);
        break;
    }
    default: link_close(l, PW_R_PROTOCOL, false, "unknown message type %u", type); break;
    }
}

static int on_receive(peer_link_t *l, struct lws *wsi, const void *in, size_t len)
{
    if (l->closing)
        return 0;
    l->last_rx_ms = now_ms();
    if (l->rec)
        l->rec->bytes_received += len;
    if (lws_is_first_fragment(wsi))
        l->rx.len = 0;
    if (!lws_frame_is_binary(wsi)) {
        link_close(l, PW_R_PROTOCOL, false, "text message on a binary protocol");
        return 0;
    }
    size_t limit = l->state == LK_UP ? PW_MAX_MESSAGE : HANDSHAKE_MAX;
    size_t total = l->rx.len + len + lws_remaining_packet_payload(wsi);
    if (total > limit) {
        link_close(l, PW_R_PROTOCOL, false, "message of more than %zu bytes (limit %zu)", total,
                   limit);
        return 0;
    }
    if (crdt_buf_append(&l->rx, in, len)) {
        link_close(l, 0, false, "out of memory receiving a message");
        return 0;
    }
    if (!lws_is_final_fragment(wsi) || lws_remaining_packet_payload(wsi))
        return 0;
    on_message(l, l->rx.data, l->rx.len);
    l->rx.len = 0;
    if (l->rx.cap > (1u << 20))
        crdt_buf_free(&l->rx);
    return 0;
}

/* ---- sending -------------------------------------------------------------------------------- */

static bool link_has_output(const peer_link_t *l)
{
    if (l->ctl.head || l->closing)
        return true;
    if (l->state != LK_UP)
        return false;
    return l->ack_due || l->nrepair || (!l->live && !l->catchup_idle) || l->data.head;
}

static int write_frame(peer_link_t *l, pframe_t *f)
{
    uint8_t *p = f->buf + LWS_PRE;
    if (l->outbound && f->refs > 1) {
        if (l->wbuf_cap < LWS_PRE + f->len) {
            uint8_t *nb = realloc(l->wbuf, LWS_PRE + f->len);
            if (!nb)
                return -1;
            l->wbuf = nb;
            l->wbuf_cap = LWS_PRE + f->len;
        }
        memcpy(l->wbuf + LWS_PRE, p, f->len);
        p = l->wbuf + LWS_PRE;
    }
    int n = lws_write(l->wsi, p, f->len, LWS_WRITE_BINARY);
    l->last_tx_ms = now_ms();
    if (n < (int)f->len)
        return -1;
    if (l->rec)
        l->rec->bytes_sent += f->len;
    return 0;
}

static int on_writable(peer_link_t *l)
{
    pframe_t *f = NULL;
    bool data = false;
    if (l->ctl.head) {
        f = fifo_pop(&l->ctl);
    } else if (l->closing) {
        return -1;
    } else if (l->state != LK_UP) {
        return 0;
    } else if (l->ack_due) {
        crdt_buf_t b = {0};
        l->ack_due = false;
        if (pw_put_u8(&b, PW_ACK) || pw_put_varint(&b, l->applied) || !(f = frame_copy(&b))) {
            crdt_buf_free(&b);
            return -1;
        }
        crdt_buf_free(&b);
        if (l->rec)
            l->rec->ack_sent = l->applied;
    } else if (l->nrepair) {
        if (repair_next(l, &f))
            return -1;
    } else if (!l->live) {
        if (catchup_next(l, &f))
            return -1;
        if (!f && !l->live)
            l->catchup_idle = true;
        data = true;
    } else if (l->data.head) {
        f = fifo_pop(&l->data);
        data = true;
    }
    if (f) {
        bool last = l->closing && !l->ctl.head;
        int rc = write_frame(l, f);
        if (data) {
            l->sent_through = f->through > l->sent_through ? f->through : l->sent_through;
            if (l->rec)
                l->rec->deltas_sent += f->count;
        }
        frame_unref(f);
        if (rc || last)
            return -1;
    }
    if (link_has_output(l))
        lws_callback_on_writable(l->wsi);
    return 0;
}

/* ---- keepalive, dialling -------------------------------------------------------------------- */

static void keepalive_cb(lws_sorted_usec_list_t *sul)
{
    peer_link_t *l = lws_container_of(sul, peer_link_t, sul_ka);
    uint64_t t = now_ms();
    if (!l->ws_open && t - l->t_open_ms > HANDSHAKE_SECS * 1000) {
        /* Still connecting or upgrading: lws 4.1 reports nothing when such a client wsi dies of
         * a timeout, so abandon it first (its callbacks then find no link) and kill it. */
        char name[300];
        gw_log("peer %s: no WebSocket upgrade within %d s; retrying",
               rec_name(l->rec, l, name, sizeof(name)), HANDSHAKE_SECS);
        if (l->rec)
            snprintf(l->rec->last_error, sizeof(l->rec->last_error),
                     "no WebSocket upgrade within %d s", HANDSHAKE_SECS);
        struct lws *w = l->wsi;
        link_free(l, true);
        if (w)
            lws_set_timeout(w, PENDING_TIMEOUT_USER_OK, LWS_TO_KILL_SYNC);
        return;
    }
    if (l->state != LK_UP && t - l->t_open_ms > HANDSHAKE_SECS * 1000) {
        link_close(l, PW_R_PROTOCOL, false, "no handshake within %d s", HANDSHAKE_SECS);
    } else if (l->ae && t - l->ae_started_ms > AE_TIMEOUT_MS) {
        char name[300];
        gw_log("peer %s: anti-entropy session unanswered for %d s; abandoned",
               rec_name(l->rec, l, name, sizeof(name)), AE_TIMEOUT_MS / 1000);
        ae_end(l);
    } else if (l->state == LK_UP && t - l->last_rx_ms > DEAD_MS) {
        link_close(l, 0, false, "nothing received for %.1f s", (double)(t - l->last_rx_ms) / 1e3);
    } else if (l->state == LK_UP && t - l->last_tx_ms >= KEEPALIVE_MS && !l->ctl.head &&
               !l->closing) {
        crdt_buf_t b = {0};
        if (!pw_put_u8(&b, PW_PING))
            queue_ctl(l, &b);
        crdt_buf_free(&b);
    }
    if (!l->closing)
        lws_sul_schedule(l->P->s->ctx, 0, &l->sul_ka, keepalive_cb, KEEPALIVE_MS * 500);
}

static void dial_cb(lws_sorted_usec_list_t *sul)
{
    peer_rec_t *rec = lws_container_of(sul, peer_rec_t, sul_dial);
    gw_peers_t *P = rec->P;
    rec->dial_scheduled = false;
    if (rec->dial || P->s->stopping)
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
    peer_link_t *l = link_new(P, NULL, true, rec);
    if (!l) {
        schedule_dial(rec, BACKOFF_MAX_MS);
        return;
    }
    snprintf(l->addr, sizeof(l->addr), "%s:%d", rec->host, rec->port);
    rec->dial = l;
    rec->attempts++;
    struct lws_client_connect_info ci;
    memset(&ci, 0, sizeof(ci));
    ci.context = P->s->ctx;
    ci.vhost = P->s->vh_main;
    ci.address = rec->host;
    ci.port = rec->port;
    ci.path = rec->path;
    ci.host = rec->host;
    ci.origin = rec->host;
    ci.protocol = GW_PEER_PROTOCOL;
    ci.local_protocol_name = GW_PEER_PROTOCOL;
    ci.opaque_user_data = l;
    P->connecting = l;
    P->connect_failed = false;
    struct lws *wsi = lws_client_connect_via_info(&ci);
    P->connecting = NULL;
    if (!wsi || P->connect_failed) {
        snprintf(rec->last_error, sizeof(rec->last_error), "cannot connect");
        l->wsi = NULL;
        link_free(l, true);
        return;
    }
    l->wsi = wsi;
    lws_sul_schedule(P->s->ctx, 0, &l->sul_ka, keepalive_cb, KEEPALIVE_MS * 500);
}

/* Schedules a dial; delay 0 means "the next backoff step". */
static void schedule_dial(peer_rec_t *rec, unsigned delay_ms)
{
    gw_peers_t *P = rec->P;
    if (P->s->stopping || rec->dial_scheduled)
        return;
    if (!delay_ms) {
        unsigned n = rec->attempts < 8 ? rec->attempts : 8;
        uint64_t d = (uint64_t)BACKOFF_MIN_MS << n;
        if (d > BACKOFF_MAX_MS)
            d = BACKOFF_MAX_MS;
        uint32_t rnd = 0;
        gw_random(&rnd, sizeof(rnd));
        /* jitter: anywhere in [d/2, d], so peers restarted together do not dial in step */
        delay_ms = (unsigned)(d / 2 + rnd % (d / 2 + 1));
    }
    rec->dial_scheduled = true;
    lws_sul_schedule(P->s->ctx, 0, &rec->sul_dial, dial_cb, (lws_usec_t)delay_ms * 1000);
}

/* ---- the lws protocol callback -------------------------------------------------------------- */

int gw_peer_callback(struct lws *wsi, enum lws_callback_reasons reason, void *user, void *in,
                     size_t len)
{
    (void)user;
    gw_server_t *s = lws_context_user(lws_get_context(wsi));
    gw_peers_t *P = s ? s->peers : NULL;
    peer_link_t *l = lws_get_opaque_user_data(wsi);

    switch (reason) {
    case LWS_CALLBACK_ESTABLISHED: {
        char addr[64] = "?";
        lws_get_peer_simple(wsi, addr, sizeof(addr));
        if (!P) {
            gw_log("peer %s (inbound): refused: replication is off here (no --peer-secret-file "
                   "or $CRDTD_PEER_SECRET)",
                   addr);
            return -1;
        }
        if (P->s->stopping)
            return -1;
        l = link_new(P, wsi, false, NULL);
        if (!l) {
            gw_log("peer %s (inbound): refused: too many links (%d)", addr, MAX_LINKS);
            return -1;
        }
        snprintf(l->addr, sizeof(l->addr), "%s", addr);
        l->ws_open = true;
        lws_set_opaque_user_data(wsi, l);
        if (send_challenge(l)) {
            link_free(l, false);
            return -1;
        }
        lws_sul_schedule(P->s->ctx, 0, &l->sul_ka, keepalive_cb, KEEPALIVE_MS * 500);
        return 0;
    }
    case LWS_CALLBACK_CLIENT_ESTABLISHED:
        if (!l)
            return -1;
        l->wsi = wsi;
        l->ws_open = true;
        l->last_rx_ms = now_ms();
        return 0;

    case LWS_CALLBACK_RECEIVE:
    case LWS_CALLBACK_CLIENT_RECEIVE:
        if (!l)
            return -1;
        return on_receive(l, wsi, in, len);

    case LWS_CALLBACK_SERVER_WRITEABLE:
    case LWS_CALLBACK_CLIENT_WRITEABLE:
        if (!l)
            return -1;
        return on_writable(l);

    case LWS_CALLBACK_CLIENT_CONNECTION_ERROR:
        if (l) {
            /* the wsi lives on until its WSI_DESTROY, which must not find the link freed here */
            lws_set_opaque_user_data(wsi, NULL);
            if (l->rec)
                snprintf(l->rec->last_error, sizeof(l->rec->last_error), "cannot connect: %s",
                         in ? (const char *)in : "?");
            if (s->cfg.verbose || (l->rec && l->rec->attempts <= 1)) {
                char name[300];
                gw_log("peer %s: cannot connect: %s (retrying)",
                       rec_name(l->rec, l, name, sizeof(name)), in ? (const char *)in : "?");
            }
            if (P && P->connecting == l) {
                P->connect_failed = true; /* dial_cb frees it when the call returns */
                return 0;
            }
            l->wsi = NULL;
            link_free(l, true);
        }
        return 0;

    case LWS_CALLBACK_CLOSED:
    case LWS_CALLBACK_CLIENT_CLOSED:
    case LWS_CALLBACK_WSI_DESTROY:
        /* WSI_DESTROY: the last word on a wsi. A client wsi killed by a timeout before its
         * upgrade completed gets neither CLIENT_CLOSED nor CONNECTION_ERROR in lws 4.1. */
        if (l) {
            char name[300];
            if (l->state == LK_UP && !l->closing)
                gw_log("peer %s: link down", rec_name(l->rec, l, name, sizeof(name)));
            if (l->rec && !l->closing && !l->rec->last_error[0])
                snprintf(l->rec->last_error, sizeof(l->rec->last_error), "connection closed");
            l->wsi = NULL;
            lws_set_opaque_user_data(wsi, NULL);
            link_free(l, true);
        }
        return 0;

    default: break;
    }
    return 0;
}

/* ---- init and shutdown ---------------------------------------------------------------------- */

static int parse_url(peer_rec_t *rec, const char *url)
{
    snprintf(rec->url, sizeof(rec->url), "%s", url);
    const char *hp = url + 5; /* config.c checked the ws:// prefix */
    const char *slash = strchr(hp, '/');
    size_t hlen = slash ? (size_t)(slash - hp) : strlen(hp);
    char hostport[256];
    if (hlen >= sizeof(hostport))
        return -1;
    memcpy(hostport, hp, hlen);
    hostport[hlen] = '\0';
    snprintf(rec->path, sizeof(rec->path), "%s", slash ? slash : "/");
    gw_addr_t a;
    memset(&a, 0, sizeof(a));
    if (gw_addr_parse(hostport, &a) || !a.port)
        return -1;
    snprintf(rec->host, sizeof(rec->host), "%s", a.host);
    rec->port = a.port;
    return 0;
}

int gw_peer_init(gw_server_t *s)
{
    uint8_t secret[1024];
    int slen = gw_load_secret(s->cfg.peer_secret_file, "CRDTD_PEER_SECRET", secret, sizeof(secret));
    if (slen < 0)
        return -1;
    if (slen == 0) {
        if (s->cfg.npeers) {
            gw_log("--peer needs the cluster secret: --peer-secret-file FILE or "
                   "$CRDTD_PEER_SECRET (at least 16 bytes)");
            return -1;
        }
        return 0; /* replication off: inbound peer links are refused */
    }
    gw_peers_t *P = calloc(1, sizeof(*P));
    if (!P) {
        gw_log("peers: out of memory");
        return -1;
    }
    P->s = s;
    memcpy(P->secret, secret, (size_t)slen);
    P->slen = (size_t)slen;
    memset(secret, 0, sizeof(secret));
    if (!s->cfg.no_persist) {
        snprintf(P->state_path, sizeof(P->state_path), "%s/%s", s->cfg.data_dir, STATE_FILE);
        marks_load(P);
    }
    while (!P->epoch)
        if (gw_random(&P->epoch, sizeof(P->epoch))) {
            gw_log("peers: no random bytes for the replication epoch");
            free(P);
            return -1;
        }
    if (P->state_path[0] && marks_write(P)) {
        free(P);
        return -1;
    }
    uint64_t t0 = gw_now_us();
    P->pix = peer_index_new(s->replica);
    if (!P->pix) {
        gw_log("peers: out of memory building the anti-entropy index");
        free(P);
        return -1;
    }
    for (int i = 0; i < s->cfg.npeers; i++) {
        peer_rec_t *rec = &P->recs[i];
        rec->P = P;
        rec->used = true;
        if (parse_url(rec, s->cfg.peers[i])) {
            gw_log("bad --peer %s", s->cfg.peers[i]);
            peer_index_free(P->pix);
            free(P);
            return -1;
        }
    }
    P->ndial = s->cfg.npeers;
    P->released_through = crdt_replica_durable_seq(s->replica);
    P->complete_after = crdt_replica_last_seq(s->replica);
    s->peers = P;
    gw_log("replication: cluster \"%s\", node %" PRIu64 ", epoch %016" PRIx64
           ", %d peer(s) to dial, anti-entropy index of %zu keys built in %.3f s",
           s->cfg.cluster, s->cfg.node_id, P->epoch, P->ndial,
           crdt_rsx_index_count(peer_index_rsx(P->pix)), (double)(gw_now_us() - t0) / 1e6);
    for (int i = 0; i < P->ndial; i++)
        schedule_dial(&P->recs[i], 1);
    return 0;
}

void gw_peer_shutdown(gw_server_t *s)
{
    gw_peers_t *P = s->peers;
    if (!P)
        return;
    for (int i = 0; i < MAX_LINKS; i++)
        if (P->links[i])
            link_free(P->links[i], false);
    for (int i = 0; i < MAX_RECS; i++)
        lws_sul_cancel(&P->recs[i].sul_dial);
    lws_sul_cancel(&P->sul_batch);
    lws_sul_cancel(&P->sul_marks);
    if (P->marks_dirty)
        marks_write(P);
    fifo_clear(&P->staged);
    crdt_buf_free(&P->open);
    crdt_buf_free(&P->scratch);
    peer_index_free(P->pix);
    memset(P->secret, 0, sizeof(P->secret));
    free(P);
    s->peers = NULL;
}

/* ---- status and metrics --------------------------------------------------------------------- */

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

/* JSON string of arbitrary bytes: escapes quotes, backslashes and control bytes; bytes >= 0x80
 * become '?' (our texts are ASCII; this only guards against odd URLs). */
static void jw_str(gw_jw_t *w, const char *s)
{
    gw_jw_raw(w, "\"", 1);
    for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
        char e[8];
        if (*p == '"' || *p == '\\') {
            e[0] = '\\';
            e[1] = (char)*p;
            gw_jw_raw(w, e, 2);
        } else if (*p < 0x20) {
            snprintf(e, sizeof(e), "\\u%04x", *p);
            gw_jw_raw(w, e, 6);
        } else {
            e[0] = *p < 0x80 ? (char)*p : '?';
            gw_jw_raw(w, e, 1);
        }
    }
    gw_jw_raw(w, "\"", 1);
}

static uint64_t rec_lag(const gw_peers_t *P, const peer_rec_t *r)
{
    uint64_t last = crdt_replica_last_seq(P->s->replica);
    return last > r->ack_received ? last - r->ack_received : 0;
}

void gw_peer_status(gw_server_t *s, gw_response_t *rs)
{
    gw_peers_t *P = s->peers;
    gw_jw_t w;
    if (!gw_jw_init(&w, 1024)) {
        gw_respond_error(rs, 500, "out of memory");
        return;
    }
    gw_jw_lit(&w, "[");
    bool first = true;
    for (int i = 0; P && i < MAX_RECS; i++) {
        const peer_rec_t *r = &P->recs[i];
        if (!r->used)
            continue;
        const peer_link_t *l = r->link ? r->link : r->dial;
        gw_jw_lit(&w, first ? "{\"url\":" : ",{\"url\":");
        first = false;
        jw_str(&w, r->url);
        gw_jw_lit(&w, ",\"address\":");
        jw_str(&w, l ? l->addr : r->address);
        gw_jw_lit(&w, ",\"node_id\":");
        gw_jw_u64(&w, r->node_id);
        gw_jw_lit(&w, ",\"direction\":");
        gw_jw_lit(&w, r->link     ? (r->link->outbound ? "\"outbound\"" : "\"inbound\"")
                      : r->dial   ? "\"outbound\""
                      : r->url[0] ? "\"outbound\""
                                  : "\"inbound\"");
        gw_jw_lit(&w, ",\"state\":\"");
        gw_jw_lit(&w, rec_state(r));
        gw_jw_lit(&w, "\",\"mode\":");
        gw_jw_lit(&w, !r->link ? "null" : r->link->live ? "\"live\"" : "\"catchup\"");
        gw_jw_lit(&w, ",\"last_ack_sent\":");
        gw_jw_u64(&w, r->ack_sent);
        gw_jw_lit(&w, ",\"last_ack_received\":");
        gw_jw_u64(&w, r->ack_received);
        gw_jw_lit(&w, ",\"lag_deltas\":");
        gw_jw_u64(&w, rec_lag(P, r));
        gw_jw_lit(&w, ",\"lag_seconds\":");
        gw_jw_double(&w, lag_seconds(P, r->ack_received));
        gw_jw_lit(&w, ",\"anti_entropy_rounds\":");
        gw_jw_u64(&w, r->ae_rounds);
        gw_jw_lit(&w, ",\"keys_repaired\":");
        gw_jw_u64(&w, r->keys_repaired);
        gw_jw_lit(&w, ",\"keys_sent_in_repairs\":");
        gw_jw_u64(&w, r->keys_repair_sent);
        gw_jw_lit(&w, ",\"deltas_sent\":");
        gw_jw_u64(&w, r->deltas_sent);
        gw_jw_lit(&w, ",\"deltas_received\":");
        gw_jw_u64(&w, r->deltas_received);
        gw_jw_lit(&w, ",\"bytes_sent\":");
        gw_jw_u64(&w, r->bytes_sent);
        gw_jw_lit(&w, ",\"bytes_received\":");
        gw_jw_u64(&w, r->bytes_received);
        gw_jw_lit(&w, ",\"connects\":");
        gw_jw_u64(&w, r->ups);
        gw_jw_lit(&w, ",\"reconnects\":");
        gw_jw_u64(&w, r->ups ? r->ups - 1 : 0);
        gw_jw_lit(&w, ",\"type_conflicts\":");
        gw_jw_u64(&w, r->type_conflicts);
        gw_jw_lit(&w, ",\"last_error\":");
        if (r->last_error[0])
            jw_str(&w, r->last_error);
        else
            gw_jw_lit(&w, "null");
        gw_jw_lit(&w, "}");
    }
    gw_jw_lit(&w, "]");
    gw_respond_jw(rs, 200, &w);
}

typedef struct mbuf {
    char *p;
    size_t len, cap;
    bool oom;
} mbuf_t;

static void mput(mbuf_t *o, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void mput(mbuf_t *o, const char *fmt, ...)
{
    if (o->oom)
        return;
    for (;;) {
        va_list ap;
        va_start(ap, fmt);
        int n = vsnprintf(o->p ? o->p + o->len : NULL, o->p ? o->cap - o->len : 0, fmt, ap);
        va_end(ap);
        if (n < 0) {
            o->oom = true;
            return;
        }
        if (o->p && o->len + (size_t)n < o->cap) {
            o->len += (size_t)n;
            return;
        }
        size_t c = (o->cap + (size_t)n + 1) * 2;
        char *q = realloc(o->p, c);
        if (!q) {
            o->oom = true;
            return;
        }
        o->p = q;
        o->cap = c;
    }
}

/* A Prometheus label value: the url, or node N for a peer that only dialled us. */
static void peer_label(const peer_rec_t *r, char *buf, size_t n)
{
    if (r->url[0]) {
        size_t k = 0;
        for (const char *p = r->url; *p && k + 2 < n; p++) {
            if (*p == '"' || *p == '\\')
                buf[k++] = '\\';
            buf[k++] = (*p >= 0x20 && *p < 0x7f) ? *p : '?';
        }
        buf[k] = '\0';
    } else {
        snprintf(buf, n, "node/%" PRIu64, r->node_id);
    }
}

char *gw_peer_metrics(gw_server_t *s)
{
    gw_peers_t *P = s->peers;
    if (!P)
        return NULL;
    mbuf_t o = {0};
    static const struct {
        const char *name, *type, *help;
    } m[] = {
        {"crdtd_peer_up", "gauge", "1 while the link to the peer is up."},
        {"crdtd_peer_lag_deltas", "gauge",
         "Our last change seq minus the peer's last ack (changes the peer has not durably "
         "applied)."},
        {"crdtd_peer_lag_seconds", "gauge", "Age of the oldest change the peer has not acked."},
        {"crdtd_peer_last_ack_sent", "gauge", "Our applied-through mark of the peer's seqs."},
        {"crdtd_peer_last_ack_received", "gauge", "The peer's applied-through mark of ours."},
        {"crdtd_peer_anti_entropy_rounds_total", "counter", "Anti-entropy sessions completed."},
        {"crdtd_peer_keys_repaired_total", "counter",
         "Keys anti-entropy received from the peer that changed our state."},
        {"crdtd_peer_keys_repair_sent_total", "counter", "Key states sent in repairs."},
        {"crdtd_peer_deltas_sent_total", "counter", "Deltas and catch-up states sent."},
        {"crdtd_peer_deltas_received_total", "counter", "Deltas and catch-up states received."},
        {"crdtd_peer_bytes_sent_total", "counter", "Message bytes sent on the peer's links."},
        {"crdtd_peer_bytes_received_total", "counter",
         "Message bytes received on the peer's links."},
        {"crdtd_peer_reconnects_total", "counter", "Times the link came up again after the first."},
    };
    for (size_t k = 0; k < sizeof(m) / sizeof(m[0]); k++) {
        mput(&o, "# HELP %s %s\n# TYPE %s %s\n", m[k].name, m[k].help, m[k].name, m[k].type);
        for (int i = 0; i < MAX_RECS; i++) {
            const peer_rec_t *r = &P->recs[i];
            if (!r->used)
                continue;
            char label[600];
            peer_label(r, label, sizeof(label));
            double v = 0;
            switch (k) {
            case 0: v = r->link ? 1 : 0; break;
            case 1: v = (double)rec_lag(P, r); break;
            case 2: v = lag_seconds(P, r->ack_received); break;
            case 3: v = (double)r->ack_sent; break;
            case 4: v = (double)r->ack_received; break;
            case 5: v = (double)r->ae_rounds; break;
            case 6: v = (double)r->keys_repaired; break;
            case 7: v = (double)r->keys_repair_sent; break;
            case 8: v = (double)r->deltas_sent; break;
            case 9: v = (double)r->deltas_received; break;
            case 10: v = (double)r->bytes_sent; break;
            case 11: v = (double)r->bytes_received; break;
            case 12: v = (double)(r->ups ? r->ups - 1 : 0); break;
            }
            mput(&o, "%s{peer=\"%s\"} %.17g\n", m[k].name, label, v);
        }
    }
    mput(&o,
         "# HELP crdtd_peer_outbox_overflows_total Times unsent deltas were dropped for the "
         "change feed.\n# TYPE crdtd_peer_outbox_overflows_total counter\n"
         "crdtd_peer_outbox_overflows_total %" PRIu64 "\n",
         P->outbox_overflows);
    if (o.oom) {
        free(o.p);
        return NULL;
    }
    return o.p;
}
