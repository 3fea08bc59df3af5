/* logval.h - a change log as crdt.so holds it: entries in chunks, consumer groups (no Redis API)
 *
 * The value of a key of the module type crdtd-log (changelog.c). Kept apart from the module, like
 * logpos.c, so the fuzz harness decodes the same bytes RESTORE hands the module.
 *
 * An entry is a record, varint(ms) entry (ms: the primary's clock when it was appended; entry:
 * crdtm_entry_encode), numbered by its offset: the n-th entry the log ever had is offset n. A
 * chunk holds consecutive records, each as varint(record length) record. Trimming removes the
 * oldest entries; offsets never change. A consumer group is a name and the offset it acknowledged
 * (everything up to it).
 */
#ifndef CRDTM_LOGVAL_H
#define CRDTM_LOGVAL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Room a record of an entry of klen and dlen bytes needs at most. */
#define CRDTM_REC_MAX(klen, dlen) ((klen) + (dlen) + 30)
/* Longest consumer group name. */
#define CRDTM_GROUP_NAME_MAX 200
/* Most consumer groups per log. */
#define CRDTM_GROUPS_MAX 64

typedef struct crdtm_chunk {
    uint64_t first; /* offset of the record at start */
    uint32_t count; /* records from start to used */
    uint32_t start; /* byte of the first record kept */
    uint32_t used, cap;
    char data[];
} crdtm_chunk_t;

typedef struct crdtm_group {
    char *name;
    size_t nlen;
    uint64_t acked; /* offset of the last entry acknowledged; 0: none */
} crdtm_group_t;

typedef struct crdtm_logval {
    crdtm_chunk_t **ch; /* oldest first */
    uint32_t nch, chcap;
    uint32_t ngroups;
    uint64_t added;   /* entries ever added: the offset of the newest */
    uint64_t len;     /* entries kept: offsets added - len + 1 .. added */
    uint64_t last_ms; /* ms of the newest entry added (kept when trimmed away) */
    size_t bytes;     /* chunk capacity, for MEMORY USAGE */
    crdtm_group_t *groups;
    int32_t cached_slot; /* changelog.c's: the slot whose append cache holds this value, or -1 */
} crdtm_logval_t;

/* One record read: its offset, its ms, the record's bytes and the entry inside them. */
typedef struct crdtm_rec {
    uint64_t offset, ms;
    const char *rec, *entry;
    size_t rlen, elen;
} crdtm_rec_t;

/* A position inside a log for crdtm_lv_next. */
typedef struct crdtm_lv_iter {
    const crdtm_logval_t *lv;
    uint32_t ci, pos;
    uint64_t offset; /* of the record at (ci, pos) */
} crdtm_lv_iter_t;

/* The allocator every function here uses (malloc, realloc, free until set). */
void crdtm_lv_set_allocator(void *(*alloc)(size_t), void *(*realloc)(void *, size_t),
                            void (*free)(void *));

/* A new empty log whose next entry gets offset next (>= 1); NULL when out of memory. */
crdtm_logval_t *crdtm_lv_new(uint64_t next);
void crdtm_lv_free(crdtm_logval_t *lv);
/* A deep copy; NULL when out of memory. */
crdtm_logval_t *crdtm_lv_copy(const crdtm_logval_t *lv);

/* Writes the record of an entry (ms, then crdtm_entry_encode's bytes) into out
 * (CRDTM_REC_MAX bytes); returns its length. */
size_t crdtm_lv_record(char *out, uint64_t ms, const char *key, size_t klen, uint64_t origin,
                       const void *delta, size_t dlen);
/* Splits a record; false when it is not one (bad varint, an entry crdtm_entry_decode refuses). */
bool crdtm_lv_record_parse(const char *rec, size_t rlen, uint64_t *ms, const char **entry,
                           size_t *elen);

/* Appends a record (copied) as entry added + 1. 0; -1 when it is not a record (nothing
 * appended), -2 when out of memory. */
int crdtm_lv_append(crdtm_logval_t *lv, const char *rec, size_t rlen);

/* Appends the record of an entry (crdtm_lv_record's bytes, encoded in place: the append path
 * makes no copy) as entry added + 1. Returns the record inside the log (valid until the log
 * changes) and its length in *rlen; NULL when out of memory (nothing appended). */
const char *crdtm_lv_append_entry(crdtm_logval_t *lv, uint64_t ms, const char *key, size_t klen,
                                  uint64_t origin, const void *delta, size_t dlen, size_t *rlen);

/* Removes every entry with an offset <= upto; returns how many. */
uint64_t crdtm_lv_trim(crdtm_logval_t *lv, uint64_t upto);

/* Offset of the oldest entry kept (added + 1 when empty). */
static inline uint64_t crdtm_lv_first(const crdtm_logval_t *lv)
{
    return lv->added - lv->len + 1;
}

/* it at the first entry with an offset >= offset. */
void crdtm_lv_seek(const crdtm_logval_t *lv, uint64_t offset, crdtm_lv_iter_t *it);
/* The entry at it into *r, it moved past it; false at the end. */
bool crdtm_lv_next(crdtm_lv_iter_t *it, crdtm_rec_t *r);

/* Offset of the newest entry older than ms (ms of its record < ms), 0 when none. */
uint64_t crdtm_lv_older_than(const crdtm_logval_t *lv, uint64_t ms);

/* Consumer groups. find: its index or -1. set: creates or moves the group (0, -1 when there
 * are CRDTM_GROUPS_MAX already or the name is empty or too long, -2 out of memory). del: true
 * if it was there. min_acked: the smallest acked of the groups; false when there is none. */
int crdtm_lv_group_find(const crdtm_logval_t *lv, const char *name, size_t nlen);
int crdtm_lv_group_set(crdtm_logval_t *lv, const char *name, size_t nlen, uint64_t acked);
bool crdtm_lv_group_del(crdtm_logval_t *lv, const char *name, size_t nlen);
bool crdtm_lv_min_acked(const crdtm_logval_t *lv, uint64_t *acked);

/* Memory the log holds, in bytes (about: the allocator's rounding aside). */
size_t crdtm_lv_mem(const crdtm_logval_t *lv);

/* The whole log as bytes (what rdb_save writes and rdb_load reads):
 *   1 varint(added) varint(len) varint(last_ms) varint(ngroups)
 *   [varint(name length) name varint(acked)] ... [varint(record length) record] ...
 * encode returns a new buffer (crdtm_lv_set_allocator's), *n its length; NULL when out of memory.
 * decode: a new log, or NULL with *why set (anything malformed: a bad version, varint, record or
 * count, a group acked past added, a duplicate group, trailing bytes). Never reads past len. */
char *crdtm_lv_encode(const crdtm_logval_t *lv, size_t *n);
crdtm_logval_t *crdtm_lv_decode(const char *buf, size_t len, const char **why);

#endif /* CRDTM_LOGVAL_H */
