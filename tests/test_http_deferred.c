/* test_http_deferred.c - REST and roshi over a store whose completions come later: responses
 * wait for them, and a connection that closes while its store call is in flight is dropped
 * without touching freed memory (run under ASan in the sanitizer build)
 *
 * The server runs in this process (crdtd_core, the units without main.c) over a test-only store:
 * `deferred` wraps the embedded store and queues every call that has a completion until the test
 * runs the queue, as a store over the network would deliver them.
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

enum call_kind { C_GET, C_GET_MANY, C_WRITE, C_APPLY, C_CHANGES, C_FP };

typedef struct call {
    enum call_kind kind;
    uint8_t *key;
    size_t klen;
    crdt_bytes_t *keys; /* get_many: copies */
    size_t nkeys;
    crdt_mut_t m; /* write: bytes copied into mbytes, state cloned */
    uint8_t *mbytes;
    crdt_obj_t *obj; /* apply's delta, write's merge state: clones */
    uint64_t origin, since;
    size_t limit;
    void *cb, *cb2, *ud;
    struct call *next;
} call_t;

typedef struct deferred {
    crdt_store_t base;
    crdt_store_t *inner;
    call_t *head, *tail;
    size_t queued, ran;
} deferred_t;

static deferred_t *dfd(crdt_store_t *st)
{
    return (deferred_t *)st;
}
static const deferred_t *cdfd(const crdt_store_t *st)
{
    return (const deferred_t *)st;
}

static uint8_t *dup_bytes(const void *p, size_t n)
{
    uint8_t *d = malloc(n ? n : 1);
    if (d && n)
        memcpy(d, p, n);
    return d;
}

static call_t *enqueue(crdt_store_t *st, enum call_kind kind, const void *key, size_t klen,
                       void *cb, void *ud)
{
    deferred_t *d = dfd(st);
    call_t *c = calloc(1, sizeof(*c));
    if (!c)
        abort(); /* a test harness out of memory has nothing better to do */
    c->kind = kind;
    c->key = key ? dup_bytes(key, klen) : NULL;
    c->klen = klen;
    c->cb = cb;
    c->ud = ud;
    if (d->tail)
        d->tail->next = c;
    else
        d->head = c;
    d->tail = c;
    d->queued++;
    return c;
}

static void call_free(call_t *c)
{
    for (size_t i = 0; i < c->nkeys; i++)
        free((void *)c->keys[i].data);
    free(c->keys);
    free(c->key);
    free(c->mbytes);
    crdt_obj_free(c->obj);
    free(c);
}

/* Runs the queued calls (and those their completions queue) against the inner store; returns how
 * many ran. */
static size_t deferred_run(crdt_store_t *st)
{
    deferred_t *d = dfd(st);
    size_t n = 0;
    while (d->head) {
        call_t *c = d->head;
        d->head = c->next;
        if (!d->head)
            d->tail = NULL;
        d->queued--;
        switch (c->kind) {
        case C_GET: crdt_store_get(d->inner, c->key, c->klen, c->cb, c->ud); break;
        case C_GET_MANY: crdt_store_get_many(d->inner, c->keys, c->nkeys, c->cb, c->ud); break;
        case C_WRITE: crdt_store_write(d->inner, c->key, c->klen, &c->m, c->cb, c->ud); break;
        case C_APPLY:
            crdt_store_apply(d->inner, c->key, c->klen, c->obj, c->origin, c->cb, c->ud);
            break;
        case C_CHANGES:
            crdt_store_changes(d->inner, c->since, c->limit, (crdt_feed_cb)c->cb, c->cb2, c->ud);
            break;
        case C_FP: crdt_store_fingerprint(d->inner, c->key, c->klen, c->cb, c->ud); break;
        }
        call_free(c);
        n++;
        d->ran++;
    }
    return n;
}

static void d_close(crdt_store_t *st)
{
    deferred_t *d = dfd(st);
    while (d->head) { /* the interface's rule: pending completions are dropped */
        call_t *c = d->head;
        d->head = c->next;
        call_free(c);
    }
    crdt_store_close(d->inner);
    free(d);
}

static void d_get(crdt_store_t *st, const void *key, size_t klen, crdt_store_get_cb cb, void *ud)
{
    enqueue(st, C_GET, key, klen, (void *)cb, ud);
}

static void d_get_many(crdt_store_t *st, const crdt_bytes_t *keys, size_t n,
                       crdt_store_get_many_cb cb, void *ud)
{
    call_t *c = enqueue(st, C_GET_MANY, NULL, 0, (void *)cb, ud);
    c->keys = calloc(n ? n : 1, sizeof(*c->keys));
    for (size_t i = 0; i < n; i++)
        c->keys[i] = (crdt_bytes_t){dup_bytes(keys[i].data, keys[i].len), keys[i].len};
    c->nkeys = n;
}

static void d_write(crdt_store_t *st, const void *key, size_t klen, const crdt_mut_t *m,
                    crdt_store_write_cb cb, void *ud)
{
    call_t *c = enqueue(st, C_WRITE, key, klen, (void *)cb, ud);
    c->m = *m;
    if (m->bytes) {
        c->mbytes = dup_bytes(m->bytes, m->len);
        c->m.bytes = c->mbytes;
    }
    if (m->state) {
        c->obj = crdt_obj_clone(m->state);
        c->m.state = c->obj;
    }
}

static void d_apply(crdt_store_t *st, const void *key, size_t klen, const crdt_obj_t *delta,
                    uint64_t origin, crdt_store_write_cb cb, void *ud)
{
    call_t *c = enqueue(st, C_APPLY, key, klen, (void *)cb, ud);
    c->obj = crdt_obj_clone(delta);
    c->origin = origin;
}

static void d_changes(crdt_store_t *st, uint64_t since, size_t limit, crdt_feed_cb each,
                      crdt_store_done_cb done, void *ud)
{
    call_t *c = enqueue(st, C_CHANGES, NULL, 0, (void *)each, ud);
    c->cb2 = (void *)done;
    c->since = since;
    c->limit = limit;
}

static void d_fingerprint(crdt_store_t *st, const void *key, size_t klen, crdt_store_fp_cb cb,
                          void *ud)
{
    enqueue(st, C_FP, key, klen, (void *)cb, ud);
}

/* Scans and marks are not used by REST or roshi: straight through. */
static void d_scan(crdt_store_t *st, uint64_t cursor, size_t limit, crdt_store_key_cb each,
                   crdt_store_done_cb done, void *ud)
{
    crdt_store_scan(dfd(st)->inner, cursor, limit, each, done, ud);
}
static void d_mark_get(crdt_store_t *st, const char *name, crdt_store_mark_cb cb, void *ud)
{
    crdt_store_mark_get(dfd(st)->inner, name, cb, ud);
}
static void d_mark_put(crdt_store_t *st, const char *name, const void *p, size_t n,
                       crdt_store_status_cb cb, void *ud)
{
    crdt_store_mark_put(dfd(st)->inner, name, p, n, cb, ud);
}
static uint64_t d_last_seq(const crdt_store_t *st)
{
    return crdt_store_last_seq(cdfd(st)->inner);
}
static uint64_t d_durable_seq(const crdt_store_t *st)
{
    return crdt_store_durable_seq(cdfd(st)->inner);
}
static uint64_t d_node_id(const crdt_store_t *st)
{
    return crdt_store_node_id(cdfd(st)->inner);
}
static int d_hlc_now(crdt_store_t *st, crdt_hlc_ts_t *ts)
{
    return crdt_store_hlc_now(dfd(st)->inner, ts);
}
static int d_flush(crdt_store_t *st)
{
    return crdt_store_flush(dfd(st)->inner);
}
static void d_tick(crdt_store_t *st, uint64_t now_ms)
{
    crdt_store_tick(dfd(st)->inner, now_ms);
}
static const char *d_last_error(const crdt_store_t *st)
{
    return crdt_store_last_error(cdfd(st)->inner);
}
static void d_stats(const crdt_store_t *st, crdt_store_stats_t *out)
{
    crdt_store_stats(cdfd(st)->inner, out);
}

static const crdt_store_ops_t deferred_ops = {
    .name = "deferred",
    .close = d_close,
    .get = d_get,
    .get_many = d_get_many,
    .write = d_write,
    .apply = d_apply,
    .changes = d_changes,
    .scan = d_scan,
    .fingerprint = d_fingerprint,
    .mark_get = d_mark_get,
    .mark_put = d_mark_put,
    .last_seq = d_last_seq,
    .durable_seq = d_durable_seq,
    .node_id = d_node_id,
    .hlc_now = d_hlc_now,
    .flush = d_flush,
    .tick = d_tick,
    .last_error = d_last_error,
    .stats = d_stats,
};

/* The inner store's events reach whoever listens on the outer one. */
static void fwd_change(void *ud, const void *key, size_t klen, uint64_t seq,
                       const crdt_obj_t *delta, uint64_t origin)
{
    deferred_t *d = ud;
    if (d->base.ev.change)
        d->base.ev.change(d->base.ev.ud, key, klen, seq, delta, origin);
}
static void fwd_durable(void *ud, uint64_t seq)
{
    deferred_t *d = ud;
    if (d->base.ev.durable)
        d->base.ev.durable(d->base.ev.ud, seq);
}

static crdt_store_t *deferred_open(const char *dir)
{
    crdt_replica_config_t cfg;
    crdt_replica_config_init(&cfg);
    cfg.dir = dir;
    cfg.node_id = 7;
    crdt_error_t err = {0};
    deferred_t *d = calloc(1, sizeof(*d));
    d->inner = crdt_store_embedded_open(&cfg, &err);
    if (!d->inner) {
        free(d);
        return NULL;
    }
    d->base.ops = &deferred_ops;
    crdt_store_set_events(d->inner, &(crdt_store_events_t){fwd_change, fwd_durable, d});
    return &d->base;
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
    char body[16384], k[64], path[256];
    hc_b64("deferred", k, true);

    /* a write waits for its store calls: nothing is answered while they are queued */
    snprintf(path, sizeof(path), "/v1/keys/%s", k);
    int fd = send_request(port, "POST", path, "{\"type\":\"pncounter\",\"op\":\"incr\",\"by\":5}");
    ok(fd >= 0, "connected");
    int st = await_response(fd, false, 200, body, sizeof(body));
    is_int(st, -1, "no response while the store has not completed");
    cmp_ok((int)dfd(srv.store)->queued, ">", 0, "the write's store call is queued");
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
    st = request(port, "POST", path, "{\"type\":\"orset\",\"op\":\"add\",\"member\":\"!!\"}", body,
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
        size_t ran = dfd(srv.store)->ran;
        uint64_t dropped = srv.metrics.replies_dropped;
        for (int i = 0; i < 200 && !dfd(srv.store)->queued; i++)
            gw_loop_service(&srv, 5);
        cmp_ok((int)dfd(srv.store)->queued, ">", 0, "%s is waiting for the store", what[round]);
        /* a reset: lws sees it at once on a connection it reads from (a request with a body); a
         * GET's connection is not polled while its transaction is open, so lws finds it closed
         * only when the response is written */
        struct linger lg = {1, 0};
        setsockopt(fd, SOL_SOCKET, SO_LINGER, &lg, sizeof(lg));
        close(fd);
        serve(100);
        size_t n = deferred_run(srv.store);
        cmp_ok((int)n, ">", 0, "its completions ran after the connection closed");
        cmp_ok((int)(dfd(srv.store)->ran - ran), ">", 0, "the store served them");
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
    snprintf(tl, sizeof(tl), "/v1/timelines?keys=dGw,%s", k);
    st = request(port, "GET", tl, NULL, body, sizeof(body));
    is_int(st, 409, "a select over a non-timeline key is refused from the completion: %s", body);

    gw_loop_finish(&srv);
    crdt_store_close(srv.store);
    rm_rf(dir);
    free(dir);
    done_testing();
}
