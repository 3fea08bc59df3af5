/* test_ws_idle.c - the crdt.v1 idle timeout against a real crdtd (--ws-idle-timeout 2): a client
 * that only answers the server's pings, or only sends its own, stays connected indefinitely; a
 * client that stops answering is closed with 1001 after the timeout; a client that never says
 * hello is closed with 4003 (docs/protocol.md, "Close codes"). The sessions run side by side, so
 * the whole test takes about 3.5 timeouts. */
#include "tap.h"

#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "http_client.h"
#include "ws_raw.h"

#ifndef CRDTD_BIN
#error "CRDTD_BIN (the crdtd binary) must be defined"
#endif

#define IDLE_S 2
#define RUN_MS (IDLE_S * 3500) /* how long the sessions that must survive are kept */

static uint64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

/* A session opened with hello; true once welcomed. */
static bool hello(ws_raw_t *w, int port, const char *client)
{
    if (ws_open(w, port, "crdt.v1") != 101)
        return false;
    char m[128];
    snprintf(m, sizeof(m), "{\"type\":\"hello\",\"client\":\"%s\"}", client);
    if (ws_text(w, m))
        return false;
    char *wel = ws_wait_type(w, "welcome", 5000);
    free(wel);
    return wel != NULL;
}

/* A text ping answered with a text pong: the session still serves. */
static bool alive(ws_raw_t *w)
{
    if (ws_text(w, "{\"type\":\"ping\"}"))
        return false;
    char *m = ws_wait_type(w, "pong", 5000);
    free(m);
    return m != NULL;
}

typedef struct {
    const char *name;
    ws_raw_t w;
    bool read;        /* read (and so answer pings, unless w.no_pong) during the run */
    bool send_pings;  /* send a WebSocket ping frame every 500 ms, never a message */
    uint64_t from_ms; /* when it last said anything meaningful (upgrade or welcome) */
    uint64_t closed_ms;
    int code; /* close code seen during the run; 0: none */
} client_t;

int main(void)
{
    char *dir = test_tmpdir();
    char data[512];
    snprintf(data, sizeof(data), "%s/d", dir);
    unsetenv("CRDTD_TOKEN_SECRET");
    char idle[16];
    snprintf(idle, sizeof(idle), "%d", IDLE_S);
    crdtd_proc_t s;
    const char *args[] = {"--data-dir", data, "--fsync", "no", "--ws-idle-timeout", idle, NULL};
    if (crdtd_start(&s, CRDTD_BIN, dir, args))
        bail_out("cannot start crdtd");

    client_t c[] = {
        {.name = "listener", .read = true},                    /* answers pings, sends nothing */
        {.name = "pinger", .send_pings = true},                /* sends pings, reads nothing */
        {.name = "deaf", .read = true},                        /* reads, answers nothing */
        {.name = "mute", .read = false},                       /* no hello, nothing at all */
        {.name = "nohello", .read = true, .send_pings = true}, /* no hello, pings and pongs */
    };
    enum { LISTENER, PINGER, DEAF, MUTE, NOHELLO, N };
    for (int i = 0; i < N; i++) {
        bool up = i < MUTE ? hello(&c[i].w, s.port, c[i].name)
                           : ws_open(&c[i].w, s.port, "crdt.v1") == 101;
        if (!up)
            bail_out("cannot open the %s session", c[i].name);
        c[i].from_ms = now_ms();
    }
    c[DEAF].w.no_pong = true;

    uint64_t start = now_ms(), last_ping = start;
    while (now_ms() - start < RUN_MS) {
        bool ping_now = now_ms() - last_ping >= 500;
        if (ping_now)
            last_ping = now_ms();
        for (int i = 0; i < N; i++) {
            if (c[i].code)
                continue;
            if (ping_now && c[i].send_pings)
                ws_frame(&c[i].w, WS_OP_PING, true, "k", 1);
            if (!c[i].read)
                continue;
            int op = ws_recv(&c[i].w, 20, NULL, NULL);
            if (op == WS_OP_CLOSE || op == -2) {
                c[i].code = c[i].w.close_code;
                c[i].closed_ms = now_ms();
            }
        }
    }

    /* (a) a client that only answers pings stays connected, and the server did ping it */
    is_int(c[LISTENER].code, 0, "a client that only answers pings stays connected for %d s",
           RUN_MS / 1000);
    cmp_ok(c[LISTENER].w.pings, ">=", 3, "the server pinged it while it was silent");
    ok(alive(&c[LISTENER].w), "and its session still serves");

    /* a client that only sends WebSocket pings (and never reads) stays connected */
    ok(alive(&c[PINGER].w), "a client that only sends ping frames stays connected for %d s",
       RUN_MS / 1000);
    is_int(c[PINGER].w.close_code, 0, "no close frame reached it");

    /* (b) a client that stops answering is closed with 1001 after the timeout */
    is_int(c[DEAF].code, 1001, "a client that stops answering pings is closed with 1001");
    is(c[DEAF].w.close_reason, "idle timeout", "reason \"idle timeout\"");
    cmp_ok(c[DEAF].w.pings, ">=", 1, "it was pinged before");
    uint64_t after = c[DEAF].closed_ms - c[DEAF].from_ms;
    cmp_ok(after, ">=", IDLE_S * 1000 - 100, "not before the timeout (%llu ms)",
           (unsigned long long)after);
    cmp_ok(after, "<=", IDLE_S * 1000 + 1500, "nor long after it");

    /* (c) no hello within the timeout: 4003, whether silent or answering pings */
    is_int(ws_wait_close(&c[MUTE].w, 5000), 4003, "a session that never says hello: 4003");
    ok(strncmp(c[MUTE].w.close_reason, "hello expected", 14) == 0, "reason \"%s\"",
       c[MUTE].w.close_reason);
    is_int(c[NOHELLO].code, 4003, "one that pings and answers pings but never says hello: 4003");
    after = c[NOHELLO].closed_ms - c[NOHELLO].from_ms;
    cmp_ok(after, ">=", IDLE_S * 1000 - 100, "after the timeout (%llu ms)",
           (unsigned long long)after);
    cmp_ok(after, "<=", IDLE_S * 1000 + 1500, "and soon after it");

    for (int i = 0; i < N; i++)
        ws_free(&c[i].w);
    int st = crdtd_stop(&s, SIGTERM, 10000);
    ok(st >= 0 && WIFEXITED(st) && WEXITSTATUS(st) == 0, "crdtd exits 0");
    rm_rf(dir);
    free(dir);
    return done_testing();
}
