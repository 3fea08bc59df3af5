/* test_cluster_faults.c - three crdtd nodes whose links pass through fault proxies: drop, delay,
 * reorder across reconnects, cuts, a partition of one node while both sides keep writing, and a
 * kill -9 mid-stream with a restart on the same data directory. After each, all converge to
 * byte-identical states and no acknowledged write is lost. */
#define _GNU_SOURCE
#include "cluster_helper.h"
#include "tap.h"

#include <signal.h>

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

int main(void)
{
    signal(SIGPIPE, SIG_IGN);
    if (cl_start(&c, 3, "always", 1))
        skip_all("cannot start three crdtd nodes");
    ok(1, "three nodes started (fsync always, anti-entropy every 1 s)");
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

    for (int i = 0; i < 3; i++)
        cl_writer_free(&w[i]);
    cl_stop(&c, failures != 0);
    return done_testing();
}
