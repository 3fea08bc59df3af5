/* redis_cluster_helper.c - a Redis Cluster of redis-server + crdt.so on loopback, and a client
 * that follows MOVED/ASK */
#define _GNU_SOURCE
#include "redis_cluster_helper.h"

#include "logpos.h"

#include <fcntl.h>
#include <limits.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static char cli_bin[PATH_MAX];

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

const char *rc_skip_reason(void)
{
    const char *why = rh_skip_reason();
    if (why)
        return why;
    if (rh_find_tool("redis-cli", cli_bin, sizeof(cli_bin)) < 0)
        return "redis-cli not found (install redis-tools)";
    return NULL;
}

/* Runs redis-cli with args (NULL-terminated) and a deadline; its output goes to `log`. 0 when it
 * exited 0 in time. */
static int run_cli(const char *const *args, const char *log, int seconds)
{
    const char *argv[64];
    int n = 0;
    argv[n++] = cli_bin;
    for (int i = 0; args[i] && n < 63; i++)
        argv[n++] = args[i];
    argv[n] = NULL;
    pid_t pid = fork();
    if (pid < 0)
        return -1;
    if (pid == 0) {
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        int fd = open(log, O_WRONLY | O_CREAT | O_TRUNC, 0644);
        int nul = open("/dev/null", O_RDONLY);
        if (fd >= 0) {
            dup2(fd, 1);
            dup2(fd, 2);
        }
        if (nul >= 0)
            dup2(nul, 0);
        execv(cli_bin, (char *const *)argv);
        _exit(127);
    }
    double until = now_s() + seconds;
    int st = 0;
    while (waitpid(pid, &st, WNOHANG) != pid) {
        if (now_s() > until) {
            kill(pid, SIGKILL);
            waitpid(pid, &st, 0);
            rh_note("redis-cli %s did not finish within %d s", args[0], seconds);
            return -1;
        }
        rh_sleep_ms(50);
    }
    if (!WIFEXITED(st) || WEXITSTATUS(st) != 0) {
        rh_note("redis-cli %s failed (status %d); its output:", args[0], st);
        FILE *f = fopen(log, "r");
        char line[512];
        for (int k = 0; f && k < 30 && fgets(line, sizeof(line), f); k++)
            printf("#   %s", line);
        if (f)
            fclose(f);
        return -1;
    }
    return 0;
}

/* True when CLUSTER INFO (section "cluster") or INFO section contains `what`. */
static bool info_has(rh_server_t *s, const char *section, const char *what)
{
    redisReply *r =
        strcmp(section, "cluster") ? rh_cmd(s, "INFO %s", section) : rh_cmd(s, "CLUSTER INFO");
    bool has = r && r->type == REDIS_REPLY_STRING && strstr(r->str, what);
    if (r)
        freeReplyObject(r);
    return has;
}

/* "host:port@bus" -> port */
static int addr_port(const char *addr)
{
    const char *colon = strrchr(addr, ':');
    return colon ? atoi(colon + 1) : -1;
}

int rc_node_by_port(const rc_cluster_t *cl, int port)
{
    for (int i = 0; i < cl->n; i++)
        if (cl->node[i].port == port)
            return i;
    return -1;
}

/* A slot table as node `ask` sees it: owner port per slot (0: unknown). 0 or -1. */
static int slot_table(rh_server_t *s, int *ports)
{
    memset(ports, 0, sizeof(int) * 16384);
    redisReply *r = rh_cmd(s, "CLUSTER SLOTS");
    if (!r || r->type != REDIS_REPLY_ARRAY) {
        if (r)
            freeReplyObject(r);
        return -1;
    }
    for (size_t i = 0; i < r->elements; i++) {
        redisReply *e = r->element[i];
        if (e->type != REDIS_REPLY_ARRAY || e->elements < 3 ||
            e->element[2]->type != REDIS_REPLY_ARRAY || e->element[2]->elements < 2)
            continue;
        long long from = e->element[0]->integer, to = e->element[1]->integer;
        int port = (int)e->element[2]->element[1]->integer;
        for (long long k = from; k <= to && k < 16384; k++)
            ports[k] = port;
    }
    freeReplyObject(r);
    return 0;
}

/* What a cluster that did not settle looked like, for the log of a failed run: each node's state,
 * its view of the nodes (CLUSTER NODES: flags, epochs, slots) and the cluster events of its log
 * (state changes, FAIL, failovers, reconfigurations), the last ones. */
static void dump_cluster(rc_cluster_t *cl)
{
    for (int i = 0; i < cl->n; i++) {
        rh_server_t *s = &cl->node[i];
        printf("# node %d (port %d, pid %d):\n", i, s->port, (int)s->pid);
        if (s->pid > 0 && s->c) {
            redisReply *r = rh_cmd(s, "CLUSTER NODES");
            char *save = NULL;
            for (char *line = r && r->type == REDIS_REPLY_STRING ? strtok_r(r->str, "\n", &save)
                                                                 : NULL;
                 line; line = strtok_r(NULL, "\n", &save))
                printf("#   nodes: %s\n", line);
            if (r)
                freeReplyObject(r);
        }
        char path[300], line[512], last[24][512];
        int n = 0;
        snprintf(path, sizeof(path), "%s/redis.log", s->dir);
        FILE *f = fopen(path, "r");
        while (f && fgets(line, sizeof(line), f))
            if (strstr(line, "luster") || strstr(line, "FAIL") || strstr(line, "ailover") ||
                strstr(line, "replica") || strstr(line, "MASTER") || strstr(line, "epoch"))
                snprintf(last[n++ % 24], sizeof(last[0]), "%s", line);
        if (f)
            fclose(f);
        for (int k = n > 24 ? n - 24 : 0; k < n; k++)
            printf("#   log: %s", last[k % 24]);
    }
}

/* Redis before 7.2.4 (Debian's 7.0.15 included) can orphan a slot after a failover that follows
 * a slot move (redis/redis#12564, fixed upstream in 7.2.4): the replica kept a stale "owner does
 * not claim this slot" bit from the move, so when its old primary restarts with the older epoch,
 * the promoted replica gives it the slot in its own view, while every other node, told by the old
 * primary (now its replica), routes the slot to the promoted one. That one answers CLUSTERDOWN
 * for the slot and the cluster never settles by itself. The operator's repair is CLUSTER SETSLOT
 * <slot> NODE <own id> on that primary (what `redis-cli --cluster fix` does for a slot nobody
 * claims); this does it, loudly, for a slot every other node routes to a primary that does not
 * serve it. Returns how many slots it repaired. */
static int repair_orphans(rc_cluster_t *cl)
{
    static int view[RC_MAX_NODES][16384];
    bool have[RC_MAX_NODES] = {false};
    for (int i = 0; i < cl->n; i++)
        have[i] = cl->node[i].pid > 0 && cl->node[i].c && slot_table(&cl->node[i], view[i]) == 0;
    int repaired = 0;
    for (int x = 0; x < cl->n; x++) {
        if (!have[x] || !info_has(&cl->node[x], "replication", "role:master"))
            continue;
        int port = cl->node[x].port;
        char id[41];
        bool got_id = false;
        for (int sl = 0; sl < 16384; sl++) {
            if (view[x][sl] == port)
                continue;
            int others = 0, agree = 0;
            for (int i = 0; i < cl->n; i++)
                if (i != x && have[i]) {
                    others++;
                    agree += view[i][sl] == port;
                }
            if (others == 0 || agree != others)
                continue;
            if (!got_id && rc_node_id(cl, x, id) < 0)
                break;
            got_id = true;
            rh_note(
                "slot %d: every other node routes it to node %d (port %d), which does not serve "
                "it (redis/redis#12564, Redis < 7.2.4): CLUSTER SETSLOT %d NODE <its id>",
                sl, x, port, sl);
            redisReply *r = rh_cmd(&cl->node[x], "CLUSTER SETSLOT %d NODE %s", sl, id);
            repaired += r && r->type == REDIS_REPLY_STATUS;
            if (r)
                freeReplyObject(r);
        }
    }
    return repaired;
}

int rc_wait_ok(rc_cluster_t *cl, int seconds)
{
    static int ref[16384], other[16384];
    double until = now_s() + seconds, repair_at = now_s() + 3;
    while (now_s() < until) {
        /* not settled for 3 s: look for a slot Redis 7.0 orphaned (every 3 s) */
        if (now_s() > repair_at) {
            repair_at = now_s() + 3;
            repair_orphans(cl);
        }
        bool all = true;
        int first = -1;
        for (int i = 0; i < cl->n && all; i++) {
            rh_server_t *s = &cl->node[i];
            if (s->pid <= 0)
                continue;
            if (!s->c) { /* restarted: reconnect */
                struct timeval tv = {1, 0};
                s->c = redisConnectWithTimeout("127.0.0.1", s->port, tv);
                if (!s->c || s->c->err) {
                    if (s->c)
                        redisFree(s->c);
                    s->c = NULL;
                    all = false;
                    break;
                }
                redisSetTimeout(s->c, (struct timeval){10, 0});
            }
            if (!info_has(s, "cluster", "cluster_state:ok")) {
                all = false;
                break;
            }
            if (first < 0) {
                first = i;
                all = slot_table(s, ref) == 0;
            } else {
                all = slot_table(s, other) == 0 && memcmp(ref, other, sizeof(ref)) == 0;
            }
        }
        if (all && first >= 0) {
            for (int k = 0; k < 16384; k++)
                if (!ref[k] || rc_node_by_port(cl, ref[k]) < 0 ||
                    cl->node[rc_node_by_port(cl, ref[k])].pid <= 0)
                    all = false;
            if (all)
                return 0;
        }
        rh_sleep_ms(100);
    }
    rh_note("the cluster did not reach cluster_state:ok with one view of the slots in %d s",
            seconds);
    dump_cluster(cl);
    return -1;
}

int rc_start(rc_cluster_t *cl, int primaries, int replicas, const char *module_args)
{
    memset(cl, 0, sizeof(*cl));
    int n = primaries * (1 + replicas);
    if (n > RC_MAX_NODES || rc_skip_reason())
        return -1;
    static const char *const extra[] = {"--cluster-enabled",
                                        "yes",
                                        "--cluster-config-file",
                                        "nodes.conf",
                                        "--cluster-node-timeout",
                                        "1500",
                                        "--appendonly",
                                        "yes",
                                        "--appendfsync",
                                        "everysec",
                                        NULL};
    for (int i = 0; i < n; i++) {
        char margs[256];
        snprintf(margs, sizeof(margs), "node-id %d %s", i + 1, module_args ? module_args : "");
        if (rh_start(&cl->node[i], NULL, margs, extra) < 0) {
            rh_note("cluster node %d did not start", i);
            rc_stop(cl);
            return -1;
        }
        cl->n = i + 1;
    }
    char addrs[RC_MAX_NODES][32], reps[8];
    const char *args[RC_MAX_NODES + 8];
    int a = 0;
    args[a++] = "--cluster";
    args[a++] = "create";
    for (int i = 0; i < n; i++) {
        snprintf(addrs[i], sizeof(addrs[i]), "127.0.0.1:%d", cl->node[i].port);
        args[a++] = addrs[i];
    }
    snprintf(reps, sizeof(reps), "%d", replicas);
    args[a++] = "--cluster-replicas";
    args[a++] = reps;
    args[a++] = "--cluster-yes";
    args[a] = NULL;
    char log[300];
    snprintf(log, sizeof(log), "%s/cluster-create.log", cl->node[0].dir);
    if (run_cli(args, log, 60) < 0 || rc_wait_ok(cl, 30) < 0) {
        rc_stop(cl);
        return -1;
    }
    /* Every replica attached and synced, so a failover has someone to promote. */
    double until = now_s() + 30;
    for (int i = 0; i < n; i++) {
        while (info_has(&cl->node[i], "replication", "role:slave") &&
               !rc_is_synced_replica(cl, i) && now_s() < until)
            rh_sleep_ms(100);
    }
    return 0;
}

bool rc_is_synced_replica(rc_cluster_t *cl, int i)
{
    return info_has(&cl->node[i], "replication", "role:slave") &&
           info_has(&cl->node[i], "replication", "master_link_status:up");
}

int rc_node_id(rc_cluster_t *cl, int i, char *out)
{
    char *s = rh_str(rh_cmd(&cl->node[i], "CLUSTER MYID"), NULL);
    if (!s || strlen(s) != 40) {
        free(s);
        return -1;
    }
    memcpy(out, s, 41);
    free(s);
    return 0;
}

int rc_slot_owner(rc_cluster_t *cl, int ask, unsigned slot)
{
    static int ports[16384];
    if (slot >= 16384 || slot_table(&cl->node[ask], ports) < 0)
        return -1;
    return rc_node_by_port(cl, ports[slot]);
}

void rc_stop(rc_cluster_t *cl)
{
    for (int i = 0; i < cl->n; i++)
        rh_stop(&cl->node[i]);
    cl->n = 0;
}

/* ---- the client ----------------------------------------------------------------------------- */

redisContext *rc_conn(rc_client_t *c, int port)
{
    for (int i = 0; i < c->nconn; i++)
        if (c->conn[i].port == port && c->conn[i].c)
            return c->conn[i].c;
    struct timeval tv = {2, 0};
    redisContext *rc = redisConnectWithTimeout("127.0.0.1", port, tv);
    if (!rc || rc->err) {
        if (rc)
            redisFree(rc);
        return NULL;
    }
    redisSetTimeout(rc, (struct timeval){10, 0});
    int slot = -1;
    for (int i = 0; i < c->nconn; i++)
        if (c->conn[i].port == port || !c->conn[i].c)
            slot = i;
    if (slot < 0) {
        if (c->nconn == (int)(sizeof(c->conn) / sizeof(c->conn[0]))) {
            redisFree(rc);
            return NULL;
        }
        slot = c->nconn++;
    }
    c->conn[slot].port = port;
    c->conn[slot].c = rc;
    return rc;
}

static void drop_conn(rc_client_t *c, int port)
{
    for (int i = 0; i < c->nconn; i++)
        if (c->conn[i].port == port && c->conn[i].c) {
            redisFree(c->conn[i].c);
            c->conn[i].c = NULL;
        }
}

int rc_refresh(rc_client_t *c)
{
    for (int i = 0; i < c->cl->n; i++) {
        if (c->cl->node[i].pid <= 0)
            continue;
        redisContext *rc = rc_conn(c, c->cl->node[i].port);
        if (!rc)
            continue;
        redisReply *r = redisCommand(rc, "CLUSTER SLOTS");
        if (!r) {
            drop_conn(c, c->cl->node[i].port);
            continue;
        }
        bool good = r->type == REDIS_REPLY_ARRAY && r->elements > 0;
        for (size_t k = 0; good && k < r->elements; k++) {
            redisReply *e = r->element[k];
            if (e->type != REDIS_REPLY_ARRAY || e->elements < 3)
                continue;
            long long from = e->element[0]->integer, to = e->element[1]->integer;
            int port = (int)e->element[2]->element[1]->integer;
            for (long long s = from; s <= to && s < 16384; s++)
                c->slot_port[s] = port;
        }
        freeReplyObject(r);
        if (good)
            return 0;
    }
    return -1;
}

int rc_client_init(rc_client_t *c, rc_cluster_t *cl)
{
    memset(c, 0, sizeof(*c));
    c->cl = cl;
    return rc_refresh(c);
}

void rc_client_free(rc_client_t *c)
{
    for (int i = 0; i < c->nconn; i++)
        if (c->conn[i].c)
            redisFree(c->conn[i].c);
    c->nconn = 0;
}

/* "MOVED 3999 127.0.0.1:6381" / "ASK ..." -> slot and port */
static bool parse_redirect(const char *err, const char *word, int *slot, int *port)
{
    size_t wl = strlen(word);
    if (strncmp(err, word, wl) != 0 || err[wl] != ' ')
        return false;
    char *end;
    long s = strtol(err + wl + 1, &end, 10);
    if (*end != ' ' || s < 0 || s >= 16384)
        return false;
    *slot = (int)s;
    *port = addr_port(end + 1);
    return *port > 0;
}

/* Sends a formatted command to the node of key's slot (any node when key is NULL) and follows
 * redirects. */
static redisReply *route(rc_client_t *c, const char *key, size_t klen, const char *cmd, size_t len)
{
    c->lost = false;
    int port = key ? c->slot_port[crdtm_keyslot(key, klen)] : 0;
    bool asking = false;
    for (int attempt = 0; attempt < 300; attempt++) {
        if (!port)
            for (int i = 0; i < c->cl->n && !port; i++)
                if (c->cl->node[i].pid > 0)
                    port = c->cl->node[i].port;
        redisContext *rc = rc_conn(c, port);
        if (!rc) { /* node down: wait for the cluster to move its slots */
            rh_sleep_ms(100);
            rc_refresh(c);
            port = key ? c->slot_port[crdtm_keyslot(key, klen)] : 0;
            continue;
        }
        if (asking) {
            redisReply *a = redisCommand(rc, "ASKING");
            if (a)
                freeReplyObject(a);
            asking = false;
        }
        redisReply *r = NULL;
        if (redisAppendFormattedCommand(rc, cmd, len) != REDIS_OK ||
            redisGetReply(rc, (void **)&r) != REDIS_OK || !r) {
            drop_conn(c, port);
            c->lost = true;
            return NULL;
        }
        c->last_port = port;
        int slot, to;
        if (r->type != REDIS_REPLY_ERROR)
            return r;
        if (parse_redirect(r->str, "MOVED", &slot, &to)) {
            c->slot_port[slot] = to;
            port = to;
            c->redirects++;
            /* right after a failover or a rejoin two nodes may each send the slot to the other
             * until gossip settles: past a few redirects, give the cluster time instead of
             * spending the attempts in a millisecond */
            if (attempt >= 16)
                rh_sleep_ms(50);
        } else if (parse_redirect(r->str, "ASK", &slot, &to)) {
            port = to;
            asking = true;
            c->redirects++;
        } else if (!strncmp(r->str, "TRYAGAIN", 8) || !strncmp(r->str, "CLUSTERDOWN", 11)) {
            rh_sleep_ms(50);
        } else {
            return r;
        }
        freeReplyObject(r);
    }
    rh_note("command to slot of %.*s: redirects or retries did not end", (int)klen, key ? key : "");
    return NULL;
}

redisReply *rc_cmdv(rc_client_t *c, int keyidx, int argc, const char **argv, const size_t *lens)
{
    char *cmd = NULL;
    long long len = redisFormatCommandArgv(&cmd, argc, argv, lens);
    if (len < 0)
        return NULL;
    bool keyed = keyidx > 0 && keyidx < argc;
    redisReply *r =
        route(c, keyed ? argv[keyidx] : NULL,
              keyed ? (lens ? lens[keyidx] : strlen(argv[keyidx])) : 0, cmd, (size_t)len);
    redisFreeCommand(cmd);
    return r;
}

redisReply *rc_cmd(rc_client_t *c, const char *key, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    char *cmd = NULL;
    int len = redisvFormatCommand(&cmd, fmt, ap);
    va_end(ap);
    if (len < 0)
        return NULL;
    redisReply *r = route(c, key, key ? strlen(key) : 0, cmd, (size_t)len);
    redisFreeCommand(cmd);
    return r;
}
