// example.test.js - the example of docs/web-client.md runs as written and converges
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { wasmPath } from './helpers.js';

test('examples/local-replica.js', () => {
  const file = fileURLToPath(new URL('../examples/local-replica.js', import.meta.url));
  const out = execFileSync(process.execPath, [file], { encoding: 'utf8', env: { ...process.env, CRDT_WASM: wasmPath() } });
  assert.match(out, /^alice: feed post:2@1700000060, post:1@1700000000; likes 2; bob follows alice; title "Our feed"$/m);
  assert.match(out, /^bob: feed post:2@1700000060, post:1@1700000000; likes 2;/m);
  assert.match(out, /^converged: identical encodings$/m);
});
