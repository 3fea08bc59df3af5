/* bench_catchup.c - the C side of bench/bench_browser.sh: a fresh crdtc client catches up one
 * timeline key from a running crdtd over loopback, then "renders" it (each entry formatted as a
 * text line into one buffer, as the page makes one <li> per entry), timed from connect to
 * rendered. One run per process, so nothing is warm but the server.
 *
 *   bench_catchup PORT KEY N [json|binary]
 *
 * Prints: catchup_ms (connect, welcome, subscribe, the state merged, subscribed), render_ms,
 * total_ms, entries, bytes_in. Exit 1 when the catch-up does not complete within 30 s or holds
 * another number of entries than N. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "crdtc.h"

static double now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec / 1e6;
}

static bool synced, failed;

static void on_subscribed(crdtc_t *c, uint64_t id, uint64_t cursor, void *ud)
{
    (void)c, (void)id, (void)cursor, (void)ud;
    synced = true;
}

static void on_error(crdtc_t *c, uint64_t id, const char *code, const char *msg, void *ud)
{
    (void)c, (void)id, (void)ud;
    fprintf(stderr, "bench_catchup: error %s: %s\n", code, msg);
    failed = true;
}

int main(int argc, char **argv)
{
    if (argc < 4) {
        fprintf(stderr, "usage: bench_catchup PORT KEY N [json|binary]\n");
        return 2;
    }
    int port = atoi(argv[1]);
    const char *key = argv[2];
    long n = atol(argv[3]);
    bool binary = argc > 4 && !strcmp(argv[4], "binary");

    double t0 = now_ms();
    crdtc_loop_t *l = crdtc_loop_new();
    char id[64];
    snprintf(id, sizeof(id), "bench-catchup-%ld", (long)getpid());
    crdtc_config_t cfg = {0};
    cfg.port = port;
    cfg.client_id = id;
    /* a whole JSON state of 10,000 entries is over the 1 MiB default */
    cfg.max_message = 64u << 20;
    cfg.no_reconnect = true;
    cfg.timeline_max_size = n;
    cfg.binary = binary;
    cfg.cb.subscribed_cb = on_subscribed;
    cfg.cb.error_cb = on_error;
    int err = 0;
    crdtc_t *c = l ? crdtc_new(l, &cfg, &err) : NULL;
    if (!c || crdtc_connect(c) || crdtc_subscribe(c, key, strlen(key), 0) <= 0) {
        fprintf(stderr, "bench_catchup: cannot start the client (%d)\n", err);
        return 1;
    }
    while (!synced && !failed && now_ms() - t0 < 30000)
        if (crdtc_loop_service(l, 50) < 0)
            break;
    double t1 = now_ms();
    const crdt_obj_t *tl = crdtc_local(c, key, strlen(key), 0);
    size_t card = tl ? crdt_timeline_card(tl) : 0;
    crdt_tl_entry_t *e = malloc(sizeof(*e) * (card ? card : 1));
    size_t got = tl && e ? crdt_timeline_range(tl, 0, card, e) : 0;
    size_t cap = got * 96 + 1, len = 0;
    char *out = malloc(cap);
    for (size_t i = 0; out && i < got; i++) {
        int w = snprintf(out + len, cap - len, "%.*s @ %.0f\n", (int)e[i].member_len,
                         (const char *)e[i].member, e[i].score);
        if (w < 0 || (size_t)w >= cap - len) {
            cap = cap * 2 + (size_t)e[i].member_len + 64;
            char *nb = realloc(out, cap);
            if (!nb)
                break;
            out = nb;
            i--;
            continue;
        }
        len += (size_t)w;
    }
    double t2 = now_ms();
    printf("catchup_ms %.3f\nrender_ms %.3f\ntotal_ms %.3f\nentries %zu\nbytes_in %llu\n"
           "rendered_bytes %zu\n",
           t1 - t0, t2 - t1, t2 - t0, got, (unsigned long long)crdtc_bytes_in(c), len);
    free(out);
    free(e);
    crdtc_free(c);
    crdtc_loop_free(l);
    return synced && !failed && (long)got == n ? 0 : 1;
}
