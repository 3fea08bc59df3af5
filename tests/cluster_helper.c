/* cluster_helper.c - crdtd clusters behind fault proxies, recording writers, convergence checks */
#define _GNU_SOURCE
#include "cluster_helper.h"

#include <errno.h>
#include <jansson.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#ifndef CRDTD_BIN
#error "CRDTD_BIN must name the crdtd binary"
#endif

static const char *const type_name[CL_TYPES] = {"gcounter", "pncounter", "lwwreg",
                                                "lwwset",   "orset",     "timeline"};
static const char *const type_prefix[CL_TYPES] = {"g", "pn", "reg", "lws", "ors", "tl"};

uint64_t cl_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

/* A member as the JSON of requests and responses carries it: the helper's names are text, so the
 * string itself (docs/encoding.md, "Bytes in JSON and URLs"). */
static void b64(const char *in, char *out, bool url)
{
    (void)url;
    strcpy(out, in);
}

static void key_path(int type, int key, char *path, size_t n, const char *suffix)
{
    char k[32];
    snprintf(k, sizeof(k), "%s:%d", type_prefix[type], key); /* text: the path as it is */
    snprintf(path, n, "/v1/keys/%s%s", k, suffix);
}

/* ---- processes ------------------------------------------------------------------------------ */

int cl_node_start(cluster_t *c, int i)
{
    cl_node_t *nd = &c->node[i];
    char data[700], id[16], ae[16], peers[CL_MAX_NODES][64], tls[5][700];
    snprintf(data, sizeof(data), "%s/data", nd->dir);
    snprintf(id, sizeof(id), "%d", i + 1);
    snprintf(ae, sizeof(ae), "%u", c->ae_secs);
    const char *args[40];
    int a = 0;
    args[a++] = "--data-dir", args[a++] = data;
    args[a++] = "--node-id", args[a++] = id;
    args[a++] = "--cluster", args[a++] = "crdtd-test";
    args[a++] = "--peer-secret-file", args[a++] = c->secret_file;
    args[a++] = "--anti-entropy-interval", args[a++] = ae;
    args[a++] = "--fsync", args[a++] = c->fsync;
    if (c->pki[0]) {
        snprintf(tls[0], sizeof(tls[0]), "%s/tls.pem", nd->dir);
        snprintf(tls[1], sizeof(tls[1]), "%s/tls.key", nd->dir);
        snprintf(tls[2], sizeof(tls[2]), "%s/peer.pem", nd->dir);
        snprintf(tls[3], sizeof(tls[3]), "%s/peer.key", nd->dir);
        snprintf(tls[4], sizeof(tls[4]), "%s/ca.pem", c->pki);
        args[a++] = "--tls-cert", args[a++] = tls[0];
        args[a++] = "--tls-key", args[a++] = tls[1];
        args[a++] = "--peer-cert", args[a++] = tls[2];
        args[a++] = "--peer-key", args[a++] = tls[3];
        args[a++] = "--peer-ca", args[a++] = tls[4];
        args[a++] = "--peer-require-tls";
    }
    for (int j = 0; j < c->n; j++) {
        if (j == i)
            continue;
        snprintf(peers[j], sizeof(peers[j]), "%s://127.0.0.1:%d", c->pki[0] ? "wss" : "ws",
                 fp_port(c->link[i][j]));
        args[a++] = "--peer", args[a++] = peers[j];
    }
    args[a] = NULL;
    if (crdtd_start(&nd->proc, CRDTD_BIN, nd->dir, args))
        return -1;
    nd->running = true;
    for (int j = 0; j < c->n; j++)
        if (j != i)
            fp_set_target(c->link[j][i], nd->proc.port);
    return 0;
}

void cl_node_stop(cluster_t *c, int i, int sig)
{
    cl_node_t *nd = &c->node[i];
    if (!nd->running)
        return;
    for (int j = 0; j < c->n; j++)
        if (j != i)
            fp_set_target(c->link[j][i], 0);
    crdtd_stop(&nd->proc, sig, 10000);
    nd->running = false;
}

static int copy_file(const char *from, const char *to)
{
    FILE *in = fopen(from, "rb"), *out = in ? fopen(to, "wb") : NULL;
    char buf[8192];
    size_t n;
    int rc = in && out ? 0 : -1;
    while (!rc && (n = fread(buf, 1, sizeof(buf), in)) > 0)
        rc = fwrite(buf, 1, n, out) == n ? 0 : -1;
    if (in)
        fclose(in);
    if (out && fclose(out))
        rc = -1;
    if (!rc)
        chmod(to, 0600);
    return rc;
}

static int start(cluster_t *c, int n, const char *fsync, unsigned ae_secs, const char *pki);

int cl_start(cluster_t *c, int n, const char *fsync, unsigned ae_secs)
{
    return start(c, n, fsync, ae_secs, NULL);
}

int cl_start_tls(cluster_t *c, int n, const char *fsync, unsigned ae_secs, const char *pki)
{
    return start(c, n, fsync, ae_secs, pki);
}

static int start(cluster_t *c, int n, const char *fsync, unsigned ae_secs, const char *pki)
{
    memset(c, 0, sizeof(*c));
    if (pki)
        snprintf(c->pki, sizeof(c->pki), "%s", pki);
    c->n = n;
    c->fsync = fsync;
    c->ae_secs = ae_secs;
    c->tmp = test_tmpdir();
    if (!c->tmp)
        return -1;
    snprintf(c->secret_file, sizeof(c->secret_file), "%s/peer-secret", c->tmp);
    FILE *f = fopen(c->secret_file, "w");
    if (!f)
        return -1;
    fputs("a-test-cluster-secret-of-some-length\n", f);
    fclose(f);
    chmod(c->secret_file, 0600);
    for (int i = 0; i < n; i++)
        for (int j = 0; j < n; j++)
            if (i != j && !(c->link[i][j] = fp_start(0)))
                goto fail;
    for (int i = 0; i < n; i++) {
        snprintf(c->node[i].dir, sizeof(c->node[i].dir), "%s/n%d", c->tmp, i + 1);
        mkdir(c->node[i].dir, 0700);
        static const char *const ext[2] = {"pem", "key"};
        for (int k = 0; pki && k < 4; k++) {
            char from[700], to[700];
            snprintf(from, sizeof(from), "%s/node-%d.%s", pki, i + 1, ext[k % 2]);
            snprintf(to, sizeof(to), "%s/%s.%s", c->node[i].dir, k < 2 ? "tls" : "peer",
                     ext[k % 2]);
            if (copy_file(from, to))
                goto fail;
        }
        if (cl_node_start(c, i))
            goto fail;
    }
    return 0;
fail:
    cl_stop(c, true);
    return -1;
}

void cl_stop(cluster_t *c, bool keep)
{
    keep = keep || getenv("CL_KEEP");
    for (int i = 0; i < c->n; i++)
        cl_node_stop(c, i, SIGTERM);
    for (int i = 0; i < c->n; i++)
        for (int j = 0; j < c->n; j++) {
            fp_stop(c->link[i][j]);
            c->link[i][j] = NULL;
        }
    if (c->tmp) {
        if (keep)
            printf("# kept %s for a post-mortem\n", c->tmp);
        else
            rm_rf(c->tmp);
        free(c->tmp);
        c->tmp = NULL;
    }
}

void cl_node_links(cluster_t *c, int i, void (*fn)(fp_proxy_t *, bool), bool on)
{
    for (int j = 0; j < c->n; j++)
        if (j != i) {
            fn(c->link[i][j], on);
            fn(c->link[j][i], on);
        }
}

int cl_log_count(cluster_t *c, int i, const char *needle)
{
    FILE *f = fopen(c->node[i].proc.errlog, "r");
    if (!f)
        return -1;
    char line[2048];
    int n = 0;
    while (fgets(line, sizeof(line), f))
        n += strstr(line, needle) != NULL;
    fclose(f);
    return n;
}

/* ---- reads ---------------------------------------------------------------------------------- */

/* GET path on port, parsed; NULL unless 200 with a JSON object. *status gets the status. A
 * request that gets no complete response is retried twice (and said so): these checks are about
 * replica states, a lost loopback connection is reported but not counted as a divergence. */
static json_t *get_json(int port, const char *path, int *status)
{
    json_t *j = NULL;
    *status = 0;
    for (int attempt = 0; attempt < 3 && *status == 0; attempt++) {
        hc_resp_t r;
        if (attempt) {
            printf("# GET %s on port %d got no response, retrying\n", path, port);
            usleep(100000);
        }
        if (hc_request(port, "GET", path, NULL, &r) == 0) {
            *status = r.status;
            if (r.status == 200)
                j = json_loads(r.body, 0, NULL);
        }
        hc_resp_free(&r);
    }
    return j;
}

long cl_wait_converged(cluster_t *c, int timeout_ms)
{
    uint64_t t0 = cl_now_ms();
    char prev[CL_MAX_NODES][80] = {{0}}, cur[CL_MAX_NODES][80];
    int stable = 0;
    while (cl_now_ms() - t0 < (uint64_t)timeout_ms) {
        bool same = true;
        for (int i = 0; i < c->n; i++) {
            cur[i][0] = '\0';
            if (!c->node[i].running)
                continue;
            int st;
            json_t *h = get_json(c->node[i].proc.port, "/healthz", &st);
            const char *d = h ? json_string_value(json_object_get(h, "digest")) : NULL;
            snprintf(cur[i], sizeof(cur[i]), "%s/%lld", d ? d : "?",
                     h ? (long long)json_integer_value(json_object_get(h, "keys")) : -1LL);
            json_decref(h);
            if (!d)
                same = false;
        }
        int first = -1;
        for (int i = 0; i < c->n; i++) {
            if (!c->node[i].running)
                continue;
            if (first < 0)
                first = i;
            else if (strcmp(cur[i], cur[first]))
                same = false;
            if (strcmp(cur[i], prev[i]))
                stable = 0;
        }
        memcpy(prev, cur, sizeof(prev));
        if (same && ++stable >= 2)
            return (long)(cl_now_ms() - t0);
        if (!same)
            stable = 0;
        usleep(100000);
    }
    for (int i = 0; i < c->n && timeout_ms >= 2000; i++) {
        printf("# node %d: digest/keys %s\n", i + 1, prev[i]);
        if (c->node[i].running && prev[i][0] == '?') {
            printf("# node %d (pid %d) does not answer /healthz\n", i + 1,
                   (int)c->node[i].proc.pid);
            if (getenv("CL_GDB")) { /* where is it stuck? */
                char cmd[256];
                snprintf(cmd, sizeof(cmd),
                         "gdb -batch -p %d -ex 'thread apply all bt' 2>&1 | sed 's/^/# /'",
                         (int)c->node[i].proc.pid);
                fflush(stdout);
                if (system(cmd) != 0)
                    printf("# (gdb failed)\n");
            }
        }
        hc_resp_t r;
        if (c->node[i].running &&
            hc_request(c->node[i].proc.port, "GET", "/v1/peers", NULL, &r) == 0)
            printf("# node %d: /v1/peers %.1500s\n", i + 1, r.body ? r.body : "");
        hc_resp_free(&r);
    }
    return -1;
}

int cl_compare_keys(cluster_t *c)
{
    int bad = 0;
    for (int t = 0; t < CL_TYPES; t++)
        for (int k = 0; k < CL_KEYS; k++) {
            char path[128];
            key_path(t, k, path, sizeof(path), "");
            char *first = NULL;
            int first_st = -1;
            for (int i = 0; i < c->n; i++) {
                if (!c->node[i].running)
                    continue;
                int st;
                json_t *j = get_json(c->node[i].proc.port, path, &st);
                const char *bin = j ? json_string_value(json_object_get(j, "binary")) : NULL;
                const char *fp = j ? json_string_value(json_object_get(j, "fingerprint")) : NULL;
                char *mine = NULL;
                if (asprintf(&mine, "%d %s %s", st, bin ? bin : "-", fp ? fp : "-") < 0)
                    mine = NULL;
                json_decref(j);
                if (first_st < 0) {
                    first = mine;
                    first_st = st;
                    continue;
                }
                if (!mine || !first || strcmp(mine, first)) {
                    if (++bad <= 10)
                        printf("# %s:%d differs: node %d has %.120s, the first node %.120s\n",
                               type_prefix[t], k, i + 1, mine ? mine : "?", first ? first : "?");
                }
                free(mine);
            }
            free(first);
        }
    return bad;
}

/* ---- writers -------------------------------------------------------------------------------- */

static cl_member_t *new_member(cl_writer_t *w, int type, int key, int *idx)
{
    if (w->nmem == w->capmem) {
        int cap = w->capmem ? w->capmem * 2 : 256;
        cl_member_t *m = realloc(w->mem, (size_t)cap * sizeof(*m));
        if (!m)
            return NULL;
        w->mem = m;
        w->capmem = cap;
    }
    *idx = w->nmem;
    cl_member_t *m = &w->mem[w->nmem++];
    memset(m, 0, sizeof(*m));
    m->type = type;
    m->key = key;
    return m;
}

static void member_name(int node, int idx, char *out, size_t n)
{
    snprintf(out, n, "n%dm%d", node + 1, idx);
}

/* One op: the body to send and where to record its outcome. */
typedef struct pending {
    int kind; /* 0 counter, 1 register, 2 member add, 3 member remove, 4 shared add */
    int type, key, idx;
    int64_t by;
} pending_t;

static void record(cl_writer_t *w, const pending_t *p, int outcome)
{
    if (outcome == CL_ACKED)
        w->acked++;
    else
        w->unknown++;
    switch (p->kind) {
    case 0:
        if (outcome == CL_ACKED)
            w->cnt_acked[p->type][p->key] += p->by;
        else if (p->by > 0)
            w->cnt_unk_pos[p->type][p->key] += p->by;
        else
            w->cnt_unk_neg[p->type][p->key] += p->by;
        break;
    case 1: break; /* registers are recorded when sent, acked or not */
    case 2: w->mem[p->idx].add = outcome; break;
    case 3: w->mem[p->idx].rem = outcome; break;
    case 4:
        if (w->shared[p->type][p->key] != CL_ACKED)
            w->shared[p->type][p->key] = outcome;
        break;
    }
}

static void *writer_main(void *arg)
{
    cl_writer_t *w = arg;
    unsigned seed = w->seed;
    int fd = -1;
    char body[512], path[128], name[64], enc[128];
    while (!w->stop && w->ops < w->max_ops) {
        if (!w->c->node[w->node].running || fd < 0) {
            if (fd >= 0)
                hc_close(fd);
            fd = w->c->node[w->node].running ? hc_connect(w->c->node[w->node].proc.port) : -1;
            if (fd < 0) {
                usleep(20000);
                continue;
            }
        }
        pending_t p = {.type = rand_r(&seed) % CL_TYPES, .key = rand_r(&seed) % CL_KEYS};
        const char *tn = type_name[p.type];
        int roll = rand_r(&seed) % 100;
        switch (p.type) {
        case 0:
        case 1:
            p.kind = 0;
            p.by = 1 + rand_r(&seed) % 5;
            if (p.type == 1 && roll < 40)
                p.by = -p.by;
            snprintf(body, sizeof(body), "{\"type\":\"%s\",\"op\":\"%s\",\"by\":%lld}", tn,
                     p.by < 0 ? "decr" : "incr", (long long)(p.by < 0 ? -p.by : p.by));
            break;
        case 2:
            if (w->nregs == (int)(sizeof(w->regs) / sizeof(w->regs[0])))
                continue;
            p.kind = 1;
            w->regs[w->nregs].key = p.key;
            w->regs[w->nregs].seq = w->nregs;
            snprintf(name, sizeof(name), "n%dr%d", w->node + 1, w->nregs++);
            b64(name, enc, false);
            snprintf(body, sizeof(body), "{\"type\":\"lwwreg\",\"op\":\"set\",\"value\":\"%s\"}",
                     enc);
            break;
        default: {
            /* a set or timeline: remove one of our live members, add "shared", or a new one */
            int victim = -1;
            if (roll < 25)
                for (int m = w->nmem - 1; m >= 0 && victim < 0; m--)
                    if (w->mem[m].type == p.type && w->mem[m].key == p.key &&
                        w->mem[m].add == CL_ACKED && !w->mem[m].rem)
                        victim = m;
            const char *score = "";
            char sc[64] = "";
            if (victim >= 0) {
                p.kind = 3;
                p.idx = victim;
                member_name(w->node, victim, name, sizeof(name));
                if (p.type == 5) {
                    snprintf(sc, sizeof(sc), ",\"score\":%.0f", w->mem[victim].score + 1);
                    score = sc;
                }
                b64(name, enc, false);
                snprintf(body, sizeof(body),
                         "{\"type\":\"%s\",\"op\":\"remove\",\"member\":\"%s\"%s}", tn, enc, score);
                break;
            }
            double s = 1000.0 + w->ops * 3 + w->node;
            if (roll >= 95) {
                p.kind = 4;
                snprintf(name, sizeof(name), "shared");
            } else {
                p.kind = 2;
                cl_member_t *m = new_member(w, p.type, p.key, &p.idx);
                if (!m)
                    continue;
                m->score = s;
                member_name(w->node, p.idx, name, sizeof(name));
            }
            if (p.type == 5) {
                snprintf(sc, sizeof(sc), ",\"score\":%.0f", s);
                score = sc;
            }
            b64(name, enc, false);
            snprintf(body, sizeof(body), "{\"type\":\"%s\",\"op\":\"add\",\"member\":\"%s\"%s}", tn,
                     enc, score);
        }
        }
        key_path(p.type, p.key, path, sizeof(path), "");
        hc_resp_t r;
        w->ops++;
        uint64_t t0 = cl_now_ms();
        int rc = hc_send(fd, "POST", path, "", body, strlen(body), &r);
        if (rc == 0 && r.status == 200 && strstr(r.body, "\"applied\"")) {
            record(w, &p, CL_ACKED);
        } else if (rc == 0 && r.status != 0) {
            w->errors++;
            record(w, &p, CL_UNKNOWN);
            snprintf(w->last_error, sizeof(w->last_error), "%d %.200s", r.status, r.body);
        } else {
            record(w, &p, CL_UNKNOWN);
            struct timespec wall;
            clock_gettime(CLOCK_REALTIME, &wall);
            char when[32];
            strftime(when, sizeof(when), "%H:%M:%S", gmtime(&wall.tv_sec));
            printf("# writer to node %d: write %d got no response at %s.%03ldZ (%llu ms, %s)\n",
                   w->node + 1, w->ops, when, wall.tv_nsec / 1000000L,
                   (unsigned long long)(cl_now_ms() - t0),
                   w->c->node[w->node].running ? "node running" : "node down");
            hc_close(fd);
            fd = -1;
        }
        hc_resp_free(&r);
        if (w->pause_us)
            usleep((useconds_t)w->pause_us);
    }
    if (fd >= 0)
        hc_close(fd);
    return NULL;
}

int cl_writer_start(cl_writer_t *w)
{
    w->stop = 0;
    return pthread_create(&w->th, NULL, writer_main, w) ? -1 : 0;
}

void cl_writer_join(cl_writer_t *w)
{
    w->stop = 1;
    pthread_join(w->th, NULL);
}

void cl_writer_wait(cl_writer_t *w)
{
    pthread_join(w->th, NULL);
}

void cl_writer_free(cl_writer_t *w)
{
    free(w->mem);
    w->mem = NULL;
    w->nmem = w->capmem = 0;
}

/* ---- checks --------------------------------------------------------------------------------- */

/* Does the JSON array (of member strings, or of {"member","score"} objects) hold member? */
static bool has_member(json_t *arr, const char *enc, double *score)
{
    size_t i;
    json_t *v;
    json_array_foreach(arr, i, v)
    {
        json_t *m = json_is_object(v) ? json_object_get(v, "member") : v;
        if (json_is_string(m) && !strcmp(json_string_value(m), enc)) {
            if (score)
                *score = json_number_value(json_object_get(v, "score"));
            return true;
        }
    }
    return false;
}

/* Is the entry (score, member) at or below a bounded timeline's floor (a JSON {"member",
 * "score"}, or null for a timeline that never dropped anything)? Entries order by score, then
 * member bytewise. */
static bool below_floor(json_t *floor, double score, const char *member)
{
    json_t *fm = json_object_get(floor, "member"), *fs = json_object_get(floor, "score");
    if (!json_is_string(fm) || !json_is_number(fs))
        return false;
    double f = json_number_value(fs);
    return score < f || (score == f && strcmp(member, json_string_value(fm)) <= 0);
}

/* Prints at most 10 lines per check: a broken replica fails thousands of facts at once. */
#define say(...)                                                                                   \
    do {                                                                                           \
        if (bad <= 10)                                                                             \
            printf(__VA_ARGS__);                                                                   \
    } while (0)

int cl_check_writes(cluster_t *c, int on, cl_writer_t *ws, int nw, int *checked)
{
    int bad = 0, n = 0, dropped = 0;
    int port = c->node[on].proc.port;
    for (int t = 0; t < CL_TYPES; t++)
        for (int k = 0; k < CL_KEYS; k++) {
            char path[128], name[64], enc[128];
            /* a timeline's state ({"state":{"type","state":{...,"floor"}}}) says its floor: what
             * the bound dropped lies at or below it */
            key_path(t, k, path, sizeof(path), t == 5 ? "" : "?state=0");
            int st;
            json_t *j = get_json(port, path, &st);
            json_t *val = j ? json_object_get(j, "value") : NULL;
            json_t *floor =
                t == 5 && j ? json_object_get(json_object_get(json_object_get(j, "state"), "state"),
                                              "floor")
                            : NULL;
            if (t == 5 && val)
                val = json_object_get(val, "entries") ? json_object_get(val, "entries") : val;
            if (t <= 1) {
                int64_t lo = 0, hi = 0;
                for (int x = 0; x < nw; x++) {
                    lo += ws[x].cnt_acked[t][k] + ws[x].cnt_unk_neg[t][k];
                    hi += ws[x].cnt_acked[t][k] + ws[x].cnt_unk_pos[t][k];
                }
                int64_t got = val ? json_integer_value(val) : 0;
                n++;
                if (got < lo || got > hi) {
                    bad++;
                    say("# %s:%d = %lld, acknowledged writes say [%lld, %lld]\n", type_prefix[t], k,
                        (long long)got, (long long)lo, (long long)hi);
                }
            } else if (t == 2) {
                const char *v = val ? json_string_value(val) : NULL;
                bool found = false, any = false;
                for (int x = 0; x < nw && !found; x++)
                    for (int r = 0; r < ws[x].nregs && !found; r++) {
                        if (ws[x].regs[r].key != k)
                            continue;
                        any = true;
                        snprintf(name, sizeof(name), "n%dr%d", ws[x].node + 1, ws[x].regs[r].seq);
                        b64(name, enc, false);
                        found = v && !strcmp(v, enc);
                    }
                n += any;
                if (any && !found) {
                    bad++;
                    say("# reg:%d holds %s, which no writer wrote\n", k, v ? v : "nothing");
                }
            } else {
                int shared = 0;
                for (int x = 0; x < nw; x++) {
                    if (ws[x].shared[t][k] == CL_ACKED)
                        shared = 1;
                    for (int m = 0; m < ws[x].nmem; m++) {
                        cl_member_t *mm = &ws[x].mem[m];
                        if (mm->type != t || mm->key != k || mm->add != CL_ACKED ||
                            mm->rem == CL_UNKNOWN)
                            continue;
                        member_name(ws[x].node, m, name, sizeof(name));
                        b64(name, enc, false);
                        double score = 0;
                        bool present = val && has_member(val, enc, t == 5 ? &score : NULL);
                        bool want = mm->rem != CL_ACKED;
                        n++;
                        if (want && !present && below_floor(floor, mm->score, enc)) {
                            dropped++; /* the timeline's bound dropped it, as it should */
                            continue;
                        }
                        if (present != want || (t == 5 && present && score != mm->score)) {
                            bad++;
                            say("# %s:%d member %s: %s, acknowledged writes say %s\n",
                                type_prefix[t], k, name, present ? "present" : "absent",
                                want ? "present" : "removed");
                        }
                    }
                }
                if (shared) {
                    b64("shared", enc, false);
                    n++;
                    if (!val || !has_member(val, enc, NULL)) {
                        bad++;
                        say("# %s:%d lacks the member \"shared\"\n", type_prefix[t], k);
                    }
                }
            }
            json_decref(j);
        }
    if (bad > 10)
        printf("# ... %d violations in all on node %d\n", bad, on + 1);
    if (dropped)
        printf("# node %d: %d acknowledged timeline entries at or below their timeline's floor, "
               "dropped by its bound\n",
               on + 1, dropped);
    if (checked)
        *checked = n;
    return bad;
}
