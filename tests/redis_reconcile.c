/* redis_reconcile.c - two crdt.so deployments find their differing keys with CRDT.RSX.* */
#include "redis_reconcile.h"

#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "crdt_reconcile.h"
#include "logpos.h"

void rr_side_single(rr_side_t *s, redisContext *c)
{
    memset(s, 0, sizeof(*s));
    s->n = 1;
    s->node[0] = c;
}

static uint64_t reply_bytes(const redisReply *r)
{
    if (!r)
        return 0;
    switch (r->type) {
    case REDIS_REPLY_ARRAY: {
        uint64_t n = 0;
        for (size_t i = 0; i < r->elements; i++)
            n += reply_bytes(r->element[i]);
        return n;
    }
    case REDIS_REPLY_INTEGER: return 8;
    case REDIS_REPLY_NIL: return 1;
    default: return r->len;
    }
}

static int send_cmd(redisContext *c, rr_result_t *res, int argc, const char **argv,
                    const size_t *lens)
{
    char *cmd = NULL;
    long long len = redisFormatCommandArgv(&cmd, argc, argv, lens);
    if (len < 0)
        return -1;
    int rc = redisAppendFormattedCommand(c, cmd, (size_t)len);
    res->bytes_out += (uint64_t)len;
    redisFreeCommand(cmd);
    return rc == REDIS_OK ? 0 : -1;
}

static redisReply *get_reply(redisContext *c, rr_result_t *res)
{
    redisReply *r = NULL;
    if (redisGetReply(c, (void **)&r) != REDIS_OK || !r) {
        printf("# reconcile: connection error: %s\n", c->errstr);
        return NULL;
    }
    res->bytes_in += reply_bytes(r);
    if (r->type == REDIS_REPLY_ERROR)
        printf("# reconcile: error reply: %s\n", r->str);
    return r;
}

/* Asks every node of a side for the hashes of the sub-ranges of `step` slots of [lo, hi]. */
static void send_digest(rr_side_t *s, rr_result_t *res, unsigned lo, unsigned hi, unsigned step)
{
    char a[12], b[12], c[12];
    snprintf(a, sizeof(a), "%u", lo);
    snprintf(b, sizeof(b), "%u", hi);
    snprintf(c, sizeof(c), "%u", step);
    const char *argv[] = {"CRDT.RSX.DIGEST", a, b, c};
    for (int i = 0; i < s->n; i++)
        send_cmd(s->node[i], res, 4, argv, NULL);
}

/* The XOR over a side's nodes of their hashes of `parts` sub-ranges (a node adds 0 where it holds
 * no key: a slot's hash is its owner's); false on a bad reply. */
static bool read_digest(rr_side_t *s, rr_result_t *res, uint64_t *h, size_t parts)
{
    memset(h, 0, parts * sizeof(*h));
    bool good = true;
    for (int i = 0; i < s->n; i++) {
        redisReply *r = get_reply(s->node[i], res);
        if (!r || r->type != REDIS_REPLY_STRING || r->len != parts * 8) {
            good = false;
        } else {
            for (size_t p = 0; p < parts; p++)
                for (int k = 0; k < 8; k++)
                    h[p] ^= (uint64_t)(uint8_t)r->str[p * 8 + (size_t)k] << (8 * k);
        }
        if (r)
            freeReplyObject(r);
    }
    return good;
}

typedef struct range {
    unsigned lo, hi;
} range_t;

/* Ranges of slots that may differ: the 16 ranges of 1,024 slots whose hashes differ (one round
 * trip), adjacent ones joined up to RR_SESSION_SLOTS, each cut where the node serving it changes
 * on either side. Returns how many (into *out, malloc'd), or -1. A session then reconciles each
 * range: the protocol finds a few differences in 60,000 keys about as cheaply as in 60, so
 * splitting further would only add round trips and per-session bytes (the first message, RESP
 * framing of five commands per turn); the join stops at RR_SESSION_SLOTS so one OPEN (a sort of the
 * range's fingerprints) does not hold a server for long. */
#define RR_SESSION_SLOTS 4096
static int differing_ranges(rr_side_t *a, rr_side_t *b, rr_result_t *res, range_t **out)
{
    enum { PARTS = 16, STEP = 16384 / PARTS };
    send_digest(a, res, 0, 16383, STEP);
    send_digest(b, res, 0, 16383, STEP);
    res->round_trips++;
    uint64_t ha[PARTS], hb[PARTS];
    bool ga = read_digest(a, res, ha, PARTS), gb = read_digest(b, res, hb, PARTS);
    range_t *r = malloc(16384 * sizeof(*r));
    int n = 0;
    bool prev = false; /* the previous part differed too: its session may go on */
    for (unsigned p = 0; ga && gb && p < PARTS; p++) {
        if (ha[p] == hb[p]) {
            prev = false;
            continue;
        }
        unsigned lo = p * STEP, hi = lo + STEP - 1;
        for (unsigned s = lo; s <= hi; s++) {
            bool go_on = s != lo || (prev && s - r[n - 1].lo < RR_SESSION_SLOTS);
            bool cut = !go_on || a->owner[s] != a->owner[s - 1] || b->owner[s] != b->owner[s - 1];
            if (cut)
                r[n++] = (range_t){s, s};
            else
                r[n - 1].hi = s;
        }
        prev = true;
    }
    *out = r;
    return ga && gb ? n : -1;
}

typedef struct sess {
    unsigned slot, last; /* the range [slot, last] */
    char key[CRDTM_TAG_MAX + 2];
    char sid[2][24]; /* [0] on a (initiator), [1] on b */
    char *msg;       /* to deliver */
    size_t len;
    int to; /* 0: a, 1: b, -1: finished */
} sess_t;

static void add_name(rr_result_t *res, const char *name, size_t len)
{
    for (size_t i = 0; i < res->n; i++)
        if (strlen(res->names[i]) == len && !memcmp(res->names[i], name, len))
            return;
    res->names = realloc(res->names, (res->n + 1) * sizeof(char *));
    res->names[res->n] = malloc(len + 1);
    memcpy(res->names[res->n], name, len);
    res->names[res->n][len] = '\0';
    res->n++;
}

/* Runs the sessions of slots[0..ns) together: open, one protocol turn per round trip, then the
 * differing keys (DIFFS ends a session). 0 or -1. */
static int run_sessions(rr_side_t *a, rr_side_t *b, rr_result_t *res, const range_t *ranges, int ns)
{
    static char tags[CRDTM_SLOTS][CRDTM_TAG_MAX];
    if (!tags[0][0])
        crdtm_slot_tags(tags);
    rr_side_t *side[2] = {a, b};
    sess_t *ss = calloc((size_t)ns + 1, sizeof(*ss));
    int rc = 0;
    /* open: the initiator's first message comes back with its session */
    for (int i = 0; i < ns; i++) {
        ss[i].slot = ranges[i].lo;
        ss[i].last = ranges[i].hi;
        snprintf(ss[i].key, sizeof(ss[i].key), "{%s}", tags[ss[i].slot]);
        char lo[12], hi[12];
        snprintf(lo, sizeof(lo), "%u", ss[i].slot);
        snprintf(hi, sizeof(hi), "%u", ss[i].last);
        for (int k = 0; k < 2; k++) {
            const char *argv[] = {"CRDT.RSX.OPEN", ss[i].key, k ? "RESPONDER" : "INITIATOR", lo,
                                  hi};
            send_cmd(side[k]->node[side[k]->owner[ss[i].slot]], res, 5, argv, NULL);
        }
    }
    if (ns)
        res->round_trips++;
    for (int i = 0; i < ns; i++)
        for (int k = 0; k < 2; k++) {
            redisReply *r = get_reply(side[k]->node[side[k]->owner[ss[i].slot]], res);
            if (r && r->type == REDIS_REPLY_ARRAY && r->elements == 2) {
                snprintf(ss[i].sid[k], sizeof(ss[i].sid[k]), "%s", r->element[0]->str);
                if (k == 0) {
                    ss[i].len = r->element[1]->len;
                    ss[i].msg = malloc(ss[i].len + 1);
                    memcpy(ss[i].msg, r->element[1]->str, ss[i].len);
                    ss[i].to = 1;
                }
            } else {
                rc = -1;
                ss[i].to = -1;
            }
            if (r)
                freeReplyObject(r);
        }
    /* every open session's message goes to its peer, one round trip per turn */
    for (int turn = 0; turn < 200 && rc == 0; turn++) {
        int active = 0;
        for (int i = 0; i < ns; i++) {
            if (ss[i].to < 0)
                continue;
            rr_side_t *s = side[ss[i].to];
            const char *argv[] = {"CRDT.RSX.RECV", ss[i].key, ss[i].sid[ss[i].to], ss[i].msg};
            size_t lens[] = {13, strlen(ss[i].key), strlen(ss[i].sid[ss[i].to]), ss[i].len};
            send_cmd(s->node[s->owner[ss[i].slot]], res, 4, argv, lens);
            active++;
        }
        if (!active)
            break;
        res->round_trips++;
        for (int i = 0; i < ns; i++) {
            if (ss[i].to < 0)
                continue;
            rr_side_t *s = side[ss[i].to];
            redisReply *r = get_reply(s->node[s->owner[ss[i].slot]], res);
            free(ss[i].msg);
            ss[i].msg = NULL;
            if (!r || r->type != REDIS_REPLY_ARRAY || r->elements != 2) {
                rc = -1;
                ss[i].to = -1;
            } else if (r->element[0]->len == 0) {
                ss[i].to = -1; /* done, nothing more to say */
            } else {
                ss[i].len = r->element[0]->len;
                ss[i].msg = malloc(ss[i].len);
                memcpy(ss[i].msg, r->element[0]->str, ss[i].len);
                ss[i].to ^= 1;
            }
            if (r)
                freeReplyObject(r);
        }
    }
    /* the differing keys, in one round trip, each named once: a names those it holds, b those
     * only b holds; DIFFS ends the sessions */
    for (int i = 0; i < ns; i++)
        for (int k = 0; k < 2; k++) {
            const char *d[] = {"CRDT.RSX.DIFFS", ss[i].key, ss[i].sid[k], k ? "UNIQUE" : "HELD"};
            send_cmd(side[k]->node[side[k]->owner[ss[i].slot]], res, 4, d, NULL);
        }
    if (ns)
        res->round_trips++;
    for (int i = 0; i < ns; i++)
        for (int k = 0; k < 2; k++) {
            redisReply *r = get_reply(side[k]->node[side[k]->owner[ss[i].slot]], res);
            for (size_t e = 0; r && r->type == REDIS_REPLY_ARRAY && e < r->elements; e++) {
                redisReply *en = r->element[e];
                if (en->element[0]->type == REDIS_REPLY_STRING) {
                    res->named++;
                    add_name(res, en->element[0]->str, en->element[0]->len);
                }
            }
            if (!r || r->type != REDIS_REPLY_ARRAY)
                rc = -1;
            if (r)
                freeReplyObject(r);
        }
    for (int i = 0; i < ns; i++)
        free(ss[i].msg);
    free(ss);
    return rc;
}

/* Sessions run in waves, so a node never holds more than it keeps (1,024). */
#define RR_WAVE 512

int rr_reconcile(rr_side_t *a, rr_side_t *b, rr_result_t *res)
{
    memset(res, 0, sizeof(*res));
    range_t *ranges;
    int nr = differing_ranges(a, b, res, &ranges);
    if (nr < 0) {
        free(ranges);
        return -1;
    }
    res->ranges_differing = (unsigned)nr;
    int rc = 0;
    for (int from = 0; from < nr && rc == 0; from += RR_WAVE)
        rc = run_sessions(a, b, res, ranges + from, nr - from < RR_WAVE ? nr - from : RR_WAVE);
    free(ranges);
    return rc;
}

void rr_result_free(rr_result_t *r)
{
    for (size_t i = 0; i < r->n; i++)
        free(r->names[i]);
    free(r->names);
    memset(r, 0, sizeof(*r));
}
