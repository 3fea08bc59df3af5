/* jsonw.h - a JSON writer for the hot read paths (jsonw.c): no allocation per value
 *
 * Layer: bottom (includes nothing of gateway/). The writer keeps GW_BODY_AT bytes of headroom in
 * front of the text, so that http.c can put lws's prefix and the response headers there and send
 * headers and body in one write.
 */
#ifndef CRDT_GW_JSONW_H
#define CRDT_GW_JSONW_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <jansson.h>
#include <libwebsockets.h>

/* A response buffer: LWS_PRE for lws, GW_HDR_ROOM for the status line and headers, the body. */
#define GW_HDR_ROOM 1024
#define GW_BODY_AT (LWS_PRE + GW_HDR_ROOM)

typedef struct gw_jw {
    char *p; /* GW_BODY_AT bytes of headroom, then the JSON text */
    size_t len, cap;
    bool oom;
} gw_jw_t;

/* Starts an empty document (with the response headroom); false on allocation failure. */
bool gw_jw_init(gw_jw_t *w, size_t hint);
void gw_jw_free(gw_jw_t *w);
void gw_jw_raw(gw_jw_t *w, const char *s, size_t n);
/* A literal: the caller guarantees it needs no JSON escaping. */
void gw_jw_lit(gw_jw_t *w, const char *s);
/* "<standard base64 of the bytes>" (crdt_base64_encode_into): roshi's form */
void gw_jw_b64(gw_jw_t *w, const void *p, size_t n);
/* The one JSON form of a byte string (docs/encoding.md, "Bytes in JSON and URLs"), as
 * crdt_json_bytes gives it and jansson would write it: a JSON string when the bytes are UTF-8
 * text (crdt_utf8_text), escaped as jansson does ("\\", "\"", control characters), else
 * {"base64":"<standard base64>"}. */
void gw_jw_bytes(gw_jw_t *w, const void *p, size_t n);
/* The shortest decimal that reads back as d (finite), with ".0" when it looks like an integer. */
void gw_jw_double(gw_jw_t *w, double d);
/* A number as Go's encoding/json writes a float64 (roshi-server's responses): shortest digits,
 * no ".0", exponent form below 1e-6 and from 1e21. */
void gw_jw_double_go(gw_jw_t *w, double d);
/* The decimal digits of v at out (at most GW_U64_MAX_DIGITS, no NUL): how many. */
#define GW_U64_MAX_DIGITS 20
size_t gw_u64_put(char *out, uint64_t v);
void gw_jw_u64(gw_jw_t *w, uint64_t v);
/* Room for n more bytes: where they go (write them, then add to w->len), or NULL (out of memory,
 * w->oom set). */
char *gw_jw_extend(gw_jw_t *w, size_t n);
/* Go's time.Duration.String() of ns (ns < 60 s: "0s", "999ns", "1.5µs", "21.3ms", "2.000001s")
 * into out (at least 32 bytes, not terminated): returns its length. */
#define GW_GO_DURATION_MAX 32
size_t gw_go_duration(uint64_t ns, char *out);

/* Base64 (standard) of bytes as a new JSON string (jansson), or NULL: roshi's form (crdtd's own
 * responses use crdt_json_bytes). */
json_t *gw_b64_json(const void *p, size_t n);

#endif /* CRDT_GW_JSONW_H */
