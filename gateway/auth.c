/* auth.c - the token key ring, bearer tokens on HTTP requests and the one grant check */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include "auth.h"
#include "crdt_json.h"
#include "util.h"

#define RING_FILE_MAX 65536 /* a key ring file larger than this is refused */

typedef struct gw_auth {
    gw_token_key_t keys[GW_TOKEN_MAX_KEYS];
    size_t nkeys;
    char *roshi_token; /* --roshi-token-file's token, NUL-terminated, or NULL */
} gw_auth_t;

static int64_t unix_now(void)
{
    return (int64_t)time(NULL);
}

/* Reads a whole small file into a new NUL-terminated buffer; NULL after logging why. */
static char *read_small_file(const char *path, const char *what, size_t *len)
{
    FILE *f = fopen(path, "rb");
    if (!f) {
        gw_log("cannot read the %s %s: %s", what, path, strerror(errno));
        return NULL;
    }
    char *buf = malloc(RING_FILE_MAX + 1);
    size_t n = buf ? fread(buf, 1, RING_FILE_MAX + 1, f) : 0;
    bool err = ferror(f) != 0;
    fclose(f);
    if (!buf || err || n > RING_FILE_MAX) {
        gw_log("cannot read the %s %s: %s", what, path,
               !buf ? "out of memory" : err ? "read error" : "larger than 64K");
        free(buf);
        return NULL;
    }
    buf[n] = '\0';
    *len = n;
    return buf;
}

/* Parses the ring from the file (or $CRDTD_TOKEN_SECRET) into keys; the count, 0 when neither is
 * set, -1 after logging. */
static int ring_load(const gw_config_t *c, gw_token_key_t *keys)
{
    const char *env = getenv("CRDTD_TOKEN_SECRET");
    char *text = NULL;
    size_t len = 0;
    const char *from = c->token_secret_file;
    if (c->token_secret_file[0]) {
        text = read_small_file(c->token_secret_file, "token secret file", &len);
        if (!text)
            return -1;
    } else if (env && *env) {
        len = strlen(env);
        text = malloc(len + 1);
        if (!text)
            return -1;
        memcpy(text, env, len + 1);
        from = "$CRDTD_TOKEN_SECRET";
    } else {
        return 0;
    }
    size_t n = 0;
    char why[128];
    int rc = gw_token_keys_parse(text, len, keys, GW_TOKEN_MAX_KEYS, &n, why, sizeof(why));
    memset(text, 0, len);
    free(text);
    if (rc) {
        gw_log("the token key ring %s: %s", from, why);
        return -1;
    }
    return (int)n;
}

static bool host_is_loopback(const char *h)
{
    return !strncmp(h, "127.", 4) || !strcmp(h, "::1") || !strcmp(h, "localhost");
}

/* Reads --roshi-token-file: one token, surrounding whitespace dropped. 0 or -1 (logged). */
static int roshi_token_load(gw_server_t *s, gw_auth_t *a)
{
    if (!s->cfg.roshi_token_file[0])
        return 0;
    size_t len;
    char *t = read_small_file(s->cfg.roshi_token_file, "roshi token file", &len);
    if (!t)
        return -1;
    while (len && (t[len - 1] == '\n' || t[len - 1] == '\r' || t[len - 1] == ' '))
        t[--len] = '\0';
    gw_token_t tok;
    char why[96];
    int rc = gw_token_verify_ring(t, len, a->keys, a->nkeys, unix_now(), &tok, why, sizeof(why));
    gw_token_clear(&tok);
    if (rc != GW_TOKEN_OK) {
        gw_log("the roshi token in %s is not valid here: %s", s->cfg.roshi_token_file, why);
        free(t);
        return -1;
    }
    free(a->roshi_token);
    a->roshi_token = t;
    return 0;
}

int gw_auth_init(gw_server_t *s)
{
    gw_auth_t *a = calloc(1, sizeof(*a));
    if (!a) {
        gw_log("auth: out of memory");
        return -1;
    }
    int n = ring_load(&s->cfg, a->keys);
    if (n < 0) {
        free(a);
        return -1;
    }
    a->nkeys = (size_t)n;
    s->auth = a;
    if (!a->nkeys) {
        bool exposed = !host_is_loopback(s->cfg.listen.host) ||
                       (s->cfg.roshi_enabled && !host_is_loopback(s->cfg.roshi.host));
        if (exposed && !s->cfg.allow_open) {
            gw_log("refusing to listen on a non-loopback address with no token secret: anyone "
                   "who reaches the port could read and write every key; give "
                   "--token-secret-file, or --allow-open if that is what you mean");
            return -1;
        }
        s->open_node = true;
        gw_log("OPEN NODE: no token secret (--token-secret-file or $CRDTD_TOKEN_SECRET): every "
               "HTTP request and WebSocket session may read and write every key (requests "
               "naming a host other than an IP address, localhost or --allowed-host get 403)");
        if (s->cfg.roshi_token_file[0] || s->cfg.metrics_auth)
            gw_log("--roshi-token-file and --metrics-auth do nothing without a token secret");
        return 0;
    }
    if (roshi_token_load(s, a))
        return -1;
    char kids[GW_TOKEN_MAX_KEYS * (GW_TOKEN_MAX_KID + 1) + 1];
    gw_auth_kids(s, kids, sizeof(kids));
    gw_log("tokens required on every endpoint but /healthz%s; key ids: %s",
           s->cfg.metrics_auth ? "" : " and /metrics", kids);
    return 0;
}

int gw_auth_reload(gw_server_t *s)
{
    gw_auth_t *a = s->auth;
    if (!a || !a->nkeys)
        return 0; /* open nodes stay open: a secret needs a restart (the sessions' rules too) */
    gw_token_key_t keys[GW_TOKEN_MAX_KEYS];
    int n = ring_load(&s->cfg, keys);
    if (n <= 0) {
        gw_log("SIGHUP: keeping the previous token key ring (%s)",
               n == 0 ? "no secret any more: refusing to open the node" : "see above");
        memset(keys, 0, sizeof(keys));
        return -1;
    }
    memcpy(a->keys, keys, sizeof(keys));
    a->nkeys = (size_t)n;
    memset(keys, 0, sizeof(keys));
    if (s->cfg.roshi_token_file[0] && roshi_token_load(s, a))
        gw_log("SIGHUP: keeping the previous roshi token");
    char kids[GW_TOKEN_MAX_KEYS * (GW_TOKEN_MAX_KID + 1) + 1];
    gw_auth_kids(s, kids, sizeof(kids));
    gw_log("SIGHUP: token key ring reloaded; key ids: %s", kids);
    return 0;
}

void gw_auth_free(gw_server_t *s)
{
    gw_auth_t *a = s->auth;
    if (!a)
        return;
    free(a->roshi_token);
    memset(a, 0, sizeof(*a));
    free(a);
    s->auth = NULL;
}

bool gw_auth_enabled(const gw_server_t *s)
{
    return s->auth && s->auth->nkeys > 0;
}

void gw_auth_kids(const gw_server_t *s, char *buf, size_t n)
{
    size_t at = 0;
    if (n)
        buf[0] = '\0';
    for (size_t i = 0; s->auth && i < s->auth->nkeys && at < n; i++) {
        int w = snprintf(buf + at, n - at, "%s%s", i ? "," : "", s->auth->keys[i].kid);
        if (w < 0)
            break;
        at += (size_t)w;
    }
}

int gw_auth_verify(const gw_server_t *s, const char *tok, size_t len, gw_token_t *out, char *why,
                   size_t whylen)
{
    const gw_auth_t *a = s->auth;
    return gw_token_verify_ring(tok, len, a ? a->keys : NULL, a ? a->nkeys : 0, unix_now(), out,
                                why, whylen);
}

gw_denial_t gw_auth_key(const gw_token_t *t, gw_access_t a, const void *key, size_t klen,
                        bool prefix)
{
    if (!t)
        return GW_DENY_NONE;
    if (a == GW_ACCESS_WRITE) {
        if (!t->nwrite)
            return GW_DENY_READ_ONLY;
        return gw_token_can_write_key(t, key, klen) ? GW_DENY_NONE : GW_DENY_OUTSIDE_GRANT;
    }
    bool ok = prefix ? gw_token_can_read_prefix(t, key, klen) : gw_token_can_read_key(t, key, klen);
    return ok ? GW_DENY_NONE : GW_DENY_OUTSIDE_GRANT;
}

const char *gw_denial_name(gw_denial_t d)
{
    switch (d) {
    case GW_DENY_READ_ONLY: return "read_only";
    case GW_DENY_OUTSIDE_GRANT: return "outside_grant";
    default: return "";
    }
}

const char *gw_token_reason(int rc)
{
    switch (rc) {
    case GW_TOKEN_EMALFORMED: return "malformed";
    case GW_TOKEN_EBADMAC: return "bad_signature";
    case GW_TOKEN_EEXPIRED: return "expired";
    case GW_TOKEN_EUNKNOWNKID: return "unknown_kid";
    default: return "internal";
    }
}

/* ---- HTTP ----------------------------------------------------------------------------------- */

/* {"error":"unauthorized"|"forbidden","code":status,"reason":reason,"description":text} */
static void respond_denied(gw_response_t *rs, int status, const char *reason, const char *text)
{
    json_t *j = json_pack("{s:s, s:i, s:s, s:s}", "error",
                          status == 401 ? "unauthorized" : "forbidden", "code", status, "reason",
                          reason, "description", text);
    if (!j) /* text quoting a key that is not UTF-8 */
        j = json_pack("{s:s, s:i, s:s}", "error", status == 401 ? "unauthorized" : "forbidden",
                      "code", status, "reason", reason);
    rs->wait_seq = 0;
    gw_respond_json(rs, status, j);
    rs->www_auth = status == 401;
}

static bool path_open(const gw_server_t *s, const char *path)
{
    if (!strcmp(path, "/healthz"))
        return true;
    return !strcmp(path, "/metrics") && !s->cfg.metrics_auth;
}

bool gw_auth_http(gw_server_t *s, gw_exchange_t *x)
{
    if (!gw_auth_enabled(s) || path_open(s, x->rq.path))
        return true;
    const char *h = x->rq.auth;
    const char *tok = NULL;
    if (h) {
        if (strncasecmp(h, "Bearer ", 7) != 0) {
            respond_denied(&x->rs, 401, "malformed",
                           "the Authorization header must be \"Bearer <token>\"");
            return false;
        }
        tok = h + 7;
        while (*tok == ' ')
            tok++;
    } else if (x->rq.roshi && s->auth->roshi_token) {
        tok = s->auth->roshi_token;
    } else {
        respond_denied(&x->rs, 401, "missing",
                       x->rq.roshi ? "a token is needed: Authorization: Bearer <token> (or "
                                     "--roshi-token-file on the server)"
                                   : "a token is needed: Authorization: Bearer <token>");
        return false;
    }
    size_t len = strlen(tok);
    while (len && tok[len - 1] == ' ')
        len--;
    if (!len) {
        respond_denied(&x->rs, 401, "missing", "the Authorization header holds no token");
        return false;
    }
    char why[96], text[160];
    int rc = gw_auth_verify(s, tok, len, &x->tok, why, sizeof(why));
    if (rc != GW_TOKEN_OK) {
        gw_token_clear(&x->tok);
        snprintf(text, sizeof(text), "%s", why);
        respond_denied(&x->rs, 401, gw_token_reason(rc), text);
        return false;
    }
    x->has_tok = true;
    return true;
}

bool gw_auth_http_key(gw_exchange_t *x, gw_access_t a, const void *key, size_t klen,
                      const char *what)
{
    if (gw_auth_enabled(x->srv) && !x->has_tok) { /* a handler reached without the gate */
        respond_denied(&x->rs, 401, "missing", "a token is needed: Authorization: Bearer <token>");
        return false;
    }
    gw_denial_t d = gw_auth_key(gw_auth_http_token(x), a, key, klen, false);
    if (d == GW_DENY_NONE)
        return true;
    /* the key (its first 96 bytes) in its JSON form: "feed:1", or {"base64":"AP8="} */
    json_t *kj = crdt_json_bytes(key, klen < 96 ? klen : 96);
    char *ks = kj ? json_dumps(kj, JSON_ENCODE_ANY | JSON_COMPACT) : NULL;
    json_decref(kj);
    char text[320];
    if (d == GW_DENY_READ_ONLY)
        snprintf(text, sizeof(text), "the token of \"%s\" is read-only: it may not write %s %s",
                 x->tok.sub, what, ks ? ks : "");
    else
        snprintf(text, sizeof(text), "%s %s%s is outside the %s grants of the token of \"%s\"",
                 what, ks ? ks : "", klen > 96 ? "..." : "",
                 a == GW_ACCESS_WRITE ? "write" : "read", x->tok.sub);
    free(ks);
    respond_denied(&x->rs, 403, gw_denial_name(d), text);
    return false;
}

const gw_token_t *gw_auth_http_token(const gw_exchange_t *x)
{
    return x->has_tok ? &x->tok : NULL;
}
