/* fuzz_wire.c - libFuzzer harness for what crdtd reads from the network besides CRDT frames:
 * session tokens (signed with the harness's secret, so the payload parser is reached, and raw, so
 * the token splitter and the MAC check are), base64url, and the peer handshake and entry decoders
 *
 * The first byte chooses the decoder; the rest is its input. Every decoder must return an error or
 * a value within its documented bounds, never read outside its input, never leak. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "crypto.h"
#include "util.h"
#include "peer_wire.h"
#include "token.h"

/* crypto.c logs through gw_log (http.c): not linked here */
void gw_log(const char *fmt, ...)
{
    (void)fmt;
}

static const char secret[] = "fuzz-secret-0123456789";

static void check_token(const gw_token_t *t)
{
    if (strlen(t->sub) > GW_TOKEN_MAX_SUB)
        abort();
    static const uint8_t key[] = "feed:1";
    (void)gw_token_can_read_key(t, key, sizeof(key) - 1);
    (void)gw_token_can_read_prefix(t, key, 4);
    (void)gw_token_can_write_key(t, key, sizeof(key) - 1);
}

static void token_raw(const uint8_t *d, size_t n)
{
    gw_token_t t;
    char why[128];
    int rc = gw_token_verify((const char *)d, n, secret, sizeof(secret) - 1, 1700000000, &t, why,
                             sizeof(why));
    if (rc == GW_TOKEN_OK || rc == GW_TOKEN_EEXPIRED)
        check_token(&t);
    gw_token_clear(&t);
}

/* The input as a payload under a valid signature: reaches the JSON payload parser. */
static void token_signed(const uint8_t *d, size_t n)
{
    char *p = gw_b64url_encode(d, n);
    if (!p)
        return;
    uint8_t mac[GW_HMAC_LEN];
    gw_hmac_sha256(secret, sizeof(secret) - 1, p, strlen(p), mac);
    char *m = gw_b64url_encode(mac, sizeof(mac));
    size_t len = strlen(p) + 1 + (m ? strlen(m) : 0);
    char *tok = malloc(len + 1);
    if (m && tok) {
        snprintf(tok, len + 1, "%s.%s", p, m);
        token_raw((const uint8_t *)tok, len);
    }
    free(tok);
    free(m);
    free(p);
}

static void b64url(const uint8_t *d, size_t n)
{
    uint8_t *out = NULL;
    size_t olen = 0;
    if (gw_b64url_decode((const char *)d, n, &out, &olen) == 0) {
        if (olen > n)
            abort();
        char *back = gw_b64url_encode(out, olen);
        free(back);
    }
    free(out);
}

static void entries(const uint8_t *d, size_t n, bool with_seq)
{
    pw_reader_t r;
    pw_reader_init(&r, d, n);
    pw_entry_t e;
    const char *why = NULL;
    while (pw_left(&r) && pw_get_entry(&r, with_seq, &e, &why)) {
        /* what an entry points at lies inside the input */
        if (e.key < d || e.key + e.klen > d + n || e.obj < d || e.obj + e.olen > d + n)
            abort();
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    const uint8_t *d = data + 1;
    size_t n = size - 1;
    const char *why = NULL;
    size_t body = 0;
    switch (data[0] % 9) {
    case 0: token_raw(d, n); break;
    case 1: token_signed(d, n); break;
    case 2: b64url(d, n); break;
    case 3: {
        pw_challenge_t c;
        (void)pw_decode_challenge(d, n, &c, &why);
        break;
    }
    case 4: {
        pw_hello_t h;
        if (pw_decode_hello(d, n, &h, &body, &why) == 0 &&
            (body > n || strnlen(h.cluster, sizeof(h.cluster)) == sizeof(h.cluster)))
            abort();
        break;
    }
    case 5: {
        pw_welcome_t w;
        if (pw_decode_welcome(d, n, &w, &body, &why) == 0 && body > n)
            abort();
        break;
    }
    case 6: {
        uint8_t code;
        char text[64];
        if (pw_decode_refuse(d, n, &code, text, sizeof(text)) == 0 &&
            strnlen(text, sizeof(text)) == sizeof(text))
            abort();
        break;
    }
    case 7: entries(d, n, true); break;
    case 8: entries(d, n, false); break;
    }
    return 0;
}
