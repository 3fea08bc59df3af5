/* test_faultproxy.c - the fault proxy against an echo server: pass, delay, drop, cut, partition,
 * reorder across reconnects, bounded buffers, no target */
#define _GNU_SOURCE
#include "faultproxy.h"
#include "tap.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdbool.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

static uint64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

/* ---- an echo server in a thread, logging every byte it receives in arrival order ------------ */

static struct {
    int lfd, port, wake[2];
    pthread_t th;
    pthread_mutex_t mu;
    char log[1 << 16];
    size_t loglen;
} echo;

static void *echo_main(void *arg)
{
    (void)arg;
    struct pollfd pfd[66];
    int n = 2;
    pfd[0] = (struct pollfd){echo.wake[0], POLLIN, 0};
    pfd[1] = (struct pollfd){echo.lfd, POLLIN, 0};
    static char buf[65536];
    for (;;) {
        if (poll(pfd, (nfds_t)n, 1000) < 0)
            continue;
        if (pfd[0].revents)
            break;
        if ((pfd[1].revents & POLLIN) && n < 66) {
            int fd = accept4(echo.lfd, NULL, NULL, SOCK_CLOEXEC);
            if (fd >= 0)
                pfd[n++] = (struct pollfd){fd, POLLIN, 0};
        }
        for (int i = 2; i < n; i++) {
            if (!pfd[i].revents)
                continue;
            ssize_t r = recv(pfd[i].fd, buf, sizeof(buf), MSG_DONTWAIT);
            if (r < 0 && (errno == EAGAIN || errno == EINTR))
                continue;
            if (r <= 0) {
                close(pfd[i].fd);
                pfd[i--] = pfd[--n];
                continue;
            }
            pthread_mutex_lock(&echo.mu);
            size_t room = sizeof(echo.log) - echo.loglen;
            size_t k = (size_t)r < room ? (size_t)r : room;
            memcpy(echo.log + echo.loglen, buf, k);
            echo.loglen += k;
            pthread_mutex_unlock(&echo.mu);
            /* blocking echo: the proxy reads its side, so this cannot stall for long */
            for (ssize_t off = 0; off < r;) {
                ssize_t w = send(pfd[i].fd, buf + off, (size_t)(r - off), MSG_NOSIGNAL);
                if (w <= 0)
                    break;
                off += w;
            }
        }
    }
    for (int i = 2; i < n; i++)
        close(pfd[i].fd);
    return NULL;
}

static int echo_start(void)
{
    echo.lfd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    struct sockaddr_in sa = {.sin_family = AF_INET};
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t sl = sizeof(sa);
    if (echo.lfd < 0 || bind(echo.lfd, (struct sockaddr *)&sa, sizeof(sa)) ||
        listen(echo.lfd, 64) || getsockname(echo.lfd, (struct sockaddr *)&sa, &sl) ||
        pipe(echo.wake))
        return -1;
    echo.port = ntohs(sa.sin_port);
    pthread_mutex_init(&echo.mu, NULL);
    return pthread_create(&echo.th, NULL, echo_main, NULL) ? -1 : 0;
}

static void echo_stop(void)
{
    if (write(echo.wake[1], "x", 1) < 0) {
    }
    pthread_join(echo.th, NULL);
    close(echo.lfd);
    close(echo.wake[0]);
    close(echo.wake[1]);
}

/* Offset of s in the echo server's arrival log, -1 if absent. */
static long echo_log_find(const char *s)
{
    pthread_mutex_lock(&echo.mu);
    long at = -1;
    char *hit = memmem(echo.log, echo.loglen, s, strlen(s));
    if (hit)
        at = hit - echo.log;
    pthread_mutex_unlock(&echo.mu);
    return at;
}

/* ---- client helpers ------------------------------------------------------------------------- */

static int tcp_connect(int port)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (fd < 0 || connect(fd, (struct sockaddr *)&sa, sizeof(sa))) {
        if (fd >= 0)
            close(fd);
        return -1;
    }
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    return fd;
}

/* Reads until n bytes came or timeout_ms passed; returns the count, -1 on EOF/error first. */
static ssize_t recv_n(int fd, char *buf, size_t n, int timeout_ms)
{
    size_t got = 0;
    uint64_t end = now_ms() + (uint64_t)timeout_ms;
    while (got < n) {
        int left = (int)((int64_t)end - (int64_t)now_ms());
        if (left <= 0)
            break;
        struct pollfd pfd = {fd, POLLIN, 0};
        if (poll(&pfd, 1, left) <= 0)
            continue;
        ssize_t r = recv(fd, buf + got, n - got, MSG_DONTWAIT);
        if (r < 0 && (errno == EAGAIN || errno == EINTR))
            continue;
        if (r <= 0)
            return got ? (ssize_t)got : -1;
        got += (size_t)r;
    }
    return (ssize_t)got;
}

/* True when the connection ends (EOF or reset) within timeout_ms; data before it is skipped. */
static bool closed_within(int fd, int timeout_ms)
{
    uint64_t end = now_ms() + (uint64_t)timeout_ms;
    char b[256];
    for (;;) {
        int left = (int)((int64_t)end - (int64_t)now_ms());
        if (left <= 0)
            return false;
        struct pollfd pfd = {fd, POLLIN, 0};
        if (poll(&pfd, 1, left) <= 0)
            continue;
        ssize_t r = recv(fd, b, sizeof(b), MSG_DONTWAIT);
        if (r == 0 || (r < 0 && errno != EAGAIN && errno != EINTR))
            return true;
    }
}

/* Sends msg on fd and expects it echoed within timeout_ms; returns the round trip in ms or -1. */
static long roundtrip(int fd, const char *msg, int timeout_ms)
{
    size_t n = strlen(msg);
    char buf[256];
    uint64_t t0 = now_ms();
    if (send(fd, msg, n, MSG_NOSIGNAL) != (ssize_t)n)
        return -1;
    if (recv_n(fd, buf, n, timeout_ms) != (ssize_t)n || memcmp(buf, msg, n))
        return -1;
    return (long)(now_ms() - t0);
}

int main(void)
{
    signal(SIGPIPE, SIG_IGN);
    if (echo_start())
        skip_all("cannot start an echo server on loopback");
    fp_proxy_t *p = fp_start(echo.port);
    ok(p != NULL, "proxy started");
    if (!p)
        return done_testing();
    cmp_ok(fp_port(p), ">", 0, "proxy has a port");
    fp_stats_t st;

    /* pass */
    int fd = tcp_connect(fp_port(p));
    ok(fd >= 0, "connect through the proxy");
    cmp_ok(roundtrip(fd, "hello", 2000), ">=", 0, "pass: echo comes back");
    fp_get_stats(p, &st);
    is_int((long long)st.accepted, 1, "one connection accepted");
    cmp_ok((long long)st.forwarded, ">=", 10, "bytes forwarded both ways");

    /* delay: both directions */
    fp_delay(p, 150);
    long rt = roundtrip(fd, "slow", 3000);
    cmp_ok(rt, ">=", 290, "delay 150 ms: round trip took >= 2 x 150 ms (%ld)", rt);
    cmp_ok(rt, "<", 2000, "delay: but arrived");
    fp_pass(p);
    rt = roundtrip(fd, "fast", 2000);
    ok(rt >= 0 && rt < 250, "pass again: no delay left (%ld ms, delayed it takes >= 300)", rt);

    /* drop: bytes vanish, the connection stays */
    fp_drop(p, true);
    ok(send(fd, "lost", 4, MSG_NOSIGNAL) == 4, "drop: send");
    char buf[256];
    is_int(recv_n(fd, buf, 4, 300), 0, "drop: nothing comes back, connection still open");
    fp_drop(p, false);
    ok(roundtrip(fd, "back", 2000) >= 0, "drop off: the next bytes pass (and the dropped did not)");
    ok(echo_log_find("lost") < 0, "drop: the server never saw the dropped bytes");
    fp_get_stats(p, &st);
    cmp_ok((long long)st.dropped, ">=", 4, "drop counted");

    /* cut */
    fp_cut(p);
    ok(closed_within(fd, 1000), "cut: the client sees its connection end");
    close(fd);
    fd = tcp_connect(fp_port(p));
    ok(fd >= 0 && roundtrip(fd, "again", 2000) >= 0, "cut: a new connection passes");

    /* partition */
    fp_partition(p, true);
    ok(closed_within(fd, 1000), "partition: current connection closed");
    close(fd);
    fd = tcp_connect(fp_port(p));
    ok(fd < 0 || closed_within(fd, 1000), "partition: new connections refused");
    if (fd >= 0)
        close(fd);
    fp_partition(p, false);
    fd = tcp_connect(fp_port(p));
    ok(fd >= 0 && roundtrip(fd, "healed", 2000) >= 0, "partition off: connections pass");

    /* reorder across reconnects: OLD sent on connection 1 reaches the server after NEW sent on
     * connection 2, which the client opened after connection 1 was cut */
    fp_reorder(p, 200, 500);
    uint64_t t0 = now_ms();
    ok(send(fd, "OLD-1", 5, MSG_NOSIGNAL) == 5, "reorder: send on the old connection");
    ok(closed_within(fd, 2000), "reorder: old connection cut for the client");
    cmp_ok((long long)(now_ms() - t0), ">=", 150, "... after the hold time");
    close(fd);
    ok(echo_log_find("OLD-1") < 0, "reorder: server has not seen the old bytes yet");
    fd = tcp_connect(fp_port(p));
    ok(fd >= 0 && roundtrip(fd, "NEW-2", 2000) >= 0, "reorder: new connection passes at once");
    long old_at = -1;
    for (int i = 0; i < 300 && old_at < 0; i++) {
        usleep(10000);
        old_at = echo_log_find("OLD-1");
    }
    cmp_ok(old_at, ">=", 0, "reorder: the held bytes reach the server");
    cmp_ok(echo_log_find("NEW-2"), "<", old_at, "reorder: ... after the newer connection's");
    fp_get_stats(p, &st);
    cmp_ok((long long)st.reordered, ">=", 5, "reordered bytes counted");
    ok(roundtrip(fd, "still", 2000) >= 0, "the new connection still passes");
    close(fd);

    /* bounded buffers: 256 KiB through a 4 KiB buffer with a delay arrive intact */
    fp_set_buffer_cap(p, 4096);
    fp_delay(p, 20);
    fd = tcp_connect(fp_port(p));
    size_t total = 256 * 1024, sent = 0, got = 0;
    unsigned char *out = malloc(total), *in = malloc(total);
    for (size_t i = 0; i < total; i++)
        out[i] = (unsigned char)(i * 131 + (i >> 9));
    uint64_t end = now_ms() + 20000;
    while (got < total && now_ms() < end) {
        struct pollfd pfd = {fd, (short)(POLLIN | (sent < total ? POLLOUT : 0)), 0};
        if (poll(&pfd, 1, 100) <= 0)
            continue;
        if (pfd.revents & POLLOUT) {
            ssize_t w = send(fd, out + sent, total - sent, MSG_DONTWAIT | MSG_NOSIGNAL);
            if (w > 0)
                sent += (size_t)w;
        }
        if (pfd.revents & (POLLIN | POLLHUP)) {
            ssize_t r = recv(fd, in + got, total - got, MSG_DONTWAIT);
            if (r == 0)
                break;
            if (r > 0)
                got += (size_t)r;
        }
    }
    is_int((long long)got, (long long)total, "bounded: all bytes came back");
    ok(got == total && !memcmp(in, out, total), "bounded: intact and in order");
    fp_get_stats(p, &st);
    cmp_ok((long long)st.max_buffered, "<=", 4096, "bounded: never more than the cap buffered");
    free(out);
    free(in);
    close(fd);
    fp_pass(p);

    /* no target: refused; a target again: passes */
    fp_set_target(p, 0);
    fd = tcp_connect(fp_port(p));
    ok(fd < 0 || closed_within(fd, 1000), "no target: connection refused");
    if (fd >= 0)
        close(fd);
    fp_set_target(p, echo.port);
    fd = tcp_connect(fp_port(p));
    ok(fd >= 0 && roundtrip(fd, "target", 2000) >= 0, "target set: passes");

    /* stop closes what is open */
    fp_stop(p);
    ok(closed_within(fd, 1000), "stop: open connections closed");
    close(fd);
    echo_stop();
    return done_testing();
}
