/* fuzz_log.c - libFuzzer harness for the replica's recovery of a log segment
 *
 * The input (after a mode byte) is the body of a log segment: records of u32 length, u32 CRC-32C,
 * body. Mode bit 0 recomputes each record's CRC (so the fuzzer reaches the record parser, the key
 * index and the joins), bit 1 joins keys on a background thread instead of on first touch, bit 2
 * bounds timelines to 3. The segment is written to a data directory and opened. Required: open
 * either refuses with a message or recovers, dropping at most what was there; every key can then
 * be joined; and, unless a record failed to join (the replica then refuses writes, saying why), a
 * second open finds nothing more to drop and the same keyspace (the same digest).
 *
 * The first close indexes the segment (log-<base>.idx), and the second open reads that index.
 * Mode bit 3 damages the index first: a byte, chosen and changed by a hash of the input, is
 * flipped. Unless bit 4 then recomputes the block's CRC, the second open must not use the
 * damaged block and must still find the same keyspace; with the CRC fixed (an index that lies,
 * which only a bug could write) it must still not crash, and a failure must name the index. */
#include <dirent.h>
#include <fcntl.h>
#include <stdint.h>
#include <sys/stat.h>
#include <unistd.h>

#include "fuzz_common.h"
#include "replica.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static char dir[64];

static void clear_dir(void)
{
    DIR *d = opendir(dir);
    struct dirent *de;
    while (d && (de = readdir(d)))
        if (strcmp(de->d_name, ".") && strcmp(de->d_name, ".."))
            unlinkat(dirfd(d), de->d_name, 0);
    if (d)
        closedir(d);
}

static void remove_dir(void)
{
    clear_dir();
    rmdir(dir);
}

static uint32_t get32(const uint8_t *p)
{
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static void put32(uint8_t *p, uint32_t v)
{
    for (int i = 0; i < 4; i++)
        p[i] = (uint8_t)(v >> (8 * i));
}

static crdt_replica_t *open_it(uint8_t mode, crdt_error_t *err)
{
    crdt_replica_config_t cfg;
    crdt_replica_config_init(&cfg);
    cfg.dir = dir;
    cfg.fsync = CRDT_FSYNC_NO;
    cfg.snapshot_log_bytes = 0;
    cfg.load_threads = (mode & 2) ? 1 : 0;
    cfg.timeline_max_size = (mode & 4) ? 3 : 1000;
    return crdt_replica_open(&cfg, err);
}

/* Flips a byte of the index, and with `fix` recomputes its first block's CRC. */
static void damage_index(const uint8_t *data, size_t size, bool fix)
{
    char path[128];
    snprintf(path, sizeof(path), "%s/log-%020d.idx", dir, 0);
    int fd = open(path, O_RDWR);
    struct stat sb;
    if (fd < 0 || fstat(fd, &sb) < 0 || sb.st_size < 1) {
        if (fd >= 0)
            close(fd);
        return;
    }
    size_t n = (size_t)sb.st_size;
    uint8_t *b = malloc(n);
    FUZZ_REQUIRE(b && pread(fd, b, n, 0) == (ssize_t)n);
    uint64_t h = 1469598103934665603ull;
    for (size_t i = 0; i < size; i++)
        h = (h ^ data[i]) * 1099511628211ull;
    b[h % n] ^= (uint8_t)(h >> 56 | 1);
    if (fix && n >= 24) {
        uint32_t len = get32(b + 16);
        if (len <= n - 24)
            put32(b + 20, crdt_crc32c(0, b + 24, len));
    }
    FUZZ_REQUIRE(pwrite(fd, b, n, 0) == (ssize_t)n);
    close(fd);
    free(b);
}

static int touch_cb(const void *key, size_t klen, const crdt_obj_t *o, void *ud)
{
    (void)key;
    (void)klen;
    FUZZ_REQUIRE(o != NULL);
    (*(size_t *)ud)++;
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    uint8_t mode = data[0];
    data++, size--;
    if (!dir[0]) {
        snprintf(dir, sizeof(dir), "/tmp/fuzz_log.XXXXXX");
        FUZZ_REQUIRE(mkdtemp(dir) != NULL);
        atexit(remove_dir);
    }
    clear_dir();
    size_t total = 16 + size;
    uint8_t *seg = malloc(total);
    FUZZ_REQUIRE(seg != NULL);
    memcpy(seg, "CRDTLOG1", 8);
    memset(seg + 8, 0, 8); /* base 0 */
    if (size)
        memcpy(seg + 16, data, size);
    for (size_t pos = 16; (mode & 1) && pos + 8 <= total;) {
        uint32_t len = get32(seg + pos);
        if (len < 3 || len > total - pos - 8)
            break;
        put32(seg + pos + 4, crdt_crc32c(0, seg + pos + 8, len));
        pos += 8 + (size_t)len;
    }
    char path[128];
    snprintf(path, sizeof(path), "%s/log-%020d", dir, 0);
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    FUZZ_REQUIRE(fd >= 0 && write(fd, seg, total) == (ssize_t)total);
    close(fd);
    free(seg);

    crdt_error_t err;
    crdt_replica_t *r = open_it(mode, &err);
    if (!r) {
        FUZZ_REQUIRE(err.code < 0 && err.text[0]);
        return 0;
    }
    const crdt_recovery_report_t *rep = crdt_replica_recovery(r);
    FUZZ_REQUIRE(rep->dropped_bytes <= size);
    FUZZ_REQUIRE(rep->dropped_bytes == 0 || rep->dropped_reason[0]);
    crdt_replica_wait_loaded(r);
    FUZZ_REQUIRE(crdt_replica_keys_loading(r) == 0);
    size_t keys = 0;
    crdt_replica_foreach(r, touch_cb, &keys);
    bool failed = crdt_replica_last_error(r) != NULL;
    uint64_t digest = failed ? 0 : crdt_replica_digest(r);
    uint64_t last = crdt_replica_last_seq(r);
    crdt_replica_close(r);
    if (failed)
        return 0;
    bool lies = (mode & 8) && (mode & 16);
    if (mode & 8)
        damage_index(data, size, lies);
    r = open_it(mode ^ 2, &err);
    FUZZ_REQUIRE(r != NULL);
    FUZZ_REQUIRE(crdt_replica_recovery(r)->dropped_bytes == 0);
    size_t keys2 = 0;
    crdt_replica_foreach(r, touch_cb, &keys2);
    if (lies) {
        const char *why = crdt_replica_last_error(r);
        FUZZ_REQUIRE(!why || strstr(why, "index"));
        crdt_replica_close(r);
        return 0;
    }
    FUZZ_REQUIRE(crdt_replica_last_error(r) == NULL);
    FUZZ_REQUIRE(keys2 == keys && crdt_replica_last_seq(r) == last);
    FUZZ_REQUIRE(crdt_replica_digest(r) == digest);
    crdt_replica_close(r);
    return 0;
}
