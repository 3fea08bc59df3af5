/* commands.c - the CRDT.* commands: argument checks, libcrdt calls, replies, delta replication */
#include "crdt_module.h"

#include <ctype.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#define ERR_SCORE "ERR score is not a finite number"
#define ERR_BOUND "ERR min or max is not a number (NaN is not allowed)"
#define ERR_SYNTAX "ERR syntax error"
#define ERR_BIG "ERR member or value is larger than 64 MiB"
/* Key-spec flags of a command that reads a key's value. */
#define RO_ACCESS (REDISMODULE_CMD_KEY_RO | REDISMODULE_CMD_KEY_ACCESS)

/* ---- argument helpers ----------------------------------------------------------------------- */

/* A finite double, written the way Redis accepts scores (no spaces, no trailing bytes); -0 is 0.
 * With allow_inf, "+inf"/"-inf"/"inf" are accepted as range bounds. NaN never is. */
static int parse_double(RedisModuleString *s, bool allow_inf, double *out)
{
    size_t len;
    const char *p = RedisModule_StringPtrLen(s, &len);
    char buf[128];
    if (len == 0 || len >= sizeof(buf) || isspace((unsigned char)p[0]))
        return -1;
    memcpy(buf, p, len);
    buf[len] = '\0';
    char *end;
    double d = strtod(buf, &end);
    if (end != buf + len || isnan(d))
        return -1;
    if (isinf(d) && !allow_inf)
        return -1;
    /* strtod reports overflow as +-HUGE_VAL: a finite-looking "1e999" is not a finite score. */
    *out = d == 0 ? 0.0 : d;
    return 0;
}

static int parse_count(RedisModuleCtx *ctx, RedisModuleString *s, const char *what, long long *out)
{
    if (RedisModule_StringToLongLong(s, out) != REDISMODULE_OK) {
        char msg[96];
        snprintf(msg, sizeof(msg), "ERR %s is not an integer or out of range", what);
        RedisModule_ReplyWithError(ctx, msg);
        return -1;
    }
    if (*out < 0) {
        char msg[96];
        snprintf(msg, sizeof(msg), "ERR %s must not be negative", what);
        RedisModule_ReplyWithError(ctx, msg);
        return -1;
    }
    return 0;
}

static bool arg_is(RedisModuleString *s, const char *word)
{
    size_t len;
    const char *p = RedisModule_StringPtrLen(s, &len);
    return len == strlen(word) && strncasecmp(p, word, len) == 0;
}

/* Scratch space for range replies: grows to the largest reply and stays (no malloc per read). */
static crdt_tl_entry_t *scratch;
static size_t scratch_cap;

static crdt_tl_entry_t *scratch_get(size_t n)
{
    if (n > scratch_cap) {
        size_t cap = n < 64 ? 64 : n;
        crdt_tl_entry_t *p = crdtm_realloc(scratch, cap * sizeof(*p));
        if (!p)
            return NULL;
        scratch = p;
        scratch_cap = cap;
    }
    return scratch;
}

static void reply_entries(RedisModuleCtx *ctx, const crdt_tl_entry_t *e, size_t n, bool scores)
{
    RedisModule_ReplyWithArray(ctx, (long)(scores ? 2 * n : n));
    for (size_t i = 0; i < n; i++) {
        RedisModule_ReplyWithStringBuffer(ctx, e[i].member, e[i].member_len);
        if (scores)
            RedisModule_ReplyWithDouble(ctx, e[i].score);
    }
}

/* Joins a mutator's delta into the running delta of a multi-element command. */
static int collect_delta(crdt_obj_t **acc, crdt_obj_t *d)
{
    if (!d)
        return 0;
    if (!*acc) {
        *acc = d;
        return 0;
    }
    int r = crdt_obj_merge(*acc, d);
    crdt_obj_free(d);
    return r < 0 ? r : 0;
}

/* One timeline add or remove of a multi-element write: the state change (0 or 1), or a negative
 * CRDT_E* when nothing was written. Its delta is joined into *delta; a failure to join (the
 * change stands) goes to *err. */
static int tl_write_one(crdt_obj_t *tl, bool add, RedisModuleString *member, double score,
                        crdt_obj_t **delta, int *err)
{
    size_t mlen;
    const char *m = RedisModule_StringPtrLen(member, &mlen);
    crdt_obj_t *d = NULL;
    crdt_mut_t mu = {.type = CRDT_TIMELINE,
                     .kind = add ? CRDT_MUT_ADD : CRDT_MUT_REMOVE,
                     .bytes = m,
                     .len = mlen,
                     .score = score};
    int r = crdt_mut_apply(tl, &mu, crdtm_cfg.node_id, &d);
    if (r < 0)
        return r;
    *err = collect_delta(delta, d);
    return r;
}

/* Common tail of a write without its reply: store a new key, replicate the delta, notify,
 * count, close the key. Takes delta. */
static void write_tail(RedisModuleCtx *ctx, RedisModuleString *name, RedisModuleKey *key,
                       crdt_obj_t *obj, bool created, long long changed, crdt_obj_t *delta,
                       const char *event, int err)
{
    if (err < 0 && delta) {
        /* What did change is real and must reach replicas; the delta is incomplete only on OOM
         * part-way through a multi-member write, so replicate the command itself then. */
        crdt_obj_free(delta);
        delta = NULL;
        if (changed) {
            RedisModule_ReplicateVerbatim(ctx);
            if (crdtm_log_should_append(ctx))
                crdtm_log_state(ctx, name, obj);
        }
    }
    if (created) {
        if (changed)
            crdtm_set_new(key, obj);
        else
            crdt_obj_free(obj);
    }
    if (changed) {
        crdtm_stats.writes++;
        crdtm_changed(ctx, name, event, delta);
    } else {
        crdtm_stats.noops++;
    }
    crdt_obj_free(delta);
    RedisModule_CloseKey(key);
}

/* Common tail of a write: write_tail, then the reply (the error, or the integer reply). */
static int finish_write(RedisModuleCtx *ctx, RedisModuleString *name, RedisModuleKey *key,
                        crdt_obj_t *obj, bool created, long long changed, long long reply,
                        crdt_obj_t *delta, const char *event, int err)
{
    write_tail(ctx, name, key, obj, created, changed, delta, event, err);
    if (err < 0)
        return crdtm_reply_crdt_error(ctx, err);
    return RedisModule_ReplyWithLongLong(ctx, reply);
}

/* Opens a key for a write of type `want` (creating the object in memory if the key is empty).
 * Returns 0, or -1 after replying WRONGTYPE. */
static int open_for_write(RedisModuleCtx *ctx, RedisModuleString *name, crdt_type_t want,
                          RedisModuleKey **key, crdt_obj_t **obj, bool *created)
{
    if (crdtm_open(ctx, name, REDISMODULE_READ | REDISMODULE_WRITE, key, obj) < 0)
        return -1;
    *created = false;
    if (!*obj) {
        size_t nlen;
        const char *n = RedisModule_StringPtrLen(name, &nlen);
        /* crdtd's internal keys (op-id marks, 0x00 'c' '/') are maps: their timelines unbounded,
         * as crdtd's replica makes them */
        *obj = want == CRDT_TIMELINE && nlen >= 3 && !memcmp(n, "\0c/", 3) ? crdt_timeline_new(0)
                                                                           : crdtm_new_obj(want);
        if (!*obj) {
            RedisModule_CloseKey(*key);
            RedisModule_ReplyWithError(ctx, "ERR out of memory");
            return -1;
        }
        *created = true;
    } else if (crdt_obj_type(*obj) != want) {
        RedisModule_CloseKey(*key);
        RedisModule_ReplyWithError(ctx, REDISMODULE_ERRORMSG_WRONGTYPE);
        return -1;
    }
    return 0;
}

/* Opens a key for reading; *obj is NULL for an empty key. With `want` non-zero a CRDT of another
 * type is WRONGTYPE. Returns 0, or -1 after replying. */
static int open_for_read(RedisModuleCtx *ctx, RedisModuleString *name, crdt_type_t want,
                         RedisModuleKey **key, crdt_obj_t **obj)
{
    if (crdtm_open(ctx, name, REDISMODULE_READ, key, obj) < 0)
        return -1;
    if (*obj && want && crdt_obj_type(*obj) != want) {
        RedisModule_CloseKey(*key);
        RedisModule_ReplyWithError(ctx, REDISMODULE_ERRORMSG_WRONGTYPE);
        return -1;
    }
    return 0;
}

/* ---- timeline ------------------------------------------------------------------------------- */

/* CRDT.TLADD / CRDT.TLREM key score member [score member ...] -> entries that changed state */
static int tl_write(RedisModuleCtx *ctx, RedisModuleString **argv, int argc, bool add)
{
    if (argc < 4 || (argc - 2) % 2 != 0)
        return RedisModule_WrongArity(ctx);
    /* Validate every pair before touching the key: a bad pair must not leave half a write. */
    int pairs = (argc - 2) / 2;
    double stack_scores[16];
    double *scores = pairs <= 16 ? stack_scores : crdtm_alloc((size_t)pairs * sizeof(double));
    if (!scores)
        return RedisModule_ReplyWithError(ctx, "ERR out of memory");
    for (int i = 0; i < pairs; i++) {
        size_t mlen;
        RedisModule_StringPtrLen(argv[3 + 2 * i], &mlen);
        const char *msg = NULL;
        if (parse_double(argv[2 + 2 * i], false, &scores[i]) < 0)
            msg = ERR_SCORE;
        else if (mlen > CRDT_MAX_BLOB)
            msg = ERR_BIG;
        if (msg) {
            if (scores != stack_scores)
                crdtm_free(scores);
            return RedisModule_ReplyWithError(ctx, msg);
        }
    }
    RedisModuleKey *key;
    crdt_obj_t *tl;
    bool created;
    if (open_for_write(ctx, argv[1], CRDT_TIMELINE, &key, &tl, &created) < 0) {
        if (scores != stack_scores)
            crdtm_free(scores);
        return REDISMODULE_OK;
    }
    long long changed = 0;
    crdt_obj_t *delta = NULL;
    int err = 0;
    for (int i = 0; i < pairs && err >= 0; i++) {
        int r = tl_write_one(tl, add, argv[3 + 2 * i], scores[i], &delta, &err);
        if (r < 0) {
            err = r;
            break;
        }
        changed += r;
    }
    if (scores != stack_scores)
        crdtm_free(scores);
    return finish_write(ctx, argv[1], key, tl, created, changed, changed, delta,
                        add ? "crdt.tladd" : "crdt.tlrem", err);
}

static int cmd_tladd(RedisModuleCtx *ctx, RedisModuleString **argv, int argc)
{
    return tl_write(ctx, argv, argc, true);
}

static int cmd_tlrem(RedisModuleCtx *ctx, RedisModuleString **argv, int argc)
{
    return tl_write(ctx, argv, argc, false);
}

/* CRDT.TLMADD / CRDT.TLMREM key score member [key score member ...] -> per triple, 1 if its entry
 * changed state, else 0.
 *
 * One write over several timelines, all-or-nothing as to arguments and types: every score and
 * member is checked, then every key's type, before anything is written; a key holding anything but
 * a timeline (or nothing) is WRONGTYPE naming it, and nothing is written. Then the triples of each
 * key are applied together, with what TLADD does per key: one delta per changed key, replicated
 * and logged as TLADD's is, one keyspace event per changed key. A key given several times is
 * opened once; its triples apply in the order given. */
typedef struct mt_item {
    const char *key;
    size_t klen;
    int i; /* the triple's index */
} mt_item_t;

static int mt_cmp(const void *a, const void *b)
{
    const mt_item_t *x = a, *y = b;
    size_t n = x->klen < y->klen ? x->klen : y->klen;
    int c = memcmp(x->key, y->key, n);
    if (c)
        return c;
    if (x->klen != y->klen)
        return x->klen < y->klen ? -1 : 1;
    return (x->i > y->i) - (x->i < y->i);
}

/* What a key that is not a timeline holds, for the WRONGTYPE message: "a gcounter", "a Redis
 * string", ... */
static const char *mt_holds(RedisModuleKey *k, int kt)
{
    static char buf[48];
    switch (kt) {
    case REDISMODULE_KEYTYPE_STRING: return "a Redis string";
    case REDISMODULE_KEYTYPE_LIST: return "a Redis list";
    case REDISMODULE_KEYTYPE_HASH: return "a Redis hash";
    case REDISMODULE_KEYTYPE_SET: return "a Redis set";
    case REDISMODULE_KEYTYPE_ZSET: return "a Redis zset";
    case REDISMODULE_KEYTYPE_STREAM: return "a Redis stream";
    case REDISMODULE_KEYTYPE_MODULE:
        if (RedisModule_ModuleTypeGetType(k) == crdtm_type) {
            const crdt_obj_t *o = RedisModule_ModuleTypeGetValue(k);
            snprintf(buf, sizeof(buf), "a %s", crdt_type_name(crdt_obj_type(o)));
            return buf;
        }
        return "another module's type";
    default: return "another type";
    }
}

static int tl_mwrite(RedisModuleCtx *ctx, RedisModuleString **argv, int argc, bool add)
{
    if (argc < 4 || (argc - 1) % 3 != 0)
        return RedisModule_WrongArity(ctx);
    int n = (argc - 1) / 3;
    mt_item_t stack_items[16];
    double stack_scores[16];
    long long stack_changed[16];
    RedisModuleKey *stack_keys[16];
    mt_item_t *items = n <= 16 ? stack_items : crdtm_alloc((size_t)n * sizeof(*items));
    double *scores = n <= 16 ? stack_scores : crdtm_alloc((size_t)n * sizeof(*scores));
    long long *chg = n <= 16 ? stack_changed : crdtm_alloc((size_t)n * sizeof(*chg));
    RedisModuleKey **keys = n <= 16 ? stack_keys : crdtm_alloc((size_t)n * sizeof(*keys));
    int rc = REDISMODULE_OK, nkeys = 0;
    if (!items || !scores || !chg || !keys) {
        rc = RedisModule_ReplyWithError(ctx, "ERR out of memory");
        goto out;
    }
    /* every argument first */
    for (int i = 0; i < n; i++) {
        size_t mlen;
        RedisModule_StringPtrLen(argv[3 + 3 * i], &mlen);
        const char *msg = NULL;
        int at = 0; /* the argument at fault */
        if (parse_double(argv[2 + 3 * i], false, &scores[i]) < 0)
            msg = ERR_SCORE, at = 2 + 3 * i;
        else if (mlen > CRDT_MAX_BLOB)
            msg = ERR_BIG, at = 3 + 3 * i;
        if (msg) {
            char m[160];
            snprintf(m, sizeof(m), "%s (triple %d, argument %d)", msg, i + 1, at);
            rc = RedisModule_ReplyWithError(ctx, m);
            goto out;
        }
        items[i].key = RedisModule_StringPtrLen(argv[1 + 3 * i], &items[i].klen);
        items[i].i = i;
        chg[i] = 0;
    }
    /* the triples of one key together, in their order; each key opened once, for the type check
     * and then the write: nothing is written unless every key holds a timeline or nothing */
    qsort(items, (size_t)n, sizeof(*items), mt_cmp);
    int bad = -1; /* the first triple, in argument order, whose key holds another type */
    char holds[48] = "";
    for (int a = 0; a < n;) {
        int b = a + 1;
        while (b < n && items[b].klen == items[a].klen &&
               memcmp(items[b].key, items[a].key, items[a].klen) == 0)
            b++;
        RedisModuleKey *k = RedisModule_OpenKey(ctx, argv[1 + 3 * items[a].i],
                                                REDISMODULE_READ | REDISMODULE_WRITE);
        keys[nkeys++] = k;
        int kt = RedisModule_KeyType(k);
        if (kt != REDISMODULE_KEYTYPE_EMPTY &&
            (kt != REDISMODULE_KEYTYPE_MODULE || RedisModule_ModuleTypeGetType(k) != crdtm_type ||
             crdt_obj_type(RedisModule_ModuleTypeGetValue(k)) != CRDT_TIMELINE) &&
            (bad < 0 || items[a].i < bad)) {
            bad = items[a].i; /* the group's first triple: sorted by position within a key */
            snprintf(holds, sizeof(holds), "%s", mt_holds(k, kt));
        }
        a = b;
    }
    if (bad >= 0) {
        char m[200];
        snprintf(m, sizeof(m), "WRONGTYPE key %d (argument %d) holds %s, not a timeline", bad + 1,
                 1 + 3 * bad, holds);
        rc = RedisModule_ReplyWithError(ctx, m);
        goto out;
    }
    const char *event = add ? "crdt.tladd" : "crdt.tlrem";
    int err = 0;
    for (int a = 0, g = 0; a < n && err >= 0; g++) {
        int b = a + 1;
        while (b < n && items[b].klen == items[a].klen &&
               memcmp(items[b].key, items[a].key, items[a].klen) == 0)
            b++;
        RedisModuleString *name = argv[1 + 3 * items[a].i];
        RedisModuleKey *key = keys[g];
        keys[g] = NULL; /* write_tail closes it */
        crdt_obj_t *tl = RedisModule_KeyType(key) == REDISMODULE_KEYTYPE_EMPTY
                             ? NULL
                             : RedisModule_ModuleTypeGetValue(key);
        bool created = !tl;
        if (created) {
            /* crdtd's internal keys (op-id marks) are maps: unbounded, as open_for_write does */
            tl = items[a].klen >= 3 && !memcmp(items[a].key, "\0c/", 3)
                     ? crdt_timeline_new(0)
                     : crdtm_new_obj(CRDT_TIMELINE);
            if (!tl) {
                RedisModule_CloseKey(key);
                err = CRDT_ENOMEM;
                break;
            }
        }
        long long changed = 0;
        crdt_obj_t *delta = NULL;
        for (int j = a; j < b && err >= 0; j++) {
            int t = items[j].i;
            int r = tl_write_one(tl, add, argv[3 + 3 * t], scores[t], &delta, &err);
            if (r < 0) {
                err = r;
                break;
            }
            chg[t] = r;
            changed += r;
        }
        write_tail(ctx, name, key, tl, created, changed, delta, event, err);
        a = b;
    }
    if (err < 0) {
        rc = crdtm_reply_crdt_error(ctx, err);
        goto out;
    }
    RedisModule_ReplyWithArray(ctx, n);
    for (int i = 0; i < n; i++)
        RedisModule_ReplyWithLongLong(ctx, chg[i]);
out:
    for (int g = 0; keys && g < nkeys; g++)
        if (keys[g])
            RedisModule_CloseKey(keys[g]);
    if (items != stack_items)
        crdtm_free(items);
    if (scores != stack_scores)
        crdtm_free(scores);
    if (chg != stack_changed)
        crdtm_free(chg);
    if (keys != stack_keys)
        crdtm_free(keys);
    return rc;
}

static int cmd_tlmadd(RedisModuleCtx *ctx, RedisModuleString **argv, int argc)
{
    return tl_mwrite(ctx, argv, argc, true);
}

static int cmd_tlmrem(RedisModuleCtx *ctx, RedisModuleString **argv, int argc)
{
    return tl_mwrite(ctx, argv, argc, false);
}

/* CRDT.TLRANGE key offset count [WITHSCORES] */
static int cmd_tlrange(RedisModuleCtx *ctx, RedisModuleString **argv, int argc)
{
    if (argc != 4 && argc != 5)
        return RedisModule_WrongArity(ctx);
    bool scores = false;
    if (argc == 5) {
        if (!arg_is(argv[4], "WITHSCORES"))
            return RedisModule_ReplyWithError(ctx, ERR_SYNTAX);
        scores = true;
    }
    long long offset, count;
    if (parse_count(ctx, argv[2], "offset", &offset) < 0 ||
        parse_count(ctx, argv[3], "count", &count) < 0)
        return REDISMODULE_OK;
    RedisModuleKey *key;
    crdt_obj_t *tl;
    if (open_for_read(ctx, argv[1], CRDT_TIMELINE, &key, &tl) < 0)
        return REDISMODULE_OK;
    size_t card = tl ? crdt_timeline_card(tl) : 0;
    size_t n = (size_t)offset >= card ? 0 : card - (size_t)offset;
    if ((unsigned long long)count < n)
        n = (size_t)count;
    crdt_tl_entry_t *out = n ? scratch_get(n) : NULL;
    if (n && !out) {
        RedisModule_CloseKey(key);
        return RedisModule_ReplyWithError(ctx, "ERR out of memory");
    }
    n = n ? crdt_timeline_range(tl, (size_t)offset, n, out) : 0;
    reply_entries(ctx, out, n, scores);
    RedisModule_CloseKey(key);
    return REDISMODULE_OK;
}

/* CRDT.TLRANGEBYSCORE key max min [AFTER score member] [LIMIT count] [WITHSCORES] */
static int cmd_tlrangebyscore(RedisModuleCtx *ctx, RedisModuleString **argv, int argc)
{
    if (argc < 4)
        return RedisModule_WrongArity(ctx);
    double max, min;
    if (parse_double(argv[2], true, &max) < 0 || parse_double(argv[3], true, &min) < 0)
        return RedisModule_ReplyWithError(ctx, ERR_BOUND);
    bool scores = false, has_after = false;
    long long limit = -1;
    crdt_tl_entry_t after = {0};
    for (int i = 4; i < argc; i++) {
        if (arg_is(argv[i], "WITHSCORES")) {
            scores = true;
        } else if (arg_is(argv[i], "LIMIT") && i + 1 < argc) {
            if (parse_count(ctx, argv[++i], "count", &limit) < 0)
                return REDISMODULE_OK;
        } else if (arg_is(argv[i], "AFTER") && i + 2 < argc) {
            if (parse_double(argv[i + 1], false, &after.score) < 0)
                return RedisModule_ReplyWithError(ctx, "ERR AFTER score is not a finite number");
            after.member = RedisModule_StringPtrLen(argv[i + 2], &after.member_len);
            has_after = true;
            i += 2;
        } else {
            return RedisModule_ReplyWithError(ctx, ERR_SYNTAX);
        }
    }
    RedisModuleKey *key;
    crdt_obj_t *tl;
    if (open_for_read(ctx, argv[1], CRDT_TIMELINE, &key, &tl) < 0)
        return REDISMODULE_OK;
    size_t n = tl ? crdt_timeline_card(tl) : 0;
    if (limit >= 0 && (unsigned long long)limit < n)
        n = (size_t)limit;
    crdt_tl_entry_t *out = n ? scratch_get(n) : NULL;
    if (n && !out) {
        RedisModule_CloseKey(key);
        return RedisModule_ReplyWithError(ctx, "ERR out of memory");
    }
    n = n ? crdt_timeline_range_by_score(tl, max, min, has_after ? &after : NULL, n, out) : 0;
    reply_entries(ctx, out, n, scores);
    RedisModule_CloseKey(key);
    return REDISMODULE_OK;
}

/* Keys of CRDT.TLSELECT count key [key ...] [WITHSCORES]: argv[2] up to the end, less a trailing
 * WITHSCORES (so a key literally named WITHSCORES must not come last). */
static int tlselect_last_key(RedisModuleString **argv, int argc)
{
    return argc >= 4 && arg_is(argv[argc - 1], "WITHSCORES") ? argc - 2 : argc - 1;
}

/* CRDT.TLSELECT count key [key ...] [WITHSCORES] */
static int cmd_tlselect(RedisModuleCtx *ctx, RedisModuleString **argv, int argc)
{
    if (RedisModule_IsKeysPositionRequest(ctx)) {
        /* KeyAtPos would report the keys read-write (its default is full access): an ACL user
         * allowed to read only (%R~pattern) must be able to run a read. */
        for (int i = 2; i <= tlselect_last_key(argv, argc); i++)
            RedisModule_KeyAtPosWithFlags(ctx, i, (int)RO_ACCESS);
        return REDISMODULE_OK;
    }
    if (argc < 3)
        return RedisModule_WrongArity(ctx);
    int last = tlselect_last_key(argv, argc);
    bool scores = last != argc - 1;
    long long count;
    if (parse_count(ctx, argv[1], "count", &count) < 0)
        return REDISMODULE_OK;
    size_t nkeys = (size_t)(last - 1);
    RedisModuleKey **keys = crdtm_calloc(nkeys, sizeof(*keys));
    const crdt_obj_t **tls = crdtm_calloc(nkeys, sizeof(*tls));
    if (!keys || !tls) {
        crdtm_free(keys);
        crdtm_free(tls);
        return RedisModule_ReplyWithError(ctx, "ERR out of memory");
    }
    size_t total = 0, opened = 0;
    int rc = 0;
    for (size_t i = 0; i < nkeys; i++) {
        crdt_obj_t *o;
        if (open_for_read(ctx, argv[2 + i], CRDT_TIMELINE, &keys[i], &o) < 0) {
            rc = -1;
            break;
        }
        opened++;
        tls[i] = o;
        total += o ? crdt_timeline_card(o) : 0;
    }
    if (rc == 0) {
        size_t n = (unsigned long long)count < total ? (size_t)count : total;
        crdt_tl_entry_t *out = n ? scratch_get(n) : NULL;
        if (n && !out) {
            RedisModule_ReplyWithError(ctx, "ERR out of memory");
        } else {
            n = n ? crdt_timeline_select(tls, nkeys, 0, n, out, NULL) : 0;
            reply_entries(ctx, out, n, scores);
        }
    }
    for (size_t i = 0; i < opened; i++)
        RedisModule_CloseKey(keys[i]);
    crdtm_free(keys);
    crdtm_free(tls);
    return REDISMODULE_OK;
}

/* CRDT.TLCARD key */
static int cmd_tlcard(RedisModuleCtx *ctx, RedisModuleString **argv, int argc)
{
    if (argc != 2)
        return RedisModule_WrongArity(ctx);
    RedisModuleKey *key;
    crdt_obj_t *tl;
    if (open_for_read(ctx, argv[1], CRDT_TIMELINE, &key, &tl) < 0)
        return REDISMODULE_OK;
    RedisModule_ReplyWithLongLong(ctx, tl ? (long long)crdt_timeline_card(tl) : 0);
    RedisModule_CloseKey(key);
    return REDISMODULE_OK;
}

/* CRDT.TLSCORE key member -> score, or nil when the member is not live */
static int cmd_tlscore(RedisModuleCtx *ctx, RedisModuleString **argv, int argc)
{
    if (argc != 3)
        return RedisModule_WrongArity(ctx);
    RedisModuleKey *key;
    crdt_obj_t *tl;
    if (open_for_read(ctx, argv[1], CRDT_TIMELINE, &key, &tl) < 0)
        return REDISMODULE_OK;
    size_t mlen;
    const char *m = RedisModule_StringPtrLen(argv[2], &mlen);
    double score;
    if (tl && crdt_timeline_score(tl, m, mlen, &score) == 1)
        RedisModule_ReplyWithDouble(ctx, score);
    else
        RedisModule_ReplyWithNull(ctx);
    RedisModule_CloseKey(key);
    return REDISMODULE_OK;
}

/* ---- counters and registers ----------------------------------------------------------------- */

/* INCRBY / DECRBY (grow false): an empty key becomes a PN-Counter, a G-Counter takes increments.
 * GINCRBY (grow true): an empty key becomes a G-Counter, any other type than a G-Counter is
 * WRONGTYPE, the increment must not be negative (crdtd's grow-only counter writes). */
static int counter_add(RedisModuleCtx *ctx, RedisModuleString **argv, int argc, bool decr,
                       bool grow)
{
    if (argc != 3)
        return RedisModule_WrongArity(ctx);
    long long n;
    if (RedisModule_StringToLongLong(argv[2], &n) != REDISMODULE_OK)
        return RedisModule_ReplyWithError(ctx, "ERR value is not an integer or out of range");
    if (grow && n < 0)
        return RedisModule_ReplyWithError(
            ctx, "ERR a grow-only counter (gcounter) cannot be decremented");
    if (decr) {
        if (n == INT64_MIN)
            return RedisModule_ReplyWithError(ctx, "ERR decrement would overflow");
        n = -n;
    }
    RedisModuleKey *key;
    crdt_obj_t *c;
    if (crdtm_open(ctx, argv[1], REDISMODULE_READ | REDISMODULE_WRITE, &key, &c) < 0)
        return REDISMODULE_OK;
    bool created = false;
    if (c && grow && crdt_obj_type(c) != CRDT_GCOUNTER) {
        RedisModule_CloseKey(key);
        return RedisModule_ReplyWithError(ctx, REDISMODULE_ERRORMSG_WRONGTYPE);
    }
    if (!c) {
        if (!(c = crdtm_new_obj(grow ? CRDT_GCOUNTER : CRDT_PNCOUNTER))) {
            RedisModule_CloseKey(key);
            return RedisModule_ReplyWithError(ctx, "ERR out of memory");
        }
        created = true;
    }
    crdt_obj_t *delta = NULL;
    crdt_type_t t = crdt_obj_type(c);
    if (t != CRDT_PNCOUNTER && t != CRDT_GCOUNTER) {
        RedisModule_CloseKey(key);
        return RedisModule_ReplyWithError(ctx, REDISMODULE_ERRORMSG_WRONGTYPE);
    }
    if (t == CRDT_GCOUNTER && n < 0) {
        RedisModule_CloseKey(key);
        return RedisModule_ReplyWithError(
            ctx, "ERR the key holds a grow-only counter (gcounter): it cannot be decremented");
    }
    crdt_mut_t mu = {.type = t, .kind = CRDT_MUT_INCR, .n = n};
    int r = crdt_mut_apply(c, &mu, crdtm_cfg.node_id, &delta);
    if (r < 0) { /* refused before any change (overflow of the value, or of our slot) */
        crdt_obj_free(delta);
        if (created)
            crdt_obj_free(c);
        RedisModule_CloseKey(key);
        return crdtm_reply_crdt_error(ctx, r);
    }
    if (created) {
        if (r > 0)
            crdtm_set_new(key, c);
        else
            crdt_obj_free(c);
    }
    /* Read the value before the key closes (c belongs to it). */
    int64_t value = 0;
    int verr = r > 0 || !created ? crdt_counter_value(c, &value) : 0;
    if (r > 0) {
        /* The change is made: it is replicated even if the value cannot be shown below. */
        crdtm_stats.writes++;
        const char *event = decr ? "crdt.decrby" : "crdt.incrby";
        crdtm_changed(ctx, argv[1], grow ? "crdt.gincrby" : event, delta);
    }
    crdt_obj_free(delta);
    RedisModule_CloseKey(key);
    if (verr < 0) /* merged remote slots can sum past int64 */
        return crdtm_reply_crdt_error(ctx, CRDT_EOVERFLOW);
    return RedisModule_ReplyWithLongLong(ctx, value);
}

static int cmd_incrby(RedisModuleCtx *ctx, RedisModuleString **argv, int argc)
{
    return counter_add(ctx, argv, argc, false, false);
}

static int cmd_decrby(RedisModuleCtx *ctx, RedisModuleString **argv, int argc)
{
    return counter_add(ctx, argv, argc, true, false);
}

static int cmd_gincrby(RedisModuleCtx *ctx, RedisModuleString **argv, int argc)
{
    return counter_add(ctx, argv, argc, false, true);
}

/* CRDT.GET key -> counter value (integer), register value (bulk), nil if absent or unset */
static int cmd_get(RedisModuleCtx *ctx, RedisModuleString **argv, int argc)
{
    if (argc != 2)
        return RedisModule_WrongArity(ctx);
    RedisModuleKey *key;
    crdt_obj_t *o;
    if (open_for_read(ctx, argv[1], 0, &key, &o) < 0)
        return REDISMODULE_OK;
    if (!o) {
        RedisModule_ReplyWithNull(ctx);
    } else if (crdt_obj_type(o) == CRDT_GCOUNTER || crdt_obj_type(o) == CRDT_PNCOUNTER) {
        int64_t v;
        if (crdt_counter_value(o, &v) < 0)
            crdtm_reply_crdt_error(ctx, CRDT_EOVERFLOW);
        else
            RedisModule_ReplyWithLongLong(ctx, v);
    } else if (crdt_obj_type(o) == CRDT_LWWREG) {
        const void *val;
        size_t len;
        crdt_hlc_ts_t ts;
        if (crdt_lwwreg_get(o, &val, &len, &ts) == 1)
            RedisModule_ReplyWithStringBuffer(ctx, val, len);
        else
            RedisModule_ReplyWithNull(ctx);
    } else {
        RedisModule_ReplyWithError(ctx, REDISMODULE_ERRORMSG_WRONGTYPE);
    }
    RedisModule_CloseKey(key);
    return REDISMODULE_OK;
}

/* A timestamp for a local write that orders after `seen` (if given) and after everything this
 * clock issued: a local write wins over the value it replaces even if that value came from a
 * server whose clock runs ahead (up to max-clock-drift-ms). */
static void local_ts(const crdt_hlc_ts_t *seen, crdt_hlc_ts_t *ts)
{
    uint64_t now = (uint64_t)RedisModule_Milliseconds();
    if (seen && crdt_hlc_recv(&crdtm_clock, now, seen, ts) == 0)
        return;
    if (crdt_hlc_tick(&crdtm_clock, now, ts) < 0) {
        /* The logical counter of this millisecond is exhausted: move to the next one. */
        crdtm_clock.last_ms++;
        crdtm_clock.last_logical = 0;
        ts->ms = crdtm_clock.last_ms;
        ts->logical = 0;
        ts->node = crdtm_clock.node;
    }
}

/* CRDT.SET key value -> 1 if the register changed, 0 if the write lost */
static int cmd_set(RedisModuleCtx *ctx, RedisModuleString **argv, int argc)
{
    if (argc != 3)
        return RedisModule_WrongArity(ctx);
    size_t len;
    const char *val = RedisModule_StringPtrLen(argv[2], &len);
    if (len > CRDT_MAX_BLOB)
        return RedisModule_ReplyWithError(ctx, ERR_BIG);
    RedisModuleKey *key;
    crdt_obj_t *reg;
    bool created;
    if (open_for_write(ctx, argv[1], CRDT_LWWREG, &key, &reg, &created) < 0)
        return REDISMODULE_OK;
    crdt_mut_t mu = {.type = CRDT_LWWREG, .kind = CRDT_MUT_SET, .bytes = val, .len = len};
    crdt_hlc_ts_t seen;
    local_ts(crdt_mut_seen_ts(reg, &mu, &seen) == 1 ? &seen : NULL, &mu.ts);
    crdt_obj_t *delta = NULL;
    int r = crdt_mut_apply(reg, &mu, crdtm_cfg.node_id, &delta);
    return finish_write(ctx, argv[1], key, reg, created, r > 0, r > 0, delta, "crdt.set",
                        r < 0 ? r : 0);
}

/* ---- delete --------------------------------------------------------------------------------- */

/* CRDT.DELETE key [TYPE type] -> 1 if something live was removed, 0 if there was nothing.
 * The observed-remove of crdt.h's CRDT_MUT_DELETE: what this server holds goes, writes it has
 * not seen (other datacenters') survive the join. The key stays, holding the tombstones (a
 * register's clear, a set's, a timeline's), so it joins with what comes later; an empty key
 * stays empty. A G-Counter cannot be deleted (NOTSUP). TYPE refuses a key of another type
 * (WRONGTYPE), as crdtd's typed ops do. */
static int cmd_delete(RedisModuleCtx *ctx, RedisModuleString **argv, int argc)
{
    if (argc != 2 && argc != 4)
        return RedisModule_WrongArity(ctx);
    crdt_type_t want = 0;
    if (argc == 4) {
        const char *opt = RedisModule_StringPtrLen(argv[2], NULL);
        if (strcasecmp(opt, "TYPE") != 0)
            return RedisModule_ReplyWithError(ctx, "ERR syntax error: CRDT.DELETE key [TYPE type]");
        if (crdt_type_from_name(RedisModule_StringPtrLen(argv[3], NULL), &want) < 0)
            return RedisModule_ReplyWithError(
                ctx, "ERR unknown type: gcounter, pncounter, lwwreg, lwwset, orset or timeline");
    }
    RedisModuleKey *key;
    crdt_obj_t *o;
    if (crdtm_open(ctx, argv[1], REDISMODULE_READ | REDISMODULE_WRITE, &key, &o) < 0)
        return REDISMODULE_OK;
    if (!o) { /* nothing to delete, and no key made */
        RedisModule_CloseKey(key);
        crdtm_stats.noops++;
        return RedisModule_ReplyWithLongLong(ctx, 0);
    }
    if (want && crdt_obj_type(o) != want) {
        RedisModule_CloseKey(key);
        return RedisModule_ReplyWithError(ctx, REDISMODULE_ERRORMSG_WRONGTYPE);
    }
    crdt_mut_t mu = {.type = crdt_obj_type(o), .kind = CRDT_MUT_DELETE};
    if (crdt_mut_needs_ts(&mu)) {
        crdt_hlc_ts_t seen;
        local_ts(crdt_mut_seen_ts(o, &mu, &seen) == 1 ? &seen : NULL, &mu.ts);
    }
    crdt_obj_t *delta = NULL;
    int r = crdt_mut_apply(o, &mu, crdtm_cfg.node_id, &delta);
    return finish_write(ctx, argv[1], key, o, false, r > 0, r > 0, delta, "crdt.delete",
                        r < 0 ? r : 0);
}

/* ---- sets ----------------------------------------------------------------------------------- */

/* CRDT.SADD / CRDT.SREM key member [member ...] -> members that became live / stopped being live
 * (Redis's SADD/SREM count). The state may change without that count: re-adding a live member adds
 * a fresh dot that survives concurrent removes elsewhere; such changes are replicated all the same.
 * An empty key becomes an add-wins OR-Set; a key holding an LWW-element-set (merged from
 * elsewhere) takes timestamped adds and removes. */
static int set_write(RedisModuleCtx *ctx, RedisModuleString **argv, int argc, bool add)
{
    if (argc < 3)
        return RedisModule_WrongArity(ctx);
    for (int i = 2; i < argc; i++) {
        size_t mlen;
        RedisModule_StringPtrLen(argv[i], &mlen);
        if (mlen > CRDT_MAX_BLOB)
            return RedisModule_ReplyWithError(ctx, ERR_BIG);
    }
    RedisModuleKey *key;
    crdt_obj_t *s;
    if (crdtm_open(ctx, argv[1], REDISMODULE_READ | REDISMODULE_WRITE, &key, &s) < 0)
        return REDISMODULE_OK;
    bool created = false;
    if (!s) {
        if (!add) { /* removing from nothing changes nothing, and makes no key */
            RedisModule_CloseKey(key);
            crdtm_stats.noops++;
            return RedisModule_ReplyWithLongLong(ctx, 0);
        }
        if (!(s = crdtm_new_obj(CRDT_ORSET))) {
            RedisModule_CloseKey(key);
            return RedisModule_ReplyWithError(ctx, "ERR out of memory");
        }
        created = true;
    }
    crdt_type_t t = crdt_obj_type(s);
    if (t != CRDT_ORSET && t != CRDT_LWWSET) {
        RedisModule_CloseKey(key);
        return RedisModule_ReplyWithError(ctx, REDISMODULE_ERRORMSG_WRONGTYPE);
    }
    long long changed = 0, flipped = 0;
    crdt_obj_t *delta = NULL;
    int err = 0;
    for (int i = 2; i < argc && err >= 0; i++) {
        size_t mlen;
        const char *m = RedisModule_StringPtrLen(argv[i], &mlen);
        crdt_obj_t *d = NULL;
        bool was = crdt_set_contains(s, m, mlen) == 1;
        crdt_mut_t mu = {
            .type = t, .kind = add ? CRDT_MUT_ADD : CRDT_MUT_REMOVE, .bytes = m, .len = mlen};
        if (t == CRDT_LWWSET)
            local_ts(NULL, &mu.ts);
        int r = crdt_mut_apply(s, &mu, crdtm_cfg.node_id, &d);
        if (r < 0) {
            err = r;
            break;
        }
        changed += r;
        flipped += was != (crdt_set_contains(s, m, mlen) == 1);
        err = collect_delta(&delta, d);
    }
    return finish_write(ctx, argv[1], key, s, created, changed, flipped, delta,
                        add ? "crdt.sadd" : "crdt.srem", err);
}

static int cmd_sadd(RedisModuleCtx *ctx, RedisModuleString **argv, int argc)
{
    return set_write(ctx, argv, argc, true);
}

static int cmd_srem(RedisModuleCtx *ctx, RedisModuleString **argv, int argc)
{
    return set_write(ctx, argv, argc, false);
}

/* Opens a set key for reading: OR-Set or LWW-element-set. */
static int open_set(RedisModuleCtx *ctx, RedisModuleString *name, RedisModuleKey **key,
                    crdt_obj_t **s)
{
    if (open_for_read(ctx, name, 0, key, s) < 0)
        return -1;
    if (*s && crdt_obj_type(*s) != CRDT_ORSET && crdt_obj_type(*s) != CRDT_LWWSET) {
        RedisModule_CloseKey(*key);
        RedisModule_ReplyWithError(ctx, REDISMODULE_ERRORMSG_WRONGTYPE);
        return -1;
    }
    return 0;
}

static int reply_member_cb(const void *m, size_t len, void *ud)
{
    RedisModule_ReplyWithStringBuffer(ud, m, len);
    return 0;
}

static int cmd_smembers(RedisModuleCtx *ctx, RedisModuleString **argv, int argc)
{
    if (argc != 2)
        return RedisModule_WrongArity(ctx);
    RedisModuleKey *key;
    crdt_obj_t *s;
    if (open_set(ctx, argv[1], &key, &s) < 0)
        return REDISMODULE_OK;
    if (!s) {
        RedisModule_ReplyWithArray(ctx, 0);
    } else {
        RedisModule_ReplyWithArray(ctx, (long)crdt_set_size(s));
        crdt_set_foreach(s, reply_member_cb, ctx);
    }
    RedisModule_CloseKey(key);
    return REDISMODULE_OK;
}

static int cmd_sismember(RedisModuleCtx *ctx, RedisModuleString **argv, int argc)
{
    if (argc != 3)
        return RedisModule_WrongArity(ctx);
    RedisModuleKey *key;
    crdt_obj_t *s;
    if (open_set(ctx, argv[1], &key, &s) < 0)
        return REDISMODULE_OK;
    size_t mlen;
    const char *m = RedisModule_StringPtrLen(argv[2], &mlen);
    RedisModule_ReplyWithLongLong(ctx, s && crdt_set_contains(s, m, mlen) == 1);
    RedisModule_CloseKey(key);
    return REDISMODULE_OK;
}

static int cmd_scard(RedisModuleCtx *ctx, RedisModuleString **argv, int argc)
{
    if (argc != 2)
        return RedisModule_WrongArity(ctx);
    RedisModuleKey *key;
    crdt_obj_t *s;
    if (open_set(ctx, argv[1], &key, &s) < 0)
        return REDISMODULE_OK;
    RedisModule_ReplyWithLongLong(ctx, s ? (long long)crdt_set_size(s) : 0);
    RedisModule_CloseKey(key);
    return REDISMODULE_OK;
}

/* ---- replication and introspection ---------------------------------------------------------- */

/* CRDT.STATE key -> the binary encoding of the full state, nil if absent */
static int cmd_state(RedisModuleCtx *ctx, RedisModuleString **argv, int argc)
{
    if (argc != 2)
        return RedisModule_WrongArity(ctx);
    RedisModuleKey *key;
    crdt_obj_t *o;
    if (open_for_read(ctx, argv[1], 0, &key, &o) < 0)
        return REDISMODULE_OK;
    if (!o) {
        RedisModule_ReplyWithNull(ctx);
    } else {
        crdt_buf_t b = {0};
        if (crdt_obj_encode(o, &b) < 0)
            RedisModule_ReplyWithError(ctx, "ERR out of memory");
        else
            RedisModule_ReplyWithStringBuffer(ctx, (const char *)b.data, b.len);
        crdt_buf_free(&b);
    }
    RedisModule_CloseKey(key);
    return REDISMODULE_OK;
}

/* CRDT.MERGE key payload [payload ...] -> 1 if the key changed, 0 if not. Every payload is decoded
 * and type-checked before the key is touched, so a bad one leaves the key as it was. */
/* The change log entry of CRDT.MERGE: its payload, or the join of its payloads (borrows objs[1..],
 * joins them into objs[0]). */
static void log_payloads(RedisModuleCtx *ctx, RedisModuleString **argv, crdt_obj_t **objs, int np)
{
    if (np == 1) {
        size_t len;
        const char *p = RedisModule_StringPtrLen(argv[2], &len);
        crdtm_log_append(ctx, argv[1], p, len, false);
        return;
    }
    for (int i = 1; i < np; i++)
        if (crdt_obj_merge(objs[0], objs[i]) < 0)
            return;
    crdtm_log_state(ctx, argv[1], objs[0]);
}

/* CRDT.MERGE key payload [payload ...] [ORIGIN id]: with ORIGIN (a node id > 0; a payload never
 * reads "ORIGIN": encodings start with version byte 1) the change log entry carries it as field
 * `o`, so a follower can tell a peer's change (crdtd's active-active) from a local one. */
static int cmd_merge(RedisModuleCtx *ctx, RedisModuleString **argv, int argc)
{
    if (argc < 3)
        return RedisModule_WrongArity(ctx);
    long long origin = 0;
    if (argc >= 5) {
        size_t ol;
        const char *op = RedisModule_StringPtrLen(argv[argc - 2], &ol);
        if (ol == 6 && !strncasecmp(op, "ORIGIN", 6)) {
            if (RedisModule_StringToLongLong(argv[argc - 1], &origin) != REDISMODULE_OK ||
                origin <= 0)
                return RedisModule_ReplyWithError(ctx, "ERR ORIGIN must be a node id > 0");
            argc -= 2;
        }
    }
    int np = argc - 2;
    crdt_obj_t *stack_objs[8];
    crdt_obj_t **objs = np <= 8 ? stack_objs : crdtm_calloc((size_t)np, sizeof(*objs));
    if (!objs)
        return RedisModule_ReplyWithError(ctx, "ERR out of memory");
    int decoded = 0;
    char msg[320];
    msg[0] = '\0';
    for (int i = 0; i < np; i++, decoded++) {
        size_t len;
        const char *p = RedisModule_StringPtrLen(argv[2 + i], &len);
        crdt_error_t err;
        memset(&err, 0, sizeof(err));
        objs[i] = crdt_obj_decode(p, len, &err);
        if (!objs[i]) {
            snprintf(msg, sizeof(msg), "ERR bad payload %d of %d: at byte %zu: %s", i + 1, np,
                     err.offset, err.text[0] ? err.text : crdt_strerror(err.code));
            break;
        }
        if (i > 0 && crdt_obj_type(objs[i]) != crdt_obj_type(objs[0])) {
            snprintf(msg, sizeof(msg), "ERR payload %d is a %s but payload 1 is a %s", i + 1,
                     crdt_type_name(crdt_obj_type(objs[i])),
                     crdt_type_name(crdt_obj_type(objs[0])));
            decoded++;
            break;
        }
    }
    RedisModuleKey *key = NULL;
    crdt_obj_t *dst = NULL;
    bool created = false;
    int changed = 0, err = 0;
    if (msg[0]) {
        crdtm_stats.payload_errors++;
        RedisModule_ReplyWithError(ctx, msg);
        goto out;
    }
    if (crdtm_open(ctx, argv[1], REDISMODULE_READ | REDISMODULE_WRITE, &key, &dst) < 0) {
        key = NULL;
        goto out;
    }
    crdt_type_t t = crdt_obj_type(objs[0]);
    if (dst && crdt_obj_type(dst) != t) {
        snprintf(msg, sizeof(msg), "WRONGTYPE the payload is a %s but the key holds a %s",
                 crdt_type_name(t), crdt_type_name(crdt_obj_type(dst)));
        crdtm_stats.payload_errors++;
        RedisModule_ReplyWithError(ctx, msg);
        goto out;
    }
    if (!dst) {
        if (!(dst = crdtm_new_obj(t))) {
            RedisModule_ReplyWithError(ctx, "ERR out of memory");
            goto out;
        }
        created = true;
    }
    for (int i = 0; i < np; i++) {
        int r = crdt_obj_merge(dst, objs[i]);
        if (r < 0) {
            err = r;
            break;
        }
        crdtm_stats.merges++;
        if (r > 0) {
            crdtm_stats.merges_changed++;
            changed = 1;
        }
    }
    for (int i = 0; i < np && err >= 0; i++) {
        /* The clock's receive step, as crdtd's replica runs it on every apply: past the greatest
         * timestamp merged (registers and LWW-sets), so a later local write wins; one further
         * ahead than max-clock-drift-ms leaves the clock alone and is counted. */
        crdt_hlc_ts_t seen, tmp;
        if (crdt_obj_max_ts(objs[i], &seen) == 1 &&
            crdt_hlc_recv(&crdtm_clock, (uint64_t)RedisModule_Milliseconds(), &seen, &tmp) ==
                CRDT_ECLOCK)
            crdtm_stats.clock_ahead++;
    }
    if (created) {
        if (changed)
            crdtm_set_new(key, dst);
        else
            crdt_obj_free(dst);
    }
    if (changed) {
        /* The replica holds what we held, so the same payloads give it the same state. */
        RedisModule_ReplicateVerbatim(ctx);
        if (crdtm_log_should_append(ctx)) {
            crdtm_log_set_origin((uint64_t)origin);
            log_payloads(ctx, argv, objs, np);
            crdtm_log_set_origin(0);
        }
        crdtm_changed(ctx, argv[1], "crdt.merge", NULL);
    }
    if (err < 0)
        crdtm_reply_crdt_error(ctx, err);
    else
        RedisModule_ReplyWithLongLong(ctx, changed);
out:
    if (key)
        RedisModule_CloseKey(key);
    for (int i = 0; i < decoded && i < np; i++)
        crdt_obj_free(objs[i]);
    if (objs != stack_objs)
        crdtm_free(objs);
    return REDISMODULE_OK;
}

int crdtm_merge_one(RedisModuleCtx *ctx, RedisModuleString *name, const char *payload, size_t len,
                    char *msg, size_t cap)
{
    crdt_error_t derr;
    memset(&derr, 0, sizeof(derr));
    crdt_obj_t *obj = crdt_obj_decode(payload, len, &derr);
    if (!obj) {
        crdtm_stats.payload_errors++;
        snprintf(msg, cap, "ERR bad payload: at byte %zu: %s", derr.offset,
                 derr.text[0] ? derr.text : crdt_strerror(derr.code));
        return -1;
    }
    RedisModuleKey *key = RedisModule_OpenKey(ctx, name, REDISMODULE_READ | REDISMODULE_WRITE);
    int kt = RedisModule_KeyType(key);
    crdt_obj_t *dst = NULL;
    int rc = -1;
    if (kt == REDISMODULE_KEYTYPE_MODULE && RedisModule_ModuleTypeGetType(key) == crdtm_type) {
        dst = RedisModule_ModuleTypeGetValue(key);
    } else if (kt != REDISMODULE_KEYTYPE_EMPTY) {
        snprintf(msg, cap, "%s", REDISMODULE_ERRORMSG_WRONGTYPE);
        goto out;
    }
    crdt_type_t t = crdt_obj_type(obj);
    if (dst && crdt_obj_type(dst) != t) {
        crdtm_stats.payload_errors++;
        snprintf(msg, cap, "WRONGTYPE the payload is a %s but the key holds a %s",
                 crdt_type_name(t), crdt_type_name(crdt_obj_type(dst)));
        goto out;
    }
    bool created = false;
    if (!dst) {
        if (!(dst = crdtm_new_obj(t))) {
            snprintf(msg, cap, "ERR out of memory");
            goto out;
        }
        created = true;
    }
    int r = crdt_obj_merge(dst, obj);
    if (r >= 0) {
        crdtm_stats.merges++;
        if (r > 0)
            crdtm_stats.merges_changed++;
        crdt_hlc_ts_t seen, tmp; /* the clock's receive step, as cmd_merge */
        if (crdt_obj_max_ts(obj, &seen) == 1 &&
            crdt_hlc_recv(&crdtm_clock, (uint64_t)RedisModule_Milliseconds(), &seen, &tmp) ==
                CRDT_ECLOCK)
            crdtm_stats.clock_ahead++;
    } else {
        snprintf(msg, cap, "ERR merge failed: %s", crdt_strerror(r));
    }
    if (created) {
        if (r > 0)
            crdtm_set_new(key, dst);
        else
            crdt_obj_free(dst);
    }
    if (r > 0)
        crdtm_changed(ctx, name, "crdt.merge", NULL);
    rc = r < 0 ? -1 : r > 0;
out:
    RedisModule_CloseKey(key);
    crdt_obj_free(obj);
    return rc;
}

/* CRDT.TYPE key -> "timeline", "pncounter", ... or "none" */
static int cmd_type(RedisModuleCtx *ctx, RedisModuleString **argv, int argc)
{
    if (argc != 2)
        return RedisModule_WrongArity(ctx);
    RedisModuleKey *key;
    crdt_obj_t *o;
    if (open_for_read(ctx, argv[1], 0, &key, &o) < 0)
        return REDISMODULE_OK;
    RedisModule_ReplyWithSimpleString(ctx, o ? crdt_type_name(crdt_obj_type(o)) : "none");
    RedisModule_CloseKey(key);
    return REDISMODULE_OK;
}

/* CRDT.INFO key -> flat field/value array (type, entries, tombstones, floor, max-size,
 * encoded-size, memory); nil if absent */
static int cmd_info(RedisModuleCtx *ctx, RedisModuleString **argv, int argc)
{
    if (argc != 2)
        return RedisModule_WrongArity(ctx);
    RedisModuleKey *key;
    crdt_obj_t *o;
    if (open_for_read(ctx, argv[1], 0, &key, &o) < 0)
        return REDISMODULE_OK;
    if (!o) {
        RedisModule_CloseKey(key);
        return RedisModule_ReplyWithNull(ctx);
    }
    crdt_stats_t st;
    crdt_obj_stats(o, &st);
    crdt_buf_t b = {0};
    int enc = crdt_obj_encode(o, &b);
    bool tl = crdt_obj_type(o) == CRDT_TIMELINE;
    RedisModule_ReplyWithArray(ctx, 14);
    RedisModule_ReplyWithSimpleString(ctx, "type");
    RedisModule_ReplyWithSimpleString(ctx, crdt_type_name(crdt_obj_type(o)));
    RedisModule_ReplyWithSimpleString(ctx, "entries");
    RedisModule_ReplyWithLongLong(ctx, (long long)st.entries);
    RedisModule_ReplyWithSimpleString(ctx, "tombstones");
    RedisModule_ReplyWithLongLong(ctx, (long long)st.tombstones);
    RedisModule_ReplyWithSimpleString(ctx, "floor");
    crdt_tl_entry_t floor;
    if (tl && crdt_timeline_floor(o, &floor) == 1) {
        RedisModule_ReplyWithArray(ctx, 2);
        RedisModule_ReplyWithDouble(ctx, floor.score);
        RedisModule_ReplyWithStringBuffer(ctx, floor.member, floor.member_len);
    } else {
        RedisModule_ReplyWithNull(ctx);
    }
    RedisModule_ReplyWithSimpleString(ctx, "max-size");
    RedisModule_ReplyWithLongLong(ctx, tl ? (long long)crdt_timeline_max_size(o) : 0);
    RedisModule_ReplyWithSimpleString(ctx, "encoded-size");
    RedisModule_ReplyWithLongLong(ctx, enc == 0 ? (long long)b.len : -1);
    RedisModule_ReplyWithSimpleString(ctx, "memory");
    RedisModule_ReplyWithLongLong(ctx, (long long)st.memory);
    crdt_buf_free(&b);
    RedisModule_CloseKey(key);
    return REDISMODULE_OK;
}

/* ---- command table: flags, key specs and COMMAND DOCS --------------------------------------- */
/* The table reads better one command per block than as clang-format would lay it out. */
/* clang-format off */

#define KS_ONE(fl)                                                                                 \
    (RedisModuleCommandKeySpec[])                                                                  \
    {                                                                                              \
        {.flags = (fl),                                                                            \
         .begin_search_type = REDISMODULE_KSPEC_BS_INDEX,                                          \
         .bs.index.pos = 1,                                                                        \
         .find_keys_type = REDISMODULE_KSPEC_FK_RANGE,                                             \
         .fk.range = {0, 1, 0}},                                                                   \
        {0}                                                                                        \
    }
/* the keys of key/score/member triples: arguments 1, 4, 7, ... to the end */
#define KS_EVERY3(fl)                                                                              \
    (RedisModuleCommandKeySpec[])                                                                  \
    {                                                                                              \
        {.flags = (fl),                                                                            \
         .begin_search_type = REDISMODULE_KSPEC_BS_INDEX,                                          \
         .bs.index.pos = 1,                                                                        \
         .find_keys_type = REDISMODULE_KSPEC_FK_RANGE,                                             \
         .fk.range = {-1, 3, 0}},                                                                  \
        {0}                                                                                        \
    }
#define RO_META REDISMODULE_CMD_KEY_RO
#define ARG_KEY {.name = "key", .type = REDISMODULE_ARG_TYPE_KEY, .key_spec_index = 0}
#define ARG(n, t) {.name = (n), .type = REDISMODULE_ARG_TYPE_##t, .key_spec_index = -1}
#define ARG_MULTI(n, t)                                                                            \
    {.name = (n), .type = REDISMODULE_ARG_TYPE_##t, .key_spec_index = -1,                        \
     .flags = REDISMODULE_CMD_ARG_MULTIPLE}
#define ARG_WITHSCORES                                                                             \
    {.name = "withscores", .type = REDISMODULE_ARG_TYPE_PURE_TOKEN, .key_spec_index = -1,        \
     .token = "WITHSCORES", .flags = REDISMODULE_CMD_ARG_OPTIONAL}

typedef struct cmd_def {
    const char *name;
    RedisModuleCmdFunc fn;
    const char *flags;
    int first, last, step;
    RedisModuleCommandInfo info;
} cmd_def_t;

static RedisModuleCommandArg score_member_args[] = {ARG("score", DOUBLE), ARG("member", STRING),
                                                    {0}};
static RedisModuleCommandArg after_args[] = {ARG("score", DOUBLE), ARG("member", STRING), {0}};
static RedisModuleCommandArg triple_args[] = {
    {.name = "data", .type = REDISMODULE_ARG_TYPE_BLOCK, .key_spec_index = -1,
     .flags = REDISMODULE_CMD_ARG_MULTIPLE,
     .subargs = (RedisModuleCommandArg[]){
         {.name = "key", .type = REDISMODULE_ARG_TYPE_KEY, .key_spec_index = 0},
         ARG("score", DOUBLE), ARG("member", STRING), {0}}},
    {0}};
static RedisModuleCommandArg range_args[] = {ARG("first-slot", INTEGER), ARG("last-slot", INTEGER),
                                             {0}};

#define V REDISMODULE_COMMAND_INFO_VERSION
static cmd_def_t commands[] = {
    {"crdt.tladd", cmd_tladd, "write deny-oom fast", 1, 1, 1,
     {.version = V,
      .summary = "Adds or updates timeline entries; a write that loses to what is there is ignored",
      .complexity = "O(M log N) for M pairs", .since = "0.1.0", .arity = -4,
      .key_specs = KS_ONE(REDISMODULE_CMD_KEY_RW | REDISMODULE_CMD_KEY_UPDATE),
      .args = (RedisModuleCommandArg[]){ARG_KEY,
                                        {.name = "data", .type = REDISMODULE_ARG_TYPE_BLOCK,
                                         .key_spec_index = -1, .flags = REDISMODULE_CMD_ARG_MULTIPLE,
                                         .subargs = score_member_args},
                                        {0}}}},
    {"crdt.tlrem", cmd_tlrem, "write deny-oom fast", 1, 1, 1,
     {.version = V,
      .summary = "Removes timeline entries at a score, leaving tombstones that block older adds",
      .complexity = "O(M log N) for M pairs", .since = "0.1.0", .arity = -4,
      .key_specs = KS_ONE(REDISMODULE_CMD_KEY_RW | REDISMODULE_CMD_KEY_DELETE),
      .args = (RedisModuleCommandArg[]){ARG_KEY,
                                        {.name = "data", .type = REDISMODULE_ARG_TYPE_BLOCK,
                                         .key_spec_index = -1, .flags = REDISMODULE_CMD_ARG_MULTIPLE,
                                         .subargs = score_member_args},
                                        {0}}}},
    {"crdt.tlmadd", cmd_tlmadd, "write deny-oom", 1, -1, 3,
     {.version = V,
      .summary = "TLADD over several timelines at once: every key's type is checked before any "
                 "is written",
      .complexity = "O(M log N) for M triples", .since = "0.4.0", .arity = -4,
      .key_specs = KS_EVERY3(REDISMODULE_CMD_KEY_RW | REDISMODULE_CMD_KEY_UPDATE),
      .args = triple_args}},
    {"crdt.tlmrem", cmd_tlmrem, "write deny-oom", 1, -1, 3,
     {.version = V,
      .summary = "TLREM over several timelines at once: every key's type is checked before any "
                 "is written",
      .complexity = "O(M log N) for M triples", .since = "0.4.0", .arity = -4,
      .key_specs = KS_EVERY3(REDISMODULE_CMD_KEY_RW | REDISMODULE_CMD_KEY_DELETE),
      .args = triple_args}},
    {"crdt.tlrange", cmd_tlrange, "readonly", 1, 1, 1,
     {.version = V, .summary = "Live timeline entries newest first, by offset and count",
      .complexity = "O(offset/64 + count)", .since = "0.1.0", .arity = -4,
      .key_specs = KS_ONE(RO_ACCESS),
      .args = (RedisModuleCommandArg[]){ARG_KEY, ARG("offset", INTEGER), ARG("count", INTEGER),
                                        ARG_WITHSCORES, {0}}}},
    {"crdt.tlrangebyscore", cmd_tlrangebyscore, "readonly", 1, 1, 1,
     {.version = V,
      .summary = "Live timeline entries with min <= score <= max, newest first, after a cursor",
      .complexity = "O(log N + count)", .since = "0.1.0", .arity = -4,
      .key_specs = KS_ONE(RO_ACCESS),
      .args = (RedisModuleCommandArg[]){
          ARG_KEY, ARG("max", DOUBLE), ARG("min", DOUBLE),
          {.name = "after", .type = REDISMODULE_ARG_TYPE_BLOCK, .key_spec_index = -1,
           .token = "AFTER", .flags = REDISMODULE_CMD_ARG_OPTIONAL, .subargs = after_args},
          {.name = "count", .type = REDISMODULE_ARG_TYPE_INTEGER, .key_spec_index = -1,
           .token = "LIMIT", .flags = REDISMODULE_CMD_ARG_OPTIONAL},
          ARG_WITHSCORES, {0}}}},
    {"crdt.tlselect", cmd_tlselect, "readonly getkeys-api", 2, -1, 1,
     {.version = V,
      .summary = "The newest live entries over several timelines, coalesced",
      .complexity = "O(K log K + count) for K keys", .since = "0.1.0", .arity = -3,
      .key_specs = (RedisModuleCommandKeySpec[]){
          {.notes = "keys run from the third argument to the end, less a final WITHSCORES",
           /* INCOMPLETE: the range also covers a final WITHSCORES, so Redis asks the
            * getkeys-api callback (cmd_tlselect) for the exact keys. */
           .flags = RO_ACCESS | REDISMODULE_CMD_KEY_INCOMPLETE,
           .begin_search_type = REDISMODULE_KSPEC_BS_INDEX,
           .bs.index.pos = 2,
           .find_keys_type = REDISMODULE_KSPEC_FK_RANGE,
           .fk.range = {-1, 1, 0}},
          {0}},
      .args = (RedisModuleCommandArg[]){ARG("count", INTEGER),
                                        {.name = "key", .type = REDISMODULE_ARG_TYPE_KEY,
                                         .key_spec_index = 0,
                                         .flags = REDISMODULE_CMD_ARG_MULTIPLE},
                                        ARG_WITHSCORES, {0}}}},
    {"crdt.tlcard", cmd_tlcard, "readonly fast", 1, 1, 1,
     {.version = V, .summary = "Number of live timeline entries", .complexity = "O(1)",
      .since = "0.1.0", .arity = 2, .key_specs = KS_ONE(RO_META),
      .args = (RedisModuleCommandArg[]){ARG_KEY, {0}}}},
    {"crdt.tlscore", cmd_tlscore, "readonly fast", 1, 1, 1,
     {.version = V, .summary = "Score of a live timeline member, nil if absent or removed",
      .complexity = "O(1)", .since = "0.1.0", .arity = 3, .key_specs = KS_ONE(RO_ACCESS),
      .args = (RedisModuleCommandArg[]){ARG_KEY, ARG("member", STRING), {0}}}},
    {"crdt.incrby", cmd_incrby, "write deny-oom fast", 1, 1, 1,
     {.version = V, .summary = "Adds to a PN-Counter (or a G-Counter) and returns the new value",
      .complexity = "O(replicas)", .since = "0.1.0", .arity = 3,
      .key_specs = KS_ONE(REDISMODULE_CMD_KEY_RW | REDISMODULE_CMD_KEY_ACCESS |
                          REDISMODULE_CMD_KEY_UPDATE),
      .args = (RedisModuleCommandArg[]){ARG_KEY, ARG("delta", INTEGER), {0}}}},
    {"crdt.gincrby", cmd_gincrby, "write deny-oom fast", 1, 1, 1,
     {.version = V, .summary = "Adds to a G-Counter (an empty key becomes one) and returns the value",
      .complexity = "O(replicas)", .since = "0.1.0", .arity = 3,
      .key_specs = KS_ONE(REDISMODULE_CMD_KEY_RW | REDISMODULE_CMD_KEY_ACCESS |
                          REDISMODULE_CMD_KEY_UPDATE),
      .args = (RedisModuleCommandArg[]){ARG_KEY, ARG("delta", INTEGER), {0}}}},
    {"crdt.decrby", cmd_decrby, "write deny-oom fast", 1, 1, 1,
     {.version = V, .summary = "Subtracts from a PN-Counter and returns the new value",
      .complexity = "O(replicas)", .since = "0.1.0", .arity = 3,
      .key_specs = KS_ONE(REDISMODULE_CMD_KEY_RW | REDISMODULE_CMD_KEY_ACCESS |
                          REDISMODULE_CMD_KEY_UPDATE),
      .args = (RedisModuleCommandArg[]){ARG_KEY, ARG("delta", INTEGER), {0}}}},
    {"crdt.get", cmd_get, "readonly fast", 1, 1, 1,
     {.version = V, .summary = "Value of a counter (integer) or an LWW register (string)",
      .complexity = "O(1) for registers, O(replicas) for counters", .since = "0.1.0", .arity = 2,
      .key_specs = KS_ONE(RO_ACCESS), .args = (RedisModuleCommandArg[]){ARG_KEY, {0}}}},
    {"crdt.set", cmd_set, "write deny-oom", 1, 1, 1,
     {.version = V, .summary = "Sets an LWW register at a hybrid logical clock timestamp",
      .complexity = "O(1)", .since = "0.1.0", .arity = 3,
      .key_specs = KS_ONE(REDISMODULE_CMD_KEY_RW | REDISMODULE_CMD_KEY_UPDATE),
      .args = (RedisModuleCommandArg[]){ARG_KEY, ARG("value", STRING), {0}}}},
    {"crdt.sadd", cmd_sadd, "write deny-oom fast", 1, 1, 1,
     {.version = V, .summary = "Adds members to an add-wins OR-Set", .complexity = "O(M)",
      .since = "0.1.0", .arity = -3,
      .key_specs = KS_ONE(REDISMODULE_CMD_KEY_RW | REDISMODULE_CMD_KEY_INSERT),
      .args = (RedisModuleCommandArg[]){ARG_KEY, ARG_MULTI("member", STRING), {0}}}},
    {"crdt.srem", cmd_srem, "write fast", 1, 1, 1,
     {.version = V, .summary = "Removes the members this server has seen from an OR-Set",
      .complexity = "O(M)", .since = "0.1.0", .arity = -3,
      .key_specs = KS_ONE(REDISMODULE_CMD_KEY_RW | REDISMODULE_CMD_KEY_DELETE),
      .args = (RedisModuleCommandArg[]){ARG_KEY, ARG_MULTI("member", STRING), {0}}}},
    {"crdt.delete", cmd_delete, "write", 1, 1, 1,
     {.version = V,
      .summary = "Deletes what this server has seen of a key (an observed-remove; concurrent "
                 "writes elsewhere survive); 1 if something live was removed",
      .complexity = "O(N)", .since = "0.3.0", .arity = -2,
      .key_specs = KS_ONE(REDISMODULE_CMD_KEY_RW | REDISMODULE_CMD_KEY_DELETE),
      .args = (RedisModuleCommandArg[]){ARG_KEY,
                                        {.name = "type", .type = REDISMODULE_ARG_TYPE_STRING,
                                         .token = "TYPE", .key_spec_index = -1,
                                         .flags = REDISMODULE_CMD_ARG_OPTIONAL},
                                        {0}}}},
    {"crdt.smembers", cmd_smembers, "readonly", 1, 1, 1,
     {.version = V, .summary = "Live members of a set, in bytewise order", .complexity = "O(N)",
      .since = "0.1.0", .arity = 2, .key_specs = KS_ONE(RO_ACCESS),
      .args = (RedisModuleCommandArg[]){ARG_KEY, {0}}}},
    {"crdt.sismember", cmd_sismember, "readonly fast", 1, 1, 1,
     {.version = V, .summary = "1 if the member is live in the set", .complexity = "O(1)",
      .since = "0.1.0", .arity = 3, .key_specs = KS_ONE(RO_ACCESS),
      .args = (RedisModuleCommandArg[]){ARG_KEY, ARG("member", STRING), {0}}}},
    {"crdt.scard", cmd_scard, "readonly fast", 1, 1, 1,
     {.version = V, .summary = "Number of live members of a set", .complexity = "O(1)",
      .since = "0.1.0", .arity = 2, .key_specs = KS_ONE(RO_META),
      .args = (RedisModuleCommandArg[]){ARG_KEY, {0}}}},
    {"crdt.state", cmd_state, "readonly", 1, 1, 1,
     {.version = V, .summary = "Binary encoding of the key's full state (libcrdt codec)",
      .complexity = "O(N)", .since = "0.1.0", .arity = 2, .key_specs = KS_ONE(RO_ACCESS),
      .args = (RedisModuleCommandArg[]){ARG_KEY, {0}}}},
    {"crdt.merge", cmd_merge, "write deny-oom", 1, 1, 1,
     {.version = V,
      .summary = "Joins states or deltas from another replica into the key; 1 if it changed",
      .complexity = "O(N + M)", .since = "0.1.0", .arity = -3,
      .key_specs = KS_ONE(REDISMODULE_CMD_KEY_RW | REDISMODULE_CMD_KEY_UPDATE),
      .args = (RedisModuleCommandArg[]){ARG_KEY, ARG_MULTI("payload", STRING), {0}}}},
    {"crdt.type", cmd_type, "readonly fast", 1, 1, 1,
     {.version = V, .summary = "CRDT type of the key, or none", .complexity = "O(1)",
      .since = "0.1.0", .arity = 2, .key_specs = KS_ONE(RO_META),
      .args = (RedisModuleCommandArg[]){ARG_KEY, {0}}}},
    {"crdt.info", cmd_info, "readonly", 1, 1, 1,
     {.version = V,
      .summary = "Type, entries, tombstones, floor, bound, encoded size and memory of a key",
      .complexity = "O(N)", .since = "0.1.0", .arity = 2, .key_specs = KS_ONE(RO_META),
      .args = (RedisModuleCommandArg[]){ARG_KEY, {0}}}},
    {"crdt.log.read", crdtm_cmd_log_read, "readonly", 1, 1, 1,
     {.version = V,
      .summary = "Entries of a change log after a position, and the position to read from next",
      .complexity = "O(count)", .since = "0.2.0", .arity = 4, .key_specs = KS_ONE(RO_ACCESS),
      .args = (RedisModuleCommandArg[]){ARG_KEY, ARG("position", STRING), ARG("count", INTEGER),
                                        {0}}}},
    /* What a primary propagates for a logged write (changelog.c); replicas and AOF only. */
    {"crdt.log.apply", crdtm_cmd_log_apply, "write deny-oom", 1, 2, 1,
     {.version = V,
      .summary = "Replication of a logged write: merges the record's delta into the key and "
                 "appends the record as the log's next entry (replication link and AOF loading "
                 "only)",
      .complexity = "O(N + M)", .since = "0.2.0", .arity = 4,
      .key_specs = (RedisModuleCommandKeySpec[]){
          {.notes = "the change log",
           .flags = REDISMODULE_CMD_KEY_RW | REDISMODULE_CMD_KEY_INSERT,
           .begin_search_type = REDISMODULE_KSPEC_BS_INDEX,
           .bs.index.pos = 1,
           .find_keys_type = REDISMODULE_KSPEC_FK_RANGE,
           .fk.range = {0, 1, 0}},
          {.notes = "the key the entry describes",
           .flags = REDISMODULE_CMD_KEY_RW | REDISMODULE_CMD_KEY_UPDATE,
           .begin_search_type = REDISMODULE_KSPEC_BS_INDEX,
           .bs.index.pos = 2,
           .find_keys_type = REDISMODULE_KSPEC_FK_RANGE,
           .fk.range = {0, 1, 0}},
          {0}},
      .args = (RedisModuleCommandArg[]){
          {.name = "log", .type = REDISMODULE_ARG_TYPE_KEY, .key_spec_index = 0},
          {.name = "key", .type = REDISMODULE_ARG_TYPE_KEY, .key_spec_index = 1},
          ARG("record", STRING),
          {0}}}},
    {"crdt.log.append", crdtm_cmd_log_append, "write deny-oom", 1, 1, 1,
     {.version = V,
      .summary = "Appends records to a change log as the entries numbered from offset "
                 "(replication link and AOF loading only)",
      .complexity = "O(M)", .since = "0.4.0", .arity = -3,
      .key_specs = KS_ONE(REDISMODULE_CMD_KEY_RW | REDISMODULE_CMD_KEY_INSERT),
      .args = (RedisModuleCommandArg[]){ARG_KEY, ARG("offset", INTEGER),
                                        {.name = "record", .type = REDISMODULE_ARG_TYPE_STRING,
                                         .key_spec_index = -1,
                                         .flags = REDISMODULE_CMD_ARG_OPTIONAL |
                                                  REDISMODULE_CMD_ARG_MULTIPLE},
                                        {0}}}},
    {"crdt.log.trim", crdtm_cmd_log_trim, "write", 1, 1, 1,
     {.version = V, .summary = "Removes a change log's entries up to an offset; their number",
      .complexity = "O(N) for N entries removed", .since = "0.4.0", .arity = 3,
      .key_specs = KS_ONE(REDISMODULE_CMD_KEY_RW | REDISMODULE_CMD_KEY_DELETE),
      .args = (RedisModuleCommandArg[]){ARG_KEY, ARG("upto", INTEGER), {0}}}},
    {"crdt.log.group", crdtm_cmd_log_group, "write", 1, 1, 1,
     {.version = V,
      .summary = "Creates, moves or destroys a consumer group of a change log (log-trim-acked)",
      .complexity = "O(groups)", .since = "0.4.0", .arity = -4,
      .key_specs = KS_ONE(REDISMODULE_CMD_KEY_RW | REDISMODULE_CMD_KEY_UPDATE),
      .args = (RedisModuleCommandArg[]){
          ARG_KEY,
          {.name = "subcommand", .type = REDISMODULE_ARG_TYPE_ONEOF, .key_spec_index = -1,
           .subargs = (RedisModuleCommandArg[]){
               {.name = "create", .type = REDISMODULE_ARG_TYPE_PURE_TOKEN, .key_spec_index = -1,
                .token = "CREATE"},
               {.name = "setid", .type = REDISMODULE_ARG_TYPE_PURE_TOKEN, .key_spec_index = -1,
                .token = "SETID"},
               {.name = "destroy", .type = REDISMODULE_ARG_TYPE_PURE_TOKEN,
                .key_spec_index = -1, .token = "DESTROY"},
               {0}}},
          ARG("group", STRING),
          {.name = "position", .type = REDISMODULE_ARG_TYPE_STRING, .key_spec_index = -1,
           .flags = REDISMODULE_CMD_ARG_OPTIONAL},
          {0}}}},
    {"crdt.log.info", crdtm_cmd_log_info, "readonly fast", 1, 1, 1,
     {.version = V,
      .summary = "Length, entries added, first offset, newest entry's time and groups of a log",
      .complexity = "O(groups)", .since = "0.4.0", .arity = 2, .key_specs = KS_ONE(RO_META),
      .args = (RedisModuleCommandArg[]){ARG_KEY, {0}}}},
    {"crdt.log.poll", crdtm_cmd_log_poll, "readonly", 0, 0, 0,
     {.version = V,
      .summary = "CRDT.LOG.READ of every log given that has something to read, in one reply",
      .complexity = "O(logs + count)", .since = "0.3.0", .arity = -4,
      .args = (RedisModuleCommandArg[]){
          ARG("count", INTEGER),
          {.name = "log-position",
           .key_spec_index = -1,
           .type = REDISMODULE_ARG_TYPE_BLOCK,
           .flags = REDISMODULE_CMD_ARG_MULTIPLE,
           .subargs = (RedisModuleCommandArg[]){ARG("log", STRING), ARG("position", STRING), {0}}},
          {0}}}},
    {"crdt.log.list", crdtm_cmd_log_list, "readonly", 0, 0, 0,
     {.version = V, .summary = "Names of the change logs this node holds, of all slots or one",
      .complexity = "O(slots)", .since = "0.2.0", .arity = -1,
      .args = (RedisModuleCommandArg[]){
          {.name = "slot", .type = REDISMODULE_ARG_TYPE_INTEGER, .key_spec_index = -1,
           .flags = REDISMODULE_CMD_ARG_OPTIONAL},
          {0}}}},
    /* The key of CRDT.RSX.* names the slot (any key of it, "{TAG}" by convention) and is a real
     * key spec, not NOT_KEY: Redis 7.0 routes only real keys to a slot's node. */
    {"crdt.rsx.open", crdtm_cmd_rsx_open, "readonly", 1, 1, 1,
     {.version = V,
      .summary = "Opens a reconcile session over the slot of key or a range of slots (INITIATOR: "
                 "with its first message)",
      .complexity = "O(K log K) for K keys in the slots", .since = "0.2.0", .arity = -3,
      .key_specs = KS_ONE(REDISMODULE_CMD_KEY_RO),
      .args = (RedisModuleCommandArg[]){ARG_KEY, ARG("role", STRING),
                                        {.name = "range", .type = REDISMODULE_ARG_TYPE_BLOCK,
                                         .key_spec_index = -1,
                                         .flags = REDISMODULE_CMD_ARG_OPTIONAL,
                                         .subargs = range_args},
                                        {.name = "maxmsg", .type = REDISMODULE_ARG_TYPE_INTEGER,
                                         .key_spec_index = -1, .token = "MAXMSG",
                                         .flags = REDISMODULE_CMD_ARG_OPTIONAL},
                                        {.name = "maxcells", .type = REDISMODULE_ARG_TYPE_INTEGER,
                                         .key_spec_index = -1, .token = "MAXCELLS",
                                         .flags = REDISMODULE_CMD_ARG_OPTIONAL},
                                        {0}}}},
    {"crdt.rsx.recv", crdtm_cmd_rsx_recv, "readonly", 1, 1, 1,
     {.version = V, .summary = "Hands a reconcile message to a session; its reply and whether done",
      .complexity = "O(cells of the message * log K)", .since = "0.2.0", .arity = 4,
      .key_specs = KS_ONE(REDISMODULE_CMD_KEY_RO),
      .args = (RedisModuleCommandArg[]){ARG_KEY, ARG("session", STRING), ARG("message", STRING),
                                        {0}}}},
    {"crdt.rsx.diffs", crdtm_cmd_rsx_diffs, "readonly", 1, 1, 1,
     {.version = V, .summary = "The keys a reconcile session found to differ, and who holds them",
      .complexity = "O(D log K)", .since = "0.2.0", .arity = -3,
      .key_specs = KS_ONE(REDISMODULE_CMD_KEY_RO),
      .args = (RedisModuleCommandArg[]){
          ARG_KEY, ARG("session", STRING),
          {.name = "which", .type = REDISMODULE_ARG_TYPE_ONEOF, .key_spec_index = -1,
           .flags = REDISMODULE_CMD_ARG_OPTIONAL,
           .subargs = (RedisModuleCommandArg[]){
               {.name = "held", .type = REDISMODULE_ARG_TYPE_PURE_TOKEN, .key_spec_index = -1,
                .token = "HELD"},
               {.name = "unique", .type = REDISMODULE_ARG_TYPE_PURE_TOKEN, .key_spec_index = -1,
                .token = "UNIQUE"},
               {0}}},
          {0}}}},
    {"crdt.rsx.close", crdtm_cmd_rsx_close, "readonly", 1, 1, 1,
     {.version = V, .summary = "Ends a reconcile session", .complexity = "O(K)", .since = "0.2.0",
      .arity = 3, .key_specs = KS_ONE(REDISMODULE_CMD_KEY_RO),
      .args = (RedisModuleCommandArg[]){ARG_KEY, ARG("session", STRING), {0}}}},
    {"crdt.rsx.items", crdtm_cmd_rsx_items, "readonly", 0, 0, 0,
     {.version = V,
      .summary = "The anti-entropy items (name, id, fingerprint) of a slot range held by this node",
      .complexity = "O(keys)", .since = "0.3.0", .arity = 3,
      .args = (RedisModuleCommandArg[]){ARG("first-slot", INTEGER), ARG("last-slot", INTEGER),
                                        {0}}}},
    {"crdt.rsx.digest", crdtm_cmd_rsx_digest, "readonly", 0, 0, 0,
     {.version = V,
      .summary = "Sum of the range fingerprints of the slots of a range held by this node",
      .complexity = "O(slots + keys written since)", .since = "0.2.0", .arity = -3,
      .args = (RedisModuleCommandArg[]){ARG("first-slot", INTEGER), ARG("last-slot", INTEGER),
                                        {.name = "step", .type = REDISMODULE_ARG_TYPE_INTEGER,
                                         .key_spec_index = -1,
                                         .flags = REDISMODULE_CMD_ARG_OPTIONAL},
                                        {0}}}},
};
#undef V
/* clang-format on */

int crdtm_register_commands(RedisModuleCtx *ctx)
{
    for (size_t i = 0; i < sizeof(commands) / sizeof(commands[0]); i++) {
        cmd_def_t *c = &commands[i];
        if (RedisModule_CreateCommand(ctx, c->name, c->fn, c->flags, c->first, c->last, c->step) ==
            REDISMODULE_ERR) {
            RedisModule_Log(ctx, "warning", "crdt: cannot create command %s", c->name);
            return REDISMODULE_ERR;
        }
        RedisModuleCommand *cmd = RedisModule_GetCommand(ctx, c->name);
        if (!cmd || RedisModule_SetCommandInfo(cmd, &c->info) == REDISMODULE_ERR) {
            RedisModule_Log(ctx, "warning", "crdt: command info of %s refused", c->name);
            return REDISMODULE_ERR;
        }
    }
    return REDISMODULE_OK;
}
