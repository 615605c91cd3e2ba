// `@backand/vanilla-sdk` 1.2.15, unchanged, in headless Chromium, on a page served from
// another origin than livebase, as Backand apps ran it: `runSocket: true` with the
// Socket.IO client livebase serves at /socket.io/socket.io.js (the Backand docs' set-up
// step), and again with the socket.io 2.x browser build that Backand-era apps ship.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { createServer } from 'node:http';
import { readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { startServer, ANON, MASTER, ADMIN_TOKEN, noBrowser, launchBrowser } from './server.js';

const require = createRequire(import.meta.url);
const SDK = readFileSync(require.resolve('@backand/vanilla-sdk/dist/backand.js'));
const CLIENT_V2 = readFileSync(require.resolve('socket.io-client-v2/dist/socket.io.js'));
const skip = noBrowser;
const SIGNUP = 'e2e-signup-token';

// What every Backand special character test sends and must get back untouched.
const AWKWARD = 'a+b % c&d=e @ # ~ ^ ( ) 50% x%41 +%2B é';

/** The page: a Socket.IO client (`client` picks which), the SDK, and a record of every
 * event the SDK's `on()` listeners received. */
const PAGE = (clientSrc) => `<!doctype html><meta charset="utf-8"><title>backand e2e</title>
<script src="${clientSrc}"></script>
<script src="/backand.js"></script>
<script>
window.events = [];
window.start = (base, anon, signup) => {
  backand.init({
    appName: 'livebase', anonymousToken: anon, signUpToken: signup,
    apiUrl: base, socketUrl: base, runSocket: true, exportUtils: true,
  });
  for (const name of ['note', 'everyone']) {
    backand.on(name, (data) => window.events.push({ name, data }));
  }
};
// An SDK promise as plain data: its response's status and data, or its error's.
window.call = (promise) => promise.then(
  (r) => ({ ok: true, status: r.status, data: r.data, totalRows: r.totalRows }),
  (e) => ({ ok: false, status: e && e.status, data: e && (e.data !== undefined ? e.data : String(e)) }));
</script>`;

let browser;
let server;
let pages;
// Every code path a test takes through the server's log: the reset token is only there.
const RESET = /reset_token=(\S+)/g;

function pageServer() {
  return new Promise((resolve) => {
    const srv = createServer((req, res) => {
      if (req.url === '/backand.js' || req.url === '/socket.io-2.js') {
        res.writeHead(200, { 'content-type': 'application/javascript' });
        return res.end(req.url === '/backand.js' ? SDK : CLIENT_V2);
      }
      res.writeHead(200, { 'content-type': 'text/html; charset=utf-8' });
      res.end(PAGE(req.url === '/v2' ? '/socket.io-2.js' : `${server.base}/socket.io/socket.io.js`));
    });
    srv.listen(0, 'localhost', () => resolve({ srv, origin: `http://localhost:${srv.address().port}` }));
  });
}

async function upload(name, object, code) {
  const r = await server.request('POST', '/1/action/config', undefined,
    { name, object, trigger: 'onDemand', code });
  assert.equal(r.status, 200, JSON.stringify(r.body));
}

before(async () => {
  if (skip) return;
  server = await startServer(['--auth-rate-per-minute', '0', '--signup-token', SIGNUP]);
  pages = await pageServer();
  browser = await launchBrowser();
  // What the SDK's function and object-action calls reach: the parameters as they arrived.
  await upload('echoParams', 'general',
    'function backandCallback(userInput, dbRow, parameters, userProfile) {' +
    ' return { parameters: parameters, body: userInput, who: userProfile.username }; }');
  await upload('echoParams', 'items',
    'function backandCallback(userInput, dbRow, parameters, userProfile) {' +
    ' return { parameters: parameters, who: userProfile.username }; }');
  // One event to one user, and one to every authenticated socket.
  await upload('notify', 'general',
    'function backandCallback(userInput, dbRow, parameters) {' +
    ' socket.emitUsers("note", { to: parameters.to, n: parameters.n }, [parameters.to]);' +
    ' socket.emitAll("everyone", { n: parameters.n }); return {}; }');
});

after(async () => {
  if (skip) return;
  await browser?.close();
  pages?.srv.close();
  assert.equal(await server.stop(), 0);
});

async function openPage(path = '/') {
  const tab = await browser.newPage();
  const console = [];
  tab.on('console', (m) => console.push(m.text()));
  await tab.goto(pages.origin + path);
  await tab.evaluate(([base, anon, signup]) => window.start(base, anon, signup), [server.base, ANON, SIGNUP]);
  return {
    tab, console, sdk: (fn, arg) => tab.evaluate(fn, arg),
    /** Loads the page again (its localStorage, where the SDK keeps the user, stays). */
    async reload() {
      await tab.reload();
      await tab.evaluate(([base, anon, signup]) => window.start(base, anon, signup), [server.base, ANON, SIGNUP]);
    },
  };
}

/** Waits until the SDK logged its socket's `authorized` (its `console.info`) `n` times. */
async function authorized(page, n) {
  for (let i = 0; i < 100; i++) {
    if (page.console.filter((t) => t === 'socket connected').length >= n) return;
    await new Promise((r) => setTimeout(r, 20));
  }
  throw new Error(`the SDK's socket was not authorized ${n} times: ${JSON.stringify(page.console)}`);
}

/** Emits `note` to `to` (and `everyone` to all) from an action; waits `ms` for events. */
async function notify(page, to, n, ms = 1000) {
  const r = await server.request('POST', `/1/function/general/notify?parameters=${encodeURIComponent(JSON.stringify({ to, n }))}`);
  assert.equal(r.status, 200, JSON.stringify(r.body));
  const deadline = Date.now() + ms;
  for (;;) {
    const events = await page.sdk(() => window.events.splice(0));
    if (events.length > 0 || Date.now() > deadline) {
      // Anything else meant for this call arrives within the same window.
      await new Promise((r) => setTimeout(r, 150));
      return events.concat(await page.sdk(() => window.events.splice(0)));
    }
    await new Promise((r) => setTimeout(r, 20));
  }
}

test('the SDK\'s REST surface: sign-up with parameters, profile, objects, actions, functions, invoke', { skip }, async () => {
  const page = await openPage();
  try {
    const email = 'ann@e2e.test';
    const signup = await page.sdk(([email]) => window.call(backand.signup(
      'Ann', 'Lee', email, 'first-password', 'first-password', { nickname: 'annie' })), [email]);
    assert.equal(signup.status, 200, JSON.stringify(signup));
    assert.equal(signup.data.username, email, JSON.stringify(signup));
    // The parameter landed in the users field of that name.
    const users = await server.request('GET', `/1/objects/users?filter=${encodeURIComponent(JSON.stringify([{ fieldName: 'email', operator: 'equals', value: email }]))}`);
    assert.equal(users.body.data[0].nickname, 'annie', JSON.stringify(users.body));
    // A parameter that is no users field is refused by name, and nobody is created.
    const refused = await page.sdk(() => window.call(backand.signup(
      'Bo', 'Ng', 'bo@e2e.test', 'pw-bo-123', 'pw-bo-123', { shoeSize: 42 })));
    assert.equal(refused.ok, false);
    assert.equal(refused.status, 400, JSON.stringify(refused));
    assert.match(refused.data.Message, /shoeSize/);
    const bo = await server.request('GET', `/1/objects/users?filter=${encodeURIComponent(JSON.stringify([{ fieldName: 'email', operator: 'equals', value: 'bo@e2e.test' }]))}`);
    assert.equal(bo.body.totalRows, 0, JSON.stringify(bo.body));

    const profile = await page.sdk(() => window.call(backand.user.getUserDetails(true)));
    assert.equal(profile.data.username, email, JSON.stringify(profile));
    assert.equal(profile.data.role, 'User', JSON.stringify(profile));

    // Objects: create, list with filter, sort and paging, read, update, remove.
    const made = [];
    for (const [name, price] of [['cheap', 1], ['mid', 5], ['dear', 9]]) {
      const r = await page.sdk(([name, price]) => window.call(backand.object.create('items', { name, price })), [name, price]);
      assert.equal(r.status, 200, JSON.stringify(r));
      made.push(Number(r.data.__metadata.id));
    }
    const list = await page.sdk(() => window.call(backand.object.getList('items', {
      filter: [{ fieldName: 'price', operator: 'greaterThan', value: 2 }],
      sort: [{ fieldName: 'price', order: 'desc' }], pageSize: 1, pageNumber: 2,
    })));
    assert.equal(list.status, 200, JSON.stringify(list));
    assert.equal(list.totalRows, 2, JSON.stringify(list));
    assert.deepEqual(list.data.map((r) => r.name), ['mid']);
    const one = await page.sdk(([id]) => window.call(backand.object.getOne('items', id)), [made[0]]);
    assert.equal(one.data.name, 'cheap', JSON.stringify(one));
    const updated = await page.sdk(([id]) => window.call(backand.object.update('items', id, { price: 2 }, { returnObject: true })), [made[0]]);
    assert.equal(updated.status, 200, JSON.stringify(updated));
    const reread = await server.request('GET', `/1/objects/items/${made[0]}`);
    assert.equal(reread.body.price, 2, JSON.stringify(reread.body));
    // Users may not delete items (the example schema): refused, and the row stays.
    const denied = await page.sdk(([id]) => window.call(backand.object.remove('items', id)), [made[0]]);
    assert.equal(denied.status, 403, JSON.stringify(denied));
    assert.equal((await server.request('GET', `/1/objects/items/${made[0]}`)).status, 200);
    const note = await page.sdk(() => window.call(backand.object.create('notes', { title: 't' })));
    const removed = await page.sdk(([id]) => window.call(backand.object.remove('notes', id)), [Number(note.data.__metadata.id)]);
    assert.equal(removed.status, 200, JSON.stringify(removed));
    assert.equal((await server.request('GET', `/1/objects/notes/${note.data.__metadata.id}`)).status, 404);

    // Parameters with every character the SDK escapes or mangles arrive as written.
    const params = { s: AWKWARD, list: [{ q: AWKWARD }], n: 3 };
    const fnGet = await page.sdk(([p]) => window.call(backand.fn.get('echoParams', p)), [params]);
    assert.equal(fnGet.status, 200, JSON.stringify(fnGet));
    assert.deepEqual(fnGet.data.parameters, params);
    assert.equal(fnGet.data.who, email);
    const fnPost = await page.sdk(([p, a]) => window.call(backand.fn.post('echoParams', { body: a }, p)), [params, AWKWARD]);
    assert.deepEqual(fnPost.data.parameters, params, JSON.stringify(fnPost));
    assert.deepEqual(fnPost.data.body, { body: AWKWARD });
    const actGet = await page.sdk(([p]) => window.call(backand.object.action.get('items', 'echoParams', p)), [params]);
    assert.deepEqual(actGet.data.parameters, params, JSON.stringify(actGet));
    const actPost = await page.sdk(([p]) => window.call(backand.object.action.post('items', 'echoParams', {}, p)), [params]);
    assert.deepEqual(actPost.data.parameters, params, JSON.stringify(actPost));

    // bulk.general: every step in one transaction, or none.
    const bulk = await page.sdk(([base, id]) => window.call(backand.bulk.general([
      { method: 'POST', url: `${base}/1/objects/items`, data: { name: 'bulk-1' } },
      { method: 'PUT', url: `${base}/1/objects/items/${id}`, data: { price: 7 } },
    ])), [server.base, made[1]]);
    assert.equal(bulk.status, 200, JSON.stringify(bulk));
    assert.equal(bulk.data.length, 2, JSON.stringify(bulk));
    assert.equal((await server.request('GET', `/1/objects/items/${made[1]}`)).body.price, 7);
    const failed = await page.sdk(([base, id]) => window.call(backand.bulk.general([
      { method: 'PUT', url: `${base}/1/objects/items/${id}`, data: { price: 8 } },
      { method: 'PUT', url: `${base}/1/objects/items/999999`, data: { price: 8 } },
    ])), [server.base, made[1]]);
    assert.equal(failed.status, 404, JSON.stringify(failed));
    assert.match(failed.data.Message, /^step 2/, JSON.stringify(failed));
    assert.equal((await server.request('GET', `/1/objects/items/${made[1]}`)).body.price, 7, 'rolled back');

    // file.upload / file.remove: the SDK's data URL, served back at the answered URL.
    const png = 'data:image/png;base64,' + Buffer.from('not really a png, but bytes').toString('base64');
    const up = await page.sdk(([d]) => window.call(backand.file.upload('notes', 'files', 'photo.png', d)), [png]);
    assert.equal(up.status, 200, JSON.stringify(up));
    const served = await fetch(up.data.url, { headers: { Authorization: `Bearer ${signup.data.access_token}` } });
    assert.equal(served.status, 200);
    assert.equal(await served.text(), 'not really a png, but bytes');
    const rm = await page.sdk(() => window.call(backand.file.remove('notes', 'files', 'photo.png')));
    assert.equal(rm.status, 200, JSON.stringify(rm));
    const after = await fetch(up.data.url, { headers: { Authorization: `Bearer ${signup.data.access_token}` } });
    assert.equal(after.status, 404);
    const evil = await page.sdk(([d]) => window.call(backand.file.upload('notes', 'files', '../evil.png', d)), [png]);
    assert.equal(evil.status, 400, JSON.stringify(evil));

    // Named queries: the example's is for Admins only (it lists emails).
    const asUser = await page.sdk(() => window.call(backand.query.get('users_by_role', { role: 'User' })));
    assert.equal(asUser.status, 403, JSON.stringify(asUser));

    // `invoke` as the app's admin (Basic master:user token) lists the functions; the
    // SDK builds this URL with a double slash.
    await page.sdk(([m, u]) => { backand.defaults.masterToken = m; backand.defaults.userToken = u; }, [MASTER, ADMIN_TOKEN]);
    const basic = await page.sdk(() => window.call(backand.useBasicAuth()));
    assert.equal(basic.status, 200, JSON.stringify(basic));
    const listed = await page.sdk(() => window.call(backand.invoke({
      url: '/1/action/config', method: 'GET',
      params: { filter: [{ fieldName: 'actionType', operator: 'equals', value: 'Function' }] },
    })));
    assert.equal(listed.status, 200, JSON.stringify(listed));
    const names = listed.data.data.map((a) => a.name).sort();
    assert.deepEqual(names, ['echoParams', 'notify'], JSON.stringify(listed.data));
    for (const method of ['get', 'post']) {
      const rows = await page.sdk(([m]) => window.call(backand.query[m]('users_by_role', { role: 'User' })), [method]);
      assert.equal(rows.status, 200, `${method}: ${JSON.stringify(rows)}`);
      assert.deepEqual(rows.data.map((r) => r.email), [email], `${method}: ${JSON.stringify(rows)}`);
    }
    const asAdmin = await page.sdk(() => window.call(backand.object.getList('users')));
    assert.equal(asAdmin.status, 200, JSON.stringify(asAdmin));

    // Anonymous: what the Public role may read, and nothing else.
    await page.sdk(() => window.call(backand.useAnonymousAuth()));
    const lists = await page.sdk(() => window.call(backand.object.getList('lists')));
    assert.equal(lists.status, 200, JSON.stringify(lists));
    const hidden = await page.sdk(() => window.call(backand.object.getList('items')));
    assert.equal(hidden.status, 403, JSON.stringify(hidden));
  } finally {
    await page.tab.close();
  }
});

test('the SDK\'s password flows: change twice in a row, reset by the logged token, sign out', { skip }, async () => {
  const page = await openPage();
  try {
    const email = 'cy@e2e.test';
    const made = await server.request('POST', '/1/objects/users', undefined,
      { email, role: 'User', password: 'password-0', firstName: 'Cy' });
    assert.equal(made.status, 200, JSON.stringify(made.body));
    const signin = await page.sdk(([e]) => window.call(backand.signin(e, 'password-0')), [email]);
    assert.equal(signin.status, 200, JSON.stringify(signin));
    // Twice with the same SDK session: the session that changes it stays signed in.
    for (const [from, to] of [['password-0', 'password-1'], ['password-1', 'password-2']]) {
      const r = await page.sdk(([a, b]) => window.call(backand.changePassword(a, b)), [from, to]);
      assert.equal(r.status, 200, `${from} → ${to}: ${JSON.stringify(r)}`);
    }
    const still = await page.sdk(() => window.call(backand.user.getUserDetails(true)));
    assert.equal(still.status, 200, JSON.stringify(still));
    const old = await page.sdk(([e]) => window.call(backand.signin(e, 'password-1')), [email]);
    assert.equal(old.ok, false, 'the intermediate password must not work');
    const now = await page.sdk(([e]) => window.call(backand.signin(e, 'password-2')), [email]);
    assert.equal(now.status, 200, JSON.stringify(now));

    // Reset: the SDK expects an empty 200; the token reaches the operator's log.
    const before = [...server.output().matchAll(RESET)].length;
    const asked = await page.sdk(([e]) => window.call(backand.requestResetPassword(e)), [email]);
    assert.equal(asked.status, 200, JSON.stringify(asked));
    assert.equal(asked.data, '', JSON.stringify(asked));
    let token;
    for (let i = 0; i < 50 && !token; i++) {
      const all = [...server.output().matchAll(RESET)];
      if (all.length > before) token = all[all.length - 1][1];
      else await new Promise((r) => setTimeout(r, 20));
    }
    assert.ok(token, 'the reset token is in the server log');
    const reset = await page.sdk(([t]) => window.call(backand.resetPassword('password-3', t)), [token]);
    assert.equal(reset.status, 200, JSON.stringify(reset));
    assert.equal(reset.data, '', JSON.stringify(reset));
    const after = await page.sdk(([e]) => window.call(backand.signin(e, 'password-3')), [email]);
    assert.equal(after.status, 200, JSON.stringify(after));
    const out = await page.sdk(() => window.call(backand.signout()));
    assert.equal(out.status, 200, JSON.stringify(out));
    // Signed out, the SDK falls back to the anonymous token: the server says Guest.
    const gone = await page.sdk(() => window.call(backand.user.getUserDetails(true)));
    assert.equal(gone.data.role, 'Public', JSON.stringify(gone));
    assert.notEqual(gone.data.username, email, JSON.stringify(gone));
  } finally {
    await page.tab.close();
  }
});

for (const [client, path] of [['the served client', '/'], ['socket.io 2.x', '/v2']]) {
  test(`backand.on() with ${client}: events for the identity the socket logged in as, never another's`, { skip }, async () => {
    const dee = await server.user(`dee-${path.length}@e2e.test`, 'User');
    const eve = await server.user(`eve-${path.length}@e2e.test`, 'User');
    // Dee signs in, then the page loads again: the SDK's socket logs in as the stored user.
    const page = await openPage(path);
    try {
      const signin = await page.sdk(([e]) => window.call(backand.signin(e, `pw-${e}`)), [dee.email]);
      assert.equal(signin.status, 200, JSON.stringify(signin));
      await page.reload();
      page.console.length = 0;
      await authorized(page, 1);
      let seen = await notify(page, dee.email, 1);
      assert.deepEqual(seen.map((e) => e.name).sort(), ['everyone', 'note'], JSON.stringify(seen));
      assert.deepEqual(seen.find((e) => e.name === 'note').data, { to: dee.email, n: 1 });
      seen = await notify(page, eve.email, 2);
      assert.deepEqual(seen, [{ name: 'everyone', data: { n: 2 } }], 'nothing of Eve\'s reaches Dee');

      // Sign-out ends the socket: nothing for Dee arrives any more.
      await page.sdk(() => window.call(backand.signout()));
      seen = await notify(page, dee.email, 3, 500);
      assert.deepEqual(seen, [], JSON.stringify(seen));

      // Eve signs in on the signed-out page: the SDK's socket logs in again, as Eve,
      // and gets her next event within a second, and none of Dee's.
      const eveIn = await page.sdk(([e]) => window.call(backand.signin(e, `pw-${e}`)), [eve.email]);
      assert.equal(eveIn.status, 200, JSON.stringify(eveIn));
      await authorized(page, 2);
      seen = await notify(page, eve.email, 4);
      assert.deepEqual(seen.map((e) => e.name).sort(), ['everyone', 'note'], JSON.stringify(seen));
      assert.deepEqual(seen.find((e) => e.name === 'note').data, { to: eve.email, n: 4 });
      seen = await notify(page, dee.email, 5);
      assert.deepEqual(seen, [{ name: 'everyone', data: { n: 5 } }], 'nothing of Dee\'s reaches Eve');
    } finally {
      await page.tab.close();
    }
  });
}

// The SDK's `signin` on an already-connected socket calls `socket.connect()`, which
// socket.io clients ignore while connected, so that socket keeps its old identity.
// Disconnecting it first (the SDK's own socket object, which `exportUtils: true`
// exposes) makes the sign-in connect it again, as the new user. That is the README's
// advice for apps that start anonymous with `runSocket: true`.
test('an anonymous page that disconnects the SDK\'s socket before signing in gets the new user\'s events', { skip }, async () => {
  const fay = await server.user('fay@e2e.test', 'User');
  const page = await openPage();
  try {
    await authorized(page, 1);
    let seen = await notify(page, fay.email, 1);
    assert.deepEqual(seen, [{ name: 'everyone', data: { n: 1 } }], 'anonymous gets no user\'s event');
    await page.sdk(() => backand.utils.socket.disconnect());
    const signin = await page.sdk(([e]) => window.call(backand.signin(e, `pw-${e}`)), [fay.email]);
    assert.equal(signin.status, 200, JSON.stringify(signin));
    await authorized(page, 2);
    seen = await notify(page, fay.email, 2);
    assert.deepEqual(seen.map((e) => e.name).sort(), ['everyone', 'note'], JSON.stringify(seen));
  } finally {
    await page.tab.close();
  }
});
