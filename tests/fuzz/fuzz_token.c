/* fuzz_token.c - libFuzzer harness for the token parser with key ids and the key ring parser
 *
 * The first byte chooses: 0 the input as a whole token against a ring of three kids (the
 * splitter, the kid, the lookup, the MAC check); 1 the input as "kid\npayload", signed with that
 * kid's secret when it is one of the ring (so the payload parser is reached through the
 * three-part form); 2 the input as a key ring file. Whatever is accepted must be within the
 * documented bounds, and a minted token must verify to what it was minted from. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "crypto.h"
#include "token.h"

/* crypto.c logs through gw_log (util.c): not linked here */
void gw_log(const char *fmt, ...)
{
    (void)fmt;
}

static gw_token_key_t ring[3];
static size_t nring;

static void ring_init(void)
{
    if (nring)
        return;
    const char *text = "k0:fuzz-secret-zero-0123456789\nk-1:fuzz-secret-one-0123456789\n"
                       "default:fuzz-secret-default-012345\n";
    size_t n = 0;
    if (gw_token_keys_parse(text, strlen(text), ring, 3, &n, NULL, 0) || n != 3)
        abort();
    nring = n;
}

static void check(const gw_token_t *t)
{
    if (strlen(t->sub) > GW_TOKEN_MAX_SUB || strlen(t->kid) > GW_TOKEN_MAX_KID)
        abort();
    static const uint8_t key[] = "feed:1";
    (void)gw_token_can_read_key(t, key, sizeof(key) - 1);
    (void)gw_token_can_write_key(t, key, sizeof(key) - 1);
}

static int verify(const char *tok, size_t n, gw_token_t *t)
{
    char why[128];
    int rc = gw_token_verify_ring(tok, n, ring, nring, 1700000000, t, why, sizeof(why));
    if (rc > 0 || rc < GW_TOKEN_EUNKNOWNKID)
        abort();
    if (rc == GW_TOKEN_OK || rc == GW_TOKEN_EEXPIRED) {
        check(t);
        bool known = false;
        for (size_t i = 0; i < nring; i++)
            known |= !strcmp(ring[i].kid, t->kid);
        if (!known) /* verified under a kid the ring does not hold */
            abort();
    }
    return rc;
}

static void whole(const uint8_t *d, size_t n)
{
    gw_token_t t;
    verify((const char *)d, n, &t);
    gw_token_clear(&t);
}

/* "kid\npayload": a three-part token signed by hand (as a minting peer would), payload raw. */
static void signed_payload(const uint8_t *d, size_t n)
{
    const uint8_t *nl = memchr(d, '\n', n);
    if (!nl)
        return;
    size_t kl = (size_t)(nl - d);
    char kid[GW_TOKEN_MAX_KID + 2];
    if (kl > GW_TOKEN_MAX_KID)
        return;
    memcpy(kid, d, kl);
    kid[kl] = '\0';
    const gw_token_key_t *k = NULL;
    for (size_t i = 0; i < nring; i++)
        if (!strcmp(ring[i].kid, kid))
            k = &ring[i];
    if (!k)
        return;
    /* mint a real token of this kid, then swap its payload for the fuzzer's */
    char *good = gw_token_make_kid(kid, k->secret, k->slen, "s", 1800000000, NULL, 0, NULL, 0);
    if (!good)
        abort();
    gw_token_t t;
    if (verify(good, strlen(good), &t) != GW_TOKEN_OK || strcmp(t.kid, kid) || strcmp(t.sub, "s"))
        abort(); /* a minted token must verify to what it was minted from */
    gw_token_clear(&t);
    free(good);

    char *pay = gw_b64url_encode(nl + 1, n - kl - 1);
    if (!pay)
        return;
    size_t mlen = kl + 1 + strlen(pay);
    char *msg = malloc(mlen + 1 + 64);
    if (msg) {
        memcpy(msg, kid, kl);
        msg[kl] = '.';
        memcpy(msg + kl + 1, pay, strlen(pay));
        /* sign with the ring's key through mint's MAC: HMAC over kid.payload */
        uint8_t mac[GW_HMAC_LEN];
        gw_hmac_sha256(k->secret, k->slen, msg, mlen, mac);
        char *m = gw_b64url_encode(mac, sizeof(mac));
        if (m && strlen(m) < 64) {
            msg[mlen] = '.';
            memcpy(msg + mlen + 1, m, strlen(m));
            size_t tl = mlen + 1 + strlen(m);
            int rc = verify(msg, tl, &t);
            if (rc == GW_TOKEN_EBADMAC || rc == GW_TOKEN_EUNKNOWNKID)
                abort(); /* correctly signed under a known kid */
            gw_token_clear(&t);
        }
        free(m);
    }
    free(msg);
    free(pay);
}

static void ring_text(const uint8_t *d, size_t n)
{
    gw_token_key_t keys[4];
    size_t nk = 99;
    char why[96];
    int rc = gw_token_keys_parse((const char *)d, n, keys, 4, &nk, why, sizeof(why));
    if (rc == 0) {
        if (nk < 1 || nk > 4)
            abort();
        for (size_t i = 0; i < nk; i++) {
            if (!gw_token_kid_ok(keys[i].kid) || keys[i].slen < GW_TOKEN_MIN_SECRET ||
                keys[i].slen > GW_TOKEN_MAX_SECRET)
                abort();
            for (size_t j = 0; j < i; j++)
                if (!strcmp(keys[i].kid, keys[j].kid))
                    abort();
        }
    } else if (rc != -1 || !memchr(why, '\0', sizeof(why))) {
        abort();
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *d, size_t n)
{
    ring_init();
    if (!n)
        return 0;
    switch (d[0] % 3) {
    case 0: whole(d + 1, n - 1); break;
    case 1: signed_payload(d + 1, n - 1); break;
    default: ring_text(d + 1, n - 1); break;
    }
    return 0;
}
