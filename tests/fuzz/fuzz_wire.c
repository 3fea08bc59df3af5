/* fuzz_wire.c - libFuzzer harness for what crdtd reads from the network besides CRDT frames:
 * session tokens (signed with the harness's secret, so the payload parser is reached, and raw, so
 * the token splitter and the MAC check are), base64url, the peer handshake and entry decoders,
 * and the peer engine itself: messages on a link whose handshake the harness completed, so they
 * reach the data path (deltas, repairs, acks, anti-entropy)
 *
 * The first byte chooses the decoder; the rest is its input. Every decoder must return an error or
 * a value within its documented bounds, never read outside its input, never leak. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "crdt_peer.h"
#include "crypto.h"
#include "util.h"
#include "peer_wire.h"
#include "token.h"

/* crypto.c logs through gw_log (http.c): not linked here */
void gw_log(const char *fmt, ...)
{
    (void)fmt;
}

static const char secret[] = "fuzz-secret-0123456789";

static void check_token(const gw_token_t *t)
{
    if (strlen(t->sub) > GW_TOKEN_MAX_SUB)
        abort();
    static const uint8_t key[] = "feed:1";
    (void)gw_token_can_read_key(t, key, sizeof(key) - 1);
    (void)gw_token_can_read_prefix(t, key, 4);
    (void)gw_token_can_write_key(t, key, sizeof(key) - 1);
}

static void token_raw(const uint8_t *d, size_t n)
{
    gw_token_t t;
    char why[128];
    int rc = gw_token_verify((const char *)d, n, secret, sizeof(secret) - 1, 1700000000, &t, why,
                             sizeof(why));
    if (rc == GW_TOKEN_OK || rc == GW_TOKEN_EEXPIRED)
        check_token(&t);
    gw_token_clear(&t);
}

/* The input as a payload under a valid signature: reaches the JSON payload parser. */
static void token_signed(const uint8_t *d, size_t n)
{
    char *p = gw_b64url_encode(d, n);
    if (!p)
        return;
    uint8_t mac[GW_HMAC_LEN];
    gw_hmac_sha256(secret, sizeof(secret) - 1, p, strlen(p), mac);
    char *m = gw_b64url_encode(mac, sizeof(mac));
    size_t len = strlen(p) + 1 + (m ? strlen(m) : 0);
    char *tok = malloc(len + 1);
    if (m && tok) {
        snprintf(tok, len + 1, "%s.%s", p, m);
        token_raw((const uint8_t *)tok, len);
    }
    free(tok);
    free(m);
    free(p);
}

static void b64url(const uint8_t *d, size_t n)
{
    uint8_t *out = NULL;
    size_t olen = 0;
    if (gw_b64url_decode((const char *)d, n, &out, &olen) == 0) {
        if (olen > n)
            abort();
        char *back = gw_b64url_encode(out, olen);
        free(back);
    }
    free(out);
}

static void entries(const uint8_t *d, size_t n, bool with_seq)
{
    pw_reader_t r;
    pw_reader_init(&r, d, n);
    pw_entry_t e;
    const char *why = NULL;
    while (pw_left(&r) && pw_get_entry(&r, with_seq, &e, &why)) {
        /* what an entry points at lies inside the input */
        if (e.key < d || e.key + e.klen > d + n || e.obj < d || e.obj + e.olen > d + n)
            abort();
    }
}

/* ---- the engine: one inbound link, handshake done by the harness, then the input's messages -- */

static const uint8_t cluster_secret[] = "fuzz-cluster-secret-0123456789";
static uint64_t fz_rng;

static int fz_random(void *ud, void *buf, size_t n)
{
    (void)ud;
    uint8_t *p = buf;
    for (size_t i = 0; i < n; i++)
        p[i] = (uint8_t)((fz_rng = fz_rng * 6364136223846793005ull + 1442695040888963407ull) >> 56);
    return 0;
}

static uint64_t fz_wall(void *ud)
{
    (void)ud;
    return 1700000000000ull;
}

/* Writes out everything the link has (the harness plays a peer that reads it all). */
static void fz_drain(crdt_peer_link_t *l, crdt_buf_t *last)
{
    for (int k = 0; k < 64; k++) {
        crdt_peer_frame_t *f = NULL;
        if (crdt_peer_link_pull(l, &f, 1) != 1)
            return;
        if (last) {
            last->len = 0;
            crdt_buf_append(last, crdt_peer_frame_data(f), crdt_peer_frame_len(f));
        }
        crdt_peer_frame_release(f);
    }
}

static void engine(const uint8_t *d, size_t n)
{
    crdt_replica_config_t rc;
    crdt_replica_config_init(&rc);
    rc.node_id = 1;
    crdt_store_t *st = crdt_store_embedded_open(&rc, NULL);
    if (!st)
        return;
    crdt_peers_config_t cfg;
    crdt_peers_config_init(&cfg);
    cfg.secret = cluster_secret;
    cfg.secret_len = sizeof(cluster_secret) - 1;
    crdt_peers_host_t host = {.random = fz_random, .wall_ms = fz_wall};
    fz_rng = 1;
    crdt_peers_t *E = crdt_peers_new(st, &cfg, &host, 0, NULL);
    crdt_peer_link_t *l = E ? crdt_peers_link_new(E, -1, "fuzz", NULL, 0) : NULL;
    crdt_buf_t ch = {0}, tr = {0}, hello = {0};
    if (l) {
        fz_drain(l, &ch); /* the challenge */
        pw_hello_t h;
        memset(&h, 0, sizeof(h));
        h.version = PW_VERSION;
        snprintf(h.cluster, sizeof(h.cluster), "crdtd");
        h.node_id = 2;
        h.epoch = 7;
        h.clock_ms = fz_wall(NULL);
        uint8_t proof[PW_PROOF_LEN];
        if (!crdt_buf_append(&tr, ch.data, ch.len) && !pw_encode_hello_body(&hello, &h) &&
            !crdt_buf_append(&tr, hello.data, hello.len)) {
            pw_proof(cluster_secret, sizeof(cluster_secret) - 1, false, &tr, proof);
            crdt_buf_append(&hello, proof, PW_PROOF_LEN);
            crdt_peer_link_receive(l, hello.data, hello.len, 1);
        }
        fz_drain(l, NULL);
        /* the input: messages of [len:u16 little endian][bytes] */
        size_t i = 0;
        while (i + 2 <= n) {
            size_t len = (size_t)d[i] | (size_t)d[i + 1] << 8;
            i += 2;
            if (len > n - i)
                len = n - i;
            crdt_peer_link_receive(l, d + i, len, 2);
            i += len;
            fz_drain(l, NULL);
            crdt_peers_tick(E, 3);
            crdt_store_flush(st);
            crdt_peers_on_durable(E, 4);
            fz_drain(l, NULL);
        }
        crdt_peer_link_closed(l, NULL, 5);
    }
    crdt_buf_free(&ch);
    crdt_buf_free(&tr);
    crdt_buf_free(&hello);
    crdt_peers_free(E);
    crdt_store_close(st);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    const uint8_t *d = data + 1;
    size_t n = size - 1;
    const char *why = NULL;
    size_t body = 0;
    switch (data[0] % 10) {
    case 0: token_raw(d, n); break;
    case 1: token_signed(d, n); break;
    case 2: b64url(d, n); break;
    case 3: {
        pw_challenge_t c;
        (void)pw_decode_challenge(d, n, &c, &why);
        break;
    }
    case 4: {
        pw_hello_t h;
        if (pw_decode_hello(d, n, &h, &body, &why) == 0 &&
            (body > n || strnlen(h.cluster, sizeof(h.cluster)) == sizeof(h.cluster)))
            abort();
        break;
    }
    case 5: {
        pw_welcome_t w;
        if (pw_decode_welcome(d, n, &w, &body, &why) == 0 && body > n)
            abort();
        break;
    }
    case 6: {
        uint8_t code;
        char text[64];
        if (pw_decode_refuse(d, n, &code, text, sizeof(text)) == 0 &&
            strnlen(text, sizeof(text)) == sizeof(text))
            abort();
        break;
    }
    case 7: entries(d, n, true); break;
    case 8: entries(d, n, false); break;
    case 9: engine(d, n); break;
    }
    return 0;
}
