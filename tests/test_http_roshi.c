/* test_http_roshi.c - crdtd's roshi-compatible listener: roshi-server's requests and responses */
#include "tap.h"

#include <inttypes.h>
#include <jansson.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>

#include "http_client.h"

#ifndef CRDTD_BIN
#error "CRDTD_BIN (the crdtd binary) must be defined"
#endif

static crdtd_proc_t srv;
static hc_resp_t R;
static json_t *J;

static int req_port(int port, const char *method, const char *path, const char *body)
{
    hc_resp_free(&R);
    json_decref(J);
    J = NULL;
    if (hc_request(port, method, path, body, &R))
        return 0;
    J = json_loadb(R.body, R.body_len, 0, NULL);
    return R.status;
}

static int req(const char *method, const char *path, const char *body)
{
    return req_port(srv.roshi_port, method, path, body);
}

static const char *b64(const char *s)
{
    static char bufs[16][256];
    static int k;
    char *o = bufs[k++ % 16];
    hc_b64(s, o, false);
    return o;
}

static const char *roshi_cursor(double score, const char *member)
{
    return hc_roshi_cursor(score, member, strlen(member), false);
}

/* The cursor in a query string, '=' percent-encoded as Go's url.Values.Encode writes it. */
static const char *cursor(double score, const char *member)
{
    return hc_roshi_cursor(score, member, strlen(member), true);
}

static bool is_ksm(json_t *r, const char *key, double score, const char *member)
{
    json_t *k = json_object_get(r, "key"), *s = json_object_get(r, "score"),
           *m = json_object_get(r, "member");
    return json_is_string(k) && !strcmp(json_string_value(k), b64(key)) && json_is_number(s) &&
           json_number_value(s) == score && json_is_string(m) &&
           !strcmp(json_string_value(m), b64(member)) && json_object_size(r) == 3;
}

/* roshi's respondError, fields in Go's sorted order: {"code","description","error"} */
static bool error_shape(int code)
{
    json_t *e = json_object_get(J, "error"), *c = json_object_get(J, "code"),
           *d = json_object_get(J, "description");
    char head[64];
    snprintf(head, sizeof(head), "{\"code\":%d,\"description\":\"", code);
    return json_is_string(e) && json_is_integer(c) && json_integer_value(c) == code &&
           json_is_string(d) && json_object_size(J) == 3 && !strncmp(R.body, head, strlen(head)) &&
           strstr(R.body, "\",\"error\":\"") != NULL;
}

static bool error_is(int code, const char *msg)
{
    return error_shape(code) && !strcmp(json_string_value(json_object_get(J, "error")), msg);
}

static char body[8192];

static int insert(const char *key, double score, const char *member)
{
    snprintf(body, sizeof(body), "[{\"key\":\"%s\",\"score\":%.17g,\"member\":\"%s\"}]", b64(key),
             score, b64(member));
    return req("POST", "/", body);
}

int main(void)
{
    signal(SIGPIPE, SIG_IGN);
    char *dir = test_tmpdir();
    if (!dir)
        skip_all("no temporary directory");
    char data[600];
    snprintf(data, sizeof(data), "%s/data", dir);
    const char *args[] = {"--data-dir", data, "--roshi-listen", "127.0.0.1:0", NULL};
    if (crdtd_start(&srv, CRDTD_BIN, dir, args) != 0) {
        ok(0, "crdtd starts with --roshi-listen");
        rm_rf(dir);
        return done_testing();
    }
    ok(srv.roshi_port > 0 && srv.roshi_port != srv.port, "roshi listener on its own port %d",
       srv.roshi_port);

    /* insert: roshi's body and response */
    snprintf(body, sizeof(body),
             "[{\"key\":\"%s\",\"score\":1,\"member\":\"%s\"},"
             "{\"key\":\"%s\",\"score\":2.5,\"member\":\"%s\"},"
             "{\"key\":\"%s\",\"score\":3,\"member\":\"%s\"}]",
             b64("foo"), b64("a"), b64("foo"), b64("b"), b64("bar"), b64("c"));
    is_int(req("POST", "/", body), 200, "POST / inserts");
    ok(json_is_integer(json_object_get(J, "inserted")) &&
           json_integer_value(json_object_get(J, "inserted")) == 3,
       "{\"inserted\":3}: %s", R.body);
    ok(json_is_string(json_object_get(J, "duration")), "with a Go-style duration string");
    ok(!strncmp(R.body, "{\"duration\":\"", 13) && strstr(R.body, "\",\"inserted\":3}\n"),
       "fields in Go's sorted order, one document a line: %s", R.body);
    char ct[128];
    ok(hc_header(&R, "content-type", ct, sizeof(ct)) && !strcmp(ct, "application/json"),
       "Content-Type: application/json");
    is_int(req("POST", "/", body), 200, "the same insert again");
    ok(json_integer_value(json_object_get(J, "inserted")) == 3,
       "counts the tuples sent, as roshi does: 3");

    /* select, not coalesced: records keyed by the key as a string */
    snprintf(body, sizeof(body), "[\"%s\",\"%s\",\"%s\"]", b64("foo"), b64("bar"), b64("none"));
    is_int(req("GET", "/", body), 200, "GET / with a JSON body selects");
    json_t *recs = json_object_get(J, "records");
    json_t *foo = json_object_get(recs, "foo");
    ok(json_is_object(recs) && json_object_size(recs) == 3, "one record list per key");
    ok(json_array_size(foo) == 2 && is_ksm(json_array_get(foo, 0), "foo", 2.5, "b") &&
           is_ksm(json_array_get(foo, 1), "foo", 1, "a"),
       "foo newest first as {key,score,member}");
    ok(json_array_size(json_object_get(recs, "none")) == 0 &&
           json_is_array(json_object_get(recs, "none")),
       "an unknown key has an empty list");
    ok(json_is_string(json_object_get(J, "duration")), "select has a duration");
    {
        const char *d = strstr(R.body, "\"duration\""), *r = strstr(R.body, "\"records\"");
        const char *kb = strstr(R.body, "\"bar\":["), *kf = strstr(R.body, "\"foo\":["),
                   *kn = strstr(R.body, "\"none\":[");
        ok(d == R.body + 1 && r > d && kb && kf && kn && kb < kf && kf < kn,
           "duration before records, keys sorted as Go sorts a map: %s", R.body);
    }

    /* coalesce */
    snprintf(body, sizeof(body), "[\"%s\",\"%s\"]", b64("foo"), b64("bar"));
    is_int(req("GET", "/?coalesce=true", body), 200, "coalesce=true");
    recs = json_object_get(J, "records");
    ok(json_array_size(recs) == 3 && is_ksm(json_array_get(recs, 0), "bar", 3, "c") &&
           is_ksm(json_array_get(recs, 1), "foo", 2.5, "b") &&
           is_ksm(json_array_get(recs, 2), "foo", 1, "a"),
       "one list, newest first across keys");
    req("GET", "/?coalesce=1&offset=1&limit=1", body);
    recs = json_object_get(J, "records");
    ok(json_array_size(recs) == 1 && is_ksm(json_array_get(recs, 0), "foo", 2.5, "b"),
       "coalesce with offset and limit");

    /* numbers as Go's encoding/json writes a float64 */
    snprintf(body, sizeof(body), "[\"%s\",\"%s\"]", b64("foo"), b64("bar"));
    req("GET", "/?coalesce=true", body);
    ok(strstr(R.body, "\"score\":2.5,") && strstr(R.body, "\"score\":1,") &&
           strstr(R.body, "\"score\":3,"),
       "scores written as Go does (1, not 1.0): %s", R.body);
    snprintf(body, sizeof(body),
             "[{\"key\":\"%s\",\"score\":1e21,\"member\":\"%s\"},"
             "{\"key\":\"%s\",\"score\":1e-7,\"member\":\"%s\"},"
             "{\"key\":\"%s\",\"score\":1700000000.125,\"member\":\"%s\"}]",
             b64("nums"), b64("a"), b64("nums"), b64("b"), b64("nums"), b64("c"));
    req("POST", "/", body);
    snprintf(body, sizeof(body), "[\"%s\"]", b64("nums"));
    req("GET", "/", body);
    ok(strstr(R.body, "\"score\":1e+21,") && strstr(R.body, "\"score\":1e-7,") &&
           strstr(R.body, "\"score\":1700000000.125,"),
       "1e+21, 1e-7 and 1700000000.125 as Go writes them: %s", R.body);
    snprintf(body, sizeof(body),
             "[{\"key\":\"%s\",\"score\":-0,\"member\":\"%s\"},"
             "{\"key\":\"%s\",\"score\":-5,\"member\":\"%s\"},"
             "{\"key\":\"%s\",\"score\":9007199254740993,\"member\":\"%s\"},"
             "{\"key\":\"%s\",\"score\":0.1,\"member\":\"%s\"},"
             "{\"key\":\"%s\",\"score\":123456789012.345,\"member\":\"%s\"}]",
             b64("nums2"), b64("a"), b64("nums2"), b64("b"), b64("nums2"), b64("c"), b64("nums2"),
             b64("d"), b64("nums2"), b64("e"));
    is_int(req("POST", "/", body), 200, "insert -0, -5, 2^53 + 1, 0.1, 123456789012.345");
    snprintf(body, sizeof(body), "[\"%s\"]", b64("nums2"));
    req("GET", "/", body);
    ok(strstr(R.body, "\"score\":0,\"member\":\"YQ==\"") && strstr(R.body, "\"score\":-5,") &&
           strstr(R.body, "\"score\":9007199254740992,") && strstr(R.body, "\"score\":0.1,") &&
           strstr(R.body, "\"score\":123456789012.345,"),
       "0 (timelines keep -0 as 0), -5, 9007199254740992 (the double), 0.1, 123456789012.345 "
       "as Go writes them: %s",
       R.body);

    /* delete: newer score wins; older is ignored */
    snprintf(body, sizeof(body), "[{\"key\":\"%s\",\"score\":2,\"member\":\"%s\"}]", b64("foo"),
             b64("b"));
    is_int(req("DELETE", "/", body), 200, "DELETE / with an older score");
    ok(json_integer_value(json_object_get(J, "deleted")) == 1 && !strncmp(R.body, "{\"deleted\":1,\"duration\":\"", 25),
       "{\"deleted\":1,\"duration\"} (roshi counts the tuples sent): %s", R.body);
    snprintf(body, sizeof(body), "[\"%s\"]", b64("foo"));
    req("GET", "/", body);
    ok(is_ksm(json_array_get(json_object_get(json_object_get(J, "records"), "foo"), 0), "foo", 2.5,
              "b"),
       "the older delete changed nothing");
    snprintf(body, sizeof(body), "[{\"key\":\"%s\",\"score\":2.5,\"member\":\"%s\"}]", b64("foo"),
             b64("b"));
    snprintf(body, sizeof(body), "[{\"key\":\"%s\",\"score\":2.5,\"member\":\"%s\"}]", b64("foo"),
             b64("b"));
    is_int(req("DELETE", "/", body), 200, "DELETE / with an equal score");
    snprintf(body, sizeof(body), "[\"%s\"]", b64("foo"));
    req("GET", "/", body);
    ok(json_array_size(json_object_get(json_object_get(J, "records"), "foo")) == 1,
       "remove wins the tie");
    is_int(insert("foo", 2.5, "b"), 200, "re-insert at the deleted score");
    snprintf(body, sizeof(body), "[\"%s\"]", b64("foo"));
    req("GET", "/", body);
    ok(json_array_size(json_object_get(json_object_get(J, "records"), "foo")) == 1,
       "stays deleted (doomstone)");
    is_int(insert("foo", 2.6, "b"), 200, "insert at a newer score");
    snprintf(body, sizeof(body), "[\"%s\"]", b64("foo"));
    req("GET", "/", body);
    ok(is_ksm(json_array_get(json_object_get(json_object_get(J, "records"), "foo"), 0), "foo", 2.6,
              "b"),
       "comes back");

    /* limit defaults to 10; offset pages */
    for (int i = 0; i < 15; i++) {
        char m[16];
        snprintf(m, sizeof(m), "e%02d", i);
        insert("many", 100 + i, m);
    }
    snprintf(body, sizeof(body), "[\"%s\"]", b64("many"));
    req("GET", "/", body);
    json_t *many = json_object_get(json_object_get(J, "records"), "many");
    is_int((int)json_array_size(many), 10, "limit defaults to 10");
    ok(is_ksm(json_array_get(many, 0), "many", 114, "e14"), "newest first");
    req("GET", "/?offset=12&limit=5", body);
    many = json_object_get(json_object_get(J, "records"), "many");
    ok(json_array_size(many) == 3 && is_ksm(json_array_get(many, 0), "many", 102, "e02"),
       "offset 12 gives the last 3");
    req("GET", "/?offset=junk", body);
    many = json_object_get(json_object_get(J, "records"), "many");
    ok(R.status == 200 && json_array_size(many) == 10 &&
           is_ksm(json_array_get(many, 0), "many", 114, "e14"),
       "an unparsable offset falls back to 0 (as roshi's parseInt)");

    /* cursors: start and stop are exclusive */
    char path[512];
    snprintf(path, sizeof(path), "/?start=%s&limit=3", cursor(110, "e10"));
    is_int(req("GET", path, body), 200, "select with start");
    many = json_object_get(json_object_get(J, "records"), "many");
    ok(json_array_size(many) == 3 && is_ksm(json_array_get(many, 0), "many", 109, "e09") &&
           is_ksm(json_array_get(many, 2), "many", 107, "e07"),
       "start is exclusive, limit respected");
    snprintf(path, sizeof(path), "/?start=%s&stop=%s", cursor(110, "e10"), cursor(106, "e06"));
    req("GET", path, body);
    many = json_object_get(json_object_get(J, "records"), "many");
    ok(json_array_size(many) == 3 && is_ksm(json_array_get(many, 2), "many", 107, "e07"),
       "stop is exclusive");
    snprintf(path, sizeof(path), "/?stop=%s", cursor(112, "e12"));
    req("GET", path, body);
    many = json_object_get(json_object_get(J, "records"), "many");
    ok(json_array_size(many) == 2 && is_ksm(json_array_get(many, 0), "many", 114, "e14"),
       "stop alone: from the top down to the stop");
    snprintf(path, sizeof(path), "/?start=%s&coalesce=true&limit=2", cursor(1000, ""));
    snprintf(body, sizeof(body), "[\"%s\",\"%s\"]", b64("many"), b64("bar"));
    req("GET", path, body);
    recs = json_object_get(J, "records");
    ok(json_array_size(recs) == 2 && is_ksm(json_array_get(recs, 0), "many", 114, "e14"),
       "cursor select with coalesce");

    /* paging with roshi's own cursors: the last entry of a page is the start of the next */
    {
        char got[15][16];
        size_t n = 0;
        double last_score = 0;
        char last_member[16] = "";
        snprintf(body, sizeof(body), "[\"%s\"]", b64("many"));
        for (int page = 0; page < 6 && n < 15; page++) {
            if (page)
                snprintf(path, sizeof(path), "/?limit=4&start=%s", cursor(last_score, last_member));
            else
                snprintf(path, sizeof(path), "/?limit=4");
            if (req("GET", path, body) != 200)
                break;
            many = json_object_get(json_object_get(J, "records"), "many");
            if (!json_array_size(many))
                break;
            for (size_t i = 0; i < json_array_size(many) && n < 15; i++) {
                json_t *e = json_array_get(many, i);
                last_score = json_number_value(json_object_get(e, "score"));
                snprintf(last_member, sizeof(last_member), "e%02d", (int)last_score - 100);
                ok(is_ksm(e, "many", last_score, last_member), "page %d entry %zu: %s", page, i,
                   last_member);
                snprintf(got[n++], sizeof(got[0]), "%s", last_member);
            }
        }
        bool all = n == 15;
        for (size_t i = 0; all && i < 15; i++) {
            char want[16];
            snprintf(want, sizeof(want), "e%02d", (int)(14 - i));
            all = !strcmp(got[i], want);
        }
        ok(all, "four pages of roshi cursors give all 15 entries newest first, each once (%zu)", n);
        snprintf(path, sizeof(path), "/?limit=4&start=%s", cursor(last_score, last_member));
        req("GET", path, body);
        ok(R.status == 200 &&
               json_array_size(json_object_get(json_object_get(J, "records"), "many")) == 0,
           "and past the last one, nothing");
    }
    /* members whose base64 holds '+' and '/': the cursor uses '-' and '_' */
    snprintf(body, sizeof(body),
             "[{\"key\":\"%s\",\"score\":5,\"member\":\"%s\"},"
             "{\"key\":\"%s\",\"score\":5,\"member\":\"%s\"},"
             "{\"key\":\"%s\",\"score\":5,\"member\":\"%s\"}]",
             b64("url"), b64("\xfb\xff"), b64("url"), b64("\xfb\xfe"), b64("url"), b64("\xfb"));
    is_int(req("POST", "/", body), 200, "members with bytes 0xfb 0xff");
    ok(strchr(roshi_cursor(5, "\xfb\xff"), '-') && strchr(roshi_cursor(5, "\xfb\xff"), '_'),
       "their cursor %s is in the URL-safe alphabet", roshi_cursor(5, "\xfb\xff"));
    snprintf(path, sizeof(path), "/?start=%s", cursor(5, "\xfb\xff"));
    snprintf(body, sizeof(body), "[\"%s\"]", b64("url"));
    is_int(req("GET", path, body), 200, "a URL-safe cursor is accepted");
    json_t *u = json_object_get(json_object_get(J, "records"), "url");
    ok(json_array_size(u) == 2 && is_ksm(json_array_get(u, 0), "url", 5, "\xfb\xfe") &&
           is_ksm(json_array_get(u, 1), "url", 5, "\xfb"),
       "entries after it at the same score, members descending: %s", R.body);
    snprintf(path, sizeof(path), "/?start=%s", roshi_cursor(5, "\xfb\xff"));
    req("GET", path, body);
    ok(R.status == 200 && json_array_size(json_object_get(json_object_get(J, "records"), "url")) == 2,
       "also with its '=' not percent-encoded");
    snprintf(body, sizeof(body), "[\"%s\"]", b64("many"));
    uint64_t bits110;
    double d110 = 110;
    memcpy(&bits110, &d110, sizeof(bits110));
    snprintf(path, sizeof(path), "/?start=%" PRIu64 "!ZTEw&limit=1", bits110);
    is_int(req("GET", path, body), 400, "crdtd's old '!' cursor: 400");
    ok(error_shape(400), "in roshi's error shape: %s", R.body);
    snprintf(path, sizeof(path), "/?start=%" PRIu64 "AZTE&limit=1", bits110);
    is_int(req("GET", path, body), 400, "a member that is not padded base64: 400");
    snprintf(path, sizeof(path), "/?start=%" PRIu64 "Ae+E=&limit=1", bits110);
    is_int(req("GET", path, body), 400, "a member in the standard alphabet: 400");
    is_int(req("GET", "/?start=12x4AZTEw", body), 400, "a score that is not a uint64: 400");
    is_int(req("GET", "/?start=99999999999999999999AZTEw", body), 400, "a uint64 overflow: 400");
    snprintf(path, sizeof(path), "/?stop=%" PRIu64 "A", bits110);
    is_int(req("GET", path, body), 200, "an empty member is a cursor");
    many = json_object_get(json_object_get(J, "records"), "many");
    ok(json_array_size(many) == 5 && is_ksm(json_array_get(many, 4), "many", 110, "e10"),
       "stop at (110, \"\"): down to e10 at 110, whose member is after \"\": %s", R.body);

    /* errors in roshi's shape */
    snprintf(path, sizeof(path), "/?offset=1&start=%s", cursor(110, "e10"));
    is_int(req("GET", path, body), 400, "offset with start: 400");
    ok(error_is(400, "cannot specify both offset and start/stop"), "roshi's message: %s", R.body);
    is_int(req("GET", "/?start=nonsense", body), 400, "bad cursor: 400");
    ok(error_is(400, "invalid cursor string (nonsense)"), "roshi's message: %s", R.body);
    is_int(req("GET", "/?limit=-1", body), 200, "negative limit: 200, as roshi-server");
    ok(json_object_size(json_object_get(J, "records")) == 0,
       "with no records (roshi's farm drops the keys whose read failed): %s", R.body);
    is_int(req("GET", "/?limit=-1&coalesce=true", body), 400,
           "negative limit with coalesce: 400 (roshi-server panics)");
    is_int(req("GET", "/?limit=0", body), 200, "limit 0");
    ok(json_is_array(json_object_get(json_object_get(J, "records"), "many")) &&
           json_array_size(json_object_get(json_object_get(J, "records"), "many")) == 0,
       "an empty list per key");
    is_int(req("GET", "/?offset=-1", body), 400, "negative offset: 400");
    is_int(req("GET", "/", "[\"foo"), 400, "truncated JSON: 400");
    ok(error_is(400, "unexpected EOF"), "Go's message: %s", R.body);
    is_int(req("GET", "/", "[x]"), 400, "malformed JSON: 400");
    ok(error_shape(400), "error shape: %s", R.body);
    is_int(req("GET", "/", NULL), 400, "select without a body: 400");
    ok(error_is(400, "EOF"), "Go's \"EOF\": %s", R.body);
    is_int(req("GET", "/", " \n"), 400, "a body of white space: 400");
    ok(error_is(400, "EOF"), "also \"EOF\"");
    is_int(req("POST", "/", ""), 400, "insert with an empty body: 400");
    ok(error_is(400, "EOF"), "\"EOF\"");
    is_int(req("GET", "/", "null"), 200, "a null key list");
    ok(!strncmp(R.body, "{\"duration\":\"", 13) && strstr(R.body, "\",\"records\":{}}\n"),
       "selects nothing: %s", R.body);
    is_int(req("GET", "/?coalesce=true", "[]"), 200, "an empty key list, coalesced");
    ok(strstr(R.body, "\",\"records\":[]}\n") != NULL, "records []: %s", R.body);
    is_int(req("POST", "/", "null"), 200, "a null insert");
    ok(json_integer_value(json_object_get(J, "inserted")) == 0, "inserts 0");
    snprintf(body, sizeof(body), "[\"%s\"] trailing words", b64("many"));
    is_int(req("GET", "/?limit=1", body), 200,
           "what follows the first JSON value is not read (Go's Decoder)");
    is_int(req("GET", "/", "{\"keys\":[]}"), 400, "an object instead of a key list: 400");
    ok(error_is(400, "json: cannot unmarshal object into Go value of type [][]uint8"),
       "Go's message: %s", R.body);
    is_int(req("GET", "/", "[\"%%%\"]"), 400, "a key that is not base64: 400");
    is_int(req("POST", "/", "[{\"key\":\"Zm9v\",\"score\":\"1\",\"member\":\"YQ==\"}]"), 400,
           "score as a string: 400");
    ok(error_is(400, "json: cannot unmarshal string into Go struct field jsonKeyScoreMember.score "
                     "of type float64"),
       "Go's message: %s", R.body);
    is_int(req("POST", "/", "[{\"key\":\"Zm9v\",\"score\":1,\"member\":\"Y\"}]"), 400,
           "bad base64 member: 400");
    is_int(req("POST", "/", "[{\"key\":\"Zm9v\",\"score\":1e400,\"member\":\"YQ==\"}]"), 400,
           "a score out of double range: 400");
    is_int(req("POST", "/", "[{\"key\":\"Zm9v\",\"score\":7,\"member\":\"eg==\"},5]"), 400,
           "one bad tuple fails the request");
    ok(error_is(400, "json: cannot unmarshal number into Go value of type "
                     "common.jsonKeyScoreMember"),
       "Go's message: %s", R.body);
    snprintf(body, sizeof(body), "[\"%s\"]", b64("foo"));
    req("GET", "/?limit=100", body);
    ok(json_array_size(json_object_get(json_object_get(J, "records"), "foo")) == 2,
       "and applied nothing of it");
    is_int(req("POST", "/", "[{\"member\":\"YQ==\",\"score\":1}]"), 400,
           "a tuple without a key: 400 (crdtd has no empty key)");
    ok(error_shape(400), "error shape");

    /* what Go's decoder accepts */
    is_int(req("POST", "/", "[{\"key\":\"Zm9v\",\"score\":9}]"), 200,
           "a tuple without a member: inserted, as roshi does");
    is_int(req("POST", "/", "[{\"KEY\":\"Zm9v\",\"Score\":null,\"MeMbEr\":\"eg==\"}]"), 200,
           "field names in any case, a null score");
    is_int(req("POST", "/",
               "[{\"key\":\"Zm9v\",\"score\":123456789012345678901234,\"member\":\"eQ==\","
               "\"member\":\"eA==\",\"extra\":[1,{}]}]"),
           200, "an integer beyond 64 bits, a repeated field, an unknown field");
    snprintf(body, sizeof(body), "[\"%s\"]", b64("foo"));
    req("GET", "/?limit=100", body);
    json_t *fl = json_object_get(json_object_get(J, "records"), "foo");
    ok(json_array_size(fl) == 5 && is_ksm(json_array_get(fl, 0), "foo", 123456789012345678901234.0, "x") &&
           is_ksm(json_array_get(fl, 1), "foo", 9, "") &&
           is_ksm(json_array_get(fl, 2), "foo", 2.6, "b") &&
           is_ksm(json_array_get(fl, 4), "foo", 0, "z"),
       "the empty member at 9, z at score 0, x (the last member field) on top: %s", R.body);

    is_int(req("PUT", "/", "[]"), 404, "PUT /: 404, as gorilla/pat answers");
    ok(!strcmp(R.body, "404 page not found\n"), "net/http's text: %s", R.body);
    snprintf(body, sizeof(body), "[\"%s\"]", b64("foo"));
    is_int(req("GET", "/elsewhere", body), 200, "another path selects too (pat routes by prefix)");
    ok(json_array_size(json_object_get(json_object_get(J, "records"), "foo")) == 5, "the same");
    is_int(req("POST", "/", "[]"), 200, "an empty insert is fine");

    /* keys as Go writes a string: <, > and & escaped */
    snprintf(body, sizeof(body), "[{\"key\":\"%s\",\"score\":1,\"member\":\"YQ==\"}]", b64("<a&b>"));
    is_int(req("POST", "/", body), 200, "insert under <a&b>");
    snprintf(body, sizeof(body), "[\"%s\"]", b64("<a&b>"));
    req("GET", "/", body);
    ok(strstr(R.body, "{\"\\u003ca\\u0026b\\u003e\":[") != NULL, "records key \\u003ca\\u0026b\\u003e: %s",
       R.body);

    /* keys that are not UTF-8 appear as Go writes them (U+FFFD) */
    is_int(req("POST", "/", "[{\"key\":\"/w==\",\"score\":1,\"member\":\"YQ==\"}]"), 200,
           "insert under the key 0xff");
    req("GET", "/", "[\"/w==\"]");
    recs = json_object_get(J, "records");
    ok(json_array_size(json_object_get(recs, "\xef\xbf\xbd")) == 1,
       "records keyed by U+FFFD for the invalid byte");

    /* interplay with the REST API: the same timelines */
    is_int(req_port(srv.port, "GET", "/v1/keys/many/timeline?limit=1", NULL), 200,
           "REST read of a roshi-written timeline");
    ok(json_real_value(
           json_object_get(json_array_get(json_object_get(J, "entries"), 0), "score")) == 114,
       "sees the roshi writes");
    /* A long select: integral and fractional scores interleaved (the fractional ones are written
     * through the slower path, in the middle of one reservation), negative ones, long members,
     * more than any starting buffer holds. */
    {
        enum { BIG = 300, BATCH = 20 };
        char members[BIG][80];
        double scores[BIG];
        for (int i = 0; i < BIG; i++) {
            snprintf(members[i], sizeof(members[i]), "member-%03d-%s", i,
                     "xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx" + i % 50);
            scores[i] = i % 7 == 0 ? -(double)i : i % 2 ? i * 1000.0 + 0.5 : i * 1000.0;
        }
        int inserted = 0;
        for (int i = 0; i < BIG; i += BATCH) {
            char *b = body;
            size_t room = sizeof(body);
            int n = snprintf(b, room, "[");
            for (int k = i; k < i + BATCH; k++)
                n += snprintf(b + n, room - (size_t)n,
                              "%s{\"key\":\"%s\",\"score\":%.17g,\"member\":\"%s\"}",
                              k > i ? "," : "", b64("big"), scores[k], b64(members[k]));
            snprintf(b + n, room - (size_t)n, "]");
            inserted += req("POST", "/", body) == 200;
        }
        ok(inserted == BIG / BATCH, "%d entries of long members inserted", BIG);
        snprintf(body, sizeof(body), "[\"%s\"]", b64("big"));
        char bpath[64];
        snprintf(bpath, sizeof(bpath), "/?limit=%d", BIG);
        is_int(req("GET", bpath, body), 200, "select of all %d", BIG);
        json_t *big_recs = json_object_get(json_object_get(J, "records"), "big");
        /* newest first: by score, descending */
        int order[BIG];
        for (int i = 0; i < BIG; i++)
            order[i] = i;
        for (int i = 1; i < BIG; i++)
            for (int j = i; j > 0 && scores[order[j]] > scores[order[j - 1]]; j--) {
                int t = order[j];
                order[j] = order[j - 1];
                order[j - 1] = t;
            }
        int right = 0;
        for (int i = 0; i < BIG && i < (int)json_array_size(big_recs); i++)
            right += is_ksm(json_array_get(big_recs, (size_t)i), "big", scores[order[i]],
                            members[order[i]]);
        ok(json_array_size(big_recs) == BIG && right == BIG,
           "every entry in order with its score and member (%d of %zu right)", right,
           json_array_size(big_recs));
        ok(strstr(R.body, "\"score\":-7,") && strstr(R.body, "\"score\":1000.5,") &&
               strstr(R.body, "\"score\":298000,"),
           "negative, fractional and integral scores as Go writes them");
    }

    req_port(srv.port, "POST", "/v1/keys/count", "{\"type\":\"gcounter\",\"op\":\"incr\"}");
    is_int(req("POST", "/", "[{\"key\":\"Y291bnQ=\",\"score\":1,\"member\":\"YQ==\"}]"), 409,
           "roshi insert into a counter key: 409");
    is_int(req("GET", "/", "[\"Y291bnQ=\"]"), 200, "roshi select of a counter key");
    ok(json_array_size(json_object_get(json_object_get(J, "records"), "count")) == 0,
       "reads as empty");
    is_int(req("GET", "/metrics", NULL), 200, "/metrics on the roshi listener too");
    ok(strstr(R.body, "endpoint=\"roshi_insert\"") != NULL, "counts roshi endpoints");

    int st = crdtd_stop(&srv, SIGTERM, 10000);
    ok(WIFEXITED(st) && WEXITSTATUS(st) == 0, "SIGTERM: exit 0");
    hc_resp_free(&R);
    json_decref(J);
    rm_rf(dir);
    free(dir);
    return done_testing();
}
