/* prom.c - Prometheus text exposition: families, samples with escaped labels, histograms */
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "prom.h"

bool gw_prom_init(gw_prom_t *o, size_t hint)
{
    o->cap = hint < 256 ? 256 : hint;
    o->len = 0;
    o->p = malloc(o->cap);
    o->oom = !o->p;
    if (o->p)
        o->p[0] = '\0';
    return !o->oom;
}

void gw_prom_free(gw_prom_t *o)
{
    free(o->p);
    o->p = NULL;
    o->len = o->cap = 0;
}

char *gw_prom_take(gw_prom_t *o, size_t *len)
{
    if (o->oom) {
        gw_prom_free(o);
        return NULL;
    }
    char *p = o->p;
    if (len)
        *len = o->len;
    o->p = NULL;
    o->len = o->cap = 0;
    return p;
}

static bool reserve(gw_prom_t *o, size_t n)
{
    if (o->oom)
        return false;
    if (o->len + n + 1 <= o->cap)
        return true;
    size_t cap = o->cap ? o->cap * 2 : 256;
    while (cap < o->len + n + 1)
        cap *= 2;
    char *p = realloc(o->p, cap);
    if (!p) {
        o->oom = true;
        return false;
    }
    o->p = p;
    o->cap = cap;
    return true;
}

void gw_prom_raw(gw_prom_t *o, const char *s, size_t n)
{
    if (!reserve(o, n))
        return;
    memcpy(o->p + o->len, s, n);
    o->len += n;
    o->p[o->len] = '\0';
}

static void put(gw_prom_t *o, const char *s)
{
    gw_prom_raw(o, s, strlen(s));
}

void gw_prom_family(gw_prom_t *o, const char *name, const char *type, const char *help)
{
    put(o, "# HELP ");
    put(o, name);
    put(o, " ");
    put(o, help);
    put(o, "\n# TYPE ");
    put(o, name);
    put(o, " ");
    put(o, type);
    put(o, "\n");
}

static void labels_put(gw_prom_t *o, const gw_prom_label_t *l, size_t n)
{
    if (!n)
        return;
    put(o, "{");
    for (size_t i = 0; i < n; i++) {
        if (i)
            put(o, ",");
        put(o, l[i].name);
        put(o, "=\"");
        for (const char *v = l[i].value ? l[i].value : ""; *v; v++) {
            if (*v == '\\')
                put(o, "\\\\");
            else if (*v == '"')
                put(o, "\\\"");
            else if (*v == '\n')
                put(o, "\\n");
            else
                gw_prom_raw(o, v, 1);
        }
        put(o, "\"");
    }
    put(o, "}");
}

static void sample(gw_prom_t *o, const char *name, const gw_prom_label_t *labels, size_t nlabels,
                   const char *value)
{
    put(o, name);
    labels_put(o, labels, nlabels);
    put(o, " ");
    put(o, value);
    put(o, "\n");
}

void gw_prom_u64(gw_prom_t *o, const char *name, const gw_prom_label_t *labels, size_t nlabels,
                 uint64_t v)
{
    char buf[24];
    snprintf(buf, sizeof(buf), "%" PRIu64, v);
    sample(o, name, labels, nlabels, buf);
}

static void f64_text(double v, char *buf, size_t n)
{
    if (isnan(v)) {
        snprintf(buf, n, "NaN");
        return;
    }
    if (isinf(v)) {
        snprintf(buf, n, v > 0 ? "+Inf" : "-Inf");
        return;
    }
    for (int prec = 1; prec <= 17; prec++) {
        snprintf(buf, n, "%.*g", prec, v);
        if (strtod(buf, NULL) == v)
            return;
    }
}

void gw_prom_f64(gw_prom_t *o, const char *name, const gw_prom_label_t *labels, size_t nlabels,
                 double v)
{
    char buf[40];
    f64_text(v, buf, sizeof(buf));
    sample(o, name, labels, nlabels, buf);
}

void gw_prom_histogram(gw_prom_t *o, const char *name, const char *help, const double *bounds,
                       const uint64_t *counts, size_t n, uint64_t count, double sum)
{
    char series[160], le[40];
    gw_prom_family(o, name, "histogram", help);
    snprintf(series, sizeof(series), "%s_bucket", name);
    uint64_t cum = 0;
    for (size_t i = 0; i < n; i++) {
        cum += counts[i];
        f64_text(bounds[i], le, sizeof(le));
        gw_prom_u64(o, series, &(gw_prom_label_t){"le", le}, 1, cum);
    }
    gw_prom_u64(o, series, &(gw_prom_label_t){"le", "+Inf"}, 1, count);
    snprintf(series, sizeof(series), "%s_sum", name);
    gw_prom_f64(o, series, NULL, 0, sum);
    snprintf(series, sizeof(series), "%s_count", name);
    gw_prom_u64(o, series, NULL, 0, count);
}
