/* peer_wire.h - private to the replicator: the messages of the peer protocol crdt-peer.v1
 * (encoders, decoders, handshake proofs). No sockets here: the peer engine (peer.c) builds and
 * parses whole messages, a transport carries them. docs/replication.md, "Peer links", describes
 * the format. */
#ifndef CRDT_PEER_WIRE_H
#define CRDT_PEER_WIRE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "crdt.h"

/* Handshake version: 2 added the wall clocks (challenge and hello) for the drift check. */
#define PW_VERSION 2
#define PW_NONCE_LEN 32
#define PW_PROOF_LEN 32
/* Largest peer message either way, bytes: bigger ones are refused and the link closed. */
#define PW_MAX_MESSAGE (16u << 20)
/* Largest key a peer may send (the HTTP API's --max-key is at most this). */
#define PW_MAX_KEY (64u << 10)
/* Deltas and states are batched into messages of about this size. */
#define PW_BATCH_BYTES (64u << 10)
/* ... and at most this many entries. */
#define PW_BATCH_COUNT 1024u

/* Message types: the first byte of every message. */
enum pw_type {
    PW_CHALLENGE = 1, /* server -> client, first: version, node, epoch, nonce */
    PW_HELLO = 2,     /* client -> server: version, cluster, node, epoch, nonce, resume, proof */
    PW_WELCOME = 3,   /* server -> client: resume, proof; the link is up */
    PW_REFUSE = 4,    /* either: reason code and text; the sender closes the link */
    PW_DELTAS = 5,    /* origin's deltas or states with their seqs, and `through` */
    PW_ACK = 6,       /* applied-through mark: the receiver durably applied through this seq */
    PW_AE = 7,        /* one anti-entropy (crdt_reconcile) message */
    PW_REPAIR = 8,    /* states of keys found different by anti-entropy */
    PW_PING = 9,      /* keepalive, no payload */
    PW_BYE = 10,      /* reason code; the sender closes the link (1: duplicate link) */
};

enum pw_refuse_code {
    PW_R_PROTOCOL = 1, /* malformed or unexpected message */
    PW_R_VERSION = 2,  /* incompatible protocol version */
    PW_R_CLUSTER = 3,  /* cluster name differs */
    PW_R_PROOF = 4,    /* wrong proof of the shared secret */
    PW_R_SELF = 5,     /* same node id as ours */
    PW_R_BUSY = 6,     /* too many links */
    PW_R_CLOCK = 7,    /* wall clocks differ by more than the drift bound */
};

enum pw_bye_code { PW_BYE_DUPLICATE = 1, PW_BYE_SHUTDOWN = 2 };

/* A bounds-checked reader: every getter returns false (and sets bad) past the end. */
typedef struct pw_reader {
    const uint8_t *p, *end;
    bool bad;
} pw_reader_t;

void pw_reader_init(pw_reader_t *r, const void *p, size_t n);
bool pw_get_u8(pw_reader_t *r, uint8_t *v);
bool pw_get_u32(pw_reader_t *r, uint32_t *v);
bool pw_get_u64(pw_reader_t *r, uint64_t *v);
/* Unsigned LEB128, canonical, at most 10 bytes and 64 bits (libcrdt's crdt_varint_get). */
bool pw_get_varint(pw_reader_t *r, uint64_t *v);
/* Borrows n bytes from the input. */
bool pw_get_bytes(pw_reader_t *r, size_t n, const uint8_t **out);
static inline size_t pw_left(const pw_reader_t *r)
{
    return (size_t)(r->end - r->p);
}

/* Appenders; 0 or CRDT_ENOMEM. */
int pw_put_u8(crdt_buf_t *b, uint8_t v);
int pw_put_u32(crdt_buf_t *b, uint32_t v);
int pw_put_u64(crdt_buf_t *b, uint64_t v);
int pw_put_varint(crdt_buf_t *b, uint64_t v);
/* Little-endian store at a fixed place (for fields patched after the fact). */
void pw_store_u32(uint8_t *p, uint32_t v);
void pw_store_u64(uint8_t *p, uint64_t v);

/* ---- handshake ------------------------------------------------------------------------------ */

typedef struct pw_challenge {
    uint8_t version;
    uint64_t node_id;
    uint64_t epoch;
    uint64_t durable;  /* the server's durable seq: what its catch-up to the client will reach */
    uint64_t clock_ms; /* the server's wall clock, ms since the Unix epoch */
    uint8_t nonce[PW_NONCE_LEN];
} pw_challenge_t;

typedef struct pw_hello {
    uint8_t version;
    char cluster[64]; /* NUL-terminated */
    uint64_t node_id;
    uint64_t epoch;
    uint64_t durable;  /* the client's durable seq */
    uint64_t clock_ms; /* the client's wall clock, ms since the Unix epoch */
    uint8_t nonce[PW_NONCE_LEN];
    uint64_t resume; /* the client durably applied the server's seqs through this (its epoch) */
    uint8_t proof[PW_PROOF_LEN];
} pw_hello_t;

typedef struct pw_welcome {
    uint64_t resume; /* the server durably applied the client's seqs through this */
    uint8_t proof[PW_PROOF_LEN];
} pw_welcome_t;

int pw_encode_challenge(crdt_buf_t *b, const pw_challenge_t *c);
/* Encodes everything but the proof (the proof covers these bytes; see pw_proof). */
int pw_encode_hello_body(crdt_buf_t *b, const pw_hello_t *h);
int pw_encode_welcome_body(crdt_buf_t *b, const pw_welcome_t *w);
int pw_encode_refuse(crdt_buf_t *b, uint8_t code, const char *text);

/* Decoders of whole messages (type byte included). They return 0, or -1 with a static reason in
 * *why. A hello or challenge of another version decodes only its version (returns -2): the rest
 * of its layout is unknown. */
int pw_decode_challenge(const uint8_t *m, size_t n, pw_challenge_t *c, const char **why);
int pw_decode_hello(const uint8_t *m, size_t n, pw_hello_t *h, size_t *body_len, const char **why);
int pw_decode_welcome(const uint8_t *m, size_t n, pw_welcome_t *w, size_t *body_len,
                      const char **why);
/* code and text (copied, NUL-terminated, non-printable bytes replaced) */
int pw_decode_refuse(const uint8_t *m, size_t n, uint8_t *code, char *text, size_t cap);
const char *pw_refuse_text(uint8_t code);

/* The proofs: HMAC-SHA256 under the shared secret of a role label and the transcript so far.
 * The client proves over "crdt-peer.v1 client" | challenge | hello body; the server over
 * "crdt-peer.v1 server" | challenge | hello (with its proof) | welcome body. So neither proof can
 * be replayed on another link (fresh nonces on both sides) or in the other role. */
void pw_proof(const uint8_t *secret, size_t slen, bool server, const crdt_buf_t *transcript,
              uint8_t out[PW_PROOF_LEN]);
/* Constant-time comparison of two proofs: true when equal. */
bool pw_proof_equal(const uint8_t a[PW_PROOF_LEN], const uint8_t b[PW_PROOF_LEN]);

/* ---- data ------------------------------------------------------------------------------------ *
 * DELTAS: type, from:u64, through:u64, count:u32,
 *         count x entry(seq:varint klen:varint key len:varint obj)
 *   the entries cover the sender's changes in (from, through]; a receiver that got less than
 *   `from` on this link lost a message (a middlebox dropped bytes) and closes the link
 * REPAIR: type, count:u32, count x entry(klen:varint key len:varint obj)
 * obj is a crdt_obj_encode frame. */
#define PW_D_FROM 1
#define PW_D_THROUGH 9
#define PW_D_COUNT 17
#define PW_DELTAS_HDR 21 /* type + from + through + count */
#define PW_REPAIR_HDR 5  /* type + count */

typedef struct pw_entry {
    uint64_t seq; /* 0 in REPAIR */
    const uint8_t *key;
    size_t klen;
    const uint8_t *obj;
    size_t olen;
} pw_entry_t;

/* Parses one entry; false with *why on a malformed one. */
bool pw_get_entry(pw_reader_t *r, bool with_seq, pw_entry_t *e, const char **why);
/* Appends one entry. */
int pw_put_entry(crdt_buf_t *b, bool with_seq, uint64_t seq, const void *key, size_t klen,
                 const void *obj, size_t olen);

#endif /* CRDT_PEER_WIRE_H */
