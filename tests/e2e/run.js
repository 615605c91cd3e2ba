// `npm test`: one headless Chromium for the whole suite (launched here, when there is
// one), shared by every browser test through its WebSocket endpoint, then `node --test`.
import { spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import { chromium } from 'playwright-core';
import { CHROMIUM, CHROMIUM_FLAGS } from './server.js';

const server = existsSync(CHROMIUM)
  ? await chromium.launchServer({ executablePath: CHROMIUM, args: CHROMIUM_FLAGS })
  : null;
const env = { ...process.env };
if (server) env.LIVEBASE_E2E_CHROMIUM_WS = server.wsEndpoint();
const child = spawn(process.execPath, ['--test', '--test-concurrency=1', ...process.argv.slice(2), '.'],
  { stdio: 'inherit', env });
const code = await new Promise((resolve) => child.on('exit', (c, signal) => resolve(c ?? (signal ? 1 : 0))));
await server?.close();
process.exit(code);
