// tabs.d.ts - types of tabs.js: tabs of one origin share one connection

import type { Client, ClientOptions } from './client.js';

export interface SharedOptions extends ClientOptions {
  /** The BroadcastChannel and Web Lock name (default 'crdtd:' + url). Tabs with the same name
   * share one connection. */
  channel?: string;
  /** Default globalThis.BroadcastChannel. */
  BroadcastChannel?: typeof BroadcastChannel;
  /** Default navigator.locks when present; without it the leader is elected over the channel
   * (the oldest live tab leads; a leader that stops answering is replaced). */
  locks?: LockManager | null;
  /** How often a leader says it is alive and how long followers wait before electing another
   * (channel election only). Defaults 500 and 2000 ms. */
  heartbeatMs?: number;
  leaderTimeoutMs?: number;
}

/** A Client whose tab shares one connection with the other tabs of the origin: one leader holds
 * the WebSocket and the storage; followers keep a local replica (reads work at once), get every
 * change from the leader and send their writes through it. When the leader's tab closes, another
 * tab takes over. `client.role` says which this one is. */
export declare function openShared<M extends string | Uint8Array = string>(
  opts: SharedOptions,
): Promise<Client<M>>;
