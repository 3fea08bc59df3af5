/* test_ws_slow.c - a session that stops reading while a writer floods is closed by crdtd with 4008
 * (slow consumer); the client's memory stays bounded, and it resumes from its cursor and converges
 */
#include "tap.h"

#include <signal.h>
#include <stdint.h>
#include <sys/socket.h>

#include "crdtc_helper.h"

#ifndef CRDTD_BIN
#error "CRDTD_BIN (the crdtd binary) must be defined"
#endif

static crdtd_proc_t srv;
#define NKEYS 64

static bool all_same(crdtc_t *c)
{
    char key[32];
    for (int k = 0; k < NKEYS; k++) {
        snprintf(key, sizeof(key), "slow:%d", k);
        if (!same_as_server(c, srv.port, key))
            return false;
    }
    return true;
}

/* crdtd_ws_slow_consumer_total from /metrics, or -1. */
static long slow_total(void)
{
    hc_resp_t r = {0};
    long v = -1;
    if (hc_request(srv.port, "GET", "/metrics", NULL, &r) == 0 && r.status == 200) {
        const char *p = strstr(r.body, "\ncrdtd_ws_slow_consumer_total ");
        if (p)
            v = strtol(p + strlen("\ncrdtd_ws_slow_consumer_total "), NULL, 10);
    }
    hc_resp_free(&r);
    return v;
}

int main(void)
{
    signal(SIGPIPE, SIG_IGN);
    char *dir = test_tmpdir();
    const char *args[] = {"--no-persist", "--ws-send-queue", "65536", NULL};
    if (crdtd_start(&srv, CRDTD_BIN, dir, args)) {
        rm_rf(dir);
        skip_all("crdtd did not start");
    }
    /* two loops: the slow client's loop is simply not serviced while the writer floods */
    crdtc_loop_t *wl = crdtc_loop_new(), *sl = crdtc_loop_new();
    tc_t w, s;
    tc_new(&w, wl, srv.port, "slow-w", NULL, NULL);
    crdtc_config_t cfg = {.port = srv.port,
                          .client_id = "slow-s",
                          .max_message = 256 * 1024,
                          .backoff_min_ms = 20,
                          .backoff_max_ms = 100,
                          .cb = {.welcome_cb = th_welcome,
                                 .change_cb = th_change,
                                 .subscribed_cb = th_subscribed,
                                 .close_cb = th_close},
                          .ud = &s};
    memset(&s, 0, sizeof(s));
    s.c = crdtc_new(sl, &cfg, NULL);
    crdtc_subscribe_prefix(s.c, "slow:", 5, CRDTC_SINCE_AUTO);
    crdtc_connect(s.c);
    crdtc_connect(w.c);
    ok(RUN_UNTIL(sl, s.subscribed == 1, 5000), "the slow client subscribed");
    ok(RUN_UNTIL(wl, crdtc_ready(w.c), 5000), "the writer is connected");
    /* a smaller receive buffer than loopback's default, so the flood fills the kernel's buffers
     * and then the server's queue in a few MB */
    int fd = crdtc_fd(s.c), rcv = 65536;
    setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &rcv, sizeof(rcv));
    crdtc_set_reading(s.c, false);
    crdtc_loop_service(sl, 0);

    char member[1024];
    memset(member, 'm', sizeof(member));
    char *mb = NULL, key[32];
    int sent = 0;
    bool closed = false;
    uint64_t t0 = th_now_ms();
    while (!closed && sent < 40000 && th_now_ms() - t0 < 20000) {
        for (int i = 0; i < 100; i++, sent++) {
            snprintf(member, 16, "%08d", sent);
            member[8] = 'm';
            mb = crdt_base64_encode(member, 300, NULL);
            json_t *op = json_pack("{s:s,s:s,s:s,s:f}", "type", "timeline", "op", "add", "member",
                                   mb, "score", (double)sent);
            free(mb);
            snprintf(key, sizeof(key), "slow:%d", sent % NKEYS);
            crdtc_apply_op(w.c, key, strlen(key), op);
            json_decref(op);
        }
        RUN_UNTIL(wl, crdtc_pending(w.c) == 0, 5000);
        closed = slow_total() > 0;
    }
    ok(closed, "the server dropped the session that stopped reading (after %d writes)", sent);
    /* it reads again: what the kernel buffered, then the close frame (crdtd sends it once the
     * socket drains, within its 5 s backstop) */
    crdtc_set_reading(s.c, true);
    ok(RUN_UNTIL(sl, s.closes >= 1, 5000), "the client sees the close");
    is_int(s.last_close, 4008, "close code 4008 (slow consumer)");
    ok(s.reconnecting, "the client reconnects by itself");
    ok(crdtc_rx_buffered(s.c) <= 256 * 1024, "its input buffer stayed within max_message (%zu)",
       crdtc_rx_buffered(s.c));
    /* resumes from its cursor and converges */
    ok(RUN_UNTIL(sl, s.subscribed == 2, 10000), "resubscribed after the reconnect");
    bool conv = false;
    for (int i = 0; i < 100 && !(conv = all_same(s.c)); i++)
        run_for(sl, 20);
    ok(conv, "its replica equals the server's %d timelines", NKEYS);
    for (int k = 0; k < NKEYS && !conv; k++) {
        snprintf(key, sizeof(key), "slow:%d", k);
        crdt_buf_t x = local_state(s.c, key), y = rest_state(srv.port, key, strlen(key));
        if (!buf_eq(&x, &y)) {
            crdt_obj_t *lo = crdtc_local(s.c, key, strlen(key), 0),
                       *so = y.data ? crdt_obj_decode(y.data, y.len, NULL) : NULL;
            diag("%s: local %zu bytes (card %zu, max %u), server %zu (card %zu, max %u)", key,
                 x.len, lo ? crdt_timeline_card(lo) : 0, lo ? crdt_timeline_max_size(lo) : 0, y.len,
                 so ? crdt_timeline_card(so) : 0, so ? crdt_timeline_max_size(so) : 0);
            crdt_obj_free(so);
            k = NKEYS;
        }
        crdt_buf_free(&x), crdt_buf_free(&y);
    }
    size_t card = 0;
    for (int k = 0; k < NKEYS; k++) {
        snprintf(key, sizeof(key), "slow:%d", k);
        const crdt_obj_t *o = crdtc_local(s.c, key, strlen(key), 0);
        card += o ? crdt_timeline_card(o) : 0;
    }
    is_int((long long)card, sent, "every entry is there");
    /* and it keeps receiving live changes */
    int before = s.changes;
    json_t *op = json_pack("{s:s,s:s,s:f}", "op", "add", "member", "bGF0ZQ==", "score", 1e9);
    crdtc_apply_op(w.c, "slow:0", 6, op);
    json_decref(op);
    RUN_UNTIL(wl, crdtc_pending(w.c) == 0, 5000);
    ok(RUN_UNTIL(sl, s.changes > before, 5000), "live changes flow again");

    crdtc_free(s.c);
    crdtc_free(w.c);
    crdtc_loop_free(sl);
    crdtc_loop_free(wl);
    is_int(crdtd_stop(&srv, SIGTERM, 5000), 0, "crdtd exits cleanly");
    rm_rf(dir);
    free(dir);
    return done_testing();
}
