/* test_crdtc_batch.c - crdtc writes every message queued in a writable turn as one write of frames
 * it frames and masks itself (gateway/wsmsg.c gw_ws_batch_*, client writer): thousands of
 * applies queued at once, over ws:// and wss://, must all be acked, applied once each and their
 * sum must come back through the subscription; a frame over the batch bound (and one over 64 KiB,
 * a 64-bit length) goes out alone.
 *
 * lws's server parses an unmasked client frame without complaint, so the ws:// client talks to
 * crdtd through a proxy here that reads every frame the client sends (RFC 6455 section 5.2,
 * written from the RFC) and checks what crdtd would not: each has the MASK bit, a masking key of
 * its own (fresh keys, section 5.3), and unmasks to one whole JSON message. Over wss:// the bytes
 * are encrypted, so there the end-to-end result is the check. */
#define _GNU_SOURCE /* memmem */
#include "tap.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdint.h>
#include <sys/socket.h>
#include <unistd.h>

#include "crdtc_helper.h"

#ifndef CRDTD_BIN
#error "CRDTD_BIN (the crdtd binary) must be defined"
#endif
#ifndef TLS_CERTS_SH
#error "TLS_CERTS_SH (scripts/tls-certs.sh) must be defined"
#endif

#define NAPPLY 3000 /* per burst: about 25 batches of 16 KiB */
#define BIG 87000   /* base64 of a 65250-byte timeline member (limit 65536): a 64-bit frame length \
                     */

/* ---- the checking proxy (ws:// only) -------------------------------------------------------- */

typedef struct proxy {
    int lfd, port, upstream_port;
    pthread_t th;
    volatile int stop;
    /* what the client sent, after its HTTP upgrade request */
    unsigned long frames, unmasked, bad_json, bad_frame, reads;
    uint32_t *keys;
    size_t nkeys, keys_cap;
    size_t biggest; /* the largest payload seen */
} proxy_t;

static int listen_any(int *port)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0), one = 1;
    struct sockaddr_in a = {.sin_family = AF_INET};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    socklen_t al = sizeof(a);
    if (fd < 0 || bind(fd, (struct sockaddr *)&a, sizeof(a)) || listen(fd, 4) ||
        getsockname(fd, (struct sockaddr *)&a, &al)) {
        if (fd >= 0)
            close(fd);
        return -1;
    }
    *port = ntohs(a.sin_port);
    return fd;
}

static int dial(int port)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (fd >= 0 && connect(fd, (struct sockaddr *)&a, sizeof(a))) {
        close(fd);
        return -1;
    }
    return fd;
}

static int send_all(int fd, const uint8_t *p, size_t n)
{
    while (n) {
        ssize_t w = send(fd, p, n, MSG_NOSIGNAL);
        if (w <= 0)
            return -1;
        p += w, n -= (size_t)w;
    }
    return 0;
}

/* Consumes whole client frames from buf[0..*len): checks each, keeps the rest. */
static void check_frames(proxy_t *px, uint8_t *buf, size_t *len)
{
    size_t at = 0;
    for (;;) {
        const uint8_t *p = buf + at;
        size_t n = *len - at;
        if (n < 2)
            break;
        bool masked = p[1] & 0x80;
        uint64_t pl = p[1] & 0x7f;
        size_t hl = 2;
        if (pl == 126) {
            if (n < 4)
                break;
            pl = (uint64_t)p[2] << 8 | p[3];
            hl = 4;
        } else if (pl == 127) {
            if (n < 10)
                break;
            pl = 0;
            for (int i = 0; i < 8; i++)
                pl = pl << 8 | p[2 + i];
            hl = 10;
        }
        if (masked)
            hl += 4;
        if (n < hl || n - hl < pl)
            break;
        px->frames++;
        uint8_t op = p[0] & 0x0f;
        if (!(p[0] & 0x80) || (p[0] & 0x70))
            px->bad_frame++; /* crdtc sends whole unfragmented messages, no RSV bits */
        if (!masked) {
            px->unmasked++;
        } else {
            const uint8_t *key = p + hl - 4;
            uint32_t k;
            memcpy(&k, key, 4);
            if (px->nkeys == px->keys_cap) {
                px->keys_cap = px->keys_cap ? px->keys_cap * 2 : 1024;
                px->keys = realloc(px->keys, px->keys_cap * sizeof(*px->keys));
            }
            px->keys[px->nkeys++] = k;
            if (op == 0x1) { /* text: unmasks to one JSON object */
                uint8_t *text = malloc(pl + 1);
                for (uint64_t i = 0; i < pl; i++)
                    text[i] = p[hl + i] ^ key[i & 3];
                json_t *j = json_loadb((const char *)text, pl, 0, NULL);
                px->bad_json += !json_is_object(j);
                json_decref(j);
                free(text);
            }
        }
        if (pl > px->biggest)
            px->biggest = pl;
        at += hl + pl;
    }
    memmove(buf, buf + at, *len - at);
    *len -= at;
}

static void *proxy_main(void *ud)
{
    proxy_t *px = ud;
    struct pollfd lp = {.fd = px->lfd, .events = POLLIN};
    while (!px->stop && poll(&lp, 1, 50) == 0)
        ;
    if (px->stop)
        return NULL;
    int cfd = accept(px->lfd, NULL, NULL), ufd = dial(px->upstream_port);
    if (cfd < 0 || ufd < 0)
        goto out;
    static uint8_t in[1 << 20], buf[4 << 20];
    size_t blen = 0;
    bool upgraded = false;
    struct pollfd fds[2] = {{.fd = cfd, .events = POLLIN}, {.fd = ufd, .events = POLLIN}};
    while (!px->stop) {
        if (poll(fds, 2, 50) <= 0)
            continue;
        if (fds[1].revents) { /* server -> client, as it is */
            ssize_t r = recv(ufd, in, sizeof(in), 0);
            if (r <= 0 || send_all(cfd, in, (size_t)r))
                break;
        }
        if (fds[0].revents) { /* client -> server, checked */
            ssize_t r = recv(cfd, in, sizeof(in), 0);
            if (r <= 0 || send_all(ufd, in, (size_t)r))
                break;
            px->reads++;
            if (blen + (size_t)r > sizeof(buf)) {
                px->bad_frame++;
                break;
            }
            memcpy(buf + blen, in, (size_t)r);
            blen += (size_t)r;
            if (!upgraded) {
                uint8_t *e = memmem(buf, blen, "\r\n\r\n", 4);
                if (!e)
                    continue;
                size_t hl = (size_t)(e - buf) + 4;
                memmove(buf, buf + hl, blen - hl);
                blen -= hl;
                upgraded = true;
            }
            check_frames(px, buf, &blen);
        }
    }
out:
    if (cfd >= 0)
        close(cfd);
    if (ufd >= 0)
        close(ufd);
    return NULL;
}

static int cmp_u32(const void *a, const void *b)
{
    uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;
    return x < y ? -1 : x > y;
}

static size_t distinct_keys(proxy_t *px)
{
    if (!px->nkeys)
        return 0;
    qsort(px->keys, px->nkeys, sizeof(*px->keys), cmp_u32);
    size_t d = 1;
    for (size_t i = 1; i < px->nkeys; i++)
        d += px->keys[i] != px->keys[i - 1];
    return d;
}

/* ---- the client side ------------------------------------------------------------------------ */

static int64_t counter_of(crdtc_t *c, const char *key)
{
    const crdt_obj_t *o = crdtc_local(c, key, strlen(key), 0);
    int64_t v;
    return o && crdt_counter_value(o, &v) == 0 ? v : INT64_MIN;
}

/* Queues NAPPLY increments of key (by 1..7), returns their sum; -1 if one was refused. */
static int64_t burst(crdtc_t *c, const char *key, int salt)
{
    int64_t sum = 0;
    for (int i = 0; i < NAPPLY; i++) {
        int by = (i + salt) % 7 + 1;
        json_t *op = json_pack("{s:s,s:s,s:i}", "type", "pncounter", "op", "incr", "by", by);
        int64_t id = crdtc_apply_op(c, key, strlen(key), op);
        json_decref(op);
        if (id <= 0)
            return -1;
        sum += by;
    }
    return sum;
}

/* One client's run: applies queued while offline, then sent on connect; a burst while
 * connected; a big apply between two bursts. */
static void run_client(const char *what, crdtc_loop_t *loop, int port, bool tls)
{
    tc_t t;
    char id[32], key[32];
    snprintf(id, sizeof(id), "batch-%s", what);
    snprintf(key, sizeof(key), "batch:%s", what);
    memset(&t, 0, sizeof(t));
    crdtc_config_t cfg = {.host = tls ? "localhost" : "127.0.0.1",
                          .port = port,
                          .client_id = id,
                          .tls = tls,
                          .no_reconnect = true,
                          .cb = {.welcome_cb = th_welcome,
                                 .change_cb = th_change,
                                 .subscribed_cb = th_subscribed,
                                 .ack_cb = th_ack,
                                 .error_cb = th_error,
                                 .close_cb = th_close},
                          .ud = &t};
    t.c = crdtc_new(loop, &cfg, NULL);
    if (!t.c) {
        ok(0, "%s: crdtc_new", what);
        return;
    }
    crdtc_t *c = t.c;
    int64_t want = burst(c, key, 0);
    ok(want > 0 && crdtc_pending(c) == NAPPLY, "%s: %d applies queued offline", what, NAPPLY);
    crdtc_subscribe(c, key, strlen(key), 0);
    crdtc_connect(c);
    bool acked = RUN_UNTIL(loop, t.acks >= NAPPLY || t.errors || t.closes, 30000);
    ok(acked && t.acks == NAPPLY && !t.errors && !t.closes,
       "%s: all %d sent on connect and acked (%d acks, %d errors '%s' %s, %d closes)", what, NAPPLY,
       t.acks, t.errors, t.last_error, t.last_error_msg, t.closes);

    /* a burst made in one go while connected, with a frame over the batch bound in the middle
     * (written alone, with a 64-bit length) */
    int64_t more = burst(c, key, 3);
    static char member[BIG + 1];
    for (size_t i = 0; i < BIG; i++)
        member[i] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"[i % 64];
    member[BIG] = '\0';
    char tkey[40];
    snprintf(tkey, sizeof(tkey), "batch:%s:tl", what);
    json_t *op = json_pack("{s:s,s:s,s:{s:s},s:f}", "type", "timeline", "op", "add", "member",
                           "base64", member, "score", 1.0);
    int64_t big_id = crdtc_apply_op(c, tkey, strlen(tkey), op);
    json_decref(op);
    int64_t more2 = burst(c, key, 5);
    ok(more > 0 && more2 > 0 && big_id > 0, "%s: two more bursts and a %d-byte apply queued", what,
       BIG);
    want += more + more2;
    acked = RUN_UNTIL(loop, t.acks >= 3 * NAPPLY + 1 || t.errors || t.closes, 30000);
    ok(acked && t.acks == 3 * NAPPLY + 1 && !t.errors && !t.closes && !crdtc_pending(c),
       "%s: every apply acked, none refused (%d acks, %d errors '%s' %s)", what, t.acks, t.errors,
       t.last_error, t.last_error_msg);
    is_int(t.dup_acks, 0, "%s: each applied once (no duplicate acks)", what);
    bool sum = RUN_UNTIL(loop, counter_of(c, key) == want, 20000);
    ok(sum, "%s: the subscription brings back the sum of every increment (%lld, want %lld)", what,
       (long long)counter_of(c, key), (long long)want);
    crdtc_free(c);
}

int main(void)
{
    signal(SIGPIPE, SIG_IGN);
    char *dir = test_tmpdir();
    char cmd[2048], cert[1100], keyf[1100], ca[1100];
    snprintf(cmd, sizeof(cmd), "sh '%s' '%s/pki' localhost", TLS_CERTS_SH, dir);
    if (system(cmd)) {
        rm_rf(dir);
        skip_all("openssl could not make certificates");
    }
    snprintf(cert, sizeof(cert), "%s/pki/localhost.pem", dir);
    snprintf(keyf, sizeof(keyf), "%s/pki/localhost.key", dir);
    snprintf(ca, sizeof(ca), "%s/pki/ca.pem", dir);
    crdtd_proc_t plain, tls;
    const char *pa[] = {"--no-persist", NULL};
    const char *ta[] = {"--no-persist", "--tls-cert", cert, "--tls-key", keyf, NULL};
    if (crdtd_start(&plain, CRDTD_BIN, dir, pa)) {
        rm_rf(dir);
        skip_all("crdtd did not start");
    }
    if (crdtd_start(&tls, CRDTD_BIN, dir, ta)) {
        crdtd_stop(&plain, SIGTERM, 5000);
        rm_rf(dir);
        skip_all("crdtd with TLS did not start");
    }

    /* ws://, through the checking proxy */
    proxy_t px = {.upstream_port = plain.port};
    px.lfd = listen_any(&px.port);
    ok(px.lfd >= 0 && pthread_create(&px.th, NULL, proxy_main, &px) == 0, "proxy started");
    crdtc_loop_t *loop = crdtc_loop_new();
    run_client("ws", loop, px.port, false);
    run_for(loop, 100); /* the close goes through */
    px.stop = 1;
    pthread_join(px.th, NULL);
    close(px.lfd);
    crdtc_loop_free(loop);
    /* hello + subscribe + 3 bursts + the big one (the close frame too, maybe) */
    unsigned long want_frames = 2 + 3 * NAPPLY + 1;
    ok(px.frames >= want_frames && px.frames <= want_frames + 1,
       "ws://: the proxy read %lu whole frames (want %lu) in %lu reads", px.frames, want_frames,
       px.reads);
    is_int(px.unmasked, 0, "ws://: every client frame has the MASK bit");
    is_int(px.bad_frame, 0, "ws://: every frame is final, without RSV bits");
    is_int(px.bad_json, 0, "ws://: every text frame unmasks to one JSON object");
    ok(px.biggest > BIG, "ws://: the big apply arrived whole (%zu bytes)", px.biggest);
    size_t d = distinct_keys(&px);
    /* 4-byte keys from the kernel's random source: 9,000 of them collide rarely (p ~ 1e-2 for
     * one pair), never many */
    ok(px.nkeys == px.frames && d + 3 >= px.nkeys,
       "ws://: a fresh masking key per frame (%zu distinct of %zu)", d, px.nkeys);
    free(px.keys);

    /* wss:// against the CA made here */
    crdtc_loop_t *tl = crdtc_loop_new_tls(ca);
    ok(tl != NULL, "a TLS loop");
    if (tl) {
        run_client("wss", tl, tls.port, true);
        run_for(tl, 100);
        crdtc_loop_free(tl);
    }

    is_int(crdtd_stop(&plain, SIGTERM, 10000), 0, "crdtd exits cleanly");
    is_int(crdtd_stop(&tls, SIGTERM, 10000), 0, "crdtd (TLS) exits cleanly");
    rm_rf(dir);
    free(dir);
    return done_testing();
}
