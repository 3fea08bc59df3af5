/* faultproxy.c - loopback TCP proxy with drop, delay, cut, partition and reorder faults */
#define _GNU_SOURCE
#include "faultproxy.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define FP_CHUNK 16384
#define FP_MAX_CONNS 64
#define FP_GIVE_UP_MS 2000 /* a held connection that cannot deliver within this is closed */

typedef struct fp_chunk {
    struct fp_chunk *next;
    uint64_t due_ms;
    size_t len, off;
    unsigned char data[];
} fp_chunk_t;

/* One direction of a connection: bytes read from one side, queued for the other. */
typedef struct fp_dir {
    fp_chunk_t *head, *tail;
    size_t bytes;
    bool eof;     /* the source closed its write side: shut ours once drained */
    bool shut;    /* we did */
    bool blocked; /* the last write met EAGAIN: poll for POLLOUT */
} fp_dir_t;

enum { FP_FREE, FP_LIVE, FP_HOLDING, FP_ZOMBIE };

typedef struct fp_conn {
    int state;
    int cfd, sfd;    /* client (accepted) and server (upstream) sockets, -1 once closed */
    bool connecting; /* upstream connect in progress */
    size_t cap;      /* buffer bound per direction */
    uint64_t t_cut, t_release, t_give_up;
    fp_dir_t up, down; /* up: client -> server, down: server -> client */
} fp_conn_t;

struct fp_proxy {
    pthread_t th;
    int lfd, port;
    int wake[2];
    pthread_mutex_t mu;
    pthread_cond_t cv;
    /* controls, under mu */
    int target;
    bool drop, partition, stop;
    unsigned delay_ms;
    size_t cap;
    bool cut_pending, reorder_pending;
    unsigned hold_ms, release_ms;
    uint64_t req, done;
    fp_stats_t stats;
    /* thread only (it holds mu while it works) */
    fp_conn_t conns[FP_MAX_CONNS];
};

static uint64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

static void dir_clear(fp_proxy_t *p, fp_dir_t *d, bool count_dropped)
{
    while (d->head) {
        fp_chunk_t *c = d->head;
        d->head = c->next;
        if (count_dropped)
            p->stats.dropped += c->len - c->off;
        free(c);
    }
    d->tail = NULL;
    d->bytes = 0;
}

static void close_fd(int *fd)
{
    if (*fd >= 0)
        close(*fd);
    *fd = -1;
}

static void conn_close(fp_proxy_t *p, fp_conn_t *c)
{
    close_fd(&c->cfd);
    close_fd(&c->sfd);
    dir_clear(p, &c->up, true);
    dir_clear(p, &c->down, true);
    memset(c, 0, sizeof(*c));
    c->state = FP_FREE;
    c->cfd = c->sfd = -1;
    p->stats.connections--;
}

/* Connects to the target without blocking; fd or -1. */
static int upstream_connect(int port, bool *in_progress)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return -1;
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    *in_progress = false;
    if (connect(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0) {
        if (errno != EINPROGRESS) {
            close(fd);
            return -1;
        }
        *in_progress = true;
    }
    return fd;
}

static void do_accept(fp_proxy_t *p)
{
    for (;;) {
        int fd = accept4(p->lfd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd < 0)
            return;
        fp_conn_t *c = NULL;
        for (int i = 0; i < FP_MAX_CONNS && !c; i++)
            if (p->conns[i].state == FP_FREE)
                c = &p->conns[i];
        bool inprog = false;
        int sfd = -1;
        if (c && !p->partition && p->target > 0)
            sfd = upstream_connect(p->target, &inprog);
        if (sfd < 0) {
            /* RST rather than FIN: the dialer sees a refused link, as with a down host */
            struct linger lg = {1, 0};
            setsockopt(fd, SOL_SOCKET, SO_LINGER, &lg, sizeof(lg));
            close(fd);
            p->stats.refused++;
            continue;
        }
        int one = 1;
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
        memset(c, 0, sizeof(*c));
        c->state = FP_LIVE;
        c->cfd = fd;
        c->sfd = sfd;
        c->connecting = inprog;
        c->cap = p->cap;
        p->stats.accepted++;
        p->stats.connections++;
    }
}

/* Reads what `fd` has into d (bounded by cap); drop mode discards it. -1: the socket failed. */
static int dir_read(fp_proxy_t *p, fp_conn_t *c, int fd, fp_dir_t *d, bool discard)
{
    while (!d->eof && d->bytes < c->cap) {
        size_t want = c->cap - d->bytes;
        if (want > FP_CHUNK)
            want = FP_CHUNK;
        fp_chunk_t *ch = malloc(sizeof(*ch) + want);
        if (!ch)
            return 0; /* try again next turn */
        ssize_t r = recv(fd, ch->data, want, 0);
        if (r < 0) {
            free(ch);
            if (errno == EINTR)
                continue;
            return errno == EAGAIN || errno == EWOULDBLOCK ? 0 : -1;
        }
        if (r == 0) {
            free(ch);
            d->eof = true;
            return 0;
        }
        if (discard || p->drop) {
            p->stats.dropped += (uint64_t)r;
            free(ch);
            continue;
        }
        ch->next = NULL;
        ch->len = (size_t)r;
        ch->off = 0;
        ch->due_ms = now_ms() + p->delay_ms;
        if (d->tail)
            d->tail->next = ch;
        else
            d->head = ch;
        d->tail = ch;
        d->bytes += (size_t)r;
        if (d->bytes > p->stats.max_buffered)
            p->stats.max_buffered = d->bytes;
    }
    return 0;
}

/* Writes the due chunks of d to fd; -1: the socket failed. */
static int dir_flush(fp_proxy_t *p, fp_dir_t *d, int fd, uint64_t now, bool reordered)
{
    d->blocked = false;
    while (d->head && d->head->due_ms <= now) {
        fp_chunk_t *ch = d->head;
        ssize_t w = send(fd, ch->data + ch->off, ch->len - ch->off, MSG_NOSIGNAL);
        if (w < 0) {
            if (errno == EINTR)
                continue;
            if (errno == EAGAIN || errno == EWOULDBLOCK) {
                d->blocked = true;
                return 0;
            }
            return -1;
        }
        ch->off += (size_t)w;
        d->bytes -= (size_t)w;
        p->stats.forwarded += (uint64_t)w;
        if (reordered)
            p->stats.reordered += (uint64_t)w;
        if (ch->off == ch->len) {
            d->head = ch->next;
            if (!d->head)
                d->tail = NULL;
            free(ch);
        }
    }
    if (!d->head && d->eof && !d->shut) {
        shutdown(fd, SHUT_WR);
        d->shut = true;
    }
    return 0;
}

/* Control actions, applied by the thread under mu. */
static void apply_controls(fp_proxy_t *p, uint64_t now)
{
    if (p->partition || p->cut_pending) {
        for (int i = 0; i < FP_MAX_CONNS; i++) {
            fp_conn_t *c = &p->conns[i];
            if (c->state == FP_FREE || (!p->partition && c->state == FP_ZOMBIE))
                continue;
            p->stats.cut++;
            conn_close(p, c);
        }
        p->cut_pending = false;
    }
    if (p->reorder_pending) {
        for (int i = 0; i < FP_MAX_CONNS; i++) {
            fp_conn_t *c = &p->conns[i];
            if (c->state != FP_LIVE)
                continue;
            c->state = FP_HOLDING;
            c->t_cut = now + p->hold_ms;
            c->t_release = c->t_cut + p->release_ms;
            c->t_give_up = c->t_release + FP_GIVE_UP_MS;
        }
        p->reorder_pending = false;
    }
    p->done = p->req;
    pthread_cond_broadcast(&p->cv);
}

/* Moves connections along their reorder timeline. */
static void run_timers(fp_proxy_t *p, uint64_t now)
{
    for (int i = 0; i < FP_MAX_CONNS; i++) {
        fp_conn_t *c = &p->conns[i];
        if (c->state == FP_HOLDING && now >= c->t_cut) {
            /* the dialer loses this connection now; what it sent stays with us */
            close_fd(&c->cfd);
            dir_clear(p, &c->down, true);
            c->state = FP_ZOMBIE;
            p->stats.cut++;
        }
        if (c->state == FP_ZOMBIE && now >= c->t_release) {
            for (fp_chunk_t *ch = c->up.head; ch; ch = ch->next)
                ch->due_ms = 0;
            c->up.eof = true; /* close once delivered */
            if ((!c->up.head && c->up.shut) || now >= c->t_give_up || c->sfd < 0)
                conn_close(p, c);
        }
    }
}

static void *proxy_main(void *arg)
{
    fp_proxy_t *p = arg;
    struct pollfd pfd[2 + 2 * FP_MAX_CONNS];
    int who[2 + 2 * FP_MAX_CONNS]; /* conn index * 2 + (0 client, 1 server) */
    pthread_mutex_lock(&p->mu);
    while (!p->stop) {
        uint64_t now = now_ms();
        apply_controls(p, now);
        run_timers(p, now);

        /* poll set and timeout: the nearest due chunk or timer, at most 100 ms */
        int n = 0, timeout = 100;
        pfd[n] = (struct pollfd){p->wake[0], POLLIN, 0};
        who[n++] = -1;
        pfd[n] = (struct pollfd){p->lfd, POLLIN, 0};
        who[n++] = -1;
        for (int i = 0; i < FP_MAX_CONNS; i++) {
            fp_conn_t *c = &p->conns[i];
            if (c->state == FP_FREE)
                continue;
            bool holding = c->state != FP_LIVE;
            uint64_t next = UINT64_MAX;
            if (c->state == FP_HOLDING)
                next = c->t_cut;
            else if (c->state == FP_ZOMBIE)
                next = c->up.head && c->t_release > now ? c->t_release : now + 10;
            if (!holding && c->up.head && !c->up.blocked && !c->connecting)
                next = c->up.head->due_ms < next ? c->up.head->due_ms : next;
            if (!holding && c->down.head && !c->down.blocked)
                next = c->down.head->due_ms < next ? c->down.head->due_ms : next;
            if (next != UINT64_MAX) {
                int64_t dt = (int64_t)(next - now);
                if (dt < 0)
                    dt = 0;
                if (dt < timeout)
                    timeout = (int)dt;
            }
            if (c->cfd >= 0) {
                short ev = 0;
                if (!c->up.eof && c->up.bytes < c->cap)
                    ev |= POLLIN;
                if (c->down.blocked)
                    ev |= POLLOUT;
                pfd[n] = (struct pollfd){c->cfd, ev, 0};
                who[n++] = i * 2;
            }
            if (c->sfd >= 0) {
                short ev = 0;
                if (!c->connecting && !c->down.eof && c->down.bytes < c->cap)
                    ev |= POLLIN;
                if (c->connecting || c->up.blocked)
                    ev |= POLLOUT;
                pfd[n] = (struct pollfd){c->sfd, ev, 0};
                who[n++] = i * 2 + 1;
            }
        }
        pthread_mutex_unlock(&p->mu);
        poll(pfd, (nfds_t)n, timeout);
        pthread_mutex_lock(&p->mu);
        if (pfd[0].revents & POLLIN) {
            char b[64];
            while (read(p->wake[0], b, sizeof(b)) > 0) {
            }
        }
        if (pfd[1].revents & POLLIN)
            do_accept(p);
        now = now_ms();
        for (int k = 2; k < n; k++) {
            fp_conn_t *c = &p->conns[who[k] / 2];
            bool server = who[k] & 1;
            if (c->state == FP_FREE || !pfd[k].revents)
                continue;
            int fd = server ? c->sfd : c->cfd;
            if (fd < 0 || fd != pfd[k].fd)
                continue;
            if (server && c->connecting) {
                int err = 0;
                socklen_t el = sizeof(err);
                getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &el);
                if (err) {
                    p->stats.refused++;
                    conn_close(p, c);
                    continue;
                }
                c->connecting = false;
            }
            int rc = 0;
            fp_dir_t *in = server ? &c->down : &c->up, *out = server ? &c->up : &c->down;
            if (pfd[k].revents & (POLLIN | POLLHUP | POLLERR))
                rc = dir_read(p, c, fd, in, server && c->state == FP_ZOMBIE);
            if (rc < 0 || (pfd[k].revents & POLLERR)) {
                conn_close(p, c);
                continue;
            }
            if ((pfd[k].revents & POLLHUP) && in->eof) {
                /* this side is gone both ways: nothing more can reach it */
                dir_clear(p, out, true);
                out->eof = out->shut = true;
                close_fd(server ? &c->sfd : &c->cfd);
            }
        }
        /* forward whatever is due on every connection */
        for (int i = 0; i < FP_MAX_CONNS; i++) {
            fp_conn_t *c = &p->conns[i];
            if (c->state == FP_FREE)
                continue;
            int rc = 0;
            if (c->state == FP_LIVE) {
                if (!c->connecting && c->sfd >= 0)
                    rc |= dir_flush(p, &c->up, c->sfd, now, false);
                if (c->cfd >= 0)
                    rc |= dir_flush(p, &c->down, c->cfd, now, false);
                /* both directions finished, or one side gone with nothing left to give it */
                if (rc == 0 && ((c->up.shut && c->down.shut) ||
                                (c->up.eof && c->down.eof && !c->up.head && !c->down.head)))
                    rc = -1;
            } else if (c->state == FP_ZOMBIE && now >= c->t_release && c->sfd >= 0) {
                rc = dir_flush(p, &c->up, c->sfd, now, true);
                if (rc == 0 && !c->up.head)
                    rc = -1; /* delivered: the old connection ends */
            }
            if (rc < 0)
                conn_close(p, c);
        }
    }
    for (int i = 0; i < FP_MAX_CONNS; i++)
        if (p->conns[i].state != FP_FREE)
            conn_close(p, &p->conns[i]);
    pthread_mutex_unlock(&p->mu);
    return NULL;
}

fp_proxy_t *fp_start(int target_port)
{
    fp_proxy_t *p = calloc(1, sizeof(*p));
    if (!p)
        return NULL;
    p->lfd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    p->wake[0] = p->wake[1] = -1;
    struct sockaddr_in sa = {.sin_family = AF_INET};
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t sl = sizeof(sa);
    if (p->lfd < 0 || bind(p->lfd, (struct sockaddr *)&sa, sizeof(sa)) || listen(p->lfd, 64) ||
        getsockname(p->lfd, (struct sockaddr *)&sa, &sl) || pipe2(p->wake, O_NONBLOCK | O_CLOEXEC))
        goto fail;
    p->port = ntohs(sa.sin_port);
    p->target = target_port;
    p->cap = 1u << 20;
    for (int i = 0; i < FP_MAX_CONNS; i++)
        p->conns[i].cfd = p->conns[i].sfd = -1;
    pthread_mutex_init(&p->mu, NULL);
    pthread_cond_init(&p->cv, NULL);
    if (pthread_create(&p->th, NULL, proxy_main, p)) {
        pthread_mutex_destroy(&p->mu);
        pthread_cond_destroy(&p->cv);
        goto fail;
    }
    return p;
fail:
    if (p->lfd >= 0)
        close(p->lfd);
    if (p->wake[0] >= 0) {
        close(p->wake[0]);
        close(p->wake[1]);
    }
    free(p);
    return NULL;
}

int fp_port(const fp_proxy_t *p)
{
    return p->port;
}

/* Runs under mu: wakes the thread and waits until it applied everything asked so far. */
static void sync_with_thread(fp_proxy_t *p)
{
    uint64_t my = ++p->req;
    char b = 1;
    if (write(p->wake[1], &b, 1) < 0) {
        /* a full pipe already holds a wake-up */
    }
    while (p->done < my && !p->stop)
        pthread_cond_wait(&p->cv, &p->mu);
}

void fp_set_target(fp_proxy_t *p, int target_port)
{
    pthread_mutex_lock(&p->mu);
    p->target = target_port;
    sync_with_thread(p);
    pthread_mutex_unlock(&p->mu);
}

void fp_pass(fp_proxy_t *p)
{
    pthread_mutex_lock(&p->mu);
    p->drop = false;
    p->delay_ms = 0;
    sync_with_thread(p);
    pthread_mutex_unlock(&p->mu);
}

void fp_drop(fp_proxy_t *p, bool on)
{
    pthread_mutex_lock(&p->mu);
    p->drop = on;
    sync_with_thread(p);
    pthread_mutex_unlock(&p->mu);
}

void fp_delay(fp_proxy_t *p, unsigned ms)
{
    pthread_mutex_lock(&p->mu);
    p->delay_ms = ms;
    sync_with_thread(p);
    pthread_mutex_unlock(&p->mu);
}

void fp_cut(fp_proxy_t *p)
{
    pthread_mutex_lock(&p->mu);
    p->cut_pending = true;
    sync_with_thread(p);
    pthread_mutex_unlock(&p->mu);
}

void fp_partition(fp_proxy_t *p, bool on)
{
    pthread_mutex_lock(&p->mu);
    p->partition = on;
    sync_with_thread(p);
    pthread_mutex_unlock(&p->mu);
}

void fp_reorder(fp_proxy_t *p, unsigned hold_ms, unsigned release_ms)
{
    pthread_mutex_lock(&p->mu);
    p->reorder_pending = true;
    p->hold_ms = hold_ms;
    p->release_ms = release_ms;
    sync_with_thread(p);
    pthread_mutex_unlock(&p->mu);
}

void fp_set_buffer_cap(fp_proxy_t *p, size_t bytes)
{
    pthread_mutex_lock(&p->mu);
    p->cap = bytes ? bytes : 1;
    sync_with_thread(p);
    pthread_mutex_unlock(&p->mu);
}

void fp_get_stats(fp_proxy_t *p, fp_stats_t *out)
{
    pthread_mutex_lock(&p->mu);
    *out = p->stats;
    pthread_mutex_unlock(&p->mu);
}

void fp_stop(fp_proxy_t *p)
{
    if (!p)
        return;
    pthread_mutex_lock(&p->mu);
    p->stop = true;
    char b = 1;
    if (write(p->wake[1], &b, 1) < 0) {
    }
    pthread_cond_broadcast(&p->cv);
    pthread_mutex_unlock(&p->mu);
    pthread_join(p->th, NULL);
    close(p->lfd);
    close(p->wake[0]);
    close(p->wake[1]);
    pthread_mutex_destroy(&p->mu);
    pthread_cond_destroy(&p->cv);
    free(p);
}

#ifdef FP_STANDALONE
/* faultproxy TARGET_PORT: prints "faultproxy: listening on 127.0.0.1:PORT", then reads commands
 * from stdin, one a line: pass | drop on|off | delay MS | cut | partition on|off |
 * reorder HOLD_MS RELEASE_MS | target PORT | stats. Ends at EOF. */
int main(int argc, char **argv)
{
    if (argc != 2) {
        fprintf(stderr, "usage: faultproxy TARGET_PORT  (commands on stdin)\n");
        return 2;
    }
    fp_proxy_t *p = fp_start(atoi(argv[1]));
    if (!p) {
        perror("faultproxy");
        return 1;
    }
    printf("faultproxy: listening on 127.0.0.1:%d\n", fp_port(p));
    fflush(stdout);
    char line[256], arg[64];
    unsigned a, b;
    while (fgets(line, sizeof(line), stdin)) {
        if (!strncmp(line, "pass", 4))
            fp_pass(p);
        else if (sscanf(line, "drop %63s", arg) == 1)
            fp_drop(p, !strcmp(arg, "on"));
        else if (sscanf(line, "delay %u", &a) == 1)
            fp_delay(p, a);
        else if (!strncmp(line, "cut", 3))
            fp_cut(p);
        else if (sscanf(line, "partition %63s", arg) == 1)
            fp_partition(p, !strcmp(arg, "on"));
        else if (sscanf(line, "reorder %u %u", &a, &b) == 2)
            fp_reorder(p, a, b);
        else if (sscanf(line, "target %u", &a) == 1)
            fp_set_target(p, (int)a);
        else if (!strncmp(line, "stats", 5)) {
            fp_stats_t s;
            fp_get_stats(p, &s);
            printf("accepted=%llu refused=%llu cut=%llu forwarded=%llu dropped=%llu "
                   "reordered=%llu max_buffered=%zu connections=%u\n",
                   (unsigned long long)s.accepted, (unsigned long long)s.refused,
                   (unsigned long long)s.cut, (unsigned long long)s.forwarded,
                   (unsigned long long)s.dropped, (unsigned long long)s.reordered, s.max_buffered,
                   s.connections);
        } else {
            fprintf(stderr, "faultproxy: unknown command: %s", line);
            continue;
        }
        printf("ok\n");
        fflush(stdout);
    }
    fp_stop(p);
    return 0;
}
#endif
