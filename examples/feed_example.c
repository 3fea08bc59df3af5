/* feed_example.c - two replicas of an activity feed, written apart, converge through deltas
 *
 * What crdtd does between datacenters, in one process: each replica accepts writes with no
 * coordination, every write yields a small delta, deltas travel (here: encoded, shuffled and
 * duplicated) and every replica ends in the same state. Run: build/examples/crdt_example */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "crdt.h"
#include "crdt_json.h"

#define MAX_DELTAS 64

typedef struct {
    const char *name;
    crdt_obj_t *feed;  /* timeline: newest posts, bounded */
    crdt_obj_t *likes; /* PN-counter */
    crdt_buf_t outbox[MAX_DELTAS];
    int nout;
} replica_t;

/* Keeps the binary encoding of a delta for the other side, as a peer link would send it. */
static void ship(replica_t *r, crdt_obj_t *delta)
{
    if (!delta)
        return;
    if (r->nout < MAX_DELTAS && crdt_obj_encode(delta, &r->outbox[r->nout]) == 0)
        r->nout++;
    crdt_obj_free(delta);
}

static void post(replica_t *r, const char *id, double when)
{
    crdt_obj_t *d = NULL;
    int rc = crdt_timeline_add(r->feed, id, strlen(id), when, &d);
    printf("  %-5s add    %-12s at %6.0f -> %s\n", r->name, id, when,
           rc == 1 ? "applied" : rc == 0 ? "no-op" : crdt_strerror(rc));
    ship(r, d);
}

static void unpost(replica_t *r, const char *id, double when)
{
    crdt_obj_t *d = NULL;
    int rc = crdt_timeline_remove(r->feed, id, strlen(id), when, &d);
    printf("  %-5s remove %-12s at %6.0f -> %s\n", r->name, id, when,
           rc == 1 ? "applied" : rc == 0 ? "no-op" : crdt_strerror(rc));
    ship(r, d);
}

static void like(replica_t *r, uint64_t node, int64_t n)
{
    crdt_obj_t *d = NULL;
    crdt_pncounter_add(r->likes, node, n, &d);
    ship(r, d);
}

/* Delivers every delta of `from` to `to` twice, in reverse order: joins do not care. */
static int deliver(replica_t *from, replica_t *to)
{
    int applied = 0;
    for (int pass = 0; pass < 2; pass++) {
        for (int i = from->nout - 1; i >= 0; i--) {
            crdt_error_t err;
            crdt_obj_t *d = crdt_obj_decode(from->outbox[i].data, from->outbox[i].len, &err);
            if (!d) {
                fprintf(stderr, "decode failed at byte %zu: %s\n", err.offset, err.text);
                return -1;
            }
            crdt_obj_t *target = crdt_obj_type(d) == CRDT_TIMELINE ? to->feed : to->likes;
            if (crdt_obj_merge(target, d) == 1)
                applied++;
            crdt_obj_free(d);
        }
    }
    return applied;
}

static void show(const replica_t *r)
{
    crdt_tl_entry_t top[5];
    size_t n = crdt_timeline_range(r->feed, 0, 5, top);
    int64_t likes = 0;
    crdt_counter_value(r->likes, &likes);
    printf("  %s: %zu live posts, %lld likes, newest first:", r->name,
           crdt_timeline_card(r->feed), (long long)likes);
    for (size_t i = 0; i < n; i++)
        printf(" %.*s(%.0f)", (int)top[i].member_len, (const char *)top[i].member, top[i].score);
    putchar('\n');
}

int main(void)
{
    replica_t eu = {.name = "eu"}, us = {.name = "us"};
    eu.feed = crdt_timeline_new(4);
    us.feed = crdt_timeline_new(4);
    eu.likes = crdt_obj_new(CRDT_PNCOUNTER);
    us.likes = crdt_obj_new(CRDT_PNCOUNTER);
    if (!eu.feed || !us.feed || !eu.likes || !us.likes) {
        fprintf(stderr, "out of memory\n");
        return 1;
    }

    puts("Writes, accepted locally on each replica (timelines keep the newest 4):");
    post(&eu, "post:alpha", 100);
    post(&eu, "post:bravo", 200);
    post(&us, "post:charlie", 150);
    post(&us, "post:delta", 300);
    unpost(&us, "post:bravo", 200); /* equal score: the remove wins, on both sides */
    post(&eu, "post:echo", 400);
    post(&eu, "post:foxtrot", 50);   /* lowest of five: trimmed once the feeds meet */
    post(&us, "post:alpha", 90);     /* older than eu's write of alpha: loses */
    like(&eu, 1, 3);
    like(&us, 2, 5);
    like(&us, 2, -1);

    puts("\nBefore exchanging deltas:");
    show(&eu);
    show(&us);
    int a = deliver(&eu, &us), b = deliver(&us, &eu);
    if (a < 0 || b < 0)
        return 1;
    printf("\nAfter exchanging deltas (reversed and duplicated): %d changed us, %d changed eu\n", a,
           b);
    show(&eu);
    show(&us);

    crdt_buf_t x = {0}, y = {0};
    crdt_obj_encode(eu.feed, &x);
    crdt_obj_encode(us.feed, &y);
    int same = x.len == y.len && memcmp(x.data, y.data, x.len) == 0 && crdt_obj_equal(eu.likes, us.likes);
    crdt_tl_entry_t floor;
    if (crdt_timeline_floor(eu.feed, &floor))
        printf("  floor: %.*s(%.0f): writes at or below it are ignored, so trimmed posts stay gone\n",
               (int)floor.member_len, (const char *)floor.member, floor.score);
    printf("\nReplicas converged byte for byte: %s (%zu-byte encoding)\n", same ? "yes" : "NO",
           x.len);
    json_t *j = crdt_obj_to_json(eu.feed);
    char *text = json_dumps(j, JSON_INDENT(2));
    printf("eu's feed as JSON:\n%s\n", text);
    free(text);
    json_decref(j);

    crdt_buf_free(&x);
    crdt_buf_free(&y);
    for (int i = 0; i < eu.nout; i++)
        crdt_buf_free(&eu.outbox[i]);
    for (int i = 0; i < us.nout; i++)
        crdt_buf_free(&us.outbox[i]);
    crdt_obj_free(eu.feed);
    crdt_obj_free(us.feed);
    crdt_obj_free(eu.likes);
    crdt_obj_free(us.likes);
    return same ? 0 : 1;
}
