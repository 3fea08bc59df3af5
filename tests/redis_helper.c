/* redis_helper.c - redis-server processes with crdt.so for the tests: ports, dirs, lifetimes */
#define _GNU_SOURCE
#include "redis_helper.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#ifndef CRDT_MODULE_PATH
#define CRDT_MODULE_PATH "crdt.so"
#endif

#define MAX_SERVERS 16
static rh_server_t *servers[MAX_SERVERS];
static char owned_dirs[MAX_SERVERS][256];
static int n_owned_dirs;
static char server_bin[PATH_MAX];

void rh_note(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fputs("# ", stdout);
    vprintf(fmt, ap);
    putchar('\n');
    fflush(stdout);
    va_end(ap);
}

static const char *module_path(void)
{
    const char *e = getenv("CRDT_MODULE");
    return e && *e ? e : CRDT_MODULE_PATH;
}

int rh_find_tool(const char *name, char *out, size_t cap)
{
    const char *path = getenv("PATH");
    char buf[4096];
    snprintf(buf, sizeof(buf), "%s", path ? path : "/usr/local/bin:/usr/bin:/bin");
    for (char *save, *d = strtok_r(buf, ":", &save); d; d = strtok_r(NULL, ":", &save)) {
        snprintf(out, cap, "%s/%s", d, name);
        if (access(out, X_OK) == 0)
            return 0;
    }
    return -1;
}

static int find_server(void)
{
    const char *e = getenv("REDIS_SERVER");
    if (e && *e) {
        snprintf(server_bin, sizeof(server_bin), "%s", e);
        return access(server_bin, X_OK);
    }
    return rh_find_tool("redis-server", server_bin, sizeof(server_bin));
}

bool rh_sanitized(void)
{
#ifdef CRDT_ASAN_RUNTIME
    return true;
#else
    return false;
#endif
}

const char *rh_skip_reason(void)
{
    static char why[512];
#ifdef CRDT_ASAN_RUNTIME
    /* A sanitized crdt.so inside the distribution's (unsanitized) redis-server needs the ASan
     * runtime preloaded, as the first library of the process. */
    if (access(CRDT_ASAN_RUNTIME, R_OK) < 0)
        return "sanitized module: ASan runtime " CRDT_ASAN_RUNTIME " not found to preload into "
               "redis-server";
#endif
    if (find_server() < 0)
        return "redis-server not found (install redis-server or set REDIS_SERVER)";
    if (access(module_path(), R_OK) < 0) {
        snprintf(why, sizeof(why), "module %s not found (build crdt_module or set CRDT_MODULE)",
                 module_path());
        return why;
    }
    return NULL;
}

/* Binds 127.0.0.1:port (0: any); returns the port bound, or -1. */
static int try_bind(int port)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    if (fd < 0)
        return -1;
    struct sockaddr_in a = {.sin_family = AF_INET,
                            .sin_addr.s_addr = htonl(INADDR_LOOPBACK),
                            .sin_port = htons((uint16_t)port)};
    socklen_t len = sizeof(a);
    int got = -1;
    if (bind(fd, (struct sockaddr *)&a, sizeof(a)) == 0 &&
        getsockname(fd, (struct sockaddr *)&a, &len) == 0)
        got = ntohs(a.sin_port);
    close(fd);
    return got;
}

/* A free loopback port below 55000 whose port + 10000 is free too: in cluster mode Redis binds
 * its cluster bus there. */
static int free_port(void)
{
    for (int attempt = 0; attempt < 50; attempt++) {
        int port = try_bind(0);
        if (port > 0 && port < 55000 && try_bind(port + 10000) == port + 10000)
            return port;
    }
    return -1;
}

void rh_sleep_ms(long ms)
{
    struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

static void track(rh_server_t *s)
{
    for (int i = 0; i < MAX_SERVERS; i++)
        if (servers[i] == s)
            return;
    for (int i = 0; i < MAX_SERVERS; i++)
        if (!servers[i]) {
            servers[i] = s;
            return;
        }
}

static void show_log(const rh_server_t *s)
{
    char path[300];
    snprintf(path, sizeof(path), "%s/redis.log", s->dir);
    FILE *f = fopen(path, "r");
    if (!f)
        return;
    char line[512];
    while (fgets(line, sizeof(line), f))
        if ((strstr(line, " # ") || strstr(line, "crdt")) && !strstr(line, "oO0OoO0") &&
            !strstr(line, "Redis version") && !strstr(line, "Configuration loaded") &&
            !strstr(line, "overcommit") && !strstr(line, "Server initialized"))
            printf("#   log: %s", line);
    fclose(f);
}

static bool log_has(const rh_server_t *s, const char *what)
{
    char path[300], line[512];
    snprintf(path, sizeof(path), "%s/redis.log", s->dir);
    FILE *f = fopen(path, "r");
    bool found = false;
    while (f && !found && fgets(line, sizeof(line), f))
        found = strstr(line, what) != NULL;
    if (f)
        fclose(f);
    return found;
}

static void stop_process(rh_server_t *s);

static int spawn(rh_server_t *s)
{
    char portbuf[16];
    snprintf(portbuf, sizeof(portbuf), "%d", s->port);
    char modargs[256];
    snprintf(modargs, sizeof(modargs), "%s", s->module_args);
    const char *argv[RH_MAX_ARGS + 40];
    int n = 0;
    argv[n++] = server_bin;
    argv[n++] = "--port";
    argv[n++] = portbuf;
    argv[n++] = "--bind";
    argv[n++] = "127.0.0.1";
    argv[n++] = "--dir";
    argv[n++] = s->dir;
    argv[n++] = "--save";
    argv[n++] = "";
    argv[n++] = "--daemonize";
    argv[n++] = "no";
    argv[n++] = "--enable-debug-command";
    argv[n++] = "yes";
    argv[n++] = "--logfile";
    argv[n++] = "redis.log";
    argv[n++] = "--loadmodule";
    argv[n++] = module_path();
    for (char *save, *t = strtok_r(modargs, " ", &save); t && n < RH_MAX_ARGS + 30;
         t = strtok_r(NULL, " ", &save))
        argv[n++] = t;
    for (int i = 0; i < s->nargs; i++)
        argv[n++] = s->args[i];
    argv[n] = NULL;
    pid_t pid = fork();
    if (pid < 0)
        return -1;
    if (pid == 0) {
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        int fd = open("/dev/null", O_RDWR);
        if (fd >= 0) {
            dup2(fd, 0);
            dup2(fd, 1);
            dup2(fd, 2);
        }
#ifdef CRDT_ASAN_RUNTIME
        /* Reports go to files in the server's directory; rh_sanitizer_reports() looks for them.
         * Leak checking stays off: redis-server does not free everything at exit. */
        char opt[600];
        setenv("LD_PRELOAD", CRDT_ASAN_RUNTIME, 1);
        snprintf(opt, sizeof(opt), "detect_leaks=0:log_path=%s/asan", s->dir);
        setenv("ASAN_OPTIONS", opt, 1);
        snprintf(opt, sizeof(opt), "print_stacktrace=1:log_path=%s/ubsan", s->dir);
        setenv("UBSAN_OPTIONS", opt, 1);
#endif
        execv(server_bin, (char *const *)argv);
        _exit(127);
    }
    s->pid = pid;
    track(s);
    /* Bounded wait for PING: 10 s, watching for an early exit. */
    for (int i = 0; i < 200; i++) {
        int st;
        if (waitpid(pid, &st, WNOHANG) == pid) {
            s->pid = 0;
            rh_note("redis-server on port %d exited during startup (status %d)", s->port, st);
            show_log(s);
            return -2;
        }
        struct timeval tv = {1, 0};
        redisContext *c = redisConnectWithTimeout("127.0.0.1", s->port, tv);
        if (c && !c->err) {
            redisSetTimeout(c, (struct timeval){20, 0});
            redisReply *r = redisCommand(c, "PING");
            int ok = r && r->type == REDIS_REPLY_STATUS;
            if (r)
                freeReplyObject(r);
            if (ok) {
                s->c = c;
                return 0;
            }
        }
        if (c)
            redisFree(c);
        rh_sleep_ms(50);
    }
    rh_note("redis-server on port %d did not answer PING within 10 s", s->port);
    show_log(s);
    stop_process(s);
    return -1;
}

int rh_start(rh_server_t *s, const char *dir, const char *module_args, const char *const *extra)
{
    if (!server_bin[0] && find_server() < 0)
        return -1;
    memset(s, 0, sizeof(*s));
    if (dir) {
        snprintf(s->dir, sizeof(s->dir), "%s", dir);
    } else {
        snprintf(s->dir, sizeof(s->dir), "/tmp/crdt-redis-XXXXXX");
        if (!mkdtemp(s->dir))
            return -1;
        if (n_owned_dirs < MAX_SERVERS)
            snprintf(owned_dirs[n_owned_dirs++], sizeof(owned_dirs[0]), "%s", s->dir);
    }
    snprintf(s->module_args, sizeof(s->module_args), "%s", module_args ? module_args : "");
    for (int i = 0; extra && extra[i] && s->nargs < RH_MAX_ARGS; i++)
        s->args[s->nargs++] = strdup(extra[i]);
    /* A port found free can be taken before redis binds it: try a few. */
    for (int attempt = 0; attempt < 3; attempt++) {
        s->port = free_port();
        int r = s->port > 0 ? spawn(s) : -1;
        if (r == 0)
            return 0;
        if (r == -2 && !log_has(s, "already in use"))
            break; /* it refused its configuration: another port will not help */
    }
    rh_stop(s); /* forget it: the caller's rh_server_t may go out of scope */
    return -1;
}

static void stop_process(rh_server_t *s)
{
    if (s->c) {
        redisFree(s->c);
        s->c = NULL;
    }
    if (s->pid <= 0)
        return;
    kill(s->pid, SIGTERM);
    for (int i = 0; i < 200; i++) { /* 10 s */
        if (waitpid(s->pid, NULL, WNOHANG) == s->pid) {
            s->pid = 0;
            return;
        }
        rh_sleep_ms(50);
    }
    kill(s->pid, SIGKILL);
    waitpid(s->pid, NULL, 0);
    s->pid = 0;
}

void rh_stop(rh_server_t *s)
{
    stop_process(s);
    for (int i = 0; i < MAX_SERVERS; i++)
        if (servers[i] == s)
            servers[i] = NULL;
    for (int k = 0; k < s->nargs; k++)
        free(s->args[k]);
    s->nargs = 0;
}

void rh_kill(rh_server_t *s)
{
    if (s->c) {
        redisFree(s->c);
        s->c = NULL;
    }
    if (s->pid > 0) {
        kill(s->pid, SIGKILL);
        waitpid(s->pid, NULL, 0);
        s->pid = 0;
    }
}

int rh_restart(rh_server_t *s)
{
    stop_process(s);
    return spawn(s);
}

static void remove_tree(const char *path)
{
    DIR *d = opendir(path);
    if (d) {
        struct dirent *e;
        while ((e = readdir(d))) {
            if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, ".."))
                continue;
            char p[PATH_MAX];
            snprintf(p, sizeof(p), "%s/%s", path, e->d_name);
            struct stat st;
            if (lstat(p, &st) == 0 && S_ISDIR(st.st_mode))
                remove_tree(p);
            else
                unlink(p);
        }
        closedir(d);
    }
    rmdir(path);
}

int rh_sanitizer_reports(void)
{
    int n = 0;
    for (int i = 0; i < n_owned_dirs; i++) {
        DIR *d = opendir(owned_dirs[i]);
        if (!d)
            continue;
        struct dirent *e;
        while ((e = readdir(d))) {
            if (strncmp(e->d_name, "asan.", 5) && strncmp(e->d_name, "ubsan.", 6))
                continue;
            n++;
            char p[PATH_MAX], line[512];
            snprintf(p, sizeof(p), "%s/%s", owned_dirs[i], e->d_name);
            rh_note("sanitizer report %s:", p);
            FILE *f = fopen(p, "r");
            for (int k = 0; f && k < 40 && fgets(line, sizeof(line), f); k++)
                printf("#   %s", line);
            if (f)
                fclose(f);
        }
        closedir(d);
    }
    return n;
}

void rh_cleanup(void)
{
    for (int i = 0; i < MAX_SERVERS; i++) {
        if (servers[i])
            rh_stop(servers[i]);
    }
    if (!getenv("CRDT_KEEP_DIRS"))
        for (int i = 0; i < n_owned_dirs; i++)
            remove_tree(owned_dirs[i]);
    n_owned_dirs = 0;
}

static void on_alarm(int sig)
{
    (void)sig;
    static const char msg[] = "Bail out! watchdog: test ran too long\n";
    ssize_t w = write(1, msg, sizeof(msg) - 1);
    (void)w;
    for (int i = 0; i < MAX_SERVERS; i++)
        if (servers[i] && servers[i]->pid > 0)
            kill(servers[i]->pid, SIGKILL);
    _exit(2);
}

void rh_watchdog(unsigned seconds)
{
    signal(SIGALRM, on_alarm);
    signal(SIGPIPE, SIG_IGN);
    alarm(seconds);
    atexit(rh_cleanup);
}

redisReply *rh_cmd(rh_server_t *s, const char *fmt, ...)
{
    if (!s->c)
        return NULL;
    va_list ap;
    va_start(ap, fmt);
    redisReply *r = redisvCommand(s->c, fmt, ap);
    va_end(ap);
    if (!r)
        rh_note("command '%s' on port %d failed: %s", fmt, s->port, s->c->errstr);
    return r;
}

redisReply *rh_cmdv(rh_server_t *s, int argc, const char **argv, const size_t *lens)
{
    if (!s->c)
        return NULL;
    redisReply *r = redisCommandArgv(s->c, argc, argv, lens);
    if (!r)
        rh_note("command %s on port %d failed: %s", argv[0], s->port, s->c->errstr);
    return r;
}

long long rh_int(redisReply *r)
{
    long long v = LLONG_MIN;
    if (r && r->type == REDIS_REPLY_INTEGER)
        v = r->integer;
    else if (r && r->type == REDIS_REPLY_ERROR)
        rh_note("unexpected error reply: %s", r->str);
    if (r)
        freeReplyObject(r);
    return v;
}

const char *rh_err(redisReply *r)
{
    static char buf[512];
    buf[0] = '\0';
    if (r && r->type == REDIS_REPLY_ERROR)
        snprintf(buf, sizeof(buf), "%s", r->str);
    if (r)
        freeReplyObject(r);
    return buf;
}

char *rh_str(redisReply *r, size_t *len)
{
    char *out = NULL;
    if (r && (r->type == REDIS_REPLY_STRING || r->type == REDIS_REPLY_STATUS)) {
        out = malloc(r->len + 1);
        if (out) {
            memcpy(out, r->str, r->len);
            out[r->len] = '\0';
            if (len)
                *len = r->len;
        }
    }
    if (r)
        freeReplyObject(r);
    return out;
}

long long rh_info_field(rh_server_t *s, const char *section, const char *field)
{
    redisReply *r = rh_cmd(s, "INFO %s", section);
    long long v = -1;
    if (r && r->type == REDIS_REPLY_STRING) {
        size_t fl = strlen(field);
        for (char *p = r->str; p && *p; p = strchr(p, '\n') ? strchr(p, '\n') + 1 : NULL) {
            if (strncmp(p, field, fl) == 0 && p[fl] == ':') {
                v = strtoll(p + fl + 1, NULL, 10);
                break;
            }
        }
    }
    if (r)
        freeReplyObject(r);
    return v;
}

/* ---- a proxy that renames commands ----------------------------------------------------------- */

static bool verb_in(const char *verb, const char *const *verbs)
{
    for (; verb && *verbs; verbs++)
        if (!strcasecmp(verb, *verbs))
            return true;
    return false;
}

int rh_listen_fork(pid_t *pid, int *ls, unsigned seconds)
{
    *pid = -1;
    *ls = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t al = sizeof(a);
    if (*ls < 0 || bind(*ls, (struct sockaddr *)&a, sizeof(a)) < 0 || listen(*ls, 8) < 0 ||
        getsockname(*ls, (struct sockaddr *)&a, &al) < 0) {
        if (*ls >= 0)
            close(*ls);
        return -1;
    }
    int port = ntohs(a.sin_port);
    fflush(stdout);
    *pid = fork();
    if (*pid != 0) {
        close(*ls);
        return *pid < 0 ? -1 : port;
    }
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    alarm(seconds);
    return 0;
}

int rh_rename_proxy(int port, const char *const *verbs, pid_t *pid)
{
    int ls;
    int lport = rh_listen_fork(pid, &ls, 60);
    if (*pid != 0)
        return lport;
    signal(SIGCHLD, SIG_IGN);
    for (;;) {
        int fd = accept(ls, NULL, NULL);
        if (fd < 0)
            _exit(0);
        if (fork() != 0) {
            close(fd);
            continue;
        }
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        int up = socket(AF_INET, SOCK_STREAM, 0);
        struct sockaddr_in t = {.sin_family = AF_INET,
                                .sin_port = htons((uint16_t)port),
                                .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
        if (up < 0 || connect(up, (struct sockaddr *)&t, sizeof(t)) < 0)
            _exit(0);
        redisReader *rd = redisReaderCreate();
        char buf[65536];
        for (;;) {
            struct pollfd pf[2] = {{fd, POLLIN, 0}, {up, POLLIN, 0}};
            if (poll(pf, 2, -1) < 0)
                _exit(0);
            if (pf[1].revents) {
                ssize_t n = read(up, buf, sizeof(buf));
                if (n <= 0 || write(fd, buf, (size_t)n) != n)
                    _exit(0);
            }
            if (!pf[0].revents)
                continue;
            ssize_t n = read(fd, buf, sizeof(buf));
            if (n <= 0)
                _exit(0);
            redisReaderFeed(rd, buf, (size_t)n);
            void *rep = NULL;
            while (redisReaderGetReply(rd, &rep) == REDIS_OK && rep) {
                redisReply *cmd = rep;
                const char *argv[64];
                size_t lens[64];
                size_t argc = cmd->type == REDIS_REPLY_ARRAY ? cmd->elements : 0;
                for (size_t i = 0; i < argc && i < 64; i++)
                    argv[i] = cmd->element[i]->str, lens[i] = cmd->element[i]->len;
                char *verb = argc ? cmd->element[0]->str : NULL;
                if (verb_in(verb, verbs) && cmd->element[0]->len)
                    verb[cmd->element[0]->len - 1] = 'X'; /* same length, another name */
                char *out = NULL;
                int len = argc ? redisFormatCommandArgv(&out, (int)argc, argv, lens) : -1;
                if (len > 0 && write(up, out, (size_t)len) != len)
                    _exit(0);
                redisFreeCommand(out);
                freeReplyObject(rep);
                rep = NULL;
            }
        }
    }
}
