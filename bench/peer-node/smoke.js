'use strict';
// Self-checking smoke test: `node smoke.js`. Starts server.js on a free port with a temp
// database and a temp copy of bench/app (plus a few hostile actions), then drives REST and
// two Socket.IO clients through the benchmarked paths. Exits non-zero on any failure.

const assert = require('node:assert/strict');
const { spawn } = require('node:child_process');
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');
const { io: connect } = require('socket.io-client');

const APP = path.join(__dirname, '..', 'app');
const DEADLINE_MS = 30000;

const EXTRA_ACTIONS = {
  // Never returns: the time limit must end it.
  'spin.js': 'function backandCallback() { for (;;) {} }',
  // Grows until the isolate's memory limit disposes it.
  'hog.js': 'function backandCallback() { const a = []; for (;;) a.push(new Array(1e5).fill(Math.random())); }',
  'boom.js': "function backandCallback() { throw new Error('boom: ' + 6 * 7); }",
  // Each invocation must start from a fresh global: always 1.
  'leak.js': 'function backandCallback() { globalThis.count = (globalThis.count || 0) + 1; return { count: globalThis.count }; }',
  // Escape attempts: none of these exist in the sandbox.
  'escape.js': `function backandCallback() {
    return { require: typeof require, process: typeof process, fetch: typeof fetch,
             setTimeout: typeof setTimeout, Buffer: typeof Buffer };
  }`,
  'tell.js': `function backandCallback(userInput, dbRow, parameters, userProfile) {
    socket.emitUsers('direct', { from: userProfile.username }, [parameters.to]);
    socket.emitRole('to_role', { role: 'User' }, 'User');
    console.log('tell', parameters.to);
    return { told: parameters.to };
  }`,
};

let passed = 0;
let failed = 0;
async function check(name, fn) {
  try {
    await fn();
    passed++;
    console.log(`ok   ${name}`);
  } catch (e) {
    failed++;
    console.log(`FAIL ${name}\n     ${(e && e.message ? e.message : String(e)).split('\n').join('\n     ')}`);
  }
}

function copyDir(from, to) {
  fs.mkdirSync(to, { recursive: true });
  for (const entry of fs.readdirSync(from, { withFileTypes: true })) {
    const a = path.join(from, entry.name);
    const b = path.join(to, entry.name);
    if (entry.isDirectory()) copyDir(a, b);
    else fs.copyFileSync(a, b);
  }
}

function startServer(appDir, dbFile) {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [
      '--no-node-snapshot', path.join(__dirname, 'server.js'),
      '--port', '0', '--db', dbFile, '--app', appDir,
      '--signup-token', 'smoke-signup', '--jwt-secret', 'smoke-secret',
    ], { stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    let err = '';
    child.stderr.on('data', (d) => { err += d; });
    child.stdout.on('data', (d) => {
      out += d;
      const m = /listening on (http:\/\/127\.0\.0\.1:(\d+))/.exec(out);
      if (m) resolve({ child, base: m[1], stderr: () => err });
    });
    child.on('exit', (code) => reject(new Error(`server exited early (${code}): ${err}`)));
    setTimeout(() => reject(new Error(`server did not start: ${err}`)), 10000).unref();
  });
}

async function main() {
  const timer = setTimeout(() => {
    console.log(`FAIL smoke test took longer than ${DEADLINE_MS} ms`);
    process.exit(1);
  }, DEADLINE_MS);
  timer.unref();

  const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'peer-node-smoke-'));
  const appDir = path.join(tmp, 'app');
  copyDir(APP, appDir);
  for (const [file, source] of Object.entries(EXTRA_ACTIONS)) {
    fs.writeFileSync(path.join(appDir, 'actions', 'general', 'onDemand', file), source);
  }
  const { child, base, stderr } = await startServer(appDir, path.join(tmp, 'smoke.db'));
  const sockets = [];

  try {
    async function http(method, url, { token, json, form, headers = {} } = {}) {
      const h = { ...headers };
      let body;
      if (token) h.authorization = `Bearer ${token}`;
      if (json !== undefined) {
        h['content-type'] = 'application/json';
        body = JSON.stringify(json);
      }
      if (form !== undefined) {
        h['content-type'] = 'application/x-www-form-urlencoded';
        body = new URLSearchParams(form).toString();
      }
      const res = await fetch(base + url, { method, headers: h, body });
      const text = await res.text();
      return { status: res.status, body: text === '' ? undefined : JSON.parse(text) };
    }
    const signup = (email, password, token = 'smoke-signup') =>
      http('POST', '/1/user/signup', { json: { email, password, confirmPassword: password }, headers: { SignUpToken: token } });

    // Resolves with the next `event` on `socket`, or rejects after `ms`.
    const next = (socket, event, ms = 3000) => new Promise((resolve, reject) => {
      const t = setTimeout(() => reject(new Error(`no \`${event}\` within ${ms} ms`)), ms);
      socket.once(event, (data) => { clearTimeout(t); resolve(data); });
    });
    // Collects every `event` for `ms`.
    const collect = (socket, event, ms) => new Promise((resolve) => {
      const got = [];
      const on = (d) => got.push(d);
      socket.on(event, on);
      setTimeout(() => { socket.off(event, on); resolve(got); }, ms);
    });
    const ack = (socket, event, data) => socket.timeout(3000).emitWithAck(event, data);
    const open = (token, opts = {}) => new Promise((resolve, reject) => {
      const s = connect(base, { auth: { token }, reconnection: false, forceNew: true, ...opts });
      sockets.push(s);
      s.once('connect', () => resolve(s));
      s.once('connect_error', (e) => reject(e));
    });

    let a;
    let b;
    await check('healthz', async () => {
      const r = await http('GET', '/healthz');
      assert.equal(r.status, 200);
      assert.deepEqual(r.body, { status: 'ok' });
    });
    await check('signup two users', async () => {
      a = await signup('Ann@Example.com', 'pw-a');
      b = await signup('bob@example.com', 'pw-b');
      assert.equal(a.status, 200, JSON.stringify(a.body));
      assert.equal(b.status, 200, JSON.stringify(b.body));
      a = a.body;
      b = b.body;
      assert.equal(a.token_type, 'bearer');
      assert.equal(a.username, 'ann@example.com');
      assert.equal(a.role, 'User');
      assert.equal(typeof a.userId, 'string');
      assert.notEqual(a.userId, b.userId);
    });
    await check('signup refusals: duplicate 409, no password 400, bad signup token 401', async () => {
      assert.equal((await signup('ann@example.com', 'x')).status, 409);
      assert.equal((await http('POST', '/1/user/signup', { json: { email: 'c@example.com' }, headers: { SignUpToken: 'smoke-signup' } })).status, 400);
      const r = await signup('d@example.com', 'x', 'wrong');
      assert.equal(r.status, 401);
      assert.equal(typeof r.body.Message, 'string');
    });
    await check('/token password grant, and invalid_grant', async () => {
      const ok = await http('POST', '/token', { form: { grant_type: 'password', username: 'ann@example.com', password: 'pw-a' } });
      assert.equal(ok.status, 200);
      assert.equal(typeof ok.body.access_token, 'string');
      const bad = await http('POST', '/token', { form: { grant_type: 'password', username: 'ann@example.com', password: 'nope' } });
      assert.equal(bad.status, 400);
      assert.equal(bad.body.error, 'invalid_grant');
    });
    await check('REST without or with a bad token → 401', async () => {
      assert.equal((await http('POST', '/1/objects/events', { json: { seq: 1 } })).status, 401);
      assert.equal((await http('POST', '/1/objects/events', { json: { seq: 1 }, token: 'not.a.jwt' })).status, 401);
      assert.equal((await http('GET', '/1/function/general/noop', { token: `${a.access_token}x` })).status, 401);
    });
    await check('socket with a bad token → connect_error', async () => {
      await assert.rejects(open('bad-token', { transports: ['websocket'] }), /invalid token/);
    });

    let sa;
    let sb;
    await check('two sockets connect (websocket; polling + upgrade)', async () => {
      sa = await open(a.access_token, { transports: ['websocket'] });
      sb = await open(`Bearer ${b.access_token}`);
    });
    await check('join db-events (ack) and db-owned (event reply)', async () => {
      assert.deepEqual(await ack(sa, 'join', 'db-events'), { ok: true, channel: 'db-events' });
      assert.deepEqual(await ack(sb, 'join', { channel: 'db-events' }), { ok: true, channel: 'db-events' });
      const joinedA = next(sa, 'joined');
      sa.emit('join', 'db-owned');
      assert.equal(await joinedA, 'db-owned');
      assert.deepEqual(await ack(sb, 'join', 'db-owned'), { ok: true, channel: 'db-owned' });
    });
    await check('join refusals: bad name, unknown object; error event without ack', async () => {
      assert.match((await ack(sa, 'join', 'has space')).error, /channel name/);
      assert.match((await ack(sa, 'join', 'db-nope')).error, /no object/);
      const err = next(sa, 'error');
      sa.emit('join', '');
      const e = await err;
      assert.equal(e.event, 'join');
      assert.equal(typeof e.message, 'string');
    });
    await check('echo', async () => {
      assert.deepEqual(await ack(sa, 'echo', { x: [1, 2] }), { x: [1, 2] });
    });

    await check('create events as A → 200, db_created to db-events members, `created` emit to both', async () => {
      const createdA = next(sa, 'created');
      const createdB = next(sb, 'created');
      const dbA = next(sa, 'db_created');
      const dbB = next(sb, 'db_created');
      const r = await http('POST', '/1/objects/events', { token: a.access_token, json: { seq: 7, body: 'hello' } });
      assert.equal(r.status, 200, JSON.stringify(r.body));
      const id = r.body.__metadata.id;
      assert.equal(typeof id, 'string');
      assert.deepEqual(await createdA, { seq: 7, id: Number(id) });
      assert.deepEqual(await createdB, { seq: 7, id: Number(id) });
      for (const ev of [await dbA, await dbB]) {
        assert.equal(ev.channel, 'db-events');
        assert.equal(ev.data.id, Number(id));
        assert.equal(ev.data.seq, 7);
        assert.equal(ev.data.body, 'hello');
      }
    });
    await check('create owned as A → only A\'s socket gets db_created', async () => {
      const gotB = collect(sb, 'db_created', 600);
      const dbA = next(sa, 'db_created');
      const r = await http('POST', '/1/objects/owned', { token: a.access_token, json: { seq: 8 } });
      assert.equal(r.status, 200);
      const ev = await dbA;
      assert.equal(ev.channel, 'db-owned');
      assert.equal(ev.data.seq, 8);
      assert.deepEqual(await gotB, [], 'B received a row owned by A');
    });
    await check('create owned as B → B gets its own row', async () => {
      const dbB = next(sb, 'db_created');
      const r = await http('POST', '/1/objects/owned', { token: b.access_token, json: { seq: 9, body: null } });
      assert.equal(r.status, 200);
      assert.equal((await dbB).data.seq, 9);
    });
    await check('create validation: 400 bad types/unknown fields/non-object, 404 unknown object', async () => {
      const t = a.access_token;
      assert.equal((await http('POST', '/1/objects/events', { token: t, json: { seq: 1.5 } })).status, 400);
      assert.equal((await http('POST', '/1/objects/events', { token: t, json: { seq: '1' } })).status, 400);
      assert.equal((await http('POST', '/1/objects/events', { token: t, json: { body: 'no seq' } })).status, 400);
      assert.equal((await http('POST', '/1/objects/events', { token: t, json: { seq: 1, body: 5 } })).status, 400);
      assert.equal((await http('POST', '/1/objects/events', { token: t, json: { seq: 1, id: 99 } })).status, 400);
      assert.equal((await http('POST', '/1/objects/events', { token: t, json: [1] })).status, 400);
      const r = await http('POST', '/1/objects/nothing', { token: t, json: { seq: 1 } });
      assert.equal(r.status, 404);
      assert.equal(typeof r.body.Message, 'string');
    });

    await check('bulk: creates in one transaction, a bad step writes nothing', async () => {
      const steps = [1, 2, 3].map((seq) => ({ method: 'POST', url: '/1/objects/open', data: { seq, tag: seq === 2 ? 'two' : 'odd', body: 'b' } }));
      const r = await http('POST', '/1/bulk', { token: a.access_token, json: steps });
      assert.equal(r.status, 200, JSON.stringify(r.body));
      assert.deepEqual(r.body.map((x) => typeof x.__metadata.id), ['string', 'string', 'string']);
      const bad = await http('POST', '/1/bulk', { token: a.access_token, json: [steps[0], { method: 'POST', url: '/1/objects/open', data: { seq: 'x' } }] });
      assert.equal(bad.status, 400);
      assert.match(bad.body.Message, /step 1/);
      assert.equal((await http('POST', '/1/bulk', { token: a.access_token, json: [{ method: 'DELETE', url: '/1/objects/open/1' }] })).status, 400);
      const all = await http('GET', '/1/objects/open?pageSize=10', { token: a.access_token });
      assert.equal(all.body.totalRows, 3);
      assert.deepEqual(all.body.data.map((row) => row.seq), [1, 2, 3]);
    });
    await check('GET by id: a row; another user\'s owned row 404; bad id 400', async () => {
      const mine = await http('GET', '/1/objects/owned?pageSize=5', { token: a.access_token });
      assert.equal(mine.body.totalRows, 1);
      const row = mine.body.data[0];
      assert.deepEqual(row, { id: row.id, seq: 8, body: null, __metadata: { id: String(row.id) } });
      assert.deepEqual((await http('GET', `/1/objects/owned/${row.id}`, { token: a.access_token })).body, row);
      const other = await http('GET', `/1/objects/owned/${row.id}`, { token: b.access_token });
      assert.equal(other.status, 404);
      assert.equal((await http('GET', '/1/objects/owned/x', { token: a.access_token })).status, 400);
      assert.equal((await http('GET', '/1/objects/open/99999', { token: a.access_token })).status, 404);
      const first = await http('GET', '/1/objects/open/1', { token: b.access_token });
      assert.equal(first.status, 200);
      assert.equal(first.body.seq, 1);
    });
    await check('list: owner scope, pageSize/pageNumber, filter (equals, notEquals, null), bad filter 400', async () => {
      const list = (token, q) => http('GET', `/1/objects/${q}`, { token });
      const f = (x) => encodeURIComponent(JSON.stringify(x));
      const bList = await list(b.access_token, 'owned');
      assert.deepEqual(bList.body.data.map((row) => row.seq), [9]);
      const page2 = await list(a.access_token, 'open?pageSize=2&pageNumber=2');
      assert.deepEqual([page2.body.totalRows, page2.body.data.map((row) => row.seq)], [3, [3]]);
      const two = await list(a.access_token, `open?filter=${f({ fieldName: 'tag', operator: 'equals', value: 'two' })}`);
      assert.deepEqual([two.body.totalRows, two.body.data.map((row) => row.seq)], [1, [2]]);
      const odd = await list(a.access_token, `open?filter=${f([{ fieldName: 'tag', operator: 'notEquals', value: 'two' }, { fieldName: 'seq', operator: 'greaterThan', value: 1 }])}`);
      assert.deepEqual([odd.body.totalRows, odd.body.data.map((row) => row.seq)], [1, [3]]);
      const isNull = await list(b.access_token, `owned?filter=${f({ fieldName: 'body', operator: 'equals', value: null })}`);
      assert.deepEqual(isNull.body.data.map((row) => row.seq), [9]);
      const notNull = await list(b.access_token, `owned?filter=${f({ fieldName: 'body', operator: 'notEquals', value: null })}`);
      assert.deepEqual(notNull.body.data.map((row) => row.seq), []);
      for (const q of ['open?filter=nope', `open?filter=${f({ fieldName: 'nope', operator: 'equals', value: 1 })}`,
        `open?filter=${f({ fieldName: 'seq', operator: 'equals', value: 'x' })}`, 'open?pageSize=0']) {
        assert.equal((await list(a.access_token, q)).status, 400, q);
      }
    });
    await check('chan_in → chan_out to a joined member; db- channels refused', async () => {
      assert.deepEqual(await ack(sb, 'join', 'room-1'), { ok: true, channel: 'room-1' });
      const out = next(sb, 'chan_out');
      assert.deepEqual(await ack(sa, 'chan_in', { channel: 'room-1', data: { hi: 1 } }), { ok: true });
      assert.deepEqual(await out, { channel: 'room-1', data: { hi: 1 }, sid: sa.id });
      assert.match((await ack(sa, 'chan_in', { channel: 'db-events', data: {} })).error, /database channel/);
    });
    await check('join of an identity room name does not enter that room', async () => {
      // `user:bob@example.com` is a plain channel here, not Bob's private room.
      assert.deepEqual(await ack(sa, 'join', 'user:bob@example.com'), { ok: true, channel: 'user:bob@example.com' });
      const gotA = collect(sa, 'direct', 500);
      const toB = next(sb, 'direct');
      const r = await http('GET', `/1/function/general/tell?parameters=${encodeURIComponent(JSON.stringify({ to: 'Bob@Example.com' }))}`, { token: a.access_token });
      assert.equal(r.status, 200);
      assert.deepEqual(await toB, { from: 'ann@example.com' });
      assert.deepEqual(await gotA, []);
    });
    await check('leave', async () => {
      assert.deepEqual(await ack(sb, 'leave', 'room-1'), { ok: true, channel: 'room-1' });
      const got = collect(sb, 'chan_out', 400);
      await ack(sa, 'chan_in', { channel: 'room-1', data: 1 });
      assert.deepEqual(await got, []);
    });

    const fn = (name, parameters, method = 'GET') => http(method,
      `/1/function/general/${name}${parameters === undefined ? '' : `?parameters=${encodeURIComponent(parameters)}`}`,
      { token: a.access_token });
    await check('on-demand noop → null (GET and POST)', async () => {
      let r = await fn('noop');
      assert.equal(r.status, 200);
      assert.equal(r.body, null);
      r = await fn('noop', undefined, 'POST');
      assert.equal(r.status, 200);
      assert.equal(r.body, null);
    });
    await check('on-demand fib n=20 → 6765', async () => {
      const r = await fn('fib', JSON.stringify({ n: 20 }));
      assert.equal(r.status, 200);
      assert.deepEqual(r.body, { n: 20, fib: 6765 });
    });
    await check('on-demand: bad parameters 400, unknown name 404', async () => {
      assert.equal((await fn('fib', '{nope')).status, 400);
      assert.equal((await fn('missing')).status, 404);
    });
    await check('on-demand throw → 400 with the message', async () => {
      const r = await fn('boom');
      assert.equal(r.status, 400);
      assert.deepEqual(r.body, { Message: 'boom: 42' });
    });
    await check('infinite loop → 422 time limit, and the pool keeps working', async () => {
      const t0 = Date.now();
      const r = await fn('spin');
      assert.equal(r.status, 422);
      assert.match(r.body.Message, /time limit of 1000 ms/);
      assert.ok(Date.now() - t0 < 5000);
      assert.deepEqual((await fn('fib', '{"n":10}')).body, { n: 10, fib: 55 });
    });
    await check('memory hog → 422 memory limit, isolate replaced', async () => {
      const r = await fn('hog');
      assert.equal(r.status, 422);
      assert.match(r.body.Message, /memory limit of 64 MiB/);
      for (let i = 0; i < 4; i++) assert.equal((await fn('noop')).status, 200);
    });
    await check('fresh global state per invocation', async () => {
      const results = [];
      for (let i = 0; i < 6; i++) results.push((await fn('leak')).body.count);
      assert.deepEqual(results, [1, 1, 1, 1, 1, 1]);
    });
    await check('no require/process/fetch/timers/Buffer in actions', async () => {
      const r = await fn('escape');
      assert.deepEqual(r.body, { require: 'undefined', process: 'undefined', fetch: 'undefined', setTimeout: 'undefined', Buffer: 'undefined' });
    });
    await check('emitRole reaches both users', async () => {
      const ra = next(sa, 'to_role');
      const rb = next(sb, 'to_role');
      await fn('tell', JSON.stringify({ to: 'nobody@example.com' }));
      assert.deepEqual(await ra, { role: 'User' });
      assert.deepEqual(await rb, { role: 'User' });
    });
  } finally {
    for (const s of sockets) s.close();
    const exited = new Promise((resolve) => child.once('exit', (code, signal) => resolve({ code, signal })));
    child.kill('SIGTERM');
    const { code, signal } = await exited;
    await check('SIGTERM → exit 0', async () => {
      assert.equal(code, 0, `exit code ${code} signal ${signal}`);
    });
    if (failed > 0) console.log(`--- server stderr ---\n${stderr()}`);
    fs.rmSync(tmp, { recursive: true, force: true });
  }
  console.log(`smoke: ${passed} passed, ${failed} failed`);
  process.exit(failed === 0 ? 0 : 1);
}

main().catch((e) => {
  console.log(`FAIL ${e && e.stack ? e.stack : e}`);
  process.exit(1);
});
