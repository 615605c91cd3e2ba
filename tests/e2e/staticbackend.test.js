// @staticbackend/js 1.7.0, unchanged, against livebase: Server-Sent Events (`connect`)
// and the raw WebSocket (`connectWS`), in Node 20 (with the npm `eventsource` and `ws`
// packages as the globals it expects) and in headless Chromium with the package's own
// browser build, on a page from another origin. Each run authenticates with a livebase
// access token, joins a channel, sends and receives, and gets a db event on `db-notes`
// (owner-secured) that a second client, who may not read that row, does not get.
// 1.7.0's `connectWS` never sends `auth` itself (see `scenario`); the app sends it.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { createServer } from 'node:http';
import { readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { EventSource } from 'eventsource';
import { WebSocket } from 'ws';
import { Backend } from '@staticbackend/js';
import { startServer, noBrowser, launchBrowser } from './server.js';

const require = createRequire(import.meta.url);
// The package's browser build (an IIFE defining the global `sb`), served as shipped.
const BROWSER_BUILD = readFileSync(require.resolve('@staticbackend/js/backend'));

// What the client library needs in Node 20.
globalThis.EventSource = EventSource;
globalThis.WebSocket = WebSocket;

/**
 * The scenario, run as is in Node and (as source) in the page: `Backend` is the
 * library's class, `mode` 'sse' or 'ws'. Returns what it saw; the caller asserts.
 */
async function scenario(Backend, base, alice, bob, mode) {
  const deadline = (ms, what) => new Promise((_, reject) =>
    setTimeout(() => reject(new Error(`${mode}: ${what} within ${ms} ms`)), ms));
  function client(token) {
    const be = new Backend('livebase-public-key', base);
    const seen = [];
    let authed;
    const ready = new Promise((resolve) => { authed = resolve; });
    const onMessage = (pl) => seen.push(pl);
    if (mode === 'ws') {
      be.connectWS(token, authed, onMessage);
      // 1.7.0's connectWS answers `init` with the SSE `send`, which does nothing
      // without an EventSource: it never authenticates by itself. So, as an app must,
      // send `auth` over the WebSocket once `init` gave the id; the library's own
      // handler still takes the `token` answer (and keeps the token for sendWS).
      const sendAuth = () => (be.wsId ? be.sendWS('auth', token) : setTimeout(sendAuth, 10));
      sendAuth();
    } else {
      be.connect(token, authed, onMessage);
    }
    return {
      seen,
      ready: Promise.race([ready, deadline(5000, 'no token')]),
      send: (t, d, c) => (mode === 'ws' ? be.sendWS(t, d, c) : be.send(t, d, c)),
      /** Waits for (and takes out) the first message matching `pred`. */
      async next(pred, what) {
        const started = Date.now();
        for (;;) {
          const i = seen.findIndex(pred);
          if (i >= 0) return seen.splice(i, 1)[0];
          if (Date.now() - started > 5000) {
            throw new Error(`${mode}: no ${what}; saw ${JSON.stringify(seen)}`);
          }
          await new Promise((r) => setTimeout(r, 10));
        }
      },
      close: () => (mode === 'ws' ? be.ws.close() : be.sseClient.close()),
    };
  }
  const a = client(alice);
  const b = client(bob);
  const tokens = [await a.ready, await b.ready];
  for (const c of [a, b]) {
    c.send('join', 'room');
    await c.next((m) => m.type === 'joined' && m.channel === 'room', 'joined room');
    c.send('join', 'db-notes');
    await c.next((m) => m.type === 'joined' && m.channel === 'db-notes', 'joined db-notes');
  }
  a.send('chan_in', 'hello from alice', 'room');
  const received = await b.next((m) => m.type === 'chan_out', 'chan_out at bob');
  const own = await a.next((m) => m.type === 'chan_out', 'chan_out at alice');
  a.send('chan_in', 'forged', 'db-notes');
  const refused = await a.next((m) => m.type === 'error', 'error for a db- publish');

  const created = await fetch(`${base}/1/objects/notes`, {
    method: 'POST',
    headers: { Authorization: `Bearer ${alice}`, 'Content-Type': 'application/json' },
    body: JSON.stringify({ title: 'alice only' }),
  }).then((r) => r.json());
  const event = await a.next((m) => m.type === 'db_created' && m.channel === 'db-notes',
    'db_created at alice');
  // Bob's own echo is the barrier: his messages arrive in order.
  b.send('echo', 'barrier');
  await b.next((m) => m.type === 'echo' && m.data === 'echo: barrier', 'echo at bob');
  const bobGot = b.seen.filter((m) => m.channel === 'db-notes' && m.type.startsWith('db_'));
  a.close();
  b.close();
  return { tokens, received, own, refused, created, event, bobGot };
}

function check(result, alice, bob, mode) {
  const text = JSON.stringify(result);
  assert.deepEqual(result.tokens, [alice, bob], `${mode}: auth → token: ${text}`);
  assert.equal(result.received.data, 'hello from alice', text);
  assert.equal(result.received.channel, 'room', text);
  assert.ok(result.received.sid, text);
  assert.equal(result.own.sid, result.received.sid, text);
  assert.match(result.refused.data, /db-notes/, text);
  const row = JSON.parse(result.event.data);
  assert.equal(String(row.id), result.created.__metadata.id, text);
  assert.equal(row.title, 'alice only', text);
  assert.deepEqual(result.bobGot, [], `${mode}: bob may not read alice's note: ${text}`);
}

let server;
let alice;
let bob;

before(async () => {
  server = await startServer();
  alice = (await server.user('alice@sb.test', 'User')).token;
  bob = (await server.user('bob@sb.test', 'User')).token;
});

after(async () => {
  assert.equal(await server.stop(), 0);
});

for (const mode of ['sse', 'ws']) {
  test(`@staticbackend/js in Node 20 over ${mode}`, async () => {
    const result = await scenario(Backend, server.base, alice, bob, mode);
    check(result, alice, bob, mode);
  });
}

test('@staticbackend/js browser build in Chromium, from another origin, over SSE and WS',
  { skip: noBrowser }, async () => {
    const page = createServer((req, res) => {
      if (req.url === '/backend.js') {
        res.writeHead(200, { 'content-type': 'application/javascript' });
        return res.end(BROWSER_BUILD);
      }
      res.writeHead(200, { 'content-type': 'text/html; charset=utf-8' });
      res.end('<!doctype html><meta charset="utf-8"><script src="/backend.js"></script>');
    });
    await new Promise((r) => page.listen(0, 'localhost', r));
    const browser = await launchBrowser();
    try {
      const tab = await browser.newPage();
      await tab.goto(`http://localhost:${page.address().port}/`);
      for (const mode of ['sse', 'ws']) {
        const result = await tab.evaluate(([src, base, a, b, m]) => {
          // eslint-disable-next-line no-eval
          const run = eval(`(${src})`);
          return run(window.sb.Backend, base, a, b, m);
        }, [scenario.toString(), server.base, alice, bob, mode]);
        check(result, alice, bob, `chromium ${mode}`);
      }
    } finally {
      await browser.close();
      page.close();
    }
  });
