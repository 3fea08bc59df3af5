/* token.c - crdt.v1 session tokens: HMAC-SHA256 signed JSON grants (mint and verify) */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>

#include "crdt.h"
#include "crdt_json.h"
#include "token.h"

#define MAC_LEN 32

/* ---- base64url (libcrdt's codec) ---------------------------------------------------------- */

#define URL_NOPAD (CRDT_B64_URL | CRDT_B64_NOPAD)

char *gw_b64url_encode(const void *p, size_t n)
{
    return crdt_base64_encode_ex(p, n, URL_NOPAD, NULL);
}

int gw_b64url_decode(const char *s, size_t n, uint8_t **out, size_t *outlen)
{
    return crdt_base64_decode_ex(s, n, URL_NOPAD, out, outlen) < 0 ? -1 : 0;
}

/* ---- tokens --------------------------------------------------------------------------------- */

static void mac_of(const void *secret, size_t slen, const void *msg, size_t mlen,
                   uint8_t out[MAC_LEN])
{
    unsigned int n = MAC_LEN;
    static const uint8_t empty[1];
    if (!HMAC(EVP_sha256(), slen ? secret : empty, (int)slen, mlen ? msg : empty, mlen, out, &n))
        memset(out, 0, MAC_LEN); /* only on OOM inside OpenSSL: never matches a real MAC */
}

void gw_token_clear(gw_token_t *t)
{
    for (size_t i = 0; i < t->nread; i++)
        crdt_free(t->read[i].prefix);
    for (size_t i = 0; i < t->nwrite; i++)
        crdt_free(t->write[i].prefix);
    free(t->read);
    free(t->write);
    memset(t, 0, sizeof(*t));
}

static void say(char *why, size_t n, const char *text)
{
    if (why && n)
        snprintf(why, n, "%s", text);
}

/* Reads a grant list (absent: none). -1 malformed, -2 no memory. */
static int parse_grants(const json_t *a, gw_grant_t **out, size_t *n)
{
    if (!a)
        return 0;
    if (!json_is_array(a) || json_array_size(a) > GW_TOKEN_MAX_GRANTS)
        return -1;
    size_t cnt = json_array_size(a);
    if (!cnt)
        return 0;
    *out = calloc(cnt, sizeof(**out));
    if (!*out)
        return -2;
    for (size_t i = 0; i < cnt; i++) {
        const char *why;
        int rc = crdt_json_get_bytes(json_array_get(a, i), GW_TOKEN_MAX_LEN, &(*out)[i].prefix,
                                     &(*out)[i].len, &why);
        if (rc < 0)
            return rc == CRDT_ENOMEM ? -2 : -1;
        (*n)++;
    }
    return 0;
}

bool gw_token_kid_ok(const char *kid)
{
    size_t n = kid ? strlen(kid) : 0;
    if (!n || n > GW_TOKEN_MAX_KID)
        return false;
    for (size_t i = 0; i < n; i++) {
        char ch = kid[i];
        if (!((ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') ||
              ch == '_' || ch == '-'))
            return false;
    }
    return true;
}

/* Splits a token into its kid, the signed part and the payload: two parts `payload.sig` (kid
 * "default", the payload is signed) or three `kid.payload.sig` (kid and payload signed). Fills
 * out->kid; returns the offset of the signature's first byte, or 0 after saying why. */
static size_t token_split(const char *tok, size_t len, gw_token_t *out, size_t *pay_at,
                          size_t *pay_len, char *why, size_t whylen)
{
    const char *d1 = memchr(tok, '.', len);
    if (!d1 || d1 == tok) {
        say(why, whylen, "token malformed: expected [kid.]payload.signature");
        return 0;
    }
    size_t first = (size_t)(d1 - tok);
    const char *d2 = memchr(d1 + 1, '.', len - first - 1);
    if (!d2) {
        snprintf(out->kid, sizeof(out->kid), "%s", GW_TOKEN_DEFAULT_KID);
        *pay_at = 0;
        *pay_len = first;
        return first + 1;
    }
    if (first > GW_TOKEN_MAX_KID || d2 == d1 + 1) {
        say(why, whylen, "token malformed: expected kid.payload.signature");
        return 0;
    }
    memcpy(out->kid, tok, first);
    out->kid[first] = '\0';
    if (!gw_token_kid_ok(out->kid)) {
        out->kid[0] = '\0';
        say(why, whylen, "token malformed: the key id is not 1..64 of [A-Za-z0-9_-]");
        return 0;
    }
    *pay_at = first + 1;
    *pay_len = (size_t)(d2 - d1 - 1);
    return (size_t)(d2 - tok) + 1;
}

/* The verification of both entry points: with a ring (keys != NULL) the kid picks the secret,
 * without one the secret given signs every kid. */
static int verify(const char *tok, size_t len, const gw_token_key_t *keys, size_t nkeys,
                  const void *secret, size_t slen, int64_t now, gw_token_t *out, char *why,
                  size_t whylen)
{
    memset(out, 0, sizeof(*out));
    if (!tok || !len || len > GW_TOKEN_MAX_LEN) {
        say(why, whylen, len ? "token too long" : "no token");
        return GW_TOKEN_EMALFORMED;
    }
    size_t pay_at = 0, plen = 0;
    size_t sig_at = token_split(tok, len, out, &pay_at, &plen, why, whylen);
    if (!sig_at)
        return GW_TOKEN_EMALFORMED;
    if (keys) {
        const gw_token_key_t *k = NULL;
        for (size_t i = 0; i < nkeys && !k; i++)
            if (!strcmp(keys[i].kid, out->kid))
                k = &keys[i];
        if (!k) {
            if (why && whylen)
                snprintf(why, whylen, "unknown key id \"%s\"", out->kid);
            return GW_TOKEN_EUNKNOWNKID;
        }
        secret = k->secret;
        slen = k->slen;
    }
    uint8_t *sig = NULL;
    size_t siglen = 0;
    if (gw_b64url_decode(tok + sig_at, len - sig_at, &sig, &siglen) || siglen != MAC_LEN) {
        crdt_free(sig);
        say(why, whylen, "token malformed: signature is not 32 bytes of base64url");
        return GW_TOKEN_EMALFORMED;
    }
    uint8_t mac[MAC_LEN];
    mac_of(secret, slen, tok, sig_at - 1, mac);
    bool good = CRYPTO_memcmp(mac, sig, MAC_LEN) == 0;
    crdt_free(sig);
    if (!good) {
        say(why, whylen, "token signature invalid");
        return GW_TOKEN_EBADMAC;
    }

    uint8_t *payload = NULL;
    size_t paylen = 0;
    if (gw_b64url_decode(tok + pay_at, plen, &payload, &paylen)) {
        say(why, whylen, "token malformed: payload is not base64url");
        return GW_TOKEN_EMALFORMED;
    }
    json_t *j = json_loadb((const char *)payload, paylen, JSON_REJECT_DUPLICATES, NULL);
    crdt_free(payload);
    int rc = GW_TOKEN_EMALFORMED;
    const json_t *sub = json_object_get(j, "sub"), *exp = json_object_get(j, "exp");
    if (!json_is_object(j) || (sub && !json_is_string(sub)) || !json_is_integer(exp) ||
        json_integer_value(exp) <= 0) {
        say(why, whylen, "token malformed: payload needs \"exp\" (and optional \"sub\")");
        goto out;
    }
    if (sub) {
        if (json_string_length(sub) > GW_TOKEN_MAX_SUB) {
            say(why, whylen, "token malformed: subject too long");
            goto out;
        }
        memcpy(out->sub, json_string_value(sub), json_string_length(sub));
        out->sub[json_string_length(sub)] = '\0';
    }
    out->exp = (int64_t)json_integer_value(exp);
    int g = parse_grants(json_object_get(j, "read"), &out->read, &out->nread);
    if (!g)
        g = parse_grants(json_object_get(j, "write"), &out->write, &out->nwrite);
    if (g) {
        rc = g == -2 ? GW_TOKEN_ENOMEM : GW_TOKEN_EMALFORMED;
        say(why, whylen,
            g == -2 ? "out of memory" : "token malformed: grants must be arrays of key prefixes (strings or {\"base64\":..})");
        goto out;
    }
    if (out->exp <= now) {
        rc = GW_TOKEN_EEXPIRED;
        say(why, whylen, "token expired");
        goto out;
    }
    rc = GW_TOKEN_OK;
out:
    json_decref(j);
    return rc;
}

int gw_token_verify(const char *tok, size_t len, const void *secret, size_t slen, int64_t now,
                    gw_token_t *out, char *why, size_t whylen)
{
    return verify(tok, len, NULL, 0, secret, slen, now, out, why, whylen);
}

int gw_token_verify_ring(const char *tok, size_t len, const gw_token_key_t *keys, size_t nkeys,
                         int64_t now, gw_token_t *out, char *why, size_t whylen)
{
    static const gw_token_key_t none[1];
    return verify(tok, len, keys ? keys : none, keys ? nkeys : 0, NULL, 0, now, out, why, whylen);
}

/* ---- key rings ------------------------------------------------------------------------------ */

static int ring_fail(char *why, size_t whylen, size_t line, const char *text)
{
    if (why && whylen)
        snprintf(why, whylen, "line %zu: %s", line, text);
    return -1;
}

int gw_token_keys_parse(const char *text, size_t len, gw_token_key_t *keys, size_t cap, size_t *n,
                        char *why, size_t whylen)
{
    *n = 0;
    /* the older format: the whole text (trailing newlines stripped) is one secret */
    size_t end = len;
    while (end && (text[end - 1] == '\n' || text[end - 1] == '\r'))
        end--;
    if (end && !memchr(text, '\n', end) && !memchr(text, ':', end) && text[0] != '#') {
        if (end < GW_TOKEN_MIN_SECRET || end > GW_TOKEN_MAX_SECRET)
            return ring_fail(why, whylen, 1, "the secret must be 16..256 bytes");
        if (!cap)
            return ring_fail(why, whylen, 1, "no room for a key");
        snprintf(keys[0].kid, sizeof(keys[0].kid), "%s", GW_TOKEN_DEFAULT_KID);
        memcpy(keys[0].secret, text, end);
        keys[0].slen = end;
        *n = 1;
        return 0;
    }
    size_t line = 0;
    for (size_t at = 0; at < len;) {
        const char *nl = memchr(text + at, '\n', len - at);
        size_t e = nl ? (size_t)(nl - text) : len, ll = e - at;
        const char *l = text + at;
        at = e + 1;
        line++;
        if (ll && l[ll - 1] == '\r')
            ll--;
        if (!ll || l[0] == '#')
            continue;
        const char *colon = memchr(l, ':', ll);
        if (!colon)
            return ring_fail(why, whylen, line, "expected kid:secret");
        size_t kl = (size_t)(colon - l), sl = ll - kl - 1;
        if (!kl || kl > GW_TOKEN_MAX_KID)
            return ring_fail(why, whylen, line, "the key id must be 1..64 of [A-Za-z0-9_-]");
        if (*n == cap)
            return ring_fail(why, whylen, line, "too many keys (at most 32)");
        gw_token_key_t *k = &keys[*n];
        memcpy(k->kid, l, kl);
        k->kid[kl] = '\0';
        if (!gw_token_kid_ok(k->kid))
            return ring_fail(why, whylen, line, "the key id must be 1..64 of [A-Za-z0-9_-]");
        if (sl < GW_TOKEN_MIN_SECRET || sl > GW_TOKEN_MAX_SECRET)
            return ring_fail(why, whylen, line, "the secret must be 16..256 bytes");
        for (size_t i = 0; i < *n; i++)
            if (!strcmp(keys[i].kid, k->kid))
                return ring_fail(why, whylen, line, "duplicate key id");
        memcpy(k->secret, colon + 1, sl);
        k->slen = sl;
        (*n)++;
    }
    if (!*n)
        return ring_fail(why, whylen, line, "no key (expected lines kid:secret)");
    return 0;
}

static json_t *grant_array(const gw_grant_t *g, size_t n)
{
    json_t *a = json_array();
    for (size_t i = 0; a && i < n; i++) {
        if ((g[i].len && !g[i].prefix) ||
            json_array_append_new(a, crdt_json_bytes(g[i].len ? g[i].prefix : (const uint8_t *)"",
                                                     g[i].len))) {
            json_decref(a);
            return NULL;
        }
    }
    return a;
}

char *gw_token_make(const void *secret, size_t slen, const char *sub, int64_t exp,
                    const gw_grant_t *read, size_t nread, const gw_grant_t *write, size_t nwrite)
{
    return gw_token_make_kid(NULL, secret, slen, sub, exp, read, nread, write, nwrite);
}

char *gw_token_make_kid(const char *kid, const void *secret, size_t slen, const char *sub,
                        int64_t exp, const gw_grant_t *read, size_t nread,
                        const gw_grant_t *write, size_t nwrite)
{
    if (kid && !gw_token_kid_ok(kid))
        return NULL;
    if (!sub)
        sub = "";
    if (strlen(sub) > GW_TOKEN_MAX_SUB || nread > GW_TOKEN_MAX_GRANTS ||
        nwrite > GW_TOKEN_MAX_GRANTS || exp <= 0)
        return NULL;
    json_t *sj = json_string(sub); /* NULL when not UTF-8 */
    json_t *r = grant_array(read, nread), *w = grant_array(write, nwrite);
    json_t *j = sj && r && w ? json_pack("{s:o, s:I, s:o, s:o}", "sub", sj, "exp", (json_int_t)exp,
                                         "read", r, "write", w)
                             : NULL;
    if (!j) {
        if (!(sj && r && w)) {
            json_decref(sj);
            json_decref(r);
            json_decref(w);
        }
        return NULL;
    }
    char *text = json_dumps(j, JSON_COMPACT);
    json_decref(j);
    if (!text)
        return NULL;
    char *pay = gw_b64url_encode(text, strlen(text));
    free(text);
    if (!pay)
        return NULL;
    /* p1 is what the MAC signs: the payload, or "<kid>.<payload>" */
    char *p1 = pay;
    if (kid) {
        p1 = malloc(strlen(kid) + 1 + strlen(pay) + 1);
        if (p1)
            sprintf(p1, "%s.%s", kid, pay);
        crdt_free(pay);
        if (!p1)
            return NULL;
    }
    uint8_t mac[MAC_LEN];
    mac_of(secret, slen, p1, strlen(p1), mac);
    char *p2 = gw_b64url_encode(mac, MAC_LEN);
    char *tok = p2 ? malloc(strlen(p1) + 1 + strlen(p2) + 1) : NULL;
    if (tok)
        sprintf(tok, "%s.%s", p1, p2);
    if (kid)
        free(p1);
    else
        crdt_free(p1);
    crdt_free(p2);
    return tok;
}

static bool has_prefix(const gw_grant_t *g, size_t n, const void *p, size_t plen)
{
    for (size_t i = 0; i < n; i++)
        if (g[i].len <= plen && (!g[i].len || memcmp(g[i].prefix, p, g[i].len) == 0))
            return true;
    return false;
}

bool gw_token_can_read_key(const gw_token_t *t, const void *key, size_t klen)
{
    return has_prefix(t->read, t->nread, key, klen);
}

bool gw_token_can_read_prefix(const gw_token_t *t, const void *prefix, size_t plen)
{
    return has_prefix(t->read, t->nread, prefix, plen);
}

bool gw_token_can_write_key(const gw_token_t *t, const void *key, size_t klen)
{
    return has_prefix(t->write, t->nwrite, key, klen);
}
