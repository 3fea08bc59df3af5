/* test_redis_converge.c - three redis-servers with crdt.so converge whatever the delivery order
 *
 * Each step either applies a random local write on one server (its CRDT.STATE of the key becomes
 * a message in a pool) or delivers a random pooled message to a random server with CRDT.MERGE
 * (messages repeat, arrive out of order, and interleave with local writes). At the end every
 * server receives every message once more, in its own shuffled order, and then every key's
 * CRDT.STATE must be byte-identical on all three, and so must DEBUG DIGEST-VALUE.
 *
 * A second phase checks the deltas the module replicates: three fresh servers with an AOF each
 * take random local writes only; the CRDT.MERGE deltas each one appended to its AOF (what a Redis
 * replica would receive) are then delivered to the other two, shuffled and partly duplicated, and
 * again every key must end byte-identical. Seed: CRDT_SEED.
 */
#include "tap.h"

#include <dirent.h>
#include <limits.h>
#include <stdbool.h>
#include <stdint.h>
#include <time.h>

#include "logpos.h"
#include "logval.h"
#include "redis_helper.h"

#define NSERVERS 3
#define STEPS 1500
#define MAX_MSGS 1200

static rh_server_t srv[NSERVERS];

static uint64_t rng_state;
static uint64_t rnd(void)
{
    /* splitmix64 */
    uint64_t z = (rng_state += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}
static unsigned below(unsigned n)
{
    return (unsigned)(rnd() % n);
}

typedef struct msg {
    int key;
    char *data;
    size_t len;
} msg_t;

static msg_t msgs[MAX_MSGS];
static int nmsgs;

static const char *keys[] = {"tl:a", "tl:b", "tl:c", "cnt", "set", "reg"};
#define NKEYS 6

static long long counter_total;
static int merge_errors;

static void local_write(int s, int k)
{
    rh_server_t *x = &srv[s];
    char member[8];
    snprintf(member, sizeof(member), "m%u", below(12));
    int score = (int)below(24); /* small ranges: collisions, ties, trims */
    long long r;
    if (k < 3) {
        if (below(3) == 0)
            r = rh_int(rh_cmd(x, "CRDT.TLREM %s %d %s", keys[k], score, member));
        else
            r = rh_int(rh_cmd(x, "CRDT.TLADD %s %d %s", keys[k], score, member));
    } else if (k == 3) {
        long long d = (long long)below(21) - 10;
        r = rh_int(rh_cmd(x, "CRDT.INCRBY cnt %lld", d));
        counter_total += d;
    } else if (k == 4) {
        r = rh_int(rh_cmd(x, below(3) == 0 ? "CRDT.SREM set %s" : "CRDT.SADD set %s", member));
    } else {
        r = rh_int(rh_cmd(x, "CRDT.SET reg v%llu", (unsigned long long)below(1000)));
    }
    if (r == LLONG_MIN)
        merge_errors++;
    if (nmsgs < MAX_MSGS) {
        size_t len = 0;
        char *st = rh_str(rh_cmd(x, "CRDT.STATE %s", keys[k]), &len);
        if (st) {
            msgs[nmsgs].key = k;
            msgs[nmsgs].data = st;
            msgs[nmsgs].len = len;
            nmsgs++;
        }
    }
}

static void deliver(int s, const msg_t *m)
{
    redisReply *r = rh_cmd(&srv[s], "CRDT.MERGE %s %b", keys[m->key], m->data, m->len);
    if (!r || r->type != REDIS_REPLY_INTEGER) {
        merge_errors++;
        if (r && r->type == REDIS_REPLY_ERROR)
            diag("merge error: %s", r->str);
    }
    if (r)
        freeReplyObject(r);
}

static void check_converged(const char *phase)
{
    int same_state = 0, same_digest = 0;
    for (int k = 0; k < NKEYS; k++) {
        char *st[NSERVERS];
        size_t len[NSERVERS];
        char *dg[NSERVERS];
        for (int s = 0; s < NSERVERS; s++) {
            st[s] = rh_str(rh_cmd(&srv[s], "CRDT.STATE %s", keys[k]), &len[s]);
            redisReply *r = rh_cmd(&srv[s], "DEBUG DIGEST-VALUE %s", keys[k]);
            dg[s] = NULL;
            if (r && r->type == REDIS_REPLY_ARRAY && r->elements == 1)
                dg[s] = strdup(r->element[0]->str);
            if (r)
                freeReplyObject(r);
        }
        bool eq = st[0] != NULL, deq = dg[0] != NULL;
        for (int s = 1; s < NSERVERS; s++) {
            eq = eq && st[s] && len[s] == len[0] && memcmp(st[s], st[0], len[0]) == 0;
            deq = deq && dg[s] && strcmp(dg[s], dg[0]) == 0;
        }
        if (!eq)
            diag("%s: key %s differs (sizes %zu %zu %zu)", phase, keys[k], len[0], len[1], len[2]);
        same_state += eq;
        same_digest += deq;
        for (int s = 0; s < NSERVERS; s++) {
            free(st[s]);
            free(dg[s]);
        }
    }
    is_int(same_state, NKEYS, "%s: CRDT.STATE byte-identical on %d servers for every key", phase,
           NSERVERS);
    is_int(same_digest, NKEYS, "%s: DEBUG DIGEST-VALUE identical for every key", phase);
}

/* ---- phase 2: the deltas written to the AOF ------------------------------------------------- */

typedef struct delta {
    char *key;
    char *data;
    size_t len;
} delta_t;

/* Parses a RESP bulk "$n\r\n<bytes>\r\n" at *p; returns a malloc'd copy or NULL. */
static char *resp_bulk(const char **p, const char *end, size_t *len)
{
    if (*p >= end || **p != '$')
        return NULL;
    char *nl;
    long n = strtol(*p + 1, &nl, 10);
    if (n < 0 || nl + 2 + n + 2 > end)
        return NULL;
    char *out = malloc((size_t)n + 1);
    memcpy(out, nl + 2, (size_t)n);
    out[n] = '\0';
    *len = (size_t)n;
    *p = nl + 2 + n + 2;
    return out;
}

/* Every delta in a server's incremental AOF files, in order: CRDT.MERGE key <payload>, or with
 * the change log on, CRDT.LOG.APPLY log key <record: ms and entry, logval.h>. */
static int aof_deltas(const rh_server_t *s, delta_t *out, int max)
{
    char dir[300];
    snprintf(dir, sizeof(dir), "%s/appendonlydir", s->dir);
    DIR *d = opendir(dir);
    int n = 0;
    if (!d)
        return 0;
    struct dirent *e;
    while ((e = readdir(d))) {
        if (!strstr(e->d_name, ".incr.aof"))
            continue;
        char path[600];
        snprintf(path, sizeof(path), "%s/%s", dir, e->d_name);
        FILE *f = fopen(path, "rb");
        if (!f)
            continue;
        fseek(f, 0, SEEK_END);
        long size = ftell(f);
        fseek(f, 0, SEEK_SET);
        char *buf = malloc((size_t)size + 1);
        size_t got = fread(buf, 1, (size_t)size, f);
        fclose(f);
        const char *p = buf, *end = buf + got;
        while (p < end && *p == '*' && n < max) {
            char *nl;
            long argc = strtol(p + 1, &nl, 10);
            p = nl + 2;
            enum { KEEP = 7 };
            char *args[KEEP] = {0};
            size_t lens[KEEP] = {0}, skip;
            for (long i = 0; i < argc; i++) {
                char *a = resp_bulk(&p, end, i < KEEP ? &lens[i] : &skip);
                if (i < KEEP) {
                    free(args[i]);
                    args[i] = a;
                } else {
                    free(a);
                }
            }
            if (argc == 3 && args[0] && strcmp(args[0], "CRDT.MERGE") == 0) {
                out[n++] = (delta_t){args[1], args[2], lens[2]};
                args[1] = args[2] = NULL;
            } else if (argc == 4 && args[0] && strcmp(args[0], "CRDT.LOG.APPLY") == 0) {
                crdtm_entry_t en;
                uint64_t ms;
                const char *ep;
                size_t el;
                if (crdtm_lv_record_parse(args[3], lens[3], &ms, &ep, &el) &&
                    crdtm_entry_decode(ep, el, &en) == 0) {
                    char *payload = malloc(en.dlen ? en.dlen : 1);
                    memcpy(payload, en.delta, en.dlen);
                    out[n++] = (delta_t){args[2], payload, en.dlen};
                    args[2] = NULL;
                }
            }
            for (int i = 0; i < KEEP; i++)
                free(args[i]);
        }
        free(buf);
    }
    closedir(d);
    return n;
}

static void test_aof_deltas(void)
{
    rh_server_t a[NSERVERS];
    const char *extra[] = {"--appendonly", "yes", "--appendfsync", "always", NULL};
    for (int s = 0; s < NSERVERS; s++) {
        char margs[64];
        snprintf(margs, sizeof(margs), "node-id %d timeline-max-size 8", s + 11);
        if (rh_start(&a[s], NULL, margs, extra) < 0)
            bail_out("cannot start redis-server with an AOF");
    }
    long long writes = 0;
    for (int i = 0; i < 600; i++) {
        int s = (int)below(NSERVERS), k = (int)below(NKEYS);
        char member[8];
        snprintf(member, sizeof(member), "m%u", below(12));
        rh_server_t *x = &a[s];
        if (k < 3)
            writes += rh_int(rh_cmd(x, below(3) ? "CRDT.TLADD %s %u %s" : "CRDT.TLREM %s %u %s",
                                    keys[k], below(24), member));
        else if (k == 3)
            rh_int(rh_cmd(x, "CRDT.INCRBY cnt %d", (int)below(21) - 10));
        else if (k == 4)
            rh_int(rh_cmd(x, below(3) ? "CRDT.SADD set %s" : "CRDT.SREM set %s", member));
        else
            rh_int(rh_cmd(x, "CRDT.SET reg %s", member));
    }
    static delta_t deltas[NSERVERS][1000];
    int nd[NSERVERS];
    int total = 0;
    for (int s = 0; s < NSERVERS; s++)
        total += nd[s] = aof_deltas(&a[s], deltas[s], 1000);
    ok(total > 300 && writes > 0, "%d deltas read from the three AOFs", total);
    /* Server t receives the other servers' deltas interleaved, ~1 in 4 delivered twice. */
    for (int t = 0; t < NSERVERS; t++) {
        int cap = 2 * total, n = 0;
        delta_t **q = malloc(sizeof(*q) * (size_t)cap);
        for (int s = 0; s < NSERVERS; s++)
            for (int i = 0; s != t && i < nd[s]; i++) {
                q[n++] = &deltas[s][i];
                if (below(4) == 0)
                    q[n++] = &deltas[s][i];
            }
        for (int i = n - 1; i > 0; i--) {
            int j = (int)below((unsigned)i + 1);
            delta_t *tmp = q[i];
            q[i] = q[j];
            q[j] = tmp;
        }
        int errors = 0;
        for (int i = 0; i < n; i++) {
            redisReply *r = rh_cmd(&a[t], "CRDT.MERGE %s %b", q[i]->key, q[i]->data, q[i]->len);
            errors += !r || r->type != REDIS_REPLY_INTEGER;
            if (r)
                freeReplyObject(r);
        }
        is_int(errors, 0, "server %d merged %d deltas (with duplicates) without an error", t + 1,
               n);
        free(q);
    }
    int same = 0;
    for (int k = 0; k < NKEYS; k++) {
        size_t l0, l;
        char *s0 = rh_str(rh_cmd(&a[0], "CRDT.STATE %s", keys[k]), &l0);
        bool eq = s0 != NULL;
        for (int s = 1; s < NSERVERS; s++) {
            char *st = rh_str(rh_cmd(&a[s], "CRDT.STATE %s", keys[k]), &l);
            eq = eq && st && l == l0 && memcmp(st, s0, l) == 0;
            free(st);
        }
        if (!eq)
            diag("deltas: key %s differs", keys[k]);
        same += eq;
        free(s0);
    }
    is_int(same, NKEYS, "deltas from the AOF: CRDT.STATE byte-identical on every server");
    for (int s = 0; s < NSERVERS; s++) {
        for (int i = 0; i < nd[s]; i++) {
            free(deltas[s][i].key);
            free(deltas[s][i].data);
        }
        rh_stop(&a[s]);
    }
}

int main(void)
{
    const char *why = rh_skip_reason();
    if (why)
        skip_all("%s", why);
    rh_watchdog(120);
    const char *seed_env = getenv("CRDT_SEED");
    uint64_t seed = seed_env ? strtoull(seed_env, NULL, 0) : (uint64_t)time(NULL);
    rng_state = seed;
    diag("seed %llu (set CRDT_SEED to repeat)", (unsigned long long)seed);
    for (int s = 0; s < NSERVERS; s++) {
        char margs[64];
        snprintf(margs, sizeof(margs), "node-id %d timeline-max-size 8", s + 1);
        if (rh_start(&srv[s], NULL, margs, NULL) < 0)
            bail_out("cannot start redis-server %d", s + 1);
    }

    /* A deliberate concurrent tie: add and remove of one member at one score on two servers. */
    rh_int(rh_cmd(&srv[0], "CRDT.TLADD tl:a 5 tie"));
    rh_int(rh_cmd(&srv[1], "CRDT.TLREM tl:a 5 tie"));
    /* Concurrent OR-Set add and remove: the add that the remover never saw survives. */
    rh_int(rh_cmd(&srv[0], "CRDT.SADD set both"));
    local_write(0, 4);
    for (int i = 0; i < nmsgs; i++)
        deliver(2, &msgs[i]);
    rh_int(rh_cmd(&srv[2], "CRDT.SREM set both"));
    rh_int(rh_cmd(&srv[1], "CRDT.SADD set both"));
    for (int k = 0; k < NKEYS; k++)
        for (int s = 0; s < NSERVERS; s++) {
            size_t len;
            char *st = rh_str(rh_cmd(&srv[s], "CRDT.STATE %s", keys[k]), &len);
            if (st && nmsgs < MAX_MSGS)
                msgs[nmsgs++] = (msg_t){k, st, len};
            else
                free(st);
        }

    for (int step = 0; step < STEPS; step++) {
        if (nmsgs == 0 || below(5) < 2)
            local_write((int)below(NSERVERS), (int)below(NKEYS));
        else
            deliver((int)below(NSERVERS), &msgs[below((unsigned)nmsgs)]);
    }
    is_int(merge_errors, 0, "no command failed during the random phase (%d messages)", nmsgs);

    /* Final delivery: every message to every server, each in its own order. */
    int *order = malloc(sizeof(int) * (size_t)nmsgs);
    for (int s = 0; s < NSERVERS; s++) {
        for (int i = 0; i < nmsgs; i++)
            order[i] = i;
        for (int i = nmsgs - 1; i > 0; i--) {
            int j = (int)below((unsigned)i + 1), t = order[i];
            order[i] = order[j];
            order[j] = t;
        }
        for (int i = 0; i < nmsgs; i++)
            deliver(s, &msgs[order[i]]);
    }
    free(order);
    is_int(merge_errors, 0, "no merge failed");
    check_converged("after all deliveries");

    for (int s = 0; s < NSERVERS; s++) {
        is_int(rh_int(rh_cmd(&srv[s], "CRDT.GET cnt")), counter_total,
               "server %d: counter equals the sum of every increment", s + 1);
        long long card = rh_int(rh_cmd(&srv[s], "CRDT.TLCARD tl:a"));
        ok(card >= 0 && card <= 8, "server %d: bounded timeline holds %lld <= 8", s + 1, card);
        is_int(rh_int(rh_cmd(&srv[s], "CRDT.SISMEMBER set both")), 1,
               "server %d: OR-Set add concurrent with a remove survives", s + 1);
    }
    redisReply *r = rh_cmd(&srv[0], "CRDT.TLSCORE tl:a tie");
    ok(r && (r->type == REDIS_REPLY_NIL || atof(r->str) > 5),
       "concurrent add and remove at one score: remove wins");
    if (r)
        freeReplyObject(r);

    /* Anti-entropy by full state, once more in reverse: nothing changes any more. */
    int changed = 0;
    for (int s = NSERVERS - 1; s >= 0; s--)
        for (int k = 0; k < NKEYS; k++) {
            size_t len;
            char *st = rh_str(rh_cmd(&srv[(s + 1) % NSERVERS], "CRDT.STATE %s", keys[k]), &len);
            if (st)
                changed += (int)rh_int(rh_cmd(&srv[s], "CRDT.MERGE %s %b", keys[k], st, len));
            free(st);
        }
    is_int(changed, 0, "converged servers: merging each other's state changes nothing");
    check_converged("after the state exchange");

    for (int i = 0; i < nmsgs; i++)
        free(msgs[i].data);
    test_aof_deltas();
    if (rh_sanitized())
        is_int(rh_sanitizer_reports(), 0, "no ASan/UBSan report from any redis-server");
    rh_cleanup();
    return done_testing();
}
