/* test_bytes_json.c - the three writers of byte strings in JSON agree (docs/encoding.md, "Bytes in
 * JSON and URLs"): libcrdt's crdt_json_bytes (through jansson), the gateway's allocation-free
 * gw_jw_bytes (REST pages, listings) and the crdt.v1 codec's (change messages); and what they write
 * reads back to the same bytes with crdt_json_get_bytes */
#define _GNU_SOURCE /* memmem */
#include <stdlib.h>
#include <string.h>

#include "crdt_json.h"
#include "crdt_v1.h"
#include "jsonw.h"
#include "tap.h"

static uint64_t rng = 0x9e3779b97f4a7c15u;

static uint32_t next_rand(void)
{
    rng ^= rng << 13;
    rng ^= rng >> 7;
    rng ^= rng << 17;
    return (uint32_t)(rng >> 11);
}

/* Random bytes, mostly text-like: ASCII (quotes, backslashes, controls), UTF-8 sequences valid
 * and not, NUL and high bytes. */
static size_t random_bytes(uint8_t *b, size_t cap)
{
    static const char *const pieces[] = {"a", "Z", "9", ":", "/", "\"", "\\", "\n", "\t", "\x01",
                                         "\x1f", "\x7f", " ", "\xc3\xa9", "\xe2\x82\xac",
                                         "\xf0\x9f\x98\x80", "\xed\xa0\x80", "\xc0\xaf", "\xff",
                                         "\x80", "\xc3", "%", "+"};
    size_t n = 0, parts = next_rand() % 12;
    for (size_t i = 0; i < parts; i++) {
        if (next_rand() % 16 == 0 && n < cap) {
            b[n++] = 0; /* a NUL now and then */
            continue;
        }
        const char *p = pieces[next_rand() % (sizeof(pieces) / sizeof(pieces[0]))];
        size_t l = strlen(p);
        if (n + l > cap)
            break;
        memcpy(b + n, p, l);
        n += l;
    }
    return n;
}

int main(void)
{
    int agree_jw = 0, agree_v1 = 0, back = 0, text_as_string = 0;
    const int N = 5000;
    for (int i = 0; i < N; i++) {
        uint8_t b[96];
        size_t n = random_bytes(b, sizeof(b));
        /* libcrdt through jansson: the reference */
        json_t *ref = crdt_json_bytes(b, n);
        char *want = ref ? json_dumps(ref, JSON_ENCODE_ANY | JSON_COMPACT) : NULL;
        text_as_string += (json_is_string(ref) != 0) == (crdt_utf8_text(b, n) != 0);
        /* the gateway's writer */
        gw_jw_t w;
        gw_jw_init(&w, 16);
        gw_jw_bytes(&w, b, n);
        agree_jw += want && !w.oom && !strcmp(w.p + GW_BODY_AT, want);
        gw_jw_free(&w);
        /* the crdt.v1 codec's: a subscribe to the key (n >= 1) or the prefix */
        crdt_v1_topic_t t = {.bytes = n ? b : NULL, .len = n, .prefix = true};
        crdt_v1_msg_t m = {.type = CRDT_V1_SUBSCRIBE, .id = 1, .topics = &t, .ntopics = 1};
        crdt_buf_t out = {0};
        char frag[512];
        snprintf(frag, sizeof(frag), "\"prefixes\":[%s]", want ? want : "?");
        agree_v1 += crdt_v1_encode(&m, &out) == 0 && out.len &&
                    memmem(out.data, out.len, frag, strlen(frag)) != NULL;
        crdt_buf_free(&out);
        /* and back */
        json_error_t e;
        json_t *j = want ? json_loads(want, JSON_DECODE_ANY | JSON_ALLOW_NUL, &e) : NULL;
        uint8_t *got = NULL;
        size_t gn = 0;
        const char *why;
        back += j && crdt_json_get_bytes(j, 1024, &got, &gn, &why) == 0 && gn == n &&
                (!n || !memcmp(got, b, n));
        crdt_free(got);
        json_decref(j);
        free(want);
        json_decref(ref);
    }
    is_int(text_as_string, N, "a string exactly when the bytes are UTF-8 text without NUL");
    is_int(agree_jw, N, "gw_jw_bytes writes what jansson writes of crdt_json_bytes");
    is_int(agree_v1, N, "the crdt.v1 codec writes the same");
    is_int(back, N, "and every form reads back to the bytes (crdt_json_get_bytes)");
    return done_testing();
}
