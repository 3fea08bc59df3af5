// node-ws.js - a small WebSocket client (RFC 6455) for Node, over node:http and node:https: the
// part of the browser's WebSocket API the crdtd client uses. Node 20 has no global WebSocket;
// this keeps the package free of dependencies. Text and binary messages, fragmented messages,
// pings answered with pongs, close codes and reasons, a bound on incoming messages.
import { createHash, randomBytes } from 'node:crypto';
import http from 'node:http';
import https from 'node:https';

const CONNECTING = 0;
const OPEN = 1;
const CLOSING = 2;
const CLOSED = 3;
const GUID = '258EAFA5-E914-47DA-95CA-C5AB0DC85B11';
const decoder = new TextDecoder('utf-8', { fatal: true });

export class NodeWebSocket {
  static CONNECTING = CONNECTING;
  static OPEN = OPEN;
  static CLOSING = CLOSING;
  static CLOSED = CLOSED;

  constructor(url, protocols = [], { headers = {}, maxMessage = 64 * 1024 * 1024, ca, rejectUnauthorized } = {}) {
    this.url = String(url);
    this.readyState = CONNECTING;
    this.protocol = '';
    this.binaryType = 'arraybuffer';
    this.onopen = this.onmessage = this.onclose = this.onerror = null;
    this._max = maxMessage;
    this._buf = Buffer.alloc(0);
    this._frags = null;
    this._fragOp = 0;
    this._fragLen = 0;
    this._closeSent = false;
    this._closed = false;
    const u = new URL(this.url);
    if (u.protocol !== 'ws:' && u.protocol !== 'wss:')
      throw new SyntaxError(`NodeWebSocket: ${this.url}: expected ws:// or wss://`);
    const protos = typeof protocols === 'string' ? [protocols] : [...protocols];
    const key = randomBytes(16).toString('base64');
    const lib = u.protocol === 'wss:' ? https : http;
    const req = lib.request({
      host: u.hostname.replace(/^\[|\]$/g, ''),
      port: u.port || (u.protocol === 'wss:' ? 443 : 80),
      path: (u.pathname || '/') + u.search,
      // wss://: node:tls's certificate checks (a private CA with `ca`)
      ...(u.protocol === 'wss:' ? { servername: u.hostname, ...(ca ? { ca } : {}), ...(rejectUnauthorized === false ? { rejectUnauthorized: false } : {}) } : {}),
      headers: {
        Connection: 'Upgrade',
        Upgrade: 'websocket',
        'Sec-WebSocket-Version': '13',
        'Sec-WebSocket-Key': key,
        ...(protos.length ? { 'Sec-WebSocket-Protocol': protos.join(', ') } : {}),
        ...headers,
      },
    });
    this._req = req;
    req.on('upgrade', (res, socket, head) => {
      const accept = createHash('sha1').update(key + GUID).digest('base64');
      const proto = res.headers['sec-websocket-protocol'] || '';
      if (res.headers['sec-websocket-accept'] !== accept || (proto && !protos.includes(proto))) {
        socket.destroy();
        this._fail(new Error('NodeWebSocket: bad handshake answer'), 1006);
        return;
      }
      this._socket = socket;
      this.protocol = proto;
      this.readyState = OPEN;
      socket.setNoDelay(true);
      socket.on('data', (d) => this._data(d));
      socket.on('error', (e) => this._fail(e, 1006));
      socket.on('close', () => this._finish(this._closeCode ?? 1006, this._closeReason ?? ''));
      this.onopen?.({ type: 'open' });
      if (head && head.length) this._data(head);
    });
    req.on('response', (res) => {
      res.resume();
      this._fail(new Error(`NodeWebSocket: the server answered HTTP ${res.statusCode}`), 1006);
    });
    req.on('error', (e) => this._fail(e, 1006));
    req.end();
  }

  send(data) {
    if (this.readyState !== OPEN) {
      if (this.readyState === CONNECTING) throw new Error('NodeWebSocket: not open yet');
      return; // as browsers do: sending on a closing socket is silently dropped
    }
    if (typeof data === 'string') this._frame(1, Buffer.from(data, 'utf8'));
    else if (data instanceof ArrayBuffer) this._frame(2, Buffer.from(data));
    else if (ArrayBuffer.isView(data)) this._frame(2, Buffer.from(data.buffer, data.byteOffset, data.byteLength));
    else throw new TypeError('NodeWebSocket: send takes a string, an ArrayBuffer or a view');
  }

  close(code = 1000, reason = '') {
    if (this.readyState === CLOSED || this.readyState === CLOSING) return;
    if (this.readyState === CONNECTING) {
      this._req.destroy();
      this._fail(null, 1006);
      return;
    }
    this.readyState = CLOSING;
    this._sendClose(code, reason);
    this._timer = setTimeout(() => this._socket?.destroy(), 2000);
    this._timer.unref?.();
  }

  _sendClose(code, reason) {
    if (this._closeSent) return;
    this._closeSent = true;
    const r = Buffer.from(reason, 'utf8');
    const p = Buffer.alloc(2 + r.length);
    p.writeUInt16BE(code, 0);
    r.copy(p, 2);
    this._frame(8, p);
  }

  _frame(op, payload) {
    const n = payload.length;
    const head = Buffer.alloc(n < 126 ? 6 : n < 65536 ? 8 : 14);
    head[0] = 0x80 | op;
    let at = 2;
    if (n < 126) head[1] = 0x80 | n;
    else if (n < 65536) {
      head[1] = 0x80 | 126;
      head.writeUInt16BE(n, 2);
      at = 4;
    } else {
      head[1] = 0x80 | 127;
      head.writeBigUInt64BE(BigInt(n), 2);
      at = 10;
    }
    const mask = randomBytes(4);
    mask.copy(head, at);
    const body = Buffer.allocUnsafe(n);
    for (let i = 0; i < n; i++) body[i] = payload[i] ^ mask[i & 3];
    this._socket.write(Buffer.concat([head, body]));
  }

  _data(d) {
    this._buf = this._buf.length ? Buffer.concat([this._buf, d]) : d;
    while (this._buf.length >= 2 && !this._closed) {
      const b = this._buf;
      const fin = (b[0] & 0x80) !== 0;
      const op = b[0] & 0x0f;
      if (b[0] & 0x70 || b[1] & 0x80) return this._protocolError('reserved bits or a masked frame');
      let n = b[1] & 0x7f;
      let at = 2;
      if (n === 126) {
        if (b.length < 4) return;
        n = b.readUInt16BE(2);
        at = 4;
      } else if (n === 127) {
        if (b.length < 10) return;
        const big = b.readBigUInt64BE(2);
        if (big > BigInt(this._max)) return this._protocolError('a frame over the bound', 1009);
        n = Number(big);
        at = 10;
      }
      if (n > this._max) return this._protocolError('a frame over the bound', 1009);
      if (b.length < at + n) return;
      const payload = b.subarray(at, at + n);
      this._buf = b.subarray(at + n);
      this._onFrame(fin, op, Buffer.from(payload));
    }
  }

  _onFrame(fin, op, payload) {
    if (op >= 8) {
      if (!fin || payload.length > 125) return this._protocolError('a bad control frame');
      if (op === 9) {
        if (this.readyState === OPEN) this._frame(10, payload);
      } else if (op === 8) {
        const code = payload.length >= 2 ? payload.readUInt16BE(0) : 1005;
        const reason = payload.length > 2 ? payload.subarray(2).toString('utf8') : '';
        this._closeCode = code;
        this._closeReason = reason;
        if (!this._closeSent) this._sendClose(code === 1005 ? 1000 : code, '');
        this.readyState = CLOSING;
        this._socket.end();
      } else if (op !== 10) return this._protocolError(`unknown opcode ${op}`);
      return;
    }
    if (op === 0) {
      if (!this._frags) return this._protocolError('a continuation without a message');
    } else if (op === 1 || op === 2) {
      if (this._frags) return this._protocolError('a new message inside a fragmented one');
      this._frags = [];
      this._fragOp = op;
      this._fragLen = 0;
    } else return this._protocolError(`unknown opcode ${op}`);
    this._frags.push(payload);
    this._fragLen += payload.length;
    if (this._fragLen > this._max) return this._protocolError('a message over the bound', 1009);
    if (!fin) return;
    const all = this._frags.length === 1 ? this._frags[0] : Buffer.concat(this._frags);
    const kind = this._fragOp;
    this._frags = null;
    let data;
    if (kind === 1) {
      try {
        data = decoder.decode(all);
      } catch {
        return this._protocolError('a text message that is not UTF-8', 1007);
      }
    } else {
      data = all.buffer.slice(all.byteOffset, all.byteOffset + all.length);
    }
    if (this.readyState === OPEN) this.onmessage?.({ type: 'message', data });
  }

  _protocolError(why, code = 1002) {
    this._closeCode = 1006;
    this._closeReason = why;
    this.onerror?.({ type: 'error', message: `NodeWebSocket: ${why}` });
    try {
      this._sendClose(code, '');
    } catch {
      /* the socket may be gone */
    }
    this._socket?.destroy();
  }

  _fail(err, code) {
    if (this._closed) return;
    if (err) this.onerror?.({ type: 'error', error: err, message: err.message });
    this._finish(code, '');
  }

  _finish(code, reason) {
    if (this._closed) return;
    this._closed = true;
    clearTimeout(this._timer);
    this.readyState = CLOSED;
    this._socket?.destroy();
    this.onclose?.({ type: 'close', code, reason, wasClean: code !== 1006 });
  }
}
