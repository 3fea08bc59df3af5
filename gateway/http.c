/* http.c - the libwebsockets HTTP server: requests, responses, durable acks, the event loop */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "gateway.h"

/*
 * One lws context, one thread, one poll loop. A request is assembled in its connection's state
 * (`gw_conn_t`, lws's per-session data): method, path and query args at LWS_CALLBACK_HTTP, the
 * body at LWS_CALLBACK_HTTP_BODY, then it is handed to the REST or roshi router. A response that
 * acknowledges a write waits in `pending` (ordered by sequence number, since writes get increasing
 * numbers) until crdt_replica_durable_seq() reaches it: the group commit runs from a lws_sul timer
 * scheduled at 0 us after the first write of a loop turn, so every write that arrived in that turn
 * shares one flush (and with --fsync always one fsync). Only then is the connection asked for
 * writability and the response sent.
 *
 * Responses leave from LWS_CALLBACK_HTTP_WRITEABLE only: completing a transaction from inside a
 * read callback, while lws still holds further input of the same read, sends lws 4.1.6 into a
 * loop in its buffer accounting. Pipelining behind a request with a body has a second trap:
 * lws re-offers the buffered next request to a connection whose body is complete but whose
 * transaction is not, by calling LWS_CALLBACK_HTTP_BODY_COMPLETION again, in a loop that never
 * returns to poll(). On that second call the held write is flushed at once, answered with
 * "Connection: close" and the connection closed: the client has its acknowledgement and resends
 * the rest on a new connection, as HTTP/1.1 lets a server do. Clients that do not pipeline
 * (curl, browsers, Go's net/http, wrk) never see this.
 */

enum conn_phase {
    PHASE_IDLE = 0, /* between requests */
    PHASE_BODY,     /* reading the body */
    PHASE_WAIT,     /* response ready, waiting for the write to be durable */
    PHASE_SEND,     /* response ready, waiting for writability */
};

typedef struct gw_conn {
    gw_server_t *srv;
    struct lws *wsi;
    enum conn_phase phase;
    gw_request_t rq;
    gw_response_t rs;
    uint64_t t_start_us; /* request complete */
    uint64_t t_ready_us; /* response computed */
    struct gw_conn *prev, *next;
    bool queued;
} gw_conn_t;

void gw_log(const char *fmt, ...)
{
    char ts[32];
    struct timespec now;
    struct tm tm;
    clock_gettime(CLOCK_REALTIME, &now);
    gmtime_r(&now.tv_sec, &tm);
    strftime(ts, sizeof(ts), "%Y-%m-%dT%H:%M:%S", &tm);
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "%s.%03ldZ crdtd: ", ts, now.tv_nsec / 1000000);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
}

uint64_t gw_now_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000u + (uint64_t)ts.tv_nsec / 1000u;
}

uint64_t gw_mono_ms(void)
{
    return gw_now_us() / 1000u;
}

/* ---- responses ------------------------------------------------------------------------------ */

const char *gw_status_text(int status)
{
    switch (status) {
    case 200: return "OK";
    case 201: return "Created";
    case 204: return "No Content";
    case 400: return "Bad Request";
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

static void request_clear(gw_request_t *rq)
{
    free(rq->path);
    free(rq->argbuf);
    free(rq->body);
    memset(rq, 0, sizeof(*rq));
}

static void conn_unqueue(gw_conn_t *c)
{
    if (!c->queued)
        return;
    gw_server_t *s = c->srv;
    if (c->prev)
        c->prev->next = c->next;
    else
        s->pending_head = c->next;
    if (c->next)
        c->next->prev = c->prev;
    else
        s->pending_tail = c->prev;
    c->prev = c->next = NULL;
    c->queued = false;
    s->pending--;
}

static void conn_reset(gw_conn_t *c)
{
    conn_unqueue(c);
    request_clear(&c->rq);
    response_clear(&c->rs);
    memset(&c->rs, 0, sizeof(c->rs));
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

/* Routes a complete request and either queues the response for durability or sends it. */
static void conn_dispatch(gw_conn_t *c)
{
    gw_server_t *s = c->srv;
    c->t_start_us = gw_now_us();
    memset(&c->rs, 0, sizeof(c->rs));
    c->rs.ep = GW_EP_OTHER;
    if (c->rq.roshi)
        gw_roshi_handle(s, &c->rq, &c->rs);
    else
        gw_rest_handle(s, &c->rq, &c->rs);
    c->t_ready_us = gw_now_us();
    if (!c->rs.buf && !c->rs.close)
        gw_respond_error(&c->rs, 500, "no response");
    if (c->rs.wait_seq && crdt_replica_durable_seq(s->replica) < c->rs.wait_seq) {
        c->phase = PHASE_WAIT;
        c->queued = true;
        c->prev = s->pending_tail;
        c->next = NULL;
        if (s->pending_tail)
            s->pending_tail->next = c;
        else
            s->pending_head = c;
        s->pending_tail = c;
        s->pending++;
        gw_http_schedule_flush(s);
        return;
    }
    conn_ready(c);
}

/* Sends the whole response (lws keeps what the socket does not take and sends it first). Returns
 * -1 to close the connection. */
static int conn_send(gw_conn_t *c)
{
    gw_server_t *s = c->srv;
    gw_response_t *rs = &c->rs;
    uint8_t hdr[GW_HDR_ROOM];
    uint8_t *p = hdr, *end = hdr + sizeof(hdr) - 1;

    if (!rs->buf) /* nothing we could build: drop the connection */
        return -1;
    if (lws_add_http_common_headers(c->wsi, (unsigned)rs->status, rs->content_type, rs->len, &p,
                                    end))
        return -1;
    if (rs->close && lws_add_http_header_by_token(c->wsi, WSI_TOKEN_CONNECTION,
                                                  (const uint8_t *)"close", 5, &p, end))
        return -1;
    if (lws_finalize_http_header(c->wsi, &p, end))
        return -1;
    /* Headers and body leave in one write (one send(2) per response): the headers go into the
     * room kept in front of the body. For HTTP/1 an LWS_WRITE_HTTP_HEADERS write is sent as is;
     * lws resets its content-length bookkeeping at lws_http_transaction_completed(). */
    size_t hlen = (size_t)(p - hdr);
    uint8_t *start = (uint8_t *)rs->buf + GW_BODY_AT - hlen;
    memcpy(start, hdr, hlen);
    if (lws_write(c->wsi, start, hlen + rs->len, LWS_WRITE_HTTP_HEADERS) < (int)(hlen + rs->len))
        return -1;

    gw_metrics_request(&s->metrics, rs->ep, rs->status);
    s->metrics.bytes_out += rs->len;
    if (rs->wait_seq)
        gw_metrics_ack(&s->metrics, (double)(gw_now_us() - c->t_start_us) / 1e6);
    if (s->cfg.verbose)
        gw_log("%s %s -> %d (%zu bytes, %.3f ms)", gw_endpoint_name(rs->ep),
               c->rq.path ? c->rq.path : "-", rs->status, rs->len,
               (double)(gw_now_us() - c->t_start_us) / 1e3);
    bool close = rs->close;
    conn_reset(c);
    if (close)
        return -1;
    return lws_http_transaction_completed(c->wsi) ? -1 : 0;
}

/* An early error (before or instead of reading the body): answer and close, since the rest of
 * what the client sends can not be trusted to be a next request. */
static void conn_reject(gw_conn_t *c, int status, const char *msg)
{
    memset(&c->rs, 0, sizeof(c->rs));
    c->rs.ep = GW_EP_OTHER;
    c->t_start_us = gw_now_us();
    gw_respond_error(&c->rs, status, "%s", msg);
    c->rs.close = true;
    conn_ready(c);
}

/* ---- group commit --------------------------------------------------------------------------- */

/* Releases every pending response whose write is now durable; with a failed flush, answers them
 * all with 503 (their writes are applied in memory but cannot be promised durable). */
static void release_pending(gw_server_t *s)
{
    uint64_t durable = crdt_replica_durable_seq(s->replica);
    while (s->pending_head) {
        gw_conn_t *c = s->pending_head;
        if (!s->storage_error && c->rs.wait_seq > durable)
            break;
        conn_unqueue(c);
        if (s->storage_error && c->rs.wait_seq > durable) {
            gw_endpoint_t ep = c->rs.ep;
            gw_respond_error(&c->rs, 503, "storage failure, the write is not durable: %s",
                             crdt_replica_last_error(s->replica)
                                 ? crdt_replica_last_error(s->replica)
                                 : crdt_strerror(s->storage_error));
            c->rs.ep = ep;
        }
        conn_ready(c);
    }
}

static void flush_cb(lws_sorted_usec_list_t *sul)
{
    gw_server_t *s = lws_container_of(sul, gw_server_t, sul_flush);
    s->flush_scheduled = false;
    int rc = crdt_replica_flush(s->replica);
    if (rc < 0 && !s->storage_error) {
        s->storage_error = rc;
        gw_log("storage failure: %s", crdt_replica_last_error(s->replica)
                                          ? crdt_replica_last_error(s->replica)
                                          : crdt_strerror(rc));
    }
    release_pending(s);
    gw_sync_on_durable(s);
    gw_peer_on_durable(s);
    /* Still waiting (a policy that syncs later, e.g. a slow background fsync): look again soon. */
    if (s->pending_head && !s->flush_scheduled) {
        s->flush_scheduled = true;
        lws_sul_schedule(s->ctx, 0, &s->sul_flush, flush_cb, 1000);
    }
}

void gw_http_schedule_flush(gw_server_t *s)
{
    if (s->flush_scheduled)
        return;
    s->flush_scheduled = true;
    lws_sul_schedule(s->ctx, 0, &s->sul_flush, flush_cb, 0);
}

static void tick_cb(lws_sorted_usec_list_t *sul)
{
    gw_server_t *s = lws_container_of(sul, gw_server_t, sul_tick);
    crdt_replica_tick(s->replica, gw_mono_ms());
    if (s->loading && crdt_replica_keys_loading(s->replica) == 0) {
        s->loading = false;
        gw_log("every recovered key joined %.3f s after the data directory was opened",
               crdt_replica_recovery(s->replica)->loaded_seconds);
    }
    if (crdt_replica_last_seq(s->replica) > crdt_replica_durable_seq(s->replica) || s->pending_head)
        gw_http_schedule_flush(s);
    lws_sul_schedule(s->ctx, 0, &s->sul_tick, tick_cb, (lws_usec_t)s->cfg.tick_ms * 1000);
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

static int on_http(gw_conn_t *c, struct lws *wsi, const char *in, size_t len)
{
    gw_server_t *s = c->srv;
    conn_reset(c);
    c->wsi = wsi;
    c->rq.method = method_of(wsi);
    c->rq.roshi = lws_get_vhost(wsi) == s->vh_roshi;
    c->rq.path = malloc(len + 1);
    if (!c->rq.path)
        return -1;
    memcpy(c->rq.path, in, len);
    c->rq.path[len] = '\0';
    c->rq.path_len = len;
    if (collect_args(wsi, &c->rq))
        return -1;

    bool has_cl = lws_hdr_total_length(wsi, WSI_TOKEN_HTTP_CONTENT_LENGTH) > 0;
    uint64_t cl = 0;
    if (has_cl && parse_content_length(wsi, &cl)) {
        conn_reject(c, 400, "bad Content-Length header");
        return 0;
    }
    if (lws_hdr_total_length(wsi, WSI_TOKEN_HTTP_TRANSFER_ENCODING) > 0) {
        conn_reject(c, 411, "chunked request bodies are not supported; send Content-Length");
        return 0;
    }
    bool body_method =
        c->rq.method == GW_POST || c->rq.method == GW_PUT || c->rq.method == GW_PATCH;
    if (body_method && !has_cl) {
        conn_reject(c, 411, "a request body needs a Content-Length header");
        return 0;
    }
    if (cl > s->cfg.max_body) {
        char msg[128];
        snprintf(msg, sizeof(msg),
                 "request body too large: %llu bytes, the limit is %zu (--max-body)",
                 (unsigned long long)cl, s->cfg.max_body);
        conn_reject(c, 413, msg);
        return 0;
    }
    if (cl == 0) {
        /* lws sends GET/DELETE without a body no body callbacks (and a POST with an explicit
         * zero length an empty one, ignored below since the request is no longer PHASE_BODY) */
        conn_dispatch(c);
        return 0;
    }
    c->rq.body = malloc((size_t)cl + 1);
    if (!c->rq.body)
        return -1;
    c->rq.body_expected = (size_t)cl;
    c->phase = PHASE_BODY;
    return 0;
}

/* Whether the upgrade request asks for one of our WebSocket subprotocols (the header may list
 * several, comma separated; lws picks the first it knows). */
static bool upgrade_protocol_ok(struct lws *wsi)
{
    char buf[256];
    int n = lws_hdr_copy(wsi, buf, sizeof(buf), WSI_TOKEN_PROTOCOL);
    if (n <= 0)
        return false;
    for (char *save = NULL, *tok = strtok_r(buf, ", \t", &save); tok;
         tok = strtok_r(NULL, ", \t", &save))
        if (!strcmp(tok, GW_SYNC_PROTOCOL) || !strcmp(tok, GW_PEER_PROTOCOL))
            return true;
    return false;
}

static int callback_http(struct lws *wsi, enum lws_callback_reasons reason, void *user, void *in,
                         size_t len)
{
    gw_conn_t *c = user;
    gw_server_t *s = lws_context_user(lws_get_context(wsi));

    switch (reason) {
    case LWS_CALLBACK_CLIENT_CONNECTION_ERROR:
    case LWS_CALLBACK_CLOSED_CLIENT_HTTP:
    case LWS_CALLBACK_WSI_DESTROY:
        /* A peer link we dialled (peer.c marks its client wsi with opaque user data) that dies
         * before its upgrade may be reported to protocols[0], this callback, rather than to the
         * peer protocol: pass it on, or peer.c would keep a pointer to a freed wsi. */
        if (lws_get_opaque_user_data(wsi))
            return gw_peer_callback(
                wsi,
                reason == LWS_CALLBACK_CLOSED_CLIENT_HTTP ? LWS_CALLBACK_CLIENT_CLOSED : reason,
                NULL, in, len);
        break;

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
        if (c && (c->phase == PHASE_WAIT || c->phase == PHASE_SEND)) {
            /* lws re-offering pipelined input (see the top of this file): answer, then close */
            c->rs.close = true;
            if (c->phase == PHASE_WAIT)
                flush_cb(&s->sul_flush);
            if (c->phase == PHASE_SEND)
                conn_send(c);
            return -1;
        }
        if (!c || c->phase != PHASE_BODY)
            break;
        c->rq.body[c->rq.body_len] = '\0';
        conn_dispatch(c);
        break;

    case LWS_CALLBACK_HTTP_WRITEABLE:
        if (!c || c->phase != PHASE_SEND)
            break;
        return conn_send(c);

    case LWS_CALLBACK_CLOSED_HTTP:
    case LWS_CALLBACK_HTTP_DROP_PROTOCOL:
        if (c && c->srv)
            conn_reset(c);
        break;

    case LWS_CALLBACK_HTTP_CONFIRM_UPGRADE:
        /* WebSocket only on the main listener and only for our subprotocols: lws would otherwise
         * hand a connection without (or with an unknown) Sec-WebSocket-Protocol to protocols[0],
         * this HTTP callback. */
        if (!strcmp(in ? (const char *)in : "", "websocket") && lws_get_vhost(wsi) == s->vh_main &&
            upgrade_protocol_ok(wsi))
            return 0;
        lws_return_http_status(wsi, 400,
                               "WebSocket needs Sec-WebSocket-Protocol: " GW_SYNC_PROTOCOL
                               " or " GW_PEER_PROTOCOL " on the main listener");
        return 1;

    default: break;
    }
    return 0;
}

/* Per-session data of the WebSocket protocols is one pointer: sync.c and peer.c allocate their
 * own session structs. rx_buffer_size bounds one read, not a message; they reassemble. */
static const struct lws_protocols protocols[] = {
    {"http", callback_http, sizeof(gw_conn_t), 0, 0, NULL, 0},
    {GW_SYNC_PROTOCOL, gw_sync_callback, sizeof(void *), 65536, 0, NULL, 0},
    {GW_PEER_PROTOCOL, gw_peer_callback, sizeof(void *), 65536, 0, NULL, 0},
    {NULL, NULL, 0, 0, 0, NULL, 0},
};

static void lws_log_emit(int level, const char *line)
{
    (void)level;
    /* lws lines end with a newline already */
    fprintf(stderr, "lws: %s", line);
}

static struct lws_vhost *make_vhost(gw_server_t *s, const char *name, const gw_addr_t *a)
{
    struct lws_context_creation_info info;
    memset(&info, 0, sizeof(info));
    info.vhost_name = name;
    info.port = a->port ? a->port : CONTEXT_PORT_NO_LISTEN_SERVER;
    info.iface = a->host;
    info.protocols = protocols;
    info.keepalive_timeout = 30;
    info.options = LWS_SERVER_OPTION_DISABLE_IPV6;
    if (strchr(a->host, ':'))
        info.options &= ~(uint64_t)LWS_SERVER_OPTION_DISABLE_IPV6;
    if (!a->port)
        info.port = 0;
    struct lws_vhost *vh = lws_create_vhost(s->ctx, &info);
    if (!vh)
        gw_log("cannot listen on %s:%d (address in use, or not a local address?)", a->host,
               a->port);
    return vh;
}

int gw_http_start(gw_server_t *s)
{
    lws_set_log_level(s->cfg.verbose ? (LLL_ERR | LLL_WARN | LLL_NOTICE) : (LLL_ERR | LLL_WARN),
                      lws_log_emit);

    struct lws_context_creation_info info;
    memset(&info, 0, sizeof(info));
    info.options = LWS_SERVER_OPTION_EXPLICIT_VHOSTS | LWS_SERVER_OPTION_DISABLE_IPV6;
    info.user = s;
    info.max_http_header_data = (unsigned short)s->cfg.max_header;
    info.max_http_header_pool = 1024;
    info.timeout_secs = 10;
    info.pt_serv_buf_size = 64 * 1024;
    s->ctx = lws_create_context(&info);
    if (!s->ctx) {
        gw_log("cannot create the libwebsockets context");
        return -1;
    }

    s->vh_main = make_vhost(s, "crdtd", &s->cfg.listen);
    if (!s->vh_main)
        return -1;
    s->main_port = lws_get_vhost_listen_port(s->vh_main);
    if (s->cfg.roshi_enabled) {
        s->vh_roshi = make_vhost(s, "roshi", &s->cfg.roshi);
        if (!s->vh_roshi)
            return -1;
        s->roshi_port = lws_get_vhost_listen_port(s->vh_roshi);
    }
    lws_sul_schedule(s->ctx, 0, &s->sul_tick, tick_cb, (lws_usec_t)s->cfg.tick_ms * 1000);
    return 0;
}

void gw_http_run(gw_server_t *s)
{
    while (!s->stopping) {
        if (lws_service(s->ctx, 0) < 0)
            break;
    }
    /* Draining: make what was written durable and answer the writers still waiting, for at
     * most about a second; then close every connection. */
    int rc = crdt_replica_flush(s->replica);
    if (rc < 0 && !s->storage_error)
        s->storage_error = rc;
    release_pending(s);
    uint64_t deadline = gw_now_us() + 1000000;
    while (gw_now_us() < deadline) {
        bool busy = s->pending_head != NULL;
        if (lws_service(s->ctx, 0) < 0)
            break;
        if (!busy)
            break;
    }
    lws_sul_cancel(&s->sul_tick);
    lws_sul_cancel(&s->sul_flush);
    gw_peer_shutdown(s);
    gw_sync_shutdown(s);
    lws_context_destroy(s->ctx);
    s->ctx = NULL;
}
