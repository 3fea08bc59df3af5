/* fuzz_web.c - libFuzzer harness for what crdtd reads from browsers' requests besides the API:
 * the static files' URL paths (gateway/static.c) and origins, the --cors-origin list parser and
 * the classification of an Origin against a Host (gateway/cors.c).
 *
 * The first byte chooses: 0 the rest as a URL path; 1 the rest as a --cors-origin list; 2 the
 * rest as "origin\nhost" against a fixed list; 3 the rest as "--allowed-host list\nHost". A path
 * accepted must stay inside the directory (no "..", ".", dotfile or empty segment, no backslash or
 * control byte) and end in a file name; an origin accepted must be stored lower case, and must
 * then classify as listed; a host name accepted must be stored lower case, without a dot at
 * either end, and then be answered with or without a port; a Host answered holds no byte a name,
 * address or port does not. */
#include <ctype.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "cors.h"
#include "static.h"

static void check_path(const char *url)
{
    char out[256];
    if (gw_static_path(url, out, sizeof(out)))
        return;
    size_t n = strlen(out);
    if (!n || out[0] == '/' || out[n - 1] == '/' || strstr(out, "//") || strchr(out, '\\'))
        abort();
    for (const char *seg = out; seg;) {
        if (seg[0] == '.')
            abort(); /* ".", "..", dotfiles */
        const char *slash = strchr(seg, '/');
        seg = slash ? slash + 1 : NULL;
    }
    for (size_t i = 0; i < n; i++)
        if ((unsigned char)out[i] < 0x20 || out[i] == 0x7f)
            abort();
    (void)gw_static_type(out);
}

static void check_list(const char *list)
{
    gw_config_t c;
    memset(&c, 0, sizeof(c));
    char why[160];
    if (gw_cors_add(&c, list, why, sizeof(why))) {
        if (c.ncors != 0 || !why[0])
            abort(); /* nothing added, and a reason */
        return;
    }
    for (int i = 0; i < c.ncors; i++) {
        const char *o = c.cors_origins[i];
        if (strncmp(o, "http://", 7) && strncmp(o, "https://", 8))
            abort();
        const char *host = strstr(o, "://") + 3;
        if (!*host || strchr(host, '/') || strchr(o, ','))
            abort(); /* a host, no path, one origin */
        for (const char *p = o; *p; p++)
            if (isupper((unsigned char)*p))
                abort();
        if (gw_cors_classify(&c, o, "elsewhere") != GW_ORIGIN_LISTED)
            abort();
    }
}

static void check_hosts(char *s)
{
    char *nl = strchr(s, '\n');
    if (nl)
        *nl = '\0';
    gw_config_t c;
    memset(&c, 0, sizeof(c));
    char why[160];
    if (gw_hosts_add(&c, s, why, sizeof(why))) {
        if (c.nhosts != 0 || !why[0])
            abort();
    }
    for (int i = 0; i < c.nhosts; i++) {
        const char *h = c.allowed_hosts[i];
        size_t n = strlen(h);
        if (!n || h[0] == '.' || h[n - 1] == '.')
            abort();
        for (const char *p = h; *p; p++)
            if (!islower((unsigned char)*p) && !isdigit((unsigned char)*p) && !strchr("-_.", *p))
                abort();
        char with_port[GW_HOST_NAME_MAX + 8];
        snprintf(with_port, sizeof(with_port), "%s:80", h);
        if (!gw_host_allowed(&c, h) || !gw_host_allowed(&c, with_port))
            abort();
    }
    if (nl && gw_host_allowed(&c, nl + 1))
        for (const char *p = nl + 1; *p; p++)
            if (!isalnum((unsigned char)*p) && !strchr(".-_:[]", *p))
                abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1 || size > 4096)
        return 0;
    char *s = malloc(size);
    if (!s)
        return 0;
    memcpy(s, data + 1, size - 1);
    s[size - 1] = '\0';
    switch (data[0] % 4) {
    case 0: check_path(s); break;
    case 1: check_list(s); break;
    case 3: check_hosts(s); break;
    default: {
        static gw_config_t c;
        static int init;
        if (!init) {
            char why[160];
            if (gw_cors_add(&c, "http://a.example,https://b.example:8443,http://[::1]:9", why,
                            sizeof(why)))
                abort();
            init = 1;
        }
        char *nl = strchr(s, '\n');
        if (nl)
            *nl = '\0';
        gw_origin_t k = gw_cors_classify(&c, s, nl ? nl + 1 : NULL);
        if (k == GW_ORIGIN_NONE)
            abort(); /* an Origin header given is never "none" */
        break;
    }
    }
    free(s);
    return 0;
}
