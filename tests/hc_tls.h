/* hc_tls.h - HTTPS for the tests' HTTP client (http_client.h): a transport over OpenSSL that
 * trusts one CA file and checks the certificate names 127.0.0.1, for tests whose nodes serve TLS
 * (a cluster replicating over mutual TLS). Thread-safe: writer threads hold connections of
 * their own. */
#ifndef CRDT_HC_TLS_H
#define CRDT_HC_TLS_H

/* Makes every connection of hc_connect from now on TLS, trusting only ca_file. 0 or -1. */
int hc_tls_use(const char *ca_file);
/* Connections to port stay cleartext (a node without TLS next to nodes with it). */
void hc_tls_plain_port(int port);
/* Forgets the plain ports. */
void hc_tls_plain_clear(void);
/* Back to plain sockets; frees the TLS context (no connection may be open). */
void hc_tls_off(void);

#endif /* CRDT_HC_TLS_H */
