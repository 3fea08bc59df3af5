/* test_http.c - crdtd's REST API, flags and config file through real HTTP requests */
#include "tap.h"

#include <jansson.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

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
    snprintf(path, sizeof(path), "/v1/keys/%s", hc_b64s(key, true));
    return req("POST", path, json);
}

static int get_key(const char *key)
{
    snprintf(path, sizeof(path), "/v1/keys/%s", hc_b64s(key, true));
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
                 hc_b64s(i == 0   ? "a"
                         : i == 1 ? "b"
                         : i == 2 ? "c"
                         : i == 3 ? "d"
                                  : "e",
                         false),
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
    is(jstr("key"), hc_b64s("c1", false), "key echoed as base64");

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
             hc_b64s("hello", false));
    is_int(post_key("r1", body), 200, "lwwreg set");
    snprintf(body, sizeof(body), "{\"op\":\"set\",\"value\":\"%s\"}", hc_b64s("world", false));
    is_int(post_key("r1", body), 200, "lwwreg set again");
    get_key("r1");
    is(jstr("value"), hc_b64s("world", false), "the later set wins");
    ok(json_is_object(json_object_get(J, "timestamp")), "register timestamp shown");

    snprintf(body, sizeof(body), "{\"type\":\"lwwset\",\"op\":\"add\",\"members\":[\"%s\",\"%s\"]}",
             hc_b64s("x", false), hc_b64s("y", false));
    is_int(post_key("s1", body), 200, "lwwset add two");
    is_int(jint(J, "applied"), 2, "two applied");
    snprintf(body, sizeof(body), "{\"op\":\"remove\",\"member\":\"%s\"}", hc_b64s("x", false));
    is_int(post_key("s1", body), 200, "lwwset remove");
    get_key("s1");
    json_t *v = json_object_get(J, "value");
    ok(json_array_size(v) == 1 &&
           !strcmp(json_string_value(json_array_get(v, 0)), hc_b64s("y", false)),
       "lwwset holds y only");

    snprintf(body, sizeof(body), "{\"type\":\"orset\",\"op\":\"add\",\"member\":\"%s\"}",
             hc_b64s("p", false));
    is_int(post_key("o1", body), 200, "orset add");
    snprintf(body, sizeof(body), "{\"type\":\"orset\",\"op\":\"add\",\"member\":\"%s\"}",
             hc_b64s("q", false));
    post_key("o1", body);
    snprintf(body, sizeof(body), "{\"op\":\"remove\",\"member\":\"%s\"}", hc_b64s("p", false));
    is_int(post_key("o1", body), 200, "orset remove");
    get_key("o1");
    v = json_object_get(J, "value");
    ok(json_array_size(v) == 1 &&
           !strcmp(json_string_value(json_array_get(v, 0)), hc_b64s("q", false)),
       "orset holds q only");
    snprintf(body, sizeof(body), "{\"op\":\"remove\",\"member\":\"%s\"}", hc_b64s("never", false));
    is_int(post_key("o1", body), 200, "orset remove of an absent member");
    is_int(jint(J, "applied"), 0, "reports 0 applied (a no-op)");

    /* type conflicts */
    snprintf(body, sizeof(body), "{\"type\":\"orset\",\"op\":\"add\",\"member\":\"%s\"}",
             hc_b64s("z", false));
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
                 hc_b64s(m, false), i);
        if (post_key("tl", body) != 200)
            diag("add %d: %d %s", i, R.status, R.body);
    }
    snprintf(body, sizeof(body), "{\"op\":\"remove\",\"member\":\"%s\",\"score\":100}",
             hc_b64s("m29", false));
    is_int(post_key("tl", body), 200, "timeline remove");
    snprintf(path, sizeof(path), "/v1/keys/%s/timeline?limit=5", hc_b64s("tl", true));
    is_int(req("GET", path, NULL), 200, "newest 5");
    json_t *es = json_object_get(J, "entries");
    is_int((int)json_array_size(es), 5, "5 entries");
    ok(json_real_value(json_object_get(json_array_get(es, 0), "score")) == 28.0,
       "newest first (29 was removed)");
    is_int(jint(J, "next_offset"), 5, "next_offset");
    is_int(jint(J, "size"), 29, "size counts live entries");
    snprintf(path, sizeof(path), "/v1/keys/%s/timeline?offset=25&limit=10", hc_b64s("tl", true));
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
                     hc_b64s("tl", true), enc);
        } else {
            snprintf(path, sizeof(path), "/v1/keys/%s/timeline?max=20&min=3&limit=4",
                     hc_b64s("tl", true));
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
    snprintf(path, sizeof(path), "/v1/keys/%s/timeline?cursor=garbage", hc_b64s("tl", true));
    is_int(req("GET", path, NULL), 400, "a bad cursor is a 400");
    snprintf(path, sizeof(path), "/v1/keys/%s/timeline?offset=1&max=3", hc_b64s("tl", true));
    is_int(req("GET", path, NULL), 400, "offset with max is a 400");
    snprintf(path, sizeof(path), "/v1/keys/%s/timeline?limit=-1", hc_b64s("tl", true));
    is_int(req("GET", path, NULL), 400, "negative limit is a 400");
    snprintf(path, sizeof(path), "/v1/keys/%s/timeline", hc_b64s("c1", true));
    is_int(req("GET", path, NULL), 409, "timeline read of a counter: 409");
    snprintf(path, sizeof(path), "/v1/keys/%s/timeline", hc_b64s("absent", true));
    is_int(req("GET", path, NULL), 200, "timeline read of an absent key");
    is_int((int)json_array_size(json_object_get(J, "entries")), 0, "is empty");

    /* coalesced */
    snprintf(body, sizeof(body),
             "{\"type\":\"timeline\",\"op\":\"add\",\"entries\":["
             "{\"member\":\"%s\",\"score\":27.5},{\"member\":\"%s\",\"score\":1000}]}",
             hc_b64s("other", false), hc_b64s("top", false));
    is_int(post_key("tl2", body), 200, "second timeline");
    snprintf(path, sizeof(path), "/v1/timelines?keys=%s,%s&limit=3", hc_b64s("tl", true),
             hc_b64s("tl2", true));
    is_int(req("GET", path, NULL), 200, "coalesced select");
    es = json_object_get(J, "entries");
    ok(json_array_size(es) == 3 &&
           !strcmp(json_string_value(json_object_get(json_array_get(es, 0), "key")),
                   hc_b64s("tl2", false)) &&
           json_real_value(json_object_get(json_array_get(es, 1), "score")) == 28.0 &&
           json_real_value(json_object_get(json_array_get(es, 2), "score")) == 27.5,
       "coalesced newest first across keys, with each entry's key");
    is_int(req("GET", "/v1/timelines", NULL), 400, "select without keys");
    is_int(req("GET", "/v1/timelines?keys=%21%21", NULL), 400, "select with a bad key");
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
                   hc_b64s("c1", false)),
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
    is_int(req("GET", "/v1/keys/abc/extra", NULL), 404, "unknown sub-resource: 404");
    is_int(req("DELETE", "/v1/keys/abc", NULL), 404, "DELETE of an absent key: 404");
    is_int(req("PUT", "/v1/keys/abc", "{}"), 405, "PUT on a key: 405");
    is_int(req("POST", "/healthz", "{}"), 405, "POST /healthz: 405");
    is_int(req("PUT", "/metrics", "{}"), 405, "PUT /metrics: 405");
    is_int(req("GET", "/v1/keys/%21%21%21", NULL), 400, "key not base64url: 400");
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
    is_int(post_key("e", "{\"type\":\"timeline\",\"op\":\"add\",\"member\":\"Y!==\",\"score\":1}"),
           400, "bad base64: 400");
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
             hc_b64s("123456789", false));
    is_int(post_key("m", body), 400, "9-byte member: 400");
    snprintf(body, sizeof(body), "{\"type\":\"orset\",\"op\":\"add\",\"member\":\"%s\"}",
             hc_b64s("12345678", false));
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
        snprintf(path, sizeof(path), "/v1/keys/%s", hc_b64s("ka", true));
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
