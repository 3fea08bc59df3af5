/* changelog.c - crdt.so's durable change log: a Redis Stream per hash slot, CRDT.LOG.* commands
 *
 * Every write on a primary appends one entry to the change log of the key's slot, a stream named
 * crdt:log:{TAG}:EPOCH. The entry is one field, e, whose value packs the key, the origin (if any)
 * and the delta (libcrdt binary encoding): crdtm_entry_encode in logpos.c. One field, not one per
 * part: each field is a listpack append, and the append is most of the log's cost per write.
 * TAG hashes to the slot, so the log lives in its slot: it is replicated, persisted and migrated
 * with the keys it describes.
 * EPOCH is 64 random bits drawn when the stream is created: the identity of the log, written into
 * every position a reader gets, so a position is never accepted by another log.
 *
 * A slot normally holds one log. It can hold more after a resharding (the target wrote to a log
 * of its own before the source's arrived): new entries go to the log with the greatest epoch and
 * readers follow every log CRDT.LOG.LIST names. The module knows which logs exist from its own
 * appends and from keyspace notifications (xadd on replicas, restore on migration targets, loaded
 * at RDB load, del/expired/evicted); the key itself is checked before each use.
 *
 * Propagation: the module appends with RedisModule_StreamAdd. A write whose delta the module
 * replicates itself (crdtm_changed) goes to replicas and the AOF as one command,
 * CRDT.LOG.APPLY log id key entry (id as 16 bytes), which merges the entry's delta and appends the
 * same entry with the same ID; other appends (CRDT.MERGE, RESTORE, replicated verbatim by their
 * callers) replicate the entry as XADD log id e entry. An exact XTRIM MINID follows when the append
 * trimmed (Redis wraps the command's propagation in MULTI/EXEC then). Replicas and AOF loading
 * apply those and append nothing themselves.
 */
#include "crdt_module.h"
#include "logpos.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#define READ_COUNT_MAX 10000

/* A log the registry knows, with the two counters CRDT.LOG.READ needs that the module API has no
 * getter for: the stream's entries-added and last-generated-id. They are what XINFO STREAM says,
 * kept by the module's own appends (valid) and dropped (valid false: the next read asks XINFO
 * once and keeps its answer) on anything else that could change them: another client's XADD or
 * XSETID, RESTORE, RDB loading, RENAME/COPY/MOVE onto the name, SWAPDB, loading. XTRIM and XDEL
 * change neither counter. db: the database the counters are of. */
typedef struct log_ent {
    uint64_t epoch;
    uint64_t added;
    RedisModuleStreamID last;
    int db;
    bool valid;
    bool tail; /* and last is the ID of the stream's last entry (nothing deleted it since) */
} log_ent_t;

typedef struct slot_logs {
    log_ent_t *logs; /* ascending epochs; the last is where appends go */
    uint32_t n, cap;
    uint32_t appends;            /* since the last age check */
    uint64_t cur_epoch;          /* the epoch cur_name names (0: none) */
    RedisModuleString *cur_name; /* name of the log appends go to, kept between writes */
} slot_logs_t;

static char slot_tag[CRDTM_SLOTS][CRDTM_TAG_MAX];
static slot_logs_t slots[CRDTM_SLOTS];
static RedisModuleString *field_e;
/* The origin the next appends carry (crdtm_log_set_origin; 0: none, the field is left out). */
static uint64_t log_origin;
static struct {
    unsigned long long appends, applied, trims, trimmed, restores, created, counter_reads;
} log_stats;

static log_ent_t *registry_find(unsigned slot, uint64_t epoch)
{
    slot_logs_t *sl = &slots[slot];
    for (uint32_t i = sl->n; i-- > 0;)
        if (sl->logs[i].epoch == epoch)
            return &sl->logs[i];
    return NULL;
}

static void registry_add(unsigned slot, uint64_t epoch)
{
    slot_logs_t *sl = &slots[slot];
    uint32_t i = 0;
    while (i < sl->n && sl->logs[i].epoch < epoch)
        i++;
    if (i < sl->n && sl->logs[i].epoch == epoch)
        return;
    if (sl->n == sl->cap) {
        uint32_t cap = sl->cap ? sl->cap * 2 : 2;
        log_ent_t *p = realloc(sl->logs, cap * sizeof(*p));
        if (!p)
            return; /* the key is still found again by its next notification */
        sl->logs = p;
        sl->cap = cap;
    }
    memmove(&sl->logs[i + 1], &sl->logs[i], (sl->n - i) * sizeof(*sl->logs));
    sl->logs[i] = (log_ent_t){.epoch = epoch};
    sl->n++;
}

static void registry_remove(unsigned slot, uint64_t epoch)
{
    slot_logs_t *sl = &slots[slot];
    for (uint32_t i = 0; i < sl->n; i++)
        if (sl->logs[i].epoch == epoch) {
            memmove(&sl->logs[i], &sl->logs[i + 1], (sl->n - i - 1) * sizeof(*sl->logs));
            sl->n--;
            return;
        }
}

/* Every log's counters are asked of XINFO again (SWAPDB, loading: keys change without a
 * notification per key). */
static void registry_invalidate_all(void)
{
    for (unsigned s = 0; s < CRDTM_SLOTS; s++)
        for (uint32_t i = 0; i < slots[s].n; i++)
            slots[s].logs[i].valid = false;
}

/* Nonzero while the module itself adds to a log (it keeps the counters then): the keyspace
 * notifications of its own StreamAdd are not news. */
static int self_write;

/* After one entry with ID id went into the log (slot, epoch) of db: the counters follow if they
 * were valid for db before (was_valid), or start over if the stream was created by this add. */
static void counters_added(unsigned slot, uint64_t epoch, int db, bool was_valid, bool created,
                           uint64_t added_before, const RedisModuleStreamID *id)
{
    log_ent_t *e = registry_find(slot, epoch);
    if (!e)
        return;
    if (created) {
        *e = (log_ent_t){
            .epoch = epoch, .added = 1, .last = *id, .db = db, .valid = true, .tail = true};
    } else if (was_valid && e->db == db) {
        e->added = added_before + 1;
        e->last = *id;
        e->valid = e->tail = true;
    } else {
        e->valid = false;
    }
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

bool crdtm_log_should_append(RedisModuleCtx *ctx)
{
    if (!crdtm_cfg.log_enabled)
        return false;
    /* Replicas and AOF loading receive the primary's XADDs; they must not add their own. */
    int f = RedisModule_GetContextFlags(ctx);
    return (f & REDISMODULE_CTX_FLAGS_MASTER) && !(f & REDISMODULE_CTX_FLAGS_LOADING) &&
           !(f & REDISMODULE_CTX_FLAGS_REPLICATED);
}

/* Longest "MS-SEQ" text with its NUL. */
#define ID_TEXT_MAX 42

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

/* "MS-SEQ" of an ID into buf (ID_TEXT_MAX bytes), NUL-terminated; its length. Done by hand: on
 * the append path snprintf cost as much as a fifth of the log's work. */
static size_t format_id(char *buf, const RedisModuleStreamID *id)
{
    size_t n = put_u64(buf, id->ms);
    buf[n++] = '-';
    n += put_u64(buf + n, id->seq);
    buf[n] = '\0';
    return n;
}

/* "MS-SEQ" -> id; false on anything else. */
static bool parse_id(const char *s, size_t len, RedisModuleStreamID *id)
{
    char buf[48];
    if (len == 0 || len >= sizeof(buf))
        return false;
    memcpy(buf, s, len);
    buf[len] = '\0';
    unsigned long long ms, seq;
    char tail;
    if (sscanf(buf, "%llu-%llu%c", &ms, &seq, &tail) != 2)
        return false;
    id->ms = ms;
    id->seq = seq;
    return true;
}

/* The ID as CRDT.LOG.APPLY carries it: ms and seq, 8 bytes each, big-endian (no text to make
 * and parse per write). */
#define ID_BIN_LEN 16

static void id_to_bin(char *p, const RedisModuleStreamID *id)
{
    for (int i = 0; i < 8; i++) {
        p[i] = (char)(id->ms >> (56 - 8 * i));
        p[8 + i] = (char)(id->seq >> (56 - 8 * i));
    }
}

static bool id_from_bin(const char *p, size_t len, RedisModuleStreamID *id)
{
    if (len != ID_BIN_LEN)
        return false;
    id->ms = id->seq = 0;
    for (int i = 0; i < 8; i++) {
        id->ms = id->ms << 8 | (uint8_t)p[i];
        id->seq = id->seq << 8 | (uint8_t)p[8 + i];
    }
    return true;
}

/* The next entry of an open stream iterator, its fields skipped (Redis's iterator must be walked
 * through every field of an entry before the next ID). */
static bool next_entry_id(RedisModuleKey *lk, RedisModuleStreamID *id)
{
    long nf;
    if (RedisModule_StreamIteratorNextID(lk, id, &nf) != REDISMODULE_OK)
        return false;
    /* NULL pointers: no strings are made (without auto memory they would have to be freed) */
    while (RedisModule_StreamIteratorNextField(lk, NULL, NULL) == REDISMODULE_OK)
        ;
    return true;
}

static int id_cmp(const RedisModuleStreamID *a, const RedisModuleStreamID *b)
{
    if (a->ms != b->ms)
        return a->ms < b->ms ? -1 : 1;
    if (a->seq != b->seq)
        return a->seq < b->seq ? -1 : 1;
    return 0;
}

/* The smallest last-delivered-id of the log's consumer groups; false when it has none. */
static bool acked_upto(RedisModuleCtx *ctx, const char *name, size_t nlen, RedisModuleStreamID *out)
{
    RedisModuleCallReply *r = RedisModule_Call(ctx, "XINFO", "cb", "GROUPS", name, nlen);
    bool any = false;
    if (r && RedisModule_CallReplyType(r) == REDISMODULE_REPLY_ARRAY) {
        size_t ng = RedisModule_CallReplyLength(r);
        for (size_t g = 0; g < ng; g++) {
            RedisModuleCallReply *grp = RedisModule_CallReplyArrayElement(r, g);
            size_t nf = RedisModule_CallReplyLength(grp);
            for (size_t f = 0; f + 1 < nf; f += 2) {
                size_t l;
                const char *fname =
                    RedisModule_CallReplyStringPtr(RedisModule_CallReplyArrayElement(grp, f), &l);
                if (!fname || l != 17 || memcmp(fname, "last-delivered-id", 17) != 0)
                    continue;
                const char *v = RedisModule_CallReplyStringPtr(
                    RedisModule_CallReplyArrayElement(grp, f + 1), &l);
                RedisModuleStreamID id;
                if (v && parse_id(v, l, &id) && (!any || id_cmp(&id, out) < 0)) {
                    *out = id;
                    any = true;
                }
            }
        }
    }
    if (r)
        RedisModule_FreeCallReply(r);
    return any;
}

/* How far past log-max-len a log grows before it is trimmed back to log-max-len: a trim is paid
 * once per that many appends, not per append. Each trim has a fixed cost besides the entries it
 * removes (Redis walks the deleted entries left at the head of the stream's first node, to find
 * the new first ID, and the trim is one more propagated command), so fewer, bigger trims: a
 * quarter of the bound, at least 16. */
static uint64_t trim_slack(uint64_t max)
{
    return max / 4 > 16 ? max / 4 : 16;
}

/* Trims an open log to its bounds: the newest log-max-len entries, none older than
 * log-max-age-ms, and with log-trim-acked nothing a consumer group has not acknowledged. Exact,
 * and replicated as XTRIM name MAXLEN <log-max-len> when only the length bound applies (replicas
 * hold the same entries: they keep the same ones), else as XTRIM name MINID <first id kept>. */
static void log_trim(RedisModuleCtx *ctx, RedisModuleKey *lk, const char *name, size_t nlen,
                     bool check_age)
{
    size_t len = RedisModule_ValueLength(lk);
    RedisModuleStreamID cut = {0, 0};
    bool have_cut = false;
    uint64_t max = crdtm_cfg.log_max_len;
    bool by_len = max && len > max + trim_slack(max);
    bool by_age = check_age && crdtm_cfg.log_max_age_ms;
    if (!by_len && !by_age)
        return;
    long long n;
    if (by_len && !by_age && !crdtm_cfg.log_trim_acked) {
        /* the common case: Redis finds the cut itself (no walk of ours over the entries) */
        self_write++;
        n = RedisModule_StreamTrimByLength(lk, 0, (long long)max);
        self_write--;
        if (n > 0) {
            char mtext[24];
            size_t ml = put_u64(mtext, max);
            RedisModule_Replicate(ctx, "XTRIM", "bcb", name, nlen, "MAXLEN", mtext, ml);
        }
    } else {
        if (by_len) {
            size_t skip = len - max;
            if (RedisModule_StreamIteratorStart(lk, 0, NULL, NULL) == REDISMODULE_OK) {
                RedisModuleStreamID id;
                for (size_t i = 0; i <= skip && next_entry_id(lk, &id); i++)
                    cut = id;
                RedisModule_StreamIteratorStop(lk);
                have_cut = true;
            }
        }
        if (by_age) {
            long long now = RedisModule_Milliseconds();
            if ((uint64_t)now > crdtm_cfg.log_max_age_ms) {
                RedisModuleStreamID age = {(uint64_t)now - crdtm_cfg.log_max_age_ms, 0};
                if (!have_cut || id_cmp(&age, &cut) > 0)
                    cut = age;
                have_cut = true;
            }
        }
        if (!have_cut)
            return;
        if (crdtm_cfg.log_trim_acked) {
            RedisModuleStreamID acked;
            if (acked_upto(ctx, name, nlen, &acked)) {
                /* keep every entry after the slowest group's last-delivered-id */
                acked.seq++;
                if (acked.seq == 0)
                    acked.ms++;
                if (id_cmp(&acked, &cut) < 0)
                    cut = acked;
            }
        }
        self_write++;
        n = RedisModule_StreamTrimByID(lk, 0, &cut);
        self_write--;
        if (n > 0) {
            char idtext[ID_TEXT_MAX];
            size_t il = format_id(idtext, &cut);
            RedisModule_Replicate(ctx, "XTRIM", "bcb", name, nlen, "MINID", idtext, il);
        }
    }
    if (n > 0) {
        log_stats.trims++;
        log_stats.trimmed += (unsigned long long)n;
    }
}

int crdtm_log_append(RedisModuleCtx *ctx, RedisModuleString *key, const void *data, size_t len,
                     bool merge)
{
    size_t klen;
    const char *k = RedisModule_StringPtrLen(key, &klen);
    unsigned slot = crdtm_keyslot(k, klen);
    slot_logs_t *sl = &slots[slot];
    char name[CRDTM_LOG_NAME_MAX];
    size_t nlen = 0;
    RedisModuleKey *lk = NULL;
    bool created = false;
    while (sl->n && !lk) {
        uint64_t epoch = sl->logs[sl->n - 1].epoch;
        if (sl->cur_epoch != epoch || !sl->cur_name) {
            /* the name is made once per log, not per write */
            if (sl->cur_name)
                RedisModule_FreeString(NULL, sl->cur_name);
            nlen = crdtm_log_name(name, slot_tag[slot], epoch);
            sl->cur_name = RedisModule_CreateString(NULL, name, nlen);
            sl->cur_epoch = epoch;
        }
        lk = RedisModule_OpenKey(ctx, sl->cur_name, REDISMODULE_READ | REDISMODULE_WRITE);
        if (RedisModule_KeyType(lk) != REDISMODULE_KEYTYPE_STREAM) {
            /* gone (FLUSHALL, DEL, moved away) or replaced by another type: forget it */
            RedisModule_CloseKey(lk);
            lk = NULL;
            sl->n--;
        }
    }
    if (!lk) {
        uint64_t epoch = new_epoch();
        nlen = crdtm_log_name(name, slot_tag[slot], epoch);
        RedisModuleString *ns = RedisModule_CreateString(ctx, name, nlen);
        lk = RedisModule_OpenKey(ctx, ns, REDISMODULE_READ | REDISMODULE_WRITE);
        RedisModule_FreeString(ctx, ns);
        if (RedisModule_KeyType(lk) != REDISMODULE_KEYTYPE_EMPTY) { /* 2^-64, but say so */
            RedisModule_CloseKey(lk);
            RedisModule_Log(ctx, "warning", "crdt: change log name %s is taken", name);
            return -1;
        }
        registry_add(slot, epoch);
        created = true;
        log_stats.created++;
        if (sl->cur_name)
            RedisModule_FreeString(NULL, sl->cur_name);
        sl->cur_name = RedisModule_CreateString(NULL, name, nlen);
        sl->cur_epoch = epoch;
    }
    /* The entry is one field, e: key, origin and delta packed (logpos.h). One scratch buffer for
     * every append (commands run on the main thread only); a huge entry does not keep it. */
    static char *scratch;
    static size_t scratch_cap;
    /* the log's name, kept in cur_name for the rest of the call */
    const char *np = RedisModule_StringPtrLen(sl->cur_name, &nlen);
    size_t need = CRDTM_ENTRY_MAX(klen, len);
    if (need > scratch_cap) {
        size_t cap = need < 256 ? 256 : need;
        char *p = crdtm_realloc(scratch, cap);
        if (!p) {
            RedisModule_CloseKey(lk);
            RedisModule_Log(ctx, "warning", "crdt: out of memory for a change log entry");
            return -1;
        }
        scratch = p;
        scratch_cap = cap;
    }
    size_t elen = crdtm_entry_encode(scratch, k, klen, log_origin, data, len);
    RedisModuleString *fields[2] = {field_e, RedisModule_CreateString(ctx, scratch, elen)};
    if (scratch_cap > 1u << 20) {
        crdtm_free(scratch);
        scratch = NULL;
        scratch_cap = 0;
    }
    RedisModuleStreamID id;
    uint64_t epoch = sl->cur_epoch;
    int db = RedisModule_GetSelectedDb(ctx);
    const log_ent_t *le = &sl->logs[sl->n - 1]; /* the log appended to (cur_epoch) */
    bool was_valid = le->valid && le->db == db;
    uint64_t added_before = le->added;
    self_write++;
    int rc = RedisModule_StreamAdd(lk, REDISMODULE_STREAM_ADD_AUTOID, &id, fields, 1);
    self_write--;
    if (rc == REDISMODULE_OK) {
        counters_added(slot, epoch, db, was_valid, created, added_before, &id);
        /* One command to replicas and the AOF: CRDT.LOG.APPLY log id key entry (the write's
         * merge and the entry, the ID as 16 bytes) when the caller left its replication to us,
         * else the entry as XADD log id e entry. The strings go shared ("s": not copied); only
         * the ID's is made. */
        if (merge) {
            char idbin[ID_BIN_LEN];
            id_to_bin(idbin, &id);
            RedisModule_Replicate(ctx, "CRDT.LOG.APPLY", "sbss", sl->cur_name, idbin, sizeof(idbin),
                                  key, fields[1]);
        } else {
            char idtext[ID_TEXT_MAX];
            size_t il = format_id(idtext, &id);
            RedisModule_Replicate(ctx, "XADD", "sbss", sl->cur_name, idtext, il, field_e,
                                  fields[1]);
        }
        log_stats.appends++;
        bool check_age = ++sl->appends >= 64;
        if (check_age)
            sl->appends = 0;
        log_trim(ctx, lk, np, nlen, check_age);
    } else {
        RedisModule_Log(ctx, "warning", "crdt: append to change log %.*s failed", (int)nlen, np);
    }
    RedisModule_FreeString(ctx, fields[1]);
    RedisModule_CloseKey(lk);
    return rc == REDISMODULE_OK ? 0 : -1;
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

/* ---- CRDT.LOG.APPLY log id key entry --------------------------------------------------------- */

/* What a primary propagates for a write it logged (crdtm_log_append with merge): one command
 * instead of CRDT.MERGE and XADD. id is the entry's stream ID as 16 bytes (ms, seq big-endian),
 * entry the value of its field e (logpos.h), which names key. A replica, or a server loading its
 * AOF, merges the entry's delta into key as CRDT.MERGE does, then appends the entry verbatim with
 * the same ID to the same log. Refused from clients: on a primary it would append an entry nobody
 * wrote. */
int crdtm_cmd_log_apply(RedisModuleCtx *ctx, RedisModuleString **argv, int argc)
{
    if (argc != 5)
        return RedisModule_WrongArity(ctx);
    int flags = RedisModule_GetContextFlags(ctx);
    if (!(flags & (REDISMODULE_CTX_FLAGS_REPLICATED | REDISMODULE_CTX_FLAGS_LOADING)))
        return RedisModule_ReplyWithError(
            ctx, "ERR CRDT.LOG.APPLY is what a primary sends its replicas and AOF for a logged "
                 "write; only the replication link and AOF loading may run it");
    size_t nlen, il, kl, el;
    const char *name = RedisModule_StringPtrLen(argv[1], &nlen);
    const char *idb = RedisModule_StringPtrLen(argv[2], &il);
    const char *k = RedisModule_StringPtrLen(argv[3], &kl);
    const char *ep = RedisModule_StringPtrLen(argv[4], &el);
    uint64_t epoch;
    unsigned slot;
    RedisModuleStreamID id;
    crdtm_entry_t e;
    if (!crdtm_log_name_parse(name, nlen, &epoch, &slot))
        return RedisModule_ReplyWithError(ctx, "ERR not a change log name");
    if (!id_from_bin(idb, il, &id))
        return RedisModule_ReplyWithError(ctx, "ERR bad entry ID (16 bytes: ms, seq)");
    if (crdtm_entry_decode(ep, el, &e) < 0 || e.klen != kl || memcmp(e.key, k, kl) != 0 ||
        crdtm_keyslot(k, kl) != slot)
        return RedisModule_ReplyWithError(
            ctx, "ERR the entry must be of the key given, and the key of the log's slot");
    char msg[320];
    int changed = crdtm_merge_one(ctx, argv[3], e.delta, e.dlen, msg, sizeof(msg));
    /* The entry goes in whatever the merge did: the log mirrors the primary's. */
    RedisModuleKey *lk = RedisModule_OpenKey(ctx, argv[1], REDISMODULE_READ | REDISMODULE_WRITE);
    int kt = RedisModule_KeyType(lk);
    int rc = REDISMODULE_ERR;
    RedisModuleString *fields[2] = {field_e, argv[4]};
    int db = RedisModule_GetSelectedDb(ctx);
    const log_ent_t *le = registry_find(slot, epoch);
    bool was_valid = le && le->valid && le->db == db;
    uint64_t added_before = le ? le->added : 0;
    if (kt == REDISMODULE_KEYTYPE_EMPTY || kt == REDISMODULE_KEYTYPE_STREAM) {
        self_write++;
        rc = RedisModule_StreamAdd(lk, 0, &id, fields, 1);
        self_write--;
    }
    RedisModule_CloseKey(lk);
    if (rc == REDISMODULE_OK) {
        registry_add(slot, epoch);
        counters_added(slot, epoch, db, was_valid, kt == REDISMODULE_KEYTYPE_EMPTY, added_before,
                       &id);
        log_stats.applied++;
    } else {
        char idtext[ID_TEXT_MAX];
        format_id(idtext, &id);
        RedisModule_Log(ctx, "warning", "crdt: entry %s of change log %.*s not applied", idtext,
                        (int)nlen, name);
    }
    /* a replica's own AOF and replicas get the command as it came */
    RedisModule_ReplicateVerbatim(ctx);
    if (changed < 0)
        return RedisModule_ReplyWithError(ctx, msg);
    return RedisModule_ReplyWithLongLong(ctx, changed);
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
        if (!strcmp(event, "del") || !strcmp(event, "expired") || !strcmp(event, "evicted")) {
            registry_remove(slot, epoch);
            return REDISMODULE_OK;
        }
        if (type == REDISMODULE_NOTIFY_LOADED || !strcmp(event, "xadd") ||
            !strcmp(event, "restore"))
            registry_add(slot, epoch);
        /* whatever else changed the stream, unless the module did (it keeps the counters) or it
         * only removed entries (XTRIM, XDEL: entries-added and last-generated-id stay) */
        if (!self_write && strcmp(event, "xtrim") != 0) {
            log_ent_t *e = registry_find(slot, epoch);
            if (e && strcmp(event, "xdel") == 0)
                e->tail = false; /* the last entry may be gone; the counters stay */
            else if (e)
                e->valid = false;
        }
        return REDISMODULE_OK;
    }
    /* whatever happened to the key (deleted, expired, evicted, renamed, restored, loaded), its
     * slot's fingerprints must look at it again */
    if (type != REDISMODULE_NOTIFY_STREAM)
        crdtm_rsx_touch(ctx, k, klen);
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
        for (uint32_t i = 0; i < slots[s].n; i++) {
            char name[CRDTM_LOG_NAME_MAX];
            size_t nlen = crdtm_log_name(name, slot_tag[s], slots[s].logs[i].epoch);
            RedisModuleString *ns = RedisModule_CreateString(ctx, name, nlen);
            if (RedisModule_KeyExists(ctx, ns)) {
                RedisModule_ReplyWithStringBuffer(ctx, name, nlen);
                n++;
            }
            RedisModule_FreeString(ctx, ns);
        }
    }
    RedisModule_ReplySetArrayLength(ctx, n);
    return REDISMODULE_OK;
}

/* ---- CRDT.LOG.READ log position count ------------------------------------------------------- */

/* entries-added and last-generated-id of a stream, from XINFO STREAM (the module API has no
 * getter for them). */
static int stream_counters(RedisModuleCtx *ctx, RedisModuleString *name, uint64_t *added,
                           RedisModuleStreamID *last)
{
    RedisModuleCallReply *r = RedisModule_Call(ctx, "XINFO", "cs", "STREAM", name);
    int found = 0;
    if (r && RedisModule_CallReplyType(r) == REDISMODULE_REPLY_ARRAY) {
        size_t n = RedisModule_CallReplyLength(r);
        for (size_t i = 0; i + 1 < n; i += 2) {
            size_t l;
            const char *f =
                RedisModule_CallReplyStringPtr(RedisModule_CallReplyArrayElement(r, i), &l);
            RedisModuleCallReply *v = RedisModule_CallReplyArrayElement(r, i + 1);
            if (f && l == 13 && !memcmp(f, "entries-added", 13)) {
                *added = (uint64_t)RedisModule_CallReplyInteger(v);
                found |= 1;
            } else if (f && l == 17 && !memcmp(f, "last-generated-id", 17)) {
                const char *s = RedisModule_CallReplyStringPtr(v, &l);
                if (s && parse_id(s, l, last))
                    found |= 2;
            }
        }
    }
    if (r)
        RedisModule_FreeCallReply(r);
    return found == 3 ? 0 : -1;
}

/* entries-added and last-generated-id of the open log lk (name, its slot and epoch): the counters
 * the module keeps (log_ent_t), or XINFO's when it has none it can vouch for. 0 or -1. */
static int log_counters(RedisModuleCtx *ctx, RedisModuleKey *lk, RedisModuleString *name,
                        unsigned slot, uint64_t epoch, uint64_t *added, RedisModuleStreamID *last)
{
    log_ent_t *le = registry_find(slot, epoch);
    int db = RedisModule_GetSelectedDb(ctx);
    if (le && le->valid && le->db == db && RedisModule_ValueLength(lk) <= le->added) {
        *added = le->added;
        *last = le->last;
        return 0;
    }
    if (stream_counters(ctx, name, added, last) < 0)
        return -1;
    log_stats.counter_reads++;
    if (le)
        *le = (log_ent_t){.epoch = epoch, .added = *added, .last = *last, .db = db, .valid = true};
    return 0;
}

/* One entry read: its ID and the value of its field e (NULL: none, an entry not of the module's
 * making). */
typedef struct read_ent {
    RedisModuleStreamID id;
    RedisModuleString *ev;
} read_ent_t;

/* The entries read by the last collect (commands run on the main thread only). */
static read_ent_t *rd_ents;
static size_t rd_cap;

/* The entry the iterator of lk is at (id) into rd_ents[n]: its e value kept as a string (the
 * iterator makes new strings, no auto memory here: the others are freed at once). false when
 * out of memory (nothing kept). */
static bool take_entry(RedisModuleCtx *ctx, RedisModuleKey *lk, const RedisModuleStreamID *id,
                       long n)
{
    RedisModuleString *ev = NULL, *f, *v;
    while (RedisModule_StreamIteratorNextField(lk, &f, &v) == REDISMODULE_OK) {
        size_t fl;
        const char *fp = RedisModule_StringPtrLen(f, &fl);
        if (fl == 1 && fp[0] == 'e' && !ev)
            ev = v;
        else
            RedisModule_FreeString(ctx, v);
        RedisModule_FreeString(ctx, f);
    }
    if ((size_t)n == rd_cap) {
        size_t cap = rd_cap ? rd_cap * 2 : 64;
        read_ent_t *p = crdtm_realloc(rd_ents, cap * sizeof(*p));
        if (!p) {
            if (ev)
                RedisModule_FreeString(ctx, ev);
            return false;
        }
        rd_ents = p;
        rd_cap = cap;
    }
    rd_ents[n].id = *id;
    rd_ents[n].ev = ev;
    return true;
}

/* Up to count entries of the open log lk, from its first or after start, into rd_ents, in one
 * walk; their number. The values are made strings: rd_release frees them. */
static long collect(RedisModuleCtx *ctx, RedisModuleKey *lk, bool from_first,
                    const RedisModuleStreamID *start, long long count)
{
    long n = 0;
    if (RedisModule_StreamIteratorStart(lk, from_first ? 0 : REDISMODULE_STREAM_ITERATOR_EXCLUSIVE,
                                        from_first ? NULL : (RedisModuleStreamID *)start,
                                        NULL) != REDISMODULE_OK)
        return 0;
    RedisModuleStreamID id;
    long nf;
    /* out of memory: fewer entries, the position says where they end */
    while (n < count && RedisModule_StreamIteratorNextID(lk, &id, &nf) == REDISMODULE_OK &&
           take_entry(ctx, lk, &id, n))
        n++;
    RedisModule_StreamIteratorStop(lk);
    return n;
}

static void rd_release(RedisModuleCtx *ctx, long n);

/* collect(ctx, lk, false, start, count) for a follower's position near the log's end: the walk
 * goes back from the end to start, then the entries are put in order. A forward start seeks to
 * start inside its stream node by walking the node's entries from the first (stream-node-max-
 * entries, 100 by default), which cost a poll more than the few new entries it returns
 * (bench/redis_poll_callgrind.sh). More than count entries after start: the forward walk. */
static long collect_tail(RedisModuleCtx *ctx, RedisModuleKey *lk, const RedisModuleStreamID *start,
                         long long count)
{
    if (RedisModule_StreamIteratorStart(
            lk, REDISMODULE_STREAM_ITERATOR_REVERSE | REDISMODULE_STREAM_ITERATOR_EXCLUSIVE,
            (RedisModuleStreamID *)start, NULL) != REDISMODULE_OK)
        return collect(ctx, lk, false, start, count);
    long n = 0;
    bool whole = true;
    RedisModuleStreamID id;
    long nf;
    while (RedisModule_StreamIteratorNextID(lk, &id, &nf) == REDISMODULE_OK) {
        if (n == count || !take_entry(ctx, lk, &id, n)) {
            whole = false;
            break;
        }
        n++;
    }
    RedisModule_StreamIteratorStop(lk);
    if (!whole) { /* the oldest count are wanted, or memory ran out: forward, as before */
        rd_release(ctx, n);
        return collect(ctx, lk, false, start, count);
    }
    for (long i = 0, j = n - 1; i < j; i++, j--) {
        read_ent_t t = rd_ents[i];
        rd_ents[i] = rd_ents[j];
        rd_ents[j] = t;
    }
    return n;
}

static void rd_release(RedisModuleCtx *ctx, long n)
{
    for (long i = 0; i < n; i++)
        if (rd_ents[i].ev)
            RedisModule_FreeString(ctx, rd_ents[i].ev);
    if (rd_cap > 1024) { /* a big read does not keep its memory */
        crdtm_free(rd_ents);
        rd_ents = NULL;
        rd_cap = 0;
    }
}

/* The reply of CRDT.LOG.READ: [position, ok|truncated, entries] for the n entries collected, read
 * after the position (epoch, start, base). */
static void read_reply(RedisModuleCtx *ctx, uint64_t epoch, const RedisModuleStreamID *start,
                       uint64_t base, bool truncated, long n)
{
    crdtm_pos_t next = {
        .kind = CRDTM_POS_AT, .epoch = epoch, .ms = start->ms, .seq = start->seq, .offset = base};
    if (n) {
        next.ms = rd_ents[n - 1].id.ms;
        next.seq = rd_ents[n - 1].id.seq;
    }
    next.offset = base + (uint64_t)n;
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
        /* an entry not of the module's making (an XADD by hand) has no key and delta */
        crdtm_entry_t e = {0};
        size_t el = 0;
        const char *ep = rd_ents[i].ev ? RedisModule_StringPtrLen(rd_ents[i].ev, &el) : NULL;
        bool valid = ep && crdtm_entry_decode(ep, el, &e) == 0;
        char idtext[ID_TEXT_MAX];
        size_t il = format_id(idtext, &rd_ents[i].id);
        /* [id, k, d], or [id, k, d, origin] for an entry with an origin */
        RedisModule_ReplyWithArray(ctx, e.origin ? 4 : 3);
        RedisModule_ReplyWithStringBuffer(ctx, idtext, il);
        if (valid) {
            RedisModule_ReplyWithStringBuffer(ctx, e.key, e.klen);
            RedisModule_ReplyWithStringBuffer(ctx, e.delta, e.dlen);
        } else {
            RedisModule_ReplyWithNull(ctx);
            RedisModule_ReplyWithNull(ctx);
        }
        if (e.origin)
            RedisModule_ReplyWithLongLong(ctx, (long long)e.origin);
    }
}

int crdtm_cmd_log_read(RedisModuleCtx *ctx, RedisModuleString **argv, int argc)
{
    if (argc != 4)
        return RedisModule_WrongArity(ctx);
    size_t nlen, plen;
    const char *name = RedisModule_StringPtrLen(argv[1], &nlen);
    const char *ptext = RedisModule_StringPtrLen(argv[2], &plen);
    uint64_t epoch;
    unsigned slot;
    if (!crdtm_log_name_parse(name, nlen, &epoch, &slot))
        return RedisModule_ReplyWithError(
            ctx, "ERR not a change log name (crdt:log:{TAG}:EPOCH, as CRDT.LOG.LIST gives them)");
    crdtm_pos_t pos;
    const char *why = NULL;
    if (crdtm_pos_parse(ptext, plen, &pos, &why) < 0)
        return RedisModule_ReplyWithError(ctx, why);
    long long count;
    if (RedisModule_StringToLongLong(argv[3], &count) != REDISMODULE_OK || count < 1)
        return RedisModule_ReplyWithError(ctx, "ERR count must be a positive integer");
    if (count > READ_COUNT_MAX)
        count = READ_COUNT_MAX;
    if (pos.kind == CRDTM_POS_AT && pos.epoch != epoch) {
        char msg[160];
        snprintf(msg, sizeof(msg),
                 "ERR position belongs to another log (epoch %016llx, this log is %016llx)",
                 (unsigned long long)pos.epoch, (unsigned long long)epoch);
        return RedisModule_ReplyWithError(ctx, msg);
    }
    RedisModuleKey *lk = RedisModule_OpenKey(ctx, argv[1], REDISMODULE_READ);
    int kt = RedisModule_KeyType(lk);
    if (kt != REDISMODULE_KEYTYPE_STREAM) {
        RedisModule_CloseKey(lk);
        if (kt == REDISMODULE_KEYTYPE_EMPTY)
            return RedisModule_ReplyWithError(
                ctx, "ERR no such log here (deleted, emptied by trimming, or not in this db)");
        return RedisModule_ReplyWithError(ctx, REDISMODULE_ERRORMSG_WRONGTYPE);
    }
    uint64_t added = 0;
    RedisModuleStreamID last = {0, 0};
    if (log_counters(ctx, lk, argv[1], slot, epoch, &added, &last) < 0) {
        RedisModule_CloseKey(lk);
        return RedisModule_ReplyWithError(ctx, "ERR cannot read the log's counters (XINFO)");
    }
    uint64_t length = RedisModule_ValueLength(lk);
    /* Trimming removes the oldest entries: the entries numbered trimmed+1 .. added remain. */
    uint64_t trimmed = added >= length ? added - length : 0;
    bool truncated = false, from_first = false;
    uint64_t base = 0;
    RedisModuleStreamID start = {0, 0};
    switch (pos.kind) {
    case CRDTM_POS_START:
        truncated = trimmed > 0;
        from_first = true;
        base = trimmed;
        break;
    case CRDTM_POS_END:
        base = added;
        start = last;
        break;
    case CRDTM_POS_AT:
        start.ms = pos.ms;
        start.seq = pos.seq;
        /* A position past the log's end (entries lost in a failover before they reached the
         * replica) or before what trimming kept: the reader missed changes. */
        if (pos.offset > added || id_cmp(&start, &last) > 0 || pos.offset < trimmed) {
            truncated = true;
            from_first = true;
            base = trimmed;
        } else {
            base = pos.offset;
        }
        break;
    }
    /* The entries come first in the stream but last in the reply: collected in one walk, then
     * replied after the position they end at. */
    long n = pos.kind != CRDTM_POS_END ? collect(ctx, lk, from_first, &start, count) : 0;
    read_reply(ctx, epoch, &start, base, truncated, n);
    rd_release(ctx, n);
    RedisModule_CloseKey(lk);
    return REDISMODULE_OK;
}

/* ---- CRDT.LOG.POLL count log position [log position ...] ------------------------------------ */

/* A follower's one command per node and poll: for every log given with its position, the reply
 * of CRDT.LOG.READ log position n, but only for the logs with something to read (entries after
 * the position, a position of another kind than EPOCH:MS-SEQ:OFFSET, a position past the log's
 * end, an error): -> [[log, <LOG.READ reply>], ..., more]. An idle log costs one seek, not an
 * XINFO and a reply. `count` bounds the entries of the whole reply; more is 1 when it ran out
 * before every log was looked at (poll again at once). The logs need not be in one slot: like
 * CRDT.LOG.LIST the command names no keys, it reads the logs this node holds. */
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
        size_t nlen, plen;
        const char *name = RedisModule_StringPtrLen(argv[i], &nlen);
        const char *ptext = RedisModule_StringPtrLen(argv[i + 1], &plen);
        uint64_t epoch;
        unsigned slot;
        crdtm_pos_t pos;
        const char *why = NULL;
        long long take = 1, cost = 1; /* what LOG.READ may return / what the budget pays */
        bool parsed = crdtm_log_name_parse(name, nlen, &epoch, &slot) &&
                      crdtm_pos_parse(ptext, plen, &pos, &why) == 0;
        RedisModuleKey *lk = parsed ? RedisModule_OpenKey(ctx, argv[i], REDISMODULE_READ) : NULL;
        if (lk && RedisModule_KeyType(lk) == REDISMODULE_KEYTYPE_STREAM) {
            const log_ent_t *le = NULL;
            if (pos.kind == CRDTM_POS_AT && pos.epoch == epoch)
                le = registry_find(slot, epoch);
            if (le && le->valid && le->tail && le->db == RedisModule_GetSelectedDb(ctx) &&
                pos.offset == le->added && pos.ms == le->last.ms && pos.seq == le->last.seq &&
                RedisModule_ValueLength(lk) <= le->added) {
                /* at the last entry, by the counters the module keeps: nothing new, no seek */
                RedisModule_CloseKey(lk);
                continue;
            }
            uint64_t added;
            RedisModuleStreamID glast;
            if (pos.kind == CRDTM_POS_AT && pos.epoch == epoch &&
                log_counters(ctx, lk, argv[i], slot, epoch, &added, &glast) == 0) {
                /* A position LOG.READ would not call truncated: its reply from one walk (the
                 * entries after the position, up to what the budget has left), here. */
                uint64_t length = RedisModule_ValueLength(lk);
                uint64_t trimmed = added >= length ? added - length : 0;
                RedisModuleStreamID at = {pos.ms, pos.seq};
                if (!(pos.offset > added || id_cmp(&at, &glast) > 0 || pos.offset < trimmed)) {
                    long got = collect_tail(ctx, lk, &at, left);
                    bool past_end = false;
                    if (got == 0) {
                        /* after the last entry (it was deleted): in the reply, as before */
                        RedisModuleStreamID tl;
                        if (RedisModule_StreamIteratorStart(lk, REDISMODULE_STREAM_ITERATOR_REVERSE,
                                                            NULL, NULL) == REDISMODULE_OK) {
                            past_end = next_entry_id(lk, &tl) && id_cmp(&at, &tl) > 0;
                            RedisModule_StreamIteratorStop(lk);
                        }
                    }
                    if (got || past_end) {
                        RedisModule_ReplyWithArray(ctx, 2);
                        RedisModule_ReplyWithString(ctx, argv[i]);
                        read_reply(ctx, epoch, &at, pos.offset, false, got);
                        left -= got ? got : left;
                        n++;
                    }
                    rd_release(ctx, got);
                    RedisModule_CloseKey(lk);
                    continue;
                }
            }
            if (pos.kind == CRDTM_POS_AT && pos.epoch == epoch) {
                RedisModuleStreamID at = {pos.ms, pos.seq}, last = {0, 0}, id;
                bool have_last = false;
                if (RedisModule_StreamIteratorStart(lk, REDISMODULE_STREAM_ITERATOR_REVERSE, NULL,
                                                    NULL) == REDISMODULE_OK) {
                    have_last = next_entry_id(lk, &last);
                    RedisModule_StreamIteratorStop(lk);
                }
                long long k = 0;
                if (have_last && id_cmp(&last, &at) > 0 &&
                    RedisModule_StreamIteratorStart(lk, REDISMODULE_STREAM_ITERATOR_EXCLUSIVE, &at,
                                                    NULL) == REDISMODULE_OK) {
                    while (k < left && next_entry_id(lk, &id))
                        k++;
                    RedisModule_StreamIteratorStop(lk);
                }
                bool past_end = have_last && id_cmp(&at, &last) > 0;
                if (k == 0 && !past_end) {
                    RedisModule_CloseKey(lk);
                    continue; /* nothing new: not in the reply */
                }
                /* past the end, LOG.READ reads from the first entry (truncated) */
                take = cost = k ? k : left;
            } else if (pos.kind == CRDTM_POS_START) {
                long long len = (long long)RedisModule_ValueLength(lk);
                take = cost = len < left ? (len ? len : 1) : left;
            } else if (pos.kind == CRDTM_POS_END) {
                cost = 0; /* just the position */
            }
        }
        if (lk)
            RedisModule_CloseKey(lk);
        char cnt[24];
        int cl = snprintf(cnt, sizeof(cnt), "%lld", take);
        RedisModuleString *cs = RedisModule_CreateString(ctx, cnt, (size_t)cl);
        RedisModuleString *rargv[4] = {argv[0], argv[i], argv[i + 1], cs};
        RedisModule_ReplyWithArray(ctx, 2);
        RedisModule_ReplyWithString(ctx, argv[i]);
        crdtm_cmd_log_read(ctx, rargv, 4);
        RedisModule_FreeString(ctx, cs);
        left -= cost < left ? cost : left;
        n++;
    }
    RedisModule_ReplyWithLongLong(ctx, more);
    RedisModule_ReplySetArrayLength(ctx, n + 1);
    return REDISMODULE_OK;
}

/* ---- load and INFO -------------------------------------------------------------------------- */

/* Server events after which keys are other keys without a notification per key (Redis 7.0
 * numbers; redismodule.h declares only FLUSHDB, which rsx.c holds: a module has one callback per
 * event, so FLUSHDB is not subscribed here; after a flush a log's key is gone, and whatever
 * creates it again notifies). */
#define LOG_EVENT_LOADING 3
#define LOG_EVENT_SWAPDB 11
#define LOG_EVENT_REPL_ASYNC_LOAD 14

static void on_keys_replaced(RedisModuleCtx *ctx, RedisModuleEvent eid, uint64_t subevent,
                             void *data)
{
    (void)ctx;
    (void)eid;
    (void)subevent;
    (void)data;
    registry_invalidate_all();
}

int crdtm_log_init(RedisModuleCtx *ctx)
{
    static const uint64_t events[] = {LOG_EVENT_LOADING, LOG_EVENT_SWAPDB,
                                      LOG_EVENT_REPL_ASYNC_LOAD};
    for (size_t i = 0; i < sizeof(events) / sizeof(events[0]); i++) {
        RedisModuleEvent ev = {events[i], 1};
        if (RedisModule_SubscribeToServerEvent(ctx, ev, on_keys_replaced) != REDISMODULE_OK) {
            RedisModule_Log(ctx, "warning", "crdt: cannot subscribe to server event %llu",
                            (unsigned long long)events[i]);
            return -1;
        }
    }
    if (crdtm_slot_tags(slot_tag) < 0) {
        RedisModule_Log(ctx, "warning", "crdt: no hash tag found for some slot");
        return -1;
    }
    field_e = RedisModule_CreateString(NULL, "e", 1);
    /* Subscribed even with the log off: a node switched off still lists the logs it holds. */
    return RedisModule_SubscribeToKeyspaceEvents(
               ctx,
               REDISMODULE_NOTIFY_GENERIC | REDISMODULE_NOTIFY_STREAM | REDISMODULE_NOTIFY_LOADED |
                   REDISMODULE_NOTIFY_EXPIRED | REDISMODULE_NOTIFY_EVICTED,
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
    RedisModule_InfoAddFieldULongLong(ctx, "log_counter_reads", log_stats.counter_reads);
}
