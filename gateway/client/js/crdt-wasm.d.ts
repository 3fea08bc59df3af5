// crdt-wasm.d.ts - types of crdt-wasm.js: libcrdt in WebAssembly and the local replica

/** A key or member: text (sent as UTF-8) or raw bytes. */
export type Bytes = string | Uint8Array;
/** Replica ids are 1 .. 2^63-1: numbers while they are exact, bigints beyond. */
export type Id = number | bigint;
export type TypeName = 'gcounter' | 'pncounter' | 'lwwreg' | 'lwwset' | 'orset' | 'timeline';

/** A hybrid logical clock timestamp, ordered by (ms, logical, node). */
export interface Timestamp {
  ms: number;
  logical: number;
  node: Id;
}

export interface Entry<M = Uint8Array> {
  member: M;
  score: number;
}

export declare const CrdtCode: Readonly<{
  ENOMEM: -1;
  EINVAL: -2;
  ETYPE: -3;
  EOVERFLOW: -4;
  EDECODE: -5;
  ECLOCK: -6;
  ELIMIT: -7;
  EUNAVAIL: -8;
  ENOTSUP: -9;
}>;

/** A libcrdt failure; `offset` is where in an encoding decoding failed. */
export declare class CrdtError extends Error {
  readonly name: 'CrdtError';
  readonly code: number;
  readonly codeName: string;
  readonly offset?: number;
}

export type WasmSource = BufferSource | WebAssembly.Module | Response | URL | string;

export declare class CrdtWasm {
  /** Loads crdt.wasm from bytes, a Module, a Response, a URL or (Node) a file path. Refuses a
   * module that imports anything. */
  static load(source: WasmSource, opts?: { countHeap?: boolean }): Promise<CrdtWasm>;
  static readonly types: Readonly<Record<TypeName, number>>;
  create(type: 'timeline' | 6, opts?: { maxSize?: number }): TimelineObject;
  create(type: 'gcounter' | 'pncounter' | 1 | 2): CounterObject;
  create(type: 'lwwreg' | 3): RegisterObject;
  create(type: 'lwwset' | 4): LwwSetObject;
  create(type: 'orset' | 5): OrSetObject;
  create(type: TypeName | number, opts?: { maxSize?: number }): CrdtObject;
  /** A new object from libcrdt's binary encoding (CrdtError EDECODE if malformed). */
  decode(bytes: Uint8Array | ArrayBuffer): CrdtObject;
  clock(node: Id, opts?: { maxDriftMs?: number }): Hlc;
  /** Heap bytes held by objects, clocks and replicas (needs load(src, { countHeap: true })). */
  readonly heapBytes: number;
  readonly memoryBytes: number;
}

export declare class CrdtObject {
  readonly type: TypeName;
  readonly freed: boolean;
  readonly isEmpty: boolean;
  readonly memoryBytes: number;
  encode(): Uint8Array;
  /** Joins an encoded state or delta: true if this changed. On CrdtError nothing changed. */
  merge(bytes: Uint8Array | ArrayBuffer): boolean;
  mergeObject(other: CrdtObject): boolean;
  equals(other: CrdtObject): boolean;
  /** An observed-remove of the whole value (libcrdt's CRDT_MUT_DELETE): the delta, or null when
   * nothing live was there. lwwreg and lwwset need `ts`; a pncounter needs `replica`; a gcounter
   * throws CrdtError ENOTSUP. */
  delete(opts?: { ts?: Timestamp; replica?: number | bigint }): Uint8Array | null;
  /** Visible content: a live member or entry, a register value, a counter that is not 0. */
  readonly isLive: boolean;
  clone(): this;
  free(): void;
}

interface TextOpt {
  text?: boolean;
}

export declare class TimelineObject extends CrdtObject {
  /** The delta, or null when the write changed nothing. */
  add(member: Bytes, score: number): Uint8Array | null;
  remove(member: Bytes, score: number): Uint8Array | null;
  readonly card: number;
  readonly maxSize: number;
  score(member: Bytes): number | undefined;
  floor(opts: { text: true }): Entry<string> | null;
  floor(opts?: TextOpt): Entry | null;
  range(opts: { offset?: number; count?: number; text: true }): Entry<string>[];
  range(opts?: { offset?: number; count?: number; text?: boolean }): Entry[];
  newest(count: number, opts: { text: true }): Entry<string>[];
  newest(count?: number, opts?: TextOpt): Entry[];
  rangeByScore(opts: ScoreRange & { text: true }): Entry<string>[];
  rangeByScore(opts?: ScoreRange & TextOpt): Entry[];
}

export interface ScoreRange {
  max?: number;
  min?: number;
  /** Continue strictly after this entry (the last of the previous page). */
  after?: { member: Bytes; score: number };
  limit?: number;
}

export declare class CounterObject extends CrdtObject {
  incr(n: number | bigint, replica: Id): Uint8Array | null;
  value(): number;
  bigValue(): bigint;
}

export declare class RegisterObject extends CrdtObject {
  set(value: Bytes, ts: Timestamp): Uint8Array | null;
  get(opts: { text: true }): { value: string; ts: Timestamp } | null;
  get(opts?: TextOpt): { value: Uint8Array; ts: Timestamp } | null;
}

declare class SetObject extends CrdtObject {
  has(member: Bytes): boolean;
  readonly size: number;
  members(opts: { text: true }): string[];
  members(opts?: TextOpt): Uint8Array[];
}

export declare class LwwSetObject extends SetObject {
  add(member: Bytes, ts: Timestamp): Uint8Array | null;
  remove(member: Bytes, ts: Timestamp): Uint8Array | null;
}

export declare class OrSetObject extends SetObject {
  add(member: Bytes, replica: Id): Uint8Array | null;
  remove(member: Bytes): Uint8Array | null;
}

export declare class Hlc {
  tick(nowMs: number): Timestamp;
  /** CrdtError ECLOCK if ts is more than maxDriftMs ahead of nowMs. */
  recv(ts: Timestamp, nowMs: number): Timestamp;
  free(): void;
}

export interface ReplicaOptions {
  /** This replica's id: counter slots, OR-set dots and timestamps are its. */
  node: Id;
  /** Milliseconds since the epoch; default Date.now. */
  now?: () => number;
  maxDriftMs?: number;
  /** How reads give members and values: 'utf8' strings (default) or 'bytes'. */
  encoding?: 'utf8' | 'bytes';
}

/** A key is any bytes: a string (its UTF-8; a string with a lone surrogate is refused) or a
 * Uint8Array. The replica's id of a key: the key's text when its bytes are UTF-8, else U+DC00
 * and the bytes in hex (no text can be that). */
export declare function keyId(key: Bytes): string;
/** The bytes of a key or key id. */
export declare function keyBytes(key: Bytes): Uint8Array;
/** A key in the form that round-trips: a string when its bytes are UTF-8 text, else a Uint8Array. */
export declare function keyOut(key: Bytes): string | Uint8Array;

/** M: what reads give members as: string for encoding 'utf8' (the default), Uint8Array for
 * 'bytes' (`new Replica<Uint8Array>(wasm, { node, encoding: 'bytes' })`). */
export declare class Replica<M extends string | Uint8Array = string> {
  constructor(wasm: CrdtWasm, opts: ReplicaOptions);
  readonly node: Id;
  readonly wasm: CrdtWasm;
  readonly clock: Hlc;
  tick(): Timestamp;
  timeline(key: Bytes, opts?: { maxSize?: number }): TimelineView<M>;
  gcounter(key: Bytes): CounterView;
  pncounter(key: Bytes): PnCounterView;
  register(key: Bytes): RegisterView<M>;
  lwwset(key: Bytes): LwwSetView<M>;
  orset(key: Bytes): OrSetView<M>;
  /** Joins an encoded state or delta into key (made as its type if absent): true if changed. */
  merge(key: Bytes, bytes: Uint8Array | ArrayBuffer): boolean;
  encode(key: Bytes): Uint8Array | null;
  type(key: Bytes): TypeName | undefined;
  has(key: Bytes): boolean;
  /** Each key as a string (UTF-8 text) or a Uint8Array (other bytes). */
  keys(): (string | Uint8Array)[];
  /** Forgets key locally, frees its state (nothing is sent; a view's delete() is the CRDT
   * delete): true if it was there. */
  delete(key: Bytes): boolean;
  close(): void;
}

declare class View {
  encode(): Uint8Array;
}

export declare class TimelineView<M = string> extends View {
  add(member: Bytes, score: number): Uint8Array | null;
  remove(member: Bytes, score: number): Uint8Array | null;
  newest(count?: number): Entry<M>[];
  range(opts?: { offset?: number; count?: number }): Entry<M>[];
  rangeByScore(opts?: ScoreRange): Entry<M>[];
  score(member: Bytes): number | undefined;
  floor(): Entry<M> | null;
  readonly card: number;
  readonly maxSize: number;
  /** Observed-remove of every entry seen here (tombstones at their scores): the delta, or null
   * when none was live. */
  delete(): Uint8Array | null;
}

export declare class CounterView extends View {
  incr(n?: number | bigint): Uint8Array | null;
  value(): number;
  bigValue(): bigint;
}

export declare class PnCounterView extends CounterView {
  /** Subtracts the value seen here in this replica's slot (others' increments meanwhile
   * survive): the delta, or null when it was 0. */
  delete(): Uint8Array | null;
}

export declare class RegisterView<M = string> extends View {
  set(value: Bytes, opts?: { ts?: Timestamp }): Uint8Array | null;
  get(): { value: M; ts: Timestamp } | null;
  /** Clears the register (a tombstone at ts, default the clock's tick; a later set wins): the
   * delta, or null when it held no value. */
  delete(opts?: { ts?: Timestamp }): Uint8Array | null;
}

export declare class LwwSetView<M = string> extends View {
  add(member: Bytes, opts?: { ts?: Timestamp }): Uint8Array | null;
  remove(member: Bytes, opts?: { ts?: Timestamp }): Uint8Array | null;
  has(member: Bytes): boolean;
  members(): M[];
  readonly size: number;
  /** Tombstones every member seen here (at ts, default the clock's tick): the delta, or null. */
  delete(opts?: { ts?: Timestamp }): Uint8Array | null;
}

export declare class OrSetView<M = string> extends View {
  add(member: Bytes): Uint8Array | null;
  remove(member: Bytes): Uint8Array | null;
  has(member: Bytes): boolean;
  members(): M[];
  readonly size: number;
  /** Removes every dot seen here (adds not seen here survive: add wins): the delta, or null. */
  delete(): Uint8Array | null;
}
