// The npm socket.io-client (4.x, and 2.x as old Backand and sails.io.js apps use)
// against the real livebase binary serving the example app (schema/).
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { io } from 'socket.io-client';
import io2 from 'socket.io-client-v2';
import { startServer, once, record, noSid, ANON } from './server.js';

let server;
let alice;
let bob;
const sockets = [];

function connect(auth) {
  const s = io(server.base, { transports: ['websocket'], auth, reconnection: false });
  sockets.push(s);
  return s;
}

before(async () => {
  server = await startServer();
  alice = await server.user('alice@e2e.test', 'User');
  bob = await server.user('bob@e2e.test', 'User');
});

after(async () => {
  // Stopped while sockets are still open: shutdown must close them, not wait on them.
  const code = await server.stop();
  for (const s of sockets) s.close();
  assert.equal(code, 0, 'livebase exits cleanly on SIGTERM with sockets open');
});

test('handshake token: db channel events reach readers, owner rows only their owner', async () => {
  const sa = connect({ token: alice.token });
  const sb = connect({ token: `Bearer ${bob.token}` });
  await Promise.all([once(sa, 'connect'), once(sb, 'connect')]);
  for (const s of [sa, sb]) {
    assert.deepEqual(noSid(await s.emitWithAck('join', 'db-items')), { ok: true, channel: 'db-items' });
    assert.deepEqual(noSid(await s.emitWithAck('join', 'db-notes')), { ok: true, channel: 'db-notes' });
  }
  const bobSawNotes = record(sb, 'db_created');
  // Listen before writing: the event may arrive before the write's answer does.
  const aliceWaits = once(sa, 'db_created');
  const created = sa.emitWithAck('post', { method: 'post', url: '/notes', data: { title: 'private' } });
  const aliceGot = await aliceWaits;
  assert.equal(aliceGot.channel, 'db-notes');
  assert.equal(aliceGot.data.title, 'private');
  assert.equal((await created).statusCode, 200);
  // items are readable by every User: both get it; the note before it only alice.
  const bobWaits = once(sb, 'db_created');
  const item = await server.request('POST', '/1/objects/items', `Bearer ${alice.token}`, { name: 'shared' });
  assert.equal(item.status, 200);
  const bobItem = await bobWaits;
  assert.equal(bobItem.channel, 'db-items');
  assert.equal(bobItem.data.name, 'shared');
  assert.equal(bobSawNotes.filter((e) => e.channel === 'db-notes').length, 0,
    'bob must not receive alice\'s owner-secured note');
});

test('a bad token is refused with a clear connect_error', async () => {
  const s = connect({ token: 'garbage' });
  const err = await once(s, 'connect_error');
  assert.match(err.message, /invalid or expired token/);
});

test('Backand login → authorized; LoopBack authentication → authenticated with /items/POST', async () => {
  const backand = connect(undefined);
  await once(backand, 'connect');
  backand.emit('login', `Bearer ${alice.token}`, null, 'livebase');
  const who = await once(backand, 'authorized');
  assert.equal(who.username, 'alice@e2e.test');

  const loopback = connect(undefined);
  await once(loopback, 'connect');
  loopback.emit('authentication', { id: bob.token });
  await once(loopback, 'authenticated');
  const posted = once(loopback, '/items/POST');
  await server.request('POST', '/1/objects/items', `Bearer ${alice.token}`, { name: 'lb' });
  assert.equal((await posted).name, 'lb');

  const refused = connect(undefined);
  await once(refused, 'connect');
  refused.emit('authentication', { id: 'nope' });
  assert.match((await once(refused, 'unauthorized')).message, /invalid or expired token/);
});

test('Sails get subscribes to new rows; put arrives as an updated event', async () => {
  const s = connect({ token: bob.token });
  await once(s, 'connect');
  const listed = await s.emitWithAck('get', { method: 'get', url: '/items', data: { pageSize: 5 }, headers: {} });
  assert.equal(listed.statusCode, 200);
  assert.ok(Array.isArray(listed.body.data));
  const created = once(s, 'items');
  const made = await server.request('POST', '/1/objects/items', `Bearer ${alice.token}`, { name: 'watched' });
  const event = await created;
  assert.equal(event.verb, 'created');
  assert.equal(event.data.name, 'watched');
  const id = Number(made.body.__metadata.id);
  const updated = once(s, 'items');
  await server.request('PUT', `/1/objects/items/${id}`, `Bearer ${alice.token}`, { name: 'watched 2' });
  const upd = await updated;
  assert.equal(upd.verb, 'updated');
  assert.equal(upd.id, id);
  assert.equal(upd.data.name, 'watched 2');
  assert.equal(upd.previous.name, 'watched');
  const missing = await s.emitWithAck('get', { url: '/nope/1/2' });
  assert.equal(missing.statusCode, 404);
});

test('channels: chan_in reaches members only; db- channels refuse publishing', async () => {
  const a = connect({ anonymousToken: ANON });
  const b = connect({ token: bob.token });
  const c = connect({ token: alice.token });
  await Promise.all([once(a, 'connect'), once(b, 'connect'), once(c, 'connect')]);
  a.emit('join', 'lobby');
  assert.equal(await once(a, 'joined'), 'lobby');
  const joined = await b.emitWithAck('join', 'lobby');
  assert.equal(joined.ok, true);
  assert.equal(joined.channel, 'lobby');
  // Members see a public id: never the engine.io session id, which is a credential.
  assert.equal(typeof joined.sid, 'string');
  assert.notEqual(joined.sid, b.id);
  assert.notEqual(joined.sid, b.io.engine.id);
  const outsider = record(c, 'chan_out');
  const got = once(a, 'chan_out');
  assert.deepEqual(await b.emitWithAck('chan_in', { channel: 'lobby', data: { hi: 1 } }), { ok: true });
  assert.deepEqual(await got, { channel: 'lobby', data: { hi: 1 }, sid: joined.sid });
  const refused = await b.emitWithAck('chan_in', { channel: 'db-items', data: 1 });
  assert.match(refused.error, /cannot publish into database channel/);
  await c.emitWithAck('echo', 'sync');
  assert.deepEqual(outsider, []);
});

test('socket.io-client 2.x (engine.io v3) logs in and receives db events', async () => {
  const old = io2(server.base, { transports: ['websocket'], reconnection: false, forceNew: true });
  sockets.push(old);
  await once(old, 'connect');
  old.emit('login', `Bearer ${bob.token}`, null, 'livebase');
  await once(old, 'authorized');
  old.emit('join', 'db-items');
  assert.equal(await once(old, 'joined'), 'db-items');
  const got = once(old, 'db_created');
  await server.request('POST', '/1/objects/items', `Bearer ${alice.token}`, { name: 'for v2' });
  assert.equal((await got).data.name, 'for v2');
});

test('default transports (long-polling, then upgrade) and polling only both work', async () => {
  for (const transports of [undefined, ['polling']]) {
    const s = io(server.base, { auth: { token: bob.token }, reconnection: false, forceNew: true,
      ...(transports ? { transports } : {}) });
    sockets.push(s);
    await once(s, 'connect');
    assert.deepEqual(noSid(await s.emitWithAck('join', 'db-items')), { ok: true, channel: 'db-items' });
    const got = once(s, 'db_created');
    await server.request('POST', '/1/objects/items', `Bearer ${alice.token}`, { name: `via ${transports ?? 'default'}` });
    assert.equal((await got).data.name, `via ${transports ?? 'default'}`);
    const ack = await s.emitWithAck('get', { url: '/items', data: { pageSize: 1 } });
    assert.equal(ack.statusCode, 200);
    s.close();
  }
});
