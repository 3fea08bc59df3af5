/* core.c - object dispatch, the binary frame, buffers, CRC-32C and the op codec */
#include <stdio.h>
#include <stdlib.h>

#include "crdt_private.h"

static const crdt__vtable_t *const vtables[] = {
    [CRDT_GCOUNTER] = &crdt__gcounter_vt, [CRDT_PNCOUNTER] = &crdt__pncounter_vt,
    [CRDT_LWWREG] = &crdt__lwwreg_vt,     [CRDT_LWWSET] = &crdt__lwwset_vt,
    [CRDT_ORSET] = &crdt__orset_vt,       [CRDT_TIMELINE] = &crdt__timeline_vt,
};

const crdt__vtable_t *crdt__vtable_of(int type)
{
    if (type < CRDT_TYPE_MIN || type > CRDT_TYPE_MAX)
        return NULL;
    return vtables[type];
}

const char *crdt_strerror(int err)
{
    switch (err) {
    case CRDT_OK: return "success";
    case CRDT_ENOMEM: return "out of memory";
    case CRDT_EINVAL: return "invalid argument";
    case CRDT_ETYPE: return "wrong type for this operation";
    case CRDT_EOVERFLOW: return "counter overflow";
    case CRDT_EDECODE: return "malformed encoding";
    case CRDT_ECLOCK: return "remote clock too far ahead";
    case CRDT_ELIMIT: return "limit exceeded";
    case CRDT_EUNAVAIL: return "store unavailable";
    case CRDT_ENOTSUP: return "not supported by this type (a gcounter cannot be deleted)";
    case CRDT_EIO: return "storage failure: writes are refused until restart";
    default: return "unknown error";
    }
}

/* ---- the heap ------------------------------------------------------------------------------- */

crdt_allocator_t crdt__alloc = {malloc, realloc, free};

void crdt_set_allocator(const crdt_allocator_t *a)
{
    if (a && a->malloc && a->realloc && a->free)
        crdt__alloc = *a;
    else
        crdt__alloc = (crdt_allocator_t){malloc, realloc, free};
}

void crdt_free(void *p)
{
    crdt__free(p);
}

void *crdt__calloc(size_t n, size_t size)
{
    if (size && n > SIZE_MAX / size)
        return NULL;
    size_t bytes = n * size;
    void *p = crdt__malloc(bytes ? bytes : 1);
    if (p)
        memset(p, 0, bytes);
    return p;
}

const char *crdt_type_name(crdt_type_t t)
{
    const crdt__vtable_t *vt = crdt__vtable_of((int)t);
    return vt ? vt->name : NULL;
}

int crdt_type_from_name(const char *name, crdt_type_t *out)
{
    for (int t = CRDT_TYPE_MIN; name && t <= CRDT_TYPE_MAX; t++) {
        if (strcmp(vtables[t]->name, name) == 0) {
            *out = (crdt_type_t)t;
            return 0;
        }
    }
    return CRDT_EINVAL;
}

/* ---- objects -------------------------------------------------------------------------------- */

crdt_obj_t *crdt_obj_new(crdt_type_t type)
{
    const crdt__vtable_t *vt = crdt__vtable_of((int)type);
    return vt ? vt->create() : NULL;
}

void crdt_obj_free(crdt_obj_t *o)
{
    if (o)
        o->vt->destroy(o);
}

crdt_obj_t *crdt_obj_clone(const crdt_obj_t *o) { return o->vt->clone(o); }

crdt_type_t crdt_obj_type(const crdt_obj_t *o) { return o->vt->type; }

int crdt_obj_merge(crdt_obj_t *dst, const crdt_obj_t *src)
{
    if (dst->vt != src->vt)
        return CRDT_ETYPE;
    if (dst == src)
        return 0;
    return dst->vt->merge(dst, src);
}

bool crdt_obj_equal(const crdt_obj_t *a, const crdt_obj_t *b)
{
    return a->vt == b->vt && a->vt->equal(a, b);
}

bool crdt_obj_is_empty(const crdt_obj_t *o) { return o->vt->is_empty(o); }

bool crdt_obj_is_live(const crdt_obj_t *o)
{
    if (!o)
        return false;
    int64_t v;
    switch (o->vt->type) {
    case CRDT_GCOUNTER:
    case CRDT_PNCOUNTER: return crdt_counter_value(o, &v) < 0 || v != 0;
    case CRDT_LWWREG: return crdt_lwwreg_get(o, NULL, NULL, NULL) == 1;
    case CRDT_LWWSET:
    case CRDT_ORSET: return crdt_set_size(o) > 0;
    case CRDT_TIMELINE: return crdt_timeline_card(o) > 0;
    }
    return false;
}

int crdt_obj_max_ts(const crdt_obj_t *o, crdt_hlc_ts_t *out)
{
    return o->vt->max_ts ? o->vt->max_ts(o, out) : 0;
}

void crdt_obj_stats(const crdt_obj_t *o, crdt_stats_t *st)
{
    memset(st, 0, sizeof(*st));
    o->vt->stats(o, st);
}

/* ---- buffers -------------------------------------------------------------------------------- */

size_t crdt__grow_cap(size_t cap, size_t need)
{
    size_t c = cap ? cap : 16;
    while (c < need) {
        if (c > SIZE_MAX / 2)
            return need;
        c *= 2;
    }
    return c;
}

int crdt_buf_reserve(crdt_buf_t *b, size_t extra)
{
    if (extra > SIZE_MAX - b->len)
        return CRDT_ENOMEM;
    size_t need = b->len + extra;
    if (need <= b->cap)
        return 0;
    size_t cap = crdt__grow_cap(b->cap, need);
    uint8_t *d = crdt__realloc(b->data, cap);
    if (!d)
        return CRDT_ENOMEM;
    b->data = d;
    b->cap = cap;
    return 0;
}

int crdt_buf_append(crdt_buf_t *b, const void *p, size_t n)
{
    if (crdt_buf_reserve(b, n) < 0)
        return CRDT_ENOMEM;
    if (n)
        memcpy(b->data + b->len, p, n);
    b->len += n;
    return 0;
}

void crdt_buf_free(crdt_buf_t *b)
{
    crdt__free(b->data);
    b->data = NULL;
    b->len = b->cap = 0;
}

/* ---- CRC-32C: the SSE4.2 instruction where the CPU has it, else slicing by 8 -------------- */

static uint32_t crc_table[8][256];
static int crc_ready; /* 0 unknown, 1 tables (software), 2 the CPU's crc32 instruction */

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#define CRC_HW 1
/* Every record of the log and every encoding is checksummed, so recovery spends much of its time
 * here: the instruction does 8 bytes in about a cycle's throughput, the tables about 2 cycles a
 * byte. Same polynomial (Castagnoli), same results. */
__attribute__((target("sse4.2"))) static uint32_t crc_hw(uint32_t crc, const uint8_t *p, size_t n)
{
    uint64_t c = crc;
    while (n >= 8) {
        uint64_t v;
        memcpy(&v, p, 8);
        c = __builtin_ia32_crc32di(c, v);
        p += 8;
        n -= 8;
    }
    uint32_t c32 = (uint32_t)c;
    if (n >= 4) {
        uint32_t v;
        memcpy(&v, p, 4);
        c32 = __builtin_ia32_crc32si(c32, v);
        p += 4;
        n -= 4;
    }
    while (n--)
        c32 = __builtin_ia32_crc32qi(c32, *p++);
    return c32;
}
#endif

static void crc_init(void)
{
    for (uint32_t i = 0; i < 256; i++) {
        uint32_t c = i;
        for (int k = 0; k < 8; k++)
            c = (c & 1) ? (c >> 1) ^ 0x82F63B78u : c >> 1;
        crc_table[0][i] = c;
    }
    for (uint32_t i = 0; i < 256; i++)
        for (int t = 1; t < 8; t++)
            crc_table[t][i] = (crc_table[t - 1][i] >> 8) ^ crc_table[0][crc_table[t - 1][i] & 0xFF];
    int mode = 1;
#ifdef CRC_HW
    __builtin_cpu_init();
    if (__builtin_cpu_supports("sse4.2"))
        mode = 2;
#endif
    /* The tables are a pure function of constants: a race here writes the same values twice. */
    __atomic_store_n(&crc_ready, mode, __ATOMIC_RELEASE);
}

/* The portable path; also what the hardware path is tested against. */
static uint32_t crc_sw(uint32_t crc, const uint8_t *p, size_t n)
{
    while (n >= 8) {
        uint32_t lo = (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 |
                      (uint32_t)p[3] << 24;
        lo ^= crc;
        crc = crc_table[7][lo & 0xFF] ^ crc_table[6][(lo >> 8) & 0xFF] ^
              crc_table[5][(lo >> 16) & 0xFF] ^ crc_table[4][lo >> 24] ^ crc_table[3][p[4]] ^
              crc_table[2][p[5]] ^ crc_table[1][p[6]] ^ crc_table[0][p[7]];
        p += 8;
        n -= 8;
    }
    while (n--)
        crc = (crc >> 8) ^ crc_table[0][(crc ^ *p++) & 0xFF];
    return crc;
}

uint32_t crdt_crc32c(uint32_t crc, const void *data, size_t n)
{
    int mode = __atomic_load_n(&crc_ready, __ATOMIC_ACQUIRE);
    if (!mode) {
        crc_init();
        mode = __atomic_load_n(&crc_ready, __ATOMIC_ACQUIRE);
    }
#ifdef CRC_HW
    if (mode == 2)
        return ~crc_hw(~crc, data, n);
#endif
    return ~crc_sw(~crc, data, n);
}

uint32_t crdt__crc32c_portable(uint32_t crc, const void *data, size_t n)
{
    if (!__atomic_load_n(&crc_ready, __ATOMIC_ACQUIRE))
        crc_init();
    return ~crc_sw(~crc, data, n);
}

/* ---- writer --------------------------------------------------------------------------------- */

void crdt__wr_raw(crdt__writer_t *w, const void *p, size_t n)
{
    if (!w->err && crdt_buf_append(w->b, p, n) < 0)
        w->err = CRDT_ENOMEM;
}

void crdt__wr_u8(crdt__writer_t *w, uint8_t v) { crdt__wr_raw(w, &v, 1); }

void crdt__wr_varint(crdt__writer_t *w, uint64_t v)
{
    uint8_t tmp[CRDT_VARINT_MAX];
    crdt__wr_raw(w, tmp, crdt_varint_put(tmp, v));
}

void crdt__wr_blob(crdt__writer_t *w, const void *p, size_t n)
{
    crdt__wr_varint(w, n);
    crdt__wr_raw(w, p, n);
}

void crdt__wr_double(crdt__writer_t *w, double d)
{
    uint64_t u;
    memcpy(&u, &d, 8);
    uint8_t tmp[8];
    for (int i = 0; i < 8; i++)
        tmp[i] = (uint8_t)(u >> (8 * i));
    crdt__wr_raw(w, tmp, 8);
}

void crdt__wr_hlc(crdt__writer_t *w, const crdt_hlc_ts_t *ts)
{
    crdt__wr_varint(w, ts->ms);
    crdt__wr_varint(w, ts->logical);
    crdt__wr_varint(w, ts->node);
}

/* ---- reader --------------------------------------------------------------------------------- */

static void set_error(crdt_error_t *err, int code, size_t offset, const char *fmt, va_list ap)
    __attribute__((format(printf, 4, 0)));
static void set_error(crdt_error_t *err, int code, size_t offset, const char *fmt, va_list ap)
{
    if (!err || err->code)
        return;
    err->code = code;
    err->offset = offset;
    vsnprintf(err->text, sizeof(err->text), fmt, ap);
}

int crdt__fail(crdt__reader_t *r, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    set_error(r->err, CRDT_EDECODE, r->base + r->pos, fmt, ap);
    va_end(ap);
    return CRDT_EDECODE;
}

static void set_error_fmt(crdt_error_t *err, int code, size_t offset, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
static void set_error_fmt(crdt_error_t *err, int code, size_t offset, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    set_error(err, code, offset, fmt, ap);
    va_end(ap);
}

int crdt__nomem(crdt__reader_t *r)
{
    set_error_fmt(r->err, CRDT_ENOMEM, r->base + r->pos, "out of memory");
    return CRDT_ENOMEM;
}

int crdt__rd_raw(crdt__reader_t *r, size_t n, const uint8_t **p)
{
    if (n > r->len - r->pos)
        return crdt__fail(r, "truncated: %zu bytes needed, %zu left", n, r->len - r->pos);
    *p = r->p + r->pos;
    r->pos += n;
    return 0;
}

int crdt__rd_u8(crdt__reader_t *r, uint8_t *v)
{
    const uint8_t *p;
    if (crdt__rd_raw(r, 1, &p) < 0)
        return CRDT_EDECODE;
    *v = *p;
    return 0;
}

int crdt__rd_varint(crdt__reader_t *r, uint64_t *v)
{
    int why = crdt_varint_scan(r->p, r->len, &r->pos, v);
    if (!why)
        return 0;
    /* the error's offset is the byte at fault, as the messages say */
    if (why == CRDT_VARINT_TRUNCATED) {
        r->pos = r->len;
        return crdt__fail(r, "truncated varint");
    }
    if (why == CRDT_VARINT_TOO_LONG) {
        r->pos += 9;
        return crdt__fail(r, "varint exceeds 64 bits");
    }
    do
        r->pos++;
    while (r->p[r->pos] != 0); /* scan found a zero group within the varint */
    return crdt__fail(r, "non-canonical varint");
}

int crdt__rd_count(crdt__reader_t *r, uint64_t max, const char *what, uint64_t *v)
{
    size_t at = r->pos;
    if (crdt__rd_varint(r, v) < 0)
        return CRDT_EDECODE;
    if (*v > max) {
        r->pos = at;
        return crdt__fail(r, "%s %llu out of range (max %llu)", what, (unsigned long long)*v,
                          (unsigned long long)max);
    }
    return 0;
}

int crdt__rd_blob(crdt__reader_t *r, const uint8_t **p, size_t *n)
{
    uint64_t len;
    if (crdt__rd_count(r, CRDT_MAX_BLOB, "length", &len) < 0)
        return CRDT_EDECODE;
    if (crdt__rd_raw(r, (size_t)len, p) < 0)
        return CRDT_EDECODE;
    *n = (size_t)len;
    return 0;
}

int crdt__rd_score(crdt__reader_t *r, double *d)
{
    const uint8_t *p;
    if (crdt__rd_raw(r, 8, &p) < 0)
        return CRDT_EDECODE;
    uint64_t u = 0;
    for (int i = 0; i < 8; i++)
        u |= (uint64_t)p[i] << (8 * i);
    double x;
    memcpy(&x, &u, 8);
    if (x != x || x - x != 0 || u == (1ull << 63)) {
        r->pos -= 8;
        return crdt__fail(r, "score is not a finite number");
    }
    *d = x;
    return 0;
}

int crdt__rd_hlc(crdt__reader_t *r, crdt_hlc_ts_t *ts)
{
    uint64_t logical;
    if (crdt__rd_varint(r, &ts->ms) < 0 ||
        crdt__rd_count(r, UINT32_MAX, "hlc logical", &logical) < 0 ||
        crdt__rd_count(r, CRDT_REPLICA_MAX, "hlc node", &ts->node) < 0)
        return CRDT_EDECODE;
    ts->logical = (uint32_t)logical;
    return 0;
}

int crdt__rd_end(crdt__reader_t *r)
{
    if (r->pos != r->len)
        return crdt__fail(r, "%zu unexpected trailing bytes", r->len - r->pos);
    return 0;
}

/* ---- the frame: version, type, varint payload length, payload, CRC-32C ---------------------- */

int crdt_obj_encode(const crdt_obj_t *o, crdt_buf_t *b)
{
    size_t start = b->len;
    /* The payload is written in place after one byte left for its length, and moved up in the
     * rare case (128 bytes or more) that the length needs more: no buffer of its own, which
     * cost an allocation and a copy per encoding (a log record per write). */
    if (crdt_buf_reserve(b, 3 + 16) < 0)
        return CRDT_ENOMEM;
    b->data[start] = CRDT_CODEC_VERSION;
    b->data[start + 1] = (uint8_t)o->vt->type;
    b->len = start + 3;
    crdt__writer_t w = {b, 0};
    o->vt->encode(o, &w);
    if (!w.err) {
        size_t plen = b->len - start - 3;
        uint8_t lv[CRDT_VARINT_MAX];
        size_t ln = crdt_varint_put(lv, plen);
        if (ln > 1 && crdt_buf_reserve(b, ln - 1) < 0) {
            w.err = CRDT_ENOMEM;
        } else {
            if (ln > 1) {
                memmove(b->data + start + 2 + ln, b->data + start + 3, plen);
                b->len += ln - 1;
            }
            memcpy(b->data + start + 2, lv, ln);
            uint32_t crc = crdt_crc32c(0, b->data + start, b->len - start);
            uint8_t c[4] = {(uint8_t)crc, (uint8_t)(crc >> 8), (uint8_t)(crc >> 16),
                            (uint8_t)(crc >> 24)};
            crdt__wr_raw(&w, c, 4);
        }
    }
    if (w.err) {
        b->len = start;
        return w.err;
    }
    return 0;
}

/* Decodes one frame at data[0..len) whose bytes start at `base` of the caller's input. */
int crdt__frame_open(const uint8_t *data, size_t len, size_t base, crdt_error_t *err,
                     const crdt__vtable_t **vtp, crdt__reader_t *pr)
{
    crdt__reader_t r = {data, len, 0, base, err};
    uint8_t version, type;
    uint64_t plen;
    const uint8_t *payload;
    if (len < 4 + 3)
        return crdt__fail(&r, "truncated: %zu bytes is shorter than any encoding", len);
    /* Check the CRC first: a corrupted byte anywhere is reported as such, not as a puzzling
     * field error later on. */
    const uint8_t *c = data + len - 4;
    uint32_t want = (uint32_t)c[0] | (uint32_t)c[1] << 8 | (uint32_t)c[2] << 16 |
                    (uint32_t)c[3] << 24;
    if (crdt_crc32c(0, data, len - 4) != want) {
        r.pos = len - 4;
        return crdt__fail(&r, "checksum mismatch (corrupted or truncated encoding)");
    }
    r.len = len - 4;
    /* the common frame (a payload under 128 bytes, a known type) without the general reader */
    const crdt__vtable_t *fast = data[0] == CRDT_CODEC_VERSION ? crdt__vtable_of(data[1]) : NULL;
    if (fast && data[2] < 0x80 && (size_t)data[2] == len - 4 - 3) {
        *vtp = fast;
        *pr = (crdt__reader_t){data + 3, data[2], 0, base + 3, err};
        return 0;
    }
    if (crdt__rd_u8(&r, &version) < 0)
        return CRDT_EDECODE;
    if (version != CRDT_CODEC_VERSION) {
        r.pos = 0;
        return crdt__fail(&r, "unsupported encoding version %u (this build reads %u)", version,
                          CRDT_CODEC_VERSION);
    }
    if (crdt__rd_u8(&r, &type) < 0)
        return CRDT_EDECODE;
    const crdt__vtable_t *vt = crdt__vtable_of(type);
    if (!vt) {
        r.pos = 1;
        return crdt__fail(&r, "unknown type tag %u", type);
    }
    if (crdt__rd_count(&r, r.len - r.pos, "payload length", &plen) < 0)
        return CRDT_EDECODE;
    if (plen != r.len - r.pos)
        return crdt__fail(&r, "payload length %llu does not match the %zu bytes present",
                          (unsigned long long)plen, r.len - r.pos);
    if (crdt__rd_raw(&r, (size_t)plen, &payload) < 0)
        return CRDT_EDECODE;
    *vtp = vt;
    *pr = (crdt__reader_t){payload, (size_t)plen, 0, base + (size_t)(payload - data), err};
    return 0;
}

crdt_obj_t *crdt__decode_payload(const crdt__vtable_t *vt, crdt__reader_t *pr)
{
    crdt_obj_t *o = vt->decode(pr);
    if (o && crdt__rd_end(pr) < 0) {
        crdt_obj_free(o);
        return NULL;
    }
    if (!o)
        crdt__fail(pr, "invalid %s payload", vt->name); /* no-op if the decoder said why */
    return o;
}

static crdt_obj_t *decode_frame(const uint8_t *data, size_t len, size_t base, crdt_error_t *err)
{
    const crdt__vtable_t *vt;
    crdt__reader_t pr;
    if (crdt__frame_open(data, len, base, err, &vt, &pr) < 0)
        return NULL;
    return crdt__decode_payload(vt, &pr);
}

crdt_obj_t *crdt_obj_decode(const void *data, size_t len, crdt_error_t *err)
{
    if (err)
        memset(err, 0, sizeof(*err));
    if (!data && len) {
        set_error_fmt(err, CRDT_EDECODE, 0, "no input");
        return NULL;
    }
    return decode_frame(data, len, 0, err);
}

/* ---- joining encodings without building them ----------------------------------------------- */

/* The generic way: decode every encoding first (so a bad one leaves dst untouched), then merge. */
static int merge_encoded_generic(crdt_obj_t *dst, const crdt_bytes_t *encs, size_t n,
                                 size_t *failed, crdt_error_t *err)
{
    crdt_obj_t *stack[8];
    crdt_obj_t **objs = stack;
    if (n > 8 && !(objs = crdt__malloc(n * sizeof(*objs)))) {
        if (err) {
            err->code = CRDT_ENOMEM;
            snprintf(err->text, sizeof(err->text), "out of memory");
        }
        return CRDT_ENOMEM;
    }
    int rc = 0;
    size_t got = 0;
    for (; got < n; got++) {
        if (!(objs[got] = crdt__decode_one(dst, &encs[got], err))) {
            rc = err && err->code ? err->code : CRDT_EDECODE;
            if (failed)
                *failed = got;
            break;
        }
    }
    int changed = 0;
    for (size_t i = 0; rc == 0 && i < n; i++) {
        int m = crdt_obj_merge(dst, objs[i]);
        if (m < 0) {
            rc = m;
            if (failed)
                *failed = i;
        } else {
            changed |= m;
        }
    }
    for (size_t i = 0; i < got; i++)
        crdt_obj_free(objs[i]);
    if (objs != stack)
        crdt__free(objs);
    return rc < 0 ? rc : changed;
}

crdt_obj_t *crdt__decode_one(const crdt_obj_t *dst, const crdt_bytes_t *enc, crdt_error_t *err)
{
    const crdt__vtable_t *vt;
    crdt__reader_t pr;
    if (!enc->data && enc->len) {
        crdt__reader_t r = {NULL, 0, 0, 0, err};
        crdt__fail(&r, "no input");
        return NULL;
    }
    if (crdt__frame_open(enc->data, enc->len, 0, err, &vt, &pr) < 0)
        return NULL;
    if (vt != dst->vt) {
        if (err && !err->code) {
            err->code = CRDT_ETYPE;
            err->offset = 1;
            snprintf(err->text, sizeof(err->text), "a %s encoding cannot join a %s", vt->name,
                     dst->vt->name);
        }
        return NULL;
    }
    return crdt__decode_payload(vt, &pr);
}

int crdt_obj_merge_encoded_many(crdt_obj_t *dst, const crdt_bytes_t *encs, size_t n, size_t *failed,
                                crdt_error_t *err)
{
    if (err)
        memset(err, 0, sizeof(*err));
    if (failed)
        *failed = 0;
    if (!dst || (!encs && n))
        return CRDT_EINVAL;
    if (!n)
        return 0;
    if (dst->vt->merge_encoded)
        return dst->vt->merge_encoded(dst, encs, n, failed, err);
    return merge_encoded_generic(dst, encs, n, failed, err);
}

int crdt_obj_merge_encoded(crdt_obj_t *dst, const void *data, size_t len, crdt_error_t *err)
{
    crdt_bytes_t b = {data, len};
    return crdt_obj_merge_encoded_many(dst, &b, 1, NULL, err);
}

/* ---- ops ------------------------------------------------------------------------------------ */

int crdt_op_apply(crdt_obj_t *state, const crdt_op_t *op)
{
    if (!op->delta)
        return CRDT_EINVAL;
    return crdt_obj_merge(state, op->delta);
}

int crdt_op_encode(const crdt_op_t *op, crdt_buf_t *b)
{
    if (!op->delta || !crdt__replica_ok(op->dot.replica))
        return CRDT_EINVAL;
    size_t start = b->len;
    crdt__writer_t w = {b, 0};
    crdt__wr_varint(&w, op->dot.replica);
    crdt__wr_varint(&w, op->dot.seq);
    if (w.err || crdt_obj_encode(op->delta, b) < 0) {
        b->len = start;
        return CRDT_ENOMEM;
    }
    return 0;
}

int crdt_op_decode(const void *data, size_t len, crdt_op_t *op, crdt_error_t *err)
{
    if (err)
        memset(err, 0, sizeof(*err));
    op->delta = NULL;
    crdt__reader_t r = {data, len, 0, 0, err};
    if (!data && len)
        return crdt__fail(&r, "no input");
    if (crdt__rd_count(&r, CRDT_REPLICA_MAX, "op replica", &op->dot.replica) < 0 ||
        crdt__rd_varint(&r, &op->dot.seq) < 0)
        return CRDT_EDECODE;
    if (!crdt__replica_ok(op->dot.replica)) {
        r.pos = 0;
        return crdt__fail(&r, "op replica id 0 is reserved");
    }
    op->delta = decode_frame(r.p + r.pos, r.len - r.pos, r.pos, err);
    if (!op->delta)
        return err && err->code ? err->code : CRDT_EDECODE;
    return 0;
}

void crdt_op_clear(crdt_op_t *op)
{
    crdt_obj_free(op->delta);
    op->delta = NULL;
}

/* ---- blob store ----------------------------------------------------------------------------- */

int crdt__blobs_add(crdt__blobs_t *b, const void *p, size_t n, uint32_t *off)
{
    if (n > UINT32_MAX - b->len)
        return CRDT_EINVAL;
    uint32_t need = b->len + (uint32_t)n;
    if (need > b->cap) {
        size_t cap = crdt__grow_cap(b->cap, need);
        if (cap > UINT32_MAX)
            cap = UINT32_MAX;
        uint8_t *d = crdt__realloc(b->data, cap);
        if (!d)
            return CRDT_ENOMEM;
        b->data = d;
        b->cap = (uint32_t)cap;
    }
    if (n)
        memcpy(b->data + b->len, p, n);
    *off = b->len;
    b->len = need;
    return 0;
}

void crdt__blobs_free(crdt__blobs_t *b)
{
    crdt__free(b->data);
    memset(b, 0, sizeof(*b));
}
