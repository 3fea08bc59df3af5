/* ws_raw.h - a tiny WebSocket client over plain loopback sockets, for protocol tests
 *
 * Ours rather than libwebsockets' client: the tests must send what no well-behaved client sends
 * (binary frames, fragments split anywhere, oversized and truncated frames, no subprotocol) and see
 * the bytes and close codes exactly as the server sends them. Client frames are masked, as RFC 6455
 * requires. Every wait has a timeout, so a test never hangs on a silent server.
 */
#ifndef CRDT_WS_RAW_H
#define CRDT_WS_RAW_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef struct ws_raw {
    int fd;
    uint8_t *buf; /* received, not yet parsed */
    size_t len, cap;
    int close_code; /* of the close frame received, 0 before one; 1006 after EOF */
    char close_reason[128];
    bool no_pong;   /* set: pings are received and counted, not answered (a client gone deaf) */
    unsigned pings; /* pings received from the server */
} ws_raw_t;

#define WS_OP_CONT 0
#define WS_OP_TEXT 1
#define WS_OP_BINARY 2
#define WS_OP_CLOSE 8
#define WS_OP_PING 9
#define WS_OP_PONG 10

/* Connects to 127.0.0.1:port and upgrades with Sec-WebSocket-Protocol `protocol` (NULL: none).
 * Returns the HTTP status of the answer (101 when upgraded), or -1 (no connection/answer). */
int ws_open(ws_raw_t *w, int port, const char *protocol);
void ws_free(ws_raw_t *w);

/* One masked frame. 0 or -1. */
int ws_frame(ws_raw_t *w, int opcode, bool fin, const void *p, size_t n);
/* A text message in one frame. */
int ws_text(ws_raw_t *w, const char *s);
/* Raw bytes on the socket (for truncated frames and the like). */
int ws_bytes(ws_raw_t *w, const void *p, size_t n);

/* Receives one message (data fragments joined; pings counted, answered with pongs unless no_pong,
 * and skipped). Returns
 * its opcode (WS_OP_TEXT, WS_OP_BINARY, WS_OP_CLOSE: close_code/close_reason set), or -1 on
 * timeout, -2 on EOF. *out gets a malloc'd NUL-terminated copy of the payload (may be NULL). */
int ws_recv(ws_raw_t *w, int timeout_ms, char **out, size_t *outlen);

/* Receives text messages until one whose "type" is `type` (others are skipped); returns it
 * (malloc'd) or NULL on timeout/close. */
char *ws_wait_type(ws_raw_t *w, const char *type, int timeout_ms);

/* Waits for the close frame or EOF; returns the close code (1006 on EOF without one, -1 on
 * timeout). Messages before it are skipped. */
int ws_wait_close(ws_raw_t *w, int timeout_ms);

#endif /* CRDT_WS_RAW_H */
