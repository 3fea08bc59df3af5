/* redismodule.h - the part of the Redis Modules API (Redis 7.0 ABI) that crdt.so uses
 *
 * Written for crdtd from the Redis Modules API reference; no distribution package ships the
 * header. Redis hands a module one function, RedisModule_GetApi (the first word of the context
 * passed to RedisModule_OnLoad); RedisModule_Init below asks it for every function listed here and
 * fails the load if one is missing, so an older server refuses the module instead of letting it
 * call through a NULL pointer. Structs passed to Redis (type methods, command info) must keep the
 * exact layout of Redis 7.0. Define REDISMODULE_MAIN in exactly one translation unit: that one
 * holds the function pointers, the others see extern declarations.
 */
#ifndef CRDT_REDISMODULE_H
#define CRDT_REDISMODULE_H

#include <stddef.h>
#include <stdint.h>

#define REDISMODULE_OK 0
#define REDISMODULE_ERR 1
#define REDISMODULE_APIVER_1 1

/* OpenKey modes */
#define REDISMODULE_READ (1 << 0)
#define REDISMODULE_WRITE (1 << 1)

/* KeyType results */
#define REDISMODULE_KEYTYPE_EMPTY 0
#define REDISMODULE_NO_EXPIRE -1 /* RedisModule_GetExpire of a key without a TTL */
#define REDISMODULE_KEYTYPE_STRING 1
#define REDISMODULE_KEYTYPE_LIST 2
#define REDISMODULE_KEYTYPE_HASH 3
#define REDISMODULE_KEYTYPE_SET 4
#define REDISMODULE_KEYTYPE_ZSET 5
#define REDISMODULE_KEYTYPE_MODULE 6
#define REDISMODULE_KEYTYPE_STREAM 7

#define REDISMODULE_POSTPONED_LEN -1

#define REDISMODULE_ERRORMSG_WRONGTYPE                                                             \
    "WRONGTYPE Operation against a key holding the wrong kind of value"

/* SetModuleOptions: rdb_load checks RedisModule_IsIOError instead of Redis aborting on a short
 * read, so a truncated value (RESTORE payload, diskless load) fails cleanly. */
#define REDISMODULE_OPTIONS_HANDLE_IO_ERRORS (1 << 0)

/* Keyspace notification classes; module types notify as class 'd'. */
#define REDISMODULE_NOTIFY_GENERIC (1 << 2)
#define REDISMODULE_NOTIFY_EXPIRED (1 << 8)
#define REDISMODULE_NOTIFY_EVICTED (1 << 9)
#define REDISMODULE_NOTIFY_STREAM (1 << 10)
#define REDISMODULE_NOTIFY_LOADED (1 << 12) /* module-only: a key loaded from RDB */
#define REDISMODULE_NOTIFY_MODULE (1 << 13)

/* RedisModule_Call reply types */
#define REDISMODULE_REPLY_STRING 0
#define REDISMODULE_REPLY_ERROR 1
#define REDISMODULE_REPLY_INTEGER 2
#define REDISMODULE_REPLY_ARRAY 3
#define REDISMODULE_REPLY_NULL 4

/* Streams (RedisModule_Stream*, Redis 6.2+) */
#define REDISMODULE_STREAM_ADD_AUTOID (1 << 0)
#define REDISMODULE_STREAM_ITERATOR_EXCLUSIVE (1 << 0)
#define REDISMODULE_STREAM_ITERATOR_REVERSE (1 << 1)
#define REDISMODULE_STREAM_TRIM_APPROX (1 << 0)
typedef struct RedisModuleStreamID {
    uint64_t ms;
    uint64_t seq;
} RedisModuleStreamID;

/* GetContextFlags bits */
#define REDISMODULE_CTX_FLAGS_LUA (1 << 0)
#define REDISMODULE_CTX_FLAGS_MULTI (1 << 1)
#define REDISMODULE_CTX_FLAGS_MASTER (1 << 2)
#define REDISMODULE_CTX_FLAGS_SLAVE (1 << 3)
#define REDISMODULE_CTX_FLAGS_CLUSTER (1 << 5)
#define REDISMODULE_CTX_FLAGS_REPLICATED (1 << 12)
#define REDISMODULE_CTX_FLAGS_LOADING (1 << 13)

/* Key-spec flags (SetCommandInfo) */
#define REDISMODULE_CMD_KEY_RO (1ULL << 0)
#define REDISMODULE_CMD_KEY_RW (1ULL << 1)
#define REDISMODULE_CMD_KEY_OW (1ULL << 2)
#define REDISMODULE_CMD_KEY_RM (1ULL << 3)
#define REDISMODULE_CMD_KEY_ACCESS (1ULL << 4)
#define REDISMODULE_CMD_KEY_UPDATE (1ULL << 5)
#define REDISMODULE_CMD_KEY_INSERT (1ULL << 6)
#define REDISMODULE_CMD_KEY_DELETE (1ULL << 7)
#define REDISMODULE_CMD_KEY_NOT_KEY (1ULL << 8)
#define REDISMODULE_CMD_KEY_INCOMPLETE (1ULL << 9)
#define REDISMODULE_CMD_KEY_VARIABLE_FLAGS (1ULL << 10)

/* Command argument flags */
#define REDISMODULE_CMD_ARG_NONE 0
#define REDISMODULE_CMD_ARG_OPTIONAL (1 << 0)
#define REDISMODULE_CMD_ARG_MULTIPLE (1 << 1)
#define REDISMODULE_CMD_ARG_MULTIPLE_TOKEN (1 << 2)

typedef enum {
    REDISMODULE_ARG_TYPE_STRING,
    REDISMODULE_ARG_TYPE_INTEGER,
    REDISMODULE_ARG_TYPE_DOUBLE,
    REDISMODULE_ARG_TYPE_KEY,
    REDISMODULE_ARG_TYPE_PATTERN,
    REDISMODULE_ARG_TYPE_UNIX_TIME,
    REDISMODULE_ARG_TYPE_PURE_TOKEN,
    REDISMODULE_ARG_TYPE_ONEOF, /* needs subargs */
    REDISMODULE_ARG_TYPE_BLOCK, /* needs subargs */
} RedisModuleCommandArgType;

typedef enum {
    REDISMODULE_KSPEC_BS_INVALID = 0, /* zero: the value of an absent field */
    REDISMODULE_KSPEC_BS_UNKNOWN,
    REDISMODULE_KSPEC_BS_INDEX,
    REDISMODULE_KSPEC_BS_KEYWORD,
} RedisModuleKeySpecBeginSearchType;

typedef enum {
    REDISMODULE_KSPEC_FK_OMITTED = 0, /* zero: one key at the begin-search position */
    REDISMODULE_KSPEC_FK_UNKNOWN,
    REDISMODULE_KSPEC_FK_RANGE,
    REDISMODULE_KSPEC_FK_KEYNUM,
} RedisModuleKeySpecFindKeysType;

typedef struct RedisModuleCtx RedisModuleCtx;
typedef struct RedisModuleCommand RedisModuleCommand;
typedef struct RedisModuleKey RedisModuleKey;
typedef struct RedisModuleString RedisModuleString;
typedef struct RedisModuleIO RedisModuleIO;
typedef struct RedisModuleType RedisModuleType;
typedef struct RedisModuleDigest RedisModuleDigest;
typedef struct RedisModuleInfoCtx RedisModuleInfoCtx;
typedef struct RedisModuleDefragCtx RedisModuleDefragCtx;
typedef struct RedisModuleCallReply RedisModuleCallReply;
typedef struct RedisModuleScanCursor RedisModuleScanCursor;

/* Server events (SubscribeToServerEvent) */
typedef struct RedisModuleEvent {
    uint64_t id;
    uint64_t dataver;
} RedisModuleEvent;
#define REDISMODULE_EVENT_FLUSHDB 2
#define REDISMODULE_SUBEVENT_FLUSHDB_END 1
typedef struct RedisModuleFlushInfo {
    uint64_t version;
    int32_t sync;
    int32_t dbnum; /* -1: every db */
} RedisModuleFlushInfo;
typedef struct RedisModuleSwapDbInfo { /* REDISMODULE_EVENT_SWAPDB's data (version 1) */
    uint64_t version;
    int32_t dbnum_first;
    int32_t dbnum_second;
} RedisModuleSwapDbInfo;
typedef void (*RedisModuleEventCallback)(RedisModuleCtx *ctx, RedisModuleEvent eid,
                                         uint64_t subevent, void *data);

typedef int (*RedisModuleCmdFunc)(RedisModuleCtx *ctx, RedisModuleString **argv, int argc);
typedef void (*RedisModuleInfoFunc)(RedisModuleInfoCtx *ctx, int for_crash_report);
typedef void (*RedisModuleTimerProc)(RedisModuleCtx *ctx, void *data);
typedef void (*RedisModuleScanCB)(RedisModuleCtx *ctx, RedisModuleString *keyname,
                                  RedisModuleKey *key, void *privdata);
typedef int (*RedisModuleNotificationFunc)(RedisModuleCtx *ctx, int type, const char *event,
                                           RedisModuleString *key);

typedef void *(*RedisModuleTypeLoadFunc)(RedisModuleIO *rdb, int encver);
typedef void (*RedisModuleTypeSaveFunc)(RedisModuleIO *rdb, void *value);
typedef void (*RedisModuleTypeRewriteFunc)(RedisModuleIO *aof, RedisModuleString *key, void *value);
typedef size_t (*RedisModuleTypeMemUsageFunc)(const void *value);
typedef void (*RedisModuleTypeDigestFunc)(RedisModuleDigest *digest, void *value);
typedef void (*RedisModuleTypeFreeFunc)(void *value);
typedef int (*RedisModuleTypeAuxLoadFunc)(RedisModuleIO *rdb, int encver, int when);
typedef void (*RedisModuleTypeAuxSaveFunc)(RedisModuleIO *rdb, int when);
typedef size_t (*RedisModuleTypeFreeEffortFunc)(RedisModuleString *key, const void *value);
typedef void (*RedisModuleTypeUnlinkFunc)(RedisModuleString *key, const void *value);
typedef void *(*RedisModuleTypeCopyFunc)(RedisModuleString *fromkey, RedisModuleString *tokey,
                                         const void *value);
typedef int (*RedisModuleTypeDefragFunc)(RedisModuleDefragCtx *ctx, RedisModuleString *key,
                                         void **value);

/* Version 3 of the type methods: Redis reads the aux fields from version 2 on and free_effort ..
 * defrag from version 3 on; version 4's mem_usage2 .. copy2 we do not declare. */
#define REDISMODULE_TYPE_METHOD_VERSION 3
typedef struct RedisModuleTypeMethods {
    uint64_t version;
    RedisModuleTypeLoadFunc rdb_load;
    RedisModuleTypeSaveFunc rdb_save;
    RedisModuleTypeRewriteFunc aof_rewrite;
    RedisModuleTypeMemUsageFunc mem_usage;
    RedisModuleTypeDigestFunc digest;
    RedisModuleTypeFreeFunc free;
    RedisModuleTypeAuxLoadFunc aux_load;
    RedisModuleTypeAuxSaveFunc aux_save;
    int aux_save_triggers;
    RedisModuleTypeFreeEffortFunc free_effort;
    RedisModuleTypeUnlinkFunc unlink;
    RedisModuleTypeCopyFunc copy;
    RedisModuleTypeDefragFunc defrag;
} RedisModuleTypeMethods;

/* Command info (SetCommandInfo). Redis reads arrays of these with the sizes given in the version
 * record, so the layouts below are the ABI of REDISMODULE_COMMAND_INFO_VERSION 1. */
typedef struct RedisModuleCommandArg {
    const char *name;
    RedisModuleCommandArgType type;
    int key_spec_index; /* for KEY arguments: index into key_specs; -1 otherwise */
    const char *token;
    const char *summary;
    const char *since;
    int flags; /* REDISMODULE_CMD_ARG_* */
    const char *deprecated_since;
    struct RedisModuleCommandArg *subargs;
    const char *display_text;
} RedisModuleCommandArg;

typedef struct RedisModuleCommandHistoryEntry {
    const char *since;
    const char *changes;
} RedisModuleCommandHistoryEntry;

typedef struct RedisModuleCommandKeySpec {
    const char *notes;
    uint64_t flags; /* REDISMODULE_CMD_KEY_* */
    RedisModuleKeySpecBeginSearchType begin_search_type;
    union {
        struct {
            int pos;
        } index;
        struct {
            const char *keyword;
            int startfrom;
        } keyword;
    } bs;
    RedisModuleKeySpecFindKeysType find_keys_type;
    union {
        struct {
            int lastkey; /* relative to the begin-search result; negative: from the end */
            int keystep;
            int limit;
        } range;
        struct {
            int keynumidx;
            int firstkey;
            int keystep;
        } keynum;
    } fk;
} RedisModuleCommandKeySpec;

typedef struct RedisModuleCommandInfoVersion {
    int version;
    size_t sizeof_historyentry;
    size_t sizeof_keyspec;
    size_t sizeof_arg;
} RedisModuleCommandInfoVersion;

static const RedisModuleCommandInfoVersion RedisModule_CurrentCommandInfoVersion = {
    .version = 1,
    .sizeof_historyentry = sizeof(RedisModuleCommandHistoryEntry),
    .sizeof_keyspec = sizeof(RedisModuleCommandKeySpec),
    .sizeof_arg = sizeof(RedisModuleCommandArg),
};
#define REDISMODULE_COMMAND_INFO_VERSION (&RedisModule_CurrentCommandInfoVersion)

typedef struct RedisModuleCommandInfo {
    const RedisModuleCommandInfoVersion *version;
    const char *summary;
    const char *complexity;
    const char *since;
    RedisModuleCommandHistoryEntry *history;
    const char *tips;
    int arity;                            /* >0 exact, -N at least N, counting the command name */
    RedisModuleCommandKeySpec *key_specs; /* zero-terminated */
    RedisModuleCommandArg *args;          /* zero-terminated */
} RedisModuleCommandInfo;

/* Every API function we use: X(return type, name without the RedisModule_ prefix, parameters). */
#define REDISMODULE_API_FUNCS(X)                                                                   \
    X(void, SetModuleAttribs, (RedisModuleCtx * ctx, const char *name, int ver, int apiver))       \
    X(int, IsModuleNameBusy, (const char *name))                                                   \
    X(void, SetModuleOptions, (RedisModuleCtx * ctx, int options))                                 \
    X(int, CreateCommand,                                                                          \
      (RedisModuleCtx * ctx, const char *name, RedisModuleCmdFunc f, const char *strflags,         \
       int firstkey, int lastkey, int keystep))                                                    \
    X(RedisModuleCommand *, GetCommand, (RedisModuleCtx * ctx, const char *name))                  \
    X(int, SetCommandInfo, (RedisModuleCommand * cmd, const RedisModuleCommandInfo *info))         \
    X(int, IsKeysPositionRequest, (RedisModuleCtx * ctx))                                          \
    X(void, KeyAtPos, (RedisModuleCtx * ctx, int pos))                                             \
    X(void, KeyAtPosWithFlags, (RedisModuleCtx * ctx, int pos, int flags))                         \
    X(int, GetContextFlags, (RedisModuleCtx * ctx))                                                \
    X(int, GetSelectedDb, (RedisModuleCtx * ctx))                                                  \
    X(int, SelectDb, (RedisModuleCtx * ctx, int newid))                                            \
    X(RedisModuleScanCursor *, ScanCursorCreate, (void))                                           \
    X(void, ScanCursorDestroy, (RedisModuleScanCursor * cursor))                                   \
    X(int, Scan,                                                                                   \
      (RedisModuleCtx * ctx, RedisModuleScanCursor * cursor, RedisModuleScanCB fn,                 \
       void *privdata))                                                                            \
    X(uint64_t, CreateTimer,                                                                       \
      (RedisModuleCtx * ctx, long long period, RedisModuleTimerProc callback, void *data))         \
    X(long long, Milliseconds, (void))                                                             \
    X(int, WrongArity, (RedisModuleCtx * ctx))                                                     \
    X(int, ReplyWithLongLong, (RedisModuleCtx * ctx, long long ll))                                \
    X(int, ReplyWithError, (RedisModuleCtx * ctx, const char *err))                                \
    X(int, ReplyWithSimpleString, (RedisModuleCtx * ctx, const char *msg))                         \
    X(int, ReplyWithArray, (RedisModuleCtx * ctx, long len))                                       \
    X(void, ReplySetArrayLength, (RedisModuleCtx * ctx, long len))                                 \
    X(int, ReplyWithStringBuffer, (RedisModuleCtx * ctx, const char *buf, size_t len))             \
    X(int, ReplyWithCString, (RedisModuleCtx * ctx, const char *buf))                              \
    X(int, ReplyWithString, (RedisModuleCtx * ctx, RedisModuleString * str))                       \
    X(int, ReplyWithNull, (RedisModuleCtx * ctx))                                                  \
    X(int, ReplyWithDouble, (RedisModuleCtx * ctx, double d))                                      \
    X(RedisModuleKey *, OpenKey, (RedisModuleCtx * ctx, RedisModuleString * name, int mode))       \
    X(void, CloseKey, (RedisModuleKey * key))                                                      \
    X(int, KeyType, (RedisModuleKey * key))                                                        \
    X(size_t, ValueLength, (RedisModuleKey * key))                                                 \
    X(int, KeyExists, (RedisModuleCtx * ctx, RedisModuleString * name))                            \
    X(int, DeleteKey, (RedisModuleKey * key))                                                      \
    X(long long, GetExpire, (RedisModuleKey * key))                                                \
    X(RedisModuleString *, CreateString, (RedisModuleCtx * ctx, const char *ptr, size_t len))      \
    X(void, FreeString, (RedisModuleCtx * ctx, RedisModuleString * str))                           \
    X(const char *, StringPtrLen, (const RedisModuleString *str, size_t *len))                     \
    X(int, StringToLongLong, (const RedisModuleString *str, long long *ll))                        \
    X(int, StringToDouble, (const RedisModuleString *str, double *d))                              \
    X(int, Replicate, (RedisModuleCtx * ctx, const char *cmdname, const char *fmt, ...))           \
    X(int, ReplicateVerbatim, (RedisModuleCtx * ctx))                                              \
    X(int, SignalModifiedKey, (RedisModuleCtx * ctx, RedisModuleString * keyname))                 \
    X(int, NotifyKeyspaceEvent,                                                                    \
      (RedisModuleCtx * ctx, int type, const char *event, RedisModuleString *key))                 \
    X(void *, Alloc, (size_t bytes))                                                               \
    X(void *, Calloc, (size_t nmemb, size_t size))                                                 \
    X(void *, Realloc, (void *ptr, size_t bytes))                                                  \
    X(void, Free, (void *ptr))                                                                     \
    X(RedisModuleType *, CreateDataType,                                                           \
      (RedisModuleCtx * ctx, const char *name, int encver, RedisModuleTypeMethods *methods))       \
    X(int, ModuleTypeSetValue, (RedisModuleKey * key, RedisModuleType * mt, void *value))          \
    X(RedisModuleType *, ModuleTypeGetType, (RedisModuleKey * key))                                \
    X(void *, ModuleTypeGetValue, (RedisModuleKey * key))                                          \
    X(void, SaveUnsigned, (RedisModuleIO * io, uint64_t value))                                    \
    X(uint64_t, LoadUnsigned, (RedisModuleIO * io))                                                \
    X(void, SaveStringBuffer, (RedisModuleIO * io, const char *str, size_t len))                   \
    X(char *, LoadStringBuffer, (RedisModuleIO * io, size_t * lenptr))                             \
    X(int, IsIOError, (RedisModuleIO * io))                                                        \
    X(void, EmitAOF, (RedisModuleIO * io, const char *cmdname, const char *fmt, ...))              \
    X(void, DigestAddStringBuffer, (RedisModuleDigest * md, const char *ele, size_t len))          \
    X(void, DigestEndSequence, (RedisModuleDigest * md))                                           \
    X(void, DigestAddLongLong, (RedisModuleDigest * md, long long ll))                             \
    X(void, Log, (RedisModuleCtx * ctx, const char *level, const char *fmt, ...))                  \
    X(void, LogIOError, (RedisModuleIO * io, const char *level, const char *fmt, ...))             \
    X(int, RegisterInfoFunc, (RedisModuleCtx * ctx, RedisModuleInfoFunc cb))                       \
    X(int, InfoAddSection, (RedisModuleInfoCtx * ctx, const char *name))                           \
    X(int, InfoAddFieldLongLong, (RedisModuleInfoCtx * ctx, const char *field, long long value))   \
    X(int, InfoAddFieldULongLong,                                                                  \
      (RedisModuleInfoCtx * ctx, const char *field, unsigned long long value))                     \
    X(int, InfoAddFieldCString, (RedisModuleInfoCtx * ctx, const char *field, const char *value))  \
    X(int, SubscribeToKeyspaceEvents,                                                              \
      (RedisModuleCtx * ctx, int types, RedisModuleNotificationFunc cb))                           \
    X(void, GetRandomBytes, (unsigned char *dst, size_t len))                                      \
    X(int, SubscribeToServerEvent,                                                                 \
      (RedisModuleCtx * ctx, RedisModuleEvent event, RedisModuleEventCallback cb))                 \
    X(int, StreamAdd,                                                                              \
      (RedisModuleKey * key, int flags, RedisModuleStreamID *id, RedisModuleString **argv,         \
       int64_t numfields))                                                                         \
    X(long long, StreamTrimByLength, (RedisModuleKey * key, int flags, long long length))          \
    X(long long, StreamTrimByID, (RedisModuleKey * key, int flags, RedisModuleStreamID *id))       \
    X(int, StreamIteratorStart,                                                                    \
      (RedisModuleKey * key, int flags, RedisModuleStreamID *start, RedisModuleStreamID *end))     \
    X(int, StreamIteratorStop, (RedisModuleKey * key))                                             \
    X(int, StreamIteratorNextID,                                                                   \
      (RedisModuleKey * key, RedisModuleStreamID * id, long *numfields))                           \
    X(int, StreamIteratorNextField,                                                                \
      (RedisModuleKey * key, RedisModuleString * *field, RedisModuleString * *value))              \
    X(RedisModuleCallReply *, Call,                                                                \
      (RedisModuleCtx * ctx, const char *cmdname, const char *fmt, ...))                           \
    X(void, FreeCallReply, (RedisModuleCallReply * reply))                                         \
    X(int, CallReplyType, (RedisModuleCallReply * reply))                                          \
    X(long long, CallReplyInteger, (RedisModuleCallReply * reply))                                 \
    X(size_t, CallReplyLength, (RedisModuleCallReply * reply))                                     \
    X(RedisModuleCallReply *, CallReplyArrayElement, (RedisModuleCallReply * reply, size_t idx))   \
    X(const char *, CallReplyStringPtr, (RedisModuleCallReply * reply, size_t * len))

#ifdef REDISMODULE_MAIN
#define REDISMODULE__STORAGE
#else
#define REDISMODULE__STORAGE extern
#endif

#define REDISMODULE__DECLARE(ret, name, params)                                                    \
    REDISMODULE__STORAGE ret(*RedisModule_##name) params;
REDISMODULE__STORAGE int (*RedisModule_GetApi)(const char *name, void *fnptr);
REDISMODULE_API_FUNCS(REDISMODULE__DECLARE)
#undef REDISMODULE__DECLARE

#ifdef REDISMODULE_MAIN
/* Fills every function pointer through RedisModule_GetApi, refuses a module name already taken,
 * and registers the module. REDISMODULE_ERR if the server lacks any function we need. */
static int RedisModule_Init(RedisModuleCtx *ctx, const char *name, int ver, int apiver)
{
    /* The context's first member is the GetApi function (the documented bootstrap). */
    void *getapi = ((void **)ctx)[0];
    *(void **)&RedisModule_GetApi = getapi;
#define REDISMODULE__FETCH(ret, fname, params)                                                     \
    if (RedisModule_GetApi("RedisModule_" #fname, (void *)&RedisModule_##fname) != REDISMODULE_OK) \
        return REDISMODULE_ERR;
    REDISMODULE_API_FUNCS(REDISMODULE__FETCH)
#undef REDISMODULE__FETCH
    if (RedisModule_IsModuleNameBusy(name))
        return REDISMODULE_ERR;
    RedisModule_SetModuleAttribs(ctx, name, ver, apiver);
    return REDISMODULE_OK;
}
#endif

#endif /* CRDT_REDISMODULE_H */
