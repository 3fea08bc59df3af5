/* bench_replication.c - steady replication: writes/s one crdtd node sustains while pushing to two
 * peers against the same node with no peers, in the same run, and replication lag
 *
 *   bench_replication [--runs N] [--duration S] [--conns C] [--keys K] [--fsync P] [--no-pin]
 *                     [--keep]   (keep the data directories and node logs) [--tls | --redis]
 *
 * Each run starts a fresh node A alone and loads it (timeline inserts as bench/bench_http.lua:
 * one member with an increasing score into one of K timelines, C keep-alive connections driven
 * from one poll loop) for S seconds; then a fresh three-node full mesh A, B, C (direct links, no
 * proxy) and the same load on A only. While the mesh is loaded, a sampler writes a fresh register
 * on A every 20 ms and polls B until it is visible there: lag = visible on B - acknowledged by A.
 * After the load stops, the time until B's and C's digests equal A's is the catch-up time.
 *
 * With --pin (the default on 2+ CPUs) A and the load generator run on CPU 0 and the peers on the
 * other CPUs, so the peers' applying does not take CPU from A: the ratio then measures what
 * pushing costs the node, as it would with peers on other machines.
 *
 * --tls adds, in each run, the same mesh over mutual TLS (wss://, --peer-cert, --peer-ca,
 * --peer-require-tls; certificates made with scripts/tls-certs.sh) and prints its writes/s
 * against the cleartext mesh's. A node that presents a peer certificate must serve TLS, so with
 * --tls node A's listener is HTTPS in every phase (the load is HTTPS throughout, the same cost
 * in both meshes), and only A dials (B and C accept it; B dials C), so that the cleartext mesh's
 * peers need not dial A's TLS port. The two meshes take turns going first (the TLS mesh in
 * runs 2, 4, ...), so that a machine whose load drifts within a run favours neither.
 *
 * --redis: active-active between two Redis deployments instead. Each node is a crdtd --store
 * redis:// in front of a redis-server of its own (crdt.so, no persistence, started here): A alone,
 * then A and B peered (two sites, no C); the catch-up time is not measured (no digest over Redis).
 * A, its Redis and the load share CPU 0, B and its Redis the other CPUs. --tls and --redis do not
 * combine (each is its own comparison against the cleartext, embedded-store mesh).
 */
#define _GNU_SOURCE
#include "http_client.h"
#ifdef BENCH_TLS
#include "hc_tls.h"
#endif

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#ifndef CRDTD_BIN
#error "CRDTD_BIN must name the crdtd binary"
#endif

static int opt_runs = 3, opt_duration = 5, opt_conns = 64, opt_keys = 1000, opt_pin = -1;
static const char *opt_fsync = "everysec";
static int opt_keep, opt_tls, opt_redis;
static char pki[700]; /* --tls: ca.pem, node-<id>.pem/.key */

#ifndef CRDT_MODULE_PATH
#define CRDT_MODULE_PATH "crdt.so"
#endif

/* A redis-server with crdt.so on port (no persistence), on the CPUs given; its pid or -1. */
static pid_t start_redis(int port, int node, int cpu_first, int cpu_last);
static void stop_redis(pid_t pid);

static uint64_t now_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000u + (uint64_t)ts.tv_nsec / 1000u;
}

static int cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

static uint64_t pct(uint64_t *v, size_t n, double p)
{
    if (!n)
        return 0;
    size_t i = (size_t)(p / 100.0 * (double)(n - 1) + 0.5);
    return v[i];
}

static double median(double *v, int n)
{
    for (int i = 1; i < n; i++)
        for (int j = i; j > 0 && v[j] < v[j - 1]; j--) {
            double t = v[j];
            v[j] = v[j - 1];
            v[j - 1] = t;
        }
    return n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
}

static int free_port(void)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in sa = {.sin_family = AF_INET};
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t sl = sizeof(sa);
    int port = 0;
    if (fd >= 0 && !bind(fd, (struct sockaddr *)&sa, sizeof(sa)) &&
        !getsockname(fd, (struct sockaddr *)&sa, &sl))
        port = ntohs(sa.sin_port);
    if (fd >= 0)
        close(fd);
    return port;
}

/* Runs fn's process start with the CPU affinity cpus (the child inherits it). */
static void pin_self(int first, int last)
{
    if (opt_pin <= 0)
        return;
    cpu_set_t set;
    CPU_ZERO(&set);
    for (int c = first; c <= last; c++)
        CPU_SET(c, &set);
    sched_setaffinity(0, sizeof(set), &set);
}

/* ---- the load: C keep-alive connections, one request in flight each ------------------------- */

typedef struct lconn {
    int fd;
    char in[2048];
    size_t inlen;
    uint64_t sent_us;
} lconn_t;

typedef struct load_result {
    double rps;
    uint64_t ok, errors;
    double p50_ms, p99_ms;
} load_result_t;

static uint64_t *lat;
static size_t nlat, caplat;

static int send_write(lconn_t *c, int tid, uint64_t counter)
{
    char body[160], req[512];
    int bl = snprintf(
        body, sizeof(body),
        "{\"type\":\"timeline\",\"op\":\"add\",\"member\":\"m%03d%08llu\",\"score\":%llu}",
        tid % 1000, (unsigned long long)(counter % 100000000u), (unsigned long long)counter);
    int rl = snprintf(req, sizeof(req),
                      "POST /v1/keys/tl%06d HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: "
                      "application/json\r\nContent-Length: %d\r\n\r\n%s",
                      (int)(random() % opt_keys), bl, body);
    c->inlen = 0;
    c->sent_us = now_us();
    return hc_io_send(c->fd, req, (size_t)rl) == rl ? 0 : -1;
}

/* A complete response in c->in? 1 with *status, 0 not yet. */
static int response_done(lconn_t *c, int *status)
{
    c->in[c->inlen] = '\0';
    char *h = strstr(c->in, "\r\n\r\n");
    if (!h)
        return 0;
    char *cl = strcasestr(c->in, "content-length:");
    size_t blen = cl && cl < h ? (size_t)atol(cl + 15) : 0;
    if (c->inlen < (size_t)(h + 4 - c->in) + blen)
        return 0;
    *status = atoi(c->in + 9);
    return 1;
}

static load_result_t run_load(int port, int seconds)
{
    load_result_t r = {0};
    lconn_t *cs = calloc((size_t)opt_conns, sizeof(*cs));
    struct pollfd *pfd = calloc((size_t)opt_conns, sizeof(*pfd));
    uint64_t counter = 0;
    nlat = 0;
    for (int i = 0; i < opt_conns; i++) {
        cs[i].fd = hc_connect(port);
        if (cs[i].fd < 0 || send_write(&cs[i], i, ++counter)) {
            fprintf(stderr, "bench: cannot connect to port %d\n", port);
            exit(1);
        }
    }
    uint64_t t0 = now_us(), end = t0 + (uint64_t)seconds * 1000000u;
    while (now_us() < end) {
        for (int i = 0; i < opt_conns; i++)
            pfd[i] = (struct pollfd){cs[i].fd, POLLIN, 0};
        if (poll(pfd, (nfds_t)opt_conns, 100) <= 0)
            continue;
        for (int i = 0; i < opt_conns; i++) {
            if (!pfd[i].revents)
                continue;
            lconn_t *c = &cs[i];
            ssize_t n = hc_io_recv(c->fd, c->in + c->inlen, sizeof(c->in) - 1 - c->inlen);
            if (n <= 0 && errno != EAGAIN) {
                fprintf(stderr, "bench: connection lost\n");
                exit(1);
            }
            if (n <= 0)
                continue;
            c->inlen += (size_t)n;
            int st;
            if (!response_done(c, &st))
                continue;
            uint64_t t = now_us();
            if (st == 200)
                r.ok++;
            else
                r.errors++;
            if (nlat == caplat) {
                caplat = caplat ? caplat * 2 : 1 << 20;
                lat = realloc(lat, caplat * sizeof(*lat));
            }
            lat[nlat++] = t - c->sent_us;
            if (send_write(c, i, ++counter)) {
                fprintf(stderr, "bench: send failed\n");
                exit(1);
            }
        }
    }
    double secs = (double)(now_us() - t0) / 1e6;
    r.rps = (double)r.ok / secs;
    qsort(lat, nlat, sizeof(*lat), cmp_u64);
    r.p50_ms = (double)pct(lat, nlat, 50) / 1000.0;
    r.p99_ms = (double)pct(lat, nlat, 99) / 1000.0;
    /* drain the requests still in flight so the server is idle before the next phase */
    for (int i = 0; i < opt_conns; i++) {
        int st;
        uint64_t dl = now_us() + 2000000;
        while (!response_done(&cs[i], &st) && now_us() < dl) {
            struct pollfd p1 = {cs[i].fd, POLLIN, 0};
            if (poll(&p1, 1, 100) > 0) {
                ssize_t n =
                    hc_io_recv(cs[i].fd, cs[i].in + cs[i].inlen, sizeof(cs[i].in) - 1 - cs[i].inlen);
                if (n <= 0)
                    break;
                cs[i].inlen += (size_t)n;
            }
        }
        hc_close(cs[i].fd);
    }
    free(cs);
    free(pfd);
    return r;
}

/* ---- lag sampler ---------------------------------------------------------------------------- */

typedef struct sampler {
    int a_port, b_port;
    volatile int stop;
    uint64_t lag[4096];
    size_t n;
    int lost; /* never visible within 10 s */
    pthread_t th;
} sampler_t;

static void *sampler_main(void *arg)
{
    sampler_t *s = arg;
    int fa = hc_connect(s->a_port), fb = hc_connect(s->b_port);
    for (int i = 0; !s->stop && s->n < 4096 && fa >= 0 && fb >= 0; i++) {
        char path[128], body[128];
        /* keys and values as text: no encoding needed */
        snprintf(path, sizeof(path), "/v1/keys/lagkey%06d", i);
        snprintf(body, sizeof(body), "{\"type\":\"lwwreg\",\"op\":\"set\",\"value\":\"dmFsdWU=\"}");
        hc_resp_t r;
        if (hc_send(fa, "POST", path, "", body, strlen(body), &r) || r.status != 200) {
            hc_resp_free(&r);
            break;
        }
        hc_resp_free(&r);
        uint64_t t_ack = now_us(), t_vis = 0;
        char gpath[160];
        snprintf(gpath, sizeof(gpath), "%s?state=0", path);
        while (now_us() - t_ack < 10000000u) {
            if (hc_send(fb, "GET", gpath, "", NULL, 0, &r)) {
                hc_resp_free(&r);
                break;
            }
            int st = r.status;
            hc_resp_free(&r);
            if (st == 200) {
                t_vis = now_us();
                break;
            }
            usleep(200);
        }
        if (t_vis)
            s->lag[s->n++] = t_vis - t_ack;
        else
            s->lost++;
        usleep(20000);
    }
    hc_close(fa);
    hc_close(fb);
    return NULL;
}

/* ---- nodes ---------------------------------------------------------------------------------- */

static char *digest_of(int port)
{
    hc_resp_t r;
    char *d = NULL;
    if (hc_request(port, "GET", "/healthz", NULL, &r) == 0 && r.status == 200) {
        char *p = strstr(r.body, "\"digest\":\"");
        if (p)
            d = strndup(p + 10, 16);
    }
    hc_resp_free(&r);
    return d;
}

/* CPU seconds (user + system) process pid has used so far (/proc/PID/stat). */
static double cpu_s(pid_t pid)
{
    char path[64], buf[1024];
    snprintf(path, sizeof(path), "/proc/%d/stat", (int)pid);
    FILE *f = fopen(path, "r");
    size_t n = f ? fread(buf, 1, sizeof(buf) - 1, f) : 0;
    if (f)
        fclose(f);
    buf[n] = '\0';
    char *p = strrchr(buf, ')');
    unsigned long ut = 0, st = 0;
    if (!p || sscanf(p + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %lu %lu", &ut, &st) != 2)
        return 0;
    return (double)(ut + st) / (double)sysconf(_SC_CLK_TCK);
}

static pid_t start_redis(int port, int node, int cpu_first, int cpu_last)
{
    char pb[16], nb[16];
    snprintf(pb, sizeof(pb), "%d", port);
    snprintf(nb, sizeof(nb), "%d", node);
    pin_self(cpu_first, cpu_last);
    pid_t pid = fork();
    if (pid == 0) {
        int devnull = open("/dev/null", O_WRONLY);
        if (devnull >= 0) {
            dup2(devnull, 1);
            dup2(devnull, 2);
        }
        execlp("redis-server", "redis-server", "--bind", "127.0.0.1", "--port", pb, "--save", "",
               "--appendonly", "no", "--loadmodule", CRDT_MODULE_PATH, "node-id", nb, (char *)NULL);
        _exit(127);
    }
    pin_self(0, 0);
    for (int i = 0; pid > 0 && i < 200; i++) { /* up once it accepts a connection */
        int fd = hc_connect(port);
        if (fd >= 0) {
            hc_close(fd);
            return pid;
        }
        usleep(20000);
    }
    fprintf(stderr, "bench: redis-server on port %d did not start (is redis-server on PATH? %s)\n",
            port, CRDT_MODULE_PATH);
    stop_redis(pid);
    return -1;
}

static void stop_redis(pid_t pid)
{
    if (pid <= 0)
        return;
    kill(pid, SIGKILL);
    waitpid(pid, NULL, 0);
}

/* tls: 0 cleartext; 1 an HTTPS listener (peers still ws://); 2 mutual TLS with peers.
 * redis_port: 0 the embedded store (--data-dir), else --store redis://127.0.0.1:redis_port */
static int start_node(crdtd_proc_t *p, const char *tmp, const char *name, int id, int port,
                      const int *peers, int npeers, int cpu_first, int cpu_last, int tls,
                      int redis_port)
{
    char dir[600], data[700], idb[16], listen[64], peer[4][64], cert[800], key[800], ca[800];
    char url[64];
    snprintf(dir, sizeof(dir), "%s/%s", tmp, name);
    snprintf(data, sizeof(data), "%s/data", dir);
    mkdir(dir, 0700);
    snprintf(idb, sizeof(idb), "%d", id);
    snprintf(listen, sizeof(listen), "127.0.0.1:%d", port);
    const char *args[32];
    int a = 0;
    args[a++] = "--listen", args[a++] = listen;
    if (redis_port) {
        snprintf(url, sizeof(url), "redis://127.0.0.1:%d", redis_port);
        args[a++] = "--store", args[a++] = url;
    } else {
        args[a++] = "--data-dir", args[a++] = data;
    }
    args[a++] = "--node-id", args[a++] = idb;
    args[a++] = "--fsync", args[a++] = opt_fsync;
    args[a++] = "--cluster", args[a++] = "bench";
    args[a++] = "--timeline-max-size", args[a++] = "1000";
    snprintf(cert, sizeof(cert), "%s/node-%d.pem", pki, id);
    snprintf(key, sizeof(key), "%s/node-%d.key", pki, id);
    snprintf(ca, sizeof(ca), "%s/ca.pem", pki);
    if (tls) {
        args[a++] = "--tls-cert", args[a++] = cert;
        args[a++] = "--tls-key", args[a++] = key;
    }
    if (tls == 2) {
        args[a++] = "--peer-cert", args[a++] = cert;
        args[a++] = "--peer-key", args[a++] = key;
        args[a++] = "--peer-ca", args[a++] = ca;
        args[a++] = "--peer-require-tls";
    }
    for (int i = 0; i < npeers && i < 4; i++) {
        snprintf(peer[i], sizeof(peer[i]), "%s://127.0.0.1:%d", tls == 2 ? "wss" : "ws",
                 peers[i]);
        args[a++] = "--peer", args[a++] = peer[i];
    }
    args[a] = NULL;
    pin_self(cpu_first, cpu_last);
    int rc = crdtd_start(p, CRDTD_BIN, dir, args);
    pin_self(0, 0);
    if (rc)
        fprintf(stderr, "bench: cannot start crdtd %s (see %s)\n", name, p->errlog);
    return rc;
}

int main(int argc, char **argv)
{
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--runs") && i + 1 < argc)
            opt_runs = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--duration") && i + 1 < argc)
            opt_duration = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--conns") && i + 1 < argc)
            opt_conns = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--keys") && i + 1 < argc)
            opt_keys = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--fsync") && i + 1 < argc)
            opt_fsync = argv[++i];
        else if (!strcmp(argv[i], "--keep"))
            opt_keep = 1;
        else if (!strcmp(argv[i], "--no-pin"))
            opt_pin = 0;
#ifdef BENCH_TLS
        else if (!strcmp(argv[i], "--tls"))
            opt_tls = 1;
#endif
        else if (!strcmp(argv[i], "--redis"))
            opt_redis = 1;
        else {
            fprintf(stderr,
                    "usage: %s [--runs N] [--duration S] [--conns C] [--keys K] "
                    "[--fsync P] [--no-pin] [--keep] [--tls | --redis]\n",
                    argv[0]);
            return 2;
        }
    }
    if (opt_tls && opt_redis) {
        fprintf(stderr,
                "%s: --tls and --redis do not combine (each compares against the "
                "cleartext mesh over the embedded store); run them one at a time\n",
                argv[0]);
        return 2;
    }
    char *pki_tmp = NULL;
#ifdef BENCH_TLS
    if (opt_tls) {
        pki_tmp = test_tmpdir();
        snprintf(pki, sizeof(pki), "%s/pki", pki_tmp);
        char cmd[1600], ca[800];
        snprintf(cmd, sizeof(cmd), "sh '%s' '%s' node-1 node-2 node-3", TLS_CERTS_SH, pki);
        snprintf(ca, sizeof(ca), "%s/ca.pem", pki);
        if (system(cmd) != 0 || hc_tls_use(ca)) {
            fprintf(stderr, "bench: cannot make certificates (%s)\n", cmd);
            return 1;
        }
    }
#endif
    signal(SIGPIPE, SIG_IGN);
    long ncpu = sysconf(_SC_NPROCESSORS_ONLN);
    if (opt_pin < 0)
        opt_pin = ncpu >= 2;
    int peer_cpu = ncpu >= 2 ? 1 : 0, last_cpu = ncpu >= 2 ? (int)ncpu - 1 : 0;
    setenv("CRDTD_PEER_SECRET", "bench-cluster-secret-0123456789", 1);
    pin_self(0, 0);
    printf("# crdtd %s, %d runs x %d s, %d connections, %d keys, %s%s, pinning %s\n", CRDTD_BIN,
           opt_runs, opt_duration, opt_conns, opt_keys, opt_redis ? "" : "--fsync ",
           opt_redis ? "--store redis:// (one redis-server with crdt.so per node)" : opt_fsync,
           opt_pin ? "on (A + load on CPU 0, peers on the others)" : "off");
    double alone[64], mesh[64], ratio[64], lp50[64], lp99[64], lmax[64], catchup[64];
    double ap99[64], mp99[64], tmesh[64], tratio[64], tp99[64], tlag99[64], mcpu[64], tcpu[64];
    if (opt_runs > 64)
        opt_runs = 64;
    int np = opt_redis ? 1 : 2; /* peers A pushes to: with --redis only B */
    for (int run = 0; run < opt_runs; run++) {
        char *tmp = test_tmpdir();
        crdtd_proc_t a, b, c;
        /* A alone */
        int pa = free_port();
        int ra = opt_redis ? free_port() : 0;
        pid_t rpa = opt_redis ? start_redis(ra, 101, 0, 0) : 0, rpb = 0;
        if (rpa < 0 || start_node(&a, tmp, "alone", 1, pa, NULL, 0, 0, 0, opt_tls, ra)) {
            stop_redis(rpa);
            return 1;
        }
        load_result_t r0 = run_load(a.port, opt_duration);
        crdtd_stop(&a, SIGTERM, 10000);
        stop_redis(rpa);
        /* A, B, C: a full mesh (cleartext links; with --tls, then over mutual TLS); with --redis
         * A and B, each over its own Redis */
        load_result_t r1 = {0}, rt = {0};
        sampler_t *s = NULL, *st = NULL;
        double cu = -1;
        double tcu = -1;
        for (int k = 0; k <= opt_tls; k++) {
            /* with --tls, every other run starts with the TLS mesh: drift in the machine's load
             * over a run then favours neither */
            int kind = opt_tls && run % 2 ? 1 - k : k;
            char nb[16], nc[16], na[16];
            snprintf(na, sizeof(na), "a%d", kind);
            snprintf(nb, sizeof(nb), "b%d", kind);
            snprintf(nc, sizeof(nc), "c%d", kind);
            pa = free_port();
            int pb = free_port(), pc = free_port();
            int peers_a[2] = {pb, pc}, peers_b[2] = {pa, pc}, peers_c[2] = {pa, pb};
            /* with --tls only A dials (B and C need not reach A's TLS port), B dials C */
            int peer_tls = opt_tls ? (kind ? 2 : 0) : 0, a_tls = opt_tls ? (kind ? 2 : 1) : 0;
#ifdef BENCH_TLS
            hc_tls_plain_clear();
            if (opt_tls && !kind) {
                hc_tls_plain_port(pb);
                hc_tls_plain_port(pc);
            }
#endif
            int rb = 0;
            if (opt_redis) {
                ra = free_port(), rb = free_port();
                rpa = start_redis(ra, 101, 0, 0);
                rpb = start_redis(rb, 102, peer_cpu, last_cpu);
                if (rpa < 0 || rpb < 0) {
                    stop_redis(rpa);
                    stop_redis(rpb);
                    return 1;
                }
            }
            if (start_node(&b, tmp, nb, 2, pb, opt_tls ? peers_b + 1 : peers_b, opt_tls ? 1 : np,
                           peer_cpu, last_cpu, peer_tls, rb) ||
                (!opt_redis && start_node(&c, tmp, nc, 3, pc, peers_c, opt_tls ? 0 : 2, peer_cpu,
                                          last_cpu, peer_tls, 0)) ||
                start_node(&a, tmp, na, 1, pa, peers_a, np, 0, 0, a_tls, ra)) {
                stop_redis(rpa);
                stop_redis(rpb);
                return 1;
            }
            usleep(500000); /* links up */
            sampler_t *sm = calloc(1, sizeof(*sm));
            sm->a_port = a.port;
            sm->b_port = b.port;
            pthread_create(&sm->th, NULL, sampler_main, sm);
            double c0 = cpu_s(a.pid);
            load_result_t rr = run_load(a.port, opt_duration);
            double cpu_us = rr.ok ? (cpu_s(a.pid) - c0) * 1e6 / (double)rr.ok : 0;
            sm->stop = 1;
            pthread_join(sm->th, NULL);
            uint64_t t0 = now_us();
            double cuk = -1;
            while (!opt_redis && now_us() - t0 < 60000000u) {
                char *da = digest_of(a.port), *db = digest_of(b.port), *dc = digest_of(c.port);
                bool same = da && db && dc && !strcmp(da, db) && !strcmp(da, dc);
                free(da), free(db), free(dc);
                if (same) {
                    cuk = (double)(now_us() - t0) / 1000.0;
                    break;
                }
                usleep(10000);
            }
            hc_resp_t pr = {0};
            if (run == opt_runs - 1 && hc_request(a.port, "GET", "/v1/peers", NULL, &pr) == 0)
                printf("# A's /v1/peers after the last run (%s): %.600s\n",
                       kind ? "mutual TLS" : "cleartext", pr.body ? pr.body : "");
            hc_resp_free(&pr);
            crdtd_stop(&a, SIGTERM, 10000);
            crdtd_stop(&b, SIGTERM, 10000);
            if (!opt_redis)
                crdtd_stop(&c, SIGTERM, 10000);
            stop_redis(rpa);
            stop_redis(rpb);
            if (!kind) {
                r1 = rr, s = sm, cu = cuk;
                mcpu[run] = cpu_us;
            } else {
                tcpu[run] = cpu_us;
                rt = rr, st = sm, tcu = cuk;
            }
        }
        if (st) {
            qsort(st->lag, st->n, sizeof(st->lag[0]), cmp_u64);
            tmesh[run] = rt.rps;
            tratio[run] = r1.rps > 0 ? rt.rps / r1.rps : 0;
            tp99[run] = rt.p99_ms;
            tlag99[run] = (double)pct(st->lag, st->n, 99) / 1000.0;
            printf("run %d, mutual TLS (%s): pushing to 2 peers %.0f writes/s (p99 %.2f ms, %llu "
                   "errors), against the cleartext mesh %.2f; A's CPU per write %.1f us "
                   "(cleartext mesh %.1f us); lag to B p99 %.2f ms, %d never seen; peers "
                   "caught up %.0f ms after the load\n",
                   run + 1, run % 2 ? "first" : "second", rt.rps, rt.p99_ms,
                   (unsigned long long)rt.errors, tratio[run], tcpu[run], mcpu[run], tlag99[run],
                   st->lost, tcu);
            free(st);
        }
        if (opt_keep)
            printf("# kept %s (node logs)\n", tmp);
        else
            rm_rf(tmp);
        free(tmp);

        qsort(s->lag, s->n, sizeof(s->lag[0]), cmp_u64);
        alone[run] = r0.rps;
        mesh[run] = r1.rps;
        ratio[run] = r1.rps / r0.rps;
        ap99[run] = r0.p99_ms;
        mp99[run] = r1.p99_ms;
        lp50[run] = (double)pct(s->lag, s->n, 50) / 1000.0;
        lp99[run] = (double)pct(s->lag, s->n, 99) / 1000.0;
        lmax[run] = s->n ? (double)s->lag[s->n - 1] / 1000.0 : 0;
        catchup[run] = cu;
        printf("run %d: alone %.0f writes/s (p99 %.2f ms, %llu errors); pushing to %d peer(s) %.0f "
               "writes/s (p99 %.2f ms, %llu errors); ratio %.2f; lag to B over %zu samples: p50 "
               "%.2f ms, p99 %.2f ms, max %.2f ms, %d never seen; peers caught up %.0f ms after "
               "the load\n",
               run + 1, r0.rps, r0.p99_ms, (unsigned long long)r0.errors, np, r1.rps, r1.p99_ms,
               (unsigned long long)r1.errors, ratio[run], s->n, lp50[run], lp99[run], lmax[run],
               s->lost, cu);
        fflush(stdout);
        free(s);
    }
    int n = opt_runs;
    printf("\nmedians of %d runs:\n", n);
    printf("  writes/s alone           %10.0f   (request p99 %.2f ms)\n", median(alone, n),
           median(ap99, n));
    printf("  writes/s pushing to %d    %10.0f   (request p99 %.2f ms)\n", np, median(mesh, n),
           median(mp99, n));
    printf("  ratio                    %10.2f   (target >= %s)\n", median(ratio, n),
           opt_redis ? "0.85" : "0.7");
    printf("  lag A->B p50 / p99 / max %7.2f / %.2f / %.2f ms\n", median(lp50, n), median(lp99, n),
           median(lmax, n));
    if (opt_redis)
        printf("  catch-up after the load  not measured (no digest over Redis)\n");
    else
        printf("  catch-up after the load  %10.0f ms\n", median(catchup, n));
    if (opt_tls) {
        printf("  writes/s pushing over mutual TLS %10.0f   (request p99 %.2f ms, lag p99 %.2f "
               "ms)\n",
               median(tmesh, n), median(tp99, n), median(tlag99, n));
        printf("  ratio mutual TLS / cleartext     %10.2f   (target >= 0.8)\n", median(tratio, n));
        double mc = median(mcpu, n), tc = median(tcpu, n);
        printf("  A's CPU per write: cleartext mesh %.1f us, mutual TLS %.1f us, ratio %.2f\n", mc,
               tc, tc > 0 ? mc / tc : 0);
    }
    if (pki_tmp) {
#ifdef BENCH_TLS
        hc_tls_off();
#endif
        rm_rf(pki_tmp);
        free(pki_tmp);
    }
    free(lat);
    return 0;
}
