/* changelog.c - crdt.so's durable change log: a value of the module's own type per hash slot,
 * CRDT.LOG.* commands
 *
 * Every write on a primary appends one entry to the change log of the key's slot, a key of type
 * crdtd-log named crdt:log:{TAG}:EPOCH. Its value (logval.h) holds the entries in chunks, each a
 * record varint(ms) entry, the entry packing key, origin and delta (crdtm_entry_encode in
 * logpos.c), numbered by offset: the n-th entry the log ever had is offset n, and a reader's
 * position is (epoch, ms, offset). TAG hashes to the slot, so the log lives in its slot: it is
 * replicated, persisted (rdb_save/rdb_load, aof_rewrite) and migrated (DUMP/RESTORE) with the
 * keys it describes. EPOCH is 64 random bits drawn when the log is created: the identity of the
 * log, written into every position a reader gets, so a position is never accepted by another log.
 *
 * A slot normally holds one log. It can hold more after a resharding (the target wrote to a log
 * of its own before the source's arrived): new entries go to the log with the greatest epoch and
 * readers follow every log CRDT.LOG.LIST names. The module knows which logs exist from its own
 * appends and commands and from keyspace notifications (restore, loaded, rename/copy/move onto a
 * name, del/expired/evicted); the key itself is checked before each use.
 *
 * Propagation: a write whose delta the module replicates itself (crdtm_changed) goes to replicas
 * and the AOF as one command, CRDT.LOG.APPLY log key record: the replica merges the record's
 * delta and appends the record, its offset the next one (the replica's log is the primary's, so
 * the offset is the same; no ID travels). Other appends (CRDT.MERGE, RESTORE, replicated verbatim
 * by their callers) replicate as CRDT.LOG.APPEND log offset record. A trim is decided on the
 * primary only and follows as CRDT.LOG.TRIM log upto (Redis wraps the command's propagation in
 * MULTI/EXEC then). Replicas and AOF loading apply those and append nothing themselves, so a
 * replica's log holds the primary's records byte for byte (DEBUG DIGEST agrees).
 */
#include "crdt_module.h"
#include "logpos.h"
#include "logval.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#define READ_COUNT_MAX 10000
/* The module type of the logs; type names are exactly 9 characters. */
#define LOG_TYPE_NAME "crdtd-log"
#define LOG_ENCVER 1

static RedisModuleType *log_type;

/* The logs of a slot the module knows, by epoch. */
typedef struct slot_logs {
    uint64_t *epochs; /* ascending; the last is where appends go */
    uint32_t n, cap;
    uint32_t appends;            /* since the last age check */
    uint64_t cur_epoch;          /* the epoch cur_name names (0: none) */
    RedisModuleString *cur_name; /* name of the log appends go to, kept between writes */
    /* The value of cur_name in db cached_db, kept between appends so they need not open its key
     * (~500 instructions a write): NULL when unknown. Forgotten whenever the value could be freed
     * or stop being that key's: log_free, del/rename/move events, FLUSHDB, SWAPDB, loading and
     * role changes (cache_forget_all). */
    crdtm_logval_t *cached;
    int cached_db;
} slot_logs_t;

static char slot_tag[CRDTM_SLOTS][CRDTM_TAG_MAX];
static slot_logs_t slots[CRDTM_SLOTS];
/* The origin the next appends carry (crdtm_log_set_origin; 0: none, the field is left out). */
static uint64_t log_origin;
static struct {
    unsigned long long appends, applied, trims, trimmed, restores, created, load_errors;
} log_stats;

static void registry_add(unsigned slot, uint64_t epoch)
{
    slot_logs_t *sl = &slots[slot];
    uint32_t i = 0;
    while (i < sl->n && sl->epochs[i] < epoch)
        i++;
    if (i < sl->n && sl->epochs[i] == epoch)
        return;
    if (sl->n == sl->cap) {
        uint32_t cap = sl->cap ? sl->cap * 2 : 2;
        uint64_t *p = realloc(sl->epochs, cap * sizeof(*p));
        if (!p)
            return; /* the key is still found again by its next notification */
        sl->epochs = p;
        sl->cap = cap;
    }
    memmove(&sl->epochs[i + 1], &sl->epochs[i], (sl->n - i) * sizeof(*sl->epochs));
    sl->epochs[i] = epoch;
    sl->n++;
}

static void registry_remove(unsigned slot, uint64_t epoch)
{
    slot_logs_t *sl = &slots[slot];
    for (uint32_t i = 0; i < sl->n; i++)
        if (sl->epochs[i] == epoch) {
            memmove(&sl->epochs[i], &sl->epochs[i + 1], (sl->n - i - 1) * sizeof(*sl->epochs));
            sl->n--;
            return;
        }
}

/* The name given is a log's: registered. */
static void registry_add_name(RedisModuleString *name)
{
    size_t nlen;
    const char *n = RedisModule_StringPtrLen(name, &nlen);
    uint64_t epoch;
    unsigned slot;
    if (crdtm_log_name_parse(n, nlen, &epoch, &slot))
        registry_add(slot, epoch);
}

static void cache_forget(slot_logs_t *sl)
{
    if (sl->cached)
        sl->cached->cached_slot = -1;
    sl->cached = NULL;
}

/* Every slot's cached value is forgotten (main thread, before a FLUSHALL ASYNC hands the values
 * to a background thread: its log_free then finds them uncached). */
static void cache_forget_all(void)
{
    for (unsigned s = 0; s < CRDTM_SLOTS; s++)
        cache_forget(&slots[s]);
}

void crdtm_log_on_flush(void)
{
    cache_forget_all();
}

/* A new log's epoch: 64 bits from splitmix64 over a counter seeded once by
 * RedisModule_GetRandomBytes (a server creates up to 16,384 logs; the cryptographic generator cost
 * about 16,000 instructions each). Distinct within a process, random across processes; never 0. */
static uint64_t new_epoch(void)
{
    static uint64_t state;
    static bool seeded;
    if (!seeded) {
        RedisModule_GetRandomBytes((unsigned char *)&state, sizeof(state));
        seeded = true;
    }
    for (;;) {
        uint64_t z = (state += 0x9e3779b97f4a7c15ULL);
        z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
        z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
        z ^= z >> 31;
        if (z)
            return z;
    }
}

static size_t put_u64(char *p, uint64_t v)
{
    char tmp[20];
    size_t n = 0;
    do {
        tmp[n++] = (char)('0' + v % 10);
        v /= 10;
    } while (v);
    for (size_t i = 0; i < n; i++)
        p[i] = tmp[n - 1 - i];
    return n;
}

/* ---- the module type ------------------------------------------------------------------------ */

static void log_free(void *v)
{
    crdtm_logval_t *lv = v;
    if (lv->cached_slot >= 0 && slots[lv->cached_slot].cached == lv)
        slots[lv->cached_slot].cached = NULL;
    crdtm_lv_free(lv);
}

static void log_rdb_save(RedisModuleIO *io, void *v)
{
    size_t n;
    char *b = crdtm_lv_encode(v, &n);
    if (!b) {
        /* out of memory: an empty log of the same numbering, so the load still succeeds */
        crdtm_logval_t e = {.added = ((crdtm_logval_t *)v)->added};
        b = crdtm_lv_encode(&e, &n);
    }
    RedisModule_SaveStringBuffer(io, b ? b : "", b ? n : 0);
    crdtm_free(b);
}

/* Everything is checked (crdtm_lv_decode): a RESTORE payload is untrusted. */
static void *log_rdb_load(RedisModuleIO *io, int encver)
{
    if (encver != LOG_ENCVER) {
        RedisModule_LogIOError(io, "warning", "crdt: change log of encoding version %d, not %d",
                               encver, LOG_ENCVER);
        return NULL;
    }
    size_t n;
    char *b = RedisModule_LoadStringBuffer(io, &n);
    if (RedisModule_IsIOError(io) || !b) {
        if (b)
            RedisModule_Free(b);
        return NULL;
    }
    const char *why = "";
    crdtm_logval_t *lv = crdtm_lv_decode(b, n, &why);
    RedisModule_Free(b);
    if (!lv) {
        log_stats.load_errors++;
        RedisModule_LogIOError(io, "warning", "crdt: a change log refused: %s", why);
    }
    return lv;
}

/* The commands that make the log again: CRDT.LOG.APPEND log first [record] per entry, then
 * CRDT.LOG.GROUP log CREATE name acked per group. */
static void log_aof_rewrite(RedisModuleIO *aof, RedisModuleString *key, void *v)
{
    crdtm_logval_t *lv = v;
    crdtm_lv_iter_t it;
    crdtm_rec_t r;
    RedisModule_EmitAOF(aof, "CRDT.LOG.APPEND", "sl", key, (long long)crdtm_lv_first(lv));
    crdtm_lv_seek(lv, 0, &it);
    while (crdtm_lv_next(&it, &r))
        RedisModule_EmitAOF(aof, "CRDT.LOG.APPEND", "slb", key, (long long)r.offset, r.rec, r.rlen);
    for (uint32_t i = 0; i < lv->ngroups; i++)
        RedisModule_EmitAOF(aof, "CRDT.LOG.GROUP", "scbl", key, "CREATE", lv->groups[i].name,
                            lv->groups[i].nlen, (long long)lv->groups[i].acked);
}

static size_t log_mem_usage(const void *v)
{
    return crdtm_lv_mem(v);
}

static void log_digest(RedisModuleDigest *md, void *v)
{
    crdtm_logval_t *lv = v;
    crdtm_lv_iter_t it;
    crdtm_rec_t r;
    RedisModule_DigestAddLongLong(md, (long long)lv->added);
    crdtm_lv_seek(lv, 0, &it);
    while (crdtm_lv_next(&it, &r))
        RedisModule_DigestAddStringBuffer(md, r.rec, r.rlen);
    for (uint32_t i = 0; i < lv->ngroups; i++) {
        RedisModule_DigestAddStringBuffer(md, lv->groups[i].name, lv->groups[i].nlen);
        RedisModule_DigestAddLongLong(md, (long long)lv->groups[i].acked);
    }
    RedisModule_DigestEndSequence(md);
}

static void *log_copy(RedisModuleString *from, RedisModuleString *to, const void *v)
{
    (void)from;
    registry_add_name(to);
    return crdtm_lv_copy(v);
}

/* The log value of an open key: NULL with *kt its type when it holds none. */
static crdtm_logval_t *log_value(RedisModuleKey *k, int *kt)
{
    *kt = RedisModule_KeyType(k);
    if (*kt != REDISMODULE_KEYTYPE_MODULE || RedisModule_ModuleTypeGetType(k) != log_type)
        return NULL;
    return RedisModule_ModuleTypeGetValue(k);
}

/* Whether this server is a primary that is not loading, kept from the role-change and loading
 * server events (RedisModule_GetContextFlags cost ~145 instructions per write): set at load from
 * the context's flags, then by on_role_changed and on_loading. */
static bool is_primary, is_loading;

/* Redis 7.0's numbers (redismodule.h declares only FLUSHDB, which rsx.c holds). */
#define LOG_EVENT_ROLE_CHANGED 0
#define LOG_EVENT_LOADING 3
#define LOG_EVENT_SWAPDB 11
#define LOG_SUBEVENT_NOW_MASTER 0
#define LOG_SUBEVENT_LOADING_ENDED 3

static void on_role_changed(RedisModuleCtx *ctx, RedisModuleEvent eid, uint64_t subevent,
                            void *data)
{
    (void)ctx;
    (void)eid;
    (void)data;
    is_primary = subevent == LOG_SUBEVENT_NOW_MASTER;
    cache_forget_all();
}

static void on_loading(RedisModuleCtx *ctx, RedisModuleEvent eid, uint64_t subevent, void *data)
{
    (void)ctx;
    (void)eid;
    (void)data;
    is_loading = subevent < LOG_SUBEVENT_LOADING_ENDED; /* RDB, AOF or replication start */
    cache_forget_all();
}

/* One name of the new db 0 after a SWAPDB: a log goes back into the registry, any other key to
 * the fingerprints (which open it later: it may be of any type). */
static void swapdb_scanned(RedisModuleCtx *ctx, RedisModuleString *keyname, RedisModuleKey *key,
                           void *privdata)
{
    (void)key;
    (void)privdata;
    size_t len;
    const char *name = RedisModule_StringPtrLen(keyname, &len);
    uint64_t epoch;
    unsigned slot;
    if (crdtm_log_name_parse(name, len, &epoch, &slot))
        registry_add(slot, epoch);
    else
        crdtm_rsx_note(ctx, name, len);
}

/* SWAPDB gives db 0 another db's keys with no event per key. When db 0 is one of the two, the
 * registry of logs and the fingerprints start over from a scan of the new db 0 (names only, no
 * key opened), as loading does: O(keys of db 0), once per such SWAPDB. */
static void on_swapdb(RedisModuleCtx *ctx, RedisModuleEvent eid, uint64_t subevent, void *data)
{
    (void)eid;
    (void)subevent;
    cache_forget_all();
    const RedisModuleSwapDbInfo *si = data;
    if (!si || si->dbnum_first == si->dbnum_second ||
        (si->dbnum_first != 0 && si->dbnum_second != 0))
        return;
    for (unsigned s = 0; s < CRDTM_SLOTS; s++)
        slots[s].n = 0;
    crdtm_rsx_reset();
    int db = RedisModule_GetSelectedDb(ctx);
    RedisModuleScanCursor *cur = RedisModule_ScanCursorCreate();
    if (!cur || RedisModule_SelectDb(ctx, 0) != REDISMODULE_OK) {
        if (cur)
            RedisModule_ScanCursorDestroy(cur);
        RedisModule_Log(ctx, "warning",
                        "crdt: SWAPDB: cannot scan db 0 for its logs and "
                        "fingerprints");
        return;
    }
    while (RedisModule_Scan(ctx, cur, swapdb_scanned, NULL))
        ;
    RedisModule_ScanCursorDestroy(cur);
    RedisModule_SelectDb(ctx, db);
}

bool crdtm_log_should_append(RedisModuleCtx *ctx)
{
    /* Replicas and AOF loading receive the primary's CRDT.LOG.APPLY; they add nothing. (A
     * command from the replication link only runs on a replica.) Only db 0 is logged: the only db
     * of a cluster, the one crdtd reads; logs of several dbs in one slot's registry would start a
     * new log at every change of db and lose the others from CRDT.LOG.LIST. */
    return crdtm_cfg.log_enabled && is_primary && !is_loading &&
           RedisModule_GetSelectedDb(ctx) == 0;
}

/* How far past log-max-len a log grows before it is trimmed back to log-max-len: a trim is paid
 * once per that many appends, not per append (each is one more propagated command): a quarter
 * of the bound, at least 16. */
static uint64_t trim_slack(uint64_t max)
{
    return max / 4 > 16 ? max / 4 : 16;
}

/* Trims a log (its key open as name) to its bounds: the newest log-max-len entries, none older
 * than log-max-age-ms (looked at when check_age), and with log-trim-acked nothing a consumer
 * group has not acknowledged. Decided here, on the primary, and replicated as
 * CRDT.LOG.TRIM name upto: replicas remove the same entries. */
static void log_trim(RedisModuleCtx *ctx, crdtm_logval_t *lv, RedisModuleString *name,
                     bool check_age)
{
    uint64_t max = crdtm_cfg.log_max_len;
    bool by_len = max && lv->len > max + trim_slack(max);
    bool by_age = check_age && crdtm_cfg.log_max_age_ms;
    if (!by_len && !by_age)
        return;
    uint64_t upto = 0;
    if (by_len)
        upto = lv->added - max;
    if (by_age) {
        long long now = RedisModule_Milliseconds();
        if (now > 0 && (uint64_t)now > crdtm_cfg.log_max_age_ms) {
            uint64_t old = crdtm_lv_older_than(lv, (uint64_t)now - crdtm_cfg.log_max_age_ms);
            if (old > upto)
                upto = old;
        }
    }
    uint64_t acked;
    if (crdtm_cfg.log_trim_acked && crdtm_lv_min_acked(lv, &acked) && acked < upto)
        upto = acked; /* keep every entry after the slowest group's */
    if (upto < crdtm_lv_first(lv))
        return;
    uint64_t n = crdtm_lv_trim(lv, upto);
    RedisModule_Replicate(ctx, "CRDT.LOG.TRIM", "sl", name, (long long)upto);
    log_stats.trims++;
    log_stats.trimmed += n;
}

int crdtm_log_append(RedisModuleCtx *ctx, RedisModuleString *key, const void *data, size_t len,
                     bool merge)
{
    size_t klen;
    const char *k = RedisModule_StringPtrLen(key, &klen);
    unsigned slot = crdtm_keyslot(k, klen);
    slot_logs_t *sl = &slots[slot];
    RedisModuleKey *lk = NULL;
    crdtm_logval_t *lv = NULL;
    int db = RedisModule_GetSelectedDb(ctx);
    if (sl->cached && sl->n && sl->cur_epoch == sl->epochs[sl->n - 1] && sl->cached_db == db) {
        lv = sl->cached;
        RedisModule_SignalModifiedKey(ctx, sl->cur_name); /* what CloseKey would do: WATCH */
    }
    while (!lv && sl->n && !lk) {
        uint64_t epoch = sl->epochs[sl->n - 1];
        if (sl->cur_epoch != epoch || !sl->cur_name) {
            /* the name is made once per log, not per write */
            char name[CRDTM_LOG_NAME_MAX];
            if (sl->cur_name)
                RedisModule_FreeString(NULL, sl->cur_name);
            size_t nlen = crdtm_log_name(name, slot_tag[slot], epoch);
            sl->cur_name = RedisModule_CreateString(NULL, name, nlen);
            sl->cur_epoch = epoch;
        }
        lk = RedisModule_OpenKey(ctx, sl->cur_name, REDISMODULE_READ | REDISMODULE_WRITE);
        int kt;
        lv = log_value(lk, &kt);
        if (!lv) {
            /* gone (FLUSHALL, DEL, moved away) or replaced by another type: forget it. Not
             * sl->n--: opening an expired log deletes it right there, and the "expired" event
             * that deletion sends has already taken it off the registry. */
            RedisModule_CloseKey(lk);
            lk = NULL;
            registry_remove(slot, epoch);
        }
    }
    if (!lv && !lk) {
        char name[CRDTM_LOG_NAME_MAX];
        uint64_t epoch = new_epoch();
        size_t nlen = crdtm_log_name(name, slot_tag[slot], epoch);
        RedisModuleString *ns = RedisModule_CreateString(NULL, name, nlen);
        lk = RedisModule_OpenKey(ctx, ns, REDISMODULE_READ | REDISMODULE_WRITE);
        if (RedisModule_KeyType(lk) != REDISMODULE_KEYTYPE_EMPTY || !(lv = crdtm_lv_new(1))) {
            RedisModule_CloseKey(lk);
            RedisModule_FreeString(NULL, ns);
            RedisModule_Log(ctx, "warning", "crdt: cannot create change log %s", name);
            return -1;
        }
        RedisModule_ModuleTypeSetValue(lk, log_type, lv);
        registry_add(slot, epoch);
        log_stats.created++;
        if (sl->cur_name)
            RedisModule_FreeString(NULL, sl->cur_name);
        sl->cur_name = ns;
        sl->cur_epoch = epoch;
    }
    if (lk) {
        /* kept for the next append (cache_forget drops it if the key changes otherwise), unless
         * someone gave the log a TTL: then each append opens the key, so one after the expiry
         * finds it gone (lazily expired) instead of writing into a value nobody can read. An
         * EXPIRE or PERSIST later is a keyspace event on the name, which forgets the value. */
        cache_forget(sl);
        if (RedisModule_GetExpire(lk) == REDISMODULE_NO_EXPIRE) {
            sl->cached = lv;
            sl->cached_db = db;
            lv->cached_slot = (int32_t)slot;
        }
    }
    long long now = RedisModule_Milliseconds();
    size_t rlen;
    const char *rec = crdtm_lv_append_entry(lv, now > 0 ? (uint64_t)now : 0, k, klen, log_origin,
                                            data, len, &rlen);
    if (rec) {
        /* One command to replicas and the AOF: CRDT.LOG.APPLY log key record (the write's merge
         * and its entry) when the caller left its replication to us, else the entry alone as
         * CRDT.LOG.APPEND log offset record. The record is copied from the log ("b"). */
        if (merge)
            RedisModule_Replicate(ctx, "CRDT.LOG.APPLY", "ssb", sl->cur_name, key, rec, rlen);
        else
            RedisModule_Replicate(ctx, "CRDT.LOG.APPEND", "slb", sl->cur_name, (long long)lv->added,
                                  rec, rlen);
        log_stats.appends++;
        bool check_age = ++sl->appends >= 64;
        if (check_age)
            sl->appends = 0;
        log_trim(ctx, lv, sl->cur_name, check_age);
    } else {
        RedisModule_Log(ctx, "warning", "crdt: append to change log %s failed (out of memory)",
                        RedisModule_StringPtrLen(sl->cur_name, NULL));
    }
    if (lk)
        RedisModule_CloseKey(lk);
    return rec ? 0 : -1;
}

void crdtm_log_set_origin(uint64_t origin)
{
    log_origin = origin;
}

int crdtm_log_state(RedisModuleCtx *ctx, RedisModuleString *key, const crdt_obj_t *obj)
{
    crdt_buf_t b = {0};
    int rc = -1;
    if (crdt_obj_encode(obj, &b) == 0)
        rc = crdtm_log_append(ctx, key, b.data, b.len, false);
    crdt_buf_free(&b);
    return rc;
}

/* ---- commands the replication link and AOF loading run -------------------------------------- */

static bool from_primary_or_aof(RedisModuleCtx *ctx)
{
    int flags = RedisModule_GetContextFlags(ctx);
    return flags & (REDISMODULE_CTX_FLAGS_REPLICATED | REDISMODULE_CTX_FLAGS_LOADING);
}

/* The log named argv[1] open for writing, created empty (its next offset next) when absent and
 * next is not 0. NULL after an error reply (a name that is no log's, a key of another type). */
static crdtm_logval_t *open_log_write(RedisModuleCtx *ctx, RedisModuleString *name, uint64_t next,
                                      RedisModuleKey **lk)
{
    size_t nlen;
    const char *n = RedisModule_StringPtrLen(name, &nlen);
    uint64_t epoch;
    unsigned slot;
    if (!crdtm_log_name_parse(n, nlen, &epoch, &slot)) {
        RedisModule_ReplyWithError(
            ctx, "ERR not a change log name (crdt:log:{TAG}:EPOCH, as CRDT.LOG.LIST gives them)");
        return NULL;
    }
    *lk = RedisModule_OpenKey(ctx, name, REDISMODULE_READ | REDISMODULE_WRITE);
    int kt;
    crdtm_logval_t *lv = log_value(*lk, &kt);
    if (!lv && kt == REDISMODULE_KEYTYPE_EMPTY && next) {
        lv = crdtm_lv_new(next);
        if (!lv) {
            RedisModule_CloseKey(*lk);
            RedisModule_ReplyWithError(ctx, "ERR out of memory");
            return NULL;
        }
        RedisModule_ModuleTypeSetValue(*lk, log_type, lv);
        registry_add(slot, epoch);
    }
    if (!lv) {
        RedisModule_CloseKey(*lk);
        RedisModule_ReplyWithError(ctx, kt == REDISMODULE_KEYTYPE_EMPTY
                                            ? "ERR no such log here (deleted, or not in this db)"
                                            : REDISMODULE_ERRORMSG_WRONGTYPE);
        return NULL;
    }
    return lv;
}

/* CRDT.LOG.APPLY log key record: what a primary propagates for a write it logged
 * (crdtm_log_append with merge), one command instead of CRDT.MERGE and an append. A replica, or
 * a server loading its AOF, merges the record's delta into key as CRDT.MERGE does, then appends
 * the record as the log's next entry. Refused from clients: on a primary it would append an
 * entry nobody wrote. */
int crdtm_cmd_log_apply(RedisModuleCtx *ctx, RedisModuleString **argv, int argc)
{
    if (argc != 4)
        return RedisModule_WrongArity(ctx);
    if (!from_primary_or_aof(ctx))
        return RedisModule_ReplyWithError(
            ctx, "ERR CRDT.LOG.APPLY is what a primary sends its replicas and AOF for a logged "
                 "write; only the replication link and AOF loading may run it");
    size_t nlen, kl, rl;
    const char *name = RedisModule_StringPtrLen(argv[1], &nlen);
    const char *k = RedisModule_StringPtrLen(argv[2], &kl);
    const char *rec = RedisModule_StringPtrLen(argv[3], &rl);
    uint64_t epoch, ms;
    unsigned slot;
    const char *ep;
    size_t el;
    crdtm_entry_t e;
    if (!crdtm_log_name_parse(name, nlen, &epoch, &slot))
        return RedisModule_ReplyWithError(ctx, "ERR not a change log name");
    if (!crdtm_lv_record_parse(rec, rl, &ms, &ep, &el) || crdtm_entry_decode(ep, el, &e) < 0 ||
        e.klen != kl || memcmp(e.key, k, kl) != 0 || crdtm_keyslot(k, kl) != slot)
        return RedisModule_ReplyWithError(
            ctx, "ERR the record must be of the key given, and the key of the log's slot");
    char msg[320];
    int changed = crdtm_merge_one(ctx, argv[2], e.delta, e.dlen, msg, sizeof(msg));
    /* The entry goes in whatever the merge did: the log mirrors the primary's. */
    RedisModuleKey *lk;
    crdtm_logval_t *lv = open_log_write(ctx, argv[1], 1, &lk);
    if (!lv)
        return REDISMODULE_OK;
    int rc = crdtm_lv_append(lv, rec, rl);
    RedisModule_CloseKey(lk);
    if (rc < 0)
        RedisModule_Log(ctx, "warning", "crdt: an entry of change log %.*s not applied", (int)nlen,
                        name);
    else
        log_stats.applied++;
    /* a replica's own AOF and replicas get the command as it came */
    RedisModule_ReplicateVerbatim(ctx);
    if (changed < 0)
        return RedisModule_ReplyWithError(ctx, msg);
    return RedisModule_ReplyWithLongLong(ctx, changed);
}

/* CRDT.LOG.APPEND log offset [record ...]: appends records as the entries numbered offset,
 * offset + 1, ...; a log that does not exist is created with offset as its next. What a primary
 * propagates for an entry it logged without merging (CRDT.MERGE, RESTORE) and what AOF rewriting
 * writes; refused from clients. */
int crdtm_cmd_log_append(RedisModuleCtx *ctx, RedisModuleString **argv, int argc)
{
    if (argc < 3)
        return RedisModule_WrongArity(ctx);
    if (!from_primary_or_aof(ctx))
        return RedisModule_ReplyWithError(
            ctx, "ERR CRDT.LOG.APPEND is what a primary sends its replicas and AOF; only the "
                 "replication link and AOF loading may run it");
    long long off;
    if (RedisModule_StringToLongLong(argv[2], &off) != REDISMODULE_OK || off < 1)
        return RedisModule_ReplyWithError(ctx, "ERR offset must be a positive integer");
    for (int i = 3; i < argc; i++) {
        size_t rl, el;
        uint64_t ms;
        const char *rec = RedisModule_StringPtrLen(argv[i], &rl), *ep;
        if (!crdtm_lv_record_parse(rec, rl, &ms, &ep, &el))
            return RedisModule_ReplyWithError(ctx, "ERR not a change log record");
    }
    RedisModuleKey *lk;
    crdtm_logval_t *lv = open_log_write(ctx, argv[1], (uint64_t)off, &lk);
    if (!lv)
        return REDISMODULE_OK;
    if (lv->added + 1 != (uint64_t)off) {
        RedisModule_CloseKey(lk);
        char m[120];
        snprintf(m, sizeof(m), "ERR offset %lld is not the log's next (%llu)", off,
                 (unsigned long long)lv->added + 1);
        return RedisModule_ReplyWithError(ctx, m);
    }
    int rc = 0;
    for (int i = 3; i < argc && rc == 0; i++) {
        size_t rl;
        const char *rec = RedisModule_StringPtrLen(argv[i], &rl);
        rc = crdtm_lv_append(lv, rec, rl);
    }
    RedisModule_CloseKey(lk);
    RedisModule_ReplicateVerbatim(ctx);
    if (rc < 0)
        return RedisModule_ReplyWithError(ctx, "ERR out of memory");
    return RedisModule_ReplyWithLongLong(ctx, (long long)lv->added);
}

/* CRDT.LOG.TRIM log upto: removes the entries numbered up to upto; their number. What a primary
 * propagates when it trimmed; a client may run it too (an operator trimming by hand). */
int crdtm_cmd_log_trim(RedisModuleCtx *ctx, RedisModuleString **argv, int argc)
{
    if (argc != 3)
        return RedisModule_WrongArity(ctx);
    long long upto;
    if (RedisModule_StringToLongLong(argv[2], &upto) != REDISMODULE_OK || upto < 0)
        return RedisModule_ReplyWithError(ctx, "ERR upto must be an offset (an integer >= 0)");
    RedisModuleKey *lk;
    crdtm_logval_t *lv = open_log_write(ctx, argv[1], 0, &lk);
    if (!lv)
        return REDISMODULE_OK;
    uint64_t n = crdtm_lv_trim(lv, (uint64_t)upto);
    RedisModule_CloseKey(lk);
    if (n) {
        RedisModule_ReplicateVerbatim(ctx);
        log_stats.trims++;
        log_stats.trimmed += n;
    }
    return RedisModule_ReplyWithLongLong(ctx, (long long)n);
}

/* ---- CRDT.LOG.GROUP and CRDT.LOG.INFO ------------------------------------------------------- */

/* A group's position: 0, $ (the newest entry), an offset, or a position CRDT.LOG.READ gave for
 * this log. false after an error reply. */
static bool group_offset(RedisModuleCtx *ctx, RedisModuleString *arg, const crdtm_logval_t *lv,
                         uint64_t epoch, uint64_t *off)
{
    size_t l;
    const char *s = RedisModule_StringPtrLen(arg, &l);
    long long v;
    crdtm_pos_t pos;
    const char *why = NULL;
    if (RedisModule_StringToLongLong(arg, &v) == REDISMODULE_OK && v >= 0) {
        *off = (uint64_t)v;
    } else if (crdtm_pos_parse(s, l, &pos, &why) == 0) {
        if (pos.kind == CRDTM_POS_AT && pos.epoch != epoch) {
            RedisModule_ReplyWithError(ctx, "ERR position belongs to another log");
            return false;
        }
        *off = pos.kind == CRDTM_POS_START ? 0 : pos.kind == CRDTM_POS_END ? lv->added : pos.offset;
    } else {
        RedisModule_ReplyWithError(
            ctx, "ERR a group's position is 0, $, an offset or a position of this log");
        return false;
    }
    if (*off > lv->added) {
        RedisModule_ReplyWithError(ctx, "ERR position past the log's newest entry");
        return false;
    }
    return true;
}

/* CRDT.LOG.GROUP log CREATE group position | SETID group position | DESTROY group
 * A consumer group: a name and the offset up to which it acknowledged the log's entries; with
 * log-trim-acked trimming keeps every entry after the smallest. Stored in the log, so groups
 * replicate, persist and move with it. CREATE and SETID replicate with the offset resolved. */
int crdtm_cmd_log_group(RedisModuleCtx *ctx, RedisModuleString **argv, int argc)
{
    if (argc < 4)
        return RedisModule_WrongArity(ctx);
    const char *sub = RedisModule_StringPtrLen(argv[2], NULL);
    bool create = !strcasecmp(sub, "CREATE"), setid = !strcasecmp(sub, "SETID"),
         destroy = !strcasecmp(sub, "DESTROY");
    if (!create && !setid && !destroy)
        return RedisModule_ReplyWithError(ctx, "ERR subcommand must be CREATE, SETID or DESTROY");
    if ((destroy && argc != 4) || (!destroy && argc != 5))
        return RedisModule_WrongArity(ctx);
    size_t nlen, gl;
    const char *name = RedisModule_StringPtrLen(argv[1], &nlen);
    const char *g = RedisModule_StringPtrLen(argv[3], &gl);
    uint64_t epoch;
    unsigned slot;
    if (!crdtm_log_name_parse(name, nlen, &epoch, &slot))
        return RedisModule_ReplyWithError(
            ctx, "ERR not a change log name (crdt:log:{TAG}:EPOCH, as CRDT.LOG.LIST gives them)");
    if (gl == 0 || gl > CRDTM_GROUP_NAME_MAX)
        return RedisModule_ReplyWithError(ctx, "ERR a group name is 1 to 200 bytes");
    RedisModuleKey *lk;
    crdtm_logval_t *lv = open_log_write(ctx, argv[1], 0, &lk);
    if (!lv)
        return REDISMODULE_OK;
    int found = crdtm_lv_group_find(lv, g, gl);
    if (destroy) {
        bool had = crdtm_lv_group_del(lv, g, gl);
        RedisModule_CloseKey(lk);
        if (had)
            RedisModule_ReplicateVerbatim(ctx);
        return RedisModule_ReplyWithLongLong(ctx, had);
    }
    uint64_t off;
    if (!group_offset(ctx, argv[4], lv, epoch, &off)) {
        RedisModule_CloseKey(lk);
        return REDISMODULE_OK;
    }
    if (create && found >= 0) {
        RedisModule_CloseKey(lk);
        return RedisModule_ReplyWithError(ctx, "BUSYGROUP the log has a group of that name");
    }
    if (setid && found < 0) {
        RedisModule_CloseKey(lk);
        return RedisModule_ReplyWithError(ctx, "NOGROUP the log has no group of that name");
    }
    int rc = crdtm_lv_group_set(lv, g, gl, off);
    RedisModule_CloseKey(lk);
    if (rc == -1)
        return RedisModule_ReplyWithError(ctx, "ERR a log has at most 64 groups");
    if (rc < 0)
        return RedisModule_ReplyWithError(ctx, "ERR out of memory");
    RedisModule_Replicate(ctx, "CRDT.LOG.GROUP", "ssbl", argv[1], argv[2], g, gl, (long long)off);
    return RedisModule_ReplyWithSimpleString(ctx, "OK");
}

/* CRDT.LOG.INFO log -> [length, n, entries-added, n, first-entry, offset, last-ms, ms,
 * groups, [[name, acked], ...]] */
int crdtm_cmd_log_info(RedisModuleCtx *ctx, RedisModuleString **argv, int argc)
{
    if (argc != 2)
        return RedisModule_WrongArity(ctx);
    RedisModuleKey *lk = RedisModule_OpenKey(ctx, argv[1], REDISMODULE_READ);
    int kt;
    crdtm_logval_t *lv = log_value(lk, &kt);
    if (!lv) {
        RedisModule_CloseKey(lk);
        return RedisModule_ReplyWithError(ctx, kt == REDISMODULE_KEYTYPE_EMPTY
                                                   ? "ERR no such log here"
                                                   : REDISMODULE_ERRORMSG_WRONGTYPE);
    }
    RedisModule_ReplyWithArray(ctx, 10);
    RedisModule_ReplyWithSimpleString(ctx, "length");
    RedisModule_ReplyWithLongLong(ctx, (long long)lv->len);
    RedisModule_ReplyWithSimpleString(ctx, "entries-added");
    RedisModule_ReplyWithLongLong(ctx, (long long)lv->added);
    RedisModule_ReplyWithSimpleString(ctx, "first-entry");
    RedisModule_ReplyWithLongLong(ctx, (long long)crdtm_lv_first(lv));
    RedisModule_ReplyWithSimpleString(ctx, "last-ms");
    RedisModule_ReplyWithLongLong(ctx, (long long)lv->last_ms);
    RedisModule_ReplyWithSimpleString(ctx, "groups");
    RedisModule_ReplyWithArray(ctx, lv->ngroups);
    for (uint32_t i = 0; i < lv->ngroups; i++) {
        RedisModule_ReplyWithArray(ctx, 2);
        RedisModule_ReplyWithStringBuffer(ctx, lv->groups[i].name, lv->groups[i].nlen);
        RedisModule_ReplyWithLongLong(ctx, (long long)lv->groups[i].acked);
    }
    RedisModule_CloseKey(lk);
    return REDISMODULE_OK;
}

/* Keeps the registry in step with the keyspace, and logs the full state of every CRDT key that
 * arrives by RESTORE (MIGRATE's target, or a user's DUMP/RESTORE). */
static int on_keyspace_event(RedisModuleCtx *ctx, int type, const char *event,
                             RedisModuleString *key)
{
    size_t klen;
    const char *k = RedisModule_StringPtrLen(key, &klen);
    uint64_t epoch;
    unsigned slot;
    if (crdtm_log_name_parse(k, klen, &epoch, &slot)) {
        /* the registry is db 0's logs (the only db logged): a log-named key elsewhere (a COPY,
         * a MOVE's target) is not one of them, and what happens to it changes nothing here */
        if (RedisModule_GetSelectedDb(ctx) != 0)
            return REDISMODULE_OK;
        /* whatever happened to the key, its value may be another or elsewhere now */
        if (slots[slot].cur_epoch == epoch)
            cache_forget(&slots[slot]);
        if (!strcmp(event, "del") || !strcmp(event, "expired") || !strcmp(event, "evicted") ||
            !strcmp(event, "rename_from") || !strcmp(event, "move_from"))
            registry_remove(slot, epoch);
        else if (type == REDISMODULE_NOTIFY_LOADED || !strcmp(event, "restore") ||
                 !strcmp(event, "rename_to") || !strcmp(event, "move_to") ||
                 !strcmp(event, "copy_to"))
            registry_add(slot, epoch);
        return REDISMODULE_OK;
    }
    /* whatever happened to the key (deleted, expired, evicted, renamed, restored, loaded), its
     * slot's fingerprints must look at it again */
    crdtm_rsx_note(ctx, k, klen);
    if (type != REDISMODULE_NOTIFY_GENERIC || strcmp(event, "restore") != 0 ||
        !crdtm_log_should_append(ctx))
        return REDISMODULE_OK;
    RedisModuleKey *rk = RedisModule_OpenKey(ctx, key, REDISMODULE_READ);
    if (RedisModule_KeyType(rk) == REDISMODULE_KEYTYPE_MODULE &&
        RedisModule_ModuleTypeGetType(rk) == crdtm_type) {
        if (crdtm_log_state(ctx, key, RedisModule_ModuleTypeGetValue(rk)) == 0)
            log_stats.restores++;
    }
    RedisModule_CloseKey(rk);
    return REDISMODULE_OK;
}

/* ---- CRDT.LOG.LIST [slot] ------------------------------------------------------------------- */

int crdtm_cmd_log_list(RedisModuleCtx *ctx, RedisModuleString **argv, int argc)
{
    if (argc > 2)
        return RedisModule_WrongArity(ctx);
    unsigned from = 0, to = CRDTM_SLOTS - 1;
    if (argc == 2) {
        long long s;
        if (RedisModule_StringToLongLong(argv[1], &s) != REDISMODULE_OK || s < 0 ||
            s >= CRDTM_SLOTS)
            return RedisModule_ReplyWithError(ctx, "ERR slot must be an integer 0..16383");
        from = to = (unsigned)s;
    }
    RedisModule_ReplyWithArray(ctx, REDISMODULE_POSTPONED_LEN);
    long n = 0;
    for (unsigned s = from; s <= to; s++) {
        for (uint32_t i = 0; i < slots[s].n;) {
            uint64_t epoch = slots[s].epochs[i];
            char name[CRDTM_LOG_NAME_MAX];
            size_t nlen = crdtm_log_name(name, slot_tag[s], epoch);
            RedisModuleString *ns = RedisModule_CreateString(ctx, name, nlen);
            if (RedisModule_KeyExists(ctx, ns)) {
                RedisModule_ReplyWithStringBuffer(ctx, name, nlen);
                n++;
            }
            RedisModule_FreeString(ctx, ns);
            /* A log past its TTL is deleted inside KeyExists, and its "expired" event takes it
             * off the registry: the next log is at i then. */
            if (i < slots[s].n && slots[s].epochs[i] == epoch)
                i++;
        }
    }
    RedisModule_ReplySetArrayLength(ctx, n);
    return REDISMODULE_OK;
}

/* ---- CRDT.LOG.READ log position count, CRDT.LOG.POLL ---------------------------------------- */

/* The records read by the last read_one (commands run on the main thread only); they point into
 * the log's chunks, valid until the log changes. */
static crdtm_rec_t *rd_ents;
static size_t rd_cap;

/* Replies CRDT.LOG.READ name position count, or with poll [name, <that reply>] (an error
 * too), unless poll and the position is of this log and at its newest entry: nothing is replied
 * then and -1 returned. Else the number of entries replied. */
static long read_one(RedisModuleCtx *ctx, RedisModuleString *lname, RedisModuleString *parg,
                     long long count, bool poll)
{
    size_t nlen, plen;
    const char *name = RedisModule_StringPtrLen(lname, &nlen);
    const char *ptext = RedisModule_StringPtrLen(parg, &plen);
    uint64_t epoch;
    unsigned slot;
    crdtm_pos_t pos;
    const char *why = NULL;
    const char *err = NULL;
    char msg[160];
    RedisModuleKey *lk = NULL;
    crdtm_logval_t *lv = NULL;
    if (!crdtm_log_name_parse(name, nlen, &epoch, &slot)) {
        err = "ERR not a change log name (crdt:log:{TAG}:EPOCH, as CRDT.LOG.LIST gives them)";
    } else if (crdtm_pos_parse(ptext, plen, &pos, &why) < 0) {
        err = why;
    } else if (pos.kind == CRDTM_POS_AT && pos.epoch != epoch) {
        snprintf(msg, sizeof(msg),
                 "ERR position belongs to another log (epoch %016llx, this log is %016llx)",
                 (unsigned long long)pos.epoch, (unsigned long long)epoch);
        err = msg;
    } else {
        int kt;
        lk = RedisModule_OpenKey(ctx, lname, REDISMODULE_READ);
        lv = log_value(lk, &kt);
        if (!lv)
            err = kt == REDISMODULE_KEYTYPE_EMPTY
                      ? "ERR no such log here (deleted, emptied by trimming, or not in this db)"
                      : REDISMODULE_ERRORMSG_WRONGTYPE;
    }
    if (err) {
        if (lk)
            RedisModule_CloseKey(lk);
        if (poll) {
            RedisModule_ReplyWithArray(ctx, 2);
            RedisModule_ReplyWithString(ctx, lname);
        }
        RedisModule_ReplyWithError(ctx, err);
        return 0;
    }
    uint64_t first = crdtm_lv_first(lv), trimmed = first - 1;
    bool truncated = false;
    uint64_t from; /* offset of the first entry to read */
    crdtm_pos_t next = {.kind = CRDTM_POS_AT, .epoch = epoch}; /* before from */
    switch (pos.kind) {
    case CRDTM_POS_START:
        truncated = trimmed > 0;
        from = first;
        next.offset = trimmed;
        break;
    case CRDTM_POS_END:
        from = lv->added + 1;
        next.offset = lv->added;
        next.ms = lv->last_ms;
        break;
    default: {
        /* A position past the log's end (entries lost in a failover before they reached the
         * replica), before what trimming kept, or whose entry is another (the same offset
         * written again after such a loss): the reader missed changes. */
        bool ok = pos.offset <= lv->added && pos.offset >= trimmed;
        if (ok && pos.offset >= first) {
            crdtm_lv_iter_t it;
            crdtm_rec_t r;
            crdtm_lv_seek(lv, pos.offset, &it);
            ok = crdtm_lv_next(&it, &r) && r.ms == pos.ms && pos.seq == pos.offset;
        }
        if (ok) {
            from = pos.offset + 1;
            next.offset = pos.offset;
            next.ms = pos.ms;
        } else {
            truncated = true;
            from = first;
            next.offset = trimmed;
        }
        break;
    }
    }
    if (poll && !truncated && pos.kind == CRDTM_POS_AT && from > lv->added) {
        RedisModule_CloseKey(lk);
        return -1; /* nothing new */
    }
    if (count > READ_COUNT_MAX)
        count = READ_COUNT_MAX;
    long n = 0;
    if (pos.kind != CRDTM_POS_END) {
        crdtm_lv_iter_t it;
        crdtm_lv_seek(lv, from, &it);
        for (;;) {
            if ((size_t)n == rd_cap) {
                size_t cap = rd_cap ? rd_cap * 2 : 64;
                crdtm_rec_t *p = crdtm_realloc(rd_ents, cap * sizeof(*p));
                if (!p)
                    break; /* fewer entries: the position says where they end */
                rd_ents = p;
                rd_cap = cap;
            }
            if (n >= count || !crdtm_lv_next(&it, &rd_ents[n]))
                break;
            n++;
        }
    }
    if (n) {
        next.offset = rd_ents[n - 1].offset;
        next.ms = rd_ents[n - 1].ms;
    }
    next.seq = next.offset; /* an entry's ID is MS-OFFSET */
    if (poll) {
        RedisModule_ReplyWithArray(ctx, 2);
        RedisModule_ReplyWithString(ctx, lname);
    }
    RedisModule_ReplyWithArray(ctx, 3);
    if (next.offset == 0) {
        RedisModule_ReplyWithSimpleString(ctx, "0");
    } else {
        char ptxt[CRDTM_POS_TEXT_MAX];
        size_t pl = crdtm_pos_format(&next, ptxt);
        RedisModule_ReplyWithStringBuffer(ctx, ptxt, pl);
    }
    RedisModule_ReplyWithSimpleString(ctx, truncated ? "truncated" : "ok");
    RedisModule_ReplyWithArray(ctx, n);
    for (long i = 0; i < n; i++) {
        crdtm_entry_t e = {0};
        crdtm_entry_decode(rd_ents[i].entry, rd_ents[i].elen, &e); /* checked when it went in */
        char idtext[48];
        size_t il = put_u64(idtext, rd_ents[i].ms);
        idtext[il++] = '-';
        il += put_u64(idtext + il, rd_ents[i].offset);
        /* [id, k, d], or [id, k, d, origin] for an entry with an origin */
        RedisModule_ReplyWithArray(ctx, e.origin ? 4 : 3);
        RedisModule_ReplyWithStringBuffer(ctx, idtext, il);
        RedisModule_ReplyWithStringBuffer(ctx, e.key, e.klen);
        RedisModule_ReplyWithStringBuffer(ctx, e.delta, e.dlen);
        if (e.origin)
            RedisModule_ReplyWithLongLong(ctx, (long long)e.origin);
    }
    RedisModule_CloseKey(lk);
    if (rd_cap > 1024) { /* a big read does not keep its memory */
        crdtm_free(rd_ents);
        rd_ents = NULL;
        rd_cap = 0;
    }
    return n;
}

int crdtm_cmd_log_read(RedisModuleCtx *ctx, RedisModuleString **argv, int argc)
{
    if (argc != 4)
        return RedisModule_WrongArity(ctx);
    long long count;
    if (RedisModule_StringToLongLong(argv[3], &count) != REDISMODULE_OK || count < 1)
        return RedisModule_ReplyWithError(ctx, "ERR count must be a positive integer");
    read_one(ctx, argv[1], argv[2], count, false);
    return REDISMODULE_OK;
}

/* CRDT.LOG.POLL count log position [log position ...]: a follower's one command per node and
 * poll: for every log given with its position, the reply of CRDT.LOG.READ log position n, but
 * only for the logs with something to read (entries after the position, a position of another
 * kind than EPOCH:MS-SEQ:OFFSET, a position past the log's end, an error): -> [[log, <LOG.READ
 * reply>], ..., more]. An idle log costs a lookup and one seek. `count` bounds the entries of the
 * whole reply; more is 1 when it ran out before every log was looked at (poll again at once).
 * The logs need not be in one slot: like CRDT.LOG.LIST the command names no keys, it reads the
 * logs this node holds. */
int crdtm_cmd_log_poll(RedisModuleCtx *ctx, RedisModuleString **argv, int argc)
{
    if (argc < 4 || (argc - 2) % 2)
        return RedisModule_WrongArity(ctx);
    long long count;
    if (RedisModule_StringToLongLong(argv[1], &count) != REDISMODULE_OK || count < 1)
        return RedisModule_ReplyWithError(ctx, "ERR count must be a positive integer");
    if (count > READ_COUNT_MAX)
        count = READ_COUNT_MAX;
    long long left = count;
    long n = 0;
    int more = 0;
    RedisModule_ReplyWithArray(ctx, REDISMODULE_POSTPONED_LEN);
    for (int i = 2; i + 1 < argc; i += 2) {
        if (left == 0) {
            more = 1;
            break;
        }
        long got = read_one(ctx, argv[i], argv[i + 1], left, true);
        if (got < 0)
            continue;
        n++;
        size_t pl;
        const char *pt = RedisModule_StringPtrLen(argv[i + 1], &pl);
        bool end = pl == 1 && pt[0] == '$';
        long long cost = got ? got : end ? 0 : 1; /* an empty reply is paid like an entry */
        left -= cost < left ? cost : left;
    }
    RedisModule_ReplyWithLongLong(ctx, more);
    RedisModule_ReplySetArrayLength(ctx, n + 1);
    return REDISMODULE_OK;
}

/* ---- load and INFO -------------------------------------------------------------------------- */

int crdtm_log_init(RedisModuleCtx *ctx)
{
    crdtm_lv_set_allocator(crdtm_alloc, crdtm_realloc, crdtm_free);
    RedisModuleTypeMethods tm = {
        .version = REDISMODULE_TYPE_METHOD_VERSION,
        .rdb_load = log_rdb_load,
        .rdb_save = log_rdb_save,
        .aof_rewrite = log_aof_rewrite,
        .mem_usage = log_mem_usage,
        .digest = log_digest,
        .free = log_free,
        .copy = log_copy,
    };
    log_type = RedisModule_CreateDataType(ctx, LOG_TYPE_NAME, LOG_ENCVER, &tm);
    if (!log_type) {
        RedisModule_Log(ctx, "warning", "crdt: cannot register data type %s", LOG_TYPE_NAME);
        return -1;
    }
    int f = RedisModule_GetContextFlags(ctx);
    is_primary = f & REDISMODULE_CTX_FLAGS_MASTER;
    is_loading = f & REDISMODULE_CTX_FLAGS_LOADING;
    RedisModuleEvent role = {LOG_EVENT_ROLE_CHANGED, 1}, loading = {LOG_EVENT_LOADING, 1},
                     swapdb = {LOG_EVENT_SWAPDB, 1};
    if (RedisModule_SubscribeToServerEvent(ctx, role, on_role_changed) != REDISMODULE_OK ||
        RedisModule_SubscribeToServerEvent(ctx, loading, on_loading) != REDISMODULE_OK ||
        RedisModule_SubscribeToServerEvent(ctx, swapdb, on_swapdb) != REDISMODULE_OK) {
        RedisModule_Log(ctx, "warning", "crdt: cannot subscribe to the role and loading events");
        return -1;
    }
    if (crdtm_slot_tags(slot_tag) < 0) {
        RedisModule_Log(ctx, "warning", "crdt: no hash tag found for some slot");
        return -1;
    }
    /* Subscribed even with the log off: a node switched off still lists the logs it holds. */
    return RedisModule_SubscribeToKeyspaceEvents(
               ctx,
               REDISMODULE_NOTIFY_GENERIC | REDISMODULE_NOTIFY_LOADED | REDISMODULE_NOTIFY_EXPIRED |
                   REDISMODULE_NOTIFY_EVICTED,
               on_keyspace_event) == REDISMODULE_OK
               ? 0
               : -1;
}

void crdtm_log_info(RedisModuleInfoCtx *ctx)
{
    unsigned long long logs = 0;
    for (unsigned s = 0; s < CRDTM_SLOTS; s++)
        logs += slots[s].n;
    RedisModule_InfoAddFieldLongLong(ctx, "log_enabled", crdtm_cfg.log_enabled);
    RedisModule_InfoAddFieldULongLong(ctx, "log_max_len", crdtm_cfg.log_max_len);
    RedisModule_InfoAddFieldULongLong(ctx, "log_max_age_ms", crdtm_cfg.log_max_age_ms);
    RedisModule_InfoAddFieldLongLong(ctx, "log_trim_acked", crdtm_cfg.log_trim_acked);
    RedisModule_InfoAddFieldULongLong(ctx, "log_streams", logs);
    RedisModule_InfoAddFieldULongLong(ctx, "log_appends", log_stats.appends);
    RedisModule_InfoAddFieldULongLong(ctx, "log_applied", log_stats.applied);
    RedisModule_InfoAddFieldULongLong(ctx, "log_restores", log_stats.restores);
    RedisModule_InfoAddFieldULongLong(ctx, "log_created", log_stats.created);
    RedisModule_InfoAddFieldULongLong(ctx, "log_trims", log_stats.trims);
    RedisModule_InfoAddFieldULongLong(ctx, "log_trimmed_entries", log_stats.trimmed);
    RedisModule_InfoAddFieldULongLong(ctx, "log_load_errors", log_stats.load_errors);
}
