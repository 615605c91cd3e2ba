'use strict';
// The REST routes (Fastify 5). Errors answer {"Message": "..."} with a 4xx status, as
// livebase does; the OAuth-style /token answers {"error": ...}.

const Fastify = require('fastify');
const { hashPassword, verifyPassword, bearer } = require('./auth');
const { ActionError } = require('./sandbox');

const BODY_LIMIT = 1 << 20;

class HttpError extends Error {
  constructor(status, message) {
    super(message);
    this.statusCode = status;
  }
}
const bad = (m) => new HttpError(400, m);

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

    const row = { id };
    for (const name of object.fields.keys()) row[name] = values[name] === undefined ? null : values[name];
    row.__metadata = { id: String(id) };

    const actions = afterCreate.get(object.name);
    if (actions.length > 0) {
      // Not awaited: the answer does not wait for the sandbox, but the actions are queued
      // now and their emits delivered when they finish.
      runAfterCreate(actions, {
        userInput: req.body,
        dbRow: row,
        parameters: {},
        userProfile: { username: who.username, role: who.role, userId: who.userId },
      });
    }
    realtime.dbCreated(object, row, ownerId);
    return { __metadata: { id: String(id) } };
  });

  // Scenario "hostile": a read as normal traffic. Read permission, then one page.
  app.get('/1/objects/:object', async (req) => {
    const who = caller(req);
    const object = objects.get(req.params.object);
    if (!object) throw new HttpError(404, `no object named \`${req.params.object}\``);
    if (!object.permissions.read.has(who.role)) {
      throw new HttpError(403, `role \`${who.role}\` may not read \`${object.name}\``);
    }
    const pageSize = Math.min(Number(req.query.pageSize ?? 20) || 20, 1000);
    const { totalRows, data } = store.list(object.name, pageSize, Number(who.userId));
    for (const row of data) {
      delete row.owner;
      row.__metadata = { id: String(row.id) };
    }
    return { totalRows, data };
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
