/* fuzz_redis_parse.c - the Redis store's own reading of Redis replies (gateway/redis/redis_parse.c)
 *
 * The input is RESP (decoded by hiredis's reader, as the store gets it) of any shape: every reply
 * goes through the CLUSTER SLOTS parser, the CRDT.LOG.READ parser and its entries, the INFO field
 * reader and, for error and status replies, the redirect parser; the raw bytes also go through the
 * URL parser. Whatever they accept must be within bounds.
 */
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

static void check_reply(const redisReply *r)
{
    static sr_range_t ranges[64];
    char why[160];
    int n = sr_parse_slots(r, "127.0.0.1", ranges, 64, why, sizeof(why));
    REQUIRE(n >= -1 && n <= 64);
    for (int i = 0; i < n; i++) {
        REQUIRE(ranges[i].lo <= ranges[i].hi && ranges[i].hi < 16384);
        REQUIRE(ranges[i].addr.port >= 1 && ranges[i].addr.port <= 65535);
        REQUIRE(strlen(ranges[i].addr.host) > 0 && strlen(ranges[i].addr.host) < SR_HOST_MAX);
    }
    char pos[64];
    bool truncated;
    size_t ne = 0;
    if (sr_parse_log_read(r, pos, sizeof(pos), &truncated, &ne, why, sizeof(why)) == 0) {
        REQUIRE(strlen(pos) < sizeof(pos));
        for (size_t i = 0; i < ne; i++) {
            sr_log_entry_t e;
            if (sr_log_entry(r, i, &e))
                REQUIRE(e.key && e.delta);
        }
    }
    char v[32];
    if (sr_info_field(r, "crdt_node_id", v, sizeof(v)))
        REQUIRE(strlen(v) < sizeof(v));
    if ((r->type == REDIS_REPLY_ERROR || r->type == REDIS_REPLY_STATUS) && r->str) {
        bool ask;
        unsigned slot;
        sr_addr_t to;
        if (sr_parse_redirect(r->str, r->len, &ask, &slot, &to) == 1)
            REQUIRE(slot < 16384 && to.port >= 1 && to.port <= 65535);
        size_t pos = 99;
        crdt_type_t t = 99;
        if (sr_parse_tlm_wrongtype(r->str, r->len, 10, &pos, &t))
            REQUIRE(pos < 10 && (t == 0 || crdt_type_name(t) != NULL));
        else
            REQUIRE(pos == 0 && t == 0);
    }
    if (r->type == REDIS_REPLY_ARRAY)
        for (size_t i = 0; i < r->elements && i < 8; i++)
            if (r->element[i])
                check_reply(r->element[i]);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char *s = malloc(size + 1);
    if (!s)
        return 0;
    memcpy(s, data, size);
    s[size] = '\0';
    sr_addr_t seeds[4];
    char why[160];
    int n = sr_parse_url(s, seeds, 4, why, sizeof(why));
    REQUIRE(n >= -1 && n <= 4);
    /* the input as a CRDT.TLMADD WRONGTYPE text, of 1 and of 1000 triples */
    for (size_t triples = 1; triples <= 1000; triples *= 1000) {
        size_t pos;
        crdt_type_t t;
        if (sr_parse_tlm_wrongtype(s, size, triples, &pos, &t))
            REQUIRE(pos < triples && (t == 0 || crdt_type_name(t) != NULL));
    }
    free(s);

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
        check_reply(rep);
        rd->fn->freeObject(rep);
    }
    redisReaderFree(rd);
    sr_reader_arena_release(arena);
    return 0;
}
