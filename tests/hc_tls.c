/* hc_tls.c - the HTTP client's TLS transport (hc_tls.h): connections without a session (a plain
 * port) are carried as plain sockets */
#include "hc_tls.h"

#include <stdbool.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdio.h>
#include <sys/socket.h>
#include <sys/types.h>

#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>

#include "http_client.h"

#define MAX_FD 4096

static SSL_CTX *ctx;
static SSL *by_fd[MAX_FD]; /* each connection's session, by its socket */
static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static int plain_ports[16];
static int nplain;

void hc_tls_plain_port(int port)
{
    pthread_mutex_lock(&lock);
    if (nplain < 16)
        plain_ports[nplain++] = port;
    pthread_mutex_unlock(&lock);
}

void hc_tls_plain_clear(void)
{
    pthread_mutex_lock(&lock);
    nplain = 0;
    pthread_mutex_unlock(&lock);
}

static bool plain(int fd)
{
    struct sockaddr_in sa;
    socklen_t sl = sizeof(sa);
    if (getpeername(fd, (struct sockaddr *)&sa, &sl))
        return false;
    bool p = false;
    pthread_mutex_lock(&lock);
    for (int i = 0; i < nplain; i++)
        p = p || plain_ports[i] == ntohs(sa.sin_port);
    pthread_mutex_unlock(&lock);
    return p;
}

static SSL *ssl_of(int fd)
{
    if (fd < 0 || fd >= MAX_FD)
        return NULL;
    pthread_mutex_lock(&lock);
    SSL *s = by_fd[fd];
    pthread_mutex_unlock(&lock);
    return s;
}

static int tls_wrap(int fd)
{
    if (fd < 0 || fd >= MAX_FD || !ctx)
        return -1;
    if (plain(fd))
        return 0;
    SSL *s = SSL_new(ctx);
    if (!s)
        return -1;
    SSL_set_fd(s, fd);
    X509_VERIFY_PARAM_set1_ip_asc(SSL_get0_param(s), "127.0.0.1");
    if (SSL_connect(s) != 1) {
        unsigned long e = ERR_get_error();
        char why[256] = "";
        ERR_error_string_n(e, why, sizeof(why));
        printf("# hc_tls: handshake failed: %s (verify: %s)\n", why,
               X509_verify_cert_error_string(SSL_get_verify_result(s)));
        ERR_clear_error();
        SSL_free(s);
        return -1;
    }
    pthread_mutex_lock(&lock);
    by_fd[fd] = s;
    pthread_mutex_unlock(&lock);
    return 0;
}

static ssize_t tls_send(int fd, const void *p, size_t n)
{
    SSL *s = ssl_of(fd);
    if (!s)
        return send(fd, p, n, MSG_NOSIGNAL);
    int w = SSL_write(s, p, (int)n);
    if (w <= 0)
        ERR_clear_error();
    return w;
}

static ssize_t tls_recv(int fd, void *p, size_t n)
{
    SSL *s = ssl_of(fd);
    if (!s)
        return recv(fd, p, n, 0);
    int r = SSL_read(s, p, (int)n);
    if (r <= 0)
        ERR_clear_error();
    return r;
}

static void tls_close(int fd)
{
    if (fd < 0 || fd >= MAX_FD)
        return;
    pthread_mutex_lock(&lock);
    SSL *s = by_fd[fd];
    by_fd[fd] = NULL;
    pthread_mutex_unlock(&lock);
    SSL_free(s); /* no close_notify: the socket closes right after */
}

static const hc_transport_t tls = {tls_wrap, tls_send, tls_recv, tls_close};

int hc_tls_use(const char *ca_file)
{
    SSL_CTX *c = SSL_CTX_new(TLS_client_method());
    if (!c || SSL_CTX_load_verify_locations(c, ca_file, NULL) != 1) {
        SSL_CTX_free(c);
        return -1;
    }
    SSL_CTX_set_verify(c, SSL_VERIFY_PEER, NULL);
    SSL_CTX_set_mode(c, SSL_MODE_AUTO_RETRY);
    ctx = c;
    hc_set_transport(&tls);
    return 0;
}

void hc_tls_off(void)
{
    hc_set_transport(NULL);
    SSL_CTX_free(ctx);
    ctx = NULL;
}
