/* config.c - crdtd's flags and its key = value config file */
#include <ctype.h>
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "config.h"
#include "cors.h"

void gw_config_defaults(gw_config_t *c)
{
    memset(c, 0, sizeof(*c));
    snprintf(c->listen.host, sizeof(c->listen.host), "127.0.0.1");
    c->listen.port = 7379;
    snprintf(c->roshi.host, sizeof(c->roshi.host), "127.0.0.1");
    c->roshi.port = 6302;
    snprintf(c->data_dir, sizeof(c->data_dir), "./crdtd-data");
    crdt_replica_config_t rc;
    crdt_replica_config_init(&rc);
    c->fsync = rc.fsync;
    c->node_id = rc.node_id;
    c->timeline_max_size = rc.timeline_max_size;
    c->snapshot_log_bytes = rc.snapshot_log_bytes;
    c->max_clock_drift_ms = rc.max_clock_drift_ms;
    c->max_body = 1u << 20;
    c->max_key = 1024;
    c->max_member = 64u << 10;
    c->max_header = 8192;
    c->tick_ms = 100;
    c->ws_max_message = 1u << 20;
    c->ws_max_subscriptions = 1024;
    c->ws_max_sessions = 10000;
    c->ws_send_queue = 8u << 20;
    c->ws_idle_timeout = 60;
    c->ws_max_errors = 32;
    snprintf(c->cluster, sizeof(c->cluster), "crdtd");
    c->peer_queue = 64u << 20;
    c->peer_batch_ms = 5;
    c->anti_entropy_secs = 30;
    c->max_clock_drift_ms = 86400000; /* 24 h, the Redis module's default */
    c->redis_wait_timeout_ms = 1000;
    c->redis_timeout_ms = 2000;
    c->redis_follow = true;
}

static void usage(FILE *f)
{
    fputs(
        "Usage: crdtd [options]\n"
        "\n"
        "An eventually consistent CRDT store with an HTTP API (REST, roshi-compatible).\n"
        "\n"
        "  --listen ADDR            HTTP API address, host:port (default 127.0.0.1:7379;\n"
        "                           port 0 picks a free port, printed at start)\n"
        "  --roshi-listen ADDR      also serve roshi-server's HTTP API at ADDR\n"
        "  --data-dir DIR           data directory (default ./crdtd-data), locked while running\n"
        "  --no-persist             keep everything in memory only (no log, no snapshot)\n"
        "  --fsync POLICY           always | everysec | no (default everysec)\n"
        "  --node-id N              this replica's id, 1.. (default 1)\n"
        "  --timeline-max-size N    bound of new timelines, 0 = unbounded (default 1000)\n"
        "  --snapshot-log-bytes N   snapshot once the log is this large, 0 = never (default 64M)\n"
        "  --max-body N             largest request body in bytes (default 1M)\n"
        "  --max-key N              largest key in bytes (default 1024)\n"
        "  --max-member N           largest member or register value in bytes (default 64K)\n"
        "  --max-header N           largest request line + headers in bytes (default 8K)\n"
        "  --max-clock-drift-ms N   how far ahead of this clock a timestamp in an applied write\n"
        "                           may move it (default 86400000, 24 h, as crdt.so's): a later\n"
        "                           local LWW write then wins; a write stamped further ahead is\n"
        "                           still merged, the clock does not follow it, it is counted\n"
        "                           (crdtd_clock_ahead_total) and logged; peers whose wall\n"
        "                           clock differs from ours by more are refused at the\n"
        "                           handshake (0: no peer check)\n"
        "\n"
        "WebSocket sessions (subprotocol crdt.v1 on the --listen port, docs/protocol.md):\n"
        "  --token-secret-file F    HMAC-SHA256 key of session tokens (or $CRDTD_TOKEN_SECRET);\n"
        "                           without one, sessions need no token and may do anything\n"
        "  --ws-max-message N       largest WebSocket message in bytes (default 1M)\n"
        "  --ws-max-subscriptions N subscriptions per session (default 1024)\n"
        "  --ws-max-sessions N      sessions per server (default 10000)\n"
        "  --ws-send-queue N        bytes queued for a slow session before dropping it (default "
        "8M)\n"
        "  --ws-idle-timeout S      close a session silent for S seconds (default 60)\n"
        "  --ws-max-errors N        error replies before closing a misbehaving session (32)\n"
        "\n"
        "Security (docs/security.md):\n"
        "  --token-secret-file F    also the key ring of every HTTP endpoint but /healthz: lines\n"
        "                           kid:secret (or one lone secret, kid \"default\"); SIGHUP\n"
        "                           re-reads it. Requests need Authorization: Bearer <token>\n"
        "  --metrics-auth           /metrics needs a token too (default: open)\n"
        "  --roshi-token-file F     token that roshi requests without an Authorization header\n"
        "                           run with (its grants, its expiry); without it they need one\n"
        "  --allow-open             listen on a non-loopback address without a token secret\n"
        "  --tls-cert F, --tls-key F  PEM certificate chain and key: HTTPS and WSS on --listen\n"
        "                           and --roshi-listen (cleartext refused); SIGHUP reloads them\n"
        "  --peer-ca F              CA (PEM) that peers' certificates must chain to (wss://\n"
        "                           peers); when given, the system store is not used for peers\n"
        "  --peer-cert F, --peer-key F  mutual TLS: this node's certificate when dialling, and\n"
        "                           inbound peers must present one from --peer-ca; a peer's\n"
        "                           certificate must name node-<its id> (CN or DNS SAN)\n"
        "  --peer-require-tls       refuse cleartext peers (inbound and --peer ws://)\n"
        "\n"
        "Replication (subprotocol crdt-peer.v1 on the --listen port, docs/replication.md):\n"
        "  --peer URL               a peer, ws://host:port or wss://; repeatable (at most 16)\n"
        "  --cluster NAME           cluster name, must match the peers' (default crdtd)\n"
        "  --peer-secret-file F     the cluster's shared secret (or $CRDTD_PEER_SECRET)\n"
        "  --peer-queue N           outbound bytes queued per peer before falling back to the\n"
        "                           change feed (default 64M)\n"
        "  --peer-batch-ms N        wait at most N ms to fill a batch of deltas (default 5)\n"
        "  --anti-entropy-interval S  seconds between anti-entropy rounds, 0 = only on connect\n"
        "                           (default 30)\n"
        "\n"
        "Store (docs/scale-out.md):\n"
        "  --store URL              redis://host:port[,host:port...]: keep the data in a Redis\n"
        "                           or Redis Cluster with crdt.so (no data directory); default:\n"
        "                           the embedded store in --data-dir\n"
        "  --redis-wait N           acknowledge a write once N replicas have it (WAIT; default 0)\n"
        "  --redis-wait-timeout-ms N  WAIT's timeout; fewer replicas answer 503 (default 1000)\n"
        "  --redis-timeout-ms N     a Redis node silent this long is down (default 2000)\n"
        "  --redis-follow yes|no    follow crdt.so's change logs, so that sessions see the writes\n"
        "                           of every gateway on the cluster (default yes)\n"
        "\n"
        "Browsers (docs/web-client.md):\n"
        "  --cors-origin ORIGINS    pages of these origins (http[s]://host[:port], a comma list;\n"
        "                           repeatable) may use the HTTP API; other sites' pages get no\n"
        "                           CORS headers and their writes and WebSocket upgrades 403\n"
        "  --allowed-host NAMES     host names (a comma list; repeatable) that a node without a\n"
        "                           token secret answers, besides IP addresses and localhost:\n"
        "                           other names in Host get 403 (DNS rebinding)\n"
        "  --static-dir DIR         serve DIR's files at / (default: the demo app installed\n"
        "                           beside crdtd, if there); --static-dir '' serves none\n"
        "\n"
        "  --config FILE            read options from FILE: lines of `name = value` using the\n"
        "                           long option names without dashes (listen = 127.0.0.1:7379);\n"
        "                           `#` starts a comment; flags after --config override it\n"
        "  --verbose                log every request to stderr\n"
        "  --help                   this text\n"
        "  --version                print the version\n"
        "\n"
        "Sizes accept a K, M or G suffix (powers of 1024). Logs go to stderr.\n"
        "SIGINT/SIGTERM stop the server after flushing the log; exit status 0.\n",
        f);
}

int gw_addr_parse(const char *s, gw_addr_t *a)
{
    const char *colon = strrchr(s, ':');
    const char *port = colon ? colon + 1 : s;
    size_t hlen = colon ? (size_t)(colon - s) : 0;
    if (hlen >= sizeof(a->host))
        return -1;
    char *end;
    errno = 0;
    long p = strtol(port, &end, 10);
    if (!*port || *end || errno || p < 0 || p > 65535)
        return -1;
    if (hlen) {
        /* [::1]:7379 */
        if (s[0] == '[' && hlen >= 2 && s[hlen - 1] == ']') {
            memcpy(a->host, s + 1, hlen - 2);
            a->host[hlen - 2] = '\0';
        } else {
            memcpy(a->host, s, hlen);
            a->host[hlen] = '\0';
        }
    } else if (colon || !a->host[0]) {
        snprintf(a->host, sizeof(a->host), "127.0.0.1");
    }
    a->port = (int)p;
    return 0;
}

static int parse_u64(const char *v, uint64_t max, uint64_t *out)
{
    char *end;
    errno = 0;
    if (!*v || *v == '-')
        return -1;
    unsigned long long n = strtoull(v, &end, 10);
    if (errno || end == v)
        return -1;
    uint64_t mul = 1;
    if (*end == 'K' || *end == 'k')
        mul = 1024, end++;
    else if (*end == 'M' || *end == 'm')
        mul = 1024 * 1024, end++;
    else if (*end == 'G' || *end == 'g')
        mul = 1024ull * 1024 * 1024, end++;
    if (*end || (n && mul > UINT64_MAX / n) || n * mul > max)
        return -1;
    *out = n * mul;
    return 0;
}

static int load_file(gw_config_t *c, const char *path, int depth);

/* Applies one option by its long name; `from` names where it came from for the error text. */
static int set_option(gw_config_t *c, const char *name, const char *val, const char *from,
                      int depth)
{
    uint64_t n;
#define NEED_VALUE                                                                                 \
    do {                                                                                           \
        if (!val) {                                                                                \
            fprintf(stderr, "crdtd: %s: option %s needs a value\n", from, name);                   \
            return -1;                                                                             \
        }                                                                                          \
    } while (0)
#define BAD_VALUE(what)                                                                            \
    do {                                                                                           \
        fprintf(stderr, "crdtd: %s: bad value '%s' for %s: %s\n", from, val, name, what);          \
        return -1;                                                                                 \
    } while (0)

    if (!strcmp(name, "listen")) {
        NEED_VALUE;
        if (gw_addr_parse(val, &c->listen))
            BAD_VALUE("expected host:port");
    } else if (!strcmp(name, "roshi-listen")) {
        NEED_VALUE;
        if (gw_addr_parse(val, &c->roshi))
            BAD_VALUE("expected host:port");
        c->roshi_enabled = true;
    } else if (!strcmp(name, "data-dir")) {
        NEED_VALUE;
        if (!*val || strlen(val) >= sizeof(c->data_dir))
            BAD_VALUE("empty or too long");
        snprintf(c->data_dir, sizeof(c->data_dir), "%s", val);
    } else if (!strcmp(name, "no-persist")) {
        c->no_persist = !val || !strcmp(val, "yes") || !strcmp(val, "true") || !strcmp(val, "1");
    } else if (!strcmp(name, "verbose")) {
        c->verbose = !val || !strcmp(val, "yes") || !strcmp(val, "true") || !strcmp(val, "1");
    } else if (!strcmp(name, "fsync")) {
        NEED_VALUE;
        if (!strcmp(val, "always"))
            c->fsync = CRDT_FSYNC_ALWAYS;
        else if (!strcmp(val, "everysec"))
            c->fsync = CRDT_FSYNC_EVERYSEC;
        else if (!strcmp(val, "no"))
            c->fsync = CRDT_FSYNC_NO;
        else
            BAD_VALUE("expected always, everysec or no");
    } else if (!strcmp(name, "node-id")) {
        NEED_VALUE;
        if (parse_u64(val, CRDT_REPLICA_MAX, &n) || n == 0)
            BAD_VALUE("expected an integer 1..2^63-1");
        c->node_id = n;
    } else if (!strcmp(name, "timeline-max-size")) {
        NEED_VALUE;
        if (parse_u64(val, UINT32_MAX, &n))
            BAD_VALUE("expected an integer 0..4294967295");
        c->timeline_max_size = (uint32_t)n;
    } else if (!strcmp(name, "snapshot-log-bytes")) {
        NEED_VALUE;
        if (parse_u64(val, UINT64_MAX, &n))
            BAD_VALUE("expected a size");
        c->snapshot_log_bytes = n;
    } else if (!strcmp(name, "max-clock-drift-ms")) {
        NEED_VALUE;
        /* the Redis module's range: UINT64_MAX >> 2 leaves now + bound far from wrapping */
        if (parse_u64(val, UINT64_MAX >> 2, &n))
            BAD_VALUE("expected milliseconds");
        c->max_clock_drift_ms = n;
    } else if (!strcmp(name, "max-body")) {
        NEED_VALUE;
        if (parse_u64(val, 1ull << 30, &n) || n < 64)
            BAD_VALUE("expected a size from 64 to 1G");
        c->max_body = (size_t)n;
    } else if (!strcmp(name, "max-key")) {
        NEED_VALUE;
        if (parse_u64(val, 1u << 20, &n) || n < 1)
            BAD_VALUE("expected a size from 1 to 1M");
        c->max_key = (size_t)n;
    } else if (!strcmp(name, "max-member")) {
        NEED_VALUE;
        if (parse_u64(val, CRDT_MAX_BLOB, &n) || n < 1)
            BAD_VALUE("expected a size from 1 to 64M");
        c->max_member = (size_t)n;
    } else if (!strcmp(name, "max-header")) {
        NEED_VALUE;
        if (parse_u64(val, 65535, &n) || n < 1024)
            BAD_VALUE("expected a size from 1K to 65535");
        c->max_header = (size_t)n;
    } else if (!strcmp(name, "token-secret-file") || !strcmp(name, "peer-secret-file")) {
        NEED_VALUE;
        char *dst = name[0] == 't' ? c->token_secret_file : c->peer_secret_file;
        if (!*val || strlen(val) >= sizeof(c->token_secret_file))
            BAD_VALUE("empty or too long");
        snprintf(dst, sizeof(c->token_secret_file), "%s", val);
    } else if (!strcmp(name, "peer-ca") || !strcmp(name, "peer-cert") ||
               !strcmp(name, "peer-key")) {
        NEED_VALUE;
        char *dst = !strcmp(name, "peer-ca")     ? c->peer_ca
                    : !strcmp(name, "peer-cert") ? c->peer_cert
                                                 : c->peer_key;
        if (!*val || strlen(val) >= sizeof(c->peer_ca))
            BAD_VALUE("empty or too long");
        snprintf(dst, sizeof(c->peer_ca), "%s", val);
    } else if (!strcmp(name, "peer-require-tls")) {
        c->peer_require_tls = !val || !strcmp(val, "yes") || !strcmp(val, "true") || !strcmp(val, "1");
    } else if (!strcmp(name, "roshi-token-file") || !strcmp(name, "tls-cert") ||
               !strcmp(name, "tls-key")) {
        NEED_VALUE;
        char *dst = name[0] == 'r' ? c->roshi_token_file : name[4] == 'c' ? c->tls_cert : c->tls_key;
        if (!*val || strlen(val) >= sizeof(c->tls_cert))
            BAD_VALUE("empty or too long");
        snprintf(dst, sizeof(c->tls_cert), "%s", val);
    } else if (!strcmp(name, "metrics-auth")) {
        c->metrics_auth = !val || !strcmp(val, "yes") || !strcmp(val, "true") || !strcmp(val, "1");
    } else if (!strcmp(name, "allow-open")) {
        c->allow_open = !val || !strcmp(val, "yes") || !strcmp(val, "true") || !strcmp(val, "1");
    } else if (!strcmp(name, "ws-max-message")) {
        NEED_VALUE;
        if (parse_u64(val, 1ull << 30, &n) || n < 1024)
            BAD_VALUE("expected a size from 1K to 1G");
        c->ws_max_message = (size_t)n;
    } else if (!strcmp(name, "ws-max-subscriptions")) {
        NEED_VALUE;
        if (parse_u64(val, 1u << 20, &n) || n < 1)
            BAD_VALUE("expected an integer 1..1048576");
        c->ws_max_subscriptions = (unsigned)n;
    } else if (!strcmp(name, "ws-max-sessions")) {
        NEED_VALUE;
        if (parse_u64(val, 1u << 20, &n) || n < 1)
            BAD_VALUE("expected an integer 1..1048576");
        c->ws_max_sessions = (unsigned)n;
    } else if (!strcmp(name, "ws-send-queue")) {
        NEED_VALUE;
        if (parse_u64(val, 1ull << 32, &n) || n < 4096)
            BAD_VALUE("expected a size from 4K to 4G");
        c->ws_send_queue = (size_t)n;
    } else if (!strcmp(name, "ws-idle-timeout")) {
        NEED_VALUE;
        if (parse_u64(val, 86400, &n) || n < 1)
            BAD_VALUE("expected seconds 1..86400");
        c->ws_idle_timeout = (unsigned)n;
    } else if (!strcmp(name, "ws-max-errors")) {
        NEED_VALUE;
        if (parse_u64(val, 1u << 20, &n) || n < 1)
            BAD_VALUE("expected an integer 1..1048576");
        c->ws_max_errors = (unsigned)n;
    } else if (!strcmp(name, "peer")) {
        NEED_VALUE;
        if (c->npeers >= GW_MAX_PEERS)
            BAD_VALUE("too many peers (at most 16)");
        size_t skip = !strncmp(val, "ws://", 5) ? 5 : !strncmp(val, "wss://", 6) ? 6 : 0;
        if (!skip || strlen(val) >= sizeof(c->peers[0]))
            BAD_VALUE("expected ws://host:port or wss://host:port");
        gw_addr_t a = {{0}, 0};
        char hostport[256];
        snprintf(hostport, sizeof(hostport), "%s", val + skip);
        char *slash = strchr(hostport, '/');
        if (slash)
            *slash = '\0';
        if (!strchr(hostport, ':') || gw_addr_parse(hostport, &a) || a.port == 0)
            BAD_VALUE("expected ws://host:port or wss://host:port");
        snprintf(c->peers[c->npeers++], sizeof(c->peers[0]), "%s", val);
    } else if (!strcmp(name, "cluster")) {
        NEED_VALUE;
        if (!*val || strlen(val) >= sizeof(c->cluster))
            BAD_VALUE("expected 1 to 63 bytes");
        snprintf(c->cluster, sizeof(c->cluster), "%s", val);
    } else if (!strcmp(name, "peer-queue")) {
        NEED_VALUE;
        if (parse_u64(val, 1ull << 40, &n) || n < 65536)
            BAD_VALUE("expected a size from 64K");
        c->peer_queue = (size_t)n;
    } else if (!strcmp(name, "peer-batch-ms")) {
        NEED_VALUE;
        if (parse_u64(val, 1000, &n))
            BAD_VALUE("expected milliseconds 0..1000");
        c->peer_batch_ms = (unsigned)n;
    } else if (!strcmp(name, "anti-entropy-interval")) {
        NEED_VALUE;
        if (parse_u64(val, 86400, &n))
            BAD_VALUE("expected seconds 0..86400");
        c->anti_entropy_secs = (unsigned)n;
    } else if (!strcmp(name, "test-clock-offset-ms")) {
        /* tests only (not in --help): shifts the wall clock this node reports to its peers */
        NEED_VALUE;
        char *end = NULL;
        errno = 0;
        long long v = strtoll(val, &end, 10);
        if (errno || !end || *end || end == val)
            BAD_VALUE("expected milliseconds, possibly negative");
        c->test_clock_offset_ms = v;
    } else if (!strcmp(name, "store")) {
        NEED_VALUE;
        /* the addresses are checked by main.c (the Redis store's parser) before anything opens */
        if (strncmp(val, "redis://", 8) != 0 || strlen(val) >= sizeof(c->store))
            BAD_VALUE("expected redis://host:port[,host:port...]");
        snprintf(c->store, sizeof(c->store), "%s", val);
    } else if (!strcmp(name, "redis-wait")) {
        NEED_VALUE;
        if (parse_u64(val, 64, &n))
            BAD_VALUE("expected replicas 0..64");
        c->redis_wait = (unsigned)n;
    } else if (!strcmp(name, "redis-wait-timeout-ms") || !strcmp(name, "redis-timeout-ms")) {
        NEED_VALUE;
        if (parse_u64(val, 600000, &n) || n < 1)
            BAD_VALUE("expected milliseconds 1..600000");
        *(name[6] == 'w' ? &c->redis_wait_timeout_ms : &c->redis_timeout_ms) = (unsigned)n;
    } else if (!strcmp(name, "redis-follow")) {
        NEED_VALUE;
        if (strcmp(val, "yes") && strcmp(val, "no"))
            BAD_VALUE("expected yes or no");
        c->redis_follow = !strcmp(val, "yes");
    } else if (!strcmp(name, "cors-origin")) {
        NEED_VALUE;
        char why[160];
        if (gw_cors_add(c, val, why, sizeof(why)))
            BAD_VALUE(why);
    } else if (!strcmp(name, "allowed-host")) {
        NEED_VALUE;
        char why[160];
        if (gw_hosts_add(c, val, why, sizeof(why)))
            BAD_VALUE(why);
    } else if (!strcmp(name, "static-dir")) {
        NEED_VALUE;
        if (strlen(val) >= sizeof(c->static_dir))
            BAD_VALUE("too long");
        snprintf(c->static_dir, sizeof(c->static_dir), "%s", val);
        c->static_dir_set = true;
    } else if (!strcmp(name, "config")) {
        NEED_VALUE;
        return load_file(c, val, depth + 1);
    } else {
        fprintf(stderr, "crdtd: %s: unknown option '%s' (see --help)\n", from, name);
        return -1;
    }
    return 0;
#undef NEED_VALUE
#undef BAD_VALUE
}

static char *trim(char *s)
{
    while (isspace((unsigned char)*s))
        s++;
    char *e = s + strlen(s);
    while (e > s && isspace((unsigned char)e[-1]))
        *--e = '\0';
    return s;
}

static int load_file(gw_config_t *c, const char *path, int depth)
{
    if (depth > 4) {
        fprintf(stderr, "crdtd: %s: config files nest too deep\n", path);
        return -1;
    }
    FILE *f = fopen(path, "r");
    if (!f) {
        fprintf(stderr, "crdtd: cannot read config file %s: %s\n", path, strerror(errno));
        return -1;
    }
    char line[2048], from[1100];
    int lineno = 0, rc = 0;
    while (fgets(line, sizeof(line), f)) {
        lineno++;
        snprintf(from, sizeof(from), "%s:%d", path, lineno);
        if (!strchr(line, '\n') && !feof(f)) {
            fprintf(stderr, "crdtd: %s: line too long\n", from);
            rc = -1;
            break;
        }
        char *hash = strchr(line, '#');
        if (hash)
            *hash = '\0';
        char *s = trim(line);
        if (!*s)
            continue;
        char *eq = strchr(s, '=');
        char *val = NULL;
        if (eq) {
            *eq = '\0';
            val = trim(eq + 1);
        }
        char *name = trim(s);
        if (!strncmp(name, "--", 2))
            name += 2;
        if ((rc = set_option(c, name, val, from, depth)) != 0)
            break;
    }
    fclose(f);
    return rc;
}

int gw_config_parse(gw_config_t *c, int argc, char **argv)
{
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
            usage(stdout);
            return 1;
        }
        if (!strcmp(a, "--version")) {
            printf("crdtd %d.%d.%d\n", CRDT_VERSION_MAJOR, CRDT_VERSION_MINOR, CRDT_VERSION_PATCH);
            return 1;
        }
        if (strncmp(a, "--", 2) != 0) {
            fprintf(stderr, "crdtd: unexpected argument '%s' (see --help)\n", a);
            return -1;
        }
        char name[64];
        const char *val = NULL;
        const char *eq = strchr(a, '=');
        size_t nlen = eq ? (size_t)(eq - a - 2) : strlen(a + 2);
        if (nlen >= sizeof(name)) {
            fprintf(stderr, "crdtd: unknown option '%s' (see --help)\n", a);
            return -1;
        }
        memcpy(name, a + 2, nlen);
        name[nlen] = '\0';
        bool is_flag = !strcmp(name, "no-persist") || !strcmp(name, "verbose") ||
                       !strcmp(name, "metrics-auth") || !strcmp(name, "allow-open") ||
                       !strcmp(name, "peer-require-tls");
        if (eq)
            val = eq + 1;
        else if (!is_flag && i + 1 < argc)
            val = argv[++i];
        if (set_option(c, name, val, "command line", 0))
            return -1;
    }
    if (!c->tls_cert[0] != !c->tls_key[0]) {
        fprintf(stderr, "crdtd: --tls-cert and --tls-key go together (give both, or neither)\n");
        return -1;
    }
    if (!c->peer_cert[0] != !c->peer_key[0]) {
        fprintf(stderr, "crdtd: --peer-cert and --peer-key go together (give both, or neither)\n");
        return -1;
    }
    if ((c->peer_cert[0] || c->peer_require_tls) && !c->tls_cert[0]) {
        fprintf(stderr, "crdtd: --peer-cert and --peer-require-tls need --tls-cert and --tls-key "
                        "(peers dial this node over wss://)\n");
        return -1;
    }
    for (int i = 0; c->peer_require_tls && i < c->npeers; i++)
        if (strncmp(c->peers[i], "wss://", 6) != 0) {
            fprintf(stderr, "crdtd: --peer-require-tls: peer %s is not wss://\n", c->peers[i]);
            return -1;
        }
    return 0;
}
