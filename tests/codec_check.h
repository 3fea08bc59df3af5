/* codec_check.h - hand-made encodings for decoder tests; include after tap.h
 *
 * Wraps a hand-written payload in a valid frame (version, type, length, payload, CRC-32C), so the
 * payload validation itself is what a test exercises, and checks what the decoders say of it. */
#ifndef CRDT_CODEC_CHECK_H
#define CRDT_CODEC_CHECK_H

#include <jansson.h>
#include <string.h>

#include "crdt.h"
#include "crdt_json.h"

/* Frames n < 128 payload bytes under any version byte into out (n + 7 bytes); returns the
 * length. */
static inline size_t codec_frame_version(uint8_t version, uint8_t type, const uint8_t *payload,
                                         size_t n, uint8_t *out)
{
    size_t o = 0;
    out[o++] = version;
    out[o++] = type;
    out[o++] = (uint8_t)n; /* a one-byte varint: payloads here are < 128 bytes */
    memcpy(out + o, payload, n);
    o += n;
    uint32_t crc = crdt_crc32c(0, out, o);
    for (int i = 0; i < 4; i++)
        out[o++] = (uint8_t)(crc >> (8 * i));
    return o;
}

static inline size_t codec_frame(uint8_t type, const uint8_t *payload, size_t n, uint8_t *out)
{
    return codec_frame_version(CRDT_CODEC_VERSION, type, payload, n, out);
}

/* The payload must be rejected with CRDT_EDECODE at byte offset want_off of the framed input. */
static inline void codec_bad_payload(uint8_t type, const uint8_t *p, size_t n, size_t want_off,
                                     const char *name)
{
    uint8_t buf[256];
    size_t len = codec_frame(type, p, n, buf);
    crdt_error_t err;
    crdt_obj_t *o = crdt_obj_decode(buf, len, &err);
    ok(o == NULL, "%s: rejected", name);
    is_int(err.code, CRDT_EDECODE, "%s: CRDT_EDECODE", name);
    is_int(err.offset, want_off, "%s: offset (%s)", name, err.text);
    crdt_obj_free(o);
}

/* The payload must decode, and re-encode to exactly the same bytes (it is canonical). */
static inline void codec_good_payload(uint8_t type, const uint8_t *p, size_t n, const char *name)
{
    uint8_t buf[256];
    size_t len = codec_frame(type, p, n, buf);
    crdt_error_t err;
    crdt_obj_t *o = crdt_obj_decode(buf, len, &err);
    ok(o != NULL, "%s: accepted %s", name, o ? "" : err.text);
    if (o) {
        crdt_buf_t b = {0};
        ok(crdt_obj_encode(o, &b) == 0 && b.len == len && memcmp(b.data, buf, len) == 0,
           "%s: re-encodes to the same bytes", name);
        crdt_buf_free(&b);
    }
    crdt_obj_free(o);
}

/* The JSON text must parse, be rejected by crdt_obj_from_json, and the message name want_sub. */
static inline void codec_bad_json(const char *text, const char *want_sub, const char *name)
{
    json_t *j = json_loads(text, 0, NULL);
    ok(j != NULL, "%s: test JSON parses", name);
    crdt_error_t err;
    crdt_obj_t *o = crdt_obj_from_json(j, &err);
    ok(o == NULL && err.code == CRDT_EDECODE, "%s: rejected", name);
    ok(strstr(err.text, want_sub) != NULL, "%s: message names '%s' (%s)", name, want_sub, err.text);
    crdt_obj_free(o);
    json_decref(j);
}

#endif /* CRDT_CODEC_CHECK_H */
