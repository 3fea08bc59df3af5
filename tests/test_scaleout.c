/* test_scaleout.c - crdtd --store redis:// as processes: two gateways over a real Redis Cluster
 * (three primaries, three replicas) and one over a second Redis (another site)
 *
 * Writers of every type (cluster_helper.c's, which record what was acknowledged) run through all
 * three gateways while a primary is killed (and rejoins), a gateway is killed and restarted and the
 * second site's Redis is killed and restarted. Checked: the flags are validated before anything
 * opens; /healthz says 503 with the store's reason while Redis or a slot is down and 200 again
 * after; writes fail fast with 503 meanwhile; the two gateways of the cluster serve byte-identical
 * keys; no acknowledged write is lost on either site; the roshi listener reads and writes through
 * the store. Peer links between sites over Redis: test_redis_aa.c.
 */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <jansson.h>

#include "cluster_helper.h"
#include "http_client.h"
#include "ws_raw.h"
#include "redis_cluster_helper.h"
#include "redis_helper.h"
#include "tap.h"

static char *tmp;

/* GET /healthz: its status code, and its "error" text (if any) in err. */
static int healthz(int port, char *err, size_t n)
{
    hc_resp_t r;
    if (err && n)
        err[0] = '\0';
    if (hc_request(port, "GET", "/healthz", NULL, &r) != 0) {
        hc_resp_free(&r);
        return 0;
    }
    int st = r.status;
    json_t *j = json_loads(r.body, 0, NULL);
    const char *e = j ? json_string_value(json_object_get(j, "error")) : NULL;
    if (e && err)
        snprintf(err, n, "%s", e);
    json_decref(j);
    hc_resp_free(&r);
    return st;
}

/* Polls /healthz until it answers `want`, at most ms; the ms it took or -1. */
static long wait_health(int port, int want, long ms)
{
    uint64_t t0 = cl_now_ms();
    while ((long)(cl_now_ms() - t0) <= ms) {
        if (healthz(port, NULL, 0) == want)
            return (long)(cl_now_ms() - t0);
        rh_sleep_ms(50);
    }
    return -1;
}

/* wait: --redis-wait, "1" over the cluster (a write is acknowledged once a replica has it), "0"
 * on the second site (one server, AOF with fsync always) */
static int start_gateway(crdtd_proc_t *p, const char *url, const char *node_id, const char *wait)
{
    const char *args[] = {"--store",
                          url,
                          "--node-id",
                          node_id,
                          "--redis-wait",
                          wait,
                          "--redis-wait-timeout-ms",
                          "300",
                          "--redis-timeout-ms",
                          "500",
                          "--roshi-listen",
                          "127.0.0.1:0",
                          NULL};
    return crdtd_start(p, CRDTD_BIN, tmp, args);
}

static void flags_checked(void)
{
    char dd[600], errf[600];
    snprintf(dd, sizeof(dd), "%s/never", tmp);
    snprintf(errf, sizeof(errf), "%s/flags.err", tmp);
    struct {
        const char *store, *extra, *want;
    } bad[] = {
        {"redis://", NULL, "redis://"},
        {"redis://127.0.0.1:0", NULL, "port"},
        {"http://127.0.0.1:6379", NULL, "expected redis://"},
        {"redis://127.0.0.1:6379", "ws://127.0.0.1:9", "--peer"},
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        const char *args[] = {"--store",
                              bad[i].store,
                              "--data-dir",
                              dd,
                              "--listen",
                              "127.0.0.1:0",
                              bad[i].extra ? "--peer" : NULL,
                              bad[i].extra,
                              NULL};
        int st = crdtd_run(CRDTD_BIN, args, errf, 5000);
        char text[512] = "";
        FILE *f = fopen(errf, "r");
        if (f) {
            size_t n = fread(text, 1, sizeof(text) - 1, f);
            text[n] = '\0';
            fclose(f);
        }
        char *nl = strchr(text, '\n');
        if (nl)
            *nl = '\0';
        struct stat sb;
        ok(WIFEXITED(st) && WEXITSTATUS(st) == 2 && strstr(text, bad[i].want) && stat(dd, &sb) != 0,
           "--store %s%s%s: exit 2 before any data dir: %s", bad[i].store,
           bad[i].extra ? " --peer " : "", bad[i].extra ? bad[i].extra : "", text);
    }
}

/* The roshi listener of one gateway writes, the other's reads the same entry. */
static void roshi_through_store(int port_a, int port_b)
{
    char key[16], mem[16];
    hc_b64("roshi-k", key, false);
    hc_b64("m1", mem, false);
    char body[256];
    snprintf(body, sizeof(body), "[{\"key\":\"%s\",\"score\":7.5,\"member\":\"%s\"}]", key, mem);
    hc_resp_t r;
    int rc = hc_request(port_a, "POST", "/", body, &r);
    ok(rc == 0 && r.status == 200 && strstr(r.body, "\"inserted\":1"),
       "roshi insert through gateway A: %d %s", r.status, r.body ? r.body : "");
    hc_resp_free(&r);
    snprintf(body, sizeof(body), "[\"%s\"]", key);
    int fd = hc_connect(port_b);
    rc = fd >= 0 ? hc_send(fd, "GET", "/?offset=0&limit=10", "", body, strlen(body), &r) : -1;
    ok(rc == 0 && r.status == 200 && strstr(r.body, mem) && strstr(r.body, "7.5"),
       "roshi select through gateway B sees it: %d %s", r.status, r.body ? r.body : "");
    hc_resp_free(&r);
    if (fd >= 0)
        close(fd);
}

/* roshi's insert and delete are all-or-nothing over their tuples: ten tuples, the seventh on a
 * key that holds a G-counter, answer 409 naming it and store nothing on any key (over one Redis:
 * one CRDT.TLMADD; over the cluster: the keys span several slots, so their types are checked
 * before any slot is written). `tag` keeps the keys apart between gateways. */
static void roshi_all_or_nothing(int port, int roshi_port, const char *tag)
{
    char ctr[32], path[64];
    snprintf(ctr, sizeof(ctr), "ro:%s:ctr", tag);
    snprintf(path, sizeof(path), "/v1/keys/%s", ctr);
    hc_resp_t r;
    int rc = hc_request(port, "POST", path, "{\"type\":\"gcounter\",\"op\":\"incr\"}", &r);
    ok(rc == 0 && r.status == 200, "%s: a G-counter at %s", tag, ctr);
    hc_resp_free(&r);
    for (int del = 0; del < 2; del++) {
        char body[2048], sel[1024];
        size_t at = 0, sat = 0;
        at += (size_t)snprintf(body, sizeof(body), "[");
        sat += (size_t)snprintf(sel, sizeof(sel), "[");
        for (int i = 0; i < 10; i++) {
            char k[32];
            if (i == 6)
                snprintf(k, sizeof(k), "%s", ctr);
            else
                snprintf(k, sizeof(k), "ro:%s:%d", tag, i);
            at += (size_t)snprintf(body + at, sizeof(body) - at,
                                   "%s{\"key\":\"%s\",\"score\":%d,\"member\":\"%s\"}",
                                   i ? "," : "", hc_b64s(k, false), i + 1, hc_b64s("m", false));
            if (i != 6)
                sat += (size_t)snprintf(sel + sat, sizeof(sel) - sat, "%s\"%s\"",
                                        sat > 1 ? "," : "", hc_b64s(k, false));
        }
        snprintf(body + at, sizeof(body) - at, "]");
        snprintf(sel + sat, sizeof(sel) - sat, "]");
        rc = hc_request(roshi_port, del ? "DELETE" : "POST", "/", body, &r);
        ok(rc == 0 && r.status == 409 && r.body &&
               strstr(r.body, "[6].key holds type gcounter, not timeline"),
           "%s: a roshi %s of 10 tuples, the 7th on the G-counter: 409 naming it: %d %s", tag,
           del ? "delete" : "insert", r.status, r.body ? r.body : "");
        hc_resp_free(&r);
        int fd = hc_connect(roshi_port);
        rc = fd >= 0 ? hc_send(fd, "GET", "/?limit=10", "", sel, strlen(sel), &r) : -1;
        /* every key's list is empty (insert), or no doomstone hides a later add (delete) */
        ok(rc == 0 && r.status == 200 && r.body && !strstr(r.body, "\"score\""),
           "%s: none of the 9 other keys got an entry: %d %s", tag, r.status, r.body ? r.body : "");
        hc_resp_free(&r);
        if (fd >= 0)
            close(fd);
        if (del) {
            /* a delete that went through would have left doomstones at scores 1..10 */
            char k0[32];
            snprintf(k0, sizeof(k0), "ro:%s:0", tag);
            snprintf(body, sizeof(body), "[{\"key\":\"%s\",\"score\":1,\"member\":\"%s\"}]",
                     hc_b64s(k0, false), hc_b64s("m", false));
            rc = hc_request(roshi_port, "POST", "/", body, &r);
            hc_resp_free(&r);
            snprintf(sel, sizeof(sel), "[\"%s\"]", hc_b64s(k0, false));
            fd = hc_connect(roshi_port);
            rc = fd >= 0 ? hc_send(fd, "GET", "/?limit=10", "", sel, strlen(sel), &r) : -1;
            ok(rc == 0 && r.status == 200 && r.body && strstr(r.body, "\"score\":1"),
               "%s: an insert at the refused delete's score is not blocked by a doomstone: %s", tag,
               r.body ? r.body : "");
            hc_resp_free(&r);
            if (fd >= 0)
                close(fd);
        }
    }
}

static long long cmd_calls(rh_server_t *srv, const char *cmd)
{
    redisReply *r = rh_cmd(srv, "INFO commandstats");
    long long v = 0;
    char field[64];
    snprintf(field, sizeof(field), "cmdstat_%s:calls=", cmd);
    const char *p = r && r->type == REDIS_REPLY_STRING ? strstr(r->str, field) : NULL;
    if (p)
        v = strtoll(p + strlen(field), NULL, 10);
    if (r)
        freeReplyObject(r);
    return v;
}

/* Over one Redis an insert is one CRDT.TLMADD, checked and written there: no CRDT.TYPE or
 * CRDT.TLADD per tuple; a native Redis key among the tuples is a 409 naming it. */
static void roshi_one_command(int roshi_port, rh_server_t *srv)
{
    long long m0 = cmd_calls(srv, "crdt.tlmadd"),
              t0 = cmd_calls(srv, "crdt.type") + cmd_calls(srv, "crdt.tladd");
    char body[1024];
    size_t at = (size_t)snprintf(body, sizeof(body), "[");
    for (int i = 0; i < 10; i++) {
        char k[32];
        snprintf(k, sizeof(k), "one:%d", i);
        at += (size_t)snprintf(body + at, sizeof(body) - at,
                               "%s{\"key\":\"%s\",\"score\":%d,\"member\":\"%s\"}",
                               i ? "," : "", hc_b64s(k, false), i + 1, hc_b64s("m", false));
    }
    snprintf(body + at, sizeof(body) - at, "]");
    hc_resp_t r;
    int rc = hc_request(roshi_port, "POST", "/", body, &r);
    ok(rc == 0 && r.status == 200 && strstr(r.body, "\"inserted\":10") &&
           cmd_calls(srv, "crdt.tlmadd") == m0 + 1 &&
           cmd_calls(srv, "crdt.type") + cmd_calls(srv, "crdt.tladd") == t0,
       "a 10-tuple insert over one Redis is one CRDT.TLMADD, no CRDT.TYPE or TLADD: %d %s",
       r.status, r.body ? r.body : "");
    hc_resp_free(&r);
    freeReplyObject(rh_cmd(srv, "SET one:native x"));
    snprintf(body, sizeof(body),
             "[{\"key\":\"%s\",\"score\":1,\"member\":\"%s\"},"
             "{\"key\":\"%s\",\"score\":1,\"member\":\"%s\"}]",
             hc_b64s("one:new", false), hc_b64s("m", false), hc_b64s("one:native", false),
             hc_b64s("m", false));
    rc = hc_request(roshi_port, "POST", "/", body, &r);
    ok(rc == 0 && r.status == 409 && r.body &&
           strstr(r.body, "[1].key holds a value that is not a CRDT, not timeline") &&
           rh_int(rh_cmd(srv, "EXISTS one:new")) == 0,
       "a native Redis key second: 409 naming it, the first key not written: %d %s", r.status,
       r.body ? r.body : "");
    hc_resp_free(&r);
}

/* A WebSocket subscriber of gateway B gets a write made through gateway A's REST API: the
 * change reaches every gateway's sessions through the per-slot change logs. */
static void ws_fanout(int port_a, int port_b)
{
    ws_raw_t w;
    int st = ws_open(&w, port_b, "crdt.v1");
    ok(st == 101, "a crdt.v1 session on gateway B (%d)", st);
    if (st != 101) {
        ws_free(&w);
        return;
    }
    ws_text(&w, "{\"type\":\"hello\",\"client\":\"fanout\",\"cursor\":0}");
    char *m = ws_wait_type(&w, "welcome", 5000);
    ok(m != NULL, "welcome from gateway B");
    free(m);
    const char *key = "fan:1"; /* text: the JSON string itself */
    char sub[128];
    snprintf(sub, sizeof(sub), "{\"type\":\"subscribe\",\"id\":1,\"keys\":[\"%s\"]}", key);
    ws_text(&w, sub);
    m = ws_wait_type(&w, "subscribed", 5000);
    ok(m != NULL, "subscribed to fan:1 on gateway B");
    free(m);
    char path[64], body[160];
    const char *mem = "hello";
    snprintf(path, sizeof(path), "/v1/keys/%s", key); /* as typed: fan:1 */
    snprintf(body, sizeof(body), "{\"type\":\"orset\",\"op\":\"add\",\"member\":\"%s\"}", mem);
    hc_resp_t r;
    int rc = hc_request(port_a, "POST", path, body, &r);
    ok(rc == 0 && r.status == 200, "a write through gateway A's REST API %s: %d %s", path, r.status,
       r.body ? r.body : "");
    hc_resp_free(&r);
    m = ws_wait_type(&w, "change", 10000);
    ok(m && strstr(m, key) && strstr(m, mem), "gateway B's subscriber gets the change: %s",
       m ? m : "(nothing)");
    free(m);
    ws_free(&w);
}

/* GET /v1/keys over the Redis store: its scan visits every primary; pages in key order. */
static void list_through_store(int port_a, int port_b)
{
    static const char *const keys[] = {"ls:c", "ls:a", "ls:d", "ls:b"};
    for (size_t i = 0; i < 4; i++) {
        char path[64];
        snprintf(path, sizeof(path), "/v1/keys/%s", keys[i]);
        hc_resp_t r;
        if (hc_request(port_a, "POST", path, "{\"type\":\"gcounter\",\"op\":\"incr\"}", &r) ||
            r.status != 200)
            diag("POST %s: %d", path, r.status);
        hc_resp_free(&r);
    }
    hc_resp_t r;
    int rc = hc_request(port_b, "GET", "/v1/keys?prefix=ls:&limit=3", NULL, &r);
    ok(rc == 0 && r.status == 200 && r.body &&
           strstr(r.body, "{\"keys\":[\"ls:a\",\"ls:b\",\"ls:c\"],\"next\":\"bHM6Yw\"}"),
       "gateway B lists the keys written through A, in key order: %s", r.body ? r.body : "");
    hc_resp_free(&r);
    rc = hc_request(port_b, "GET", "/v1/keys?prefix=ls:&limit=3&after64=bHM6Yw", NULL, &r);
    ok(rc == 0 && r.status == 200 && r.body &&
           strstr(r.body, "{\"keys\":[\"ls:d\"],\"next\":null}"),
       "and the next page: %s", r.body ? r.body : "");
    hc_resp_free(&r);
}

int main(void)
{
    const char *why = rc_skip_reason();
    if (why)
        skip_all("%s", why);
    rh_watchdog(rh_sanitized() ? 170 : 110);
    tmp = test_tmpdir();
    ok(tmp != NULL, "temporary directory");
    if (!tmp)
        return done_testing();
    flags_checked();

    rc_cluster_t CL;
    memset(&CL, 0, sizeof(CL));
    if (rc_start(&CL, 3, 1, "") != 0) {
        ok(0, "a cluster of 3 primaries and 3 replicas");
        rm_rf(tmp);
        return done_testing();
    }
    rh_server_t site;
    memset(&site, 0, sizeof(site));
    const char *extra[] = {"--appendonly", "yes", "--appendfsync", "always", NULL};
    ok(rh_start(&site, NULL, "node-id 21", extra) == 0, "the second site's Redis");

    char url[256], url2[64];
    snprintf(url, sizeof(url), "redis://127.0.0.1:%d,127.0.0.1:%d,127.0.0.1:%d", CL.node[0].port,
             CL.node[1].port, CL.node[2].port);
    snprintf(url2, sizeof(url2), "redis://127.0.0.1:%d", site.port);

    /* two gateways over the cluster (nodes 0, 1 of cA), one over the other site (c2) */
    cluster_t cA, c2;
    memset(&cA, 0, sizeof(cA));
    memset(&c2, 0, sizeof(c2));
    cA.n = 2;
    c2.n = 1;
    ok(start_gateway(&cA.node[0].proc, url, "11", "1") == 0, "gateway A on the cluster");
    ok(start_gateway(&cA.node[1].proc, url, "12", "1") == 0, "gateway B on the cluster");
    ok(start_gateway(&c2.node[0].proc, url2, "21", "0") == 0, "gateway C on the second site");
    cA.node[0].running = cA.node[1].running = c2.node[0].running = true;
    crdtd_proc_t *A = &cA.node[0].proc, *B = &cA.node[1].proc, *C = &c2.node[0].proc;
    ok(wait_health(A->port, 200, 10000) >= 0 && wait_health(B->port, 200, 10000) >= 0 &&
           wait_health(C->port, 200, 10000) >= 0,
       "the three gateways are healthy once they found their Redis");

    roshi_through_store(A->roshi_port, B->roshi_port);
    roshi_all_or_nothing(C->port, C->roshi_port, "site");
    roshi_one_command(C->roshi_port, &site);
    roshi_all_or_nothing(A->port, A->roshi_port, "cluster");
    ws_fanout(A->port, B->port);
    list_through_store(A->port, B->port);

    cl_writer_t ws[3];
    memset(ws, 0, sizeof(ws));
    for (int i = 0; i < 2; i++) {
        ws[i].c = &cA;
        ws[i].node = i;
        ws[i].max_ops = 20000; /* stopped by cl_writer_join */
        ws[i].seed = 1000u + (unsigned)i;
        ws[i].pause_us = 2000;
    }
    ws[2].c = &c2;
    ws[2].node = 0;
    ws[2].max_ops = 20000;
    ws[2].seed = 2000u;
    ws[2].pause_us = 2000;
    for (int i = 0; i < 3; i++)
        ok(cl_writer_start(&ws[i]) == 0, "writer %d started", i);
    rh_sleep_ms(300);

    /* a primary killed: /healthz says so with the node, its slots fail fast, the replica takes
     * over, the killed node rejoins as a replica */
    rh_kill(&CL.node[0]);
    char err[512];
    long t = -1;
    uint64_t t0 = cl_now_ms();
    while (cl_now_ms() - t0 < 5000 && t < 0) {
        if (healthz(A->port, err, sizeof(err)) == 503)
            t = (long)(cl_now_ms() - t0);
        else
            rh_sleep_ms(20);
    }
    char want[32];
    snprintf(want, sizeof(want), ":%d", CL.node[0].port);
    ok(t >= 0 && strstr(err, want), "a primary killed: /healthz of A is 503 after %ld ms: %s", t,
       err);
    ok(rc_wait_ok(&CL, 20) == 0, "the cluster promoted the killed primary's replica");
    /* until the killed node rejoins, that replica has no replica: WAIT 1 fails, /healthz says so */
    ok(rh_restart(&CL.node[0]) == 0, "the killed primary restarts and rejoins as a replica");
    long back = wait_health(A->port, 200, 20000);
    ok(back >= 0, "then /healthz of A is 200 again (%ld ms)", back);

    /* a gateway killed and restarted: it holds nothing, it serves again */
    cA.node[1].running = false;
    crdtd_stop(B, SIGKILL, 5000);
    rh_sleep_ms(200);
    ok(start_gateway(B, url, "12", "1") == 0, "gateway B restarted");
    cA.node[1].running = true;
    ok(wait_health(B->port, 200, 10000) >= 0, "gateway B is healthy again");

    /* the second site's Redis killed: C answers 503 at once, then resumes */
    rh_kill(&site);
    t = -1;
    t0 = cl_now_ms();
    while (cl_now_ms() - t0 < 5000 && t < 0) {
        if (healthz(C->port, err, sizeof(err)) == 503)
            t = (long)(cl_now_ms() - t0);
        else
            rh_sleep_ms(20);
    }
    snprintf(want, sizeof(want), ":%d", site.port);
    ok(t >= 0 && strstr(err, want), "site Redis killed: /healthz of C is 503 after %ld ms: %s", t,
       err);
    hc_resp_t r;
    char path[128];
    snprintf(path, sizeof(path), "/v1/keys/%s", "down-probe");
    uint64_t w0 = cl_now_ms();
    int rc =
        hc_request(C->port, "POST", path, "{\"type\":\"pncounter\",\"op\":\"incr\",\"by\":1}", &r);
    uint64_t wms = cl_now_ms() - w0;
    ok(rc == 0 && r.status == 503 && strstr(r.body, "unavailable") && wms < 1000,
       "a write meanwhile fails fast (%llu ms) with 503: %s", (unsigned long long)wms,
       r.body ? r.body : "");
    hc_resp_free(&r);
    rh_sleep_ms(300);
    ok(rh_restart(&site) == 0, "site Redis restarted (AOF, fsync always)");
    back = wait_health(C->port, 200, 10000);
    ok(back >= 0, "C is healthy again %ld ms after the restart", back);

    rh_sleep_ms(1000); /* writes after everything healed */
    for (int i = 0; i < 3; i++)
        cl_writer_join(&ws[i]);
    for (int i = 0; i < 3; i++)
        diag("writer %d: %d ops, %d acknowledged, %d unknown (%d answered with an error; last: "
             "%s)",
             i, ws[i].ops, ws[i].acked, ws[i].unknown, ws[i].errors, ws[i].last_error);
    ok(ws[0].acked > 100 && ws[1].acked > 100 && ws[2].acked > 100,
       "every writer had writes acknowledged");
    ok(cl_compare_keys(&cA) == 0, "gateways A and B serve byte-identical keys");
    int checked = 0, checked2 = 0;
    is_int(cl_check_writes(&cA, 0, ws, 2, &checked), 0,
           "the cluster lost no acknowledged write of A and B");
    is_int(cl_check_writes(&c2, 0, &ws[2], 1, &checked2), 0,
           "the second site lost no acknowledged write of C");
    ok(checked > 100 && checked2 > 50, "the checks were not vacuous (%d, %d facts)", checked,
       checked2);

    for (int i = 0; i < 3; i++)
        cl_writer_free(&ws[i]);
    /* a clean exit status: under the sanitizer build a report (or a leak) makes it non-zero */
    int sa = crdtd_stop(A, SIGTERM, 5000), sb = crdtd_stop(B, SIGTERM, 5000),
        sc = crdtd_stop(C, SIGTERM, 5000);
    ok(WIFEXITED(sa) && WEXITSTATUS(sa) == 0 && WIFEXITED(sb) && WEXITSTATUS(sb) == 0 &&
           WIFEXITED(sc) && WEXITSTATUS(sc) == 0,
       "the three gateways stop cleanly on SIGTERM (status %d %d %d)", sa, sb, sc);
    rh_stop(&site);
    rc_stop(&CL);
    rh_cleanup();
    is_int(rh_sanitizer_reports(), 0, "no sanitizer report from the servers");
    rm_rf(tmp);
    return done_testing();
}
