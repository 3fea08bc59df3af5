/* test_redis_rsx.c - crdt.so's anti-entropy: two servers find exactly the keys they differ in
 * through CRDT.RSX.DIGEST/OPEN/RECV/DIFFS/CLOSE, with bytes that grow with the difference
 *
 * Both servers get the same 2000 keys (states copied with CRDT.STATE/CRDT.MERGE, so equal states
 * are equal bytes), then d keys are made to differ in every way: changed on one side, changed on
 * both, present on one side only, deleted on one side. The reconcile client (redis_reconcile.c)
 * must name exactly those keys; after the repair both sides agree on every slot.
 */
#include "tap.h"

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "logpos.h"
#include "redis_helper.h"
#include "redis_reconcile.h"

#define NKEYS 2000

static void copy_key(rh_server_t *from, rh_server_t *to, const char *key)
{
    size_t len;
    char *st = rh_str(rh_cmd(from, "CRDT.STATE %s", key), &len);
    if (st)
        rh_int(rh_cmd(to, "CRDT.MERGE %s %b", key, st, len));
    free(st);
}

static bool starts_with(const char *s, const char *prefix)
{
    return !strncmp(s, prefix, strlen(prefix));
}

static bool has_name(const rr_result_t *r, const char *name)
{
    for (size_t i = 0; i < r->n; i++)
        if (!strcmp(r->names[i], name))
            return true;
    return false;
}

/* One session of A (initiator) with B over every slot, stepped by hand, with OPEN's limits
 * MAXMSG 256 MAXCELLS 8 or without: the largest message either side sent, and the differing ids
 * A's DIFFS lists; false if a step failed. */
static bool session_by_hand(rh_server_t *A, rh_server_t *B, bool limits, size_t *largest,
                            size_t *diffs, int *turns)
{
    rh_server_t *side[2] = {A, B};
    char sid[2][24] = {"", ""};
    char *msg = NULL;
    size_t len = 0;
    *largest = *diffs = 0;
    *turns = 0;
    for (int k = 0; k < 2; k++) {
        const char *role = k ? "RESPONDER" : "INITIATOR";
        redisReply *o = limits ? rh_cmd(side[k],
                                        "CRDT.RSX.OPEN {x} %s 0 16383 MAXMSG 256 "
                                        "MAXCELLS 8",
                                        role)
                               : rh_cmd(side[k], "CRDT.RSX.OPEN {x} %s 0 16383", role);
        if (!o || o->type != REDIS_REPLY_ARRAY || o->elements != 2) {
            diag("OPEN: %s", o && o->type == REDIS_REPLY_ERROR ? o->str : "no reply");
            if (o)
                freeReplyObject(o);
            free(msg);
            return false;
        }
        snprintf(sid[k], sizeof(sid[k]), "%s", o->element[0]->str);
        if (!k) {
            len = o->element[1]->len;
            msg = malloc(len + 1);
            memcpy(msg, o->element[1]->str, len);
        }
        freeReplyObject(o);
    }
    bool good = true;
    for (int to = 1; len && *turns < 10000; to ^= 1, (*turns)++) {
        *largest = len > *largest ? len : *largest;
        redisReply *r = rh_cmd(side[to], "CRDT.RSX.RECV {x} %s %b", sid[to], msg, len);
        free(msg);
        msg = NULL;
        if (!r || r->type != REDIS_REPLY_ARRAY || r->elements != 2) {
            diag("RECV: %s", r && r->type == REDIS_REPLY_ERROR ? r->str : "no reply");
            good = false;
            if (r)
                freeReplyObject(r);
            len = 0;
            break;
        }
        len = r->element[0]->len;
        msg = malloc(len + 1);
        memcpy(msg, r->element[0]->str, len);
        freeReplyObject(r);
    }
    free(msg);
    redisReply *d = rh_cmd(A, "CRDT.RSX.DIFFS {x} %s", sid[0]);
    if (d && d->type == REDIS_REPLY_ARRAY)
        *diffs = d->elements;
    else
        good = false;
    if (d)
        freeReplyObject(d);
    redisReply *c = rh_cmd(B, "CRDT.RSX.CLOSE {x} %s", sid[1]);
    if (c)
        freeReplyObject(c);
    return good;
}

static void reconcile(rh_server_t *A, rh_server_t *B, rr_result_t *r)
{
    rr_side_t a, b;
    rr_side_single(&a, A->c);
    rr_side_single(&b, B->c);
    ok(rr_reconcile(&a, &b, r) == 0, "reconcile ran");
}

/* Keys of one slot with a TTL, past it with active expiry off: the refresh of their slot opens
 * each and Redis expires it right there, whose "expired" event notes the name dirty again, in the
 * middle of the refresh. Enough of them pushed the dirty list past its bound and the event started
 * a second refresh of the slot inside the first, which freed the names and items the first was
 * walking: the server died. Read by DIGEST (200 keys) and by the write whose note starts the
 * refresh (256 keys, then one more write). */
static void test_expiry_during_refresh(void)
{
    rh_server_t S;
    if (rh_start(&S, NULL, "node-id 3 log no", NULL) < 0)
        bail_out("cannot start redis-server");
    free(rh_str(rh_cmd(&S, "DEBUG SET-ACTIVE-EXPIRE 0"), NULL));
    static const char *const tags[2] = {"ex", "ey"};
    static const int nkeys[2] = {200, 256};
    for (int t = 0; t < 2; t++) {
        unsigned slot = crdtm_keyslot(tags[t], 2);
        for (int i = 0; i < nkeys[t]; i++) {
            redisAppendCommand(S.c, "CRDT.SET {%s}k%d v", tags[t], i);
            redisAppendCommand(S.c, "PEXPIRE {%s}k%d 100", tags[t], i);
        }
        for (int i = 0; i < 2 * nkeys[t]; i++) {
            redisReply *r;
            if (redisGetReply(S.c, (void **)&r) == REDIS_OK)
                freeReplyObject(r);
        }
        rh_sleep_ms(300);
        if (t == 0) {
            redisReply *d = rh_cmd(&S, "CRDT.RSX.DIGEST %u %u", slot, slot);
            ok(d && d->type == REDIS_REPLY_ARRAY && d->elements == 4 && d->element[0]->integer == 0,
               "DIGEST over %d expired keys: the slot counts none (%s)", nkeys[t],
               !d                             ? "no reply"
               : d->type == REDIS_REPLY_ERROR ? d->str
                                              : "a reply");
            if (d)
                freeReplyObject(d);
        } else {
            is_int(rh_int(rh_cmd(&S, "CRDT.SET {%s}last v", tags[t])), 1,
                   "a write after %d expired keys of its slot", nkeys[t]);
            redisReply *d = rh_cmd(&S, "CRDT.RSX.DIGEST %u %u", slot, slot);
            ok(d && d->type == REDIS_REPLY_ARRAY && d->elements == 4 && d->element[0]->integer == 1,
               "then the slot counts the one key that lives");
            if (d)
                freeReplyObject(d);
        }
        char *pong = rh_str(rh_cmd(&S, "PING"), NULL);
        is(pong ? pong : "(none)", "PONG", "the server still serves (%s)", tags[t]);
        free(pong);
        is_int(rh_int(rh_cmd(&S, "DBSIZE")), t ? 1 : 0, "the expired keys are gone");
    }
    rh_stop(&S);
}

/* The count CRDT.RSX.DIGEST gives for every slot, or -1. */
static long long digest_count(rh_server_t *S)
{
    redisReply *d = rh_cmd(S, "CRDT.RSX.DIGEST 0 16383");
    long long n =
        d && d->type == REDIS_REPLY_ARRAY && d->elements == 4 ? d->element[0]->integer : -1;
    if (d)
        freeReplyObject(d);
    return n;
}

/* SWAPDB gives db 0 another db's keys with no event per key: the fingerprints must describe the
 * keys db 0 holds after it (they kept describing the old ones, so two deployments reconciling
 * would miss every key that came in: anti-entropy silently short of convergence). */
static void test_swapdb(void)
{
    rh_server_t S;
    if (rh_start(&S, NULL, "node-id 4 log no", NULL) < 0)
        bail_out("cannot start redis-server");
    for (int i = 0; i < 20; i++)
        rh_int(rh_cmd(&S, "CRDT.SET zero:%d v", i));
    free(rh_str(rh_cmd(&S, "SELECT 1"), NULL));
    for (int i = 0; i < 50; i++)
        rh_int(rh_cmd(&S, "CRDT.INCRBY one:%d %d", i, i + 1));
    rh_int(rh_cmd(&S, "SET plain:1 x")); /* not a CRDT key: never an item */
    free(rh_str(rh_cmd(&S, "SELECT 0"), NULL));
    is_int(digest_count(&S), 20, "before SWAPDB: db 0's 20 keys");
    is(rh_err(rh_cmd(&S, "SWAPDB 0 1")), "", "SWAPDB 0 1");
    is_int(digest_count(&S), 50, "after SWAPDB 0 1: the 50 CRDT keys db 0 holds now");
    unsigned slot = crdtm_keyslot("one:7", 5);
    redisReply *it = rh_cmd(&S, "CRDT.RSX.ITEMS %u %u", slot, slot);
    bool named = false;
    for (size_t i = 0; it && it->type == REDIS_REPLY_ARRAY && i < it->elements; i++)
        named = named || (it->element[i]->type == REDIS_REPLY_ARRAY &&
                          !strcmp(it->element[i]->element[0]->str, "one:7"));
    if (it)
        freeReplyObject(it);
    ok(named, "CRDT.RSX.ITEMS of its slot names one:7");
    is(rh_err(rh_cmd(&S, "SWAPDB 1 0")), "", "SWAPDB 1 0");
    is_int(digest_count(&S), 20, "and back: the 20 again");
    is(rh_err(rh_cmd(&S, "SWAPDB 1 2")), "", "SWAPDB 1 2 (db 0 not involved)");
    is_int(digest_count(&S), 20, "a swap of other dbs leaves db 0's fingerprints alone");
    char *pong = rh_str(rh_cmd(&S, "PING"), NULL);
    is(pong ? pong : "(none)", "PONG", "the server still serves");
    free(pong);
    rh_stop(&S);
}

/* Active expiry deletes a key and sends its "expired" event while it walks a bucket of the db's
 * expires table, the bucket's next entry already in hand. The event notes the name dirty; when
 * that note pushed the slot's dirty list past its bound it refreshed the slot right there, and
 * the refresh's opening of the slot's other expired keys deleted them under the walk, the entry
 * in hand too: Redis then read a freed entry, expired a deleted key a second time (a second
 * "expired" event and DEL to replicas), or died in activeExpireCycle. A slot of 250 keys with a
 * short TTL, active expiry on (the default), each key left to expire by itself; ten rounds, as
 * the key whose event starts the refresh has a next entry in its bucket about every other time. */
static void test_active_expiry(void)
{
    rh_server_t S;
    if (rh_start(&S, NULL, "node-id 4 log no", NULL) < 0)
        bail_out("cannot start redis-server");
    enum { ROUNDS = 10, KEYS = 250 };
    bool alive = true, all = true;
    for (int round = 0; round < ROUNDS && alive; round++) {
        for (int i = 0; i < KEYS; i++) {
            redisAppendCommand(S.c, "CRDT.SET {ae%d}k%d v", round, i);
            redisAppendCommand(S.c, "PEXPIRE {ae%d}k%d 100", round, i);
        }
        for (int i = 0; i < 2 * KEYS; i++) {
            redisReply *r;
            if (redisGetReply(S.c, (void **)&r) == REDIS_OK)
                freeReplyObject(r);
        }
        long long left = -1;
        for (int wait = 0; wait < 40 && alive && left != 0; wait++) {
            rh_sleep_ms(100);
            left = rh_int(rh_cmd(&S, "DBSIZE"));
            alive = left >= 0;
        }
        all = all && left == 0;
    }
    ok(alive, "active expiry of a slot of %d keys, %d times: the server lives", KEYS, ROUNDS);
    ok(all, "every key expired");
    is_int(rh_info_field(&S, "stats", "expired_keys"), ROUNDS * KEYS,
           "each once (a key deleted under the walk was expired a second time)");
    /* The events still bound a slot's dirty list (they note every key's name, strings too): a
     * refresh runs soon after, from a timer. Other slots' notes only go down meanwhile. */
    long long before = rh_info_field(&S, "crdt", "crdt_rsx_dirty");
    for (int i = 0; i < 1000; i++)
        redisAppendCommand(S.c, "SET {ab}s%d v PX 100", i);
    for (int i = 0; i < 1000; i++) {
        redisReply *r;
        if (redisGetReply(S.c, (void **)&r) == REDIS_OK)
            freeReplyObject(r);
    }
    for (int wait = 0; wait < 40 && rh_int(rh_cmd(&S, "DBSIZE")) > 0; wait++)
        rh_sleep_ms(100);
    rh_sleep_ms(200);
    long long dirty = rh_info_field(&S, "crdt", "crdt_rsx_dirty");
    ok(before >= 0 && dirty >= 0 && dirty - before <= 257,
       "1000 expired strings of a slot leave at most 257 more names noted (%lld, %lld before)",
       dirty, before);
    rh_stop(&S);
}

int main(void)
{
    const char *why = rh_skip_reason();
    if (why)
        skip_all("%s", why);
    rh_watchdog(rh_sanitized() ? 240 : 120);
    rh_server_t A, B;
    if (rh_start(&A, NULL, "node-id 1 log no", NULL) < 0 ||
        rh_start(&B, NULL, "node-id 2 log no", NULL) < 0)
        bail_out("cannot start redis-server");
    for (int i = 0; i < NKEYS; i++) {
        switch (i % 4) {
        case 0: redisAppendCommand(A.c, "CRDT.TLADD tl:%d %d m%d", i, i, i); break;
        case 1: redisAppendCommand(A.c, "CRDT.INCRBY pn:%d %d", i, i); break;
        case 2: redisAppendCommand(A.c, "CRDT.SADD set:%d a%d b%d", i, i, i); break;
        default: redisAppendCommand(A.c, "CRDT.SET reg:%d v%d", i, i); break;
        }
    }
    for (int i = 0; i < NKEYS; i++) {
        redisReply *r;
        if (redisGetReply(A.c, (void **)&r) == REDIS_OK)
            freeReplyObject(r);
    }
    static const char *const prefix[4] = {"tl", "pn", "set", "reg"};
    for (int i = 0; i < NKEYS; i++) {
        char key[32];
        snprintf(key, sizeof(key), "%s:%d", prefix[i % 4], i);
        copy_key(&A, &B, key);
    }
    is_int(rh_int(rh_cmd(&B, "DBSIZE")), NKEYS, "B holds the same %d keys", NKEYS);

    rr_result_t r;
    reconcile(&A, &B, &r);
    is_int((long long)r.n, 0, "equal datasets: no difference");
    is_int(r.round_trips, 1, "one round trip (the digest of 16 ranges)");
    cmp_ok(r.bytes_out + r.bytes_in, "<", 400, "in %llu bytes",
           (unsigned long long)(r.bytes_out + r.bytes_in));
    rr_result_free(&r);

    /* d = 6 differences of every kind */
    rh_int(rh_cmd(&A, "CRDT.TLADD tl:0 1000 only-a")); /* changed on A */
    rh_int(rh_cmd(&B, "CRDT.INCRBY pn:1 5"));          /* changed on B */
    rh_int(rh_cmd(&A, "CRDT.SADD set:2 x"));           /* changed on both */
    rh_int(rh_cmd(&B, "CRDT.SADD set:2 y"));
    rh_int(rh_cmd(&A, "CRDT.SET new:a hello")); /* only on A */
    rh_int(rh_cmd(&B, "CRDT.TLADD new:b 1 z")); /* only on B */
    rh_int(rh_cmd(&A, "DEL reg:3"));            /* deleted on A */
    static const char *const want[] = {"tl:0", "pn:1", "set:2", "new:a", "new:b", "reg:3"};
    reconcile(&A, &B, &r);
    is_int((long long)r.n, 6, "six differing keys found");
    is_int(rh_info_field(&A, "crdt", "crdt_rsx_sessions_open") +
               rh_info_field(&B, "crdt", "crdt_rsx_sessions_open"),
           0, "DIFFS ended every session");
    for (size_t i = 0; i < sizeof(want) / sizeof(want[0]); i++)
        ok(has_name(&r, want[i]), "%s is among them", want[i]);
    /* DIFFS HELD on A, UNIQUE on B: A names the 4 it holds, B the 2 only B holds (new:b, reg:3) */
    is_int((long long)r.named, 6, "each named once by DIFFS HELD/UNIQUE (without: 9)");
    uint64_t bytes6 = r.bytes_out + r.bytes_in;
    diag("d=6: %u ranges differ, %u round trips, %llu bytes", r.ranges_differing, r.round_trips,
         (unsigned long long)bytes6);
    cmp_ok(bytes6, "<", 16 * NKEYS, "fewer bytes than a list of every key's (id, fp)");

    /* repair by joining states both ways; then nothing differs */
    for (size_t i = 0; i < r.n; i++) {
        copy_key(&A, &B, r.names[i]);
        copy_key(&B, &A, r.names[i]);
    }
    rr_result_free(&r);
    reconcile(&A, &B, &r);
    is_int((long long)r.n, 0, "after the repair no key differs");
    rr_result_free(&r);

    /* more differences cost more bytes, still far below the dataset */
    for (int i = 0; i < 60; i++)
        rh_int(rh_cmd(&A, "CRDT.TLADD tl:%d 5000 more", i * 4));
    reconcile(&A, &B, &r);
    is_int((long long)r.n, 60, "60 changed keys found");
    cmp_ok(r.bytes_out + r.bytes_in, ">", bytes6, "d=60 costs more than d=6 (%llu bytes)",
           (unsigned long long)(r.bytes_out + r.bytes_in));
    rr_result_free(&r);

    /* the peer's limits: with MAXMSG every message of both sides stays within it (more turns),
     * and the same differences are found */
    size_t big, small, d_big, d_small;
    int t_big, t_small;
    ok(session_by_hand(&A, &B, false, &big, &d_big, &t_big), "a session stepped by hand");
    ok(session_by_hand(&A, &B, true, &small, &d_small, &t_small),
       "a session with MAXMSG 256 MAXCELLS 8");
    diag("largest message %zu bytes in %d turns; with the limits %zu in %d", big, t_big, small,
         t_small);
    ok(big > 256, "without limits a message is larger than 256 bytes (%zu)", big);
    ok(small <= 256 && t_small > t_big, "with MAXMSG 256 none is (%zu), in more turns", small);
    ok(d_big == 60 && d_small == 60, "both find the 60 differences (%zu, %zu)", d_big, d_small);
    is(rh_err(rh_cmd(&A, "CRDT.RSX.OPEN {x} INITIATOR 0 16383 MAXMSG 255")),
       "ERR MAXMSG must be an integer of at least 256, MAXCELLS one of at least 1",
       "MAXMSG below 256 is refused");
    is(rh_err(rh_cmd(&A, "CRDT.RSX.OPEN {x} INITIATOR MAXCELLS x")),
       "ERR MAXMSG must be an integer of at least 256, MAXCELLS one of at least 1",
       "MAXCELLS not a number is refused");
    ok(starts_with(rh_err(rh_cmd(&A, "CRDT.RSX.OPEN {x} INITIATOR 0 16383 MAXMSG")),
                   "ERR wrong number"),
       "MAXMSG without its value");
    ok(starts_with(rh_err(rh_cmd(&A, "CRDT.RSX.OPEN {x} INITIATOR 0 16383 LIMIT 5")),
                   "ERR syntax error"),
       "an unknown option is refused");

    /* bad input: clear errors, the server keeps serving */
    redisReply *o = rh_cmd(&A, "CRDT.RSX.OPEN {x} RESPONDER");
    ok(o && o->type == REDIS_REPLY_ARRAY && o->elements == 2, "OPEN a responder");
    char sid[24] = "";
    if (o && o->type == REDIS_REPLY_ARRAY)
        snprintf(sid, sizeof(sid), "%s", o->element[0]->str);
    if (o)
        freeReplyObject(o);
    ok(!strncmp(rh_err(rh_cmd(&A, "CRDT.RSX.RECV {x} %s garbage", sid)),
                "ERR reconcile message refused", 29),
       "a garbage message is refused");
    ok(!strncmp(rh_err(rh_cmd(&A, "CRDT.RSX.RECV {x} %s again", sid)),
                "ERR reconcile message refused", 29),
       "the failed session keeps refusing");
    is(rh_err(rh_cmd(&A, "CRDT.RSX.CLOSE {x} %s", sid)), "", "CLOSE");
    ok(!strncmp(rh_err(rh_cmd(&A, "CRDT.RSX.RECV {x} %s m", sid)), "ERR no such reconcile session",
                29),
       "a closed session is unknown");
    ok(!strncmp(rh_err(rh_cmd(&A, "CRDT.RSX.DIFFS {y} zz")), "ERR no such reconcile session", 29),
       "a malformed session id is unknown");
    is(rh_err(rh_cmd(&A, "CRDT.RSX.DIFFS {y} zz ALL")), "ERR option must be HELD or UNIQUE",
       "DIFFS refuses an unknown option");
    is(rh_err(rh_cmd(&A, "CRDT.RSX.OPEN {x} BOTH")), "ERR role must be INITIATOR or RESPONDER",
       "bad role");
    is(rh_err(rh_cmd(&A, "CRDT.RSX.OPEN {x} INITIATOR 5 4")),
       "ERR slots must be integers 0 <= first <= last <= 16383", "bad session range");
    ok(starts_with(rh_err(rh_cmd(&A, "CRDT.RSX.OPEN {x} INITIATOR 5")), "ERR wrong number"),
       "a range needs both ends");
    is(rh_err(rh_cmd(&A, "CRDT.RSX.DIGEST 5 4")),
       "ERR slots must be integers 0 <= first <= last <= 16383", "bad digest range");
    redisReply *s1 = rh_cmd(&A, "SELECT 1");
    if (s1)
        freeReplyObject(s1);
    ok(!strncmp(rh_err(rh_cmd(&A, "CRDT.RSX.DIGEST 0 16383")), "ERR CRDT.RSX works on db 0", 26),
       "db 1 is refused");
    s1 = rh_cmd(&A, "SELECT 0");
    if (s1)
        freeReplyObject(s1);
    is(rh_err(rh_cmd(&A, "FLUSHALL")), "", "FLUSHALL");
    redisReply *d = rh_cmd(&A, "CRDT.RSX.DIGEST 0 16383");
    ok(d && d->type == REDIS_REPLY_ARRAY && d->element[0]->integer == 0,
       "after FLUSHALL the digest counts no key");
    if (d)
        freeReplyObject(d);
    rh_stop(&A);
    rh_stop(&B);
    test_expiry_during_refresh();
    test_active_expiry();
    test_swapdb();
    is_int(rh_sanitizer_reports(), 0, "no sanitizer reports from the servers");
    rh_cleanup();
    return done_testing();
}
