/* tap.h - a small Test Anything Protocol producer: ok/is/cmp_ok/diag/done_testing
 *
 * Header-only; include it in the one translation unit of a test program that reports results.
 * Every failure prints the file and line of the check and what was expected against what came.
 *
 *   ok(cond, "name %d", i);            is_int(got, want, "name");    is(str_got, str_want, "name");
 *   is_mem(p, n, q, m, "name");        cmp_ok(a, "<=", b, "name");   diag("fmt", ...);
 *   skip_all("why");                   return done_testing();
 */
#ifndef CRDT_TAP_H
#define CRDT_TAP_H

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int tap__run, tap__failed;

static void tap__vname(const char *fmt, va_list ap)
{
    if (fmt && *fmt) {
        fputs(" - ", stdout);
        vprintf(fmt, ap);
    }
}

static int tap__report(int pass, const char *file, int line, const char *fmt, va_list ap)
{
    tap__run++;
    printf("%sok %d", pass ? "" : "not ", tap__run);
    tap__vname(fmt, ap);
    putchar('\n');
    if (!pass) {
        tap__failed++;
        printf("#   Failed test at %s line %d.\n", file, line);
    }
    fflush(stdout);
    return pass;
}

static inline void diag(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static inline void diag(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fputs("# ", stdout);
    vprintf(fmt, ap);
    putchar('\n');
    fflush(stdout);
    va_end(ap);
}

static inline int tap__ok(int pass, const char *file, int line, const char *expr, const char *fmt,
                          ...)
{
    va_list ap;
    va_start(ap, fmt);
    tap__report(pass, file, line, fmt, ap);
    va_end(ap);
    if (!pass)
        printf("#   condition: %s\n", expr);
    return pass;
}

static inline int tap__is_int(long long got, long long want, const char *file, int line,
                              const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int pass = tap__report(got == want, file, line, fmt, ap);
    va_end(ap);
    if (!pass)
        printf("#          got: %lld\n#     expected: %lld\n", got, want);
    return pass;
}

static inline int tap__is_str(const char *got, const char *want, const char *file, int line,
                              const char *fmt, ...)
{
    int pass = (got == NULL && want == NULL) || (got && want && strcmp(got, want) == 0);
    va_list ap;
    va_start(ap, fmt);
    tap__report(pass, file, line, fmt, ap);
    va_end(ap);
    if (!pass)
        printf("#          got: %s%s%s\n#     expected: %s%s%s\n", got ? "'" : "",
               got ? got : "NULL", got ? "'" : "", want ? "'" : "", want ? want : "NULL",
               want ? "'" : "");
    return pass;
}

static void tap__hex(const char *label, const void *p, size_t n)
{
    printf("#     %s (%zu bytes):", label, n);
    for (size_t i = 0; i < n && i < 48; i++)
        printf(" %02x", ((const unsigned char *)p)[i]);
    puts(n > 48 ? " ..." : "");
}

static inline int tap__is_mem(const void *got, size_t glen, const void *want, size_t wlen,
                              const char *file, int line, const char *fmt, ...)
{
    int pass = glen == wlen && (glen == 0 || (got && want && memcmp(got, want, glen) == 0));
    va_list ap;
    va_start(ap, fmt);
    tap__report(pass, file, line, fmt, ap);
    va_end(ap);
    if (!pass) {
        tap__hex("got", got, got ? glen : 0);
        tap__hex("expected", want, want ? wlen : 0);
    }
    return pass;
}

static inline int tap__cmp_ok(long double a, const char *op, long double b, const char *file,
                              int line, const char *fmt, ...)
{
    int pass;
    if (!strcmp(op, "<"))
        pass = a < b;
    else if (!strcmp(op, "<="))
        pass = a <= b;
    else if (!strcmp(op, ">"))
        pass = a > b;
    else if (!strcmp(op, ">="))
        pass = a >= b;
    else if (!strcmp(op, "=="))
        pass = a == b;
    else if (!strcmp(op, "!="))
        pass = a != b;
    else {
        printf("# cmp_ok: unknown operator '%s'\n", op);
        pass = 0;
    }
    va_list ap;
    va_start(ap, fmt);
    tap__report(pass, file, line, fmt, ap);
    va_end(ap);
    if (!pass)
        printf("#     %.17Lg\n#         %s\n#     %.17Lg\n", a, op, b);
    return pass;
}

#define ok(cond, ...) tap__ok(!!(cond), __FILE__, __LINE__, #cond, __VA_ARGS__)
#define is_int(got, want, ...)                                                                    \
    tap__is_int((long long)(got), (long long)(want), __FILE__, __LINE__, __VA_ARGS__)
#define is(got, want, ...) tap__is_str((got), (want), __FILE__, __LINE__, __VA_ARGS__)
#define is_mem(got, glen, want, wlen, ...)                                                        \
    tap__is_mem((got), (glen), (want), (wlen), __FILE__, __LINE__, __VA_ARGS__)
#define cmp_ok(a, op, b, ...)                                                                     \
    tap__cmp_ok((long double)(a), (op), (long double)(b), __FILE__, __LINE__, __VA_ARGS__)
#define pass(...) ok(1, __VA_ARGS__)
#define fail(...) ok(0, __VA_ARGS__)

/* Ends the run: prints the plan and returns the exit status (0 only if every test passed). */
static inline int done_testing(void)
{
    printf("1..%d\n", tap__run);
    if (tap__failed)
        printf("# Looks like you failed %d test%s of %d.\n", tap__failed,
               tap__failed == 1 ? "" : "s", tap__run);
    fflush(stdout);
    if (tap__run == 0)
        return 255; /* a program that tested nothing has failed */
    return tap__failed > 254 ? 254 : tap__failed;
}

/* Skips the whole program (e.g. a server binary is missing): prove counts it as skipped. */
#define skip_all(...)                                                                             \
    do {                                                                                          \
        printf("1..0 # SKIP ");                                                                   \
        printf(__VA_ARGS__);                                                                      \
        putchar('\n');                                                                            \
        exit(0);                                                                                  \
    } while (0)

/* Stops everything after an unrecoverable failure. */
#define bail_out(...)                                                                             \
    do {                                                                                          \
        printf("Bail out! ");                                                                     \
        printf(__VA_ARGS__);                                                                      \
        putchar('\n');                                                                            \
        exit(255);                                                                                \
    } while (0)

#endif /* CRDT_TAP_H */
