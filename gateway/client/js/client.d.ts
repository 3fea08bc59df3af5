// client.d.ts - types of client.js: crdtd's JavaScript client (crdt.v1 over a WebSocket, a local
// replica in WebAssembly, an offline queue, persistence). docs/web-client.md is the guide.

import type { Bytes, CrdtWasm, Entry, Replica, Timestamp, TypeName } from './crdt-wasm.js';

/** Everything crdt-wasm.js exports (CrdtWasm, Replica, ...) is exported here too. */
export * from './crdt-wasm.js';

/** 'online': a session is open and said welcome; 'connecting': dialling or waiting to retry;
 * 'offline': not connected and not trying (before connect(), after disconnect() or close(), or
 * after a refusal that needs the application: a bad token with no getToken, 4003, 4009). */
export type Status = 'offline' | 'connecting' | 'online';
// (also 'offline' while the network's last event said offline: see ClientOptions.network)

/** The WebSocket constructor the client dials with: the browser's, Node 22's global one, or
 * NodeWebSocket from './node-ws.js' (Node 20 has no global WebSocket). */
export interface WebSocketLike {
  readonly readyState: number;
  readonly protocol: string;
  binaryType: string;
  send(data: string | ArrayBufferView | ArrayBuffer): void;
  close(code?: number, reason?: string): void;
  // handlers get an event with `data` (string | ArrayBuffer), a close event with `code` and
  // `reason`; typed loosely so the browser's WebSocket and NodeWebSocket both fit
  onopen: ((ev: any) => any) | null;
  onmessage: ((ev: any) => any) | null;
  onclose: ((ev: any) => any) | null;
  onerror: ((ev: any) => any) | null;
}
export type WebSocketConstructor = new (url: string, protocols?: string | string[]) => WebSocketLike;

export interface ClientOptions {
  /** ws:// or wss:// address of crdtd (any path; '/' is usual). */
  url: string;
  /** A loaded libcrdt module: `await CrdtWasm.load(...)`. */
  wasm: CrdtWasm;
  /** The session token (docs/protocol.md "Tokens"); omit it for a server without a secret. */
  token?: string | null;
  /** Fetches a fresh token: called before connecting when there is none, and when the server
   * refuses or ends the session for an invalid or expired token (close 4001). */
  getToken?: () => string | Promise<string>;
  /** The client id: 1..64 of [A-Za-z0-9._:-], stable across reloads (op ids are deduplicated
   * per client id). Default: the persisted one, else a new random id (then persisted). */
  clientId?: string;
  /** Where states, the cursor and unacknowledged ops are kept. Default: a MemoryStorage. */
  storage?: Storage;
  /** Default: globalThis.WebSocket (throws on connect when there is none). */
  WebSocket?: WebSocketConstructor;
  /** Binary crdt.v1 (subprotocol 'crdt.v1.bin'): deltas and states in libcrdt's binary encoding,
   * no JSON or base64. The only form this client speaks (the WebAssembly replica merges binary
   * encodings): true or absent; false is refused by Client.open. */
  binary?: boolean;
  /** Reconnect backoff: capped, jittered exponential (full jitter). Defaults 250 and 30000 ms. */
  backoff?: { minMs?: number; maxMs?: number };
  /** The bound of timelines made locally, as crdtd's --timeline-max-size (default 1000). */
  timelineMaxSize?: number;
  /** Connect as soon as the client is open. Default true. */
  autoConnect?: boolean;
  /** Milliseconds since the epoch (default Date.now): the replica's clock. */
  now?: () => number;
  /** Reads give members and values as 'utf8' strings (default) or 'bytes' (Uint8Array). */
  encoding?: 'utf8' | 'bytes';
  /** What gives the network's 'online'/'offline' events, its `onLine` read at open (an
   * EventTarget). Default: the browser's window (globalThis, with navigator.onLine) where there
   * is one, else none; null turns it off. 'offline' ends the session at once (status offline;
   * writes queue, nothing is sent or dialled), 'online' dials at once with the backoff reset
   * (a WebSocket may stay open long after the network went away, and DevTools' offline mode
   * stalls one without closing it). */
  network?: (EventTarget & { onLine?: boolean }) | null;
  /** Queued deltas per key are joined into one once the queue holds more than this many bytes
   * (default 65536); states persisted as appended deltas are rewritten whole once the deltas of
   * a key exceed its state's size (and 4096 bytes). */
  compactBytes?: number;
}

/** An error the client reports in an 'error' event (it keeps its data and carries on). */
export declare class ClientError extends Error {
  readonly name: 'ClientError';
  /** A crdt.v1 error code ('bad_request', 'unauthorized', 'wrong_type', ...) from the server, or
   * the client's own: 'protocol' (a malformed or unexpected server message), 'closed' (the
   * server closed the session with a code that needs the application: 4003, 4009),
   * 'token' (no token could be had, or the server refused it and there is no getToken),
   * 'storage' (persistence failed, or a stored record is unreadable: see Client.restoreErrors),
   * 'transport' (no WebSocket, or dialling failed), 'closed' also for a subscribe() still waiting
   * when the client is closed, 'unknown' (whenAcked of an id that is not pending), 'too_large' (a write over the server's
   * --ws-max-message: refused by the client, with its id). */
  readonly code: string;
  /** The op id or request id the error is about, when it has one. */
  readonly id?: number;
  /** The key it is about, when it has one. */
  readonly key?: Uint8Array;
}

export interface ChangeEvent<M = string> {
  /** The key in the form that round-trips: with encoding 'utf8' a string when its bytes are
   * UTF-8 text, else a Uint8Array; with 'bytes' always a Uint8Array. Any handle takes it back. */
  key: M | Uint8Array;
  keyBytes: Uint8Array;
  type: TypeName;
  /** 'local': a write of this client (or of another tab, through the leader); 'remote': from the
   * server. */
  source: 'local' | 'remote';
}

export interface AckEvent {
  id: number;
  seq: number;
  applied: boolean;
  duplicate: boolean;
}

export interface WelcomeEvent {
  node: number;
  seq: number;
  session: string;
  subject: string;
  expires: number;
}

export interface ClientEvents<M = string> {
  change: ChangeEvent<M>;
  status: { status: Status };
  pending: { count: number };
  ack: AckEvent;
  error: ClientError;
  welcome: WelcomeEvent;
  /** A subscribe's catch-up is complete (the server said subscribed). */
  synced: { keys: (M | Uint8Array)[]; prefixes: (M | Uint8Array)[]; cursor: number };
}

/** Keys and prefixes are any bytes: strings (their UTF-8) or Uint8Array. */
export interface Topics {
  keys?: Bytes[];
  prefixes?: Bytes[];
}

/** A page position of a timeline: the last entry of the page before (rangeByScore's `after`). */
export interface PageCursor {
  member: Uint8Array;
  score: number;
}

export interface TimelinePage<M = string> {
  entries: Entry<M>[];
  /** Where the next page starts, or null when this one is the last. */
  next: PageCursor | null;
}

/** Every write applies to the local replica at once and returns its op id (queued until the
 * server acknowledges it), or null when it changed nothing locally (nothing is sent). */
export type OpId = number | null;

export declare class TimelineHandle<M = string> {
  readonly key: Bytes;
  add(member: Bytes, score: number): OpId;
  remove(member: Bytes, score: number): OpId;
  /** The highest-scored entries first. */
  newest(count?: number): Entry<M>[];
  range(opts?: { offset?: number; count?: number }): Entry<M>[];
  /** Pages from the highest score down; pass the previous page's `next` as `after`. */
  page(opts?: { limit?: number; after?: PageCursor | null; max?: number; min?: number }): TimelinePage<M>;
  score(member: Bytes): number | undefined;
  readonly size: number;
  /** Deletes the timeline as seen here (observed-remove, docs/http-api.md "Deleting a key"):
   * the wasm delete's delta, queued and sent like any write; null when nothing was live. */
  delete(): OpId;
}

/** A gcounter's handle has no delete (a grow-only counter cannot go down). */
export declare class CounterHandle {
  readonly key: Bytes;
  incr(by?: number): OpId;
  value(): number;
}

export declare class PnCounterHandle extends CounterHandle {
  decr(by?: number): OpId;
  /** Brings the counter to 0 as seen here (what others add meanwhile survives); null when 0. */
  delete(): OpId;
}

export declare class RegisterHandle<M = string> {
  readonly key: Bytes;
  set(value: Bytes): OpId;
  get(): M | null;
  /** The value with the timestamp that won. */
  entry(): { value: M; ts: Timestamp } | null;
  /** Clears the register (a later set wins); null when it held no value. */
  delete(): OpId;
}

export declare class SetHandle<M = string> {
  readonly key: Bytes;
  add(member: Bytes): OpId;
  remove(member: Bytes): OpId;
  has(member: Bytes): boolean;
  members(): M[];
  readonly size: number;
  /** Removes every member seen here (observed-remove; an OR-set keeps adds not seen here);
   * null when none was live. */
  delete(): OpId;
}

export declare class Client<M extends string | Uint8Array = string> {
  /** Opens the storage, loads the persisted replica, cursor and queue, then connects (unless
   * autoConnect is false). Reads work at once, online or not. */
  static open<M extends string | Uint8Array = string>(opts: ClientOptions): Promise<Client<M>>;

  readonly status: Status;
  /** Local writes not yet acknowledged by the server. */
  readonly pending: number;
  readonly clientId: string;
  /** The last resume cursor received (0: none). */
  readonly cursor: number;
  /** The server node the cursor belongs to (0: none yet). */
  readonly node: number;
  /** 'solo' for a client of its own; with tabs.js, 'leader' (holds the connection) or
   * 'follower' (talks through the leader). */
  readonly role: 'solo' | 'leader' | 'follower';
  /** True when the open session speaks binary crdt.v1. */
  readonly binary: boolean;
  /** The local replica (reads of any key; writes through it are not sent: use the handles). */
  readonly replica: Replica<M>;
  /** The errors found while restoring the storage at open() (unreadable states or ops, which
   * are skipped). Each is also emitted as an 'error' event, after open() resolved, so a
   * listener attached right after open() gets them. */
  readonly restoreErrors: ClientError[];

  /** Starts connecting (and reconnecting, with backoff) until disconnect() or close(). */
  connect(): void;
  /** Closes the session and stops reconnecting; writes keep queueing. */
  disconnect(): void;
  /** Disconnects, writes what is unsaved to the storage, frees the replica. */
  close(): Promise<void>;

  /** Adds subscriptions (kept across reconnects and, persisted, across reloads). The promise
   * resolves when the server's `subscribed` has come for every topic given, on the current
   * session, i.e. their catch-up is in the replica (and its change events were emitted):
   * - online: after this subscribe's own `subscribed` (topics caught up already on this session
   *   resolve at once);
   * - offline or connecting (also after disconnect() or a dropped session): after the next
   *   session's resume has subscribed them again and the server said `subscribed`: it never
   *   resolves while offline, and waits as long as that takes;
   * - in a follower tab (tabs.js): at once, once the leader was asked.
   * It rejects with the server's ClientError when the server refuses the subscription (nothing
   * of it is kept), with code 'closed' when the client is closed first, and with a TypeError
   * for no topics or a bad key. Topics unsubscribed meanwhile are no longer waited for. */
  subscribe(topics: Topics): Promise<void>;
  unsubscribe(topics: Topics): Promise<void>;
  /** The subscriptions, as given. */
  subscriptions(): { keys: Uint8Array[]; prefixes: Uint8Array[] };

  timeline(key: Bytes): TimelineHandle<M>;
  gcounter(key: Bytes): CounterHandle;
  pncounter(key: Bytes): PnCounterHandle;
  register(key: Bytes): RegisterHandle<M>;
  lwwset(key: Bytes): SetHandle<M>;
  orset(key: Bytes): SetHandle<M>;
  /** The CRDT type a key holds locally, or undefined. */
  type(key: Bytes): TypeName | undefined;
  /** Keys held locally: with encoding 'bytes' as Uint8Array, else strings for UTF-8 keys and
   * Uint8Array for the others. */
  keys(): (M | Uint8Array)[];

  /** Resolves when the op is acknowledged (rejects with its ClientError when refused); an op
   * settled already (among the last 1024) answers at once. */
  whenAcked(id: number): Promise<AckEvent>;
  /** Resolves when nothing is pending (every queued op acknowledged or refused). */
  flush(): Promise<void>;
  /** Resolves when the status is 'online'. */
  whenOnline(): Promise<void>;

  on<E extends keyof ClientEvents<M>>(event: E, fn: (ev: ClientEvents<M>[E]) => void): () => void;
  off<E extends keyof ClientEvents<M>>(event: E, fn: (ev: ClientEvents<M>[E]) => void): void;
}

// ---- persistence ------------------------------------------------------------------------------

/** The client's persisted metadata. */
export interface StoredMeta {
  clientId: string;
  /** The replica id of the client's counter slots, OR-set dots and timestamps (decimal): a new
   * random one each time a client opens (never reused, so two tabs or a reload cannot collide);
   * recorded for diagnosis. */
  replicaId: string;
  nextOpId: number;
  cursor: number;
  node: number;
  /** Subscriptions whose first catch-up completed (resumed from `cursor`)... */
  keys: Uint8Array[];
  prefixes: Uint8Array[];
  /** ... and those still waiting for it (subscribed again from 0). */
  fresh?: { keys: Uint8Array[]; prefixes: Uint8Array[] };
}

/** A write the server has not acknowledged: a delta to join into key, sent with op id `id`. */
export interface StoredOp {
  id: number;
  key: Uint8Array;
  delta: Uint8Array;
}

export interface StoredKey {
  key: Uint8Array;
  /** The last whole state written (null: none), then the deltas appended since, in order. */
  state: Uint8Array | null;
  deltas: Uint8Array[];
}

export interface StoredData {
  meta: StoredMeta | null;
  keys: StoredKey[];
  ops: StoredOp[];
}

/** One atomic write (IndexedDB: one transaction). */
export interface StorageBatch {
  meta?: StoredMeta;
  /** Replace the key's state and drop its appended deltas. */
  states?: { key: Uint8Array; state: Uint8Array }[];
  /** Append to the key's deltas. */
  deltas?: { key: Uint8Array; delta: Uint8Array }[];
  /** Put (by id) ops, and delete ops by id. */
  ops?: StoredOp[];
  deleteOps?: number[];
}

/** What a client persists to. Two ship: MemoryStorage (here) and IndexedDBStorage
 * ('./idb-storage.js', browsers). */
export interface Storage {
  load(): Promise<StoredData>;
  write(batch: StorageBatch): Promise<void>;
  close(): Promise<void>;
}

/** Keeps everything in memory (lost on reload); the default. Counts what it holds. */
export declare class MemoryStorage implements Storage {
  constructor();
  load(): Promise<StoredData>;
  write(batch: StorageBatch): Promise<void>;
  close(): Promise<void>;
  /** Bytes of states, deltas and ops held. */
  readonly bytes: number;
  /** Batches written. */
  readonly writes: number;
}

// ---- binary crdt.v1 (docs/protocol.md, "Binary crdt.v1") --------------------------------------

export declare const BIN_PROTOCOL: 'crdt.v1.bin';
export type BinaryServerMessage =
  | { type: 'change'; cursor: number; full: boolean; seq: number; key: Uint8Array; bytes: Uint8Array }
  | { type: 'ack'; id: number; seq: number; applied: boolean; duplicate: boolean }
  | { type: 'subscribed'; id: number; cursor: number };
/** The binary codec: the client's messages, and a decoder of the server's (throws on anything
 * malformed). */
export declare const binary: {
  subscribe(id: number, keys: Uint8Array[], prefixes: Uint8Array[], since?: number): Uint8Array;
  unsubscribe(id: number, keys: Uint8Array[], prefixes: Uint8Array[]): Uint8Array;
  apply(id: number, key: Uint8Array, delta: Uint8Array): Uint8Array;
  decode(bytes: Uint8Array): BinaryServerMessage;
};
export declare const JSON_PROTOCOL: 'crdt.v1';
