/* bench_ws.c - crdt.v1 sessions through the crdtc client: apply+ack round trips per second over N
 * sessions against crdtd (--fsync everysec, --no-persist) and against a bare libwebsockets echo
 * server with the same client in the same run (the stack's ceiling), and fan-out from one writer
 * to 1,000 subscribers of one timeline (deliveries per second, apply-to-delivery latency).
 *
 *   bench_ws CRDTD_BIN [--runs 3] [--secs 3] [--window 4] [--subs 1000] [--paced-secs 5]
 *   bench_ws --echo     (the echo server: prints "listening on :PORT", serves until killed)
 *   bench_ws CRDTD_BIN --binary-fanout [--runs 3] [--secs 3] [--subs 1000] [--paced-secs 5]
 *                       (fan-out only, on crdtd --no-persist: JSON crdt.v1 subscribers against
 *                       binary crdt.v1.bin ones, alternating in each run; bytes per delivery too)
 *
 * The echo server answers hello with a welcome and each apply with an ack carrying its id (found
 * with a string scan, no JSON parsing, no replica): what is left is libwebsockets, the loopback
 * and the client, so the ratio crdtd / echo is the share of the ceiling crdtd reaches.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include <libwebsockets.h>

#include "crdt_json.h"
#include "crdtc.h"
#include "http_client.h"

/* ---- the echo server ------------------------------------------------------------------------ */

#define ECHO_RING 256
typedef struct echo_sess {
    char reply[ECHO_RING][96];
    unsigned short rlen[ECHO_RING];
    unsigned head, count;
} echo_sess_t;

static int echo_cb(struct lws *wsi, enum lws_callback_reasons reason, void *user, void *in,
                   size_t len)
{
    echo_sess_t *e = user;
    switch (reason) {
    case LWS_CALLBACK_RECEIVE: {
        if (!e || e->count == ECHO_RING)
            return -1;
        const char *p = in;
        char *r = e->reply[(e->head + e->count) % ECHO_RING];
        int n;
        if (len > 14 && memmem(p, len, "\"hello\"", 7)) {
            n = snprintf(r, 96, "{\"type\":\"welcome\",\"node\":1,\"seq\":0,\"session\":\"echo\"}");
        } else {
            const char *id = memmem(p, len, "\"id\":", 5);
            unsigned long long v = id ? strtoull(id + 5, NULL, 10) : 0;
            n = snprintf(r, 96, "{\"type\":\"ack\",\"id\":%llu,\"seq\":1,\"applied\":true}", v);
        }
        e->rlen[(e->head + e->count) % ECHO_RING] = (unsigned short)n;
        e->count++;
        lws_callback_on_writable(wsi);
        break;
    }
    case LWS_CALLBACK_SERVER_WRITEABLE: {
        unsigned char buf[LWS_PRE + 96];
        while (e && e->count && !lws_send_pipe_choked(wsi)) {
            memcpy(buf + LWS_PRE, e->reply[e->head], e->rlen[e->head]);
            if (lws_write(wsi, buf + LWS_PRE, e->rlen[e->head], LWS_WRITE_TEXT) <
                (int)e->rlen[e->head])
                return -1;
            e->head = (e->head + 1) % ECHO_RING;
            e->count--;
        }
        if (e && e->count)
            lws_callback_on_writable(wsi);
        break;
    }
    default: break;
    }
    return 0;
}

static int echo_main(void)
{
    static const struct lws_protocols protos[] = {
        {"http", lws_callback_http_dummy, 0, 0, 0, NULL, 0},
        {"crdt.v1", echo_cb, sizeof(echo_sess_t), 4096, 0, NULL, 0},
        {NULL, NULL, 0, 0, 0, NULL, 0},
    };
    lws_set_log_level(LLL_ERR, NULL);
    struct lws_context_creation_info info;
    memset(&info, 0, sizeof(info));
    info.port = 0;
    info.iface = "127.0.0.1";
    info.protocols = protos;
    info.options = LWS_SERVER_OPTION_DISABLE_IPV6;
    info.pt_serv_buf_size = 64 * 1024;
    struct lws_context *ctx = lws_create_context(&info);
    if (!ctx)
        return 1;
    struct lws_vhost *vh = lws_get_vhost_by_name(ctx, "default");
    printf("echo: listening on http://127.0.0.1:%d\n", vh ? lws_get_vhost_listen_port(vh) : 0);
    fflush(stdout);
    while (lws_service(ctx, 0) >= 0)
        ;
    lws_context_destroy(ctx);
    return 0;
}

/* ---- helpers -------------------------------------------------------------------------------- */

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static double median(double *v, int n)
{
    qsort(v, (size_t)n, sizeof(*v), cmp_double);
    return n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
}

static double pct(double *v, size_t n, double p)
{
    if (!n)
        return NAN;
    qsort(v, n, sizeof(*v), cmp_double);
    size_t i = (size_t)(p * (double)(n - 1) + 0.5);
    return v[i];
}

/* the echo server as a child process of this binary */
static int start_echo(crdtd_proc_t *p)
{
    int fds[2];
    if (pipe(fds))
        return -1;
    memset(p, 0, sizeof(*p));
    p->pid = fork();
    if (p->pid == 0) {
        dup2(fds[1], 1);
        close(fds[0]);
        execl("/proc/self/exe", "bench_ws", "--echo", (char *)NULL);
        _exit(127);
    }
    close(fds[1]);
    char line[256];
    FILE *f = fdopen(fds[0], "r");
    if (!f || !fgets(line, sizeof(line), f)) {
        if (f)
            fclose(f);
        return -1;
    }
    fclose(f);
    const char *c = strrchr(line, ':');
    p->port = c ? atoi(c + 1) : 0;
    return p->port ? 0 : -1;
}

static void stop_echo(crdtd_proc_t *p)
{
    kill(p->pid, SIGTERM);
    waitpid(p->pid, NULL, 0);
}

/* ---- (a) apply+ack round trips -------------------------------------------------------------- */

typedef struct rt_sess {
    crdtc_t *c;
    char key[32];
    int inflight;
    long acks;
} rt_sess_t;

static json_t *g_incr;
static int g_window;
static bool g_running;

static void rt_send(rt_sess_t *s)
{
    while (g_running && s->inflight < g_window &&
           crdtc_apply_op(s->c, s->key, strlen(s->key), g_incr) > 0)
        s->inflight++;
}

static void rt_ack(crdtc_t *c, const crdtc_ack_t *a, void *ud)
{
    (void)c, (void)a;
    rt_sess_t *s = ud;
    s->inflight--;
    s->acks++;
    rt_send(s);
}

static void rt_error(crdtc_t *c, uint64_t id, const char *code, const char *msg, void *ud)
{
    (void)c, (void)id, (void)ud;
    fprintf(stderr, "bench_ws: error %s: %s\n", code, msg);
}

/* Round trips per second over n sessions for secs seconds. */
static double round_trips(int port, int n, double secs, int run)
{
    crdtc_loop_t *l = crdtc_loop_new();
    rt_sess_t *ss = calloc((size_t)n, sizeof(*ss));
    char id[64];
    for (int i = 0; i < n; i++) {
        snprintf(id, sizeof(id), "rt-%d-%d-%d", run, n, i);
        snprintf(ss[i].key, sizeof(ss[i].key), "bench:rt:%d", i);
        crdtc_config_t cfg = {.port = port,
                              .client_id = id,
                              .cb = {.ack_cb = rt_ack, .error_cb = rt_error},
                              .ud = &ss[i]};
        ss[i].c = crdtc_new(l, &cfg, NULL);
        crdtc_connect(ss[i].c);
    }
    double t0 = now_s();
    int ready = 0;
    while (ready < n && now_s() - t0 < 20) {
        crdtc_loop_service(l, 5);
        ready = 0;
        for (int i = 0; i < n; i++)
            ready += crdtc_ready(ss[i].c);
    }
    g_running = true;
    for (int i = 0; i < n; i++)
        rt_send(&ss[i]);
    /* warm up half a second, then count */
    double tw = now_s();
    while (now_s() - tw < 0.5)
        crdtc_loop_service(l, 5);
    long base = 0, acks = 0;
    for (int i = 0; i < n; i++)
        base += ss[i].acks;
    double ts = now_s();
    while (now_s() - ts < secs)
        crdtc_loop_service(l, 5);
    double el = now_s() - ts;
    for (int i = 0; i < n; i++)
        acks += ss[i].acks;
    g_running = false;
    for (int i = 0; i < n; i++)
        crdtc_free(ss[i].c);
    crdtc_loop_free(l);
    free(ss);
    return (double)(acks - base) / el;
}

/* ---- (b) fan-out ---------------------------------------------------------------------------- */

static double *g_lat;
static size_t g_nlat, g_cap;
static long g_deliveries;
static int g_subscribed;

static void fo_change(crdtc_t *c, const crdtc_change_t *ch, void *ud)
{
    (void)c, (void)ud;
    if (ch->full)
        return;
    g_deliveries++;
    crdt_tl_entry_t e;
    if (crdt_timeline_range(ch->obj, 0, 1, &e) == 1 && e.member_len < 40) {
        char buf[40];
        memcpy(buf, e.member, e.member_len);
        buf[e.member_len] = '\0';
        double sent = strtod(buf, NULL);
        if (g_nlat < g_cap)
            g_lat[g_nlat++] = now_s() - sent;
    }
}

static void fo_sub(crdtc_t *c, uint64_t id, uint64_t cursor, void *ud)
{
    (void)c, (void)id, (void)cursor, (void)ud;
    g_subscribed++;
}

static long fo_acks, fo_inflight;
static void fo_ack(crdtc_t *c, const crdtc_ack_t *a, void *ud)
{
    (void)c, (void)a, (void)ud;
    fo_acks++;
    fo_inflight--;
}

static void fo_write(crdtc_t *w, long i)
{
    char m[48];
    snprintf(m, sizeof(m), "%.9f", now_s());
    /* the member is text: a JSON string as it is (docs/encoding.md) */
    json_t *op = json_pack("{s:s,s:s,s:s,s:f}", "type", "timeline", "op", "add", "member", m,
                           "score", (double)i);
    crdtc_apply_op(w, "bench:fan", 9, op);
    json_decref(op);
    fo_inflight++;
}

typedef struct fo_result {
    double dps, p50, p99, bpd; /* bpd: message bytes received per delivery */
} fo_result_t;

static bool g_bin; /* subscribers negotiate binary crdt.v1 (crdtc_config_t.binary) */

static uint64_t subs_bytes(crdtc_t **subs, int n)
{
    uint64_t b = 0;
    for (int i = 0; i < n; i++)
        b += crdtc_bytes_in(subs[i]);
    return b;
}

/* rate 0: as fast as the writer's window allows */
static fo_result_t fanout(int port, int nsubs, double rate, double secs, int run)
{
    crdtc_loop_t *l = crdtc_loop_new();
    crdtc_t **subs = calloc((size_t)nsubs, sizeof(*subs));
    char id[64];
    g_subscribed = 0;
    for (int i = 0; i < nsubs; i++) {
        snprintf(id, sizeof(id), "fo-%d-%d", run, i);
        crdtc_config_t cfg = {.port = port,
                              .client_id = id,
                              .binary = g_bin,
                              .cb = {.change_cb = fo_change, .subscribed_cb = fo_sub}};
        subs[i] = crdtc_new(l, &cfg, NULL);
        crdtc_subscribe(subs[i], "bench:fan", 9, 0);
        crdtc_connect(subs[i]);
        if (i % 50 == 49)
            crdtc_loop_service(l, 0);
    }
    snprintf(id, sizeof(id), "fo-writer-%d", run);
    crdtc_config_t wcfg = {.port = port, .client_id = id, .cb = {.ack_cb = fo_ack}};
    crdtc_t *w = crdtc_new(l, &wcfg, NULL);
    crdtc_connect(w);
    double t0 = now_s();
    while ((g_subscribed < nsubs || !crdtc_ready(w)) && now_s() - t0 < 30)
        crdtc_loop_service(l, 5);
    for (double ts = now_s(); now_s() - ts < 0.3;)
        crdtc_loop_service(l, 5);
    g_nlat = 0;
    g_deliveries = 0;
    fo_inflight = 0;
    long writes = 0;
    uint64_t bytes0 = subs_bytes(subs, nsubs);
    double start = now_s(), end = start + secs;
    while (now_s() < end) {
        if (rate > 0) {
            while (writes < (long)((now_s() - start) * rate) + 1)
                fo_write(w, writes++);
        } else {
            while (fo_inflight < 4)
                fo_write(w, writes++);
        }
        /* Paced: sleep in poll until the next write is due, not in 1 ms steps: every poll of the
         * 1,000 subscriber sockets costs the client (and so the measured latency) real time. */
        int wait_ms = 0;
        if (rate > 0) {
            double due = start + (double)writes / rate - now_s();
            wait_ms = due > 0 ? (int)(due * 1e3) : 0;
        }
        crdtc_loop_service(l, wait_ms);
    }
    /* let the last deliveries arrive */
    long want = writes * nsubs;
    for (double ts = now_s(); g_deliveries < want && now_s() - ts < 5;)
        crdtc_loop_service(l, 5);
    double el = now_s() - start;
    fo_result_t r = {
        (double)g_deliveries / el, pct(g_lat, g_nlat, 0.5) * 1e3, pct(g_lat, g_nlat, 0.99) * 1e3,
        g_deliveries ? (double)(subs_bytes(subs, nsubs) - bytes0) / (double)g_deliveries : 0};
    if (g_deliveries < want)
        fprintf(stderr, "bench_ws: %ld of %ld deliveries arrived\n", g_deliveries, want);
    for (int i = 0; i < nsubs; i++)
        crdtc_free(subs[i]);
    crdtc_free(w);
    crdtc_loop_free(l);
    free(subs);
    return r;
}

/* ---- JSON against binary fan-out ------------------------------------------------------------ */

static int binary_fanout_main(const char *bin, int runs, double secs, double paced_secs, int nsubs)
{
    double r[2][2][16][4]; /* [json|binary][paced|max][run][dps,p50,p99,bpd] */
    const char *fr[2] = {"crdt.v1 (JSON)", "crdt.v1.bin"};
    for (int run = 0; run < runs; run++) {
        for (int f = 0; f < 2; f++) {
            int order = run % 2 ? 1 - f : f; /* alternate which framing goes first */
            g_bin = order == 1;
            crdtd_proc_t p;
            char *dir = test_tmpdir();
            const char *a_mem[] = {"--no-persist", NULL};
            if (crdtd_start(&p, bin, dir, a_mem)) {
                fprintf(stderr, "bench_ws: cannot start crdtd\n");
                return 1;
            }
            fo_result_t a = fanout(p.port, nsubs, 10, paced_secs, run * 2 + f);
            fo_result_t b = fanout(p.port, nsubs, 0, secs, run * 2 + f + 100);
            double *x = r[order][0][run], *y = r[order][1][run];
            x[0] = a.dps, x[1] = a.p50, x[2] = a.p99, x[3] = a.bpd;
            y[0] = b.dps, y[1] = b.p50, y[2] = b.p99, y[3] = b.bpd;
            printf("run %d  %-15s fan-out to %d, 10 writes/s: %8.0f deliveries/s  p50 %6.2f ms  "
                   "p99 %6.2f ms  %5.1f B/delivery\n",
                   run + 1, fr[order], nsubs, a.dps, a.p50, a.p99, a.bpd);
            printf("run %d  %-15s fan-out to %d, max rate:    %8.0f deliveries/s  p50 %6.2f ms  "
                   "p99 %6.2f ms  %5.1f B/delivery\n",
                   run + 1, fr[order], nsubs, b.dps, b.p50, b.p99, b.bpd);
            fflush(stdout);
            crdtd_stop(&p, SIGTERM, 10000);
            rm_rf(dir);
            free(dir);
        }
    }
    printf("\nmedians of %d runs, crdtd --no-persist, %d subscribers of one timeline:\n", runs,
           nsubs);
    const char *fl[2] = {"10 writes/s", "max rate"};
    double med[2][2][4];
    for (int f = 0; f < 2; f++)
        for (int m = 0; m < 2; m++) {
            for (int k = 0; k < 4; k++) {
                double v[16];
                for (int run = 0; run < runs; run++)
                    v[run] = r[f][m][run][k];
                med[f][m][k] = median(v, runs);
            }
            printf(
                "%-15s %-11s: %8.0f deliveries/s  p50 %6.2f ms  p99 %6.2f ms  %5.1f B/delivery\n",
                fr[f], fl[m], med[f][m][0], med[f][m][1], med[f][m][2], med[f][m][3]);
        }
    for (int m = 0; m < 2; m++)
        printf("ratio binary / JSON, %-11s: deliveries/s %.2f  p50 %.2f  p99 %.2f  bytes %.2f\n",
               fl[m], med[1][m][0] / med[0][m][0], med[1][m][1] / med[0][m][1],
               med[1][m][2] / med[0][m][2], med[1][m][3] / med[0][m][3]);
    return 0;
}

/* ---- main ----------------------------------------------------------------------------------- */

int main(int argc, char **argv)
{
    if (argc > 1 && !strcmp(argv[1], "--echo"))
        return echo_main();
    if (argc < 2) {
        fprintf(stderr, "usage: bench_ws CRDTD_BIN [--runs N] [--secs S] [--window W] [--subs N] "
                        "[--paced-secs S]\n");
        return 2;
    }
    const char *bin = argv[1];
    int runs = 3, window = 4, nsubs = 1000;
    double secs = 3, paced_secs = 5;
    bool binary_fanout = false;
    for (int i = 2; i < argc; i++)
        if (!strcmp(argv[i], "--binary-fanout")) {
            binary_fanout = true;
            memmove(&argv[i], &argv[i + 1], (size_t)(argc - i) * sizeof(*argv));
            argc--;
            break;
        }
    for (int i = 2; i + 1 < argc; i += 2) {
        if (!strcmp(argv[i], "--runs"))
            runs = atoi(argv[i + 1]);
        else if (!strcmp(argv[i], "--secs"))
            secs = atof(argv[i + 1]);
        else if (!strcmp(argv[i], "--window"))
            window = atoi(argv[i + 1]);
        else if (!strcmp(argv[i], "--subs"))
            nsubs = atoi(argv[i + 1]);
        else if (!strcmp(argv[i], "--paced-secs"))
            paced_secs = atof(argv[i + 1]);
    }
    signal(SIGPIPE, SIG_IGN);
    struct rlimit rl;
    getrlimit(RLIMIT_NOFILE, &rl);
    rl.rlim_cur = rl.rlim_max < 8192 ? rl.rlim_max : 8192;
    setrlimit(RLIMIT_NOFILE, &rl);
    g_window = window;
    g_incr = json_pack("{s:s,s:s}", "type", "pncounter", "op", "incr");
    g_cap = 8u << 20;
    g_lat = malloc(g_cap * sizeof(*g_lat));
    if (binary_fanout) {
        int n = runs < 1 ? 1 : runs > 16 ? 16 : runs;
        int rc = binary_fanout_main(bin, n, secs, paced_secs, nsubs);
        json_decref(g_incr);
        free(g_lat);
        return rc;
    }

    enum { EVERYSEC, MEMORY, ECHO, NTARGETS };
    const char *names[NTARGETS] = {"crdtd everysec", "crdtd no-persist", "lws echo"};
    static const int ns[] = {1, 10, 100};
    double rt[NTARGETS][3][16];
    double fo[2][2][16][3]; /* [target][paced|max][run][dps,p50,p99] */
    runs = runs < 1 ? 1 : runs > 16 ? 16 : runs;

    for (int run = 0; run < runs; run++) {
        for (int t = 0; t < NTARGETS; t++) {
            crdtd_proc_t p;
            char *dir = test_tmpdir(), data[1100];
            snprintf(data, sizeof(data), "%s/data", dir);
            const char *a_every[] = {"--data-dir", data, "--fsync", "everysec", NULL};
            const char *a_mem[] = {"--no-persist", NULL};
            int rc = t == ECHO ? start_echo(&p)
                               : crdtd_start(&p, bin, dir, t == EVERYSEC ? a_every : a_mem);
            if (rc) {
                fprintf(stderr, "bench_ws: cannot start %s\n", names[t]);
                return 1;
            }
            for (int k = 0; k < 3; k++) {
                rt[t][k][run] = round_trips(p.port, ns[k], secs, run);
                printf("run %d  %-17s N=%-4d %9.0f round trips/s\n", run + 1, names[t], ns[k],
                       rt[t][k][run]);
                fflush(stdout);
            }
            if (t == MEMORY || t == EVERYSEC) {
                /* fan-out on the same server: paced, then at the max rate */
                fo_result_t a = fanout(p.port, nsubs, 10, paced_secs, run);
                fo_result_t b = fanout(p.port, nsubs, 0, secs, run + 100);
                fo[t][0][run][0] = a.dps, fo[t][0][run][1] = a.p50, fo[t][0][run][2] = a.p99;
                fo[t][1][run][0] = b.dps, fo[t][1][run][1] = b.p50, fo[t][1][run][2] = b.p99;
                printf("run %d  %-17s fan-out to %d, 10 writes/s: %8.0f deliveries/s  p50 %6.2f ms"
                       "  p99 %6.2f ms\n",
                       run + 1, names[t], nsubs, a.dps, a.p50, a.p99);
                printf("run %d  %-17s fan-out to %d, max rate:    %8.0f deliveries/s  p50 %6.2f ms"
                       "  p99 %6.2f ms\n",
                       run + 1, names[t], nsubs, b.dps, b.p50, b.p99);
                fflush(stdout);
                crdtd_stop(&p, SIGTERM, 10000);
            } else {
                stop_echo(&p);
            }
            rm_rf(dir);
            free(dir);
        }
    }

    printf("\nmedians of %d runs, %.0f s each, window %d applies in flight per session:\n", runs,
           secs, window);
    printf("%-18s %10s %10s %10s\n", "target", "N=1", "N=10", "N=100");
    double med[NTARGETS][3];
    for (int t = 0; t < NTARGETS; t++) {
        for (int k = 0; k < 3; k++)
            med[t][k] = median(rt[t][k], runs);
        printf("%-18s %10.0f %10.0f %10.0f\n", names[t], med[t][0], med[t][1], med[t][2]);
    }
    for (int t = 0; t < ECHO; t++)
        printf("ratio %s / lws echo: %.2f %.2f %.2f\n", names[t], med[t][0] / med[ECHO][0],
               med[t][1] / med[ECHO][1], med[t][2] / med[ECHO][2]);
    const char *fl[2] = {"10 writes/s", "max rate"};
    for (int t = 0; t < ECHO; t++)
        for (int m = 0; m < 2; m++) {
            double d[16], a[16], b[16];
            for (int r = 0; r < runs; r++)
                d[r] = fo[t][m][r][0], a[r] = fo[t][m][r][1], b[r] = fo[t][m][r][2];
            printf("%-17s fan-out to %d, %-11s: %8.0f deliveries/s  p50 %6.2f ms  p99 %6.2f ms\n",
                   names[t], nsubs, fl[m], median(d, runs), median(a, runs), median(b, runs));
        }
    json_decref(g_incr);
    free(g_lat);
    return 0;
}
