/* test_http_auth.c - tokens on every HTTP surface: the auth matrix of REST, timelines, the change
 * feed, peers, metrics, healthz and the roshi listener (no token, malformed, bad signature,
 * expired, unknown key id, read-only writing, key outside the grants), nothing refused stored;
 * key rotation with SIGHUP (old kid refused after, a session open across it stays open); the
 * open node's loud start and its refusal to listen beyond loopback */
#include "tap.h"

#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <jansson.h>

#include "crdt.h"
#include "http_client.h"
#include "token.h"
#include "ws_raw.h"

#ifndef CRDTD_BIN
#error "CRDTD_BIN (the crdtd binary) must be defined"
#endif

static const char S0[] = "old-secret-0123456789abcdef";
static const char S1[] = "new-secret-0123456789abcdef";
static const char S2[] = "next-secret-0123456789abcdef";

/* A token of kid (NULL: two-part) signed with secret, grants as text prefixes (NULL-terminated
 * lists; NULL: none). */
static char *mint(const char *kid, const char *secret, const char *sub, long ttl,
                  const char *const *reads, const char *const *writes)
{
    gw_grant_t rg[8] = {{0}}, wg[8] = {{0}};
    size_t nr = 0, nw = 0;
    for (; reads && reads[nr]; nr++)
        rg[nr] = (gw_grant_t){(uint8_t *)reads[nr], strlen(reads[nr])};
    for (; writes && writes[nw]; nw++)
        wg[nw] = (gw_grant_t){(uint8_t *)writes[nw], strlen(writes[nw])};
    return gw_token_make_kid(kid, secret, strlen(secret), sub, (int64_t)time(NULL) + ttl, rg, nr,
                             wg, nw);
}

/* One request with an optional bearer token (tok NULL: no header; a tok starting with '!' is sent
 * as the whole Authorization value). Returns the status; *reason gets the JSON "reason" (or ""). */
static int req(int port, const char *method, const char *path, const char *tok, const char *body,
               char *reason, size_t rn, char **bodyout)
{
    char hdr[9000] = "";
    if (tok && tok[0] == '!')
        snprintf(hdr, sizeof(hdr), "Authorization: %s\r\n", tok + 1);
    else if (tok)
        snprintf(hdr, sizeof(hdr), "Authorization: Bearer %s\r\n", tok);
    int fd = hc_connect(port);
    hc_resp_t r = {0};
    int st = 0;
    if (fd >= 0 && !hc_send(fd, method, path, hdr, body, body ? strlen(body) : 0, &r))
        st = r.status;
    if (fd >= 0)
        close(fd);
    if (reason && rn) {
        reason[0] = '\0';
        json_t *j = r.body ? json_loads(r.body, 0, NULL) : NULL;
        const char *s = json_string_value(json_object_get(j, "reason"));
        snprintf(reason, rn, "%s", s ? s : "");
        json_decref(j);
    }
    if (st == 401) {
        char buf[128];
        ok(hc_header(&r, "www-authenticate", buf, sizeof(buf)) && !strncmp(buf, "Bearer", 6),
           "%s %s: a 401 carries WWW-Authenticate: Bearer", method, path);
    }
    if (bodyout)
        *bodyout = r.body ? strdup(r.body) : NULL;
    hc_resp_free(&r);
    return st;
}

static void expect(int port, const char *method, const char *path, const char *tok,
                   const char *body, int want, const char *want_reason, const char *name)
{
    char reason[64];
    int st = req(port, method, path, tok, body, reason, sizeof(reason), NULL);
    is_int(st, want, "%s: %s %s -> %d", name, method, path, want);
    if (want_reason)
        is(reason, want_reason, "%s: reason %s", name, want_reason);
}

static char *b64(const char *s, bool url)
{
    static char bufs[8][512];
    static int at;
    char *o = bufs[at++ % 8];
    hc_b64(s, o, url);
    return o;
}

static void write_file(const char *path, const char *text)
{
    FILE *f = fopen(path, "w");
    if (f) {
        fputs(text, f);
        fclose(f);
    }
}

/* crdt.v1 session: hello with tok; the first message's type ("welcome", or "" after a close whose
 * code goes to *code). */
static bool ws_hello(ws_raw_t *w, int port, const char *tok, int *code)
{
    *code = 0;
    if (ws_open(w, port, "crdt.v1") != 101)
        return false;
    char hello[9000];
    snprintf(hello, sizeof(hello), "{\"type\":\"hello\",\"client\":\"rot\",\"token\":\"%s\"}", tok);
    ws_text(w, hello);
    char *m = NULL;
    size_t n;
    int op = ws_recv(w, 5000, &m, &n);
    bool welcome = op == WS_OP_TEXT && m && strstr(m, "\"welcome\"");
    if (op == WS_OP_CLOSE)
        *code = w->close_code;
    free(m);
    return welcome;
}

static void rest_matrix(int port, char *const *t)
{
    /* t: 0 admin, 1 read-only team:, 2 rw team:/team:w:, 3 expired, 4 bad signature, 5 unknown
     * kid, 6 two-part (kid default, not in the ring), 7 kid k1 signed with k0's secret */
    char path[1024], path2[1024];
    const char *op = "{\"type\":\"pncounter\",\"op\":\"incr\",\"by\":1}";

    snprintf(path, sizeof(path), "/v1/keys/%s", hc_pct("team:a"));
    const char *bad[][2] = {{NULL, "missing"}, {"!Basic dXNlcjpwdw==", "malformed"},
                            {"not-a-token", "malformed"}};
    for (size_t i = 0; i < 3; i++) {
        expect(port, "GET", path, bad[i][0], NULL, 401, bad[i][1], "rest get");
        expect(port, "POST", path, bad[i][0], op, 401, bad[i][1], "rest post");
    }
    const char *reasons[] = {"expired", "bad_signature", "unknown_kid", "unknown_kid",
                             "bad_signature"};
    for (int i = 3; i <= 7; i++) {
        expect(port, "GET", path, t[i], NULL, 401, reasons[i - 3], "rest get");
        expect(port, "POST", path, t[i], op, 401, reasons[i - 3], "rest post");
    }
    /* grants */
    expect(port, "GET", path, t[1], NULL, 404, NULL, "read-only token reads an absent team key");
    expect(port, "POST", path, t[1], op, 403, "read_only", "read-only token writing");
    expect(port, "POST", path, t[2], op, 403, "outside_grant", "rw token writes outside team:w:");
    snprintf(path2, sizeof(path2), "/v1/keys/%s", hc_pct("other:a"));
    expect(port, "GET", path2, t[1], NULL, 403, "outside_grant", "read outside the read grant");
    expect(port, "POST", path2, t[2], op, 403, "outside_grant", "write outside the write grant");
    expect(port, "GET", path, t[0], NULL, 404, NULL, "refused writes stored nothing (team:a)");
    expect(port, "GET", path2, t[0], NULL, 404, NULL, "refused writes stored nothing (other:a)");
    snprintf(path, sizeof(path), "/v1/keys/%s", hc_pct("team:w:a"));
    expect(port, "POST", path, t[2], op, 200, NULL, "rw token writes under team:w:");
    expect(port, "GET", path, t[1], NULL, 200, NULL, "read-only token reads it back");
    snprintf(path, sizeof(path), "/v1/keys/%s", hc_pct("other:z"));
    expect(port, "POST", path, t[0], op, 200, NULL, "admin writes other:z");

    /* timeline page and multi-key timelines */
    snprintf(path, sizeof(path), "/v1/keys/%s/timeline", hc_pct("other:a"));
    expect(port, "GET", path, NULL, NULL, 401, "missing", "timeline without a token");
    expect(port, "GET", path, t[1], NULL, 403, "outside_grant", "timeline outside the grant");
    snprintf(path, sizeof(path), "/v1/timelines?keys=%s,%s", hc_pct("team:a"),
             hc_pct("other:a"));
    expect(port, "GET", path, NULL, NULL, 401, "missing", "timelines without a token");
    expect(port, "GET", path, t[3], NULL, 401, "expired", "timelines expired");
    expect(port, "GET", path, t[1], NULL, 403, "outside_grant", "timelines: one key outside");
    snprintf(path, sizeof(path), "/v1/timelines?keys=%s,%s", hc_pct("team:a"),
             hc_pct("team:b"));
    expect(port, "GET", path, t[1], NULL, 200, NULL, "timelines: every key granted");

    /* the change feed: a token sees the keys it may read */
    expect(port, "GET", "/v1/changes", NULL, NULL, 401, "missing", "changes without a token");
    expect(port, "GET", "/v1/changes", t[4], NULL, 401, "bad_signature", "changes bad signature");
    char *body = NULL;
    is_int(req(port, "GET", "/v1/changes?since=0", t[1], NULL, NULL, 0, &body), 200,
           "changes with the read-only token");
    ok(body && strstr(body, "\"team:w:a\"") && !strstr(body, "\"other:z\""),
       "its feed holds team:w:a and not other:z");
    free(body);
    body = NULL;
    is_int(req(port, "GET", "/v1/changes?since=0", t[0], NULL, NULL, 0, &body), 200,
           "changes with the admin token");
    ok(body && strstr(body, "\"team:w:a\"") && strstr(body, "\"other:z\""),
       "the admin's feed holds both");
    free(body);

    /* key listing: the read grants decide what is listed */
    expect(port, "GET", "/v1/keys", NULL, NULL, 401, "missing", "list without a token");
    expect(port, "GET", "/v1/keys", t[3], NULL, 401, "expired", "list with an expired token");
    expect(port, "GET", "/v1/keys?prefix=other:", t[1], NULL, 403, "outside_grant",
           "list a prefix no read grant reaches");
    static const struct {
        const char *path;
        int tok;
        bool team, other;
        const char *name;
    } lists[] = {
        {"/v1/keys", 1, true, false, "team: token, no prefix: only team: keys"},
        {"/v1/keys?prefix=te", 1, true, false, "team: token, prefix te: only team: keys"},
        {"/v1/keys?prefix=team:w:", 1, true, false, "team: token, prefix team:w: (inside)"},
        {"/v1/keys", 0, true, true, "admin token: every key"},
        {"/v1/keys?prefix=other:", 0, false, true, "admin token, prefix other:"},
    };
    for (size_t i = 0; i < sizeof(lists) / sizeof(lists[0]); i++) {
        body = NULL;
        is_int(req(port, "GET", lists[i].path, t[lists[i].tok], NULL, NULL, 0, &body), 200, "%s",
               lists[i].name);
        ok(body && !strstr(body, "\"team:w:a\"") == !lists[i].team &&
               !strstr(body, "\"other:z\"") == !lists[i].other,
           "%s: %s", lists[i].name, body ? body : "");
        free(body);
    }

    /* peers, healthz, metrics (open without --metrics-auth) */
    expect(port, "GET", "/v1/peers", NULL, NULL, 401, "missing", "peers without a token");
    expect(port, "GET", "/v1/peers", t[5], NULL, 401, "unknown_kid", "peers unknown kid");
    expect(port, "GET", "/v1/peers", t[1], NULL, 200, NULL, "peers with a token");
    expect(port, "GET", "/healthz", NULL, NULL, 200, NULL, "healthz open");
    expect(port, "GET", "/metrics", NULL, NULL, 200, NULL, "metrics open without --metrics-auth");
    expect(port, "GET", "/nope", NULL, NULL, 401, "missing", "an unknown path needs a token too");
}

static void roshi_matrix(int port, char *const *t)
{
    char ins[1024], sel[256], one[512];
    /* three tuples, the last outside rw's write grant */
    snprintf(ins, sizeof(ins),
             "[{\"key\":\"%s\",\"score\":1,\"member\":\"%s\"},"
             "{\"key\":\"%s\",\"score\":2,\"member\":\"%s\"},"
             "{\"key\":\"%s\",\"score\":3,\"member\":\"%s\"}]",
             b64("team:w:tl", false), b64("m1", false), b64("team:w:tl2", false), b64("m2", false),
             b64("team:tl", false), b64("m3", false));
    snprintf(sel, sizeof(sel), "[\"%s\",\"%s\",\"%s\"]", b64("team:w:tl", false),
             b64("team:w:tl2", false), b64("team:tl", false));
    const char *methods[] = {"GET", "POST", "DELETE"};
    for (int m = 0; m < 3; m++) {
        const char *body = m ? ins : sel;
        expect(port, methods[m], "/", NULL, body, 401, "missing", "roshi without a token");
        expect(port, methods[m], "/", t[3], body, 401, "expired", "roshi expired");
        expect(port, methods[m], "/", t[4], body, 401, "bad_signature", "roshi bad signature");
        expect(port, methods[m], "/", t[5], body, 401, "unknown_kid", "roshi unknown kid");
    }
    expect(port, "POST", "/", t[1], ins, 403, "read_only", "roshi insert, read-only token");
    expect(port, "POST", "/", t[2], ins, 403, "outside_grant", "roshi insert, one key outside");
    expect(port, "DELETE", "/", t[2], ins, 403, "outside_grant", "roshi delete, one key outside");
    char *got = NULL;
    is_int(req(port, "GET", "/", t[0], sel, NULL, 0, &got), 200, "roshi select (admin)");
    ok(got && !strstr(got, b64("m1", false)) && !strstr(got, b64("m2", false)),
       "nothing of the refused insert was stored: %s", got ? got : "(none)");
    free(got);
    char sel2[128];
    snprintf(sel2, sizeof(sel2), "[\"%s\",\"%s\"]", b64("team:w:tl", false),
             b64("other:tl", false));
    expect(port, "GET", "/", t[1], sel2, 403, "outside_grant", "roshi select, one key outside");
    snprintf(one, sizeof(one), "[{\"key\":\"%s\",\"score\":1,\"member\":\"%s\"}]",
             b64("team:w:tl", false), b64("m1", false));
    expect(port, "POST", "/", t[2], one, 200, NULL, "roshi insert inside the grant");
    got = NULL;
    is_int(req(port, "GET", "/", t[1], sel, NULL, 0, &got), 200, "roshi select, read-only token");
    ok(got && strstr(got, b64("m1", false)), "the granted insert is there");
    free(got);
    expect(port, "DELETE", "/", t[2], one, 200, NULL, "roshi delete inside the grant");
    expect(port, "GET", "/healthz", NULL, NULL, 200, NULL, "roshi listener healthz open");
}

int main(void)
{
    signal(SIGPIPE, SIG_IGN);
    char *dir = test_tmpdir();
    char data[1100], ring[1100], data2[1100], rtok[1100], data3[1100];
    snprintf(data, sizeof(data), "%s/data", dir);
    snprintf(data2, sizeof(data2), "%s/data2", dir);
    snprintf(data3, sizeof(data3), "%s/data3", dir);
    snprintf(ring, sizeof(ring), "%s/ring", dir);
    snprintf(rtok, sizeof(rtok), "%s/roshi-token", dir);
    char text[256];
    snprintf(text, sizeof(text), "# test ring\nk0:%s\r\nk1:%s\n\n", S0, S1);
    write_file(ring, text);

    const char *all[] = {"", NULL}, *team[] = {"team:", NULL}, *teamw[] = {"team:w:", NULL};
    char *t[9];
    t[0] = mint("k1", S1, "admin", 3600, all, all);
    t[1] = mint("k1", S1, "reader", 3600, team, NULL);
    t[2] = mint("k1", S1, "writer", 3600, team, teamw);
    t[3] = mint("k1", S1, "late", -10, all, all);
    t[4] = strdup(t[0]);
    size_t l4 = strlen(t[4]);
    t[4][l4 - 3] = t[4][l4 - 3] == 'A' ? 'B' : 'A';
    t[5] = mint("zz", S1, "stranger", 3600, all, all);
    t[6] = mint(NULL, S1, "legacy", 3600, all, all);
    t[7] = mint("k1", S0, "mixed", 3600, all, all);
    t[8] = mint("k0", S0, "old", 3600, all, all);
    bool minted = true;
    for (int i = 0; i < 9; i++)
        minted &= t[i] != NULL;
    ok(minted, "tokens minted");
    ok(gw_token_make_kid("bad kid", S1, strlen(S1), "x", time(NULL) + 60, NULL, 0, NULL, 0) ==
           NULL,
       "a kid outside [A-Za-z0-9_-] is refused by mint");

    crdtd_proc_t srv;
    const char *args[] = {"--data-dir", data, "--token-secret-file", ring, "--roshi-listen",
                          "127.0.0.1:0", NULL};
    if (crdtd_start(&srv, CRDTD_BIN, dir, args)) {
        rm_rf(dir);
        bail_out("crdtd did not start");
    }
    ok(hc_file_wait(srv.errlog, "key ids: k0,k1", 2000), "the start names the key ids");
    rest_matrix(srv.port, t);
    roshi_matrix(srv.roshi_port, t);
    expect(srv.port, "GET", "/healthz", NULL, NULL, 200, NULL, "the node still serves");

    /* ---- rotation ---- */
    char path[256];
    snprintf(path, sizeof(path), "/v1/keys/%s", hc_pct("rot"));
    expect(srv.port, "GET", path, t[8], NULL, 404, NULL, "the k0 token works before rotation");
    ws_raw_t w;
    int code;
    ok(ws_hello(&w, srv.port, t[8], &code), "a session opens with the k0 token");
    snprintf(text, sizeof(text), "k1:%s\nk2:%s\n", S1, S2);
    write_file(ring, text);
    kill(srv.pid, SIGHUP);
    ok(hc_file_wait(srv.errlog, "token key ring reloaded; key ids: k1,k2", 5000),
       "SIGHUP reloaded the ring");
    expect(srv.port, "GET", path, t[8], NULL, 401, "unknown_kid", "the k0 token is refused after");
    char *t2 = mint("k2", S2, "new", 3600, all, all);
    expect(srv.port, "GET", path, t2, NULL, 404, NULL, "a k2 token works after");
    expect(srv.port, "GET", path, t[0], NULL, 404, NULL, "a k1 token still works");
    char apply[512];
    snprintf(apply, sizeof(apply),
             "{\"type\":\"apply\",\"id\":1,\"key\":\"%s\",\"op\":{\"type\":\"pncounter\","
             "\"op\":\"incr\",\"by\":5}}",
             "rot");
    ws_text(&w, apply);
    char *ack = ws_wait_type(&w, "ack", 5000);
    ok(ack != NULL, "the session opened with k0 is still open and acks a write after SIGHUP");
    free(ack);
    ws_free(&w);
    ws_raw_t w2;
    ok(!ws_hello(&w2, srv.port, t[8], &code) && code == 4001,
       "a new session with the k0 token is closed with 4001 (got %d)", code);
    ws_free(&w2);
    write_file(ring, "k1:short\n");
    kill(srv.pid, SIGHUP);
    ok(hc_file_wait(srv.errlog, "keeping the previous token key ring", 5000),
       "a broken ring file on SIGHUP keeps the previous ring");
    expect(srv.port, "GET", path, t2, NULL, 200, NULL, "and the k2 token still works");
    is_int(crdtd_stop(&srv, SIGTERM, 5000) == 0, 1, "stopped cleanly");

    /* ---- --metrics-auth, --roshi-token-file ---- */
    snprintf(text, sizeof(text), "%s\n", S1); /* the older format: one lone secret, kid default */
    write_file(ring, text);
    char *legacy_ro = mint(NULL, S1, "roshi-app", 3600, team, NULL);
    write_file(rtok, legacy_ro);
    const char *args2[] = {"--data-dir",       data2, "--token-secret-file", ring,
                           "--metrics-auth",   "--roshi-listen",            "127.0.0.1:0",
                           "--roshi-token-file", rtok, NULL};
    if (crdtd_start(&srv, CRDTD_BIN, dir, args2)) {
        fail("crdtd with --metrics-auth did not start");
    } else {
        expect(srv.port, "GET", "/metrics", NULL, NULL, 401, "missing", "--metrics-auth: no token");
        expect(srv.port, "GET", "/metrics", t[6], NULL, 200, NULL,
               "--metrics-auth: a two-part token of the lone secret");
        expect(srv.port, "GET", "/healthz", NULL, NULL, 200, NULL, "healthz stays open");
        snprintf(path, sizeof(path), "[\"%s\"]", b64("team:x", false));
        expect(srv.roshi_port, "GET", "/", NULL, path, 200, NULL,
               "roshi select with no header runs as the --roshi-token-file token");
        char one[256];
        snprintf(one, sizeof(one), "[{\"key\":\"%s\",\"score\":1,\"member\":\"%s\"}]",
                 b64("team:x", false), b64("m", false));
        expect(srv.roshi_port, "POST", "/", NULL, one, 403, "read_only",
               "its grants apply: a read-only roshi token cannot insert");
        expect(srv.roshi_port, "POST", "/", t[6], one, 200, NULL,
               "a request's own token takes precedence");
        snprintf(path, sizeof(path), "[\"%s\"]", b64("other:x", false));
        expect(srv.roshi_port, "GET", "/", NULL, path, 403, "outside_grant",
               "and outside its grants a select is refused");
        expect(srv.port, "GET", "/v1/changes", NULL, NULL, 401, "missing",
               "the roshi token is not used on the main listener");
        crdtd_stop(&srv, SIGTERM, 5000);
    }

    /* ---- the open node ---- */
    char errf[1100];
    snprintf(errf, sizeof(errf), "%s/open.err", dir);
    const char *open_args[] = {"--listen", "0.0.0.0:0", "--data-dir", data3, NULL};
    int st = crdtd_run(CRDTD_BIN, open_args, errf, 10000);
    ok(st != 0, "no secret and a non-loopback address: crdtd refuses to start");
    ok(hc_file_wait(errf, "refusing to listen on a non-loopback address", 0), "and says why");
    write_file(ring, "k1:too-short\n");
    const char *bad_args[] = {"--listen", "127.0.0.1:0", "--data-dir", data3, "--token-secret-file", ring, NULL};
    st = crdtd_run(CRDTD_BIN, bad_args, errf, 10000);
    ok(st != 0 && hc_file_wait(errf, "line 1: the secret must be 16..256 bytes", 0),
       "a malformed ring file stops the start with its line");
    const char *allow[] = {"--listen", "0.0.0.0:0", "--allow-open", "--data-dir", data3, NULL};
    if (crdtd_start(&srv, CRDTD_BIN, dir, allow)) {
        fail("--allow-open did not start");
    } else {
        ok(hc_file_wait(srv.errlog, "OPEN NODE", 2000),
           "--allow-open starts, saying loudly it is open");
        snprintf(path, sizeof(path), "/v1/keys/%s", hc_pct("any"));
        expect(srv.port, "POST", path, NULL, "{\"type\":\"pncounter\",\"op\":\"incr\"}", 200,
               NULL, "an open node takes writes without a token");
        crdtd_stop(&srv, SIGTERM, 5000);
    }

    for (int i = 0; i < 9; i++)
        free(t[i]);
    free(t2);
    free(legacy_ro);
    rm_rf(dir);
    free(dir);
    return done_testing();
}
