/* wsmsg.c - WebSocket message assembly, refcounted frames, the outbound queue and its writer */
#include "wsmsg.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>

#define KEEP_BUFFER 65536 /* buffers above this are freed after each message */
#define RND_POOL 256      /* random bytes read at a time for a client's frame masks */

/* ---- the assembler -------------------------------------------------------------------------- */

void gw_wsrx_init(gw_wsrx_t *a, size_t max, unsigned accept)
{
    memset(a, 0, sizeof(*a));
    a->max = max;
    a->accept = accept;
}

void gw_wsrx_free(gw_wsrx_t *a)
{
    free(a->data);
    a->data = NULL;
    a->len = a->cap = 0;
    a->in_msg = a->discard = false;
}

static void drop_buffer(gw_wsrx_t *a)
{
    free(a->data);
    a->data = NULL;
    a->cap = a->len = 0;
}

/* Room for `need` bytes: grows by doubling, never past max, so a connection holds at most max. */
static int reserve(gw_wsrx_t *a, size_t need)
{
    if (need <= a->cap)
        return 0;
    size_t nc = a->cap ? a->cap : 4096;
    while (nc < need)
        nc *= 2;
    if (nc > a->max)
        nc = a->max;
    uint8_t *p = realloc(a->data, nc);
    if (!p)
        return -1;
    a->data = p;
    a->cap = nc;
    return 0;
}

int gw_wsrx_push(gw_wsrx_t *a, const void *in, size_t len, bool first, bool final, bool binary,
                 size_t remaining)
{
    if (first || !a->in_msg) {
        a->in_msg = true;
        a->len = a->total = 0;
        a->binary = binary;
        a->discard = !(a->accept & (binary ? GW_WS_BINARY : GW_WS_TEXT));
        a->too_large = false;
    }
    a->total += len;
    if (!a->discard && (a->total > a->max || a->max - a->total < remaining)) {
        /* never buffered whole: dropped as it arrives */
        a->discard = a->too_large = true;
        drop_buffer(a);
    }
    if (!a->discard && len) {
        if (reserve(a, a->len + len)) {
            a->in_msg = false;
            a->len = 0;
            return GW_WSRX_ENOMEM;
        }
        memcpy(a->data + a->len, in, len);
        a->len += len;
    }
    if (!final || remaining)
        return GW_WSRX_MORE;
    a->in_msg = false;
    if (a->discard) {
        a->len = 0;
        return a->too_large ? GW_WSRX_TOO_LARGE : GW_WSRX_WRONG_KIND;
    }
    return GW_WSRX_MESSAGE;
}

int gw_wsrx_receive(gw_wsrx_t *a, struct lws *wsi, const void *in, size_t len)
{
    return gw_wsrx_push(a, in, len, lws_is_first_fragment(wsi) != 0,
                        lws_is_final_fragment(wsi) != 0, lws_frame_is_binary(wsi) != 0,
                        lws_remaining_packet_payload(wsi));
}

void gw_wsrx_done(gw_wsrx_t *a)
{
    a->len = 0;
    if (a->cap > KEEP_BUFFER)
        drop_buffer(a);
}

/* ---- frames --------------------------------------------------------------------------------- */

gw_frame_t *gw_frame_new(size_t len)
{
    gw_frame_t *f = calloc(1, sizeof(*f));
    if (!f)
        return NULL;
    crdt_buf_t b = {0};
    if (crdt_buf_reserve(&b, LWS_PRE + len + 1)) { /* libcrdt's heap, like adopted buffers */
        free(f);
        return NULL;
    }
    f->buf = b.data;
    f->refs = 1;
    f->len = len;
    return f;
}

gw_frame_t *gw_frame_copy(const void *p, size_t len)
{
    gw_frame_t *f = gw_frame_new(len);
    if (f && len)
        memcpy(gw_frame_data(f), p, len);
    return f;
}

int gw_frame_buf_start(crdt_buf_t *b, size_t hint)
{
    b->len = 0;
    if (crdt_buf_reserve(b, LWS_PRE + hint))
        return CRDT_ENOMEM;
    memset(b->data, 0, LWS_PRE);
    b->len = LWS_PRE;
    return 0;
}

gw_frame_t *gw_frame_adopt(crdt_buf_t *b)
{
    gw_frame_t *f = b->data && b->len >= LWS_PRE ? calloc(1, sizeof(*f)) : NULL;
    if (!f) {
        crdt_buf_free(b);
        return NULL;
    }
    f->refs = 1;
    f->buf = b->data;
    f->len = b->len - LWS_PRE;
    memset(b, 0, sizeof(*b));
    return f;
}

void gw_frame_unref(gw_frame_t *f)
{
    if (f && --f->refs == 0) {
        crdt_free(f->buf);
        free(f);
    }
}

/* ---- the queue ------------------------------------------------------------------------------ */

void gw_wsq_init(gw_wsq_t *q, size_t bound)
{
    memset(q, 0, sizeof(*q));
    q->bound = bound;
}

void gw_wsq_clear(gw_wsq_t *q)
{
    for (size_t i = 0; i < q->n; i++)
        gw_frame_unref(q->ring[(q->head + i) % q->cap].f);
    q->head = q->n = 0;
    q->bytes = 0;
}

void gw_wsq_free(gw_wsq_t *q)
{
    gw_wsq_clear(q);
    free(q->ring);
    q->ring = NULL;
    q->cap = 0;
}

int gw_wsq_push(gw_wsq_t *q, gw_frame_t *f, uint64_t tag, size_t extra, unsigned flags)
{
    if (!f)
        return CRDT_ENOMEM;
    size_t cost = f->len + extra;
    if (!(flags & GW_WSQ_PACED) && q->bound && q->n && q->bytes + cost > q->bound) {
        gw_frame_unref(f);
        return CRDT_ELIMIT;
    }
    if (q->n == q->cap) {
        size_t nc = q->cap ? q->cap * 2 : 16;
        gw_wsq_item_t *nr = malloc(nc * sizeof(*nr));
        if (!nr) {
            gw_frame_unref(f);
            return CRDT_ENOMEM;
        }
        for (size_t i = 0; i < q->n; i++)
            nr[i] = q->ring[(q->head + i) % q->cap];
        free(q->ring);
        q->ring = nr;
        q->cap = nc;
        q->head = 0;
    }
    q->ring[(q->head + q->n) % q->cap] = (gw_wsq_item_t){f, tag, cost};
    q->n++;
    q->bytes += cost;
    return 0;
}

bool gw_wsq_pop(gw_wsq_t *q, gw_wsq_item_t *out)
{
    if (!q->n)
        return false;
    *out = q->ring[q->head];
    q->head = (q->head + 1) % q->cap;
    q->n--;
    q->bytes -= out->cost;
    return true;
}

/* ---- writing -------------------------------------------------------------------------------- */

void gw_wswriter_init(gw_wswriter_t *w, unsigned kind, bool client)
{
    memset(w, 0, sizeof(*w));
    w->kind = kind;
    w->client = client;
}

/* Frees the private copy (a big message's is not kept between writes). */
static void drop_copy(gw_wswriter_t *w)
{
    free(w->copy);
    w->copy = NULL;
    w->cap = 0;
}

void gw_wswriter_free(gw_wswriter_t *w)
{
    drop_copy(w);
    free(w->rnd);
    w->rnd = NULL;
    w->rnd_at = 0;
}

/* lws_write of p[0..n) (LWS_PRE writable bytes before p), then the writer's bookkeeping */
static int write_out(gw_wswriter_t *w, struct lws *wsi, uint8_t *p, size_t n)
{
    int rc = lws_write(wsi, p, n, w->kind == GW_WS_BINARY ? LWS_WRITE_BINARY : LWS_WRITE_TEXT);
    /* the copy of a big message is not kept */
    if (w->cap > KEEP_BUFFER)
        drop_copy(w);
    if (rc < (int)n)
        return -1;
    w->messages++;
    w->bytes += n;
    return 0;
}

/* The writer's private copy of head[0..hlen) + p[0..n), with the headroom; NULL out of memory. */
static uint8_t *copy_out(gw_wswriter_t *w, const void *head, size_t hlen, const uint8_t *p,
                         size_t n)
{
    size_t total = hlen + n;
    if (total > w->cap) {
        uint8_t *nb = realloc(w->copy, LWS_PRE + total);
        if (!nb)
            return NULL;
        w->copy = nb;
        w->cap = total;
    }
    if (hlen)
        memcpy(w->copy + LWS_PRE, head, hlen);
    memcpy(w->copy + LWS_PRE + hlen, p, n);
    return w->copy + LWS_PRE;
}

int gw_ws_write(gw_wswriter_t *w, struct lws *wsi, const void *head, size_t hlen,
                const gw_frame_t *f, unsigned flags)
{
    if (!hlen)
        return gw_ws_write_bytes(w, wsi, gw_frame_data(f), f->len,
                                 f->refs == 1 && (flags & GW_WS_RELEASING));
    uint8_t *p = copy_out(w, head, hlen, gw_frame_data(f), f->len);
    return p ? write_out(w, wsi, p, hlen + f->len) : -1;
}

int gw_ws_write_bytes(gw_wswriter_t *w, struct lws *wsi, uint8_t *p, size_t n, bool sole)
{
    /* lws writes the frame header into the headroom (harmless to bytes shared between server
     * connections: each write puts its own there first) and, on a client connection, masks the
     * payload in place, which would scramble it for every other holder */
    if (w->client && !sole && !(p = copy_out(w, NULL, 0, p, n)))
        return -1;
    return write_out(w, wsi, p, n);
}

/* ---- batches -------------------------------------------------------------------------------- */

size_t gw_ws_frame_head(uint8_t *out, unsigned kind, size_t len)
{
    out[0] = 0x80 | (kind == GW_WS_BINARY ? 0x2 : 0x1); /* FIN, text or binary */
    if (len < 126) {
        out[1] = (uint8_t)len;
        return 2;
    }
    if (len < 65536) {
        out[1] = 126;
        out[2] = (uint8_t)(len >> 8);
        out[3] = (uint8_t)len;
        return 4;
    }
    out[1] = 127;
    for (int i = 0; i < 8; i++)
        out[2 + i] = (uint8_t)((uint64_t)len >> (56 - 8 * i));
    return 10;
}

void gw_ws_batch_begin(gw_wswriter_t *w)
{
    w->blen = 0;
    w->bcount = 0;
}

int gw_ws_batch_add(gw_wswriter_t *w, const void *head, size_t hlen, const gw_frame_t *f)
{
    return gw_ws_batch_add_as(w, w->kind, head, hlen, f);
}

/* Four fresh random bytes (a frame's masking key) into key; 0 or -1 when the kernel gave none. */
static int next_mask(gw_wswriter_t *w, uint8_t key[4])
{
    if (!w->rnd && !(w->rnd = malloc(RND_POOL)))
        return -1;
    if (!w->rnd_at) { /* empty (or used up): refill */
        size_t got = 0;
        while (got < RND_POOL) {
            ssize_t r = getrandom(w->rnd + got, RND_POOL - got, 0);
            if (r < 0 && errno == EINTR)
                continue;
            if (r <= 0)
                return -1;
            got += (size_t)r;
        }
        w->rnd_at = 0;
    }
    memcpy(key, w->rnd + w->rnd_at, 4); /* each key once: the pool is refilled when used up */
    w->rnd_at = (w->rnd_at + 4) % RND_POOL;
    return 0;
}

/* dst[i] = src[i] ^ key[i % 4], eight bytes at a time where it can */
static void mask_copy(uint8_t *dst, const uint8_t *src, size_t n, const uint8_t key[4])
{
    uint64_t k8;
    uint8_t kk[8];
    memcpy(kk, key, 4);
    memcpy(kk + 4, key, 4);
    memcpy(&k8, kk, 8);
    size_t i = 0;
    for (; i + 8 <= n; i += 8) {
        uint64_t v;
        memcpy(&v, src + i, 8);
        v ^= k8;
        memcpy(dst + i, &v, 8);
    }
    for (; i < n; i++)
        dst[i] = src[i] ^ key[i & 3];
}

int gw_ws_batch_add_as(gw_wswriter_t *w, unsigned kind, const void *head, size_t hlen,
                       const gw_frame_t *f)
{
    size_t n = hlen + f->len, need = w->blen + 14 + n;
    uint8_t key[4];
    if (w->client && next_mask(w, key))
        return -1;
    if (need > w->cap) {
        size_t nc = w->cap ? w->cap : 4096;
        while (nc < need)
            nc *= 2;
        uint8_t *nb = realloc(w->copy, LWS_PRE + nc);
        if (!nb)
            return -1;
        w->copy = nb;
        w->cap = nc;
    }
    uint8_t *p = w->copy + LWS_PRE + w->blen;
    size_t fh = gw_ws_frame_head(p, kind, n);
    if (w->client) {
        /* RFC 6455 5.2/5.3: the MASK bit, the key after the length, the payload XORed with it */
        p[1] |= 0x80;
        memcpy(p + fh, key, 4);
        fh += 4;
        if (hlen)
            mask_copy(p + fh, head, hlen, key);
        if (f->len) {
            /* the payload goes on where the head stopped in the key's cycle */
            uint8_t k2[4];
            for (int i = 0; i < 4; i++)
                k2[i] = key[(hlen + (size_t)i) & 3];
            mask_copy(p + fh + hlen, gw_frame_data(f), f->len, k2);
        }
    } else {
        if (hlen)
            memcpy(p + fh, head, hlen);
        if (f->len)
            memcpy(p + fh + hlen, gw_frame_data(f), f->len);
    }
    w->blen += fh + n;
    w->bcount++;
    w->bytes += n;
    return 0;
}

int gw_ws_batch_write(gw_wswriter_t *w, struct lws *wsi)
{
    size_t n = w->blen;
    unsigned count = w->bcount;
    gw_ws_batch_begin(w);
    if (!n)
        return 0;
    /* LWS_WRITE_RAW: the bytes are whole frames already; lws sends them as they are */
    int rc = lws_write(wsi, w->copy + LWS_PRE, n, LWS_WRITE_RAW);
    if (w->cap > KEEP_BUFFER)
        drop_copy(w);
    if (rc < (int)n)
        return -1;
    w->messages += count;
    return 0;
}

int gw_wsq_write_next(gw_wsq_t *q, gw_wswriter_t *w, struct lws *wsi)
{
    gw_wsq_item_t it;
    if (!gw_wsq_pop(q, &it))
        return 0;
    int rc = gw_ws_write(w, wsi, NULL, 0, it.f, GW_WS_RELEASING);
    gw_frame_unref(it.f);
    if (rc)
        return -1;
    if (q->n)
        lws_callback_on_writable(wsi);
    return 0;
}
