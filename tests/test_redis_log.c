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
#include <unistd.h>

#include "crdt.h"
#include "logpos.h"
#include "logval.h"
#include "redis_helper.h"

/* A field of CRDT.LOG.INFO name (length, entries-added, first-entry, last-ms); -1 if none. */
static long long log_info(rh_server_t *s, const char *name, const char *field)
{
    redisReply *r = rh_cmd(s, "CRDT.LOG.INFO %s", name);
    long long v = -1;
    for (size_t i = 0; r && r->type == REDIS_REPLY_ARRAY && i + 1 < r->elements; i += 2)
        if (!strcmp(r->element[i]->str, field) && r->element[i + 1]->type == REDIS_REPLY_INTEGER)
            v = r->element[i + 1]->integer;
    if (r)
        freeReplyObject(r);
    return v;
}

static long long log_len(rh_server_t *s, const char *name)
{
    return log_info(s, name, "length");
}

/* Whether s answers PING with PONG (rh_err of no reply at all is "", as of a good one). */
static bool serves(rh_server_t *s)
{
    char *pong = rh_str(rh_cmd(s, "PING"), NULL);
    bool good = pong && !strcmp(pong, "PONG");
    free(pong);
    return good;
}

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
    ok(serves(&A), "the server still serves");

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
    long long len = log_len(&A, name);
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
    /* CRDT.MERGE is replicated verbatim, its entry as CRDT.LOG.APPEND (the writes above as
     * CRDT.LOG.APPLY) */
    size_t slen;
    char *st = rh_str(rh_cmd(&P, "CRDT.STATE s"), &slen);
    is_int(rh_int(rh_cmd(&P, "CRDT.MERGE s2 %b", st, slen)), 1, "CRDT.MERGE into a new key");
    free(st);
    is_int(rh_int(rh_cmd(&P, "WAIT 1 10000")), 1, "WAIT 1: the replica has the writes");
    char name[CRDTM_LOG_NAME_MAX], rname[CRDTM_LOG_NAME_MAX], cname0[CRDTM_LOG_NAME_MAX];
    ok(log_of(&P, "s", name) == 0 && log_of(&R, "s", rname) == 0 && !strcmp(name, rname),
       "the replica holds the primary's log %s", name);
    is_int(log_len(&R, name), 20, "with its 20 entries");
    is_int(rh_info_field(&R, "crdt", "crdt_log_appends"), 0, "the replica appended none itself");
    is_int(rh_info_field(&R, "crdt", "crdt_log_applied"), 20,
           "it applied the 20 writes' CRDT.LOG.APPLY");
    ok(log_of(&R, "s2", rname) == 0 && log_of(&P, "s2", cname0) == 0 && !strcmp(cname0, rname) &&
           log_len(&R, rname) == 1,
       "the merge's entry reached the replica's log %s", rname);
    /* from a client, CRDT.LOG.APPLY is refused and changes nothing */
    long long xl = log_len(&P, name);
    ok(strstr(rh_err(rh_cmd(&P, "CRDT.LOG.APPLY %s s %b", name, "\x01\x02sx", (size_t)4)),
              "only the replication link") != NULL,
       "CRDT.LOG.APPLY from a client is refused");
    ok(strstr(
           rh_err(rh_cmd(&P, "CRDT.LOG.APPEND %s %lld %b", name, xl + 1, "\x01\x02sx", (size_t)4)),
           "only the replication link") != NULL,
       "CRDT.LOG.APPEND from a client is refused");
    is_int(log_len(&P, name), xl, "and appends nothing");
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
    is(rh_err(rh_cmd(&G, "CRDT.LOG.GROUP %s CREATE follower 0", name)), "",
       "a consumer group at 0");
    for (int i = 0; i < 60; i++)
        rh_int(rh_cmd(&G, "CRDT.INCRBY c 1"));
    is_int(log_len(&G, name), 61, "nothing trimmed the group has not acked");
    is(rh_err(rh_cmd(&G, "CRDT.LOG.GROUP %s SETID follower $", name)), "",
       "the group acks everything");
    for (int i = 0; i < 30; i++)
        rh_int(rh_cmd(&G, "CRDT.INCRBY c 1"));
    long long len = log_len(&G, name);
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
    len = log_len(&T, name);
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
    /* the entry as CRDT.LOG.READ unpacks it: key, delta and origin of the record */
    redisReply *x = rh_cmd(&P, "CRDT.LOG.READ %s 0 1000", name);
    redisReply *xe =
        x && x->type == REDIS_REPLY_ARRAY && x->elements == 3 && x->element[2]->elements >= 3
            ? x->element[2]->element[2]
            : NULL;
    ok(xe && xe->elements == 4 && xe->element[1]->len == 4 &&
           !memcmp(xe->element[1]->str, "{o}k", 4) && xe->element[2]->len == l1 &&
           !memcmp(xe->element[2]->str, p1, l1) && xe->element[3]->integer == 7,
       "the entry is {o}k, the payload, origin 7");
    if (x)
        freeReplyObject(x);
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

/* A follower's POLL near the log's end: the same entries, in the same order, as a forward READ,
 * across chunks of the log, and the oldest ones when the count is smaller than what follows the
 * position. */
static void test_poll_tail(void)
{
    rh_server_t S;
    if (rh_start(&S, NULL, "node-id 3", NULL) < 0)
        bail_out("cannot start redis-server");
    for (int i = 0; i < 250; i++) /* more than one chunk (4 KB each) */
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

/* CRDT.LOG.READ's positions agree with CRDT.LOG.INFO: $ is the newest entry's (ms, offset), a
 * read from 0 returns every entry kept and says "truncated" exactly when some were removed. */
static bool positions_agree(rh_server_t *s, const char *name, const char *what)
{
    long long added = log_info(s, name, "entries-added"), len = log_len(s, name),
              ms = log_info(s, name, "last-ms");
    redisReply *r = rh_cmd(s, "CRDT.LOG.READ %s $ 1", name);
    char want[128] = "", got[CRDTM_POS_TEXT_MAX] = "?";
    if (r && r->type == REDIS_REPLY_ARRAY && r->elements == 3) {
        snprintf(got, sizeof(got), "%s", r->element[0]->str);
        if (added > 0)
            snprintf(want, sizeof(want), "%.16s:%lld-%lld:%lld", got, ms, added, added);
        else
            snprintf(want, sizeof(want), "0");
    }
    bool end_ok = !strcmp(got, want);
    if (r)
        freeReplyObject(r);
    readres_t f = {0};
    log_read(s, name, "0", 10000, NULL, &f);
    const char *off = strrchr(f.pos, ':');
    bool start_ok = f.n == len && !strcmp(f.status, added > len ? "truncated" : "ok") &&
                    (len == 0 || (off && atoll(off + 1) == added));
    ok(end_ok && start_ok, "%s: $ is %s (want %s), from 0 %ld entries %s (length %lld)", what, got,
       want, f.n, f.status, len);
    return end_ok && start_ok;
}

/* DEBUG DIGEST-VALUE of one key, as text (NULL if none). */
static char *digest_of(rh_server_t *s, const char *key)
{
    redisReply *r = rh_cmd(s, "DEBUG DIGEST-VALUE %s", key);
    char *d = NULL;
    if (r && r->type == REDIS_REPLY_ARRAY && r->elements == 1 && r->element[0]->str)
        d = strdup(r->element[0]->str);
    if (r)
        freeReplyObject(r);
    return d;
}

static bool same_digest(rh_server_t *a, rh_server_t *b, const char *key)
{
    char *x = digest_of(a, key), *y = digest_of(b, key);
    bool same = x && y && !strcmp(x, y);
    free(x);
    free(y);
    return same;
}

static void wait_link_up(rh_server_t *r)
{
    for (int i = 0; i < 200; i++) {
        char *info = rh_str(rh_cmd(r, "INFO replication"), NULL);
        bool up = info && strstr(info, "master_link_status:up");
        free(info);
        if (up)
            return;
        rh_sleep_ms(50);
    }
}

/* The log as a value of the module's type: positions through every way a log can change (the
 * module's appends, CRDT.LOG.TRIM, RESTORE of an older copy, DEBUG RELOAD, COPY, SWAPDB), its
 * type's methods (DEBUG DIGEST-VALUE, MEMORY USAGE, COPY), WRONGTYPE and key positions of the
 * new commands, and a replica: its log byte for byte the primary's through writes, merges,
 * trims by length and consumer groups. */
static void test_log_value(void)
{
    rh_server_t S;
    if (rh_start(&S, NULL, "node-id 5", NULL) < 0)
        bail_out("cannot start redis-server");
    for (int i = 0; i < 3; i++)
        rh_int(rh_cmd(&S, "CRDT.SADD {c}k a%d", i));
    char name[CRDTM_LOG_NAME_MAX];
    ok(log_of(&S, "{c}k", name) == 0, "the log of {c}k");
    redisReply *t = rh_cmd(&S, "TYPE %s", name);
    ok(t && t->str && !strcmp(t->str, "crdtd-log"), "TYPE of a log: crdtd-log");
    if (t)
        freeReplyObject(t);
    positions_agree(&S, name, "after the module's appends");
    ok(!strncmp(rh_err(rh_cmd(&S, "XLEN %s", name)), "WRONGTYPE", 9),
       "stream commands do not apply to a log: WRONGTYPE");
    long long mem3 = rh_int(rh_cmd(&S, "MEMORY USAGE %s", name));
    for (int i = 0; i < 200; i++)
        rh_int(rh_cmd(&S, "CRDT.SADD {c}k b%d", i));
    long long mem203 = rh_int(rh_cmd(&S, "MEMORY USAGE %s", name));
    ok(mem3 > 0 && mem203 > mem3 + 200 * 8, "MEMORY USAGE follows the entries (%lld, then %lld)",
       mem3, mem203);
    positions_agree(&S, name, "after 200 more");
    char before_trim[CRDTM_POS_TEXT_MAX];
    {
        readres_t e = {0};
        log_read(&S, name, "0", 10, NULL, &e);
        snprintf(before_trim, sizeof(before_trim), "%s", e.pos);
    }
    is_int(rh_int(rh_cmd(&S, "CRDT.LOG.TRIM %s 100", name)), 100, "CRDT.LOG.TRIM upto 100");
    is_int(log_info(&S, name, "first-entry"), 101, "the first entry is now 101");
    positions_agree(&S, name, "after CRDT.LOG.TRIM");
    {
        readres_t e = {0};
        log_read(&S, name, before_trim, 10, NULL, &e);
        is(e.status, "truncated", "a position in the trimmed part: truncated");
    }
    is_int(rh_int(rh_cmd(&S, "CRDT.LOG.TRIM %s 50", name)), 0, "a trim below the first: none");
    /* a position whose offset exists but whose entry is another (the ms differ): truncated */
    {
        readres_t e = {0};
        log_read(&S, name, "$", 1, NULL, &e);
        char other[CRDTM_POS_TEXT_MAX];
        snprintf(other, sizeof(other), "%.16s:1-203:203", e.pos);
        log_read(&S, name, other, 10, NULL, &e);
        is(e.status, "truncated", "a position of another entry at the same offset: truncated");
    }
    size_t dl;
    char *dump = rh_str(rh_cmd(&S, "DUMP %s", name), &dl);
    char *dg_old = digest_of(&S, name);
    rh_int(rh_cmd(&S, "CRDT.SADD {c}k c1"));
    char newer[CRDTM_POS_TEXT_MAX];
    {
        readres_t e = {0};
        log_read(&S, name, "$", 1, NULL, &e);
        snprintf(newer, sizeof(newer), "%s", e.pos);
    }
    is(rh_err(rh_cmd(&S, "RESTORE %s 0 %b REPLACE", name, dump ? dump : "", dump ? dl : 0)), "",
       "RESTORE REPLACE of an older copy");
    free(dump);
    char *dg_back = digest_of(&S, name);
    ok(dg_old && dg_back && !strcmp(dg_old, dg_back), "its digest is the copy's");
    free(dg_old);
    free(dg_back);
    positions_agree(&S, name, "after RESTORE REPLACE of the older copy");
    {
        readres_t e = {0};
        log_read(&S, name, newer, 10, NULL, &e);
        is(e.status, "truncated", "a position past the restored log's end: truncated");
    }
    char *dg = digest_of(&S, name);
    is(rh_err(rh_cmd(&S, "DEBUG RELOAD")), "", "DEBUG RELOAD");
    char *dg2 = digest_of(&S, name);
    ok(dg && dg2 && !strcmp(dg, dg2), "the log's digest survives DEBUG RELOAD (rdb save, load)");
    free(dg2);
    positions_agree(&S, name, "after DEBUG RELOAD");
    rh_int(rh_cmd(&S, "CRDT.SADD {c}k a8"));
    positions_agree(&S, name, "a module append after it");
    /* COPY to db 1, db 0 written on, then the dbs swapped */
    is_int(rh_int(rh_cmd(&S, "COPY %s %s DB 1", name, name)), 1, "COPY to db 1");
    free(rh_str(rh_cmd(&S, "SELECT 1"), NULL));
    char *dg1 = digest_of(&S, name);
    free(rh_str(rh_cmd(&S, "SELECT 0"), NULL));
    char *dg0 = digest_of(&S, name);
    ok(dg0 && dg1 && !strcmp(dg0, dg1), "the copy's digest is the original's");
    free(dg0);
    free(dg1);
    free(dg);
    rh_int(rh_cmd(&S, "CRDT.SADD {c}k a9"));
    positions_agree(&S, name, "db 0 written on");
    free(rh_str(rh_cmd(&S, "SWAPDB 0 1"), NULL));
    positions_agree(&S, name, "after SWAPDB 0 1 (db 0 holds the older copy)");
    free(rh_str(rh_cmd(&S, "SWAPDB 0 1"), NULL));

    /* WRONGTYPE and key positions of the commands */
    rh_int(rh_cmd(&S, "SET crdt:log:{x}:00000000000000aa v"));
    static const char *const wrong[] = {"CRDT.LOG.INFO %s", "CRDT.LOG.TRIM %s 1",
                                        "CRDT.LOG.GROUP %s CREATE g 0", "CRDT.LOG.READ %s 0 1"};
    for (size_t i = 0; i < sizeof(wrong) / sizeof(wrong[0]); i++)
        ok(!strncmp(rh_err(rh_cmd(&S, wrong[i], "crdt:log:{x}:00000000000000aa")), "WRONGTYPE", 9),
           "%.14s of a string named like a log: WRONGTYPE", wrong[i]);
    static const struct {
        const char *cmd;
        size_t nkeys;
        const char *k0, *k1;
    } gk[] = {{"COMMAND GETKEYS CRDT.LOG.APPLY L K r", 2, "L", "K"},
              {"COMMAND GETKEYS CRDT.LOG.APPEND L 1 r r", 1, "L", NULL},
              {"COMMAND GETKEYS CRDT.LOG.TRIM L 1", 1, "L", NULL},
              {"COMMAND GETKEYS CRDT.LOG.GROUP L CREATE g 0", 1, "L", NULL},
              {"COMMAND GETKEYS CRDT.LOG.INFO L", 1, "L", NULL}};
    for (size_t i = 0; i < sizeof(gk) / sizeof(gk[0]); i++) {
        redisReply *r = rh_cmd(&S, gk[i].cmd);
        ok(r && r->type == REDIS_REPLY_ARRAY && r->elements == gk[i].nkeys &&
               !strcmp(r->element[0]->str, gk[i].k0) &&
               (!gk[i].k1 || !strcmp(r->element[1]->str, gk[i].k1)),
           "%s: its keys", gk[i].cmd);
        if (r)
            freeReplyObject(r);
    }

    /* consumer groups: create, move, refuse what is wrong, destroy */
    is(rh_err(rh_cmd(&S, "CRDT.LOG.GROUP %s CREATE g1 0", name)), "", "CREATE g1 at 0");
    ok(!strncmp(rh_err(rh_cmd(&S, "CRDT.LOG.GROUP %s CREATE g1 0", name)), "BUSYGROUP", 9),
       "CREATE g1 again: BUSYGROUP");
    ok(!strncmp(rh_err(rh_cmd(&S, "CRDT.LOG.GROUP %s SETID nog 0", name)), "NOGROUP", 7),
       "SETID of no group: NOGROUP");
    ok(strstr(rh_err(rh_cmd(&S, "CRDT.LOG.GROUP %s SETID g1 999999", name)), "past") != NULL,
       "SETID past the newest entry is refused");
    ok(strstr(rh_err(rh_cmd(&S, "CRDT.LOG.GROUP %s SETID g1 x", name)), "position") != NULL,
       "SETID to a bad position is refused");
    ok(strstr(rh_err(rh_cmd(&S, "CRDT.LOG.GROUP %s FOO g1", name)), "subcommand") != NULL,
       "an unknown subcommand is refused");
    {
        readres_t e = {0};
        log_read(&S, name, "$", 1, NULL, &e);
        is(rh_err(rh_cmd(&S, "CRDT.LOG.GROUP %s SETID g1 %s", name, e.pos)), "",
           "SETID g1 to a position READ gave");
        long long added = log_info(&S, name, "entries-added");
        redisReply *r = rh_cmd(&S, "CRDT.LOG.INFO %s", name);
        ok(r && r->elements == 10 && r->element[9]->elements == 1 &&
               r->element[9]->element[0]->element[1]->integer == added,
           "INFO shows g1 at the newest entry (%lld)", added);
        if (r)
            freeReplyObject(r);
    }
    is(rh_err(rh_cmd(&S, "CRDT.LOG.GROUP %s CREATE g2 5", name)), "", "CREATE g2 at 5");
    char *dgg = digest_of(&S, name);
    is(rh_err(rh_cmd(&S, "DEBUG RELOAD")), "", "DEBUG RELOAD with groups");
    char *dgg2 = digest_of(&S, name);
    ok(dgg && dgg2 && !strcmp(dgg, dgg2), "the groups survive it (same digest)");
    free(dgg);
    free(dgg2);
    is_int(rh_int(rh_cmd(&S, "CRDT.LOG.GROUP %s DESTROY g2", name)), 1, "DESTROY g2: 1");
    is_int(rh_int(rh_cmd(&S, "CRDT.LOG.GROUP %s DESTROY g2", name)), 0, "again: 0");

    /* a replica: a full sync (rdb), then CRDT.LOG.APPLY, CRDT.LOG.APPEND (CRDT.MERGE's entry),
     * CRDT.LOG.TRIM and CRDT.LOG.GROUP */
    rh_server_t R;
    char port[16];
    snprintf(port, sizeof(port), "%d", S.port);
    const char *rep[] = {"--replicaof", "127.0.0.1", port, NULL};
    if (rh_start(&R, NULL, "node-id 6", rep) < 0)
        bail_out("cannot start redis-server");
    wait_link_up(&R);
    positions_agree(&R, name, "on a replica after its sync");
    for (int i = 0; i < 5; i++)
        rh_int(rh_cmd(&S, "CRDT.SADD {c}k d%d", i));
    size_t slen;
    char *st = rh_str(rh_cmd(&S, "CRDT.STATE {c}k"), &slen);
    rh_int(rh_cmd(&S, "CRDT.MERGE {c}k2 %b", st ? st : "", st ? slen : 0));
    free(st);
    rh_int(rh_cmd(&S, "CRDT.SADD {c}k d9"));
    is(rh_err(rh_cmd(&S, "CRDT.LOG.GROUP %s CREATE g3 $", name)), "", "CREATE g3 at $");
    is_int(rh_int(rh_cmd(&S, "WAIT 1 10000")), 1, "WAIT 1");
    ok(same_digest(&S, &R, name), "the replica's log is the primary's (DEBUG DIGEST-VALUE)");
    positions_agree(&R, name, "the replica after CRDT.LOG.APPLY and CRDT.LOG.APPEND");
    /* past log-max-len (256) and its slack: trimmed on the primary, the trim replicated */
    long long trims = rh_info_field(&S, "crdt", "crdt_log_trims");
    for (int i = 0; i < 400; i++)
        rh_int(rh_cmd(&S, "CRDT.SADD {c}k t%d", i));
    is_int(rh_int(rh_cmd(&S, "WAIT 1 10000")), 1, "WAIT 1 after 400 more");
    long long lp = log_len(&S, name), lr = log_len(&R, name);
    ok(rh_info_field(&S, "crdt", "crdt_log_trims") > trims && lp >= 256 && lp <= 256 + 64 &&
           lr == lp,
       "trimmed to 256..320 entries (%lld), the replica holds as many (%lld)", lp, lr);
    is_int(log_info(&R, name, "first-entry"), log_info(&S, name, "first-entry"),
           "from the same first entry");
    ok(same_digest(&S, &R, name), "and the same log, byte for byte (DEBUG DIGEST-VALUE)");
    is_int(rh_info_field(&R, "crdt", "crdt_log_appends"), 0, "the replica appended nothing itself");
    positions_agree(&S, name, "the primary after trims");
    positions_agree(&R, name, "the replica after trims");
    rh_stop(&R);
    rh_stop(&S);
}

/* log-trim-acked and log-max-age-ms on a primary with a replica: the trims the primary decides
 * reach the replica as they were (the replica's own clock and settings play no part). */
static void test_trim_replicated(void)
{
    rh_server_t P, R;
    if (rh_start(&P, NULL, "node-id 1 log-max-len 8 log-max-age-ms 300 log-trim-acked yes", NULL) <
        0)
        bail_out("cannot start redis-server");
    char port[16];
    snprintf(port, sizeof(port), "%d", P.port);
    const char *rep[] = {"--replicaof", "127.0.0.1", port, NULL};
    /* the replica's own bounds differ: it must not apply them */
    if (rh_start(&R, NULL, "node-id 2 log-max-len 2", rep) < 0)
        bail_out("cannot start redis-server");
    wait_link_up(&R);
    for (int i = 0; i < 12; i++)
        rh_int(rh_cmd(&P, "CRDT.INCRBY {a}c 1"));
    char name[CRDTM_LOG_NAME_MAX];
    ok(log_of(&P, "{a}c", name) == 0, "the log of {a}c");
    is(rh_err(rh_cmd(&P, "CRDT.LOG.GROUP %s CREATE slow 10", name)), "", "a group at 10");
    for (int i = 0; i < 40; i++)
        rh_int(rh_cmd(&P, "CRDT.INCRBY {a}c 1"));
    is_int(rh_int(rh_cmd(&P, "WAIT 1 10000")), 1, "WAIT 1");
    long long first = log_info(&P, name, "first-entry");
    ok(first <= 11, "the group at 10 holds back the trim (first entry %lld)", first);
    ok(same_digest(&P, &R, name), "the replica's log is the primary's");
    rh_sleep_ms(400);
    for (int i = 0; i < 70; i++)
        rh_int(rh_cmd(&P, "CRDT.INCRBY {a}c 1"));
    is_int(rh_int(rh_cmd(&P, "WAIT 1 10000")), 1, "WAIT 1");
    ok(log_info(&P, name, "first-entry") <= 11, "the age bound waits for the group too");
    is(rh_err(rh_cmd(&P, "CRDT.LOG.GROUP %s DESTROY slow", name)), "", "the group goes");
    rh_sleep_ms(400);
    for (int i = 0; i < 64; i++)
        rh_int(rh_cmd(&P, "CRDT.INCRBY {a}c 1"));
    is_int(rh_int(rh_cmd(&P, "WAIT 1 10000")), 1, "WAIT 1");
    long long len = log_len(&P, name);
    ok(len <= 8 + 16 && log_info(&P, name, "first-entry") > 11,
       "then trimmed by length and age (%lld left)", len);
    ok(same_digest(&P, &R, name), "the replica holds the same entries after the trims");
    is_int(log_len(&R, name), len, "as many as the primary");
    rh_stop(&R);
    rh_stop(&P);
}

/* Appends keep the slot's log value between writes (changelog.c): whatever takes the key away
 * or puts another value there must make the next write find the log anew, never write into a
 * value gone or elsewhere (the sanitizer build turns a slip into a report). */
static void test_append_cache(void)
{
    rh_server_t S;
    if (rh_start(&S, NULL, "node-id 8", NULL) < 0)
        bail_out("cannot start redis-server");
    char name[CRDTM_LOG_NAME_MAX], again[CRDTM_LOG_NAME_MAX];
    static const char *const ways[] = {
        "DEL %s",         "UNLINK %s", "RENAME %s moved:1", "MOVE %s 1",    "SET %s x",
        "FLUSHALL ASYNC", "FLUSHALL",  "SWAPDB 0 1",        "DEBUG RELOAD", "EXPIRE %s 0"};
    for (size_t w = 0; w < sizeof(ways) / sizeof(ways[0]); w++) {
        free(rh_str(rh_cmd(&S, "FLUSHALL"), NULL));
        for (int i = 0; i < 3; i++)
            rh_int(rh_cmd(&S, "CRDT.SADD {ac}k a%d", i));
        ok(log_of(&S, "{ac}k", name) == 0, "%.*s: a log", (int)strcspn(ways[w], " "), ways[w]);
        free(rh_str(rh_cmd(&S, ways[w], name), NULL));
        long long before_len = log_len(&S, name);
        bool kept = !strncmp(ways[w], "DEBUG", 5);
        rh_int(rh_cmd(&S, "CRDT.SADD {ac}k b"));
        redisReply *l = rh_cmd(&S, "CRDT.LOG.LIST %u", crdtm_keyslot("{ac}k", 5));
        bool found = false;
        for (size_t i = 0; l && l->type == REDIS_REPLY_ARRAY && i < l->elements; i++) {
            snprintf(again, sizeof(again), "%s", l->element[i]->str);
            long long a = log_info(&S, again, "entries-added");
            found = found ||
                    (kept ? !strcmp(again, name) && a == 4 : strcmp(again, name) != 0 || a == 1);
        }
        if (l)
            freeReplyObject(l);
        ok(found, "%.*s: the next write goes to a log the keyspace holds (%s)",
           (int)strcspn(ways[w], " "), ways[w], kept ? "the same, 4 entries" : "a new one");
        if (!strncmp(ways[w], "RENAME", 6))
            is_int(log_len(&S, "moved:1") < 0 ? rh_int(rh_cmd(&S, "EXISTS moved:1")) : 1, 1,
                   "the renamed value is left alone");
        (void)before_len;
    }
    /* A log given a TTL (nobody should, but EXPIRE works on any key) is not kept between appends:
     * a write after its expiry goes to a new log, not into the expired value. Active expiry off,
     * so only the lazy one (an append opening the key) can find that it expired. */
    free(rh_str(rh_cmd(&S, "FLUSHALL"), NULL));
    free(rh_str(rh_cmd(&S, "DEBUG SET-ACTIVE-EXPIRE 0"), NULL));
    rh_int(rh_cmd(&S, "CRDT.SADD {ac}k a"));
    ok(log_of(&S, "{ac}k", name) == 0, "TTL: a log");
    is_int(rh_int(rh_cmd(&S, "PEXPIRE %s 200", name)), 1, "TTL: PEXPIRE on the log");
    rh_int(rh_cmd(&S, "CRDT.SADD {ac}k b")); /* opens the key (the event forgot it), sees the TTL */
    is_int(log_info(&S, name, "entries-added"), 2, "TTL: appends go to the log while it lives");
    usleep(400 * 1000);
    rh_int(rh_cmd(&S, "CRDT.SADD {ac}k c"));
    bool fresh = log_of(&S, "{ac}k", again) == 0 && strcmp(again, name) != 0 &&
                 log_info(&S, again, "entries-added") == 1;
    ok(fresh, "TTL: the write after the expiry goes to a new log (%s, %lld entries)", again,
       log_info(&S, again, "entries-added"));
    free(rh_str(rh_cmd(&S, "DEBUG SET-ACTIVE-EXPIRE 1"), NULL));
    ok(serves(&S), "the server still serves");
    rh_stop(&S);
}

/* CRDT.LOG.LIST asks whether each log it knows is still there, and a log past its TTL is deleted
 * by that very question: its "expired" event takes it off the slot's list LIST walks. The log after
 * it moved into its place and was skipped, so LIST did not name a live log. Two logs in a slot (a
 * COPY of the log under a lower epoch, as a resharding leaves them), the first with a TTL. */
static void test_list_expired(void)
{
    rh_server_t S;
    if (rh_start(&S, NULL, "node-id 9", NULL) < 0)
        bail_out("cannot start redis-server");
    free(rh_str(rh_cmd(&S, "DEBUG SET-ACTIVE-EXPIRE 0"), NULL));
    char name[CRDTM_LOG_NAME_MAX], low[CRDTM_LOG_NAME_MAX];
    rh_int(rh_cmd(&S, "CRDT.SADD {le}k a"));
    ok(log_of(&S, "{le}k", name) == 0, "a log");
    snprintf(low, sizeof(low), "%.*s0000000000000001", (int)strlen(name) - 16, name);
    is_int(rh_int(rh_cmd(&S, "COPY %s %s", name, low)), 1, "a copy of it under epoch 1");
    is_int(rh_int(rh_cmd(&S, "PEXPIRE %s 100", low)), 1, "the copy gets a TTL");
    rh_sleep_ms(300);
    redisReply *l = rh_cmd(&S, "CRDT.LOG.LIST %u", crdtm_keyslot("{le}k", 5));
    bool named =
        l && l->type == REDIS_REPLY_ARRAY && l->elements == 1 && !strcmp(l->element[0]->str, name);
    ok(named, "LIST names the log that lives, not the one that expired (%zu names)",
       l && l->type == REDIS_REPLY_ARRAY ? l->elements : 0);
    if (l)
        freeReplyObject(l);
    is_int(rh_int(rh_cmd(&S, "EXISTS %s", low)), 0, "the copy is gone");
    rh_stop(&S);
}

/* Only db 0 is logged. Writes alternating between db 0 and db 1 in one slot started a new log at
 * every change of db (its registry holds one slot's logs, whatever their db), and CRDT.LOG.LIST
 * in db 0 then named none of db 0's. And SWAPDB brings db 0 logs with no event per key: the
 * registry is made again from a scan of the new db 0. */
static void test_dbs(void)
{
    rh_server_t S;
    if (rh_start(&S, NULL, "node-id 6", NULL) < 0)
        bail_out("cannot start redis-server");
    for (int i = 0; i < 4; i++) {
        rh_int(rh_cmd(&S, "CRDT.SADD {db}a x%d", i));
        free(rh_str(rh_cmd(&S, "SELECT 1"), NULL));
        rh_int(rh_cmd(&S, "CRDT.SADD {db}b y%d", i));
        free(rh_str(rh_cmd(&S, "SELECT 0"), NULL));
    }
    is_int(rh_info_field(&S, "crdt", "crdt_log_created"), 1,
           "dbs: one log made, not one per switch");
    is_int(rh_info_field(&S, "crdt", "crdt_log_appends"), 4, "dbs: db 0's 4 writes logged");
    char name[CRDTM_LOG_NAME_MAX], again[CRDTM_LOG_NAME_MAX];
    ok(log_of(&S, "{db}a", name) == 0, "dbs: CRDT.LOG.LIST names db 0's log");
    is_int(log_info(&S, name, "entries-added"), 4, "dbs: the log holds db 0's writes only");
    free(rh_str(rh_cmd(&S, "SELECT 1"), NULL));
    redisReply *k = rh_cmd(&S, "KEYS crdt:log:*");
    is_int(k && k->type == REDIS_REPLY_ARRAY ? (long long)k->elements : -1, 0,
           "dbs: db 1 has no log");
    if (k)
        freeReplyObject(k);
    free(rh_str(rh_cmd(&S, "SELECT 0"), NULL));

    is_int(rh_int(rh_cmd(&S, "MOVE %s 1", name)), 1, "swapdb: the log MOVEd to db 1");
    ok(log_of(&S, "{db}a", again) < 0, "swapdb: then db 0 lists no log");
    is(rh_err(rh_cmd(&S, "SWAPDB 0 1")), "", "SWAPDB 0 1");
    ok(log_of(&S, "{db}a", again) == 0 && !strcmp(again, name),
       "swapdb: the log db 0 holds now is listed again");
    rh_int(rh_cmd(&S, "CRDT.SADD {db}b z"));
    is_int(log_info(&S, name, "entries-added"), 5, "swapdb: the next write appends to it");
    is_int(rh_info_field(&S, "crdt", "crdt_log_created"), 1, "swapdb: no new log made");
    ok(serves(&S), "the server still serves");
    rh_stop(&S);
}

/* Redis's CRC64 (Jones, reflected), the checksum of a DUMP payload. */
static uint64_t crc64_redis(const unsigned char *p, size_t n)
{
    uint64_t crc = 0;
    for (size_t i = 0; i < n; i++) {
        crc ^= p[i];
        for (int b = 0; b < 8; b++)
            crc = crc & 1 ? (crc >> 1) ^ 0x95ac9329ac4bc9b5ULL : crc >> 1;
    }
    return crc;
}

/* A DUMP payload of a log whose value is the bytes v (what rdb_save writes), made from a real
 * DUMP's head (type, module id) and tail (RDB version): the checksum is right, so Redis hands v
 * to the module's rdb_load. Returns its length in out (cap bytes). */
static size_t craft_dump(const unsigned char *real, size_t rlen, const char *v, size_t vlen,
                         unsigned char *out, size_t cap)
{
    if (rlen < 20 || vlen + 40 > cap || vlen >= 16384)
        return 0;
    size_t n = 0;
    memcpy(out, real, 10); /* RDB_TYPE_MODULE_2, 0x81 and the 64-bit module id */
    n = 10;
    out[n++] = 5; /* RDB_MODULE_OPCODE_STRING */
    if (vlen < 64) {
        out[n++] = (unsigned char)vlen;
    } else {
        out[n++] = (unsigned char)(0x40 | (vlen >> 8));
        out[n++] = (unsigned char)(vlen & 0xff);
    }
    memcpy(out + n, v, vlen);
    n += vlen;
    out[n++] = 0;                         /* RDB_MODULE_OPCODE_EOF */
    memcpy(out + n, real + rlen - 10, 2); /* RDB version */
    n += 2;
    uint64_t crc = crc64_redis(out, n);
    for (int i = 0; i < 8; i++)
        out[n++] = (unsigned char)(crc >> (8 * i));
    return n;
}

/* RESTORE of crafted log payloads: a valid one loads; every truncation and many corruptions of
 * it are refused with an error (never a crash); the server keeps serving. */
static void test_restore_corrupt(void)
{
    ok(crc64_redis((const unsigned char *)"123456789", 9) == 0xe9c6d914c4b8d9caULL,
       "crc64 check value");
    rh_server_t S;
    if (rh_start(&S, NULL, "node-id 7", NULL) < 0)
        bail_out("cannot start redis-server");
    rh_int(rh_cmd(&S, "CRDT.SADD {r}k a"));
    char name[CRDTM_LOG_NAME_MAX];
    ok(log_of(&S, "{r}k", name) == 0, "a log to take a DUMP of");
    size_t rl;
    unsigned char *real = (unsigned char *)rh_str(rh_cmd(&S, "DUMP %s", name), &rl);
    ok(real && rl > 20 && real[0] == 7, "DUMP of a log: a module value");
    /* a log of our making: 5 entries, two groups, trimmed to 3 */
    crdtm_logval_t *lv = crdtm_lv_new(1);
    for (int i = 0; i < 5; i++) {
        char rec[CRDTM_REC_MAX(4, 8)];
        size_t n = crdtm_lv_record(rec, 1000 + (uint64_t)i, "{r}k", 4, i == 2 ? 9 : 0,
                                   "\x01"
                                   "delta!",
                                   7);
        crdtm_lv_append(lv, rec, n);
    }
    crdtm_lv_group_set(lv, "g", 1, 4);
    crdtm_lv_group_set(lv, "h", 1, 2);
    crdtm_lv_trim(lv, 2);
    size_t vlen;
    char *v = crdtm_lv_encode(lv, &vlen);
    unsigned char pay[4096];
    size_t pl = craft_dump(real, rl, v, vlen, pay, sizeof(pay));
    const char *target = "crdt:log:{r}:00000000000000ab";
    is(rh_err(rh_cmd(&S, "RESTORE %s 0 %b", target, pay, pl)), "", "a crafted valid payload loads");
    is_int(log_info(&S, target, "length"), 3, "with its 3 entries");
    is_int(log_info(&S, target, "first-entry"), 3, "from entry 3");
    readres_t r = {0};
    log_read(&S, target, "0", 10, NULL, &r);
    is_int(r.n, 3, "READ gives them");
    is(r.status, "truncated", "and says the first two are gone");
    rh_int(rh_cmd(&S, "DEL %s", target));
    int refused = 0, tried = 0, crashed = 0;
    for (size_t cut = 0; cut < vlen; cut++) {
        pl = craft_dump(real, rl, v, cut, pay, sizeof(pay));
        tried++;
        if (strstr(rh_err(rh_cmd(&S, "RESTORE %s 0 %b", target, pay, pl)), "ERR"))
            refused++;
        rh_int(rh_cmd(&S, "DEL %s", target));
    }
    is_int(refused, tried, "every truncation of the value is refused (%d)", tried);
    /* byte corruptions: each either refused or a log READ and INFO can serve */
    srand(15);
    int loaded = 0;
    for (int i = 0; i < 400; i++) {
        char bad[512];
        memcpy(bad, v, vlen);
        size_t at = (size_t)rand() % vlen;
        bad[at] = (char)(i < 256 ? i : rand());
        pl = craft_dump(real, rl, bad, vlen, pay, sizeof(pay));
        const char *e = rh_err(rh_cmd(&S, "RESTORE %s 0 %b", target, pay, pl));
        if (!*e) {
            loaded++;
            readres_t q = {0};
            log_read(&S, target, "0", 100, NULL, &q);
            if (q.err[0])
                crashed++;
        }
        rh_int(rh_cmd(&S, "DEL %s", target));
    }
    is_int(crashed, 0, "corrupted values that load read like logs (%d of 400 loaded)", loaded);
    static const struct {
        const char *v;
        size_t n;
        const char *what;
    } hand[] = {{"\x02\x00\x00\x00\x00", 5, "another format version"},
                {"\x01\x01\x02\x00\x00", 5, "more entries kept than added"},
                {"\x01\x01\x00\x00\x01\x01g\x05", 8, "a group acked past the end"},
                {"\x01\x05\x00\x00\x02\x01g\x01\x01g\x02", 11, "a duplicate group"},
                {"\x01\x00\x00\x00\x00x", 6, "bytes after the last entry"},
                {"\x01\x01\x01\x00\x00\x02\x01\x09", 8, "an entry whose key runs past it"}};
    for (size_t i = 0; i < sizeof(hand) / sizeof(hand[0]); i++) {
        pl = craft_dump(real, rl, hand[i].v, hand[i].n, pay, sizeof(pay));
        ok(strstr(rh_err(rh_cmd(&S, "RESTORE %s 0 %b", target, pay, pl)), "ERR") != NULL,
           "refused: %s", hand[i].what);
    }
    ok(rh_info_field(&S, "crdt", "crdt_log_load_errors") >= tried, "INFO crdt_log_load_errors");
    ok(serves(&S), "the server still serves");
    free(real);
    crdtm_lv_free(lv);
    free(v);
    rh_stop(&S);
}

/* The log value itself (logval.c): appends, trims, seeks, groups and its bytes. */
static void test_logval(void)
{
    crdtm_logval_t *lv = crdtm_lv_new(1);
    char rec[CRDTM_REC_MAX(8, 300)], delta[300];
    memset(delta, 'd', sizeof(delta));
    for (int i = 1; i <= 1000; i++) {
        size_t n = crdtm_lv_record(rec, (uint64_t)i * 10, "key", 3, 0, delta, (size_t)(i % 300));
        if (crdtm_lv_append(lv, rec, n) != 0)
            break;
    }
    is_int((long long)lv->added, 1000, "1000 appends");
    ok(lv->nch > 10, "over many chunks (%u)", lv->nch);
    ok(crdtm_lv_append(lv, "\x80", 1) == -1, "a record that is none is refused");
    crdtm_lv_iter_t it;
    crdtm_rec_t r;
    bool all = true;
    for (uint64_t o = 1; o <= 1000; o += 37) {
        crdtm_lv_seek(lv, o, &it);
        all = all && crdtm_lv_next(&it, &r) && r.offset == o && r.ms == o * 10 &&
              r.elen == 4 + o % 300;
    }
    ok(all, "seek finds every offset, with its ms and entry");
    is_int((long long)crdtm_lv_older_than(lv, 505), 50, "older than ms 505: up to entry 50");
    is_int((long long)crdtm_lv_trim(lv, 333), 333, "trim up to 333");
    is_int((long long)crdtm_lv_first(lv), 334, "first is 334");
    crdtm_lv_seek(lv, 1, &it);
    ok(crdtm_lv_next(&it, &r) && r.offset == 334 && r.ms == 3340, "a seek before it lands on it");
    crdtm_lv_seek(lv, 1001, &it);
    ok(!crdtm_lv_next(&it, &r), "a seek past the end finds nothing");
    size_t count = 0;
    crdtm_lv_seek(lv, 0, &it);
    while (crdtm_lv_next(&it, &r))
        count++;
    is_int((long long)count, 667, "667 entries remain");
    ok(crdtm_lv_group_set(lv, "", 0, 1) == -1, "an empty group name is refused");
    crdtm_lv_group_set(lv, "b", 1, 900);
    crdtm_lv_group_set(lv, "a", 1, 500);
    uint64_t m;
    ok(crdtm_lv_min_acked(lv, &m) && m == 500, "the slowest group: 500");
    size_t n;
    char *b = crdtm_lv_encode(lv, &n);
    const char *why = NULL;
    crdtm_logval_t *back = crdtm_lv_decode(b, n, &why);
    size_t n2;
    char *b2 = back ? crdtm_lv_encode(back, &n2) : NULL;
    ok(b2 && n2 == n && !memcmp(b, b2, n), "encode, decode, encode: the same bytes");
    ok(back && back->added == 1000 && back->len == 667 && back->ngroups == 2 &&
           back->last_ms == 10000,
       "and the same counters and groups");
    crdtm_logval_t *cp = crdtm_lv_copy(lv);
    ok(cp && cp->len == 667 && crdtm_lv_mem(cp) > 667 * 100, "a copy, with its memory");
    int bad = 0;
    for (size_t cut = 0; cut < n; cut += (cut < 64 ? 1 : 97)) {
        crdtm_logval_t *t = crdtm_lv_decode(b, cut, &why);
        bad += t == NULL;
        crdtm_lv_free(t);
    }
    ok(bad > 0 && crdtm_lv_decode(b, n - 1, &why) == NULL, "truncations are refused (%s)", why);
    {
        char huge[16] = {1};
        size_t hn = 1 + crdtm_varint_put(huge + 1, (UINT64_C(1) << 62) + 1);
        memcpy(huge + hn, "\0\0\0", 3);
        ok(crdtm_lv_decode(huge, hn + 3, &why) == NULL && !strcmp(why, "entry count out of range"),
           "a log claiming more than 2^62 entries is refused (its offsets would wrap)");
    }
    crdtm_lv_free(cp);
    crdtm_lv_free(back);
    crdtm_lv_free(lv);
    free(b);
    free(b2);
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
    test_logval();
    rh_watchdog(rh_sanitized() ? 240 : 120);
    test_basics();
    test_replica_restore_off();
    test_tlmadd_replica();
    test_trim_policies();
    test_origin();
    test_poll();
    test_poll_tail();
    test_log_value();
    test_trim_replicated();
    test_restore_corrupt();
    test_append_cache();
    test_dbs();
    test_list_expired();
    is_int(rh_sanitizer_reports(), 0, "no sanitizer reports from the servers");
    rh_cleanup();
    return done_testing();
}
