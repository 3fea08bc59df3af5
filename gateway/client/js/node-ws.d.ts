// node-ws.d.ts - types of node-ws.js: a small WebSocket client for Node (no dependencies)

import type { WebSocketLike } from './client.js';

/** The parts of the browser's WebSocket the client uses, over node:http(s) (ws:// and wss://):
 * text and binary messages, fragments, pings answered, close codes and reasons. */
export declare class NodeWebSocket implements WebSocketLike {
  /** opts.ca: the CA certificate(s) (PEM) a wss:// server's certificate must chain to (default:
   * Node's); rejectUnauthorized: false skips the check (tests only). To give them to a Client,
   * subclass: `class W extends NodeWebSocket { constructor(u, p) { super(u, p, { ca }); } }`. */
  constructor(
    url: string,
    protocols?: string | string[],
    opts?: { headers?: Record<string, string>; maxMessage?: number; ca?: string | Uint8Array | Array<string | Uint8Array>; rejectUnauthorized?: boolean },
  );
  static readonly CONNECTING: 0;
  static readonly OPEN: 1;
  static readonly CLOSING: 2;
  static readonly CLOSED: 3;
  readonly readyState: number;
  readonly protocol: string;
  readonly url: string;
  binaryType: string;
  send(data: string | ArrayBufferView | ArrayBuffer): void;
  close(code?: number, reason?: string): void;
  onopen: ((ev: any) => void) | null;
  onmessage: ((ev: { data: string | ArrayBuffer }) => void) | null;
  onclose: ((ev: { code: number; reason: string; wasClean: boolean }) => void) | null;
  onerror: ((ev: { error?: Error; message?: string }) => void) | null;
}
