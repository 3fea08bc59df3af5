/* format.c - snprintf/vsnprintf for the WebAssembly build: integers and strings, nothing more */
/* libcrdt formats only its error texts (crdt__fail and friends), with %s, %u, %zu, %llu and %lld.
 * wasi-libc's vfprintf would do, but it links stderr (its "long double not supported" path), and
 * stderr's FILE brings the WASI fd_write, fd_seek and fd_close imports a browser lacks. These
 * two definitions take the place of libc's (the linker takes an archive member only for a symbol
 * still undefined), so printf's machinery is not linked at all. Supported: %% %c %s %.*s %d %i
 * %u %x %p with the length modifiers hh h l ll j z t; field widths and flags are read and
 * ignored. Anything else is copied through as written, so a new format in crdt/src shows up in
 * the error text (and in the C-against-wasm error test) rather than misreading the arguments. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

typedef struct out {
    char *s;
    size_t cap; /* bytes of s, the NUL included */
    size_t n;   /* characters the full result has (C's return value) */
} out_t;

static void put(out_t *o, char c)
{
    if (o->n + 1 < o->cap)
        o->s[o->n] = c;
    o->n++;
}

static void put_str(out_t *o, const char *s, size_t max)
{
    for (size_t i = 0; i < max && s[i]; i++)
        put(o, s[i]);
}

static void put_uint(out_t *o, uintmax_t v, unsigned base)
{
    char d[24];
    size_t k = 0;
    do {
        d[k++] = "0123456789abcdef"[v % base];
        v /= base;
    } while (v);
    while (k)
        put(o, d[--k]);
}

int vsnprintf(char *restrict s, size_t cap, const char *restrict fmt, va_list ap)
{
    out_t o = {s, cap, 0};
    for (const char *p = fmt; *p; p++) {
        if (*p != '%') {
            put(&o, *p);
            continue;
        }
        const char *start = p++;
        while (*p == '-' || *p == '+' || *p == ' ' || *p == '#' || *p == '0')
            p++;
        while (*p >= '0' && *p <= '9')
            p++;
        size_t prec = SIZE_MAX;
        if (*p == '.') {
            p++;
            if (*p == '*') {
                int pr = va_arg(ap, int);
                prec = pr < 0 ? SIZE_MAX : (size_t)pr;
                p++;
            } else {
                prec = 0;
                while (*p >= '0' && *p <= '9')
                    prec = prec * 10 + (size_t)(*p++ - '0');
            }
        }
        int len = 0; /* 0 int, 1 long, 2 long long, 3 intmax_t, 4 size_t, 5 ptrdiff_t */
        if (*p == 'h') {
            p += p[1] == 'h' ? 2 : 1;
        } else if (*p == 'l') {
            len = p[1] == 'l' ? 2 : 1;
            p += len;
        } else if (*p == 'j' || *p == 'z' || *p == 't') {
            len = *p == 'j' ? 3 : *p == 'z' ? 4 : 5;
            p++;
        }
        switch (*p) {
        case '%': put(&o, '%'); break;
        case 'c': put(&o, (char)va_arg(ap, int)); break;
        case 's': {
            const char *str = va_arg(ap, const char *);
            put_str(&o, str ? str : "(null)", prec);
            break;
        }
        case 'd':
        case 'i': {
            intmax_t v = len == 0   ? va_arg(ap, int)
                         : len == 1 ? va_arg(ap, long)
                         : len == 2 ? va_arg(ap, long long)
                         : len == 3 ? va_arg(ap, intmax_t)
                         : len == 4 ? (intmax_t)va_arg(ap, size_t)
                                    : va_arg(ap, ptrdiff_t);
            if (v < 0)
                put(&o, '-');
            put_uint(&o, v < 0 ? (uintmax_t)0 - (uintmax_t)v : (uintmax_t)v, 10);
            break;
        }
        case 'u':
        case 'x': {
            uintmax_t v = len == 0   ? va_arg(ap, unsigned)
                          : len == 1 ? va_arg(ap, unsigned long)
                          : len == 2 ? va_arg(ap, unsigned long long)
                          : len == 3 ? va_arg(ap, uintmax_t)
                          : len == 4 ? va_arg(ap, size_t)
                                     : (uintmax_t)va_arg(ap, ptrdiff_t);
            put_uint(&o, v, *p == 'x' ? 16 : 10);
            break;
        }
        case 'p':
            put_str(&o, "0x", 2);
            put_uint(&o, (uintptr_t)va_arg(ap, void *), 16);
            break;
        default: /* unknown: copy the conversion through, consume nothing */
            put_str(&o, start, (size_t)(p - start) + (*p ? 1 : 0));
            break;
        }
        if (!*p)
            break;
    }
    if (cap)
        s[o.n < cap ? o.n : cap - 1] = '\0';
    return o.n > INT32_MAX ? -1 : (int)o.n;
}

int snprintf(char *restrict s, size_t cap, const char *restrict fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(s, cap, fmt, ap);
    va_end(ap);
    return n;
}
