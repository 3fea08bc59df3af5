/* test_crdt_v1_bin.c - binary crdt.v1 (gateway/proto/crdt_v1_bin.c): every binary message decoded
 * and re-encoded to the same bytes, the same struct as the JSON form, and every kind of bad input
 * refused with its documented error code */
#include <string.h>

#include "crdt_json.h"
#include "crdt_v1.h"
#include "crdt_v1_bin.h"
#include "tap.h"

static const crdt_v1_limits_t LIM = {.max_key = 8, .max_topics = 3};
static const unsigned C = CRDT_V1_FROM_CLIENT, S = CRDT_V1_FROM_SERVER;

/* Decodes p[0..n) from `from`; expects success and that encoding gives the same bytes back. */
static int decode_ok(const uint8_t *p, size_t n, unsigned from, crdt_v1_msg_t *m, const char *name)
{
    crdt_v1_error_t e;
    if (!ok(crdt_v1_bin_decode(p, n, from, &LIM, m, &e) == 0, "%s: decoded", name)) {
        diag("refused: %s", e.text);
        return -1;
    }
    crdt_buf_t b = {0};
    ok(crdt_v1_bin_encode(m, &b) == 0, "%s: re-encoded", name);
    is_mem(b.data, b.len, p, n, "%s: encode(decode(x)) == x", name);
    crdt_buf_free(&b);
    return 0;
}

static void refused(const uint8_t *p, size_t n, unsigned from, crdt_v1_code_t code,
                    const char *name)
{
    crdt_v1_msg_t m;
    crdt_v1_error_t e;
    ok(crdt_v1_bin_decode(p, n, from, &LIM, &m, &e) == -1, "%s: refused", name);
    is(crdt_v1_code_name(e.code), crdt_v1_code_name(code), "%s: code (%s)", name, e.text);
    ok(e.text[0] != '\0', "%s: says why", name);
    ok(m.type == CRDT_V1_NONE && !m.key && !m.topics && !m.op && !m.obj,
       "%s: the message is left empty", name);
}

/* The JSON text decodes to a struct equal to m (the same message in the other framing). */
static void same_as_json(const crdt_v1_msg_t *m, const char *json, unsigned from, const char *name)
{
    crdt_v1_msg_t j;
    crdt_v1_error_t e;
    int rc = crdt_v1_decode(json, strlen(json), from, NULL, &j, &e);
    ok(rc == 0 && crdt_v1_msg_equal(m, &j), "%s: the same as %s", name, json);
    if (rc)
        diag("%s", e.text);
    crdt_v1_msg_clear(&j);
}

#define DEC(arr, from, m, name) decode_ok(arr, sizeof(arr), from, m, name)
#define REF(arr, from, code, name) refused(arr, sizeof(arr), from, code, name)

static void test_client(void)
{
    crdt_v1_msg_t m;
    /* subscribe id 300, since 1041, a key "k1" and the empty prefix */
    static const uint8_t sub[] = {0x01, 0xac, 0x02, 0x01, 0x91, 0x08, 2, 0, 2, 'k', '1', 1, 0};
    if (!DEC(sub, C, &m, "subscribe")) {
        is_int(m.type, CRDT_V1_SUBSCRIBE, "subscribe: type");
        ok(m.has_id && m.id == 300 && m.has_since && m.since == 1041, "subscribe: id and since");
        ok(m.ntopics == 2 && !m.topics[0].prefix && m.topics[0].len == 2 && m.topics[1].prefix &&
               m.topics[1].len == 0,
           "subscribe: a key, then a prefix");
        same_as_json(&m,
                     "{\"type\":\"subscribe\",\"id\":300,\"since\":1041,\"keys\":[\"k1\"],"
                     "\"prefixes\":[\"\"]}",
                     C, "subscribe");
        crdt_v1_msg_clear(&m);
    }
    static const uint8_t sub_nosince[] = {0x01, 1, 0, 1, 1, 2, 'f', ':'};
    if (!DEC(sub_nosince, C, &m, "subscribe without since")) {
        ok(!m.has_since && m.ntopics == 1 && m.topics[0].prefix, "subscribe: no since, a prefix");
        crdt_v1_msg_clear(&m);
    }
    /* a prefix before a key: decoded as keys then prefixes, as the JSON codec gives them */
    static const uint8_t mixed[] = {0x01, 1, 0, 2, 1, 1, 'p', 0, 1, 'k'};
    crdt_v1_error_t e;
    if (ok(crdt_v1_bin_decode(mixed, sizeof(mixed), C, &LIM, &m, &e) == 0,
           "mixed order: decoded")) {
        ok(m.ntopics == 2 && !m.topics[0].prefix && m.topics[0].bytes[0] == 'k' &&
               m.topics[1].prefix && m.topics[1].bytes[0] == 'p',
           "mixed order: keys first");
        crdt_v1_msg_clear(&m);
    }
    static const uint8_t unsub[] = {0x02, 7, 1, 0, 2, 'k', '1'};
    if (!DEC(unsub, C, &m, "unsubscribe")) {
        same_as_json(&m, "{\"type\":\"unsubscribe\",\"id\":7,\"keys\":[\"k1\"]}", C,
                     "unsubscribe");
        crdt_v1_msg_clear(&m);
    }
    /* apply id 41 to "key" with a gcounter delta: the op path's merge of its base64 */
    crdt_obj_t *o = crdt_obj_new(CRDT_GCOUNTER);
    crdt_obj_t *delta = NULL;
    crdt_gcounter_incr(o, 7, 3, &delta);
    crdt_buf_t b = {0};
    static const uint8_t head[] = {0x03, 41, 3, 'k', 'e', 'y'};
    crdt_buf_append(&b, head, sizeof(head));
    crdt_obj_encode(delta, &b);
    if (!decode_ok(b.data, b.len, C, &m, "apply")) {
        ok(m.type == CRDT_V1_APPLY && m.id == 41 && m.klen == 3 && !memcmp(m.key, "key", 3),
           "apply: id and key");
        const json_t *bin = json_object_get(m.op, "binary");
        ok(json_is_string(json_object_get(m.op, "op")) &&
               !strcmp(json_string_value(json_object_get(m.op, "op")), "merge") &&
               json_is_string(bin),
           "apply: a merge op");
        uint8_t *raw = NULL;
        size_t rn = 0;
        crdt_base64_decode(json_string_value(bin), json_string_length(bin), &raw, &rn);
        is_mem(raw, rn, b.data + sizeof(head), b.len - sizeof(head), "apply: the delta's bytes");
        crdt_free(raw);
        crdt_v1_msg_clear(&m);
    }
    /* encoding an apply from an object */
    crdt_v1_msg_t am = {
        .type = CRDT_V1_APPLY, .id = 41, .key = (uint8_t *)"key", .klen = 3, .obj = delta};
    crdt_buf_t b2 = {0};
    ok(crdt_v1_bin_encode(&am, &b2) == 0, "apply from an object: encoded");
    is_mem(b2.data, b2.len, b.data, b.len, "apply from an object: the same bytes");
    crdt_buf_free(&b2);
    crdt_buf_free(&b);
    crdt_obj_free(delta);
    crdt_obj_free(o);

    /* refusals */
    static const uint8_t empty[] = {0};
    refused(empty, 0, C, CRDT_V1_E_BAD_REQUEST, "empty message");
    static const uint8_t unknown[] = {0x09, 1};
    REF(unknown, C, CRDT_V1_E_UNKNOWN_TYPE, "unknown type");
    static const uint8_t servers[] = {0x43, 1, 1};
    REF(servers, C, CRDT_V1_E_UNKNOWN_TYPE, "a server's type from a client");
    static const uint8_t trunc[] = {0x01, 1, 0, 1, 0, 5, 'k'};
    REF(trunc, C, CRDT_V1_E_BAD_REQUEST, "a truncated key");
    static const uint8_t noncanon[] = {0x01, 0x81, 0x00, 0, 1, 0, 1, 'k'};
    REF(noncanon, C, CRDT_V1_E_BAD_REQUEST, "a varint that is not canonical");
    static const uint8_t toolong[] = {0x01, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
                                      0xff, 0xff, 0x7f, 0,    1,    0,    1,    'k'};
    REF(toolong, C, CRDT_V1_E_BAD_REQUEST, "a varint over 64 bits");
    static const uint8_t flags[] = {0x01, 1, 2, 1, 0, 1, 'k'};
    REF(flags, C, CRDT_V1_E_BAD_REQUEST, "unknown flag bits");
    static const uint8_t notopic[] = {0x01, 1, 0, 0};
    REF(notopic, C, CRDT_V1_E_BAD_REQUEST, "no topics");
    static const uint8_t many[] = {0x01, 1, 0, 4, 0, 1, 'a', 0, 1, 'b', 0, 1, 'c', 0, 1, 'd'};
    REF(many, C, CRDT_V1_E_LIMIT, "more topics than max_topics");
    static const uint8_t huge_count[] = {0x01, 1, 0, 0x80, 0x80, 0x80, 0x80, 0x01, 0, 1, 'a'};
    REF(huge_count, C, CRDT_V1_E_BAD_REQUEST, "a topic count beyond the message");
    static const uint8_t kind[] = {0x01, 1, 0, 1, 2, 1, 'k'};
    REF(kind, C, CRDT_V1_E_BAD_REQUEST, "a topic kind other than 0 and 1");
    static const uint8_t emptykey[] = {0x01, 1, 0, 1, 0, 0};
    REF(emptykey, C, CRDT_V1_E_BAD_REQUEST, "an empty key");
    static const uint8_t longkey[] = {0x02, 1,   1,   0,   9,   'a', 'b',
                                      'c',  'd', 'e', 'f', 'g', 'h', 'i'};
    REF(longkey, C, CRDT_V1_E_BAD_REQUEST, "a key over max_key");
    static const uint8_t trailing[] = {0x02, 1, 1, 0, 1, 'k', 0};
    REF(trailing, C, CRDT_V1_E_BAD_REQUEST, "bytes after the end");
    static const uint8_t id0[] = {0x03, 0, 1, 'k', 1};
    REF(id0, C, CRDT_V1_E_BAD_REQUEST, "apply id 0");
    static const uint8_t id53[] = {0x03, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x10, 1, 'k', 1};
    REF(id53, C, CRDT_V1_E_BAD_REQUEST, "apply id 2^53");
    static const uint8_t nodelta[] = {0x03, 1, 1, 'k'};
    REF(nodelta, C, CRDT_V1_E_BAD_REQUEST, "apply without a delta");
    if (ok(crdt_v1_bin_decode(id53, sizeof(id53), C, &LIM, &m, &e) == -1, "apply id error"))
        ok(e.type == CRDT_V1_APPLY, "the error names the type");
}

static void test_server(void)
{
    crdt_v1_msg_t m;
    static const uint8_t ack[] = {0x42, 3, 41, 0xa6, 0x09};
    if (!DEC(ack, S, &m, "ack")) {
        ok(m.type == CRDT_V1_ACK && m.id == 41 && m.seq == 1190 && m.applied && m.duplicate,
           "ack: fields");
        same_as_json(
            &m, "{\"type\":\"ack\",\"id\":41,\"seq\":1190,\"applied\":true,\"duplicate\":true}", S,
            "ack");
        crdt_v1_msg_clear(&m);
    }
    static const uint8_t subd[] = {0x43, 1, 0xa3, 0x09};
    if (!DEC(subd, S, &m, "subscribed")) {
        same_as_json(&m, "{\"type\":\"subscribed\",\"id\":1,\"cursor\":1187}", S, "subscribed");
        crdt_v1_msg_clear(&m);
    }
    /* a change in two parts equals the whole */
    crdt_obj_t *tl = crdt_timeline_new(1000), *delta = NULL;
    crdt_timeline_add(tl, "post:3", 6, 1700000400, &delta);
    crdt_buf_t body = {0}, whole = {0};
    ok(crdt_v1_bin_change_body("feed:12", 7, 1188, false, delta, &body) == 0, "change body");
    uint8_t head[CRDT_V1_BIN_CHANGE_HEAD_MAX];
    size_t hl = crdt_v1_bin_change_head(head, 1188);
    crdt_buf_append(&whole, head, hl);
    crdt_buf_append(&whole, body.data, body.len);
    crdt_v1_limits_t lim = {0, 0};
    crdt_v1_error_t e;
    if (ok(crdt_v1_bin_decode(whole.data, whole.len, S, &lim, &m, &e) == 0, "change: decoded")) {
        ok(m.type == CRDT_V1_CHANGE && m.cursor == 1188 && m.seq == 1188 && !m.full &&
               m.klen == 7 && !memcmp(m.key, "feed:12", 7) && crdt_obj_equal(m.obj, delta),
           "change: fields and the delta");
        crdt_buf_t re = {0};
        ok(crdt_v1_bin_encode(&m, &re) == 0, "change: re-encoded");
        is_mem(re.data, re.len, whole.data, whole.len, "change: the same bytes");
        crdt_buf_free(&re);
        crdt_v1_msg_clear(&m);
    }
    diag("a small timeline change: %zu bytes of binary message (JSON crdt.v1: 245)", whole.len);
    cmp_ok(whole.len, "<", 64, "a small timeline change is small");
    /* a corrupt encoding is refused with its offset */
    whole.data[whole.len - 1] ^= 0xff;
    crdt_v1_msg_t bad;
    ok(crdt_v1_bin_decode(whole.data, whole.len, S, &lim, &bad, &e) == -1 &&
           e.code == CRDT_V1_E_BAD_REQUEST && strstr(e.text, "delta at byte"),
       "a corrupt delta: bad_request at its byte (%s)", e.text);
    crdt_buf_free(&body);
    crdt_buf_free(&whole);
    crdt_obj_free(delta);
    crdt_obj_free(tl);

    static const uint8_t ackflags[] = {0x42, 4, 1, 1};
    REF(ackflags, S, CRDT_V1_E_BAD_REQUEST, "ack flag bits");
    static const uint8_t acklong[] = {0x42, 1, 1, 1, 0};
    REF(acklong, S, CRDT_V1_E_BAD_REQUEST, "ack with bytes after it");
    static const uint8_t chgtrunc[] = {0x41, 1, 0, 1};
    REF(chgtrunc, S, CRDT_V1_E_BAD_REQUEST, "a truncated change");
    static const uint8_t chgnone[] = {0x41, 1, 0, 1, 1, 'k'};
    REF(chgnone, S, CRDT_V1_E_BAD_REQUEST, "a change without an encoding");
    static const uint8_t clients[] = {0x03, 1, 1, 'k', 1};
    REF(clients, S, CRDT_V1_E_UNKNOWN_TYPE, "a client's type from a server");
}

static void test_encode(void)
{
    crdt_v1_msg_t hello = {.type = CRDT_V1_HELLO};
    ok(!crdt_v1_bin_has(&hello), "hello has no binary form");
    crdt_buf_t b = {0};
    is_int(crdt_v1_bin_encode(&hello, &b), CRDT_EINVAL, "encoding a hello: EINVAL");
    json_t *op = json_pack("{s:s, s:s, s:f}", "type", "timeline", "op", "add", "score", 1.0);
    crdt_v1_msg_t ap = {.type = CRDT_V1_APPLY, .id = 1, .key = (uint8_t *)"k", .klen = 1, .op = op};
    is_int(crdt_v1_bin_encode(&ap, &b), CRDT_EINVAL, "an apply with a REST op: EINVAL (JSON)");
    ok(b.len == 0, "nothing appended on failure");
    json_decref(op);
    crdt_v1_topic_t t = {.bytes = NULL, .len = 0, .prefix = false};
    crdt_v1_msg_t sub = {.type = CRDT_V1_SUBSCRIBE, .id = 1, .topics = &t, .ntopics = 1};
    is_int(crdt_v1_bin_encode(&sub, &b), CRDT_EINVAL, "an empty key: EINVAL");
    crdt_buf_free(&b);
}

int main(void)
{
    test_client();
    test_server();
    test_encode();
    return done_testing();
}
