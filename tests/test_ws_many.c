/* test_ws_many.c - 1,000 concurrent crdt.v1 sessions on loopback: each subscribes, one write
 * reaches all of them */
#include "tap.h"

#include <signal.h>
#include <stdint.h>
#include <sys/resource.h>

#include "crdtc_helper.h"

#ifndef CRDTD_BIN
#error "CRDTD_BIN (the crdtd binary) must be defined"
#endif

#define NSESS 1000

static crdtd_proc_t srv;

static int subscribed, changes, closes;
static void cb_sub(crdtc_t *c, uint64_t id, uint64_t cur, void *ud)
{
    (void)c, (void)id, (void)cur, (void)ud;
    subscribed++;
}
static void cb_change(crdtc_t *c, const crdtc_change_t *ch, void *ud)
{
    (void)c, (void)ud;
    changes += !ch->full;
}
static void cb_close(crdtc_t *c, int code, const char *reason, bool again, void *ud)
{
    (void)c, (void)reason, (void)again, (void)ud;
    if (closes++ < 3)
        diag("a session closed: %d %s", code, reason);
}

int main(void)
{
    signal(SIGPIPE, SIG_IGN);
    /* both ends on this machine: 1,000 sockets here and 1,000 in crdtd (which inherits this) */
    struct rlimit rl;
    getrlimit(RLIMIT_NOFILE, &rl);
    if (rl.rlim_cur < 4096) {
        rl.rlim_cur = rl.rlim_max < 4096 ? rl.rlim_max : 4096;
        setrlimit(RLIMIT_NOFILE, &rl);
    }
    getrlimit(RLIMIT_NOFILE, &rl);
    if (rl.rlim_cur < 2 * NSESS + 100)
        skip_all("RLIMIT_NOFILE is %llu, too low for %d sessions", (unsigned long long)rl.rlim_cur,
                 NSESS);
    char *dir = test_tmpdir();
    const char *args[] = {"--no-persist", NULL};
    if (crdtd_start(&srv, CRDTD_BIN, dir, args)) {
        rm_rf(dir);
        skip_all("crdtd did not start");
    }
    crdtc_loop_t *loop = crdtc_loop_new();
    static crdtc_t *cs[NSESS];
    char id[32];
    int made = 0;
    uint64_t t0 = th_now_ms();
    for (int i = 0; i < NSESS; i++) {
        snprintf(id, sizeof(id), "many-%d", i);
        crdtc_config_t cfg = {
            .port = srv.port,
            .client_id = id,
            .backoff_min_ms = 50,
            .backoff_max_ms = 500,
            .cb = {.subscribed_cb = cb_sub, .change_cb = cb_change, .close_cb = cb_close}};
        cs[i] = crdtc_new(loop, &cfg, NULL);
        if (!cs[i])
            break;
        crdtc_subscribe(cs[i], "many:tl", 7, 0);
        crdtc_connect(cs[i]);
        made++;
        if (i % 50 == 49) /* let the handshakes progress while the rest are started */
            crdtc_loop_service(loop, 0);
    }
    is_int(made, NSESS, "1000 clients created");
    bool all = RUN_UNTIL(loop, subscribed >= NSESS, 30000);
    ok(all, "all 1000 sessions subscribed (%d) in %llu ms", subscribed,
       (unsigned long long)(th_now_ms() - t0));
    int ready = 0;
    for (int i = 0; i < made; i++)
        ready += crdtc_ready(cs[i]);
    is_int(ready, NSESS, "1000 sessions open at once");

    uint64_t t1 = th_now_ms();
    json_t *op = json_pack("{s:s,s:s,s:s,s:f}", "type", "timeline", "op", "add", "member",
                           "aGVsbG8=", "score", 1.0);
    crdtc_apply_op(cs[0], "many:tl", 7, op);
    json_decref(op);
    all = RUN_UNTIL(loop, changes >= NSESS, 20000);
    ok(all, "one write reached all %d sessions (%d) in %llu ms", NSESS, changes,
       (unsigned long long)(th_now_ms() - t1));
    bool same = true;
    for (int i = 0; i < made; i += 97)
        same = same && same_as_server(cs[i], srv.port, "many:tl");
    ok(same, "sampled replicas equal the server's state");
    is_int(closes, 0, "no session was closed");

    for (int i = 0; i < made; i++)
        crdtc_free(cs[i]);
    crdtc_loop_free(loop);
    is_int(crdtd_stop(&srv, SIGTERM, 10000), 0, "crdtd exits cleanly");
    rm_rf(dir);
    free(dir);
    return done_testing();
}
