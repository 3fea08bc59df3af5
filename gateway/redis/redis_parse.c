/* redis_parse.c - URL, CLUSTER SLOTS, redirects, INFO fields and change-log replies */
#include "redis_parse.h"

#include <math.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "crdt_reconcile.h"
#include "logpos.h"

/* ---- the reply arena ------------------------------------------------------------------------ */

#define ARENA_CHUNK 16384     /* the first chunk; each further one of a reply twice the last */
#define ARENA_KEEP (1u << 20) /* a chunk up to this size stays for the next reply */

typedef struct arena_chunk {
    struct arena_chunk *next; /* the older chunks of the reply being read */
    size_t cap, used;
    _Alignas(max_align_t) unsigned char data[];
} arena_chunk_t;

struct sr_reply_arena {
    arena_chunk_t *cur;
    uint64_t elements; /* declared so far by the reply being read */
    unsigned roots;    /* replies made and not freed yet (one at a time, as hiredis reads) */
    bool released;     /* the owner let go: the last root's free frees the arena */
};

/* A reply's root carries its arena: freeObject gets only the reply. */
typedef struct root_head {
    sr_reply_arena_t *a;
    redisReply r;
} root_head_t;

static void *arena_alloc(sr_reply_arena_t *a, size_t n)
{
    if (n > SIZE_MAX / 4)
        return NULL;
    n = (n + 15) & ~(size_t)15;
    arena_chunk_t *c = a->cur;
    if (!c || c->cap - c->used < n) {
        size_t cap = c ? c->cap * 2 : ARENA_CHUNK;
        while (cap < n)
            cap *= 2;
        arena_chunk_t *nc = malloc(sizeof(*nc) + cap);
        if (!nc)
            return NULL;
        *nc = (arena_chunk_t){.next = c, .cap = cap, .used = 0};
        a->cur = c = nc;
    }
    void *p = c->data + c->used;
    c->used += n;
    return p;
}

/* Every reply freed: the newest chunk (the largest) stays unless it is huge. */
static void arena_reset(sr_reply_arena_t *a)
{
    arena_chunk_t *c = a->cur;
    if (!c)
        return;
    for (arena_chunk_t *o = c->next, *nx; o; o = nx) {
        nx = o->next;
        free(o);
    }
    c->next = NULL;
    c->used = 0;
    if (c->cap > ARENA_KEEP) {
        free(c);
        a->cur = NULL;
    }
}

static void arena_free(sr_reply_arena_t *a)
{
    arena_reset(a);
    free(a->cur);
    free(a);
}

static redisReply *arena_reply(const redisReadTask *task)
{
    sr_reply_arena_t *a = task->privdata;
    if (!a)
        return NULL;
    redisReply *r;
    if (!task->parent) {
        root_head_t *h = arena_alloc(a, sizeof(*h));
        if (!h)
            return NULL;
        h->a = a;
        r = &h->r;
        a->roots++;
    } else {
        redisReply *p = task->parent->obj;
        if (!p || p->type != REDIS_REPLY_ARRAY || task->idx < 0 ||
            (size_t)task->idx >= p->elements || !(r = arena_alloc(a, sizeof(*r))))
            return NULL;
        p->element[task->idx] = r;
    }
    memset(r, 0, sizeof(*r));
    r->type = task->type;
    return r;
}

/* A root made but not handed to hiredis (a later allocation of it failed): hiredis will not free
 * it, so it is not counted. */
static void *root_failed(const redisReadTask *task)
{
    sr_reply_arena_t *a = task->privdata;
    if (!task->parent && a->roots)
        a->roots--;
    return NULL;
}

static void *arena_string(const redisReadTask *task, char *str, size_t len)
{
    sr_reply_arena_t *a = task->privdata;
    redisReply *r = arena_reply(task);
    if (!r)
        return NULL;
    if (!(r->str = arena_alloc(a, len + 1)))
        return root_failed(task);
    memcpy(r->str, str, len);
    r->str[len] = '\0';
    r->len = len;
    return r;
}

static void *arena_array(const redisReadTask *task, int elements)
{
    sr_reply_arena_t *a = task->privdata;
    if (!a || elements < 0)
        return NULL;
    if (!task->parent)
        a->elements = 0; /* a new reply */
    a->elements += (uint64_t)elements;
    if (a->elements > SR_REPLY_ELEMENTS_MAX)
        return NULL;
    redisReply *r = arena_reply(task);
    if (!r)
        return NULL;
    if (elements > 0) {
        size_t n = (size_t)elements * sizeof(*r->element);
        if (!(r->element = arena_alloc(a, n)))
            return root_failed(task);
        memset(r->element, 0, n);
    }
    r->elements = (size_t)elements;
    return r;
}

static void *arena_integer(const redisReadTask *task, long long value)
{
    redisReply *r = arena_reply(task);
    if (r)
        r->integer = value;
    return r;
}

static void *arena_nil(const redisReadTask *task)
{
    redisReply *r = arena_reply(task); /* task->type is the bulk's or the array's */
    if (r)
        r->type = REDIS_REPLY_NIL;
    return r;
}

static void arena_free_reply(void *reply)
{
    if (!reply)
        return;
    root_head_t *h = (root_head_t *)((char *)reply - offsetof(root_head_t, r));
    sr_reply_arena_t *a = h->a;
    if (a->roots && --a->roots)
        return;
    if (a->released)
        arena_free(a);
    else
        arena_reset(a);
}

static redisReplyObjectFunctions arena_fns = {arena_string, arena_array, arena_integer, arena_nil,
                                              arena_free_reply};

sr_reply_arena_t *sr_reader_arena(redisReader *r)
{
    sr_reply_arena_t *a = r ? calloc(1, sizeof(*a)) : NULL;
    if (!a)
        return NULL;
    r->privdata = a;
    r->fn = &arena_fns;
    return a;
}

void sr_reader_arena_release(sr_reply_arena_t *a)
{
    if (!a)
        return;
    if (a->roots)
        a->released = true;
    else
        arena_free(a);
}

static int fail(char *why, size_t whylen, const char *msg)
{
    if (why && whylen)
        snprintf(why, whylen, "%s", msg);
    return -1;
}

/* A decimal port 1..65535 in s[0..n). */
static int parse_port(const char *s, size_t n)
{
    if (n == 0 || n > 5)
        return -1;
    int v = 0;
    for (size_t i = 0; i < n; i++) {
        if (s[i] < '0' || s[i] > '9')
            return -1;
        v = v * 10 + (s[i] - '0');
    }
    return v >= 1 && v <= 65535 ? v : -1;
}

static bool host_ok(const char *s, size_t n)
{
    if (n == 0 || n >= SR_HOST_MAX)
        return false;
    for (size_t i = 0; i < n; i++) {
        char c = s[i];
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
              c == '.' || c == '-' || c == '_'))
            return false;
    }
    return true;
}

/* "host:port" in s[0..n) into *a. */
static bool parse_hostport(const char *s, size_t n, sr_addr_t *a)
{
    const char *colon = NULL;
    for (size_t i = 0; i < n; i++)
        if (s[i] == ':')
            colon = s + i;
    if (!colon)
        return false;
    size_t hl = (size_t)(colon - s);
    int port = parse_port(colon + 1, n - hl - 1);
    if (!host_ok(s, hl) || port < 0)
        return false;
    memcpy(a->host, s, hl);
    a->host[hl] = '\0';
    a->port = port;
    return true;
}

int sr_parse_url(const char *url, sr_addr_t *out, int cap, char *why, size_t whylen)
{
    static const char scheme[] = "redis://";
    if (!url || strncmp(url, scheme, sizeof(scheme) - 1) != 0)
        return fail(why, whylen, "a Redis store URL starts with redis:// (redis://host:port)");
    const char *p = url + sizeof(scheme) - 1;
    int n = 0;
    while (*p) {
        const char *e = strchr(p, ',');
        size_t len = e ? (size_t)(e - p) : strlen(p);
        if (n == cap)
            return fail(why, whylen, "too many seed addresses in the Redis URL");
        if (!parse_hostport(p, len, &out[n])) {
            if (why && whylen)
                snprintf(why, whylen, "bad address \"%.*s\" in the Redis URL (host:port)",
                         (int)(len > 80 ? 80 : len), p);
            return -1;
        }
        n++;
        if (!e)
            break;
        p = e + 1;
        if (!*p)
            return fail(why, whylen, "the Redis URL ends with a comma");
    }
    if (n == 0)
        return fail(why, whylen, "no address in the Redis URL (redis://host:port)");
    return n;
}

static bool is_int(const redisReply *r, long long lo, long long hi)
{
    return r && r->type == REDIS_REPLY_INTEGER && r->integer >= lo && r->integer <= hi;
}

static bool is_str(const redisReply *r)
{
    return r && (r->type == REDIS_REPLY_STRING || r->type == REDIS_REPLY_STATUS) &&
           (r->str || r->len == 0);
}

int sr_parse_slots(const redisReply *r, const char *fallback_host, sr_range_t *out, int cap,
                   char *why, size_t whylen)
{
    if (!r || r->type != REDIS_REPLY_ARRAY)
        return fail(why, whylen, "CLUSTER SLOTS did not answer an array");
    if (r->elements == 0)
        return fail(why, whylen, "CLUSTER SLOTS lists no slot (cluster not set up yet?)");
    int n = 0;
    for (size_t i = 0; i < r->elements; i++) {
        const redisReply *e = r->element ? r->element[i] : NULL;
        if (!e || e->type != REDIS_REPLY_ARRAY || e->elements < 3 || !e->element ||
            !is_int(e->element[0], 0, 16383) || !is_int(e->element[1], 0, 16383) ||
            e->element[0]->integer > e->element[1]->integer)
            return fail(why, whylen, "CLUSTER SLOTS: an entry is not [start, end, node...]");
        const redisReply *nd = e->element[2];
        if (!nd || nd->type != REDIS_REPLY_ARRAY || nd->elements < 2 || !nd->element ||
            !is_str(nd->element[0]) || !is_int(nd->element[1], 1, 65535))
            return fail(why, whylen, "CLUSTER SLOTS: a node is not [host, port, ...]");
        if (n == cap)
            return fail(why, whylen, "CLUSTER SLOTS: too many ranges");
        sr_range_t *o = &out[n];
        const char *h = nd->element[0]->str;
        size_t hl = nd->element[0]->len;
        if (hl == 0 || (hl == 1 && h[0] == '?')) {
            h = fallback_host ? fallback_host : "";
            hl = strlen(h);
        }
        if (!host_ok(h, hl))
            return fail(why, whylen, "CLUSTER SLOTS: a node's host is not a host name");
        memcpy(o->addr.host, h, hl);
        o->addr.host[hl] = '\0';
        o->addr.port = (int)nd->element[1]->integer;
        o->lo = (unsigned)e->element[0]->integer;
        o->hi = (unsigned)e->element[1]->integer;
        n++;
    }
    return n;
}

int sr_parse_redirect(const char *s, size_t len, bool *ask, unsigned *slot, sr_addr_t *to)
{
    size_t skip;
    if (len >= 6 && memcmp(s, "MOVED ", 6) == 0) {
        *ask = false;
        skip = 6;
    } else if (len >= 4 && memcmp(s, "ASK ", 4) == 0) {
        *ask = true;
        skip = 4;
    } else {
        return 0;
    }
    size_t i = skip;
    unsigned v = 0;
    size_t digits = 0;
    while (i < len && s[i] >= '0' && s[i] <= '9' && digits < 6) {
        v = v * 10 + (unsigned)(s[i] - '0');
        i++;
        digits++;
    }
    if (digits == 0 || v > 16383 || i >= len || s[i] != ' ')
        return -1;
    *slot = v;
    i++;
    size_t end = len;
    while (end > i && (s[end - 1] == '\r' || s[end - 1] == '\n' || s[end - 1] == ' '))
        end--;
    if (!parse_hostport(s + i, end - i, to))
        return -1;
    return 1;
}

bool sr_info_field(const redisReply *r, const char *name, char *out, size_t cap)
{
    if (!is_str(r) || !r->str || cap == 0)
        return false;
    size_t nl = strlen(name);
    const char *p = r->str, *end = r->str + r->len;
    while (p < end) {
        const char *eol = memchr(p, '\n', (size_t)(end - p));
        const char *le = eol ? eol : end;
        if ((size_t)(le - p) > nl && memcmp(p, name, nl) == 0 && p[nl] == ':') {
            const char *v = p + nl + 1;
            size_t vl = (size_t)(le - v);
            if (vl && v[vl - 1] == '\r')
                vl--;
            if (vl >= cap)
                vl = cap - 1;
            memcpy(out, v, vl);
            out[vl] = '\0';
            return true;
        }
        p = le + 1;
    }
    return false;
}

int sr_parse_log_read(const redisReply *r, char *pos, size_t cap, bool *truncated, size_t *n,
                      char *why, size_t whylen)
{
    if (!r || r->type != REDIS_REPLY_ARRAY || r->elements != 3 || !r->element)
        return fail(why, whylen, "CRDT.LOG.READ did not answer [position, status, entries]");
    const redisReply *p = r->element[0], *s = r->element[1], *e = r->element[2];
    if (!is_str(p) || p->len == 0 || p->len >= cap)
        return fail(why, whylen, "CRDT.LOG.READ: the position is not a string");
    /* the store sends the position back and saves it: "0", "$" or EPOCH:MS-SEQ:OFFSET only (a
     * NUL inside would cut it short, anything else would make every later read fail) */
    crdtm_pos_t pp;
    const char *pwhy = NULL;
    if (crdtm_pos_parse(p->str, p->len, &pp, &pwhy) < 0)
        return fail(why, whylen, "CRDT.LOG.READ: the position is not a log position");
    if (!is_str(s) || !s->str)
        return fail(why, whylen, "CRDT.LOG.READ: the status is not a string");
    if (s->len == 2 && memcmp(s->str, "ok", 2) == 0)
        *truncated = false;
    else if (s->len == 9 && memcmp(s->str, "truncated", 9) == 0)
        *truncated = true;
    else
        return fail(why, whylen, "CRDT.LOG.READ: the status is neither ok nor truncated");
    if (!e || e->type != REDIS_REPLY_ARRAY || (e->elements && !e->element))
        return fail(why, whylen, "CRDT.LOG.READ: the entries are not an array");
    memcpy(pos, p->str, p->len);
    pos[p->len] = '\0';
    *n = e->elements;
    return 0;
}

bool sr_log_entry(const redisReply *r, size_t i, sr_log_entry_t *out)
{
    const redisReply *list = r->element[2];
    if (i >= list->elements)
        return false;
    const redisReply *e = list->element[i];
    if (!e || e->type != REDIS_REPLY_ARRAY || (e->elements != 3 && e->elements != 4) ||
        !e->element || !is_str(e->element[1]) || !is_str(e->element[2]) || !e->element[1]->str ||
        !e->element[2]->str)
        return false;
    out->origin = 0;
    if (e->elements == 4) {
        /* the origin crdt.so recorded for a change applied with CRDT.MERGE ... ORIGIN id */
        const redisReply *o = e->element[3];
        if (!o || o->type != REDIS_REPLY_INTEGER || o->integer <= 0)
            return false;
        out->origin = (uint64_t)o->integer;
    }
    out->key = e->element[1]->str;
    out->klen = e->element[1]->len;
    out->delta = e->element[2]->str;
    out->dlen = e->element[2]->len;
    return true;
}

/* ---- CRDT.LOG.POLL, CRDT.RSX.*, CRDT.TYPE, SCAN ---------------------------------------------- */

/* ids of anti-entropy items live in [0, CRDT_RSX_ID_SPACE) */
#define SR_RSX_ID_SPACE CRDT_RSX_ID_SPACE

static bool is_arr(const redisReply *r, size_t n)
{
    return r && r->type == REDIS_REPLY_ARRAY && r->elements == n && (n == 0 || r->element);
}

static bool is_bulk(const redisReply *r)
{
    return r && r->type == REDIS_REPLY_STRING && (r->str || r->len == 0);
}

static bool is_any_int(const redisReply *r)
{
    return r && r->type == REDIS_REPLY_INTEGER;
}

static const redisReply *elem(const redisReply *r, size_t i)
{
    return r && r->type == REDIS_REPLY_ARRAY && r->element && i < r->elements ? r->element[i]
                                                                              : NULL;
}

int sr_parse_log_poll(const redisReply *r, bool *more, size_t *n, char *why, size_t whylen)
{
    if (!r || r->type != REDIS_REPLY_ARRAY || r->elements < 1 || !r->element ||
        !is_any_int(r->element[r->elements - 1]))
        return fail(why, whylen, "CRDT.LOG.POLL did not answer [[log, read]..., more]");
    *more = r->element[r->elements - 1]->integer != 0;
    *n = r->elements - 1;
    return 0;
}

bool sr_log_poll_item(const redisReply *r, size_t i, const char **name, size_t *nlen,
                      const redisReply **read)
{
    if (!r || r->type != REDIS_REPLY_ARRAY || i + 1 >= r->elements)
        return false;
    const redisReply *e = elem(r, i);
    if (!is_arr(e, 2) || !is_bulk(e->element[0]))
        return false;
    *name = e->element[0]->str ? e->element[0]->str : "";
    *nlen = e->element[0]->len;
    *read = e->element[1];
    return true;
}

int sr_parse_rsx_open(const redisReply *r, char *sid, size_t sidcap, const char **msg, size_t *mlen,
                      char *why, size_t whylen)
{
    if (!is_arr(r, 2) || !is_bulk(r->element[0]) || r->element[0]->len == 0 ||
        r->element[0]->len >= sidcap || !is_bulk(r->element[1]))
        return fail(why, whylen, "CRDT.RSX.OPEN: unexpected reply");
    /* the id goes back as a C string in RECV / DIFFS / CLOSE: a NUL inside would name another */
    if (memchr(r->element[0]->str, '\0', r->element[0]->len))
        return fail(why, whylen, "CRDT.RSX.OPEN: the session id has a NUL byte");
    memcpy(sid, r->element[0]->str, r->element[0]->len);
    sid[r->element[0]->len] = '\0';
    *msg = r->element[1]->str ? r->element[1]->str : "";
    *mlen = r->element[1]->len;
    return 0;
}

int sr_parse_rsx_recv(const redisReply *r, const char **msg, size_t *mlen, bool *finished,
                      char *why, size_t whylen)
{
    if (!is_arr(r, 2) || !is_bulk(r->element[0]) || !is_any_int(r->element[1]))
        return fail(why, whylen, "CRDT.RSX.RECV: unexpected reply");
    *msg = r->element[0]->str ? r->element[0]->str : "";
    *mlen = r->element[0]->len;
    *finished = r->element[1]->integer != 0;
    return 0;
}

int sr_parse_rsx_diffs(const redisReply *r, size_t *n, char *why, size_t whylen)
{
    if (!r || r->type != REDIS_REPLY_ARRAY || (r->elements && !r->element))
        return fail(why, whylen, "CRDT.RSX.DIFFS: unexpected reply");
    *n = r->elements;
    return 0;
}

bool sr_rsx_diff_row(const redisReply *r, size_t i, sr_rsx_diff_t *out)
{
    const redisReply *e = elem(r, i);
    if (!is_arr(e, 3) || !is_int(e->element[1], 1, 3) || !is_any_int(e->element[2]) ||
        e->element[2]->integer < 0 || (uint64_t)e->element[2]->integer >= SR_RSX_ID_SPACE)
        return false;
    out->id = (uint64_t)e->element[2]->integer;
    out->state = (unsigned)e->element[1]->integer;
    const redisReply *nm = e->element[0];
    out->name = is_bulk(nm) ? (nm->str ? nm->str : "") : NULL;
    out->nlen = out->name ? nm->len : 0;
    return true;
}

int sr_parse_rsx_items(const redisReply *r, size_t *n, char *why, size_t whylen)
{
    if (!r || r->type != REDIS_REPLY_ARRAY || (r->elements && !r->element))
        return fail(why, whylen, "CRDT.RSX.ITEMS: unexpected reply");
    *n = r->elements;
    return 0;
}

bool sr_rsx_item(const redisReply *r, size_t i, sr_rsx_item_t *out)
{
    const redisReply *e = elem(r, i);
    if (!is_arr(e, 3) || !is_bulk(e->element[0]) || !is_any_int(e->element[1]) ||
        e->element[1]->integer < 0 || (uint64_t)e->element[1]->integer >= SR_RSX_ID_SPACE ||
        !is_any_int(e->element[2]))
        return false;
    out->name = e->element[0]->str ? e->element[0]->str : "";
    out->nlen = e->element[0]->len;
    out->id = (uint64_t)e->element[1]->integer;
    out->fp = (uint64_t)e->element[2]->integer;
    return true;
}

bool sr_parse_rsx_digest(const redisReply *r, uint64_t *items)
{
    if (!is_arr(r, 4) || !is_any_int(r->element[0]) || r->element[0]->integer < 0)
        return false;
    *items = (uint64_t)r->element[0]->integer;
    return true;
}

int sr_parse_type(const redisReply *r, crdt_type_t *type, char *why, size_t whylen)
{
    *type = 0;
    if (!is_str(r) || !r->str)
        return fail(why, whylen, "CRDT.TYPE did not answer a type name");
    /* a name with a NUL inside is not a name (strcmp would see only its start) */
    if (strlen(r->str) != r->len)
        return fail(why, whylen, "CRDT.TYPE answered a name with a NUL byte");
    if (strcmp(r->str, "none") == 0)
        return 0;
    if (crdt_type_from_name(r->str, type) < 0) {
        *type = 0;
        return fail(why, whylen, "CRDT.TYPE answered an unknown type");
    }
    return 0;
}

int sr_parse_scan(const redisReply *r, unsigned cursor_bits, uint64_t *cursor,
                  const redisReply **keys, char *why, size_t whylen)
{
    if (!is_arr(r, 2) || !is_bulk(r->element[0]) || !r->element[1] ||
        r->element[1]->type != REDIS_REPLY_ARRAY ||
        (r->element[1]->elements && !r->element[1]->element))
        return fail(why, whylen, "SCAN did not answer [cursor, [keys...]]");
    const redisReply *c = r->element[0];
    /* decimal digits only: strtoull would take "", " 7", "+7" and "-1" */
    if (c->len == 0 || c->len > 20 || cursor_bits == 0 || cursor_bits > 64)
        return fail(why, whylen, "SCAN: the cursor is not a number");
    uint64_t v = 0;
    for (size_t i = 0; i < c->len; i++) {
        if (c->str[i] < '0' || c->str[i] > '9')
            return fail(why, whylen, "SCAN: the cursor is not a number");
        uint64_t d = (uint64_t)(c->str[i] - '0');
        if (v > (UINT64_MAX - d) / 10)
            return fail(why, whylen, "SCAN: the cursor is out of range");
        v = v * 10 + d;
    }
    if (cursor_bits < 64 && v >> cursor_bits)
        return fail(why, whylen, "SCAN: the cursor is out of range");
    *cursor = v;
    *keys = r->element[1];
    return 0;
}

int sr_parse_tlm(const redisReply *r, size_t n, uint8_t *changed, char *why, size_t whylen)
{
    if (!is_arr(r, n))
        return fail(why, whylen, "CRDT.TLMADD did not answer one integer per triple");
    for (size_t i = 0; i < n; i++) {
        if (!is_int(r->element[i], 0, 1))
            return fail(why, whylen, "CRDT.TLMADD answered a count other than 0 or 1");
        changed[i] = (uint8_t)r->element[i]->integer;
    }
    return 0;
}

bool sr_parse_score(const char *s, size_t len, double *out)
{
    char buf[64];
    if (!s || len == 0 || len >= sizeof(buf))
        return false;
    memcpy(buf, s, len);
    buf[len] = '\0';
    const char *digits = buf + (buf[0] == '-' || buf[0] == '+');
    if (strcasecmp(digits, "inf") != 0) {
        /* strtod also reads hex, "nan" and "infinity": Redis writes none of them */
        if (strspn(buf, "0123456789+-.eE") != len)
            return false;
    }
    char *end;
    double d = strtod(buf, &end);
    if (end != buf + len || isnan(d))
        return false;
    *out = d;
    return true;
}

int sr_parse_tl_entries(const redisReply *r, crdt_tl_entry_t *out, size_t cap, size_t *n, char *why,
                        size_t whylen)
{
    *n = 0;
    if (!r || r->type != REDIS_REPLY_ARRAY || (r->elements && !r->element))
        return fail(why, whylen, "CRDT.TLRANGE did not answer an array");
    if (r->elements % 2)
        return fail(why, whylen, "CRDT.TLRANGE answered a member without its score");
    if (r->elements / 2 > cap)
        return fail(why, whylen, "CRDT.TLRANGE answered more entries than asked for");
    for (size_t i = 0; i < r->elements / 2; i++) {
        const redisReply *m = r->element[2 * i], *sc = r->element[2 * i + 1];
        if (!is_bulk(m))
            return fail(why, whylen, "CRDT.TLRANGE answered a member that is not a string");
        double d;
        if (!is_bulk(sc) || !sr_parse_score(sc->str, sc->len, &d))
            return fail(why, whylen, "CRDT.TLRANGE answered a score that is not a number");
        out[i] = (crdt_tl_entry_t){m->len ? m->str : "", m->len, d};
    }
    *n = r->elements / 2;
    return 0;
}

bool sr_parse_tlm_wrongtype(const char *s, size_t len, size_t n, size_t *pos, crdt_type_t *type)
{
    static const char head[] = "WRONGTYPE key ", holds[] = " holds a";
    *pos = 0;
    *type = 0;
    if (!s || len < sizeof(head) - 1 || memcmp(s, head, sizeof(head) - 1) != 0)
        return false;
    size_t i = sizeof(head) - 1, v = 0, digits = 0;
    for (; i < len && s[i] >= '0' && s[i] <= '9' && digits < 19; i++, digits++)
        v = v * 10 + (size_t)(s[i] - '0');
    if (digits == 0 || v == 0 || v > n || i == len || s[i] != ' ')
        return false;
    /* " (argument A) holds a T, not a timeline": T is the first word after " holds a" */
    const char *h = NULL;
    for (size_t k = i; k + sizeof(holds) - 1 <= len && !h; k++)
        if (memcmp(s + k, holds, sizeof(holds) - 1) == 0)
            h = s + k + sizeof(holds) - 1;
    if (!h)
        return false;
    const char *end = s + len;
    if (h < end && *h == 'n')
        h++; /* "an" */
    if (h == end || *h != ' ')
        return false;
    h++;
    char name[16];
    size_t nl = 0;
    while (h < end && *h != ',' && *h != ' ' && nl < sizeof(name) - 1)
        name[nl++] = *h++;
    name[nl] = '\0';
    crdt_type_t t;
    if (nl && (h == end || *h == ',') && crdt_type_from_name(name, &t) == 0)
        *type = t; /* else not a CRDT: "a Redis string", "another module's type" */
    *pos = v - 1;
    return true;
}
