/* crdt_peer.h - the peer engine: replication between nodes (crdt-peer.v1), sans I/O
 *
 * One engine (crdt_peers_t) per node holds every link of the node and a record per peer. It owns
 * the protocol (docs/replication.md, "Peer links"): the handshake with its HMAC proofs and clock
 * check, the outbox and batching of local changes, acks, resume marks and the epoch (persisted
 * as the store mark "peers"), catch-up from the change feed, anti-entropy sessions (run by the
 * store over its own index), keepalive and dead-link deadlines, duplicate-link resolution, dial
 * backoff and per-peer statistics. It reads and writes data only through the store interface
 * (crdt_store.h), with the peer's node id as the origin of what it applies.
 *
 * It does no I/O: no sockets, no clock reads, no global state. The transport (gateway/peer.c over
 * libwebsockets, or tests/test_peer_sim.c's simulated network) hands it whole received messages,
 * new and closed links, store events and the time (monotonic ms, `now` on every call); the engine
 * hands back, through the host callbacks, which links have frames to write (pulled one at a time
 * with crdt_peer_link_pull), which to close, when to dial a slot, and when to call
 * crdt_peers_tick next (crdt_peers_deadline). Randomness (nonces, epochs, jitter, salts) and the
 * wall clock of the handshake come from host callbacks too, so a simulation is deterministic.
 *
 * Not thread-safe: one thread (the event loop) calls everything.
 *
 * Store completions: the engine issues every store call callback-style, and the completions of
 * apply, changes, rsx_step, rsx_keys, mark_get and mark_put may run after the call returned (a
 * store over the network, issue 16; tests/test_peer_sim.c runs seeds over
 * crdt_store_deferred_wrap). Their contexts live on the heap (one per received message, catch-up
 * read, anti-entropy step, repair message or marks read), on the engine's list until they
 * complete; a link closed first detaches them. The applies of one link complete in order for the
 * engine: a batch is acknowledged only once it and every earlier one completed (and once durable,
 * as always). Catch-up reads one chunk at a time, a repair message is built one rsx_keys call at
 * a time, and an anti-entropy session's steps are serialized (messages received meanwhile wait).
 * Until the marks are read at creation, the engine refuses links and its dials wait. The store
 * must not run the completions of the engine's calls after crdt_peers_free (close it after, which
 * drops them, or run them before); the marks written by crdt_peers_free itself may complete at
 * any time.
 */
#ifndef CRDT_PEER_H
#define CRDT_PEER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "crdt_store.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct crdt_peers crdt_peers_t;
typedef struct crdt_peer_link crdt_peer_link_t;
/* A message to write (one WebSocket binary message), shared by reference between links. */
typedef struct crdt_peer_frame crdt_peer_frame_t;

/* What the engine asks of its transport. Every callback but random/wall_ms/log may be called from
 * inside any engine call; none may call back into the engine except `dial` (which opens the link
 * with crdt_peers_link_new and may report its failure with crdt_peer_link_closed). */
typedef struct crdt_peers_host {
    void *ud;
    /* The link (link_ud as given to crdt_peers_link_new) has frames: pull when it can write. */
    void (*want_write)(void *ud, void *link_ud);
    /* Close the link's transport. abandon false: after writing what crdt_peer_link_pull still
     * returns (it returns -1 once done; the transport should also enforce a short timeout), then
     * report crdt_peer_link_closed. abandon true: the engine has already forgotten the link (a
     * connection that never completed its upgrade); kill it and report nothing. */
    void (*close)(void *ud, void *link_ud, bool abandon);
    /* Dial slot `slot` now: open an outbound connection and call crdt_peers_link_new(slot). */
    void (*dial)(void *ud, int slot);
    /* n random bytes (nonces, epoch, jitter, session salts); 0 or -1. */
    int (*random)(void *ud, void *buf, size_t n);
    /* The node's wall clock, ms since the Unix epoch (compared with the peer's in the handshake).
     */
    uint64_t (*wall_ms)(void *ud);
    /* One log line, without a newline. */
    void (*log)(void *ud, const char *line);
    /* Entries from a peer were applied to the store: its group commit should run (flush) soon,
     * then crdt_peers_on_durable. May be NULL. */
    void (*applied)(void *ud);
    /* The other end of the link says it is node `node_id` (its handshake, before anything else is
     * exchanged): NULL to go on, or why the transport refuses that claim (its TLS certificate
     * names another node, say); the link is then closed with that reason. May be NULL. */
    const char *(*identify)(void *ud, void *link_ud, uint64_t node_id);
} crdt_peers_host_t;

typedef struct crdt_peers_config {
    const char *cluster;   /* must match on both ends of a link (at most 63 bytes) */
    const uint8_t *secret; /* the cluster secret (copied), at least 16 bytes */
    size_t secret_len;
    size_t queue_bytes;            /* outbound queue bound per link and for the outbox (64 MiB) */
    unsigned batch_ms;             /* wait at most this long to fill a batch (5) */
    unsigned anti_entropy_ms;      /* period of anti-entropy rounds, 0: only on connect (0) */
    uint64_t max_clock_drift_ms;   /* refuse a peer whose wall clock differs more (24 h); 0: off */
    size_t headroom;               /* writable bytes before every frame's payload (LWS_PRE) */
    int nslots;                    /* dial slots 0..nslots-1 (configured peers), at most 16 */
    const char *const *slot_names; /* a label per slot (its URL), shown in the status */
    const char *legacy_state;      /* text of an old peers.state file, read when the store holds
                                      no "peers" mark yet (upgrade), or NULL */
    bool verbose;                  /* log every anti-entropy round */
} crdt_peers_config_t;

/* Fills *cfg with the defaults. */
void crdt_peers_config_init(crdt_peers_config_t *cfg);

/* A new engine over st (borrowed; must outlive it) with cfg (copied) and host (copied). Reads the
 * "peers" mark (the epoch and what we applied of each peer) and schedules the first dials.
 * NULL with *err on bad config or allocation failure. */
crdt_peers_t *crdt_peers_new(crdt_store_t *st, const crdt_peers_config_t *cfg,
                             const crdt_peers_host_t *host, uint64_t now, crdt_error_t *err);
/* Writes the marks if they changed and frees everything; links are forgotten (the transport
 * closes its connections itself, sending nothing more). */
void crdt_peers_free(crdt_peers_t *P);

/* ---- store events and time --------------------------------------------------------------------
 */

/* Every change the store applied (its change event). */
void crdt_peers_on_change(crdt_peers_t *P, const void *key, size_t klen, uint64_t seq,
                          const crdt_obj_t *delta, uint64_t origin, uint64_t now);
/* The store's durable seq may have advanced (its durable event, or after a flush). */
void crdt_peers_on_durable(crdt_peers_t *P, uint64_t now);
/* Timer work: batches, keepalive, handshake and session timeouts, anti-entropy rounds, dials,
 * mark writes. Call at (or after) crdt_peers_deadline. */
void crdt_peers_tick(crdt_peers_t *P, uint64_t now);
/* The earliest time crdt_peers_tick has work (UINT64_MAX: none). */
uint64_t crdt_peers_deadline(const crdt_peers_t *P);

/* ---- links ------------------------------------------------------------------------------------
 */

/* A new link: slot >= 0 for an outbound connection of that dial slot (call
 * crdt_peer_link_established once the connection is up), -1 for an inbound one (its challenge is
 * queued at once). addr names the other end in logs and the status; link_ud is passed to the
 * host callbacks. NULL when there are too many links (logged; close the connection). */
crdt_peer_link_t *crdt_peers_link_new(crdt_peers_t *P, int slot, const char *addr, void *link_ud,
                                      uint64_t now);
/* The outbound connection is established: messages may flow. */
void crdt_peer_link_established(crdt_peer_link_t *l, uint64_t now);
/* The largest message the link accepts now (smaller before the peer proved the secret): the
 * transport refuses a bigger one as soon as its header announces it (crdt_peer_link_fault). */
size_t crdt_peer_link_max_message(const crdt_peer_link_t *l);
/* One whole received message (borrowed). */
void crdt_peer_link_receive(crdt_peer_link_t *l, const void *msg, size_t n, uint64_t now);
/* A fault the transport found (a text frame, an oversized message): logged, refused, closed. */
void crdt_peer_link_fault(crdt_peer_link_t *l, const char *why, uint64_t now);
/* The next frame to write: 1 and *f (a reference the caller releases once written), 0 when
 * nothing is due now, -1 when the transport should close now. */
int crdt_peer_link_pull(crdt_peer_link_t *l, crdt_peer_frame_t **f, uint64_t now);
/* True while pull would return something (a frame or -1). */
bool crdt_peer_link_wants_write(const crdt_peer_link_t *l);
/* The transport is gone (why: shown as the peer's last error, may be NULL): frees the link,
 * schedules a redial of its slot. */
void crdt_peer_link_closed(crdt_peer_link_t *l, const char *why, uint64_t now);

/* The frame's payload (`headroom` writable bytes precede it), its length, whether other links
 * still hold it (a transport that modifies bytes in place, as a masking WebSocket client does,
 * must write a private copy then), and the release of a pulled reference. */
uint8_t *crdt_peer_frame_data(crdt_peer_frame_t *f);
size_t crdt_peer_frame_len(const crdt_peer_frame_t *f);
bool crdt_peer_frame_shared(const crdt_peer_frame_t *f);
void crdt_peer_frame_release(crdt_peer_frame_t *f);

/* ---- status -----------------------------------------------------------------------------------
 */

typedef struct crdt_peer_status {
    int slot;          /* dial slot, -1 for a node that only dialled us */
    const char *name;  /* the slot's label, "" for an inbound-only node */
    uint64_t node_id;  /* 0 until a handshake told us */
    const char *state; /* "up", "handshake", "connecting", "standby", "down" */
    const char *mode;  /* "live", "catchup", or NULL while not up */
    bool outbound;     /* direction of the link up (or dialled) */
    char address[280];
    uint64_t ack_sent, ack_received; /* applied-through marks: ours of theirs, theirs of ours */
    uint64_t lag_deltas;             /* our last seq minus ack_received */
    double lag_seconds;              /* age of the oldest release not acked */
    uint64_t ae_rounds, keys_repaired, keys_repair_sent, type_conflicts;
    uint64_t deltas_sent, deltas_received, bytes_sent, bytes_received;
    uint64_t connects; /* times a link came up */
    char last_error[200];
} crdt_peer_status_t;

/* Fills up to max entries (one per dial slot and per inbound-only node) and returns how many
 * there are. */
size_t crdt_peers_status(const crdt_peers_t *P, crdt_peer_status_t *out, size_t max, uint64_t now);

typedef struct crdt_peers_stats {
    uint64_t epoch;            /* this node's replication epoch */
    uint64_t outbox_overflows; /* unsent deltas dropped for the change feed */
    uint64_t clock_refusals;   /* handshakes refused for clock drift (either side detecting) */
    size_t links;              /* links alive, handshakes included */
} crdt_peers_stats_t;
void crdt_peers_stats(const crdt_peers_t *P, crdt_peers_stats_t *out);

#ifdef __cplusplus
}
#endif

#endif /* CRDT_PEER_H */
