// sw.js - the demo's service worker: keeps the page's files so that it loads offline.
// At install it caches every file of files.json (the list the build writes beside the app);
// afterwards each file is fetched from the network first (an update shows at the next load) and
// from the cache when the network fails. The API (/v1/, /healthz, /metrics) and the WebSocket
// are never cached: offline, the client's replica and its IndexedDB queue are the data.
const CACHE = 'crdtd-demo-v1';

self.addEventListener('install', (ev) => {
  ev.waitUntil((async () => {
    const cache = await caches.open(CACHE);
    const list = await (await fetch('files.json', { cache: 'no-cache' })).json();
    await cache.addAll(list.map((f) => new Request(f, { cache: 'no-cache' })));
    await self.skipWaiting();
  })());
});

self.addEventListener('activate', (ev) => {
  ev.waitUntil((async () => {
    for (const k of await caches.keys()) if (k !== CACHE) await caches.delete(k);
    await self.clients.claim();
  })());
});

function isApi(url) {
  return url.pathname === '/v1' || url.pathname.startsWith('/v1/') ||
    url.pathname === '/healthz' || url.pathname === '/metrics';
}

self.addEventListener('fetch', (ev) => {
  const req = ev.request;
  const url = new URL(req.url);
  if (req.method !== 'GET' || url.origin !== self.location.origin || isApi(url)) return;
  ev.respondWith((async () => {
    const cache = await caches.open(CACHE);
    try {
      const res = await fetch(req);
      if (res.ok) await cache.put(req, res.clone());
      return res;
    } catch (e) {
      const hit = await cache.match(req, { ignoreSearch: true }) ||
        (req.mode === 'navigate' ? await cache.match('./') : undefined);
      if (hit) return hit;
      throw e;
    }
  })());
});
