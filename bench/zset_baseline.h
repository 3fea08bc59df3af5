/* zset_baseline.h - a Redis-style sorted set (skiplist + hash) used as the timeline's baseline
 *
 * Our own implementation of the structure Redis uses for a sorted set once it outgrows listpack
 * encoding: a skiplist ordered by (score, member) with spans and backward links, p = 1/4, at most
 * 32 levels, plus a chained hash table member -> node with one malloc'd entry per member and
 * members held as sds-like strings (3-byte header + bytes + NUL). No CRDT metadata. Only for
 * benchmarks: it follows Redis's algorithms (ZADD with the in-place score update, ZREVRANGE from
 * the tail, ZREMRANGEBYRANK of the lowest, ZUNIONSTORE AGGREGATE MAX, an RDB-like dump/load).
 */
#ifndef ZSET_BASELINE_H
#define ZSET_BASELINE_H

#include <stddef.h>
#include <stdint.h>

typedef struct zset zset_t;

typedef struct zset_entry {
    const void *member;
    size_t len;
    double score;
} zset_entry_t;

/* A new empty set, or NULL. */
zset_t *zset_new(void);
void zset_free(zset_t *z);
/* ZADD: sets member's score (copied in). 1 added, 0 updated or unchanged, -1 out of memory. */
int zset_add(zset_t *z, const void *m, size_t len, double score);
/* ZREMRANGEBYRANK 0 (card - keep - 1): drops the lowest entries until at most `keep` remain.
 * Returns how many were dropped. */
size_t zset_trim(zset_t *z, size_t keep);
size_t zset_card(const zset_t *z);
/* ZREVRANGE start start+count-1: highest first, members borrowed. Returns how many. */
size_t zset_revrange(const zset_t *z, size_t start, size_t count, zset_entry_t *out);
/* ZUNIONSTORE dst 2 a b AGGREGATE MAX: a new set, or NULL. */
zset_t *zset_union_max(const zset_t *a, const zset_t *b);
/* Bytes allocated for the set (malloc_usable_size of every allocation). */
size_t zset_memory(const zset_t *z);
/* RDB-like serialisation, as Redis writes a skiplist zset: varint count, then per element from
 * the highest: varint length, member bytes, 8-byte binary double. zset_dump writes into out, which
 * must hold zset_dump_size() bytes; zset_load returns a new set or NULL on malformed input. */
size_t zset_dump_size(const zset_t *z);
size_t zset_dump(const zset_t *z, uint8_t *out);
zset_t *zset_load(const uint8_t *p, size_t n);

#endif /* ZSET_BASELINE_H */
