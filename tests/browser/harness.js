// harness.js - what the browser tests share: a real crdtd on a free loopback port serving the
// demo, Debian's Chromium (never a downloaded browser) driven by playwright-core, and a few waits.
//
// CRDTD_BIN: the crdtd to run (default build/gateway/crdtd of this checkout); it serves the web
// app staged beside it (<dir of crdtd>/web: the demo, the client's modules, crdt.wasm).
// CHROMIUM: the browser (default /usr/bin/chromium).

import { spawn } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { chromium } from 'playwright-core';

export const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '../..');
export const CRDTD = process.env.CRDTD_BIN || join(ROOT, 'build/gateway/crdtd');
export const CHROMIUM = process.env.CHROMIUM || '/usr/bin/chromium';

// Debian's Chromium as the issue asks: headless, no sandbox (CI runs as root), nothing that
// phones home or updates itself. Playwright gives each launch a fresh --user-data-dir.
export const CHROMIUM_ARGS = [
  '--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
  '--disable-background-networking', '--disable-component-update', '--disable-sync',
];

/** What is missing to run these tests, or null. */
export function missing() {
  if (!existsSync(CRDTD)) return `no crdtd at ${CRDTD} (build it: cmake --build build)`;
  const cli = join(dirname(CRDTD), 'client/crdtc');
  if (!existsSync(cli)) return `no crdtc at ${cli} (build it: cmake --build build)`;
  if (!existsSync(CHROMIUM)) return `no Chromium at ${CHROMIUM} (scripts/setup-debian.sh installs it)`;
  const web = join(dirname(CRDTD), 'web');
  for (const f of ['index.html', 'client.js', 'crdt.wasm'])
    if (!existsSync(join(web, f))) return `no ${f} in ${web} (the build stages the web app there)`;
  return null;
}

/** Starts crdtd on 127.0.0.1:0 with extra flags; resolves { port, url, stop(), log() } once it
 * printed its port (at most 10 s). Its data directory is a fresh temporary one. */
export async function startCrdtd(flags = []) {
  const dir = mkdtempSync(join(process.env.TMPDIR || tmpdir(), 'crdtd-e2e-'));
  const p = spawn(CRDTD, ['--data-dir', join(dir, 'data'), '--listen', '127.0.0.1:0', ...flags], {
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let out = '';
  let err = '';
  p.stderr.on('data', (d) => { err += d; });
  const port = await new Promise((res, rej) => {
    const t = setTimeout(() => rej(new Error(`crdtd did not start in 10 s: ${err}`)), 10000);
    p.stdout.on('data', (d) => {
      out += d;
      const m = /listening on http:\/\/127\.0\.0\.1:(\d+)/.exec(out);
      if (m) { clearTimeout(t); res(Number(m[1])); }
    });
    p.on('exit', (code) => { clearTimeout(t); rej(new Error(`crdtd exited ${code}: ${err}`)); });
  });
  let exited = false;
  const done = new Promise((res) => p.on('exit', (code, sig) => { exited = true; res({ code, sig }); }));
  return {
    port,
    url: `http://127.0.0.1:${port}/`,
    log: () => err,
    async stop() {
      if (!exited) p.kill('SIGTERM');
      const t = setTimeout(() => p.kill('SIGKILL'), 10000);
      const r = await done;
      clearTimeout(t);
      rmSync(dir, { recursive: true, force: true });
      return r;
    },
  };
}

/** A metric of crdtd's /metrics (the first sample of `name` with those labels), as a number. */
export async function metric(srv, name, labels = '') {
  const text = await (await fetch(`${srv.url}metrics`)).text();
  const line = text.split('\n').find((l) => l.startsWith(`${name}${labels} `));
  if (!line) throw new Error(`no metric ${name}${labels}`);
  return Number(line.slice(line.lastIndexOf(' ') + 1));
}

/** Waits until fn() (async) is truthy, every 50 ms, at most ms; returns its value. */
export async function until(fn, ms = 10000, what = 'condition') {
  const end = Date.now() + ms;
  let last;
  for (;;) {
    try {
      last = await fn();
      if (last) return last;
    } catch (e) {
      last = e;
    }
    if (Date.now() > end) throw new Error(`timed out after ${ms} ms waiting for ${what} (last: ${last})`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

export async function launch() {
  return chromium.launch({ executablePath: CHROMIUM, headless: true, args: CHROMIUM_ARGS });
}

/** Opens the demo in a page of ctx (a context: one browser profile) and waits for it to be
 * ready (the client open); page errors and console errors are collected in page.errors. */
export async function openDemo(ctx, url, { name } = {}) {
  const page = await ctx.newPage();
  page.errors = [];
  page.on('pageerror', (e) => page.errors.push(String(e)));
  await page.goto(name ? `${url}?name=${encodeURIComponent(name)}` : url);
  await page.waitForSelector('body[data-ready]', { timeout: 15000 });
  const ready = await page.getAttribute('body', 'data-ready');
  if (ready !== 'true')
    throw new Error(`the demo did not start: ${await page.textContent('#error')} ${page.errors}`);
  return page;
}

/** The demo's state as the page shows it. */
export async function shown(page) {
  return page.evaluate(() => ({
    status: document.getElementById('status').dataset.status,
    pending: Number(document.getElementById('pending').dataset.count),
    role: document.getElementById('role').textContent,
    posts: [...document.querySelectorAll('#feed li')].map((li) => ({
      id: li.dataset.id,
      by: li.dataset.by,
      likes: Number(li.dataset.likes),
      liked: li.querySelector('button.like').getAttribute('aria-pressed') === 'true',
      followed: li.querySelector('button.follow')?.getAttribute('aria-pressed') === 'true',
      text: li.querySelector('.text').textContent,
      unsent: li.classList.contains('unsent'),
    })),
  }));
}

/** Posts text through the demo's form. */
export async function post(page, text) {
  await page.fill('#text', text);
  await page.click('#post');
}

/** The post whose text is `text` in the page, or undefined. */
export async function postByText(page, text) {
  return (await shown(page)).posts.find((p) => p.text === text);
}
