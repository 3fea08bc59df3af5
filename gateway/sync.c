/* sync.c - WebSocket client sessions (crdt.v1): hello, subscribe, apply, acks, fan-out, resume */
#include <inttypes.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>

#include "auth.h"
#include "crdt_json.h"
#include "crdt_v1.h"
#include "crdt_v1_bin.h"
#include "crypto.h"
#include "loop.h"
#include "marks.h"
#include "prom.h"
#include "sync.h"
#include "token.h"
#include "util.h"
#include "wsmsg.h"

/*
 * docs/protocol.md is the contract; this is how the server keeps it on one event loop.
 *
 * Messages. Every message is decoded and encoded by the crdt.v1 codec (proto/crdt_v1.h); this
 * file only acts on the structs. Incoming fragments are reassembled by a gw_wsrx_t (wsmsg.h),
 * bounded by --ws-max-message.
 *
 * Output. Each session has a bounded gw_wsq_t of frames (bytes counted against --ws-send-queue);
 * each LWS_CALLBACK_SERVER_WRITEABLE writes what is queued, up to GW_WS_BATCH_MAX bytes framed
 * together in one write (gw_ws_batch_*: one TLS record for a turn's acks), a bigger message
 * alone. Frames are reference counted: a live change is encoded once (its body: "key", "seq",
 * "delta") and shared by every session it goes to; the per-session part (the head with the
 * resume "cursor", the queue item's tag) is written in front of it when it is sent.
 * A crdt.v1.bin session (proto/crdt_v1_bin.h) gets change, ack and subscribed as binary messages
 * (frame meta FRAME_BIN): a live change then has two bodies, each encoded once, the JSON one for
 * JSON sessions and the binary one for binary sessions; a batch carries both kinds of message.
 *
 * Input. Over TLS, lws reads one record per poll; a session is a loop reader (loop.h), so what
 * its client wrote in a burst is read in the same turn (sharing one group commit), and it stops
 * being one while its reading is paused (an apply in flight) or it closes.
 *
 * Fan-out. Subscriptions live in one hash table of topics (an exact key or a prefix, each with its
 * array of subscribed sessions); a change looks up its key, and its prefixes of every length some
 * prefix subscription uses, so matching costs a few lookups, not a scan of the sessions.
 *
 * Catch-up. A subscribe starts a walk of the change feed from `since`, a chunk at a time, run only
 * when the session's queue is below half its bound: a big catch-up is paced by the socket. Live
 * changes keep flowing meanwhile. The cursor sent with each message is the change's seq when no
 * walk runs, else the lowest position the session's walks have reached (docs/protocol.md says why
 * resuming from it cannot miss anything).
 *
 * Acks. An apply's ack waits in a FIFO (ordered by the seq it waits for) until the store's
 * durable seq reaches it (gw_sync_on_durable, after each group commit).
 *
 * The store. Sessions read and write only through crdt_store.h (s->store): the change feed for
 * catch-ups, get and write for the op-id marks, gw_apply_op for the ops. Every call completes
 * through a callback, possibly later than the call (a store over the network), so:
 * - a session with a store call in flight is held (inflight): when lws closes it, it leaves every
 *   index at once but its memory stays (dead, on the zombie list) until the last completion,
 *   which sees it is dead, does only what the data needs (an applied op still gets its mark) and
 *   frees it;
 * - an apply runs its steps (read the mark, apply, write the mark) one after the other and the
 *   session's later messages wait behind it, in order, with reading paused: so a retry can never
 *   pass the check of the mark its original is about to write;
 * - one catch-up chunk is read at a time (walking).
 *
 * Exactly-once. The highest applied op id per (token subject, client id) is a mark (marks.h: a
 * timeline entry in an internal key per period, which expires), read before the op and written
 * right after it so one flush makes both durable.
 */

#define WALK_CHUNK 256 /* feed keys visited per catch-up step */
#define MAX_WALKS 16   /* catch-ups in progress per session */
#define MAX_ID CRDT_V1_MAX_ID
#define CLIENT_MAX CRDT_V1_CLIENT_MAX
#define FRAME_CHANGE_BODY 1   /* frame meta[0]: the frame is a change body, sent after its head */
#define FRAME_BIN 2           /* meta[0] bit: a binary message (crdt.v1.bin sessions) */
#define CLOSE_BACKSTOP_SECS 5 /* a session being closed that never becomes writable is dropped */
#define MAX_HELD 256          /* messages waiting behind an apply in flight (reading is paused) */

struct sess;

typedef struct sub_ref { /* in a topic: which session, and where the topic is in its subs[] */
    struct sess *s;
    size_t si;
} sub_ref_t;

typedef struct topic {
    struct topic *hnext;
    uint64_t hash;
    bool prefix;
    sub_ref_t *subs;
    size_t nsubs, cap;
    size_t len;
    uint8_t bytes[];
} topic_t;

typedef struct sess_sub { /* in a session: the topic, and where the session is in its subs[] */
    topic_t *t;
    size_t ti;
} sess_sub_t;

typedef struct walk {
    uint64_t id, pos;
    crdt_v1_topic_t *topics; /* taken from the decoded subscribe */
    size_t ntopics;
} walk_t;

/* a decoded message waiting for the apply in flight before it (messages run in order) */
typedef struct held {
    struct held *next;
    crdt_v1_msg_t m;
} held_t;

typedef struct sess {
    gw_server_t *srv;
    struct lws *wsi;
    void **slot; /* lws's per-session data: points back here */
    struct sess *prev, *next;
    char id[17];
    bool hello;
    char client[CLIENT_MAX + 1];
    gw_token_t tok;
    bool has_tok;
    uint64_t hello_cursor;
    /* input */
    gw_wsrx_t rx;
    unsigned nerrors;
    uint64_t opened_us, last_rx_us, last_ping_us;
    bool ping_due;
    gw_loop_reader_t rd; /* read again in the turn while input waits (loop.h) */
    /* output */
    gw_wsq_t q;
    gw_wswriter_t w;
    bool bin;         /* subprotocol crdt.v1.bin: data messages are binary (crdt_v1_bin.h) */
    gw_wswriter_t wb; /* ... written with this writer */
    /* subscriptions and catch-ups */
    sess_sub_t *subs;
    size_t nsubs, subs_cap;
    walk_t walks[MAX_WALKS];
    size_t nwalks;
    uint64_t mark; /* seq of the last change matched, so a change is sent once per session */
    /* store calls in flight: each holds the session, so a completion that comes after lws closed
     * it finds it still allocated (dead) and the last one frees it */
    unsigned inflight;
    bool dead;     /* closed by lws: only completions still refer to it (on gw_sync_t's zombies) */
    bool applying; /* an apply is in flight: later messages wait in held, in order */
    bool walking;  /* a catch-up chunk is being read from the store */
    struct apply_ctx
        *apply_c;            /* the apply and the chunk read in flight (freed at shutdown if the */
    struct walk_ctx *walk_c; /* store never completes them) */
    held_t *held_head, *held_tail;
    size_t nheld;
    bool rx_paused;
    /* closing */
    int close_code;
    char close_reason[124];
} sess_t;

typedef struct pending_ack {
    sess_t *s; /* NULL once the session closed */
    uint64_t wait, id, seq;
    bool applied, dup;
} pending_ack_t;

typedef crdt_v1_code_t err_code_t;
#define E_BAD_REQUEST CRDT_V1_E_BAD_REQUEST
#define E_UNAUTHORIZED CRDT_V1_E_UNAUTHORIZED
#define E_TOO_LARGE CRDT_V1_E_TOO_LARGE
#define E_LIMIT CRDT_V1_E_LIMIT
#define E_STORAGE CRDT_V1_E_STORAGE
#define E_EXPIRED CRDT_V1_E_EXPIRED
#define E_INTERNAL CRDT_V1_E_INTERNAL
#define E_COUNT CRDT_V1_E_COUNT

typedef struct gw_sync {
    gw_server_t *srv;
    uint8_t secret[256];
    size_t slen; /* 0: no tokens needed */
    sess_t *head;
    size_t nsessions;
    sess_t *zombies; /* closed sessions that store calls in flight still hold */
    /* topics */
    topic_t **buckets;
    size_t nbuckets, ntopics;
    unsigned *plen_count; /* per prefix length: prefix topics of that length */
    size_t *plens;        /* the lengths in use, ascending */
    size_t nplens;
    size_t max_plen;
    size_t nsubscriptions;
    gw_marks_t marks; /* the op-id marks' periods and their sweep */
    sess_t **match;   /* scratch for on_change */
    size_t match_cap;
    /* acks waiting for durability */
    pending_ack_t *acks;
    size_t ack_head, ack_len, ack_cap;
    lws_sorted_usec_list_t sul_sweep;
    /* metrics */
    uint64_t opened, msgs_in, msgs_out, bytes_in, bytes_out, applies, acks_sent, slow;
    uint64_t writable_cbs, ws_writes; /* writable callbacks, and the writes they made */
    uint64_t errors[E_COUNT];
} gw_sync_t;

static void sess_run_held(struct sess *ss);
static bool sess_live(const struct sess *ss);

/* ---- messages ------------------------------------------------------------------------------- */

/* A new frame holding m's encoding, or NULL (out of memory). */
static gw_frame_t *frame_of(const crdt_v1_msg_t *m)
{
    crdt_buf_t b = {0};
    if (gw_frame_buf_start(&b, 64) || crdt_v1_encode(m, &b)) {
        crdt_buf_free(&b);
        return NULL;
    }
    return gw_frame_adopt(&b);
}

/* The frame of m for session ss: binary when the session speaks crdt.v1.bin and m has a binary
 * form, else JSON. */
static gw_frame_t *frame_for(const struct sess *ss, const crdt_v1_msg_t *m);

/* The shared part of a binary change (crdt_v1_bin_change_body), as a frame. */
static gw_frame_t *change_body_bin(const void *key, size_t klen, uint64_t seq, bool full,
                                   const crdt_obj_t *o)
{
    crdt_buf_t b = {0};
    if (gw_frame_buf_start(&b, 128) || crdt_v1_bin_change_body(key, klen, seq, full, o, &b)) {
        crdt_buf_free(&b);
        return NULL;
    }
    gw_frame_t *f = gw_frame_adopt(&b);
    if (f)
        f->meta[0] = FRAME_CHANGE_BODY | FRAME_BIN;
    return f;
}

/* The shared part of a change message (the codec's change body), as a frame. */
static gw_frame_t *change_body(const void *key, size_t klen, uint64_t seq, bool full,
                               const crdt_obj_t *o)
{
    crdt_buf_t b = {0};
    if (gw_frame_buf_start(&b, 256) ||
        crdt_v1_encode_change_body(key, klen, seq, full, o, NULL, &b)) {
        crdt_buf_free(&b);
        return NULL;
    }
    gw_frame_t *f = gw_frame_adopt(&b);
    if (f)
        f->meta[0] = FRAME_CHANGE_BODY;
    return f;
}

/* ---- the send queue ------------------------------------------------------------------------- */

static void walks_free(sess_t *ss)
{
    for (size_t w = 0; w < ss->nwalks; w++) {
        for (size_t i = 0; i < ss->walks[w].ntopics; i++)
            crdt_free(ss->walks[w].topics[i].bytes);
        free(ss->walks[w].topics);
    }
    ss->nwalks = 0;
}

/* Closes the session at its next writable callback (with a backstop: a session that never gets
 * writable again is dropped without the close frame). Drops what it had queued. */
static void sess_close(sess_t *ss, int code, const char *reason)
{
    if (ss->close_code)
        return;
    ss->close_code = code;
    size_t n = strnlen(reason, sizeof(ss->close_reason) - 1); /* a close reason is <= 123 bytes */
    memcpy(ss->close_reason, reason, n);
    ss->close_reason[n] = '\0';
    gw_wsq_clear(&ss->q);
    walks_free(ss);
    gw_loop_read_stop(ss->srv, &ss->rd);
    lws_set_timeout(ss->wsi, PENDING_TIMEOUT_USER_OK, CLOSE_BACKSTOP_SECS);
    lws_callback_on_writable(ss->wsi);
}

/* Queues frame f (steals the caller's reference; NULL: out of memory), a change body when its
 * meta says so, sent with the resume cursor in its head. `paced`: a catch-up message, which may
 * exceed the bound by itself (catch-ups only run while the queue is under half of it); any other
 * message that would exceed it closes the session as a slow consumer (one message alone in the
 * queue is always accepted: it is at most --ws-max-message). Returns 0, or -1 (f released). */
static int enqueue(sess_t *ss, gw_frame_t *f, uint64_t cursor, bool paced)
{
    gw_sync_t *y = ss->srv->sync;
    if (ss->close_code) {
        gw_frame_unref(f);
        return -1;
    }
    size_t extra = f && (f->meta[0] & FRAME_CHANGE_BODY) ? CRDT_V1_CHANGE_HEAD_MAX : 0;
    int rc = gw_wsq_push(&ss->q, f, cursor, extra, paced ? GW_WSQ_PACED : 0);
    if (rc == CRDT_ELIMIT) {
        y->slow++;
        sess_close(ss, 4008, "slow consumer");
        return -1;
    }
    if (rc) {
        sess_close(ss, 1011, "out of memory");
        return -1;
    }
    lws_callback_on_writable(ss->wsi);
    return 0;
}

/* Encodes m and queues it (not paced). */
static int send_msg(sess_t *ss, const crdt_v1_msg_t *m)
{
    return enqueue(ss, frame_for(ss, m), 0, false);
}

static gw_frame_t *frame_for(const sess_t *ss, const crdt_v1_msg_t *m)
{
    if (!ss->bin || !crdt_v1_bin_has(m))
        return frame_of(m);
    crdt_buf_t b = {0};
    if (gw_frame_buf_start(&b, 32) || crdt_v1_bin_encode(m, &b)) {
        crdt_buf_free(&b);
        return NULL;
    }
    gw_frame_t *f = gw_frame_adopt(&b);
    if (f)
        f->meta[0] = FRAME_BIN;
    return f;
}

static void send_error(sess_t *ss, bool has_id, uint64_t id, err_code_t code, const char *fmt, ...)
    __attribute__((format(printf, 5, 6)));
static void send_error(sess_t *ss, bool has_id, uint64_t id, err_code_t code, const char *fmt, ...)
{
    gw_sync_t *y = ss->srv->sync;
    if (code != E_STORAGE) {
        if (ss->nerrors >= ss->srv->cfg.ws_max_errors) {
            sess_close(ss, 4009, "too many errors");
            return;
        }
        ss->nerrors++;
    }
    y->errors[code]++;
    char text[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(text, sizeof(text), fmt, ap);
    va_end(ap);
    crdt_v1_msg_t m = {
        .type = CRDT_V1_ERROR, .has_id = has_id, .id = id, .code = code, .message = text};
    send_msg(ss, &m);
}

/* The resume point to send now: `seq` (the change just queued, or last_seq) when no catch-up
 * runs, else the lowest position the catch-ups have reached. */
static uint64_t sess_cursor(const sess_t *ss, uint64_t seq)
{
    uint64_t c = seq;
    for (size_t w = 0; w < ss->nwalks; w++)
        if (ss->walks[w].pos < c)
            c = ss->walks[w].pos;
    return c;
}

/* ---- topics: the subscription index --------------------------------------------------------- */

static uint64_t topic_hash(const void *b, size_t len, bool prefix)
{
    return crdt_hash64(len ? b : "", len, prefix ? 0x70726566u : 0x6b6579u);
}

static topic_t *topic_find(gw_sync_t *y, const void *b, size_t len, bool prefix, uint64_t h)
{
    if (!y->nbuckets)
        return NULL;
    for (topic_t *t = y->buckets[h & (y->nbuckets - 1)]; t; t = t->hnext)
        if (t->hash == h && t->prefix == prefix && t->len == len &&
            (!len || memcmp(t->bytes, b, len) == 0))
            return t;
    return NULL;
}

static int topics_grow(gw_sync_t *y)
{
    size_t n = y->nbuckets ? y->nbuckets * 2 : 256;
    topic_t **nb = calloc(n, sizeof(*nb));
    if (!nb)
        return -1;
    for (size_t i = 0; i < y->nbuckets; i++) {
        for (topic_t *t = y->buckets[i], *nx; t; t = nx) {
            nx = t->hnext;
            t->hnext = nb[t->hash & (n - 1)];
            nb[t->hash & (n - 1)] = t;
        }
    }
    free(y->buckets);
    y->buckets = nb;
    y->nbuckets = n;
    return 0;
}

static void plen_add(gw_sync_t *y, size_t len, int delta)
{
    if (delta > 0 && y->plen_count[len]++ == 0) {
        size_t i = y->nplens;
        while (i && y->plens[i - 1] > len) {
            y->plens[i] = y->plens[i - 1];
            i--;
        }
        y->plens[i] = len;
        y->nplens++;
    } else if (delta < 0 && --y->plen_count[len] == 0) {
        size_t i = 0;
        while (y->plens[i] != len)
            i++;
        memmove(&y->plens[i], &y->plens[i + 1], (y->nplens - i - 1) * sizeof(size_t));
        y->nplens--;
    }
}

static topic_t *topic_get(gw_sync_t *y, const void *b, size_t len, bool prefix)
{
    uint64_t h = topic_hash(b, len, prefix);
    topic_t *t = topic_find(y, b, len, prefix, h);
    if (t)
        return t;
    if (y->ntopics >= y->nbuckets && topics_grow(y))
        return NULL;
    t = calloc(1, sizeof(*t) + len);
    if (!t)
        return NULL;
    t->hash = h;
    t->prefix = prefix;
    t->len = len;
    if (len)
        memcpy(t->bytes, b, len);
    t->hnext = y->buckets[h & (y->nbuckets - 1)];
    y->buckets[h & (y->nbuckets - 1)] = t;
    y->ntopics++;
    if (prefix)
        plen_add(y, len, 1);
    return t;
}

static void topic_release(gw_sync_t *y, topic_t *t)
{
    if (t->nsubs)
        return;
    topic_t **pp = &y->buckets[t->hash & (y->nbuckets - 1)];
    while (*pp != t)
        pp = &(*pp)->hnext;
    *pp = t->hnext;
    y->ntopics--;
    if (t->prefix)
        plen_add(y, t->len, -1);
    free(t->subs);
    free(t);
}

static bool sess_has(const sess_t *ss, const topic_t *t)
{
    for (size_t i = 0; i < ss->nsubs; i++)
        if (ss->subs[i].t == t)
            return true;
    return false;
}

/* Adds the session to topic t (the caller checked limits); 0 or -1 (no memory). */
static int sub_add(gw_sync_t *y, sess_t *ss, topic_t *t)
{
    if (sess_has(ss, t))
        return 0;
    if (t->nsubs == t->cap) {
        size_t nc = t->cap ? t->cap * 2 : 4;
        sub_ref_t *n = realloc(t->subs, nc * sizeof(*n));
        if (!n)
            return -1;
        t->subs = n;
        t->cap = nc;
    }
    if (ss->nsubs == ss->subs_cap) {
        size_t nc = ss->subs_cap ? ss->subs_cap * 2 : 4;
        sess_sub_t *n = realloc(ss->subs, nc * sizeof(*n));
        if (!n)
            return -1;
        ss->subs = n;
        ss->subs_cap = nc;
    }
    t->subs[t->nsubs] = (sub_ref_t){ss, ss->nsubs};
    ss->subs[ss->nsubs] = (sess_sub_t){t, t->nsubs};
    t->nsubs++;
    ss->nsubs++;
    y->nsubscriptions++;
    return 0;
}

static void sub_remove(gw_sync_t *y, sess_t *ss, size_t i)
{
    topic_t *t = ss->subs[i].t;
    size_t k = ss->subs[i].ti;
    sub_ref_t last = t->subs[--t->nsubs];
    if (k != t->nsubs) {
        t->subs[k] = last;
        last.s->subs[last.si].ti = k;
    }
    sess_sub_t lastS = ss->subs[--ss->nsubs];
    if (i != ss->nsubs) {
        ss->subs[i] = lastS;
        lastS.t->subs[lastS.ti].si = i;
    }
    y->nsubscriptions--;
    topic_release(y, t);
}

/* ---- sessions ------------------------------------------------------------------------------- */

static void held_free(sess_t *ss)
{
    for (held_t *h = ss->held_head, *nx; h; h = nx) {
        nx = h->next;
        crdt_v1_msg_clear(&h->m);
        free(h);
    }
    ss->held_head = ss->held_tail = NULL;
    ss->nheld = 0;
}

/* lws closed the session: it leaves every list and index at once; its memory goes now, or with
 * the last completion of a store call still in flight (sess_release). */
static void sess_free(gw_sync_t *y, sess_t *ss)
{
    while (ss->nsubs)
        sub_remove(y, ss, ss->nsubs - 1);
    free(ss->subs);
    ss->subs = NULL;
    ss->subs_cap = 0;
    for (size_t i = 0; i < y->ack_len; i++) {
        pending_ack_t *a = &y->acks[(y->ack_head + i) % y->ack_cap];
        if (a->s == ss)
            a->s = NULL;
    }
    gw_loop_read_stop(y->srv, &ss->rd);
    ss->rd.wsi = NULL;
    gw_wsq_free(&ss->q);
    gw_wswriter_free(&ss->w);
    gw_wswriter_free(&ss->wb);
    walks_free(ss);
    held_free(ss);
    gw_wsrx_free(&ss->rx);
    gw_token_clear(&ss->tok);
    if (ss->prev)
        ss->prev->next = ss->next;
    else
        y->head = ss->next;
    if (ss->next)
        ss->next->prev = ss->prev;
    y->nsessions--;
    if (ss->slot)
        *ss->slot = NULL;
    ss->slot = NULL;
    ss->wsi = NULL;
    if (!ss->inflight) {
        free(ss);
        return;
    }
    ss->dead = true;
    ss->prev = NULL;
    ss->next = y->zombies;
    if (y->zombies)
        y->zombies->prev = ss;
    y->zombies = ss;
}

/* A store call on the session's behalf begins. */
static void sess_hold(sess_t *ss)
{
    ss->inflight++;
}

/* It completed: false when the session is closed (freed now if this was the last call), and the
 * caller must not touch it. */
static bool sess_release(sess_t *ss)
{
    ss->inflight--;
    if (!ss->dead)
        return true;
    if (!ss->inflight) {
        gw_sync_t *y = ss->srv->sync;
        if (ss->prev)
            ss->prev->next = ss->next;
        else
            y->zombies = ss->next;
        if (ss->next)
            ss->next->prev = ss->prev;
        free(ss);
    }
    return false;
}

static int64_t unix_now(void)
{
    return (int64_t)time(NULL);
}

/* The session's token for the grant check (auth.c's, as on every surface), NULL without auth. */
static const gw_token_t *sess_token(const sess_t *ss)
{
    return ss->has_tok ? &ss->tok : NULL;
}

/* With a secret: the token must still be valid; closes with 4001 when it expired. */
static bool token_live(sess_t *ss, bool has_id, uint64_t id)
{
    if (!ss->has_tok || ss->tok.exp > unix_now())
        return true;
    send_error(ss, has_id, id, E_EXPIRED, "token expired");
    sess_close(ss, 4001, "token expired");
    return false;
}

/* ---- hello ---------------------------------------------------------------------------------- */

static void on_hello(sess_t *ss, const crdt_v1_msg_t *m)
{
    gw_server_t *s = ss->srv;
    gw_sync_t *y = s->sync;
    if (y->slen) {
        char why[64];
        if (!m->token) {
            sess_close(ss, 4001, "token invalid: no token");
            return;
        }
        int rc = gw_auth_verify(s, m->token, strlen(m->token), &ss->tok, why, sizeof(why));
        if (rc != GW_TOKEN_OK) {
            char reason[80];
            if (rc == GW_TOKEN_EEXPIRED)
                snprintf(reason, sizeof(reason), "token expired");
            else
                snprintf(reason, sizeof(reason), "token invalid: %s", why);
            gw_token_clear(&ss->tok);
            sess_close(ss, 4001, reason);
            return;
        }
        ss->has_tok = true;
    }
    memcpy(ss->client, m->client, sizeof(ss->client));
    ss->hello_cursor = m->cursor;
    ss->hello = true;
    crdt_v1_msg_t w = {
        .type = CRDT_V1_WELCOME,
        .node = crdt_store_node_id(s->store),
        .seq = crdt_store_last_seq(s->store),
        .session = ss->id,
        .subject = ss->has_tok ? ss->tok.sub : "",
        .expires = ss->has_tok && ss->tok.exp > 0 ? (uint64_t)ss->tok.exp : 0,
        .has_limits = true,
        .limits = {.max_message = s->cfg.ws_max_message,
                   .max_subscriptions = s->cfg.ws_max_subscriptions,
                   .send_queue = s->cfg.ws_send_queue,
                   .idle_timeout = s->cfg.ws_idle_timeout,
                   .max_errors = s->cfg.ws_max_errors},
    };
    send_msg(ss, &w);
}

/* ---- subscribe / unsubscribe ---------------------------------------------------------------- */

static const char *topic_kind(const crdt_v1_topic_t *t)
{
    return t->prefix ? "prefixes" : "keys";
}

/* The index of topic i among the keys or among the prefixes, as the request listed them. */
static size_t topic_index(const crdt_v1_msg_t *m, size_t i)
{
    size_t k = 0;
    for (size_t j = 0; j < i; j++)
        k += m->topics[j].prefix == m->topics[i].prefix;
    return k;
}

/* The server's checks on a request's topics (the codec did the protocol's): no reserved key and,
 * for a subscribe, a read grant for each. -1 after sending the error. */
static int check_topics(sess_t *ss, const crdt_v1_msg_t *m, bool check_grants)
{
    for (size_t i = 0; i < m->ntopics; i++) {
        const crdt_v1_topic_t *t = &m->topics[i];
        if (!t->prefix && gw_key_reserved(t->bytes, t->len)) {
            send_error(ss, true, m->id, E_BAD_REQUEST, "keys[%zu]: reserved for crdtd",
                       topic_index(m, i));
            return -1;
        }
        gw_denial_t d =
            check_grants ? gw_auth_key(sess_token(ss), GW_ACCESS_READ, t->bytes, t->len, t->prefix)
                         : GW_DENY_NONE;
        if (d != GW_DENY_NONE) {
            send_error(ss, true, m->id, E_UNAUTHORIZED, "%s[%zu]: no read grant covers it (%s)",
                       topic_kind(t), topic_index(m, i), gw_denial_name(d));
            return -1;
        }
    }
    return 0;
}

static bool topic_eq(const crdt_v1_topic_t *a, const crdt_v1_topic_t *b)
{
    return a->prefix == b->prefix && a->len == b->len &&
           (!a->len || memcmp(a->bytes, b->bytes, a->len) == 0);
}

static bool walk_matches(const walk_t *w, const void *key, size_t klen)
{
    for (size_t i = 0; i < w->ntopics; i++) {
        const crdt_v1_topic_t *t = &w->topics[i];
        if (t->prefix ? t->len <= klen && (!t->len || memcmp(t->bytes, key, t->len) == 0)
                      : t->len == klen && memcmp(t->bytes, key, klen) == 0)
            return true;
    }
    return false;
}

static void send_subscribed(sess_t *ss, uint64_t id, bool paced)
{
    crdt_v1_msg_t m = {.type = CRDT_V1_SUBSCRIBED,
                       .has_id = true,
                       .id = id,
                       .cursor = sess_cursor(ss, crdt_store_last_seq(ss->srv->store))};
    enqueue(ss, frame_for(ss, &m), 0, paced);
}

static void on_subscribe(sess_t *ss, crdt_v1_msg_t *m)
{
    gw_server_t *s = ss->srv;
    gw_sync_t *y = s->sync;
    uint64_t id = m->id, since = m->has_since ? m->since : ss->hello_cursor;
    if (!token_live(ss, true, id))
        return;
    if (since > crdt_store_last_seq(s->store))
        since = 0; /* a cursor of another node, or of one that lost its data: full states */
    if (check_topics(ss, m, true))
        return;
    crdt_v1_topic_t *t = m->topics;
    size_t n = m->ntopics;
    /* the limit counts distinct topics, old and new */
    size_t fresh = 0;
    for (size_t i = 0; i < n; i++) {
        topic_t *tp = topic_find(y, t[i].bytes, t[i].len, t[i].prefix,
                                 topic_hash(t[i].bytes, t[i].len, t[i].prefix));
        bool dup = false;
        for (size_t k = 0; k < i && !dup; k++)
            dup = topic_eq(&t[k], &t[i]);
        if (!dup && !(tp && sess_has(ss, tp)))
            fresh++;
    }
    bool walk = since < crdt_store_last_seq(s->store);
    if (ss->nsubs + fresh > s->cfg.ws_max_subscriptions || (walk && ss->nwalks == MAX_WALKS)) {
        send_error(ss, true, id, E_LIMIT,
                   ss->nwalks == MAX_WALKS && walk
                       ? "too many catch-ups in progress (%u subscriptions allowed)"
                       : "more than %u subscriptions (--ws-max-subscriptions)",
                   s->cfg.ws_max_subscriptions);
        return;
    }
    for (size_t i = 0; i < n; i++) {
        topic_t *tp = topic_get(y, t[i].bytes, t[i].len, t[i].prefix);
        if (!tp || sub_add(y, ss, tp)) {
            if (tp)
                topic_release(y, tp);
            send_error(ss, true, id, E_INTERNAL, "out of memory");
            return;
        }
    }
    if (!walk) {
        send_subscribed(ss, id, false);
        return;
    }
    /* the catch-up runs from the writable callback, paced by the socket; it takes the topics */
    walk_t *w = &ss->walks[ss->nwalks++];
    w->id = id;
    w->pos = since;
    w->topics = t;
    w->ntopics = n;
    m->topics = NULL;
    m->ntopics = 0;
    lws_callback_on_writable(ss->wsi);
}

static void on_unsubscribe(sess_t *ss, const crdt_v1_msg_t *m)
{
    gw_sync_t *y = ss->srv->sync;
    if (check_topics(ss, m, false))
        return;
    for (size_t i = 0; i < m->ntopics; i++) {
        const crdt_v1_topic_t *t = &m->topics[i];
        topic_t *tp =
            topic_find(y, t->bytes, t->len, t->prefix, topic_hash(t->bytes, t->len, t->prefix));
        for (size_t k = 0; tp && k < ss->nsubs; k++) {
            if (ss->subs[k].t == tp) {
                sub_remove(y, ss, k);
                break;
            }
        }
    }
    crdt_v1_msg_t r = {.type = CRDT_V1_UNSUBSCRIBED, .has_id = true, .id = m->id};
    send_msg(ss, &r);
}

/* ---- catch-up ------------------------------------------------------------------------------- */

/* One chunk of a catch-up read from the store's change feed (it may complete later: the session
 * is held meanwhile, and the walk read is always ss->walks[0], which only walk_done removes). */
typedef struct walk_ctx {
    sess_t *ss;
    size_t visited;
    bool stopped; /* walk_cb stopped the read early: more to do */
} walk_ctx_t;

static int walk_cb(const void *key, size_t klen, uint64_t seq, const crdt_obj_t *state, void *ud)
{
    walk_ctx_t *c = ud;
    sess_t *ss = c->ss;
    if (!sess_live(ss) || !ss->nwalks || gw_wsq_bytes(&ss->q) >= ss->srv->cfg.ws_send_queue / 2) {
        c->stopped = true; /* full enough: continue from this key once the socket took some */
        return 1;
    }
    walk_t *w = &ss->walks[0];
    c->visited++;
    if (!state || gw_key_reserved(key, klen) || !walk_matches(w, key, klen))
        return 0;
    gw_frame_t *f = ss->bin ? change_body_bin(key, klen, seq, true, state)
                            : change_body(key, klen, seq, true, state);
    w->pos = seq;
    if (f && f->len + CRDT_V1_CHANGE_HEAD_MAX > ss->srv->cfg.ws_max_message) {
        gw_frame_unref(f);
        json_t *kj = crdt_json_bytes(key, klen); /* the key as JSON: "k" or {"base64":..} */
        char *kb = kj ? json_dumps(kj, JSON_ENCODE_ANY | JSON_COMPACT) : NULL;
        json_decref(kj);
        send_error(ss, true, w->id, E_TOO_LARGE,
                   "key %s: its state is over --ws-max-message; read it over REST", kb ? kb : "?");
        free(kb);
        c->stopped = ss->close_code != 0;
        return c->stopped;
    }
    c->stopped = enqueue(ss, f, sess_cursor(ss, seq), true) != 0;
    return c->stopped;
}

static void walk_done(void *ud, int rc, uint64_t next)
{
    walk_ctx_t *c = ud;
    sess_t *ss = c->ss;
    bool more = c->stopped || c->visited == WALK_CHUNK;
    free(c);
    ss->walk_c = NULL;
    ss->walking = false;
    if (!sess_release(ss) || ss->close_code || ss->nwalks == 0)
        return;
    walk_t *w = &ss->walks[0];
    uint64_t id = w->id;
    if (rc == CRDT_ELIMIT && w->pos != 0) {
        /* the store no longer holds the changes after the client's cursor (a gateway over Redis
         * keeps a bounded ring, its positions start anew each run): what was missed cannot be
         * told apart, so the catch-up sends the current state of every subscribed key instead,
         * as for a cursor of 0 (states join idempotently) */
        w->pos = 0;
        more = true;
    } else if (rc < 0) {
        send_error(ss, true, id, E_INTERNAL, "reading the change feed failed: %s",
                   crdt_strerror(rc));
        more = false; /* the catch-up ends here; the subscription stays */
    } else {
        w->pos = next;
    }
    if (more) {
        lws_callback_on_writable(ss->wsi); /* the next chunk on the next writable callback */
        return;
    }
    /* exhausted: everything up to last_seq is delivered, live changes carry on from there */
    for (size_t i = 0; i < w->ntopics; i++)
        crdt_free(w->topics[i].bytes);
    free(w->topics);
    memmove(&ss->walks[0], &ss->walks[1], (ss->nwalks - 1) * sizeof(walk_t));
    ss->nwalks--;
    if (rc >= 0)
        send_subscribed(ss, id, true);
    lws_callback_on_writable(ss->wsi);
}

/* Starts reading one chunk of the oldest catch-up (unless one is being read); finishing one
 * sends its "subscribed". */
static void walk_step(sess_t *ss)
{
    if (ss->walking)
        return;
    walk_ctx_t *c = calloc(1, sizeof(*c));
    if (!c) {
        sess_close(ss, 1011, "out of memory");
        return;
    }
    c->ss = ss;
    ss->walk_c = c;
    ss->walking = true;
    sess_hold(ss);
    crdt_store_changes(ss->srv->store, ss->walks[0].pos, WALK_CHUNK, walk_cb, walk_done, c);
}

/* ---- apply ---------------------------------------------------------------------------------- */

/* An apply in flight: every step is a store call (the mark read, the op, the mark write) whose
 * completion may come later than the call, so what the steps need lives here, and the session is
 * held (ss->inflight) until the last step. */
typedef struct apply_ctx {
    gw_server_t *srv;
    sess_t *ss;
    uint64_t id;
    uint8_t *key; /* the decoded key (taken from the message) */
    size_t klen;
    json_t *op; /* the REST-shaped op (a merge for a delta) */
    uint64_t seq;
    bool applied;
    gw_mark_ref_t mark; /* where this client's op-id mark is (marks.h) */
} apply_ctx_t;

static void ack_push(gw_sync_t *y, sess_t *ss, uint64_t wait, uint64_t id, uint64_t seq,
                     bool applied, bool dup)
{
    if (y->ack_len == y->ack_cap) {
        size_t nc = y->ack_cap ? y->ack_cap * 2 : 64;
        pending_ack_t *n = malloc(nc * sizeof(*n));
        if (!n) {
            sess_close(ss, 1011, "out of memory");
            return;
        }
        for (size_t i = 0; i < y->ack_len; i++)
            n[i] = y->acks[(y->ack_head + i) % y->ack_cap];
        free(y->acks);
        y->acks = n;
        y->ack_cap = nc;
        y->ack_head = 0;
    }
    y->acks[(y->ack_head + y->ack_len) % y->ack_cap] =
        (pending_ack_t){ss, wait, id, seq, applied, dup};
    y->ack_len++;
    gw_loop_schedule_flush(ss->srv);
}

/* True when the session can still be answered (not closed, not closing). */
static bool sess_live(const sess_t *ss)
{
    return !ss->dead && !ss->close_code;
}

/* The last step of an apply, whatever happened: frees it, lets the session's next message run. */
static void apply_free(apply_ctx_t *a)
{
    crdt_free(a->key);
    json_decref(a->op);
    free(a);
}

static void apply_finish(apply_ctx_t *a)
{
    sess_t *ss = a->ss;
    apply_free(a);
    ss->apply_c = NULL;
    ss->applying = false;
    if (sess_release(ss))
        sess_run_held(ss);
}

static void mark_written(void *ud, int rc, uint64_t seq)
{
    apply_ctx_t *a = ud;
    gw_server_t *s = a->srv;
    sess_t *ss = a->ss;
    if (!sess_live(ss)) {
        gw_loop_schedule_flush(s); /* the op and its mark are written: commit them anyway */
    } else if (rc < 0) {
        send_error(ss, true, a->id, E_STORAGE, "recording the op id failed: %s", crdt_strerror(rc));
        gw_loop_schedule_flush(s);
    } else {
        uint64_t wait = seq ? seq : crdt_store_last_seq(s->store);
        ack_push(s->sync, ss, wait, a->id, a->seq ? a->seq : wait, a->applied, false);
    }
    apply_finish(a);
}

static void apply_done(gw_server_t *s, const gw_op_result_t *r, void *ud)
{
    apply_ctx_t *a = ud;
    sess_t *ss = a->ss;
    if (r->rc < 0) {
        if (sess_live(ss)) {
            crdt_v1_code_t code = crdt_v1_code_from_name(r->code);
            send_error(ss, true, a->id, code == CRDT_V1_E_OTHER ? E_INTERNAL : code, "%s",
                       r->message);
        }
        if (r->seq)
            gw_loop_schedule_flush(s);
        apply_finish(a);
        return;
    }
    /* the op took effect: its mark is written even if the session has gone meanwhile, so a
     * retry on another session is a duplicate */
    a->seq = r->seq;
    a->applied = r->applied > 0;
    gw_marks_put(&s->sync->marks, &a->mark, a->id, mark_written, a);
}

static void mark_got(void *ud, int rc, const crdt_obj_t *const *objs, size_t n)
{
    apply_ctx_t *a = ud;
    gw_server_t *s = a->srv;
    sess_t *ss = a->ss;
    if (!sess_live(ss)) {
        apply_finish(a); /* nothing was written yet: the client retries the op */
        return;
    }
    if (rc < 0) {
        send_error(ss, true, a->id, E_STORAGE, "reading the op-id mark failed: %s",
                   crdt_strerror(rc));
        apply_finish(a);
        return;
    }
    if (a->id <= gw_marks_value(&a->mark, objs, n)) {
        /* acked once everything so far is durable: the original's write is in there */
        uint64_t last = crdt_store_last_seq(s->store);
        ack_push(s->sync, ss, last, a->id, last, false, true);
        apply_finish(a);
        return;
    }
    s->sync->applies++;
    gw_apply_op(s, a->key, a->klen, a->op, apply_done, a);
}

static void on_apply(sess_t *ss, crdt_v1_msg_t *m)
{
    gw_server_t *s = ss->srv;
    uint64_t id = m->id;
    if (!token_live(ss, true, id))
        return;
    gw_denial_t d = gw_auth_key(sess_token(ss), GW_ACCESS_WRITE, m->key, m->klen, false);
    if (d != GW_DENY_NONE) {
        send_error(ss, true, id, E_UNAUTHORIZED, "no write grant covers the key (%s)",
                   gw_denial_name(d));
        return;
    }
    apply_ctx_t *a = calloc(1, sizeof(*a));
    json_t *op =
        m->frame ? json_pack("{s:s, s:O}", "op", "merge", "state", m->frame) : json_incref(m->op);
    if (!a || !op) {
        free(a);
        json_decref(op);
        send_error(ss, true, id, E_INTERNAL, "out of memory");
        return;
    }
    *a = (apply_ctx_t){.srv = s, .ss = ss, .id = id, .key = m->key, .klen = m->klen, .op = op};
    m->key = NULL; /* taken */
    gw_marks_ref(&s->sync->marks, ss->has_tok ? ss->tok.sub : NULL, ss->client, &a->mark);
    ss->apply_c = a;
    ss->applying = true;
    sess_hold(ss);
    crdt_store_get_many(s->store, a->mark.keys, 2, mark_got, a);
}

/* ---- incoming messages ---------------------------------------------------------------------- */

/* The first message must be a valid hello: anything else closes the session with 4003. */
static void before_hello(sess_t *ss, int rc, crdt_v1_msg_t *m, const crdt_v1_error_t *e)
{
    char reason[120];
    if (rc == 0 && m->type == CRDT_V1_HELLO) {
        on_hello(ss, m);
        return;
    }
    if (rc && e->type == CRDT_V1_HELLO)
        snprintf(reason, sizeof(reason), "hello expected: %.100s", e->text);
    else if (rc && e->code == CRDT_V1_E_BAD_JSON)
        snprintf(reason, sizeof(reason), "hello expected: not a JSON object");
    else
        snprintf(reason, sizeof(reason), "hello expected as the first message");
    sess_close(ss, 4003, reason);
}

/* Runs one decoded message of a session that said hello (m's contents may be taken). */
static void dispatch(sess_t *ss, crdt_v1_msg_t *m)
{
    switch (m->type) {
    case CRDT_V1_APPLY: on_apply(ss, m); break;
    case CRDT_V1_SUBSCRIBE: on_subscribe(ss, m); break;
    case CRDT_V1_UNSUBSCRIBE: on_unsubscribe(ss, m); break;
    case CRDT_V1_PING: {
        crdt_v1_msg_t pong = {.type = CRDT_V1_PONG};
        send_msg(ss, &pong);
        break;
    }
    default: break; /* the codec reads only client messages */
    }
}

/* Keeps m (its contents move) until the apply in flight completes; reading pauses meanwhile. */
static void hold_message(sess_t *ss, crdt_v1_msg_t *m)
{
    held_t *h = ss->nheld < MAX_HELD ? malloc(sizeof(*h)) : NULL;
    if (!h) {
        sess_close(ss, 1011, "too many messages behind a write in flight");
        return;
    }
    h->m = *m;
    memset(m, 0, sizeof(*m));
    h->next = NULL;
    if (ss->held_tail)
        ss->held_tail->next = h;
    else
        ss->held_head = h;
    ss->held_tail = h;
    ss->nheld++;
    if (!ss->rx_paused) {
        ss->rx_paused = true;
        lws_rx_flow_control(ss->wsi, 0);
        gw_loop_read_stop(ss->srv, &ss->rd);
    }
}

/* Runs the messages held behind an apply, in order, until another apply is in flight. */
static void sess_run_held(sess_t *ss)
{
    while (!ss->applying && ss->held_head && sess_live(ss)) {
        held_t *h = ss->held_head;
        ss->held_head = h->next;
        if (!ss->held_head)
            ss->held_tail = NULL;
        ss->nheld--;
        dispatch(ss, &h->m);
        crdt_v1_msg_clear(&h->m);
        free(h);
    }
    if (ss->rx_paused && !ss->held_head && sess_live(ss)) {
        ss->rx_paused = false;
        lws_rx_flow_control(ss->wsi, 1);
        gw_loop_read_more(ss->srv, &ss->rd); /* input read ahead is not seen by poll */
    }
}

static void on_message(sess_t *ss, const char *text, size_t len, bool binary)
{
    gw_server_t *s = ss->srv;
    s->sync->msgs_in++;
    crdt_v1_limits_t lim = {.max_key = s->cfg.max_key, .max_topics = s->cfg.ws_max_subscriptions};
    crdt_v1_msg_t m;
    crdt_v1_error_t e;
    if (binary && !ss->hello) {
        sess_close(ss, 4003, "hello expected: binary frame");
        return;
    }
    int rc = binary
                 ? crdt_v1_bin_decode((const uint8_t *)text, len, CRDT_V1_FROM_CLIENT, &lim, &m, &e)
                 : crdt_v1_decode(text, len, CRDT_V1_FROM_CLIENT, &lim, &m, &e);
    if (!ss->hello) {
        before_hello(ss, rc, &m, &e);
    } else if (rc || m.type == CRDT_V1_HELLO) {
        if ((rc ? e.type : m.type) == CRDT_V1_HELLO)
            send_error(ss, false, 0, E_BAD_REQUEST, "hello was already received");
        else
            send_error(ss, e.has_id, e.id, e.code, "%s", e.text);
    } else if (ss->applying || ss->held_head) {
        hold_message(ss, &m);
    } else {
        dispatch(ss, &m);
    }
    crdt_v1_msg_clear(&m);
}

static int on_receive(sess_t *ss, const char *in, size_t len)
{
    gw_server_t *s = ss->srv;
    s->sync->bytes_in += len;
    ss->last_rx_us = gw_now_us();
    if (ss->close_code)
        return 0;
    gw_loop_read_more(s, &ss->rd);
    switch (gw_wsrx_receive(&ss->rx, ss->wsi, in, len)) {
    case GW_WSRX_MESSAGE:
        on_message(ss, (const char *)gw_wsrx_data(&ss->rx), gw_wsrx_len(&ss->rx), ss->rx.binary);
        gw_wsrx_done(&ss->rx);
        break;
    case GW_WSRX_TOO_LARGE:
        s->sync->msgs_in++;
        if (!ss->hello)
            sess_close(ss, 4003, "hello expected: message over --ws-max-message");
        else
            send_error(ss, false, 0, E_TOO_LARGE, "message over %zu bytes (--ws-max-message)",
                       s->cfg.ws_max_message);
        break;
    case GW_WSRX_WRONG_KIND:
        s->sync->msgs_in++;
        if (!ss->hello)
            sess_close(ss, 4003, "hello expected: binary frame");
        else
            send_error(ss, false, 0, E_BAD_REQUEST, "binary messages are not used by crdt.v1");
        break;
    case GW_WSRX_ENOMEM: return -1;
    default: break;
    }
    return 0;
}

/* ---- writing -------------------------------------------------------------------------------- */

/* The per-session head written in front of a queued frame (a change's cursor), in its framing;
 * 0 bytes for a frame without one. */
static size_t frame_head(const gw_wsq_item_t *it, char head[CRDT_V1_CHANGE_HEAD_MAX])
{
    if (!(it->f->meta[0] & FRAME_CHANGE_BODY))
        return 0;
    return it->f->meta[0] & FRAME_BIN ? crdt_v1_bin_change_head((uint8_t *)head, it->tag)
                                      : crdt_v1_change_head(head, it->tag);
}

static int on_writeable(sess_t *ss)
{
    gw_server_t *s = ss->srv;
    gw_sync_t *y = s->sync;
    y->writable_cbs++;
    if (ss->close_code) {
        lws_close_reason(ss->wsi, (enum lws_close_status)ss->close_code,
                         (unsigned char *)ss->close_reason, strlen(ss->close_reason));
        return -1;
    }
    if (ss->ping_due) {
        /* not empty: libwebsockets 4.1 drops an empty pong before LWS_CALLBACK_RECEIVE_PONG, and
         * a pong echoes the ping's payload */
        uint8_t buf[LWS_PRE + 4];
        memcpy(buf + LWS_PRE, "crdt", 4);
        ss->ping_due = false;
        if (lws_write(ss->wsi, buf + LWS_PRE, 4, LWS_WRITE_PING) < 0)
            return -1;
        lws_callback_on_writable(ss->wsi);
        return 0;
    }
    if (ss->nwalks && gw_wsq_bytes(&ss->q) < s->cfg.ws_send_queue / 4)
        walk_step(ss);
    if (ss->close_code) {
        lws_callback_on_writable(ss->wsi);
        return 0;
    }
    gw_wsq_item_t it;
    if (!gw_wsq_pop(&ss->q, &it)) {
        if (ss->nwalks && !ss->walking) /* a chunk with nothing to send: the next one next turn */
            lws_callback_on_writable(ss->wsi);
        return 0;
    }
    char head[CRDT_V1_CHANGE_HEAD_MAX];
    size_t hlen = frame_head(&it, head);
    bool bin = it.f->meta[0] & FRAME_BIN;
    uint64_t before = ss->w.bytes + ss->wb.bytes, msgs = 1;
    int rc;
    const gw_wsq_item_t *nx = gw_wsq_peek(&ss->q);
    if (!nx || hlen + it.f->len + nx->cost > GW_WS_BATCH_MAX) {
        rc = gw_ws_write(bin ? &ss->wb : &ss->w, ss->wsi, head, hlen, it.f, GW_WS_RELEASING);
        gw_frame_unref(it.f);
    } else {
        /* what is queued goes out in one write (one TLS record): the acks and changes of a turn
         * no longer cost a record, a send and a loop turn each; the batch is built in the text
         * writer, each message framed as its own kind */
        gw_ws_batch_begin(&ss->w);
        rc = gw_ws_batch_add_as(&ss->w, bin ? GW_WS_BINARY : GW_WS_TEXT, head, hlen, it.f);
        gw_frame_unref(it.f);
        while (!rc && (nx = gw_wsq_peek(&ss->q)) &&
               gw_ws_batch_len(&ss->w) + nx->cost + 10 <= GW_WS_BATCH_MAX) {
            gw_wsq_pop(&ss->q, &it);
            hlen = frame_head(&it, head);
            bin = it.f->meta[0] & FRAME_BIN;
            rc = gw_ws_batch_add_as(&ss->w, bin ? GW_WS_BINARY : GW_WS_TEXT, head, hlen, it.f);
            gw_frame_unref(it.f);
            msgs++;
        }
        rc = rc ? rc : gw_ws_batch_write(&ss->w, ss->wsi);
    }
    if (rc)
        return -1;
    y->ws_writes++;
    y->msgs_out += msgs;
    y->bytes_out += ss->w.bytes + ss->wb.bytes - before;
    if (gw_wsq_len(&ss->q) || (ss->nwalks && !ss->walking))
        lws_callback_on_writable(ss->wsi);
    return 0;
}

/* ---- timers: idle timeout, pings, token expiry ---------------------------------------------- */

/* Moves ss->last_rx_us up to the last time the kernel received data on the session's socket.
 * libwebsockets 4.1 answers a client's ping itself and tells the protocol nothing, so without
 * this a client that keeps its session alive with its own pings (docs/protocol.md: any frame
 * counts) would be dropped as idle. Pure ACKs are not data: a client that stops reading but
 * still acknowledges what it is sent does not count as active. */
static void note_socket_rx(sess_t *ss, uint64_t now)
{
#ifdef TCP_INFO
    int fd = (int)lws_get_socket_fd(ss->wsi);
    struct tcp_info ti;
    socklen_t len = sizeof(ti);
    if (fd < 0 || getsockopt(fd, IPPROTO_TCP, TCP_INFO, &ti, &len) ||
        len < offsetof(struct tcp_info, tcpi_last_data_recv) + sizeof(ti.tcpi_last_data_recv))
        return;
    uint64_t ago = (uint64_t)ti.tcpi_last_data_recv * 1000u;
    if (ago < now && now - ago > ss->last_rx_us)
        ss->last_rx_us = now - ago;
#else
    (void)ss, (void)now;
#endif
}

static void sweep_cb(lws_sorted_usec_list_t *sul)
{
    gw_sync_t *y = lws_container_of(sul, gw_sync_t, sul_sweep);
    gw_server_t *s = y->srv;
    uint64_t now = gw_now_us(), idle = (uint64_t)s->cfg.ws_idle_timeout * 1000000u;
    int64_t wall = unix_now();
    for (sess_t *ss = y->head; ss; ss = ss->next) {
        if (ss->close_code)
            continue;
        note_socket_rx(ss, now);
        if (!ss->hello && now - ss->opened_us >= idle) {
            /* before the idle check: a session without a hello gets 4003 however silent it was,
             * and answering pings is not enough to hold it */
            sess_close(ss, 4003, "hello expected: none within --ws-idle-timeout");
        } else if (now - ss->last_rx_us >= idle) {
            sess_close(ss, 1001, "idle timeout");
        } else if (ss->has_tok && ss->tok.exp <= wall) {
            sess_close(ss, 4001, "token expired");
        } else if (now - ss->last_rx_us >= idle / 3 && now - ss->last_ping_us >= idle / 3) {
            ss->last_ping_us = now;
            ss->ping_due = true;
            lws_callback_on_writable(ss->wsi);
        }
    }
    lws_sul_schedule(s->ctx, 0, &y->sul_sweep, sweep_cb, 250 * LWS_US_PER_MS);
}

/* ---- the lws callback ----------------------------------------------------------------------- */

static int on_established(gw_server_t *s, struct lws *wsi, void **slot)
{
    gw_sync_t *y = s->sync;
    sess_t *ss = calloc(1, sizeof(*ss));
    if (!ss)
        return -1;
    ss->srv = s;
    ss->wsi = wsi;
    ss->slot = slot;
    *slot = ss;
    uint8_t rnd[8];
    if (gw_random(rnd, sizeof(rnd)))
        memset(rnd, 0, sizeof(rnd));
    for (int i = 0; i < 8; i++)
        snprintf(ss->id + 2 * i, 3, "%02x", rnd[i]);
    ss->opened_us = ss->last_rx_us = ss->last_ping_us = gw_now_us();
    const struct lws_protocols *pr = lws_get_protocol(wsi);
    ss->bin = pr && pr->name && !strcmp(pr->name, CRDT_V1_BIN_PROTOCOL);
    gw_wsrx_init(&ss->rx, s->cfg.ws_max_message, GW_WS_TEXT | (ss->bin ? GW_WS_BINARY : 0));
    gw_wsq_init(&ss->q, s->cfg.ws_send_queue);
    gw_wswriter_init(&ss->w, GW_WS_TEXT, false);
    gw_wswriter_init(&ss->wb, GW_WS_BINARY, false);
    gw_loop_reader_init(&ss->rd, wsi);
    ss->next = y->head;
    if (y->head)
        y->head->prev = ss;
    y->head = ss;
    y->nsessions++;
    y->opened++;
    if (y->nsessions > s->cfg.ws_max_sessions)
        sess_close(ss, 4013, "too many sessions");
    return 0;
}

int gw_sync_callback(struct lws *wsi, enum lws_callback_reasons reason, void *user, void *in,
                     size_t len)
{
    gw_server_t *s = lws_context_user(lws_get_context(wsi));
    void **slot = user;
    sess_t *ss = slot ? *slot : NULL;
    if (!s || !s->sync)
        return reason == LWS_CALLBACK_ESTABLISHED ? -1 : 0;
    switch (reason) {
    case LWS_CALLBACK_ESTABLISHED:
        if (!slot)
            return -1;
        return on_established(s, wsi, slot);
    case LWS_CALLBACK_RECEIVE: return ss ? on_receive(ss, in, len) : -1;
    case LWS_CALLBACK_RECEIVE_PONG:
        if (ss)
            ss->last_rx_us = gw_now_us();
        break;
    case LWS_CALLBACK_SERVER_WRITEABLE: return ss ? on_writeable(ss) : -1;
    case LWS_CALLBACK_CLOSED:
    case LWS_CALLBACK_WSI_DESTROY:
        if (ss)
            sess_free(s->sync, ss);
        break;
    default: break;
    }
    return 0;
}

/* ---- fan-out -------------------------------------------------------------------------------- */

static void match_topic(gw_sync_t *y, const topic_t *t, uint64_t seq, size_t *n)
{
    for (size_t i = 0; t && i < t->nsubs; i++) {
        sess_t *ss = t->subs[i].s;
        if (ss->mark == seq || ss->close_code)
            continue;
        ss->mark = seq;
        if (*n == y->match_cap) {
            size_t nc = y->match_cap ? y->match_cap * 2 : 64;
            sess_t **m = realloc(y->match, nc * sizeof(*m));
            if (!m) {
                sess_close(ss, 1011, "out of memory");
                continue;
            }
            y->match = m;
            y->match_cap = nc;
        }
        y->match[(*n)++] = ss;
    }
}

bool gw_sync_wants(gw_server_t *s, const void *key, size_t klen)
{
    gw_sync_t *y = s->sync;
    if (!y || !y->ntopics || gw_key_reserved(key, klen))
        return false;
    const topic_t *t = topic_find(y, key, klen, false, topic_hash(key, klen, false));
    if (t && t->nsubs)
        return true;
    for (size_t i = 0; i < y->nplens && y->plens[i] <= klen; i++) {
        size_t pl = y->plens[i];
        t = topic_find(y, key, pl, true, topic_hash(key, pl, true));
        if (t && t->nsubs)
            return true;
    }
    return false;
}

void gw_sync_on_change(gw_server_t *s, const void *key, size_t klen, uint64_t seq,
                       const crdt_obj_t *delta)
{
    gw_sync_t *y = s->sync;
    if (!y || !y->ntopics || gw_key_reserved(key, klen) || !delta)
        return;
    size_t n = 0;
    match_topic(y, topic_find(y, key, klen, false, topic_hash(key, klen, false)), seq, &n);
    for (size_t i = 0; i < y->nplens && y->plens[i] <= klen; i++) {
        size_t pl = y->plens[i];
        match_topic(y, topic_find(y, key, pl, true, topic_hash(key, pl, true)), seq, &n);
    }
    if (!n)
        return;
    gw_frame_t *f = NULL, *fb = NULL; /* the JSON and the binary body, made when needed */
    bool fj_made = false, fb_made = false;
    for (size_t i = 0; i < n; i++) {
        sess_t *ss = y->match[i];
        if (ss->bin && !fb_made) {
            fb = change_body_bin(key, klen, seq, false, delta);
            fb_made = true;
        } else if (!ss->bin && !fj_made) {
            f = change_body(key, klen, seq, false, delta);
            fj_made = true;
        }
        gw_frame_t *mine = ss->bin ? fb : f;
        bool big = mine && mine->len + CRDT_V1_CHANGE_HEAD_MAX > s->cfg.ws_max_message;
        if (big) {
            send_error(ss, false, 0, E_TOO_LARGE,
                       "change %" PRIu64 ": its delta is over --ws-max-message; read the key over "
                       "REST",
                       seq);
            continue;
        }
        enqueue(ss, mine ? gw_frame_ref(mine) : NULL, sess_cursor(ss, seq), false);
    }
    gw_frame_unref(f);
    gw_frame_unref(fb);
}

/* ---- acks ----------------------------------------------------------------------------------- */

void gw_sync_on_durable(gw_server_t *s)
{
    gw_sync_t *y = s->sync;
    if (!y)
        return;
    uint64_t durable = crdt_store_durable_seq(s->store);
    while (y->ack_len) {
        pending_ack_t *a = &y->acks[y->ack_head];
        if (!s->storage_error && a->wait > durable)
            break;
        pending_ack_t ack = *a;
        y->ack_head = (y->ack_head + 1) % y->ack_cap;
        y->ack_len--;
        if (!ack.s)
            continue;
        if (ack.wait > durable) {
            send_error(ack.s, true, ack.id, E_STORAGE,
                       "storage failure, the write is not durable: %s",
                       crdt_store_last_error(s->store) ? crdt_store_last_error(s->store)
                                                       : "writes are refused until restart");
            continue;
        }
        y->acks_sent++;
        crdt_v1_msg_t m = {.type = CRDT_V1_ACK,
                           .has_id = true,
                           .id = ack.id,
                           .seq = ack.seq,
                           .applied = ack.applied,
                           .duplicate = ack.dup};
        send_msg(ack.s, &m);
    }
}

/* ---- lifecycle ------------------------------------------------------------------------------ */

int gw_sync_init(gw_server_t *s)
{
    gw_sync_t *y = calloc(1, sizeof(*y));
    if (!y) {
        gw_log("sessions: out of memory");
        return -1;
    }
    y->srv = s;
    gw_marks_init(&y->marks, s);
    y->slen = gw_auth_enabled(s); /* the key ring is auth.c's (SIGHUP re-reads it) */
    if (!y->slen)
        gw_log("sessions: no token secret (--token-secret-file or $CRDTD_TOKEN_SECRET): crdt.v1 "
               "sessions need no token and may read and write every key");
    y->max_plen = s->cfg.max_key;
    y->plen_count = calloc(y->max_plen + 1, sizeof(*y->plen_count));
    y->plens = calloc(y->max_plen + 1, sizeof(*y->plens));
    if (!y->plen_count || !y->plens || topics_grow(y)) {
        free(y->plen_count);
        free(y->plens);
        free(y->buckets);
        free(y);
        gw_log("sessions: out of memory");
        return -1;
    }

    /* every session is a file descriptor */
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0) {
        if (rl.rlim_cur < rl.rlim_max) {
            rlim_t want = rl.rlim_max;
            rl.rlim_cur = want;
            if (setrlimit(RLIMIT_NOFILE, &rl) != 0)
                getrlimit(RLIMIT_NOFILE, &rl);
        }
        if (rl.rlim_cur != RLIM_INFINITY && rl.rlim_cur < (rlim_t)s->cfg.ws_max_sessions + 64)
            gw_log("sessions: the open-file limit is %llu, below --ws-max-sessions %u + 64: "
                   "connections beyond it will fail (raise ulimit -n)",
                   (unsigned long long)rl.rlim_cur, s->cfg.ws_max_sessions);
    }
    s->sync = y;
    lws_sul_schedule(s->ctx, 0, &y->sul_sweep, sweep_cb, 250 * LWS_US_PER_MS);
    return 0;
}

void gw_sync_shutdown(gw_server_t *s)
{
    gw_sync_t *y = s->sync;
    if (!y)
        return;
    lws_sul_cancel(&y->sul_sweep);
    gw_marks_shutdown(&y->marks);
    while (y->head)
        sess_free(y, y->head);
    /* the store drops the completions still pending when it closes (after this): nothing will
     * release these */
    for (sess_t *z = y->zombies, *nx; z; z = nx) {
        nx = z->next;
        if (z->apply_c)
            apply_free(z->apply_c);
        free(z->walk_c);
        free(z);
    }
    y->zombies = NULL;
    for (size_t i = 0; i < y->nbuckets; i++) {
        for (topic_t *t = y->buckets[i], *nx; t; t = nx) {
            nx = t->hnext;
            free(t->subs);
            free(t);
        }
    }
    free(y->buckets);
    free(y->plen_count);
    free(y->plens);
    free(y->match);
    free(y->acks);
    memset(y->secret, 0, sizeof(y->secret));
    free(y);
    s->sync = NULL;
}

/* ---- metrics -------------------------------------------------------------------------------- */

char *gw_sync_metrics(gw_server_t *s)
{
    gw_sync_t *y = s->sync;
    if (!y)
        return NULL;
    size_t qbytes = 0;
    for (sess_t *ss = y->head; ss; ss = ss->next)
        qbytes += gw_wsq_bytes(&ss->q);
    static const gw_prom_label_t in = {"direction", "in"}, out = {"direction", "out"};
    gw_prom_t o;
    gw_prom_init(&o, 4096);
    gw_prom_family(&o, "crdtd_ws_sessions", "gauge", "Open crdt.v1 WebSocket sessions.");
    gw_prom_u64(&o, "crdtd_ws_sessions", NULL, 0, y->nsessions);
    gw_prom_family(&o, "crdtd_ws_sessions_opened_total", "counter",
                   "Sessions accepted since start.");
    gw_prom_u64(&o, "crdtd_ws_sessions_opened_total", NULL, 0, y->opened);
    gw_prom_family(&o, "crdtd_ws_subscriptions", "gauge",
                   "Subscriptions (keys and prefixes) of all sessions.");
    gw_prom_u64(&o, "crdtd_ws_subscriptions", NULL, 0, y->nsubscriptions);
    gw_prom_family(&o, "crdtd_ws_messages_total", "counter", "Messages by direction.");
    gw_prom_u64(&o, "crdtd_ws_messages_total", &in, 1, y->msgs_in);
    gw_prom_u64(&o, "crdtd_ws_messages_total", &out, 1, y->msgs_out);
    gw_prom_family(&o, "crdtd_ws_bytes_total", "counter", "Payload bytes by direction.");
    gw_prom_u64(&o, "crdtd_ws_bytes_total", &in, 1, y->bytes_in);
    gw_prom_u64(&o, "crdtd_ws_bytes_total", &out, 1, y->bytes_out);
    gw_prom_family(&o, "crdtd_ws_applies_total", "counter",
                   "Applies run (duplicates not counted).");
    gw_prom_u64(&o, "crdtd_ws_applies_total", NULL, 0, y->applies);
    gw_prom_family(&o, "crdtd_ws_acks_total", "counter", "Acks sent (duplicates included).");
    gw_prom_u64(&o, "crdtd_ws_acks_total", NULL, 0, y->acks_sent);
    gw_prom_family(&o, "crdtd_ws_mark_sweeps_total", "counter",
                   "Sweeps of the op-id marks of expired periods (marks.h).");
    gw_prom_u64(&o, "crdtd_ws_mark_sweeps_total", NULL, 0, y->marks.sweeps);
    gw_prom_family(&o, "crdtd_ws_mark_keys_emptied_total", "counter",
                   "Op-id mark keys of expired periods emptied by the sweeps.");
    gw_prom_u64(&o, "crdtd_ws_mark_keys_emptied_total", NULL, 0, y->marks.emptied);
    gw_prom_family(&o, "crdtd_ws_slow_consumer_total", "counter", "Sessions closed with 4008.");
    gw_prom_u64(&o, "crdtd_ws_slow_consumer_total", NULL, 0, y->slow);
    gw_prom_family(&o, "crdtd_ws_writable_callbacks_total", "counter",
                   "Writable callbacks of sessions.");
    gw_prom_u64(&o, "crdtd_ws_writable_callbacks_total", NULL, 0, y->writable_cbs);
    gw_prom_family(&o, "crdtd_ws_writes_total", "counter",
                   "Writes of queued messages (one write carries what is queued, up to a bound).");
    gw_prom_u64(&o, "crdtd_ws_writes_total", NULL, 0, y->ws_writes);
    gw_prom_family(&o, "crdtd_ws_send_queue_bytes", "gauge", "Bytes queued for all sessions.");
    gw_prom_u64(&o, "crdtd_ws_send_queue_bytes", NULL, 0, qbytes);
    gw_prom_family(&o, "crdtd_ws_pending_acks", "gauge", "Acks waiting for durability.");
    gw_prom_u64(&o, "crdtd_ws_pending_acks", NULL, 0, y->ack_len);
    gw_prom_family(&o, "crdtd_ws_errors_total", "counter", "Error messages sent, by code.");
    for (int c = 0; c < E_COUNT; c++)
        gw_prom_u64(&o, "crdtd_ws_errors_total",
                    &(gw_prom_label_t){"code", crdt_v1_code_name((crdt_v1_code_t)c)}, 1,
                    y->errors[c]);
    return gw_prom_take(&o, NULL);
}
