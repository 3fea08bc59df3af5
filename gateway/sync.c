/* sync.c - WebSocket client sessions (crdt.v1): hello, subscribe, apply, acks, fan-out, resume */
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>

#include "crdt_json.h"
#include "crypto.h"
#include "loop.h"
#include "prom.h"
#include "sync.h"
#include "util.h"
#include "auth.h"
#include "token.h"

/*
 * docs/protocol.md is the contract; this is how the server keeps it on one event loop.
 *
 * Output. Each session has a bounded FIFO of messages (bytes counted against --ws-send-queue) and
 * writes one per LWS_CALLBACK_SERVER_WRITEABLE. Message texts are reference counted: a live change
 * is encoded once ("key", "seq", "delta") and shared by every session it goes to; the per-session
 * part (the resume "cursor") is written in front of it when it is sent.
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
 * Acks. An apply's ack waits in a FIFO (ordered by the seq it waits for) until the replica's
 * durable seq reaches it (gw_sync_on_durable, after each group commit).
 *
 * Exactly-once. The highest applied op id per (token subject, client id) is a timeline entry
 * "hwm" (score = id: the greater score wins, a max-register) under the reserved key
 * "\0c/" subject "\0" client, written right after the op so one flush makes both durable.
 */

#define WALK_CHUNK 256 /* feed keys visited per catch-up step */
#define MAX_WALKS 16   /* catch-ups in progress per session */
#define MAX_ID ((uint64_t)1 << 53)
#define CLIENT_MAX 64
#define CLOSE_BACKSTOP_SECS 5 /* a session being closed that never becomes writable is dropped */

typedef struct msg {
    unsigned refs;
    size_t len;
    char text[];
} msg_t;

typedef struct qent {
    msg_t *m;
    uint64_t cursor;
    bool change; /* m is a change body: send `{"type":"change","cursor":C,` in front of it */
} qent_t;

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

typedef struct wtopic {
    uint8_t *b;
    size_t len;
    bool prefix;
} wtopic_t;

typedef struct walk {
    uint64_t id, pos;
    wtopic_t *topics;
    size_t ntopics;
} walk_t;

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
    char *rx;
    size_t rx_len, rx_cap;
    bool rx_discard, rx_binary;
    unsigned nerrors;
    uint64_t opened_us, last_rx_us, last_ping_us;
    bool ping_due;
    /* output */
    qent_t *q;
    size_t qhead, qlen, qcap;
    size_t qbytes;
    char *wbuf;
    size_t wcap;
    /* subscriptions and catch-ups */
    sess_sub_t *subs;
    size_t nsubs, subs_cap;
    walk_t walks[MAX_WALKS];
    size_t nwalks;
    uint64_t mark; /* seq of the last change matched, so a change is sent once per session */
    /* closing */
    int close_code;
    char close_reason[64];
} sess_t;

typedef struct pending_ack {
    sess_t *s; /* NULL once the session closed */
    uint64_t wait, id, seq;
    bool applied, dup;
} pending_ack_t;

enum err_code {
    E_BAD_JSON,
    E_BAD_REQUEST,
    E_UNKNOWN_TYPE,
    E_UNKNOWN_OP,
    E_WRONG_TYPE,
    E_UNAUTHORIZED,
    E_TOO_LARGE,
    E_LIMIT,
    E_STORAGE,
    E_EXPIRED,
    E_INTERNAL,
    E_COUNT
};

static const char *const err_names[E_COUNT] = {
    "bad_json",  "bad_request", "unknown_type", "unknown_op", "wrong_type", "unauthorized",
    "too_large", "limit",       "storage",      "expired",    "internal",
};

typedef struct gw_sync {
    gw_server_t *srv;
    uint8_t secret[256];
    size_t slen; /* 0: no tokens needed */
    sess_t *head;
    size_t nsessions;
    /* topics */
    topic_t **buckets;
    size_t nbuckets, ntopics;
    unsigned *plen_count; /* per prefix length: prefix topics of that length */
    size_t *plens;        /* the lengths in use, ascending */
    size_t nplens;
    size_t max_plen;
    size_t nsubscriptions;
    sess_t **match; /* scratch for on_change */
    size_t match_cap;
    /* acks waiting for durability */
    pending_ack_t *acks;
    size_t ack_head, ack_len, ack_cap;
    lws_sorted_usec_list_t sul_sweep;
    /* metrics */
    uint64_t opened, msgs_in, msgs_out, bytes_in, bytes_out, applies, acks_sent, slow;
    uint64_t errors[E_COUNT];
} gw_sync_t;

/* ---- messages ------------------------------------------------------------------------------- */

static msg_t *msg_new(size_t len)
{
    msg_t *m = malloc(sizeof(*m) + len + 1);
    if (m) {
        m->refs = 1;
        m->len = len;
        m->text[len] = '\0';
    }
    return m;
}

static void msg_unref(msg_t *m)
{
    if (m && --m->refs == 0)
        free(m);
}

static msg_t *msg_printf(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static msg_t *msg_printf(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(NULL, 0, fmt, ap);
    va_end(ap);
    if (n < 0)
        return NULL;
    msg_t *m = msg_new((size_t)n);
    if (!m)
        return NULL;
    va_start(ap, fmt);
    vsnprintf(m->text, (size_t)n + 1, fmt, ap);
    va_end(ap);
    return m;
}

/* Steals j. */
static msg_t *msg_json(json_t *j)
{
    char *t = j ? json_dumps(j, JSON_COMPACT) : NULL;
    json_decref(j);
    if (!t)
        return NULL;
    size_t n = strlen(t);
    msg_t *m = msg_new(n);
    if (m)
        memcpy(m->text, t, n);
    free(t);
    return m;
}

/* `"key":"<b64>","seq":S,"<field>":<frame>}`: the shared part of a change message. */
static msg_t *change_body(const void *key, size_t klen, uint64_t seq, const char *field,
                          const crdt_obj_t *o)
{
    size_t blen;
    char *kb = crdt_base64_encode(key, klen, &blen);
    json_t *fj = crdt_obj_to_json(o);
    char *ft = fj ? json_dumps(fj, JSON_COMPACT) : NULL;
    json_decref(fj);
    msg_t *m = kb && ft
                   ? msg_printf("\"key\":\"%s\",\"seq\":%" PRIu64 ",\"%s\":%s}", kb, seq, field, ft)
                   : NULL;
    free(kb);
    free(ft);
    return m;
}

/* ---- the send queue ------------------------------------------------------------------------- */

static void queue_drop(sess_t *ss)
{
    for (size_t i = 0; i < ss->qlen; i++)
        msg_unref(ss->q[(ss->qhead + i) % ss->qcap].m);
    ss->qhead = ss->qlen = 0;
    ss->qbytes = 0;
}

static void walks_free(sess_t *ss)
{
    for (size_t w = 0; w < ss->nwalks; w++) {
        for (size_t i = 0; i < ss->walks[w].ntopics; i++)
            free(ss->walks[w].topics[i].b);
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
    snprintf(ss->close_reason, sizeof(ss->close_reason), "%s", reason);
    queue_drop(ss);
    walks_free(ss);
    lws_set_timeout(ss->wsi, PENDING_TIMEOUT_USER_OK, CLOSE_BACKSTOP_SECS);
    lws_callback_on_writable(ss->wsi);
}

static size_t qent_size(const qent_t *e)
{
    return e->m->len + (e->change ? 48 : 0);
}

/* Queues m (steals the caller's reference). `paced`: a catch-up message, which may exceed the
 * bound by itself (catch-ups only run while the queue is under half of it); any other message
 * that would exceed it closes the session as a slow consumer (one message alone in the queue is
 * always accepted: it is at most --ws-max-message). Returns 0, or -1 (m released). */
static int enqueue(sess_t *ss, msg_t *m, bool change, uint64_t cursor, bool paced)
{
    gw_sync_t *y = ss->srv->sync;
    if (!m) {
        sess_close(ss, 1011, "out of memory");
        return -1;
    }
    if (ss->close_code) {
        msg_unref(m);
        return -1;
    }
    qent_t e = {m, cursor, change};
    if (!paced && ss->qlen && ss->qbytes + qent_size(&e) > ss->srv->cfg.ws_send_queue) {
        msg_unref(m);
        y->slow++;
        sess_close(ss, 4008, "slow consumer");
        return -1;
    }
    if (ss->qlen == ss->qcap) {
        size_t ncap = ss->qcap ? ss->qcap * 2 : 16;
        qent_t *nq = malloc(ncap * sizeof(*nq));
        if (!nq) {
            msg_unref(m);
            sess_close(ss, 1011, "out of memory");
            return -1;
        }
        for (size_t i = 0; i < ss->qlen; i++)
            nq[i] = ss->q[(ss->qhead + i) % ss->qcap];
        free(ss->q);
        ss->q = nq;
        ss->qcap = ncap;
        ss->qhead = 0;
    }
    ss->q[(ss->qhead + ss->qlen) % ss->qcap] = e;
    ss->qlen++;
    ss->qbytes += qent_size(&e);
    lws_callback_on_writable(ss->wsi);
    return 0;
}

static void send_error(sess_t *ss, bool has_id, uint64_t id, enum err_code code, const char *fmt,
                       ...) __attribute__((format(printf, 5, 6)));
static void send_error(sess_t *ss, bool has_id, uint64_t id, enum err_code code, const char *fmt,
                       ...)
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
    json_t *j =
        json_pack("{s:s, s:s, s:s}", "type", "error", "code", err_names[code], "message", text);
    if (!j) /* a message quoting bytes that are not UTF-8 */
        j = json_pack("{s:s, s:s, s:s}", "type", "error", "code", err_names[code], "message",
                      "(message not UTF-8)");
    if (j && has_id)
        json_object_set_new_nocheck(j, "id", json_integer((json_int_t)id));
    enqueue(ss, msg_json(j), false, 0, false);
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

static void sess_free(gw_sync_t *y, sess_t *ss)
{
    while (ss->nsubs)
        sub_remove(y, ss, ss->nsubs - 1);
    free(ss->subs);
    for (size_t i = 0; i < y->ack_len; i++) {
        pending_ack_t *a = &y->acks[(y->ack_head + i) % y->ack_cap];
        if (a->s == ss)
            a->s = NULL;
    }
    queue_drop(ss);
    free(ss->q);
    walks_free(ss);
    free(ss->rx);
    free(ss->wbuf);
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
    free(ss);
}

static int64_t unix_now(void)
{
    return (int64_t)time(NULL);
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

/* ---- JSON field helpers --------------------------------------------------------------------- */

/* A non-negative integer field below `max`; -1 if absent (when optional) or malformed. */
static int u64_field(const json_t *o, const char *name, uint64_t max, uint64_t *out)
{
    const json_t *v = json_object_get(o, name);
    if (!json_is_integer(v) || json_integer_value(v) < 0 || (uint64_t)json_integer_value(v) > max)
        return -1;
    *out = (uint64_t)json_integer_value(v);
    return 0;
}

static int b64_decode_field(const json_t *v, size_t min, size_t max, uint8_t **out, size_t *len)
{
    if (!json_is_string(v) || json_string_length(v) / 4 * 3 > max + 3)
        return -1;
    if (crdt_base64_decode(json_string_value(v), json_string_length(v), out, len) < 0)
        return -1;
    if (*len < min || *len > max) {
        free(*out);
        *out = NULL;
        return -1;
    }
    return 0;
}

/* ---- hello ---------------------------------------------------------------------------------- */

static bool client_id_ok(const char *c, size_t n)
{
    if (n < 1 || n > CLIENT_MAX)
        return false;
    for (size_t i = 0; i < n; i++) {
        char ch = c[i];
        if (!((ch >= 'A' && ch <= 'Z') || (ch >= 'a' && ch <= 'z') || (ch >= '0' && ch <= '9') ||
              ch == '.' || ch == '_' || ch == ':' || ch == '-'))
            return false;
    }
    return true;
}

static void on_hello(sess_t *ss, const json_t *j)
{
    gw_server_t *s = ss->srv;
    gw_sync_t *y = s->sync;
    const json_t *cl = json_object_get(j, "client"), *tk = json_object_get(j, "token");
    if (!json_is_string(cl) || !client_id_ok(json_string_value(cl), json_string_length(cl))) {
        sess_close(ss, 4003, "hello expected: \"client\" must be 1..64 of [A-Za-z0-9._:-]");
        return;
    }
    uint64_t cursor = 0;
    if (json_object_get(j, "cursor") && u64_field(j, "cursor", INT64_MAX, &cursor)) {
        sess_close(ss, 4003, "hello expected: \"cursor\" must be a non-negative integer");
        return;
    }
    if (y->slen) {
        char why[64];
        if (!json_is_string(tk)) {
            sess_close(ss, 4001, "token invalid: no token");
            return;
        }
        int rc = gw_auth_verify(s, json_string_value(tk), json_string_length(tk), &ss->tok, why,
                                sizeof(why));
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
    memcpy(ss->client, json_string_value(cl), json_string_length(cl));
    ss->client[json_string_length(cl)] = '\0';
    ss->hello_cursor = cursor;
    ss->hello = true;
    json_t *w = json_pack(
        "{s:s, s:I, s:I, s:s, s:s, s:I, s:{s:I, s:I, s:I, s:I, s:I}}", "type", "welcome", "node",
        (json_int_t)crdt_replica_node_id(s->replica), "seq",
        (json_int_t)crdt_replica_last_seq(s->replica), "session", ss->id, "subject",
        ss->has_tok ? ss->tok.sub : "", "expires", (json_int_t)(ss->has_tok ? ss->tok.exp : 0),
        "limits", "max_message", (json_int_t)s->cfg.ws_max_message, "max_subscriptions",
        (json_int_t)s->cfg.ws_max_subscriptions, "send_queue", (json_int_t)s->cfg.ws_send_queue,
        "idle_timeout", (json_int_t)s->cfg.ws_idle_timeout, "max_errors",
        (json_int_t)s->cfg.ws_max_errors);
    enqueue(ss, msg_json(w), false, 0, false);
}

/* ---- subscribe / unsubscribe ---------------------------------------------------------------- */

/* Reads "keys" and "prefixes" into a new array; -1 after sending the error. */
static int read_topics(sess_t *ss, const json_t *j, uint64_t id, bool check_grants, wtopic_t **out,
                       size_t *nout)
{
    gw_server_t *s = ss->srv;
    const json_t *ks = json_object_get(j, "keys"), *ps = json_object_get(j, "prefixes");
    if ((ks && !json_is_array(ks)) || (ps && !json_is_array(ps))) {
        send_error(ss, true, id, E_BAD_REQUEST, "\"keys\" and \"prefixes\" must be arrays");
        return -1;
    }
    size_t nk = json_array_size(ks), np = json_array_size(ps), n = nk + np;
    if (!n) {
        send_error(ss, true, id, E_BAD_REQUEST, "no keys and no prefixes");
        return -1;
    }
    if (n > s->cfg.ws_max_subscriptions) {
        send_error(ss, true, id, E_LIMIT, "more than %u keys and prefixes (--ws-max-subscriptions)",
                   s->cfg.ws_max_subscriptions);
        return -1;
    }
    wtopic_t *t = calloc(n, sizeof(*t));
    if (!t) {
        send_error(ss, true, id, E_INTERNAL, "out of memory");
        return -1;
    }
    for (size_t i = 0; i < n; i++) {
        bool prefix = i >= nk;
        const json_t *v = prefix ? json_array_get(ps, i - nk) : json_array_get(ks, i);
        t[i].prefix = prefix;
        if (b64_decode_field(v, prefix ? 0 : 1, s->cfg.max_key, &t[i].b, &t[i].len)) {
            send_error(ss, true, id, E_BAD_REQUEST,
                       "%s[%zu]: expected standard base64 of %s to %zu bytes",
                       prefix ? "prefixes" : "keys", prefix ? i - nk : i, prefix ? "0" : "1",
                       s->cfg.max_key);
            goto fail;
        }
        if (!prefix && gw_key_reserved(t[i].b, t[i].len)) {
            send_error(ss, true, id, E_BAD_REQUEST, "keys[%zu]: reserved for crdtd", i);
            goto fail;
        }
        if (check_grants && ss->has_tok &&
            !(prefix ? gw_token_can_read_prefix(&ss->tok, t[i].b, t[i].len)
                     : gw_token_can_read_key(&ss->tok, t[i].b, t[i].len))) {
            send_error(ss, true, id, E_UNAUTHORIZED, "%s[%zu]: no read grant covers it",
                       prefix ? "prefixes" : "keys", prefix ? i - nk : i);
            goto fail;
        }
    }
    *out = t;
    *nout = n;
    return 0;
fail:
    for (size_t i = 0; i < n; i++)
        free(t[i].b);
    free(t);
    return -1;
}

static bool walk_matches(const walk_t *w, const void *key, size_t klen)
{
    for (size_t i = 0; i < w->ntopics; i++) {
        const wtopic_t *t = &w->topics[i];
        if (t->prefix ? t->len <= klen && (!t->len || memcmp(t->b, key, t->len) == 0)
                      : t->len == klen && memcmp(t->b, key, klen) == 0)
            return true;
    }
    return false;
}

static void on_subscribe(sess_t *ss, const json_t *j)
{
    gw_server_t *s = ss->srv;
    gw_sync_t *y = s->sync;
    uint64_t id, since = ss->hello_cursor;
    if (u64_field(j, "id", INT64_MAX, &id)) {
        send_error(ss, false, 0, E_BAD_REQUEST, "\"id\": a non-negative integer is required");
        return;
    }
    if (json_object_get(j, "since") && u64_field(j, "since", INT64_MAX, &since)) {
        send_error(ss, true, id, E_BAD_REQUEST, "\"since\": expected a non-negative integer");
        return;
    }
    if (!token_live(ss, true, id))
        return;
    if (since > crdt_replica_last_seq(s->replica))
        since = 0; /* a cursor of another node, or of one that lost its data: full states */
    wtopic_t *t;
    size_t n;
    if (read_topics(ss, j, id, true, &t, &n))
        return;
    /* the limit counts distinct topics, old and new */
    size_t fresh = 0;
    for (size_t i = 0; i < n; i++) {
        topic_t *tp =
            topic_find(y, t[i].b, t[i].len, t[i].prefix, topic_hash(t[i].b, t[i].len, t[i].prefix));
        bool dup = false;
        for (size_t k = 0; k < i && !dup; k++)
            dup = t[k].prefix == t[i].prefix && t[k].len == t[i].len &&
                  (!t[i].len || memcmp(t[k].b, t[i].b, t[i].len) == 0);
        if (!dup && !(tp && sess_has(ss, tp)))
            fresh++;
    }
    bool walk = since < crdt_replica_last_seq(s->replica);
    if (ss->nsubs + fresh > s->cfg.ws_max_subscriptions || (walk && ss->nwalks == MAX_WALKS)) {
        send_error(ss, true, id, E_LIMIT,
                   ss->nwalks == MAX_WALKS && walk
                       ? "too many catch-ups in progress (%u subscriptions allowed)"
                       : "more than %u subscriptions (--ws-max-subscriptions)",
                   s->cfg.ws_max_subscriptions);
        goto out;
    }
    for (size_t i = 0; i < n; i++) {
        topic_t *tp = topic_get(y, t[i].b, t[i].len, t[i].prefix);
        if (!tp || sub_add(y, ss, tp)) {
            if (tp)
                topic_release(y, tp);
            send_error(ss, true, id, E_INTERNAL, "out of memory");
            goto out;
        }
    }
    if (!walk) {
        uint64_t last = crdt_replica_last_seq(s->replica);
        enqueue(ss,
                msg_printf("{\"type\":\"subscribed\",\"id\":%" PRIu64 ",\"cursor\":%" PRIu64 "}",
                           id, sess_cursor(ss, last)),
                false, 0, false);
        goto out;
    }
    /* the catch-up runs from the writable callback, paced by the socket */
    walk_t *w = &ss->walks[ss->nwalks++];
    w->id = id;
    w->pos = since;
    w->topics = t;
    w->ntopics = n;
    lws_callback_on_writable(ss->wsi);
    return;
out:
    for (size_t i = 0; i < n; i++)
        free(t[i].b);
    free(t);
}

static void on_unsubscribe(sess_t *ss, const json_t *j)
{
    gw_sync_t *y = ss->srv->sync;
    uint64_t id;
    if (u64_field(j, "id", INT64_MAX, &id)) {
        send_error(ss, false, 0, E_BAD_REQUEST, "\"id\": a non-negative integer is required");
        return;
    }
    wtopic_t *t;
    size_t n;
    if (read_topics(ss, j, id, false, &t, &n))
        return;
    for (size_t i = 0; i < n; i++) {
        topic_t *tp =
            topic_find(y, t[i].b, t[i].len, t[i].prefix, topic_hash(t[i].b, t[i].len, t[i].prefix));
        for (size_t k = 0; tp && k < ss->nsubs; k++) {
            if (ss->subs[k].t == tp) {
                sub_remove(y, ss, k);
                break;
            }
        }
        free(t[i].b);
    }
    free(t);
    enqueue(ss, msg_printf("{\"type\":\"unsubscribed\",\"id\":%" PRIu64 "}", id), false, 0, false);
}

/* ---- catch-up ------------------------------------------------------------------------------- */

typedef struct walk_ctx {
    sess_t *ss;
    walk_t *w;
    size_t visited;
} walk_ctx_t;

static int walk_cb(const void *key, size_t klen, uint64_t seq, const crdt_obj_t *state, void *ud)
{
    walk_ctx_t *c = ud;
    sess_t *ss = c->ss;
    if (ss->qbytes >= ss->srv->cfg.ws_send_queue / 2)
        return 1; /* full enough: continue from this key once the socket took some */
    c->visited++;
    if (!state || gw_key_reserved(key, klen) || !walk_matches(c->w, key, klen))
        return 0;
    msg_t *m = change_body(key, klen, seq, "state", state);
    c->w->pos = seq;
    if (m && m->len + 48 > ss->srv->cfg.ws_max_message) {
        msg_unref(m);
        size_t blen;
        char *kb = crdt_base64_encode(key, klen, &blen);
        send_error(ss, true, c->w->id, E_TOO_LARGE,
                   "key %s: its state is over --ws-max-message; read it over REST", kb ? kb : "?");
        free(kb);
        return ss->close_code ? 1 : 0;
    }
    return enqueue(ss, m, true, sess_cursor(ss, seq), true) ? 1 : 0;
}

/* Runs one chunk of the oldest catch-up; finishing one sends its "subscribed". */
static void walk_step(sess_t *ss)
{
    gw_server_t *s = ss->srv;
    walk_t *w = &ss->walks[0];
    walk_ctx_t c = {ss, w, 0};
    uint64_t next = w->pos;
    int rc = crdt_replica_changes(s->replica, w->pos, WALK_CHUNK, walk_cb, &c, &next);
    if (ss->close_code || ss->nwalks == 0)
        return;
    w->pos = next;
    if (rc != 0 || c.visited == WALK_CHUNK)
        return; /* more to do: the writable callback comes back */
    /* exhausted: everything up to last_seq is delivered, live changes carry on from there */
    uint64_t id = w->id;
    for (size_t i = 0; i < w->ntopics; i++)
        free(w->topics[i].b);
    free(w->topics);
    memmove(&ss->walks[0], &ss->walks[1], (ss->nwalks - 1) * sizeof(walk_t));
    ss->nwalks--;
    enqueue(ss,
            msg_printf("{\"type\":\"subscribed\",\"id\":%" PRIu64 ",\"cursor\":%" PRIu64 "}", id,
                       sess_cursor(ss, crdt_replica_last_seq(s->replica))),
            false, 0, true);
}

/* ---- apply ---------------------------------------------------------------------------------- */

static int mark_cb(crdt_obj_t *obj, void *ud, crdt_obj_t **delta)
{
    return crdt_timeline_add(obj, "hwm", 3, (double)*(uint64_t *)ud, delta);
}

/* The reserved key of this session's op-id mark into buf; its length. */
static size_t mark_key(const sess_t *ss, uint8_t *buf)
{
    size_t n = 0;
    memcpy(buf, GW_RESERVED_PREFIX, GW_RESERVED_PREFIX_LEN);
    n += GW_RESERVED_PREFIX_LEN;
    size_t sl = ss->has_tok ? strlen(ss->tok.sub) : 0;
    memcpy(buf + n, ss->tok.sub, sl);
    n += sl;
    buf[n++] = '\0';
    size_t cl = strlen(ss->client);
    memcpy(buf + n, ss->client, cl);
    return n + cl;
}

static uint64_t mark_get(gw_server_t *s, const uint8_t *mk, size_t mlen)
{
    const crdt_obj_t *o = crdt_replica_get(s->replica, mk, mlen);
    double v;
    if (!o || crdt_obj_type(o) != CRDT_TIMELINE || crdt_timeline_score(o, "hwm", 3, &v) != 1 ||
        !(v >= 0))
        return 0;
    return v >= (double)MAX_ID ? MAX_ID : (uint64_t)v;
}

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

/* What the completion of an apply needs (gw_apply_op may complete after on_apply returned). */
typedef struct apply_ctx {
    sess_t *ss;
    uint64_t id;
    uint8_t mk[GW_RESERVED_PREFIX_LEN + GW_TOKEN_MAX_SUB + 1 + CLIENT_MAX];
    size_t mlen;
} apply_ctx_t;

static void apply_done(gw_server_t *s, const gw_op_result_t *r, void *ud)
{
    apply_ctx_t *a = ud;
    sess_t *ss = a->ss;
    gw_sync_t *y = s->sync;
    uint64_t id = a->id;
    if (r->rc < 0) {
        enum err_code code = E_INTERNAL;
        for (int c = 0; c < E_COUNT; c++)
            if (r->code && !strcmp(r->code, err_names[c]))
                code = (enum err_code)c;
        send_error(ss, true, id, code, "%s", r->message);
        if (r->seq)
            gw_loop_schedule_flush(s);
        goto out;
    }
    uint64_t mseq = 0;
    int mrc = crdt_replica_mutate(s->replica, a->mk, a->mlen, CRDT_TIMELINE, mark_cb, &id, &mseq);
    if (mrc < 0) {
        send_error(ss, true, id, E_STORAGE, "recording the op id failed: %s",
                   crdt_strerror(mrc));
        gw_loop_schedule_flush(s);
        goto out;
    }
    uint64_t wait = mseq ? mseq : crdt_replica_last_seq(s->replica);
    ack_push(y, ss, wait, id, r->seq ? r->seq : wait, r->applied > 0, false);
out:
    free(a);
}

static void on_apply(sess_t *ss, const json_t *j)
{
    gw_server_t *s = ss->srv;
    gw_sync_t *y = s->sync;
    uint64_t id;
    if (u64_field(j, "id", MAX_ID - 1, &id) || id == 0) {
        send_error(ss, false, 0, E_BAD_REQUEST, "\"id\": an integer 1..2^53-1 is required");
        return;
    }
    if (!token_live(ss, true, id))
        return;
    uint8_t *key = NULL;
    size_t klen = 0;
    if (b64_decode_field(json_object_get(j, "key"), 1, s->cfg.max_key, &key, &klen)) {
        send_error(ss, true, id, E_BAD_REQUEST,
                   "\"key\": expected standard base64 of 1 to %zu bytes", s->cfg.max_key);
        return;
    }
    const json_t *op = json_object_get(j, "op"), *delta = json_object_get(j, "delta");
    json_t *merge = NULL;
    uint8_t mk[GW_RESERVED_PREFIX_LEN + GW_TOKEN_MAX_SUB + 1 + CLIENT_MAX];
    size_t mlen = mark_key(ss, mk);
    if ((op != NULL) == (delta != NULL)) {
        send_error(ss, true, id, E_BAD_REQUEST, "give exactly one of \"op\" and \"delta\"");
        goto out;
    }
    if (ss->has_tok && !gw_token_can_write_key(&ss->tok, key, klen)) {
        send_error(ss, true, id, E_UNAUTHORIZED, "no write grant covers the key");
        goto out;
    }
    if (id <= mark_get(s, mk, mlen)) {
        /* acked once everything so far is durable: the original's write is in there */
        uint64_t last = crdt_replica_last_seq(s->replica);
        ack_push(y, ss, last, id, last, false, true);
        goto out;
    }
    if (delta) {
        if (!json_is_object(delta)) {
            send_error(ss, true, id, E_BAD_REQUEST, "\"delta\": expected a libcrdt JSON frame");
            goto out;
        }
        merge = json_pack("{s:s, s:O}", "op", "merge", "state", delta);
        if (!merge) {
            send_error(ss, true, id, E_INTERNAL, "out of memory");
            goto out;
        }
        op = merge;
    }
    y->applies++;
    apply_ctx_t *a = malloc(sizeof(*a));
    if (!a) {
        send_error(ss, true, id, E_INTERNAL, "out of memory");
        goto out;
    }
    *a = (apply_ctx_t){ss, id, {0}, mlen};
    memcpy(a->mk, mk, mlen);
    gw_apply_op(s, key, klen, op, apply_done, a);
out:
    json_decref(merge);
    free(key);
}

/* ---- incoming messages ---------------------------------------------------------------------- */

static void on_message(sess_t *ss, const char *text, size_t len)
{
    gw_sync_t *y = ss->srv->sync;
    y->msgs_in++;
    json_error_t e;
    json_t *j = json_loadb(text, len, JSON_REJECT_DUPLICATES, &e);
    const json_t *tv = json_object_get(j, "type");
    const char *type = json_is_string(tv) ? json_string_value(tv) : NULL;
    if (!ss->hello) {
        if (!type || strcmp(type, "hello") != 0)
            sess_close(ss, 4003,
                       !j                   ? "hello expected: not a JSON object"
                       : !json_is_object(j) ? "hello expected: not a JSON object"
                                            : "hello expected as the first message");
        else
            on_hello(ss, j);
        json_decref(j);
        return;
    }
    if (!json_is_object(j)) {
        if (j)
            send_error(ss, false, 0, E_BAD_JSON, "expected a JSON object");
        else
            send_error(ss, false, 0, E_BAD_JSON, "malformed JSON at line %d, column %d: %s", e.line,
                       e.column, e.text);
    } else if (!type) {
        send_error(ss, false, 0, E_BAD_REQUEST, "\"type\": a string is required");
    } else if (!strcmp(type, "apply")) {
        on_apply(ss, j);
    } else if (!strcmp(type, "subscribe")) {
        on_subscribe(ss, j);
    } else if (!strcmp(type, "unsubscribe")) {
        on_unsubscribe(ss, j);
    } else if (!strcmp(type, "ping")) {
        enqueue(ss, msg_printf("{\"type\":\"pong\"}"), false, 0, false);
    } else if (!strcmp(type, "hello")) {
        send_error(ss, false, 0, E_BAD_REQUEST, "hello was already received");
    } else {
        send_error(ss, false, 0, E_UNKNOWN_TYPE, "unknown message type");
    }
    json_decref(j);
}

static int on_receive(sess_t *ss, const char *in, size_t len)
{
    gw_server_t *s = ss->srv;
    s->sync->bytes_in += len;
    ss->last_rx_us = gw_now_us();
    if (ss->close_code)
        return 0;
    if (lws_is_first_fragment(ss->wsi)) {
        ss->rx_len = 0;
        ss->rx_discard = false;
        ss->rx_binary = lws_frame_is_binary(ss->wsi);
    }
    if (!ss->rx_discard && !ss->rx_binary) {
        if (ss->rx_len + len > s->cfg.ws_max_message) {
            /* never buffered whole: dropped as it arrives */
            ss->rx_discard = true;
            free(ss->rx);
            ss->rx = NULL;
            ss->rx_cap = ss->rx_len = 0;
        } else {
            if (ss->rx_len + len > ss->rx_cap) {
                size_t nc = ss->rx_cap ? ss->rx_cap : 4096;
                while (nc < ss->rx_len + len)
                    nc *= 2;
                if (nc > s->cfg.ws_max_message)
                    nc = s->cfg.ws_max_message;
                char *n = realloc(ss->rx, nc);
                if (!n)
                    return -1;
                ss->rx = n;
                ss->rx_cap = nc;
            }
            memcpy(ss->rx + ss->rx_len, in, len);
            ss->rx_len += len;
        }
    }
    if (!lws_is_final_fragment(ss->wsi) || lws_remaining_packet_payload(ss->wsi))
        return 0;
    if (ss->rx_discard) {
        s->sync->msgs_in++;
        if (!ss->hello)
            sess_close(ss, 4003, "hello expected: message over --ws-max-message");
        else
            send_error(ss, false, 0, E_TOO_LARGE, "message over %zu bytes (--ws-max-message)",
                       s->cfg.ws_max_message);
    } else if (ss->rx_binary) {
        s->sync->msgs_in++;
        if (!ss->hello)
            sess_close(ss, 4003, "hello expected: binary frame");
        else
            send_error(ss, false, 0, E_BAD_REQUEST, "binary messages are not used by crdt.v1");
    } else {
        on_message(ss, ss->rx ? ss->rx : "", ss->rx_len);
    }
    ss->rx_len = 0;
    ss->rx_discard = false;
    /* a big message's buffer is not kept for the session's lifetime */
    if (ss->rx_cap > 65536) {
        free(ss->rx);
        ss->rx = NULL;
        ss->rx_cap = 0;
    }
    return 0;
}

/* ---- writing -------------------------------------------------------------------------------- */

static int on_writeable(sess_t *ss)
{
    gw_server_t *s = ss->srv;
    gw_sync_t *y = s->sync;
    if (ss->close_code) {
        lws_close_reason(ss->wsi, (enum lws_close_status)ss->close_code,
                         (unsigned char *)ss->close_reason, strlen(ss->close_reason));
        return -1;
    }
    if (ss->ping_due) {
        uint8_t buf[LWS_PRE + 1];
        ss->ping_due = false;
        if (lws_write(ss->wsi, buf + LWS_PRE, 0, LWS_WRITE_PING) < 0)
            return -1;
        lws_callback_on_writable(ss->wsi);
        return 0;
    }
    if (ss->nwalks && ss->qbytes < s->cfg.ws_send_queue / 4)
        walk_step(ss);
    if (ss->close_code) {
        lws_callback_on_writable(ss->wsi);
        return 0;
    }
    if (!ss->qlen) {
        if (ss->nwalks) /* a chunk with nothing to send: the next one on the next turn */
            lws_callback_on_writable(ss->wsi);
        return 0;
    }
    qent_t e = ss->q[ss->qhead];
    ss->qhead = (ss->qhead + 1) % ss->qcap;
    ss->qlen--;
    ss->qbytes -= qent_size(&e);
    char pre[64];
    int plen = e.change ? snprintf(pre, sizeof(pre), "{\"type\":\"change\",\"cursor\":%" PRIu64 ",",
                                   e.cursor)
                        : 0;
    size_t total = (size_t)plen + e.m->len;
    if (LWS_PRE + total > ss->wcap) {
        size_t nc = LWS_PRE + total;
        char *n = realloc(ss->wbuf, nc);
        if (!n) {
            msg_unref(e.m);
            return -1;
        }
        ss->wbuf = n;
        ss->wcap = nc;
    }
    memcpy(ss->wbuf + LWS_PRE, pre, (size_t)plen);
    memcpy(ss->wbuf + LWS_PRE + plen, e.m->text, e.m->len);
    msg_unref(e.m);
    /* lws keeps what the socket did not take and sends it before the next writable callback */
    if (lws_write(ss->wsi, (unsigned char *)ss->wbuf + LWS_PRE, total, LWS_WRITE_TEXT) < (int)total)
        return -1;
    y->msgs_out++;
    y->bytes_out += total;
    /* the write buffer of a big message is not kept */
    if (ss->wcap > 65536 + LWS_PRE) {
        free(ss->wbuf);
        ss->wbuf = NULL;
        ss->wcap = 0;
    }
    if (ss->qlen || ss->nwalks)
        lws_callback_on_writable(ss->wsi);
    return 0;
}

/* ---- timers: idle timeout, pings, token expiry ---------------------------------------------- */

static void sweep_cb(lws_sorted_usec_list_t *sul)
{
    gw_sync_t *y = lws_container_of(sul, gw_sync_t, sul_sweep);
    gw_server_t *s = y->srv;
    uint64_t now = gw_now_us(), idle = (uint64_t)s->cfg.ws_idle_timeout * 1000000u;
    int64_t wall = unix_now();
    for (sess_t *ss = y->head; ss; ss = ss->next) {
        if (ss->close_code)
            continue;
        if (now - ss->last_rx_us >= idle) {
            sess_close(ss, 1001, "idle timeout");
        } else if (!ss->hello && now - ss->opened_us >= idle) {
            /* answering pings is not enough to hold a connection without a hello */
            sess_close(ss, 4003, "hello expected within the idle timeout");
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
    msg_t *m = change_body(key, klen, seq, "delta", delta);
    bool big = m && m->len + 48 > s->cfg.ws_max_message;
    for (size_t i = 0; i < n; i++) {
        sess_t *ss = y->match[i];
        if (big) {
            send_error(ss, false, 0, E_TOO_LARGE,
                       "change %" PRIu64 ": its delta is over --ws-max-message; read the key over "
                       "REST",
                       seq);
            continue;
        }
        if (m)
            m->refs++;
        enqueue(ss, m, true, sess_cursor(ss, seq), false);
    }
    msg_unref(m);
}

/* ---- acks ----------------------------------------------------------------------------------- */

void gw_sync_on_durable(gw_server_t *s)
{
    gw_sync_t *y = s->sync;
    if (!y)
        return;
    uint64_t durable = crdt_replica_durable_seq(s->replica);
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
                       crdt_replica_last_error(s->replica) ? crdt_replica_last_error(s->replica)
                                                           : "writes are refused until restart");
            continue;
        }
        y->acks_sent++;
        enqueue(ack.s,
                msg_printf("{\"type\":\"ack\",\"id\":%" PRIu64 ",\"seq\":%" PRIu64
                           ",\"applied\":%s%s}",
                           ack.id, ack.seq, ack.applied ? "true" : "false",
                           ack.dup ? ",\"duplicate\":true" : ""),
                false, 0, false);
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
    while (y->head)
        sess_free(y, y->head);
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
        qbytes += ss->qbytes;
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
    gw_prom_family(&o, "crdtd_ws_applies_total", "counter", "Applies run (duplicates not counted).");
    gw_prom_u64(&o, "crdtd_ws_applies_total", NULL, 0, y->applies);
    gw_prom_family(&o, "crdtd_ws_acks_total", "counter", "Acks sent (duplicates included).");
    gw_prom_u64(&o, "crdtd_ws_acks_total", NULL, 0, y->acks_sent);
    gw_prom_family(&o, "crdtd_ws_slow_consumer_total", "counter", "Sessions closed with 4008.");
    gw_prom_u64(&o, "crdtd_ws_slow_consumer_total", NULL, 0, y->slow);
    gw_prom_family(&o, "crdtd_ws_send_queue_bytes", "gauge", "Bytes queued for all sessions.");
    gw_prom_u64(&o, "crdtd_ws_send_queue_bytes", NULL, 0, qbytes);
    gw_prom_family(&o, "crdtd_ws_pending_acks", "gauge", "Acks waiting for durability.");
    gw_prom_u64(&o, "crdtd_ws_pending_acks", NULL, 0, y->ack_len);
    gw_prom_family(&o, "crdtd_ws_errors_total", "counter", "Error messages sent, by code.");
    for (int c = 0; c < E_COUNT; c++)
        gw_prom_u64(&o, "crdtd_ws_errors_total", &(gw_prom_label_t){"code", err_names[c]}, 1,
                    y->errors[c]);
    return gw_prom_take(&o, NULL);
}
