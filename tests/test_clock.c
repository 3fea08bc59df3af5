/* test_clock.c - two linked crdtd nodes, one with its clock 30 s behind (libfaketime): after the
 * slow node applies a remote LWW write, its next local LWW write (register, LWW-set; over REST and
 * over crdt.v1 WebSocket) wins on every node */
#include "tap.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <jansson.h>

#include "http_client.h"
#include "ws_raw.h"

#ifndef CRDTD_BIN
#error "CRDTD_BIN (the crdtd binary) must be defined"
#endif

/* Debian's libfaketime (package faketime); $CRDT_LIBFAKETIME names another. The multi-threaded
 * variant: crdtd reads the clock from its loader and fsync threads too. */
#define LIBFAKETIME_DEFAULT "/usr/lib/x86_64-linux-gnu/faketime/libfaketimeMT.so.1"

static char *tmp;

static uint64_t wall_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

static uint64_t mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

typedef struct node {
    crdtd_proc_t p;
    int id, port;
    char dir[600];
} node_t;

/* Starts node id on a port of its choosing, dialling peer_port (0: none, it only accepts links);
 * with `faked` set (an LD_PRELOAD and FAKETIME value) its clock is the faked one. */
static int node_start(node_t *n, int id, int peer_port, const char *secret, const char *libfaketime,
                      const char *faked)
{
    static char peer[2][48], idarg[2][8];
    int k = id & 1;
    snprintf(peer[k], sizeof(peer[k]), "ws://127.0.0.1:%d", peer_port);
    snprintf(idarg[k], sizeof(idarg[k]), "%d", id);
    snprintf(n->dir, sizeof(n->dir), "%s/node%d", tmp, id);
    n->id = id;
    /* crdtd_start adds --listen 127.0.0.1:0 and learns the port */
    const char *args[] = {"--node-id",
                          idarg[k],
                          "--data-dir",
                          n->dir,
                          "--peer-secret-file",
                          secret,
                          "--anti-entropy-interval",
                          "1",
                          "--peer",
                          peer[k],
                          NULL};
    if (!peer_port)
        args[8] = NULL;
    char logdir[700];
    snprintf(logdir, sizeof(logdir), "%s/log%d", tmp, id);
    mkdir(logdir, 0755);
    char *asan_was = getenv("ASAN_OPTIONS") ? strdup(getenv("ASAN_OPTIONS")) : NULL;
    if (faked) {
        /* Only this child gets the preload (execv passes our environment on). */
        setenv("LD_PRELOAD", libfaketime, 1);
        setenv("FAKETIME", faked, 1);
        setenv("FAKETIME_DONT_FAKE_MONOTONIC", "1", 1); /* timers and timeouts stay real */
        setenv("FAKETIME_NO_CACHE", "1", 1);
        /* An instrumented crdtd would refuse a library preloaded before the ASan runtime. */
        char asan[512];
        snprintf(asan, sizeof(asan), "%s%sverify_asan_link_order=0", asan_was ? asan_was : "",
                 asan_was && *asan_was ? ":" : "");
        setenv("ASAN_OPTIONS", asan, 1);
    }
    int rc = crdtd_start(&n->p, CRDTD_BIN, logdir, args);
    n->port = n->p.port;
    if (faked) {
        unsetenv("LD_PRELOAD");
        unsetenv("FAKETIME");
        unsetenv("FAKETIME_DONT_FAKE_MONOTONIC");
        unsetenv("FAKETIME_NO_CACHE");
        if (asan_was)
            setenv("ASAN_OPTIONS", asan_was, 1);
        else
            unsetenv("ASAN_OPTIONS");
    }
    free(asan_was);
    return rc;
}

/* GET path as JSON (caller decrefs), NULL unless 200. */
static json_t *get_json(int port, const char *path)
{
    hc_resp_t r;
    memset(&r, 0, sizeof(r));
    json_t *j = NULL;
    if (hc_request(port, "GET", path, NULL, &r) == 0 && r.status == 200)
        j = json_loads(r.body, 0, NULL);
    hc_resp_free(&r);
    return j;
}

static json_t *get_key(int port, const char *key)
{
    char u[128], path[192];
    snprintf(u, sizeof(u), "%s", hc_pct(key));
    snprintf(path, sizeof(path), "/v1/keys/%s", u);
    return get_json(port, path);
}

/* POST an op to key over REST; the HTTP status (-1: no answer). */
static int post_op(int port, const char *key, const char *op)
{
    char u[128], path[192];
    snprintf(u, sizeof(u), "%s", hc_pct(key));
    snprintf(path, sizeof(path), "/v1/keys/%s", u);
    hc_resp_t r;
    memset(&r, 0, sizeof(r));
    int st = hc_request(port, "POST", path, op, &r) == 0 ? r.status : -1;
    if (st != 200)
        diag("POST %s %s: %d %s", key, op, st, r.body ? r.body : "");
    hc_resp_free(&r);
    return st;
}

/* The register's value decoded into out (as text), "" when absent or unset. */
static const char *reg_value(int port, const char *key, char *out, size_t cap)
{
    out[0] = '\0';
    json_t *j = get_key(port, key);
    const char *v = j ? json_string_value(json_object_get(j, "value")) : NULL;
    if (v) {
        /* the test's values are plain words: JSON strings as they are */
        snprintf(out, cap, "%s", v);
    }
    json_decref(j);
    return out;
}

/* 1 if member (text) is live in the set at key, 0 if not (or the key is absent). */
static int set_has(int port, const char *key, const char *member_b64)
{
    json_t *j = get_key(port, key);
    json_t *v = j ? json_object_get(j, "value") : NULL;
    int found = 0;
    for (size_t i = 0; json_is_array(v) && i < json_array_size(v); i++)
        if (json_string_value(json_array_get(v, i)) &&
            !strcmp(json_string_value(json_array_get(v, i)), member_b64))
            found = 1;
    json_decref(j);
    return found;
}

/* The ms of the register's HLC timestamp, 0 if none. */
static uint64_t reg_ts_ms(int port, const char *key)
{
    json_t *j = get_key(port, key);
    json_t *ms = j ? json_object_get(json_object_get(j, "timestamp"), "ms") : NULL;
    uint64_t v = json_is_integer(ms) ? (uint64_t)json_integer_value(ms) : 0;
    json_decref(j);
    return v;
}

/* Polls until the register at key holds value (text) on the node, at most timeout_ms. */
static bool wait_reg(const node_t *n, const char *key, const char *want_b64, int timeout_ms)
{
    char got[256];
    uint64_t end = mono_ms() + (uint64_t)timeout_ms;
    do {
        if (!strcmp(reg_value(n->port, key, got, sizeof(got)), want_b64))
            return true;
        usleep(20000);
    } while (mono_ms() < end);
    diag("node %d: register %s holds \"%s\", expected \"%s\"", n->id, key, got, want_b64);
    return false;
}

static bool wait_member(const node_t *n, const char *key, const char *member_b64, int want,
                        int timeout_ms)
{
    uint64_t end = mono_ms() + (uint64_t)timeout_ms;
    int got;
    do {
        if ((got = set_has(n->port, key, member_b64)) == want)
            return true;
        usleep(20000);
    } while (mono_ms() < end);
    diag("node %d: member %s of %s is %s, expected %s", n->id, member_b64, key,
         got ? "live" : "absent", want ? "live" : "absent");
    return false;
}

/* Until /v1/peers of the node lists a link up. */
static bool wait_up(const node_t *n, int timeout_ms)
{
    uint64_t end = mono_ms() + (uint64_t)timeout_ms;
    do {
        hc_resp_t r;
        memset(&r, 0, sizeof(r));
        bool up = hc_request(n->port, "GET", "/v1/peers", NULL, &r) == 0 && r.body &&
                  strstr(r.body, "\"state\":\"up\"");
        hc_resp_free(&r);
        if (up)
            return true;
        usleep(30000);
    } while (mono_ms() < end);
    diag("node %d: no peer link up", n->id);
    return false;
}

/* A crdt.v1 session on the node: one apply of op to key; the ack's "applied" (1/0), -1 if no
 * ack came. */
static int ws_apply(const node_t *n, const char *key, const char *op)
{
    ws_raw_t w;
    int applied = -1;
    if (ws_open(&w, n->port, "crdt.v1") != 101) {
        diag("node %d: crdt.v1 upgrade failed", n->id);
        return -1;
    }
    char k64[128], msg[1024];
    snprintf(k64, sizeof(k64), "%s", key); /* the test's keys are plain words: JSON as they are */
    ws_text(&w, "{\"type\":\"hello\",\"client\":\"test-clock\"}");
    char *welcome = ws_wait_type(&w, "welcome", 5000);
    snprintf(msg, sizeof(msg), "{\"type\":\"apply\",\"id\":%llu,\"key\":\"%s\",\"op\":%s}",
             (unsigned long long)wall_ms(), k64, op);
    char *ack = welcome && ws_text(&w, msg) == 0 ? ws_wait_type(&w, "ack", 5000) : NULL;
    json_t *j = ack ? json_loads(ack, 0, NULL) : NULL;
    if (j)
        applied = json_is_true(json_object_get(j, "applied"));
    else
        diag("node %d: no ack for %s", n->id, msg);
    json_decref(j);
    free(welcome);
    free(ack);
    ws_free(&w);
    return applied;
}

/* A value or member as JSON carries it: the test's words are text, so the string itself. */
static void b64(const char *s, char *out)
{
    strcpy(out, s);
}

int main(void)
{
    setvbuf(stdout, NULL, _IONBF, 0);
    const char *lib = getenv("CRDT_LIBFAKETIME") ? getenv("CRDT_LIBFAKETIME") : LIBFAKETIME_DEFAULT;
    /* Not a skip: CI installs faketime (scripts/setup-debian.sh), and a test that silently does
     * nothing when the library is missing would hide the regression it exists for. */
    if (access(lib, R_OK) != 0)
        bail_out("%s is missing: install Debian's faketime package (scripts/setup-debian.sh does) "
                 "or point $CRDT_LIBFAKETIME at libfaketimeMT.so.1",
                 lib);
    tmp = test_tmpdir();
    if (!tmp)
        bail_out("no temporary directory");
    char secret[600];
    snprintf(secret, sizeof(secret), "%s/secret", tmp);
    FILE *f = fopen(secret, "w");
    if (!f)
        bail_out("cannot write %s", secret);
    fputs("the clock test's cluster secret\n", f);
    fclose(f);

    /* A: the real clock; S: 30 s behind, dialling A (deltas flow both ways on the one link). */
    node_t A, S;
    memset(&A, 0, sizeof(A));
    memset(&S, 0, sizeof(S));
    if (node_start(&A, 1, 0, secret, NULL, NULL) || node_start(&S, 2, A.port, secret, lib, "-30s"))
        bail_out("cannot start two crdtd nodes");
    ok(wait_up(&A, 15000) && wait_up(&S, 15000), "the two nodes link up");

    /* libfaketime reaches crdtd's clock (clock_gettime CLOCK_REALTIME in crdt_wall_ms): a write on
     * S before it has seen anything from A is stamped about 30 s in the past. */
    char v[128], w[128], m[128];
    b64("probe", v);
    char op[512];
    snprintf(op, sizeof(op), "{\"type\":\"lwwreg\",\"op\":\"set\",\"value\":\"%s\"}", v);
    is_int(post_op(S.port, "probe", op), 200, "a register write on the slow node");
    uint64_t now = wall_ms(), ts = reg_ts_ms(S.port, "probe");
    ok(ts && ts + 25000 < now && ts + 35000 > now,
       "the slow node's clock is 30 s behind (stamped %lld ms before now)",
       (long long)now - (long long)ts);

    /* Register over REST: A writes, S applies it, then S's own write wins everywhere. */
    b64("from-A", v);
    b64("from-S", w);
    snprintf(op, sizeof(op), "{\"type\":\"lwwreg\",\"op\":\"set\",\"value\":\"%s\"}", v);
    is_int(post_op(A.port, "reg-rest", op), 200, "REST: A sets the register");
    ok(wait_reg(&S, "reg-rest", v, 10000), "REST: the slow node applies A's register");
    snprintf(op, sizeof(op), "{\"type\":\"lwwreg\",\"op\":\"set\",\"value\":\"%s\"}", w);
    is_int(post_op(S.port, "reg-rest", op), 200, "REST: the slow node sets it after that");
    ok(wait_reg(&S, "reg-rest", w, 2000), "REST: the slow node's register write wins there");
    ok(wait_reg(&A, "reg-rest", w, 10000), "REST: ... and on the other node");

    /* LWW-set over REST: A adds, S removes after applying the add. */
    b64("member", m);
    snprintf(op, sizeof(op), "{\"type\":\"lwwset\",\"op\":\"add\",\"member\":\"%s\"}", m);
    is_int(post_op(A.port, "set-rest", op), 200, "REST: A adds a member");
    ok(wait_member(&S, "set-rest", m, 1, 10000), "REST: the slow node applies the add");
    snprintf(op, sizeof(op), "{\"type\":\"lwwset\",\"op\":\"remove\",\"member\":\"%s\"}", m);
    is_int(post_op(S.port, "set-rest", op), 200, "REST: the slow node removes it after that");
    ok(wait_member(&S, "set-rest", m, 0, 2000), "REST: the slow node's remove wins there");
    ok(wait_member(&A, "set-rest", m, 0, 10000), "REST: ... and on the other node");

    /* The same over a crdt.v1 WebSocket session on the slow node. */
    snprintf(op, sizeof(op), "{\"type\":\"lwwreg\",\"op\":\"set\",\"value\":\"%s\"}", v);
    is_int(post_op(A.port, "reg-ws", op), 200, "WS: A sets the register");
    ok(wait_reg(&S, "reg-ws", v, 10000), "WS: the slow node applies A's register");
    snprintf(op, sizeof(op), "{\"type\":\"lwwreg\",\"op\":\"set\",\"value\":\"%s\"}", w);
    is_int(ws_apply(&S, "reg-ws", op), 1, "WS: the slow node's register write is applied");
    ok(wait_reg(&S, "reg-ws", w, 2000), "WS: it wins there");
    ok(wait_reg(&A, "reg-ws", w, 10000), "WS: ... and on the other node");

    snprintf(op, sizeof(op), "{\"type\":\"lwwset\",\"op\":\"add\",\"member\":\"%s\"}", m);
    is_int(post_op(A.port, "set-ws", op), 200, "WS: A adds a member");
    ok(wait_member(&S, "set-ws", m, 1, 10000), "WS: the slow node applies the add");
    snprintf(op, sizeof(op), "{\"type\":\"lwwset\",\"op\":\"remove\",\"member\":\"%s\"}", m);
    is_int(ws_apply(&S, "set-ws", op), 1, "WS: the slow node's remove is applied");
    ok(wait_member(&S, "set-ws", m, 0, 2000), "WS: it wins there");
    ok(wait_member(&A, "set-ws", m, 0, 10000), "WS: ... and on the other node");

    /* 30 s is well within the drift bound: neither node counted a write beyond it. */
    for (int i = 0; i < 2; i++) {
        const node_t *n = i ? &S : &A;
        hc_resp_t r;
        memset(&r, 0, sizeof(r));
        bool zero = hc_request(n->port, "GET", "/metrics", NULL, &r) == 0 && r.body &&
                    strstr(r.body, "\ncrdtd_clock_ahead_total 0\n");
        ok(zero, "node %d: crdtd_clock_ahead_total is 0", n->id);
        hc_resp_free(&r);
    }

    int sa = crdtd_stop(&A.p, SIGTERM, 10000), ss = crdtd_stop(&S.p, SIGTERM, 10000);
    ok(WIFEXITED(sa) && WEXITSTATUS(sa) == 0 && WIFEXITED(ss) && WEXITSTATUS(ss) == 0,
       "both nodes stop cleanly");
    /* Instrumented builds: the nodes' reports land in their stderr (the slow one runs with
     * libfaketime preloaded in front of the sanitizer runtime). */
    for (int i = 0; i < 2; i++) {
        const node_t *n = i ? &S : &A;
        FILE *lf = fopen(n->p.errlog, "r");
        char line[1024];
        int reports = 0;
        while (lf && fgets(line, sizeof(line), lf))
            reports += strstr(line, "Sanitizer") || strstr(line, "runtime error");
        if (lf)
            fclose(lf);
        is_int(reports, 0, "node %d: no sanitizer report in %s", n->id, n->p.errlog);
    }
    int failed = done_testing();
    if (failed) {
        diag("logs kept in %s", tmp);
    } else {
        rm_rf(tmp);
    }
    free(tmp);
    return failed;
}
