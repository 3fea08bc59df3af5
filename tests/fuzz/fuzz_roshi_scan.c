/* fuzz_roshi_scan.c - the roshi listener's fast body scanner against its jansson reader: whatever
 * the fast one accepts, the jansson one (the reference: Go's encoding/json semantics) accepts with
 * the same tuples or keys; neither reads outside the body or the arena. The first input byte picks
 * the reader pair (even: tuples, odd: keys), the rest is the body. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "roshi_scan.h"

static int same(const uint8_t *a, size_t alen, const uint8_t *b, size_t blen)
{
    return alen == blen && (!alen || !memcmp(a, b, alen));
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    int keys = data[0] & 1;
    size_t len = size - 1;
    /* a copy of exactly len bytes, so that ASan sees any read past the body */
    char *body = malloc(len ? len : 1);
    if (!body)
        return 0;
    memcpy(body, data + 1, len);
    size_t cap = gw_roshi_max_elems(body, len);
    uint8_t *fa = malloc(GW_ROSHI_ARENA(len)), *ja = malloc(GW_ROSHI_ARENA(len));
    gw_roshi_err_t err;
    size_t fn = 0, jn = 0;
    if (keys) {
        gw_roshi_key_t *f = malloc(cap * sizeof(*f)), *j = malloc(cap * sizeof(*j));
        if (f && j && fa && ja && gw_roshi_keys_fast(body, len, fa, f, cap, &fn)) {
            if (gw_roshi_keys_json(body, len, ja, j, cap, &jn, &err) != 0 || jn != fn)
                abort();
            for (size_t i = 0; i < fn; i++)
                if (!same(f[i].p, f[i].len, j[i].p, j[i].len))
                    abort();
        } else if (f && j && fa && ja) {
            gw_roshi_keys_json(body, len, ja, j, cap, &jn, &err);
        }
        free(f), free(j);
    } else {
        gw_roshi_tuple_t *f = malloc(cap * sizeof(*f)), *j = malloc(cap * sizeof(*j));
        if (f && j && fa && ja && gw_roshi_tuples_fast(body, len, fa, f, cap, &fn)) {
            if (gw_roshi_tuples_json(body, len, ja, j, cap, &jn, &err) != 0 || jn != fn)
                abort();
            for (size_t i = 0; i < fn; i++)
                if (!same(f[i].key, f[i].klen, j[i].key, j[i].klen) ||
                    !same(f[i].member, f[i].mlen, j[i].member, j[i].mlen) ||
                    memcmp(&f[i].score, &j[i].score, sizeof(double)))
                    abort();
        } else if (f && j && fa && ja) {
            gw_roshi_tuples_json(body, len, ja, j, cap, &jn, &err);
        }
        free(f), free(j);
    }
    free(fa), free(ja), free(body);
    return 0;
}
