/* fuzz_reconcile.c - libFuzzer harness for the reconciliation message decoder (crdt_rsx_receive)
 *
 * A real session between two small replicas is captured once. Input byte 0 picks the message
 * number k to attack (low 4 bits) and a mode (bit 7): raw, the rest of the input is message k;
 * patch, the rest is a list of (offset lo, offset hi, value) triples applied to the real message k
 * and a final odd byte truncates it, so the fuzzer explores near-valid messages without a corpus.
 * Messages 0..k-1 are replayed first so the session is in the state where message k is due. After
 * the attacked message, the session continues with the honest peer until it ends or fails. Every
 * outcome must be 0 or a clean error code, with a message when it is CRDT_EDECODE. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "crdt_reconcile.h"

#define FUZZ_REQUIRE(cond)                                                                         \
    do {                                                                                           \
        if (!(cond)) {                                                                             \
            fprintf(stderr, "fuzz: requirement failed: %s (%s:%d)\n", #cond, __FILE__, __LINE__);  \
            abort();                                                                               \
        }                                                                                          \
    } while (0)

enum { MAXMSG = 16 };
static crdt_rsx_index_t *ix_a, *ix_b;
static crdt_buf_t msgs[MAXMSG];
static int nmsgs;
static crdt_rsx_config_t cfg;

static void setup(void)
{
    ix_a = crdt_rsx_index_new();
    ix_b = crdt_rsx_index_new();
    for (uint64_t i = 0; i < 2000; i++) {
        uint64_t id = crdt_rsx_key_id(&i, sizeof i);
        crdt_rsx_index_upsert(ix_a, id, i);
        if (i % 40)
            crdt_rsx_index_upsert(ix_b, id, i % 70 ? i : i + 1);
    }
    crdt_rsx_config_init(&cfg);
    cfg.seed = 7;
    cfg.max_msg = 1 << 16;
    cfg.max_cells = 1024;
    crdt_rsx_session_t *sa = crdt_rsx_session_new(ix_a, true, &cfg);
    crdt_rsx_session_t *sb = crdt_rsx_session_new(ix_b, false, &cfg);
    crdt_buf_t m = {0};
    FUZZ_REQUIRE(crdt_rsx_initiate(sa, &m) == 0);
    int turn = 1;
    while (m.len && nmsgs < MAXMSG) {
        msgs[nmsgs++] = m;
        crdt_buf_t reply = {0};
        bool done;
        crdt_error_t err;
        FUZZ_REQUIRE(crdt_rsx_receive(turn ? sb : sa, m.data, m.len, &reply, &done, &err) == 0);
        m = reply;
        turn ^= 1;
    }
    crdt_buf_free(&m);
    crdt_rsx_session_free(sa);
    crdt_rsx_session_free(sb);
}

static void check_rc(int rc, const crdt_error_t *err)
{
    FUZZ_REQUIRE(rc == 0 || rc == CRDT_EDECODE || rc == CRDT_ELIMIT || rc == CRDT_ENOMEM);
    if (rc == CRDT_EDECODE)
        FUZZ_REQUIRE(err->text[0]);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (!ix_a)
        setup();
    if (size < 1 || !nmsgs)
        return 0;
    int k = (data[0] & 15) % nmsgs;
    bool patch = data[0] & 0x80;
    data++, size--;

    uint8_t *m;
    size_t len;
    if (patch) {
        len = msgs[k].len;
        m = malloc(len + 1);
        memcpy(m, msgs[k].data, len);
        size_t i = 0;
        for (; i + 3 <= size; i += 3) {
            size_t at = ((size_t)data[i] | (size_t)data[i + 1] << 8) % (len ? len : 1);
            if (len)
                m[at] = data[i + 2];
        }
        if (i < size && len) /* a trailing byte truncates */
            len = data[i] % len;
    } else {
        len = size;
        m = malloc(len + 1);
        memcpy(m, data, len);
    }

    crdt_rsx_session_t *sa = crdt_rsx_session_new(ix_a, true, &cfg);
    crdt_rsx_session_t *sb = crdt_rsx_session_new(ix_b, false, &cfg);
    crdt_buf_t out = {0}, reply = {0};
    bool done = false;
    crdt_error_t err;
    FUZZ_REQUIRE(crdt_rsx_initiate(sa, &out) == 0);
    for (int i = 0; i < k; i++) {
        out.len = 0;
        FUZZ_REQUIRE(crdt_rsx_receive(i % 2 == 0 ? sb : sa, msgs[i].data, msgs[i].len, &out, &done,
                                      &err) == 0);
    }
    int turn = k % 2 == 0; /* 1: sb receives */
    out.len = 0;
    int rc = crdt_rsx_receive(turn ? sb : sa, m, len, &out, &done, &err);
    check_rc(rc, &err);
    /* carry on with the honest peer */
    for (int step = 0; !rc && out.len && step < 200; step++) {
        turn ^= 1;
        reply.len = 0;
        rc = crdt_rsx_receive(turn ? sb : sa, out.data, out.len, &reply, &done, &err);
        check_rc(rc, &err);
        crdt_buf_t t = out;
        out = reply;
        reply = t;
    }
    const crdt_rsx_diff_t *d;
    crdt_rsx_session_diffs(sa, &d);
    crdt_rsx_session_diffs(sb, &d);
    crdt_buf_free(&out);
    crdt_buf_free(&reply);
    crdt_rsx_session_free(sa);
    crdt_rsx_session_free(sb);
    free(m);
    return 0;
}
