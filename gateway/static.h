/* static.h - files served at / on the main listener: the demo app, or --static-dir (static.c)
 *
 * Layer: above http.h; main.c routes to it. No token is asked for these: they are the public
 * assets of a web app (the app's own requests to the API carry its token). The API's paths
 * (/v1/..., /healthz, /metrics) never reach it.
 */
#ifndef CRDT_GW_STATIC_H
#define CRDT_GW_STATIC_H

#include <stdbool.h>
#include <stddef.h>

#include "http.h"

/* Largest file served, bytes (read whole into the response). */
#define GW_STATIC_MAX_FILE (16u << 20)

/* Settles s->cfg.static_dir: --static-dir as given (must be a directory; "" serves nothing), or
 * else the demo app beside the binary (<dir of crdtd>/web in the build tree, or the installed
 * <prefix>/share/crdtd/web), or nothing. Logs what it serves. 0, or -1 after printing why. */
int gw_static_init(gw_server_t *s);

/* Whether x is for static.c: a GET (or HEAD) on the main listener, outside the API's paths,
 * while a directory is served. */
bool gw_static_wants(const gw_server_t *s, const gw_exchange_t *x);

/* Answers x from the directory (200 with ETag and Cache-Control: no-cache, 304 for a matching
 * If-None-Match, 500 for a file that cannot be read) and replies: true. A path refused or naming
 * no regular file is left alone (false): the API answers it, as any unknown path (a token first,
 * when tokens are needed; then 404). */
bool gw_static_serve(gw_server_t *s, gw_exchange_t *x);

/* The file a URL path names, relative to the directory, into out: "/" and any path ending in '/'
 * get "index.html" appended. -1 for a path refused: not starting with '/', an empty, "." or ".."
 * segment, a segment starting with '.', a backslash, a control byte, or too long for out. */
int gw_static_path(const char *url, char *out, size_t n);

/* The Content-Type of a file by its name's extension (application/octet-stream if unknown). */
const char *gw_static_type(const char *name);

#endif /* CRDT_GW_STATIC_H */
