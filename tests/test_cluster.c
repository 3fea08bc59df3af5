/* test_cluster.c - three crdtd nodes in a full mesh, random writes of every type to all three at
 * once: they converge to byte-identical states and keep every acknowledged write */
#define _GNU_SOURCE
#include "cluster_helper.h"
#include "tap.h"

#include <signal.h>

#if defined(__SANITIZE_ADDRESS__)
#define OPS_PER_NODE 300
#else
#define OPS_PER_NODE 800
#endif

static int converge_and_check(cluster_t *c, cl_writer_t *w, int nw, const char *what)
{
    long ms = cl_wait_converged(c, 20000);
    ok(ms >= 0, "%s: the three digests agree (%ld ms after the writes)", what, ms);
    is_int(cl_compare_keys(c), 0, "%s: every key's encoded state is byte-identical on all nodes",
           what);
    int bad = 0;
    for (int i = 0; i < c->n; i++) {
        int checked = 0;
        int v = cl_check_writes(c, i, w, nw, &checked);
        is_int(v, 0, "%s: node %d holds every acknowledged write (%d facts checked)", what, i + 1,
               checked);
        cmp_ok(checked, ">", 50, "%s: ... and that check was not vacuous", what);
        bad += v;
    }
    return bad;
}

int main(void)
{
    signal(SIGPIPE, SIG_IGN);
    cluster_t c;
    if (cl_start(&c, 3, "everysec", 1))
        skip_all("cannot start three crdtd nodes");
    ok(1, "three nodes started, ports %d %d %d", c.node[0].proc.port, c.node[1].proc.port,
       c.node[2].proc.port);

    /* round 1: all three write at once, as fast as they are answered */
    static cl_writer_t w[3];
    for (int i = 0; i < 3; i++) {
        w[i] =
            (cl_writer_t){.c = &c, .node = i, .max_ops = OPS_PER_NODE, .seed = 1000u + (unsigned)i};
        ok(cl_writer_start(&w[i]) == 0, "writer %d started", i + 1);
    }
    for (int i = 0; i < 3; i++) {
        cl_writer_wait(&w[i]);
        is_int(w[i].acked, OPS_PER_NODE, "writer %d: every write acknowledged (%s)", i + 1,
               w[i].last_error[0] ? w[i].last_error : "no error");
    }
    int bad = converge_and_check(&c, w, 3, "round 1");

    /* round 2: more writes on the same keys, now with removes of members every node has seen */
    for (int i = 0; i < 3; i++) {
        w[i].max_ops += OPS_PER_NODE / 2;
        w[i].seed += 17;
        ok(cl_writer_start(&w[i]) == 0, "writer %d started again", i + 1);
    }
    for (int i = 0; i < 3; i++) {
        cl_writer_wait(&w[i]);
        is_int(w[i].unknown + w[i].errors, 0, "writer %d: round 2 all acknowledged", i + 1);
    }
    bad += converge_and_check(&c, w, 3, "round 2");

    /* Nothing here corrupts a link: no peer may ever receive a message it cannot parse (a frame
     * shared by two links was once scrambled by lws's in-place client masking). */
    for (int i = 0; i < 3; i++) {
        int refused =
            cl_log_count(&c, i, "protocol error") + cl_log_count(&c, i, "unknown message");
        is_int(refused, 0, "node %d: no peer link refused for a protocol error in a fault-free run",
               i + 1);
    }

    for (int i = 0; i < 3; i++)
        cl_writer_free(&w[i]);
    cl_stop(&c, bad != 0);
    return done_testing();
}
