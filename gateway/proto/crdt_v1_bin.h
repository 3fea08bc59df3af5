/* crdt_v1_bin.h - binary crdt.v1 (docs/protocol.md, "Binary crdt.v1"), sans I/O
 *
 * A session that negotiates the subprotocol "crdt.v1.bin" speaks crdt.v1 with its data in binary
 * WebSocket messages: subscribe, unsubscribe and apply (client -> server), change, ack and
 * subscribed (server -> client), each a type byte and a few LEB128 varints, keys as length-prefixed
 * bytes, and states and deltas in libcrdt's binary encoding as they are (no JSON, no base64).
 * Everything else (hello, welcome, ping, pong, error, unsubscribed, an apply with a REST-shaped op)
 * stays a JSON text message of crdt_v1.h, which such a session may also send for any message.
 *
 * Decoding fills the same crdt_v1_msg_t as crdt_v1_decode (crdt_v1.h), so a server acts on one
 * struct whatever the framing: a binary apply becomes an apply whose op is the REST merge
 * {"op":"merge","binary":"<base64 of the delta>"}, which the server's op path (gateway/op.c)
 * decodes and checks as it does every merge; a change's state or delta is decoded to m->obj.
 */
#ifndef CRDT_V1_BIN_H
#define CRDT_V1_BIN_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "crdt.h"
#include "crdt_v1.h"

#ifdef __cplusplus
extern "C" {
#endif

#define CRDT_V1_BIN_PROTOCOL "crdt.v1.bin"

/* the type byte, the first of every binary message */
enum {
    CRDT_V1_BIN_SUBSCRIBE = 0x01,   /* id, flags (bit 0: since follows), [since], topics */
    CRDT_V1_BIN_UNSUBSCRIBE = 0x02, /* id, topics */
    CRDT_V1_BIN_APPLY = 0x03,       /* id, key, then the delta's encoding to the end */
    CRDT_V1_BIN_CHANGE = 0x41,      /* cursor, flags (bit 0: full state), seq, key, encoding */
    CRDT_V1_BIN_ACK = 0x42,         /* flags (bit 0 applied, bit 1 duplicate), id, seq */
    CRDT_V1_BIN_SUBSCRIBED = 0x43,  /* id, cursor */
};
/* topics: a varint count, then per topic a kind byte (0 key, 1 prefix), a varint length, bytes */
#define CRDT_V1_BIN_CHANGE_HEAD_MAX (1 + CRDT_VARINT_MAX) /* type byte and cursor */

/* True when m travels as a binary message (the types above; an apply only with a delta). */
bool crdt_v1_bin_has(const crdt_v1_msg_t *m);

/* Decodes one binary message sent by side `from` (CRDT_V1_FROM_CLIENT / _SERVER), with the checks
 * and the error codes of crdt_v1_decode: bad_request (truncated, a varint that is not canonical
 * or over 64 bits, an id out of range, unknown flag bits, bytes after the end, a key of 0 or over
 * max_key bytes, a change's encoding libcrdt refuses), unknown_type (an unknown type byte, or one
 * the other side sends), limit (topics over max_topics), internal. 0 (release m with
 * crdt_v1_msg_clear) or -1 with *err filled and m left empty. */
int crdt_v1_bin_decode(const uint8_t *p, size_t n, unsigned from, const crdt_v1_limits_t *lim,
                       crdt_v1_msg_t *m, crdt_v1_error_t *err);

/* Appends the binary form of m (crdt_v1_bin_has(m)) to out. An apply's delta is m->obj when set,
 * else the "binary" of an op {"op":"merge","binary":..}; a change's encoding is m->obj. 0,
 * CRDT_EINVAL (a type without a binary form, a field it needs missing) or CRDT_ENOMEM; out keeps
 * what it had on failure. */
int crdt_v1_bin_encode(const crdt_v1_msg_t *m, crdt_buf_t *out);

/* A change in two parts, so a server encodes one change once for every session: the shared body
 * (flags, seq, key, encoding of obj; appended to out) and the per-session head (type byte and
 * cursor, written to head; returns its length). head + body is crdt_v1_bin_encode's change. */
int crdt_v1_bin_change_body(const void *key, size_t klen, uint64_t seq, bool full,
                            const crdt_obj_t *obj, crdt_buf_t *out);
size_t crdt_v1_bin_change_head(uint8_t head[CRDT_V1_BIN_CHANGE_HEAD_MAX], uint64_t cursor);

#ifdef __cplusplus
}
#endif

#endif /* CRDT_V1_BIN_H */
