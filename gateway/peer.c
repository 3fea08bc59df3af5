/* peer.c - the libwebsockets transport of the peer engine (crdt_peer.h): subprotocol crdt-peer.v1
 * on the main listener, dialling with backoff, frames in and out, /v1/peers and peer metrics
 *
 * Everything about replication (handshake, batching, acks, marks, catch-up, anti-entropy,
 * keepalive, duplicate links, statistics) is the engine's, in replicator/src/peer.c. This file
 * only carries its messages: it assembles WebSocket fragments into whole messages, writes the
 * frames the engine hands out when a connection is writable, opens the connections the engine
 * asks for, runs one timer at the engine's deadline, and renders the engine's status.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <openssl/bn.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

#include "crdt_peer.h"
#include "crypto.h"
#include "jsonw.h"
#include "loop.h"
#include "peer.h"
#include "prom.h"
#include "util.h"
#include "wsmsg.h"

/* A connection carrying one engine link. */
typedef struct gw_plink {
    struct gw_peers *P;
    struct gw_plink *prev, *next; /* every connection of ours, for shutdown */
    struct lws *wsi;
    crdt_peer_link_t *l;
    bool outbound;
    bool faulted;     /* the engine was told of a fault: ignore further input */
    gw_wsrx_t rx;     /* the message being assembled, bounded by the engine's max message */
    gw_wswriter_t wr; /* a dialled link writes a frame other links hold from its private copy */
} gw_plink_t;

typedef struct gw_slot {
    char host[256];
    int port;
    char path[128];
    bool tls; /* wss:// */
} gw_slot_t;

struct gw_peers {
    gw_server_t *s;
    crdt_peers_t *E;
    crdt_store_t *store;
    gw_slot_t slots[GW_MAX_PEERS];
    const char *names[GW_MAX_PEERS];
    lws_sorted_usec_list_t sul;
    uint64_t sul_at;
    gw_plink_t *connecting; /* the link inside lws_client_connect_via_info, see host_dial */
    bool connect_failed;
    char connect_error[200];
    gw_plink_t *conns;
};

static gw_plink_t *plink_new(struct gw_peers *P, bool outbound)
{
    gw_plink_t *g = calloc(1, sizeof(*g));
    if (!g)
        return NULL;
    g->P = P;
    g->outbound = outbound;
    /* the bound follows the link: the handshake's until the peer proved the secret (on_receive) */
    gw_wsrx_init(&g->rx, 0, GW_WS_BINARY);
    gw_wswriter_init(&g->wr, GW_WS_BINARY, outbound);
    g->next = P->conns;
    if (P->conns)
        P->conns->prev = g;
    P->conns = g;
    return g;
}

static uint64_t now_ms(void)
{
    return gw_mono_ms();
}

static void timer_cb(lws_sorted_usec_list_t *sul);

/* Arms the one timer at the engine's deadline (after every call into the engine). */
static void rearm(struct gw_peers *P)
{
    if (!P->E)
        return;
    uint64_t d = crdt_peers_deadline(P->E);
    if (d == P->sul_at)
        return;
    P->sul_at = d;
    if (d == UINT64_MAX) {
        lws_sul_cancel(&P->sul);
        return;
    }
    /* in microseconds: the engine's ms are truncated, and a delay counted from the truncated
     * now would fire up to 1 ms late (a batch's latency) */
    uint64_t t = gw_now_us(), at = d * 1000;
    lws_sul_schedule(P->s->ctx, 0, &P->sul, timer_cb, (lws_usec_t)(at > t ? at - t : 0));
}

static void timer_cb(lws_sorted_usec_list_t *sul)
{
    struct gw_peers *P = lws_container_of(sul, struct gw_peers, sul);
    P->sul_at = UINT64_MAX;
    if (P->s->stopping)
        return;
    crdt_peers_tick(P->E, now_ms());
    rearm(P);
}

static void plink_free(gw_plink_t *g)
{
    if (g->prev)
        g->prev->next = g->next;
    else
        g->P->conns = g->next;
    if (g->next)
        g->next->prev = g->prev;
    if (g->wsi)
        lws_set_opaque_user_data(g->wsi, NULL);
    gw_wsrx_free(&g->rx);
    gw_wswriter_free(&g->wr);
    free(g);
}

/* ---- the host callbacks --------------------------------------------------------------------- */

static void host_want_write(void *ud, void *link_ud)
{
    (void)ud;
    gw_plink_t *g = link_ud;
    if (g && g->wsi)
        lws_callback_on_writable(g->wsi);
}

static void host_close(void *ud, void *link_ud, bool abandon)
{
    (void)ud;
    gw_plink_t *g = link_ud;
    if (!g)
        return;
    if (abandon) {
        /* the engine forgot the link: its callbacks must find nothing, and it dies now */
        struct lws *w = g->wsi;
        plink_free(g);
        if (w)
            lws_set_timeout(w, PENDING_TIMEOUT_USER_OK, LWS_TO_KILL_SYNC);
        return;
    }
    if (g->wsi) {
        /* the engine hands out its last frame (REFUSE, BYE), then -1; this bounds the wait */
        lws_set_timeout(g->wsi, PENDING_TIMEOUT_USER_OK, 2);
        lws_callback_on_writable(g->wsi);
    }
}

static void host_dial(void *ud, int slot)
{
    struct gw_peers *P = ud;
    gw_slot_t *sl = &P->slots[slot];
    gw_plink_t *g = plink_new(P, true);
    if (!g)
        return;
    char addr[300];
    snprintf(addr, sizeof(addr), "%s:%d", sl->host, sl->port);
    uint64_t t = now_ms();
    g->l = crdt_peers_link_new(P->E, slot, addr, g, t);
    if (!g->l) {
        plink_free(g);
        return;
    }
    struct lws_client_connect_info ci;
    memset(&ci, 0, sizeof(ci));
    ci.context = P->s->ctx;
    ci.vhost = P->s->vh_main;
    ci.address = sl->host;
    ci.port = sl->port;
    ci.path = sl->path;
    ci.host = sl->host;
    ci.origin = sl->host;
    ci.protocol = GW_PEER_PROTOCOL;
    ci.local_protocol_name = GW_PEER_PROTOCOL;
    ci.opaque_user_data = g;
    if (sl->tls)
        ci.ssl_connection = LCCSCF_USE_SSL; /* verified against --peer-ca, and the URL's host */
    P->connecting = g;
    P->connect_failed = false;
    snprintf(P->connect_error, sizeof(P->connect_error), "cannot connect");
    struct lws *wsi = lws_client_connect_via_info(&ci);
    P->connecting = NULL;
    if (!wsi || P->connect_failed) {
        if (wsi) /* failed but not yet destroyed: its callbacks to come must not find the link */
            lws_set_opaque_user_data(wsi, NULL);
        if (strchr(sl->host, ':') && !strchr(P->s->cfg.listen.host, ':'))
            snprintf(P->connect_error, sizeof(P->connect_error),
                     "cannot connect: an IPv6 peer address needs this node to listen on IPv6 "
                     "too (--listen [::]:PORT)");
        crdt_peer_link_t *l = g->l;
        g->wsi = NULL;
        plink_free(g);
        crdt_peer_link_closed(l, P->connect_error, t);
        return;
    }
    g->wsi = wsi;
}

/* The other end claims to be node `node`: over TLS with --peer-ca, its certificate (the server's
 * when we dialled, the client's when it dialled us, which mutual TLS requires) must name
 * node-<id> in its subject CN or a DNS SAN. NULL, or why not. */
static const char *host_identify(void *ud, void *link_ud, uint64_t node)
{
    struct gw_peers *P = ud;
    const gw_config_t *c = &P->s->cfg;
    gw_plink_t *g = link_ud;
    static char why[200];
    if (!g || !g->wsi)
        return NULL;
    if (!lws_is_ssl(g->wsi))
        return c->peer_require_tls ? "cleartext link, and --peer-require-tls" : NULL;
    if (!c->peer_ca[0])
        return NULL; /* one-way TLS against the system store: the URL's host was checked */
    SSL *ssl = lws_get_ssl(g->wsi);
    X509 *x = ssl ? SSL_get1_peer_certificate(ssl) : NULL;
    if (!x)
        return g->outbound || c->peer_cert[0] ? "no certificate (mutual TLS: --peer-cert)" : NULL;
    const char *r = NULL;
    char name[48];
    snprintf(name, sizeof(name), "node-%" PRIu64, node);
    long v = SSL_get_verify_result(ssl);
    if (v != X509_V_OK) {
        snprintf(why, sizeof(why), "its certificate does not verify against --peer-ca: %s",
                 X509_verify_cert_error_string(v));
        r = why;
    } else if (X509_check_host(x, name, strlen(name),
                               X509_CHECK_FLAG_ALWAYS_CHECK_SUBJECT |
                                   X509_CHECK_FLAG_NO_WILDCARDS,
                               NULL) != 1) {
        char subj[120] = "";
        X509_NAME_oneline(X509_get_subject_name(x), subj, sizeof(subj));
        snprintf(why, sizeof(why), "its certificate (%s) does not name %s", subj, name);
        r = why;
    } else {
        /* which certificate a peer presents (after a SIGHUP that replaced one, the links made
         * since show the new serial) */
        char subj[120] = "", serial[80] = "?";
        X509_NAME_oneline(X509_get_subject_name(x), subj, sizeof(subj));
        BIGNUM *bn = ASN1_INTEGER_to_BN(X509_get0_serialNumber(x), NULL);
        char *hex = bn ? BN_bn2hex(bn) : NULL;
        if (hex)
            snprintf(serial, sizeof(serial), "%s", hex);
        OPENSSL_free(hex);
        BN_free(bn);
        gw_log("peer %s (%s): TLS, its certificate %s, serial %s", name,
               g->outbound ? "dialled" : "inbound", subj, serial);
    }
    X509_free(x);
    return r;
}

static int host_random(void *ud, void *buf, size_t n)
{
    (void)ud;
    return gw_random(buf, n);
}

static uint64_t host_wall_ms(void *ud)
{
    struct gw_peers *P = ud;
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    int64_t ms = (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000 + P->s->cfg.test_clock_offset_ms;
    return ms > 0 ? (uint64_t)ms : 0;
}

static void host_log(void *ud, const char *line)
{
    (void)ud;
    gw_log("%s", line);
}

static void host_applied(void *ud)
{
    struct gw_peers *P = ud;
    gw_loop_schedule_flush(P->s);
}

/* ---- store events --------------------------------------------------------------------------- */

void gw_peer_on_change(gw_server_t *s, const void *key, size_t klen, uint64_t seq,
                       const crdt_obj_t *delta, uint64_t origin)
{
    struct gw_peers *P = s->peers;
    if (!P)
        return;
    crdt_peers_on_change(P->E, key, klen, seq, delta, origin, now_ms());
    rearm(P);
}

void gw_peer_on_durable(gw_server_t *s)
{
    struct gw_peers *P = s->peers;
    if (!P)
        return;
    crdt_peers_on_durable(P->E, now_ms());
    rearm(P);
}

/* ---- the lws protocol callback -------------------------------------------------------------- */

static int on_receive(gw_plink_t *g, struct lws *wsi, const void *in, size_t len)
{
    uint64_t t = now_ms();
    if (g->faulted)
        return 0;
    if (!g->rx.in_msg)
        g->rx.max = crdt_peer_link_max_message(g->l); /* raised once the link is up */
    int rc = gw_wsrx_receive(&g->rx, wsi, in, len);
    if (rc == GW_WSRX_MORE && !gw_wsrx_discarding(&g->rx))
        return 0;
    if (rc == GW_WSRX_MESSAGE) {
        crdt_peer_link_receive(g->l, gw_wsrx_data(&g->rx), gw_wsrx_len(&g->rx), t);
        gw_wsrx_done(&g->rx);
        return 0;
    }
    /* a message dropped (closed at once, not when it ends) or no memory for it */
    char why[120];
    if (rc == GW_WSRX_ENOMEM)
        snprintf(why, sizeof(why), "out of memory receiving a message");
    else if (!g->rx.too_large)
        snprintf(why, sizeof(why), "text message on a binary protocol");
    else
        snprintf(why, sizeof(why), "message of more than %zu bytes (limit %zu)",
                 g->rx.total + lws_remaining_packet_payload(wsi), g->rx.max);
    g->faulted = true;
    gw_wsrx_free(&g->rx);
    crdt_peer_link_fault(g->l, why, t);
    return 0;
}

static int on_writable(gw_plink_t *g)
{
    crdt_peer_frame_t *f = NULL;
    int rc = crdt_peer_link_pull(g->l, &f, now_ms());
    if (rc < 0)
        return -1;
    if (rc == 1) {
        /* the engine's frames have LWS_PRE bytes of headroom (cfg.headroom) */
        int w = gw_ws_write_bytes(&g->wr, g->wsi, crdt_peer_frame_data(f), crdt_peer_frame_len(f),
                                  !crdt_peer_frame_shared(f));
        crdt_peer_frame_release(f);
        if (w)
            return -1;
    }
    if (crdt_peer_link_wants_write(g->l))
        lws_callback_on_writable(g->wsi);
    return 0;
}

/* The link's wsi failed or closed (why: the reason, or NULL): the wsi forgets the link, which
 * lws's later callbacks for it must not find. While host_dial's lws_client_connect_via_info is
 * running (lws fails some dials inside it, and may destroy the wsi there), host_dial frees the
 * link and reports why when the call returns; otherwise the link goes here. */
static void link_gone(struct gw_peers *P, gw_plink_t *g, struct lws *wsi, const char *why)
{
    lws_set_opaque_user_data(wsi, NULL);
    if (P && P->connecting == g) {
        if (why)
            snprintf(P->connect_error, sizeof(P->connect_error), "%s", why);
        P->connect_failed = true;
        return;
    }
    crdt_peer_link_t *l = g->l;
    g->wsi = NULL;
    plink_free(g);
    crdt_peer_link_closed(l, why, now_ms());
}

static int dispatch(gw_server_t *s, struct gw_peers *P, struct lws *wsi,
                    enum lws_callback_reasons reason, void *in, size_t len)
{
    gw_plink_t *g = lws_get_opaque_user_data(wsi);
    switch (reason) {
    case LWS_CALLBACK_ESTABLISHED: {
        char addr[64] = "?";
        lws_get_peer_simple(wsi, addr, sizeof(addr));
        if (!P) {
            gw_log("peer %s (inbound): refused: replication is off here (no --peer-secret-file "
                   "or $CRDTD_PEER_SECRET)",
                   addr);
            return -1;
        }
        if (s->stopping)
            return -1;
        if (s->cfg.peer_require_tls && !lws_is_ssl(wsi)) {
            gw_log("peer %s (inbound): refused: cleartext, and --peer-require-tls", addr);
            return -1;
        }
        if (s->cfg.peer_cert[0]) {
            /* mutual TLS: the handshake let a connection without a certificate through (HTTP
             * clients have none); a peer needs one that verified */
            SSL *ssl = lws_get_ssl(wsi);
            X509 *x = ssl ? SSL_get1_peer_certificate(ssl) : NULL;
            bool good = x && SSL_get_verify_result(ssl) == X509_V_OK;
            X509_free(x);
            if (!good) {
                gw_log("peer %s (inbound): refused: %s (mutual TLS, --peer-cert)", addr,
                       x ? "its certificate does not verify against --peer-ca"
                         : "no client certificate");
                return -1;
            }
        }
        g = plink_new(P, false);
        if (!g)
            return -1;
        g->wsi = wsi;
        lws_set_opaque_user_data(wsi, g);
        g->l = crdt_peers_link_new(P->E, -1, addr, g, now_ms());
        if (!g->l) {
            plink_free(g);
            return -1;
        }
        return 0;
    }
    case LWS_CALLBACK_CLIENT_ESTABLISHED:
        if (!g)
            return -1;
        g->wsi = wsi;
        crdt_peer_link_established(g->l, now_ms());
        if (crdt_peer_link_wants_write(g->l))
            lws_callback_on_writable(wsi);
        return 0;

    case LWS_CALLBACK_RECEIVE:
    case LWS_CALLBACK_CLIENT_RECEIVE:
        if (!g)
            return -1;
        return on_receive(g, wsi, in, len);

    case LWS_CALLBACK_SERVER_WRITEABLE:
    case LWS_CALLBACK_CLIENT_WRITEABLE:
        if (!g)
            return -1;
        return on_writable(g);

    case LWS_CALLBACK_CLIENT_CONNECTION_ERROR:
        if (g) {
            char why[200];
            snprintf(why, sizeof(why), "cannot connect: %s", in ? (const char *)in : "?");
            link_gone(P, g, wsi, why);
        }
        return 0;

    case LWS_CALLBACK_CLOSED:
    case LWS_CALLBACK_CLIENT_CLOSED:
    case LWS_CALLBACK_WSI_DESTROY:
        /* WSI_DESTROY: the last word on a wsi. A client wsi killed by a timeout before its
         * upgrade completed gets neither CLIENT_CLOSED nor CONNECTION_ERROR in lws 4.1. */
        if (g)
            link_gone(P, g, wsi, NULL);
        return 0;

    default: break;
    }
    return 0;
}

int gw_peer_callback(struct lws *wsi, enum lws_callback_reasons reason, void *user, void *in,
                     size_t len)
{
    (void)user;
    gw_server_t *s = lws_context_user(lws_get_context(wsi));
    struct gw_peers *P = s ? s->peers : NULL;
    int rc = dispatch(s, P, wsi, reason, in, len);
    if (P)
        rearm(P);
    return rc;
}

/* ---- init and shutdown ---------------------------------------------------------------------- */

static int parse_url(gw_slot_t *sl, const char *url)
{
    sl->tls = !strncmp(url, "wss://", 6);
    const char *hp = url + (sl->tls ? 6 : 5); /* config.c checked the ws:// or wss:// prefix */
    const char *slash = strchr(hp, '/');
    size_t hlen = slash ? (size_t)(slash - hp) : strlen(hp);
    char hostport[256];
    if (hlen >= sizeof(hostport))
        return -1;
    memcpy(hostport, hp, hlen);
    hostport[hlen] = '\0';
    snprintf(sl->path, sizeof(sl->path), "%s", slash ? slash : "/");
    gw_addr_t a;
    memset(&a, 0, sizeof(a));
    if (gw_addr_parse(hostport, &a) || !a.port)
        return -1;
    snprintf(sl->host, sizeof(sl->host), "%s", a.host);
    sl->port = a.port;
    return 0;
}

/* An old peers.state (before the marks moved into the store), read once for the upgrade. */
static char *read_legacy_state(const gw_server_t *s)
{
    if (s->cfg.no_persist || s->cfg.store[0]) /* over Redis the marks are in Redis only */
        return NULL;
    char path[1100];
    snprintf(path, sizeof(path), "%s/peers.state", s->cfg.data_dir);
    FILE *f = fopen(path, "r");
    if (!f)
        return NULL;
    char *buf = malloc(64 * 1024);
    size_t n = buf ? fread(buf, 1, 64 * 1024 - 1, f) : 0;
    fclose(f);
    if (buf)
        buf[n] = '\0';
    return buf;
}

int gw_peer_check(const gw_config_t *c)
{
    uint8_t secret[1024];
    int slen = gw_load_secret(c->peer_secret_file, "CRDTD_PEER_SECRET", secret, sizeof(secret));
    memset(secret, 0, sizeof(secret));
    if (slen < 0)
        return -1;
    if (slen == 0 && c->npeers) {
        gw_log("--peer needs the cluster secret: --peer-secret-file FILE or "
               "$CRDTD_PEER_SECRET (at least 16 bytes)");
        return -1;
    }
    for (int i = 0; i < c->npeers; i++) {
        gw_slot_t sl;
        if (parse_url(&sl, c->peers[i])) {
            gw_log("bad --peer %s", c->peers[i]);
            return -1;
        }
    }
    return 0;
}

int gw_peer_init(gw_server_t *s)
{
    crdt_store_t *store = s->store;
    uint8_t secret[1024];
    int slen = gw_load_secret(s->cfg.peer_secret_file, "CRDTD_PEER_SECRET", secret, sizeof(secret));
    if (slen < 0)
        return -1;
    if (slen == 0) {
        if (s->cfg.npeers) {
            gw_log("--peer needs the cluster secret: --peer-secret-file FILE or "
                   "$CRDTD_PEER_SECRET (at least 16 bytes)");
            return -1;
        }
        return 0; /* replication off: inbound peer links are refused */
    }
    struct gw_peers *P = calloc(1, sizeof(*P));
    if (!P) {
        gw_log("peers: out of memory");
        return -1;
    }
    P->s = s;
    P->store = store;
    P->sul_at = UINT64_MAX;
    for (int i = 0; i < s->cfg.npeers; i++) {
        if (parse_url(&P->slots[i], s->cfg.peers[i])) {
            gw_log("bad --peer %s", s->cfg.peers[i]);
            free(P);
            return -1;
        }
        P->names[i] = s->cfg.peers[i];
    }
    crdt_peers_config_t cfg;
    crdt_peers_config_init(&cfg);
    cfg.cluster = s->cfg.cluster;
    cfg.secret = secret;
    cfg.secret_len = (size_t)slen;
    cfg.queue_bytes = s->cfg.peer_queue;
    cfg.batch_ms = s->cfg.peer_batch_ms;
    cfg.anti_entropy_ms = s->cfg.anti_entropy_secs * 1000u;
    cfg.max_clock_drift_ms = s->cfg.max_clock_drift_ms;
    cfg.headroom = LWS_PRE;
    cfg.nslots = s->cfg.npeers;
    cfg.slot_names = P->names;
    cfg.verbose = s->cfg.verbose;
    char *legacy = read_legacy_state(s);
    cfg.legacy_state = legacy;
    crdt_peers_host_t host = {
        .ud = P,
        .want_write = host_want_write,
        .close = host_close,
        .dial = host_dial,
        .random = host_random,
        .wall_ms = host_wall_ms,
        .log = host_log,
        .applied = host_applied,
        .identify = host_identify,
    };
    uint64_t t0 = gw_now_us();
    crdt_error_t err = {0};
    P->E = crdt_peers_new(store, &cfg, &host, now_ms(), &err);
    free(legacy);
    memset(secret, 0, sizeof(secret));
    if (!P->E) {
        gw_log("%s", err.text[0] ? err.text : "peers: cannot start replication");
        free(P);
        return -1;
    }
    s->peers = P;
    crdt_peers_stats_t st;
    crdt_peers_stats(P->E, &st);
    size_t items = crdt_store_rsx_items(store);
    gw_log("replication: cluster \"%s\", node %" PRIu64 ", epoch %016" PRIx64
           ", %d peer(s) to dial, anti-entropy index of %zu keys built in %.3f s",
           s->cfg.cluster, s->cfg.node_id, st.epoch, s->cfg.npeers, items,
           (double)(gw_now_us() - t0) / 1e6);
    rearm(P);
    return 0;
}

void gw_peer_shutdown(gw_server_t *s)
{
    struct gw_peers *P = s->peers;
    if (!P)
        return;
    lws_sul_cancel(&P->sul);
    /* the connections die with the lws context: detach them from the links first */
    while (P->conns)
        plink_free(P->conns);
    crdt_peers_free(P->E);
    P->E = NULL;
    s->peers = NULL;
    free(P);
}

/* ---- status and metrics --------------------------------------------------------------------- */

/* JSON string of arbitrary bytes: escapes quotes, backslashes and control bytes; bytes >= 0x80
 * become '?' (our texts are ASCII; this only guards against odd URLs). */
static void jw_str(gw_jw_t *w, const char *s)
{
    gw_jw_raw(w, "\"", 1);
    for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
        char e[8];
        if (*p == '"' || *p == '\\') {
            e[0] = '\\';
            e[1] = (char)*p;
            gw_jw_raw(w, e, 2);
        } else if (*p < 0x20) {
            snprintf(e, sizeof(e), "\\u%04x", *p);
            gw_jw_raw(w, e, 6);
        } else {
            e[0] = *p < 0x80 ? (char)*p : '?';
            gw_jw_raw(w, e, 1);
        }
    }
    gw_jw_raw(w, "\"", 1);
}

#define MAX_STATUS 64

void gw_peer_status(gw_server_t *s, gw_response_t *rs)
{
    struct gw_peers *P = s->peers;
    gw_jw_t w;
    if (!gw_jw_init(&w, 1024)) {
        gw_respond_error(rs, 500, "out of memory");
        return;
    }
    static crdt_peer_status_t st[MAX_STATUS];
    size_t n = P ? crdt_peers_status(P->E, st, MAX_STATUS, now_ms()) : 0;
    if (n > MAX_STATUS)
        n = MAX_STATUS;
    gw_jw_lit(&w, "[");
    for (size_t i = 0; i < n; i++) {
        const crdt_peer_status_t *r = &st[i];
        gw_jw_lit(&w, i ? ",{\"url\":" : "{\"url\":");
        jw_str(&w, r->name);
        gw_jw_lit(&w, ",\"address\":");
        jw_str(&w, r->address);
        gw_jw_lit(&w, ",\"node_id\":");
        gw_jw_u64(&w, r->node_id);
        gw_jw_lit(&w, ",\"direction\":");
        gw_jw_lit(&w, r->outbound ? "\"outbound\"" : "\"inbound\"");
        gw_jw_lit(&w, ",\"state\":\"");
        gw_jw_lit(&w, r->state);
        gw_jw_lit(&w, "\",\"mode\":");
        gw_jw_lit(&w, !r->mode ? "null" : !strcmp(r->mode, "live") ? "\"live\"" : "\"catchup\"");
        gw_jw_lit(&w, ",\"last_ack_sent\":");
        gw_jw_u64(&w, r->ack_sent);
        gw_jw_lit(&w, ",\"last_ack_received\":");
        gw_jw_u64(&w, r->ack_received);
        gw_jw_lit(&w, ",\"lag_deltas\":");
        gw_jw_u64(&w, r->lag_deltas);
        gw_jw_lit(&w, ",\"lag_seconds\":");
        gw_jw_double(&w, r->lag_seconds);
        gw_jw_lit(&w, ",\"anti_entropy_rounds\":");
        gw_jw_u64(&w, r->ae_rounds);
        gw_jw_lit(&w, ",\"keys_repaired\":");
        gw_jw_u64(&w, r->keys_repaired);
        gw_jw_lit(&w, ",\"keys_sent_in_repairs\":");
        gw_jw_u64(&w, r->keys_repair_sent);
        gw_jw_lit(&w, ",\"deltas_sent\":");
        gw_jw_u64(&w, r->deltas_sent);
        gw_jw_lit(&w, ",\"deltas_received\":");
        gw_jw_u64(&w, r->deltas_received);
        gw_jw_lit(&w, ",\"bytes_sent\":");
        gw_jw_u64(&w, r->bytes_sent);
        gw_jw_lit(&w, ",\"bytes_received\":");
        gw_jw_u64(&w, r->bytes_received);
        gw_jw_lit(&w, ",\"connects\":");
        gw_jw_u64(&w, r->connects);
        gw_jw_lit(&w, ",\"reconnects\":");
        gw_jw_u64(&w, r->connects ? r->connects - 1 : 0);
        gw_jw_lit(&w, ",\"type_conflicts\":");
        gw_jw_u64(&w, r->type_conflicts);
        gw_jw_lit(&w, ",\"last_error\":");
        if (r->last_error[0])
            jw_str(&w, r->last_error);
        else
            gw_jw_lit(&w, "null");
        gw_jw_lit(&w, "}");
    }
    gw_jw_lit(&w, "]");
    gw_respond_jw(rs, 200, &w);
}

/* The metric families of each peer, in the order /metrics lists them. */
enum {
    PM_UP,
    PM_LAG_DELTAS,
    PM_LAG_SECONDS,
    PM_ACK_SENT,
    PM_ACK_RECEIVED,
    PM_AE_ROUNDS,
    PM_KEYS_REPAIRED,
    PM_KEYS_REPAIR_SENT,
    PM_DELTAS_SENT,
    PM_DELTAS_RECEIVED,
    PM_BYTES_SENT,
    PM_BYTES_RECEIVED,
    PM_RECONNECTS,
    PM_COUNT
};

static uint64_t peer_value(const crdt_peer_status_t *r, int k)
{
    switch (k) {
    case PM_UP: return !strcmp(r->state, "up");
    case PM_LAG_DELTAS: return r->lag_deltas;
    case PM_ACK_SENT: return r->ack_sent;
    case PM_ACK_RECEIVED: return r->ack_received;
    case PM_AE_ROUNDS: return r->ae_rounds;
    case PM_KEYS_REPAIRED: return r->keys_repaired;
    case PM_KEYS_REPAIR_SENT: return r->keys_repair_sent;
    case PM_DELTAS_SENT: return r->deltas_sent;
    case PM_DELTAS_RECEIVED: return r->deltas_received;
    case PM_BYTES_SENT: return r->bytes_sent;
    case PM_BYTES_RECEIVED: return r->bytes_received;
    case PM_RECONNECTS: return r->connects ? r->connects - 1 : 0;
    default: return 0;
    }
}

char *gw_peer_metrics(gw_server_t *s)
{
    struct gw_peers *P = s->peers;
    if (!P)
        return NULL;
    static crdt_peer_status_t st[MAX_STATUS];
    size_t n = crdt_peers_status(P->E, st, MAX_STATUS, now_ms());
    if (n > MAX_STATUS)
        n = MAX_STATUS;
    static const struct {
        const char *name, *type, *help;
    } m[PM_COUNT] = {
        [PM_UP] = {"crdtd_peer_up", "gauge", "1 while the link to the peer is up."},
        [PM_LAG_DELTAS] = {"crdtd_peer_lag_deltas", "gauge",
                           "Our last change seq minus the peer's last ack (changes the peer has "
                           "not durably applied)."},
        [PM_LAG_SECONDS] = {"crdtd_peer_lag_seconds", "gauge",
                            "Age of the oldest change the peer has not acked."},
        [PM_ACK_SENT] = {"crdtd_peer_last_ack_sent", "gauge",
                         "Our applied-through mark of the peer's seqs."},
        [PM_ACK_RECEIVED] = {"crdtd_peer_last_ack_received", "gauge",
                             "The peer's applied-through mark of ours."},
        [PM_AE_ROUNDS] = {"crdtd_peer_anti_entropy_rounds_total", "counter",
                          "Anti-entropy sessions completed."},
        [PM_KEYS_REPAIRED] = {"crdtd_peer_keys_repaired_total", "counter",
                              "Keys anti-entropy received from the peer that changed our state."},
        [PM_KEYS_REPAIR_SENT] = {"crdtd_peer_keys_repair_sent_total", "counter",
                                 "Key states sent in repairs."},
        [PM_DELTAS_SENT] = {"crdtd_peer_deltas_sent_total", "counter",
                            "Deltas and catch-up states sent."},
        [PM_DELTAS_RECEIVED] = {"crdtd_peer_deltas_received_total", "counter",
                                "Deltas and catch-up states received."},
        [PM_BYTES_SENT] = {"crdtd_peer_bytes_sent_total", "counter",
                           "Message bytes sent on the peer's links."},
        [PM_BYTES_RECEIVED] = {"crdtd_peer_bytes_received_total", "counter",
                               "Message bytes received on the peer's links."},
        [PM_RECONNECTS] = {"crdtd_peer_reconnects_total", "counter",
                           "Times the link came up again after the first."},
    };
    /* a peer's label: its url, or node/N for a peer that only dialled us */
    char nodes[MAX_STATUS][32];
    gw_prom_label_t label[MAX_STATUS];
    for (size_t i = 0; i < n; i++) {
        label[i].name = "peer";
        if (st[i].name[0]) {
            label[i].value = st[i].name;
        } else {
            snprintf(nodes[i], sizeof(nodes[i]), "node/%" PRIu64, st[i].node_id);
            label[i].value = nodes[i];
        }
    }
    gw_prom_t o;
    gw_prom_init(&o, 4096);
    for (int k = 0; k < PM_COUNT; k++) {
        gw_prom_family(&o, m[k].name, m[k].type, m[k].help);
        for (size_t i = 0; i < n; i++) {
            if (k == PM_LAG_SECONDS)
                gw_prom_f64(&o, m[k].name, &label[i], 1, st[i].lag_seconds);
            else
                gw_prom_u64(&o, m[k].name, &label[i], 1, peer_value(&st[i], k));
        }
    }
    crdt_peers_stats_t ps;
    crdt_peers_stats(P->E, &ps);
    gw_prom_family(&o, "crdtd_peer_outbox_overflows_total", "counter",
                   "Times unsent deltas were dropped for the change feed.");
    gw_prom_u64(&o, "crdtd_peer_outbox_overflows_total", NULL, 0, ps.outbox_overflows);
    gw_prom_family(&o, "crdtd_peer_clock_refusals_total", "counter",
                   "Handshakes refused because the peer's wall clock differs by more than "
                   "--max-clock-drift-ms.");
    gw_prom_u64(&o, "crdtd_peer_clock_refusals_total", NULL, 0, ps.clock_refusals);
    return gw_prom_take(&o, NULL);
}
