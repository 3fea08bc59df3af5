/* static.c - the demo app (or --static-dir) at /: safe paths, content types, ETags */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <unistd.h>

#include "static.h"
#include "util.h"

/* Where `cmake --install` puts the demo, relative to where it puts crdtd (gateway/CMakeLists.txt);
 * the build tree stages it in <dir of crdtd>/web. */
#ifndef CRDTD_WEB_REL
#define CRDTD_WEB_REL "../share/crdtd/web"
#endif

int gw_static_path(const char *url, char *out, size_t n)
{
    if (!url || url[0] != '/' || n == 0)
        return -1;
    size_t o = 0;
    const char *seg = url + 1;
    for (;;) {
        const char *e = seg;
        while (*e && *e != '/')
            e++;
        size_t len = (size_t)(e - seg);
        if (!*e && len == 0) /* the path ends in '/': its index */
            break;
        if (len == 0 || seg[0] == '.') /* "//", ".", "..", dotfiles */
            return -1;
        for (const char *p = seg; p < e; p++)
            if ((unsigned char)*p < 0x20 || *p == 0x7f || *p == '\\')
                return -1;
        if (o + len + 1 >= n)
            return -1;
        memcpy(out + o, seg, len);
        o += len;
        if (!*e) {
            out[o] = '\0';
            return 0;
        }
        out[o++] = '/';
        seg = e + 1;
    }
    static const char idx[] = "index.html";
    if (o + sizeof(idx) > n)
        return -1;
    memcpy(out + o, idx, sizeof(idx));
    return 0;
}

const char *gw_static_type(const char *name)
{
    static const struct {
        const char *ext, *type;
    } types[] = {
        {".html", "text/html; charset=utf-8"},
        {".js", "text/javascript; charset=utf-8"},
        {".mjs", "text/javascript; charset=utf-8"},
        {".css", "text/css; charset=utf-8"},
        {".json", "application/json"},
        {".map", "application/json"},
        {".webmanifest", "application/manifest+json"},
        {".wasm", "application/wasm"},
        {".svg", "image/svg+xml"},
        {".png", "image/png"},
        {".ico", "image/x-icon"},
        {".txt", "text/plain; charset=utf-8"},
        {".ts", "text/plain; charset=utf-8"},
    };
    const char *slash = strrchr(name, '/');
    const char *dot = strrchr(slash ? slash : name, '.');
    if (dot)
        for (size_t i = 0; i < sizeof(types) / sizeof(types[0]); i++)
            if (!strcasecmp(dot, types[i].ext))
                return types[i].type;
    return "application/octet-stream";
}

static bool is_dir(const char *path)
{
    struct stat st;
    return stat(path, &st) == 0 && S_ISDIR(st.st_mode);
}

int gw_static_init(gw_server_t *s)
{
    gw_config_t *c = &s->cfg;
    if (c->static_dir_set) {
        if (c->static_dir[0] && !is_dir(c->static_dir)) {
            fprintf(stderr, "crdtd: --static-dir %s: not a directory\n", c->static_dir);
            return -1;
        }
    } else {
        /* the demo beside the binary: the build tree's staging, then the installed copy */
        char exe[PATH_MAX];
        ssize_t n = readlink("/proc/self/exe", exe, sizeof(exe) - 1);
        c->static_dir[0] = '\0';
        if (n > 0) {
            exe[n] = '\0';
            char *slash = strrchr(exe, '/');
            if (slash)
                *slash = '\0';
            const char *cand[] = {"web", CRDTD_WEB_REL};
            for (size_t i = 0; i < 2 && !c->static_dir[0]; i++) {
                char dir[PATH_MAX + 64];
                snprintf(dir, sizeof(dir), "%s/%s/index.html", exe, cand[i]);
                if (access(dir, R_OK) != 0)
                    continue;
                snprintf(dir, sizeof(dir), "%s/%s", exe, cand[i]);
                char *real = realpath(dir, NULL);
                if (real && strlen(real) < sizeof(c->static_dir))
                    snprintf(c->static_dir, sizeof(c->static_dir), "%s", real);
                free(real);
            }
        }
    }
    if (c->static_dir[0])
        gw_log("serving the files of %s at /", c->static_dir);
    return 0;
}

bool gw_static_wants(const gw_server_t *s, const gw_exchange_t *x)
{
    const char *p = x->rq.path;
    if (!s->cfg.static_dir[0] || x->rq.roshi || x->rq.method != GW_GET || !p)
        return false;
    if (!strncmp(p, "/v1", 3) && (p[3] == '\0' || p[3] == '/'))
        return false;
    return strcmp(p, "/healthz") != 0 && strcmp(p, "/metrics") != 0;
}

/* Whether an If-None-Match list names etag (weak comparison: W/ prefixes ignored), or is "*". */
static bool etag_matches(const char *list, const char *etag)
{
    const char *p = list;
    while (*p) {
        while (*p == ' ' || *p == '\t' || *p == ',')
            p++;
        if (*p == '*')
            return true;
        if (!strncmp(p, "W/", 2))
            p += 2;
        const char *e = p;
        if (*e == '"') {
            const char *close = strchr(e + 1, '"');
            e = close ? close + 1 : e + strlen(e);
        } else {
            while (*e && *e != ',')
                e++;
        }
        size_t len = (size_t)(e - p);
        if (len && len == strlen(etag) && !memcmp(p, etag, len))
            return true;
        p = e;
        while (*p && *p != ',')
            p++;
    }
    return false;
}

bool gw_static_serve(gw_server_t *s, gw_exchange_t *x)
{
    gw_response_t *rs = &x->rs;
    rs->ep = GW_EP_OTHER;
    char rel[1024], path[sizeof(s->cfg.static_dir) + sizeof(rel) + 1];
    if (gw_static_path(x->rq.path, rel, sizeof(rel)))
        return false;
    snprintf(path, sizeof(path), "%s/%s", s->cfg.static_dir, rel);
    int fd = open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK);
    struct stat st;
    if (fd < 0 || fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
        if (fd >= 0)
            close(fd);
        return false;
    }
    if ((uint64_t)st.st_size > GW_STATIC_MAX_FILE) {
        close(fd);
        gw_respond_error(rs, 500, "%s is larger than the %u bytes a static file may have", rel,
                         GW_STATIC_MAX_FILE);
        gw_http_reply(x);
        return true;
    }
    char etag[sizeof(rs->etag)];
    snprintf(etag, sizeof(etag), "\"%" PRIx64 "-%" PRIx64 "-%lx\"", (uint64_t)st.st_size,
             (uint64_t)st.st_mtim.tv_sec, (unsigned long)st.st_mtim.tv_nsec);
    const char *type = gw_static_type(rel);
    if (x->rq.if_none_match && etag_matches(x->rq.if_none_match, etag)) {
        close(fd);
        gw_respond_text(rs, 304, NULL, "", 0);
    } else {
        /* read whole, straight into the response's buffer (the headroom in front of it) */
        size_t size = (size_t)st.st_size, got = 0;
        char *buf = malloc(GW_BODY_AT + size + 1);
        while (buf && got < size) {
            ssize_t r = read(fd, buf + GW_BODY_AT + got, size - got);
            if (r < 0 && errno == EINTR)
                continue;
            if (r <= 0)
                break;
            got += (size_t)r;
        }
        close(fd);
        if (!buf || got != size) {
            free(buf);
            gw_respond_error(rs, 500, "cannot read %s", rel);
            gw_http_reply(x);
            return true;
        }
        free(rs->buf);
        rs->buf = buf;
        rs->len = size;
        rs->status = 200;
        rs->content_type = type;
    }
    memcpy(rs->etag, etag, sizeof(etag));
    /* revalidated on every load (a 304 costs little); offline, the app's service worker serves */
    rs->cache_control = "no-cache";
    gw_http_reply(x);
    return true;
}
