// Resuming after a reconnect with the npm socket.io-client 4.x and 2.x, unchanged,
// against the real binary serving the example app (schema/): a client that comes back
// with the last `seq` it saw (`auth: {token, lastSeq}`, or `query: {token, lastSeq}` on
// 2.x) and re-joins its channels in its `connect` handler gets exactly what it missed
// and may read, in order, then live events, nothing twice, and never a row it may not
// read (another user's note: notes are owner-only). It comes back by `socket.connect()`
// after `disconnect()`, and by the library's own reconnection after the network drops.
// And a browser's own EventSource (StaticBackend's client in Chromium, on a page from
// another origin) that reconnects by itself after the network drops, sending the last
// `id:` it saw as `Last-Event-ID`.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { io } from 'socket.io-client';
import io2 from 'socket.io-client-v2';
import { createServer, connect } from 'node:net';
import { createServer as createHttpServer } from 'node:http';
import { readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { startServer, once, noSid, noBrowser, launchBrowser } from './server.js';

// @staticbackend/js's browser build (the global `sb`), served as shipped.
const SB_BROWSER_BUILD = readFileSync(createRequire(import.meta.url).resolve('@staticbackend/js/backend'));

let server;
let alice;
let bob;
const sockets = [];

before(async () => {
  server = await startServer();
  alice = await server.user('alice@resume.test', 'User');
  bob = await server.user('bob@resume.test', 'User');
});

after(async () => {
  for (const s of sockets) s.close();
  assert.equal(await server.stop(), 0);
});

/** The sequence number an event carries: `seq` in its payload, or `{seq}` second. */
function seqOf(args) {
  for (const a of args.slice(0, 2)) if (Number.isInteger(a?.seq)) return a.seq;
  return undefined;
}

// Events a 2.x socket is listened to for (it has no `onAny`).
const V2_EVENTS = ['db_created', 'db_updated', 'db_deleted', '/items/POST', 'items', 'notes', 'recovered', 'itemAdded', 'error'];

/**
 * Everything `socket` receives, in arrival order, as `{name, args}`; a client also
 * notes its join acks here (`ack <channel>`), so the order against events shows.
 * `until(pred)` resolves with the first entry matching, now or later.
 */
function journal(socket) {
  const seen = [];
  const waiters = new Set();
  seen.note = (name, args) => {
    seen.push({ name, args });
    for (const w of waiters) w();
  };
  if (socket.onAny) socket.onAny((name, ...args) => seen.note(name, args));
  else for (const name of V2_EVENTS) socket.on(name, (...args) => seen.note(name, args));
  seen.until = (pred, what, ms = 5000) => new Promise((resolve, reject) => {
    const check = () => {
      const hit = seen.find(pred);
      if (!hit) return;
      waiters.delete(check);
      clearTimeout(timer);
      resolve(hit);
    };
    const timer = setTimeout(() => {
      waiters.delete(check);
      reject(new Error(`no ${what} within ${ms} ms; saw ${JSON.stringify(seen)}`));
    }, ms);
    waiters.add(check);
    check();
  });
  return seen;
}

const isDb = (channel, field, value) => (e) =>
  e.name === 'db_created' && e.args[0].channel === channel && e.args[0].data[field] === value;
const isAdded = (name) => (e) => e.name === 'itemAdded' && e.args[0].name === name;

async function create(who, object, body) {
  const r = await server.request('POST', `/1/objects/${object}`, `Bearer ${who.token}`, body);
  assert.equal(r.status, 200, JSON.stringify(r.body));
  return r.body;
}

/**
 * Bob watches his own notes, so the test knows the number of the one alice must never
 * get.
 */
async function bobsNotes() {
  const s = io(server.base, { transports: ['websocket'], auth: { token: bob.token }, reconnection: false });
  sockets.push(s);
  await once(s, 'connect');
  assert.equal((await s.emitWithAck('join', 'db-notes')).ok, true);
  return journal(s);
}

/**
 * The writes made while the client is away: two items (every User reads items), a
 * note of alice's (hers to read), and between them a note of bob's, which alice may
 * not read. Returns the number of bob's note.
 */
async function writeWhileAway(tag, bobs) {
  await create(alice, 'items', { name: `${tag} away 1` });
  await create(bob, 'notes', { title: `${tag} bob's secret` });
  await create(bob, 'items', { name: `${tag} away 2` });
  await create(alice, 'notes', { title: `${tag} her note` });
  const secret = await bobs.until(isDb('db-notes', 'title', `${tag} bob's secret`), "bob's note");
  return seqOf(secret.args);
}

/**
 * What the client got from its reconnection on (`seen.slice(from)`), checked: the
 * missed readable events, each once, in order, before the ack of the join that owed
 * them (LoopBack names before `recovered`), then the live ones; nothing from before it
 * left and nothing about bob's note; `recovered` and both acks say recovered.
 */
function checkResumed(seen, from, { tag, lastSeq, forbidden }) {
  const got = seen.slice(from);
  const where = (pred) => got.findIndex(pred);
  const dump = JSON.stringify(got);
  const numbered = got.filter((e) => seqOf(e.args) !== undefined && e.name !== 'recovered');

  for (const e of numbered) {
    assert.ok(seqOf(e.args) > lastSeq, `${e.name} seq ${seqOf(e.args)} was seen before it left (lastSeq ${lastSeq}): ${dump}`);
    assert.notEqual(seqOf(e.args), forbidden, `an event of bob's note reached alice: ${dump}`);
  }
  assert.ok(!dump.includes("bob's secret"), `bob's note reached alice: ${dump}`);

  // Each feed: exactly the events owed, then the live one, in sequence order, once.
  const feed = (pred, field) => got.filter(pred).map((e) => [e.args[0][field], seqOf(e.args)]);
  const inOrder = (name, entries, expected) => {
    assert.deepEqual(entries.map(([v]) => v), expected, `${name}: ${dump}`);
    const seqs = entries.map(([, s]) => s);
    assert.ok(seqs.every((s, i) => i === 0 || s > seqs[i - 1]), `${name} out of order: ${seqs}`);
  };
  inOrder('db-items', feed((e) => e.name === 'db_created' && e.args[0].channel === 'db-items', 'data')
    .map(([d, s]) => [d.name, s]), [`${tag} away 1`, `${tag} away 2`, `${tag} live`]);
  inOrder('db-notes', feed((e) => e.name === 'db_created' && e.args[0].channel === 'db-notes', 'data')
    .map(([d, s]) => [d.title, s]), [`${tag} her note`]);
  inOrder('/items/POST', feed((e) => e.name === '/items/POST', 'name'),
    [`${tag} away 1`, `${tag} away 2`, `${tag} live`]);
  inOrder('itemAdded', feed((e) => e.name === 'itemAdded', 'name'),
    [`${tag} away 1`, `${tag} away 2`, `${tag} live`]);

  // Replays come before what announces them; live events after all of it.
  const recoveredAt = where((e) => e.name === 'recovered');
  const itemsAck = where((e) => e.name === 'ack db-items');
  const notesAck = where((e) => e.name === 'ack db-notes');
  assert.ok(recoveredAt >= 0 && itemsAck >= 0 && notesAck >= 0, dump);
  assert.ok(where((e) => e.name === '/items/POST' && e.args[0].name === `${tag} away 2`) < recoveredAt, dump);
  assert.ok(where(isAdded(`${tag} away 2`)) < recoveredAt, dump);
  assert.ok(where(isDb('db-items', 'name', `${tag} away 2`)) < itemsAck, dump);
  assert.ok(where(isDb('db-notes', 'title', `${tag} her note`)) < notesAck, dump);
  const live = Math.min(where(isDb('db-items', 'name', `${tag} live`)),
    where((e) => e.name === '/items/POST' && e.args[0].name === `${tag} live`));
  assert.ok(live > Math.max(recoveredAt, itemsAck, notesAck), dump);

  const recovered = got[recoveredAt].args[0];
  // At connection: the two items' LoopBack names and their `itemAdded` (her identity
  // rooms), nothing else.
  assert.deepEqual({ ...recovered, seq: typeof recovered.seq }, { recovered: true, replayed: 4, seq: 'number' });
  assert.ok(recovered.seq >= forbidden, JSON.stringify(recovered));
  const acks = { items: got[itemsAck].args[0], notes: got[notesAck].args[0] };
  for (const [object, ack] of Object.entries(acks)) {
    assert.deepEqual({ ...noSid(ack), seq: typeof ack.seq },
      { ok: true, channel: `db-${object}`, recovered: true, seq: 'number' });
    assert.ok(ack.seq > lastSeq, JSON.stringify(ack));
  }
}

/**
 * A TCP relay in front of the server that can go down as a network does: `cut()` drops
 * every connection through it and refuses new ones until `restore()`. Clients that
 * connect to `base` reconnect by themselves, as they would after a real outage.
 */
async function network() {
  const open = new Set();
  let down = false;
  const relay = createServer((client) => {
    if (down) return client.destroy();
    const upstream = connect(Number(new URL(server.base).port), '127.0.0.1');
    for (const [a, b] of [[client, upstream], [upstream, client]]) {
      open.add(a);
      a.on('error', () => {});
      a.on('close', () => { open.delete(a); b.destroy(); });
      a.pipe(b);
    }
  });
  await new Promise((resolve) => relay.listen(0, '127.0.0.1', resolve));
  after(() => relay.close());
  return {
    base: `http://127.0.0.1:${relay.address().port}`,
    cut() {
      down = true;
      for (const s of open) s.destroy();
    },
    restore() { down = false; },
  };
}

/**
 * One client's whole story: connected (its `connect` handler joins db-items and
 * db-notes, as apps do), sees an item; leaves (`leave`); misses four writes; comes back
 * (`comeBack(lastSeq)`), gets what it missed; then a live item. `open(seen)` makes the
 * socket and adapts the library: `{s, join(channel) → ack, leave, comeBack}`; `seen()`
 * is the highest `seq` an event brought it so far, what an app keeps.
 */
async function story(tag, open) {
  const bobs = await bobsNotes();
  let lastSeq;
  const { s, join, leave, comeBack } = open(() => lastSeq);
  sockets.push(s);
  // Listening from before the socket can have connected.
  const seen = journal(s);
  s.on('connect', async () => {
    for (const channel of ['db-items', 'db-notes']) seen.note(`ack ${channel}`, [await join(channel)]);
  });
  const track = (...args) => {
    const seq = seqOf(args);
    if (seq !== undefined && (lastSeq === undefined || seq > lastSeq)) lastSeq = seq;
  };
  for (const name of ['db_created', '/items/POST', 'itemAdded']) s.on(name, track);

  await seen.until((e) => e.name === 'ack db-notes', 'the first joins');
  assert.deepEqual(noSid(seen.find((e) => e.name === 'ack db-items').args[0]), { ok: true, channel: 'db-items' });
  await create(alice, 'items', { name: `${tag} before` });
  const first = await seen.until(isDb('db-items', 'name', `${tag} before`), 'the first item');
  await seen.until((e) => e.name === '/items/POST' && seqOf(e.args) === seqOf(first.args), 'its LoopBack name');
  // The example app's afterCreate announces it: an entry of the log of its own, after it.
  const announced = await seen.until(isAdded(`${tag} before`), 'its itemAdded');
  assert.ok(seqOf(announced.args) > seqOf(first.args), JSON.stringify(announced));
  assert.equal(lastSeq, seqOf(announced.args));

  await leave();
  const forbidden = await writeWhileAway(tag, bobs);
  const from = seen.length;
  await comeBack(lastSeq);
  await seen.until((e, i) => i >= from && e.name === 'recovered', 'recovered');
  await seen.until((e, i) => i >= from && e.name === 'ack db-notes', 'the joins again');
  await create(alice, 'items', { name: `${tag} live` });
  // Live, and after anything bob's note could have come with (delivery is in order).
  await seen.until(isDb('db-items', 'name', `${tag} live`), 'the live item');
  await seen.until((e) => e.name === '/items/POST' && e.args[0].name === `${tag} live`, 'its LoopBack name');
  await seen.until(isAdded(`${tag} live`), 'its itemAdded');
  checkResumed(seen, from, { tag, lastSeq: seqOf(announced.args), forbidden });
}

test('socket.io-client 4.x: disconnect, set socket.auth {token, lastSeq}, connect: exactly what it missed, then live', async () => {
  await story('v4', () => {
    const s = io(server.base, { transports: ['websocket'], auth: { token: alice.token }, reconnection: false });
    return {
      s,
      join: (channel) => s.emitWithAck('join', channel),
      leave: async () => {
        const gone = once(s, 'disconnect');
        s.disconnect();
        await gone;
      },
      comeBack: async (lastSeq) => {
        // As the socket.io docs change credentials: update `auth`, then connect again.
        s.auth = { token: alice.token, lastSeq };
        s.connect();
      },
    };
  });
});

test('socket.io-client 4.x: the network drops, the library reconnects by itself with auth as a function', async () => {
  const net = await network();
  await story('auto', (lastSeq) => {
    const s = io(net.base, {
      transports: ['websocket'],
      reconnectionDelay: 50,
      reconnectionDelayMax: 200,
      // Called at every (re)connection: the docs' way to send credentials that change
      // (`lastSeq: undefined`, before any event, is left out of the JSON).
      auth: (cb) => cb({ token: alice.token, lastSeq: lastSeq() }),
    });
    return {
      s,
      join: (channel) => s.emitWithAck('join', channel),
      leave: async () => {
        const gone = once(s, 'disconnect');
        net.cut();
        assert.equal(await gone, 'transport close');
      },
      comeBack: async () => net.restore(),
    };
  });
});

test('socket.io-client 2.x: the network drops; on reconnect_attempt the query gets {token, lastSeq}', async () => {
  const net = await network();
  await story('v2', (lastSeq) => {
    const s = io2(net.base, {
      transports: ['websocket'], query: { token: alice.token }, forceNew: true,
      reconnectionDelay: 50, reconnectionDelayMax: 200,
    });
    // socket.io 2.x's documented way to change the handshake query before reconnecting.
    s.on('reconnect_attempt', () => { s.io.opts.query = { token: alice.token, lastSeq: lastSeq() }; });
    return {
      s,
      join: (channel) => new Promise((resolve) => s.emit('join', channel, resolve)),
      leave: async () => {
        const gone = once(s, 'disconnect');
        net.cut();
        assert.equal(await gone, 'transport close');
      },
      comeBack: async () => net.restore(),
    };
  });
});

test('a lastSeq that is no sequence number is refused at the handshake, saying so', async () => {
  for (const lastSeq of ['soon', -1]) {
    const s = io(server.base, { transports: ['websocket'], auth: { token: alice.token, lastSeq }, reconnection: false });
    sockets.push(s);
    const err = await once(s, 'connect_error');
    assert.match(err.message, /lastSeq/, `lastSeq ${JSON.stringify(lastSeq)}`);
  }
  for (const lastSeq of ['soon', '-1']) {
    const old = io2(server.base, { transports: ['websocket'], query: { token: alice.token, lastSeq }, reconnection: false, forceNew: true });
    sockets.push(old);
    const refused = await once(old, 'error');
    assert.match(String(refused?.message ?? refused), /lastSeq/, `?lastSeq=${lastSeq}`);
  }
});

test('a browser EventSource (@staticbackend/js in Chromium, another origin) reconnects by itself with Last-Event-ID and gets what it missed', { skip: noBrowser }, async () => {
  const net = await network();
  const page = createHttpServer((req, res) => {
    if (req.url === '/backend.js') {
      res.writeHead(200, { 'content-type': 'application/javascript' });
      return res.end(SB_BROWSER_BUILD);
    }
    res.writeHead(200, { 'content-type': 'text/html; charset=utf-8' });
    res.end('<!doctype html><meta charset="utf-8"><script src="/backend.js"></script>');
  });
  await new Promise((resolve) => page.listen(0, 'localhost', resolve));
  const browser = await launchBrowser();
  try {
    const tab = await browser.newPage();
    await tab.goto(`http://localhost:${page.address().port}/`);
    // As an app does with this library: on every `token` (the library authenticates
    // again by itself on each new connection's `init`), join the channel again.
    await tab.evaluate(([base, token]) => {
      const be = new window.sb.Backend('livebase-public-key', base);
      window.be = be;
      window.seen = [];
      window.authed = 0;
      be.connect(token, () => { window.authed += 1; be.send('join', 'db-notes'); },
        (msg) => window.seen.push(msg));
    }, [net.base, alice.token]);
    const seen = () => tab.evaluate(() => window.seen);
    const until = async (pred, what) => {
      for (const started = Date.now(); Date.now() - started < 15000;) {
        const all = await seen();
        const i = all.findIndex(pred);
        if (i >= 0) return { at: i, msg: all[i], all };
        await new Promise((r) => setTimeout(r, 50));
      }
      throw new Error(`no ${what}; saw ${JSON.stringify(await seen())}`);
    };
    const note = (title) => (m) => m.type === 'db_created' && JSON.parse(m.data).title === title;
    await until((m) => m.type === 'joined' && m.channel === 'db-notes', 'the first join');

    await create(alice, 'notes', { title: 'sse before' });
    const before = (await until(note('sse before'), 'the first note')).msg;
    assert.equal(typeof before.seq, 'number', JSON.stringify(before));

    net.cut();
    // The browser notices and keeps retrying by itself (readyState CONNECTING).
    await tab.waitForFunction(() => window.be.sseClient.readyState === 0, null, { timeout: 10000 });
    await create(alice, 'notes', { title: 'sse away 1' });
    const secret = await create(bob, 'notes', { title: "sse bob's secret" });
    await create(alice, 'notes', { title: 'sse away 2' });
    const from = (await seen()).length;
    net.restore();

    // Back: authenticated again, joined again, and what she missed replayed.
    await until((m, i) => i >= from && m.type === 'recovered', 'recovered');
    await until(note('sse away 2'), 'the missed notes');
    await create(alice, 'notes', { title: 'sse live' });
    const { all } = await until(note('sse live'), 'the live note');
    const after = all.slice(from);
    const dump = JSON.stringify(after);
    assert.ok(await tab.evaluate(() => window.authed) >= 2, dump);
    const recovered = after.find((m) => m.type === 'recovered');
    assert.equal(recovered.data.recovered, true, dump);
    const notes = after.filter((m) => m.type === 'db_created');
    assert.deepEqual(notes.map((m) => JSON.parse(m.data).title), ['sse away 1', 'sse away 2', 'sse live'], dump);
    const seqs = notes.map((m) => m.seq);
    assert.ok(seqs[0] > before.seq && seqs.every((q, i) => i === 0 || q > seqs[i - 1]), dump);
    assert.ok(!dump.includes("bob's secret") && !seqs.includes(secret.seq), dump);
    // The replay came before the join's answer, the live note after it.
    const joined = after.findIndex((m) => m.type === 'joined');
    assert.ok(joined > after.findIndex(note('sse away 2')) && joined < after.findIndex(note('sse live')), dump);
  } finally {
    await browser.close();
    page.close();
  }
});
