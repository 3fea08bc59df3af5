/* fuzz_tl_entries.c - the Redis store's reader of CRDT.TLRANGE / TLRANGEBYSCORE WITHSCORES replies
 * (gateway/redis/redis_parse.c: sr_parse_tl_entries, sr_parse_score)
 *
 * The input is RESP of any shape, decoded by hiredis's reader with the store's element budget (as
 * the store's connections get it); every reply, and the first elements of its arrays, is read
 * with a room of as many entries as it claims, one fewer, and none. Whatever the reader accepts
 * must be the reply's own members and scores, within the room given, with no NaN.
 */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "redis_parse.h"

#define REQUIRE(c)                                                                                 \
    do {                                                                                           \
        if (!(c)) {                                                                                \
            fprintf(stderr, "fuzz: requirement failed: %s\n", #c);                                 \
            abort();                                                                               \
        }                                                                                          \
    } while (0)

#define ROOM 256

static void check_reply(const redisReply *r, int depth)
{
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
            /* what Redis writes (%.17g) reads back to the same score */
            char back[64];
            snprintf(back, sizeof(back), "%.17g", out[i].score);
            REQUIRE(sr_parse_score(back, strlen(back), &d) && d == out[i].score);
        }
    }
    if (r->type == REDIS_REPLY_STRING) {
        double d;
        if (sr_parse_score(r->str, r->len, &d))
            REQUIRE(!isnan(d));
    }
    if (r->type == REDIS_REPLY_ARRAY && depth < 4)
        for (size_t i = 0; i < r->elements && i < 8; i++)
            if (r->element[i])
                check_reply(r->element[i], depth + 1);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    size_t n = 1;
    REQUIRE(sr_parse_tl_entries(NULL, NULL, 0, &n, NULL, 0) < 0 && n == 0);
    double d;
    REQUIRE(!sr_parse_score(NULL, 0, &d));

    redisReader *rd = redisReaderCreate();
    if (!rd)
        return 0;
    sr_reader_budget_t budget;
    sr_reader_limit(rd, &budget); /* as the store's connections: no 16 GB element vectors */
    redisReaderFeed(rd, (const char *)data, size);
    for (int i = 0; i < 16; i++) {
        void *rep = NULL;
        if (redisReaderGetReply(rd, &rep) != REDIS_OK || !rep)
            break;
        check_reply(rep, 0);
        freeReplyObject(rep);
    }
    redisReaderFree(rd);
    return 0;
}
