/* peer_wire.c - encoders, decoders and handshake proofs of the peer protocol crdt-peer.v1 */
#include <string.h>

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>

#include "peer_wire.h"
#include "replica.h"

/* ---- primitives ----------------------------------------------------------------------------- */

void pw_reader_init(pw_reader_t *r, const void *p, size_t n)
{
    r->p = p;
    r->end = r->p + n;
    r->bad = false;
}

bool pw_get_bytes(pw_reader_t *r, size_t n, const uint8_t **out)
{
    if (r->bad || pw_left(r) < n) {
        r->bad = true;
        return false;
    }
    *out = r->p;
    r->p += n;
    return true;
}

bool pw_get_u8(pw_reader_t *r, uint8_t *v)
{
    const uint8_t *p;
    if (!pw_get_bytes(r, 1, &p))
        return false;
    *v = p[0];
    return true;
}

bool pw_get_u32(pw_reader_t *r, uint32_t *v)
{
    const uint8_t *p;
    if (!pw_get_bytes(r, 4, &p))
        return false;
    *v = (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
    return true;
}

bool pw_get_u64(pw_reader_t *r, uint64_t *v)
{
    const uint8_t *p;
    if (!pw_get_bytes(r, 8, &p))
        return false;
    uint64_t x = 0;
    for (int i = 7; i >= 0; i--)
        x = x << 8 | p[i];
    *v = x;
    return true;
}

bool pw_get_varint(pw_reader_t *r, uint64_t *v)
{
    size_t pos = 0;
    if (r->bad || crdt_varint_get(r->p, pw_left(r), &pos, v)) {
        r->bad = true;
        return false;
    }
    r->p += pos;
    return true;
}

int pw_put_u8(crdt_buf_t *b, uint8_t v)
{
    return crdt_buf_append(b, &v, 1);
}

void pw_store_u32(uint8_t *p, uint32_t v)
{
    for (int i = 0; i < 4; i++)
        p[i] = (uint8_t)(v >> (8 * i));
}

void pw_store_u64(uint8_t *p, uint64_t v)
{
    for (int i = 0; i < 8; i++)
        p[i] = (uint8_t)(v >> (8 * i));
}

int pw_put_u32(crdt_buf_t *b, uint32_t v)
{
    uint8_t p[4];
    pw_store_u32(p, v);
    return crdt_buf_append(b, p, 4);
}

int pw_put_u64(crdt_buf_t *b, uint64_t v)
{
    uint8_t p[8];
    pw_store_u64(p, v);
    return crdt_buf_append(b, p, 8);
}

int pw_put_varint(crdt_buf_t *b, uint64_t v)
{
    return crdt_buf_put_varint(b, v);
}

/* ---- handshake ------------------------------------------------------------------------------ */

int pw_encode_challenge(crdt_buf_t *b, const pw_challenge_t *c)
{
    if (pw_put_u8(b, PW_CHALLENGE) || pw_put_u8(b, c->version) || pw_put_varint(b, c->node_id) ||
        pw_put_u64(b, c->epoch) || pw_put_varint(b, c->durable) || pw_put_u64(b, c->clock_ms) ||
        crdt_buf_append(b, c->nonce, PW_NONCE_LEN))
        return CRDT_ENOMEM;
    return 0;
}

int pw_encode_hello_body(crdt_buf_t *b, const pw_hello_t *h)
{
    size_t cl = strnlen(h->cluster, sizeof(h->cluster) - 1);
    if (pw_put_u8(b, PW_HELLO) || pw_put_u8(b, h->version) || pw_put_u8(b, (uint8_t)cl) ||
        crdt_buf_append(b, h->cluster, cl) || pw_put_varint(b, h->node_id) ||
        pw_put_u64(b, h->epoch) || pw_put_varint(b, h->durable) || pw_put_u64(b, h->clock_ms) ||
        crdt_buf_append(b, h->nonce, PW_NONCE_LEN) || pw_put_varint(b, h->resume))
        return CRDT_ENOMEM;
    return 0;
}

int pw_encode_welcome_body(crdt_buf_t *b, const pw_welcome_t *w)
{
    if (pw_put_u8(b, PW_WELCOME) || pw_put_varint(b, w->resume))
        return CRDT_ENOMEM;
    return 0;
}

int pw_encode_refuse(crdt_buf_t *b, uint8_t code, const char *text)
{
    size_t n = strlen(text);
    if (n > 200)
        n = 200;
    if (pw_put_u8(b, PW_REFUSE) || pw_put_u8(b, code) || pw_put_u8(b, (uint8_t)n) ||
        crdt_buf_append(b, text, n))
        return CRDT_ENOMEM;
    return 0;
}

int pw_decode_challenge(const uint8_t *m, size_t n, pw_challenge_t *c, const char **why)
{
    pw_reader_t r;
    uint8_t type;
    const uint8_t *nonce;
    pw_reader_init(&r, m, n);
    if (!pw_get_u8(&r, &type) || type != PW_CHALLENGE) {
        *why = "expected a challenge";
        return -1;
    }
    if (!pw_get_u8(&r, &c->version)) {
        *why = "truncated challenge";
        return -1;
    }
    if (c->version != PW_VERSION) {
        *why = "incompatible protocol version";
        return -2;
    }
    if (!pw_get_varint(&r, &c->node_id) || !pw_get_u64(&r, &c->epoch) ||
        !pw_get_varint(&r, &c->durable) || !pw_get_u64(&r, &c->clock_ms) ||
        !pw_get_bytes(&r, PW_NONCE_LEN, &nonce)) {
        *why = "truncated challenge";
        return -1;
    }
    if (pw_left(&r)) {
        *why = "trailing bytes after the challenge";
        return -1;
    }
    memcpy(c->nonce, nonce, PW_NONCE_LEN);
    return 0;
}

int pw_decode_hello(const uint8_t *m, size_t n, pw_hello_t *h, size_t *body_len, const char **why)
{
    pw_reader_t r;
    uint8_t type, cl;
    const uint8_t *p;
    memset(h, 0, sizeof(*h));
    pw_reader_init(&r, m, n);
    if (!pw_get_u8(&r, &type) || type != PW_HELLO) {
        *why = "expected a hello";
        return -1;
    }
    if (!pw_get_u8(&r, &h->version)) {
        *why = "truncated hello";
        return -1;
    }
    if (h->version != PW_VERSION) {
        *why = "incompatible protocol version";
        return -2;
    }
    if (!pw_get_u8(&r, &cl) || cl >= sizeof(h->cluster) || !pw_get_bytes(&r, cl, &p)) {
        *why = "truncated hello or cluster name too long";
        return -1;
    }
    memcpy(h->cluster, p, cl);
    h->cluster[cl] = '\0';
    if (memchr(h->cluster, '\0', cl)) {
        *why = "NUL byte in the cluster name";
        return -1;
    }
    const uint8_t *nonce;
    if (!pw_get_varint(&r, &h->node_id) || !pw_get_u64(&r, &h->epoch) ||
        !pw_get_varint(&r, &h->durable) || !pw_get_u64(&r, &h->clock_ms) ||
        !pw_get_bytes(&r, PW_NONCE_LEN, &nonce) || !pw_get_varint(&r, &h->resume)) {
        *why = "truncated hello";
        return -1;
    }
    memcpy(h->nonce, nonce, PW_NONCE_LEN);
    *body_len = n - pw_left(&r);
    if (!pw_get_bytes(&r, PW_PROOF_LEN, &p)) {
        *why = "truncated hello (no proof)";
        return -1;
    }
    memcpy(h->proof, p, PW_PROOF_LEN);
    if (pw_left(&r)) {
        *why = "trailing bytes after the hello";
        return -1;
    }
    if (h->node_id == 0 || h->node_id > CRDT_REPLICA_MAX) {
        *why = "node id out of range";
        return -1;
    }
    return 0;
}

int pw_decode_welcome(const uint8_t *m, size_t n, pw_welcome_t *w, size_t *body_len,
                      const char **why)
{
    pw_reader_t r;
    uint8_t type;
    const uint8_t *p;
    pw_reader_init(&r, m, n);
    if (!pw_get_u8(&r, &type) || type != PW_WELCOME) {
        *why = "expected a welcome";
        return -1;
    }
    if (!pw_get_varint(&r, &w->resume)) {
        *why = "truncated welcome";
        return -1;
    }
    *body_len = n - pw_left(&r);
    if (!pw_get_bytes(&r, PW_PROOF_LEN, &p) || pw_left(&r)) {
        *why = "malformed welcome";
        return -1;
    }
    memcpy(w->proof, p, PW_PROOF_LEN);
    return 0;
}

int pw_decode_refuse(const uint8_t *m, size_t n, uint8_t *code, char *text, size_t cap)
{
    pw_reader_t r;
    uint8_t type, len;
    const uint8_t *p;
    pw_reader_init(&r, m, n);
    if (!pw_get_u8(&r, &type) || type != PW_REFUSE || !pw_get_u8(&r, code) ||
        !pw_get_u8(&r, &len) || !pw_get_bytes(&r, len, &p))
        return -1;
    size_t k = len < cap - 1 ? len : cap - 1;
    for (size_t i = 0; i < k; i++)
        text[i] = p[i] >= 0x20 && p[i] < 0x7f ? (char)p[i] : '?';
    text[k] = '\0';
    return 0;
}

const char *pw_refuse_text(uint8_t code)
{
    switch (code) {
    case PW_R_PROTOCOL: return "protocol error";
    case PW_R_VERSION: return "incompatible protocol version";
    case PW_R_CLUSTER: return "cluster name mismatch";
    case PW_R_PROOF: return "wrong proof of the cluster secret";
    case PW_R_SELF: return "same node id";
    case PW_R_BUSY: return "too many links";
    case PW_R_CLOCK: return "clocks differ by more than the drift bound";
    default: return "unknown reason";
    }
}

void pw_proof(const uint8_t *secret, size_t slen, bool server, const crdt_buf_t *transcript,
              uint8_t out[PW_PROOF_LEN])
{
    static const char lc[] = "crdt-peer.v1 client", ls[] = "crdt-peer.v1 server";
    crdt_buf_t m = {0};
    const char *label = server ? ls : lc;
    if (crdt_buf_append(&m, label, strlen(label)) ||
        crdt_buf_append(&m, transcript->data, transcript->len)) {
        memset(out, 0, PW_PROOF_LEN); /* OOM: matches no real proof */
        crdt_buf_free(&m);
        return;
    }
    unsigned int n = PW_PROOF_LEN;
    static const uint8_t empty[1];
    if (!HMAC(EVP_sha256(), slen ? secret : empty, (int)slen, m.len ? m.data : empty, m.len, out,
              &n))
        memset(out, 0, PW_PROOF_LEN); /* OOM inside OpenSSL: matches no real proof */
    crdt_buf_free(&m);
}

bool pw_proof_equal(const uint8_t a[PW_PROOF_LEN], const uint8_t b[PW_PROOF_LEN])
{
    return CRYPTO_memcmp(a, b, PW_PROOF_LEN) == 0;
}

/* ---- data ----------------------------------------------------------------------------------- */

bool pw_get_entry(pw_reader_t *r, bool with_seq, pw_entry_t *e, const char **why)
{
    uint64_t klen, olen;
    e->seq = 0;
    if (with_seq && !pw_get_varint(r, &e->seq)) {
        *why = "truncated entry";
        return false;
    }
    if (!pw_get_varint(r, &klen)) {
        *why = "truncated entry";
        return false;
    }
    if (klen == 0 || klen > PW_MAX_KEY) {
        *why = "key length out of range";
        return false;
    }
    if (!pw_get_bytes(r, (size_t)klen, &e->key)) {
        *why = "truncated key";
        return false;
    }
    e->klen = (size_t)klen;
    if (!pw_get_varint(r, &olen) || olen == 0 || olen > pw_left(r)) {
        *why = "truncated or oversized object";
        r->bad = true;
        return false;
    }
    pw_get_bytes(r, (size_t)olen, &e->obj);
    e->olen = (size_t)olen;
    return true;
}

int pw_put_entry(crdt_buf_t *b, bool with_seq, uint64_t seq, const void *key, size_t klen,
                 const void *obj, size_t olen)
{
    if ((with_seq && pw_put_varint(b, seq)) || pw_put_varint(b, klen) ||
        crdt_buf_append(b, key, klen) || pw_put_varint(b, olen) || crdt_buf_append(b, obj, olen))
        return CRDT_ENOMEM;
    return 0;
}
