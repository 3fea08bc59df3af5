/* test_wsmsg.c - the WebSocket message assembler, frames and the outbound queue (gateway/wsmsg.c),
 * driven without a socket; their use on real connections is covered by test_ws_* */
#include <string.h>

#include "tap.h"
#include "wsmsg.h"

static void test_assembler(void)
{
    gw_wsrx_t a;
    gw_wsrx_init(&a, 16, GW_WS_TEXT);
    is_int(gw_wsrx_push(&a, "{\"a\":", 5, true, false, false, 0), GW_WSRX_MORE,
           "a first fragment waits for more");
    is_int(gw_wsrx_push(&a, "1}", 2, false, true, false, 0), GW_WSRX_MESSAGE,
           "the final fragment completes the message");
    is_mem(gw_wsrx_data(&a), gw_wsrx_len(&a), "{\"a\":1}", 7, "the fragments joined");
    gw_wsrx_done(&a);
    is_int(gw_wsrx_len(&a), 0, "done empties it");

    /* a frame lws hands over in parts: final fragment but bytes remaining */
    is_int(gw_wsrx_push(&a, "ab", 2, true, true, false, 3), GW_WSRX_MORE,
           "bytes still to come in the frame: not the end yet");
    is_int(gw_wsrx_push(&a, "cde", 3, false, true, false, 0), GW_WSRX_MESSAGE, "then complete");
    is_mem(gw_wsrx_data(&a), gw_wsrx_len(&a), "abcde", 5, "all of it");
    gw_wsrx_done(&a);

    /* over the bound: dropped as it arrives, reported once at its end */
    is_int(gw_wsrx_push(&a, "0123456789", 10, true, false, false, 0), GW_WSRX_MORE, "10 bytes");
    ok(!gw_wsrx_discarding(&a), "within the bound so far");
    is_int(gw_wsrx_push(&a, "0123456789", 10, false, false, false, 0), GW_WSRX_MORE,
           "20 bytes: over");
    ok(gw_wsrx_discarding(&a), "being dropped");
    ok(a.cap == 0, "nothing kept of it");
    is_int(gw_wsrx_push(&a, "x", 1, false, true, false, 0), GW_WSRX_TOO_LARGE,
           "reported as too large at its end");
    ok(!gw_wsrx_discarding(&a), "and the next message starts clean");
    is_int(gw_wsrx_push(&a, "ok", 2, true, true, false, 0), GW_WSRX_MESSAGE,
           "the next one is kept");
    gw_wsrx_done(&a);

    /* seen early through the frame's remaining bytes */
    is_int(gw_wsrx_push(&a, "ab", 2, true, true, false, 100), GW_WSRX_MORE, "a big frame begins");
    ok(gw_wsrx_discarding(&a), "dropped from its first bytes");
    is_int(gw_wsrx_push(&a, "", 0, false, true, false, 0), GW_WSRX_TOO_LARGE, "too large");

    /* a kind not accepted */
    is_int(gw_wsrx_push(&a, "\x01\x02", 2, true, true, true, 0), GW_WSRX_WRONG_KIND,
           "a binary message on a text connection");
    ok(a.len == 0, "not buffered");

    /* a first fragment in the middle of a message starts over */
    gw_wsrx_push(&a, "junk", 4, true, false, false, 0);
    is_int(gw_wsrx_push(&a, "new", 3, true, true, false, 0), GW_WSRX_MESSAGE, "restarted");
    is_mem(gw_wsrx_data(&a), gw_wsrx_len(&a), "new", 3, "only the new message");
    gw_wsrx_done(&a);

    /* the buffer never grows past the bound */
    gw_wsrx_t big;
    gw_wsrx_init(&big, 100000, GW_WS_BINARY);
    static char chunk[30000];
    memset(chunk, 'z', sizeof(chunk));
    for (int i = 0; i < 3; i++)
        gw_wsrx_push(&big, chunk, sizeof(chunk), i == 0, false, true, 0);
    is_int(gw_wsrx_push(&big, chunk, 10000, false, true, true, 0), GW_WSRX_MESSAGE,
           "100000 bytes: exactly the bound");
    cmp_ok(big.cap, "<=", 100000, "the buffer is capped at the bound (%zu)", big.cap);
    gw_wsrx_done(&big);
    ok(big.cap == 0, "a big buffer is released after its message");
    gw_wsrx_free(&big);
    gw_wsrx_free(&a);
}

static void test_frames_and_queue(void)
{
    gw_frame_t *f = gw_frame_copy("hello", 5);
    ok(f && f->refs == 1 && f->len == 5 && !memcmp(gw_frame_data(f), "hello", 5),
       "a frame holds a copy after LWS_PRE bytes");
    crdt_buf_t b = {0};
    ok(gw_frame_buf_start(&b, 8) == 0 && b.len == LWS_PRE, "a buffer begun with headroom");
    crdt_buf_append(&b, "abc", 3);
    gw_frame_t *g = gw_frame_adopt(&b);
    ok(g && g->len == 3 && !memcmp(gw_frame_data(g), "abc", 3) && !b.data,
       "adopted without a copy; the buffer is left empty");

    gw_wsq_t q;
    gw_wsq_init(&q, 10);
    is_int(gw_wsq_push(&q, gw_frame_ref(f), 7, 0, 0), 0, "5 bytes queued");
    is_int(gw_wsq_push(&q, gw_frame_ref(g), 8, 2, 0), 0, "3 + 2 more: exactly the bound");
    is_int(gw_wsq_bytes(&q), 10, "10 bytes counted");
    is_int(gw_wsq_push(&q, gw_frame_ref(g), 9, 0, 0), CRDT_ELIMIT, "one more is over the bound");
    is_int(g->refs, 2, "the refused frame's reference was released");
    is_int(gw_wsq_push(&q, gw_frame_ref(g), 9, 0, GW_WSQ_PACED), 0, "a paced one goes over");
    is_int(gw_wsq_push(&q, NULL, 0, 0, 0), CRDT_ENOMEM, "no frame: out of memory");
    gw_wsq_item_t it;
    ok(gw_wsq_pop(&q, &it) && it.f == f && it.tag == 7 && it.cost == 5, "FIFO order, with tags");
    gw_frame_unref(it.f);
    ok(gw_wsq_pop(&q, &it) && it.f == g && it.tag == 8 && it.cost == 5, "the second");
    gw_frame_unref(it.f);
    is_int(gw_wsq_len(&q), 1, "one left");
    gw_wsq_clear(&q);
    ok(gw_wsq_len(&q) == 0 && gw_wsq_bytes(&q) == 0, "cleared");
    is_int(g->refs, 1, "clearing released the queue's references");

    gw_wsq_t one;
    gw_wsq_init(&one, 4);
    is_int(gw_wsq_push(&one, gw_frame_ref(f), 0, 0, 0), 0,
           "an empty queue takes one frame over its bound");
    /* the ring grows past its first size, keeping order */
    gw_wsq_t many;
    gw_wsq_init(&many, 0);
    for (uint64_t i = 0; i < 40; i++)
        gw_wsq_push(&many, gw_frame_ref(g), i, 0, 0);
    bool order = true;
    for (uint64_t i = 0; i < 40; i++)
        order = order && gw_wsq_pop(&many, &it) && it.tag == i && (gw_frame_unref(it.f), 1);
    ok(order, "40 frames come out in order");
    gw_wsq_free(&many);
    gw_wsq_free(&one);
    gw_wsq_free(&q);
    is_int(f->refs, 1, "every queue reference released");
    gw_frame_unref(f);
    gw_frame_unref(g);
}

/* Reads one unmasked frame at p[0..n): its opcode byte, payload and total length; 0 when the bytes
 * do not hold a whole frame. The decoder of RFC 6455 section 5.2, written here from the RFC. */
static size_t parse_frame(const uint8_t *p, size_t n, uint8_t *op, const uint8_t **pl,
                          size_t *plen)
{
    if (n < 2 || (p[1] & 0x80))
        return 0;
    size_t len = p[1] & 0x7f, hl = 2;
    if (len == 126) {
        if (n < 4)
            return 0;
        len = ((size_t)p[2] << 8) | p[3];
        hl = 4;
    } else if (len == 127) {
        if (n < 10)
            return 0;
        len = 0;
        for (int i = 0; i < 8; i++)
            len = (len << 8) | p[2 + i];
        hl = 10;
    }
    if (n - hl < len)
        return 0;
    *op = p[0];
    *pl = p + hl;
    *plen = len;
    return hl + len;
}

static void test_batch(void)
{
    uint8_t h[10];
    is_int(gw_ws_frame_head(h, GW_WS_TEXT, 125), 2, "125 bytes: a 2-byte header");
    ok(h[0] == 0x81 && h[1] == 125, "FIN + text, the length in the second byte");
    is_int(gw_ws_frame_head(h, GW_WS_BINARY, 126), 4, "126 bytes: a 4-byte header");
    ok(h[0] == 0x82 && h[1] == 126 && h[2] == 0 && h[3] == 126, "FIN + binary, 16-bit length");
    is_int(gw_ws_frame_head(h, GW_WS_TEXT, 65535), 4, "65535 bytes: still 16 bits");
    is_int(gw_ws_frame_head(h, GW_WS_TEXT, 65536), 10, "65536 bytes: a 10-byte header");
    ok(h[1] == 127 && h[2] == 0 && h[7] == 1 && h[8] == 0 && h[9] == 0, "64-bit length");

    gw_wsq_t q;
    gw_wsq_init(&q, 0);
    ok(gw_wsq_peek(&q) == NULL, "peek on an empty queue");
    gw_frame_t *a = gw_frame_copy("{\"type\":\"ack\"}", 14);
    gw_wsq_push(&q, gw_frame_ref(a), 3, 0, 0);
    ok(gw_wsq_peek(&q) && gw_wsq_peek(&q)->f == a && gw_wsq_peek(&q)->tag == 3 &&
           gw_wsq_len(&q) == 1,
       "peek shows the oldest and leaves it queued");
    gw_wsq_free(&q);

    static uint8_t big[70000];
    for (size_t i = 0; i < sizeof(big); i++)
        big[i] = (uint8_t)(i * 7);
    gw_frame_t *m = gw_frame_copy(big, 300), *l = gw_frame_copy(big, sizeof(big));
    gw_frame_t *e = gw_frame_new(0);
    gw_wswriter_t w;
    gw_wswriter_init(&w, GW_WS_TEXT, false);
    gw_ws_batch_begin(&w);
    ok(gw_ws_batch_add(&w, NULL, 0, a) == 0 && gw_ws_batch_add(&w, "HEAD", 4, m) == 0 &&
           gw_ws_batch_add(&w, NULL, 0, e) == 0 && gw_ws_batch_add(&w, "H", 1, l) == 0,
       "four messages batched");
    is_int(w.bcount, 4, "four counted");
    is_int(gw_ws_batch_len(&w), (2 + 14) + (4 + 304) + 2 + (10 + 70001), "framed length");
    const uint8_t *p = gw_ws_batch_data(&w), *pl;
    size_t n = gw_ws_batch_len(&w), plen, used;
    uint8_t op;
    used = parse_frame(p, n, &op, &pl, &plen);
    ok(used && op == 0x81 && plen == 14 && !memcmp(pl, gw_frame_data(a), 14),
       "first: the ack as it was");
    p += used, n -= used;
    used = parse_frame(p, n, &op, &pl, &plen);
    ok(used && plen == 304 && !memcmp(pl, "HEAD", 4) && !memcmp(pl + 4, big, 300),
       "second: its head, then its body");
    p += used, n -= used;
    used = parse_frame(p, n, &op, &pl, &plen);
    ok(used == 2 && plen == 0, "third: an empty message");
    p += used, n -= used;
    used = parse_frame(p, n, &op, &pl, &plen);
    ok(used == n && plen == sizeof(big) + 1 && pl[0] == 'H' && !memcmp(pl + 1, big, sizeof(big)),
       "fourth: a 64-bit length, and nothing after it");
    gw_ws_batch_begin(&w);
    is_int(gw_ws_batch_len(&w), 0, "begin empties the batch");
    gw_wswriter_t b;
    gw_wswriter_init(&b, GW_WS_BINARY, false);
    gw_ws_batch_begin(&b);
    gw_ws_batch_add(&b, NULL, 0, a);
    ok(gw_ws_batch_data(&b)[0] == 0x82, "a binary writer frames binary messages");
    gw_wswriter_free(&b);
    gw_wswriter_free(&w);
    gw_frame_unref(a);
    gw_frame_unref(m);
    gw_frame_unref(l);
    gw_frame_unref(e);
}

/* Reads one masked (client) frame at p[0..n) into out (unmasked; room for its payload): its
 * opcode byte, key and payload length; the bytes it took, 0 when not a whole masked frame. */
static size_t parse_masked(const uint8_t *p, size_t n, uint8_t *op, uint8_t key[4], uint8_t *out,
                           size_t *plen)
{
    if (n < 2 || !(p[1] & 0x80))
        return 0;
    size_t len = p[1] & 0x7f, hl = 2;
    if (len == 126) {
        if (n < 4)
            return 0;
        len = ((size_t)p[2] << 8) | p[3];
        hl = 4;
    } else if (len == 127) {
        if (n < 10)
            return 0;
        len = 0;
        for (int i = 0; i < 8; i++)
            len = (len << 8) | p[2 + i];
        hl = 10;
    }
    if (n < hl + 4 || n - hl - 4 < len)
        return 0;
    memcpy(key, p + hl, 4);
    for (size_t i = 0; i < len; i++)
        out[i] = p[hl + 4 + i] ^ key[i & 3];
    *op = p[0];
    *plen = len;
    return hl + 4 + len;
}

static void test_client_batch(void)
{
    /* a client writer masks every frame (RFC 6455 5.3) with a key of its own; heads of every
     * length modulo 4 (the payload's mask continues where the head's stopped), payloads of 7-,
     * 16- and 64-bit lengths, and more frames than one pool of random bytes holds (64 keys) */
    static uint8_t big[70000], out[70010];
    for (size_t i = 0; i < sizeof(big); i++)
        big[i] = (uint8_t)(i * 13 + 5);
    size_t sizes[] = {0, 1, 5, 125, 126, 300, 65535, 65536, 69990};
    gw_wswriter_t w;
    gw_wswriter_init(&w, GW_WS_TEXT, true);
    gw_ws_batch_begin(&w);
    int nmsg = 0;
    bool added = true;
    for (int round = 0; round < 12; round++)
        for (size_t k = 0; k < sizeof(sizes) / sizeof(sizes[0]); k++, nmsg++) {
            gw_frame_t *f = gw_frame_copy(big, sizes[k]);
            added &= f && gw_ws_batch_add(&w, "HDR", (size_t)(round % 4), f) == 0;
            gw_frame_unref(f);
        }
    ok(added, "%d messages batched by a client writer", nmsg);
    is_int(w.bcount, (long long)nmsg, "all counted");
    const uint8_t *p = gw_ws_batch_data(&w);
    size_t n = gw_ws_batch_len(&w), plen, used;
    uint8_t op, key[4];
    uint32_t keys[200];
    int nf = 0, good = 0;
    for (int round = 0; round < 12; round++)
        for (size_t k = 0; k < sizeof(sizes) / sizeof(sizes[0]); k++) {
            size_t hl = (size_t)(round % 4);
            used = parse_masked(p, n, &op, key, out, &plen);
            if (!used)
                break;
            memcpy(&keys[nf++], key, 4);
            good += op == 0x81 && plen == hl + sizes[k] && !memcmp(out, "HDR", hl) &&
                    !memcmp(out + hl, big, sizes[k]);
            p += used, n -= used;
        }
    is_int(nf, (long long)nmsg, "every frame has the MASK bit and a key");
    is_int(good, (long long)nmsg, "every frame unmasks to its head and payload, FIN + text");
    is_int(n, 0, "nothing after the last frame");
    int same = 0;
    for (int i = 0; i < nf; i++)
        for (int j = 0; j < i; j++)
            same += keys[i] == keys[j];
    /* 108 random 32-bit keys: a repeat has odds of about 1 in 700,000 */
    ok(same <= 1, "a fresh key per frame (%d repeats in %d)", same, nf);
    gw_wswriter_t s;
    gw_wswriter_init(&s, GW_WS_TEXT, false);
    gw_ws_batch_begin(&s);
    gw_frame_t *f = gw_frame_copy("abc", 3);
    gw_ws_batch_add(&s, NULL, 0, f);
    ok(gw_ws_batch_len(&s) == 5 && !(gw_ws_batch_data(&s)[1] & 0x80) &&
           !memcmp(gw_ws_batch_data(&s) + 2, "abc", 3),
       "a server writer's frames stay unmasked");
    gw_frame_unref(f);
    gw_wswriter_free(&s);
    gw_wswriter_free(&w);
}

int main(void)
{
    test_assembler();
    test_frames_and_queue();
    test_batch();
    test_client_batch();
    return done_testing();
}
