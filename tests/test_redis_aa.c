/* test_redis_aa.c - active-active between two Redis deployments: crdtd gateways as processes, each
 * in front of its own redis-server with crdt.so (a site), peered through fault proxies
 *
 * Checked: a peer's change is not pushed back (the change log entry carries its origin); writers
 * of every type run through both sites while the link between them is partitioned (local writes
 * are acknowledged meanwhile, the other site does not see them), a gateway is killed and
 * restarted, and one site's Redis is killed and restarted (the other site keeps acknowledging
 * writes); after healing both sites hold the same CRDT keys, byte-identical in Redis
 * (CRDT.STATE of every key) and through both gateways, and no acknowledged write is lost.
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
#include "faultproxy.h"
#include "http_client.h"
#include "redis_helper.h"
#include "tap.h"

static char *tmp;
static char secret[600];

static int healthz(int port)
{
    hc_resp_t r;
    int st = hc_request(port, "GET", "/healthz", NULL, &r) == 0 ? r.status : 0;
    hc_resp_free(&r);
    return st;
}

static long wait_health(int port, long ms)
{
    uint64_t t0 = cl_now_ms();
    while ((long)(cl_now_ms() - t0) <= ms) {
        if (healthz(port) == 200)
            return (long)(cl_now_ms() - t0);
        rh_sleep_ms(50);
    }
    return -1;
}

static int start_gateway(crdtd_proc_t *p, int redis_port, const char *node_id, int peer_port)
{
    char url[64], peer[64];
    snprintf(url, sizeof(url), "redis://127.0.0.1:%d", redis_port);
    snprintf(peer, sizeof(peer), "ws://127.0.0.1:%d", peer_port);
    const char *args[] = {"--store",
                          url,
                          "--node-id",
                          node_id,
                          "--redis-follow",
                          "yes",
                          "--redis-timeout-ms",
                          "500",
                          "--cluster",
                          "aa-test",
                          "--peer-secret-file",
                          secret,
                          "--anti-entropy-interval",
                          "2",
                          "--peer",
                          peer,
                          NULL};
    return crdtd_start(p, CRDTD_BIN, tmp, args);
}

/* One field of the first entry of GET /v1/peers (0 when absent). */
static uint64_t peer_field(int port, const char *field, char *state, size_t n)
{
    hc_resp_t r;
    uint64_t v = 0;
    if (state && n)
        state[0] = '\0';
    if (hc_request(port, "GET", "/v1/peers", NULL, &r) == 0 && r.status == 200) {
        json_t *j = json_loads(r.body, 0, NULL);
        json_t *e = json_is_array(j) ? json_array_get(j, 0) : NULL;
        if (e) {
            v = (uint64_t)json_integer_value(json_object_get(e, field));
            const char *s = json_string_value(json_object_get(e, "state"));
            if (state && s)
                snprintf(state, n, "%s", s);
        }
        json_decref(j);
    }
    hc_resp_free(&r);
    return v;
}

static bool wait_link_up(int port, long ms)
{
    uint64_t t0 = cl_now_ms();
    char st[32];
    while ((long)(cl_now_ms() - t0) <= ms) {
        peer_field(port, "deltas_sent", st, sizeof(st));
        if (!strcmp(st, "up"))
            return true;
        rh_sleep_ms(50);
    }
    return false;
}

/* POST an op to key through port; the status. */
static int post(int port, const char *key, const char *body)
{
    char path[256];
    snprintf(path, sizeof(path), "/v1/keys/%s", hc_b64s(key, true));
    hc_resp_t r;
    int st = hc_request(port, "POST", path, body, &r) == 0 ? r.status : 0;
    hc_resp_free(&r);
    return st;
}

/* The key's "binary" through port, or NULL (absent, error). */
static char *get_binary(int port, const char *key)
{
    char path[256];
    snprintf(path, sizeof(path), "/v1/keys/%s", hc_b64s(key, true));
    hc_resp_t r;
    char *out = NULL;
    if (hc_request(port, "GET", path, NULL, &r) == 0 && r.status == 200) {
        json_t *j = json_loads(r.body, 0, NULL);
        const char *b = json_string_value(json_object_get(j, "binary"));
        out = b ? strdup(b) : NULL;
        json_decref(j);
    }
    hc_resp_free(&r);
    return out;
}

/* Every key of type crdtd-obj on s, sorted (caller frees with free_keys). */
static int cmp_str(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

static char **crdt_keys(rh_server_t *s, size_t *n)
{
    *n = 0;
    char **out = NULL;
    size_t cap = 0;
    char cursor[32] = "0";
    for (int round = 0; round < 100000; round++) {
        redisReply *r = rh_cmd(s, "SCAN %s COUNT 1000 TYPE crdtd-obj", cursor);
        if (!r || r->type != REDIS_REPLY_ARRAY || r->elements != 2) {
            if (r)
                freeReplyObject(r);
            break;
        }
        snprintf(cursor, sizeof(cursor), "%s", r->element[0]->str);
        for (size_t i = 0; i < r->element[1]->elements; i++) {
            if (*n == cap) {
                cap = cap ? cap * 2 : 256;
                out = realloc(out, cap * sizeof(*out));
            }
            const redisReply *k = r->element[1]->element[i];
            out[*n] = malloc(k->len + 1);
            memcpy(out[*n], k->str, k->len);
            out[*n][k->len] = '\0';
            (*n)++;
        }
        freeReplyObject(r);
        if (!strcmp(cursor, "0"))
            break;
    }
    if (*n)
        qsort(out, *n, sizeof(*out), cmp_str);
    return out;
}

static void free_keys(char **k, size_t n)
{
    for (size_t i = 0; i < n; i++)
        free(k[i]);
    free(k);
}

/* Both servers hold the same CRDT keys with byte-identical states: the number of differences
 * (printed when print). *nkeys: keys compared. */
static int compare_sites(rh_server_t *A, rh_server_t *B, bool print, size_t *nkeys)
{
    size_t na, nb;
    char **ka = crdt_keys(A, &na), **kb = crdt_keys(B, &nb);
    int bad = 0;
    *nkeys = na;
    if (na != nb) {
        bad++;
        if (print)
            diag("site 1 holds %zu CRDT keys, site 2 %zu", na, nb);
    }
    for (size_t i = 0; i < na && i < nb; i++) {
        if (strcmp(ka[i], kb[i])) {
            bad++;
            if (print && bad < 10)
                diag("key sets differ at %s / %s", ka[i], kb[i]);
            break;
        }
        size_t la, lb;
        char *sa = rh_str(rh_cmd(A, "CRDT.STATE %b", ka[i], strlen(ka[i])), &la);
        char *sb = rh_str(rh_cmd(B, "CRDT.STATE %b", ka[i], strlen(ka[i])), &lb);
        if (!sa || !sb || la != lb || memcmp(sa, sb, la)) {
            bad++;
            if (print && bad < 10)
                diag("%s differs (%zu and %zu bytes)", ka[i], la, lb);
        }
        free(sa);
        free(sb);
    }
    free_keys(ka, na);
    free_keys(kb, nb);
    return bad;
}

static long wait_converged(rh_server_t *A, rh_server_t *B, long ms, size_t *nkeys)
{
    uint64_t t0 = cl_now_ms();
    while ((long)(cl_now_ms() - t0) <= ms) {
        if (compare_sites(A, B, false, nkeys) == 0)
            return (long)(cl_now_ms() - t0);
        rh_sleep_ms(200);
    }
    return -1;
}

int main(void)
{
    const char *why = rh_skip_reason();
    if (why)
        skip_all("%s", why);
    rh_watchdog(rh_sanitized() ? 240 : 150);
    signal(SIGPIPE, SIG_IGN);
    tmp = test_tmpdir();
    ok(tmp != NULL, "temporary directory");
    if (!tmp)
        return done_testing();
    snprintf(secret, sizeof(secret), "%s/peer-secret", tmp);
    FILE *f = fopen(secret, "w");
    if (f) {
        fputs("an-active-active-test-secret\n", f);
        fclose(f);
    }
    chmod(secret, 0600);

    /* two sites, each a Redis with crdt.so (AOF, fsync always: a restart keeps what it acked) */
    rh_server_t R1, R2;
    memset(&R1, 0, sizeof(R1));
    memset(&R2, 0, sizeof(R2));
    const char *aof[] = {"--appendonly", "yes", "--appendfsync", "always", NULL};
    if (rh_start(&R1, NULL, "node-id 31", aof) < 0 || rh_start(&R2, NULL, "node-id 32", aof) < 0)
        bail_out("cannot start redis-server");
    /* p12: what gateway 1 dials to reach gateway 2; p21 the other way */
    fp_proxy_t *p12 = fp_start(0), *p21 = fp_start(0);
    ok(p12 && p21, "two fault proxies");
    cluster_t c;
    memset(&c, 0, sizeof(c));
    c.n = 2;
    crdtd_proc_t *G1 = &c.node[0].proc, *G2 = &c.node[1].proc;
    ok(start_gateway(G1, R1.port, "1", fp_port(p12)) == 0, "gateway 1 in front of site 1");
    ok(start_gateway(G2, R2.port, "2", fp_port(p21)) == 0, "gateway 2 in front of site 2");
    c.node[0].running = c.node[1].running = true;
    fp_set_target(p12, G2->port);
    fp_set_target(p21, G1->port);
    ok(wait_health(G1->port, 10000) >= 0 && wait_health(G2->port, 10000) >= 0,
       "both gateways are healthy");
    ok(wait_link_up(G1->port, 10000) && wait_link_up(G2->port, 10000), "the peer link is up");
    rh_sleep_ms(300); /* past the first catch-up */

    /* echo suppression: 20 changes through gateway 1 reach site 2 and are not sent back */
    uint64_t back0 = peer_field(G2->port, "deltas_sent", NULL, 0);
    int acked = 0;
    for (int i = 0; i < 20; i++) {
        char body[128], m[16];
        snprintf(m, sizeof(m), "e%d", i);
        snprintf(body, sizeof(body), "{\"type\":\"orset\",\"op\":\"add\",\"member\":\"%s\"}",
                 hc_b64s(m, false));
        acked += post(G1->port, "echo", body) == 200;
    }
    is_int(acked, 20, "20 set adds acknowledged by gateway 1");
    char *b1 = NULL, *b2 = NULL;
    for (int i = 0; i < 100; i++) {
        free(b1);
        free(b2);
        b1 = get_binary(G1->port, "echo");
        b2 = get_binary(G2->port, "echo");
        if (b1 && b2 && !strcmp(b1, b2))
            break;
        rh_sleep_ms(50);
    }
    ok(b1 && b2 && !strcmp(b1, b2), "site 2 holds the same set");
    free(b1);
    free(b2);
    rh_sleep_ms(500);
    uint64_t recv2 = peer_field(G2->port, "deltas_received", NULL, 0);
    uint64_t back = peer_field(G2->port, "deltas_sent", NULL, 0) - back0;
    ok(recv2 >= 20 && back == 0,
       "gateway 2 received the 20 deltas (%llu) and sent none back (%llu): the log entries carry "
       "their origin",
       (unsigned long long)recv2, (unsigned long long)back);

    /* writers of every type through both sites */
    cl_writer_t ws[2];
    memset(ws, 0, sizeof(ws));
    for (int i = 0; i < 2; i++) {
        ws[i].c = &c;
        ws[i].node = i;
        ws[i].max_ops = 50000; /* stopped by cl_writer_join */
        ws[i].seed = 3000u + (unsigned)i;
        ws[i].pause_us = 2000;
        ok(cl_writer_start(&ws[i]) == 0, "writer %d started", i);
    }
    rh_sleep_ms(500);

    /* the link partitioned: both sites keep acknowledging their writes; site 2 does not see a
     * write made at site 1 */
    fp_partition(p12, true);
    fp_partition(p21, true);
    int a0 = ws[0].acked, a1 = ws[1].acked;
    ok(post(G1->port, "during-partition", "{\"type\":\"pncounter\",\"op\":\"incr\",\"by\":5}") ==
           200,
       "a write at site 1 during the partition is acknowledged");
    rh_sleep_ms(1500);
    char *seen = get_binary(G2->port, "during-partition");
    ok(seen == NULL, "site 2 does not have it (the partition is real)");
    free(seen);
    ok(ws[0].acked - a0 > 50 && ws[1].acked - a1 > 50,
       "both sites acknowledged writes during the partition (%d, %d)", ws[0].acked - a0,
       ws[1].acked - a1);
    fp_partition(p12, false);
    fp_partition(p21, false);
    for (int i = 0; i < 100 && !seen; i++) {
        seen = get_binary(G2->port, "during-partition");
        if (!seen)
            rh_sleep_ms(100);
    }
    ok(seen != NULL, "healed: site 2 gets the write made during the partition");
    free(seen);

    /* gateway 2 killed and restarted: its peer resumes with it */
    c.node[1].running = false;
    crdtd_stop(G2, SIGKILL, 5000);
    rh_sleep_ms(500);
    ok(start_gateway(G2, R2.port, "2", fp_port(p21)) == 0, "gateway 2 restarted");
    fp_set_target(p12, G2->port);
    c.node[1].running = true;
    ok(wait_health(G2->port, 10000) >= 0, "gateway 2 is healthy again");
    ok(wait_link_up(G2->port, 15000), "and linked to gateway 1 again");

    /* site 1's Redis killed: site 2 keeps acknowledging writes; then it comes back */
    a1 = ws[1].acked;
    rh_kill(&R1);
    rh_sleep_ms(1000);
    ok(ws[1].acked - a1 > 50, "site 1's Redis down: site 2 acknowledged %d writes meanwhile",
       ws[1].acked - a1);
    ok(rh_restart(&R1) == 0, "site 1's Redis restarted (AOF, fsync always)");
    ok(wait_health(G1->port, 10000) >= 0, "gateway 1 is healthy again");
    rh_sleep_ms(1000); /* writes after everything healed */

    for (int i = 0; i < 2; i++)
        cl_writer_join(&ws[i]);
    for (int i = 0; i < 2; i++)
        diag("writer %d: %d ops, %d acknowledged, %d unknown (%d answered with an error; last: "
             "%s)",
             i, ws[i].ops, ws[i].acked, ws[i].unknown, ws[i].errors, ws[i].last_error);
    ok(ws[0].acked > 200 && ws[1].acked > 200, "both writers had writes acknowledged");

    size_t nkeys = 0;
    long conv = wait_converged(&R1, &R2, 30000, &nkeys);
    ok(conv >= 0, "both sites converged %ld ms after the writes stopped", conv);
    is_int(compare_sites(&R1, &R2, true, &nkeys), 0,
           "every CRDT key is byte-identical in both Redis (CRDT.STATE of each)");
    ok(nkeys > 30, "the comparison was not vacuous (%zu keys)", nkeys);
    is_int(cl_compare_keys(&c), 0, "both gateways serve byte-identical keys");
    int checked = 0, checked2 = 0;
    is_int(cl_check_writes(&c, 0, ws, 2, &checked), 0, "site 1 lost no acknowledged write");
    is_int(cl_check_writes(&c, 1, ws, 2, &checked2), 0, "site 2 lost no acknowledged write");
    ok(checked > 100 && checked2 > 100, "the checks were not vacuous (%d, %d facts)", checked,
       checked2);
    diag("anti-entropy: gateway 1 ran %llu rounds, repaired %llu keys",
         (unsigned long long)peer_field(G1->port, "anti_entropy_rounds", NULL, 0),
         (unsigned long long)peer_field(G1->port, "keys_repaired", NULL, 0));

    for (int i = 0; i < 2; i++)
        cl_writer_free(&ws[i]);
    int s1 = crdtd_stop(G1, SIGTERM, 5000), s2 = crdtd_stop(G2, SIGTERM, 5000);
    ok(WIFEXITED(s1) && WEXITSTATUS(s1) == 0 && WIFEXITED(s2) && WEXITSTATUS(s2) == 0,
       "both gateways stop cleanly on SIGTERM (status %d %d)", s1, s2);
    fp_stop(p12);
    fp_stop(p21);
    rh_stop(&R1);
    rh_stop(&R2);
    rh_cleanup();
    is_int(rh_sanitizer_reports(), 0, "no sanitizer report from the servers");
    rm_rf(tmp);
    return done_testing();
}
