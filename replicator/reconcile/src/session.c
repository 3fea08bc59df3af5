/* session.c - range-based set reconciliation with recoverable range sketches (docs/replication.md)
 *
 * Both sides walk the same tree of id ranges ("cells") on the circle of ids mod 2^61-1, rotated by
 * a per-session salt. A message holds one action for every cell the receiver opened in its previous
 * message, in the same order, so cells never need their bounds on the wire:
 *   EQUAL       the sender's sketch of the cell equals the receiver's: closed;
 *   DECODED     the difference of the two sketches is one item: its id is sent, closed;
 *   SPLIT m D   the sender splits the cell into m equal parts (and D more levels of its first part,
 *               the density probe) and sends its sketch of every part; those parts are now open.
 * A cell holding several differences is split with a fan-out chosen from an estimate of the number
 * of differences, so most parts hold zero or one difference and close in the next message. */
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#include "rsx_private.h"

enum { MSG_FIRST = 1, MSG_NEXT = 2 };
enum {
    ACT_EQUAL = 0,
    ACT_SENDER_ONLY = 1,
    ACT_RECEIVER_ONLY = 2,
    ACT_BOTH = 3,
    ACT_SPLIT = 4,
    ACT_POSTPONE = 5,
};
#define RSX_MAX_DEPTH 16
#define EST_MAX_LEVELS 28 /* level L has cells of width P / 4^L: L <= 30 keeps them >= 1 */
#define EST_CELLS 24      /* cells per estimator level (fewer where 4^L is smaller) */

typedef struct rsx_cell {
    uint64_t lo, width; /* ids lo, lo+1, ... lo+width-1, mod P */
} rsx_cell_t;

/* An open cell sent by the peer, with the peer's sketch (c truncated to the cell's check bytes). */
typedef struct rsx_leaf {
    rsx_cell_t cell;
    uint64_t a, b, c;
} rsx_leaf_t;

/* What we answer for one leaf. */
typedef struct rsx_plan {
    uint8_t act;
    uint32_t m, depth; /* ACT_SPLIT */
    uint64_t off;      /* ACT_*ONLY / ACT_BOTH */
} rsx_plan_t;

struct crdt_rsx_session {
    const crdt_rsx_index_t *ix;
    crdt_rsx_config_t cfg;
    bool initiator, started, done;
    int failed;
    crdt_error_t ferr;
    uint64_t salt;
    uint64_t seq_in, seq_out; /* next sequence number expected / to send */
    double d_est;             /* estimated differing ids, 0 = unknown */
    unsigned est_levels;      /* the initiator's estimator block, as received */
    uint64_t peer_count;      /* the initiator's number of items */
    uint8_t est[EST_MAX_LEVELS * EST_CELLS];

    rsx_cell_t *pend; /* cells we opened, awaiting the peer's actions */
    size_t npend, cap_pend;
    rsx_cell_t *backlog; /* postponed cells, FIFO from bl_head; identical on both sides */
    size_t bl_head, bl_len, bl_cap;
    rsx_leaf_t *leaves; /* scratch: cells the peer opened in the message being handled */
    size_t nleaves, cap_leaves;
    rsx_plan_t *plans;
    size_t cap_plans;
    crdt_rsx_diff_t *diffs;
    size_t ndiffs, cap_diffs;
    crdt_rsx_item_t *scr; /* scratch for sketch_bounds */
    size_t cap_scr;
    uint64_t *bnd;
    size_t cap_bnd;
    size_t *at;
    size_t cap_at;
    crdt_rsx_sketch_t *sks, *ours;
    size_t cap_sks, cap_ours;
    crdt_rsx_stats_t st;
};

/* ---- small helpers ------------------------------------------------------------------------- */

static int grow(void **p, size_t *cap, size_t need, size_t elem)
{
    if (need <= *cap)
        return 0;
    size_t c = *cap ? *cap : 64;
    while (c < need)
        c *= 2;
    void *q = realloc(*p, c * elem);
    if (!q)
        return CRDT_ENOMEM;
    *p = q;
    *cap = c;
    return 0;
}

static unsigned bitlen(uint64_t v)
{
    return v ? 64u - (unsigned)__builtin_clzll(v) : 0u;
}

/* Bytes of a DECODED offset in a cell of this width: enough for width-1. */
static unsigned off_bytes(uint64_t width)
{
    return (bitlen(width - 1) + 7) / 8;
}

/* Bytes of the check sum sent for a cell: a false single-item decode needs the recovered id to land
 * inside the cell (61 - bitlen(width) bits of luck) and to match the check; together at least 40
 * bits, and never fewer than 16 bits of check. */
static unsigned check_bytes(uint64_t width)
{
    int range_bits = 61 - (int)bitlen(width);
    int bits = 40 - (range_bits > 0 ? range_bits : 0);
    if (bits < 16)
        bits = 16;
    return (unsigned)(bits + 7) / 8;
}

static uint64_t low_bytes(uint64_t v, unsigned n)
{
    return n >= 8 ? v : v & ((UINT64_C(1) << (8 * n)) - 1);
}

/* Part i of m of a cell (requires m <= width, so every part is non-empty). */
static rsx_cell_t cell_child(rsx_cell_t c, uint64_t m, uint64_t i)
{
    uint64_t s = (uint64_t)((unsigned __int128)c.width * i / m);
    uint64_t e = (uint64_t)((unsigned __int128)c.width * (i + 1) / m);
    return (rsx_cell_t){(c.lo + s) % RSX_P, e - s};
}

/* The sketch of our ids below x, where x may run past P (the circle unrolled once). */
static void prefix_unrolled(const crdt_rsx_index_t *ix, uint64_t x, crdt_rsx_sketch_t *s)
{
    if (x <= RSX_P) {
        crdt_rsx_index_range(ix, 0, x, s);
    } else {
        crdt_rsx_sketch_t t;
        crdt_rsx_index_total(ix, s);
        crdt_rsx_index_range(ix, 0, x - RSX_P, &t);
        rsx_sk_add(s, &t);
    }
}

static void cell_sketch(const crdt_rsx_index_t *ix, rsx_cell_t c, crdt_rsx_sketch_t *s)
{
    if (c.width >= RSX_P) {
        crdt_rsx_index_total(ix, s);
        return;
    }
    crdt_rsx_sketch_t a;
    prefix_unrolled(ix, c.lo + c.width, s);
    prefix_unrolled(ix, c.lo, &a);
    rsx_sk_sub(s, &a);
}

/* Number of leaves of SPLIT(m, depth) and whether the chain of first parts is wide enough. */
static bool split_shape(rsx_cell_t c, uint64_t m, uint64_t depth, uint64_t *nleaves)
{
    if (m < 1 || depth > RSX_MAX_DEPTH || (m == 1 && depth))
        return false;
    uint64_t w = c.width;
    for (uint64_t l = 0; l <= depth; l++) {
        if (w < m)
            return false;
        w = w / m; /* width of part 0 is floor(w/m) */
    }
    *nleaves = depth * (m - 1) + m;
    return true;
}

/* Calls fn for every leaf of SPLIT(m, depth) in wire order: parts 1..m-1 of each probe level, then
 * all m parts of the deepest first part. */
#define FOR_EACH_LEAF(cell0, m, depth, leafvar, body)                                              \
    do {                                                                                           \
        rsx_cell_t node_ = (cell0);                                                                \
        for (uint64_t lvl_ = 0; lvl_ <= (depth); lvl_++) {                                         \
            bool last_ = lvl_ == (depth);                                                          \
            for (uint64_t i_ = last_ ? 0 : 1; i_ < (m); i_++) {                                    \
                rsx_cell_t leafvar = cell_child(node_, (m), i_);                                   \
                body;                                                                              \
            }                                                                                      \
            node_ = cell_child(node_, (m), 0);                                                     \
        }                                                                                          \
    } while (0)

/* ---- configuration and lifetime ------------------------------------------------------------ */

void crdt_rsx_config_init(crdt_rsx_config_t *cfg)
{
    memset(cfg, 0, sizeof *cfg);
    cfg->max_msg = 64u << 20;
    cfg->max_cells = 1u << 20;
    cfg->max_diffs = 16u << 20;
    cfg->probe_fanout = 16;
    cfg->probe_depth = 5;
    cfg->estimator_levels = 15;
}

crdt_rsx_session_t *crdt_rsx_session_new(const crdt_rsx_index_t *ix, bool initiator,
                                         const crdt_rsx_config_t *cfg)
{
    if (!ix)
        return NULL;
    crdt_rsx_session_t *s = calloc(1, sizeof *s);
    if (!s)
        return NULL;
    s->ix = ix;
    if (cfg)
        s->cfg = *cfg;
    else
        crdt_rsx_config_init(&s->cfg);
    if (s->cfg.max_msg < 256)
        s->cfg.max_msg = 256;
    if (s->cfg.max_cells < 64)
        s->cfg.max_cells = 64;
    if (s->cfg.probe_fanout < 2)
        s->cfg.probe_fanout = 2;
    if (s->cfg.probe_depth > RSX_MAX_DEPTH)
        s->cfg.probe_depth = RSX_MAX_DEPTH;
    if (s->cfg.estimator_levels > EST_MAX_LEVELS)
        s->cfg.estimator_levels = EST_MAX_LEVELS;
    s->initiator = initiator;
    s->seq_out = initiator ? 1 : 2;
    s->seq_in = initiator ? 2 : 1;
    return s;
}

void crdt_rsx_session_free(crdt_rsx_session_t *s)
{
    if (!s)
        return;
    free(s->pend);
    free(s->backlog);
    free(s->leaves);
    free(s->plans);
    free(s->diffs);
    free(s->scr);
    free(s->bnd);
    free(s->at);
    free(s->sks);
    free(s->ours);
    free(s);
}

size_t crdt_rsx_session_diffs(const crdt_rsx_session_t *s, const crdt_rsx_diff_t **out)
{
    *out = s->diffs;
    return s->ndiffs;
}

void crdt_rsx_session_stats(const crdt_rsx_session_t *s, crdt_rsx_stats_t *st)
{
    *st = s->st;
    st->estimated_diffs = (uint64_t)s->d_est;
}

static int add_diff(crdt_rsx_session_t *s, uint64_t id, unsigned flags)
{
    if (!flags)
        return 0;
    if (s->ndiffs >= s->cfg.max_diffs)
        return CRDT_ELIMIT;
    if (grow((void **)&s->diffs, &s->cap_diffs, s->ndiffs + 1, sizeof *s->diffs))
        return CRDT_ENOMEM;
    s->diffs[s->ndiffs++] = (crdt_rsx_diff_t){id, flags};
    return 0;
}

static int backlog_push(crdt_rsx_session_t *s, rsx_cell_t c)
{
    if (s->bl_len - s->bl_head >= s->cfg.max_diffs) /* every postponed cell holds a difference */
        return CRDT_ELIMIT;
    if (s->bl_head && s->bl_head >= s->bl_len / 2) {
        memmove(s->backlog, s->backlog + s->bl_head, (s->bl_len - s->bl_head) * sizeof *s->backlog);
        s->bl_len -= s->bl_head;
        s->bl_head = 0;
    }
    if (grow((void **)&s->backlog, &s->bl_cap, s->bl_len + 1, sizeof *s->backlog))
        return CRDT_ENOMEM;
    s->backlog[s->bl_len++] = c;
    return 0;
}

/* ---- writing ------------------------------------------------------------------------------- */

typedef struct wr {
    crdt_buf_t *b;
    int err;
} wr_t;

static void wr_raw(wr_t *w, const void *p, size_t n)
{
    if (!w->err && crdt_buf_append(w->b, p, n))
        w->err = CRDT_ENOMEM;
}
static void wr_u8(wr_t *w, uint8_t v)
{
    wr_raw(w, &v, 1);
}
static void wr_varint(wr_t *w, uint64_t v)
{
    uint8_t t[CRDT_VARINT_MAX];
    wr_raw(w, t, crdt_varint_put(t, v));
}
static void wr_le(wr_t *w, uint64_t v, unsigned n)
{
    uint8_t t[8];
    for (unsigned i = 0; i < n; i++)
        t[i] = (uint8_t)(v >> (8 * i));
    wr_raw(w, t, n);
}
static void wr_sketch(wr_t *w, const crdt_rsx_sketch_t *sk, uint64_t width)
{
    wr_le(w, sk->a, 8);
    wr_le(w, sk->b, 8);
    wr_le(w, sk->c, check_bytes(width));
}

static void wr_header(crdt_rsx_session_t *s, wr_t *w, int kind)
{
    wr_u8(w, CRDT_RSX_PROTOCOL_VERSION);
    wr_u8(w, (uint8_t)kind);
    wr_varint(w, s->seq_out);
    if (kind == MSG_FIRST) {
        wr_le(w, s->salt, 8);
        wr_varint(w, crdt_rsx_index_count(s->ix));
    }
    wr_varint(w, (uint64_t)s->d_est);
}

/* ---- reading ------------------------------------------------------------------------------- */

typedef struct rd {
    const uint8_t *p;
    size_t len, pos;
    crdt_error_t *err;
} rd_t;

static int rd_fail(rd_t *r, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static int rd_fail(rd_t *r, const char *fmt, ...)
{
    r->err->code = CRDT_EDECODE;
    r->err->offset = r->pos;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(r->err->text, sizeof r->err->text, fmt, ap);
    va_end(ap);
    return CRDT_EDECODE;
}

static int rd_u8(rd_t *r, uint8_t *v)
{
    *v = 0;
    if (r->pos >= r->len)
        return rd_fail(r, "reconcile message truncated");
    *v = r->p[r->pos++];
    return 0;
}

static int rd_varint(rd_t *r, uint64_t *v)
{
    *v = 0;
    switch (crdt_varint_scan(r->p, r->len, &r->pos, v)) {
    case 0: return 0;
    case CRDT_VARINT_TRUNCATED: return rd_fail(r, "reconcile message truncated in a varint");
    case CRDT_VARINT_TOO_LONG: return rd_fail(r, "varint overflows 64 bits");
    default: return rd_fail(r, "non-minimal varint");
    }
}

static int rd_le(rd_t *r, unsigned n, uint64_t *v)
{
    *v = 0;
    if (r->len - r->pos < n)
        return rd_fail(r, "reconcile message truncated: %u bytes needed, %zu left", n,
                       r->len - r->pos);
    uint64_t x = 0;
    for (unsigned i = n; i-- > 0;)
        x = x << 8 | r->p[r->pos + i];
    r->pos += n;
    *v = x;
    return 0;
}

/* ---- the difference estimator of the first message ---------------------------------------- *
 * Level L (1 ..) holds min(4^L, EST_CELLS) consecutive cells of width P / 4^L from the salt, each
 * as one byte of a salted hash of its sketch. The responder compares them with its own: which
 * cells differ at which scale estimates the number of differences d (a byte matches by chance
 * 1 time in 256, which only nudges the estimate), so the first split can aim at about one
 * difference per part, one message earlier than a probe would allow. */
static unsigned est_cells(unsigned level)
{
    return level >= 3 ? EST_CELLS : 1u << (2 * level);
}
static uint64_t est_width(unsigned level)
{
    return RSX_P >> (2 * level);
}

static void est_compute(const crdt_rsx_session_t *s, unsigned levels, uint8_t *out)
{
    for (unsigned l = 1; l <= levels; l++) {
        uint64_t w = est_width(l);
        crdt_rsx_sketch_t prev, cur;
        prefix_unrolled(s->ix, s->salt, &prev);
        for (unsigned i = 0; i < est_cells(l); i++) {
            prefix_unrolled(s->ix, s->salt + (i + 1) * w, &cur);
            crdt_rsx_sketch_t sk = cur;
            rsx_sk_sub(&sk, &prev);
            prev = cur;
            uint64_t h = rsx_mix(sk.a ^ rsx_mix(sk.b + rsx_mix(sk.c ^ s->salt ^ l)));
            *out++ = (uint8_t)h;
        }
    }
}

static size_t est_total_cells(unsigned levels)
{
    size_t n = 0;
    for (unsigned l = 1; l <= levels; l++)
        n += est_cells(l);
    return n;
}

/* ---- density estimate ---------------------------------------------------------------------- */

/* Maximum-likelihood number of differences d over the whole circle, from cells of relative width
 * w that did (y=1) or did not differ, assuming differences land uniformly (ids are hashes): a cell
 * differs with probability q = 1 - exp(-d w), and is seen equal by mistake with probability eps
 * (a one-byte digest matches by chance). The likelihood need not be concave with eps > 0, so the
 * maximum is searched on a grid of log d and then refined around the best point. */
static double loglik(const double *wv, const uint8_t *differs, size_t n, double eps, double d)
{
    double ll = 0;
    for (size_t i = 0; i < n; i++) {
        double q = -expm1(-d * wv[i]);
        double p1 = q * (1 - eps);
        ll += log(differs[i] ? (p1 > 1e-300 ? p1 : 1e-300) : 1 - p1);
    }
    return ll;
}

static double estimate_diffs(const double *wv, const uint8_t *differs, size_t n, double eps)
{
    size_t ndiff = 0;
    double wmin = 1.0;
    for (size_t i = 0; i < n; i++) {
        ndiff += differs[i];
        if (wv[i] < wmin)
            wmin = wv[i];
    }
    if (!ndiff)
        return 1;
    double lo = 0, hi = log(16 / wmin), best = lo, bestll = -INFINITY;
    const int steps = 160;
    for (int k = 0; k <= steps; k++) {
        double x = lo + (hi - lo) * k / steps, ll = loglik(wv, differs, n, eps, exp(x));
        if (ll > bestll)
            bestll = ll, best = x;
    }
    double step = (hi - lo) / steps;
    for (int it = 0; it < 30; it++) { /* ternary search in the bracketing grid cell */
        double a = best - step, b = best + step;
        double x1 = a + (b - a) / 3, x2 = b - (b - a) / 3;
        if (loglik(wv, differs, n, eps, exp(x1)) > loglik(wv, differs, n, eps, exp(x2)))
            best = (a + x2) / 2;
        else
            best = (x1 + b) / 2;
        step *= 2.0 / 3;
    }
    return exp(best);
}

/* Fan-out for a cell with two or more differences: about the expected number of them, so most
 * parts hold zero or one; widened late in the session to bound the number of round trips. */
static uint64_t choose_fanout(const crdt_rsx_session_t *s, uint64_t width)
{
    double lam = s->d_est * (double)width / (double)RSX_P, k = 2;
    if (lam > 1e-3) {
        double e = exp(-lam);
        double den = 1 - e - lam * e;
        if (den > 1e-12)
            k = lam * (1 - e) / den;
        if (k < 2)
            k = 2;
    }
    /* Measured (bench_reconcile, N = 1M, d = 1e3..1e5): this schedule keeps both the bytes
     * (58-63 per difference) and the round trips (5) inside the targets. */
    static const double schedule[] = {1, 1, 1, 1, 1.5, 2, 4, 8}; /* by message number, from 0 */
    double mu = s->seq_out < sizeof schedule / sizeof *schedule ? schedule[s->seq_out] : 16;
    /* With few differences the bytes hardly matter (a few KiB at most) but round trips do. */
    if (s->d_est <= 64 && mu < 4)
        mu = 4;
    double m = floor(k * mu + 0.5);
    if (m > (double)s->cfg.max_cells)
        m = (double)s->cfg.max_cells;
    if (m > (double)width)
        m = (double)width;
    return m < 2 ? (width < 2 ? 1 : 2) : (uint64_t)m;
}

/* ---- the protocol -------------------------------------------------------------------------- */

static int fail(crdt_rsx_session_t *s, crdt_error_t *err, int code, const char *text)
{
    if (!s->failed) {
        s->failed = code;
        if (err && err->code == code && code == CRDT_EDECODE) {
            s->ferr = *err;
        } else {
            s->ferr.code = code;
            s->ferr.offset = 0;
            snprintf(s->ferr.text, sizeof s->ferr.text, "%s", text);
        }
    }
    if (err)
        *err = s->ferr;
    return s->failed;
}

/* Our sketches of the k consecutive cells between unrolled bounds b[0] <= ... <= b[k], with
 * b[k] - b[0] <= P. When the cells hold few items, one listing bucketed by bound beats a
 * root-to-leaf walk per bound (cells near the leaves of the search hold a handful of items). */
static bool sketch_bounds(crdt_rsx_session_t *s, const uint64_t *b, size_t k,
                          crdt_rsx_sketch_t *out, size_t *at)
{
    crdt_rsx_sketch_t lo, hi, cur;
    prefix_unrolled(s->ix, b[0], &lo);
    prefix_unrolled(s->ix, b[k], &hi);
    uint64_t n = hi.count - lo.count;
    if (n <= 64 * (uint64_t)k + 64 && n <= (UINT64_C(1) << 22) &&
        !grow((void **)&s->scr, &s->cap_scr, (size_t)n + 1, sizeof *s->scr)) {
        size_t got = 0;
        if (b[0] < RSX_P) /* the part on the first turn of the circle */
            got = rsx_index_list_raw(s->ix, b[0], b[k] < RSX_P ? b[k] : RSX_P, s->scr, (size_t)n);
        size_t first = got < n ? got : (size_t)n;
        if (b[k] > RSX_P) /* the part past P, ids shifted by P in unrolled coordinates */
            rsx_index_list_raw(s->ix, b[0] > RSX_P ? b[0] - RSX_P : 0, b[k] - RSX_P, s->scr + first,
                               (size_t)n - first);
        memset(out, 0, k * sizeof *out);
        size_t j = 0;
        if (at)
            at[0] = 0;
        for (size_t i = 0; i < n; i++) {
            uint64_t pos = s->scr[i].id + (i >= first ? RSX_P : 0);
            while (j + 1 < k && pos >= b[j + 1]) {
                if (at)
                    at[j + 1] = i;
                j++;
            }
            rsx_sk_add_item(&out[j], s->scr[i].id, s->scr[i].fp);
        }
        if (at) {
            while (j + 1 < k)
                at[++j] = (size_t)n;
            at[k] = (size_t)n;
        }
        return true;
    }
    crdt_rsx_sketch_t prev = lo;
    for (size_t i = 0; i < k; i++) {
        if (i + 1 == k)
            cur = hi;
        else
            prefix_unrolled(s->ix, b[i + 1], &cur);
        out[i] = cur;
        rsx_sk_sub(&out[i], &prev);
        prev = cur;
    }
    return false;
}

/* Writes our sketches of the leaves of SPLIT(m, depth) of cell c and records them as open. The
 * parts of one level are consecutive on the unrolled circle, so each costs one prefix sketch. */
static void write_split(crdt_rsx_session_t *s, wr_t *w, rsx_cell_t c, uint64_t m, uint64_t depth,
                        rsx_cell_t *pend, size_t *np)
{
    wr_u8(w, ACT_SPLIT);
    wr_varint(w, m);
    wr_varint(w, depth);
    if (grow((void **)&s->bnd, &s->cap_bnd, m + 1, sizeof *s->bnd) ||
        grow((void **)&s->sks, &s->cap_sks, m, sizeof *s->sks)) {
        w->err = CRDT_ENOMEM;
        return;
    }
    rsx_cell_t node = c;
    for (uint64_t lvl = 0; lvl <= depth; lvl++) {
        uint64_t i0 = lvl == depth ? 0 : 1;
        for (uint64_t i = i0; i <= m; i++)
            s->bnd[i - i0] = node.lo + (uint64_t)((unsigned __int128)node.width * i / m);
        sketch_bounds(s, s->bnd, m - i0, s->sks, NULL);
        for (uint64_t i = i0; i < m; i++) {
            rsx_cell_t leaf = cell_child(node, m, i);
            wr_sketch(w, &s->sks[i - i0], leaf.width);
            pend[(*np)++] = leaf;
        }
        node = cell_child(node, m, 0);
    }
    s->st.cells_sent += depth * (m - 1) + m;
}

int crdt_rsx_initiate(crdt_rsx_session_t *s, crdt_buf_t *out)
{
    if (!s->initiator || s->started || s->failed)
        return CRDT_EINVAL;
    uint64_t seed = s->cfg.seed;
    if (!seed) {
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        seed = (uint64_t)ts.tv_nsec ^ (uint64_t)ts.tv_sec << 30 ^ (uint64_t)(uintptr_t)s;
    }
    s->salt = rsx_red(rsx_mix(seed));
    if (grow((void **)&s->pend, &s->cap_pend, 1, sizeof *s->pend))
        return CRDT_ENOMEM;
    size_t start = out->len;
    wr_t w = {out, 0};
    wr_header(s, &w, MSG_FIRST);
    rsx_cell_t root = {s->salt, RSX_P};
    s->npend = 0;
    write_split(s, &w, root, 1, 0, s->pend, &s->npend);
    wr_varint(&w, 0); /* nothing postponed yet */
    /* Scales down to about 1/64 of a difference per cell for d up to 16 n: deeper levels would
     * only say "equal" (the item counts bound d from below when the peer holds far more). */
    unsigned levels = 3;
    while (levels < s->cfg.estimator_levels &&
           (UINT64_C(1) << (2 * levels)) < 64 * 16 * ((uint64_t)crdt_rsx_index_count(s->ix) + 1))
        levels++;
    if (levels > s->cfg.estimator_levels)
        levels = s->cfg.estimator_levels;
    wr_varint(&w, levels);
    uint8_t est[EST_MAX_LEVELS * EST_CELLS];
    est_compute(s, levels, est);
    wr_raw(&w, est, est_total_cells(levels));
    if (w.err) {
        out->len = start;
        return w.err;
    }
    s->started = true;
    s->seq_out += 2;
    s->st.msgs_sent++;
    s->st.bytes_sent += out->len - start;
    return 0;
}

/* Parses the peer's message: the actions on our open cells (recording announced differences) and
 * the leaves the peer opened, into s->leaves. */
static int parse_message(crdt_rsx_session_t *s, rd_t *r, uint64_t *peer_est)
{
    uint8_t ver, kind;
    uint64_t seq, v;
    if (rd_u8(r, &ver) || rd_u8(r, &kind))
        return CRDT_EDECODE;
    if (ver != CRDT_RSX_PROTOCOL_VERSION)
        return rd_fail(r, "reconcile protocol version %u not supported (this node speaks %d)", ver,
                       CRDT_RSX_PROTOCOL_VERSION);
    bool first = !s->initiator && !s->started;
    if (kind != (first ? MSG_FIRST : MSG_NEXT))
        return rd_fail(r, "unexpected reconcile message kind %u", kind);
    if (rd_varint(r, &seq))
        return CRDT_EDECODE;
    if (seq != s->seq_in)
        return rd_fail(r, "reconcile message %llu out of turn (expected %llu)",
                       (unsigned long long)seq, (unsigned long long)s->seq_in);
    if (first) {
        if (rd_le(r, 8, &v))
            return CRDT_EDECODE;
        if (v >= RSX_P)
            return rd_fail(r, "session salt out of range");
        s->salt = v;
        if (rd_varint(r, &s->peer_count))
            return CRDT_EDECODE;
        if (grow((void **)&s->pend, &s->cap_pend, 1, sizeof *s->pend))
            return CRDT_ENOMEM;
        s->pend[0] = (rsx_cell_t){s->salt, RSX_P};
        s->npend = 1;
    }
    if (rd_varint(r, peer_est))
        return CRDT_EDECODE;
    if (*peer_est > ((uint64_t)1 << 62))
        return rd_fail(r, "difference estimate out of range");
    s->nleaves = 0;
    for (size_t i = 0; i < s->npend; i++) {
        rsx_cell_t c = s->pend[i];
        uint8_t act;
        if (rd_u8(r, &act))
            return CRDT_EDECODE;
        if (first && act != ACT_SPLIT)
            return rd_fail(r, "first message must send the keyspace sketch");
        if (act == ACT_EQUAL)
            continue;
        if (act == ACT_SENDER_ONLY || act == ACT_RECEIVER_ONLY || act == ACT_BOTH) {
            uint64_t off;
            if (rd_le(r, off_bytes(c.width), &off))
                return CRDT_EDECODE;
            if (off >= c.width)
                return rd_fail(r, "announced id outside its range");
            uint64_t id = (c.lo + off) % RSX_P;
            /* The peer's sketch comparison says who holds it; trusting it saves a lookup per id
             * (a lie only makes the caller look for a key it lacks or send one it has). */
            unsigned flags = act == ACT_SENDER_ONLY     ? CRDT_RSX_THEY_HAVE
                             : act == ACT_RECEIVER_ONLY ? CRDT_RSX_WE_HAVE
                                                        : CRDT_RSX_WE_HAVE | CRDT_RSX_THEY_HAVE;
            int rc = add_diff(s, id, flags);
            if (rc)
                return rc;
            continue;
        }
        if (act == ACT_POSTPONE) {
            int rc = backlog_push(s, c);
            if (rc)
                return rc == CRDT_ELIMIT ? rd_fail(r, "too many postponed ranges") : rc;
            continue;
        }
        if (act != ACT_SPLIT)
            return rd_fail(r, "unknown reconcile action %u", act);
        uint64_t m, depth, n;
        if (rd_varint(r, &m) || rd_varint(r, &depth))
            return CRDT_EDECODE;
        if (m > s->cfg.max_cells || !split_shape(c, m, depth, &n))
            return rd_fail(r, "bad split (%llu parts, depth %llu) of a range of width %llu",
                           (unsigned long long)m, (unsigned long long)depth,
                           (unsigned long long)c.width);
        if (first && (m != 1 || depth))
            return rd_fail(r, "first message must send the keyspace sketch");
        if (n > s->cfg.max_cells - s->nleaves)
            return rd_fail(r, "reconcile message opens more than %zu ranges", s->cfg.max_cells);
        /* Each leaf needs at least 18 bytes: refuse before allocating for a lie. */
        if (n > (r->len - r->pos) / 18)
            return rd_fail(r, "reconcile message truncated: %llu range sketches announced",
                           (unsigned long long)n);
        if (grow((void **)&s->leaves, &s->cap_leaves, s->nleaves + n, sizeof *s->leaves))
            return CRDT_ENOMEM;
        int rc = 0;
        FOR_EACH_LEAF(c, m, depth, leaf, {
            rsx_leaf_t *lf = &s->leaves[s->nleaves];
            lf->cell = leaf;
            if (!rc && (rd_le(r, 8, &lf->a) || rd_le(r, 8, &lf->b) ||
                        rd_le(r, check_bytes(leaf.width), &lf->c)))
                rc = CRDT_EDECODE;
            if (!rc && (lf->a >= RSX_P || lf->b >= RSX_P))
                rc = rd_fail(r, "sketch value out of the field");
            s->nleaves++;
        });
        if (rc)
            return rc;
    }
    /* Postponed cells the sender reopens, from the head of the backlog. */
    if (rd_varint(r, &v))
        return CRDT_EDECODE;
    if (v > s->bl_len - s->bl_head || v > s->cfg.max_cells - s->nleaves ||
        v > (r->len - r->pos) / 18)
        return rd_fail(r, "reopens %llu postponed ranges, %zu exist", (unsigned long long)v,
                       s->bl_len - s->bl_head);
    if (grow((void **)&s->leaves, &s->cap_leaves, s->nleaves + v, sizeof *s->leaves))
        return CRDT_ENOMEM;
    for (uint64_t i = 0; i < v; i++) {
        rsx_leaf_t *lf = &s->leaves[s->nleaves++];
        lf->cell = s->backlog[s->bl_head++];
        if (rd_le(r, 8, &lf->a) || rd_le(r, 8, &lf->b) ||
            rd_le(r, check_bytes(lf->cell.width), &lf->c))
            return CRDT_EDECODE;
        if (lf->a >= RSX_P || lf->b >= RSX_P)
            return rd_fail(r, "sketch value out of the field");
    }
    if (!s->nleaves && s->bl_head < s->bl_len)
        return rd_fail(r, "postponed ranges left unopened");
    if (first) {
        if (rd_varint(r, &v))
            return CRDT_EDECODE;
        if (v > EST_MAX_LEVELS)
            return rd_fail(r, "difference estimator of %llu levels (at most %d)",
                           (unsigned long long)v, EST_MAX_LEVELS);
        size_t n = est_total_cells((unsigned)v);
        if (r->len - r->pos < n)
            return rd_fail(r, "reconcile message truncated in the difference estimator");
        s->est_levels = (unsigned)v;
        memcpy(s->est, r->p + r->pos, n);
        r->pos += n;
    }
    if (r->pos != r->len)
        return rd_fail(r, "%zu trailing bytes after the reconcile message", r->len - r->pos);
    return 0;
}

/* Decides the action for one leaf against our own sketch. */
/* Our fp of id x: from the cell's listed items when we have them (sorted), else the index. */
static bool lookup(const crdt_rsx_session_t *s, const crdt_rsx_item_t *it, size_t n, uint64_t x,
                   uint64_t *fp)
{
    if (!it)
        return crdt_rsx_index_get(s->ix, x, fp);
    size_t lo = 0, hi = n;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (it[mid].id < x)
            lo = mid + 1;
        else
            hi = mid;
    }
    if (lo < n && it[lo].id == x) {
        *fp = it[lo].fp;
        return true;
    }
    return false;
}

static int plan_leaf(crdt_rsx_session_t *s, const rsx_leaf_t *lf, const crdt_rsx_sketch_t *ourp,
                     const crdt_rsx_item_t *items, size_t nitems, rsx_plan_t *pl, uint8_t *differs)
{
    crdt_rsx_sketch_t our = *ourp;
    rsx_cell_t c = lf->cell;
    unsigned cb = check_bytes(c.width);
    uint64_t da = rsx_sub(lf->a, our.a), db = rsx_sub(lf->b, our.b);
    memset(pl, 0, sizeof *pl);
    *differs = 1;
    if (!da && !db && low_bytes(our.c, cb) == lf->c) {
        pl->act = ACT_EQUAL;
        *differs = 0;
        return 0;
    }
    uint64_t x = 0;
    bool single = false;
    if (db) {
        x = rsx_mul(da, rsx_inv(db));
        uint64_t off = rsx_sub(x, c.lo);
        if (off < c.width && low_bytes(rsx_add(our.c, rsx_mul(rsx_w(x), db)), cb) == lf->c) {
            single = true;
            pl->off = off;
        }
    }
    if (!single && c.width == 1) { /* one id can only differ alone */
        x = c.lo;
        single = true;
        pl->off = 0;
    }
    if (single) {
        uint64_t fp;
        unsigned flags;
        if (!lookup(s, items, nitems, x, &fp)) {
            pl->act = ACT_RECEIVER_ONLY;
            flags = CRDT_RSX_THEY_HAVE;
        } else if (db && !rsx_add(db, rsx_u(fp))) {
            pl->act = ACT_SENDER_ONLY;
            flags = CRDT_RSX_WE_HAVE;
        } else {
            pl->act = ACT_BOTH;
            flags = CRDT_RSX_WE_HAVE | CRDT_RSX_THEY_HAVE;
        }
        return add_diff(s, x, flags);
    }
    pl->act = ACT_SPLIT;
    return 0;
}

int crdt_rsx_receive(crdt_rsx_session_t *s, const void *msg, size_t len, crdt_buf_t *reply,
                     bool *done, crdt_error_t *err)
{
    crdt_error_t scratch;
    if (!err)
        err = &scratch;
    memset(err, 0, sizeof *err);
    *done = s->done;
    if (s->failed)
        return fail(s, err, s->failed, "");
    if (s->done)
        return fail(s, err, CRDT_EDECODE, "reconcile message after the session finished");
    if (s->initiator && !s->started)
        return fail(s, err, CRDT_EINVAL, "initiator must call crdt_rsx_initiate first");
    if (!msg && len)
        return fail(s, err, CRDT_EINVAL, "no message");
    if (len > s->cfg.max_msg) {
        err->code = CRDT_EDECODE;
        snprintf(err->text, sizeof err->text, "reconcile message of %zu bytes exceeds %zu", len,
                 s->cfg.max_msg);
        return fail(s, err, CRDT_EDECODE, "");
    }
    s->st.msgs_received++;
    s->st.bytes_received += len;

    rd_t r = {msg, len, 0, err};
    uint64_t peer_est = 0;
    int rc = parse_message(s, &r, &peer_est);
    if (rc)
        return fail(s, err, rc, rc == CRDT_ENOMEM ? "out of memory" : "limit of differing ids");
    s->started = true;
    s->seq_in += 2;
    if (!s->nleaves) { /* the peer opened nothing: finished, nothing to answer */
        s->npend = 0;
        s->done = *done = true;
        return 0;
    }

    /* Plan every leaf; the density estimate comes from the peer or, the first time we see many
     * cells, from which of them differ. */
    if (grow((void **)&s->plans, &s->cap_plans, s->nleaves, sizeof *s->plans))
        return fail(s, err, CRDT_ENOMEM, "out of memory");
    /* Our sketches of the leaves, a run of adjacent leaves at a time (siblings are adjacent),
     * each run planned while its listed items are at hand. */
    uint8_t *differs = malloc(s->nleaves);
    if (!differs)
        return fail(s, err, CRDT_ENOMEM, "out of memory");
    if (grow((void **)&s->ours, &s->cap_ours, s->nleaves, sizeof *s->ours) ||
        grow((void **)&s->bnd, &s->cap_bnd, s->nleaves + 1, sizeof *s->bnd) ||
        grow((void **)&s->at, &s->cap_at, s->nleaves + 1, sizeof *s->at)) {
        free(differs);
        return fail(s, err, CRDT_ENOMEM, "out of memory");
    }
    for (size_t i = 0; i < s->nleaves && !rc;) {
        size_t j = i;
        s->bnd[0] = s->leaves[i].cell.lo;
        uint64_t span = 0;
        do {
            span += s->leaves[j].cell.width;
            s->bnd[j - i + 1] = s->bnd[0] + span;
            j++;
        } while (j < s->nleaves &&
                 s->leaves[j].cell.lo ==
                     (s->leaves[j - 1].cell.lo + s->leaves[j - 1].cell.width) % RSX_P &&
                 span + s->leaves[j].cell.width <= RSX_P);
        /* A cell that wraps past P lists its ids out of order: look those up in the index. */
        bool listed = sketch_bounds(s, s->bnd, j - i, &s->ours[i], s->at);
        for (size_t q = i; q < j && !rc; q++) {
            bool sorted = listed && s->bnd[q - i + 1] <= RSX_P;
            const crdt_rsx_item_t *it = sorted ? s->scr + s->at[q - i] : NULL;
            size_t nit = sorted ? s->at[q - i + 1] - s->at[q - i] : 0;
            rc = plan_leaf(s, &s->leaves[q], &s->ours[q], it, nit, &s->plans[q], &differs[q]);
        }
        i = j;
    }
    if (rc) {
        free(differs);
        return fail(s, err, rc, rc == CRDT_ENOMEM ? "out of memory" : "limit of differing ids");
    }
    if (s->d_est <= 0 && peer_est)
        s->d_est = (double)peer_est;
    if (s->d_est <= 0 && s->est_levels && differs[0]) {
        size_t n = est_total_cells(s->est_levels);
        uint8_t *ours = malloc(n + 1), *dv = malloc(n + 1);
        double *wv = malloc((n + 1) * sizeof *wv);
        if (!ours || !dv || !wv) {
            free(ours), free(dv), free(wv), free(differs);
            return fail(s, err, CRDT_ENOMEM, "out of memory");
        }
        est_compute(s, s->est_levels, ours);
        size_t k = 0;
        for (unsigned l = 1; l <= s->est_levels; l++)
            for (unsigned i = 0; i < est_cells(l); i++, k++) {
                wv[k] = (double)est_width(l) / (double)RSX_P;
                dv[k] = ours[k] != s->est[k];
            }
        s->d_est = estimate_diffs(wv, dv, n, 1.0 / 256);
        /* The counts bound d: |na - nb| <= d <= na + nb; and the keyspace sketch differs without
         * being one item, so d >= 2. */
        double na = (double)s->peer_count, nb = (double)crdt_rsx_index_count(s->ix);
        if (s->d_est < fabs(na - nb))
            s->d_est = fabs(na - nb);
        if (s->d_est > na + nb)
            s->d_est = na + nb;
        if (s->d_est < 2)
            s->d_est = 2;
        free(ours), free(dv), free(wv);
    }
    if (s->d_est <= 0 && s->nleaves > 1) {
        double *wv = malloc(s->nleaves * sizeof *wv);
        if (!wv) {
            free(differs);
            return fail(s, err, CRDT_ENOMEM, "out of memory");
        }
        for (size_t i = 0; i < s->nleaves; i++)
            wv[i] = (double)s->leaves[i].cell.width / (double)RSX_P;
        /* a probe has ~100 leaves; more only costs time (a hostile peer could send 1M) */
        s->d_est = estimate_diffs(wv, differs, s->nleaves < 4096 ? s->nleaves : 4096, 0);
        free(wv);
    }
    free(differs);

    /* Fan-outs, within what one message may open. A part costs at most 21 bytes; leave room for
     * the peer to answer every part with a 28-byte split of its own within the same limit. Cells
     * that do not fit are postponed (both sides queue them) and reopened when room frees up, so
     * every message makes progress and memory stays bounded. */
    size_t fixed = 32;
    for (size_t i = 0; i < s->nleaves; i++)
        fixed += s->plans[i].act == ACT_SPLIT ? 0 : 1 + off_bytes(s->leaves[i].cell.width);
    uint64_t budget = s->cfg.max_cells;
    size_t by_bytes = s->cfg.max_msg > fixed ? (s->cfg.max_msg - fixed) / 28 : 0;
    if (by_bytes < budget)
        budget = by_bytes;
    uint64_t total = 0;
    for (size_t i = 0; i < s->nleaves; i++) {
        rsx_plan_t *pl = &s->plans[i];
        if (pl->act != ACT_SPLIT)
            continue;
        rsx_cell_t c = s->leaves[i].cell;
        uint64_t m, d = 0, n = 0, rem = budget - total;
        if (s->d_est <= 0) {
            m = s->cfg.probe_fanout;
            d = s->cfg.probe_depth;
            if (m > c.width)
                m = c.width;
            while (d && (!split_shape(c, m, d, &n) || n > rem))
                d--;
        } else {
            m = choose_fanout(s, c.width);
        }
        if (m > rem)
            m = rem;
        if (m < 2 && c.width >= 2) {
            pl->act = ACT_POSTPONE;
            continue;
        }
        pl->m = (uint32_t)m;
        pl->depth = (uint32_t)d;
        total += d * (m - 1) + m;
    }

    /* Write the reply; the cells we open become the next open list. */
    size_t nreopen = 0;
    for (size_t i = 0; i < s->nleaves; i++)
        if (s->plans[i].act == ACT_POSTPONE && backlog_push(s, s->leaves[i].cell))
            return fail(s, err, CRDT_ELIMIT, "too many postponed ranges");
    size_t queued = s->bl_len - s->bl_head;
    nreopen = budget > total ? (size_t)(budget - total) : 0;
    if (nreopen > queued)
        nreopen = queued;
    if (!total && !nreopen && queued)
        nreopen = 1; /* never stall */
    rsx_cell_t *npend = malloc((total + nreopen + 1) * sizeof *npend);
    if (!npend)
        return fail(s, err, CRDT_ENOMEM, "out of memory");
    size_t nn = 0, start = reply->len;
    wr_t w = {reply, 0};
    wr_header(s, &w, MSG_NEXT);
    for (size_t i = 0; i < s->nleaves; i++) {
        rsx_plan_t *pl = &s->plans[i];
        rsx_cell_t c = s->leaves[i].cell;
        if (pl->act == ACT_SPLIT) {
            write_split(s, &w, c, pl->m, pl->depth, npend, &nn);
        } else {
            wr_u8(&w, pl->act);
            if (pl->act != ACT_EQUAL && pl->act != ACT_POSTPONE) {
                wr_le(&w, pl->off, off_bytes(c.width));
                s->st.diff_ids_sent++;
            }
        }
    }
    wr_varint(&w, nreopen);
    for (size_t i = 0; i < nreopen; i++) {
        rsx_cell_t c = s->backlog[s->bl_head++];
        crdt_rsx_sketch_t sk;
        cell_sketch(s->ix, c, &sk);
        wr_sketch(&w, &sk, c.width);
        npend[nn++] = c;
    }
    s->st.cells_sent += nreopen;
    if (w.err) {
        free(npend);
        reply->len = start;
        return fail(s, err, CRDT_ENOMEM, "out of memory");
    }
    free(s->pend);
    s->pend = npend;
    s->npend = nn;
    s->cap_pend = total + nreopen + 1;
    s->seq_out += 2;
    s->st.msgs_sent++;
    s->st.bytes_sent += reply->len - start;
    if (!nn)
        s->done = *done = true;
    return 0;
}
