/* test_redis_cluster.c - crdt.so on a real Redis Cluster: key specs, ACL, CROSSSLOT, resharding
 * and failover under writes, and the per-slot change log followed across both
 *
 * Three primaries and three replicas of redis-server with crdt.so on loopback, made by
 * `redis-cli --cluster create`. A writer thread writes every CRDT type through a client that
 * follows MOVED/ASK and records what was acknowledged; after `redis-cli --cluster reshard` and
 * after a `kill -9` of a primary, every acknowledged write must be there, exactly (counters count
 * each acknowledged increment once). The change logs of all primaries, read from the start, must
 * join into exactly the state each key holds, and a reader's positions taken before the moves
 * must still be accepted after them.
 */
#include "tap.h"

#include <pthread.h>
#include <signal.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "crdt.h"
#include "logpos.h"
#include "redis_cluster_helper.h"
#include "redis_reconcile.h"

static rc_cluster_t CL;

/* ---- the writer: every type, a model of what was acknowledged -------------------------------- */

#define NKEYS 48 /* keys per type */
#define MAX_OPS 200000
enum { T_TL, T_PN, T_REG, T_SET, T_G, T_N };
static const char *const tname[T_N] = {"tl", "pn", "reg", "set", "g"};

typedef struct model {
    long long pn_acked[NKEYS], pn_unknown[NKEYS];
    long long g_acked[NKEYS], g_sent[NKEYS];
    long reg_last_acked[NKEYS]; /* op number of the last acknowledged SET, -1 none */
    long reg_unknown_after[NKEYS];
    unsigned char *acked; /* per op: 0 not acked, 1 acked, 2 unknown */
    unsigned char *type;
    unsigned short *key;
    long n;
} model_t;

typedef struct writer {
    rc_cluster_t *cl;
    model_t m;
    bool wait1; /* WAIT 1 after every write: acknowledged means on a replica too */
    volatile bool stop;
    long errors; /* error replies (not redirects) */
    char first_error[256];
    crdt_obj_t *g[NKEYS]; /* our own G-Counter per key, replica id 1000 */
    pthread_t th;
} writer_t;

static void key_name(char *buf, size_t cap, int type, int k)
{
    snprintf(buf, cap, "%s:%d", tname[type], k);
}

static void *writer_main(void *arg)
{
    writer_t *w = arg;
    rc_client_t c;
    if (rc_client_init(&c, w->cl) < 0)
        return NULL;
    unsigned rnd = 12345u + (unsigned)w->m.n;
    for (long i = w->m.n; i < MAX_OPS && !w->stop; i++) {
        rnd = rnd * 1103515245u + 12345u;
        int type = (int)(i % T_N), k = (int)((rnd >> 8) % NKEYS);
        char key[32], member[32], val[32];
        key_name(key, sizeof(key), type, k);
        snprintf(member, sizeof(member), "m%ld", i);
        redisReply *r = NULL;
        crdt_buf_t b = {0};
        switch (type) {
        case T_TL: r = rc_cmd(&c, key, "CRDT.TLADD %s %ld %s", key, i, member); break;
        case T_PN: r = rc_cmd(&c, key, "CRDT.INCRBY %s 1", key); break;
        case T_REG:
            snprintf(val, sizeof(val), "v%ld", i);
            r = rc_cmd(&c, key, "CRDT.SET %s %s", key, val);
            break;
        case T_SET: r = rc_cmd(&c, key, "CRDT.SADD %s %s", key, member); break;
        case T_G: {
            crdt_obj_t *d = NULL;
            if (!w->g[k])
                w->g[k] = crdt_obj_new(CRDT_GCOUNTER);
            crdt_gcounter_incr(w->g[k], 1000, 1, &d);
            crdt_obj_encode(d, &b);
            crdt_obj_free(d);
            w->m.g_sent[k]++;
            r = rc_cmd(&c, key, "CRDT.MERGE %s %b", key, b.data, b.len);
            crdt_buf_free(&b);
            break;
        }
        }
        int outcome = 2; /* unknown */
        if (r && r->type == REDIS_REPLY_ERROR) {
            if (!w->errors++)
                snprintf(w->first_error, sizeof(w->first_error), "%s: %s", key, r->str);
            outcome = 0;
        } else if (r) {
            outcome = 1;
            if (w->wait1) {
                redisContext *rc = rc_conn(&c, c.last_port);
                redisReply *wr = rc ? redisCommand(rc, "WAIT 1 2000") : NULL;
                if (!wr || wr->type != REDIS_REPLY_INTEGER || wr->integer < 1)
                    outcome = 2;
                if (wr)
                    freeReplyObject(wr);
            }
        }
        if (r)
            freeReplyObject(r);
        long n = w->m.n++;
        w->m.type[n] = (unsigned char)type;
        w->m.key[n] = (unsigned short)k;
        w->m.acked[n] = (unsigned char)outcome;
        if (type == T_PN) {
            if (outcome == 1)
                w->m.pn_acked[k]++;
            else if (outcome == 2)
                w->m.pn_unknown[k]++;
        } else if (type == T_G && outcome == 1) {
            w->m.g_acked[k] = w->m.g_sent[k];
        } else if (type == T_REG) {
            if (outcome == 1) {
                w->m.reg_last_acked[k] = n;
                w->m.reg_unknown_after[k] = 0;
            } else if (outcome == 2) {
                w->m.reg_unknown_after[k]++;
            }
        }
    }
    rc_client_free(&c);
    return NULL;
}

static void writer_init(writer_t *w, rc_cluster_t *cl)
{
    memset(w, 0, sizeof(*w));
    w->cl = cl;
    w->m.acked = calloc(MAX_OPS, 1);
    w->m.type = calloc(MAX_OPS, 1);
    w->m.key = calloc(MAX_OPS, sizeof(unsigned short));
    for (int k = 0; k < NKEYS; k++)
        w->m.reg_last_acked[k] = -1;
}

/* Starts (or resumes: the model carries over) the writer thread. */
static int writer_start(writer_t *w, bool wait1)
{
    w->wait1 = wait1;
    w->stop = false;
    return pthread_create(&w->th, NULL, writer_main, w);
}

static void writer_stop(writer_t *w)
{
    w->stop = true;
    pthread_join(w->th, NULL);
}

static void writer_free(writer_t *w)
{
    for (int k = 0; k < NKEYS; k++)
        crdt_obj_free(w->g[k]);
    free(w->m.acked);
    free(w->m.type);
    free(w->m.key);
}

static writer_t W;

/* Every acknowledged write is in the cluster; counters hold exactly the acknowledged increments
 * (plus at most the unknown ones); a register holds its last acknowledged value or a later one. */
static void check_writes(rc_client_t *c, writer_t *w, const char *when)
{
    long acked = 0, unknown = 0, missing = 0;
    for (long i = 0; i < w->m.n; i++) {
        if (w->m.acked[i] == 2)
            unknown++;
        if (w->m.acked[i] != 1)
            continue;
        acked++;
        int type = w->m.type[i], k = w->m.key[i];
        char key[32], member[32];
        key_name(key, sizeof(key), type, k);
        snprintf(member, sizeof(member), "m%ld", i);
        redisReply *r = NULL;
        bool good = true;
        if (type == T_TL) {
            r = rc_cmd(c, key, "CRDT.TLSCORE %s %s", key, member);
            good = r && r->type == REDIS_REPLY_STRING && atol(r->str) == i;
        } else if (type == T_SET) {
            r = rc_cmd(c, key, "CRDT.SISMEMBER %s %s", key, member);
            good = r && r->type == REDIS_REPLY_INTEGER && r->integer == 1;
        }
        if (!good && missing++ < 5)
            diag("%s: acknowledged write %ld to %s (%s) is missing", when, i, key, member);
        if (r)
            freeReplyObject(r);
    }
    is_int(missing, 0, "%s: all %ld acknowledged timeline and set writes are there (%ld unknown)",
           when, acked, unknown);
    long bad = 0;
    for (int k = 0; k < NKEYS; k++) {
        char key[32];
        key_name(key, sizeof(key), T_PN, k);
        redisReply *r = rc_cmd(c, key, "CRDT.GET %s", key);
        long long v = r && r->type == REDIS_REPLY_INTEGER ? r->integer : 0;
        if (r)
            freeReplyObject(r);
        if (v < w->m.pn_acked[k] || v > w->m.pn_acked[k] + w->m.pn_unknown[k]) {
            if (bad++ < 5)
                diag("%s: %s is %lld, acknowledged %lld (+%lld unknown)", when, key, v,
                     w->m.pn_acked[k], w->m.pn_unknown[k]);
        }
        key_name(key, sizeof(key), T_G, k);
        r = rc_cmd(c, key, "CRDT.GET %s", key);
        v = r && r->type == REDIS_REPLY_INTEGER ? r->integer : 0;
        if (r)
            freeReplyObject(r);
        if (v < w->m.g_acked[k] || v > w->m.g_sent[k]) {
            if (bad++ < 5)
                diag("%s: %s is %lld, acknowledged %lld, sent %lld", when, key, v, w->m.g_acked[k],
                     w->m.g_sent[k]);
        }
        if (w->m.reg_last_acked[k] >= 0) {
            key_name(key, sizeof(key), T_REG, k);
            r = rc_cmd(c, key, "CRDT.GET %s", key);
            long got = r && r->type == REDIS_REPLY_STRING ? atol(r->str + 1) : -1;
            if (r)
                freeReplyObject(r);
            bool fine = got == w->m.reg_last_acked[k] ||
                        (got > w->m.reg_last_acked[k] && w->m.reg_unknown_after[k] > 0);
            if (!fine && bad++ < 5)
                diag("%s: %s holds v%ld, last acknowledged v%ld", when, key, got,
                     w->m.reg_last_acked[k]);
        }
    }
    is_int(bad, 0,
           "%s: counters count every acknowledged increment once; registers hold the "
           "last acknowledged value",
           when);
}

/* ---- the change log, followed from outside ----------------------------------------------------
 */

#define MAX_LOGS 4096
typedef struct follower {
    int n;
    char name[MAX_LOGS][CRDTM_LOG_NAME_MAX];
    char pos[MAX_LOGS][CRDTM_POS_TEXT_MAX];
    crdt_obj_t *state[T_N][NKEYS]; /* the join of every delta read per key */
    long entries, truncated, errors;
} follower_t;

static int find_log(follower_t *f, const char *name)
{
    for (int i = 0; i < f->n; i++)
        if (!strcmp(f->name[i], name))
            return i;
    return -1;
}

/* Learns the logs every running primary lists. */
static void follower_discover(follower_t *f, rc_cluster_t *cl)
{
    for (int i = 0; i < cl->n; i++) {
        if (cl->node[i].pid <= 0)
            continue;
        redisReply *r = rh_cmd(&cl->node[i], "CRDT.LOG.LIST");
        for (size_t k = 0; r && r->type == REDIS_REPLY_ARRAY && k < r->elements; k++) {
            const char *nm = r->element[k]->str;
            if (find_log(f, nm) < 0 && f->n < MAX_LOGS) {
                snprintf(f->name[f->n], sizeof(f->name[0]), "%s", nm);
                snprintf(f->pos[f->n], sizeof(f->pos[0]), "0");
                f->n++;
            }
        }
        if (r)
            freeReplyObject(r);
    }
}

static void join_entry(follower_t *f, const char *key, size_t klen, const char *d, size_t dlen)
{
    int type = -1, k = -1;
    char kb[40];
    snprintf(kb, sizeof(kb), "%.*s", (int)(klen < 39 ? klen : 39), key);
    char *colon = strchr(kb, ':');
    if (colon) {
        *colon = '\0';
        for (int t = 0; t < T_N; t++)
            if (!strcmp(kb, tname[t]))
                type = t;
        k = atoi(colon + 1);
    }
    crdt_error_t err;
    crdt_obj_t *o = crdt_obj_decode(d, dlen, &err);
    if (!o) {
        if (f->errors++ < 3)
            diag("log entry of %s does not decode: %s", kb, err.text);
        return;
    }
    if (type < 0 || k < 0 || k >= NKEYS) { /* a key of another test ({acl}a) */
        crdt_obj_free(o);
        return;
    }
    if (!f->state[type][k])
        f->state[type][k] = o;
    else {
        crdt_obj_merge(f->state[type][k], o);
        crdt_obj_free(o);
    }
    f->entries++;
}

/* Reads every log from its position to its end through the cluster client. */
static void follower_read(follower_t *f, rc_client_t *c)
{
    for (int i = 0; i < f->n; i++) {
        for (int rounds = 0; rounds < 10000; rounds++) {
            redisReply *r = rc_cmd(c, f->name[i], "CRDT.LOG.READ %s %s 500", f->name[i], f->pos[i]);
            if (!r || r->type != REDIS_REPLY_ARRAY || r->elements != 3) {
                if (f->errors++ < 3)
                    diag("CRDT.LOG.READ %s %s: %s", f->name[i], f->pos[i],
                         r && r->type == REDIS_REPLY_ERROR ? r->str : "no reply");
                if (r)
                    freeReplyObject(r);
                break;
            }
            if (!strcmp(r->element[1]->str, "truncated"))
                f->truncated++;
            snprintf(f->pos[i], sizeof(f->pos[0]), "%s", r->element[0]->str);
            redisReply *es = r->element[2];
            for (size_t e = 0; e < es->elements; e++) {
                redisReply *en = es->element[e];
                join_entry(f, en->element[1]->str, en->element[1]->len, en->element[2]->str,
                           en->element[2]->len);
            }
            size_t got = es->elements;
            freeReplyObject(r);
            if (got < 500)
                break;
        }
    }
}

/* The joined log of every key equals the key's state (byte for byte: the encoding is canonical). */
static void check_log_matches(follower_t *f, rc_client_t *c, const char *when)
{
    long bad = 0, keys = 0;
    for (int t = 0; t < T_N; t++)
        for (int k = 0; k < NKEYS; k++) {
            char key[32];
            key_name(key, sizeof(key), t, k);
            redisReply *r = rc_cmd(c, key, "CRDT.STATE %s", key);
            crdt_buf_t b = {0};
            if (f->state[t][k])
                crdt_obj_encode(f->state[t][k], &b);
            bool has = r && r->type == REDIS_REPLY_STRING;
            bool same =
                has ? (b.len == r->len && !memcmp(b.data, r->str, b.len)) : f->state[t][k] == NULL;
            keys += has;
            if (!same && bad++ < 5)
                diag("%s: %s: the log joins to %zu bytes, the key holds %zu", when, key, b.len,
                     has ? r->len : 0);
            crdt_buf_free(&b);
            if (r)
                freeReplyObject(r);
        }
    is_int(bad, 0, "%s: the change logs join to exactly the state of each of %ld keys", when, keys);
}

static void follower_free(follower_t *f)
{
    for (int t = 0; t < T_N; t++)
        for (int k = 0; k < NKEYS; k++)
            crdt_obj_free(f->state[t][k]);
}

/* ---- key specs, ACL, CROSSSLOT -------------------------------------------------------------- */

/* COMMAND GETKEYS <cmd...> names exactly `want` (space separated). */
static void check_getkeys(rh_server_t *s, const char *cmd, const char *want)
{
    char buf[512];
    snprintf(buf, sizeof(buf), "COMMAND GETKEYS %s", cmd);
    redisReply *r = rh_cmd(s, buf);
    char got[256] = "";
    if (r && r->type == REDIS_REPLY_ARRAY)
        for (size_t i = 0; i < r->elements; i++) {
            strncat(got, i ? " " : "", sizeof(got) - strlen(got) - 1);
            strncat(got, r->element[i]->str, sizeof(got) - strlen(got) - 1);
        }
    else if (r && r->type == REDIS_REPLY_ERROR)
        snprintf(got, sizeof(got), "%s", r->str);
    is(got, want, "COMMAND GETKEYS %s", cmd);
    if (r)
        freeReplyObject(r);
}

static void test_keys(void)
{
    rh_server_t *s = &CL.node[0];
    static const struct {
        const char *cmd, *keys;
    } cases[] = {
        {"CRDT.TLADD a 1 x 2 y", "a"},
        {"CRDT.TLREM a 1 x", "a"},
        {"CRDT.TLRANGE a 0 10 WITHSCORES", "a"},
        {"CRDT.TLRANGEBYSCORE a +inf -inf LIMIT 5", "a"},
        {"CRDT.TLSELECT 10 a b c", "a b c"},
        {"CRDT.TLSELECT 10 a b WITHSCORES", "a b"},
        {"CRDT.TLSELECT 10 WITHSCORES", "WITHSCORES"},
        {"CRDT.TLCARD a", "a"},
        {"CRDT.TLSCORE a x", "a"},
        {"CRDT.INCRBY a 1", "a"},
        {"CRDT.DECRBY a 1", "a"},
        {"CRDT.GET a", "a"},
        {"CRDT.SET a v", "a"},
        {"CRDT.SADD a x y", "a"},
        {"CRDT.SREM a x", "a"},
        {"CRDT.SMEMBERS a", "a"},
        {"CRDT.SISMEMBER a x", "a"},
        {"CRDT.SCARD a", "a"},
        {"CRDT.STATE a", "a"},
        {"CRDT.MERGE a p q", "a"},
        {"CRDT.TYPE a", "a"},
        {"CRDT.INFO a", "a"},
        {"CRDT.LOG.READ crdt:log:{0}:0000000000000001 0 10", "crdt:log:{0}:0000000000000001"},
        {"CRDT.LOG.LIST 5", "ERR The command has no key arguments"},
        {"CRDT.RSX.OPEN {t} INITIATOR", "{t}"},
        {"CRDT.RSX.RECV {t} 0123456789abcdef msg", "{t}"},
        {"CRDT.RSX.DIFFS {t} 0123456789abcdef", "{t}"},
        {"CRDT.RSX.CLOSE {t} 0123456789abcdef", "{t}"},
        {"CRDT.RSX.DIGEST 0 16383", "ERR The command has no key arguments"},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++)
        check_getkeys(s, cases[i].cmd, cases[i].keys);

    /* GETKEYSANDFLAGS: TLSELECT's keys are read-only, as its key spec says */
    redisReply *r = rh_cmd(s, "COMMAND GETKEYSANDFLAGS CRDT.TLSELECT 10 a b WITHSCORES");
    bool ro = r && r->type == REDIS_REPLY_ARRAY && r->elements == 2;
    for (size_t i = 0; ro && i < r->elements; i++) {
        redisReply *fl = r->element[i]->element[1];
        bool has_ro = false, has_rw = false;
        for (size_t k = 0; k < fl->elements; k++) {
            has_ro |= !strcmp(fl->element[k]->str, "RO");
            has_rw |= !strcmp(fl->element[k]->str, "RW");
        }
        ro = has_ro && !has_rw;
    }
    ok(ro, "GETKEYSANDFLAGS CRDT.TLSELECT: both keys RO, none RW");
    if (r)
        freeReplyObject(r);
    r = rh_cmd(s, "COMMAND GETKEYSANDFLAGS CRDT.TLADD a 1 x");
    ok(r && r->type == REDIS_REPLY_ARRAY && r->elements == 1 &&
           !strcmp(r->element[0]->element[1]->element[0]->str, "RW"),
       "GETKEYSANDFLAGS CRDT.TLADD: RW");
    if (r)
        freeReplyObject(r);

    /* An ACL user who may only read keys (%R~*) runs every read, TLSELECT included, and no write */
    rc_client_t c;
    rc_client_init(&c, &CL);
    redisReply *w = rc_cmd(&c, "{acl}a", "CRDT.TLADD {acl}a 1 x");
    if (w)
        freeReplyObject(w);
    int owner = rc_node_by_port(&CL, c.last_port);
    rh_server_t *o = &CL.node[owner];
    is(rh_err(rh_cmd(o, "ACL SETUSER reader on >pw resetkeys %%R~* +@all")), "",
       "ACL SETUSER reader %%R~*");
    redisContext *rc = redisConnect("127.0.0.1", o->port);
    redisReply *a = redisCommand(rc, "AUTH reader pw");
    ok(a && a->type == REDIS_REPLY_STATUS, "AUTH reader");
    if (a)
        freeReplyObject(a);
    static const char *const reads[] = {"CRDT.TLSELECT 10 {acl}a {acl}b",
                                        "CRDT.TLSELECT 10 {acl}a WITHSCORES",
                                        "CRDT.TLRANGE {acl}a 0 10",
                                        "CRDT.TLCARD {acl}a",
                                        "CRDT.STATE {acl}a",
                                        "CRDT.TYPE {acl}a"};
    for (size_t i = 0; i < sizeof(reads) / sizeof(reads[0]); i++) {
        a = redisCommand(rc, reads[i]);
        ok(a && a->type != REDIS_REPLY_ERROR, "reader may run %s%s%s", reads[i],
           a && a->type == REDIS_REPLY_ERROR ? ": " : "",
           a && a->type == REDIS_REPLY_ERROR ? a->str : "");
        if (a)
            freeReplyObject(a);
    }
    a = redisCommand(rc, "CRDT.TLADD {acl}a 2 y");
    ok(a && a->type == REDIS_REPLY_ERROR && !strncmp(a->str, "NOPERM", 6),
       "reader gets NOPERM on CRDT.TLADD");
    if (a)
        freeReplyObject(a);
    redisFree(rc);

    /* CROSSSLOT: a multi-key command over two slots is refused whole, on any node */
    unsigned sa = crdtm_keyslot("a", 1), sb = crdtm_keyslot("b", 1);
    ok(sa != sb, "keys a and b are in different slots (%u, %u)", sa, sb);
    for (int i = 0; i < CL.n; i++) {
        const char *e = rh_err(rh_cmd(&CL.node[i], "CRDT.TLSELECT 10 a b"));
        ok(!strncmp(e, "CROSSSLOT", 9) || !strncmp(e, "MOVED", 5),
           "node %d: TLSELECT over two slots: %s", i, e);
        if (rc_node_by_port(&CL, c.slot_port[sa]) == i) {
            ok(!strncmp(e, "CROSSSLOT", 9), "the owner of a's slot answers CROSSSLOT");
        }
    }
    r = rc_cmd(&c, "{u}1", "CRDT.TLSELECT 10 {u}1 {u}2");
    ok(r && r->type == REDIS_REPLY_ARRAY, "TLSELECT over one hash tag is served");
    if (r)
        freeReplyObject(r);
    rc_client_free(&c);
}

/* ---- resharding ----------------------------------------------------------------------------- */

static void test_reshard(void)
{
    rc_client_t c;
    rc_client_init(&c, &CL);
    writer_t *w = &W;
    writer_start(w, false);
    rh_sleep_ms(700);

    /* a follower reads what is there before the move and keeps its positions */
    follower_t *f = calloc(1, sizeof(*f));
    follower_discover(f, &CL);
    follower_read(f, &c);
    int before = f->n;
    cmp_ok(before, ">", 0, "logs before resharding: %d", before);

    /* move the slots of some of the writer's keys, and more, from the first primary to another */
    int from = rc_slot_owner(&CL, 0, crdtm_keyslot("tl:0", 4));
    int to = -1;
    for (int i = 0; i < CL.n && to < 0; i++)
        if (i != from && !rc_is_synced_replica(&CL, i) && CL.node[i].pid > 0)
            to = i;
    char from_id[41], to_id[41], addr[32];
    ok(from >= 0 && to >= 0 && rc_node_id(&CL, from, from_id) == 0 &&
           rc_node_id(&CL, to, to_id) == 0,
       "source %d and target %d of the resharding", from, to);
    snprintf(addr, sizeof(addr), "127.0.0.1:%d", CL.node[from].port);
    char cli[4096];
    rh_find_tool("redis-cli", cli, sizeof(cli));
    char cmd[8192];
    snprintf(cmd, sizeof(cmd),
             "timeout 60 %s --cluster reshard %s --cluster-from %s --cluster-to %s "
             "--cluster-slots 1200 --cluster-yes --cluster-pipeline 5 >%s/reshard.log 2>&1",
             cli, addr, from_id, to_id, CL.node[0].dir);
    int owner_before[T_N][NKEYS];
    for (int t = 0; t < T_N; t++)
        for (int k = 0; k < NKEYS; k++) {
            char key[32];
            key_name(key, sizeof(key), t, k);
            owner_before[t][k] = rc_node_by_port(&CL, c.slot_port[crdtm_keyslot(key, strlen(key))]);
        }
    long ops_before = w->m.n;
    int rc = system(cmd);
    is_int(rc, 0, "redis-cli --cluster reshard moved 1200 slots while writing");
    if (rc != 0) {
        snprintf(cmd, sizeof(cmd), "tail -20 %s/reshard.log | sed 's/^/#   /'", CL.node[0].dir);
        if (system(cmd) != 0)
            diag("no reshard log");
    }
    rh_sleep_ms(500);
    writer_stop(w);
    cmp_ok(w->m.n - ops_before, ">", 100, "writes during the resharding: %ld", w->m.n - ops_before);
    is_int(w->errors, 0, "no write failed%s%s", w->errors ? ": " : "", w->first_error);
    ok(rc_wait_ok(&CL, 20) == 0, "cluster ok after resharding");
    rc_refresh(&c);
    int moved = 0;
    for (int t = 0; t < T_N; t++)
        for (int k = 0; k < NKEYS; k++) {
            char key[32];
            key_name(key, sizeof(key), t, k);
            int now = rc_node_by_port(&CL, c.slot_port[crdtm_keyslot(key, strlen(key))]);
            moved += owner_before[t][k] == from && now == to;
        }
    cmp_ok(moved, ">", 0, "%d of the writer's keys moved from node %d to node %d", moved, from, to);
    check_writes(&c, w, "after resharding");

    /* the same follower resumes from its positions: nothing truncated, nothing refused */
    f->truncated = 0;
    follower_read(f, &c);
    is_int(f->errors, 0, "every position taken before the move is accepted after it");
    is_int(f->truncated, 0, "no log reports truncated");
    follower_discover(f, &CL); /* logs the target started while it imported */
    follower_read(f, &c);
    check_log_matches(f, &c, "after resharding");
    long restores = 0;
    for (int i = 0; i < CL.n; i++)
        restores += rh_info_field(&CL.node[i], "crdt", "crdt_log_restores");
    cmp_ok(restores, ">", 0, "keys that arrived by MIGRATE appended their state (%ld)", restores);
    /* the logs moved with their slots: no node lists, or holds, a log of a slot it gave away */
    int listed = 0, strays = 0;
    for (int i = 0; i < CL.n; i++) {
        if (CL.node[i].pid <= 0 || rc_is_synced_replica(&CL, i))
            continue;
        redisReply *r = rh_cmd(&CL.node[i], "CRDT.LOG.LIST");
        for (size_t k = 0; r && r->type == REDIS_REPLY_ARRAY && k < r->elements; k++) {
            uint64_t ep;
            unsigned slot;
            listed++;
            if (!crdtm_log_name_parse(r->element[k]->str, r->element[k]->len, &ep, &slot) ||
                c.slot_port[slot] != CL.node[i].port) {
                if (strays++ < 3)
                    diag("node %d lists %s of slot %u (served by port %d)", i, r->element[k]->str,
                         slot, c.slot_port[slot]);
            }
        }
        if (r)
            freeReplyObject(r);
        /* and SCAN finds no log key of a slot it gave away */
        r = rh_cmd(&CL.node[i], "SCAN 0 MATCH crdt:log:* COUNT 100000");
        redisReply *keys =
            r && r->type == REDIS_REPLY_ARRAY && r->elements == 2 ? r->element[1] : NULL;
        for (size_t k = 0; keys && k < keys->elements; k++) {
            uint64_t ep;
            unsigned slot;
            if (crdtm_log_name_parse(keys->element[k]->str, keys->element[k]->len, &ep, &slot) &&
                c.slot_port[slot] != CL.node[i].port && strays++ < 3)
                diag("node %d holds %s of slot %u", i, keys->element[k]->str, slot);
        }
        if (r)
            freeReplyObject(r);
    }
    int multi = 0;
    for (unsigned sl = 0; sl < CRDTM_SLOTS; sl++) {
        int node = rc_node_by_port(&CL, c.slot_port[sl]);
        redisReply *r = node >= 0 ? rh_cmd(&CL.node[node], "CRDT.LOG.LIST %u", sl) : NULL;
        multi += r && r->type == REDIS_REPLY_ARRAY && r->elements > 1;
        if (r)
            freeReplyObject(r);
    }
    diag("slots holding more than one log after the move: %d", multi);
    cmp_ok(listed, ">", 0, "primaries list %d logs after resharding", listed);
    is_int(strays, 0, "none of a slot the node no longer serves");
    follower_free(f);
    free(f);
    rc_client_free(&c);
}

/* ---- failover ------------------------------------------------------------------------------- */

static void test_failover(void)
{
    rc_client_t c;
    rc_client_init(&c, &CL);
    writer_t *w = &W;
    long ops_start = w->m.n;
    writer_start(w, true);
    rh_sleep_ms(800);
    int victim = rc_slot_owner(&CL, 0, crdtm_keyslot("pn:1", 4));
    ok(victim >= 0, "the primary of pn:1 is node %d", victim);
    long ops_before = w->m.n;
    cmp_ok(ops_before - ops_start, ">", 50, "writes with WAIT 1 before the kill: %ld",
           ops_before - ops_start);
    /* a follower reads up to here and keeps its positions across the failover */
    follower_t *early = calloc(1, sizeof(*early));
    follower_discover(early, &CL);
    follower_read(early, &c);
    rh_kill(&CL.node[victim]);
    /* the writer keeps going (stalled on the dead node's keys); the replica takes over */
    ok(rc_wait_ok(&CL, 30) == 0, "a replica took over the killed primary's slots");
    int now = rc_slot_owner(&CL, (victim + 1) % CL.n, crdtm_keyslot("pn:1", 4));
    ok(now >= 0 && now != victim, "pn:1 is now served by node %d", now);

    /* the old primary comes back as a replica of the new one (its WAIT 1 then succeeds again) */
    ok(rh_restart(&CL.node[victim]) == 0, "the killed node restarts");
    bool synced = false;
    for (int i = 0; i < 300 && !synced; i++) {
        synced = rc_is_synced_replica(&CL, victim);
        if (!synced)
            rh_sleep_ms(100);
    }
    ok(synced, "it rejoined as a replica with its link up");
    /* every node agrees on the slot map again before the writer is judged: on a loaded machine
     * the rejoined node's stale view can bounce redirects for a while (bounded: 40 s) */
    ok(rc_wait_ok(&CL, 40) == 0, "the cluster agrees on its slots after the rejoin");
    rc_refresh(&c);
    long ops_rejoin = w->m.n;
    /* the writer goes on once gossip settled (a few hundred ms; longer on a loaded machine) */
    for (int i = 0; i < 50 && w->m.n - ops_rejoin <= 20; i++)
        rh_sleep_ms(100);
    writer_stop(w);
    cmp_ok(w->m.n - ops_rejoin, ">", 20, "writes after it rejoined: %ld", w->m.n - ops_rejoin);
    rc_refresh(&c);
    check_writes(&c, w, "after failover");

    follower_t *f = calloc(1, sizeof(*f));
    follower_discover(f, &CL);
    follower_read(f, &c);
    is_int(f->errors, 0, "the logs are readable on the new primary");
    check_log_matches(f, &c, "after failover");

    /* the early follower resumes on the new primary from its positions: every one accepted (ok,
     * or truncated if it had read entries the dead primary never replicated), and what it joined
     * holds every key's state (it may hold more: writes it saw that the failover lost) */
    early->errors = 0;
    follower_read(early, &c);
    is_int(early->errors, 0, "positions taken before the failover are accepted after it");
    long missing = 0;
    for (int t = 0; t < T_N; t++)
        for (int k = 0; k < NKEYS; k++) {
            char key[32];
            key_name(key, sizeof(key), t, k);
            size_t len;
            char *st = rh_str(rc_cmd(&c, key, "CRDT.STATE %s", key), &len);
            crdt_error_t err;
            crdt_obj_t *o = st ? crdt_obj_decode(st, len, &err) : NULL;
            if (o) {
                crdt_obj_t *j = early->state[t][k] ? crdt_obj_clone(early->state[t][k]) : NULL;
                if (!j || crdt_obj_merge(j, o) != 0) /* 0: the key's state adds nothing */
                    missing++;
                crdt_obj_free(j);
            }
            crdt_obj_free(o);
            free(st);
        }
    is_int(missing, 0, "the resumed follower has every change of every key (%ld truncated reads)",
           early->truncated);
    follower_free(early);
    free(early);

    /* the rejoined node converges to its new primary */
    bool same = false;
    char *dv = NULL, *dp = NULL;
    for (int i = 0; i < 100 && !same; i++) {
        free(dv);
        free(dp);
        dv = rh_str(rh_cmd(&CL.node[victim], "DEBUG DIGEST"), NULL);
        dp = rh_str(rh_cmd(&CL.node[now], "DEBUG DIGEST"), NULL);
        same = dv && dp && !strcmp(dv, dp);
        if (!same)
            rh_sleep_ms(100);
    }
    ok(same, "its dataset (change logs included) has the digest of its new primary (%s)",
       dv ? dv : "none");
    free(dv);
    free(dp);
    follower_free(f);
    free(f);
    rc_client_free(&c);
}

/* ---- anti-entropy between the cluster and a single server --------------------------------- */

static void test_reconcile_with_single(void)
{
    rh_server_t S;
    if (!ok(rh_start(&S, NULL, "node-id 50 log no", NULL) == 0, "a single server to compare with"))
        return;
    rc_client_t c;
    rc_client_init(&c, &CL);
    /* the single server gets a copy of every key of the cluster */
    long copied = 0;
    for (int t = 0; t < T_N; t++)
        for (int k = 0; k < NKEYS; k++) {
            char key[32];
            key_name(key, sizeof(key), t, k);
            size_t len;
            char *st = rh_str(rc_cmd(&c, key, "CRDT.STATE %s", key), &len);
            if (st && rh_int(rh_cmd(&S, "CRDT.MERGE %s %b", key, st, len)) == 1)
                copied++;
            free(st);
        }
    size_t alen;
    char *acl = rh_str(rc_cmd(&c, "{acl}a", "CRDT.STATE {acl}a"), &alen); /* test_keys' key */
    if (acl)
        copied += rh_int(rh_cmd(&S, "CRDT.MERGE {acl}a %b", acl, alen)) == 1;
    free(acl);
    cmp_ok(copied, ">", 0, "copied %ld keys to the single server", copied);
    /* three differences: changed on the cluster, changed on the server, only on the cluster */
    redisReply *r = rc_cmd(&c, "tl:0", "CRDT.TLADD tl:0 999999 diverged");
    if (r)
        freeReplyObject(r);
    rh_int(rh_cmd(&S, "CRDT.INCRBY pn:1 7"));
    r = rc_cmd(&c, "extra:key", "CRDT.SADD extra:key x");
    if (r)
        freeReplyObject(r);

    /* the cluster side: its primaries, and which one serves each slot */
    rr_side_t a, b;
    memset(&a, 0, sizeof(a));
    rc_refresh(&c);
    for (unsigned slot = 0; slot < 16384; slot++) {
        int node = rc_node_by_port(&CL, c.slot_port[slot]), idx = -1;
        for (int i = 0; i < a.n; i++)
            if (a.node[i] == CL.node[node].c)
                idx = i;
        if (idx < 0) {
            idx = a.n++;
            a.node[idx] = CL.node[node].c;
        }
        a.owner[slot] = (unsigned char)idx;
    }
    is_int(a.n, 3, "three primaries serve the slots");
    rr_side_single(&b, S.c);
    rr_result_t res;
    ok(rr_reconcile(&a, &b, &res) == 0, "the cluster reconciles with the single server");
    bool has[3] = {false, false, false};
    static const char *const want[3] = {"tl:0", "pn:1", "extra:key"};
    for (size_t i = 0; i < res.n; i++) {
        bool known = false;
        for (int w = 0; w < 3; w++)
            if (!strcmp(res.names[i], want[w]))
                known = has[w] = true;
        if (!known)
            diag("unexpected difference: %s", res.names[i]);
    }
    is_int((long long)res.n, 3, "exactly three keys differ (%u ranges, %u round trips, %llu bytes)",
           res.ranges_differing, res.round_trips,
           (unsigned long long)(res.bytes_in + res.bytes_out));
    ok(has[0] && has[1] && has[2], "tl:0, pn:1 and extra:key");
    rr_result_free(&res);
    rc_client_free(&c);
    rh_stop(&S);
}

/* The helper's repair of a slot Redis 7.0 can orphan after a failover (redis/redis#12564; see
 * repair_orphans in redis_cluster_helper.c), on the shape that bug leaves: a primary that does not
 * serve a slot every other node routes to it. CLUSTER DELSLOTS on that primary makes it. */
static void test_orphan_repair(void)
{
    int x = -1;
    for (int i = 0; i < CL.n && x < 0; i++)
        if (!rc_is_synced_replica(&CL, i))
            x = i;
    unsigned sl = 16383;
    while (sl > 0 && rc_slot_owner(&CL, x >= 0 ? x : 0, sl) != x)
        sl -= 97;
    redisReply *r = x >= 0 ? rh_cmd(&CL.node[x], "CLUSTER DELSLOTS %u", sl) : NULL;
    ok(r && r->type == REDIS_REPLY_STATUS, "node %d gives up slot %u by itself", x, sl);
    if (r)
        freeReplyObject(r);
    int y = x >= 0 ? (x + 1) % CL.n : 0;
    ok(x >= 0 && rc_slot_owner(&CL, x, sl) != x && rc_slot_owner(&CL, y, sl) == x,
       "orphaned: node %d still routes slot %u to node %d", y, sl, x);
    ok(rc_wait_ok(&CL, 20) == 0, "the cluster settles: the orphaned slot was repaired");
    ok(x >= 0 && rc_slot_owner(&CL, x, sl) == x, "node %d serves slot %u again", x, sl);
}

int main(void)
{
    const char *why = rc_skip_reason();
    if (why)
        skip_all("%s", why);
    rh_watchdog(rh_sanitized() ? 280 : 150);
    if (rc_start(&CL, 3, 1, "log-max-len 1000000") < 0)
        bail_out("cannot start a Redis Cluster of 6 nodes");
    pass("a cluster of 3 primaries and 3 replicas with crdt.so is up");
    writer_init(&W, &CL);
    test_orphan_repair();
    test_keys();
    test_reshard();
    test_failover();
    test_reconcile_with_single();
    writer_free(&W);
    rc_stop(&CL);
    is_int(rh_sanitizer_reports(), 0, "no sanitizer reports from the servers");
    rh_cleanup();
    return done_testing();
}
