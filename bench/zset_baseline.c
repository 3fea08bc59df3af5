/* zset_baseline.c - a Redis-style skiplist + hash sorted set, the timeline benchmark's baseline */
#include "zset_baseline.h"

#include <malloc.h>
#include <stdlib.h>
#include <string.h>

#define ZSKIPLIST_MAXLEVEL 32
#define ZSKIPLIST_P 0.25

/* ---- sds-like strings: a 3-byte header (len, alloc, flags) before the bytes, NUL after ------ */

static char *sds_new(const void *p, size_t len)
{
    size_t hdr = len < 256 ? 3 : 9;
    unsigned char *s = malloc(hdr + len + 1);
    if (!s)
        return NULL;
    if (hdr == 3) {
        s[0] = (unsigned char)len;
        s[1] = (unsigned char)len;
        s[2] = 1;
    } else {
        uint32_t l = (uint32_t)len;
        memcpy(s, &l, 4);
        memcpy(s + 4, &l, 4);
        s[8] = 3;
    }
    memcpy(s + hdr, p, len);
    s[hdr + len] = 0;
    return (char *)s + hdr;
}

static inline size_t sds_len(const char *s)
{
    const unsigned char *u = (const unsigned char *)s;
    if (u[-1] == 1)
        return u[-3];
    uint32_t l;
    memcpy(&l, u - 9, 4);
    return l;
}

static inline void *sds_alloc_ptr(char *s)
{
    return ((unsigned char *)s)[-1] == 1 ? s - 3 : s - 9;
}

static void sds_free(char *s)
{
    if (s)
        free(sds_alloc_ptr(s));
}

static inline int sds_cmp(const char *a, const void *b, size_t blen)
{
    size_t alen = sds_len(a), n = alen < blen ? alen : blen;
    int c = memcmp(a, b, n);
    if (c)
        return c;
    return (alen > blen) - (alen < blen);
}

/* ---- skiplist ------------------------------------------------------------------------------- */

typedef struct znode {
    char *ele;
    double score;
    struct znode *backward;
    struct zlevel {
        struct znode *forward;
        unsigned long span;
    } level[];
} znode_t;

/* A chained hash entry, as Redis's dictEntry: key, value, next. */
typedef struct dentry {
    char *key;
    znode_t *node;
    struct dentry *next;
} dentry_t;

struct zset {
    znode_t *header, *tail;
    unsigned long length;
    int level;
    dentry_t **table;
    size_t size; /* buckets, a power of two */
    size_t used;
    uint64_t rng;
    size_t mem; /* usable bytes of every allocation */
};

static inline size_t usable(void *p) { return p ? malloc_usable_size(p) : 0; }

static int random_level(zset_t *z)
{
    int level = 1;
    for (;;) {
        z->rng ^= z->rng << 13;
        z->rng ^= z->rng >> 7;
        z->rng ^= z->rng << 17;
        if ((z->rng & 0xFFFF) >= (uint64_t)(ZSKIPLIST_P * 0xFFFF) || level >= ZSKIPLIST_MAXLEVEL)
            break;
        level++;
    }
    return level;
}

static znode_t *node_new(zset_t *z, int level, double score, char *ele)
{
    znode_t *n = malloc(sizeof(*n) + (size_t)level * sizeof(struct zlevel));
    if (!n)
        return NULL;
    n->score = score;
    n->ele = ele;
    z->mem += usable(n);
    return n;
}

static void node_free(zset_t *z, znode_t *n)
{
    z->mem -= usable(n);
    free(n);
}

static znode_t *zsl_insert(zset_t *z, double score, char *ele)
{
    znode_t *update[ZSKIPLIST_MAXLEVEL], *x = z->header;
    unsigned long rank[ZSKIPLIST_MAXLEVEL];
    size_t elen = sds_len(ele);
    for (int i = z->level - 1; i >= 0; i--) {
        rank[i] = i == z->level - 1 ? 0 : rank[i + 1];
        while (x->level[i].forward &&
               (x->level[i].forward->score < score ||
                (x->level[i].forward->score == score &&
                 sds_cmp(x->level[i].forward->ele, ele, elen) < 0))) {
            rank[i] += x->level[i].span;
            x = x->level[i].forward;
        }
        update[i] = x;
    }
    int level = random_level(z);
    if (level > z->level) {
        for (int i = z->level; i < level; i++) {
            rank[i] = 0;
            update[i] = z->header;
            update[i]->level[i].span = z->length;
        }
        z->level = level;
    }
    x = node_new(z, level, score, ele);
    if (!x)
        return NULL;
    for (int i = 0; i < level; i++) {
        x->level[i].forward = update[i]->level[i].forward;
        update[i]->level[i].forward = x;
        x->level[i].span = update[i]->level[i].span - (rank[0] - rank[i]);
        update[i]->level[i].span = (rank[0] - rank[i]) + 1;
    }
    for (int i = level; i < z->level; i++)
        update[i]->level[i].span++;
    x->backward = update[0] == z->header ? NULL : update[0];
    if (x->level[0].forward)
        x->level[0].forward->backward = x;
    else
        z->tail = x;
    z->length++;
    return x;
}

static void zsl_delete_node(zset_t *z, znode_t *x, znode_t **update)
{
    for (int i = 0; i < z->level; i++) {
        if (update[i]->level[i].forward == x) {
            update[i]->level[i].span += x->level[i].span - 1;
            update[i]->level[i].forward = x->level[i].forward;
        } else {
            update[i]->level[i].span -= 1;
        }
    }
    if (x->level[0].forward)
        x->level[0].forward->backward = x->backward;
    else
        z->tail = x->backward;
    while (z->level > 1 && z->header->level[z->level - 1].forward == NULL)
        z->level--;
    z->length--;
}

/* Redis's zslUpdateScore: in place when the order is kept, else unlink and insert anew. */
static znode_t *zsl_update_score(zset_t *z, double cur, char *ele, double score)
{
    znode_t *update[ZSKIPLIST_MAXLEVEL], *x = z->header;
    size_t elen = sds_len(ele);
    for (int i = z->level - 1; i >= 0; i--) {
        while (x->level[i].forward &&
               (x->level[i].forward->score < cur ||
                (x->level[i].forward->score == cur &&
                 sds_cmp(x->level[i].forward->ele, ele, elen) < 0)))
            x = x->level[i].forward;
        update[i] = x;
    }
    x = x->level[0].forward;
    if ((x->backward == NULL || x->backward->score < score) &&
        (x->level[0].forward == NULL || x->level[0].forward->score > score)) {
        x->score = score;
        return x;
    }
    zsl_delete_node(z, x, update);
    znode_t *n = zsl_insert(z, score, x->ele);
    node_free(z, x);
    return n;
}

/* ---- hash: member -> node ------------------------------------------------------------------- */

static inline uint64_t mix64(uint64_t h)
{
    h ^= h >> 33;
    h *= 0xff51afd7ed558ccdull;
    h ^= h >> 33;
    h *= 0xc4ceb9fe1a85ec53ull;
    h ^= h >> 33;
    return h;
}

/* A fast 8-bytes-at-a-time hash, so the baseline is not slowed by Redis's SipHash. */
static uint64_t hash_bytes(const void *data, size_t n)
{
    const uint8_t *p = data;
    uint64_t h = 0x9E3779B97F4A7C15ull ^ n;
    while (n >= 8) {
        uint64_t v;
        memcpy(&v, p, 8);
        h = (h ^ mix64(v)) * 0x9E3779B97F4A7C15ull;
        p += 8;
        n -= 8;
    }
    if (n) {
        uint64_t v = 0;
        memcpy(&v, p, n);
        h = (h ^ mix64(v ^ n)) * 0x9E3779B97F4A7C15ull;
    }
    return mix64(h);
}

static dentry_t *dict_find(const zset_t *z, const void *m, size_t len)
{
    if (!z->size)
        return NULL;
    for (dentry_t *e = z->table[hash_bytes(m, len) & (z->size - 1)]; e; e = e->next)
        if (sds_len(e->key) == len && memcmp(e->key, m, len) == 0)
            return e;
    return NULL;
}

static int dict_expand(zset_t *z)
{
    size_t size = z->size ? z->size * 2 : 4;
    dentry_t **t = calloc(size, sizeof(*t));
    if (!t)
        return -1;
    for (size_t i = 0; i < z->size; i++) {
        for (dentry_t *e = z->table[i], *next; e; e = next) {
            next = e->next;
            size_t b = hash_bytes(e->key, sds_len(e->key)) & (size - 1);
            e->next = t[b];
            t[b] = e;
        }
    }
    z->mem -= usable(z->table);
    free(z->table);
    z->table = t;
    z->size = size;
    z->mem += usable(t);
    return 0;
}

static int dict_add(zset_t *z, char *key, znode_t *node)
{
    if (z->used >= z->size && dict_expand(z) < 0) /* Redis grows at load factor 1 */
        return -1;
    dentry_t *e = malloc(sizeof(*e));
    if (!e)
        return -1;
    z->mem += usable(e);
    size_t b = hash_bytes(key, sds_len(key)) & (z->size - 1);
    e->key = key;
    e->node = node;
    e->next = z->table[b];
    z->table[b] = e;
    z->used++;
    return 0;
}

static void dict_delete(zset_t *z, const char *key)
{
    size_t len = sds_len(key);
    dentry_t **pp = &z->table[hash_bytes(key, len) & (z->size - 1)];
    for (; *pp; pp = &(*pp)->next) {
        if (*pp && (*pp)->key == key) {
            dentry_t *e = *pp;
            *pp = e->next;
            z->mem -= usable(e);
            free(e);
            z->used--;
            return;
        }
    }
}

/* ---- the sorted set ------------------------------------------------------------------------- */

zset_t *zset_new(void)
{
    zset_t *z = calloc(1, sizeof(*z));
    if (!z)
        return NULL;
    z->rng = 0x2545F4914F6CDD1Dull;
    z->level = 1;
    z->mem = usable(z);
    z->header = node_new(z, ZSKIPLIST_MAXLEVEL, 0, NULL);
    if (!z->header) {
        free(z);
        return NULL;
    }
    for (int i = 0; i < ZSKIPLIST_MAXLEVEL; i++) {
        z->header->level[i].forward = NULL;
        z->header->level[i].span = 0;
    }
    z->header->backward = NULL;
    return z;
}

void zset_free(zset_t *z)
{
    if (!z)
        return;
    znode_t *x = z->header->level[0].forward;
    while (x) {
        znode_t *next = x->level[0].forward;
        sds_free(x->ele);
        free(x);
        x = next;
    }
    free(z->header);
    for (size_t i = 0; i < z->size; i++) {
        for (dentry_t *e = z->table[i], *next; e; e = next) {
            next = e->next;
            free(e);
        }
    }
    free(z->table);
    free(z);
}

int zset_add(zset_t *z, const void *m, size_t len, double score)
{
    dentry_t *e = dict_find(z, m, len);
    if (e) {
        if (e->node->score != score)
            e->node = zsl_update_score(z, e->node->score, e->key, score);
        return 0;
    }
    char *ele = sds_new(m, len);
    if (!ele)
        return -1;
    z->mem += usable(sds_alloc_ptr(ele));
    znode_t *n = zsl_insert(z, score, ele);
    if (!n || dict_add(z, ele, n) < 0)
        return -1;
    return 1;
}

size_t zset_trim(zset_t *z, size_t keep)
{
    size_t dropped = 0;
    znode_t *update[ZSKIPLIST_MAXLEVEL];
    while (z->length > keep) {
        /* rank 0 is the first node: every level's predecessor is the header */
        for (int i = 0; i < z->level; i++)
            update[i] = z->header;
        znode_t *x = z->header->level[0].forward;
        zsl_delete_node(z, x, update);
        dict_delete(z, x->ele);
        z->mem -= usable(sds_alloc_ptr(x->ele));
        sds_free(x->ele);
        node_free(z, x);
        dropped++;
    }
    return dropped;
}

size_t zset_card(const zset_t *z) { return z->length; }

size_t zset_revrange(const zset_t *z, size_t start, size_t count, zset_entry_t *out)
{
    znode_t *x = z->tail;
    if (start) {
        /* by rank from the top, as zslGetElementByRank does */
        if (start >= z->length)
            return 0;
        unsigned long want = z->length - start, traversed = 0;
        x = z->header;
        for (int i = z->level - 1; i >= 0; i--) {
            while (x->level[i].forward && traversed + x->level[i].span <= want) {
                traversed += x->level[i].span;
                x = x->level[i].forward;
            }
        }
    }
    size_t n = 0;
    for (; x && n < count; x = x->backward) {
        out[n].member = x->ele;
        out[n].len = sds_len(x->ele);
        out[n].score = x->score;
        n++;
    }
    return n;
}

zset_t *zset_union_max(const zset_t *a, const zset_t *b)
{
    zset_t *d = zset_new();
    if (!d)
        return NULL;
    const zset_t *src[2] = {a, b};
    for (int k = 0; k < 2; k++) {
        for (znode_t *x = src[k]->header->level[0].forward; x; x = x->level[0].forward) {
            size_t len = sds_len(x->ele);
            dentry_t *e = dict_find(d, x->ele, len);
            if (e && e->node->score >= x->score)
                continue;
            if (zset_add(d, x->ele, len, x->score) < 0) {
                zset_free(d);
                return NULL;
            }
        }
    }
    return d;
}

size_t zset_memory(const zset_t *z) { return z->mem; }

static size_t varint_len(uint64_t v)
{
    size_t n = 1;
    while (v >= 0x80) {
        v >>= 7;
        n++;
    }
    return n;
}

static size_t put_varint(uint8_t *p, uint64_t v)
{
    size_t n = 0;
    while (v >= 0x80) {
        p[n++] = (uint8_t)(v | 0x80);
        v >>= 7;
    }
    p[n++] = (uint8_t)v;
    return n;
}

size_t zset_dump_size(const zset_t *z)
{
    size_t n = varint_len(z->length);
    for (znode_t *x = z->tail; x; x = x->backward) {
        size_t len = sds_len(x->ele);
        n += varint_len(len) + len + 8;
    }
    return n;
}

size_t zset_dump(const zset_t *z, uint8_t *out)
{
    size_t o = put_varint(out, z->length);
    for (znode_t *x = z->tail; x; x = x->backward) {
        size_t len = sds_len(x->ele);
        o += put_varint(out + o, len);
        memcpy(out + o, x->ele, len);
        o += len;
        memcpy(out + o, &x->score, 8);
        o += 8;
    }
    return o;
}

static int get_varint(const uint8_t *p, size_t n, size_t *pos, uint64_t *v)
{
    uint64_t x = 0;
    for (unsigned shift = 0; shift < 64; shift += 7) {
        if (*pos >= n)
            return -1;
        uint8_t b = p[(*pos)++];
        x |= (uint64_t)(b & 0x7F) << shift;
        if (!(b & 0x80)) {
            *v = x;
            return 0;
        }
    }
    return -1;
}

zset_t *zset_load(const uint8_t *p, size_t n)
{
    size_t pos = 0;
    uint64_t count, len;
    if (get_varint(p, n, &pos, &count) < 0)
        return NULL;
    zset_t *z = zset_new();
    for (uint64_t i = 0; z && i < count; i++) {
        double score;
        if (get_varint(p, n, &pos, &len) < 0 || len > n - pos || n - pos - len < 8) {
            zset_free(z);
            return NULL;
        }
        memcpy(&score, p + pos + len, 8);
        if (zset_add(z, p + pos, len, score) < 0) {
            zset_free(z);
            return NULL;
        }
        pos += len + 8;
    }
    return z;
}
