/* logpos.h - hash slots and change-log positions of crdt.so, in plain C (no Redis API)
 *
 * Kept apart from the module so the tests, the benchmarks and the fuzz harness use the same code:
 * the CRC16 that Redis Cluster hashes keys with, a hash tag per slot, the names of the per-slot
 * change logs and the text form of a reader's position in one of them.
 */
#ifndef CRDTM_LOGPOS_H
#define CRDTM_LOGPOS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define CRDTM_SLOTS 16384
/* Longest hash tag crdtm_slot_tag writes, with its terminating NUL. */
#define CRDTM_TAG_MAX 8
/* "crdt:log:{" TAG "}:" EPOCH(16 hex) */
#define CRDTM_LOG_PREFIX "crdt:log:{"
#define CRDTM_LOG_NAME_MAX (sizeof(CRDTM_LOG_PREFIX) - 1 + CRDTM_TAG_MAX + 2 + 16 + 1)
/* "EPOCH:MS-SEQ:OFFSET" at most */
#define CRDTM_POS_TEXT_MAX (16 + 1 + 20 + 1 + 20 + 1 + 20 + 1)

/* CRC16-CCITT (XMODEM), the hash of Redis Cluster. */
uint16_t crdtm_crc16(const char *buf, size_t len);

/* The hash slot of a key, as Redis Cluster computes it: the CRC16 of the part between the first
 * '{' and the next '}' when that part is not empty, of the whole key otherwise. */
unsigned crdtm_keyslot(const char *key, size_t len);

/* Fills tags[slot] with a short string whose slot is `slot`, for every slot: "{tag}" in a key
 * name puts the key in that slot. Deterministic (same tags on every server and in every client).
 * 0, or -1 if some slot got no tag (cannot happen with CRC16; checked anyway). */
int crdtm_slot_tags(char (*tags)[CRDTM_TAG_MAX]);

/* Writes the name of the change log of `slot` with identity `epoch` into buf (at least
 * CRDTM_LOG_NAME_MAX bytes): crdt:log:{TAG}:EPOCH. Returns its length. */
size_t crdtm_log_name(char *buf, const char *tag, uint64_t epoch);

/* True when name is a change-log name; then *epoch is its identity and *slot the slot its tag
 * hashes to. */
bool crdtm_log_name_parse(const char *name, size_t len, uint64_t *epoch, unsigned *slot);

/* A reader's position in a change log. */
typedef enum crdtm_pos_kind {
    CRDTM_POS_START, /* "0": before the first entry the log ever had */
    CRDTM_POS_END,   /* "$": after the newest entry */
    CRDTM_POS_AT,    /* after the entry `ms-seq`, the `offset`-th entry the log ever had */
} crdtm_pos_kind_t;

typedef struct crdtm_pos {
    crdtm_pos_kind_t kind;
    uint64_t epoch; /* the log the position belongs to (CRDTM_POS_AT) */
    uint64_t ms;    /* stream ID of the last entry read */
    uint64_t seq;
    uint64_t offset; /* 1-based count of entries added up to that one */
} crdtm_pos_t;

/* Parses "0", "$" or "EPOCH:MS-SEQ:OFFSET" (EPOCH 16 lowercase hex digits, the others decimal
 * without sign or leading zeros). 0, or -1 with *why set to a message for the user. Never reads
 * past len. */
int crdtm_pos_parse(const char *s, size_t len, crdtm_pos_t *out, const char **why);

/* Writes the text of an AT position into buf (CRDTM_POS_TEXT_MAX bytes); returns its length. */
size_t crdtm_pos_format(const crdtm_pos_t *p, char *buf);

/* A change-log entry is one stream field, `e`, whose value packs the key, the origin and the
 * delta (one listpack value per entry instead of k/d/o fields and values: the append is the
 * log's largest cost):
 *   varint(key length * 2 + has origin) key [varint(origin)] delta
 * varint: unsigned LEB128 (7 bits a byte, low first). The origin, when present, is not 0. */
typedef struct crdtm_entry {
    const char *key;
    size_t klen;
    uint64_t origin; /* 0: none */
    const char *delta;
    size_t dlen;
} crdtm_entry_t;

/* Room an entry of klen and dlen bytes needs at most. */
#define CRDTM_ENTRY_MAX(klen, dlen) ((klen) + (dlen) + 20)

/* Writes the entry into out (CRDTM_ENTRY_MAX bytes); returns its length. */
size_t crdtm_entry_encode(char *out, const char *key, size_t klen, uint64_t origin,
                          const void *delta, size_t dlen);

/* Splits an entry's value; the pointers point into e. 0, or -1 when e is not an entry (truncated,
 * an over-long varint, a key longer than what follows, an origin of 0). Never reads past len. */
int crdtm_entry_decode(const char *e, size_t len, crdtm_entry_t *out);

/* Unsigned LEB128: writes v at p (at most 10 bytes), returns its length. */
size_t crdtm_varint_put(char *p, uint64_t v);

/* The varint at *p (before end) into *v, *p moved past it; false (and *p unchanged) when
 * truncated, longer than 64 bits or not in its shortest form (crdt_varint_scan). */
bool crdtm_varint_get(const char **p, const char *end, uint64_t *v);

#endif /* CRDTM_LOGPOS_H */
