/* test_http_durability.c - acknowledged writes survive kill -9; recovery, torn tails, the lock */
#include "tap.h"

#include <dirent.h>
#include <fcntl.h>
#include <jansson.h>
#include <poll.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "http_client.h"

#ifndef CRDTD_BIN
#error "CRDTD_BIN (the crdtd binary) must be defined"
#endif

#define WRITERS 4
#define KEYS 8

static crdtd_proc_t srv;

/* base64url of "k<n>" for the URL (/v1/keys64/), members "w<writer>-<i>" as text */
static void key_url(int k, char *out, size_t n)
{
    static const char a[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    char key[8];
    int len = snprintf(key, sizeof(key), "k%d", k); /* 2 bytes: "k0".."k7" */
    unsigned v = (unsigned char)key[0] << 16 | (unsigned char)key[1] << 8;
    (void)len;
    snprintf(out, n, "%c%c%c", a[v >> 18], a[(v >> 12) & 63], a[(v >> 6) & 63]);
}

/* A member as JSON carries it: "w<id>-<i>" is text, so the string itself. */
static void b64(const char *s, char *o)
{
    strcpy(o, s);
}

/* A writer process: adds member "w<id>-<i>" to timeline k<i % KEYS> over one keep-alive
 * connection until the server goes away; after each 200 it reports i on the pipe. */
static void writer(int id, int port, int out)
{
    int fd = hc_connect(port);
    for (int i = 0; fd >= 0; i++) {
        char m[32], mb[64], body[160], path[64], ku[8];
        snprintf(m, sizeof(m), "w%d-%d", id, i);
        b64(m, mb);
        key_url(i % KEYS, ku, sizeof(ku));
        snprintf(path, sizeof(path), "/v1/keys64/%s", ku);
        int n = snprintf(body, sizeof(body),
                         "{\"type\":\"timeline\",\"op\":\"add\",\"member\":\"%s\",\"score\":%d}",
                         mb, i);
        hc_resp_t r;
        if (hc_send(fd, "POST", path, "", body, (size_t)n, &r) || r.status != 200) {
            hc_resp_free(&r);
            break;
        }
        hc_resp_free(&r);
        char line[32];
        int len = snprintf(line, sizeof(line), "%d %d\n", id, i);
        if (write(out, line, (size_t)len) != len)
            break;
    }
    _exit(0);
}

/* Reads every member of timeline k into a set keyed by "w<id>-<i>" (marks acked[id][i]). */
static int collect(int k, unsigned char **present, int cap)
{
    char ku[8], path[160];
    key_url(k, ku, sizeof(ku));
    int total = 0;
    for (int offset = 0;; offset += 10000) {
        snprintf(path, sizeof(path), "/v1/keys64/%s/timeline?offset=%d&limit=10000", ku, offset);
        hc_resp_t r;
        if (hc_request(srv.port, "GET", path, NULL, &r) || r.status != 200) {
            hc_resp_free(&r);
            return -1;
        }
        json_t *j = json_loadb(r.body, r.body_len, 0, NULL);
        hc_resp_free(&r);
        json_t *es = json_object_get(j, "entries");
        size_t n = json_array_size(es);
        for (size_t i = 0; i < n; i++) {
            const char *mb = json_string_value(json_object_get(json_array_get(es, i), "member"));
            /* "w<id>-<i>", text: the member as it was written */
            int id, idx;
            if (mb && sscanf(mb, "w%d-%d", &id, &idx) == 2 && id >= 0 && id < WRITERS && idx >= 0 &&
                idx < cap)
                present[id][idx] = 1;
            total++;
        }
        json_decref(j);
        if (n < 10000)
            break;
    }
    return total;
}

static void test_kill9_while_writing(const char *dir, const char *data)
{
    const char *args[] = {
        "--data-dir",           data,   "--fsync", "always", "--timeline-max-size", "0",
        "--snapshot-log-bytes", "256K", NULL};
    if (crdtd_start(&srv, CRDTD_BIN, dir, args)) {
        ok(0, "crdtd --fsync always starts");
        return;
    }
    int pfd[2];
    if (pipe(pfd)) {
        ok(0, "pipe");
        return;
    }
    pid_t kids[WRITERS];
    for (int w = 0; w < WRITERS; w++) {
        kids[w] = fork();
        if (kids[w] == 0) {
            close(pfd[0]);
            writer(w, srv.port, pfd[1]);
        }
    }
    close(pfd[1]);
    /* collect acknowledgements for ~1.5 s, then kill -9 the server mid-stream */
    enum { CAP = 200000 };
    unsigned char *acked[WRITERS], *present[WRITERS];
    for (int w = 0; w < WRITERS; w++) {
        acked[w] = calloc(CAP, 1);
        present[w] = calloc(CAP, 1);
    }
    FILE *in = fdopen(pfd[0], "r");
    struct timespec t0, t;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    int nacked = 0;
    char line[64];
    bool killed = false;
    for (;;) {
        clock_gettime(CLOCK_MONOTONIC, &t);
        double el = (double)(t.tv_sec - t0.tv_sec) + (double)(t.tv_nsec - t0.tv_nsec) / 1e9;
        if (!killed && el > 1.5) {
            kill(srv.pid, SIGKILL);
            killed = true;
        }
        if (el > 20)
            break; /* bounded, whatever happens */
        struct pollfd p = {pfd[0], POLLIN, 0};
        if (poll(&p, 1, 100) <= 0)
            continue;
        if (!fgets(line, sizeof(line), in))
            break; /* every writer exited */
        int id, idx;
        if (sscanf(line, "%d %d", &id, &idx) == 2 && id >= 0 && id < WRITERS && idx >= 0 &&
            idx < CAP) {
            acked[id][idx] = 1;
            nacked++;
        }
    }
    fclose(in);
    for (int w = 0; w < WRITERS; w++)
        waitpid(kids[w], NULL, 0);
    int st;
    waitpid(srv.pid, &st, 0);
    srv.pid = 0;
    ok(WIFSIGNALED(st) && WTERMSIG(st) == SIGKILL, "crdtd was killed with SIGKILL mid-write");
    ok(nacked > 100, "%d writes were acknowledged before the kill", nacked);

    if (crdtd_start(&srv, CRDTD_BIN, dir, args)) {
        ok(0, "restart after kill -9");
        goto out;
    }
    ok(1, "restart after kill -9");
    int total = 0;
    for (int k = 0; k < KEYS; k++) {
        int n = collect(k, present, CAP);
        if (n >= 0)
            total += n;
    }
    int missing = 0;
    for (int w = 0; w < WRITERS; w++)
        for (int i = 0; i < CAP; i++)
            if (acked[w][i] && !present[w][i]) {
                if (missing++ < 5)
                    diag("acknowledged write w%d-%d is missing", w, i);
            }
    is_int(missing, 0, "every acknowledged write is present after recovery");
    cmp_ok(total, ">=", nacked, "recovered %d entries for %d acknowledged writes", total, nacked);
    cmp_ok(total, "<=", nacked + WRITERS, "and at most one unacknowledged write per writer");
    crdtd_stop(&srv, SIGTERM, 10000);
out:
    for (int w = 0; w < WRITERS; w++) {
        free(acked[w]);
        free(present[w]);
    }
}

/* All keys' binary states, from the change feed (compacted, one entry per key), as a JSON
 * object key -> binary; compared as a canonical dump. */
static char *dump_state(void)
{
    json_t *all = json_object();
    for (int since = 0, guard = 0; guard < 100; guard++) {
        char path[96];
        snprintf(path, sizeof(path), "/v1/changes?since=%d&limit=1000&state=0", since);
        hc_resp_t r;
        if (hc_request(srv.port, "GET", path, NULL, &r) || r.status != 200) {
            hc_resp_free(&r);
            break;
        }
        json_t *j = json_loadb(r.body, r.body_len, 0, NULL);
        hc_resp_free(&r);
        json_t *ch = json_object_get(j, "changes");
        for (size_t i = 0; i < json_array_size(ch); i++) {
            const char *key = json_string_value(json_object_get(json_array_get(ch, i), "key"));
            /* the test's keys are text: the feed gives them as strings, the path as they are */
            char kpath[300];
            snprintf(kpath, sizeof(kpath), "/v1/keys/%s", hc_pct(key ? key : ""));
            hc_resp_t kr;
            if (hc_request(srv.port, "GET", kpath, NULL, &kr) == 0 && kr.status == 200) {
                json_t *kj = json_loadb(kr.body, kr.body_len, 0, NULL);
                json_object_set(all, key, json_object_get(kj, "binary"));
                json_decref(kj);
            }
            hc_resp_free(&kr);
        }
        int next = (int)json_integer_value(json_object_get(j, "next"));
        size_t n = json_array_size(ch);
        json_decref(j);
        if (!n)
            break;
        since = next;
    }
    char *s = json_dumps(all, JSON_COMPACT | JSON_SORT_KEYS);
    json_decref(all);
    return s;
}

static int count_files(const char *data, const char *prefix)
{
    DIR *d = opendir(data);
    int n = 0;
    struct dirent *e;
    while (d && (e = readdir(d)))
        n += !strncmp(e->d_name, prefix, strlen(prefix));
    if (d)
        closedir(d);
    return n;
}

static void test_snapshot_replay(const char *dir, const char *data)
{
    const char *args[] = {"--data-dir",           data,  "--fsync", "everysec",
                          "--snapshot-log-bytes", "16K", NULL};
    if (crdtd_start(&srv, CRDTD_BIN, dir, args)) {
        ok(0, "crdtd starts for the snapshot test");
        return;
    }
    /* enough mixed writes to pass the snapshot threshold a few times */
    int fd = hc_connect(srv.port);
    int good = 0;
    for (int i = 0; i < 3000; i++) {
        char path[96], body[200], key[32], kb[64];
        const char *kinds[] = {"snap-c", "snap-tl", "snap-s"};
        int k = i % 3;
        snprintf(key, sizeof(key), "%s%d", kinds[k], i % 7);
        snprintf(kb, sizeof(kb), "%s", key); /* text: the path as it is */
        snprintf(path, sizeof(path), "/v1/keys/%s", kb);
        int n =
            k == 0 ? snprintf(body, sizeof(body),
                              "{\"type\":\"pncounter\",\"op\":\"incr\",\"by\":%d}", i)
            : k == 1
                ? snprintf(body, sizeof(body),
                           "{\"type\":\"timeline\",\"op\":\"add\",\"member\":\"%s\",\"score\":%d}",
                           i % 2 ? "YWFh" : "YmJi", i)
                : snprintf(body, sizeof(body),
                           "{\"type\":\"orset\",\"op\":\"%s\",\"member\":\"%s\"}",
                           i % 5 ? "add" : "remove", i % 2 ? "eA==" : "eQ==");
        hc_resp_t r;
        if (fd >= 0 && hc_send(fd, "POST", path, "", body, (size_t)n, &r) == 0 && r.status == 200)
            good++;
        else if (good + 5 > i) /* the first few failures say why */
            diag("write %d: %d %s", i, r.status, r.body ? r.body : "(no response)");
        hc_resp_free(&r);
    }
    if (fd >= 0)
        close(fd);
    is_int(good, 3000, "3000 mixed writes acknowledged");
    /* let the background snapshot finish and the everysec fsync pass */
    usleep(1500 * 1000);
    hc_resp_t r;
    hc_request(srv.port, "GET", "/metrics", NULL, &r);
    const char *sn = r.body ? strstr(r.body, "\ncrdtd_snapshots_total ") : NULL;
    ok(sn && atoi(sn + strlen("\ncrdtd_snapshots_total ")) > 0, "at least one snapshot was taken");
    hc_resp_free(&r);
    ok(count_files(data, "snapshot") >= 1, "a snapshot file exists");
    char *before = dump_state();
    kill(srv.pid, SIGKILL);
    waitpid(srv.pid, NULL, 0);
    srv.pid = 0;
    if (crdtd_start(&srv, CRDTD_BIN, dir, args)) {
        ok(0, "restart from snapshot + log");
        free(before);
        return;
    }
    char *after = dump_state();
    ok(before && after && strlen(before) > 100, "state captured (%zu bytes)",
       before ? strlen(before) : 0);
    ok(before && after && !strcmp(before, after),
       "snapshot + log replay equals the pre-crash state");
    free(after);

    /* a torn tail: garbage appended to the newest log is dropped, the rest recovered */
    kill(srv.pid, SIGKILL);
    waitpid(srv.pid, NULL, 0);
    srv.pid = 0;
    DIR *d = opendir(data);
    char newest[300] = "";
    struct dirent *e;
    while (d && (e = readdir(d)))
        if (!strncmp(e->d_name, "log-", 4) && strlen(e->d_name) == 24 &&
            strcmp(e->d_name, newest) > 0)
            snprintf(newest, sizeof(newest), "%s", e->d_name);
    if (d)
        closedir(d);
    char logpath[1000];
    snprintf(logpath, sizeof(logpath), "%s/%s", data, newest);
    int lfd = open(logpath, O_WRONLY | O_APPEND);
    ok(newest[0] && lfd >= 0, "found the log %s", newest);
    if (lfd >= 0) {
        (void)!write(lfd, "\x07torn-record-garbage", 20);
        close(lfd);
    }
    if (crdtd_start(&srv, CRDTD_BIN, dir, args)) {
        ok(0, "restart with a torn log tail");
        free(before);
        return;
    }
    ok(1, "restart with a torn log tail");
    after = dump_state();
    ok(before && after && !strcmp(before, after), "same state after dropping the torn tail");
    free(after);
    FILE *f = fopen(srv.errlog, "r");
    char line[512];
    bool reported = false;
    while (f && fgets(line, sizeof(line), f))
        reported |= strstr(line, "dropped") != NULL;
    if (f)
        fclose(f);
    ok(reported, "the dropped tail is reported on stderr");

    /* a second crdtd on the same data directory is refused */
    char errf[600];
    snprintf(errf, sizeof(errf), "%s/second.err", dir);
    const char *second[] = {"--data-dir", data, "--listen", "127.0.0.1:0", NULL};
    int st = crdtd_run(CRDTD_BIN, second, errf, 5000);
    ok(WIFEXITED(st) && WEXITSTATUS(st) != 0, "a second crdtd on the same data dir exits non-zero");
    f = fopen(errf, "r");
    line[0] = '\0';
    bool clear = false;
    while (f && fgets(line, sizeof(line), f))
        clear |= strstr(line, "locked") != NULL;
    if (f)
        fclose(f);
    ok(clear, "with a clear message (locked by another process)");
    ok(hc_request(srv.port, "GET", "/healthz", NULL, &r) == 0 && r.status == 200,
       "the first one keeps serving");
    hc_resp_free(&r);

    /* SIGTERM: exit 0, the data is there after restart */
    hc_request(srv.port, "POST", "/v1/keys64/bGFzdA",
               "{\"type\":\"gcounter\",\"op\":\"incr\",\"by\":42}", &r);
    is_int(r.status, 200, "a last write");
    hc_resp_free(&r);
    st = crdtd_stop(&srv, SIGTERM, 10000);
    ok(WIFEXITED(st) && WEXITSTATUS(st) == 0, "SIGTERM: exit 0");
    if (crdtd_start(&srv, CRDTD_BIN, dir, args) == 0) {
        hc_request(srv.port, "GET", "/v1/keys64/bGFzdA", NULL, &r);
        json_t *j = json_loadb(r.body ? r.body : "", r.body_len, 0, NULL);
        is_int((int)json_integer_value(json_object_get(j, "value")), 42,
               "the last write survived SIGTERM + restart");
        json_decref(j);
        hc_resp_free(&r);
        crdtd_stop(&srv, SIGTERM, 10000);
    } else {
        ok(0, "restart after SIGTERM");
    }
    free(before);
}

int main(void)
{
    signal(SIGPIPE, SIG_IGN);
    char *dir = test_tmpdir();
    if (!dir)
        skip_all("no temporary directory");
    char data1[600], data2[600];
    snprintf(data1, sizeof(data1), "%s/kill9", dir);
    snprintf(data2, sizeof(data2), "%s/snap", dir);
    test_kill9_while_writing(dir, data1);
    if (srv.pid)
        crdtd_stop(&srv, SIGKILL, 5000);
    test_snapshot_replay(dir, data2);
    if (srv.pid)
        crdtd_stop(&srv, SIGKILL, 5000);
    rm_rf(dir);
    free(dir);
    return done_testing();
}
