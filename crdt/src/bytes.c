/* bytes.c - the byte codecs every layer shares: unsigned LEB128 varints and base64 (RFC 4648) */
#include <stdlib.h>
#include <string.h>

#include "crdt_private.h"

/* ---- varints -------------------------------------------------------------------------------- */

int crdt_buf_put_varint(crdt_buf_t *b, uint64_t v)
{
    uint8_t tmp[CRDT_VARINT_MAX];
    return crdt_buf_append(b, tmp, crdt_varint_put(tmp, v));
}

/* ---- base64 --------------------------------------------------------------------------------- */

static const char std_alpha[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
static const char url_alpha[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

size_t crdt_base64_encoded_len(size_t n, unsigned flags)
{
    if (!(flags & CRDT_B64_NOPAD))
        return (n + 2) / 3 * 4;
    return n / 3 * 4 + (n % 3 ? n % 3 + 1 : 0);
}

size_t crdt_base64_encode_into(char *out, const void *data, size_t n, unsigned flags)
{
    const char *a = (flags & CRDT_B64_URL) ? url_alpha : std_alpha;
    bool pad = !(flags & CRDT_B64_NOPAD);
    const uint8_t *p = data;
    size_t o = 0, i = 0;
    for (; i + 3 <= n; i += 3) {
        uint32_t v = (uint32_t)p[i] << 16 | (uint32_t)p[i + 1] << 8 | p[i + 2];
        out[o++] = a[v >> 18];
        out[o++] = a[(v >> 12) & 63];
        out[o++] = a[(v >> 6) & 63];
        out[o++] = a[v & 63];
    }
    if (i < n) {
        uint32_t v = (uint32_t)p[i] << 16 | (i + 1 < n ? (uint32_t)p[i + 1] << 8 : 0);
        out[o++] = a[v >> 18];
        out[o++] = a[(v >> 12) & 63];
        if (i + 1 < n)
            out[o++] = a[(v >> 6) & 63];
        else if (pad)
            out[o++] = '=';
        if (pad)
            out[o++] = '=';
    }
    return o;
}

char *crdt_base64_encode_ex(const void *data, size_t len, unsigned flags, size_t *out_len)
{
    if (len > (SIZE_MAX - 1) / 4 * 3 - 3)
        return NULL;
    char *s = crdt__malloc(crdt_base64_encoded_len(len, flags) + 1);
    if (!s)
        return NULL;
    size_t o = crdt_base64_encode_into(s, data, len, flags);
    s[o] = '\0';
    if (out_len)
        *out_len = o;
    return s;
}

char *crdt_base64_encode(const void *data, size_t len, size_t *out_len)
{
    return crdt_base64_encode_ex(data, len, CRDT_B64_STD, out_len);
}

static int b64_value(const char *alpha, unsigned char c)
{
    if (c >= 'A' && c <= 'Z')
        return c - 'A';
    if (c >= 'a' && c <= 'z')
        return c - 'a' + 26;
    if (c >= '0' && c <= '9')
        return c - '0' + 52;
    if (c == (unsigned char)alpha[62])
        return 62;
    if (c == (unsigned char)alpha[63])
        return 63;
    return -1;
}

int crdt_base64_decode_into(uint8_t *d, const char *s, size_t slen, unsigned flags,
                            size_t *out_len)
{
    const char *a = (flags & CRDT_B64_URL) ? url_alpha : std_alpha;
    size_t n = slen, pads = 0;
    while (n && s[n - 1] == '=' && pads < 2)
        n--, pads++;
    if (flags & CRDT_B64_NOPAD) {
        /* padding optional, but when present it must complete the last quantum */
        if (pads && slen % 4)
            return CRDT_EDECODE;
    } else if (slen % 4) {
        return CRDT_EDECODE;
    }
    if (n % 4 == 1)
        return CRDT_EDECODE;
    size_t o = 0;
    uint32_t acc = 0;
    int bits = 0;
    for (size_t i = 0; i < n; i++) {
        int v = b64_value(a, (unsigned char)s[i]);
        if (v < 0)
            return CRDT_EDECODE;
        acc = acc << 6 | (uint32_t)v;
        bits += 6;
        if (bits >= 8) {
            bits -= 8;
            d[o++] = (uint8_t)(acc >> bits);
            acc &= (1u << bits) - 1;
        }
    }
    /* bits under the padding must be zero, or two strings would decode to one value */
    if (acc)
        return CRDT_EDECODE;
    *out_len = o;
    return 0;
}

int crdt_base64_decode_ex(const char *s, size_t slen, unsigned flags, uint8_t **out,
                          size_t *out_len)
{
    uint8_t *d = crdt__malloc(slen / 4 * 3 + 3);
    if (!d)
        return CRDT_ENOMEM;
    int rc = crdt_base64_decode_into(d, s, slen, flags, out_len);
    if (rc < 0) {
        crdt__free(d);
        return rc;
    }
    *out = d;
    return 0;
}

int crdt_base64_decode(const char *s, size_t slen, uint8_t **out, size_t *out_len)
{
    return crdt_base64_decode_ex(s, slen, CRDT_B64_STD, out, out_len);
}

/* ---- UTF-8 text ----------------------------------------------------------------------------- */

int crdt_utf8_text(const void *data, size_t n)
{
    const uint8_t *p = (const uint8_t *)data;
    size_t i = 0;
    while (i < n) {
        uint8_t c = p[i];
        if (c >= 0x01 && c < 0x80) {
            i++;
            continue;
        }
        size_t len;
        uint32_t cp;
        if (c >= 0xC2 && c <= 0xDF) {
            len = 2;
            cp = c & 0x1Fu;
        } else if (c >= 0xE0 && c <= 0xEF) {
            len = 3;
            cp = c & 0x0Fu;
        } else if (c >= 0xF0 && c <= 0xF4) {
            len = 4;
            cp = c & 0x07u;
        } else {
            return 0; /* NUL, a continuation byte, C0/C1 (overlong 2-byte) or F5..FF */
        }
        if (n - i < len)
            return 0;
        for (size_t k = 1; k < len; k++) {
            if ((p[i + k] & 0xC0) != 0x80)
                return 0;
            cp = cp << 6 | (p[i + k] & 0x3Fu);
        }
        if ((len == 3 && cp < 0x800) || (len == 4 && (cp < 0x10000 || cp > 0x10FFFF)) ||
            (cp >= 0xD800 && cp <= 0xDFFF))
            return 0;
        i += len;
    }
    return 1;
}
