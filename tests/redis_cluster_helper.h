/* redis_cluster_helper.h - a real Redis Cluster of redis-server processes with crdt.so on
 * loopback, and a small cluster client that follows MOVED and ASK
 *
 * The nodes are rh_server_t (redis_helper.h): free ports whose cluster bus port (+10000) is free
 * too, one temporary directory each, killed by rh_cleanup even when a test fails. The cluster is
 * made by `redis-cli --cluster create ... --cluster-replicas 1 --cluster-yes`, with bounded waits
 * for cluster_state:ok on every node.
 *
 * The client keeps a slot -> node table from CLUSTER SLOTS, one connection per node, and retries a
 * command on MOVED (updating the table), ASK (ASKING first), TRYAGAIN and CLUSTERDOWN, with a
 * bounded number of attempts. A command whose connection broke is not retried: its outcome is
 * unknown, and the caller decides (rc_cmdv returns NULL and sets `lost`).
 */
#ifndef CRDT_REDIS_CLUSTER_HELPER_H
#define CRDT_REDIS_CLUSTER_HELPER_H

#include "redis_helper.h"

#include <stdbool.h>

#define RC_MAX_NODES 6

typedef struct rc_cluster {
    int n;
    rh_server_t node[RC_MAX_NODES];
} rc_cluster_t;

/* NULL when a cluster can be started, else why not (redis-server, redis-cli or the module). */
const char *rc_skip_reason(void);

/* Starts `primaries` primaries with `replicas` replicas each (at most RC_MAX_NODES nodes), node i
 * loading crdt.so with "node-id <i+1> <module_args>", creates the cluster and waits until every
 * node reports cluster_state:ok and knows every other node. 0, or -1 after a diag (the nodes
 * started are stopped). */
int rc_start(rc_cluster_t *cl, int primaries, int replicas, const char *module_args);

/* Waits (bounded, `seconds`) until every running node says cluster_state:ok and they agree on
 * who serves each slot. 0 or -1. */
int rc_wait_ok(rc_cluster_t *cl, int seconds);

/* The node listening on port, or -1. */
int rc_node_by_port(const rc_cluster_t *cl, int port);
/* The cluster node id (40 hex characters) of node i into out (41 bytes); 0 or -1. */
int rc_node_id(rc_cluster_t *cl, int i, char *out);
/* Index of the primary serving slot according to node `ask` (-1 if unknown). */
int rc_slot_owner(rc_cluster_t *cl, int ask, unsigned slot);
/* True when node i is a replica whose link to its primary is up. */
bool rc_is_synced_replica(rc_cluster_t *cl, int i);

void rc_stop(rc_cluster_t *cl);

typedef struct rc_conn {
    int port;
    redisContext *c;
} rc_conn_t;

typedef struct rc_client {
    rc_cluster_t *cl;
    int slot_port[16384];
    rc_conn_t conn[RC_MAX_NODES * 2];
    int nconn;
    bool lost;          /* the last command's connection broke: its outcome is unknown */
    int last_port;      /* the node that answered the last command */
    unsigned redirects; /* MOVED and ASK replies followed so far */
} rc_client_t;

/* Loads the slot table. 0 or -1. */
int rc_client_init(rc_client_t *c, rc_cluster_t *cl);
void rc_client_free(rc_client_t *c);
/* Reloads the slot table from the first node that answers CLUSTER SLOTS. */
int rc_refresh(rc_client_t *c);
/* Runs a command routed by its argument `keyidx` (0: any node), following redirects. The reply
 * (caller frees; may be an error reply), or NULL with c->lost set when the connection broke, or
 * NULL when the attempts ran out (a diag says why). */
redisReply *rc_cmdv(rc_client_t *c, int keyidx, int argc, const char **argv, const size_t *lens);
/* Printf-style command routed by the key given separately. */
redisReply *rc_cmd(rc_client_t *c, const char *key, const char *fmt, ...);
/* The connection to the node on port (connects on first use), or NULL. */
redisContext *rc_conn(rc_client_t *c, int port);

#endif /* CRDT_REDIS_CLUSTER_HELPER_H */
