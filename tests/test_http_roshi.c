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

/* roshi's cursor "<float64 bits>!<base64 member>", percent-encoded for a query string */
static const char *cursor(double score, const char *member)
{
    static char bufs[4][256];
    static int k;
    char *o = bufs[k++ % 4];
    uint64_t bits;
    memcpy(&bits, &score, sizeof(bits));
    int w = snprintf(o, 256, "%" PRIu64 "%%21", bits);
    for (const char *p = hc_b64s(member, false); *p; p++)
        w += *p == '=' || *p == '+' || *p == '/' ? snprintf(o + w, 256 - (size_t)w, "%%%02X", *p)
                                                 : snprintf(o + w, 256 - (size_t)w, "%c", *p);
    return o;
}

static bool is_ksm(json_t *r, const char *key, double score, const char *member)
{
    json_t *k = json_object_get(r, "key"), *s = json_object_get(r, "score"),
           *m = json_object_get(r, "member");
    return json_is_string(k) && !strcmp(json_string_value(k), hc_b64s(key, false)) &&
           json_is_number(s) && json_number_value(s) == score && json_is_string(m) &&
           !strcmp(json_string_value(m), hc_b64s(member, false)) && json_object_size(r) == 3;
}

static bool error_shape(int code)
{
    json_t *e = json_object_get(J, "error"), *c = json_object_get(J, "code"),
           *d = json_object_get(J, "description");
    return json_is_string(e) && json_is_integer(c) && json_integer_value(c) == code &&
           json_is_string(d) && json_object_size(J) >= 3;
}

static char body[8192];

static int insert(const char *key, double score, const char *member)
{
    snprintf(body, sizeof(body), "[{\"key\":\"%s\",\"score\":%.17g,\"member\":\"%s\"}]",
             hc_b64s(key, false), score, hc_b64s(member, false));
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
             hc_b64s("foo", false), hc_b64s("a", false), hc_b64s("foo", false), hc_b64s("b", false),
             hc_b64s("bar", false), hc_b64s("c", false));
    is_int(req("POST", "/", body), 200, "POST / inserts");
    ok(json_is_integer(json_object_get(J, "inserted")) &&
           json_integer_value(json_object_get(J, "inserted")) == 3,
       "{\"inserted\":3}: %s", R.body);
    ok(json_is_string(json_object_get(J, "duration")), "with a Go-style duration string");
    char ct[128];
    ok(hc_header(&R, "content-type", ct, sizeof(ct)) && !strcmp(ct, "application/json"),
       "Content-Type: application/json");
    is_int(req("POST", "/", body), 200, "the same insert again");
    ok(json_integer_value(json_object_get(J, "inserted")) == 0,
       "counts what changed: 0 (roshi would say 3)");

    /* select, not coalesced: records keyed by the key as a string */
    snprintf(body, sizeof(body), "[\"%s\",\"%s\",\"%s\"]", hc_b64s("foo", false),
             hc_b64s("bar", false), hc_b64s("none", false));
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

    /* coalesce */
    snprintf(body, sizeof(body), "[\"%s\",\"%s\"]", hc_b64s("foo", false), hc_b64s("bar", false));
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
    snprintf(body, sizeof(body), "[\"%s\",\"%s\"]", hc_b64s("foo", false), hc_b64s("bar", false));
    req("GET", "/?coalesce=true", body);
    ok(strstr(R.body, "\"score\":2.5,") && strstr(R.body, "\"score\":1,") &&
           strstr(R.body, "\"score\":3,"),
       "scores written as Go does (1, not 1.0): %s", R.body);
    snprintf(body, sizeof(body),
             "[{\"key\":\"%s\",\"score\":1e21,\"member\":\"%s\"},"
             "{\"key\":\"%s\",\"score\":1e-7,\"member\":\"%s\"},"
             "{\"key\":\"%s\",\"score\":1700000000.125,\"member\":\"%s\"}]",
             hc_b64s("nums", false), hc_b64s("a", false), hc_b64s("nums", false),
             hc_b64s("b", false), hc_b64s("nums", false), hc_b64s("c", false));
    req("POST", "/", body);
    snprintf(body, sizeof(body), "[\"%s\"]", hc_b64s("nums", false));
    req("GET", "/", body);
    ok(strstr(R.body, "\"score\":1e+21,") && strstr(R.body, "\"score\":1e-7,") &&
           strstr(R.body, "\"score\":1700000000.125,"),
       "1e+21, 1e-7 and 1700000000.125 as Go writes them: %s", R.body);

    /* delete: newer score wins; older is ignored */
    snprintf(body, sizeof(body), "[{\"key\":\"%s\",\"score\":2,\"member\":\"%s\"}]",
             hc_b64s("foo", false), hc_b64s("b", false));
    is_int(req("DELETE", "/", body), 200, "DELETE / with an older score");
    ok(json_integer_value(json_object_get(J, "deleted")) == 0, "{\"deleted\":0}: %s", R.body);
    snprintf(body, sizeof(body), "[{\"key\":\"%s\",\"score\":2.5,\"member\":\"%s\"}]",
             hc_b64s("foo", false), hc_b64s("b", false));
    is_int(req("DELETE", "/", body), 200, "DELETE / with an equal score");
    ok(json_integer_value(json_object_get(J, "deleted")) == 1, "remove wins the tie: deleted 1");
    is_int(insert("foo", 2.5, "b"), 200, "re-insert at the deleted score");
    ok(json_integer_value(json_object_get(J, "inserted")) == 0, "is refused (doomstone)");
    is_int(insert("foo", 2.6, "b"), 200, "insert at a newer score");
    ok(json_integer_value(json_object_get(J, "inserted")) == 1, "comes back");

    /* limit defaults to 10; offset pages */
    for (int i = 0; i < 15; i++) {
        char m[16];
        snprintf(m, sizeof(m), "e%02d", i);
        insert("many", 100 + i, m);
    }
    snprintf(body, sizeof(body), "[\"%s\"]", hc_b64s("many", false));
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
    snprintf(body, sizeof(body), "[\"%s\",\"%s\"]", hc_b64s("many", false), hc_b64s("bar", false));
    req("GET", path, body);
    recs = json_object_get(J, "records");
    ok(json_array_size(recs) == 2 && is_ksm(json_array_get(recs, 0), "many", 114, "e14"),
       "cursor select with coalesce");

    /* errors in roshi's shape */
    snprintf(path, sizeof(path), "/?offset=1&start=%s", cursor(110, "e10"));
    is_int(req("GET", path, body), 400, "offset with start: 400");
    ok(error_shape(400), "{\"error\",\"code\",\"description\"}: %s", R.body);
    is(json_string_value(json_object_get(J, "error")), "cannot specify both offset and start/stop",
       "roshi's message");
    is_int(req("GET", "/?start=nonsense", body), 400, "bad cursor: 400");
    ok(error_shape(400), "error shape");
    is_int(req("GET", "/?limit=-1", body), 400, "negative limit: 400");
    is_int(req("GET", "/", "[\"foo"), 400, "malformed JSON: 400");
    ok(error_shape(400) && json_is_object(json_object_get(J, "position")),
       "error shape plus the position: %s", R.body);
    is_int(req("GET", "/", "{\"keys\":[]}"), 400, "an object instead of a key list: 400");
    is_int(req("GET", "/", "[\"%%%\"]"), 400, "a key that is not base64: 400");
    is_int(req("POST", "/", "[{\"key\":\"Zm9v\",\"score\":\"1\",\"member\":\"YQ==\"}]"), 400,
           "score as a string: 400");
    is_int(req("POST", "/", "[{\"key\":\"Zm9v\",\"score\":1,\"member\":\"Y\"}]"), 400,
           "bad base64 member: 400");
    is_int(req("POST", "/", "[{\"key\":\"Zm9v\",\"score\":1}]"), 400, "missing member: 400");
    is_int(req("POST", "/", "[{\"key\":\"Zm9v\",\"score\":1e400,\"member\":\"YQ==\"}]"), 400,
           "a score out of double range: 400");
    is_int(req("POST", "/", "[{\"key\":\"Zm9v\",\"score\":7,\"member\":\"eg==\"},5]"), 400,
           "one bad tuple fails the request");
    snprintf(body, sizeof(body), "[\"%s\"]", hc_b64s("foo", false));
    req("GET", "/?limit=100", body);
    ok(json_array_size(json_object_get(json_object_get(J, "records"), "foo")) == 2,
       "and applied nothing of it");
    is_int(req("PUT", "/", "[]"), 405, "PUT /: 405");
    ok(error_shape(405), "error shape");
    is_int(req("GET", "/elsewhere", "[]"), 404, "another path: 404");
    is_int(req("POST", "/", "[]"), 200, "an empty insert is fine");

    /* keys that are not UTF-8 appear as Go writes them (U+FFFD) */
    is_int(req("POST", "/", "[{\"key\":\"/w==\",\"score\":1,\"member\":\"YQ==\"}]"), 200,
           "insert under the key 0xff");
    req("GET", "/", "[\"/w==\"]");
    recs = json_object_get(J, "records");
    ok(json_array_size(json_object_get(recs, "\xef\xbf\xbd")) == 1,
       "records keyed by U+FFFD for the invalid byte");

    /* interplay with the REST API: the same timelines */
    is_int(req_port(srv.port, "GET", "/v1/keys/bWFueQ/timeline?limit=1", NULL), 200,
           "REST read of a roshi-written timeline");
    ok(json_real_value(
           json_object_get(json_array_get(json_object_get(J, "entries"), 0), "score")) == 114,
       "sees the roshi writes");
    req_port(srv.port, "POST", "/v1/keys/Y291bnQ", "{\"type\":\"gcounter\",\"op\":\"incr\"}");
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
