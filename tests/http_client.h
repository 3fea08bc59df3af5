/* http_client.h - a small HTTP/1.1 client over plain loopback sockets, and a crdtd launcher, for
 * tests
 *
 * Our own rather than libcurl: the bad-input tests must send what no well-behaved client sends
 * (garbage request lines, lying Content-Length, truncated bodies, GET and DELETE with bodies, huge
 * headers), and one small client for both the good and the bad requests keeps the tests readable.
 * Every socket has a receive/send timeout, so a test never hangs on a silent server.
 */
#ifndef CRDT_HTTP_CLIENT_H
#define CRDT_HTTP_CLIENT_H

#include <stdbool.h>
#include <stddef.h>
#include <sys/types.h>

typedef struct hc_resp {
    int status;    /* 0 when no complete response came */
    char *headers; /* raw header block, NUL-terminated (lower-case names as sent by the server) */
    char *body;    /* NUL-terminated */
    size_t body_len;
} hc_resp_t;

/* Connects to 127.0.0.1:port with 5 s send/receive timeouts; fd or -1. */
int hc_connect(int port);
/* Closes a connection of hc_connect (with its TLS session, under a transport). */
void hc_close(int fd);

/* How the client's connections carry bytes: plain sockets (NULL, the default), or a transport
 * a test installs for nodes that serve HTTPS (tests/hc_tls.h). wrap runs after connect (the
 * handshake; 0 or -1), send/recv behave as send(2)/recv(2), close before close(2). */
typedef struct hc_transport {
    int (*wrap)(int fd);
    ssize_t (*send)(int fd, const void *p, size_t n);
    ssize_t (*recv)(int fd, void *p, size_t n);
    void (*close)(int fd);
} hc_transport_t;
void hc_set_transport(const hc_transport_t *t);
/* send(2) / recv(2) on a connection of hc_connect, through the transport (for a caller that
 * drives its own loop over many connections). */
ssize_t hc_io_send(int fd, const void *p, size_t n);
ssize_t hc_io_recv(int fd, void *p, size_t n);

/* Sends one request on fd (keep-alive) and reads its response (Content-Length framed). A body
 * (len bytes, may be NULL/0) gets a Content-Length header. extra_headers: "" or lines ending in
 * "\r\n". Returns 0, or -1 when the connection failed or the response was incomplete. */
int hc_send(int fd, const char *method, const char *path, const char *extra_headers,
            const void *body, size_t len, hc_resp_t *out);

/* The bearer token hc_request sends from now on (a copy; NULL: none), for tests of a node that
 * needs tokens (--token-secret-file). */
void hc_set_token(const char *token);

/* One request on a fresh connection. */
int hc_request(int port, const char *method, const char *path, const char *body, hc_resp_t *out);

/* Sends raw bytes (then half-closes the write side when shut_wr) and collects whatever comes back
 * until the server closes or `timeout_ms` of silence; returns the bytes received (malloc'd,
 * NUL-terminated) or NULL if the connection could not be made. */
char *hc_raw(int port, const void *data, size_t len, bool shut_wr, int timeout_ms, size_t *outlen);

/* Whether a line of the file at path comes to hold needle within timeout_ms (a node's stderr). */
bool hc_file_wait(const char *path, const char *needle, int timeout_ms);

void hc_resp_free(hc_resp_t *r);

/* The base64 of the NUL-terminated s into out (room for 4 * ceil(strlen(s) / 3) + 1): standard
 * with padding (roshi's JSON), or base64url without padding (/v1/keys64/, ?keys64=) when url is
 * true. */
void hc_b64(const char *s, char *out, bool url);
/* The same into one of 16 rotating static buffers (for building requests inline); "" for a string
 * of more than 760 bytes. */
const char *hc_b64s(const char *s, bool url);

/* A roshi cursor (common/cursor.go), from its definition: the decimal uint64 of
 * math.Float64bits(score), 'A', the member m[0..mlen) in URL-safe base64 with '=' padding, the
 * '=' percent-encoded when pct (as Go's url.Values.Encode writes it); one of 8 rotating static
 * buffers, no member for more than 180 bytes. */
const char *hc_roshi_cursor(double score, const void *m, size_t mlen, bool pct);

/* RFC 3986 percent-encoding of bytes for a URL (keys in paths, query arguments): unreserved
 * characters and ':' as they are, every other byte %XX; one of 16 rotating static buffers, "" for
 * more than 1024 bytes. hc_pct: of a NUL-terminated string. */
const char *hc_pctn(const void *p, size_t n);
const char *hc_pct(const char *s);

/* Value of a response header (case-insensitive name) copied to buf, or NULL. */
const char *hc_header(const hc_resp_t *r, const char *name, char *buf, size_t n);

/* ---- a crdtd process ------------------------------------------------------------------------ */

typedef struct crdtd_proc {
    pid_t pid;
    int port;         /* REST API */
    int roshi_port;   /* 0 unless --roshi-listen was given */
    char errlog[256]; /* path of the stderr capture */
} crdtd_proc_t;

/* Starts `binary` with --listen 127.0.0.1:0 plus args (NULL-terminated), waits at most 10 s for
 * it to print its port(s). stderr goes to errlog (a file in dir). 0, or -1 (process reaped). */
int crdtd_start(crdtd_proc_t *p, const char *binary, const char *dir, const char *const *args);

/* Sends sig and waits at most timeout_ms for the exit; returns the wait status, or -1 if it did
 * not exit in time (then it is SIGKILLed and reaped). */
int crdtd_stop(crdtd_proc_t *p, int sig, int timeout_ms);

/* Runs binary with args to completion (at most timeout_ms), returns its wait status; its stderr
 * goes to errfile. */
int crdtd_run(const char *binary, const char *const *args, const char *errfile, int timeout_ms);

/* A fresh temporary directory (mkdtemp under $TMPDIR or /tmp); removed by rm_rf. */
char *test_tmpdir(void);
void rm_rf(const char *path);

#endif /* CRDT_HTTP_CLIENT_H */
