/* cluster_helper.h - a cluster of real crdtd nodes on loopback whose peer links pass through fault
 * proxies, writers that record what was acknowledged, and the convergence checks
 *
 * Every directed link i -> j goes through its own proxy link[i][j]: node i is started with
 * --peer ws://127.0.0.1:<port of link[i][j]>, the proxy forwards to node j's --listen port. So a
 * test injects a fault on one link, or cuts a node off by faulting the links to and from it, and
 * restarts a node on a new port by retargeting its proxies only.
 *
 * Writers run one thread per node over one keep-alive HTTP connection, writing every type to keys
 * shared by all nodes (conflicts), with members unique per writer so the outcome of each
 * acknowledged write can be predicted: cl_check_writes then verifies that no acknowledged write was
 * lost in the converged state.
 */
#ifndef CRDT_CLUSTER_HELPER_H
#define CRDT_CLUSTER_HELPER_H

#include "faultproxy.h"
#include "http_client.h"

#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>

#define CL_MAX_NODES 3
#define CL_KEYS 6 /* keys per type */
#define CL_TYPES 6

typedef struct cl_node {
    crdtd_proc_t proc;
    char dir[600]; /* data directory, kept across restarts */
    bool running;
} cl_node_t;

typedef struct cluster {
    int n;
    char *tmp;
    char secret_file[600];
    const char *fsync;
    unsigned ae_secs;
    cl_node_t node[CL_MAX_NODES];
    fp_proxy_t *link[CL_MAX_NODES][CL_MAX_NODES]; /* link[i][j]: what node i dials to reach j */
    char pki[600]; /* "" or, with cl_start_tls, the directory of ca.pem and node-<id>.pem/.key */
} cluster_t;

/* Starts n (<= 3) nodes with ids 1..n, a full mesh of peers through proxies, the given fsync
 * policy and anti-entropy interval. 0 or -1 (everything started is stopped again). */
int cl_start(cluster_t *c, int n, const char *fsync, unsigned ae_secs);

/* cl_start over mutual TLS: pki holds ca.pem and node-<id>.pem/.key for ids 1..n (made with
 * scripts/tls-certs.sh). Each node serves HTTPS with its certificate (a copy in its directory,
 * tls.pem/tls.key), presents another copy (peer.pem/peer.key) when dialling, trusts ca.pem as
 * --peer-ca, refuses cleartext peers and dials wss:// through the proxies (which forward TLS
 * bytes as any others). The caller makes the HTTP client speak TLS (hc_tls_use(pki/ca.pem)). */
int cl_start_tls(cluster_t *c, int n, const char *fsync, unsigned ae_secs, const char *pki);

/* (Re)starts node i on its data directory and points the proxies to it at its new port. */
int cl_node_start(cluster_t *c, int i);

/* Stops node i with sig (SIGKILL: no flush; SIGTERM: clean), waits for its exit. */
void cl_node_stop(cluster_t *c, int i, int sig);

/* Stops every node and proxy, removes the temporary directory (unless keep, for a post-mortem). */
void cl_stop(cluster_t *c, bool keep);

/* Applies fn to every proxy of the links to and from node i. */
void cl_node_links(cluster_t *c, int i, void (*fn)(fp_proxy_t *, bool), bool on);

/* Polls every running node's /healthz until all digests (and key counts) are equal on two
 * consecutive polls, at most timeout_ms. Returns the ms it took, or -1 (then, for timeouts of 2 s
 * or more, each node's digest and /v1/peers are printed). */
long cl_wait_converged(cluster_t *c, int timeout_ms);

/* Compares every key the writers may have written, byte for byte ("binary" and "fingerprint")
 * across running nodes; returns the number of keys that differ (each printed as a TAP comment). */
int cl_compare_keys(cluster_t *c);

/* Lines of node i's stderr log (all its runs) that contain needle; -1 if unreadable. */
int cl_log_count(cluster_t *c, int i, const char *needle);

/* ---- writers -------------------------------------------------------------------------------- */

/* What one writer knows of each of its writes. */
enum { CL_ACKED = 1, CL_UNKNOWN = 2 };

typedef struct cl_member {
    int type, key; /* type index, key index */
    int add, rem;  /* 0 (not done), CL_ACKED or CL_UNKNOWN */
    double score;  /* timelines */
} cl_member_t;

typedef struct cl_writer {
    /* in */
    cluster_t *c;
    int node;    /* writes go to this node */
    int max_ops; /* stops after this many */
    unsigned seed;
    int pause_us; /* between ops */
    volatile int stop;
    /* out */
    pthread_t th;
    int ops, acked, unknown, errors; /* errors: answered with status != 200 */
    int64_t cnt_acked[2][CL_KEYS];   /* gcounter, pncounter: acknowledged sum */
    int64_t cnt_unk_pos[2][CL_KEYS], cnt_unk_neg[2][CL_KEYS];
    int nregs;
    struct {
        int key, seq;
    } regs[4096];                  /* register values written: "n<node>r<seq>" */
    int shared[CL_TYPES][CL_KEYS]; /* the member "shared", added by every writer, never removed */
    cl_member_t *mem;              /* members written, index = member number */
    int nmem, capmem;
    char last_error[256];
} cl_writer_t;

/* Starts a writer thread; cl_writer_join stops it (sets stop) and waits; cl_writer_wait waits for
 * it to finish its max_ops. */
int cl_writer_start(cl_writer_t *w);
void cl_writer_join(cl_writer_t *w);
void cl_writer_wait(cl_writer_t *w);
void cl_writer_free(cl_writer_t *w);

/* Checks that the converged state on node `on` holds every acknowledged write of the writers:
 * counters within [acked, acked + unknown], registers hold a written value, set and timeline
 * members present (with their score) or absent as their acknowledged adds and removes say; a
 * timeline member whose add was acknowledged may be absent only at or below the timeline's floor
 * (its bound dropped it: --timeline-max-size).
 * Returns the number of violations (each printed as a TAP comment); *checked counts the facts
 * checked, so a test can see the check was not vacuous. */
int cl_check_writes(cluster_t *c, int on, cl_writer_t *ws, int nw, int *checked);

/* Milliseconds on a monotonic clock. */
uint64_t cl_now_ms(void);

#endif /* CRDT_CLUSTER_HELPER_H */
