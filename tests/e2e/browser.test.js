// socket.io 2.x's browser build, as Backand- and Sails-era apps ship it, in headless
// Chromium, on a page served from another origin than livebase: it polls with
// credentials, so it connects only if livebase answers with the page's origin (never
// `*`) and `Access-Control-Allow-Credentials: true`; then it upgrades to WebSocket.
// An origin that `--cors-origins` does not list must not connect at all.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { createServer } from 'node:http';
import { readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { startServer, ANON, noBrowser, launchBrowser } from './server.js';

const require = createRequire(import.meta.url);
const CLIENT_V2 = readFileSync(require.resolve('socket.io-client-v2/dist/socket.io.js'));

const skip = noBrowser;

const PAGE = `<!doctype html><meta charset="utf-8"><title>livebase e2e</title>
<script src="/socket.io.js"></script>
<script>
// Connects, authenticates with Backand's login (anonymous token), waits for the
// WebSocket upgrade, then asks for an echo over it.
window.run = (url, anon) => new Promise((resolve) => {
  const seen = [];
  const s = io(url, { reconnection: false, timeout: 5000 });
  seen.push('start:' + s.io.engine.transport.name);
  const done = (result) => { s.close(); resolve({ ...result, seen }); };
  const timer = setTimeout(() => done({ error: 'timed out' }), 10000);
  const finish = (result) => { clearTimeout(timer); done(result); };
  s.io.engine.on('upgrade', (t) => seen.push('upgrade:' + t.name));
  s.on('connect', () => {
    seen.push('connect:' + s.io.engine.transport.name);
    s.emit('login', '', anon, '');
  });
  s.on('authorized', () => {
    seen.push('authorized');
    const started = Date.now();
    const upgraded = () => {
      if (s.io.engine.transport.name !== 'websocket') {
        if (Date.now() - started > 5000) return finish({ error: 'no upgrade' });
        return setTimeout(upgraded, 20);
      }
      s.emit('echo', { hello: 'over websocket' }, (answer) => finish({ answer }));
    };
    upgraded();
  });
  s.on('notAuthorized', (e) => finish({ error: 'notAuthorized: ' + JSON.stringify(e) }));
  s.on('connect_error', (e) => finish({ error: 'connect_error: ' + (e && e.message || e) }));
  s.on('error', (e) => finish({ error: 'error: ' + (e && e.message || e) }));
});
</script>`;

// The Backand docs' set-up step: the page loads the client from livebase itself.
const SERVED_CLIENT_PAGE = (base) => `<!doctype html><meta charset="utf-8">
<script src="${base}/socket.io/socket.io.js"></script>
<script>
window.run = (url, anon) => new Promise((resolve) => {
  if (typeof io !== 'function') return resolve({ error: 'no io from /socket.io/socket.io.js' });
  const s = io(url, { auth: { anonymousToken: anon }, reconnection: false });
  const timer = setTimeout(() => { s.close(); resolve({ error: 'timed out' }); }, 10000);
  s.on('connect_error', (e) => { clearTimeout(timer); s.close(); resolve({ error: e.message }); });
  s.on('connect', async () => {
    const answer = await s.emitWithAck('echo', { hello: 'from the served client' });
    clearTimeout(timer);
    s.close();
    resolve({ answer, eio: s.io.engine.constructor.protocol, transport: s.io.engine.transport.name });
  });
});
</script>`;

/** A page server on `host`: the page and the socket.io 2.x browser build. */
function pageServer(host) {
  return new Promise((resolve) => {
    const srv = createServer((req, res) => {
      if (req.url.startsWith('/served-client')) {
        res.writeHead(200, { 'content-type': 'text/html; charset=utf-8' });
        return res.end(SERVED_CLIENT_PAGE(server.base));
      }
      if (req.url === '/socket.io.js') {
        res.writeHead(200, { 'content-type': 'application/javascript' });
        return res.end(CLIENT_V2);
      }
      res.writeHead(200, { 'content-type': 'text/html; charset=utf-8' });
      res.end(PAGE);
    });
    srv.listen(0, host, () => resolve({ srv, origin: `http://${host}:${srv.address().port}` }));
  });
}

let browser;
let listed;
let unlisted;
let server;

before(async () => {
  if (skip) return;
  // `localhost` pages talk to livebase on `127.0.0.1`: another host and port, so
  // another origin, as a real app's page is.
  listed = await pageServer('localhost');
  unlisted = await pageServer('localhost');
  server = await startServer(['--cors-origins', listed.origin]);
  browser = await launchBrowser();
});

after(async () => {
  if (skip) return;
  await browser?.close();
  listed?.srv.close();
  unlisted?.srv.close();
  assert.equal(await server.stop(), 0);
});

async function runPage(page, path = '/') {
  const tab = await browser.newPage();
  try {
    await tab.goto(page.origin + path);
    return await tab.evaluate(([url, anon]) => window.run(url, anon), [server.base, ANON]);
  } finally {
    await tab.close();
  }
}

test('socket.io 2.x in Chromium on a listed origin polls with credentials, then upgrades', { skip }, async () => {
  const result = await runPage(listed);
  assert.equal(result.error, undefined, JSON.stringify(result));
  // It starts by polling (credentialed XHR); it may upgrade before or after CONNECT.
  assert.equal(result.seen[0], 'start:polling', JSON.stringify(result));
  assert.ok(result.seen.some((e) => e.startsWith('connect:')), JSON.stringify(result));
  assert.ok(result.seen.includes('authorized'), JSON.stringify(result));
  assert.ok(result.seen.includes('upgrade:websocket'), JSON.stringify(result));
  assert.deepEqual(result.answer, { hello: 'over websocket' });
});

test('a page on an origin --cors-origins does not list cannot connect', { skip }, async () => {
  const result = await runPage(unlisted);
  assert.match(result.error ?? '', /connect_error|timed out/, JSON.stringify(result));
  assert.ok(!result.seen.some((s) => s.startsWith('connect:')), JSON.stringify(result));
});

test('the client livebase serves at /socket.io/socket.io.js connects from another origin', { skip }, async () => {
  const result = await runPage(listed, '/served-client');
  assert.equal(result.error, undefined, JSON.stringify(result));
  assert.deepEqual(result.answer, { hello: 'from the served client' });
  // engine.io protocol 4 is Socket.IO v5, the server's main protocol (2.x clients speak 3).
  assert.equal(result.eio, 4, JSON.stringify(result));
});
