/* http.c - HTTP on libwebsockets: assembling requests, exchanges with the handlers, responses */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/x509.h>

#include "http.h"
#include "loop.h"
#include "util.h"

/*
 * A request is assembled in its connection's state (`gw_conn_t`, lws's per-session data): method,
 * path and query args at LWS_CALLBACK_HTTP, the body at LWS_CALLBACK_HTTP_BODY. Complete, it moves
 * into an exchange (gw_exchange_t, see http.h for who owns it when) handed to s->route. The
 * handler replies (gw_http_reply) at once or from a store completion; a response that acknowledges
 * a write then waits on the loop's durability queue until the store's durable_seq reaches it (the
 * group commit, loop.c). Only then is the connection asked for writability and the response sent.
 *
 * Responses leave from LWS_CALLBACK_HTTP_WRITEABLE only: completing a transaction from inside a
 * read callback, while lws still holds further input of the same read, sends lws 4.1.6 into a
 * loop in its buffer accounting. Pipelining behind a request with a body has a second trap:
 * lws re-offers the buffered next request to a connection whose body is complete but whose
 * transaction is not, by calling LWS_CALLBACK_HTTP_BODY_COMPLETION again, in a loop that never
 * returns to poll(). On that second call the held write is flushed at once, answered with
 * "Connection: close" and the connection closed: the client has its acknowledgement and resends
 * the rest on a new connection, as HTTP/1.1 lets a server do. (A request still with its handler,
 * waiting for the store, is dropped with the connection.) Clients that do not pipeline (curl,
 * browsers, Go's net/http, wrk) never see this.
 */

enum conn_phase {
    PHASE_IDLE = 0, /* between requests */
    PHASE_BODY,     /* reading the body */
    PHASE_HANDLE,   /* the handler has the exchange (waiting for the store, perhaps) */
    PHASE_WAIT,     /* response ready, waiting for the write to be durable */
    PHASE_SEND,     /* response ready, waiting for writability */
};

typedef struct gw_conn {
    gw_server_t *srv;
    struct lws *wsi;
    enum conn_phase phase;
    gw_request_t rq;  /* being assembled */
    gw_exchange_t *x; /* the request being answered: from PHASE_HANDLE until sent */
} gw_conn_t;

size_t gw_http_session_size(void)
{
    return sizeof(gw_conn_t);
}

/* ---- responses ------------------------------------------------------------------------------ */

const char *gw_status_text(int status)
{
    switch (status) {
    case 200: return "OK";
    case 201: return "Created";
    case 204: return "No Content";
    case 304: return "Not Modified";
    case 400: return "Bad Request";
    case 403: return "Forbidden";
    case 404: return "Not Found";
    case 405: return "Method Not Allowed";
    case 409: return "Conflict";
    case 411: return "Length Required";
    case 413: return "Request Entity Too Large";
    case 414: return "Request URI Too Long";
    case 422: return "Unprocessable Entity";
    case 500: return "Internal Server Error";
    case 501: return "Not Implemented";
    case 503: return "Service Unavailable";
    default: return "Unknown";
    }
}

static void response_clear(gw_response_t *rs)
{
    free(rs->buf);
    rs->buf = NULL;
    rs->len = 0;
}

void gw_respond_text(gw_response_t *rs, int status, const char *ctype, const char *text, size_t len)
{
    response_clear(rs);
    rs->status = status;
    rs->content_type = ctype;
    rs->buf = malloc(GW_BODY_AT + len + 1);
    if (!rs->buf) {
        /* Nothing sensible to send without memory; close the connection instead. */
        rs->status = 500;
        rs->close = true;
        return;
    }
    memcpy(rs->buf + GW_BODY_AT, text, len);
    rs->buf[GW_BODY_AT + len] = '\0';
    rs->len = len;
}

void gw_respond_jw(gw_response_t *rs, int status, gw_jw_t *w)
{
    if (w->oom || !w->p) {
        gw_jw_free(w);
        gw_respond_error(rs, 500, "out of memory");
        return;
    }
    gw_jw_raw(w, "\n", 1);
    response_clear(rs);
    rs->status = status;
    rs->content_type = "application/json";
    rs->buf = w->p;
    rs->len = w->len - GW_BODY_AT;
    w->p = NULL;
}

void gw_respond_json(gw_response_t *rs, int status, json_t *j)
{
    char *s = j ? json_dumps(j, JSON_COMPACT) : NULL;
    json_decref(j);
    if (!s) {
        static const char oom[] =
            "{\"error\":\"out of memory\",\"code\":500,\"description\":\"Internal Server Error\"}";
        gw_respond_text(rs, 500, "application/json", oom, sizeof(oom) - 1);
        return;
    }
    size_t n = strlen(s);
    s[n] = '\n'; /* roshi-server's encoder ends each document with a newline; so do we */
    gw_respond_text(rs, status, "application/json", s, n + 1);
    free(s);
}

static json_t *error_json(int status, const char *msg)
{
    return json_pack("{s:s, s:i, s:s}", "error", msg, "code", status, "description",
                     gw_status_text(status));
}

void gw_respond_error(gw_response_t *rs, int status, const char *fmt, ...)
{
    char msg[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    /* jansson refuses invalid UTF-8; a message quoting client bytes must not lose the response */
    json_t *j = error_json(status, msg);
    if (!j)
        j = error_json(status, "invalid request (message not UTF-8)");
    rs->wait_seq = 0;
    gw_respond_json(rs, status, j);
}

void gw_respond_json_error(gw_response_t *rs, const json_error_t *e)
{
    char msg[400];
    snprintf(msg, sizeof(msg), "malformed JSON at line %d, column %d (byte %d): %s", e->line,
             e->column, e->position, e->text);
    json_t *j = error_json(400, msg);
    if (j)
        json_object_set_new(j, "position",
                            json_pack("{s:i, s:i, s:i}", "line", e->line, "column", e->column,
                                      "offset", e->position));
    rs->wait_seq = 0;
    gw_respond_json(rs, 400, j);
}

/* ---- requests ------------------------------------------------------------------------------- */

const char *gw_arg(const gw_request_t *rq, const char *name)
{
    for (int i = 0; i < rq->nargs; i++)
        if (!strcmp(rq->args[i].name, name))
            return rq->args[i].value;
    return NULL;
}

json_t *gw_parse_body(const gw_request_t *rq, gw_response_t *rs)
{
    json_error_t e;
    if (!rq->body_len) {
        gw_respond_error(rs, 400, "empty request body, expected JSON");
        return NULL;
    }
    json_t *j = json_loadb((const char *)rq->body, rq->body_len, JSON_REJECT_DUPLICATES, &e);
    if (!j)
        gw_respond_json_error(rs, &e);
    return j;
}

static void request_clear(gw_request_t *rq)
{
    free(rq->path);
    free(rq->auth);
    free(rq->origin);
    free(rq->if_none_match);
    free(rq->argbuf);
    free(rq->body);
    memset(rq, 0, sizeof(*rq));
}

/* ---- exchanges ------------------------------------------------------------------------------ */

/* A new exchange that takes c's assembled request (c->rq is left empty), or NULL (memory). */
static gw_exchange_t *exchange_new(gw_conn_t *c)
{
    /* Field by field, not calloc (nor malloc + memset, which compilers turn into calloc): glibc's
     * calloc skips the thread cache, and this runs once per request. */
    gw_exchange_t *x = malloc(sizeof(*x));
    if (!x)
        return NULL;
    x->srv = c->srv;
    x->rq = c->rq;
    memset(&c->rq, 0, sizeof(c->rq));
    x->rs = (gw_response_t){.ep = GW_EP_OTHER};
    x->conn = c;
    x->t_start_us = gw_now_us();
    x->wait = (gw_durable_wait_t){0};
    x->has_tok = false;
    memset(&x->tok, 0, sizeof(x->tok));
    c->x = x;
    return x;
}

static void exchange_free(gw_exchange_t *x)
{
    gw_loop_unwait(x->srv, &x->wait);
    request_clear(&x->rq);
    response_clear(&x->rs);
    gw_token_clear(&x->tok);
    free(x);
}

/* The connection is done with its exchange (sent, or closing): a handler still holding it only
 * loses its connection and frees it at gw_http_reply. */
static void conn_drop_exchange(gw_conn_t *c)
{
    gw_exchange_t *x = c->x;
    if (!x)
        return;
    c->x = NULL;
    if (c->phase == PHASE_HANDLE)
        x->conn = NULL;
    else
        exchange_free(x);
}

static void conn_reset(gw_conn_t *c)
{
    conn_drop_exchange(c);
    request_clear(&c->rq);
    c->phase = PHASE_IDLE;
}

static gw_method_t method_of(struct lws *wsi)
{
    if (lws_hdr_total_length(wsi, WSI_TOKEN_GET_URI))
        return GW_GET;
    if (lws_hdr_total_length(wsi, WSI_TOKEN_POST_URI))
        return GW_POST;
    if (lws_hdr_total_length(wsi, WSI_TOKEN_PUT_URI))
        return GW_PUT;
    if (lws_hdr_total_length(wsi, WSI_TOKEN_DELETE_URI))
        return GW_DELETE;
    if (lws_hdr_total_length(wsi, WSI_TOKEN_PATCH_URI))
        return GW_PATCH;
    if (lws_hdr_total_length(wsi, WSI_TOKEN_HEAD_URI))
        return GW_HEAD;
    if (lws_hdr_total_length(wsi, WSI_TOKEN_OPTIONS_URI))
        return GW_OPTIONS;
    return GW_OTHER_METHOD;
}

/* Copies the query arguments lws split at '&' (and percent-decoded) into rq->args. */
static int collect_args(struct lws *wsi, gw_request_t *rq)
{
    int total = lws_hdr_total_length(wsi, WSI_TOKEN_HTTP_URI_ARGS);
    if (total <= 0)
        return 0;
    /* each fragment plus its NUL fits in total + fragments bytes */
    size_t cap = (size_t)total + GW_MAX_ARGS + 16;
    rq->argbuf = malloc(cap);
    if (!rq->argbuf)
        return -1;
    size_t used = 0;
    for (int n = 0;; n++) {
        int len = lws_hdr_copy_fragment(wsi, rq->argbuf + used, (int)(cap - used),
                                        WSI_TOKEN_HTTP_URI_ARGS, n);
        if (len < 0)
            break;
        if (rq->nargs == GW_MAX_ARGS) {
            rq->too_many_args = true;
            break;
        }
        char *frag = rq->argbuf + used;
        frag[len] = '\0';
        used += (size_t)len + 1;
        char *eq = strchr(frag, '=');
        rq->args[rq->nargs].name = frag;
        if (eq) {
            *eq = '\0';
            rq->args[rq->nargs].value = eq + 1;
        } else {
            rq->args[rq->nargs].value = frag + len; /* "" */
        }
        rq->nargs++;
        if (used >= cap)
            break;
    }
    return 0;
}

/* ---- sending -------------------------------------------------------------------------------- */

static void conn_ready(gw_conn_t *c)
{
    c->phase = PHASE_SEND;
    lws_callback_on_writable(c->wsi);
}

static void on_durable(gw_server_t *s, gw_durable_wait_t *w, int rc)
{
    gw_exchange_t *x = lws_container_of(w, gw_exchange_t, wait);
    if (rc < 0) {
        gw_endpoint_t ep = x->rs.ep;
        const char *err = crdt_store_last_error(s->store);
        gw_respond_error(&x->rs, 503, "storage failure, the write is not durable: %s",
                         err ? err : crdt_strerror(rc));
        x->rs.ep = ep;
    }
    conn_ready(x->conn); /* queued exchanges always have their connection */
}

void gw_http_reply(gw_exchange_t *x)
{
    gw_conn_t *c = x->conn;
    if (!c) { /* the connection closed while the handler worked */
        x->srv->metrics.replies_dropped++;
        exchange_free(x);
        return;
    }
    gw_server_t *s = x->srv;
    if (!x->rs.buf && !x->rs.close)
        gw_respond_error(&x->rs, 500, "no response");
    if (x->rs.wait_seq && crdt_store_durable_seq(s->store) < x->rs.wait_seq) {
        c->phase = PHASE_WAIT;
        gw_loop_wait_durable(s, &x->wait, x->rs.wait_seq, on_durable);
        return;
    }
    conn_ready(c);
}

/* Hands the complete request to the router. -1: out of memory, close the connection. */
static int conn_dispatch(gw_conn_t *c)
{
    gw_server_t *s = c->srv;
    gw_exchange_t *x = exchange_new(c);
    if (!x)
        return -1;
    c->phase = PHASE_HANDLE;
    if (x->rq.method == GW_OPTIONS) {
        /* CORS preflights carry no Authorization: answered here, before any route's auth */
        gw_respond_text(&x->rs, 204, NULL, "", 0);
        x->rs.preflight = true;
        gw_http_reply(x);
        return 0;
    }
    s->route(s, x);
    return 0;
}

/* A header by name, or -1 (the room is used up: the response is dropped with its connection). */
static int add_header(struct lws *wsi, const char *name, const char *value, uint8_t **p,
                      uint8_t *end)
{
    return lws_add_http_header_by_name(wsi, (const uint8_t *)name, (const uint8_t *)value,
                                       (int)strlen(value), p, end)
               ? -1
               : 0;
}

/* The headers of browsers' concerns: CORS for a listed origin (Vary: Origin whenever there is a
 * list, as the answer depends on the Origin), a preflight's allowances, caching of static files. */
static int add_web_headers(gw_conn_t *c, const gw_request_t *rq, const gw_response_t *rs,
                           uint8_t **p, uint8_t *end)
{
    struct lws *wsi = c->wsi;
    if (rq->method == GW_OPTIONS && add_header(wsi, "allow:", GW_CORS_METHODS, p, end))
        return -1;
    if (c->srv->cfg.ncors && add_header(wsi, "vary:", "Origin", p, end))
        return -1;
    if (rq->origin_kind == GW_ORIGIN_LISTED) {
        if (add_header(wsi, "access-control-allow-origin:", rq->origin, p, end) ||
            add_header(wsi, "access-control-expose-headers:", GW_CORS_EXPOSE, p, end))
            return -1;
        if (rs->preflight &&
            (add_header(wsi, "access-control-allow-methods:", GW_CORS_METHODS, p, end) ||
             add_header(wsi, "access-control-allow-headers:", GW_CORS_HEADERS, p, end) ||
             add_header(wsi, "access-control-max-age:", GW_CORS_MAX_AGE, p, end)))
            return -1;
    }
    if (rs->cache_control && add_header(wsi, "cache-control:", rs->cache_control, p, end))
        return -1;
    if (rs->etag[0] && add_header(wsi, "etag:", rs->etag, p, end))
        return -1;
    if (rs->content_type && !strncmp(rs->content_type, "text/html", 9) &&
        add_header(wsi, "x-content-type-options:", "nosniff", p, end))
        return -1;
    return 0;
}

/* Sends the whole response (lws keeps what the socket does not take and sends it first). Returns
 * -1 to close the connection. */
static int conn_send(gw_conn_t *c)
{
    gw_server_t *s = c->srv;
    gw_exchange_t *x = c->x;
    gw_response_t *rs = &x->rs;
    uint8_t hdr[GW_HDR_ROOM];
    uint8_t *p = hdr, *end = hdr + sizeof(hdr) - 1;

    if (!rs->buf) /* nothing we could build: drop the connection */
        return -1;
    /* 204 and 304 have no body and say no length; a HEAD says the length of the body it omits */
    bool bodyless = rs->status == 204 || rs->status == 304;
    if (bodyless ? lws_add_http_header_status(c->wsi, (unsigned)rs->status, &p, end)
                 : lws_add_http_common_headers(c->wsi, (unsigned)rs->status, rs->content_type,
                                               rs->len, &p, end))
        return -1;
    if (add_web_headers(c, &x->rq, rs, &p, end))
        return -1;
    if (rs->close && lws_add_http_header_by_token(c->wsi, WSI_TOKEN_CONNECTION,
                                                  (const uint8_t *)"close", 5, &p, end))
        return -1;
    if (rs->www_auth &&
        lws_add_http_header_by_name(c->wsi, (const uint8_t *)"www-authenticate:",
                                    (const uint8_t *)"Bearer realm=\"crdtd\"", 20, &p, end))
        return -1;
    if (lws_finalize_http_header(c->wsi, &p, end))
        return -1;
    /* Headers and body leave in one write (one send(2) per response): the headers go into the
     * room kept in front of the body. For HTTP/1 an LWS_WRITE_HTTP_HEADERS write is sent as is;
     * lws resets its content-length bookkeeping at lws_http_transaction_completed(). */
    size_t hlen = (size_t)(p - hdr);
    uint8_t *start = (uint8_t *)rs->buf + GW_BODY_AT - hlen;
    memcpy(start, hdr, hlen);
    size_t blen = x->rq.head || bodyless ? 0 : rs->len;
    if (lws_write(c->wsi, start, hlen + blen, LWS_WRITE_HTTP_HEADERS) < (int)(hlen + blen))
        return -1;

    gw_metrics_request(&s->metrics, rs->ep, rs->status);
    s->metrics.bytes_out += blen;
    if (rs->wait_seq)
        gw_metrics_ack(&s->metrics, (double)(gw_now_us() - x->t_start_us) / 1e6);
    if (s->cfg.verbose)
        gw_log("%s %s -> %d (%zu bytes, %.3f ms)", gw_endpoint_name(rs->ep),
               x->rq.path ? x->rq.path : "-", rs->status, rs->len,
               (double)(gw_now_us() - x->t_start_us) / 1e3);
    bool close = rs->close;
    conn_reset(c);
    if (close)
        return -1;
    return lws_http_transaction_completed(c->wsi) ? -1 : 0;
}

/* An early error (before or instead of reading the body): answer and close, since the rest of
 * what the client sends can not be trusted to be a next request. -1: out of memory. */
static int conn_reject(gw_conn_t *c, int status, const char *msg)
{
    gw_exchange_t *x = exchange_new(c);
    if (!x)
        return -1;
    gw_respond_error(&x->rs, status, "%s", msg);
    x->rs.close = true;
    conn_ready(c);
    return 0;
}

/* ---- the lws protocol callback -------------------------------------------------------------- */

static int parse_content_length(struct lws *wsi, uint64_t *out)
{
    char buf[32];
    int n = lws_hdr_copy(wsi, buf, sizeof(buf), WSI_TOKEN_HTTP_CONTENT_LENGTH);
    if (n <= 0 || n > 19)
        return -1;
    uint64_t v = 0;
    for (int i = 0; i < n; i++) {
        if (buf[i] < '0' || buf[i] > '9')
            return -1;
        v = v * 10 + (uint64_t)(buf[i] - '0');
    }
    *out = v;
    return 0;
}

/* Copies a header into a new string (*out NULL when absent). -1: out of memory. */
static int header_dup(struct lws *wsi, enum lws_token_indexes h, char **out)
{
    *out = NULL;
    int n = lws_hdr_total_length(wsi, h);
    if (n <= 0)
        return 0;
    *out = malloc((size_t)n + 1);
    if (!*out || lws_hdr_copy(wsi, *out, n + 1, h) < 0) {
        free(*out);
        *out = NULL;
        return -1;
    }
    return 0;
}

/* Whether a request may be answered for its Host (cors.h, gw_host_allowed): on a node without a
 * token secret only IP addresses, localhost and --allowed-host names; else why, and false. */
static bool host_ok(const gw_server_t *s, struct lws *wsi, char *why, size_t whylen)
{
    if (!s->open_node)
        return true; /* tokens guard every endpoint: a rebound page has none */
    char host[GW_HOST_NAME_MAX + 16];
    int n = lws_hdr_total_length(wsi, WSI_TOKEN_HOST);
    if (n <= 0)
        return true;
    /* one too long to copy names no allowed host */
    bool copied =
        n < (int)sizeof(host) && lws_hdr_copy(wsi, host, sizeof(host), WSI_TOKEN_HOST) > 0;
    if (copied) {
        size_t len = strlen(host); /* the header's trailing whitespace is not part of it */
        while (len && (host[len - 1] == ' ' || host[len - 1] == '\t'))
            host[--len] = '\0';
        if (gw_host_allowed(&s->cfg, host))
            return true;
    }
    snprintf(why, whylen,
             "Host %.200s is not answered by a node without a token secret (a page could reach "
             "it by DNS rebinding): use its IP address or localhost, or crdtd --allowed-host",
             copied ? host : "(too long)");
    /* said here too, at most every 10 s: a client that hides the answer (a dialling WebSocket
     * library) leaves the operator the log */
    static uint64_t last_said;
    uint64_t now = gw_now_us();
    if (!last_said || now - last_said >= 10u * 1000 * 1000) {
        last_said = now;
        gw_log("refused a request for %s", why);
    }
    return false;
}

/* The request's Origin into c->rq (origin, origin_kind against its Host). -1: out of memory. */
static int origin_of(gw_conn_t *c, struct lws *wsi)
{
    char *host = NULL;
    if (header_dup(wsi, WSI_TOKEN_ORIGIN, &c->rq.origin) ||
        (c->rq.origin && header_dup(wsi, WSI_TOKEN_HOST, &host)))
        return -1;
    c->rq.origin_kind = gw_cors_classify(&c->srv->cfg, c->rq.origin, host);
    free(host);
    return 0;
}

static int on_http(gw_conn_t *c, struct lws *wsi, const char *in, size_t len)
{
    gw_server_t *s = c->srv;
    conn_reset(c);
    c->wsi = wsi;
    c->rq.method = method_of(wsi);
    if (c->rq.method == GW_HEAD) { /* every GET endpoint answers HEAD: its headers alone */
        c->rq.method = GW_GET;
        c->rq.head = true;
    }
    c->rq.roshi = lws_get_vhost(wsi) == s->vh_roshi;
    c->rq.path = malloc(len + 1);
    if (!c->rq.path)
        return -1;
    memcpy(c->rq.path, in, len);
    c->rq.path[len] = '\0';
    c->rq.path_len = len;
    if (collect_args(wsi, &c->rq))
        return -1;
    int alen = lws_hdr_total_length(wsi, WSI_TOKEN_HTTP_AUTHORIZATION);
    if (alen > 0) {
        c->rq.auth = malloc((size_t)alen + 1);
        if (!c->rq.auth || lws_hdr_copy(wsi, c->rq.auth, alen + 1, WSI_TOKEN_HTTP_AUTHORIZATION) < 0)
            return -1;
    }

    char why[400];
    if (!host_ok(s, wsi, why, sizeof(why)))
        return conn_reject(c, 403, why);
    if (origin_of(c, wsi) || header_dup(wsi, WSI_TOKEN_HTTP_IF_NONE_MATCH, &c->rq.if_none_match))
        return -1;
    bool writes = c->rq.method != GW_GET && c->rq.method != GW_OPTIONS;
    if (c->rq.origin_kind == GW_ORIGIN_FOREIGN && writes) {
        char msg[400];
        snprintf(msg, sizeof(msg),
                 "a page of origin %.256s may not write here (crdtd --cors-origin allows it)",
                 c->rq.origin);
        return conn_reject(c, 403, msg);
    }

    bool has_cl = lws_hdr_total_length(wsi, WSI_TOKEN_HTTP_CONTENT_LENGTH) > 0;
    uint64_t cl = 0;
    if (has_cl && parse_content_length(wsi, &cl)) {
        return conn_reject(c, 400, "bad Content-Length header");
    }
    if (lws_hdr_total_length(wsi, WSI_TOKEN_HTTP_TRANSFER_ENCODING) > 0) {
        return conn_reject(c, 411, "chunked request bodies are not supported; send Content-Length");
    }
    bool body_method =
        c->rq.method == GW_POST || c->rq.method == GW_PUT || c->rq.method == GW_PATCH;
    if (body_method && !has_cl) {
        return conn_reject(c, 411, "a request body needs a Content-Length header");
    }
    if (cl > s->cfg.max_body) {
        char msg[128];
        snprintf(msg, sizeof(msg),
                 "request body too large: %llu bytes, the limit is %zu (--max-body)",
                 (unsigned long long)cl, s->cfg.max_body);
        return conn_reject(c, 413, msg);
    }
    if (cl == 0) {
        /* lws sends GET/DELETE without a body no body callbacks (and a POST with an explicit
         * zero length an empty one, ignored below since the request is no longer PHASE_BODY) */
        return conn_dispatch(c);
    }
    c->rq.body = malloc((size_t)cl + 1);
    if (!c->rq.body)
        return -1;
    c->rq.body_expected = (size_t)cl;
    c->phase = PHASE_BODY;
    return 0;
}

/* The WebSocket subprotocol of the list the upgrade request asks for (the header may list several,
 * comma separated; lws picks the first it knows), or NULL. */
static const struct lws_protocols *upgrade_protocol(const gw_server_t *s, struct lws *wsi)
{
    char buf[256];
    int n = lws_hdr_copy(wsi, buf, sizeof(buf), WSI_TOKEN_PROTOCOL);
    if (n <= 0)
        return NULL;
    for (char *save = NULL, *tok = strtok_r(buf, ", \t", &save); tok;
         tok = strtok_r(NULL, ", \t", &save))
        for (const struct lws_protocols *p = s->protocols + 1; p->name; p++)
            if (!strcmp(tok, p->name))
                return p;
    return NULL;
}

/* Whether the upgrade's Origin may open a session (cors.h); a refusal is answered 403 here. */
static bool upgrade_origin_ok(const gw_server_t *s, struct lws *wsi)
{
    char origin[GW_CORS_ORIGIN_MAX + 1], host[300];
    if (lws_hdr_total_length(wsi, WSI_TOKEN_ORIGIN) <= 0)
        return true;
    /* an Origin or Host too long to copy is no origin on the list, nor this server's */
    bool got = lws_hdr_copy(wsi, origin, sizeof(origin), WSI_TOKEN_ORIGIN) > 0;
    if (lws_hdr_copy(wsi, host, sizeof(host), WSI_TOKEN_HOST) <= 0)
        host[0] = '\0';
    if (got && gw_cors_classify(&s->cfg, origin, host) != GW_ORIGIN_FOREIGN)
        return true;
    char msg[400];
    snprintf(msg, sizeof(msg),
             "a page of origin %.256s may not open a session here (crdtd --cors-origin allows it)",
             got ? origin : "(too long)");
    lws_return_http_status(wsi, 403, msg);
    return false;
}

/* "WebSocket needs Sec-WebSocket-Protocol: a or b on the main listener" from the list. */
static void refuse_upgrade(const gw_server_t *s, struct lws *wsi)
{
    char msg[256];
    size_t n = (size_t)snprintf(msg, sizeof(msg), "WebSocket needs Sec-WebSocket-Protocol: ");
    for (const struct lws_protocols *p = s->protocols + 1; p->name && n < sizeof(msg); p++)
        n += (size_t)snprintf(msg + n, sizeof(msg) - n, "%s%s", p == s->protocols + 1 ? "" : " or ",
                              p->name);
    if (n < sizeof(msg))
        snprintf(msg + n, sizeof(msg) - n, " on the main listener");
    lws_return_http_status(wsi, 400, msg);
}

int gw_http_callback(struct lws *wsi, enum lws_callback_reasons reason, void *user, void *in,
                     size_t len)
{
    gw_conn_t *c = user;
    gw_server_t *s = lws_context_user(lws_get_context(wsi));

    switch (reason) {
    case LWS_CALLBACK_CLIENT_CONNECTION_ERROR:
    case LWS_CALLBACK_CLOSED_CLIENT_HTTP:
    case LWS_CALLBACK_WSI_DESTROY:
        /* A client connection a unit dialled (peer.c marks its client wsi with opaque user data)
         * that dies before its upgrade may be reported to protocols[0], this callback, rather
         * than to its protocol: pass it on, or the unit would keep a pointer to a freed wsi. */
        if (lws_get_opaque_user_data(wsi) && s && s->client_fallback)
            return s->client_fallback(
                wsi,
                reason == LWS_CALLBACK_CLOSED_CLIENT_HTTP ? LWS_CALLBACK_CLIENT_CLOSED : reason,
                NULL, in, len);
        break;

    case LWS_CALLBACK_OPENSSL_PERFORM_CLIENT_CERT_VERIFICATION:
        /* user: the X509_STORE_CTX, len: OpenSSL's verdict. lws turns a 0 from here into
         * "accept" whatever the verdict, so a certificate OpenSSL refused is refused here. */
        if (!len) {
            int e = X509_STORE_CTX_get_error((X509_STORE_CTX *)user);
            char peer[64] = "?";
            lws_get_peer_simple(wsi, peer, sizeof(peer));
            gw_log("TLS client %s: certificate refused: %s", peer, X509_verify_cert_error_string(e));
            return 1;
        }
        return 0;

    case LWS_CALLBACK_HTTP_BIND_PROTOCOL:
        if (c) {
            memset(c, 0, sizeof(*c));
            c->srv = s;
            c->wsi = wsi;
        }
        break;

    case LWS_CALLBACK_HTTP:
        if (!c)
            return -1;
        c->srv = s;
        return on_http(c, wsi, in, len);

    case LWS_CALLBACK_HTTP_BODY:
        if (!c || c->phase != PHASE_BODY)
            break;
        s->metrics.bytes_in += len;
        if (len > c->rq.body_expected - c->rq.body_len)
            return -1; /* more than Content-Length: lws should never do this */
        memcpy(c->rq.body + c->rq.body_len, in, len);
        c->rq.body_len += len;
        break;

    case LWS_CALLBACK_HTTP_BODY_COMPLETION:
        if (c && (c->phase == PHASE_HANDLE || c->phase == PHASE_WAIT || c->phase == PHASE_SEND)) {
            /* lws re-offering pipelined input (see the top of this file): answer, then close */
            if (c->x)
                c->x->rs.close = true;
            if (c->phase == PHASE_WAIT)
                gw_loop_flush(s);
            if (c->phase == PHASE_SEND)
                conn_send(c);
            return -1;
        }
        if (!c || c->phase != PHASE_BODY)
            break;
        c->rq.body[c->rq.body_len] = '\0';
        return conn_dispatch(c);

    case LWS_CALLBACK_HTTP_WRITEABLE:
        if (!c || c->phase != PHASE_SEND)
            break;
        return conn_send(c);

    case LWS_CALLBACK_CLOSED_HTTP:
    case LWS_CALLBACK_HTTP_DROP_PROTOCOL:
        if (c && c->srv)
            conn_reset(c);
        break;

    case LWS_CALLBACK_HTTP_CONFIRM_UPGRADE: {
        /* WebSocket only on the main listener and only for the other protocols of the list: lws
         * would otherwise hand a connection without (or with an unknown) Sec-WebSocket-Protocol
         * to protocols[0], this HTTP callback. */
        const struct lws_protocols *pr = NULL;
        if (!strcmp(in ? (const char *)in : "", "websocket") && lws_get_vhost(wsi) == s->vh_main &&
            (pr = upgrade_protocol(s, wsi))) {
            char why[400];
            if (pr->id != GW_PROTO_SELF_AUTH && !host_ok(s, wsi, why, sizeof(why))) {
                lws_return_http_status(wsi, 403, why);
                return 1;
            }
            if (upgrade_origin_ok(s, wsi))
                return 0;
            return 1;
        }
        refuse_upgrade(s, wsi);
        return 1;
    }

    default: break;
    }
    return 0;
}
