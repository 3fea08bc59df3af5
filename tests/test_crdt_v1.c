/* test_crdt_v1.c - the crdt.v1 codec (gateway/proto/crdt_v1.c): every message type decoded and
 * re-encoded, and every kind of bad input refused with its documented error code */
#include <string.h>

#include "crdt_json.h"
#include "crdt_v1.h"
#include "tap.h"

/* Whether the encoded bytes of b hold s (the encoder's output is not NUL-terminated). */
static int buf_has(const crdt_buf_t *b, const char *s)
{
    size_t n = strlen(s);
    for (size_t i = 0; b->len >= n && i <= b->len - n; i++)
        if (!memcmp(b->data + i, s, n))
            return 1;
    return 0;
}

static const crdt_v1_limits_t LIM = {.max_key = 8, .max_topics = 3};

/* Decodes text from `from`; expects success; checks the round trip; leaves the message in *m. */
static int decode_ok(const char *text, unsigned from, crdt_v1_msg_t *m, const char *name)
{
    crdt_v1_error_t e;
    int rc = crdt_v1_decode(text, strlen(text), from, &LIM, m, &e);
    if (!ok(rc == 0, "%s: decoded", name)) {
        diag("refused: %s", e.text);
        return -1;
    }
    crdt_buf_t b = {0};
    crdt_v1_msg_t back;
    ok(crdt_v1_encode(m, &b) == 0, "%s: re-encoded", name);
    ok(crdt_v1_decode((const char *)b.data, b.len, from, &LIM, &back, &e) == 0 &&
           crdt_v1_msg_equal(m, &back),
       "%s: decode(encode(m)) == m (%.*s)", name, (int)b.len, (const char *)b.data);
    crdt_v1_msg_clear(&back);
    crdt_buf_free(&b);
    return 0;
}

/* Expects text to be refused with `code`; returns the error for more checks. */
static crdt_v1_error_t refused(const char *text, unsigned from, crdt_v1_code_t code,
                               const char *name)
{
    crdt_v1_msg_t m;
    crdt_v1_error_t e;
    int rc = crdt_v1_decode(text, strlen(text), from, &LIM, &m, &e);
    ok(rc == -1, "%s: refused", name);
    is(crdt_v1_code_name(e.code), crdt_v1_code_name(code), "%s: code (%s)", name, e.text);
    ok(e.text[0] != '\0', "%s: says why", name);
    ok(m.type == CRDT_V1_NONE && !m.key && !m.topics, "%s: the message is left empty", name);
    return e;
}

static void test_client_messages(void)
{
    crdt_v1_msg_t m;
    const unsigned C = CRDT_V1_FROM_CLIENT;
    if (!decode_ok(
            "{\"type\":\"hello\",\"token\":\"a.b\",\"client\":\"phone-7f3a\",\"cursor\":1041}", C,
            &m, "hello")) {
        is_int(m.type, CRDT_V1_HELLO, "hello: type");
        is(m.client, "phone-7f3a", "hello: client");
        is(m.token, "a.b", "hello: token");
        is_int(m.cursor, 1041, "hello: cursor");
        crdt_v1_msg_clear(&m);
    }
    if (!decode_ok("{\"type\":\"hello\",\"client\":\"c\"}", C, &m, "hello without token")) {
        ok(m.token == NULL && m.cursor == 0, "hello: no token, cursor 0");
        crdt_v1_msg_clear(&m);
    }
    if (!decode_ok("{\"type\":\"subscribe\",\"id\":1,\"keys\":[\"user\"],"
                   "\"prefixes\":[\"feed:\",\"\"],\"since\":7}",
                   C, &m, "subscribe")) {
        is_int(m.id, 1, "subscribe: id");
        ok(m.has_since && m.since == 7, "subscribe: since");
        is_int(m.ntopics, 3, "subscribe: three topics");
        ok(!m.topics[0].prefix && m.topics[0].len == 4 && !memcmp(m.topics[0].bytes, "user", 4),
           "subscribe: the text key");
        ok(m.topics[1].prefix && m.topics[1].len == 5 && !memcmp(m.topics[1].bytes, "feed:", 5),
           "subscribe: the prefix decoded");
        ok(m.topics[2].prefix && m.topics[2].len == 0, "subscribe: the empty prefix");
        crdt_v1_msg_clear(&m);
    }
    if (!decode_ok("{\"type\":\"unsubscribe\",\"id\":2,\"prefixes\":[\"\"]}", C, &m,
                   "unsubscribe")) {
        ok(m.type == CRDT_V1_UNSUBSCRIBE && m.ntopics == 1 && !m.has_since, "unsubscribe: fields");
        crdt_v1_msg_clear(&m);
    }
    if (!decode_ok("{\"type\":\"apply\",\"id\":41,\"key\":\"clicks\",\"op\":{\"type\":"
                   "\"pncounter\",\"op\":\"incr\",\"by\":2}}",
                   C, &m, "apply op")) {
        ok(m.id == 41 && m.klen == 6 && !memcmp(m.key, "clicks", 6), "apply: id and key");
        ok(json_is_object(m.op) && !m.frame, "apply: the op, no delta");
        crdt_v1_msg_clear(&m);
    }
    if (!decode_ok("{\"type\":\"apply\",\"id\":9007199254740991,\"key\":\"clicks\","
                   "\"delta\":{\"type\":\"gcounter\",\"state\":{}}}",
                   C, &m, "apply delta")) {
        ok(!m.op && json_is_object(m.frame), "apply: the delta as JSON");
        crdt_v1_msg_clear(&m);
    }
    if (!decode_ok("{\"type\":\"ping\"}", C, &m, "ping"))
        crdt_v1_msg_clear(&m);

    /* byte strings: text as a string, other bytes as {"base64"}; both read for any bytes */
    if (!decode_ok("{\"type\":\"subscribe\",\"id\":5,\"keys\":[{\"base64\":\"AP8=\"},\"a\\\"b\"],"
                   "\"prefixes\":[{\"base64\":\"/w==\"}]}",
                   C, &m, "subscribe to binary keys")) {
        ok(m.topics[0].len == 2 && !memcmp(m.topics[0].bytes, "\x00\xff", 2),
           "a binary key from {\"base64\"}");
        ok(m.topics[1].len == 3 && !memcmp(m.topics[1].bytes, "a\"b", 3), "an escaped text key");
        ok(m.topics[2].prefix && m.topics[2].len == 1 && m.topics[2].bytes[0] == 0xff,
           "a binary prefix");
        crdt_buf_t b = {0};
        crdt_v1_encode(&m, &b);
        ok(b.len && buf_has(&b, "[{\"base64\":\"AP8=\"},\"a\\\"b\"]") &&
               buf_has(&b, "\"prefixes\":[{\"base64\":\"/w==\"}]"),
           "encoded in the same forms: %.*s", (int)b.len, (const char *)b.data);
        crdt_buf_free(&b);
        crdt_v1_msg_clear(&m);
    }
    crdt_v1_error_t e;
    const char *as64 = "{\"type\":\"apply\",\"id\":3,\"key\":{\"base64\":\"Y2xpY2tz\"},"
                       "\"op\":{\"type\":\"gcounter\",\"op\":\"incr\"}}";
    ok(crdt_v1_decode(as64, strlen(as64), C, &LIM, &m, &e) == 0 && m.klen == 6 &&
           !memcmp(m.key, "clicks", 6),
       "a text key given as {\"base64\"} reads as the text");
    crdt_buf_t b = {0};
    ok(crdt_v1_encode(&m, &b) == 0 && buf_has(&b, "\"key\":\"clicks\""),
       "and is written back as a string");
    crdt_buf_free(&b);
    crdt_v1_msg_clear(&m);
}

static void test_client_errors(void)
{
    const unsigned C = CRDT_V1_FROM_CLIENT;
    refused("{\"type\":", C, CRDT_V1_E_BAD_JSON, "malformed JSON");
    refused("[1,2]", C, CRDT_V1_E_BAD_JSON, "not an object");
    refused("{\"type\":\"ping\",\"type\":\"ping\"}", C, CRDT_V1_E_BAD_JSON, "duplicate fields");
    refused("{\"id\":1}", C, CRDT_V1_E_BAD_REQUEST, "no type");
    refused("{\"type\":\"frobnicate\"}", C, CRDT_V1_E_UNKNOWN_TYPE, "unknown type");
    refused("{\"type\":\"welcome\",\"node\":1,\"seq\":1}", C, CRDT_V1_E_UNKNOWN_TYPE,
            "a server message from a client");
    crdt_v1_error_t e = refused("{\"type\":\"hello\",\"client\":\"a b\"}", C, CRDT_V1_E_BAD_REQUEST,
                                "hello: bad client id");
    is_int(e.type, CRDT_V1_HELLO, "the error names the message type");
    refused("{\"type\":\"hello\",\"client\":\"c\",\"cursor\":-1}", C, CRDT_V1_E_BAD_REQUEST,
            "hello: negative cursor");
    refused("{\"type\":\"hello\",\"client\":\"c\",\"token\":5}", C, CRDT_V1_E_BAD_REQUEST,
            "hello: token not a string");
    e = refused("{\"type\":\"subscribe\",\"keys\":[\"a\"]}", C, CRDT_V1_E_BAD_REQUEST,
                "subscribe: no id");
    ok(!e.has_id, "no id to echo");
    e = refused("{\"type\":\"subscribe\",\"id\":3,\"keys\":[{\"base64\":\"Y\"}]}", C, CRDT_V1_E_BAD_REQUEST,
                "subscribe: bad base64");
    ok(e.has_id && e.id == 3, "the error carries the request id");
    refused("{\"type\":\"subscribe\",\"id\":3,\"keys\":[\"\"]}", C, CRDT_V1_E_BAD_REQUEST,
            "subscribe: empty key");
    refused("{\"type\":\"subscribe\",\"id\":3,\"keys\":[\"abcdefghi\"]}", C,
            CRDT_V1_E_BAD_REQUEST, "subscribe: key over max_key");
    refused("{\"type\":\"subscribe\",\"id\":3,\"keys\":\"YQ==\"}", C, CRDT_V1_E_BAD_REQUEST,
            "subscribe: keys not an array");
    refused("{\"type\":\"subscribe\",\"id\":3,\"keys\":[]}", C, CRDT_V1_E_BAD_REQUEST,
            "subscribe: nothing to subscribe");
    refused(
        "{\"type\":\"subscribe\",\"id\":3,\"keys\":[\"a\",\"b\"],\"prefixes\":[\"\",\"\"]}",
        C, CRDT_V1_E_LIMIT, "subscribe: over max_topics");
    refused("{\"type\":\"subscribe\",\"id\":3,\"keys\":[\"a\"],\"since\":\"1\"}", C,
            CRDT_V1_E_BAD_REQUEST, "subscribe: since not an integer");
    refused("{\"type\":\"apply\",\"id\":0,\"key\":\"a\",\"op\":{}}", C, CRDT_V1_E_BAD_REQUEST,
            "apply: id 0");
    refused("{\"type\":\"apply\",\"id\":9007199254740992,\"key\":\"a\",\"op\":{}}", C,
            CRDT_V1_E_BAD_REQUEST, "apply: id 2^53");
    refused("{\"type\":\"apply\",\"id\":1,\"key\":\"a\"}", C, CRDT_V1_E_BAD_REQUEST,
            "apply: neither op nor delta");
    refused("{\"type\":\"apply\",\"id\":1,\"key\":\"a\",\"op\":{},\"delta\":{}}", C,
            CRDT_V1_E_BAD_REQUEST, "apply: both op and delta");
    refused("{\"type\":\"apply\",\"id\":1,\"key\":\"a\",\"delta\":[]}", C, CRDT_V1_E_BAD_REQUEST,
            "apply: delta not a frame");
    refused("{\"type\":\"apply\",\"id\":1,\"key\":7,\"op\":{}}", C, CRDT_V1_E_BAD_REQUEST,
            "apply: a number as key");
    refused("{\"type\":\"apply\",\"id\":1,\"key\":{\"base64\":\"YQ==\",\"x\":1},\"op\":{}}", C,
            CRDT_V1_E_BAD_REQUEST, "apply: {\"base64\"} with another field");
    refused("{\"type\":\"apply\",\"id\":1,\"key\":{\"base64\":\"YQ=\"},\"op\":{}}", C, CRDT_V1_E_BAD_REQUEST,
            "apply: key with bad padding");
}

static void test_server_messages(void)
{
    crdt_v1_msg_t m;
    const unsigned S = CRDT_V1_FROM_SERVER;
    if (!decode_ok("{\"type\":\"welcome\",\"node\":3,\"seq\":1187,\"session\":\"9f2c\","
                   "\"subject\":\"alice\",\"expires\":1700003600,\"limits\":{\"max_message\":"
                   "1048576,\"max_subscriptions\":1024,\"send_queue\":8,\"idle_timeout\":60,"
                   "\"max_errors\":32}}",
                   S, &m, "welcome")) {
        ok(m.node == 3 && m.seq == 1187 && m.expires == 1700003600, "welcome: numbers");
        is(m.session, "9f2c", "welcome: session");
        is(m.subject, "alice", "welcome: subject");
        ok(m.has_limits && m.limits.max_message == 1048576 && m.limits.max_errors == 32,
           "welcome: limits");
        crdt_v1_msg_clear(&m);
    }
    if (!decode_ok("{\"type\":\"welcome\",\"node\":1,\"seq\":0}", S, &m, "a bare welcome")) {
        ok(!m.session && !m.has_limits, "welcome: optional fields absent");
        crdt_v1_msg_clear(&m);
    }
    crdt_obj_t *tl = crdt_timeline_new(0);
    crdt_timeline_add(tl, "m", 1, 2.5, NULL);
    json_t *fj = crdt_obj_to_json(tl);
    char *ft = json_dumps(fj, JSON_COMPACT);
    char text[512];
    snprintf(text, sizeof(text),
             "{\"type\":\"change\",\"cursor\":12,\"key\":\"feed\",\"seq\":11,\"state\":%s}",
             ft);
    if (!decode_ok(text, S, &m, "change")) {
        ok(m.full && m.cursor == 12 && m.seq == 11 && m.klen == 4, "change: fields");
        ok(m.obj && crdt_obj_equal(m.obj, tl), "change: the state decoded to the object");
        ok(json_is_object(m.frame), "change: the frame kept as received");
        /* the change body and head as the server shares them */
        crdt_buf_t b = {0};
        char head[CRDT_V1_CHANGE_HEAD_MAX];
        size_t hl = crdt_v1_change_head(head, 12);
        crdt_buf_append(&b, head, hl);
        ok(crdt_v1_encode_change_body("feed", 4, 11, true, tl, NULL, &b) == 0,
           "change body encoded");
        crdt_v1_msg_t back;
        ok(crdt_v1_decode((const char *)b.data, b.len, S, NULL, &back, NULL) == 0 &&
               crdt_v1_msg_equal(&m, &back),
           "head + body is the change message");
        crdt_v1_msg_clear(&back);
        crdt_buf_free(&b);
        crdt_v1_msg_clear(&m);
    }
    snprintf(text, sizeof(text),
             "{\"type\":\"change\",\"cursor\":12,\"key\":\"feed\",\"seq\":11,\"delta\":"
             "{\"type\":\"timeline\",\"state\":7}}");
    refused(text, S, CRDT_V1_E_BAD_REQUEST, "change: a frame libcrdt refuses");
    refused("{\"type\":\"change\",\"cursor\":1,\"key\":\"feed\",\"seq\":1}", S,
            CRDT_V1_E_BAD_REQUEST, "change: no frame");
    free(ft);
    json_decref(fj);
    crdt_obj_free(tl);

    if (!decode_ok("{\"type\":\"ack\",\"id\":41,\"seq\":1190,\"applied\":false,\"duplicate\":true}",
                   S, &m, "ack")) {
        ok(m.id == 41 && m.seq == 1190 && !m.applied && m.duplicate, "ack: fields");
        crdt_v1_msg_clear(&m);
    }
    refused("{\"type\":\"ack\",\"id\":41,\"seq\":1}", S, CRDT_V1_E_BAD_REQUEST,
            "ack: applied missing");
    if (!decode_ok("{\"type\":\"subscribed\",\"id\":1,\"cursor\":5}", S, &m, "subscribed")) {
        ok(m.id == 1 && m.cursor == 5, "subscribed: fields");
        crdt_v1_msg_clear(&m);
    }
    if (!decode_ok("{\"type\":\"unsubscribed\",\"id\":2}", S, &m, "unsubscribed"))
        crdt_v1_msg_clear(&m);
    if (!decode_ok("{\"type\":\"pong\"}", S, &m, "pong"))
        crdt_v1_msg_clear(&m);
    if (!decode_ok("{\"type\":\"error\",\"id\":4,\"code\":\"wrong_type\",\"message\":\"no\"}", S,
                   &m, "error")) {
        ok(m.has_id && m.id == 4 && m.code == CRDT_V1_E_WRONG_TYPE, "error: id and code");
        is(m.message, "no", "error: message");
        crdt_v1_msg_clear(&m);
    }
    if (!decode_ok("{\"type\":\"error\",\"code\":\"brand_new\"}", S, &m, "error: unknown code")) {
        ok(m.code == CRDT_V1_E_OTHER && !m.has_id, "an unknown code is kept as other");
        is(m.code_name, "brand_new", "by its name");
        crdt_v1_msg_clear(&m);
    }
    refused("{\"type\":\"hello\",\"client\":\"c\"}", S, CRDT_V1_E_UNKNOWN_TYPE,
            "a client message from the server");
}

static void test_encode(void)
{
    /* the server's error with a message that is not UTF-8 still goes out */
    crdt_v1_msg_t m = {.type = CRDT_V1_ERROR, .code = CRDT_V1_E_BAD_REQUEST, .message = "\xff"};
    crdt_buf_t b = {0};
    ok(crdt_v1_encode(&m, &b) == 0, "an error with a non-UTF-8 message is encoded");
    crdt_v1_msg_t back;
    ok(crdt_v1_decode((const char *)b.data, b.len, CRDT_V1_FROM_SERVER, NULL, &back, NULL) == 0,
       "and decodes");
    is(back.message, "(message not UTF-8)", "with a replacement text");
    crdt_v1_msg_clear(&back);
    crdt_buf_free(&b);
    /* what a type needs must be there */
    crdt_v1_msg_t bad = {.type = CRDT_V1_APPLY, .id = 1, .key = (uint8_t *)"k", .klen = 1};
    b.len = 0;
    is_int(crdt_v1_encode(&bad, &b), CRDT_EINVAL, "an apply without op or delta is refused");
    is_int(b.len, 0, "and writes nothing");
    crdt_v1_msg_t hello = {.type = CRDT_V1_HELLO};
    is_int(crdt_v1_encode(&hello, &b), CRDT_EINVAL, "a hello without a client id is refused");
    for (int c = 0; c < CRDT_V1_E_COUNT; c++)
        is_int(crdt_v1_code_from_name(crdt_v1_code_name((crdt_v1_code_t)c)), c,
               "code %s names itself", crdt_v1_code_name((crdt_v1_code_t)c));
    crdt_buf_free(&b);
}

int main(void)
{
    test_client_messages();
    test_client_errors();
    test_server_messages();
    test_encode();
    return done_testing();
}
