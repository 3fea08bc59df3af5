/* cors.c - the --cors-origin allow-list: parsing it, and telling the origins of requests apart */
#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "cors.h"

/* Checks one origin (n bytes at s) and writes it lower case into out (GW_CORS_ORIGIN_MAX bytes).
 * 0, or -1 with why. */
static int origin_parse(const char *s, size_t n, char *out, char *why, size_t whylen)
{
    if (n >= GW_CORS_ORIGIN_MAX) {
        snprintf(why, whylen, "origin longer than %d bytes", GW_CORS_ORIGIN_MAX - 1);
        return -1;
    }
    size_t skip = 0;
    if (n > 7 && !strncasecmp(s, "http://", 7))
        skip = 7;
    else if (n > 8 && !strncasecmp(s, "https://", 8))
        skip = 8;
    if (!skip) {
        snprintf(why, whylen, "an origin is http://host[:port] or https://host[:port]");
        return -1;
    }
    const char *h = s + skip, *e = s + n;
    const char *port = NULL;
    if (*h == '[') { /* [v6 address] */
        const char *close = memchr(h, ']', (size_t)(e - h));
        if (!close || close == h + 1) {
            snprintf(why, whylen, "unterminated or empty [IPv6 address]");
            return -1;
        }
        for (const char *p = h + 1; p < close; p++)
            if (!isxdigit((unsigned char)*p) && *p != ':' && *p != '.') {
                snprintf(why, whylen, "bad character in an [IPv6 address]");
                return -1;
            }
        if (close + 1 < e && close[1] != ':') {
            snprintf(why, whylen,
                     "an origin has no path (no '/' after the host), e.g. "
                     "http://localhost:5173");
            return -1;
        }
        port = close + 1 < e ? close + 1 : NULL;
    } else {
        const char *p = h;
        for (; p < e && *p != ':'; p++)
            if (!isalnum((unsigned char)*p) && *p != '-' && *p != '.') {
                snprintf(why, whylen,
                         *p == '/' ? "an origin has no path (no '/' after the host), "
                                     "e.g. http://localhost:5173"
                                   : "bad character '%c' in the host",
                         *p);
                return -1;
            }
        if (p == h) {
            snprintf(why, whylen, "empty host");
            return -1;
        }
        port = p < e ? p : NULL;
    }
    if (port) { /* ":digits", 1..65535 */
        long v = 0;
        const char *d = port + 1;
        if (d == e) {
            snprintf(why, whylen, "empty port");
            return -1;
        }
        for (; d < e; d++) {
            if (!isdigit((unsigned char)*d) || (v = v * 10 + (*d - '0')) > 65535) {
                snprintf(why, whylen, "the port is a number 1..65535, with nothing after it");
                return -1;
            }
        }
        if (v == 0) {
            snprintf(why, whylen, "the port is a number 1..65535, with nothing after it");
            return -1;
        }
    }
    for (size_t i = 0; i < n; i++)
        out[i] = (char)tolower((unsigned char)s[i]);
    out[n] = '\0';
    return 0;
}

/* The next item of the comma-separated list at *p, without the spaces around it: its start and
 * length into *s and *n; *p moves past its comma, or to NULL after the last item. */
static void list_next(const char **p, const char **s, size_t *n)
{
    const char *comma = strchr(*p, ',');
    const char *b = *p, *e = comma ? comma : b + strlen(b);
    while (b < e && isspace((unsigned char)*b))
        b++;
    while (e > b && isspace((unsigned char)e[-1]))
        e--;
    *s = b;
    *n = (size_t)(e - b);
    *p = comma ? comma + 1 : NULL;
}

int gw_cors_add(gw_config_t *c, const char *list, char *why, size_t whylen)
{
    char parsed[GW_MAX_CORS][GW_CORS_ORIGIN_MAX];
    int n = 0;
    for (const char *p = list; p;) {
        const char *s;
        size_t len;
        list_next(&p, &s, &len);
        if (!len) {
            snprintf(why, whylen, "empty origin in the list");
            return -1;
        }
        if (c->ncors + n >= GW_MAX_CORS) {
            snprintf(why, whylen, "too many origins (at most %d)", GW_MAX_CORS);
            return -1;
        }
        if (origin_parse(s, len, parsed[n], why, whylen))
            return -1;
        n++;
    }
    for (int i = 0; i < n; i++)
        memcpy(c->cors_origins[c->ncors++], parsed[i], GW_CORS_ORIGIN_MAX);
    return 0;
}

/* Whether n bytes at s are a host name: labels of letters, digits, '-' and '_' (compose and
 * container names have them, and browsers send them) joined by '.', none empty, a trailing dot
 * allowed (dropped by the callers). */
static bool host_name_ok(const char *s, size_t n)
{
    if (n && s[n - 1] == '.')
        n--;
    if (!n || n >= GW_HOST_NAME_MAX)
        return false;
    size_t label = 0;
    for (size_t i = 0; i < n; i++) {
        unsigned char ch = (unsigned char)s[i];
        if (ch == '.') {
            if (!label)
                return false;
            label = 0;
        } else if (isalnum(ch) || ch == '-' || ch == '_') {
            if (++label > 63)
                return false;
        } else {
            return false;
        }
    }
    return label > 0;
}

int gw_hosts_add(gw_config_t *c, const char *list, char *why, size_t whylen)
{
    char parsed[GW_MAX_HOSTS][GW_HOST_NAME_MAX];
    int n = 0;
    for (const char *p = list; p;) {
        const char *s;
        size_t len;
        list_next(&p, &s, &len);
        if (c->nhosts + n >= GW_MAX_HOSTS) {
            snprintf(why, whylen, "too many host names (at most %d)", GW_MAX_HOSTS);
            return -1;
        }
        if (!host_name_ok(s, len)) {
            snprintf(why, whylen,
                     !len ? "empty host name in the list"
                          : "a host name is letters, digits, '-', '_' and '.', with no port "
                            "or scheme (e.g. crdtd.internal)");
            return -1;
        }
        len -= s[len - 1] == '.';
        for (size_t i = 0; i < len; i++)
            parsed[n][i] = (char)tolower((unsigned char)s[i]);
        parsed[n][len] = '\0';
        n++;
    }
    for (int i = 0; i < n; i++)
        memcpy(c->allowed_hosts[c->nhosts++], parsed[i], GW_HOST_NAME_MAX);
    return 0;
}

/* Whether n bytes at s are a dotted-decimal IPv4 address: four numbers 0..255. */
static bool is_ipv4(const char *s, size_t n)
{
    int parts = 0;
    size_t i = 0;
    while (i < n) {
        unsigned v = 0;
        size_t d = 0;
        for (; i < n && s[i] >= '0' && s[i] <= '9' && d < 4; i++, d++)
            v = v * 10 + (unsigned)(s[i] - '0');
        if (!d || d > 3 || v > 255)
            return false;
        parts++;
        if (i == n)
            break;
        if (s[i] != '.' || parts == 4)
            return false;
        i++;
        if (i == n)
            return false;
    }
    return parts == 4;
}

bool gw_host_allowed(const gw_config_t *c, const char *host)
{
    if (!host || !*host)
        return true;
    size_t n = strlen(host);
    /* an IPv6 address without brackets (two colons or more between hex digits, dots only in an
     * IPv4 tail): no name looks like that, and some clients send it so */
    size_t colons = 0;
    bool v6 = host[0] != '[', dot = false;
    for (const char *p = host; *p && v6; p++) {
        colons += *p == ':';
        dot = dot || *p == '.';
        v6 = isxdigit((unsigned char)*p) || (*p == ':' && !dot) || *p == '.';
    }
    if (v6 && colons >= 2)
        return true;
    const char *port = NULL;
    if (host[0] == '[') {
        /* an IPv6 literal: [hex digits, ':' and '.'] and perhaps :port */
        const char *close = strchr(host, ']');
        if (!close || close == host + 1)
            return false;
        for (const char *p = host + 1; p < close; p++)
            if (!isxdigit((unsigned char)*p) && *p != ':' && *p != '.')
                return false;
        port = close[1] ? close + 1 : NULL;
        if (port && *port != ':')
            return false;
        n = (size_t)(close + 1 - host);
    } else {
        const char *colon = strchr(host, ':');
        if (colon) {
            port = colon;
            n = (size_t)(colon - host);
        }
    }
    if (port) {
        if (!port[1] || strlen(port + 1) > 5)
            return false;
        for (const char *p = port + 1; *p; p++)
            if (*p < '0' || *p > '9')
                return false;
    }
    if (host[0] == '[')
        return true;
    if (n && host[n - 1] == '.')
        n--;
    if (is_ipv4(host, n))
        return true;
    if (!host_name_ok(host, n))
        return false;
    if ((n == 9 && !strncasecmp(host, "localhost", 9)) ||
        (n > 10 && !strncasecmp(host + n - 10, ".localhost", 10)))
        return true;
    for (int i = 0; i < c->nhosts; i++)
        if (strlen(c->allowed_hosts[i]) == n && !strncasecmp(host, c->allowed_hosts[i], n))
            return true;
    return false;
}

gw_origin_t gw_cors_classify(const gw_config_t *c, const char *origin, const char *host)
{
    if (!origin)
        return GW_ORIGIN_NONE;
    for (int i = 0; i < c->ncors; i++)
        if (!strcasecmp(origin, c->cors_origins[i]))
            return GW_ORIGIN_LISTED;
    const char *o = !strncasecmp(origin, "http://", 7)    ? origin + 7
                    : !strncasecmp(origin, "https://", 8) ? origin + 8
                                                          : NULL;
    /* the page's own origin: it names the host (and port) the request went to */
    if (o && host && *host && !strcasecmp(o, host))
        return GW_ORIGIN_SAME;
    return GW_ORIGIN_FOREIGN;
}
