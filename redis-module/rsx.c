/* rsx.c - crdt.so's anti-entropy: range fingerprints per hash slot and the reconcile protocol of
 * replicator/reconcile (crdt_rsx) as CRDT.RSX.* commands
 *
 * Every CRDT key of db 0 is an item (crdt_rsx_key_id(name), crdt_rsx_state_fp(encoding)) of its
 * slot. A write only notes the key's name as dirty in its slot (O(1)); the slot's sorted item list
 * and its sketch are brought up to date when they are read (CRDT.RSX.DIGEST, CRDT.RSX.OPEN) or
 * when the dirty list outgrows the slot. Sketches of disjoint sets add, so CRDT.RSX.DIGEST sums
 * the slots of a range: two deployments bisect the slot space with it, then run one crdt_rsx
 * session per differing slot, whose bandwidth grows with the difference, not with the slot.
 *
 * Sessions live in the module between commands (at most RSX_MAX_SESSIONS, the oldest goes first,
 * none outlives RSX_SESSION_MS), each over a snapshot of its slot, so writes during a session do
 * not disturb it. Messages are the library's (it never trusts them; tests/fuzz/fuzz_reconcile).
 */
#include "crdt_module.h"
#include "crdt_reconcile.h"
#include "logpos.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#define RSX_MAX_SESSIONS 1024
#define RSX_SESSION_MS (5 * 60 * 1000)
/* Keys the snapshots of all open sessions may hold together (a snapshot costs about 40 bytes
 * plus the name per key): OPEN evicts the oldest sessions to stay under it. */
#define RSX_SNAPSHOT_KEYS_MAX (8u << 20)

typedef struct rsx_key {
    uint64_t id, fp;
    char *name;
    size_t len;
} rsx_key_t;

typedef struct rsx_slot {
    rsx_key_t *keys; /* by (id, name) */
    uint32_t n, cap;
    rsx_key_t *dirty; /* names written since the last refresh (id set, fp unused) */
    uint32_t nd, dcap;
    crdt_rsx_sketch_t sketch; /* of the slot's items (keys of one id folded) */
} rsx_slot_t;

static rsx_slot_t *rsx_slots;

typedef struct rsx_sess {
    uint64_t sid; /* 0: free */
    unsigned slot;
    long long born;
    rsx_key_t *keys; /* snapshot: copies of the names */
    uint32_t n;
    crdt_rsx_index_t *ix;
    crdt_rsx_session_t *s;
    bool done;
} rsx_sess_t;

static rsx_sess_t sessions[RSX_MAX_SESSIONS];
static unsigned long long rsx_refreshes, rsx_sessions_opened;

static int key_cmp(const void *a, const void *b)
{
    const rsx_key_t *x = a, *y = b;
    if (x->id != y->id)
        return x->id < y->id ? -1 : 1;
    size_t l = x->len < y->len ? x->len : y->len;
    int c = memcmp(x->name, y->name, l);
    return c ? c : (x->len < y->len ? -1 : x->len > y->len);
}

static void slot_clear(rsx_slot_t *sl)
{
    for (uint32_t i = 0; i < sl->n; i++)
        free(sl->keys[i].name);
    for (uint32_t i = 0; i < sl->nd; i++)
        free(sl->dirty[i].name);
    free(sl->keys);
    free(sl->dirty);
    memset(sl, 0, sizeof(*sl));
}

/* The items of keys[0..n) (sorted): keys sharing an id are folded into one item whose fp is the
 * sum of theirs, as crdt_reconcile.h asks. Writes at most n items; returns how many. */
static size_t fold_items(const rsx_key_t *keys, uint32_t n, crdt_rsx_item_t *out)
{
    size_t m = 0;
    for (uint32_t i = 0; i < n; i++) {
        if (m && out[m - 1].id == keys[i].id)
            out[m - 1].fp += keys[i].fp;
        else
            out[m++] = (crdt_rsx_item_t){keys[i].id, keys[i].fp};
    }
    return m;
}

static void slot_sketch(rsx_slot_t *sl)
{
    memset(&sl->sketch, 0, sizeof(sl->sketch));
    uint64_t id = 0, fp = 0;
    bool have = false;
    for (uint32_t i = 0; i <= sl->n; i++) {
        if (have && (i == sl->n || sl->keys[i].id != id)) {
            crdt_rsx_sketch_t one;
            crdt_rsx_item_sketch(id, fp, &one);
            crdt_rsx_sketch_add(&sl->sketch, &one);
            have = false;
        }
        if (i == sl->n)
            break;
        if (!have) {
            id = sl->keys[i].id;
            fp = 0;
            have = true;
        }
        fp += sl->keys[i].fp;
    }
}

/* Brings a slot's items up to date with its dirty names: each is looked up in db 0 (the caller's
 * context has it selected) and its state fingerprinted, or dropped if it no longer holds a CRDT.
 * 0, or -1 on out of memory (the slot keeps its dirty list for the next try). */
static int slot_refresh(RedisModuleCtx *ctx, unsigned slot)
{
    rsx_slot_t *sl = &rsx_slots[slot];
    if (!sl->nd)
        return 0;
    rsx_key_t *out = malloc(((size_t)sl->n + sl->nd) * sizeof(*out));
    if (!out)
        return -1;
    /* The dirty names are taken off the slot while their keys are opened: a key that expired is
     * deleted right there, and the name its "expired" event notes (crdtm_rsx_note) goes to a new
     * list, for the next refresh (which finds it gone), not into the one walked here. */
    rsx_key_t *dirty = sl->dirty;
    uint32_t nd = sl->nd;
    sl->dirty = NULL;
    sl->nd = sl->dcap = 0;
    qsort(dirty, nd, sizeof(*dirty), key_cmp);
    uint32_t m = 0, i = 0, d = 0;
    while (i < sl->n || d < nd) {
        /* a dirty name replaces the key it equals; duplicates in the dirty list collapse */
        int c = i == sl->n ? 1 : d == nd ? -1 : key_cmp(&sl->keys[i], &dirty[d]);
        if (c < 0) {
            out[m++] = sl->keys[i++];
            continue;
        }
        if (c == 0) {
            free(sl->keys[i].name);
            i++;
        }
        rsx_key_t k = dirty[d++];
        while (d < nd && key_cmp(&dirty[d], &k) == 0)
            free(dirty[d++].name);
        RedisModuleString *ns = RedisModule_CreateString(ctx, k.name, k.len);
        RedisModuleKey *key = RedisModule_OpenKey(ctx, ns, REDISMODULE_READ);
        bool present = false;
        if (RedisModule_KeyType(key) == REDISMODULE_KEYTYPE_MODULE &&
            RedisModule_ModuleTypeGetType(key) == crdtm_type) {
            crdt_buf_t b = {0};
            if (crdt_obj_encode(RedisModule_ModuleTypeGetValue(key), &b) == 0) {
                k.fp = crdt_rsx_state_fp(b.data, b.len);
                present = true;
            }
            crdt_buf_free(&b);
        }
        RedisModule_CloseKey(key);
        RedisModule_FreeString(ctx, ns);
        if (present)
            out[m++] = k;
        else
            free(k.name);
    }
    free(dirty);
    free(sl->keys);
    sl->keys = out;
    sl->n = m;
    sl->cap = m;
    slot_sketch(sl);
    rsx_refreshes++;
    return 0;
}

/* Notes name in its slot's dirty list; the slot's index, or -1 when nothing was noted (rsx off,
 * not db 0, out of memory). */
static int note_dirty(RedisModuleCtx *ctx, const char *name, size_t len)
{
    if (!rsx_slots || RedisModule_GetSelectedDb(ctx) != 0)
        return -1;
    unsigned slot = crdtm_keyslot(name, len);
    rsx_slot_t *sl = &rsx_slots[slot];
    /* a key written again before its slot is refreshed needs no second note (hot keys) */
    if (sl->nd && sl->dirty[sl->nd - 1].len == len &&
        !memcmp(sl->dirty[sl->nd - 1].name, name, len))
        return (int)slot;
    if (sl->nd == sl->dcap) {
        uint32_t cap = sl->dcap ? sl->dcap * 2 : 4;
        rsx_key_t *p = realloc(sl->dirty, cap * sizeof(*p));
        if (!p)
            return -1;
        sl->dirty = p;
        sl->dcap = cap;
    }
    char *copy = malloc(len ? len : 1);
    if (!copy)
        return -1;
    memcpy(copy, name, len);
    sl->dirty[sl->nd++] = (rsx_key_t){crdt_rsx_key_id(name, len), 0, copy, len};
    return (int)slot;
}

/* A hot slot is refreshed before its dirty list outgrows it by much. */
static bool over_bound(const rsx_slot_t *sl)
{
    return sl->nd > 256 + 2 * sl->n;
}

void crdtm_rsx_touch(RedisModuleCtx *ctx, const char *name, size_t len)
{
    int slot = note_dirty(ctx, name, len);
    if (slot >= 0 && over_bound(&rsx_slots[slot]))
        slot_refresh(ctx, (unsigned)slot);
}

/* Whether refresh_due_cb is scheduled. */
static bool refresh_due;

/* The refreshes notes from keyspace events made due, from the event loop, where opening keys
 * deletes nothing under a walk of Redis's. */
static void refresh_due_cb(RedisModuleCtx *ctx, void *data)
{
    (void)data;
    refresh_due = false;
    if (!rsx_slots || RedisModule_SelectDb(ctx, 0) != REDISMODULE_OK)
        return;
    for (unsigned s = 0; s < CRDTM_SLOTS; s++)
        if (over_bound(&rsx_slots[s]))
            slot_refresh(ctx, s);
}

void crdtm_rsx_note(RedisModuleCtx *ctx, const char *name, size_t len)
{
    int slot = note_dirty(ctx, name, len);
    /* expired and deleted keys of other types are noted too: a slot whose list outgrew it is
     * refreshed soon, by a timer (not here: see crdtm_rsx_note in crdt_module.h) */
    if (slot >= 0 && over_bound(&rsx_slots[slot]) && !refresh_due)
        refresh_due = RedisModule_CreateTimer(ctx, 0, refresh_due_cb, NULL) != 0;
}

static void on_flush(RedisModuleCtx *ctx, RedisModuleEvent eid, uint64_t subevent, void *data)
{
    (void)ctx;
    (void)eid;
    const RedisModuleFlushInfo *fi = data;
    if (subevent != REDISMODULE_SUBEVENT_FLUSHDB_END)
        crdtm_log_on_flush(); /* before the values go (maybe to a background thread) */
    if (subevent != REDISMODULE_SUBEVENT_FLUSHDB_END || !rsx_slots ||
        (fi && fi->dbnum != -1 && fi->dbnum != 0))
        return;
    for (unsigned s = 0; s < CRDTM_SLOTS; s++)
        slot_clear(&rsx_slots[s]);
}

void crdtm_rsx_reset(void)
{
    if (!rsx_slots)
        return;
    for (unsigned s = 0; s < CRDTM_SLOTS; s++)
        slot_clear(&rsx_slots[s]);
}

/* ---- sessions ------------------------------------------------------------------------------- */

static void sess_free(rsx_sess_t *x)
{
    crdt_rsx_session_free(x->s);
    crdt_rsx_index_free(x->ix);
    for (uint32_t i = 0; i < x->n; i++)
        free(x->keys[i].name);
    free(x->keys);
    memset(x, 0, sizeof(*x));
}

/* A free session slot for a snapshot of `keys` keys: expired sessions are freed first, then the
 * oldest, until a slot is free and the snapshots fit RSX_SNAPSHOT_KEYS_MAX. NULL if `keys` alone
 * exceeds it. */
static rsx_sess_t *sess_alloc(size_t keys)
{
    if (keys > RSX_SNAPSHOT_KEYS_MAX)
        return NULL;
    long long now = RedisModule_Milliseconds();
    for (;;) {
        rsx_sess_t *free_one = NULL, *oldest = NULL;
        size_t held = 0;
        for (int i = 0; i < RSX_MAX_SESSIONS; i++) {
            rsx_sess_t *x = &sessions[i];
            if (x->sid && now - x->born > RSX_SESSION_MS)
                sess_free(x);
            if (!x->sid && !free_one)
                free_one = x;
            if (x->sid && (!oldest || x->born < oldest->born))
                oldest = x;
            held += x->n;
        }
        if (free_one && held + keys <= RSX_SNAPSHOT_KEYS_MAX)
            return free_one;
        sess_free(oldest); /* there is one: held > 0 or no slot is free */
    }
}

static int reply_no_db0(RedisModuleCtx *ctx)
{
    return RedisModule_ReplyWithError(
        ctx, "ERR CRDT.RSX works on db 0 (the only db of Redis Cluster): SELECT 0 first");
}

/* The session named by argv[2] of a command whose argv[1] routes to its slot, or NULL after an
 * error reply. */
static rsx_sess_t *sess_find(RedisModuleCtx *ctx, RedisModuleString **argv)
{
    size_t len;
    const char *p = RedisModule_StringPtrLen(argv[2], &len);
    char buf[24];
    uint64_t sid = 0;
    bool good = len == 16;
    if (good) {
        memcpy(buf, p, 16);
        buf[16] = '\0';
        char *end;
        sid = strtoull(buf, &end, 16);
        good = end == buf + 16 && sid != 0;
    }
    size_t klen;
    const char *k = RedisModule_StringPtrLen(argv[1], &klen);
    unsigned slot = crdtm_keyslot(k, klen);
    for (int i = 0; good && i < RSX_MAX_SESSIONS; i++)
        if (sessions[i].sid == sid && sessions[i].slot == slot)
            return &sessions[i];
    RedisModule_ReplyWithError(ctx, "ERR no such reconcile session in this slot (closed, expired "
                                    "or evicted: open another)");
    return NULL;
}

/* CRDT.RSX.OPEN key INITIATOR|RESPONDER [first-slot last-slot] [MAXMSG bytes] [MAXCELLS n]
 *   -> [session, first message ("" for a responder)]
 * Over the slot of key, or over every slot of the range (which this node must serve: the keys of
 * a slot served elsewhere would look missing). MAXMSG and MAXCELLS are the peer's limits
 * (crdt_rsx_config_t's max_msg, at least 256, and max_cells): the session's messages stay within
 * them and it refuses larger ones, so a link that carries at most so many bytes is not handed a
 * message it must drop. */
int crdtm_cmd_rsx_open(RedisModuleCtx *ctx, RedisModuleString **argv, int argc)
{
    if (argc < 3)
        return RedisModule_WrongArity(ctx);
    int opt = 3; /* where the options start: after the range, if one is given */
    long long n;
    if (argc >= 5 && RedisModule_StringToLongLong(argv[3], &n) == REDISMODULE_OK)
        opt = 5;
    if ((argc - opt) % 2)
        return RedisModule_WrongArity(ctx);
    long long max_msg = 0, max_cells = 0;
    for (int i = opt; i < argc; i += 2) {
        const char *o = RedisModule_StringPtrLen(argv[i], NULL);
        long long *dst = !strcasecmp(o, "MAXMSG")     ? &max_msg
                         : !strcasecmp(o, "MAXCELLS") ? &max_cells
                                                      : NULL;
        if (!dst)
            return RedisModule_ReplyWithError(ctx, "ERR syntax error: options are MAXMSG bytes and "
                                                   "MAXCELLS n, after the slots");
        if (RedisModule_StringToLongLong(argv[i + 1], dst) != REDISMODULE_OK ||
            *dst < (dst == &max_msg ? 256 : 1))
            return RedisModule_ReplyWithError(ctx, "ERR MAXMSG must be an integer of at least 256, "
                                                   "MAXCELLS one of at least 1");
    }
    argc = opt;
    if (!rsx_slots)
        return RedisModule_ReplyWithError(ctx, "ERR anti-entropy is off (module argument rsx no)");
    if (RedisModule_GetSelectedDb(ctx) != 0)
        return reply_no_db0(ctx);
    const char *role = RedisModule_StringPtrLen(argv[2], NULL);
    bool initiator = !strcasecmp(role, "INITIATOR");
    if (!initiator && strcasecmp(role, "RESPONDER"))
        return RedisModule_ReplyWithError(ctx, "ERR role must be INITIATOR or RESPONDER");
    size_t klen;
    const char *k = RedisModule_StringPtrLen(argv[1], &klen);
    unsigned slot = crdtm_keyslot(k, klen);
    long long first = slot, last = slot;
    if (argc == 5 && (RedisModule_StringToLongLong(argv[3], &first) != REDISMODULE_OK ||
                      RedisModule_StringToLongLong(argv[4], &last) != REDISMODULE_OK || first < 0 ||
                      last >= CRDTM_SLOTS || first > last))
        return RedisModule_ReplyWithError(ctx, "ERR slots must be integers 0 <= first <= last "
                                               "<= 16383");
    size_t total = 0;
    for (long long sl = first; sl <= last; sl++) {
        if (slot_refresh(ctx, (unsigned)sl) < 0)
            return RedisModule_ReplyWithError(ctx, "ERR out of memory");
        total += rsx_slots[sl].n;
    }
    rsx_sess_t *x = sess_alloc(total);
    if (!x)
        return RedisModule_ReplyWithError(ctx, "ERR the range holds too many keys for one session "
                                               "(more than 8388608): reconcile smaller ranges");
    x->keys = calloc(total ? total : 1, sizeof(*x->keys));
    crdt_rsx_item_t *items = malloc((total ? total : 1) * sizeof(*items));
    x->ix = crdt_rsx_index_new();
    bool oom = !x->keys || !items || !x->ix;
    for (long long sl = first; !oom && sl <= last; sl++) {
        const rsx_slot_t *ss = &rsx_slots[sl];
        for (uint32_t i = 0; i < ss->n; i++) {
            rsx_key_t *dst = &x->keys[x->n];
            *dst = ss->keys[i];
            dst->name = malloc(ss->keys[i].len ? ss->keys[i].len : 1);
            if (!dst->name) {
                oom = true;
                break;
            }
            memcpy(dst->name, ss->keys[i].name, ss->keys[i].len);
            x->n++;
        }
    }
    /* each slot's keys are in id order; the range's are sorted once */
    if (!oom && first != last)
        qsort(x->keys, x->n, sizeof(*x->keys), key_cmp);
    if (!oom)
        oom = crdt_rsx_index_build(x->ix, items, fold_items(x->keys, x->n, items)) < 0;
    free(items);
    crdt_rsx_config_t cfg;
    crdt_rsx_config_init(&cfg);
    /* A session covers at most 16384 slots of one node: an estimator good to 2^20 differences
     * is plenty, and two thirds of the default's bytes. */
    cfg.estimator_levels = 10;
    if (max_msg)
        cfg.max_msg = (size_t)max_msg;
    if (max_cells)
        cfg.max_cells = (size_t)max_cells;
    RedisModule_GetRandomBytes((unsigned char *)&cfg.seed, sizeof(cfg.seed));
    if (!oom)
        x->s = crdt_rsx_session_new(x->ix, initiator, &cfg);
    crdt_buf_t msg = {0};
    if (oom || !x->s || (initiator && crdt_rsx_initiate(x->s, &msg) < 0)) {
        sess_free(x);
        crdt_buf_free(&msg);
        return RedisModule_ReplyWithError(ctx, "ERR out of memory");
    }
    while (!x->sid)
        RedisModule_GetRandomBytes((unsigned char *)&x->sid, sizeof(x->sid));
    x->slot = slot;
    x->born = RedisModule_Milliseconds();
    rsx_sessions_opened++;
    char sid[24];
    snprintf(sid, sizeof(sid), "%016llx", (unsigned long long)x->sid);
    RedisModule_ReplyWithArray(ctx, 2);
    RedisModule_ReplyWithCString(ctx, sid);
    RedisModule_ReplyWithStringBuffer(ctx, (const char *)msg.data, msg.len);
    crdt_buf_free(&msg);
    return REDISMODULE_OK;
}

/* CRDT.RSX.RECV key session message -> [reply message ("" when none is due), done 0|1] */
int crdtm_cmd_rsx_recv(RedisModuleCtx *ctx, RedisModuleString **argv, int argc)
{
    if (argc != 4)
        return RedisModule_WrongArity(ctx);
    rsx_sess_t *x = sess_find(ctx, argv);
    if (!x)
        return REDISMODULE_OK;
    size_t len;
    const char *msg = RedisModule_StringPtrLen(argv[3], &len);
    crdt_buf_t reply = {0};
    crdt_error_t err;
    memset(&err, 0, sizeof(err));
    bool done = false;
    int rc = crdt_rsx_receive(x->s, msg, len, &reply, &done, &err);
    if (rc < 0) {
        char text[320];
        snprintf(text, sizeof(text), "ERR reconcile message refused at byte %zu: %s", err.offset,
                 err.text[0] ? err.text : crdt_strerror(rc));
        crdt_buf_free(&reply);
        return RedisModule_ReplyWithError(ctx, text);
    }
    x->done = done;
    RedisModule_ReplyWithArray(ctx, 2);
    RedisModule_ReplyWithStringBuffer(ctx, (const char *)reply.data, reply.len);
    RedisModule_ReplyWithLongLong(ctx, done);
    crdt_buf_free(&reply);
    return REDISMODULE_OK;
}

/* CRDT.RSX.DIFFS key session -> [[name or nil, flags, id], ...]: the ids found to differ, with
 * the names this side holds for them (several if keys share an id); flags 1: we hold it, 2: the
 * peer does, 3: both, with different states. Ends the session (no CLOSE needed). */
int crdtm_cmd_rsx_diffs(RedisModuleCtx *ctx, RedisModuleString **argv, int argc)
{
    if (argc != 3 && argc != 4)
        return RedisModule_WrongArity(ctx);
    /* HELD: only keys this side holds (flags 1 or 3); UNIQUE: only keys the other side lacks
     * (flags 1). One side asking HELD and the other UNIQUE names every differing key once. */
    unsigned need = 0, mask = 0;
    if (argc == 4) {
        size_t ol;
        const char *o = RedisModule_StringPtrLen(argv[3], &ol);
        if (ol == 4 && !strncasecmp(o, "HELD", 4)) {
            need = CRDT_RSX_WE_HAVE;
            mask = CRDT_RSX_WE_HAVE;
        } else if (ol == 6 && !strncasecmp(o, "UNIQUE", 6)) {
            need = CRDT_RSX_WE_HAVE;
            mask = CRDT_RSX_WE_HAVE | CRDT_RSX_THEY_HAVE;
        } else {
            return RedisModule_ReplyWithError(ctx, "ERR option must be HELD or UNIQUE");
        }
    }
    rsx_sess_t *x = sess_find(ctx, argv);
    if (!x)
        return REDISMODULE_OK;
    const crdt_rsx_diff_t *d;
    size_t nd = crdt_rsx_session_diffs(x->s, &d);
    RedisModule_ReplyWithArray(ctx, REDISMODULE_POSTPONED_LEN);
    long n = 0;
    for (size_t i = 0; i < nd; i++) {
        if ((d[i].flags & mask) != need)
            continue;
        /* keys of the snapshot with this id: binary search for the first */
        uint32_t lo = 0, hi = x->n;
        while (lo < hi) {
            uint32_t mid = lo + (hi - lo) / 2;
            if (x->keys[mid].id < d[i].id)
                lo = mid + 1;
            else
                hi = mid;
        }
        bool named = false;
        for (uint32_t k = lo; k < x->n && x->keys[k].id == d[i].id; k++) {
            RedisModule_ReplyWithArray(ctx, 3);
            RedisModule_ReplyWithStringBuffer(ctx, x->keys[k].name, x->keys[k].len);
            RedisModule_ReplyWithLongLong(ctx, d[i].flags);
            RedisModule_ReplyWithLongLong(ctx, (long long)d[i].id);
            n++;
            named = true;
        }
        if (!named) {
            RedisModule_ReplyWithArray(ctx, 3);
            RedisModule_ReplyWithNull(ctx);
            RedisModule_ReplyWithLongLong(ctx, d[i].flags);
            RedisModule_ReplyWithLongLong(ctx, (long long)d[i].id);
            n++;
        }
    }
    RedisModule_ReplySetArrayLength(ctx, n);
    sess_free(x);
    return REDISMODULE_OK;
}

/* CRDT.RSX.CLOSE key session -> OK (abandons a session before its DIFFS) */
int crdtm_cmd_rsx_close(RedisModuleCtx *ctx, RedisModuleString **argv, int argc)
{
    if (argc != 3)
        return RedisModule_WrongArity(ctx);
    rsx_sess_t *x = sess_find(ctx, argv);
    if (!x)
        return REDISMODULE_OK;
    sess_free(x);
    return RedisModule_ReplyWithSimpleString(ctx, "OK");
}

/* A 64-bit hash of a sketch, 0 for the empty one (so a node without keys in a range adds nothing
 * to the XOR a client takes over the nodes of a cluster). */
static uint64_t sketch_hash(const crdt_rsx_sketch_t *sk)
{
    if (!sk->count)
        return 0;
    uint8_t b[32];
    const uint64_t w[4] = {sk->count, sk->a, sk->b, sk->c};
    for (int i = 0; i < 4; i++)
        for (int k = 0; k < 8; k++)
            b[i * 8 + k] = (uint8_t)(w[i] >> (8 * k));
    uint64_t h = crdt_rsx_state_fp(b, sizeof(b));
    return h ? h : 1;
}

/* CRDT.RSX.DIGEST first-slot last-slot [step]
 *   -> [count, a, b, c]: the sum of the sketches of the range's slots this node holds keys of;
 *   with step: one bulk string of 8 bytes (little endian) per sub-range of step slots, the hash of
 *   its sketch, 0 when this node holds no key there. */
int crdtm_cmd_rsx_digest(RedisModuleCtx *ctx, RedisModuleString **argv, int argc)
{
    if (argc != 3 && argc != 4)
        return RedisModule_WrongArity(ctx);
    if (!rsx_slots)
        return RedisModule_ReplyWithError(ctx, "ERR anti-entropy is off (module argument rsx no)");
    if (RedisModule_GetSelectedDb(ctx) != 0)
        return reply_no_db0(ctx);
    long long from, to, step = 0;
    if (RedisModule_StringToLongLong(argv[1], &from) != REDISMODULE_OK ||
        RedisModule_StringToLongLong(argv[2], &to) != REDISMODULE_OK || from < 0 ||
        to >= CRDTM_SLOTS || from > to)
        return RedisModule_ReplyWithError(ctx, "ERR slots must be integers 0 <= first <= last "
                                               "<= 16383");
    if (argc == 4 && (RedisModule_StringToLongLong(argv[3], &step) != REDISMODULE_OK || step < 1))
        return RedisModule_ReplyWithError(ctx, "ERR step must be a positive integer");
    for (long long s = from; s <= to; s++)
        if (slot_refresh(ctx, (unsigned)s) < 0)
            return RedisModule_ReplyWithError(ctx, "ERR out of memory");
    if (argc == 3) {
        crdt_rsx_sketch_t sum = {0, 0, 0, 0};
        for (long long s = from; s <= to; s++)
            crdt_rsx_sketch_add(&sum, &rsx_slots[s].sketch);
        RedisModule_ReplyWithArray(ctx, 4);
        RedisModule_ReplyWithLongLong(ctx, (long long)sum.count);
        RedisModule_ReplyWithLongLong(ctx, (long long)sum.a);
        RedisModule_ReplyWithLongLong(ctx, (long long)sum.b);
        RedisModule_ReplyWithLongLong(ctx, (long long)sum.c);
        return REDISMODULE_OK;
    }
    size_t parts = (size_t)((to - from) / step + 1);
    uint8_t *out = malloc(parts * 8);
    if (!out)
        return RedisModule_ReplyWithError(ctx, "ERR out of memory");
    for (size_t p = 0; p < parts; p++) {
        crdt_rsx_sketch_t sum = {0, 0, 0, 0};
        long long lo = from + (long long)p * step, hi = lo + step - 1 > to ? to : lo + step - 1;
        for (long long s = lo; s <= hi; s++)
            crdt_rsx_sketch_add(&sum, &rsx_slots[s].sketch);
        uint64_t h = sketch_hash(&sum);
        for (int k = 0; k < 8; k++)
            out[p * 8 + (size_t)k] = (uint8_t)(h >> (8 * k));
    }
    RedisModule_ReplyWithStringBuffer(ctx, (const char *)out, parts * 8);
    free(out);
    return REDISMODULE_OK;
}

/* CRDT.RSX.ITEMS first-slot last-slot -> [[name, id, fp], ...]: the items of the range's slots
 * this node holds, one per key (fp as a signed 64-bit integer of the state fingerprint's bits).
 * For a client that reconciles a keyspace spread over several nodes with one session of its own
 * (crdtd over a cluster of several primaries): O(keys), so for ranges a client can hold. */
int crdtm_cmd_rsx_items(RedisModuleCtx *ctx, RedisModuleString **argv, int argc)
{
    if (argc != 3)
        return RedisModule_WrongArity(ctx);
    if (!rsx_slots)
        return RedisModule_ReplyWithError(ctx, "ERR anti-entropy is off (module argument rsx no)");
    if (RedisModule_GetSelectedDb(ctx) != 0)
        return reply_no_db0(ctx);
    long long from, to;
    if (RedisModule_StringToLongLong(argv[1], &from) != REDISMODULE_OK ||
        RedisModule_StringToLongLong(argv[2], &to) != REDISMODULE_OK || from < 0 ||
        to >= CRDTM_SLOTS || from > to)
        return RedisModule_ReplyWithError(ctx, "ERR slots must be integers 0 <= first <= last "
                                               "<= 16383");
    for (long long sl = from; sl <= to; sl++)
        if (slot_refresh(ctx, (unsigned)sl) < 0)
            return RedisModule_ReplyWithError(ctx, "ERR out of memory");
    RedisModule_ReplyWithArray(ctx, REDISMODULE_POSTPONED_LEN);
    long n = 0;
    for (long long sl = from; sl <= to; sl++) {
        const rsx_slot_t *ss = &rsx_slots[sl];
        for (uint32_t i = 0; i < ss->n; i++, n++) {
            RedisModule_ReplyWithArray(ctx, 3);
            RedisModule_ReplyWithStringBuffer(ctx, ss->keys[i].name, ss->keys[i].len);
            RedisModule_ReplyWithLongLong(ctx, (long long)ss->keys[i].id);
            RedisModule_ReplyWithLongLong(ctx, (long long)ss->keys[i].fp);
        }
    }
    RedisModule_ReplySetArrayLength(ctx, n);
    return REDISMODULE_OK;
}

int crdtm_rsx_init(RedisModuleCtx *ctx)
{
    if (!crdtm_cfg.rsx_enabled)
        return 0;
    rsx_slots = calloc(CRDTM_SLOTS, sizeof(*rsx_slots));
    if (!rsx_slots)
        return -1;
    RedisModuleEvent flush = {REDISMODULE_EVENT_FLUSHDB, 1};
    return RedisModule_SubscribeToServerEvent(ctx, flush, on_flush) == REDISMODULE_OK ? 0 : -1;
}

void crdtm_rsx_info(RedisModuleInfoCtx *ctx)
{
    unsigned long long keys = 0, dirty = 0, open = 0;
    for (unsigned s = 0; rsx_slots && s < CRDTM_SLOTS; s++) {
        keys += rsx_slots[s].n;
        dirty += rsx_slots[s].nd;
    }
    for (int i = 0; i < RSX_MAX_SESSIONS; i++)
        open += sessions[i].sid != 0;
    RedisModule_InfoAddFieldLongLong(ctx, "rsx_enabled", rsx_slots != NULL);
    RedisModule_InfoAddFieldULongLong(ctx, "rsx_keys", keys);
    RedisModule_InfoAddFieldULongLong(ctx, "rsx_dirty", dirty);
    RedisModule_InfoAddFieldULongLong(ctx, "rsx_refreshes", rsx_refreshes);
    RedisModule_InfoAddFieldULongLong(ctx, "rsx_sessions_open", open);
    RedisModule_InfoAddFieldULongLong(ctx, "rsx_sessions_opened", rsx_sessions_opened);
}
