/* test_redis_persist.c - crdt.so keys survive DEBUG RELOAD, RDB and AOF restarts, replication;
 * corrupted RDB values are refused without a crash
 *
 * Corrupted RDB values are fed through RESTORE: DUMP gives a key's RDB value, the test flips or
 * cuts bytes inside the module's part and sends it back with DEBUG SET-SKIP-CHECKSUM-VALIDATION 1
 * (so Redis's own CRC-64 over the payload does not catch the damage first and our rdb_load is
 * what must refuse it). This exercises the same rdb_load as startup, but in a context where Redis
 * reports the failure to the client instead of exiting, so each of hundreds of corruptions is one
 * command rather than one server restart. (A corrupted dump.rdb at startup makes Redis itself
 * refuse to start, by design; that path is Redis's, not ours.)
 */
#include "tap.h"

#include <dirent.h>
#include <limits.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "redis_helper.h"

#define NKEYS 12
static const char *keys[NKEYS] = {"tl:1", "tl:2", "tl:3", "tl:4", "c:1",  "c:2",
                                  "s:1",  "s:2",  "r:1",  "r:2",  "tl:5", "s:3"};

typedef struct snap {
    char *state[NKEYS];
    size_t len[NKEYS];
} snap_t;

static uint64_t rng_state = 12345;
static unsigned below(unsigned n)
{
    rng_state = rng_state * 6364136223846793005ull + 1442695040888963407ull;
    return (unsigned)((rng_state >> 33) % n);
}

/* Random writes on every kind of key: live entries, tombstones, trims (bound 16), counters going
 * both ways, OR-Set adds and removes, registers. */
static void populate(rh_server_t *s, int nops)
{
    for (int i = 0; i < nops; i++) {
        int k = (int)below(NKEYS);
        const char *key = keys[k];
        char member[12];
        snprintf(member, sizeof(member), "m%u", below(40));
        if (key[0] == 't') {
            if (below(4) == 0)
                rh_int(rh_cmd(s, "CRDT.TLREM %s %u.5 %s", key, below(100), member));
            else
                rh_int(rh_cmd(s, "CRDT.TLADD %s %u.25 %s", key, below(100), member));
        } else if (key[0] == 'c') {
            rh_int(rh_cmd(s, "CRDT.INCRBY %s %d", key, (int)below(200) - 100));
        } else if (key[0] == 's') {
            rh_int(rh_cmd(s, below(3) ? "CRDT.SADD %s %s" : "CRDT.SREM %s %s", key, member));
        } else {
            rh_int(rh_cmd(s, "CRDT.SET %s %s", key, member));
        }
    }
}

static void take(rh_server_t *s, snap_t *sn)
{
    for (int k = 0; k < NKEYS; k++)
        sn->state[k] = rh_str(rh_cmd(s, "CRDT.STATE %s", keys[k]), &sn->len[k]);
}

static void drop(snap_t *sn)
{
    for (int k = 0; k < NKEYS; k++) {
        free(sn->state[k]);
        sn->state[k] = NULL;
    }
}

/* How many keys of `s` have exactly the states in `want` (and exist). */
static int same_as(rh_server_t *s, const snap_t *want)
{
    int n = 0;
    for (int k = 0; k < NKEYS; k++) {
        size_t len = 0;
        char *st = rh_str(rh_cmd(s, "CRDT.STATE %s", keys[k]), &len);
        if (st && want->state[k] && len == want->len[k] && memcmp(st, want->state[k], len) == 0)
            n++;
        else
            diag("key %s differs (%zu vs %zu bytes)", keys[k], len, want->len[k]);
        free(st);
    }
    return n;
}

static void sleep_ms(long ms)
{
    struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

static long long aof_incr_size(const rh_server_t *s)
{
    char dir[300];
    snprintf(dir, sizeof(dir), "%s/appendonlydir", s->dir);
    DIR *d = opendir(dir);
    long long total = 0;
    if (!d)
        return -1;
    struct dirent *e;
    while ((e = readdir(d))) {
        if (!strstr(e->d_name, ".incr.aof"))
            continue;
        char p[600];
        snprintf(p, sizeof(p), "%s/%s", dir, e->d_name);
        struct stat st;
        if (stat(p, &st) == 0)
            total += st.st_size;
    }
    closedir(d);
    return total;
}

/* Reads the incremental AOF files into one malloc'd buffer. */
static char *aof_incr_text(const rh_server_t *s, size_t *len)
{
    char dir[300];
    snprintf(dir, sizeof(dir), "%s/appendonlydir", s->dir);
    DIR *d = opendir(dir);
    char *buf = NULL;
    *len = 0;
    if (!d)
        return NULL;
    struct dirent *e;
    while ((e = readdir(d))) {
        if (!strstr(e->d_name, ".incr.aof"))
            continue;
        char p[600];
        snprintf(p, sizeof(p), "%s/%s", dir, e->d_name);
        FILE *f = fopen(p, "rb");
        if (!f)
            continue;
        char chunk[4096];
        size_t n;
        while ((n = fread(chunk, 1, sizeof(chunk), f)) > 0) {
            buf = realloc(buf, *len + n + 1);
            memcpy(buf + *len, chunk, n);
            *len += n;
            buf[*len] = '\0';
        }
        fclose(f);
    }
    closedir(d);
    return buf;
}

static bool mem_has(const char *buf, size_t len, const char *needle)
{
    size_t n = strlen(needle);
    for (size_t i = 0; buf && i + n <= len; i++)
        if (memcmp(buf + i, needle, n) == 0)
            return true;
    return false;
}

static void wait_rewrite_done(rh_server_t *s)
{
    for (int i = 0; i < 600; i++) { /* 30 s: the machine may be busy */
        if (rh_info_field(s, "persistence", "aof_rewrite_in_progress") == 0 &&
            rh_info_field(s, "persistence", "aof_rewrite_scheduled") == 0)
            return;
        sleep_ms(50);
    }
    diag("AOF rewrite did not finish within 30 s");
}

static void test_reload_and_rdb(void)
{
    rh_server_t s;
    const char *extra[] = {"--dbfilename", "dump.rdb", NULL};
    if (!ok(rh_start(&s, NULL, "node-id 3 timeline-max-size 16", extra) == 0, "RDB server"))
        return;
    populate(&s, 800);
    snap_t before;
    take(&s, &before);
    redisReply *dg = rh_cmd(&s, "DEBUG DIGEST");
    char *digest = dg && dg->type == REDIS_REPLY_STATUS ? strdup(dg->str) : NULL;
    if (dg)
        freeReplyObject(dg);
    ok(digest && strcmp(digest, "0000000000000000000000000000000000000000") != 0,
       "DEBUG DIGEST covers the CRDT keys: %s", digest ? digest : "(none)");
    long long mem = rh_int(rh_cmd(&s, "MEMORY USAGE tl:1"));
    ok(mem > 0, "MEMORY USAGE tl:1 = %lld", mem);

    char *reply = rh_str(rh_cmd(&s, "DEBUG RELOAD"), NULL);
    is(reply, "OK", "DEBUG RELOAD");
    free(reply);
    is_int(same_as(&s, &before), NKEYS, "DEBUG RELOAD: every key byte-identical");
    dg = rh_cmd(&s, "DEBUG DIGEST");
    ok(dg && digest && dg->type == REDIS_REPLY_STATUS && strcmp(dg->str, digest) == 0,
       "DEBUG DIGEST unchanged by the reload");
    if (dg)
        freeReplyObject(dg);
    is_int(rh_info_field(&s, "crdt", "crdt_keys"), NKEYS, "INFO keys after reload");

    reply = rh_str(rh_cmd(&s, "SAVE"), NULL);
    is(reply, "OK", "SAVE");
    free(reply);
    ok(rh_restart(&s) == 0, "restart from dump.rdb");
    is_int(same_as(&s, &before), NKEYS, "RDB restart: every key byte-identical");
    dg = rh_cmd(&s, "DEBUG DIGEST");
    ok(dg && digest && dg->type == REDIS_REPLY_STATUS && strcmp(dg->str, digest) == 0,
       "DEBUG DIGEST unchanged by the restart");
    if (dg)
        freeReplyObject(dg);
    is_int(rh_info_field(&s, "crdt", "crdt_keys"), NKEYS, "INFO keys counted after the RDB load");
    /* The restarted server keeps writing with the clock ahead of what it loaded. */
    is_int(rh_int(rh_cmd(&s, "CRDT.SET r:1 after-restart")), 1, "SET after restart wins");
    free(digest);
    drop(&before);
    rh_stop(&s);
}

static void test_aof(void)
{
    rh_server_t s;
    const char *extra[] = {
        "--appendonly", "yes", "--appendfsync", "always", "--aof-use-rdb-preamble", "no", NULL};
    if (!ok(rh_start(&s, NULL, "node-id 4 timeline-max-size 16", extra) == 0, "AOF server"))
        return;
    populate(&s, 400);
    size_t len;
    char *aof = aof_incr_text(&s, &len);
    /* with the change log on (the default) a write's delta and its log entry are one command */
    ok(mem_has(aof, len, "CRDT.LOG.APPLY"), "AOF holds the deltas (as CRDT.LOG.APPLY)");
    ok(!mem_has(aof, len, "XADD"), "AOF holds no separate XADD of the log entries");
    ok(!mem_has(aof, len, "CRDT.TLADD") && !mem_has(aof, len, "CRDT.INCRBY") &&
           !mem_has(aof, len, "CRDT.SET"),
       "AOF holds no original write commands");
    free(aof);

    /* A no-op write appends nothing; a real one does. */
    rh_int(rh_cmd(&s, "CRDT.TLADD noop 50 x"));
    long long sz = aof_incr_size(&s);
    is_int(rh_int(rh_cmd(&s, "CRDT.TLADD noop 50 x")), 0, "repeated add is a no-op");
    is_int(rh_int(rh_cmd(&s, "CRDT.TLADD noop 10 x")), 0, "older add is a no-op");
    is_int(aof_incr_size(&s), sz, "no-op writes add nothing to the AOF");
    rh_int(rh_cmd(&s, "CRDT.TLADD noop 60 x"));
    ok(aof_incr_size(&s) > sz, "a real write is appended");
    rh_int(rh_cmd(&s, "DEL noop"));

    char *r = rh_str(rh_cmd(&s, "BGREWRITEAOF"), NULL);
    ok(r != NULL, "BGREWRITEAOF started: %s", r ? r : "(error)");
    free(r);
    wait_rewrite_done(&s);
    populate(&s, 200); /* after the rewrite: into the new incremental file */
    snap_t before;
    take(&s, &before);
    /* the digest covers the change logs too: replayed CRDT.LOG.APPLY rebuilds them entry for
     * entry, with the same IDs */
    char *dg = rh_str(rh_cmd(&s, "DEBUG DIGEST"), NULL);
    ok(rh_restart(&s) == 0, "restart from the AOF (rewritten base + increments)");
    is_int(same_as(&s, &before), NKEYS, "AOF restart: every key byte-identical");
    char *dg2 = rh_str(rh_cmd(&s, "DEBUG DIGEST"), NULL);
    ok(dg && dg2 && !strcmp(dg, dg2), "AOF restart: the same DEBUG DIGEST (keys and change logs)");
    free(dg);
    free(dg2);
    is_int(rh_info_field(&s, "crdt", "crdt_payload_errors"), 0, "AOF replay refused nothing");
    drop(&before);
    rh_stop(&s);
}

static int starts_with_readonly(rh_server_t *r)
{
    const char *e = rh_err(rh_cmd(r, "CRDT.TLADD tl:1 1 x"));
    return strncmp(e, "READONLY", 8) == 0;
}

static void test_replica(void)
{
    rh_server_t m, r;
    if (!ok(rh_start(&m, NULL, "node-id 5 timeline-max-size 16", NULL) == 0, "master"))
        return;
    populate(&m, 300); /* reaches the replica by the initial RDB transfer */
    char port[16];
    snprintf(port, sizeof(port), "%d", m.port);
    const char *extra[] = {"--replicaof", "127.0.0.1", port, NULL};
    if (!ok(rh_start(&r, NULL, "node-id 6 timeline-max-size 16", extra) == 0, "replica")) {
        rh_stop(&m);
        return;
    }
    bool up = false;
    for (int i = 0; i < 600 && !up; i++) { /* 30 s */
        redisReply *x = rh_cmd(&r, "INFO replication");
        up = x && x->type == REDIS_REPLY_STRING && strstr(x->str, "master_link_status:up");
        if (x)
            freeReplyObject(x);
        if (!up)
            sleep_ms(50);
    }
    ok(up, "replica linked to master");
    populate(&m, 500); /* reaches the replica as CRDT.MERGE deltas */
    is_int(rh_int(rh_cmd(&m, "WAIT 1 20000")), 1, "replica acknowledged every write");
    snap_t ms;
    take(&m, &ms);
    is_int(same_as(&r, &ms), NKEYS, "replica: every key byte-identical to the master");
    ok(starts_with_readonly(&r), "replica refuses CRDT writes (read-only replica)");
    drop(&ms);
    rh_stop(&r);
    rh_stop(&m);
}

/* Whether keys `a` and `b` of `s` hold byte-identical states. */
static int same_state(rh_server_t *s, const char *a, const char *b)
{
    size_t la, lb;
    char *x = rh_str(rh_cmd(s, "CRDT.STATE %s", a), &la);
    char *y = rh_str(rh_cmd(s, "CRDT.STATE %s", b), &lb);
    int same = x && y && la == lb && memcmp(x, y, la) == 0;
    free(x);
    free(y);
    return same;
}

static void test_corrupt_rdb_values(void)
{
    rh_server_t s;
    const char *extra[] = {"--rdbcompression", "no", NULL};
    if (!ok(rh_start(&s, NULL, "node-id 9 timeline-max-size 16", extra) == 0, "RESTORE server"))
        return;
    populate(&s, 300);
    char *skip = rh_str(rh_cmd(&s, "DEBUG SET-SKIP-CHECKSUM-VALIDATION 1"), NULL);
    is(skip, "OK", "DEBUG SET-SKIP-CHECKSUM-VALIDATION 1");
    free(skip);
    int attempts = 0, refused = 0, wrong = 0, intact = 0;
    for (int k = 0; k < NKEYS; k++) {
        size_t len;
        char *dump = rh_str(rh_cmd(&s, "DUMP %s", keys[k]), &len);
        if (!ok(dump && len > 24, "DUMP %s", keys[k])) {
            free(dump);
            continue;
        }
        /* The intact value restores to an identical state. */
        char *r = rh_str(rh_cmd(&s, "RESTORE copy 0 %b", dump, len), NULL);
        size_t l1, l2;
        char *a = rh_str(rh_cmd(&s, "CRDT.STATE %s", keys[k]), &l1);
        char *b = rh_str(rh_cmd(&s, "CRDT.STATE copy"), &l2);
        ok(r && a && b && l1 == l2 && memcmp(a, b, l1) == 0, "RESTORE of %s is identical", keys[k]);
        free(r);
        free(a);
        free(b);
        rh_int(rh_cmd(&s, "DEL copy"));
        /* Layout: type(1) module-id(9) opcode(1) string(len+bytes) EOF(1) version(2) crc(8). The
         * libcrdt frame ends 12 bytes before the end. Flip bytes of the module part, and cut it. */
        char *bad = malloc(len);
        for (size_t i = 10; i + 11 < len; i++) {
            memcpy(bad, dump, len);
            bad[i] ^= (char)0x5a;
            redisReply *x = rh_cmd(&s, "RESTORE bad 0 %b", bad, len);
            attempts++;
            if (x && x->type == REDIS_REPLY_ERROR)
                refused++;
            else if (x && x->type == REDIS_REPLY_STATUS) {
                /* a flip that still decodes must be a valid, canonical state */
                size_t bl;
                char *bs = rh_str(rh_cmd(&s, "CRDT.STATE bad"), &bl);
                if (bs) {
                    rh_int(rh_cmd(&s, "DEL bad2"));
                    rh_int(rh_cmd(&s, "CRDT.MERGE bad2 %b", bs, bl));
                }
                free(bs);
                rh_int(rh_cmd(&s, "DEL bad"));
                rh_int(rh_cmd(&s, "DEL bad2"));
            } else {
                wrong++;
                rh_note("%s: byte %zu flipped: reply type %d", keys[k], i, x ? x->type : -1);
            }
            if (x)
                freeReplyObject(x);
        }
        /* The frame's own last byte (its CRC-32C): libcrdt must refuse it. */
        memcpy(bad, dump, len);
        bad[len - 12] ^= 1;
        ok(*rh_err(rh_cmd(&s, "RESTORE bad 0 %b", bad, len)) != '\0',
           "%s: a flipped CRC-32C byte is refused", keys[k]);
        ok(rh_int(rh_cmd(&s, "EXISTS bad")) == 0, "%s: no key left behind", keys[k]);
        /* Truncations: cut n bytes out of the module part, keeping the footer. */
        for (size_t cut = 1; cut + 22 < len; cut += 1 + cut / 4) {
            size_t nl = len - cut;
            memcpy(bad, dump, len - 10 - cut);
            memcpy(bad + (len - 10 - cut), dump + len - 10, 10);
            redisReply *x = rh_cmd(&s, "RESTORE bad 0 %b", bad, nl);
            attempts++;
            if (x && x->type == REDIS_REPLY_ERROR) {
                refused++;
            } else if (x && x->type == REDIS_REPLY_STATUS && cut == 2 &&
                       (unsigned char)dump[len - 12] == 0x0a && same_state(&s, keys[k], "bad")) {
                /* Not a corruption: cutting the module's EOF byte and the frame's last byte
                 * makes Redis read the string's last byte from the footer's version (0x0a) and
                 * the EOF from its second byte (0x00). When the frame ended in 0x0a anyway the
                 * payload is the value intact. */
                intact++;
            } else {
                wrong++;
                rh_note("%s: %zu of %zu bytes cut: reply type %d%s", keys[k], cut, len,
                        x ? x->type : -1, x && x->type == REDIS_REPLY_STATUS ? " (accepted)" : "");
            }
            if (x)
                freeReplyObject(x);
            rh_int(rh_cmd(&s, "DEL bad"));
        }
        free(bad);
        free(dump);
    }
    if (intact)
        rh_note("%d truncation(s) were the intact value in Redis's framing", intact);
    ok(refused > attempts / 2, "%d of %d corrupted RESTORE payloads refused", refused, attempts);
    is_int(wrong, 0, "every corrupted payload was refused or gave a valid state");
    ok(rh_info_field(&s, "crdt", "crdt_rdb_load_errors") > 0,
       "INFO crdt_rdb_load_errors counts our refusals (%lld)",
       rh_info_field(&s, "crdt", "crdt_rdb_load_errors"));
    char *pong = rh_str(rh_cmd(&s, "PING"), NULL);
    is(pong, "PONG", "server alive after every corruption");
    free(pong);
    rh_stop(&s);
}

int main(void)
{
    const char *why = rh_skip_reason();
    if (why)
        skip_all("%s", why);
    rh_watchdog(150);
    test_reload_and_rdb();
    test_aof();
    test_replica();
    test_corrupt_rdb_values();
    if (rh_sanitized())
        is_int(rh_sanitizer_reports(), 0, "no ASan/UBSan report from any redis-server");
    rh_cleanup();
    return done_testing();
}
