/* test_http_deferred.c - REST and roshi over a store whose completions come later: responses
 * wait for them, and a connection that closes while its store call is in flight is dropped
 * without touching freed memory (run under ASan in the sanitizer build)
 *
 * The server runs in this process (crdtd_core, the units without main.c) over the deferred store
 * (crdt_store_deferred_wrap around the embedded store): every call that has a completion waits
 * until the test runs them, as a store over the network would deliver them.
 */
#include <errno.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "http.h"
#include "http_client.h"
#include "loop.h"
#include "rest.h"
#include "roshi.h"
#include "server.h"
#include "tap.h"

/* ---- the deferred store ---------------------------------------------------------------------- */

static size_t calls_run; /* store calls run so far */

static crdt_store_t *deferred_open(const char *dir)
{
    crdt_replica_config_t cfg;
    crdt_replica_config_init(&cfg);
    cfg.dir = dir;
    cfg.node_id = 7;
    crdt_error_t err = {0};
    crdt_store_t *inner = crdt_store_embedded_open(&cfg, &err);
    if (!inner)
        return NULL;
    crdt_store_t *st = crdt_store_deferred_wrap(inner);
    if (!st)
        crdt_store_close(inner);
    return st;
}

/* Runs the queued calls and those their completions queue; returns how many ran. */
static size_t deferred_run(crdt_store_t *st)
{
    size_t n = 0, k;
    while ((k = crdt_store_deferred_run(st)))
        n += k;
    calls_run += n;
    return n;
}

static size_t queued(const crdt_store_t *st)
{
    return crdt_store_deferred_pending(st);
}

/* ---- a server in this process ---------------------------------------------------------------- */

static gw_server_t srv;

static void route(gw_server_t *s, gw_exchange_t *x)
{
    if (x->rq.roshi)
        gw_roshi_handle(s, x);
    else
        gw_rest_handle(s, x);
}

static struct lws_protocols protocols[] = {
    {"http", gw_http_callback, 0, 0, 0, NULL, 0},
    {NULL, NULL, 0, 0, 0, NULL, 0},
};

static void serve(int ms)
{
    for (int i = 0; i < ms / 5; i++)
        gw_loop_service(&srv, 5);
}

static int send_request(int port, const char *method, const char *path, const char *body)
{
    int fd = hc_connect(port);
    if (fd < 0)
        return -1;
    char head[2048];
    int n = snprintf(head, sizeof(head),
                     "%s %s HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: %zu\r\n\r\n%s", method,
                     path, body ? strlen(body) : 0, body ? body : "");
    if (send(fd, head, (size_t)n, 0) != n) {
        close(fd);
        return -1;
    }
    return fd;
}

/* Reads what arrived on fd without blocking (appending to buf); the server keeps running. */
static size_t drain(int fd, char *buf, size_t len, size_t cap)
{
    for (;;) {
        ssize_t k = recv(fd, buf + len, cap - 1 - len, MSG_DONTWAIT);
        if (k <= 0)
            break;
        len += (size_t)k;
    }
    buf[len] = '\0';
    return len;
}

/* Serves (running the deferred completions when run_store) until fd has a whole response, for
 * at most ms. Returns the status, the body in body[]; -1 when none came. */
static int await_response(int fd, bool run_store, int ms, char *body, size_t cap)
{
    char buf[16384];
    size_t len = 0;
    for (int i = 0; i < ms / 5; i++) {
        if (run_store)
            deferred_run(srv.store);
        gw_loop_service(&srv, 5);
        len = drain(fd, buf, len, sizeof(buf));
        char *end = strstr(buf, "\r\n\r\n");
        const char *cl = strstr(buf, "content-length: ");
        if (!cl)
            cl = strstr(buf, "Content-Length: ");
        if (end && cl && len >= (size_t)(end + 4 - buf) + strtoul(cl + 16, NULL, 10)) {
            snprintf(body, cap, "%s", end + 4);
            return atoi(buf + 9);
        }
    }
    return -1;
}

static int request(int port, const char *method, const char *path, const char *json, char *body,
                   size_t cap)
{
    int fd = send_request(port, method, path, json);
    if (fd < 0)
        return -1;
    int st = await_response(fd, true, 3000, body, cap);
    close(fd);
    return st;
}

int main(void)
{
    char *dir = test_tmpdir();
    gw_config_defaults(&srv.cfg);
    snprintf(srv.cfg.listen.host, sizeof(srv.cfg.listen.host), "127.0.0.1");
    srv.cfg.listen.port = 0;
    srv.cfg.roshi_enabled = true;
    snprintf(srv.cfg.roshi.host, sizeof(srv.cfg.roshi.host), "127.0.0.1");
    srv.cfg.roshi.port = 0;
    srv.store = deferred_open(dir);
    if (!srv.store)
        skip_all("cannot open a store in %s", dir);
    srv.route = route;
    protocols[0].per_session_data_size = gw_http_session_size();
    if (gw_loop_start(&srv, protocols))
        skip_all("cannot start the loop");
    int port = srv.main_port, rport = srv.roshi_port;
    char body[16384], path[256];
    const char *k = "deferred";

    /* a write waits for its store calls: nothing is answered while they are queued */
    snprintf(path, sizeof(path), "/v1/keys/%s", k);
    int fd = send_request(port, "POST", path, "{\"type\":\"pncounter\",\"op\":\"incr\",\"by\":5}");
    ok(fd >= 0, "connected");
    int st = await_response(fd, false, 200, body, sizeof(body));
    is_int(st, -1, "no response while the store has not completed");
    cmp_ok((int)queued(srv.store), ">", 0, "the write's store call is queued");
    st = await_response(fd, true, 3000, body, sizeof(body));
    is_int(st, 200, "answered once the completions ran");
    ok(strstr(body, "\"applied\":1") != NULL, "applied 1: %s", body);
    close(fd);

    st = request(port, "GET", path, NULL, body, sizeof(body));
    is_int(st, 200, "GET answered from its completions");
    ok(strstr(body, "\"value\":5") != NULL, "value 5: %.80s", body);
    ok(strstr(body, "\"fingerprint\"") != NULL, "the fingerprint's completion joined the answer");

    /* without a type, the op is parsed only once the store told the key's type */
    st = request(port, "POST", path, "{\"op\":\"decr\",\"by\":2}", body, sizeof(body));
    is_int(st, 200, "op without a type on an existing key");
    st = request(port, "GET", path, NULL, body, sizeof(body));
    ok(strstr(body, "\"value\":3") != NULL, "value 3 after decr 2: %.80s", body);
    st = request(port, "POST", path, "{\"type\":\"orset\",\"op\":\"add\",\"member\":{\"base64\":\"!!\"}}", body,
                 sizeof(body));
    is_int(st, 409, "a key of another type wins over a bad member, as before: %s", body);

    /* a connection that closes while its store call is in flight */
    for (int round = 0; round < 3; round++) {
        const char *what[] = {"a POST", "a GET", "a roshi insert"};
        if (round == 2)
            fd = send_request(rport, "POST", "/",
                              "[{\"key\":\"dGw=\",\"score\":1,\"member\":\"bQ==\"}]");
        else
            fd = send_request(port, round ? "GET" : "POST", path,
                              round ? NULL : "{\"type\":\"pncounter\",\"op\":\"incr\"}");
        size_t ran = calls_run;
        uint64_t dropped = srv.metrics.replies_dropped;
        for (int i = 0; i < 200 && !queued(srv.store); i++)
            gw_loop_service(&srv, 5);
        cmp_ok((int)queued(srv.store), ">", 0, "%s is waiting for the store", what[round]);
        /* a reset: lws sees it at once on a connection it reads from (a request with a body); a
         * GET's connection is not polled while its transaction is open, so lws finds it closed
         * only when the response is written */
        struct linger lg = {1, 0};
        setsockopt(fd, SOL_SOCKET, SO_LINGER, &lg, sizeof(lg));
        close(fd);
        serve(100);
        size_t n = deferred_run(srv.store);
        cmp_ok((int)n, ">", 0, "its completions ran after the connection closed");
        cmp_ok((int)(calls_run - ran), ">", 0, "the store served them");
        if (round == 1)
            ok(srv.metrics.replies_dropped - dropped <= 1, "the GET's reply: sent into the reset "
                                                           "connection or dropped");
        else
            is_int((int)(srv.metrics.replies_dropped - dropped), 1,
                   "the reply found its connection gone and was dropped");
        serve(50);
    }
    st = request(port, "GET", path, NULL, body, sizeof(body));
    ok(strstr(body, "\"value\":4") != NULL, "the write of the closed connection was applied: %.80s",
       body);
    st = request(rport, "GET", "/?coalesce=true", "[\"dGw=\"]", body, sizeof(body));
    is_int(st, 200, "roshi select over the deferred store");
    ok(strstr(body, "\"member\":\"bQ==\"") != NULL, "the roshi insert of the closed connection: %s",
       body);

    /* the change feed and a multi-key read complete later too */
    st = request(port, "GET", "/v1/changes?since=0", NULL, body, sizeof(body));
    is_int(st, 200, "change feed");
    ok(strstr(body, "\"last_seq\"") != NULL, "feed answered: %.80s", body);
    char tl[256];
    snprintf(tl, sizeof(tl), "/v1/timelines?keys=tl,%s", k);
    st = request(port, "GET", tl, NULL, body, sizeof(body));
    is_int(st, 409, "a select over a non-timeline key is refused from the completion: %s", body);

    /* the key listing: one scan after the other, each completing later */
    fd = send_request(port, "GET", "/v1/keys?limit=1", NULL);
    st = await_response(fd, false, 200, body, sizeof(body));
    is_int(st, -1, "the listing waits for its scan");
    st = await_response(fd, true, 3000, body, sizeof(body));
    is_int(st, 200, "and answers once the scans completed");
    ok(strstr(body, "{\"keys\":[\"deferred\"],\"next\":\"ZGVmZXJyZWQ\"}") != NULL,
       "the first key in key order, and next: %s", body);
    close(fd);
    st = request(port, "GET", "/v1/keys?after64=ZGVmZXJyZWQ", NULL, body, sizeof(body));
    ok(st == 200 && strstr(body, "{\"keys\":[\"tl\"],\"next\":null}") != NULL,
       "the page after it: %s", body);

    gw_loop_finish(&srv);
    crdt_store_close(srv.store);
    rm_rf(dir);
    free(dir);
    done_testing();
}
