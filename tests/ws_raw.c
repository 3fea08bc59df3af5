/* ws_raw.c - a tiny WebSocket client over plain loopback sockets, for protocol tests */
#define _GNU_SOURCE /* memmem */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "ws_raw.h"

static uint64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

int ws_bytes(ws_raw_t *w, const void *p, size_t n)
{
    const uint8_t *b = p;
    while (n) {
        ssize_t k = send(w->fd, b, n, MSG_NOSIGNAL);
        if (k < 0 && errno == EINTR)
            continue;
        if (k <= 0)
            return -1;
        b += k;
        n -= (size_t)k;
    }
    return 0;
}

/* Reads more bytes into w->buf, waiting at most until `deadline`; 1 got some, 0 timeout, -1 EOF. */
static int fill(ws_raw_t *w, uint64_t deadline)
{
    uint64_t now = now_ms();
    if (now >= deadline)
        return 0;
    struct pollfd pfd = {w->fd, POLLIN, 0};
    int r = poll(&pfd, 1, (int)(deadline - now));
    if (r <= 0)
        return 0;
    if (w->cap - w->len < 65536) {
        size_t nc = w->cap ? w->cap * 2 : 131072;
        uint8_t *nb = realloc(w->buf, nc);
        if (!nb)
            return -1;
        w->buf = nb;
        w->cap = nc;
    }
    ssize_t k = recv(w->fd, w->buf + w->len, w->cap - w->len, 0);
    if (k <= 0)
        return -1;
    w->len += (size_t)k;
    return 1;
}

int ws_open(ws_raw_t *w, int port, const char *protocol)
{
    memset(w, 0, sizeof(*w));
    w->fd = socket(AF_INET, SOCK_STREAM, 0);
    if (w->fd < 0)
        return -1;
    int one = 1;
    setsockopt(w->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    struct sockaddr_in a = {0};
    a.sin_family = AF_INET;
    a.sin_port = htons((uint16_t)port);
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (connect(w->fd, (struct sockaddr *)&a, sizeof(a)) < 0)
        return -1;
    char req[512], proto[160] = "";
    if (protocol)
        snprintf(proto, sizeof(proto), "Sec-WebSocket-Protocol: %s\r\n", protocol);
    int n = snprintf(req, sizeof(req),
                     "GET / HTTP/1.1\r\nHost: 127.0.0.1:%d\r\nUpgrade: websocket\r\n"
                     "Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
                     "Sec-WebSocket-Version: 13\r\n%s\r\n",
                     port, proto);
    if (ws_bytes(w, req, (size_t)n))
        return -1;
    uint64_t deadline = now_ms() + 5000;
    for (;;) {
        uint8_t *end = w->len >= 4 ? memmem(w->buf, w->len, "\r\n\r\n", 4) : NULL;
        if (end) {
            int status = -1;
            if (sscanf((const char *)w->buf, "HTTP/1.%*d %d", &status) != 1)
                return -1;
            size_t hl = (size_t)(end + 4 - w->buf);
            if (status != 101) {
                close(w->fd);
                w->fd = -1;
                w->len = 0;
                return status;
            }
            memmove(w->buf, w->buf + hl, w->len - hl);
            w->len -= hl;
            return status;
        }
        if (fill(w, deadline) <= 0)
            return -1;
    }
}

void ws_free(ws_raw_t *w)
{
    if (w->fd >= 0)
        close(w->fd);
    w->fd = -1;
    free(w->buf);
    w->buf = NULL;
    w->len = w->cap = 0;
}

int ws_frame(ws_raw_t *w, int opcode, bool fin, const void *p, size_t n)
{
    uint8_t hdr[14];
    size_t h = 0;
    hdr[h++] = (uint8_t)((fin ? 0x80 : 0) | (opcode & 0x0f));
    if (n < 126) {
        hdr[h++] = (uint8_t)(0x80 | n);
    } else if (n < 65536) {
        hdr[h++] = 0x80 | 126;
        hdr[h++] = (uint8_t)(n >> 8);
        hdr[h++] = (uint8_t)n;
    } else {
        hdr[h++] = 0x80 | 127;
        for (int i = 7; i >= 0; i--)
            hdr[h++] = (uint8_t)((uint64_t)n >> (8 * i));
    }
    uint8_t mask[4] = {0x37, 0xa1, 0x5c, 0x02};
    memcpy(hdr + h, mask, 4);
    h += 4;
    uint8_t *f = malloc(h + n + 1);
    if (!f)
        return -1;
    memcpy(f, hdr, h);
    for (size_t i = 0; i < n; i++)
        f[h + i] = ((const uint8_t *)p)[i] ^ mask[i & 3];
    int rc = ws_bytes(w, f, h + n);
    free(f);
    return rc;
}

int ws_text(ws_raw_t *w, const char *s)
{
    return ws_frame(w, WS_OP_TEXT, true, s, strlen(s));
}

/* Parses one frame from w->buf if complete: 1 (filled), 0 (need more). */
static int parse_frame(ws_raw_t *w, int *op, bool *fin, uint8_t **payload, size_t *plen)
{
    if (w->len < 2)
        return 0;
    const uint8_t *b = w->buf;
    size_t h = 2;
    uint64_t n = b[1] & 0x7f;
    bool masked = b[1] & 0x80;
    if (n == 126) {
        if (w->len < 4)
            return 0;
        n = (uint64_t)b[2] << 8 | b[3];
        h = 4;
    } else if (n == 127) {
        if (w->len < 10)
            return 0;
        n = 0;
        for (int i = 0; i < 8; i++)
            n = n << 8 | b[2 + i];
        h = 10;
    }
    if (masked)
        h += 4;
    if (w->len < h + n)
        return 0;
    *op = b[0] & 0x0f;
    *fin = b[0] & 0x80;
    *payload = malloc(n + 1);
    memcpy(*payload, b + h, n);
    (*payload)[n] = 0;
    *plen = n;
    memmove(w->buf, w->buf + h + n, w->len - h - n);
    w->len -= h + n;
    return 1;
}

int ws_recv(ws_raw_t *w, int timeout_ms, char **out, size_t *outlen)
{
    uint64_t deadline = now_ms() + (uint64_t)timeout_ms;
    uint8_t *msg = NULL;
    size_t mlen = 0;
    int mop = -1;
    if (out)
        *out = NULL;
    for (;;) {
        int op;
        bool fin;
        uint8_t *p;
        size_t n;
        while (parse_frame(w, &op, &fin, &p, &n)) {
            if (op == WS_OP_PING) {
                w->pings++;
                if (!w->no_pong)
                    ws_frame(w, WS_OP_PONG, true, p, n);
                free(p);
                continue;
            }
            if (op == WS_OP_PONG) {
                free(p);
                continue;
            }
            if (op == WS_OP_CLOSE) {
                w->close_code = n >= 2 ? (p[0] << 8 | p[1]) : 1005;
                snprintf(w->close_reason, sizeof(w->close_reason), "%.*s", n > 2 ? (int)(n - 2) : 0,
                         n > 2 ? (char *)p + 2 : "");
                free(p);
                free(msg);
                return WS_OP_CLOSE;
            }
            if (op != WS_OP_CONT)
                mop = op;
            uint8_t *nm = realloc(msg, mlen + n + 1);
            memcpy(nm + mlen, p, n);
            msg = nm;
            mlen += n;
            msg[mlen] = 0;
            free(p);
            if (fin) {
                if (out)
                    *out = (char *)msg;
                else
                    free(msg);
                if (outlen)
                    *outlen = mlen;
                return mop;
            }
        }
        int r = fill(w, deadline);
        if (r <= 0) {
            free(msg);
            if (r < 0 && !w->close_code)
                w->close_code = 1006;
            return r == 0 ? -1 : -2;
        }
    }
}

char *ws_wait_type(ws_raw_t *w, const char *type, int timeout_ms)
{
    uint64_t deadline = now_ms() + (uint64_t)timeout_ms;
    char pat[64];
    snprintf(pat, sizeof(pat), "\"type\":\"%s\"", type);
    for (;;) {
        uint64_t now = now_ms();
        if (now >= deadline)
            return NULL;
        char *m = NULL;
        int op = ws_recv(w, (int)(deadline - now), &m, NULL);
        if (op != WS_OP_TEXT) {
            free(m);
            return NULL;
        }
        if (m && strstr(m, pat))
            return m;
        free(m);
    }
}

int ws_wait_close(ws_raw_t *w, int timeout_ms)
{
    uint64_t deadline = now_ms() + (uint64_t)timeout_ms;
    for (;;) {
        uint64_t now = now_ms();
        if (now >= deadline)
            return -1;
        int op = ws_recv(w, (int)(deadline - now), NULL, NULL);
        if (op == WS_OP_CLOSE)
            return w->close_code;
        if (op == -2)
            return 1006;
        if (op == -1)
            return -1;
    }
}
