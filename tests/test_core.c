/* test_core.c - the parts every type relies on: HLC, CRC, varints, the frame, base64, hash index */
#include "tap.h"
#include "codec_check.h"

#include "crdt.h"
#include "crdt_json.h"
#include "crdt_private.h"

static void test_hlc(void)
{
    crdt_hlc_t c;
    crdt_hlc_ts_t a, b, r;
    is_int(crdt_hlc_init(&c, 0, 100), CRDT_EINVAL, "hlc: node 0 is rejected");
    is_int(crdt_hlc_init(&c, CRDT_REPLICA_MAX + 1, 100), CRDT_EINVAL, "hlc: node past 2^63-1");
    is_int(crdt_hlc_init(&c, 7, 100), 0, "hlc: init");

    crdt_hlc_tick(&c, 1000, &a);
    ok(a.ms == 1000 && a.logical == 0 && a.node == 7, "hlc: first tick takes the wall clock");
    crdt_hlc_tick(&c, 1000, &b);
    ok(crdt_hlc_cmp(&a, &b) < 0 && b.logical == 1, "hlc: same ms bumps the logical counter");
    crdt_hlc_tick(&c, 900, &r);
    ok(crdt_hlc_cmp(&b, &r) < 0 && r.ms == 1000, "hlc: a wall clock going back never goes back");

    crdt_hlc_ts_t remote = {1050, 5, 9};
    is_int(crdt_hlc_recv(&c, 1000, &remote, &r), 0, "hlc: remote 50 ms ahead within bound");
    ok(r.ms == 1050 && r.logical == 6 && crdt_hlc_cmp(&remote, &r) < 0,
       "hlc: receive moves past the remote timestamp");
    crdt_hlc_ts_t far = {1000 + 101 + 50, 0, 9};
    crdt_hlc_t before = c;
    is_int(crdt_hlc_recv(&c, 1050, &far, &r), CRDT_ECLOCK, "hlc: remote past the drift bound");
    ok(memcmp(&before, &c, sizeof(c)) == 0, "hlc: a rejected remote leaves the clock unchanged");
    crdt_hlc_tick(&c, 5000, &r);
    ok(r.ms == 5000 && r.logical == 0, "hlc: a later wall clock resets the logical counter");

    crdt_hlc_ts_t x = {1, 2, 3}, y = {1, 2, 4}, z = {1, 3, 1};
    ok(crdt_hlc_cmp(&x, &y) < 0 && crdt_hlc_cmp(&y, &z) < 0 && crdt_hlc_cmp(&x, &x) == 0,
       "hlc: order is (ms, logical, node)");

    c.last_ms = 5000;
    c.last_logical = UINT32_MAX;
    is_int(crdt_hlc_tick(&c, 5000, &r), CRDT_EOVERFLOW, "hlc: logical exhaustion is an error");
    ok(crdt_wall_ms() > 1600000000000ull, "hlc: the wall clock reads real time");
}

/* crdt_obj_max_ts: the greatest HLC timestamp of the LWW types, none for the others. */
static void test_max_ts(void)
{
    crdt_hlc_ts_t got = {0, 0, 0};
    for (int t = CRDT_TYPE_MIN; t <= CRDT_TYPE_MAX; t++) {
        crdt_obj_t *o = crdt_obj_new((crdt_type_t)t);
        is_int(crdt_obj_max_ts(o, &got), 0, "max_ts: an empty %s holds no timestamp",
               crdt_type_name((crdt_type_t)t));
        crdt_obj_free(o);
    }

    crdt_obj_t *reg = crdt_obj_new(CRDT_LWWREG);
    crdt_hlc_ts_t t1 = {5000, 3, 2}, t0 = {4000, 9, 7};
    crdt_lwwreg_set(reg, &t1, "a", 1, NULL);
    crdt_lwwreg_set(reg, &t0, "b", 1, NULL); /* loses: the register keeps t1 */
    is_int(crdt_obj_max_ts(reg, &got), 1, "max_ts: a set register has one");
    ok(crdt_hlc_cmp(&got, &t1) == 0, "max_ts: the register's timestamp (got %llu.%u.%llu)",
       (unsigned long long)got.ms, got.logical, (unsigned long long)got.node);
    crdt_mut_t m = {.type = CRDT_LWWREG, .kind = CRDT_MUT_SET, .bytes = "c", .len = 1};
    is_int(crdt_mut_seen_ts(reg, &m, &got), 1, "seen_ts: a register write competes with its value");
    ok(crdt_hlc_cmp(&got, &t1) == 0, "seen_ts: ... at the register's timestamp");
    crdt_obj_free(reg);

    crdt_obj_t *set = crdt_obj_new(CRDT_LWWSET);
    crdt_hlc_ts_t a = {100, 0, 1}, b = {300, 1, 2}, c = {300, 0, 9}, d = {200, 5, 5};
    crdt_lwwset_add(set, "x", 1, &a, NULL);
    crdt_lwwset_remove(set, "y", 1, &b, NULL); /* a tombstone counts: it orders the member too */
    crdt_lwwset_add(set, "z", 1, &c, NULL);
    crdt_lwwset_add(set, "x", 1, &d, NULL);
    is_int(crdt_obj_max_ts(set, &got), 1, "max_ts: an LWW-set with entries has one");
    ok(crdt_hlc_cmp(&got, &b) == 0, "max_ts: the greatest entry, a tombstone (got %llu.%u.%llu)",
       (unsigned long long)got.ms, got.logical, (unsigned long long)got.node);

    /* crdt_mut_seen_ts: what one LWW write competes with, the member's entry only. */
    crdt_mut_t add = {.type = CRDT_LWWSET, .kind = CRDT_MUT_ADD, .bytes = "x", .len = 1};
    is_int(crdt_mut_seen_ts(set, &add, &got), 1, "seen_ts: a member with an entry");
    ok(crdt_hlc_cmp(&got, &d) == 0, "seen_ts: ... is that member's timestamp, not the set's max");
    add.bytes = "w";
    is_int(crdt_mut_seen_ts(set, &add, &got), 0, "seen_ts: a new member competes with nothing");
    crdt_mut_t set_reg = {.type = CRDT_LWWREG, .kind = CRDT_MUT_SET, .bytes = "v", .len = 1};
    is_int(crdt_mut_seen_ts(set, &set_reg, &got), 0, "seen_ts: a write of another type: none");
    crdt_obj_free(set);

    /* Scores of the other types are not HLC timestamps: none is reported. */
    crdt_obj_t *tl = crdt_obj_new(CRDT_TIMELINE);
    crdt_timeline_add(tl, "m", 1, 1e15, NULL);
    crdt_obj_t *ors = crdt_obj_new(CRDT_ORSET);
    crdt_orset_add(ors, 3, "m", 1, NULL);
    crdt_obj_t *pn = crdt_obj_new(CRDT_PNCOUNTER);
    crdt_pncounter_add(pn, 3, 5, NULL);
    ok(crdt_obj_max_ts(tl, &got) == 0 && crdt_obj_max_ts(ors, &got) == 0 &&
           crdt_obj_max_ts(pn, &got) == 0,
       "max_ts: timelines, OR-Sets and counters hold no HLC timestamp");
    crdt_obj_free(tl);
    crdt_obj_free(ors);
    crdt_obj_free(pn);
}

static void test_crc_and_buf(void)
{
    is_int(crdt_crc32c(0, "123456789", 9), 0xE3069283u, "crc32c: the standard check value");
    uint8_t big[1000];
    for (int i = 0; i < 1000; i++)
        big[i] = (uint8_t)(i * 7);
    uint32_t whole = crdt_crc32c(0, big, sizeof(big));
    uint32_t parts = crdt_crc32c(crdt_crc32c(0, big, 333), big + 333, 667);
    is_int(parts, whole, "crc32c: incremental equals whole");

    /* Both paths (hardware and the portable slicing-by-8 tables, which WebAssembly runs) against
     * a bitwise reference, every length 0..300 at every alignment 0..7, on pseudo-random bytes. */
    uint8_t rnd[320];
    uint32_t x = 0x9E3779B9u;
    for (size_t i = 0; i < sizeof(rnd); i++) {
        x ^= x << 13, x ^= x >> 17, x ^= x << 5;
        rnd[i] = (uint8_t)(x >> 24);
    }
    int hw_diffs = 0, sw_diffs = 0;
    for (size_t off = 0; off < 8; off++)
        for (size_t n = 0; n <= 300; n++) {
            uint32_t seed = (uint32_t)(n * 2654435761u), ref = ~seed;
            for (size_t i = 0; i < n; i++) {
                ref ^= rnd[off + i];
                for (int k = 0; k < 8; k++)
                    ref = (ref >> 1) ^ (0x82F63B78u & (0u - (ref & 1u)));
            }
            ref = ~ref;
            hw_diffs += crdt_crc32c(seed, rnd + off, n) != ref;
            sw_diffs += crdt__crc32c_portable(seed, rnd + off, n) != ref;
        }
    is_int(hw_diffs, 0, "crc32c: every length 0..300 and alignment equals a bitwise reference");
    is_int(sw_diffs, 0, "crc32c: the portable tables equal a bitwise reference likewise");

    crdt_buf_t b = {0};
    for (int i = 0; i < 1000; i++)
        crdt_buf_append(&b, &big[i], 1);
    is_mem(b.data, b.len, big, sizeof(big), "buf: appends accumulate");
    crdt_buf_free(&b);
    ok(b.data == NULL && b.len == 0, "buf: free resets");
}

static void test_varints(void)
{
    static const uint64_t vals[] = {0, 1, 127, 128, 300, 16383, 16384, UINT32_MAX, UINT64_MAX};
    crdt_buf_t b = {0};
    crdt__writer_t w = {&b, 0};
    for (size_t i = 0; i < sizeof(vals) / sizeof(vals[0]); i++)
        crdt__wr_varint(&w, vals[i]);
    crdt_error_t err = {0};
    crdt__reader_t r = {b.data, b.len, 0, 0, &err};
    int good = 1;
    for (size_t i = 0; i < sizeof(vals) / sizeof(vals[0]); i++) {
        uint64_t v;
        good &= crdt__rd_varint(&r, &v) == 0 && v == vals[i];
    }
    ok(good && crdt__rd_end(&r) == 0, "varint: round trip of edge values");
    crdt_buf_free(&b);

    const uint8_t overlong[] = {0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0x02};
    memset(&err, 0, sizeof(err));
    crdt__reader_t r2 = {overlong, sizeof(overlong), 0, 100, &err};
    uint64_t v;
    ok(crdt__rd_varint(&r2, &v) == CRDT_EDECODE && err.offset == 109,
       "varint: more than 64 bits rejected at its byte offset (%zu)", err.offset);
    const uint8_t padded[] = {0x81, 0x00};
    memset(&err, 0, sizeof(err));
    crdt__reader_t r3 = {padded, sizeof(padded), 0, 0, &err};
    ok(crdt__rd_varint(&r3, &v) == CRDT_EDECODE && strstr(err.text, "canonical"),
       "varint: a zero continuation group is non-canonical");
    const uint8_t cut[] = {0x80};
    memset(&err, 0, sizeof(err));
    crdt__reader_t r4 = {cut, sizeof(cut), 0, 0, &err};
    ok(crdt__rd_varint(&r4, &v) == CRDT_EDECODE && strstr(err.text, "truncated"),
       "varint: truncated");
    const uint8_t nan[8] = {0, 0, 0, 0, 0, 0, 0xF8, 0x7F};
    memset(&err, 0, sizeof(err));
    crdt__reader_t r5 = {nan, 8, 0, 0, &err};
    double d;
    ok(crdt__rd_score(&r5, &d) == CRDT_EDECODE, "score: NaN is rejected");
}

static void test_frame(void)
{
    uint8_t buf[64];
    crdt_error_t err;
    const uint8_t empty_counter[] = {0};
    size_t n = codec_frame_version(9, CRDT_GCOUNTER, empty_counter, 1, buf);
    ok(!crdt_obj_decode(buf, n, &err) && err.code == CRDT_EDECODE && strstr(err.text, "version"),
       "frame: unknown version rejected: %s", err.text);
    n = codec_frame_version(CRDT_CODEC_VERSION, 42, empty_counter, 1, buf);
    ok(!crdt_obj_decode(buf, n, &err) && strstr(err.text, "type") && err.offset == 1,
       "frame: unknown type tag rejected at offset 1: %s", err.text);
    n = codec_frame_version(CRDT_CODEC_VERSION, CRDT_GCOUNTER, empty_counter, 1, buf);
    buf[2] = 5; /* claims more payload than there is */
    uint32_t crc = crdt_crc32c(0, buf, n - 4);
    for (int i = 0; i < 4; i++)
        buf[n - 4 + (size_t)i] = (uint8_t)(crc >> (8 * i));
    ok(!crdt_obj_decode(buf, n, &err) && err.code == CRDT_EDECODE,
       "frame: a wrong payload length is rejected: %s", err.text);
    ok(!crdt_obj_decode(NULL, 5, &err) && err.code == CRDT_EDECODE, "frame: NULL input");
    ok(!crdt_obj_decode("", 0, &err) && err.code == CRDT_EDECODE, "frame: empty input");

    crdt_op_t op = {{0, 1}, NULL};
    crdt_buf_t b = {0};
    is_int(crdt_op_encode(&op, &b), CRDT_EINVAL, "op: no delta, no encoding");
    const uint8_t bad_op[] = {0x00, 0x01};
    ok(crdt_op_decode(bad_op, sizeof(bad_op), &op, &err) == CRDT_EDECODE && op.delta == NULL,
       "op: replica 0 rejected");
    crdt_buf_free(&b);
}

static void test_names(void)
{
    crdt_type_t t;
    int good = 1;
    for (int i = CRDT_TYPE_MIN; i <= CRDT_TYPE_MAX; i++)
        good &= crdt_type_from_name(crdt_type_name((crdt_type_t)i), &t) == 0 && (int)t == i;
    ok(good, "type names round-trip");
    is(crdt_type_name(CRDT_TIMELINE), "timeline", "timeline's name");
    ok(crdt_type_name((crdt_type_t)99) == NULL && crdt_type_from_name("nope", &t) == CRDT_EINVAL,
       "unknown types");
    is(crdt_strerror(CRDT_EDECODE), "malformed encoding", "strerror");
    ok(crdt_obj_new((crdt_type_t)0) == NULL, "crdt_obj_new of an unknown type is NULL");
}

static void test_base64(void)
{
    static const struct {
        const char *in, *out;
    } v[] = {{"", ""},
             {"f", "Zg=="},
             {"fo", "Zm8="},
             {"foo", "Zm9v"},
             {"foob", "Zm9vYg=="},
             {"fooba", "Zm9vYmE="},
             {"foobar", "Zm9vYmFy"}};
    for (size_t i = 0; i < sizeof(v) / sizeof(v[0]); i++) {
        size_t n;
        char *s = crdt_base64_encode(v[i].in, strlen(v[i].in), &n);
        is(s, v[i].out, "base64: encode '%s' (RFC 4648 vector)", v[i].in);
        uint8_t *d = NULL;
        size_t dn = 0;
        ok(crdt_base64_decode(s, n, &d, &dn) == 0 && dn == strlen(v[i].in) &&
               memcmp(d, v[i].in, dn) == 0,
           "base64: decode '%s'", v[i].out);
        free(d);
        free(s);
    }
    static const char *bad[] = {"Zg=", "Z===", "Zh==", "Zm9=", "Zm!v", "====", "Zg==Zg=="};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        uint8_t *d = NULL;
        size_t dn;
        is_int(crdt_base64_decode(bad[i], strlen(bad[i]), &d, &dn), CRDT_EDECODE,
               "base64: '%s' rejected", bad[i]);
        if (d)
            free(d);
    }
    uint8_t all[256];
    for (int i = 0; i < 256; i++)
        all[i] = (uint8_t)i;
    size_t n;
    char *s = crdt_base64_encode(all, 256, &n);
    uint8_t *d = NULL;
    size_t dn = 0;
    ok(crdt_base64_decode(s, n, &d, &dn) == 0 && dn == 256 && memcmp(d, all, 256) == 0,
       "base64: every byte value round-trips");
    free(d);
    free(s);

    /* The encoder's two-character tables against the alphabets, on every 3-byte group and on
     * every tail, in both alphabets, padded or not. */
    static const char *alpha[2] = {
        "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/",
        "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"};
    size_t wrong = 0;
    for (unsigned f = 0; f < 2; f++) {
        const char *a = alpha[f];
        for (uint32_t g = 0; g < (1u << 24); g++) {
            uint8_t in[3] = {(uint8_t)(g >> 16), (uint8_t)(g >> 8), (uint8_t)g};
            char out[4];
            size_t k = crdt_base64_encode_into(out, in, 3, f ? CRDT_B64_URL : CRDT_B64_STD);
            wrong += k != 4 || out[0] != a[g >> 18] || out[1] != a[(g >> 12) & 63] ||
                     out[2] != a[(g >> 6) & 63] || out[3] != a[g & 63];
        }
    }
    ok(!wrong, "base64: every 3-byte group encodes to its alphabet's four characters (%zu wrong)",
       wrong);
    static const struct {
        const char *in, *std, *url, *url_nopad;
    } tails[] = {{"\xfb\xff\xfe\xfb", "+//++w==", "-__--w==", "-__--w"},
                 {"\xfb\xff\xfe\xfb\xef", "+//+++8=", "-__---8=", "-__---8"}};
    for (size_t i = 0; i < sizeof(tails) / sizeof(tails[0]); i++) {
        char out[16];
        size_t len = strlen(tails[i].in), k;
        k = crdt_base64_encode_into(out, tails[i].in, len, CRDT_B64_STD);
        out[k] = '\0';
        is(out, tails[i].std, "base64: a %zu-byte tail, standard", len % 3);
        k = crdt_base64_encode_into(out, tails[i].in, len, CRDT_B64_URL);
        out[k] = '\0';
        is(out, tails[i].url, "base64: a %zu-byte tail, URL-safe", len % 3);
        k = crdt_base64_encode_into(out, tails[i].in, len, CRDT_B64_URL | CRDT_B64_NOPAD);
        out[k] = '\0';
        is(out, tails[i].url_nopad, "base64: a %zu-byte tail, URL-safe unpadded", len % 3);
    }
}

/* The decoder as first written, a character at a time: the reference the table decoder must
 * agree with on every input (result and bytes). */
static int ref_b64_decode(const char *s, size_t slen, unsigned flags, uint8_t *d, size_t *out_len)
{
    const char *a = (flags & CRDT_B64_URL)
                        ? "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
                        : "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    size_t n = slen, pads = 0;
    while (n && s[n - 1] == '=' && pads < 2)
        n--, pads++;
    if (flags & CRDT_B64_NOPAD) {
        if (pads && slen % 4)
            return CRDT_EDECODE;
    } else if (slen % 4) {
        return CRDT_EDECODE;
    }
    if (n % 4 == 1)
        return CRDT_EDECODE;
    size_t o = 0;
    uint32_t acc = 0;
    int bits = 0;
    for (size_t i = 0; i < n; i++) {
        const char *at = s[i] ? strchr(a, s[i]) : NULL;
        if (!at)
            return CRDT_EDECODE;
        acc = acc << 6 | (uint32_t)(at - a);
        bits += 6;
        if (bits >= 8) {
            bits -= 8;
            d[o++] = (uint8_t)(acc >> bits);
            acc &= (1u << bits) - 1;
        }
    }
    if (acc)
        return CRDT_EDECODE;
    *out_len = o;
    return 0;
}

static bool b64_agrees(const char *s, size_t n, unsigned flags)
{
    uint8_t want[32], got[32];
    size_t wn = 0, gn = 0;
    int w = ref_b64_decode(s, n, flags, want, &wn);
    int g = crdt_base64_decode_into(got, s, n, flags, &gn);
    return w == g && (w < 0 || (wn == gn && !memcmp(want, got, wn)));
}

static void test_base64_decoder(void)
{
    static const unsigned flags[] = {CRDT_B64_STD, CRDT_B64_URL, CRDT_B64_NOPAD,
                                     CRDT_B64_URL | CRDT_B64_NOPAD};
    /* every final quantum of two characters, and of three with a few first pairs */
    size_t bad = 0, tried = 0;
    for (int a = 0; a < 256; a++)
        for (int b = 0; b < 256; b++)
            for (size_t f = 0; f < 4; f++) {
                char s[8] = {'Q', 'U', 'J', 'D', (char)a, (char)b, '=', '='};
                bad += !b64_agrees(s, 8, flags[f]) + !b64_agrees(s, 6, flags[f]);
                char t[8] = {'Q', 'U', 'J', 'D', 'Q', (char)a, (char)b, '='};
                bad += !b64_agrees(t, 8, flags[f]) + !b64_agrees(t, 7, flags[f]);
                tried += 4;
            }
    ok(!bad, "base64 decoder: agrees with the reference on %zu final quanta (%zu differ)", tried,
       bad);
    /* random strings over the alphabets, '=' and a few others, every length up to 24 */
    static const char chars[] = "AQgwZz09+/-_=\"!\\ \x80";
    uint64_t x = 0x9E3779B97F4A7C15ull;
    bad = tried = 0;
    for (int i = 0; i < 200000; i++) {
        char s[24];
        x ^= x << 13, x ^= x >> 7, x ^= x << 17;
        size_t n = (size_t)(x % 25);
        for (size_t k = 0; k < n; k++) {
            x ^= x << 13, x ^= x >> 7, x ^= x << 17;
            s[k] = chars[x % (sizeof(chars) - 1)];
        }
        bad += !b64_agrees(s, n, flags[i % 4]);
        tried++;
    }
    ok(!bad, "base64 decoder: agrees with the reference on %zu random strings (%zu differ)", tried,
       bad);
}

/* The hash index over a plain array of keys. */
typedef struct {
    char keys[5000][12];
} keyset_t;

static void key_of(const void *ctx, uint32_t id, const uint8_t **k, size_t *n)
{
    const keyset_t *ks = ctx;
    *k = (const uint8_t *)ks->keys[id];
    *n = strlen(ks->keys[id]);
}

/* Keys of arbitrary ids ("b<id>"), for ids beyond any array. */
static void key_big(const void *ctx, uint32_t id, const uint8_t **k, size_t *n)
{
    static char buf[16];
    (void)ctx;
    *n = (size_t)snprintf(buf, sizeof(buf), "b%u", id);
    *k = (const uint8_t *)buf;
}

/* Random inserts and removals at every load up to 3/4, with long clusters (few distinct homes
 * at small capacities), against a plain array of what is present: every key is found exactly
 * when present, after every step of a run. */
static void test_hidx_churn(void)
{
    static keyset_t ks;
    static bool in[5000];
    crdt__hidx_t h;
    crdt__hidx_init(&h);
    for (uint32_t i = 0; i < 5000; i++)
        snprintf(ks.keys[i], sizeof(ks.keys[i]), "c%u", i);
    uint64_t x = 0x2545F4914F6CDD1Dull;
    size_t wrong = 0, present = 0;
    for (int step = 0; step < 60000; step++) {
        x ^= x << 13, x ^= x >> 7, x ^= x << 17;
        uint32_t id = (uint32_t)(x % (step < 30000 ? 600 : 5000));
        if (in[id]) {
            crdt__hidx_remove(&h, id, key_of, &ks);
            in[id] = false, present--;
        } else {
            if (crdt__hidx_insert(&h, id, key_of, &ks) < 0)
                wrong++;
            in[id] = true, present++;
        }
        if (step % 997 == 0 || step == 59999)
            for (uint32_t k = 0; k < 5000; k++) {
                uint32_t got = crdt__hidx_find(&h, ks.keys[k], strlen(ks.keys[k]), key_of, &ks);
                wrong += got != (in[k] ? k : CRDT__NO_ID);
            }
    }
    ok(!wrong && h.count == present, "hidx: 60,000 random inserts and removals, every lookup right "
       "(%zu wrong, %zu present)", wrong, present);
    crdt__hidx_free(&h);
}

/* The index's own hash: every length up to 80 (each path: 0, 1-3, 4-7, 8-16, the 16-byte steps)
 * and every single-bit change of a 24-byte key gives a different value, the seed changes it, and
 * 40,000 short keys that differ in one position spread evenly over the slots' home bits and
 * their 4-bit tags (a chi-square bound far above what an even spread gives). */
static void test_hidx_hash(void)
{
    uint8_t buf[80];
    for (int i = 0; i < 80; i++)
        buf[i] = (uint8_t)(i * 37 + 11);
    uint64_t seen[81 + 24 * 8];
    size_t nseen = 0, dups = 0;
    for (size_t n = 0; n <= 80; n++)
        seen[nseen++] = crdt__hidx_hash_bytes(buf, n, 7);
    for (int bit = 0; bit < 24 * 8; bit++) {
        buf[bit / 8] ^= (uint8_t)(1u << (bit % 8));
        seen[nseen++] = crdt__hidx_hash_bytes(buf, 24, 7);
        buf[bit / 8] ^= (uint8_t)(1u << (bit % 8));
    }
    for (size_t i = 0; i < nseen; i++)
        for (size_t j = i + 1; j < nseen; j++)
            dups += seen[i] == seen[j];
    is_int(dups, 0, "hidx hash: every length 0..80 and every bit flip of a key, all different");
    ok(crdt__hidx_hash_bytes("member:1", 8, 1) != crdt__hidx_hash_bytes("member:1", 8, 2),
       "hidx hash: the seed changes it");
    /* Keys whose first 8 bytes (or whose 16-byte blocks' first halves) are a constant of the
     * hash: with an operand that was only the key XOR that constant, their product was 0 and
     * they all hashed alike whatever the seed. Checked for wyhash's four constants, the ones
     * hash.c uses, at three seeds. */
    static const uint64_t consts[] = {0xa0761d6478bd642full, 0xe7037ed1a0b428dbull,
                                      0x8ebc6af09c88c6e3ull, 0x589965cc75374cc3ull};
    size_t crafted_dups = 0;
    for (int c = 0; c < 4; c++)
        for (uint64_t sd = 1; sd <= 3; sd++) {
            uint64_t hs[64];
            for (int i = 0; i < 64; i++) {
                uint8_t k[40];
                for (int b = 0; b < 8; b++)
                    k[b] = k[16 + b] = (uint8_t)(consts[c] >> (8 * b));
                memset(k + 8, i, 8);
                memset(k + 24, i, 16);
                hs[i] = crdt__hidx_hash_bytes(k, (i & 1) ? 16 : 40, sd);
            }
            for (int i = 0; i < 64; i++)
                for (int j = i + 1; j < 64; j++)
                    crafted_dups += hs[i] == hs[j];
        }
    is_int(crafted_dups, 0, "hidx hash: keys led by one of its constants do not collide");
    static uint32_t home[256], tag[16];
    for (uint32_t i = 0; i < 40000; i++) {
        char k[16];
        int n = snprintf(k, sizeof(k), "m%08u", i);
        uint64_t h = crdt__hidx_hash_bytes(k, (size_t)n, 0x1234);
        home[h & 255]++;
        tag[h >> 60]++;
    }
    double chi_home = 0, chi_tag = 0;
    for (int i = 0; i < 256; i++)
        chi_home += (home[i] - 156.25) * (home[i] - 156.25) / 156.25;
    for (int i = 0; i < 16; i++)
        chi_tag += (tag[i] - 2500.0) * (tag[i] - 2500.0) / 2500.0;
    ok(chi_home < 400 && chi_tag < 60, "hidx hash: home bits and tags spread evenly (chi-square "
       "%.0f over 255 degrees, %.0f over 15)", chi_home, chi_tag);
}

/* The salt (crdt.wasm's random bytes from JavaScript) changes the seed an index gets at one
 * address, and so where its members go. */
static void test_hidx_salt(void)
{
    crdt__hidx_t h;
    crdt__hidx_init(&h);
    uint64_t unsalted = h.seed;
    crdt__hidx_set_salt(0x9d2c5680a1b2c3d4ull);
    crdt__hidx_init(&h);
    uint64_t salted = h.seed;
    crdt__hidx_set_salt(0x1ull);
    crdt__hidx_init(&h);
    uint64_t other = h.seed;
    crdt__hidx_set_salt(0);
    crdt__hidx_init(&h);
    ok(salted != unsalted && other != salted && other != unsalted,
       "hidx salt: each salt gives an index at the same address another seed");
    ok(h.seed == unsalted, "hidx salt: 0 is the address alone again");
}

/* Ids past the 24 bits a tagged slot has: the index turns its tags off and keeps every id. */
static void test_hidx_big_ids(void)
{
    crdt__hidx_t h;
    crdt__hidx_init(&h);
    uint32_t ids[2000];
    for (uint32_t i = 0; i < 2000; i++)
        ids[i] = i < 1000 ? i * 16001u : (1u << 24) - 4 + i * 3u; /* small, then across 2^24 */
    int ok_before = 1;
    for (uint32_t i = 0; i < 2000; i++) {
        if (i == 1000) /* still tagged: every small id found */
            for (uint32_t j = 0; j < 1000; j++) {
                char k[16];
                int n = snprintf(k, sizeof(k), "b%u", ids[j]);
                ok_before &= crdt__hidx_find(&h, k, (size_t)n, key_big, NULL) == ids[j];
            }
        if (crdt__hidx_insert(&h, ids[i], key_big, NULL) < 0)
            ok_before = 0;
    }
    ok(ok_before, "hidx: 1000 small ids found with tags on");
    int found = 1;
    for (uint32_t i = 0; i < 2000; i++) {
        char k[16];
        int n = snprintf(k, sizeof(k), "b%u", ids[i]);
        found &= crdt__hidx_find(&h, k, (size_t)n, key_big, NULL) == ids[i];
    }
    ok(found && h.count == 2000 && (h.mask & 0x80000000u),
       "hidx: ids past 2^24 turned the tags off; they and the earlier ones are all found");
    for (uint32_t i = 0; i < 2000; i += 2)
        crdt__hidx_remove(&h, ids[i], key_big, NULL);
    int right = 1;
    for (uint32_t i = 0; i < 2000; i++) {
        char k[16];
        int n = snprintf(k, sizeof(k), "b%u", ids[i]);
        uint32_t id = crdt__hidx_find(&h, k, (size_t)n, key_big, NULL);
        right &= (i % 2) ? id == ids[i] : id == CRDT__NO_ID;
    }
    ok(right && h.count == 1000, "hidx: removal after the tags went off");
    crdt__hidx_free(&h);
}

static void test_hidx(void)
{
    static keyset_t ks;
    crdt__hidx_t h;
    crdt__hidx_init(&h);
    is_int(crdt__hidx_find(&h, "x", 1, key_of, &ks), CRDT__NO_ID, "hidx: empty finds nothing");
    for (uint32_t i = 0; i < 5000; i++) {
        snprintf(ks.keys[i], sizeof(ks.keys[i]), "k%u", i * 7919u);
        crdt__hidx_insert(&h, i, key_of, &ks);
    }
    int found = 1;
    for (uint32_t i = 0; i < 5000; i++)
        found &= crdt__hidx_find(&h, ks.keys[i], strlen(ks.keys[i]), key_of, &ks) == i;
    ok(found && h.count == 5000, "hidx: 5000 inserted ids are all found");
    ok(crdt__hidx_memory(&h) <= 5000 * 4 * 2 * 2, "hidx: 4-byte slots, load >= 3/8 (%zu bytes)",
       crdt__hidx_memory(&h));
    for (uint32_t i = 0; i < 5000; i += 2)
        crdt__hidx_remove(&h, i, key_of, &ks);
    int right = 1;
    for (uint32_t i = 0; i < 5000; i++) {
        uint32_t id = crdt__hidx_find(&h, ks.keys[i], strlen(ks.keys[i]), key_of, &ks);
        right &= (i % 2) ? id == i : id == CRDT__NO_ID;
    }
    ok(right && h.count == 2500, "hidx: backward-shift deletion keeps the others reachable");
    ok(crdt__hidx_find(&h, "nope", 4, key_of, &ks) == CRDT__NO_ID, "hidx: absent key");
    crdt__hidx_free(&h);

    ok(crdt_hash64("abc", 3, 1) != crdt_hash64("abd", 3, 1) &&
           crdt_hash64("abc", 3, 1) != crdt_hash64("abc", 3, 2) &&
           crdt_hash64("", 0, 1) != crdt_hash64("\0", 1, 1),
       "hash: differs by content, seed and length");
    /* crdt_hash64 is promised stable (replicas compare fingerprints made with it): pin it */
    is_int(crdt_hash64("abc", 3, 1), 0xa5a126407165d6dbull, "hash: stable value, short input");
    is_int(crdt_hash64("0123456789abcdefXYZ", 19, 0), 0x39be430712e7ede9ull,
           "hash: stable value, both lanes and the tail");
}

static void test_blobs(void)
{
    crdt__blobs_t b = {0};
    uint32_t o1, o2;
    ok(crdt__blobs_add(&b, "hello", 5, &o1) == 0 && crdt__blobs_add(&b, "world", 5, &o2) == 0,
       "blobs: add");
    ok(memcmp(b.data + o1, "hello", 5) == 0 && memcmp(b.data + o2, "world", 5) == 0,
       "blobs: offsets address the bytes");
    crdt__blobs_drop(&b, 5);
    ok(!crdt__blobs_wants_compaction(&b), "blobs: small garbage does not ask for compaction");
    crdt__blobs_free(&b);
    ok(crdt__bytes_cmp("ab", 2, "abc", 3) < 0 && crdt__bytes_cmp("b", 1, "abc", 3) > 0 &&
           crdt__bytes_cmp("", 0, "", 0) == 0,
       "bytes_cmp: bytewise, a prefix first");
}

static void test_text_bytes(void)
{
    ok(crdt_utf8_text("feed:1", 6) && crdt_utf8_text("", 0), "utf8: ASCII and empty are text");
    ok(crdt_utf8_text("caf\xc3\xa9 \xe2\x82\xac \xf0\x9f\x98\x80", 14), "utf8: 2-, 3-, 4-byte forms");
    ok(!crdt_utf8_text("a\0b", 3), "utf8: NUL is not text");
    ok(!crdt_utf8_text("\xc0\xaf", 2) && !crdt_utf8_text("\xe0\x80\xaf", 3) &&
           !crdt_utf8_text("\xf0\x80\x80\xaf", 4),
       "utf8: overlong forms refused");
    ok(!crdt_utf8_text("\xed\xa0\x80", 3) && !crdt_utf8_text("\xf4\x90\x80\x80", 4),
       "utf8: surrogates and > U+10FFFF refused");
    ok(!crdt_utf8_text("\xc3", 1) && !crdt_utf8_text("\x80", 1) && !crdt_utf8_text("\xff", 1),
       "utf8: truncated, stray continuation, FF refused");

    json_t *t = crdt_json_bytes("post:1", 6);
    ok(json_is_string(t) && strcmp(json_string_value(t), "post:1") == 0, "json bytes: text");
    json_t *b = crdt_json_bytes("\x00\xff", 2);
    ok(json_is_object(b) && strcmp(json_string_value(json_object_get(b, "base64")), "AP8=") == 0,
       "json bytes: binary as {\"base64\"}");
    uint8_t *out = NULL;
    size_t n = 0;
    const char *why = NULL;
    ok(crdt_json_get_bytes(t, 100, &out, &n, &why) == 0 && n == 6 && !memcmp(out, "post:1", 6),
       "json bytes: text reads back");
    crdt_free(out);
    ok(crdt_json_get_bytes(b, 100, &out, &n, &why) == 0 && n == 2 && !memcmp(out, "\x00\xff", 2),
       "json bytes: binary reads back");
    crdt_free(out);
    ok(crdt_json_get_bytes(t, 5, &out, &n, &why) == CRDT_EDECODE && why, "json bytes: max bounds text");
    ok(crdt_json_get_bytes(b, 1, &out, &n, &why) == CRDT_EDECODE, "json bytes: max bounds binary");
    json_t *bad = json_pack("{s:s}", "base64", "AP9=");
    ok(crdt_json_get_bytes(bad, 100, &out, &n, &why) == CRDT_EDECODE, "json bytes: non-canonical base64 refused");
    json_decref(bad);
    bad = json_pack("{s:s,s:i}", "base64", "AP8=", "x", 1);
    ok(crdt_json_get_bytes(bad, 100, &out, &n, &why) == CRDT_EDECODE, "json bytes: extra fields refused");
    json_decref(bad);
    bad = json_integer(3);
    ok(crdt_json_get_bytes(bad, 100, &out, &n, &why) == CRDT_EDECODE && why, "json bytes: a number refused");
    json_decref(bad);
    ok(crdt_json_get_bytes(b, SIZE_MAX, &out, &n, &why) == 0 && n == 2, "json bytes: SIZE_MAX, no bound");
    crdt_free(out);
    json_t *e = crdt_json_bytes("", 0);
    ok(crdt_json_get_bytes(e, 0, &out, &n, &why) == 0 && n == 0 && out, "json bytes: empty");
    crdt_free(out);
    json_decref(e);
    json_decref(t);
    json_decref(b);
}

int main(void)
{
    test_hlc();
    test_max_ts();
    test_crc_and_buf();
    test_varints();
    test_frame();
    test_names();
    test_base64();
    test_base64_decoder();
    test_hidx();
    test_hidx_big_ids();
    test_hidx_churn();
    test_hidx_hash();
    test_hidx_salt();
    test_blobs();
    test_text_bytes();
    return done_testing();
}
