'use strict';
// The REST routes (Fastify 5). Errors answer {"Message": "..."} with a 4xx status, as
// livebase does; the OAuth-style /token answers {"error": ...}.

const Fastify = require('fastify');
const { hashPassword, verifyPassword, bearer } = require('./auth');
const { ActionError } = require('./sandbox');
const { CONDITIONS } = require('./store');

const BODY_LIMIT = 1 << 20;

class HttpError extends Error {
  constructor(status, message) {
    super(message);
    this.statusCode = status;
  }
}
const bad = (m) => new HttpError(400, m);

// Steps per bulk, as livebase's `POST /1/bulk`.
const MAX_STEPS = 1000;
const MAX_PAGE_SIZE = 1000;
const MAX_CONDITIONS = 50;

// A value a condition on `field` may compare with: the field's type, or null.
function conditionValue(field, v) {
  if (v === null) return null;
  const ok = {
    int: () => typeof v === 'number' && Number.isSafeInteger(v),
    float: () => typeof v === 'number' && Number.isFinite(v),
    string: () => typeof v === 'string',
    bool: () => typeof v === 'boolean',
  }[field.type];
  if (!ok || !ok()) throw bad(`filter: \`${field.name}\` cannot be compared with ${JSON.stringify(v)}`);
  return v;
}

// `filter`: one {fieldName, operator, value} or an array of them, as livebase reads it
// (the equality and ordering operators; `id` is a field too).
function parseFilter(object, text) {
  let raw;
  try {
    raw = JSON.parse(text);
  } catch (e) {
    throw bad(`filter is not valid JSON: ${e.message}`);
  }
  const items = Array.isArray(raw) ? raw : [raw];
  if (items.length > MAX_CONDITIONS) throw bad(`filter has more than ${MAX_CONDITIONS} conditions`);
  return items.map((item) => {
    if (item === null || typeof item !== 'object' || Array.isArray(item)) {
      throw bad('filter must be a JSON array of objects');
    }
    const { fieldName, operator, value = null } = item;
    const field = fieldName === 'id'
      ? { name: 'id', type: 'int' }
      : object.fields.get(fieldName);
    if (!field) throw bad(`unknown field \`${fieldName}\` for object \`${object.name}\``);
    if (!Object.hasOwn(CONDITIONS, operator)) throw bad(`filter: unsupported operator ${JSON.stringify(operator)}`);
    if (value === null && operator !== 'equals' && operator !== 'notEquals') {
      throw bad(`filter: \`${operator}\` needs a value`);
    }
    return { field: field.name, op: operator, value: conditionValue(field, value) };
  });
}

function wholeNumber(name, text, fallback, max) {
  if (text === undefined) return fallback;
  const n = Number(text);
  if (typeof text !== 'string' || !Number.isInteger(n) || n < 1 || n > max) {
    throw bad(`${name} must be a whole number from 1 to ${max}, got \`${text}\``);
  }
  return n;
}

// The row as REST and events carry it: {id, <every field, null when absent>, __metadata}.
function restRow(object, id, values) {
  const row = { id };
  for (const name of object.fields.keys()) row[name] = values[name] === undefined ? null : values[name];
  row.__metadata = { id: String(id) };
  return row;
}

// Validates a create body against the object's fields: a JSON object, only known
// fields, each of its declared type, required ones present and not null.
function validateRow(object, body) {
  if (body === null || typeof body !== 'object' || Array.isArray(body)) {
    throw bad('the body must be a JSON object');
  }
  const values = {};
  for (const key of Object.keys(body)) {
    const field = object.fields.get(key);
    if (!field) throw bad(`unknown field \`${key}\` for object \`${object.name}\``);
    const v = body[key];
    if (v === null) {
      values[key] = null;
      continue;
    }
    switch (field.type) {
      case 'int':
        if (typeof v !== 'number' || !Number.isSafeInteger(v)) throw bad(`field \`${key}\` must be an integer`);
        break;
      case 'float':
        if (typeof v !== 'number' || !Number.isFinite(v)) throw bad(`field \`${key}\` must be a number`);
        break;
      case 'string':
        if (typeof v !== 'string') throw bad(`field \`${key}\` must be a string`);
        break;
      case 'bool':
        if (typeof v !== 'boolean') throw bad(`field \`${key}\` must be true or false`);
        break;
      default:
        throw bad(`field \`${key}\` has an unsupported type`);
    }
    values[key] = v;
  }
  for (const field of object.fields.values()) {
    if (field.required && (values[field.name] === undefined || values[field.name] === null)) {
      throw bad(`field \`${field.name}\` is required`);
    }
  }
  return values;
}

function buildHttp({ objects, actions: actionFiles, store, tokens, sandbox, realtime, signupToken, log }) {
  const app = Fastify({ logger: false, bodyLimit: BODY_LIMIT, return503OnClosing: true });

  // JSON bodies: an empty body is "no body" (some clients send Content-Type on every
  // POST), anything else must parse. JSON.parse makes `__proto__` an own key, which the
  // field check then refuses; nothing here merges request objects into others.
  app.removeContentTypeParser('application/json');
  app.addContentTypeParser('application/json', { parseAs: 'string' }, (req, text, done) => {
    if (text.trim() === '') return done(null, undefined);
    try {
      done(null, JSON.parse(text));
    } catch (e) {
      done(bad(`malformed JSON body: ${e.message}`));
    }
  });
  app.addContentTypeParser('application/x-www-form-urlencoded', { parseAs: 'string' }, (req, text, done) => {
    done(null, Object.fromEntries(new URLSearchParams(text)));
  });

  app.setErrorHandler((err, req, reply) => {
    const status = err.statusCode >= 400 && err.statusCode < 600 ? err.statusCode : 500;
    if (status >= 500) log.error(`${req.method} ${req.url}: ${err.stack || err}`);
    reply.code(status).send({ Message: status >= 500 ? 'internal error' : err.message });
  });
  app.setNotFoundHandler((req, reply) => {
    reply.code(404).send({ Message: `no route for ${req.method} ${req.url.split('?')[0]}` });
  });

  // Authentication for the routes that need it.
  function caller(req) {
    const who = tokens.verify(bearer(req.headers.authorization, false));
    if (!who) throw new HttpError(401, 'a valid `Authorization: Bearer <token>` header is required');
    return who;
  }

  const welcome = (user) => ({
    access_token: tokens.sign(user),
    token_type: 'bearer',
    expires_in: tokens.ttl,
    username: user.email,
    role: user.role,
    userId: String(user.id),
  });

  app.get('/healthz', async () => ({ status: 'ok' }));

  app.post('/1/user/signup', async (req) => {
    if (req.headers.signuptoken !== signupToken) throw new HttpError(401, 'invalid SignUpToken');
    const b = req.body;
    if (b === null || typeof b !== 'object' || Array.isArray(b)) throw bad('the body must be a JSON object');
    const { email, password, confirmPassword, firstName, lastName } = b;
    if (typeof email !== 'string' || !/^[^\s@]+@[^\s@]+$/.test(email.trim())) throw bad('`email` must be an email address');
    if (typeof password !== 'string' || password.length === 0) throw bad('`password` is required');
    if (confirmPassword !== undefined && confirmPassword !== password) throw bad('`confirmPassword` does not match `password`');
    for (const [k, v] of [['firstName', firstName], ['lastName', lastName]]) {
      if (v !== undefined && v !== null && typeof v !== 'string') throw bad(`\`${k}\` must be a string`);
    }
    const username = email.trim().toLowerCase();
    if (store.userByEmail(username)) throw new HttpError(409, `a user with email ${username} already exists`);
    const hash = await hashPassword(password);
    let id;
    try {
      id = store.createUser(username, hash, firstName ?? null, lastName ?? null, 'User');
    } catch (e) {
      // Two concurrent signups of one email: the UNIQUE constraint decides.
      if (e.code === 'SQLITE_CONSTRAINT_UNIQUE') throw new HttpError(409, `a user with email ${username} already exists`);
      throw e;
    }
    return welcome({ id, email: username, role: 'User' });
  });

  app.post('/token', async (req, reply) => {
    const b = req.body && typeof req.body === 'object' ? req.body : {};
    if (b.grant_type !== 'password') {
      return reply.code(400).send({ error: 'unsupported_grant_type', error_description: 'grant_type must be password' });
    }
    const username = typeof b.username === 'string' ? b.username.trim().toLowerCase() : '';
    const password = typeof b.password === 'string' ? b.password : '';
    const user = username ? store.userByEmail(username) : undefined;
    const ok = await verifyPassword(password, user ? user.password : null);
    if (!ok) {
      return reply.code(400).send({ error: 'invalid_grant', error_description: 'wrong username or password' });
    }
    return welcome(user);
  });

  // Delivers emits an action made, after it returned. A bad emit is logged, not fatal.
  function deliver(id, emits) {
    for (const [kind, event, dataJson, target] of emits) {
      try {
        const data = JSON.parse(dataJson);
        if (kind === 'all') realtime.emitAll(event, data);
        else if (kind === 'role') realtime.emitRole(event, data, target);
        else realtime.emitUsers(event, data, target);
      } catch (e) {
        log.warn(`action ${id}: emit of \`${event}\` failed: ${e.message}`);
      }
    }
  }

  async function runAfterCreate(actions, input) {
    for (const action of actions) {
      try {
        const { emits } = await sandbox.run(action.id, input);
        deliver(action.id, emits);
      } catch (e) {
        log.warn(`after-create action ${action.id} failed (the row stands): ${e.message}`);
      }
    }
  }

  const afterCreate = new Map();
  for (const object of objects.values()) {
    afterCreate.set(object.name, actionFiles.get(`${object.name}/afterCreate`) || []);
  }

  app.post('/1/objects/:object', {
    schema: {
      response: {
        200: {
          type: 'object',
          properties: { __metadata: { type: 'object', properties: { id: { type: 'string' } } } },
        },
      },
    },
  }, async (req) => {
    const who = caller(req);
    const object = objects.get(req.params.object);
    if (!object) throw new HttpError(404, `no object named \`${req.params.object}\``);
    if (!object.permissions.create.has(who.role)) {
      throw new HttpError(403, `role \`${who.role}\` may not create \`${object.name}\``);
    }
    const values = validateRow(object, req.body);
    const ownerId = Number(who.userId);
    const id = store.insert(object.name, values, ownerId);
    created(who, object, req.body, restRow(object, id, values));
    return { __metadata: { id: String(id) } };
  });

  // Scenario "reads" seeds its rows with this, as it does livebase's. Only creates
  // (`{method: "POST", url: "/1/objects/<object>", data}`); every step is checked first,
  // then all rows are written in one transaction, then each row's actions and
  // `db_created` follow as for a single create.
  app.post('/1/bulk', async (req) => {
    const who = caller(req);
    const steps = req.body;
    if (!Array.isArray(steps)) throw bad('a bulk body is a JSON array of {method, url, data}');
    if (steps.length > MAX_STEPS) {
      throw new HttpError(413, `a bulk has at most ${MAX_STEPS} steps, this one has ${steps.length}`);
    }
    const rows = steps.map((step, i) => {
      const m = step && step.method === 'POST' && typeof step.url === 'string'
        && /^\/1\/objects\/([^/?]+)$/.exec(step.url);
      if (!m) throw bad(`step ${i}: the peer's bulk only creates (POST /1/objects/<object>)`);
      const object = objects.get(m[1]);
      if (!object) throw new HttpError(404, `step ${i}: no object named \`${m[1]}\``);
      if (!object.permissions.create.has(who.role)) {
        throw new HttpError(403, `step ${i}: role \`${who.role}\` may not create \`${object.name}\``);
      }
      try {
        return { object: object.name, values: validateRow(object, step.data), input: step.data };
      } catch (e) {
        e.message = `step ${i}: ${e.message}`;
        throw e;
      }
    });
    const ownerId = Number(who.userId);
    const ids = store.insertMany(rows, ownerId);
    return rows.map(({ object: name, values, input }, i) => {
      const object = objects.get(name);
      created(who, object, input, restRow(object, ids[i], values));
      return { __metadata: { id: String(ids[i]) } };
    });
  });

  // After a committed create: the object's afterCreate actions, then `db_created`.
  function created(who, object, input, row) {
    const actions = afterCreate.get(object.name);
    if (actions.length > 0) {
      // Not awaited: the answer does not wait for the sandbox, but the actions are queued
      // now and their emits delivered when they finish.
      runAfterCreate(actions, {
        userInput: input,
        dbRow: row,
        parameters: {},
        userProfile: { username: who.username, role: who.role, userId: who.userId },
      });
    }
    realtime.dbCreated(object, row, Number(who.userId));
  }

  // Reads (scenarios "hostile" and "reads"): read permission, then the row or one page;
  // under owner row security only the caller's rows (another's reads as missing).
  function readable(req) {
    const who = caller(req);
    const object = objects.get(req.params.object);
    if (!object) throw new HttpError(404, `no object named \`${req.params.object}\``);
    if (!object.permissions.read.has(who.role)) {
      throw new HttpError(403, `role \`${who.role}\` may not read \`${object.name}\``);
    }
    return { who, object };
  }
  const owns = (object, who, row) => object.rowSecurity !== 'owner' || who.role === 'Admin'
    || row.owner === Number(who.userId);
  function showRow(row) {
    delete row.owner;
    row.__metadata = { id: String(row.id) };
    return row;
  }

  app.get('/1/objects/:object', async (req) => {
    const { who, object } = readable(req);
    const pageSize = wholeNumber('pageSize', req.query.pageSize, 20, MAX_PAGE_SIZE);
    const pageNumber = wholeNumber('pageNumber', req.query.pageNumber, 1, 1e9);
    const filter = typeof req.query.filter === 'string' ? req.query.filter.trim() : '';
    const conditions = filter === '' ? [] : parseFilter(object, filter);
    // An Admin reads every row of an owner object; everyone else only their own.
    const scoped = object.rowSecurity === 'owner' && who.role !== 'Admin';
    const { totalRows, data } = store.list(object.name, { pageSize, pageNumber, conditions },
      scoped ? Number(who.userId) : null);
    return { totalRows, data: data.map(showRow) };
  });

  app.get('/1/objects/:object/:id', async (req) => {
    const { who, object } = readable(req);
    const id = Number(req.params.id);
    if (!/^[0-9]+$/.test(req.params.id) || !Number.isSafeInteger(id) || id < 1) {
      throw bad(`row id must be a positive integer, got \`${req.params.id}\``);
    }
    const row = store.get(object.name, id);
    if (!row || !owns(object, who, row)) {
      throw new HttpError(404, `no \`${object.name}\` row with id ${id}`);
    }
    return showRow(row);
  });

  async function callFunction(req, reply) {
    const who = caller(req);
    const id = `general/onDemand/${req.params.name}`;
    if (!sandbox.has(id)) throw new HttpError(404, `no on-demand action named \`${req.params.name}\``);
    let parameters = {};
    const raw = req.query.parameters;
    if (raw !== undefined) {
      if (typeof raw !== 'string') throw bad('`parameters` must be given once');
      try {
        parameters = JSON.parse(raw);
      } catch (e) {
        throw bad(`\`parameters\` is not JSON: ${e.message}`);
      }
    }
    const userInput = req.body === undefined ? {} : req.body;
    let result;
    try {
      result = await sandbox.run(id, {
        userInput,
        dbRow: null,
        parameters,
        userProfile: { username: who.username, role: who.role, userId: who.userId },
      });
    } catch (e) {
      if (e instanceof ActionError) throw new HttpError(e.status, e.message);
      throw e;
    }
    deliver(id, result.emits);
    // Already JSON text from the sandbox: sent as is.
    return reply.type('application/json; charset=utf-8').send(result.json);
  }
  app.get('/1/function/general/:name', callFunction);
  app.post('/1/function/general/:name', callFunction);

  return app;
}

module.exports = { buildHttp };
