/* test_ws_cli.c - the crdtc CLI end to end against a real crdtd: sub in the background with a
 * state file, apply, kill, apply more, sub again resumes exactly; token minting; errors */
#include "tap.h"

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdint.h>
#include <sys/wait.h>
#include <unistd.h>

#include "crdtc_helper.h"
#include "token.h"

#ifndef CRDTD_BIN
#error "CRDTD_BIN (the crdtd binary) must be defined"
#endif
#ifndef CRDTC_BIN
#error "CRDTC_BIN (the crdtc CLI) must be defined"
#endif

static crdtd_proc_t srv;
static char url[64], dir_[1024];

/* Starts crdtc with args (NULL-terminated) in the background, stdout and stderr to files. */
static pid_t spawn(const char *const *args, const char *out, const char *err)
{
    const char *argv[32];
    int n = 0;
    argv[n++] = CRDTC_BIN;
    for (; args[n - 1] && n < 31; n++)
        argv[n] = args[n - 1];
    argv[n] = NULL;
    /* empty both files before the fork: a parent waiting for a line must not find the previous
     * run's before the child truncated them (it would signal a child that has no handler yet) */
    int t = open(out, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    if (t >= 0)
        close(t);
    t = open(err, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    if (t >= 0)
        close(t);
    pid_t pid = fork();
    if (pid == 0) {
        int o = open(out, O_WRONLY | O_CREAT | O_TRUNC, 0644);
        int e = open(err, O_WRONLY | O_CREAT | O_TRUNC, 0644);
        if (o < 0 || e < 0) {
            fprintf(stderr, "# spawn: cannot open %s or %s: %s\n", out, err, strerror(errno));
            _exit(127);
        }
        dup2(o, 1);
        dup2(e, 2);
        execv(CRDTC_BIN, (char *const *)argv);
        dprintf(o, "spawn: exec %s: %s\n", CRDTC_BIN, strerror(errno));
        _exit(127);
    }
    return pid;
}

/* Waits at most ms for pid; its exit status, or -1 (then killed). */
static int wait_exit(pid_t pid, int ms)
{
    int st;
    for (int i = 0; i < ms / 10; i++) {
        if (waitpid(pid, &st, WNOHANG) == pid)
            return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
        usleep(10000);
    }
    kill(pid, SIGKILL);
    waitpid(pid, &st, 0);
    return -1;
}

static char *slurp(const char *path)
{
    FILE *f = fopen(path, "r");
    if (!f)
        return strdup("");
    char *buf = calloc(1, 1 << 20);
    size_t n = fread(buf, 1, (1 << 20) - 1, f);
    buf[n] = '\0';
    fclose(f);
    return buf;
}

static int count_lines(const char *s)
{
    int n = 0;
    for (; *s; s++)
        n += *s == '\n';
    return n;
}

static int count_str(const char *s, const char *needle)
{
    int n = 0;
    for (const char *p = s; (p = strstr(p, needle)); p++)
        n++;
    return n;
}

/* Runs crdtc to completion; its exit status; stdout in *out (malloc'd). */
static int run(const char *const *args, char **out, int ms)
{
    char o[1100], e[1100];
    snprintf(o, sizeof(o), "%s/run.out", dir_);
    snprintf(e, sizeof(e), "%s/run.err", dir_);
    int st = wait_exit(spawn(args, o, e), ms);
    if (out)
        *out = slurp(o);
    if (st != 0) {
        char *err = slurp(e);
        diag("crdtc exited %d: %s", st, err);
        free(err);
    }
    return st;
}

/* Waits until the file holds at least n occurrences of needle. */
static bool wait_for(const char *path, const char *needle, int n, int ms)
{
    for (int i = 0; i < ms / 10; i++) {
        char *s = slurp(path);
        int c = count_str(s, needle);
        free(s);
        if (c >= n)
            return true;
        usleep(10000);
    }
    return false;
}

static int apply(const char *key, const char *op)
{
    const char *a[] = {"--url", url,     "--client", "cli-writer", "--timeout",
                       "5",     "apply", key,        op,           NULL};
    char *out = NULL;
    int st = run(a, &out, 8000);
    if (st == 0 && !strstr(out, "\"applied\":true"))
        st = 99;
    free(out);
    return st;
}

int main(void)
{
    signal(SIGPIPE, SIG_IGN);
    char *dir = test_tmpdir();
    snprintf(dir_, sizeof(dir_), "%s", dir);
    char data[1100], state[1100], out1[1100], err1[1100], secret[1100];
    snprintf(data, sizeof(data), "%s/data", dir);
    snprintf(state, sizeof(state), "%s/sub.state", dir);
    snprintf(out1, sizeof(out1), "%s/sub.out", dir);
    snprintf(err1, sizeof(err1), "%s/sub.err", dir);
    snprintf(secret, sizeof(secret), "%s/secret", dir);
    const char *args[] = {"--data-dir", data, NULL};
    if (crdtd_start(&srv, CRDTD_BIN, dir, args)) {
        rm_rf(dir);
        skip_all("crdtd did not start");
    }
    snprintf(url, sizeof(url), "ws://127.0.0.1:%d", srv.port);

    char *out = NULL;
    const char *help[] = {"--help", NULL};
    is_int(run(help, &out, 5000), 0, "--help exits 0");
    ok(strstr(out, "sub KEY") && strstr(out, "--state-file"), "and prints the usage");
    free(out);
    const char *bad[] = {"frobnicate", NULL};
    is_int(run(bad, NULL, 5000), 2, "an unknown command exits 2");

    /* 1. sub in the background */
    const char *sub[] = {"--url", url, "--state-file", state, "sub", "cli:a", "cli:b", NULL};
    pid_t p = spawn(sub, out1, err1);
    ok(wait_for(err1, "subscribed", 2, 5000), "sub connected and subscribed to 2 keys");
    is_int(apply("cli:a", "{\"type\":\"pncounter\",\"op\":\"incr\",\"by\":2}"), 0,
           "apply cli:a incr 2: acked, applied");
    is_int(apply("cli:c", "{\"type\":\"pncounter\",\"op\":\"incr\"}"), 0, "apply cli:c");
    {
        char e[1100];
        snprintf(e, sizeof(e), "%s/run.err", dir);
        char *es = slurp(e);
        ok(es && !strstr(es, "connection closed") && !strstr(es, "1006"),
           "a one-shot apply closes cleanly: nothing about the close on stderr (%s)", es);
        free(es);
    }
    ok(wait_for(out1, "\n", 1, 5000), "sub printed the change");
    usleep(200000);
    kill(p, SIGTERM);
    is_int(wait_exit(p, 5000), 0, "sub exits 0 on SIGTERM");
    {
        char *es = slurp(err1);
        ok(es && !strstr(es, "connection closed"), "... and says nothing about the close");
        free(es);
    }
    char *s1 = slurp(out1);
    is_int(count_lines(s1), 1, "one change printed (cli:c is not subscribed)");
    ok(strstr(s1, "\"key\":\"cli:a\"") && strstr(s1, "\"delta\""), "cli:a's delta: %s", s1);
    free(s1);
    char *st = slurp(state);
    ok(strstr(st, "\"cursor\":") && !strstr(st, "\"cursor\":0,"), "the state file has a cursor");
    free(st);

    /* 2. while it is away */
    is_int(apply("cli:a", "{\"op\":\"incr\",\"by\":3}"), 0, "apply cli:a incr 3");
    is_int(apply("cli:a", "{\"op\":\"decr\",\"by\":1}"), 0, "apply cli:a decr 1");
    {
        const char *a[] = {"--url",
                           url,
                           "--client",
                           "cli-writer",
                           "--base64",
                           "apply",
                           "Y2xpOmI=", /* cli:b */
                           "{\"type\":\"orset\",\"op\":\"add\",\"member\":\"xyz\"}",
                           NULL};
        is_int(run(a, NULL, 8000), 0, "apply cli:b (key as base64)");
    }
    is_int(apply("cli:c", "{\"op\":\"incr\"}"), 0, "apply cli:c");

    /* 3. sub again: exactly what it missed, once per key, as full states */
    const char *sub2[] = {"--url", url,   "--state-file", state,   "--timeout",
                          "1.5",   "sub", "cli:a",        "cli:b", NULL};
    p = spawn(sub2, out1, err1);
    is_int(wait_exit(p, 8000), 0, "sub resumed and ran until its timeout");
    char *s2 = slurp(out1);
    is_int(count_lines(s2), 2, "two changes printed");
    ok(count_str(s2, "\"key\":\"cli:a\"") == 1 && count_str(s2, "\"key\":\"cli:b\"") == 1,
       "cli:a and cli:b once each, nothing of cli:c");
    is_int(count_str(s2, "\"state\":{\"type\""), 2, "as full states (the catch-up)");
    if (count_lines(s2) != 2)
        diag("%s", s2);
    free(s2);
    /* cli:a's state printed is the server's: value 2+3-1 */
    is_int(rest_counter(srv.port, "cli:a"), 4, "server value 4");

    /* 4. and again: nothing missed, nothing printed */
    p = spawn(sub2, out1, err1);
    is_int(wait_exit(p, 8000), 0, "a third run");
    char *s3 = slurp(out1);
    is_int(count_lines(s3), 0, "prints nothing: it missed nothing");
    free(s3);

    /* 4b. a key that is not text: --base64 in, {"base64"} out; the state file keeps it so */
    {
        char st2[1100];
        snprintf(st2, sizeof(st2), "%s/bin.state", dir);
        const char *subb[] = {"--url", url, "--state-file", st2, "--base64", "--count", "1",
                              "sub", "AP8=", NULL};
        p = spawn(subb, out1, err1);
        ok(wait_for(err1, "subscribed", 1, 5000), "sub --base64 AP8= subscribed");
        const char *ab[] = {"--url", url, "--base64", "apply", "AP8=",
                            "{\"type\":\"gcounter\",\"op\":\"incr\"}", NULL};
        is_int(run(ab, NULL, 8000), 0, "apply to the key 00 FF");
        is_int(wait_exit(p, 8000), 0, "sub exits after its one change");
        char *sb = slurp(out1);
        ok(sb && strstr(sb, "{\"key\":{\"base64\":\"AP8=\"},"), "printed with the key {\"base64\"}: %s",
           sb ? sb : "");
        free(sb);
        char *sf = slurp(st2);
        ok(sf && strstr(sf, "\"keys\":[{\"base64\":\"AP8=\"}]"), "the state file too: %s",
           sf ? sf : "");
        free(sf);
        crdt_buf_t b = rest_state(srv.port, "\x00\xff", 2);
        ok(b.data != NULL, "REST sees the key 00 FF (/v1/keys64/AP8)");
        crdt_buf_free(&b);
    }

    /* 5. sub stopped by Ctrl-C: exit 0, a clean close, nothing alarming on stderr */
    {
        const char *sub3[] = {"--url", url, "sub", "cli:a", NULL};
        p = spawn(sub3, out1, err1);
        ok(wait_for(err1, "subscribed", 1, 5000), "sub subscribed");
        kill(p, SIGINT);
        is_int(wait_exit(p, 5000), 0, "sub exits 0 on SIGINT");
        char *es = slurp(err1);
        ok(es && !strstr(es, "connection closed") && !strstr(es, "1006"),
           "and prints nothing about the close: %s", es);
        free(es);
    }

    /* errors */
    {
        const char *a[] = {"--url",
                           url,
                           "--timeout",
                           "5",
                           "apply",
                           "cli:a",
                           "{\"type\":\"orset\",\"op\":\"add\",\"member\":\"x\"}",
                           NULL};
        is_int(run(a, NULL, 8000), 1, "apply of the wrong type exits 1");
        char e[1100];
        snprintf(e, sizeof(e), "%s/run.err", dir);
        char *es = slurp(e);
        ok(strstr(es, "wrong_type"), "and says wrong_type");
        free(es);
        const char *b[] = {"--url", url, "apply", "cli:a", "{not json", NULL};
        is_int(run(b, NULL, 5000), 2, "malformed OPJSON exits 2");
    }

    /* token minting */
    FILE *f = fopen(secret, "w");
    if (!f) {
        crdtd_stop(&srv, SIGTERM, 5000);
        bail_out("cannot write %s: %s (was the temporary directory removed?)", secret,
                 strerror(errno));
    }
    fputs("cli-secret-0123456789abcdef\n", f);
    fclose(f);
    const char *tk[] = {"token", "--secret-file", secret, "--sub",   "bob",    "--ttl",
                        "60",    "--read",        "cli:", "--write", "cli:w:", NULL};
    is_int(run(tk, &out, 5000), 0, "token minted");
    gw_token_t t;
    char why[128] = "";
    size_t tl = strcspn(out, "\n");
    int vr = gw_token_verify(out, tl, "cli-secret-0123456789abcdef", 27, (int64_t)time(NULL), &t,
                             why, sizeof(why));
    is_int(vr, GW_TOKEN_OK, "it verifies under the secret (%s)", why);
    is(t.sub, "bob", "subject bob");
    ok(t.nread == 1 && t.read[0].len == 4 && !memcmp(t.read[0].prefix, "cli:", 4), "read cli:");
    ok(t.nwrite == 1 && t.write[0].len == 6 && !memcmp(t.write[0].prefix, "cli:w:", 6),
       "write cli:w:");
    ok(t.exp > (int64_t)time(NULL) + 50 && t.exp <= (int64_t)time(NULL) + 61, "expires in 60 s");
    gw_token_clear(&t);
    free(out);

    is_int(crdtd_stop(&srv, SIGTERM, 5000), 0, "crdtd exits cleanly");
    rm_rf(dir);
    free(dir);
    return done_testing();
}
