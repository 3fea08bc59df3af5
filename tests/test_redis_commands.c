/* test_redis_commands.c - every CRDT.* command and error of crdt.so, through a real redis-server */
#include "tap.h"

#include <limits.h>
#include <stdbool.h>
#include <stdint.h>
#include <unistd.h>

#include "crdt.h"
#include "redis_helper.h"

static rh_server_t S; /* unbounded timelines */
static rh_server_t B; /* timeline-max-size 3, changes ring of 4 */

#define CMD(...) rh_cmd(&S, __VA_ARGS__)
#define INT(...) rh_int(rh_cmd(&S, __VA_ARGS__))
#define ERR(...) rh_err(rh_cmd(&S, __VA_ARGS__))

static bool starts(const char *s, const char *prefix)
{
    return strncmp(s, prefix, strlen(prefix)) == 0;
}

/* CRDT.STATE as a malloc'd copy (NULL for nil); *len gets its size. */
static char *state_of(rh_server_t *s, const char *key, size_t *len)
{
    *len = 0;
    return rh_str(rh_cmd(s, "CRDT.STATE %s", key), len);
}

/* True for a nil reply; frees it. */
static bool is_nil(redisReply *r)
{
    bool nil = r && r->type == REDIS_REPLY_NIL;
    if (r)
        freeReplyObject(r);
    return nil;
}

static bool key_exists(rh_server_t *s, const char *key)
{
    return rh_int(rh_cmd(s, "EXISTS %s", key)) == 1;
}

/* The members of an array reply joined by spaces (scores too), for compact comparisons. */
static const char *joined(redisReply *r)
{
    static char buf[4096];
    buf[0] = '\0';
    if (!r)
        return "(no reply)";
    if (r->type == REDIS_REPLY_ERROR)
        snprintf(buf, sizeof(buf), "(error) %s", r->str);
    else if (r->type != REDIS_REPLY_ARRAY)
        snprintf(buf, sizeof(buf), "(type %d)", r->type);
    else
        for (size_t i = 0; i < r->elements; i++) {
            redisReply *e = r->element[i];
            size_t n = strlen(buf);
            if (e->type == REDIS_REPLY_INTEGER)
                snprintf(buf + n, sizeof(buf) - n, "%s%lld", i ? " " : "", e->integer);
            else if (e->type == REDIS_REPLY_NIL)
                snprintf(buf + n, sizeof(buf) - n, "%snil", i ? " " : "");
            else if (e->type == REDIS_REPLY_ARRAY)
                snprintf(buf + n, sizeof(buf) - n, "%s[%zu]", i ? " " : "", e->elements);
            else
                snprintf(buf + n, sizeof(buf) - n, "%s%.*s", i ? " " : "", (int)e->len, e->str);
        }
    freeReplyObject(r);
    return buf;
}

/* ---- introspection: COMMAND INFO / DOCS / GETKEYS ------------------------------------------- */

static bool has_flag(redisReply *info, const char *flag)
{
    redisReply *flags = info->element[2];
    for (size_t i = 0; i < flags->elements; i++)
        if (strcmp(flags->element[i]->str, flag) == 0)
            return true;
    return false;
}

static void check_command(const char *name, int arity, const char *must, const char *mustnot,
                          long long first, long long last, long long step)
{
    redisReply *r = CMD("COMMAND INFO %s", name);
    redisReply *c = r && r->type == REDIS_REPLY_ARRAY && r->elements == 1 ? r->element[0] : NULL;
    if (!ok(c && c->type == REDIS_REPLY_ARRAY && c->elements >= 6, "COMMAND INFO %s", name)) {
        if (r)
            freeReplyObject(r);
        return;
    }
    is_int(c->element[1]->integer, arity, "%s arity", name);
    char buf[128];
    snprintf(buf, sizeof(buf), "%s", must);
    bool all = true;
    for (char *save, *t = strtok_r(buf, " ", &save); t; t = strtok_r(NULL, " ", &save))
        all = all && has_flag(c, t);
    ok(all, "%s has flags %s", name, must);
    snprintf(buf, sizeof(buf), "%s", mustnot);
    bool none = true;
    for (char *save, *t = strtok_r(buf, " ", &save); t; t = strtok_r(NULL, " ", &save))
        none = none && !has_flag(c, t);
    ok(none, "%s lacks flags %s", name, mustnot);
    ok(c->element[3]->integer == first && c->element[4]->integer == last &&
           c->element[5]->integer == step,
       "%s keys: first %lld last %lld step %lld (got %lld %lld %lld)", name, first, last, step,
       c->element[3]->integer, c->element[4]->integer, c->element[5]->integer);
    freeReplyObject(r);
}

static void test_introspection(void)
{
    check_command("crdt.tladd", -4, "write denyoom fast", "readonly", 1, 1, 1);
    check_command("crdt.tlrem", -4, "write denyoom fast", "readonly", 1, 1, 1);
    check_command("crdt.tlmadd", -4, "write denyoom", "readonly fast", 1, -1, 3);
    check_command("crdt.tlmrem", -4, "write denyoom", "readonly fast", 1, -1, 3);
    is(joined(CMD("COMMAND GETKEYS crdt.tlmadd a 1 x b 2 y a 3 z")), "a b a",
       "COMMAND GETKEYS: TLMADD names the key of every triple");
    is(joined(CMD("COMMAND GETKEYS crdt.tlmrem k 1 m")), "k", "COMMAND GETKEYS: TLMREM");
    check_command("crdt.tlrange", -4, "readonly", "write denyoom", 1, 1, 1);
    check_command("crdt.tlrangebyscore", -4, "readonly", "write", 1, 1, 1);
    check_command("crdt.tlselect", -3, "readonly movablekeys", "write", 2, -1, 1);
    check_command("crdt.tlcard", 2, "readonly fast", "write", 1, 1, 1);
    check_command("crdt.tlscore", 3, "readonly fast", "write", 1, 1, 1);
    check_command("crdt.incrby", 3, "write denyoom fast", "readonly", 1, 1, 1);
    check_command("crdt.decrby", 3, "write denyoom fast", "readonly", 1, 1, 1);
    check_command("crdt.get", 2, "readonly fast", "write", 1, 1, 1);
    check_command("crdt.set", 3, "write denyoom", "readonly", 1, 1, 1);
    check_command("crdt.sadd", -3, "write denyoom fast", "readonly", 1, 1, 1);
    check_command("crdt.srem", -3, "write fast", "readonly", 1, 1, 1);
    check_command("crdt.smembers", 2, "readonly", "write", 1, 1, 1);
    check_command("crdt.sismember", 3, "readonly fast", "write", 1, 1, 1);
    check_command("crdt.scard", 2, "readonly fast", "write", 1, 1, 1);
    check_command("crdt.state", 2, "readonly", "write", 1, 1, 1);
    check_command("crdt.merge", -3, "write denyoom", "readonly", 1, 1, 1);
    check_command("crdt.type", 2, "readonly fast", "write", 1, 1, 1);
    check_command("crdt.info", 2, "readonly", "write", 1, 1, 1);
    check_command("crdt.log.read", 4, "readonly", "write", 1, 1, 1);
    check_command("crdt.log.list", -1, "readonly", "write", 0, 0, 0);
    /* two key specs at 1 and 2: the legacy range 1..2 covers both */
    check_command("crdt.log.apply", 4, "write denyoom", "readonly", 1, 2, 1);
    is(joined(CMD("COMMAND GETKEYS crdt.log.apply crdt:log:{0}:0000000000000001 a record")),
       "crdt:log:{0}:0000000000000001 a", "COMMAND GETKEYS: LOG.APPLY names the log and the key");
    check_command("crdt.log.append", -3, "write denyoom", "readonly", 1, 1, 1);
    check_command("crdt.log.trim", 3, "write", "readonly denyoom", 1, 1, 1);
    check_command("crdt.log.group", -4, "write", "readonly", 1, 1, 1);
    check_command("crdt.log.info", 2, "readonly fast", "write", 1, 1, 1);
    check_command("crdt.rsx.open", -3, "readonly", "write", 1, 1, 1);
    check_command("crdt.rsx.recv", 4, "readonly", "write", 1, 1, 1);
    check_command("crdt.rsx.diffs", -3, "readonly", "write", 1, 1, 1);
    check_command("crdt.rsx.close", 3, "readonly", "write", 1, 1, 1);
    check_command("crdt.rsx.digest", -3, "readonly", "write", 0, 0, 0);
    is(ERR("CRDT.CHANGES 0 10"),
       "ERR unknown command 'CRDT.CHANGES', with args beginning with: '0' '10' ",
       "CRDT.CHANGES is gone (the change log replaces it)");

    is(joined(CMD("COMMAND GETKEYS crdt.tlselect 10 a b WITHSCORES")), "a b",
       "COMMAND GETKEYS: TLSELECT keys exclude a final WITHSCORES");
    is(joined(CMD("COMMAND GETKEYS crdt.tlselect 10 a b c")), "a b c",
       "COMMAND GETKEYS: TLSELECT keys to the end");
    is(joined(CMD("COMMAND GETKEYS crdt.merge k payload")), "k", "COMMAND GETKEYS: MERGE");

    redisReply *r = CMD("COMMAND DOCS crdt.tlrangebyscore");
    bool found = false;
    if (r && r->type == REDIS_REPLY_ARRAY && r->elements == 2) {
        redisReply *d = r->element[1];
        for (size_t i = 0; i + 1 < d->elements; i += 2)
            if (strcmp(d->element[i]->str, "summary") == 0)
                found = strstr(d->element[i + 1]->str, "newest first") != NULL;
    }
    ok(found, "COMMAND DOCS has the summary");
    if (r)
        freeReplyObject(r);
    r = CMD("COMMAND DOCS crdt.tladd");
    size_t nargs = 0;
    if (r && r->type == REDIS_REPLY_ARRAY && r->elements == 2) {
        redisReply *d = r->element[1];
        for (size_t i = 0; i + 1 < d->elements; i += 2)
            if (strcmp(d->element[i]->str, "arguments") == 0)
                nargs = d->element[i + 1]->elements;
    }
    is_int((long long)nargs, 2, "COMMAND DOCS crdt.tladd lists key and the score/member block");
    if (r)
        freeReplyObject(r);
}

/* ---- errors --------------------------------------------------------------------------------- */

static void test_errors(void)
{
    ok(starts(ERR("CRDT.TLADD k 1"), "ERR wrong number of arguments"), "TLADD arity: 1 arg");
    ok(starts(ERR("CRDT.TLADD k 1 a 2"), "ERR wrong number of arguments"), "TLADD arity: odd");
    ok(starts(ERR("CRDT.TLREM k"), "ERR wrong number of arguments"), "TLREM arity");
    ok(starts(ERR("CRDT.TLCARD"), "ERR wrong number of arguments"), "TLCARD arity");
    ok(starts(ERR("CRDT.TLRANGE k 0"), "ERR wrong number of arguments"), "TLRANGE arity");
    ok(starts(ERR("CRDT.TLRANGE k 0 1 WITHSCORES x"), "ERR wrong number"), "TLRANGE arity 6");
    ok(starts(ERR("CRDT.MERGE k"), "ERR wrong number of arguments"), "MERGE arity");
    ok(starts(ERR("CRDT.LOG.READ x 0"), "ERR wrong number of arguments"), "LOG.READ arity");
    ok(starts(ERR("CRDT.SET k"), "ERR wrong number of arguments"), "SET arity");
    ok(starts(ERR("CRDT.SADD k"), "ERR wrong number of arguments"), "SADD arity");

    const char *bad[] = {"abc",   "nan", "NaN", "inf", "-inf", "+inf",
                         "1e999", "",    " 1",  "1 ",  "1x",   "0x"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        is(ERR("CRDT.TLADD e 1 ok %s m", bad[i]), "ERR score is not a finite number",
           "TLADD score '%s' rejected", bad[i]);
        is(ERR("CRDT.TLREM e %s m", bad[i]), "ERR score is not a finite number",
           "TLREM score '%s' rejected", bad[i]);
    }
    ok(!key_exists(&S, "e"), "rejected writes created no key (the valid first pair too)");

    is(ERR("CRDT.TLRANGE e -1 10"), "ERR offset must not be negative", "TLRANGE negative offset");
    is(ERR("CRDT.TLRANGE e 0 -1"), "ERR count must not be negative", "TLRANGE negative count");
    is(ERR("CRDT.TLRANGE e 0 x"), "ERR count is not an integer or out of range",
       "TLRANGE non-integer count");
    is(ERR("CRDT.TLRANGE e 0 1 WITHSCORE"), "ERR syntax error", "TLRANGE bad option");
    is(ERR("CRDT.TLRANGEBYSCORE e nan 0"), "ERR min or max is not a number (NaN is not allowed)",
       "TLRANGEBYSCORE NaN bound");
    is(ERR("CRDT.TLRANGEBYSCORE e 10 0 LIMIT -1"), "ERR count must not be negative",
       "TLRANGEBYSCORE negative LIMIT");
    is(ERR("CRDT.TLRANGEBYSCORE e 10 0 AFTER inf m"), "ERR AFTER score is not a finite number",
       "TLRANGEBYSCORE AFTER inf");
    is(ERR("CRDT.TLRANGEBYSCORE e 10 0 BOGUS"), "ERR syntax error", "TLRANGEBYSCORE bad option");
    is(ERR("CRDT.TLSELECT -1 e"), "ERR count must not be negative", "TLSELECT negative count");
    is(ERR("CRDT.LOG.READ crdt:log:{0}:0000000000000001 -1 10"),
       "ERR bad position: expected 0, $ or EPOCH:MS-SEQ:OFFSET as CRDT.LOG.READ returned it",
       "LOG.READ bad position");
    is(ERR("CRDT.LOG.READ crdt:log:{0}:0000000000000001 0 -1"),
       "ERR count must be a positive integer", "LOG.READ negative count");
    is(ERR("CRDT.INCRBY e x"), "ERR value is not an integer or out of range", "INCRBY non-int");
    is(ERR("CRDT.INCRBY e 1.5"), "ERR value is not an integer or out of range", "INCRBY float");
    is(ERR("CRDT.DECRBY e -9223372036854775808"), "ERR decrement would overflow",
       "DECRBY INT64_MIN");
    ok(!key_exists(&S, "e"), "still no key");

    /* WRONGTYPE: native keys, and CRDT keys of another type. */
    rh_int(CMD("DEL native"));
    freeReplyObject(CMD("SET native x"));
    const char *wrongtype = "WRONGTYPE Operation against a key holding the wrong kind of value";
    const char *on_native[] = {"CRDT.TLADD native 1 a",   "CRDT.TLREM native 1 a",
                               "CRDT.TLRANGE native 0 1", "CRDT.TLRANGEBYSCORE native 1 0",
                               "CRDT.TLSELECT 1 native",  "CRDT.TLCARD native",
                               "CRDT.TLSCORE native a",   "CRDT.INCRBY native 1",
                               "CRDT.DECRBY native 1",    "CRDT.GET native",
                               "CRDT.SET native v",       "CRDT.SADD native m",
                               "CRDT.SREM native m",      "CRDT.SMEMBERS native",
                               "CRDT.SISMEMBER native m", "CRDT.SCARD native",
                               "CRDT.STATE native",       "CRDT.TYPE native",
                               "CRDT.INFO native"};
    for (size_t i = 0; i < sizeof(on_native) / sizeof(on_native[0]); i++)
        is(ERR(on_native[i]), wrongtype, "%s: WRONGTYPE", on_native[i]);

    is_int(INT("CRDT.INCRBY cnt 5"), 5, "counter key made");
    const char *on_counter[] = {"CRDT.TLADD cnt 1 a",   "CRDT.TLREM cnt 1 a",
                                "CRDT.TLRANGE cnt 0 1", "CRDT.TLRANGEBYSCORE cnt 1 0",
                                "CRDT.TLSELECT 1 cnt",  "CRDT.TLCARD cnt",
                                "CRDT.TLSCORE cnt a",   "CRDT.SET cnt v",
                                "CRDT.SADD cnt m",      "CRDT.SREM cnt m",
                                "CRDT.SMEMBERS cnt",    "CRDT.SISMEMBER cnt m",
                                "CRDT.SCARD cnt"};
    for (size_t i = 0; i < sizeof(on_counter) / sizeof(on_counter[0]); i++)
        is(ERR(on_counter[i]), wrongtype, "%s on a counter: WRONGTYPE", on_counter[i]);
    is_int(INT("CRDT.SADD aset m"), 1, "set key made");
    is(ERR("CRDT.INCRBY aset 1"), wrongtype, "INCRBY on a set: WRONGTYPE");
    is(ERR("CRDT.GET aset"), wrongtype, "GET on a set: WRONGTYPE");
    is(ERR("CRDT.TLSELECT 5 nokey cnt"), wrongtype, "TLSELECT with a counter among the keys");
    is_int(INT("CRDT.GET cnt"), 5, "the counter is untouched by the refused commands");
    /* GINCRBY: crdtd's grow-only increments keep the type the embedded store gives them */
    is_int(INT("CRDT.GINCRBY gc 4"), 4, "GINCRBY on an empty key");
    char *gt = rh_str(rh_cmd(&S, "CRDT.TYPE gc"), NULL);
    is(gt ? gt : "", "gcounter", "makes a G-Counter");
    free(gt);
    is_int(INT("CRDT.GINCRBY gc 2"), 6, "GINCRBY adds to it");
    is(ERR("CRDT.GINCRBY gc -1"), "ERR a grow-only counter (gcounter) cannot be decremented",
       "GINCRBY refuses a negative delta");
    is(ERR("CRDT.GINCRBY cnt 1"), wrongtype, "GINCRBY on a PN-Counter: WRONGTYPE");
    is(ERR("CRDT.GINCRBY aset 1"), wrongtype, "GINCRBY on a set: WRONGTYPE");
    is_int(INT("CRDT.INCRBY gc 1"), 7, "INCRBY takes increments on the G-Counter");
}

/* ---- counters, registers, sets -------------------------------------------------------------- */

static void test_counters_registers_sets(void)
{
    is_int(INT("CRDT.INCRBY c 5"), 5, "INCRBY on a new key");
    is_int(INT("CRDT.DECRBY c 7"), -2, "DECRBY below zero (PN-Counter)");
    is_int(INT("CRDT.INCRBY c -3"), -5, "INCRBY with a negative delta");
    is_int(INT("CRDT.GET c"), -5, "GET counter");
    is_int(INT("CRDT.INCRBY c0 0"), 0, "INCRBY 0 on a new key replies 0");
    ok(!key_exists(&S, "c0"), "INCRBY 0 is a no-op: no key");
    is(joined(CMD("CRDT.TYPE c")), "(type 5)", "TYPE c is a status reply");
    char *t = rh_str(CMD("CRDT.TYPE c"), NULL);
    is(t, "pncounter", "TYPE of a counter");
    free(t);
    is_int(INT("CRDT.INCRBY big 9223372036854775807"), INT64_MAX, "INCRBY to INT64_MAX");
    is(ERR("CRDT.INCRBY big 1"), "ERR increment or decrement would overflow", "overflow refused");
    is_int(INT("CRDT.GET big"), INT64_MAX, "value unchanged after the refused overflow");
    ok(is_nil(rh_cmd(&S, "CRDT.GET nothing")), "GET of a missing key is nil");

    is_int(INT("CRDT.SET r v1"), 1, "SET new register");
    char *v = rh_str(CMD("CRDT.GET r"), NULL);
    is(v, "v1", "GET register");
    free(v);
    is_int(INT("CRDT.SET r v2"), 1, "SET again wins (newer HLC timestamp)");
    v = rh_str(CMD("CRDT.GET r"), NULL);
    is(v, "v2", "GET register after overwrite");
    free(v);
    is_int(rh_int(rh_cmd(&S, "CRDT.SET rb %b", "a\0b", (size_t)3)), 1, "SET binary value");
    size_t len = 0;
    v = rh_str(CMD("CRDT.GET rb"), &len);
    is_mem(v, len, "a\0b", 3, "binary-safe register");
    free(v);
    t = rh_str(CMD("CRDT.TYPE r"), NULL);
    is(t, "lwwreg", "TYPE of a register");
    free(t);

    is_int(INT("CRDT.SADD s a b c"), 3, "SADD three");
    is_int(INT("CRDT.SADD s a"), 0, "SADD of a live member counts 0 (Redis SADD semantics)");
    is_int(INT("CRDT.SISMEMBER s b"), 1, "SISMEMBER yes");
    is_int(INT("CRDT.SISMEMBER s z"), 0, "SISMEMBER no");
    is_int(INT("CRDT.SCARD s"), 3, "SCARD");
    is_int(INT("CRDT.SREM s b z"), 1, "SREM one present, one absent");
    is(joined(CMD("CRDT.SMEMBERS s")), "a c", "SMEMBERS in bytewise order");
    is_int(INT("CRDT.SREM nosuch a"), 0, "SREM on a missing key");
    ok(!key_exists(&S, "nosuch"), "SREM on a missing key makes no key");
    is_int(INT("CRDT.SCARD nosuch"), 0, "SCARD missing key");
    is(joined(CMD("CRDT.SMEMBERS nosuch")), "", "SMEMBERS missing key");
    t = rh_str(CMD("CRDT.TYPE s"), NULL);
    is(t, "orset", "TYPE of a set");
    free(t);
    t = rh_str(CMD("CRDT.TYPE nosuch"), NULL);
    is(t, "none", "TYPE of a missing key");
    free(t);
    t = rh_str(CMD("TYPE s"), NULL);
    is(t, "crdtd-obj", "Redis TYPE names the module type");
    free(t);
}

/* ---- timeline semantics --------------------------------------------------------------------- */

/* Sets key to the state named: "A1" live at 1, "R1" tombstone at 1, "-" absent. */
static void make_state(const char *key, const char *st)
{
    rh_int(CMD("DEL %s", key));
    if (st[0] == 'A')
        rh_int(CMD("CRDT.TLADD %s %s a", key, st + 1));
    else if (st[0] == 'R')
        rh_int(CMD("CRDT.TLREM %s %s a", key, st + 1));
}

static void test_write_rules(void)
{
    /* DESIGN.md's table: rows are states, columns writes, cells the resulting state. */
    static const char *rows[] = {"A1", "R1", "-"};
    static const char *cols[] = {"add0", "add1", "add2", "rem0", "rem1", "rem2"};
    static const char *cells[3][6] = {
        {"A1", "A1", "A2", "A1", "R1", "R2"},
        {"R1", "R1", "A2", "R1", "R1", "R2"},
        {"A0", "A1", "A2", "R0", "R1", "R2"},
    };
    for (int r = 0; r < 3; r++) {
        for (int c = 0; c < 6; c++) {
            make_state("wr", rows[r]);
            bool add = cols[c][0] == 'a';
            const char *score = cols[c] + 3;
            long long changed = INT("CRDT.TLADD wr %s a", score);
            if (!add) {
                make_state("wr", rows[r]);
                changed = INT("CRDT.TLREM wr %s a", score);
            }
            make_state("want", cells[r][c]);
            size_t l1, l2;
            char *got = state_of(&S, "wr", &l1), *want = state_of(&S, "want", &l2);
            ok(got && want && l1 == l2 && memcmp(got, want, l1) == 0,
               "write rule: %s + %s(a,%s) = %s (state bytes)", rows[r], add ? "add" : "remove",
               score, cells[r][c]);
            is_int(changed, strcmp(rows[r], cells[r][c]) != 0,
                   "write rule: %s + %s(a,%s) reports %s", rows[r], add ? "add" : "remove", score,
                   strcmp(rows[r], cells[r][c]) ? "a change" : "no change");
            /* What a reader sees. */
            redisReply *sc = CMD("CRDT.TLSCORE wr a");
            if (cells[r][c][0] == 'A')
                ok(sc && sc->type == REDIS_REPLY_STRING && atof(sc->str) == atof(cells[r][c] + 1),
                   "write rule: TLSCORE after %s + %s", rows[r], cols[c]);
            else
                ok(sc && sc->type == REDIS_REPLY_NIL, "write rule: TLSCORE nil after %s + %s",
                   rows[r], cols[c]);
            if (sc)
                freeReplyObject(sc);
            free(got);
            free(want);
        }
    }
}

static void test_timeline(void)
{
    is_int(INT("CRDT.TLADD tl 1 a 2 b 3 c"), 3, "TLADD three entries");
    is_int(INT("CRDT.TLADD tl 1 a"), 0, "TLADD same score again: no change");
    is_int(INT("CRDT.TLADD tl 0.5 a"), 0, "TLADD older score loses: no change");
    is_int(INT("CRDT.TLADD tl 4 a"), 1, "TLADD newer score moves the entry");
    is_int(INT("CRDT.TLCARD tl"), 3, "TLCARD");
    is(joined(CMD("CRDT.TLRANGE tl 0 10")), "a c b", "TLRANGE newest first");
    is(joined(CMD("CRDT.TLRANGE tl 0 10 WITHSCORES")), "a 4 c 3 b 2", "TLRANGE WITHSCORES");
    is(joined(CMD("CRDT.TLRANGE tl 1 1")), "c", "TLRANGE offset and count");
    is(joined(CMD("CRDT.TLRANGE tl 5 10")), "", "TLRANGE offset past the end");
    is(joined(CMD("CRDT.TLRANGE tl 0 0")), "", "TLRANGE count 0");
    is(joined(CMD("CRDT.TLRANGE missing 0 10")), "", "TLRANGE missing key");
    is_int(INT("CRDT.TLREM tl 3 c"), 1, "TLREM at the entry's score");
    is(joined(CMD("CRDT.TLRANGE tl 0 10")), "a b", "removed entry not listed");
    ok(is_nil(rh_cmd(&S, "CRDT.TLSCORE tl c")), "TLSCORE of a removed member");
    char *sc = rh_str(CMD("CRDT.TLSCORE tl a"), NULL);
    is(sc, "4", "TLSCORE");
    free(sc);

    /* Doomstones: a remove of a member never added blocks older adds. */
    is_int(INT("CRDT.TLREM tl 5 ghost"), 1, "TLREM of a never-added member leaves a doomstone");
    is_int(INT("CRDT.TLADD tl 4 ghost"), 0, "older add blocked by the doomstone");
    is_int(INT("CRDT.TLADD tl 5 ghost"), 0, "equal-score add loses to the doomstone");
    is_int(INT("CRDT.TLADD tl 6 ghost"), 1, "newer add wins over the doomstone");
    is_int(INT("CRDT.TLREM tl 6 ghost"), 1, "remove at equal score wins");

    /* Ties on score: members order descending bytewise. */
    is_int(INT("CRDT.TLADD ties 1 a 1 c 1 b 1 ab"), 4, "four entries at one score");
    is(joined(CMD("CRDT.TLRANGE ties 0 10")), "c b ab a", "equal scores: member descending");
    is(joined(CMD("CRDT.TLRANGEBYSCORE ties 1 1 AFTER 1 b")), "ab a", "AFTER within a tie");

    /* Range by score with cursors. */
    rh_int(CMD("CRDT.TLADD rs 1 a 2 b 3 c 4 d 5 e 6 f"));
    is(joined(CMD("CRDT.TLRANGEBYSCORE rs 5 2")), "e d c b", "TLRANGEBYSCORE inclusive bounds");
    is(joined(CMD("CRDT.TLRANGEBYSCORE rs +inf -inf LIMIT 2")), "f e", "infinite bounds, LIMIT");
    is(joined(CMD("CRDT.TLRANGEBYSCORE rs +inf -inf AFTER 5 e LIMIT 2 WITHSCORES")), "d 4 c 3",
       "AFTER cursor continues strictly after, WITHSCORES");
    is(joined(CMD("CRDT.TLRANGEBYSCORE rs 1 5")), "", "max below min: empty");
    is(joined(CMD("CRDT.TLRANGEBYSCORE rs 10 0 LIMIT 0")), "", "LIMIT 0");

    /* Coalesced select over keys. */
    rh_int(CMD("CRDT.TLADD sel1 10 x 7 y 1 z"));
    rh_int(CMD("CRDT.TLADD sel2 9 p 8 q"));
    is(joined(CMD("CRDT.TLSELECT 4 sel1 sel2 nokey")), "x p q y", "TLSELECT coalesces newest");
    is(joined(CMD("CRDT.TLSELECT 2 sel1 sel2 WITHSCORES")), "x 10 p 9", "TLSELECT WITHSCORES");
    is(joined(CMD("CRDT.TLSELECT 0 sel1")), "", "TLSELECT count 0");
    is(joined(CMD("CRDT.TLSELECT 10 nokey")), "", "TLSELECT only missing keys");

    /* Scores: integers, fractions, negatives, -0, large. */
    is_int(INT("CRDT.TLADD sc -0 zero -1.5 neg 1e300 huge 1.25 frac"), 4, "various scores");
    is(joined(CMD("CRDT.TLRANGE sc 0 10 WITHSCORES")),
       "huge 1.0000000000000001e+300 frac 1.25 zero 0 neg -1.5", "scores come back like ZRANGE's");
    char *t = rh_str(CMD("CRDT.TYPE tl"), NULL);
    is(t, "timeline", "TYPE of a timeline");
    free(t);

    /* CRDT.INFO */
    const char *info = joined(CMD("CRDT.INFO tl"));
    ok(strstr(info, "type timeline entries 2 tombstones 2 floor nil max-size 0 encoded-size") ==
           info,
       "INFO timeline: %s", info);
    ok(is_nil(rh_cmd(&S, "CRDT.INFO missing")), "INFO of a missing key is nil");
}

/* CRDT.TLMADD / TLMREM: arguments, then every key's type, then the writes; nothing written when
 * any check fails. */
static void test_tlmadd(void)
{
    is(joined(CMD("CRDT.TLMADD m:a 1 x m:b 2 y m:a 3 z m:a 0.5 x")), "1 1 1 0",
       "TLMADD: per triple whether its entry changed (an older score of x loses)");
    is(joined(CMD("CRDT.TLRANGE m:a 0 10 WITHSCORES")), "z 3 x 1", "m:a holds its two triples");
    is(joined(CMD("CRDT.TLRANGE m:b 0 10 WITHSCORES")), "y 2", "m:b its one");
    is(joined(CMD("CRDT.TLMADD m:a 1 x")), "0", "TLMADD again: no change");
    is(joined(CMD("CRDT.TLMREM m:a 3 z m:b 1 y m:new 5 ghost")), "1 0 1",
       "TLMREM: a remove at the score wins, an older one loses, a new key gets a doomstone");
    is(joined(CMD("CRDT.TLRANGE m:a 0 10")), "x", "z removed");
    is_int(INT("CRDT.TLADD m:new 4 ghost"), 0, "the doomstone blocks an older add");

    /* a key of another type anywhere: WRONGTYPE naming it, nothing written */
    rh_int(CMD("CRDT.GINCRBY m:g 1"));
    freeReplyObject(CMD("SET m:s v"));
    is(ERR("CRDT.TLMADD m:c 1 x m:a 9 w m:g 1 y"),
       "WRONGTYPE key 3 (argument 7) holds a gcounter, not a timeline",
       "TLMADD with a G-counter's key third: WRONGTYPE names it");
    ok(!key_exists(&S, "m:c"), "the first key was not created");
    is(joined(CMD("CRDT.TLRANGE m:a 0 10")), "x", "the second not written");
    is(ERR("CRDT.TLMREM m:s 1 x m:a 1 x"),
       "WRONGTYPE key 1 (argument 1) holds a Redis string, not a timeline",
       "TLMREM on a native string: WRONGTYPE");
    is(joined(CMD("CRDT.TLRANGE m:a 0 10")), "x", "x not removed");
    ok(starts(ERR("CRDT.TLMADD m:a 1 x m:s 1 y"), "WRONGTYPE key 2"), "WRONGTYPE key 2");
    is(ERR("CRDT.TLMADD m:ok 1 x m:s 1 y m:g 1 z m:s 2 w"),
       "WRONGTYPE key 2 (argument 4) holds a Redis string, not a timeline",
       "two wrong keys (one twice): the first in argument order is named");
    ok(!key_exists(&S, "m:ok"), "and nothing written");

    /* bad arguments anywhere: nothing written */
    ok(starts(ERR("CRDT.TLMADD m:c 1"), "ERR wrong number of arguments"), "TLMADD arity 3");
    ok(starts(ERR("CRDT.TLMADD m:c 1 x m:d"), "ERR wrong number of arguments"), "a partial triple");
    ok(starts(ERR("CRDT.TLMADD m:c 1 x m:d 2"), "ERR wrong number of arguments"),
       "a triple without member");
    is(ERR("CRDT.TLMADD m:c 1 x m:d nan y"),
       "ERR score is not a finite number (triple 2, argument 5)", "a NaN score names its triple");
    is(ERR("CRDT.TLMADD m:c 1 x m:d 1e999 y"),
       "ERR score is not a finite number (triple 2, argument 5)", "an overflowing score");
    is(ERR("CRDT.TLMADD m:c inf x"), "ERR score is not a finite number (triple 1, argument 2)",
       "an infinite score");
    ok(!key_exists(&S, "m:c") && !key_exists(&S, "m:d"), "none of their keys was created");
    is(ERR("CRDT.TLMADD m:c 1 x m:g x y"),
       "ERR score is not a finite number (triple 2, argument 5)",
       "arguments are checked before types");

    /* many triples (past the stack buffers) and one key many times */
    static char words[241][16];
    const char *av[241];
    size_t al[241];
    av[0] = "CRDT.TLMADD";
    for (int i = 0; i < 40; i++) {
        snprintf(words[1 + 6 * i], 16, "m:k%d", i % 7);
        snprintf(words[2 + 6 * i], 16, "%d", i);
        snprintf(words[3 + 6 * i], 16, "e%d", i);
        snprintf(words[4 + 6 * i], 16, "m:many");
        snprintf(words[5 + 6 * i], 16, "%d", i);
        snprintf(words[6 + 6 * i], 16, "e%d", i);
    }
    for (int i = 0; i < 241; i++) {
        if (i)
            av[i] = words[i];
        al[i] = strlen(av[i]);
    }
    redisReply *r = rh_cmdv(&S, 241, av, al);
    bool all1 = r && r->type == REDIS_REPLY_ARRAY && r->elements == 80;
    for (size_t i = 0; all1 && i < r->elements; i++)
        all1 = r->element[i]->type == REDIS_REPLY_INTEGER && r->element[i]->integer == 1;
    ok(all1, "80 triples over 8 keys: 80 changes");
    if (r)
        freeReplyObject(r);
    is_int(INT("CRDT.TLCARD m:many"), 40, "m:many got its 40");
    is_int(INT("CRDT.TLCARD m:k3"), 6, "m:k3 got its 6");
    is(joined(CMD("CRDT.TLRANGE m:k3 0 2 WITHSCORES")), "e38 38 e31 31", "in score order");
}

static void test_floor(void)
{
    rh_server_t *b = &B;
    is_int(rh_int(rh_cmd(b, "CRDT.TLADD t 1 a 2 b 3 c 4 d")), 4, "bounded: four adds change");
    is_int(rh_int(rh_cmd(b, "CRDT.TLCARD t")), 3, "bounded to 3 entries");
    is(joined(rh_cmd(b, "CRDT.TLRANGE t 0 10")), "d c b", "the oldest entry was trimmed");
    redisReply *r = rh_cmd(b, "CRDT.INFO t");
    ok(r && r->elements == 14 && r->element[7]->type == REDIS_REPLY_ARRAY &&
           strcmp(r->element[7]->element[0]->str, "1") == 0 &&
           strcmp(r->element[7]->element[1]->str, "a") == 0,
       "floor is (1, a)");
    if (r)
        freeReplyObject(r);
    is_int(rh_int(rh_cmd(b, "CRDT.TLADD t 1 a")), 0, "write at the floor ignored");
    is_int(rh_int(rh_cmd(b, "CRDT.TLADD t 0.5 z")), 0, "write below the floor ignored");
    is_int(rh_int(rh_cmd(b, "CRDT.TLREM t 1 a")), 0, "remove at the floor ignored");
    is_int(rh_int(rh_cmd(b, "CRDT.TLREM t 10 q")), 1, "a tombstone counts towards the bound");
    is(joined(rh_cmd(b, "CRDT.TLRANGE t 0 10")), "d c", "b was pushed out by the tombstone");
    is_int(rh_int(rh_cmd(b, "CRDT.TLADD t 2 b")), 0, "trimmed entry never comes back");
    is_int(rh_int(rh_cmd(b, "CRDT.TLADD t 5 e")), 1, "a newer entry still enters");
    is(joined(rh_cmd(b, "CRDT.TLRANGE t 0 10")), "e d", "newest live entries");
}

/* ---- state, merge and corrupted payloads ---------------------------------------------------- */

static void test_merge(void)
{
    rh_int(CMD("CRDT.TLADD m1 1 a 2 b"));
    rh_int(CMD("CRDT.TLREM m1 3 c"));
    size_t len;
    char *st = state_of(&S, "m1", &len);
    ok(st && len > 0, "STATE of a timeline");
    ok(is_nil(rh_cmd(&S, "CRDT.STATE missing")), "STATE of a missing key: nil");
    is_int(rh_int(rh_cmd(&S, "CRDT.MERGE m2 %b", st, len)), 1, "MERGE into a new key: changed");
    is_int(rh_int(rh_cmd(&S, "CRDT.MERGE m2 %b", st, len)), 0, "MERGE again: idempotent");
    is_int(rh_int(rh_cmd(&S, "CRDT.MERGE m2 %b %b", st, len, st, len)), 0,
           "MERGE of several payloads");
    size_t len2;
    char *st2 = state_of(&S, "m2", &len2);
    ok(st2 && len2 == len && memcmp(st, st2, len) == 0, "merged key has identical STATE bytes");
    free(st2);

    long long errors0 = rh_info_field(&S, "crdt", "crdt_payload_errors");
    long long merges0 = rh_info_field(&S, "crdt", "crdt_merges");
    /* Every truncation and every flipped byte is refused; the key is untouched. */
    int refused = 0, total = 0;
    char *bad = malloc(len);
    for (size_t cut = 0; cut < len; cut++, total++) {
        const char *e = rh_err(rh_cmd(&S, "CRDT.MERGE m2 %b", st, cut));
        refused += starts(e, "ERR bad payload 1 of 1: at byte ");
        if (!starts(e, "ERR bad payload"))
            diag("truncation to %zu: '%s'", cut, e);
    }
    for (size_t i = 0; i < len; i++) {
        for (int bit = 0; bit < 8; bit += 3, total++) {
            memcpy(bad, st, len);
            bad[i] ^= (char)(1 << bit);
            const char *e = rh_err(rh_cmd(&S, "CRDT.MERGE m2 %b", bad, len));
            refused += starts(e, "ERR bad payload");
            if (!starts(e, "ERR bad payload"))
                diag("flip of byte %zu bit %d: '%s'", i, bit, e);
        }
    }
    is_int(refused, total, "all %d truncated/flipped payloads refused with the decoder's text",
           total);
    is_int(rh_info_field(&S, "crdt", "crdt_payload_errors") - errors0, total,
           "INFO crdt_payload_errors counts them");
    is_int(rh_info_field(&S, "crdt", "crdt_merges"), merges0, "no merge counted");
    st2 = state_of(&S, "m2", &len2);
    ok(st2 && len2 == len && memcmp(st, st2, len) == 0, "key untouched by the refused payloads");
    free(st2);
    /* A good payload followed by a bad one: nothing is applied. */
    rh_int(CMD("CRDT.TLADD m3 9 z"));
    size_t l3;
    char *st3 = state_of(&S, "m3", &l3);
    memcpy(bad, st, len);
    bad[len / 2] ^= 0x40;
    ok(starts(rh_err(rh_cmd(&S, "CRDT.MERGE m3 %b %b", st, len, bad, len)),
              "ERR bad payload 2 of 2"),
       "second payload bad: refused");
    char *st3b = state_of(&S, "m3", &len2);
    ok(st3b && len2 == l3 && memcmp(st3, st3b, l3) == 0, "key untouched (first payload unapplied)");
    free(st3b);
    free(st3);
    ok(starts(rh_err(rh_cmd(&S, "CRDT.MERGE fresh %b", bad, len)), "ERR bad payload"),
       "bad payload on a missing key");
    ok(!key_exists(&S, "fresh"), "no key created by a bad payload");
    ok(starts(rh_err(rh_cmd(&S, "CRDT.MERGE fresh %b", "", (size_t)0)), "ERR bad payload"),
       "empty payload refused");

    /* Another type than the key holds. */
    rh_int(CMD("CRDT.INCRBY mc 3"));
    size_t lc;
    char *cst = state_of(&S, "mc", &lc);
    is(rh_err(rh_cmd(&S, "CRDT.MERGE m2 %b", cst, lc)),
       "WRONGTYPE the payload is a pncounter but the key holds a timeline",
       "counter payload into a timeline key");
    is(rh_err(rh_cmd(&S, "CRDT.MERGE m2 %b %b", st, len, cst, lc)),
       "ERR payload 2 is a pncounter but payload 1 is a timeline", "payloads of mixed types");
    st2 = state_of(&S, "m2", &len2);
    ok(st2 && len2 == len && memcmp(st, st2, len) == 0, "key untouched by wrong-type payloads");
    free(st2);
    is(rh_err(rh_cmd(&S, "CRDT.MERGE native %b", st, len)),
       "WRONGTYPE Operation against a key holding the wrong kind of value", "MERGE into native");
    /* Counter merge: state from another node joins. */
    is_int(rh_int(rh_cmd(&S, "CRDT.MERGE mc2 %b", cst, lc)), 1, "counter payload into new key");
    is_int(INT("CRDT.GET mc2"), 3, "merged counter value");
    free(cst);
    free(bad);
    free(st);
}

/* The clock's receive step on CRDT.MERGE: after merging a register or an LWW-set stamped 30 s
 * ahead (a server whose clock runs fast), a local write still wins. */
static void test_merge_clock(void)
{
    crdt_hlc_ts_t ahead = {crdt_wall_ms() + 30000, 0, 99};
    crdt_obj_t *reg = crdt_obj_new(CRDT_LWWREG), *set = crdt_obj_new(CRDT_LWWSET);
    crdt_lwwreg_set(reg, &ahead, "theirs", 6, NULL);
    crdt_lwwset_add(set, "m", 1, &ahead, NULL);
    crdt_buf_t rb = {0}, sb = {0};
    ok(crdt_obj_encode(reg, &rb) == 0 && crdt_obj_encode(set, &sb) == 0, "clock: encode states");
    is_int(rh_int(rh_cmd(&S, "CRDT.MERGE ck:set %b", sb.data, sb.len)), 1,
           "clock: merge an LWW-set stamped 30 s ahead");
    is_int(INT("CRDT.SREM ck:set m"), 1, "clock: a local SREM after it removes the member");
    is_int(INT("CRDT.SISMEMBER ck:set m"), 0, "clock: ... and stays removed (it won)");
    is_int(rh_int(rh_cmd(&S, "CRDT.MERGE ck:reg %b", rb.data, rb.len)), 1,
           "clock: merge a register stamped 30 s ahead");
    is_int(INT("CRDT.SET ck:reg mine"), 1, "clock: a local SET after it wins");

    /* Two days ahead, beyond the default bound of 24 h: merged, counted, the clock stays. */
    long long ahead0 = rh_info_field(&S, "crdt", "crdt_clock_ahead");
    crdt_hlc_ts_t far = {crdt_wall_ms() + 2 * 86400000ull, 0, 99};
    crdt_obj_t *freg = crdt_obj_new(CRDT_LWWREG);
    crdt_lwwreg_set(freg, &far, "far", 3, NULL);
    crdt_buf_t fb = {0};
    crdt_obj_encode(freg, &fb);
    is_int(rh_int(rh_cmd(&S, "CRDT.MERGE ck:far %b", fb.data, fb.len)), 1,
           "clock: a register two days ahead is merged");
    is_int(rh_info_field(&S, "crdt", "crdt_clock_ahead"), ahead0 + 1,
           "clock: ... and counted in INFO crdt_clock_ahead");
    is_int(INT("CRDT.SET ck:other now"), 1, "clock: a SET of another key");
    redisReply *st = CMD("CRDT.STATE ck:other");
    crdt_obj_t *other =
        st && st->type == REDIS_REPLY_STRING ? crdt_obj_decode(st->str, st->len, NULL) : NULL;
    crdt_hlc_ts_t ots = {0, 0, 0};
    bool stamped = other && crdt_obj_max_ts(other, &ots) == 1;
    ok(stamped && ots.ms < crdt_wall_ms() + 86400000ull,
       "clock: ... is stamped near now, not two days ahead (%llu)", (unsigned long long)ots.ms);
    if (st)
        freeReplyObject(st);
    crdt_obj_free(other);
    crdt_obj_free(freg);
    crdt_buf_free(&fb);
    crdt_buf_free(&rb);
    crdt_buf_free(&sb);
    crdt_obj_free(reg);
    crdt_obj_free(set);
}

/* ---- change feed and notifications ---------------------------------------------------------- */

static void test_changes(void)
{
    /* Every change appends to the change log of its key's slot; no-ops append nothing. */
    long long before = rh_info_field(&S, "crdt", "crdt_log_appends");
    ok(before >= 0, "INFO crdt_log_appends");
    rh_int(CMD("CRDT.TLADD f1 1 a"));
    rh_int(CMD("CRDT.TLADD f1 1 a")); /* no-op: no entry */
    rh_int(CMD("CRDT.INCRBY f2 1"));
    rh_int(CMD("CRDT.SADD f3 x"));
    rh_int(CMD("CRDT.TLADD f1 2 a"));
    is_int(rh_info_field(&S, "crdt", "crdt_log_appends") - before, 4,
           "four changes, four log entries (the no-op none)");
    redisReply *r = CMD("CRDT.LOG.LIST");
    ok(r && r->type == REDIS_REPLY_ARRAY && r->elements >= 3, "CRDT.LOG.LIST names the logs");
    if (r)
        freeReplyObject(r);
    /* B has log no */
    rh_int(rh_cmd(&B, "CRDT.INCRBY nolog 1"));
    is_int(rh_info_field(&B, "crdt", "crdt_log_appends"), 0, "log no: nothing appended");
    is_int(rh_info_field(&B, "crdt", "crdt_log_enabled"), 0, "INFO crdt_log_enabled 0");

    /* Keyspace notifications. */
    freeReplyObject(CMD("CONFIG SET notify-keyspace-events Kd"));
    redisContext *sub = redisConnectWithTimeout("127.0.0.1", S.port, (struct timeval){2, 0});
    redisSetTimeout(sub, (struct timeval){2, 0});
    redisReply *s = redisCommand(sub, "SUBSCRIBE __keyspace@0__:nk");
    if (s)
        freeReplyObject(s);
    const char *events[] = {"crdt.tladd", "crdt.tlrem", "crdt.merge", "crdt.incrby", "crdt.set"};
    rh_int(CMD("CRDT.TLADD nk 1 a"));
    rh_int(CMD("CRDT.TLADD nk 1 a")); /* no-op: no event */
    rh_int(CMD("CRDT.TLREM nk 1 a"));
    size_t l;
    char *nst = state_of(&S, "nk", &l);
    rh_int(CMD("DEL nk"));
    rh_int(rh_cmd(&S, "CRDT.MERGE nk %b", nst, l));
    free(nst);
    rh_int(CMD("DEL nk"));
    rh_int(CMD("CRDT.INCRBY nk 1"));
    rh_int(CMD("DEL nk"));
    rh_int(CMD("CRDT.SET nk v"));
    for (int i = 0; i < 5; i++) {
        void *rep = NULL;
        char got[64] = "";
        /* DEL produces no event with only class d enabled (it is class g). */
        if (redisGetReply(sub, &rep) == REDIS_OK && rep) {
            redisReply *m = rep;
            if (m->type == REDIS_REPLY_ARRAY && m->elements == 3)
                snprintf(got, sizeof(got), "%s", m->element[2]->str);
            freeReplyObject(m);
        }
        is(got, events[i], "keyspace notification %d", i + 1);
    }
    redisFree(sub);
    freeReplyObject(CMD("CONFIG SET notify-keyspace-events \"\""));
}

static void test_info(void)
{
    freeReplyObject(CMD("FLUSHALL"));
    rh_int(CMD("CRDT.TLADD i1 1 a"));
    rh_int(CMD("CRDT.TLADD i2 1 a"));
    rh_int(CMD("CRDT.INCRBY i3 1"));
    rh_int(CMD("CRDT.SADD i4 x"));
    rh_int(CMD("CRDT.SET i5 x"));
    is_int(rh_info_field(&S, "crdt", "crdt_keys_timeline"), 2, "INFO keys_timeline");
    is_int(rh_info_field(&S, "crdt", "crdt_keys_pncounter"), 1, "INFO keys_pncounter");
    is_int(rh_info_field(&S, "crdt", "crdt_keys_orset"), 1, "INFO keys_orset");
    is_int(rh_info_field(&S, "crdt", "crdt_keys_lwwreg"), 1, "INFO keys_lwwreg");
    is_int(rh_info_field(&S, "crdt", "crdt_keys"), 5, "INFO keys");
    rh_int(CMD("DEL i1"));
    is_int(rh_info_field(&S, "crdt", "crdt_keys_timeline"), 1, "DEL counted out");
    freeReplyObject(CMD("COPY i2 i6"));
    is_int(rh_info_field(&S, "crdt", "crdt_keys_timeline"), 2, "COPY counted in");
    size_t a, b;
    char *s1 = state_of(&S, "i2", &a), *s2 = state_of(&S, "i6", &b);
    ok(s1 && s2 && a == b && memcmp(s1, s2, a) == 0, "COPY gives an identical state");
    free(s1);
    free(s2);
    long long mem = rh_int(CMD("MEMORY USAGE i2"));
    ok(mem > 0 && mem < 10000, "MEMORY USAGE of a one-entry timeline: %lld", mem);
    freeReplyObject(CMD("FLUSHALL"));
    is_int(rh_info_field(&S, "crdt", "crdt_keys"), 0, "FLUSHALL counted out");

    /* libcrdt allocates through Redis (not in sanitizer builds, where ASan must see malloc). */
    if (!rh_sanitized()) {
        long long before = rh_info_field(&S, "memory", "used_memory");
        for (int k = 0; k < 40; k++) {
            char cmd[16384];
            int n = snprintf(cmd, sizeof(cmd), "CRDT.TLADD big");
            for (int i = 0; i < 500; i++)
                n += snprintf(cmd + n, sizeof(cmd) - (size_t)n, " %d member-%06d", k * 500 + i,
                              k * 500 + i);
            rh_int(CMD(cmd));
        }
        long long after = rh_info_field(&S, "memory", "used_memory");
        long long usage = rh_int(CMD("MEMORY USAGE big"));
        ok(after - before > usage / 2,
           "used_memory grew by %lld for a 20000-entry timeline of %lld bytes", after - before,
           usage);
        rh_int(CMD("DEL big"));
    }
}

/* Random commands with hostile arguments: the server must answer every one (reply or error) and
 * every key must still hold a valid, canonical state. Run under the sanitizer build too. */
static void test_random_commands(void)
{
    static const char *cmds[] = {
        "CRDT.TLADD",     "CRDT.TLREM",      "CRDT.TLRANGE",   "CRDT.TLRANGEBYSCORE",
        "CRDT.TLSELECT",  "CRDT.TLCARD",     "CRDT.TLSCORE",   "CRDT.INCRBY",
        "CRDT.GINCRBY",   "CRDT.DECRBY",     "CRDT.GET",       "CRDT.SET",
        "CRDT.SADD",      "CRDT.SREM",       "CRDT.SMEMBERS",  "CRDT.SISMEMBER",
        "CRDT.SCARD",     "CRDT.STATE",      "CRDT.MERGE",     "CRDT.TYPE",
        "CRDT.INFO",      "CRDT.LOG.READ",   "CRDT.LOG.LIST",  "CRDT.RSX.OPEN",
        "CRDT.RSX.RECV",  "CRDT.RSX.DIFFS",  "CRDT.RSX.CLOSE", "CRDT.RSX.DIGEST",
        "CRDT.LOG.APPLY", "CRDT.LOG.APPEND", "CRDT.LOG.TRIM",  "CRDT.LOG.GROUP",
        "CRDT.LOG.INFO"};
    static const char *vals[] = {"fz:t",
                                 "fz:c",
                                 "fz:s",
                                 "fz:r",
                                 "fz:n",
                                 "",
                                 "0",
                                 "1",
                                 "-1",
                                 "2.5",
                                 "-0",
                                 "nan",
                                 "inf",
                                 "-inf",
                                 "+inf",
                                 "1e308",
                                 "1e-320",
                                 "abc",
                                 "WITHSCORES",
                                 "LIMIT",
                                 "AFTER",
                                 "9223372036854775807",
                                 "-9223372036854775808",
                                 "18446744073709551616"};
    const int nc = (int)(sizeof(cmds) / sizeof(cmds[0])),
              nv = (int)(sizeof(vals) / sizeof(vals[0]));
    uint64_t x = 0x9e3779b97f4a7c15ull;
    int answered = 0, total = 2000;
    char junk[64];
    size_t state_len = 0;
    rh_int(CMD("CRDT.TLADD fz:t 1 a 2 b"));
    char *state = state_of(&S, "fz:t", &state_len);
    for (int i = 0; i < total; i++) {
        const char *argv[8];
        size_t lens[8];
        x ^= x << 13, x ^= x >> 7, x ^= x << 17;
        int argc = 1 + (int)(x % 7);
        argv[0] = cmds[(x >> 8) % (uint64_t)nc];
        lens[0] = strlen(argv[0]);
        for (int k = 1; k < argc; k++) {
            x ^= x << 13, x ^= x >> 7, x ^= x << 17;
            int pick = (int)(x % (uint64_t)(nv + 2));
            if (pick < nv) {
                argv[k] = vals[pick];
                lens[k] = strlen(vals[pick]);
            } else if (pick == nv && state) { /* a payload, sometimes damaged */
                memcpy(junk, state, state_len < sizeof(junk) ? state_len : sizeof(junk));
                lens[k] = (x >> 20) % 2 ? state_len : (x >> 24) % (state_len + 1);
                if (lens[k] > sizeof(junk))
                    lens[k] = sizeof(junk);
                if ((x >> 30) % 2 && lens[k])
                    junk[(x >> 32) % lens[k]] ^= (char)(1 + (x >> 40) % 255);
                argv[k] = junk;
            } else {
                for (size_t b = 0; b < 16; b++)
                    junk[b] = (char)(x >> (b * 4));
                argv[k] = junk;
                lens[k] = (x >> 50) % 17;
            }
        }
        redisReply *r = rh_cmdv(&S, argc, argv, lens);
        answered += r != NULL;
        if (r)
            freeReplyObject(r);
    }
    free(state);
    is_int(answered, total, "every random command answered");
    const char *keys[] = {"fz:t", "fz:c", "fz:s", "fz:r", "fz:n"};
    int valid = 0, present = 0;
    for (int k = 0; k < 5; k++) {
        size_t len;
        char *st = state_of(&S, keys[k], &len);
        if (!st)
            continue;
        present++;
        rh_int(CMD("DEL fz:copy"));
        long long m = rh_int(rh_cmd(&S, "CRDT.MERGE fz:copy %b", st, len));
        size_t l2;
        char *st2 = state_of(&S, "fz:copy", &l2);
        valid += m >= 0 && st2 && l2 == len && memcmp(st, st2, len) == 0;
        free(st);
        free(st2);
    }
    is_int(valid, present, "all %d keys left by random commands hold valid canonical states",
           present);
}

/* A one-node Redis Cluster routes by our key specs and getkeys callback: TLSELECT's keys must share
 * a slot, and a trailing WITHSCORES is not taken for a key. */
static void test_cluster(void)
{
    rh_server_t c;
    const char *extra[] = {"--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf", NULL};
    if (!ok(rh_start(&c, NULL, "node-id 21", extra) == 0, "cluster-mode server"))
        return;
    freeReplyObject(rh_cmd(&c, "CLUSTER ADDSLOTSRANGE 0 16383"));
    bool up = false;
    for (int i = 0; i < 100 && !up; i++) {
        redisReply *r = rh_cmd(&c, "CLUSTER INFO");
        up = r && r->type == REDIS_REPLY_STRING && strstr(r->str, "cluster_state:ok");
        if (r)
            freeReplyObject(r);
        if (!up)
            usleep(50000);
    }
    ok(up, "cluster state ok");
    is_int(rh_int(rh_cmd(&c, "CRDT.TLADD {f}a 1 x")), 1, "TLADD in cluster mode");
    is_int(rh_int(rh_cmd(&c, "CRDT.TLADD {f}b 2 y")), 1, "TLADD on a key of the same slot");
    is(joined(rh_cmd(&c, "CRDT.TLSELECT 10 {f}a {f}b WITHSCORES")), "y 2 x 1",
       "TLSELECT over one slot, WITHSCORES not routed as a key");
    ok(starts(rh_err(rh_cmd(&c, "CRDT.TLSELECT 10 a b")), "CROSSSLOT"),
       "TLSELECT over two slots: CROSSSLOT");
    is(joined(rh_cmd(&c, "CRDT.TLMADD {f}a 3 z {f}c 4 w")), "1 1", "TLMADD over one slot");
    ok(starts(rh_err(rh_cmd(&c, "CRDT.TLMADD {f}a 5 v a 1 x")), "CROSSSLOT"),
       "TLMADD over two slots: CROSSSLOT (every triple's key is routed)");
    is(joined(rh_cmd(&c, "CRDT.TLRANGE {f}a 0 10")), "z x", "and nothing written");
    ok(starts(rh_err(rh_cmd(&c, "CRDT.MERGE a")), "ERR wrong number"), "arity checked first");
    rh_stop(&c);
}

/* Bad module arguments make the load fail (and redis-server exit) with a log line, never start a
 * server with a wrong configuration. */
static void test_load_args(void)
{
    const char *bad[] = {"",
                         "node-id 0",
                         "node-id x",
                         "node-id 7 timeline-max-size -1",
                         "node-id 7 bogus 1",
                         "node-id 7 changes-max-len 4",
                         "node-id 7 log maybe",
                         "node-id 7 log-max-len -1",
                         "node-id 7 rsx 2",
                         "node-id 7 timeline-max-size",
                         "node-id 9223372036854775808"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        rh_server_t x;
        diag("expecting a refused load for module arguments '%s':", bad[i]);
        ok(rh_start(&x, NULL, bad[i], NULL) < 0, "module arguments '%s' refused", bad[i]);
        rh_stop(&x);
    }
    rh_server_t x;
    ok(rh_start(&x, NULL, "NODE-ID 9223372036854775807 timeline-max-size 4294967295", NULL) == 0,
       "largest node id and bound accepted");
    is_int(rh_info_field(&x, "crdt", "crdt_timeline_max_size"), 4294967295LL, "bound in INFO");
    rh_stop(&x);
}

int main(void)
{
    const char *why = rh_skip_reason();
    if (why)
        skip_all("%s", why);
    rh_watchdog(120);
    if (rh_start(&S, NULL, "node-id 7", NULL) < 0 ||
        rh_start(&B, NULL, "node-id 8 timeline-max-size 3 log no", NULL) < 0) {
        diag("could not start redis-server with the module");
        ok(0, "servers start");
        return done_testing();
    }
    test_introspection();
    test_errors();
    test_counters_registers_sets();
    test_timeline();
    test_tlmadd();
    test_write_rules();
    test_floor();
    test_merge();
    test_merge_clock();
    test_changes();
    test_info();
    test_random_commands();
    test_load_args();
    test_cluster();
    ok(rh_int(CMD("DBSIZE")) >= 0, "server alive at the end");
    if (rh_sanitized())
        is_int(rh_sanitizer_reports(), 0, "no ASan/UBSan report from any redis-server");
    rh_cleanup();
    return done_testing();
}
