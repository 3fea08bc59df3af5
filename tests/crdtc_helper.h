/* crdtc_helper.h - test clients on the crdtc library: counters of what each session saw, a loop
 * runner with a deadline, REST reads of a key's binary state. Static functions: include it in one
 * translation unit per program (after tap.h). */
#ifndef CRDT_CRDTC_HELPER_H
#define CRDT_CRDTC_HELPER_H

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <jansson.h>

#include "crdt_json.h"
#include "crdtc.h"
#include "http_client.h"

typedef struct tc {
    crdtc_t *c;
    int welcomes, changes, full_changes, acks, dup_acks, errors, closes, subscribed;
    int last_close;
    bool reconnecting;
    char last_error[64];
    char last_error_msg[256];
    uint64_t last_error_id;
    crdtc_ack_t last_ack;
    uint64_t last_change_ms;
    /* keys of catch-up (full) changes, newline-separated text, for "exactly what it missed" */
    char full_keys[4096];
} tc_t;

static inline uint64_t th_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

static inline void th_welcome(crdtc_t *c, const crdtc_welcome_t *w, void *ud)
{
    (void)c, (void)w;
    ((tc_t *)ud)->welcomes++;
}

static inline void th_change(crdtc_t *c, const crdtc_change_t *ch, void *ud)
{
    (void)c;
    tc_t *t = ud;
    t->changes++;
    t->last_change_ms = th_now_ms();
    if (ch->full) {
        t->full_changes++;
        size_t n = strlen(t->full_keys);
        if (n + ch->klen + 2 < sizeof(t->full_keys)) {
            memcpy(t->full_keys + n, ch->key, ch->klen);
            t->full_keys[n + ch->klen] = '\n';
            t->full_keys[n + ch->klen + 1] = '\0';
        }
    }
}

static inline void th_subscribed(crdtc_t *c, uint64_t id, uint64_t cursor, void *ud)
{
    (void)c, (void)id, (void)cursor;
    ((tc_t *)ud)->subscribed++;
}

static inline void th_ack(crdtc_t *c, const crdtc_ack_t *a, void *ud)
{
    (void)c;
    tc_t *t = ud;
    t->acks++;
    t->dup_acks += a->duplicate;
    t->last_ack = *a;
}

static inline void th_error(crdtc_t *c, uint64_t id, const char *code, const char *msg, void *ud)
{
    (void)c;
    tc_t *t = ud;
    t->errors++;
    t->last_error_id = id;
    snprintf(t->last_error, sizeof(t->last_error), "%s", code);
    snprintf(t->last_error_msg, sizeof(t->last_error_msg), "%s", msg ? msg : "");
}

static inline void th_close(crdtc_t *c, int code, const char *reason, bool again, void *ud)
{
    (void)c, (void)reason;
    tc_t *t = ud;
    t->closes++;
    t->last_close = code;
    t->reconnecting = again;
}

/* A client of 127.0.0.1:port (not connected yet). */
static inline crdtc_t *tc_new(tc_t *t, crdtc_loop_t *l, int port, const char *client, const char *token,
                       const char *state_file)
{
    memset(t, 0, sizeof(*t));
    crdtc_config_t cfg = {.port = port,
                          .client_id = client,
                          .token = token,
                          .state_file = state_file,
                          .backoff_min_ms = 20,
                          .backoff_max_ms = 200,
                          .cb = {.welcome_cb = th_welcome,
                                 .change_cb = th_change,
                                 .subscribed_cb = th_subscribed,
                                 .ack_cb = th_ack,
                                 .error_cb = th_error,
                                 .close_cb = th_close},
                          .ud = t};
    int err = 0;
    t->c = crdtc_new(l, &cfg, &err);
    if (!t->c)
        diag("crdtc_new(%s): %s", client, crdtc_strerror(err));
    return t->c;
}

/* Services the loop until cond holds or ms pass; the value of cond. */
#define RUN_UNTIL(loop, cond, ms)                                                                  \
    ({                                                                                             \
        uint64_t dl_ = th_now_ms() + (ms);                                                         \
        while (!(cond) && th_now_ms() < dl_)                                                       \
            crdtc_loop_service((loop), 5);                                                         \
        (bool)(cond);                                                                              \
    })

static inline void run_for(crdtc_loop_t *l, unsigned ms)
{
    uint64_t dl = th_now_ms() + ms;
    while (th_now_ms() < dl)
        crdtc_loop_service(l, 5);
}

/* base64url (no padding) of bytes, for REST paths /v1/keys64/{key} (any bytes); static rotating
 * buffers */
static const char *th_b64u(const void *p, size_t n)
{
    static char bufs[4][2048];
    static int k;
    char *o = bufs[k++ % 4];
    char *b = crdt_base64_encode(p, n, NULL);
    size_t w = 0;
    for (const char *q = b; q && *q && *q != '=' && w + 1 < sizeof(bufs[0]); q++)
        o[w++] = *q == '+' ? '-' : *q == '/' ? '_' : *q;
    o[w] = '\0';
    free(b);
    return o;
}

/* The server's binary state of a key (REST GET), as a new crdt_buf (data NULL if absent). */
static inline crdt_buf_t rest_state(int port, const void *key, size_t klen)
{
    crdt_buf_t out = {0};
    char path[2200];
    snprintf(path, sizeof(path), "/v1/keys64/%s", th_b64u(key, klen));
    hc_resp_t r = {0};
    if (hc_request(port, "GET", path, NULL, &r) == 0 && r.status == 200) {
        json_t *j = json_loadb(r.body, r.body_len, 0, NULL);
        json_t *b = json_object_get(j, "binary");
        uint8_t *bin;
        size_t blen;
        if (json_is_string(b) &&
            !crdt_base64_decode(json_string_value(b), json_string_length(b), &bin, &blen)) {
            crdt_buf_append(&out, bin, blen);
            free(bin);
        }
        json_decref(j);
    }
    hc_resp_free(&r);
    return out;
}

/* The local replica's encoding of a key (data NULL if absent). */
static inline crdt_buf_t local_state(crdtc_t *c, const char *key)
{
    crdt_buf_t out = {0};
    const crdt_obj_t *o = crdtc_local(c, key, strlen(key), 0);
    if (o)
        crdt_obj_encode(o, &out);
    return out;
}

static inline bool buf_eq(const crdt_buf_t *a, const crdt_buf_t *b)
{
    return a->data && b->data && a->len == b->len && !memcmp(a->data, b->data, a->len);
}

/* True when the local replica of c holds exactly the server's state of key. */
static inline bool same_as_server(crdtc_t *c, int port, const char *key)
{
    crdt_buf_t a = local_state(c, key), b = rest_state(port, key, strlen(key));
    bool r = buf_eq(&a, &b);
    crdt_buf_free(&a);
    crdt_buf_free(&b);
    return r;
}

/* REST POST of an op body to a key; the HTTP status. */
static inline int rest_post(int port, const char *key, const char *body)
{
    char path[2200];
    snprintf(path, sizeof(path), "/v1/keys64/%s", th_b64u(key, strlen(key)));
    hc_resp_t r = {0};
    int st = hc_request(port, "POST", path, body, &r) == 0 ? r.status : 0;
    hc_resp_free(&r);
    return st;
}

/* The value of a counter key per REST, or INT64_MIN. */
static inline long long rest_counter(int port, const char *key)
{
    char path[2200];
    snprintf(path, sizeof(path), "/v1/keys64/%s", th_b64u(key, strlen(key)));
    hc_resp_t r = {0};
    long long v = INT64_MIN;
    if (hc_request(port, "GET", path, NULL, &r) == 0 && r.status == 200) {
        json_t *j = json_loadb(r.body, r.body_len, 0, NULL);
        json_t *val = json_object_get(j, "value");
        if (json_is_integer(val))
            v = json_integer_value(val);
        json_decref(j);
    }
    hc_resp_free(&r);
    return v;
}

#endif /* CRDT_CRDTC_HELPER_H */
