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

#ifndef __wasm__
/* Every 12-bit value's two characters, per alphabet: a 3-byte group is two lookups and two
 * 2-byte stores instead of four of each (20 instructions instead of 29; a roshi select encodes
 * a member per entry). 16 KiB of tables, left out of crdt.wasm, where a page's bytes count
 * more. */
#define B64C(x, c62, c63)                                                                          \
    (char)((x) < 26    ? 'A' + (x)                                                                 \
           : (x) < 52  ? 'a' + (x)-26                                                              \
           : (x) < 62  ? '0' + (x)-52                                                              \
           : (x) == 62 ? (c62)                                                                     \
                       : (c63))
#define B64P(i, a, b)                                                                              \
    {                                                                                              \
        B64C((i) >> 6, a, b), B64C((i)&63, a, b)                                                   \
    }
#define B64P4(i, a, b) B64P(i, a, b), B64P((i) + 1, a, b), B64P((i) + 2, a, b), B64P((i) + 3, a, b)
#define B64P16(i, a, b)                                                                            \
    B64P4(i, a, b), B64P4((i) + 4, a, b), B64P4((i) + 8, a, b), B64P4((i) + 12, a, b)
#define B64P64(i, a, b)                                                                            \
    B64P16(i, a, b), B64P16((i) + 16, a, b), B64P16((i) + 32, a, b), B64P16((i) + 48, a, b)
#define B64P256(i, a, b)                                                                           \
    B64P64(i, a, b), B64P64((i) + 64, a, b), B64P64((i) + 128, a, b), B64P64((i) + 192, a, b)
#define B64P1024(i, a, b)                                                                          \
    B64P256(i, a, b), B64P256((i) + 256, a, b), B64P256((i) + 512, a, b), B64P256((i) + 768, a, b)
#define B64P4096(a, b)                                                                             \
    B64P1024(0, a, b), B64P1024(1024, a, b), B64P1024(2048, a, b), B64P1024(3072, a, b)
static const char std_pairs[4096][2] = {B64P4096('+', '/')};
static const char url_pairs[4096][2] = {B64P4096('-', '_')};
#endif

size_t crdt_base64_encode_into(char *out, const void *data, size_t n, unsigned flags)
{
    const char *a = (flags & CRDT_B64_URL) ? url_alpha : std_alpha;
    bool pad = !(flags & CRDT_B64_NOPAD);
    const uint8_t *p = data;
    size_t o = 0, i = 0;
#ifndef __wasm__
    const char(*pairs)[2] = (flags & CRDT_B64_URL) ? url_pairs : std_pairs;
    for (; i + 3 <= n; i += 3, o += 4) {
        uint32_t v = (uint32_t)p[i] << 16 | (uint32_t)p[i + 1] << 8 | p[i + 2];
        memcpy(out + o, pairs[v >> 12], 2);
        memcpy(out + o + 2, pairs[v & 0xfff], 2);
    }
#else
    for (; i + 3 <= n; i += 3) {
        uint32_t v = (uint32_t)p[i] << 16 | (uint32_t)p[i + 1] << 8 | p[i + 2];
        out[o++] = a[v >> 18];
        out[o++] = a[(v >> 12) & 63];
        out[o++] = a[(v >> 6) & 63];
        out[o++] = a[v & 63];
    }
#endif
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

/* The value of each character in an alphabet, 255 for the others. */
static const uint8_t std_val[256] = {
    255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255,
    255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255,
    255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255,  62, 255, 255, 255,  63,
     52,  53,  54,  55,  56,  57,  58,  59,  60,  61, 255, 255, 255, 255, 255, 255,
    255,   0,   1,   2,   3,   4,   5,   6,   7,   8,   9,  10,  11,  12,  13,  14,
     15,  16,  17,  18,  19,  20,  21,  22,  23,  24,  25, 255, 255, 255, 255, 255,
    255,  26,  27,  28,  29,  30,  31,  32,  33,  34,  35,  36,  37,  38,  39,  40,
     41,  42,  43,  44,  45,  46,  47,  48,  49,  50,  51, 255, 255, 255, 255, 255,
    255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255,
    255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255,
    255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255,
    255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255,
    255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255,
    255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255,
    255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255,
    255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255,
};
static const uint8_t url_val[256] = {
    255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255,
    255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255,
    255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255,  62, 255, 255,
     52,  53,  54,  55,  56,  57,  58,  59,  60,  61, 255, 255, 255, 255, 255, 255,
    255,   0,   1,   2,   3,   4,   5,   6,   7,   8,   9,  10,  11,  12,  13,  14,
     15,  16,  17,  18,  19,  20,  21,  22,  23,  24,  25, 255, 255, 255, 255,  63,
    255,  26,  27,  28,  29,  30,  31,  32,  33,  34,  35,  36,  37,  38,  39,  40,
     41,  42,  43,  44,  45,  46,  47,  48,  49,  50,  51, 255, 255, 255, 255, 255,
    255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255,
    255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255,
    255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255,
    255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255,
    255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255,
    255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255,
    255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255,
    255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255,
};

/* Decoded a quantum at a time through the alphabet's table (the usual members and keys are a few
 * quanta; a character at a time, with a range test each, cost more than the rest of the read). */
int crdt_base64_decode_into(uint8_t *d, const char *s, size_t slen, unsigned flags,
                            size_t *out_len)
{
    const uint8_t *val = (flags & CRDT_B64_URL) ? url_val : std_val;
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
    const unsigned char *p = (const unsigned char *)s;
    size_t o = 0, i = 0;
    for (; i + 4 <= n; i += 4) {
        uint32_t a = val[p[i]], b = val[p[i + 1]], c = val[p[i + 2]], e = val[p[i + 3]];
        if ((a | b | c | e) & 0x80)
            return CRDT_EDECODE;
        uint32_t v = a << 18 | b << 12 | c << 6 | e;
        d[o++] = (uint8_t)(v >> 16);
        d[o++] = (uint8_t)(v >> 8);
        d[o++] = (uint8_t)v;
    }
    if (i < n) { /* 2 or 3 characters: 1 or 2 bytes */
        uint32_t a = val[p[i]], b = val[p[i + 1]], c = n - i == 3 ? val[p[i + 2]] : 0;
        if ((a | b | c) & 0x80)
            return CRDT_EDECODE;
        uint32_t v = a << 18 | b << 12 | c << 6;
        d[o++] = (uint8_t)(v >> 16);
        /* bits under the padding must be zero, or two strings would decode to one value */
        if (n - i == 3) {
            d[o++] = (uint8_t)(v >> 8);
            if (v & 0xff)
                return CRDT_EDECODE;
        } else if (v & 0xffff) {
            return CRDT_EDECODE;
        }
    }
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
