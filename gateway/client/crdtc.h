/* crdtc.h - a C client of crdtd's WebSocket sync protocol (crdt.v1, docs/protocol.md) with an
 * offline-first local replica
 *
 * A crdtc_loop_t is one libwebsockets client context and its event loop; it hosts any number of
 * clients (one connection each) and runs only inside crdtc_loop_service(), so a program (or a
 * test) drives it and every callback runs from there, on the caller's thread.
 *
 * A crdtc_t is one session with its subscriptions, its local replica (key -> crdt_obj_t, into
 * which every state and delta received is merged and every local delta is joined at once) and its
 * queue of applies not yet acknowledged. Applies made while disconnected are queued and sent on
 * (re)connect with their original op ids; the server's per-client high-water mark makes a resend
 * of an applied op a duplicate without effect. After a drop the client reconnects by itself with
 * a capped exponential backoff, says hello with its cursor and re-subscribes with since = cursor,
 * so it receives exactly what it missed.
 *
 * With a state file the cursor, the op id counter and the subscriptions already held survive a
 * restart of the program (the replica and the queue of unacknowledged applies do not: wait for
 * crdtc_pending() == 0 before exiting, and subscribe with since 0 to rebuild the replica).
 */
#ifndef CRDTC_H
#define CRDTC_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <jansson.h>

#include "crdt.h"

#ifdef __cplusplus
extern "C" {
#endif

/* The client's codes are libcrdt's (crdt.h: one error enum for every layer), under names that
 * say what they mean here; crdtc_strerror adds the client's wording, crdt_strerror works too. */
enum {
    CRDTC_OK = CRDT_OK,
    CRDTC_ENOMEM = CRDT_ENOMEM, /* allocation failed */
    CRDTC_EINVAL = CRDT_EINVAL, /* bad argument (empty key, bad client id, ...) */
    CRDTC_ETYPE = CRDT_ETYPE,   /* the local replica holds another type under that key */
    CRDTC_EFULL = CRDT_ELIMIT,  /* the queue of unacknowledged applies is over max_pending */
    CRDTC_EIO = CRDT_EIO,       /* the state file could not be read or written */
    CRDTC_ECONN = CRDT_EUNAVAIL, /* the connection could not be started */
};

/* Returns a static text for a CRDTC_E* code (crdt_strerror's for any other CRDT_E* code). */
const char *crdtc_strerror(int err);

/* ---- the event loop ------------------------------------------------------------------------- */

typedef struct crdtc_loop crdtc_loop_t;

/* Returns a new loop (a libwebsockets client context), or NULL. */
crdtc_loop_t *crdtc_loop_new(void);
/* A loop whose clients may connect over wss:// (crdtc_config_t.tls): the server's certificate
 * must chain to the PEM CA file ca_file (the system store is not used then) or, with ca_file
 * NULL, to the system store, and name the host connected to. NULL on failure. */
crdtc_loop_t *crdtc_loop_new_tls(const char *ca_file);
/* Frees the loop; its clients must have been freed first. */
void crdtc_loop_free(crdtc_loop_t *l);
/* Runs one round of the loop: waits at most timeout_ms (0: does not wait) for network events or
 * timers, handles them (callbacks run here) and writes the state files that changed. Returns 0, or
 * -1 if the loop failed. */
int crdtc_loop_service(crdtc_loop_t *l, int timeout_ms);

/* ---- sessions ------------------------------------------------------------------------------- */

typedef struct crdtc crdtc_t;

typedef struct crdtc_change {
    const void *key; /* borrowed for the call */
    size_t klen;
    uint64_t seq;           /* the change's sequence number */
    uint64_t cursor;        /* the session's resume point after this change */
    bool full;              /* obj is the key's full state (catch-up), else a delta (live) */
    const crdt_obj_t *obj;  /* the state or delta received (borrowed) */
    const crdt_obj_t *head; /* the local replica's object for the key after the merge (borrowed) */
    const json_t *frame;    /* the JSON frame as received (borrowed) */
} crdtc_change_t;

typedef struct crdtc_ack {
    uint64_t id;  /* the op id */
    uint64_t seq; /* the server's change seq */
    bool applied, duplicate;
} crdtc_ack_t;

typedef struct crdtc_welcome {
    uint64_t node, seq, expires;
    const char *session, *subject; /* borrowed for the call */
    uint64_t max_message, max_subscriptions, send_queue, idle_timeout;
} crdtc_welcome_t;

typedef struct crdtc_callbacks {
    void (*welcome_cb)(crdtc_t *c, const crdtc_welcome_t *w, void *ud);
    void (*change_cb)(crdtc_t *c, const crdtc_change_t *ch, void *ud);
    /* a subscribe request (id as crdtc_subscribe returned) finished its catch-up */
    void (*subscribed_cb)(crdtc_t *c, uint64_t id, uint64_t cursor, void *ud);
    void (*ack_cb)(crdtc_t *c, const crdtc_ack_t *a, void *ud);
    /* an error message from the server (id: the request or op id, 0 if none), or a local fault
     * (code "too_large" for a message over max_message, "protocol" for one we cannot read) */
    void (*error_cb)(crdtc_t *c, uint64_t id, const char *code, const char *message, void *ud);
    /* the connection ended: code is the WebSocket close code (the server's, 1000 for our own
     * crdtc_disconnect, 1006 when there was none, 0 when it could not be made); `reconnecting`
     * says whether the client will try again by itself */
    void (*close_cb)(crdtc_t *c, int code, const char *reason, bool reconnecting, void *ud);
} crdtc_callbacks_t;

typedef struct crdtc_config {
    const char *host; /* default "127.0.0.1" */
    int port;         /* default 7379 */
    const char *path; /* default "/" */
    const char *token;
    const char *client_id;  /* 1..64 of [A-Za-z0-9._:-]; required */
    const char *state_file; /* NULL: nothing persisted */
    uint64_t cursor;        /* initial cursor when there is no state file (or it is new) */
    size_t max_message;     /* largest message accepted from the server, default 1 MiB */
    size_t max_pending;     /* bytes of unacknowledged applies, default 64 MiB */
    unsigned backoff_min_ms, backoff_max_ms; /* default 50 and 5000 */
    bool no_reconnect;                       /* do not reconnect by itself */
    /* bound of timelines crdtc_local creates: crdtd's --timeline-max-size (default 1000, as
     * crdtd's; 0 would be unbounded), so local deltas carry the server's bound */
    int64_t timeline_max_size; /* 0: the default 1000; negative: unbounded */
    crdtc_callbacks_t cb;
    void *ud;
    bool tls; /* wss://: needs a loop from crdtc_loop_new_tls */
    /* negotiate binary crdt.v1 (subprotocol crdt.v1.bin, docs/protocol.md): changes, acks and
     * subscribed arrive as binary messages (a change's `frame` is then NULL); what this client
     * sends stays JSON, which such a session accepts too */
    bool binary;
} crdtc_config_t;

/* Returns a new client on loop l (not connected yet), or NULL (bad config, or a state file that
 * exists but cannot be read: the reason is in *err when err is not NULL). Strings are copied. */
crdtc_t *crdtc_new(crdtc_loop_t *l, const crdtc_config_t *cfg, int *err);
/* Closes the connection (if any), writes the state file and frees everything. */
void crdtc_free(crdtc_t *c);

/* Starts connecting (returns at once; the loop does the rest). 0 or CRDTC_ECONN. Reconnects by
 * itself afterwards unless no_reconnect, or the server refused the token (close 4001/4003). */
int crdtc_connect(crdtc_t *c);
/* Closes the connection with code 1000 and stops reconnecting; queued applies stay queued. */
void crdtc_disconnect(crdtc_t *c);
/* Drops the connection at once without a close handshake (as a network fault would); the client
 * reconnects per its settings. For tests. */
void crdtc_drop(crdtc_t *c);
/* True once the server's welcome arrived on the current connection. */
bool crdtc_ready(const crdtc_t *c);
/* Replaces the token used by later hellos (e.g. after it expired). */
int crdtc_set_token(crdtc_t *c, const char *token);
/* Stops (false) or resumes (true) reading from the socket: the server's queue for us grows. */
void crdtc_set_reading(crdtc_t *c, bool reading);

/* The latest cursor received. */
uint64_t crdtc_cursor(const crdtc_t *c);
/* Applies not acknowledged yet, and those of them already written on the current connection. */
size_t crdtc_pending(const crdtc_t *c);
size_t crdtc_inflight(const crdtc_t *c);
/* The socket of the current connection, or -1 (for socket options and diagnostics). */
int crdtc_fd(const crdtc_t *c);
/* Bytes received in messages / close code of the last connection (0 while open). */
uint64_t crdtc_bytes_in(const crdtc_t *c);
int crdtc_last_close(const crdtc_t *c);
/* Bytes this client holds for input now (partial message buffer): bounded by max_message. */
size_t crdtc_rx_buffered(const crdtc_t *c);

/* ---- subscriptions -------------------------------------------------------------------------- */

/* `since` for subscribe: automatic = the cursor if this key/prefix was already held (earlier in
 * this session or, with a state file, in an earlier run), else 0. */
#define CRDTC_SINCE_AUTO (-1)

/* Subscribes to one key, or to every key starting with a prefix (plen may be 0: every key).
 * Sent now if connected, else on connect; always re-sent on reconnect. Returns the request id
 * (> 0, reported by subscribed_cb) or a negative CRDTC_E* code. */
int64_t crdtc_subscribe(crdtc_t *c, const void *key, size_t klen, int64_t since);
int64_t crdtc_subscribe_prefix(crdtc_t *c, const void *prefix, size_t plen, int64_t since);
/* Drops a subscription made by one of the above (same bytes, same kind); 0 or CRDTC_EINVAL. */
int crdtc_unsubscribe(crdtc_t *c, const void *key, size_t klen, bool prefix);

/* ---- writes --------------------------------------------------------------------------------- */

/* Applies a REST-shaped op to a key (op is borrowed; e.g. {"type":"pncounter","op":"incr"}).
 * The effect reaches the local replica through the subscription feed only (the server timestamps
 * it). Returns the op id (> 0, reported by ack_cb or error_cb) or a negative CRDTC_E* code. */
int64_t crdtc_apply_op(crdtc_t *c, const void *key, size_t klen, const json_t *op);
/* Joins a delta (borrowed) into the local replica at once and sends it to be joined on the server.
 * Returns the op id or a negative code (CRDTC_ETYPE: the local object has another type). */
int64_t crdtc_apply_delta(crdtc_t *c, const void *key, size_t klen, const crdt_obj_t *delta);

/* The local replica's object for a key (borrowed, valid until the next loop round or write), or
 * NULL. With create_type > 0 an absent key gets an empty object of that type, so a libcrdt mutator
 * can run on it (ask the mutator for its delta and hand that to crdtc_apply_delta); NULL then also
 * when the key holds another type. */
crdt_obj_t *crdtc_local(crdtc_t *c, const void *key, size_t klen, crdt_type_t create_type);
/* Calls cb for every key of the local replica (order unspecified); stops when cb returns non-zero
 * and returns that value. */
int crdtc_foreach(const crdtc_t *c,
                  int (*cb)(const void *key, size_t klen, const crdt_obj_t *o, void *ud), void *ud);
size_t crdtc_local_count(const crdtc_t *c);
/* This client's replica id for counters and OR-Sets (derived from the client id, never 0) and a
 * fresh HLC timestamp for LWW registers and sets. */
uint64_t crdtc_replica_id(const crdtc_t *c);
int crdtc_hlc_now(crdtc_t *c, crdt_hlc_ts_t *ts);

#ifdef __cplusplus
}
#endif

#endif /* CRDTC_H */
