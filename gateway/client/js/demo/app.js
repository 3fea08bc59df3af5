// app.js - the demo activity feed crdtd serves at /: posts in a timeline, a like counter per post,
// a follow set per person, the connection's state and the writes still pending. Everything is
// read from the client's local replica, so the page works the same offline; the service worker
// (sw.js, registered by index.html) keeps the page itself for offline loads. docs/web-client.md explains the parts.
//
// Keys: 'feed' (timeline; a member is a post as JSON {id, by, text}, its score the time in ms),
// 'likes:<post id>' (PN-counter), 'mylikes:<name>' (LWW-set of the post ids <name> likes, so the
// button toggles), 'follows:<name>' (LWW-set of the names <name> follows).

import { CrdtWasm } from './client.js';
import { IndexedDBStorage } from './idb-storage.js';
import { openShared } from './tabs.js';

const $ = (id) => document.getElementById(id);

/** The person this browser posts as: ?name=... (kept), else the one kept, else a made-up one. */
function myName() {
  const given = new URLSearchParams(location.search).get('name');
  const valid = (n) => typeof n === 'string' && /^[A-Za-z0-9_.-]{1,32}$/.test(n);
  if (valid(given)) localStorage.setItem('crdtd-demo-name', given);
  let name = localStorage.getItem('crdtd-demo-name');
  if (!valid(name)) {
    const a = ['brisk', 'calm', 'eager', 'merry', 'quiet', 'sunny', 'witty', 'bold'];
    const b = ['otter', 'heron', 'lynx', 'finch', 'badger', 'marten', 'wren', 'hare'];
    const r = crypto.getRandomValues(new Uint32Array(3));
    name = `${a[r[0] % a.length]}-${b[r[1] % b.length]}-${r[2] % 1000}`;
    localStorage.setItem('crdtd-demo-name', name);
  }
  return name;
}

/** A token for a crdtd with --token-secret-file: ?token=... (kept), else the one kept. */
function myToken() {
  const given = new URLSearchParams(location.search).get('token');
  if (given) localStorage.setItem('crdtd-demo-token', given);
  return localStorage.getItem('crdtd-demo-token') || null;
}

function showError(msg) {
  const el = $('error');
  el.textContent = msg;
  el.hidden = !msg;
}

function parsePost(member) {
  try {
    const p = JSON.parse(member);
    if (p && typeof p.id === 'string' && typeof p.by === 'string' && typeof p.text === 'string')
      return p;
  } catch {
    /* not one of ours: shown as text */
  }
  return { id: member, by: '?', text: member };
}

function el(tag, props = {}, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(props)) {
    if (k === 'dataset') Object.assign(e.dataset, v);
    else if (k in e) e[k] = v;
    else e.setAttribute(k, v);
  }
  for (const c of children) e.append(c);
  return e;
}

async function main() {
  const me = myName();
  $('me').textContent = me;
  const wasm = await CrdtWasm.load(new URL('./crdt.wasm', import.meta.url));
  const scheme = location.protocol === 'https:' ? 'wss' : 'ws';
  const client = await openShared({
    url: `${scheme}://${location.host}/`,
    wasm,
    token: myToken(),
    storage: new IndexedDBStorage({ name: 'crdtd-demo' }),
    channel: 'crdtd-demo',
  });
  const feed = client.timeline('feed');
  const follows = client.lwwset(`follows:${me}`);
  const mylikes = client.lwwset(`mylikes:${me}`);
  const unsent = new Set(); // ids of this page's posts not yet acknowledged

  let view = 'all';
  let scheduled = false;
  const render = () => {
    if (scheduled) return;
    scheduled = true;
    requestAnimationFrame(() => {
      scheduled = false;
      draw();
    });
  };

  function draw() {
    const following = new Set(follows.members());
    $('following-count').textContent = String(following.size);
    $('following').textContent = following.size ? `: ${[...following].sort().join(', ')}` : '';
    const items = [];
    for (const { member, score } of feed.newest(200)) {
      const p = parsePost(member);
      if (view === 'following' && p.by !== me && !following.has(p.by)) continue;
      const likes = client.pncounter(`likes:${p.id}`).value();
      const liked = mylikes.has(p.id);
      const like = el('button', {
        className: 'quiet like',
        type: 'button',
        textContent: `♥ ${likes}`,
        title: liked ? 'unlike' : 'like',
      });
      like.setAttribute('aria-pressed', String(liked));
      like.onclick = () => {
        if (mylikes.has(p.id)) {
          client.pncounter(`likes:${p.id}`).decr();
          mylikes.remove(p.id);
        } else {
          client.pncounter(`likes:${p.id}`).incr();
          mylikes.add(p.id);
        }
        render();
      };
      const meta = el('div', { className: 'meta' }, el('span', { className: 'by', textContent: p.by }),
        el('time', { dateTime: new Date(score).toISOString(),
          textContent: new Date(score).toLocaleTimeString([], { hour: '2-digit', minute: '2-digit' }) }),
        el('span', { className: 'spacer' }));
      if (p.by !== me) {
        const f = following.has(p.by);
        const fb = el('button', { className: 'quiet follow', type: 'button',
          textContent: f ? 'Following' : 'Follow' });
        fb.setAttribute('aria-pressed', String(f));
        fb.onclick = () => {
          if (follows.has(p.by)) follows.remove(p.by);
          else follows.add(p.by);
          render();
        };
        meta.append(fb);
      }
      meta.append(like);
      items.push(el('li', { className: unsent.has(p.id) ? 'unsent' : '',
        dataset: { id: p.id, by: p.by, likes: String(likes) } },
        meta, el('p', { className: 'text', textContent: p.text })));
    }
    $('feed').replaceChildren(...items);
    $('empty').hidden = items.length > 0;
  }

  function showStatus() {
    const s = $('status');
    s.dataset.status = client.status;
    s.textContent = client.status;
    const n = client.pending;
    const p = $('pending');
    p.dataset.count = String(n);
    p.textContent = `${n} pending`;
    $('role').textContent = client.role === 'solo' ? '' : `${client.role} tab`;
  }

  client.on('change', render);
  client.on('status', showStatus);
  client.on('pending', showStatus);
  client.on('status', ({ status }) => { if (status === 'online') showError(''); });
  client.on('error', (e) => {
    if (e.code !== 'transport') showError(`${e.code}: ${e.message}`);
  });

  $('compose').addEventListener('submit', (ev) => {
    ev.preventDefault();
    const text = $('text').value.trim();
    if (!text) return;
    const id = `${client.clientId}.${Date.now().toString(36)}.${Math.random().toString(36).slice(2, 6)}`;
    const op = feed.add(JSON.stringify({ id, by: me, text }), Date.now());
    $('text').value = '';
    if (op !== null) {
      unsent.add(id);
      client.whenAcked(op).then(() => { unsent.delete(id); render(); }, () => {});
    }
    render();
  });
  for (const r of document.querySelectorAll('input[name=view]'))
    r.addEventListener('change', () => { view = r.value; render(); });

  // The client follows the browser's online/offline events itself (an open WebSocket may sit
  // silent long after the network went away): its status is what the page shows.
  showStatus();
  draw();
  // topics are kept across reconnects and reloads; the catch-up arrives as change events
  const subscribed = client.subscribe({
    keys: ['feed', `follows:${me}`, `mylikes:${me}`],
    prefixes: ['likes:'],
  });
  // resolved once the catch-up is in (offline: after the next connection's); a refusal is shown
  // by the error event
  subscribed.catch(() => {});
  // what the tests and the curious reach from the console
  globalThis.crdtdDemo = { client, me, subscribed };
  document.body.dataset.ready = 'true';
}

main().catch((e) => {
  console.error(e);
  const missing = /crdt\.wasm/.test(String(e && e.message)) || (e && e.name === 'CompileError');
  showError(missing
    ? `cannot load crdt.wasm (${e.message}): build it with scripts/setup-debian.sh and cmake`
    : `cannot start: ${e && e.message ? e.message : e}`);
  document.body.dataset.ready = 'error';
});
