/* jsonw.c - a small JSON writer for the hot read paths (timeline pages, roshi selects) */
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "crdt.h"
#include "crdt_json.h"
#include "jsonw.h"

/*
 * Building a timeline page with jansson costs an object, two strings and a real per entry, then
 * a dump into a growing buffer and a copy into the response: about 8 allocations per entry. The
 * pages are a fixed shape, so they are written straight into the response buffer instead.
 */

bool gw_jw_init(gw_jw_t *w, size_t hint)
{
    w->cap = GW_BODY_AT + (hint < 256 ? 256 : hint);
    w->p = malloc(w->cap);
    w->len = GW_BODY_AT;
    w->oom = !w->p;
    return !w->oom;
}

void gw_jw_free(gw_jw_t *w)
{
    free(w->p);
    w->p = NULL;
    w->len = w->cap = 0;
}

static bool reserve(gw_jw_t *w, size_t n)
{
    if (w->oom)
        return false;
    if (w->len + n + 1 <= w->cap)
        return true;
    size_t cap = w->cap * 2;
    while (cap < w->len + n + 1)
        cap *= 2;
    char *p = realloc(w->p, cap);
    if (!p) {
        w->oom = true;
        return false;
    }
    w->p = p;
    w->cap = cap;
    return true;
}

/* Inlined into the writers below: a page writes a few literals per entry. */
static inline void raw(gw_jw_t *w, const char *s, size_t n)
{
    if (!reserve(w, n))
        return;
    memcpy(w->p + w->len, s, n);
    w->len += n;
    w->p[w->len] = '\0';
}

void gw_jw_raw(gw_jw_t *w, const char *s, size_t n)
{
    raw(w, s, n);
}

void gw_jw_lit(gw_jw_t *w, const char *s)
{
    raw(w, s, strlen(s));
}

void gw_jw_b64(gw_jw_t *w, const void *data, size_t n)
{
    size_t blen = crdt_base64_encoded_len(n, CRDT_B64_STD);
    if (!reserve(w, blen + 2))
        return;
    w->p[w->len++] = '"';
    w->len += crdt_base64_encode_into(w->p + w->len, data, n, CRDT_B64_STD);
    w->p[w->len++] = '"';
    w->p[w->len] = '\0';
}

void gw_jw_bytes(gw_jw_t *w, const void *data, size_t n)
{
    if (!reserve(w, crdt_json_bytes_len(data, n)))
        return;
    w->len += crdt_json_bytes_write(w->p + w->len, data, n);
    w->p[w->len] = '\0';
}

json_t *gw_b64_json(const void *p, size_t n)
{
    size_t len;
    char *s = crdt_base64_encode(p, n, &len);
    if (!s)
        return NULL;
    json_t *j = json_stringn_nocheck(s, len);
    crdt_free(s);
    return j;
}

void gw_jw_double(gw_jw_t *w, double d)
{
    char buf[40];
    int n = 0;
    for (int prec = 15; prec <= 17; prec++) {
        n = snprintf(buf, sizeof(buf), "%.*g", prec, d);
        if (strtod(buf, NULL) == d)
            break;
    }
    if (!strpbrk(buf, ".eEn")) /* "5" -> "5.0": a real, as jansson writes it */
        n += snprintf(buf + n, sizeof(buf) - (size_t)n, ".0");
    raw(w, buf, (size_t)n);
}

void gw_jw_double_go(gw_jw_t *w, double d)
{
    char buf[64];
    int n = 0;
    double a = fabs(d);
    if (a == 0 || (a >= 1e-6 && a < 1e21)) {
        /* strconv 'f', shortest: the fewest decimals that read back as d */
        for (int dec = 0; dec <= 30; dec++) {
            n = snprintf(buf, sizeof(buf), "%.*f", dec, d);
            if (strtod(buf, NULL) == d)
                break;
        }
        if (!strcmp(buf, "-0"))
            n = snprintf(buf, sizeof(buf), "-0");
    } else {
        /* strconv 'e', shortest, with Go's e-09 -> e-9 clean-up */
        for (int prec = 0; prec <= 17; prec++) {
            n = snprintf(buf, sizeof(buf), "%.*e", prec, d);
            if (strtod(buf, NULL) == d)
                break;
        }
        if (n >= 4 && buf[n - 4] == 'e' && buf[n - 3] == '-' && buf[n - 2] == '0') {
            buf[n - 2] = buf[n - 1];
            buf[--n] = '\0';
        }
    }
    raw(w, buf, (size_t)n);
}

/* The decimal digits of v, ending at end: returns where they start (no printf: a response
 * writes a few numbers, and snprintf costs more than the rest of a small one). */
static char *u64_digits(char *end, uint64_t v)
{
    do
        *--end = (char)('0' + v % 10);
    while (v /= 10);
    return end;
}

void gw_jw_u64(gw_jw_t *w, uint64_t v)
{
    char *p = gw_jw_extend(w, GW_U64_MAX_DIGITS);
    if (!p)
        return;
    w->len += gw_u64_put(p, v);
    w->p[w->len] = '\0';
}

/* "00" to "99" */
static const char digit_pairs[] =
    "00010203040506070809101112131415161718192021222324252627282930313233"
    "34353637383940414243444546474849505152535455565758596061626364656667"
    "6869707172737475767778798081828384858687888990919293949596979899";

size_t gw_u64_put(char *out, uint64_t v)
{
    /* clang-format off */
    static const uint64_t pow10[19] = {
        10ull, 100ull, 1000ull, 10000ull, 100000ull, 1000000ull, 10000000ull, 100000000ull,
        1000000000ull, 10000000000ull, 100000000000ull, 1000000000000ull, 10000000000000ull,
        100000000000000ull, 1000000000000000ull, 10000000000000000ull, 100000000000000000ull,
        1000000000000000000ull, 10000000000000000000ull};
    /* clang-format on */
    size_t n = 1;
    while (n < 20 && v >= pow10[n - 1])
        n++;
    char *p = out + n;
    for (; v >= 100; v /= 100) {
        p -= 2;
        memcpy(p, digit_pairs + v % 100 * 2, 2);
    }
    if (v >= 10)
        memcpy(p - 2, digit_pairs + v * 2, 2);
    else
        p[-1] = (char)('0' + v);
    return n;
}

char *gw_jw_extend(gw_jw_t *w, size_t n)
{
    return reserve(w, n) ? w->p + w->len : NULL;
}

size_t gw_go_duration(uint64_t ns, char *out)
{
    char *p = out;
    if (ns < 1000) { /* "0s", "999ns" */
        char buf[24], *d = u64_digits(buf + sizeof(buf), ns);
        size_t n = (size_t)(buf + sizeof(buf) - d);
        memcpy(p, d, n);
        p += n;
        if (ns)
            *p++ = 'n';
        *p++ = 's';
        return (size_t)(p - out);
    }
    const char *unit;
    uint64_t scale;
    int digits;
    if (ns < 1000000)
        unit = "\xc2\xb5s", scale = 1000, digits = 3;
    else if (ns < 1000000000)
        unit = "ms", scale = 1000000, digits = 6;
    else
        unit = "s", scale = 1000000000, digits = 9;
    char buf[24], *d = u64_digits(buf + sizeof(buf), ns / scale);
    size_t n = (size_t)(buf + sizeof(buf) - d);
    memcpy(p, d, n);
    p += n;
    uint64_t frac = ns % scale;
    if (frac) { /* the fraction's digits, its trailing zeros dropped */
        char f[9];
        for (int i = digits - 1; i >= 0; i--, frac /= 10)
            f[i] = (char)('0' + frac % 10);
        int len = digits;
        while (f[len - 1] == '0')
            len--;
        *p++ = '.';
        memcpy(p, f, (size_t)len);
        p += len;
    }
    n = strlen(unit);
    memcpy(p, unit, n);
    return (size_t)(p + n - out);
}
