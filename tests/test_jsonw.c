/* test_jsonw.c - the gateway's JSON writer pieces that replaced printf: Go's duration text (the
 * "duration" of every roshi response) and integers */
#include <inttypes.h>
#include <stdio.h>
#include <string.h>

#include "jsonw.h"
#include "tap.h"

/* Go's time.Duration.String() below a minute, written the long way round (printf), as the
 * reference: "<int>[.<fraction without trailing zeros>]<unit>". */
static void ref_duration(uint64_t ns, char *out, size_t n)
{
    if (ns == 0) {
        snprintf(out, n, "0s");
        return;
    }
    if (ns < 1000) {
        snprintf(out, n, "%" PRIu64 "ns", ns);
        return;
    }
    const char *unit = ns < 1000000 ? "\xc2\xb5s" : ns < 1000000000 ? "ms" : "s";
    uint64_t scale = ns < 1000000 ? 1000 : ns < 1000000000 ? 1000000 : 1000000000;
    int digits = scale == 1000 ? 3 : scale == 1000000 ? 6 : 9;
    char frac[16];
    snprintf(frac, sizeof(frac), "%0*" PRIu64, digits, ns % scale);
    int len = digits;
    while (len > 0 && frac[len - 1] == '0')
        len--;
    frac[len] = '\0';
    snprintf(out, n, "%" PRIu64 "%s%s%s", ns / scale, len ? "." : "", frac, unit);
}

static void is_duration(uint64_t ns, const char *want)
{
    char d[GW_GO_DURATION_MAX + 1];
    size_t n = gw_go_duration(ns, d);
    d[n] = '\0';
    is(d, want, "duration %" PRIu64 " ns is Go's \"%s\"", ns, want);
}

int main(void)
{
    /* Go's own outputs (time.Duration(n).String()) */
    is_duration(0, "0s");
    is_duration(1, "1ns");
    is_duration(999, "999ns");
    is_duration(1000, "1\xc2\xb5s");
    is_duration(1500, "1.5\xc2\xb5s");
    is_duration(21000, "21\xc2\xb5s");
    is_duration(999999, "999.999\xc2\xb5s");
    is_duration(1000000, "1ms");
    is_duration(1234567, "1.234567ms");
    is_duration(100000000, "100ms");
    is_duration(1000000000, "1s");
    is_duration(2000000001, "2.000000001s");
    is_duration(59999999999ull, "59.999999999s");

    /* against the printf reference over every magnitude */
    size_t bad = 0, tried = 0;
    uint64_t x = 88172645463325252ull;
    for (int i = 0; i < 100000; i++) {
        x ^= x << 13, x ^= x >> 7, x ^= x << 17;
        uint64_t ns = x % (i % 4 == 0 ? 1000 : i % 4 == 1 ? 1000000 : i % 4 == 2 ? 1000000000 : 60000000000ull);
        if (i % 3 == 0)
            ns -= ns % 1000; /* trailing zeros */
        char want[64], got[GW_GO_DURATION_MAX + 1];
        ref_duration(ns, want, sizeof(want));
        size_t n = gw_go_duration(ns, got);
        got[n] = '\0';
        bad += strcmp(want, got) != 0;
        tried++;
    }
    ok(!bad, "durations agree with the printf reference on %zu values (%zu differ)", tried, bad);

    /* gw_u64_put against printf: every power of ten and its neighbours, and random values */
    bad = tried = 0;
    uint64_t p10 = 1;
    for (int e = 0; e < 20; e++, p10 *= 10) {
        for (int d = -1; d <= 1; d++) {
            uint64_t v = p10 + (uint64_t)(int64_t)d;
            char want[32], got[GW_U64_MAX_DIGITS + 1];
            snprintf(want, sizeof(want), "%" PRIu64, v);
            size_t n = gw_u64_put(got, v);
            got[n] = '\0';
            bad += n > GW_U64_MAX_DIGITS || strcmp(want, got) != 0;
            tried++;
        }
    }
    for (int i = 0; i < 100000; i++) {
        x ^= x << 13, x ^= x >> 7, x ^= x << 17;
        uint64_t v = x >> (i % 64);
        char want[32], got[GW_U64_MAX_DIGITS + 1];
        snprintf(want, sizeof(want), "%" PRIu64, v);
        size_t n = gw_u64_put(got, v);
        got[n] = '\0';
        bad += strcmp(want, got) != 0;
        tried++;
    }
    ok(!bad, "u64 digits agree with printf on %zu values (%zu differ)", tried, bad);

    gw_jw_t w;
    ok(gw_jw_init(&w, 16), "writer starts");
    gw_jw_u64(&w, 0);
    gw_jw_lit(&w, ",");
    gw_jw_u64(&w, 7);
    gw_jw_lit(&w, ",");
    gw_jw_u64(&w, UINT64_MAX);
    is(w.p + GW_BODY_AT, "0,7,18446744073709551615", "integers as their digits");
    char *p = gw_jw_extend(&w, 3000);
    ok(p && p == w.p + w.len && w.cap >= w.len + 3001, "extend: room for what follows");
    memcpy(p, "!!", 2);
    w.len += 2;
    w.p[w.len] = '\0';
    is(w.p + GW_BODY_AT, "0,7,18446744073709551615!!", "written in place");
    gw_jw_free(&w);
    return done_testing();
}
