/* logpos.c - CRC16 key slots, a hash tag per slot, change-log names and reader positions */
#include "logpos.h"

#include "crdt.h"

#include <stdio.h>
#include <string.h>

/* CRC16-CCITT by bytes: table[b] is the CRC of the byte b followed by 16 zero bits. */
static uint16_t crc16_table[256];

static void crc16_init(void)
{
    for (unsigned b = 0; b < 256; b++) {
        uint16_t crc = (uint16_t)(b << 8);
        for (int i = 0; i < 8; i++)
            crc = (uint16_t)(crc & 0x8000 ? (crc << 1) ^ 0x1021 : crc << 1);
        crc16_table[b] = crc;
    }
}

uint16_t crdtm_crc16(const char *buf, size_t len)
{
    if (!crc16_table[1]) /* computed on first use; the same bytes every time, so races are benign */
        crc16_init();
    uint16_t crc = 0;
    for (size_t i = 0; i < len; i++)
        crc = (uint16_t)((crc << 8) ^ crc16_table[((crc >> 8) ^ (uint8_t)buf[i]) & 0xff]);
    return crc;
}

unsigned crdtm_keyslot(const char *key, size_t len)
{
    const char *open = memchr(key, '{', len);
    if (open) {
        size_t from = (size_t)(open - key) + 1;
        const char *close = memchr(key + from, '}', len - from);
        if (close && close > key + from)
            return crdtm_crc16(key + from, (size_t)(close - (key + from))) & (CRDTM_SLOTS - 1);
    }
    return crdtm_crc16(key, len) & (CRDTM_SLOTS - 1);
}

int crdtm_slot_tags(char (*tags)[CRDTM_TAG_MAX])
{
    static const char alphabet[] = "0123456789abcdefghijklmnopqrstuvwxyz";
    const unsigned base = sizeof(alphabet) - 1;
    unsigned missing = CRDTM_SLOTS;
    for (unsigned s = 0; s < CRDTM_SLOTS; s++)
        tags[s][0] = '\0';
    /* Every string of length 1, 2, 3, 4 in order: the first one to land in a slot is its tag. */
    for (unsigned len = 1; len <= 4 && missing; len++) {
        unsigned long n = 1;
        for (unsigned i = 0; i < len; i++)
            n *= base;
        for (unsigned long v = 0; v < n && missing; v++) {
            char t[CRDTM_TAG_MAX];
            unsigned long x = v;
            for (unsigned i = 0; i < len; i++, x /= base)
                t[len - 1 - i] = alphabet[x % base];
            t[len] = '\0';
            unsigned s = crdtm_crc16(t, len) & (CRDTM_SLOTS - 1);
            if (!tags[s][0]) {
                memcpy(tags[s], t, len + 1);
                missing--;
            }
        }
    }
    return missing ? -1 : 0;
}

size_t crdtm_log_name(char *buf, const char *tag, uint64_t epoch)
{
    int n = snprintf(buf, CRDTM_LOG_NAME_MAX, CRDTM_LOG_PREFIX "%s}:%016llx", tag,
                     (unsigned long long)epoch);
    return n < 0 ? 0 : (size_t)n;
}

static int hexval(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    return -1;
}

/* 16 lowercase hex digits. */
static bool parse_epoch(const char *s, uint64_t *out)
{
    uint64_t v = 0;
    for (int i = 0; i < 16; i++) {
        int h = hexval(s[i]);
        if (h < 0)
            return false;
        v = v << 4 | (uint64_t)h;
    }
    *out = v;
    return true;
}

bool crdtm_log_name_parse(const char *name, size_t len, uint64_t *epoch, unsigned *slot)
{
    const size_t plen = sizeof(CRDTM_LOG_PREFIX) - 1;
    /* prefix, a tag of 1..7 characters, "}:", 16 hex digits */
    if (len < plen + 1 + 2 + 16 || len > plen + (CRDTM_TAG_MAX - 1) + 2 + 16 ||
        memcmp(name, CRDTM_LOG_PREFIX, plen) != 0)
        return false;
    size_t tag_len = len - plen - 2 - 16;
    const char *tag = name + plen;
    /* tags are what crdtm_slot_tags writes: digits and lowercase letters */
    for (size_t i = 0; i < tag_len; i++)
        if (!((tag[i] >= '0' && tag[i] <= '9') || (tag[i] >= 'a' && tag[i] <= 'z')))
            return false;
    if (tag[tag_len] != '}' || tag[tag_len + 1] != ':')
        return false;
    if (!parse_epoch(tag + tag_len + 2, epoch))
        return false;
    *slot = crdtm_crc16(tag, tag_len) & (CRDTM_SLOTS - 1);
    return true;
}

/* A decimal without sign or leading zero, at most UINT64_MAX; advances *p. */
static bool parse_u64(const char **p, const char *end, uint64_t *out)
{
    const char *s = *p;
    if (s >= end || *s < '0' || *s > '9' ||
        (*s == '0' && s + 1 < end && s[1] >= '0' && s[1] <= '9'))
        return false;
    uint64_t v = 0;
    for (; s < end && *s >= '0' && *s <= '9'; s++) {
        uint64_t d = (uint64_t)(*s - '0');
        if (v > (UINT64_MAX - d) / 10)
            return false;
        v = v * 10 + d;
    }
    *out = v;
    *p = s;
    return true;
}

int crdtm_pos_parse(const char *s, size_t len, crdtm_pos_t *out, const char **why)
{
    memset(out, 0, sizeof(*out));
    if (len == 1 && s[0] == '0') {
        out->kind = CRDTM_POS_START;
        return 0;
    }
    if (len == 1 && s[0] == '$') {
        out->kind = CRDTM_POS_END;
        return 0;
    }
    *why = "ERR bad position: expected 0, $ or EPOCH:MS-SEQ:OFFSET as CRDT.LOG.READ returned it";
    const char *end = s + len;
    if (len < 16 + 6 || !parse_epoch(s, &out->epoch) || s[16] != ':')
        return -1;
    const char *p = s + 17;
    if (!parse_u64(&p, end, &out->ms) || p >= end || *p++ != '-' ||
        !parse_u64(&p, end, &out->seq) || p >= end || *p++ != ':' ||
        !parse_u64(&p, end, &out->offset) || p != end)
        return -1;
    if (out->offset == 0) {
        *why = "ERR bad position: offset 0 is written as the position 0";
        return -1;
    }
    out->kind = CRDTM_POS_AT;
    return 0;
}

size_t crdtm_pos_format(const crdtm_pos_t *p, char *buf)
{
    int n = snprintf(buf, CRDTM_POS_TEXT_MAX, "%016llx:%llu-%llu:%llu",
                     (unsigned long long)p->epoch, (unsigned long long)p->ms,
                     (unsigned long long)p->seq, (unsigned long long)p->offset);
    return n < 0 ? 0 : (size_t)n;
}

/* ---- change-log entries --------------------------------------------------------------------- */

/* The module's char-pointer forms of libcrdt's varint codec (crdt.h: the one implementation). */
size_t crdtm_varint_put(char *p, uint64_t v)
{
    return crdt_varint_put((uint8_t *)p, v);
}

bool crdtm_varint_get(const char **p, const char *end, uint64_t *v)
{
    size_t pos = 0;
    if (crdt_varint_scan(*p, (size_t)(end - *p), &pos, v))
        return false;
    *p += pos;
    return true;
}

size_t crdtm_entry_encode(char *out, const char *key, size_t klen, uint64_t origin,
                          const void *delta, size_t dlen)
{
    size_t n = crdtm_varint_put(out, (uint64_t)klen * 2 + (origin != 0));
    memcpy(out + n, key, klen);
    n += klen;
    if (origin)
        n += crdtm_varint_put(out + n, origin);
    if (dlen)
        memcpy(out + n, delta, dlen);
    return n + dlen;
}

int crdtm_entry_decode(const char *e, size_t len, crdtm_entry_t *out)
{
    const char *p = e, *end = e + len;
    uint64_t head, origin = 0;
    if (!crdtm_varint_get(&p, end, &head) || head / 2 > (uint64_t)(end - p))
        return -1;
    out->key = p;
    out->klen = (size_t)(head / 2);
    p += out->klen;
    if ((head & 1) && (!crdtm_varint_get(&p, end, &origin) || origin == 0))
        return -1;
    out->origin = origin;
    out->delta = p;
    out->dlen = (size_t)(end - p);
    return 0;
}
