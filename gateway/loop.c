/* loop.c - the event loop: lws context and listeners, group commit, tick, durability waiters,
 * fan-out of the store's events to the registered sinks */
#include <errno.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>
#include <sys/ioctl.h>

#include "loop.h"
#include "server.h"
#include "util.h"

/* ---- store events --------------------------------------------------------------------------- */

static void on_store_change(void *ud, const void *key, size_t klen, uint64_t seq,
                            const crdt_obj_t *delta, uint64_t origin)
{
    gw_server_t *s = ud;
    for (int i = 0; i < s->loop.nsinks; i++)
        if (s->loop.sinks[i].change)
            s->loop.sinks[i].change(s, key, klen, seq, delta, origin);
}

static bool on_store_wants_delta(void *ud, const void *key, size_t klen)
{
    gw_server_t *s = ud;
    for (int i = 0; i < s->loop.nsinks; i++) {
        const gw_loop_sink_t *k = &s->loop.sinks[i];
        if (k->change && (!k->wants_delta || k->wants_delta(s, key, klen)))
            return true;
    }
    return false;
}

bool gw_loop_storage_failed(const gw_server_t *s)
{
    return s->storage_error || crdt_store_last_error(s->store);
}

/* Calls every waiter whose seq is now durable; after a storage failure, every waiter (their
 * writes are applied in memory but cannot be promised durable). */
static void release_waiters(gw_server_t *s)
{
    gw_loop_t *L = &s->loop;
    uint64_t durable = crdt_store_durable_seq(s->store);
    bool failed = s->store_transient ? s->storage_error != 0 : gw_loop_storage_failed(s);
    while (L->head) {
        gw_durable_wait_t *w = L->head;
        if (w->seq > durable && !failed)
            break;
        gw_loop_unwait(s, w);
        w->cb(s, w, w->seq > durable ? (s->storage_error ? s->storage_error : CRDT_EIO) : 0);
    }
}

static void on_store_durable(void *ud, uint64_t durable_seq)
{
    gw_server_t *s = ud;
    (void)durable_seq;
    s->loop.durable_events++;
    const char *err = crdt_store_last_error(s->store);
    if (err && !s->storage_error && !s->store_transient) {
        /* a failure the store found on its own (the background fsync of --fsync everysec) */
        s->storage_error = CRDT_EIO;
        gw_log("storage failure: %s", err);
    }
    release_waiters(s);
    for (int i = 0; i < s->loop.nsinks; i++)
        if (s->loop.sinks[i].durable)
            s->loop.sinks[i].durable(s);
}

/* ---- durability waiters --------------------------------------------------------------------- */

void gw_loop_wait_durable(gw_server_t *s, gw_durable_wait_t *w, uint64_t seq, gw_durable_cb cb)
{
    gw_loop_t *L = &s->loop;
    gw_loop_unwait(s, w);
    w->seq = seq;
    w->cb = cb;
    /* seqs mostly arrive in order: insert from the tail */
    gw_durable_wait_t *after = L->tail;
    while (after && after->seq > seq)
        after = after->prev;
    w->prev = after;
    w->next = after ? after->next : L->head;
    if (w->next)
        w->next->prev = w;
    else
        L->tail = w;
    if (after)
        after->next = w;
    else
        L->head = w;
    w->queued = true;
    L->waiting++;
    gw_loop_schedule_flush(s);
}

void gw_loop_unwait(gw_server_t *s, gw_durable_wait_t *w)
{
    if (!w->queued)
        return;
    gw_loop_t *L = &s->loop;
    if (w->prev)
        w->prev->next = w->next;
    else
        L->head = w->next;
    if (w->next)
        w->next->prev = w->prev;
    else
        L->tail = w->prev;
    w->prev = w->next = NULL;
    w->queued = false;
    L->waiting--;
}

/* ---- group commit and tick ------------------------------------------------------------------ */

/* Runs the store's flush. The durable event it fires (when durable_seq moved) releases the
 * waiters and tells the sinks; without one they are told anyway, as after every flush: work may
 * wait for a seq that was durable already (a crdt.v1 duplicate's ack waits for the last seq). */
static void flush_now(gw_server_t *s)
{
    uint64_t events = s->loop.durable_events;
    int rc = crdt_store_flush(s->store);
    if (rc < 0 && !s->storage_error) {
        s->storage_error = rc;
        const char *err = crdt_store_last_error(s->store);
        gw_log("storage failure: %s", err ? err : crdt_strerror(rc));
        events = s->loop.durable_events - 1; /* tell again, now with storage_error set */
    }
    if (s->loop.durable_events == events)
        on_store_durable(s, crdt_store_durable_seq(s->store));
}

void gw_loop_flush(gw_server_t *s)
{
    flush_now(s);
}

static void flush_cb(lws_sorted_usec_list_t *sul)
{
    gw_server_t *s = lws_container_of(sul, gw_server_t, loop.sul_flush);
    s->loop.flush_scheduled = false;
    flush_now(s);
    /* Still waiting (a policy that syncs later, e.g. a slow background fsync): look again soon. */
    if (s->loop.head && !s->loop.flush_scheduled) {
        s->loop.flush_scheduled = true;
        lws_sul_schedule(s->ctx, 0, &s->loop.sul_flush, flush_cb, 1000);
    }
}

void gw_loop_schedule_flush(gw_server_t *s)
{
    if (s->loop.flush_scheduled || !s->ctx)
        return;
    s->loop.flush_scheduled = true;
    lws_sul_schedule(s->ctx, 0, &s->loop.sul_flush, flush_cb, 0);
}

static void tick_cb(lws_sorted_usec_list_t *sul)
{
    gw_server_t *s = lws_container_of(sul, gw_server_t, loop.sul_tick);
    crdt_store_tick(s->store, gw_mono_ms());
    if (s->loading) {
        crdt_store_stats_t st;
        crdt_store_stats(s->store, &st);
        if (st.keys_loading == 0) {
            s->loading = false;
            crdt_replica_t *r = crdt_store_embedded_replica(s->store);
            const crdt_recovery_report_t *rep = r ? crdt_replica_recovery(r) : NULL;
            if (rep)
                gw_log("every recovered key joined %.3f s after the data directory was opened",
                       rep->loaded_seconds);
            else
                gw_log("every recovered key joined");
        }
    }
    if (crdt_store_last_seq(s->store) > crdt_store_durable_seq(s->store) || s->loop.head)
        gw_loop_schedule_flush(s);
    lws_sul_schedule(s->ctx, 0, &s->loop.sul_tick, tick_cb, (lws_usec_t)s->cfg.tick_ms * 1000);
}

/* ---- the context ---------------------------------------------------------------------------- */

int gw_loop_add_sink(gw_server_t *s, const gw_loop_sink_t *sink)
{
    if (s->loop.nsinks == GW_LOOP_MAX_SINKS)
        return -1;
    s->loop.sinks[s->loop.nsinks++] = *sink;
    return 0;
}

static void lws_log_emit(int level, const char *line)
{
    (void)level;
    /* lws lines end with a newline already */
    fprintf(stderr, "lws: %s", line);
}

/* ---- TLS on the listeners ------------------------------------------------------------------ */

bool gw_loop_tls(const gw_server_t *s)
{
    return s->cfg.tls_cert[0] && s->cfg.tls_key[0];
}

static void ossl_reason(char *why, size_t n, const char *what)
{
    unsigned long e = ERR_get_error();
    char buf[256] = "";
    if (e)
        ERR_error_string_n(e, buf, sizeof(buf));
    ERR_clear_error();
    snprintf(why, n, "%s%s%s", what, e ? ": " : "", buf);
}

int gw_loop_tls_check(const char *cert, const char *key, char *why, size_t whylen, char *info,
                      size_t infolen)
{
    if (info && infolen)
        info[0] = '\0';
    FILE *f = fopen(cert, "r");
    if (!f) {
        snprintf(why, whylen, "cannot read the certificate %s: %s", cert, strerror(errno));
        return -1;
    }
    X509 *x = PEM_read_X509(f, NULL, NULL, NULL);
    fclose(f);
    if (!x) {
        ossl_reason(why, whylen, "the certificate file holds no PEM certificate");
        return -1;
    }
    f = fopen(key, "r");
    EVP_PKEY *k = f ? PEM_read_PrivateKey(f, NULL, NULL, NULL) : NULL;
    int err = errno;
    if (f)
        fclose(f);
    int rc = -1;
    if (!f)
        snprintf(why, whylen, "cannot read the key %s: %s", key, strerror(err));
    else if (!k)
        ossl_reason(why, whylen,
                    "the key file holds no PEM private key (encrypted keys are not "
                    "supported)");
    else if (X509_check_private_key(x, k) != 1)
        ossl_reason(why, whylen, "the key does not belong to the certificate");
    else
        rc = 0;
    if (info && infolen) {
        char subj[256] = "", until[64] = "";
        X509_NAME_oneline(X509_get_subject_name(x), subj, sizeof(subj));
        BIO *b = BIO_new(BIO_s_mem());
        if (b && ASN1_TIME_print(b, X509_get0_notAfter(x)) > 0) {
            int n = BIO_read(b, until, (int)sizeof(until) - 1);
            until[n > 0 ? n : 0] = '\0';
        }
        BIO_free(b);
        bool expired = X509_cmp_current_time(X509_get0_notAfter(x)) < 0;
        snprintf(info, infolen, "%s, valid until %s%s", subj, until,
                 expired ? " (EXPIRED: clients will refuse it)" : "");
    }
    EVP_PKEY_free(k);
    X509_free(x);
    return rc;
}

int gw_loop_check(const gw_config_t *c)
{
    char why[512];
    if (c->tls_cert[0] && gw_loop_tls_check(c->tls_cert, c->tls_key, why, sizeof(why), NULL, 0)) {
        gw_log("--tls-cert/--tls-key: %s", why);
        return -1;
    }
    if (c->peer_cert[0] &&
        gw_loop_tls_check(c->peer_cert, c->peer_key, why, sizeof(why), NULL, 0)) {
        gw_log("--peer-cert/--peer-key: %s", why);
        return -1;
    }
    if (c->peer_ca[0]) {
        FILE *f = fopen(c->peer_ca, "r");
        if (!f) {
            gw_log("--peer-ca: cannot read %s: %s", c->peer_ca, strerror(errno));
            return -1;
        }
        fclose(f);
    }
    return 0;
}

int gw_loop_tls_reload(gw_server_t *s)
{
    if (!gw_loop_tls(s) || !s->ctx)
        return 0;
    char why[512], info[512];
    if (gw_loop_tls_check(s->cfg.tls_cert, s->cfg.tls_key, why, sizeof(why), info, sizeof(info))) {
        gw_log("SIGHUP: keeping the previous TLS certificate: %s", why);
        return -1;
    }
    /* every vhost made with these paths: the main listener and the roshi one */
    if (lws_tls_cert_updated(s->ctx, s->cfg.tls_cert, s->cfg.tls_key, NULL, 0, NULL, 0)) {
        gw_log("SIGHUP: libwebsockets refused the new TLS certificate");
        return -1;
    }
    gw_log("SIGHUP: TLS certificate reloaded: %s", info);
    return 0;
}

/* The certificate chain of a PEM file (the leaf first) and the key of another: 0, or -1 with why.
 */
static int load_chain(const char *cert, const char *key, X509 **leaf, STACK_OF(X509) * *chain,
                      EVP_PKEY **pkey, char *why, size_t whylen)
{
    *leaf = NULL;
    *chain = sk_X509_new_null();
    *pkey = NULL;
    FILE *f = fopen(cert, "r");
    if (f) {
        *leaf = PEM_read_X509(f, NULL, NULL, NULL);
        X509 *x;
        while (*leaf && *chain && (x = PEM_read_X509(f, NULL, NULL, NULL)) != NULL)
            if (!sk_X509_push(*chain, x))
                X509_free(x);
        fclose(f);
        ERR_clear_error(); /* the end of the file reads as an error */
    }
    f = fopen(key, "r");
    if (f) {
        *pkey = PEM_read_PrivateKey(f, NULL, NULL, NULL);
        fclose(f);
    }
    if (*leaf && *chain && *pkey)
        return 0;
    ossl_reason(why, whylen, "cannot load --peer-cert/--peer-key");
    X509_free(*leaf);
    sk_X509_pop_free(*chain, X509_free);
    EVP_PKEY_free(*pkey);
    *leaf = NULL, *chain = NULL, *pkey = NULL;
    return -1;
}

/* Why leaf cannot be a peer certificate now: expired, not yet valid, or (with a store) not
 * verifying against it; NULL when it can. */
static const char *peer_cert_problem(X509 *leaf, STACK_OF(X509) * chain, X509_STORE *store,
                                     char *why, size_t whylen)
{
    if (X509_cmp_current_time(X509_get0_notAfter(leaf)) < 0)
        return "the certificate has expired";
    if (X509_cmp_current_time(X509_get0_notBefore(leaf)) > 0)
        return "the certificate is not valid yet";
    if (!store)
        return NULL;
    X509_STORE_CTX *vc = X509_STORE_CTX_new();
    int ok = vc && X509_STORE_CTX_init(vc, store, leaf, chain) == 1 && X509_verify_cert(vc) == 1;
    if (!ok)
        snprintf(why, whylen, "the certificate does not verify against --peer-ca: %s",
                 vc ? X509_verify_cert_error_string(X509_STORE_CTX_get_error(vc))
                    : "out of memory");
    X509_STORE_CTX_free(vc);
    ERR_clear_error();
    return ok ? NULL : why;
}

int gw_loop_peer_tls_reload(gw_server_t *s)
{
    const gw_config_t *c = &s->cfg;
    SSL_CTX *dial = s->loop.peer_ctx, *listen = c->peer_cert[0] ? s->loop.listen_ctx : NULL;
    if (!dial && !listen)
        return 0;
    char why[512] = "", vwhy[300];
    const char *problem = NULL;
    X509_STORE *store = NULL;
    X509 *leaf = NULL;
    STACK_OF(X509) *chain = NULL;
    EVP_PKEY *pkey = NULL;
    if (c->peer_ca[0]) {
        store = X509_STORE_new();
        if (!store || X509_STORE_load_file(store, c->peer_ca) != 1) {
            ossl_reason(why, sizeof(why), "cannot load --peer-ca");
            problem = why;
        }
    }
    if (!problem && c->peer_cert[0] && dial) {
        if (gw_loop_tls_check(c->peer_cert, c->peer_key, why, sizeof(why), NULL, 0) ||
            load_chain(c->peer_cert, c->peer_key, &leaf, &chain, &pkey, why, sizeof(why)))
            problem = why;
        else
            problem = peer_cert_problem(leaf, chain, store, vwhy, sizeof(vwhy));
    }
    int rc = -1;
    if (problem) {
        gw_log("SIGHUP: keeping the previous peer TLS files (--peer-cert, --peer-key, "
               "--peer-ca): %s",
               problem);
    } else if (leaf && SSL_CTX_use_cert_and_key(dial, leaf, pkey, chain, 1) != 1) {
        ossl_reason(why, sizeof(why), "OpenSSL refused the new --peer-cert/--peer-key");
        gw_log("SIGHUP: keeping the previous peer TLS files: %s", why);
    } else {
        /* the store is looked up at each verification: handshakes from now on use it */
        if (store && dial)
            SSL_CTX_set1_cert_store(dial, store);
        if (store && listen)
            SSL_CTX_set1_cert_store(listen, store);
        char subj[256] = "", until[64] = "";
        if (leaf) {
            X509_NAME_oneline(X509_get_subject_name(leaf), subj, sizeof(subj));
            BIO *b = BIO_new(BIO_s_mem());
            if (b && ASN1_TIME_print(b, X509_get0_notAfter(leaf)) > 0) {
                int n = BIO_read(b, until, (int)sizeof(until) - 1);
                until[n > 0 ? n : 0] = '\0';
            }
            BIO_free(b);
        }
        gw_log("SIGHUP: peer TLS reloaded: %s%s%s%s%s", leaf ? "certificate " : "", subj,
               leaf ? ", valid until " : "", until,
               store ? (leaf ? "; --peer-ca" : "--peer-ca") : "");
        rc = 0;
    }
    X509_STORE_free(store);
    X509_free(leaf);
    sk_X509_pop_free(chain, X509_free);
    EVP_PKEY_free(pkey);
    return rc;
}

/* The first protocol's callback as lws sees it: the loop notes the main listener's server
 * context when lws makes it, then it is HTTP's. */
static int proto0_cb(struct lws *wsi, enum lws_callback_reasons reason, void *user, void *in,
                     size_t len)
{
    gw_server_t *s = lws_context_user(lws_get_context(wsi));
    if (reason == LWS_CALLBACK_OPENSSL_LOAD_EXTRA_SERVER_VERIFY_CERTS && s && in && user &&
        !strcmp(lws_get_vhost_name((struct lws_vhost *)in), "crdtd"))
        s->loop.listen_ctx = user;
    return s && s->loop.http_cb ? s->loop.http_cb(wsi, reason, user, in, len) : 0;
}

/* The TLS client context of wss:// peer links: --peer-ca alone is trusted when given (else the
 * system store), --peer-cert/--peer-key are presented. NULL after logging why. */
static SSL_CTX *peer_client_ctx(const gw_server_t *s)
{
    SSL_CTX *ctx = SSL_CTX_new(TLS_client_method());
    char why[300] = "";
    if (!ctx) {
        gw_log("wss:// peers: cannot make a TLS context");
        return NULL;
    }
    SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION);
    SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, NULL);
    int ok = s->cfg.peer_ca[0] ? SSL_CTX_load_verify_locations(ctx, s->cfg.peer_ca, NULL)
                               : SSL_CTX_set_default_verify_paths(ctx);
    if (ok != 1)
        ossl_reason(why, sizeof(why), "cannot load --peer-ca");
    else if (s->cfg.peer_cert[0] &&
             gw_loop_tls_check(s->cfg.peer_cert, s->cfg.peer_key, why, sizeof(why), NULL, 0))
        ;
    else if (s->cfg.peer_cert[0] &&
             (SSL_CTX_use_certificate_chain_file(ctx, s->cfg.peer_cert) != 1 ||
              SSL_CTX_use_PrivateKey_file(ctx, s->cfg.peer_key, SSL_FILETYPE_PEM) != 1))
        ossl_reason(why, sizeof(why), "cannot load --peer-cert/--peer-key");
    if (why[0]) {
        gw_log("wss:// peers: %s", why);
        SSL_CTX_free(ctx);
        return NULL;
    }
    return ctx;
}

/* Whether any configured peer is dialled over wss://. */
static bool peers_use_tls(const gw_server_t *s)
{
    for (int i = 0; i < s->cfg.npeers; i++)
        if (!strncmp(s->cfg.peers[i], "wss://", 6))
            return true;
    return false;
}

static struct lws_vhost *make_vhost(gw_server_t *s, const char *name, const gw_addr_t *a,
                                    bool peers)
{
    struct lws_context_creation_info info;
    memset(&info, 0, sizeof(info));
    info.vhost_name = name;
    info.port = a->port ? a->port : CONTEXT_PORT_NO_LISTEN_SERVER;
    info.iface = a->host;
    info.protocols = s->protocols;
    info.keepalive_timeout = 30;
    info.options = LWS_SERVER_OPTION_DISABLE_IPV6;
    if (strchr(a->host, ':'))
        info.options &= ~(uint64_t)LWS_SERVER_OPTION_DISABLE_IPV6;
    if (!a->port)
        info.port = 0;
    if (gw_loop_tls(s)) {
        /* lws refuses cleartext on a TLS vhost (no ALLOW_NON_SSL_ON_SSL_PORT): the handshake
         * fails and the connection is closed */
        info.ssl_cert_filepath = s->cfg.tls_cert;
        info.ssl_private_key_filepath = s->cfg.tls_key;
        info.options |= LWS_SERVER_OPTION_DO_SSL_GLOBAL_INIT; /* lws reads it per vhost too */
        /* HTTP/1.1 only: http.c sends headers and body in one HTTP/1 write, and crdt.v1 and
         * crdt-peer.v1 upgrade from HTTP/1.1; without this lws would offer h2 by ALPN */
        info.alpn = "http/1.1";
        if (peers && s->cfg.peer_cert[0]) {
            /* mutual TLS with peers: ask every client for a certificate from --peer-ca but do
             * not require one (HTTP clients and sessions have none); a certificate that fails
             * verification is refused in gw_http_callback (the lws trap: an unhandled
             * PERFORM_CLIENT_CERT_VERIFICATION accepts it), and peer links without a verified
             * one are refused by peer.c */
            info.options |= LWS_SERVER_OPTION_REQUIRE_VALID_OPENSSL_CLIENT_CERT |
                            LWS_SERVER_OPTION_PEER_CERT_NOT_REQUIRED;
            info.ssl_ca_filepath = s->cfg.peer_ca[0] ? s->cfg.peer_ca : NULL;
        }
    }
    if (peers && peers_use_tls(s)) {
        /* the client side of wss:// peer links, in a context of ours (lws then adds the URL's
         * host check and the verify result check on each connection) */
        info.options |= LWS_SERVER_OPTION_DO_SSL_GLOBAL_INIT;
        if (!s->loop.peer_ctx && !(s->loop.peer_ctx = peer_client_ctx(s)))
            return NULL;
        info.provided_client_ssl_ctx = s->loop.peer_ctx;
    }
    struct lws_vhost *vh = lws_create_vhost(s->ctx, &info);
    if (!vh) {
        gw_log("cannot listen on %s:%d (address in use, or not a local address?)", a->host,
               a->port);
        return NULL;
    }
    return vh;
}

void gw_loop_use_store(gw_server_t *s, crdt_store_t *st)
{
    crdt_store_events_t ev = {on_store_change, on_store_durable, s, on_store_wants_delta};
    s->store = st;
    crdt_store_set_events(st, &ev);
}

int gw_loop_start(gw_server_t *s, const struct lws_protocols *protocols)
{
    if (s->store)
        gw_loop_use_store(s, s->store);
    size_t np = 0;
    while (protocols[np].name)
        np++;
    s->loop.protos = calloc(np + 1, sizeof(*s->loop.protos));
    if (!s->loop.protos) {
        gw_log("out of memory");
        return -1;
    }
    memcpy(s->loop.protos, protocols, (np + 1) * sizeof(*protocols));
    s->loop.http_cb = protocols[0].callback;
    s->loop.protos[0].callback = proto0_cb;
    s->protocols = s->loop.protos;
    lws_set_log_level(s->cfg.verbose ? (LLL_ERR | LLL_WARN | LLL_NOTICE) : (LLL_ERR | LLL_WARN),
                      lws_log_emit);

    struct lws_context_creation_info info;
    memset(&info, 0, sizeof(info));
    /* IPv6 is each vhost's to allow (make_vhost: when it listens on an IPv6 address, which then
     * dials IPv6 peers too); disabled here, it was disabled for every dial */
    info.options = LWS_SERVER_OPTION_EXPLICIT_VHOSTS | LWS_SERVER_OPTION_DO_SSL_GLOBAL_INIT;
    info.user = s;
    if (gw_loop_tls(s)) {
        char why[512], tinfo[512];
        if (gw_loop_tls_check(s->cfg.tls_cert, s->cfg.tls_key, why, sizeof(why), tinfo,
                              sizeof(tinfo))) {
            gw_log("--tls-cert/--tls-key: %s", why);
            return -1;
        }
        gw_log("TLS on the listeners: %s", tinfo);
    }
    info.max_http_header_data = (unsigned short)s->cfg.max_header;
    info.max_http_header_pool = 1024;
    info.timeout_secs = 10;
    info.pt_serv_buf_size = 64 * 1024;
    s->ctx = lws_create_context(&info);
    if (!s->ctx) {
        gw_log("cannot create the libwebsockets context");
        return -1;
    }

    s->vh_main = make_vhost(s, "crdtd", &s->cfg.listen, true);
    if (!s->vh_main)
        return -1;
    s->main_port = lws_get_vhost_listen_port(s->vh_main);
    if (s->cfg.roshi_enabled) {
        s->vh_roshi = make_vhost(s, "roshi", &s->cfg.roshi, false);
        if (!s->vh_roshi)
            return -1;
        s->roshi_port = lws_get_vhost_listen_port(s->vh_roshi);
    }
    lws_sul_schedule(s->ctx, 0, &s->loop.sul_tick, tick_cb, (lws_usec_t)s->cfg.tick_ms * 1000);
    return 0;
}

/* ---- reading more in the turn --------------------------------------------------------------- */

/* Forced reads per reader per turn, beyond the one poll gave: one TLS record each. 32 split a
 * window of 64 applies in flight into two turns, two group commits and two ack records (writes
 * per apply 1/28 against ws://'s 1/64, whose one read takes up to 64 KiB); 128 records is still
 * less than what one ws:// read can hold. */
#define READ_MORE_ROUNDS 128
#define READ_MORE_IDLE 64 /* forced reads without a receive before a reader is dropped */

void gw_loop_reader_init(gw_loop_reader_t *r, struct lws *wsi)
{
    memset(r, 0, sizeof(*r));
    r->wsi = wsi;
    SSL *ssl = lws_get_ssl(wsi);
    if (ssl)
        SSL_set_read_ahead(ssl, 1);
}

static void reader_link(gw_loop_t *L, gw_loop_reader_t *r)
{
    r->prev = L->rtail;
    r->next = NULL;
    if (L->rtail)
        L->rtail->next = r;
    else
        L->rhead = r;
    L->rtail = r;
    r->queued = true;
    L->nreaders++;
}

static void reader_unlink(gw_loop_t *L, gw_loop_reader_t *r)
{
    if (r->prev)
        r->prev->next = r->next;
    else
        L->rhead = r->next;
    if (r->next)
        r->next->prev = r->prev;
    else
        L->rtail = r->prev;
    r->prev = r->next = NULL;
    r->queued = false;
    L->nreaders--;
}

void gw_loop_read_more(gw_server_t *s, gw_loop_reader_t *r)
{
    r->idle = 0;
    if (!r->queued && r->wsi)
        reader_link(&s->loop, r);
}

void gw_loop_read_stop(gw_server_t *s, gw_loop_reader_t *r)
{
    if (r->queued)
        reader_unlink(&s->loop, r);
}

/* Whether wsi has input a read would take now: a whole TLS record (decrypted, or buffered by
 * read-ahead: SSL_peek decrypts it without taking it; a partial one waits for the socket, which
 * poll sees), an alert or the peer's close (lws reads it and closes), or cleartext bytes. */
static bool has_input(struct lws *wsi)
{
    int fd = (int)lws_get_socket_fd(wsi), avail = 0;
    if (fd < 0)
        return false;
    SSL *ssl = lws_get_ssl(wsi);
    if (!ssl)
        return !ioctl(fd, FIONREAD, &avail) && avail > 0;
    if (SSL_pending(ssl) > 0)
        return true;
    if (!SSL_has_pending(ssl) && (ioctl(fd, FIONREAD, &avail) || avail <= 0))
        return false;
    unsigned char c;
    int r = SSL_peek(ssl, &c, 1);
    if (r > 0)
        return true;
    /* (a stale error on the queue can only make this say yes: one forced read for nothing) */
    int e = SSL_get_error(ssl, r);
    ERR_clear_error();
    return e != SSL_ERROR_WANT_READ && e != SSL_ERROR_WANT_WRITE;
}

static void more_cb(lws_sorted_usec_list_t *sul)
{
    (void)sul; /* only there so that the poll after it does not wait */
}

/* After the turn's events: the readers with input are handed a POLLIN (what poll would report a
 * turn later), a few rounds, each reader once a round. Readers still with input when the rounds
 * are done stay queued for the next turn, whose poll is kept from waiting. */
static void read_more(gw_server_t *s)
{
    gw_loop_t *L = &s->loop;
    for (int round = 0; round < READ_MORE_ROUNDS && L->rhead; round++) {
        /* the readers queued when the round began (those that receive meanwhile move to the
         * tail: the next round) */
        unsigned n = L->nreaders;
        for (unsigned k = 0; k < n && L->rhead; k++) {
            gw_loop_reader_t *r = L->rhead;
            reader_unlink(L, r);
            if (!has_input(r->wsi) || r->idle++ >= READ_MORE_IDLE)
                continue;
            reader_link(L, r); /* checked again next round; a close unlinks it */
            struct lws_pollfd p = {
                .fd = (int)lws_get_socket_fd(r->wsi), .events = POLLIN, .revents = POLLIN};
            if (lws_service_fd(s->ctx, &p) < 0)
                return;
        }
    }
    if (L->rhead)
        lws_sul_schedule(s->ctx, 0, &L->sul_more, more_cb, 0);
}

int gw_loop_service(gw_server_t *s, int timeout_ms)
{
    if (lws_service(s->ctx, timeout_ms) < 0)
        return -1;
    read_more(s);
    return 0;
}

void gw_loop_run(gw_server_t *s)
{
    while (!s->stopping) {
        if (s->reload) {
            s->reload = 0;
            if (s->on_reload)
                s->on_reload(s);
        }
        if (gw_loop_service(s, 0) < 0)
            break;
    }
    gw_loop_finish(s);
}

static void shutdown_sinks(gw_server_t *s)
{
    for (int i = s->loop.nsinks - 1; i >= 0; i--)
        if (s->loop.sinks[i].shutdown)
            s->loop.sinks[i].shutdown(s);
}

void gw_loop_finish(gw_server_t *s)
{
    if (!s->ctx) { /* gw_loop_start failed before the context existed */
        shutdown_sinks(s);
        free(s->loop.protos);
        s->loop.protos = NULL;
        return;
    }
    /* Draining: make what was written durable and answer the writers still waiting, for at
     * most about a second; then close every connection. */
    flush_now(s);
    release_waiters(s);
    uint64_t deadline = gw_now_us() + 1000000;
    while (gw_now_us() < deadline) {
        bool busy = s->loop.head != NULL;
        if (gw_loop_service(s, 0) < 0)
            break;
        if (!busy)
            break;
    }
    lws_sul_cancel(&s->loop.sul_tick);
    lws_sul_cancel(&s->loop.sul_flush);
    lws_sul_cancel(&s->loop.sul_more);
    shutdown_sinks(s);
    lws_context_destroy(s->ctx);
    s->ctx = NULL;
    SSL_CTX_free(s->loop.peer_ctx); /* lws does not free a context it was given */
    s->loop.peer_ctx = NULL;
    s->loop.listen_ctx = NULL;
    free(s->loop.protos);
    s->loop.protos = NULL;
}
