// bench_browser.mjs - catch-up of an N-entry timeline into a fresh page over loopback, from
// connect to rendered, in Debian's headless Chromium (the JavaScript client: libcrdt in
// WebAssembly, binary crdt.v1), against the same catch-up with the C client (crdtc sub, which
// prints the state it caught up as a JSON line), alternating, in one run. bench/bench_browser.sh
// runs it; medians and the ratio page/crdtc are printed.
//
//   node bench/bench_browser.mjs CRDTD CRDTC [N] [R]
//
// Page: a fresh browser context each run (nothing cached, no IndexedDB); t0 once crdt.wasm is
// loaded, then Client.open, online, subscribe (resolved when the server said the catch-up is
// complete),
// then the N entries rendered as <li> in an <ol> and one frame painted. crdtc: the process's wall
// time from spawn to exit after its first change (--count 1), output to /dev/null.

import { spawnSync } from 'node:child_process';
import { copyFileSync, mkdtempSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { performance } from 'node:perf_hooks';
import { pathToFileURL } from 'node:url';
import { join, resolve } from 'node:path';

import { launch, startCrdtd } from '../tests/browser/harness.js';

const [crdtd, crdtc, nArg, rArg] = process.argv.slice(2);
if (!crdtd || !crdtc) {
  console.error('usage: node bench/bench_browser.mjs CRDTD CRDTC [N] [R]');
  process.exit(2);
}
process.env.CRDTD_BIN = crdtd;
const N = Number(nArg || 10000);
const R = Number(rArg || 7);
const KEY = 'bench:feed';

const js = resolve(crdtd, '../web');
const { Client, CrdtWasm } = await import(pathToFileURL(`${js}/client.js`).href);
const { NodeWebSocket } = await import(pathToFileURL(resolve('gateway/client/js/node-ws.js')).href);

// the bench's page beside the web app's files, served by crdtd itself: a page whose document does
// not come from the loopback server (a Playwright route) may not open a loopback WebSocket
// (Chromium's local network access checks)
const site = mkdtempSync(join(process.env.TMPDIR || tmpdir(), 'crdtd-bench-site-'));
for (const f of readdirSync(js)) copyFileSync(join(js, f), join(site, f));
writeFileSync(join(site, 'bench-catchup.html'), '<!doctype html><title>catch-up</title><ol id="l"></ol>');
// --ws-max-message: the whole timeline in one JSON state (crdtc's) is over the 1M default
const srv = await startCrdtd(['--no-persist', '--timeline-max-size', String(N), '--static-dir', site,
  '--ws-max-message', '64M']);
const browser = await launch();
try {
  // fill: N posts through the JavaScript client in Node, acknowledged before any run
  const wasm = await CrdtWasm.load(pathToFileURL(`${js}/crdt.wasm`));
  const filler = await Client.open({
    url: `ws://127.0.0.1:${srv.port}/`, wasm, WebSocket: NodeWebSocket, timelineMaxSize: N,
  });
  await filler.whenOnline();
  const tl = filler.timeline(KEY);
  for (let i = 0; i < N; i++)
    tl.add(JSON.stringify({ id: `p${i}`, by: `user${i % 97}`, text: `post number ${i} of the bench` }),
      1700000000000 + i * 1000);
  await filler.flush();
  await filler.close();

  const page = async () => {
    const ctx = await browser.newContext();
    try {
      const p = await ctx.newPage();
      await p.goto(`${srv.url}bench-catchup.html`);
      return await p.evaluate(async ({ N, KEY }) => {
        const { Client, CrdtWasm } = await import('/client.js');
        const wasm = await CrdtWasm.load(new URL('/crdt.wasm', location.href));
        const t0 = performance.now();
        const c = await Client.open({ url: `ws://${location.host}/`, wasm, timelineMaxSize: N });
        await c.whenOnline(); // (subscribe resolves at once while not online: it is sent on connect)
        await c.subscribe({ keys: [KEY] });
        const t1 = performance.now();
        const frag = document.createDocumentFragment();
        const entries = c.timeline(KEY).newest(N);
        for (const e of entries) {
          const li = document.createElement('li');
          li.textContent = `${JSON.parse(e.member).text} @ ${e.score}`;
          frag.append(li);
        }
        document.getElementById('l').append(frag);
        const tDom = performance.now();
        await new Promise((r) => requestAnimationFrame(() => setTimeout(r, 0)));
        const t2 = performance.now();
        const n = document.querySelectorAll('#l li').length;
        const binary = c.binary;
        await c.close();
        return { total: t2 - t0, catchup: t1 - t0, render: t2 - t1, dom: tDom - t1, n, binary };
      }, { N, KEY });
    } finally {
      await ctx.close();
    }
  };

  const cli = () => {
    const t0 = performance.now();
    const r = spawnSync(crdtc, ['--url', `ws://127.0.0.1:${srv.port}/`, '--quiet', '--count', '1',
      '--timeout', '30', 'sub', KEY], { encoding: 'utf8', maxBuffer: 64 << 20 });
    const ms = performance.now() - t0;
    if (r.status !== 0 || !r.stdout.trim())
      throw new Error(`crdtc exited ${r.status} with ${r.stdout.length} bytes out: ${r.stderr}`);
    const line = JSON.parse(r.stdout.trim().split('\n')[0]);
    const got = line.state?.state?.entries?.length ?? line.state?.entries?.length;
    return { total: ms, n: got, bytes: r.stdout.length };
  };

  await page(); // warm-up of both (the browser's first context, the page cache of crdtd's files)
  cli();
  const pages = [];
  const clis = [];
  for (let i = 0; i < R; i++) {
    pages.push(await page());
    clis.push(cli());
  }
  const med = (a) => { const s = [...a].sort((x, y) => x - y); const m = s.length >> 1;
    return s.length % 2 ? s[m] : (s[m - 1] + s[m]) / 2; };
  if (pages.some((p) => p.n !== N)) throw new Error(`a page rendered ${pages.map((p) => p.n)} of ${N}`);
  const pt = med(pages.map((p) => p.total));
  const ct = med(clis.map((c) => c.total));
  console.log(`catch-up of a ${N}-entry timeline over loopback, medians of ${R} alternating runs`);
  console.log(`  page (Chromium, ${pages[0].binary ? 'binary' : 'JSON'} crdt.v1): connect to rendered ${pt.toFixed(1)} ms` +
    ` (connect + catch-up ${med(pages.map((p) => p.catchup)).toFixed(1)} ms, render ${med(pages.map((p) => p.render)).toFixed(1)} ms, of which` +
    ` DOM built ${med(pages.map((p) => p.dom)).toFixed(1)} ms, then the frame)`);
  console.log(`  crdtc sub --count 1 (C, JSON crdt.v1, state printed as JSON): spawn to exit ${ct.toFixed(1)} ms` +
    ` (${clis[0].n ?? '?'} entries, ${clis[0].bytes} bytes printed)`);
  console.log(`  ratio page/crdtc ${(pt / ct).toFixed(2)}x`);
  console.log(`  single runs, page ms: ${pages.map((p) => p.total.toFixed(0)).join(' ')}`);
  console.log(`  single runs, crdtc ms: ${clis.map((c) => c.total.toFixed(0)).join(' ')}`);
} finally {
  await browser.close();
  await srv.stop();
  rmSync(site, { recursive: true, force: true });
}
