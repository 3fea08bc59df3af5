/* test_store.c - the store interface over the embedded replica; crdt_mut_t; varints and base64 */
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "crdt_store.h"
#include "list_check.h"
#include "tap.h"

/* ---- shared byte codecs ---------------------------------------------------------------------- */

static void test_varint(void)
{
    const uint64_t vals[] = {0, 1, 127, 128, 300, 16383, 16384, UINT32_MAX, UINT64_MAX};
    for (size_t i = 0; i < sizeof(vals) / sizeof(vals[0]); i++) {
        uint8_t b[CRDT_VARINT_MAX];
        size_t n = crdt_varint_put(b, vals[i]);
        is_int((int)n, (int)crdt_varint_len(vals[i]), "varint_len(%llu)",
               (unsigned long long)vals[i]);
        size_t pos = 0;
        uint64_t v = 0;
        ok(crdt_varint_get(b, n, &pos, &v) == 0 && v == vals[i] && pos == n,
           "varint %llu round-trips in %zu bytes", (unsigned long long)vals[i], n);
        pos = 0;
        ok(n == 1 || crdt_varint_get(b, n - 1, &pos, &v) == CRDT_EDECODE,
           "truncated varint %llu refused", (unsigned long long)vals[i]);
        is_int((int)pos, 0, "a refused varint leaves the position alone");
    }
    const uint8_t noncanon[] = {0x80, 0x00};
    size_t pos = 0;
    uint64_t v;
    is_int(crdt_varint_get(noncanon, 2, &pos, &v), CRDT_EDECODE, "non-canonical varint refused");
    const uint8_t toolong[] = {0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x02};
    is_int(crdt_varint_get(toolong, 10, &pos, &v), CRDT_EDECODE, "a 65-bit varint is refused");
    crdt_buf_t buf = {0};
    ok(crdt_buf_put_varint(&buf, 300) == 0 && buf.len == 2 && buf.data[0] == 0xac &&
           buf.data[1] == 0x02,
       "crdt_buf_put_varint appends LEB128");
    crdt_buf_free(&buf);
}

static void test_base64(void)
{
    /* RFC 4648's test vectors, in both alphabets, with and without padding */
    const char *in[] = {"", "f", "fo", "foo", "foob", "fooba", "foobar"};
    const char *std[] = {"", "Zg==", "Zm8=", "Zm9v", "Zm9vYg==", "Zm9vYmE=", "Zm9vYmFy"};
    const char *raw[] = {"", "Zg", "Zm8", "Zm9v", "Zm9vYg", "Zm9vYmE", "Zm9vYmFy"};
    for (int i = 0; i < 7; i++) {
        size_t n;
        char *s = crdt_base64_encode(in[i], strlen(in[i]), &n);
        is(s, std[i], "base64(\"%s\")", in[i]);
        crdt_free(s);
        s = crdt_base64_encode_ex(in[i], strlen(in[i]), CRDT_B64_URL | CRDT_B64_NOPAD, &n);
        is(s, raw[i], "base64url unpadded(\"%s\")", in[i]);
        is_int((int)n, (int)crdt_base64_encoded_len(strlen(in[i]), CRDT_B64_NOPAD),
               "encoded_len unpadded");
        crdt_free(s);
        uint8_t *d;
        size_t dl;
        ok(crdt_base64_decode(std[i], strlen(std[i]), &d, &dl) == 0 && dl == strlen(in[i]) &&
               memcmp(d, in[i], dl) == 0,
           "decode \"%s\"", std[i]);
        crdt_free(d);
        ok(crdt_base64_decode_ex(raw[i], strlen(raw[i]), CRDT_B64_URL | CRDT_B64_NOPAD, &d, &dl) ==
                   0 &&
               dl == strlen(in[i]) && memcmp(d, in[i], dl) == 0,
           "decode unpadded \"%s\"", raw[i]);
        crdt_free(d);
    }
    const uint8_t bin[] = {0xfb, 0xff, 0xfe};
    char out[8];
    size_t n = crdt_base64_encode_into(out, bin, 3, CRDT_B64_URL);
    ok(n == 4 && memcmp(out, "-__-", 4) == 0, "URL alphabet uses - and _");
    n = crdt_base64_encode_into(out, bin, 3, CRDT_B64_STD);
    ok(n == 4 && memcmp(out, "+//+", 4) == 0, "standard alphabet uses + and /");
    uint8_t *d;
    size_t dl;
    is_int(crdt_base64_decode("+//+", 4, &d, &dl), 0, "+//+ decodes in the standard alphabet");
    crdt_free(d);
    is_int(crdt_base64_decode_ex("+//+", 4, CRDT_B64_URL, &d, &dl), CRDT_EDECODE,
           "+ and / are refused in the URL alphabet");
    is_int(crdt_base64_decode("Zg=", 3, &d, &dl), CRDT_EDECODE, "incomplete padding refused");
    is_int(crdt_base64_decode("Zh==", 4, &d, &dl), CRDT_EDECODE, "non-zero bits under padding");
    is_int(crdt_base64_decode("Zg", 2, &d, &dl), CRDT_EDECODE, "the standard form needs padding");
    is_int(crdt_base64_decode_ex("Z", 1, CRDT_B64_NOPAD, &d, &dl), CRDT_EDECODE,
           "a lone character is refused");
    is_int(crdt_base64_decode_ex("Zg=", 3, CRDT_B64_NOPAD, &d, &dl), CRDT_EDECODE,
           "partial padding is refused even where padding is optional");
    is_int(crdt_base64_decode("Zm9v\n", 5, &d, &dl), CRDT_EDECODE, "whitespace refused");
}

/* ---- crdt_mut_t ------------------------------------------------------------------------------ */

static void test_mut(void)
{
    crdt_obj_t *tl = crdt_timeline_new(10), *d = NULL;
    crdt_mut_t m = {
        .type = CRDT_TIMELINE, .kind = CRDT_MUT_ADD, .bytes = "a", .len = 1, .score = 5};
    is_int(crdt_mut_apply(tl, &m, 1, &d), 1, "timeline add through crdt_mut_apply");
    ok(d && crdt_timeline_card(d) == 1, "the delta holds the entry");
    crdt_obj_free(d);
    m.kind = CRDT_MUT_REMOVE;
    is_int(crdt_mut_apply(tl, &m, 1, NULL), 1, "remove at an equal score wins");
    is_int((int)crdt_timeline_card(tl), 0, "and the entry is gone");
    m.kind = CRDT_MUT_SET;
    is_int(crdt_mut_apply(tl, &m, 1, NULL), CRDT_EINVAL, "a kind the type lacks: EINVAL");
    m.type = CRDT_LWWREG;
    is_int(crdt_mut_apply(tl, &m, 1, NULL), CRDT_ETYPE, "another type: ETYPE");
    crdt_obj_free(tl);

    crdt_obj_t *reg = crdt_obj_new(CRDT_LWWREG);
    crdt_mut_t set = {.type = CRDT_LWWREG, .kind = CRDT_MUT_SET, .bytes = "v", .len = 1};
    ok(crdt_mut_needs_ts(&set), "an LWW register set needs a timestamp");
    is_int(crdt_mut_apply(reg, &set, 1, NULL), CRDT_EINVAL, "and is refused without one");
    set.ts = (crdt_hlc_ts_t){.ms = 10, .node = 1};
    is_int(crdt_mut_apply(reg, &set, 1, NULL), 1, "set with a timestamp");
    crdt_obj_free(reg);

    crdt_obj_t *pn = crdt_obj_new(CRDT_PNCOUNTER), *g = crdt_obj_new(CRDT_GCOUNTER);
    crdt_mut_t incr = {.type = CRDT_PNCOUNTER, .kind = CRDT_MUT_INCR, .n = -3};
    int64_t v = 0;
    ok(crdt_mut_apply(pn, &incr, 7, NULL) == 1 && crdt_counter_value(pn, &v) == 0 && v == -3,
       "pncounter decrement");
    incr.type = CRDT_GCOUNTER;
    is_int(crdt_mut_apply(g, &incr, 7, NULL), CRDT_EINVAL, "a gcounter refuses a negative add");
    crdt_mut_t merge = {.type = CRDT_PNCOUNTER, .kind = CRDT_MUT_MERGE, .state = pn};
    crdt_obj_t *pn2 = crdt_obj_new(CRDT_PNCOUNTER);
    ok(crdt_mut_apply(pn2, &merge, 1, &d) == 1 && d && crdt_obj_equal(pn2, pn),
       "merge joins the state and returns it as the delta");
    crdt_obj_free(d);
    is_int(crdt_mut_apply(g, &merge, 1, NULL), CRDT_ETYPE, "merge into another type: ETYPE");
    crdt_obj_free(pn);
    crdt_obj_free(pn2);
    crdt_obj_free(g);
}

/* ---- the embedded store -----------------------------------------------------------------------
 */

typedef struct events {
    int changes;
    uint64_t last_seq, last_origin, durable;
    int durables;
} events_t;

static void ev_change(void *ud, const void *key, size_t klen, uint64_t seq, const crdt_obj_t *delta,
                      uint64_t origin)
{
    (void)key, (void)klen, (void)delta;
    events_t *e = ud;
    e->changes++;
    e->last_seq = seq;
    e->last_origin = origin;
}

static void ev_durable(void *ud, uint64_t d)
{
    events_t *e = ud;
    e->durables++;
    e->durable = d;
}

typedef struct res {
    int calls, rc;
    uint64_t seq;
    const crdt_obj_t *obj;
    size_t card;
    uint8_t mark[64];
    size_t mark_len;
    size_t n;
} res_t;

static void on_write(void *ud, int rc, uint64_t seq)
{
    res_t *r = ud;
    r->calls++;
    r->rc = rc;
    r->seq = seq;
}

static void on_get(void *ud, int rc, const crdt_obj_t *o)
{
    res_t *r = ud;
    r->calls++;
    r->rc = rc;
    r->obj = o;
    r->card = o && crdt_obj_type(o) == CRDT_TIMELINE ? crdt_timeline_card(o) : 0;
}

static void on_many(void *ud, int rc, const crdt_obj_t *const *objs, size_t n)
{
    res_t *r = ud;
    r->calls++;
    r->rc = rc;
    r->n = 0;
    for (size_t i = 0; i < n; i++)
        r->n += objs[i] != NULL;
}

static int feed_each(const void *key, size_t klen, uint64_t seq, const crdt_obj_t *st, void *ud)
{
    (void)key, (void)klen, (void)seq, (void)st;
    ((res_t *)ud)->n++;
    return 0;
}

static int scan_each(void *ud, const void *key, size_t klen, const crdt_obj_t *o)
{
    (void)key, (void)klen, (void)o;
    ((res_t *)ud)->n++;
    return 0;
}

static void on_done(void *ud, int rc, uint64_t next)
{
    res_t *r = ud;
    r->calls++;
    r->rc = rc;
    r->seq = next;
}

static void on_mark(void *ud, int rc, const void *p, size_t n)
{
    res_t *r = ud;
    r->calls++;
    r->rc = rc;
    r->mark_len = n;
    if (p && n <= sizeof(r->mark))
        memcpy(r->mark, p, n);
}

static void on_status(void *ud, int rc)
{
    res_t *r = ud;
    r->calls++;
    r->rc = rc;
}

static void on_fp(void *ud, int rc, uint64_t fp)
{
    res_t *r = ud;
    r->calls++;
    r->rc = rc;
    r->seq = fp;
}

static void test_store(const char *dir)
{
    diag("embedded store %s", dir ? "with a data directory" : "in memory");
    crdt_replica_config_t cfg;
    crdt_replica_config_init(&cfg);
    cfg.dir = dir;
    cfg.node_id = 3;
    cfg.fsync = CRDT_FSYNC_ALWAYS;
    crdt_error_t err = {0};
    crdt_store_t *st = crdt_store_embedded_open(&cfg, &err);
    ok(st != NULL, "open: %s", err.text);
    if (!st)
        return;
    is(st->ops->name, "embedded", "the store names itself");
    ok(crdt_store_embedded_replica(st) != NULL, "and gives its replica for introspection");
    events_t ev = {0};
    crdt_store_set_events(st, &(crdt_store_events_t){ev_change, ev_durable, &ev, NULL});
    is_int((int)crdt_store_node_id(st), 3, "node id");

    res_t r = {0};
    crdt_mut_t add = {
        .type = CRDT_TIMELINE, .kind = CRDT_MUT_ADD, .bytes = "p1", .len = 2, .score = 1};
    crdt_store_write(st, "feed", 4, &add, on_write, &r);
    ok(r.calls == 1 && r.rc == 1 && r.seq == 1, "write completes at once: rc 1, seq 1");
    ok(ev.changes == 1 && ev.last_seq == 1 && ev.last_origin == CRDT_ORIGIN_LOCAL,
       "the change event reports seq and a local origin");
    memset(&r, 0, sizeof(r));
    crdt_store_write(st, "feed", 4, &add, on_write, &r);
    ok(r.calls == 1 && r.rc == 0 && r.seq == 0, "the same write again is a no-op");
    is_int(ev.changes, 1, "and no event");

    crdt_mut_t set = {.type = CRDT_LWWREG, .kind = CRDT_MUT_SET, .bytes = "x", .len = 1};
    memset(&r, 0, sizeof(r));
    crdt_store_write(st, "feed", 4, &set, on_write, &r);
    is_int(r.rc, CRDT_ETYPE, "a write of another type: ETYPE");
    memset(&r, 0, sizeof(r));
    crdt_store_write(st, "reg", 3, &set, on_write, &r);
    is_int(r.rc, 1, "an LWW write without a timestamp is stamped by the store");

    crdt_obj_t *remote = crdt_timeline_new(0), *d = NULL;
    crdt_timeline_add(remote, "p2", 2, 2, &d);
    memset(&r, 0, sizeof(r));
    crdt_store_apply(st, "feed", 4, d, 9, on_write, &r);
    ok(r.rc == 1 && r.seq == 3, "apply of a remote delta: seq 3");
    is_int((int)ev.last_origin, 9, "the event carries the peer's origin");
    crdt_obj_free(d);
    crdt_obj_free(remote);

    memset(&r, 0, sizeof(r));
    crdt_store_get(st, "feed", 4, on_get, &r);
    ok(r.calls == 1 && r.rc == 0 && r.card == 2, "get: both entries");
    memset(&r, 0, sizeof(r));
    crdt_store_get(st, "nope", 4, on_get, &r);
    ok(r.calls == 1 && r.rc == 0 && r.obj == NULL, "get of an absent key: NULL");
    crdt_bytes_t keys[3] = {{"feed", 4}, {"nope", 4}, {"reg", 3}};
    memset(&r, 0, sizeof(r));
    crdt_store_get_many(st, keys, 3, on_many, &r);
    ok(r.calls == 1 && r.rc == 0 && r.n == 2, "get_many: two of three keys present");

    memset(&r, 0, sizeof(r));
    crdt_store_changes(st, 0, 100, feed_each, on_done, &r);
    ok(r.calls == 1 && r.rc == 0 && r.n == 2 && r.seq == 3,
       "changes: two keys, continue from seq 3");
    memset(&r, 0, sizeof(r));
    crdt_store_scan(st, 0, 1, scan_each, on_done, &r);
    ok(r.n == 1 && r.seq != 0, "scan of one key gives a cursor to go on");
    uint64_t cur = r.seq;
    r.n = 0;
    crdt_store_scan(st, cur, 10, scan_each, on_done, &r);
    ok(r.n == 1 && r.seq == 0, "and the rest of the keys end the scan");

    memset(&r, 0, sizeof(r));
    crdt_store_fingerprint(st, "feed", 4, on_fp, &r);
    ok(r.rc == 0 && r.seq != 0, "fingerprint of a key");
    memset(&r, 0, sizeof(r));
    crdt_store_fingerprint(st, "nope", 4, on_fp, &r);
    is_int(r.rc, CRDT_EINVAL, "fingerprint of an absent key: EINVAL");

    ok(crdt_store_flush(st) == 0, "flush");
    is_int((int)crdt_store_durable_seq(st), 3, "everything durable after flush (fsync always)");
    ok(ev.durables >= 1 && ev.durable == 3, "the durable event told 3");
    ok(crdt_store_last_error(st) == NULL, "healthy");
    crdt_store_stats_t sts;
    crdt_store_stats(st, &sts);
    ok(sts.keys == 2 && sts.keys_by_type[CRDT_TIMELINE] == 1 && sts.writes == 3,
       "stats: 2 keys, 3 writes");

    memset(&r, 0, sizeof(r));
    crdt_store_mark_get(st, "peers", on_mark, &r);
    ok(r.calls == 1 && r.rc == 0 && r.mark_len == 0, "a mark never put reads as empty");
    memset(&r, 0, sizeof(r));
    crdt_store_mark_put(st, "peers", "abc", 3, on_status, &r);
    ok(r.calls == 1 && r.rc == 0, "mark put");
    crdt_store_mark_put(st, "peers", "hello", 5, on_status, &r);
    memset(&r, 0, sizeof(r));
    crdt_store_mark_get(st, "peers", on_mark, &r);
    ok(r.rc == 0 && r.mark_len == 5 && memcmp(r.mark, "hello", 5) == 0,
       "a second put replaces the mark");
    memset(&r, 0, sizeof(r));
    crdt_store_mark_put(st, "../escape", "x", 1, on_status, &r);
    is_int(r.rc, CRDT_EINVAL, "a mark name with a path is refused");
    ok(crdt_store_mark_name_ok("peers") && crdt_store_mark_name_ok("log-positions.2_a"),
       "mark names of [a-z0-9._-] are valid");
    ok(!crdt_store_mark_name_ok(".hidden") && !crdt_store_mark_name_ok("") &&
           !crdt_store_mark_name_ok(NULL) && !crdt_store_mark_name_ok("Peers") &&
           !crdt_store_mark_name_ok("a/b"),
       "a leading dot, an empty name, upper case and a slash are not");
    char long_name[66];
    memset(long_name, 'a', 65);
    long_name[65] = '\0';
    ok(!crdt_store_mark_name_ok(long_name) && crdt_store_mark_name_ok(long_name + 1),
       "64 bytes at most");
    crdt_store_close(st);

    if (dir) {
        st = crdt_store_embedded_open(&cfg, &err);
        ok(st != NULL, "reopen");
        if (!st)
            return;
        memset(&r, 0, sizeof(r));
        crdt_store_mark_get(st, "peers", on_mark, &r);
        ok(r.rc == 0 && r.mark_len == 5 && memcmp(r.mark, "hello", 5) == 0,
           "the mark survives a restart");
        memset(&r, 0, sizeof(r));
        crdt_store_get(st, "feed", 4, on_get, &r);
        is_int((int)r.card, 2, "and so does the data");
        is_int((int)crdt_store_last_seq(st), 3, "and the sequence");
        crdt_store_close(st);
    }
}

/* ---- list_keys: ordered, prefix-bounded pages (list_check.h) ------------------------------- */

static bool wait_now(bool *done, void *ctx)
{
    (void)ctx;
    return *done; /* the embedded store completes before returning */
}

static bool wait_deferred(bool *done, void *ctx)
{
    for (int i = 0; i < 100 && !*done; i++)
        crdt_store_deferred_run(ctx);
    return *done;
}

static crdt_store_t *open_list_store(const char *dir)
{
    crdt_replica_config_t cfg;
    crdt_replica_config_init(&cfg);
    cfg.dir = dir;
    cfg.node_id = 4;
    cfg.fsync = CRDT_FSYNC_NO;
    crdt_error_t err = {0};
    crdt_store_t *st = crdt_store_embedded_open(&cfg, &err);
    ok(st != NULL, "open a store for listings: %s", err.text);
    return st;
}

static void test_list(const char *dir)
{
    diag("list_keys on the embedded store %s", dir ? "with a data directory" : "in memory");
    crdt_store_t *st = open_list_store(dir);
    if (!st)
        return;
    lc_model_t m = {0};
    ok(lc_populate(st, wait_now, NULL, &m, 'k', 3000), "3,000 keys written (some deleted)");
    lc_check(st, wait_now, NULL, &m, "3,000 keys");
    /* the index exists now: keys created from here on are added to it (chunks split) */
    ok(lc_populate(st, wait_now, NULL, &m, 'j', 2500), "2,500 more keys after the first listing");
    lc_check(st, wait_now, NULL, &m, "5,500 keys, 2,500 added to the built index");
    crdt_store_close(st);
    if (dir) {
        /* recovery: the index is built again, from the recovered keys */
        st = open_list_store(dir);
        if (!st) {
            free(m.live);
            return;
        }
        lc_check(st, wait_now, NULL, &m, "after a restart");
        crdt_store_close(st);
        st = open_list_store(dir);
        if (st) { /* keys written after a restart, before any listing */
            ok(lc_populate(st, wait_now, NULL, &m, 'i', 500), "500 keys after a second restart");
            lc_check(st, wait_now, NULL, &m, "keys written after a restart before listing");
            crdt_store_close(st);
        }
    } else {
        /* the deferred store forwards the call, completing later */
        crdt_store_t *in = open_list_store(NULL);
        crdt_store_t *d = in ? crdt_store_deferred_wrap(in) : NULL;
        ok(d != NULL, "a deferred store over the embedded one");
        if (d) {
            lc_model_t dm = {0};
            ok(lc_populate(d, wait_deferred, d, &dm, 'k', 700), "700 keys through it");
            lc_res_t r = {0};
            crdt_store_list_keys(d, "k:", 2, NULL, 0, 5, lc_each, lc_on_done, &r);
            ok(!r.done && crdt_store_deferred_pending(d) == 1,
               "a deferred listing completes later, not inside the call");
            wait_deferred(&r.done, d);
            ok(r.done && r.n == 5, "and then lists");
            free(r.keys);
            lc_check(d, wait_deferred, d, &dm, "deferred store");
            free(dm.live);
            crdt_store_close(d);
        }
    }
    free(m.live);
}

int main(void)
{
    test_varint();
    test_base64();
    test_mut();
    test_store(NULL);
    test_list(NULL);
    char tmpl[] = "/tmp/test_store_XXXXXX";
    const char *tmp = getenv("TMPDIR");
    char dir[4096];
    snprintf(dir, sizeof(dir), "%s/test_store_XXXXXX", tmp && *tmp ? tmp : "/tmp");
    if (mkdtemp(dir)) {
        char sub[4200];
        snprintf(sub, sizeof(sub), "%s/data", dir);
        test_store(sub);
        snprintf(sub, sizeof(sub), "%s/list", dir);
        test_list(sub);
        char cmd[4300];
        snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir);
        if (system(cmd) != 0)
            diag("could not remove %s", dir);
    } else {
        ok(0, "mkdtemp %s", tmpl);
    }
    return done_testing();
}
