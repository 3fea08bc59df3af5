/* token.c - crdt.v1 session tokens: HMAC-SHA256 signed JSON grants (mint and verify) */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>

#include "crdt.h"
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
        const json_t *g = json_array_get(a, i);
        if (!json_is_string(g))
            return -1;
        if (crdt_base64_decode(json_string_value(g), json_string_length(g), &(*out)[i].prefix,
                               &(*out)[i].len) < 0)
            return -1;
        (*n)++;
    }
    return 0;
}

int gw_token_verify(const char *tok, size_t len, const void *secret, size_t slen, int64_t now,
                    gw_token_t *out, char *why, size_t whylen)
{
    memset(out, 0, sizeof(*out));
    if (!tok || !len || len > GW_TOKEN_MAX_LEN) {
        say(why, whylen, len ? "token too long" : "no token");
        return GW_TOKEN_EMALFORMED;
    }
    const char *dot = memchr(tok, '.', len);
    if (!dot || dot == tok) {
        say(why, whylen, "token malformed: expected payload.signature");
        return GW_TOKEN_EMALFORMED;
    }
    size_t plen = (size_t)(dot - tok);
    uint8_t *sig = NULL;
    size_t siglen = 0;
    if (gw_b64url_decode(dot + 1, len - plen - 1, &sig, &siglen) || siglen != MAC_LEN) {
        crdt_free(sig);
        say(why, whylen, "token malformed: signature is not 32 bytes of base64url");
        return GW_TOKEN_EMALFORMED;
    }
    uint8_t mac[MAC_LEN];
    mac_of(secret, slen, tok, plen, mac);
    bool good = CRYPTO_memcmp(mac, sig, MAC_LEN) == 0;
    crdt_free(sig);
    if (!good) {
        say(why, whylen, "token signature invalid");
        return GW_TOKEN_EBADMAC;
    }

    uint8_t *payload = NULL;
    size_t paylen = 0;
    if (gw_b64url_decode(tok, plen, &payload, &paylen)) {
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
            g == -2 ? "out of memory" : "token malformed: grants must be base64 string arrays");
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

static json_t *grant_array(const char *const *g, size_t n)
{
    json_t *a = json_array();
    for (size_t i = 0; a && i < n; i++) {
        uint8_t *tmp;
        size_t tlen;
        if (!g[i] || crdt_base64_decode(g[i], strlen(g[i]), &tmp, &tlen) < 0) {
            json_decref(a);
            return NULL;
        }
        crdt_free(tmp);
        if (json_array_append_new(a, json_string(g[i]))) {
            json_decref(a);
            return NULL;
        }
    }
    return a;
}

char *gw_token_make(const void *secret, size_t slen, const char *sub, int64_t exp,
                    const char *const *read_b64, size_t nread, const char *const *write_b64,
                    size_t nwrite)
{
    if (!sub)
        sub = "";
    if (strlen(sub) > GW_TOKEN_MAX_SUB || nread > GW_TOKEN_MAX_GRANTS ||
        nwrite > GW_TOKEN_MAX_GRANTS || exp <= 0)
        return NULL;
    json_t *sj = json_string(sub); /* NULL when not UTF-8 */
    json_t *r = grant_array(read_b64, nread), *w = grant_array(write_b64, nwrite);
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
    char *p1 = gw_b64url_encode(text, strlen(text));
    free(text);
    if (!p1)
        return NULL;
    uint8_t mac[MAC_LEN];
    mac_of(secret, slen, p1, strlen(p1), mac);
    char *p2 = gw_b64url_encode(mac, MAC_LEN);
    char *tok = p2 ? malloc(strlen(p1) + 1 + strlen(p2) + 1) : NULL;
    if (tok)
        sprintf(tok, "%s.%s", p1, p2);
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
