// server.js - what the client tests need around them: a real crdtd on a free 127.0.0.1 port
// (started, restarted and stopped by the test, with bounded waits), tokens minted as
// docs/protocol.md "Tokens" says, and a scripted fake server for messages crdtd never sends.
import { spawn } from 'node:child_process';
import { createHash, createHmac } from 'node:crypto';
import { existsSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import http from 'node:http';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../../../..');

/** build/gateway/crdtd, or $CRDTD_BIN. */
export function crdtdPath() {
  const p = process.env.CRDTD_BIN || path.join(root, 'build/gateway/crdtd');
  if (!existsSync(p)) throw new Error(`${p} is missing: build the native tree (cmake --build build) or set CRDTD_BIN`);
  return p;
}

export const SECRET = '0123456789abcdef0123456789abcdef';

const b64url = (b) => Buffer.from(b).toString('base64url');

/** A token: base64url(payload).base64url(HMAC-SHA256(secret, first part)) (kid "default"). Grants
 * are key prefixes in standard base64 ("" is every key). */
export function mintToken({ sub = 'alice', ttl = 3600, exp, read = [''], write = [''], secret = SECRET } = {}) {
  const payload = { sub, exp: exp ?? Math.floor(Date.now() / 1000) + ttl, read, write };
  const first = b64url(JSON.stringify(payload));
  return `${first}.${b64url(createHmac('sha256', secret).update(first).digest())}`;
}

/** Starts crdtd; { port, url, http, stop(), restart(), dir }. opts: secret (true: SECRET),
 * persist (a data dir kept across restart), args. */
export async function startCrdtd({ secret = false, persist = true, args = [], port = 0 } = {}) {
  const dir = mkdtempSync(path.join(process.env.TMPDIR || os.tmpdir(), 'crdtd-js-'));
  const s = { dir, port, proc: null, log: '' };
  if (secret) writeFileSync(path.join(dir, 'secret'), secret === true ? SECRET : secret);
  const argv = () => [
    '--listen', `127.0.0.1:${s.port}`,
    ...(persist ? ['--data-dir', path.join(dir, 'data'), '--fsync', 'always'] : ['--no-persist']),
    ...(secret ? ['--token-secret-file', path.join(dir, 'secret')] : []),
    ...args,
  ];
  const launch = () =>
    new Promise((resolve, reject) => {
      const p = spawn(crdtdPath(), argv(), { stdio: ['ignore', 'pipe', 'pipe'] });
      s.proc = p;
      let out = '';
      const timer = setTimeout(() => {
        p.kill('SIGKILL');
        reject(new Error(`crdtd did not start in 10 s:\n${out}`));
      }, 10000);
      const onData = (d) => {
        out += d;
        s.log += d;
        const m = /listening on https?:\/\/127\.0\.0\.1:(\d+)/.exec(out);
        if (m) {
          clearTimeout(timer);
          s.port = Number(m[1]);
          resolve();
        }
      };
      p.stdout.on('data', onData);
      p.stderr.on('data', onData);
      p.on('exit', (code) => {
        clearTimeout(timer);
        reject(new Error(`crdtd exited (${code}) before listening:\n${out}`));
      });
    });
  await launch();
  const tls = args.includes('--tls-cert');
  s.url = () => `${tls ? 'wss' : 'ws'}://127.0.0.1:${s.port}/`;
  s.http = () => `http://127.0.0.1:${s.port}`;
  /** Stops it (SIGTERM); throws unless it exited 0, as crdtd does on SIGTERM (a crash, or a
   * sanitizer's report, fails the test). */
  s.kill = async (signal = 'SIGTERM') => {
    const p = s.proc;
    if (!p) return;
    if (p.exitCode === null && !p.signalCode) {
      const gone = new Promise((r) => p.once('exit', r));
      p.kill(signal);
      const t = setTimeout(() => p.kill('SIGKILL'), 5000);
      await gone;
      clearTimeout(t);
    }
    if (signal === 'SIGTERM' && p.exitCode !== 0)
      throw new Error(`crdtd exited with ${p.exitCode ?? p.signalCode}:\n${s.log.slice(-4000)}`);
  };
  /** Stops it and starts it again on the same port (the data dir survives). */
  s.restart = async () => {
    await s.kill();
    for (let i = 0; ; i++) {
      try {
        await launch();
        return;
      } catch (e) {
        if (i >= 20) throw e;
        await new Promise((r) => setTimeout(r, 100)); // the port may still be held
      }
    }
  };
  s.stop = async () => {
    await s.kill();
    rmSync(dir, { recursive: true, force: true });
  };
  return s;
}

/** Waits until cond() is true (polling every 10 ms), at most ms; throws with `what` otherwise. */
export async function until(cond, what, ms = 5000) {
  const end = Date.now() + ms;
  while (!(await cond())) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 10));
  }
}

/** A WebSocket server speaking whatever a test scripts: onSession(session) gets { send(text |
 * bytes), close(code, reason), messages: [], next(): Promise<message> }. Masks checked, no
 * fragments sent. */
export async function fakeServer(onSession, { protocol = 'crdt.v1.bin' } = {}) {
  const sockets = new Set();
  const srv = http.createServer((req, res) => {
    res.writeHead(400);
    res.end();
  });
  srv.on('upgrade', (req, socket) => {
    sockets.add(socket);
    socket.on('close', () => sockets.delete(socket));
    const key = req.headers['sec-websocket-key'];
    const accept = createHash('sha1').update(key + '258EAFA5-E914-47DA-95CA-C5AB0DC85B11').digest('base64');
    socket.write(
      'HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n' +
        `Sec-WebSocket-Accept: ${accept}\r\nSec-WebSocket-Protocol: ${protocol}\r\n\r\n`,
    );
    const waiters = [];
    const sess = {
      messages: [],
      send(data) {
        const payload = typeof data === 'string' ? Buffer.from(data) : Buffer.from(data);
        const op = typeof data === 'string' ? 1 : 2;
        const n = payload.length;
        const head = n < 126 ? Buffer.from([0x80 | op, n]) : Buffer.from([0x80 | op, 126, n >> 8, n & 255]);
        socket.write(Buffer.concat([head, payload]));
      },
      raw(bytes) {
        socket.write(Buffer.from(bytes));
      },
      close(code = 1000, reason = '') {
        const r = Buffer.from(reason);
        const p = Buffer.alloc(2 + r.length);
        p.writeUInt16BE(code);
        r.copy(p, 2);
        socket.write(Buffer.concat([Buffer.from([0x88, p.length]), p]));
        socket.end();
      },
      next(ms = 5000) {
        if (sess.messages.length) return Promise.resolve(sess.messages.shift());
        return new Promise((resolve, reject) => {
          const t = setTimeout(() => reject(new Error('fake server: no message')), ms);
          waiters.push((m) => (clearTimeout(t), resolve(m)));
        });
      },
    };
    let buf = Buffer.alloc(0);
    socket.on('data', (d) => {
      buf = Buffer.concat([buf, d]);
      for (;;) {
        if (buf.length < 2) return;
        const op = buf[0] & 15;
        let n = buf[1] & 127;
        let at = 2;
        if (n === 126) {
          if (buf.length < 4) return;
          n = buf.readUInt16BE(2);
          at = 4;
        } else if (n === 127) {
          if (buf.length < 10) return;
          n = Number(buf.readBigUInt64BE(2));
          at = 10;
        }
        if (buf.length < at + 4 + n) return;
        const mask = buf.subarray(at, at + 4);
        const p = Buffer.alloc(n);
        for (let i = 0; i < n; i++) p[i] = buf[at + 4 + i] ^ mask[i & 3];
        buf = buf.subarray(at + 4 + n);
        if (op === 8) {
          socket.end();
          return;
        }
        const m = op === 1 ? JSON.parse(p.toString()) : new Uint8Array(p);
        const w = waiters.shift();
        if (w) w(m);
        else sess.messages.push(m);
      }
    });
    socket.on('error', () => {});
    onSession(sess);
  });
  await new Promise((r) => srv.listen(0, '127.0.0.1', r));
  return {
    url: `ws://127.0.0.1:${srv.address().port}/`,
    async stop() {
      for (const s of sockets) s.destroy();
      await new Promise((r) => srv.close(r));
    },
  };
}

export const welcome = (node = 1, seq = 0) =>
  JSON.stringify({ type: 'welcome', node, seq, session: 'fake', subject: '', expires: 0, limits: {} });
