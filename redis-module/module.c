/* module.c - crdt.so: load-time config, the CRDT module type (RDB, AOF, digest), INFO */
#define REDISMODULE_MAIN
#include "crdt_module.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

crdtm_config_t crdtm_cfg = {
    .node_id = 0,
    .timeline_max = 0,
    .max_drift_ms = 24ull * 3600 * 1000,
    .log_enabled = true,
    .log_max_len = CRDTM_LOG_MAX_LEN_DEFAULT,
    .log_max_age_ms = 0,
    .log_trim_acked = false,
    .rsx_enabled = true,
};
crdtm_stats_t crdtm_stats;
RedisModuleType *crdtm_type;
crdt_hlc_t crdtm_clock;

/* ---- libcrdt's heap goes through Redis's allocator ------------------------------------------ *
 * RedisModule_OnLoad hands RedisModule_Alloc & co. to libcrdt (crdt_set_allocator) and the module
 * allocates through crdtm_alloc & co. (crdt_module.h), so used_memory, maxmemory and INFO see CRDT
 * keys like native ones. Sanitizer builds keep libc's malloc for both: ASan must see them. */

/* ---- object bookkeeping --------------------------------------------------------------------- */

void crdtm_count_obj(const crdt_obj_t *o, int delta)
{
    int t = (int)crdt_obj_type(o);
    if (t >= CRDT_TYPE_MIN && t <= CRDT_TYPE_MAX) {
        /* Atomic: FLUSHALL ASYNC frees values on a background thread. */
        if (delta > 0)
            __atomic_add_fetch(&crdtm_stats.keys[t], 1, __ATOMIC_RELAXED);
        else
            __atomic_sub_fetch(&crdtm_stats.keys[t], 1, __ATOMIC_RELAXED);
    }
}

crdt_obj_t *crdtm_new_obj(crdt_type_t t)
{
    if (t == CRDT_TIMELINE)
        return crdt_timeline_new(crdtm_cfg.timeline_max);
    return crdt_obj_new(t);
}

void crdtm_set_new(RedisModuleKey *key, crdt_obj_t *obj)
{
    RedisModule_ModuleTypeSetValue(key, crdtm_type, obj);
    crdtm_count_obj(obj, +1);
}

int crdtm_open(RedisModuleCtx *ctx, RedisModuleString *name, int mode, RedisModuleKey **key,
               crdt_obj_t **obj)
{
    RedisModuleKey *k = RedisModule_OpenKey(ctx, name, mode);
    int kt = RedisModule_KeyType(k);
    *obj = NULL;
    if (kt != REDISMODULE_KEYTYPE_EMPTY) {
        if (kt != REDISMODULE_KEYTYPE_MODULE || RedisModule_ModuleTypeGetType(k) != crdtm_type) {
            RedisModule_CloseKey(k);
            RedisModule_ReplyWithError(ctx, REDISMODULE_ERRORMSG_WRONGTYPE);
            return -1;
        }
        *obj = RedisModule_ModuleTypeGetValue(k);
    }
    *key = k;
    return 0;
}

int crdtm_reply_crdt_error(RedisModuleCtx *ctx, int err)
{
    switch (err) {
    case CRDT_EOVERFLOW:
        return RedisModule_ReplyWithError(ctx, "ERR increment or decrement would overflow");
    case CRDT_ENOMEM: return RedisModule_ReplyWithError(ctx, "ERR out of memory");
    case CRDT_EINVAL: return RedisModule_ReplyWithError(ctx, "ERR invalid argument");
    case CRDT_ETYPE: return RedisModule_ReplyWithError(ctx, REDISMODULE_ERRORMSG_WRONGTYPE);
    case CRDT_ENOTSUP:
        return RedisModule_ReplyWithError(ctx, "NOTSUP a gcounter only grows: it cannot be deleted");
    default: return RedisModule_ReplyWithError(ctx, "ERR internal error in libcrdt");
    }
}

void crdtm_changed(RedisModuleCtx *ctx, RedisModuleString *name, const char *event,
                   const crdt_obj_t *delta)
{
    if (delta) {
        /* One buffer for every write (commands run on the main thread only); a huge delta does
         * not keep its memory. */
        static crdt_buf_t b;
        b.len = 0;
        if (crdt_obj_encode(delta, &b) == 0) {
            /* With the log, one propagated command (CRDT.LOG.APPLY) carries the delta and its
             * entry; CRDT.MERGE when there is no log or the append failed. */
            if (!crdtm_log_should_append(ctx) ||
                crdtm_log_append(ctx, name, b.data, b.len, true) < 0)
                RedisModule_Replicate(ctx, "CRDT.MERGE", "sb", name, (const char *)b.data, b.len);
        } else { /* out of memory: the whole command still reaches replicas, which redo the join */
            RedisModule_ReplicateVerbatim(ctx);
        }
        if (b.cap > 1u << 20)
            crdt_buf_free(&b);
    }
    RedisModule_NotifyKeyspaceEvent(ctx, REDISMODULE_NOTIFY_MODULE, event, name);
    size_t len;
    const char *p = RedisModule_StringPtrLen(name, &len);
    crdtm_rsx_touch(ctx, p, len);
}

/* ---- module type methods -------------------------------------------------------------------- */

static void *type_rdb_load(RedisModuleIO *rdb, int encver)
{
    if (encver != CRDTM_ENCVER) {
        RedisModule_LogIOError(rdb, "warning",
                               "crdt: RDB value has encoding version %d, this module reads %d",
                               encver, CRDTM_ENCVER);
        crdtm_stats.rdb_load_errors++;
        return NULL;
    }
    size_t len = 0;
    char *data = RedisModule_LoadStringBuffer(rdb, &len);
    if (RedisModule_IsIOError(rdb) || !data) {
        if (data)
            RedisModule_Free(data);
        RedisModule_LogIOError(rdb, "warning", "crdt: RDB value is truncated");
        crdtm_stats.rdb_load_errors++;
        return NULL;
    }
    crdt_error_t err;
    crdt_obj_t *o = crdt_obj_decode(data, len, &err);
    RedisModule_Free(data);
    if (!o) {
        RedisModule_LogIOError(rdb, "warning", "crdt: RDB value rejected at byte %zu: %s",
                               err.offset, err.text);
        crdtm_stats.rdb_load_errors++;
        return NULL;
    }
    crdtm_count_obj(o, +1);
    return o;
}

static void type_rdb_save(RedisModuleIO *rdb, void *value)
{
    crdt_buf_t b = {0};
    if (crdt_obj_encode(value, &b) < 0) {
        /* Cannot happen with Redis's allocator (it aborts on OOM); an empty string makes the
         * load fail loudly rather than silently store a wrong value. */
        RedisModule_LogIOError(rdb, "warning", "crdt: out of memory encoding a value");
    }
    RedisModule_SaveStringBuffer(rdb, (const char *)b.data, b.len);
    crdt_buf_free(&b);
}

static void type_aof_rewrite(RedisModuleIO *aof, RedisModuleString *key, void *value)
{
    crdt_buf_t b = {0};
    if (crdt_obj_encode(value, &b) == 0)
        RedisModule_EmitAOF(aof, "CRDT.MERGE", "sb", key, (const char *)b.data, b.len);
    else
        RedisModule_LogIOError(aof, "warning", "crdt: out of memory encoding a value");
    crdt_buf_free(&b);
}

static size_t type_mem_usage(const void *value)
{
    crdt_stats_t st;
    crdt_obj_stats(value, &st);
    return st.memory;
}

static void type_digest(RedisModuleDigest *md, void *value)
{
    /* The encoding is canonical: equal states digest equally on every server. */
    crdt_buf_t b = {0};
    if (crdt_obj_encode(value, &b) == 0)
        RedisModule_DigestAddStringBuffer(md, (const char *)b.data, b.len);
    RedisModule_DigestEndSequence(md);
    crdt_buf_free(&b);
}

static void type_free(void *value)
{
    crdtm_count_obj(value, -1);
    crdt_obj_free(value);
}

static void *type_copy(RedisModuleString *from, RedisModuleString *to, const void *value)
{
    (void)from;
    (void)to;
    crdt_obj_t *o = crdt_obj_clone(value);
    if (o)
        crdtm_count_obj(o, +1);
    return o;
}

/* ---- INFO crdt ------------------------------------------------------------------------------ */

static void info_cb(RedisModuleInfoCtx *ctx, int for_crash_report)
{
    (void)for_crash_report;
    RedisModule_InfoAddSection(ctx, NULL); /* section "crdt", fields "crdt_*" */
    RedisModule_InfoAddFieldULongLong(ctx, "node_id", crdtm_cfg.node_id);
    RedisModule_InfoAddFieldULongLong(ctx, "timeline_max_size", crdtm_cfg.timeline_max);
    RedisModule_InfoAddFieldLongLong(ctx, "encoding_version", CRDTM_ENCVER);
    RedisModule_InfoAddFieldLongLong(ctx, "codec_version", CRDT_CODEC_VERSION);
    unsigned long long total = 0;
    for (int t = CRDT_TYPE_MIN; t <= CRDT_TYPE_MAX; t++) {
        char field[32];
        unsigned long long n = __atomic_load_n(&crdtm_stats.keys[t], __ATOMIC_RELAXED);
        snprintf(field, sizeof(field), "keys_%s", crdt_type_name((crdt_type_t)t));
        RedisModule_InfoAddFieldULongLong(ctx, field, n);
        total += n;
    }
    RedisModule_InfoAddFieldULongLong(ctx, "keys", total);
    RedisModule_InfoAddFieldULongLong(ctx, "writes", crdtm_stats.writes);
    RedisModule_InfoAddFieldULongLong(ctx, "noop_writes", crdtm_stats.noops);
    RedisModule_InfoAddFieldULongLong(ctx, "merges", crdtm_stats.merges);
    RedisModule_InfoAddFieldULongLong(ctx, "merges_changed", crdtm_stats.merges_changed);
    RedisModule_InfoAddFieldULongLong(ctx, "clock_ahead", crdtm_stats.clock_ahead);
    RedisModule_InfoAddFieldULongLong(ctx, "payload_errors", crdtm_stats.payload_errors);
    RedisModule_InfoAddFieldULongLong(ctx, "rdb_load_errors", crdtm_stats.rdb_load_errors);
    crdtm_log_info(ctx);
    crdtm_rsx_info(ctx);
}

/* ---- load ----------------------------------------------------------------------------------- */

static int parse_u64(RedisModuleString *s, uint64_t max, uint64_t *out)
{
    long long v;
    if (RedisModule_StringToLongLong(s, &v) != REDISMODULE_OK || v < 0 || (uint64_t)v > max)
        return -1;
    *out = (uint64_t)v;
    return 0;
}

/* "yes" or "no" (any case) into *out; -1 for anything else. */
static int parse_yes_no(RedisModuleString *s, bool *out)
{
    const char *yn = RedisModule_StringPtrLen(s, NULL);
    if (strcasecmp(yn, "yes") && strcasecmp(yn, "no"))
        return -1;
    *out = strcasecmp(yn, "yes") == 0;
    return 0;
}

static int parse_args(RedisModuleCtx *ctx, RedisModuleString **argv, int argc)
{
    for (int i = 0; i < argc; i += 2) {
        const char *name = RedisModule_StringPtrLen(argv[i], NULL);
        if (i + 1 >= argc) {
            RedisModule_Log(ctx, "warning", "crdt: module argument '%s' needs a value", name);
            return -1;
        }
        uint64_t v;
        if (strcasecmp(name, "node-id") == 0) {
            if (parse_u64(argv[i + 1], CRDT_REPLICA_MAX, &v) < 0 || v == 0)
                goto bad;
            crdtm_cfg.node_id = v;
        } else if (strcasecmp(name, "timeline-max-size") == 0) {
            if (parse_u64(argv[i + 1], UINT32_MAX, &v) < 0)
                goto bad;
            crdtm_cfg.timeline_max = (uint32_t)v;
        } else if (strcasecmp(name, "log") == 0) {
            if (parse_yes_no(argv[i + 1], &crdtm_cfg.log_enabled) < 0)
                goto bad;
        } else if (strcasecmp(name, "rsx") == 0) {
            if (parse_yes_no(argv[i + 1], &crdtm_cfg.rsx_enabled) < 0)
                goto bad;
        } else if (strcasecmp(name, "log-trim-acked") == 0) {
            if (parse_yes_no(argv[i + 1], &crdtm_cfg.log_trim_acked) < 0)
                goto bad;
        } else if (strcasecmp(name, "log-max-len") == 0) {
            if (parse_u64(argv[i + 1], 1ull << 40, &v) < 0)
                goto bad;
            crdtm_cfg.log_max_len = v;
        } else if (strcasecmp(name, "log-max-age-ms") == 0) {
            if (parse_u64(argv[i + 1], UINT64_MAX >> 2, &v) < 0)
                goto bad;
            crdtm_cfg.log_max_age_ms = v;
        } else if (strcasecmp(name, "max-clock-drift-ms") == 0) {
            if (parse_u64(argv[i + 1], UINT64_MAX >> 2, &v) < 0)
                goto bad;
            crdtm_cfg.max_drift_ms = v;
        } else {
            RedisModule_Log(ctx, "warning",
                            "crdt: unknown module argument '%s' (known: node-id, "
                            "timeline-max-size, max-clock-drift-ms, log, log-max-len, "
                            "log-max-age-ms, log-trim-acked, rsx)",
                            name);
            return -1;
        }
        continue;
    bad:
        RedisModule_Log(ctx, "warning", "crdt: bad value '%s' for module argument '%s'",
                        RedisModule_StringPtrLen(argv[i + 1], NULL), name);
        return -1;
    }
    if (!crdtm_cfg.node_id) {
        RedisModule_Log(ctx, "warning",
                        "crdt: the module needs 'node-id N' (1..2^63-1, unique per server): "
                        "--loadmodule crdt.so node-id 7");
        return -1;
    }
    return 0;
}

__attribute__((visibility("default"))) int RedisModule_OnLoad(RedisModuleCtx *ctx,
                                                              RedisModuleString **argv, int argc);
int RedisModule_OnLoad(RedisModuleCtx *ctx, RedisModuleString **argv, int argc)
{
    if (RedisModule_Init(ctx, "crdt", 1, REDISMODULE_APIVER_1) == REDISMODULE_ERR)
        return REDISMODULE_ERR;
#ifdef CRDTM_REDIS_ALLOC
    /* After RedisModule_Init (which fills the API pointers), before libcrdt allocates anything. */
    crdt_set_allocator(&(crdt_allocator_t){crdtm_alloc, crdtm_realloc, crdtm_free});
#endif
    if (parse_args(ctx, argv, argc) < 0)
        return REDISMODULE_ERR;
    crdt_hlc_init(&crdtm_clock, crdtm_cfg.node_id, crdtm_cfg.max_drift_ms);

    RedisModule_SetModuleOptions(ctx, REDISMODULE_OPTIONS_HANDLE_IO_ERRORS);
    RedisModuleTypeMethods tm = {
        .version = REDISMODULE_TYPE_METHOD_VERSION,
        .rdb_load = type_rdb_load,
        .rdb_save = type_rdb_save,
        .aof_rewrite = type_aof_rewrite,
        .mem_usage = type_mem_usage,
        .digest = type_digest,
        .free = type_free,
        .copy = type_copy,
    };
    crdtm_type = RedisModule_CreateDataType(ctx, CRDTM_TYPE_NAME, CRDTM_ENCVER, &tm);
    if (!crdtm_type) {
        RedisModule_Log(ctx, "warning", "crdt: cannot register data type %s", CRDTM_TYPE_NAME);
        return REDISMODULE_ERR;
    }
    if (crdtm_register_commands(ctx) == REDISMODULE_ERR)
        return REDISMODULE_ERR;
    if (crdtm_log_init(ctx) < 0 || crdtm_rsx_init(ctx) < 0)
        return REDISMODULE_ERR;
    RedisModule_RegisterInfoFunc(ctx, info_cb);
    RedisModule_Log(ctx, "notice",
                    "crdt: node-id %llu, timeline-max-size %u, change log %s "
                    "(max-len %llu, max-age-ms %llu, trim-acked %s), anti-entropy %s",
                    (unsigned long long)crdtm_cfg.node_id, crdtm_cfg.timeline_max,
                    crdtm_cfg.log_enabled ? "on" : "off", (unsigned long long)crdtm_cfg.log_max_len,
                    (unsigned long long)crdtm_cfg.log_max_age_ms,
                    crdtm_cfg.log_trim_acked ? "yes" : "no", crdtm_cfg.rsx_enabled ? "on" : "off");
    return REDISMODULE_OK;
}
