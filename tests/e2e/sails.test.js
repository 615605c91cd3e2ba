// sails.io.js 1.2.1, unchanged, over socket.io-client 2.x in Node and in headless
// Chromium (a page on another origin), against the real binary: it authenticates with the handshake query (`io.sails.query = 'token=…'`) or
// an `Authorization` header on the handshake (`initialConnectionHeaders`), then makes
// virtual requests and receives resourceful pub-sub events as that user.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import sailsIOClient from 'sails.io.js';
import io2 from 'socket.io-client-v2';
import { createServer } from 'node:http';
import { readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { startServer, once, noBrowser, launchBrowser } from './server.js';

const io = sailsIOClient(io2);
io.sails.autoConnect = false;
io.sails.reconnection = false;
io.sails.environment = 'production';

let server;
let alice;
let bob;
const sockets = [];

before(async () => {
  server = await startServer();
  alice = await server.user('alice@sails.test', 'User');
  bob = await server.user('bob@sails.test', 'User');
});

after(async () => {
  for (const s of sockets) if (s.isConnected()) s.disconnect();
  assert.equal(await server.stop(), 0);
});

function connect(options) {
  const s = io.sails.connect(server.base, { transports: ['websocket'], ...options });
  sockets.push(s);
  return s;
}

/** The next `event` on a sails.io.js socket (it has `on`/`off`, no `once`). */
function next(s, event, ms = 5000) {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`no \`${event}\` within ${ms} ms`)), ms);
    const handler = (data) => { clearTimeout(timer); s.off(event, handler); resolve(data); };
    s.on(event, handler);
  });
}

/** A sails.io.js request as a promise of `[body, jwr]`. */
function request(s, method, url, data) {
  return new Promise((resolve) => s[method](url, data, (body, jwr) => resolve([body, jwr])));
}

test('the handshake query token authenticates; virtual requests act as that user', async () => {
  const s = connect({ query: `token=${alice.token}` });
  await next(s, 'connect');
  const [created, jwr] = await request(s, 'post', '/notes', { title: 'mine' });
  assert.equal(jwr.statusCode, 200, JSON.stringify(created));
  const id = created.__metadata.id;
  const [read] = await request(s, 'get', `/notes/${id}`, {});
  assert.equal(read.title, 'mine', JSON.stringify(read));
  // notes are owner-only: the row is alice's, so bob, over REST, does not see it.
  const bobs = await server.request('GET', `/1/objects/notes/${id}`, `Bearer ${bob.token}`);
  assert.equal(bobs.status, 404);
  const alices = await server.request('GET', `/1/objects/notes/${id}`, `Bearer ${alice.token}`);
  assert.equal(alices.status, 200);
});

test('an Authorization header on the handshake authenticates, and pub-sub follows it', async () => {
  const s = connect({ initialConnectionHeaders: { Authorization: `Bearer ${bob.token}` } });
  await next(s, 'connect');
  // Listing items watches the object: created rows the user may read arrive as events.
  const [, jwr] = await request(s, 'get', '/items', {});
  assert.equal(jwr.statusCode, 200);
  const event = next(s, 'items');
  const made = await server.request('POST', '/1/objects/items', `Bearer ${alice.token}`, { name: 'seen by bob' });
  assert.equal(made.status, 200);
  const got = await event;
  assert.equal(got.verb, 'created');
  assert.equal(got.data.name, 'seen by bob');
});

test('without credentials virtual requests are refused, and a bad token is refused at connect', async () => {
  const none = connect({});
  await next(none, 'connect');
  const [body, jwr] = await request(none, 'get', '/items', {});
  assert.equal(jwr.statusCode, 401, JSON.stringify(body));
  const bad = connect({ query: 'token=not-a-token' });
  const refused = await once(bad._raw, 'error');
  assert.match(String(refused?.message ?? refused), /token/i);
});

// The browser: the socket.io 2.x build and sails.io.js as script tags, as Sails apps
// load them, on a page whose origin is not livebase's. Cross-origin, sails.io.js first
// loads `/__getcookie` as a script and connects only after it ran.
const require = createRequire(import.meta.url);
const SCRIPTS = {
  '/socket.io.js': readFileSync(require.resolve('socket.io-client-v2/dist/socket.io.js')),
  '/sails.io.js': readFileSync(require.resolve('sails.io.js/sails.io.js')),
};
const PAGE = `<!doctype html><meta charset="utf-8">
<script src="/socket.io.js"></script>
<script src="/sails.io.js" autoConnect="false" environment="production"></script>
<script>
io.sails.reconnection = false;
// Connects with \`options\`, creates a note; answers what it saw.
window.run = (url, options) => new Promise((resolve) => {
  const s = io.sails.connect(url, options);
  const done = (r) => { clearTimeout(timer); resolve(r); };
  const timer = setTimeout(() => done({ error: 'timed out' }), 10000);
  s.on('connect', () => s.post('/notes', { title: 'from chromium' }, (made, jwr) => done({ status: jwr.statusCode, made })));
  s.on('error', (e) => done({ error: String(e && e.message || e) }));
});
</script>`;

test('in Chromium: the query token and a handshake header (polling) authenticate', { skip: noBrowser }, async () => {
  const pages = createServer((req, res) => {
    const script = SCRIPTS[req.url];
    res.writeHead(200, { 'content-type': script ? 'application/javascript' : 'text/html; charset=utf-8' });
    res.end(script ?? PAGE);
  });
  await new Promise((r) => pages.listen(0, 'localhost', r));
  const browser = await launchBrowser();
  try {
    // One page per socket, as apps have: the tab's close ends it.
    const run = async (options) => {
      const tab = await browser.newPage();
      try {
        await tab.goto(`http://localhost:${pages.address().port}/`);
        return await tab.evaluate(([url, o]) => window.run(url, o), [server.base, options]);
      } finally {
        await tab.close();
      }
    };
    // notes are owner-only: the note is readable by the user it was made as, only.
    const madeBy = async (result, owner, other) => {
      assert.equal(result.status, 200, JSON.stringify(result));
      const path = `/1/objects/notes/${result.made.__metadata.id}`;
      assert.equal((await server.request('GET', path, `Bearer ${owner.token}`)).status, 200);
      assert.equal((await server.request('GET', path, `Bearer ${other.token}`)).status, 404);
    };
    await madeBy(await run({ query: `token=${alice.token}` }), alice, bob);
    // In a browser, handshake headers exist only on polling requests (sails.io.js says so).
    await madeBy(await run({ transports: ['polling'], initialConnectionHeaders: { Authorization: `Bearer ${bob.token}` } }), bob, alice);
    const none = await run({});
    assert.equal(none.status, 401, JSON.stringify(none));
    const bad = await run({ query: 'token=not-a-token' });
    assert.match(bad.error ?? '', /token/i, JSON.stringify(bad));
  } finally {
    await browser.close();
    pages.close();
  }
});
