/* redis_parse.h - what the Redis store reads out of Redis's replies and its own URL, apart from
 * the store so the fuzz harness (tests/fuzz/fuzz_redis_parse.c) runs it on any reply shape
 *
 * Every function takes whatever hiredis decoded (any type, any nesting, NULL) and either fills its
 * output or returns -1 with a message; none asserts or reads past what it was given.
 */
#ifndef GW_REDIS_PARSE_H
#define GW_REDIS_PARSE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <hiredis/hiredis.h>

#include "crdt.h"

#define SR_HOST_MAX 64

typedef struct sr_addr {
    char host[SR_HOST_MAX];
    int port;
} sr_addr_t;

/* Array elements one reply may declare in all (nested arrays included), for readers passed to
 * sr_reader_limit: 8 MB of element vectors at most. */
#define SR_REPLY_ELEMENTS_MAX (1 << 20)

typedef struct sr_reply_arena sr_reply_arena_t;

/* Makes reader r build its replies in an arena of its own: hiredis's functions make every
 * element of a reply a malloc'd object and its string another (a followed change log's poll
 * reply was some 140 allocations per roshi insert); here a reply is carved out of chunks the
 * reader keeps (up to 1 MiB between replies), and freed all at once.
 * - Free a reply with r->fn->freeObject (hiredis's async API does), never freeReplyObject.
 * - Like hiredis 0.14's own functions, which allocate an array's element vector as soon as the
 *   header is read, for any length the peer claims ("*2000000000" would ask for 16 GB, and every
 *   nested header as much again), the reader refuses a reply whose arrays declare more than
 *   SR_REPLY_ELEMENTS_MAX elements in all: hiredis then fails the connection ("Out of memory").
 * The arena, or NULL when out of memory (r is unchanged then). */
sr_reply_arena_t *sr_reader_arena(redisReader *r);
/* The reader's owner lets go of the arena. hiredis frees an async context's reader after the
 * context's cleanup callback, and may free a half-read reply then: the arena stays until that
 * reply is freed. Call once; NULL does nothing. */
void sr_reader_arena_release(sr_reply_arena_t *a);

/* "redis://host:port[,host:port...]" (host a name or IPv4 address, port 1..65535) into at most
 * cap addresses. The count, or -1 with why. */
int sr_parse_url(const char *url, sr_addr_t *out, int cap, char *why, size_t whylen);

/* One range of CLUSTER SLOTS: slots lo..hi served by the primary at addr. */
typedef struct sr_range {
    unsigned lo, hi;
    sr_addr_t addr;
} sr_range_t;

/* A CLUSTER SLOTS reply into at most cap ranges (entries of another shape are refused as a whole:
 * a map built from half a reply would route keys to the wrong node). An empty host (Redis's
 * "unknown endpoint") is replaced with `fallback_host`. The count, or -1 with why. */
int sr_parse_slots(const redisReply *r, const char *fallback_host, sr_range_t *out, int cap,
                   char *why, size_t whylen);

/* A redirect error, "MOVED 3999 127.0.0.1:6381" or "ASK ...": 1 (*ask tells which), 0 when the
 * text is not a redirect, -1 when it claims to be one but is malformed. */
int sr_parse_redirect(const char *s, size_t len, bool *ask, unsigned *slot, sr_addr_t *to);

/* The value of field `name` in an INFO text ("name:value\r\n"), copied into out; false if absent
 * or the reply is not a string. */
bool sr_info_field(const redisReply *r, const char *name, char *out, size_t cap);

/* One entry of CRDT.LOG.READ's list: [id, key, delta] or [id, key, delta, origin] (a change
 * applied with CRDT.MERGE ... ORIGIN id; origin 0 when absent). Pointers into r; false on another
 * shape. */
typedef struct sr_log_entry {
    const char *key, *delta;
    size_t klen, dlen;
    uint64_t origin;
} sr_log_entry_t;

/* A CRDT.LOG.READ reply: [position, "ok"|"truncated", [entries...]]. The position text is copied
 * into pos (cap bytes); entries are checked for shape, not copied. 0, or -1 with why. */
int sr_parse_log_read(const redisReply *r, char *pos, size_t cap, bool *truncated, size_t *n,
                      char *why, size_t whylen);
/* Entry i of a reply sr_parse_log_read accepted; false when that entry is malformed. */
bool sr_log_entry(const redisReply *r, size_t i, sr_log_entry_t *e);

/* ---- the newer replies: CRDT.LOG.POLL, CRDT.RSX.*, CRDT.TYPE, SCAN -------------------------- */

/* A CRDT.LOG.POLL reply: [[log, <CRDT.LOG.READ reply>]..., more]. *n is the number of log items
 * (the elements before the integer `more`), *more whether crdt.so has more. 0, or -1 with why. */
int sr_parse_log_poll(const redisReply *r, bool *more, size_t *n, char *why, size_t whylen);
/* Item i of a reply sr_parse_log_poll accepted: [name, read]; the log's name (pointer into r) and
 * its CRDT.LOG.READ reply (any shape: sr_parse_log_read judges it). False on another shape. */
bool sr_log_poll_item(const redisReply *r, size_t i, const char **name, size_t *nlen,
                      const redisReply **read);

/* A CRDT.RSX.OPEN reply: [session id, first message]. The id (1..sidcap-1 bytes) is copied into
 * sid; the message points into r. 0, or -1 with why. */
int sr_parse_rsx_open(const redisReply *r, char *sid, size_t sidcap, const char **msg, size_t *mlen,
                      char *why, size_t whylen);

/* A CRDT.RSX.RECV reply: [reply message, finished]. msg points into r (mlen may be 0). 0, or -1
 * with why. */
int sr_parse_rsx_recv(const redisReply *r, const char **msg, size_t *mlen, bool *finished,
                      char *why, size_t whylen);

/* One row of CRDT.RSX.DIFFS: [name, state 1..3, id < CRDT_RSX_ID_SPACE]; name NULL when the
 * row's name is not a string (the row still counts). */
typedef struct sr_rsx_diff {
    uint64_t id;
    unsigned state;
    const char *name;
    size_t nlen;
} sr_rsx_diff_t;

/* A CRDT.RSX.DIFFS reply: an array of rows; *n rows. 0, or -1 with why. */
int sr_parse_rsx_diffs(const redisReply *r, size_t *n, char *why, size_t whylen);
/* Row i of a reply sr_parse_rsx_diffs accepted; false when that row is malformed. */
bool sr_rsx_diff_row(const redisReply *r, size_t i, sr_rsx_diff_t *out);

/* One entry of CRDT.RSX.ITEMS: [name, id < CRDT_RSX_ID_SPACE, fingerprint]. name points into r. */
typedef struct sr_rsx_item {
    const char *name;
    size_t nlen;
    uint64_t id, fp;
} sr_rsx_item_t;

/* A CRDT.RSX.ITEMS reply: an array of entries; *n entries. 0, or -1 with why. */
int sr_parse_rsx_items(const redisReply *r, size_t *n, char *why, size_t whylen);
/* Entry i of a reply sr_parse_rsx_items accepted; false when that entry is malformed. */
bool sr_rsx_item(const redisReply *r, size_t i, sr_rsx_item_t *out);

/* A CRDT.RSX.DIGEST reply: [items, ...] (4 elements); true with the item count. */
bool sr_parse_rsx_digest(const redisReply *r, uint64_t *items);

/* A CRDT.TLMADD / CRDT.TLMREM reply to n triples: n integers 0 or 1 (the triple's entry changed)
 * into changed[0..n). 0, or -1 with why. */
int sr_parse_tlm(const redisReply *r, size_t n, uint8_t *changed, char *why, size_t whylen);

/* The WRONGTYPE error of a CRDT.TLMADD / TLMREM of n triples, s[0..len): "WRONGTYPE key K
 * (argument A) holds a T, not a timeline" with 1 <= K <= n: true with *pos K - 1 and *type T's
 * CRDT type (0 when T is not one: "a Redis string", "another module's type"); false (both 0) for
 * any other text. */
bool sr_parse_tlm_wrongtype(const char *s, size_t len, size_t n, size_t *pos, crdt_type_t *type);

/* A score of a WITHSCORES reply in s[0..len): a decimal number or inf / -inf (Redis writes
 * %.17g, which reads back exactly), whole; NaN, hex, blanks or trailing bytes are refused. */
bool sr_parse_score(const char *s, size_t len, double *out);

/* A CRDT.TLRANGE / CRDT.TLRANGEBYSCORE ... WITHSCORES reply: [member, score, member, score ...]
 * (members bulk strings, scores bulk strings that sr_parse_score reads), at most cap entries, into
 * out[0..*n) with members pointing into r. 0, or -1 with why (*n 0). */
int sr_parse_tl_entries(const redisReply *r, crdt_tl_entry_t *out, size_t cap, size_t *n, char *why,
                        size_t whylen);

/* A CRDT.TYPE reply: a type name or "none" (*type 0). 0, or -1 with why. */
int sr_parse_type(const redisReply *r, crdt_type_t *type, char *why, size_t whylen);

/* A SCAN reply: [cursor, [keys...]]. The cursor is decimal digits below 2^cursor_bits; keys
 * points at the key array (its elements of another type than string are to be skipped). 0, or
 * -1 with why. */
int sr_parse_scan(const redisReply *r, unsigned cursor_bits, uint64_t *cursor,
                  const redisReply **keys, char *why, size_t whylen);

#endif /* GW_REDIS_PARSE_H */
