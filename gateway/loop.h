/* loop.h - the event loop (loop.c): the lws context's lifetime, the group commit and the tick,
 * the queue of work waiting for durability, and fan-out of the store's events
 *
 * Layer: above util.h, config.h and metrics.h, below server.h (which embeds gw_loop_t) and every
 * unit that serves connections (http.c, sync.c, peer.c). The loop calls those units only through
 * what they registered (sinks, durability waiters, the lws protocol list main.c hands it), so
 * dependencies run one way.
 *
 * One lws context, one thread, one poll loop. Handlers write through the store; the first write
 * of a loop turn schedules the group commit (gw_loop_schedule_flush), a lws_sul timer at 0 us, so
 * every write of that turn shares one crdt_store_flush (and with --fsync always one fsync). The
 * store's durable event then releases the waiters whose seq is durable (HTTP responses), and is
 * passed on to the sinks (sessions' acks, peers' outbox); its change event is passed on to the
 * sinks with the change's origin.
 */
#ifndef CRDT_GW_LOOP_H
#define CRDT_GW_LOOP_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <libwebsockets.h>

#include "config.h"
#include "crdt_store.h"

typedef struct gw_server gw_server_t;

/* A unit's interest in the store's events and the loop's end (sessions, peers). Any member may be
 * NULL. change: every change applied, in seq order, with its origin (CRDT_ORIGIN_LOCAL or the
 * peer's node id). durable: durable_seq advanced or a storage failure appeared. shutdown: the loop
 * ends; free what the unit holds, the lws context is destroyed after this. */
typedef struct gw_loop_sink {
    void (*change)(gw_server_t *s, const void *key, size_t klen, uint64_t seq,
                   const crdt_obj_t *delta, uint64_t origin);
    void (*durable)(gw_server_t *s);
    void (*shutdown)(gw_server_t *s);
    /* optional with change (NULL: every change's delta is wanted): whether change would use the
     * delta of a change of key (crdt_store_events_t.wants_delta) */
    bool (*wants_delta)(gw_server_t *s, const void *key, size_t klen);
} gw_loop_sink_t;

#define GW_LOOP_MAX_SINKS 4

/* Work waiting for its write (seq) to be durable; embedded in the waiter's own state. */
typedef struct gw_durable_wait gw_durable_wait_t;
/* rc 0: seq is durable; negative: a storage failure, seq will not become durable. The waiter is
 * off the queue when this runs. */
typedef void (*gw_durable_cb)(gw_server_t *s, gw_durable_wait_t *w, int rc);
struct gw_durable_wait {
    uint64_t seq;
    gw_durable_cb cb;
    gw_durable_wait_t *prev, *next;
    bool queued;
};

typedef struct gw_loop {
    lws_sorted_usec_list_t sul_flush, sul_tick;
    struct ssl_ctx_st *peer_ctx;    /* TLS client context of wss:// peers (SSL_CTX), or NULL */
    struct ssl_ctx_st *listen_ctx;  /* the main listener's server context (its client-certificate
                                     * store is --peer-ca), or NULL; lws owns it */
    struct lws_protocols *protos;   /* the protocol list given to lws: a copy whose first entry
                                     * passes through the loop (to see listen_ctx made) */
    lws_callback_function *http_cb; /* ... to the callback it had */
    bool flush_scheduled;
    gw_durable_wait_t *head, *tail; /* in seq order */
    size_t waiting;
    gw_loop_sink_t sinks[GW_LOOP_MAX_SINKS];
    int nsinks;
    uint64_t durable_events; /* durable events seen (a flush that fired none tells the sinks) */
    struct gw_loop_reader *rhead, *rtail; /* connections to read again (gw_loop_read_more) */
    unsigned nreaders;
    lws_sorted_usec_list_t sul_more; /* keeps the next poll from waiting while some have input */
} gw_loop_t;

/* Registers a sink (copied); before gw_loop_start. 0, or -1 when GW_LOOP_MAX_SINKS are taken. */
int gw_loop_add_sink(gw_server_t *s, const gw_loop_sink_t *sink);
/* Takes the store's events (of s->store; with none yet, gw_loop_use_store takes them later),
 * creates the lws context with protocols (kept; protocols[0] serves HTTP) and the listeners of
 * s->cfg, starts the tick. 0 or -1 (logged). */
int gw_loop_start(gw_server_t *s, const struct lws_protocols *protocols);
/* Makes st (borrowed) s->store and takes its events: for a store that needs the running loop to
 * open (Redis), after gw_loop_start and before the loop is serviced. */
void gw_loop_use_store(gw_server_t *s, crdt_store_t *st);
/* One turn of the loop: waits up to timeout_ms for events and handles them. 0, or -1 when lws
 * failed. */
int gw_loop_service(gw_server_t *s, int timeout_ms);
/* Reading more in the turn. lws reads one TLS record per poll, so a client that writes a record
 * per message (every client does) gets one message read per loop turn: one apply, one group
 * commit and one ack per turn, two read syscalls per record. A reader instead has its TLS input
 * read ahead (OpenSSL takes what the socket holds in one read) and, once the turn's events are
 * handled, the loop reads it again while it has a whole record (or cleartext bytes) waiting: a
 * burst of applies shares one group commit and its acks one write.
 *
 * Input read ahead sits in OpenSSL, where poll cannot see it, so the unit's part of the contract
 * is: gw_loop_read_more from every receive callback and whenever it resumes reading (after
 * lws_rx_flow_control(wsi, 1)), gw_loop_read_stop when it pauses reading or the connection
 * closes. A reader that is forced to read and never reports a receive (only control frames, or
 * a state lws does not read in) is dropped after a bound, back to poll. */
typedef struct gw_loop_reader {
    struct lws *wsi;
    struct gw_loop_reader *prev, *next;
    unsigned idle; /* forced reads since its last receive */
    bool queued;
} gw_loop_reader_t;
/* Makes r wsi's reader and turns TLS read-ahead on for wsi (call once the WebSocket is
 * established: the handshake and the upgrade are read as lws reads them). */
void gw_loop_reader_init(gw_loop_reader_t *r, struct lws *wsi);
/* wsi received data (or may read again): check it for more once the turn's events are handled. */
void gw_loop_read_more(gw_server_t *s, gw_loop_reader_t *r);
/* Reading is paused or the connection closes: forget r (nothing if it is not queued). */
void gw_loop_read_stop(gw_server_t *s, gw_loop_reader_t *r);
/* Whether the listeners serve TLS (--tls-cert and --tls-key). */
bool gw_loop_tls(const gw_server_t *s);
/* Checks that the PEM certificate chain and key files load and belong together; 0, or -1 with
 * the reason in why (and the certificate's subject and expiry in info when it loads). */
int gw_loop_tls_check(const char *cert, const char *key, char *why, size_t whylen, char *info,
                      size_t infolen);
/* The TLS files of the flags load (the listeners' pair, the peers' pair, --peer-ca is readable),
 * checked before anything opens; 0, or -1 after logging why. */
int gw_loop_check(const gw_config_t *c);
/* SIGHUP: re-reads --tls-cert and --tls-key into both listeners (new connections get the new
 * certificate, open ones keep theirs). A pair that does not load keeps the old one (logged).
 * 0 or -1; nothing to do without TLS. */
int gw_loop_tls_reload(gw_server_t *s);
/* SIGHUP: re-reads the peers' TLS files: --peer-cert/--peer-key (presented when dialling) and
 * --peer-ca (trusted when dialling, and for the client certificates the main listener asks
 * peers for). Links made from now on use them, open links keep theirs. All or nothing: a pair
 * that does not load or match, a certificate that is expired or not yet valid, or one that does
 * not verify against the (new) --peer-ca keeps everything as it was, logged with the reason.
 * 0 or -1; nothing to do without peer TLS. */
int gw_loop_peer_tls_reload(gw_server_t *s);
/* Runs turns until s->stopping, then gw_loop_finish. */
void gw_loop_run(gw_server_t *s);
/* Drains: makes what was written durable, answers the waiters, serves for at most about a second
 * while some still wait, runs the sinks' shutdown and destroys the context. */
void gw_loop_finish(gw_server_t *s);
/* Runs the group commit now (the store's durable event then releases the waiters). */
void gw_loop_flush(gw_server_t *s);
/* To be called after a write (seq advanced): schedules the group commit of this turn. */
void gw_loop_schedule_flush(gw_server_t *s);
/* Queues w to be called once seq is durable (or storage failed); schedules the flush. w must
 * stay valid until its callback ran or gw_loop_unwait(w). */
void gw_loop_wait_durable(gw_server_t *s, gw_durable_wait_t *w, uint64_t seq, gw_durable_cb cb);
/* Takes w off the queue (no callback); nothing if it is not queued. */
void gw_loop_unwait(gw_server_t *s, gw_durable_wait_t *w);
/* True once a flush failed or the store reports an error: writes cannot be promised durable. */
bool gw_loop_storage_failed(const gw_server_t *s);

#endif /* CRDT_GW_LOOP_H */
