/* test_redis_log.c - crdt.so's per-slot change log on single servers: entries, positions,
 * trimming (length, age, consumer groups), truncation, restarts, replicas, RESTORE, switch-off
 *
 * A reader follows a log with CRDT.LOG.READ from a position; the tests check that the entries
 * join into exactly the key's state, that a position survives restarts and is refused by any other
 * log (another slot, another server), and that a reader that fell behind the trimmed part is told
 * so.
 */
#include "tap.h"

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "crdt.h"
#include "logpos.h"
#include "redis_helper.h"

/* The log of key's slot on s (the only one its slot holds), into name; 0 or -1. */
static int log_of(rh_server_t *s, const char *key, char *name)
{
    unsigned slot = crdtm_keyslot(key, strlen(key));
    redisReply *r = rh_cmd(s, "CRDT.LOG.LIST %u", slot);
    int rc = -1;
    if (r && r->type == REDIS_REPLY_ARRAY && r->elements == 1) {
        snprintf(name, CRDTM_LOG_NAME_MAX, "%s", r->element[0]->str);
        rc = 0;
    }
    if (r)
        freeReplyObject(r);
    return rc;
}

typedef struct readres {
    char pos[CRDTM_POS_TEXT_MAX];
    char status[16];
    long n;
    crdt_obj_t *joined; /* join of the entries of `key` */
    char err[256];
} readres_t;

/* CRDT.LOG.READ name pos count, joining the entries of key into r->joined. */
static void log_read(rh_server_t *s, const char *name, const char *pos, int count, const char *key,
                     readres_t *res)
{
    redisReply *r = rh_cmd(s, "CRDT.LOG.READ %s %s %d", name, pos, count);
    res->n = 0;
    res->err[0] = res->status[0] = '\0';
    if (!r || r->type != REDIS_REPLY_ARRAY || r->elements != 3) {
        snprintf(res->err, sizeof(res->err), "%s",
                 r && r->type == REDIS_REPLY_ERROR ? r->str : "?");
        if (r)
            freeReplyObject(r);
        return;
    }
    snprintf(res->pos, sizeof(res->pos), "%s", r->element[0]->str);
    snprintf(res->status, sizeof(res->status), "%s", r->element[1]->str);
    for (size_t i = 0; i < r->element[2]->elements; i++) {
        redisReply *e = r->element[2]->element[i];
        res->n++;
        if (!key ||
            (e->element[1]->len != strlen(key) || memcmp(e->element[1]->str, key, strlen(key))))
            continue;
        crdt_error_t err;
        crdt_obj_t *o = crdt_obj_decode(e->element[2]->str, e->element[2]->len, &err);
        if (!o)
            continue;
        if (!res->joined)
            res->joined = o;
        else {
            crdt_obj_merge(res->joined, o);
            crdt_obj_free(o);
        }
    }
    freeReplyObject(r);
}

/* The joined entries equal the key's state on s. */
static bool same_state(rh_server_t *s, const char *key, const crdt_obj_t *joined)
{
    size_t len;
    char *st = rh_str(rh_cmd(s, "CRDT.STATE %s", key), &len);
    crdt_buf_t b = {0};
    if (joined)
        crdt_obj_encode(joined, &b);
    bool same = st && b.len == len && !memcmp(st, b.data, len);
    free(st);
    crdt_buf_free(&b);
    return same;
}

static void test_basics(void)
{
    rh_server_t A, B;
    const char *aof[] = {"--appendonly", "yes", NULL};
    if (rh_start(&A, NULL, "node-id 1 log-max-len 40", aof) < 0 ||
        rh_start(&B, NULL, "node-id 2 log-max-len 40", NULL) < 0)
        bail_out("cannot start redis-server");
    for (int i = 0; i < 10; i++)
        rh_int(rh_cmd(&A, "CRDT.TLADD tl %d m%d", i, i));
    rh_int(rh_cmd(&A, "CRDT.INCRBY other 3"));
    char name[CRDTM_LOG_NAME_MAX], other[CRDTM_LOG_NAME_MAX];
    ok(log_of(&A, "tl", name) == 0, "the slot of tl has one log: %s", name);
    uint64_t epoch;
    unsigned slot;
    ok(crdtm_log_name_parse(name, strlen(name), &epoch, &slot) && slot == crdtm_keyslot("tl", 2),
       "its name carries an epoch and a tag of the key's slot");
    ok(log_of(&A, "other", other) == 0 && strcmp(name, other), "another slot has another log");

    readres_t r = {0};
    log_read(&A, name, "0", 100, "tl", &r);
    is(r.status, "ok", "READ from 0: ok");
    is_int(r.n, 10, "ten entries");
    ok(same_state(&A, "tl", r.joined), "the entries join to CRDT.STATE tl");
    crdt_obj_free(r.joined);

    /* paging: positions chain, nothing is read twice */
    readres_t p = {0};
    snprintf(p.pos, sizeof(p.pos), "0");
    long total = 0;
    for (int round = 0; round < 10; round++) {
        char from[CRDTM_POS_TEXT_MAX];
        snprintf(from, sizeof(from), "%s", p.pos);
        log_read(&A, name, from, 3, "tl", &p);
        total += p.n;
        if (p.n < 3)
            break;
    }
    is_int(total, 10, "pages of 3 read the ten entries once");
    ok(same_state(&A, "tl", p.joined), "... and join to the state");
    crdt_obj_free(p.joined);
    p.joined = NULL;
    char kept[CRDTM_POS_TEXT_MAX];
    snprintf(kept, sizeof(kept), "%s", p.pos);
    crdtm_pos_t pp;
    const char *why;
    ok(crdtm_pos_parse(kept, strlen(kept), &pp, &why) == 0 && pp.epoch == epoch && pp.offset == 10,
       "the position %s names the log's epoch and offset 10", kept);

    /* positions are refused by every other log: another slot, another server */
    readres_t e = {0};
    log_read(&A, other, kept, 10, NULL, &e);
    ok(!strncmp(e.err, "ERR position belongs to another log", 35), "other slot: %s", e.err);
    for (int i = 0; i < 3; i++)
        rh_int(rh_cmd(&B, "CRDT.TLADD tl %d b%d", i, i));
    char bname[CRDTM_LOG_NAME_MAX];
    ok(log_of(&B, "tl", bname) == 0 && strcmp(bname, name), "B's log of the slot is another log");
    log_read(&B, bname, kept, 10, NULL, &e);
    ok(!strncmp(e.err, "ERR position belongs to another log", 35), "other server: %s", e.err);
    log_read(&B, name, "0", 10, NULL, &e);
    ok(!strncmp(e.err, "ERR no such log", 15), "A's log name on B: %s", e.err);

    /* bad input: clear errors, the server keeps serving */
    static const char *const bad[] = {"",
                                      "1",
                                      "x",
                                      "$$",
                                      "00000000000000zz:1-0:1",
                                      "0000000000000001:1-0:0",
                                      "0000000000000001:01-0:1",
                                      "0000000000000001:1-0:1x",
                                      "0000000000000001:1-0",
                                      "0000000000000001:99999999999999999999999-0:1"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        log_read(&A, name, bad[i], 10, NULL, &e);
        ok(!strncmp(e.err, "ERR bad position", 16), "position '%s': %s", bad[i], e.err);
    }
    is(rh_err(rh_cmd(&A, "CRDT.LOG.READ tl 0 10")),
       "ERR not a change log name (crdt:log:{TAG}:EPOCH, as CRDT.LOG.LIST gives them)",
       "READ of a key that is not a log");
    is(rh_err(rh_cmd(&A, "CRDT.LOG.READ %s 0 0", name)), "ERR count must be a positive integer",
       "count 0");
    is(rh_err(rh_cmd(&A, "CRDT.LOG.LIST 16384")), "ERR slot must be an integer 0..16383",
       "LIST of slot 16384");
    rh_int(rh_cmd(&A, "SET crdt:log:{x}:00000000000000aa v"));
    is(rh_err(rh_cmd(&A, "CRDT.LOG.READ crdt:log:{x}:00000000000000aa 0 1")),
       "WRONGTYPE Operation against a key holding the wrong kind of value",
       "READ of a string named like a log: WRONGTYPE");
    is(rh_err(rh_cmd(&A, "PING")), "", "the server still serves");

    /* the position survives a restart (AOF) and DEBUG RELOAD (RDB): same log, entries after it */
    ok(rh_restart(&A) == 0, "A restarts from its AOF");
    char again[CRDTM_LOG_NAME_MAX];
    ok(log_of(&A, "tl", again) == 0 && !strcmp(again, name), "the same log after the restart");
    rh_int(rh_cmd(&A, "CRDT.TLADD tl 100 after-restart"));
    is(rh_err(rh_cmd(&A, "DEBUG RELOAD")), "", "DEBUG RELOAD");
    rh_int(rh_cmd(&A, "CRDT.TLADD tl 101 after-reload"));
    ok(log_of(&A, "tl", again) == 0 && !strcmp(again, name), "the same log after DEBUG RELOAD");
    log_read(&A, name, kept, 100, "tl", &p);
    is(p.status, "ok", "the kept position reads on: %s", p.status);
    is_int(p.n, 2, "the two writes after it");
    log_read(&A, name, "$", 100, "tl", &e);
    is_int(e.n, 0, "READ from $ gives nothing ...");
    ok(crdtm_pos_parse(e.pos, strlen(e.pos), &pp, &why) == 0 && pp.offset == 12,
       "... and the position of the end (%s)", e.pos);
    crdt_obj_free(p.joined);
    p.joined = NULL;

    /* trimming: a reader behind the trimmed part is told "truncated" */
    for (int i = 0; i < 100; i++)
        rh_int(rh_cmd(&A, "CRDT.TLADD tl %d n%d", 200 + i, i));
    long long len = rh_int(rh_cmd(&A, "XLEN %s", name));
    ok(len >= 40 && len <= 40 + 16, "log-max-len 40 holds the log at %lld entries", len);
    log_read(&A, name, kept, 1000, "tl", &p);
    is(p.status, "truncated", "a position behind the trimmed part: truncated");
    is_int(p.n, len, "... and the entries that remain");
    log_read(&A, name, "0", 1000, NULL, &e);
    is(e.status, "truncated", "READ from 0 after trimming: truncated");
    log_read(&A, name, p.pos, 1000, NULL, &e);
    is(e.status, "ok", "the position it returned reads on: ok");
    is_int(e.n, 0, "with nothing new");
    crdt_obj_free(p.joined);
    ok(rh_info_field(&A, "crdt", "crdt_log_trimmed_entries") > 0, "INFO crdt_log_trimmed_entries");

    /* a follower with read access to the logs only (the ACL of docs/redis-module.md) */
    is(rh_err(rh_cmd(&A, "ACL SETUSER follower on >secret %%R~crdt:log:* +crdt.log.read "
                         "+crdt.log.list +readonly")),
       "", "ACL SETUSER follower");
    redisContext *fc = redisConnect("127.0.0.1", A.port);
    redisReply *fr = fc ? redisCommand(fc, "AUTH follower secret") : NULL;
    ok(fr && fr->type == REDIS_REPLY_STATUS, "AUTH follower");
    if (fr)
        freeReplyObject(fr);
    fr = fc ? redisCommand(fc, "CRDT.LOG.READ %s %s 10", name, p.pos) : NULL;
    ok(fr && fr->type == REDIS_REPLY_ARRAY, "the follower reads the log");
    if (fr)
        freeReplyObject(fr);
    fr = fc ? redisCommand(fc, "CRDT.TLADD tl 1 x") : NULL;
    ok(fr && fr->type == REDIS_REPLY_ERROR && !strncmp(fr->str, "NOPERM", 6), "and may not write");
    if (fr)
        freeReplyObject(fr);
    if (fc)
        redisFree(fc);
    rh_stop(&A);
    rh_stop(&B);
}

static void test_replica_restore_off(void)
{
    rh_server_t P, R, C, OFF;
    if (rh_start(&P, NULL, "node-id 1", NULL) < 0)
        bail_out("cannot start redis-server");
    char port[16];
    snprintf(port, sizeof(port), "%d", P.port);
    const char *rep[] = {"--replicaof", "127.0.0.1", port, NULL};
    if (rh_start(&R, NULL, "node-id 2", rep) < 0 || rh_start(&C, NULL, "node-id 3", NULL) < 0 ||
        rh_start(&OFF, NULL, "node-id 4 log no", NULL) < 0)
        bail_out("cannot start redis-server");
    /* the replica first finishes its initial sync (slow under ASan), then gets the writes */
    for (int i = 0; i < 200; i++) {
        char *info = rh_str(rh_cmd(&R, "INFO replication"), NULL);
        bool up = info && strstr(info, "master_link_status:up");
        free(info);
        if (up)
            break;
        rh_sleep_ms(50);
    }
    for (int i = 0; i < 20; i++)
        rh_int(rh_cmd(&P, "CRDT.SADD s m%d", i));
    /* CRDT.MERGE is replicated verbatim, its entry as XADD (the writes above as CRDT.LOG.APPLY) */
    size_t slen;
    char *st = rh_str(rh_cmd(&P, "CRDT.STATE s"), &slen);
    is_int(rh_int(rh_cmd(&P, "CRDT.MERGE s2 %b", st, slen)), 1, "CRDT.MERGE into a new key");
    free(st);
    is_int(rh_int(rh_cmd(&P, "WAIT 1 10000")), 1, "WAIT 1: the replica has the writes");
    char name[CRDTM_LOG_NAME_MAX], rname[CRDTM_LOG_NAME_MAX], cname0[CRDTM_LOG_NAME_MAX];
    ok(log_of(&P, "s", name) == 0 && log_of(&R, "s", rname) == 0 && !strcmp(name, rname),
       "the replica holds the primary's log %s", name);
    is_int(rh_int(rh_cmd(&R, "XLEN %s", name)), 20, "with its 20 entries");
    is_int(rh_info_field(&R, "crdt", "crdt_log_appends"), 0, "the replica appended none itself");
    is_int(rh_info_field(&R, "crdt", "crdt_log_applied"), 20,
           "it applied the 20 writes' CRDT.LOG.APPLY");
    ok(log_of(&R, "s2", rname) == 0 && log_of(&P, "s2", cname0) == 0 && !strcmp(cname0, rname) &&
           rh_int(rh_cmd(&R, "XLEN %s", rname)) == 1,
       "the merge's entry reached the replica's log %s", rname);
    /* from a client, CRDT.LOG.APPLY is refused and changes nothing */
    long long xl = rh_int(rh_cmd(&P, "XLEN %s", name));
    ok(strstr(rh_err(rh_cmd(&P, "CRDT.LOG.APPLY %s %b s %b", name,
                            "\0\0\0\0\0\0\0\xff\0\0\0\0\0\0\0\0", (size_t)16, "\x02sx", (size_t)3)),
              "only the replication link") != NULL,
       "CRDT.LOG.APPLY from a client is refused");
    is_int(rh_int(rh_cmd(&P, "XLEN %s", name)), xl, "and appends nothing");
    is_int(rh_int(rh_cmd(&P, "CRDT.SCARD s")), 20, "nor merges anything");
    readres_t r = {0};
    log_read(&R, name, "0", 100, "s", &r);
    ok(same_state(&R, "s", r.joined), "the replica's log joins to its state");
    crdt_obj_free(r.joined);
    r.joined = NULL;
    char *dp = rh_str(rh_cmd(&P, "DEBUG DIGEST"), NULL), *dr = NULL;
    for (int i = 0; i < 50; i++) {
        free(dr);
        dr = rh_str(rh_cmd(&R, "DEBUG DIGEST"), NULL);
        if (dp && dr && !strcmp(dp, dr))
            break;
        rh_sleep_ms(100);
    }
    ok(dp && dr && !strcmp(dp, dr), "primary and replica have one digest");
    free(dp);
    free(dr);

    /* a key that arrives by RESTORE appends its whole state to the target's log */
    size_t dlen;
    char *dump = rh_str(rh_cmd(&P, "DUMP s"), &dlen);
    ok(dump != NULL, "DUMP s");
    is(rh_err(rh_cmd(&C, "RESTORE s 0 %b", dump, dlen)), "", "RESTORE s on another server");
    free(dump);
    char cname[CRDTM_LOG_NAME_MAX];
    ok(log_of(&C, "s", cname) == 0, "the target has a log for the slot");
    log_read(&C, cname, "0", 100, "s", &r);
    is_int(r.n, 1, "one entry");
    ok(same_state(&C, "s", r.joined), "holding the restored key's full state");
    crdt_obj_free(r.joined);
    is_int(rh_info_field(&C, "crdt", "crdt_log_restores"), 1, "INFO crdt_log_restores");

    /* log no: writes append nothing */
    rh_int(rh_cmd(&OFF, "CRDT.TLADD t 1 a"));
    redisReply *l = rh_cmd(&OFF, "CRDT.LOG.LIST");
    ok(l && l->type == REDIS_REPLY_ARRAY && l->elements == 0, "log no: no log");
    if (l)
        freeReplyObject(l);
    is_int(rh_int(rh_cmd(&OFF, "DBSIZE")), 1, "log no: only the key");
    rh_stop(&R);
    rh_stop(&P);
    rh_stop(&C);
    rh_stop(&OFF);
}

/* CRDT.TLMADD / TLMREM on a primary with a replica and an AOF: one log entry (CRDT.LOG.APPLY)
 * per changed key, as TLADD gives it; the replica and a restart from the AOF hold the same states;
 * a refused TLMADD replicates and logs nothing. */
static void test_tlmadd_replica(void)
{
    rh_server_t P, R;
    const char *aof[] = {"--appendonly", "yes", "--appendfsync", "always", NULL};
    if (rh_start(&P, NULL, "node-id 1", aof) < 0)
        bail_out("cannot start redis-server");
    char port[16];
    snprintf(port, sizeof(port), "%d", P.port);
    const char *rep[] = {"--replicaof", "127.0.0.1", port, NULL};
    if (rh_start(&R, NULL, "node-id 2", rep) < 0)
        bail_out("cannot start redis-server");
    for (int i = 0; i < 200; i++) {
        char *info = rh_str(rh_cmd(&R, "INFO replication"), NULL);
        bool up = info && strstr(info, "master_link_status:up");
        free(info);
        if (up)
            break;
        rh_sleep_ms(50);
    }
    static const char *const keys[] = {"mt:a", "mt:b", "mt:c"};
    long long app0 = rh_info_field(&P, "crdt", "crdt_log_appends");
    redisReply *r = rh_cmd(&P, "CRDT.TLMADD mt:a 1 x mt:b 2 y mt:a 3 z mt:c 1 q");
    ok(r && r->type == REDIS_REPLY_ARRAY && r->elements == 4, "TLMADD of 4 triples over 3 keys");
    if (r)
        freeReplyObject(r);
    is_int(rh_info_field(&P, "crdt", "crdt_log_appends") - app0, 3,
           "three log entries: one per changed key (mt:a's two triples in one delta)");
    r = rh_cmd(&P, "CRDT.TLMREM mt:c 1 q mt:b 1 y");
    freeReplyObject(r);
    is_int(rh_info_field(&P, "crdt", "crdt_log_appends") - app0, 4,
           "TLMREM: one more, for mt:c (mt:b's older remove changed nothing)");
    rh_int(rh_cmd(&P, "CRDT.GINCRBY mt:g 1"));
    long long app1 = rh_info_field(&P, "crdt", "crdt_log_appends");
    ok(strncmp(rh_err(rh_cmd(&P, "CRDT.TLMADD mt:a 9 w mt:g 1 y")), "WRONGTYPE", 9) == 0,
       "a refused TLMADD");
    is_int(rh_info_field(&P, "crdt", "crdt_log_appends"), app1, "appends nothing");
    is_int(rh_int(rh_cmd(&P, "WAIT 1 10000")), 1, "WAIT 1: the replica has the writes");
    char *ps[3];
    size_t pl[3];
    for (size_t i = 0; i < 3; i++) {
        char name[CRDTM_LOG_NAME_MAX];
        readres_t rr = {0};
        ok(log_of(&P, keys[i], name) == 0, "%s: its slot's log", keys[i]);
        log_read(&P, name, "0", 100, keys[i], &rr);
        ok(rr.joined && same_state(&P, keys[i], rr.joined),
           "%s: the log's entries join to its state", keys[i]);
        crdt_obj_free(rr.joined);
        size_t rl;
        ps[i] = rh_str(rh_cmd(&P, "CRDT.STATE %s", keys[i]), &pl[i]);
        char *rs = rh_str(rh_cmd(&R, "CRDT.STATE %s", keys[i]), &rl);
        ok(ps[i] && rs && pl[i] == rl && !memcmp(ps[i], rs, rl),
           "%s: the replica holds the same state", keys[i]);
        free(rs);
    }
    ok(rh_restart(&P) == 0, "the primary restarts (from its AOF)");
    for (size_t i = 0; i < 3; i++) {
        size_t rl;
        char *rs = rh_str(rh_cmd(&P, "CRDT.STATE %s", keys[i]), &rl);
        ok(ps[i] && rs && pl[i] == rl && !memcmp(ps[i], rs, rl),
           "%s: the restarted primary holds the same state", keys[i]);
        free(rs);
        free(ps[i]);
    }
    is_int(rh_info_field(&R, "crdt", "crdt_log_appends"), 0, "the replica appended nothing itself");
    rh_stop(&R);
    rh_stop(&P);
}

static void test_trim_policies(void)
{
    rh_server_t G, T;
    if (rh_start(&G, NULL, "node-id 1 log-max-len 5 log-trim-acked yes", NULL) < 0 ||
        rh_start(&T, NULL, "node-id 2 log-max-len 0 log-max-age-ms 200", NULL) < 0)
        bail_out("cannot start redis-server");
    /* log-trim-acked: nothing past the slowest consumer group's last-delivered-id goes */
    rh_int(rh_cmd(&G, "CRDT.INCRBY c 1"));
    char name[CRDTM_LOG_NAME_MAX];
    ok(log_of(&G, "c", name) == 0, "log of c");
    is(rh_err(rh_cmd(&G, "XGROUP CREATE %s follower 0", name)), "", "a consumer group at 0");
    for (int i = 0; i < 60; i++)
        rh_int(rh_cmd(&G, "CRDT.INCRBY c 1"));
    is_int(rh_int(rh_cmd(&G, "XLEN %s", name)), 61, "nothing trimmed the group has not acked");
    is(rh_err(rh_cmd(&G, "XGROUP SETID %s follower $", name)), "", "the group acks everything");
    for (int i = 0; i < 30; i++)
        rh_int(rh_cmd(&G, "CRDT.INCRBY c 1"));
    long long len = rh_int(rh_cmd(&G, "XLEN %s", name));
    ok(len <= 5 + 16 + 30, "then the bound applies again (%lld entries)", len);
    cmp_ok(len, "<", 61, "... it trimmed");
    readres_t r = {0};
    log_read(&G, name, "0", 1000, NULL, &r);
    is(r.status, "truncated", "a reader from 0 learns it fell behind");
    crdt_obj_free(r.joined);

    /* log-max-age-ms: entries older than the bound go (checked every 64 appends of a slot) */
    rh_int(rh_cmd(&T, "CRDT.INCRBY c 1"));
    ok(log_of(&T, "c", name) == 0, "log of c (age bound)");
    rh_sleep_ms(300);
    for (int i = 0; i < 70; i++)
        rh_int(rh_cmd(&T, "CRDT.INCRBY c 1"));
    len = rh_int(rh_cmd(&T, "XLEN %s", name));
    ok(len >= 1 && len <= 70, "the entry older than 200 ms was trimmed (%lld left of 71)", len);
    rh_stop(&G);
    rh_stop(&T);
}

/* The origin of CRDT.MERGE ... ORIGIN id (active-active, docs/redis-module.md): the change log
 * entry carries it as field o, CRDT.LOG.READ returns it as a 4th element, the replica has it. */
static long long entry_origin(rh_server_t *s, const char *name, long idx, size_t *nelem)
{
    redisReply *r = rh_cmd(s, "CRDT.LOG.READ %s 0 1000", name);
    long long o = -1;
    *nelem = 0;
    if (r && r->type == REDIS_REPLY_ARRAY && r->elements == 3 &&
        (size_t)idx < r->element[2]->elements) {
        redisReply *e = r->element[2]->element[idx];
        *nelem = e->elements;
        o = e->elements == 4 && e->element[3]->type == REDIS_REPLY_INTEGER ? e->element[3]->integer
            : e->elements == 3                                             ? 0
                                                                           : -1;
    }
    if (r)
        freeReplyObject(r);
    return o;
}

static void test_origin(void)
{
    rh_server_t P, R;
    if (rh_start(&P, NULL, "node-id 1", NULL) < 0)
        bail_out("cannot start redis-server");
    char port[16];
    snprintf(port, sizeof(port), "%d", P.port);
    const char *rep[] = {"--replicaof", "127.0.0.1", port, NULL};
    if (rh_start(&R, NULL, "node-id 2", rep) < 0)
        bail_out("cannot start redis-server");
    rh_int(rh_cmd(&P, "CRDT.SADD {o}src a"));
    rh_int(rh_cmd(&P, "CRDT.SADD {o}src2 b"));
    size_t l1, l2;
    char *p1 = rh_str(rh_cmd(&P, "CRDT.STATE {o}src"), &l1);
    char *p2 = rh_str(rh_cmd(&P, "CRDT.STATE {o}src2"), &l2);
    ok(p1 && p2, "two payloads");
    /* entries of slot {o}: src (0), src2 (1), then ours */
    is_int(rh_int(rh_cmd(&P, "CRDT.MERGE {o}k %b ORIGIN 7", p1, l1)), 1, "MERGE ... ORIGIN 7");
    is_int(rh_int(rh_cmd(&P, "CRDT.MERGE {o}k %b", p2, l2)), 1, "MERGE without ORIGIN");
    is_int(rh_int(rh_cmd(&P, "CRDT.MERGE {o}m %b %b origin 9", p1, l1, p2, l2)), 1,
           "MERGE of two payloads, origin 9 (any case)");
    is_int(rh_int(rh_cmd(&P, "CRDT.MERGE {o}k %b ORIGIN 8", p1, l1)), 0,
           "a MERGE that changes nothing appends nothing");
    rh_int(rh_cmd(&P, "CRDT.SADD {o}k c"));
    char name[CRDTM_LOG_NAME_MAX];
    ok(log_of(&P, "{o}k", name) == 0, "the slot's log");
    size_t ne;
    is_int(entry_origin(&P, name, 0, &ne), 0, "a typed write's entry: no origin");
    is_int(ne, 3, "[id, k, d]");
    is_int(entry_origin(&P, name, 2, &ne), 7, "the entry of MERGE ... ORIGIN 7 says 7");
    is_int(ne, 4, "[id, k, d, origin]");
    is_int(entry_origin(&P, name, 3, &ne), 0, "MERGE without ORIGIN: none");
    is_int(entry_origin(&P, name, 4, &ne), 9, "two payloads: one entry, origin 9");
    is_int(entry_origin(&P, name, 5, &ne), 0,
           "the next typed write: none (the origin is not kept)");
    /* the stream holds one field per entry, e: key, origin and delta packed (logpos.h) */
    redisReply *x = rh_cmd(&P, "XRANGE %s - +", name);
    redisReply *fv =
        x && x->type == REDIS_REPLY_ARRAY && x->elements >= 3 ? x->element[2]->element[1] : NULL;
    crdtm_entry_t en = {0};
    bool field_e = fv && fv->elements == 2 && !strcmp(fv->element[0]->str, "e") &&
                   crdtm_entry_decode(fv->element[1]->str, fv->element[1]->len, &en) == 0 &&
                   en.origin == 7 && en.klen == 4 && !memcmp(en.key, "{o}k", 4) && en.dlen == l1 &&
                   !memcmp(en.delta, p1, l1);
    ok(field_e, "the stream entry is e = {o}k, origin 7, the payload");
    if (x)
        freeReplyObject(x);
    /* entries the module did not write read as [id, nil, nil]: XADDs by hand, one in the
     * earlier k/d format, one whose e is not an entry (a key longer than the value) */
    static const char not_entry[] = {0x06, 'a', 'b'};
    rh_int(rh_cmd(&P, "XADD %s * k {o}k d x", name));
    rh_int(rh_cmd(&P, "XADD %s * e %b", name, not_entry, sizeof(not_entry)));
    redisReply *rr = rh_cmd(&P, "CRDT.LOG.READ %s 0 1000", name);
    size_t ne2 =
        rr && rr->type == REDIS_REPLY_ARRAY && rr->elements == 3 ? rr->element[2]->elements : 0;
    bool nils = ne2 >= 2;
    for (size_t i = ne2 >= 2 ? ne2 - 2 : ne2; i < ne2; i++) {
        redisReply *en2 = rr->element[2]->element[i];
        nils = nils && en2->elements == 3 && en2->element[0]->type == REDIS_REPLY_STRING &&
               en2->element[1]->type == REDIS_REPLY_NIL && en2->element[2]->type == REDIS_REPLY_NIL;
    }
    ok(nils, "entries not of the module's making read as [id, nil, nil]");
    if (rr)
        freeReplyObject(rr);
    ok(strstr(rh_err(rh_cmd(&P, "CRDT.MERGE {o}k %b ORIGIN 0", p1, l1)), "ORIGIN") != NULL,
       "ORIGIN 0 is refused");
    ok(strstr(rh_err(rh_cmd(&P, "CRDT.MERGE {o}k %b ORIGIN x", p1, l1)), "ORIGIN") != NULL,
       "ORIGIN x is refused");
    ok(strstr(rh_err(rh_cmd(&P, "CRDT.MERGE {o}k %b ORIGIN", p1, l1)), "payload") != NULL,
       "a lone ORIGIN is a (bad) payload");
    is_int(rh_int(rh_cmd(&P, "WAIT 1 10000")), 1, "the replica has the writes");
    char rname[CRDTM_LOG_NAME_MAX];
    ok(log_of(&R, "{o}k", rname) == 0 && !strcmp(rname, name), "the replica holds the log");
    is_int(entry_origin(&R, name, 2, &ne), 7, "and the origin of its entry");
    size_t sa, sb;
    char *a = rh_str(rh_cmd(&P, "CRDT.STATE {o}m"), &sa),
         *b = rh_str(rh_cmd(&R, "CRDT.STATE {o}m"), &sb);
    ok(a && b && sa == sb && !memcmp(a, b, sa), "the replica's state is the primary's");
    free(a);
    free(b);
    free(p1);
    free(p2);
    rh_stop(&R);
    rh_stop(&P);
}

/* CRDT.LOG.POLL: one command for many logs, only those with news in the reply */
static void test_poll(void)
{
    rh_server_t S;
    if (rh_start(&S, NULL, "node-id 3", NULL) < 0)
        bail_out("cannot start redis-server");
    rh_int(rh_cmd(&S, "CRDT.SADD {p1}k a"));
    rh_int(rh_cmd(&S, "CRDT.SADD {p2}k b"));
    rh_int(rh_cmd(&S, "CRDT.SADD {p3}k c"));
    char l1[CRDTM_LOG_NAME_MAX], l2[CRDTM_LOG_NAME_MAX], l3[CRDTM_LOG_NAME_MAX];
    ok(log_of(&S, "{p1}k", l1) == 0 && log_of(&S, "{p2}k", l2) == 0 && log_of(&S, "{p3}k", l3) == 0,
       "three logs");
    readres_t r1 = {0}, r2 = {0};
    log_read(&S, l1, "0", 10, NULL, &r1);
    log_read(&S, l2, "0", 10, NULL, &r2);
    redisReply *p = rh_cmd(&S, "CRDT.LOG.POLL 100 %s %s %s %s %s 0", l1, r1.pos, l2, r2.pos, l3);
    ok(p && p->type == REDIS_REPLY_ARRAY && p->elements == 2 &&
           !strcmp(p->element[0]->element[0]->str, l3) &&
           p->element[0]->element[1]->element[2]->elements == 1 && p->element[1]->integer == 0,
       "two logs read to their end are left out; the third (from 0) comes with its entry, more 0");
    if (p)
        freeReplyObject(p);
    rh_int(rh_cmd(&S, "CRDT.SADD {p2}k b2"));
    rh_int(rh_cmd(&S, "CRDT.SADD {p2}k b3"));
    p = rh_cmd(&S, "CRDT.LOG.POLL 100 %s %s %s %s", l1, r1.pos, l2, r2.pos);
    ok(p && p->elements == 2 && !strcmp(p->element[0]->element[0]->str, l2) &&
           p->element[0]->element[1]->element[2]->elements == 2,
       "a log written again comes with its 2 new entries");
    if (p)
        freeReplyObject(p);
    p = rh_cmd(&S, "CRDT.LOG.POLL 1 %s 0 %s 0 %s 0", l1, l2, l3);
    ok(p && p->elements == 2 && p->element[0]->element[1]->element[2]->elements == 1 &&
           p->element[1]->integer == 1,
       "count 1: one entry in all, and more 1");
    if (p)
        freeReplyObject(p);
    p = rh_cmd(&S, "CRDT.LOG.POLL 10 nolog 0 %s $", l1);
    ok(p && p->elements == 3 && p->element[0]->element[1]->type == REDIS_REPLY_ERROR &&
           p->element[1]->element[1]->element[2]->elements == 0,
       "a bad log name answers its error in place; $ answers the end position");
    if (p)
        freeReplyObject(p);
    /* a position past the log's end (a failover lost entries): read from the first, truncated */
    char past[CRDTM_POS_TEXT_MAX];
    snprintf(past, sizeof(past), "%.16s:99999999999999-0:50", r1.pos);
    p = rh_cmd(&S, "CRDT.LOG.POLL 10 %s %s", l1, past);
    ok(p && p->elements == 2 && !strcmp(p->element[0]->element[1]->element[1]->str, "truncated"),
       "a position past the end comes back as truncated");
    if (p)
        freeReplyObject(p);
    ok(strstr(rh_err(rh_cmd(&S, "CRDT.LOG.POLL 10 %s", l1)), "wrong number") != NULL,
       "an odd log/position list is refused");
    rh_stop(&S);
}

/* Are the entries of a LOG.READ-shaped reply rr the same (ids, keys, deltas, in order) as those
 * of want, from want's entry `from`? */
static bool same_entries(const redisReply *rr, const redisReply *want, size_t from)
{
    if (!rr || rr->type != REDIS_REPLY_ARRAY || rr->elements != 3 || !want ||
        want->type != REDIS_REPLY_ARRAY || want->elements != 3)
        return false;
    const redisReply *a = rr->element[2], *b = want->element[2];
    if (from + a->elements > b->elements)
        return false;
    for (size_t i = 0; i < a->elements; i++)
        for (size_t f = 0; f < 3; f++) {
            const redisReply *x = a->element[i]->element[f], *y = b->element[from + i]->element[f];
            if (x->len != y->len || memcmp(x->str, y->str, x->len) != 0)
                return false;
        }
    return true;
}

/* A follower's POLL near the log's end reads back from the end (changelog.c, collect_tail): the
 * same entries, in the same order, as a forward READ, across stream nodes, and the oldest ones
 * when the count is smaller than what follows the position. */
static void test_poll_tail(void)
{
    rh_server_t S;
    if (rh_start(&S, NULL, "node-id 3", NULL) < 0)
        bail_out("cannot start redis-server");
    for (int i = 0; i < 250; i++) /* more than one stream node (100 entries each) */
        rh_int(rh_cmd(&S, "CRDT.TLADD {pt}k%d %d m%d", i % 7, i + 1, i));
    char l[CRDTM_LOG_NAME_MAX];
    ok(log_of(&S, "{pt}k0", l) == 0, "a log of 250 entries");
    redisReply *all = rh_cmd(&S, "CRDT.LOG.READ %s 0 1000", l);
    ok(all && all->type == REDIS_REPLY_ARRAY && all->elements == 3 &&
           all->element[2]->elements == 250,
       "a forward read has all 250");
    redisReply *at = rh_cmd(&S, "CRDT.LOG.READ %s 0 37", l); /* its position: after entry 37 */
    const char *pos = at && at->type == REDIS_REPLY_ARRAY ? at->element[0]->str : "0";
    redisReply *p = rh_cmd(&S, "CRDT.LOG.POLL 1000 %s %s", l, pos);
    ok(p && p->type == REDIS_REPLY_ARRAY && p->elements == 2 &&
           p->element[0]->element[1]->element[2]->elements == 213 &&
           same_entries(p->element[0]->element[1], all, 37) &&
           !strcmp(p->element[0]->element[1]->element[0]->str, all->element[0]->str),
       "POLL after entry 37: the 213 that follow, in order, ending at READ's end position");
    if (p)
        freeReplyObject(p);
    p = rh_cmd(&S, "CRDT.LOG.POLL 5 %s %s", l, pos);
    ok(p && p->type == REDIS_REPLY_ARRAY && p->elements == 2 &&
           p->element[0]->element[1]->element[2]->elements == 5 &&
           same_entries(p->element[0]->element[1], all, 37),
       "POLL 5 after entry 37: the oldest 5 of them (38-42)");
    if (p)
        freeReplyObject(p);
    rh_int(rh_cmd(&S, "CRDT.TLADD {pt}k0 999 last"));
    p = rh_cmd(&S, "CRDT.LOG.POLL 10 %s %s", l, all->element[0]->str);
    redisReply *one = rh_cmd(&S, "CRDT.LOG.READ %s %s 10", l, all->element[0]->str);
    ok(p && p->type == REDIS_REPLY_ARRAY && p->elements == 2 &&
           p->element[0]->element[1]->element[2]->elements == 1 &&
           same_entries(p->element[0]->element[1], one, 0),
       "POLL at the end after one more write: that entry, as READ gives it");
    if (p)
        freeReplyObject(p);
    if (one)
        freeReplyObject(one);
    if (at)
        freeReplyObject(at);
    if (all)
        freeReplyObject(all);
    rh_stop(&S);
}

/* CRDT.LOG.READ's counters (entries-added, last-generated-id), which the module keeps itself, agree
 * with XINFO STREAM after every way a log can change: the module's appends, another client's XADD,
 * XDEL, XTRIM, XSETID, RESTORE, MULTI, DEBUG RELOAD, COPY and SWAPDB, and on a replica. */
static bool counters_agree(rh_server_t *s, const char *name, const char *what)
{
    redisReply *r = rh_cmd(s, "CRDT.LOG.READ %s $ 1", name);
    redisReply *x = rh_cmd(s, "XINFO STREAM %s", name);
    long long added = -1, len = -1;
    char last[48] = "?", want[128] = "", got[CRDTM_POS_TEXT_MAX] = "?";
    for (size_t i = 0; x && x->type == REDIS_REPLY_ARRAY && i + 1 < x->elements; i += 2) {
        const char *f = x->element[i]->str;
        if (!strcmp(f, "entries-added"))
            added = x->element[i + 1]->integer;
        else if (!strcmp(f, "length"))
            len = x->element[i + 1]->integer;
        else if (!strcmp(f, "last-generated-id"))
            snprintf(last, sizeof(last), "%s", x->element[i + 1]->str);
    }
    if (r && r->type == REDIS_REPLY_ARRAY && r->elements == 3) {
        snprintf(got, sizeof(got), "%s", r->element[0]->str);
        if (added > 0)
            snprintf(want, sizeof(want), "%.16s:%s:%lld", got, last, added);
        else
            snprintf(want, sizeof(want), "0");
    }
    bool end_ok = !strcmp(got, want);
    if (r)
        freeReplyObject(r);
    if (x)
        freeReplyObject(x);
    /* from the start: every entry kept, "truncated" exactly when some were removed */
    readres_t f = {0};
    log_read(s, name, "0", 10000, NULL, &f);
    const char *off = strrchr(f.pos, ':');
    bool start_ok = f.n == len && !strcmp(f.status, added > len ? "truncated" : "ok") &&
                    (len == 0 || (off && atoll(off + 1) == added));
    ok(end_ok && start_ok, "%s: $ is %s (XINFO: %s), from 0 %ld entries %s (XLEN %lld)", what, got,
       want, f.n, f.status, len);
    return end_ok && start_ok;
}

static void test_counters(void)
{
    rh_server_t S;
    if (rh_start(&S, NULL, "node-id 5", NULL) < 0)
        bail_out("cannot start redis-server");
    for (int i = 0; i < 3; i++)
        rh_int(rh_cmd(&S, "CRDT.SADD {c}k a%d", i));
    char name[CRDTM_LOG_NAME_MAX];
    ok(log_of(&S, "{c}k", name) == 0, "the log of {c}k");
    counters_agree(&S, name, "after the module's appends");
    rh_int(rh_cmd(&S, "CRDT.SADD {c}k a3"));
    counters_agree(&S, name, "after one more");
    is_int(rh_info_field(&S, "crdt", "crdt_log_counter_reads"), 0,
           "the module's own appends need no XINFO");
    free(rh_str(rh_cmd(&S, "XADD %s 99999999999999-5 e junk", name), NULL));
    counters_agree(&S, name, "after another client's XADD");
    is_int(rh_info_field(&S, "crdt", "crdt_log_counter_reads"), 1, "which took one XINFO");
    rh_int(rh_cmd(&S, "CRDT.SADD {c}k a4"));
    counters_agree(&S, name, "a module append after it");
    char before_del[CRDTM_POS_TEXT_MAX];
    {
        readres_t e = {0};
        log_read(&S, name, "0", 10000, NULL, &e);
        snprintf(before_del, sizeof(before_del), "%s", e.pos);
        redisReply *p = rh_cmd(&S, "CRDT.LOG.POLL 10 %s %s", name, before_del);
        ok(p && p->type == REDIS_REPLY_ARRAY && p->elements == 1,
           "POLL from the last entry: left out");
        if (p)
            freeReplyObject(p);
    }
    redisReply *last = rh_cmd(&S, "XREVRANGE %s + - COUNT 1", name);
    if (last && last->type == REDIS_REPLY_ARRAY && last->elements == 1)
        rh_int(rh_cmd(&S, "XDEL %s %s", name, last->element[0]->element[0]->str));
    if (last)
        freeReplyObject(last);
    counters_agree(&S, name, "after XDEL of the last entry");
    {
        /* read to the end before XDEL, POLL from there: left out (the same answer as a seek
         * finding no entry after it) while the entry was there, in the reply with no entry now
         * that the position is past the last entry */
        redisReply *p = rh_cmd(&S, "CRDT.LOG.POLL 10 %s %s", name, before_del);
        ok(p && p->type == REDIS_REPLY_ARRAY && p->elements == 2 &&
               p->element[0]->element[1]->element[2]->elements == 0 &&
               !strcmp(p->element[0]->element[1]->element[1]->str, "ok"),
           "POLL from the deleted last entry: in the reply, no entries, ok");
        if (p)
            freeReplyObject(p);
    }
    rh_int(rh_cmd(&S, "XTRIM %s MAXLEN 2", name));
    counters_agree(&S, name, "after XTRIM MAXLEN 2");
    is_int(rh_info_field(&S, "crdt", "crdt_log_counter_reads"), 1,
           "XDEL and XTRIM change neither counter: no XINFO");
    free(rh_str(rh_cmd(&S, "XSETID %s 99999999999999-100 ENTRIESADDED 50", name), NULL));
    counters_agree(&S, name, "after XSETID ... ENTRIESADDED 50");
    rh_int(rh_cmd(&S, "CRDT.SADD {c}k a5"));
    counters_agree(&S, name, "a module append after it");
    size_t dl;
    char *dump = rh_str(rh_cmd(&S, "DUMP %s", name), &dl);
    rh_int(rh_cmd(&S, "CRDT.SADD {c}k a6"));
    counters_agree(&S, name, "before RESTORE of an older copy");
    free(
        rh_str(rh_cmd(&S, "RESTORE %s 0 %b REPLACE", name, dump ? dump : "", dump ? dl : 0), NULL));
    free(dump);
    counters_agree(&S, name, "after RESTORE REPLACE of the older copy");
    free(rh_str(rh_cmd(&S, "MULTI"), NULL));
    free(rh_str(rh_cmd(&S, "XADD %s * e junk", name), NULL));
    free(rh_str(rh_cmd(&S, "CRDT.SADD {c}k a7"), NULL));
    redisReply *ex = rh_cmd(&S, "EXEC");
    if (ex)
        freeReplyObject(ex);
    counters_agree(&S, name, "after XADD and a module append in one MULTI");
    free(rh_str(rh_cmd(&S, "DEBUG RELOAD"), NULL));
    counters_agree(&S, name, "after DEBUG RELOAD");
    rh_int(rh_cmd(&S, "CRDT.SADD {c}k a8"));
    counters_agree(&S, name, "a module append after it");
    /* the same name in db 1 (COPY), db 0 written on, then the dbs swapped */
    rh_int(rh_cmd(&S, "COPY %s %s DB 1", name, name));
    counters_agree(&S, name, "after COPY to db 1");
    rh_int(rh_cmd(&S, "CRDT.SADD {c}k a9"));
    counters_agree(&S, name, "db 0 written on");
    free(rh_str(rh_cmd(&S, "SWAPDB 0 1"), NULL));
    counters_agree(&S, name, "after SWAPDB 0 1 (db 0 holds the older copy)");
    free(rh_str(rh_cmd(&S, "SELECT 1"), NULL));
    counters_agree(&S, name, "db 1 (the newer copy)");
    free(rh_str(rh_cmd(&S, "SELECT 0"), NULL));
    /* a replica: CRDT.LOG.APPLY and XADD (CRDT.MERGE's entry) */
    rh_server_t R;
    char port[16];
    snprintf(port, sizeof(port), "%d", S.port);
    const char *rep[] = {"--replicaof", "127.0.0.1", port, NULL};
    if (rh_start(&R, NULL, "node-id 6", rep) < 0)
        bail_out("cannot start redis-server");
    for (int i = 0; i < 200; i++) {
        char *info = rh_str(rh_cmd(&R, "INFO replication"), NULL);
        bool up = info && strstr(info, "master_link_status:up");
        free(info);
        if (up)
            break;
        rh_sleep_ms(50);
    }
    counters_agree(&R, name, "on a replica after its sync");
    for (int i = 0; i < 5; i++)
        rh_int(rh_cmd(&S, "CRDT.SADD {c}k b%d", i));
    size_t slen;
    char *st = rh_str(rh_cmd(&S, "CRDT.STATE {c}k"), &slen);
    rh_int(rh_cmd(&S, "CRDT.MERGE {c}k2 %b", st ? st : "", st ? slen : 0));
    free(st);
    rh_int(rh_cmd(&S, "CRDT.SADD {c}k b9"));
    is_int(rh_int(rh_cmd(&S, "WAIT 1 10000")), 1, "WAIT 1");
    counters_agree(&S, name, "the primary after the writes");
    counters_agree(&R, name, "the replica after CRDT.LOG.APPLY and XADD");
    /* past log-max-len (256) and its slack: trimmed on the primary, the trim replicated */
    long long trims = rh_info_field(&S, "crdt", "crdt_log_trims");
    for (int i = 0; i < 400; i++)
        rh_int(rh_cmd(&S, "CRDT.SADD {c}k t%d", i));
    is_int(rh_int(rh_cmd(&S, "WAIT 1 10000")), 1, "WAIT 1 after 400 more");
    long long lp = rh_int(rh_cmd(&S, "XLEN %s", name)), lr = rh_int(rh_cmd(&R, "XLEN %s", name));
    ok(rh_info_field(&S, "crdt", "crdt_log_trims") > trims && lp >= 256 && lp <= 256 + 64 &&
           lr == lp,
       "trimmed to 256..320 entries (%lld), the replica holds as many (%lld)", lp, lr);
    redisReply *fp = rh_cmd(&S, "XRANGE %s - + COUNT 1", name);
    redisReply *fr = rh_cmd(&R, "XRANGE %s - + COUNT 1", name);
    ok(fp && fr && fp->elements == 1 && fr->elements == 1 &&
           !strcmp(fp->element[0]->element[0]->str, fr->element[0]->element[0]->str),
       "and the same first entry");
    if (fp)
        freeReplyObject(fp);
    if (fr)
        freeReplyObject(fr);
    counters_agree(&S, name, "the primary after trims");
    counters_agree(&R, name, "the replica after trims");
    rh_stop(&R);
    rh_stop(&S);
}

/* The entry value's codec (logpos.c): round trips and every malformed form refused. */
static void test_entry_codec(void)
{
    char buf[CRDTM_ENTRY_MAX(300, 5)], key[300];
    memset(key, 'k', sizeof(key));
    static const uint64_t origins[] = {0, 1, 127, 128, UINT64_MAX};
    static const size_t klens[] = {0, 1, 63, 64, 300};
    for (size_t o = 0; o < 5; o++)
        for (size_t k = 0; k < 5; k++) {
            size_t n = crdtm_entry_encode(buf, key, klens[k], origins[o], "delta", 5);
            crdtm_entry_t e;
            bool back = crdtm_entry_decode(buf, n, &e) == 0 && e.klen == klens[k] && e.key > buf &&
                        !memcmp(e.key, key, e.klen) && e.origin == origins[o] && e.dlen == 5 &&
                        !memcmp(e.delta, "delta", 5);
            ok(back, "entry of a %zu-byte key, origin %llu: round trip", klens[k],
               (unsigned long long)origins[o]);
        }
    crdtm_entry_t e;
    static const struct {
        const char *s;
        size_t len;
        const char *what;
    } bad[] = {{"", 0, "empty"},
               {"\x80", 1, "a truncated varint"},
               {"\x06"
                "ab",
                3, "a key longer than the value"},
               {"\x03"
                "a",
                2, "an origin flag without the origin"},
               {"\x03"
                "a\x00"
                "d",
                4, "origin 0"},
               {"\xff\xff\xff\xff\xff\xff\xff\xff\xff\x7f", 10, "a varint past 64 bits"},
               {"\x80\x80\x80\x80\x80\x80\x80\x80\x80\x80\x00", 11, "an 11-byte varint"}};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
        ok(crdtm_entry_decode(bad[i].s, bad[i].len, &e) < 0, "refused: %s", bad[i].what);
    ok(crdtm_entry_decode("\x02"
                          "a",
                          2, &e) == 0 &&
           e.klen == 1 && e.dlen == 0,
       "an empty delta decodes (the module refuses it as a payload)");
}

int main(void)
{
    const char *why = rh_skip_reason();
    if (why)
        skip_all("%s", why);
    test_entry_codec();
    rh_watchdog(rh_sanitized() ? 240 : 120);
    test_basics();
    test_replica_restore_off();
    test_tlmadd_replica();
    test_trim_policies();
    test_origin();
    test_poll();
    test_poll_tail();
    test_counters();
    is_int(rh_sanitizer_reports(), 0, "no sanitizer reports from the servers");
    rh_cleanup();
    return done_testing();
}
