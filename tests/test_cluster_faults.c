/* test_cluster_faults.c - three crdtd nodes whose links pass through fault proxies: drop, delay,
 * reorder across reconnects, cuts, a partition of one node while both sides keep writing, and a
 * kill -9 mid-stream with a restart on the same data directory. After each, all converge to
 * byte-identical states and no acknowledged write is lost.
 *
 * Built a second time with CL_TLS (test_cluster_faults_tls): the same over mutual TLS, then node
 * 2's peer certificate replaced by SIGHUP (links made after it present the new one; an expired
 * replacement and one of another CA are refused and the previous one kept). */
#define _GNU_SOURCE
#include "cluster_helper.h"
#include "tap.h"

#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#ifdef CL_TLS
#include "hc_tls.h"
#endif

#if defined(__SANITIZE_ADDRESS__)
#define PAUSE_US 4000
#else
#define PAUSE_US 1500
#endif
/* longer than a dialler waits for its WebSocket upgrade (5 s in peer.c) */
#define BLACKHOLE_MS 6500

static cluster_t c;
static cl_writer_t w[3];
static int failures;

static void writers_start(unsigned round)
{
    for (int i = 0; i < 3; i++) {
        w[i].c = &c;
        w[i].node = i;
        w[i].max_ops = 1 << 30;
        w[i].seed = 7000u + round * 31u + (unsigned)i;
        w[i].pause_us = PAUSE_US;
        if (cl_writer_start(&w[i]))
            skip_all("cannot start a writer thread");
    }
}

static void writers_stop(void)
{
    for (int i = 0; i < 3; i++)
        cl_writer_join(&w[i]);
}

static void sleep_ms(int ms)
{
    usleep((useconds_t)ms * 1000u);
}

static void for_all_links(void (*fn)(fp_proxy_t *))
{
    for (int i = 0; i < 3; i++)
        for (int j = 0; j < 3; j++)
            if (i != j)
                fn(c.link[i][j]);
}

static void link_stats(fp_stats_t *sum)
{
    memset(sum, 0, sizeof(*sum));
    for (int i = 0; i < 3; i++)
        for (int j = 0; j < 3; j++) {
            if (i == j)
                continue;
            fp_stats_t s;
            fp_get_stats(c.link[i][j], &s);
            sum->accepted += s.accepted;
            sum->refused += s.refused;
            sum->cut += s.cut;
            sum->forwarded += s.forwarded;
            sum->dropped += s.dropped;
            sum->reordered += s.reordered;
        }
}

/* Stops the writers, waits for convergence, compares every key and checks every acknowledged
 * write on every node. */
static void settle(const char *what)
{
    writers_stop();
    long ms = cl_wait_converged(&c, 30000);
    ok(ms >= 0, "%s: all digests agree (%ld ms after the writes stopped)", what, ms);
    int diff = cl_compare_keys(&c);
    is_int(diff, 0, "%s: every key byte-identical on all nodes", what);
    int bad = diff + (ms < 0);
    for (int i = 0; i < 3; i++) {
        int checked = 0;
        int v = cl_check_writes(&c, i, w, 3, &checked);
        is_int(v, 0, "%s: node %d holds every acknowledged write (%d facts)", what, i + 1, checked);
        bad += v;
    }
    int acked = 0, unknown = 0, errors = 0;
    for (int i = 0; i < 3; i++) {
        acked += w[i].acked;
        unknown += w[i].unknown;
        errors += w[i].errors;
    }
    diag("%s: %d writes acknowledged so far, %d unknown (node down), %d refused", what, acked,
         unknown, errors);
    is_int(errors, 0, "%s: no write refused", what);
    failures += bad;
}

static void drop_on(fp_proxy_t *p)
{
    fp_drop(p, true);
}
static void delay_300(fp_proxy_t *p)
{
    fp_delay(p, 300);
}
static void link_pass(fp_proxy_t *p)
{
    fp_pass(p);
}
static void cut(fp_proxy_t *p)
{
    fp_cut(p);
}
static void reorder(fp_proxy_t *p)
{
    fp_reorder(p, 300, 600);
}
static void link_cut(fp_proxy_t *p, bool on)
{
    if (on)
        fp_cut(p);
}

#ifdef CL_TLS
static char *pki_tmp;

/* Certificates for `names` in pki_tmp/sub (env: tls-certs.sh's variables); with `ca_of`, the CA
 * of that directory is reused (copied in first). */
static void make_certs(const char *sub, const char *ca_of, const char *env, const char *names)
{
    char cmd[4096];
    int n = snprintf(cmd, sizeof(cmd), "mkdir -p '%s/%s'", pki_tmp, sub);
    if (ca_of)
        n += snprintf(cmd + n, sizeof(cmd) - (size_t)n,
                      " && cp '%s/%s/ca.pem' '%s/%s/ca.key' '%s/%s/'", pki_tmp, ca_of, pki_tmp,
                      ca_of, pki_tmp, sub);
    snprintf(cmd + n, sizeof(cmd) - (size_t)n, " && %s sh '%s' '%s/%s' %s", env, TLS_CERTS_SH,
             pki_tmp, sub, names);
    if (system(cmd) != 0)
        bail_out("cannot make certificates: %s", cmd);
}

/* The serial of a PEM certificate as peer.c logs it (hex, upper case), into out. */
static void serial_of(const char *pem, char *out, size_t n)
{
    char cmd[1200];
    snprintf(cmd, sizeof(cmd), "openssl x509 -noout -serial -in '%s'", pem);
    FILE *p = popen(cmd, "r");
    char line[256] = "";
    if (!p || !fgets(line, sizeof(line), p))
        bail_out("cannot read the serial of %s", pem);
    pclose(p);
    line[strcspn(line, "\r\n")] = '\0';
    const char *eq = strchr(line, '=');
    snprintf(out, n, "serial %s", eq ? eq + 1 : line);
}

/* Puts certificate `name` of pki_tmp/sub in place as node i's --peer-cert/--peer-key. */
static void install_peer_cert(int i, const char *sub, const char *name)
{
    char cmd[4096];
    snprintf(cmd, sizeof(cmd), "cp '%s/%s/%s.pem' '%s/peer.pem' && cp '%s/%s/%s.key' '%s/peer.key'",
             pki_tmp, sub, name, c.node[i].dir, pki_tmp, sub, name, c.node[i].dir);
    if (system(cmd) != 0)
        bail_out("cannot install %s/%s", sub, name);
}

/* SIGHUP to node i; true once its log has one more line with needle (within 5 s). */
static bool hup(int i, const char *needle)
{
    int before = cl_log_count(&c, i, needle);
    kill(c.node[i].proc.pid, SIGHUP);
    for (int k = 0; k < 250; k++) {
        if (cl_log_count(&c, i, needle) > before)
            return true;
        sleep_ms(20);
    }
    return false;
}

/* Cuts every link, then waits until nodes 1 and 3 have each logged `serial` for node 2's new
 * inbound links more often than before (at most 15 s). */
static bool redial_shows(const char *serial, int before1, int before3)
{
    for_all_links(cut);
    for (int k = 0; k < 150; k++) {
        if (cl_log_count(&c, 0, serial) > before1 && cl_log_count(&c, 2, serial) > before3)
            return true;
        sleep_ms(100);
    }
    return false;
}

static void peer_cert_reload(void)
{
    /* a new certificate for node 2 from the same CA */
    make_certs("renew", "pki", "", "node-2");
    char pem[1100], fresh[300], old[300], line[400];
    snprintf(pem, sizeof(pem), "%s/renew/node-2.pem", pki_tmp);
    serial_of(pem, fresh, sizeof(fresh));
    snprintf(pem, sizeof(pem), "%s/peer.pem", c.node[1].dir);
    serial_of(pem, old, sizeof(old));
    ok(strcmp(fresh, old) != 0, "the new certificate has another serial (%s, was %s)", fresh, old);
    snprintf(line, sizeof(line), "peer node-2 (inbound): TLS, its certificate /CN=node-2, %s", old);
    ok(cl_log_count(&c, 0, line) > 0, "node 1 logged node 2's first certificate on its links");

    writers_start(6);
    install_peer_cert(1, "renew", "node-2");
    ok(hup(1, "SIGHUP: peer TLS reloaded: certificate /CN=node-2"),
       "SIGHUP: node 2 reloads its peer certificate");
    snprintf(line, sizeof(line), "peer node-2 (inbound): TLS, its certificate /CN=node-2, %s",
             fresh);
    ok(redial_shows(line, 0, 0),
       "links made after the reload present the new certificate (nodes 1 and 3 log its serial)");
    settle("peer certificate renewed");

    /* an expired replacement, then one of another CA: refused, the renewed one kept */
    make_certs("expired", "pki", "TLS_START=20200101000000Z TLS_END=20200201000000Z", "node-2");
    make_certs("other", NULL, "", "node-2");
    writers_start(7);
    install_peer_cert(1, "expired", "node-2");
    ok(hup(1, "keeping the previous peer TLS files"), "SIGHUP with an expired certificate");
    ok(cl_log_count(&c, 1, "the certificate has expired") > 0, "is refused, saying it expired");
    install_peer_cert(1, "other", "node-2");
    ok(hup(1, "keeping the previous peer TLS files"),
       "SIGHUP with a certificate of another CA");
    ok(cl_log_count(&c, 1, "does not verify against --peer-ca") > 0,
       "is refused, saying it does not verify against --peer-ca");
    int b1 = cl_log_count(&c, 0, line), b3 = cl_log_count(&c, 2, line);
    ok(redial_shows(line, b1, b3), "new links still present the renewed certificate");
    settle("refused replacements");
}
#endif

int main(void)
{
    signal(SIGPIPE, SIG_IGN);
#ifdef CL_TLS
    pki_tmp = test_tmpdir();
    make_certs("pki", NULL, "", "node-1 node-2 node-3");
    char pki[1100], ca[1200];
    snprintf(pki, sizeof(pki), "%s/pki", pki_tmp);
    snprintf(ca, sizeof(ca), "%s/ca.pem", pki);
    if (hc_tls_use(ca))
        bail_out("cannot make the HTTPS client");
    if (cl_start_tls(&c, 3, "always", 1, pki))
        skip_all("cannot start three crdtd nodes over mutual TLS");
    ok(1, "three nodes started over mutual TLS (fsync always, anti-entropy every 1 s)");
#else
    if (cl_start(&c, 3, "always", 1))
        skip_all("cannot start three crdtd nodes");
    ok(1, "three nodes started (fsync always, anti-entropy every 1 s)");
#endif
    fp_stats_t st0, st;
    sleep_ms(500); /* let the links come up */

    /* drop, then delay, while all three write */
    writers_start(1);
    sleep_ms(300);
    link_stats(&st0);
    for_all_links(drop_on);
    sleep_ms(1200);
    for_all_links(link_pass);
    link_stats(&st);
    cmp_ok((long long)(st.dropped - st0.dropped), ">", 0, "drop: link bytes were dropped");
    for_all_links(delay_300);
    sleep_ms(1200);
    for_all_links(link_pass);
    settle("drop and delay");

    /* reorder across reconnects, then cuts */
    writers_start(2);
    sleep_ms(300);
    link_stats(&st0);
    for_all_links(reorder);
    sleep_ms(1200);
    link_stats(&st);
    cmp_ok((long long)(st.reordered - st0.reordered), ">", 0,
           "reorder: held link bytes were delivered after the reconnect");
    for (int k = 0; k < 3; k++) {
        for_all_links(cut);
        sleep_ms(400);
    }
    link_stats(&st0);
    cmp_ok((long long)(st0.cut - st.cut), ">", 0, "cut: link connections were cut");
    settle("reorder and cuts");

    /* partition node 3 for a while; writes go on on both sides */
    writers_start(3);
    cl_node_links(&c, 2, fp_partition, true);
    sleep_ms(2500);
    int digests_differ = cl_wait_converged(&c, 300) < 0;
    ok(digests_differ, "partition: node 3 diverged while cut off");
    cl_node_links(&c, 2, fp_partition, false);
    sleep_ms(300);
    settle("partition healed");

    /* a black hole while dialling: connections to and from node 1 are accepted but carry
     * nothing, so every dial's WebSocket upgrade hangs until the dialler gives up on it */
    writers_start(4);
    cl_node_links(&c, 0, fp_drop, true);
    cl_node_links(&c, 0, link_cut, true);
    sleep_ms(BLACKHOLE_MS);
    for (int i = 0; i < 3; i++) {
        hc_resp_t r;
        int rc = hc_request(c.node[i].proc.port, "GET", "/healthz", NULL, &r);
        ok(rc == 0 && r.status == 200, "black hole: node %d still serves HTTP", i + 1);
        hc_resp_free(&r);
    }
    cl_node_links(&c, 0, fp_drop, false);
    settle("black hole while dialling");

    /* kill -9 node 2 mid-stream (fsync always), restart it on its data directory */
    writers_start(5);
    sleep_ms(800);
    cl_node_stop(&c, 1, SIGKILL);
    sleep_ms(700);
    ok(cl_node_start(&c, 1) == 0, "kill -9: node 2 restarted on its data directory (port %d)",
       c.node[1].proc.port);
    sleep_ms(800);
    settle("kill -9 and restart");

#ifdef CL_TLS
    peer_cert_reload();
    int cleartext = 0;
    for (int i = 0; i < 3; i++)
        cleartext += cl_log_count(&c, i, "refused: cleartext");
    is_int(cleartext, 0, "no link was ever cleartext");
#endif
    for (int i = 0; i < 3; i++)
        cl_writer_free(&w[i]);
    cl_stop(&c, failures != 0);
#ifdef CL_TLS
    hc_tls_off();
    if (!failures)
        rm_rf(pki_tmp);
    free(pki_tmp);
#endif
    return done_testing();
}
