// bench_browser.mjs - catch-up of an N-entry timeline into a fresh page over loopback, from
// connect to rendered, in Debian's headless Chromium (the JavaScript client: libcrdt in
// WebAssembly, binary crdt.v1), against the same catch-up with the C client (bench_ws --catchup:
// the crdtc library, JSON and binary crdt.v1), alternating, in one run. bench/bench_browser.sh
// runs it; medians and the ratios to the C client are printed. (bench/bench_catchup.sh measures
// the JavaScript client in Node against the same C side.)
//
//   node bench/bench_browser.mjs CRDTD BENCH_WS [N] [R]
//
// Page: a fresh browser context each run (nothing cached, no IndexedDB); t0 once crdt.wasm is
// loaded, then Client.open, online, subscribe (resolved when the server said the catch-up is
// complete),
// then the entries rendered as <li> in an <ol> (all N, or the newest 100) and one frame painted.
// C: a fresh process per run, timed inside it from connect to the newest 50 entries read.

import { spawnSync } from 'node:child_process';
import { copyFileSync, mkdtempSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { performance } from 'node:perf_hooks';
import { pathToFileURL } from 'node:url';
import { join, resolve } from 'node:path';

import { launch, startCrdtd } from '../tests/browser/harness.js';

const [crdtd, benchWs, nArg, rArg] = process.argv.slice(2);
if (!crdtd || !benchWs) {
  console.error('usage: node bench/bench_browser.mjs CRDTD BENCH_WS [N] [R]');
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

  const page = async (shown) => {
    const ctx = await browser.newContext();
    try {
      const p = await ctx.newPage();
      await p.goto(`${srv.url}bench-catchup.html`);
      return await p.evaluate(async ({ N, KEY, shown }) => {
        const { Client, CrdtWasm } = await import('/client.js');
        const wasm = await CrdtWasm.load(new URL('/crdt.wasm', location.href));
        const t0 = performance.now();
        const c = await Client.open({ url: `ws://${location.host}/`, wasm, timelineMaxSize: N });
        await c.whenOnline(); // (subscribe resolves at once while not online: it is sent on connect)
        await c.subscribe({ keys: [KEY] });
        const t1 = performance.now();
        const frag = document.createDocumentFragment();
        const entries = c.timeline(KEY).newest(shown);
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
        const size = c.timeline(KEY).size;
        await c.close();
        return { total: t2 - t0, catchup: t1 - t0, render: t2 - t1, dom: tDom - t1,
          n: size, shown: n, binary };
      }, { N, KEY, shown });
    } finally {
      await ctx.close();
    }
  };

  // the C client: a fresh process per run, timed inside it from connect to the newest page
  // read (bench_ws --catchup, the C side of bench/bench_catchup.sh too)
  const cli = (mode) => {
    const r = spawnSync(benchWs, ['--catchup', String(srv.port), KEY, ...(mode === 'binary' ? ['--binary'] : [])],
      { encoding: 'utf8', timeout: 90000 });
    const [ms, entries] = r.stdout.trim().split(' ').map(Number);
    if (r.status !== 0) throw new Error(`bench_ws --catchup ${mode} exited ${r.status}: ${r.stderr}`);
    return { total: ms, n: entries };
  };

  await page(N); // warm-up of both (the browser's first context, the page cache of crdtd's files)
  cli('json');
  const pages = [];
  const pages100 = [];
  const cjson = [];
  const cbin = [];
  for (let i = 0; i < R; i++) {
    pages.push(await page(N));
    pages100.push(await page(100));
    cjson.push(cli('json'));
    cbin.push(cli('binary'));
  }
  const med = (a) => { const s = [...a].sort((x, y) => x - y); const m = s.length >> 1;
    return s.length % 2 ? s[m] : (s[m - 1] + s[m]) / 2; };
  if (pages.some((p) => p.shown !== N) || pages100.some((p) => p.shown !== 100))
    throw new Error('a page did not render what it was to');
  for (const [what, runs] of [['page', pages], ['page 100', pages100], ['crdtc JSON', cjson],
    ['crdtc binary', cbin]])
    if (runs.some((x) => x.n !== N)) throw new Error(`${what} got ${runs.map((x) => x.n)} of ${N}`);
  const f = (runs, k) => med(runs.map((x) => x[k])).toFixed(1);
  const base = med(cbin.map((x) => x.total));
  console.log(`catch-up of a ${N}-entry timeline over loopback into a fresh client, connect to rendered,` +
    ` medians of ${R} alternating runs (ms)`);
  console.log(`  ${'client'.padEnd(34)} ${'total'.padStart(8)} ${'catch-up'.padStart(9)}` +
    ` ${'render'.padStart(8)} ${'/C binary'.padStart(10)}`);
  const row = (name, runs) => console.log(`  ${name.padEnd(34)} ${f(runs, 'total').padStart(8)}` +
    ` ${(runs[0].catchup === undefined ? '-' : f(runs, 'catchup')).padStart(9)}` +
    ` ${(runs[0].render === undefined ? '-' : f(runs, 'render')).padStart(8)}` +
    ` ${(med(runs.map((x) => x.total)) / base).toFixed(2).padStart(9)}x`);
  row(`page, all ${N} as <li> (${pages[0].binary ? 'binary' : 'JSON'})`, pages);
  row(`page, newest 100 as <li> (${pages100[0].binary ? 'binary' : 'JSON'})`, pages100);
  row('crdtc, C (JSON crdt.v1)', cjson);
  row('crdtc, C (binary crdt.v1)', cbin);
  console.log(`  (page render: DOM built ${f(pages, 'dom')} ms (all) / ${f(pages100, 'dom')} ms (100),` +
    ' then the first frame painted; /C binary: the total over the C client\'s on binary crdt.v1)');
  console.log(`  single runs, page ms: ${pages.map((p) => p.total.toFixed(0)).join(' ')}`);
  console.log(`  single runs, page 100 ms: ${pages100.map((p) => p.total.toFixed(0)).join(' ')}`);
  console.log(`  single runs, crdtc JSON ms: ${cjson.map((c) => c.total.toFixed(0)).join(' ')}`);
  console.log(`  single runs, crdtc binary ms: ${cbin.map((c) => c.total.toFixed(0)).join(' ')}`);
} finally {
  await browser.close();
  await srv.stop();
  rmSync(site, { recursive: true, force: true });
}
