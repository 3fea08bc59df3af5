/* bench_yjs.c - fan-out from one writer to many subscribers of one document, on crdtd (binary
 * crdt.v1.bin frames) or on y-websocket's server (y-protocols sync messages), with one client
 * for both: raw sockets in one epoll loop, a WebSocket client of its own (RFC 6455, masked
 * frames out, unfragmented frames in), so the client costs the same for either server and is
 * not what limits the figures.
 *
 *   bench_yjs crdtd|yjs PORT [--subs 1000] [--secs 3] [--rate W] [--window 8] [--pid PID]
 *             [--shape map|array]
 *   bench_yjs --print-yjs N CLIENT map|array   (the Yjs updates of writes 0 .. N-1, in hex, for
 *             bench/yjs/check_updates.mjs to compare with yjs's own)
 *
 * One writer makes small appends, one entry a write: a timeline add of ("post:<i>", score) on
 * crdtd (a binary apply of the one-entry delta libcrdt makes), and on y-websocket the Yjs update
 * of the same write (--shape map, the default: Y.Map "feed" set member -> score, the same
 * information; --shape array: Y.Array "feed" push of the member alone). Scores are millisecond
 * timestamps (1.764e12 + i: a float64 in libcrdt; lib0 writes a float32 where that is exact).
 * The Yjs updates are encoded here (lib0 varints, Yjs's update format v1); bench_yjs.sh checks
 * them against yjs's before measuring, and the server itself broadcasts none it cannot apply.
 *   --rate W   W writes a second for --secs (the paced run, latency at W x subs deliveries/s)
 *   (no rate)  as fast as the subscribers take them: write i+window waits until write i has
 *              reached every subscriber
 * Prints: deliveries_s, p50_ms, p99_ms (write sent -> delivery read, over every delivery),
 * bytes_per_delivery (what subscribers read, WebSocket headers included, over deliveries),
 * server_cpu_us (server CPU per delivery, from /proc/PID/stat, with --pid), client_cpu_us (this
 * process's CPU per delivery: whether the client was what limited the rate).
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "crdt.h"

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static void die(const char *what)
{
    fprintf(stderr, "bench_yjs: %s\n", what);
    exit(1);
}

/* ---- byte buffers and varints (LEB128: lib0's varUint and crdt.v1.bin's are the same) ------ */

typedef struct buf {
    uint8_t *p;
    size_t len, cap;
} buf_t;

static void put(buf_t *b, const void *d, size_t n)
{
    if (b->len + n > b->cap) {
        size_t cap = b->cap ? b->cap * 2 : 256;
        while (cap < b->len + n)
            cap *= 2;
        b->p = realloc(b->p, cap);
        if (!b->p)
            die("out of memory");
        b->cap = cap;
    }
    memcpy(b->p + b->len, d, n);
    b->len += n;
}

static void put_u8(buf_t *b, uint8_t v)
{
    put(b, &v, 1);
}

static void put_var(buf_t *b, uint64_t v)
{
    while (v >= 0x80) {
        put_u8(b, (uint8_t)(v | 0x80));
        v >>= 7;
    }
    put_u8(b, (uint8_t)v);
}

static void put_str(buf_t *b, const void *s, size_t n) /* lib0 varString / crdt.v1.bin bytes */
{
    put_var(b, n);
    put(b, s, n);
}

/* a varint at *p (below end); -1 when truncated or longer than 64 bits */
static int get_var(const uint8_t **p, const uint8_t *end, uint64_t *v)
{
    uint64_t r = 0;
    for (int shift = 0; shift < 64 && *p < end; shift += 7) {
        uint8_t c = *(*p)++;
        r |= (uint64_t)(c & 0x7f) << shift;
        if (!(c & 0x80)) {
            *v = r;
            return 0;
        }
    }
    return -1;
}

/* ---- connections ---------------------------------------------------------------------------- */

enum { PROTO_CRDTD, PROTO_YJS };
enum { ST_HTTP, ST_OPEN, ST_READY };

typedef struct conn {
    int fd, idx, state;
    buf_t in;
    uint64_t bytes; /* read since the last reset */
} conn_t;

static int g_proto, g_port, g_nsubs;
static bool g_map = true;
static const char g_key[] = "d"; /* crdtd's key; y-websocket's document is /d */
static conn_t *g_subs, g_writer;
static int g_ready;

/* deliveries: per write, when it was sent and how many subscribers have it */
static double *g_sent;
static int *g_got;
static long g_nwrites, g_complete, g_deliveries;
static bool g_measuring;
static float *g_lat;
static size_t g_nlat, g_latcap;

static void send_all(conn_t *c, const uint8_t *p, size_t n)
{
    while (n) {
        ssize_t w = send(c->fd, p, n, MSG_NOSIGNAL);
        if (w > 0) {
            p += w;
            n -= (size_t)w;
        } else if (w < 0 && (errno == EAGAIN || errno == EINTR)) {
            struct pollfd pf = {c->fd, POLLOUT, 0};
            poll(&pf, 1, 100);
        } else {
            die("send failed (the server closed a connection)");
        }
    }
}

/* one masked client frame (RFC 6455 5.2): opcode 1 text, 2 binary, 10 pong */
static void send_frame(conn_t *c, int opcode, const uint8_t *p, size_t n)
{
    uint8_t stack[512];
    uint8_t h[14];
    size_t hl = 0;
    h[hl++] = (uint8_t)(0x80 | opcode);
    if (n < 126) {
        h[hl++] = (uint8_t)(0x80 | n);
    } else if (n < 65536) {
        h[hl++] = 0x80 | 126;
        h[hl++] = (uint8_t)(n >> 8);
        h[hl++] = (uint8_t)n;
    } else {
        h[hl++] = 0x80 | 127;
        for (int i = 7; i >= 0; i--)
            h[hl++] = (uint8_t)((uint64_t)n >> (8 * i));
    }
    uint32_t r = (uint32_t)rand();
    uint8_t mask[4] = {(uint8_t)r, (uint8_t)(r >> 8), (uint8_t)(r >> 16), (uint8_t)(r >> 24)};
    memcpy(h + hl, mask, 4);
    hl += 4;
    uint8_t *out = hl + n <= sizeof stack ? stack : NULL;
    if (!out) {
        out = malloc(hl + n);
        if (!out)
            die("out of memory");
    }
    memcpy(out, h, hl);
    for (size_t i = 0; i < n; i++)
        out[hl + i] = p[i] ^ mask[i & 3];
    send_all(c, out, hl + n);
    if (out != stack)
        free(out);
}

static int connect_to(void)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    if (fd < 0)
        die("socket() failed (ulimit -n?)");
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)g_port)};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    /* a full listen backlog or a moment without a free local port: try again, for a while */
    for (int tries = 0; connect(fd, (struct sockaddr *)&a, sizeof a) < 0; tries++) {
        if (tries == 50 || (errno != ECONNREFUSED && errno != EADDRNOTAVAIL && errno != EAGAIN &&
                            errno != EINTR && errno != ETIMEDOUT)) {
            fprintf(stderr, "bench_yjs: connect() to port %d failed: %s\n", g_port, strerror(errno));
            exit(1);
        }
        close(fd);
        usleep(100000);
        fd = socket(AF_INET, SOCK_STREAM, 0);
        if (fd < 0)
            die("socket() failed (ulimit -n?)");
    }
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK);
    return fd;
}

static void start_conn(conn_t *c, int idx, int ep)
{
    memset(c, 0, sizeof *c);
    c->idx = idx;
    c->fd = connect_to();
    char req[512];
    int n = snprintf(req, sizeof req,
                     "GET /%s HTTP/1.1\r\nHost: 127.0.0.1:%d\r\nUpgrade: websocket\r\n"
                     "Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
                     "Sec-WebSocket-Version: 13\r\n%s\r\n",
                     g_proto == PROTO_YJS ? g_key : "", g_port,
                     g_proto == PROTO_CRDTD ? "Sec-WebSocket-Protocol: crdt.v1.bin\r\n" : "");
    send_all(c, (const uint8_t *)req, (size_t)n);
    struct epoll_event ev = {.events = EPOLLIN, .data.ptr = c};
    if (epoll_ctl(ep, EPOLL_CTL_ADD, c->fd, &ev) < 0)
        die("epoll_ctl failed");
}

/* ---- the two protocols ---------------------------------------------------------------------- */

static void on_open(conn_t *c)
{
    if (g_proto == PROTO_CRDTD) {
        char hello[96];
        int n = snprintf(hello, sizeof hello, "{\"type\":\"hello\",\"client\":\"bench-%d-%d\"}",
                         (int)getpid(), c->idx);
        send_frame(c, 1, (const uint8_t *)hello, (size_t)n);
    } else {
        /* y-protocols sync step 1 with an empty state vector: "send me the document" */
        static const uint8_t step1[] = {0 /* messageSync */, 0 /* step 1 */, 1, 0};
        send_frame(c, 2, step1, sizeof step1);
    }
}

static void set_ready(conn_t *c)
{
    if (c->state != ST_READY) {
        c->state = ST_READY;
        g_ready++;
    }
}

/* a delivery of write i to subscriber c: "post:<i>" is in the message, raw, in both protocols */
static void delivered(conn_t *c, const uint8_t *p, size_t n)
{
    if (c == &g_writer)
        return;
    const uint8_t *m = memmem(p, n, "post:", 5);
    /* the member is a length-prefixed string in both (a libcrdt blob, a lib0 varString), short
     * enough for a one-byte length: what follows it (a CRC, a score) may be digits too */
    if (!m || m == p || m[-1] < 6 || m[-1] > 25 || m + m[-1] > p + n)
        die("a delivery without a post:<i> member");
    long i = 0;
    for (const uint8_t *e = m + m[-1], *d = m + 5; d < e; d++) {
        if (*d < '0' || *d > '9')
            die("a delivery without a post:<i> member");
        i = i * 10 + (*d - '0');
    }
    if (i >= g_nwrites)
        die("a delivery of a write never made");
    g_deliveries++;
    if (++g_got[i] == g_nsubs)
        g_complete++;
    if (g_measuring) {
        if (g_nlat == g_latcap) {
            g_latcap = g_latcap ? g_latcap * 2 : 1 << 20;
            g_lat = realloc(g_lat, g_latcap * sizeof *g_lat);
            if (!g_lat)
                die("out of memory");
        }
        g_lat[g_nlat++] = (float)(now_s() - g_sent[i]);
    }
}

static void on_message(conn_t *c, int opcode, const uint8_t *p, size_t n)
{
    if (g_proto == PROTO_CRDTD) {
        if (opcode == 1) {
            if (memmem(p, n, "\"welcome\"", 9)) {
                if (c == &g_writer) {
                    set_ready(c);
                    return;
                }
                buf_t s = {0}; /* subscribe id 1, no since, one topic: key g_key */
                put_u8(&s, 0x01);
                put_var(&s, 1);
                put_u8(&s, 0);
                put_var(&s, 1);
                put_u8(&s, 0);
                put_str(&s, g_key, strlen(g_key));
                send_frame(c, 2, s.p, s.len);
                free(s.p);
            } else {
                fprintf(stderr, "bench_yjs: crdtd said %.*s\n", (int)n, (const char *)p);
                exit(1);
            }
            return;
        }
        if (n && p[0] == 0x43)
            set_ready(c);
        else if (n && p[0] == 0x41)
            delivered(c, p, n);
        /* 0x42 acks of the writer's applies: flow control is by deliveries */
        return;
    }
    const uint8_t *q = p, *end = p + n;
    uint64_t type, sub;
    if (get_var(&q, end, &type) < 0)
        die("a y-protocols message without a type");
    if (type != 0)
        return; /* awareness (1) and others: not part of the document */
    if (get_var(&q, end, &sub) < 0)
        die("a sync message without a subtype");
    if (sub == 0) {
        /* the server's step 1: answer with step 2, the updates it lacks (none: an empty update,
         * no structs and an empty delete set) */
        static const uint8_t step2[] = {0, 1, 2, 0, 0};
        send_frame(c, 2, step2, sizeof step2);
    } else if (sub == 1) {
        set_ready(c); /* the document so far */
    } else if (sub == 2) {
        delivered(c, q, (size_t)(end - q));
    }
}

static void on_readable(conn_t *c)
{
    for (;;) {
        if (c->in.cap - c->in.len < 65536) {
            size_t cap = c->in.cap ? c->in.cap * 2 : 65536;
            while (cap - c->in.len < 65536)
                cap *= 2;
            c->in.p = realloc(c->in.p, cap);
            if (!c->in.p)
                die("out of memory");
            c->in.cap = cap;
        }
        ssize_t r = recv(c->fd, c->in.p + c->in.len, c->in.cap - c->in.len, 0);
        if (r == 0)
            die("the server closed a connection");
        if (r < 0) {
            if (errno == EAGAIN || errno == EINTR)
                break;
            die("recv failed");
        }
        c->in.len += (size_t)r;
        c->bytes += (uint64_t)r;
    }
    size_t off = 0;
    if (c->state == ST_HTTP) {
        const uint8_t *e = memmem(c->in.p, c->in.len, "\r\n\r\n", 4);
        if (!e)
            return;
        if (c->in.len < 12 || memcmp(c->in.p + 9, "101", 3))
            die("the WebSocket upgrade was refused");
        off = (size_t)(e + 4 - c->in.p);
        c->bytes -= off; /* the handshake is not a delivery's */
        c->state = ST_OPEN;
        on_open(c);
    }
    while (c->in.len - off >= 2) {
        const uint8_t *h = c->in.p + off;
        size_t avail = c->in.len - off, hl = 2;
        uint64_t n = h[1] & 0x7f;
        if (h[1] & 0x80)
            die("a masked frame from the server");
        if (n == 126) {
            if (avail < 4)
                break;
            n = (uint64_t)h[2] << 8 | h[3];
            hl = 4;
        } else if (n == 127) {
            if (avail < 10)
                break;
            n = 0;
            for (int i = 0; i < 8; i++)
                n = n << 8 | h[2 + i];
            hl = 10;
        }
        if (avail < hl + n)
            break;
        int opcode = h[0] & 0x0f;
        if (!(h[0] & 0x80) || opcode == 0)
            die("a fragmented message (not expected for these sizes)");
        if (opcode == 9)
            send_frame(c, 10, h + hl, (size_t)n);
        else if (opcode == 8)
            die("the server closed a session");
        else if (opcode == 1 || opcode == 2)
            on_message(c, opcode, h + hl, (size_t)n);
        off += hl + (size_t)n;
    }
    memmove(c->in.p, c->in.p + off, c->in.len - off);
    c->in.len -= off;
}

/* ---- the writer ------------------------------------------------------------------------------ */

/* A Yjs client id is a random uint32 (most take 5 varint bytes, as all of these do), new for
 * each process: a document that already has this client's clocks would ignore the writes. */
static uint32_t g_yclient;
#define SCORE0 1764000000000.0

static crdt_obj_t *g_tl;

static void put_f64_be(buf_t *b, double d) /* lib0 writeFloat64: big endian */
{
    uint64_t u;
    memcpy(&u, &d, 8);
    for (int i = 7; i >= 0; i--)
        put_u8(b, (uint8_t)(u >> (8 * i)));
}

/* The Yjs update (v1) of write i: one new item by client g_yclient at clock i */
static void yjs_update(buf_t *u, long i, const char *member, size_t mlen, double score)
{
    put_var(u, 1); /* one client's structs */
    put_var(u, 1); /* one struct */
    put_var(u, g_yclient);
    put_var(u, (uint64_t)i); /* its clock */
    if (g_map) {
        /* Item, ContentAny (ref 8), a parentSub (BIT6): Y.Map "feed" set member = score */
        put_u8(u, 8 | 0x20);
        put_var(u, 1); /* parent is a root type, by name */
        put_str(u, "feed", 4);
        put_str(u, member, mlen); /* the map key */
        put_var(u, 1);             /* one value */
        /* lib0's writeAny of a number: an integer within 31 bits as a varint (never here: the
         * scores are above 2^31), else a float32 when that is exact, else a float64 */
        float f = (float)score;
        if ((double)f == score) {
            uint32_t b;
            memcpy(&b, &f, 4);
            put_u8(u, 124);
            for (int k = 3; k >= 0; k--)
                put_u8(u, (uint8_t)(b >> (8 * k)));
        } else {
            put_u8(u, 123);
            put_f64_be(u, score);
        }
    } else {
        /* Item, ContentAny, appended after the writer's previous item (origin, BIT8) */
        if (i > 0) {
            put_u8(u, 8 | 0x80);
            put_var(u, g_yclient);
            put_var(u, (uint64_t)i - 1);
        } else {
            put_u8(u, 8);
            put_var(u, 1);
            put_str(u, "feed", 4);
        }
        put_var(u, 1);
        put_u8(u, 119); /* lib0 any: string */
        put_str(u, member, mlen);
    }
    put_var(u, 0); /* an empty delete set */
}

static void write_one(long i)
{
    char member[32];
    int mlen = snprintf(member, sizeof member, "post:%ld", i);
    double score = SCORE0 + (double)i;
    buf_t m = {0};
    g_sent[i] = now_s();
    if (g_proto == PROTO_CRDTD) {
        crdt_obj_t *delta = NULL;
        if (crdt_timeline_add(g_tl, member, (size_t)mlen, score, &delta) != 1 || !delta)
            die("the writer's timeline add changed nothing");
        crdt_buf_t enc = {0};
        if (crdt_obj_encode(delta, &enc) < 0)
            die("encode failed");
        crdt_obj_free(delta);
        put_u8(&m, 0x03); /* apply: id, key, the delta's libcrdt encoding */
        put_var(&m, (uint64_t)i + 1);
        put_str(&m, g_key, strlen(g_key));
        put(&m, enc.data, enc.len);
        crdt_buf_free(&enc);
    } else {
        buf_t u = {0};
        yjs_update(&u, i, member, (size_t)mlen, score);
        put_u8(&m, 0);  /* messageSync */
        put_u8(&m, 2);  /* update */
        put_str(&m, u.p, u.len);
        free(u.p);
    }
    send_frame(&g_writer, 2, m.p, m.len);
    free(m.p);
    g_nwrites = i + 1;
}

static int cmp_f(const void *a, const void *b)
{
    float x = *(const float *)a, y = *(const float *)b;
    return x < y ? -1 : x > y;
}

static double proc_cpu_s(int pid)
{
    if (pid <= 0)
        return 0;
    char path[64], line[1024];
    snprintf(path, sizeof path, "/proc/%d/stat", pid);
    FILE *f = fopen(path, "r");
    if (!f)
        return 0;
    size_t n = fread(line, 1, sizeof line - 1, f);
    fclose(f);
    line[n] = 0;
    char *p = strrchr(line, ')');
    unsigned long ut = 0, st = 0;
    /* fields after the comm: state(3) ... utime(14) stime(15) */
    if (!p || sscanf(p + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %lu %lu", &ut, &st) != 2)
        return 0;
    return (double)(ut + st) / (double)sysconf(_SC_CLK_TCK);
}

static double self_cpu_s(void)
{
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return (double)ru.ru_utime.tv_sec + (double)ru.ru_utime.tv_usec * 1e-6 +
           (double)ru.ru_stime.tv_sec + (double)ru.ru_stime.tv_usec * 1e-6;
}

/* Closes every connection with a reset: none is left in TIME_WAIT holding a local port, which
 * rounds of 1,001 connections each would otherwise run out of. */
static void close_all(void)
{
    struct linger lg = {1, 0};
    for (int i = 0; i <= g_nsubs; i++) {
        conn_t *c = i < g_nsubs ? &g_subs[i] : &g_writer;
        if (c->fd > 0) {
            setsockopt(c->fd, SOL_SOCKET, SO_LINGER, &lg, sizeof lg);
            close(c->fd);
        }
    }
}

static void service(int ep, int ms)
{
    struct epoll_event ev[256];
    int n = epoll_wait(ep, ev, 256, ms);
    for (int i = 0; i < n; i++)
        on_readable(ev[i].data.ptr);
}

int main(int argc, char **argv)
{
    if (argc < 3)
        die("usage: bench_yjs crdtd|yjs PORT [--subs N] [--secs S] [--rate W] [--window K] "
            "[--pid PID] [--shape map|array]");
    if (!strcmp(argv[1], "--print-yjs")) {
        /* bench_yjs --print-yjs N CLIENT map|array: the Yjs updates of writes 0 .. N-1 in hex,
         * one a line, which bench/yjs/check_updates.mjs compares with what yjs itself makes */
        long n = atol(argv[2]);
        g_yclient = argc > 3 ? (uint32_t)strtoul(argv[3], NULL, 10) : 0x90000001u;
        g_map = argc <= 4 || strcmp(argv[4], "array") != 0;
        for (long i = 0; i < n; i++) {
            char member[32];
            int mlen = snprintf(member, sizeof member, "post:%ld", i);
            buf_t u = {0};
            yjs_update(&u, i, member, (size_t)mlen, SCORE0 + (double)i);
            for (size_t k = 0; k < u.len; k++)
                printf("%02x", u.p[k]);
            printf("\n");
            free(u.p);
        }
        return 0;
    }
    g_proto = !strcmp(argv[1], "yjs") ? PROTO_YJS : PROTO_CRDTD;
    if (g_proto == PROTO_CRDTD && strcmp(argv[1], "crdtd"))
        die("the server is crdtd or yjs");
    g_port = atoi(argv[2]);
    g_nsubs = 1000;
    double secs = 3, rate = 0;
    int window = 8, pid = 0;
    for (int i = 3; i + 1 < argc; i += 2) {
        if (!strcmp(argv[i], "--subs"))
            g_nsubs = atoi(argv[i + 1]);
        else if (!strcmp(argv[i], "--secs"))
            secs = atof(argv[i + 1]);
        else if (!strcmp(argv[i], "--rate"))
            rate = atof(argv[i + 1]);
        else if (!strcmp(argv[i], "--window"))
            window = atoi(argv[i + 1]);
        else if (!strcmp(argv[i], "--pid"))
            pid = atoi(argv[i + 1]);
        else if (!strcmp(argv[i], "--shape"))
            g_map = strcmp(argv[i + 1], "array") != 0;
        else
            die("unknown option");
    }
    if (g_nsubs < 1 || secs <= 0 || window < 1)
        die("bad --subs, --secs or --window");
    long maxw = 4000000;
    g_sent = calloc((size_t)maxw, sizeof *g_sent);
    g_got = calloc((size_t)maxw, sizeof *g_got);
    g_subs = calloc((size_t)g_nsubs, sizeof *g_subs);
    g_tl = crdt_timeline_new(1000);
    srand((unsigned)getpid());
    g_yclient = 0x90000000u + ((uint32_t)rand() & 0x0fffffffu);
    int ep = epoll_create1(0);
    if (!g_sent || !g_got || !g_subs || !g_tl || ep < 0)
        die("out of memory");

    for (int i = 0; i < g_nsubs; i++) {
        start_conn(&g_subs[i], i, ep);
        if (i % 64 == 63)
            service(ep, 0);
    }
    start_conn(&g_writer, g_nsubs, ep);
    double t0 = now_s();
    while (g_ready < g_nsubs + 1 && now_s() - t0 < 60)
        service(ep, 10);
    if (g_ready < g_nsubs + 1)
        die("not every subscriber was ready in 60 s");

    /* a warm-up: a few writes to every subscriber, untimed */
    for (long i = 0; i < 20; i++) {
        write_one(i);
        for (double ts = now_s(); g_complete < i + 1 && now_s() - ts < 10;)
            service(ep, 5);
        if (g_complete < i + 1)
            die("a warm-up write did not reach every subscriber in 10 s (a write the server "
                "refused?)");
    }
    uint64_t bytes0 = 0;
    for (int i = 0; i < g_nsubs; i++)
        bytes0 += g_subs[i].bytes;
    long d0 = g_deliveries, w0 = g_nwrites;
    double cpu0 = proc_cpu_s(pid), self0 = self_cpu_s();
    g_measuring = true;
    double start = now_s(), end = start + secs;
    while (now_s() < end && g_nwrites < maxw) {
        int wait_ms = 0;
        if (rate > 0) {
            while (g_nwrites - w0 < (long)((now_s() - start) * rate) + 1)
                write_one(g_nwrites);
            double due = start + (double)(g_nwrites - w0) / rate - now_s();
            wait_ms = due > 0 ? (int)(due * 1e3) : 0;
        } else {
            while (g_nwrites - g_complete < window)
                write_one(g_nwrites);
            wait_ms = 5;
        }
        service(ep, wait_ms);
    }
    long want = (g_nwrites - w0) * g_nsubs + d0;
    for (double ts = now_s(); g_deliveries < want && now_s() - ts < 10;)
        service(ep, 5);
    double el = now_s() - start, cpu = proc_cpu_s(pid) - cpu0, self = self_cpu_s() - self0;
    g_measuring = false;
    if (g_deliveries < want)
        fprintf(stderr, "bench_yjs: %ld of %ld deliveries arrived\n", g_deliveries - d0, want - d0);
    uint64_t bytes = 0;
    for (int i = 0; i < g_nsubs; i++)
        bytes += g_subs[i].bytes;
    long d = g_deliveries - d0;
    qsort(g_lat, g_nlat, sizeof *g_lat, cmp_f);
    double p50 = g_nlat ? g_lat[(size_t)(0.5 * (double)(g_nlat - 1))] : 0;
    double p99 = g_nlat ? g_lat[(size_t)(0.99 * (double)(g_nlat - 1))] : 0;
    printf("writes %ld\ndeliveries %ld\ndeliveries_s %.0f\np50_ms %.3f\np99_ms %.3f\n"
           "bytes_per_delivery %.2f\nserver_cpu_us %.3f\nclient_cpu_us %.3f\n",
           g_nwrites - w0, d, (double)d / el, p50 * 1e3, p99 * 1e3,
           d ? (double)(bytes - bytes0) / (double)d : 0, d && pid ? cpu * 1e6 / (double)d : 0,
           d ? self * 1e6 / (double)d : 0);
    close_all();
    return g_deliveries < want ? 1 : 0;
}
