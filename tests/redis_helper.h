/* redis_helper.h - start real redis-server processes with crdt.so on loopback for the tests
 *
 * Every server gets a free 127.0.0.1 port, its own temporary directory (RDB, AOF, log), dies with
 * the test process (PR_SET_PDEATHSIG) and is killed by rh_cleanup (also registered with atexit and
 * run by the watchdog alarm). The module is CRDT_MODULE_PATH (compile definition) unless the
 * environment variable CRDT_MODULE names another file; redis-server is $REDIS_SERVER or the one
 * in PATH.
 */
#ifndef CRDT_REDIS_HELPER_H
#define CRDT_REDIS_HELPER_H

#include <stdbool.h>
#include <stddef.h>
#include <sys/types.h>

#include <hiredis/hiredis.h>

#define RH_MAX_ARGS 48

typedef struct rh_server {
    pid_t pid;
    int port;
    char dir[256];
    char *args[RH_MAX_ARGS]; /* extra server arguments, kept for restarts */
    int nargs;
    char module_args[256];
    redisContext *c;
} rh_server_t;

/* True when the module and tests are built with sanitizers (servers get the ASan runtime
 * preloaded and write reports into their directories). */
bool rh_sanitized(void);
/* Sanitizer reports written by the servers so far (each is printed as a diag). */
int rh_sanitizer_reports(void);

/* NULL when tests can run, else why not (missing redis-server or module). */
const char *rh_skip_reason(void);

/* Starts a server: module arguments as one string ("node-id 7 timeline-max-size 5"), then extra
 * server arguments, NULL-terminated ("--appendonly", "yes", NULL). `dir` NULL makes a new
 * temporary directory. Waits (bounded) until it answers PING. 0, or -1 (with a diag) and the server
 * is forgotten as by rh_stop. */
int rh_start(rh_server_t *s, const char *dir, const char *module_args, const char *const *extra);
/* SIGTERM, bounded wait, then SIGKILL; forgets the server (its directory stays until rh_cleanup).
 * Call it before the rh_server_t goes out of scope. */
void rh_stop(rh_server_t *s);
/* SIGKILL (no shutdown save), waits for the exit; the server stays known, rh_restart brings it
 * back on its port and directory. */
void rh_kill(rh_server_t *s);
/* Finds an executable in PATH: 0 with its path in out, or -1. */
int rh_find_tool(const char *name, char *out, size_t cap);
/* Stops and starts again with the same port, directory and arguments. */
int rh_restart(rh_server_t *s);
/* Stops every server and removes their directories. Idempotent. */
void rh_cleanup(void);
/* Kills everything and exits if the test runs longer than `seconds`. */
void rh_watchdog(unsigned seconds);

/* A command, hiredis format string; the reply (caller frees) or NULL after a diag. */
redisReply *rh_cmd(rh_server_t *s, const char *fmt, ...);
/* A command from an argv of binary-safe strings. */
redisReply *rh_cmdv(rh_server_t *s, int argc, const char **argv, const size_t *lens);

/* Convenience checks on replies: integer value (or LLONG_MIN), error text ("" if not an error),
 * bulk string copied into a static buffer ... each frees the reply. */
long long rh_int(redisReply *r);
const char *rh_err(redisReply *r);
/* A reply's string (status or bulk) as a malloc'd copy with its length; NULL for nil/others. */
char *rh_str(redisReply *r, size_t *len);

/* A TAP diagnostic line ("# ..."), flushed. */
void rh_note(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
void rh_sleep_ms(long ms);

/* Runs one INFO field ("crdt_merges") and returns its integer value, or -1. */
long long rh_info_field(rh_server_t *s, const char *section, const char *field);

/* Listens on a free loopback port and forks. In the parent: the port (-1 on failure) and *pid the
 * child's (to SIGKILL and reap). In the child: 0 with *pid 0 and *ls the listening socket; it dies
 * with the parent or after `seconds`. */
int rh_listen_fork(pid_t *pid, int *ls, unsigned seconds);

/* A child process forwarding loopback connections on a free port to the server on `port`, with
 * every command named in `verbs` (NULL-terminated, any case) renamed on the way (its last letter
 * made 'X'): the real server answers those "ERR unknown command", as one whose crdt.so lacks them
 * would, and everything else as it is. The port, or -1; *pid to SIGKILL and reap. */
int rh_rename_proxy(int port, const char *const *verbs, pid_t *pid);

#endif /* CRDT_REDIS_HELPER_H */
