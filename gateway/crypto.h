/* crypto.h - HMAC-SHA256, constant-time compare, random bytes, secrets (crypto.c, over OpenSSL's
 * libcrypto, which libwebsockets already links)
 *
 * Layer: above util.h (crypto.c logs through gw_log).
 */
#ifndef CRDT_GW_CRYPTO_H
#define CRDT_GW_CRYPTO_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define GW_HMAC_LEN 32
/* HMAC-SHA256 of msg under key into out[32]. */
void gw_hmac_sha256(const void *key, size_t klen, const void *msg, size_t mlen,
                    uint8_t out[GW_HMAC_LEN]);
/* Constant-time comparison of n bytes: true when equal. */
bool gw_ct_equal(const void *a, const void *b, size_t n);
/* n bytes from the OS's CSPRNG; 0 or -1. */
int gw_random(void *buf, size_t n);
/* A secret from the file at `path` (if non-empty; trailing newlines stripped) or else from the
 * environment variable `env`. Returns its length (>= 16), 0 when neither is set, or -1 after
 * logging why (unreadable, shorter than 16 bytes, longer than cap). */
int gw_load_secret(const char *path, const char *env, uint8_t *buf, size_t cap);

#endif /* CRDT_GW_CRYPTO_H */
