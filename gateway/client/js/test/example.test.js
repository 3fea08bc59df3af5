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

test('examples/feed-client.js against a real crdtd', async () => {
  const { startCrdtd } = await import('./server.js');
  const { execFile } = await import('node:child_process');
  const srv = await startCrdtd({ persist: false });
  try {
    const file = fileURLToPath(new URL('../examples/feed-client.js', import.meta.url));
    const out = await new Promise((resolve, reject) =>
      execFile(process.execPath, [file, srv.url()], { encoding: 'utf8', timeout: 30000, env: { ...process.env, CRDT_WASM: wasmPath() } },
        (err, stdout, stderr) => (err ? reject(new Error(`${err.message}\n${stderr}`)) : resolve(stdout))),
    );
    assert.match(out, /^bob offline: status offline, 2 writes pending, feed post:2@1700000060, post:1@1700000000$/m);
    assert.match(out, /^alice: feed post:2@1700000060, post:1@1700000000; likes 1$/m);
    assert.match(out, /^bob: feed post:2@1700000060, post:1@1700000000; likes 1$/m);
    assert.match(out, /^converged: identical encodings$/m);
  } finally {
    await srv.stop();
  }
});
