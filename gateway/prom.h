/* prom.h - the one Prometheus text writer (exposition format 0.0.4) of the gateway
 *
 * Layer: bottom (includes nothing of gateway/). /metrics (status.c, metrics.c), the sessions'
 * gw_sync_metrics and the peers' gw_peer_metrics write their families with it.
 *
 *   gw_prom_t o;
 *   gw_prom_init(&o, 4096);
 *   gw_prom_family(&o, "crdtd_x_total", "counter", "Things done.");
 *   gw_prom_u64(&o, "crdtd_x_total", (const gw_prom_label_t[]){{"kind", "a"}}, 1, 42);
 *   char *text = gw_prom_take(&o, &len); // NULL when memory ran out at any point
 */
#ifndef CRDT_GW_PROM_H
#define CRDT_GW_PROM_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef struct gw_prom {
    char *p;
    size_t len, cap;
    bool oom; /* an append failed: the text is incomplete, gw_prom_take returns NULL */
} gw_prom_t;

typedef struct gw_prom_label {
    const char *name;  /* [a-zA-Z_][a-zA-Z0-9_]*, written as is */
    const char *value; /* any bytes up to NUL: '\\', '"' and newlines are escaped */
} gw_prom_label_t;

/* Starts an empty text with room for about `hint` bytes; false when out of memory. */
bool gw_prom_init(gw_prom_t *o, size_t hint);
void gw_prom_free(gw_prom_t *o);
/* The text (malloc'd, NUL-terminated; *len its length if len is not NULL), o left empty; NULL
 * (and o freed) when memory ran out while writing. */
char *gw_prom_take(gw_prom_t *o, size_t *len);
/* Appends text as is (another writer's output, or a line the caller built). */
void gw_prom_raw(gw_prom_t *o, const char *s, size_t n);
/* "# HELP name help\n# TYPE name type\n"; type is counter, gauge, histogram or summary. */
void gw_prom_family(gw_prom_t *o, const char *name, const char *type, const char *help);
/* One sample "name{l1="v1",...} value\n" (no braces without labels). */
void gw_prom_u64(gw_prom_t *o, const char *name, const gw_prom_label_t *labels, size_t nlabels,
                 uint64_t v);
/* A real value, as the shortest decimal that reads back as v ("+Inf", "-Inf", "NaN" for those). */
void gw_prom_f64(gw_prom_t *o, const char *name, const gw_prom_label_t *labels, size_t nlabels,
                 double v);
/* A whole histogram family: HELP/TYPE, name_bucket{le=..} for each of the n upper bounds with the
 * cumulative count of counts[0..i] (counts are per bucket, not cumulative), le="+Inf" with
 * `count`, then name_sum and name_count. */
void gw_prom_histogram(gw_prom_t *o, const char *name, const char *help, const double *bounds,
                       const uint64_t *counts, size_t n, uint64_t count, double sum);

#endif /* CRDT_GW_PROM_H */
