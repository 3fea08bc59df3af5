/* wsmsg.h - WebSocket messages over libwebsockets: one assembler, refcounted frames, one queue
 *
 * Shared by crdtd's client sessions (sync.c), its peer links (peer.c) and the C client
 * (gateway/client), so each of them reassembles, queues and writes messages the same way.
 *
 * - gw_wsrx_t reassembles one incoming message from the fragments lws hands to
 *   LWS_CALLBACK_RECEIVE / LWS_CALLBACK_CLIENT_RECEIVE, with a size bound: a message over it, or
 *   of a kind the connection does not accept (text / binary), is never buffered whole; it is
 *   discarded as it arrives and reported once, when its last fragment came.
 * - gw_frame_t is an outbound message with LWS_PRE bytes of headroom, reference counted so one
 *   encoding is shared by every connection it goes to.
 * - gw_wsq_t is a FIFO of frames with a byte bound (the slow-consumer bound of a session, the
 *   outbound bound of a peer link).
 * - gw_wswriter_t writes one frame per writable callback (gw_ws_write / gw_wsq_write_next) with
 *   the connection's lws_write flags. A dialled (client) connection's frames are masked by lws in
 *   place, so a frame someone else still holds is written from the writer's private copy. Or it
 *   frames several messages itself into one write (gw_ws_batch_*), masking them when it is a
 *   client's.
 *
 * Nothing here keeps a pointer to a wsi: calls take it as an argument.
 */
#ifndef GW_WSMSG_H
#define GW_WSMSG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <libwebsockets.h>

#include "crdt.h"

#ifdef __cplusplus
extern "C" {
#endif

/* message kinds, as flags */
#define GW_WS_TEXT 1u
#define GW_WS_BINARY 2u

/* ---- the assembler -------------------------------------------------------------------------- */

typedef enum gw_wsrx_result {
    GW_WSRX_MORE = 0,    /* the message goes on: wait for the next fragment */
    GW_WSRX_MESSAGE,     /* a whole message: gw_wsrx_data / gw_wsrx_len, then gw_wsrx_done */
    GW_WSRX_TOO_LARGE,   /* a message over the bound ended (its bytes were dropped) */
    GW_WSRX_WRONG_KIND,  /* a message of a kind not accepted ended (dropped) */
    GW_WSRX_ENOMEM = -1, /* out of memory: close the connection */
} gw_wsrx_result_t;

typedef struct gw_wsrx {
    uint8_t *data;
    size_t len, cap;
    size_t max;      /* largest message kept (bytes); may be changed between messages */
    unsigned accept; /* GW_WS_TEXT | GW_WS_BINARY: the kinds kept */
    bool in_msg;     /* a message has begun and not ended */
    bool binary;     /* the current (or last) message's kind */
    bool discard;    /* the current message is being dropped */
    bool too_large;  /* ... because it is over max (else: its kind) */
    size_t total;    /* bytes of the current message received so far, kept or not */
} gw_wsrx_t;

/* Starts an empty assembler (nothing allocated until the first fragment). */
void gw_wsrx_init(gw_wsrx_t *a, size_t max, unsigned accept);
/* Frees its buffer; the assembler can be used again (gw_wsrx_init not needed). */
void gw_wsrx_free(gw_wsrx_t *a);
/* Feeds one fragment (sans I/O: lws's view of it as arguments). first: it begins a message;
 * final: it ends it; binary: the message's kind; remaining: bytes of this frame still to come
 * (lws_remaining_packet_payload), so an oversized message is seen as early as possible. Returns a
 * gw_wsrx_result_t. A first fragment in the middle of a message starts over. */
int gw_wsrx_push(gw_wsrx_t *a, const void *in, size_t len, bool first, bool final, bool binary,
                 size_t remaining);
/* gw_wsrx_push with the fragment's flags read from wsi (in a RECEIVE / CLIENT_RECEIVE callback). */
int gw_wsrx_receive(gw_wsrx_t *a, struct lws *wsi, const void *in, size_t len);
/* After GW_WSRX_MESSAGE: the message (borrowed until gw_wsrx_done or the next push). */
static inline const uint8_t *gw_wsrx_data(const gw_wsrx_t *a)
{
    return a->data ? a->data : (const uint8_t *)"";
}
static inline size_t gw_wsrx_len(const gw_wsrx_t *a)
{
    return a->len;
}
/* True while the current message is being dropped (a peer link closes at once on it). */
static inline bool gw_wsrx_discarding(const gw_wsrx_t *a)
{
    return a->in_msg && a->discard;
}
/* The message was handled: empties the buffer (and frees it when it grew past 64 KiB, so a big
 * message's buffer is not kept for the connection's lifetime). */
void gw_wsrx_done(gw_wsrx_t *a);

/* ---- frames --------------------------------------------------------------------------------- */

typedef struct gw_frame {
    unsigned refs;
    size_t len;       /* payload bytes, at gw_frame_data() */
    uint8_t *buf;     /* LWS_PRE bytes of headroom, then the payload (crdt_free) */
    uint64_t meta[4]; /* the owner's (a peer link's DELTAS: first/max seq, through, count) */
} gw_frame_t;

/* A new frame of len payload bytes (uninitialised), or NULL. One reference. */
gw_frame_t *gw_frame_new(size_t len);
/* A new frame holding a copy of p[0..len), or NULL. */
gw_frame_t *gw_frame_copy(const void *p, size_t len);
/* Starts b (empty) with LWS_PRE bytes of headroom, so the bytes appended after it can become a
 * frame without a copy (gw_frame_adopt). 0 or CRDT_ENOMEM. */
int gw_frame_buf_start(crdt_buf_t *b, size_t hint);
/* A frame that takes over b's bytes (b must have been begun by gw_frame_buf_start; it is left
 * empty either way), or NULL (b freed). */
gw_frame_t *gw_frame_adopt(crdt_buf_t *b);
static inline uint8_t *gw_frame_data(const gw_frame_t *f)
{
    return f->buf + LWS_PRE;
}
/* Adds a reference (returns f); gw_frame_unref drops one and frees the frame at zero (NULL ok). */
static inline gw_frame_t *gw_frame_ref(gw_frame_t *f)
{
    f->refs++;
    return f;
}
void gw_frame_unref(gw_frame_t *f);

/* ---- the queue ------------------------------------------------------------------------------ */

typedef struct gw_wsq_item {
    gw_frame_t *f;
    uint64_t tag; /* the owner's (a session: the resume cursor of a change) */
    size_t cost;  /* bytes counted against the bound: f->len + the extra given to push */
} gw_wsq_item_t;

typedef struct gw_wsq {
    gw_wsq_item_t *ring;
    size_t head, n, cap;
    size_t bytes; /* the cost of what is queued */
    size_t bound; /* 0: unbounded */
} gw_wsq_t;

/* push flags */
#define GW_WSQ_PACED 1u /* accepted over the bound: the caller paces these itself (catch-ups) */

/* Starts an empty queue with a byte bound (0: none). */
void gw_wsq_init(gw_wsq_t *q, size_t bound);
/* Drops every frame (their references) and frees the ring. */
void gw_wsq_free(gw_wsq_t *q);
/* Drops every frame; the queue stays usable. */
void gw_wsq_clear(gw_wsq_t *q);
/* Queues f (steals the reference; NULL is CRDT_ENOMEM), counting f->len + extra bytes. A frame
 * that would take a non-empty queue over its bound is refused with CRDT_ELIMIT unless
 * GW_WSQ_PACED (an empty queue takes any one frame). Returns 0, CRDT_ELIMIT or CRDT_ENOMEM; on
 * failure f is released. */
int gw_wsq_push(gw_wsq_t *q, gw_frame_t *f, uint64_t tag, size_t extra, unsigned flags);
/* Takes the oldest item (its reference moves to the caller); false when empty. */
bool gw_wsq_pop(gw_wsq_t *q, gw_wsq_item_t *out);
/* The oldest item, left queued (borrowed until the queue changes), or NULL when empty. */
static inline const gw_wsq_item_t *gw_wsq_peek(const gw_wsq_t *q)
{
    return q->n ? &q->ring[q->head] : NULL;
}
static inline size_t gw_wsq_len(const gw_wsq_t *q)
{
    return q->n;
}
static inline size_t gw_wsq_bytes(const gw_wsq_t *q)
{
    return q->bytes;
}

/* ---- writing -------------------------------------------------------------------------------- */

typedef struct gw_wswriter {
    unsigned kind; /* GW_WS_TEXT or GW_WS_BINARY: the lws_write flag of every message */
    bool client;   /* a dialled connection (lws masks what it writes, in place) */
    uint8_t *copy; /* private copy: LWS_PRE + cap bytes */
    size_t cap;
    uint64_t messages, bytes; /* written so far */
    size_t blen;              /* a batch being built in copy (gw_ws_batch_*): its bytes */
    unsigned bcount;          /* ... and its messages */
    uint8_t *rnd;             /* a client's batches: random bytes for frame masks (getrandom) */
    unsigned rnd_at;          /* ... of which this many are used */
} gw_wswriter_t;

/* gw_ws_write flags */
#define GW_WS_RELEASING 1u /* the caller drops its reference to f right after the write */

/* Starts a writer for one connection. */
void gw_wswriter_init(gw_wswriter_t *w, unsigned kind, bool client);
void gw_wswriter_free(gw_wswriter_t *w);
/* Writes head[0..hlen) followed by f's payload as one message on wsi (call from its writable
 * callback: one message per callback). The frame's own buffer is written in place when that is
 * safe (no head, and a server connection, or a frame only this caller holds and is releasing),
 * else a private copy is. Returns 0, or -1 when the connection failed or memory ran out (close
 * it). lws keeps what the socket did not take and sends it before the next writable callback. */
int gw_ws_write(gw_wswriter_t *w, struct lws *wsi, const void *head, size_t hlen,
                const gw_frame_t *f, unsigned flags);
/* The same rule for bytes someone else owns (the peer engine's frames): p has LWS_PRE writable
 * bytes before it; sole: no one else holds them and the caller drops them right after the write
 * (then a client connection may mask them in place too). 0 or -1 (close the connection). */
int gw_ws_write_bytes(gw_wswriter_t *w, struct lws *wsi, uint8_t *p, size_t n, bool sole);
/* ---- batches: many messages in one write --------------------------------------------------
 * One lws_write per message costs one TLS record (and one SSL_write and send) per message, and
 * one writable callback, that is one loop turn, each. Several whole messages can instead be
 * framed here, back to back in the writer's copy, and handed to lws as one raw write: one record
 * for a turn's acks and changes (a server's) or applies (a client's). A server writer's frames go
 * unmasked; a client writer (a dialled connection, gw_wswriter_init's client) masks each frame as
 * RFC 6455 section 5.3 requires, with a fresh 4-byte key per frame from the kernel's random
 * source (getrandom(2), as lws's own masks come from /dev/urandom), read 256 bytes at a time. Only
 * for connections without extensions (crdtd and crdtc offer none): the bytes bypass lws's
 * framing, so they must not be interleaved with a message lws is still in the middle of (a
 * connection that batches writes every data message through a batch). */

/* Largest batch: one TLS record's plaintext (a message bigger than this goes on its own). */
#define GW_WS_BATCH_MAX 16384
/* The header of an unmasked final frame of kind (GW_WS_TEXT / GW_WS_BINARY) carrying len payload
 * bytes, into out (at least 10 bytes); its length (2, 4 or 10). */
size_t gw_ws_frame_head(uint8_t *out, unsigned kind, size_t len);
/* Starts an empty batch in w. */
void gw_ws_batch_begin(gw_wswriter_t *w);
/* Appends one message, head[0..hlen) followed by f's payload, framed with w's kind (and masked
 * when w is a client's). 0 or -1 (out of memory, or no random bytes for a mask: the batch is left
 * as it was). */
int gw_ws_batch_add(gw_wswriter_t *w, const void *head, size_t hlen, const gw_frame_t *f);
/* gw_ws_batch_add of a message of another kind than the writer's (GW_WS_TEXT or GW_WS_BINARY):
 * a session that sends text and binary messages batches both in one write. */
int gw_ws_batch_add_as(gw_wswriter_t *w, unsigned kind, const void *head, size_t hlen,
                       const gw_frame_t *f);
/* The bytes the batch holds so far, frame headers included. */
static inline size_t gw_ws_batch_len(const gw_wswriter_t *w)
{
    return w->blen;
}
/* The framed bytes of the batch (valid until the next gw_ws_batch_* call or write). */
static inline const uint8_t *gw_ws_batch_data(const gw_wswriter_t *w)
{
    return w->copy ? w->copy + LWS_PRE : (const uint8_t *)"";
}
/* Writes the batch as one lws_write from wsi's writable callback (lws keeps what the socket did
 * not take and sends it before the next writable callback) and empties it. 0, or -1 when the
 * connection failed (close it). */
int gw_ws_batch_write(gw_wswriter_t *w, struct lws *wsi);

/* Pops the oldest frame of q, writes it and releases it; asks for another writable callback when
 * more is queued. 0 (also when q was empty) or -1 (close the connection). */
int gw_wsq_write_next(gw_wsq_t *q, gw_wswriter_t *w, struct lws *wsi);

#ifdef __cplusplus
}
#endif

#endif /* GW_WSMSG_H */
