/* test_peer_sim.c - the peer engine (crdt_peer.h) in a deterministic simulation: several replicas
 * (embedded stores, some with data directories) and a simulated network in one process
 *
 * First a few scripted scenarios that check single behaviours (replication both ways, one link
 * per pair, statistics after a restart whichever dial wins, the clock check of the handshake),
 * then many seeded runs: a scheduler driven by the seed writes every type on every node while the
 * network drops, duplicates, delays and reorders messages, partitions pairs of nodes, and nodes
 * restart, with or without losing the tail of their log that was not durable yet. Then the
 * network heals; every replica must end byte-identical (every key's encoding and the replica
 * digest) and hold every write that was acknowledged (durable on its node).
 *
 * CRDT_SIM_SEEDS sets how many runs (default 2000, 400 under the sanitizers), CRDT_SEED the
 * first seed (a failing run prints its seed: CRDT_SEED=N CRDT_SIM_SEEDS=1 replays exactly that
 * run), CRDT_SIM_LOG=1 prints the engines' log lines, CRDT_SIM_DIR where the data directories go.
 */
#include "tap.h"

#include <dirent.h>
#include <errno.h>
#include <inttypes.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "crdt_peer.h"
#include "crdt_store.h"

#ifndef CRDT_SIM_DEFERRED_DEFAULT_SEEDS
#define CRDT_SIM_DEFERRED_DEFAULT_SEEDS 500
#endif
#ifndef CRDT_SIM_DEFAULT_SEEDS
#define CRDT_SIM_DEFAULT_SEEDS 2000
#endif
#define MAXN 4
#define MAXC 128
#define WALL_BASE 1700000000000ull /* the simulated wall clock starts here (2023-11-14) */
#define NEVER UINT64_MAX

static bool sim_log;

/* What the seeded runs exercised, summed (printed at the end: a run that tests nothing shows). */
static struct {
    uint64_t runs, sim_ms, steps, msgs, drops, dups, reorders, restarts, lossy, cuts, writes;
    uint64_t ups, ae_rounds, repaired, acked;
} tot;

/* ---- randomness ------------------------------------------------------------------------------ */

typedef struct rng {
    uint64_t s;
} rng_t;

static uint64_t rng_next(rng_t *r)
{
    uint64_t z = (r->s += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

static uint64_t rng_below(rng_t *r, uint64_t n)
{
    return n ? rng_next(r) % n : 0;
}

static bool rng_chance(rng_t *r, double p)
{
    return (double)(rng_next(r) >> 11) / 9007199254740992.0 < p;
}

/* ---- the simulated world --------------------------------------------------------------------- */

typedef struct msg {
    uint64_t at;
    bool fin; /* the connection's close, after the data before it */
    size_t n;
    struct msg *next;
    uint8_t p[];
} msg_t;

struct conn;
typedef struct end {
    struct conn *c;
    int side;
    crdt_peer_link_t *l;
    bool wants;
} end_t;

typedef struct conn {
    bool used;
    int node[2]; /* [0] dialled [1] */
    int incarnation[2];
    end_t e[2];
    msg_t *q[2]; /* messages travelling toward side i */
    uint64_t last_at[2];
    uint64_t est_at, fail_at;
} conn_t;

typedef struct wrec {
    char key[16];
    uint8_t *enc; /* the delta's encoding */
    size_t n;
    uint64_t seq;
    int node, incarnation; /* where it was written */
} wrec_t;

typedef struct wlist {
    wrec_t *v;
    size_t n, cap;
} wlist_t;

typedef struct sim sim_t;

typedef struct node {
    sim_t *S;
    int idx;
    uint64_t node_id;
    bool up, persistent;
    int incarnation;
    char dir[600];
    crdt_store_t *st;    /* the engine's store: inner, or a deferred store over it */
    crdt_store_t *inner; /* the embedded store (local writes and the checks use it) */
    crdt_peers_t *E;
    rng_t rng;
    int64_t clock_offset;
    uint64_t flush_at, up_at;
    uint64_t dial_block_until; /* scenarios: its dials fail until then */
    int nslots;
    int slot_target[MAXN];
    char slot_name[MAXN][16];
    const char *slot_names[MAXN];
    uint64_t lww_ms;
    uint32_t lww_logical;
    wlist_t pending;              /* local writes of this incarnation, not yet known durable */
    const char *cluster, *secret; /* scenarios: NULL for the cluster's */
    const char *legacy;           /* scenarios: an old peers.state's text */
    char last_log[400];
    char clock_line[400];
    int log_clock_lines;
} node_t;

struct sim {
    uint64_t seed;
    uint64_t now;
    rng_t rng;
    int n;
    node_t nodes[MAXN];
    conn_t conns[MAXC];
    int conns_hi;  /* conns[] is unused from here on */
    bool deferred; /* every engine's store completes later, at seeded moments */
    bool cut[MAXN][MAXN];
    double p_drop, p_dup, p_reorder;
    bool faults;
    unsigned latency_max;
    unsigned anti_entropy_ms;
    uint64_t max_drift_ms;
    wlist_t acked; /* writes acknowledged (durable on their node) */
    char tmp[512];
    uint64_t msgs, drops;
    bool failed;
};

static void wlist_push(wlist_t *w, const char *key, const crdt_obj_t *delta, uint64_t seq, int node,
                       int incarnation)
{
    if (w->n == w->cap) {
        w->cap = w->cap ? w->cap * 2 : 64;
        w->v = realloc(w->v, w->cap * sizeof(*w->v));
    }
    crdt_buf_t b = {0};
    crdt_obj_encode(delta, &b);
    wrec_t *r = &w->v[w->n++];
    snprintf(r->key, sizeof(r->key), "%s", key);
    r->enc = b.data;
    r->n = b.len;
    r->seq = seq;
    r->node = node;
    r->incarnation = incarnation;
}

static void wlist_free(wlist_t *w)
{
    for (size_t i = 0; i < w->n; i++)
        free(w->v[i].enc);
    free(w->v);
    memset(w, 0, sizeof(*w));
}

/* Moves the writes of n with seq <= durable (all when `all`) to the acknowledged list. */
static void settle_writes(node_t *n, bool all)
{
    uint64_t D = crdt_store_durable_seq(n->st);
    size_t k = 0;
    for (size_t i = 0; i < n->pending.n; i++) {
        wrec_t *r = &n->pending.v[i];
        if (all || r->seq <= D) {
            wlist_t *a = &n->S->acked;
            if (a->n == a->cap) {
                a->cap = a->cap ? a->cap * 2 : 64;
                a->v = realloc(a->v, a->cap * sizeof(*a->v));
            }
            a->v[a->n++] = *r;
        } else {
            n->pending.v[k++] = *r;
        }
    }
    n->pending.n = k;
}

/* ---- host callbacks ------------------------------------------------------------------------- */

static void h_want_write(void *ud, void *link_ud)
{
    (void)ud;
    end_t *e = link_ud;
    if (e)
        e->wants = true;
}

static void conn_fin(conn_t *c, int from);

static void h_close(void *ud, void *link_ud, bool abandon)
{
    (void)ud;
    end_t *e = link_ud;
    if (!e)
        return;
    if (abandon) {
        e->l = NULL; /* the engine forgot it */
        conn_fin(e->c, e->side);
        e->c->est_at = NEVER;
    } else {
        e->wants = true;
    }
}

static conn_t *conn_new(sim_t *S)
{
    for (int i = 0; i < MAXC; i++)
        if (!S->conns[i].used) {
            conn_t *c = &S->conns[i];
            memset(c, 0, sizeof(*c));
            c->used = true;
            if (i >= S->conns_hi)
                S->conns_hi = i + 1;
            c->e[0].c = c->e[1].c = c;
            c->e[1].side = 1;
            c->est_at = c->fail_at = NEVER;
            return c;
        }
    return NULL;
}

static uint64_t latency(sim_t *S)
{
    return 1 + rng_below(&S->rng, S->latency_max);
}

static void h_dial(void *ud, int slot)
{
    node_t *a = ud;
    sim_t *S = a->S;
    conn_t *c = conn_new(S);
    if (!c)
        return;
    int b = a->slot_target[slot];
    c->node[0] = a->idx;
    c->node[1] = b;
    c->incarnation[0] = a->incarnation;
    char addr[32];
    snprintf(addr, sizeof(addr), "sim:%d", b);
    c->e[0].l = crdt_peers_link_new(a->E, slot, addr, &c->e[0], S->now);
    if (!c->e[0].l) {
        c->used = false;
        return;
    }
    if (!S->nodes[b].up || S->cut[a->idx][b] || S->now < a->dial_block_until)
        c->fail_at = S->now + latency(S);
    else
        c->est_at = S->now + latency(S);
}

static int h_random(void *ud, void *buf, size_t n)
{
    node_t *a = ud;
    uint8_t *p = buf;
    for (size_t i = 0; i < n; i++)
        p[i] = (uint8_t)rng_next(&a->rng);
    return 0;
}

static uint64_t h_wall(void *ud)
{
    node_t *a = ud;
    return (uint64_t)((int64_t)(WALL_BASE + a->S->now) + a->clock_offset);
}

static void h_log(void *ud, const char *line)
{
    node_t *a = ud;
    snprintf(a->last_log, sizeof(a->last_log), "%s", line);
    if (strstr(line, "clock differs") && !a->log_clock_lines++)
        snprintf(a->clock_line, sizeof(a->clock_line), "%s", line);
    if (sim_log)
        printf("# [%8" PRIu64 " ms] node %" PRIu64 ": %s\n", a->S->now, a->node_id, line);
}

static void h_applied(void *ud)
{
    node_t *a = ud;
    uint64_t t = a->S->now + 1 + rng_below(&a->S->rng, 3);
    if (t < a->flush_at)
        a->flush_at = t;
}

/* ---- store events --------------------------------------------------------------------------- */

static void ev_change(void *ud, const void *key, size_t klen, uint64_t seq, const crdt_obj_t *delta,
                      uint64_t origin)
{
    node_t *a = ud;
    if (origin == CRDT_ORIGIN_LOCAL) {
        char k[16];
        snprintf(k, sizeof(k), "%.*s", (int)klen, (const char *)key);
        wlist_push(&a->pending, k, delta, seq, a->idx, a->incarnation);
    }
    if (a->E)
        crdt_peers_on_change(a->E, key, klen, seq, delta, origin, a->S->now);
}

/* ---- nodes ---------------------------------------------------------------------------------- */

static void node_open(node_t *a)
{
    sim_t *S = a->S;
    crdt_replica_config_t rc;
    crdt_replica_config_init(&rc);
    rc.dir = a->persistent ? a->dir : NULL;
    rc.node_id = a->node_id;
    rc.fsync = CRDT_FSYNC_NO; /* durable once written: a simulated crash loses the rest */
    rc.snapshot_log_bytes = 0;
    rc.load_threads = 0;
    crdt_error_t err = {0};
    a->st = a->inner = crdt_store_embedded_open(&rc, &err);
    if (a->st && S->deferred && !(a->st = crdt_store_deferred_wrap(a->inner))) {
        crdt_store_close(a->inner);
        err.code = CRDT_ENOMEM;
        snprintf(err.text, sizeof(err.text), "out of memory");
    }
    if (!a->st) {
        diag("cannot open node %" PRIu64 ": %s", a->node_id, err.text);
        S->failed = true;
        return;
    }
    crdt_store_events_t ev = {.change = ev_change, .durable = NULL, .ud = a};
    crdt_store_set_events(a->st, &ev);
    static const uint8_t secret[] = "simulated-cluster-secret";
    crdt_peers_config_t cfg;
    crdt_peers_config_init(&cfg);
    cfg.cluster = a->cluster ? a->cluster : "sim";
    cfg.secret = a->secret ? (const uint8_t *)a->secret : secret;
    cfg.secret_len = a->secret ? strlen(a->secret) : sizeof(secret) - 1;
    cfg.batch_ms = 2;
    cfg.anti_entropy_ms = S->anti_entropy_ms;
    cfg.max_clock_drift_ms = S->max_drift_ms;
    cfg.queue_bytes = 256u << 10; /* small: the overflow path runs too */
    cfg.nslots = a->nslots;
    cfg.slot_names = a->slot_names;
    cfg.legacy_state = a->legacy;
    crdt_peers_host_t host = {
        .ud = a,
        .want_write = h_want_write,
        .close = h_close,
        .dial = h_dial,
        .random = h_random,
        .wall_ms = h_wall,
        .log = h_log,
        .applied = h_applied,
    };
    a->E = crdt_peers_new(a->st, &cfg, &host, S->now, &err);
    if (!a->E) {
        diag("cannot start the engine of node %" PRIu64 ": %s", a->node_id, err.text);
        S->failed = true;
        return;
    }
    a->up = true;
    a->incarnation++;
    a->flush_at = S->now + 1;
}

/* Files of a directory, read into memory (a crash keeps what was written, nothing more). */
typedef struct dfile {
    char name[256];
    uint8_t *p;
    size_t n;
} dfile_t;

static size_t dir_read(const char *dir, dfile_t *out, size_t max)
{
    DIR *d = opendir(dir);
    size_t k = 0;
    struct dirent *de;
    while (d && (de = readdir(d)) && k < max) {
        if (de->d_name[0] == '.' || !strcmp(de->d_name, "LOCK"))
            continue;
        char path[1000];
        snprintf(path, sizeof(path), "%s/%s", dir, de->d_name);
        FILE *f = fopen(path, "rb");
        if (!f)
            continue;
        fseek(f, 0, SEEK_END);
        long sz = ftell(f);
        fseek(f, 0, SEEK_SET);
        out[k].p = malloc(sz > 0 ? (size_t)sz : 1);
        out[k].n = sz > 0 && fread(out[k].p, 1, (size_t)sz, f) == (size_t)sz ? (size_t)sz : 0;
        fclose(f);
        snprintf(out[k].name, sizeof(out[k].name), "%s", de->d_name);
        k++;
    }
    if (d)
        closedir(d);
    return k;
}

static void dir_clear(const char *dir)
{
    DIR *d = opendir(dir);
    struct dirent *de;
    while (d && (de = readdir(d))) {
        if (de->d_name[0] == '.')
            continue;
        char path[1000];
        snprintf(path, sizeof(path), "%s/%s", dir, de->d_name);
        unlink(path);
    }
    if (d)
        closedir(d);
}

static void conn_reset_side(conn_t *c, int side);

/* The node stops; `lose`: as a crash, losing what its log had not made durable. */
static void node_down(node_t *a, bool lose)
{
    sim_t *S = a->S;
    if (!a->up)
        return;
    crdt_peer_status_t st[16];
    size_t ns = crdt_peers_status(a->E, st, 16, S->now);
    for (size_t i = 0; i < ns && i < 16; i++) {
        tot.ups += st[i].connects;
        tot.ae_rounds += st[i].ae_rounds;
        tot.repaired += st[i].keys_repaired;
    }
    for (int i = 0; i < MAXC; i++) {
        conn_t *c = &S->conns[i];
        if (!c->used)
            continue;
        for (int side = 0; side < 2; side++)
            if (c->node[side] == a->idx)
                conn_reset_side(c, side);
    }
    crdt_peers_free(a->E);
    a->E = NULL;
    if (lose && a->persistent) {
        settle_writes(a, false);
        dfile_t files[64];
        size_t nf = dir_read(a->dir, files, 64);
        crdt_store_close(a->st);
        dir_clear(a->dir);
        for (size_t i = 0; i < nf; i++) {
            char path[1000];
            snprintf(path, sizeof(path), "%.599s/%.255s", a->dir, files[i].name);
            FILE *f = fopen(path, "wb");
            if (f) {
                fwrite(files[i].p, 1, files[i].n, f);
                fclose(f);
            }
            free(files[i].p);
        }
    } else if (a->persistent) {
        settle_writes(a, true); /* a clean stop: everything is flushed */
        crdt_store_close(a->st);
    } else {
        /* a store in memory keeps nothing: its writes are acknowledged to nobody durably, so
         * whether another node got them before the restart is not checked */
        wlist_t *w = &S->acked;
        size_t k = 0;
        for (size_t i = 0; i < w->n; i++) {
            if (w->v[i].node == a->idx && w->v[i].incarnation == a->incarnation)
                free(w->v[i].enc);
            else
                w->v[k++] = w->v[i];
        }
        w->n = k;
        crdt_store_close(a->st);
    }
    for (size_t i = 0; i < a->pending.n; i++)
        free(a->pending.v[i].enc);
    a->pending.n = 0;
    a->st = a->inner = NULL;
    a->up = false;
    a->flush_at = NEVER;
}

/* ---- connections ---------------------------------------------------------------------------- */

static void msg_push(conn_t *c, int toward, const uint8_t *p, size_t n, bool fin, uint64_t at)
{
    msg_t *m = malloc(sizeof(*m) + n);
    m->at = at;
    m->fin = fin;
    m->n = n;
    m->next = NULL;
    if (n)
        memcpy(m->p, p, n);
    /* sorted by time; equal times keep their order */
    msg_t **pp = &c->q[toward];
    while (*pp && (*pp)->at <= at)
        pp = &(*pp)->next;
    m->next = *pp;
    *pp = m;
}

static void q_clear(conn_t *c, int toward)
{
    while (c->q[toward]) {
        msg_t *m = c->q[toward];
        c->q[toward] = m->next;
        free(m);
    }
}

static void conn_maybe_free(conn_t *c)
{
    if (!c->e[0].l && !c->e[1].l && !c->q[0] && !c->q[1] && c->est_at == NEVER &&
        c->fail_at == NEVER)
        c->used = false;
}

/* Side `from` closed its end: a FIN travels to the other side after the data. */
static void conn_fin(conn_t *c, int from)
{
    int to = 1 - from;
    uint64_t at = c->last_at[to] + 1;
    msg_push(c, to, NULL, 0, true, at);
}

/* Side `side`'s node went away: its end is gone without a word to its engine. */
static void conn_reset_side(conn_t *c, int side)
{
    c->e[side].l = NULL;
    q_clear(c, side);
    if (c->est_at != NEVER) {
        /* not established yet: the dialler's connect fails */
        c->est_at = NEVER;
    }
    conn_fin(c, side);
}

static void conn_send(sim_t *S, conn_t *c, int from, const uint8_t *p, size_t n)
{
    int to = 1 - from;
    S->msgs++;
    if (S->faults && rng_chance(&S->rng, S->p_drop)) {
        S->drops++;
        return;
    }
    int copies = S->faults && rng_chance(&S->rng, S->p_dup) ? 2 : 1;
    tot.dups += copies > 1;
    for (int k = 0; k < copies; k++) {
        uint64_t at = S->now + latency(S);
        bool reorder = S->faults && rng_chance(&S->rng, S->p_reorder);
        tot.reorders += reorder && at < c->last_at[to];
        if (!reorder && at < c->last_at[to])
            at = c->last_at[to]; /* in order, as TCP delivers */
        if (at > c->last_at[to])
            c->last_at[to] = at;
        msg_push(c, to, p, n, false, at);
    }
}

/* Writes what the end wants to write (a few frames: writability paces catch-up). */
static void pump(sim_t *S, conn_t *c, int side)
{
    end_t *e = &c->e[side];
    if (!e->l || !e->wants)
        return;
    e->wants = false;
    for (int k = 0; k < 8; k++) {
        crdt_peer_frame_t *f = NULL;
        int rc = crdt_peer_link_pull(e->l, &f, S->now);
        if (rc < 0) {
            crdt_peer_link_t *l = e->l;
            e->l = NULL;
            crdt_peer_link_closed(l, NULL, S->now);
            conn_fin(c, side);
            return;
        }
        if (rc == 0)
            return;
        conn_send(S, c, side, crdt_peer_frame_data(f), crdt_peer_frame_len(f));
        crdt_peer_frame_release(f);
    }
    e->wants = crdt_peer_link_wants_write(e->l);
}

/* A partition or a reset: both ends see the connection die. */
static void conn_kill(sim_t *S, conn_t *c)
{
    for (int side = 0; side < 2; side++) {
        q_clear(c, side);
        if (c->e[side].l) {
            crdt_peer_link_t *l = c->e[side].l;
            c->e[side].l = NULL;
            crdt_peer_link_closed(l, "connection reset", S->now);
        }
    }
    c->est_at = c->fail_at = NEVER;
    conn_maybe_free(c);
}

/* ---- the scheduler -------------------------------------------------------------------------- */

static void deliver(sim_t *S, conn_t *c, int to)
{
    while (c->q[to] && c->q[to]->at <= S->now) {
        msg_t *m = c->q[to];
        c->q[to] = m->next;
        end_t *e = &c->e[to];
        if (e->l) {
            if (m->fin) {
                crdt_peer_link_t *l = e->l;
                e->l = NULL;
                crdt_peer_link_closed(l, "closed by the peer", S->now);
            } else {
                crdt_peer_link_receive(e->l, m->p, m->n, S->now);
            }
        }
        free(m);
    }
}

static void conn_events(sim_t *S, conn_t *c)
{
    if (c->fail_at <= S->now) {
        c->fail_at = NEVER;
        if (c->e[0].l) {
            crdt_peer_link_t *l = c->e[0].l;
            c->e[0].l = NULL;
            crdt_peer_link_closed(l, "cannot connect: connection refused", S->now);
        }
    }
    if (c->est_at <= S->now) {
        c->est_at = NEVER;
        node_t *b = &S->nodes[c->node[1]];
        if (!c->e[0].l) {
            /* the dialler gave up meanwhile */
        } else if (!b->up || S->cut[c->node[0]][c->node[1]]) {
            crdt_peer_link_t *l = c->e[0].l;
            c->e[0].l = NULL;
            crdt_peer_link_closed(l, "cannot connect: connection refused", S->now);
        } else {
            char addr[32];
            snprintf(addr, sizeof(addr), "sim:%d", c->node[0]);
            c->incarnation[1] = b->incarnation;
            c->e[1].l = crdt_peers_link_new(b->E, -1, addr, &c->e[1], S->now);
            if (!c->e[1].l) {
                crdt_peer_link_t *l = c->e[0].l;
                c->e[0].l = NULL;
                crdt_peer_link_closed(l, "connection closed", S->now);
            } else {
                crdt_peer_link_established(c->e[0].l, S->now);
                c->e[0].wants = true;
            }
        }
    }
    deliver(S, c, 0);
    deliver(S, c, 1);
    conn_maybe_free(c);
}

static void node_flush(node_t *a)
{
    crdt_store_flush(a->st);
    settle_writes(a, false);
    crdt_peers_on_durable(a->E, a->S->now);
}

/* One step: everything due now, then the clock jumps to the next event (at most `until`). */
static void step(sim_t *S, uint64_t until)
{
    tot.steps++;
    for (int i = 0; i < S->n; i++) {
        node_t *a = &S->nodes[i];
        if (!a->up)
            continue;
        if (a->flush_at <= S->now) {
            a->flush_at = S->now + 1 + rng_below(&S->rng, 20);
            node_flush(a);
        }
        if (crdt_peers_deadline(a->E) <= S->now)
            crdt_peers_tick(a->E, S->now);
        /* the store's completions arrive at seeded moments, between deliveries and closes */
        if (S->deferred && crdt_store_deferred_pending(a->st) && rng_chance(&S->rng, 0.4))
            crdt_store_deferred_run(a->st);
    }
    for (int i = 0; i < S->conns_hi; i++)
        if (S->conns[i].used)
            conn_events(S, &S->conns[i]);
    while (S->conns_hi > 0 && !S->conns[S->conns_hi - 1].used)
        S->conns_hi--;
    bool busy = false;
    for (int i = 0; i < S->conns_hi; i++) {
        conn_t *c = &S->conns[i];
        if (!c->used)
            continue;
        pump(S, c, 0);
        pump(S, c, 1);
        busy |= c->e[0].wants || c->e[1].wants;
    }
    for (int i = 0; i < S->n && S->deferred; i++)
        busy |= S->nodes[i].up && crdt_store_deferred_pending(S->nodes[i].st) > 0;
    uint64_t next = until;
    if (busy)
        next = S->now + 1;
    for (int i = 0; i < S->n; i++) {
        node_t *a = &S->nodes[i];
        if (!a->up) {
            if (a->up_at < next)
                next = a->up_at;
            continue;
        }
        uint64_t d = crdt_peers_deadline(a->E);
        if (d < next)
            next = d;
        if (a->flush_at < next)
            next = a->flush_at;
    }
    for (int i = 0; i < S->conns_hi; i++) {
        conn_t *c = &S->conns[i];
        if (!c->used)
            continue;
        if (c->est_at < next)
            next = c->est_at;
        if (c->fail_at < next)
            next = c->fail_at;
        for (int k = 0; k < 2; k++)
            if (c->q[k] && c->q[k]->at < next)
                next = c->q[k]->at;
    }
    if (next <= S->now)
        next = S->now + 1;
    S->now = next > until && until > S->now ? until : next;
}

static void run_until(sim_t *S, uint64_t t)
{
    while (S->now < t && !S->failed)
        step(S, t);
    step(S, t);
}

/* ---- setting up ----------------------------------------------------------------------------- */

static void sim_init(sim_t *S, uint64_t seed, int n, const char *tmp)
{
    memset(S, 0, sizeof(*S));
    S->seed = seed;
    S->rng.s = seed;
    S->n = n;
    S->latency_max = 5;
    S->anti_entropy_ms = 4000;
    S->max_drift_ms = 86400000;
    snprintf(S->tmp, sizeof(S->tmp), "%s", tmp);
    for (int i = 0; i < n; i++) {
        node_t *a = &S->nodes[i];
        a->S = S;
        a->idx = i;
        a->node_id = (uint64_t)i + 1;
        a->rng.s = seed * 31 + (uint64_t)i * 7919 + 1;
        a->flush_at = a->up_at = NEVER;
        snprintf(a->dir, sizeof(a->dir), "%s/n%d", tmp, i);
    }
}

/* Node i dials node j. */
static void sim_dial(sim_t *S, int i, int j)
{
    node_t *a = &S->nodes[i];
    a->slot_target[a->nslots] = j;
    snprintf(a->slot_name[a->nslots], sizeof(a->slot_name[0]), "sim://%d", j);
    a->slot_names[a->nslots] = a->slot_name[a->nslots];
    a->nslots++;
}

static void sim_start(sim_t *S)
{
    for (int i = 0; i < S->n; i++) {
        node_t *a = &S->nodes[i];
        if (a->persistent) {
            mkdir(a->dir, 0755);
            dir_clear(a->dir);
        }
        node_open(a);
    }
}

static void sim_free(sim_t *S)
{
    for (int i = 0; i < S->n; i++)
        node_down(&S->nodes[i], false);
    for (int i = 0; i < MAXC; i++)
        if (S->conns[i].used) {
            q_clear(&S->conns[i], 0);
            q_clear(&S->conns[i], 1);
            S->conns[i].used = false;
        }
    for (int i = 0; i < S->n; i++) {
        wlist_free(&S->nodes[i].pending);
        if (S->nodes[i].persistent) {
            dir_clear(S->nodes[i].dir);
            rmdir(S->nodes[i].dir);
        }
    }
    wlist_free(&S->acked);
}

static void sim_cut(sim_t *S, int i, int j, bool cut)
{
    S->cut[i][j] = S->cut[j][i] = cut;
    if (!cut)
        return;
    for (int k = 0; k < MAXC; k++) {
        conn_t *c = &S->conns[k];
        if (c->used &&
            ((c->node[0] == i && c->node[1] == j) || (c->node[0] == j && c->node[1] == i)))
            conn_kill(S, c);
    }
}

/* ---- writes --------------------------------------------------------------------------------- */

static void write_cb(void *ud, int rc, uint64_t seq)
{
    (void)seq;
    int *out = ud;
    *out = rc;
}

/* A random write of a random type on node a. */
static int random_write(node_t *a, rng_t *r)
{
    static const char types[] = "gprsot";
    int t = (int)rng_below(r, 6);
    char key[16];
    snprintf(key, sizeof(key), "%c%u", types[t], (unsigned)rng_below(r, 6));
    char member[16];
    snprintf(member, sizeof(member), "m%u", (unsigned)rng_below(r, 8));
    crdt_mut_t m;
    memset(&m, 0, sizeof(m));
    m.bytes = member;
    m.len = strlen(member);
    uint64_t wall = WALL_BASE + a->S->now;
    if (wall > a->lww_ms) {
        a->lww_ms = wall;
        a->lww_logical = 0;
    } else {
        a->lww_logical++;
    }
    m.ts.ms = a->lww_ms;
    m.ts.logical = a->lww_logical;
    m.ts.node = a->node_id;
    bool rm = rng_chance(r, 0.3);
    switch (t) {
    case 0:
        m.type = CRDT_GCOUNTER, m.kind = CRDT_MUT_INCR, m.n = 1 + (int64_t)rng_below(r, 5);
        break;
    case 1:
        m.type = CRDT_PNCOUNTER, m.kind = CRDT_MUT_INCR, m.n = (int64_t)rng_below(r, 11) - 5;
        break;
    case 2: m.type = CRDT_LWWREG, m.kind = CRDT_MUT_SET; break;
    case 3: m.type = CRDT_LWWSET, m.kind = rm ? CRDT_MUT_REMOVE : CRDT_MUT_ADD; break;
    case 4: m.type = CRDT_ORSET, m.kind = rm ? CRDT_MUT_REMOVE : CRDT_MUT_ADD; break;
    default:
        m.type = CRDT_TIMELINE, m.kind = rm ? CRDT_MUT_REMOVE : CRDT_MUT_ADD;
        m.score = (double)rng_below(r, 100);
        break;
    }
    int rc = -100;
    crdt_store_write(a->inner, key, strlen(key), &m, write_cb, &rc);
    return rc;
}

/* ---- checks --------------------------------------------------------------------------------- */

typedef struct keys_ctx {
    char (*keys)[16];
    size_t n, cap;
} keys_ctx_t;

static int key_cb(const void *key, size_t klen, const crdt_obj_t *o, void *ud)
{
    (void)o;
    keys_ctx_t *c = ud;
    if (c->n == c->cap) {
        c->cap = c->cap ? c->cap * 2 : 64;
        c->keys = realloc(c->keys, c->cap * sizeof(*c->keys));
    }
    snprintf(c->keys[c->n++], 16, "%.*s", (int)klen, (const char *)key);
    return 0;
}

static bool digests_equal(sim_t *S)
{
    uint64_t d0 = crdt_replica_digest(crdt_store_embedded_replica(S->nodes[0].inner));
    for (int i = 1; i < S->n; i++)
        if (crdt_replica_digest(crdt_store_embedded_replica(S->nodes[i].inner)) != d0)
            return false;
    return true;
}

/* Every replica byte-identical, every acknowledged write in every replica. "" or why not. */
static void check_final(sim_t *S, char *why, size_t cap)
{
    why[0] = '\0';
    keys_ctx_t kc = {0};
    crdt_replica_t *r0 = crdt_store_embedded_replica(S->nodes[0].inner);
    crdt_replica_foreach(r0, key_cb, &kc);
    for (int i = 1; i < S->n && !why[0]; i++) {
        crdt_replica_t *ri = crdt_store_embedded_replica(S->nodes[i].inner);
        if (crdt_replica_digest(ri) != crdt_replica_digest(r0))
            snprintf(why, cap, "digest of node %d differs from node 1's", i + 1);
        crdt_store_stats_t a, b;
        crdt_store_stats(S->nodes[0].st, &a);
        crdt_store_stats(S->nodes[i].st, &b);
        if (!why[0] && a.keys != b.keys)
            snprintf(why, cap, "node %d holds %" PRIu64 " keys, node 1 %" PRIu64, i + 1, b.keys,
                     a.keys);
        for (size_t k = 0; k < kc.n && !why[0]; k++) {
            const crdt_obj_t *x = crdt_replica_get(r0, kc.keys[k], strlen(kc.keys[k]));
            const crdt_obj_t *y = crdt_replica_get(ri, kc.keys[k], strlen(kc.keys[k]));
            crdt_buf_t bx = {0}, by = {0};
            if (x)
                crdt_obj_encode(x, &bx);
            if (y)
                crdt_obj_encode(y, &by);
            if (!y || bx.len != by.len || memcmp(bx.data, by.data, bx.len))
                snprintf(why, cap, "key %s: node %d's encoding differs from node 1's", kc.keys[k],
                         i + 1);
            crdt_buf_free(&bx);
            crdt_buf_free(&by);
        }
    }
    for (size_t w = 0; w < S->acked.n && !why[0]; w++) {
        const wrec_t *wr = &S->acked.v[w];
        crdt_obj_t *d = crdt_obj_decode(wr->enc, wr->n, NULL);
        for (int i = 0; i < S->n && d && !why[0]; i++) {
            const crdt_obj_t *o = crdt_replica_get(crdt_store_embedded_replica(S->nodes[i].inner),
                                                   wr->key, strlen(wr->key));
            crdt_obj_t *c = o ? crdt_obj_clone(o) : NULL;
            if (!c || crdt_obj_merge(c, d) != 0)
                snprintf(why, cap, "an acknowledged write to %s is missing on node %d", wr->key,
                         i + 1);
            crdt_obj_free(c);
        }
        crdt_obj_free(d);
    }
    free(kc.keys);
}

static crdt_peer_status_t *status_of(node_t *a, uint64_t node, crdt_peer_status_t *buf)
{
    crdt_peer_status_t st[16];
    size_t n = crdt_peers_status(a->E, st, 16, a->S->now);
    for (size_t i = 0; i < n && i < 16; i++)
        if (st[i].node_id == node) {
            *buf = st[i];
            return buf;
        }
    return NULL;
}

static int links_up(node_t *a)
{
    crdt_peer_status_t st[16];
    size_t n = crdt_peers_status(a->E, st, 16, a->S->now);
    int up = 0;
    for (size_t i = 0; i < n && i < 16; i++)
        up += !strcmp(st[i].state, "up");
    return up;
}

/* ---- scripted scenarios --------------------------------------------------------------------- */

static void test_basics(const char *tmp)
{
    sim_t S;
    sim_init(&S, 1, 2, tmp);
    S.nodes[0].persistent = S.nodes[1].persistent = true;
    sim_dial(&S, 0, 1);
    sim_dial(&S, 1, 0);
    sim_start(&S);
    run_until(&S, 1000);
    ok(links_up(&S.nodes[0]) == 1 && links_up(&S.nodes[1]) == 1,
       "both nodes dialled each other: one link per pair is up on each side");
    crdt_peers_stats_t ps;
    crdt_peers_stats(S.nodes[0].E, &ps);
    is_int((int)ps.links, 1, "node 1 keeps one link (the duplicate was closed)");
    rng_t r = {7};
    for (int i = 0; i < 60; i++)
        random_write(&S.nodes[i % 2], &r);
    run_until(&S, 3000);
    char why[300];
    check_final(&S, why, sizeof(why));
    ok(!why[0], "writes on both sides replicate both ways (%s)", why[0] ? why : "identical");

    /* node 2 (higher id) restarts; node 1's dial is the one kept, so node 2's own dial is closed
     * as a duplicate: its status must still show what node 1 acked (the bug this fixes) */
    uint64_t last2 = crdt_store_last_seq(S.nodes[1].st);
    crdt_peer_status_t st;
    ok(status_of(&S.nodes[1], 1, &st) && st.ack_received == last2 && st.lag_deltas == 0,
       "before the restart node 2 sees node 1 acked all %" PRIu64 " changes", last2);
    node_down(&S.nodes[1], false);
    S.nodes[1].dial_block_until = S.now + 2000; /* node 1's redial arrives first */
    S.nodes[1].up_at = NEVER;
    run_until(&S, S.now + 50);
    node_open(&S.nodes[1]);
    run_until(&S, S.now + 4000);
    ok(links_up(&S.nodes[1]) == 1, "node 2 is linked again");
    ok(status_of(&S.nodes[1], 1, &st) != NULL, "node 2 has a record of node 1");
    diag("node 2's view of node 1: state %s, acks %" PRIu64 "/%" PRIu64 ", lag %" PRIu64, st.state,
         st.ack_sent, st.ack_received, st.lag_deltas);
    ok(!strcmp(st.state, "up") && !strcmp(st.name, "sim://0"),
       "... one record: the dial slot, up, whichever link survived");
    is_int((int)st.ack_received, (int)last2, "last_ack_received is node 1's resume mark");
    is_int((int)st.lag_deltas, 0, "no lag reported on an idle, synchronised pair");
    ok(!st.outbound, "the surviving link is node 1's dial (inbound here)");
    sim_free(&S);
}

static void test_clock(const char *tmp)
{
    sim_t S;
    sim_init(&S, 2, 3, tmp);
    sim_dial(&S, 0, 1);
    sim_dial(&S, 2, 0);
    S.nodes[1].clock_offset = 30 * 1000;          /* 30 s ahead: within the bound */
    S.nodes[2].clock_offset = 2 * 86400 * 1000ll; /* two days ahead: refused */
    sim_start(&S);
    run_until(&S, 3000);
    ok(links_up(&S.nodes[1]) == 1, "a peer 30 s ahead is linked");
    crdt_peers_stats_t a, c;
    crdt_peers_stats(S.nodes[0].E, &a);
    crdt_peers_stats(S.nodes[2].E, &c);
    ok(links_up(&S.nodes[2]) == 0, "a peer two days ahead is not linked");
    cmp_ok(a.clock_refusals, ">=", 1, "node 1 counted the refusal (%" PRIu64 ")", a.clock_refusals);
    cmp_ok(c.clock_refusals, ">=", 1, "node 3 counted being refused (%" PRIu64 ")",
           c.clock_refusals);
    ok(S.nodes[0].log_clock_lines >= 1, "node 1 logged why");
    crdt_peer_status_t st;
    ok(status_of(&S.nodes[2], 0, &st) || true, "node 3 has a record of its dial slot");
    crdt_peer_status_t s3[4];
    size_t n = crdt_peers_status(S.nodes[2].E, s3, 4, S.now);
    ok(n == 1 && strstr(s3[0].last_error, "clock") != NULL, "node 3's status says: %s",
       n ? s3[0].last_error : "(none)");
    sim_free(&S);

    /* the line names both clocks and the bound */
    sim_init(&S, 3, 2, tmp);
    sim_dial(&S, 1, 0);
    S.nodes[1].clock_offset = -3 * 86400 * 1000ll;
    S.max_drift_ms = 60000;
    sim_start(&S);
    run_until(&S, 500);
    /* the dialler compares first (the challenge carries the server's clock) */
    const char *line = S.nodes[1].clock_line;
    ok(strstr(line, "clock differs by 2591") && strstr(line, "ours 2023-11-11T22:13:2") &&
           strstr(line, "the peer's 2023-11-14T22:13:2") && strstr(line, "60000 ms"),
       "the log line names both clocks and the bound: %s", line);
    ok(strstr(S.nodes[0].last_log, "refused by the peer: clocks differ"),
       "the other side logs the refusal: %s", S.nodes[0].last_log);
    sim_free(&S);
}

/* Refused handshakes: nothing links, both sides say why, the good link stays. */
static void test_refusals(const char *tmp)
{
    sim_t S;
    sim_init(&S, 4, 3, tmp);
    sim_dial(&S, 1, 0);
    sim_dial(&S, 2, 0);
    S.nodes[1].secret = "another cluster's secret, long enough";
    S.nodes[2].cluster = "elsewhere";
    sim_start(&S);
    run_until(&S, 300);
    ok(links_up(&S.nodes[0]) == 0 && links_up(&S.nodes[1]) == 0 && links_up(&S.nodes[2]) == 0,
       "a wrong secret and another cluster link nobody");
    crdt_peer_status_t st[4];
    size_t n = crdt_peers_status(S.nodes[1].E, st, 4, S.now);
    ok(n == 1 && strstr(st[0].last_error, "wrong proof of the cluster secret"),
       "the node with the wrong secret is told: %s", n ? st[0].last_error : "");
    n = crdt_peers_status(S.nodes[2].E, st, 4, S.now);
    ok(n == 1 && strstr(st[0].last_error, "cluster mismatch: the peer is in \"elsewhere\""),
       "the node of another cluster is told: %s", n ? st[0].last_error : "");
    n = crdt_peers_status(S.nodes[0].E, st, 4, S.now);
    is_int((int)n, 0, "the refusing node keeps no record of either");
    /* configuration faults are retried slowly: a few attempts in 20 s, not hundreds */
    uint64_t msgs = S.msgs;
    run_until(&S, 20000);
    cmp_ok(S.msgs - msgs, "<", 60, "refused dials back off (%" PRIu64 " messages in 20 s)",
           S.msgs - msgs);
    sim_free(&S);
}

/* The marks: an old peers.state is read once (upgrade), then the store mark is the truth. */
static void test_marks(const char *tmp)
{
    sim_t S;
    sim_init(&S, 5, 2, tmp);
    S.nodes[0].persistent = true;
    S.nodes[0].legacy = "crdt-peers 1\nepoch 00000000c0ffee01\nmark 2 0000000000000abc 17\n";
    sim_dial(&S, 0, 1);
    sim_start(&S);
    crdt_peers_stats_t ps;
    crdt_peers_stats(S.nodes[0].E, &ps);
    ok(ps.epoch == 0xc0ffee01,
       "the epoch of an old peers.state is kept on upgrade (%016" PRIx64 ")", ps.epoch);
    run_until(&S, 1000);
    node_down(&S.nodes[0], false);
    S.nodes[0].legacy = "crdt-peers 1\nepoch 00000000deadbeef\n"; /* ignored from now on */
    node_open(&S.nodes[0]);
    crdt_peers_stats(S.nodes[0].E, &ps);
    ok(ps.epoch == 0xc0ffee01,
       "after a restart the store's mark holds it; the old file is not read "
       "again");
    uint64_t e1 = 0;
    crdt_peers_stats(S.nodes[1].E, &ps);
    e1 = ps.epoch;
    node_down(&S.nodes[1], false);
    node_open(&S.nodes[1]);
    crdt_peers_stats(S.nodes[1].E, &ps);
    ok(ps.epoch != e1, "a store in memory starts a new epoch at every start (peers resend)");
    run_until(&S, S.now + 2000);
    ok(links_up(&S.nodes[0]) == 1, "and links again");
    sim_free(&S);
}

/* The store's anti-entropy ops on their own: two embedded stores reconcile and name the keys that
 * differ; the index follows later writes (refreshed from the change feed). */
typedef struct rsx_run {
    crdt_buf_t msg;
    bool done, failed;
    size_t ndiffs, we_have, they_have;
} rsx_run_t;

static void rsx_cb(void *ud, int rc, const crdt_store_rsx_result_t *res)
{
    rsx_run_t *r = ud;
    r->msg.len = 0;
    if (rc < 0) {
        r->failed = true;
        return;
    }
    crdt_buf_append(&r->msg, res->reply, res->reply_len);
    r->done = res->done;
    if (res->done) {
        r->ndiffs = res->ndiffs;
        r->we_have = r->they_have = 0;
        for (size_t i = 0; i < res->ndiffs; i++) {
            r->we_have += (res->diffs[i].flags & CRDT_RSX_WE_HAVE) != 0;
            r->they_have += (res->diffs[i].flags & CRDT_RSX_THEY_HAVE) != 0;
        }
    }
}

static int count_key_cb(void *ud, const void *key, size_t klen, const crdt_obj_t *o)
{
    (void)o;
    int *n = ud;
    *n += klen == 2 && !memcmp(key, "x1", 2);
    return 0;
}

/* One session between a and b (a initiates); r[0] is a's outcome, r[1] b's. */
static void rsx_session(crdt_store_t *a, crdt_store_t *b, rsx_run_t r[2])
{
    crdt_rsx_config_t cfg;
    crdt_rsx_config_init(&cfg);
    cfg.seed = 42;
    crdt_store_rsx_t *sa = crdt_store_rsx_open(a, true, &cfg),
                     *sb = crdt_store_rsx_open(b, false, &cfg);
    memset(r, 0, 2 * sizeof(*r));
    crdt_store_rsx_step(a, sa, NULL, 0, rsx_cb, &r[0]);
    for (int turn = 1; turn < 40 && r[1 - turn % 2].msg.len && !r[0].failed && !r[1].failed;
         turn++) {
        int to = turn % 2;
        crdt_buf_t m = r[1 - to].msg;
        memset(&r[1 - to].msg, 0, sizeof(m));
        crdt_store_rsx_step(to ? b : a, to ? sb : sa, m.data, m.len, rsx_cb, &r[to]);
        crdt_buf_free(&m);
    }
    crdt_store_rsx_close(a, sa);
    crdt_store_rsx_close(b, sb);
    crdt_buf_free(&r[0].msg);
    crdt_buf_free(&r[1].msg);
}

static void test_store_rsx(void)
{
    crdt_replica_config_t rc;
    crdt_replica_config_init(&rc);
    rc.node_id = 1;
    crdt_store_t *a = crdt_store_embedded_open(&rc, NULL);
    rc.node_id = 2;
    crdt_store_t *b = crdt_store_embedded_open(&rc, NULL);
    crdt_mut_t m;
    memset(&m, 0, sizeof(m));
    m.type = CRDT_GCOUNTER;
    m.kind = CRDT_MUT_INCR;
    m.n = 1;
    int rcw = 0;
    for (int i = 0; i < 200; i++) {
        char k[16];
        snprintf(k, sizeof(k), "k%d", i);
        crdt_store_write(a, k, strlen(k), &m, write_cb, &rcw);
        crdt_store_write(b, k, strlen(k), &m, write_cb, &rcw);
    }
    is_int((int)crdt_store_rsx_items(a), 200, "the index holds every key (built on first use)");
    rsx_run_t r[2];
    rsx_session(a, b, r);
    /* both wrote 1 to every counter, as different replicas: every key differs */
    ok(r[0].done && r[1].done && r[0].ndiffs == 200 && r[1].ndiffs == 200,
       "200 keys differ, found by both sides (%zu, %zu)", r[0].ndiffs, r[1].ndiffs);
    crdt_store_t *c = crdt_store_embedded_open(&rc, NULL); /* node 2 again, empty */
    crdt_store_write(a, "x1", 2, &m, write_cb, &rcw);
    rsx_session(a, c, r);
    ok(r[0].done && r[0].ndiffs == 201 && r[0].we_have == 201 && r[0].they_have == 0,
       "against an empty store: the initiator holds all 201 (the index saw the later write)");
    int seen = 0;
    crdt_store_rsx_keys(a, crdt_rsx_key_id("x1", 2), count_key_cb, NULL, &seen);
    is_int(seen, 1, "rsx_keys names the key of an id, with its state");
    crdt_store_close(a);
    crdt_store_close(b);
    crdt_store_close(c);
}

/* ---- seeded chaos --------------------------------------------------------------------------- */

static bool run_seed(uint64_t seed, const char *tmp, char *why, size_t cap, bool deferred)
{
    sim_t S;
    rng_t r = {seed ^ 0x5eed};
    int n = 2 + (int)rng_below(&r, 3);
    sim_init(&S, seed, n, tmp);
    S.deferred = deferred;
    /* topology: a full mesh (each pair dialled by one or both), or a chain (anti-entropy relays) */
    bool chain = n > 2 && rng_chance(&r, 0.2);
    for (int i = 0; i < n; i++)
        for (int j = 0; j < n; j++) {
            if (i == j || (chain && abs(i - j) != 1))
                continue;
            if (i < j || rng_chance(&r, 0.5))
                sim_dial(&S, i, j);
            else if (!chain && j > i)
                sim_dial(&S, i, j);
        }
    for (int i = 0; i < n; i++)
        for (int j = i + 1; j < n; j++) {
            /* every pair must have a dialler */
            bool any = false;
            for (int k = 0; k < S.nodes[i].nslots; k++)
                any |= S.nodes[i].slot_target[k] == j;
            for (int k = 0; k < S.nodes[j].nslots; k++)
                any |= S.nodes[j].slot_target[k] == i;
            if (!any && (!chain || j == i + 1))
                sim_dial(&S, i, j);
        }
    for (int i = 0; i < n; i++)
        S.nodes[i].persistent = rng_chance(&r, 0.5);
    S.faults = true;
    S.p_drop = rng_chance(&r, 0.5) ? 0.002 * (double)rng_below(&r, 10) : 0;
    S.p_dup = rng_chance(&r, 0.5) ? 0.002 * (double)rng_below(&r, 10) : 0;
    S.p_reorder = rng_chance(&r, 0.5) ? 0.002 * (double)rng_below(&r, 10) : 0;
    S.latency_max = 1 + (unsigned)rng_below(&r, 30);
    sim_start(&S);
    if (S.failed) {
        snprintf(why, cap, "setup failed");
        sim_free(&S);
        return false;
    }
    uint64_t chaos_end = 1000 + rng_below(&r, 5000);
    uint64_t next_write = 0, next_fault = 200 + rng_below(&r, 1000);
    while (S.now < chaos_end && !S.failed) {
        if (S.now >= next_write) {
            int k = (int)rng_below(&r, (uint64_t)n);
            if (S.nodes[k].up && random_write(&S.nodes[k], &r) > 0)
                tot.writes++;
            next_write = S.now + rng_below(&r, 40);
        }
        if (S.now >= next_fault) {
            int k = (int)rng_below(&r, (uint64_t)n);
            int j = (int)rng_below(&r, (uint64_t)n);
            switch (rng_below(&r, 4)) {
            case 0: /* restart, losing the log's tail or not */
                if (S.nodes[k].up) {
                    bool lose = rng_chance(&r, 0.5);
                    tot.restarts++;
                    tot.lossy += lose && S.nodes[k].persistent;
                    node_down(&S.nodes[k], lose);
                    S.nodes[k].up_at = S.now + 50 + rng_below(&r, 2000);
                }
                break;
            case 1: /* partition a pair for a while */
                if (j != k) {
                    tot.cuts++;
                    sim_cut(&S, k, j, true);
                }
                break;
            case 2: /* heal every partition */
                for (int a = 0; a < n; a++)
                    for (int b = 0; b < n; b++)
                        S.cut[a][b] = false;
                break;
            default: break; /* quiet */
            }
            next_fault = S.now + 100 + rng_below(&r, 1500);
        }
        for (int k = 0; k < n; k++)
            if (!S.nodes[k].up && S.nodes[k].up_at <= S.now) {
                S.nodes[k].up_at = NEVER;
                node_open(&S.nodes[k]);
            }
        uint64_t t = next_write < next_fault ? next_write : next_fault;
        for (int k = 0; k < n; k++)
            if (!S.nodes[k].up && S.nodes[k].up_at < t)
                t = S.nodes[k].up_at;
        if (t > chaos_end)
            t = chaos_end;
        if (t <= S.now)
            t = S.now + 1;
        run_until(&S, t);
    }
    /* heal: no faults, no partitions, every node up */
    S.faults = false;
    memset(S.cut, 0, sizeof(S.cut));
    for (int k = 0; k < n; k++)
        if (!S.nodes[k].up) {
            S.nodes[k].up_at = NEVER;
            node_open(&S.nodes[k]);
        }
    uint64_t limit = S.now + 120000;
    bool same = false;
    while (S.now < limit && !S.failed) {
        run_until(&S, S.now + 500);
        if (digests_equal(&S)) {
            same = true;
            break;
        }
    }
    why[0] = '\0';
    if (S.failed)
        snprintf(why, cap, "the simulation failed");
    else if (!same)
        snprintf(why, cap, "no convergence within 120 s of simulated time after healing");
    if (!why[0]) {
        for (int k = 0; k < n; k++)
            node_flush(&S.nodes[k]);
        check_final(&S, why, cap);
    }
    tot.runs++;
    tot.sim_ms += S.now;
    tot.msgs += S.msgs;
    tot.drops += S.drops;
    tot.acked += S.acked.n;
    if (why[0])
        diag("seed %" PRIu64 ": %d nodes%s, drop %.3f dup %.3f reorder %.3f, %" PRIu64
             " messages (%" PRIu64 " dropped), %zu acknowledged writes, t=%" PRIu64 " ms",
             seed, n, chain ? " (chain)" : "", S.p_drop, S.p_dup, S.p_reorder, S.msgs, S.drops,
             S.acked.n, S.now);
    sim_free(&S);
    return !why[0];
}

int main(void)
{
    const char *lg = getenv("CRDT_SIM_LOG");
    sim_log = lg && *lg && *lg != '0';
    /* The data directories: CRDT_SIM_DIR, else /dev/shm when there is one (a crash is simulated
     * by restoring the files as they were written, so the file system's own durability plays no
     * part, and thousands of runs on a disk would mostly wait for fsync), else $TMPDIR. */
    const char *td = getenv("CRDT_SIM_DIR");
    if (!td || !*td)
        td = access("/dev/shm", W_OK) == 0 ? "/dev/shm" : getenv("TMPDIR");
    char tmp[512];
    snprintf(tmp, sizeof(tmp), "%s/peer-sim-XXXXXX", td && *td ? td : "/tmp");
    if (!mkdtemp(tmp)) {
        printf("1..0 # SKIP no temporary directory\n");
        return 0;
    }

    test_basics(tmp);
    test_clock(tmp);
    test_refusals(tmp);
    test_store_rsx();
    test_marks(tmp);

    const char *se = getenv("CRDT_SEED");
    const char *ne = getenv("CRDT_SIM_SEEDS");
    uint64_t first = se && *se ? strtoull(se, NULL, 0) : 1;
    long count = ne && *ne ? strtol(ne, NULL, 10) : CRDT_SIM_DEFAULT_SEEDS;
    long failed = 0;
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    for (long i = 0; i < count; i++) {
        char why[300];
        uint64_t seed = first + (uint64_t)i;
        if (!run_seed(seed, tmp, why, sizeof(why), false)) {
            if (failed++ < 5)
                diag("CRDT_SEED=%" PRIu64
                     " CRDT_SIM_SEEDS=1 CRDT_SIM_DEFERRED_SEEDS=0 replays it: %s",
                     seed, why);
        }
    }
    /* the same seeds with every store completing later (crdt_store_deferred_wrap) */
    const char *de = getenv("CRDT_SIM_DEFERRED_SEEDS");
    long dcount = de && *de ? strtol(de, NULL, 10) : CRDT_SIM_DEFERRED_DEFAULT_SEEDS;
    long dfailed = 0;
    for (long i = 0; i < dcount; i++) {
        char why[300];
        uint64_t seed = first + (uint64_t)i;
        if (!run_seed(seed, tmp, why, sizeof(why), true)) {
            if (dfailed++ < 5)
                diag("CRDT_SEED=%" PRIu64 " CRDT_SIM_SEEDS=0 CRDT_SIM_DEFERRED_SEEDS=1 replays it "
                     "(deferred store): %s",
                     seed, why);
        }
    }
    clock_gettime(CLOCK_MONOTONIC, &t1);
    double secs = (double)(t1.tv_sec - t0.tv_sec) + (double)(t1.tv_nsec - t0.tv_nsec) / 1e9;
    diag("%" PRIu64 " runs: %.1f s simulated on average, %" PRIu64 " steps, %" PRIu64
         " writes (%" PRIu64 " acknowledged), %" PRIu64 " messages (%" PRIu64 " dropped, %" PRIu64
         " duplicated, %" PRIu64 " overtaken), %" PRIu64 " restarts (%" PRIu64
         " losing the log tail), %" PRIu64 " partitions, %" PRIu64 " links up, %" PRIu64
         " anti-entropy rounds, %" PRIu64 " keys repaired",
         tot.runs, tot.runs ? (double)tot.sim_ms / 1e3 / (double)tot.runs : 0, tot.steps,
         tot.writes, tot.acked, tot.msgs, tot.drops, tot.dups, tot.reorders, tot.restarts,
         tot.lossy, tot.cuts, tot.ups, tot.ae_rounds, tot.repaired);
    ok(failed == 0,
       "%ld seeded runs from seed %" PRIu64 " converge byte-identical and keep every "
       "acknowledged write (%ld failed, %.1f s)",
       count, first, failed, secs);
    ok(dfailed == 0,
       "%ld seeded runs from seed %" PRIu64 " over stores completing later converge byte-identical "
       "and keep every acknowledged write (%ld failed)",
       dcount, first, dfailed);
    rmdir(tmp);
    return done_testing();
}
