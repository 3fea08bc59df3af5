/* test_internal_keys.c - the replica's internal keys (0x00 'c' '/', crdtd's op-id marks): counted
 * apart, out of store scans, unbounded timelines, the same after a restart; and CRDT_MUT_DELETE
 * through the embedded store (logged, replayed, stamped past what it removes) */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "crdt_store.h"
#include "tap.h"

static const uint8_t MARK[] = {0, 'c', '/', 'i', 'd', 's', '/', '7'};

static void wrote(void *ud, int rc, uint64_t seq)
{
    (void)seq;
    *(int *)ud = rc;
}

static int write_tl(crdt_store_t *st, const void *key, size_t klen, const char *m, double score)
{
    crdt_mut_t mu = {
        .type = CRDT_TIMELINE, .kind = CRDT_MUT_ADD, .bytes = m, .len = strlen(m), .score = score};
    int rc = -100;
    crdt_store_write(st, key, klen, &mu, wrote, &rc);
    return rc;
}

typedef struct scan_seen {
    int data, internal;
} scan_seen_t;

static int scan_each(void *ud, const void *key, size_t klen, const crdt_obj_t *obj)
{
    (void)obj;
    scan_seen_t *s = ud;
    if (crdt_key_internal(key, klen))
        s->internal++;
    else
        s->data++;
    return 0;
}

static void scan_done(void *ud, int rc, uint64_t next)
{
    (void)ud;
    (void)rc;
    (void)next;
}

static const crdt_obj_t *got_obj;
static void got(void *ud, int rc, const crdt_obj_t *o)
{
    (void)ud;
    got_obj = rc == 0 ? o : NULL;
}

static void check(crdt_store_t *st, const char *when)
{
    crdt_store_stats_t ss;
    crdt_store_stats(st, &ss);
    is_int((long long)ss.keys, 2, "%s: stats count the two data keys", when);
    is_int((long long)ss.internal_keys, 1, "%s: ... and the internal key apart", when);
    is_int((long long)ss.keys_by_type[CRDT_TIMELINE], 1, "%s: one data timeline by type", when);
    scan_seen_t seen = {0};
    crdt_store_scan(st, 0, 1000, scan_each, scan_done, &seen);
    ok(seen.data == 2 && seen.internal == 0, "%s: a scan lists the data keys only (%d, %d)", when,
       seen.data, seen.internal);
    crdt_store_get(st, MARK, sizeof MARK, got, NULL);
    ok(got_obj && crdt_timeline_max_size(got_obj) == 0 && crdt_timeline_card(got_obj) == 5,
       "%s: the internal key's timeline is unbounded (5 entries under a bound of 3)", when);
    crdt_store_get(st, "feed", 4, got, NULL);
    ok(got_obj && crdt_timeline_max_size(got_obj) == 3 && crdt_timeline_card(got_obj) == 3,
       "%s: a data timeline has the configured bound", when);
    crdt_store_get(st, "reg", 3, got, NULL);
    ok(got_obj && !crdt_obj_is_live(got_obj) && crdt_lwwreg_cleared(got_obj) == 1,
       "%s: the deleted register is cleared (not live)", when);
}

int main(void)
{
    char tmpl[512];
    const char *base = getenv("TMPDIR");
    snprintf(tmpl, sizeof(tmpl), "%s/internal-XXXXXX", base && *base ? base : "/tmp");
    char *dir = mkdtemp(tmpl);
    if (!dir)
        skip_all("no temporary directory");
    ok(crdt_key_internal(MARK, sizeof MARK), "0x00 'c' '/' ... is internal");
    ok(!crdt_key_internal("\0c", 2) && !crdt_key_internal("c/x", 3) &&
           !crdt_key_internal("\0d/", 3),
       "shorter keys and other prefixes are not");

    crdt_replica_config_t cfg;
    crdt_replica_config_init(&cfg);
    cfg.dir = dir;
    cfg.timeline_max_size = 3;
    cfg.fsync = CRDT_FSYNC_NO;
    crdt_error_t err;
    crdt_store_t *st = crdt_store_embedded_open(&cfg, &err);
    if (!st)
        bail_out("cannot open the store: %s", err.text);
    for (int i = 0; i < 5; i++) {
        char m[8];
        snprintf(m, sizeof(m), "m%d", i);
        is_int(write_tl(st, MARK, sizeof MARK, m, i), 1, "a mark entry %d", i);
        is_int(write_tl(st, "feed", 4, m, i), 1, "a feed entry %d", i);
    }
    /* a register set then deleted through the store: the delete is stamped past the set */
    crdt_mut_t set = {.type = CRDT_LWWREG, .kind = CRDT_MUT_SET, .bytes = "v", .len = 1};
    crdt_mut_t del = {.type = CRDT_LWWREG, .kind = CRDT_MUT_DELETE};
    int rc = -100;
    crdt_store_write(st, "reg", 3, &set, wrote, &rc);
    is_int(rc, 1, "a register set");
    crdt_store_write(st, "reg", 3, &del, wrote, &rc);
    is_int(rc, 1, "the store stamps and runs the delete");
    crdt_store_write(st, "reg", 3, &del, wrote, &rc);
    is_int(rc, 0, "a second delete is a no-op");
    crdt_mut_t gdel = {.type = CRDT_GCOUNTER, .kind = CRDT_MUT_DELETE};
    crdt_store_write(st, "gc", 2, &gdel, wrote, &rc);
    is_int(rc, CRDT_ENOTSUP, "a gcounter delete: CRDT_ENOTSUP from the store");
    check(st, "open");
    crdt_store_flush(st);
    crdt_store_close(st);

    /* the log is replayed into the same shapes */
    st = crdt_store_embedded_open(&cfg, &err);
    if (!st)
        bail_out("cannot reopen the store: %s", err.text);
    check(st, "after a restart");
    crdt_store_close(st);

    char cmd[700];
    snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir);
    if (system(cmd) != 0)
        diag("could not remove %s", dir);
    return done_testing();
}
