// `--tls-cert`/`--tls-key`: the npm socket.io-client over WSS and node's HTTPS client
// against the real binary, trusting only a certificate made for this test by openssl.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { io } from 'socket.io-client';
import { startServer, once, noSid } from './server.js';

let server;
let dir;
let ca;
const sockets = [];

before(async () => {
  dir = mkdtempSync(join(tmpdir(), 'livebase-e2e-tls-'));
  const cert = join(dir, 'cert.pem');
  const key = join(dir, 'key.pem');
  execFileSync('openssl', [
    'req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes',
    '-keyout', key, '-out', cert, '-days', '2', '-subj', '/CN=localhost',
    '-addext', 'subjectAltName=IP:127.0.0.1,DNS:localhost',
  ], { stdio: 'ignore' });
  ca = readFileSync(cert, 'utf8');
  server = await startServer([], { tls: { cert, key, ca } });
});

after(async () => {
  const code = await server.stop();
  for (const s of sockets) s.close();
  rmSync(dir, { recursive: true, force: true });
  assert.equal(code, 0, 'livebase exits cleanly on SIGTERM with WSS sockets open');
});

test('HTTPS and WSS: a db event reaches a socket.io-client that trusts the certificate', async () => {
  assert.match(server.base, /^https:/);
  const alice = await server.user('alice@tls.e2e', 'User');
  const s = io(server.base, {
    transports: ['websocket'], auth: { token: alice.token }, reconnection: false, ca,
  });
  sockets.push(s);
  await once(s, 'connect');
  assert.deepEqual(noSid(await s.emitWithAck('join', 'db-items')), { ok: true, channel: 'db-items' });
  const got = once(s, 'db_created');
  const item = await server.request('POST', '/1/objects/items', `Bearer ${alice.token}`, { name: 'tls' });
  assert.equal(item.status, 200);
  const event = await got;
  assert.equal(event.channel, 'db-items');
  assert.equal(event.data.name, 'tls');
});

test('a client that does not trust the certificate cannot connect', async () => {
  const s = io(server.base, { transports: ['websocket'], reconnection: false });
  sockets.push(s);
  const err = await once(s, 'connect_error');
  assert.match(String(err.description?.message ?? err.message), /self[- ]signed|certificate|websocket error/i);
  await assert.rejects(fetch(`${server.base}/healthz`), 'fetch with the default CAs refuses it');
});
