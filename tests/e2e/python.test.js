// python-socketio 5.x (PyPI, pinned in python/requirements.txt) against the real
// binary: `python/clients.py` authenticates the three ways and reports what it saw.
// `.ci/run` makes the venv and sets LIVEBASE_E2E_PYTHON; without it the test skips.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { join, dirname } from 'node:path';
import { fileURLToPath } from 'node:url';
import { startServer } from './server.js';

const python = process.env.LIVEBASE_E2E_PYTHON;
const skip = python ? false : 'set LIVEBASE_E2E_PYTHON to a python with python/requirements.txt';
const script = join(dirname(fileURLToPath(import.meta.url)), 'python', 'clients.py');

let server;
let alice;

before(async () => {
  if (skip) return;
  server = await startServer();
  alice = await server.user('alice@python.test', 'User');
});

after(async () => {
  if (skip) return;
  assert.equal(await server.stop(), 0);
});

test('python-socketio authenticates by handshake, login and authentication', { skip }, async () => {
  const out = await new Promise((resolve, reject) => {
    execFile(python, [script], {
      env: { ...process.env, LIVEBASE_URL: server.base, LIVEBASE_TOKEN: alice.token },
      timeout: 60000,
    }, (error, stdout, stderr) => (error ? reject(new Error(`${error}\n${stderr}`)) : resolve(stdout)));
  });
  const seen = JSON.parse(out);
  assert.equal(seen.handshake.joined, true, out);
  assert.equal(seen.handshake.event?.channel, 'db-items', out);
  assert.equal(seen.handshake.event?.data?.name, 'from python', out);
  for (const way of ['login', 'authentication']) {
    assert.equal(seen[way].who?.username, alice.email, `${way}: ${out}`);
    assert.equal(seen[way].echo, 'hi', `${way}: ${out}`);
  }
  assert.match(seen.bad_token.refused ?? '', /token/i, out);
});
