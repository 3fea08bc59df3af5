/* test_http.c - crdtd's REST API, flags and config file through real HTTP requests */
#include "tap.h"

#include <jansson.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "crdt.h"
#include "crdt_json.h"
#include "http_client.h"

#ifndef CRDTD_BIN
#error "CRDTD_BIN (the crdtd binary) must be defined"
#endif

static crdtd_proc_t srv;
static hc_resp_t R;
static json_t *J; /* R.body parsed, or NULL */

/* One request on a fresh connection; leaves the response in R and J; returns the status. */
static int req(const char *method, const char *path, const char *body)
{
    hc_resp_free(&R);
    json_decref(J);
    J = NULL;
    if (hc_request(srv.port, method, path, body, &R))
        return 0;
    J = json_loadb(R.body, R.body_len, 0, NULL);
    return R.status;
}

static const char *jstr(const char *field)
{
    json_t *v = J ? json_object_get(J, field) : NULL;
    return json_is_string(v) ? json_string_value(v) : "";
}

static long long jint(json_t *o, const char *field)
{
    json_t *v = o ? json_object_get(o, field) : NULL;
    return json_is_integer(v) ? json_integer_value(v) : -999999;
}

static char path[1024], body[4096];

static int post_key(const char *key, const char *json)
{
    snprintf(path, sizeof(path), "/v1/keys/%s", hc_pct(key));
    return req("POST", path, json);
}

static int get_key(const char *key)
{
    snprintf(path, sizeof(path), "/v1/keys/%s", hc_pct(key));
    return req("GET", path, NULL);
}

static void test_flags(const char *dir)
{
    char errf[600];
    snprintf(errf, sizeof(errf), "%s/flags.err", dir);
    const char *help[] = {"--help", NULL};
    int st = crdtd_run(CRDTD_BIN, help, errf, 5000);
    ok(WIFEXITED(st) && WEXITSTATUS(st) == 0, "--help exits 0");
    const char *bad[] = {"--no-such-flag", NULL};
    st = crdtd_run(CRDTD_BIN, bad, errf, 5000);
    ok(WIFEXITED(st) && WEXITSTATUS(st) == 2, "an unknown flag exits 2");
    const char *badfsync[] = {"--fsync", "sometimes", NULL};
    st = crdtd_run(CRDTD_BIN, badfsync, errf, 5000);
    ok(WIFEXITED(st) && WEXITSTATUS(st) == 2, "--fsync sometimes exits 2");
    FILE *f = fopen(errf, "r");
    char line[512] = "";
    if (f) {
        if (!fgets(line, sizeof(line), f))
            line[0] = '\0';
        fclose(f);
    }
    ok(strstr(line, "always, everysec or no") != NULL, "the error says what is accepted: %s", line);
    char cfg[600];
    snprintf(cfg, sizeof(cfg), "%s/missing.conf", dir);
    const char *nocfg[] = {"--config", cfg, NULL};
    st = crdtd_run(CRDTD_BIN, nocfg, errf, 5000);
    ok(WIFEXITED(st) && WEXITSTATUS(st) == 2, "a missing config file exits 2");
}

static void test_config_file(const char *dir)
{
    char cfg[600], data[600];
    snprintf(cfg, sizeof(cfg), "%s/crdtd.conf", dir);
    snprintf(data, sizeof(data), "%s/cfgdata", dir);
    FILE *f = fopen(cfg, "w");
    fprintf(f,
            "# test config\nnode-id = 7\n  timeline-max-size=3   # small bound\nfsync = no\n"
            "data-dir = %s\n",
            data);
    fclose(f);
    const char *args[] = {"--config", cfg, NULL};
    ok(crdtd_start(&srv, CRDTD_BIN, dir, args) == 0, "crdtd starts with a config file");
    is_int(req("GET", "/healthz", NULL), 200, "healthz");
    is_int(jint(J, "node_id"), 7, "node-id from the config file");
    for (int i = 0; i < 5; i++) {
        snprintf(body, sizeof(body),
                 "{\"type\":\"timeline\",\"op\":\"add\",\"member\":\"%s\","
                 "\"score\":%d}",
                 i == 0   ? "a"
                 : i == 1 ? "b"
                 : i == 2 ? "c"
                 : i == 3 ? "d"
                          : "e",
                 i);
        post_key("bounded", body);
    }
    is_int(get_key("bounded"), 200, "read the bounded timeline");
    is_int(jint(J, "max_size"), 3, "timeline-max-size from the config file");
    is_int(jint(J, "size"), 3, "the timeline kept 3 entries");
    ok(access(data, F_OK) == 0, "data-dir from the config file was created");
    ok(WIFEXITED(crdtd_stop(&srv, SIGTERM, 10000)), "stopped");
}

static void test_counters(void)
{
    is_int(post_key("c1", "{\"type\":\"pncounter\",\"op\":\"incr\",\"by\":5}"), 200,
           "pncounter incr");
    is_int(jint(J, "applied"), 1, "applied 1");
    ok(jint(J, "seq") > 0, "the response carries the change's seq");
    is_int(post_key("c1", "{\"op\":\"decr\",\"by\":7}"), 200, "pncounter decr (type from the key)");
    is_int(get_key("c1"), 200, "GET the counter");
    is(jstr("type"), "pncounter", "type");
    is_int(jint(J, "value"), -2, "value 5 - 7");
    ok(json_is_object(json_object_get(J, "state")), "JSON state included");
    ok(*jstr("binary") != '\0', "binary state included");
    is(jstr("key"), ("c1"), "key echoed as base64");

    is_int(post_key("g1", "{\"type\":\"gcounter\",\"op\":\"incr\",\"by\":3}"), 200,
           "gcounter incr");
    is_int(post_key("g1", "{\"op\":\"incr\"}"), 200, "gcounter incr by default 1");
    get_key("g1");
    is_int(jint(J, "value"), 4, "gcounter value");
    is_int(post_key("g1", "{\"op\":\"decr\",\"by\":1}"), 400, "gcounter decr is refused");
    is_int(post_key("g1", "{\"op\":\"incr\",\"by\":-1}"), 400, "gcounter negative incr refused");
    is_int(post_key("g1", "{\"op\":\"incr\",\"by\":\"2\"}"), 400, "by must be an integer");
    is_int(post_key("c2", "{\"type\":\"pncounter\",\"op\":\"incr\",\"by\":9223372036854775807}"),
           200, "pncounter to INT64_MAX");
    is_int(post_key("c2", "{\"op\":\"incr\",\"by\":1}"), 400, "overflow is a 400");
}

static void test_register_and_sets(void)
{
    snprintf(body, sizeof(body), "{\"type\":\"lwwreg\",\"op\":\"set\",\"value\":\"%s\"}",
             ("hello"));
    is_int(post_key("r1", body), 200, "lwwreg set");
    snprintf(body, sizeof(body), "{\"op\":\"set\",\"value\":\"%s\"}", ("world"));
    is_int(post_key("r1", body), 200, "lwwreg set again");
    get_key("r1");
    is(jstr("value"), ("world"), "the later set wins");
    ok(json_is_object(json_object_get(J, "timestamp")), "register timestamp shown");

    snprintf(body, sizeof(body), "{\"type\":\"lwwset\",\"op\":\"add\",\"members\":[\"%s\",\"%s\"]}",
             ("x"), ("y"));
    is_int(post_key("s1", body), 200, "lwwset add two");
    is_int(jint(J, "applied"), 2, "two applied");
    snprintf(body, sizeof(body), "{\"op\":\"remove\",\"member\":\"%s\"}", ("x"));
    is_int(post_key("s1", body), 200, "lwwset remove");
    get_key("s1");
    json_t *v = json_object_get(J, "value");
    ok(json_array_size(v) == 1 &&
           !strcmp(json_string_value(json_array_get(v, 0)), ("y")),
       "lwwset holds y only");

    snprintf(body, sizeof(body), "{\"type\":\"orset\",\"op\":\"add\",\"member\":\"%s\"}",
             ("p"));
    is_int(post_key("o1", body), 200, "orset add");
    snprintf(body, sizeof(body), "{\"type\":\"orset\",\"op\":\"add\",\"member\":\"%s\"}",
             ("q"));
    post_key("o1", body);
    snprintf(body, sizeof(body), "{\"op\":\"remove\",\"member\":\"%s\"}", ("p"));
    is_int(post_key("o1", body), 200, "orset remove");
    get_key("o1");
    v = json_object_get(J, "value");
    ok(json_array_size(v) == 1 &&
           !strcmp(json_string_value(json_array_get(v, 0)), ("q")),
       "orset holds q only");
    snprintf(body, sizeof(body), "{\"op\":\"remove\",\"member\":\"%s\"}", ("never"));
    is_int(post_key("o1", body), 200, "orset remove of an absent member");
    is_int(jint(J, "applied"), 0, "reports 0 applied (a no-op)");

    /* type conflicts */
    snprintf(body, sizeof(body), "{\"type\":\"orset\",\"op\":\"add\",\"member\":\"%s\"}",
             ("z"));
    is_int(post_key("c1", body), 409, "orset op on a pncounter key: 409");
    is(jstr("description"), "Conflict", "error shape: description");
    is_int(jint(J, "code"), 409, "error shape: code");
    ok(strstr(jstr("error"), "pncounter") != NULL, "error names the type: %s", jstr("error"));
    is_int(post_key("new", "{\"op\":\"incr\"}"), 400, "creating a key needs a type");
    is_int(post_key("new", "{\"type\":\"nosuch\",\"op\":\"incr\"}"), 400, "unknown type");
    is_int(post_key("new", "{\"type\":\"pncounter\",\"op\":\"explode\"}"), 400, "unknown op");
    is_int(get_key("new"), 404, "a refused write created nothing");
}

static void test_timeline(void)
{
    /* 30 entries: member m<i> with score i */
    for (int i = 0; i < 30; i++) {
        char m[16];
        snprintf(m, sizeof(m), "m%02d", i);
        snprintf(body, sizeof(body),
                 "{\"type\":\"timeline\",\"op\":\"add\",\"member\":\"%s\","
                 "\"score\":%d}",
                 (m), i);
        if (post_key("tl", body) != 200)
            diag("add %d: %d %s", i, R.status, R.body);
    }
    snprintf(body, sizeof(body), "{\"op\":\"remove\",\"member\":\"%s\",\"score\":100}",
             ("m29"));
    is_int(post_key("tl", body), 200, "timeline remove");
    snprintf(path, sizeof(path), "/v1/keys/%s/timeline?limit=5", hc_pct("tl"));
    is_int(req("GET", path, NULL), 200, "newest 5");
    json_t *es = json_object_get(J, "entries");
    is_int((int)json_array_size(es), 5, "5 entries");
    ok(json_real_value(json_object_get(json_array_get(es, 0), "score")) == 28.0,
       "newest first (29 was removed)");
    is_int(jint(J, "next_offset"), 5, "next_offset");
    is_int(jint(J, "size"), 29, "size counts live entries");
    snprintf(path, sizeof(path), "/v1/keys/%s/timeline?offset=25&limit=10", hc_pct("tl"));
    req("GET", path, NULL);
    is_int((int)json_array_size(json_object_get(J, "entries")), 4, "the last page is short");
    ok(json_is_null(json_object_get(J, "next_offset")), "and has no next_offset");

    /* by score, paging with the cursor the response returns */
    int seen = 0;
    double last = 1e9;
    bool ordered = true;
    char cursor[256] = "";
    for (int page = 0; page < 10; page++) {
        if (cursor[0]) {
            /* the cursor has '!' and base64; percent-encode what a URL needs */
            char enc[512];
            size_t w = 0;
            for (const char *p = cursor; *p; p++) {
                if (*p == '+' || *p == '/' || *p == '=' || *p == '!')
                    w += (size_t)snprintf(enc + w, sizeof(enc) - w, "%%%02X", *p);
                else
                    enc[w++] = *p;
            }
            enc[w] = '\0';
            snprintf(path, sizeof(path), "/v1/keys/%s/timeline?max=20&min=3&limit=4&cursor=%s",
                     hc_pct("tl"), enc);
        } else {
            snprintf(path, sizeof(path), "/v1/keys/%s/timeline?max=20&min=3&limit=4",
                     hc_pct("tl"));
        }
        if (req("GET", path, NULL) != 200) {
            diag("page %d: %d %s", page, R.status, R.body);
            break;
        }
        es = json_object_get(J, "entries");
        for (size_t i = 0; i < json_array_size(es); i++) {
            double sc = json_real_value(json_object_get(json_array_get(es, i), "score"));
            ordered &= sc < last;
            last = sc;
            seen++;
        }
        json_t *c = json_object_get(J, "cursor");
        if (!json_is_string(c))
            break;
        snprintf(cursor, sizeof(cursor), "%s", json_string_value(c));
    }
    is_int(seen, 18, "score pages cover 20..3 exactly once");
    ok(ordered, "in newest-first order");
    snprintf(path, sizeof(path), "/v1/keys/%s/timeline?cursor=garbage", hc_pct("tl"));
    is_int(req("GET", path, NULL), 400, "a bad cursor is a 400");
    snprintf(path, sizeof(path), "/v1/keys/%s/timeline?offset=1&max=3", hc_pct("tl"));
    is_int(req("GET", path, NULL), 400, "offset with max is a 400");
    snprintf(path, sizeof(path), "/v1/keys/%s/timeline?limit=-1", hc_pct("tl"));
    is_int(req("GET", path, NULL), 400, "negative limit is a 400");
    snprintf(path, sizeof(path), "/v1/keys/%s/timeline", hc_pct("c1"));
    is_int(req("GET", path, NULL), 409, "timeline read of a counter: 409");
    snprintf(path, sizeof(path), "/v1/keys/%s/timeline", hc_pct("absent"));
    is_int(req("GET", path, NULL), 200, "timeline read of an absent key");
    is_int((int)json_array_size(json_object_get(J, "entries")), 0, "is empty");

    /* coalesced */
    snprintf(body, sizeof(body),
             "{\"type\":\"timeline\",\"op\":\"add\",\"entries\":["
             "{\"member\":\"%s\",\"score\":27.5},{\"member\":\"%s\",\"score\":1000}]}",
             ("other"), ("top"));
    is_int(post_key("tl2", body), 200, "second timeline");
    snprintf(path, sizeof(path), "/v1/timelines?keys=%s,%s&limit=3", hc_pct("tl"),
             hc_pct("tl2"));
    is_int(req("GET", path, NULL), 200, "coalesced select");
    es = json_object_get(J, "entries");
    ok(json_array_size(es) == 3 &&
           !strcmp(json_string_value(json_object_get(json_array_get(es, 0), "key")),
                   ("tl2")) &&
           json_real_value(json_object_get(json_array_get(es, 1), "score")) == 28.0 &&
           json_real_value(json_object_get(json_array_get(es, 2), "score")) == 27.5,
       "coalesced newest first across keys, with each entry's key");
    is_int(req("GET", "/v1/timelines", NULL), 400, "select without keys");
    is_int(req("GET", "/v1/timelines?keys64=%21%21", NULL), 400, "select with a bad keys64 key");
    is_int(req("GET", "/v1/timelines?keys=tl&keys64=dGw", NULL), 400, "keys and keys64: 400");
    is_int(req("GET", "/v1/timelines?keys=tl,", NULL), 400, "an empty key in keys: 400");
    is_int(req("GET", "/v1/timelines?keys=tl,tl2", NULL), 200, "select of two");
    char *want = json_dumps(J, JSON_COMPACT);
    snprintf(path, sizeof(path), "/v1/timelines?keys64=%s,%s", hc_b64s("tl", true),
             hc_b64s("tl2", true));
    is_int(req("GET", path, NULL), 200, "keys64: the same select in base64url");
    char *got = json_dumps(J, JSON_COMPACT);
    is(got, want, "keys64 answers as keys does");
    free(got);
    free(want);
}

static void test_changes_and_merge(void)
{
    is_int(req("GET", "/v1/changes?since=0&limit=1000", NULL), 200, "changes since 0");
    json_t *ch = json_object_get(J, "changes");
    long long next = jint(J, "next");
    ok(json_array_size(ch) >= 8, "every written key appears (%zu)", json_array_size(ch));
    bool ordered = true;
    long long prev = 0;
    for (size_t i = 0; i < json_array_size(ch); i++) {
        long long s = jint(json_array_get(ch, i), "seq");
        ordered &= s > prev;
        prev = s;
    }
    ok(ordered, "in sequence order");
    ok(next == prev, "next is the last seq returned");
    req("GET", "/v1/changes?since=0&limit=2", NULL);
    is_int((int)json_array_size(json_object_get(J, "changes")), 2, "limit");
    char p[64];
    snprintf(p, sizeof(p), "/v1/changes?since=%lld", next);
    req("GET", p, NULL);
    is_int((int)json_array_size(json_object_get(J, "changes")), 0, "nothing after next");
    post_key("c1", "{\"op\":\"incr\"}");
    req("GET", p, NULL);
    ch = json_object_get(J, "changes");
    ok(json_array_size(ch) == 1 &&
           !strcmp(json_string_value(json_object_get(json_array_get(ch, 0), "key")),
                   ("c1")),
       "a new write shows up after next");
    is_int(req("GET", "/v1/changes?since=x", NULL), 400, "bad since");

    /* merge: copy tl's binary state into a new key, and its JSON state into another */
    get_key("tl");
    char *bin = strdup(jstr("binary"));
    char *st = json_dumps(json_object_get(J, "state"), JSON_COMPACT);
    snprintf(body, sizeof(body), "{\"op\":\"merge\",\"binary\":\"%s\"}", bin);
    is_int(post_key("copy1", body), 200, "merge a binary state");
    get_key("copy1");
    is(jstr("binary"), bin, "merged copy has the same state");
    char *big = malloc(strlen(st) + 64);
    sprintf(big, "{\"op\":\"merge\",\"state\":%s}", st);
    is_int(post_key("copy2", big), 200, "merge a JSON state");
    get_key("copy2");
    is(jstr("binary"), bin, "same state via JSON");
    is_int(post_key("copy2", "{\"op\":\"merge\",\"binary\":\"AAAA\"}"), 400, "corrupt binary: 400");
    is_int(post_key("copy3", "{\"op\":\"merge\",\"state\":{\"type\":\"timeline\"}}"), 400,
           "bad JSON state: 400");
    free(big);
    free(st);
    free(bin);
}

static void test_errors(void)
{
    is_int(req("GET", "/nope", NULL), 404, "unknown path: 404");
    is(jstr("description"), "Not Found", "404 body is the JSON error shape");
    is_int(req("GET", "/v1/keys/abc/extra", NULL), 404, "key abc/extra (a '/' in a key): 404");
    is(jstr("error"), "no such key", "it is a key, not an endpoint");
    is_int(req("GET", "/v1/keys64/YWJj/extra", NULL), 404, "no sub-resource but timeline: 404");
    is(jstr("error"), "no such endpoint", "keys64 paths have no '/' in the key");
    is_int(req("DELETE", "/v1/keys/abc", NULL), 404, "DELETE of an absent key: 404");
    is_int(req("PUT", "/v1/keys/abc", "{}"), 405, "PUT on a key: 405");
    is_int(req("POST", "/healthz", "{}"), 405, "POST /healthz: 405");
    is_int(req("PUT", "/metrics", "{}"), 405, "PUT /metrics: 405");
    is_int(req("GET", "/v1/keys64/%21%21%21", NULL), 400, "keys64 key not base64url: 400");
    ok(strstr(jstr("error"), "base64url") != NULL, "says why: %s", jstr("error"));
    is_int(req("GET", "/v1/keys/", NULL), 400, "empty key: 400");

    is_int(post_key("e", "{\"type\":\"timeline\",\"op\":\"add\",\"member\":"), 400,
           "truncated JSON: 400");
    json_t *pos = json_object_get(J, "position");
    ok(json_is_object(pos) && jint(pos, "line") == 1 && jint(pos, "column") > 30,
       "the error gives the position: %s", R.body);
    is_int(post_key("e", "{\n  \"type\": \"timeline\",\n  oops\n}"), 400, "malformed JSON: 400");
    pos = json_object_get(J, "position");
    is_int(jint(pos, "line"), 3, "fault on line 3");
    is_int(post_key("e", "[1,2]"), 400, "an array where an object belongs: 400");
    is_int(post_key("e", "{\"type\":\"timeline\",\"op\":\"add\",\"member\":5,\"score\":1}"), 400,
           "member not a string: 400");
    ok(strstr(jstr("error"), "member") != NULL, "names the field: %s", jstr("error"));
    is_int(
        post_key("e", "{\"type\":\"timeline\",\"op\":\"add\",\"member\":\"YQ==\",\"score\":\"1\"}"),
        400, "score not a number: 400");
    is_int(post_key("e", "{\"type\":\"timeline\",\"op\":\"add\",\"member\":\"YQ==\"}"), 400,
           "score missing: 400");
    is_int(post_key("e", "{\"type\":\"timeline\",\"op\":\"add\",\"member\":{\"base64\":\"Y!==\"},"
                         "\"score\":1}"),
           400, "bad {\"base64\"}: 400");
    ok(strstr(jstr("error"), "member: invalid base64") != NULL, "says why: %s", jstr("error"));
    is_int(post_key("e", "{\"type\":\"timeline\",\"op\":\"add\",\"member\":{\"base64\":\"YQ==\","
                         "\"x\":1},\"score\":1}"),
           400, "{\"base64\"} with another field: 400");
    is_int(post_key("e", "{\"type\":\"timeline\",\"op\":\"add\",\"member\":{\"b64\":\"YQ==\"},"
                         "\"score\":1}"),
           400, "an object that is not {\"base64\"}: 400");
    is_int(
        post_key("e", "{\"type\":\"timeline\",\"op\":\"add\",\"member\":\"YQ==\",\"score\":NaN}"),
        400, "NaN score: 400");
    is_int(
        post_key("e", "{\"type\":\"timeline\",\"op\":\"add\",\"member\":\"YQ==\",\"score\":1e999}"),
        400, "overflowing score: 400");
    is_int(post_key("e", "{\"type\":\"timeline\",\"op\":\"add\",\"member\":\"YQ==\",\"score\":1,"
                         "\"score\":2}"),
           400, "duplicate field: 400");
    is_int(post_key("e", ""), 400, "empty body: 400");
    is_int(get_key("e"), 404, "none of that created the key");
}

/* The key of J ("key") as bytes: a string, or {"base64"}; 1 when it equals want[0..n). */
static bool key_is(const json_t *v, const void *want, size_t n)
{
    uint8_t *b = NULL;
    size_t bn = 0;
    const char *why;
    bool eq = crdt_json_get_bytes(v, 4096, &b, &bn, &why) == 0 && bn == n && !memcmp(b, want, n);
    crdt_free(b);
    return eq;
}

/* Keys and values a person can type (docs/encoding.md, "Bytes in JSON and URLs"). */
static void test_keys_scheme(void)
{
    /* the README's first two commands */
    is_int(req("POST", "/v1/keys/feed:1",
               "{\"type\":\"timeline\",\"op\":\"add\",\"member\":\"post:1\",\"score\":1700000000}"),
           200, "POST /v1/keys/feed:1 with a text member");
    is_int(req("GET", "/v1/keys/feed:1", NULL), 200, "GET /v1/keys/feed:1");
    is(jstr("key"), "feed:1", "the key comes back as text");
    json_t *e0 = json_array_get(json_object_get(J, "value"), 0);
    ok(json_is_string(json_object_get(e0, "member")) &&
           !strcmp(json_string_value(json_object_get(e0, "member")), "post:1"),
       "the member comes back as text");
    is_int(req("GET", "/v1/keys/feed:1/timeline", NULL), 200, "its timeline");
    is(jstr("key"), "feed:1", "the timeline page names the key as text");

    /* percent-encoded keys: '/', '%', '+', space, '?', '#', '&', ';', '=', unicode, FF */
    static const struct {
        const char *key;
        size_t n;
    } keys[] = {
        {"a/b", 3},         {"100%", 4},   {"x+y", 3},         {"with space", 10},
        {"q?#&;=", 6},      {"caf\xc3\xa9", 5}, {"\xff", 1},  {"tail/", 5},
        {"\x01\x7f\xfe", 3}, {"\"quoted\\\"", 9},
    };
    for (size_t i = 0; i < sizeof(keys) / sizeof(keys[0]); i++) {
        char p[512], b[256];
        snprintf(p, sizeof(p), "/v1/keys/%s", hc_pctn(keys[i].key, keys[i].n));
        snprintf(b, sizeof(b), "{\"type\":\"lwwreg\",\"op\":\"set\",\"value\":\"v%zu\"}", i);
        is_int(req("POST", p, b), 200, "POST %s", p);
        is_int(req("GET", p, NULL), 200, "GET %s", p);
        ok(key_is(json_object_get(J, "key"), keys[i].key, keys[i].n), "%s: the key is exact: %s",
           p, R.body);
        snprintf(b, sizeof(b), "v%zu", i);
        is(jstr("value"), b, "%s: its own value", p);
    }
    req("GET", "/v1/keys/%FF", NULL);
    ok(json_is_object(json_object_get(J, "key")) &&
           !strcmp(json_string_value(json_object_get(json_object_get(J, "key"), "base64")), "/w=="),
       "a key that is not UTF-8 comes back as {\"base64\"}: %s", R.body);
    /* lws decodes a bare '+' as a space (documented): "x+y" is written %2B */
    is_int(req("POST", "/v1/keys/x%20z", "{\"type\":\"gcounter\",\"op\":\"incr\"}"), 200,
           "key 'x z'");
    is_int(req("GET", "/v1/keys/x+z", NULL), 200, "a bare '+' in a path reads as a space");
    is(jstr("key"), "x z", "(libwebsockets' form decoding, docs/http-api.md)");

    /* base64url twins: every byte string, 00 and dot segments included */
    static const struct {
        const char *key;
        size_t n;
    } bin[] = {{"\x00\xff", 2}, {"a/../b", 6}, {"a//b", 4}, {"x/timeline", 10}, {".", 1},
               {"\r\n", 2}};
    for (size_t i = 0; i < sizeof(bin) / sizeof(bin[0]); i++) {
        char p[512], b64[64];
        size_t w = crdt_base64_encode_into(b64, bin[i].key, bin[i].n, CRDT_B64_URL | CRDT_B64_NOPAD);
        b64[w] = '\0';
        snprintf(p, sizeof(p), "/v1/keys64/%s", b64);
        is_int(req("POST", p, "{\"type\":\"timeline\",\"op\":\"add\",\"member\":{\"base64\":\"AP8=\"},"
                              "\"score\":2}"),
               200, "POST %s", p);
        is_int(req("GET", p, NULL), 200, "GET %s", p);
        ok(key_is(json_object_get(J, "key"), bin[i].key, bin[i].n), "%s: the key is exact: %s", p,
           R.body);
        snprintf(p, sizeof(p), "/v1/keys64/%s/timeline", b64);
        is_int(req("GET", p, NULL), 200, "GET %s", p);
        json_t *m = json_object_get(json_array_get(json_object_get(J, "entries"), 0), "member");
        ok(json_is_object(m) && !strcmp(json_string_value(json_object_get(m, "base64")), "AP8="),
           "%s: a binary member comes back as {\"base64\"}", p);
    }
    is_int(req("GET", "/v1/keys64/AP8=", NULL), 200, "keys64: padding tolerated");
    is_int(req("GET", "/v1/keys64/AP8%3D", NULL), 200, "keys64: encoded padding too");

    /* a register value, text and binary */
    is_int(post_key("reg:bin", "{\"type\":\"lwwreg\",\"op\":\"set\",\"value\":{\"base64\":\"AP8=\"}}"),
           200, "set a binary value");
    get_key("reg:bin");
    ok(json_is_object(json_object_get(J, "value")) &&
           !strcmp(json_string_value(json_object_get(json_object_get(J, "value"), "base64")),
                   "AP8="),
       "it reads back as {\"base64\"}");
    is_int(post_key("reg:bin", "{\"op\":\"set\",\"value\":{\"base64\":\"aMOpbGxv\"}}"), 200,
           "text given as {\"base64\"}");
    get_key("reg:bin");
    is(jstr("value"), "h\xc3\xa9llo", "reads back as the string");

    /* what libwebsockets refuses before crdtd sees it; the server keeps serving */
    hc_resp_t r;
    int rc = hc_request(srv.port, "GET", "/v1/keys/a%00b", NULL, &r);
    ok(rc != 0 || r.status == 0, "%%00 in a path: lws drops the request (use /v1/keys64/)");
    hc_resp_free(&r);
    is_int(req("GET", "/v1/keys/a%G1", NULL), 403, "%%G1: lws answers 403 itself");
    is_int(req("GET", "/v1/keys/a%4", NULL), 403, "a truncated %%: 403 (lws)");
    is_int(req("GET", "/v1/keys?prefix=%4", NULL), 403, "a truncated %% in a query: 403 (lws)");
    is_int(req("GET", "/healthz", NULL), 200, "still serving");
    is_int(req("GET", "/v1/keys/a;b", NULL), 400, "a bare ';' in a path: 400");
    ok(strstr(jstr("error"), "%3B") != NULL, "says how to write it: %s", jstr("error"));
    is_int(req("GET", "/v1/keys/a&b", NULL), 400, "a bare '&' in a path: 400");
    is_int(req("GET", "/v1/keys/a%3Bb", NULL), 404, "an encoded ';' is part of the key");
    /* a comma in keys= always separates; a key holding one goes in keys64= */
    is_int(req("POST", "/v1/keys/x%2Cy",
               "{\"type\":\"timeline\",\"op\":\"add\",\"member\":\"in x,y\",\"score\":3}"),
           200, "a timeline under the key x,y (%%2C in the path)");
    is_int(req("GET", "/v1/timelines?keys=x%2Cy", NULL), 200, "keys=x%%2Cy");
    ok(json_array_size(json_object_get(J, "entries")) == 0,
       "reads the keys x and y (the comma separates): %s", R.body);
    is_int(req("GET", "/v1/timelines?keys64=eCx5", NULL), 200, "keys64=eCx5 (x,y)");
    json_t *es = json_object_get(J, "entries");
    ok(json_array_size(es) == 1 &&
           !strcmp(json_string_value(json_object_get(json_array_get(es, 0), "key")), "x,y"),
       "reads the key x,y: %s", R.body);

    /* the change feed names the same keys the same way */
    is_int(req("GET", "/v1/changes?since=0&limit=10000&state=0", NULL), 200, "the change feed");
    bool ffkey = false, slash = false, cafe = false;
    json_t *ch = json_object_get(J, "changes");
    for (size_t i = 0; i < json_array_size(ch); i++) {
        json_t *k = json_object_get(json_array_get(ch, i), "key");
        ffkey |= key_is(k, "\x00\xff", 2) && json_is_object(k);
        slash |= key_is(k, "a/../b", 6) && json_is_string(k);
        cafe |= key_is(k, "caf\xc3\xa9", 5) && json_is_string(k);
    }
    ok(ffkey && slash && cafe, "the feed: 00 FF as {\"base64\"}, a/../b and caf\xc3\xa9 as strings");
    is_int(req("GET", "/v1/keys64/A", NULL), 400, "keys64: a lone base64 character: 400");
    is_int(req("GET", "/v1/keys64/", NULL), 400, "keys64: empty: 400");
}

/* GET /v1/keys: key order, prefix, after, limit, the next cursor */
static void test_list(void)
{
    static const char *const want[] = {"ls:", "ls:a", "ls:b", "ls:b/1", "ls:c", "ls:d"};
    const size_t nw = sizeof(want) / sizeof(want[0]);
    for (size_t i = nw; i-- > 0;)
        post_key(want[i], "{\"type\":\"gcounter\",\"op\":\"incr\"}");
    is_int(req("POST", "/v1/keys64/bHM64A", "{\"type\":\"gcounter\",\"op\":\"incr\"}"), 200,
           "a binary key ls: E0");
    is_int(req("POST", "/v1/keys/lt", "{\"type\":\"gcounter\",\"op\":\"incr\"}"), 200,
           "a key outside the prefix");

    /* every page of 2 under "ls:", following next */
    char p[512];
    size_t got = 0;
    bool in_order = true;
    int pages = 0;
    const char *next = NULL;
    char nextbuf[256] = "";
    do {
        if (next)
            snprintf(p, sizeof(p), "/v1/keys?prefix=ls:&limit=2&after64=%s", nextbuf);
        else
            snprintf(p, sizeof(p), "/v1/keys?prefix=ls:&limit=2");
        if (req("GET", p, NULL) != 200)
            break;
        pages++;
        json_t *ks = json_object_get(J, "keys");
        for (size_t i = 0; i < json_array_size(ks); i++, got++) {
            json_t *k = json_array_get(ks, i);
            if (got < nw)
                in_order &= json_is_string(k) && !strcmp(json_string_value(k), want[got]);
            else
                in_order &= key_is(k, "ls:\xe0", 4);
        }
        json_t *nx = json_object_get(J, "next");
        next = json_is_string(nx) ? json_string_value(nx) : NULL;
        if (next)
            snprintf(nextbuf, sizeof(nextbuf), "%s", next);
        if (json_array_size(ks) < 2 && next)
            in_order = false; /* a short page with a next */
    } while (next && pages < 10);
    is_int((int)got, (int)nw + 1, "every key under the prefix, once");
    ok(in_order, "in bytewise key order (a prefix first; E0 after every ASCII key)");
    is_int(pages, 4, "pages of 2: 4 of them, the last one without next");

    is_int(req("GET", "/v1/keys?prefix=ls:&after=ls:b&limit=2", NULL), 200, "after (text)");
    json_t *ks = json_object_get(J, "keys");
    ok(json_array_size(ks) == 2 && !strcmp(json_string_value(json_array_get(ks, 0)), "ls:b/1") &&
           !strcmp(json_string_value(json_array_get(ks, 1)), "ls:c"),
       "after is exclusive: %s", R.body);
    ok(json_is_string(json_object_get(J, "next")), "more to come: next");
    is_int(req("GET", "/v1/keys?prefix64=bHM6Yi8", NULL), 200, "prefix64");
    ks = json_object_get(J, "keys");
    ok(json_array_size(ks) == 1 && !strcmp(json_string_value(json_array_get(ks, 0)), "ls:b/1"),
       "prefix64 ls:b/ finds ls:b/1: %s", R.body);
    ok(json_is_null(json_object_get(J, "next")), "the last page: next null");
    is_int(req("GET", "/v1/keys?prefix=nothing-here", NULL), 200, "an empty prefix page");
    ok(json_array_size(json_object_get(J, "keys")) == 0 && json_is_null(json_object_get(J, "next")),
       "no keys, next null");
    for (int i = 0; i < 101; i++) {
        char k[32];
        snprintf(k, sizeof(k), "many:%03d", i);
        post_key(k, "{\"type\":\"gcounter\",\"op\":\"incr\"}");
    }
    is_int(req("GET", "/v1/keys?prefix=many:", NULL), 200, "101 keys under a prefix");
    ks = json_object_get(J, "keys");
    ok(json_array_size(ks) == 100 && json_is_string(json_object_get(J, "next")) &&
           !strcmp(json_string_value(json_array_get(ks, 99)), "many:099"),
       "the default limit is 100, with next (%zu keys)", json_array_size(ks));
    snprintf(p, sizeof(p), "/v1/keys?prefix=many:&after64=%s",
             json_string_value(json_object_get(J, "next")));
    is_int(req("GET", p, NULL), 200, "the next page");
    ks = json_object_get(J, "keys");
    ok(json_array_size(ks) == 1 && !strcmp(json_string_value(json_array_get(ks, 0)), "many:100") &&
           json_is_null(json_object_get(J, "next")),
       "holds the last key: %s", R.body);
    is_int(req("GET", "/v1/keys", NULL), 200, "every key, no prefix");
    ks = json_object_get(J, "keys");
    bool sorted = json_array_size(ks) == 100;
    for (size_t i = 1; sorted && i < json_array_size(ks); i++) {
        uint8_t *a = NULL, *b = NULL;
        size_t an = 0, bn = 0;
        const char *why;
        crdt_json_get_bytes(json_array_get(ks, i - 1), 4096, &a, &an, &why);
        crdt_json_get_bytes(json_array_get(ks, i), 4096, &b, &bn, &why);
        int c = a && b ? memcmp(a, b, an < bn ? an : bn) : 1;
        sorted = a && b && (c < 0 || (c == 0 && an < bn));
        crdt_free(a);
        crdt_free(b);
    }
    ok(sorted, "a full page, strictly ascending bytewise");
    is_int(req("GET", "/v1/keys?limit=0", NULL), 400, "limit 0: 400");
    is_int(req("GET", "/v1/keys?limit=1001", NULL), 400, "limit over 1000: 400");
    is_int(req("GET", "/v1/keys?prefix=a&prefix64=YQ", NULL), 400, "prefix and prefix64: 400");
    is_int(req("GET", "/v1/keys?after64=%21", NULL), 400, "after64 not base64url: 400");
    is_int(req("POST", "/v1/keys", "{}"), 405, "POST /v1/keys: 405");

    /* deleted keys leave no gap in a page; 0xFF bytes; after beyond the end; limit 1 */
    for (int i = 299; i >= 0; i--) {
        char k[32];
        snprintf(k, sizeof(k), "dl:%03d", i);
        post_key(k, "{\"type\":\"pncounter\",\"op\":\"incr\"}");
    }
    int dels = 0;
    for (int i = 0; i < 300; i++) {
        if (i % 3 == 0)
            continue; /* keep dl:000, dl:003, ... */
        char u[64];
        snprintf(u, sizeof(u), "/v1/keys/dl:%03d", i);
        dels += req("DELETE", u, NULL) == 200;
    }
    is_int(dels, 200, "200 of the 300 keys dl: deleted");
    is_int(req("GET", "/v1/keys?prefix=dl:&limit=5", NULL), 200, "a page among deleted keys");
    ks = json_object_get(J, "keys");
    ok(json_array_size(ks) == 5 && !strcmp(json_string_value(json_array_get(ks, 0)), "dl:000") &&
           !strcmp(json_string_value(json_array_get(ks, 4)), "dl:012") &&
           json_is_string(json_object_get(J, "next")),
       "five live keys, the deleted ones skipped: %s", R.body);
    int walked = 0, wpages = 0;
    bool wok = true;
    nextbuf[0] = 0;
    for (; wpages < 200; wpages++) {
        if (nextbuf[0])
            snprintf(p, sizeof(p), "/v1/keys?prefix=dl:&limit=1&after64=%s", nextbuf);
        else
            snprintf(p, sizeof(p), "/v1/keys?prefix=dl:&limit=1");
        if (req("GET", p, NULL) != 200) {
            wok = false;
            break;
        }
        ks = json_object_get(J, "keys");
        char want1[32];
        snprintf(want1, sizeof(want1), "dl:%03d", walked * 3);
        wok &= json_array_size(ks) == 1 && !strcmp(json_string_value(json_array_get(ks, 0)), want1);
        walked++;
        json_t *nx = json_object_get(J, "next");
        if (!json_is_string(nx))
            break;
        snprintf(nextbuf, sizeof(nextbuf), "%s", json_string_value(nx));
    }
    ok(wok && walked == 100, "pages of 1 walk the 100 live keys dl: in order (%d)", walked);
    is_int(req("GET", "/v1/keys?prefix=dl:&after=dl:999", NULL), 200, "after beyond the end");
    ok(json_array_size(json_object_get(J, "keys")) == 0 && json_is_null(json_object_get(J, "next")),
       "an empty last page: %s", R.body);
    is_int(req("POST", "/v1/keys64/__4", "{\"type\":\"gcounter\",\"op\":\"incr\"}"), 200,
           "the key FF FE");
    is_int(req("POST", "/v1/keys64/__7_", "{\"type\":\"gcounter\",\"op\":\"incr\"}"), 200,
           "the key FF FE FF");
    is_int(req("GET", "/v1/keys?prefix64=__4", NULL), 200, "prefix FF FE");
    ks = json_object_get(J, "keys");
    ok(json_array_size(ks) == 2 && key_is(json_array_get(ks, 0), "\xff\xfe", 2) &&
           key_is(json_array_get(ks, 1), "\xff\xfe\xff", 3),
       "FF FE, then FF FE FF: %s", R.body);
    is_int(req("GET", "/v1/keys?prefix64=__4&after64=__4&limit=1", NULL), 200, "after FF FE");
    ks = json_object_get(J, "keys");
    ok(json_array_size(ks) == 1 && key_is(json_array_get(ks, 0), "\xff\xfe\xff", 3) &&
           json_is_null(json_object_get(J, "next")),
       "only FF FE FF, the last page: %s", R.body);
}

static void test_limits(const char *dir)
{
    const char *args[] = {"--no-persist", "--max-body",   "300", "--max-key",
                          "16",           "--max-member", "8",   NULL};
    ok(crdtd_start(&srv, CRDTD_BIN, dir, args) == 0, "crdtd with small limits");
    is_int(post_key("0123456789abcdefX", "{\"type\":\"pncounter\",\"op\":\"incr\"}"), 400,
           "17-byte key: 400");
    ok(strstr(jstr("error"), "16") != NULL, "names the limit: %s", jstr("error"));
    is_int(post_key("0123456789abcdef", "{\"type\":\"pncounter\",\"op\":\"incr\"}"), 200,
           "16-byte key: fine");
    snprintf(body, sizeof(body), "{\"type\":\"orset\",\"op\":\"add\",\"member\":\"%s\"}",
             ("123456789"));
    is_int(post_key("m", body), 400, "9-byte member: 400");
    snprintf(body, sizeof(body), "{\"type\":\"orset\",\"op\":\"add\",\"member\":\"%s\"}",
             ("12345678"));
    is_int(post_key("m", body), 200, "8-byte member: fine");
    char big[400];
    memset(big, ' ', sizeof(big) - 1);
    big[sizeof(big) - 1] = '\0';
    const char *inc = "{\"type\":\"pncounter\",\"op\":\"incr\"}";
    memcpy(big, inc, strlen(inc));
    is_int(post_key("m2", big), 413, "399-byte body over a 300 limit: 413");
    ok(strstr(jstr("error"), "300") != NULL, "413 names the limit: %s", jstr("error"));
    is_int(req("GET", "/healthz", NULL), 200, "still serving");
    ok(WIFEXITED(crdtd_stop(&srv, SIGTERM, 10000)), "stopped");
}

static void test_keepalive_and_metrics(void)
{
    int fd = hc_connect(srv.port);
    ok(fd >= 0, "connect");
    int good = 0;
    for (int i = 0; i < 50; i++) {
        hc_resp_t r;
        const char *b = "{\"type\":\"gcounter\",\"op\":\"incr\"}";
        snprintf(path, sizeof(path), "/v1/keys/%s", hc_pct("ka"));
        if (hc_send(fd, "POST", path, "", b, strlen(b), &r) == 0 && r.status == 200)
            good++;
        hc_resp_free(&r);
    }
    is_int(good, 50, "50 writes on one keep-alive connection");
    hc_resp_t r;
    ok(hc_send(fd, "GET", "/healthz", "", NULL, 0, &r) == 0 && r.status == 200,
       "and a read after them");
    hc_resp_free(&r);
    close(fd);
    get_key("ka");
    is_int(jint(J, "value"), 50, "all 50 counted");

    is_int(req("GET", "/metrics", NULL), 200, "GET /metrics");
    char ct[128];
    ok(hc_header(&R, "content-type", ct, sizeof(ct)) && strstr(ct, "text/plain"),
       "Prometheus text content type");
    ok(strstr(R.body, "crdtd_http_requests_total{endpoint=\"key_write\",status=\"200\"}") != NULL,
       "requests by endpoint and status");
    ok(strstr(R.body, "crdtd_http_errors_total{endpoint=\"key_write\"}") != NULL, "errors");
    ok(strstr(R.body, "crdtd_keys{type=\"timeline\"}") != NULL, "keys by type");
    ok(strstr(R.body, "crdtd_log_bytes ") != NULL, "log bytes");
    ok(strstr(R.body, "crdtd_keys_loading 0\n") != NULL, "no recovered key left to join");
    ok(strstr(R.body, "crdtd_fsync_seconds_count ") != NULL, "fsync count");
    ok(strstr(R.body, "crdtd_apply_seconds_bucket{le=\"+Inf\"}") != NULL, "apply histogram");
    ok(strstr(R.body, "crdtd_write_ack_seconds_count ") != NULL, "ack latency");
}

int main(void)
{
    signal(SIGPIPE, SIG_IGN);
    char *dir = test_tmpdir();
    if (!dir)
        skip_all("no temporary directory");
    test_flags(dir);
    test_config_file(dir);

    char data[600];
    snprintf(data, sizeof(data), "%s/data", dir);
    const char *args[] = {"--data-dir", data, NULL};
    if (crdtd_start(&srv, CRDTD_BIN, dir, args) != 0) {
        ok(0, "crdtd starts");
        rm_rf(dir);
        return done_testing();
    }
    ok(1, "crdtd starts on port %d", srv.port);
    is_int(req("GET", "/healthz", NULL), 200, "GET /healthz");
    is(jstr("status"), "ok", "healthz says ok");

    test_counters();
    test_register_and_sets();
    test_timeline();
    test_changes_and_merge();
    test_errors();
    test_keys_scheme();
    test_list();
    test_keepalive_and_metrics();

    /* SIGTERM: exit 0, and everything is there after a restart */
    get_key("tl");
    char *before = strdup(jstr("binary"));
    int st = crdtd_stop(&srv, SIGTERM, 10000);
    ok(WIFEXITED(st) && WEXITSTATUS(st) == 0, "SIGTERM: exit status 0");
    ok(crdtd_start(&srv, CRDTD_BIN, dir, args) == 0, "restart on the same data dir");
    get_key("tl");
    is(jstr("binary"), before, "the timeline survived the restart");
    get_key("ka");
    is_int(jint(J, "value"), 50, "the counter survived the restart");
    free(before);
    st = crdtd_stop(&srv, SIGINT, 10000);
    ok(WIFEXITED(st) && WEXITSTATUS(st) == 0, "SIGINT: exit status 0");

    test_limits(dir);

    hc_resp_free(&R);
    json_decref(J);
    rm_rf(dir);
    free(dir);
    return done_testing();
}
