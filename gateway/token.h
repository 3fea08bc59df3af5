/* token.h - crdt.v1 session tokens: HMAC-SHA256 signed JSON grants (mint and verify)
 *
 * A token is `<kid>.<base64url(payload)>.<base64url(HMAC-SHA256(secret of kid, "<kid>.<payload>"))>`
 * (base64url without padding, RFC 4648 section 5), where kid, the key id, is 1..64 of
 * [A-Za-z0-9_-] and names the secret that signed it, so that a node can hold several secrets and
 * rotate them (docs/security.md). The older two-part form `<payload>.<signature>` (MAC over the
 * payload) is a token of kid "default". Payload:
 * {"sub":"alice","exp":<unix seconds>,"read":[<prefix>,..],"write":[..]} where each grant is a
 * key prefix in the JSON form of byte strings (docs/encoding.md, "Bytes in JSON and URLs"):
 * "feed:" when text, else {"base64":".."}; "" is every key. docs/security.md describes them.
 *
 * Standalone: OpenSSL's libcrypto and jansson only, so crdtd and the crdtc CLI (which mints tokens
 * for tests and operators) share this code.
 */
#ifndef CRDT_GW_TOKEN_H
#define CRDT_GW_TOKEN_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define GW_TOKEN_MAX_LEN 8192  /* longest token accepted, bytes */
#define GW_TOKEN_MAX_GRANTS 64 /* read + write grants, each list */
#define GW_TOKEN_MAX_SUB 128   /* longest subject, bytes */
#define GW_TOKEN_MAX_KID 64    /* longest key id, bytes */
#define GW_TOKEN_MAX_KEYS 32   /* secrets in one key ring */
#define GW_TOKEN_MAX_SECRET 256
#define GW_TOKEN_MIN_SECRET 16
#define GW_TOKEN_DEFAULT_KID "default" /* the kid of two-part tokens and of a lone secret */

enum {
    GW_TOKEN_OK = 0,
    GW_TOKEN_EMALFORMED = -1, /* not two base64url parts, payload not the JSON described */
    GW_TOKEN_EBADMAC = -2,    /* signature does not match (wrong secret or altered token) */
    GW_TOKEN_EEXPIRED = -3,   /* valid signature, but exp <= now; *out is filled all the same */
    GW_TOKEN_ENOMEM = -4,
    GW_TOKEN_EUNKNOWNKID = -5, /* well formed, but no secret of the ring has its kid */
};

typedef struct gw_grant {
    uint8_t *prefix; /* malloc'd (may be NULL when len is 0) */
    size_t len;
} gw_grant_t;

typedef struct gw_token {
    char sub[GW_TOKEN_MAX_SUB + 1]; /* NUL-terminated subject */
    char kid[GW_TOKEN_MAX_KID + 1]; /* key id that signed it ("default" for two-part tokens) */
    int64_t exp;                    /* unix seconds */
    gw_grant_t *read, *write;       /* malloc'd arrays */
    size_t nread, nwrite;
} gw_token_t;

/* Checks the signature of `tok` (len bytes, no NUL needed) under the secret, then parses the
 * payload into *out (which the caller must gw_token_clear after any return, even an error; it is
 * zeroed first). `now` is unix seconds. Returns GW_TOKEN_OK or a GW_TOKEN_E* code; when `why` is
 * not NULL it receives a short human-readable reason. The MAC is compared in constant time and
 * before the payload is parsed. */
int gw_token_verify(const char *tok, size_t len, const void *secret, size_t slen, int64_t now,
                    gw_token_t *out, char *why, size_t whylen);

/* One secret of a key ring and its id. */
typedef struct gw_token_key {
    char kid[GW_TOKEN_MAX_KID + 1];
    uint8_t secret[GW_TOKEN_MAX_SECRET];
    size_t slen;
} gw_token_key_t;

/* As gw_token_verify, against a key ring: the token's kid (from its first part, or "default")
 * picks the secret; GW_TOKEN_EUNKNOWNKID when the ring has none of that id. out->kid is set once
 * the kid is read, whatever the result after it. */
int gw_token_verify_ring(const char *tok, size_t len, const gw_token_key_t *keys, size_t nkeys,
                         int64_t now, gw_token_t *out, char *why, size_t whylen);

/* Parses a key ring file's text (len bytes, no NUL needed) into keys[0..cap) and *n:
 * lines `kid:secret` (kid as in tokens, secret GW_TOKEN_MIN_SECRET..GW_TOKEN_MAX_SECRET bytes,
 * the rest of the line); blank lines and lines starting with '#' are skipped; CR before LF is
 * dropped. A text of one line without ':' is a lone secret of the older format, kid "default".
 * 0, or -1 with the reason (and line) in why: a malformed line, a duplicate kid, a secret too short
 * or too long, more than cap keys, no key at all. */
int gw_token_keys_parse(const char *text, size_t len, gw_token_key_t *keys, size_t cap, size_t *n,
                        char *why, size_t whylen);

/* Whether kid (NUL-terminated) is a valid key id: 1..GW_TOKEN_MAX_KID of [A-Za-z0-9_-]. */
bool gw_token_kid_ok(const char *kid);

/* Frees what *t holds and zeroes it. */
void gw_token_clear(gw_token_t *t);

/* Mints a token: returns a new malloc'd NUL-terminated string, or NULL (bad argument: a grant with
 * a length and no bytes, a subject longer than GW_TOKEN_MAX_SUB or not UTF-8, too many grants; or
 * no memory). read/write are key prefixes, any bytes (length 0 = every key). */
char *gw_token_make(const void *secret, size_t slen, const char *sub, int64_t exp,
                    const gw_grant_t *read, size_t nread, const gw_grant_t *write, size_t nwrite);

/* As gw_token_make, with a key id: kid NULL makes the two-part token gw_token_make makes (kid
 * "default" to a verifier), any other kid must pass gw_token_kid_ok and makes a three-part token
 * signed over "<kid>.<payload>". */
char *gw_token_make_kid(const char *kid, const void *secret, size_t slen, const char *sub,
                        int64_t exp, const gw_grant_t *read, size_t nread,
                        const gw_grant_t *write, size_t nwrite);

/* Grant checks. A key is readable (writable) when a read (write) grant is a prefix of it; a prefix
 * P is readable when a read grant is a prefix of P. */
bool gw_token_can_read_key(const gw_token_t *t, const void *key, size_t klen);
bool gw_token_can_read_prefix(const gw_token_t *t, const void *prefix, size_t plen);
bool gw_token_can_write_key(const gw_token_t *t, const void *key, size_t klen);

/* base64url without padding of n bytes into a new NUL-terminated string (libcrdt's allocator:
 * crdt_free), or NULL. */
char *gw_b64url_encode(const void *p, size_t n);
/* base64url (padding tolerated when complete) -> a new buffer in *out (crdt_free); 0, or -1
 * (invalid or no memory). */
int gw_b64url_decode(const char *s, size_t n, uint8_t **out, size_t *outlen);

#ifdef __cplusplus
}
#endif

#endif /* CRDT_GW_TOKEN_H */
