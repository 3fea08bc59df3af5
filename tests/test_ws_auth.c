/* test_ws_auth.c - token checks seen through the crdtc library: bad, expired and missing tokens
 * close the session with 4001 and stop reconnects; read and write grants deny per key */
#include "tap.h"

#include <signal.h>
#include <stdint.h>

#include "crdtc_helper.h"
#include "token.h"

#ifndef CRDTD_BIN
#error "CRDTD_BIN (the crdtd binary) must be defined"
#endif

static crdtd_proc_t srv;
static crdtc_loop_t *loop;
static const char secret[] = "a-test-secret-of-32-bytes-------";

/* A token for sub with grants given as text prefixes (NULL-terminated lists). */
static char *mint(const char *sub, long ttl, const char *const *reads, const char *const *writes)
{
    gw_grant_t rg[8] = {{0}}, wg[8] = {{0}};
    size_t nr = 0, nw = 0;
    for (; reads && reads[nr]; nr++)
        rg[nr] = (gw_grant_t){(uint8_t *)reads[nr], strlen(reads[nr])};
    for (; writes && writes[nw]; nw++)
        wg[nw] = (gw_grant_t){(uint8_t *)writes[nw], strlen(writes[nw])};
    return gw_token_make(secret, strlen(secret), sub, (int64_t)time(NULL) + ttl, rg, nr, wg, nw);
}

static void refused(const char *name, const char *token)
{
    tc_t t;
    tc_new(&t, loop, srv.port, "auth-x", token, NULL);
    crdtc_connect(t.c);
    ok(RUN_UNTIL(loop, t.closes == 1, 5000), "%s: the session was closed", name);
    is_int(t.last_close, 4001, "%s: with close code 4001", name);
    ok(!t.reconnecting, "%s: and the client does not reconnect by itself", name);
    run_for(loop, 150);
    is_int(t.closes, 1, "%s: no further attempts", name);
    is_int(t.welcomes, 0, "%s: no welcome", name);
    crdtc_free(t.c);
}

int main(void)
{
    signal(SIGPIPE, SIG_IGN);
    char *dir = test_tmpdir();
    char data[1100], sfile[1100];
    snprintf(data, sizeof(data), "%s/data", dir);
    snprintf(sfile, sizeof(sfile), "%s/secret", dir);
    FILE *f = fopen(sfile, "w");
    fputs(secret, f);
    fclose(f);
    const char *args[] = {"--data-dir", data, "--token-secret-file", sfile, NULL};
    if (crdtd_start(&srv, CRDTD_BIN, dir, args)) {
        rm_rf(dir);
        skip_all("crdtd did not start");
    }
    loop = crdtc_loop_new();

    const char *all[] = {"", NULL}, *team_r[] = {"team:", NULL}, *team_w[] = {"team:w:", NULL};
    char *good = mint("alice", 3600, all, all);
    hc_set_token(good); /* the REST reads that check the server's state need one too */
    char *expired = mint("alice", -10, all, all);
    char *ro = mint("bob", 3600, team_r, NULL);
    char *rw = mint("carol", 3600, team_r, team_w);
    char *wo = mint("dave", 3600, NULL, all);
    ok(good && expired && ro && rw && wo, "tokens minted");

    refused("no token", NULL);
    refused("garbage token", "not-a-token");
    refused("expired token", expired);
    char *altered = strdup(good);
    altered[5] = altered[5] == 'A' ? 'B' : 'A';
    refused("altered token", altered);
    free(altered);
    char other[] = "another-secret-of-32-bytes------";
    char *forged =
        gw_token_make(other, strlen(other), "alice", (int64_t)time(NULL) + 60, NULL, 0, NULL, 0);
    refused("token of another secret", forged);
    free(forged);

    /* a good token: welcome, subscribe and apply anywhere */
    tc_t g;
    tc_new(&g, loop, srv.port, "auth-good", good, NULL);
    crdtc_subscribe_prefix(g.c, "", 0, CRDTC_SINCE_AUTO);
    crdtc_connect(g.c);
    ok(RUN_UNTIL(loop, g.subscribed == 1, 5000), "full grants: subscribed to every key");
    json_t *op = json_pack("{s:s,s:s}", "type", "gcounter", "op", "incr");
    crdtc_apply_op(g.c, "team:x", 6, op);
    ok(RUN_UNTIL(loop, g.acks == 1, 5000) && g.last_ack.applied, "and applied");

    /* read-only on team: */
    tc_t r;
    tc_new(&r, loop, srv.port, "auth-ro", ro, NULL);
    int64_t sid = crdtc_subscribe_prefix(r.c, "team:", 5, CRDTC_SINCE_AUTO);
    crdtc_connect(r.c);
    ok(RUN_UNTIL(loop, r.subscribed == 1, 5000), "read grant team: -> subscribe team: ok");
    ok(r.full_changes == 1 && same_as_server(r.c, srv.port, "team:x"), "with its catch-up");
    int64_t id = crdtc_apply_op(r.c, "team:x", 6, op);
    ok(RUN_UNTIL(loop, r.errors == 1, 5000), "a read-only token cannot write");
    is(r.last_error, "unauthorized", "error code unauthorized");
    ok(strstr(r.last_error_msg, "(read_only)") != NULL,
       "with the reason HTTP gives too (auth.c's grant check): %s", r.last_error_msg);
    ok(r.last_error_id == (uint64_t)id, "naming the op id");
    is_int(crdtc_pending(r.c), 0, "the refused apply is not retried");
    sid = crdtc_subscribe_prefix(r.c, "other:", 6, CRDTC_SINCE_AUTO);
    ok(RUN_UNTIL(loop, r.errors == 2, 5000), "subscribe outside the read grant refused");
    is(r.last_error, "unauthorized", "unauthorized");
    ok(strstr(r.last_error_msg, "(outside_grant)") != NULL, "outside_grant: %s", r.last_error_msg);
    ok(r.last_error_id == (uint64_t)sid, "naming the request id");
    crdtc_subscribe_prefix(r.c, "tea", 3, CRDTC_SINCE_AUTO);
    ok(RUN_UNTIL(loop, r.errors == 3, 5000), "a prefix wider than the grant is refused");
    crdtc_subscribe(r.c, "team:y", 6, CRDTC_SINCE_AUTO);
    ok(RUN_UNTIL(loop, r.subscribed == 2, 5000), "a key under the grant is fine");
    is_int(r.closes, 0, "the session stayed open through the denials");
    long long before = rest_counter(srv.port, "team:x");
    is_int(before, 1, "nothing of the denied write took effect");

    /* read team:, write only team:w: */
    tc_t w;
    tc_new(&w, loop, srv.port, "auth-rw", rw, NULL);
    crdtc_connect(w.c);
    RUN_UNTIL(loop, crdtc_ready(w.c), 5000);
    crdtc_apply_op(w.c, "team:x", 6, op);
    ok(RUN_UNTIL(loop, w.errors == 1, 5000), "write grant team:w: does not cover team:x");
    ok(strstr(w.last_error_msg, "(outside_grant)") != NULL, "outside_grant: %s", w.last_error_msg);
    crdtc_apply_op(w.c, "team:w:1", 8, op);
    ok(RUN_UNTIL(loop, w.acks == 1, 5000) && w.last_ack.applied, "but covers team:w:1");
    ok(RUN_UNTIL(loop, r.changes >= 2, 5000), "which the reader of team: receives");

    /* write-only: cannot subscribe */
    tc_t o;
    tc_new(&o, loop, srv.port, "auth-wo", wo, NULL);
    crdtc_subscribe(o.c, "team:x", 6, CRDTC_SINCE_AUTO);
    crdtc_connect(o.c);
    ok(RUN_UNTIL(loop, o.errors == 1, 5000), "a write grant does not imply a read grant");
    is(o.last_error, "unauthorized", "unauthorized");
    is_int(o.subscribed, 0, "nothing subscribed");
    json_decref(op);

    /* a token that expires during the session: closed with 4001, no reconnect */
    char *brief = mint("erin", 2, all, all);
    tc_t e;
    tc_new(&e, loop, srv.port, "auth-brief", brief, NULL);
    crdtc_connect(e.c);
    ok(RUN_UNTIL(loop, e.welcomes == 1, 5000), "a token valid for 2 s is welcomed");
    ok(RUN_UNTIL(loop, e.closes == 1, 5000), "the session is closed when it expires");
    is_int(e.last_close, 4001, "with 4001");
    ok(!e.reconnecting, "and the client waits for a new token");
    char *renewed = mint("erin", 3600, all, all);
    crdtc_set_token(e.c, renewed);
    crdtc_connect(e.c);
    ok(RUN_UNTIL(loop, e.welcomes == 2, 5000), "a renewed token reconnects");
    crdtc_free(e.c);
    free(brief), free(renewed);

    crdtc_free(g.c);
    crdtc_free(r.c);
    crdtc_free(w.c);
    crdtc_free(o.c);
    free(good), free(expired), free(ro), free(rw), free(wo);
    crdtc_loop_free(loop);
    is_int(crdtd_stop(&srv, SIGTERM, 5000), 0, "crdtd exits cleanly");
    rm_rf(dir);
    free(dir);
    return done_testing();
}
