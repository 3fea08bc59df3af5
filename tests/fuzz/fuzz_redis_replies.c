/* fuzz_redis_replies.c - the Redis store's readers of crdt.so's newer replies
 * (gateway/redis/redis_parse.c): CRDT.LOG.POLL and the CRDT.LOG.READ replies inside it with their
 * entries (origins included), CRDT.RSX.OPEN / RECV / DIFFS / ITEMS / DIGEST, CRDT.TYPE, SCAN and
 * CRDT.TLRANGE / TLRANGEBYSCORE WITHSCORES (with a room of as many entries as the reply claims,
 * one fewer, and none).
 *
 * The input is RESP of any shape, decoded by hiredis's reader with the store's element budget (as
 * the store's connections get it); every reply, and the first elements of its arrays, goes through
 * every parser. Whatever a parser accepts must be within the bounds it promises.
 */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "crdt_reconcile.h"
#include "redis_parse.h"

#define REQUIRE(c)                                                                                 \
    do {                                                                                           \
        if (!(c)) {                                                                                \
            fprintf(stderr, "fuzz: requirement failed: %s\n", #c);                                 \
            abort();                                                                               \
        }                                                                                          \
    } while (0)

static volatile unsigned char sink;

/* Reads every byte of p[0..n): ASan catches a pointer that does not cover what it claims. */
static void touch(const char *p, size_t n)
{
    unsigned char x = 0;
    for (size_t i = 0; i < n; i++)
        x ^= (unsigned char)p[i];
    sink ^= x;
}

static void check_log_read(const redisReply *r)
{
    char pos[64], why[160];
    bool truncated;
    size_t ne = 0;
    if (sr_parse_log_read(r, pos, sizeof(pos), &truncated, &ne, why, sizeof(why)) < 0) {
        REQUIRE(why[0]);
        return;
    }
    REQUIRE(strlen(pos) > 0 && strlen(pos) < sizeof(pos));
    for (size_t i = 0; i < ne; i++) {
        sr_log_entry_t e;
        if (!sr_log_entry(r, i, &e))
            continue;
        REQUIRE(e.key && e.delta);
        touch(e.key, e.klen);
        touch(e.delta, e.dlen);
    }
    sr_log_entry_t e;
    REQUIRE(!sr_log_entry(r, ne, &e)); /* past the end */
}

/* Whatever sr_parse_tl_entries accepts is the reply's own members and scores, within the room
 * given, never NaN, and reads back from %.17g (as Redis writes it) to the same score. */
static void check_tl_entries(const redisReply *r)
{
    enum { ROOM = 256 };
    static crdt_tl_entry_t out[ROOM + 1];
    size_t claimed = r->type == REDIS_REPLY_ARRAY ? r->elements / 2 : 0;
    size_t rooms[] = {claimed, claimed ? claimed - 1 : 0, 0};
    for (size_t k = 0; k < 3; k++) {
        size_t cap = rooms[k] < ROOM ? rooms[k] : ROOM, n = 99;
        char why[160];
        why[0] = '\0';
        out[cap].member = NULL; /* a write past the room shows here */
        if (sr_parse_tl_entries(r, out, cap, &n, why, sizeof(why)) < 0) {
            REQUIRE(why[0] && n == 0);
            continue;
        }
        REQUIRE(n <= cap && n * 2 == r->elements && out[cap].member == NULL);
        for (size_t i = 0; i < n; i++) {
            const redisReply *m = r->element[2 * i], *s = r->element[2 * i + 1];
            REQUIRE(m->type == REDIS_REPLY_STRING && out[i].member_len == m->len);
            REQUIRE(m->len == 0 || out[i].member == m->str);
            REQUIRE(!isnan(out[i].score));
            double d;
            REQUIRE(sr_parse_score(s->str, s->len, &d) && d == out[i].score);
            char back[64];
            snprintf(back, sizeof(back), "%.17g", out[i].score);
            REQUIRE(sr_parse_score(back, strlen(back), &d) && d == out[i].score);
        }
    }
    double d;
    if (r->type == REDIS_REPLY_STRING && sr_parse_score(r->str, r->len, &d))
        REQUIRE(!isnan(d));
}

static void check_reply(const redisReply *r, int depth)
{
    char why[160];
    bool more;
    size_t n;

    why[0] = '\0';
    if (sr_parse_log_poll(r, &more, &n, why, sizeof(why)) == 0) {
        REQUIRE(n + 1 == r->elements);
        for (size_t i = 0; i < n; i++) {
            const char *name;
            size_t nlen;
            const redisReply *read;
            if (!sr_log_poll_item(r, i, &name, &nlen, &read))
                continue;
            REQUIRE(name);
            touch(name, nlen);
            check_log_read(read);
        }
        const char *name;
        size_t nlen;
        const redisReply *read;
        REQUIRE(!sr_log_poll_item(r, n, &name, &nlen, &read)); /* the `more` integer */
    } else {
        REQUIRE(why[0]);
    }
    check_log_read(r);

    char sid[24];
    const char *msg;
    size_t mlen;
    why[0] = '\0';
    if (sr_parse_rsx_open(r, sid, sizeof(sid), &msg, &mlen, why, sizeof(why)) == 0) {
        REQUIRE(strlen(sid) > 0 && strlen(sid) < sizeof(sid) && msg);
        touch(msg, mlen);
    } else {
        REQUIRE(why[0]);
    }
    bool finished;
    why[0] = '\0';
    if (sr_parse_rsx_recv(r, &msg, &mlen, &finished, why, sizeof(why)) == 0) {
        REQUIRE(msg);
        touch(msg, mlen);
    } else {
        REQUIRE(why[0]);
    }
    why[0] = '\0';
    if (sr_parse_rsx_diffs(r, &n, why, sizeof(why)) == 0) {
        for (size_t i = 0; i < n; i++) {
            sr_rsx_diff_t d;
            if (!sr_rsx_diff_row(r, i, &d))
                continue;
            REQUIRE(d.id < CRDT_RSX_ID_SPACE && d.state >= 1 && d.state <= 3);
            REQUIRE(d.name || d.nlen == 0);
            if (d.name)
                touch(d.name, d.nlen);
        }
        sr_rsx_diff_t d;
        REQUIRE(!sr_rsx_diff_row(r, n, &d));
    } else {
        REQUIRE(why[0]);
    }
    why[0] = '\0';
    if (sr_parse_rsx_items(r, &n, why, sizeof(why)) == 0) {
        for (size_t i = 0; i < n; i++) {
            sr_rsx_item_t it;
            if (!sr_rsx_item(r, i, &it))
                continue;
            REQUIRE(it.id < CRDT_RSX_ID_SPACE && it.name);
            touch(it.name, it.nlen);
        }
        sr_rsx_item_t it;
        REQUIRE(!sr_rsx_item(r, n, &it));
    } else {
        REQUIRE(why[0]);
    }
    uint64_t items;
    if (sr_parse_rsx_digest(r, &items))
        REQUIRE(items <= (uint64_t)INT64_MAX);

    crdt_type_t t = 99;
    why[0] = '\0';
    if (sr_parse_type(r, &t, why, sizeof(why)) == 0) {
        REQUIRE(t == 0 || crdt_type_name(t) != NULL);
    } else {
        REQUIRE(why[0] && t == 0);
    }

    /* a CRDT.TLMADD reply to as many triples as it has elements, and to one more */
    for (size_t extra = 0; extra < 2; extra++) {
        size_t n = r->type == REDIS_REPLY_ARRAY ? r->elements + extra : extra;
        uint8_t changed[64];
        why[0] = '\0';
        if (n <= sizeof(changed) && sr_parse_tlm(r, n, changed, why, sizeof(why)) == 0) {
            for (size_t i = 0; i < n; i++)
                REQUIRE(changed[i] <= 1);
        } else if (n <= sizeof(changed)) {
            REQUIRE(why[0]);
        }
    }

    uint64_t cur = 0;
    const redisReply *keys = NULL;
    why[0] = '\0';
    if (sr_parse_scan(r, 47, &cur, &keys, why, sizeof(why)) == 0) {
        REQUIRE(cur >> 47 == 0 && keys && keys->type == REDIS_REPLY_ARRAY);
        for (size_t i = 0; i < keys->elements; i++)
            if (keys->element[i] && keys->element[i]->type == REDIS_REPLY_STRING)
                touch(keys->element[i]->str, keys->element[i]->len);
    } else {
        REQUIRE(why[0]);
    }

    check_tl_entries(r);

    if (r->type == REDIS_REPLY_ARRAY && depth < 4)
        for (size_t i = 0; i < r->elements && i < 8; i++)
            if (r->element[i])
                check_reply(r->element[i], depth + 1);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    /* the parsers promise to take NULL too */
    bool more;
    size_t n;
    REQUIRE(sr_parse_log_poll(NULL, &more, &n, NULL, 0) < 0);
    REQUIRE(sr_parse_tl_entries(NULL, NULL, 0, &n, NULL, 0) < 0 && n == 0);
    double d;
    REQUIRE(!sr_parse_score(NULL, 0, &d));

    redisReader *rd = redisReaderCreate();
    if (!rd)
        return 0;
    /* as the store's connections: replies in an arena, no 16 GB element vectors */
    sr_reply_arena_t *arena = sr_reader_arena(rd);
    if (!arena) {
        redisReaderFree(rd);
        return 0;
    }
    redisReaderFeed(rd, (const char *)data, size);
    for (int i = 0; i < 16; i++) {
        void *rep = NULL;
        if (redisReaderGetReply(rd, &rep) != REDIS_OK || !rep)
            break;
        check_reply(rep, 0);
        rd->fn->freeObject(rep);
    }
    redisReaderFree(rd);
    sr_reader_arena_release(arena);
    return 0;
}
