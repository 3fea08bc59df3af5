/* test_http_web.c - what browsers need of crdtd's HTTP side: CORS with the --cors-origin
 * allow-list (preflights, no CORS headers for other origins, foreign writes and WebSocket
 * upgrades refused), HEAD on GET endpoints, and the static files at / (content types, ETag and
 * 304, Cache-Control, no path traversal, no token needed, the demo found beside the binary) */
#include "tap.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "cors.h"
#include "http_client.h"
#include "static.h"

#ifndef CRDTD_BIN
#error "CRDTD_BIN (the crdtd binary) must be defined"
#endif

static void write_file(const char *dir, const char *name, const char *text)
{
    char p[1024];
    snprintf(p, sizeof(p), "%s/%s", dir, name);
    FILE *f = fopen(p, "w");
    if (f) {
        fputs(text, f);
        fclose(f);
    }
}

/* One request on its own connection with extra headers; the response in *r (freed by caller). */
static int send1(int port, const char *method, const char *path, const char *hdrs, const char *body,
                 hc_resp_t *r)
{
    int fd = hc_connect(port);
    memset(r, 0, sizeof(*r));
    if (fd < 0)
        return 0;
    int rc = hc_send(fd, method, path, hdrs, body, body ? strlen(body) : 0, r);
    close(fd);
    return rc ? 0 : r->status;
}

static bool has_header(const hc_resp_t *r, const char *name)
{
    char b[512];
    return hc_header(r, name, b, sizeof(b)) != NULL;
}

static bool header_is(const hc_resp_t *r, const char *name, const char *want)
{
    char b[512];
    return hc_header(r, name, b, sizeof(b)) && !strcmp(b, want);
}

/* ---- the pure parts: paths, types, origins -------------------------------------------------- */

static void test_units(void)
{
    char out[256];
    struct {
        const char *url, *want; /* want NULL: refused */
    } paths[] = {
        {"/", "index.html"},     {"/app.js", "app.js"},  {"/a/b.css", "a/b.css"},
        {"/a/", "a/index.html"}, {"/..", NULL},          {"/../etc/passwd", NULL},
        {"/a/../../x", NULL},    {"/a/./b", NULL},       {"/.git/config", NULL},
        {"/a//b", NULL},         {"//etc/passwd", NULL}, {"/a\\..\\b", NULL},
        {"/a\x01", NULL},        {"relative", NULL},     {"", NULL},
    };
    for (size_t i = 0; i < sizeof(paths) / sizeof(paths[0]); i++) {
        int rc = gw_static_path(paths[i].url, out, sizeof(out));
        if (paths[i].want)
            ok(rc == 0 && !strcmp(out, paths[i].want), "path %s -> %s (got %s)", paths[i].url,
               paths[i].want, rc ? "refused" : out);
        else
            ok(rc == -1, "path %s refused", paths[i].url);
    }
    char small[8];
    ok(gw_static_path("/abcdefgh", small, sizeof(small)) == -1,
       "a path longer than the room: refused");
    ok(gw_static_path("/", small, sizeof(small)) == -1, "index.html longer than the room: refused");

    is(gw_static_type("index.html"), "text/html; charset=utf-8", "type of .html");
    is(gw_static_type("a/app.js"), "text/javascript; charset=utf-8", "type of .js");
    is(gw_static_type("crdt.wasm"), "application/wasm", "type of .wasm (instantiateStreaming)");
    is(gw_static_type("STYLE.CSS"), "text/css; charset=utf-8", "extensions are case-insensitive");
    is(gw_static_type("a.d/README"), "application/octet-stream", "no extension: octet-stream");
    is(gw_static_type("x.exe"), "application/octet-stream", "unknown extension: octet-stream");

    gw_config_t c;
    gw_config_defaults(&c);
    char why[160];
    ok(gw_cors_add(&c, "http://A.example, https://b.example:8443", why, sizeof(why)) == 0 &&
           c.ncors == 2,
       "a comma list of two origins");
    is(c.cors_origins[0], "http://a.example", "origins are kept lower case");
    const char *bad[] = {"ftp://x",
                         "http://",
                         "http://a.example/",
                         "http://a/path",
                         "http://a:0",
                         "http://a:65536",
                         "http://a:",
                         "null",
                         "*",
                         "http://a b",
                         "http://a,,http://b",
                         "http://[::1",
                         "https://[]:1",
                         ""};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        int before = c.ncors;
        why[0] = '\0';
        ok(gw_cors_add(&c, bad[i], why, sizeof(why)) == -1 && c.ncors == before && why[0],
           "origin list '%s' refused (%s), nothing added", bad[i], why);
    }
    ok(gw_cors_add(&c, "http://[::1]:8080", why, sizeof(why)) == 0, "an [IPv6]:port origin");
    ok(gw_cors_add(&c, "http://ok.example,ftp://bad", why, sizeof(why)) == -1 && c.ncors == 3,
       "a list with one bad origin adds none of it");
    is_int(gw_cors_classify(&c, NULL, "127.0.0.1:7379"), GW_ORIGIN_NONE, "no Origin");
    is_int(gw_cors_classify(&c, "http://a.example", "127.0.0.1:7379"), GW_ORIGIN_LISTED, "listed");
    is_int(gw_cors_classify(&c, "HTTPS://B.example:8443", "x"), GW_ORIGIN_LISTED,
           "listed, whatever the case");
    is_int(gw_cors_classify(&c, "https://b.example", "x"), GW_ORIGIN_FOREIGN,
           "another port of a listed host is foreign");
    is_int(gw_cors_classify(&c, "http://127.0.0.1:7379", "127.0.0.1:7379"), GW_ORIGIN_SAME,
           "the server's own origin (Host)");
    is_int(gw_cors_classify(&c, "http://127.0.0.1:7380", "127.0.0.1:7379"), GW_ORIGIN_FOREIGN,
           "another port of the same host is foreign");
    is_int(gw_cors_classify(&c, "null", "127.0.0.1:7379"), GW_ORIGIN_FOREIGN,
           "\"null\" is foreign");
    is_int(gw_cors_classify(&c, "http://evil.example", NULL), GW_ORIGIN_FOREIGN,
           "no Host: foreign");

    /* --allowed-host, and which Hosts an open node answers */
    ok(gw_hosts_add(&c, "Feed.Example., crdtd-1.internal,crdt_node", why, sizeof(why)) == 0 &&
           c.nhosts == 3 && !strcmp(c.allowed_hosts[0], "feed.example"),
       "host list parsed, lower case, trailing dot dropped (%s)", c.allowed_hosts[0]);
    const char *bad_hosts[] = {
        "",    "a,,b",  "http://a.example", "a.example:80", "a..b", ".a", "a/b",
        "a b", "[::1]", "*.example"};
    for (size_t i = 0; i < sizeof(bad_hosts) / sizeof(bad_hosts[0]); i++) {
        int before = c.nhosts;
        why[0] = '\0';
        ok(gw_hosts_add(&c, bad_hosts[i], why, sizeof(why)) == -1 && c.nhosts == before && why[0],
           "host list '%s' refused (%s), nothing added", bad_hosts[i], why);
    }
    struct {
        const char *host;
        bool want;
    } hosts[] = {
        {NULL, true},
        {"", true},
        {"127.0.0.1", true},
        {"127.0.0.1:7379", true},
        {"10.1.2.3:80", true},
        {"[::1]:7379", true},
        {"[::1]", true},
        {"[::ffff:127.0.0.1]:1", true},
        {"localhost:7379", true},
        {"LOCALHOST", true},
        {"localhost.:7379", true},
        {"app.localhost:5173", true},
        {"feed.example:7379", true},
        {"FEED.EXAMPLE.", true},
        {"crdtd-1.internal", true},
        {"crdt_node:7379", true},
        {"::1", true},
        {"fe80::1:7379", true},
        {"::ffff:127.0.0.1", true},
        {"::ffff:127.0.0.1:80", false},
        {"other_node", false},
        {"evil::x", false},
        {":", false},
        {"evil.example:7379", false},
        {"sub.feed.example", false},
        {"feed.example.evil", false},
        {"localhost.evil.example", false},
        {"127.0.0.1.evil.example", false},
        {"evil-localhost", false},
        {"1.2.3.4.5", false},
        {"256.1.1.1", false},
        {"127.0.0.1:", false},
        {"127.0.0.1:7x", false},
        {"127.0.0.1:7379:1", false},
        {"localhost:123456", false},
        {"[::1", false},
        {"[]:1", false},
        {"[::1]x", false},
        {"[::g]:1", false},
        {"feed.example/", false},
        {"feed example", false},
    };
    for (size_t i = 0; i < sizeof(hosts) / sizeof(hosts[0]); i++)
        ok(gw_host_allowed(&c, hosts[i].host) == hosts[i].want, "Host %s%s%s: %s",
           hosts[i].host ? "'" : "", hosts[i].host ? hosts[i].host : "(none)",
           hosts[i].host ? "'" : "", hosts[i].want ? "answered" : "refused");
}

/* ---- a crdtd with a directory of its own ---------------------------------------------------- */

static const char INDEX[] = "<!doctype html><title>t</title><p>index of the test</p>\n";
static const char SECRET[] = "SECRET-OUTSIDE-THE-DIRECTORY";

/* Raw request line; the answer must refuse it (a 4xx, or no answer at all: lws drops a request
 * with a NUL), or be the directory's own index (lws ends the path at a %00), and must never carry
 * what lies outside the directory or in a dotfile. */
static void traversal(int port, const char *target)
{
    char req[512];
    snprintf(req, sizeof(req), "GET %s HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n",
             target);
    size_t n = 0;
    char *got = hc_raw(port, req, strlen(req), false, 2000, &n);
    ok(got && !strstr(got, SECRET) && !strstr(got, "root:") &&
           (!got[0] || !strncmp(got, "HTTP/1.1 404", 12) || !strncmp(got, "HTTP/1.1 400", 12) ||
            !strncmp(got, "HTTP/1.1 403", 12) ||
            (!strncmp(got, "HTTP/1.1 200", 12) && strstr(got, INDEX))),
       "GET %s: refused, nothing outside the directory (%.12s)", target, got ? got : "(none)");
    free(got);
}

static void test_static(const char *tmp)
{
    char web[512], sub[600], arg[700];
    snprintf(web, sizeof(web), "%s/web", tmp);
    snprintf(sub, sizeof(sub), "%s/sub", web);
    mkdir(web, 0755);
    mkdir(sub, 0755);
    write_file(web, "index.html", INDEX);
    write_file(web, "app.js", "export const x = 1;\n");
    write_file(web, "crdt.wasm", "\0asm");
    write_file(web, ".hidden", SECRET);
    write_file(web, "blob.bin", "bytes");
    write_file(sub, "index.html", "sub index\n");
    write_file(sub, "x.css", "p{}\n");
    write_file(tmp, "secret.txt", SECRET);

    crdtd_proc_t p;
    snprintf(arg, sizeof(arg), "%s", web);
    const char *args[] = {"--no-persist", "--static-dir", arg, NULL};
    if (crdtd_start(&p, CRDTD_BIN, tmp, args)) {
        fail("crdtd with --static-dir starts");
        return;
    }
    hc_resp_t r;
    is_int(send1(p.port, "GET", "/", "", NULL, &r), 200, "GET / -> 200");
    is(r.body, INDEX, "GET /: index.html's bytes");
    ok(header_is(&r, "content-type", "text/html; charset=utf-8"), "GET /: text/html");
    ok(header_is(&r, "cache-control", "no-cache"), "GET /: Cache-Control: no-cache (revalidate)");
    ok(header_is(&r, "x-content-type-options", "nosniff"), "GET /: nosniff");
    char etag[128] = "";
    ok(hc_header(&r, "etag", etag, sizeof(etag)) && etag[0] == '"', "GET /: a strong ETag (%s)",
       etag);
    ok(!has_header(&r, "vary"), "no --cors-origin: no Vary: Origin");
    hc_resp_free(&r);

    /* the same file by its name has the same ETag; a conditional GET is a 304, kept alive */
    is_int(send1(p.port, "GET", "/index.html", "", NULL, &r), 200, "GET /index.html -> 200");
    ok(header_is(&r, "etag", etag), "the same file: the same ETag");
    hc_resp_free(&r);
    int fd = hc_connect(p.port);
    char inm[256];
    snprintf(inm, sizeof(inm), "If-None-Match: W/\"other\", %s\r\n", etag);
    ok(fd >= 0 && !hc_send(fd, "GET", "/", inm, NULL, 0, &r) && r.status == 304,
       "If-None-Match naming the ETag (among others): 304");
    ok(r.body_len == 0 && header_is(&r, "etag", etag) && !has_header(&r, "content-length"),
       "304: no body, the ETag, no Content-Length");
    hc_resp_free(&r);
    ok(!hc_send(fd, "HEAD", "/app.js", "", NULL, 0, &r) && r.status == 200,
       "HEAD on the connection of the 304: 200");
    char cl[32] = "";
    ok(hc_header(&r, "content-length", cl, sizeof(cl)) && atoi(cl) == 20 && r.body_len == 0,
       "HEAD: the body's Content-Length (20, got %s), no body", cl);
    ok(header_is(&r, "content-type", "text/javascript; charset=utf-8"), "app.js: text/javascript");
    hc_resp_free(&r);
    ok(!hc_send(fd, "GET", "/sub/x.css", "If-None-Match: \"nope\"\r\n", NULL, 0, &r) &&
           r.status == 200 && !strcmp(r.body, "p{}\n"),
       "then a GET on the same connection: 200 with its body (an ETag that does not match)");
    ok(header_is(&r, "content-type", "text/css; charset=utf-8"), "x.css: text/css");
    hc_resp_free(&r);
    if (fd >= 0)
        close(fd);

    is_int(send1(p.port, "GET", "/crdt.wasm", "", NULL, &r), 200, "GET /crdt.wasm");
    ok(header_is(&r, "content-type", "application/wasm"), "crdt.wasm: application/wasm");
    hc_resp_free(&r);
    is_int(send1(p.port, "GET", "/blob.bin", "", NULL, &r), 200, "GET /blob.bin");
    ok(header_is(&r, "content-type", "application/octet-stream"), "unknown type: octet-stream");
    hc_resp_free(&r);
    is_int(send1(p.port, "GET", "/sub/", "", NULL, &r), 200, "GET /sub/: its index.html");
    is(r.body, "sub index\n", "GET /sub/: the subdirectory's index");
    hc_resp_free(&r);
    is_int(send1(p.port, "GET", "/sub", "", NULL, &r), 404, "GET /sub (a directory): 404");
    ok(r.body && strstr(r.body, "no such endpoint"), "no file: the API's own 404");
    hc_resp_free(&r);
    is_int(send1(p.port, "GET", "/nope.js", "", NULL, &r), 404, "a missing file: 404");
    hc_resp_free(&r);
    is_int(send1(p.port, "GET", "/.hidden", "", NULL, &r), 404, "a dotfile: 404");
    ok(r.body && !strstr(r.body, SECRET), "a dotfile's bytes are not sent");
    hc_resp_free(&r);
    is_int(send1(p.port, "GET", "/index.html?v=2", "", NULL, &r), 200, "a query string is ignored");
    hc_resp_free(&r);

    /* the API's paths are the API's, not files */
    is_int(send1(p.port, "GET", "/healthz", "", NULL, &r), 200, "/healthz is still the API's");
    ok(r.body && strstr(r.body, "\"ok\""), "/healthz answers as before");
    hc_resp_free(&r);
    is_int(send1(p.port, "GET", "/v1/keys/ZmVlZDox", "", NULL, &r), 404, "/v1/keys: the API's 404");
    ok(r.body && strstr(r.body, "no such key"), "/v1/... never reaches the files");
    hc_resp_free(&r);
    is_int(send1(p.port, "POST", "/index.html", "", "{}", &r), 404,
           "a POST to a file's path is not served from the directory");
    hc_resp_free(&r);

    const char *targets[] = {"/../secret.txt",
                             "/%2e%2e/secret.txt",
                             "/sub/../../secret.txt",
                             "/sub/%2e%2e/%2e%2e/secret.txt",
                             "/..%2fsecret.txt",
                             "/%2e%2e%2fsecret.txt",
                             "/./../secret.txt",
                             "/sub/..%5c..%5csecret.txt",
                             "/../../../../etc/passwd",
                             "/%2e%2e/%2e%2e/%2e%2e/etc/passwd",
                             "//etc/passwd",
                             "/.%2e/secret.txt",
                             "/%00/../secret.txt",
                             "/.hidden%00.html"};
    for (size_t i = 0; i < sizeof(targets) / sizeof(targets[0]); i++)
        traversal(p.port, targets[i]);
    is_int(send1(p.port, "GET", "/", "", NULL, &r), 200,
           "still serving after the traversal attempts");
    hc_resp_free(&r);
    is_int(crdtd_stop(&p, SIGTERM, 10000), 0, "crdtd stops cleanly");
}

/* The files need no token (they are the app); the API still does. */
static void test_static_with_tokens(const char *tmp)
{
    char web[512], secret[512];
    snprintf(web, sizeof(web), "%s/web", tmp);
    snprintf(secret, sizeof(secret), "%s/token.secret", tmp);
    write_file(tmp, "token.secret", "a-token-secret-0123456789abcdef\n");
    crdtd_proc_t p;
    const char *args[] = {"--no-persist", "--static-dir", web, "--token-secret-file", secret, NULL};
    if (crdtd_start(&p, CRDTD_BIN, tmp, args)) {
        fail("crdtd with tokens and --static-dir starts");
        return;
    }
    hc_resp_t r;
    is_int(send1(p.port, "GET", "/", "", NULL, &r), 200, "with tokens: GET / needs none");
    hc_resp_free(&r);
    is_int(send1(p.port, "GET", "/v1/keys/ZmVlZDox", "", NULL, &r), 401,
           "with tokens: the API still does (401)");
    hc_resp_free(&r);
    is_int(send1(p.port, "GET", "/nope.html", "", NULL, &r), 401,
           "with tokens: a path that is no file is the API's, and needs a token");
    hc_resp_free(&r);
    is_int(send1(p.port, "OPTIONS", "/v1/keys/ZmVlZDox", "", NULL, &r), 204,
           "with tokens: a preflight (no Authorization) is answered 204");
    hc_resp_free(&r);
    is_int(crdtd_stop(&p, SIGTERM, 10000), 0, "crdtd stops cleanly");
}

/* The demo beside the binary (<build>/gateway/web), and --static-dir '' to serve nothing. */
static void test_default_dir(const char *tmp)
{
    crdtd_proc_t p;
    const char *args[] = {"--no-persist", NULL};
    if (crdtd_start(&p, CRDTD_BIN, tmp, args)) {
        fail("crdtd without --static-dir starts");
        return;
    }
    hc_resp_t r;
    is_int(send1(p.port, "GET", "/", "", NULL, &r), 200, "no --static-dir: the demo at /");
    ok(r.body && strstr(r.body, "app.js") && strstr(r.body, "<html"),
       "no --static-dir: the demo's index.html");
    hc_resp_free(&r);
    is_int(send1(p.port, "GET", "/files.json", "", NULL, &r), 200,
           "the demo's list of files for its service worker");
    ok(r.body && strstr(r.body, "\"app.js\"") && strstr(r.body, "\"index.html\""),
       "it names the demo's files");
    hc_resp_free(&r);
    is_int(crdtd_stop(&p, SIGTERM, 10000), 0, "crdtd stops cleanly");

    const char *off[] = {"--no-persist", "--static-dir", "", NULL};
    if (crdtd_start(&p, CRDTD_BIN, tmp, off)) {
        fail("crdtd --static-dir '' starts");
        return;
    }
    is_int(send1(p.port, "GET", "/", "", NULL, &r), 404, "--static-dir '': nothing at /");
    ok(r.body && strstr(r.body, "no such endpoint"), "--static-dir '': the API's 404");
    hc_resp_free(&r);
    is_int(crdtd_stop(&p, SIGTERM, 10000), 0, "crdtd stops cleanly");
}

/* ---- CORS and HEAD on the API --------------------------------------------------------------- */

static const char WRITE[] = "{\"type\":\"pncounter\",\"op\":\"incr\",\"by\":1}";

/* The status of a raw request on a fresh connection (the answer's end: the server closing, or
 * timeout_ms of silence); into body (size n) the response's start when body is not NULL. */
static int raw_status(int port, const char *req, int timeout_ms, char *body, size_t n)
{
    size_t got_len = 0;
    char *got = hc_raw(port, req, strlen(req), false, timeout_ms, &got_len);
    int st = got && !strncmp(got, "HTTP/1.", 7) && got_len > 9 ? atoi(got + 9) : -1;
    if (body)
        snprintf(body, n, "%s", got ? got : "");
    free(got);
    return st;
}

/* An upgrade to WebSocket subprotocol `proto` sent with Host `host` (NULL: 127.0.0.1:port) and an
 * Origin header (NULL: none); returns the status of the answer. */
static int upgrade_proto(int port, const char *proto, const char *host, const char *origin)
{
    char req[1024], hh[300], oh[300] = "";
    if (host)
        snprintf(hh, sizeof(hh), "Host: %s\r\n", host);
    else
        snprintf(hh, sizeof(hh), "Host: 127.0.0.1:%d\r\n", port);
    if (origin)
        snprintf(oh, sizeof(oh), "Origin: %s\r\n", origin);
    snprintf(req, sizeof(req),
             "GET / HTTP/1.1\r\n%sUpgrade: websocket\r\nConnection: Upgrade\r\n"
             "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n"
             "Sec-WebSocket-Protocol: %s\r\n%s\r\n",
             hh, proto, oh);
    return raw_status(port, req, 1000, NULL, 0);
}

static int upgrade(int port, const char *origin)
{
    return upgrade_proto(port, "crdt.v1", NULL, origin);
}

static void test_cors(const char *tmp)
{
    crdtd_proc_t p;
    const char *args[] = {"--no-persist",
                          "--static-dir",
                          "",
                          "--cors-origin",
                          "http://app.example,https://b.example:8443",
                          "--cors-origin",
                          "http://localhost:5173",
                          NULL};
    if (crdtd_start(&p, CRDTD_BIN, tmp, args)) {
        fail("crdtd with --cors-origin starts");
        return;
    }
    const char *key = "/v1/keys/bGlrZXM"; /* likes */
    hc_resp_t r;
    is_int(send1(p.port, "OPTIONS", key,
                 "Origin: http://localhost:5173\r\nAccess-Control-Request-Method: POST\r\n"
                 "Access-Control-Request-Headers: authorization, content-type\r\n",
                 NULL, &r),
           204, "a preflight from a listed origin: 204");
    ok(header_is(&r, "access-control-allow-origin", "http://localhost:5173"),
       "preflight: Access-Control-Allow-Origin is the origin");
    char v[256] = "";
    ok(hc_header(&r, "access-control-allow-methods", v, sizeof(v)) && strstr(v, "POST") &&
           strstr(v, "GET") && strstr(v, "HEAD"),
       "preflight: the API's methods allowed (%s)", v);
    ok(hc_header(&r, "access-control-allow-headers", v, sizeof(v)) && strstr(v, "Authorization") &&
           strstr(v, "Content-Type"),
       "preflight: Authorization and Content-Type allowed (%s)", v);
    ok(has_header(&r, "access-control-max-age"), "preflight: a Max-Age");
    ok(header_is(&r, "vary", "Origin"), "preflight: Vary: Origin");
    ok(r.body_len == 0 && !has_header(&r, "content-length"), "204: no body, no length");
    hc_resp_free(&r);

    is_int(send1(p.port, "OPTIONS", key,
                 "Origin: http://evil.example\r\nAccess-Control-Request-Method: POST\r\n", NULL,
                 &r),
           204, "a preflight from another origin: answered");
    ok(!has_header(&r, "access-control-allow-origin") &&
           !has_header(&r, "access-control-allow-methods") &&
           !has_header(&r, "access-control-allow-headers"),
       "but with no CORS headers (the browser refuses the request)");
    hc_resp_free(&r);

    is_int(send1(p.port, "POST", key, "Origin: https://b.example:8443\r\n", WRITE, &r), 200,
           "a write from a listed origin: 200");
    ok(header_is(&r, "access-control-allow-origin", "https://b.example:8443") &&
           header_is(&r, "vary", "Origin"),
       "its response may be read by the page (ACAO, Vary)");
    ok(hc_header(&r, "access-control-expose-headers", v, sizeof(v)) && strstr(v, "ETag"),
       "ETag and WWW-Authenticate exposed");
    ok(!has_header(&r, "access-control-allow-methods"), "only a preflight lists the methods");
    hc_resp_free(&r);
    is_int(send1(p.port, "POST", key, "Origin: http://evil.example\r\n", WRITE, &r), 403,
           "a write from another site's page: 403");
    ok(r.body && strstr(r.body, "--cors-origin") && !has_header(&r, "access-control-allow-origin"),
       "403 says how to allow it, with no CORS headers");
    hc_resp_free(&r);
    is_int(send1(p.port, "DELETE", key, "Origin: null\r\n", NULL, &r), 403,
           "a DELETE from a \"null\" origin: 403");
    hc_resp_free(&r);
    is_int(send1(p.port, "POST", key, "Origin: http://127.0.0.1\r\n", WRITE, &r), 200,
           "a write from the server's own origin (its Host): 200");
    ok(!has_header(&r, "access-control-allow-origin"), "same origin: no CORS header needed");
    hc_resp_free(&r);
    is_int(send1(p.port, "POST", key, "", WRITE, &r), 200, "a write without Origin (curl): 200");
    hc_resp_free(&r);
    is_int(send1(p.port, "GET", key, "Origin: http://evil.example\r\n", NULL, &r), 200,
           "a GET from another origin is answered");
    ok(!has_header(&r, "access-control-allow-origin"),
       "without CORS headers: the page cannot read it");
    ok(r.body && strstr(r.body, "\"value\":3"),
       "the refused writes changed nothing (3 of 5 applied)");
    size_t get_len = r.body_len;
    hc_resp_free(&r);
    is_int(send1(p.port, "GET", key, "Origin: http://APP.example\r\n", NULL, &r), 200,
           "a GET from a listed origin (case-insensitive)");
    ok(header_is(&r, "access-control-allow-origin", "http://APP.example"),
       "ACAO echoes the Origin as sent");
    hc_resp_free(&r);

    /* HEAD on GET endpoints: the GET's headers, its length, no body */
    is_int(send1(p.port, "HEAD", key, "Origin: http://app.example\r\n", NULL, &r), 200,
           "HEAD on a key: 200");
    ok(hc_header(&r, "content-length", v, sizeof(v)) && (size_t)atoll(v) == get_len &&
           r.body_len == 0,
       "HEAD: the GET's Content-Length (%zu, got %s), no body", get_len, v);
    ok(header_is(&r, "access-control-allow-origin", "http://app.example"), "HEAD: CORS too");
    hc_resp_free(&r);
    is_int(send1(p.port, "HEAD", "/v1/keys/bm9uZQ", "", NULL, &r), 404,
           "HEAD on a missing key: the GET's 404");
    hc_resp_free(&r);
    int fd = hc_connect(p.port);
    ok(fd >= 0 && !hc_send(fd, "HEAD", "/healthz", "", NULL, 0, &r) && r.status == 200 &&
           r.body_len == 0,
       "HEAD /healthz: 200, no body");
    hc_resp_free(&r);
    ok(!hc_send(fd, "HEAD", "/metrics", "", NULL, 0, &r) && r.status == 200,
       "HEAD /metrics on the same connection");
    hc_resp_free(&r);
    ok(!hc_send(fd, "GET", "/healthz", "", NULL, 0, &r) && r.status == 200 && r.body_len > 0,
       "and a GET after two HEADs on one connection gets its body");
    hc_resp_free(&r);
    if (fd >= 0)
        close(fd);
    is_int(send1(p.port, "HEAD", "/v1/changes", "", NULL, &r), 200, "HEAD /v1/changes");
    hc_resp_free(&r);

    /* WebSocket sessions: the same rule */
    is_int(upgrade(p.port, NULL), 101, "upgrade without Origin (crdtc): 101");
    is_int(upgrade(p.port, "http://localhost:5173"), 101, "upgrade from a listed origin: 101");
    char own[64];
    snprintf(own, sizeof(own), "http://127.0.0.1:%d", p.port);
    is_int(upgrade(p.port, own), 101, "upgrade from the server's own origin: 101");
    is_int(upgrade(p.port, "http://evil.example"), 403, "upgrade from another site: 403");
    is_int(upgrade(p.port, "null"), 403, "upgrade from a \"null\" origin: 403");
    is_int(send1(p.port, "GET", "/healthz", "", NULL, &r), 200, "still serving");
    hc_resp_free(&r);
    is_int(crdtd_stop(&p, SIGTERM, 10000), 0, "crdtd stops cleanly");
}

/* GET path with Host `host` ("Connection: close", so the answer ends the exchange). */
static int get_with_host(int port, const char *path, const char *host)
{
    char req[512];
    snprintf(req, sizeof(req), "GET %s HTTP/1.1\r\nHost: %s\r\nConnection: close\r\n\r\n", path,
             host);
    return raw_status(port, req, 2000, NULL, 0);
}

/* An upgrade with Host `host` and the Origin of a page of that site (what a browser sends). */
static int upgrade_with_host(int port, const char *host)
{
    char origin[300];
    snprintf(origin, sizeof(origin), "http://%s", host);
    return upgrade_proto(port, "crdt.v1", host, origin);
}

/* DNS rebinding: a site that makes its name resolve to 127.0.0.1 serves pages that are "same
 * origin" with a loopback crdtd; without a token secret they could read and write every key.
 * Their requests carry the site's name in Host: an open node answers IP addresses, localhost and
 * --allowed-host names only, on every listener and for WebSocket upgrades too. */
static void test_hosts(const char *tmp)
{
    crdtd_proc_t p;
    const char *args[] = {"--no-persist",   "--static-dir", "",  "--roshi-listen", "127.0.0.1:0",
                          "--allowed-host", "feed.example", NULL};
    if (crdtd_start(&p, CRDTD_BIN, tmp, args)) {
        fail("an open crdtd with --allowed-host starts");
        return;
    }
    char host[128], body[2048], req[1024];
    snprintf(host, sizeof(host), "evil.example:%d", p.port);
    is_int(get_with_host(p.port, "/healthz", host), 403, "open node: GET with Host %s: 403", host);
    is_int(get_with_host(p.port, "/v1/keys/ZmVlZDox", host), 403, "open node: a read: 403");
    snprintf(req, sizeof(req),
             "POST /v1/keys/ZmVlZDox HTTP/1.1\r\nHost: %s\r\nOrigin: http://%s\r\n"
             "Content-Type: application/json\r\nContent-Length: %zu\r\nConnection: close\r\n\r\n%s",
             host, host, strlen(WRITE), WRITE);
    is_int(raw_status(p.port, req, 2000, body, sizeof(body)), 403,
           "open node: a write from that page: 403");
    ok(strstr(body, "--allowed-host") != NULL && strstr(body, "rebinding") != NULL,
       "the refusal says why and what to do");
    hc_resp_t r;
    is_int(send1(p.port, "GET", "/v1/keys/ZmVlZDox", "", NULL, &r), 404, "and it wrote nothing");
    hc_resp_free(&r);
    ok(hc_file_wait(p.errlog, "refused a request for Host evil.example", 2000),
       "the node's log says so too");
    is_int(upgrade_with_host(p.port, host), 403, "open node: a session from that page: 403");
    snprintf(req, sizeof(req), "GET /healthz HTTP/1.0\r\n\r\n");
    is_int(raw_status(p.port, req, 2000, NULL, 0), 200, "no Host (HTTP/1.0, no browser): 200");
    const char *fine[] = {"127.0.0.1", "localhost", "[::1]", "app.localhost", "FEED.example"};
    for (size_t i = 0; i < sizeof(fine) / sizeof(fine[0]); i++) {
        snprintf(host, sizeof(host), "%s:%d", fine[i], p.port);
        is_int(get_with_host(p.port, "/healthz", host), 200, "open node: Host %s: 200", host);
        is_int(upgrade_with_host(p.port, host), 101, "open node: a session with Host %s: 101",
               host);
    }
    snprintf(host, sizeof(host), "sub.feed.example:%d", p.port);
    is_int(get_with_host(p.port, "/healthz", host), 403, "a name under an allowed one: 403");
    snprintf(host, sizeof(host), "127.0.0.1:%d  \t", p.port);
    is_int(get_with_host(p.port, "/healthz", host), 200,
           "trailing whitespace in Host: not part of it");
    /* crdt-peer.v1 proves the cluster secret first: a peer dialling by name is not refused for
     * its Host (replication is off here, so the session is refused after the upgrade instead) */
    snprintf(host, sizeof(host), "crdt-2.svc:%d", p.port);
    is_int(upgrade_proto(p.port, "crdt-peer.v1", host, NULL), 101,
           "open node: a peer's upgrade by name is not refused for its Host");
    if (ok(p.roshi_port > 0, "the roshi listener is up")) {
        snprintf(host, sizeof(host), "evil.example:%d", p.roshi_port);
        is_int(get_with_host(p.roshi_port, "/?coalesce=1", host), 403,
               "the roshi listener: Host %s: 403", host);
        snprintf(host, sizeof(host), "127.0.0.1:%d", p.roshi_port);
        ok(get_with_host(p.roshi_port, "/?coalesce=1", host) != 403,
           "the roshi listener: Host %s: not refused", host);
    }
    is_int(send1(p.port, "GET", "/healthz", "", NULL, &r), 200, "still serving");
    hc_resp_free(&r);
    is_int(crdtd_stop(&p, SIGTERM, 10000), 0, "crdtd stops cleanly");

    /* With a token secret, tokens guard everything: any Host gets to the token check */
    char secret[512];
    snprintf(secret, sizeof(secret), "%s/token.secret", tmp);
    write_file(tmp, "token.secret", "a-token-secret-0123456789abcdef\n");
    const char *targs[] = {"--no-persist", "--static-dir", "", "--token-secret-file", secret, NULL};
    if (crdtd_start(&p, CRDTD_BIN, tmp, targs)) {
        fail("crdtd with tokens starts");
        return;
    }
    snprintf(host, sizeof(host), "crdtd.example.com:%d", p.port);
    is_int(get_with_host(p.port, "/healthz", host), 200, "with tokens: Host %s: 200", host);
    is_int(get_with_host(p.port, "/v1/keys/ZmVlZDox", host), 401,
           "with tokens: a read without a token: 401, not 403");
    is_int(crdtd_stop(&p, SIGTERM, 10000), 0, "crdtd stops cleanly");
}

static void test_flags(const char *tmp)
{
    char err[600];
    snprintf(err, sizeof(err), "%s/flags.err", tmp);
    struct {
        const char *flag, *val, *want;
    } bad[] = {
        {"--cors-origin", "ftp://x", "http://host[:port]"},
        {"--cors-origin", "http://a.example/app", "no path"},
        {"--cors-origin", "http://a,", "empty origin"},
        {"--allowed-host", "http://a.example", "no port or scheme"},
        {"--allowed-host", "a.example,", "empty host name"},
        {"--static-dir", "/nonexistent/dir/of/crdtd", "not a directory"},
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        const char *args[] = {"--no-persist", bad[i].flag, bad[i].val, NULL};
        int st = crdtd_run(CRDTD_BIN, args, err, 5000);
        ok(WIFEXITED(st) && WEXITSTATUS(st) == 2, "%s %s: exit 2", bad[i].flag, bad[i].val);
        FILE *f = fopen(err, "r");
        char text[1024] = "";
        size_t n = f ? fread(text, 1, sizeof(text) - 1, f) : 0;
        text[n] = '\0';
        if (f)
            fclose(f);
        ok(strstr(text, bad[i].want) != NULL, "%s %s: says '%s' (%s)", bad[i].flag, bad[i].val,
           bad[i].want, text);
    }
}

int main(void)
{
    char *tmp = test_tmpdir();
    if (!tmp)
        return fail("a temporary directory"), done_testing();
    test_units();
    test_flags(tmp);
    test_static(tmp);
    test_static_with_tokens(tmp);
    test_default_dir(tmp);
    test_cors(tmp);
    test_hosts(tmp);
    rm_rf(tmp);
    free(tmp);
    return done_testing();
}
