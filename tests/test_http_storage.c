/* test_http_storage.c - crdtd after a real log write failure: 503 for writes, reads keep working */
#include "tap.h"

#include <jansson.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "http_client.h"

#ifndef CRDTD_BIN
#error "CRDTD_BIN (the crdtd binary) must be defined"
#endif

/* The log may grow to this many bytes; each write below logs a bit over VALUE_LEN bytes, so the
 * failure comes after a few dozen acknowledged writes. */
#define FSIZE_LIMIT (48 * 1024)
#define VALUE_LEN 700
#define MAX_WRITES 400

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

/* base64 (standard, or url-safe unpadded when url) of s into o */
static void b64(const char *s, char *o, bool url)
{
    hc_b64(s, o, url);
}

static void key_path(int i, char *out, size_t n)
{
    char k[32], ku[64];
    snprintf(k, sizeof(k), "k%d", i);
    b64(k, ku, true);
    snprintf(out, n, "/v1/keys64/%s", ku);
}

/* The base64 value write i stores: "v<i>-" then padding, distinct per write. */
static void value_b64(int i, char *out)
{
    char v[VALUE_LEN + 1];
    int n = snprintf(v, sizeof(v), "v%d-", i);
    memset(v + n, 'a' + i % 26, (size_t)(VALUE_LEN - n));
    v[VALUE_LEN] = '\0';
    b64(v, out, false);
}

static int write_key(int i)
{
    char path[96], vb[VALUE_LEN * 2], body[VALUE_LEN * 2 + 64];
    key_path(i, path, sizeof(path));
    value_b64(i, vb);
    snprintf(body, sizeof(body), "{\"type\":\"lwwreg\",\"op\":\"set\",\"value\":\"%s\"}", vb);
    return req("POST", path, body);
}

/* GET key i: 1 when it answers 200 with exactly write i's value. */
static bool read_key_ok(int i)
{
    char path[96], vb[VALUE_LEN * 2];
    key_path(i, path, sizeof(path));
    value_b64(i, vb);
    return req("GET", path, NULL) == 200 && !strcmp(jstr("value"), vb);
}

/* A 503 whose body is our JSON error: {"error": non-empty message, "code": 503, ...}. */
static bool is_json_503(void)
{
    json_t *c = J ? json_object_get(J, "code") : NULL;
    return R.status == 503 && json_is_object(J) && strlen(jstr("error")) > 0 &&
           json_is_integer(c) && json_integer_value(c) == 503;
}

/* Shows crdtd's stderr lines about the failure and the recovery, for whoever reads the log. */
static void diag_errlog(void)
{
    FILE *f = fopen(srv.errlog, "r");
    char line[512];
    while (f && fgets(line, sizeof(line), f))
        if (strstr(line, "failure") || strstr(line, "refusing") || strstr(line, "dropped"))
            diag("crdtd: %.*s", (int)strcspn(line, "\n"), line);
    if (f)
        fclose(f);
}

static bool metrics_has(const char *line)
{
    if (req("GET", "/metrics", NULL) != 200 || !R.body)
        return false;
    for (const char *p = R.body; (p = strstr(p, line)); p++)
        if ((p == R.body || p[-1] == '\n') && (p[strlen(line)] == '\n' || !p[strlen(line)]))
            return true;
    return false;
}

/* Starts crdtd with RLIMIT_FSIZE lowered (inherited through fork and exec) and SIGXFSZ ignored
 * (an ignored disposition survives exec), so its log write() fails with EFBIG at the limit, as
 * on a full disk. Only the soft limit changes, so this process can raise it again. */
static int start_limited(const char *dir, const char *const *args)
{
    struct rlimit old, lim;
    if (getrlimit(RLIMIT_FSIZE, &old))
        return -1;
    lim = old;
    lim.rlim_cur = FSIZE_LIMIT;
    void (*prev)(int) = signal(SIGXFSZ, SIG_IGN);
    if (setrlimit(RLIMIT_FSIZE, &lim)) {
        signal(SIGXFSZ, prev);
        return -1;
    }
    int rc = crdtd_start(&srv, CRDTD_BIN, dir, args);
    setrlimit(RLIMIT_FSIZE, &old);
    signal(SIGXFSZ, prev);
    return rc;
}

/* One server life under the limit and one after, with fsync policy `policy` (always: an ack
 * waits for write + fdatasync of its record; everysec: for the write, fsync in the background). */
static void run(const char *dir, const char *policy)
{
    char sub[600], data[700];
    snprintf(sub, sizeof(sub), "%s/%s", dir, policy); /* its own stderr log too */
    snprintf(data, sizeof(data), "%s/data", sub);
    if (mkdir(sub, 0700)) {
        ok(0, "mkdir %s", sub);
        return;
    }
    const char *args[] = {"--data-dir", data, "--fsync", policy, "--snapshot-log-bytes", "0", NULL};
    diag("--fsync %s", policy);
    if (start_limited(sub, args)) {
        ok(0, "crdtd starts under RLIMIT_FSIZE %d", FSIZE_LIMIT);
        return;
    }
    is_int(req("GET", "/healthz", NULL), 200, "healthy before the failure");
    ok(metrics_has("crdtd_storage_healthy 1"), "/metrics: crdtd_storage_healthy 1 before");

    /* write new keys until one is refused */
    int acked = 0, first_fail_status = -1;
    bool fail_json = false;
    for (int i = 0; i < MAX_WRITES; i++) {
        int st = write_key(i);
        if (st == 200) {
            acked++;
            continue;
        }
        first_fail_status = st;
        fail_json = is_json_503();
        diag("write %d answered %d: %.*s", i, st, (int)strcspn(R.body ? R.body : "", "\n"),
             R.body ? R.body : "");
        break;
    }
    cmp_ok(acked, ">=", 10, "%d writes acknowledged before the log hit the size limit", acked);
    ok(acked < MAX_WRITES, "a write failed within %d writes", MAX_WRITES);
    is_int(first_fail_status, 503, "the write that hit the failure is answered 503, not 200");
    ok(fail_json, "... with a JSON error carrying a message and code 503");

    /* later writes: a new key, an acknowledged key, another type */
    is_int(write_key(acked + 1), 503, "a later write to a new key: 503");
    ok(is_json_503(), "... with a JSON error");
    is_int(write_key(0), 503, "a later write to an acknowledged key: 503");
    ok(is_json_503(), "... with a JSON error");
    char cpath[96];
    key_path(MAX_WRITES + 1, cpath, sizeof(cpath));
    is_int(req("POST", cpath, "{\"type\":\"gcounter\",\"op\":\"incr\",\"by\":1}"), 503,
           "a later counter increment: 503");
    ok(is_json_503(), "... with a JSON error");
    ok(strstr(jstr("error"), "storage") != NULL, "the error message names the storage failure");

    /* reads keep working */
    int good = 0;
    for (int i = 0; i < acked; i++)
        good += read_key_ok(i);
    is_int(good, acked, "all %d acknowledged keys read back with their values", acked);
    is_int(req("GET", "/healthz", NULL), 503, "/healthz: 503 after the failure");
    is(jstr("status"), "failing", "/healthz: status failing");
    ok(strlen(jstr("error")) > 0, "/healthz: carries the error: %s", jstr("error"));
    ok(metrics_has("crdtd_storage_healthy 0"), "/metrics: crdtd_storage_healthy 0");
    ok(read_key_ok(0), "still serving reads after /healthz and /metrics");
    /* the refused write stays applied in memory until restart (http.c release_pending) */
    diag("GET of the refused write's key: %d", read_key_ok(acked) ? 200 : R.status);

    int st = crdtd_stop(&srv, SIGTERM, 10000);
    ok(st != -1 && WIFEXITED(st) && WEXITSTATUS(st) == 0, "SIGTERM: clean exit (status %d)", st);
    srv.pid = 0;

    /* restart without the limit: every acknowledged write is there, and writes work again */
    if (crdtd_start(&srv, CRDTD_BIN, sub, args)) {
        ok(0, "restart without the limit");
        return;
    }
    good = 0;
    for (int i = 0; i < acked; i++)
        good += read_key_ok(i);
    is_int(good, acked, "after restart all %d acknowledged writes are present", acked);
    is_int(req("GET", "/healthz", NULL), 200, "after restart /healthz is 200");
    is(jstr("status"), "ok", "... status ok");
    is_int(write_key(MAX_WRITES + 2), 200, "after restart writes are acknowledged again");
    ok(read_key_ok(MAX_WRITES + 2), "... and readable");
    ok(metrics_has("crdtd_storage_healthy 1"), "/metrics: crdtd_storage_healthy 1 after restart");
    st = crdtd_stop(&srv, SIGTERM, 10000);
    ok(st != -1 && WIFEXITED(st) && WEXITSTATUS(st) == 0, "SIGTERM after restart: clean exit");
    diag_errlog();
    srv.pid = 0;
}

int main(void)
{
    signal(SIGPIPE, SIG_IGN);
    char *dir = test_tmpdir();
    if (!dir)
        skip_all("no temporary directory");
    run(dir, "always");
    if (srv.pid)
        crdtd_stop(&srv, SIGKILL, 5000);
    srv.pid = 0;
    run(dir, "everysec");
    if (srv.pid)
        crdtd_stop(&srv, SIGKILL, 5000);
    hc_resp_free(&R);
    json_decref(J);
    rm_rf(dir);
    free(dir);
    return done_testing();
}
