/* crypto.c - HMAC-SHA256, constant-time comparison, random bytes and secrets for tokens and peers
 *
 * OpenSSL's libcrypto, not code of ours: libwebsockets already links it (Debian builds lws with
 * TLS), and a reviewed SHA-256 serves users better than a new one.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/rand.h>

#include "crypto.h"
#include "util.h"

void gw_hmac_sha256(const void *key, size_t klen, const void *msg, size_t mlen,
                    uint8_t out[GW_HMAC_LEN])
{
    unsigned int n = GW_HMAC_LEN;
    static const uint8_t empty[1];
    if (!HMAC(EVP_sha256(), klen ? key : empty, (int)klen, mlen ? msg : empty, mlen, out, &n))
        memset(out, 0, GW_HMAC_LEN); /* only on OOM inside OpenSSL: never matches a real MAC */
}

bool gw_ct_equal(const void *a, const void *b, size_t n)
{
    return CRYPTO_memcmp(a, b, n) == 0;
}

int gw_random(void *buf, size_t n)
{
    return RAND_bytes(buf, (int)n) == 1 ? 0 : -1;
}

int gw_load_secret(const char *path, const char *env, uint8_t *buf, size_t cap)
{
    size_t len = 0;
    if (path && *path) {
        FILE *f = fopen(path, "rb");
        if (!f) {
            gw_log("cannot read the secret file %s: %s", path, strerror(errno));
            return -1;
        }
        len = fread(buf, 1, cap, f);
        int more = fgetc(f) != EOF;
        fclose(f);
        if (more) {
            gw_log("the secret file %s is longer than %zu bytes", path, cap);
            return -1;
        }
    } else {
        const char *v = env ? getenv(env) : NULL;
        if (!v || !*v)
            return 0;
        len = strlen(v);
        if (len > cap) {
            gw_log("the secret in $%s is longer than %zu bytes", env, cap);
            return -1;
        }
        memcpy(buf, v, len);
    }
    while (len && (buf[len - 1] == '\n' || buf[len - 1] == '\r'))
        len--;
    if (len < 16) {
        gw_log("the secret %s%s is shorter than 16 bytes", path && *path ? "in " : "in $",
               path && *path ? path : env);
        return -1;
    }
    return (int)len;
}
