/* crdt_v1.h - the crdt.v1 codec (docs/protocol.md): every message to and from C structs, sans I/O
 *
 * One codec for both ends: crdtd's sessions (gateway/sync.c) decode what clients send and encode
 * their replies with it, and the C client (gateway/client) does the opposite. It knows nothing of
 * sockets or of libwebsockets: text in, a struct out (with every check the protocol makes:
 * types, ranges, byte strings, limits, each failure with the documented error code and a message a
 * client can act on), and a struct in, text out.
 *
 * Keys and prefixes travel in the JSON form of byte strings (docs/encoding.md, "Bytes in JSON
 * and URLs": a string when UTF-8 text, else {"base64":..}) and are decoded here; CRDT frames stay
 * JSON where the receiver hands them on as JSON (an apply's op and delta go to the server's op
 * mapping) and are decoded to libcrdt objects where they are joined (a change's state or delta).
 */
#ifndef CRDT_V1_H
#define CRDT_V1_H

#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <jansson.h>

#include "crdt.h"

#ifdef __cplusplus
extern "C" {
#endif

#define CRDT_V1_PROTOCOL "crdt.v1"
#define CRDT_V1_MAX_ID ((uint64_t)1 << 53) /* op ids are 1 .. CRDT_V1_MAX_ID - 1 */
#define CRDT_V1_CLIENT_MAX 64              /* client ids: 1..64 of [A-Za-z0-9._:-] */
#define CRDT_V1_CHANGE_HEAD_MAX 48         /* bytes crdt_v1_change_head writes at most */

typedef enum crdt_v1_type {
    CRDT_V1_NONE = 0,
    /* client -> server */
    CRDT_V1_HELLO,
    CRDT_V1_SUBSCRIBE,
    CRDT_V1_UNSUBSCRIBE,
    CRDT_V1_APPLY,
    CRDT_V1_PING,
    /* server -> client */
    CRDT_V1_WELCOME,
    CRDT_V1_CHANGE,
    CRDT_V1_SUBSCRIBED,
    CRDT_V1_UNSUBSCRIBED,
    CRDT_V1_ACK,
    CRDT_V1_PONG,
    CRDT_V1_ERROR,
    CRDT_V1_TYPE_COUNT
} crdt_v1_type_t;

/* The error codes of `error` messages, in docs/protocol.md's order. CRDT_V1_E_OTHER stands for a
 * code this codec does not know (a newer server's), kept by name in crdt_v1_msg_t.code_name. */
typedef enum crdt_v1_code {
    CRDT_V1_E_BAD_JSON = 0,
    CRDT_V1_E_BAD_REQUEST,
    CRDT_V1_E_UNKNOWN_TYPE,
    CRDT_V1_E_UNKNOWN_OP,
    CRDT_V1_E_WRONG_TYPE,
    CRDT_V1_E_UNAUTHORIZED,
    CRDT_V1_E_TOO_LARGE,
    CRDT_V1_E_LIMIT,
    CRDT_V1_E_STORAGE,
    CRDT_V1_E_EXPIRED,
    CRDT_V1_E_INTERNAL,
    CRDT_V1_E_COUNT,
    CRDT_V1_E_OTHER = CRDT_V1_E_COUNT
} crdt_v1_code_t;

/* The message type's wire name ("hello", ...), or NULL. */
const char *crdt_v1_type_name(crdt_v1_type_t t);
/* The code's wire name ("bad_request", ...), or NULL for CRDT_V1_E_OTHER and out of range. */
const char *crdt_v1_code_name(crdt_v1_code_t c);
/* The code named `name`, or CRDT_V1_E_OTHER. */
crdt_v1_code_t crdt_v1_code_from_name(const char *name);
/* True when c[0..n) is a valid client id. */
bool crdt_v1_client_id_ok(const char *c, size_t n);

/* A key (exact) or a key prefix of a subscribe / unsubscribe. */
typedef struct crdt_v1_topic {
    uint8_t *bytes; /* len bytes (not NUL-terminated; may be NULL when len is 0) */
    size_t len;
    bool prefix;
} crdt_v1_topic_t;

/* welcome's "limits": the server's --ws-* settings. */
typedef struct crdt_v1_server_limits {
    uint64_t max_message, max_subscriptions, send_queue, idle_timeout, max_errors;
} crdt_v1_server_limits_t;

/* One message. Which fields mean something depends on `type` (below, per field).
 *
 * Ownership: a struct filled by crdt_v1_decode owns every pointer in it; release them with
 * crdt_v1_msg_clear. A struct filled by hand for crdt_v1_encode only borrows what it points to
 * (and is not cleared). */
typedef struct crdt_v1_msg {
    crdt_v1_type_t type;
    /* the request or op id: subscribe, unsubscribe, apply, subscribed, unsubscribed, ack, and
     * error when has_id */
    bool has_id;
    uint64_t id;
    /* hello: the token (NUL-terminated, NULL: none) and the client id */
    char *token;
    char client[CRDT_V1_CLIENT_MAX + 1];
    /* hello (0: none), change, subscribed: a cursor */
    uint64_t cursor;
    /* subscribe: "since" when has_since */
    bool has_since;
    uint64_t since;
    /* subscribe, unsubscribe: the keys (prefix false) then the prefixes (prefix true) */
    crdt_v1_topic_t *topics;
    size_t ntopics;
    /* apply, change: the key (1 .. max_key bytes) */
    uint8_t *key;
    size_t klen;
    /* apply: exactly one of op (a REST-shaped op object) and frame (a libcrdt JSON frame to join,
     * the wire's "delta"). change: frame is the state or delta as received (decode only). */
    json_t *op;
    json_t *frame;
    /* change: obj is the state (full) or delta, as a libcrdt object; seq the change's. ack: seq.
     * welcome: seq is the server's last change seq */
    crdt_obj_t *obj;
    bool full;
    uint64_t seq;
    /* ack */
    bool applied, duplicate;
    /* welcome: session and subject NUL-terminated (NULL: absent), expires 0 without a token */
    uint64_t node, expires;
    char *session, *subject;
    bool has_limits;
    crdt_v1_server_limits_t limits;
    /* error: the code (code_name holds the name when it is CRDT_V1_E_OTHER) and the message
     * (NUL-terminated, NULL: none) */
    crdt_v1_code_t code;
    char code_name[32];
    char *message;
} crdt_v1_msg_t;

/* What a decoder accepts. */
typedef struct crdt_v1_limits {
    size_t max_key;    /* key and prefix bytes (decoded); 0: unbounded */
    size_t max_topics; /* keys + prefixes in one subscribe or unsubscribe (error "limit"); 0: any */
} crdt_v1_limits_t;

/* Which side's messages a decoder reads: a server reads client messages and vice versa. */
#define CRDT_V1_FROM_CLIENT 1u
#define CRDT_V1_FROM_SERVER 2u

/* Why a message was refused: the code to answer with, the request id when one could be read
 * (for the error's "id"), the message type when it was readable, and a text for a person. */
typedef struct crdt_v1_error {
    crdt_v1_code_t code;
    crdt_v1_type_t type;
    bool has_id;
    uint64_t id;
    char text[200];
} crdt_v1_error_t;

/* Sets *err's code and text (printf-style); returns -1. For both decoders (JSON and binary). */
int crdt_v1_fail(crdt_v1_error_t *err, crdt_v1_code_t code, const char *fmt, va_list ap)
    __attribute__((format(printf, 3, 0)));

/* Decodes one message (the text of one WebSocket text message) sent by side `from`
 * (CRDT_V1_FROM_CLIENT or CRDT_V1_FROM_SERVER) into *m, checking every field against the
 * protocol and *lim (NULL: no limits). Returns 0 (release m with crdt_v1_msg_clear), or -1 with
 * *err filled and m left empty: bad_json (not a JSON object), bad_request (a field missing, of the
 * wrong type or out of range, a byte string in neither JSON form, a key over max_key), unknown_type (an unknown "type",
 * or one the other side sends), limit (over max_topics), internal (out of memory). */
int crdt_v1_decode(const char *text, size_t len, unsigned from, const crdt_v1_limits_t *lim,
                   crdt_v1_msg_t *m, crdt_v1_error_t *err);
/* Frees what a decoded message owns and zeroes it. */
void crdt_v1_msg_clear(crdt_v1_msg_t *m);

/* True when a and b say the same thing: every field the type uses, topics' bytes, JSON values
 * (json_equal) and objects (crdt_obj_equal; a change's JSON frame is not compared, its
 * object is). For tests and the fuzz harness: decode(encode(m)) equals m. */
bool crdt_v1_msg_equal(const crdt_v1_msg_t *a, const crdt_v1_msg_t *b);

/* Appends the JSON text of m (compact, no NUL) to out. 0, CRDT_EINVAL (a field the type needs is
 * missing, a string that is not UTF-8 other than an error's message, which is then replaced) or
 * CRDT_ENOMEM; out keeps what it had before on failure. */
int crdt_v1_encode(const crdt_v1_msg_t *m, crdt_buf_t *out);

/* A change message in two parts, so a server encodes a change once and shares it between the
 * sessions it goes to: the body `"key":..,"seq":S,"state"|"delta":F}` (appended to out, from obj
 * or, when obj is NULL, the JSON frame) and the per-session head `{"type":"change","cursor":C,`
 * (written to head, at most CRDT_V1_CHANGE_HEAD_MAX bytes; returns its length). head + body is
 * what crdt_v1_encode writes for a change. 0, CRDT_EINVAL or CRDT_ENOMEM. */
int crdt_v1_encode_change_body(const void *key, size_t klen, uint64_t seq, bool full,
                               const crdt_obj_t *obj, const json_t *frame, crdt_buf_t *out);
size_t crdt_v1_change_head(char head[CRDT_V1_CHANGE_HEAD_MAX], uint64_t cursor);

#ifdef __cplusplus
}
#endif

#endif /* CRDT_V1_H */
