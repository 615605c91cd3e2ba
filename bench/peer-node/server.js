#!/usr/bin/env node
'use strict';
// livebase peer: the same REST + Socket.IO contract as livebase on the benchmarked paths,
// written the way a Node developer would, from npm packages.
//
//   node server.js [--port 8090] [--db peer.db] [--app ../app] [--host 127.0.0.1]
//                  [--jwt-secret S] [--signup-token signup]

const path = require('node:path');
const { spawn } = require('node:child_process');

// isolated-vm requires Node >= 20 to run without the built-in startup snapshot. When the
// flag was not given, run this same script in a child that has it (prefer starting
// `node --no-node-snapshot server.js` directly: no extra process).
const hasFlag = process.execArgv.includes('--no-node-snapshot')
  || /(^|\s)--no-node-snapshot(\s|$)/.test(process.env.NODE_OPTIONS || '');
if (!hasFlag) {
  const child = spawn(process.execPath,
    ['--no-node-snapshot', ...process.execArgv, __filename, ...process.argv.slice(2)],
    { stdio: 'inherit' });
  for (const sig of ['SIGTERM', 'SIGINT']) process.on(sig, () => child.kill(sig));
  child.on('exit', (code, signal) => process.exit(code ?? (signal ? 1 : 0)));
  return;
}

const crypto = require('node:crypto');
const os = require('node:os');
const { parseArgs } = require('node:util');
const { loadApp } = require('./lib/app');
const { openStore } = require('./lib/store');
const { makeTokens } = require('./lib/auth');
const { Sandbox } = require('./lib/sandbox');
const { buildHttp } = require('./lib/http');
const { attachRealtime } = require('./lib/realtime');

const log = {
  info: (...a) => console.error(...a),
  warn: (...a) => console.error(...a),
  error: (...a) => console.error(...a),
};

async function main() {
  const { values: opt } = parseArgs({
    options: {
      port: { type: 'string', default: process.env.PEER_PORT || '8090' },
      host: { type: 'string', default: '127.0.0.1' },
      db: { type: 'string', default: 'peer.db' },
      app: { type: 'string', default: path.join(__dirname, '..', 'app') },
      'jwt-secret': { type: 'string' },
      'signup-token': { type: 'string', default: 'signup' },
    },
    strict: true,
  });
  const port = Number(opt.port);
  if (!Number.isInteger(port) || port < 0 || port > 65535) throw new Error(`bad --port ${opt.port}`);

  const { objects, actions } = loadApp(path.resolve(opt.app));
  const store = openStore(path.resolve(opt.db), objects);
  const tokens = makeTokens(opt['jwt-secret'] || crypto.randomBytes(32).toString('hex'));
  const sandbox = new Sandbox({
    actions: [...actions.values()].flat(),
    size: os.availableParallelism(),
    timeoutMs: 1000,
    memoryMb: 64,
    log,
  });
  await sandbox.start();

  let realtime = null;
  const app = buildHttp({
    objects,
    actions,
    store,
    tokens,
    sandbox,
    // Routes are registered before the Socket.IO server exists; they reach it through this.
    realtime: {
      emitAll: (...a) => realtime.emitAll(...a),
      emitRole: (...a) => realtime.emitRole(...a),
      emitUsers: (...a) => realtime.emitUsers(...a),
      dbCreated: (...a) => realtime.dbCreated(...a),
    },
    signupToken: opt['signup-token'],
    log,
  });
  realtime = attachRealtime(app.server, { objects, tokens, log });

  await app.listen({ port, host: opt.host });
  const bound = app.server.address().port;
  process.stdout.write(`listening on http://127.0.0.1:${bound}\n`);

  let closing = false;
  async function shutdown() {
    if (closing) return;
    closing = true;
    setTimeout(() => process.exit(0), 5000).unref();
    try {
      await realtime.close(); // disconnects every socket, closes the engine
    } catch { /* already closed */ }
    try {
      await app.close();
    } catch { /* already closed */ }
    sandbox.dispose();
    store.close();
    process.exit(0);
  }
  process.on('SIGTERM', shutdown);
  process.on('SIGINT', shutdown);
}

main().catch((e) => {
  console.error(`peer-node: ${e && e.stack ? e.stack : e}`);
  process.exit(1);
});
