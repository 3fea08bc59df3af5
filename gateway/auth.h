/* auth.h - who may do what (auth.c): the token key ring (--token-secret-file, re-read on
 * SIGHUP), bearer tokens on HTTP requests, and THE grant check of HTTP and crdt.v1 sessions
 *
 * Layer: above http.h and token.h; below sync.h, rest.h, roshi.h and main.c.
 *
 * With no secret configured every request and session may do anything (the server says so at
 * start). With a key ring, every HTTP endpoint but /healthz (and /metrics without
 * --metrics-auth) needs `Authorization: Bearer <token>`: 401 without a valid token, 403 for a key
 * outside the token's grants. docs/security.md describes the rules.
 */
#ifndef CRDT_GW_AUTH_H
#define CRDT_GW_AUTH_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "http.h"
#include "server.h"
#include "token.h"

typedef enum gw_access { GW_ACCESS_READ = 0, GW_ACCESS_WRITE } gw_access_t;

/* Why a key is refused (gw_auth_key). */
typedef enum gw_denial {
    GW_DENY_NONE = 0,
    GW_DENY_READ_ONLY,     /* a write by a token with no write grant at all */
    GW_DENY_OUTSIDE_GRANT, /* no grant of the needed kind is a prefix of the key */
} gw_denial_t;

/* Reads the key ring (--token-secret-file or $CRDTD_TOKEN_SECRET) into s->auth. Without one,
 * logs one line saying the node is open, and refuses (-1) a listener on a non-loopback address
 * unless --allow-open. 0, or -1 after logging why. Before gw_sync_init. */
int gw_auth_init(gw_server_t *s);
/* Re-reads the key ring file (SIGHUP): tokens are verified against the new set from now on;
 * sessions already open keep their verified token. A file that no longer parses keeps the old
 * ring (logged); 0 or -1. Without a file configured, nothing to do (0). */
int gw_auth_reload(gw_server_t *s);
void gw_auth_free(gw_server_t *s);

/* Whether tokens are needed (a key ring is loaded). */
bool gw_auth_enabled(const gw_server_t *s);
/* Kids of the ring, comma separated, into buf (for logs and tests). */
void gw_auth_kids(const gw_server_t *s, char *buf, size_t n);

/* Verifies a token against the current ring (gw_token_verify_ring at the current time): a
 * GW_TOKEN_* code, why filled as there. out must be gw_token_clear'ed after any return. */
int gw_auth_verify(const gw_server_t *s, const char *tok, size_t len, gw_token_t *out, char *why,
                   size_t whylen);

/* THE grant check: may token t (NULL: no auth configured, everything allowed) read or write key
 * (or, for a read with prefix set, subscribe to every key under the prefix)? */
gw_denial_t gw_auth_key(const gw_token_t *t, gw_access_t a, const void *key, size_t klen,
                        bool prefix);
/* "read_only", "outside_grant" (or "" for GW_DENY_NONE). */
const char *gw_denial_name(gw_denial_t d);
/* The machine-readable reason of a token verification failure: "missing" (len 0 only by the
 * caller), "malformed", "bad_signature", "expired", "unknown_kid", "internal". */
const char *gw_token_reason(int rc);

/* HTTP: whether the request x may be served at all. When tokens are needed and this path is not
 * open (/healthz; /metrics without --metrics-auth), verifies the bearer token into x->tok (or,
 * on the roshi listener, the --roshi-token-file token when the request has none). false after
 * responding 401 (with WWW-Authenticate: Bearer); the caller then calls gw_http_reply. */
bool gw_auth_http(gw_server_t *s, gw_exchange_t *x);
/* HTTP: whether x's token may read or write key; false after responding 403 with the reason
 * (what names the key in the message, e.g. "key" or "[3].key"). */
bool gw_auth_http_key(gw_exchange_t *x, gw_access_t a, const void *key, size_t klen,
                      const char *what);
/* x's token, or NULL when no token is needed (for filters such as the change feed's). */
const gw_token_t *gw_auth_http_token(const gw_exchange_t *x);

#endif /* CRDT_GW_AUTH_H */
