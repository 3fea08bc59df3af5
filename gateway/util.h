/* util.h - the gateway's bottom layer: logging and clocks
 *
 * Layering inside gateway/ (each header includes only headers listed before it; no circles):
 *   util.h <- config.h, crypto.h, prom.h, jsonw.h <- metrics.h <- loop.h <- server.h <- http.h
 *   <- op.h <- sync.h, peer.h <- rest.h, roshi.h, status.h <- main.c
 * util.h includes nothing of gateway/.
 */
#ifndef CRDT_GW_UTIL_H
#define CRDT_GW_UTIL_H

#include <stdint.h>

/* One line to stderr: an ISO-8601 UTC timestamp with milliseconds, "crdtd: ", the message. */
void gw_log(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
#define GW_LOG(...) gw_log(__VA_ARGS__)

/* Monotonic clock, microseconds / milliseconds (crdt_store_tick's clock). */
uint64_t gw_now_us(void);
uint64_t gw_mono_ms(void);

#endif /* CRDT_GW_UTIL_H */
