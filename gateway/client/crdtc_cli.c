/* crdtc_cli.c - crdtc, the command-line client of crdtd's WebSocket sync protocol (crdt.v1) */
#include <errno.h>
#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <jansson.h>

#include "crdt_json.h"
#include "crdtc.h"
#include "token.h"

static const char usage[] =
    "usage: crdtc [options] COMMAND ...\n"
    "  sub KEY...            subscribe; print every change as a JSON line, resume from the\n"
    "                        state file's cursor when it has one\n"
    "  sub-prefix PREFIX...  the same for every key starting with PREFIX (\"\" = every key)\n"
    "  apply KEY OPJSON      apply a REST-shaped op, e.g. "
    "'{\"type\":\"pncounter\",\"op\":\"incr\"}'\n"
    "                        (with --delta: OPJSON is a libcrdt JSON frame to join), wait for the\n"
    "                        ack and print it\n"
    "  delete KEY            delete the key (what the server has seen of it), print the ack\n"
    "  token --secret-file F --sub S --ttl SECS [--read P]... [--write P]...\n"
    "                        mint a session token (P: a key prefix, \"\" = every key)\n"
    "options:\n"
    "  --url URL             ws://host:port[/path] or wss:// (default ws://127.0.0.1:7379)\n"
    "  --ca FILE             wss://: trust only this PEM CA (default: the system store)\n"
    "  --token T             session token; --token-file F reads it from a file\n"
    "  --client ID           client id (default: the state file's, else crdtc-<random>)\n"
    "  --state-file F        keep the cursor, op ids and subscriptions in F across runs\n"
    "  --base64              KEY, PREFIX and grant arguments are standard base64 (for bytes\n"
    "                        that are not text), not text\n"
    "  --count N             sub: exit after N changes\n"
    "  --timeout S           exit after S seconds (sub: status 0; apply: status 1, no ack)\n"
    "  --delta               apply: OPJSON is a delta frame\n"
    "  --quiet               no status lines on stderr\n"
    "  --help\n"
    "Changes print as {\"key\":K,\"seq\":S,\"cursor\":C,\"state\"|\"delta\":frame}, K the key as\n"
    "a JSON string when it is UTF-8 text, else {\"base64\":\"...\"}.\n"
    "Exit status: 0 ok, 1 failure, 2 usage.\n";

static volatile sig_atomic_t stop_flag;
static void on_signal(int sig)
{
    (void)sig;
    stop_flag = 1;
}

typedef struct cli {
    bool quiet;
    long count, seen;
    int status;
    bool done;
    int64_t want_id; /* apply: the op id we wait for */
    bool closing;    /* the CLI closes the connection itself: its end is no news */
} cli_t;

static void change_cb(crdtc_t *c, const crdtc_change_t *ch, void *ud)
{
    (void)c;
    cli_t *s = ud;
    json_t *j = json_object();
    json_object_set_new(j, "key", crdt_json_bytes(ch->key, ch->klen));
    json_object_set_new(j, "seq", json_integer((json_int_t)ch->seq));
    json_object_set_new(j, "cursor", json_integer((json_int_t)ch->cursor));
    json_object_set(j, ch->full ? "state" : "delta", (json_t *)ch->frame);
    char *text = json_dumps(j, JSON_COMPACT);
    json_decref(j);
    if (text) {
        printf("%s\n", text);
        fflush(stdout);
        free(text);
    }
    if (s->count > 0 && ++s->seen >= s->count)
        s->done = true;
}

static void ack_cb(crdtc_t *c, const crdtc_ack_t *a, void *ud)
{
    (void)c;
    cli_t *s = ud;
    if ((int64_t)a->id != s->want_id)
        return;
    printf("{\"id\":%llu,\"seq\":%llu,\"applied\":%s,\"duplicate\":%s}\n",
           (unsigned long long)a->id, (unsigned long long)a->seq, a->applied ? "true" : "false",
           a->duplicate ? "true" : "false");
    fflush(stdout);
    s->done = true;
}

static void error_cb(crdtc_t *c, uint64_t id, const char *code, const char *msg, void *ud)
{
    (void)c;
    cli_t *s = ud;
    fprintf(stderr, "crdtc: error %s: %s\n", code, msg);
    if (s->want_id && (int64_t)id == s->want_id) {
        s->status = 1;
        s->done = true;
    }
}

static void close_cb(crdtc_t *c, int code, const char *reason, bool again, void *ud)
{
    (void)c;
    cli_t *s = ud;
    if (s->closing)
        return;
    if (!s->quiet)
        fprintf(stderr, "crdtc: connection closed (%d%s%s)%s\n", code, *reason ? ": " : "", reason,
                again ? ", reconnecting" : "");
    if (!again) {
        s->status = 1;
        s->done = true;
    }
}

static void welcome_cb(crdtc_t *c, const crdtc_welcome_t *w, void *ud)
{
    cli_t *s = ud;
    if (!s->quiet)
        fprintf(stderr, "crdtc: connected, node %llu, seq %llu, session %s, cursor %llu\n",
                (unsigned long long)w->node, (unsigned long long)w->seq, w->session,
                (unsigned long long)crdtc_cursor(c));
}

static void subscribed_cb(crdtc_t *c, uint64_t id, uint64_t cursor, void *ud)
{
    (void)c;
    cli_t *s = ud;
    if (!s->quiet)
        fprintf(stderr, "crdtc: subscribed (request %llu, cursor %llu)\n", (unsigned long long)id,
                (unsigned long long)cursor);
}

/* An argument as bytes: text, or standard base64 with --base64. */
static int arg_bytes(const char *a, bool b64, uint8_t **out, size_t *len)
{
    if (b64)
        return crdt_base64_decode(a, strlen(a), out, len) ? -1 : 0;
    *len = strlen(a);
    *out = malloc(*len + 1);
    if (!*out)
        return -1;
    memcpy(*out, a, *len + 1);
    return 0;
}

static char *read_file(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    if (!f)
        return NULL;
    size_t cap = 4096, n = 0;
    char *buf = malloc(cap + 1);
    while (buf) {
        size_t r = fread(buf + n, 1, cap - n, f);
        n += r;
        if (r == 0)
            break;
        if (n == cap) {
            if (cap >= (1u << 20)) /* secrets and tokens are small */
                break;
            char *p = realloc(buf, cap * 2 + 1);
            if (!p) {
                free(buf);
                buf = NULL;
                break;
            }
            buf = p;
            cap *= 2;
        }
    }
    fclose(f);
    if (!buf)
        return NULL;
    while (n && (buf[n - 1] == '\n' || buf[n - 1] == '\r'))
        n--;
    buf[n] = '\0';
    if (len)
        *len = n;
    return buf;
}

static int parse_url(const char *url, char *host, size_t hcap, int *port, char *path, size_t pcap,
                     bool *tls)
{
    const char *p = url;
    *tls = false;
    if (!strncmp(p, "ws://", 5))
        p += 5;
    else if (!strncmp(p, "wss://", 6))
        p += 6, *tls = true;
    else if (strstr(p, "://"))
        return -1;
    const char *slash = strchr(p, '/');
    const char *end = slash ? slash : p + strlen(p);
    const char *colon = memchr(p, ':', (size_t)(end - p));
    size_t hl = (size_t)((colon ? colon : end) - p);
    if (!hl || hl >= hcap)
        return -1;
    memcpy(host, p, hl);
    host[hl] = '\0';
    *port = 7379;
    if (colon) {
        char *e;
        long v = strtol(colon + 1, &e, 10);
        if (e != end || v < 1 || v > 65535)
            return -1;
        *port = (int)v;
    }
    snprintf(path, pcap, "%s", slash ? slash : "/");
    return 0;
}

static int cmd_token(int argc, char **argv, bool b64)
{
    const char *secret_file = NULL, *sub = NULL;
    long ttl = -1;
    const char *reads[GW_TOKEN_MAX_GRANTS], *writes[GW_TOKEN_MAX_GRANTS];
    size_t nr = 0, nw = 0;
    for (int i = 0; i < argc; i++) {
        const char *a = argv[i];
        const char *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!v) {
            fprintf(stderr, "crdtc token: %s needs a value\n", a);
            return 2;
        }
        if (!strcmp(a, "--secret-file"))
            secret_file = v;
        else if (!strcmp(a, "--sub"))
            sub = v;
        else if (!strcmp(a, "--ttl"))
            ttl = strtol(v, NULL, 10);
        else if (!strcmp(a, "--read") && nr < GW_TOKEN_MAX_GRANTS)
            reads[nr++] = v;
        else if (!strcmp(a, "--write") && nw < GW_TOKEN_MAX_GRANTS)
            writes[nw++] = v;
        else {
            fprintf(stderr, "crdtc token: unknown or repeated option %s\n", a);
            return 2;
        }
        i++;
    }
    if (!secret_file || !sub || ttl < 0) {
        fprintf(stderr, "crdtc token: --secret-file, --sub and --ttl are required\n");
        return 2;
    }
    size_t slen;
    char *secret = read_file(secret_file, &slen);
    if (!secret || slen < 16) {
        fprintf(stderr, "crdtc token: cannot read a secret of >= 16 bytes from %s\n", secret_file);
        free(secret);
        return 1;
    }
    /* grants: the prefixes' bytes (text, or with --base64 decoded from standard base64) */
    gw_grant_t rg[GW_TOKEN_MAX_GRANTS] = {{0}}, wg[GW_TOKEN_MAX_GRANTS] = {{0}};
    bool bad = false;
    for (size_t i = 0; i < nr; i++)
        bad |= arg_bytes(reads[i], b64, &rg[i].prefix, &rg[i].len) != 0;
    for (size_t i = 0; i < nw; i++)
        bad |= arg_bytes(writes[i], b64, &wg[i].prefix, &wg[i].len) != 0;
    char *tok = bad ? NULL
                    : gw_token_make(secret, slen, sub, (int64_t)time(NULL) + ttl, rg, nr, wg, nw);
    for (size_t i = 0; i < nr; i++)
        free(rg[i].prefix);
    for (size_t i = 0; i < nw; i++)
        free(wg[i].prefix);
    free(secret);
    if (!tok) {
        fprintf(stderr, "crdtc token: bad grant or subject\n");
        return 1;
    }
    printf("%s\n", tok);
    free(tok);
    return 0;
}

/* The client id the state file names, if any (malloc'd). */
static char *state_client(const char *path)
{
    json_t *j = json_load_file(path, 0, NULL);
    json_t *v = json_object_get(j, "client");
    char *r = json_is_string(v) ? strdup(json_string_value(v)) : NULL;
    json_decref(j);
    return r;
}

int main(int argc, char **argv)
{
    enum {
        O_URL = 256,
        O_TOKEN,
        O_TOKEN_FILE,
        O_CA,
        O_CLIENT,
        O_STATE,
        O_B64,
        O_COUNT,
        O_TIMEOUT,
        O_DELTA,
        O_QUIET,
        O_HELP
    };
    static const struct option opts[] = {
        {"url", required_argument, NULL, O_URL},
        {"token", required_argument, NULL, O_TOKEN},
        {"token-file", required_argument, NULL, O_TOKEN_FILE},
        {"ca", required_argument, NULL, O_CA},
        {"client", required_argument, NULL, O_CLIENT},
        {"state-file", required_argument, NULL, O_STATE},
        {"base64", no_argument, NULL, O_B64},
        {"count", required_argument, NULL, O_COUNT},
        {"timeout", required_argument, NULL, O_TIMEOUT},
        {"delta", no_argument, NULL, O_DELTA},
        {"quiet", no_argument, NULL, O_QUIET},
        {"help", no_argument, NULL, O_HELP},
        {NULL, 0, NULL, 0},
    };
    const char *ca_file = NULL;
    const char *url = "ws://127.0.0.1:7379", *token = NULL, *token_file = NULL, *client = NULL,
               *state = NULL;
    bool b64 = false, delta = false;
    double timeout = 0;
    cli_t s = {0};
    int o;
    /* "+": options stop at the command, whose own options (token) are parsed below */
    while ((o = getopt_long(argc, argv, "+", opts, NULL)) != -1) {
        switch (o) {
        case O_URL: url = optarg; break;
        case O_TOKEN: token = optarg; break;
        case O_TOKEN_FILE: token_file = optarg; break;
        case O_CA: ca_file = optarg; break;
        case O_CLIENT: client = optarg; break;
        case O_STATE: state = optarg; break;
        case O_B64: b64 = true; break;
        case O_COUNT: s.count = strtol(optarg, NULL, 10); break;
        case O_TIMEOUT: timeout = strtod(optarg, NULL); break;
        case O_DELTA: delta = true; break;
        case O_QUIET: s.quiet = true; break;
        case O_HELP: fputs(usage, stdout); return 0;
        default: fputs(usage, stderr); return 2;
        }
    }
    if (optind >= argc) {
        fputs(usage, stderr);
        return 2;
    }
    const char *cmd = argv[optind++];
    if (!strcmp(cmd, "token"))
        return cmd_token(argc - optind, argv + optind, b64);
    bool is_sub = !strcmp(cmd, "sub"), is_prefix = !strcmp(cmd, "sub-prefix"),
         is_apply = !strcmp(cmd, "apply"), is_delete = !strcmp(cmd, "delete");
    if (is_delete && delta) {
        fputs("crdtc: --delta is for apply\n", stderr);
        return 2;
    }
    if (is_delete && argc - optind != 1) {
        fputs(usage, stderr);
        return 2;
    }
    is_apply = is_apply || is_delete; /* a delete is the apply of {"op":"delete"} */
    if ((!is_sub && !is_prefix && !is_apply) || (is_apply && !is_delete && argc - optind != 2) ||
        (is_sub && argc - optind < 1) || (is_prefix && argc - optind < 1)) {
        fputs(usage, stderr);
        return 2;
    }

    char host[256], path[512];
    int port;
    bool tls = false;
    if (parse_url(url, host, sizeof(host), &port, path, sizeof(path), &tls)) {
        fprintf(stderr, "crdtc: bad --url %s (ws://host:port[/path])\n", url);
        return 2;
    }
    char *tokbuf = NULL;
    if (token_file && !(token = tokbuf = read_file(token_file, NULL))) {
        fprintf(stderr, "crdtc: cannot read %s: %s\n", token_file, strerror(errno));
        return 1;
    }
    char *client_buf = NULL, gen[40];
    if (!client && state)
        client = client_buf = state_client(state);
    if (!client) {
        uint64_t r = (uint64_t)time(NULL) * 1000003u ^ (uint64_t)getpid() * 2654435761u;
        snprintf(gen, sizeof(gen), "crdtc-%016llx", (unsigned long long)r);
        client = gen;
    }

    struct sigaction sa;
    memset(&sa, 0, sizeof(sa));
    sa.sa_handler = on_signal;
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    signal(SIGPIPE, SIG_IGN);

    crdtc_loop_t *loop = tls ? crdtc_loop_new_tls(ca_file) : crdtc_loop_new();
    crdtc_config_t cfg = {.tls = tls,
                          .host = host,
                          .port = port,
                          .path = path,
                          .token = token,
                          .client_id = client,
                          .state_file = state,
                          .cb = {.welcome_cb = welcome_cb,
                                 .change_cb = change_cb,
                                 .subscribed_cb = subscribed_cb,
                                 .ack_cb = ack_cb,
                                 .error_cb = error_cb,
                                 .close_cb = close_cb},
                          .ud = &s};
    int err = 0;
    crdtc_t *c = loop ? crdtc_new(loop, &cfg, &err) : NULL;
    if (!c) {
        fprintf(stderr, "crdtc: %s\n", loop ? crdtc_strerror(err) : "cannot create the loop");
        crdtc_loop_free(loop);
        free(tokbuf);
        free(client_buf);
        return err == CRDTC_EINVAL ? 2 : 1;
    }

    int rc = 0;
    for (int i = optind; is_apply ? i < optind + 1 : i < argc; i++) {
        uint8_t *k;
        size_t kl;
        if (arg_bytes(argv[i], b64, &k, &kl) || (!kl && !is_prefix)) {
            fprintf(stderr, "crdtc: bad key %s\n", argv[i]);
            rc = 2;
            break;
        }
        if (is_delete) {
            s.want_id = crdtc_delete(c, k, kl);
            if (s.want_id < 0) {
                fprintf(stderr, "crdtc: %s\n", crdtc_strerror((int)s.want_id));
                rc = 1;
            }
        } else if (is_apply) {
            json_error_t je;
            json_t *op = json_loads(argv[i + 1], 0, &je);
            if (!json_is_object(op)) {
                fprintf(stderr, "crdtc: OPJSON: %s\n", op ? "not an object" : je.text);
                rc = 2;
            } else if (delta) {
                crdt_error_t ce;
                crdt_obj_t *d = crdt_obj_from_json(op, &ce);
                s.want_id = d ? crdtc_apply_delta(c, k, kl, d) : CRDTC_EINVAL;
                if (!d)
                    fprintf(stderr, "crdtc: delta: %s\n", ce.text);
                crdt_obj_free(d);
            } else {
                s.want_id = crdtc_apply_op(c, k, kl, op);
            }
            json_decref(op);
            if (!rc && s.want_id < 0) {
                fprintf(stderr, "crdtc: %s\n", crdtc_strerror((int)s.want_id));
                rc = 1;
            }
        } else {
            int64_t r = is_sub ? crdtc_subscribe(c, k, kl, CRDTC_SINCE_AUTO)
                               : crdtc_subscribe_prefix(c, k, kl, CRDTC_SINCE_AUTO);
            if (r < 0) {
                fprintf(stderr, "crdtc: %s\n", crdtc_strerror((int)r));
                rc = 1;
            }
        }
        free(k);
        if (rc)
            break;
    }

    if (!rc) {
        struct timespec t0, t;
        clock_gettime(CLOCK_MONOTONIC, &t0);
        crdtc_connect(c);
        while (!stop_flag && !s.done) {
            if (crdtc_loop_service(loop, 100))
                break;
            clock_gettime(CLOCK_MONOTONIC, &t);
            double el = (double)(t.tv_sec - t0.tv_sec) + (double)(t.tv_nsec - t0.tv_nsec) / 1e9;
            if (timeout > 0 && el >= timeout) {
                if (is_apply) {
                    fprintf(stderr, "crdtc: no ack within %.1f s\n", timeout);
                    s.status = 1;
                }
                break;
            }
        }
        rc = s.status;
        if (is_apply && !s.done && !rc)
            rc = 1;
        s.closing = true;
        crdtc_disconnect(c);
        for (int i = 0; i < 10 && crdtc_ready(c); i++)
            crdtc_loop_service(loop, 20);
    }
    crdtc_free(c);
    crdtc_loop_free(loop);
    free(tokbuf);
    free(client_buf);
    return rc;
}
