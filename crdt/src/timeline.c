/* timeline.c - roshi-style bounded LWW timeline index, newest first */

/*
 * State. Per member one entry (score, live|tombstone); per member the greater score wins and an
 * equal score makes remove win. Entries are ordered newest first by (score desc, member desc
 * bytewise). A bounded timeline (max_size > 0) keeps the top max_size entries, live and tombstones
 * together, and remembers the highest (score, member) it ever dropped as its floor; any later write
 * whose (score, member) is at or below the floor is ignored. The state is a function of the set of
 * writes seen (top-k of the per-member winners, the (k+1)-th winner as floor), so merge is a join:
 * LWW-union of the entries above max(floor_a, floor_b), trim to the smaller non-zero bound, floor =
 * max(floor_a, floor_b, highest dropped). Consequence used by the decoder: a floor exists only when
 * the timeline is bounded and full.
 *
 * Binary payload (inside core.c's frame), canonical; the decoder rejects anything else:
 *   varint  max_size            0 = unbounded, else 1..2^32-1
 *   u8      has_floor           0 or 1 (1 only if max_size > 0 and n == max_size)
 *   if has_floor:
 *     f64   floor score         IEEE 754 little endian, finite, never -0.0
 *     blob  floor member        varint length, bytes
 *   varint  n                   entries, live and tombstones (<= max_size when bounded)
 *   n times, newest first (strictly decreasing (score, member), every one above the floor,
 *   no member twice):
 *     f64   score
 *     u8    flag                1 live, 0 tombstone
 *     blob  member
 *
 * JSON state: {"max_size":N, "floor":null | {"member":bytes,"score":x},
 *              "entries":[{"member":bytes,"score":x,"live":true|false}, ...]} (newest first, same
 * rules as the binary form, no other fields).
 *
 * Memory layout (targets: cheap inserts, newest-N reads that touch N entries, <= 48 bytes per
 * entry beyond member bytes):
 *   - ents: a flat pool of 16-byte entries {score, member offset, member length | tombstone bit},
 *     recycled through a free list; ids are indexes into it;
 *   - blobs: every member's bytes (and the floor's) in one buffer, compacted when half garbage;
 *   - idx: member -> id, open addressing over 4-byte slots with a hash tag and the distance
 *     from home (crdt__hidx_t, hash.c);
 *   - order: a two-level sorted list of ids, blocks of up to 64 ids under a top array of block
 *     pointers with each block's live count beside it. Insert is a binary search (none at
 *     either end: a feed's newest) and a memmove of at most 64 ids; offset reads skip whole
 *     blocks reading only the live-count array.
 *     A lone first block starts at 4 ids and doubles, so small feeds stay small.
 * Merge inserts a small src (a delta) entry by entry; a src at least a quarter of dst's size is
 * joined in one linear pass that rebuilds the blocks. Clone copies the arrays as they are.
 */
#include <math.h>
#include <stdlib.h>

#include "crdt_private.h"

#define TL_TOMB 0x80000000u
#define TL_MOVED 0x40000000u /* set only during a bulk merge: the entry's position changes */
#define TL_LEN_MASK 0x3FFFFFFFu /* CRDT_MAX_BLOB fits */
#define TL_BLOCK 64
#define TL_FIRST_CAP 4 /* capacity a lone first block starts at; it doubles up to TL_BLOCK */
#define TL_FREE UINT32_MAX

typedef struct tl_ent {
    double score;
    uint32_t off; /* member offset in blobs; next free id while on the free list */
    uint32_t len; /* member length | TL_TOMB; TL_FREE while on the free list */
} tl_ent_t;

/* Every block holds TL_BLOCK ids except a lone first block, which starts at TL_FIRST_CAP and
 * doubles: most feeds are small, and a whole block for a few entries would dominate their cost.
 * A block can only be split (and so a second block appear) once it is full at TL_BLOCK, so
 * whenever nblk > 1 every block has cap == TL_BLOCK and the split/merge code needs no checks. */
typedef struct tl_block {
    uint32_t n;   /* ids used */
    uint32_t cap; /* ids allocated: TL_BLOCK, or less for a lone first block */
    uint32_t ids[];
} tl_block_t;

static inline size_t block_size(uint32_t cap)
{
    return sizeof(tl_block_t) + (size_t)cap * sizeof(uint32_t);
}

/* (Re)allocates b to hold cap ids; NULL (b untouched) on failure. */
static tl_block_t *block_resize(tl_block_t *b, uint32_t cap)
{
    tl_block_t *nb = crdt__realloc(b, block_size(cap));
    if (!nb)
        return NULL;
    if (!b)
        nb->n = 0;
    nb->cap = cap;
    return nb;
}

/* The capacity a lone block needs for n ids: a power of two from TL_FIRST_CAP to TL_BLOCK. */
static uint32_t lone_cap(uint32_t n)
{
    uint32_t cap = TL_FIRST_CAP;
    while (cap < n && cap < TL_BLOCK)
        cap *= 2;
    return cap;
}

typedef struct timeline {
    crdt_obj_t base;
    uint32_t max_size; /* 0: unbounded */
    uint32_t count;    /* entries, live and tombstones */
    uint32_t live;
    uint32_t tail_hint; /* the oldest entry's id as a write left it: for prefetching only, may be
                           stale (crdt_timeline_prefetch checks it against the order) */
    tl_ent_t *ents;
    uint32_t ents_cap;
    uint32_t ents_used; /* high-water mark of ids handed out */
    uint32_t free_head; /* CRDT__NO_ID when empty */
    tl_block_t **blk;
    uint32_t *blive; /* live entries of each block, beside blk so offset skips read one array */
    uint32_t nblk;
    uint32_t blk_cap; /* of both blk and blive */
    tl_block_t *spare; /* one block kept ready so an insert never fails half-way */
    bool has_floor;
    double floor_score;
    uint32_t floor_off; /* floor member in blobs */
    uint32_t floor_len;
    crdt__blobs_t blobs;
    crdt__hidx_t idx;
} timeline_t;

/* A position key: (score, member); `top` stands for a member above every member. */
typedef struct tl_key {
    double score;
    const uint8_t *m;
    size_t len;
    bool top;
} tl_key_t;

static inline const timeline_t *as_tl(const crdt_obj_t *o)
{
    return (o && o->vt == &crdt__timeline_vt) ? (const timeline_t *)o : NULL;
}

static inline const uint8_t *blob_at(const timeline_t *t, uint32_t off)
{
    /* the store is NULL until a non-empty member arrives; keep pointer arithmetic off NULL */
    return t->blobs.data ? t->blobs.data + off : (const uint8_t *)"";
}

static inline uint32_t ent_len(const tl_ent_t *e) { return e->len & TL_LEN_MASK; }
static inline bool ent_live(const tl_ent_t *e) { return !(e->len & TL_TOMB); }
static inline const uint8_t *ent_mem(const timeline_t *t, const tl_ent_t *e)
{
    return blob_at(t, e->off);
}

static void key_of(const void *ctx, uint32_t id, const uint8_t **key, size_t *len)
{
    const timeline_t *t = ctx;
    *key = ent_mem(t, &t->ents[id]);
    *len = ent_len(&t->ents[id]);
}

/* Newest-first order of two positions: <0 when a sorts first (newer). */
static inline int pos_cmp(double sa, const uint8_t *ma, size_t la, double sb, const uint8_t *mb,
                          size_t lb)
{
    if (sa > sb)
        return -1;
    if (sa < sb)
        return 1;
    return -crdt__bytes_cmp(ma, la, mb, lb);
}

/* Entry `id` against key k in newest-first order: <0 entry newer, 0 same position, >0 older. */
static inline int ent_vs_key(const timeline_t *t, uint32_t id, const tl_key_t *k)
{
    const tl_ent_t *e = &t->ents[id];
    if (e->score > k->score)
        return -1;
    if (e->score < k->score)
        return 1;
    if (k->top)
        return 1;
    return -crdt__bytes_cmp(ent_mem(t, e), ent_len(e), k->m, k->len);
}

/* True when (score, m) is at or below the floor: such a write is ignored. */
static inline bool below_floor(const timeline_t *t, double score, const uint8_t *m, size_t len)
{
    return t->has_floor &&
           pos_cmp(score, m, len, t->floor_score, blob_at(t, t->floor_off), t->floor_len) >= 0;
}

/* ---- the ordered list of ids ---------------------------------------------------------------- */

/* The first position whose entry is not newer than k (where k is or would be inserted). */
static void find_pos(const timeline_t *t, const tl_key_t *k, uint32_t *bi, uint32_t *si)
{
    if (!t->nblk) {
        *bi = *si = 0;
        return;
    }
    /* The ends first: a feed's writes are mostly its newest entry (and the oldest is what a
     * bound drops), so most inserts skip the search and its scattered reads. */
    const tl_block_t *first = t->blk[0];
    if (ent_vs_key(t, first->ids[0], k) >= 0) {
        *bi = *si = 0;
        return;
    }
    const tl_block_t *last = t->blk[t->nblk - 1];
    if (ent_vs_key(t, last->ids[last->n - 1], k) < 0) {
        *bi = t->nblk - 1;
        *si = last->n;
        return;
    }
    uint32_t lo = 0, hi = t->nblk;
    while (lo < hi) {
        uint32_t mid = lo + (hi - lo) / 2;
        const tl_block_t *b = t->blk[mid];
        if (ent_vs_key(t, b->ids[b->n - 1], k) >= 0)
            hi = mid;
        else
            lo = mid + 1;
    }
    if (lo == t->nblk) {
        *bi = t->nblk - 1;
        *si = t->blk[*bi]->n;
        return;
    }
    const tl_block_t *b = t->blk[lo];
    uint32_t l = 0, h = b->n - 1; /* the last id is known not newer */
    while (l < h) {
        uint32_t mid = l + (h - l) / 2;
        if (ent_vs_key(t, b->ids[mid], k) >= 0)
            h = mid;
        else
            l = mid + 1;
    }
    *bi = lo;
    *si = l;
}

static void locate(const timeline_t *t, uint32_t id, uint32_t *bi, uint32_t *si)
{
    const tl_ent_t *e = &t->ents[id];
    tl_key_t k = {e->score, ent_mem(t, e), ent_len(e), false};
    find_pos(t, &k, bi, si);
}

/* Grows the top arrays (block pointers and live counts) to cap. */
static int grow_blocks(timeline_t *t, uint32_t cap)
{
    tl_block_t **b = crdt__realloc(t->blk, (size_t)cap * sizeof(*b));
    if (!b)
        return CRDT_ENOMEM;
    t->blk = b;
    uint32_t *l = crdt__realloc(t->blive, (size_t)cap * sizeof(*l));
    if (!l)
        return CRDT_ENOMEM; /* blk is merely bigger than blk_cap says */
    t->blive = l;
    t->blk_cap = cap;
    return 0;
}

/* Guarantees the room one insert may need (a pool slot, a block, a top-array slot), so the
 * mutation that follows cannot fail half-way. */
static int ensure_room(timeline_t *t)
{
    if (t->free_head == CRDT__NO_ID && t->ents_used == t->ents_cap) {
        if (t->ents_cap == UINT32_MAX - 1)
            return CRDT_ENOMEM;
        /* 1.5x growth: the pool is the biggest per-entry cost, so keep its slack small; small
         * pools double from 2 so a one-entry feed does not pay for eight */
        uint64_t cap = t->ents_cap < 2   ? 2
                       : t->ents_cap < 8 ? (uint64_t)t->ents_cap * 2
                                         : (uint64_t)t->ents_cap + t->ents_cap / 2;
        if (cap > UINT32_MAX - 1)
            cap = UINT32_MAX - 1;
        tl_ent_t *e = crdt__realloc(t->ents, (size_t)cap * sizeof(*e));
        if (!e)
            return CRDT_ENOMEM;
        t->ents = e;
        t->ents_cap = (uint32_t)cap;
    }
    /* A new block is needed only for the first one or to split a full one, and no block can be
     * full while fewer than TL_BLOCK entries exist: small timelines (most feeds) skip the spare. */
    bool may_need_block = t->nblk == 0 || t->count >= TL_BLOCK;
    if (may_need_block) {
        /* a first block may start small; one that splits a full block must be whole (a small
         * spare can be left by removing a lone block, or survive a bulk merge) */
        uint32_t want = t->nblk ? TL_BLOCK : TL_FIRST_CAP;
        if (!t->spare || t->spare->cap < want) {
            tl_block_t *b = block_resize(t->spare, want);
            if (!b)
                return CRDT_ENOMEM;
            t->spare = b;
        }
    }
    /* a full lone block below TL_BLOCK grows here, before the mutation, never inside insert_at
     * (a delete-then-reinsert may also pass through, which merely grows it a step early) */
    if (t->nblk == 1 && t->blk[0]->n == t->blk[0]->cap && t->blk[0]->cap < TL_BLOCK) {
        tl_block_t *b = block_resize(t->blk[0], t->blk[0]->cap * 2);
        if (!b)
            return CRDT_ENOMEM;
        t->blk[0] = b;
    }
    if (t->nblk + 1 > t->blk_cap)
        return grow_blocks(t, t->blk_cap ? t->blk_cap * 2 : 1); /* most feeds have one block */
    return 0;
}

static uint32_t alloc_id(timeline_t *t)
{
    uint32_t id;
    if (t->free_head != CRDT__NO_ID) {
        id = t->free_head;
        t->free_head = t->ents[id].off;
    } else {
        id = t->ents_used++;
    }
    return id;
}

static void free_id(timeline_t *t, uint32_t id)
{
    t->ents[id].off = t->free_head;
    t->ents[id].len = TL_FREE;
    t->free_head = id;
}

static tl_block_t *new_block_at(timeline_t *t, uint32_t bi)
{
    tl_block_t *b = t->spare;
    t->spare = NULL;
    b->n = 0;
    memmove(&t->blk[bi + 1], &t->blk[bi], (size_t)(t->nblk - bi) * sizeof(*t->blk));
    memmove(&t->blive[bi + 1], &t->blive[bi], (size_t)(t->nblk - bi) * sizeof(*t->blive));
    t->blk[bi] = b;
    t->blive[bi] = 0;
    t->nblk++;
    return b;
}

static uint32_t count_live(const timeline_t *t, const uint32_t *ids, uint32_t n)
{
    uint32_t live = 0;
    for (uint32_t i = 0; i < n; i++)
        live += ent_live(&t->ents[ids[i]]);
    return live;
}

/* Inserts id at position (bi, si) as given by find_pos; needs ensure_room beforehand, which
 * leaves a lone small block with room, so `n == TL_BLOCK` below is the only full case. */
static void insert_at(timeline_t *t, uint32_t bi, uint32_t si, uint32_t id)
{
    tl_block_t *b;
    if (!t->nblk) {
        b = new_block_at(t, 0);
        bi = si = 0;
    } else {
        b = t->blk[bi];
        if (b->n == TL_BLOCK) {
            if (si == TL_BLOCK) {
                /* past the end of a full block: the next block's head, or a new block, keeps
                 * monotone inserts (feeds, decoding) packing blocks full */
                if (bi + 1 < t->nblk && t->blk[bi + 1]->n < TL_BLOCK)
                    b = t->blk[++bi];
                else
                    b = new_block_at(t, ++bi);
                si = 0;
            } else if (si == 0) {
                if (bi > 0 && t->blk[bi - 1]->n < TL_BLOCK) {
                    b = t->blk[--bi];
                    si = b->n;
                } else {
                    b = new_block_at(t, bi);
                }
            } else {
                tl_block_t *nb = new_block_at(t, bi + 1);
                uint32_t half = TL_BLOCK / 2;
                memcpy(nb->ids, &b->ids[half], half * sizeof(uint32_t));
                nb->n = half;
                t->blive[bi + 1] = count_live(t, nb->ids, half);
                b->n = half;
                t->blive[bi] -= t->blive[bi + 1];
                if (si > half) {
                    b = nb;
                    bi++;
                    si -= half;
                }
            }
        }
    }
    memmove(&b->ids[si + 1], &b->ids[si], (size_t)(b->n - si) * sizeof(uint32_t));
    b->ids[si] = id;
    b->n++;
    t->blive[bi] += ent_live(&t->ents[id]);
}

static void remove_block(timeline_t *t, uint32_t bi)
{
    tl_block_t *b = t->blk[bi];
    memmove(&t->blk[bi], &t->blk[bi + 1], (size_t)(t->nblk - bi - 1) * sizeof(*t->blk));
    memmove(&t->blive[bi], &t->blive[bi + 1], (size_t)(t->nblk - bi - 1) * sizeof(*t->blive));
    t->nblk--;
    if (!t->spare)
        t->spare = b;
    else
        crdt__free(b);
}

/* Moves all of blk[bi + 1] into blk[bi] and drops the emptied block. */
static void join_blocks(timeline_t *t, uint32_t bi)
{
    tl_block_t *a = t->blk[bi], *b = t->blk[bi + 1];
    memcpy(&a->ids[a->n], b->ids, (size_t)b->n * sizeof(uint32_t));
    a->n += b->n;
    t->blive[bi] += t->blive[bi + 1];
    remove_block(t, bi + 1);
}

/* Removes the id at (bi, si) from the order (the entry itself stays). */
static void delete_at(timeline_t *t, uint32_t bi, uint32_t si)
{
    tl_block_t *b = t->blk[bi];
    t->blive[bi] -= ent_live(&t->ents[b->ids[si]]);
    memmove(&b->ids[si], &b->ids[si + 1], (size_t)(b->n - si - 1) * sizeof(uint32_t));
    b->n--;
    if (!b->n) {
        remove_block(t, bi);
    } else if (b->n < TL_BLOCK / 4) {
        /* keep blocks reasonably full so memory per entry and block skips stay bounded */
        if (bi + 1 < t->nblk && b->n + t->blk[bi + 1]->n <= TL_BLOCK * 3 / 4)
            join_blocks(t, bi);
        else if (bi > 0 && t->blk[bi - 1]->n + b->n <= TL_BLOCK * 3 / 4)
            join_blocks(t, bi - 1);
    }
}

/* ---- floor, trimming, compaction ------------------------------------------------------------ */

/* Takes blob bytes (off, len) already in the store as the new floor, dropping the old one. */
static void set_floor(timeline_t *t, double score, uint32_t off, uint32_t len)
{
    if (t->has_floor)
        crdt__blobs_drop(&t->blobs, t->floor_len);
    t->has_floor = true;
    t->floor_score = score;
    t->floor_off = off;
    t->floor_len = len;
}

/* Drops the oldest entry; it becomes the floor unless it already lies at or below the floor. */
static void drop_tail(timeline_t *t)
{
    uint32_t bi = t->nblk - 1;
    uint32_t si = t->blk[bi]->n - 1;
    uint32_t id = t->blk[bi]->ids[si];
    tl_ent_t *e = &t->ents[id];
    delete_at(t, bi, si);
    crdt__hidx_remove(&t->idx, id, key_of, t);
    t->count--;
    t->live -= ent_live(e);
    if (below_floor(t, e->score, ent_mem(t, e), ent_len(e)))
        crdt__blobs_drop(&t->blobs, ent_len(e));
    else
        set_floor(t, e->score, e->off, ent_len(e));
    free_id(t, id);
}

static uint32_t tail_id(const timeline_t *t)
{
    const tl_block_t *b = t->blk[t->nblk - 1];
    return b->ids[b->n - 1];
}

/* Restores the invariants after the bound shrank, an entry arrived or the floor rose: at most
 * max_size entries, all above the floor. Returns true if anything was dropped. */
static bool trim(timeline_t *t)
{
    bool dropped = false;
    while (t->count && ((t->max_size && t->count > t->max_size) ||
                        (t->has_floor && below_floor(t, t->ents[tail_id(t)].score,
                                                     ent_mem(t, &t->ents[tail_id(t)]),
                                                     ent_len(&t->ents[tail_id(t)]))))) {
        drop_tail(t);
        dropped = true;
    }
    return dropped;
}

/* trim after tl_write inserted one entry into a state that held the invariants, all of it above
 * the floor: only the bound can be exceeded, and each entry it drops is older than every one kept,
 * so it becomes the floor under them all and none of them can lie at or below it. The same result
 * as trim, without reading the new oldest entry (a cache miss in a big timeline) to find that out. */
static bool trim_after_insert(timeline_t *t)
{
    bool dropped = false;
    while (t->max_size && t->count > t->max_size) {
        drop_tail(t);
        dropped = true;
    }
    return dropped;
}

/* Rewrites the blob store without the bytes of dropped members (ids keep their slots; only
 * offsets change, and the hash index keys on bytes, so it stays valid). */
static void maybe_compact(timeline_t *t)
{
    if (!crdt__blobs_wants_compaction(&t->blobs))
        return;
    size_t need = t->has_floor ? t->floor_len : 0;
    for (uint32_t b = 0; b < t->nblk; b++)
        for (uint32_t i = 0; i < t->blk[b]->n; i++)
            need += ent_len(&t->ents[t->blk[b]->ids[i]]);
    uint8_t *d = crdt__malloc(need ? need : 1);
    if (!d)
        return; /* compaction is an optimisation; try again after the next drop */
    uint32_t o = 0;
    for (uint32_t b = 0; b < t->nblk; b++) {
        for (uint32_t i = 0; i < t->blk[b]->n; i++) {
            tl_ent_t *e = &t->ents[t->blk[b]->ids[i]];
            uint32_t n = ent_len(e);
            if (n)
                memcpy(d + o, t->blobs.data + e->off, n);
            e->off = o;
            o += n;
        }
    }
    if (t->has_floor) {
        if (t->floor_len)
            memcpy(d + o, t->blobs.data + t->floor_off, t->floor_len);
        t->floor_off = o;
        o += t->floor_len;
    }
    crdt__free(t->blobs.data);
    t->blobs.data = d;
    t->blobs.len = o;
    t->blobs.cap = (uint32_t)(need ? need : 1);
    t->blobs.garbage = 0;
}

/* ---- construction --------------------------------------------------------------------------- */

static timeline_t *tl_alloc(uint32_t max_size)
{
    timeline_t *t = crdt__calloc(1, sizeof(*t));
    if (!t)
        return NULL;
    t->base.vt = &crdt__timeline_vt;
    t->max_size = max_size;
    t->free_head = CRDT__NO_ID;
    t->tail_hint = CRDT__NO_ID;
    crdt__hidx_init(&t->idx);
    return t;
}

crdt_obj_t *crdt_timeline_new(uint32_t max_size)
{
    timeline_t *t = tl_alloc(max_size);
    return t ? &t->base : NULL;
}

static crdt_obj_t *timeline_create(void) { return crdt_timeline_new(0); }

static void timeline_destroy(crdt_obj_t *o)
{
    timeline_t *t = (timeline_t *)o;
    for (uint32_t b = 0; b < t->nblk; b++)
        crdt__free(t->blk[b]);
    crdt__free(t->blk);
    crdt__free(t->blive);
    crdt__free(t->spare);
    crdt__free(t->ents);
    crdt__blobs_free(&t->blobs);
    crdt__hidx_free(&t->idx);
    crdt__free(t);
}

/* Makes room for n entries up front (decoders, clones): no regrowth while filling. */
static int tl_reserve(timeline_t *t, uint32_t n)
{
    if (n > t->ents_cap) {
        tl_ent_t *e = crdt__realloc(t->ents, (size_t)n * sizeof(*e));
        if (!e)
            return CRDT_ENOMEM;
        t->ents = e;
        t->ents_cap = n;
    }
    uint32_t blocks = n / TL_BLOCK + 2;
    if (blocks > t->blk_cap && grow_blocks(t, blocks) < 0)
        return CRDT_ENOMEM;
    return n ? crdt__hidx_reserve(&t->idx, n, key_of, t) : 0;
}

/* Appends an entry that sorts after every present one and whose member is absent (callers
 * checked). No trimming: used to rebuild states that are already canonical. */
static int append_entry(timeline_t *t, double score, bool live, const uint8_t *m, size_t len)
{
    uint32_t off;
    int rc = ensure_room(t);
    if (rc < 0)
        return rc;
    if ((rc = crdt__blobs_add(&t->blobs, m, len, &off)) < 0)
        return rc == CRDT_EINVAL ? CRDT_ENOMEM : rc;
    uint32_t id = alloc_id(t);
    t->ents[id] = (tl_ent_t){score, off, (uint32_t)len | (live ? 0 : TL_TOMB)};
    if ((rc = crdt__hidx_insert(&t->idx, id, key_of, t)) < 0) {
        crdt__blobs_drop(&t->blobs, len);
        free_id(t, id);
        return rc;
    }
    uint32_t bi = t->nblk ? t->nblk - 1 : 0;
    insert_at(t, bi, t->nblk ? t->blk[bi]->n : 0, id);
    t->count++;
    t->live += live;
    return 0;
}

/* append_entry into a timeline emptied by tl_clear (a write's delta, one entry each time) that
 * kept its arrays from before: the same state, without the general insert's checks and block
 * steps (ensure_room finds room, insert_at a new first block from the spare). Falls back to
 * append_entry when something is missing. */
static int fill_single(timeline_t *d, double score, bool live, const uint8_t *m, size_t len)
{
    if (d->nblk || d->count || d->free_head != CRDT__NO_ID || d->ents_used || !d->ents_cap ||
        !d->blk_cap || !d->spare || d->spare->cap < TL_FIRST_CAP || !d->idx.slots)
        return append_entry(d, score, live, m, len);
    uint32_t off;
    int rc = crdt__blobs_add(&d->blobs, m, len, &off);
    if (rc < 0)
        return rc == CRDT_EINVAL ? CRDT_ENOMEM : rc;
    uint32_t id = alloc_id(d);
    d->ents[id] = (tl_ent_t){score, off, (uint32_t)len | (live ? 0 : TL_TOMB)};
    if ((rc = crdt__hidx_insert(&d->idx, id, key_of, d)) < 0) {
        crdt__blobs_drop(&d->blobs, len);
        free_id(d, id);
        return rc;
    }
    tl_block_t *b = d->spare;
    d->spare = NULL;
    b->ids[0] = id;
    b->n = 1;
    d->blk[0] = b;
    d->blive[0] = live;
    d->nblk = 1;
    d->count = 1;
    d->live = live;
    return 0;
}

/* A copy of every array as it is: ids, offsets and hash slots stay valid, so no rehashing (the
 * copy shares its source's hash seed, which only has to be unpredictable from outside). */
static crdt_obj_t *timeline_clone(const crdt_obj_t *o)
{
    const timeline_t *s = (const timeline_t *)o;
    timeline_t *t = tl_alloc(s->max_size);
    if (!t)
        return NULL;
    t->count = s->count;
    t->live = s->live;
    t->free_head = s->free_head;
    t->has_floor = s->has_floor;
    t->floor_score = s->floor_score;
    t->floor_off = s->floor_off;
    t->floor_len = s->floor_len;
    if (s->ents_used) {
        if (!(t->ents = crdt__malloc((size_t)s->ents_used * sizeof(tl_ent_t))))
            goto fail;
        memcpy(t->ents, s->ents, (size_t)s->ents_used * sizeof(tl_ent_t));
        t->ents_cap = t->ents_used = s->ents_used;
    }
    if (s->blobs.len) {
        if (!(t->blobs.data = crdt__malloc(s->blobs.len)))
            goto fail;
        memcpy(t->blobs.data, s->blobs.data, s->blobs.len);
        t->blobs.len = t->blobs.cap = s->blobs.len;
        t->blobs.garbage = s->blobs.garbage;
    }
    if (s->nblk) {
        if (grow_blocks(t, s->nblk + 1) < 0)
            goto fail;
        memcpy(t->blive, s->blive, (size_t)s->nblk * sizeof(*t->blive));
        for (; t->nblk < s->nblk; t->nblk++) {
            const tl_block_t *sb = s->blk[t->nblk];
            if (!(t->blk[t->nblk] = crdt__malloc(block_size(sb->cap))))
                goto fail;
            memcpy(t->blk[t->nblk], sb, block_size(sb->cap));
        }
    }
    if (s->idx.slots) {
        size_t n = ((size_t)s->idx.mask + 1) * sizeof(uint32_t);
        if (!(t->idx.slots = crdt__malloc(n)))
            goto fail;
        memcpy(t->idx.slots, s->idx.slots, n);
        t->idx.mask = s->idx.mask;
        t->idx.count = s->idx.count;
        t->idx.seed = s->idx.seed;
    }
    return &t->base;
fail:
    timeline_destroy(&t->base);
    return NULL;
}

/* ---- writes --------------------------------------------------------------------------------- */

/* Applies one write (score finite and normalised, len checked): 1 changed, 0 ignored or lost,
 * CRDT_ENOMEM with the state unchanged. `m` may point into t's own store (a borrowed entry). */
static int tl_write(timeline_t *t, const uint8_t *m, size_t len, double score, bool live)
{
    if (below_floor(t, score, m, len))
        return 0;
    uint64_t hash = crdt__hidx_hash(&t->idx, m, len); /* once, for the lookup and the insert */
    uint32_t id = crdt__hidx_find_hashed(&t->idx, m, len, hash, key_of, t);
    if (id != CRDT__NO_ID) {
        tl_ent_t *e = &t->ents[id];
        bool was_live = ent_live(e);
        if (score < e->score)
            return 0;
        if (score == e->score) {
            if (live || !was_live)
                return 0; /* equal scores: remove wins, so only live -> tombstone changes */
            uint32_t bi, si;
            locate(t, id, &bi, &si);
            e->len |= TL_TOMB;
            t->blive[bi]--;
            t->live--;
            return 1;
        }
        /* a greater score: the entry moves up (never past the bound: the count is unchanged) */
        if (ensure_room(t) < 0)
            return CRDT_ENOMEM;
        e = &t->ents[id];
        uint32_t bi, si;
        locate(t, id, &bi, &si);
        delete_at(t, bi, si);
        e->score = score;
        e->len = ent_len(e) | (live ? 0 : TL_TOMB);
        t->live = t->live - was_live + live;
        tl_key_t k = {score, ent_mem(t, e), ent_len(e), false};
        find_pos(t, &k, &bi, &si);
        insert_at(t, bi, si, id);
        t->tail_hint = tail_id(t);
        return 1;
    }
    if (t->max_size && t->count >= t->max_size && t->count) {
        const tl_ent_t *last = &t->ents[tail_id(t)];
        if (pos_cmp(score, m, len, last->score, ent_mem(t, last), ent_len(last)) > 0) {
            /* Older than everything kept in a full timeline: it would be dropped at once, so it
             * only raises the floor (it is above the floor, checked first). */
            uint32_t off;
            int rc = crdt__blobs_add(&t->blobs, m, len, &off);
            if (rc < 0)
                return CRDT_ENOMEM;
            set_floor(t, score, off, (uint32_t)len);
            maybe_compact(t);
            return 1;
        }
    }
    int rc = ensure_room(t);
    if (rc < 0)
        return rc;
    uint32_t off;
    if (crdt__blobs_add(&t->blobs, m, len, &off) < 0)
        return CRDT_ENOMEM;
    id = alloc_id(t);
    t->ents[id] = (tl_ent_t){score, off, (uint32_t)len | (live ? 0 : TL_TOMB)};
    if (crdt__hidx_reserve_one(&t->idx, key_of, t) < 0) {
        crdt__blobs_drop(&t->blobs, len);
        free_id(t, id);
        return CRDT_ENOMEM;
    }
    crdt__hidx_insert_reserved(&t->idx, id, hash); /* the hash of m: the same bytes */
    const tl_ent_t *e = &t->ents[id];
    tl_key_t k = {score, ent_mem(t, e), len, false};
    uint32_t bi, si;
    find_pos(t, &k, &bi, &si);
    insert_at(t, bi, si, id);
    t->count++;
    t->live += live;
    if (trim_after_insert(t))
        maybe_compact(t);
    t->tail_hint = tail_id(t);
    return 1;
}

/* A delta: an unbounded timeline holding just one entry. */
static timeline_t *single(const void *m, size_t len, double score, bool live)
{
    timeline_t *d = tl_alloc(0);
    if (!d)
        return NULL;
    if (append_entry(d, score, live, m, len) < 0) {
        timeline_destroy(&d->base);
        return NULL;
    }
    return d;
}

static int write_api(crdt_obj_t *o, const void *m, size_t len, double score, bool live,
                     crdt_obj_t **delta)
{
    if (delta)
        *delta = NULL;
    if (!as_tl(o))
        return o ? CRDT_ETYPE : CRDT_EINVAL;
    if (!isfinite(score) || len > CRDT_MAX_BLOB || (!m && len))
        return CRDT_EINVAL;
    if (score == 0)
        score = 0.0; /* -0.0 and 0.0 are one position */
    if (!m)
        m = "";
    timeline_t *t = (timeline_t *)o;
    /* A member borrowed from this very timeline (a read result, its floor) would dangle when the
     * store grows: work from a copy. */
    void *copy = NULL;
    uintptr_t p = (uintptr_t)m, lo = (uintptr_t)t->blobs.data;
    if (len && t->blobs.data && p >= lo && p < lo + t->blobs.cap) {
        if (!(copy = crdt__malloc(len)))
            return CRDT_ENOMEM;
        memcpy(copy, m, len);
        m = copy;
    }
    /* the delta is made first: once the state changed, failing would break "unchanged on error" */
    timeline_t *d = NULL;
    int rc = CRDT_ENOMEM;
    if (!delta || (d = single(m, len, score, live)))
        rc = tl_write(t, m, len, score, live);
    if (rc == 1 && delta)
        *delta = &d->base;
    else if (d)
        timeline_destroy(&d->base);
    crdt__free(copy);
    return rc;
}

/* Empties a timeline, keeping its arrays (a big member store is let go). */
static void tl_clear(timeline_t *d)
{
    for (uint32_t b = 0; b < d->nblk; b++) {
        if (!d->spare)
            d->spare = d->blk[b];
        else
            crdt__free(d->blk[b]);
    }
    d->nblk = 0;
    d->count = d->live = 0;
    d->ents_used = 0;
    d->free_head = CRDT__NO_ID;
    d->has_floor = false;
    d->floor_score = 0;
    d->floor_off = d->floor_len = 0;
    d->max_size = 0;
    if (d->blobs.cap > 4096)
        crdt__blobs_free(&d->blobs);
    d->blobs.len = d->blobs.garbage = 0;
    if (d->idx.slots && d->idx.count) {
        if (d->idx.count > 64) {
            crdt__hidx_free(&d->idx);
        } else {
            memset(d->idx.slots, 0, crdt__hidx_memory(&d->idx));
            d->idx.count = 0;
        }
    }
}

/* write_api with the delta written into `into` (emptied first) rather than a new object. */
static int write_into(crdt_obj_t *o, const void *m, size_t len, double score, bool live,
                      crdt_obj_t *into)
{
    timeline_t *d = (timeline_t *)into;
    if (!as_tl(into) || into == o)
        return CRDT_EINVAL;
    if (!as_tl(o))
        return o ? CRDT_ETYPE : CRDT_EINVAL;
    if (!isfinite(score) || len > CRDT_MAX_BLOB || (!m && len))
        return CRDT_EINVAL;
    if (score == 0)
        score = 0.0;
    if (!m)
        m = "";
    timeline_t *t = (timeline_t *)o;
    void *copy = NULL;
    uintptr_t p = (uintptr_t)m, lo = (uintptr_t)t->blobs.data, dlo = (uintptr_t)d->blobs.data;
    if (len && ((t->blobs.data && p >= lo && p < lo + t->blobs.cap) ||
                (d->blobs.data && p >= dlo && p < dlo + d->blobs.cap))) {
        if (!(copy = crdt__malloc(len)))
            return CRDT_ENOMEM;
        memcpy(copy, m, len);
        m = copy;
    }
    /* the delta first, as write_api makes it: once the state changed, failing would break
     * "unchanged on error" */
    tl_clear(d);
    int rc = fill_single(d, score, live, m, len);
    if (rc == 0)
        rc = tl_write(t, m, len, score, live);
    else if (rc == CRDT_EINVAL)
        rc = CRDT_ENOMEM;
    crdt__free(copy);
    return rc;
}

int crdt_timeline_add_into(crdt_obj_t *t, const void *m, size_t len, double score,
                           crdt_obj_t *delta)
{
    return write_into(t, m, len, score, true, delta);
}

int crdt_timeline_remove_into(crdt_obj_t *t, const void *m, size_t len, double score,
                              crdt_obj_t *delta)
{
    return write_into(t, m, len, score, false, delta);
}

int crdt_timeline_add(crdt_obj_t *t, const void *m, size_t len, double score, crdt_obj_t **delta)
{
    return write_api(t, m, len, score, true, delta);
}

int crdt_timeline_remove(crdt_obj_t *t, const void *m, size_t len, double score,
                         crdt_obj_t **delta)
{
    return write_api(t, m, len, score, false, delta);
}

int crdt__timeline_delete(crdt_obj_t *o, crdt_obj_t **delta)
{
    if (delta)
        *delta = NULL;
    if (!as_tl(o))
        return o ? CRDT_ETYPE : CRDT_EINVAL;
    timeline_t *t = (timeline_t *)o;
    if (t->live == 0)
        return 0;
    /* the delta first (tombstones of the live entries, newest first, as the order has them):
     * once the state changed, failing would break "unchanged on error" */
    if (delta) {
        timeline_t *d = tl_alloc(0);
        if (!d || tl_reserve(d, t->live) < 0)
            goto nomem;
        for (uint32_t b = 0; b < t->nblk; b++) {
            for (uint32_t i = 0; i < t->blk[b]->n; i++) {
                const tl_ent_t *e = &t->ents[t->blk[b]->ids[i]];
                if (ent_live(e) && append_entry(d, e->score, false, ent_mem(t, e), ent_len(e)) < 0)
                    goto nomem;
            }
        }
        *delta = &d->base;
        goto apply;
    nomem:
        if (d)
            timeline_destroy(&d->base);
        return CRDT_ENOMEM;
    }
apply:
    /* a tombstone at an entry's own score beats it (remove wins): flip it in place */
    for (uint32_t b = 0; b < t->nblk; b++) {
        for (uint32_t i = 0; i < t->blk[b]->n; i++) {
            tl_ent_t *e = &t->ents[t->blk[b]->ids[i]];
            if (ent_live(e))
                e->len |= TL_TOMB;
        }
        t->blive[b] = 0;
    }
    t->live = 0;
    return 1;
}

/* The entry the hint names, if it is one in use (NULL otherwise). */
static const tl_ent_t *hinted_tail(const timeline_t *t)
{
    if (t->tail_hint >= t->ents_used)
        return NULL;
    const tl_ent_t *e = &t->ents[t->tail_hint];
    return e->len == TL_FREE || e->off >= t->blobs.cap ? NULL : e;
}

void crdt_timeline_prefetch(const crdt_obj_t *o, const void *m, size_t len, int stage)
{
    const timeline_t *t = as_tl(o);
    if (!t)
        return;
    if (stage == 0) { /* the object itself, beyond the line its type is read from */
        for (size_t at = 64; at < sizeof(*t); at += 64)
            __builtin_prefetch((const char *)t + at);
        return;
    }
    if (!t->nblk)
        return;
    const tl_block_t *first = t->blk[0], *last = t->blk[t->nblk - 1];
    const tl_ent_t *e;
    switch (stage) {
    case 1: /* the member's slot, the block pointers and live counts, the entry and the bytes an
             * insert takes, the spare block (ensure_room reads its capacity), and the oldest
             * entry as the last write left it (the hint: a bound drops it) */
        crdt__hidx_prefetch(&t->idx, crdt__hidx_hash(&t->idx, m ? m : "", len));
        __builtin_prefetch(t->blk);
        __builtin_prefetch(&t->blk[t->nblk - 1]);
        __builtin_prefetch(t->blive);
        __builtin_prefetch(&t->blive[t->nblk - 1]);
        if (t->spare)
            __builtin_prefetch(t->spare);
        if (t->free_head != CRDT__NO_ID)
            __builtin_prefetch(&t->ents[t->free_head]);
        if (t->blobs.data)
            __builtin_prefetch(t->blobs.data + t->blobs.len);
        if (t->tail_hint < t->ents_used)
            __builtin_prefetch(&t->ents[t->tail_hint]);
        break;
    case 2: /* the first and last blocks: where the new entry and the entry a bound drops are;
             * the one before the last when a drop may join them (delete_at reads its fill); the
             * hinted oldest entry's bytes (a drop hashes them) */
        __builtin_prefetch(first->ids);
        __builtin_prefetch(&last->ids[last->n - 1]);
        if (t->nblk > 1 && last->n <= TL_BLOCK / 4)
            __builtin_prefetch(t->blk[t->nblk - 2]);
        if ((e = hinted_tail(t)))
            __builtin_prefetch(blob_at(t, e->off));
        break;
    default: /* the newest and the oldest entries; the oldest's hash slot when a bound will
              * drop it and the hint named it (its bytes came with stage 2) */
        __builtin_prefetch(&t->ents[first->ids[0]]);
        __builtin_prefetch(&t->ents[last->ids[last->n - 1]]);
        if (t->max_size && t->count >= t->max_size && last->ids[last->n - 1] == t->tail_hint &&
            (e = hinted_tail(t)))
            crdt__hidx_prefetch(&t->idx, crdt__hidx_hash(&t->idx, ent_mem(t, e), ent_len(e)));
        break;
    }
}

/* ---- merge ---------------------------------------------------------------------------------- */

/* Newest-first order of two entries of one timeline. */
static inline int ent_cmp(const timeline_t *t, uint32_t a, uint32_t b)
{
    const tl_ent_t *x = &t->ents[a], *y = &t->ents[b];
    return pos_cmp(x->score, ent_mem(t, x), ent_len(x), y->score, ent_mem(t, y), ent_len(y));
}

/* Joins a large src in O(n + m): LWW-applies src's entries in place (new members get ids, winners
 * are marked as moved), then rebuilds the order by merging dst's order with the list of placed
 * ids, which src's order already sorts. Everything that can fail is allocated first, so on
 * CRDT_ENOMEM nothing has changed. Returns 1/0 as merge does; the caller trims afterwards. */
/* An entry to join, as merge_bulk reads them: from a timeline's order or from a sorted array. */
typedef struct tl_in {
    double score;
    const uint8_t *m;
    uint32_t len;
    uint32_t flag; /* 0 live, TL_TOMB */
} tl_in_t;

/* The source of merge_bulk: newest first; may hold a member twice (the first, newest, wins). */
typedef struct tl_src {
    const timeline_t *s; /* a timeline, or NULL for the array */
    const tl_in_t *arr;
    uint32_t count;    /* entries */
    uint64_t blob_len; /* bytes of all their members */
    uint32_t b, i;     /* cursor */
} tl_src_t;

static inline bool src_next(tl_src_t *src, tl_in_t *out)
{
    if (!src->s) {
        if (src->i == src->count)
            return false;
        *out = src->arr[src->i++];
        return true;
    }
    const timeline_t *s = src->s;
    while (src->b < s->nblk && src->i == s->blk[src->b]->n) {
        src->b++;
        src->i = 0;
    }
    if (src->b == s->nblk)
        return false;
    const tl_ent_t *e = &s->ents[s->blk[src->b]->ids[src->i++]];
    *out = (tl_in_t){e->score, ent_mem(s, e), ent_len(e), ent_live(e) ? 0 : TL_TOMB};
    return true;
}

static int merge_bulk(timeline_t *t, tl_src_t *src)
{
    uint64_t want = (uint64_t)t->ents_used + src->count;
    uint64_t total = (uint64_t)t->count + src->count;
    if (want > UINT32_MAX - 1 || (uint64_t)t->blobs.len + src->blob_len > UINT32_MAX)
        return CRDT_ENOMEM;
    if (want > t->ents_cap) {
        tl_ent_t *e = crdt__realloc(t->ents, (size_t)want * sizeof(*e));
        if (!e)
            return CRDT_ENOMEM;
        t->ents = e;
        t->ents_cap = (uint32_t)want;
    }
    if (crdt__hidx_reserve(&t->idx, (uint32_t)total, key_of, t) < 0)
        return CRDT_ENOMEM;
    uint32_t need = (uint32_t)(t->blobs.len + src->blob_len);
    if (need > t->blobs.cap) {
        size_t cap = crdt__grow_cap(t->blobs.cap, need);
        if (cap > UINT32_MAX)
            cap = UINT32_MAX;
        uint8_t *d = crdt__realloc(t->blobs.data, cap);
        if (!d)
            return CRDT_ENOMEM;
        t->blobs.data = d;
        t->blobs.cap = (uint32_t)cap;
    }
    /* rebuilt blocks are filled to 7/8 so inserts that follow rarely split at once */
    const uint32_t fill = TL_BLOCK * 7 / 8;
    uint32_t nb = (uint32_t)(total / fill + 1);
    tl_block_t **blk = crdt__calloc(nb, sizeof(*blk));
    uint32_t *blive = crdt__malloc((size_t)nb * sizeof(*blive));
    uint32_t *placed = crdt__malloc((src->count ? src->count : 1) * sizeof(uint32_t));
    bool ok = blk && blive && placed;
    /* a lone result block is sized to what it receives, as a growing lone block would be */
    uint32_t bcap = nb == 1 ? lone_cap((uint32_t)total) : TL_BLOCK;
    for (uint32_t i = 0; ok && i < nb; i++)
        ok = (blk[i] = block_resize(NULL, bcap)) != NULL;
    if (!ok) {
        for (uint32_t i = 0; blk && i < nb; i++)
            crdt__free(blk[i]);
        crdt__free(blk);
        crdt__free(blive);
        crdt__free(placed);
        return CRDT_ENOMEM;
    }

    /* 1. LWW per member, in place; src is newest first, so `placed` comes out sorted */
    uint32_t np = 0;
    int changed = 0;
    tl_in_t in;
    while (src_next(src, &in)) {
        const tl_in_t *e = &in;
        const uint8_t *m = e->m;
        uint32_t len = e->len;
        uint32_t flag = e->flag;
        if (below_floor(t, e->score, m, len))
            break; /* and so is every later one */
        uint64_t hash = crdt__hidx_hash(&t->idx, m, len);
        uint32_t id = crdt__hidx_find_hashed(&t->idx, m, len, hash, key_of, t);
        if (id == CRDT__NO_ID) {
            uint32_t off;
            crdt__blobs_add(&t->blobs, m, len, &off); /* reserved: cannot fail */
            id = alloc_id(t);
            t->ents[id] = (tl_ent_t){e->score, off, len | flag};
            crdt__hidx_insert_reserved(&t->idx, id, hash);
            placed[np++] = id;
            t->count++;
            changed = 1;
        } else {
            tl_ent_t *x = &t->ents[id];
            if (e->score > x->score) {
                /* only from a source that holds x's member twice would x be placed already:
                 * an array source, newest first, gives the winner first, so this is its first */
                x->score = e->score;
                x->len = ent_len(x) | flag | TL_MOVED;
                placed[np++] = id;
                changed = 1;
            } else if (e->score == x->score && flag && ent_live(x)) {
                x->len |= TL_TOMB; /* equal scores: remove wins, the position stays */
                changed = 1;
            }
        }
    }
    if (!np) {
        /* nothing moved (the common anti-entropy case of equal states): keep the order, only
         * recount live entries if a tie turned some into tombstones */
        for (uint32_t k = 0; k < nb; k++)
            crdt__free(blk[k]);
        crdt__free(blk);
        crdt__free(blive);
        crdt__free(placed);
        if (changed) {
            t->live = 0;
            for (uint32_t k = 0; k < t->nblk; k++) {
                t->blive[k] = count_live(t, t->blk[k]->ids, t->blk[k]->n);
                t->live += t->blive[k];
            }
        }
        return changed;
    }
    /* 2. merge the old order (minus moved entries) with the placed ids into fresh blocks */
    uint32_t ob = 0, ob_n = 0, live = 0, ob_live = 0, j = 0;
    uint32_t b = 0, i = 0;
    for (;;) {
        uint32_t a = CRDT__NO_ID;
        while (b < t->nblk) {
            if (i == t->blk[b]->n) {
                b++;
                i = 0;
                continue;
            }
            a = t->blk[b]->ids[i];
            if (t->ents[a].len & TL_MOVED) {
                t->ents[a].len &= ~TL_MOVED; /* it comes again from `placed` */
                i++;
                a = CRDT__NO_ID;
                continue;
            }
            break;
        }
        uint32_t id;
        if (j < np && (a == CRDT__NO_ID || ent_cmp(t, placed[j], a) < 0)) {
            id = placed[j++];
        } else if (a != CRDT__NO_ID) {
            id = a;
            i++;
        } else {
            break;
        }
        if (ob_n == fill) {
            blk[ob]->n = ob_n;
            blive[ob] = ob_live;
            ob++;
            ob_n = ob_live = 0;
        }
        blk[ob]->ids[ob_n++] = id;
        ob_live += ent_live(&t->ents[id]);
    }
    blk[ob]->n = ob_n;
    blive[ob] = ob_live;
    uint32_t used = ob_n ? ob + 1 : ob;
    for (uint32_t k = 0; k < used; k++)
        live += blive[k];
    for (uint32_t k = used; k < nb; k++) {
        if (!t->spare)
            t->spare = blk[k];
        else
            crdt__free(blk[k]);
    }
    for (uint32_t k = 0; k < t->nblk; k++)
        crdt__free(t->blk[k]);
    crdt__free(t->blk);
    crdt__free(t->blive);
    crdt__free(placed);
    t->blk = blk;
    t->blive = blive;
    t->nblk = used;
    t->blk_cap = nb;
    t->live = live;
    return changed;
}

/* Raises t's floor to src's if higher, dropping what falls at or below it. */
static int merge_floor(timeline_t *t, const timeline_t *s)
{
    if (!s->has_floor || below_floor(t, s->floor_score, blob_at(s, s->floor_off), s->floor_len))
        return 0;
    uint32_t off;
    if (crdt__blobs_add(&t->blobs, blob_at(s, s->floor_off), s->floor_len, &off) < 0)
        return CRDT_ENOMEM;
    set_floor(t, s->floor_score, off, s->floor_len);
    trim(t);
    return 1;
}

/* Order matters only for failures: the bound (no allocation), then the entries, then the floor,
 * so that a merge stopped by ENOMEM leaves dst joined with some of src's writes, a state the
 * decoder accepts (a floor without a full timeline could not arise). */
static int timeline_merge(crdt_obj_t *dst, const crdt_obj_t *src)
{
    timeline_t *t = (timeline_t *)dst;
    const timeline_t *s = (const timeline_t *)src;
    int changed = 0, rc;
    /* the smaller non-zero bound (0 = unbounded counts as infinite) */
    if (s->max_size && (!t->max_size || s->max_size < t->max_size)) {
        t->max_size = s->max_size;
        trim(t);
        changed = 1;
    }
    /* a src comparable in size to dst: one linear pass; a few entries (deltas): insert each */
    if (s->count >= 4 && (uint64_t)s->count * 4 >= t->count) {
        tl_src_t from = {s, NULL, s->count, s->blobs.len, 0, 0};
        if ((rc = merge_bulk(t, &from)) >= 0) {
            changed |= rc;
            trim(t);
            goto floor;
        }
        /* out of memory before anything changed: the per-entry path needs far less */
    }
    for (uint32_t b = 0; b < s->nblk; b++) {
        for (uint32_t i = 0; i < s->blk[b]->n; i++) {
            const tl_ent_t *e = &s->ents[s->blk[b]->ids[i]];
            if ((rc = tl_write(t, ent_mem(s, e), ent_len(e), e->score, ent_live(e))) < 0)
                return rc; /* what was joined so far is below the full join: still valid */
            changed |= rc;
        }
    }
floor:
    if ((rc = merge_floor(t, s)) < 0)
        return rc;
    changed |= rc;
    maybe_compact(t);
    return changed;
}

/* ---- joining encodings without building them (log replay) --------------------------------- */

/* A delta of up to this many entries is read straight into the join; a larger one (or one with a
 * bound or a floor, which a mutator's delta never has) is decoded as an object and merged. */
#define TL_FAST_MAX 16

static int in_cmp(const void *a, const void *b)
{
    const tl_in_t *x = a, *y = b;
    return pos_cmp(x->score, x->m, x->len, y->score, y->m, y->len);
}

/* Reads an unbounded, floorless payload of at most TL_FAST_MAX entries into out[], checking what
 * timeline_decode checks (with its messages). 0 with *n set, 1 when the payload is not of that
 * kind (the caller decodes it whole), CRDT_EDECODE with the reader's error filled. */
static int read_simple(crdt__reader_t *r, tl_in_t *out, uint32_t *n_out)
{
    /* The shape of nearly every log record, a mutator's delta (max_size 0, no floor, 1 entry, a
     * member shorter than 128 bytes), read straight off the bytes; anything else, valid or not,
     * takes the general path below, which says what is wrong. */
    const uint8_t *p = r->p + r->pos;
    size_t left = r->len - r->pos;
    if (left >= 13 && p[0] == 0 && p[1] == 0 && p[2] == 1 && p[11] <= 1 && p[12] < 0x80 &&
        left == 13 + (size_t)p[12]) {
        uint64_t u = 0;
        for (int i = 0; i < 8; i++)
            u |= (uint64_t)p[3 + i] << (8 * i);
        double x;
        memcpy(&x, &u, 8);
        if (x == x && x - x == 0 && u != (1ull << 63)) { /* finite, not -0.0 */
            out[0] = (tl_in_t){x, p + 13, p[12], p[11] ? 0 : TL_TOMB};
            r->pos = r->len;
            *n_out = 1;
            return 0;
        }
    }
    uint64_t max_size, n;
    uint8_t has_floor;
    if (crdt__rd_count(r, UINT32_MAX, "timeline max_size", &max_size) < 0 ||
        crdt__rd_u8(r, &has_floor) < 0)
        return CRDT_EDECODE;
    if (max_size || has_floor)
        return 1;
    /* an entry takes at least 10 bytes, as in timeline_decode */
    if (crdt__rd_count(r, (r->len - r->pos) / 10, "timeline entry count", &n) < 0)
        return CRDT_EDECODE;
    if (n > TL_FAST_MAX)
        return 1;
    for (uint32_t i = 0; i < (uint32_t)n; i++) {
        size_t at = r->pos;
        double score;
        uint8_t flag;
        const uint8_t *m;
        size_t len;
        if (crdt__rd_score(r, &score) < 0 || crdt__rd_u8(r, &flag) < 0)
            return CRDT_EDECODE;
        if (flag > 1) {
            r->pos--;
            return crdt__fail(r, "timeline entry %u: flag %u is neither 1 (live) nor 0 (tombstone)",
                              i, flag);
        }
        if (crdt__rd_blob(r, &m, &len) < 0)
            return CRDT_EDECODE;
        const char *why = NULL;
        if (i && pos_cmp(score, m, len, out[i - 1].score, out[i - 1].m, out[i - 1].len) <= 0)
            why = "entries not in strictly decreasing (score, member) order";
        for (uint32_t j = 0; !why && j < i; j++)
            if (crdt__bytes_cmp(m, len, out[j].m, out[j].len) == 0)
                why = "member appears twice";
        if (why) {
            r->pos = at;
            return crdt__fail(r, "timeline entry %u: %s", i, why);
        }
        out[i] = (tl_in_t){score, m, (uint32_t)len, flag ? 0 : TL_TOMB};
    }
    if (crdt__rd_end(r) < 0)
        return CRDT_EDECODE;
    *n_out = (uint32_t)n;
    return 0;
}

/* Puts in[] newest first: as given, reversed (a log read oldest first, of a feed whose scores
 * rise), or sorted. Entries at one position (same member and score) may stay in any order. */
static void order_newest_first(tl_in_t *in, size_t n)
{
    bool desc = true, asc = true;
    for (size_t i = 1; i < n && (desc || asc); i++) {
        int c = in_cmp(&in[i - 1], &in[i]);
        desc &= c <= 0;
        asc &= c >= 0;
    }
    if (desc)
        return;
    if (asc) {
        for (size_t i = 0, j = n - 1; i < j; i++, j--) {
            tl_in_t x = in[i];
            in[i] = in[j];
            in[j] = x;
        }
        return;
    }
    qsort(in, n, sizeof(*in), in_cmp);
}

/* Joins loose entries (each an unbounded one-entry delta) into t: 1 changed, 0 not, ENOMEM. Many
 * at once (against t's size) take merge_bulk's linear pass: their join is the LWW-union, which is
 * what merge_bulk makes of a newest-first list that may name a member twice. */
static int join_entries(timeline_t *t, tl_in_t *in, size_t n, uint64_t blob_len)
{
    if (n >= 4 && (uint64_t)n * 4 >= t->count && n <= UINT32_MAX - 1) {
        order_newest_first(in, n);
        tl_src_t src = {NULL, in, (uint32_t)n, blob_len, 0, 0};
        int rc = merge_bulk(t, &src);
        if (rc >= 0) {
            trim(t);
            maybe_compact(t);
            return rc;
        }
        /* out of memory before anything changed: the per-entry path needs far less */
    }
    int changed = 0;
    for (size_t i = 0; i < n; i++) {
        int rc = tl_write(t, in[i].m, in[i].len, in[i].score, !in[i].flag);
        if (rc < 0)
            return rc; /* what was joined so far is below the full join: still valid */
        changed |= rc;
    }
    maybe_compact(t);
    return changed;
}

static int timeline_merge_encoded(crdt_obj_t *dst, const crdt_bytes_t *encs, size_t n,
                                  size_t *failed, crdt_error_t *err)
{
    timeline_t *t = (timeline_t *)dst;
    tl_in_t stack_in[64];
    tl_in_t *in = stack_in;
    size_t nin = 0, cap = sizeof(stack_in) / sizeof(stack_in[0]);
    crdt_obj_t **objs = NULL; /* encodings that are not simple deltas, decoded */
    size_t nobj = 0, capobj = 0;
    uint64_t blob_len = 0;
    int rc = 0;
    /* 1. validate everything (dst untouched), collecting the entries of simple deltas */
    for (size_t i = 0; i < n && rc == 0; i++) {
        const crdt__vtable_t *vt;
        crdt__reader_t pr;
        if (nin + TL_FAST_MAX > cap) {
            size_t ncap = cap * 2;
            tl_in_t *g =
                in == stack_in ? crdt__malloc(ncap * sizeof(*g)) : crdt__realloc(in, ncap * sizeof(*g));
            if (!g) {
                rc = CRDT_ENOMEM;
                break;
            }
            if (in == stack_in)
                memcpy(g, stack_in, nin * sizeof(*g));
            in = g;
            cap = ncap;
        }
        uint32_t k = 0;
        int p = 1;
        if (!encs[i].data && encs[i].len)
            p = 1; /* crdt__decode_one reports it */
        else if (crdt__frame_open(encs[i].data, encs[i].len, 0, err, &vt, &pr) < 0)
            p = CRDT_EDECODE;
        else if (vt == &crdt__timeline_vt)
            p = read_simple(&pr, in + nin, &k);
        if (p == 0) {
            for (uint32_t j = 0; j < k; j++)
                blob_len += in[nin + j].len;
            nin += k;
            continue;
        }
        if (p < 0) {
            rc = p;
            if (failed)
                *failed = i;
            break;
        }
        if (nobj == capobj) {
            size_t nc = capobj ? capobj * 2 : 4;
            crdt_obj_t **o = crdt__realloc(objs, nc * sizeof(*o));
            if (!o) {
                rc = CRDT_ENOMEM;
                break;
            }
            objs = o;
            capobj = nc;
        }
        if (!(objs[nobj] = crdt__decode_one(dst, &encs[i], err))) {
            rc = err && err->code ? err->code : CRDT_EDECODE;
            if (failed)
                *failed = i;
            break;
        }
        nobj++;
    }
    if (rc == CRDT_ENOMEM && err && !err->code) {
        err->code = CRDT_ENOMEM;
        snprintf(err->text, sizeof(err->text), "out of memory");
    }
    /* 2. join */
    int changed = 0;
    if (rc == 0 && nin) {
        rc = join_entries(t, in, nin, blob_len);
        changed = rc > 0;
    }
    for (size_t i = 0; i < nobj; i++) {
        if (rc >= 0) {
            int m = timeline_merge(dst, objs[i]);
            if (m < 0)
                rc = m;
            else
                changed |= m;
        }
        crdt_obj_free(objs[i]);
    }
    crdt__free(objs);
    if (in != stack_in)
        crdt__free(in);
    return rc < 0 ? rc : changed;
}

static bool timeline_equal(const crdt_obj_t *oa, const crdt_obj_t *ob)
{
    const timeline_t *a = (const timeline_t *)oa, *b = (const timeline_t *)ob;
    if (a->max_size != b->max_size || a->count != b->count || a->live != b->live ||
        a->has_floor != b->has_floor)
        return false;
    if (a->has_floor &&
        (a->floor_score != b->floor_score ||
         crdt__bytes_cmp(blob_at(a, a->floor_off), a->floor_len, blob_at(b, b->floor_off),
                         b->floor_len) != 0))
        return false;
    uint32_t ab = 0, ai = 0, bb = 0, bi = 0;
    for (uint32_t k = 0; k < a->count; k++) {
        const tl_ent_t *x = &a->ents[a->blk[ab]->ids[ai]];
        const tl_ent_t *y = &b->ents[b->blk[bb]->ids[bi]];
        if (x->score != y->score || ent_live(x) != ent_live(y) ||
            crdt__bytes_cmp(ent_mem(a, x), ent_len(x), ent_mem(b, y), ent_len(y)) != 0)
            return false;
        if (++ai == a->blk[ab]->n) {
            ab++;
            ai = 0;
        }
        if (++bi == b->blk[bb]->n) {
            bb++;
            bi = 0;
        }
    }
    return true;
}

static bool timeline_is_empty(const crdt_obj_t *o)
{
    const timeline_t *t = (const timeline_t *)o;
    return t->count == 0 && !t->has_floor;
}

static void timeline_stats(const crdt_obj_t *o, crdt_stats_t *st)
{
    const timeline_t *t = (const timeline_t *)o;
    st->entries = t->live;
    st->tombstones = t->count - t->live;
    st->memory = sizeof(*t) + (size_t)t->ents_cap * sizeof(tl_ent_t) +
                 (size_t)t->blk_cap * (sizeof(tl_block_t *) + sizeof(uint32_t)) +
                 (t->spare ? block_size(t->spare->cap) : 0) + t->blobs.cap +
                 crdt__hidx_memory(&t->idx);
    for (uint32_t b = 0; b < t->nblk; b++)
        st->memory += block_size(t->blk[b]->cap);
}

/* ---- binary codec --------------------------------------------------------------------------- */

static void timeline_encode(const crdt_obj_t *o, crdt__writer_t *w)
{
    const timeline_t *t = (const timeline_t *)o;
    /* Everything is written straight into the buffer, reserved once: the header (bound, floor,
     * count) and at most 8 + 1 + 5 bytes per entry beside the member bytes, which the blob
     * store's length bounds (the floor's member is in it too). Field by field through the writer
     * costs twice the time, and a log record per write is one of these. */
    size_t most = 5 + 1 + 8 + 5 + 5 + (size_t)t->count * 14 + t->blobs.len;
    if (w->err || crdt_buf_reserve(w->b, most) < 0) {
        if (!w->err)
            w->err = CRDT_ENOMEM;
        return;
    }
    uint8_t *start = w->b->data + w->b->len, *p = start;
    p += crdt_varint_put(p, t->max_size);
    *p++ = t->has_floor;
    if (t->has_floor) {
        uint64_t u;
        memcpy(&u, &t->floor_score, 8);
        for (int k = 0; k < 8; k++)
            *p++ = (uint8_t)(u >> (8 * k));
        p += crdt_varint_put(p, t->floor_len);
        if (t->floor_len)
            memcpy(p, blob_at(t, t->floor_off), t->floor_len);
        p += t->floor_len;
    }
    p += crdt_varint_put(p, t->count);
    const uint8_t *base = blob_at(t, 0);
    for (uint32_t b = 0; b < t->nblk; b++) {
        for (uint32_t i = 0; i < t->blk[b]->n; i++) {
            const tl_ent_t *e = &t->ents[t->blk[b]->ids[i]];
            uint64_t u;
            memcpy(&u, &e->score, 8);
            for (int k = 0; k < 8; k++) /* little endian whatever the host */
                *p++ = (uint8_t)(u >> (8 * k));
            *p++ = ent_live(e);
            uint32_t len = ent_len(e);
            p += crdt_varint_put(p, len);
            memcpy(p, base + e->off, len);
            p += len;
        }
    }
    w->b->len += (size_t)(p - start);
}

/* Appends a decoded entry after checking what canonical form requires of it. Returns NULL, or a
 * message naming the fault (*nomem set when it was memory). */
static const char *append_checked(timeline_t *t, double score, bool live, const uint8_t *m,
                                  size_t len, bool *nomem)
{
    if (below_floor(t, score, m, len))
        return "entry at or below the floor";
    if (t->count) {
        const tl_ent_t *last = &t->ents[tail_id(t)];
        if (pos_cmp(score, m, len, last->score, ent_mem(t, last), ent_len(last)) <= 0)
            return "entries not in strictly decreasing (score, member) order";
    }
    if (crdt__hidx_find(&t->idx, m, len, key_of, t) != CRDT__NO_ID)
        return "member appears twice";
    if (append_entry(t, score, live, m, len) < 0) {
        *nomem = true;
        return "out of memory";
    }
    return NULL;
}

static const char *floor_checked(timeline_t *t, uint32_t n, double score, const uint8_t *m,
                                 size_t len, bool *nomem)
{
    /* a floor comes only from trimming, which leaves the timeline bounded and full */
    if (!t->max_size)
        return "floor in an unbounded timeline";
    if (n != t->max_size)
        return "floor in a timeline that is not full";
    uint32_t off;
    if (crdt__blobs_add(&t->blobs, m, len, &off) < 0) {
        *nomem = true;
        return "out of memory";
    }
    set_floor(t, score, off, (uint32_t)len);
    return NULL;
}

static crdt_obj_t *timeline_decode(crdt__reader_t *r)
{
    uint64_t max_size, n;
    uint8_t has_floor;
    double fscore = 0;
    const uint8_t *fm = NULL;
    size_t flen = 0;
    if (crdt__rd_count(r, UINT32_MAX, "timeline max_size", &max_size) < 0 ||
        crdt__rd_u8(r, &has_floor) < 0)
        return NULL;
    if (has_floor > 1) {
        r->pos--;
        crdt__fail(r, "timeline floor flag %u is neither 0 nor 1", has_floor);
        return NULL;
    }
    if (has_floor && (crdt__rd_score(r, &fscore) < 0 || crdt__rd_blob(r, &fm, &flen) < 0))
        return NULL;
    /* an entry takes at least 10 bytes: bound the count before reserving memory for it */
    uint64_t most = (r->len - r->pos) / 10;
    if (max_size && max_size < most)
        most = max_size;
    size_t at = r->pos;
    if (crdt__rd_count(r, most, "timeline entry count", &n) < 0)
        return NULL;
    timeline_t *t = tl_alloc((uint32_t)max_size);
    if (!t || tl_reserve(t, (uint32_t)n) < 0) {
        if (t)
            timeline_destroy(&t->base);
        crdt__nomem(r);
        return NULL;
    }
    bool nomem = false;
    const char *why = NULL;
    if (has_floor && (why = floor_checked(t, (uint32_t)n, fscore, fm, flen, &nomem))) {
        r->pos = at;
        goto fail;
    }
    for (uint64_t i = 0; i < n; i++) {
        double score;
        uint8_t flag;
        const uint8_t *m;
        size_t len;
        at = r->pos;
        if (crdt__rd_score(r, &score) < 0 || crdt__rd_u8(r, &flag) < 0)
            goto fail_quiet;
        if (flag > 1) {
            r->pos--;
            crdt__fail(r, "timeline entry %llu: flag %u is neither 1 (live) nor 0 (tombstone)",
                       (unsigned long long)i, flag);
            goto fail_quiet;
        }
        if (crdt__rd_blob(r, &m, &len) < 0)
            goto fail_quiet;
        if ((why = append_checked(t, score, flag, m, len, &nomem))) {
            r->pos = at;
            if (nomem)
                goto fail;
            crdt__fail(r, "timeline entry %llu: %s", (unsigned long long)i, why);
            goto fail_quiet;
        }
    }
    return &t->base;
fail:
    if (nomem)
        crdt__nomem(r);
    else
        crdt__fail(r, "timeline: %s", why);
fail_quiet:
    timeline_destroy(&t->base);
    return NULL;
}

/* ---- JSON ----------------------------------------------------------------------------------- */

static json_t *entry_json(const uint8_t *m, size_t len, double score, int live)
{
    json_t *j = json_object();
    if (!j || json_object_set_new(j, "member", crdt__json_blob(m, len)) < 0 ||
        json_object_set_new(j, "score", json_real(score)) < 0 ||
        (live >= 0 && json_object_set_new(j, "live", json_boolean(live)) < 0)) {
        json_decref(j);
        return NULL;
    }
    return j;
}

static json_t *timeline_to_json(const crdt_obj_t *o)
{
    const timeline_t *t = (const timeline_t *)o;
    json_t *entries = json_array();
    json_t *floor = t->has_floor
                        ? entry_json(blob_at(t, t->floor_off), t->floor_len, t->floor_score, -1)
                        : json_null();
    if (!entries || !floor)
        goto fail;
    for (uint32_t b = 0; b < t->nblk; b++) {
        for (uint32_t i = 0; i < t->blk[b]->n; i++) {
            const tl_ent_t *e = &t->ents[t->blk[b]->ids[i]];
            if (json_array_append_new(entries,
                                      entry_json(ent_mem(t, e), ent_len(e), e->score,
                                                 ent_live(e))) < 0)
                goto fail;
        }
    }
    return json_pack("{s:I,s:o,s:o}", "max_size", (json_int_t)t->max_size, "floor", floor,
                     "entries", entries);
fail:
    json_decref(entries);
    json_decref(floor);
    return NULL;
}

/* Reads {"member":bytes,"score":x} (+ "live" when want_live) with exactly those fields. */
static int entry_from_json(const json_t *j, const char *what, bool want_live, uint8_t **m,
                           size_t *len, double *score, bool *live, crdt_error_t *err)
{
    char field[64];
    if (!json_is_object(j)) {
        crdt__json_fail(err, "%s: expected an object", what);
        return CRDT_EDECODE;
    }
    snprintf(field, sizeof(field), "%s.score", what);
    if (crdt__json_get_score(json_object_get(j, "score"), field, score, err) < 0)
        return CRDT_EDECODE;
    if (want_live) {
        const json_t *l = json_object_get(j, "live");
        if (!json_is_boolean(l)) {
            crdt__json_fail(err, "%s.live: expected true or false", what);
            return CRDT_EDECODE;
        }
        *live = json_is_true(l);
    }
    if (json_object_size(j) != (want_live ? 3u : 2u)) {
        crdt__json_fail(err, "%s: unexpected fields (allowed: member, score%s)", what,
                        want_live ? ", live" : "");
        return CRDT_EDECODE;
    }
    snprintf(field, sizeof(field), "%s.member", what);
    return crdt__json_get_blob(json_object_get(j, "member"), field, m, len, err);
}

static crdt_obj_t *timeline_from_json(const json_t *state, crdt_error_t *err)
{
    if (!json_is_object(state))
        return crdt__json_fail(err, "state: expected an object {max_size, floor, entries}");
    const json_t *jmax = json_object_get(state, "max_size");
    const json_t *jfloor = json_object_get(state, "floor");
    const json_t *jents = json_object_get(state, "entries");
    int64_t max_size;
    if (crdt__json_get_int(jmax, "max_size", 0, UINT32_MAX, &max_size, err) < 0)
        return NULL;
    if (!jfloor)
        return crdt__json_fail(err, "floor: missing (null when there is none)");
    if (!json_is_array(jents))
        return crdt__json_fail(err, "entries: expected an array");
    if (json_object_size(state) != 3)
        return crdt__json_fail(err, "state: unexpected fields (allowed: max_size, floor, entries)");
    size_t n = json_array_size(jents);
    if (max_size && n > (size_t)max_size)
        return crdt__json_fail(err, "entries: %zu entries exceed max_size %lld", n,
                               (long long)max_size);
    if (n > UINT32_MAX - 1)
        return crdt__json_fail(err, "entries: too many");
    timeline_t *t = tl_alloc((uint32_t)max_size);
    if (!t || tl_reserve(t, (uint32_t)n) < 0)
        goto nomem;
    uint8_t *m = NULL;
    size_t len;
    double score;
    bool live = true, nomem = false;
    const char *why;
    if (!json_is_null(jfloor)) {
        int rc = entry_from_json(jfloor, "floor", false, &m, &len, &score, NULL, err);
        if (rc == CRDT_ENOMEM)
            goto nomem;
        if (rc < 0)
            goto fail;
        why = floor_checked(t, (uint32_t)n, score, m, len, &nomem);
        crdt__free(m);
        if (nomem)
            goto nomem;
        if (why) {
            crdt__json_fail(err, "floor: %s", why);
            goto fail;
        }
    }
    for (size_t i = 0; i < n; i++) {
        char what[48];
        snprintf(what, sizeof(what), "entries[%zu]", i);
        int rc = entry_from_json(json_array_get(jents, i), what, true, &m, &len, &score, &live,
                                 err);
        if (rc == CRDT_ENOMEM)
            goto nomem;
        if (rc < 0)
            goto fail;
        why = append_checked(t, score, live, m, len, &nomem);
        crdt__free(m);
        if (nomem)
            goto nomem;
        if (why) {
            crdt__json_fail(err, "%s: %s", what, why);
            goto fail;
        }
    }
    return &t->base;
nomem:
    if (err && !err->code) {
        err->code = CRDT_ENOMEM;
        snprintf(err->text, sizeof(err->text), "out of memory");
    }
fail:
    if (t)
        timeline_destroy(&t->base);
    return NULL;
}

const crdt__vtable_t crdt__timeline_vt = {
    .type = CRDT_TIMELINE,
    .name = "timeline",
    .create = timeline_create,
    .destroy = timeline_destroy,
    .clone = timeline_clone,
    .merge = timeline_merge,
    .merge_encoded = timeline_merge_encoded,
    .equal = timeline_equal,
    .is_empty = timeline_is_empty,
    .stats = timeline_stats,
    .encode = timeline_encode,
    .decode = timeline_decode,
    .to_json = timeline_to_json,
    .from_json = timeline_from_json,
};

/* ---- reads ---------------------------------------------------------------------------------- */

uint32_t crdt_timeline_max_size(const crdt_obj_t *o)
{
    const timeline_t *t = as_tl(o);
    return t ? t->max_size : 0;
}

size_t crdt_timeline_card(const crdt_obj_t *o)
{
    const timeline_t *t = as_tl(o);
    return t ? t->live : 0;
}

int crdt_timeline_score(const crdt_obj_t *o, const void *m, size_t len, double *score)
{
    const timeline_t *t = as_tl(o);
    if (!t)
        return o ? CRDT_ETYPE : CRDT_EINVAL;
    if (!m && len)
        return CRDT_EINVAL;
    uint32_t id = crdt__hidx_find(&t->idx, m ? m : "", len, key_of, t);
    if (id == CRDT__NO_ID || !ent_live(&t->ents[id]))
        return 0;
    if (score)
        *score = t->ents[id].score;
    return 1;
}

int crdt_timeline_floor(const crdt_obj_t *o, crdt_tl_entry_t *floor)
{
    const timeline_t *t = as_tl(o);
    if (!t || !t->has_floor)
        return 0;
    if (floor) {
        floor->member = blob_at(t, t->floor_off);
        floor->member_len = t->floor_len;
        floor->score = t->floor_score;
    }
    return 1;
}

static inline void fill(const timeline_t *t, uint32_t id, crdt_tl_entry_t *out)
{
    const tl_ent_t *e = &t->ents[id];
    out->member = ent_mem(t, e);
    out->member_len = ent_len(e);
    out->score = e->score;
}

size_t crdt_timeline_range(const crdt_obj_t *o, size_t offset, size_t count, crdt_tl_entry_t *out)
{
    const timeline_t *t = as_tl(o);
    if (!t || !count)
        return 0;
    const tl_ent_t *ents = t->ents;
    const uint8_t *base = blob_at(t, 0);
    uint32_t b = 0;
    for (; b < t->nblk && offset >= t->blive[b]; b++)
        offset -= t->blive[b]; /* skip whole blocks by their live counts: one small array */
    if (b == t->nblk)
        return 0;
    /* the rest of the offset lies inside block b */
    uint32_t i = 0;
    const tl_block_t *first = t->blk[b];
    if (t->blive[b] == first->n)
        i = (uint32_t)offset; /* no tombstones here: no need to look at the entries */
    else
        for (; offset; i++)
            offset -= !(ents[first->ids[i]].len & TL_TOMB);
    size_t got = 0;
    for (; b < t->nblk; b++, i = 0) {
        const tl_block_t *blk = t->blk[b];
        uint32_t n = blk->n;
        for (; i < n; i++) {
            /* ids are known ahead, unlike a skiplist's next pointer: fetch entries early */
            if (i + 8 < n)
                __builtin_prefetch(&ents[blk->ids[i + 8]]);
            const tl_ent_t *e = &ents[blk->ids[i]];
            if (e->len & TL_TOMB)
                continue;
            out[got].member = base + e->off;
            out[got].member_len = e->len;
            out[got].score = e->score;
            if (++got == count)
                return got;
        }
    }
    return got;
}

size_t crdt_timeline_range_by_score(const crdt_obj_t *o, double max, double min,
                                    const crdt_tl_entry_t *after, size_t limit,
                                    crdt_tl_entry_t *out)
{
    const timeline_t *t = as_tl(o);
    if (!t || !limit || !t->nblk || isnan(max) || isnan(min) || max < min)
        return 0;
    uint32_t bi, si;
    tl_key_t k = {max, NULL, 0, true}; /* the first entry with score <= max */
    find_pos(t, &k, &bi, &si);
    if (after && !isnan(after->score)) {
        if (!after->member && after->member_len)
            return 0;
        tl_key_t a = {after->score, after->member ? after->member : (const void *)"",
                      after->member_len, false};
        uint32_t abi, asi;
        find_pos(t, &a, &abi, &asi);
        /* strictly after the cursor: step over an entry sitting exactly at it */
        if (abi < t->nblk && asi < t->blk[abi]->n &&
            ent_vs_key(t, t->blk[abi]->ids[asi], &a) == 0)
            asi++;
        if (abi > bi || (abi == bi && asi > si)) {
            bi = abi;
            si = asi;
        }
    }
    size_t got = 0;
    while (bi < t->nblk && got < limit) {
        const tl_block_t *blk = t->blk[bi];
        if (si >= blk->n) {
            bi++;
            si = 0;
            continue;
        }
        uint32_t id = blk->ids[si++];
        const tl_ent_t *e = &t->ents[id];
        if (e->score < min)
            break;
        if (ent_live(e))
            fill(t, id, &out[got++]);
    }
    return got;
}

/* A read position in one timeline of a coalesced select. */
typedef struct tl_cursor {
    double score; /* the current entry, cached: the heap compares these */
    const uint8_t *m;
    uint32_t len;
    uint32_t id;
    const timeline_t *t;
    uint32_t bi, si;
    size_t src;
} tl_cursor_t;

/* Moves c to the first live entry at or after its position and caches it; false when the
 * timeline is done. */
static bool cursor_settle(tl_cursor_t *c)
{
    const timeline_t *t = c->t;
    while (c->bi < t->nblk) {
        const tl_block_t *b = t->blk[c->bi];
        if (c->si == 0 && t->blive[c->bi] == 0) {
            c->bi++;
            continue;
        }
        while (c->si < b->n) {
            uint32_t id = b->ids[c->si];
            const tl_ent_t *e = &t->ents[id];
            if (ent_live(e)) {
                c->score = e->score;
                c->m = ent_mem(t, e);
                c->len = ent_len(e);
                c->id = id;
                return true;
            }
            c->si++;
        }
        c->bi++;
        c->si = 0;
    }
    return false;
}

/* Heap order: newer entry first; on equal positions the lower source index first. */
static inline bool cursor_before(const tl_cursor_t *a, const tl_cursor_t *b)
{
    if (a->score != b->score)
        return a->score > b->score;
    int c = crdt__bytes_cmp(a->m, a->len, b->m, b->len);
    return c > 0 || (c == 0 && a->src < b->src);
}

static void sift_down(tl_cursor_t *h, size_t n, size_t i)
{
    tl_cursor_t x = h[i];
    for (;;) {
        size_t l = 2 * i + 1, best = l;
        if (l >= n)
            break;
        if (l + 1 < n && cursor_before(&h[l + 1], &h[l]))
            best = l + 1;
        if (!cursor_before(&h[best], &x))
            break;
        h[i] = h[best];
        i = best;
    }
    h[i] = x;
}

size_t crdt_timeline_select(const crdt_obj_t *const *tls, size_t n, size_t offset, size_t count,
                            crdt_tl_entry_t *out, size_t *source)
{
    if (!count || !tls)
        return 0;
    tl_cursor_t stack[16];
    tl_cursor_t *h = stack;
    size_t live_total = 0, nonempty = 0, only = 0;
    for (size_t i = 0; i < n; i++) {
        const timeline_t *t = as_tl(tls[i]);
        if (t && t->live) {
            live_total += t->live;
            nonempty++;
            only = i;
        }
    }
    if (offset >= live_total)
        return 0;
    if (nonempty == 1) {
        /* one source: the block-skipping range read */
        size_t got = crdt_timeline_range(tls[only], offset, count, out);
        for (size_t i = 0; source && i < got; i++)
            source[i] = only;
        return got;
    }
    if (nonempty > sizeof(stack) / sizeof(stack[0]) && !(h = crdt__malloc(nonempty * sizeof(*h))))
        return 0; /* out of memory: nothing read */
    size_t hn = 0;
    for (size_t i = 0; i < n; i++) {
        const timeline_t *t = as_tl(tls[i]);
        if (t && t->live) {
            h[hn] = (tl_cursor_t){.t = t, .src = i};
            if (cursor_settle(&h[hn]))
                hn++;
        }
    }
    for (size_t i = hn / 2; i-- > 0;)
        sift_down(h, hn, i);
    size_t got = 0;
    while (hn && got < count) {
        tl_cursor_t *c = &h[0];
        if (offset)
            offset--;
        else {
            out[got].member = c->m;
            out[got].member_len = c->len;
            out[got].score = c->score;
            if (source)
                source[got] = c->src;
            got++;
        }
        c->si++;
        if (!cursor_settle(c))
            h[0] = h[--hn];
        sift_down(h, hn, 0);
    }
    if (h != stack)
        crdt__free(h);
    return got;
}

int crdt_tl_entry_cmp(const crdt_tl_entry_t *a, const crdt_tl_entry_t *b)
{
    return pos_cmp(a->score, a->member, a->member_len, b->score, b->member, b->member_len);
}
