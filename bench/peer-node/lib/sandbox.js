'use strict';
// Server-side actions in isolated-vm: a pool of V8 isolates (one per available core),
// each with every action compiled once, and a fresh context for every invocation so no
// invocation sees another's globals. Limits: wall time per invocation (`timeout`) and
// heap per isolate (`memoryLimit`); an isolate disposed by its memory limit is replaced.
//
// User code gets `socket.emitAll/emitRole/emitUsers` and `console.log/warn/error/info`
// and nothing else (isolated-vm contexts have no require, process, timers, file or
// network access). Emits are copied out as JSON when they are made and handed back with
// the result; the caller delivers them after the action returned, as livebase does.
// Nothing calls back into the main isolate while user code runs.

const ivm = require('isolated-vm');

// Runs before the action's own source in the same script. It captures the intrinsics it
// needs first, so an action that replaces JSON.stringify or Array.prototype.push breaks
// only its own invocation, never the shape of what is handed back to the host.
const PRELUDE = `const __livebasePeer = (function (g) {
  'use strict';
  const stringify = JSON.stringify, parse = JSON.parse, isArray = Array.isArray;
  const Str = String, TypeErr = TypeError, RangeErr = RangeError, defineProperty = Object.defineProperty;
  const input = parse(g.__livebaseInput);
  delete g.__livebaseInput;
  const emits = [], logs = [];
  let emitCount = 0, logCount = 0;
  function put(list, i, v) { defineProperty(list, i, { value: v, enumerable: true, configurable: true, writable: true }); }
  function data(d) { const s = stringify(d); return s === undefined ? 'null' : s; }
  function name(event) {
    if (typeof event !== 'string' || event.length === 0) throw new TypeErr('the event name must be a non-empty string');
    return event;
  }
  const socket = {
    emitAll(event, d) { put(emits, emitCount++, ['all', name(event), data(d), null]); },
    emitRole(event, d, role) {
      if (typeof role !== 'string') throw new TypeErr('emitRole(event, data, role): role must be a string');
      put(emits, emitCount++, ['role', name(event), data(d), role]);
    },
    emitUsers(event, d, users) {
      if (!isArray(users)) throw new TypeErr('emitUsers(event, data, users): users must be an array of usernames');
      const list = [];
      for (let i = 0; i < users.length; i++) {
        if (typeof users[i] !== 'string') throw new TypeErr('emitUsers: every username must be a string');
        put(list, i, users[i]);
      }
      put(emits, emitCount++, ['users', name(event), data(d), list]);
    },
  };
  function text(v) {
    if (typeof v === 'string') return v;
    try { const s = stringify(v); return s === undefined ? Str(v) : s; } catch (e) { return Str(v); }
  }
  function logger(level) {
    return function () {
      let line = '';
      for (let i = 0; i < arguments.length; i++) line += (i ? ' ' : '') + text(arguments[i]);
      put(logs, logCount++, [level, line]);
    };
  }
  g.socket = socket;
  g.console = { log: logger('log'), info: logger('log'), warn: logger('warn'), error: logger('error') };
  function message(e) {
    try {
      if (e !== null && typeof e === 'object' && 'message' in e) return Str(e.message);
      return Str(e);
    } catch (_) {
      return 'the action threw a value that cannot be shown';
    }
  }
  return function finish(fn) {
    const out = { r: null, x: null, stack: false, e: emits, l: logs };
    try {
      if (typeof fn !== 'function') throw new TypeErr('the action defines no function backandCallback');
      const v = fn(input.userInput, input.dbRow, input.parameters, input.userProfile);
      if (v !== null && typeof v === 'object' && typeof v.then === 'function') {
        throw new TypeErr('the action returned a promise; actions here run synchronously');
      }
      const r = stringify(v);
      out.r = r === undefined ? 'null' : r;
    } catch (e) {
      out.x = message(e);
      out.stack = e instanceof RangeErr && /call stack/i.test(out.x);
    }
    return out;
  };
})(globalThis);
`;
const PRELUDE_LINES = PRELUDE.split('\n').length - 1;
const EPILOGUE = `
;__livebasePeer(typeof backandCallback === 'function' ? backandCallback : undefined);
`;

class ActionError extends Error {
  // status 400: the action threw; 422: a limit ended it; 500: the sandbox failed.
  constructor(status, message) {
    super(message);
    this.status = status;
  }
}

class Sandbox {
  constructor({ actions, size, timeoutMs = 1000, memoryMb = 64, log = console }) {
    this.actions = new Map(actions.map((a) => [a.id, a]));
    this.size = size;
    this.timeoutMs = timeoutMs;
    this.memoryMb = memoryMb;
    this.log = log;
    this.slots = [];
    this.free = [];
    this.waiting = [];
  }

  async start() {
    for (let i = 0; i < this.size; i++) {
      const slot = { index: i, isolate: null, scripts: null };
      await this.fresh(slot);
      this.prepareContext(slot);
      this.slots.push(slot);
      this.free.push(slot);
    }
  }

  // A new isolate for `slot`, with every action compiled (fails on a syntax error).
  async fresh(slot) {
    slot.isolate = new ivm.Isolate({ memoryLimit: this.memoryMb });
    slot.scripts = new Map();
    slot.spare = null;
    for (const action of this.actions.values()) {
      const script = await slot.isolate.compileScript(PRELUDE + action.source + EPILOGUE, {
        filename: `file:///actions/${action.id}.js`,
        lineOffset: -PRELUDE_LINES,
      });
      slot.scripts.set(action.id, script);
    }
  }

  // Each context serves exactly one invocation. The next one is created as soon as the
  // previous invocation ends, so its cost (~0.5 ms) is off the path of an idle pool's next
  // call; under load it costs the same either way.
  prepareContext(slot) {
    if (slot.spare || slot.isolate.isDisposed) return;
    const spare = slot.isolate.createContext();
    spare.catch(() => {}); // a disposed isolate: takeContext makes a fresh one
    slot.spare = spare;
  }

  async takeContext(slot) {
    const spare = slot.spare;
    slot.spare = null;
    if (spare) {
      try {
        return await spare;
      } catch { /* fall through */ }
    }
    return slot.isolate.createContext();
  }

  acquire() {
    const slot = this.free.pop();
    if (slot) return Promise.resolve(slot);
    return new Promise((resolve) => this.waiting.push(resolve));
  }

  release(slot) {
    const next = this.waiting.shift();
    if (next) next(slot);
    else this.free.push(slot);
  }

  has(id) {
    return this.actions.has(id);
  }

  // Runs action `id` with (userInput, dbRow, parameters, userProfile).
  // → {json: <the return value as JSON text>, emits: [...], logs: [...]}; throws ActionError.
  async run(id, input) {
    const inputJson = JSON.stringify(input);
    const slot = await this.acquire();
    try {
      if (slot.isolate.isDisposed) await this.fresh(slot);
      return await this.invoke(slot, id, inputJson);
    } finally {
      this.release(slot);
    }
  }

  async invoke(slot, id, inputJson) {
    const script = slot.scripts.get(id);
    let context = null;
    let out;
    try {
      context = await this.takeContext(slot);
      await context.global.set('__livebaseInput', inputJson);
      out = await script.run(context, { timeout: this.timeoutMs, copy: true });
    } catch (e) {
      if (slot.isolate.isDisposed) {
        this.log.warn(`action ${id}: isolate ${slot.index} exceeded its memory limit; replacing it`);
        try {
          await this.fresh(slot);
        } catch (err) {
          this.log.error(`action sandbox: could not replace isolate ${slot.index}: ${err.message}`);
        }
        throw new ActionError(422, `memory limit of ${this.memoryMb} MiB exceeded`);
      }
      if (/timed out/i.test(e && e.message)) {
        throw new ActionError(422, `time limit of ${this.timeoutMs} ms exceeded`);
      }
      throw new ActionError(500, `action sandbox failure: ${e && e.message}`);
    } finally {
      if (context !== null && !slot.isolate.isDisposed) {
        try { context.release(); } catch { /* isolate gone */ }
      }
      this.prepareContext(slot);
    }
    for (const [level, line] of out.l) {
      (level === 'error' ? this.log.error : level === 'warn' ? this.log.warn : this.log.info)
        .call(this.log, `[action ${id}] ${line}`);
    }
    if (out.x !== null) {
      if (out.stack) throw new ActionError(422, 'stack limit exceeded (recursion too deep)');
      throw new ActionError(400, out.x);
    }
    return { json: out.r, emits: out.e };
  }

  dispose() {
    for (const slot of this.slots) {
      if (!slot.isolate.isDisposed) slot.isolate.dispose();
    }
  }
}

module.exports = { Sandbox, ActionError };
