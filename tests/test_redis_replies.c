/* test_redis_replies.c - the Redis store's readers of crdt.so's replies
 * (gateway/redis/redis_parse.c) on replies decoded from RESP by hiredis's reader, without a server:
 * the real shapes are read right, and every malformed reply of each kind is refused with a message
 * (not accepted, not a crash). */
#include <float.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "crdt_reconcile.h"
#include "redis_parse.h"
#include "tap.h"

/* The arena's functions (sr_reader_arena), to free the replies rd() made. */
static redisReplyObjectFunctions *arena_fns;

static void rfree(redisReply *r)
{
    if (r)
        arena_fns->freeObject(r);
}

/* One RESP reply decoded as the store's connections decode it (in an arena: the reply outlives
 * its reader and arena handle, and rfree frees it); NULL when hiredis refuses it. */
static redisReply *rd(const char *p, size_t n)
{
    redisReader *r = redisReaderCreate();
    sr_reply_arena_t *a = r ? sr_reader_arena(r) : NULL;
    if (!a)
        bail_out("no reader");
    arena_fns = r->fn;
    void *rep = NULL;
    if (redisReaderFeed(r, p, n) != REDIS_OK || redisReaderGetReply(r, &rep) != REDIS_OK)
        rep = NULL;
    redisReaderFree(r);
    sr_reader_arena_release(a);
    if (!rep)
        bail_out("hiredis did not decode a test reply: %.*s", (int)n, p);
    return rep;
}

/* The arena reader itself: shapes, a reply bigger than a chunk, many replies through one reader,
 * a half-read reply when the reader goes, and the element limit. */
static void test_arena(void)
{
    redisReader *r = redisReaderCreate();
    sr_reply_arena_t *a = sr_reader_arena(r);
    ok(r && a, "a reader with a reply arena");
    if (!r || !a)
        return;
    static const char one[] = "*4\r\n$3\r\nabc\r\n:-7\r\n$-1\r\n*2\r\n+OK\r\n-ERR no\r\n";
    bool same = true;
    for (int round = 0; round < 3; round++) {
        /* 2,000 elements of 100 bytes: 200 KB, past the first chunks */
        enum { BIG = 2000 };
        size_t cap = 32 + BIG * 128, at = 0;
        char *big = malloc(cap);
        at += (size_t)snprintf(big + at, cap - at, "*%d\r\n", BIG);
        for (int i = 0; i < BIG; i++) {
            at += (size_t)snprintf(big + at, cap - at, "$100\r\n");
            memset(big + at, 'a' + (i + round) % 26, 100);
            at += 100;
            memcpy(big + at, "\r\n", 2);
            at += 2;
        }
        redisReaderFeed(r, big, at);
        redisReaderFeed(r, one, sizeof(one) - 1);
        free(big);
        void *rep = NULL;
        same = same && redisReaderGetReply(r, &rep) == REDIS_OK && rep;
        redisReply *b = rep;
        same = same && b->type == REDIS_REPLY_ARRAY && b->elements == BIG;
        for (size_t i = 0; same && i < BIG; i++)
            same = b->element[i]->type == REDIS_REPLY_STRING && b->element[i]->len == 100 &&
                   b->element[i]->str[0] == 'a' + (char)((i + (size_t)round) % 26) &&
                   b->element[i]->str[100] == '\0';
        if (rep)
            r->fn->freeObject(rep);
        rep = NULL;
        same = same && redisReaderGetReply(r, &rep) == REDIS_OK && rep;
        redisReply *o = rep;
        same = same && o->type == REDIS_REPLY_ARRAY && o->elements == 4 &&
               o->element[0]->type == REDIS_REPLY_STRING && !strcmp(o->element[0]->str, "abc") &&
               o->element[1]->type == REDIS_REPLY_INTEGER && o->element[1]->integer == -7 &&
               o->element[2]->type == REDIS_REPLY_NIL && o->element[3]->elements == 2 &&
               o->element[3]->element[0]->type == REDIS_REPLY_STATUS &&
               !strcmp(o->element[3]->element[0]->str, "OK") &&
               o->element[3]->element[1]->type == REDIS_REPLY_ERROR &&
               !strcmp(o->element[3]->element[1]->str, "ERR no");
        if (rep)
            r->fn->freeObject(rep);
    }
    ok(same, "three rounds of a 200 KB reply and a small nested one, each read whole and right");
    /* a reply that declares more elements than the limit is refused before any is made */
    redisReader *r2 = redisReaderCreate();
    sr_reply_arena_t *a2 = sr_reader_arena(r2);
    redisReaderFeed(r2, "*2000000000\r\n", 14);
    void *rep = NULL;
    ok(redisReaderGetReply(r2, &rep) == REDIS_ERR && !rep, "*2000000000 is refused (%s)",
       r2->errstr);
    redisReaderFree(r2);
    sr_reader_arena_release(a2);
    /* half a reply read, then the reader freed after its owner let go (an async context's
     * order): hiredis frees the partial reply, which frees the arena (LeakSanitizer checks) */
    redisReaderFeed(r, "*3\r\n$1\r\nx\r\n:1\r\n", 15);
    rep = NULL;
    ok(redisReaderGetReply(r, &rep) == REDIS_OK && !rep, "a reply half read waits for the rest");
    sr_reader_arena_release(a);
    redisReaderFree(r);
}
#define RD(lit) rd(lit, sizeof(lit) - 1)

typedef struct bad {
    const char *resp;
    size_t len;
    const char *what;
} bad_t;
#define BAD(lit, what)                                                                             \
    {                                                                                              \
        lit, sizeof(lit) - 1, what                                                                 \
    }
#define NBAD(t) (sizeof(t) / sizeof(t[0]))

/* replies that are not the command's shape at all */
#define NOT_ARRAYS(cmd)                                                                            \
    BAD("+ok\r\n", cmd ": a status"), BAD(":3\r\n", cmd ": an integer"),                           \
        BAD("$-1\r\n", cmd ": nil"), BAD("$2\r\nab\r\n", cmd ": a string"),                        \
        BAD("-ERR nonsense\r\n", cmd ": an error")

static void test_log_poll(void)
{
    redisReply *r = RD("*3\r\n*2\r\n$29\r\ncrdt:log:{x}:00000000000000aa\r\n*3\r\n$"
                       "34\r\n00000000000000aa:1796306283614-0:1\r\n"
                       "+ok\r\n*2\r\n*3\r\n$3\r\n1-0\r\n$1\r\nk\r\n$2\r\nd1\r\n*4\r\n$3\r\n1-1\r\n"
                       "$2\r\nk2\r\n$2\r\nd2\r\n:7\r\n*2\r\n$3\r\nlgb\r\n*3\r\n$1\r\n0\r\n"
                       "+truncated\r\n*0\r\n:1\r\n");
    bool more = false;
    size_t n = 0;
    char why[160] = "";
    is_int(sr_parse_log_poll(r, &more, &n, why, sizeof(why)), 0, "CRDT.LOG.POLL: read");
    is_int(n, 2, "  two logs");
    ok(more, "  more: 1");
    const char *name;
    size_t nlen;
    const redisReply *read;
    ok(sr_log_poll_item(r, 0, &name, &nlen, &read), "  the first log");
    is_mem(name, nlen, "crdt:log:{x}:00000000000000aa", 29, "  its name");
    char pos[64];
    bool trunc = true;
    size_t ne = 0;
    is_int(sr_parse_log_read(read, pos, sizeof(pos), &trunc, &ne, why, sizeof(why)), 0,
           "  its CRDT.LOG.READ reply");
    is(pos, "00000000000000aa:1796306283614-0:1", "  its position");
    ok(!trunc && ne == 2, "  not truncated, two entries");
    sr_log_entry_t e;
    ok(sr_log_entry(read, 0, &e) && e.origin == 0, "  an entry without an origin: origin 0");
    is_mem(e.key, e.klen, "k", 1, "  its key");
    ok(sr_log_entry(read, 1, &e) && e.origin == 7, "  an entry with an origin");
    is_mem(e.delta, e.dlen, "d2", 2, "  its delta");
    ok(!sr_log_entry(read, 2, &e), "  no entry past the end");
    ok(sr_log_poll_item(r, 1, &name, &nlen, &read) &&
           sr_parse_log_read(read, pos, sizeof(pos), &trunc, &ne, why, sizeof(why)) == 0 && trunc &&
           ne == 0,
       "  the second log: truncated, no entries");
    ok(!sr_log_poll_item(r, 2, &name, &nlen, &read), "  the `more` integer is not a log");
    rfree(r);

    static const bad_t bad[] = {
        NOT_ARRAYS("CRDT.LOG.POLL"),
        BAD("*0\r\n", "an empty array (no `more`)"),
        BAD("*1\r\n$1\r\n1\r\n", "`more` is a string"),
        BAD("*2\r\n:0\r\n*0\r\n", "`more` is an array"),
    };
    for (size_t i = 0; i < NBAD(bad); i++) {
        r = rd(bad[i].resp, bad[i].len);
        why[0] = '\0';
        ok(sr_parse_log_poll(r, &more, &n, why, sizeof(why)) < 0 && why[0],
           "CRDT.LOG.POLL refuses %s (%s)", bad[i].what, why);
        rfree(r);
    }
    static const bad_t bad_items[] = {
        BAD("*2\r\n:5\r\n:0\r\n", "an item that is an integer"),
        BAD("*2\r\n*1\r\n$1\r\na\r\n:0\r\n", "an item of one element"),
        BAD("*2\r\n*3\r\n$1\r\na\r\n*0\r\n*0\r\n:0\r\n", "an item of three elements"),
        BAD("*2\r\n*2\r\n:1\r\n*0\r\n:0\r\n", "an item whose name is an integer"),
        BAD("*2\r\n*2\r\n$-1\r\n*0\r\n:0\r\n", "an item whose name is nil"),
    };
    for (size_t i = 0; i < NBAD(bad_items); i++) {
        r = rd(bad_items[i].resp, bad_items[i].len);
        ok(sr_parse_log_poll(r, &more, &n, why, sizeof(why)) == 0 && n == 1 &&
               !sr_log_poll_item(r, 0, &name, &nlen, &read),
           "CRDT.LOG.POLL: refuses %s", bad_items[i].what);
        rfree(r);
    }
    static const bad_t bad_reads[] = {
        NOT_ARRAYS("CRDT.LOG.READ"),
        BAD("*3\r\n$5\r\n0:1-0\r\n+ok\r\n*0\r\n", "a position of another format"),
        BAD("*3\r\n$3\r\n0\0"
            "1\r\n+ok\r\n*0\r\n",
            "a position with a NUL inside"),
        BAD("*3\r\n$0\r\n\r\n+ok\r\n*0\r\n", "an empty position"),
        BAD("*3\r\n:0\r\n+ok\r\n*0\r\n", "a position that is an integer"),
        BAD("*3\r\n$1\r\n0\r\n+maybe\r\n*0\r\n", "a status neither ok nor truncated"),
        BAD("*3\r\n$1\r\n0\r\n+ok\r\n$0\r\n\r\n", "entries that are a string"),
        BAD("*2\r\n$1\r\n0\r\n+ok\r\n", "two elements"),
    };
    for (size_t i = 0; i < NBAD(bad_reads); i++) {
        r = rd(bad_reads[i].resp, bad_reads[i].len);
        why[0] = '\0';
        ok(sr_parse_log_read(r, pos, sizeof(pos), &trunc, &ne, why, sizeof(why)) < 0 && why[0],
           "CRDT.LOG.READ refuses %s (%s)", bad_reads[i].what, why);
        rfree(r);
    }
    /* entries of a CRDT.LOG.READ with a malformed origin */
    static const bad_t bad_entries[] = {
        BAD(":0\r\n", "an origin of 0"),
        BAD(":-4\r\n", "a negative origin"),
        BAD("$1\r\n7\r\n", "an origin that is a string"),
        BAD("$-1\r\n", "a nil origin"),
    };
    for (size_t i = 0; i < NBAD(bad_entries); i++) {
        char buf[256];
        int len =
            snprintf(buf, sizeof(buf),
                     "*3\r\n$1\r\n0\r\n+ok\r\n*1\r\n*4\r\n$3\r\n1-0\r\n$1\r\nk\r\n$1\r\nd\r\n%.*s",
                     (int)bad_entries[i].len, bad_entries[i].resp);
        r = rd(buf, (size_t)len);
        ok(sr_parse_log_read(r, pos, sizeof(pos), &trunc, &ne, why, sizeof(why)) == 0 && ne == 1 &&
               !sr_log_entry(r, 0, &e),
           "CRDT.LOG.READ: refuses an entry with %s", bad_entries[i].what);
        rfree(r);
    }
    r = RD("*3\r\n$1\r\n0\r\n+ok\r\n*1\r\n*5\r\n$3\r\n1-0\r\n$1\r\nk\r\n$1\r\nd\r\n:1\r\n:2\r\n");
    ok(sr_parse_log_read(r, pos, sizeof(pos), &trunc, &ne, why, sizeof(why)) == 0 &&
           !sr_log_entry(r, 0, &e),
       "CRDT.LOG.READ: refuses an entry of five elements");
    rfree(r);
}

static void test_rsx_open_recv(void)
{
    char sid[24], why[160];
    const char *msg;
    size_t mlen;
    redisReply *r = RD("*2\r\n$6\r\nsess-1\r\n$4\r\nmsg1\r\n");
    is_int(sr_parse_rsx_open(r, sid, sizeof(sid), &msg, &mlen, why, sizeof(why)), 0,
           "CRDT.RSX.OPEN: read");
    is(sid, "sess-1", "  the session");
    is_mem(msg, mlen, "msg1", 4, "  the first message");
    rfree(r);
    r = RD("*2\r\n$1\r\ns\r\n$0\r\n\r\n");
    ok(sr_parse_rsx_open(r, sid, sizeof(sid), &msg, &mlen, why, sizeof(why)) == 0 && mlen == 0,
       "CRDT.RSX.OPEN: a responder's empty first message");
    rfree(r);
    static const bad_t bad_open[] = {
        NOT_ARRAYS("CRDT.RSX.OPEN"),
        BAD("*2\r\n$0\r\n\r\n$1\r\nm\r\n", "an empty session id"),
        BAD("*2\r\n$24\r\n012345678901234567890123\r\n$1\r\nm\r\n", "a session id too long"),
        BAD("*2\r\n:5\r\n$1\r\nm\r\n", "a session id that is an integer"),
        BAD("*2\r\n$3\r\n1\0"
            "2\r\n$1\r\nm\r\n",
            "a session id with a NUL inside"),
        BAD("*2\r\n$1\r\ns\r\n:1\r\n", "a message that is an integer"),
        BAD("*2\r\n$1\r\ns\r\n$-1\r\n", "a nil message"),
        BAD("*1\r\n$1\r\ns\r\n", "one element"),
        BAD("*3\r\n$1\r\ns\r\n$1\r\nm\r\n$1\r\nx\r\n", "three elements"),
    };
    for (size_t i = 0; i < NBAD(bad_open); i++) {
        r = rd(bad_open[i].resp, bad_open[i].len);
        why[0] = '\0';
        ok(sr_parse_rsx_open(r, sid, sizeof(sid), &msg, &mlen, why, sizeof(why)) < 0 && why[0],
           "CRDT.RSX.OPEN refuses %s", bad_open[i].what);
        rfree(r);
    }

    bool fin = false;
    r = RD("*2\r\n$5\r\nreply\r\n:1\r\n");
    ok(sr_parse_rsx_recv(r, &msg, &mlen, &fin, why, sizeof(why)) == 0 && fin && mlen == 5 &&
           !memcmp(msg, "reply", 5),
       "CRDT.RSX.RECV: a reply and finished");
    rfree(r);
    r = RD("*2\r\n$0\r\n\r\n:0\r\n");
    ok(sr_parse_rsx_recv(r, &msg, &mlen, &fin, why, sizeof(why)) == 0 && !fin && mlen == 0,
       "CRDT.RSX.RECV: no reply, not finished");
    rfree(r);
    static const bad_t bad_recv[] = {
        NOT_ARRAYS("CRDT.RSX.RECV"),
        BAD("*2\r\n$1\r\nm\r\n$1\r\n1\r\n", "a `finished` that is a string"),
        BAD("*2\r\n$-1\r\n:1\r\n", "a nil message"),
        BAD("*2\r\n:3\r\n:1\r\n", "a message that is an integer"),
        BAD("*1\r\n$1\r\nm\r\n", "one element"),
        BAD("*0\r\n", "an empty array"),
    };
    for (size_t i = 0; i < NBAD(bad_recv); i++) {
        r = rd(bad_recv[i].resp, bad_recv[i].len);
        why[0] = '\0';
        ok(sr_parse_rsx_recv(r, &msg, &mlen, &fin, why, sizeof(why)) < 0 && why[0],
           "CRDT.RSX.RECV refuses %s", bad_recv[i].what);
        rfree(r);
    }
}

static void test_rsx_diffs_items_digest(void)
{
    char why[160];
    size_t n = 0;
    redisReply *r = RD("*3\r\n*3\r\n$1\r\na\r\n:1\r\n:12\r\n*3\r\n$-1\r\n:2\r\n:13\r\n*3\r\n"
                       "$1\r\nb\r\n:3\r\n:2305843009213693950\r\n");
    is_int(sr_parse_rsx_diffs(r, &n, why, sizeof(why)), 0, "CRDT.RSX.DIFFS: read");
    is_int(n, 3, "  three rows");
    sr_rsx_diff_t d;
    ok(sr_rsx_diff_row(r, 0, &d) && d.id == 12 && d.state == 1 && d.nlen == 1 && d.name[0] == 'a',
       "  a row with a name");
    ok(sr_rsx_diff_row(r, 1, &d) && d.id == 13 && d.state == 2 && !d.name, "  a row with nil");
    ok(sr_rsx_diff_row(r, 2, &d) && d.id == CRDT_RSX_ID_SPACE - 1 && d.state == 3,
       "  the largest id");
    ok(!sr_rsx_diff_row(r, 3, &d), "  no row past the end");
    rfree(r);
    static const bad_t bad_diffs[] = {NOT_ARRAYS("CRDT.RSX.DIFFS")};
    for (size_t i = 0; i < NBAD(bad_diffs); i++) {
        r = rd(bad_diffs[i].resp, bad_diffs[i].len);
        why[0] = '\0';
        ok(sr_parse_rsx_diffs(r, &n, why, sizeof(why)) < 0 && why[0], "CRDT.RSX.DIFFS refuses %s",
           bad_diffs[i].what);
        rfree(r);
    }
    static const bad_t bad_rows[] = {
        BAD("*3\r\n$1\r\na\r\n:0\r\n:1\r\n", "state 0"),
        BAD("*3\r\n$1\r\na\r\n:4\r\n:1\r\n", "state 4"),
        BAD("*3\r\n$1\r\na\r\n:1\r\n:-1\r\n", "a negative id"),
        BAD("*3\r\n$1\r\na\r\n:1\r\n:2305843009213693951\r\n", "an id of 2^61 - 1"),
        BAD("*3\r\n$1\r\na\r\n:1\r\n$1\r\n1\r\n", "an id that is a string"),
        BAD("*3\r\n$1\r\na\r\n$1\r\n1\r\n:1\r\n", "a state that is a string"),
        BAD("*2\r\n:1\r\n:1\r\n", "two elements"),
        BAD(":1\r\n", "an integer"),
    };
    for (size_t i = 0; i < NBAD(bad_rows); i++) {
        char buf[256];
        int len = snprintf(buf, sizeof(buf), "*1\r\n%.*s", (int)bad_rows[i].len, bad_rows[i].resp);
        r = rd(buf, (size_t)len);
        ok(sr_parse_rsx_diffs(r, &n, why, sizeof(why)) == 0 && n == 1 && !sr_rsx_diff_row(r, 0, &d),
           "CRDT.RSX.DIFFS: refuses a row with %s", bad_rows[i].what);
        rfree(r);
    }

    r = RD("*2\r\n*3\r\n$1\r\na\r\n:12\r\n:987654321\r\n*3\r\n$2\r\nbc\r\n:0\r\n:-5\r\n");
    is_int(sr_parse_rsx_items(r, &n, why, sizeof(why)), 0, "CRDT.RSX.ITEMS: read");
    sr_rsx_item_t it;
    ok(n == 2 && sr_rsx_item(r, 0, &it) && it.id == 12 && it.fp == 987654321 && it.nlen == 1,
       "  an item");
    ok(sr_rsx_item(r, 1, &it) && it.id == 0 && it.fp == (uint64_t)-5 && !memcmp(it.name, "bc", 2),
       "  a fingerprint is 64 bits, as crdt.so replies it (signed)");
    ok(!sr_rsx_item(r, 2, &it), "  no item past the end");
    rfree(r);
    static const bad_t bad_items[] = {NOT_ARRAYS("CRDT.RSX.ITEMS")};
    for (size_t i = 0; i < NBAD(bad_items); i++) {
        r = rd(bad_items[i].resp, bad_items[i].len);
        why[0] = '\0';
        ok(sr_parse_rsx_items(r, &n, why, sizeof(why)) < 0 && why[0], "CRDT.RSX.ITEMS refuses %s",
           bad_items[i].what);
        rfree(r);
    }
    static const bad_t bad_entries[] = {
        BAD("*3\r\n:1\r\n:1\r\n:1\r\n", "a name that is an integer"),
        BAD("*3\r\n$-1\r\n:1\r\n:1\r\n", "a nil name"),
        BAD("*3\r\n$1\r\na\r\n:-1\r\n:1\r\n", "a negative id"),
        BAD("*3\r\n$1\r\na\r\n:2305843009213693951\r\n:1\r\n", "an id of 2^61 - 1"),
        BAD("*3\r\n$1\r\na\r\n:1\r\n$1\r\n1\r\n", "a fingerprint that is a string"),
        BAD("*4\r\n$1\r\na\r\n:1\r\n:1\r\n:1\r\n", "four elements"),
        BAD("$1\r\na\r\n", "a string"),
    };
    for (size_t i = 0; i < NBAD(bad_entries); i++) {
        char buf[256];
        int len =
            snprintf(buf, sizeof(buf), "*1\r\n%.*s", (int)bad_entries[i].len, bad_entries[i].resp);
        r = rd(buf, (size_t)len);
        ok(sr_parse_rsx_items(r, &n, why, sizeof(why)) == 0 && n == 1 && !sr_rsx_item(r, 0, &it),
           "CRDT.RSX.ITEMS: refuses an entry with %s", bad_entries[i].what);
        rfree(r);
    }

    uint64_t items = 0;
    r = RD("*4\r\n:42\r\n:1\r\n:2\r\n:3\r\n");
    ok(sr_parse_rsx_digest(r, &items) && items == 42, "CRDT.RSX.DIGEST: the item count");
    rfree(r);
    static const bad_t bad_digest[] = {
        NOT_ARRAYS("CRDT.RSX.DIGEST"),
        BAD("*3\r\n:42\r\n:1\r\n:2\r\n", "three elements"),
        BAD("*4\r\n:-1\r\n:1\r\n:2\r\n:3\r\n", "a negative count"),
        BAD("*4\r\n$2\r\n42\r\n:1\r\n:2\r\n:3\r\n", "a count that is a string"),
    };
    for (size_t i = 0; i < NBAD(bad_digest); i++) {
        r = rd(bad_digest[i].resp, bad_digest[i].len);
        items = 99;
        ok(!sr_parse_rsx_digest(r, &items) && items == 99, "CRDT.RSX.DIGEST refuses %s",
           bad_digest[i].what);
        rfree(r);
    }
}

static void test_type_scan(void)
{
    char why[160];
    crdt_type_t t = 0;
    redisReply *r = RD("+lwwset\r\n");
    ok(sr_parse_type(r, &t, why, sizeof(why)) == 0 && t == CRDT_LWWSET, "CRDT.TYPE: a status");
    rfree(r);
    r = RD("$8\r\ntimeline\r\n");
    ok(sr_parse_type(r, &t, why, sizeof(why)) == 0 && t == CRDT_TIMELINE, "CRDT.TYPE: a string");
    rfree(r);
    r = RD("+none\r\n");
    t = CRDT_ORSET;
    ok(sr_parse_type(r, &t, why, sizeof(why)) == 0 && t == 0, "CRDT.TYPE: none is type 0");
    rfree(r);
    static const bad_t bad_type[] = {
        BAD("+bogus\r\n", "an unknown name"), BAD("+\r\n", "an empty name"),
        BAD(":1\r\n", "an integer"),          BAD("$-1\r\n", "nil"),
        BAD("*1\r\n+orset\r\n", "an array"),  BAD("$7\r\norset\0x\r\n", "a name with a NUL inside"),
        BAD("-ERR x\r\n", "an error"),
    };
    for (size_t i = 0; i < NBAD(bad_type); i++) {
        r = rd(bad_type[i].resp, bad_type[i].len);
        why[0] = '\0';
        t = CRDT_ORSET;
        ok(sr_parse_type(r, &t, why, sizeof(why)) < 0 && why[0] && t == 0, "CRDT.TYPE refuses %s",
           bad_type[i].what);
        rfree(r);
    }

    uint64_t cur = 1;
    const redisReply *keys = NULL;
    r = RD("*2\r\n$2\r\n17\r\n*2\r\n$1\r\nx\r\n$1\r\ny\r\n");
    ok(sr_parse_scan(r, 47, &cur, &keys, why, sizeof(why)) == 0 && cur == 17 && keys &&
           keys->elements == 2,
       "SCAN: cursor and keys");
    rfree(r);
    r = RD("*2\r\n$15\r\n140737488355327\r\n*0\r\n");
    ok(sr_parse_scan(r, 47, &cur, &keys, why, sizeof(why)) == 0 && cur == (1ull << 47) - 1,
       "SCAN: the largest cursor of 47 bits");
    rfree(r);
    static const bad_t bad_scan[] = {
        NOT_ARRAYS("SCAN"),
        BAD("*2\r\n$0\r\n\r\n*0\r\n", "an empty cursor"),
        BAD("*2\r\n$2\r\n 7\r\n*0\r\n", "a cursor with a space"),
        BAD("*2\r\n$2\r\n+7\r\n*0\r\n", "a cursor with a sign"),
        BAD("*2\r\n$2\r\n-1\r\n*0\r\n", "a negative cursor"),
        BAD("*2\r\n$2\r\n7x\r\n*0\r\n", "a cursor with a letter"),
        BAD("*2\r\n$15\r\n140737488355328\r\n*0\r\n", "a cursor of 2^47"),
        BAD("*2\r\n$21\r\n184467440737095516160\r\n*0\r\n", "a cursor past 64 bits"),
        BAD("*2\r\n$20\r\n18446744073709551616\r\n*0\r\n", "a cursor of 2^64"),
        BAD("*2\r\n:7\r\n*0\r\n", "a cursor that is an integer"),
        BAD("*2\r\n$1\r\n7\r\n$1\r\nx\r\n", "keys that are a string"),
        BAD("*3\r\n$1\r\n7\r\n*0\r\n*0\r\n", "three elements"),
    };
    for (size_t i = 0; i < NBAD(bad_scan); i++) {
        r = rd(bad_scan[i].resp, bad_scan[i].len);
        why[0] = '\0';
        ok(sr_parse_scan(r, 47, &cur, &keys, why, sizeof(why)) < 0 && why[0], "SCAN refuses %s",
           bad_scan[i].what);
        rfree(r);
    }
}

static void test_tl_entries(void)
{
    char why[160];
    crdt_tl_entry_t e[4];
    size_t n = 9;
    redisReply *r = RD("*0\r\n");
    ok(sr_parse_tl_entries(r, e, 0, &n, why, sizeof(why)) == 0 && n == 0, "TLRANGE: no entries");
    rfree(r);
    r = RD("*8\r\n$1\r\nb\r\n$1\r\n2\r\n$2\r\n\0\xff\r\n$19\r\n0.30000000000000004\r\n"
           "$0\r\n\r\n$3\r\ninf\r\n$1\r\nz\r\n$24\r\n-1.7976931348623157e+308\r\n");
    ok(sr_parse_tl_entries(r, e, 4, &n, why, sizeof(why)) == 0 && n == 4 && e[0].score == 2 &&
           e[0].member_len == 1 && !memcmp(e[0].member, "b", 1) && e[1].score == 0.1 + 0.2 &&
           e[1].member_len == 2 && !memcmp(e[1].member, "\0\xff", 2) && e[2].member_len == 0 &&
           e[2].score == INFINITY && e[3].score == -DBL_MAX,
       "TLRANGE WITHSCORES: members (binary, empty) and %%.17g scores read back exactly, inf");
    rfree(r);
    r = RD("*2\r\n$1\r\nm\r\n$2\r\n-0\r\n");
    ok(sr_parse_tl_entries(r, e, 1, &n, why, sizeof(why)) == 0 && n == 1 && e[0].score == 0 &&
           signbit(e[0].score),
       "TLRANGE: -0 is -0");
    rfree(r);
    static const bad_t bad[] = {
        BAD("+ok\r\n", "a status"),
        BAD(":3\r\n", "an integer"),
        BAD("$-1\r\n", "nil"),
        BAD("$2\r\nab\r\n", "a string"),
        BAD("-ERR x\r\n", "an error"),
        BAD("*1\r\n$1\r\nm\r\n", "a member without its score"),
        BAD("*2\r\n:1\r\n$1\r\n1\r\n", "a member that is an integer"),
        BAD("*2\r\n$-1\r\n$1\r\n1\r\n", "a nil member"),
        BAD("*2\r\n$1\r\nm\r\n:1\r\n", "a score that is an integer"),
        BAD("*2\r\n$1\r\nm\r\n$3\r\nnan\r\n", "a NaN score"),
        BAD("*2\r\n$1\r\nm\r\n$4\r\n-nan\r\n", "a -NaN score"),
        BAD("*2\r\n$1\r\nm\r\n$4\r\n0x10\r\n", "a hex score"),
        BAD("*2\r\n$1\r\nm\r\n$8\r\ninfinity\r\n", "infinity spelt out"),
        BAD("*2\r\n$1\r\nm\r\n$2\r\n 1\r\n", "a score with a blank"),
        BAD("*2\r\n$1\r\nm\r\n$2\r\n1x\r\n", "a score with a letter after it"),
        BAD("*2\r\n$1\r\nm\r\n$0\r\n\r\n", "an empty score"),
        BAD("*2\r\n$1\r\nm\r\n$3\r\n1\0"
            "2\r\n",
            "a score with a NUL inside"),
        BAD("*2\r\n$1\r\nm\r\n*0\r\n", "a score that is an array"),
        BAD("*4\r\n$1\r\na\r\n$1\r\n1\r\n$1\r\nb\r\n$1\r\n2\r\n",
            "more entries than asked for (one)"),
    };
    for (size_t i = 0; i < NBAD(bad); i++) {
        r = rd(bad[i].resp, bad[i].len);
        why[0] = '\0';
        n = 9;
        ok(sr_parse_tl_entries(r, e, 1, &n, why, sizeof(why)) < 0 && why[0] && n == 0,
           "TLRANGE refuses %s (%s)", bad[i].what, why);
        rfree(r);
    }
}

int main(void)
{
    test_arena();
    test_log_poll();
    test_rsx_open_recv();
    test_rsx_diffs_items_digest();
    test_type_scan();
    test_tl_entries();
    return done_testing();
}
