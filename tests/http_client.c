/* http_client.c - loopback HTTP/1.1 client and crdtd process helpers for the HTTP tests */
#define _GNU_SOURCE
#include "http_client.h"

#include "crdt.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static uint64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

static const hc_transport_t *transport; /* NULL: plain sockets */

void hc_set_transport(const hc_transport_t *t)
{
    transport = t;
}

static ssize_t io_recv(int fd, void *p, size_t n)
{
    return transport ? transport->recv(fd, p, n) : recv(fd, p, n, 0);
}

ssize_t hc_io_send(int fd, const void *p, size_t n)
{
    return transport ? transport->send(fd, p, n) : send(fd, p, n, MSG_NOSIGNAL);
}

ssize_t hc_io_recv(int fd, void *p, size_t n)
{
    return io_recv(fd, p, n);
}

void hc_close(int fd)
{
    if (fd < 0)
        return;
    if (transport)
        transport->close(fd);
    close(fd);
}

int hc_connect(int port)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return -1;
    struct timeval tv = {5, 0};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (connect(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0) {
        close(fd);
        return -1;
    }
    if (transport && transport->wrap(fd)) {
        hc_close(fd);
        return -1;
    }
    return fd;
}

static int send_all(int fd, const void *p, size_t n)
{
    const char *c = p;
    while (n) {
        ssize_t w = transport ? transport->send(fd, c, n) : send(fd, c, n, MSG_NOSIGNAL);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0)
            return -1;
        c += w;
        n -= (size_t)w;
    }
    return 0;
}

void hc_resp_free(hc_resp_t *r)
{
    free(r->headers);
    free(r->body);
    memset(r, 0, sizeof(*r));
}

const char *hc_header(const hc_resp_t *r, const char *name, char *buf, size_t n)
{
    if (!r->headers)
        return NULL;
    size_t nl = strlen(name);
    for (const char *line = strstr(r->headers, "\r\n"); line; line = strstr(line + 2, "\r\n")) {
        const char *h = line + 2;
        if (!strncasecmp(h, name, nl) && h[nl] == ':') {
            h += nl + 1;
            while (*h == ' ')
                h++;
            const char *e = strstr(h, "\r\n");
            size_t len = e ? (size_t)(e - h) : strlen(h);
            if (len >= n)
                len = n - 1;
            memcpy(buf, h, len);
            buf[len] = '\0';
            return buf;
        }
    }
    return NULL;
}

/* Reads one Content-Length-framed response (or until close when there is none). A response to
 * HEAD (head), and a 204 or 304, end with their headers. */
static int read_response(int fd, hc_resp_t *out, bool head)
{
    size_t cap = 4096, len = 0, hlen = 0; /* hlen: header block length, 0 until seen */
    char *buf = malloc(cap + 1);
    if (!buf)
        return -1;
    long long clen = -1;
    for (;;) {
        if (hlen && clen >= 0 && len >= hlen + 4 + (size_t)clen)
            break;
        if (len == cap) {
            char *nb = realloc(buf, cap * 2 + 1);
            if (!nb) {
                free(buf);
                return -1;
            }
            buf = nb;
            cap *= 2;
        }
        ssize_t r = io_recv(fd, buf + len, cap - len);
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0) {
            if (hlen && clen < 0)
                break; /* framed by close */
            free(buf);
            return -1;
        }
        len += (size_t)r;
        buf[len] = '\0';
        if (!hlen) {
            char *hend = strstr(buf, "\r\n\r\n");
            if (hend) {
                hlen = (size_t)(hend - buf);
                hc_resp_t tmp = {0};
                tmp.headers = strndup(buf, hlen);
                char v[32];
                if (tmp.headers && hc_header(&tmp, "content-length", v, sizeof(v)))
                    clen = atoll(v);
                int st = !strncmp(buf, "HTTP/1.", 7) && hlen > 12 ? atoi(buf + 9) : 0;
                if (head || st == 204 || st == 304)
                    clen = 0;
                free(tmp.headers);
            }
        }
    }
    out->headers = strndup(buf, hlen);
    size_t blen = len - hlen - 4;
    if (clen >= 0 && (size_t)clen < blen)
        blen = (size_t)clen;
    out->body = malloc(blen + 1);
    if (!out->headers || !out->body) {
        free(buf);
        hc_resp_free(out);
        return -1;
    }
    memcpy(out->body, buf + hlen + 4, blen);
    out->body[blen] = '\0';
    out->body_len = blen;
    out->status = 0;
    if (!strncmp(buf, "HTTP/1.", 7) && hlen > 12)
        out->status = atoi(buf + 9);
    free(buf);
    return 0;
}

int hc_send(int fd, const char *method, const char *path, const char *extra_headers,
            const void *body, size_t len, hc_resp_t *out)
{
    memset(out, 0, sizeof(*out));
    char head[8192];
    int n = snprintf(head, sizeof(head), "%s %s HTTP/1.1\r\nHost: 127.0.0.1\r\n%s", method, path,
                     extra_headers ? extra_headers : "");
    if (body)
        n += snprintf(head + n, sizeof(head) - (size_t)n,
                      "Content-Type: application/json\r\nContent-Length: %zu\r\n", len);
    n += snprintf(head + n, sizeof(head) - (size_t)n, "\r\n");
    if (n >= (int)sizeof(head) || send_all(fd, head, (size_t)n) ||
        (body && len && send_all(fd, body, len)))
        return -1;
    return read_response(fd, out, !strcmp(method, "HEAD"));
}

static char *hc_auth_header; /* "Authorization: Bearer ...\r\n" of hc_request, or NULL */

void hc_set_token(const char *token)
{
    free(hc_auth_header);
    hc_auth_header = NULL;
    if (!token)
        return;
    size_t n = strlen(token) + 32;
    hc_auth_header = malloc(n);
    if (hc_auth_header)
        snprintf(hc_auth_header, n, "Authorization: Bearer %s\r\n", token);
}

int hc_request(int port, const char *method, const char *path, const char *body, hc_resp_t *out)
{
    memset(out, 0, sizeof(*out));
    int fd = hc_connect(port);
    if (fd < 0)
        return -1;
    int rc = hc_send(fd, method, path, hc_auth_header ? hc_auth_header : "", body,
                     body ? strlen(body) : 0, out);
    hc_close(fd);
    return rc;
}

char *hc_raw(int port, const void *data, size_t len, bool shut_wr, int timeout_ms, size_t *outlen)
{
    int fd = hc_connect(port);
    if (fd < 0)
        return NULL;
    send_all(fd, data, len); /* the server may close early: what it answered still counts */
    if (shut_wr)
        shutdown(fd, SHUT_WR);
    size_t cap = 4096, n = 0;
    char *buf = malloc(cap + 1);
    uint64_t deadline = now_ms() + (uint64_t)timeout_ms;
    while (buf) {
        int left = (int)(deadline - now_ms());
        if ((int64_t)(deadline - now_ms()) <= 0)
            break;
        struct pollfd pfd = {fd, POLLIN, 0};
        if (poll(&pfd, 1, left) <= 0)
            break;
        if (n == cap) {
            char *nb = realloc(buf, cap * 2 + 1);
            if (!nb)
                break;
            buf = nb;
            cap *= 2;
        }
        ssize_t r = io_recv(fd, buf + n, cap - n);
        if (r <= 0)
            break;
        n += (size_t)r;
    }
    hc_close(fd);
    if (buf)
        buf[n] = '\0';
    if (outlen)
        *outlen = n;
    return buf;
}

/* ---- processes ------------------------------------------------------------------------------ */

static int parse_port(const char *line, const char *what)
{
    const char *p = strstr(line, what);
    if (!p)
        return 0;
    p = strrchr(line, ':');
    return p ? atoi(p + 1) : 0;
}

int crdtd_start(crdtd_proc_t *p, const char *binary, const char *dir, const char *const *args)
{
    memset(p, 0, sizeof(*p));
    snprintf(p->errlog, sizeof(p->errlog), "%s/crdtd-stderr.log", dir);
    int pipefd[2];
    if (pipe2(pipefd, O_CLOEXEC))
        return -1;
    const char *argv[64];
    int argc = 0;
    argv[argc++] = binary;
    argv[argc++] = "--listen";
    argv[argc++] = "127.0.0.1:0";
    for (int i = 0; args && args[i] && argc < 62; i++)
        argv[argc++] = args[i];
    argv[argc] = NULL;
    pid_t parent = getpid();
    pid_t pid = fork();
    if (pid < 0) {
        close(pipefd[0]);
        close(pipefd[1]);
        return -1;
    }
    if (pid == 0) {
        /* a test that dies (its watchdog, a crash) takes its servers with it: no crdtd is left
         * running on the machine, holding ports and CPU */
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        if (getppid() != parent)
            _exit(127);
        int err = open(p->errlog, O_WRONLY | O_CREAT | O_APPEND, 0644);
        if (err >= 0)
            dup2(err, 2);
        dup2(pipefd[1], 1);
        execv(binary, (char *const *)argv);
        _exit(127);
    }
    close(pipefd[1]);
    p->pid = pid;
    bool want_roshi = false;
    for (int i = 0; args && args[i]; i++)
        want_roshi |= !strcmp(args[i], "--roshi-listen");
    /* read stdout lines until the port(s) appear, the process exits, or 10 s pass */
    char buf[1024];
    size_t n = 0;
    uint64_t deadline = now_ms() + 10000;
    while (now_ms() < deadline && (!p->port || (want_roshi && !p->roshi_port))) {
        struct pollfd pfd = {pipefd[0], POLLIN, 0};
        if (poll(&pfd, 1, 100) <= 0)
            continue;
        ssize_t r = read(pipefd[0], buf + n, sizeof(buf) - 1 - n);
        if (r <= 0)
            break;
        n += (size_t)r;
        buf[n] = '\0';
        char *nl;
        while ((nl = strchr(buf, '\n'))) {
            *nl = '\0';
            if (strstr(buf, "roshi API listening"))
                p->roshi_port = parse_port(buf, "listening on");
            else if (strstr(buf, "listening on"))
                p->port = parse_port(buf, "listening on");
            size_t rest = n - (size_t)(nl + 1 - buf);
            memmove(buf, nl + 1, rest);
            n = rest;
            buf[n] = '\0';
        }
    }
    close(pipefd[0]);
    if (!p->port || (want_roshi && !p->roshi_port)) {
        crdtd_stop(p, SIGKILL, 2000);
        return -1;
    }
    return 0;
}

static int wait_exit(pid_t pid, int timeout_ms, int *status)
{
    uint64_t deadline = now_ms() + (uint64_t)timeout_ms;
    for (;;) {
        pid_t r = waitpid(pid, status, WNOHANG);
        if (r == pid)
            return 0;
        if (r < 0)
            return -1;
        if (now_ms() >= deadline)
            return -1;
        usleep(5000);
    }
}

int crdtd_stop(crdtd_proc_t *p, int sig, int timeout_ms)
{
    if (p->pid <= 0)
        return -1;
    int status = 0;
    kill(p->pid, sig);
    if (wait_exit(p->pid, timeout_ms, &status)) {
        kill(p->pid, SIGKILL);
        waitpid(p->pid, &status, 0);
        p->pid = 0;
        return -1;
    }
    p->pid = 0;
    return status;
}

int crdtd_run(const char *binary, const char *const *args, const char *errfile, int timeout_ms)
{
    const char *argv[64];
    int argc = 0;
    argv[argc++] = binary;
    for (int i = 0; args && args[i] && argc < 63; i++)
        argv[argc++] = args[i];
    argv[argc] = NULL;
    pid_t pid = fork();
    if (pid < 0)
        return -1;
    if (pid == 0) {
        int err = open(errfile, O_WRONLY | O_CREAT | O_TRUNC, 0644);
        if (err >= 0)
            dup2(err, 2);
        int nul = open("/dev/null", O_WRONLY);
        if (nul >= 0)
            dup2(nul, 1);
        execv(binary, (char *const *)argv);
        _exit(127);
    }
    int status;
    if (wait_exit(pid, timeout_ms, &status)) {
        kill(pid, SIGKILL);
        waitpid(pid, &status, 0);
        return -1;
    }
    return status;
}

char *test_tmpdir(void)
{
    const char *base = getenv("TMPDIR");
    char tmpl[512];
    snprintf(tmpl, sizeof(tmpl), "%s/crdtd-test-XXXXXX", base && *base ? base : "/tmp");
    char *d = mkdtemp(tmpl);
    return d ? strdup(d) : NULL;
}

void rm_rf(const char *path)
{
    if (!path || strlen(path) < 8 || !strstr(path, "crdtd-test-"))
        return; /* only ever our own temporary directories */
    pid_t pid = fork();
    if (pid == 0) {
        execlp("rm", "rm", "-rf", "--", path, (char *)NULL);
        _exit(127);
    }
    if (pid > 0)
        waitpid(pid, NULL, 0);
}

void hc_b64(const char *s, char *o, bool url)
{
    size_t w = crdt_base64_encode_into(o, s, strlen(s), url ? CRDT_B64_URL | CRDT_B64_NOPAD : 0);
    o[w] = '\0';
}

const char *hc_b64s(const char *s, bool url)
{
    static char bufs[16][1024];
    static unsigned k;
    char *o = bufs[k++ % 16];
    o[0] = '\0';
    if (crdt_base64_encoded_len(strlen(s), 0) < sizeof(bufs[0]))
        hc_b64(s, o, url);
    return o;
}

const char *hc_roshi_cursor(double score, const void *m, size_t mlen, bool pct)
{
    static char bufs[8][1024];
    static unsigned k;
    char *o = bufs[k++ % 8];
    uint64_t bits;
    memcpy(&bits, &score, sizeof(bits));
    int w = snprintf(o, sizeof(bufs[0]), "%" PRIu64 "A", bits);
    char enc[260];
    size_t n = mlen <= 180 ? crdt_base64_encode_into(enc, m, mlen, CRDT_B64_URL) : 0;
    for (size_t i = 0; i < n; i++)
        w += pct && enc[i] == '=' ? snprintf(o + w, sizeof(bufs[0]) - (size_t)w, "%%3D")
                                  : snprintf(o + w, sizeof(bufs[0]) - (size_t)w, "%c", enc[i]);
    return o;
}

const char *hc_pctn(const void *p, size_t n)
{
    static char bufs[16][3 * 1024 + 1];
    static unsigned k;
    char *o = bufs[k++ % 16];
    const unsigned char *b = p;
    size_t w = 0;
    o[0] = '\0';
    if (n > 1024)
        return o;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = b[i];
        if ((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
            c == '-' || c == '.' || c == '_' || c == '~' || c == ':') {
            o[w++] = (char)c;
        } else {
            o[w++] = '%';
            o[w++] = "0123456789ABCDEF"[c >> 4];
            o[w++] = "0123456789ABCDEF"[c & 15];
        }
    }
    o[w] = '\0';
    return o;
}

const char *hc_pct(const char *s)
{
    return hc_pctn(s, strlen(s));
}

bool hc_file_wait(const char *path, const char *needle, int timeout_ms)
{
    for (int waited = 0; waited <= timeout_ms; waited += 20) {
        FILE *f = fopen(path, "r");
        char line[1024];
        bool found = false;
        while (f && !found && fgets(line, sizeof(line), f))
            found = strstr(line, needle) != NULL;
        if (f)
            fclose(f);
        if (found)
            return true;
        usleep(20000);
    }
    return false;
}
