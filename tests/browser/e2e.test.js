// e2e.test.js - the demo and the JavaScript client end to end in headless Chromium against a
// real crdtd: the demo works; two pages converge; a page that goes offline writes, reloads while
// offline (the service worker serves it) with its state and queue kept in IndexedDB, comes back
// and converges; two tabs of one origin share one connection (crdtd's session count says so);
// a node with tokens serves the app to anyone and sessions to token holders only; a page idle for
// longer than --ws-idle-timeout stays connected.
//
//   cd tests/browser && npm ci && node --test --test-concurrency=1 e2e.test.js
//
// CRDTD_SCREENSHOT_DIR: where the demo's screenshots go (default build/e2e; docs/img holds the
// ones docs/web-client.md shows, taken with CRDTD_SCREENSHOT_DIR=docs/img).

import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { after, before, describe, test } from 'node:test';

import {
  CRDTD, ROOT, launch, metric, missing, openDemo, post, postByText, shown, startCrdtd, until,
} from './harness.js';

const CRDTD_CLI = join(dirname(CRDTD), 'client/crdtc'); // mints the token of the token test

const IDLE_S = 2; // crdtd's --ws-idle-timeout for these tests
const SHOTS = resolve(ROOT, process.env.CRDTD_SCREENSHOT_DIR || 'build/e2e');
const VIEW = { width: 720, height: 640 };

const why = missing();
if (why) throw new Error(`cannot run the browser tests: ${why}`);

let srv;
let browser;

before(async () => {
  srv = await startCrdtd(['--ws-idle-timeout', String(IDLE_S)]);
  browser = await launch();
});

after(async () => {
  await browser?.close();
  const r = await srv?.stop();
  if (r) assert.equal(r.code, 0, `crdtd exits 0 on SIGTERM (log: ${srv.log()})`);
});

async function context() {
  // a fixed locale and zone: the screenshots do not depend on the machine's
  return browser.newContext({ viewport: VIEW, locale: 'en-GB', timezoneId: 'UTC' });
}

// A click on a post's button, then the wait for the page to show it. The click is dispatched on
// the button itself, not at its coordinates: a post arriving meanwhile moves the list down, and
// a click by position would land on another post.
async function toggle(page, text, button, field) {
  const find = async () => (await shown(page)).posts.find((p) => p.text.startsWith(text));
  const before = await find();
  assert.ok(before, `a post "${text}..." to click`);
  await page.locator('#feed li', { hasText: text }).locator(`button.${button}`).dispatchEvent('click');
  await until(async () => (await find())?.[field] === !before[field], 5000,
    `${button} on "${text}..." shown`);
}
const clickLike = (page, text) => toggle(page, text, 'like', 'liked');
const clickFollow = (page, text) => toggle(page, text, 'follow', 'followed');

describe('the demo in Chromium', { timeout: 120000 }, () => {
  test('the demo page works: post, like, follow, online, nothing pending once acknowledged', async () => {
    const ca = await context();
    const cb = await context();
    try {
      const alice = await openDemo(ca, srv.url, { name: 'alice' });
      const bob = await openDemo(cb, srv.url, { name: 'bob' });
      await until(async () => (await shown(alice)).status === 'online', 10000, 'alice online');
      await until(async () => (await shown(bob)).status === 'online', 10000, 'bob online');
      assert.equal(await alice.textContent('#me'), 'alice');

      await post(alice, 'Hello from alice: this feed is a timeline in crdtd');
      const mine = await postByText(alice, 'Hello from alice: this feed is a timeline in crdtd');
      assert.ok(mine, 'the post shows at once (applied locally)');
      assert.equal(mine.by, 'alice');
      await until(async () => (await shown(alice)).pending === 0, 10000, 'alice acknowledged');
      await until(() => postByText(bob, 'Hello from alice: this feed is a timeline in crdtd'),
        10000, 'bob sees alice');
      await post(bob, 'bob here, liking and following');

      await clickLike(bob, 'Hello from alice');
      await clickFollow(bob, 'Hello from alice');
      const liked = await postByText(bob, 'Hello from alice: this feed is a timeline in crdtd');
      assert.equal(liked.likes, 1);
      assert.ok(liked.liked && liked.followed, 'bob likes and follows it');
      assert.equal(await bob.textContent('#following'), ': alice');
      await until(async () =>
        (await postByText(alice, 'Hello from alice: this feed is a timeline in crdtd'))?.likes === 1,
      10000, 'alice sees the like');
      await until(() => postByText(alice, 'bob here, liking and following'), 10000, 'alice sees bob');
      await clickLike(alice, 'bob here');
      await until(async () => (await postByText(bob, 'bob here, liking and following'))?.likes === 1,
        10000, 'bob sees the like');
      // the like button toggles: unlike, then like again, converging on both pages
      await clickLike(alice, 'bob here');
      await clickLike(alice, 'bob here');
      await until(async () => (await shown(alice)).pending === 0, 10000, 'alice acknowledged');

      // "Following" shows bob's posts and those of whom he follows (alice), not another's
      await bob.check('input[value=following]');
      const f = (await shown(bob)).posts.map((p) => p.by);
      assert.ok(f.includes('alice') && f.includes('bob'));
      await bob.check('input[value=all]');

      await until(async () => (await shown(bob)).pending === 0, 10000, 'bob acknowledged');
      const final = await postByText(bob, 'Hello from alice: this feed is a timeline in crdtd');
      assert.ok(final.liked && final.followed && final.likes === 1, 'still liked and followed');
      mkdirSync(SHOTS, { recursive: true });
      await bob.screenshot({ path: join(SHOTS, 'demo.png') });
      assert.deepEqual(alice.errors, []);
      assert.deepEqual(bob.errors, []);
    } finally {
      await ca.close();
      await cb.close();
    }
  });

  test('two pages converge on concurrent writes', async () => {
    const ca = await context();
    const cb = await context();
    try {
      const a = await openDemo(ca, srv.url, { name: 'carol' });
      const b = await openDemo(cb, srv.url, { name: 'dave' });
      await until(async () => (await shown(a)).status === 'online' && (await shown(b)).status === 'online',
        10000, 'both online');
      await post(a, 'converge 1 from carol');
      await post(b, 'converge 2 from dave');
      await until(async () => (await postByText(a, 'converge 2 from dave')) &&
        (await postByText(b, 'converge 1 from carol')), 10000, 'each sees the other');
      // both like both at about the same time (each page its two clicks in turn)
      await Promise.all([
        clickLike(a, 'converge 1').then(() => clickLike(a, 'converge 2')),
        clickLike(b, 'converge 2').then(() => clickLike(b, 'converge 1')),
      ]);
      for (const p of [a, b])
        for (const t of ['converge 1 from carol', 'converge 2 from dave'])
          await until(async () => (await postByText(p, t))?.likes === 2, 10000,
            `${t}: 2 likes`).catch(async (e) => {
            throw new Error(`${e.message}; carol ${JSON.stringify(await shown(a))}; dave ${JSON.stringify(await shown(b))}`);
          });
      await until(async () => (await shown(a)).pending === 0 && (await shown(b)).pending === 0,
        10000, 'all acknowledged');
      const sa = (await shown(a)).posts;
      const sb = (await shown(b)).posts;
      assert.deepEqual(sa.map((p) => [p.id, p.likes]), sb.map((p) => [p.id, p.likes]),
        'the same feed in the same order with the same counts');
    } finally {
      await ca.close();
      await cb.close();
    }
  });

  test('offline: write, reload offline with state and queue kept, come back, converge', async () => {
    const ca = await context();
    const cb = await context();
    try {
      const a = await openDemo(ca, srv.url, { name: 'erin' });
      const b = await openDemo(cb, srv.url, { name: 'frank' });
      await until(async () => (await shown(a)).status === 'online' && (await shown(b)).status === 'online',
        10000, 'both online');
      await post(b, 'frank, before erin goes offline');
      await until(() => postByText(a, 'frank, before erin goes offline'), 10000, 'erin sees it');
      // the service worker controls the page: its files are cached for the offline reload
      await a.waitForFunction(() => navigator.serviceWorker.controller !== null, null, { timeout: 10000 });

      await ca.setOffline(true);
      await until(async () => (await shown(a)).status === 'offline', 5000, 'erin shows offline');
      await post(a, 'erin, written offline');
      await clickLike(a, 'frank, before erin goes offline');
      const off = await shown(a);
      assert.ok(off.pending >= 2, `writes pending while offline (${off.pending})`);
      assert.ok(off.posts.find((p) => p.text === 'erin, written offline')?.unsent, 'shown as unsent');
      await post(b, 'frank, while erin is offline');
      await new Promise((r) => setTimeout(r, 500));
      assert.equal(await postByText(b, 'erin, written offline'), undefined, 'nothing left erin');

      await a.reload();
      await a.waitForSelector('body[data-ready]', { timeout: 15000 });
      assert.equal(await a.getAttribute('body', 'data-ready'), 'true', 'the demo starts offline');
      const re = await until(async () => {
        const s = await shown(a);
        return s.posts.some((p) => p.text === 'erin, written offline') && s;
      }, 5000, 'the offline post after the reload');
      assert.equal(re.status, 'offline');
      assert.equal(re.pending, off.pending, 'the queue survived the reload (IndexedDB)');
      assert.equal(re.posts.find((p) => p.text === 'frank, before erin goes offline')?.likes, 1,
        'the like made offline is still applied');
      assert.ok(re.posts.find((p) => p.text === 'frank, before erin goes offline'),
        'and the state from before going offline');
      mkdirSync(SHOTS, { recursive: true });
      await a.screenshot({ path: join(SHOTS, 'demo-offline.png') });

      await ca.setOffline(false);
      await until(async () => (await shown(a)).status === 'online', 15000, 'erin back online');
      await until(async () => (await shown(a)).pending === 0, 10000, 'the queue acknowledged');
      await until(() => postByText(b, 'erin, written offline'), 10000, 'frank sees the offline post');
      await until(async () => (await postByText(b, 'frank, before erin goes offline'))?.likes === 1,
        10000, 'and the offline like');
      await until(() => postByText(a, 'frank, while erin is offline'), 10000,
        'erin gets what she missed');
      const fa = (await shown(a)).posts.map((p) => [p.id, p.likes]);
      const fb = (await shown(b)).posts.map((p) => [p.id, p.likes]);
      assert.deepEqual(fa, fb, 'converged');
      assert.deepEqual(a.errors, []);
    } finally {
      await ca.close();
      await cb.close();
    }
  });

  test('the client follows the browser offline and back by itself; binary keys; subscribe resolves', async () => {
    const ctx = await context();
    try {
      const page = await openDemo(ctx, srv.url, { name: 'gina' });
      await until(async () => (await shown(page)).status === 'online', 10000, 'online');
      // the demo's subscribe() resolves once its catch-up is in
      assert.equal(await page.evaluate(() => globalThis.crdtdDemo.subscribed.then(() => 'resolved')), 'resolved');
      // a key that is not UTF-8, from the page over binary crdt.v1
      const bin = [0x00, 0xff, 0x10];
      await page.evaluate(async (k) => {
        const { client } = globalThis.crdtdDemo;
        client.pncounter(new Uint8Array(k)).incr(3);
        await client.flush();
      }, bin);
      const b64 = Buffer.from(bin).toString('base64url');
      const got = await fetch(`${srv.url}v1/keys64/${b64}`);
      assert.equal(got.status, 200, 'the binary key reached crdtd');
      assert.equal((await got.json()).type, 'pncounter');

      const opened = await metric(srv, 'crdtd_ws_sessions_opened_total');
      // DevTools' offline mode stalls the WebSocket without closing it: only the browser's
      // 'offline' event tells, and the client (not the page) acts on it
      await ctx.setOffline(true);
      await until(() => page.evaluate(() => globalThis.crdtdDemo.client.status === 'offline'), 3000,
        'the client offline at the event');
      await page.evaluate(() => globalThis.crdtdDemo.client.gcounter('gina:offline').incr(1));
      await new Promise((r) => setTimeout(r, 500));
      assert.equal(await page.evaluate(() => globalThis.crdtdDemo.client.pending), 1, 'queued, not sent');
      assert.equal((await fetch(`${srv.url}v1/keys/gina%3Aoffline`)).status, 404, 'crdtd did not get it');
      const t0 = Date.now();
      await ctx.setOffline(false);
      await until(() => page.evaluate(() => globalThis.crdtdDemo.client.status === 'online'), 3000,
        'online at once at the event');
      const ms = Date.now() - t0;
      await until(() => page.evaluate(() => globalThis.crdtdDemo.client.pending === 0), 5000, 'acked');
      assert.equal((await fetch(`${srv.url}v1/keys/gina%3Aoffline`)).status, 200);
      assert.ok((await metric(srv, 'crdtd_ws_sessions_opened_total')) > opened, 'a new session');
      assert.ok(ms < 3000, `back in ${ms} ms`);
      assert.deepEqual(page.errors, []);
    } finally {
      await ctx.close();
    }
  });

  test('two tabs of one origin share one connection', async () => {
    // the pages of the tests before are closed: their sessions end
    await until(async () => (await metric(srv, 'crdtd_ws_sessions')) === 0, 10000, 'no session open');
    const base = 0;
    const ctx = await context();
    try {
      const t1 = await openDemo(ctx, srv.url, { name: 'grace' });
      await until(async () => (await shown(t1)).status === 'online', 10000, 'tab 1 online');
      await until(async () => (await metric(srv, 'crdtd_ws_sessions')) === base + 1, 5000,
        'one session for tab 1');
      const t2 = await openDemo(ctx, srv.url);
      await until(async () => (await shown(t2)).status === 'online', 10000, 'tab 2 online');
      const roles = [(await shown(t1)).role, (await shown(t2)).role].sort();
      assert.deepEqual(roles, ['follower tab', 'leader tab']);
      await new Promise((r) => setTimeout(r, 1000));
      assert.equal(await metric(srv, 'crdtd_ws_sessions'), base + 1, 'still one session for two tabs');

      await post(t2, 'grace, from the second tab');
      await until(() => postByText(t1, 'grace, from the second tab'), 10000, 'tab 1 sees tab 2');
      await clickLike(t1, 'grace, from the second tab');
      await until(async () => (await postByText(t2, 'grace, from the second tab'))?.likes === 1,
        10000, 'tab 2 sees tab 1');
      await until(async () => (await shown(t2)).pending === 0, 10000, 'acknowledged');

      // the leader's tab closes: the other takes the connection over
      const leader = (await shown(t1)).role === 'leader tab' ? t1 : t2;
      const other = leader === t1 ? t2 : t1;
      await leader.close();
      await until(async () => (await shown(other)).role === 'leader tab', 10000, 'a new leader');
      await until(async () => (await shown(other)).status === 'online', 10000, 'online again');
      await post(other, 'grace, after the leader left');
      await until(async () => (await shown(other)).pending === 0, 10000, 'acknowledged');
      assert.equal(await metric(srv, 'crdtd_ws_sessions'), base + 1, 'one session again');
      assert.deepEqual(other.errors, []);
    } finally {
      await ctx.close();
    }
  });

  test('a node with tokens: the app loads without one, its session needs one', async () => {
    const dir = mkdtempSync(join(process.env.TMPDIR || tmpdir(), 'crdtd-e2e-tok-'));
    const secret = join(dir, 'token.secret');
    writeFileSync(secret, 'e2e-token-secret-0123456789abcdef\n');
    const tok = spawnSync(CRDTD_CLI, ['token', '--secret-file', secret, '--sub', 'judy', '--ttl', '600',
      '--read', '', '--write', ''], { encoding: 'utf8' });
    assert.equal(tok.status, 0, `crdtc token: ${tok.stderr}`);
    const token = tok.stdout.trim();
    const node = await startCrdtd(['--token-secret-file', secret]);
    const ctx = await context();
    try {
      const res = await fetch(`${node.url}v1/keys/ZmVlZA`);
      assert.equal(res.status, 401, 'the API needs a token');
      const page = await openDemo(ctx, `${node.url}?token=${encodeURIComponent(token)}`);
      await until(async () => (await shown(page)).status === 'online', 10000, 'online with the token');
      await post(page, 'judy, with a token');
      await until(async () => (await shown(page)).pending === 0, 10000, 'acknowledged');
      // another browser without the token: the page loads, its session is refused
      const c2 = await context();
      try {
        const p2 = await c2.newPage();
        await p2.goto(node.url);
        await p2.waitForSelector('body[data-ready]', { timeout: 15000 });
        await new Promise((r) => setTimeout(r, 1500));
        const s2 = await shown(p2);
        assert.notEqual(s2.status, 'online', 'no session without a token');
        assert.equal(s2.posts.length, 0, 'and no data');
      } finally {
        await c2.close();
      }
    } finally {
      await ctx.close();
      await node.stop();
      rmSync(dir, { recursive: true, force: true });
    }
  });

  test(`a page idle longer than --ws-idle-timeout (${IDLE_S} s) stays connected`, async () => {
    const ctx = await context();
    const cw = await context();
    try {
      const idle = await openDemo(ctx, srv.url, { name: 'heidi' });
      await until(async () => (await shown(idle)).status === 'online', 10000, 'online');
      await until(async () => (await shown(idle)).pending === 0, 10000, 'settled');
      const opened = await metric(srv, 'crdtd_ws_sessions_opened_total');
      let drops = 0;
      await idle.exposeFunction('__statusSeen', (s) => { if (s !== 'online') drops++; });
      await idle.evaluate(() => globalThis.crdtdDemo.client.on('status', (e) => __statusSeen(e.status)));
      await new Promise((r) => setTimeout(r, IDLE_S * 3 * 1000 + 500));
      assert.equal((await shown(idle)).status, 'online');
      assert.equal(drops, 0, 'the session never dropped');
      assert.equal(await metric(srv, 'crdtd_ws_sessions_opened_total'), opened,
        'no new session was opened (no resume after an idle close)');
      // and it still listens: a write from elsewhere arrives
      const w = await openDemo(cw, srv.url, { name: 'ivan' });
      await until(async () => (await shown(w)).status === 'online', 10000, 'writer online');
      await post(w, 'ivan, to the idle page');
      await until(() => postByText(idle, 'ivan, to the idle page'), 10000, 'the idle page gets it');
    } finally {
      await ctx.close();
      await cw.close();
    }
  });
});
