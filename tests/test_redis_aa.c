/* test_redis_aa.c - active-active between two Redis deployments: crdtd gateways as processes, each
 * in front of its own redis-server with crdt.so (a site), peered through fault proxies
 *
 * Sites: two single redis-servers and, when a cluster can be made, a third site that is a Redis
 * Cluster of three primaries (its anti-entropy runs in the gateway over CRDT.RSX.ITEMS); a full
 * mesh of peer links, each directed link through its own proxy.
 *
 * Checked: a peer's change is not pushed back (the change log entry carries its origin); writers
 * of every type run through every site while the links are partitioned (local writes are
 * acknowledged meanwhile, the other sites do not see them), a gateway is killed and restarted,
 * and one site's Redis is killed and restarted (the other sites keep acknowledging writes); after
 * healing the single-server sites hold the same CRDT keys, byte-identical in Redis (CRDT.STATE of
 * every key), every gateway serves byte-identical keys, and no acknowledged write is lost.
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
#include "redis_cluster_helper.h"
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

static int start_gateway(crdtd_proc_t *p, const char *url, const char *node_id, const int *peers,
                         int npeers)
{
    char peer[2][64];
    for (int i = 0; i < npeers && i < 2; i++)
        snprintf(peer[i], sizeof(peer[i]), "ws://127.0.0.1:%d", peers[i]);
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
                          peer[0],
                          npeers > 1 ? "--peer" : NULL,
                          npeers > 1 ? peer[1] : NULL,
                          NULL};
    return crdtd_start(p, CRDTD_BIN, tmp, args);
}

static int want_links = 1; /* links every gateway has once all are up */

/* One field of GET /v1/peers summed over its entries (0 when absent); state "up" once every
 * entry is up and there are want_links of them. */
static uint64_t peer_field(int port, const char *field, char *state, size_t n)
{
    hc_resp_t r;
    uint64_t v = 0;
    if (state && n)
        state[0] = '\0';
    if (hc_request(port, "GET", "/v1/peers", NULL, &r) == 0 && r.status == 200) {
        json_t *j = json_loads(r.body, 0, NULL);
        size_t i, up = 0, cnt = json_is_array(j) ? json_array_size(j) : 0;
        json_t *e;
        json_array_foreach(j, i, e)
        {
            v += (uint64_t)json_integer_value(json_object_get(e, field));
            const char *s = json_string_value(json_object_get(e, "state"));
            up += s && !strcmp(s, "up");
        }
        if (state && cnt)
            snprintf(state, n, "%s", up == cnt && cnt >= (size_t)want_links ? "up" : "down");
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

    /* two sites, each a Redis with crdt.so (AOF, fsync always: a restart keeps what it acked),
     * and a third that is a cluster of three primaries when one can be made */
    rh_server_t R1, R2;
    memset(&R1, 0, sizeof(R1));
    memset(&R2, 0, sizeof(R2));
    const char *aof[] = {"--appendonly", "yes", "--appendfsync", "always", NULL};
    if (rh_start(&R1, NULL, "node-id 31", aof) < 0 || rh_start(&R2, NULL, "node-id 32", aof) < 0)
        bail_out("cannot start redis-server");
    rc_cluster_t CL;
    memset(&CL, 0, sizeof(CL));
    int N = !rc_skip_reason() && rc_start(&CL, 3, 0, "") == 0 ? 3 : 2;
    if (N == 2)
        diag("no cluster site: %s",
             rc_skip_reason() ? rc_skip_reason() : "the cluster did not start");
    want_links = N - 1;
    char url[3][128];
    snprintf(url[0], sizeof(url[0]), "redis://127.0.0.1:%d", R1.port);
    snprintf(url[1], sizeof(url[1]), "redis://127.0.0.1:%d", R2.port);
    if (N == 3)
        snprintf(url[2], sizeof(url[2]), "redis://127.0.0.1:%d,127.0.0.1:%d,127.0.0.1:%d",
                 CL.node[0].port, CL.node[1].port, CL.node[2].port);
    /* px[i][j]: what gateway i dials to reach gateway j */
    fp_proxy_t *px[3][3] = {{NULL}};
    bool proxies = true;
    for (int i = 0; i < N; i++)
        for (int j = 0; j < N; j++)
            if (i != j)
                proxies = proxies && (px[i][j] = fp_start(0)) != NULL;
    ok(proxies, "a fault proxy per directed link");
    cluster_t c;
    memset(&c, 0, sizeof(c));
    c.n = N;
    char ids[3][4] = {"1", "2", "3"};
    bool started = true;
    for (int i = 0; i < N; i++) {
        int peers[2], np = 0;
        for (int j = 0; j < N; j++)
            if (j != i)
                peers[np++] = fp_port(px[i][j]);
        started = started && start_gateway(&c.node[i].proc, url[i], ids[i], peers, np) == 0;
        c.node[i].running = true;
    }
    ok(started, "a gateway in front of each of the %d sites", N);
    for (int i = 0; i < N; i++)
        for (int j = 0; j < N; j++)
            if (i != j)
                fp_set_target(px[i][j], c.node[j].proc.port);
    crdtd_proc_t *G1 = &c.node[0].proc, *G2 = &c.node[1].proc;
    bool healthy = true, linked = true;
    for (int i = 0; i < N; i++) {
        bool h = wait_health(c.node[i].proc.port, 10000) >= 0;
        if (!h) {
            char cmd[700];
            snprintf(cmd, sizeof(cmd), "grep -v \"peer \" %s | tail -n 8 | sed 's/^/# /'",
                     c.node[i].proc.errlog);
            if (system(cmd) != 0)
                diag("cannot show %s", c.node[i].proc.errlog);
        }
        healthy = healthy && h;
    }
    ok(healthy, "every gateway is healthy");
    for (int i = 0; i < N; i++)
        linked = linked && wait_link_up(c.node[i].proc.port, 10000);
    ok(linked, "the peer links are up");
    rh_sleep_ms(300); /* past the first catch-up */

    /* echo suppression: 20 changes through gateway 1 reach site 2 and are not sent on */
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
       "gateway 2 received the 20 deltas (%llu) and sent none on (%llu): the log entries carry "
       "their origin",
       (unsigned long long)recv2, (unsigned long long)back);

    /* writers of every type through every site */
    cl_writer_t ws[3];
    memset(ws, 0, sizeof(ws));
    for (int i = 0; i < N; i++) {
        ws[i].c = &c;
        ws[i].node = i;
        ws[i].max_ops = 50000; /* stopped by cl_writer_join */
        ws[i].seed = 3000u + (unsigned)i;
        ws[i].pause_us = 2000;
        ok(cl_writer_start(&ws[i]) == 0, "writer %d started", i);
    }
    rh_sleep_ms(500);

    /* every link partitioned: every site keeps acknowledging its writes; site 2 does not see a
     * write made at site 1 */
    for (int i = 0; i < N; i++)
        for (int j = 0; j < N; j++)
            if (i != j)
                fp_partition(px[i][j], true);
    int a0[3];
    for (int i = 0; i < N; i++)
        a0[i] = ws[i].acked;
    ok(post(G1->port, "during-partition", "{\"type\":\"pncounter\",\"op\":\"incr\",\"by\":5}") ==
           200,
       "a write at site 1 during the partition is acknowledged");
    rh_sleep_ms(1500);
    char *seen = get_binary(G2->port, "during-partition");
    ok(seen == NULL, "site 2 does not have it (the partition is real)");
    free(seen);
    bool all_acked = true;
    for (int i = 0; i < N; i++)
        all_acked = all_acked && ws[i].acked - a0[i] > 50;
    ok(all_acked, "every site acknowledged writes during the partition (%d, %d, %d)",
       ws[0].acked - a0[0], ws[1].acked - a0[1], N == 3 ? ws[2].acked - a0[2] : 0);
    for (int i = 0; i < N; i++)
        for (int j = 0; j < N; j++)
            if (i != j)
                fp_partition(px[i][j], false);
    for (int i = 0; i < 100 && !seen; i++) {
        seen = get_binary(G2->port, "during-partition");
        if (!seen)
            rh_sleep_ms(100);
    }
    ok(seen != NULL, "healed: site 2 gets the write made during the partition");
    free(seen);

    /* gateway 2 killed and restarted: its peers resume with it */
    c.node[1].running = false;
    crdtd_stop(G2, SIGKILL, 5000);
    rh_sleep_ms(500);
    int peers2[2], np2 = 0;
    for (int j = 0; j < N; j++)
        if (j != 1)
            peers2[np2++] = fp_port(px[1][j]);
    ok(start_gateway(G2, url[1], "2", peers2, np2) == 0, "gateway 2 restarted");
    for (int i = 0; i < N; i++)
        if (i != 1)
            fp_set_target(px[i][1], G2->port);
    c.node[1].running = true;
    ok(wait_health(G2->port, 10000) >= 0, "gateway 2 is healthy again");
    ok(wait_link_up(G2->port, 15000), "and linked to the others again");

    /* site 1's Redis killed: the other sites keep acknowledging writes; then it comes back */
    int a1 = ws[1].acked;
    rh_kill(&R1);
    rh_sleep_ms(1000);
    ok(ws[1].acked - a1 > 50, "site 1's Redis down: site 2 acknowledged %d writes meanwhile",
       ws[1].acked - a1);
    ok(rh_restart(&R1) == 0, "site 1's Redis restarted (AOF, fsync always)");
    ok(wait_health(G1->port, 10000) >= 0, "gateway 1 is healthy again");
    rh_sleep_ms(1000); /* writes after everything healed */

    for (int i = 0; i < N; i++)
        cl_writer_join(&ws[i]);
    bool wrote = true;
    for (int i = 0; i < N; i++) {
        diag("writer %d: %d ops, %d acknowledged, %d unknown (%d answered with an error; last: "
             "%s)",
             i, ws[i].ops, ws[i].acked, ws[i].unknown, ws[i].errors, ws[i].last_error);
        wrote = wrote && ws[i].acked > 200;
    }
    ok(wrote, "every writer had writes acknowledged");

    size_t nkeys = 0;
    long conv = wait_converged(&R1, &R2, 30000, &nkeys);
    ok(conv >= 0, "sites 1 and 2 converged %ld ms after the writes stopped", conv);
    is_int(compare_sites(&R1, &R2, true, &nkeys), 0,
           "every CRDT key is byte-identical in both single-server Redis (CRDT.STATE of each)");
    ok(nkeys > 30, "the comparison was not vacuous (%zu keys)", nkeys);
    int diff = -1;
    for (int t = 0; t < 100 && diff != 0; t++) {
        diff = cl_compare_keys(&c);
        if (diff)
            rh_sleep_ms(200);
    }
    is_int(diff, 0, "every gateway (%d sites) serves byte-identical keys", N);
    for (int i = 0; i < N; i++) {
        int checked = 0;
        is_int(cl_check_writes(&c, i, ws, N, &checked), 0,
               "site %d lost no acknowledged write (%d facts checked)", i + 1, checked);
        ok(checked > 100, "the check of site %d was not vacuous", i + 1);
    }
    diag("anti-entropy: gateway 1 ran %llu rounds, repaired %llu keys",
         (unsigned long long)peer_field(G1->port, "anti_entropy_rounds", NULL, 0),
         (unsigned long long)peer_field(G1->port, "keys_repaired", NULL, 0));

    for (int i = 0; i < N; i++)
        cl_writer_free(&ws[i]);
    bool clean = true;
    for (int i = 0; i < N; i++) {
        int st = crdtd_stop(&c.node[i].proc, SIGTERM, 5000);
        clean = clean && WIFEXITED(st) && WEXITSTATUS(st) == 0;
    }
    ok(clean, "every gateway stops cleanly on SIGTERM");
    for (int i = 0; i < N; i++)
        for (int j = 0; j < N; j++)
            fp_stop(px[i][j]);
    rh_stop(&R1);
    rh_stop(&R2);
    if (N == 3)
        rc_stop(&CL);
    rh_cleanup();
    is_int(rh_sanitizer_reports(), 0, "no sanitizer report from the servers");
    rm_rf(tmp);
    return done_testing();
}
