/* fuzz_apply_op.c - libFuzzer harness for the op path (gateway/op.c): arbitrary JSON text as the
 * body of POST /v1/keys/{key} (or a crdt.v1 apply's op) through gw_apply_op onto an in-memory
 * embedded store. The first byte picks one of four keys, so ops meet keys of other types. */
#include "fuzz_common.h"
#include "op.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static gw_server_t srv;
static unsigned runs;

typedef struct seen {
    int calls;
    gw_op_result_t r;
} seen_t;

static void done(gw_server_t *s, const gw_op_result_t *r, void *ud)
{
    (void)s;
    seen_t *w = ud;
    w->calls++;
    w->r = *r;
}

static void reopen(void)
{
    crdt_store_close(srv.store);
    crdt_replica_config_t cfg;
    crdt_replica_config_init(&cfg);
    cfg.node_id = 3;
    cfg.timeline_max_size = 64;
    crdt_error_t err = {0};
    srv.store = crdt_store_embedded_open(&cfg, &err);
    FUZZ_REQUIRE(srv.store);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (!srv.store || ++runs % 1000 == 0) {
        gw_config_defaults(&srv.cfg);
        srv.cfg.max_member = 256;
        reopen();
    }
    if (size < 1)
        return 0;
    char key[2] = {'k', (char)('0' + data[0] % 4)};
    json_error_t jerr;
    json_t *op = json_loadb((const char *)data + 1, size - 1, JSON_DECODE_ANY, &jerr);
    if (!op)
        return 0;
    uint64_t before = crdt_store_last_seq(srv.store);
    seen_t w = {0};
    gw_apply_op(&srv, (const uint8_t *)key, sizeof(key), op, done, &w);
    json_decref(op);
    /* the embedded store completes at once: exactly one call, before gw_apply_op returned */
    FUZZ_REQUIRE(w.calls == 1);
    uint64_t after = crdt_store_last_seq(srv.store);
    if (w.r.rc == 0) {
        /* 404: a delete that found nothing live, a no-op */
        FUZZ_REQUIRE((w.r.status == 200 || (w.r.status == 404 && !w.r.applied)) && !w.r.code);
        FUZZ_REQUIRE(w.r.applied <= w.r.ops);
        FUZZ_REQUIRE((w.r.applied > 0) == (after > before));
        FUZZ_REQUIRE(!w.r.applied || w.r.seq == after);
    } else {
        FUZZ_REQUIRE(w.r.rc == -1 && w.r.code && w.r.message[0]);
        FUZZ_REQUIRE(w.r.status == 400 || w.r.status == 409 || w.r.status == 500 ||
                     w.r.status == 503);
        FUZZ_REQUIRE(w.r.applied || after == before); /* a refused op changed nothing */
    }
    return 0;
}
