/* crdt_module.h - shared state and helpers of crdt.so (the module's private header) */
#ifndef CRDT_MODULE_H
#define CRDT_MODULE_H

#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>

#include "crdt.h"
#include "redismodule.h"

/* The one module type holding any crdt_obj_t. Redis type names are exactly 9 characters. */
#define CRDTM_TYPE_NAME "crdtd-obj"
/* Version of the RDB value layout: one string holding the libcrdt binary encoding of the whole
 * state (docs/redis-module.md). Bump it when the layout around the encoding changes. */
#define CRDTM_ENCVER 1
/* Entries a change log keeps by default (log-max-len). */
#define CRDTM_LOG_MAX_LEN_DEFAULT 256

typedef struct crdtm_config {
    uint64_t node_id;        /* replica id for HLC timestamps, counter slots and OR-Set dots */
    uint32_t timeline_max;   /* bound of timelines this server creates; 0: unbounded */
    uint64_t max_drift_ms;   /* how far ahead a merged register timestamp may pull our clock */
    bool log_enabled;        /* writes append to the per-slot change log (changelog.c) */
    uint64_t log_max_len;    /* entries kept per log; 0: no length bound */
    uint64_t log_max_age_ms; /* entries older than this are trimmed; 0: no age bound */
    bool log_trim_acked;     /* trimming keeps what a consumer group has not acknowledged */
    bool rsx_enabled;        /* keep range fingerprints per slot for CRDT.RSX.* (rsx.c) */
} crdtm_config_t;

typedef struct crdtm_stats {
    unsigned long long keys[CRDT_TYPE_MAX + 1]; /* live objects by type (atomic: lazyfree) */
    unsigned long long merges;                  /* payloads joined by CRDT.MERGE */
    unsigned long long merges_changed;          /* of those, payloads that changed a key */
    unsigned long long payload_errors;          /* payloads rejected (decode or type) */
    unsigned long long writes;                  /* local mutations that changed a key */
    unsigned long long noops;                   /* local mutations that changed nothing */
    unsigned long long rdb_load_errors;         /* RDB values refused by rdb_load */
    unsigned long long clock_ahead; /* merged payloads stamped beyond max-clock-drift-ms ahead */
} crdtm_stats_t;

/* ---- the module's heap: Redis's allocator (used_memory and maxmemory see it), also handed to
 * libcrdt by RedisModule_OnLoad; libc's in sanitizer builds (no CRDTM_REDIS_ALLOC), which ASan
 * sees. Everything the module allocates goes through these four. */
#ifdef CRDTM_REDIS_ALLOC
static inline void *crdtm_alloc(size_t n)
{
    return RedisModule_Alloc(n);
}
static inline void *crdtm_calloc(size_t n, size_t size)
{
    if (size && n > SIZE_MAX / size) /* RedisModule_Calloc multiplies without a check */
        return NULL;
    return RedisModule_Calloc(n, size);
}
static inline void *crdtm_realloc(void *p, size_t n)
{
    /* Redis's zrealloc(p, 0) frees p and returns NULL; keep C's meaning (a live pointer). */
    return RedisModule_Realloc(p, n ? n : 1);
}
static inline void crdtm_free(void *p)
{
    if (p)
        RedisModule_Free(p);
}
#else
static inline void *crdtm_alloc(size_t n)
{
    return malloc(n);
}
static inline void *crdtm_calloc(size_t n, size_t size)
{
    return calloc(n, size);
}
static inline void *crdtm_realloc(void *p, size_t n)
{
    return realloc(p, n);
}
static inline void crdtm_free(void *p)
{
    free(p);
}
#endif

extern crdtm_config_t crdtm_cfg;
extern crdtm_stats_t crdtm_stats;
extern RedisModuleType *crdtm_type;
extern crdt_hlc_t crdtm_clock;

/* Opens `name` with `mode`. On success returns 0 with *key open (caller closes it) and *obj the
 * CRDT held (NULL if the key is empty). A key of a native or foreign module type gets a WRONGTYPE
 * reply, the key is closed, and -1 is returned. */
int crdtm_open(RedisModuleCtx *ctx, RedisModuleString *name, int mode, RedisModuleKey **key,
               crdt_obj_t **obj);

/* Stores a new object in an empty key opened for writing; the key owns it from then on. */
void crdtm_set_new(RedisModuleKey *key, crdt_obj_t *obj);

/* New empty object of a type as this server makes them (timelines get the configured bound). */
crdt_obj_t *crdtm_new_obj(crdt_type_t t);

/* Bookkeeping after a command changed `name`: keyspace notification `event`, its slot's
 * fingerprints marked for refresh, and, when `delta` is not NULL, replication of the delta as
 * CRDT.MERGE name <delta> and its change log entry (when delta is NULL the caller replicates
 * verbatim and logs itself). Borrows delta. */
void crdtm_changed(RedisModuleCtx *ctx, RedisModuleString *name, const char *event,
                   const crdt_obj_t *delta);

/* Replies with an error that names the libcrdt error code. */
int crdtm_reply_crdt_error(RedisModuleCtx *ctx, int err);

/* Counts an object in or out of INFO's keys-by-type. */
void crdtm_count_obj(const crdt_obj_t *o, int delta);

/* Change log (changelog.c). True when this context's writes must append to the log: the log is on,
 * this server is a primary and not loading (replicas and AOF replay get the primary's
 * CRDT.LOG.APPLY and CRDT.LOG.APPEND). */
bool crdtm_log_should_append(RedisModuleCtx *ctx);
/* Appends the entry of key and data (a record, logval.h) to the log of key's slot, creating
 * the log if the slot has none, and replicates it (and a trim). With merge the write itself is
 * replicated with it, as CRDT.LOG.APPLY (replicas merge data into key and append the entry; the
 * caller replicates nothing when this returns 0); without, the caller has replicated the write and
 * the entry goes as CRDT.LOG.APPEND. 0, or -1 after a warning in the server log (nothing
 * replicated). Borrows all. */
int crdtm_log_append(RedisModuleCtx *ctx, RedisModuleString *key, const void *data, size_t len,
                     bool merge);
/* The origin node id the appends that follow carry in their entry (0: none). CRDT.MERGE
 * ... ORIGIN id sets it around its own append and clears it. */
void crdtm_log_set_origin(uint64_t origin);
/* Appends the full state of obj as key's entry. */
int crdtm_log_state(RedisModuleCtx *ctx, RedisModuleString *key, const crdt_obj_t *obj);
/* Slot tags and keyspace subscriptions; 0 or -1. */
int crdtm_log_init(RedisModuleCtx *ctx);
void crdtm_log_info(RedisModuleInfoCtx *ctx);
/* A FLUSHDB/FLUSHALL is starting (rsx.c holds the module's one flush subscription): the log
 * values appends keep between writes are forgotten. */
void crdtm_log_on_flush(void);
int crdtm_cmd_log_read(RedisModuleCtx *ctx, RedisModuleString **argv, int argc);
int crdtm_cmd_log_list(RedisModuleCtx *ctx, RedisModuleString **argv, int argc);
int crdtm_cmd_log_apply(RedisModuleCtx *ctx, RedisModuleString **argv, int argc);
int crdtm_cmd_log_append(RedisModuleCtx *ctx, RedisModuleString **argv, int argc);
int crdtm_cmd_log_trim(RedisModuleCtx *ctx, RedisModuleString **argv, int argc);
int crdtm_cmd_log_group(RedisModuleCtx *ctx, RedisModuleString **argv, int argc);
int crdtm_cmd_log_info(RedisModuleCtx *ctx, RedisModuleString **argv, int argc);

/* CRDT.MERGE's join of one payload into key, with its bookkeeping (notification, fingerprints,
 * clock) but no reply, replication or log (commands.c). 1 if the key changed, 0 if not, -1 with
 * a message for the user in msg. */
int crdtm_merge_one(RedisModuleCtx *ctx, RedisModuleString *key, const char *payload, size_t len,
                    char *msg, size_t cap);
int crdtm_cmd_log_poll(RedisModuleCtx *ctx, RedisModuleString **argv, int argc);

/* Anti-entropy (rsx.c). Notes that a key of db 0 changed (a command wrote it): its slot's
 * fingerprints are brought up to date when next read, or here when the slot's list of changed
 * names outgrew it (which opens the slot's keys). */
void crdtm_rsx_touch(RedisModuleCtx *ctx, const char *name, size_t len);
/* crdtm_rsx_touch for keyspace notifications (deleted, expired, evicted, restored, loaded): notes
 * the name and never opens a key (a slot whose list outgrew it is refreshed by a timer). An
 * "expired" event may come from active expiry, which walks the db's expires table while it
 * notifies: a key opened there that had expired too would be deleted under that walk. */
void crdtm_rsx_note(RedisModuleCtx *ctx, const char *name, size_t len);
/* Forgets every slot's items (db 0's keys are others now: a SWAPDB with db 0, whose handler in
 * changelog.c then notes every name of the new db 0 with crdtm_rsx_note). */
void crdtm_rsx_reset(void);
int crdtm_rsx_init(RedisModuleCtx *ctx);
void crdtm_rsx_info(RedisModuleInfoCtx *ctx);
int crdtm_cmd_rsx_open(RedisModuleCtx *ctx, RedisModuleString **argv, int argc);
int crdtm_cmd_rsx_recv(RedisModuleCtx *ctx, RedisModuleString **argv, int argc);
int crdtm_cmd_rsx_diffs(RedisModuleCtx *ctx, RedisModuleString **argv, int argc);
int crdtm_cmd_rsx_close(RedisModuleCtx *ctx, RedisModuleString **argv, int argc);
int crdtm_cmd_rsx_digest(RedisModuleCtx *ctx, RedisModuleString **argv, int argc);
int crdtm_cmd_rsx_items(RedisModuleCtx *ctx, RedisModuleString **argv, int argc);

/* Registers every CRDT.* command with its flags, key specs and docs (commands.c). */
int crdtm_register_commands(RedisModuleCtx *ctx);

#endif /* CRDT_MODULE_H */
