/* bare_lws.c - the transport's ceiling for bench_roshi.sh: libwebsockets answering roshi's requests
 * without doing anything */
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <libwebsockets.h>

/*
 *   bare_lws PORT [SELECT_ENTRIES]     (PORT 0: the kernel picks one; it is printed)
 *
 * One lws context on 127.0.0.1, one thread, keep-alive. POST / reads and discards its body and
 * answers roshi-server's insert reply; GET / (with or without a body) answers a fixed select
 * reply of SELECT_ENTRIES (default 50) entries shaped as the ones bench_roshi.lua's keys and
 * members produce, so its size is that of a real newest-50 select. Anything else is a 404.
 *
 * It sends the way crdtd's gateway does with lws 4.1.6 (gateway/http.c): the response leaves from
 * LWS_CALLBACK_HTTP_WRITEABLE only, headers and body in one lws_write, then
 * lws_http_transaction_completed(). What crdtd does beyond this is the cost of its work.
 * SIGINT/SIGTERM stop it.
 */

#define HDR_ROOM 256
#define BODY_AT (LWS_PRE + HDR_ROOM)

enum reply { REPLY_NONE = 0, REPLY_INSERT, REPLY_SELECT, REPLY_NOT_FOUND };

typedef struct {
    char *buf; /* BODY_AT bytes of room, then the body */
    size_t len;
    unsigned status;
} canned_t;

typedef struct {
    enum reply reply; /* REPLY_NONE between requests */
    bool sending;     /* the body is read, waiting for writability */
} conn_t;

static canned_t g_canned[4];
static volatile sig_atomic_t g_stop;

static void on_signal(int sig)
{
    (void)sig;
    g_stop = 1;
}

/* Fills `c` with BODY_AT bytes of headroom and a copy of `text`. Returns 0 or -1 (out of memory).
 */
static int canned_set(canned_t *c, unsigned status, const char *text, size_t len)
{
    c->buf = malloc(BODY_AT + len);
    if (!c->buf)
        return -1;
    memcpy(c->buf + BODY_AT, text, len);
    c->len = len;
    c->status = status;
    return 0;
}

/* The select reply roshi-server and crdtd give for a newest-N select of one bench_roshi.lua key:
 * keys "tl%07d" (base64 of 9 bytes, 12 characters), members of 12 base64 characters, scores of a
 * few digits, as after a few seconds of inserts. Returns a new string, or NULL. */
static char *select_reply(int entries, size_t *len)
{
    size_t cap = 64 + (size_t)entries * 64;
    char *s = malloc(cap);
    if (!s)
        return NULL;
    size_t n = (size_t)snprintf(s, cap, "{\"records\":{\"tl0000042\":[");
    for (int i = 0; i < entries; i++)
        n += (size_t)snprintf(s + n, cap - n,
                              "%s{\"key\":\"dGwwMDAwMDQy\",\"score\":%d,\"member\":\"m001%08d\"}",
                              i ? "," : "", 123456 - i, 123456 - i);
    n += (size_t)snprintf(s + n, cap - n, "]},\"duration\":\"21µs\"}\n");
    *len = n;
    return s;
}

static int send_reply(struct lws *wsi, conn_t *c)
{
    const canned_t *k = &g_canned[c->reply];
    uint8_t hdr[HDR_ROOM];
    uint8_t *p = hdr, *end = hdr + sizeof(hdr) - 1;
    if (lws_add_http_common_headers(wsi, k->status, "application/json", k->len, &p, end) ||
        lws_finalize_http_header(wsi, &p, end))
        return -1;
    size_t hlen = (size_t)(p - hdr);
    uint8_t *start = (uint8_t *)k->buf + BODY_AT - hlen;
    memcpy(start, hdr, hlen);
    c->reply = REPLY_NONE;
    c->sending = false;
    if (lws_write(wsi, start, hlen + k->len, LWS_WRITE_HTTP_HEADERS) < (int)(hlen + k->len))
        return -1;
    return lws_http_transaction_completed(wsi) ? -1 : 0;
}

static int callback_http(struct lws *wsi, enum lws_callback_reasons reason, void *user, void *in,
                         size_t len)
{
    conn_t *c = user;
    switch (reason) {
    case LWS_CALLBACK_HTTP: {
        if (!c)
            return -1;
        bool post = lws_hdr_total_length(wsi, WSI_TOKEN_POST_URI) > 0;
        bool get = lws_hdr_total_length(wsi, WSI_TOKEN_GET_URI) > 0;
        bool root = len == 1 && ((const char *)in)[0] == '/';
        c->reply = !root  ? REPLY_NOT_FOUND
                   : post ? REPLY_INSERT
                   : get  ? REPLY_SELECT
                          : REPLY_NOT_FOUND;
        c->sending = false;
        /* lws gives a request without a body no body callbacks: answer now */
        if (lws_hdr_total_length(wsi, WSI_TOKEN_HTTP_CONTENT_LENGTH) <= 0) {
            c->sending = true;
            lws_callback_on_writable(wsi);
        }
        return 0;
    }
    case LWS_CALLBACK_HTTP_BODY: /* discarded */ break;
    case LWS_CALLBACK_HTTP_BODY_COMPLETION:
        if (!c || c->reply == REPLY_NONE)
            break;
        if (c->sending)
            return -1; /* lws re-offering pipelined input (gateway/http.c): not for this bench */
        c->sending = true;
        lws_callback_on_writable(wsi);
        break;
    case LWS_CALLBACK_HTTP_WRITEABLE:
        if (!c || !c->sending)
            break;
        return send_reply(wsi, c);
    default: break;
    }
    return 0;
}

static const struct lws_protocols protocols[] = {
    {"http", callback_http, sizeof(conn_t), 0, 0, NULL, 0},
    {NULL, NULL, 0, 0, 0, NULL, 0},
};

int main(int argc, char **argv)
{
    if (argc < 2 || argc > 3) {
        fprintf(stderr, "usage: %s PORT [SELECT_ENTRIES]   (PORT 0: the kernel picks)\n", argv[0]);
        return 2;
    }
    char *endp;
    long port = strtol(argv[1], &endp, 10);
    long entries = argc > 2 ? strtol(argv[2], &endp, 10) : 50;
    if (port < 0 || port > 65535 || entries < 0 || entries > 10000 || *endp) {
        fprintf(stderr, "bare_lws: bad PORT or SELECT_ENTRIES\n");
        return 2;
    }

    size_t slen;
    char *sel = select_reply((int)entries, &slen);
    static const char insert[] = "{\"duration\":\"20µs\",\"inserted\":10}\n";
    static const char missing[] =
        "{\"code\":404,\"description\":\"Not Found\",\"error\":\"404\"}\n";
    if (!sel || canned_set(&g_canned[REPLY_INSERT], 200, insert, sizeof(insert) - 1) ||
        canned_set(&g_canned[REPLY_SELECT], 200, sel, slen) ||
        canned_set(&g_canned[REPLY_NOT_FOUND], 404, missing, sizeof(missing) - 1)) {
        fprintf(stderr, "bare_lws: out of memory\n");
        return 1;
    }
    free(sel);

    struct sigaction sa;
    memset(&sa, 0, sizeof(sa));
    sa.sa_handler = on_signal; /* no SA_RESTART: poll() returns EINTR and the loop sees g_stop */
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);

    lws_set_log_level(LLL_ERR, NULL);
    struct lws_context_creation_info info;
    memset(&info, 0, sizeof(info));
    info.port = (int)port;
    info.iface = "127.0.0.1";
    info.protocols = protocols;
    info.options = LWS_SERVER_OPTION_DISABLE_IPV6;
    info.keepalive_timeout = 30;
    info.timeout_secs = 10;
    info.max_http_header_pool = 1024;
    info.pt_serv_buf_size = 64 * 1024;
    struct lws_context *ctx = lws_create_context(&info);
    if (!ctx) {
        fprintf(stderr, "bare_lws: cannot listen on 127.0.0.1:%ld\n", port);
        return 1;
    }
    struct lws_vhost *vh = lws_get_vhost_by_name(ctx, "default");
    printf("bare_lws: listening on http://127.0.0.1:%d (select reply %zu bytes)\n",
           vh ? lws_get_vhost_listen_port(vh) : (int)port, g_canned[REPLY_SELECT].len);
    fflush(stdout);

    while (!g_stop)
        if (lws_service(ctx, 0) < 0)
            break;
    lws_context_destroy(ctx);
    for (size_t i = 0; i < sizeof(g_canned) / sizeof(g_canned[0]); i++)
        free(g_canned[i].buf);
    return 0;
}
