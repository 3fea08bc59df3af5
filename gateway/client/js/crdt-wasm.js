// crdt-wasm.js - libcrdt in WebAssembly: the loader, object handles, and a local replica over them
//
// The one file that talks to crdt.wasm (built by scripts/build-wasm.sh from crdt/src: the merge
// rules and the binary codec are the C ones, so bytes made here are the bytes crdtd makes). The
// module imports nothing; time comes from the caller (Replica's `now` option).
//
//   const wasm = await CrdtWasm.load(urlOrPathOrBytes)
//   const r = new Replica(wasm, { node: 7 })
//   const delta = r.timeline('feed:1').add('post:1', 1700000000)   // Uint8Array, libcrdt encoding
//   other.merge('feed:1', delta)
//   r.timeline('feed:1').newest(50)                                 // [{ member, score }, ...]
//   r.close()
//
// Memory is explicit: objects, clocks and replicas hold wasm heap until free() / close().

const TYPES = Object.freeze({
  gcounter: 1,
  pncounter: 2,
  lwwreg: 3,
  lwwset: 4,
  orset: 5,
  timeline: 6,
});
const TYPE_NAMES = Object.freeze(Object.fromEntries(Object.entries(TYPES).map(([k, v]) => [v, k])));

/** The CRDT_E* codes of crdt.h. */
export const CrdtCode = Object.freeze({
  ENOMEM: -1,
  EINVAL: -2,
  ETYPE: -3,
  EOVERFLOW: -4,
  EDECODE: -5,
  ECLOCK: -6,
  ELIMIT: -7,
  EUNAVAIL: -8,
  ENOTSUP: -9,
});
const CODE_NAMES = Object.fromEntries(Object.entries(CrdtCode).map(([k, v]) => [v, k]));
// crdt_mut_kind_t
const INCR = 1;
const SET = 2;
const ADD = 3;
const REMOVE = 4;
const DELETE = 6;

/** A libcrdt failure: `code` is the CRDT_E* number, `codeName` its name ("EDECODE"), `offset`
 * the byte of an encoding where decoding failed (else undefined). */
export class CrdtError extends Error {
  constructor(code, message, offset) {
    super(message);
    this.name = 'CrdtError';
    this.code = code;
    this.codeName = CODE_NAMES[code] ?? 'EUNKNOWN';
    if (offset !== undefined) this.offset = offset;
  }
}

const utf8 = new TextEncoder();
const utf8d = new TextDecoder();
const U64_END = 1n << 64n;

function u64(v, what) {
  let b;
  try {
    b = BigInt(v);
  } catch {
    throw new TypeError(`${what}: expected an integer, got ${String(v)}`);
  }
  if (b < 0n || b >= U64_END) throw new RangeError(`${what}: ${b} is out of range 0 .. 2^64-1`);
  return b;
}

function i64(v, what) {
  let b;
  try {
    b = BigInt(v);
  } catch {
    throw new TypeError(`${what}: expected an integer, got ${String(v)}`);
  }
  if (b !== BigInt.asIntN(64, b)) throw new RangeError(`${what}: ${b} is out of the int64 range`);
  return b;
}

// a JS number when it is exact, else a bigint (replica ids reach 2^63-1)
const id = (b) => (b <= BigInt(Number.MAX_SAFE_INTEGER) ? Number(b) : b);

function tsArgs(ts) {
  if (!ts || typeof ts !== 'object') throw new TypeError('expected a timestamp {ms, logical, node}');
  const logical = ts.logical ?? 0;
  if (!Number.isInteger(logical) || logical < 0 || logical > 0xffffffff)
    throw new RangeError(`timestamp logical: ${logical} is not a uint32`);
  return [u64(ts.ms, 'timestamp ms'), logical, u64(ts.node, 'timestamp node')];
}

// ---- the module and its linear memory ------------------------------------------------------

async function moduleFrom(source) {
  if (source instanceof WebAssembly.Module) return source;
  if (source instanceof ArrayBuffer || ArrayBuffer.isView(source)) return WebAssembly.compile(source);
  if (typeof Response !== 'undefined' && source instanceof Response) {
    if (!source.ok) throw new Error(`crdt.wasm: HTTP ${source.status} from ${source.url}`);
    // compiled while it downloads where the server says what it is
    if (WebAssembly.compileStreaming && source.headers.get('content-type') === 'application/wasm')
      return WebAssembly.compileStreaming(source);
    return WebAssembly.compile(await source.arrayBuffer());
  }
  if (typeof source === 'string' || source instanceof URL) {
    let url = source instanceof URL ? source : null;
    const inBrowser = typeof location !== 'undefined' && typeof process === 'undefined';
    if (!url) {
      try {
        url = new URL(source, inBrowser ? location.href : undefined);
      } catch {
        url = null; // a file system path (Node)
      }
    }
    if (!url || url.protocol === 'file:') {
      const { readFile } = await import('node:fs/promises');
      return WebAssembly.compile(await readFile(url ?? source));
    }
    return moduleFrom(await fetch(url));
  }
  throw new TypeError('CrdtWasm.load: expected bytes, a WebAssembly.Module, a Response, a URL or a path');
}

/** The loaded module: makes objects and clocks, and holds the one input buffer they share. */
export class CrdtWasm {
  #x;
  #mem;
  #u8 = null;
  #dv = null;
  #u32 = null;
  #outRef = 0; // address of the result buffer's {data, len}
  #inPtr = 0;
  #inCap = 0;
  #inView = null; // the input buffer as a Uint8Array

  /** Loads crdt.wasm from bytes, a WebAssembly.Module, a fetch Response, a URL (fetched; file:
   * URLs are read in Node) or, in Node, a file path. `countHeap: true` keeps the count of
   * heapBytes (for leak checks; it costs some speed). */
  static async load(source, { countHeap = false } = {}) {
    const module = await moduleFrom(source);
    const imports = WebAssembly.Module.imports(module);
    if (imports.length)
      throw new Error(`crdt.wasm: unexpected imports ${imports.map((i) => `${i.module}.${i.name}`).join(', ')}`);
    const instance = await WebAssembly.instantiate(module, {});
    return new CrdtWasm(instance, { countHeap });
  }

  constructor(instance, { countHeap = false } = {}) {
    this.#x = instance.exports;
    this.#mem = this.#x.memory;
    if (typeof this.#x.crdt_wasm_obj_new !== 'function') throw new Error('crdt.wasm: not libcrdt');
    this.#x._initialize?.();
    this.#x.crdt_wasm_init(countHeap ? 1 : 0);
    // the seeds of libcrdt's member indexes: linear memory has no ASLR to vary them per page.
    // Optional: a crdt.wasm cached from before the salt (a service worker's cache updated file by
    // file) still works, as it did then.
    const salt = globalThis.crypto.getRandomValues(new Uint32Array(2));
    this.#x.crdt_wasm_hash_salt?.(salt[0], salt[1]);
    this.#outRef = this.#x.crdt_wasm_out_ref() >>> 0;
    this.#reserve(256); // so an empty input still has a real address
  }

  /** Type names and tags: { gcounter: 1, ..., timeline: 6 }. */
  static get types() {
    return TYPES;
  }

  /** A new empty object of `type` ('timeline', 'gcounter', ... or the tag); a timeline keeps at
   * most `maxSize` entries (0 or absent: unbounded). Free it with free(). */
  create(type, { maxSize = 0 } = {}) {
    const tag = typeof type === 'number' ? type : TYPES[type];
    if (!TYPE_NAMES[tag]) throw new TypeError(`unknown CRDT type ${String(type)}`);
    if (!Number.isInteger(maxSize) || maxSize < 0 || maxSize > 0xffffffff)
      throw new RangeError(`maxSize: ${maxSize} is not a uint32`);
    const p = this.#x.crdt_wasm_obj_new(tag, maxSize) >>> 0;
    if (!p) throw new CrdtError(CrdtCode.ENOMEM, 'create: out of memory');
    return this._wrap(p, tag);
  }

  /** A new object from libcrdt's binary encoding; CrdtError (EDECODE, with offset) if the bytes
   * are malformed, truncated or corrupted. */
  decode(bytes) {
    const len = this._input(bytes, 'encoding');
    const p = this.#x.crdt_wasm_obj_decode(this.#inPtr, len) >>> 0;
    if (!p) {
      throw this._error(this._dv.getInt32(this._outPtr(), true), 'decode');
    }
    return this._wrap(p, this.#x.crdt_wasm_obj_type(p));
  }

  /** A hybrid logical clock for replica `node` (1 .. 2^63-1); remote timestamps more than
   * maxDriftMs ahead of now are refused. Free it with free(). */
  clock(node, { maxDriftMs = 60000 } = {}) {
    const n = u64(node, 'node');
    const p = this.#x.crdt_wasm_hlc_new(n, u64(maxDriftMs, 'maxDriftMs')) >>> 0;
    if (!p) throw new CrdtError(CrdtCode.EINVAL, `clock: node ${n} is not a replica id (1 .. 2^63-1)`);
    return new Hlc(this, p);
  }

  /** Bytes of wasm heap held by objects, clocks and replicas (the module's own buffers not
   * counted): for leak checks and memory budgets. Needs load(..., { countHeap: true }). */
  get heapBytes() {
    const n = this.#x.crdt_wasm_heap_live(this.#inPtr) >>> 0;
    if (n === 0xffffffff) throw new Error('heapBytes: load crdt.wasm with { countHeap: true }');
    return n;
  }

  /** Bytes of the linear memory (it only grows). */
  get memoryBytes() {
    return this.#mem.buffer.byteLength;
  }

  // ---- internals shared with the object classes (not part of the API) ----

  get _x() {
    return this.#x;
  }

  get _inPtr() {
    return this.#inPtr;
  }

  // Views of the linear memory, made again when it has grown (growing detaches the old buffer,
  // whose views then have length 0: a cheaper test than comparing buffers on every call).
  _view() {
    if (this.#u8 === null || this.#u8.byteLength === 0) {
      const buf = this.#mem.buffer;
      this.#u8 = new Uint8Array(buf);
      this.#dv = new DataView(buf);
      this.#u32 = new Uint32Array(buf);
      this.#inView = this.#inPtr ? new Uint8Array(buf, this.#inPtr, this.#inCap) : null;
    }
    return this.#u8;
  }

  get _dv() {
    this._view();
    return this.#dv;
  }

  #reserve(n) {
    if (this.#inPtr) this.#x.crdt_wasm_free(this.#inPtr);
    const cap = Math.max(n, 256, Math.min(this.#inCap * 2, 1 << 20));
    this.#inPtr = this.#x.crdt_wasm_alloc(cap) >>> 0;
    this.#inCap = this.#inPtr ? cap : 0;
    if (!this.#inPtr) throw new CrdtError(CrdtCode.ENOMEM, 'out of memory for an input');
    this.#u8 = null; // the allocation may have grown the memory; _view makes #inView anew
    this._view();
  }

  // Copies a string (as UTF-8) or bytes into the input buffer at _inPtr; returns the length.
  _input(v, what = 'member') {
    if (typeof v === 'string') {
      if (v.length * 3 > this.#inCap) this.#reserve(v.length * 3);
      else this._view();
      const n = v.length;
      if (n <= 64) {
        // short ASCII (most keys and members) by hand: no call out, no result object
        const u8 = this.#inView;
        let i = 0;
        for (; i < n; i++) {
          const c = v.charCodeAt(i);
          if (c >= 0x80) break;
          u8[i] = c;
        }
        if (i === n) return n;
      }
      return utf8.encodeInto(v, this.#inView).written;
    }
    if (!(v instanceof Uint8Array)) {
      if (v instanceof ArrayBuffer) v = new Uint8Array(v);
      else throw new TypeError(`${what}: expected a string or a Uint8Array`);
    }
    if (v.length > this.#inCap) this.#reserve(v.length);
    this._view().set(v, this.#inPtr);
    return v.length;
  }

  // The result buffer of the last call: its address and length.
  _outPtr() {
    this._view();
    return this.#u32[this.#outRef >>> 2];
  }

  _outLen() {
    this._view();
    return this.#u32[(this.#outRef >>> 2) + 1];
  }

  _outBytes() {
    const p = this._outPtr();
    return this.#u8.slice(p, p + this.#u32[(this.#outRef >>> 2) + 1]);
  }

  _cstr(p) {
    const u8 = this._view();
    let e = p;
    while (u8[e] !== 0) e++;
    return utf8d.decode(u8.subarray(p, e));
  }

  _error(rc, what) {
    let text = this._cstr(this.#x.crdt_wasm_strerror(rc) >>> 0);
    let offset;
    if (rc === CrdtCode.EDECODE || rc === CrdtCode.ETYPE) {
      const t = this._cstr(this.#x.crdt_wasm_err_text() >>> 0);
      if (t) {
        text = t;
        offset = this.#x.crdt_wasm_err_offset() >>> 0;
      }
    }
    return new CrdtError(rc, `${what}: ${text}`, offset);
  }

  _check(rc, what) {
    if (rc < 0) throw this._error(rc, what);
    return rc;
  }

  // One write (crdt_wasm_apply, a crdt_mut_t): the delta's encoding, or null when it changed
  // nothing. bytes: the member or value (null for counters); ts: {ms, logical, node} or null.
  _apply(p, type, kind, bytes, score, n, ts, replica, what) {
    let ms = 0n;
    let logical = 0;
    let node = 0n;
    if (ts !== null) [ms, logical, node] = tsArgs(ts);
    const len = bytes === null ? 0 : this._input(bytes, kind === SET ? 'value' : 'member');
    const rc = this.#x.crdt_wasm_apply(p, type, kind, this.#inPtr, len, score, n, ms, logical, node, replica);
    if (rc < 0) throw this._error(rc, what);
    return rc === 0 ? null : this._outBytes();
  }

  // A timeline add or remove (crdt_wasm_timeline_write: no 64-bit arguments, so no BigInts made
  // and converted per call): the delta's encoding, or null.
  _tlWrite(p, kind, member, score, what) {
    const len = this._input(member);
    const rc = this.#x.crdt_wasm_timeline_write(p, kind, this.#inPtr, len, score);
    if (rc < 0) throw this._error(rc, what);
    return rc === 0 ? null : this._outBytes();
  }

  _wrap(p, tag) {
    const C = CLASSES[tag];
    return new C(this, p, tag);
  }
}

// ---- objects ---------------------------------------------------------------------------------

/** A libcrdt object in wasm memory. Every type has these; free() releases it (idempotent). */
export class CrdtObject {
  #w;
  #p;
  #type;

  constructor(wasm, p, tag) {
    this.#w = wasm;
    this.#p = p;
    this.#type = tag;
  }

  /** 'timeline', 'gcounter', ... */
  get type() {
    return TYPE_NAMES[this.#type];
  }

  /** Deletes what this object holds (libcrdt's CRDT_MUT_DELETE, an observed-remove: writes it
   * has not seen survive a later join): the delta, or null when nothing live was there. LWW
   * types (lwwreg, lwwset) need `ts` {ms, logical, node} after what they hold; a pncounter
   * needs the `replica` whose slots take the subtraction; a gcounter throws ENOTSUP. */
  delete({ ts = null, replica = 0 } = {}) {
    return this.#w._apply(this.#p, this.#type, DELETE, null, 0, 0n, ts, u64(replica, 'replica'),
      `${this.type} delete`);
  }

  /** True when it has visible content: a live member or entry, a register value, a counter
   * that is not 0 (crdt_obj_is_live). */
  get isLive() {
    return this.#w._x.crdt_wasm_is_live(this.#p) === 1;
  }

  get freed() {
    return this.#p === 0;
  }

  get _w() {
    return this.#w;
  }

  get _p() {
    if (this.#p === 0) throw new Error(`this ${this.type} was freed`);
    return this.#p;
  }

  /** libcrdt's binary encoding of the state (canonical: equal states, identical bytes). */
  encode() {
    const w = this.#w;
    w._check(w._x.crdt_wasm_obj_encode(this._p), 'encode');
    return w._outBytes();
  }

  /** Joins an encoded state or delta into this object: true if it changed. CrdtError (EDECODE
   * with the offset, or ETYPE) leaves the object as it was. */
  merge(bytes) {
    const w = this.#w;
    const p = this._p;
    const len = w._input(bytes, 'encoding');
    return w._check(w._x.crdt_wasm_obj_merge_encoded(p, w._inPtr, len), 'merge') === 1;
  }

  /** Joins another object of the same type into this one: true if it changed. */
  mergeObject(other) {
    const w = this.#w;
    return w._check(w._x.crdt_wasm_obj_merge(this._p, other._p), 'merge') === 1;
  }

  /** True when both hold the same state. */
  equals(other) {
    return this.#w._x.crdt_wasm_obj_equal(this._p, other._p) === 1;
  }

  /** True for the bottom state (nothing ever written). */
  get isEmpty() {
    return this.#w._x.crdt_wasm_obj_is_empty(this._p) === 1;
  }

  /** A new, independent copy (free it too). */
  clone() {
    const p = this.#w._x.crdt_wasm_obj_clone(this._p) >>> 0;
    if (!p) throw new CrdtError(CrdtCode.ENOMEM, 'clone: out of memory');
    return this.#w._wrap(p, this.#type);
  }

  /** Bytes of wasm heap this object holds. */
  get memoryBytes() {
    return this.#w._x.crdt_wasm_obj_memory(this._p) >>> 0;
  }

  free() {
    if (this.#p !== 0) {
      this.#w._x.crdt_wasm_obj_free(this.#p);
      this.#p = 0;
    }
  }
}

// Timeline entries and set members out of the result buffer: score f64, u32 length, bytes.
function readEntries(w, n, text) {
  const p0 = w._outPtr();
  const u8 = w._view();
  const dv = w._dv;
  const res = new Array(n);
  let p = p0;
  for (let i = 0; i < n; i++) {
    const score = dv.getFloat64(p, true);
    const len = dv.getUint32(p + 8, true);
    const m = text ? utf8d.decode(u8.subarray(p + 12, p + 12 + len)) : u8.slice(p + 12, p + 12 + len);
    res[i] = { member: m, score };
    p += 12 + len;
  }
  return res;
}

function readMembers(w, n, text) {
  const p0 = w._outPtr();
  const u8 = w._view();
  const dv = w._dv;
  const res = new Array(n);
  let p = p0;
  for (let i = 0; i < n; i++) {
    const len = dv.getUint32(p, true);
    res[i] = text ? utf8d.decode(u8.subarray(p + 4, p + 4 + len)) : u8.slice(p + 4, p + 4 + len);
    p += 4 + len;
  }
  return res;
}

function readTs(dv, p) {
  return {
    ms: Number(dv.getBigUint64(p, true)),
    logical: dv.getUint32(p + 8, true),
    node: id(dv.getBigUint64(p + 12, true)),
  };
}

/** Roshi-style bounded LWW timeline: entries (member, score), newest first. Reads take
 * `text: true` to give members as strings (UTF-8) rather than Uint8Array. */
export class TimelineObject extends CrdtObject {
  /** Adds member at score: the delta, or null if the write lost or fell below the floor. */
  add(member, score) {
    return this._w._tlWrite(this._p, ADD, member, score, 'timeline add');
  }

  /** Removes member at score (leaves a tombstone): the delta, or null. */
  remove(member, score) {
    return this._w._tlWrite(this._p, REMOVE, member, score, 'timeline remove');
  }

  /** Live entries. */
  get card() {
    return this._w._x.crdt_wasm_timeline_card(this._p) >>> 0;
  }

  /** The bound (0: unbounded). */
  get maxSize() {
    return this._w._x.crdt_wasm_timeline_max_size(this._p) >>> 0;
  }

  /** The score of a live member, or undefined. */
  score(member) {
    const w = this._w;
    const p = this._p;
    const len = w._input(member);
    if (w._check(w._x.crdt_wasm_timeline_score(p, w._inPtr, len), 'timeline score') !== 1) return undefined;
    return w._dv.getFloat64(w._outPtr(), true);
  }

  /** The highest entry ever dropped by the bound (writes at or below it are ignored), or null. */
  floor({ text = false } = {}) {
    const w = this._w;
    const n = w._check(w._x.crdt_wasm_timeline_floor(this._p), 'timeline floor');
    return n ? readEntries(w, 1, text)[0] : null;
  }

  /** Up to `count` live entries newest first after skipping `offset`. */
  range({ offset = 0, count = 50, text = false } = {}) {
    if (!Number.isInteger(offset) || offset < 0) throw new RangeError(`offset: ${offset}`);
    if (!Number.isInteger(count) || count < 0) throw new RangeError(`count: ${count}`);
    const w = this._w;
    const n = w._check(
      w._x.crdt_wasm_timeline_range(this._p, Math.min(offset, 0xffffffff), Math.min(count, 0x7fffffff)),
      'timeline range');
    return readEntries(w, n, text);
  }

  /** The newest `count` live entries. */
  newest(count = 50, { text = false } = {}) {
    return this.range({ offset: 0, count, text });
  }

  /** Up to `limit` live entries with min <= score <= max, newest first, continuing strictly after
   * `after` (an entry {member, score}: the last of the previous page) when given. */
  rangeByScore({ max = Infinity, min = -Infinity, after, limit = 50, text = false } = {}) {
    if (!Number.isInteger(limit) || limit < 0) throw new RangeError(`limit: ${limit}`);
    const w = this._w;
    const p = this._p;
    let len = 0;
    let afterScore = 0;
    if (after) {
      if (typeof after.score !== 'number') throw new TypeError('after: expected an entry {member, score}');
      len = w._input(after.member, 'after.member');
      afterScore = after.score;
    }
    const n = w._check(
      w._x.crdt_wasm_timeline_range_by_score(p, max, min, after ? 1 : 0, afterScore, w._inPtr, len,
        Math.min(limit, 0x7fffffff)),
      'timeline rangeByScore');
    return readEntries(w, n, text);
  }
}

/** G-Counter (increments only) or PN-Counter: one slot per replica. */
export class CounterObject extends CrdtObject {
  /** Adds n as `replica`: the delta, or null for n = 0. A G-Counter refuses n < 0. */
  incr(n, replica) {
    const p = this._p;
    const r = u64(replica, 'replica');
    const v = i64(n, 'n');
    const g = this.type === 'gcounter';
    if (g && v < 0n) throw new RangeError(`a gcounter only grows: incr(${v})`);
    return this._w._apply(p, g ? 1 : 2, INCR, null, 0, v, null, r, `${this.type} incr`);
  }

  /** The value as a bigint (CrdtError EOVERFLOW if merged slots leave int64). */
  bigValue() {
    const w = this._w;
    w._check(w._x.crdt_wasm_counter_value(this._p), 'counter value');
    return w._dv.getBigInt64(w._outPtr(), true);
  }

  /** The value as a number; RangeError beyond 2^53 (use bigValue there). */
  value() {
    const v = this.bigValue();
    if (v > BigInt(Number.MAX_SAFE_INTEGER) || v < BigInt(Number.MIN_SAFE_INTEGER))
      throw new RangeError(`counter value ${v} is beyond a safe integer: use bigValue()`);
    return Number(v);
  }
}

/** LWW-register: the value with the greatest timestamp wins. */
export class RegisterObject extends CrdtObject {
  /** Sets value (string or bytes) at timestamp ts {ms, logical, node}: the delta, or null. */
  set(value, ts) {
    return this._w._apply(this._p, 3, SET, value, 0, 0n, ts, 0n, 'register set');
  }

  /** { value, ts } or null when never set; value a string with `text: true`. */
  get({ text = false } = {}) {
    const w = this._w;
    if (w._check(w._x.crdt_wasm_lwwreg_get(this._p), 'register get') !== 1) return null;
    const p = w._outPtr();
    const n = w._outLen();
    const u8 = w._view();
    const ts = readTs(w._dv, p);
    const value = text ? utf8d.decode(u8.subarray(p + 20, p + n)) : u8.slice(p + 20, p + n);
    return { value, ts };
  }
}

class SetObject extends CrdtObject {
  /** True if member is live. */
  has(member) {
    const w = this._w;
    const p = this._p;
    const len = w._input(member);
    return w._check(w._x.crdt_wasm_set_contains(p, w._inPtr, len), 'set has') === 1;
  }

  /** Live members. */
  get size() {
    return this._w._x.crdt_wasm_set_size(this._p) >>> 0;
  }

  /** Live members in ascending bytewise order. */
  members({ text = false } = {}) {
    const w = this._w;
    const n = w._check(w._x.crdt_wasm_set_members(this._p), 'set members');
    return readMembers(w, n, text);
  }
}

/** LWW-element-set (roshi rules: the greater timestamp wins, equal timestamps remove wins). */
export class LwwSetObject extends SetObject {
  add(member, ts) {
    return this._w._apply(this._p, 4, ADD, member, 0, 0n, ts, 0n, 'lwwset add');
  }

  remove(member, ts) {
    return this._w._apply(this._p, 4, REMOVE, member, 0, 0n, ts, 0n, 'lwwset remove');
  }
}

/** Add-wins OR-set: a remove takes away the adds it has seen; concurrent adds survive. */
export class OrSetObject extends SetObject {
  add(member, replica) {
    return this._w._apply(this._p, 5, ADD, member, 0, 0n, null, u64(replica, 'replica'), 'orset add');
  }

  remove(member) {
    return this._w._apply(this._p, 5, REMOVE, member, 0, 0n, null, 0n, 'orset remove');
  }
}

const CLASSES = {
  1: CounterObject,
  2: CounterObject,
  3: RegisterObject,
  4: LwwSetObject,
  5: OrSetObject,
  6: TimelineObject,
};

/** Hybrid logical clock: timestamps {ms, logical, node} ordered by (ms, logical, node). */
export class Hlc {
  #w;
  #p;

  constructor(wasm, p) {
    this.#w = wasm;
    this.#p = p;
  }

  #ptr() {
    if (this.#p === 0) throw new Error('this clock was freed');
    return this.#p;
  }

  /** A local event at nowMs: a timestamp above every one issued or received. */
  tick(nowMs) {
    const w = this.#w;
    w._check(w._x.crdt_wasm_hlc_tick(this.#ptr(), u64(Math.floor(nowMs), 'now')), 'clock tick');
    return readTs(w._dv, w._outPtr());
  }

  /** Receipt of a remote timestamp at nowMs: advances past it and returns the new local
   * timestamp; CrdtError ECLOCK (clock unchanged) if it is too far ahead. */
  recv(ts, nowMs) {
    const w = this.#w;
    const [ms, logical, node] = tsArgs(ts);
    w._check(w._x.crdt_wasm_hlc_recv(this.#ptr(), u64(Math.floor(nowMs), 'now'), ms, logical, node),
      'clock recv');
    return readTs(w._dv, w._outPtr());
  }

  free() {
    if (this.#p !== 0) {
      this.#w._x.crdt_wasm_hlc_free(this.#p);
      this.#p = 0;
    }
  }
}

// ---- the local replica -----------------------------------------------------------------------

// Keys are bytes. A key whose bytes are UTF-8 text is held (and given back) as that string; any
// other key as an id that no text can be: U+DC00 (a lone surrogate, which a well-formed string
// never holds) then the bytes in hex. keyId() makes the id of a string or a Uint8Array, keyBytes()
// gives the bytes back, keyOut() the form that round-trips (the string, or the Uint8Array).
const keyText = new TextDecoder('utf-8', { fatal: true, ignoreBOM: true });
const keyUtf8 = new TextEncoder();
const LONE_SURROGATE = /[\uD800-\uDBFF](?![\uDC00-\uDFFF])|(?<![\uD800-\uDBFF])[\uDC00-\uDFFF]/;
const BIN_ID = /^\uDC00(?:[0-9a-f]{2})*$/;

const hex2 = (u8) => {
  let s = '';
  for (let i = 0; i < u8.length; i++) s += (u8[i] < 16 ? '0' : '') + u8[i].toString(16);
  return s;
};

/** The replica's id of a key: the string itself for text, else U+DC00 + hex of the bytes. A
 * string that is not well-formed UTF-16 (other than such an id) is refused: its UTF-8 would not
 * round-trip. */
export function keyId(key) {
  if (typeof key === 'string') {
    // every call that names a key comes here (a replica's merge of each delta): the regular
    // expressions only for a string with a surrogate in it, which text keys rarely hold
    let i = 0;
    while (i < key.length && (key.charCodeAt(i) & 0xf800) !== 0xd800) i++;
    if (i === key.length) return key;
    if (LONE_SURROGATE.test(key) && !BIN_ID.test(key)) throw new TypeError('key: a string with a lone surrogate (not UTF-8 text); pass a Uint8Array');
    return key;
  }
  if (key instanceof Uint8Array) {
    try {
      return keyText.decode(key);
    } catch {
      return '\uDC00' + hex2(key);
    }
  }
  throw new TypeError('key: expected a string or a Uint8Array');
}

/** The bytes of a key (or of a key id). */
export function keyBytes(key) {
  if (key instanceof Uint8Array) return key;
  const k = keyId(key);
  if (!BIN_ID.test(k)) return keyUtf8.encode(k);
  const out = new Uint8Array((k.length - 1) / 2);
  for (let i = 0; i < out.length; i++) out[i] = parseInt(k.substr(1 + 2 * i, 2), 16);
  return out;
}

/** A key in the form that round-trips: the string for UTF-8 text, else its Uint8Array. */
export function keyOut(key) {
  const k = keyId(key);
  return BIN_ID.test(k) ? keyBytes(k) : k;
}

const keyOf = keyId;
const keyName = (k) => (BIN_ID.test(k) ? `0x${k.slice(1)}` : k);

// The timestamp of a cleared register (a delete's tombstone), which get() does not give: read
// from its encoding (docs/encoding.md: version, type 3, varint length, then state 2 and the hlc).
function clearedTs(enc) {
  let at = 2;
  const varint = () => {
    let v = 0n;
    let shift = 0n;
    for (;;) {
      const c = enc[at++];
      if (c === undefined) return null;
      v |= BigInt(c & 0x7f) << shift;
      if (!(c & 0x80)) return v;
      shift += 7n;
    }
  };
  if (enc[1] !== 3 || varint() === null || enc[at++] !== 2) return null;
  const ms = varint();
  const logical = varint();
  const node = varint();
  if (ms === null || logical === null || node === null) return null;
  return { ms: Number(ms), logical: Number(logical), node: id(node) };
}

/** Keys to CRDT objects in one wasm instance, with the replica's clock and node id: the local
 * state a client reads offline and writes optimistically. Every write returns its delta
 * (libcrdt's binary encoding, a Uint8Array) for the caller to send; merge() joins what came. */
export class Replica {
  #w;
  #node;
  #now;
  #text;
  #clock;
  #keys = new Map(); // key -> { obj, view }

  /**
   * @param wasm a CrdtWasm
   * @param opts.node this replica's id (1 .. 2^63-1): counter slots, OR-set dots, timestamps
   * @param opts.now () => milliseconds since the epoch (default Date.now)
   * @param opts.maxDriftMs how far ahead a remote timestamp may be (default 60000)
   * @param opts.encoding 'utf8' (default: members and values read back as strings) or 'bytes'
   */
  constructor(wasm, { node, now = Date.now, maxDriftMs = 60000, encoding = 'utf8' } = {}) {
    if (!(wasm instanceof CrdtWasm)) throw new TypeError('Replica: expected a CrdtWasm');
    if (encoding !== 'utf8' && encoding !== 'bytes') throw new TypeError(`encoding: ${encoding}`);
    if (typeof now !== 'function') throw new TypeError('now: expected a function');
    this.#w = wasm;
    this.#clock = wasm.clock(node, { maxDriftMs });
    this.#node = id(u64(node, 'node'));
    this.#now = now;
    this.#text = encoding === 'utf8';
  }

  get node() {
    return this.#node;
  }

  get wasm() {
    return this.#w;
  }

  /** The replica's clock (Hlc); tick() stamps a write with now(). */
  get clock() {
    return this.#clock;
  }

  /** A fresh timestamp for a local write. */
  tick() {
    return this.#clock.tick(this.#now());
  }

  get _text() {
    return this.#text;
  }

  #entry(key, type, opts) {
    const k = keyOf(key);
    let e = this.#keys.get(k);
    if (!e) {
      if (!this.#clock) throw new Error('this replica was closed');
      e = { obj: this.#w.create(type, opts), view: null };
      this.#keys.set(k, e);
    } else if (e.obj.type !== type) {
      throw new CrdtError(CrdtCode.ETYPE, `key ${keyName(k)} holds a ${e.obj.type}, not a ${type}`);
    }
    return e;
  }

  #view(key, type, View, opts) {
    const e = this.#entry(key, type, opts);
    return (e.view ??= new View(this, e.obj));
  }

  /** The timeline at key (made with the bound maxSize if new; an existing one keeps its bound). */
  timeline(key, { maxSize = 0 } = {}) {
    return this.#view(key, 'timeline', TimelineView, { maxSize });
  }

  /** The G-Counter at key (increments only). */
  gcounter(key) {
    return this.#view(key, 'gcounter', CounterView);
  }

  /** The PN-Counter at key. */
  pncounter(key) {
    return this.#view(key, 'pncounter', PnCounterView);
  }

  /** The LWW-register at key. */
  register(key) {
    return this.#view(key, 'lwwreg', RegisterView);
  }

  /** The LWW-element-set at key. */
  lwwset(key) {
    return this.#view(key, 'lwwset', LwwSetView);
  }

  /** The add-wins OR-set at key. */
  orset(key) {
    return this.#view(key, 'orset', OrSetView);
  }

  /** Joins an encoded state or delta (from crdtd or another replica) into key, creating it as the
   * encoding's type if absent: true if the state changed. A malformed, truncated or corrupted
   * encoding, or one of another type than the key holds, throws CrdtError and changes nothing.
   * A register's timestamp advances this replica's clock, so later local writes win over it. */
  merge(key, bytes) {
    const k = keyOf(key);
    let e = this.#keys.get(k);
    let changed;
    if (!e) {
      if (!this.#clock) throw new Error('this replica was closed');
      const obj = this.#w.decode(bytes);
      changed = !obj.isEmpty;
      this.#keys.set(k, (e = { obj, view: null }));
    } else {
      changed = e.obj.merge(bytes);
    }
    const ts = changed && e.obj instanceof RegisterObject ? (e.obj.get()?.ts ?? clearedTs(e.obj.encode())) : null;
    if (ts) {
      try {
        this.#clock.recv(ts, this.#now());
      } catch (err) {
        if (!(err instanceof CrdtError && err.code === CrdtCode.ECLOCK)) throw err;
      }
    }
    return changed;
  }

  /** libcrdt's encoding of the state at key, or null if there is none. */
  encode(key) {
    const e = this.#keys.get(keyOf(key));
    return e ? e.obj.encode() : null;
  }

  /** The type name at key, or undefined. */
  type(key) {
    return this.#keys.get(keyOf(key))?.obj.type;
  }

  has(key) {
    return this.#keys.has(keyOf(key));
  }

  /** The keys held, each as a string (UTF-8 text) or a Uint8Array (any other bytes). */
  keys() {
    return [...this.#keys.keys()].map(keyOut);
  }

  /** Forgets key locally and frees its state: true if it was there. */
  delete(key) {
    const k = keyOf(key);
    const e = this.#keys.get(k);
    if (!e) return false;
    e.obj.free();
    this.#keys.delete(k);
    return true;
  }

  /** Frees every state and the clock; the replica is unusable afterwards. Idempotent. */
  close() {
    for (const e of this.#keys.values()) e.obj.free();
    this.#keys.clear();
    this.#clock?.free();
    this.#clock = null;
  }
}

class View {
  constructor(replica, obj) {
    this._r = replica;
    this._o = obj;
  }

  /** libcrdt's encoding of this key's state. */
  encode() {
    return this._o.encode();
  }
}

/** A timeline of a replica: writes return deltas; reads give members as the replica's encoding. */
export class TimelineView extends View {
  add(member, score) {
    return this._o.add(member, score);
  }

  remove(member, score) {
    return this._o.remove(member, score);
  }

  newest(count = 50) {
    return this._o.range({ offset: 0, count, text: this._r._text });
  }

  range({ offset = 0, count = 50 } = {}) {
    return this._o.range({ offset, count, text: this._r._text });
  }

  rangeByScore({ max, min, after, limit } = {}) {
    return this._o.rangeByScore({ max, min, after, limit, text: this._r._text });
  }

  score(member) {
    return this._o.score(member);
  }

  floor() {
    return this._o.floor({ text: this._r._text });
  }

  /** Deletes every entry seen here (observed-remove: tombstones at their scores): the delta,
   * or null when nothing was live. */
  delete() {
    return this._o.delete();
  }

  get card() {
    return this._o.card;
  }

  get maxSize() {
    return this._o.maxSize;
  }
}

/** A counter of a replica: increments go into the replica's own slot. */
export class CounterView extends View {
  incr(n = 1) {
    return this._o.incr(n, this._r.node);
  }

  value() {
    return this._o.value();
  }

  bigValue() {
    return this._o.bigValue();
  }
}

/** A PN-counter of a replica: delete() subtracts the value seen here in the replica's slot. */
export class PnCounterView extends CounterView {
  /** Brings the counter to 0 as seen here (what others add meanwhile survives): the delta, or
   * null when it was 0. */
  delete() {
    return this._o.delete({ replica: this._r.node });
  }
}

/** A register of a replica: set() is stamped by the replica's clock unless ts is given. */
export class RegisterView extends View {
  set(value, { ts } = {}) {
    return this._o.set(value, ts ?? this._r.tick());
  }

  /** { value, ts } or null. */
  get() {
    return this._o.get({ text: this._r._text });
  }

  /** Clears the register (a tombstone stamped by the clock unless ts is given; a later set
   * wins): the delta, or null when it held no value. */
  delete({ ts } = {}) {
    return this._o.delete({ ts: ts ?? this._r.tick() });
  }
}

class SetView extends View {
  has(member) {
    return this._o.has(member);
  }

  members() {
    return this._o.members({ text: this._r._text });
  }

  get size() {
    return this._o.size;
  }
}

/** A LWW-set of a replica: writes stamped by the replica's clock unless ts is given. */
export class LwwSetView extends SetView {
  add(member, { ts } = {}) {
    return this._o.add(member, ts ?? this._r.tick());
  }

  remove(member, { ts } = {}) {
    return this._o.remove(member, ts ?? this._r.tick());
  }

  /** Removes every member seen here (tombstones stamped by the clock unless ts is given): the
   * delta, or null when none was live. */
  delete({ ts } = {}) {
    return this._o.delete({ ts: ts ?? this._r.tick() });
  }
}

/** An OR-set of a replica: adds carry the replica's dots. */
export class OrSetView extends SetView {
  add(member) {
    return this._o.add(member, this._r.node);
  }

  remove(member) {
    return this._o.remove(member);
  }

  /** Removes every dot seen here (adds not seen here survive: add wins): the delta, or null when
   * no member was live. */
  delete() {
    return this._o.delete();
  }
}
