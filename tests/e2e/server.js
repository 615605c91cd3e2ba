// Starts the real livebase binary on a free port with a fresh data directory and the
// example app in schema/, and stops it afterwards.
import { spawn } from 'node:child_process';
import { request as httpsRequest } from 'node:https';
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join, dirname } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = join(dirname(fileURLToPath(import.meta.url)), '..', '..');
export const MASTER = 'e2e-master';
export const ANON = 'e2e-anonymous';
export const ADMIN_TOKEN = 'e2e-admin-user-token';

/** Debian's Chromium and the flags every browser test launches it with. */
export const CHROMIUM = '/usr/bin/chromium';
export const CHROMIUM_FLAGS = [
  '--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
  '--disable-background-networking', '--disable-component-update', '--disable-sync',
];
// `.ci/run` installs Chromium and sets this, so there a browser test cannot quietly skip.
const browserRequired = process.env.LIVEBASE_E2E_REQUIRE_BROWSER === '1';
/** A `test` skip reason when there is no Chromium (and none is required), else false. */
export const noBrowser = !existsSync(CHROMIUM) && !browserRequired
  ? `no ${CHROMIUM}: install Debian's chromium to run the browser tests` : false;

/**
 * A Chromium for one test file: the suite's shared one when `run.js` started it (its
 * `close()` then only disconnects), else a fresh launch.
 */
export async function launchBrowser() {
  const { chromium } = await import('playwright-core');
  const ws = process.env.LIVEBASE_E2E_CHROMIUM_WS;
  return ws ? chromium.connect(ws) : chromium.launch({ executablePath: CHROMIUM, args: CHROMIUM_FLAGS });
}

/** A TCP port free on 127.0.0.1 right now. */
export function freePort() {
  return new Promise((resolve, reject) => {
    const srv = createServer();
    srv.on('error', reject);
    srv.listen(0, '127.0.0.1', () => {
      const { port } = srv.address();
      srv.close(() => resolve(port));
    });
  });
}

/** fetch-like over HTTPS trusting only `ca` (fetch has no per-call CA option). */
function fetchTls(url, ca, { method = 'GET', headers = {}, body } = {}) {
  return new Promise((resolve, reject) => {
    const req = httpsRequest(url, { method, headers, ca }, (res) => {
      let text = '';
      res.setEncoding('utf8');
      res.on('data', (d) => { text += d; });
      res.on('end', () => resolve({
        ok: res.statusCode >= 200 && res.statusCode < 300,
        status: res.statusCode,
        text: async () => text,
        json: async () => JSON.parse(text),
      }));
    });
    req.on('error', reject);
    if (body !== undefined) req.write(typeof body === 'string' ? body : body.toString());
    req.end();
  });
}

/**
 * Starts livebase. With `{ tls: { cert, key, ca } }` (PEM file paths and the CA's
 * PEM text) it serves HTTPS/WSS and every request here trusts only that CA. `app`
 * (`{ schema, actions, queries }` directories) replaces the example app's.
 */
export async function startServer(extraArgs = [], { tls, app = {} } = {}) {
  const bin = process.env.LIVEBASE_BIN || join(root, 'target', 'debug', 'livebase');
  const dataDir = mkdtempSync(join(tmpdir(), 'livebase-e2e-'));
  const port = await freePort();
  const child = spawn(bin, [
    '--listen', `127.0.0.1:${port}`,
    '--data-dir', dataDir,
    '--schema-dir', app.schema ?? join(root, 'schema'),
    '--actions-dir', app.actions ?? join(root, 'actions'),
    '--queries-dir', app.queries ?? join(root, 'queries'),
    '--master-token', MASTER,
    '--anonymous-token', ANON,
    '--admin-password', 'e2e-admin-password',
    '--admin-user-token', ADMIN_TOKEN,
    '--jwt-secret', 'e2e-jwt-secret-0123456789abcdef',
    ...(tls ? ['--tls-cert', tls.cert, '--tls-key', tls.key] : []),
    ...extraArgs,
  ], { stdio: ['ignore', 'pipe', 'pipe'] });
  let output = '';
  child.stdout.on('data', (d) => { output += d; });
  child.stderr.on('data', (d) => { output += d; });
  const base = `${tls ? 'https' : 'http'}://127.0.0.1:${port}`;
  const fetch = tls ? (url, init) => fetchTls(url, tls.ca, init) : globalThis.fetch;
  for (let i = 0; ; i++) {
    if (child.exitCode !== null) throw new Error(`livebase exited early:\n${output}`);
    try {
      const r = await fetch(`${base}/healthz`);
      if (r.ok) break;
    } catch { /* not listening yet */ }
    if (i > 300) throw new Error(`livebase did not come up:\n${output}`);
    await new Promise((r) => setTimeout(r, 100));
  }
  return {
    ...api(base, fetch),
    /** Everything the server printed so far (its log). */
    output: () => output,
    /** SIGKILL (no shutdown at all); resolves once the process is gone. */
    async kill() {
      if (child.exitCode === null && child.signalCode === null) {
        const gone = new Promise((resolve) => child.once('exit', resolve));
        child.kill('SIGKILL');
        await gone;
      }
      rmSync(dataDir, { recursive: true, force: true });
    },
    /** Whether the process is still running. */
    running: () => child.exitCode === null && child.signalCode === null,
    /** SIGTERM; resolves with the exit code (rejects if it takes over 10 s). */
    async stop() {
      child.kill('SIGTERM');
      const code = await new Promise((resolve, reject) => {
        if (child.exitCode !== null) return resolve(child.exitCode);
        const timer = setTimeout(() => reject(new Error(`no exit 10 s after SIGTERM:\n${output}`)), 10000);
        child.on('exit', (c) => { clearTimeout(timer); resolve(c); });
      });
      rmSync(dataDir, { recursive: true, force: true });
      return code;
    },
  };
}

/**
 * `request` and `user` against `base`: one server, or a balancer in front of several.
 * `request` uses the master token (acting as the first Admin) unless given `auth`;
 * `headers` are added to the request (e.g. a balancer's cookie).
 */
export function api(base, fetch = globalThis.fetch) {
  const master = 'Basic ' + Buffer.from(`${MASTER}:${ADMIN_TOKEN}`).toString('base64');
  return {
    base,
    fetch,
    async request(method, path, auth, body, headers = {}) {
      const all = { ...headers, Authorization: auth ?? master };
      if (body !== undefined) all['Content-Type'] = 'application/json';
      const r = await fetch(base + path, { method, headers: all, body: body && JSON.stringify(body) });
      const text = await r.text();
      let json;
      try { json = JSON.parse(text); } catch { json = text; }
      return { status: r.status, body: json, headers: r.headers };
    },
    /** Creates a user with `role` and returns its access token. */
    async user(email, role) {
      const password = `pw-${email}`;
      const created = await this.request('POST', '/1/objects/users', undefined,
        { email, role, password, firstName: email });
      if (created.status !== 200) throw new Error(`create ${email}: ${JSON.stringify(created.body)}`);
      const r = await fetch(`${base}/token`, {
        method: 'POST',
        headers: { 'Content-Type': 'application/x-www-form-urlencoded' },
        body: new URLSearchParams({ grant_type: 'password', username: email, password, appName: 'livebase' }),
      });
      const body = await r.json();
      return { token: body.access_token, id: Number(created.body.__metadata.id), email };
    },
  };
}

/** Resolves with the first `event` payload, or rejects after `ms`. */
export function once(socket, event, ms = 5000) {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`no \`${event}\` within ${ms} ms`)), ms);
    socket.once(event, (data) => { clearTimeout(timer); resolve(data); });
  });
}

/** Collects every `event` payload from now on. */
export function record(socket, event) {
  const seen = [];
  socket.on(event, (data) => seen.push(data));
  return seen;
}

// A `join` ack without the member's public id (checked to be there and not the
// engine.io session id, which is a credential), for comparing the rest exactly.
export function noSid(ack) {
  const { sid, ...rest } = ack;
  if (typeof sid !== 'string' || sid.length === 0) throw new Error(`join ack without a public id: ${JSON.stringify(ack)}`);
  return rest;
}
